//! What flowinit says about a crash, pure and unit-tested: the cause of an
//! exit nobody asked for ([`exit_cause`]: a SIGKILL flowinit did not send,
//! the OOM killer's count rising over the run), and the one block printed
//! when a unit fails for good ([`Block`]): the cause, its starts within
//! the start-limit window, how long each run lasted, and its last lines,
//! as plain text or as one JSON object. The unit task gathers the facts,
//! the plan decides when the block is printed, the runner prints it.

use crate::api::{Failure, RunSummary};
use crate::logs::ring::LogLine;
use crate::logs::sink::{json_string, timestamp};
use crate::logs::{LogFormat, Stream};
use crate::process::cgroup::OomKills;
use crate::process::{Signal, Termination};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// Output lines of the unit shown in the block.
pub const LAST_LINES: usize = 20;

/// The OOM killer's count of flowinit's cgroup rose over a run: read at
/// its start (`before`) and at its exit (`after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomRise {
    pub file: &'static str,
    pub before: u64,
    pub after: u64,
}

/// The rise between two readings of the same file, if the count went up.
pub fn oom_rise(before: Option<OomKills>, after: Option<OomKills>) -> Option<OomRise> {
    let (b, a) = (before?, after?);
    (a.file == b.file && a.count > b.count).then_some(OomRise { file: a.file, before: b.count, after: a.count })
}

/// How a run that nobody asked to stop ended, for the log and the unit's
/// reason. flowinit sends SIGKILL only to a unit it is stopping, so a
/// SIGKILL seen here came from elsewhere: the kernel's OOM killer, when
/// the OOM kill count rose over the run (`rise`, given only when that kill
/// was not another unit's death), or probably it or a `kill -9` otherwise.
pub fn exit_cause(term: Termination, rise: Option<OomRise>) -> String {
    match (term, rise) {
        (Termination::Signaled(Signal::KILL), Some(OomRise { file, before, after })) => format!(
            "killed by SIGKILL (not sent by flowinit): the kernel OOM killer killed a process ({file} oom_kill {before} → {after})"
        ),
        (Termination::Signaled(Signal::KILL), None) => {
            "killed by SIGKILL, not sent by flowinit (probably the kernel OOM killer, or kill -9 from outside)".into()
        }
        // A shell or npm wrapper outlives the child the OOM killer took,
        // and exits 137 or so.
        (t, Some(OomRise { file, before, after })) if !t.success() => {
            format!("{t}; the kernel OOM killer killed a process ({file} oom_kill {before} → {after})")
        }
        (t, _) => t.to_string(),
    }
}

/// Durations as an operator reads them: `120ms`, `6.1s`, `4m 10s`.
pub fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// Everything the block about a unit that failed for good shows.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    pub unit: &'a str,
    /// It ends the container.
    pub critical: bool,
    /// The unit's reason: `exited 3; start limit reached (3 starts within 1m)`.
    pub cause: &'a str,
    /// Its runs, when its task reported them (not for a failure imposed
    /// because a required unit failed).
    pub failure: Option<&'a Failure>,
    /// Its last output lines, oldest first.
    pub lines: &'a [LogLine],
}

