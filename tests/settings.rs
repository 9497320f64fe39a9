//! flowinit's own environment settings (`FLOWINIT_*`, src/settings.rs) and
//! `NO_COLOR`, through the real binary: a bad value stops `up` (exit 2),
//! `check` (exit 1) and `flowinit -- CMD` (exit 2) with a line naming the
//! variable, the value and what is accepted; good values take effect; an
//! empty value means unset; an unknown `FLOWINIT_*` name is a warning, not
//! an error; the names flowinit sets for its services are not warned
//! about. `status` colours its table on a terminal unless `NO_COLOR` is set.
//!
//! Every run is bounded (`run_bounded`, `Flowinit` with its kill-on-drop);
//! the terminal for `status` comes from `script` (util-linux), run with a
//! deadline and killed by pid.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// A unit dir with one witness unit that marks the temp dir when it runs.
fn units_with_witness(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    d.unit("witness", "[service]\nshell = \"touch {dir}/witness.ran; exec sleep 1000\"\n");
    d
}

/// `flowinit up` on `d`, expected to stop by itself; (code, stdout, stderr).
fn up_exits(d: &TempDir, env: &[(&str, &str)]) -> (i32, String, String) {
    let (units, socket) = (d.units(), d.file("ctl.sock"));
    let args = ["up", "--units", units.to_str().unwrap(), "--socket", socket.to_str().unwrap()];
    run_bounded(d, &args, env, T)
}

fn check(d: &TempDir, env: &[(&str, &str)]) -> (i32, String, String) {
    run_bounded(d, &["check", "--units", d.units().to_str().unwrap()], env, T)
}

fn single_true(d: &TempDir, env: &[(&str, &str)]) -> (i32, String, String) {
    run_bounded(d, &["--", "true"], env, T)
}

/// The stderr line holding every one of `parts`.
fn line_with_all<'a>(stderr: &'a str, parts: &[&str]) -> Option<&'a str> {
    stderr.lines().find(|l| parts.iter().all(|p| l.contains(p)))
}

/// One bad setting (or several at once) and, per bad variable, the pieces
/// its error line must hold: the variable with its value, and the values
/// it accepts.
struct BadRow {
    env: &'static [(&'static str, &'static str)],
    lines: &'static [&'static [&'static str]],
}

const BAD: &[BadRow] = &[
    BadRow {
        env: &[("FLOWINIT_LOG_FORMAT", "jsn")],
        lines: &[&["flowinit: FLOWINIT_LOG_FORMAT=\"jsn\": not a log format", "(accepted: plain, json;"]],
    },
    BadRow {
        env: &[("FLOWINIT_LOG_LEVEL", "verbose")],
        lines: &[&[
            "flowinit: FLOWINIT_LOG_LEVEL=\"verbose\": not a log level",
            "(accepted: error, warn, info, debug, trace;",
        ]],
    },
    BadRow {
        env: &[("FLOWINIT_SHUTDOWN_TIMEOUT", "9")],
        lines: &[&[
            "flowinit: FLOWINIT_SHUTDOWN_TIMEOUT=\"9\": ",
            "(accepted: a duration such as \"9s\", \"1m 30s\", \"500ms\";",
        ]],
    },
    BadRow {
        env: &[("FLOWINIT_METRICS", "nonsense")],
        lines: &[&[
            "flowinit: FLOWINIT_METRICS=\"nonsense\": not an address: ",
            "(accepted: an address and port such as \"127.0.0.1:9100\"",
        ]],
    },
    // Two bad ones at once: both reported, not only the first.
    BadRow {
        env: &[("FLOWINIT_LOG_FORMAT", "jsn"), ("FLOWINIT_SHUTDOWN_TIMEOUT", "9")],
        lines: &[
            &["FLOWINIT_LOG_FORMAT=\"jsn\"", "accepted: plain, json"],
            &["FLOWINIT_SHUTDOWN_TIMEOUT=\"9\"", "accepted: a duration"],
        ],
    },
];

#[test]
fn a_bad_setting_stops_up_check_and_single_command_mode() {
    for row in BAD {
        let d = units_with_witness("bad-setting");
        for (what, (code, stdout, stderr), want) in [
            ("up", up_exits(&d, row.env), 2),
            ("check", check(&d, row.env), 1),
            ("-- true", single_true(&d, row.env), 2),
        ] {
            let ctx = format!("flowinit {what} with {:?}\nstdout: {stdout}\nstderr: {stderr}", row.env);
            assert_eq!(code, want, "exit code of {ctx}");
            for parts in row.lines {
                assert!(line_with_all(&stderr, parts).is_some(), "no line with {parts:?}: {ctx}");
            }
            assert_eq!(stderr.lines().count(), row.lines.len(), "one line per bad setting, nothing else: {ctx}");
            assert!(stdout.is_empty(), "{ctx}");
        }
        assert!(!d.file("witness.ran").exists(), "up started a unit despite {:?}", row.env);
    }
}

/// Every line flowinit writes to stderr in `up` with `env`, for a run that
/// starts the witness and is then stopped with SIGTERM.
fn up_and_stop(tag: &str, env: &[(&str, &str)]) -> String {
    let d = units_with_witness(tag);
    let mut f = Flowinit::up(&d, Opts { env, ..Opts::default() });
    f.wait_state("witness", "running");
    assert_eq!(f.stop(T), 0, "{}", f.stderr());
    f.stderr()
}

#[test]
fn log_format_json_in_any_case_gives_json_lines() {
    for value in ["json", "JSON"] {
        let stderr = up_and_stop("json", &[("FLOWINIT_LOG_FORMAT", value)]);
        assert!(stderr.lines().count() >= 2, "{stderr}");
        for line in stderr.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("FLOWINIT_LOG_FORMAT={value}: not a JSON line ({e}): {line:?}"));
            assert_eq!(v["unit"], "flowinit", "{line}");
        }
        assert!(stderr.contains("\"msg\":\"starting 1 of 1 units\""), "{stderr}");
    }
}

