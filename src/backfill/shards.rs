//! Shard bookkeeping: which shards are left to scan, and for each shard the low-water
//! mark across batches in flight. Writers finish batches out of order; the checkpoint
//! may only move past a batch once every earlier batch of that shard is acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use crate::store::Cursor;

/// The acknowledged prefix of one shard's batches.
#[derive(Debug, Default)]
pub struct LowWater {
    /// The sequence number of the next batch that must be acknowledged to advance.
    next: u64,
    /// Acknowledged batches waiting for an earlier one: seq -> (cursor, last batch?, records).
    waiting: BTreeMap<u64, (Option<Cursor>, bool, u64)>,
}

/// What an advance made durable: the new cursor, whether the shard is finished, and how
/// many records the newly contiguous batches held.
#[derive(Debug, PartialEq)]
pub struct Advance {
    pub cursor: Option<Cursor>,
    pub done: bool,
    pub records: u64,
}

impl LowWater {
    /// Records batch `seq` as acknowledged; returns the advance if the contiguous
    /// prefix grew.
    pub fn ack(&mut self, seq: u64, cursor: Option<Cursor>, last: bool, records: u64) -> Option<Advance> {
        self.waiting.insert(seq, (cursor, last, records));
        let mut advance: Option<Advance> = None;
        while let Some((cursor, last, records)) = self.waiting.remove(&self.next) {
            self.next += 1;
            let a = advance.get_or_insert(Advance { cursor: None, done: false, records: 0 });
            if cursor.is_some() {
                a.cursor = cursor;
            }
            a.done |= last;
            a.records += records;
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

    #[test]
    fn advances_only_over_contiguous_acks() {
        let mut lw = LowWater::default();
        assert_eq!(lw.ack(1, c("b"), false, 10), None, "batch 0 is still in flight");
        assert_eq!(lw.ack(2, c("c"), false, 10), None);
        assert_eq!(lw.in_flight(), 2);
        assert_eq!(lw.ack(0, c("a"), false, 10), Some(Advance { cursor: c("c"), done: false, records: 30 }));
        assert_eq!(lw.in_flight(), 0);
        assert_eq!(lw.ack(3, None, true, 0), Some(Advance { cursor: None, done: true, records: 0 }));
    }

    #[test]
    fn a_page_of_only_bad_rows_still_moves_the_cursor() {
        let mut lw = LowWater::default();
        let a = lw.ack(0, c("x"), false, 3).unwrap();
        assert_eq!(a.cursor, c("x"));
        assert_eq!(a.records, 3);
    }

    #[test]
    fn queue_hands_out_each_shard_once() {
        let q = ShardQueue::new([2, 0, 1]);
        assert_eq!((q.next(), q.next(), q.next(), q.next()), (Some(2), Some(0), Some(1), None));
    }
}
