//! The dispatcher's runner: performs what the [`plan::Plan`] decides. It
//! owns the unit tasks (their command channels, rings, log files, router
//! counters), the router listen sockets (bound once, kept for as long as a
//! router unit uses the address), the signals, the budget timer and the
//! open control requests; it reads the units dir for a reload, publishes
//! the [`Snapshot`] and the routers' [`Readiness`], prints the block about
//! a unit that failed for good, and sweeps leftover processes at the end.
//! It decides nothing itself.

pub mod plan;
pub mod reload;
#[cfg(test)]
mod tests;
pub mod waiters;

use super::diagnosis::{Block, LAST_LINES};
use super::router_task::{RouterChange, RouterTask};
use super::unit_task::{UnitCmd, UnitEvent, UnitTask};
use crate::api::{ControlMsg, Handle, Readiness, Reply, Request, RouterStats, Snapshot, Traffic, UnitView};
use crate::config::unit::{ProbeKind, RouterSpec};
use crate::config::{ConfigError, LoadContext, Unit, UnitSet};
use crate::logs::forward::UnitLog;
use crate::logs::{LogSink, RingLog, Stream};
use crate::process::{sweep, Reaper, Signal};
use plan::{Command, Event, Plan, RequestId, SlotId, UnitRequest};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::sleep_until;

/// Lines kept per unit for status and logs.
pub const RING_LINES: usize = 1000;
/// Grace between SIGTERM and SIGKILL for leftover processes at the end.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// After the budget's SIGKILL, how long to wait for the units to report.
const AFTER_KILL_GRACE: Duration = Duration::from_millis(200);

pub struct Options {
    pub shutdown_timeout: Duration,
    /// Where `reload` and SIGHUP read the units from.
    pub units_dir: PathBuf,
    pub profiles: Vec<String>,
    /// Router listen sockets bound before anything started, by address.
    pub listeners: HashMap<SocketAddr, TcpListener>,
}

/// What the runner holds for a slot's current task.
struct Task {
    /// Names the task in its events: events of an earlier task of the
    /// same slot (before a reload replaced it) are stale.
    id: u64,
    tx: mpsc::Sender<UnitCmd>,
    /// A router unit's current definition.
    router: Option<Arc<RouterSpec>>,
    _log_guard: Option<tracing_appender::non_blocking::WorkerGuard>,
}

pub struct Manager {
    plan: Plan,
    tasks: HashMap<SlotId, Task>,
    /// Task id → slot, for the current tasks only.
    task_slots: HashMap<u64, SlotId>,
    next_task: u64,
    /// Kept across a slot's tasks so that `logs` spans restarts and reloads.
    rings: HashMap<SlotId, Arc<RingLog>>,
    router_stats: HashMap<SlotId, Arc<RouterStats>>,
    /// Each unit's requests in flight through the routers, by unit name (a
    /// route names its unit by name): kept across its tasks.
    traffic: HashMap<String, Arc<Traffic>>,
    /// Router listen sockets by address; a router gets a duplicate.
    listeners: HashMap<SocketAddr, TcpListener>,
    events_tx: mpsc::Sender<UnitEvent>,
    events: mpsc::Receiver<UnitEvent>,
    control: mpsc::Receiver<ControlMsg>,
    replies: HashMap<RequestId, oneshot::Sender<Reply>>,
    next_request: u64,
    snapshot: watch::Sender<Snapshot>,
    readiness: watch::Sender<Readiness>,
    reaper: Reaper,
    sink: LogSink,
    units_dir: PathBuf,
    profiles: Vec<String>,
}