#[test]
fn log_level_debug_shows_debug_events_and_info_does_not() {
    // An orphan (a background sleep whose subshell exits) comes to flowinit,
    // which reaps it and says so at debug level.
    let run = |tag: &str, env: &[(&str, &str)]| {
        let d = TempDir::new(tag);
        d.unit("orphans", "[service]\nshell = \"(sleep 0.01 &); touch {dir}/forked; exec sleep 1000\"\n");
        let mut f = Flowinit::up(&d, Opts { env, ..Opts::default() });
        wait_for("the fork", T, || d.file("forked").exists().then_some(()));
        if env.iter().any(|(_, v)| *v == "debug") {
            f.wait_log("reaped orphan", T);
        } else {
            // Give the orphan time to end and be reaped before the stop.
            std::thread::sleep(Duration::from_millis(300));
        }
        assert_eq!(f.stop(T), 0, "{}", f.stderr());
        f.stderr()
    };
    let debug = run("debug", &[("FLOWINIT_LOG_LEVEL", "debug")]);
    assert!(debug.contains("reaped orphan (exited 0)"), "{debug}");
    let info = run("info", &[("FLOWINIT_LOG_LEVEL", "info")]);
    assert!(!info.contains("reaped orphan"), "debug event at level info: {info}");
}

#[test]
fn shutdown_timeout_takes_a_duration() {
    let stderr = up_and_stop("budget", &[("FLOWINIT_SHUTDOWN_TIMEOUT", "1m")]);
    assert!(stderr.contains("SIGTERM received: stopping all units (budget 1m)"), "{stderr}");
}

/// `FLOWINIT_X=` is the same as no `FLOWINIT_X` at all: every default.
#[test]
fn an_empty_value_means_unset() {
    let env = [
        ("FLOWINIT_LOG_FORMAT", ""),
        ("FLOWINIT_LOG_LEVEL", ""),
        ("FLOWINIT_SHUTDOWN_TIMEOUT", ""),
        ("FLOWINIT_PROFILES", ""),
        ("FLOWINIT_UNITS", ""),
        ("FLOWINIT_SOCKET", ""),
    ];
    let stderr = up_and_stop("empty", &env);
    assert!(stderr.contains("flowinit | starting 1 of 1 units"), "plain log lines expected: {stderr}");
    assert!(stderr.contains("(budget 9s)"), "the default budget expected: {stderr}");
    assert!(!stderr.contains("FLOWINIT_"), "an empty value was reported: {stderr}");
    let d = units_with_witness("empty-check");
    let (code, out, err) = check(&d, &env);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let (code, out, err) = single_true(&d, &env);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}

const KNOWN: &str = "(known: FLOWINIT_LOG_FORMAT, FLOWINIT_LOG_LEVEL, FLOWINIT_SHUTDOWN_TIMEOUT, FLOWINIT_UNITS, FLOWINIT_PROFILES, FLOWINIT_SOCKET, FLOWINIT_METRICS)";

