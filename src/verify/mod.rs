//! Verify: compares the two stores per namespace. Counts by status below a cut-off
//! that leaves out records still changing (runs that started or closed after it are
//! counted apart, as `recent`, and not compared); with `--deep`, record by record
//! (`deep.rs`).

pub mod deep;
mod render;

/// Where the last verify result is kept: `last-verify.json` beside the checkpoint.
pub fn last_result_path(config: &crate::config::Config) -> std::path::PathBuf {
    config.migration.checkpoint.path.with_file_name("last-verify.json")
}

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::metrics::Metrics;
use crate::record::ExecutionStatus;
use crate::store::{CountQuery, Counts, NamespaceCounts, Store};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `equal` or `different`.
    pub result: &'static str,
    /// `counts` or `deep`.
    pub mode: &'static str,
    pub cutoff: DateTime<Utc>,
    /// Records below the cut-off in the primary, summed over the namespaces compared.
    pub records_compared: u64,
    pub namespaces: Vec<NamespaceReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceReport {
    /// The namespace id, as the records carry it.
    pub namespace: String,
    /// The namespace's name, when the default store or `migration.namespaceNames` gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub primary: BTreeMap<String, u64>,
    pub secondary: BTreeMap<String, u64>,
    /// Records that started or closed after the cut-off, per store: not compared.
    pub recent: Recent,
    /// Statuses whose counts differ.
    pub count_differences: Vec<CountDifference>,
    /// Record-level differences found by a deep verify, by kind (all of them).
    pub difference_counts: BTreeMap<String, u64>,
    /// The first differences (at most `MAX_SAMPLES` per namespace), with field names.
    pub differences: Vec<deep::Difference>,
}

/// Differences listed per namespace; the counts always cover all of them.
pub const MAX_SAMPLES: usize = 100;

#[derive(Debug, Serialize)]
pub struct Recent {
    pub primary: u64,
    pub secondary: u64,
}

#[derive(Debug, Serialize)]
pub struct CountDifference {
    pub status: String,
    pub primary: u64,
    pub secondary: u64,
}

impl NamespaceReport {
    /// No count and no record differs.
    pub fn is_equal(&self) -> bool {
        self.count_differences.is_empty() && self.difference_counts.is_empty()
    }

    fn empty(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: None,
            primary: BTreeMap::new(),
            secondary: BTreeMap::new(),
            recent: Recent { primary: 0, secondary: 0 },
            count_differences: Vec::new(),
            difference_counts: BTreeMap::new(),
            differences: Vec::new(),
        }
    }
}

impl Report {
    pub fn is_equal(&self) -> bool {
        self.result == "equal"
    }

    /// Gives each namespace its name, where one is known (ids stay as they are).
    pub fn name_namespaces(&mut self, names: &crate::names::NamespaceNames) {
        for ns in &mut self.namespaces {
            ns.name = names.name(&ns.namespace).map(str::to_string);
        }
    }

    /// Adds a deep verify's differences and settles the result.
    pub fn add_deep(&mut self, outcome: deep::Outcome, metrics: &Metrics) {
        self.mode = "deep";
        for (ns, diffs) in outcome.differences {
            let index = match self.namespaces.iter().position(|n| n.namespace == ns) {
                Some(i) => i,
                None => {
                    self.namespaces.push(NamespaceReport::empty(&ns));
                    self.namespaces.len() - 1
                }
            };
            let report = &mut self.namespaces[index];
            for d in diffs {
                *report.difference_counts.entry(d.kind.label().to_string()).or_default() += 1;
                if report.differences.len() < MAX_SAMPLES {
                    report.differences.push(d);
                }
            }
        }
        for ns in &self.namespaces {
            for kind in [deep::Kind::Missing, deep::Kind::Extra, deep::Kind::Different] {
                let n = ns.difference_counts.get(kind.label()).copied().unwrap_or(0);
                metrics.verify_differences.with_label_values(&[&ns.namespace, kind.label()]).set(n as i64);
            }
        }
        if self.namespaces.iter().any(|n| !n.difference_counts.is_empty()) {
            self.result = "different";
        }
    }
}

