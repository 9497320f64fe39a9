//! The dispatcher: owns what the user sees (one [`UnitStatus`] per unit),
//! decides what should run (each unit's desired state), starts units when
//! their dependencies allow, stops them dependents-first, propagates
//! failures, answers control requests once their action is done, applies
//! reloads, and runs the ordered, budgeted shutdown. It talks to unit tasks
//! only by messages and publishes a [`Snapshot`] for the control socket and
//! the router; nothing outside reaches into it.

use super::router_task::RouterTask;
use super::state::State;
use super::unit_task::{UnitCmd, UnitEvent, UnitStatus, UnitTask};
use crate::config::unit::ProbeKind;
use crate::config::{LoadContext, Unit, UnitSet};
use crate::logs::forward::UnitLog;
use crate::logs::{LogSink, RingLog};
use crate::process::{tree, Reaper, Signal};
use crate::router::RouterStats;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::sleep_until;

/// Lines kept per unit for status and logs.
pub const RING_LINES: usize = 1000;
/// After a second SIGTERM/SIGINT, no stop waits longer than this.
const HURRIED_WAIT: Duration = Duration::from_secs(1);
/// Grace between SIGTERM and SIGKILL for leftover processes at the end.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// An operator's stop has no budget: only each unit's stop_timeout.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 86400);

pub struct Options {
    pub shutdown_timeout: Duration,
    /// Where `reload` and SIGHUP read the units from.
    pub units_dir: PathBuf,
    pub profiles: Vec<String>,
    /// Router listen sockets bound before anything started, by unit name.
    pub listeners: std::collections::HashMap<String, std::net::TcpListener>,
}

/// What the control socket may ask for. Each is answered once done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Start(Vec<String>),
    Stop(Vec<String>),
    Restart(Vec<String>),
    Reload,
}

/// `Ok(summary)` or `Err(what went wrong, for people)`.
pub type Reply = Result<String, String>;

struct ControlMsg {
    request: Request,
    reply: oneshot::Sender<Reply>,
}

/// The cheap handle through which the control socket sends requests.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<ControlMsg>,
}

impl Handle {
    pub async fn call(&self, request: Request) -> Reply {
        let (reply, rx) = oneshot::channel();
        self.tx.send(ControlMsg { request, reply }).await.map_err(|_| "flowinit is shutting down".to_string())?;
        rx.await.map_err(|_| "flowinit is shutting down".to_string())?
    }
}

/// One unit as the outside sees it.
#[derive(Debug, Clone)]
pub struct UnitView {
    pub unit: Arc<Unit>,
    pub status: UnitStatus,
    pub ring: Option<Arc<RingLog>>,
    /// Stopped on an operator's request: not counted by the health check.
    pub held_stopped: bool,
    pub router_stats: Option<Arc<RouterStats>>,
}

