//! A credential that never shows itself in `Debug` or `Display` output.

use std::fmt;

/// A secret string: a storage credential, a token. `Debug` and `Display` print `<redacted>`; the value is
/// reached only through [`Secret::expose`], at the few places that must hand it on.
///
/// It serializes as the plain value, for the durable records that must keep it; never serialize one into a log.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself, for the one place that hands it on (a worker's `AllocateResponse`, a request
    /// signer). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `text` with the credentials that may ride in its URLs redacted: the user information
/// (`scheme://user:password@host`) and the query string (`?...`: a presigned signature, an Azure SAS) of
/// every URL become `<redacted>`. Error texts of the HTTP stack repeat URLs, and an endpoint may carry a
/// password.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let url_end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')'))
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(url_end);
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let (authority, path) = url.split_at(authority_end);
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push_str("<redacted>");
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        match path.split_once('?') {
            Some((path, _query)) => {
                out.push_str(path);
                out.push_str("?<redacted>");
            }
            None => out.push_str(path),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Whether users other than the owner of the file at `path` (its group, or everyone) may read it.
pub fn readable_by_others(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o044 != 0)
}

/// Compares two byte strings in time that depends only on their lengths, not on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bytes of a MAC written as exactly 64 lowercase hex digits (a commit token, a download link's
/// signature); anything else (upper case, signs, other characters) is not one.
pub(crate) fn decode_tag(text: &str) -> Option<Vec<u8>> {
    fn digit(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != 64 {
        return None;
    }
    text.as_bytes().chunks_exact(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("AKIA-very-secret");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "AKIA-very-secret");
    }

    #[test]
    fn userinfo_and_queries_are_redacted_wherever_a_url_is() {
        assert_eq!(redact_urls("http://user:pw@host:9000/b?x=1"), "http://<redacted>@host:9000/b?<redacted>");
        assert_eq!(
            redact_urls("error for url (https://a:b@h/p): x, then http://h2/ and s3://c:d@e"),
            "error for url (https://<redacted>@h/p): x, then http://h2/ and s3://<redacted>@e"
        );
        assert_eq!(
            redact_urls("GET https://acct.blob.core.windows.net/c/k?sv=2024&sig=AbC%2F== failed"),
            "GET https://acct.blob.core.windows.net/c/k?<redacted> failed"
        );
        assert_eq!(redact_urls("http://host/path@not-userinfo"), "http://host/path@not-userinfo");
        assert_eq!(redact_urls("no url: a@b?c"), "no url: a@b?c");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
