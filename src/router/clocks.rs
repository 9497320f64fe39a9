//! The two clocks of a client connection, on one timer.
//!
//! - **header_timeout**: the wait for a request head, from the accept or
//!   the end of the last response (so it is also the idle keep-alive
//!   timeout); at its end the connection is closed without an answer.
//! - **upstream_timeout**: the wait for an upstream's response head; at
//!   its end the exchange is abandoned and the client gets a 502.
//!
//! A tokio timer per request (hyper's header-read timer and a timeout
//! around each exchange: a clock read, a registration and a removal each)
//! cost ~4% of the router's CPU at 32 keep-alive connections. Here a
//! request only notes times in the connection's `Clocks`; the connection's
//! task keeps one timer, armed at the earliest deadline it knows of and
//! moved only when it fires (deadlines only move later while requests keep
//! coming) or when a deadline comes sooner than the one it is armed for.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// What a connection's requests note, read by its task. Everything runs on
/// the connection's task, so relaxed atomics are enough (they are atomics
/// only because the handler and the response body must be Send + Sync).
pub struct Clocks {
    /// Times are nanoseconds since this instant (the accept).
    epoch: Instant,
    header_timeout: Duration,
    /// A request is being answered (from its head to the end of its
    /// response body).
    busy: AtomicBool,
    /// When the connection last became idle: accept, or a response's end.
    idle_since: AtomicU64,
    /// When the exchange in progress gives up; 0 when there is none.
    exchange_deadline: AtomicU64,
    /// Set by the task when `exchange_deadline` passed.
    expired: AtomicBool,
}

/// What the task found when the timer fired.
pub enum Expiry {
    /// No request head within header_timeout: close the connection.
    HeaderTimeout,
    /// The exchange in progress ran out of time; poll it (it fails now).
    Exchange,
}

impl Clocks {
    pub fn new(header_timeout: Duration) -> Clocks {
        Clocks {
            epoch: Instant::now(),
            header_timeout,
            busy: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            exchange_deadline: AtomicU64::new(0),
            expired: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A request head came: the header clock stops.
    pub fn request_started(&self) {
        self.busy.store(true, Relaxed);
    }

    /// The response's body ended (or was dropped): the header clock starts
    /// again.
    pub fn response_done(&self) {
        self.idle_since.store(self.now(), Relaxed);
        self.busy.store(false, Relaxed);
    }

    /// An exchange with an upstream starts; it may take `limit`.
    pub fn exchange_started(&self, limit: Duration) {
        let deadline = self.now().saturating_add(u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX)).max(1);
        self.exchange_deadline.store(deadline, Relaxed);
        self.expired.store(false, Relaxed);
    }

    pub fn exchange_done(&self) {
        self.exchange_deadline.store(0, Relaxed);
    }

    /// The exchange in progress ran out of time.
    pub fn exchange_expired(&self) -> bool {
        self.expired.load(Relaxed)
    }

    /// The deadline that matters now, if any.
    fn next_deadline(&self) -> Option<u64> {
        if self.busy.load(Relaxed) {
            let d = self.exchange_deadline.load(Relaxed);
            (d != 0 && !self.expired.load(Relaxed)).then_some(d)
        } else {
            let timeout = u64::try_from(self.header_timeout.as_nanos()).unwrap_or(u64::MAX);
            Some(self.idle_since.load(Relaxed).saturating_add(timeout))
        }
    }
}

/// The connection task's timer.
pub struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// The deadline it is armed for (nanoseconds since the epoch).
    armed: Option<u64>,
    /// Polled since it was armed: the task's waker is registered with it
    /// (a task's waker does not change), so a look at its state is enough
    /// until it fires.
    registered: bool,
}

impl Timer {
    pub fn new() -> Timer {
        Timer { sleep: Box::pin(tokio::time::sleep(Duration::ZERO)), armed: None, registered: false }
    }

    /// Arms for what `clocks` needs and reports a deadline that passed.
    pub fn poll(&mut self, clocks: &Clocks, cx: &mut Context<'_>) -> Poll<Expiry> {
        loop {
            let Some(deadline) = clocks.next_deadline() else { return Poll::Pending };
            if self.armed.is_none_or(|a| deadline < a) {
                let at = clocks.epoch.checked_add(Duration::from_nanos(deadline)).unwrap_or_else(far_future);
                self.sleep.as_mut().reset(at);
                self.armed = Some(deadline);
                self.registered = false;
            }
            if self.registered && !self.sleep.is_elapsed() {
                return Poll::Pending;
            }
            self.registered = true;
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            (self.armed, self.registered) = (None, false);
            // The deadline may have moved on since the timer was armed.
            if clocks.now() < deadline {
                continue;
            }
            return Poll::Ready(if clocks.busy.load(Relaxed) {
                clocks.expired.store(true, Relaxed);
                Expiry::Exchange
            } else {
                Expiry::HeaderTimeout
            });
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
