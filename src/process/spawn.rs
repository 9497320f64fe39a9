//! Turns a plain [`SpawnSpec`] into a running child. Users, groups and the
//! program path are resolved before we get here.
//!
//! The child is made the way `posix_spawn` makes it: `clone(CLONE_VM |
//! CLONE_VFORK)` on a small stack of its own, so nothing of flowinit's
//! memory is copied (a `fork` copies the page tables and then pays a
//! copy-on-write fault for every page either side touches: ~280 faults per
//! spawn, 35 % of the CPU of launching 200 units). The calling thread waits
//! until the child has exec'd or failed, and learns the error from shared
//! memory. `posix_spawn` itself is not used because it cannot drop
//! privileges, and glibc's leaves its two internal signals (32, 33)
//! ignored in the child; here every step is ours.
//!
//! Because the child shares flowinit's memory and runs on the calling
//! thread's TLS, between clone and exec it only makes raw system calls or
//! libc wrappers that are plain system calls, on data prepared before the
//! clone: no allocation, no locks, nothing that could panic. Credentials
//! change with raw `setgroups`/`setgid`/`setuid` system calls: glibc's
//! wrappers would broadcast the change to flowinit's other threads.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

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

/// The step of starting a child that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnStep {
    /// Building argv and the environment, opening /dev/null.
    Prepare,
    /// Creating the pipes for the child's output (done by the caller).
    Pipe,
    /// Creating the process itself (`clone`).
    Clone,
    Stdio,
    Session,
    Signals,
    Groups,
    Gid,
    Uid,
    Chdir(PathBuf),
    /// The unit's working_dir, checked before spawning.
    WorkingDir(PathBuf),
    Exec,
}

impl std::fmt::Display for SpawnStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnStep::Prepare => f.write_str("cannot prepare the child"),
            SpawnStep::Pipe => f.write_str("cannot create the output pipes"),
            SpawnStep::Clone => f.write_str("cannot create a process"),
            SpawnStep::Stdio => f.write_str("cannot set up stdin/stdout/stderr"),
            SpawnStep::Session => f.write_str("cannot create a session or process group"),
            SpawnStep::Signals => f.write_str("cannot reset the signal mask"),
            SpawnStep::Groups => f.write_str("setgroups failed"),
            SpawnStep::Gid => f.write_str("setgid failed"),
            SpawnStep::Uid => f.write_str("setuid failed"),
            SpawnStep::Chdir(dir) => write!(f, "cannot change to the working directory {}", dir.display()),
            SpawnStep::WorkingDir(dir) => write!(f, "working_dir {} is not a directory", dir.display()),
            SpawnStep::Exec => f.write_str("exec failed"),
        }
    }
}

/// Why a child could not be started: the step and the kernel's word.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct SpawnError {
    pub step: SpawnStep,
    #[source]
    pub source: io::Error,
}

impl SpawnError {
    pub fn new(step: SpawnStep, source: io::Error) -> SpawnError {
        SpawnError { step, source }
    }

    fn describe(&self) -> String {
        match self.step {
            // The kernel's word is the whole story (ENOENT, ENOEXEC, EACCES).
            SpawnStep::Exec => self.source.to_string(),
            SpawnStep::WorkingDir(_) => self.step.to_string(),
            _ => format!("{}: {}", self.step, self.source),
        }
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// Flowinit itself ran short of file descriptors, memory or processes:
    /// not the unit's fault, so not the unit's failure. `setuid`'s EAGAIN
    /// is excluded: it means the unit's *user* is at its process limit.
    pub fn resource_shortage(&self) -> Option<Shortage> {
        match self.step {
            SpawnStep::Uid => None,
            _ => Shortage::of(&self.source),
        }
    }
}

/// A resource flowinit itself ran out of (EMFILE, ENFILE, ENOMEM, EAGAIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// EMFILE: flowinit's own file descriptor limit.
    FileDescriptors,
    /// ENFILE: the system-wide file limit.
    SystemFiles,
    /// ENOMEM.
    Memory,
    /// EAGAIN: processes or memory, for now.
    Temporary,
}

