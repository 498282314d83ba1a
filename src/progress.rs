//! Progress: a bar with rate and ETA on a terminal (none when stderr is not one, so
//! Kubernetes logs stay clean), and the progress, ETA and rate metrics everywhere.
//! Log lines are printed above the bar through `LogWriter`, so they do not tear it.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::metrics::Metrics;

static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn bar_slot() -> &'static Mutex<Option<ProgressBar>> {
    BAR.get_or_init(|| Mutex::new(None))
}

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    rate: Arc<Mutex<RateMeter>>,
}

struct RateMeter {
    last: Instant,
    last_done: u64,
    per_second: f64,
}

impl Progress {
    pub fn new(total: u64, done: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total.max(1)).with_position(done);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {human_pos}/{human_len} records  {per_sec}  ETA {eta}",
                )
                .expect("valid template"),
            );
            *bar_slot().lock().unwrap() = Some(bar.clone());
            bar
        });
        Self { bar, rate: Arc::new(Mutex::new(RateMeter { last: Instant::now(), last_done: done, per_second: 0.0 })) }
    }

    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    /// Updates progress_ratio and eta_seconds, from a smoothed rate.
    pub fn update_metrics(&self, metrics: &Metrics, done: u64, total: u64) {
        let mut m = self.rate.lock().unwrap();
        let dt = m.last.elapsed().as_secs_f64();
        if dt >= 1.0 {
            let instant = (done.saturating_sub(m.last_done)) as f64 / dt;
            m.per_second = smoothed(m.per_second, instant);
            m.last = Instant::now();
            m.last_done = done;
        }
        let ratio = if total == 0 { 1.0 } else { (done as f64 / total as f64).min(1.0) };
        metrics.progress_ratio.set(ratio);
        let remaining = total.saturating_sub(done) as f64;
        metrics.eta_seconds.set(if m.per_second > 0.0 { remaining / m.per_second } else { 0.0 });
    }

    /// The smoothed rate, records per second (0 until a second has passed).
    pub fn rate(&self) -> f64 {
        self.rate.lock().unwrap().per_second
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            *bar_slot().lock().unwrap() = None;
        }
    }
}

/// A rate smoothed over time: the first measurement as it is, then 70% of the previous
/// rate and 30% of the new one (the run's rate and each namespace's).
pub fn smoothed(previous: f64, instant: f64) -> f64 {
    if previous == 0.0 { instant } else { 0.7 * previous + 0.3 * instant }
}

/// A duration for people: `45s`, `13m 30s`, `2h 5m`, `3d 4h`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// A log writer for stderr that suspends the progress bar while a line is printed.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = bar_slot().lock().unwrap().clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)).map(|_| buf.len()),
            None => std::io::stderr().write_all(buf).map(|_| buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(super::human_duration(45.2), "45s");
        assert_eq!(super::human_duration(810.0), "13m 30s");
        assert_eq!(super::human_duration(7500.0), "2h 5m");
        assert_eq!(super::human_duration(3.0 * 86400.0 + 4.0 * 3600.0), "3d 4h");
    }
}
