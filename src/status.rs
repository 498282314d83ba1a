//! `vismig status`: the overall progress first, then one line per namespace (name and id:
//! settled of estimated, rate, ETA, dead letters, the last verify's verdict), the flip
//! state, and the shard table only with `--shards`. Reads the checkpoint, the dead
//! letter, the last verify and the primary's counts per namespace; writes nothing.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::Serialize;

use crate::backfill::checkpoint::{Checkpoint, FileCheckpoint};
use crate::commands::{FlipState, flip_state, last_verify_path};
use crate::config::Config;
use crate::names::NamespaceNames;
use crate::progress::human_duration;
use crate::store::{self, CountQuery, Counts};

/// A checkpoint older than this says the backfill is not running now (it is saved every
/// second while batches are acknowledged).
const STALE_AFTER_SECONDS: i64 = 60;

/// A namespace whose smoothed rate fell below this has stopped moving (its shards are
/// done or waiting): no rate and no ETA for it.
const MIN_RATE: f64 = 0.5;

/// What `vismig status` shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub json: bool,
    /// The shard table (cursor and spec of every shard).
    pub shards: bool,
}

/// The overall line.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overall {
    /// `not started`, `in progress`, `stopped` (in progress, but no checkpoint saved for a
    /// minute) or `complete`.
    pub state: &'static str,
    pub settled: u64,
    pub estimated: u64,
    pub percent: f64,
    pub records_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub dead_lettered: u64,
    /// `equal` or `different`, with the mode; None before the first verify.
    pub last_verify: Option<String>,
}

/// One namespace's progress: the checkpoint's count of it against the primary's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// The namespace id.
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Records the primary holds now.
    pub estimated: u64,
    /// Records of it the backfill settled; None for a checkpoint saved by a vismig that
    /// did not count them per namespace.
    pub settled: Option<u64>,
    pub percent: Option<f64>,
    /// Its current rate, while the backfill runs and copies it.
    pub records_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub dead_lettered: u64,
    /// `equal`, `different`, or None when the last verify did not cover it.
    pub last_verify: Option<&'static str>,
}

/// `vismig status`, as text or one JSON object (the checkpoint's fields as they are,
/// `lastVerify`, `flip`, `overall` and `perNamespace`).
pub async fn status(config: &Config, options: Options) -> anyhow::Result<String> {
    let snapshot = Snapshot::gather(config).await?;
    if options.json { snapshot.json(config) } else { Ok(snapshot.text(config, options.shards)) }
}

/// Everything `status` shows, read once.
struct Snapshot {
    checkpoint: Option<Checkpoint>,
    checkpoint_path: PathBuf,
    last_verify: Option<serde_json::Value>,
    flip: Option<FlipState>,
    overall: Overall,
    /// The lines per namespace, or why the primary could not be counted.
    per_namespace: Result<Vec<NamespaceStatus>, String>,
}

impl Snapshot {
    async fn gather(config: &Config) -> anyhow::Result<Snapshot> {
        let store = FileCheckpoint::new(&config.migration.checkpoint.path);
        let checkpoint = store.load()?;
        let last_verify: Option<serde_json::Value> =
            std::fs::read_to_string(last_verify_path(config)).ok().and_then(|t| serde_json::from_str(&t).ok());
        let names = NamespaceNames::load(config).await;
        let dead_letters = dead_letters_per_namespace(&config.migration.dead_letter.path);
        let overall = overall(checkpoint.as_ref(), &dead_letters, last_verify.as_ref());
        let filter = checkpoint.as_ref().map_or(&config.migration.namespaces, |cp| &cp.namespaces);
        let per_namespace = match count_primary(config, filter).await {
            Ok(primary) => {
                let sources = Sources { checkpoint: checkpoint.as_ref(), dead_letters: &dead_letters, names: &names };
                Ok(per_namespace(&primary, &overall, &sources, last_verify.as_ref()))
            }
            Err(e) => Err(format!("{e:#}")),
        };
        Ok(Snapshot {
            checkpoint,
            checkpoint_path: store.path().to_path_buf(),
            last_verify,
            flip: flip_state(config).await,
            overall,
            per_namespace,
        })
    }

