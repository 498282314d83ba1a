//! The health throttle: every `migration.health.interval` it asks both stores for their
//! signals, takes the latest batch latencies, judges them against the bounds, and moves
//! the throttle's limit (additive increase, multiplicative decrease), pauses it, or stops
//! the run at a critical level. The reason is kept in plain words for the log, `/metrics`
//! and `vismig status`.

mod aimd;
mod judge;
pub mod latency;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::aimd::Aimd;
use self::judge::{Finding, LatencyNow, Level, Observed};
pub use self::latency::Samples;
use super::checkpoint::Checkpoint;
use crate::config::health::Health;
use crate::metrics::{Control, Metrics};
use crate::store::health::{Probe, Reading, Role};
use crate::store::{Sink, Source};

pub struct Monitor {
    pub source: Arc<dyn Source>,
    pub sink: Arc<dyn Sink>,
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
    pub samples: Arc<Samples>,
    /// Where `vismig status` finds the reason: the keeper saves it with the checkpoint.
    pub checkpoint: Arc<Mutex<Checkpoint>>,
    /// Turned true at a critical level: the run stops as on a signal.
    pub critical: watch::Sender<bool>,
    /// The critical finding that stopped the run, for its summary.
    pub stopped_by: Arc<Mutex<Option<String>>>,
}

/// What the monitor remembers between two polls.
#[derive(Default)]
struct Memory {
    aimd: Aimd,
    rejected: BTreeMap<String, u64>,
    scanned: u64,
    at: Option<Instant>,
    /// The last finding that lowered the rate, named while the rate climbs back.
    last_slow: Option<Finding>,
    unreachable: Vec<String>,
    /// The reason's kind and state last logged: the figures change every interval, the
    /// log says only when the state does.
    logged: (&'static str, &'static str),
}

