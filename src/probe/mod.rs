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
use crate::process::{Isolation, Pgid, Reaper, Signal, SpawnSpec, Stdio3, Termination};
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A running probe; aborted (with its exec child) when dropped.
pub struct ProbeTask {
    handle: JoinHandle<()>,
    pub results: mpsc::Receiver<Result<(), String>>,
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
                Err(_) => Err(format!("no answer within {}", humantime::format_duration(timeout))),
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
pub async fn attempt(kind: &ProbeKind, exec: &ExecContext) -> Result<(), String> {
    match kind {
        ProbeKind::Http { authority, host, path, .. } => http_get(authority, host, path).await,
        ProbeKind::Tcp { addr } => tokio::net::TcpStream::connect(addr.as_str())
            .await
            .map(drop)
            .map_err(|e| format!("{} {addr}", short_io_error(&e))),
        ProbeKind::Exec { program, argv } => run_exec(program, argv, exec).await,
        ProbeKind::Log { .. } => Err("log probes are driven by the unit's output".into()),
    }
}

fn short_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::TimedOut => "connection timed out".into(),
        _ => e.to_string(),
    }
}

async fn http_get(authority: &str, host: &str, path: &str) -> Result<(), String> {
    use http_body_util::{BodyExt, Empty};
    let stream =
        tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("{} {authority}", short_io_error(&e)))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(io)
        .await
        .map_err(|e| format!("http handshake with {authority}: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "flowinit-probe")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| format!("bad probe request: {e}"))?;
    let res = sender.send_request(req).await.map_err(|e| format!("http {authority}{path}: {e}"));
    let outcome = match res {
        Ok(res) => {
            let status = res.status();
            // Drain a little so the server sees a clean close.
            let _ = tokio::time::timeout(Duration::from_millis(100), res.into_body().collect()).await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("http {path} answered {status}"))
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

async fn run_exec(program: &std::path::Path, argv: &[String], ctx: &ExecContext) -> Result<(), String> {
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
    let Spawned { pid, exit } =
        ctx.reaper.spawn(spec).map_err(|e| format!("cannot run probe {}: {e}", program.display()))?;
    let mut guard = KillOnDrop(Some(Pgid::of_leader(pid)));
    let term = exit.await.map_err(|_| "probe exit lost".to_string())?;
    guard.0 = None;
    match term {
        Termination::Exited(0) => Ok(()),
        t => Err(format!("{} {t}", argv.first().map(String::as_str).unwrap_or("probe"))),
    }
}
