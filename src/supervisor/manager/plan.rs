//! The supervisor's decisions, synchronous and free of I/O: a [`Plan`]
//! takes an [`Event`] (a unit's new status, a control request, a loaded
//! reload, a stop signal, the shutdown budget running out) with the time it
//! happened, and returns the [`Command`]s to carry out (create or drop a
//! unit's task, send it start/stop/hurry, apply a router change, answer a
//! request, print the block about a unit that failed for good, SIGKILL
//! everything). The async runner (`mod.rs`) only performs
//! them. Every rule of order, failure, reload and budget is here, and is
//! table-tested without processes (`tests.rs`).

use super::reload::{self, Diff};
use super::waiters::{Op, Target, Waiter};
use crate::api::{Reply, RequestError};
use crate::config::{Unit, UnitSet};
use crate::process::Signal;
use crate::supervisor::state::{KillReason, State};
use crate::supervisor::unit_task::{UnitCmd, UnitStatus};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After a second SIGTERM/SIGINT, no stop waits longer than this.
pub const HURRIED_WAIT: Duration = Duration::from_secs(1);
/// An operator's stop has no budget: only each unit's stop_timeout.
pub const NO_DEADLINE: Duration = Duration::from_secs(365 * 86400);

/// A unit's place in the plan; stays the same across reloads of its file.
pub type SlotId = u64;

/// Names a control request until it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A control request the plan answers itself; `flowinit reload` is read by
/// the runner first and arrives as [`Event::Reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitRequest {
    Start(Vec<String>),
    Stop(Vec<String>),
    Restart(Vec<String>),
}

/// What happened.
#[derive(Debug)]
pub enum Event {
    /// A unit task reported its status.
    Status { slot: SlotId, status: UnitStatus },
    /// A control request on units (a reload comes as [`Event::Reload`]).
    Request { id: RequestId, request: UnitRequest },
    /// The units dir was read again for a reload: the units, or every
    /// error (one line each).
    Reload { id: RequestId, loaded: Result<UnitSet, Vec<String>> },
    /// SIGTERM, SIGINT or SIGQUIT.
    StopSignal(Signal),
    /// The shutdown budget ran out ([`Plan::deadline`] passed).
    BudgetSpent,
}

/// What to do, in order.
#[derive(Debug)]
pub enum Command {
    /// Create the slot's unit task for `unit` (a new unit, or a replaced
    /// definition once the old one is down).
    Attach {
        slot: SlotId,
        unit: Arc<Unit>,
    },
    /// Drop the slot's task: the unit was removed, or is now disabled.
    Detach {
        slot: SlotId,
    },
    Send {
        slot: SlotId,
        cmd: UnitCmd,
    },
    /// The router unit's new definition, applied while it runs.
    Reconfigure {
        slot: SlotId,
        unit: Arc<Unit>,
    },
    Reply {
        id: RequestId,
        reply: Reply,
    },
    /// The budget is spent: SIGKILL every descendant of flowinit.
    KillAll,
    /// Print the block about the slot's unit, which failed for good by
    /// itself (its status carries the [`crate::api::Failure`]). The unit
    /// that ends the container gets its block last instead, before the
    /// farewell line ([`Plan::ended_by`]).
    Diagnose {
        slot: SlotId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Run,
    Stop,
    /// Stop, then drop the slot (removed by a reload).
    Remove,
}

/// One unit as the plan knows it.
#[derive(Debug)]
pub struct Slot {
    pub id: SlotId,
    /// Bumped when a reload replaces the unit's definition.
    pub generation: u64,
    pub unit: Arc<Unit>,
    pub status: UnitStatus,
    /// It has a task (enabled, with a service or a router).
    supervised: bool,
    want: Want,
    held_by_operator: bool,
    start_sent: bool,
    stop_sent: bool,
    /// The deadline of the stop sent in a shutdown: the end of the budget
    /// for the last units of a chain, earlier for a share.
    stop_deadline: Option<Instant>,
    /// Set when the plan stopped the unit because a required unit failed:
    /// it ends `failed` with this reason, not `stopped`.
    failed_because: Option<String>,
    /// A new definition from a reload, applied once the old one is down.
    replacement: Option<Arc<Unit>>,
}

impl Slot {
    fn new(id: SlotId, unit: Arc<Unit>) -> Slot {
        let mut slot = Slot {
            id,
            generation: 0,
            unit: unit.clone(),
            status: UnitStatus::new(State::Inactive, None),
            supervised: false,
            want: Want::Run,
            held_by_operator: false,
            start_sent: false,
            stop_sent: false,
            stop_deadline: None,
            failed_because: None,
            replacement: None,
        };
        slot.define(unit);
        slot
    }

