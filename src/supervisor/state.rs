//! Pure unit decisions: what happens after a run of a unit ends. The
//! states themselves (what the user sees) and kill reasons are the api's
//! vocabulary, re-exported here. No I/O; table-tested.

pub use crate::api::{KillReason, State};
use crate::config::unit::{RestartPolicy, ServiceKind};
use crate::process::Termination;

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
