//! The unit actor's one seam to the OS: starting the unit's process (and
//! knowing when all its output was read), signalling its group, asking
//! whether the group is still there, sweeping what a run left outside its
//! group, starting probes, reading the OOM killer's count, measuring what
//! the run's processes use, and whether the routers' requests to the unit
//! are done. [`RealChild`] does it through `process`, `probe` and the
//! published readiness; the tests use a fake that records every call and
//! decides when a child exits.

use crate::api::{Readiness, Traffic};
use crate::config::unit::{ProbeKind, Service};
use crate::logs::forward::{forward, UnitLog};
use crate::logs::watch::LineWatch;
use crate::logs::{LogSink, Stream};
use crate::probe::{self, ProbeTask};
use crate::process::cgroup::{self, OomKills};
use crate::process::reaper::Spawned;
use crate::process::tree::signal_tagged;
use crate::process::usage::{self, Usage};
use crate::process::{Isolation, Pgid, Pid, Reaper, Signal, SpawnError, SpawnSpec, SpawnStep, Stdio3};
use nix::errno::Errno;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One run of a unit (one spawn of its main process): the value of
/// `FLOWINIT_RUN` in that run's environment, `<unit>/<n>`, `n` counting the
/// starts of that unit name (1, 2, …). The count lives as long as flowinit,
/// across reloads that replace the unit, so a tag is never used twice and
/// sweeping the last run never touches the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTag(pub String);

impl RunTag {
    pub fn next(unit: &str) -> RunTag {
        static RUNS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
        let mut runs = RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = runs.entry(unit.to_string()).or_insert(0);
        *n += 1;
        RunTag(format!("{unit}/{n}"))
    }
}

/// The forwarders of one run's stdout and stderr: done when both pipes
/// reached EOF, every line of the run then being in the unit's ring.
pub struct Output(Vec<JoinHandle<()>>);

impl Output {
    /// Nothing to wait for.
    #[cfg(test)]
    pub fn none() -> Output {
        Output(Vec::new())
    }

    /// Waits until the run's output is all read, at most `limit` (a
    /// process that left the group may hold a pipe open). True when it is.
    pub async fn read_all(self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut all = true;
        for task in self.0 {
            all &= tokio::time::timeout_at(until, task).await.is_ok();
        }
        all
    }
}

pub trait Child: Send + Sync + 'static {
    /// Starts the unit's main process in a session of its own, tagged with
    /// `run`, with `extra_env` added (NOTIFY_SOCKET).
    fn spawn(&self, run: &RunTag, extra_env: Vec<(OsString, OsString)>) -> Result<(Spawned, Output), SpawnError>;
    /// `Ok(false)` when no member of the group is left.
    fn signal_group(&self, pgid: Pgid, sig: Signal) -> Result<bool, Errno>;
    fn group_alive(&self, pgid: Pgid) -> bool;
    /// Signals (with `None`: counts) the processes of `run` that are not in
    /// the group `besides`: those that escaped it. Returns how many.
    fn signal_escaped(&self, run: &RunTag, besides: Pgid, sig: Option<Signal>) -> usize;
    fn start_probe(
        &self,
        kind: &ProbeKind,
        interval: Duration,
        timeout: Duration,
        log: Option<Arc<LineWatch>>,
    ) -> ProbeTask;
    /// What the processes of `run` (main process `pid`) use now; None when
    /// the main process is gone.
    fn usage(&self, pid: Pid, run: &RunTag) -> Option<Usage>;
    /// No router request to the unit is in flight, and the routers know it
    /// is not up (none can start).
    fn drained(&self) -> bool;
    /// The OOM killer's count for flowinit's cgroup, if readable.
    fn oom_kills(&self) -> Option<OomKills>;
    /// Puts one OOM kill seen between the counts `before` and `after` down
    /// to this run's death; false when other units' deaths took them all.
    fn take_oom_kill(&self, before: u64, after: u64) -> bool;
}