    fn json(self, config: &Config) -> anyhow::Result<String> {
        let mut out = match &self.checkpoint {
            Some(cp) => serde_json::to_value(cp)?,
            None => serde_json::json!({ "checkpoint": null, "path": self.checkpoint_path }),
        };
        out["lastVerify"] = self.last_verify.unwrap_or(serde_json::Value::Null);
        out["flip"] = self.flip.map(|f| f.json(config)).unwrap_or(serde_json::Value::Null);
        out["overall"] = serde_json::to_value(&self.overall)?;
        match &self.per_namespace {
            Ok(rows) => out["perNamespace"] = serde_json::to_value(rows)?,
            Err(e) => out["perNamespaceError"] = serde_json::Value::String(e.clone()),
        }
        Ok(format!("{}\n", serde_json::to_string_pretty(&out)?))
    }

    fn text(&self, config: &Config, shards: bool) -> String {
        let mut out = overall_line(&self.overall, self.checkpoint.as_ref(), &self.checkpoint_path);
        if let Some(reason) =
            self.checkpoint.as_ref().and_then(|cp| cp.throttle.as_ref()).filter(|_| self.overall.state != "complete")
        {
            out.push_str(&format!("  health throttle: {reason}\n"));
        }
        match &self.per_namespace {
            Ok(rows) => out.push_str(&namespace_table(rows)),
            Err(e) => out.push_str(&format!("  per namespace: cannot count the primary: {e}\n")),
        }
        if let Some(cp) = &self.checkpoint {
            out.push_str(&checkpoint_text(cp, shards));
        }
        match &self.flip {
            Some(f) => out.push_str(&f.text(config)),
            None => out.push_str(
                "flip state: unknown (set migration.flip.dynamicConfigFile or migration.flip.target.configMap)\n",
            ),
        }
        out
    }
}

/// The primary's counts of the given namespaces (all when empty), every record settled
/// or not: the cut-off is now.
async fn count_primary(config: &Config, namespaces: &[String]) -> anyhow::Result<Counts> {
    let source = store::open_source(config, &config.primary()).await?;
    let query = CountQuery { namespaces: namespaces.to_vec(), cutoff: Utc::now() };
    source.count(&query).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// What the per-namespace lines are made of, besides the primary's counts.
struct Sources<'a> {
    checkpoint: Option<&'a Checkpoint>,
    dead_letters: &'a BTreeMap<String, u64>,
    names: &'a NamespaceNames,
}

/// Records in one namespace's counts, settled or recent.
pub fn total(counts: &Counts, namespace: &str) -> u64 {
    counts.get(namespace).map(|c| c.by_status.values().sum::<u64>() + c.recent).unwrap_or(0)
}

fn percent(done: u64, of: u64) -> f64 {
    if of == 0 { 100.0 } else { (done as f64 * 100.0 / of as f64).min(100.0) }
}

