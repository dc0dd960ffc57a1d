//! What part of a file a GET asks for (RFC 9110 section 14): one byte range of the `Range` header, honoured
//! only if `If-Range` (when present) names the file's current entity tag; and whether `If-None-Match` makes
//! the answer a 304.

use std::ops::Range;

/// What to send of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// The whole file (200): no range asked, one this server ignores (several ranges, another unit, a
    /// malformed header), or an `If-Range` that no longer holds.
    Whole,
    /// These bytes (206).
    Bytes(Range<u64>),
    /// A range outside the file (416).
    Unsatisfiable,
}

/// The part of a file of `size` bytes, with entity tag `etag` (quoted), that the headers `range` and
/// `if_range` ask for.
pub fn requested(range: Option<&str>, if_range: Option<&str>, size: u64, etag: &str) -> Part {
    let Some(range) = range else { return Part::Whole };
    // A date, or a weak or other tag: the file may have changed since, so send it whole.
    if if_range.is_some_and(|if_range| if_range.trim() != etag) {
        return Part::Whole;
    }
    parse(range, size).unwrap_or(Part::Whole)
}

/// One byte range of a file of `size` bytes; `None` for a header to ignore.
fn parse(header: &str, size: u64) -> Option<Part> {
    let (unit, spec) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let spec = spec.trim();
    // Several ranges are allowed to be answered whole.
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes; all of them if N is larger than the file.
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 || size == 0 {
                return Some(Part::Unsatisfiable);
            }
            Some(Part::Bytes(size.saturating_sub(suffix)..size))
        }
        // `bytes=A-`: from A to the end.
        (false, true) => {
            let first = number(first)?;
            Some(if first < size { Part::Bytes(first..size) } else { Part::Unsatisfiable })
        }
        // `bytes=A-B`: B is inclusive, and may lie past the end.
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            if last < first {
                return None;
            }
            Some(if first < size { Part::Bytes(first..last.saturating_add(1).min(size)) } else { Part::Unsatisfiable })
        }
        (true, true) => None,
    }
}

/// A decimal number within u64 (at most 20 digits).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether `If-None-Match` names `etag` (weakly compared) or is `*`: then a GET or HEAD answers 304.
pub fn not_modified(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(header) = if_none_match else { return false };
    header.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TAG: &str = "\"abc\"";

    fn part(range: &str, size: u64) -> Part {
        requested(Some(range), None, size, TAG)
    }

    #[test]
    fn single_ranges_of_each_form() {
        assert_eq!(part("bytes=0-0", 10), Part::Bytes(0..1));
        assert_eq!(part("bytes=2-5", 10), Part::Bytes(2..6));
        assert_eq!(part("bytes=2-", 10), Part::Bytes(2..10));
        assert_eq!(part("bytes=8-100", 10), Part::Bytes(8..10));
        assert_eq!(part("bytes=-3", 10), Part::Bytes(7..10));
        assert_eq!(part("bytes=-100", 10), Part::Bytes(0..10), "a suffix longer than the file is all of it");
        assert_eq!(part("BYTES = 1 - 2", 10), Part::Bytes(1..3));
        assert_eq!(part("bytes=9-18446744073709551615", 10), Part::Bytes(9..10));
    }

    #[test]
    fn ranges_outside_the_file_are_unsatisfiable() {
        assert_eq!(part("bytes=10-", 10), Part::Unsatisfiable);
        assert_eq!(part("bytes=10-20", 10), Part::Unsatisfiable);
        assert_eq!(part("bytes=-0", 10), Part::Unsatisfiable);
        assert_eq!(part("bytes=-5", 0), Part::Unsatisfiable);
        assert_eq!(part("bytes=0-", 0), Part::Unsatisfiable);
    }

    #[test]
    fn headers_this_server_ignores_ask_the_whole_file() {
        for header in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-2",
            "bytes=-",
            "bytes=a-b",
            "bytes=1",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
            "",
        ] {
            assert_eq!(part(header, 10), Part::Whole, "{header:?}");
        }
        assert_eq!(requested(None, None, 10, TAG), Part::Whole);
    }

    #[test]
    fn if_range_holds_only_for_the_current_tag() {
        assert_eq!(requested(Some("bytes=0-1"), Some(TAG), 10, TAG), Part::Bytes(0..2));
        assert_eq!(requested(Some("bytes=0-1"), Some("\"other\""), 10, TAG), Part::Whole);
        assert_eq!(requested(Some("bytes=0-1"), Some("W/\"abc\""), 10, TAG), Part::Whole);
        assert_eq!(requested(Some("bytes=0-1"), Some("Tue, 01 Dec 2026 00:00:00 GMT"), 10, TAG), Part::Whole);
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(not_modified(Some(TAG), TAG));
        assert!(not_modified(Some("\"x\", W/\"abc\""), TAG));
        assert!(not_modified(Some("*"), TAG));
        assert!(!not_modified(Some("\"x\""), TAG));
        assert!(!not_modified(None, TAG));
    }

    proptest! {
        /// Any header on any size: a part within the file, never a panic.
        #[test]
        fn any_header_gives_a_part_within_the_file(header in "\\PC{0,40}", size in 0u64..=u64::MAX) {
            if let Part::Bytes(range) = part(&header, size) {
                prop_assert!(range.start < range.end && range.end <= size, "{header:?} {size}: {range:?}");
            }
        }

        /// Every well-formed single range is honoured as RFC 9110 says.
        #[test]
        fn well_formed_ranges_are_honoured(first in 0u64..1000, length in 0u64..1000, size in 0u64..1000) {
            let last = first + length;
            let expected =
                if first < size { Part::Bytes(first..(last + 1).min(size)) } else { Part::Unsatisfiable };
            prop_assert_eq!(part(&format!("bytes={first}-{last}"), size), expected);
            let suffix = part(&format!("bytes=-{length}"), size);
            let expected = if length == 0 || size == 0 { Part::Unsatisfiable } else { Part::Bytes(size.saturating_sub(length)..size) };
            prop_assert_eq!(suffix, expected);
        }
    }
}
