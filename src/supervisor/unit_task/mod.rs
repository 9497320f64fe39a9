//! The per-unit actor. It owns its process (spawn, exit, stop escalation
//! after draining the routers' requests to it, the cleanup of what a run
//! leaves behind), its restart timing, its probes and its memory_max
//! check, and reports every state change to the manager as a full
//! [`UnitStatus`]; when it fails for good by itself, that status carries
//! how its runs within the start-limit window went ([`Failure`]). It acts
//! only on the manager's commands; it never looks at other units.
//! Everything it does to processes goes through the
//! [`Child`] seam ([`child`]), so `tests` run it against a fake child under
//! paused time.

mod child;
#[cfg(test)]
mod tests;

use super::backoff::{restart_delay, StartLimit};
use super::diagnosis::{exit_cause, oom_rise};
use super::state::{after_run, AfterExit, KillReason, RunEnd, State};
use crate::api::{Failure, Readiness, RunSummary, Traffic};
use crate::config::size::format_bytes;
use crate::config::unit::{MemoryLimit, Service, ServiceKind, MEMORY_CHECKS_OVER};
use crate::logs::forward::UnitLog;
use crate::logs::watch::LineWatch;
use crate::logs::LogSink;
use crate::probe::notify::{self, NotifySocket};
use crate::probe::{ProbeResult, ProbeTask};
use crate::process::{Pgid, Pid, Reaper, Signal, Termination};
use child::{wait_until, Child, Output, RealChild, RunTag};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

#[derive(Debug)]
pub enum UnitCmd {
    Start,
    /// Stop now; SIGKILL the group at the latest at `deadline`.
    Stop {
        deadline: std::time::Instant,
    },
    /// Bring a running stop's SIGKILL forward to `deadline`.
    Hurry {
        deadline: std::time::Instant,
    },
    /// A router unit's new definition, applied while it runs.
    Reconfigure(Box<super::router_task::RouterChange>),
}

pub use crate::api::UnitStatus;

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
    /// The routers' requests to this unit, waited for before a stop signal.
    pub traffic: Arc<Traffic>,
    pub readiness: watch::Receiver<Readiness>,
}

impl UnitTask {
    pub async fn run(self) {
        let UnitTask { id, service, log, reaper, sink, events, cmds, traffic, readiness } = self;
        let (name, ready_match) = (log.name.clone(), log.ready_match.clone());
        let child = RealChild { service: service.clone(), log, sink, reaper, traffic, readiness };
        Actor { id, name, service, child: Arc::new(child), ready_match, events, cmds }.run().await;
    }
}

/// The actor proper, generic over how it reaches its process.
struct Actor<C: Child> {
    id: u64,
    name: Arc<str>,
    service: Arc<Service>,
    child: Arc<C>,
    ready_match: Option<Arc<LineWatch>>,
    events: mpsc::Sender<UnitEvent>,
    cmds: mpsc::Receiver<UnitCmd>,
}

/// How supervising a running process ended.
enum Outcome {
    Exited(Termination),
    /// Stop; SIGKILL at stop_timeout, or earlier at the deadline if any.
    StopRequested(Option<Instant>),
    /// Not ready by start_timeout, or liveness failed: stop it and count a
    /// failure.
    Unhealthy(String),
    /// Above memory_max for [`MEMORY_CHECKS_OVER`] checks in a row: stop it
    /// gracefully and start it again at once, neither a failure nor a start
    /// counted by the start limit.
    MemoryExceeded(String),
}

/// How a stop went.
struct Stopped {
    term: Option<Termination>,
    killed: Option<KillReason>,
    /// What the user should read: why SIGKILL was needed, or that even it
    /// did not help.
    reason: Option<String>,
    /// The manager asked for a stop meanwhile: the unit must not start
    /// again by itself.
    stop_requested: bool,
}

