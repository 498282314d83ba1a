//! The health throttle's judgement: each reading and latency against its bounds, as a
//! finding in plain words ("replica lag 12 s > 5 s on …"); the worst finding decides.

use std::collections::BTreeMap;

use crate::config::health::{Health, HealthAction, Latency, Levels};
use crate::store::health::Reading;

/// What a finding does to the copy, mildest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Slow,
    Pause,
    /// The run stops (exit 5, checkpoint saved).
    Critical,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub level: Level,
    /// The `throttle_reason` label.
    pub kind: &'static str,
    pub text: String,
}

/// What the latency windows say now.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencyNow {
    pub p95: Option<f64>,
    pub baseline: Option<f64>,
}

/// Everything one poll saw.
#[derive(Debug, Default)]
pub struct Observed {
    pub readings: Vec<Reading>,
    pub write: LatencyNow,
    pub read: LatencyNow,
    /// Rejections per node since the previous poll.
    pub rejections: BTreeMap<String, u64>,
    /// The stores that could not be asked (the copy meanwhile goes on as it was).
    pub unreachable: Vec<String>,
}

pub fn judge(h: &Health, o: &Observed) -> Vec<Finding> {
    let mut found = Vec::new();
    latency(&mut found, "secondary_write_latency", "secondary write", h.secondary_write_p95.as_ref(), o.write);
    latency(&mut found, "primary_read_latency", "primary read", h.primary_read_p95.as_ref(), o.read);
    for r in &o.readings {
        match r {
            Reading::WriteQueue { node, queued, .. } => {
                let what = |bound: &str| format!("write queue {queued} {bound} on node {node}");
                let bounds = in_f64(h.write_queue.as_ref(), |n| *n as f64);
                levels(&mut found, "write_queue", bounds, *queued as f64, count, what);
            }
            Reading::IndexHealth { index, status } => {
                let action = match status.as_str() {
                    "red" => h.cluster_health.red,
                    "yellow" => h.cluster_health.yellow,
                    _ => HealthAction::Ignore,
                };
                let level = match action {
                    HealthAction::Ignore => None,
                    HealthAction::Slow => Some(Level::Slow),
                    HealthAction::Pause => Some(Level::Pause),
                    HealthAction::Stop => Some(Level::Critical),
                };
                if let Some(level) = level {
                    found.push(Finding { level, kind: "index_health", text: format!("index {index} is {status}") });
                }
            }
            Reading::ReplicaLag { replica, seconds } => {
                let what = |bound: &str| format!("replica lag {} {bound} on {replica}", secs(*seconds));
                let bounds = in_f64(h.replica_lag.as_ref(), |l| l.0.as_secs_f64());
                levels(&mut found, "replica_lag", bounds, *seconds, secs, what);
            }
        }
    }
    for (node, rejected) in &o.rejections {
        let interval = secs(h.interval.as_secs_f64());
        let what = |bound: &str| format!("{rejected} write rejections in {interval} {bound} on node {node}");
        let bounds = in_f64(h.write_rejections.as_ref(), |n| *n as f64);
        levels(&mut found, "write_rejections", bounds, *rejected as f64, count, what);
    }
    found
}

/// The worst finding (the first of the worst level).
pub fn worst(found: &[Finding]) -> Option<&Finding> {
    found.iter().fold(None, |w: Option<&Finding>, f| if w.is_some_and(|w| w.level >= f.level) { w } else { Some(f) })
}

fn latency(
    found: &mut Vec<Finding>,
    kind: &'static str,
    what: &str,
    levels: Option<&Levels<Latency>>,
    now: LatencyNow,
) {
    let (Some(l), Some(p95)) = (levels, now.p95) else { return };
    let bound_text = |b: &Latency, s: f64| match b {
        Latency::Absolute(_) => ms(s),
        Latency::Baseline(f) => format!("{} ({f}x the baseline {})", ms(s), ms(now.baseline.unwrap_or_default())),
    };
    let critical = l.critical.as_ref().and_then(|c| c.seconds(now.baseline).map(|s| (c, s)));
    if let Some((c, s)) = critical.filter(|(_, s)| p95 >= *s) {
        let text = format!("{what} p95 {} >= critical {}", ms(p95), bound_text(c, s));
        found.push(Finding { level: Level::Critical, kind, text });
    } else if let Some(s) = l.max.seconds(now.baseline).filter(|s| p95 > *s) {
        let text = format!("{what} p95 {} > {}", ms(p95), bound_text(&l.max, s));
        found.push(Finding { level: Level::Slow, kind, text });
    }
}

fn in_f64<T>(levels: Option<&Levels<T>>, f: impl Fn(&T) -> f64) -> Option<Levels<f64>> {
    levels.map(|l| Levels { max: f(&l.max), critical: l.critical.as_ref().map(&f) })
}

