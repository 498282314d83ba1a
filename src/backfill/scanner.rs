//! The scanner: reads one shard of the primary in key order, a page at a time, through
//! the throttle, and hands each page to the writers with its sequence number and the
//! cursor after it.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::retry::{Gave, Retrier};
use super::throttle::Throttle;
use super::writer::Batch;
use crate::attribute_names::Renamer;
use crate::metrics::Metrics;
use crate::store::{BadRow, Cursor, ShardSpec, Source};

pub struct Scanner {
    pub source: Arc<dyn Source>,
    pub throttle: Arc<Throttle>,
    pub metrics: Arc<Metrics>,
    pub retrier: Retrier,
    pub batch_size: usize,
    /// Search-attribute names for the sink's family; a record it cannot rename goes
    /// to the dead letter with the reason, like a row the source could not read.
    pub renamer: Arc<Renamer>,
    /// Read latencies for the health throttle.
    pub samples: Arc<super::health::Samples>,
}

pub enum ScanEnd {
    Done,
    Cancelled,
}

impl Scanner {
    /// Scans `shard` from `cursor` to its end. Errors are fatal for the run (transient
    /// ones have been retried already). `cancel` stops new reads (a graceful stop or a
    /// fatal error); `abort` (a fatal error only) also gives up a batch already read that
    /// is waiting for a writer: the writers may be gone, and it is not acknowledged, so
    /// dropping it loses nothing.
    pub async fn scan_shard(
        &self,
        shard: usize,
        spec: &ShardSpec,
        mut cursor: Option<Cursor>,
        tx: &mpsc::Sender<Batch>,
        cancel: &mut watch::Receiver<bool>,
        abort: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<ScanEnd> {
        let mut seq = 0u64;
        loop {
            // Charge the rate limit before reading, so reads of the primary are limited too.
            if !self.throttle.acquire(self.batch_size, cancel).await {
                return Ok(ScanEnd::Cancelled);
            }
            let started = Instant::now();
            let page = match self
                .retrier
                .run("scan", cancel, || self.source.scan(spec, cursor.as_ref(), self.batch_size))
                .await
            {
                Ok(page) => page,
                Err(Gave::Cancelled) => return Ok(ScanEnd::Cancelled),
                Err(Gave::Up(e)) => anyhow::bail!("reading shard {shard} of {}: {e}", self.source.describe()),
            };
            self.metrics.batch_scan_seconds.observe(started.elapsed().as_secs_f64());
            self.samples.read(started.elapsed().as_secs_f64());
            let rows = (page.records.len() + page.bad_rows.len()) as u64;
            self.metrics.records_scanned_total.inc_by(rows);
            if page.cursor.is_some() {
                cursor = page.cursor.clone();
            }
            let (records, bad_rows) = self.rename(page.records, page.bad_rows);
            let batch = Batch { shard, seq, records, bad_rows, cursor: page.cursor, last: page.done };
            seq += 1;
            let sent = tokio::select! {
                r = tx.send(batch) => r.is_ok(),
                _ = abort.wait_for(|aborted| *aborted) => false,
            };
            if !sent {
                // The run is failing (the writers are gone, or stopping); stop quietly.
                return Ok(ScanEnd::Cancelled);
            }
            if page.done {
                return Ok(ScanEnd::Done);
            }
        }
    }

    fn rename(
        &self,
        records: Vec<crate::record::VisibilityRecord>,
        mut bad_rows: Vec<BadRow>,
    ) -> (Vec<crate::record::VisibilityRecord>, Vec<BadRow>) {
        if self.renamer.is_identity() {
            return (records, bad_rows);
        }
        let mut out = Vec::with_capacity(records.len());
        for mut r in records {
            match self.renamer.apply(&mut r) {
                Ok(()) => out.push(r),
                Err(reason) => bad_rows.push(BadRow {
                    namespace_id: r.namespace_id.clone(),
                    run_id: r.run_id.clone(),
                    workflow_id: Some(r.workflow_id.clone()),
                    reason,
                    raw: r.to_json(),
                }),
            }
        }
        (out, bad_rows)
    }
}
