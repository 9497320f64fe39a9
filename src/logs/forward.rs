//! One task per service pipe: read chunks, split into lines, format them
//! (prefix or JSON), keep the tail in the unit's ring buffer, copy to the
//! unit's log file, and hand the batch to the sink. Returns at EOF, after
//! delivering a final line without newline.

use super::ring::{LogLine, RingLog};
use super::sink::{json_string, timestamp, LogFormat, LogSink, Stream};
use super::split::LineSplitter;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::SystemTime;

/// Longer lines are cut into pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;
/// One read; also the pipe's capacity (see [`PIPE_BYTES`]).
const READ_CHUNK: usize = 256 * 1024;
/// Pipe capacity asked for: a flooding service blocks less often, and each
/// wake-up carries more lines.
pub const PIPE_BYTES: i32 = 256 * 1024;

/// Everything a forwarder needs to know about its unit.
#[derive(Clone)]
pub struct UnitLog {
    pub name: Arc<str>,
    /// The prefix already padded for alignment, without " | ".
    pub padded_prefix: Arc<str>,
    pub ring: Arc<RingLog>,
    /// Optional copy of the unit's lines (raw, one per line).
    pub file: Option<tracing_appender::non_blocking::NonBlocking>,
    /// A readiness `log` probe waiting for its line.
    pub ready_match: Option<Arc<super::watch::LineWatch>>,
}

pub async fn forward(pipe: OwnedFd, stream: Stream, unit: UnitLog, sink: LogSink) {
    let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("unit {}: cannot read its {}: {e}", unit.name, stream.as_str());
            return;
        }
    };
    let mut splitter = LineSplitter::new(MAX_LINE);
    'stream: loop {
        // Wait without a buffer: an idle unit costs no read memory (200
        // units would otherwise hold 25 MiB of empty buffers).
        if let Err(e) = pipe.readable().await {
            tracing::warn!("unit {}: waiting on its {} failed: {e}", unit.name, stream.as_str());
            break;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match pipe.try_read(&mut buf) {
                Ok(0) => break 'stream,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue 'stream,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("unit {}: reading its {} failed: {e}", unit.name, stream.as_str());
                    break 'stream;
                }
            };
            let chunk = &buf[..n];
            // Only the last lines of a chunk can survive in the ring: skip
            // allocating for the others.
            let lines = memchr::memchr_iter(b'\n', chunk).count();
            let keep_from = lines.saturating_sub(unit.ring.capacity());
            let mut batch = Batch::new(&unit, stream, sink.format, n, keep_from);
            splitter.push(chunk, &mut |line| batch.line(line));
            batch.flush(&sink).await;
        }
    }
    let mut batch = Batch::new(&unit, stream, sink.format, 0, 0);
    splitter.finish(&mut |line| batch.line(line));
    batch.flush(&sink).await;
}

/// A line flowinit produces on a unit's behalf (the router's access log).
pub struct OwnLine {
    /// As the plain format, the ring, the log file and `msg` show it.
    pub text: String,
    /// In the JSON format, more members of the object after `msg`
    /// (`"k":v,…`, no braces, no leading comma), already JSON.
    pub fields: Option<String>,
}

/// Emits lines that flowinit itself produces on a unit's behalf exactly
/// like lines read from a pipe, with their own JSON fields.
pub async fn emit(unit: &UnitLog, stream: Stream, sink: &LogSink, lines: &[OwnLine]) {
    let size = lines.iter().map(|l| l.text.len() + l.fields.as_ref().map_or(0, String::len) + 1).sum();
    let keep_from = lines.len().saturating_sub(unit.ring.capacity());
    let mut batch = Batch::new(unit, stream, sink.format, size, keep_from);
    for l in lines {
        batch.line_with(l.text.as_bytes(), l.fields.as_deref());
    }
    batch.flush(sink).await;
}

struct Batch<'a> {
    unit: &'a UnitLog,
    stream: Stream,
    format: LogFormat,
    now: SystemTime,
    ts: Option<String>,
    out: Vec<u8>,
    file_copy: Vec<u8>,
    index: usize,
    keep_from: usize,
    /// The lines that go to the ring, pushed at once in `flush`.
    kept: Vec<LogLine>,
    /// A line of this batch fired the readiness watch: told after the
    /// batch was written.
    ready_hit: bool,
}

impl<'a> Batch<'a> {
    fn new(unit: &'a UnitLog, stream: Stream, format: LogFormat, size: usize, keep_from: usize) -> Batch<'a> {
        let now = SystemTime::now();
        Batch {
            unit,
            stream,
            format,
            now,
            ts: (format == LogFormat::Json).then(|| timestamp(now)),
            out: Vec::with_capacity(size + size / 8 + 64),
            file_copy: Vec::new(),
            index: 0,
            keep_from,
            kept: Vec::new(),
            ready_hit: false,
        }
    }

    fn line(&mut self, raw: &[u8]) {
        self.line_with(raw, None);
    }

    fn line_with(&mut self, raw: &[u8], fields: Option<&str>) {
        let text = String::from_utf8_lossy(raw);
        match self.format {
            LogFormat::Plain => {
                self.out.extend_from_slice(self.unit.padded_prefix.as_bytes());
                self.out.extend_from_slice(b" | ");
                self.out.extend_from_slice(text.as_bytes());
                self.out.push(b'\n');
            }
            LogFormat::Json => {
                self.out.extend_from_slice(b"{\"ts\":\"");
                self.out.extend_from_slice(self.ts.as_deref().unwrap_or("").as_bytes());
                self.out.extend_from_slice(b"\",\"unit\":");
                json_string(&mut self.out, &self.unit.name);
                self.out.extend_from_slice(b",\"stream\":\"");
                self.out.extend_from_slice(self.stream.as_str().as_bytes());
                self.out.extend_from_slice(b"\",\"msg\":");
                json_string(&mut self.out, &text);
                if let Some(f) = fields.filter(|f| !f.is_empty()) {
                    self.out.push(b',');
                    self.out.extend_from_slice(f.as_bytes());
                }
                self.out.extend_from_slice(b"}\n");
            }
        }
        if self.unit.file.is_some() {
            self.file_copy.extend_from_slice(text.as_bytes());
            self.file_copy.push(b'\n');
        }
        if let Some(m) = self.unit.ready_match.as_deref().filter(|m| m.is_armed()) {
            self.ready_hit |= m.take(&text);
        }
        if self.index >= self.keep_from {
            self.kept.push(LogLine { ts: self.now, stream: self.stream, text: text.into_owned() });
        }
        self.index += 1;
    }

    async fn flush(self, sink: &LogSink) {
        if !self.kept.is_empty() {
            self.unit.ring.push_all(self.kept);
        }
        if let (Some(file), false) = (&self.unit.file, self.file_copy.is_empty()) {
            let mut file = file.clone();
            if let Err(e) = file.write_all(&self.file_copy) {
                tracing::warn!("unit {}: writing its log file failed: {e}", self.unit.name);
            }
        }
        match (self.ready_hit, self.unit.ready_match.as_deref()) {
            // The line that makes the unit ready is out before "unit X is
            // ready" (at most 100 ms later when the output is blocked).
            (true, Some(m)) => {
                sink.send_written(self.stream, self.out, std::time::Duration::from_millis(100)).await;
                m.fire();
            }
            _ if !self.out.is_empty() => sink.send(self.stream, self.out).await,
            _ => {}
        }
    }
}
