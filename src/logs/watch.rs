//! A one-shot watch on a unit's output: armed before a start, it fires on
//! the first line matching its regex (a readiness `log` probe waits on it).
//! The forwarder offers lines only while it is armed, so a matched or
//! unused watch costs one atomic load per line.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

#[derive(Debug)]
pub struct LineWatch {
    regex: regex::Regex,
    armed: AtomicBool,
    hit: Notify,
}

impl LineWatch {
    pub fn new(regex: regex::Regex) -> LineWatch {
        LineWatch { regex, armed: AtomicBool::new(false), hit: Notify::new() }
    }

    /// Called before each start: the next matching line fires the watch.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Cheap check for the forwarder, before it offers a line.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// The line matches while the watch is armed; disarms it. The caller
    /// fires it ([`LineWatch::fire`]) once the line is on its way out, so
    /// "unit X is ready" never comes before the line that made it ready.
    pub fn take(&self, line: &str) -> bool {
        self.regex.is_match(line) && self.armed.swap(false, Ordering::SeqCst)
    }

    pub fn fire(&self) {
        self.hit.notify_one();
    }

    /// Resolves once a matching line has been fired (a match before the
    /// wait is kept: `Notify` stores one permit).
    pub async fn matched(&self) {
        self.hit.notified().await;
    }
}
