//! Signals to every descendant of flowinit at the end: what escaped its
//! unit's group (a daemon that called setsid, an orphan) after every unit
//! is down, or everything after the shutdown budget ran out or the
//! supervisor crashed.

use super::{tree, Signal};
use std::time::{Duration, Instant};

/// SIGTERM to every descendant, SIGKILL at `until` to whatever is left.
/// Returns how many got each signal. Polls only while something is left.
pub async fn terminate_descendants(until: Instant) -> (usize, usize) {
    let termed = signal_descendants(Signal::TERM);
    let mut pause = Duration::from_millis(2);
    while Instant::now() < until {
        if tree::descendants().is_empty() {
            return (termed, 0);
        }
        tokio::time::sleep(pause.min(until.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    (termed, signal_descendants(Signal::KILL))
}

/// `sig` to every descendant; how many got it.
pub fn signal_descendants(sig: Signal) -> usize {
    tree::descendants().into_iter().filter(|p| matches!(p.signal(sig), Ok(true))).count()
}

/// Whether any descendant is left.
pub fn any_left() -> bool {
    !tree::descendants().is_empty()
}
