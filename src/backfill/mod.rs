//! The backfill pipeline: scanners (one per shard in progress) -> throttle -> a bounded
//! channel -> writers -> the checkpoint keeper. Memory is bounded by the stages: at most
//! one batch per scanner, one per writer and one in the channel, whatever the table's size.
//! This module only orchestrates (resume or plan, start the tasks, wait for the end or a
//! stop, settle); each role lives in its own file.

pub mod bulk_load;
pub mod checkpoint;
pub mod dead_letter;
pub mod health;
mod keeper;
mod resume;
pub mod retry;
pub mod scanner;
pub mod shards;
mod supervise;
mod tasks;
pub mod throttle;
pub mod writer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use self::checkpoint::{Checkpoint, FileCheckpoint, Totals};
use self::keeper::Ack;
use self::supervise::Running;
use self::tasks::{PendingShard, Stops};
use self::writer::Batch;
use crate::config::Config;
use crate::metrics::{Control, Metrics};
use crate::progress::Progress;
use crate::retry::Backoff;
use crate::store::{Sink, Source, Split};

/// Settings of one backfill run: the config's `migration:` block with the command
/// line's overrides applied.
#[derive(Clone, Debug)]
pub struct Options {
    pub split: Split,
    pub batch_size: usize,
    pub concurrency: usize,
    pub burst: Option<u32>,
    pub checkpoint_interval: Duration,
    /// The back-off for transient store errors of the scanners and writers.
    pub retry: Backoff,
    /// After the stop signal, how long the batches already read may take to be written.
    pub stop_timeout: Duration,
}

