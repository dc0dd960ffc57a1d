//! The download routes' parsers of untrusted text: the `Range` header (with `If-Range`) and the link verifier.
//!
//! Asserted: nothing panics; a range answered lies within the file; a link verifies only if its signature is
//! the one the service makes for what it names (so no changed link passes), and every minted link verifies.

#![no_main]

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use anonymous_results::{
    download::range::{self, Part},
    link::{LinkKeys, LinkMode},
    model::{RelPath, ResultId, Timestamp},
};
use libfuzzer_sys::fuzz_target;

const BASE: &str = "https://results.example.com";

fn keys() -> &'static LinkKeys {
    static KEYS: OnceLock<LinkKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        LinkKeys::new(b"a fuzzing secret of thirty-two bytes!!", &[b"the previous one, also 32 bytes long"])
    })
}

/// The value of the query parameter `signature` of `url`.
fn signature(url: &str) -> Option<&str> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix("signature="))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let size = u64::from_le_bytes(data[1..9].try_into().unwrap_or_default());
    let text = String::from_utf8_lossy(&data[9..]);
    let now = Timestamp::new(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(data[0]) * 1_000_000))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    // The Range header, alone and with an If-Range.
    let (header, if_range) = text.split_once('\n').map_or((&*text, None), |(a, b)| (a, Some(b)));
    for part in
        [range::requested(Some(header), None, size, "\"t\""), range::requested(Some(header), if_range, size, "\"t\"")]
    {
        if let Part::Bytes(bytes) = part {
            assert!(bytes.start < bytes.end && bytes.end <= size, "{header:?} of {size}: {bytes:?}");
        }
    }
    let _ = range::not_modified(Some(&text), "\"t\"");
    // Any target: if it verifies, its signature is the one minted for what it names.
    if let Ok(verified) = keys().verify(&text, now) {
        let minted = keys().mint("", &verified.result_id, &verified.path, verified.mode);
        assert_eq!(signature(&text), signature(&minted), "{text:?} verified as {verified:?}");
    }
    // A link minted for a path made of the input verifies, as what it was minted for.
    if let Ok(path) = RelPath::parse("path", &text)
        && let Ok(id) = ResultId::parse("bbbbbbbbbbbbbbbbbbbbbbbbbb")
    {
        for mode in [LinkMode::Proxy { expires: u64::MAX / 1000 }, LinkMode::Redirect] {
            let url = keys().mint(BASE, &id, &path, mode);
            let verified = keys().verify(&url[BASE.len()..], now).expect("a minted link verifies");
            assert_eq!((verified.result_id, verified.path, verified.mode), (id.clone(), path.clone(), mode));
        }
    }
});
