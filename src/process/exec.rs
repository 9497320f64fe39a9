//! Replacing the current process with a command, under given credentials,
//! in a given directory, with a given environment: how `flowinit exec`
//! ends. Unlike `spawn` there is no child: the command takes over this
//! process, its pid, its stdio and terminal, its session and process group,
//! so signals reach it directly and its exit status is its own.
//!
//! The caller is the short-lived client, one thread, no runtime: the libc
//! wrappers for the credential calls are the right ones here (`spawn` needs
//! raw system calls because its child shares flowinit's memory).

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a unit's process would get when no PATH is set (the same default
/// as the program lookup at load).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

pub struct ExecAs {
    /// argv, argv[0] as given (looked up on the PATH of `env`).
    pub argv: Vec<OsString>,
    /// The complete environment.
    pub env: Vec<(OsString, OsString)>,
    /// (uid, gid, supplementary groups); switched to unless already ours.
    pub credentials: (u32, u32, Vec<u32>),
    /// Entered after the switch, as that user.
    pub working_dir: Option<PathBuf>,
}

/// The credential step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialStep {
    Groups,
    Gid,
    Uid,
}

impl std::fmt::Display for CredentialStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CredentialStep::Groups => "setgroups",
            CredentialStep::Gid => "setgid",
            CredentialStep::Uid => "setuid",
        })
    }
}

/// Why the command could not take over. Each reads after "cannot run CMD
/// as unit U: ".
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no command given")]
    NoCommand,
    #[error("cannot switch to uid {uid}, gid {gid}, groups {groups:?}: {step} failed: {errno}")]
    Credentials { uid: u32, gid: u32, groups: Vec<u32>, step: CredentialStep, errno: Errno },
    #[error("cannot change to the working directory {}: {errno}", dir.display())]
    Chdir { dir: PathBuf, errno: Errno },
    #[error("{program}: command not found on PATH={path}")]
    NotFound { program: String, path: String },
    #[error("{program}: permission denied (not executable)")]
    NotExecutable { program: String },
    #[error("{program}: {errno}")]
    Exec { program: String, errno: Errno },
}

impl ExecError {
    /// As a shell reports it: 127 when the command is not there, 126 when
    /// it is there but cannot be run (or this process cannot become the
    /// unit's user or enter its directory).
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::NotFound { .. } | ExecError::Exec { errno: Errno::ENOENT, .. } => 127,
            _ => 126,
        }
    }

    /// The kernel refused a credential change: only root may take another
    /// user's identity.
    pub fn not_permitted(&self) -> bool {
        matches!(self, ExecError::Credentials { errno: Errno::EPERM, .. })
    }
}

/// Becomes `cmd`: switches credentials (groups, gid, uid, in that order),
/// enters the working directory, looks the program up on the PATH of the
/// new environment, resets every signal to its default and execs it.
/// Returns only when a step failed.
pub fn exec_as(cmd: ExecAs) -> ExecError {
    let Some(program) = cmd.argv.first() else {
        return ExecError::NoCommand;
    };
    let shown = program.to_string_lossy().into_owned();
    let (uid, gid, groups) = &cmd.credentials;
    if !already(*uid, *gid, groups) {
        let failed =
            |step| move |errno| ExecError::Credentials { uid: *uid, gid: *gid, groups: groups.clone(), step, errno };
        let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        // Groups and gid while still root; uid last (after setuid the
        // groups can no longer be changed).
        if let Err(e) = nix::unistd::setgroups(&gids).map_err(failed(CredentialStep::Groups)) {
            return e;
        }
        if let Err(e) = nix::unistd::setgid(Gid::from_raw(*gid)).map_err(failed(CredentialStep::Gid)) {
            return e;
        }
        if let Err(e) = nix::unistd::setuid(Uid::from_raw(*uid)).map_err(failed(CredentialStep::Uid)) {
            return e;
        }
    }
    if let Some(dir) = &cmd.working_dir {
        if let Err(errno) = nix::unistd::chdir(dir) {
            return ExecError::Chdir { dir: dir.clone(), errno };
        }
    }
    let path = cmd
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or_else(|| OsString::from(DEFAULT_PATH), |(_, v)| v.clone());
    let found = match which::which_in(program, Some(&path), Path::new(".")) {
        Ok(p) => p,
        // Like a shell: a path that exists but cannot run is 126.
        Err(_) if program.as_bytes().contains(&b'/') && Path::new(program).exists() => {
            return ExecError::NotExecutable { program: shown };
        }
        Err(_) => return ExecError::NotFound { program: shown, path: path.to_string_lossy().into_owned() },
    };
    let exec_error = |errno| ExecError::Exec { program: shown.clone(), errno };
    let Some(argv) = cmd.argv.iter().map(|a| cstring(a)).collect::<Option<Vec<CString>>>() else {
        return exec_error(Errno::EINVAL);
    };
    let Some(envp) = cmd.env.iter().map(|(k, v)| env_entry(k, v)).collect::<Option<Vec<CString>>>() else {
        return exec_error(Errno::EINVAL);
    };
    let Some(file) = cstring(found.as_os_str()) else {
        return exec_error(Errno::EINVAL);
    };
    default_signals();
    match nix::unistd::execve(&file, &argv, &envp) {
        Err(errno) => exec_error(errno),
        Ok(never) => match never {},
    }
}

