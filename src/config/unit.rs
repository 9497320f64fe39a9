//! The validated unit model: what the supervisor runs. Every value here has
//! been checked, expanded and resolved (program path, user ids), so nothing
//! downstream needs to fail on configuration.

use crate::process::signal::Signal;
use crate::process::tree::RUN_TAG_VAR;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use super::raw::{RestartPolicy, Rotation, ServiceKind};

/// Bytes of `sockaddr_un.sun_path` on Linux. A notify unit's socket is in
/// the abstract namespace: the first byte is a NUL, the name gets the rest.
pub const NOTIFY_ADDRESS_MAX: usize = 108;

/// The abstract-namespace name of a notify unit's socket (bound by
/// `probe::notify`; NOTIFY_SOCKET is `@` and this name).
pub fn notify_socket_name(pid: u32, unit: &str, seq: u64) -> String {
    format!("flowinit/{pid}/{unit}/{seq}")
}

/// The longest unit name whose notify socket name fits for every pid
/// (Linux caps pid_max at 4194304: 7 digits) and sequence number (a u64: 20
/// digits), checked at load time so that the start cannot fail with
/// "File name too long".
pub const MAX_NOTIFY_UNIT_NAME: usize = NOTIFY_ADDRESS_MAX - 1 - "flowinit///".len() - 7 - 20;

/// All units of a units dir, active and disabled, sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitSet {
    pub units: Vec<Unit>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub name: String,
    pub file: PathBuf,
    pub description: Option<String>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub after: Vec<String>,
    /// As written: names, and `!name` for a profile that turns it off.
    pub profiles: Vec<String>,
    pub critical: bool,
    /// False when the unit's profiles rule it out ([`profiles_allow`]):
    /// shown as `disabled`.
    pub enabled: bool,
    /// Present for every enabled unit; disabled units are not resolved
    /// (their programs and users may not exist on this machine).
    /// Shared with the unit task (a service's env can be large: one copy).
    pub service: Option<std::sync::Arc<Service>>,
    /// Present for a router unit (instead of `service`).
    pub router: Option<RouterSpec>,
    pub log: LogSpec,
}

/// Whether a unit with `profiles` (as written) is on when `active` are:
/// off when any `!name` is active; else on when it names no profile or
/// one of those it names is active. `["!worker"]` is "everywhere but in
/// the worker role"; `["queue", "worker"]` is "in either".
pub fn profiles_allow(profiles: &[String], active: &[String]) -> bool {
    let (off, on): (Vec<&String>, Vec<&String>) = profiles.iter().partition(|p| p.starts_with('!'));
    if off.iter().any(|p| active.iter().any(|a| a == &p[1..])) {
        return false;
    }
    on.is_empty() || on.iter().any(|p| active.contains(p))
}

/// The built-in HTTP router's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSpec {
    pub listen: std::net::SocketAddr,
    /// Where `listen` is written, for the error when the port is busy.
    pub listen_at: SourcePos,
    pub routes: Vec<Route>,
    pub stop_timeout: Duration,
    pub connect_timeout: Duration,
    /// A client must send its request headers within this (slowloris).
    pub header_timeout: Duration,
    /// An upstream must send its response headers within this.
    pub upstream_timeout: Duration,
    pub access_log: bool,
    /// Paths (exact) left out of the access log, e.g. health checks.
    pub access_log_skip: Vec<String>,
    /// Keep X-Forwarded-* from the client (behind a trusted load balancer)
    /// instead of replacing them.
    pub trust_forwarded: bool,
    /// Client connections served at once; None: derived from the fd limit
    /// when the router starts (`router::connection_limit`).
    pub max_connections: Option<u32>,
}

/// A line and column in a unit file (1-based).
#[derive(Debug, Clone, Copy, Default)]
pub struct SourcePos {
    pub line: usize,
    pub column: usize,
}

/// Where a key is written is not part of what a unit is: a reload after
/// a comment was added above it must not see a changed unit.
impl PartialEq for SourcePos {
    fn eq(&self, _: &SourcePos) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    /// host:port of a plain-HTTP upstream.
    pub upstream: String,
    /// While this unit is not ready: 503 with Retry-After.
    pub unit: Option<String>,
    pub strip_prefix: bool,
}

/// One probe attempt's target.
#[derive(Debug, Clone)]
pub enum ProbeKind {
    /// GET `path` on `authority` (host:port); ready on any 2xx.
    Http { url: String, authority: String, host: String, path: String },
    /// A TCP connect to host:port.
    Tcp { addr: String },
    /// A command run like the service (same user, env, working_dir);
    /// ready on exit 0.
    Exec { program: PathBuf, argv: Vec<String> },
    /// A line of the unit's own output matching the regex.
    Log { regex: regex::Regex },
}

impl PartialEq for ProbeKind {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ProbeKind::Http { url: a, .. }, ProbeKind::Http { url: b, .. }) => a == b,
            (ProbeKind::Tcp { addr: a }, ProbeKind::Tcp { addr: b }) => a == b,
            (ProbeKind::Exec { program: p1, argv: a1 }, ProbeKind::Exec { program: p2, argv: a2 }) => {
                p1 == p2 && a1 == a2
            }
            (ProbeKind::Log { regex: a }, ProbeKind::Log { regex: b }) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeKind::Http { url, .. } => write!(f, "http {url}"),
            ProbeKind::Tcp { addr } => write!(f, "tcp {addr}"),
            ProbeKind::Exec { argv, .. } => write!(f, "exec {}", argv.join(" ")),
            ProbeKind::Log { regex } => write!(f, "log /{}/", regex.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
}

