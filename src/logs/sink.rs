//! flowinit's two outputs. One writer thread per output owns the fd and
//! writes whole batches of whole lines, so lines never mix and a blocked
//! stdout never blocks the async runtime. Forwarders must hold a permit
//! for every batch in flight: when the output is slow they wait, stop
//! reading their pipes, and the services block on write (back-pressure).

use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Batches in flight per output, each at most one pipe read (64 KiB) plus
/// prefixes: bounds memory at a few MiB however slow the reader is.
const BATCHES_IN_FLIGHT: usize = 64;

struct Batch {
    bytes: Vec<u8>,
    _permit: Option<OwnedSemaphorePermit>,
    /// Told once this batch (and so everything before it) is written.
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Clone)]
struct Lane {
    tx: mpsc::Sender<Batch>,
    permits: Arc<Semaphore>,
}

impl Lane {
    fn start(name: &str, mut out: Box<dyn Write + Send>) -> std::io::Result<Lane> {
        let (tx, rx) = mpsc::channel::<Batch>();
        std::thread::Builder::new().name(format!("flowinit-{name}")).spawn(move || {
            for batch in rx {
                // A closed output (EPIPE) must not stall the services:
                // keep draining, there is nobody left to tell.
                if !batch.bytes.is_empty() && out.write_all(&batch.bytes).is_ok() {
                    let _ = out.flush();
                }
                if let Some(done) = batch.done {
                    let _ = done.send(());
                }
            }
        })?;
        Ok(Lane { tx, permits: Arc::new(Semaphore::new(BATCHES_IN_FLIGHT)) })
    }
}

/// A cheap handle to both outputs.
#[derive(Clone)]
pub struct LogSink {
    stdout: Lane,
    stderr: Lane,
    pub format: LogFormat,
}

impl LogSink {
    pub fn start(format: LogFormat) -> std::io::Result<LogSink> {
        use std::os::fd::AsFd;
        // Unbuffered handles on fds 1 and 2: batches are already whole
        // lines, so a second buffer would only add a copy.
        let out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
        let err = std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned()?);
        Self::with_writers(format, Box::new(out), Box::new(err))
    }

    pub fn with_writers(
        format: LogFormat,
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
    ) -> std::io::Result<LogSink> {
        Ok(LogSink { stdout: Lane::start("stdout", stdout)?, stderr: Lane::start("stderr", stderr)?, format })
    }

    fn lane(&self, stream: Stream) -> &Lane {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    /// Queues whole lines for output, waiting while too much is in flight.
    pub async fn send(&self, stream: Stream, bytes: Vec<u8>) {
        let lane = self.lane(stream);
        let permit = lane.permits.clone().acquire_owned().await.ok();
        let _ = lane.tx.send(Batch { bytes, _permit: permit, done: None });
    }

    /// Like [`LogSink::send`], then waits until those lines are written, at
    /// most `limit` (a blocked output must not hold the caller).
    pub async fn send_written(&self, stream: Stream, bytes: Vec<u8>, limit: std::time::Duration) {
        let lane = self.lane(stream);
        let permit = lane.permits.clone().acquire_owned().await.ok();
        let (tx, rx) = tokio::sync::oneshot::channel();
        if lane.tx.send(Batch { bytes, _permit: permit, done: Some(tx) }).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }

    /// Waits until everything queued so far is written, or `limit` passed.
    pub async fn drain(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        for lane in [&self.stdout, &self.stderr] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if lane.tx.send(Batch { bytes: Vec::new(), _permit: None, done: Some(tx) }).is_ok() {
                let _ = tokio::time::timeout_at(deadline, rx).await;
            }
        }
    }

    /// Queues flowinit's own event lines; never waits (they are few and
    /// must not block the task that logs).
    pub fn send_now(&self, stream: Stream, bytes: Vec<u8>) {
        let _ = self.lane(stream).tx.send(Batch { bytes, _permit: None, done: None });
    }
}

/// Appends `s` to `out` as a JSON string literal.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut start = 0;
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f | 0x7f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// RFC 3339 UTC with milliseconds.
pub fn timestamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_round_trip() {
        for s in ["plain", "q\"b\\", "tab\tnl\ncr\r", "ctl\u{1}\u{7f}", "ünï ✓"] {
            let mut out = Vec::new();
            json_string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }
}
