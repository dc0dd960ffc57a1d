//! What identifies the exact version of a committed file: recorded at Commit in the manifest, beside the
//! file's size, so that a file replaced afterwards by different bytes (of the same size, too) is never served
//! as the result.
//!
//! An object store names a version by its entity tag (S3, Azure, GCS), and, where the bucket keeps versions,
//! by a version id (S3's `versionId`, GCS's generation, Azure's version id). A shared filesystem has neither:
//! a file is pinned by its device and inode (which name that file, not whatever is at its path later) and its
//! change time, which every write and every change of its metadata moves forward, and which its owner cannot
//! set back (`utimensat` sets the modification time, never the change time).

use serde::{Deserialize, Serialize};

/// The longest entity tag or version id a pin holds, in bytes. Every store's are far shorter (S3's entity tag
/// is 34 to 45 bytes, its version ids 32); a store that gives a longer one gives a file that cannot be pinned.
pub const MAX_PIN_TEXT_BYTES: usize = 256;

/// The most bytes a pin takes in a manifest as written (indented JSON): both texts at their longest with
/// every character escaped (only `"` and `\` can be: a pin's text is printable ASCII), the numbers at their
/// longest, and the keys around them.
pub const MAX_PIN_BYTES: u64 = 2 * 2 * MAX_PIN_TEXT_BYTES as u64 + 256;

/// The exact version of one committed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pin {
    /// An object: its entity tag as the store gives it (quotes included), and its version id where the
    /// bucket keeps versions. At least one of the two.
    Object {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        e_tag: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// A file on a shared filesystem: its device and inode, and its change time (seconds and nanoseconds
    /// since the epoch, as `fstat` gives them).
    File { device: u64, inode: u64, ctime_seconds: i64, ctime_nanos: u32 },
}

impl Pin {
    /// The bytes its texts hold (for the estimate of what a cached manifest weighs).
    pub fn text_bytes(&self) -> usize {
        match self {
            Self::Object { e_tag, version } => {
                [e_tag, version].iter().filter_map(|text| text.as_ref()).map(String::len).sum()
            }
            Self::File { .. } => 0,
        }
    }

    /// Whether this pin is one a Commit could have recorded: an object's texts printable ASCII of at most
    /// [`MAX_PIN_TEXT_BYTES`], at least one of them; a change time's nanoseconds below a second.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Object { e_tag: None, version: None } => {
                Err("an object's pin names neither an entity tag nor a version".into())
            }
            Self::Object { e_tag, version } => {
                for (name, text) in [("e_tag", e_tag), ("version", version)] {
                    if let Some(text) = text {
                        pin_text(text).map_err(|e| format!("{name}: {e}"))?;
                    }
                }
                Ok(())
            }
            Self::File { ctime_nanos, .. } if *ctime_nanos >= 1_000_000_000 => {
                Err(format!("ctime_nanos: {ctime_nanos} is a second or more"))
            }
            Self::File { .. } => Ok(()),
        }
    }
}

/// Checks one text of a pin: as a store gives it, it is visible ASCII, never empty, and short.
pub fn pin_text(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("empty".into());
    }
    if text.len() > MAX_PIN_TEXT_BYTES {
        return Err(format!("longer than {MAX_PIN_TEXT_BYTES} bytes"));
    }
    match text.bytes().all(|byte| byte.is_ascii_graphic()) {
        true => Ok(()),
        false => Err("holds a character that is not visible ASCII".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(e_tag: Option<&str>, version: Option<&str>) -> Pin {
        Pin::Object { e_tag: e_tag.map(str::to_owned), version: version.map(str::to_owned) }
    }

    #[test]
    fn pins_as_stores_give_them_are_valid_and_read_back_as_written() {
        let pins = [
            object(Some("\"9b2cf535f27731c974343645a3985328\""), None),
            object(Some("\"d41d8cd98f00b204e9800998ecf8427e-2\""), Some("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")),
            object(Some("0x8DC1A2B3C4D5E6F"), Some("2026-12-07T00:00:00.0000000Z")),
            object(None, Some("1733529600123456")),
            Pin::File { device: u64::MAX, inode: u64::MAX, ctime_seconds: i64::MIN, ctime_nanos: 999_999_999 },
        ];
        for pin in pins {
            assert_eq!(pin.validate(), Ok(()), "{pin:?}");
            let written = serde_json::to_vec_pretty(&pin).unwrap();
            assert!(written.len() as u64 <= MAX_PIN_BYTES, "{pin:?} takes {} bytes", written.len());
            assert_eq!(serde_json::from_slice::<Pin>(&written).unwrap(), pin);
        }
    }

    #[test]
    fn a_pin_at_its_longest_with_every_character_escaped_fits_its_bound() {
        let text = "\"".repeat(MAX_PIN_TEXT_BYTES);
        let pin = object(Some(&text), Some(&text));
        assert_eq!(pin.validate(), Ok(()));
        let written = serde_json::to_vec_pretty(&pin).unwrap();
        assert!(written.len() as u64 <= MAX_PIN_BYTES, "{} bytes", written.len());
    }

    #[test]
    fn pins_no_commit_records_are_refused_with_what_is_wrong() {
        let long = "a".repeat(MAX_PIN_TEXT_BYTES + 1);
        let cases = [
            (object(None, None), "neither"),
            (object(Some(""), None), "e_tag: empty"),
            (object(Some(&long), None), "e_tag: longer than 256 bytes"),
            (object(Some("\"ok\""), Some("a\nb")), "version: holds a character"),
            (object(Some("a b"), None), "e_tag: holds a character"),
            (object(Some("é"), None), "e_tag: holds a character"),
            (Pin::File { device: 1, inode: 2, ctime_seconds: 3, ctime_nanos: 1_000_000_000 }, "ctime_nanos"),
        ];
        for (pin, expected) in cases {
            let error = pin.validate().expect_err(expected);
            assert!(error.contains(expected), "{pin:?}: {error}");
        }
    }

    #[test]
    fn an_unknown_kind_of_pin_is_not_read() {
        let error = serde_json::from_str::<Pin>(r#"{"kind": "checksum", "sha256": "00"}"#).unwrap_err();
        assert!(error.to_string().contains("unknown variant"), "{error}");
    }
}
