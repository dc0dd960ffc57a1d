//! A TCP link between the service and a real storage server that can be made faulty on demand: passing
//! bytes through, answering every request with HTTP 503, or swallowing requests and never answering.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// How the link behaves for new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Bytes pass through unchanged.
    None = 0,
    /// Every request is answered `503 Service Unavailable`.
    ServiceUnavailable = 1,
    /// Requests are read and never answered.
    BlackHole = 2,
}

/// The link, listening on a loopback port of its own.
pub struct FaultyLink {
    /// `http://127.0.0.1:PORT`: give this to the service as the storage endpoint.
    pub endpoint: String,
    mode: Arc<AtomicU8>,
    /// The bytes sent upstream, for tests that look at the requests.
    sent: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl FaultyLink {
    /// A link to `upstream` (an `http://host:port` endpoint), passing bytes through.
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr =
            upstream.trim_start_matches("http://").parse().expect("an http://127.0.0.1:PORT endpoint");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the link");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        let mode = Arc::new(AtomicU8::new(Fault::None as u8));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (mode, sent) = (mode.clone(), sent.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(serve(client, upstream, mode.clone(), sent.clone()));
                }
            }
        });
        Self { endpoint, mode, sent, task }
    }

    /// What has been sent upstream so far (request heads and bodies), as text.
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }

    /// Changes how the link treats new requests: a connection already open that turns faulty answers its next
    /// request with a 503 (ServiceUnavailable) or drops it (BlackHole).
    pub fn set(&self, fault: Fault) {
        self.mode.store(fault as u8, Ordering::SeqCst);
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mode: Arc<AtomicU8>, sent: Arc<Mutex<Vec<u8>>>) {
    let fault = || mode.load(Ordering::SeqCst);
    if fault() == Fault::ServiceUnavailable as u8 {
        let mut buffer = vec![0u8; 64 * 1024];
        // Answer each request head with a 503, then close.
        let _ = client.read(&mut buffer).await;
        let answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = client.write_all(answer.as_bytes()).await;
        return;
    }
    if fault() == Fault::BlackHole as u8 {
        let mut buffer = vec![0u8; 64 * 1024];
        while matches!(client.read(&mut buffer).await, Ok(n) if n > 0) {}
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    // Ends with whether the link turned to answering 503s meanwhile: a request on this connection then gets one,
    // as a store that answers 503 answers it on a connection already open.
    let upward = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match client_read.read(&mut buffer).await {
                Ok(n) if n > 0 && fault() == Fault::None as u8 => {
                    sent.lock().unwrap().extend_from_slice(&buffer[..n]);
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        return false;
                    }
                }
                Ok(n) if n > 0 => return fault() == Fault::ServiceUnavailable as u8,
                _ => return false,
            }
        }
    };
    let downward = tokio::io::copy(&mut server_read, &mut client_write);
    let unavailable = tokio::select! {
        unavailable = upward => unavailable,
        _ = downward => false,
    };
    if unavailable {
        let answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = client_write.write_all(answer.as_bytes()).await;
    }
}
