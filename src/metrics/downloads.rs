//! What the download routes count: downloads in flight and bytes served, by mode, and requests refused, by
//! reason.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The modes a download is served in, as the `mode` label says them.
const MODES: [&str; 2] = ["proxy", "redirect"];
/// Why a download request was refused, as the `reason` label says it.
pub const REFUSALS: [&str; 8] =
    ["not_found", "forged", "expired", "gone", "busy", "unavailable", "size_mismatch", "changed"];

/// The download counters of one process.
#[derive(Default)]
pub struct DownloadMetrics {
    in_flight: [AtomicI64; MODES.len()],
    bytes: [AtomicU64; MODES.len()],
    redirects: AtomicU64,
    refused: [AtomicU64; REFUSALS.len()],
}

impl std::fmt::Debug for DownloadMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DownloadMetrics")
    }
}

/// How a download is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Streamed by the service for a proxy link.
    Proxy,
    /// Streamed by the service for a redirect link (a shared filesystem has no store URL to send it to).
    Redirect,
}

impl DownloadMetrics {
    /// A streamed download began; [`DownloadMetrics::finished`] when it ends, however.
    pub fn started(&self, mode: Served) {
        self.in_flight[mode as usize].fetch_add(1, Relaxed);
    }

    pub fn finished(&self, mode: Served) {
        self.in_flight[mode as usize].fetch_sub(1, Relaxed);
    }

    /// Streamed downloads in flight, over every mode.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.iter().map(|count| count.load(Relaxed)).sum()
    }

    /// Bytes handed to a client's connection.
    pub fn sent(&self, mode: Served, bytes: u64) {
        self.bytes[mode as usize].fetch_add(bytes, Relaxed);
    }

    /// A GET answered with a redirect to a store URL.
    pub fn redirected(&self) {
        self.redirects.fetch_add(1, Relaxed);
    }

    /// A request refused for `reason`, one of [`REFUSALS`]; another is not counted.
    pub fn refused(&self, reason: &str) {
        if let Some(at) = REFUSALS.iter().position(|known| *known == reason) {
            self.refused[at].fetch_add(1, Relaxed);
        }
    }

    /// These counters, in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use super::families::{DOWNLOAD_BYTES, DOWNLOAD_REDIRECTS, DOWNLOAD_REFUSALS, DOWNLOADS_IN_FLIGHT};
        let in_flight = MODES.into_iter().zip(&self.in_flight).map(|(mode, count)| (mode, count.load(Relaxed)));
        DOWNLOADS_IN_FLIGHT.by(out, "mode", in_flight);
        DOWNLOAD_BYTES.by(out, "mode", super::loaded(MODES.into_iter().zip(&self.bytes)));
        DOWNLOAD_REDIRECTS.single(out, self.redirects.load(Relaxed));
        DOWNLOAD_REFUSALS.by(out, "reason", super::loaded(REFUSALS.into_iter().zip(&self.refused)));
    }
}
