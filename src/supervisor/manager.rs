//! The dispatcher: owns what the user sees (one [`UnitStatus`] per unit),
//! starts units when their dependencies allow, propagates failures, and
//! runs the ordered, budgeted shutdown. It talks to unit tasks only by
//! messages and never touches a process itself, except for the final sweep
//! of leftover descendants.

use super::state::State;
use super::unit_task::{UnitCmd, UnitEvent, UnitStatus, UnitTask};
use crate::config::unit::ProbeKind;
use crate::config::{Unit, UnitSet};
use crate::logs::forward::UnitLog;
use crate::logs::{LogSink, RingLog};
use crate::probe::LogMatch;
use crate::process::{tree, Reaper, Signal};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

/// Lines kept per unit for status and logs.
const RING_LINES: usize = 1000;
/// After a second SIGTERM/SIGINT, no stop waits longer than this.
const HURRIED_WAIT: Duration = Duration::from_secs(1);
/// Grace between SIGTERM and SIGKILL for leftover processes at the end.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

pub struct Options {
    pub shutdown_timeout: Duration,
}

struct Slot {
    unit: Unit,
    status: UnitStatus,
    tx: Option<mpsc::Sender<UnitCmd>>,
    start_sent: bool,
    stop_sent: bool,
    /// Set when the manager stopped the unit because a required unit
    /// failed: the unit ends `failed` with this reason, not `stopped`.
    failed_because: Option<String>,
    _log_guard: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Slot {
    /// Nothing running and nothing left to do for shutdown.
    fn is_down(&self) -> bool {
        self.status.state.is_settled() || (self.status.state == State::Inactive && !self.start_sent)
    }
}

struct Shutdown {
    deadline: Instant,
    code: u8,
    hurried: bool,
}

pub struct Manager {
    slots: Vec<Slot>,
    /// dependents[i]: units that are ordered after unit i.
    dependents: Vec<Vec<usize>>,
    events: mpsc::Receiver<UnitEvent>,
    shutdown: Option<Shutdown>,
    opts: Options,
}

impl Manager {
    pub fn new(set: UnitSet, opts: Options, reaper: &Reaper, sink: &LogSink) -> Manager {
        let width = set
            .units
            .iter()
            .map(|u| u.log.prefix.len())
            .max()
            .unwrap_or(0);
        crate::logs::events::set_prefix_width(width);
        let (events_tx, events) = mpsc::channel(1024);
        let index_of = |name: &str| set.units.iter().position(|u| u.name == name);
        let dependents = (0..set.units.len())
            .map(|i| {
                set.units
                    .iter()
                    .enumerate()
                    .filter(|(_, u)| u.ordering_deps().any(|d| index_of(d) == Some(i)))
                    .map(|(j, _)| j)
                    .collect()
            })
            .collect();
        let slots = set
            .units
            .iter()
            .enumerate()
            .map(|(index, unit)| {
                let Some(service) = unit.service.clone().filter(|_| unit.enabled) else {
                    let why = format!("disabled (profile {})", unit.profiles.join(", "));
                    return Slot {
                        unit: unit.clone(),
                        status: UnitStatus::new(State::Disabled, Some(why)),
                        tx: None,
                        start_sent: false,
                        stop_sent: false,
                        failed_because: None,
                        _log_guard: None,
                    };
                };
                let (file, guard) = open_log_file(unit).unzip();
                let log = UnitLog {
                    name: unit.name.as_str().into(),
                    padded_prefix: format!("{:<width$}", unit.log.prefix).into(),
                    ring: Arc::new(RingLog::new(RING_LINES)),
                    file,
                    ready_match: match service.readiness.as_ref().map(|r| &r.kind) {
                        Some(ProbeKind::Log { regex }) => {
                            Some(Arc::new(LogMatch::new(regex.clone())))
                        }
                        _ => None,
                    },
                };
                let (tx, cmds) = mpsc::channel(16);
                let task = UnitTask {
                    index,
                    service: Arc::new(service),
                    log,
                    reaper: reaper.clone(),
                    sink: sink.clone(),
                    events: events_tx.clone(),
                    cmds,
                };
                tokio::spawn(task.run());
                Slot {
                    unit: unit.clone(),
                    status: UnitStatus::new(State::Inactive, None),
                    tx: Some(tx),
                    start_sent: false,
                    stop_sent: false,
                    failed_because: None,
                    _log_guard: guard,
                }
            })
            .collect();
        Manager {
            slots,
            dependents,
            events,
            shutdown: None,
            opts,
        }
    }

