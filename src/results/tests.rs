//! Unit tests of a Commit's check of the sink's entries.

use super::*;
use crate::storage::EntryKind;

fn entry(path: &str, pin: Option<Pin>) -> SinkEntry {
    SinkEntry { path: path.into(), size_bytes: 3, kind: EntryKind::File, pin }
}

#[test]
fn a_commit_records_each_files_pin_as_listed() {
    let id = ResultId::generate().unwrap();
    let pin = Pin::Object { e_tag: Some("\"abc\"".into()), version: Some("3HL4kqtJlcpXroDTDmJ".into()) };
    let files = discover(&id, vec![entry("b.csv", Some(pin.clone())), entry("a.csv", None)]).unwrap();
    assert_eq!(files.iter().map(|f| (f.path.as_str(), f.pin.clone())).collect::<Vec<_>>(), [
        ("a.csv", None),
        ("b.csv", Some(pin.clone()))
    ]);
    let declared = vec![crate::model::DeclaredFile {
        path: RelPath::parse("path", "b.csv").unwrap(),
        size_bytes: Some(3),
        row_count: Some(1),
    }];
    let files = verify(&id, declared, vec![entry("b.csv", Some(pin.clone()))]).unwrap();
    assert_eq!(files[0].pin, Some(pin));
}

/// A store that answers an entity tag no manifest can hold (a control character, an endless one) gives a
/// file that cannot be pinned: the commit is refused, FAILED_PRECONDITION naming the file, not
/// INVALID_ARGUMENT (the request was fine) and not a manifest written without the pin.
#[test]
fn a_file_the_store_describes_with_an_unrecordable_tag_is_not_committed() {
    let id = ResultId::generate().unwrap();
    for e_tag in ["\"a\u{7}b\"".to_owned(), "x".repeat(crate::model::MAX_PIN_TEXT_BYTES + 1), String::new()] {
        let pin = Pin::Object { e_tag: Some(e_tag.clone()), version: None };
        let error = discover(&id, vec![entry("part-0.parquet", Some(pin))]).unwrap_err();
        assert!(matches!(&error, Error::Unpinnable { path, .. } if path.as_str() == "part-0.parquet"), "{error:?}");
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{e_tag:?}");
        assert!(status.message().contains("cannot be pinned"), "{}", status.message());
        assert!(!status.message().contains('\u{7}'), "the store's text is not repeated raw");
    }
}
