//! The writer: one batch per round trip into the secondary, under the version guard.
//! Transient errors are retried with back-off. A batch the sink refuses for good is
//! split record by record so that only the records at fault go to the dead letter;
//! if every record is refused, the fault is the store's, not the data's, and the run
//! stops with its checkpoint intact instead of dead-lettering everything.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use tokio::sync::watch;

use super::dead_letter::{DeadLetter, DeadLetterEntry};
use super::retry::{Gave, Retrier};
use crate::metrics::Metrics;
use crate::record::VisibilityRecord;
use crate::store::{BadRow, Cursor, Sink, StoreError, WriteOutcome};

/// A page of one shard, on its way from the scanner to the writer.
pub struct Batch {
    pub shard: usize,
    pub seq: u64,
    pub records: Vec<VisibilityRecord>,
    pub bad_rows: Vec<BadRow>,
    pub cursor: Option<Cursor>,
    pub last: bool,
}

impl Batch {
    pub fn rows(&self) -> u64 {
        (self.records.len() + self.bad_rows.len()) as u64
    }
}

/// What became of the records of one batch, or (in the checkpoint's totals) of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeCounts {
    pub inserted: u64,
    pub updated: u64,
    pub skipped_newer: u64,
    pub skipped_present: u64,
    pub failed: u64,
    pub dead_letter: u64,
    /// Records written that held a value in a field the secondary's schema lacks
    /// (`migration.dropMissingFields`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub without_fields: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl OutcomeCounts {
    pub fn add(&mut self, other: &OutcomeCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.skipped_newer += other.skipped_newer;
        self.skipped_present += other.skipped_present;
        self.failed += other.failed;
        self.dead_letter += other.dead_letter;
        self.without_fields += other.without_fields;
    }
}

pub enum WriteError {
    Fatal(String),
    Cancelled,
}

pub struct Writer {
    pub sink: Arc<dyn Sink>,
    pub source_name: String,
    pub dead_letter: Arc<DeadLetter>,
    pub metrics: Arc<Metrics>,
    pub retrier: Retrier,
    /// Fields the secondary's schema lacks that preflight allowed to drop.
    pub dropped_fields: Vec<&'static str>,
    pub names: Arc<crate::names::NamespaceNames>,
    /// Write latencies for the health throttle.
    pub samples: Arc<super::health::Samples>,
}

/// The line for a write that gave up: the store named once, whether or not the store's
/// own message already names it.
fn writing_to(describe: &str, error: &dyn std::fmt::Display) -> String {
    let said = error.to_string();
    if said.starts_with(describe) {
        format!("writing to {said}")
    } else if said.contains(describe) {
        said
    } else {
        format!("writing to {describe}: {said}")
    }
}

impl Writer {
    pub async fn write(&self, batch: &Batch, cancel: &mut watch::Receiver<bool>) -> Result<OutcomeCounts, WriteError> {
        let started = Instant::now();
        let mut counts = OutcomeCounts::default();
        let mut letters: Vec<DeadLetterEntry> = batch.bad_rows.iter().map(|b| self.scan_letter(b)).collect();

        let outcomes = if batch.records.is_empty() {
            Vec::new()
        } else {
            match self.retrier.run("write", cancel, || self.sink.write(&batch.records)).await {
                Ok(outcomes) => outcomes,
                Err(Gave::Cancelled) => return Err(WriteError::Cancelled),
                Err(Gave::Up(StoreError::Permanent(msg))) => self.isolate(&batch.records, &msg, cancel).await?,
                Err(Gave::Up(e)) => return Err(WriteError::Fatal(writing_to(&self.sink.describe(), &e))),
            }
        };
        if !batch.records.is_empty() {
            // Retries included: a store that pushes back is as slow as its answers.
            self.samples.write(started.elapsed().as_secs_f64());
        }
        if outcomes.len() != batch.records.len() {
            return Err(WriteError::Fatal(format!(
                "{} returned {} outcomes for {} records",
                self.sink.describe(),
                outcomes.len(),
                batch.records.len()
            )));
        }
        for (record, outcome) in batch.records.iter().zip(&outcomes) {
            if matches!(outcome, WriteOutcome::Inserted | WriteOutcome::Updated)
                && self.dropped_fields.iter().any(|f| crate::store::schema::has_value(record, f))
            {
                counts.without_fields += 1;
            }
            match outcome {
                WriteOutcome::Inserted => counts.inserted += 1,
                WriteOutcome::Updated => counts.updated += 1,
                WriteOutcome::SkippedNewer => counts.skipped_newer += 1,
                WriteOutcome::SkippedPresent => counts.skipped_present += 1,
                WriteOutcome::Failed(reason) => {
                    counts.failed += 1;
                    letters.push(self.write_letter(record, reason));
                }
            }
            self.metrics.records_written_total.with_label_values(&[outcome.label()]).inc();
        }
        if !letters.is_empty() {
            // Durable before the batch is acknowledged: a record is either copied,
            // skipped for a newer one, or in this file.
            self.dead_letter.append(&letters).await.map_err(|e| WriteError::Fatal(format!("dead letter: {e}")))?;
            counts.dead_letter = letters.len() as u64;
            self.metrics.dead_letter_total.inc_by(counts.dead_letter);
            for l in &letters {
                tracing::warn!(stage = l.stage, namespace = %self.names.label(&l.namespace_id), run_id = %l.run_id, reason = %l.reason, file = %self.dead_letter.path().display(), "record sent to the dead letter");
            }
        }
        self.metrics.batch_write_seconds.observe(started.elapsed().as_secs_f64());
        Ok(counts)
    }

