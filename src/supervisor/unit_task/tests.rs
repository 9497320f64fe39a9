//! The unit actor against a fake child, under paused time: every call to
//! the child is recorded with the (virtual) time it happened at, and the
//! test decides when a child exits, whether it obeys its stop signal,
//! whether its group lingers, whether it left a process outside it and
//! whether the OOM killer's count rose with its death.

use super::child::{Child, Output, RunTag};
use super::*;
use crate::api::{Failure, RunSummary};
use crate::config::unit::{Env, Liveness, ProbeKind, RestartPolicy};
use crate::probe::ProbeError;
use crate::process::cgroup::OomKills;
use crate::process::reaper::Spawned;
use crate::process::{Shortage, SpawnError, SpawnStep};
use nix::errno::Errno;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Spawn(i32),
    SpawnFailed(i32),
    Signal(i32, Signal),
    /// A process that escaped run's group got a signal.
    Escaped(i32, Signal),
}

/// What the next spawned child does.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Spawning fails with this errno.
    fail: Option<i32>,
    /// Exits by itself after this long.
    exit_after: Option<(Duration, Termination)>,
    /// Dies of its stop signal (SIGKILL always works).
    obeys: bool,
    /// Its group lives on after the main process exits by itself.
    lingers: bool,
    /// Leaves a process outside its group (setsid), which obeys like it.
    escapes: bool,
    /// When it ends by itself, the OOM killer's count goes up first.
    oom_killed: bool,
}

const RUNS: Plan =
    Plan { fail: None, exit_after: None, obeys: true, lingers: false, escapes: false, oom_killed: false };

fn exits(after_ms: u64, code: i32) -> Plan {
    Plan { exit_after: Some((Duration::from_millis(after_ms), Termination::Exited(code))), ..RUNS }
}

struct Proc {
    pid: i32,
    run: RunTag,
    exit: Option<oneshot::Sender<Termination>>,
    group: bool,
    escaped: Option<i32>,
    plan: Plan,
}

struct World {
    t0: Instant,
    calls: Vec<(Duration, Call)>,
    procs: Vec<Proc>,
    plans: VecDeque<Plan>,
    default: Plan,
    next_pid: i32,
    probes: Vec<mpsc::Sender<ProbeResult>>,
    /// What every live main process's run uses (memory_max checks).
    rss: u64,
    /// Router requests to the unit are in flight (a stop drains them).
    in_flight: bool,
    /// The OOM killer's count, `None`: unreadable.
    oom: Option<u64>,
    /// Up to which count OOM kills were put down to a death.
    oom_explained: u64,
}

#[derive(Clone)]
struct FakeChild(Arc<Mutex<World>>);

impl FakeChild {
    fn new(default: Plan, plans: impl IntoIterator<Item = Plan>) -> FakeChild {
        FakeChild(Arc::new(Mutex::new(World {
            t0: Instant::now(),
            calls: Vec::new(),
            procs: Vec::new(),
            plans: plans.into_iter().collect(),
            default,
            next_pid: 100,
            probes: Vec::new(),
            rss: 0,
            in_flight: false,
            oom: None,
            oom_explained: 0,
        })))
    }