impl Shortage {
    pub fn of(e: &io::Error) -> Option<Shortage> {
        match e.raw_os_error()? {
            libc::EMFILE => Some(Shortage::FileDescriptors),
            libc::ENFILE => Some(Shortage::SystemFiles),
            libc::ENOMEM => Some(Shortage::Memory),
            libc::EAGAIN => Some(Shortage::Temporary),
            _ => None,
        }
    }
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shortage::FileDescriptors => "out of file descriptors (EMFILE)",
            Shortage::SystemFiles => "out of file descriptors system-wide (ENFILE)",
            Shortage::Memory => "out of memory (ENOMEM)",
            Shortage::Temporary => "out of processes or memory for now (EAGAIN)",
        })
    }
}

/// Starts the child. Returns its pid once exec succeeded, or the error of
/// exec or of the step before it that failed (e.g. `setuid` refused, the
/// working directory missing); a failed child is reaped here. Never waits
/// for the child to exit: the caller must hold the reaper's registry so
/// that an early exit is not lost.
pub(super) fn spawn(spec: SpawnSpec) -> Result<u32, SpawnError> {
    let prepare = |e| SpawnError::new(SpawnStep::Prepare, e);
    let child = Prepared::new(spec).map_err(prepare)?;
    let stack = ChildStack::new().map_err(|e| SpawnError::new(SpawnStep::Clone, e))?;
    let mut old_mask: u64 = 0;
    let all: u64 = !0;
    // SAFETY: the raw rt_sigprocmask only changes this thread's mask (all
    // 64 signals, glibc's internal ones included, so no handler of ours can
    // run in the child on shared memory); `clone` runs `child_main` on
    // `stack`, which outlives it (CLONE_VFORK: we resume only after the
    // child exec'd or exited), with a pointer to `child`, which is not
    // touched by this thread until then.
    let pid = unsafe {
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &all, &mut old_mask, 8usize);
        let pid = libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(&child).cast_mut().cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &old_mask, std::ptr::null_mut::<u64>(), 8usize);
        if pid < 0 {
            return Err(SpawnError::new(SpawnStep::Clone, clone_error));
        }
        pid
    };
    drop(stack);
    let errno = child.errno.load(Ordering::Acquire);
    if errno == 0 {
        return u32::try_from(pid)
            .map_err(|_| SpawnError::new(SpawnStep::Clone, io::Error::other(format!("clone returned pid {pid}"))));
    }
    // The child has exited (127): collect it now, nobody else knows it.
    let mut status = 0;
    // SAFETY: plain waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let err = io::Error::from_raw_os_error(errno);
    let step = match Step::from(child.step.load(Ordering::Acquire)) {
        Step::Exec => SpawnStep::Exec,
        Step::Stdio => SpawnStep::Stdio,
        Step::Session => SpawnStep::Session,
        Step::Signals => SpawnStep::Signals,
        Step::Groups => SpawnStep::Groups,
        Step::Gid => SpawnStep::Gid,
        Step::Uid => SpawnStep::Uid,
        Step::Chdir => {
            let dir = child.dir.as_ref().map(|d| PathBuf::from(std::ffi::OsStr::from_bytes(d.as_bytes())));
            SpawnStep::Chdir(dir.unwrap_or_default())
        }
    };
    Err(SpawnError::new(step, err))
}

/// What the child does, in this order; the failing step is reported.
#[derive(Clone, Copy)]
#[repr(i32)]
enum Step {
    Stdio = 1,
    Session,
    Signals,
    Groups,
    Gid,
    Uid,
    Chdir,
    Exec,
}

impl Step {
    fn from(v: i32) -> Step {
        [Step::Stdio, Step::Session, Step::Signals, Step::Groups, Step::Gid, Step::Uid, Step::Chdir]
            .into_iter()
            .find(|s| *s as i32 == v)
            .unwrap_or(Step::Exec)
    }
}

/// Everything the child needs, built before the clone. The child only
/// reads it, except for `step`/`errno`, which it sets when it fails.
struct Prepared {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    dir: Option<CString>,
    /// Without `dir`: flowinit's start directory, once flowinit has left it
    /// (`process::cwd`).
    start_dir: Option<CString>,
    /// The fds that become 0, 1 and 2 (each at 3 or above, close-on-exec);
    /// `None` keeps flowinit's.
    stdio: [Option<OwnedFd>; 3],
    isolation: Isolation,
    creds: Option<(u32, u32, Vec<libc::gid_t>)>,
    step: AtomicI32,
    errno: AtomicI32,
    /// Own the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte"))
}