    /// Runs until shutdown completes; returns flowinit's exit code.
    pub async fn run(mut self) -> u8 {
        let (mut term, mut int, mut quit, mut hup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            _ => {
                tracing::error!("cannot install signal handlers; refusing to start units");
                return 1;
            }
        };
        self.advance().await;
        loop {
            let deadline = self.shutdown.as_ref().map(|s| s.deadline);
            tokio::select! {
                _ = term.recv() => self.on_stop_signal(Signal::TERM).await,
                _ = int.recv() => self.on_stop_signal(Signal(nix::sys::signal::Signal::SIGINT)).await,
                _ = quit.recv() => self.on_stop_signal(Signal(nix::sys::signal::Signal::SIGQUIT)).await,
                _ = hup.recv() => tracing::warn!("SIGHUP received: reloading is not supported yet; ignored"),
                Some(ev) = self.events.recv() => self.on_event(ev),
                _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    return self.budget_spent().await;
                }
            }
            self.advance().await;
            if let Some(code) = self.finished() {
                self.sweep_leftovers().await;
                tracing::info!("all units stopped; exiting with code {code}");
                return code;
            }
        }
    }

    async fn on_stop_signal(&mut self, sig: Signal) {
        match &mut self.shutdown {
            None => {
                tracing::info!(
                    "{sig} received: stopping all units (budget {})",
                    humantime::format_duration(self.opts.shutdown_timeout)
                );
                self.begin_shutdown(0);
            }
            Some(s) => {
                tracing::warn!(
                    "{sig} received again: cutting every stop wait to {}",
                    humantime::format_duration(HURRIED_WAIT)
                );
                s.hurried = true;
                let deadline = (Instant::now() + HURRIED_WAIT).min(s.deadline);
                for slot in self.slots.iter().filter(|s| s.stop_sent && !s.is_down()) {
                    if let Some(tx) = &slot.tx {
                        let _ = tx.send(UnitCmd::Hurry { deadline }).await;
                    }
                }
            }
        }
    }

    fn begin_shutdown(&mut self, code: u8) {
        if self.shutdown.is_none() {
            self.shutdown = Some(Shutdown {
                deadline: Instant::now() + self.opts.shutdown_timeout,
                code,
                hurried: false,
            });
        }
    }

    fn on_event(&mut self, ev: UnitEvent) {
        let Some(slot) = self.slots.get_mut(ev.index) else {
            return;
        };
        let mut status = ev.status;
        if let (Some(why), true) = (&slot.failed_because, status.state.is_settled()) {
            status.state = State::Failed;
            status.reason = Some(why.clone());
        }
        let newly_failed = status.state == State::Failed && slot.status.state != State::Failed;
        slot.status = status;
        if newly_failed && slot.unit.critical && self.shutdown.is_none() {
            tracing::error!(
                "critical unit {} failed for good ({}); stopping everything",
                slot.unit.name,
                slot.status.reason.as_deref().unwrap_or("no reason")
            );
            self.begin_shutdown(1);
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.unit.name == name)
    }

    /// Sends whatever commands the current states allow.
    async fn advance(&mut self) {
        let mut cmds: Vec<(usize, UnitCmd)> = Vec::new();
        if let Some(sd) = &self.shutdown {
            let cap = sd.hurried.then(|| Instant::now() + HURRIED_WAIT);
            let deadline = cap.map_or(sd.deadline, |c| c.min(sd.deadline));
            for i in 0..self.slots.len() {
                let slot = &self.slots[i];
                if slot.stop_sent || slot.is_down() {
                    continue;
                }
                if self.dependents[i].iter().all(|&j| self.slots[j].is_down()) {
                    cmds.push((i, UnitCmd::Stop { deadline }));
                }
            }
        } else {
            for i in 0..self.slots.len() {
                if let Some(cmd) = self.next_cmd_while_running(i) {
                    cmds.push((i, cmd));
                }
            }
        }
        for (i, cmd) in cmds {
            let slot = &mut self.slots[i];
            match cmd {
                UnitCmd::Start => {
                    slot.start_sent = true;
                    slot.status.state = State::Starting;
                    slot.status.reason = None;
                }
                UnitCmd::Stop { .. } => slot.stop_sent = true,
                UnitCmd::Hurry { .. } => {}
            }
            if let Some(tx) = &slot.tx {
                let _ = tx.send(cmd).await;
            }
        }
    }

