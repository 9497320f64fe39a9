//! The optional per-unit copy of a unit's lines to a file (`[log] file`),
//! rotated by tracing-appender on its own writer thread.

use crate::config::unit::Rotation;
use crate::config::Unit;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation as R};

/// Rotated files kept per unit (the current one included).
const LOG_FILES_KEPT: usize = 7;

/// The writer for `unit`'s log file, if it has one; an error is logged and
/// the unit logs to stdout only.
pub fn open(unit: &Unit) -> Option<(NonBlocking, WorkerGuard)> {
    let path = unit.log.file.as_ref()?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name()?.to_string_lossy().into_owned();
    let rotation = match unit.log.rotate {
        Rotation::Never => R::NEVER,
        Rotation::Hourly => R::HOURLY,
        Rotation::Daily => R::DAILY,
    };
    let built = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix(name)
        .max_log_files(LOG_FILES_KEPT)
        .build(dir);
    match built {
        Ok(appender) => Some(NonBlockingBuilder::default().lossy(false).finish(appender)),
        Err(e) => {
            tracing::error!("unit {}: cannot open log file {}: {e}; logging to stdout only", unit.name, path.display());
            None
        }
    }
}