/// A typo is warned about, naming the settings that exist, and stops
/// nothing: the setting it meant is just not set.
#[test]
fn an_unknown_setting_is_a_warning_naming_the_known_ones() {
    let env = [("FLOWINIT_LOG_FMT", "json")];
    let stderr = up_and_stop("unknown", &env);
    let warning = format!("flowinit | WARN: FLOWINIT_LOG_FMT is not a flowinit setting; ignored {KNOWN}");
    assert!(stderr.lines().any(|l| l == warning), "{stderr}");
    assert!(stderr.contains("flowinit | starting 1 of 1 units"), "FLOWINIT_LOG_FMT must not turn on JSON: {stderr}");

    let d = units_with_witness("unknown-cli");
    let warning = format!("flowinit: warning: FLOWINIT_LOG_FMT is not a flowinit setting; ignored {KNOWN}");
    let (code, _, err) = single_true(&d, &env);
    assert_eq!((code, err.trim_end()), (0, warning.as_str()));
    let (code, out, err) = check(&d, &env);
    assert_eq!((code, err.trim_end()), (0, warning.as_str()), "{out}");
}

/// FLOWINIT_UNIT and FLOWINIT_RUN are what flowinit sets in its services'
/// environment: a flowinit run by a service sees them, and they are no typo.
#[test]
fn the_names_flowinit_sets_for_services_are_not_warned_about() {
    let env = [("FLOWINIT_UNIT", "web"), ("FLOWINIT_RUN", "web/1")];
    let stderr = up_and_stop("service-vars", &env);
    assert!(!stderr.contains("not a flowinit setting"), "{stderr}");
    let d = units_with_witness("service-vars-cli");
    assert_eq!(single_true(&d, &env), (0, String::new(), String::new()));
    let (code, _, err) = check(&d, &env);
    assert_eq!((code, err.as_str()), (0, ""));
}

// ---------------------------------------------------------------------------
// NO_COLOR
// ---------------------------------------------------------------------------

/// Whether util-linux `script` is here to give `status` a terminal.
fn have_script() -> bool {
    #[allow(clippy::disallowed_methods)]
    let found = std::process::Command::new("script")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: no `script` (util-linux) to allocate a terminal");
    }
    found
}

/// `flowinit status --socket SOCKET` with a pseudo-terminal as stdout
/// (`script -qec CMD /dev/null`), `no_color` as NO_COLOR (None: unset);
/// what the terminal showed. Killed (by pid, with everything below it)
/// past the deadline.
fn status_on_a_terminal(dir: &TempDir, socket: &std::path::Path, no_color: Option<&str>) -> String {
    use std::os::unix::process::CommandExt;
    let out = dir.file("script.out");
    let inner = format!("{BIN} status --socket {}", socket.display());
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .env_remove("NO_COLOR")
        .process_group(0);
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let deadline = std::time::Instant::now() + T;
    #[allow(clippy::disallowed_methods)]
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() >= deadline {
            // SAFETY: kill(2) on our own unreaped child and its descendants.
            unsafe {
                for p in descendants(pid) {
                    libc::kill(p, libc::SIGKILL);
                }
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(status.is_some(), "script did not finish within {T:?}: {text:?}");
    text
}

#[test]
fn status_on_a_terminal_is_coloured_unless_no_color_is_set() {
    if !have_script() {
        return;
    }
    let d = units_with_witness("no-color");
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("witness", "running");

    let coloured = status_on_a_terminal(&d, &f.socket, None);
    assert!(coloured.contains("witness"), "{coloured:?}");
    assert!(coloured.contains("\x1b["), "no ANSI colour on a terminal: {coloured:?}");
    // An empty NO_COLOR does not count (no-color.org).
    let empty = status_on_a_terminal(&d, &f.socket, Some(""));
    assert!(empty.contains("\x1b["), "NO_COLOR= (empty) turned colour off: {empty:?}");

    let plain = status_on_a_terminal(&d, &f.socket, Some("1"));
    assert!(plain.contains("witness"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "NO_COLOR=1 still coloured: {plain:?}");
    // Not a terminal: never colour (the control case).
    let (code, piped, _) = f.ctl(&["status"]);
    assert_eq!(code, 0);
    assert!(!piped.contains('\x1b'), "{piped:?}");
    assert_eq!(f.stop(T), 0);
}