    fn with_oom_count(self, count: u64) -> FakeChild {
        self.world().oom = Some(count);
        self
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    fn calls(&self) -> Vec<(Duration, Call)> {
        self.world().calls.clone()
    }

    fn record(w: &mut World, call: Call) {
        let at = Instant::now() - w.t0;
        w.calls.push((at, call));
    }

    /// The main process `pid` ends with `term`; its group goes unless it lingers.
    fn end(&self, pid: i32, term: Termination) {
        let mut w = self.world();
        if w.procs.iter().any(|p| p.pid == pid && p.plan.oom_killed && p.exit.is_some()) {
            w.oom = w.oom.map(|n| n + 1);
        }
        if let Some(p) = w.procs.iter_mut().find(|p| p.pid == pid) {
            if let Some(tx) = p.exit.take() {
                let _ = tx.send(term);
            }
            p.group = p.plan.lingers && !matches!(term, Termination::Signaled(_));
        }
    }

    fn escaped_alive(&self) -> Vec<i32> {
        self.world().procs.iter().filter_map(|p| p.escaped).collect()
    }

    fn send_probe(&self, n: usize, r: ProbeResult) {
        let tx = self.world().probes[n].clone();
        tx.try_send(r).unwrap();
    }
}

impl Child for FakeChild {
    fn spawn(&self, run: &RunTag, _extra_env: Vec<(OsString, OsString)>) -> Result<(Spawned, Output), SpawnError> {
        let mut w = self.world();
        let plan = w.plans.pop_front().unwrap_or(w.default);
        if let Some(errno) = plan.fail {
            Self::record(&mut w, Call::SpawnFailed(errno));
            return Err(SpawnError::new(SpawnStep::Clone, std::io::Error::from_raw_os_error(errno)));
        }
        w.next_pid += 1;
        let pid = w.next_pid;
        Self::record(&mut w, Call::Spawn(pid));
        let (tx, exit) = oneshot::channel();
        let escaped = plan.escapes.then_some(pid + 10_000);
        w.procs.push(Proc { pid, run: run.clone(), exit: Some(tx), group: true, escaped, plan });
        if let Some((after, term)) = plan.exit_after {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                me.end(pid, term);
            });
        }
        Ok((Spawned { pid: Pid::new(pid).unwrap(), exit }, Output::none()))
    }

    fn signal_group(&self, pgid: Pgid, sig: Signal) -> Result<bool, Errno> {
        let mut w = self.world();
        Self::record(&mut w, Call::Signal(pgid.raw(), sig));
        let Some(p) = w.procs.iter_mut().find(|p| p.pid == pgid.raw()) else { return Ok(false) };
        if !p.group {
            return Ok(false);
        }
        if sig == Signal::KILL || p.plan.obeys {
            if let Some(tx) = p.exit.take() {
                let _ = tx.send(Termination::Signaled(sig));
            }
            p.group = false;
        }
        Ok(true)
    }

    fn group_alive(&self, pgid: Pgid) -> bool {
        self.world().procs.iter().any(|p| p.pid == pgid.raw() && p.group)
    }

    fn signal_escaped(&self, run: &RunTag, besides: Pgid, sig: Option<Signal>) -> usize {
        let mut w = self.world();
        let mut hit = Vec::new();
        for p in w.procs.iter_mut().filter(|p| &p.run == run && p.pid == besides.raw()) {
            let Some(e) = p.escaped else { continue };
            if let Some(sig) = sig {
                hit.push((e, sig));
                if sig == Signal::KILL || p.plan.obeys {
                    p.escaped = None;
                }
            } else {
                hit.push((e, Signal::KILL));
            }
        }
        if sig.is_some() {
            for (e, s) in &hit {
                Self::record(&mut w, Call::Escaped(*e, *s));
            }
        }
        hit.len()
    }

    fn start_probe(&self, _: &ProbeKind, _: Duration, _: Duration, _: Option<Arc<LineWatch>>) -> ProbeTask {
        let (tx, rx) = mpsc::channel(8);
        self.world().probes.push(tx);
        ProbeTask::from_channel(rx)
    }

    fn usage(&self, pid: Pid, _run: &RunTag) -> Option<crate::process::usage::Usage> {
        let w = self.world();
        w.procs.iter().any(|p| p.pid == pid.raw() && p.exit.is_some()).then(|| crate::process::usage::Usage {
            rss_bytes: w.rss,
            cpu_seconds: 0.0,
            processes: 1,
        })
    }

    fn drained(&self) -> bool {
        !self.world().in_flight
    }

    fn oom_kills(&self) -> Option<OomKills> {
        self.world().oom.map(|count| OomKills { file: "memory.events", count })
    }

    fn take_oom_kill(&self, before: u64, after: u64) -> bool {
        let mut w = self.world();
        let taken = crate::process::cgroup::claim(w.oom_explained, before, after);
        w.oom_explained = taken.unwrap_or(w.oom_explained);
        taken.is_some()
    }
}

fn service() -> Service {
    Service {
        kind: ServiceKind::Simple,
        argv: vec!["app".into()],
        program: "/bin/app".into(),
        working_dir: None,
        credentials: None,
        env: Env::default(),
        restart: RestartPolicy::OnFailure,
        restart_delay: Duration::from_secs(1),
        restart_delay_max: Duration::from_secs(8),
        start_limit_burst: 100,
        start_limit_interval: Duration::from_secs(120),
        stop_signal: Signal::TERM,
        stop_timeout: Duration::from_secs(10),
        readiness: None,
        liveness: None,
        notify_timeout: Duration::from_secs(10),
        memory: None,
    }
}

struct Harness {
    fake: FakeChild,
    cmds: mpsc::Sender<UnitCmd>,
    events: mpsc::Receiver<UnitEvent>,
    t0: Instant,
}

