//! Everything that touches child processes at the OS level: spawning into a
//! new session, the single reaper that owns `waitpid`, typed signals, and
//! the descendant scan used at final shutdown. The only module with `unsafe`.

pub mod reaper;
pub mod signal;
pub mod spawn;
pub mod tree;

pub use reaper::Reaper;
pub use signal::{Pgid, Pid, Signal, Termination};
pub use spawn::{Isolation, SpawnSpec, Stdio3};

/// As PID 1 orphans come to us anyway; otherwise ask the kernel to send
/// them to us (PR_SET_CHILD_SUBREAPER).
pub fn become_subreaper_unless_pid1() {
    if std::process::id() != 1 {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            errln!("flowinit: warning: cannot become a child subreaper ({e}); orphans will not be reaped by flowinit");
        }
    }
}
