//! Snapshots (insta) of every text flowinit shows a person: `check` on bad
//! unit files, `status UNIT` details, the control commands' answers, the
//! reload summary and refusal, flowinit's own shutdown events, and the
//! `--help` of every command.
//!
//! What changes from run to run (temp paths, pids, ports, times, the Python
//! interpreter's path) is replaced by a `[NAME]` placeholder in [`redact`]
//! before snapshotting; everything else must match the committed `.snap`
//! byte for byte. Review a change with `INSTA_UPDATE=always cargo test
//! --test snapshots` and `git diff tests/snapshots/`.

mod common;

use common::*;
use regex::Regex;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
/// `check` and `--help` read a few files and print: far below this.
const RUN: Duration = Duration::from_secs(10);

/// Replaces the volatile parts of `text`: first every `(value, label)` pair
/// given (ports, names), then the temp dir, the repo, the interpreter, and
/// the patterns of pids, timestamps and ages.
fn redact(text: &str, dir: &TempDir, pairs: &[(String, &str)]) -> String {
    let mut s = text.to_string();
    for (value, label) in pairs {
        s = s.replace(value.as_str(), label);
    }
    s = s.replace(&*dir.path().to_string_lossy(), "[DIR]");
    s = s.replace(python(), "[PYTHON]");
    s = s.replace(env!("CARGO_MANIFEST_DIR"), "[REPO]");
    let rules = [
        (r"\b(pid|process group) \d+", "$1 [PID]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", "[TIME]"),
        (r"\(\d[^()]* ago\)", "([AGE] ago)"),
        (r"\b\d{2}:\d{2}:\d{2}\.\d{3}\b", "[HH:MM:SS.mmm]"),
        // The time a stop was given, measured from the signal (ms late).
        (r"budget left it \d+\.\ds", "budget left it [SECS]s"),
        // The router's default connection cap follows the fd limit.
        (r"at most \d+ connections;", "at most [FROM NOFILE] connections;"),
        // What a unit's processes use, sampled when asked.
        (
            r"usage:      CPU \d+\.\d% \(\d+\.\d+s\), memory \S+, \d+ process",
            "usage:      CPU [CPU] ([CPU SECS]), memory [MEM], [N] process",
        ),
    ];
    for (pattern, with) in rules {
        s = Regex::new(pattern).unwrap().replace_all(&s, with).into_owned();
    }
    s
}

/// One command's result as it reads in a snapshot.
fn shown(code: i32, out: &str, err: &str) -> String {
    format!("exit code: {code}\n--- stdout\n{out}--- stderr\n{err}")
}

