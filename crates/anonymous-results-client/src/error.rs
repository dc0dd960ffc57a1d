//! The one error of every [`Client`](crate::Client) call.

use std::path::PathBuf;

use tonic::{Code, Status};

/// What went wrong with a call, or with building a client. A call that reached the service keeps the service's
/// [`Status`] (its code and the message, which says what to fix).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with this status after `attempts` tries (1 unless the call was retried).
    #[error("{}: {}", code_name(.status.code()), .status.message())]
    Status {
        /// The last answer.
        status: Status,
        /// How many times the call was sent.
        attempts: u32,
    },
    /// The endpoint, its TLS settings or a certificate could not be used.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// Why, in words.
        reason: String,
    },
    /// The service's answers broke the contract (a page token that leads back to its own page, a watch that
    /// ended before a final state).
    #[error("the service's answer broke the contract: {0}")]
    Protocol(String),
    /// A bearer token that is empty or holds anything but visible ASCII.
    #[error("a bearer token must be visible ASCII without spaces, and not empty")]
    InvalidToken,
    /// The token file could not be read, or holds no usable token.
    #[error("cannot read the token file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
}

impl Error {
    /// The gRPC code: the service's for [`Error::Status`]; `UNAVAILABLE` when no connection could be made;
    /// `UNAUTHENTICATED` for a token that could not be sent.
    pub fn code(&self) -> Code {
        match self {
            Self::Status { status, .. } => status.code(),
            Self::Connect { .. } => Code::Unavailable,
            Self::Protocol(_) => Code::Internal,
            Self::InvalidToken | Self::TokenFile { .. } => Code::Unauthenticated,
        }
    }

    /// The service's message for [`Error::Status`]; this error's text otherwise.
    pub fn message(&self) -> String {
        match self {
            Self::Status { status, .. } => status.message().to_owned(),
            other => other.to_string(),
        }
    }

    /// The service's answer, when the call reached it.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::Status { status, .. } => Some(status),
            _ => None,
        }
    }

    /// How many times the call was sent (0 when it never was). A `NOT_FOUND` from `release` after more than one
    /// attempt most likely means an earlier attempt released the result (see [`Client::release`]).
    ///
    /// [`Client::release`]: crate::Client::release
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Status { attempts, .. } => *attempts,
            _ => 0,
        }
    }

    /// Whether sending the same call again could succeed: the service or the connection was unavailable
    /// (`UNAVAILABLE`), or the connection broke before an answer came (an `UNKNOWN` status made by the
    /// transport, not sent by the service). Every other code is an answer that a repeat would only repeat.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => could_help(status),
            other => other.code() == Code::Unavailable,
        }
    }
}

/// The code's name as gRPC spells it (and grpcurl prints it): `NOT_FOUND`, `UNAVAILABLE`, ...
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether `status` says the call might be answered if sent again: `UNAVAILABLE`, or a connection that broke
/// (the transport's own `UNKNOWN`, which carries the transport's error as its source; an `UNKNOWN` the service
/// sent carries none).
pub(crate) fn could_help(status: &Status) -> bool {
    use std::error::Error as _;
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown => status.source().is_some(),
        _ => false,
    }
}

/// The service's answer to the first attempt.
impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::Status { status, attempts: 1 }
    }
}

/// The status a caller of a tonic service would see: a client error passed on by a service of the caller's own.
impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Status { status, .. } => status,
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(Error::from(Status::unavailable("storage is down")).is_retryable());
        for code in [Code::NotFound, Code::FailedPrecondition, Code::DeadlineExceeded, Code::Internal] {
            assert!(!Error::from(Status::new(code, "x")).is_retryable(), "{code:?}");
        }
        let refused = Error::Connect { endpoint: "http://127.0.0.1:1".into(), reason: "refused".into() };
        assert!(refused.is_retryable());
        // An UNKNOWN the service sent is its answer; one the transport made (a broken connection) is not.
        assert!(!Error::from(Status::unknown("the service's own")).is_retryable());
        let broken = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(Error::from(broken).is_retryable());
    }

    #[test]
    fn the_status_is_kept() {
        let error = Error::Status { status: Status::not_found("no result r-1"), attempts: 3 };
        assert_eq!((error.code(), error.message().as_str(), error.attempts()), (Code::NotFound, "no result r-1", 3));
        assert_eq!(error.to_string(), "NOT_FOUND: no result r-1");
        assert_eq!(Status::from(error).code(), Code::NotFound);
    }
}