fn env_entry(k: &OsStr, v: &OsStr) -> io::Result<CString> {
    let mut b = Vec::with_capacity(k.len() + v.len() + 1);
    b.extend_from_slice(k.as_bytes());
    b.push(b'=');
    b.extend_from_slice(v.as_bytes());
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "environment contains a NUL byte"))
}

/// Moves `fd` to 3 or above, so that placing the three stdio fds can
/// neither overwrite a source nor leave one close-on-exec (dup2 onto
/// itself keeps the flag).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).map(|raw| {
        // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
    })?)
}

fn dev_null(write: bool) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new().read(!write).write(write).open("/dev/null")?;
    above_stdio(f.into())
}

impl Prepared {
    fn new(spec: SpawnSpec) -> io::Result<Prepared> {
        let mut strings = Vec::with_capacity(spec.argv.len() + 64);
        let mut argv = Vec::with_capacity(spec.argv.len() + 1);
        for a in &spec.argv {
            let c = cstring(a)?;
            argv.push(c.as_ptr());
            strings.push(c);
        }
        argv.push(std::ptr::null());
        let mut envp = Vec::new();
        let mut push_env = |k: &OsStr, v: &OsStr| -> io::Result<()> {
            let c = env_entry(k, v)?;
            envp.push(c.as_ptr());
            strings.push(c);
            Ok(())
        };
        match &spec.env {
            Some(env) => env.iter().try_for_each(|(k, v)| push_env(k, v))?,
            None => std::env::vars_os().try_for_each(|(k, v)| push_env(&k, &v))?,
        }
        envp.push(std::ptr::null());
        let stdio = match spec.stdio {
            Stdio3::Piped { stdout, stderr } => {
                [Some(dev_null(false)?), Some(above_stdio(stdout)?), Some(above_stdio(stderr)?)]
            }
            Stdio3::Inherit => [None, None, None],
            Stdio3::Null => [Some(dev_null(false)?), Some(dev_null(true)?), Some(dev_null(true)?)],
        };
        Ok(Prepared {
            program: cstring(spec.program.as_os_str())?,
            argv,
            envp,
            dir: spec.working_dir.as_deref().map(|d| cstring(d.as_os_str())).transpose()?,
            start_dir: match spec.working_dir {
                Some(_) => None,
                None => super::cwd::inherited_dir().map(|d| cstring(d.as_os_str())).transpose()?,
            },
            stdio,
            isolation: spec.isolation,
            creds: spec.credentials,
            step: AtomicI32::new(0),
            errno: AtomicI32::new(0),
            _strings: strings,
        })
    }
}

/// The child's stack: its own mapping with a guard page below, unmapped
/// once the child has exec'd (it then has a new address space).
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

