//! Turns a plain [`SpawnSpec`] into a running child. Users, groups and the
//! program path are resolved before we get here; between fork and exec the
//! child only makes async-signal-safe syscalls.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// How the child is detached from flowinit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A new session and process group (services): stop signals go to the
    /// group, and no terminal is inherited.
    Session,
    /// A new process group that takes over the terminal's foreground when
    /// stdin is one (single-command mode, like tini), so Ctrl-C and job
    /// control reach the child directly.
    ForegroundGroup,
}

/// Where the child's stdio goes.
pub enum Stdio3 {
    /// stdin /dev/null, stdout and stderr to the given pipe ends.
    Piped { stdout: OwnedFd, stderr: OwnedFd },
    /// All three inherited from flowinit.
    Inherit,
    /// All three /dev/null (probe commands).
    Null,
}

pub struct SpawnSpec {
    pub program: PathBuf,
    /// argv, argv[0] included.
    pub argv: Vec<OsString>,
    /// The complete environment (nothing else is inherited).
    pub env: Option<Vec<(OsString, OsString)>>,
    pub working_dir: Option<PathBuf>,
    /// (uid, gid, supplementary groups) to switch to.
    pub credentials: Option<(u32, u32, Vec<u32>)>,
    pub isolation: Isolation,
    pub stdio: Stdio3,
}

/// Forks and execs. Returns the child's pid once exec succeeded, or the
/// error from exec or from the pre-exec steps (e.g. `setuid` refused).
/// Never waits for the child: the caller must hold the reaper's registry
/// so that an early exit is not lost.
pub(super) fn spawn(spec: SpawnSpec) -> io::Result<u32> {
    let mut cmd = Command::new(&spec.program);
    if let Some(arg0) = spec.argv.first() {
        cmd.arg0(arg0);
    }
    cmd.args(spec.argv.iter().skip(1));
    if let Some(env) = &spec.env {
        cmd.env_clear();
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
    }
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    match spec.stdio {
        Stdio3::Piped { stdout, stderr } => {
            cmd.stdin(Stdio::null()).stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
        }
        Stdio3::Inherit => {}
        Stdio3::Null => {
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    let isolation = spec.isolation;
    let creds = spec.credentials;
    // SAFETY: the closure runs in the forked child before exec; it only
    // calls async-signal-safe functions (setsid, setpgid, isatty, tcsetpgrp,
    // sigaction, sigprocmask, setgroups, setgid, setuid) on data prepared
    // before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || pre_exec(isolation, creds.as_ref()));
    }
    let child = cmd.spawn()?;
    Ok(child.id())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the child between fork and exec. See the SAFETY note in
/// [`spawn`]: async-signal-safe calls only.
fn pre_exec(isolation: Isolation, creds: Option<&(u32, u32, Vec<u32>)>) -> io::Result<()> {
    // SAFETY (whole body): plain libc calls on stack values; each is
    // async-signal-safe per POSIX.
    unsafe {
        match isolation {
            Isolation::Session => check(libc::setsid())?,
            Isolation::ForegroundGroup => {
                check(libc::setpgid(0, 0))?;
                if libc::isatty(0) == 1 {
                    // Ignore SIGTTOU so that a background group may take the
                    // terminal; the reset below restores the default.
                    libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                    libc::tcsetpgrp(0, libc::getpid());
                }
            }
        }
        // Children inherit ignored dispositions and the signal mask across
        // exec; start every service from the defaults.
        // The raw syscall, because glibc's sigaction() refuses the signals
        // it reserves (32, 33), which can still arrive ignored. An all-zero
        // kernel sigaction is SIG_DFL, no flags, empty mask on every arch.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), std::ptr::null_mut::<u64>(), 8usize);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        check(libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()))?;
        if let Some((uid, gid, groups)) = creds {
            // Order matters: supplementary groups and gid while still root,
            // uid last (after setuid we may no longer change groups).
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(*gid))?;
            check(libc::setuid(*uid))?;
        }
    }
    Ok(())
}