/// Whether this process already has exactly these credentials (then
/// nothing is switched: a non-root caller that is the unit's user may
/// exec without the right to call setgroups).
fn already(uid: u32, gid: u32, groups: &[u32]) -> bool {
    let ids = nix::unistd::getresuid().is_ok_and(|r| [r.real, r.effective, r.saved].iter().all(|u| u.as_raw() == uid))
        && nix::unistd::getresgid().is_ok_and(|r| [r.real, r.effective, r.saved].iter().all(|g| g.as_raw() == gid));
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v.dedup();
        v
    };
    let ours = nix::unistd::getgroups().map(|g| sorted(g.into_iter().map(Gid::as_raw).collect()));
    ids && ours.is_ok_and(|ours| ours == sorted(groups.to_vec()))
}

/// Ignored signals and the blocked mask survive exec. The command starts
/// from the defaults, as the unit's own process does (`spawn`): not with
/// the SIGPIPE Rust's runtime ignores in every program, nor with what the
/// caller left (glibc's `posix_spawn` leaves its signals 32 and 33 ignored,
/// a shell ignores SIGINT for a background job, `nohup` SIGHUP), so that
/// Ctrl-C and SIGTERM always mean to CMD what they mean to it by default.
/// The raw syscall: glibc's `sigaction()` refuses 32 and 33.
fn default_signals() {
    let dfl = [0u64; 4];
    let empty: u64 = 0;
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: an all-zero kernel sigaction is SIG_DFL with no flags
            // and an empty mask; no handler code is installed.
            unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), std::ptr::null_mut::<u64>(), 8usize) };
        }
    }
    // SAFETY: sets this (only) thread's mask from a valid 8-byte set.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &empty, std::ptr::null_mut::<u64>(), 8usize) };
}

fn cstring(s: &OsStr) -> Option<CString> {
    CString::new(s.as_bytes()).ok()
}

fn env_entry(k: &OsStr, v: &OsStr) -> Option<CString> {
    let mut b = Vec::with_capacity(k.len() + v.len() + 1);
    b.extend_from_slice(k.as_bytes());
    b.push(b'=');
    b.extend_from_slice(v.as_bytes());
    CString::new(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_a_shells() {
        let nf = ExecError::NotFound { program: "psql".into(), path: "/usr/bin".into() };
        assert_eq!(nf.exit_code(), 127);
        assert_eq!(nf.to_string(), "psql: command not found on PATH=/usr/bin");
        assert_eq!(ExecError::Exec { program: "x".into(), errno: Errno::ENOENT }.exit_code(), 127);
        assert_eq!(ExecError::Exec { program: "x".into(), errno: Errno::EACCES }.exit_code(), 126);
        assert_eq!(ExecError::NotExecutable { program: "./x".into() }.exit_code(), 126);
        let creds = ExecError::Credentials {
            uid: 1,
            gid: 2,
            groups: vec![2],
            step: CredentialStep::Groups,
            errno: Errno::EPERM,
        };
        assert_eq!(creds.exit_code(), 126);
        assert!(creds.not_permitted());
        assert_eq!(
            creds.to_string(),
            "cannot switch to uid 1, gid 2, groups [2]: setgroups failed: EPERM: Operation not permitted"
        );
    }
}
