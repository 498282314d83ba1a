//! Where a run starts: the saved checkpoint when it belongs to this run (same stores,
//! namespaces and split, shards the source can still resume), else a new plan of
//! shards, saved before the first read.

use super::Backfill;
use super::checkpoint::{Checkpoint, FileCheckpoint};

impl Backfill {
    /// The checkpoint to continue from, or a new one for a first run.
    pub(super) async fn resume_or_plan(&self, store: &FileCheckpoint) -> anyhow::Result<Checkpoint> {
        match store.load()? {
            Some(cp) => self.resume(cp, store),
            None => self.plan(store).await,
        }
    }

    /// Refuses a saved checkpoint this run cannot resume: another run's (other stores,
    /// namespaces or split), or shards the source can no longer scan as they are.
    pub fn check_resumable(&self, cp: &Checkpoint, store: &FileCheckpoint) -> anyhow::Result<()> {
        let namespaces = &self.config.migration.namespaces;
        cp.matches(&self.source.describe(), &self.sink.describe(), namespaces, &self.options.split).map_err(|diff| {
            anyhow::anyhow!(
                "checkpoint {} belongs to another run ({diff}); restore that config, or move the checkpoint away to start over",
                store.path().display()
            )
        })?;
        let specs: Vec<_> = cp.shards.iter().map(|s| s.spec.clone()).collect();
        self.source
            .check_resume(&specs, &self.options.split)
            .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", store.path().display()))
    }

    fn resume(&self, cp: Checkpoint, store: &FileCheckpoint) -> anyhow::Result<Checkpoint> {
        self.check_resumable(&cp, store)?;
        let pending = cp.shards.iter().filter(|s| !s.done).count();
        tracing::info!(checkpoint = %store.path().display(), shards = cp.shards.len(), pending, settled = cp.totals.scanned, "resuming from checkpoint");
        for s in cp.shards.iter().filter(|s| !s.done && s.cursor.is_some()) {
            tracing::info!(shard = s.id, cursor = %s.cursor.as_ref().map(|c| c.0.to_string()).unwrap_or_default(), spec = %s.spec.0, "resuming shard after cursor");
        }
        Ok(cp)
    }

    /// The checkpoint a first run starts from: the source's shards and its estimate of
    /// this process's records. Not saved yet.
    pub async fn new_checkpoint(&self) -> anyhow::Result<Checkpoint> {
        let namespaces = &self.config.migration.namespaces;
        let split = &self.options.split;
        let specs = self.source.plan_shards(namespaces, split).await?;
        let estimate = self.source.estimate(namespaces).await?;
        Ok(Checkpoint::new(
            self.source.describe(),
            self.sink.describe(),
            namespaces.clone(),
            split.clone(),
            process_share(estimate, split.parts() as u64, split.process_count as u64),
            specs,
        ))
    }

    async fn plan(&self, store: &FileCheckpoint) -> anyhow::Result<Checkpoint> {
        let cp = self.new_checkpoint().await?;
        store.save(&cp)?;
        tracing::info!(checkpoint = %store.path().display(), shards = cp.shards.len(), estimated_records = cp.estimated_total, "starting a new backfill");
        Ok(cp)
    }
}

/// This process's share of the records estimated in all: the whole is split into `parts`
/// shards, of which each of the `processes` scans `parts / processes`.
fn process_share(estimate: u64, parts: u64, processes: u64) -> u64 {
    estimate * (parts / processes.max(1)) / parts.max(1)
}

#[cfg(test)]
mod tests {
    use super::process_share;

    #[test]
    fn each_process_expects_its_share_of_the_estimate() {
        assert_eq!(process_share(1000, 4, 1), 1000);
        assert_eq!(process_share(1000, 8, 4), 250);
        assert_eq!(process_share(1000, 0, 0), 0, "no parts: nothing expected, no division by zero");
    }
}
