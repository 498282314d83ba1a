//! The checkpoint: per shard, the low-water cursor below which every record is
//! acknowledged by the secondary. Saved atomically (temp file in the same directory,
//! fsync, rename, fsync of the directory), so a crash leaves either the old or the new
//! file, never a torn one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::writer::OutcomeCounts;
use crate::store::{Cursor, IndexDef, ShardSpec, Split};

pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub format: u32,
    /// What this checkpoint is for; a resume with other stores or namespaces is refused.
    pub source: String,
    pub sink: String,
    pub namespaces: Vec<String>,
    pub split: Split,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub estimated_total: u64,
    /// The run's current rate (records settled per second, smoothed) when it was saved,
    /// for `vismig status`.
    #[serde(default, skip_serializing_if = "is_zero_rate")]
    pub records_per_second: f64,
    pub totals: Totals,
    pub shards: Vec<ShardState>,
    /// Indexes of the secondary dropped for a bulk load, saved before the drop so that a
    /// crash can never lose them: rebuilt after the copy, or on the next start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred_indexes: Vec<DeferredIndex>,
    /// Each namespace's share of the run (by namespace id), for `vismig status`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_progress: BTreeMap<String, NamespaceProgress>,
    /// Why the health throttle slowed, paused or stopped the run when it was saved, in
    /// plain words, for `vismig status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<String>,
}

/// One namespace's part of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceProgress {
    /// Records settled in its shards (written, skipped or dead-lettered), counted as the
    /// shards' own `settled` and the run's totals are: when the low-water mark passes
    /// them, so a batch copied again after a crash is not counted twice.
    pub settled: u64,
    /// Smoothed like the run's rate, when the checkpoint was saved.
    #[serde(default, skip_serializing_if = "is_zero_rate")]
    pub records_per_second: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeferredIndex {
    #[serde(flatten)]
    pub index: IndexDef,
    pub dropped: bool,
    pub rebuilt: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Records settled (scanned, then written, skipped or dead-lettered).
    pub scanned: u64,
    /// Their outcomes, saved beside `scanned` (the file keeps one flat object).
    #[serde(flatten)]
    pub outcomes: OutcomeCounts,
}

