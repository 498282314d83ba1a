//! `migration.health`: the bounds of the health throttle (latency feedback and store
//! signals), their critical levels, and how fast the rate moves. Changeable live through
//! `PUT /health`, which takes this block and validates it the same way.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::migration::duration;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Health {
    /// How often the store signals are polled and the controller decides.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Batches in the recent window whose p95 is compared with the latency bounds; the
    /// first this many batches of a run give the baseline (their median).
    pub window: usize,
    /// The secondary's write latency per batch.
    pub secondary_write_p95: Option<Levels<Latency>>,
    /// The primary's read latency per page.
    pub primary_read_p95: Option<Levels<Latency>>,
    /// Elasticsearch/OpenSearch: tasks queued in the write thread pool of a node that
    /// holds the secondary index.
    pub write_queue: Option<Levels<u64>>,
    /// Elasticsearch/OpenSearch: write requests a node holding the secondary index
    /// rejected during one interval.
    pub write_rejections: Option<Levels<u64>>,
    /// PostgreSQL: replay lag of the secondary's replicas, and of the replica the primary
    /// is read through; MySQL/MariaDB: lag of `mysqlReplicas`.
    pub replica_lag: Option<Levels<Lag>>,
    /// Elasticsearch/OpenSearch: what the secondary index's health does to the copy.
    pub cluster_health: ClusterHealth,
    /// MySQL/MariaDB replicas of the secondary (`host:port`, the secondary's user and
    /// password): MySQL's primary does not know its replicas' lag, each replica does.
    pub mysql_replicas: Vec<String>,
    /// The rate is multiplied by this when a bound is exceeded (once per interval).
    pub decrease: f64,
    /// Records per second added back per interval while every bound holds; default a
    /// twentieth of the rate the controller started from.
    pub increase: Option<u32>,
    /// The rate never goes below this (records per second).
    pub min_rate: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            window: 20,
            secondary_write_p95: None,
            primary_read_p95: None,
            write_queue: None,
            write_rejections: None,
            replica_lag: None,
            cluster_health: ClusterHealth::default(),
            mysql_replicas: Vec::new(),
            decrease: 0.5,
            increase: None,
            min_rate: 50,
        }
    }
}

/// Above `max` the rate goes down; at `critical` the run stops (exit 5, checkpoint saved).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Levels<T> {
    pub max: T,
    pub critical: Option<T>,
}

/// A latency bound: absolute (`120ms`) or a multiple of the run's baseline (`3x`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    Absolute(Duration),
    Baseline(f64),
}

