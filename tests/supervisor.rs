//! The supervisor core through the real binary: ordering, parallel start,
//! reverse-order shutdown, PID 1 reaping, stop escalation, the shutdown
//! budget, restarts and the start limit, critical failure, privileges,
//! environment, and the failure of a required unit.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn line_with<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    text.lines().find(|l| l.contains(needle))
}

fn now_ns() -> &'static str {
    "$(date +%s%N)"
}

#[test]
fn requires_waits_for_a_oneshot_to_finish() {
    let d = TempDir::new("order");
    d.unit(
        "setup",
        &format!("[service]\ntype = \"oneshot\"\nshell = \"sleep 0.3; echo {} > {{dir}}/setup.done\"\n", now_ns()),
    );
    d.unit(
        "app",
        &format!(
            "[unit]\nrequires = [\"setup\"]\n[service]\nshell = \"echo {} > {{dir}}/app.start; exec sleep 1000\"\n",
            now_ns()
        ),
    );
    let mut f = Flowinit::up(&d, Opts::default());
    let app = wait_for("app.start", T, || d.read("app.start").trim().parse::<u128>().ok());
    let setup: u128 = d.read("setup.done").trim().parse().expect("setup finished before app started");
    assert!(setup <= app, "app started at {app} before setup finished at {setup}");
    f.wait_log("unit setup exited 0", T);
    assert_eq!(f.stop(T), 0);
}

#[test]
fn independent_units_start_in_parallel() {
    // Each unit waits for the other's marker: they can only both finish if
    // they run at the same time.
    let d = TempDir::new("parallel");
    for (me, other) in [("left", "right"), ("right", "left")] {
        d.unit(
            me,
            &format!(
                "[service]\ntype = \"oneshot\"\nshell = \"touch {{dir}}/{me}.up; i=0; while [ ! -e {{dir}}/{other}.up ]; do i=$((i+1)); [ $i -gt 200 ] && exit 1; sleep 0.05; done; touch {{dir}}/{me}.done\"\n"
            ),
        );
    }
    let mut f = Flowinit::up(&d, Opts::default());
    wait_for("both oneshots done", T, || (d.file("left.done").exists() && d.file("right.done").exists()).then_some(()));
    assert_eq!(f.stop(T), 0);
}