impl Block<'_> {
    /// The first line: `unit flowise failed for good: exited 1 (restart = "no")`.
    pub fn header(&self) -> String {
        let who = if self.critical { "critical unit" } else { "unit" };
        let no_restart = if self.failure.is_some_and(|f| f.no_restart) { " (restart = \"no\")" } else { "" };
        format!("{who} {} failed for good: {}{no_restart}", self.unit, self.cause)
    }

    /// The lines below the header, without indentation.
    fn details(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = self.failure.filter(|f| !f.runs.is_empty()) {
            let n = f.runs.len();
            let span = if n > 1 { format!(" in the last {}", short(f.span)) } else { String::new() };
            out.push(format!(
                "starts: {n}{span} (start_limit_burst {}, start_limit_interval {})",
                f.start_limit_burst,
                humantime::format_duration(f.start_limit_interval)
            ));
            out.push(format!("runs: {}", runs_text(&f.runs)));
        }
        out.push(match self.lines.len() {
            0 => "no output".into(),
            1 => "last line:".into(),
            n => format!("last {n} lines:"),
        });
        out
    }

    /// Plain text: every line starts like flowinit's own (`flowinit | `,
    /// padded to `width`), so `grep flowinit` and a collector that splits
    /// lines keep it together; the header says ERROR.
    pub fn plain(&self, width: usize) -> String {
        let mut o = String::new();
        let mut line = |text: &str| {
            let _ = writeln!(o, "{:<width$} | {text}", "flowinit");
        };
        line(&format!("ERROR: {}", self.header()));
        for d in self.details() {
            line(&format!("  {d}"));
        }
        for l in self.lines {
            let ts = timestamp(l.ts);
            let time = ts.get(11..23).unwrap_or(&ts);
            let err = if l.stream == Stream::Stderr { " (stderr)" } else { "" };
            line(&format!("    {time}{err} | {}", l.text));
        }
        o
    }

    /// One JSON object on one line, like flowinit's own events (`ts`,
    /// `unit` "flowinit", `level`, `msg` = the header) plus the facts:
    /// `failed_unit`, `critical`, `cause`, `starts`, `starts_span_ms`,
    /// `start_limit_burst`, `start_limit_interval`, `runs` (`ran_ms`, null
    /// when it did not start, and `end`), `last_lines` (`ts`, `stream`,
    /// `msg`).
    pub fn json(&self, now: SystemTime) -> String {
        let mut o = Vec::with_capacity(512);
        let field = |o: &mut Vec<u8>, k: &str| {
            o.push(b',');
            json_string(o, k);
            o.push(b':');
        };
        o.extend_from_slice(b"{\"ts\":");
        json_string(&mut o, &timestamp(now));
        o.extend_from_slice(b",\"unit\":\"flowinit\",\"level\":\"error\"");
        field(&mut o, "msg");
        json_string(&mut o, &self.header());
        field(&mut o, "failed_unit");
        json_string(&mut o, self.unit);
        field(&mut o, "critical");
        o.extend_from_slice(if self.critical { b"true" } else { b"false" });
        field(&mut o, "cause");
        json_string(&mut o, self.cause);
        if let Some(f) = self.failure {
            field(&mut o, "starts");
            o.extend_from_slice(f.runs.len().to_string().as_bytes());
            field(&mut o, "starts_span_ms");
            o.extend_from_slice(f.span.as_millis().to_string().as_bytes());
            field(&mut o, "start_limit_burst");
            o.extend_from_slice(f.start_limit_burst.to_string().as_bytes());
            field(&mut o, "start_limit_interval");
            json_string(&mut o, &humantime::format_duration(f.start_limit_interval).to_string());
            field(&mut o, "runs");
            o.push(b'[');
            for (i, r) in f.runs.iter().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                o.extend_from_slice(b"{\"ran_ms\":");
                match r.ran {
                    Some(d) => o.extend_from_slice(d.as_millis().to_string().as_bytes()),
                    None => o.extend_from_slice(b"null"),
                }
                field(&mut o, "end");
                json_string(&mut o, &r.end);
                o.push(b'}');
            }
            o.push(b']');
        }
        field(&mut o, "last_lines");
        o.push(b'[');
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            o.extend_from_slice(b"{\"ts\":");
            json_string(&mut o, &timestamp(l.ts));
            field(&mut o, "stream");
            json_string(&mut o, l.stream.as_str());
            field(&mut o, "msg");
            json_string(&mut o, &l.text);
            o.push(b'}');
        }
        o.extend_from_slice(b"]}\n");
        String::from_utf8_lossy(&o).into_owned()
    }

    /// The block in the log's format.
    pub fn render(&self, format: LogFormat, width: usize, now: SystemTime) -> String {
        match format {
            LogFormat::Plain => self.plain(width),
            LogFormat::Json => self.json(now),
        }
    }
}