fn start(svc: Service, fake: FakeChild) -> Harness {
    let (cmd_tx, cmds) = mpsc::channel(16);
    let (events_tx, events) = mpsc::channel(1024);
    let actor = Actor {
        id: 7,
        name: "app".into(),
        service: Arc::new(svc),
        child: Arc::new(fake.clone()),
        ready_match: None,
        events: events_tx,
        cmds,
    };
    tokio::spawn(actor.run());
    let t0 = fake.world().t0;
    Harness { fake, cmds: cmd_tx, events, t0 }
}

impl Harness {
    async fn send(&self, cmd: UnitCmd) {
        self.cmds.send(cmd).await.unwrap();
    }

    /// The next status whose state is `state`, and when it came.
    async fn until(&mut self, state: State) -> (Duration, UnitStatus) {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(3600), self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {state} within an hour"))
                .unwrap_or_else(|| panic!("actor gone before {state}"));
            assert_eq!(ev.id, 7);
            if ev.status.state == state {
                return (Instant::now() - self.t0, ev.status);
            }
        }
    }

    fn deadline_in(&self, d: Duration) -> std::time::Instant {
        (Instant::now() + d).into_std()
    }

    /// Lets every task run until nothing is due before `d` from now.
    async fn idle_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

const fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn spawn_times(calls: &[(Duration, Call)]) -> Vec<Duration> {
    calls.iter().filter(|(_, c)| matches!(c, Call::Spawn(_))).map(|(t, _)| *t).collect()
}

#[tokio::test(start_paused = true)]
async fn start_reports_running_with_the_pid() {
    let mut h = start(service(), FakeChild::new(RUNS, []));
    h.send(UnitCmd::Start).await;
    let (at, st) = h.until(State::Running).await;
    assert_eq!(at, Duration::ZERO);
    assert_eq!(st.pid, Pid::new(101));
    assert_eq!(st.restarts, 0);
    assert_eq!(h.fake.calls(), [(Duration::ZERO, Call::Spawn(101))]);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_doubling_up_to_the_max() {
    let mut svc = service();
    svc.restart_delay_max = s(4);
    let h = start(svc, FakeChild::new(exits(0, 1), []));
    h.send(UnitCmd::Start).await;
    h.idle_for(s(20)).await;
    // Delays 1, 2, 4, 4, 4…: the cap holds.
    let want: Vec<Duration> = [0, 1, 3, 7, 11, 15, 19].map(s).to_vec();
    assert_eq!(spawn_times(&h.fake.calls()), want);
}

#[tokio::test(start_paused = true)]
async fn staying_up_for_restart_delay_max_resets_the_backoff() {
    let mut svc = service();
    svc.restart_delay_max = s(4);
    // Two quick failures (delays 1 s, 2 s), then a run of 4 s, then quick again.
    let plans = [exits(0, 1), exits(0, 1), exits(4000, 1)];
    let h = start(svc, FakeChild::new(exits(0, 1), plans));
    h.send(UnitCmd::Start).await;
    h.idle_for(s(12)).await;
    let times = spawn_times(&h.fake.calls());
    // 0 → 1 (delay 1), 1 → 3 (delay 2), up 3..7, then delay 1 again: 8, then 2: 10.
    assert_eq!(times[..5], [s(0), s(1), s(3), s(8), s(10)]);
}

#[tokio::test(start_paused = true)]
async fn the_start_limit_fails_it_for_good_with_the_reason() {
    let mut svc = service();
    svc.start_limit_burst = 3;
    svc.restart_delay = ms(100);
    let mut h = start(svc, FakeChild::new(exits(0, 3), []));
    h.send(UnitCmd::Start).await;
    let (at, st) = h.until(State::Failed).await;
    assert_eq!(st.reason.as_deref(), Some("exited 3; start limit reached (3 starts within 2m)"));
    // Two restarts happened; the third would be over the limit, so the
    // unit fails when its third run ends, without announcing a restart.
    assert_eq!(st.restarts, 2);
    assert_eq!(at, ms(100 + 200), "runs of 0 s, delays of 100 and 200 ms, no third delay");
    h.idle_for(s(60)).await;
    assert_eq!(spawn_times(&h.fake.calls()).len(), 3, "no start after failed for good");
}

#[tokio::test(start_paused = true)]
async fn restart_no_fails_at_the_first_failure() {
    let mut svc = service();
    svc.restart = RestartPolicy::No;
    let mut h = start(svc, FakeChild::new(exits(500, 2), []));
    h.send(UnitCmd::Start).await;
    let (at, st) = h.until(State::Failed).await;
    assert_eq!(at, ms(500));
    assert_eq!(st.reason.as_deref(), Some("exited 2"));
    assert_eq!(st.last_exit, Some(Termination::Exited(2)));
    assert_eq!(st.restarts, 0);
}

#[tokio::test(start_paused = true)]
async fn a_oneshot_that_exits_0_is_exited() {
    let mut svc = service();
    svc.kind = ServiceKind::Oneshot;
    let mut h = start(svc, FakeChild::new(exits(300, 0), []));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Starting).await;
    assert_eq!(st.pid, Pid::new(101), "a oneshot is starting while it runs");
    let (at, st) = h.until(State::Exited).await;
    assert_eq!((at, st.reason.as_deref(), st.pid), (ms(300), Some("exited 0"), None));
}

