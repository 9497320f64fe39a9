//! CPU% for `status`: a unit's CPU seconds over wall time between two of
//! the daemon's samples of the same run. Pure; the server keeps one meter
//! for every request it answers.
//!
//! The window is at least [`MIN_WINDOW`] long, so two requests a few
//! milliseconds apart do not divide a clock tick or two by nothing: a
//! sample becomes the next baseline only once it is that far from the
//! current one, and an answer within the window is measured from the
//! baseline before. With no baseline of the run yet (the first `status`
//! after it started), the figure is the average since its process started.
//! 100% is one core.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The shortest window a rate is measured over (unless since the start).
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

/// A run: the unit's name and its main pid (a new run has a new pid).
pub type RunKey = (String, i32);

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_seconds: f64,
}

#[derive(Debug)]
struct Baselines {
    older: Option<Sample>,
    newer: Sample,
}

#[derive(Debug, Default)]
pub struct CpuMeter {
    runs: HashMap<RunKey, Baselines>,
}

fn rate(from: Sample, to: Sample) -> f64 {
    let wall = to.at.saturating_duration_since(from.at).as_secs_f64();
    // Time can drop: an orphan reaped by flowinit takes its time along.
    if wall > 0.0 {
        (to.cpu_seconds - from.cpu_seconds).max(0.0) / wall * 100.0
    } else {
        0.0
    }
}

impl CpuMeter {
    /// The run's CPU% at `now`, given its CPU seconds then and how long its
    /// process has been running.
    pub fn percent(&mut self, run: RunKey, cpu_seconds: f64, now: Instant, running_for: Duration) -> f64 {
        let sample = Sample { at: now, cpu_seconds };
        let since_start = || {
            let wall = running_for.as_secs_f64();
            if wall > 0.0 {
                cpu_seconds / wall * 100.0
            } else {
                0.0
            }
        };
        let Some(b) = self.runs.get_mut(&run) else {
            self.runs.insert(run, Baselines { older: None, newer: sample });
            return since_start();
        };
        if now.saturating_duration_since(b.newer.at) >= MIN_WINDOW {
            let pct = rate(b.newer, sample);
            b.older = Some(b.newer);
            b.newer = sample;
            pct
        } else {
            b.older.map_or_else(since_start, |o| rate(o, sample))
        }
    }

    /// Forgets every run not in `live` (stopped, restarted, removed).
    pub fn keep_only(&mut self, live: &HashSet<RunKey>) {
        self.runs.retain(|k, _| live.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RunKey {
        ("web".into(), 42)
    }

    #[test]
    fn first_since_start_then_between_samples_at_least_a_second_apart() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let s = Duration::from_secs;
        let mut m = CpuMeter::default();
        // 5 s of CPU in 10 s of life: 50%.
        assert_eq!(m.percent(key(), 5.0, at(0), s(10)), 50.0);
        // 10 ms later: no baseline a second old yet, so since the start.
        assert_eq!(m.percent(key(), 5.0, at(10), s(10)), 50.0);
        // 2 s after the first sample, 0.5 s more CPU: 25%, and a new baseline.
        assert_eq!(m.percent(key(), 5.5, at(2000), s(12)), 25.0);
        // 100 ms later: from the baseline before (at 0 ms), 0.6 s in 2.1 s.
        let pct = m.percent(key(), 5.6, at(2100), s(12));
        assert!((pct - 0.6 / 2.1 * 100.0).abs() < 1e-9, "{pct}");
        // A busy core for the 1.5 s since the baseline at 2000 ms.
        assert_eq!(m.percent(key(), 7.0, at(3500), s(13)), 100.0);
    }

    #[test]
    fn less_cpu_time_than_before_is_zero_and_runs_are_forgotten() {
        let t0 = Instant::now();
        let mut m = CpuMeter::default();
        m.percent(key(), 5.0, t0, Duration::from_secs(1));
        assert_eq!(m.percent(key(), 4.0, t0 + Duration::from_secs(2), Duration::from_secs(3)), 0.0);
        m.keep_only(&HashSet::new());
        assert!(m.runs.is_empty());
        assert_eq!(m.percent(key(), 0.0, t0, Duration::ZERO), 0.0, "a process started this instant");
    }
}