fn overall(
    checkpoint: Option<&Checkpoint>,
    dead_letters: &BTreeMap<String, u64>,
    last_verify: Option<&serde_json::Value>,
) -> Overall {
    let last_verify = last_verify.map(|v| {
        format!(
            "{} ({}) at {}",
            v["result"].as_str().unwrap_or("?"),
            v["mode"].as_str().unwrap_or("?"),
            v["finishedAt"].as_str().unwrap_or("?")
        )
    });
    let dead_lettered = dead_letters.values().sum();
    let Some(cp) = checkpoint else {
        return Overall {
            state: "not started",
            settled: 0,
            estimated: 0,
            percent: 0.0,
            records_per_second: None,
            eta_seconds: None,
            dead_lettered,
            last_verify,
        };
    };
    let stale = (Utc::now() - cp.updated_at).num_seconds() > STALE_AFTER_SECONDS;
    let state = if cp.is_complete() {
        "complete"
    } else if stale {
        "stopped"
    } else {
        "in progress"
    };
    let rate = (state == "in progress" && cp.records_per_second > 0.0).then_some(cp.records_per_second);
    let remaining = cp.estimated_total.saturating_sub(cp.totals.scanned) as f64;
    Overall {
        state,
        settled: cp.totals.scanned,
        estimated: cp.estimated_total,
        percent: if cp.is_complete() { 100.0 } else { percent(cp.totals.scanned, cp.estimated_total) },
        records_per_second: rate,
        eta_seconds: rate.map(|r| remaining / r),
        dead_lettered: dead_lettered.max(cp.totals.outcomes.dead_letter),
        last_verify,
    }
}

/// The last verify's verdict per namespace id: equal when neither its counts nor its
/// records differed.
fn verify_verdicts(last_verify: Option<&serde_json::Value>) -> BTreeMap<String, &'static str> {
    let Some(namespaces) = last_verify.and_then(|v| v["namespaces"].as_array()) else { return BTreeMap::new() };
    namespaces
        .iter()
        .filter_map(|ns| {
            let id = ns["namespace"].as_str()?;
            let empty = |v: &serde_json::Value| {
                v.as_array().is_none_or(|a| a.is_empty()) && v.as_object().is_none_or(|o| o.is_empty())
            };
            let equal = empty(&ns["countDifferences"]) && empty(&ns["differenceCounts"]);
            Some((id.to_string(), if equal { "equal" } else { "different" }))
        })
        .collect()
}

fn per_namespace(
    primary: &Counts,
    overall: &Overall,
    sources: &Sources,
    last_verify: Option<&serde_json::Value>,
) -> Vec<NamespaceStatus> {
    let verdicts = verify_verdicts(last_verify);
    let tracked = sources.checkpoint.map(|cp| &cp.namespace_progress);
    // A checkpoint that settled records but none per namespace predates the count.
    let untracked = sources.checkpoint.is_some_and(|cp| cp.namespace_progress.is_empty() && cp.totals.scanned > 0);
    let mut ids: std::collections::BTreeSet<&String> = primary.keys().collect();
    ids.extend(tracked.into_iter().flat_map(|t| t.keys()));
    ids.into_iter()
        .map(|id| {
            let estimated = total(primary, id);
            let progress = tracked.and_then(|t| t.get(id));
            let settled = (!untracked).then(|| progress.map(|p| p.settled).unwrap_or(0).min(estimated.max(1)));
            let left = settled.map(|s| estimated.saturating_sub(s));
            let rate = progress
                .map(|p| p.records_per_second)
                .filter(|r| overall.state == "in progress" && *r >= MIN_RATE && left.is_some_and(|l| l > 0));
            NamespaceStatus {
                namespace: id.clone(),
                name: sources.names.name(id).map(str::to_string),
                estimated,
                settled,
                percent: settled.map(|s| percent(s, estimated)),
                records_per_second: rate,
                eta_seconds: rate.zip(left).map(|(r, l)| l as f64 / r),
                dead_lettered: sources.dead_letters.get(id).copied().unwrap_or(0),
                last_verify: verdicts.get(id).copied(),
            }
        })
        .collect()
}

/// Dead-lettered records per namespace id, from the dead-letter file (none when absent).
fn dead_letters_per_namespace(path: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let Ok(file) = std::fs::File::open(path) else { return counts };
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) {
            let id = entry["namespaceId"].as_str().unwrap_or("?").to_string();
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}

fn rate_text(rate: Option<f64>) -> String {
    rate.map(|r| format!("{r:.0} records/s")).unwrap_or_else(|| "-".into())
}

fn eta_text(eta: Option<f64>) -> String {
    eta.map(human_duration).unwrap_or_else(|| "-".into())
}

