//! The narrow waist between the supervisor and the layers that face
//! people and clients: what the control socket may ask ([`Request`],
//! answered through a [`Handle`] once done), what it may read (the
//! published [`Snapshot`], and what its units' processes use, sampled
//! when asked: [`sample_usage`]), what the router needs to know
//! ([`Readiness`] of the units its routes name, with the [`Traffic`] it
//! sends them, so that a unit's stop waits for its requests in flight) and
//! the counters the router keeps ([`RouterStats`], shown by `status`).
//! `control` and `router` import this module and never `supervisor`'s
//! internals (checked by `tests/layers.rs`).

use crate::config::Unit;
use crate::logs::RingLog;
use crate::process::usage::{self, Run};
use crate::process::{Pid, Termination};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// The directory a unit without `working_dir` starts in (flowinit's own
/// start directory, which flowinit itself leaves for `/`).
pub fn start_dir() -> Option<&'static std::path::Path> {
    crate::process::cwd::start_dir()
}

/// What the control socket may ask for. Each is answered once done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Start(Vec<String>),
    Stop(Vec<String>),
    Restart(Vec<String>),
    Reload,
}

/// Why a request was refused or did not get where it was sent. Each reads
/// as the answer to "what went wrong?".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("flowinit is shutting down")]
    ShuttingDown,
    #[error("name at least one unit")]
    NoUnits,
    #[error("unknown unit {name:?} (units: {known})")]
    UnknownUnit { name: String, known: String },
    #[error("unit {name} is {why}")]
    NotSupervised { name: String, why: String },
    /// Units that failed or did not come up, one line each.
    #[error("{}", .0.join("\n"))]
    Units(Vec<String>),
    /// A reload found invalid unit files: every error, one per line.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// `Ok(summary)` ("started flowise", a reload summary) or why not.
pub type Reply = Result<String, RequestError>;

pub(crate) struct ControlMsg {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

/// The cheap handle through which the control socket sends requests.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<ControlMsg>,
}

impl Handle {
    pub(crate) fn new(tx: mpsc::Sender<ControlMsg>) -> Handle {
        Handle { tx }
    }

    /// Sends `request` and waits until it is done (or refused).
    pub async fn call(&self, request: Request) -> Reply {
        let (reply, rx) = oneshot::channel();
        self.tx.send(ControlMsg { request, reply }).await.map_err(|_| RequestError::ShuttingDown)?;
        rx.await.map_err(|_| RequestError::ShuttingDown)?
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
}

impl UnitView {
    /// Counts toward health: not disabled, not stopped by an operator.
    pub fn is_active(&self) -> bool {
        self.status.state != State::Disabled && !self.held_stopped
    }
}

/// Everything `status` and `logs` show, published on every change.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub units: Vec<UnitView>,
    pub shutting_down: bool,
    /// The counters of each router unit, by unit name.
    pub routers: HashMap<String, Arc<RouterStats>>,
}

impl Snapshot {
    pub fn router_stats(&self, unit: &str) -> Option<&RouterStats> {
        self.routers.get(unit).map(|s| &**s)
    }
}

pub use crate::process::usage::Usage;

/// What the processes of each of `views` use now (None for a unit without
/// a process): one pass over /proc, however many units. Nothing samples
/// unless asked: this runs when `status` is answered.
pub fn sample_usage(views: &[&UnitView]) -> Vec<Option<Usage>> {
    let runs: Vec<(usize, Run<'_>)> = views
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Some((i, Run { pid: v.status.pid?, tag: v.status.run.as_deref() })))
        .collect();
    let sampled = usage::sample(&runs.iter().map(|(_, r)| *r).collect::<Vec<_>>());
    let mut out = vec![None; views.len()];
    for ((i, _), u) in runs.iter().zip(sampled) {
        out[*i] = u;
    }
    out
}

/// The state of every unit by name: all the router needs of the
/// supervisor (a route whose unit is not up answers 503), and each unit's
/// [`Traffic`].
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    units: HashMap<String, State>,
    traffic: HashMap<String, Arc<Traffic>>,
}

/// Equal when the states are: the traffic counters are the same for as
/// long as a unit's name exists.
impl PartialEq for Readiness {
    fn eq(&self, other: &Readiness) -> bool {
        self.units == other.units
            && self.traffic.len() == other.traffic.len()
            && self.traffic.iter().all(|(k, t)| other.traffic.get(k).is_some_and(|o| Arc::ptr_eq(t, o)))
    }
}

impl Eq for Readiness {}

impl Readiness {
    pub fn new(units: impl IntoIterator<Item = (String, State)>) -> Readiness {
        Readiness { units: units.into_iter().collect(), traffic: HashMap::new() }
    }

    /// With each unit's traffic counter (kept by the supervisor per name).
    pub fn with_traffic(mut self, traffic: impl IntoIterator<Item = (String, Arc<Traffic>)>) -> Readiness {
        self.traffic = traffic.into_iter().collect();
        self
    }

    /// The unit's state, if it exists.
    pub fn state(&self, unit: &str) -> Option<State> {
        self.units.get(unit).copied()
    }

    /// The unit's state, and when it is up, a request sent to it: counted
    /// in flight until the guard is dropped. Call it on a borrow of the
    /// published value (`watch::Receiver::borrow`): the count is then
    /// taken under the same lock as the state is published with, so a unit
    /// that sees itself `stopping` also sees every request that was sent
    /// to it while it was up (see [`Traffic::drained`]).
    pub fn enter(&self, unit: &str) -> Option<(State, Option<TrafficGuard>)> {
        let state = self.state(unit)?;
        let guard = state.is_up().then(|| self.traffic.get(unit).map(|t| t.enter())).flatten();
        Some((state, guard))
    }
}

