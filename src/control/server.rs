//! The daemon side of the control socket. Bound before any unit starts
//! (mode 0600; a stale socket from a crashed run is replaced, a live one
//! refused). Each connection sends one request line, bounded in size and
//! time; status and logs are answered from the published snapshot (and
//! what the units' processes use, sampled from /proc through `api` at that
//! moment: nothing is sampled while nobody asks), actions go through the
//! manager's handle and are answered once done. A bad
//! request gets an error line and never disturbs the daemon. Env values are
//! part of one answer only, `exec_spec`, to a peer that passed the uid
//! check, and are never logged.

use super::cpu::{CpuMeter, RunKey};
use super::protocol::{
    Envelope, ExecSpec, LogLineReport, Request, Response, RouterReport, StatusReport, UnitReport, MAX_REQUEST, VERSION,
};
use crate::api::{self, Handle, RouterStats, Snapshot, UnitView, Usage};
use crate::config::unit::{Service, ServiceKind};
use crate::config::{self, Unit};
use crate::logs::ring::LogLine;
use crate::logs::sink::timestamp;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::UCred;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a refused peer's request line is waited for before closing.
const REFUSED_DRAIN: Duration = Duration::from_secs(1);
/// Log lines shown with `status UNIT`.
const STATUS_LOG_LINES: usize = 10;

/// A bound control socket; the file is removed when this is dropped.
pub struct Bound {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why the control socket could not be taken (flowinit up exits 2).
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another flowinit is already running on {} (its control socket answers)", .0.display())]
    InUse(PathBuf),
    #[error("control socket path {} exists and is not a socket; remove it or choose another --socket", .0.display())]
    NotASocket(PathBuf),
    /// Any other step failed: `what` names it ("create", "bind", ...).
    #[error("cannot {what} {}: {source}", .path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
}

/// Binds the socket, owner-only. Fails if another daemon answers on it.
pub fn bind(path: &Path) -> Result<Bound, BindError> {
    fn io<'p>(what: &'static str, p: &'p Path) -> impl FnOnce(io::Error) -> BindError + 'p {
        move |source| BindError::Io { what, path: p.to_path_buf(), source }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("create the control socket's directory", dir))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(BindError::NotASocket(path.to_path_buf())),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
            Err(_) => std::fs::remove_file(path).map_err(io("remove stale control socket", path))?,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspect control socket path", path)(e)),
    }
    // Owner-only from the first instant: no window in which others could
    // connect before a chmod.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(io("bind control socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod control socket", path))?;
    listener.set_nonblocking(true).map_err(io("set up control socket", path))?;
    Ok(Bound { listener, path: path.to_path_buf() })
}

/// Starts answering on `bound` (inside the runtime). Runs until flowinit
/// exits; the returned guard removes the socket file.
pub fn serve(bound: Bound, handle: Handle, snapshot: watch::Receiver<Snapshot>) -> Option<BoundGuard> {
    let listener = match bound.listener.try_clone().and_then(UnixListener::from_std) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("control socket {}: {e}; flowinit status will not answer", bound.path.display());
            return None;
        }
    };
    let me = nix::unistd::geteuid().as_raw();
    let meter = Arc::new(Mutex::new(CpuMeter::default()));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (handle, snapshot, meter) = (handle.clone(), snapshot.clone(), meter.clone());
            tokio::spawn(async move {
                if let Err(e) = connection(stream, me, handle, snapshot, &meter).await {
                    tracing::debug!("control connection: {e}");
                }
            });
        }
    });
    Some(BoundGuard(bound))
}