fn overall_line(o: &Overall, checkpoint: Option<&Checkpoint>, path: &Path) -> String {
    let verify = o.last_verify.clone().unwrap_or_else(|| "none".into());
    let Some(cp) = checkpoint else {
        return format!(
            "no checkpoint at {}: no backfill has started with this config; {} dead-lettered; last verify: {verify}\n",
            path.display(),
            o.dead_lettered
        );
    };
    let pace = match o.state {
        "in progress" => format!(", {}, ETA {}", rate_text(o.records_per_second), eta_text(o.eta_seconds)),
        "stopped" => format!(
            ", not running (last checkpoint {} ago; the same command resumes)",
            human_duration((Utc::now() - cp.updated_at).num_seconds() as f64)
        ),
        _ => String::new(),
    };
    format!(
        "backfill {}: {} of ~{} records settled ({:.0}%){pace}, {} dead-lettered; last verify: {verify}\n",
        o.state, o.settled, o.estimated, o.percent, o.dead_lettered
    )
}

fn namespace_table(rows: &[NamespaceStatus]) -> String {
    let labels: Vec<String> = rows.iter().map(|r| crate::names::label(&r.namespace, r.name.as_deref())).collect();
    let width = labels.iter().map(String::len).max().unwrap_or(0).max("namespace".len());
    let mut out = format!(
        "  {:<width$}  {:>21}  {:>4}  {:>16}  {:>8}  {:>13}  last verify\n",
        "namespace", "settled of estimated", "%", "rate", "ETA", "dead-lettered"
    );
    for (r, label) in rows.iter().zip(&labels) {
        let settled = r.settled.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
        out.push_str(&format!(
            "  {label:<width$}  {:>21}  {:>4}  {:>16}  {:>8}  {:>13}  {}\n",
            format!("{settled} of {}", r.estimated),
            r.percent.map(|p| format!("{p:.0}%")).unwrap_or_else(|| "?".into()),
            rate_text(r.records_per_second),
            eta_text(r.eta_seconds),
            r.dead_lettered,
            r.last_verify.unwrap_or("not verified")
        ));
    }
    out
}

