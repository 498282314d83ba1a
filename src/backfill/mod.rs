//! The backfill pipeline: scanners (one per shard in progress) -> throttle -> a bounded
//! channel -> writers -> the checkpoint keeper. Memory is bounded by the stages: at most
//! one batch per scanner, one per writer and one in the channel, whatever the table's size.
//! This module only orchestrates; each role lives in its own file.

pub mod bulk_load;
pub mod checkpoint;
pub mod dead_letter;
pub mod retry;
pub mod scanner;
pub mod shards;
pub mod throttle;
pub mod writer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use self::checkpoint::{Checkpoint, FileCheckpoint, ShardState, Totals};
use self::dead_letter::DeadLetter;
use self::retry::{Retrier, RetryPolicy};
use self::scanner::{ScanEnd, Scanner};
use self::shards::{LowWater, ShardQueue};
use self::throttle::Throttle;
use self::writer::{Batch, OutcomeCounts, WriteError, Writer};
use crate::config::Config;
use crate::metrics::{Control, Metrics};
use crate::progress::Progress;
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
    pub retry: RetryPolicy,
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
            retry: RetryPolicy::default(),
            stop_timeout: m.stop_timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub totals: Totals,
    pub elapsed: Duration,
    /// False when the run stopped early on a signal; the checkpoint says where.
    pub complete: bool,
    pub checkpoint_path: std::path::PathBuf,
}

/// Acknowledgement of one written batch, for the checkpoint keeper.
struct Ack {
    shard: usize,
    seq: u64,
    cursor: Option<crate::store::Cursor>,
    last: bool,
    records: u64,
    counts: OutcomeCounts,
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
}

impl Backfill {
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
        let namespaces = self.config.migration.namespaces.clone();
        let source_name = self.source.describe();
        let sink_name = self.sink.describe();
        let batch_size = self.options.batch_size.min(self.sink.max_batch()).max(1);

        let checkpoint = match store.load()? {
            Some(cp) => {
                cp.matches(&source_name, &sink_name, &namespaces, &self.options.split).map_err(|diff| {
                    anyhow::anyhow!(
                        "checkpoint {} belongs to another run ({diff}); restore that config, or move the checkpoint away to start over",
                        store.path().display()
                    )
                })?;
                let specs: Vec<_> = cp.shards.iter().map(|s| s.spec.clone()).collect();
                self.source
                    .check_resume(&specs, &self.options.split)
                    .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", store.path().display()))?;
                let pending = cp.shards.iter().filter(|s| !s.done).count();
                tracing::info!(checkpoint = %store.path().display(), shards = cp.shards.len(), pending, settled = cp.totals.scanned, "resuming from checkpoint");
                for s in cp.shards.iter().filter(|s| !s.done && s.cursor.is_some()) {
                    tracing::info!(shard = s.id, cursor = %s.cursor.as_ref().map(|c| c.0.to_string()).unwrap_or_default(), spec = %s.spec.0, "resuming shard after cursor");
                }
                cp
            }
            None => {
                let specs = self.source.plan_shards(&namespaces, &self.options.split).await?;
                let estimate = self.source.estimate(&namespaces).await?;
                let parts = self.options.split.parts() as u64;
                let estimated_total =
                    estimate * (parts / self.options.split.process_count.max(1) as u64) / parts.max(1);
                let now = Utc::now();
                let cp = Checkpoint {
                    format: checkpoint::FORMAT,
                    source: source_name.clone(),
                    sink: sink_name.clone(),
                    namespaces: namespaces.clone(),
                    split: self.options.split.clone(),
                    started_at: now,
                    updated_at: now,
                    completed_at: None,
                    estimated_total,
                    totals: Totals::default(),
                    shards: specs
                        .into_iter()
                        .enumerate()
                        .map(|(id, spec)| ShardState { id, spec, cursor: None, done: false, settled: 0 })
                        .collect(),
                    deferred_indexes: Vec::new(),
                };
                store.save(&cp)?;
                tracing::info!(checkpoint = %store.path().display(), shards = cp.shards.len(), estimated_records = estimated_total, "starting a new backfill");
                cp
            }
        };

