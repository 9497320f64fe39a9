//! The optional per-unit copy of a unit's lines to a file (`[log] file`),
//! rotated by tracing-appender on its own writer thread.

use std::path::Path;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::RollingFileAppender;
pub use tracing_appender::rolling::Rotation;

/// Rotated files kept per unit (the current one included).
const LOG_FILES_KEPT: usize = 7;

/// The writer for unit `unit`'s log file at `path`; an error is logged
/// and the unit logs to stdout only.
pub fn open(unit: &str, path: &Path, rotation: Rotation) -> Option<(NonBlocking, WorkerGuard)> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name()?.to_string_lossy().into_owned();
    let built = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix(name)
        .max_log_files(LOG_FILES_KEPT)
        .build(dir);
    match built {
        Ok(appender) => Some(NonBlockingBuilder::default().lossy(false).finish(appender)),
        Err(e) => {
            tracing::error!("unit {unit}: cannot open log file {}: {e}; logging to stdout only", path.display());
            None
        }
    }
}
