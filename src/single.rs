//! Single-command mode, `flowinit -- CMD [ARG]...`: a drop-in for tini.
//! One thread, no runtime: every forwardable signal is blocked and taken
//! with sigwaitinfo, so forwarding and reaping happen in one place and a
//! signal is never sent to a pid that was already reaped.
//!
//! The fault signals (ILL, ABRT, BUS, FPE, SEGV, TRAP, SYS) are forwarded
//! too when another process sent them (`kill -SEGV <flowinit>`), as
//! dumb-init does, instead of killing flowinit and orphaning CMD. A real
//! fault of flowinit's own still crashes it: the kernel forces those
//! through the block (see `process::signal::FAULT_SIGNALS`).

use crate::process::reaper::{reap_blocking_until, spawn_unregistered};
use crate::process::signal::{take_default_action, wait_signal, Origin, FAULT_SIGNALS};
use crate::process::{Isolation, Signal, SpawnSpec, Stdio3};
use crate::settings::Settings;
use nix::sys::signal::{SigSet, SigmaskHow, Signal as S};
use std::ffi::OsString;
use std::path::PathBuf;

/// Job control noise; everything else is forwarded.
const NOT_FORWARDED: [S; 2] = [S::SIGTTIN, S::SIGTTOU];

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
    // The child has its start directory; flowinit, which needs no path
    // from now on, must not keep it busy.
    crate::process::cwd::leave_start_dir();
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
        match wait_signal(&set) {
            Ok((Signal(S::SIGCHLD), _)) => {}
            // Not sent by a process: a fault signal the kernel did not force
            // (e.g. an asynchronous BUS_MCEERR_AO) is flowinit's own.
            Ok((sig, Origin::Kernel { .. })) if FAULT_SIGNALS.contains(&sig.0) => take_default_action(sig),
            Ok((sig, _)) => {
                let _ = child.signal(sig);
            }
            Err(e) => {
                errln!("flowinit: sigwaitinfo failed: {e}");
                return 1;
            }
        }
    }
}
