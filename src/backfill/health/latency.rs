//! Batch latencies for the health throttle: a window of the most recent ones (their p95
//! is compared with the bounds) and the run's baseline (the median of its first window).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Fewer samples than this in the window give no p95: too few to judge by.
const MIN_SAMPLES: usize = 3;

#[derive(Default)]
pub struct Latencies {
    recent: VecDeque<f64>,
    first: Vec<f64>,
    baseline: Option<f64>,
}

impl Latencies {
    pub fn record(&mut self, seconds: f64, window: usize) {
        if self.baseline.is_none() {
            self.first.push(seconds);
            if self.first.len() >= window {
                self.baseline = Some(quantile(std::mem::take(&mut self.first).into_iter(), 0.5));
            }
        }
        self.recent.push_back(seconds);
        while self.recent.len() > window.max(1) {
            self.recent.pop_front();
        }
    }

    /// The p95 of the window, once it holds enough samples.
    pub fn p95(&self) -> Option<f64> {
        (self.recent.len() >= MIN_SAMPLES).then(|| quantile(self.recent.iter().copied(), 0.95))
    }

    pub fn baseline(&self) -> Option<f64> {
        self.baseline
    }

    /// Forgets the window (not the baseline): after the rate changed, the batches written
    /// at the old rate say nothing about the new one.
    pub fn restart_window(&mut self) {
        self.recent.clear();
    }
}

/// The `q` quantile (nearest rank) of `values`, which must not be empty.
fn quantile(values: impl Iterator<Item = f64>, q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.collect();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The secondary's write latencies and the primary's read latencies of one run, fed by
/// the writers and scanners.
#[derive(Default)]
pub struct Samples {
    pub write: Mutex<Latencies>,
    pub read: Mutex<Latencies>,
    window: std::sync::atomic::AtomicUsize,
}

impl Samples {
    pub fn new(window: usize) -> Self {
        Self { window: window.into(), ..Default::default() }
    }

    pub fn set_window(&self, window: usize) {
        self.window.store(window, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn write(&self, seconds: f64) {
        self.write.lock().unwrap().record(seconds, self.window.load(std::sync::atomic::Ordering::Relaxed));
    }

    pub fn read(&self, seconds: f64) {
        self.read.lock().unwrap().record(seconds, self.window.load(std::sync::atomic::Ordering::Relaxed));
    }

    pub fn restart_windows(&self) {
        self.write.lock().unwrap().restart_window();
        self.read.lock().unwrap().restart_window();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_is_the_median_of_the_first_window_and_the_p95_follows_the_recent_one() {
        let mut l = Latencies::default();
        for ms in [10.0, 12.0, 11.0, 50.0] {
            l.record(ms / 1000.0, 4);
        }
        assert_eq!(l.baseline(), Some(0.011));
        assert_eq!(l.p95(), Some(0.05));
        for _ in 0..4 {
            l.record(0.2, 4);
        }
        assert_eq!((l.p95(), l.baseline()), (Some(0.2), Some(0.011)), "the window moved, the baseline stays");
        l.restart_window();
        l.record(0.02, 4);
        assert_eq!(l.p95(), None, "too few samples since the window restarted");
    }
}