/// flowinit's own retry delay when it is short of file descriptors,
/// memory or processes: first and longest.
const SHORTAGE_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// At most one log line per this interval about probe attempts skipped
/// for flowinit's own shortage.
const SHORTAGE_NOTE_EVERY: Duration = Duration::from_secs(30);
/// How long a unit that failed for good waits for the last lines of its
/// run to be read before it reports the failure (whose block shows them).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// The runs since the last start asked for (by the manager), for the
/// report of a unit that fails for good.
#[derive(Default)]
struct History {
    /// Oldest first, at most start_limit_burst of them: never more than
    /// the start limit's window holds.
    runs: VecDeque<RunSummary>,
    /// How the last run ended, as the log said it.
    last_why: Option<String>,
    /// The last run's output forwarders.
    output: Option<Output>,
}

impl History {
    fn ended(&mut self, run: RunSummary, why: &str, output: Option<Output>, keep: u32) {
        self.runs.push_back(run);
        while self.runs.len() > keep.max(1) as usize {
            self.runs.pop_front();
        }
        self.last_why = Some(why.to_string());
        self.output = output;
    }

    /// Waits (at most [`OUTPUT_GRACE`]) until the last run's lines are in
    /// the ring.
    async fn read_output(&mut self) {
        if let Some(output) = self.output.take() {
            output.read_all(OUTPUT_GRACE).await;
        }
    }

    /// The runs of the start limit's window, as of `now`.
    fn failure(&self, svc: &Service, limit: &StartLimit, now: Instant, no_restart: bool) -> Arc<Failure> {
        let runs: Vec<RunSummary> =
            self.runs.iter().skip(self.runs.len().saturating_sub(limit.count())).cloned().collect();
        let span = limit.first().map_or(Duration::ZERO, |t| now.into_std().saturating_duration_since(t));
        Arc::new(Failure {
            runs,
            span,
            start_limit_burst: svc.start_limit_burst,
            start_limit_interval: svc.start_limit_interval,
            no_restart,
        })
    }
}

