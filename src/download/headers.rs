//! The headers that describe a served file, all from its manifest entry: its entity tag, media type and
//! the name a browser saves it under.

use std::fmt::Write as _;

use ring::digest;

use crate::model::{ManifestFile, ResultId};

/// A strong entity tag of one committed file. A committed file never changes (its result is immutable), so
/// its result id, path and size name its bytes.
pub fn etag(result_id: &ResultId, file: &ManifestFile) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in [result_id.as_str().as_bytes(), b"\0", file.path.as_str().as_bytes(), b"\0"] {
        context.update(part);
    }
    context.update(&file.size_bytes.to_be_bytes());
    let mut tag = String::with_capacity(34);
    tag.push('"');
    crate::hex::push(&mut tag, &context.finish().as_ref()[..16]);
    tag.push('"');
    tag
}

/// The media type of a result file, from its extension.
pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let extension = name.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("parquet") => "application/vnd.apache.parquet",
        Some("arrow" | "ipc" | "feather") => "application/vnd.apache.arrow.file",
        Some("arrows") => "application/vnd.apache.arrow.stream",
        Some("csv") => "text/csv; charset=utf-8",
        Some("ndjson" | "jsonl") => "application/x-ndjson",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// `Content-Disposition: attachment` with the file's name: an ASCII fallback (`filename`, quotes and
/// backslashes and anything outside printable ASCII replaced by `_`) and the exact name (`filename*`, RFC
/// 8187).
pub fn content_disposition(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let mut value = format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''");
    for byte in name.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => value.push(byte as char),
            _ => {
                let _ = write!(value, "%{byte:02X}");
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RelPath;

    #[test]
    fn the_tag_names_the_result_path_and_size() {
        let id = ResultId::generate().unwrap();
        let file = |path: &str, size| ManifestFile {
            path: RelPath::parse("p", path).unwrap(),
            size_bytes: size,
            row_count: None,
            pin: None,
        };
        let tag = etag(&id, &file("a.csv", 5));
        assert_eq!(tag.len(), 34);
        assert!(tag.starts_with('"') && tag.ends_with('"'));
        assert_eq!(tag, etag(&id, &file("a.csv", 5)));
        assert_ne!(tag, etag(&id, &file("a.csv", 6)));
        assert_ne!(tag, etag(&id, &file("b.csv", 5)));
        assert_ne!(tag, etag(&ResultId::generate().unwrap(), &file("a.csv", 5)));
    }

    #[test]
    fn media_types_by_extension() {
        assert_eq!(content_type("x/part-0.parquet"), "application/vnd.apache.parquet");
        assert_eq!(content_type("part-0.ARROW"), "application/vnd.apache.arrow.file");
        assert_eq!(content_type("a.csv"), "text/csv; charset=utf-8");
        assert_eq!(content_type("a.ndjson"), "application/x-ndjson");
        assert_eq!(content_type("a.parquet/readme"), "application/octet-stream");
    }

    #[test]
    fn the_saved_name_is_the_files_own_and_cannot_break_the_header() {
        assert_eq!(
            content_disposition("year=2024/part 0.csv"),
            "attachment; filename=\"part 0.csv\"; filename*=UTF-8''part%200.csv"
        );
        let value = content_disposition("q\"u\\o;té.csv");
        assert_eq!(value, "attachment; filename=\"q_u_o;t_.csv\"; filename*=UTF-8''q%22u%5Co%3Bt%C3%A9.csv");
        assert!(http::HeaderValue::from_str(&value).is_ok());
    }
}
