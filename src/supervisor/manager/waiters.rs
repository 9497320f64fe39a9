//! Control requests waiting for their units to get where they were sent:
//! `start` answers once its units are up (or failed), `stop` once they are
//! down, `restart` and `reload` once the stopped units are up again.
//! A target remembers the generation and restart count it was asked at, so
//! that a later restart or a replaced definition cannot answer for it.

use super::plan::{RequestId, SlotId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
}

/// One unit a request waits for, as it was when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub slot: SlotId,
    /// Bumped by a reload that replaced the definition: a stop is then done.
    pub generation: u64,
    /// A start that restarted since did not come up.
    pub restarts: u32,
}

#[derive(Debug)]
pub struct Waiter {
    pub id: RequestId,
    pub op: Op,
    pub targets: Vec<Target>,
    /// Once the stop is done, start these (restart, reload).
    pub then_start: Vec<SlotId>,
    /// The answer's first words ("started", "stopped") or, when it holds a
    /// colon, the whole answer (a reload summary).
    pub verb: String,
}

impl Waiter {
    /// The answer once done: "started a, b", or the reload summary.
    pub fn answer(&self, mut names: Vec<String>) -> String {
        names.sort();
        if names.is_empty() || self.verb.contains(':') {
            self.verb.clone()
        } else {
            format!("{} {}", self.verb, names.join(", "))
        }
    }
}