#[tokio::test(start_paused = true)]
async fn stop_signals_the_group_and_reports_stopped() {
    let mut h = start(service(), FakeChild::new(RUNS, []));
    h.send(UnitCmd::Start).await;
    h.until(State::Running).await;
    h.idle_for(s(2)).await;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(60)) }).await;
    let (_, st) = h.until(State::Stopping).await;
    assert_eq!(st.pid, Pid::new(101));
    let (at, st) = h.until(State::Stopped).await;
    assert_eq!(at, s(2));
    assert_eq!((st.killed, st.reason, st.last_exit), (None, None, Some(Termination::Signaled(Signal::TERM))));
    assert_eq!(h.fake.calls(), [(s(0), Call::Spawn(101)), (s(2), Call::Signal(101, Signal::TERM))]);
}

#[tokio::test(start_paused = true)]
async fn a_child_that_ignores_its_stop_signal_gets_sigkill_at_stop_timeout() {
    let mut h = start(service(), FakeChild::new(Plan { obeys: false, ..RUNS }, []));
    h.send(UnitCmd::Start).await;
    h.until(State::Running).await;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(60)) }).await;
    let (at, st) = h.until(State::Stopped).await;
    assert_eq!(at, s(10));
    assert_eq!(st.killed, Some(KillReason::StopTimeout));
    assert_eq!(st.reason.as_deref(), Some("killed with SIGKILL: stop_timeout 10s passed"));
    assert_eq!(
        &h.fake.calls()[1..],
        [(s(0), Call::Signal(101, Signal::TERM)), (s(10), Call::Signal(101, Signal::KILL))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_before_stop_timeout_kills_at_the_deadline_for_the_budget() {
    let mut h = start(service(), FakeChild::new(Plan { obeys: false, ..RUNS }, []));
    h.send(UnitCmd::Start).await;
    h.until(State::Running).await;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(3)) }).await;
    let (at, st) = h.until(State::Stopped).await;
    assert_eq!(at, s(3));
    assert_eq!(st.killed, Some(KillReason::Budget));
    assert_eq!(st.reason.as_deref(), Some("killed with SIGKILL: the shutdown budget left it 3.0s (stop_timeout 10s)"));
    assert_eq!(h.fake.calls().last(), Some(&(s(3), Call::Signal(101, Signal::KILL))));
}

#[tokio::test(start_paused = true)]
async fn hurry_brings_the_sigkill_forward() {
    let mut h = start(service(), FakeChild::new(Plan { obeys: false, ..RUNS }, []));
    h.send(UnitCmd::Start).await;
    h.until(State::Running).await;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(60)) }).await;
    h.until(State::Stopping).await;
    h.idle_for(s(1)).await;
    h.send(UnitCmd::Hurry { deadline: h.deadline_in(s(1)) }).await;
    let (at, st) = h.until(State::Stopped).await;
    assert_eq!(at, s(2));
    assert_eq!(st.killed, Some(KillReason::Hurried));
    assert_eq!(st.reason.as_deref(), Some("killed with SIGKILL: the stop was hurried (a second stop signal)"));
}