/// Keeps the socket file until flowinit exits.
pub struct BoundGuard(#[expect(dead_code, reason = "held only for its Drop, which removes the socket file")] Bound);

/// One response line.
async fn write<W: tokio::io::AsyncWrite + Unpin>(stream: &mut W, r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn connection(
    mut stream: UnixStream,
    me: u32,
    handle: Handle,
    snapshot: watch::Receiver<Snapshot>,
    meter: &Mutex<CpuMeter>,
) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let peer = cred.uid();
    let mut line = Vec::new();
    if peer != 0 && peer != me {
        // Refused before its request is looked at. The line is still
        // taken off the socket (bounded, unparsed), so that the refusal
        // ends in a clean EOF rather than a reset that could lose it.
        write(&mut stream, &Response::error(format!("permission denied: uid {peer} may not control flowinit"))).await?;
        let mut reader = BufReader::new(&mut stream).take(MAX_REQUEST as u64 + 1);
        let _ = tokio::time::timeout(REFUSED_DRAIN, reader.read_until(b'\n', &mut line)).await;
        return Ok(());
    }
    let read = {
        let mut reader = BufReader::new(&mut stream).take(MAX_REQUEST as u64 + 1);
        tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await
    };
    let request = match read {
        Err(_) => return write(&mut stream, &Response::error("timed out waiting for the request line")).await,
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => {
            return write(&mut stream, &Response::error(format!("request too large (limit {MAX_REQUEST} bytes)"))).await
        }
        Ok(Ok(_)) => match serde_json::from_slice::<Envelope>(&line) {
            Ok(env) if env.v != VERSION => {
                return write(
                    &mut stream,
                    &Response::error(format!(
                        "unsupported protocol version {} (this flowinit speaks {VERSION})",
                        env.v
                    )),
                )
                .await
            }
            Ok(env) => env.request,
            Err(e) => return write(&mut stream, &Response::error(format!("malformed request: {e}"))).await,
        },
    };
    match request {
        Request::Status { units } => {
            let snap = snapshot.borrow().clone();
            let r = match select(&snap, &units) {
                Ok(views) => {
                    let n = if units.is_empty() { 0 } else { STATUS_LOG_LINES };
                    let usage = measure(&snap, &views, meter);
                    let units = views
                        .iter()
                        .zip(usage)
                        .map(|(v, u)| {
                            let mut r = report(v, snap.router_stats(&v.unit.name), n);
                            if let Some((u, pct)) = u {
                                r.rss_bytes = Some(u.rss_bytes);
                                r.cpu_seconds = Some(u.cpu_seconds);
                                r.cpu_percent = Some(pct);
                                r.processes = Some(u.processes);
                            }
                            r
                        })
                        .collect();
                    Response {
                        v: VERSION,
                        ok: true,
                        status: Some(StatusReport { units, shutting_down: snap.shutting_down }),
                        ..Response::default()
                    }
                }
                Err(e) => Response::error(e),
            };
            write(&mut stream, &r).await
        }
        Request::Logs { units, lines, follow } => logs(&mut stream, snapshot, &units, lines, follow).await,
        Request::Start { units } => act(&mut stream, &handle, api::Request::Start(units)).await,
        Request::Stop { units } => act(&mut stream, &handle, api::Request::Stop(units)).await,
        Request::Restart { units } => act(&mut stream, &handle, api::Request::Restart(units)).await,
        Request::Reload {} => act(&mut stream, &handle, api::Request::Reload).await,
        Request::ExecSpec { unit } => {
            let r = exec_spec(&snapshot, &unit, cred).await;
            write(&mut stream, &r).await
        }
    }
}

/// The answer to `exec_spec`: how `name`'s process runs. An enabled unit's
/// comes from its loaded definition, exactly what its process got (env
/// files as read at the last load); a disabled unit, which is not resolved
/// at load, is loaded from its file now as if its profile were on. Who got
/// it is logged, never a value.
async fn exec_spec(snapshot: &watch::Receiver<Snapshot>, name: &str, peer: UCred) -> Response {
    let found = select(&snapshot.borrow(), &[name.to_string()]).map(|v| v.into_iter().next().map(|v| v.unit.clone()));
    let unit = match found {
        Ok(Some(u)) => u,
        Ok(None) => return Response::error(format!("unknown unit {name:?}")),
        Err(e) => return Response::error(e),
    };
    let router = || Response::error(format!("unit {name} is a router: it runs no process for a command to run as"));
    let service = match (&unit.service, &unit.router) {
        (_, Some(_)) => return router(),
        (Some(svc), None) => svc.clone(),
        (None, None) => {
            let file = unit.file.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                config::load_unit_enabled(&file, &config::LoadContext::from_process(Vec::new(), false))
            })
            .await;
            match loaded {
                Ok(Ok(Unit { service: Some(svc), .. })) => svc,
                Ok(Ok(_)) => return router(),
                Ok(Err(errors)) => {
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    return Response::error(format!(
                        "unit {name} is disabled, and its file does not load here as it is now:\n{}",
                        errors.join("\n")
                    ));
                }
                Err(e) => return Response::error(format!("loading unit {name}: {e}")),
            }
        }
    };
    match spec_of(name, &service) {
        Ok(spec) => {
            let pid = peer.pid().map_or_else(|| "?".to_string(), |p| p.to_string());
            tracing::info!("exec {name}: its environment and credentials sent to uid {} (pid {pid})", peer.uid());
            Response { v: VERSION, ok: true, exec: Some(spec), ..Response::default() }
        }
        Err(e) => Response::error(e),
    }
}