/// Counts both stores and compares them.
pub async fn counts(
    primary: Arc<dyn Store>,
    secondary: Arc<dyn Store>,
    namespaces: &[String],
    cutoff: DateTime<Utc>,
    metrics: &Metrics,
) -> anyhow::Result<Report> {
    let query = CountQuery { namespaces: namespaces.to_vec(), cutoff };
    let (p, s) = tokio::join!(primary.count(&query), secondary.count(&query));
    let p = p.map_err(|e| anyhow::anyhow!("counting the primary: {e}"))?;
    let s = s.map_err(|e| anyhow::anyhow!("counting the secondary: {e}"))?;
    let report = compare(&p, &s, cutoff);
    for ns in &report.namespaces {
        for (store, counts) in [("primary", &ns.primary), ("secondary", &ns.secondary)] {
            for (status, n) in counts {
                metrics.verify_records.with_label_values(&[&ns.namespace, store, status]).set(*n as i64);
            }
        }
        metrics.verify_differences.with_label_values(&[&ns.namespace, "count"]).set(ns.count_differences.len() as i64);
    }
    Ok(report)
}

pub fn compare(primary: &Counts, secondary: &Counts, cutoff: DateTime<Utc>) -> Report {
    let empty = NamespaceCounts::default();
    let names: BTreeSet<&String> = primary.keys().chain(secondary.keys()).collect();
    let mut namespaces = Vec::new();
    for ns in names {
        let p = primary.get(ns).unwrap_or(&empty);
        let s = secondary.get(ns).unwrap_or(&empty);
        let mut count_differences = Vec::new();
        for status in ExecutionStatus::ALL {
            let (a, b) =
                (p.by_status.get(&status).copied().unwrap_or(0), s.by_status.get(&status).copied().unwrap_or(0));
            if a != b {
                count_differences.push(CountDifference { status: status.name().to_string(), primary: a, secondary: b });
            }
        }
        let named = |c: &NamespaceCounts| c.by_status.iter().map(|(k, v)| (k.name().to_string(), *v)).collect();
        namespaces.push(NamespaceReport {
            namespace: ns.clone(),
            name: None,
            primary: named(p),
            secondary: named(s),
            recent: Recent { primary: p.recent, secondary: s.recent },
            count_differences,
            difference_counts: BTreeMap::new(),
            differences: Vec::new(),
        });
    }
    let equal = namespaces.iter().all(|n| n.count_differences.is_empty());
    let records_compared = namespaces.iter().flat_map(|n| n.primary.values()).sum();
    Report { result: if equal { "equal" } else { "different" }, mode: "counts", cutoff, records_compared, namespaces }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(entries: &[(&str, ExecutionStatus, u64)], recent: u64) -> Counts {
        let mut c = Counts::new();
        for (ns, status, n) in entries {
            let e = c.entry(ns.to_string()).or_default();
            e.by_status.insert(*status, *n);
            e.recent = recent;
        }
        c
    }

    #[test]
    fn equal_counts_pass_and_recent_records_are_not_compared() {
        let p = counts(&[("ns", ExecutionStatus::Completed, 5)], 3);
        let s = counts(&[("ns", ExecutionStatus::Completed, 5)], 0);
        let r = compare(&p, &s, Utc::now());
        assert!(r.is_equal());
        assert_eq!(r.namespaces[0].recent.primary, 3);
    }

    #[test]
    fn a_missing_namespace_or_status_is_a_difference() {
        let p = counts(&[("a", ExecutionStatus::Completed, 5), ("b", ExecutionStatus::Failed, 1)], 0);
        let s = counts(&[("a", ExecutionStatus::Completed, 4)], 0);
        let r = compare(&p, &s, Utc::now());
        assert!(!r.is_equal());
        assert_eq!(r.namespaces[0].count_differences[0].status, "Completed");
        assert_eq!(
            (r.namespaces[1].count_differences[0].primary, r.namespaces[1].count_differences[0].secondary),
            (1, 0)
        );
        assert!(r.text(false).contains("DIFFERENT"));
    }
}
