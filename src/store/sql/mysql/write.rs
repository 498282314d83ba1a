//! Writing a MySQL store: the guarded upsert of `executions_visibility` and its side
//! tables of search attributes in one transaction, its outcomes decided from the versions
//! it locked first, the repair's overwrite, and deletes from all three tables.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use async_trait::async_trait;
use sqlx::QueryBuilder;
use sqlx::mysql::{MySql, MySqlConnection};

use super::codec::{Encoded, encode_record};
use super::read::push_runs;
use super::schema::Schema;
use super::{MAX_BINDS, MysqlStore, by_namespace, key_of};
use crate::record::{RecordKey, VisibilityRecord};
use crate::store::sql::outcome::{Existing, outcome, stored_version};
use crate::store::sql::query::push_keys;
use crate::store::sql::rows::lossy;
use crate::store::sql::{BASE_COLUMNS, classify};
use crate::store::{Sink, StoreError, StoreResult, WriteOutcome};

#[async_trait]
impl Sink for MysqlStore {
    async fn delete(&self, keys: &[RecordKey]) -> StoreResult<u64> {
        if self.standard {
            return Err(StoreError::Permanent(self.context("pluginName mysql (standard visibility) can only be read")));
        }
        let schema = self.schema().await?;
        let ctx = || self.context("deleting");
        let mut deleted = 0;
        // Like Temporal's delete: all three tables in one transaction.
        let tables: Vec<&str> = std::iter::once("executions_visibility")
            .chain(schema.custom.map(|t| t.table))
            .chain(schema.chasm.map(|t| t.table))
            .collect();
        for chunk in keys.chunks(MAX_BINDS / 2) {
            let mut tx = self.pool.begin().await.map_err(|e| classify(&ctx(), e))?;
            for table in &tables {
                let mut q: QueryBuilder<MySql> =
                    QueryBuilder::new(format!("DELETE FROM {table} WHERE (namespace_id, run_id) IN ("));
                push_keys(&mut q, chunk.iter().map(|k| (k.namespace_id.as_str(), k.run_id.as_str())), "");
                q.push(")");
                let n = q
                    .build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify(&ctx(), e))?
                    .rows_affected();
                if *table == "executions_visibility" {
                    deleted += n;
                }
            }
            tx.commit().await.map_err(|e| classify(&ctx(), e))?;
        }
        Ok(deleted)
    }

    fn max_batch(&self) -> usize {
        MAX_BINDS / BASE_COLUMNS.len()
    }

    async fn write(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>> {
        self.write_guarded(records, false).await
    }

    async fn overwrite(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>> {
        self.write_guarded(records, true).await
    }
}

impl MysqlStore {
    /// The upsert of `write` (`same_version` false) and `overwrite` (true).
    async fn write_guarded(&self, records: &[VisibilityRecord], same_version: bool) -> StoreResult<Vec<WriteOutcome>> {
        if self.standard {
            return Err(StoreError::Permanent(self.context(
                "pluginName mysql is MySQL 5.7 standard visibility, which can only be read; write to Temporal's advanced schema with pluginName mysql8",
            )));
        }
        let schema = self.schema().await?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // Values MySQL cannot hold fail alone; the rest of the batch is written.
        let mut outcomes: Vec<Option<WriteOutcome>> = Vec::with_capacity(records.len());
        let mut rows: Vec<(usize, Encoded)> = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match encode_record(record, schema.statement_bytes) {
                Ok(row) => {
                    outcomes.push(None);
                    rows.push((i, row));
                }
                Err(reason) => outcomes.push(Some(WriteOutcome::Failed(reason))),
            }
        }
        if !rows.is_empty() {
            let written = self.write_rows(&rows, schema, same_version).await?;
            for ((i, _), outcome) in rows.iter().zip(written) {
                outcomes[*i] = Some(outcome);
            }
        }
        Ok(outcomes.into_iter().map(|o| o.expect("every record has an outcome")).collect())
    }

    /// Writes valid rows in one transaction: locks and reads the existing versions, upserts
    /// `executions_visibility` under the version guard, then the side tables of the rows
    /// that were written. Returns one outcome per row. `same_version` lets a row replace
    /// one at its own version too (repair).
    async fn write_rows(
        &self,
        rows: &[(usize, Encoded)],
        schema: Schema,
        same_version: bool,
    ) -> StoreResult<Vec<WriteOutcome>> {
        let replaces_same = same_version && schema.has_version;
        let ctx = || self.context("writing a batch");
        let mut tx = self.pool.begin().await.map_err(|e| classify(&ctx(), e))?;
        let all: Vec<&Encoded> = rows.iter().map(|(_, r)| r).collect();
        let current = existing_versions(&mut tx, &all, schema).await.map_err(|e| classify(&ctx(), e))?;
        let plan = WritePlan::of(&all, current, schema.has_version, replaces_same);
        let affected = upsert(&mut tx, &plan.to_write, schema, replaces_same).await.map_err(|e| classify(&ctx(), e))?;
        if !plan.affected.contains(&affected) {
            // A row absent when the versions were read was inserted by someone else (a
            // live dual write) before this upsert: the outcomes would be wrong. Nothing
            // is committed; the retry reads the versions again.
            drop(tx);
            return Err(StoreError::Transient(self.context(&format!(
                "a concurrent write changed rows of this batch while it was written ({affected} rows affected, {} expected); retrying",
                plan.affected.end()
            ))));
        }
        upsert_side_tables(&mut tx, &plan.to_write, schema).await.map_err(|e| classify(&ctx(), e))?;
        tx.commit().await.map_err(|e| classify(&ctx(), e))?;
        Ok(plan.outcomes)
    }
}

