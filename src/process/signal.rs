//! Typed OS values: signals, process groups, pids and how a process ended.
//! The only way to signal anything is through [`Pgid::signal`] or
//! [`Pid::signal`], so a raw `kill(-1, …)` cannot be written by accident.

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal as NixSignal};
use nix::unistd::Pid as NixPid;
use std::fmt;
use std::str::FromStr;

/// Undoes what a careless parent may have left us: an ignored SIGCHLD
/// makes the kernel reap children by itself (their exit status is lost).
/// Called first thing in main.
pub fn reset_inherited_dispositions() {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: installing SIG_DFL (no handler code) before any thread exists.
    unsafe {
        let _ = signal(NixSignal::SIGCHLD, SigHandler::SigDfl);
    }
}

/// In `up` mode, signals that would terminate flowinit by default but mean
/// nothing to it are ignored, so a stray `kill -USR1` cannot take down the
/// supervisor (as PID 1 the kernel already protects it; as a subreaper it
/// would orphan every service). Children get default dispositions back.
pub fn ignore_stray_signals() {
    use nix::sys::signal::{signal, SigHandler};
    for sig in [
        NixSignal::SIGUSR1,
        NixSignal::SIGUSR2,
        NixSignal::SIGALRM,
        NixSignal::SIGVTALRM,
        NixSignal::SIGPROF,
        NixSignal::SIGIO,
        NixSignal::SIGPWR,
        NixSignal::SIGSTKFLT,
        NixSignal::SIGPIPE,
    ] {
        // SAFETY: installing SIG_IGN (no handler code).
        unsafe {
            let _ = signal(sig, SigHandler::SigIgn);
        }
    }
}

/// The signals a fault of the process itself raises: the kernel sends them
/// for a bad memory access, an illegal instruction, a division by zero, a
/// breakpoint, a forbidden system call (seccomp), and `abort()` raises
/// SIGABRT. Another process can send them too (`kill -SEGV PID`); only a
/// fault of flowinit's own may crash it.
///
/// Blocking them is what tells the two apart, and it keeps a real fault
/// fatal: the kernel *forces* a synchronous fault signal (force_sig_info:
/// a blocked or ignored one is unblocked and reset to the default action
/// first), so it kills the process even while blocked, also as PID 1 of a
/// PID namespace; glibc's `abort()` unblocks SIGABRT itself before raising
/// it. Checked with a C program that blocked all seven and then faulted
/// (null write, `100 / 0`, `ud2`, `int3`, a read past the end of a mapped
/// empty file, `abort()`, a seccomp SECCOMP_RET_TRAP filter): killed by
/// SEGV, FPE, ILL, TRAP, BUS, ABRT, SYS, as PID 1 of a namespace too
/// (`abort()` there ends in SIGSEGV: PID 1 drops its own SIGABRT and glibc
/// falls back to a faulting instruction). A signal another process sends
/// instead stays pending and is taken by [`wait_signal`], with a `si_code`
/// of SI_USER, SI_QUEUE or SI_TKILL (<= 0).
pub const FAULT_SIGNALS: [NixSignal; 7] = [
    NixSignal::SIGILL,
    NixSignal::SIGABRT,
    NixSignal::SIGBUS,
    NixSignal::SIGFPE,
    NixSignal::SIGSEGV,
    NixSignal::SIGTRAP,
    NixSignal::SIGSYS,
];

/// Where a signal taken with [`wait_signal`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `kill`, `sigqueue`, `tgkill` & co. (`si_code <= 0`). `pid` is the
    /// sender (for SI_USER, SI_QUEUE, SI_TKILL), 0 when it is outside our
    /// PID namespace.
    Process { pid: i32 },
    /// The kernel (`si_code > 0`): a fault, a child's state change, a
    /// terminal event.
    Kernel { code: i32 },
}

/// Waits for one of `set` (which must be blocked in the calling thread) with
/// `sigwaitinfo`, and tells who sent it. EINTR (a stop and continue) is
/// retried.
pub fn wait_signal(set: &nix::sys::signal::SigSet) -> Result<(Signal, Origin), Errno> {
    loop {
        // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live values of the right types.
        let n = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
        if n < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        let Some(sig) = Signal::from_number(n) else { continue };
        let origin = if info.si_code <= 0 {
            // SAFETY: for si_code <= 0 the kernel filled the _kill/_rt
            // member, whose first field is si_pid.
            Origin::Process { pid: unsafe { info.si_pid() } }
        } else {
            Origin::Kernel { code: info.si_code }
        };
        return Ok((sig, origin));
    }
}

/// Lets `sig` take its default action on this process, as if it had never
/// been blocked or caught: reset to SIG_DFL, unblock in this thread, raise.
/// For a fault signal that means a crash (with a core dump where enabled).
/// Returns only when the kernel drops it, which it does for PID 1 of a
/// namespace (a signal PID 1 has no handler for never reaches it); the
/// signal is then blocked again.
pub fn take_default_action(sig: Signal) {
    use nix::sys::signal::{pthread_sigmask, raise, signal, SigHandler, SigSet, SigmaskHow};
    let mut one = SigSet::empty();
    one.add(sig.0);
    // SAFETY: installing SIG_DFL (no handler code).
    unsafe {
        let _ = signal(sig.0, SigHandler::SigDfl);
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None);
    let _ = raise(sig.0);
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&one), None);
}