fn is_zero_rate(r: &f64) -> bool {
    *r == 0.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardState {
    pub id: usize,
    pub spec: ShardSpec,
    /// Every record up to and including this cursor is acknowledged.
    pub cursor: Option<Cursor>,
    pub done: bool,
    /// Records acknowledged in this shard (scanned and settled: written, skipped or dead-lettered).
    pub settled: u64,
}

impl Checkpoint {
    /// The checkpoint of a run that starts now: every shard of the plan still to scan.
    pub fn new(
        source: String,
        sink: String,
        namespaces: Vec<String>,
        split: Split,
        estimated_total: u64,
        specs: Vec<ShardSpec>,
    ) -> Self {
        let now = Utc::now();
        Checkpoint {
            format: FORMAT,
            source,
            sink,
            namespaces,
            split,
            started_at: now,
            updated_at: now,
            completed_at: None,
            estimated_total,
            records_per_second: 0.0,
            totals: Totals::default(),
            shards: specs
                .into_iter()
                .enumerate()
                .map(|(id, spec)| ShardState { id, spec, cursor: None, done: false, settled: 0 })
                .collect(),
            deferred_indexes: Vec::new(),
            namespace_progress: BTreeMap::new(),
            throttle: None,
        }
    }

    /// Records settled per namespace id, the base of the next `update_namespace_rates`.
    pub fn namespace_settled(&self) -> BTreeMap<String, u64> {
        self.namespace_progress.iter().map(|(ns, p)| (ns.clone(), p.settled)).collect()
    }

    /// Each namespace's rate from what it settled since `base` (`seconds` ago), smoothed
    /// as the run's own rate is (a namespace that stopped moving decays towards 0).
    pub fn update_namespace_rates(&mut self, base: &BTreeMap<String, u64>, seconds: f64) {
        if seconds <= 0.0 {
            return;
        }
        for (namespace, progress) in &mut self.namespace_progress {
            let instant = progress.settled.saturating_sub(base.get(namespace).copied().unwrap_or(0)) as f64 / seconds;
            progress.records_per_second = crate::progress::smoothed(progress.records_per_second, instant);
        }
    }

    pub fn is_complete(&self) -> bool {
        self.shards.iter().all(|s| s.done)
    }

    /// Dates the checkpoint `now` before its final save; once every shard is done it is
    /// also complete as of `now`, unless an earlier run already completed it. Returns
    /// whether it is complete.
    pub fn stamp_final(&mut self, now: DateTime<Utc>) -> bool {
        let complete = self.is_complete();
        self.updated_at = now;
        if complete && self.completed_at.is_none() {
            self.completed_at = Some(now);
        }
        complete
    }

    /// Checks that a saved checkpoint belongs to this run's stores, namespaces and split.
    pub fn matches(&self, source: &str, sink: &str, namespaces: &[String], split: &Split) -> Result<(), String> {
        let mut diffs = Vec::new();
        if self.source != source {
            diffs.push(format!("source was {:?}, now {:?}", self.source, source));
        }
        if self.sink != sink {
            diffs.push(format!("sink was {:?}, now {:?}", self.sink, sink));
        }
        if self.namespaces != namespaces {
            diffs.push(format!("migration.namespaces was {:?}, now {:?}", self.namespaces, namespaces));
        }
        if self.split.process_index != split.process_index || self.split.process_count != split.process_count {
            diffs.push(format!(
                "--shard was {}/{}, now {}/{}",
                self.split.process_index, self.split.process_count, split.process_index, split.process_count
            ));
        }
        if diffs.is_empty() { Ok(()) } else { Err(diffs.join("; ")) }
    }
}

/// A checkpoint kept in a local file.
pub struct FileCheckpoint {
    path: PathBuf,
}

impl FileCheckpoint {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> anyhow::Result<Option<Checkpoint>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("cannot read checkpoint {}: {e}", self.path.display()),
        };
        let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "checkpoint {} is not a vismig checkpoint ({e}); move it away to start over",
                self.path.display()
            )
        })?;
        if cp.format != FORMAT {
            anyhow::bail!(
                "checkpoint {} has format {}, this vismig reads format {FORMAT}",
                self.path.display(),
                cp.format
            );
        }
        Ok(Some(cp))
    }

    pub fn save(&self, cp: &Checkpoint) -> anyhow::Result<()> {
        let data = serde_json::to_vec_pretty(cp)?;
        write_atomically(&self.path, &data, PRIVATE_FILE_MODE)
            .map_err(|e| anyhow::anyhow!("cannot save checkpoint {}: {e}", self.path.display()))
    }
}

