//! Finds flowinit's descendants through /proc: all of them, for the last
//! step of shutdown, or those of one run of a unit, by the tag flowinit put
//! in that run's environment.
//!
//! Why a tag in the environment: a process that calls `setsid` or
//! double-forks leaves its unit's process group and session, and as an
//! orphan it is re-parented to flowinit, so neither the group nor the
//! parent chain says whose it was. Its environment does: children inherit
//! it through fork and exec, and `/proc/PID/environ` shows the block the
//! process started with. Remembering the sessions and groups seen would
//! miss any process that made a new one after the last look. Without
//! cgroups nothing is complete: a process that execs with a cleared
//! environment, or whose environ root cannot read, is not found (see
//! docs/operations.md, "Processes that escape their group").
//!
//! Signalling is safe against pid reuse: the pid is pinned with a pidfd
//! first, the tag is checked after that, and the signal goes through the
//! pidfd, so it can only reach the process whose environment was read.
//! Works the same as PID 1 and as a subreaper, and never touches processes
//! outside our tree.

use super::signal::{Pgid, Pid, Signal};
use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};

/// The variable that carries a run's tag; `FLOWINIT_UNIT` names the unit
/// for people, this one tells runs apart.
pub const RUN_TAG_VAR: &str = "FLOWINIT_RUN";

/// Every live descendant of the current process (zombies excluded).
pub fn descendants() -> Vec<Pid> {
    scan().into_iter().map(|(pid, _)| pid).collect()
}

/// Every live descendant with its process group.
fn scan() -> Vec<(Pid, i32)> {
    let me = std::process::id() as i32;
    let mut children: HashMap<i32, Vec<(i32, i32)>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the last ')' (the comm may contain anything).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok()).unwrap_or(0);
        let pgrp = fields.next().and_then(|p| p.parse::<i32>().ok()).unwrap_or(0);
        if state != "Z" && state != "X" {
            children.entry(ppid).or_default().push((pid, pgrp));
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![me];
    while let Some(p) = todo.pop() {
        for &(c, pgrp) in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if c != me {
                out.extend(Pid::new(c).map(|pid| (pid, pgrp)));
                todo.push(c);
            }
        }
    }
    out
}

/// True when `environ` (NUL-separated `KEY=VALUE` entries) holds
/// `RUN_TAG_VAR=tag`.
fn carries(environ: &[u8], tag: &str) -> bool {
    let want = format!("{RUN_TAG_VAR}={tag}");
    environ.split(|&b| b == 0).any(|entry| entry == want.as_bytes())
}

fn tagged(pid: Pid, tag: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| carries(&env, tag))
}

/// Signals (or with `None`, only counts) every live descendant whose
/// environment carries `tag`, except members of the group `besides` (the
/// caller signals that group itself, and some programs read a second
/// signal as "hurry"). Returns how many there were.
pub fn signal_tagged(tag: &str, besides: Option<Pgid>, sig: Option<Signal>) -> usize {
    let skip = besides.map_or(0, Pgid::raw);
    scan().into_iter().filter(|&(pid, pgrp)| pgrp != skip && signal_if_tagged(pid, tag, sig)).count()
}

fn signal_if_tagged(pid: Pid, tag: &str, sig: Option<Signal>) -> bool {
    match PidFd::open(pid) {
        Some(fd) => tagged(pid, tag) && fd.signal(sig),
        // No pidfd (kernel before 5.3): the check and the kill are two
        // steps; a pid can only be reused between them after the process
        // died and the pid counter wrapped.
        None => tagged(pid, tag) && sig.is_none_or(|s| matches!(pid.signal(s), Ok(true))),
    }
}

/// A pinned process: signals through it never reach a later owner of the pid.
struct PidFd(OwnedFd);

impl PidFd {
    fn open(pid: Pid) -> Option<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.raw(), 0) };
        let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
        // SAFETY: a fresh fd that nothing else owns.
        Some(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// False when the process is gone.
    fn signal(&self, sig: Option<Signal>) -> bool {
        use std::os::fd::AsRawFd;
        let n = sig.map_or(0, Signal::number);
        // SAFETY: pidfd_send_signal on an fd we own, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), n, std::ptr::null::<libc::siginfo_t>(), 0)
        };
        rc == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_exact_tag_only() {
        let env = b"PATH=/bin\0FLOWINIT_RUN=web/7\0HOME=/\0";
        assert!(carries(env, "web/7"));
        assert!(!carries(env, "web/70"));
        assert!(!carries(env, "web/"));
        assert!(!carries(b"X=FLOWINIT_RUN=web/7\0", "web/7"));
        assert!(!carries(b"", "web/7"));
    }

    #[test]
    fn nothing_of_ours_is_tagged_with_a_fresh_tag() {
        assert_eq!(signal_tagged("no-such-run/0", None, None), 0);
    }
}