        let mut checkpoint = checkpoint;
        let estimated = &self.metrics.records_estimated_total;
        estimated.inc_by(checkpoint.estimated_total.saturating_sub(estimated.get()));
        if checkpoint.is_complete() {
            bulk_load::rebuild_indexes(self.sink.as_ref(), &mut checkpoint, &store, &self.metrics).await?;
            tracing::info!(checkpoint = %store.path().display(), "the checkpoint says this backfill is already complete; nothing to do (move the checkpoint away to copy again)");
            return Ok(Summary {
                totals: checkpoint.totals.clone(),
                elapsed: started.elapsed(),
                complete: true,
                checkpoint_path: store.path().to_path_buf(),
            });
        }
        if self.config.migration.bulk_load.defer_indexes || self.config.migration.bulk_load.defer_refresh {
            bulk_load::defer_indexes(self.sink.as_ref(), &mut checkpoint, &store, &self.config).await?;
        } else {
            // Indexes a deferred run dropped are rebuilt even if deferring is now off.
            bulk_load::rebuild_indexes(self.sink.as_ref(), &mut checkpoint, &store, &self.metrics).await?;
        }
        self.metrics.set_phase("backfill");
        self.control.set_ready();

        let progress = Progress::new(checkpoint.estimated_total, checkpoint.totals.scanned);
        let pending: Vec<(usize, crate::store::ShardSpec, Option<crate::store::Cursor>)> =
            checkpoint.shards.iter().filter(|s| !s.done).map(|s| (s.id, s.spec.clone(), s.cursor.clone())).collect();
        let shared = Arc::new(Mutex::new(checkpoint));
        let queue = Arc::new(ShardQueue::new(pending.iter().map(|(id, _, _)| *id)));
        let pending = Arc::new(pending);

        // A single slot: a scanner waiting to send already holds its next batch ready, so
        // the writers find one waiting whenever the scanners are ahead (they usually are:
        // writing costs the servers more than reading). Each more slot is only memory
        // (batches in flight: one per scanner, one per writer, and this one).
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
        let batch_rx = Arc::new(tokio::sync::Mutex::new(batch_rx));
        let (ack_tx, mut ack_rx) = mpsc::channel::<Ack>(self.options.concurrency * 4);
        // Writers get their own stop signal: on a graceful stop they first settle the
        // batches already read; on a fatal error everything stops at once.
        let (abort_tx, abort_rx) = watch::channel(false);
        let throttle =
            Arc::new(Throttle::new(self.control.clone(), self.metrics.clone(), self.options.burst, batch_size));
        let dead_letter = Arc::new(DeadLetter::new(&self.config.migration.dead_letter.path));
        let retrier = || Retrier {
            policy: self.options.retry.clone(),
            control: self.control.clone(),
            metrics: self.metrics.clone(),
        };

        let mut scanners = tokio::task::JoinSet::new();
        for _ in 0..self.options.concurrency {
            let scanner = Scanner {
                source: self.source.clone(),
                throttle: throttle.clone(),
                metrics: self.metrics.clone(),
                retrier: retrier(),
                batch_size,
                renamer: self.renamer.clone(),
            };
            let queue = queue.clone();
            let pending = pending.clone();
            let tx = batch_tx.clone();
            let mut cancel = cancel.clone();
            let mut abort = abort_rx.clone();
            scanners.spawn(async move {
                while let Some(id) = queue.next() {
                    let (_, spec, cursor) =
                        pending.iter().find(|(i, _, _)| *i == id).expect("queued shard is pending").clone();
                    // Either signal stops the scan: a graceful stop or a fatal writer error.
                    let mut stop = merge(&mut cancel, &mut abort);
                    match scanner.scan_shard(id, &spec, cursor, &tx, &mut stop, &mut abort).await? {
                        ScanEnd::Done => {}
                        ScanEnd::Cancelled => break,
                    }
                }
                anyhow::Ok(())
            });
        }
        drop(batch_tx);

        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..self.options.concurrency {
            let writer = Writer {
                dropped_fields: self.dropped_fields.get().cloned().unwrap_or_default(),
                sink: self.sink.clone(),
                source_name: source_name.clone(),
                dead_letter: dead_letter.clone(),
                metrics: self.metrics.clone(),
                retrier: retrier(),
            };
            let rx = batch_rx.clone();
            let acks = ack_tx.clone();
            let mut abort = abort_rx.clone();
            let mut cancel = cancel.clone();
            writers.spawn(async move {
                // On a graceful stop, batches already read are still written; only a
                // store that needs retrying is given up on (the batch stays unacknowledged,
                // so the checkpoint never passes it).
                let mut stop = merge(&mut cancel, &mut abort);
                loop {
                    let batch = tokio::select! {
                        b = async { rx.lock().await.recv().await } => b,
                        _ = abort.wait_for(|aborted| *aborted) => return anyhow::Ok(()),
                    };
                    let Some(batch) = batch else { return anyhow::Ok(()) };
                    if *abort.borrow() {
                        return Ok(());
                    }
                    match writer.write(&batch, &mut stop).await {
                        Ok(counts) => {
                            let records = batch.rows();
                            let ack = Ack {
                                shard: batch.shard,
                                seq: batch.seq,
                                cursor: batch.cursor,
                                last: batch.last,
                                records,
                                counts,
                            };
                            if acks.send(ack).await.is_err() {
                                return Ok(());
                            }
                        }
                        Err(WriteError::Cancelled) => return Ok(()),
                        Err(WriteError::Fatal(msg)) => anyhow::bail!(msg),
                    }
                }
            });
        }
        drop(ack_tx);
        // Only the writers hold the receiver: once they are all gone, a scanner waiting
        // to send learns it at once instead of waiting forever for a slot.
        drop(batch_rx);