    fn next_cmd_while_running(&mut self, i: usize) -> Option<UnitCmd> {
        let slot = &self.slots[i];
        slot.tx.as_ref()?;
        // A required unit that failed for good takes this one down too.
        let failed_req = slot
            .unit
            .requires
            .iter()
            .find(|r| {
                self.index(r)
                    .is_some_and(|j| self.slots[j].status.state == State::Failed)
            })
            .cloned();
        if let Some(req) = failed_req {
            let why = format!("required unit {req} failed");
            let slot = &mut self.slots[i];
            if slot.failed_because.is_none() && !slot.status.state.is_settled() {
                slot.failed_because = Some(why.clone());
                if !slot.start_sent {
                    tracing::error!("unit {}: not starting: {why}", slot.unit.name);
                    slot.start_sent = true;
                    let status = UnitStatus::new(State::Failed, Some(why));
                    self.on_event(UnitEvent { index: i, status });
                    return None;
                }
                tracing::error!("unit {}: stopping: {why}", slot.unit.name);
                slot.stop_sent = true;
                return Some(UnitCmd::Stop {
                    deadline: Instant::now() + Duration::from_secs(86400 * 365),
                });
            }
            return None;
        }
        if slot.start_sent {
            return None;
        }
        let mut waiting: Vec<&str> = Vec::new();
        for dep in &slot.unit.requires {
            let Some(d) = self.index(dep).map(|j| &self.slots[j]) else {
                continue;
            };
            let ok = d.status.state.is_up() || d.status.state == State::Exited;
            if !ok {
                waiting.push(dep);
            }
        }
        for dep in slot.unit.wants.iter().chain(&slot.unit.after) {
            let Some(d) = self.index(dep).map(|j| &self.slots[j]) else {
                continue;
            };
            let will_start = d.tx.is_some() && !d.start_sent;
            let ok = d.status.state.is_up()
                || d.status.state.is_settled()
                || (d.status.state == State::Inactive && !will_start);
            if !ok {
                waiting.push(dep);
            }
        }
        if waiting.is_empty() {
            return Some(UnitCmd::Start);
        }
        let why = format!("waiting for {}", waiting.join(", "));
        let slot = &mut self.slots[i];
        slot.status.reason = Some(why);
        None
    }

    fn finished(&self) -> Option<u8> {
        let sd = self.shutdown.as_ref()?;
        self.slots.iter().all(Slot::is_down).then_some(sd.code)
    }

    /// The budget is spent: SIGKILL whatever is left, name who used it up.
    async fn budget_spent(&mut self) -> u8 {
        let code = self.shutdown.as_ref().map_or(0, |s| s.code);
        let late: Vec<&str> = self
            .slots
            .iter()
            .filter(|s| !s.is_down() || s.status.killed_at_deadline)
            .map(|s| s.unit.name.as_str())
            .collect();
        tracing::error!(
            "shutdown budget of {} spent; still stopping: {}; sending SIGKILL to everything left",
            humantime::format_duration(self.opts.shutdown_timeout),
            if late.is_empty() {
                "none".to_string()
            } else {
                late.join(", ")
            }
        );
        let now = Instant::now();
        for slot in self.slots.iter().filter(|s| !s.is_down()) {
            if let Some(tx) = &slot.tx {
                let _ = tx.try_send(UnitCmd::Stop { deadline: now });
                let _ = tx.try_send(UnitCmd::Hurry { deadline: now });
            }
        }
        kill_descendants(Signal::KILL);
        let grace = Instant::now() + Duration::from_millis(200);
        while !self.slots.iter().all(Slot::is_down) {
            tokio::select! {
                Some(ev) = self.events.recv() => self.on_event(ev),
                _ = sleep_until(grace.into()) => break,
            }
        }
        code
    }

    /// Every unit is down; anything that escaped its group (a daemon that
    /// called setsid, an orphan) gets SIGTERM, then SIGKILL after a grace
    /// period cut to what is left of the budget.
    async fn sweep_leftovers(&mut self) {
        if tree::descendants().is_empty() {
            return;
        }
        let until = self
            .shutdown
            .as_ref()
            .map_or(Instant::now(), |s| s.deadline)
            .min(Instant::now() + LEFTOVER_GRACE);
        let n = kill_descendants(Signal::TERM);
        tracing::info!("sent SIGTERM to {n} leftover process(es)");
        let mut pause = Duration::from_millis(2);
        while Instant::now() < until {
            if tree::descendants().is_empty() {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        let n = kill_descendants(Signal::KILL);
        if n > 0 {
            tracing::warn!("sent SIGKILL to {n} leftover process(es)");
        }
    }
}

fn kill_descendants(sig: Signal) -> usize {
    tree::descendants()
        .into_iter()
        .filter(|p| matches!(p.signal(sig), Ok(true)))
        .count()
}

fn open_log_file(
    unit: &Unit,
) -> Option<(
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
)> {
    use crate::config::unit::Rotation;
    use tracing_appender::rolling::{RollingFileAppender, Rotation as R};
    let path = unit.log.file.as_ref()?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path.file_name()?.to_string_lossy().into_owned();
    let rotation = match unit.log.rotate {
        Rotation::Never => R::NEVER,
        Rotation::Hourly => R::HOURLY,
        Rotation::Daily => R::DAILY,
    };
    match RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix(name)
        .build(dir)
    {
        Ok(appender) => Some(
            tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .finish(appender),
        ),
        Err(e) => {
            tracing::error!(
                "unit {}: cannot open log file {}: {e}; logging to stdout only",
                unit.name,
                path.display()
            );
            None
        }
    }
}