/// The real thing: the reaper, process groups, /proc and the log pipeline.
pub struct RealChild {
    pub service: Arc<Service>,
    pub log: UnitLog,
    pub sink: LogSink,
    pub reaper: Reaper,
    pub traffic: Arc<Traffic>,
    pub readiness: watch::Receiver<Readiness>,
}

impl Child for RealChild {
    fn spawn(&self, run: &RunTag, extra_env: Vec<(OsString, OsString)>) -> Result<(Spawned, Output), SpawnError> {
        let svc = &self.service;
        let mut env = svc.process_env(&self.log.name, Some(&run.0));
        env.extend(extra_env);
        if let Some(dir) = &svc.working_dir {
            if !dir.is_dir() {
                let source = std::io::Error::from_raw_os_error(libc::ENOTDIR);
                return Err(SpawnError::new(SpawnStep::WorkingDir(dir.clone()), source));
            }
        }
        let pipe = |e| SpawnError::new(SpawnStep::Pipe, e);
        let (out_r, out_w) = std::io::pipe().map_err(pipe)?;
        let (err_r, err_w) = std::io::pipe().map_err(pipe)?;
        for p in [&out_r, &err_r] {
            // Best effort: the default 64 KiB works too, just with more wake-ups.
            let _ = nix::fcntl::fcntl(p, nix::fcntl::FcntlArg::F_SETPIPE_SZ(crate::logs::forward::PIPE_BYTES));
        }
        let spec = SpawnSpec {
            program: svc.program.clone(),
            argv: svc.argv.iter().map(OsString::from).collect(),
            env: Some(env),
            working_dir: svc.working_dir.clone(),
            credentials: svc.credentials.as_ref().map(|c| (c.uid, c.gid, c.groups.clone())),
            isolation: Isolation::Session,
            stdio: Stdio3::Piped { stdout: out_w.into(), stderr: err_w.into() },
        };
        let child = self.reaper.spawn(spec)?;
        let output = Output(vec![
            tokio::spawn(forward(out_r.into(), Stream::Stdout, self.log.clone(), self.sink.clone())),
            tokio::spawn(forward(err_r.into(), Stream::Stderr, self.log.clone(), self.sink.clone())),
        ]);
        Ok((child, output))
    }

    fn signal_group(&self, pgid: Pgid, sig: Signal) -> Result<bool, Errno> {
        pgid.signal(sig)
    }

    fn group_alive(&self, pgid: Pgid) -> bool {
        pgid.alive()
    }

    fn signal_escaped(&self, run: &RunTag, besides: Pgid, sig: Option<Signal>) -> usize {
        signal_tagged(&run.0, Some(besides), sig)
    }

    fn start_probe(
        &self,
        kind: &ProbeKind,
        interval: Duration,
        timeout: Duration,
        log: Option<Arc<LineWatch>>,
    ) -> ProbeTask {
        let exec = probe::ExecContext { reaper: self.reaper.clone(), service: self.service.clone() };
        probe::start(kind.clone(), interval, timeout, exec, log)
    }

    fn usage(&self, pid: Pid, run: &RunTag) -> Option<Usage> {
        usage::sample(&[usage::Run { pid, tag: Some(&run.0) }]).pop().flatten()
    }

    fn drained(&self) -> bool {
        self.traffic.drained(&self.readiness.borrow(), &self.log.name)
    }

    fn oom_kills(&self) -> Option<OomKills> {
        cgroup::oom_kills()
    }

    fn take_oom_kill(&self, before: u64, after: u64) -> bool {
        cgroup::take_one(before, after)
    }
}

/// Waits until `done()` holds, or `until`; true when it held. Polls with a
/// short, growing interval: only ever runs while a unit is stopping or its
/// leftovers are being cleaned up.
pub async fn wait_until(until: Instant, mut done: impl FnMut() -> bool) -> bool {
    let mut pause = Duration::from_millis(2);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        tokio::time::sleep(pause.min(until - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
