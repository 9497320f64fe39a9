//! The unit actor for a `[router]` unit: the same commands and status
//! events as a service's unit task, but what it runs is the in-process HTTP
//! router. Ready as soon as it listens; stopping stops accepting and drains
//! requests in flight within stop_timeout (or the caller's deadline).

use super::state::State;
use super::unit_task::{UnitCmd, UnitEvent, UnitStatus};
use crate::api::{Readiness, RouterStats};
use crate::config::unit::RouterSpec;
use crate::logs::forward::{emit, UnitLog};
use crate::logs::{LogSink, Stream};
use crate::router::{serve_on_own_thread, Beside, Router};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Access-log lines waiting for output; more are dropped, never waited for.
const ACCESS_LOG_QUEUE: usize = 4096;

/// A router unit's new definition: new connections get `spec`; when the
/// listen address changed, `listener` is the new address, already bound.
#[derive(Debug)]
pub struct RouterChange {
    pub spec: Arc<RouterSpec>,
    pub listener: Option<std::net::TcpListener>,
}

pub struct RouterTask {
    pub id: u64,
    pub spec: Arc<RouterSpec>,
    /// A duplicate of the listen socket flowinit keeps, for the next run;
    /// given with each start (a `Reconfigure` while idle).
    pub listener: Option<std::net::TcpListener>,
    pub log: UnitLog,
    pub sink: LogSink,
    pub events: mpsc::Sender<UnitEvent>,
    pub cmds: mpsc::Receiver<UnitCmd>,
    pub readiness: watch::Receiver<Readiness>,
    pub stats: Arc<RouterStats>,
}

impl RouterTask {
    async fn report(&self, status: &mut UnitStatus, state: State, reason: Option<String>) {
        // In-process: there is never a pid.
        status.enter(state, None, reason);
        let _ = self.events.send(UnitEvent { id: self.id, status: status.clone() }).await;
    }

    async fn fail(&self, status: &mut UnitStatus, why: String) {
        tracing::error!("unit {}: {why}", self.log.name);
        self.report(status, State::Failed, Some(why)).await;
    }

    pub async fn run(mut self) {
        let mut status = UnitStatus::new(State::Inactive, None);
        while let Some(cmd) = self.cmds.recv().await {
            match cmd {
                UnitCmd::Start => self.serve_until_stopped(&mut status).await,
                UnitCmd::Reconfigure(change) => {
                    self.spec = change.spec;
                    if let Some(l) = change.listener {
                        self.listener = Some(l);
                    }
                }
                UnitCmd::Stop { .. } if !status.state.is_settled() => {
                    self.report(&mut status, State::Stopped, None).await;
                }
                _ => {}
            }
        }
    }

    async fn serve_until_stopped(&mut self, status: &mut UnitStatus) {
        let name = self.log.name.clone();
        let addr = self.spec.listen;
        // flowinit keeps the socket; each run serves on a duplicate of its own.
        let bound = match self.listener.take() {
            Some(l) => Ok(l),
            None => crate::router::bind(addr),
        };
        let listener = match bound {
            Ok(l) => l,
            Err(e) => return self.fail(status, format!("cannot listen on {addr}: {e}")).await,
        };
        let mut access_writer = None;
        let access = self.spec.access_log.then(|| {
            let (tx, mut rx) = mpsc::channel::<String>(ACCESS_LOG_QUEUE);
            let (log, sink) = (self.log.clone(), self.sink.clone());
            access_writer = Some(Box::pin(async move {
                let mut lines = Vec::new();
                while rx.recv_many(&mut lines, 256).await > 0 {
                    emit(&log, Stream::Stdout, &sink, &lines).await;
                    lines.clear();
                }
            }) as Beside);
            tx
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let router = Arc::new(Router::new(
            self.spec.clone(),
            self.readiness.clone(),
            self.stats.clone(),
            access,
            stop_rx.clone(),
        ));
        let (drain_tx, drain_rx) = watch::channel(tokio::time::Instant::now());
        let mut server = match serve_on_own_thread(listener, router, stop_rx, drain_rx, access_writer) {
            Ok(done) => done,
            Err(e) => return self.fail(status, format!("cannot start the router's thread: {e}")).await,
        };
        tracing::info!("unit {name}: listening on {addr}");
        self.report(status, State::Running, None).await;
        loop {
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(UnitCmd::Stop { deadline }) => {
                        let until = (Instant::now() + self.spec.stop_timeout).min(deadline);
                        let _ = drain_tx.send(until.into());
                        tracing::info!("unit {name}: stopping (no new connections; draining requests in flight)");
                        self.report(status, State::Stopping, None).await;
                        let _ = stop_tx.send(true);
                        loop {
                            tokio::select! {
                                _ = &mut server => break,
                                cmd = self.cmds.recv() => if let Some(UnitCmd::Hurry { deadline } | UnitCmd::Stop { deadline }) = cmd {
                                    let sooner = (*drain_tx.borrow()).min(deadline.into());
                                    let _ = drain_tx.send(sooner);
                                },
                            }
                        }
                        tracing::info!("unit {name} stopped");
                        self.report(status, State::Stopped, None).await;
                        return;
                    }
                    None => {
                        let _ = stop_tx.send(true);
                        return;
                    }
                    Some(_) => {}
                },
                _ = &mut server => {
                    self.fail(status, "the router stopped unexpectedly".into()).await;
                    return;
                }
            }
        }
    }
}
