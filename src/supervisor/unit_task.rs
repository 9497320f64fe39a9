//! The per-unit actor. It owns its process (spawn, exit, stop escalation),
//! its restart timing and its log forwarders, and reports every state
//! change to the manager as a full [`UnitStatus`]. It acts only on the
//! manager's commands; it never looks at other units.

use super::backoff::{restart_delay, StartLimit};
use super::state::{after_exit, AfterExit, State};
use crate::config::unit::{Service, ServiceKind};
use crate::logs::forward::{forward, UnitLog};
use crate::logs::{LogSink, Stream};
use crate::process::reaper::Spawned;
use crate::process::{Isolation, Pgid, Pid, Reaper, Signal, SpawnSpec, Stdio3, Termination};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        }
    }
}

pub struct UnitEvent {
    pub index: usize,
    pub status: UnitStatus,
}

pub struct UnitTask {
    pub index: usize,
    pub service: Service,
    pub log: UnitLog,
    pub reaper: Reaper,
    pub sink: LogSink,
    pub events: mpsc::Sender<UnitEvent>,
    pub cmds: mpsc::Receiver<UnitCmd>,
}

/// How waiting for a running process ended.
enum Outcome {
    Exited(Termination),
    StopRequested(Instant),
    ManagerGone,
}

impl UnitTask {
    pub async fn run(mut self) {
        let mut status = UnitStatus::new(State::Inactive, None);
        let mut limit = StartLimit::new(
            self.service.start_limit_burst,
            self.service.start_limit_interval,
        );
        while let Some(cmd) = self.cmds.recv().await {
            match cmd {
                UnitCmd::Start => {
                    limit.reset();
                    self.run_until_settled(&mut status, &mut limit).await;
                }
                UnitCmd::Stop { .. }
                    if status.state != State::Stopped && !status.state.is_settled() =>
                {
                    self.report(&mut status, State::Stopped, None, None).await;
                }
                UnitCmd::Stop { .. } | UnitCmd::Hurry { .. } => {}
            }
        }
    }

    fn name(&self) -> &str {
        &self.log.name
    }

    async fn report(
        &self,
        status: &mut UnitStatus,
        state: State,
        pid: Option<Pid>,
        reason: Option<String>,
    ) {
        if status.state != state {
            status.since = SystemTime::now();
        }
        status.state = state;
        status.pid = pid;
        status.reason = reason;
        let _ = self
            .events
            .send(UnitEvent {
                index: self.index,
                status: status.clone(),
            })
            .await;
    }

    /// Starts the unit and keeps it running per its restart policy until it
    /// is done, failed for good, or stopped.
    async fn run_until_settled(&mut self, status: &mut UnitStatus, limit: &mut StartLimit) {
        let svc = self.service.clone();
        let mut failures: u32 = 0;
        loop {
            if !limit.try_start(Instant::now()) {
                let why = format!(
                    "{}start limit reached ({} starts within {})",
                    status
                        .last_exit
                        .map(|t| format!("{t}; "))
                        .unwrap_or_default(),
                    svc.start_limit_burst,
                    humantime::format_duration(svc.start_limit_interval)
                );
                tracing::error!("unit {} failed for good: {why}", self.name());
                self.report(status, State::Failed, None, Some(why)).await;
                return;
            }
            let child = match self.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let why = format!("failed to start {}: {e}", svc.program.display());
                    tracing::error!("unit {}: {why}", self.name());
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
                ServiceKind::Simple => State::Running,
                ServiceKind::Oneshot => State::Starting,
            };
            self.report(status, up_state, Some(pid), None).await;
            let up_since = Instant::now();
            let mut exit = child.exit;
            let term = match self.wait_running(&mut exit).await {
                Outcome::Exited(t) => t,
                Outcome::StopRequested(deadline) => {
                    self.stop(status, pid, exit, deadline).await;
                    return;
                }
                Outcome::ManagerGone => {
                    self.stop(status, pid, exit, Instant::now() + svc.stop_timeout)
                        .await;
                    return;
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
                    self.report(status, State::Exited, None, Some(term.to_string()))
                        .await;
                    return;
                }
                AfterExit::Fail => {
                    tracing::error!(
                        "unit {} {term}; failed for good (restart = \"no\")",
                        self.name()
                    );
                    self.report(status, State::Failed, None, Some(term.to_string()))
                        .await;
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
        self.report(
            status,
            State::Starting,
            None,
            Some(format!("{why}, restarting in {shown}")),
        )
        .await;
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

    async fn wait_running(
        &mut self,
        exit: &mut tokio::sync::oneshot::Receiver<Termination>,
    ) -> Outcome {
        loop {
            tokio::select! {
                term = &mut *exit => return match term {
                    Ok(t) => Outcome::Exited(t),
                    // The reaper is gone: only at process exit.
                    Err(_) => Outcome::ManagerGone,
                },
                cmd = self.cmds.recv() => match cmd {
                    Some(UnitCmd::Stop { deadline }) => return Outcome::StopRequested(deadline),
                    None => return Outcome::ManagerGone,
                    Some(_) => {}
                },
            }
        }
    }

    fn spawn(&self) -> std::io::Result<Spawned> {
        let svc = &self.service;
        if let Some(dir) = &svc.working_dir {
            if !dir.is_dir() {
                return Err(std::io::Error::other(format!(
                    "working_dir {} is not a directory",
                    dir.display()
                )));
            }
        }
        let (out_r, out_w) = std::io::pipe()?;
        let (err_r, err_w) = std::io::pipe()?;
        let spec = SpawnSpec {
            program: svc.program.clone(),
            argv: svc.argv.clone(),
            env: Some(svc.env.clone()),
            working_dir: svc.working_dir.clone(),
            credentials: svc
                .credentials
                .as_ref()
                .map(|c| (c.uid, c.gid, c.groups.clone())),
            isolation: Isolation::Session,
            stdio: Stdio3::Piped {
                stdout: out_w.into(),
                stderr: err_w.into(),
            },
        };
        let child = self.reaper.spawn(spec)?;
        tokio::spawn(forward(
            out_r.into(),
            Stream::Stdout,
            self.log.clone(),
            self.sink.clone(),
        ));
        tokio::spawn(forward(
            err_r.into(),
            Stream::Stderr,
            self.log.clone(),
            self.sink.clone(),
        ));
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
                tracing::warn!(
                    "unit {name}: leftovers of process group {pgid} ignored {sig}; sending SIGKILL"
                );
                let _ = pgid.signal(Signal::KILL);
            }
        });
    }