#[test]
fn shutdown_runs_in_reverse_dependency_order() {
    let d = TempDir::new("reverse");
    d.unit("db", "[service]\nshell = \"trap 'if [ -e {dir}/app.stopped ]; then echo after > {dir}/db.saw; else echo before > {dir}/db.saw; fi; exit 0' TERM; echo $$$$ > {dir}/db.pid; while :; do sleep 0.05; done\"\n");
    d.unit("app", "[unit]\nrequires = [\"db\"]\n[service]\nshell = \"trap 'sleep 0.3; touch {dir}/app.stopped; exit 0' TERM; echo $$$$ > {dir}/app.pid; while :; do sleep 0.05; done\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    read_pid(&d, "app.pid");
    assert_eq!(f.stop(T), 0);
    assert_eq!(d.read("db.saw").trim(), "after", "db was stopped before app finished stopping");
}

#[test]
fn reaps_orphans_as_pid_1() {
    let d = TempDir::new("orphans");
    d.unit("maker", &format!("[service]\ncommand = [\"{}\", \"100\", \"{{dir}}/result\"]\n", fixture("orphans.sh")));
    let mut f = Flowinit::up(&d, Opts { pid1: true, ..Opts::default() });
    let result = wait_for("orphan result", T, || Some(d.read("result")).filter(|s| !s.is_empty()));
    assert_eq!(result.trim(), "zombies=0");
    assert_eq!(f.stop(T), 0, "{}", f.stderr());
}

#[test]
fn sigterm_to_pid_1_stops_every_service_and_exits_0() {
    let d = TempDir::new("pid1term");
    for n in ["a", "b", "c"] {
        d.unit(n, &format!("[service]\nshell = \"echo $$$$ > {{dir}}/{n}.pid; exec sleep 1000\"\n"));
    }
    let mut f = Flowinit::up(&d, Opts { pid1: true, ..Opts::default() });
    let pids: Vec<i32> = ["a", "b", "c"].iter().map(|n| read_pid(&d, &format!("{n}.pid"))).collect();
    // Inside the namespace the pids differ; find the host pids by parent.
    assert_eq!(f.stop(T), 0, "{}", f.stderr());
    let err = f.stderr();
    for n in ["a", "b", "c"] {
        assert!(err.contains(&format!("unit {n} stopped")), "{err}");
    }
    assert!(!pids.is_empty());
}

#[test]
fn stop_timeout_escalates_to_sigkill() {
    let d = TempDir::new("sigkill");
    d.unit("stubborn", "[service]\nshell = \"trap '' TERM; echo $$$$ > {dir}/pid; while :; do sleep 0.05; done\"\nstop_timeout = \"500ms\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let pid = read_pid(&d, "pid");
    assert_eq!(f.stop(T), 0);
    assert!(!pid_alive(pid));
    let err = f.stderr();
    assert!(err.contains("unit stubborn: sending SIGKILL to process group"), "{err}");
    assert!(err.contains("stop_timeout 500ms passed"), "{err}");
}

#[test]
fn shutdown_budget_caps_a_long_stop_timeout() {
    let d = TempDir::new("budget");
    d.unit("stubborn", "[service]\nshell = \"trap '' TERM; echo $$$$ > {dir}/pid; while :; do sleep 0.05; done\"\nstop_timeout = \"60s\"\n");
    d.unit("fine", "[service]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut f = Flowinit::up(&d, Opts { args: &["--shutdown-timeout", "1s"], ..Opts::default() });
    let pid = read_pid(&d, "pid");
    f.wait_log("unit fine started", T);
    f.signal(libc::SIGTERM);
    // Far below the unit's 60 s stop_timeout: the budget won.
    let (code, _) = f.wait_exit(Duration::from_secs(15));
    assert_eq!(code, 0);
    assert!(!pid_alive(pid));
    let err = f.stderr();
    assert!(err.contains("the shutdown budget left it"), "{err}");
    // Whichever fires first at the budget's end, the unit's own SIGKILL or
    // the manager's timer, the unit that used the budget up is named.
    assert!(err.contains("shutdown budget of 1s spent; still stopping: stubborn;"), "{err}");
}

#[test]
fn budget_from_environment_and_second_signal_shortens_waits() {
    let d = TempDir::new("hurry");
    d.unit("stubborn", "[service]\nshell = \"trap '' TERM INT; echo $$$$ > {dir}/pid; while :; do sleep 0.05; done\"\nstop_timeout = \"60s\"\n");
    let mut f = Flowinit::up(&d, Opts { env: &[("FLOWINIT_SHUTDOWN_TIMEOUT", "60s")], ..Opts::default() });
    let pid = read_pid(&d, "pid");
    f.signal(libc::SIGTERM);
    f.wait_log("stopping all units (budget 1m)", T);
    f.signal(libc::SIGINT);
    let (code, _) = f.wait_exit(Duration::from_secs(15));
    assert_eq!(code, 0);
    assert!(!pid_alive(pid));
    let err = f.stderr();
    assert!(err.contains("SIGINT received during shutdown: cutting every stop wait to 1s"), "{err}");
    assert!(err.contains("the stop was hurried (a second stop signal)"), "{err}");
}

#[test]
fn group_stop_takes_grandchildren_along() {
    let d = TempDir::new("group");
    d.unit("wrapper", "[service]\nshell = \"sleep 1000 & echo $! > {dir}/gc.pid; wait\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let gc = read_pid(&d, "gc.pid");
    assert!(pid_alive(gc));
    assert_eq!(f.stop(T), 0);
    assert!(!pid_alive(gc));
    // The group signal did it, not the final sweep of leftovers.
    assert!(!f.stderr().contains("leftover"), "{}", f.stderr());
}

#[test]
fn escaped_daemons_are_swept_at_the_end() {
    // `env -i` drops the unit's run tag too, so the unit's own sweep cannot
    // find it (see a_stopped_unit_takes_its_escaped_process_with_it): only
    // the final sweep of every descendant can.
    let d = TempDir::new("sweep");
    d.unit("daemonizer", "[service]\nshell = \"setsid env -i sleep 1000 & echo $! > {dir}/d.pid; exec sleep 1000\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let daemon = read_pid(&d, "d.pid");
    // Only once it runs sleep in its own session has it escaped the group.
    wait_for("setsid daemon in its own session", T, || {
        let stat = std::fs::read_to_string(format!("/proc/{daemon}/stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let sid: i32 = rest.split_whitespace().nth(3)?.parse().ok()?;
        (comm.ends_with("(sleep") && sid == daemon).then_some(())
    });
    assert_eq!(f.stop(T), 0);
    assert!(!pid_alive(daemon), "the escaped daemon survived flowinit");
    assert!(f.stderr().contains("sent SIGTERM to 1 leftover process(es)"), "{}", f.stderr());
}

#[test]
fn stop_signal_is_honoured() {
    let d = TempDir::new("stopsig");
    d.unit("pg", "[service]\nshell = \"trap 'echo INT > {dir}/got; exit 0' INT; trap 'echo TERM > {dir}/got; exit 0' TERM; echo $$$$ > {dir}/pid; while :; do sleep 0.05; done\"\nstop_signal = \"SIGINT\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    read_pid(&d, "pid");
    assert_eq!(f.stop(T), 0);
    assert_eq!(d.read("got").trim(), "INT");
}

#[test]
fn restarts_back_off_then_hit_the_start_limit() {
    let d = TempDir::new("restart");
    d.unit(
        "crash",
        &format!(
            "[service]\nshell = \"echo {} >> {{dir}}/starts; exit 3\"\nrestart_delay = \"100ms\"\nrestart_delay_max = \"1s\"\nstart_limit_burst = 4\nstart_limit_interval = \"1m\"\n",
            now_ns()
        ),
    );
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit crash failed for good", T);
    let starts: Vec<u128> = d.read("starts").lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(starts.len(), 4, "exactly start_limit_burst starts");
    let gaps: Vec<u128> = starts.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
    for (gap, min_ms) in gaps.iter().zip([100, 200, 400]) {
        assert!(*gap >= min_ms, "gaps {gaps:?} must double from 100ms");
    }
    let err = f.stderr();
    assert!(err.contains("exited 3, restarting in 100ms"), "{err}");
    assert!(err.contains("exited 3, restarting in 200ms"), "{err}");
    assert!(err.contains("start limit reached (4 starts within 1m)"), "{err}");
    // Not critical: flowinit keeps running.
    assert!(f.try_exit().is_none());
    assert_eq!(f.stop(T), 0);
}

#[test]
fn critical_failure_stops_everything_and_exits_1() {
    let d = TempDir::new("critical");
    d.unit("other", "[service]\nshell = \"echo $$$$ > {dir}/other.pid; exec sleep 1000\"\n");
    d.unit("core", "[unit]\ncritical = true\n[service]\nshell = \"while [ ! -e {dir}/other.pid ]; do sleep 0.05; done; exit 7\"\nrestart = \"no\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let other = read_pid(&d, "other.pid");
    let (code, _) = f.wait_exit(T);
    assert_eq!(code, 1, "{}", f.stderr());
    assert!(!pid_alive(other));
    assert!(f.stderr().contains("critical unit core failed for good (exited 7)"), "{}", f.stderr());
}

#[test]
fn failed_requirement_stops_dependents_and_blocks_waiting_ones() {
    let d = TempDir::new("reqfail");
    d.unit("base", "[service]\nshell = \"echo $$$$ > {dir}/base.pid; while [ ! -e {dir}/die ]; do sleep 0.05; done; exit 1\"\nrestart = \"no\"\n");
    d.unit("mid", "[unit]\nrequires = [\"base\"]\n[service]\nshell = \"echo $$$$ > {dir}/mid.pid; exec sleep 1000\"\n");
    d.unit("gate", "[service]\ntype = \"oneshot\"\nshell = \"exit 2\"\nrestart = \"no\"\n");
    d.unit(
        "blocked",
        "[unit]\nrequires = [\"gate\"]\n[service]\nshell = \"touch {dir}/blocked.ran; exec sleep 1000\"\n",
    );
    let mut f = Flowinit::up(&d, Opts::default());
    let mid = read_pid(&d, "mid.pid");
    std::fs::write(d.file("die"), "").unwrap();
    f.wait_log("unit mid: stopping: required unit base failed", T);
    wait_for("mid gone", T, || (!pid_alive(mid)).then_some(()));
    f.wait_log("unit blocked: not starting: required unit gate failed", T);
    assert!(!d.file("blocked.ran").exists());
    assert_eq!(f.stop(T), 0);
}

#[test]
fn runs_as_the_unit_user_with_clean_signal_state() {
    let d = TempDir::new("ids");
    d.unit("who", &format!("[service]\ncommand = [\"{}\", \"{{dir}}/ids\"]\nuser = \"nobody\"\n", fixture("ids.sh")));
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut f = Flowinit::up(&d, Opts { dirty_signals: true, ..Opts::default() });
    let ids = wait_for("ids", T, || Some(d.read("ids")).filter(|s| !s.is_empty()));
    assert!(ids.contains("uid=65534 "), "{ids}");
    assert!(ids.contains("SigBlk:\t0000000000000000"), "{ids}");
    assert!(ids.contains("SigIgn:\t0000000000000000"), "{ids}");
    assert!(ids.contains("sid_is_self=yes"), "{ids}");
    assert!(ids.contains("stdin=/dev/null"), "{ids}");
    assert!(ids.contains("user=nobody"), "{ids}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn env_reaches_the_service_and_values_stay_out_of_flowinit_logs() {
    let d = TempDir::new("env");
    std::fs::write(d.file("secrets.env"), "# comment\nAPI_TOKEN=from-file-s3cr3t\nSHARED=file\n").unwrap();
    d.unit(
        "envy",
        "[service]\ncommand = [\"sh\", \"-c\", \"echo token=$API_TOKEN shared=$SHARED host=$DB_HOST greeting=$GREETING > {dir}/env.out; exec sleep 1000\"]\nenv = { SHARED = \"unit\", DB_HOST = \"${FT_DB_HOST:-127.0.0.1}\", GREETING = \"${FT_GREETING}\" }\nenv_file = [\"{dir}/secrets.env\", \"-{dir}/missing.env\"]\n",
    );
    let mut f = Flowinit::up(&d, Opts { env: &[("FT_GREETING", "hello-s3cr3t")], ..Opts::default() });
    let out = wait_for("env.out", T, || Some(d.read("env.out")).filter(|s| !s.is_empty()));
    assert_eq!(out.trim(), "token=from-file-s3cr3t shared=unit host=127.0.0.1 greeting=hello-s3cr3t");
    assert_eq!(f.stop(T), 0);
    let all = f.stdout() + &f.stderr();
    assert!(!all.contains("s3cr3t"), "a secret value leaked into flowinit's output:\n{all}");
}

#[test]
fn disabled_units_do_not_start_until_their_profile_is_on() {
    let d = TempDir::new("profiles");
    d.unit("devdb", "[unit]\nprofiles = [\"dev\"]\n[service]\nshell = \"touch {dir}/devdb.ran; exec sleep 1000\"\n");
    d.unit("app", "[unit]\nwants = [\"devdb\"]\n[service]\nshell = \"touch {dir}/app.ran; exec sleep 1000\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    wait_for("app started", T, || d.file("app.ran").exists().then_some(()));
    assert!(!d.file("devdb.ran").exists());
    assert_eq!(f.stop(T), 0);
    std::fs::remove_file(d.file("app.ran")).unwrap();
    let mut f = Flowinit::up(&d, Opts { env: &[("FLOWINIT_PROFILES", "test,dev")], ..Opts::default() });
    wait_for("devdb and app started", T, || (d.file("devdb.ran").exists() && d.file("app.ran").exists()).then_some(()));
    assert_eq!(f.stop(T), 0);
}

#[test]
fn a_child_that_exits_at_once_is_not_lost() {
    let d = TempDir::new("instant");
    for i in 0..20 {
        d.unit(&format!("quick{i:02}"), "[service]\ncommand = [\"true\"]\nrestart = \"no\"\n");
    }
    let mut f = Flowinit::up(&d, Opts::default());
    wait_for("all 20 exits seen", T, || (f.stderr().matches("exited 0").count() == 20).then_some(()));
    assert_eq!(f.stop(T), 0);
}

#[test]
fn invalid_config_exits_2_and_starts_nothing() {
    let d = TempDir::new("invalid");
    d.unit("ok", "[service]\nshell = \"touch {dir}/ran; exec sleep 1000\"\n");
    d.unit("bad", "[service]\ncommand = [\"true\"]\nstop_timeout = \"soon\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let (code, _) = f.wait_exit(T);
    assert_eq!(code, 2);
    assert!(!d.file("ran").exists());
    let err = f.stderr();
    assert!(line_with(&err, "bad.toml:3:16: unit bad: invalid duration \"soon\"").is_some(), "{err}");
}

#[test]
fn stray_signals_do_not_kill_the_supervisor() {
    let d = TempDir::new("stray");
    d.unit("svc", "[service]\nshell = \"echo $$$$ > {dir}/pid; exec sleep 1000\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let pid = read_pid(&d, "pid");
    for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM, libc::SIGPIPE] {
        f.signal(sig);
    }
    assert_eq!(f.ctl(&["status", "--quiet"]).0, 0, "flowinit still answers");
    assert!(f.try_exit().is_none());
    assert!(pid_alive(pid));
    assert_eq!(f.stop(T), 0);
}

/// `kill -SEGV <flowinit>` and the other fault signals, sent by another
/// process, are logged and ignored: as a subreaper their default action
/// would kill flowinit and orphan every service.
#[test]
fn fault_signals_sent_by_another_process_are_logged_and_ignored() {
    let d = TempDir::new("faultsig");
    d.unit("svc", "[service]\nshell = \"echo $$$$ > {dir}/pid; exec sleep 1000\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let pid = read_pid(&d, "pid");
    let me = std::process::id();
    for (sig, name) in [
        (libc::SIGILL, "SIGILL"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGSYS, "SIGSYS"),
    ] {
        f.signal(sig);
        f.wait_log(&format!("WARN: {name} sent by pid {me}: ignored"), T);
    }
    assert_eq!(f.ctl(&["status", "--quiet"]).0, 0, "flowinit still answers");
    assert!(f.try_exit().is_none());
    assert!(pid_alive(pid));
    assert_eq!(f.stop(T), 0, "{}", f.stderr());
}

/// The same signals from a real fault still crash flowinit, runtime
/// threads included: a seccomp filter turns the kill(2) that stops the
/// service into a synchronous SIGSYS, which the kernel forces through the
/// block.
#[test]
fn a_real_fault_in_up_mode_still_crashes_flowinit() {
    use std::os::unix::process::ExitStatusExt;
    let d = TempDir::new("realfault");
    d.unit("svc", "[service]\nshell = \"echo $$$$ > {dir}/pid; exec sleep 1000\"\n");
    let wrap = [python(), &fixture("sc_seccomp_kill.py")];
    let mut f = Flowinit::up(&d, Opts { wrap: &wrap, ..Opts::default() });
    let pid = read_pid(&d, "pid");
    f.signal(libc::SIGTERM);
    let status = wait_for("flowinit to die", T, || f.try_exit());
    // The service was never signalled and is orphaned now: kill it by pid.
    // SAFETY: kill(2) on the pid our own unit wrote.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}\n{}", f.stderr());
}

/// The cwd of a process, from /proc.
fn cwd_of(pid: i32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap()
}

/// flowinit changes to / once it has made every path it needs absolute
/// (an init must not keep its start directory busy), yet everything
/// relative is resolved against the directory it was started in, before a
/// reload and after: `--units`, `--socket`, a unit's `working_dir`,
/// `env_file` and `[log] file`, and a service without `working_dir` still
/// starts in the start directory.
#[test]
fn leaves_its_start_dir_but_relative_paths_and_services_keep_it() {
    let d = TempDir::new("cwd");
    let start = std::fs::canonicalize(d.path()).unwrap();
    std::fs::create_dir(d.file("sub")).unwrap();
    std::fs::write(d.file("rel.env"), "FROM_ENV_FILE=yes\n").unwrap();
    d.unit("here", "[service]\nshell = \"pwd -P > {dir}/here.pwd; echo $$$$ > {dir}/here.pid; exec sleep 1000\"\n");
    d.unit(
        "sub",
        "[service]\nworking_dir = \"sub\"\nenv_file = [\"rel.env\"]\nshell = \"pwd -P > {dir}/sub.pwd; echo $FROM_ENV_FILE > {dir}/sub.env; echo logged-line; exec sleep 1000\"\n[log]\nfile = \"logs/sub.log\"\n",
    );
    let mut f = Flowinit::up(
        &d,
        Opts { cwd: Some(d.path()), units: Some("units"), socket: Some("ctl.sock"), ..Opts::default() },
    );
    let here = read_pid(&d, "here.pid");
    wait_for("sub.env", T, || Some(d.read("sub.env")).filter(|s| !s.is_empty()));
    assert_eq!(cwd_of(f.pid), std::path::Path::new("/"), "flowinit kept its start directory");
    assert_eq!(cwd_of(here), start, "a service without working_dir must start where flowinit started");
    assert_eq!(d.read("here.pwd").trim(), start.to_str().unwrap());
    assert_eq!(d.read("sub.pwd").trim(), start.join("sub").to_str().unwrap());
    assert_eq!(d.read("sub.env").trim(), "yes");
    wait_for("logs/sub.log", T, || d.read("logs/sub.log").contains("logged-line").then_some(()));

    // A new unit and a reload, after the chdir: the relative units dir is
    // read again, nothing already running counts as changed, and the new
    // unit's relative paths resolve the same way.
    d.unit("late", "[service]\nworking_dir = \"sub\"\nshell = \"pwd -P > {dir}/late.pwd; exec sleep 1000\"\n");
    let (code, out, err) = f.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}\n{}", f.stderr());
    assert!(out.contains("added: late; removed: none; changed: none; unchanged: 2"), "{out}");
    wait_for("late.pwd", T, || Some(d.read("late.pwd")).filter(|s| !s.is_empty()));
    assert_eq!(d.read("late.pwd").trim(), start.join("sub").to_str().unwrap());
    assert_eq!(f.stop(T), 0, "{}", f.stderr());
    assert!(!d.file("ctl.sock").exists(), "the relative control socket was not removed at exit");
}

/// A service without `working_dir` is put in the start directory before
/// the switch to its user, as an inherited directory would be: a start
/// directory that user may not enter (0700 root) does not fail the start.
#[test]
fn a_unit_user_starts_in_a_start_dir_it_may_not_enter() {
    let d = TempDir::new("cwd-user");
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    d.unit("svc", "[service]\ncommand = [\"sleep\", \"1000\"]\nuser = \"nobody\"\n");
    let mut f = Flowinit::up(&d, Opts { cwd: Some(d.path()), ..Opts::default() });
    let u = f.wait_state("svc", "running");
    let pid = u["pid"].as_i64().unwrap() as i32;
    assert_eq!(cwd_of(pid), std::fs::canonicalize(d.path()).unwrap());
    assert_eq!(cwd_of(f.pid), std::path::Path::new("/"));
    assert_eq!(f.stop(T), 0, "{}", f.stderr());
}

#[test]
fn a_start_that_cannot_exec_fails_for_good_without_restart() {
    let d = TempDir::new("noexec");
    d.unit("lost", "[service]\ncommand = [\"true\"]\nworking_dir = \"{dir}/missing\"\nrestart = \"no\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let u = f.wait_state("lost", "failed");
    assert!(u["reason"].as_str().unwrap().contains("working_dir"), "{u}");
    // One attempt's line; the failed-for-good block names the cause too.
    assert_eq!(f.stderr().matches("unit lost: failed to start").count(), 1, "no retries with restart = \"no\"");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn an_exec_error_is_reported_with_the_kernels_reason() {
    let d = TempDir::new("enoexec");
    let program = d.file("not-a-program");
    std::fs::write(&program, "echo this is text\n").unwrap();
    std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d.unit("text", "[service]\ncommand = [\"{dir}/not-a-program\"]\nrestart = \"no\"\n");
    d.unit("fine", "[service]\ncommand = [\"sleep\", \"60\"]\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let u = f.wait_state("text", "failed");
    assert!(u["reason"].as_str().unwrap().contains("Exec format error"), "{u}");
    f.wait_state("fine", "running");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn working_dir_is_entered_as_the_unit_user() {
    let d = TempDir::new("wdperm");
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let private = d.file("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    d.unit(
        "shut",
        "[service]\ncommand = [\"true\"]\nuser = \"nobody\"\nworking_dir = \"{dir}/private\"\nrestart = \"no\"\n",
    );
    d.unit("open", "[service]\ncommand = [\"pwd\"]\nuser = \"nobody\"\nworking_dir = \"/tmp\"\ntype = \"oneshot\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    let u = f.wait_state("shut", "failed");
    let reason = u["reason"].as_str().unwrap();
    assert!(reason.contains("cannot change to the working directory") && reason.contains("private"), "{u}");
    assert!(reason.contains("Permission denied"), "{u}");
    wait_for("open's pwd", T, || {
        f.stdout().lines().any(|l| l.starts_with("open ") && l.ends_with("| /tmp")).then_some(())
    });
    assert_eq!(f.stop(T), 0);
}

#[test]
fn stop_order_passes_through_finished_oneshots() {
    // web requires setup (a oneshot, exited) which requires db: db must
    // still outlive web at shutdown.
    let d = TempDir::new("transitive");
    d.unit("db", "[service]\nshell = \"trap 'if [ -e {dir}/web.stopped ]; then echo after > {dir}/db.saw; else echo before > {dir}/db.saw; fi; exit 0' TERM; echo $$$$ > {dir}/db.pid; while :; do sleep 0.05; done\"\n");
    d.unit("setup", "[unit]\nrequires = [\"db\"]\n[service]\ntype = \"oneshot\"\ncommand = [\"true\"]\n");
    d.unit("web", "[unit]\nwants = [\"setup\"]\n[service]\nshell = \"trap 'sleep 0.3; touch {dir}/web.stopped; exit 0' TERM; echo $$$$ > {dir}/web.pid; while :; do sleep 0.05; done\"\n");
    let mut f = Flowinit::up(&d, Opts::default());
    read_pid(&d, "web.pid");
    f.wait_state("setup", "exited");
    assert_eq!(f.stop(T), 0);
    assert_eq!(d.read("db.saw").trim(), "after", "db stopped before web finished stopping");
}

/// Kills, whatever happens, the escaped `sleep`s whose pids a fixture
/// wrote to a file (checking the command line first, so a reused pid is
/// left alone).
struct Escapees(std::path::PathBuf);

impl Escapees {
    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(&self.0).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

impl Drop for Escapees {
    fn drop(&mut self) {
        for pid in self.pids() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"sleep\0") && pid_alive(pid) {
                // SAFETY: kill(2) by pid of a sleep our fixture started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn a_crash_loop_leaves_no_escaped_process_behind() {
    let d = TempDir::new("escape-loop");
    let escaped = Escapees(d.file("escaped"));
    d.unit(
        "loop",
        &format!(
            "[service]\ncommand = [\"{}\", \"{{dir}}/escaped\", \"1\", \"ignore-term\"]\nrestart = \"on-failure\"\nrestart_delay = \"100ms\"\nstart_limit_burst = 2\nstop_timeout = \"500ms\"\n",
            fixture("escapes.sh")
        ),
    );
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_log("unit loop failed for good", T);
    let pids = escaped.pids();
    assert_eq!(pids.len(), 2, "one escaped child per start: {pids:?}");
    wait_for("the escaped children to be gone", T, || pids.iter().all(|&p| !pid_alive(p)).then_some(()));
    let err = f.stderr();
    assert!(err.contains("left its process group; sent SIGTERM"), "{err}");
    assert!(err.contains("ignored SIGTERM; sending SIGKILL"), "{err}");
    assert_eq!(f.stop(T), 0);
}

#[test]
fn a_stopped_unit_takes_its_escaped_process_with_it() {
    let d = TempDir::new("escape-stop");
    let escaped = Escapees(d.file("escaped"));
    d.unit("stays", &format!("[service]\ncommand = [\"{}\", \"{{dir}}/escaped\", \"stay\"]\n", fixture("escapes.sh")));
    let mut f = Flowinit::up(&d, Opts::default());
    let pid = wait_for("the escaped child's pid", T, || escaped.pids().first().copied());
    let sid = |p: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(3)?.parse::<i32>().ok())
    };
    let main = f.wait_state("stays", "running")["pid"].as_i64().unwrap() as i32;
    assert!(pid_alive(pid));
    assert_ne!(sid(pid), sid(main), "the child left the unit's session");
    let (code, out, err) = f.ctl(&["stop", "stays"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("the escaped child to be gone", T, || (!pid_alive(pid)).then_some(()));
    assert_eq!(f.stop(T), 0);
}

/// Sets flowinit's soft RLIMIT_NOFILE; returns the old (soft, hard).
fn set_nofile(pid: i32, soft: Option<u64>, restore: Option<(u64, u64)>) -> (u64, u64) {
    let mut old = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit64 reads the old limit into `old`.
    assert_eq!(unsafe { libc::prlimit64(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) }, 0);
    let new = match (soft, restore) {
        (Some(s), _) => libc::rlimit64 { rlim_cur: s, rlim_max: old.rlim_max },
        (None, Some((s, h))) => libc::rlimit64 { rlim_cur: s, rlim_max: h },
        (None, None) => old,
    };
    // SAFETY: prlimit64 on flowinit, our own child, with a valid limit.
    assert_eq!(unsafe { libc::prlimit64(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) }, 0);
    (old.rlim_cur, old.rlim_max)
}

#[test]
fn flowinits_own_emfile_is_not_the_units_failure() {
    // With its soft fd limit at 3 every new fd of flowinit's fails with
    // EMFILE (0-2 are taken), so the restart cannot even make its pipes.
    // With start_limit_burst = 2, counting even one of those attempts
    // would fail the unit for good.
    let d = TempDir::new("emfile");
    d.unit(
        "crashy",
        "[service]\nshell = \"while [ ! -e {dir}/crash ]; do sleep 0.05; done; rm {dir}/crash; exit 1\"\nrestart_delay = \"100ms\"\nstart_limit_burst = 2\n",
    );
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("crashy", "running");
    let old = set_nofile(f.pid, Some(3), None);
    std::fs::write(d.file("crash"), "").unwrap();
    let result = std::panic::catch_unwind(|| {
        f.wait_log(
            "flowinit itself is out of file descriptors (EMFILE) while starting unit crashy; retrying in 100ms",
            T,
        );
        f.wait_log(
            "flowinit itself is out of file descriptors (EMFILE) while starting unit crashy; retrying in 400ms",
            T,
        );
    });
    set_nofile(f.pid, None, Some(old));
    result.unwrap();
    let st = wait_for("crashy running again", T, || {
        let st = f.wait_state("crashy", "running");
        (st["restarts"] == 1).then_some(st)
    });
    assert_eq!(st["restarts"], 1, "{st}");
    assert!(!f.stderr().contains("unit crashy failed for good"), "{}", f.stderr());
    assert_eq!(f.stop(T), 0);
}