fn shown(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

impl<C: Child> Actor<C> {
    async fn run(mut self) {
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
                _ => {}
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
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
        let mut shortage_delay: Option<Duration> = None;
        // Why the last run was restarted for memory: the next start is not
        // counted by the start limit, and says why it happened.
        let mut memory_restart: Option<String> = None;
        let mut history = History::default();
        status.failure = None;
        let notify = match svc.kind {
            ServiceKind::Notify => match NotifySocket::bind(self.name()) {
                Ok(s) => Some(s),
                Err(e) => {
                    let why = format!("cannot create its notify socket: {e}");
                    tracing::error!("unit {}: {why}", self.name());
                    status.failure = Some(history.failure(&svc, limit, Instant::now(), false));
                    self.report(status, State::Failed, None, Some(why)).await;
                    return;
                }
            },
            _ => None,
        };
        loop {
            let restarted_for = memory_restart.take();
            if restarted_for.is_none() && !limit.try_start(Instant::now().into_std()) {
                let why = format!(
                    "{}start limit reached ({} starts within {})",
                    history.last_why.as_deref().map(|w| format!("{w}; ")).unwrap_or_default(),
                    svc.start_limit_burst,
                    humantime::format_duration(svc.start_limit_interval)
                );
                // Logged by the manager, in the block about the failure.
                history.read_output().await;
                status.failure = Some(history.failure(&svc, limit, Instant::now(), false));
                self.report(status, State::Failed, None, Some(why)).await;
                return;
            }
            if let Some(m) = &self.ready_match {
                m.arm();
            }
            let run = RunTag::next(self.name());
            let extra_env = notify.iter().map(|n| ("NOTIFY_SOCKET".into(), n.env_value.clone().into())).collect();
            let oom_before = self.child.oom_kills();
            let (spawned, output) = match self.child.spawn(&run, extra_env) {
                Ok(c) => c,
                Err(e) => {
                    if let Some(shortage) = e.resource_shortage() {
                        // Not the unit's failure: the start is taken back and
                        // neither the restart count nor its backoff moves.
                        limit.take_back();
                        let (first, max) = SHORTAGE_RETRY;
                        let delay = shortage_delay.map_or(first, |d| (d * 2).min(max));
                        shortage_delay = Some(delay);
                        let why = format!(
                            "flowinit itself is {shortage} while starting unit {}; retrying in {}",
                            self.name(),
                            shown(delay)
                        );
                        tracing::error!("{why} ({e})");
                        self.report(status, State::Starting, None, Some(why)).await;
                        if !self.wait_or_stop(status, Instant::now() + delay).await {
                            return;
                        }
                        continue;
                    }
                    let why = format!("failed to start {}: {e}", svc.program.display());
                    tracing::error!("unit {}: {why}", self.name());
                    history.ended(RunSummary { ran: None, end: why.clone() }, &why, None, svc.start_limit_burst);
                    let end = RunEnd::SpawnFailed;
                    if !self.after(status, &mut failures, end, None, why, &mut history, limit).await {
                        return;
                    }
                    continue;
                }
            };
            // How long the run lasted counts from here, not from after the
            // report below (which may wait for the manager).
            let up_since = Instant::now();
            shortage_delay = None;
            let pid = spawned.pid;
            let pgid = Pgid::of_leader(pid);
            tracing::info!("unit {} started (pid {pid})", self.name());
            let up_state = match svc.kind {
                ServiceKind::Simple if svc.readiness.is_none() => State::Running,
                _ => State::Starting,
            };
            status.probe_error = None;
            status.status_text = None;
            status.main_pid = None;
            status.started_at = Some(SystemTime::now());
            status.run = Some(run.0.as_str().into());
            let reason = restarted_for.map(|why| format!("restarted after {why}"));
            self.report(status, up_state, Some(pid), reason).await;
            let mut exit = spawned.exit;
            let (end, why) = match self.supervise(status, pid, &run, &mut exit, notify.as_ref()).await {
                Outcome::Exited(term) => {
                    let ran = up_since.elapsed();
                    // A kill of the OOM killer's explains one death only.
                    let rise = oom_rise(oom_before, self.child.oom_kills())
                        .filter(|r| !term.success() && self.child.take_oom_kill(r.before, r.after));
                    let why = exit_cause(term, rise);
                    status.last_exit = Some(term);
                    self.clean_up(pgid, Some(pgid), run);
                    let summary = RunSummary { ran: Some(ran), end: term.to_string() };
                    history.ended(summary, &why, Some(output), svc.start_limit_burst);
                    (RunEnd::Exited(term), why)
                }
                Outcome::StopRequested(deadline) => {
                    self.stop(status, pid, exit, deadline, run).await;
                    return;
                }
                Outcome::Unhealthy(why) => {
                    tracing::error!("unit {}: {why}; stopping it", self.name());
                    if self.stop_for(status, &why, pid, exit, run, false).await {
                        return;
                    }
                    let summary = RunSummary { ran: Some(up_since.elapsed()), end: why.clone() };
                    history.ended(summary, &why, Some(output), svc.start_limit_burst);
                    (RunEnd::Unhealthy, why)
                }
                Outcome::MemoryExceeded(why) => {
                    tracing::warn!("unit {}: {why}; restarting it", self.name());
                    status.restarts += 1;
                    status.memory_restarts += 1;
                    if self.stop_for(status, &why, pid, exit, run, true).await {
                        return;
                    }
                    memory_restart = Some(why);
                    continue;
                }
            };
            if !self.after(status, &mut failures, end, Some(up_since), why, &mut history, limit).await {
                return;
            }
        }
    }

    /// The after-failure rule, in one place: a run that stayed up for
    /// restart_delay_max starts the failure count afresh; then the run is
    /// done, failed for good, or backed off from. True when the unit should
    /// start again.
    #[expect(clippy::too_many_arguments, reason = "the run's facts and the unit's counters, all used once")]
    async fn after(
        &mut self,
        status: &mut UnitStatus,
        failures: &mut u32,
        end: RunEnd,
        up_since: Option<Instant>,
        why: String,
        history: &mut History,
        limit: &StartLimit,
    ) -> bool {
        let svc = self.service.clone();
        if up_since.is_some_and(|t| t.elapsed() >= svc.restart_delay_max) {
            *failures = 0;
        }
        match after_run(svc.kind, svc.restart, end) {
            AfterExit::Done => {
                tracing::info!("unit {} {why}", self.name());
                self.report(status, State::Exited, None, Some(why)).await;
                false
            }
            AfterExit::Fail => {
                // Logged by the manager, in the block about the failure.
                history.read_output().await;
                status.failure = Some(history.failure(&svc, limit, Instant::now(), true));
                self.report(status, State::Failed, None, Some(why)).await;
                false
            }
            AfterExit::Restart { failed } => {
                if failed {
                    *failures += 1;
                }
                let delay = restart_delay(svc.restart_delay, svc.restart_delay_max, (*failures).max(1));
                if !limit.allows_at(Instant::now().into_std() + delay) {
                    // The start after the delay would be over the limit:
                    // failed for good now (at the loop's check), not after
                    // a "restarting in 8s" that never comes.
                    return true;
                }
                self.backoff(status, delay, why).await
            }
        }
    }

    /// Waits out the restart delay. False when a stop came meanwhile (the
    /// unit is then reported stopped) or the manager went away.
    async fn backoff(&mut self, status: &mut UnitStatus, delay: Duration, why: String) -> bool {
        let shown = shown(delay);
        tracing::warn!("unit {} {why}, restarting in {shown}", self.name());
        status.restarts += 1;
        self.report(status, State::Starting, None, Some(format!("{why}, restarting in {shown}"))).await;
        self.wait_or_stop(status, Instant::now() + delay).await
    }

    /// Sleeps until `until` with no process running. False when a stop
    /// came meanwhile (the unit is then reported stopped) or the manager
    /// went away.
    async fn wait_or_stop(&mut self, status: &mut UnitStatus, until: Instant) -> bool {
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
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

    /// Logs, at most every [`SHORTAGE_NOTE_EVERY`], a probe attempt skipped
    /// because flowinit itself was short of something.
    fn note_skipped_attempt(&self, last: &mut Option<Instant>, which: &str, e: &crate::probe::ProbeError) {
        if last.is_none_or(|t| t.elapsed() >= SHORTAGE_NOTE_EVERY) {
            tracing::warn!("unit {}: {which} probe attempt skipped, not counted: {e}", self.name());
            *last = Some(Instant::now());
        }
    }

    /// Watches the running process until it exits, a stop is requested,
    /// or it proves unhealthy: runs the readiness probe (or waits for
    /// READY=1) until ready, then the liveness probe.
    async fn supervise(
        &mut self,
        status: &mut UnitStatus,
        pid: Pid,
        run: &RunTag,
        exit: &mut oneshot::Receiver<Termination>,
        notify: Option<&NotifySocket>,
    ) -> Outcome {
        let svc = self.service.clone();
        let child = self.child.clone();
        let mut ready = !svc.waits_for_ready();
        let start_timeout = svc.readiness.as_ref().map_or(svc.notify_timeout, |r| r.start_timeout);
        let start_deadline = Instant::now() + start_timeout;
        let mut readiness =
            svc.readiness.as_ref().map(|r| child.start_probe(&r.kind, r.interval, r.timeout, self.ready_match.clone()));
        let start_liveness = || svc.liveness.as_ref().map(|l| child.start_probe(&l.kind, l.interval, l.timeout, None));
        let mut liveness = if ready { start_liveness() } else { None };
        let mut live_failures = 0u32;
        let mut shortage_noted = None;
        let pgrp = pid.raw();
        let mut memory = svc.memory.map(MemoryCheck::new);
        loop {
            tokio::select! {
                // A stop queued before the exit was seen wins: at the end
                // of the shutdown budget the manager queues Stop and then
                // SIGKILLs every descendant, and that death is not a crash
                // to restart from.
                biased;
                cmd = self.cmds.recv() => match cmd {
                    Some(UnitCmd::Stop { deadline }) => return Outcome::StopRequested(Some(Instant::from_std(deadline))),
                    None => return Outcome::StopRequested(None),
                    Some(_) => {}
                },
                term = &mut *exit => return match term {
                    Ok(t) => Outcome::Exited(t),
                    Err(_) => Outcome::StopRequested(None),
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
                    Err(e) if e.is_resource() => self.note_skipped_attempt(&mut shortage_noted, "readiness", &e),
                    Err(e) => {
                        let e = e.to_string();
                        if status.probe_error.as_deref() != Some(e.as_str()) {
                            tracing::debug!("unit {}: readiness probe: {e}", self.name());
                            status.probe_error = Some(e.clone());
                            self.report(status, State::Starting, Some(pid), Some(format!("probe: {e}"))).await;
                        }
                    }
                },
                _ = sleep_until(start_deadline), if !ready => {
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
                    Err(e) if e.is_resource() => self.note_skipped_attempt(&mut shortage_noted, "liveness", &e),
                    Err(e) => {
                        live_failures += 1;
                        let limit = svc.liveness.as_ref().map_or(1, |l| l.failures);
                        tracing::warn!("unit {}: liveness probe failed ({live_failures}/{limit}): {e}", self.name());
                        status.probe_error = Some(e.to_string());
                        if live_failures >= limit {
                            return Outcome::Unhealthy(format!("liveness probe failed {limit} times in a row: {e}"));
                        }
                        let (state, reason) = (status.state, status.reason.clone());
                        self.report(status, state, Some(pid), reason).await;
                    }
                },
                _ = memory_due(&memory) => {
                    if let Some(m) = memory.as_mut() {
                        let rss = child.usage(pid, run).map(|u| u.rss_bytes);
                        if let Some(why) = m.checked(rss, self.name()) {
                            return Outcome::MemoryExceeded(why);
                        }
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

    /// A run ended: whatever it left behind goes too, in the background so
    /// a restart is not delayed. The group (`leftovers`, when the main
    /// process exited on its own) and the run's processes that escaped it
    /// get stop_signal, and SIGKILL after stop_timeout.
    fn clean_up(&self, pgid: Pgid, leftovers: Option<Pgid>, run: RunTag) {
        let (child, name) = (self.child.clone(), self.name.clone());
        let (sig, timeout) = (self.service.stop_signal, self.service.stop_timeout);
        tokio::spawn(async move {
            let group = leftovers.filter(|g| child.group_alive(*g));
            if let Some(g) = group {
                tracing::debug!("unit {name}: signalling leftovers of process group {g}");
                let _ = child.signal_group(g, sig);
            }
            let escaped = child.signal_escaped(&run, pgid, Some(sig));
            if escaped > 0 {
                tracing::warn!(
                    "unit {name}: {escaped} process(es) of run {} left its process group; sent {sig}",
                    run.0
                );
            }
            if group.is_none() && escaped == 0 {
                return;
            }
            let gone = || !group.is_some_and(|g| child.group_alive(g)) && child.signal_escaped(&run, pgid, None) == 0;
            if !wait_until(Instant::now() + timeout, gone).await {
                tracing::warn!("unit {name}: leftovers of run {} ignored {sig}; sending SIGKILL", run.0);
                // Checked again: an empty group's number is free for reuse.
                if let Some(g) = group.filter(|g| child.group_alive(*g)) {
                    let _ = child.signal_group(g, Signal::KILL);
                }
                child.signal_escaped(&run, pgid, Some(Signal::KILL));
            }
        });
    }

    /// Stops the running process and reports `stopped`.
    /// Stops the run for `why` (a failed liveness check, memory_max) before
    /// the unit goes on by its own rules; `drain`: wait for the routers'
    /// requests to it first. True when an operator's stop came meanwhile:
    /// the unit is then reported stopped and stays so.
    async fn stop_for(
        &mut self,
        status: &mut UnitStatus,
        why: &str,
        pid: Pid,
        exit: oneshot::Receiver<Termination>,
        run: RunTag,
        drain: bool,
    ) -> bool {
        self.report(status, State::Stopping, Some(pid), Some(why.to_string())).await;
        let stopped = self.terminate(pid, exit, None, drain).await;
        status.last_exit = stopped.term;
        status.killed = stopped.killed;
        self.clean_up(Pgid::of_leader(pid), None, run);
        if stopped.stop_requested {
            tracing::info!("unit {} stopped", self.name());
            self.report(status, State::Stopped, None, stopped.reason).await;
        }
        stopped.stop_requested
    }

    async fn stop(
        &mut self,
        status: &mut UnitStatus,
        pid: Pid,
        exit: oneshot::Receiver<Termination>,
        deadline: Option<Instant>,
        run: RunTag,
    ) {
        let sig = self.service.stop_signal;
        tracing::info!("unit {}: stopping (sending {sig} to process group {pid})", self.name());
        self.report(status, State::Stopping, Some(pid), None).await;
        // Without a deadline the manager is gone: no one publishes states.
        let stopped = self.terminate(pid, exit, deadline, deadline.is_some()).await;
        status.killed = stopped.killed;
        if stopped.term.is_some() {
            status.last_exit = stopped.term;
        }
        self.clean_up(Pgid::of_leader(pid), None, run);
        tracing::info!("unit {} stopped", self.name());
        self.report(status, State::Stopped, None, stopped.reason).await;
    }

    /// Waits, before the stop signal, until the routers' requests to the
    /// unit are done (it was reported `stopping`: they answer 503 from
    /// then on), at most stop_timeout or until `deadline`. Returns the
    /// exit, if the process ended meanwhile, the deadline as hurried or
    /// stopped meanwhile, whether it was hurried, and whether a stop was
    /// requested.
    async fn drain(
        &mut self,
        exit: &mut oneshot::Receiver<Termination>,
        mut deadline: Option<Instant>,
    ) -> (Option<Option<Termination>>, Option<Instant>, bool, bool) {
        let child = self.child.clone();
        let started = Instant::now();
        let own = started + self.service.stop_timeout;
        let mut until = deadline.map_or(own, |d| d.min(own));
        let (mut hurried, mut stop_requested) = (false, false);
        let mut pause = Duration::from_millis(2);
        loop {
            if child.drained() {
                break;
            }
            let now = Instant::now();
            if now >= until {
                tracing::warn!(
                    "unit {}: requests through the router still in flight after {}; stopping it anyway",
                    self.name(),
                    shown(now - started)
                );
                break;
            }
            tokio::select! {
                t = &mut *exit => return (Some(t.ok()), deadline, hurried, stop_requested),
                _ = sleep_until(now + pause.min(until - now)) => {}
                cmd = self.cmds.recv() => match cmd {
                    Some(UnitCmd::Hurry { deadline: d }) | Some(UnitCmd::Stop { deadline: d }) => {
                        let d = Instant::from_std(d);
                        stop_requested |= !matches!(cmd, Some(UnitCmd::Hurry { .. }));
                        hurried |= matches!(cmd, Some(UnitCmd::Hurry { .. })) && d < until;
                        until = until.min(d);
                        deadline = Some(deadline.map_or(d, |x| x.min(d)));
                    }
                    None => until = Instant::now(),
                    Some(_) => {}
                },
            }
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        (None, deadline, hurried, stop_requested)
    }

    /// stop_signal to the group, SIGKILL at stop_timeout or `deadline`,
    /// whichever comes first (or earlier when hurried); also SIGKILL when
    /// the main process exited but others of its group linger. With
    /// `drain`, the routers' requests to the unit finish first.
    async fn terminate(
        &mut self,
        pid: Pid,
        mut exit: oneshot::Receiver<Termination>,
        deadline: Option<Instant>,
        drain: bool,
    ) -> Stopped {
        let svc = self.service.clone();
        let child = self.child.clone();
        let pgid = Pgid::of_leader(pid);
        let (mut term, deadline, mut hurried, mut stop_requested) = match drain {
            true => self.drain(&mut exit, deadline).await,
            false => (None, deadline, false, false),
        };
        // After the main process exited, the group may be gone and its
        // number free for reuse: signal it only while it exists.
        if term.is_none() || child.group_alive(pgid) {
            if let Err(e) = child.signal_group(pgid, svc.stop_signal) {
                tracing::warn!("unit {}: cannot signal process group {pgid}: {e}", self.name());
            }
        }
        let signalled = Instant::now();
        let own_limit = signalled + svc.stop_timeout;
        let mut kill_at = deadline.map_or(own_limit, |d| d.min(own_limit));
        let mut timed_out = false;
        while term.is_none() {
            tokio::select! {
                t = &mut exit => { term = Some(t.ok()); }
                _ = sleep_until(kill_at) => { timed_out = true; break; }
                cmd = self.cmds.recv() => match cmd {
                    Some(UnitCmd::Hurry { deadline }) if Instant::from_std(deadline) < kill_at => {
                        kill_at = Instant::from_std(deadline);
                        hurried = true;
                    }
                    Some(UnitCmd::Stop { deadline }) => {
                        stop_requested = true;
                        kill_at = kill_at.min(Instant::from_std(deadline));
                    }
                    _ => {}
                },
            }
        }
        if !timed_out && !wait_until(kill_at, || !child.group_alive(pgid)).await {
            timed_out = true;
        }
        let mut stopped = Stopped { term: term.flatten(), killed: None, reason: None, stop_requested };
        if timed_out {
            let killed = if hurried {
                KillReason::Hurried
            } else if kill_at < own_limit {
                KillReason::Budget
            } else {
                KillReason::StopTimeout
            };
            let why = match killed {
                KillReason::Hurried => "the stop was hurried (a second stop signal)".to_string(),
                KillReason::Budget => format!(
                    "the shutdown budget left it {:.1}s (stop_timeout {})",
                    kill_at.saturating_duration_since(signalled).as_secs_f64(),
                    humantime::format_duration(svc.stop_timeout)
                ),
                KillReason::StopTimeout => {
                    format!("stop_timeout {} passed", humantime::format_duration(svc.stop_timeout))
                }
            };
            tracing::warn!("unit {}: sending SIGKILL to process group {pgid}: {why}", self.name());
            let _ = child.signal_group(pgid, Signal::KILL);
            stopped.killed = Some(killed);
            stopped.reason = Some(format!("killed with SIGKILL: {why}"));
            if stopped.term.is_none() {
                match tokio::time::timeout(Duration::from_secs(5), exit).await {
                    Ok(t) => stopped.term = t.ok(),
                    Err(_) => {
                        tracing::error!("unit {}: pid {pid} did not die after SIGKILL", self.name());
                        stopped.reason = Some(format!("pid {pid} did not die after SIGKILL"));
                    }
                }
            }
        }
        stopped
    }
}

async fn next_result(task: &mut Option<ProbeTask>) -> Option<ProbeResult> {
    match task {
        Some(t) => t.results.recv().await,
        None => std::future::pending().await,
    }
}

/// A unit's memory_max check while its process runs: one timer, due every
/// `check_every`, and the number of checks in a row found above the limit.
struct MemoryCheck {
    limit: MemoryLimit,
    next: Instant,
    over: u32,
}

impl MemoryCheck {
    fn new(limit: MemoryLimit) -> MemoryCheck {
        MemoryCheck { limit, next: Instant::now() + limit.check_every, over: 0 }
    }

    /// Takes a check's RSS (None: not measured); schedules the next check.
    /// Returns why the unit must restart, at the third check in a row above
    /// the limit.
    fn checked(&mut self, rss: Option<u64>, unit: &str) -> Option<String> {
        self.next = Instant::now() + self.limit.check_every;
        let max = self.limit.max_bytes;
        match rss {
            Some(rss) if rss > max => {
                self.over += 1;
                tracing::debug!(
                    "unit {unit}: rss {} above memory_max {} ({}/{MEMORY_CHECKS_OVER})",
                    format_bytes(rss),
                    format_bytes(max),
                    self.over
                );
                (self.over >= MEMORY_CHECKS_OVER)
                    .then(|| format!("memory_max exceeded (rss {} > {})", format_bytes(rss), format_bytes(max)))
            }
            _ => {
                self.over = 0;
                None
            }
        }
    }
}

async fn memory_due(check: &Option<MemoryCheck>) {
    match check {
        Some(c) => sleep_until(c.next).await,
        None => std::future::pending().await,
    }
}

async fn recv_notify(socket: Option<&NotifySocket>) -> std::io::Result<notify::NotifyMessage> {
    match socket {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