/// Requests the routers sent to one unit and have not finished answering
/// (the response body included). A stop of the unit waits for it to reach
/// 0 before the stop signal (within stop_timeout), so a graceful restart
/// does not cut requests off.
#[derive(Debug, Default)]
pub struct Traffic {
    in_flight: AtomicU64,
}

impl Traffic {
    pub fn enter(self: &Arc<Self>) -> TrafficGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        TrafficGuard(self.clone())
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// No request to `unit` is in flight and none can start: the published
    /// state (read under the same lock as [`Readiness::enter`]) is not up.
    pub fn drained(&self, readiness: &Readiness, unit: &str) -> bool {
        !readiness.state(unit).is_some_and(State::is_up) && self.in_flight() == 0
    }
}

/// One request in flight to a unit; dropping it ends the request.
#[derive(Debug)]
pub struct TrafficGuard(Arc<Traffic>);

impl Drop for TrafficGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counters a router unit keeps while it serves, shown by
/// `flowinit status ROUTER`. Owned by the router; the supervisor only
/// creates them so that they outlive restarts.
#[derive(Debug, Default)]
pub struct RouterStats {
    pub requests: AtomicU64,
    pub in_flight: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub not_ready: AtomicU64,
    /// Connections answered 503 and closed because `max_connections` were
    /// open.
    pub over_limit: AtomicU64,
    /// The connection cap in force (set when the router starts or is
    /// reconfigured).
    pub max_connections: AtomicU64,
    /// Client connections open now.
    pub connections: AtomicU64,
    /// Per route, by its configured prefix ("" for requests no route
    /// took): what `GET /metrics` shows. Kept across reconfigurations, so
    /// counters never go back.
    pub routes: std::sync::Mutex<std::collections::BTreeMap<String, Arc<RouteStats>>>,
}

impl RouterStats {
    /// The counters of the route with `prefix`, made on first use.
    pub fn route(&self, prefix: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match routes.get(prefix) {
            Some(r) => r.clone(),
            None => routes.entry(prefix.to_string()).or_default().clone(),
        }
    }
}

/// Upper bounds (seconds) of the request duration histogram; the last
/// bucket, +Inf, is implied.
pub const DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One route's counters: answers by status class, the time to the
/// response head as a histogram, and upstream failures.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Answers by class: 1xx … 5xx at 0 … 4.
    pub by_class: [AtomicU64; 5],
    /// Observations per bucket (not cumulative); the last is +Inf.
    pub buckets: [AtomicU64; 12],
    /// The sum of the durations, in microseconds.
    pub duration_micros: AtomicU64,
    pub upstream_errors: AtomicU64,
}

impl RouteStats {
    /// Counts one answer with `status`, its head `took` after the request.
    pub fn observe(&self, status: u16, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        let bucket = DURATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.duration_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
}

/// The exact state names of the contract (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Inactive,
    Starting,
    Ready,
    Running,
    Stopping,
    Exited,
    Failed,
    Stopped,
    Disabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Starting => "starting",
            State::Ready => "ready",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Failed => "failed",
            State::Stopped => "stopped",
            State::Disabled => "disabled",
        }
    }

    /// Ready or running: dependents may start.
    pub fn is_up(self) -> bool {
        matches!(self, State::Ready | State::Running)
    }

    /// No process and none coming by itself.
    pub fn is_settled(self) -> bool {
        matches!(self, State::Exited | State::Failed | State::Stopped | State::Disabled)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stop ended in SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// The unit's own stop_timeout passed.
    StopTimeout,
    /// The caller's deadline (the shutdown budget) came first.
    Budget,
    /// The stop was hurried (a second stop signal to flowinit).
    Hurried,
}

/// A unit's status as its task reports it and `status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitStatus {
    pub state: State,
    pub pid: Option<Pid>,
    pub restarts: u32,
    pub since: SystemTime,
    pub reason: Option<String>,
    pub last_exit: Option<Termination>,
    /// Why the last stop ended in SIGKILL, if it did.
    pub killed: Option<KillReason>,
    /// The last failed probe attempt (readiness or liveness), cleared on success.
    pub probe_error: Option<String>,
    pub probe_ok_at: Option<SystemTime>,
    /// `STATUS=` from a notify unit.
    pub status_text: Option<String>,
    /// `MAINPID=` from a notify unit.
    pub main_pid: Option<Pid>,
    /// When the current process was started (for uptime).
    pub started_at: Option<SystemTime>,
    /// The current run's tag (`FLOWINIT_RUN`), by which its processes that
    /// left its session are found.
    pub run: Option<Arc<str>>,
    /// Restarts because the unit stayed above memory_max (also counted in
    /// `restarts`).
    pub memory_restarts: u32,
    /// Set by the unit's task when it fails for good by itself (start
    /// limit, `restart = "no"`): how its last runs went, for the block
    /// flowinit prints then. `None` otherwise, and for a failure the
    /// supervisor imposed (a required unit failed).
    pub failure: Option<Arc<Failure>>,
}

/// A unit's runs within its start-limit window when it failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Oldest first; the last one is the run that ended it.
    pub runs: Vec<RunSummary>,
    /// From the first of these starts to the failure.
    pub span: Duration,
    pub start_limit_burst: u32,
    pub start_limit_interval: Duration,
    /// `restart = "no"`: failed at its first failure.
    pub no_restart: bool,
}

/// One start of a unit's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// How long the process ran; `None` when it could not be started.
    pub ran: Option<Duration>,
    /// How it ended: `exited 3`, `killed by SIGKILL`, `not ready within …`.
    pub end: String,
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
            killed: None,
            probe_error: None,
            probe_ok_at: None,
            status_text: None,
            main_pid: None,
            started_at: None,
            run: None,
            memory_restarts: 0,
            failure: None,
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