/// A unit's process as `flowinit exec` must recreate it. Without `user`
/// the process runs as flowinit, with its groups; without `working_dir`,
/// where such a unit's process starts: the directory flowinit was started
/// in (flowinit itself has left it for `/`).
fn spec_of(name: &str, svc: &Service) -> Result<ExecSpec, String> {
    use std::os::unix::ffi::OsStrExt;
    let (uid, gid, groups, user) = match &svc.credentials {
        Some(c) => (c.uid, c.gid, c.groups.clone(), c.user_name.clone()),
        None => {
            let groups = nix::unistd::getgroups().map_err(|e| format!("cannot read flowinit's own groups: {e}"))?;
            let groups = groups.into_iter().map(|g| g.as_raw()).collect();
            (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw(), groups, None)
        }
    };
    let working_dir = svc
        .working_dir
        .clone()
        .or_else(|| crate::api::start_dir().map(Path::to_path_buf))
        .filter(|d| d.to_str().is_some());
    let mut spec = ExecSpec { unit: name.to_string(), uid, gid, groups, user, working_dir, ..ExecSpec::default() };
    for (k, v) in svc.process_env(name, None) {
        match (k.to_str(), v.to_str()) {
            (Some(k), Some(v)) => spec.env.push((k.to_string(), v.to_string())),
            _ => spec.env_bytes.push((k.as_bytes().to_vec(), v.as_bytes().to_vec())),
        }
    }
    Ok(spec)
}

async fn act(stream: &mut UnixStream, handle: &Handle, req: api::Request) -> io::Result<()> {
    let r = match handle.call(req).await {
        Ok(m) => Response::message(m),
        Err(e) => Response::error(e.to_string()),
    };
    write(stream, &r).await
}

/// What each of `views` uses now and its CPU%; runs gone from the
/// snapshot are forgotten by the meter.
fn measure(snap: &Snapshot, views: &[&UnitView], meter: &Mutex<CpuMeter>) -> Vec<Option<(Usage, f64)>> {
    let sampled = api::sample_usage(views);
    let (now, wall) = (Instant::now(), SystemTime::now());
    let key = |v: &UnitView| -> Option<RunKey> { Some((v.unit.name.clone(), v.status.pid?.raw())) };
    let live = snap.units.iter().filter_map(key).collect();
    let mut meter = meter.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    meter.keep_only(&live);
    views
        .iter()
        .zip(sampled)
        .map(|(v, u)| {
            let (u, run) = (u?, key(v)?);
            let running_for = v.status.started_at.and_then(|t| wall.duration_since(t).ok()).unwrap_or_default();
            let pct = meter.percent(run, u.cpu_seconds, now, running_for);
            // Two decimals: more would be noise of a 10 ms clock tick.
            Some((u, (pct * 100.0).round() / 100.0))
        })
        .collect()
}

fn select<'a>(snap: &'a Snapshot, names: &[String]) -> Result<Vec<&'a UnitView>, String> {
    if names.is_empty() {
        return Ok(snap.units.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            snap.units.iter().find(|v| v.unit.name == *n).ok_or_else(|| {
                let known: Vec<&str> = snap.units.iter().map(|v| v.unit.name.as_str()).collect();
                format!("unknown unit {n:?} (units: {})", known.join(", "))
            })
        })
        .collect()
}

fn line_report(unit: &str, l: &LogLine) -> LogLineReport {
    LogLineReport { ts: timestamp(l.ts), unit: unit.to_string(), stream: l.stream.as_str().into(), msg: l.text.clone() }
}

