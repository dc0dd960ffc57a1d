//! One gRPC call, as bytes over HTTP, to the tower service the server mounts: what the fuzz targets that drive
//! whole requests share.

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use tower::Service as _;

/// One gRPC call to the tower service: the answer's code and, if OK, its first message.
pub async fn call(
    service: &mut anonymous_results::grpc::admission::Admission,
    method: &str,
    message: Vec<u8>,
) -> (i32, Option<Bytes>) {
    let mut frame = vec![0u8];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(message);
    let request = http::Request::post(format!("http://fuzz/anonymous_results.v1.AnonymousResults/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(Bytes::from(frame))))
        .unwrap();
    let response = service.call(request).await.unwrap();
    let status = |headers: &http::HeaderMap| headers.get("grpc-status").and_then(|v| v.to_str().ok()?.parse().ok());
    if let Some(code) = status(response.headers()) {
        return (code, None);
    }
    let mut body = response.into_body();
    let mut data = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(trailers) = frame.trailers_ref() {
            let code = status(trailers).expect("a grpc-status trailer");
            return (code, (code == 0).then(|| message_of(data.freeze())));
        }
        data.extend_from_slice(frame.data_ref().unwrap());
        // A Watch goes on: its first message is enough.
        if method == "Watch"
            && data.len() >= 5
            && data.len() >= 5 + u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize
        {
            return (0, Some(message_of(data.freeze())));
        }
    }
    panic!("{method}: an answer without a status");
}

pub fn message_of(mut frame: Bytes) -> Bytes {
    frame.advance(5);
    frame
}
