//! Pure rendering of `flowinit status` from the same report `--json`
//! prints: the aligned table, and the details of named units.

use super::protocol::{LogLineReport, StatusReport, UnitReport};
use crate::config::size::{format_bytes, short};
use std::fmt::Write;
use std::time::{Duration, SystemTime};

/// Exit code of `status`: 0 when every active unit is ready or finished
/// successfully, 3 otherwise.
pub fn health_code(report: &StatusReport) -> u8 {
    let healthy =
        !report.shutting_down && report.units.iter().filter(|u| u.active).all(|u| u.ready || u.state == "exited");
    if healthy {
        0
    } else {
        3
    }
}

fn paint(text: &str, state: &str, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let code = match state {
        "ready" | "running" | "exited" => "32",
        "starting" | "stopping" | "inactive" => "33",
        "failed" => "31;1",
        _ => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// `3m 12s`, `2h 5m`, `4d 1h`: the two largest units.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m {secs}s"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn age(since: &str, now: SystemTime) -> Option<Duration> {
    let t = humantime::parse_rfc3339(since).ok()?;
    now.duration_since(t).ok()
}

/// The CPU column: `1.2%`; `-` without a sample.
pub fn cpu_cell(u: &UnitReport) -> String {
    u.cpu_percent.map_or("-".into(), |p| format!("{p:.1}%"))
}

/// The MEM column: the RSS in powers of 1024, `312M`; `-` without a sample.
pub fn mem_cell(u: &UnitReport) -> String {
    u.rss_bytes.map_or("-".into(), |b| short(b, false))
}

pub fn table(report: &StatusReport, now: SystemTime, color: bool) -> String {
    let header = ["UNIT", "STATE", "PID", "UPTIME", "CPU", "MEM", "RESTARTS", "READY", "REASON"];
    let rows: Vec<[String; 9]> = report
        .units
        .iter()
        .map(|u| {
            let uptime = match &u.started_at {
                Some(t) => age(t, now).map(short_duration).unwrap_or_else(|| "-".into()),
                None => "-".into(),
            };
            let ready = match (u.state.as_str(), u.ready) {
                ("disabled", _) => "-",
                ("exited", _) => "done",
                (_, true) => "yes",
                (_, false) => "no",
            };
            let mut reason = u.reason.clone().unwrap_or_default();
            if let (Some(e), true) = (&u.probe_error, reason.is_empty()) {
                reason = format!("probe: {e}");
            }
            if let (Some(t), true) = (&u.status_text, reason.is_empty()) {
                reason = t.clone();
            }
            [
                u.name.clone(),
                u.state.clone(),
                u.pid.map_or("-".into(), |p| p.to_string()),
                uptime,
                cpu_cell(u),
                mem_cell(u),
                u.restarts.to_string(),
                ready.into(),
                reason,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], state: Option<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let last = i == cells.len() - 1;
            let padded = if last { cell.clone() } else { format!("{cell:<w$}  ", w = widths[i]) };
            match (i, state) {
                (1, Some(s)) => l.push_str(&paint(&padded, s, color)),
                _ => l.push_str(&padded),
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(&header.map(String::from), None, &mut out);
    for (r, u) in rows.iter().zip(&report.units) {
        line(r, Some(&u.state), &mut out);
    }
    if report.shutting_down {
        out.push_str("flowinit is shutting down\n");
    }
    out
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

pub fn details(u: &UnitReport, now: SystemTime, color: bool) -> String {
    let mut o = String::new();
    let title = match &u.description {
        Some(d) => format!("{} — {d}", u.name),
        None => u.name.clone(),
    };
    let _ = writeln!(o, "{}", paint(&title, &u.state, color));
    let since = age(&u.since, now).map(|d| format!(" ({} ago)", short_duration(d))).unwrap_or_default();
    let pid = u.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
    let _ = writeln!(o, "  state:      {} since {}{since}{pid}", paint(&u.state, &u.state, color), u.since);
    if let Some(r) = &u.reason {
        let _ = writeln!(o, "  reason:     {r}");
    }
    if let Some(k) = &u.kind {
        let crit = if u.critical { ", critical" } else { "" };
        let _ = writeln!(o, "  type:       {k}{crit}");
    }
    if !u.command.is_empty() {
        let _ = writeln!(o, "  command:    {}", u.command.join(" "));
    }
    if let Some(user) = &u.user {
        let _ = writeln!(o, "  user:       {user}");
    }
    let _ = writeln!(o, "  requires:   {}", list(&u.requires));
    let _ = writeln!(o, "  wants:      {}", list(&u.wants));
    if !u.after.is_empty() {
        let _ = writeln!(o, "  after:      {}", list(&u.after));
    }
    if !u.profiles.is_empty() {
        let _ = writeln!(o, "  profiles:   {}", list(&u.profiles));
    }
    if let (Some(pct), Some(cpu), Some(rss), Some(n)) = (u.cpu_percent, u.cpu_seconds, u.rss_bytes, u.processes) {
        let procs = if n == 1 { "process" } else { "processes" };
        let _ = writeln!(o, "  usage:      CPU {pct:.1}% ({cpu:.2}s), memory {}, {n} {procs}", short(rss, false));
    }
    let _ = writeln!(o, "  restarts:   {}", u.restarts);
    if let Some(max) = u.memory_max {
        let _ = writeln!(o, "  memory_max: {} ({} restarts for it)", format_bytes(max), u.memory_restarts);
    }
    if let Some(e) = &u.last_exit {
        let _ = writeln!(o, "  last exit:  {e}");
    }
    for (label, probe) in [("readiness", &u.readiness), ("liveness", &u.liveness)] {
        if let Some(p) = probe {
            let _ = writeln!(o, "  {label}:{:pad$}{p}", "", pad = 11 - label.len());
        }
    }
    if u.readiness.is_some() || u.liveness.is_some() {
        if let Some(e) = &u.probe_error {
            let _ = writeln!(o, "  probe:      failing: {e}");
        }
        if let Some(t) = &u.probe_ok_at {
            let _ = writeln!(o, "  last ok:    {t}");
        }
    }
    if let Some(r) = &u.router {
        let _ = writeln!(o, "  listen:     {}", r.listen);
        for rt in &r.routes {
            let _ = writeln!(o, "  route:      {rt}");
        }
        let _ = writeln!(
            o,
            "  requests:   {} served, {} in flight, {} upstream errors, {} answered 503 (unit not ready)",
            r.requests, r.in_flight, r.upstream_errors, r.not_ready
        );
        let _ = writeln!(
            o,
            "  limit:      at most {} connections; {} turned away with 503 (max_connections reached)",
            r.max_connections, r.over_limit
        );
    }
    if let Some(t) = &u.status_text {
        let _ = writeln!(o, "  status:     {t}");
    }
    if let Some(p) = u.main_pid {
        let _ = writeln!(o, "  main pid:   {p}");
    }
    if !u.log.is_empty() {
        let _ = writeln!(o, "\n  recent log:");
        for l in &u.log {
            let _ = writeln!(o, "  {}", log_line(l, false));
        }
    }
    o
}

/// `TIME UNIT | msg` (stderr lines marked) for `flowinit logs` and details.
pub fn log_line(l: &LogLineReport, with_unit: bool) -> String {
    let time = l.ts.get(11..23).unwrap_or(&l.ts);
    let err = if l.stream == "stderr" { " (stderr)" } else { "" };
    if with_unit {
        format!("{time} {}{err} | {}", l.unit, l.msg)
    } else {
        format!("{time}{err} | {}", l.msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        assert_eq!(short_duration(s(5)), "5s");
        assert_eq!(short_duration(s(192)), "3m 12s");
        assert_eq!(short_duration(s(7500)), "2h 5m");
        assert_eq!(short_duration(s(90000)), "1d 1h");
    }

    #[test]
    fn health() {
        let unit = |state: &str, ready: bool, active: bool| UnitReport {
            name: state.into(),
            state: state.into(),
            ready,
            active,
            ..UnitReport::default()
        };
        let ok = StatusReport {
            units: vec![unit("ready", true, true), unit("exited", false, true), unit("disabled", false, false)],
            shutting_down: false,
        };
        assert_eq!(health_code(&ok), 0);
        let bad = StatusReport {
            units: vec![unit("ready", true, true), unit("starting", false, true)],
            shutting_down: false,
        };
        assert_eq!(health_code(&bad), 3);
        let held = StatusReport { units: vec![unit("stopped", false, false)], shutting_down: false };
        assert_eq!(health_code(&held), 0);
    }

    #[test]
    fn cpu_and_mem_columns() {
        let running = UnitReport {
            name: "web".into(),
            state: "running".into(),
            pid: Some(42),
            cpu_percent: Some(1.24),
            ready: true,
            cpu_seconds: Some(3.5),
            rss_bytes: Some(312 << 20),
            processes: Some(3),
            ..UnitReport::default()
        };
        let stopped = UnitReport { name: "db".into(), state: "stopped".into(), ..UnitReport::default() };
        let report = StatusReport { units: vec![stopped, running.clone()], shutting_down: false };
        let t = table(&report, SystemTime::now(), false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "UNIT  STATE    PID  UPTIME  CPU   MEM   RESTARTS  READY  REASON");
        assert_eq!(lines[1], "db    stopped  -    -       -     -     0         no");
        assert_eq!(lines[2], "web   running  42   -       1.2%  312M  0         yes");
        let d = details(&running, SystemTime::now(), false);
        assert!(d.contains("  usage:      CPU 1.2% (3.50s), memory 312M, 3 processes\n"), "{d}");
    }
}