/// `6.1s, 6.0s (each exited 1)`, or each run with its own end when they
/// differ; one run is only its time (the header says how it ended).
fn runs_text(runs: &[RunSummary]) -> String {
    let ran = |r: &RunSummary| r.ran.map_or_else(|| "did not start".to_string(), short);
    let all_alike = runs.windows(2).all(|w| w[0].end == w[1].end);
    match runs {
        [] => String::new(),
        [one] => ran(one),
        [first, ..] if all_alike => {
            let times: Vec<String> = runs.iter().map(ran).collect();
            format!("{} (each {})", times.join(", "), first.end)
        }
        _ => runs.iter().map(|r| format!("{} ({})", ran(r), r.end)).collect::<Vec<_>>().join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oom(count: u64) -> Option<OomKills> {
        Some(OomKills { file: "memory.events", count })
    }

    #[test]
    fn exit_causes() {
        let kill = Termination::Signaled(Signal::KILL);
        let table = [
            (kill, oom(3), oom(4), "killed by SIGKILL (not sent by flowinit): the kernel OOM killer killed a process (memory.events oom_kill 3 → 4)"),
            (kill, oom(3), oom(3), "killed by SIGKILL, not sent by flowinit (probably the kernel OOM killer, or kill -9 from outside)"),
            (kill, None, None, "killed by SIGKILL, not sent by flowinit (probably the kernel OOM killer, or kill -9 from outside)"),
            (kill, None, oom(4), "killed by SIGKILL, not sent by flowinit (probably the kernel OOM killer, or kill -9 from outside)"),
            (kill, oom(4), None, "killed by SIGKILL, not sent by flowinit (probably the kernel OOM killer, or kill -9 from outside)"),
            (
                kill,
                Some(OomKills { file: "memory.oom_control", count: 0 }),
                Some(OomKills { file: "memory.oom_control", count: 2 }),
                "killed by SIGKILL (not sent by flowinit): the kernel OOM killer killed a process (memory.oom_control oom_kill 0 → 2)",
            ),
            (
                kill,
                Some(OomKills { file: "memory.oom_control", count: 0 }),
                oom(2),
                "killed by SIGKILL, not sent by flowinit (probably the kernel OOM killer, or kill -9 from outside)",
            ),
            (Termination::Exited(137), oom(1), oom(2), "exited 137; the kernel OOM killer killed a process (memory.events oom_kill 1 → 2)"),
            (Termination::Exited(3), oom(1), oom(1), "exited 3"),
            (Termination::Exited(0), oom(1), oom(2), "exited 0"),
            (Termination::Signaled(Signal::TERM), None, None, "killed by SIGTERM"),
        ];
        for (term, before, after, want) in table {
            assert_eq!(exit_cause(term, oom_rise(before, after)), want, "{term:?} {before:?} {after:?}");
        }
    }

    #[test]
    fn short_durations() {
        let table = [(0, "0ms"), (120, "120ms"), (999, "999ms"), (1000, "1.0s"), (6140, "6.1s"), (59_900, "59.9s")];
        for (ms, want) in table {
            assert_eq!(short(Duration::from_millis(ms)), want);
        }
        assert_eq!(short(Duration::from_millis(250_400)), "4m 10s");
    }

    fn at(ms: u64) -> SystemTime {
        // 2026-12-03T10:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_292_000) + Duration::from_millis(ms)
    }

    fn line(ms: u64, stream: Stream, text: &str) -> LogLine {
        LogLine { ts: at(ms), stream, text: text.into() }
    }

    fn run(ms: u64, end: &str) -> RunSummary {
        RunSummary { ran: Some(Duration::from_millis(ms)), end: end.into() }
    }

    fn limit_failure(runs: Vec<RunSummary>) -> Failure {
        Failure {
            runs,
            span: Duration::from_millis(2450),
            start_limit_burst: 3,
            start_limit_interval: Duration::from_secs(60),
            no_restart: false,
        }
    }

    #[test]
    fn plain_block_at_the_start_limit() {
        let f = limit_failure(vec![run(1020, "exited 3"), run(1010, "exited 3"), run(1000, "exited 3")]);
        let lines = [line(0, Stream::Stdout, "line 24"), line(5, Stream::Stderr, "boom \"quoted\"")];
        let b = Block {
            unit: "worker",
            critical: false,
            cause: "exited 3; start limit reached (3 starts within 1m)",
            failure: Some(&f),
            lines: &lines,
        };
        assert_eq!(
            b.plain(8),
            "\
flowinit | ERROR: unit worker failed for good: exited 3; start limit reached (3 starts within 1m)
flowinit |   starts: 3 in the last 2.5s (start_limit_burst 3, start_limit_interval 1m)
flowinit |   runs: 1.0s, 1.0s, 1.0s (each exited 3)
flowinit |   last 2 lines:
flowinit |     10:00:00.000 | line 24
flowinit |     10:00:00.005 (stderr) | boom \"quoted\"
"
        );
    }

    #[test]
    fn plain_block_of_a_critical_unit_without_restarts() {
        let f = Failure { no_restart: true, ..limit_failure(vec![run(40, "exited 7")]) };
        let lines = [line(0, Stream::Stderr, "cannot bind :3001")];
        let b = Block { unit: "core", critical: true, cause: "exited 7", failure: Some(&f), lines: &lines };
        assert_eq!(
            b.plain(10),
            "\
flowinit   | ERROR: critical unit core failed for good: exited 7 (restart = \"no\")
flowinit   |   starts: 1 (start_limit_burst 3, start_limit_interval 1m)
flowinit   |   runs: 40ms
flowinit   |   last line:
flowinit   |     10:00:00.000 (stderr) | cannot bind :3001
"
        );
    }

    #[test]
    fn runs_that_ended_differently_each_say_how() {
        let f = limit_failure(vec![
            run(61_000, "killed by SIGKILL"),
            RunSummary { ran: None, end: "failed to start /bin/app: No such file or directory (os error 2)".into() },
            run(5, "exited 1"),
        ]);
        let b = Block { unit: "app", critical: false, cause: "exited 1", failure: Some(&f), lines: &[] };
        let text = b.plain(8);
        assert!(text.contains(
            "flowinit |   runs: 1m 1s (killed by SIGKILL), did not start (failed to start /bin/app: No such file or directory (os error 2)), 5ms (exited 1)\n"
        ), "{text}");
        assert!(text.ends_with("flowinit |   no output\n"), "{text}");
    }

    #[test]
    fn an_imposed_failure_has_no_runs() {
        let b = Block { unit: "app", critical: true, cause: "required unit db failed", failure: None, lines: &[] };
        assert_eq!(
            b.plain(8),
            "flowinit | ERROR: critical unit app failed for good: required unit db failed\nflowinit |   no output\n"
        );
    }

    #[test]
    fn json_block_is_one_object_on_one_line() {
        let f = limit_failure(vec![run(1020, "exited 3"), RunSummary { ran: None, end: "failed to start".into() }]);
        let lines = [line(0, Stream::Stdout, "tab\there"), line(5, Stream::Stderr, "two\nlines")];
        let b = Block { unit: "worker", critical: false, cause: "exited 3", failure: Some(&f), lines: &lines };
        let text = b.json(at(10));
        assert_eq!(
            text,
            concat!(
                r#"{"ts":"2026-12-03T10:00:00.010Z","unit":"flowinit","level":"error","msg":"unit worker failed for good: exited 3","#,
                r#""failed_unit":"worker","critical":false,"cause":"exited 3","starts":2,"starts_span_ms":2450,"#,
                r#""start_limit_burst":3,"start_limit_interval":"1m","runs":[{"ran_ms":1020,"end":"exited 3"},"#,
                r#"{"ran_ms":null,"end":"failed to start"}],"last_lines":[{"ts":"2026-12-03T10:00:00.000Z","stream":"stdout","msg":"tab\there"},"#,
                r#"{"ts":"2026-12-03T10:00:00.005Z","stream":"stderr","msg":"two\nlines"}]}"#,
                "\n"
            )
        );
        let imposed = Block { failure: None, lines: &[], ..b };
        assert!(imposed.json(at(0)).ends_with("\"cause\":\"exited 3\",\"last_lines\":[]}\n"));
    }
}
