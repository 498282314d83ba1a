//! Bulk-load mode (`migration.bulkLoad.deferIndexes`): until reads move to the
//! secondary, it needs only its primary key (Temporal's dual writes upsert by key), and
//! index upkeep dominates ingest into Temporal's schema. So the other indexes are
//! dropped before the copy and rebuilt after it, without blocking writes.
//! `deferRefresh` is the same for Elasticsearch: the "index" deferred is the index's
//! refresh interval and replica count, saved, turned off, and restored after the copy.
//!
//! Safe by construction: refused while the dynamic config shows any namespace reading
//! from the secondary; every definition is saved before its index is dropped, in the
//! store itself (PostgreSQL: the table `vismig_deferred_indexes`) and in the checkpoint;
//! whatever was dropped is rebuilt after the copy, or on the next start after a crash,
//! even if deferring has been turned off since. What runs comes from the store, never
//! from the checkpoint file: a checkpoint entry that differs from the store's copy is
//! refused before anything is dropped or built.

use std::time::Instant;

use super::checkpoint::{Checkpoint, DeferredIndex, FileCheckpoint};
use crate::config::Config;
use crate::flip::{Location, dynamic_config};
use crate::metrics::Metrics;
use crate::store::Sink;

/// The option that asked for a bulk load, for messages.
fn option(config: &Config) -> &'static str {
    if config.migration.bulk_load.defer_refresh {
        "migration.bulkLoad.deferRefresh"
    } else {
        "migration.bulkLoad.deferIndexes"
    }
}

/// Refuses unless the dynamic config is known and nobody reads from the secondary.
pub async fn guard(config: &Config) -> anyhow::Result<()> {
    let option = option(config);
    let Some(location) = Location::of(config) else {
        anyhow::bail!(
            "{option} needs migration.flip.dynamicConfigFile (Temporal's dynamic-config file) or migration.flip.target.configMap, to check that no namespace reads from the secondary while its indexes are deferred"
        );
    };
    let text = location.read().await.map_err(|e| anyhow::anyhow!("dynamic config: {e:#}"))?;
    let readers = dynamic_config::readers_of_secondary(&text)
        .map_err(|e| anyhow::anyhow!("dynamic config: {}: {e}", location.describe()))?;
    if !readers.is_empty() {
        anyhow::bail!(
            "{option} refused: {} in {} reads from the secondary ({}); list queries there need its indexes and fresh results. Turn the option off, or move reads back first",
            dynamic_config::READ_FROM_SECONDARY,
            location.describe(),
            readers.join(", ")
        );
    }
    Ok(())
}

/// Saves the secondary's index definitions in the checkpoint, then drops the indexes.
pub async fn defer_indexes(
    sink: &dyn Sink,
    cp: &mut Checkpoint,
    store: &FileCheckpoint,
    config: &Config,
) -> anyhow::Result<()> {
    if cp.deferred_indexes.iter().all(|d| d.dropped) && !cp.deferred_indexes.is_empty() {
        return Ok(());
    }
    guard(config).await?;
    if cp.deferred_indexes.is_empty() {
        let indexes = sink.deferrable_indexes().await?;
        cp.deferred_indexes =
            indexes.into_iter().map(|index| DeferredIndex { index, dropped: false, rebuilt: false }).collect();
        store.save(cp)?;
    }
    let to_drop: Vec<_> = cp.deferred_indexes.iter().filter(|d| !d.dropped).map(|d| d.index.clone()).collect();
    sink.check_deferred_indexes(&to_drop).await?;
    let started = Instant::now();
    for i in 0..cp.deferred_indexes.len() {
        if cp.deferred_indexes[i].dropped {
            continue;
        }
        sink.drop_index(&cp.deferred_indexes[i].index).await?;
        cp.deferred_indexes[i].dropped = true;
        store.save(cp)?;
    }
    tracing::info!(
        indexes = cp.deferred_indexes.len(),
        seconds = started.elapsed().as_secs_f64(),
        sink = %sink.describe(),
        "bulk load: dropped the secondary's indexes other than the primary key; their definitions are in the checkpoint and they are rebuilt after the copy"
    );
    Ok(())
}

/// Rebuilds every index a bulk load dropped and has not rebuilt yet.
pub async fn rebuild_indexes(
    sink: &dyn Sink,
    cp: &mut Checkpoint,
    store: &FileCheckpoint,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let pending: Vec<usize> = (0..cp.deferred_indexes.len())
        .filter(|&i| cp.deferred_indexes[i].dropped && !cp.deferred_indexes[i].rebuilt)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    // Every pending definition is checked against what the store saved before any is
    // built: a tampered checkpoint runs nothing at all.
    let indexes: Vec<_> = pending.iter().map(|&i| cp.deferred_indexes[i].index.clone()).collect();
    sink.check_deferred_indexes(&indexes).await?;
    metrics.set_phase("indexes");
    let started = Instant::now();
    tracing::info!(indexes = pending.len(), sink = %sink.describe(), "rebuilding the indexes the bulk load deferred (concurrently: writes go on)");
    for (n, i) in pending.iter().enumerate() {
        let t = Instant::now();
        sink.build_index(&cp.deferred_indexes[*i].index).await?;
        cp.deferred_indexes[*i].rebuilt = true;
        store.save(cp)?;
        tracing::info!(index = %cp.deferred_indexes[*i].index.name, seconds = t.elapsed().as_secs_f64(), done = n + 1, of = pending.len(), "index rebuilt");
    }
    tracing::info!(indexes = pending.len(), seconds = started.elapsed().as_secs_f64(), "all deferred indexes rebuilt");
    Ok(())
}
