//! Pure unit states and decisions: what the user sees, what happens after
//! a run of a unit ends, and why a stop needed SIGKILL. No I/O;
//! table-tested.

use crate::config::unit::{RestartPolicy, ServiceKind};
use crate::process::Termination;
use std::fmt;

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

/// How a run of a unit ended without anyone asking it to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The process could not be started, for a reason of the unit's (a
    /// missing program, a refused setuid); flowinit's own resource
    /// shortages never get here.
    SpawnFailed,
    /// Not ready by start_timeout, or liveness failed: flowinit stopped it.
    Unhealthy,
    /// The process exited on its own.
    Exited(Termination),
}

/// What to do after a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Finished successfully: state `exited`.
    Done,
    /// Start again after the backoff delay (if the start limit allows);
    /// `failed` says whether the run counts as a failure (doubling the delay).
    Restart { failed: bool },
    /// Failed for good.
    Fail,
}

/// The one after-failure rule: `restart = "no"` → failed for good,
/// otherwise a failure to back off from; a clean exit is done, or restarted
/// without counting a failure by a simple unit with `restart = "always"`.
pub fn after_run(kind: ServiceKind, policy: RestartPolicy, end: RunEnd) -> AfterExit {
    let success = matches!(end, RunEnd::Exited(t) if t.success());
    match (success, policy) {
        (true, RestartPolicy::Always) if kind == ServiceKind::Simple => AfterExit::Restart { failed: false },
        (true, _) => AfterExit::Done,
        (false, RestartPolicy::No) => AfterExit::Fail,
        (false, RestartPolicy::OnFailure | RestartPolicy::Always) => AfterExit::Restart { failed: true },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Signal;
    use AfterExit::*;
    use RestartPolicy::*;
    use ServiceKind::*;

    #[test]
    fn after_run_table() {
        let exit = |t| RunEnd::Exited(t);
        let ok = exit(Termination::Exited(0));
        let bad = exit(Termination::Exited(1));
        let killed = exit(Termination::Signaled(Signal::KILL));
        let (restart, again) = (Restart { failed: true }, Restart { failed: false });
        let table = [
            (Simple, No, ok, Done),
            (Simple, No, bad, Fail),
            (Simple, OnFailure, ok, Done),
            (Simple, OnFailure, bad, restart),
            (Simple, OnFailure, killed, restart),
            (Simple, Always, ok, again),
            (Simple, Always, bad, restart),
            (Oneshot, No, ok, Done),
            (Oneshot, No, bad, Fail),
            (Oneshot, OnFailure, ok, Done),
            (Oneshot, OnFailure, killed, restart),
            (Oneshot, Always, ok, Done),
            (Notify, Always, ok, Done),
            (Simple, No, RunEnd::SpawnFailed, Fail),
            (Simple, OnFailure, RunEnd::SpawnFailed, restart),
            (Oneshot, Always, RunEnd::SpawnFailed, restart),
            (Simple, No, RunEnd::Unhealthy, Fail),
            (Notify, OnFailure, RunEnd::Unhealthy, restart),
            (Simple, Always, RunEnd::Unhealthy, restart),
        ];
        for (kind, policy, end, want) in table {
            assert_eq!(after_run(kind, policy, end), want, "{kind:?} {policy:?} {end:?}");
        }
    }
}
