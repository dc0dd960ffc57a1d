//! Any bytes, decoded as one of the service's requests and validated as the service does on receive: nothing
//! may panic, and whatever validation accepts must be safe to use (paths inside the sink, ids of our shape).

#![no_main]

use anonymous_results::{
    model::{AllocateSpec, CommitSpec, ResolveSpec, ResultId},
    proto,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 6 {
        0 => {
            if let Ok(request) = proto::AllocateRequest::decode(bytes) {
                let _ = AllocateSpec::try_from(request);
            }
        }
        1 => {
            if let Ok(request) = proto::CommitRequest::decode(bytes)
                && let Ok(spec) = CommitSpec::try_from(request)
            {
                for file in &spec.files {
                    let path = file.path.as_str();
                    assert!(!path.starts_with('/') && !path.contains('\\') && !path.contains('\0'), "{path:?}");
                    assert!(path.split('/').all(|segment| !matches!(segment, "" | "." | "..")), "{path:?}");
                }
            }
        }
        2 => {
            if let Ok(request) = proto::ResolveRequest::decode(bytes) {
                let _ = ResolveSpec::try_from(request);
            }
        }
        3 => {
            if let Ok(request) = proto::AbortRequest::decode(bytes) {
                let _ = ResultId::parse(&request.result_id);
            }
        }
        4 => {
            if let Ok(request) = proto::RenewRequest::decode(bytes) {
                let _ = ResultId::parse(&request.result_id);
            }
        }
        _ => {
            let text = String::from_utf8_lossy(bytes);
            if let Ok(id) = ResultId::parse(&text) {
                assert!(id.as_str().len() == 26 && id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
            }
        }
    }
});