    /// Takes `unit` as the slot's definition, fresh for a first start.
    /// (A unit that is off is shown with why: [`disabled_reason`].)
    fn define(&mut self, unit: Arc<Unit>) {
        self.supervised = unit.enabled && (unit.service.is_some() || unit.router.is_some());
        self.status = if self.supervised {
            UnitStatus::new(State::Inactive, None)
        } else {
            UnitStatus::new(State::Disabled, Some(disabled_reason(&unit.profiles)))
        };
        self.unit = unit;
        self.reset_for_start();
    }

    /// Nothing running and nothing left to do for a stop.
    pub fn is_down(&self) -> bool {
        self.status.state.is_settled() || (self.status.state == State::Inactive && !self.start_sent)
    }

    /// Ready for a new start: forget how the last run ended.
    fn rearm(&mut self) {
        self.want = Want::Run;
        self.held_by_operator = false;
        if self.is_down() && self.supervised {
            self.reset_for_start();
            self.status.state = State::Inactive;
            self.status.reason = None;
        }
    }

    /// SIGKILLed because its stop deadline, the end of the whole budget,
    /// came.
    fn killed_at_budget_end(&self, end: Instant) -> bool {
        self.status.killed == Some(KillReason::Budget) && self.stop_deadline.is_some_and(|d| d >= end)
    }

    /// Nothing sent to the task yet for the next run.
    fn reset_for_start(&mut self) {
        self.start_sent = false;
        self.stop_sent = false;
        self.stop_deadline = None;
        self.failed_because = None;
    }

    /// Stopped by an operator and kept so: not counted by the health check.
    pub fn held_stopped(&self) -> bool {
        self.held_by_operator && self.want == Want::Stop
    }

    /// The most a stop of this unit may take by its own settings.
    fn stop_timeout(&self) -> Duration {
        match (&self.unit.service, &self.unit.router) {
            (Some(s), _) => s.stop_timeout,
            (None, Some(r)) => r.stop_timeout,
            (None, None) => Duration::ZERO,
        }
    }
}

#[derive(Debug)]
struct Shutdown {
    deadline: Instant,
    code: u8,
    hurried: bool,
    /// The "budget spent" line was logged.
    reported: bool,
    /// The critical unit whose failure started this shutdown.
    ended_by: Option<SlotId>,
}

pub struct Plan {
    slots: Vec<Slot>,
    /// dependents[i]: units ordered after unit i (any kind of edge, routes
    /// included).
    dependents: Vec<Vec<usize>>,
    /// Slot index by unit name; rebuilt with `dependents`.
    by_name: HashMap<String, usize>,
    next_id: SlotId,
    waiters: Vec<Waiter>,
    shutdown: Option<Shutdown>,
    budget: Duration,
}

impl Plan {
    /// A plan for `set`, nothing started; `budget` is the shutdown budget.
    pub fn new(set: UnitSet, budget: Duration) -> Plan {
        let mut plan = Plan {
            slots: Vec::new(),
            dependents: Vec::new(),
            by_name: HashMap::new(),
            next_id: 0,
            waiters: Vec::new(),
            shutdown: None,
            budget,
        };
        for unit in set.units {
            let slot = plan.new_slot(unit);
            plan.slots.push(slot);
        }
        plan.relink();
        plan
    }

