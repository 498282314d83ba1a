//! `vismig plan`: what a backfill would do and how long it would take, writing nothing.
//! The backfill's own preflight, both stores' counts per namespace, the shards it would
//! make (or resume), and the expected duration at the configured rate and at the read
//! rate of a short probe of the primary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use crate::backfill::Backfill;
use crate::backfill::checkpoint::FileCheckpoint;
use crate::config::Config;
use crate::metrics::{Control, Metrics};
use crate::names::NamespaceNames;
use crate::progress::human_duration;
use crate::status::total;
use crate::store::{CountQuery, Counts, Cursor, ShardSpec, Source};

/// Pages the probe reads from each shard it samples.
const PROBE_PAGES: usize = 3;
/// The probe stops reading after this long, however many pages it read.
const PROBE_TIME: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// True when a backfill could start now.
    pub ready: bool,
    /// Why it could not, one line each.
    pub problems: Vec<String>,
    pub primary: Option<String>,
    pub secondary: Option<String>,
    /// Schema versions, as preflight names them.
    pub schema: Option<Schemas>,
    pub namespaces: Vec<NamespacePlan>,
    pub copy: Option<Copy>,
    /// A short read of the primary (a few pages of a few shards).
    pub probe: Option<Probe>,
    pub duration: Option<Durations>,
}

