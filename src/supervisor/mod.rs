//! Supervision: pure states and backoff, the per-unit actor, the manager
//! that orders them, and what is said about a crash (diagnosis). `run` wires them to the reaper and the sink.

pub mod backoff;
pub mod diagnosis;
pub mod manager;
pub mod router_task;
pub mod state;
pub mod unit_task;

use crate::config::UnitSet;
use crate::logs::LogSink;
use crate::process::Reaper;

/// Supervises `set` until shutdown; returns the exit code (0 or 1).
/// `serve` gets the control handle and the snapshot feed once the manager
/// exists (the control socket), before any unit starts.
pub async fn run(
    set: UnitSet,
    opts: manager::Options,
    sink: LogSink,
    serve: impl FnOnce(crate::api::Handle, tokio::sync::watch::Receiver<crate::api::Snapshot>),
) -> u8 {
    let reaper = match Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot watch for child exits (SIGCHLD): {e}");
            return 1;
        }
    };
    let (active, total) = (set.units.iter().filter(|u| u.enabled).count(), set.units.len());
    let (manager, handle, snapshot) = manager::Manager::new(set, opts, &reaper, &sink);
    serve(handle, snapshot);
    tracing::info!("starting {active} of {total} units");
    // A panic is a bug, but PID 1 must outlive it: a panicking unit task
    // dies alone (the release profile unwinds); if the manager itself
    // panicked, nothing would supervise anymore, so stop everything and exit
    // 1 for the orchestrator to replace the container.
    match tokio::spawn(manager.run()).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("flowinit's supervisor crashed ({e}); stopping every process and exiting 1");
            crate::process::sweep::terminate_descendants(std::time::Instant::now() + std::time::Duration::from_secs(2))
                .await;
            1
        }
    }
}
