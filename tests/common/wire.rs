//! Talking to the service below the generated client, as a hostile or broken caller does: gRPC calls with
//! any bytes as their message (or a body that never ends), and raw HTTP/2 frames over a plain socket.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::{Buf, BufMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

/// A codec whose messages are the bytes on the wire: what is sent is not checked to be protobuf.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

#[derive(Clone, Copy, Debug, Default)]
pub struct RawBytes;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// The path of an AnonymousResults method.
pub fn method(name: &str) -> http::uri::PathAndQuery {
    format!("/anonymous_results.v1.AnonymousResults/{name}").parse().expect("a path")
}

fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    }
    request
}

/// Calls `method` with `message` as the request's bytes, as a caller holding `token` (or none).
pub async fn call_raw(channel: Channel, name: &str, message: Vec<u8>, token: Option<&str>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(request(message, token), method(name), RawCodec).await.map(tonic::Response::into_inner)
}

/// Calls `method` with a request body that never ends (no message is ever sent), as a caller holding `token`.
pub async fn call_without_end(channel: Channel, name: &str, token: Option<&str>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let never = futures::stream::pending::<Vec<u8>>();
    grpc.client_streaming(request(never, token), method(name), RawCodec).await.map(tonic::Response::into_inner)
}

/// The HTTP/2 client preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame: its header (length, type, flags, stream) and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const SETTINGS: u8 = 4;
pub const GOAWAY: u8 = 7;
pub const END_HEADERS: u8 = 4;
pub const ACK: u8 = 1;

/// A header block of a gRPC request for `path`, in HPACK literals (no table, no Huffman).
pub fn request_headers(path: &str, authority: &str) -> Vec<u8> {
    request_headers_with(path, authority, &[])
}

/// A header block of a gRPC request for `path` with the headers `extra` too (each under 127 bytes).
pub fn request_headers_with(path: &str, authority: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    let fixed = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    for (name, value) in fixed.iter().chain(extra) {
        // "Literal header field without indexing, new name".
        block.push(0);
        push_string(&mut block, name);
        push_string(&mut block, value);
    }
    block
}

fn push_string(block: &mut Vec<u8>, text: &str) {
    // A 7-bit prefixed length: every string here is shorter than 127 bytes.
    assert!(text.len() < 127);
    block.push(text.len() as u8);
    block.extend_from_slice(text.as_bytes());
}

/// A plain connection that has sent the HTTP/2 preface and an empty SETTINGS frame.
pub async fn h2_connect(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(PREFACE).await.expect("preface");
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.expect("settings");
    stream
}

/// Reads frames until the server's first (non-ACK) SETTINGS frame; answers its parameters.
pub async fn server_settings(stream: &mut TcpStream) -> Vec<(u16, u32)> {
    loop {
        let (kind, flags, payload) = read_frame(stream).await.expect("a frame before the server's settings");
        if kind == SETTINGS && flags & ACK == 0 {
            return payload
                .chunks_exact(6)
                .map(|p| (u16::from_be_bytes([p[0], p[1]]), u32::from_be_bytes([p[2], p[3], p[4], p[5]])))
                .collect();
        }
    }
}

/// One frame off `stream`: `(type, flags, payload)`; `None` at the end of the stream.
pub async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.ok()?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.ok()?;
    Some((header[3], header[4], payload))
}

/// How long until `stream` is closed by the server, reading (and dropping) whatever it sends; `None` if it
/// is still open after `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    let mut buffer = vec![0u8; 16 * 1024];
    let read_all = async {
        while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
        Ok::<_, Infallible>(())
    };
    tokio::time::timeout(within, read_all).await.ok().map(|_| started.elapsed())
}

/// Whether the server sends a GOAWAY on `stream` within `within`, reading (and dropping) the frames before it.
pub async fn goaway_within(stream: &mut TcpStream, within: Duration) -> bool {
    let goaway = async {
        loop {
            match read_frame(stream).await {
                Some((GOAWAY, _, _)) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    };
    tokio::time::timeout(within, goaway).await.unwrap_or(false)
}