/// flowinit's own lines (`flowinit | …`) on its stderr, from the first one
/// containing `from` on.
fn own_lines_from(f: &Flowinit, from: &str) -> Vec<String> {
    let err = f.stderr();
    let lines: Vec<String> = err.lines().filter(|l| l.starts_with("flowinit ")).map(str::to_string).collect();
    let start = lines.iter().position(|l| l.contains(from)).unwrap_or_else(|| panic!("no {from:?} in\n{err}"));
    lines[start..].to_vec()
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

/// A minimal valid `[service]` table.
const SVC: &str = "[service]\ncommand = [\"true\"]\n";

/// One units dir with one mistake per file (the kinds tests/bad_units.rs
/// covers), plus a valid unit.
fn bad_corpus(d: &TempDir) {
    let svc = |extra: &str| format!("[service]\ncommand = [\"true\"]\n{extra}");
    let files: Vec<(&str, String)> = vec![
        ("a-unknown-key", svc("stop_timout = \"5s\"\n")),
        ("b-command-string", "[service]\ncommand = \"flowise start\"\n".into()),
        ("c-critical-string", format!("[unit]\ncritical = \"yes\"\n{SVC}")),
        ("d-bad-duration", svc("stop_timeout = \"ten\"\n")),
        ("e-bad-signal", svc("stop_signal = \"SIGFOO\"\n")),
        ("f-restart-policy", svc("restart = \"sometimes\"\n")),
        ("g-service-type", svc("type = \"forking\"\n")),
        ("h-oneshot-always", svc("type = \"oneshot\"\nrestart = \"always\"\n")),
        ("i-burst-zero", svc("start_limit_burst = 0\n")),
        ("j-rotate-no-file", svc("\n[log]\nrotate = \"daily\"\n")),
        ("k-env-name", svc("env = { \"A=B\" = \"x\" }\n")),
        ("l-command-and-shell", svc("shell = \"exec true\"\n")),
        ("m-neither", "[unit]\ndescription = \"nothing to run\"\n\n[service]\nrestart = \"no\"\n".into()),
        ("n-empty-command", "[service]\ncommand = []\n".into()),
        ("o-missing-program", "[service]\ncommand = [\"no-such-program-flowinit-test\"]\n".into()),
        ("p-unset-variable", "[service]\ncommand = [\"echo\", \"${NOPE}\"]\n".into()),
        ("q-unknown-dependency", format!("[unit]\nrequires = [\"ghost\"]\n{SVC}")),
        ("r-self-dependency", format!("[unit]\nwants = [\"r-self-dependency\"]\n{SVC}")),
        ("s-env-file-missing", svc("env_file = [\"{dir}/missing.env\"]\n")),
        ("t-unquoted-string", svc("stop_timeout = 10s\n")),
        ("u-duplicate-key", format!("[unit]\ncritical = true\ncritical = false\n\n{SVC}")),
        ("v-requires-disabled", format!("[unit]\nrequires = [\"w-dev-only\"]\n{SVC}")),
        ("w-dev-only", format!("[unit]\nprofiles = [\"dev\"]\n{SVC}")),
        ("x-unknown-table", format!("{SVC}\n[logs]\nprefix = \"x\"\n")),
        ("y-invalid-variable-name", "[service]\ncommand = [\"echo\", \"${1X}\"]\n".into()),
        ("z-unterminated-variable", "[service]\ncommand = [\"echo\", \"${HOME\"]\n".into()),
        ("za-every-error", "[readiness]\ntcp = \"127.0.0.1:1\"\ninterval = \"ten\"\n\n[service]\nrestart_dealy = \"1s\"\ncommand = [\"true\"]\n".into()),
        ("zb-shell-variable", "[service]\nshell = \"exec app --port ${NOPE}\"\n".into()),
        ("zc-dependency-near-miss", format!("[unit]\nwants = [\"okk\"]\n{SVC}")),
        ("Bad_Name", SVC.into()),
        ("ok", SVC.into()),
    ];
    for (name, text) in &files {
        d.unit(name, text);
    }
    std::fs::write(d.units().join("zz-not-utf8.toml"), b"[service]\ncommand = [\"true\", \"\xff\"]\n").unwrap();
}

#[test]
fn check_reports_every_error_in_a_corpus_of_bad_files() {
    let d = TempDir::new("snap-check");
    bad_corpus(&d);
    let units = d.units().to_string_lossy().into_owned();
    let (code, out, err) = run_bounded(&d, &["check", "--units", &units], &[], RUN);
    assert_eq!(code, 1, "{err}");
    // At least one error line per bad file (the corpus has 30).
    assert!(err.lines().filter(|l| l.contains(".toml:")).count() >= 30, "{err}");
    insta::assert_snapshot!("check_corpus", redact(&shown(code, &out, &err), &d, &[]));
}

#[test]
fn check_single_cases() {
    let mut all = String::new();
    let mut case = |name: &str, setup: &dyn Fn(&TempDir), args: &[&str], env: &[(&str, &str)], want: i32| {
        let d = TempDir::new("snap-check1");
        setup(&d);
        let units = d.units().to_string_lossy().into_owned();
        let mut argv = vec!["check", "--units", &units];
        argv.extend(args);
        let (code, out, err) = run_bounded(&d, &argv, env, RUN);
        assert_eq!(code, want, "{name}: {out}{err}");
        all += &format!("=== {name}\n{}\n", redact(&shown(code, &out, &err), &d, &[]));
    };
    case(
        "three-unit cycle",
        &|d| {
            d.unit("a", &format!("[unit]\nwants = [\"b\"]\n{SVC}"));
            d.unit("b", &format!("[unit]\nrequires = [\"c\"]\n{SVC}"));
            d.unit("c", &format!("[unit]\nafter = [\"a\"]\n{SVC}"));
        },
        &[],
        &[],
        1,
    );
    case("unclosed table header", &|d| d.unit("web", "[service\ncommand = [\"true\"]\n"), &[], &[], 1);
    case(
        "malformed env_file line",
        &|d| {
            std::fs::write(d.file("bad.env"), "# comment\nA=1\nthis line has no equals sign\n").unwrap();
            d.unit("web", "[service]\ncommand = [\"true\"]\nenv_file = [\"{dir}/bad.env\"]\n");
        },
        &[],
        &[],
        1,
    );
    case(
        "profile turned on by flag resolves the program",
        &|d| d.unit("pg", "[unit]\nprofiles = [\"dev\"]\n\n[service]\ncommand = [\"no-such-postgres-flowinit\"]\n"),
        &["--profile", "dev"],
        &[],
        1,
    );
    case("missing units dir", &|d| std::fs::remove_dir(d.units()).unwrap(), &[], &[], 1);
    case("empty units dir", &|_| {}, &[], &[], 1);
    case(
        "valid dir",
        &|d| {
            d.unit("web", &format!("[unit]\nrequires = [\"setup\"]\n{SVC}"));
            d.unit("setup", "[service]\ntype = \"oneshot\"\nshell = \"exec true\"\n");
            d.unit("pg", "[unit]\nprofiles = [\"dev\"]\n\n[service]\ncommand = [\"no-such-postgres-flowinit\"]\n");
        },
        &[],
        &[],
        0,
    );
    insta::assert_snapshot!("check_single_cases", all);
}

// ---------------------------------------------------------------------------
// status, control commands
// ---------------------------------------------------------------------------

#[test]
fn status_details_of_each_kind_of_unit() {
    let d = TempDir::new("snap-status");
    let (port, be) = (free_port(), free_port());
    d.unit(
        "web",
        &format!(
            "[unit]\ndescription = \"web app with a readiness probe\"\n[service]\ncommand = [\"{}\", \"{}\", \"{be}\"]\n[readiness]\nhttp = \"http://127.0.0.1:{be}/ping\"\ninterval = \"100ms\"\n",
            python(),
            fixture("ops_http.py")
        ),
    );
    d.unit("broken", "[service]\nshell = \"echo oops >&2; exit 5\"\nrestart = \"no\"\n");
    d.unit(
        "setup",
        "[unit]\ndescription = \"one-time setup\"\n[service]\ntype = \"oneshot\"\nshell = \"echo set up done\"\n",
    );
    d.unit("devdb", "[unit]\nprofiles = [\"dev\"]\n[service]\ncommand = [\"sleep\", \"1000\"]\n");
    d.unit(
        "router",
        &format!(
            "[unit]\ndescription = \"public router\"\n[router]\nlisten = \"127.0.0.1:{port}\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{be}\"\nunit = \"web\"\n"
        ),
    );
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("web", "ready");
    f.wait_state("broken", "failed");
    f.wait_state("setup", "exited");
    f.wait_state("router", "running");
    let pairs =
        [(format!(":{port}"), ":[ROUTER_PORT]"), (format!(":{be}"), ":[WEB_PORT]"), (format!(" {be}"), " [WEB_PORT]")];
    // The last log lines arrive on their own path: wait for them.
    for (unit, line, code) in [
        ("web", "listening on", 0),
        ("broken", "oops", 3),
        ("setup", "set up done", 0),
        ("devdb", "", 0),
        ("router", "", 0),
    ] {
        let (c, details, err) = wait_for(&format!("{unit}'s details with {line:?}"), T, || {
            Some(f.ctl(&["status", unit])).filter(|r| r.1.contains(line))
        });
        assert_eq!(c, code, "{unit}: {details}{err}");
        insta::assert_snapshot!(format!("status_{unit}"), redact(&shown(c, &details, &err), &d, &pairs));
    }
    assert_eq!(f.stop(T), 0);
}

#[test]
fn control_command_answers() {
    let d = TempDir::new("snap-ctl");
    d.unit("db", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    d.unit("app", "[unit]\nrequires = [\"db\"]\n[service]\ncommand = [\"sleep\", \"1000\"]\n");
    // Its probe never passes: a start always ends in its exit, never "started".
    d.unit("bad", "[service]\nshell = \"sleep 0.2; exit 9\"\nrestart = \"no\"\n[readiness]\ntcp = \"127.0.0.1:1\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("app", "running");
    f.wait_state("bad", "failed");
    let mut all = String::new();
    for args in [
        &["stop", "db"][..],
        &["start", "app"],
        &["restart", "db"],
        &["start", "bad"],
        &["stop", "nope"],
        &["status", "nope"],
        &["logs", "nope"],
    ] {
        let (code, out, err) = f.ctl(args);
        all += &format!("=== flowinit {}\n{}\n", args.join(" "), shown(code, &out, &err));
    }
    assert_eq!(f.stop(T), 0);
    let (code, out, err) = f.ctl(&["status"]);
    all += &format!("=== flowinit status (no daemon)\n{}\n", shown(code, &out, &err));
    insta::assert_snapshot!("control_answers", redact(&all, &d, &[]));
}

// ---------------------------------------------------------------------------
// reload
// ---------------------------------------------------------------------------

#[test]
fn reload_summary_and_refusal() {
    let d = TempDir::new("snap-reload");
    for u in ["web", "migrate", "report"] {
        d.unit(u, "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    }
    let mut f = Flowinit::up(&d, Opts::default());
    for u in ["web", "migrate", "report"] {
        f.wait_state(u, "running");
    }
    let mut all = String::new();
    d.unit("migrate", "[service]\ncommand = [\"sleep\", \"2000\"]\nstop_timeout = \"soon\"\n");
    d.unit("cache", "[service]\ncomand = [\"sleep\", \"1000\"]\n");
    d.unit("worker", "[unit]\nrequires = [\"queue\"]\n[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let (code, out, err) = f.ctl(&["reload"]);
    assert_eq!(code, 1);
    all += &format!("=== invalid: three bad files\n{}\n", shown(code, &out, &err));
    d.unit("migrate", "[service]\ncommand = [\"sleep\", \"2000\"]\n");
    d.unit("cache", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    std::fs::remove_file(d.units().join("worker.toml")).unwrap();
    std::fs::remove_file(d.units().join("report.toml")).unwrap();
    let (code, out, err) = f.ctl(&["reload"]);
    assert_eq!(code, 0, "{err}");
    all += &format!("=== add, remove, change\n{}\n", shown(code, &out, &err));
    let (code, out, err) = f.ctl(&["reload"]);
    all += &format!("=== nothing changed\n{}\n", shown(code, &out, &err));
    f.wait_log("reload: added: none; removed: none; changed: none; unchanged: 3", T);
    let log: Vec<String> = own_lines_from(&f, "reload").into_iter().filter(|l| l.contains("reload")).collect();
    all += &format!("=== flowinit's own reload lines\n{}\n", log.join("\n"));
    assert_eq!(f.stop(T), 0);
    insta::assert_snapshot!("reload", redact(&all, &d, &[]));
}

// ---------------------------------------------------------------------------
// shutdown
// ---------------------------------------------------------------------------

#[test]
fn shutdown_events_in_dependency_order() {
    let d = TempDir::new("snap-down");
    d.unit("db", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    d.unit("app", "[unit]\nrequires = [\"db\"]\n[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("app", "running");
    // flowinit's own lines are written asynchronously: all of start-up first.
    f.wait_log("unit app started", T);
    f.wait_log("unit db started", T);
    assert_eq!(f.stop(T), 0);
    let lines = own_lines_from(&f, "SIGTERM received");
    insta::assert_snapshot!("shutdown_in_order", redact(&lines.join("\n"), &d, &[]));
}

#[test]
fn shutdown_events_when_the_budget_is_spent() {
    let d = TempDir::new("snap-budget");
    d.unit(
        "stubborn",
        "[service]\nshell = \"trap '' TERM; echo $$$$ > {dir}/pid; while :; do sleep 0.05; done\"\nstop_timeout = \"60s\"\n",
    );
    let mut f = Flowinit::up(&d, Opts { args: &["--shutdown-timeout", "1s"], ..Opts::default() });
    read_pid(&d, "pid");
    f.wait_log("unit stubborn started", T);
    assert_eq!(f.stop(T), 0);
    let mut lines = own_lines_from(&f, "SIGTERM received");
    // At the budget's end the unit's own SIGKILL and the manager's timer
    // race (see supervisor.rs): their two lines are shown in a fixed order.
    let racing = |l: &str| l.contains("shutdown budget of 1s spent") || l.contains("the shutdown budget left it");
    let at: Vec<usize> = (0..lines.len()).filter(|&i| racing(&lines[i])).collect();
    assert_eq!(at.len(), 2, "{lines:#?}");
    if lines[at[0]] > lines[at[1]] {
        lines.swap(at[0], at[1]);
    }
    insta::assert_snapshot!("shutdown_budget_spent", redact(&lines.join("\n"), &d, &[]));
}

// ---------------------------------------------------------------------------
// --help
// ---------------------------------------------------------------------------

#[test]
fn help_of_every_command() {
    let d = TempDir::new("snap-help");
    for cmd in ["", "up", "status", "start", "stop", "restart", "reload", "logs", "check", "exec"] {
        let mut args: Vec<&str> = if cmd.is_empty() { vec![] } else { vec![cmd] };
        args.push("--help");
        let (code, out, err) = run_bounded(&d, &args, &[], RUN);
        assert_eq!(code, 0, "{cmd} --help: {err}");
        let name = if cmd.is_empty() { "help".to_string() } else { format!("help_{cmd}") };
        insta::assert_snapshot!(name, shown(code, &out, &err));
    }
}
