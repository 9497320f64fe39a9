//! flowinit's own events (tracing) in the same two formats as service lines
//! and through the same sink: plain `flowinit | message key=value`, or a
//! JSON object with ts, unit "flowinit", level, msg and the fields.

use super::sink::{json_string, timestamp, LogFormat, LogSink, Stream};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

static PREFIX_WIDTH: AtomicUsize = AtomicUsize::new(8);

/// Aligns `flowinit |` with the widest unit prefix (the caller pads unit
/// prefixes to the same width).
pub fn set_prefix_width(width: usize) {
    PREFIX_WIDTH.store(width.max("flowinit".len()), Ordering::Relaxed);
}

pub fn prefix_width() -> usize {
    PREFIX_WIDTH.load(Ordering::Relaxed)
}

/// Installs the global subscriber, showing events up to `level`
/// (`FLOWINIT_LOG_LEVEL`, parsed by the caller).
pub fn init(sink: LogSink, level: Level) {
    let format = sink.format;
    // Panics are bugs; they go to the log like any other event (with the
    // thread, so a unit task's can be told apart) and the rest keeps going.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!("internal error (a bug) in thread {thread}: {info}");
    }));
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .event_format(EventFormat { format })
        .with_writer(MakeSinkWriter(sink))
        .try_init();
}

struct EventFormat {
    format: LogFormat,
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.rest.push((field.name(), format!("{value:?}")));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest.push((field.name(), value.to_string()));
        }
    }
}

impl<S, N> FormatEvent<S, N> for EventFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = *event.metadata().level();
        match self.format {
            LogFormat::Plain => {
                let width = PREFIX_WIDTH.load(Ordering::Relaxed);
                write!(w, "{:<width$} | ", "flowinit")?;
                if level <= Level::WARN {
                    write!(w, "{level}: ")?;
                }
                w.write_str(&f.message)?;
                for (k, v) in &f.rest {
                    write!(w, " {k}={v}")?;
                }
                writeln!(w)
            }
            LogFormat::Json => {
                let mut out = Vec::with_capacity(128);
                out.extend_from_slice(b"{\"ts\":\"");
                out.extend_from_slice(timestamp(std::time::SystemTime::now()).as_bytes());
                out.extend_from_slice(b"\",\"unit\":\"flowinit\",\"level\":\"");
                out.extend_from_slice(level.as_str().to_ascii_lowercase().as_bytes());
                out.extend_from_slice(b"\",\"msg\":");
                json_string(&mut out, &f.message);
                for (k, v) in &f.rest {
                    out.push(b',');
                    json_string(&mut out, k);
                    out.push(b':');
                    json_string(&mut out, v);
                }
                out.extend_from_slice(b"}\n");
                w.write_str(&String::from_utf8_lossy(&out))
            }
        }
    }
}

struct MakeSinkWriter(LogSink);

impl<'a> MakeWriter<'a> for MakeSinkWriter {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter { sink: self.0.clone(), buf: Vec::new() }
    }
}

/// Collects one event and hands it to the sink as a whole when dropped.
struct SinkWriter {
    sink: LogSink,
    buf: Vec<u8>,
}

impl std::io::Write for SinkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SinkWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.send_now(Stream::Stderr, std::mem::take(&mut self.buf));
        }
    }
}
