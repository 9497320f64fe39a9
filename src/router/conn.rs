//! One client connection and the upstream connections its requests use,
//! driven by one task. A request is read, forwarded, answered and its
//! response streamed back without waking any other task: the task polls
//! the upstream connections and the client's HTTP connection in turn, and
//! goes round again when one of them made work for another (a request
//! queued for an upstream, a response or body chunk for the client), before
//! it gives the thread back to the runtime.
//!
//! `Upstreams` is what the request handler sees: one kept sender per
//! upstream address for the next keep-alive request, and the upstream
//! connections it opened, handed to the task to drive. They close with the
//! client connection.

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// A request body towards an upstream: the client's, or none (a replay).
pub type UpBody = Either<Incoming, Empty<Bytes>>;
pub type UpstreamConn = Connection<TokioIo<tokio::net::TcpStream>, UpBody>;

/// Times one wake-up of the task may go round its connections before it
/// yields to the runtime (a busy stream must not starve other clients).
const ROUNDS: usize = 16;

/// The upstream side of one client connection.
pub struct Upstreams {
    inner: Mutex<Inner>,
    /// Wakes the task that drives this client connection.
    task: Waker,
}

#[derive(Default)]
struct Inner {
    /// Upstream address → its sender, absent while a request uses it.
    senders: Vec<(String, Option<SendRequest<UpBody>>)>,
    /// Connections opened since the task last looked.
    opened: Vec<Pin<Box<UpstreamConn>>>,
}

impl Upstreams {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sender kept for `addr`, taken so that nothing else uses it.
    pub fn take(&self, addr: &str) -> Option<SendRequest<UpBody>> {
        self.lock().senders.iter_mut().find(|(a, _)| a == addr).and_then(|(_, s)| s.take())
    }

    /// Keeps `sender` for the next request to `addr`.
    pub fn keep(&self, addr: &str, sender: SendRequest<UpBody>) {
        let mut inner = self.lock();
        match inner.senders.iter_mut().find(|(a, _)| a == addr) {
            Some((_, slot)) => *slot = Some(sender),
            None => inner.senders.push((addr.to_string(), Some(sender))),
        }
    }

    /// Hands a new upstream connection to the task, which drives it until
    /// it closes or the client connection ends.
    pub fn adopt(&self, conn: UpstreamConn) {
        self.lock().opened.push(Box::pin(conn));
        self.task.wake_by_ref();
    }
}

/// The waker given to everything the task polls. A wake-up that comes
/// while the task is going round its connections only asks for one more
/// round (no trip through the runtime's queues); any other wakes the task.
#[derive(Default)]
struct Flag {
    polling: AtomicBool,
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Flag {
    fn set_task(&self, waker: &Waker) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if !task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Either the round in progress sees `woken`, or this sees that no
        // round is in progress and wakes the task (SeqCst on both sides).
        self.woken.store(true, SeqCst);
        if !self.polling.load(SeqCst) {
            if let Some(w) = self.task.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

/// The state of one client connection's task besides the client's HTTP
/// connection itself.
pub struct Together {
    upstreams: Arc<Upstreams>,
    conns: Vec<Pin<Box<UpstreamConn>>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl Together {
    pub fn new() -> Together {
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let upstreams = Arc::new(Upstreams { inner: Mutex::default(), task: waker.clone() });
        Together { upstreams, conns: Vec::new(), flag, waker }
    }

    /// For the request handler of this client connection.
    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.clone()
    }

    /// Polls the upstream connections, then `client` (whose requests may
    /// queue work for them, or take what they produced), as long as either
    /// side wakes the other. Ready when `client` is done; the upstream
    /// connections are closed when `self` is dropped.
    pub fn poll<F: Future>(&mut self, cx: &mut Context<'_>, mut client: Pin<&mut F>) -> Poll<F::Output> {
        let Together { upstreams, conns, flag, waker } = self;
        flag.set_task(cx.waker());
        let mut inner = Context::from_waker(waker);
        for _ in 0..ROUNDS {
            flag.polling.store(true, SeqCst);
            flag.woken.store(false, SeqCst);
            conns.append(&mut upstreams.lock().opened);
            conns.retain_mut(|c| match c.as_mut().poll(&mut inner) {
                Poll::Pending => true,
                Poll::Ready(Ok(())) => false,
                Poll::Ready(Err(e)) => {
                    tracing::debug!("router: upstream connection: {e}");
                    false
                }
            });
            let done = client.as_mut().poll(&mut inner);
            flag.polling.store(false, SeqCst);
            if done.is_ready() {
                return done;
            }
            if !flag.woken.swap(false, SeqCst) {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