#[tokio::test(start_paused = true)]
async fn a_group_that_lingers_after_its_main_process_gets_sigkill_after_stop_timeout() {
    let plan = Plan { obeys: false, lingers: true, ..exits(1000, 1) };
    let mut svc = service();
    svc.restart_delay = s(30);
    svc.restart_delay_max = s(30);
    let mut h = start(svc, FakeChild::new(RUNS, [plan]));
    h.send(UnitCmd::Start).await;
    let (at, st) = h.until(State::Starting).await;
    assert_eq!((at, st.reason.as_deref()), (s(1), Some("exited 1, restarting in 30s")));
    h.idle_for(s(15)).await;
    let calls = h.fake.calls();
    assert_eq!(
        calls,
        [(s(0), Call::Spawn(101)), (s(1), Call::Signal(101, Signal::TERM)), (s(11), Call::Signal(101, Signal::KILL))]
    );
}

#[tokio::test(start_paused = true)]
async fn flowinits_own_emfile_is_retried_and_never_counted() {
    let mut svc = service();
    svc.start_limit_burst = 1;
    let emfile = Plan { fail: Some(libc::EMFILE), ..RUNS };
    let mut h = start(svc, FakeChild::new(RUNS, [emfile; 8]));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Running).await;
    let calls = h.fake.calls();
    let failed: Vec<Duration> =
        calls.iter().filter(|(_, c)| *c == Call::SpawnFailed(libc::EMFILE)).map(|(t, _)| *t).collect();
    // Its own backoff: 100 ms doubling, capped at 5 s.
    let want: Vec<Duration> = [0, 100, 300, 700, 1500, 3100, 6300, 11300].map(ms).to_vec();
    assert_eq!(failed, want);
    assert_eq!(calls.last(), Some(&(ms(16300), Call::Spawn(101))));
    // A start limit of 1 was not used up, no restart and no failure counted.
    assert_eq!((st.restarts, st.pid), (0, Pid::new(101)));
}

#[tokio::test(start_paused = true)]
async fn the_emfile_retry_says_whose_problem_it_is() {
    let emfile = Plan { fail: Some(libc::EMFILE), ..RUNS };
    let mut h = start(service(), FakeChild::new(RUNS, [emfile]));
    h.send(UnitCmd::Start).await;
    let ev = h.events.recv().await.unwrap();
    assert_eq!(
        ev.status.reason.as_deref(),
        Some("flowinit itself is out of file descriptors (EMFILE) while starting unit app; retrying in 100ms")
    );
    assert_eq!((ev.status.state, ev.status.restarts), (State::Starting, 0));
    assert_eq!(Shortage::of(&std::io::Error::from_raw_os_error(libc::EMFILE)), Some(Shortage::FileDescriptors));
}

#[tokio::test(start_paused = true)]
async fn a_units_own_spawn_failure_counts_and_backs_off() {
    let enoent = Plan { fail: Some(libc::ENOENT), ..RUNS };
    let mut h = start(service(), FakeChild::new(RUNS, [enoent, enoent]));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Running).await;
    assert_eq!(st.restarts, 2);
    assert_eq!(h.fake.calls().last(), Some(&(s(3), Call::Spawn(101))), "delays 1 s then 2 s");
}

#[tokio::test(start_paused = true)]
async fn stop_during_backoff_is_stopped_without_a_spawn() {
    let mut svc = service();
    (svc.restart_delay, svc.restart_delay_max) = (s(30), s(30));
    let mut h = start(svc, FakeChild::new(RUNS, [exits(0, 1)]));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Starting).await;
    assert_eq!(st.reason.as_deref(), Some("exited 1, restarting in 30s"));
    h.idle_for(s(5)).await;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(60)) }).await;
    let (at, st) = h.until(State::Stopped).await;
    assert_eq!((at, st.pid), (s(5), None));
    h.idle_for(s(60)).await;
    assert_eq!(spawn_times(&h.fake.calls()), [s(0)]);
}

#[tokio::test(start_paused = true)]
async fn escaped_processes_go_with_the_run_that_started_them() {
    // The run exits 1 leaving an escaped process that ignores SIGTERM; the
    // next run starts on time while the sweep of the first one goes on.
    let mut svc = service();
    svc.restart_delay = s(1);
    let first = Plan { escapes: true, obeys: false, ..exits(0, 1) };
    let h = start(svc, FakeChild::new(RUNS, [first]));
    h.send(UnitCmd::Start).await;
    h.idle_for(s(12)).await;
    let calls = h.fake.calls();
    assert_eq!(
        calls,
        [
            (s(0), Call::Spawn(101)),
            (s(0), Call::Escaped(10_101, Signal::TERM)),
            (s(1), Call::Spawn(102)),
            (s(10), Call::Escaped(10_101, Signal::KILL)),
        ]
    );
    assert!(h.fake.escaped_alive().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stopped_unit_takes_its_escaped_process_with_it() {
    let mut h = start(service(), FakeChild::new(Plan { escapes: true, ..RUNS }, []));
    h.send(UnitCmd::Start).await;
    h.until(State::Running).await;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(60)) }).await;
    h.until(State::Stopped).await;
    h.idle_for(ms(1)).await;
    assert_eq!(
        &h.fake.calls()[1..],
        [(s(0), Call::Signal(101, Signal::TERM)), (s(0), Call::Escaped(10_101, Signal::TERM))]
    );
    assert!(h.fake.escaped_alive().is_empty());
}

