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
