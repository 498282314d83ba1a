//! Writing a SQLite store: the guarded upsert with group commit (the batches of
//! concurrent shards share one transaction), the repair's overwrite, and deletes.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::codec::{Encoded, encode_record};
use super::schema::Schema;
use super::{MAX_BINDS, SqliteStore, push_key_join};
use crate::record::{RecordKey, VisibilityRecord};
use crate::store::sql::outcome::{Existing, outcome, stored_version};
use crate::store::sql::query::on_conflict;
use crate::store::sql::{BASE_COLUMNS, classify};
use crate::store::{Sink, StoreError, StoreResult, WriteOutcome};

/// A batch handed to the writer, encoded, and where its outcomes go.
pub(super) struct WaitingBatch {
    rows: Vec<Encoded>,
    done: tokio::sync::oneshot::Sender<StoreResult<Vec<WriteOutcome>>>,
}

#[async_trait]
impl Sink for SqliteStore {
    async fn delete(&self, keys: &[RecordKey]) -> StoreResult<u64> {
        self.schema().await?;
        let mut deleted = 0;
        for chunk in keys.chunks(MAX_BINDS / 2) {
            // A plain DELETE: the FTS triggers remove the row's tokens.
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("DELETE FROM executions_visibility WHERE rowid IN (SELECT e.rowid FROM ");
            push_key_join(&mut q, chunk.iter().map(|k| (k.namespace_id.as_str(), k.run_id.as_str())));
            q.push(")");
            deleted += q
                .build()
                .persistent(false)
                .execute(&self.writer)
                .await
                .map_err(|e| classify(&self.context("deleting"), e))?
                .rows_affected();
        }
        Ok(deleted)
    }

    fn max_batch(&self) -> usize {
        // One transaction per batch, split into statements under the bind limit: with
        // Temporal's ~60 indexes, every commit rewrites the index pages it touched, so
        // larger transactions write far less.
        10_000
    }

    /// Group commit: the batches of concurrent shards that wait while a transaction is
    /// being written go into the next transaction together. Each commit of Temporal's
    /// schema rewrites every index page it touched (~60 indexes), so fewer, larger
    /// transactions write far less; no batch waits for more records than are already
    /// in flight, and each still gets its own outcomes only once they are durable.
    async fn write(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>> {
        let schema = self.schema().await?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // Encoded before queueing: the batch is owned by whichever task writes it, and
        // the encoding is done outside the writer's turn.
        let rows = records.iter().map(encode_record).collect();
        let (done, mut outcome) = tokio::sync::oneshot::channel();
        self.waiting.lock().expect("waiting batches").push(WaitingBatch { rows, done });
        let turn = self.committer.lock().await;
        // The task before us may have written this batch with its group.
        if let Ok(result) = outcome.try_recv() {
            return result;
        }
        let group = std::mem::take(&mut *self.waiting.lock().expect("waiting batches"));
        self.write_group(schema, group).await;
        drop(turn);
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Transient(self.context("writing a batch: the writer stopped before its commit")))
        })
    }

    /// Repairs are few and rare: their own transaction, in the writer's turn, outside the
    /// group commit (whose batches keep Temporal's strict guard).
    async fn overwrite(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>> {
        let schema = self.schema().await?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<Encoded> = records.iter().map(encode_record).collect();
        let _turn = self.committer.lock().await;
        let mut outcomes = self.write_transaction(schema, &[&rows], true).await?;
        Ok(outcomes.remove(0))
    }
}

impl SqliteStore {
    async fn write_group(&self, schema: Schema, group: Vec<WaitingBatch>) {
        if group.len() > 1 {
            let batches: Vec<&[Encoded]> = group.iter().map(|b| b.rows.as_slice()).collect();
            match self.write_transaction(schema, &batches, false).await {
                Ok(outcomes) => {
                    for (batch, outcome) in group.into_iter().zip(outcomes) {
                        let _ = batch.done.send(Ok(outcome));
                    }
                    return;
                }
                // Rolled back: each batch again on its own, so that only the batch at
                // fault sees the error (and the writer isolates its records).
                Err(e) => {
                    tracing::debug!(error = %e, batches = group.len(), "group commit failed; writing its batches one by one")
                }
            }
        }
        for batch in group {
            let result = self.write_transaction(schema, &[&batch.rows], false).await.map(|mut o| o.remove(0));
            let _ = batch.done.send(result);
        }
    }

    /// Writes the batches in one transaction; their outcomes, batch by batch.
    /// `same_version` lets a row replace one at its own version too (repair).
    async fn write_transaction(
        &self,
        schema: Schema,
        batches: &[&[Encoded]],
        same_version: bool,
    ) -> StoreResult<Vec<Vec<WriteOutcome>>> {
        let ctx = || self.context("writing a batch");
        // IMMEDIATE takes the write lock up front, so the versions read below cannot
        // change before the upsert: the per-record outcomes are exact.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| classify(&ctx(), e))?;
        let mut outcomes = Vec::with_capacity(batches.len());
        for rows in batches {
            let existing = existing_versions(&mut tx, rows, schema).await.map_err(|e| classify(&ctx(), e))?;
            upsert(&mut tx, rows, &existing, schema, same_version).await.map_err(|e| classify(&ctx(), e))?;
            let replaces_same = same_version && schema.has_version;
            let version = |r: &Encoded| if schema.has_version { r.version } else { 0 };
            outcomes.push(
                rows.iter().map(|r| outcome(existing.get(&key(r)), version(r), replaces_same)).collect::<Vec<_>>(),
            );
        }
        tx.commit().await.map_err(|e| classify(&ctx(), e))?;
        self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(outcomes)
    }
}

fn key(r: &Encoded) -> (String, String) {
    (r.namespace_id.clone(), r.run_id.clone())
}

/// Existing `_version` per key (0 where the column does not exist), or why it cannot
/// be read (a text value in a file edited by hand): such a row is left as it is.
async fn existing_versions(conn: &mut SqliteConnection, rows: &[Encoded], schema: Schema) -> sqlx::Result<Existing> {
    let mut found = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(MAX_BINDS / 2) {
        let version = if schema.has_version { "e._version" } else { "0" };
        // The key comes from the bound values (our own text), never decoded from the row.
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!("SELECT k.column1, k.column2, {version} FROM "));
        push_key_join(&mut q, chunk.iter().map(|r| (r.namespace_id.as_str(), r.run_id.as_str())));
        for row in q.build().persistent(false).fetch_all(&mut *conn).await? {
            found.insert((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?), stored_version(&row, 2));
        }
    }
    Ok(found)
}

/// The upsert of the rows under Temporal's guard, in statements under the bind limit.
/// A row whose stored version cannot be read is not written at all.
async fn upsert(
    conn: &mut SqliteConnection,
    rows: &[Encoded],
    existing: &Existing,
    schema: Schema,
    same_version: bool,
) -> sqlx::Result<()> {
    let columns: Vec<&str> = BASE_COLUMNS.iter().copied().filter(|c| schema.columns.has(c)).collect();
    let writable: Vec<&Encoded> = rows.iter().filter(|r| !matches!(existing.get(&key(r)), Some(Err(_)))).collect();
    let conflict = on_conflict(&columns, schema.has_version, same_version);
    for chunk in writable.chunks(MAX_BINDS / BASE_COLUMNS.len()) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("INSERT INTO executions_visibility ({}) ", columns.join(", ")));
        q.push_values(chunk, |mut b, row| row.push_binds(&mut b, &columns));
        q.push(&conflict);
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}