impl Monitor {
    /// Runs until `stop` turns true or a critical level stops the run.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let scanned = self.metrics.records_scanned_total.get();
        let mut memory = Memory { scanned, logged: ("none", "none"), ..Default::default() };
        loop {
            let h = self.control.health.borrow().clone();
            self.samples.set_window(h.window);
            tokio::select! {
                _ = tokio::time::sleep(h.interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let observed = self.observe(&h, &mut memory).await;
            if self.decide(&h, &observed, &mut memory) {
                return;
            }
        }
    }

    /// Reads both stores' signals (each within the interval) and the latency windows.
    async fn observe(&self, h: &Health, memory: &mut Memory) -> Observed {
        let limit = h.interval.max(Duration::from_secs(2));
        let primary = Probe { role: Role::Primary, mysql_replicas: &[] };
        let secondary = Probe { role: Role::Secondary, mysql_replicas: &h.mysql_replicas };
        let (a, b) = tokio::join!(
            tokio::time::timeout(limit, self.source.health(primary)),
            tokio::time::timeout(limit, self.sink.health(secondary))
        );
        let mut observed = Observed::default();
        for (store, result) in [(self.source.describe(), a), (self.sink.describe(), b)] {
            match result {
                Ok(Ok(readings)) => observed.readings.extend(readings),
                Ok(Err(e)) => observed.unreachable.push(format!("{store}: {e}")),
                Err(_) => observed.unreachable.push(format!("{store}: no answer within {limit:?}")),
            }
        }
        for r in &observed.readings {
            if let Reading::WriteQueue { node, rejected_total, .. } = r {
                // The first poll only learns the count; a restarted node counts from 0 again.
                if let Some(before) = memory.rejected.insert(node.clone(), *rejected_total) {
                    observed.rejections.insert(node.clone(), rejected_total.saturating_sub(before));
                }
            }
        }
        let now = |l: &Mutex<latency::Latencies>| {
            let l = l.lock().unwrap();
            LatencyNow { p95: l.p95(), baseline: l.baseline() }
        };
        observed.write = now(&self.samples.write);
        observed.read = now(&self.samples.read);
        observed
    }

    /// Moves the limit, the pause and the reason; true when the run must stop.
    fn decide(&self, h: &Health, observed: &Observed, memory: &mut Memory) -> bool {
        if observed.unreachable != memory.unreachable {
            for line in &observed.unreachable {
                tracing::warn!(error = %line, "health signals unavailable; the rate holds until they answer");
            }
            memory.unreachable = observed.unreachable.clone();
        }
        let found = judge::judge(h, observed);
        let worst = judge::worst(&found).cloned();
        let ceiling = *self.control.rate.borrow();
        let scanned = self.metrics.records_scanned_total.get();
        let seconds = memory.at.map(|t| t.elapsed().as_secs_f64()).unwrap_or(h.interval.as_secs_f64());
        let observed_rate = (scanned - memory.scanned) as f64 / seconds.max(0.001);
        (memory.scanned, memory.at) = (scanned, Some(Instant::now()));
        let level = worst.as_ref().map(|f| f.level);
        match level {
            Some(Level::Slow) => {
                memory.aimd.decrease(h, ceiling, observed_rate);
                memory.last_slow = worst.clone();
                // Judge the next interval by batches written at the new rate only.
                self.samples.restart_windows();
            }
            None if observed.unreachable.is_empty() && latency_known(h, observed) => memory.aimd.increase(h, ceiling),
            _ => {}
        }
        if memory.aimd.limit().is_none() {
            memory.last_slow = None;
        }
        self.control.health_limit.send_if_modified(|l| replace(l, memory.aimd.limit().unwrap_or(0)));
        let pause = matches!(level, Some(Level::Pause | Level::Critical));
        self.control.health_pause.send_if_modified(|p| replace(p, pause));
        let critical = level == Some(Level::Critical);
        self.publish(worst.as_ref(), memory);
        if critical {
            let text = worst.map(|f| f.text).unwrap_or_default();
            tracing::error!(reason = %text, "critical level reached: stopping with the checkpoint saved (exit 5); rerun the same command to resume once the store recovered");
            *self.stopped_by.lock().unwrap() = Some(text);
            self.critical.send_replace(true);
        }
        critical
    }

    /// The reason in plain words, on the log when it changes, in `throttle_reason` and
    /// in the checkpoint for `vismig status`.
    fn publish(&self, worst: Option<&Finding>, memory: &mut Memory) {
        let limit = memory.aimd.limit();
        let rate = |l: u32| format!("rate lowered to {l} records/s");
        let (kind, state, text) = match (worst, limit) {
            (Some(f), _) if f.level == Level::Critical => (f.kind, "critical", format!("critical: {}", f.text)),
            (Some(f), _) if f.level == Level::Pause => (f.kind, "paused", format!("paused: {}", f.text)),
            (Some(f), Some(l)) => (f.kind, "slowed", format!("{}; {}", f.text, rate(l))),
            (_, Some(l)) => {
                let after = memory.last_slow.as_ref();
                let kind = after.map(|f| f.kind).unwrap_or("none");
                let text = format!("{}, rising again after {}", rate(l), after.map(|f| f.text.as_str()).unwrap_or("-"));
                (kind, "rising", text)
            }
            _ if *self.control.paused.borrow() => ("paused", "paused", "paused by POST /pause".to_string()),
            _ => ("none", "none", String::new()),
        };
        self.metrics.set_throttle_reason(kind);
        self.metrics.rate_effective_records_per_second.set(i64::from(self.control.effective_rate()));
        let reason = (!text.is_empty()).then_some(text);
        self.control.set_throttle_reason(reason.clone());
        if memory.logged != (kind, state) {
            memory.logged = (kind, state);
            match &reason {
                Some(r) => tracing::warn!(reason = %r, "health throttle"),
                None => tracing::info!("health throttle: nothing holds the copy back any more"),
            }
        }
        self.checkpoint.lock().unwrap().throttle = reason;
    }
}

/// True unless a latency bound is set and its window has too few batches to judge by
/// (then the rate holds rather than rising blind).
fn latency_known(h: &Health, o: &Observed) -> bool {
    (h.secondary_write_p95.is_none() || o.write.p95.is_some()) && (h.primary_read_p95.is_none() || o.read.p95.is_some())
}

fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}