        // The checkpoint keeper: advances each shard's low-water mark and saves the
        // checkpoint at most once per interval, and once more at the end.
        let keeper = {
            let shared = shared.clone();
            let metrics = self.metrics.clone();
            let interval = self.options.checkpoint_interval;
            let progress = progress.clone();
            let store = FileCheckpoint::new(store.path());
            tokio::spawn(async move {
                let mut marks: std::collections::HashMap<usize, LowWater> = Default::default();
                let mut last_save = Instant::now();
                let mut dirty = false;
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        ack = ack_rx.recv() => {
                            let Some(ack) = ack else { break };
                            let mut cp = shared.lock().unwrap();
                            if let Some(adv) = marks.entry(ack.shard).or_default().ack(ack.seq, ack.cursor, ack.last, ack.records, ack.counts) {
                                add_counts(&mut cp.totals, &adv.counts);
                                cp.totals.scanned += adv.records;
                                let shard = cp.shards.iter_mut().find(|s| s.id == ack.shard).expect("acked shard exists");
                                if adv.cursor.is_some() { shard.cursor = adv.cursor; }
                                shard.done |= adv.done;
                                shard.settled += adv.records;
                                dirty = true;
                            }
                            progress.set(cp.totals.scanned);
                        }
                        _ = tick.tick() => {}
                    }
                    metrics.checkpoint_age_seconds.set(last_save.elapsed().as_secs_f64());
                    if dirty && last_save.elapsed() >= interval {
                        let snapshot = {
                            let mut cp = shared.lock().unwrap();
                            cp.updated_at = Utc::now();
                            cp.clone()
                        };
                        store.save(&snapshot)?;
                        metrics.checkpoint_writes_total.inc();
                        last_save = Instant::now();
                        dirty = false;
                    }
                    let cp = shared.lock().unwrap();
                    progress.update_metrics(&metrics, cp.totals.scanned, cp.estimated_total);
                }
                anyhow::Ok(())
            })
        };

        // Wait for the scanners, the writers and the checkpoint keeper. A fatal error in
        // any of them (a store that fails for good, a checkpoint that cannot be saved)
        // aborts the others at once. After the stop signal or a fatal error, the tasks
        // still busy get `stop_timeout`; then they are abandoned (a store that hangs), so
        // that the process exits within Kubernetes' grace period. An abandoned batch was
        // never acknowledged, so the checkpoint saved below does not pass it.
        let mut keeper = keeper;
        let mut failure: Option<anyhow::Error> = None;
        let mut scanners_left = true;
        let mut writers_left = true;
        let mut keeper_left = true;
        let mut stop_watch = cancel.clone();
        let mut stop_watch_open = true;
        let mut stop_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let mut abandoned = false;
        while scanners_left || writers_left || keeper_left {
            let fatal: Option<anyhow::Error> = tokio::select! {
                r = scanners.join_next(), if scanners_left => match r {
                    None => { scanners_left = false; None }
                    Some(Ok(Ok(()))) => None,
                    Some(Err(e)) if abandoned && e.is_cancelled() => None,
                    Some(Ok(Err(e))) => Some(e),
                    Some(Err(e)) => Some(anyhow::anyhow!("scanner task failed: {e}")),
                },
                r = writers.join_next(), if writers_left => match r {
                    None => { writers_left = false; None }
                    Some(Ok(Ok(()))) => None,
                    Some(Err(e)) if abandoned && e.is_cancelled() => None,
                    Some(Ok(Err(e))) => Some(e),
                    Some(Err(e)) => Some(anyhow::anyhow!("writer task failed: {e}")),
                },
                r = &mut keeper, if keeper_left => {
                    keeper_left = false;
                    match r {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(e) => Some(anyhow::anyhow!("checkpoint task failed: {e}")),
                    }
                },
                r = stop_watch.changed(), if stop_watch_open && stop_deadline.is_none() => {
                    if r.is_err() {
                        stop_watch_open = false;
                    } else if *stop_watch.borrow() {
                        stop_deadline = Some(Box::pin(tokio::time::sleep(self.options.stop_timeout)));
                    }
                    None
                },
                _ = async { stop_deadline.as_mut().expect("guarded").await }, if stop_deadline.is_some() && !abandoned => {
                    abandoned = true;
                    tracing::warn!(
                        stop_timeout_seconds = self.options.stop_timeout.as_secs_f64(),
                        "batches still in flight after migration.stopTimeout; abandoning them (they are not acknowledged, so the next run copies them again)"
                    );
                    scanners.abort_all();
                    writers.abort_all();
                    None
                },
            };
            match fatal {
                Some(e) if failure.is_none() => {
                    tracing::error!(error = %format!("{e:#}"), "fatal error; stopping the scanners and writers (within migration.stopTimeout)");
                    failure = Some(e);
                    abort_tx.send_replace(true);
                    stop_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(self.options.stop_timeout)));
                }
                Some(e) => tracing::warn!(error = %format!("{e:#}"), "another error while stopping"),
                None => {}
            }
        }
        progress.finish();

        let mut cp = shared.lock().unwrap().clone();
        let complete = cp.is_complete();
        cp.updated_at = Utc::now();
        if complete && cp.completed_at.is_none() {
            cp.completed_at = Some(cp.updated_at);
        }
        let saved = store.save(&cp);
        if let Some(e) = failure {
            self.metrics.set_phase("failed");
            let checkpoint = match saved {
                Ok(()) => format!("checkpoint saved at {}", store.path().display()),
                // The save writes a temporary file and renames it: the last checkpoint
                // saved is still whole, only older.
                Err(save) => format!("{save:#}; the last checkpoint saved at {} is intact", store.path().display()),
            };
            return Err(e.context(format!("backfill stopped; {checkpoint} (rerun the same command to resume)")));
        }
        saved?;
        self.metrics.checkpoint_writes_total.inc();
        self.metrics.checkpoint_age_seconds.set(0.0);
        if complete {
            bulk_load::rebuild_indexes(self.sink.as_ref(), &mut cp, &store, &self.metrics).await?;
            // What was written is visible to verify and to Temporal's list queries.
            self.sink.flush().await?;
        }
        Ok(Summary {
            totals: cp.totals,
            elapsed: started.elapsed(),
            complete,
            checkpoint_path: store.path().to_path_buf(),
        })
    }
}

fn add_counts(t: &mut Totals, c: &OutcomeCounts) {
    t.inserted += c.inserted;
    t.updated += c.updated;
    t.skipped_newer += c.skipped_newer;
    t.skipped_present += c.skipped_present;
    t.failed += c.failed;
    t.dead_letter += c.dead_letter;
    t.without_fields += c.without_fields;
}

/// A receiver that turns true when either input does.
fn merge(a: &mut watch::Receiver<bool>, b: &mut watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*a.borrow() || *b.borrow());
    let (mut a, mut b) = (a.clone(), b.clone());
    tokio::spawn(async move {
        loop {
            if *a.borrow() || *b.borrow() {
                tx.send_replace(true);
                return;
            }
            tokio::select! {
                r = a.changed() => if r.is_err() { return },
                r = b.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}
