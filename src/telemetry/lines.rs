//! Log lines written to standard error by a thread of their own, so that no call waits on the write of its log
//! line, nor on a reader of standard error that falls behind (a full pipe blocks whoever writes into it).
//!
//! Each line is appended to a buffer of at most [`MAX_BUFFERED`] bytes, which the thread writes out whole as
//! often as it can: under load one write carries many lines. Lines keep their order. When the buffer is full
//! (standard error is not taken as fast as lines come), a line is dropped and counted, and a warning says how
//! many were dropped once there is room again. At exit, [`Flush`] writes what is buffered, waiting at most
//! [`FLUSH_TIMEOUT`] for a standard error that does not take it.

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// The most bytes of log lines held for the writer.
pub const MAX_BUFFERED: usize = 4 << 20;
/// The longest the process waits at exit for buffered lines to be written.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Where log lines go: the buffer of the writer thread.
#[derive(Clone, Debug)]
pub struct Lines {
    shared: Arc<Shared>,
}

/// Writes what is buffered when dropped (at exit): see [`Lines::flush_on_drop`].
#[derive(Debug)]
#[must_use = "the buffered lines are written when this is dropped"]
pub struct Flush {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: lines came, or the end.
    wake: Condvar,
    /// Wakes whoever waits for the writer to finish.
    finished: Condvar,
}

#[derive(Debug, Default)]
struct State {
    buffer: Vec<u8>,
    /// Lines dropped since the writer last said so.
    dropped: u64,
    /// Lines dropped and said so, in all.
    told: u64,
    /// The writer is waiting for lines (only then is it woken).
    idle: bool,
    /// No more lines are buffered: they go straight to standard error.
    closed: bool,
    /// The writer has written everything and ended.
    done: bool,
}

impl Lines {
    /// Starts the writer thread. If no thread can be started, lines go straight to standard error.
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let writer = shared.clone();
        let started =
            std::thread::Builder::new().name("log-writer".into()).spawn(move || writer.write_out(&mut io::stderr()));
        if started.is_err() {
            let mut state = shared.lock();
            (state.closed, state.done) = (true, true);
        }
        Self { shared }
    }

    /// A guard that, dropped, stops buffering and writes what is buffered (within [`FLUSH_TIMEOUT`]).
    pub fn flush_on_drop(&self) -> Flush {
        Flush { shared: self.shared.clone() }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writer's loop: takes the whole buffer whenever there is something in it and writes it to `out`;
    /// ends once closed and empty.
    fn write_out(&self, out: &mut impl Write) {
        let mut spare = Vec::new();
        loop {
            let (mut lines, dropped) = {
                let mut state = self.lock();
                while state.buffer.is_empty() && state.dropped == 0 && !state.closed {
                    state.idle = true;
                    state = self.wake.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                state.idle = false;
                if state.buffer.is_empty() && state.closed {
                    state.done = true;
                    self.finished.notify_all();
                    return;
                }
                let dropped = std::mem::take(&mut state.dropped);
                state.told += dropped;
                (std::mem::replace(&mut state.buffer, std::mem::take(&mut spare)), dropped)
            };
            // A standard error that fails (closed) fails every line alike: nothing else to do with them.
            let _ = out.write_all(&lines);
            if dropped > 0 {
                // Through the subscriber, so that it has the format of every other line; buffered like them.
                tracing::warn!(
                    dropped,
                    "log lines were dropped: standard error did not take them as fast as they came"
                );
            }
            lines.clear();
            // The emptied buffer is used again, unless a burst made it large.
            if lines.capacity() <= MAX_BUFFERED / 16 {
                spare = lines;
            }
        }
    }

    /// Buffers `line` (one whole log line), or drops it if the buffer is full.
    fn push(&self, line: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            return io::stderr().write_all(line);
        }
        if state.buffer.len() + line.len() > MAX_BUFFERED {
            state.dropped += 1;
            return Ok(());
        }
        state.buffer.extend_from_slice(line);
        if state.idle {
            state.idle = false;
            self.wake.notify_one();
        }
        Ok(())
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.wake.notify_one();
        let deadline = std::time::Instant::now() + FLUSH_TIMEOUT;
        while !state.done {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            state = self.shared.finished.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// One log line on its way to the buffer (the formatter writes each line whole, in one `write_all`).
#[derive(Debug)]
pub struct Line<'a> {
    shared: &'a Shared,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.shared.push(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { shared: &self.shared }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes nothing until it is let go, then keeps everything.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (open, opened) = &*self.open;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn start_into(out: &Gate) -> (Arc<Shared>, std::thread::JoinHandle<()>) {
        let shared = Arc::new(Shared::default());
        let (writer, mut out) = (shared.clone(), out.clone());
        (shared, std::thread::spawn(move || writer.write_out(&mut out)))
    }

    #[test]
    fn lines_keep_their_order_and_every_one_is_written_by_the_end() {
        let gate = Gate::default();
        *gate.open.0.lock().unwrap() = true;
        let (shared, writer) = start_into(&gate);
        let lines = Lines { shared: shared.clone() };
        for n in 0..10_000 {
            lines.make_writer().write_all(format!("line {n}\n").as_bytes()).unwrap();
        }
        drop(lines.flush_on_drop());
        writer.join().unwrap();
        let written = String::from_utf8(gate.written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..10_000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(written, expected);
    }

    #[test]
    fn a_stuck_standard_error_costs_dropped_lines_not_a_blocked_caller() {
        let gate = Gate::default();
        let (shared, writer) = start_into(&gate);
        let lines = Lines { shared: shared.clone() };
        let line = vec![b'x'; 1023];
        let started = std::time::Instant::now();
        // Three times what the buffer holds, while nothing is written: the writer may have taken one buffer's
        // worth in hand before it blocked, and the buffer holds one more, so the third is dropped.
        let pushed = 3 * MAX_BUFFERED / 1024;
        for _ in 0..pushed {
            lines.make_writer().write_all(&line).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the callers waited: {:?}", started.elapsed());
        let buffered = shared.lock().buffer.len();
        assert!(buffered <= MAX_BUFFERED, "{buffered} bytes held");
        // Let go: what was held is written, and the drop is told (a warning, through no subscriber here).
        let (open, opened) = &*gate.open;
        *open.lock().unwrap() = true;
        opened.notify_all();
        drop(lines.flush_on_drop());
        writer.join().unwrap();
        // Every line was written or dropped and counted; the writer took the count to tell it (it may have
        // taken it with the first buffer, before the test could look).
        let written = gate.written.lock().unwrap().len() / line.len();
        let state = shared.lock();
        assert_eq!(state.dropped, 0, "the count was taken to be told");
        assert!(state.told > 0, "the lines past the bound were dropped and counted");
        assert_eq!(written as u64 + state.told, pushed as u64, "{written} written, {} told", state.told);
        assert!(written >= MAX_BUFFERED / 2 / line.len());
    }
}
