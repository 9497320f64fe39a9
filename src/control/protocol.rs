//! The wire format. One request line from the client, one or more response
//! lines from the daemon, each a JSON object carrying the protocol version.
//! Field names here are a public contract (`status --json` prints
//! [`StatusReport`] as is): add fields, never rename them.

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status {
        #[serde(default)]
        units: Vec<String>,
    },
    Logs {
        #[serde(default)]
        units: Vec<String>,
        lines: usize,
        #[serde(default)]
        follow: bool,
    },
    Start {
        units: Vec<String>,
    },
    Stop {
        units: Vec<String>,
    },
    Restart {
        units: Vec<String>,
    },
    Reload {},
    /// What `flowinit exec UNIT` needs; answered with [`Response::exec`].
    #[serde(rename = "exec_spec")]
    ExecSpec {
        unit: String,
    },
}

/// One response line. Exactly one of the payload fields is set, or `error`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogLineReport>,
    /// The answer to `exec_spec`. Carries env values: see [`ExecSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecSpec>,
    /// Marks the end of a `logs` answer without `follow`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
}

impl Response {
    pub fn error(e: impl Into<String>) -> Response {
        Response { v: VERSION, ok: false, error: Some(e.into()), ..Response::default() }
    }
    pub fn message(m: impl Into<String>) -> Response {
        Response { v: VERSION, ok: true, message: Some(m.into()), ..Response::default() }
    }
}

/// `flowinit status --json` prints this object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub units: Vec<UnitReport>,
    #[serde(default)]
    pub shutting_down: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitReport {
    pub name: String,
    pub state: String,
    pub pid: Option<i32>,
    pub ready: bool,
    pub restarts: u32,
    /// RFC 3339: when the unit entered its state.
    pub since: String,
    /// RFC 3339: when its current process started (null without one).
    #[serde(default)]
    pub started_at: Option<String>,
    pub reason: Option<String>,
    pub description: Option<String>,
    /// simple | oneshot | notify | null for disabled units
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub critical: bool,
    /// Counted by the health check (not disabled, not stopped by an operator).
    pub active: bool,
    pub profiles: Vec<String>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub after: Vec<String>,
    pub command: Vec<String>,
    pub user: Option<String>,
    pub last_exit: Option<String>,
    pub readiness: Option<String>,
    pub liveness: Option<String>,
    pub probe_error: Option<String>,
    pub probe_ok_at: Option<String>,
    pub status_text: Option<String>,
    pub main_pid: Option<i32>,
    /// What the unit's processes use, sampled when `status` is answered;
    /// null without a process (docs/operations.md).
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// CPU time over wall time since the daemon's previous sample of this
    /// run (at least 1 s before), or since the process started; 100 = one
    /// core.
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    #[serde(default)]
    pub processes: Option<u32>,
    /// `memory_max` in bytes; null without one.
    #[serde(default)]
    pub memory_max: Option<u64>,
    /// Restarts because the unit stayed above memory_max (also in `restarts`).
    #[serde(default)]
    pub memory_restarts: u32,
    /// For a router unit: where it listens, its routes and counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterReport>,
    /// Only when units were named: their last log lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogLineReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterReport {
    pub listen: String,
    /// `PREFIX -> UPSTREAM (unit NAME)`, one per route.
    pub routes: Vec<String>,
    pub requests: u64,
    pub in_flight: u64,
    pub upstream_errors: u64,
    pub not_ready: u64,
    /// Connections answered 503 at accept: `max_connections` were open.
    #[serde(default)]
    pub over_limit: u64,
    /// The cap in force (`max_connections`, or the default from the fd limit).
    #[serde(default)]
    pub max_connections: u64,
}

/// How a unit's process runs, for `flowinit exec`: its whole environment,
/// its credentials and its directory. The only answer that carries env
/// values (secrets): it goes to the peer that asked, over its own
/// connection, and is never logged; `Debug` shows variable names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub unit: String,
    /// The variables of the unit's process, `[name, value]`, in order;
    /// those with a name or value that is not UTF-8 are in `env_bytes`.
    pub env: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_bytes: Vec<(Vec<u8>, Vec<u8>)>,
    /// The unit's user, else flowinit's own: what its process runs as.
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, in the order given to setgroups.
    pub groups: Vec<u32>,
    /// The unit's `user` by name, when it names one (for messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The unit's working_dir, else flowinit's own working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ExecSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .env
            .iter()
            .map(|(k, _)| k.clone())
            .chain(self.env_bytes.iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()))
            .collect();
        f.debug_struct("ExecSpec")
            .field("unit", &self.unit)
            .field("env (names only)", &names)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("groups", &self.groups)
            .field("user", &self.user)
            .field("working_dir", &self.working_dir)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLineReport {
    pub ts: String,
    pub unit: String,
    pub stream: String,
    pub msg: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Status { units: vec!["a".into()] },
            Request::Logs { units: vec![], lines: 10, follow: true },
            Request::Start { units: vec!["a".into(), "b".into()] },
            Request::Reload {},
            Request::ExecSpec { unit: "db".into() },
        ];
        for r in reqs {
            let line = serde_json::to_string(&Envelope { v: VERSION, request: r.clone() }).unwrap();
            let back: Envelope = serde_json::from_str(&line).unwrap();
            assert_eq!(back.request, r, "{line}");
        }
        assert_eq!(
            serde_json::to_string(&Envelope { v: 1, request: Request::Reload {} }).unwrap(),
            r#"{"v":1,"request":{"cmd":"reload"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Envelope { v: 1, request: Request::ExecSpec { unit: "db".into() } }).unwrap(),
            r#"{"v":1,"request":{"cmd":"exec_spec","unit":"db"}}"#
        );
    }

    #[test]
    fn exec_spec_debug_shows_no_values() {
        let spec = ExecSpec {
            unit: "db".into(),
            env: vec![("PGPASSWORD".into(), "hunter2".into())],
            env_bytes: vec![(b"RAW".to_vec(), b"\xffhunter3".to_vec())],
            ..ExecSpec::default()
        };
        let shown = format!("{:?}", Response { exec: Some(spec), ..Response::default() });
        assert!(shown.contains("PGPASSWORD") && shown.contains("RAW"), "{shown}");
        assert!(!shown.contains("hunter"), "{shown}");
    }

    #[test]
    fn rejects_unknown_commands_and_fields() {
        for bad in [r#"{"v":1,"request":{"cmd":"explode"}}"#, r#"{"v":1,"request":{"cmd":"reload","x":1}}"#, r#"[]"#] {
            assert!(serde_json::from_str::<Envelope>(bad).is_err(), "{bad}");
        }
    }
}