impl UnitView {
    /// Counts toward health: not disabled, not stopped by an operator.
    pub fn is_active(&self) -> bool {
        self.status.state != State::Disabled && !self.held_stopped
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub units: Vec<UnitView>,
    pub shutting_down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Run,
    Stop,
    /// Stop, then drop the slot (removed by a reload).
    Remove,
}

struct Slot {
    id: u64,
    /// Bumped when a reload replaces the unit's definition.
    generation: u64,
    unit: Arc<Unit>,
    status: UnitStatus,
    tx: Option<mpsc::Sender<UnitCmd>>,
    ring: Option<Arc<RingLog>>,
    router_stats: Option<Arc<RouterStats>>,
    want: Want,
    held_by_operator: bool,
    start_sent: bool,
    stop_sent: bool,
    /// Set when the manager stopped the unit because a required unit
    /// failed: the unit ends `failed` with this reason, not `stopped`.
    failed_because: Option<String>,
    /// A new definition from a reload, applied once the old process is down.
    replacement: Option<Unit>,
    _log_guard: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Slot {
    /// Nothing running and nothing left to do for a stop.
    fn is_down(&self) -> bool {
        self.status.state.is_settled() || (self.status.state == State::Inactive && !self.start_sent)
    }

    /// Ready for a new start: forget how the last run ended.
    fn rearm(&mut self) {
        self.want = Want::Run;
        self.held_by_operator = false;
        if self.is_down() && self.tx.is_some() {
            self.reset_for_start();
            self.status.state = State::Inactive;
            self.status.reason = None;
        }
    }

    /// Nothing sent to the task yet for the next run.
    fn reset_for_start(&mut self) {
        self.start_sent = false;
        self.stop_sent = false;
        self.failed_because = None;
    }
}

struct Shutdown {
    deadline: Instant,
    code: u8,
    hurried: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Stop,
}

/// Router units a reload reconfigures in place: name → (new spec, new
/// listen socket if `listen` moved).
type RouterChanges =
    std::collections::HashMap<String, (Arc<crate::config::unit::RouterSpec>, Option<std::net::TcpListener>)>;

/// (slot id, generation at request time, restarts at request time)
type Target = (u64, u64, u32);

/// A control request waiting for its units to get where they were sent.
struct Waiter {
    op: Op,
    targets: Vec<Target>,
    /// After a stop completes, start these (restart, reload).
    then_start: Vec<u64>,
    /// The answer's first words: "started", "stopped", a reload summary.
    verb: String,
    reply: oneshot::Sender<Reply>,
}

pub struct Manager {
    slots: Vec<Slot>,
    /// dependents[i]: units ordered after unit i (any kind of edge).
    dependents: Vec<Vec<usize>>,
    /// Slot index by unit name; rebuilt with `dependents`.
    by_name: std::collections::HashMap<String, usize>,
    next_id: u64,
    events_tx: mpsc::Sender<UnitEvent>,
    events: mpsc::Receiver<UnitEvent>,
    control: mpsc::Receiver<ControlMsg>,
    waiters: Vec<Waiter>,
    snapshot: watch::Sender<Snapshot>,
    shutdown: Option<Shutdown>,
    reaper: Reaper,
    sink: LogSink,
    opts: Options,
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
        let mut m = Manager {
            slots: Vec::new(),
            dependents: Vec::new(),
            by_name: std::collections::HashMap::new(),
            next_id: 0,
            events_tx,
            events,
            control,
            waiters: Vec::new(),
            snapshot,
            shutdown: None,
            reaper: reaper.clone(),
            sink: sink.clone(),
            opts,
        };
        m.set_prefix_width(&set.units);
        for unit in set.units {
            let slot = m.new_slot(unit);
            m.slots.push(slot);
        }
        m.relink();
        m.publish();
        (m, Handle { tx: control_tx }, snapshot_rx)
    }

    fn set_prefix_width(&self, units: &[Unit]) {
        let width = units.iter().map(|u| u.log.prefix.len()).max().unwrap_or(0).max("flowinit".len());
        crate::logs::events::set_prefix_width(width);
    }

    fn prefix_width(&self) -> usize {
        crate::logs::events::prefix_width()
    }

    /// A slot for `unit`, with its task running (idle until told to start).
    fn new_slot(&mut self, unit: Unit) -> Slot {
        self.next_id += 1;
        let id = self.next_id;
        let unit = Arc::new(unit);
        let mut slot = Slot {
            id,
            generation: 0,
            unit: unit.clone(),
            status: UnitStatus::new(State::Inactive, None),
            tx: None,
            ring: None,
            router_stats: None,
            want: Want::Run,
            held_by_operator: false,
            start_sent: false,
            stop_sent: false,
            failed_because: None,
            replacement: None,
            _log_guard: None,
        };
        self.attach_task(&mut slot, unit);
        slot
    }

