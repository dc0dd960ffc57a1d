//! Storage failures: what the domain core tells apart (absent, already there, unavailable, too slow, a range
//! outside a file), each keeping its cause.
//!
//! Two readers see them. A caller sees the [`Display`](std::fmt::Display) text: where (the store's URL or "the
//! local result storage"), what was being done, and the cause as the storage client told it, with every
//! credential that rides in a URL (user information, query strings: an Azure SAS, a presigned signature) and
//! every configured secret value redacted, and never a server-side filesystem path. The operator's log line
//! ([`StorageError::detail`]) adds what only the operator should see: the path on a local filesystem.

use std::{fmt, sync::Arc, time::Duration};

use crate::secret::{Secret, redact_urls};

/// A storage failure. None carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("`{key}` does not exist")]
    NotFound { key: String },
    #[error("`{key}` already exists")]
    AlreadyExists { key: String },
    /// A committed file that is no longer the version its pin names: it was changed (or replaced) after its
    /// commit. Kept apart from [`StorageError::AlreadyExists`], which is a create-only write's refusal.
    #[error("`{key}` changed after its commit: it is not the committed file")]
    Changed { key: String },
    /// What is stored at `key` is not a record this service could have written: too large, or not a stored
    /// object at all (a folder, a FIFO, a link).
    #[error("`{key}` is not a record of this service: {reason}")]
    Unreadable { key: String, reason: String },
    #[error("{location} failed {operation}: {cause}")]
    Unavailable { location: StorageLocation, operation: &'static str, cause: Cause },
    #[error("{location} did not answer within {timeout:?}")]
    Timeout { location: StorageLocation, timeout: Duration },
    #[error("bytes {start} to {end} are not all within `{key}`, which has {size} bytes")]
    RangeNotSatisfiable { key: String, start: u64, end: u64, size: u64 },
    #[error(
        "{location} ignores create-only writes (If-None-Match: *), so commits could not be made exactly once; use \
         a store that supports conditional writes (AWS S3, MinIO, Ceph RGW, R2, ...)"
    )]
    NoCreateOnlyWrites { location: StorageLocation },
    #[error("the storage configuration is not usable: {message}")]
    Config { message: String },
}

impl StorageError {
    /// What is at `key` is not a record, for `reason`.
    pub fn unreadable(key: &str, reason: impl Into<String>) -> Self {
        Self::Unreadable { key: key.to_owned(), reason: reason.into() }
    }

    /// The whole story, for the operator's log: the message, and where on a local filesystem it happened.
    pub fn detail(&self) -> String {
        match self {
            Self::Unavailable { cause: Cause { path: Some(path), .. }, .. } => format!("{self} (at {path})"),
            other => other.to_string(),
        }
    }

    /// How the metrics count this failure, if it is one: `io` (a local filesystem), `unavailable` (an object
    /// store) or `timeout`. Answers that are outcomes (absent, already there) are not failures.
    pub fn failure_kind(&self) -> Option<&'static str> {
        match self {
            Self::Unavailable { location: StorageLocation::Local, .. } => Some("io"),
            Self::Unavailable { location: StorageLocation::Remote(_), .. } => Some("unavailable"),
            Self::Timeout { .. } => Some("timeout"),
            Self::NotFound { .. }
            | Self::AlreadyExists { .. }
            | Self::Changed { .. }
            | Self::Unreadable { .. }
            | Self::RangeNotSatisfiable { .. }
            | Self::NoCreateOnlyWrites { .. }
            | Self::Config { .. } => None,
        }
    }
}

/// Where a storage failure happened, as messages name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageLocation {
    /// The local backend: its root is not named, being a server-side path.
    Local,
    /// An object store: its URL and endpoint (`s3://bucket/prefix at http://host:9000`), without credentials.
    Remote(Arc<str>),
}

impl fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("the local result storage"),
            Self::Remote(location) => write!(f, "storage {location}"),
        }
    }
}

/// The cause of a failure, kept whole: the storage client's error (its chain shown with the credentials in
/// URLs and the configured secret values redacted) and, on a filesystem, the path it concerned (for the log
/// only).
pub struct Cause {
    error: Box<dyn std::error::Error + Send + Sync>,
    /// Redacted from the text, besides what URLs carry.
    secrets: Arc<[Secret]>,
    path: Option<String>,
}

impl Cause {
    /// `error`, with `secrets` redacted wherever it is shown.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>, secrets: Arc<[Secret]>) -> Self {
        Self { error: error.into(), secrets, path: None }
    }

    /// A filesystem error concerning `path`.
    pub fn at(error: std::io::Error, path: &std::path::Path) -> Self {
        Self { error: Box::new(error), secrets: Arc::new([]), path: Some(path.display().to_string()) }
    }

    /// The error itself, for code that inspects it.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain = redact_urls(&crate::telemetry::error_chain(&*self.error));
        let redacted = self
            .secrets
            .iter()
            .map(Secret::expose)
            .filter(|secret| !secret.is_empty())
            .fold(chain, |text, secret| text.replace(secret, "<redacted>"));
        f.write_str(&redacted)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cause({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_hides_credentials_and_paths_from_callers() {
        let secrets: Arc<[Secret]> = Arc::new([Secret::new("s3cr3t")]);
        let error = std::io::Error::other(
            "GET https://user:pw@host/bucket/key?sv=2024&sig=abc%2F failed; the key was s3cr3t, retry",
        );
        let cause = Cause::new(error, secrets);
        let error = StorageError::Unavailable {
            location: StorageLocation::Remote("az://container at https://host".into()),
            operation: "reading a record",
            cause,
        };
        let shown = error.to_string();
        for hidden in ["pw", "sig=abc", "s3cr3t"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(shown.contains("https://<redacted>@host/bucket/key?<redacted>"), "{shown}");
        assert_eq!(error.failure_kind(), Some("unavailable"));

        let local = StorageError::Unavailable {
            location: StorageLocation::Local,
            operation: "writing a record",
            cause: Cause::at(std::io::Error::from(std::io::ErrorKind::StorageFull), "/srv/results/x".as_ref()),
        };
        assert!(!local.to_string().contains("/srv/results"), "{local}");
        assert!(local.detail().contains("/srv/results/x"), "{}", local.detail());
        assert_eq!(local.failure_kind(), Some("io"));
    }
}