/// In `up` mode, a fault signal another process sends (`kill -SEGV`) is
/// logged and ignored instead of killing the supervisor (as a subreaper
/// that would orphan every service; as PID 1 the kernel drops it, since
/// there is no handler, but silently). Blocks [`FAULT_SIGNALS`] in the
/// calling thread, so every thread started afterwards (the runtime's) has
/// them blocked too (call before any other thread exists), and takes them
/// on a thread of their own. A real fault still crashes flowinit: the
/// kernel forces it through the block (see [`FAULT_SIGNALS`]).
pub fn ignore_sent_fault_signals() -> std::io::Result<()> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut set = SigSet::empty();
    for sig in FAULT_SIGNALS {
        set.add(sig);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    std::thread::Builder::new().name("fault-signals".into()).spawn(move || loop {
        match wait_signal(&set) {
            Ok((sig, Origin::Process { pid: 0 })) => {
                tracing::warn!("{sig} sent from outside flowinit's PID namespace: ignored");
            }
            Ok((sig, Origin::Process { pid })) => tracing::warn!("{sig} sent by pid {pid}: ignored"),
            Ok((sig, Origin::Kernel { .. })) => take_default_action(sig),
            Err(e) => {
                tracing::warn!("waiting for fault signals failed: {e}");
                return;
            }
        }
    })?;
    Ok(())
}

/// A signal number known to be valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(pub NixSignal);

impl Signal {
    pub const TERM: Signal = Signal(NixSignal::SIGTERM);
    pub const KILL: Signal = Signal(NixSignal::SIGKILL);

    pub fn number(self) -> i32 {
        self.0 as i32
    }

    pub fn from_number(n: i32) -> Option<Signal> {
        NixSignal::try_from(n).ok().map(Signal)
    }
}

/// A signal name or number that is not a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal {0:?} (expected a name like \"SIGTERM\" or a number)")]
pub struct UnknownSignal(pub String);

impl FromStr for Signal {
    type Err = UnknownSignal;
    /// Accepts `SIGTERM`, `TERM` (any case) or a number.
    fn from_str(s: &str) -> Result<Self, UnknownSignal> {
        let bad = || UnknownSignal(s.to_string());
        if let Ok(n) = s.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(bad);
        }
        let upper = s.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
        NixSignal::from_str(&full).map(Signal).map_err(|_| bad())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// A process id greater than zero. Constructing one from 0 or a negative
/// number is impossible, so signalling it never means "every process".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(i32);

impl Pid {
    pub fn new(raw: i32) -> Option<Pid> {
        (raw > 0).then_some(Pid(raw))
    }
    pub fn raw(self) -> i32 {
        self.0
    }
    /// Signals this one process. `Ok(false)` when it is already gone.
    pub fn signal(self, sig: Signal) -> Result<bool, Errno> {
        gone_is_false(kill(NixPid::from_raw(self.0), sig.0))
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A process group id (the leader's pid; every service is a group leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pgid(Pid);

impl Pgid {
    pub fn of_leader(pid: Pid) -> Pgid {
        Pgid(pid)
    }
    pub fn raw(self) -> i32 {
        self.0.raw()
    }
    /// Signals the whole group. `Ok(false)` when no member is left.
    pub fn signal(self, sig: Signal) -> Result<bool, Errno> {
        gone_is_false(killpg(NixPid::from_raw(self.0.raw()), sig.0))
    }
    /// True while any member of the group still exists (zombies included
    /// until they are reaped).
    pub fn alive(self) -> bool {
        matches!(killpg(NixPid::from_raw(self.0.raw()), None), Ok(()) | Err(Errno::EPERM))
    }
}

impl fmt::Display for Pgid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn gone_is_false(r: nix::Result<()>) -> Result<bool, Errno> {
    match r {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Signaled(Signal),
}

impl Termination {
    pub fn success(self) -> bool {
        self == Termination::Exited(0)
    }
    /// The shell convention: the code, or 128+N for signal N.
    pub fn exit_code(self) -> u8 {
        match self {
            Termination::Exited(c) => (c & 0xff) as u8,
            Termination::Signaled(s) => (128 + s.number()).clamp(0, 255) as u8,
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Exited(c) => write!(f, "exited {c}"),
            Termination::Signaled(s) => write!(f, "killed by {s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_names() {
        for s in ["SIGTERM", "TERM", "term", "15"] {
            assert_eq!(s.parse::<Signal>(), Ok(Signal::TERM), "{s}");
        }
        assert_eq!("SIGINT".parse::<Signal>().map(|s| s.number()), Ok(2));
        assert!("SIGNOPE".parse::<Signal>().is_err());
        assert!("0".parse::<Signal>().is_err());
    }

    #[test]
    fn pid_rejects_non_positive() {
        assert!(Pid::new(0).is_none());
        assert!(Pid::new(-1).is_none());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Termination::Exited(3).exit_code(), 3);
        assert_eq!(Termination::Signaled(Signal::KILL).exit_code(), 137);
    }
}
