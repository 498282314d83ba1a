//! The checkpoint keeper: takes the writers' acknowledgements, advances each shard's
//! low-water mark, and saves the checkpoint at most once per interval (the run saves it
//! once more when it ends).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;

use super::checkpoint::{Checkpoint, FileCheckpoint, NamespaceProgress};
use super::shards::{Advance, LowWater};
use super::writer::OutcomeCounts;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::store::Cursor;

/// Acknowledgement of one written batch, for the checkpoint keeper.
pub(super) struct Ack {
    pub shard: usize,
    pub seq: u64,
    pub cursor: Option<Cursor>,
    pub last: bool,
    pub records: u64,
    pub counts: OutcomeCounts,
}

pub(super) struct Keeper {
    /// The checkpoint the run settles into; the run reads it back when it ends.
    pub checkpoint: Arc<Mutex<Checkpoint>>,
    pub store: FileCheckpoint,
    pub metrics: Arc<Metrics>,
    pub progress: Progress,
    /// The shortest time between two saves.
    pub interval: Duration,
}

impl Keeper {
    /// Runs until every writer is gone (the acknowledgement channel closes). An error
    /// (the checkpoint cannot be saved) is fatal for the run.
    pub async fn run(self, mut acks: mpsc::Receiver<Ack>) -> anyhow::Result<()> {
        let mut marks: HashMap<usize, LowWater> = HashMap::new();
        let mut last_save = Instant::now();
        let mut dirty = false;
        // Per-namespace rates: what each had settled at the last save.
        let mut namespace_base = self.checkpoint.lock().unwrap().namespace_settled();
        // Wakes up now and then without acknowledgements, to save and report the age.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        // The health throttle's reason last saved: a change is saved even when no batch
        // moves (a pause), so that `vismig status` says why.
        let mut saved_throttle = self.checkpoint.lock().unwrap().throttle.clone();
        loop {
            tokio::select! {
                ack = acks.recv() => {
                    let Some(ack) = ack else { break };
                    let advance = marks.entry(ack.shard).or_default().ack(ack.seq, ack.cursor, ack.last, ack.records, ack.counts);
                    let mut cp = self.checkpoint.lock().unwrap();
                    if let Some(advance) = advance {
                        settle(&mut cp, ack.shard, advance);
                        dirty = true;
                    }
                    self.progress.set(cp.totals.scanned);
                }
                _ = tick.tick() => {}
            }
            self.metrics.checkpoint_age_seconds.set(last_save.elapsed().as_secs_f64());
            let throttle = self.checkpoint.lock().unwrap().throttle.clone();
            if (dirty || throttle != saved_throttle) && last_save.elapsed() >= self.interval {
                saved_throttle = throttle;
                self.save(&mut namespace_base, last_save.elapsed().as_secs_f64())?;
                last_save = Instant::now();
                dirty = false;
            }
            let cp = self.checkpoint.lock().unwrap();
            self.progress.update_metrics(&self.metrics, cp.totals.scanned, cp.estimated_total);
        }
        Ok(())
    }

    /// Saves the checkpoint with the current rates; `namespace_base` (each namespace's
    /// settled records at the last save, `seconds` ago) moves to now.
    fn save(&self, namespace_base: &mut BTreeMap<String, u64>, seconds: f64) -> anyhow::Result<()> {
        let snapshot = {
            let mut cp = self.checkpoint.lock().unwrap();
            cp.updated_at = Utc::now();
            cp.records_per_second = self.progress.rate();
            cp.update_namespace_rates(namespace_base, seconds);
            *namespace_base = cp.namespace_settled();
            cp.clone()
        };
        self.store.save(&snapshot)?;
        self.metrics.checkpoint_writes_total.inc();
        Ok(())
    }
}

/// Makes a shard's advance part of the checkpoint: its records and outcomes count as
/// settled (in the run's totals and in its namespace's progress), the shard resumes
/// after the new cursor (a batch without one, such as an empty last page, keeps the
/// old), and a shard whose last batch settled is done.
fn settle(cp: &mut Checkpoint, shard: usize, advance: Advance) {
    cp.totals.outcomes.add(&advance.counts);
    cp.totals.scanned += advance.records;
    let state = cp.shards.iter_mut().find(|s| s.id == shard).expect("acked shard exists");
    if advance.cursor.is_some() {
        state.cursor = advance.cursor;
    }
    state.done |= advance.done;
    state.settled += advance.records;
    if let Some(namespace) = state.spec.namespace_id() {
        match cp.namespace_progress.get_mut(namespace) {
            Some(p) => p.settled += advance.records,
            None => {
                let p = NamespaceProgress { settled: advance.records, ..Default::default() };
                cp.namespace_progress.insert(namespace.to_string(), p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::checkpoint::ShardState;
    use crate::store::{ShardSpec, Split};

    fn checkpoint() -> Checkpoint {
        let spec = |ns: &str| ShardSpec(serde_json::json!({ "namespaceId": ns }));
        let split = Split { per_process: 2, process_index: 0, process_count: 1 };
        let mut cp = Checkpoint::new("a".into(), "b".into(), vec![], split, 10, vec![spec("x"), spec("y")]);
        cp.shards[1] =
            ShardState { cursor: Some(Cursor(serde_json::json!("y-3"))), settled: 3, ..cp.shards[1].clone() };
        cp
    }

    #[test]
    fn an_advance_settles_its_records_and_moves_the_cursor() {
        let mut cp = checkpoint();
        let counts = OutcomeCounts { inserted: 4, skipped_newer: 1, dead_letter: 1, ..Default::default() };
        settle(&mut cp, 1, Advance { cursor: Some(Cursor(serde_json::json!("y-8"))), done: false, records: 5, counts });
        let shard = &cp.shards[1];
        assert_eq!(
            (shard.cursor.clone(), shard.settled, shard.done),
            (Some(Cursor(serde_json::json!("y-8"))), 8, false)
        );
        assert_eq!((cp.totals.scanned, cp.totals.outcomes), (5, counts));
        assert_eq!(cp.shards[0].settled, 0, "other shards unchanged");
    }

    #[test]
    fn a_last_batch_without_a_cursor_finishes_the_shard_where_it_was() {
        let mut cp = checkpoint();
        settle(&mut cp, 1, Advance { cursor: None, done: true, records: 0, counts: OutcomeCounts::default() });
        let shard = &cp.shards[1];
        assert_eq!(
            (shard.cursor.clone(), shard.settled, shard.done),
            (Some(Cursor(serde_json::json!("y-3"))), 3, true)
        );
        assert!(!cp.is_complete(), "shard 0 is still pending");
    }
}
