//! Crash diagnostics through the real binary: a SIGKILL that flowinit did
//! not send is called so (and a real OOM kill, where the test may make a
//! memory cgroup, names the OOM killer's count); a unit that fails for
//! good gets one block with its cause, starts, run durations and last 20
//! lines; a critical unit's block comes last, just before the farewell
//! line; the JSON log format makes the block one JSON object.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

const NOT_SENT: &str =
    "killed by SIGKILL, not sent by flowinit (probably the kernel OOM killer, or kill -9 from outside)";

/// The block that starts with the line containing `header`: that line and
/// the indented ones after it.
fn block<'a>(stderr: &'a str, header: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = stderr.lines().collect();
    let Some(start) = lines.iter().position(|l| l.contains(header)) else {
        panic!("no {header:?} in\n{stderr}");
    };
    let rest = lines[start + 1..].iter().take_while(|l| l.starts_with("flowinit |   ")).copied();
    std::iter::once(lines[start]).chain(rest).collect()
}

/// `1.0s` → 1.0; `850ms` → 0.85.
fn secs(text: &str) -> f64 {
    match text.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
        None => text.strip_suffix('s').unwrap_or_else(|| panic!("not a duration: {text:?}")).parse().unwrap(),
    }
}

/// A unit that prints 30 numbered lines naming its run, waits a little
/// and exits `code`.
fn chatty(code: i32, extra: &str) -> String {
    format!(
        "[service]\nshell = \"for i in $(seq 1 30); do echo \\\"$FLOWINIT_RUN line $i\\\"; done; sleep 0.3; exit {code}\"\n{extra}"
    )
}