#[tokio::test(start_paused = true)]
async fn liveness_failures_restart_but_flowinits_own_shortages_do_not_count() {
    let mut svc = service();
    svc.liveness = Some(Liveness {
        kind: ProbeKind::Tcp { addr: "127.0.0.1:1".into() },
        interval: s(1),
        timeout: s(1),
        failures: 2,
    });
    let mut h = start(svc, FakeChild::new(RUNS, []));
    h.send(UnitCmd::Start).await;
    h.until(State::Running).await;
    let shortage = || Err(resource());
    for _ in 0..5 {
        h.fake.send_probe(0, shortage());
    }
    h.idle_for(s(1)).await;
    assert_eq!(spawn_times(&h.fake.calls()).len(), 1, "skipped attempts are no failures");
    h.fake.send_probe(0, Err(ProbeError::Timeout(s(1))));
    h.fake.send_probe(0, Err(ProbeError::Timeout(s(1))));
    let (_, st) = h.until(State::Stopping).await;
    assert_eq!(st.reason.as_deref(), Some("liveness probe failed 2 times in a row: no answer within 1s"));
    let (_, st) = h.until(State::Starting).await;
    assert_eq!(st.restarts, 1);
}

fn resource() -> ProbeError {
    ProbeError::Resource { shortage: Shortage::FileDescriptors, doing: "connecting to 127.0.0.1:1".into() }
}

fn memory_limited(max_mib: u64) -> Service {
    let mut svc = service();
    svc.start_limit_burst = 1;
    svc.memory = Some(crate::config::unit::MemoryLimit { max_bytes: max_mib << 20, check_every: ms(200) });
    svc
}

#[tokio::test(start_paused = true)]
async fn three_checks_above_memory_max_restart_it_outside_the_start_limit() {
    let mut h = start(memory_limited(50), FakeChild::new(RUNS, []));
    h.fake.world().rss = 70 << 20;
    h.send(UnitCmd::Start).await;
    for n in 1..=2u32 {
        let (at, st) = h.until(State::Stopping).await;
        assert_eq!(at, ms(600) * n, "the third check of run {n}");
        assert_eq!(st.reason.as_deref(), Some("memory_max exceeded (rss 70MiB > 50MiB)"));
        let (at, st) = h.until(State::Running).await;
        assert_eq!(at, ms(600) * n, "started again at once: no backoff");
        assert_eq!((st.restarts, st.memory_restarts), (n, n));
        assert_eq!(st.reason.as_deref(), Some("restarted after memory_max exceeded (rss 70MiB > 50MiB)"));
    }
    let calls = h.fake.calls();
    assert_eq!(
        calls[..3],
        [(ms(0), Call::Spawn(101)), (ms(600), Call::Signal(101, Signal::TERM)), (ms(600), Call::Spawn(102))]
    );
    assert_eq!(spawn_times(&calls).len(), 3, "start_limit_burst = 1, and three starts: none was counted");
}

#[tokio::test(start_paused = true)]
async fn a_check_below_memory_max_starts_the_count_again() {
    let mut h = start(memory_limited(50), FakeChild::new(RUNS, []));
    h.fake.world().rss = 70 << 20;
    h.send(UnitCmd::Start).await;
    h.idle_for(ms(500)).await;
    h.fake.world().rss = 10 << 20;
    h.idle_for(ms(200)).await;
    h.fake.world().rss = 70 << 20;
    let (at, _) = h.until(State::Stopping).await;
    assert_eq!(at, ms(1200), "over at 200 and 400, under at 600, over at 800, 1000, 1200");
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_memory_restart_keeps_it_stopped() {
    let mut svc = memory_limited(50);
    svc.stop_timeout = s(5);
    let slow = Plan { obeys: false, ..RUNS };
    let mut h = start(svc, FakeChild::new(slow, []));
    h.fake.world().rss = 70 << 20;
    h.send(UnitCmd::Start).await;
    h.until(State::Stopping).await;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(3600)) }).await;
    let (at, _) = h.until(State::Stopped).await;
    assert_eq!(at, ms(600) + s(5), "SIGKILL at stop_timeout, then stopped");
    h.idle_for(s(60)).await;
    assert_eq!(spawn_times(&h.fake.calls()).len(), 1, "no start after the operator's stop");
}

