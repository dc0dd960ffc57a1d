//! Properties of the validation of what callers send: a path that is accepted never leaves its sink, a path
//! with a hostile segment is never accepted, and only ids shaped like the service's own are.

use std::path::{Component, Path};

use anonymous_results::model::{MAX_PATH_BYTES, RESERVED_PREFIX, RelPath, ResultId};
use proptest::prelude::*;

/// Segments of every kind: plain names, and each kind a path may not hold.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9_=-][a-zA-Z0-9_.=-]{0,12}",
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just(String::new()),
        1 => Just(format!("{RESERVED_PREFIX}-x")),
        1 => "[a-z]{0,3}\\\\[a-z]{0,3}",
        1 => "[a-z]{0,3}[\\x00-\\x1f\\x7f][a-z]{0,3}",
        1 => "[^/\\p{C}]{1,8}",
    ]
}

fn hostile(segment: &str) -> bool {
    segment.is_empty()
        || segment == "."
        || segment == ".."
        || segment.starts_with(RESERVED_PREFIX)
        || segment.contains('\\')
        || segment.chars().any(char::is_control)
        || segment.len() > 255
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn an_accepted_path_stays_inside_its_sink(text in "\\PC{0,40}|(\\.\\./)+[a-z]{1,5}|/[a-z/]{0,10}") {
        if let Ok(path) = RelPath::parse("path", &text) {
            let joined = Path::new("/sink").join(path.as_str());
            prop_assert!(joined.starts_with("/sink"));
            for component in Path::new(path.as_str()).components() {
                prop_assert!(matches!(component, Component::Normal(_)), "{text:?} has {component:?}");
            }
            prop_assert!(path.as_str().len() <= MAX_PATH_BYTES);
        }
    }

    #[test]
    fn a_path_is_accepted_exactly_when_no_segment_is_hostile(segments in prop::collection::vec(segment(), 1..6), absolute in any::<bool>()) {
        let text = format!("{}{}", if absolute { "/" } else { "" }, segments.join("/"));
        let expected = !absolute && !segments.iter().any(|s| hostile(s)) && text.len() <= MAX_PATH_BYTES;
        let parsed = RelPath::parse("files[0].path", &text);
        prop_assert_eq!(parsed.is_ok(), expected, "{:?}: {:?}", text, parsed);
        if let Err(e) = parsed {
            prop_assert_eq!(e.field, "files[0].path");
        }
    }

    #[test]
    fn only_ids_shaped_like_ours_parse(text in "[a-z2-7]{26}|[a-z0-9]{20,30}|\\PC{0,30}") {
        let ours = text.len() == 26
            && text.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
            && text.as_bytes()[0] <= b'h';
        prop_assert_eq!(ResultId::parse(&text).is_ok(), ours, "{:?}", text);
    }
}

#[test]
fn generated_ids_parse_back_and_differ() {
    let ids: Vec<ResultId> = (0..1_000).map(|_| ResultId::generate().unwrap()).collect();
    for id in &ids {
        assert_eq!(ResultId::parse(id.as_str()).as_ref(), Ok(id));
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
}