#[derive(Debug, Serialize)]
pub struct Schemas {
    pub primary: String,
    pub secondary: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePlan {
    /// The namespace id.
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Records per status in the primary (runs still changing included).
    pub primary: BTreeMap<String, u64>,
    pub primary_total: u64,
    /// What the secondary already holds (dual writes, an earlier copy); None when it
    /// could not be counted.
    pub secondary_total: Option<u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Copy {
    /// `new` (a new backfill), `resume` (from the checkpoint) or `complete` (nothing to do).
    pub start: &'static str,
    pub checkpoint: String,
    /// Records the backfill would still read.
    pub records: u64,
    /// Already settled, when resuming.
    pub settled: u64,
    pub shards: usize,
    pub shards_done: usize,
    pub concurrency: usize,
    pub batch_size: usize,
    /// migration.rate.recordsPerSecond; 0 = unlimited.
    pub rate: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub records: u64,
    pub shards: usize,
    pub seconds: f64,
    pub records_per_second: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Durations {
    /// At migration.rate.recordsPerSecond; None when unlimited.
    pub at_configured_rate_seconds: Option<f64>,
    /// At the probe's read rate; None without a probe.
    pub at_read_rate_seconds: Option<f64>,
    /// The longer of the two: the write side is not probed (that would write), so the
    /// copy takes at least this long.
    pub expected_seconds: Option<f64>,
}

/// Plans a backfill of `config`; never writes to either store, the checkpoint or the
/// dead letter.
pub async fn plan(config: &Config) -> Plan {
    let mut plan = Plan::default();
    let metrics = Metrics::new();
    let control = Control::new(config.migration.rate.records_per_second);
    let backfill = match crate::commands::prepare_backfill(config, 0, 1, metrics, control).await {
        Ok(b) => b,
        Err(e) => {
            plan.problems.push(format!("{e:#}"));
            return plan;
        }
    };
    plan.primary = Some(backfill.source.describe());
    plan.secondary = Some(backfill.sink.describe());
    let preflight = backfill.preflight().await;
    let (a, b) = tokio::join!(backfill.source.schema_info(), backfill.sink.schema_info());
    if let (Ok(a), Ok(b)) = (a, b) {
        plan.schema = Some(Schemas { primary: a.version.to_string(), secondary: b.version.to_string() });
    }
    // A store that failed preflight fails what follows too: its own errors then only
    // repeat the preflight's, and are left out.
    let mut store_problems = Vec::new();
    let (primary, secondary) = count_both(&backfill, &config.migration.namespaces).await;
    match (primary, secondary) {
        (Ok(primary), secondary) => {
            plan.namespaces = namespace_plans(&primary, secondary.as_ref().ok(), &backfill.names);
            store_problems.extend(secondary.err());
        }
        (Err(e), secondary) => store_problems.extend([Some(e), secondary.err()].into_iter().flatten()),
    }
    let mut checkpoint_problems = Vec::new();
    match shards(&backfill).await {
        Ok((copy, pending)) => {
            if copy.records > 0 {
                match probe(backfill.source.clone(), &pending, config.migration.batch_size, copy.concurrency).await {
                    Ok(p) => plan.probe = p,
                    Err(e) => store_problems.push(e),
                }
            }
            plan.duration = Some(durations(&copy, plan.probe.as_ref()));
            plan.copy = Some(copy);
        }
        Err(ShardsError::Checkpoint(e)) => checkpoint_problems.push(e),
        Err(ShardsError::Store(e)) => store_problems.push(e),
    }
    match preflight {
        Err(e) => plan.problems.extend(problem_lines(&format!("{e:#}"))),
        Ok(()) => plan.problems.extend(store_problems),
    }
    plan.problems.extend(checkpoint_problems);
    plan.ready = plan.problems.is_empty();
    plan
}

/// An error as one line per problem, without the `preflight failed:` heading.
fn problem_lines(error: &str) -> Vec<String> {
    error
        .lines()
        .map(|l| l.trim().trim_start_matches("preflight failed:").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Both stores' counts, every record (the cut-off is now).
async fn count_both(backfill: &Backfill, namespaces: &[String]) -> (Result<Counts, String>, Result<Counts, String>) {
    let query = CountQuery { namespaces: namespaces.to_vec(), cutoff: Utc::now() };
    let (p, s) = tokio::join!(backfill.source.count(&query), backfill.sink.count(&query));
    (
        p.map_err(|e| format!("primary: cannot count the records: {e}")),
        s.map_err(|e| format!("secondary: cannot count the records: {e}")),
    )
}

fn namespace_plans(primary: &Counts, secondary: Option<&Counts>, names: &NamespaceNames) -> Vec<NamespacePlan> {
    let ids: std::collections::BTreeSet<&String> =
        primary.keys().chain(secondary.into_iter().flat_map(|s| s.keys())).collect();
    ids.into_iter()
        .map(|id| {
            let mut by_status: BTreeMap<String, u64> = primary
                .get(id)
                .map(|c| c.by_status.iter().map(|(k, v)| (k.name().to_string(), *v)).collect())
                .unwrap_or_default();
            // Every record counts: those past the cut-off (now) are the few that changed
            // while counting.
            if let Some(recent) = primary.get(id).map(|c| c.recent).filter(|r| *r > 0) {
                by_status.insert("recent".into(), recent);
            }
            NamespacePlan {
                namespace: id.clone(),
                name: names.name(id).map(str::to_string),
                primary: by_status,
                primary_total: total(primary, id),
                secondary_total: secondary.map(|s| total(s, id)),
            }
        })
        .collect()
}

/// Why the shards of a plan are not known: the checkpoint cannot be resumed, or a store
/// failed.
enum ShardsError {
    Checkpoint(String),
    Store(String),
}

/// What the backfill would copy and in which shards: a resume of the checkpoint when one
/// matches this config, else a new plan. Also the shards left, with their cursors, for
/// the probe.
async fn shards(backfill: &Backfill) -> Result<(Copy, Vec<(ShardSpec, Option<Cursor>)>), ShardsError> {
    let config = &backfill.config;
    let store = FileCheckpoint::new(&config.migration.checkpoint.path);
    let saved = store.load().map_err(|e| ShardsError::Checkpoint(format!("{e:#}")))?;
    let mut copy = Copy {
        start: "new",
        checkpoint: store.path().display().to_string(),
        records: 0,
        settled: 0,
        shards: 0,
        shards_done: 0,
        concurrency: backfill.options.concurrency,
        batch_size: backfill.batch_size(),
        rate: config.migration.rate.records_per_second,
    };
    let cp = match saved {
        Some(cp) => {
            backfill.check_resumable(&cp, &store).map_err(|e| ShardsError::Checkpoint(format!("{e:#}")))?;
            copy.start = if cp.is_complete() { "complete" } else { "resume" };
            copy.settled = cp.totals.scanned;
            cp
        }
        None => backfill.new_checkpoint().await.map_err(|e| ShardsError::Store(format!("primary: {e:#}")))?,
    };
    copy.records = if cp.is_complete() { 0 } else { cp.estimated_total.saturating_sub(cp.totals.scanned) };
    copy.shards = cp.shards.len();
    copy.shards_done = cp.shards.iter().filter(|s| s.done).count();
    let pending = cp.shards.into_iter().filter(|s| !s.done).map(|s| (s.spec, s.cursor)).collect();
    Ok((copy, pending))
}

/// Reads a few pages from as many shards as the backfill scans at once, side by side,
/// and measures the rate. Only reads.
async fn probe(
    source: Arc<dyn Source>,
    pending: &[(ShardSpec, Option<Cursor>)],
    page: usize,
    concurrency: usize,
) -> Result<Option<Probe>, String> {
    let sampled: Vec<_> = pending.iter().take(concurrency.max(1)).cloned().collect();
    if sampled.is_empty() {
        return Ok(None);
    }
    let started = Instant::now();
    let mut reads = tokio::task::JoinSet::new();
    for (spec, cursor) in sampled.clone() {
        let source = source.clone();
        reads.spawn(async move {
            let mut cursor = cursor;
            let mut records = 0u64;
            for _ in 0..PROBE_PAGES {
                let p = source.scan(&spec, cursor.as_ref(), page).await?;
                records += (p.records.len() + p.bad_rows.len()) as u64;
                if p.done || started.elapsed() >= PROBE_TIME {
                    break;
                }
                cursor = p.cursor;
            }
            Ok::<u64, crate::store::StoreError>(records)
        });
    }
    let mut records = 0;
    while let Some(r) = reads.join_next().await {
        records += r.map_err(|e| format!("probe task failed: {e}"))?.map_err(|e| format!("primary: reading: {e}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Some(Probe { records, shards: sampled.len(), seconds, records_per_second: records as f64 / seconds.max(1e-6) }))
}

fn durations(copy: &Copy, probe: Option<&Probe>) -> Durations {
    let records = copy.records as f64;
    let at_configured_rate_seconds = (copy.rate > 0).then(|| records / copy.rate as f64);
    let at_read_rate_seconds = probe.filter(|p| p.records_per_second > 0.0).map(|p| records / p.records_per_second);
    let expected_seconds = match (at_configured_rate_seconds, at_read_rate_seconds) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Durations { at_configured_rate_seconds, at_read_rate_seconds, expected_seconds }
}

impl NamespacePlan {
    fn label(&self) -> String {
        crate::names::label(&self.namespace, self.name.as_deref())
    }
}

impl Plan {
    /// The plan as text: the verdict first (with the reasons, one line each), then the
    /// stores, the namespaces, the copy and the durations.
    pub fn text(&self) -> String {
        let mut out = if self.ready {
            "plan: a backfill can start (nothing was written)\n".to_string()
        } else {
            let n = self.problems.len();
            format!(
                "plan: a backfill cannot start ({n} problem{}; nothing was written)\n",
                if n == 1 { "" } else { "s" }
            )
        };
        for p in &self.problems {
            out.push_str(&format!("  problem: {p}\n"));
        }
        let schema = |v: Option<&String>| v.map(|v| format!(", {v}")).unwrap_or_default();
        if let Some(p) = &self.primary {
            out.push_str(&format!("primary   {p}{}\n", schema(self.schema.as_ref().map(|s| &s.primary))));
        }
        if let Some(s) = &self.secondary {
            out.push_str(&format!("secondary {s}{}\n", schema(self.schema.as_ref().map(|s| &s.secondary))));
        }
        out.push_str(&self.namespaces_text());
        if let Some(c) = &self.copy {
            out.push_str(&copy_text(c));
        }
        if let Some(p) = &self.probe {
            out.push_str(&format!(
                "read probe: {} records from {} shards in {:.2}s = {:.0} records/s\n",
                p.records, p.shards, p.seconds, p.records_per_second
            ));
        }
        if let (Some(d), Some(c)) = (&self.duration, &self.copy) {
            out.push_str(&durations_text(d, c));
        }
        out
    }

    fn namespaces_text(&self) -> String {
        if self.namespaces.is_empty() {
            return if self.problems.iter().any(|p| p.starts_with("primary:")) {
                "namespaces: not counted (the primary cannot be read)\n".into()
            } else {
                "namespaces: none in the primary\n".into()
            };
        }
        let held = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        let mut out = format!(
            "namespaces: {} (records in the primary by status; what the secondary already holds)\n",
            self.namespaces.len()
        );
        let width = self.namespaces.iter().map(|n| n.label().len()).max().unwrap_or(0);
        for ns in &self.namespaces {
            let statuses: Vec<String> = ns.primary.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out.push_str(&format!(
                "  {:<width$}  {} in the primary ({}), {} in the secondary\n",
                ns.label(),
                ns.primary_total,
                if statuses.is_empty() { "none".to_string() } else { statuses.join(", ") },
                held(ns.secondary_total)
            ));
        }
        let p: u64 = self.namespaces.iter().map(|n| n.primary_total).sum();
        let s: Option<u64> = self.namespaces.iter().map(|n| n.secondary_total).sum();
        out.push_str(&format!("  {:<width$}  {p} in the primary, {} in the secondary\n", "total", held(s)));
        out
    }
}

fn copy_text(c: &Copy) -> String {
    let how = format!(
        "{} shards, {} at a time (migration.concurrency), batches of {}",
        c.shards, c.concurrency, c.batch_size
    );
    match c.start {
        "complete" => format!(
            "copy: nothing to do: checkpoint {} says the backfill is complete ({} records settled; move it away to copy again)\n",
            c.checkpoint, c.settled
        ),
        "resume" => format!(
            "copy: would resume from checkpoint {}: {} records settled, {} of {} shards done; ~{} records left; {how}\n",
            c.checkpoint, c.settled, c.shards_done, c.shards, c.records
        ),
        _ => format!("copy: a new backfill of ~{} records; {how}; checkpoint {}\n", c.records, c.checkpoint),
    }
}

fn durations_text(d: &Durations, c: &Copy) -> String {
    if c.records == 0 {
        return "expected duration: none (nothing to copy)\n".into();
    }
    let at_rate = match d.at_configured_rate_seconds {
        Some(s) => format!("{} at the configured rate ({} records/s)", human_duration(s), c.rate),
        None => "no limit at the configured rate, migration.rate.recordsPerSecond: 0".into(),
    };
    let at_read = match d.at_read_rate_seconds {
        Some(s) => format!("{} at the probed read rate", human_duration(s)),
        None => "no read rate probed".into(),
    };
    let expected =
        d.expected_seconds.map(|s| format!("at least {}", human_duration(s))).unwrap_or_else(|| "unknown".into());
    format!(
        "expected duration: {expected} ({at_rate}; {at_read}); estimated: writes to the secondary cannot be probed without writing, so the copy may take longer\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(records: u64, rate: u32) -> Copy {
        Copy {
            start: "new",
            checkpoint: "cp.json".into(),
            records,
            settled: 0,
            shards: 4,
            shards_done: 0,
            concurrency: 2,
            batch_size: 500,
            rate,
        }
    }

    #[test]
    fn the_expected_duration_is_the_slower_of_the_two_rates() {
        let probe = Probe { records: 100, shards: 2, seconds: 0.1, records_per_second: 1000.0 };
        let d = durations(&copy(10_000, 100), Some(&probe));
        assert_eq!(
            (d.at_configured_rate_seconds, d.at_read_rate_seconds, d.expected_seconds),
            (Some(100.0), Some(10.0), Some(100.0))
        );
        let d = durations(&copy(10_000, 0), Some(&probe));
        assert_eq!(d.expected_seconds, Some(10.0), "unlimited: the read rate bounds it");
        assert!(
            durations_text(&d, &copy(10_000, 0))
                .starts_with("expected duration: at least 10s (no limit at the configured rate, ")
        );
    }

    #[test]
    fn preflight_errors_become_one_problem_per_line() {
        assert_eq!(
            problem_lines("preflight failed:\nprimary: no table\nsecondary: refused"),
            vec!["primary: no table".to_string(), "secondary: refused".into()]
        );
    }
}