    /// Writes the records one by one after the batch was refused, to find the ones at fault.
    async fn isolate(
        &self,
        records: &[VisibilityRecord],
        batch_error: &str,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Vec<WriteOutcome>, WriteError> {
        tracing::warn!(records = records.len(), error = %batch_error, "batch refused; writing its records one by one to find the ones at fault");
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            // A batch of 500 refused records takes 500 round trips: stop between them
            // when the run is stopping (the batch stays unacknowledged).
            if *cancel.borrow() {
                return Err(WriteError::Cancelled);
            }
            match self.retrier.run("write", cancel, || self.sink.write(std::slice::from_ref(record))).await {
                Ok(mut o) if o.len() == 1 => outcomes.push(o.remove(0)),
                Ok(o) => {
                    return Err(WriteError::Fatal(format!(
                        "{} returned {} outcomes for 1 record",
                        self.sink.describe(),
                        o.len()
                    )));
                }
                Err(Gave::Cancelled) => return Err(WriteError::Cancelled),
                Err(Gave::Up(StoreError::Permanent(msg))) => outcomes.push(WriteOutcome::Failed(msg)),
                Err(Gave::Up(e)) => return Err(WriteError::Fatal(writing_to(&self.sink.describe(), &e))),
            }
        }
        if records.len() > 1 && outcomes.iter().all(|o| matches!(o, WriteOutcome::Failed(_))) {
            return Err(WriteError::Fatal(format!(
                "{} refused every record of a batch ({batch_error}); this looks like a store problem, not bad data",
                self.sink.describe()
            )));
        }
        Ok(outcomes)
    }

    fn scan_letter(&self, bad: &BadRow) -> DeadLetterEntry {
        let mut e =
            DeadLetterEntry::now("scan", self.source_name.clone(), bad.namespace_id.clone(), bad.run_id.clone());
        e.workflow_id = bad.workflow_id.clone();
        e.reason = bad.reason.clone();
        e.record = bad.raw.clone();
        self.metrics.errors_total.with_label_values(&["scan", "bad_row"]).inc();
        e
    }

    fn write_letter(&self, record: &VisibilityRecord, reason: &str) -> DeadLetterEntry {
        let mut e =
            DeadLetterEntry::now("write", self.sink.describe(), record.namespace_id.clone(), record.run_id.clone());
        e.workflow_id = Some(record.workflow_id.clone());
        e.reason = reason.to_string();
        e.record = record.to_json();
        self.metrics.errors_total.with_label_values(&["write", "refused"]).inc();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::writing_to;

    #[test]
    fn a_refused_write_names_the_store_once() {
        let store = "elasticsearch https://127.0.0.1:9202/vis (store secondary)";
        // The store's own message already names it (the Elasticsearch sink's context).
        let line = writing_to(store, &format!("{store}: bulk write: security_exception"));
        assert_eq!(line, format!("writing to {store}: bulk write: security_exception"));
        assert_eq!(line.matches("(store secondary)").count(), 1, "{line}");
        // A message that does not: named in front.
        assert_eq!(writing_to(store, &"connection reset"), format!("writing to {store}: connection reset"));
        // Named further in: said as it is.
        let inner = format!("bulk write to {store} refused");
        assert_eq!(writing_to(store, &inner), inner);
    }
}