/// Owner read and write only: the checkpoint, the dead-letter file (whole records: memos,
/// search attributes) and the verify result are vismig's own, not for other local users.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Writes `data` to `path` so that readers see the old or the new content, never a mix,
/// and the new content survives a crash once this returns. The new file has exactly the
/// permission bits `mode`, set on the temp file before any data goes into it, so the
/// content is never readable with wider permissions, not even for a moment.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        // The mode above applies only to a new file, and through the umask: a temp file
        // left by a crash keeps its old bits, so they are set explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            format: FORMAT,
            source: "sqlite a.db".into(),
            sink: "sqlite b.db".into(),
            namespaces: vec![],
            split: Split { per_process: 4, process_index: 0, process_count: 1 },
            started_at: Utc::now(),
            updated_at: Utc::now(),
            completed_at: None,
            estimated_total: 10,
            records_per_second: 0.0,
            totals: Totals::default(),
            shards: vec![ShardState {
                id: 0,
                spec: ShardSpec(serde_json::json!({"namespaceId": "ns"})),
                cursor: Some(Cursor(serde_json::json!("run-5"))),
                done: false,
                settled: 5,
            }],
            deferred_indexes: vec![],
            namespace_progress: BTreeMap::new(),
            throttle: None,
        }
    }

    #[test]
    fn namespaces_count_their_records_and_rates() {
        let mut cp = sample();
        let add =
            |cp: &mut Checkpoint, ns: &str, n: u64| cp.namespace_progress.entry(ns.into()).or_default().settled += n;
        add(&mut cp, "a", 10);
        add(&mut cp, "b", 4);
        let base = cp.namespace_settled();
        add(&mut cp, "a", 20);
        cp.update_namespace_rates(&base, 2.0);
        assert_eq!((cp.namespace_progress["a"].settled, cp.namespace_progress["a"].records_per_second), (30, 10.0));
        assert_eq!(cp.namespace_progress["b"].records_per_second, 0.0, "b did not move");
        let base = cp.namespace_settled();
        cp.update_namespace_rates(&base, 1.0);
        assert_eq!(cp.namespace_progress["a"].records_per_second, 7.0, "a stopped: its rate decays");
        let json = serde_json::to_value(&cp).unwrap();
        assert_eq!(json["namespaceProgress"]["a"]["settled"], 30);
        assert_eq!(serde_json::from_value::<Checkpoint>(json).unwrap(), cp);
    }

    #[test]
    fn the_final_stamp_completes_a_checkpoint_once() {
        let mut cp = sample();
        let first = Utc::now();
        assert!(!cp.stamp_final(first), "a shard is still pending");
        assert_eq!((cp.updated_at, cp.completed_at), (first, None));
        cp.shards[0].done = true;
        assert!(cp.stamp_final(first));
        assert_eq!(cp.completed_at, Some(first));
        let later = first + chrono::Duration::seconds(5);
        assert!(cp.stamp_final(later));
        assert_eq!((cp.updated_at, cp.completed_at), (later, Some(first)), "a rerun keeps the first completion");
    }

    #[test]
    fn a_new_checkpoint_has_every_shard_pending() {
        let specs = vec![ShardSpec(serde_json::json!({"n": 0})), ShardSpec(serde_json::json!({"n": 1}))];
        let split = Split { per_process: 2, process_index: 0, process_count: 1 };
        let cp = Checkpoint::new("a".into(), "b".into(), vec!["ns".into()], split, 7, specs.clone());
        assert_eq!(
            cp.shards.iter().map(|s| (s.id, s.spec.clone())).collect::<Vec<_>>(),
            vec![(0, specs[0].clone()), (1, specs[1].clone())]
        );
        assert!(cp.shards.iter().all(|s| !s.done && s.cursor.is_none() && s.settled == 0));
        assert_eq!((cp.estimated_total, cp.totals.clone(), cp.completed_at), (7, Totals::default(), None));
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpoint::new(dir.path().join("sub/checkpoint.json"));
        assert_eq!(store.load().unwrap(), None);
        let cp = sample();
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn the_checkpoint_is_private_to_its_owner_also_when_rewritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let store = FileCheckpoint::new(&path);
        store.save(&sample()).unwrap();
        assert_eq!(mode(), 0o600, "a new checkpoint");
        // A checkpoint from an older vismig, readable by everyone, and a temp file left by
        // a crash with the same bits: the next save makes both private.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let tmp = dir.path().join(format!(".checkpoint.json.tmp-{}", std::process::id()));
        std::fs::write(&tmp, "old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
        store.save(&sample()).unwrap();
        assert_eq!(mode(), 0o600, "a rewritten checkpoint");
    }

    #[test]
    fn refuses_garbage_and_other_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = FileCheckpoint::new(&path).load().unwrap_err().to_string();
        assert!(err.contains("is not a vismig checkpoint"), "{err}");
        let cp = sample();
        let split = cp.split.clone();
        assert!(cp.matches("sqlite a.db", "sqlite b.db", &[], &split).is_ok());
        let err = cp.matches("sqlite a.db", "sqlite c.db", &[], &split).unwrap_err();
        assert!(err.contains("sink was"), "{err}");
    }
}
