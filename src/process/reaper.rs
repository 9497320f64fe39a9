//! The sole caller of `waitpid`. Every child (services, oneshots, probe
//! commands) is spawned through [`Reaper::spawn`], which registers the pid
//! under the same lock the reaper holds while it waits, so an exit can never
//! be collected before its owner is registered. Exits of unregistered pids
//! are orphans re-parented to us: reaped and logged at debug level.

use super::signal::{Pid, Signal, Termination};
use super::spawn::{spawn, SpawnError, SpawnSpec, SpawnStep};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid as NixPid;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

#[derive(Default)]
struct Registry {
    waiting: HashMap<Pid, oneshot::Sender<Termination>>,
}

/// A cheap handle; clones share one registry.
#[derive(Clone)]
pub struct Reaper {
    registry: Arc<Mutex<Registry>>,
}

/// What a spawn hands back: the pid and the future of its exit.
pub struct Spawned {
    pub pid: Pid,
    pub exit: oneshot::Receiver<Termination>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts the reaping task. Call before
    /// the first spawn, inside the tokio runtime.
    pub fn start() -> io::Result<Reaper> {
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let reaper = Reaper { registry: Arc::default() };
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap_ready();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // map itself is still consistent, so keep going (PID 1 must not die).
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns and registers the child in one step.
    pub fn spawn(&self, spec: SpawnSpec) -> Result<Spawned, SpawnError> {
        let mut reg = self.lock();
        let pid = checked_pid(spawn(spec)?)?;
        let (tx, exit) = oneshot::channel();
        reg.waiting.insert(pid, tx);
        Ok(Spawned { pid, exit })
    }

    /// Collects every exit that is ready, without blocking.
    fn reap_ready(&self) {
        let mut reg = self.lock();
        loop {
            match waitpid(NixPid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => {
                    let Some((pid, term)) = termination(status) else {
                        continue;
                    };
                    match reg.waiting.remove(&pid) {
                        // The owner may have gone away (unit task ended):
                        // nothing left to tell.
                        Some(tx) => drop(tx.send(term)),
                        None => {
                            tracing::debug!(pid = pid.raw(), "reaped orphan ({term})");
                        }
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("waitpid failed: {e}");
                    break;
                }
            }
        }
    }
}

fn termination(status: WaitStatus) -> Option<(Pid, Termination)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((Pid::new(pid.as_raw())?, Termination::Exited(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((Pid::new(pid.as_raw())?, Termination::Signaled(Signal(sig)))),
        _ => None,
    }
}

/// Single-command mode's blocking loop: reap everything until `main` exits,
/// returning its termination. The caller owns signal delivery (sigwait), so
/// this is the only waiter in that mode.
pub fn reap_blocking_until(main: Pid) -> Result<Option<Termination>, Errno> {
    loop {
        match waitpid(NixPid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(status) => {
                if let Some((pid, term)) = termination(status) {
                    if pid == main {
                        return Ok(Some(term));
                    }
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => return Err(Errno::ECHILD),
            Err(e) => return Err(e),
        }
    }
}

/// Spawns without the async registry, for single-command mode where the
/// caller reaps with [`reap_blocking_until`].
pub fn spawn_unregistered(spec: SpawnSpec) -> Result<Pid, SpawnError> {
    checked_pid(spawn(spec)?)
}

fn checked_pid(raw: u32) -> Result<Pid, SpawnError> {
    i32::try_from(raw).ok().and_then(Pid::new).ok_or_else(|| {
        SpawnError::new(SpawnStep::Clone, io::Error::other(format!("kernel returned invalid pid {raw}")))
    })
}