impl Manager {
    pub fn new(
        set: UnitSet,
        opts: Options,
        reaper: &Reaper,
        sink: &LogSink,
    ) -> (Manager, Handle, watch::Receiver<Snapshot>) {
        let (events_tx, events) = mpsc::channel(1024);
        let (control_tx, control) = mpsc::channel(64);
        let (snapshot, snapshot_rx) = watch::channel(Snapshot::default());
        let (readiness, _) = watch::channel(Readiness::default());
        set_prefix_width(&set.units);
        let m = Manager {
            plan: Plan::new(set, opts.shutdown_timeout),
            tasks: HashMap::new(),
            task_slots: HashMap::new(),
            next_task: 0,
            rings: HashMap::new(),
            router_stats: HashMap::new(),
            traffic: HashMap::new(),
            listeners: opts.listeners,
            events_tx,
            events,
            control,
            replies: HashMap::new(),
            next_request: 0,
            snapshot,
            readiness,
            reaper: reaper.clone(),
            sink: sink.clone(),
            units_dir: opts.units_dir,
            profiles: opts.profiles,
        };
        m.publish();
        (m, Handle::new(control_tx), snapshot_rx)
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
        let first = self.plan.begin(Instant::now());
        self.perform(first).await;
        self.publish();
        loop {
            let deadline = self.plan.deadline();
            tokio::select! {
                _ = term.recv() => self.feed(vec![Event::StopSignal(Signal::TERM)]).await,
                _ = int.recv() => self.feed(vec![Event::StopSignal(Signal(nix::sys::signal::Signal::SIGINT))]).await,
                _ = quit.recv() => self.feed(vec![Event::StopSignal(Signal(nix::sys::signal::Signal::SIGQUIT))]).await,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading {}", self.units_dir.display());
                    let id = self.request_id(None);
                    self.reload(id).await;
                }
                Some(ev) = self.events.recv() => self.feed_events(ev).await,
                Some(msg) = self.control.recv() => {
                    let id = self.request_id(Some(msg.reply));
                    let request = match msg.request {
                        Request::Reload => None,
                        Request::Start(names) => Some(UnitRequest::Start(names)),
                        Request::Stop(names) => Some(UnitRequest::Stop(names)),
                        Request::Restart(names) => Some(UnitRequest::Restart(names)),
                    };
                    match request {
                        // The runner reads the files, the plan gets the result.
                        None => self.reload(id).await,
                        Some(request) => self.feed(vec![Event::Request { id, request }]).await,
                    }
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    return self.budget_spent().await;
                }
            }
            self.publish();
            if let Some(code) = self.plan.finished() {
                self.sweep_leftovers().await;
                self.farewell(code);
                return code;
            }
        }
    }

    /// `first` and every unit event already queued, then one decision.
    /// Events of a task that was replaced since are stale and dropped.
    async fn feed_events(&mut self, first: UnitEvent) {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(ev) = next {
            if let Some(&slot) = self.task_slots.get(&ev.id) {
                batch.push(Event::Status { slot, status: ev.status });
            }
            next = self.events.try_recv().ok();
        }
        self.feed(batch).await;
    }

    fn request_id(&mut self, reply: Option<oneshot::Sender<Reply>>) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        if let Some(reply) = reply {
            self.replies.insert(id, reply);
        }
        id
    }

    async fn feed(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let cmds = self.plan.handle_all(Instant::now(), events);
        self.perform(cmds).await;
        if self.plan.shutting_down() {
            // New connections are refused from now on: each router closes
            // its own duplicate as it stops accepting.
            self.listeners.clear();
        }
    }

    /// Reads the units dir again and takes every new router address; the
    /// plan applies the result (or refuses it with every error).
    async fn reload(&mut self, id: RequestId) {
        let ctx = LoadContext::from_process(self.profiles.clone(), false);
        let loaded = crate::config::load_dir(&self.units_dir, &ctx)
            .and_then(|set| match set.units.is_empty() {
                // Emptied by mistake (a bad mount, a wrong copy): stopping
                // every unit is never what a reload means.
                true => Err(vec![crate::config::no_units(&self.units_dir, "the one flowinit up was started with")]),
                false => Ok(set),
            })
            .and_then(|set| self.bind_new_addresses(&set).map(|()| set))
            .map_err(|errs| errs.iter().map(ConfigError::to_string).collect());
        if let Ok(set) = &loaded {
            set_prefix_width(&set.units);
        }
        self.feed(vec![Event::Reload { id, loaded }]).await;
        self.release_unused_addresses();
    }

    /// Binds the listen address of every router unit of `set` that no
    /// socket is held for yet, before the reload is applied: a busy port
    /// refuses the reload instead of failing the router later.
    fn bind_new_addresses(&mut self, set: &UnitSet) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        for unit in set.units.iter().filter(|u| u.enabled) {
            let Some(spec) = &unit.router else { continue };
            if self.listeners.contains_key(&spec.listen) {
                continue;
            }
            match crate::router::bind(spec.listen) {
                Ok(l) => {
                    self.listeners.insert(spec.listen, l);
                }
                Err(e) => errors.push(ConfigError {
                    file: unit.file.clone(),
                    line: spec.listen_at.line,
                    column: spec.listen_at.column,
                    unit: Some(unit.name.clone()),
                    message: format!("cannot listen on {}: {e} (key `listen`; choose a free address)", spec.listen),
                }),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Closes the sockets of addresses no router unit listens on anymore
    /// (a router that moved keeps draining on its own duplicate).
    fn release_unused_addresses(&mut self) {
        let used: Vec<SocketAddr> = self
            .plan
            .slots()
            .iter()
            .filter(|s| s.unit.enabled)
            .filter_map(|s| Some(s.unit.router.as_ref()?.listen))
            .collect();
        self.listeners.retain(|addr, _| used.contains(addr));
    }

    async fn perform(&mut self, cmds: Vec<Command>) {
        for cmd in cmds {
            match cmd {
                Command::Attach { slot, unit } => self.attach(slot, unit),
                Command::Detach { slot } => {
                    if let Some(task) = self.tasks.remove(&slot) {
                        self.task_slots.remove(&task.id);
                    }
                    if self.plan.slots().iter().all(|s| s.id != slot) {
                        self.rings.remove(&slot);
                        self.router_stats.remove(&slot);
                        let names: Vec<&str> = self.plan.slots().iter().map(|s| s.unit.name.as_str()).collect();
                        self.traffic.retain(|name, _| names.contains(&name.as_str()));
                    }
                }
                Command::Send { slot, cmd } => {
                    let Some(task) = self.tasks.get(&slot) else { continue };
                    if let (UnitCmd::Start, Some(spec)) = (&cmd, &task.router) {
                        // A router's socket comes with each start: flowinit
                        // keeps it, the router serves on a duplicate that
                        // it closes when it stops accepting.
                        let listener = self.listeners.get(&spec.listen).and_then(dup);
                        let change = RouterChange { spec: spec.clone(), listener };
                        let _ = task.tx.send(UnitCmd::Reconfigure(Box::new(change))).await;
                    }
                    let _ = task.tx.send(cmd).await;
                }
                Command::Reconfigure { slot, unit } => {
                    let Some(spec) = unit.router.clone().map(Arc::new) else { continue };
                    let Some(task) = self.tasks.get_mut(&slot) else { continue };
                    let moved = task.router.as_ref().is_some_and(|old| old.listen != spec.listen);
                    let listener = if moved { self.listeners.get(&spec.listen).and_then(dup) } else { None };
                    task.router = Some(spec.clone());
                    let change = RouterChange { spec, listener };
                    let _ = task.tx.send(UnitCmd::Reconfigure(Box::new(change))).await;
                }
                Command::Reply { id, reply } => match self.replies.remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(reply);
                    }
                    None => match reply {
                        Ok(summary) => tracing::info!("reload done: {summary}"),
                        Err(e) => tracing::debug!("reload: {e}"),
                    },
                },
                Command::KillAll => {
                    sweep::signal_descendants(Signal::KILL);
                }
                Command::Diagnose { slot } => self.diagnose(slot),
            }
        }
    }

    /// Creates the slot's task for `unit` (a service's, or the router's).
    fn attach(&mut self, slot: SlotId, unit: Arc<Unit>) {
        if let Some(old) = self.tasks.remove(&slot) {
            self.task_slots.remove(&old.id);
        }
        self.next_task += 1;
        let id = self.next_task;
        let (file, log_guard) = open_log_file(&unit).unzip();
        let width = crate::logs::events::prefix_width();
        let mut log = UnitLog {
            name: unit.name.as_str().into(),
            padded_prefix: format!("{:<width$}", unit.log.prefix).into(),
            ring: self.rings.entry(slot).or_insert_with(|| Arc::new(RingLog::new(RING_LINES))).clone(),
            file,
            ready_match: None,
        };
        let (tx, cmds) = mpsc::channel(16);
        let (sink, events) = (self.sink.clone(), self.events_tx.clone());
        let router = unit.router.clone().map(Arc::new);
        if let Some(spec) = router.clone() {
            let stats = self.router_stats.entry(slot).or_default().clone();
            let readiness = self.readiness.subscribe();
            let task = RouterTask { id, spec, listener: None, log, sink, events, cmds, readiness, stats };
            tokio::spawn(task.run());
        } else if let Some(service) = unit.service.clone() {
            log.ready_match = match service.readiness.as_ref().map(|r| &r.kind) {
                Some(ProbeKind::Log { regex }) => Some(Arc::new(crate::logs::watch::LineWatch::new(regex.clone()))),
                _ => None,
            };
            let reaper = self.reaper.clone();
            let traffic = self.traffic.entry(unit.name.clone()).or_default().clone();
            let readiness = self.readiness.subscribe();
            let task = UnitTask { id, service, log, reaper, sink, events, cmds, traffic, readiness };
            tokio::spawn(task.run());
        }
        self.task_slots.insert(id, slot);
        self.tasks.insert(slot, Task { id, tx, router, _log_guard: log_guard });
    }

    fn publish(&self) {
        let slots = self.plan.slots();
        let units = slots
            .iter()
            .map(|s| UnitView {
                unit: s.unit.clone(),
                status: s.status.clone(),
                ring: self.rings.get(&s.id).cloned(),
                held_stopped: s.held_stopped(),
            })
            .collect();
        let routers =
            slots.iter().filter_map(|s| Some((s.unit.name.clone(), self.router_stats.get(&s.id)?.clone()))).collect();
        self.snapshot.send_replace(Snapshot { units, shutting_down: self.plan.shutting_down(), routers });
        let readiness = Readiness::new(slots.iter().map(|s| (s.unit.name.clone(), s.status.state))).with_traffic(
            slots.iter().filter_map(|s| Some((s.unit.name.clone(), self.traffic.get(&s.unit.name)?.clone()))),
        );
        self.readiness.send_if_modified(|r| {
            let changed = *r != readiness;
            if changed {
                *r = readiness;
            }
            changed
        });
    }

    /// The budget is spent: the plan SIGKILLs what is left; the units get
    /// a moment to report, then flowinit exits.
    async fn budget_spent(&mut self) -> u8 {
        let cmds = self.plan.handle(Instant::now(), Event::BudgetSpent);
        self.perform(cmds).await;
        let grace = Instant::now() + AFTER_KILL_GRACE;
        let code = loop {
            if let Some(code) = self.plan.finished() {
                break code;
            }
            tokio::select! {
                Some(ev) = self.events.recv() => self.feed_events(ev).await,
                _ = sleep_until(grace.into()) => break self.plan.exit_code(),
            }
        };
        self.publish();
        self.farewell(code);
        code
    }

    /// Prints the block about the slot's unit, which failed for good: the
    /// cause, its runs, its last lines from the ring. Through the stderr
    /// lane like flowinit's own events, as one batch.
    fn diagnose(&self, id: SlotId) {
        let Some(slot) = self.plan.slots().iter().find(|s| s.id == id) else { return };
        let lines = self.rings.get(&id).map(|r| r.tail(LAST_LINES)).unwrap_or_default();
        let block = Block {
            unit: &slot.unit.name,
            critical: slot.unit.critical,
            cause: slot.status.reason.as_deref().unwrap_or("no reason"),
            failure: slot.status.failure.as_deref(),
            lines: &lines,
        };
        let text = block.render(self.sink.format, crate::logs::events::prefix_width(), std::time::SystemTime::now());
        self.sink.send_now(Stream::Stderr, text.into_bytes());
    }

    /// flowinit's last line, the same whichever came first at the budget's
    /// end: a unit's own SIGKILL or the budget timer. Just before it, the
    /// block about the critical unit that ended the container, if one did.
    fn farewell(&self, code: u8) {
        if let Some(slot) = self.plan.ended_by() {
            self.diagnose(slot);
        }
        let spent = if self.plan.budget_reported() { " (the shutdown budget was spent)" } else { "" };
        let left: Vec<&str> = self.plan.slots().iter().filter(|s| !s.is_down()).map(|s| s.unit.name.as_str()).collect();
        if left.is_empty() {
            tracing::info!("all units stopped; exiting with code {code}{spent}");
        } else {
            tracing::warn!("exiting with code {code}{spent}; not seen stopping: {}", left.join(", "));
        }
    }

    /// Every unit is down; anything that escaped its group (a daemon that
    /// called setsid, an orphan) gets SIGTERM, then SIGKILL after a grace
    /// period cut to what is left of the budget.
    async fn sweep_leftovers(&mut self) {
        if !sweep::any_left() {
            return;
        }
        let until = self.plan.deadline().unwrap_or_else(Instant::now).min(Instant::now() + LEFTOVER_GRACE);
        let (termed, killed) = sweep::terminate_descendants(until).await;
        tracing::info!("sent SIGTERM to {termed} leftover process(es)");
        if killed > 0 {
            tracing::warn!("sent SIGKILL to {killed} leftover process(es)");
        }
    }
}

/// A second descriptor of a listen socket, for a router's own use.
fn dup(l: &TcpListener) -> Option<TcpListener> {
    l.try_clone().map_err(|e| tracing::error!("cannot duplicate a router's listen socket: {e}")).ok()
}

fn open_log_file(
    unit: &Unit,
) -> Option<(tracing_appender::non_blocking::NonBlocking, tracing_appender::non_blocking::WorkerGuard)> {
    use crate::config::unit::Rotation;
    use crate::logs::file::{self, Rotation as R};
    let rotation = match unit.log.rotate {
        Rotation::Never => R::NEVER,
        Rotation::Hourly => R::HOURLY,
        Rotation::Daily => R::DAILY,
    };
    file::open(&unit.name, unit.log.file.as_ref()?, rotation)
}

fn set_prefix_width(units: &[Unit]) {
    let width = units.iter().map(|u| u.log.prefix.len()).max().unwrap_or(0).max("flowinit".len());
    crate::logs::events::set_prefix_width(width);
}
