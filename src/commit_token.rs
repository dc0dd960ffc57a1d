//! Commit tokens: HMAC-SHA256 over the result id with a secret shared by every replica, so that any replica
//! checks a token without reading a record, and the token of one result is worth nothing for another.
//!
//! The secret comes from `auth.commit_secret_file` or, absent that, from the result storage
//! (`_control/commit-secret`, generated create-only by the first process that needs it, so that replicas
//! agree). Workers' storage credentials should be denied `_control/` (see SECURITY.md): whoever reads the
//! secret can make the token of any result.

use std::{fmt, path::PathBuf};

use ring::hmac;

use crate::{
    config::AuthConfig,
    layout,
    link::LinkKeys,
    model::ResultId,
    secret::{Secret, decode_tag},
    storage::{Backend, StorageError},
};

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Binds a MAC to its use, so that no other MAC made with the same secret can pass as a commit token.
const CONTEXT: &[u8] = b"anonymous-results commit token v1\0";

/// Why the commit secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CommitSecretError {
    #[error("cannot read the commit secret {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the commit secret {path} holds {bytes} bytes; it needs at least {MIN_SECRET_BYTES} (for example \
         `head -c 48 /dev/urandom | base64 > {path}`)"
    )]
    TooShort { path: PathBuf, bytes: usize },
    #[error("cannot keep the commit secret in the result storage: {0}")]
    Storage(#[from] StorageError),
    #[error(
        "the commit secret kept in the result storage (`{}`) holds {bytes} bytes, fewer than the \
         {MIN_SECRET_BYTES} this service writes: it was not written by this service. Remove it (a new one is \
         made, and the commit tokens handed out so far stop working), or set auth.commit_secret_file",
        layout::COMMIT_SECRET
    )]
    StoredTooShort { bytes: usize },
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
}

/// Makes and checks commit tokens, and holds the keys of download links, derived from the same secret.
pub struct CommitTokens {
    key: hmac::Key,
    links: LinkKeys,
}

impl fmt::Debug for CommitTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CommitTokens(<redacted>)")
    }
}

impl CommitTokens {
    /// Tokens made with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self::rotated(secret, None)
    }

    /// Tokens made with `secret`, which replaced `previous`: download links made with `previous` still verify.
    fn rotated(secret: &[u8], previous: Option<&[u8]>) -> Self {
        let previous: Vec<&[u8]> = previous.into_iter().collect();
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret), links: LinkKeys::new(secret, &previous) }
    }

    /// The secret from `auth.commit_secret_file` (and the one it replaced, from
    /// `auth.previous_commit_secret_file`), else the one kept in `storage` (made there if missing).
    pub async fn load<B: Backend>(auth: &AuthConfig, storage: &B) -> Result<Self, CommitSecretError> {
        match &auth.commit_secret_file {
            Some(path) => Self::from_files(path, auth.previous_commit_secret_file.as_deref()),
            None => Ok(Self::new(&stored_secret(storage).await?)),
        }
    }

    /// The secret in the file at `path`, and the one it replaced in the file at `previous`.
    pub fn from_files(path: &std::path::Path, previous: Option<&std::path::Path>) -> Result<Self, CommitSecretError> {
        let secret = read_secret(path)?;
        let previous = previous.map(read_secret).transpose()?;
        Ok(Self::rotated(&secret, previous.as_deref()))
    }

    /// The keys download links are made and checked with.
    pub fn links(&self) -> &LinkKeys {
        &self.links
    }

    /// The commit token of `id`: 64 hex digits.
    pub fn issue(&self, id: &ResultId) -> Secret {
        let tag = hmac::sign(&self.key, &message(id));
        Secret::new(crate::hex::encode(tag.as_ref()))
    }

    /// Whether `token` is the commit token of `id`; in constant time.
    pub fn verify(&self, id: &ResultId, token: &str) -> bool {
        decode_tag(token).is_some_and(|tag| hmac::verify(&self.key, &message(id), &tag).is_ok())
    }
}

/// The secret in the file at `path` (surrounding whitespace ignored), at least [`MIN_SECRET_BYTES`] long.
fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, CommitSecretError> {
    let text = std::fs::read(path).map_err(|source| CommitSecretError::Read { path: path.to_owned(), source })?;
    let secret = text.trim_ascii();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(CommitSecretError::TooShort { path: path.to_owned(), bytes: secret.len() });
    }
    Ok(secret.to_vec())
}

fn message(id: &ResultId) -> Vec<u8> {
    [CONTEXT, id.as_str().as_bytes()].concat()
}

/// The most bytes of the stored secret read: this service writes 64.
const MAX_STORED_SECRET_BYTES: u64 = 4096;

/// The secret kept in storage, within [`MAX_STORED_SECRET_BYTES`].
async fn read_stored<B: Backend>(storage: &B) -> Result<Vec<u8>, StorageError> {
    let key = layout::COMMIT_SECRET;
    let read = storage.read_record(key, MAX_STORED_SECRET_BYTES, crate::storage::read_all).await?;
    read.map_err(|e| StorageError::unreadable(key, e.to_string()))
}

/// The secret kept in storage: read it, or make it (of racing makers, the first write wins and all read it).
async fn stored_secret<B: Backend>(storage: &B) -> Result<Vec<u8>, CommitSecretError> {
    match read_stored(storage).await {
        Ok(secret) if secret.len() < MIN_SECRET_BYTES => {
            return Err(CommitSecretError::StoredTooShort { bytes: secret.len() });
        }
        Ok(secret) => return Ok(secret),
        Err(StorageError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(CommitSecretError::Random)?;
    let fresh: Vec<u8> = crate::hex::encode(&bytes).into_bytes();
    match storage.put_create(layout::COMMIT_SECRET, fresh.clone()).await {
        Ok(()) => Ok(fresh),
        Err(StorageError::AlreadyExists { .. }) => Ok(read_stored(storage).await?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_belongs_to_one_result_and_one_secret() {
        let tokens = CommitTokens::new(&[7; 32]);
        let (a, b) = (ResultId::generate().unwrap(), ResultId::generate().unwrap());
        let token = tokens.issue(&a);
        assert_eq!(token.expose().len(), 64);
        assert!(tokens.verify(&a, token.expose()));
        assert!(!tokens.verify(&b, token.expose()), "another result's token");
        assert!(!CommitTokens::new(&[8; 32]).verify(&a, token.expose()), "another secret's token");
        let mut forged = token.expose().to_owned();
        forged.replace_range(0..1, if forged.starts_with('0') { "1" } else { "0" });
        assert!(!tokens.verify(&a, &forged));
        let upper = token.expose().to_uppercase();
        // `u8::from_str_radix` would take "+f" for 15: each pair must be two lowercase hex digits.
        let signed = format!("+{}", &token.expose()[1..]);
        for malformed in
            ["", "zz", &token.expose()[..63], &format!("{}0", token.expose()), &"é".repeat(32), &upper, &signed]
        {
            assert!(!tokens.verify(&a, malformed), "{malformed:?}");
        }
        assert_eq!(format!("{tokens:?}"), "CommitTokens(<redacted>)");
        assert_eq!(decode_tag(&"0f".repeat(32)), Some(vec![15; 32]));
        for not_lowercase_hex in ["+f".repeat(32), "0F".repeat(32), "-1".repeat(32), " f".repeat(32)] {
            assert_eq!(decode_tag(&not_lowercase_hex), None, "{not_lowercase_hex}");
        }
    }
}