    /// (Re)creates the unit task of a slot for `unit` (a service's, or the
    /// router's); keeps the ring so that `logs` spans restarts and reloads.
    fn attach_task(&mut self, slot: &mut Slot, unit: Arc<Unit>) {
        slot.unit = unit.clone();
        slot.tx = None;
        slot._log_guard = None;
        if !unit.enabled || (unit.service.is_none() && unit.router.is_none()) {
            let why = format!("disabled (profile {})", unit.profiles.join(", "));
            slot.status = UnitStatus::new(State::Disabled, Some(why));
            return;
        }
        let (file, guard) = open_log_file(&unit).unzip();
        let width = self.prefix_width();
        let mut log = UnitLog {
            name: unit.name.as_str().into(),
            padded_prefix: format!("{:<width$}", unit.log.prefix).into(),
            ring: slot.ring.get_or_insert_with(|| Arc::new(RingLog::new(RING_LINES))).clone(),
            file,
            ready_match: None,
        };
        let (tx, cmds) = mpsc::channel(16);
        let (id, sink, events) = (slot.id, self.sink.clone(), self.events_tx.clone());
        if let Some(spec) = unit.router.clone() {
            let stats = slot.router_stats.get_or_insert_with(Default::default).clone();
            let listener = self.opts.listeners.remove(&unit.name);
            let snapshot = self.snapshot.subscribe();
            let task = RouterTask { id, spec: Arc::new(spec), listener, log, sink, events, cmds, snapshot, stats };
            tokio::spawn(task.run());
        } else if let Some(service) = unit.service.clone() {
            log.ready_match = match service.readiness.as_ref().map(|r| &r.kind) {
                Some(ProbeKind::Log { regex }) => Some(Arc::new(crate::logs::watch::LineWatch::new(regex.clone()))),
                _ => None,
            };
            let reaper = self.reaper.clone();
            let task = UnitTask { id, service, log, reaper, sink, events, cmds };
            tokio::spawn(task.run());
        }
        slot.tx = Some(tx);
        slot._log_guard = guard;
        slot.status = UnitStatus::new(State::Inactive, None);
        slot.reset_for_start();
    }

    /// Recomputes the name index and the reverse edges after the set of
    /// slots changed.
    fn relink(&mut self) {
        self.by_name = self.slots.iter().enumerate().map(|(i, s)| (s.unit.name.clone(), i)).collect();
        let mut dependents = vec![Vec::new(); self.slots.len()];
        for (j, s) in self.slots.iter().enumerate() {
            let mut deps: Vec<usize> = s
                .unit
                .ordering_deps()
                .chain(s.unit.routed_units())
                .filter_map(|d| self.by_name.get(d).copied())
                .collect();
            deps.sort_unstable();
            deps.dedup();
            for i in deps {
                dependents[i].push(j);
            }
        }
        self.dependents = dependents;
    }

    fn publish(&self) {
        let units = self
            .slots
            .iter()
            .map(|s| UnitView {
                unit: s.unit.clone(),
                status: s.status.clone(),
                ring: s.ring.clone(),
                held_stopped: s.held_by_operator && s.want == Want::Stop,
                router_stats: s.router_stats.clone(),
            })
            .collect();
        self.snapshot.send_replace(Snapshot { units, shutting_down: self.shutdown.is_some() });
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
        self.publish();
        loop {
            let deadline = self.shutdown.as_ref().map(|s| s.deadline);
            tokio::select! {
                _ = term.recv() => self.on_stop_signal(Signal::TERM).await,
                _ = int.recv() => self.on_stop_signal(Signal(nix::sys::signal::Signal::SIGINT)).await,
                _ = quit.recv() => self.on_stop_signal(Signal(nix::sys::signal::Signal::SIGQUIT)).await,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading {}", self.opts.units_dir.display());
                    let (reply, rx) = oneshot::channel();
                    self.on_request(Request::Reload, reply);
                    tokio::spawn(async move {
                        match rx.await {
                            Ok(Ok(summary)) => tracing::info!("reload done: {summary}"),
                            Ok(Err(_)) => {}
                            Err(_) => {}
                        }
                    });
                }
                                Some(ev) = self.events.recv() => {
                    self.on_event(ev);
                    // Take everything already queued before one pass over
                    // the units and one snapshot: 200 units starting at once
                    // would otherwise cost 200 passes.
                    while let Ok(ev) = self.events.try_recv() {
                        self.on_event(ev);
                    }
                }
                Some(msg) = self.control.recv() => self.on_request(msg.request, msg.reply),
                _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    return self.budget_spent().await;
                }
            }
            // Answering a waiter may re-arm units (restart, reload): then
            // they need another pass to start.
            self.advance().await;
            while self.check_waiters() {
                self.advance().await;
            }
            self.publish();
            if let Some(code) = self.finished() {
                // A unit task's own SIGKILL at the budget's end may beat
                // the timer above: the budget was still spent.
                if self.slots.iter().any(|s| s.status.killed_at_deadline) {
                    self.report_budget_spent();
                }
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
                    "{sig} received during shutdown: cutting every stop wait to {}",
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
            self.shutdown =
                Some(Shutdown { deadline: Instant::now() + self.opts.shutdown_timeout, code, hurried: false });
            for slot in &mut self.slots {
                if slot.want == Want::Run {
                    slot.want = Want::Stop;
                }
            }
            for w in self.waiters.drain(..) {
                let _ = w.reply.send(Err("flowinit is shutting down".into()));
            }
        }
    }

