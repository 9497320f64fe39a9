//! Readiness and liveness probes. One attempt is one function under a
//! timeout; a probe runs as its own task that reports each result over a
//! channel, so the unit task never cancels an attempt half-way, and an exec
//! probe's process group is killed when its attempt ends or is aborted.
//! Log probes wait on the log forwarder's [`LineWatch`]; notify messages
//! come from [`notify`].

pub mod notify;

use crate::config::unit::{ProbeKind, Service};
use crate::logs::watch::LineWatch;
use crate::process::reaper::Spawned;
use crate::process::{Isolation, Pgid, Reaper, Shortage, Signal, SpawnError, SpawnSpec, Stdio3, Termination};
use std::ffi::OsString;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Why one attempt failed. [`ProbeError::Resource`] is flowinit's own
/// problem (it could not open a socket or start the probe command), not
/// the unit's: the unit task skips such an attempt.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("flowinit itself is {shortage} while {doing}")]
    Resource { shortage: Shortage, doing: String },
    #[error("{} {target}", short_io_error(.source))]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("http handshake with {target}: {source}")]
    Handshake {
        target: String,
        #[source]
        source: hyper::Error,
    },
    #[error("http {target}: {source}")]
    Request {
        target: String,
        #[source]
        source: hyper::Error,
    },
    #[error("bad probe request: {0}")]
    BadRequest(#[from] hyper::http::Error),
    #[error("http {path} answered {status}")]
    Status { path: String, status: hyper::StatusCode },
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("cannot run probe {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: SpawnError,
    },
    #[error("probe exit lost")]
    ExitLost,
    #[error("{name} {term}")]
    Exec { name: String, term: Termination },
    #[error("log probes are driven by the unit's output")]
    LogDriven,
}

impl ProbeError {
    fn connect(target: &str, source: io::Error) -> ProbeError {
        match Shortage::of(&source) {
            Some(shortage) => ProbeError::Resource { shortage, doing: format!("connecting to {target}") },
            None => ProbeError::Connect { target: target.to_string(), source },
        }
    }

    fn spawn(program: &std::path::Path, source: SpawnError) -> ProbeError {
        match source.resource_shortage() {
            Some(shortage) => ProbeError::Resource { shortage, doing: format!("starting probe {}", program.display()) },
            None => ProbeError::Spawn { program: program.display().to_string(), source },
        }
    }

    /// Flowinit's own shortage, not a verdict on the unit.
    pub fn is_resource(&self) -> bool {
        matches!(self, ProbeError::Resource { .. })
    }
}

pub type ProbeResult = Result<(), ProbeError>;

/// A running probe; aborted (with its exec child) when dropped.
pub struct ProbeTask {
    handle: JoinHandle<()>,
    pub results: mpsc::Receiver<ProbeResult>,
}

impl ProbeTask {
    /// A probe whose results come from elsewhere (the unit task's tests).
    #[cfg(test)]
    pub fn from_channel(results: mpsc::Receiver<ProbeResult>) -> ProbeTask {
        ProbeTask { handle: tokio::spawn(async {}), results }
    }
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What an exec probe needs to run like its service.
#[derive(Clone)]
pub struct ExecContext {
    pub reaper: Reaper,
    pub service: Arc<Service>,
}

/// Starts probing: an attempt at once, then one every `interval`.
pub fn start(
    kind: ProbeKind,
    interval: Duration,
    timeout: Duration,
    exec: ExecContext,
    log: Option<Arc<LineWatch>>,
) -> ProbeTask {
    let (tx, results) = mpsc::channel(1);
    let handle = tokio::spawn(async move {
        if let (ProbeKind::Log { .. }, Some(log)) = (&kind, log) {
            loop {
                log.matched().await;
                if tx.send(Ok(())).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let result = match tokio::time::timeout(timeout, attempt(&kind, &exec)).await {
                Ok(r) => r,
                Err(_) => Err(ProbeError::Timeout(timeout)),
            };
            if tx.send(result).await.is_err() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    });
    ProbeTask { handle, results }
}

/// One attempt. Connections are closed afterwards; nothing is kept.
pub async fn attempt(kind: &ProbeKind, exec: &ExecContext) -> ProbeResult {
    match kind {
        ProbeKind::Http { authority, host, path, .. } => http_get(authority, host, path).await,
        ProbeKind::Tcp { addr } => {
            tokio::net::TcpStream::connect(addr.as_str()).await.map(drop).map_err(|e| ProbeError::connect(addr, e))
        }
        ProbeKind::Exec { program, argv } => run_exec(program, argv, exec).await,
        ProbeKind::Log { .. } => Err(ProbeError::LogDriven),
    }
}

fn short_io_error(e: &io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::TimedOut => "connection timed out".into(),
        _ => e.to_string(),
    }
}

async fn http_get(authority: &str, host: &str, path: &str) -> ProbeResult {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| ProbeError::connect(authority, e))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(io)
        .await
        .map_err(|source| ProbeError::Handshake { target: authority.to_string(), source })?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "flowinit-probe")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::new())?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|source| ProbeError::Request { target: format!("{authority}{path}"), source });
    let outcome = match res {
        Ok(res) => {
            let status = res.status();
            // Drain a little so the server sees a clean close.
            let _ = tokio::time::timeout(Duration::from_millis(100), res.into_body().collect()).await;
            if status.is_success() {
                Ok(())
            } else {
                Err(ProbeError::Status { path: path.to_string(), status })
            }
        }
        Err(e) => Err(e),
    };
    conn.abort();
    outcome
}