impl Options {
    pub fn from_config(config: &Config, process_index: usize, process_count: usize) -> Self {
        let m = &config.migration;
        Self {
            split: Split { per_process: m.concurrency, process_index, process_count },
            batch_size: m.batch_size,
            concurrency: m.concurrency,
            burst: m.rate.burst,
            checkpoint_interval: Duration::from_secs(1),
            retry: retry::store_backoff(),
            stop_timeout: m.stop_timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub totals: Totals,
    pub elapsed: Duration,
    /// False when the run stopped early on a signal or a critical health level; the
    /// checkpoint says where.
    pub complete: bool,
    /// The critical health level that stopped the run, in plain words.
    pub stopped_by: Option<String>,
    pub checkpoint_path: std::path::PathBuf,
}

pub struct Backfill {
    pub config: Config,
    pub options: Options,
    pub source: Arc<dyn Source>,
    pub sink: Arc<dyn Sink>,
    pub metrics: Arc<Metrics>,
    pub control: Arc<Control>,
    /// Search-attribute names between the source's and the sink's family.
    pub renamer: Arc<crate::attribute_names::Renamer>,
    /// Fields the primary's schema has and the secondary's lacks, set by preflight when
    /// `migration.dropMissingFields` allows copying without them.
    pub dropped_fields: std::sync::OnceLock<Vec<&'static str>>,
    /// Namespace names for the log lines that name a namespace.
    pub names: Arc<crate::names::NamespaceNames>,
}

impl Backfill {
    /// Records per batch: `migration.batchSize`, at most what the secondary takes at once.
    pub fn batch_size(&self) -> usize {
        self.options.batch_size.min(self.sink.max_batch()).max(1)
    }

    /// Preflight of both stores; each failure is one line naming the store.
    pub async fn preflight(&self) -> anyhow::Result<()> {
        self.metrics.set_phase("preflight");
        let (a, b) = tokio::join!(self.source.preflight(), self.sink.preflight());
        let problems: Vec<String> =
            [a.err().map(|e| format!("primary: {e}")), b.err().map(|e| format!("secondary: {e}"))]
                .into_iter()
                .flatten()
                .collect();
        if !problems.is_empty() {
            anyhow::bail!("preflight failed:\n{}", problems.join("\n"));
        }
        self.check_schema_versions().await?;
        self.check_invalid_indexes().await?;
        self.check_search_attributes().await?;
        tracing::info!(primary = %self.source.describe(), secondary = %self.sink.describe(), "preflight passed");
        Ok(())
    }

    /// Names the schema version of both sides, and refuses a secondary whose schema lacks
    /// fields the primary's has (an older Temporal schema), unless told to copy without
    /// them: a field is never dropped silently.
    async fn check_schema_versions(&self) -> anyhow::Result<()> {
        let (a, b) = tokio::join!(self.source.schema_info(), self.sink.schema_info());
        let source = a.map_err(|e| anyhow::anyhow!("preflight failed:\nprimary: {e}"))?;
        let sink = b.map_err(|e| anyhow::anyhow!("preflight failed:\nsecondary: {e}"))?;
        tracing::info!("schema versions: primary {}, secondary {}", source.version, sink.version);
        let missing = crate::store::schema::missing_in_sink(&source, &sink);
        if missing.is_empty() {
            return Ok(());
        }
        let what = format!(
            "the secondary {} ({}) has no {}, which the primary {} ({}) has",
            self.sink.describe(),
            sink.version,
            missing.join(", "),
            self.source.describe(),
            source.version
        );
        if !self.config.migration.drop_missing_fields {
            anyhow::bail!(
                "preflight failed: {what}; upgrade the secondary's schema first: {}, or set migration.dropMissingFields: true to copy the records without them",
                if sink.upgrade.is_empty() { "with Temporal's schema tool" } else { &sink.upgrade }
            );
        }
        tracing::warn!(
            "{what}: copying without them (migration.dropMissingFields); the summary counts the records that lose a value"
        );
        let _ = self.dropped_fields.set(missing);
        Ok(())
    }

    /// A secondary index left invalid (PostgreSQL: an interrupted `CREATE INDEX
    /// CONCURRENTLY`) is still maintained on every write but never used by queries; the
    /// operator must rebuild it. Indexes this run's bulk load deferred are exempt: the
    /// run rebuilds those itself.
    async fn check_invalid_indexes(&self) -> anyhow::Result<()> {
        let invalid =
            self.sink.invalid_indexes().await.map_err(|e| anyhow::anyhow!("preflight failed:\nsecondary: {e}"))?;
        let ours: Vec<String> = FileCheckpoint::new(&self.config.migration.checkpoint.path)
            .load()?
            .map(|cp| cp.deferred_indexes.iter().map(|d| d.index.name.clone()).collect())
            .unwrap_or_default();
        let foreign: Vec<&String> = invalid.iter().filter(|name| !ours.contains(name)).collect();
        if !foreign.is_empty() {
            anyhow::bail!(
                "preflight failed: secondary {} has invalid indexes (left by an interrupted CREATE INDEX CONCURRENTLY): {}; drop and re-create each (DROP INDEX CONCURRENTLY …, then the CREATE INDEX CONCURRENTLY of the Temporal schema update that made it) before copying",
                self.sink.describe(),
                foreign.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        Ok(())
    }

    /// Every custom search attribute the source uses must have a name in the sink's
    /// family and a mapping in the sink; all gaps are listed in one error.
    async fn check_search_attributes(&self) -> anyhow::Result<()> {
        let namespaces = &self.config.migration.namespaces;
        let (used, fields) =
            tokio::join!(self.source.search_attributes_in_use(namespaces), self.sink.search_attribute_fields());
        let (used, fields) = (used?, fields?);
        let problems =
            crate::attribute_names::check(&self.renamer, used.as_ref(), fields.as_ref(), &self.sink.describe());
        if !problems.is_empty() {
            anyhow::bail!("preflight failed: search attributes\n{}", problems.join("\n"));
        }
        Ok(())
    }

    /// Runs the backfill to its end, or until `cancel` fires; the checkpoint is saved in
    /// both cases. Returns an error (with the checkpoint intact) if a store fails for good.
    pub async fn run(&self, cancel: watch::Receiver<bool>) -> anyhow::Result<Summary> {
        let started = Instant::now();
        let store = FileCheckpoint::new(&self.config.migration.checkpoint.path);
        let mut checkpoint = self.resume_or_plan(&store).await?;
        let estimated = &self.metrics.records_estimated_total;
        estimated.inc_by(checkpoint.estimated_total.saturating_sub(estimated.get()));
        if checkpoint.is_complete() {
            bulk_load::rebuild_indexes(self.sink.as_ref(), &mut checkpoint, &store, &self.metrics).await?;
            tracing::info!(checkpoint = %store.path().display(), "the checkpoint says this backfill is already complete; nothing to do (move the checkpoint away to copy again)");
            return Ok(summary(checkpoint.totals, started, true, &store));
        }
        self.prepare_bulk_load(&mut checkpoint, &store).await?;
        self.metrics.set_phase("backfill");
        self.control.set_ready();

        let progress = Progress::new(checkpoint.estimated_total, checkpoint.totals.scanned);
        let pending = checkpoint.shards.iter().filter(|s| !s.done).map(|s| (s.id, s.spec.clone(), s.cursor.clone()));
        let pending = pending.collect();
        let checkpoint = Arc::new(Mutex::new(checkpoint));
        // A critical health level stops the run the way a signal does.
        let (critical, mut critical_rx) = watch::channel(false);
        let mut cancel = cancel;
        let stop = tasks::merge(&mut cancel, &mut critical_rx);
        let samples = Arc::new(health::Samples::new(self.control.health.borrow().window));
        let stopped_by = Arc::new(Mutex::new(None));
        let monitor = health::Monitor {
            source: self.source.clone(),
            sink: self.sink.clone(),
            control: self.control.clone(),
            metrics: self.metrics.clone(),
            samples: samples.clone(),
            checkpoint: checkpoint.clone(),
            critical,
            stopped_by: stopped_by.clone(),
        };
        let monitor = tokio::spawn(monitor.run(stop.clone()));
        let running = self.start(pending, checkpoint.clone(), &store, progress.clone(), stop.clone(), samples);
        let failure = running.wait(stop, self.options.stop_timeout).await;
        monitor.abort();
        progress.finish();
        let checkpoint = checkpoint.lock().unwrap().clone();
        let mut summary = self.settle(checkpoint, failure, &store, started).await?;
        summary.stopped_by = stopped_by.lock().unwrap().take();
        Ok(summary)
    }

    /// Drops the secondary's indexes for a bulk load when the config asks for it;
    /// otherwise rebuilds the ones an earlier deferred run dropped.
    async fn prepare_bulk_load(&self, checkpoint: &mut Checkpoint, store: &FileCheckpoint) -> anyhow::Result<()> {
        let bulk = &self.config.migration.bulk_load;
        if bulk.defer_indexes || bulk.defer_refresh {
            bulk_load::defer_indexes(self.sink.as_ref(), checkpoint, store, &self.config).await
        } else {
            bulk_load::rebuild_indexes(self.sink.as_ref(), checkpoint, store, &self.metrics).await
        }
    }

    /// Starts the scanners, the writers and the checkpoint keeper, and the channels
    /// between them.
    fn start(
        &self,
        pending: Vec<PendingShard>,
        checkpoint: Arc<Mutex<Checkpoint>>,
        store: &FileCheckpoint,
        progress: Progress,
        cancel: watch::Receiver<bool>,
        samples: Arc<health::Samples>,
    ) -> Running {
        let batch_size = self.batch_size();
        // A single slot: a scanner waiting to send already holds its next batch ready, so
        // the writers find one waiting whenever the scanners are ahead (they usually are:
        // writing costs the servers more than reading). Each more slot is only memory
        // (batches in flight: one per scanner, one per writer, and this one).
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
        let (ack_tx, ack_rx) = mpsc::channel::<Ack>(self.options.concurrency * 4);
        // Writers get their own stop signal: on a graceful stop they first settle the
        // batches already read; on a fatal error everything stops at once.
        let (abort, abort_rx) = watch::channel(false);
        let stops = Stops { cancel, abort: abort_rx };
        Running {
            scanners: self.start_scanners(pending, batch_size, batch_tx, &stops, &samples),
            writers: self.start_writers(batch_rx, ack_tx, &stops, &samples),
            keeper: self.start_keeper(checkpoint, ack_rx, store, progress),
            abort,
        }
    }

    /// The final save of the checkpoint once every task has ended; after a complete copy,
    /// the deferred indexes are rebuilt and the secondary made to show what was written.
    /// After a fatal error, the error says whether this save worked.
    async fn settle(
        &self,
        mut checkpoint: Checkpoint,
        failure: Option<anyhow::Error>,
        store: &FileCheckpoint,
        started: Instant,
    ) -> anyhow::Result<Summary> {
        let complete = checkpoint.stamp_final(Utc::now());
        let saved = store.save(&checkpoint);
        if let Some(e) = failure {
            self.metrics.set_phase("failed");
            return Err(e.context(format!(
                "backfill stopped; {} (rerun the same command to resume)",
                final_save_note(&saved, store.path())
            )));
        }
        saved?;
        self.metrics.checkpoint_writes_total.inc();
        self.metrics.checkpoint_age_seconds.set(0.0);
        if complete {
            bulk_load::rebuild_indexes(self.sink.as_ref(), &mut checkpoint, store, &self.metrics).await?;
            // What was written is visible to verify and to Temporal's list queries.
            self.sink.flush().await?;
        }
        Ok(summary(checkpoint.totals, started, complete, store))
    }
}

fn summary(totals: Totals, started: Instant, complete: bool, store: &FileCheckpoint) -> Summary {
    Summary {
        totals,
        elapsed: started.elapsed(),
        complete,
        checkpoint_path: store.path().to_path_buf(),
        stopped_by: None,
    }
}

/// What a failed run says about its checkpoint.
fn final_save_note(saved: &anyhow::Result<()>, path: &std::path::Path) -> String {
    match saved {
        Ok(()) => format!("checkpoint saved at {}", path.display()),
        // The save writes a temporary file and renames it: the last checkpoint saved is
        // still whole, only older.
        Err(save) => format!("{save:#}; the last checkpoint saved at {} is intact", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::final_save_note;
    use std::path::Path;

    #[test]
    fn a_failed_run_says_which_checkpoint_it_left() {
        let path = Path::new("/data/checkpoint.json");
        assert_eq!(final_save_note(&Ok(()), path), "checkpoint saved at /data/checkpoint.json");
        let failed = Err(anyhow::anyhow!("cannot write /data/checkpoint.json.tmp: read-only file system"));
        assert_eq!(
            final_save_note(&failed, path),
            "cannot write /data/checkpoint.json.tmp: read-only file system; the last checkpoint saved at /data/checkpoint.json is intact"
        );
    }
}