    /// The first commands: every supervised unit's task, then the starts
    /// that nothing holds back.
    pub fn begin(&mut self, now: Instant) -> Vec<Command> {
        let mut out: Vec<Command> = self
            .slots
            .iter()
            .filter(|s| s.supervised)
            .map(|s| Command::Attach { slot: s.id, unit: s.unit.clone() })
            .collect();
        self.settle(now, &mut out);
        out
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Command> {
        self.handle_all(now, [event])
    }

    /// Takes several events, then decides once: 200 units reporting at
    /// once cost one pass over the units, not 200.
    pub fn handle_all(&mut self, now: Instant, events: impl IntoIterator<Item = Event>) -> Vec<Command> {
        let mut out = Vec::new();
        for event in events {
            match event {
                Event::Status { slot, status } => self.on_status(now, slot, status, &mut out),
                Event::Request { id, request } => self.on_request(id, request, &mut out),
                Event::Reload { id, loaded } => self.on_reload(id, loaded, &mut out),
                Event::StopSignal(sig) => self.on_stop_signal(now, sig, &mut out),
                Event::BudgetSpent => {
                    self.budget_spent(now, &mut out);
                    return out;
                }
            }
        }
        self.settle(now, &mut out);
        out
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// When the shutdown budget runs out, once shutting down.
    pub fn deadline(&self) -> Option<Instant> {
        self.shutdown.as_ref().map(|s| s.deadline)
    }

    /// Once shutting down and every unit is down: the exit code. Names the
    /// units that used the budget up if a unit's own SIGKILL at the
    /// budget's end came before [`Event::BudgetSpent`]. A unit SIGKILLed at
    /// the end of its share (the units behind it got the rest) did not
    /// spend the budget.
    pub fn finished(&mut self) -> Option<u8> {
        let end = self.shutdown.as_ref()?.deadline;
        if !self.slots.iter().all(Slot::is_down) {
            return None;
        }
        if self.slots.iter().any(|s| s.killed_at_budget_end(end)) {
            self.report_budget_spent();
        }
        self.shutdown.as_ref().map(|s| s.code)
    }

    /// The "shutdown budget spent" error was reported in this shutdown.
    pub fn budget_reported(&self) -> bool {
        self.shutdown.as_ref().is_some_and(|s| s.reported)
    }

    /// The critical unit that failed for good and so ends the container:
    /// its block is the last thing flowinit prints before its farewell.
    pub fn ended_by(&self) -> Option<SlotId> {
        self.shutdown.as_ref()?.ended_by
    }

    /// The code flowinit exits with: 1 after a critical failure, else 0.
    pub fn exit_code(&self) -> u8 {
        self.shutdown.as_ref().map_or(0, |s| s.code)
    }

    fn new_slot(&mut self, unit: Unit) -> Slot {
        self.next_id += 1;
        Slot::new(self.next_id, Arc::new(unit))
    }

    /// Recomputes the name index and the reverse edges after the set of
    /// slots or their definitions changed.
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

    fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn position(&self, id: SlotId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// Sends what the states allow, answers what is done, and again while
    /// an answer re-armed units (restart, reload).
    fn settle(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.advance(now, out);
        while self.check_waiters(out) {
            self.advance(now, out);
        }
    }

    /// A unit's new status. One that failed for good gets its block
    /// printed: at once, or, for the critical unit that ends the container,
    /// last of all. A failure the plan imposed (a required unit failed)
    /// has no block of its own, unless it ends the container.
    fn on_status(&mut self, now: Instant, id: SlotId, mut status: UnitStatus, out: &mut Vec<Command>) {
        let Some(i) = self.position(id) else { return };
        let slot = &mut self.slots[i];
        if let (Some(why), true) = (&slot.failed_because, status.state.is_settled()) {
            status.state = State::Failed;
            status.reason = Some(why.clone());
        }
        let newly_failed = status.state == State::Failed && slot.status.state != State::Failed;
        slot.status = status;
        if !newly_failed {
            return;
        }
        if slot.unit.critical && self.shutdown.is_none() {
            tracing::error!(
                "critical unit {} failed for good ({}); stopping everything",
                slot.unit.name,
                slot.status.reason.as_deref().unwrap_or("no reason")
            );
            self.begin_shutdown(now, 1);
            if let Some(sd) = self.shutdown.as_mut() {
                sd.ended_by = Some(id);
            }
        } else if slot.status.failure.is_some() {
            out.push(Command::Diagnose { slot: id });
        }
    }

    fn on_stop_signal(&mut self, now: Instant, sig: Signal, out: &mut Vec<Command>) {
        match &mut self.shutdown {
            None => {
                tracing::info!(
                    "{sig} received: stopping all units (budget {})",
                    humantime::format_duration(self.budget)
                );
                self.begin_shutdown(now, 0);
            }
            Some(sd) => {
                tracing::warn!(
                    "{sig} received during shutdown: cutting every stop wait to {}",
                    humantime::format_duration(HURRIED_WAIT)
                );
                sd.hurried = true;
                let deadline = (now + HURRIED_WAIT).min(sd.deadline);
                for slot in self.slots.iter().filter(|s| s.stop_sent && !s.is_down()) {
                    out.push(Command::Send { slot: slot.id, cmd: UnitCmd::Hurry { deadline } });
                }
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant, code: u8) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown =
            Some(Shutdown { deadline: now + self.budget, code, hurried: false, reported: false, ended_by: None });
        for slot in &mut self.slots {
            if slot.want == Want::Run {
                slot.want = Want::Stop;
            }
        }
    }

    /// The budget is spent: SIGKILL whatever is left, name who used it up.
    fn budget_spent(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.report_budget_spent();
        for slot in self.slots.iter().filter(|s| !s.is_down() && s.supervised) {
            out.push(Command::Send { slot: slot.id, cmd: UnitCmd::Stop { deadline: now } });
            out.push(Command::Send { slot: slot.id, cmd: UnitCmd::Hurry { deadline: now } });
        }
        out.push(Command::KillAll);
    }

    /// Names the units that used the shutdown budget up: they were
    /// signalled and did not stop; the others were still waiting for their
    /// dependents. Once per shutdown.
    fn report_budget_spent(&mut self) {
        let Some(sd) = self.shutdown.as_mut() else { return };
        if std::mem::replace(&mut sd.reported, true) {
            return;
        }
        let end = sd.deadline;
        let names = |f: &dyn Fn(&Slot) -> bool| {
            let v: Vec<&str> = self.slots.iter().filter(|s| f(s)).map(|s| s.unit.name.as_str()).collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let late = names(&|s| (s.stop_sent && !s.is_down()) || s.killed_at_budget_end(end));
        let waiting = names(&|s| !s.stop_sent && !s.is_down());
        tracing::error!(
            "shutdown budget of {} spent; still stopping: {late}; not yet signalled (waiting for dependents): {waiting}; sending SIGKILL to everything left",
            humantime::format_duration(self.budget),
        );
    }

    /// Starts and stops whatever the current states allow.
    fn advance(&mut self, now: Instant, out: &mut Vec<Command>) {
        let mut cmds: Vec<(usize, UnitCmd)> = Vec::new();
        for i in 0..self.slots.len() {
            if self.shutdown.is_some() {
                break;
            }
            if self.slots[i].want == Want::Run {
                if let Some(cmd) = self.next_start(i, now) {
                    cmds.push((i, cmd));
                }
            }
        }
        // A start decided above may have been overtaken by a critical
        // failure in the same pass: then nothing starts.
        if self.shutdown.is_some() {
            cmds.retain(|(_, c)| !matches!(c, UnitCmd::Start));
        }
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.want == Want::Run || slot.stop_sent || slot.is_down() {
                continue;
            }
            if !self.stop_blocked(i) {
                cmds.push((i, UnitCmd::Stop { deadline: self.stop_deadline(i, now) }));
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
                UnitCmd::Stop { deadline } => {
                    slot.stop_sent = true;
                    slot.stop_deadline = Some(deadline);
                }
                _ => {}
            }
            out.push(Command::Send { slot: slot.id, cmd });
        }
        self.apply_replacements_and_removals(out);
    }

    /// When a stop sent now must be over. Outside a shutdown only the
    /// unit's own stop_timeout counts. In a shutdown the budget left is
    /// shared along the longest chain of units that still have to stop
    /// after this one (what it requires, wants, is ordered after, or routes
    /// to), in proportion to their stop_timeouts: a unit gets its whole
    /// stop_timeout when the chain fits, and never so much that the units
    /// behind it are left without time for their own stop (the router's
    /// drain cannot eat Postgres's time). After a second stop signal, no
    /// more than [`HURRIED_WAIT`].
    fn stop_deadline(&self, i: usize, now: Instant) -> Instant {
        let Some(sd) = &self.shutdown else { return now + NO_DEADLINE };
        let left = sd.deadline.saturating_duration_since(now);
        let chain = self.chain_behind(i, &mut HashMap::new());
        let own = self.slots[i].stop_timeout();
        let share = if chain.is_zero() { left } else { left.mul_f64(own.as_secs_f64() / chain.as_secs_f64()) };
        let mut deadline = (now + share).min(sd.deadline);
        if sd.hurried {
            deadline = deadline.min(now + HURRIED_WAIT);
        }
        deadline
    }

    /// The longest sum of stop_timeouts from unit `i` through the units
    /// that stop after it and are not down yet (`i` included).
    fn chain_behind(&self, i: usize, memo: &mut HashMap<usize, Duration>) -> Duration {
        if let Some(d) = memo.get(&i) {
            return *d;
        }
        let slot = &self.slots[i];
        let own = if slot.is_down() { Duration::ZERO } else { slot.stop_timeout() };
        let deps: Vec<usize> =
            slot.unit.ordering_deps().chain(slot.unit.routed_units()).filter_map(|d| self.index(d)).collect();
        let behind = deps.into_iter().map(|j| self.chain_behind(j, memo)).max().unwrap_or_default();
        let total = own + behind;
        memo.insert(i, total);
        total
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
    fn apply_replacements_and_removals(&mut self, out: &mut Vec<Command>) {
        let mut changed = false;
        let mut i = 0;
        while i < self.slots.len() {
            let slot = &mut self.slots[i];
            if !slot.is_down() {
                i += 1;
                continue;
            }
            if slot.want == Want::Remove {
                tracing::info!("unit {} removed", slot.unit.name);
                out.push(Command::Detach { slot: slot.id });
                self.slots.remove(i);
                changed = true;
                continue;
            }
            if let Some(unit) = slot.replacement.take() {
                slot.generation += 1;
                let keep_stopped = slot.held_by_operator;
                slot.define(unit.clone());
                out.push(if slot.supervised {
                    Command::Attach { slot: slot.id, unit }
                } else {
                    Command::Detach { slot: slot.id }
                });
                slot.want = if keep_stopped { Want::Stop } else { Want::Run };
                slot.held_by_operator = keep_stopped;
                if keep_stopped && slot.supervised {
                    slot.status = UnitStatus::new(State::Stopped, Some("stopped by an operator".into()));
                    slot.start_sent = true;
                    slot.stop_sent = true;
                }
                changed = true;
            }
            i += 1;
        }
        if changed {
            self.relink();
        }
    }

    /// The start to send unit `i` now, if its dependencies allow; records
    /// what it waits for otherwise. A unit whose required unit failed for
    /// good fails too (stopped first if it runs).
    fn next_start(&mut self, i: usize, now: Instant) -> Option<UnitCmd> {
        let slot = &self.slots[i];
        if !slot.supervised || slot.replacement.is_some() {
            return None;
        }
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
                    let id = slot.id;
                    // An imposed failure carries no runs: no command comes of it.
                    self.on_status(now, id, UnitStatus::new(State::Failed, Some(why)), &mut Vec::new());
                    return None;
                }
                tracing::error!("unit {}: stopping: {why}", slot.unit.name);
                slot.stop_sent = true;
                return Some(UnitCmd::Stop { deadline: now + NO_DEADLINE });
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
            let will_start = d.supervised && d.want == Want::Run && !d.start_sent;
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

    /// Slot indices of `names`, or why a request cannot name them.
    fn resolve(&self, names: &[String]) -> Result<Vec<usize>, RequestError> {
        if names.is_empty() {
            return Err(RequestError::NoUnits);
        }
        let mut out = Vec::new();
        for n in names {
            let Some(i) = self.index(n) else {
                let known: Vec<&str> = self.slots.iter().map(|s| s.unit.name.as_str()).collect();
                return Err(RequestError::UnknownUnit { name: n.clone(), known: known.join(", ") });
            };
            if !self.slots[i].supervised {
                let why = self.slots[i].status.reason.clone().unwrap_or_else(|| "disabled".into());
                return Err(RequestError::NotSupervised { name: n.clone(), why });
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
                if self.slots[j].supervised && seen.insert(j) {
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
        Target { slot: s.id, generation: s.generation, restarts: s.status.restarts }
    }

    fn on_request(&mut self, id: RequestId, request: UnitRequest, out: &mut Vec<Command>) {
        if self.shutdown.is_some() {
            out.push(Command::Reply { id, reply: Err(RequestError::ShuttingDown) });
            return;
        }
        let waiter = match request {
            UnitRequest::Start(names) => self.resolve(&names).map(|roots| {
                for i in self.closure(&roots, |i| self.requirements_of(i)) {
                    self.slots[i].rearm();
                }
                let targets = roots.iter().map(|&i| self.target(i)).collect();
                Waiter { id, op: Op::Start, targets, then_start: Vec::new(), verb: "started".into() }
            }),
            UnitRequest::Stop(names) => self.resolve(&names).map(|roots| {
                let set = self.closure(&roots, |i| self.requirers_of(i));
                for &i in &set {
                    self.slots[i].want = Want::Stop;
                    self.slots[i].held_by_operator = true;
                }
                let targets = set.iter().map(|&i| self.target(i)).collect();
                Waiter { id, op: Op::Stop, targets, then_start: Vec::new(), verb: "stopped".into() }
            }),
            UnitRequest::Restart(names) => self.resolve(&names).map(|roots| {
                let set = self.closure(&roots, |i| self.requirers_of(i));
                for &i in &set {
                    self.slots[i].want = Want::Stop;
                }
                let targets = set.iter().map(|&i| self.target(i)).collect();
                let then_start = set.iter().map(|&i| self.slots[i].id).collect();
                Waiter { id, op: Op::Stop, targets, then_start, verb: "restarted".into() }
            }),
        };
        match waiter {
            Ok(w) => self.waiters.push(w),
            Err(e) => out.push(Command::Reply { id, reply: Err(e) }),
        }
    }

    /// Applies a reload: removed units are stopped then forgotten, changed
    /// units stopped and started with their new definition (a router's
    /// change goes to the running router instead), new units started.
    /// Invalid files change nothing.
    fn on_reload(&mut self, id: RequestId, loaded: Result<UnitSet, Vec<String>>, out: &mut Vec<Command>) {
        if self.shutdown.is_some() {
            out.push(Command::Reply { id, reply: Err(RequestError::ShuttingDown) });
            return;
        }
        let set = match loaded {
            Ok(set) => set,
            Err(errors) => {
                for line in &errors {
                    tracing::error!("reload refused, keeping the running units: {line}");
                }
                out.push(Command::Reply { id, reply: Err(RequestError::Invalid(errors)) });
                return;
            }
        };
        let diff = reload::diff(self.slots.iter().map(|s| &*s.unit), set);
        let summary = diff.summary();
        tracing::info!("reload: {summary}");
        let Diff { added, removed, replaced, reconfigured, .. } = diff;
        let mut targets = Vec::new();
        let mut then_start = Vec::new();
        for name in removed {
            let Some(i) = self.index(&name) else { continue };
            targets.push(self.target(i));
            self.slots[i].want = Want::Remove;
        }
        for unit in replaced {
            let Some(i) = self.index(&unit.name) else { continue };
            targets.push(self.target(i));
            let slot = &mut self.slots[i];
            slot.replacement = Some(Arc::new(unit));
            if !slot.held_by_operator {
                slot.want = Want::Stop;
                then_start.push(slot.id);
            }
        }
        for unit in reconfigured {
            let Some(i) = self.index(&unit.name) else { continue };
            let unit = Arc::new(unit);
            self.slots[i].unit = unit.clone();
            out.push(Command::Reconfigure { slot: self.slots[i].id, unit });
        }
        for unit in added {
            let slot = self.new_slot(unit);
            if slot.supervised {
                out.push(Command::Attach { slot: slot.id, unit: slot.unit.clone() });
                then_start.push(slot.id);
            }
            self.slots.push(slot);
        }
        self.slots.sort_by(|a, b| a.unit.name.cmp(&b.unit.name));
        self.relink();
        self.waiters.push(Waiter { id, op: Op::Stop, targets, then_start, verb: summary });
    }

    /// Answers the requests whose units got where they were sent. True when
    /// it re-armed units to start.
    fn check_waiters(&mut self, out: &mut Vec<Command>) -> bool {
        let mut rearmed = false;
        for mut w in std::mem::take(&mut self.waiters) {
            match self.waiter_outcome(&w) {
                None => self.waiters.push(w),
                Some(Err(e)) => out.push(Command::Reply { id: w.id, reply: Err(e) }),
                Some(Ok(())) if w.op == Op::Stop && !w.then_start.is_empty() => {
                    let idx: Vec<usize> = w.then_start.iter().filter_map(|id| self.position(*id)).collect();
                    for &i in &idx {
                        self.slots[i].rearm();
                    }
                    rearmed = true;
                    w.op = Op::Start;
                    w.then_start.clear();
                    w.targets = idx.iter().map(|&i| self.target(i)).collect();
                    self.waiters.push(w);
                }
                Some(Ok(())) => {
                    let names = w
                        .targets
                        .iter()
                        .filter_map(|t| self.position(t.slot).map(|i| self.slots[i].unit.name.clone()))
                        .collect();
                    out.push(Command::Reply { id: w.id, reply: Ok(w.answer(names)) });
                }
            }
        }
        if self.shutdown.is_some() {
            for w in self.waiters.drain(..) {
                out.push(Command::Reply { id: w.id, reply: Err(RequestError::ShuttingDown) });
            }
        }
        rearmed
    }

    fn waiter_outcome(&self, w: &Waiter) -> Option<Result<(), RequestError>> {
        let mut errors = Vec::new();
        for t in &w.targets {
            let Some(s) = self.position(t.slot).map(|i| &self.slots[i]) else { continue };
            match w.op {
                Op::Stop => {
                    if s.generation == t.generation && !s.is_down() {
                        return None;
                    }
                }
                Op::Start => {
                    let st = &s.status;
                    if st.state == State::Failed {
                        let why = st.reason.as_deref().unwrap_or("no reason");
                        errors.push(format!("unit {} failed: {why}", s.unit.name));
                    } else if st.restarts > t.restarts && st.state == State::Starting {
                        let why = st.reason.as_deref().unwrap_or("it exited");
                        errors.push(format!("unit {} did not come up: {why}", s.unit.name));
                    } else if !(st.state.is_up() || st.state == State::Exited || st.state == State::Disabled) {
                        return None;
                    }
                }
            }
        }
        Some(if errors.is_empty() { Ok(()) } else { Err(RequestError::Units(errors)) })
    }
}

fn describe_wait(name: &str, dep: &Slot) -> String {
    match dep.status.state {
        State::Stopped if dep.held_by_operator => format!("{name} (stopped by an operator)"),
        _ => name.to_string(),
    }
}

/// Why a unit is off, from its `profiles`: `disabled (profile dev)` for the
/// profiles that turn it on, `not in profile worker` for the `!worker`s.
fn disabled_reason(profiles: &[String]) -> String {
    let (off, on): (Vec<&String>, Vec<&String>) = profiles.iter().partition(|p| p.starts_with('!'));
    let on = on.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
    let off = off.iter().map(|p| &p[1..]).collect::<Vec<_>>().join(", ");
    match (on.is_empty(), off.is_empty()) {
        (false, true) => format!("disabled (profile {on})"),
        (true, false) => format!("disabled (not in profile {off})"),
        _ => format!("disabled (profile {on}; not in profile {off})"),
    }
}
