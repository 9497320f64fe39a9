//! Pure restart timing: the doubling delay and the start-limit window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Delay before the next start after `failures` consecutive failures
/// (1 → base, 2 → 2×base, …), capped at `max`.
pub fn restart_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    base.checked_mul(1u32 << doublings).unwrap_or(max).min(max)
}

/// At most `burst` starts (the first included) within `interval`.
#[derive(Debug, Clone)]
pub struct StartLimit {
    burst: u32,
    interval: Duration,
    starts: VecDeque<Instant>,
}

impl StartLimit {
    pub fn new(burst: u32, interval: Duration) -> StartLimit {
        StartLimit { burst: burst.max(1), interval, starts: VecDeque::new() }
    }

    /// Records a start at `now` if the limit allows it.
    pub fn try_start(&mut self, now: Instant) -> bool {
        while let Some(&first) = self.starts.front() {
            if now.duration_since(first) >= self.interval {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        if self.starts.len() >= self.burst as usize {
            return false;
        }
        self.starts.push_back(now);
        true
    }

    /// Whether a start at `at` (now or later) would be allowed: the starts
    /// recorded so far that are still inside the window then.
    pub fn allows_at(&self, at: Instant) -> bool {
        let inside = self.starts.iter().filter(|&&t| at.saturating_duration_since(t) < self.interval).count();
        inside < self.burst as usize
    }

    /// Takes back the start recorded last: it never happened (flowinit
    /// itself ran out of file descriptors or memory).
    pub fn take_back(&mut self) {
        self.starts.pop_back();
    }

    /// The starts kept in the window (as of the last [`StartLimit::try_start`]).
    pub fn count(&self) -> usize {
        self.starts.len()
    }

    /// The oldest start kept in the window.
    pub fn first(&self) -> Option<Instant> {
        self.starts.front().copied()
    }

    /// A start asked for by an operator begins a fresh window.
    pub fn reset(&mut self) {
        self.starts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_max() {
        let s = Duration::from_secs;
        let table = [(0, 1), (1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (40, 30)];
        for (failures, want) in table {
            assert_eq!(restart_delay(s(1), s(30), failures), s(want), "failures={failures}");
        }
        assert_eq!(restart_delay(Duration::from_millis(100), s(1), 3), Duration::from_millis(400));
    }

    #[test]
    fn start_limit_window() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut l = StartLimit::new(3, Duration::from_secs(10));
        assert!(l.try_start(at(0)));
        assert!(l.try_start(at(1000)));
        assert!(l.try_start(at(2000)));
        assert!(!l.try_start(at(3000)), "fourth start inside the window");
        assert_eq!((l.count(), l.first()), (3, Some(at(0))), "a refused start is not kept");
        assert!(l.try_start(at(10_000)), "first start left the window");
        assert_eq!((l.count(), l.first()), (3, Some(at(1000))));
        assert!(!l.try_start(at(10_500)));
        l.reset();
        assert_eq!((l.count(), l.first()), (0, None));
        assert!(l.try_start(at(10_600)));
        let mut l = StartLimit::new(1, Duration::from_secs(10));
        assert!(l.try_start(at(0)));
        l.take_back();
        assert!(l.try_start(at(1)), "a start taken back does not count");
        assert!(!l.try_start(at(2)));
    }
}