impl Latency {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some(factor) = t.strip_suffix('x') {
            return match factor.trim().parse::<f64>() {
                Ok(f) if f.is_finite() && f > 1.0 => Ok(Self::Baseline(f)),
                _ => Err(format!("{text:?} is not a multiple of the baseline above 1 (e.g. 3x)")),
            };
        }
        super::duration::parse_duration(t)
            .ok()
            .filter(|d| !d.is_zero())
            .map(Self::Absolute)
            .ok_or_else(|| format!("{text:?} is neither a time (e.g. 120ms) nor a multiple of the baseline (e.g. 3x)"))
    }

    /// The bound in seconds, given the baseline (None before there is one).
    pub fn seconds(&self, baseline: Option<f64>) -> Option<f64> {
        match self {
            Self::Absolute(d) => Some(d.as_secs_f64()),
            Self::Baseline(f) => baseline.map(|b| b * f),
        }
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A replica lag, as a duration (`5s`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lag(pub Duration);

impl<'de> Deserialize<'de> for Lag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration(d).map(Lag)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClusterHealth {
    pub yellow: HealthAction,
    pub red: HealthAction,
}

impl Default for ClusterHealth {
    fn default() -> Self {
        // A single-node cluster is yellow for good (replicas that cannot be placed).
        Self { yellow: HealthAction::Ignore, red: HealthAction::Pause }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum HealthAction {
    Ignore,
    /// Lower the rate, as for a bound exceeded.
    Slow,
    /// Copy nothing until it changes.
    Pause,
    /// Stop the run (exit 5, checkpoint saved).
    Stop,
}

impl Health {
    /// One line per problem, each naming the field under `at` (`migration.health`).
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.interval < Duration::from_millis(100) || self.interval > Duration::from_secs(600) {
            problems.push(format!("{at}.interval: {:?} is out of range (100ms to 10m)", self.interval));
        }
        if !(1..=10_000).contains(&self.window) {
            problems.push(format!("{at}.window: {} is out of range (1 to 10000 batches)", self.window));
        }
        if !(self.decrease > 0.0 && self.decrease < 1.0) {
            problems
                .push(format!("{at}.decrease: {} must be between 0 and 1 (e.g. 0.5 halves the rate)", self.decrease));
        }
        if self.increase == Some(0) {
            problems.push(format!("{at}.increase: must be at least 1 record/s (or left out)"));
        }
        if self.min_rate == 0 {
            problems.push(format!("{at}.minRate: must be at least 1 record/s"));
        }
        check_levels(&format!("{at}.writeQueue"), self.write_queue.as_ref(), |n| *n as f64, problems);
        check_levels(&format!("{at}.writeRejections"), self.write_rejections.as_ref(), |n| *n as f64, problems);
        check_levels(&format!("{at}.replicaLag"), self.replica_lag.as_ref(), |l| l.0.as_secs_f64(), problems);
        for (name, levels) in
            [("secondaryWriteP95", &self.secondary_write_p95), ("primaryReadP95", &self.primary_read_p95)]
        {
            let Some(l) = levels else { continue };
            match (l.max, l.critical) {
                (Latency::Absolute(a), Some(Latency::Absolute(b))) if b <= a => {
                    problems.push(format!("{at}.{name}.critical: {b:?} must be above max {a:?}"))
                }
                (Latency::Baseline(a), Some(Latency::Baseline(b))) if b <= a => {
                    problems.push(format!("{at}.{name}.critical: {b}x must be above max {a}x"))
                }
                _ => {}
            }
        }
        for (i, addr) in self.mysql_replicas.iter().enumerate() {
            let ok = addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                problems.push(format!("{at}.mysqlReplicas[{i}]: {addr:?} is not host:port"));
            }
        }
    }
}

fn check_levels<T>(at: &str, levels: Option<&Levels<T>>, value: impl Fn(&T) -> f64, problems: &mut Vec<String>) {
    let Some(l) = levels else { return };
    if value(&l.max) <= 0.0 {
        problems.push(format!("{at}.max: must be above 0"));
    }
    if let Some(c) = &l.critical
        && value(c) <= value(&l.max)
    {
        problems.push(format!("{at}.critical: {} must be above max {}", value(c), value(&l.max)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_bound_is_a_time_or_a_multiple_of_the_baseline() {
        assert_eq!(Latency::parse("120ms").unwrap(), Latency::Absolute(Duration::from_millis(120)));
        assert_eq!(Latency::parse("3x").unwrap(), Latency::Baseline(3.0));
        assert_eq!(Latency::Baseline(2.5).seconds(Some(0.1)), Some(0.25));
        assert_eq!(Latency::Baseline(2.5).seconds(None), None, "no bound before the baseline");
        for bad in ["0.5x", "fast", "0", "-3x"] {
            assert!(Latency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn levels_out_of_order_are_one_line_each() {
        let h: Health = yaml_serde::from_str(
            "writeQueue: { max: 200, critical: 100 }\nreplicaLag: { max: 5s, critical: 5s }\nsecondaryWriteP95: { max: 3x, critical: 2x }\ndecrease: 1.5\nmysqlReplicas: [db1]\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        h.validate("migration.health", &mut problems);
        assert_eq!(
            problems,
            [
                "migration.health.decrease: 1.5 must be between 0 and 1 (e.g. 0.5 halves the rate)",
                "migration.health.writeQueue.critical: 100 must be above max 200",
                "migration.health.replicaLag.critical: 5 must be above max 5",
                "migration.health.secondaryWriteP95.critical: 2x must be above max 3x",
                "migration.health.mysqlReplicas[0]: \"db1\" is not host:port",
            ]
        );
    }
}
