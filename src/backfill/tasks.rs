//! Starting the run's tasks: the scanners (each takes shards from the queue until it is
//! empty), the writers (each takes batches from the channel until it closes) and the
//! checkpoint keeper, wired by the channels between them.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::Backfill;
use super::checkpoint::{Checkpoint, FileCheckpoint};
use super::dead_letter::DeadLetter;
use super::keeper::{Ack, Keeper};
use super::retry::Retrier;
use super::scanner::{ScanEnd, Scanner};
use super::shards::ShardQueue;
use super::throttle::Throttle;
use super::writer::{Batch, WriteError, Writer};
use crate::progress::Progress;
use crate::store::{Cursor, ShardSpec};

pub(super) type Tasks = JoinSet<anyhow::Result<()>>;

/// A shard still to scan: its id, what it covers, and the cursor to resume after.
pub(super) type PendingShard = (usize, ShardSpec, Option<Cursor>);

/// The two stop signals every scanner and writer watches.
#[derive(Clone)]
pub(super) struct Stops {
    /// A graceful stop (a signal): no new reads; the batches already read are written.
    pub cancel: watch::Receiver<bool>,
    /// A fatal error: everything stops at once.
    pub abort: watch::Receiver<bool>,
}

impl Backfill {
    fn retrier(&self) -> Retrier {
        Retrier { policy: self.options.retry.clone(), control: self.control.clone(), metrics: self.metrics.clone() }
    }

    /// One scanner per unit of concurrency; they share the queue of pending shards.
    /// `batches` is dropped when they are all started, so the channel closes when the
    /// last scanner ends.
    pub(super) fn start_scanners(
        &self,
        pending: Vec<PendingShard>,
        batch_size: usize,
        batches: mpsc::Sender<Batch>,
        stops: &Stops,
        samples: &Arc<super::health::Samples>,
    ) -> Tasks {
        let throttle =
            Arc::new(Throttle::new(self.control.clone(), self.metrics.clone(), self.options.burst, batch_size));
        let queue = Arc::new(ShardQueue::new(pending.iter().map(|(id, _, _)| *id)));
        let pending = Arc::new(pending);
        let mut scanners = JoinSet::new();
        for _ in 0..self.options.concurrency {
            let scanner = Scanner {
                source: self.source.clone(),
                throttle: throttle.clone(),
                metrics: self.metrics.clone(),
                retrier: self.retrier(),
                batch_size,
                renamer: self.renamer.clone(),
                samples: samples.clone(),
            };
            let (queue, pending, tx, mut stops) = (queue.clone(), pending.clone(), batches.clone(), stops.clone());
            scanners.spawn(async move {
                while let Some(id) = queue.next() {
                    let (_, spec, cursor) =
                        pending.iter().find(|(i, _, _)| *i == id).expect("queued shard is pending").clone();
                    // Either signal stops the scan: a graceful stop or a fatal writer error.
                    let mut stop = merge(&mut stops.cancel, &mut stops.abort);
                    match scanner.scan_shard(id, &spec, cursor, &tx, &mut stop, &mut stops.abort).await? {
                        ScanEnd::Done => {}
                        ScanEnd::Cancelled => break,
                    }
                }
                anyhow::Ok(())
            });
        }
        scanners
    }

    /// One writer per unit of concurrency, all taking from `batches` and acknowledging
    /// into `acks`. Both ends are dropped when they are all started: only the writers
    /// hold them, so a scanner waiting to send learns at once that the writers are gone
    /// instead of waiting forever for a slot, and the keeper's channel closes when the
    /// last writer ends.
    pub(super) fn start_writers(
        &self,
        batches: mpsc::Receiver<Batch>,
        acks: mpsc::Sender<Ack>,
        stops: &Stops,
        samples: &Arc<super::health::Samples>,
    ) -> Tasks {
        let batches = Arc::new(tokio::sync::Mutex::new(batches));
        let dead_letter = Arc::new(DeadLetter::new(&self.config.migration.dead_letter.path));
        let source_name = self.source.describe();
        let mut writers = JoinSet::new();
        for _ in 0..self.options.concurrency {
            let writer = Writer {
                dropped_fields: self.dropped_fields.get().cloned().unwrap_or_default(),
                sink: self.sink.clone(),
                source_name: source_name.clone(),
                dead_letter: dead_letter.clone(),
                metrics: self.metrics.clone(),
                retrier: self.retrier(),
                names: self.names.clone(),
                samples: samples.clone(),
            };
            writers.spawn(write_batches(writer, batches.clone(), acks.clone(), stops.clone()));
        }
        writers
    }

    /// The checkpoint keeper over `checkpoint`, fed by the writers' acknowledgements.
    pub(super) fn start_keeper(
        &self,
        checkpoint: Arc<Mutex<Checkpoint>>,
        acks: mpsc::Receiver<Ack>,
        store: &FileCheckpoint,
        progress: Progress,
    ) -> JoinHandle<anyhow::Result<()>> {
        let keeper = Keeper {
            checkpoint,
            store: FileCheckpoint::new(store.path()),
            metrics: self.metrics.clone(),
            progress,
            interval: self.options.checkpoint_interval,
        };
        tokio::spawn(keeper.run(acks))
    }
}

/// One writer's loop. On a graceful stop, batches already read are still written; only
/// a store that needs retrying is given up on (the batch stays unacknowledged, so the
/// checkpoint never passes it).
async fn write_batches(
    writer: Writer,
    batches: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>,
    acks: mpsc::Sender<Ack>,
    mut stops: Stops,
) -> anyhow::Result<()> {
    let mut stop = merge(&mut stops.cancel, &mut stops.abort);
    let abort = &mut stops.abort;
    loop {
        let batch = tokio::select! {
            b = async { batches.lock().await.recv().await } => b,
            _ = abort.wait_for(|aborted| *aborted) => return Ok(()),
        };
        let Some(batch) = batch else { return Ok(()) };
        if *abort.borrow() {
            return Ok(());
        }
        let counts = match writer.write(&batch, &mut stop).await {
            Ok(counts) => counts,
            Err(WriteError::Cancelled) => return Ok(()),
            Err(WriteError::Fatal(msg)) => anyhow::bail!(msg),
        };
        let records = batch.rows();
        let ack = Ack { shard: batch.shard, seq: batch.seq, cursor: batch.cursor, last: batch.last, records, counts };
        if acks.send(ack).await.is_err() {
            return Ok(());
        }
    }
}

/// A receiver that turns true when either input does.
pub(super) fn merge(a: &mut watch::Receiver<bool>, b: &mut watch::Receiver<bool>) -> watch::Receiver<bool> {
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

#[cfg(test)]
mod tests {
    use super::merge;
    use std::time::Duration;
    use tokio::sync::watch;

    #[tokio::test]
    async fn the_merged_stop_turns_true_with_either_input() {
        for which in 0..2 {
            let (a_tx, mut a) = watch::channel(false);
            let (b_tx, mut b) = watch::channel(false);
            let mut merged = merge(&mut a, &mut b);
            assert!(!*merged.borrow());
            if which == 0 {
                a_tx.send_replace(true)
            } else {
                b_tx.send_replace(true)
            };
            tokio::time::timeout(Duration::from_secs(5), merged.wait_for(|s| *s)).await.unwrap().unwrap();
        }
        let (_a_tx, mut a) = watch::channel(true);
        let (_b_tx, mut b) = watch::channel(false);
        assert!(*merge(&mut a, &mut b).borrow(), "already stopped");
    }
}
