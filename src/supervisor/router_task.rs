//! The unit actor for a `[router]` unit: the same commands and status
//! events as a service's unit task, but what it runs is the in-process HTTP
//! router. Ready as soon as it listens; stopping stops accepting and drains
//! requests in flight within stop_timeout (or the caller's deadline).
//! A reload that changes the router's configuration reaches it as
//! `UnitCmd::Reconfigure`: applied to the running router without a stop,
//! and its listen socket is never closed and bound again.

use super::state::State;
use super::unit_task::{UnitCmd, UnitEvent, UnitStatus};
use crate::api::{Readiness, RouterStats};
use crate::config::unit::RouterSpec;
use crate::logs::forward::{emit, OwnLine, UnitLog};
use crate::logs::{LogFormat, LogSink, Stream};
use crate::router::{serve_on_own_thread, Access, Beside, NewConfig, Router};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Access-log lines waiting for output; more are dropped, never waited for.
const ACCESS_LOG_QUEUE: usize = 4096;

/// A reload's change to a router unit: its new configuration, and the
/// socket of its new `listen` address when that changed (bound by the
/// manager before the reload is accepted).
#[derive(Debug)]
pub struct RouterChange {
    pub spec: Arc<RouterSpec>,
    pub listener: Option<std::net::TcpListener>,
}

pub struct RouterTask {
    pub id: u64,
    pub spec: Arc<RouterSpec>,
    /// Bound at start-up; taken by the first start (later starts re-bind).
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
                UnitCmd::Reconfigure(change) => self.keep(*change),
                UnitCmd::Stop { .. } if !status.state.is_settled() => {
                    self.report(&mut status, State::Stopped, None).await;
                }
                UnitCmd::Stop { .. } | UnitCmd::Hurry { .. } => {}
            }
        }
    }

    /// A change while the router is not serving: for its next start.
    fn keep(&mut self, change: RouterChange) {
        self.spec = change.spec;
        if let Some(l) = change.listener {
            self.listener = Some(l);
        }
    }

    async fn serve_until_stopped(&mut self, status: &mut UnitStatus) {
        let name = self.log.name.clone();
        let addr = self.spec.listen;
        let bound = match self.listener.take() {
            Some(l) => Ok(l),
            None => crate::router::bind(addr),
        };
        let listener = match bound {
            Ok(l) => l,
            Err(e) => return self.fail(status, format!("cannot listen on {addr}: {e}")).await,
        };
        // Always there: a reload may turn the access log on.
        let (access, mut rx) = mpsc::channel::<Access>(ACCESS_LOG_QUEUE);
        let (log, sink) = (self.log.clone(), self.sink.clone());
        let access_writer = Some(Box::pin(async move {
            let json = sink.format == LogFormat::Json;
            let (mut taken, mut lines) = (Vec::new(), Vec::new());
            while rx.recv_many(&mut taken, 256).await > 0 {
                lines.extend(
                    taken.drain(..).map(|a| OwnLine { text: a.text(), fields: json.then(|| a.json_members()) }),
                );
                emit(&log, Stream::Stdout, &sink, &lines).await;
                lines.clear();
            }
        }) as Beside);
        let access = Some(access);
        let (stop_tx, stop_rx) = watch::channel(false);
        let router = Arc::new(Router::new(
            self.spec.clone(),
            self.readiness.clone(),
            self.stats.clone(),
            access,
            stop_rx.clone(),
        ));
        let (drain_tx, drain_rx) = watch::channel(tokio::time::Instant::now());
        let (reconfigure, changes) = mpsc::channel::<NewConfig>(4);
        let mut server = match serve_on_own_thread(listener, router, stop_rx, drain_rx, changes, access_writer) {
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
                    Some(UnitCmd::Reconfigure(change)) => {
                        let RouterChange { spec, listener } = *change;
                        let moved = listener.as_ref().map(|_| spec.listen);
                        self.spec = spec.clone();
                        let _ = reconfigure.send(NewConfig { spec, listener }).await;
                        match moved {
                            Some(to) => tracing::info!("unit {name}: reconfigured; moving to {to}"),
                            None => tracing::info!("unit {name}: reconfigured"),
                        }
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