    /// Stops the running process: stop_signal to the group, SIGKILL at
    /// stop_timeout or `deadline`, whichever comes first; also SIGKILL when
    /// the main process exited but others of its group linger.
    async fn stop(
        &mut self,
        status: &mut UnitStatus,
        pid: Pid,
        mut exit: tokio::sync::oneshot::Receiver<Termination>,
        deadline: Instant,
    ) {
        let svc = self.service.clone();
        let pgid = Pgid::of_leader(pid);
        tracing::info!(
            "unit {}: stopping (sending {} to process group {pgid})",
            self.name(),
            svc.stop_signal
        );
        status.killed_at_deadline = false;
        self.report(status, State::Stopping, Some(pid), None).await;
        if let Err(e) = pgid.signal(svc.stop_signal) {
            tracing::warn!(
                "unit {}: cannot signal process group {pgid}: {e}",
                self.name()
            );
        }
        let own_limit = Instant::now() + svc.stop_timeout;
        let mut kill_at = own_limit.min(deadline);
        let mut term = None;
        let mut timed_out = false;
        while term.is_none() {
            tokio::select! {
                t = &mut exit => { term = Some(t.ok()); }
                _ = sleep_until(kill_at.into()) => { timed_out = true; break; }
                cmd = self.cmds.recv() => if let Some(UnitCmd::Hurry { deadline } | UnitCmd::Stop { deadline }) = cmd {
                    kill_at = kill_at.min(deadline);
                },
            }
        }
        if !timed_out && !wait_group_gone(pgid, kill_at).await {
            timed_out = true;
        }
        let mut reason = None;
        if timed_out {
            let by_deadline = kill_at < own_limit;
            let why = if by_deadline {
                "the shutdown budget ran out".to_string()
            } else {
                format!(
                    "stop_timeout {} passed",
                    humantime::format_duration(svc.stop_timeout)
                )
            };
            tracing::warn!(
                "unit {}: sending SIGKILL to process group {pgid}: {why}",
                self.name()
            );
            let _ = pgid.signal(Signal::KILL);
            status.killed_at_deadline = by_deadline;
            reason = Some(format!("killed with SIGKILL: {why}"));
            if term.is_none() {
                match tokio::time::timeout(Duration::from_secs(5), exit).await {
                    Ok(t) => term = Some(t.ok()),
                    Err(_) => {
                        tracing::error!(
                            "unit {}: pid {pid} did not die after SIGKILL",
                            self.name()
                        );
                        reason = Some(format!("pid {pid} did not die after SIGKILL"));
                    }
                }
            }
        }
        if let Some(Some(t)) = term {
            status.last_exit = Some(t);
        }
        tracing::info!("unit {} stopped", self.name());
        self.report(status, State::Stopped, None, reason).await;
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