#[tokio::test(start_paused = true)]
async fn a_stop_waits_for_router_requests_in_flight_before_its_signal() {
    let mut h = start(service(), FakeChild::new(RUNS, []));
    h.send(UnitCmd::Start).await;
    h.until(State::Running).await;
    h.fake.world().in_flight = true;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(3600)) }).await;
    h.idle_for(ms(500)).await;
    assert!(!h.fake.calls().iter().any(|(_, c)| matches!(c, Call::Signal(..))), "signalled with requests in flight");
    h.fake.world().in_flight = false;
    let (at, _) = h.until(State::Stopped).await;
    assert!(at > ms(500) && at <= ms(600), "signalled once drained (polled): {at:?}");
}

#[tokio::test(start_paused = true)]
async fn the_drain_before_a_stop_takes_at_most_stop_timeout_and_the_deadline() {
    let mut h = start(service(), FakeChild::new(RUNS, []));
    h.send(UnitCmd::Start).await;
    h.until(State::Running).await;
    h.fake.world().in_flight = true;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(3600)) }).await;
    let (at, _) = h.until(State::Stopped).await;
    assert_eq!(at, s(10), "drained for stop_timeout, then it obeyed its signal at once");
    h.send(UnitCmd::Start).await;
    h.until(State::Running).await;
    let t = Instant::now() - h.t0;
    h.send(UnitCmd::Stop { deadline: h.deadline_in(s(2)) }).await;
    let (at, _) = h.until(State::Stopped).await;
    assert_eq!(at - t, s(2), "the shutdown budget's deadline cuts the drain");
}

// ---- crash diagnostics

fn killed_after(ms_: u64, oom_killed: bool) -> Plan {
    Plan { exit_after: Some((ms(ms_), Termination::Signaled(Signal::KILL))), oom_killed, ..RUNS }
}

fn ran(ms_: u64, end: &str) -> RunSummary {
    RunSummary { ran: Some(ms(ms_)), end: end.into() }
}

#[tokio::test(start_paused = true)]
async fn a_sigkill_flowinit_did_not_send_is_called_so() {
    let mut h = start(service(), FakeChild::new(RUNS, [killed_after(2000, false)]).with_oom_count(3));
    h.send(UnitCmd::Start).await;
    let (at, st) = h.until(State::Starting).await;
    assert_eq!(at, s(2));
    assert_eq!(
        st.reason.as_deref(),
        Some("killed by SIGKILL, not sent by flowinit (probably the kernel OOM killer, or kill -9 from outside), restarting in 1s")
    );
    assert_eq!(st.last_exit, Some(Termination::Signaled(Signal::KILL)));
}

#[tokio::test(start_paused = true)]
async fn a_sigkill_while_the_oom_count_rose_names_the_oom_killer() {
    let mut h = start(service(), FakeChild::new(RUNS, [killed_after(500, true)]).with_oom_count(3));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Starting).await;
    assert_eq!(
        st.reason.as_deref(),
        Some("killed by SIGKILL (not sent by flowinit): the kernel OOM killer killed a process (memory.events oom_kill 3 → 4), restarting in 1s")
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_oom_count_falls_back_to_the_guess() {
    let mut h = start(service(), FakeChild::new(RUNS, [killed_after(500, true)]));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Starting).await;
    assert!(
        st.reason.as_deref().is_some_and(|r| r.starts_with("killed by SIGKILL, not sent by flowinit (probably")),
        "{st:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_start_limit_failure_carries_the_runs_of_its_window() {
    let mut svc = service();
    (svc.start_limit_burst, svc.restart_delay, svc.restart_delay_max) = (3, ms(100), s(1));
    let plans = [exits(1500, 3), exits(700, 3), exits(6100, 3)];
    let mut h = start(svc, FakeChild::new(RUNS, plans).with_oom_count(0));
    h.send(UnitCmd::Start).await;
    let (at, st) = h.until(State::Failed).await;
    // Runs of 1.5 s, 0.7 s and 6.1 s with delays of 100 ms and 200 ms
    // between them; a fourth start would be over the limit, so it fails
    // as the third run ends.
    assert_eq!(at, ms(1500 + 100 + 700 + 200 + 6100));
    assert_eq!(st.reason.as_deref(), Some("exited 3; start limit reached (3 starts within 2m)"));
    let want = Failure {
        runs: vec![ran(1500, "exited 3"), ran(700, "exited 3"), ran(6100, "exited 3")],
        span: ms(8600),
        start_limit_burst: 3,
        start_limit_interval: s(120),
        no_restart: false,
    };
    assert_eq!(st.failure.as_deref(), Some(&want));
}

#[tokio::test(start_paused = true)]
async fn restart_no_reports_its_one_run() {
    let mut svc = service();
    svc.restart = RestartPolicy::No;
    let mut h = start(svc, FakeChild::new(exits(250, 1), []));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Failed).await;
    let f = st.failure.expect("a failure report");
    assert_eq!((f.runs.clone(), f.span, f.no_restart), (vec![ran(250, "exited 1")], ms(250), true));
}