#[test]
fn a_sigkill_from_outside_is_not_called_flowinits() {
    let d = TempDir::new("diag-kill9");
    d.unit("victim", "[service]\ncommand = [\"sleep\", \"1000\"]\nrestart_delay = \"100ms\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let pid = f.wait_state("victim", "running")["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on the unit's pid, a child of the flowinit we run.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    f.wait_log("unit victim killed by SIGKILL", T);
    let err = f.stderr();
    let line = err.lines().find(|l| l.contains("unit victim killed by SIGKILL")).unwrap();
    // Nobody else's OOM kill should land in this test's cgroup meanwhile;
    // if one did, the line says so instead of guessing.
    if !line.contains("the kernel OOM killer killed a process") {
        assert_eq!(line, format!("flowinit | WARN: unit victim {NOT_SENT}, restarting in 100ms"), "{err}");
    }
    assert!(line.contains("not sent by flowinit"), "{err}");
    let st = wait_for("victim running again", T, || {
        let u = f.unit_json("victim")?;
        (u["restarts"] == 1 && u["state"] == "running").then_some(u)
    });
    assert_eq!(st["last_exit"], "killed by SIGKILL", "{st}");
    assert!(!err.contains("sending SIGKILL"), "flowinit sent no SIGKILL of its own: {err}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn a_crash_loop_that_fails_for_good_gets_one_block_with_its_last_20_lines() {
    let d = TempDir::new("diag-loop");
    d.unit(
        "crashy",
        &chatty(3, "restart = \"on-failure\"\nrestart_delay = \"100ms\"\nstart_limit_burst = 3\nstart_limit_interval = \"1m\"\n"),
    );
    d.unit("steady", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("| crashy/3 line 30", T);
    let st = f.wait_state("crashy", "failed");
    assert_eq!(st["reason"], "exited 3; start limit reached (3 starts within 1m)", "{st}");
    // Not critical: everything else goes on.
    assert!(f.try_exit().is_none());
    assert_eq!(f.stop(T), 0);

    let err = f.stderr();
    let header = "flowinit | ERROR: unit crashy failed for good: exited 3; start limit reached (3 starts within 1m)";
    assert_eq!(err.matches("failed for good").count(), 1, "one block, one header:\n{err}");
    let b = block(&err, header);
    assert_eq!(b[0], header);
    let starts = b[1].strip_prefix("flowinit |   starts: 3 in the last ").unwrap_or_else(|| panic!("{b:#?}"));
    let span =
        starts.strip_suffix(" (start_limit_burst 3, start_limit_interval 1m)").unwrap_or_else(|| panic!("{b:#?}"));
    // Three runs of ≥ 0.3 s and the delays of 100 ms and 200 ms between them.
    assert!(secs(span) >= 1.1, "{b:#?}");
    let runs = b[2].strip_prefix("flowinit |   runs: ").and_then(|r| r.strip_suffix(" (each exited 3)"));
    let runs: Vec<f64> = runs.unwrap_or_else(|| panic!("{b:#?}")).split(", ").map(secs).collect();
    assert_eq!(runs.len(), 3, "{b:#?}");
    // Measured by flowinit from its spawn to the exit it reaped: the sleep
    // and a little more, give or take a scheduler's tick.
    assert!(runs.iter().all(|r| (0.28..5.0).contains(r)), "each run took its 0.3 s sleep: {runs:?}");
    assert_eq!(b[3], "flowinit |   last 20 lines:");
    assert_eq!(b.len(), 4 + 20, "{b:#?}");
    for (i, line) in b[4..].iter().enumerate() {
        let (time, text) = line.strip_prefix("flowinit |     ").and_then(|l| l.split_once(" | ")).unwrap();
        assert_eq!(time.len(), "12:00:00.000".len(), "{line}");
        assert_eq!(text, format!("crashy/3 line {}", i + 11), "the last run's last 20 lines, in order");
    }
}

#[test]
fn a_critical_failure_ends_the_container_with_its_block_before_the_farewell() {
    let d = TempDir::new("diag-critical");
    d.unit("other", "[service]\nshell = \"echo $$$$ > {dir}/other.pid; exec sleep 1000\"\n");
    d.unit(
        "core",
        "[unit]\ncritical = true\n[service]\nshell = \"while [ ! -e {dir}/other.pid ]; do sleep 0.05; done; for i in $(seq 1 25); do echo core line $i; done; sleep 0.3; echo 'cannot bind :3001' >&2; exit 7\"\nrestart = \"no\"\n",
    );
    let mut f = Flowinit::up(&d, Opts { pid1: true, ..Opts::default() });
    let (code, _) = f.wait_exit(T);
    let err = f.stderr();
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.last(), Some(&"flowinit | all units stopped; exiting with code 1"), "{err}");
    let header = "flowinit | ERROR: critical unit core failed for good: exited 7 (restart = \"no\")";
    assert_eq!(err.matches(header).count(), 1, "{err}");
    let b = block(&err, header);
    assert_eq!(b.len(), 4 + 20, "{b:#?}");
    assert_eq!(b[1], "flowinit |   starts: 1 (start_limit_burst 5, start_limit_interval 2m)");
    let ran = b[2].strip_prefix("flowinit |   runs: ").unwrap_or_else(|| panic!("{b:#?}"));
    assert!(secs(ran) >= 0.28, "it slept 0.3 s: {b:#?}");
    assert_eq!(b[3], "flowinit |   last 20 lines:");
    // stdout and stderr are two pipes, kept in the order flowinit read
    // them: the unit waits before its stderr line so that it is read last.
    let texts: Vec<&str> = b[4..].iter().map(|l| l.split_once(" | ").unwrap().1.split_once(" | ").unwrap().1).collect();
    let mut want: Vec<String> = (7..=25).map(|n| format!("core line {n}")).collect();
    want.push("cannot bind :3001".into());
    assert_eq!(texts, want, "{b:#?}");
    assert!(b[23].contains(" (stderr) | "), "{b:#?}");
    // The block is the last thing before the farewell: after the other
    // unit's stop, nothing between.
    let at = lines.iter().position(|l| *l == header).unwrap();
    assert_eq!(at + b.len(), lines.len() - 1, "{err}");
    let stopped = lines.iter().position(|l| *l == "flowinit | unit other stopped").expect("other stopped");
    assert!(stopped < at, "{err}");
    let when_failed =
        lines.iter().position(|l| l.contains("critical unit core failed for good (exited 7); stopping everything"));
    assert!(when_failed.is_some_and(|i| i < stopped), "the failure is still logged when it happens:\n{err}");
}

#[test]
fn in_json_the_block_is_one_object_before_the_farewell() {
    let d = TempDir::new("diag-json");
    d.unit("other", "[service]\nshell = \"echo $$$$ > {dir}/other.pid; exec sleep 1000\"\n");
    d.unit(
        "core",
        &chatty(
            2,
            "restart = \"on-failure\"\nrestart_delay = \"100ms\"\nstart_limit_burst = 2\n[unit]\ncritical = true\n",
        ),
    );
    let mut f = Flowinit::up(&d, Opts { env: &[("FLOWINIT_LOG_FORMAT", "json")], ..Opts::default() });
    let (code, _) = f.wait_exit(T);
    let err = f.stderr();
    assert_eq!(code, 1, "{err}");
    let events: Vec<serde_json::Value> =
        err.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect();
    let blocks: Vec<usize> = (0..events.len()).filter(|&i| events[i].get("failed_unit").is_some()).collect();
    assert_eq!(blocks.len(), 1, "{err}");
    let (i, b) = (blocks[0], &events[blocks[0]]);
    assert_eq!(i, events.len() - 2, "the block, then the farewell:\n{err}");
    assert_eq!(events[i + 1]["msg"], "all units stopped; exiting with code 1");
    assert_eq!(b["unit"], "flowinit");
    assert_eq!(b["level"], "error");
    assert_eq!(b["failed_unit"], "core");
    assert_eq!(b["critical"], true);
    assert_eq!(b["msg"], "critical unit core failed for good: exited 2; start limit reached (2 starts within 2m)");
    assert_eq!(b["cause"], "exited 2; start limit reached (2 starts within 2m)");
    assert_eq!((b["starts"].as_u64(), b["start_limit_burst"].as_u64()), (Some(2), Some(2)), "{b}");
    assert_eq!(b["start_limit_interval"], "2m");
    let runs = b["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{b}");
    for r in runs {
        assert_eq!(r["end"], "exited 2");
        assert!((280..5000).contains(&r["ran_ms"].as_u64().unwrap()), "{r}");
    }
    assert!(b["starts_span_ms"].as_u64().unwrap() >= 700, "{b}");
    let last: Vec<&str> = b["last_lines"].as_array().unwrap().iter().map(|l| l["msg"].as_str().unwrap()).collect();
    let want: Vec<String> = (11..=30).map(|n| format!("core/2 line {n}")).collect();
    assert_eq!(last, want);
    assert!(b["last_lines"].as_array().unwrap().iter().all(|l| l["stream"] == "stdout" && l["ts"].is_string()));
}

// ---------------------------------------------------------------------------
// A real OOM kill, in a memory cgroup of the test's own
// ---------------------------------------------------------------------------

/// A child of this process's memory cgroup with a 64 MiB limit, removed on
/// drop. cgroup v1 (`memory.limit_in_bytes`, as on this CI machine and
/// ECS's Amazon Linux 2), or v2 (`memory.max`) where the memory controller
/// is delegated to our cgroup's children. `None` (with the reason) when
/// neither can be made: not root, no memory controller, read-only mount.
struct MemoryCgroup {
    dir: PathBuf,
    file: &'static str,
}

impl MemoryCgroup {
    fn make(tag: &str) -> Result<MemoryCgroup, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        let name = format!("flowinit-test-{tag}-{}", std::process::id());
        let v1 = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctl.split(',')
                .any(|c| c == "memory")
                .then(|| Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
        });
        let v2 = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/')));
        let mut why = Vec::new();
        if let Some(parent) = v1.filter(|p| p.join("memory.limit_in_bytes").exists()) {
            match Self::create(&parent.join(&name), "memory.limit_in_bytes", "memory.oom_control") {
                Ok(c) => return Ok(c),
                Err(e) => why.push(format!("cgroup v1: {e}")),
            }
        } else {
            why.push("no cgroup v1 memory controller".into());
        }
        match v2 {
            Some(parent) => {
                let delegated = std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
                if delegated.split_whitespace().any(|c| c == "memory") {
                    match Self::create(&parent.join(&name), "memory.max", "memory.events") {
                        Ok(c) => return Ok(c),
                        Err(e) => why.push(format!("cgroup v2: {e}")),
                    }
                } else {
                    why.push(format!("cgroup v2: memory is not in {}/cgroup.subtree_control", parent.display()));
                }
            }
            None => why.push("no cgroup v2".into()),
        }
        Err(why.join("; "))
    }

    fn create(dir: &Path, limit: &str, file: &'static str) -> Result<MemoryCgroup, String> {
        std::fs::create_dir(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let cg = MemoryCgroup { dir: dir.to_path_buf(), file };
        std::fs::write(dir.join(limit), "67108864").map_err(|e| format!("{limit}: {e}"))?;
        // No swap to escape into (absent on v1 without swap accounting).
        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        Ok(cg)
    }

    fn oom_kills(&self) -> u64 {
        let text = std::fs::read_to_string(self.dir.join(self.file)).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty once flowinit and its units are gone (the harness kills them first).
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

#[test]
fn a_real_oom_kill_names_the_oom_killer_and_its_count() {
    let cg = match MemoryCgroup::make("oom") {
        Ok(cg) => cg,
        Err(why) => {
            eprintln!("skipped: cannot make a memory cgroup with a limit here: {why}");
            return;
        }
    };
    let before = cg.oom_kills();
    let d = TempDir::new("diag-oom");
    d.unit(
        "hog",
        &format!(
            "[service]\ncommand = [\"{}\", \"-c\", \"print('allocating 512 MiB', flush=True); b = bytearray(512 << 20)\"]\nrestart = \"no\"\n",
            python()
        ),
    );
    d.unit("steady", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    // flowinit joins the cgroup before it execs, so it and its units count there.
    let join = format!("echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"", cg.dir.display());
    let mut f = Flowinit::up(&d, Opts { wrap: &["sh", "-c", &join], ..Opts::default() });
    let st = f.wait_state("hog", "failed");
    let want = format!(
        "killed by SIGKILL (not sent by flowinit): the kernel OOM killer killed a process ({} oom_kill {before} → {})",
        cg.file,
        before + 1
    );
    assert_eq!(st["reason"], want.as_str(), "{}", f.stderr());
    f.wait_log("| allocating 512 MiB", T);
    let err = f.stderr();
    let b = block(&err, "flowinit | ERROR: unit hog failed for good: ");
    assert_eq!(b[0], format!("flowinit | ERROR: unit hog failed for good: {want} (restart = \"no\")"));
    let ran = b[2].strip_prefix("flowinit |   runs: ").unwrap_or_else(|| panic!("{b:#?}"));
    assert!(secs(ran) < 20.0, "{b:#?}");
    assert!(b.last().unwrap().ends_with(" | allocating 512 MiB"), "{b:#?}");
    assert_eq!(f.stop(T), 0);
    assert_eq!(cg.oom_kills(), before + 1);
}

// ---------------------------------------------------------------------------
// The blocks docs/operations.md shows ("When a unit fails for good"), as
// snapshots: tests/docs_output.rs checks the docs against them.
// ---------------------------------------------------------------------------

/// Pids, clock times and durations, which differ from run to run, as
/// tokens tests/docs_output.rs understands.
fn redact(text: &str) -> String {
    let rules = [
        (r"\b(pid|process group) \d+", "$1 [PID]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", "[TIME]"),
        (r"\b\d{2}:\d{2}:\d{2}\.\d{3}\b", "[HH:MM:SS.mmm]"),
        (r"in the last \d+(\.\d)?(ms|s)", "in the last [SPAN]"),
        (r#""(ran_ms|starts_span_ms)":\d+"#, r#""$1":[MS]"#),
    ];
    let mut s = text.to_string();
    for (pattern, with) in rules {
        s = regex::Regex::new(pattern).unwrap().replace_all(&s, with).into_owned();
    }
    let runs = regex::Regex::new(r"\d+(\.\d)?(ms|s)\b").unwrap();
    s.lines()
        .map(|l| match l.split_once("  runs: ") {
            Some((head, rest)) => format!("{head}  runs: {}", runs.replace_all(rest, "[RAN]")),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_blocks_the_docs_show() {
    let d = TempDir::new("diag-docs");
    d.unit(
        "worker",
        "[unit]\ndescription = \"a worker that crashes\"\n\n[service]\nshell = \"echo working; sleep 1; echo 'lost connection to queue' >&2; exit 3\"\nrestart = \"on-failure\"\nrestart_delay = \"100ms\"\nstart_limit_burst = 3\n",
    );
    d.unit(
        "report",
        "[unit]\ndescription = \"nightly report, no restarts\"\n\n[service]\nshell = \"echo 'REPORT_BUCKET is not set' >&2; exit 1\"\nrestart = \"no\"\n",
    );
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("report", "failed");
    f.wait_state("worker", "failed");
    assert_eq!(f.stop(T), 0);
    let err = f.stderr();
    let mut shown = block(&err, "ERROR: unit report failed for good");
    shown.push("…");
    shown.extend(block(&err, "ERROR: unit worker failed for good"));
    insta::assert_snapshot!("blocks", redact(&shown.join("\n")));
}

#[test]
fn the_end_of_a_critical_failure_the_docs_show() {
    let core = "[unit]\ncritical = true\n\n[service]\nshell = \"echo 'starting core'; sleep 0.5; echo 'cannot bind :3001' >&2; exit 1\"\nrestart_delay = \"200ms\"\nstart_limit_burst = 2\n";
    let mut shown = Vec::new();
    for json in [false, true] {
        let d = TempDir::new("diag-docs-critical");
        d.unit("core", core);
        d.unit("ui", "[service]\ncommand = [\"sleep\", \"infinity\"]\n");
        let env: &[(&str, &str)] = if json { &[("FLOWINIT_LOG_FORMAT", "json")] } else { &[] };
        let mut f = Flowinit::up(&d, Opts { env, ..Opts::default() });
        assert_eq!(f.wait_exit(T).0, 1, "{}", f.stderr());
        let err = f.stderr();
        let lines: Vec<&str> = err.lines().collect();
        let from = lines.iter().position(|l| l.contains("critical unit core failed for good (")).unwrap();
        shown.extend(lines[from..].iter().map(|l| l.to_string()));
        shown.push("…".into());
    }
    insta::assert_snapshot!("critical", redact(&shown.join("\n")));
}
