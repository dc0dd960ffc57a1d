//! The bearer token a [`Client`](crate::Client) presents: a fixed string, or a file read again when it changes
//! (a token rotated by writing the file, as the service reads its own token files).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use crate::Error;

/// How often a token file is looked at (one `stat`) to see whether it changed.
pub const TOKEN_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The largest token file read: a token is a line of text.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Where a client's bearer token comes from. Its `Debug` never shows a token.
#[derive(Default)]
pub enum Token {
    /// No token: for a service without `auth` (a loopback service, say).
    #[default]
    None,
    /// This token, for every call.
    Fixed(AsciiMetadataValue),
    /// The first line of this file that is neither empty nor a `#` comment, read again when the file's
    /// modification time or length changes (looked at once per [`TOKEN_FILE_CHECK_INTERVAL`] at most).
    File(TokenFile),
}

impl Token {
    /// A fixed token. Fails if it is empty or holds anything but visible ASCII.
    pub fn fixed(token: &str) -> Result<Self, Error> {
        Ok(Self::Fixed(header_value(token)?))
    }

    /// A token read from `path` now, and again whenever the file changes. Fails if the file cannot be read or
    /// holds no token.
    pub fn file(path: impl Into<PathBuf>) -> Result<Self, Error> {
        Ok(Self::File(TokenFile::open(path.into())?))
    }

    /// Adds `authorization: Bearer <token>` to `metadata`; a token file that changed is read again first.
    pub(crate) fn apply(&self, metadata: &mut MetadataMap) -> Result<(), Error> {
        let value = match self {
            Self::None => return Ok(()),
            Self::Fixed(value) => value.clone(),
            Self::File(file) => file.current()?,
        };
        metadata.insert("authorization", value);
        Ok(())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("Token::None"),
            Self::Fixed(_) => f.write_str("Token::Fixed(<redacted>)"),
            Self::File(file) => f.debug_tuple("Token::File").field(&file.path).finish(),
        }
    }
}

/// A token file and what was last read from it.
pub struct TokenFile {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    value: AsciiMetadataValue,
    /// The file's modification time and length when it was read.
    version: Option<(SystemTime, u64)>,
    checked: Instant,
}

impl TokenFile {
    fn open(path: PathBuf) -> Result<Self, Error> {
        let version = version(&path);
        let value = read_token(&path)?;
        Ok(Self { path, loaded: Mutex::new(Loaded { value, version, checked: Instant::now() }) })
    }

    /// The token, read again if the file changed since it was last looked at. A file that changed into
    /// something unreadable is an error (the call is not sent with a token the operator replaced).
    fn current(&self) -> Result<AsciiMetadataValue, Error> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if loaded.checked.elapsed() >= TOKEN_FILE_CHECK_INTERVAL {
            loaded.checked = Instant::now();
            let now = version(&self.path);
            if now != loaded.version {
                loaded.value = read_token(&self.path)?;
                loaded.version = now;
            }
        }
        Ok(loaded.value.clone())
    }
}

fn version(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The token in `path`: its first line that is neither empty nor a comment.
fn read_token(path: &Path) -> Result<AsciiMetadataValue, Error> {
    use std::io::Read;
    let unreadable = |reason: String| Error::TokenFile { path: path.to_owned(), reason };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE_BYTES).read_to_string(&mut text).map_err(|e| unreadable(e.to_string()))?;
    // A byte-order mark, as some editors write, is not part of the token.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let token = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .ok_or_else(|| unreadable("it holds no token (every line is empty or a # comment)".into()))?;
    header_value(token).map_err(|_| unreadable("its token holds a character that is not visible ASCII".into()))
}

/// `Bearer <token>` as a header value.
fn header_value(token: &str) -> Result<AsciiMetadataValue, Error> {
    let visible = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
    let mut value = match visible {
        true => AsciiMetadataValue::try_from(format!("Bearer {token}")).ok(),
        false => None,
    }
    .ok_or(Error::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &Token) -> String {
        let mut metadata = MetadataMap::new();
        token.apply(&mut metadata).unwrap();
        metadata.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    }

    #[test]
    fn a_fixed_token_is_sent_and_never_shown() {
        let token = Token::fixed("s3cr3t-token").unwrap();
        assert_eq!(bearer(&token), "Bearer s3cr3t-token");
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert!(matches!(Token::fixed("two words"), Err(Error::InvalidToken)));
        assert!(matches!(Token::fixed(""), Err(Error::InvalidToken)));
        assert_eq!(bearer(&Token::None), "");
    }

    #[test]
    fn a_token_file_skips_comments_and_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\u{feff}# the scheduler's token\n\n  first-token  \nsecond\n").unwrap();
        let token = Token::file(&path).unwrap();
        assert_eq!(bearer(&token), "Bearer first-token");
        std::fs::write(&path, "rotated-token-of-another-length\n").unwrap();
        std::thread::sleep(TOKEN_FILE_CHECK_INTERVAL + Duration::from_millis(50));
        assert_eq!(bearer(&token), "Bearer rotated-token-of-another-length");
        std::fs::write(&path, "# nothing\n").unwrap();
        std::thread::sleep(TOKEN_FILE_CHECK_INTERVAL + Duration::from_millis(50));
        let mut metadata = MetadataMap::new();
        let error = token.apply(&mut metadata).unwrap_err();
        assert!(error.to_string().contains("holds no token"), "{error}");
    }

    #[test]
    fn a_missing_token_file_is_named() {
        let error = Token::file("/nonexistent/token").unwrap_err();
        assert!(error.to_string().contains("/nonexistent/token"), "{error}");
    }
}
