//! The recent lines of one unit, kept in memory for `flowinit status UNIT`
//! and `flowinit logs`. Bounded by line count; writers push only the tail of
//! each chunk, so a flood costs one allocation per kept line, not per line.

use super::sink::Stream;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub ts: SystemTime,
    pub stream: Stream,
    pub text: String,
}

#[derive(Debug)]
pub struct RingLog {
    cap: usize,
    lines: Mutex<VecDeque<LogLine>>,
}

impl RingLog {
    pub fn new(cap: usize) -> RingLog {
        RingLog {
            cap,
            lines: Mutex::new(VecDeque::with_capacity(cap.min(64))),
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn push(&self, line: LogLine) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == self.cap {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "read by the control socket's status and logs commands (issue 4)"
        )
    )]
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let ring = RingLog::new(3);
        for i in 0..5 {
            ring.push(LogLine {
                ts: SystemTime::UNIX_EPOCH,
                stream: Stream::Stdout,
                text: i.to_string(),
            });
        }
        let texts: Vec<String> = ring.tail(10).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["2", "3", "4"]);
        assert_eq!(ring.tail(1)[0].text, "4");
    }
}