#[tokio::test(start_paused = true)]
async fn the_start_limit_reason_names_the_last_failure_not_flowinits_stop() {
    // Not ready by start_timeout: flowinit stops it with SIGTERM; that
    // signal is not why the unit failed.
    let mut svc = service();
    (svc.start_limit_burst, svc.restart_delay) = (2, ms(100));
    svc.readiness = Some(crate::config::unit::Readiness {
        kind: ProbeKind::Tcp { addr: "127.0.0.1:1".into() },
        interval: s(1),
        timeout: s(1),
        start_timeout: s(3),
    });
    let mut h = start(svc, FakeChild::new(RUNS, []));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Failed).await;
    assert_eq!(
        st.reason.as_deref(),
        Some("not ready within start_timeout 3s; start limit reached (2 starts within 2m)")
    );
    let f = st.failure.expect("a failure report");
    assert_eq!(
        f.runs,
        [ran(3000, "not ready within start_timeout 3s"), ran(3000, "not ready within start_timeout 3s")]
    );
}

#[tokio::test(start_paused = true)]
async fn runs_that_could_not_start_are_shown_as_such_and_a_new_start_forgets_old_runs() {
    let mut svc = service();
    (svc.start_limit_burst, svc.restart_delay) = (2, ms(100));
    let enoent = Plan { fail: Some(libc::ENOENT), ..RUNS };
    let mut h = start(svc, FakeChild::new(exits(10, 1), [enoent, exits(40, 1)]));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Failed).await;
    let f = st.failure.expect("a failure report");
    assert_eq!(f.runs.len(), 2);
    assert_eq!(f.runs[0].ran, None);
    assert!(f.runs[0].end.starts_with("failed to start /bin/app: "), "{:?}", f.runs[0]);
    assert_eq!(f.runs[1], ran(40, "exited 1"));
    h.send(UnitCmd::Start).await;
    let (_, st) = h.until(State::Failed).await;
    assert_eq!(st.failure.expect("a failure report").runs, [ran(10, "exited 1"), ran(10, "exited 1")]);
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_that_took_another_units_process_is_not_this_ones() {
    // Two units on one (fake) cgroup: `hog` is OOM-killed at 0.5 s while
    // `app` runs; app is killed with kill -9 at 1 s. Its run saw the count
    // rise, but that kill was hog's.
    let fake = FakeChild::new(RUNS, [killed_after(1000, false), killed_after(500, true)]).with_oom_count(3);
    let mut app = start(service(), fake.clone());
    app.send(UnitCmd::Start).await;
    app.until(State::Running).await;
    let mut hog = start(service(), fake);
    hog.send(UnitCmd::Start).await;
    let (at, st) = hog.until(State::Starting).await;
    assert_eq!(at, ms(500));
    assert!(
        st.reason
            .as_deref()
            .is_some_and(|r| r.contains("the kernel OOM killer killed a process (memory.events oom_kill 3 → 4)")),
        "{st:?}"
    );
    let (at, st) = app.until(State::Starting).await;
    assert_eq!(at, s(1));
    assert_eq!(
        st.reason.as_deref(),
        Some(&*format!(
            "{}, restarting in 1s",
            "killed by SIGKILL, not sent by flowinit (probably the kernel OOM killer, or kill -9 from outside)"
        ))
    );
}