impl Unit {
    /// Every unit this one is ordered after, whatever the kind of edge.
    pub fn ordering_deps(&self) -> impl Iterator<Item = &str> {
        self.requires.iter().chain(&self.wants).chain(&self.after).map(String::as_str)
    }

    /// Units a router sends traffic to: they stop only after the router
    /// has drained (but the router does not wait for them to start).
    pub fn routed_units(&self) -> impl Iterator<Item = &str> {
        self.router.iter().flat_map(|r| r.routes.iter().filter_map(|rt| rt.unit.as_deref()))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub kind: ServiceKind,
    /// argv[0] as written, for display and as the child's argv[0].
    pub argv: Vec<String>,
    /// argv[0] resolved on PATH at load.
    pub program: PathBuf,
    pub working_dir: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    /// The child's environment. Values are secrets: never print them.
    pub env: Env,
    pub restart: RestartPolicy,
    pub restart_delay: Duration,
    pub restart_delay_max: Duration,
    pub start_limit_burst: u32,
    pub start_limit_interval: Duration,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub readiness: Option<Readiness>,
    pub liveness: Option<Liveness>,
    /// For `type = "notify"`: how long to wait for READY=1.
    pub notify_timeout: Duration,
    /// Restart the unit gracefully when its processes' RSS stays above
    /// this for [`MEMORY_CHECKS_OVER`] checks in a row.
    pub memory: Option<MemoryLimit>,
}

/// Names the unit in its processes' environment, for people and scripts.
pub const UNIT_VAR: &str = "FLOWINIT_UNIT";

/// `memory_max` and how often it is checked (`memory_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    pub max_bytes: u64,
    pub check_every: Duration,
}

/// Checks in a row above `memory_max` that restart a unit: one spike
/// (a burst of requests, a garbage collector's moment) is not enough.
pub const MEMORY_CHECKS_OVER: u32 = 3;

impl Service {
    /// The environment of a process of unit `unit`: [`Service::env`], then
    /// `FLOWINIT_UNIT` and, for a run of the supervisor, its tag
    /// (`FLOWINIT_RUN`) set last; neither is taken from elsewhere. The unit's
    /// own process and `flowinit exec` (no run: its command is not part of
    /// one, so never swept with it) both get theirs from here.
    pub fn process_env(&self, unit: &str, run: Option<&str>) -> Vec<(OsString, OsString)> {
        let mut env = self.env.to_vec();
        env.retain(|(k, _)| k != UNIT_VAR && k != RUN_TAG_VAR);
        env.push((UNIT_VAR.into(), unit.into()));
        if let Some(run) = run {
            env.push((RUN_TAG_VAR.into(), run.into()));
        }
        env
    }

    /// Whether the unit becomes ready by something other than having
    /// started (a probe or READY=1).
    pub fn waits_for_ready(&self) -> bool {
        self.readiness.is_some() || self.kind == ServiceKind::Notify
    }
}

/// A child's environment: flowinit's own (one copy shared by every unit of
/// a load: 200 units would otherwise hold 200 copies), then the unit's
/// additions (user's HOME/USER, env_file, env), which win.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Env {
    pub inherited: std::sync::Arc<Vec<(OsString, OsString)>>,
    pub own: Vec<(OsString, OsString)>,
}

impl Env {
    pub fn get(&self, key: &str) -> Option<&OsString> {
        fn find<'a>(v: &'a [(OsString, OsString)], key: &str) -> Option<&'a OsString> {
            v.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
        }
        find(&self.own, key).or_else(|| find(&self.inherited, key))
    }

    /// Every variable once, the unit's own value where it sets one.
    pub fn to_vec(&self) -> Vec<(OsString, OsString)> {
        let own = |k: &OsString| self.own.iter().any(|(o, _)| o == k);
        self.inherited.iter().filter(|(k, _)| !own(k)).chain(&self.own).cloned().collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user_name: Option<String>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSpec {
    pub prefix: String,
    pub file: Option<PathBuf>,
    pub rotate: Rotation,
}

pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(1);
pub const DEFAULT_RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_START_LIMIT_BURST: u32 = 5;
pub const DEFAULT_START_LIMIT_INTERVAL: Duration = Duration::from_secs(120);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MEMORY_CHECK: Duration = Duration::from_secs(10);
/// A router's drain: inside the default 9 s shutdown budget with 4 s left
/// for the units behind it (Postgres's fast shutdown needs about 1 s).
pub const DEFAULT_ROUTER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_LIVENESS_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_LIVENESS_FAILURES: u32 = 3;
pub const DEFAULT_ROUTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Also how long an idle keep-alive connection stays open: above the 60 s
/// idle timeout of AWS load balancers, so they never reuse a connection
/// the router is just closing (which they answer with a 502).
pub const DEFAULT_ROUTER_HEADER_TIMEOUT: Duration = Duration::from_secs(75);
pub const DEFAULT_ROUTER_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_variables_win_and_appear_once() {
        let pair = |k: &str, v: &str| (OsString::from(k), OsString::from(v));
        let env = Env {
            inherited: std::sync::Arc::new(vec![pair("PATH", "/bin"), pair("HOME", "/root"), pair("LANG", "C")]),
            own: vec![pair("HOME", "/home/node"), pair("PORT", "3001")],
        };
        assert_eq!(env.get("HOME"), Some(&OsString::from("/home/node")));
        assert_eq!(env.get("PATH"), Some(&OsString::from("/bin")));
        assert_eq!(env.get("NOPE"), None);
        let all = env.to_vec();
        assert_eq!(all, [pair("PATH", "/bin"), pair("LANG", "C"), pair("HOME", "/home/node"), pair("PORT", "3001")]);
    }
}