/// A unit as reported by `status`: state and configuration, never env values.
pub fn report(v: &UnitView, stats: Option<&RouterStats>, log_lines: usize) -> UnitReport {
    let u = &v.unit;
    let s = &v.status;
    let svc = u.service.as_ref();
    let rfc = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    UnitReport {
        name: u.name.clone(),
        state: s.state.as_str().into(),
        pid: s.pid.map(|p| p.raw()),
        ready: s.state.is_up(),
        restarts: s.restarts,
        since: rfc(s.since),
        started_at: s.pid.and(s.started_at).map(rfc),
        reason: s.reason.clone(),
        description: u.description.clone(),
        kind: svc
            .map(|s| match s.kind {
                ServiceKind::Simple => "simple".into(),
                ServiceKind::Oneshot => "oneshot".into(),
                ServiceKind::Notify => "notify".into(),
            })
            .or_else(|| u.router.as_ref().map(|_| "router".into())),
        router: u.router.as_ref().map(|r| {
            use std::sync::atomic::Ordering::Relaxed;
            let count = |f: fn(&RouterStats) -> &std::sync::atomic::AtomicU64| stats.map_or(0, |s| f(s).load(Relaxed));
            RouterReport {
                listen: r.listen.to_string(),
                routes: r
                    .routes
                    .iter()
                    .map(|rt| {
                        let unit = rt.unit.as_ref().map(|u| format!(" (unit {u})")).unwrap_or_default();
                        let strip = if rt.strip_prefix { ", prefix stripped" } else { "" };
                        format!("{} -> {}{unit}{strip}", rt.prefix, rt.upstream)
                    })
                    .collect(),
                requests: count(|s| &s.requests),
                in_flight: count(|s| &s.in_flight),
                upstream_errors: count(|s| &s.upstream_errors),
                not_ready: count(|s| &s.not_ready),
                over_limit: count(|s| &s.over_limit),
                max_connections: count(|s| &s.max_connections),
            }
        }),
        critical: u.critical,
        active: v.is_active(),
        profiles: u.profiles.clone(),
        requires: u.requires.clone(),
        wants: u.wants.clone(),
        after: u.after.clone(),
        command: svc.map(|s| s.argv.clone()).unwrap_or_default(),
        user: svc
            .and_then(|s| s.credentials.as_ref())
            .map(|c| c.user_name.clone().unwrap_or_else(|| c.uid.to_string())),
        last_exit: s.last_exit.map(|t| t.to_string()),
        readiness: svc.and_then(|s| s.readiness.as_ref()).map(|r| r.kind.to_string()),
        liveness: svc.and_then(|s| s.liveness.as_ref()).map(|r| r.kind.to_string()),
        probe_error: s.probe_error.clone(),
        probe_ok_at: s.probe_ok_at.map(rfc),
        status_text: s.status_text.clone(),
        main_pid: s.main_pid.map(|p| p.raw()),
        rss_bytes: None,
        cpu_seconds: None,
        cpu_percent: None,
        processes: None,
        memory_max: svc.and_then(|s| s.memory).map(|m| m.max_bytes),
        memory_restarts: s.memory_restarts,
        log: v
            .ring
            .as_ref()
            .map(|r| r.tail(log_lines).iter().map(|l| line_report(&u.name, l)).collect())
            .unwrap_or_default(),
    }
}

async fn logs(
    stream: &mut UnixStream,
    snapshot: watch::Receiver<Snapshot>,
    names: &[String],
    lines: usize,
    follow: bool,
) -> io::Result<()> {
    let snap = snapshot.borrow().clone();
    let views = match select(&snap, names) {
        Ok(v) => v,
        Err(e) => return write(stream, &Response::error(e)).await,
    };
    let rings: Vec<(String, std::sync::Arc<crate::logs::RingLog>)> =
        views.iter().filter_map(|v| v.ring.clone().map(|r| (v.unit.name.clone(), r))).collect();
    let mut recent: Vec<(u64, LogLineReport)> = rings
        .iter()
        .flat_map(|(name, ring)| {
            ring.tail_with_seq(lines).into_iter().map(move |(seq, l)| (seq, line_report(name, &l)))
        })
        .collect();
    recent.sort_by(|a, b| a.1.ts.cmp(&b.1.ts).then(a.0.cmp(&b.0)));
    let skip = recent.len().saturating_sub(lines);
    for (_, l) in recent.into_iter().skip(skip) {
        write(stream, &Response { v: VERSION, ok: true, log: Some(l), ..Response::default() }).await?;
    }
    if !follow {
        return write(stream, &Response { v: VERSION, ok: true, end: true, ..Response::default() }).await;
    }
    let mut seen: Vec<u64> = rings.iter().map(|(_, r)| r.last_seq()).collect();
    let mut feeds: Vec<watch::Receiver<u64>> = rings.iter().map(|(_, r)| r.subscribe()).collect();
    let (mut rd, mut wr) = stream.split();
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            _ = any_changed(&mut feeds) => {}
            // The client hung up.
            n = rd.read(&mut probe) => if matches!(n, Ok(0) | Err(_)) { return Ok(()) },
        }
        for (i, (name, ring)) in rings.iter().enumerate() {
            for (seq, l) in ring.since(seen[i]) {
                seen[i] = seq;
                let r = Response { v: VERSION, ok: true, log: Some(line_report(name, &l)), ..Response::default() };
                write(&mut wr, &r).await?;
            }
        }
    }
}

/// Resolves when any of the feeds has a new line (or all are closed).
async fn any_changed(feeds: &mut [watch::Receiver<u64>]) {
    if feeds.is_empty() {
        return std::future::pending().await;
    }
    let mut futs: Vec<_> = feeds.iter_mut().map(|f| Box::pin(f.changed())).collect();
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if f.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
