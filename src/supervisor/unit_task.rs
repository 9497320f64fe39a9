//! The per-unit actor. It owns its process (spawn, exit, stop escalation),
//! its restart timing and its log forwarders, and reports every state
//! change to the manager as a full [`UnitStatus`]. It acts only on the
//! manager's commands; it never looks at other units.

use super::backoff::{restart_delay, StartLimit};
use super::state::{after_exit, AfterExit, State};
use crate::config::unit::{Service, ServiceKind};
use crate::logs::forward::{forward, UnitLog};
use crate::logs::{LogSink, Stream};
use crate::probe;
use crate::probe::notify::{self, NotifySocket};
use crate::process::reaper::Spawned;
use crate::process::{Isolation, Pgid, Pid, Reaper, Signal, SpawnSpec, Stdio3, Termination};
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

#[derive(Debug)]
pub enum UnitCmd {
    Start,
    /// Stop now; SIGKILL the group at the latest at `deadline`.
    Stop {
        deadline: Instant,
    },
    /// Bring a running stop's SIGKILL forward to `deadline`.
    Hurry {
        deadline: Instant,
    },
    /// A router unit's new configuration (a reload), applied without a
    /// stop. Only router tasks get it.
    Reconfigure(Box<super::router_task::RouterChange>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct UnitStatus {
    pub state: State,
    pub pid: Option<Pid>,
    pub restarts: u32,
    pub since: SystemTime,
    pub reason: Option<String>,
    pub last_exit: Option<Termination>,
    /// The last stop ended in SIGKILL because the caller's deadline (the
    /// shutdown budget) ran out, not the unit's own stop_timeout.
    pub killed_at_deadline: bool,
    /// The last failed probe attempt (readiness or liveness), cleared on success.
    pub probe_error: Option<String>,
    pub probe_ok_at: Option<SystemTime>,
    /// `STATUS=` from a notify unit.
    pub status_text: Option<String>,
    /// `MAINPID=` from a notify unit.
    pub main_pid: Option<Pid>,
    /// When the current process was started (for uptime).
    pub started_at: Option<SystemTime>,
}

impl UnitStatus {
    pub fn new(state: State, reason: Option<String>) -> UnitStatus {
        UnitStatus {
            state,
            pid: None,
            restarts: 0,
            since: SystemTime::now(),
            reason,
            last_exit: None,
            killed_at_deadline: false,
            probe_error: None,
            probe_ok_at: None,
            status_text: None,
            main_pid: None,
            started_at: None,
        }
    }

    /// Moves to `state`; `since` changes only when the state does.
    pub fn enter(&mut self, state: State, pid: Option<Pid>, reason: Option<String>) {
        if self.state != state {
            self.since = SystemTime::now();
        }
        self.state = state;
        self.pid = pid;
        self.reason = reason;
    }
}

pub struct UnitEvent {
    pub id: u64,
    pub status: UnitStatus,
}

pub struct UnitTask {
    pub id: u64,
    pub service: Arc<Service>,
    pub log: UnitLog,
    pub reaper: Reaper,
    pub sink: LogSink,
    pub events: mpsc::Sender<UnitEvent>,
    pub cmds: mpsc::Receiver<UnitCmd>,
}

/// How supervising a running process ended.
enum Outcome {
    Exited(Termination),
    StopRequested(Instant),
    ManagerGone,
    /// Not ready by start_timeout, or liveness failed: stop it and count a
    /// failure.
    Unhealthy(String),
}

impl UnitTask {
    pub async fn run(mut self) {
        let mut status = UnitStatus::new(State::Inactive, None);
        let mut limit = StartLimit::new(self.service.start_limit_burst, self.service.start_limit_interval);
        while let Some(cmd) = self.cmds.recv().await {
            match cmd {
                UnitCmd::Start => {
                    limit.reset();
                    self.run_until_settled(&mut status, &mut limit).await;
                }
                UnitCmd::Stop { .. } if status.state != State::Stopped && !status.state.is_settled() => {
                    self.report(&mut status, State::Stopped, None, None).await;
                }
                UnitCmd::Stop { .. } | UnitCmd::Hurry { .. } | UnitCmd::Reconfigure(_) => {}
            }
        }
    }

    fn name(&self) -> &str {
        &self.log.name
    }

    async fn report(&self, status: &mut UnitStatus, state: State, pid: Option<Pid>, reason: Option<String>) {
        status.enter(state, pid, reason);
        let _ = self.events.send(UnitEvent { id: self.id, status: status.clone() }).await;
    }

    /// Starts the unit and keeps it running per its restart policy until it
    /// is done, failed for good, or stopped.
    async fn run_until_settled(&mut self, status: &mut UnitStatus, limit: &mut StartLimit) {
        let svc = self.service.clone();
        let mut failures: u32 = 0;
        let notify = match svc.kind {
            ServiceKind::Notify => match NotifySocket::bind(self.name()) {
                Ok(s) => Some(s),
                Err(e) => {
                    let why = format!("cannot create its notify socket: {e}");
                    tracing::error!("unit {}: {why}", self.name());
                    self.report(status, State::Failed, None, Some(why)).await;
                    return;
                }
            },
            _ => None,
        };
        loop {
            if !limit.try_start(Instant::now()) {
                let why = format!(
                    "{}start limit reached ({} starts within {})",
                    status.last_exit.map(|t| format!("{t}; ")).unwrap_or_default(),
                    svc.start_limit_burst,
                    humantime::format_duration(svc.start_limit_interval)
                );
                tracing::error!("unit {} failed for good: {why}", self.name());
                self.report(status, State::Failed, None, Some(why)).await;
                return;
            }
            if let Some(m) = &self.log.ready_match {
                m.arm();
            }
            let child = match self.spawn(notify.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    let why = format!("failed to start {}: {e}", svc.program.display());
                    tracing::error!("unit {}: {why}", self.name());
                    if svc.restart == crate::config::unit::RestartPolicy::No {
                        self.report(status, State::Failed, None, Some(why)).await;
                        return;
                    }
                    failures += 1;
                    if !self.backoff(status, failures, why).await {
                        return;
                    }
                    continue;
                }
            };
            let pid = child.pid;
            tracing::info!("unit {} started (pid {pid})", self.name());
            let up_state = match svc.kind {
                ServiceKind::Simple if svc.readiness.is_none() => State::Running,
                _ => State::Starting,
            };
            status.probe_error = None;
            status.status_text = None;
            status.main_pid = None;
            status.started_at = Some(SystemTime::now());
            self.report(status, up_state, Some(pid), None).await;
            let up_since = Instant::now();
            let mut exit = child.exit;
            let term = match self.supervise(status, pid, &mut exit, notify.as_ref()).await {
                Outcome::Exited(t) => t,
                Outcome::StopRequested(deadline) => {
                    self.stop(status, pid, exit, deadline).await;
                    return;
                }
                Outcome::ManagerGone => {
                    self.stop(status, pid, exit, Instant::now() + svc.stop_timeout).await;
                    return;
                }
                Outcome::Unhealthy(why) => {
                    tracing::error!("unit {}: {why}; stopping it", self.name());
                    self.report(status, State::Stopping, Some(pid), Some(why.clone())).await;
                    let far = Instant::now() + Duration::from_secs(86400);
                    let (term, _) = self.terminate(pid, exit, far).await;
                    status.last_exit = term;
                    if up_since.elapsed() >= svc.restart_delay_max {
                        failures = 0;
                    }
                    failures += 1;
                    if svc.restart == crate::config::unit::RestartPolicy::No {
                        tracing::error!("unit {} failed for good (restart = \"no\")", self.name());
                        self.report(status, State::Failed, None, Some(why)).await;
                        return;
                    }
                    if !self.backoff(status, failures, why).await {
                        return;
                    }
                    continue;
                }
            };
            status.last_exit = Some(term);
            self.clean_group(Pgid::of_leader(pid));
            if up_since.elapsed() >= svc.restart_delay_max {
                failures = 0;
            }
            match after_exit(svc.kind, svc.restart, term) {
                AfterExit::Done => {
                    tracing::info!("unit {} {term}", self.name());
                    self.report(status, State::Exited, None, Some(term.to_string())).await;
                    return;
                }
                AfterExit::Fail => {
                    tracing::error!("unit {} {term}; failed for good (restart = \"no\")", self.name());
                    self.report(status, State::Failed, None, Some(term.to_string())).await;
                    return;
                }
                AfterExit::Restart => {
                    if !term.success() {
                        failures += 1;
                    }
                    if !self.backoff(status, failures, term.to_string()).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits out the restart delay. False when a stop came meanwhile (the
    /// unit is then reported stopped) or the manager went away.
    async fn backoff(&mut self, status: &mut UnitStatus, failures: u32, why: String) -> bool {
        let svc = &self.service;
        let delay = restart_delay(svc.restart_delay, svc.restart_delay_max, failures.max(1));
        let shown = humantime::format_duration(Duration::from_millis(delay.as_millis() as u64));
        tracing::warn!("unit {} {why}, restarting in {shown}", self.name());
        status.restarts += 1;
        self.report(status, State::Starting, None, Some(format!("{why}, restarting in {shown}"))).await;
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until.into()) => return true,
                cmd = self.cmds.recv() => match cmd {
                    Some(UnitCmd::Stop { .. }) | None => {
                        self.report(status, State::Stopped, None, None).await;
                        return false;
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// Watches the running process until it exits, a stop is requested,
    /// or it proves unhealthy: runs the readiness probe (or waits for
    /// READY=1) until ready, then the liveness probe.
    async fn supervise(
        &mut self,
        status: &mut UnitStatus,
        pid: Pid,
        exit: &mut tokio::sync::oneshot::Receiver<Termination>,
        notify: Option<&NotifySocket>,
    ) -> Outcome {
        let svc = self.service.clone();
        let exec = probe::ExecContext { reaper: self.reaper.clone(), service: svc.clone() };
        let mut ready = !svc.waits_for_ready();
        let start_timeout = svc.readiness.as_ref().map_or(svc.notify_timeout, |r| r.start_timeout);
        let start_deadline = Instant::now() + start_timeout;
        let mut readiness = svc
            .readiness
            .as_ref()
            .map(|r| probe::start(r.kind.clone(), r.interval, r.timeout, exec.clone(), self.log.ready_match.clone()));
        let start_liveness =
            || svc.liveness.as_ref().map(|l| probe::start(l.kind.clone(), l.interval, l.timeout, exec.clone(), None));
        let mut liveness = if ready { start_liveness() } else { None };
        let mut live_failures = 0u32;
        let pgrp = pid.raw();
        loop {
            tokio::select! {
                // A stop queued before the exit was seen wins: at the end
                // of the shutdown budget the manager queues Stop and then
                // SIGKILLs every descendant, and that death is not a crash
                // to restart from.
                biased;
                cmd = self.cmds.recv() => match cmd {
                    Some(UnitCmd::Stop { deadline }) => return Outcome::StopRequested(deadline),
                    None => return Outcome::ManagerGone,
                    Some(_) => {}
                },
                term = &mut *exit => return match term {
                    Ok(t) => Outcome::Exited(t),
                    Err(_) => Outcome::ManagerGone,
                },
                Some(result) = next_result(&mut readiness) => match result {
                    Ok(()) => {
                        readiness = None;
                        ready = true;
                        status.probe_error = None;
                        status.probe_ok_at = Some(SystemTime::now());
                        tracing::info!("unit {} is ready", self.name());
                        self.report(status, State::Ready, Some(pid), None).await;
                        liveness = start_liveness();
                    }
                    Err(e) => {
                        if status.probe_error.as_deref() != Some(e.as_str()) {
                            tracing::debug!("unit {}: readiness probe: {e}", self.name());
                            status.probe_error = Some(e.clone());
                            self.report(status, State::Starting, Some(pid), Some(format!("probe: {e}"))).await;
                        }
                    }
                },
                _ = sleep_until(start_deadline.into()), if !ready => {
                    let last = status.probe_error.as_deref().map(|e| format!(" (last probe: {e})")).unwrap_or_default();
                    let what = if svc.kind == ServiceKind::Notify { "no READY=1" } else { "not ready" };
                    return Outcome::Unhealthy(format!("{what} within start_timeout {}{last}", humantime::format_duration(start_timeout)));
                },
                Some(result) = next_result(&mut liveness) => match result {
                    Ok(()) => {
                        live_failures = 0;
                        status.probe_error = None;
                        status.probe_ok_at = Some(SystemTime::now());
                    }
                    Err(e) => {
                        live_failures += 1;
                        let limit = svc.liveness.as_ref().map_or(1, |l| l.failures);
                        tracing::warn!("unit {}: liveness probe failed ({live_failures}/{limit}): {e}", self.name());
                        status.probe_error = Some(e.clone());
                        if live_failures >= limit {
                            return Outcome::Unhealthy(format!("liveness probe failed {limit} times in a row: {e}"));
                        }
                        let (state, reason) = (status.state, status.reason.clone());
                        self.report(status, state, Some(pid), reason).await;
                    }
                },
                msg = recv_notify(notify) => {
                    let Ok(msg) = msg else { continue };
                    let trusted = msg.sender.is_some_and(|s| s == pid || notify::process_group_of(s) == Some(pgrp));
                    if !trusted {
                        tracing::debug!("unit {}: ignoring notify message from pid {:?}: not in its process group", self.name(), msg.sender.map(Pid::raw));
                        continue;
                    }
                    if let Some(text) = msg.get("STATUS") {
                        status.status_text = Some(text.to_string());
                    }
                    if let Some(main) = msg.get("MAINPID").and_then(|p| p.parse().ok()).and_then(Pid::new) {
                        status.main_pid = Some(main);
                    }
                    let (mut state, mut reason) = (status.state, status.reason.clone());
                    if msg.get("READY") == Some("1") && !ready {
                        ready = true;
                        tracing::info!("unit {} is ready (READY=1)", self.name());
                        (state, reason) = (State::Ready, None);
                        liveness = start_liveness();
                    }
                    if msg.get("STOPPING") == Some("1") {
                        (state, reason) = (State::Stopping, Some("the service reported STOPPING=1".into()));
                    }
                    self.report(status, state, Some(pid), reason).await;
                }
            }
        }
    }

    fn spawn(&self, notify: Option<&NotifySocket>) -> std::io::Result<Spawned> {
        let svc = &self.service;
        let mut env = svc.env.to_vec();
        if let Some(n) = notify {
            env.push(("NOTIFY_SOCKET".into(), n.env_value.clone().into()));
        }
        if let Some(dir) = &svc.working_dir {
            if !dir.is_dir() {
                return Err(std::io::Error::other(format!("working_dir {} is not a directory", dir.display())));
            }
        }
        let (out_r, out_w) = std::io::pipe()?;
        let (err_r, err_w) = std::io::pipe()?;
        for p in [&out_r, &err_r] {
            // Best effort: the default 64 KiB works too, just with more wake-ups.
            let _ = nix::fcntl::fcntl(p, nix::fcntl::FcntlArg::F_SETPIPE_SZ(crate::logs::forward::PIPE_BYTES));
        }
        let spec = SpawnSpec {
            program: svc.program.clone(),
            argv: svc.argv.iter().map(OsString::from).collect(),
            env: Some(env),
            working_dir: svc.working_dir.clone(),
            credentials: svc.credentials.as_ref().map(|c| (c.uid, c.gid, c.groups.clone())),
            isolation: Isolation::Session,
            stdio: Stdio3::Piped { stdout: out_w.into(), stderr: err_w.into() },
        };
        let child = self.reaper.spawn(spec)?;
        tokio::spawn(forward(out_r.into(), Stream::Stdout, self.log.clone(), self.sink.clone()));
        tokio::spawn(forward(err_r.into(), Stream::Stderr, self.log.clone(), self.sink.clone()));
        Ok(child)
    }

    /// The main process exited on its own; whatever it left in its group
    /// gets the stop signal now and SIGKILL after stop_timeout, in the
    /// background, so the restart is not delayed.
    fn clean_group(&self, pgid: Pgid) {
        if !pgid.alive() {
            return;
        }
        let name: Arc<str> = self.log.name.clone();
        let (sig, timeout) = (self.service.stop_signal, self.service.stop_timeout);
        tokio::spawn(async move {
            tracing::debug!("unit {name}: signalling leftovers of process group {pgid}");
            let _ = pgid.signal(sig);
            if !wait_group_gone(pgid, Instant::now() + timeout).await {
                tracing::warn!("unit {name}: leftovers of process group {pgid} ignored {sig}; sending SIGKILL");
                let _ = pgid.signal(Signal::KILL);
            }
        });
    }

    /// Stops the running process and reports `stopped`.
    async fn stop(
        &mut self,
        status: &mut UnitStatus,
        pid: Pid,
        exit: tokio::sync::oneshot::Receiver<Termination>,
        deadline: Instant,
    ) {
        let sig = self.service.stop_signal;
        tracing::info!("unit {}: stopping (sending {sig} to process group {pid})", self.name());
        self.report(status, State::Stopping, Some(pid), None).await;
        let (term, reason) = self.terminate(pid, exit, deadline).await;
        status.killed_at_deadline = reason.as_deref().is_some_and(|r| r.contains(BUDGET_RAN_OUT));
        if term.is_some() {
            status.last_exit = term;
        }
        tracing::info!("unit {} stopped", self.name());
        self.report(status, State::Stopped, None, reason).await;
    }

    /// stop_signal to the group, SIGKILL at stop_timeout or `deadline`,
    /// whichever comes first; also SIGKILL when the main process exited but
    /// others of its group linger. Returns the main process's termination
    /// and, when SIGKILL was needed, why.
    async fn terminate(
        &mut self,
        pid: Pid,
        mut exit: tokio::sync::oneshot::Receiver<Termination>,
        deadline: Instant,
    ) -> (Option<Termination>, Option<String>) {
        let svc = self.service.clone();
        let pgid = Pgid::of_leader(pid);
        if let Err(e) = pgid.signal(svc.stop_signal) {
            tracing::warn!("unit {}: cannot signal process group {pgid}: {e}", self.name());
        }
        let own_limit = Instant::now() + svc.stop_timeout;
        let mut kill_at = own_limit.min(deadline);
        let mut hurried = false;
        let mut term = None;
        let mut timed_out = false;
        while term.is_none() {
            tokio::select! {
                t = &mut exit => { term = Some(t.ok()); }
                _ = sleep_until(kill_at.into()) => { timed_out = true; break; }
                cmd = self.cmds.recv() => match cmd {
                    Some(UnitCmd::Hurry { deadline }) if deadline < kill_at => {
                        kill_at = deadline;
                        hurried = true;
                    }
                    Some(UnitCmd::Stop { deadline }) => kill_at = kill_at.min(deadline),
                    _ => {}
                },
            }
        }
        if !timed_out && !wait_group_gone(pgid, kill_at).await {
            timed_out = true;
        }
        let mut reason = None;
        if timed_out {
            let why = if hurried {
                "the stop was hurried (a second stop signal)".to_string()
            } else if kill_at < own_limit {
                BUDGET_RAN_OUT.to_string()
            } else {
                format!("stop_timeout {} passed", humantime::format_duration(svc.stop_timeout))
            };
            tracing::warn!("unit {}: sending SIGKILL to process group {pgid}: {why}", self.name());
            let _ = pgid.signal(Signal::KILL);
            reason = Some(format!("killed with SIGKILL: {why}"));
            if term.is_none() {
                match tokio::time::timeout(Duration::from_secs(5), exit).await {
                    Ok(t) => term = Some(t.ok()),
                    Err(_) => {
                        tracing::error!("unit {}: pid {pid} did not die after SIGKILL", self.name());
                        reason = Some(format!("pid {pid} did not die after SIGKILL"));
                    }
                }
            }
        }
        (term.flatten(), reason)
    }
}

const BUDGET_RAN_OUT: &str = "the shutdown budget ran out";

async fn next_result(task: &mut Option<probe::ProbeTask>) -> Option<Result<(), String>> {
    match task {
        Some(t) => t.results.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_notify(socket: Option<&NotifySocket>) -> std::io::Result<notify::NotifyMessage> {
    match socket {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits until no member of the group is left, or `until`. Polls with a
/// short, growing interval: only ever runs while a unit is stopping.
async fn wait_group_gone(pgid: Pgid, until: Instant) -> bool {
    let mut pause = Duration::from_millis(2);
    loop {
        if !pgid.alive() {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        tokio::time::sleep(pause.min(until - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