/// What the upsert of a batch does, decided from the versions it locked before.
struct WritePlan<'r> {
    outcomes: Vec<WriteOutcome>,
    /// The rows inserted or updated; the side tables follow them.
    to_write: Vec<&'r Encoded>,
    /// The rows affected the upsert may report if nothing else wrote meanwhile: an
    /// insert counts 1, an update 2, and a same-version update whose columns already hold
    /// these values 1 (the connection asks for found rows, CLIENT_FOUND_ROWS).
    affected: RangeInclusive<u64>,
}

impl<'r> WritePlan<'r> {
    fn of(rows: &[&'r Encoded], mut current: Existing, has_version: bool, replaces_same: bool) -> Self {
        let mut plan = WritePlan { outcomes: Vec::with_capacity(rows.len()), to_write: Vec::new(), affected: 0..=0 };
        let (mut least, mut most) = (0u64, 0u64);
        for row in rows {
            let version = if has_version { row.version } else { 0 };
            let key = key_of(&row.namespace_id, &row.run_id);
            let outcome = outcome(current.get(&key), version, replaces_same);
            match outcome {
                WriteOutcome::Inserted => {
                    least += 1;
                    most += 1;
                }
                WriteOutcome::Updated => {
                    least += if current.get(&key) == Some(&Ok(version)) { 1 } else { 2 };
                    most += 2;
                }
                _ => {}
            }
            if matches!(outcome, WriteOutcome::Inserted | WriteOutcome::Updated) {
                // MySQL applies the rows of a multi-row upsert one after the other, so a
                // key that appears twice (keys compare case-insensitively) sees the first
                // one's write.
                current.insert(key, Ok(version));
                plan.to_write.push(row);
            }
            plan.outcomes.push(outcome);
        }
        plan.affected = least..=most;
        plan
    }
}

/// Existing `_version` per key (0 where the column does not exist), locked until the
/// transaction ends so that the outcomes computed from them are exact.
async fn existing_versions(conn: &mut MySqlConnection, rows: &[&Encoded], schema: Schema) -> sqlx::Result<Existing> {
    let version = if schema.has_version { "_version" } else { "CAST(0 AS SIGNED)" };
    let mut found = HashMap::with_capacity(rows.len());
    for (namespace, runs) in by_namespace(rows.iter().map(|r| (&r.namespace_id, &r.run_id))) {
        for chunk in runs.chunks(MAX_BINDS - 1) {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!(
                "SELECT namespace_id, run_id, {version} FROM executions_visibility WHERE namespace_id = "
            ));
            push_runs(&mut q, &namespace, chunk);
            q.push(" FOR UPDATE");
            for row in q.build().persistent(false).fetch_all(&mut *conn).await? {
                // A `_version` that cannot be read (NULL: NOT NULL dropped by hand) might
                // be newer: such a row is left as it is.
                found.insert(key_of(&lossy(&row, 0), &lossy(&row, 1)), stored_version(&row, 2));
            }
        }
    }
    Ok(found)
}

/// Upserts `executions_visibility` in statements under the placeholder and byte limits;
/// the rows affected, as MySQL counts them.
async fn upsert(
    conn: &mut MySqlConnection,
    rows: &[&Encoded],
    schema: Schema,
    replaces_same: bool,
) -> sqlx::Result<u64> {
    let columns: Vec<&str> = BASE_COLUMNS.iter().copied().filter(|c| schema.columns.has(c)).collect();
    let upsert = on_duplicate_key(&columns, schema.has_version, replaces_same);
    let mut affected = 0u64;
    for chunk in statement_chunks(rows, columns.len(), schema.statement_bytes) {
        let mut q: QueryBuilder<MySql> =
            QueryBuilder::new(format!("INSERT INTO executions_visibility ({}) ", columns.join(", ")));
        q.push_values(chunk, |mut b, row| row.push_binds(&mut b, &columns));
        q.push(&upsert);
        affected += q.build().persistent(false).execute(&mut *conn).await?.rows_affected();
    }
    Ok(affected)
}

