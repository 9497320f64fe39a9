//! Single-command mode, `flowinit -- CMD [ARG]...`: a drop-in for tini.
//! One thread, no runtime: every forwardable signal is blocked and taken
//! with sigwait, so forwarding and reaping happen in one place and a signal
//! is never sent to a pid that was already reaped.

use crate::process::reaper::{reap_blocking_until, spawn_unregistered};
use crate::process::{Isolation, Signal, SpawnSpec, Stdio3};
use crate::settings::Settings;
use nix::sys::signal::{SigSet, SigmaskHow, Signal as S};
use std::ffi::OsString;
use std::path::PathBuf;

/// Signals that are the process's own business (faults) or job control
/// noise; everything else is forwarded.
const NOT_FORWARDED: [S; 9] =
    [S::SIGFPE, S::SIGILL, S::SIGSEGV, S::SIGBUS, S::SIGABRT, S::SIGTRAP, S::SIGSYS, S::SIGTTIN, S::SIGTTOU];

pub fn run(cmd: &[OsString]) -> u8 {
    let Some(program) = cmd.first() else {
        errln!("flowinit: usage: flowinit -- CMD [ARG]...  (no command given)");
        return 2;
    };
    // The same environment often serves both modes (one task definition,
    // a changed command): a bad setting is reported here too, not only
    // once the container runs `flowinit up`.
    match Settings::from_env() {
        Ok(settings) => {
            for w in settings.unknown_warnings() {
                errln!("flowinit: warning: {w}");
            }
        }
        Err(errors) => {
            for e in errors {
                errln!("flowinit: {e}");
            }
            return 2;
        }
    }
    crate::process::become_subreaper_unless_pid1();
    let path: PathBuf = match which::which(program) {
        Ok(p) => p,
        // Like a shell: a path that exists but cannot run is 126.
        Err(_) if program.to_string_lossy().contains('/') && std::path::Path::new(program).exists() => {
            errln!("flowinit: {}: permission denied (not executable)", program.to_string_lossy());
            return 126;
        }
        Err(_) => {
            errln!("flowinit: {}: command not found", program.to_string_lossy());
            return 127;
        }
    };
    let mut set = SigSet::empty();
    for sig in S::iterator() {
        if !NOT_FORWARDED.contains(&sig) && sig != S::SIGKILL && sig != S::SIGSTOP {
            set.add(sig);
        }
    }
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        errln!("flowinit: cannot block signals: {e}");
        return 1;
    }
    let spec = SpawnSpec {
        program: path,
        argv: cmd.to_vec(),
        env: None,
        working_dir: None,
        credentials: None,
        isolation: Isolation::ForegroundGroup,
        stdio: Stdio3::Inherit,
    };
    let child = match spawn_unregistered(spec) {
        Ok(pid) => pid,
        Err(e) => {
            errln!("flowinit: cannot run {}: {e}", program.to_string_lossy());
            return if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
        }
    };
    loop {
        // The child may already be gone before the first wait.
        match reap_blocking_until(child) {
            Ok(Some(term)) => return term.exit_code(),
            Ok(None) => {}
            Err(e) => {
                errln!("flowinit: lost track of {}: {e}", program.to_string_lossy());
                return 1;
            }
        }
        match set.wait() {
            Ok(S::SIGCHLD) => {}
            Ok(sig) => {
                let _ = child.signal(Signal(sig));
            }
            Err(e) => {
                errln!("flowinit: sigwait failed: {e}");
                return 1;
            }
        }
    }
}