    fn on_event(&mut self, ev: UnitEvent) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.id == ev.id) else { return };
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
        self.by_name.get(name).copied()
    }

    /// Sends whatever commands the current states allow.
    async fn advance(&mut self) {
        let mut cmds: Vec<(usize, UnitCmd)> = Vec::new();
        for i in 0..self.slots.len() {
            if self.shutdown.is_some() {
                break;
            }
            if self.slots[i].want == Want::Run {
                if let Some(cmd) = self.next_start(i) {
                    cmds.push((i, cmd));
                }
            }
        }
        // A start decided above may have been overtaken by a critical
        // failure in the same pass: then nothing starts.
        if self.shutdown.is_some() {
            cmds.clear();
        }
        let deadline = match &self.shutdown {
            Some(sd) => {
                let cap = sd.hurried.then(|| Instant::now() + HURRIED_WAIT);
                cap.map_or(sd.deadline, |c| c.min(sd.deadline))
            }
            None => Instant::now() + NO_DEADLINE,
        };
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.want == Want::Run || slot.stop_sent || slot.is_down() {
                continue;
            }
            if !self.stop_blocked(i) {
                cmds.push((i, UnitCmd::Stop { deadline }));
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
                UnitCmd::Hurry { .. } | UnitCmd::Reconfigure(_) => {}
            }
            if let Some(tx) = &slot.tx {
                let _ = tx.send(cmd).await;
            }
        }
        self.apply_replacements_and_removals();
    }

    /// Dependents that are going down too must be down first; dependents
    /// that keep running do not hold a stop back. A dependent that is
    /// already down (a finished oneshot) passes the question on to its own
    /// dependents: flowise → setup (exited) → postgres still stops flowise
    /// before postgres.
    fn stop_blocked(&self, i: usize) -> bool {
        let mut seen = vec![false; self.slots.len()];
        let mut todo: Vec<usize> = self.dependents[i].clone();
        while let Some(j) = todo.pop() {
            if std::mem::replace(&mut seen[j], true) {
                continue;
            }
            let dep = &self.slots[j];
            if dep.want == Want::Run {
                continue;
            }
            if !dep.is_down() {
                return true;
            }
            todo.extend(self.dependents[j].iter().copied());
        }
        false
    }

    /// Reload's second half: swap in new definitions of units that are now
    /// down, and drop removed units once down.
    fn apply_replacements_and_removals(&mut self) {
        let mut i = 0;
        let mut changed = false;
        while i < self.slots.len() {
            let slot = &self.slots[i];
            if !slot.is_down() {
                i += 1;
                continue;
            }
            if slot.want == Want::Remove {
                tracing::info!("unit {} removed", slot.unit.name);
                self.slots.remove(i);
                changed = true;
                continue;
            }
            if self.slots[i].replacement.is_some() {
                let mut slot = self.slots.remove(i);
                if let Some(unit) = slot.replacement.take() {
                    slot.generation += 1;
                    let keep_stopped = slot.held_by_operator;
                    self.attach_task(&mut slot, Arc::new(unit));
                    slot.want = if keep_stopped { Want::Stop } else { Want::Run };
                    slot.held_by_operator = keep_stopped;
                    if keep_stopped {
                        slot.status = UnitStatus::new(State::Stopped, Some("stopped by an operator".into()));
                        slot.start_sent = true;
                        slot.stop_sent = true;
                    }
                }
                self.slots.insert(i, slot);
                changed = true;
            }
            i += 1;
        }
        if changed {
            self.relink();
        }
    }

    fn next_start(&mut self, i: usize) -> Option<UnitCmd> {
        let slot = &self.slots[i];
        slot.tx.as_ref()?;
        if slot.replacement.is_some() {
            return None;
        }
        // A required unit that failed for good takes this one down too.
        let failed_req = slot
            .unit
            .requires
            .iter()
            .find(|r| self.index(r).is_some_and(|j| self.slots[j].status.state == State::Failed))
            .cloned();
        if let Some(req) = failed_req {
            let why = format!("required unit {req} failed");
            let slot = &mut self.slots[i];
            if slot.failed_because.is_none() && !slot.status.state.is_settled() {
                slot.failed_because = Some(why.clone());
                if !slot.start_sent {
                    tracing::error!("unit {}: not starting: {why}", slot.unit.name);
                    slot.start_sent = true;
                    let ev = UnitEvent { id: slot.id, status: UnitStatus::new(State::Failed, Some(why)) };
                    self.on_event(ev);
                    return None;
                }
                tracing::error!("unit {}: stopping: {why}", slot.unit.name);
                slot.stop_sent = true;
                return Some(UnitCmd::Stop { deadline: Instant::now() + NO_DEADLINE });
            }
            return None;
        }
        if slot.start_sent {
            return None;
        }
        let mut waiting: Vec<String> = Vec::new();
        for dep in &slot.unit.requires {
            let Some(d) = self.index(dep).map(|j| &self.slots[j]) else { continue };
            if !(d.status.state.is_up() || d.status.state == State::Exited) {
                waiting.push(describe_wait(dep, d));
            }
        }
        for dep in slot.unit.wants.iter().chain(&slot.unit.after) {
            let Some(d) = self.index(dep).map(|j| &self.slots[j]) else { continue };
            let will_start = d.tx.is_some() && d.want == Want::Run && !d.start_sent;
            let ok = d.status.state.is_up()
                || d.status.state.is_settled()
                || (d.status.state == State::Inactive && !will_start);
            if !ok {
                waiting.push(describe_wait(dep, d));
            }
        }
        if waiting.is_empty() {
            return Some(UnitCmd::Start);
        }
        self.slots[i].status.reason = Some(format!("waiting for {}", waiting.join(", ")));
        None
    }

    fn finished(&self) -> Option<u8> {
        let sd = self.shutdown.as_ref()?;
        self.slots.iter().all(Slot::is_down).then_some(sd.code)
    }

    fn resolve(&self, names: &[String]) -> Result<Vec<usize>, String> {
        if names.is_empty() {
            return Err("name at least one unit".into());
        }
        let mut out = Vec::new();
        for n in names {
            let Some(i) = self.index(n) else {
                let known: Vec<&str> = self.slots.iter().map(|s| s.unit.name.as_str()).collect();
                return Err(format!("unknown unit {n:?} (units: {})", known.join(", ")));
            };
            if self.slots[i].tx.is_none() {
                return Err(format!("unit {n} is {}", self.slots[i].status.reason.as_deref().unwrap_or("disabled")));
            }
            out.push(i);
        }
        Ok(out)
    }

    /// `roots` plus everything reachable by `next` edges, as slot indices.
    fn closure(&self, roots: &[usize], next: impl Fn(usize) -> Vec<usize>) -> BTreeSet<usize> {
        let mut seen: BTreeSet<usize> = roots.iter().copied().collect();
        let mut todo: Vec<usize> = roots.to_vec();
        while let Some(i) = todo.pop() {
            for j in next(i) {
                if self.slots[j].tx.is_some() && seen.insert(j) {
                    todo.push(j);
                }
            }
        }
        seen
    }

    fn requirements_of(&self, i: usize) -> Vec<usize> {
        let u = &self.slots[i].unit;
        u.requires.iter().chain(&u.wants).filter_map(|d| self.index(d)).collect()
    }

    fn requirers_of(&self, i: usize) -> Vec<usize> {
        let name = &self.slots[i].unit.name;
        self.slots.iter().enumerate().filter(|(_, s)| s.unit.requires.contains(name)).map(|(j, _)| j).collect()
    }

    fn target(&self, i: usize) -> Target {
        let s = &self.slots[i];
        (s.id, s.generation, s.status.restarts)
    }

    fn on_request(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        if self.shutdown.is_some() {
            let _ = reply.send(Err("flowinit is shutting down".into()));
            return;
        }
        type Plan = (Op, Vec<Target>, Vec<u64>, String);
        let plan: Result<Plan, String> = match request {
            Request::Start(names) => self.resolve(&names).map(|roots| {
                for i in self.closure(&roots, |i| self.requirements_of(i)) {
                    self.slots[i].rearm();
                }
                let targets = roots.iter().map(|&i| self.target(i)).collect();
                (Op::Start, targets, Vec::new(), "started".to_string())
            }),
            Request::Stop(names) => self.resolve(&names).map(|roots| {
                let set = self.closure(&roots, |i| self.requirers_of(i));
                for &i in &set {
                    self.slots[i].want = Want::Stop;
                    self.slots[i].held_by_operator = true;
                }
                let targets = set.iter().map(|&i| self.target(i)).collect();
                (Op::Stop, targets, Vec::new(), "stopped".to_string())
            }),
            Request::Restart(names) => self.resolve(&names).map(|roots| {
                let set = self.closure(&roots, |i| self.requirers_of(i));
                for &i in &set {
                    self.slots[i].want = Want::Stop;
                }
                let targets = set.iter().map(|&i| self.target(i)).collect();
                let then_start = set.iter().map(|&i| self.slots[i].id).collect();
                (Op::Stop, targets, then_start, "restarted".to_string())
            }),
            Request::Reload => match self.reload() {
                Ok((targets, then_start, summary)) => {
                    tracing::info!("reload: {summary}");
                    Ok((Op::Stop, targets, then_start, summary))
                }
                Err(e) => {
                    for line in e.lines() {
                        tracing::error!("reload refused, keeping the running units: {line}");
                    }
                    Err(e)
                }
            },
        };
        match plan {
            Ok((op, targets, then_start, verb)) => self.waiters.push(Waiter { op, targets, then_start, verb, reply }),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Validates the units dir again and, if valid, marks the differences:
    /// removed units to remove, changed units to replace, new units to add.
    /// Returns the stop targets, the units to start afterwards, a summary.
    fn reload(&mut self) -> Result<(Vec<Target>, Vec<u64>, String), String> {
        let ctx = LoadContext::from_process(self.opts.profiles.clone(), false);
        let set = crate::config::load_dir(&self.opts.units_dir, &ctx)
            .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))?;
        let mut in_place = self.router_changes(&set)?;
        let (mut added, mut removed, mut changed, mut same) = (Vec::new(), Vec::new(), Vec::new(), 0);
        let mut targets = Vec::new();
        let mut then_start = Vec::new();
        for i in 0..self.slots.len() {
            let name = self.slots[i].unit.name.clone();
            match set.units.iter().find(|u| u.name == name) {
                None => {
                    removed.push(name);
                    targets.push(self.target(i));
                    self.slots[i].want = Want::Remove;
                }
                Some(new) if *new == *self.slots[i].unit => same += 1,
                Some(new) if in_place.contains_key(&name) => {
                    // A running router takes its new configuration as it
                    // runs: no stop, no second bind of its port.
                    let Some((spec, listener)) = in_place.remove(&name) else { continue };
                    let slot = &mut self.slots[i];
                    let change = super::router_task::RouterChange { spec, listener };
                    match slot.tx.as_ref().map(|tx| tx.try_send(UnitCmd::Reconfigure(Box::new(change)))) {
                        Some(Ok(())) => {
                            slot.unit = Arc::new(new.clone());
                            changed.push(name);
                        }
                        _ => {
                            tracing::error!("unit {name}: its task did not take the new configuration; restarting it");
                            changed.push(name);
                            targets.push(self.target(i));
                            let slot = &mut self.slots[i];
                            slot.replacement = Some(new.clone());
                            if !slot.held_by_operator {
                                slot.want = Want::Stop;
                                then_start.push(slot.id);
                            }
                        }
                    }
                }
                Some(new) => {
                    changed.push(name);
                    targets.push(self.target(i));
                    let slot = &mut self.slots[i];
                    slot.replacement = Some(new.clone());
                    if !slot.held_by_operator {
                        slot.want = Want::Stop;
                        then_start.push(slot.id);
                    }
                }
            }
        }
        self.set_prefix_width(&set.units);
        for unit in set.units {
            if self.index(&unit.name).is_none() {
                added.push(unit.name.clone());
                let slot = self.new_slot(unit);
                then_start.push(slot.id);
                self.slots.push(slot);
            }
        }
        self.slots.sort_by(|a, b| a.unit.name.cmp(&b.unit.name));
        self.relink();
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        let summary = format!(
            "added: {}; removed: {}; changed: {}; unchanged: {same}",
            list(&added),
            list(&removed),
            list(&changed)
        );
        Ok((targets, then_start, summary))
    }

    /// The router units a reload changes in place (a router before and
    /// after, with a task; everything but `[log]` applies), with their new
    /// spec and, when `listen` moved, the new address already bound. A
    /// bind failure refuses the whole reload, before anything changed.
    fn router_changes(&self, set: &UnitSet) -> Result<RouterChanges, String> {
        let mut out = RouterChanges::new();
        for slot in self.slots.iter().filter(|s| s.tx.is_some()) {
            let old = &slot.unit;
            let Some(new) = set.units.iter().find(|u| u.name == old.name) else { continue };
            let (Some(old_spec), Some(new_spec)) = (&old.router, &new.router) else { continue };
            if !new.enabled || **old == *new {
                continue;
            }
            if old.log != new.log {
                tracing::warn!(
                    "unit {}: a router's [log] changes take effect when flowinit next starts (its listen socket is kept)",
                    new.name
                );
            }
            let listener = if old_spec.listen == new_spec.listen {
                None
            } else {
                let bound = crate::router::bind(new_spec.listen).map_err(|e| {
                    crate::config::ConfigError {
                        file: new.file.clone(),
                        line: new_spec.listen_at.line,
                        column: new_spec.listen_at.column,
                        unit: Some(new.name.clone()),
                        message: format!("cannot listen on {}: {e}", new_spec.listen),
                    }
                    .to_string()
                })?;
                Some(bound)
            };
            out.insert(new.name.clone(), (Arc::new(new_spec.clone()), listener));
        }
        Ok(out)
    }

    /// Answers the requests whose units got where they were sent. True when
    /// it re-armed units to start.
    fn check_waiters(&mut self) -> bool {
        let mut rearmed = false;
        let waiters = std::mem::take(&mut self.waiters);
        for mut w in waiters {
            match self.waiter_outcome(&w) {
                None => self.waiters.push(w),
                Some(Err(e)) => {
                    let _ = w.reply.send(Err(e));
                }
                Some(Ok(())) if w.op == Op::Stop && !w.then_start.is_empty() => {
                    let ids = std::mem::take(&mut w.then_start);
                    let idx: Vec<usize> =
                        ids.iter().filter_map(|id| self.slots.iter().position(|s| s.id == *id)).collect();
                    for &i in &idx {
                        self.slots[i].rearm();
                    }
                    rearmed = true;
                    w.op = Op::Start;
                    w.targets = idx.iter().map(|&i| self.target(i)).collect();
                    self.waiters.push(w);
                }
                Some(Ok(())) => {
                    let mut names: Vec<String> = w
                        .targets
                        .iter()
                        .filter_map(|(id, _, _)| self.slots.iter().find(|s| s.id == *id).map(|s| s.unit.name.clone()))
                        .collect();
                    names.sort();
                    let msg = if names.is_empty() || w.verb.contains(':') {
                        w.verb.clone()
                    } else {
                        format!("{} {}", w.verb, names.join(", "))
                    };
                    let _ = w.reply.send(Ok(msg));
                }
            }
        }
        rearmed
    }

    fn waiter_outcome(&self, w: &Waiter) -> Option<Result<(), String>> {
        let mut errors = Vec::new();
        for &(id, generation, restarts) in &w.targets {
            let Some(s) = self.slots.iter().find(|s| s.id == id) else { continue };
            match w.op {
                Op::Stop => {
                    if s.generation == generation && !s.is_down() {
                        return None;
                    }
                }
                Op::Start => {
                    let st = &s.status;
                    if st.state == State::Failed {
                        errors.push(format!(
                            "unit {} failed: {}",
                            s.unit.name,
                            st.reason.as_deref().unwrap_or("no reason")
                        ));
                    } else if st.restarts > restarts && st.state == State::Starting {
                        errors.push(format!(
                            "unit {} did not come up: {}",
                            s.unit.name,
                            st.reason.as_deref().unwrap_or("it exited")
                        ));
                    } else if !(st.state.is_up() || st.state == State::Exited) {
                        return None;
                    }
                }
            }
        }
        Some(if errors.is_empty() { Ok(()) } else { Err(errors.join("\n")) })
    }

    /// The budget is spent: SIGKILL whatever is left, name who used it up.
    async fn budget_spent(&mut self) -> u8 {
        let code = self.shutdown.as_ref().map_or(0, |s| s.code);
        self.report_budget_spent();
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
        self.publish();
        code
    }

    /// Names the units that used the shutdown budget up: they were signalled
    /// and did not stop; the others were still waiting for their dependents.
    fn report_budget_spent(&self) {
        let names = |f: &dyn Fn(&Slot) -> bool| {
            let v: Vec<&str> = self.slots.iter().filter(|s| f(s)).map(|s| s.unit.name.as_str()).collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let late = names(&|s| (s.stop_sent && !s.is_down()) || s.status.killed_at_deadline);
        let waiting = names(&|s| !s.stop_sent && !s.is_down());
        tracing::error!(
            "shutdown budget of {} spent; still stopping: {late}; not yet signalled (waiting for dependents): {waiting}; sending SIGKILL to everything left",
            humantime::format_duration(self.opts.shutdown_timeout),
        );
    }

    /// Every unit is down; anything that escaped its group (a daemon that
    /// called setsid, an orphan) gets SIGTERM, then SIGKILL after a grace
    /// period cut to what is left of the budget.
    async fn sweep_leftovers(&mut self) {
        if tree::descendants().is_empty() {
            return;
        }
        let until = self.shutdown.as_ref().map_or(Instant::now(), |s| s.deadline).min(Instant::now() + LEFTOVER_GRACE);
        let (termed, killed) = terminate_descendants(until).await;
        tracing::info!("sent SIGTERM to {termed} leftover process(es)");
        if killed > 0 {
            tracing::warn!("sent SIGKILL to {killed} leftover process(es)");
        }
    }
}

