//! Pure unit states and decisions: what the user sees, and what happens
//! after a process exits. No I/O; table-tested.

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

/// What to do when a process exits on its own (not stopped by us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Finished successfully: state `exited`.
    Done,
    /// Start again after the backoff delay (if the start limit allows).
    Restart,
    /// Failed for good.
    Fail,
}

pub fn after_exit(kind: ServiceKind, policy: RestartPolicy, term: Termination) -> AfterExit {
    match (term.success(), policy) {
        (true, RestartPolicy::Always) if kind == ServiceKind::Simple => AfterExit::Restart,
        (true, _) => AfterExit::Done,
        (false, RestartPolicy::No) => AfterExit::Fail,
        (false, RestartPolicy::OnFailure | RestartPolicy::Always) => AfterExit::Restart,
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
    fn after_exit_table() {
        let ok = Termination::Exited(0);
        let bad = Termination::Exited(1);
        let killed = Termination::Signaled(Signal::KILL);
        let table = [
            (Simple, No, ok, Done),
            (Simple, No, bad, Fail),
            (Simple, OnFailure, ok, Done),
            (Simple, OnFailure, bad, Restart),
            (Simple, OnFailure, killed, Restart),
            (Simple, Always, ok, Restart),
            (Simple, Always, bad, Restart),
            (Oneshot, No, ok, Done),
            (Oneshot, No, bad, Fail),
            (Oneshot, OnFailure, ok, Done),
            (Oneshot, OnFailure, killed, Restart),
        ];
        for (kind, policy, term, want) in table {
            assert_eq!(after_exit(kind, policy, term), want, "{kind:?} {policy:?} {term}");
        }
    }
}
