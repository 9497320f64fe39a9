//! flowinit's own working directory. An init must not keep the directory
//! it was started in busy (it would pin that mount for the container's
//! whole life; dumb-init's tests check `/proc/<init>/cwd`), so once every
//! relative path it will need has been made absolute, flowinit changes to
//! `/` ([`leave_start_dir`]). Its children still start where they always
//! did: the spawn of a child without a `working_dir` of its own enters the
//! start directory by path ([`inherited_dir`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static START_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
static LEFT: AtomicBool = AtomicBool::new(false);

/// The directory flowinit was started in, absolute: read on the first call
/// ([`leave_start_dir`] makes one before it leaves). `None` when it cannot
/// be named (deleted, or an ancestor not readable): then flowinit never
/// leaves it, and relative paths keep being resolved by the kernel.
pub fn start_dir() -> Option<&'static Path> {
    START_DIR.get_or_init(|| std::env::current_dir().ok()).as_deref()
}

/// `path` made absolute against [`start_dir`] (unchanged when it already
/// is, or when the start directory has no name).
pub fn absolute_from_start(path: &Path) -> PathBuf {
    match start_dir() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// Changes to `/`. Call once every relative path flowinit still needs has
/// been made absolute. A failure is reported and flowinit stays where it
/// is (nothing else changes).
pub fn leave_start_dir() {
    if start_dir().is_none() {
        errln!("flowinit: warning: the working directory has no name; staying in it");
        return;
    }
    match std::env::set_current_dir("/") {
        Ok(()) => LEFT.store(true, Ordering::SeqCst),
        Err(e) => {
            errln!("flowinit: warning: cannot change to /: {e}; staying in the start directory");
        }
    }
}

/// Where a child without a `working_dir` must start: the start directory
/// once flowinit has left it, else nowhere in particular (it inherits).
pub(super) fn inherited_dir() -> Option<&'static Path> {
    if LEFT.load(Ordering::SeqCst) {
        start_dir()
    } else {
        None
    }
}