fn describe_wait(name: &str, dep: &Slot) -> String {
    match dep.status.state {
        State::Stopped if dep.held_by_operator => format!("{name} (stopped by an operator)"),
        _ => name.to_string(),
    }
}

/// Last resort after an internal error: SIGTERM to every descendant, SIGKILL
/// to what is left after `grace`.
pub async fn kill_everything(grace: Duration) {
    terminate_descendants(Instant::now() + grace).await;
}

/// SIGTERM to every descendant, SIGKILL at `until` to whatever is left.
/// Returns how many got each signal. Polls only while something is left.
async fn terminate_descendants(until: Instant) -> (usize, usize) {
    let termed = kill_descendants(Signal::TERM);
    let mut pause = Duration::from_millis(2);
    while Instant::now() < until {
        if tree::descendants().is_empty() {
            return (termed, 0);
        }
        tokio::time::sleep(pause.min(until.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    (termed, kill_descendants(Signal::KILL))
}

fn kill_descendants(sig: Signal) -> usize {
    tree::descendants().into_iter().filter(|p| matches!(p.signal(sig), Ok(true))).count()
}

fn open_log_file(
    unit: &Unit,
) -> Option<(tracing_appender::non_blocking::NonBlocking, tracing_appender::non_blocking::WorkerGuard)> {
    use crate::config::unit::Rotation;
    use tracing_appender::rolling::{RollingFileAppender, Rotation as R};
    let path = unit.log.file.as_ref()?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name()?.to_string_lossy().into_owned();
    let rotation = match unit.log.rotate {
        Rotation::Never => R::NEVER,
        Rotation::Hourly => R::HOURLY,
        Rotation::Daily => R::DAILY,
    };
    let built = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix(name)
        .max_log_files(LOG_FILES_KEPT)
        .build(dir);
    match built {
        Ok(appender) => {
            Some(tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(appender))
        }
        Err(e) => {
            tracing::error!("unit {}: cannot open log file {}: {e}; logging to stdout only", unit.name, path.display());
            None
        }
    }
}

/// Rotated files kept per unit (the current one included).
const LOG_FILES_KEPT: usize = 7;