/// Kills the probe's process group unless it already exited.
struct KillOnDrop(Option<Pgid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = pgid.signal(Signal::KILL);
        }
    }
}

async fn run_exec(program: &std::path::Path, argv: &[String], ctx: &ExecContext) -> ProbeResult {
    let svc = &ctx.service;
    let spec = SpawnSpec {
        program: program.to_path_buf(),
        argv: argv.iter().map(OsString::from).collect(),
        env: Some(svc.env.to_vec()),
        working_dir: svc.working_dir.clone(),
        credentials: svc.credentials.as_ref().map(|c| (c.uid, c.gid, c.groups.clone())),
        isolation: Isolation::Session,
        stdio: Stdio3::Null,
    };
    let Spawned { pid, exit } = ctx.reaper.spawn(spec).map_err(|e| ProbeError::spawn(program, e))?;
    let mut guard = KillOnDrop(Some(Pgid::of_leader(pid)));
    let term = exit.await.map_err(|_| ProbeError::ExitLost)?;
    guard.0 = None;
    match term {
        Termination::Exited(0) => Ok(()),
        term => Err(ProbeError::Exec { name: argv.first().map_or("probe", String::as_str).to_string(), term }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flowinits_own_shortages_are_not_the_units() {
        let e = |n| io::Error::from_raw_os_error(n);
        let table = [
            (libc::EMFILE, true),
            (libc::ENFILE, true),
            (libc::ENOMEM, true),
            (libc::EAGAIN, true),
            (libc::ECONNREFUSED, false),
            (libc::ETIMEDOUT, false),
        ];
        for (errno, resource) in table {
            assert_eq!(ProbeError::connect("127.0.0.1:1", e(errno)).is_resource(), resource, "errno {errno}");
        }
        let emfile = ProbeError::connect("127.0.0.1:5432", e(libc::EMFILE));
        assert_eq!(
            emfile.to_string(),
            "flowinit itself is out of file descriptors (EMFILE) while connecting to 127.0.0.1:5432"
        );
        let refused = ProbeError::connect("127.0.0.1:5432", e(libc::ECONNREFUSED));
        assert_eq!(refused.to_string(), "connection refused 127.0.0.1:5432");
    }

    #[test]
    fn an_exec_probe_that_cannot_start_for_lack_of_fds_is_skipped() {
        use crate::process::SpawnStep;
        let spawn = |errno| SpawnError::new(SpawnStep::Clone, io::Error::from_raw_os_error(errno));
        assert!(ProbeError::spawn("pg_isready".as_ref(), spawn(libc::EAGAIN)).is_resource());
        assert!(!ProbeError::spawn(
            "pg_isready".as_ref(),
            SpawnError::new(SpawnStep::Exec, io::Error::from_raw_os_error(libc::ENOENT))
        )
        .is_resource());
    }
}
