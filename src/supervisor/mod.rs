//! Supervision: pure states and backoff, the per-unit actor, and the
//! manager that orders them. `run` wires them to the reaper and the sink.

pub mod backoff;
pub mod manager;
pub mod state;
pub mod unit_task;

use crate::config::UnitSet;
use crate::logs::LogSink;
use crate::process::Reaper;
use std::time::Duration;

/// Supervises `set` until shutdown; returns the exit code (0 or 1).
pub async fn run(set: UnitSet, shutdown_timeout: Duration, sink: LogSink) -> u8 {
    let reaper = match Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot watch for child exits (SIGCHLD): {e}");
            return 1;
        }
    };
    let (active, total) = (
        set.units.iter().filter(|u| u.enabled).count(),
        set.units.len(),
    );
    let manager = manager::Manager::new(set, manager::Options { shutdown_timeout }, &reaper, &sink);
    tracing::info!("starting {active} of {total} units");
    manager.run().await
}