/// Generous for what the child does (a few syscalls, no recursion).
const STACK_BYTES: usize = 128 * 1024;
const GUARD_BYTES: usize = 64 * 1024;

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        let len = STACK_BYTES + GUARD_BYTES;
        // SAFETY: a fresh anonymous mapping; the lowest GUARD_BYTES (a
        // multiple of any page size Linux uses) become inaccessible.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = ChildStack { base, len };
            if libc::mprotect(base, GUARD_BYTES, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// The initial stack pointer (stacks grow down on every Linux arch we
    /// build for); the mapping is page-aligned, so this is 16-aligned.
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The child, between clone and exec. Returns only by exec or `_exit`.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` the parent keeps alive and does not
    // touch until we exec or exit.
    let p = unsafe { &*arg.cast_const().cast::<Prepared>() };
    // SAFETY: see the module note: syscalls on prepared data only.
    let failed = unsafe { child_steps(p) };
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
    p.step.store(failed as i32, Ordering::Release);
    p.errno.store(if errno == 0 { libc::EINVAL } else { errno }, Ordering::Release);
    // SAFETY: ends the child (its own thread group) without running
    // anything of the parent's.
    unsafe { libc::_exit(127) }
}

fn ok(rc: libc::c_long) -> bool {
    rc >= 0
}

/// Runs the steps in order; returns the one that failed (errno is set).
/// Only returns on failure: the last step is exec.
unsafe fn child_steps(p: &Prepared) -> Step {
    for (target, fd) in (0..).zip(p.stdio.iter()) {
        if let Some(fd) = fd {
            if libc::dup2(fd.as_raw_fd(), target) < 0 {
                return Step::Stdio;
            }
        }
    }
    match p.isolation {
        Isolation::Session => {
            if libc::setsid() < 0 {
                return Step::Session;
            }
        }
        Isolation::ForegroundGroup => {
            if libc::setpgid(0, 0) < 0 {
                return Step::Session;
            }
            if libc::isatty(0) == 1 {
                // Ignore SIGTTOU so that a background group may take the
                // terminal; the reset below restores the default.
                let ign = [libc::SIG_IGN as u64, 0, 0, 0];
                libc::syscall(libc::SYS_rt_sigaction, libc::SIGTTOU, ign.as_ptr(), std::ptr::null_mut::<u64>(), 8usize);
                libc::tcsetpgrp(0, libc::getpid());
            }
        }
    }
    // Children inherit ignored dispositions and the signal mask across
    // exec; start every service from the defaults. The raw syscall, because
    // glibc's sigaction() refuses the signals it reserves (32, 33), which
    // can still arrive ignored. An all-zero kernel sigaction is SIG_DFL, no
    // flags, empty mask on every arch. Handlers go first, then the mask
    // (everything is blocked since the clone).
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), std::ptr::null_mut::<u64>(), 8usize);
        }
    }
    let empty: u64 = 0;
    if !ok(libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &empty, std::ptr::null_mut::<u64>(), 8usize)) {
        return Step::Signals;
    }
    // No working_dir: start where flowinit was started (it has left that
    // directory itself), entered before the switch to the unit's user, as
    // an inherited directory needs no permission either. Gone since then:
    // the child starts in / like flowinit.
    if let Some(dir) = &p.start_dir {
        libc::chdir(dir.as_ptr());
    }
    if let Some((uid, gid, groups)) = &p.creds {
        // Order matters: supplementary groups and gid while still root,
        // uid last (after setuid we may no longer change groups).
        if !ok(libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr())) {
            return Step::Groups;
        }
        if !ok(libc::syscall(libc::SYS_setgid, *gid)) {
            return Step::Gid;
        }
        if !ok(libc::syscall(libc::SYS_setuid, *uid)) {
            return Step::Uid;
        }
    }
    // As the service's user: a directory it may not enter fails the start
    // here, not later with a puzzling "Permission denied".
    if let Some(dir) = &p.dir {
        if libc::chdir(dir.as_ptr()) < 0 {
            return Step::Chdir;
        }
    }
    libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    Step::Exec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_are_flowinits() {
        let e = |n| io::Error::from_raw_os_error(n);
        let table = [
            (SpawnStep::Pipe, libc::EMFILE, Some(Shortage::FileDescriptors)),
            (SpawnStep::Clone, libc::EAGAIN, Some(Shortage::Temporary)),
            (SpawnStep::Prepare, libc::ENFILE, Some(Shortage::SystemFiles)),
            (SpawnStep::Exec, libc::ENOMEM, Some(Shortage::Memory)),
            (SpawnStep::Uid, libc::EAGAIN, None),
            (SpawnStep::Exec, libc::ENOENT, None),
            (SpawnStep::Chdir("/x".into()), libc::EACCES, None),
        ];
        for (step, errno, want) in table {
            let err = SpawnError::new(step.clone(), e(errno));
            assert_eq!(err.resource_shortage(), want, "{step:?} errno {errno}");
        }
    }

    #[test]
    fn messages_read_well() {
        let exec = SpawnError::new(SpawnStep::Exec, io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(exec.to_string(), "No such file or directory (os error 2)");
        let dir = SpawnError::new(SpawnStep::Chdir("/srv".into()), io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(dir.to_string(), "cannot change to the working directory /srv: Permission denied (os error 13)");
    }
}