/// A reading against `max` (slows) and `critical` (stops).
fn levels(
    found: &mut Vec<Finding>,
    kind: &'static str,
    levels: Option<Levels<f64>>,
    value: f64,
    show: fn(f64) -> String,
    what: impl Fn(&str) -> String,
) {
    let Some(l) = levels else { return };
    if let Some(c) = l.critical.filter(|c| value >= *c) {
        found.push(Finding { level: Level::Critical, kind, text: what(&format!(">= critical {}", show(c))) });
    } else if value > l.max {
        found.push(Finding { level: Level::Slow, kind, text: what(&format!("> {}", show(l.max))) });
    }
}

fn count(n: f64) -> String {
    format!("{n:.0}")
}

pub fn ms(seconds: f64) -> String {
    format!("{:.0} ms", seconds * 1000.0)
}

pub fn secs(seconds: f64) -> String {
    // Tenths only where they say something: "12 s > 5 s", "0.4 s > 0.2 s".
    if seconds >= 10.0 || (seconds - seconds.round()).abs() < 0.05 {
        format!("{seconds:.0} s")
    } else {
        format!("{seconds:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::health::{ClusterHealth, Lag};
    use std::time::Duration;

    fn health() -> Health {
        Health {
            secondary_write_p95: Some(Levels { max: Latency::Absolute(Duration::from_millis(120)), critical: None }),
            primary_read_p95: Some(Levels { max: Latency::Baseline(3.0), critical: Some(Latency::Baseline(10.0)) }),
            write_queue: Some(Levels { max: 200, critical: Some(2000) }),
            write_rejections: Some(Levels { max: 0, critical: None }),
            replica_lag: Some(Levels {
                max: Lag(Duration::from_secs(5)),
                critical: Some(Lag(Duration::from_secs(60))),
            }),
            cluster_health: ClusterHealth::default(),
            ..Default::default()
        }
    }

    fn texts(found: &[Finding]) -> Vec<(Level, &str, &str)> {
        found.iter().map(|f| (f.level, f.kind, f.text.as_str())).collect()
    }

    #[test]
    fn each_signal_over_its_bound_is_a_finding_in_plain_words() {
        let observed = Observed {
            readings: vec![
                Reading::WriteQueue { node: "n1".into(), queued: 410, rejected_total: 9 },
                Reading::WriteQueue { node: "n2".into(), queued: 3, rejected_total: 0 },
                Reading::IndexHealth { index: "vis".into(), status: "yellow".into() },
                Reading::ReplicaLag { replica: "walreceiver at 127.0.0.1".into(), seconds: 12.0 },
            ],
            write: LatencyNow { p95: Some(0.18), baseline: Some(0.04) },
            read: LatencyNow { p95: Some(0.05), baseline: Some(0.02) },
            rejections: [("n1".to_string(), 4)].into(),
            unreachable: vec![],
        };
        let found = judge(&health(), &observed);
        assert_eq!(
            texts(&found),
            [
                (Level::Slow, "secondary_write_latency", "secondary write p95 180 ms > 120 ms"),
                (Level::Slow, "write_queue", "write queue 410 > 200 on node n1"),
                (Level::Slow, "replica_lag", "replica lag 12 s > 5 s on walreceiver at 127.0.0.1"),
                (Level::Slow, "write_rejections", "4 write rejections in 5 s > 0 on node n1"),
            ],
            "yellow is ignored by default; the read p95 is under 3x its baseline"
        );
        assert_eq!(worst(&found).unwrap().kind, "secondary_write_latency", "the first of the worst level");
    }

    #[test]
    fn critical_levels_and_a_red_index_outrank_a_slow_bound() {
        let observed = Observed {
            readings: vec![
                Reading::IndexHealth { index: "vis".into(), status: "red".into() },
                Reading::ReplicaLag { replica: "r1".into(), seconds: 75.0 },
            ],
            read: LatencyNow { p95: Some(0.25), baseline: Some(0.02) },
            ..Default::default()
        };
        let found = judge(&health(), &observed);
        assert_eq!(
            texts(&found),
            [
                (
                    Level::Critical,
                    "primary_read_latency",
                    "primary read p95 250 ms >= critical 200 ms (10x the baseline 20 ms)"
                ),
                (Level::Pause, "index_health", "index vis is red"),
                (Level::Critical, "replica_lag", "replica lag 75 s >= critical 60 s on r1"),
            ]
        );
        assert_eq!(worst(&found).unwrap().kind, "primary_read_latency");
        let mut h = health();
        h.replica_lag = None;
        h.primary_read_p95 = None;
        assert_eq!(worst(&judge(&h, &observed)).unwrap().level, Level::Pause);
    }
}
