//! Shard bookkeeping: which shards are left to scan, and for each shard the low-water
//! mark across batches in flight. Writers finish batches out of order; the checkpoint
//! may only move past a batch once every earlier batch of that shard is acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::writer::OutcomeCounts;
use crate::store::Cursor;

/// The acknowledged prefix of one shard's batches.
#[derive(Debug, Default)]
pub struct LowWater {
    /// The sequence number of the next batch that must be acknowledged to advance.
    next: u64,
    /// Acknowledged batches waiting for an earlier one: seq -> (cursor, last batch?,
    /// records, their outcomes).
    waiting: BTreeMap<u64, (Option<Cursor>, bool, u64, OutcomeCounts)>,
}

/// What an advance made durable: the new cursor, whether the shard is finished, how
/// many records the newly contiguous batches held, and their outcomes. Outcomes are
/// counted here, not when a batch is acknowledged, so that the checkpoint's totals
/// describe exactly the settled records: a batch acknowledged beyond the low-water
/// mark is copied again after a crash, and must not be counted twice.
#[derive(Debug, PartialEq)]
pub struct Advance {
    pub cursor: Option<Cursor>,
    pub done: bool,
    pub records: u64,
    pub counts: OutcomeCounts,
}

impl LowWater {
    /// Records batch `seq` as acknowledged; returns the advance if the contiguous
    /// prefix grew.
    pub fn ack(
        &mut self,
        seq: u64,
        cursor: Option<Cursor>,
        last: bool,
        records: u64,
        counts: OutcomeCounts,
    ) -> Option<Advance> {
        self.waiting.insert(seq, (cursor, last, records, counts));
        let mut advance: Option<Advance> = None;
        while let Some((cursor, last, records, counts)) = self.waiting.remove(&self.next) {
            self.next += 1;
            let a = advance.get_or_insert(Advance {
                cursor: None,
                done: false,
                records: 0,
                counts: OutcomeCounts::default(),
            });
            if cursor.is_some() {
                a.cursor = cursor;
            }
            a.done |= last;
            a.records += records;
            a.counts.add(&counts);
        }
        advance
    }

    pub fn in_flight(&self) -> usize {
        self.waiting.len()
    }
}

/// Shards not yet taken by a scanner, in plan order.
pub struct ShardQueue {
    pending: Mutex<VecDeque<usize>>,
}

impl ShardQueue {
    pub fn new(ids: impl IntoIterator<Item = usize>) -> Self {
        Self { pending: Mutex::new(ids.into_iter().collect()) }
    }

    pub fn next(&self) -> Option<usize> {
        self.pending.lock().unwrap().pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<Cursor> {
        Some(Cursor(serde_json::json!(s)))
    }

    fn inserted(n: u64) -> OutcomeCounts {
        OutcomeCounts { inserted: n, ..Default::default() }
    }

    #[test]
    fn advances_only_over_contiguous_acks() {
        let mut lw = LowWater::default();
        assert_eq!(lw.ack(1, c("b"), false, 10, inserted(10)), None, "batch 0 is still in flight");
        assert_eq!(lw.ack(2, c("c"), false, 10, inserted(10)), None);
        assert_eq!(lw.in_flight(), 2);
        assert_eq!(
            lw.ack(0, c("a"), false, 10, inserted(10)),
            Some(Advance { cursor: c("c"), done: false, records: 30, counts: inserted(30) })
        );
        assert_eq!(lw.in_flight(), 0);
        assert_eq!(
            lw.ack(3, None, true, 0, inserted(0)),
            Some(Advance { cursor: None, done: true, records: 0, counts: inserted(0) })
        );
    }

    #[test]
    fn outcomes_count_only_once_the_low_water_mark_passes_them() {
        let mut lw = LowWater::default();
        let skipped = OutcomeCounts { skipped_present: 4, dead_letter: 1, ..Default::default() };
        assert_eq!(lw.ack(1, c("b"), false, 5, skipped), None, "a crash now copies batch 1 again");
        let a = lw.ack(0, c("a"), false, 5, inserted(5)).unwrap();
        assert_eq!(a.counts, OutcomeCounts { inserted: 5, skipped_present: 4, dead_letter: 1, ..Default::default() });
    }

    #[test]
    fn a_page_of_only_bad_rows_still_moves_the_cursor() {
        let mut lw = LowWater::default();
        let a = lw.ack(0, c("x"), false, 3, OutcomeCounts::default()).unwrap();
        assert_eq!(a.cursor, c("x"));
        assert_eq!(a.records, 3);
    }

    #[test]
    fn queue_hands_out_each_shard_once() {
        let q = ShardQueue::new([2, 0, 1]);
        assert_eq!((q.next(), q.next(), q.next(), q.next()), (Some(2), Some(0), Some(1), None));
    }
}