/// The checkpoint's details: stores, times, outcomes, deferred indexes, and the shards
/// (a count, or the table with `shards`).
pub fn checkpoint_text(cp: &Checkpoint, shards: bool) -> String {
    let done = cp.shards.iter().filter(|s| s.done).count();
    let mut out = format!(
        "  source {}\n  sink   {}\n  started {}, updated {}\n",
        cp.source,
        cp.sink,
        cp.started_at.to_rfc3339(),
        cp.updated_at.to_rfc3339()
    );
    let t = &cp.totals.outcomes;
    out.push_str(&format!(
        "  inserted {}, updated {}, skipped_newer {}, skipped_present {}, dead-lettered {}\n",
        t.inserted, t.updated, t.skipped_newer, t.skipped_present, t.dead_letter
    ));
    if !cp.deferred_indexes.is_empty() {
        let dropped = cp.deferred_indexes.iter().filter(|d| d.dropped && !d.rebuilt).count();
        let rebuilt = cp.deferred_indexes.iter().filter(|d| d.rebuilt).count();
        out.push_str(&format!(
            "  bulk load: {} secondary indexes deferred; {dropped} dropped now, {rebuilt} rebuilt\n",
            cp.deferred_indexes.len()
        ));
        for d in cp.deferred_indexes.iter().filter(|d| d.dropped && !d.rebuilt) {
            out.push_str(&format!("    dropped: {}\n", d.index.name));
        }
    }
    out.push_str(&format!(
        "  shards: {done} of {} done{}\n",
        cp.shards.len(),
        if shards { "" } else { " (--shards lists each shard's cursor)" }
    ));
    if shards {
        for s in &cp.shards {
            let cursor = s.cursor.as_ref().map(|c| c.0.to_string()).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "  shard {:>3} {:<5} settled {:>9}  cursor {}  {}\n",
                s.id,
                if s.done { "done" } else { "open" },
                s.settled,
                cursor,
                s.spec.0
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ExecutionStatus;
    use crate::store::NamespaceCounts;

    fn counts(entries: &[(&str, u64)]) -> Counts {
        entries
            .iter()
            .map(|(ns, n)| {
                let c = NamespaceCounts { by_status: BTreeMap::from([(ExecutionStatus::Completed, *n)]), recent: 0 };
                (ns.to_string(), c)
            })
            .collect()
    }

    fn checkpoint(per_namespace: &[(&str, u64, f64)], scanned: u64) -> Checkpoint {
        let split = crate::store::Split { per_process: 1, process_index: 0, process_count: 1 };
        let mut cp = Checkpoint::new("a".into(), "b".into(), vec![], split, 410, vec![]);
        cp.totals.scanned = scanned;
        for (ns, settled, rate) in per_namespace {
            cp.namespace_progress.insert(
                ns.to_string(),
                crate::backfill::checkpoint::NamespaceProgress { settled: *settled, records_per_second: *rate },
            );
        }
        cp
    }

    fn in_progress() -> Overall {
        Overall {
            state: "in progress",
            settled: 120,
            estimated: 410,
            percent: 29.0,
            records_per_second: Some(30.0),
            eta_seconds: Some(10.0),
            dead_lettered: 1,
            last_verify: None,
        }
    }

    #[test]
    fn each_namespace_has_its_own_settled_count_rate_and_eta() {
        let names = NamespaceNames::from_name_to_id(&BTreeMap::from([("orders".to_string(), "ns-1".to_string())]));
        let verify = serde_json::json!({"namespaces": [
            {"namespace": "ns-1", "countDifferences": [], "differenceCounts": {}},
            {"namespace": "ns-2", "countDifferences": [{"status": "Completed"}], "differenceCounts": {}}]});
        let cp = checkpoint(&[("ns-1", 100, 20.0), ("ns-3", 10, 0.1)], 110);
        let dead_letters = BTreeMap::from([("ns-2".to_string(), 1)]);
        let sources = Sources { checkpoint: Some(&cp), dead_letters: &dead_letters, names: &names };
        let primary = counts(&[("ns-1", 300), ("ns-2", 100), ("ns-3", 10)]);
        let rows = per_namespace(&primary, &in_progress(), &sources, Some(&verify));
        assert_eq!(rows[0].name.as_deref(), Some("orders"));
        assert_eq!((rows[0].settled, rows[0].estimated), (Some(100), 300));
        assert_eq!((rows[0].records_per_second, rows[0].eta_seconds), (Some(20.0), Some(10.0)));
        assert_eq!((rows[1].settled, rows[1].records_per_second), (Some(0), None), "not started: no rate");
        assert_eq!((rows[2].percent, rows[2].records_per_second), (Some(100.0), None), "done: no rate");
        assert_eq!(
            (rows[0].last_verify, rows[1].last_verify, rows[2].last_verify),
            (Some("equal"), Some("different"), None)
        );
        assert_eq!(rows[1].dead_lettered, 1);
        let table = namespace_table(&rows);
        assert!(table.lines().nth(1).unwrap().starts_with("  orders (ns-1)  "), "{table}");
        let words = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(words(table.lines().nth(1).unwrap()), "orders (ns-1) 100 of 300 33% 20 records/s 10s 0 equal");
        assert!(table.contains("not verified"), "{table}");

        // A checkpoint from before per-namespace counts: settled unknown, not 0.
        let old = checkpoint(&[], 110);
        let sources = Sources { checkpoint: Some(&old), ..sources };
        let rows = per_namespace(&primary, &in_progress(), &sources, None);
        assert_eq!((rows[0].settled, rows[0].percent), (None, None));
        assert!(words(&namespace_table(&rows)).contains("orders (ns-1) ? of 300 ? - - 0 not verified"));
    }
}
