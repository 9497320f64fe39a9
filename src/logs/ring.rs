//! The recent lines of one unit, kept in memory for `flowinit status UNIT`
//! and `flowinit logs`. Bounded by line count; writers push only the tail of
//! each chunk, so a flood costs one allocation per kept line, not per line.
//! Lines are numbered in arrival order; followers (`logs -f`) wait on the
//! number of the newest line.

use super::sink::Stream;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub ts: SystemTime,
    pub stream: Stream,
    pub text: String,
}

#[derive(Debug)]
pub struct RingLog {
    cap: usize,
    lines: Mutex<VecDeque<(u64, LogLine)>>,
    last: watch::Sender<u64>,
}

impl RingLog {
    pub fn new(cap: usize) -> RingLog {
        // Grows on first use: most units log little, and 200 idle units
        // should not reserve 200 rings.
        RingLog { cap, lines: Mutex::new(VecDeque::new()), last: watch::Sender::new(0) }
    }

    fn locked(&self) -> MutexGuard<'_, VecDeque<(u64, LogLine)>> {
        // A poisoned lock only means a panic elsewhere; the queue is intact.
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Pushes a chunk's lines under one lock and wakes followers once (a
    /// notification per line was a quarter of the forwarding cost).
    pub fn push_all(&self, new: impl IntoIterator<Item = LogLine>) {
        let mut lines = self.locked();
        let mut seq = self.last_seq();
        for line in new {
            if lines.len() == self.cap {
                lines.pop_front();
            }
            seq += 1;
            lines.push_back((seq, line));
        }
        drop(lines);
        if seq != self.last_seq() {
            self.last.send_replace(seq);
        }
    }

    /// The number of the newest line (0 before the first).
    pub fn last_seq(&self) -> u64 {
        *self.last.borrow()
    }

    /// Changes whenever a line is pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }

    /// Lines newer than `seq` that are still kept, oldest first.
    pub fn since(&self, seq: u64) -> Vec<(u64, LogLine)> {
        self.locked().iter().filter(|(n, _)| *n > seq).cloned().collect()
    }

    /// The last `n` lines with their numbers, oldest first.
    pub fn tail_with_seq(&self, n: usize) -> Vec<(u64, LogLine)> {
        let lines = self.locked();
        lines.iter().skip(lines.len().saturating_sub(n)).cloned().collect()
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        self.tail_with_seq(n).into_iter().map(|(_, l)| l).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> LogLine {
        LogLine { ts: SystemTime::UNIX_EPOCH, stream: Stream::Stdout, text: i.to_string() }
    }

    #[test]
    fn keeps_the_last_lines_and_numbers_them() {
        let ring = RingLog::new(3);
        ring.push_all((0..2).map(line));
        ring.push_all((2..5).map(line));
        let texts: Vec<String> = ring.tail(10).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["2", "3", "4"]);
        assert_eq!(ring.tail(1)[0].text, "4");
        assert_eq!(ring.last_seq(), 5);
        let newer: Vec<u64> = ring.since(3).into_iter().map(|(n, _)| n).collect();
        assert_eq!(newer, [4, 5]);
    }
}