/// Temporal's guard: an equal or older version is a no-op (`replaces_same`: only an
/// older one), and `_version` is assigned last because MySQL applies the assignments left
/// to right. Without `_version`: insert-if-absent.
fn on_duplicate_key(columns: &[&str], has_version: bool, replaces_same: bool) -> String {
    if !has_version {
        return " ON DUPLICATE KEY UPDATE run_id = run_id".to_string();
    }
    let guard = if replaces_same { "<=" } else { "<" };
    let set: Vec<String> = columns
        .iter()
        .filter(|c| !matches!(**c, "namespace_id" | "run_id"))
        .map(|c| format!("{c} = IF(_version {guard} VALUES(_version), VALUES({c}), {c})"))
        .collect();
    format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "))
}

/// The side tables follow executions_visibility: the rows written there get the same
/// JSON and version. `<=` overwrites Temporal's insert-if-absent side rows (version 0)
/// and never a newer side row.
async fn upsert_side_tables(conn: &mut MySqlConnection, rows: &[&Encoded], schema: Schema) -> sqlx::Result<()> {
    for side in [schema.custom, schema.chasm].into_iter().flatten() {
        let (columns, update) = if side.has_version && schema.has_version {
            (
                "namespace_id, run_id, search_attributes, _version",
                " ON DUPLICATE KEY UPDATE search_attributes = IF(_version <= VALUES(_version), VALUES(search_attributes), search_attributes), \
                 _version = IF(_version <= VALUES(_version), VALUES(_version), _version)",
            )
        } else {
            (
                "namespace_id, run_id, search_attributes",
                " ON DUPLICATE KEY UPDATE search_attributes = VALUES(search_attributes)",
            )
        };
        let with_version = columns.ends_with("_version");
        for chunk in statement_chunks(rows, 4, schema.statement_bytes) {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!("INSERT INTO {} ({columns}) ", side.table));
            q.push_values(chunk, |mut b, row| {
                b.push_bind(&row.namespace_id).push_bind(&row.run_id).push_bind(&row.search_attributes);
                if with_version {
                    b.push_bind(row.version);
                }
            });
            q.push(update);
            q.build().persistent(false).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Rows split so that no statement exceeds the placeholder limit or `max_bytes`.
fn statement_chunks<'a>(rows: &'a [&'a Encoded], binds_per_row: usize, max_bytes: usize) -> Vec<&'a [&'a Encoded]> {
    let max_rows = MAX_BINDS / binds_per_row;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let size = row.size();
        if i > start && (i - start == max_rows || bytes + size > max_bytes) {
            out.push(&rows[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::codec::tests::record;
    use super::super::schema::MAX_STATEMENT_BYTES;
    use super::*;

    #[test]
    fn statements_stay_under_the_placeholder_and_byte_limits() {
        let r = encode_record(&record(), MAX_STATEMENT_BYTES).unwrap();
        let rows: Vec<&Encoded> = std::iter::repeat_n(&r, 7_000).collect();
        let chunks = statement_chunks(&rows, 21, usize::MAX);
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [3120, 3120, 760]);
        assert!(chunks.iter().all(|c| c.len() * 21 <= MAX_BINDS));
        let chunks = statement_chunks(&rows[..10], 21, r.size() * 3);
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert!(statement_chunks(&[], 21, 10).is_empty());
        assert_eq!(MAX_BINDS / BASE_COLUMNS.len(), 3120);
    }

    #[test]
    fn the_plan_counts_the_rows_mysql_reports_affected() {
        let mut r = record();
        r.version = 5;
        let row = encode_record(&r, MAX_STATEMENT_BYTES).unwrap();
        let key = key_of(&row.namespace_id, &row.run_id);

        // Absent: inserted once; the same key again in the batch sees that insert.
        let plan = WritePlan::of(&[&row, &row], Existing::new(), true, false);
        assert_eq!(plan.outcomes, [WriteOutcome::Inserted, WriteOutcome::SkippedPresent]);
        assert_eq!((plan.to_write.len(), plan.affected), (1, 1..=1));

        // Older: updated (2 rows affected); the same version: 1 or 2 when repaired.
        let plan = WritePlan::of(&[&row], Existing::from([(key.clone(), Ok(3))]), true, false);
        assert_eq!((plan.outcomes, plan.affected), (vec![WriteOutcome::Updated], 2..=2));
        let plan = WritePlan::of(&[&row], Existing::from([(key.clone(), Ok(5))]), true, true);
        assert_eq!((plan.outcomes, plan.affected), (vec![WriteOutcome::Updated], 1..=2));

        // Newer, or unreadable: nothing written.
        let plan = WritePlan::of(&[&row], Existing::from([(key.clone(), Ok(9))]), true, false);
        assert_eq!((plan.outcomes, plan.to_write.len()), (vec![WriteOutcome::SkippedNewer], 0));
        let plan = WritePlan::of(&[&row], Existing::from([(key, Err("_version NULL".into()))]), true, false);
        assert!(matches!(&plan.outcomes[0], WriteOutcome::Failed(why) if why.contains("_version NULL")));
        assert_eq!(plan.affected, 0..=0);
    }
}
