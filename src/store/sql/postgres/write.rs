//! Writing a PostgreSQL store: the guarded upsert (one multi-row statement, or COPY into
//! a staging table for large batches), the repair's overwrite, deletes, and the bulk
//! load's deferred indexes (dropped before, rebuilt concurrently after).

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::codec::{check_limits, copy_row, micros};
use super::{MAX_BINDS, PostgresStore};
use crate::record::{RecordKey, SearchAttributes, VisibilityRecord};
use crate::store::sql::encoded::EncodedRow;
use crate::store::sql::outcome::unknown_version;
use crate::store::sql::query::{on_conflict, push_keys};
use crate::store::sql::{BASE_COLUMNS, classify};
use crate::store::{IndexDef, Sink, StoreError, StoreResult, WriteOutcome};

/// Batches from this size on are written through COPY.
const COPY_MIN_ROWS: usize = 200;

#[async_trait]
impl Sink for PostgresStore {
    async fn delete(&self, keys: &[RecordKey]) -> StoreResult<u64> {
        let schema = self.schema().await?;
        self.ensure_writable(schema)?;
        let mut deleted = 0;
        for chunk in keys.chunks(MAX_BINDS / 2) {
            let mut q: QueryBuilder<Postgres> =
                QueryBuilder::new("DELETE FROM executions_visibility WHERE (namespace_id, run_id) IN (");
            push_keys(&mut q, chunk.iter().map(|k| (k.namespace_id.as_str(), k.run_id.as_str())), "::bpchar");
            q.push(")");
            deleted += q
                .build()
                .persistent(false)
                .execute(&self.pool)
                .await
                .map_err(|e| classify(&self.context("deleting"), e))?
                .rows_affected();
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

    async fn invalid_indexes(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = 'executions_visibility'::regclass AND NOT i.indisvalid ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify(&self.context("listing invalid indexes"), e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Saves the definitions in `vismig_deferred_indexes`, a table of the secondary that
    /// vismig owns, and returns them from there. The checkpoint keeps a copy for
    /// `status`, but only what this table holds is ever dropped or run: the checkpoint
    /// lies on a volume that others may write, the database does not.
    async fn deferrable_indexes(&self) -> StoreResult<Vec<IndexDef>> {
        let context = self.context("saving the index definitions in vismig_deferred_indexes");
        let mut tx = self.pool.begin().await.map_err(|e| classify(&context, e))?;
        for sql in [
            "CREATE TABLE IF NOT EXISTS vismig_deferred_indexes (index_name text PRIMARY KEY, definition text NOT NULL, saved_at timestamptz NOT NULL DEFAULT now())",
            // An entry left by an earlier bulk load whose index is back is stale.
            "DELETE FROM vismig_deferred_indexes d WHERE EXISTS (SELECT 1 FROM pg_indexes i WHERE i.schemaname = current_schema() AND i.indexname = d.index_name)",
            "INSERT INTO vismig_deferred_indexes (index_name, definition) \
             SELECT indexname::text, indexdef FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename = 'executions_visibility' \
               AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'executions_visibility'::regclass)",
        ] {
            sqlx::query(sql).execute(&mut *tx).await.map_err(|e| classify(&context, e))?;
        }
        let rows = sqlx::query("SELECT index_name, definition FROM vismig_deferred_indexes ORDER BY index_name")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(&context, e))?;
        tx.commit().await.map_err(|e| classify(&context, e))?;
        Ok(rows.iter().map(|r| IndexDef { name: r.get(0), definition: r.get(1) }).collect())
    }

    async fn check_deferred_indexes(&self, indexes: &[IndexDef]) -> StoreResult<()> {
        for index in indexes {
            self.saved_definition(index).await?;
        }
        Ok(())
    }

    async fn drop_index(&self, index: &IndexDef) -> StoreResult<()> {
        self.saved_definition(index).await?;
        // CONCURRENTLY: Temporal's dual writes keep going while the index goes.
        let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {}", quote_ident(&index.name));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .execute(&self.pool)
            .await
            .map_err(|e| classify(&self.context(&format!("dropping index {}", index.name)), e))?;
        Ok(())
    }

    async fn build_index(&self, index: &IndexDef) -> StoreResult<()> {
        match self.index_state(&index.name).await? {
            Some(true) => return self.forget_deferred(index).await,
            // A build interrupted by a crash leaves an invalid index behind.
            Some(false) => self.drop_index(index).await?,
            None => {}
        }
        let definition = self.saved_definition(index).await?;
        let concurrent = concurrently(&index.name, &definition).ok_or_else(|| {
            StoreError::Permanent(self.context(&format!(
                "the saved definition of index {} is not one CREATE INDEX on executions_visibility; refusing to run it",
                index.name
            )))
        })?;
        // One statement, through the extended protocol, which refuses several.
        sqlx::query(sqlx::AssertSqlSafe(concurrent))
            .persistent(false)
            .execute(&self.pool)
            .await
            .map_err(|e| classify(&self.context(&format!("building index {}", index.name)), e))?;
        self.forget_deferred(index).await
    }
}

impl PostgresStore {
    /// Whether index `name` exists and is valid (None: no such index).
    async fn index_state(&self, name: &str) -> StoreResult<Option<bool>> {
        let row = sqlx::query(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = $1 AND n.nspname = current_schema()",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| classify(&self.context("reading index state"), e))?;
        Ok(row.map(|r| r.get::<bool, _>(0)))
    }

    /// The definition vismig saved in the secondary for this index, when it is exactly
    /// the one the checkpoint holds; anything else is refused before any SQL runs.
    async fn saved_definition(&self, index: &IndexDef) -> StoreResult<String> {
        let refused = |why: &str| {
            StoreError::Permanent(self.context(&format!(
                "deferred index {:?} of the checkpoint {why}; refusing to drop or build anything (was the checkpoint edited? restore it, or rebuild the index by hand and remove it from the checkpoint)",
                index.name
            )))
        };
        let row = sqlx::query("SELECT definition FROM vismig_deferred_indexes WHERE index_name = $1")
            .bind(&index.name)
            .fetch_optional(&self.pool)
            .await;
        let saved: Option<String> = match row {
            Ok(row) => row.map(|r| r.get(0)),
            // 42P01: the table is not there, so nothing was saved.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => None,
            Err(e) => return Err(classify(&self.context("reading vismig_deferred_indexes"), e)),
        };
        match saved {
            None => {
                Err(refused("is not among the definitions vismig saved in the secondary (vismig_deferred_indexes)"))
            }
            Some(saved) if saved != index.definition => Err(refused(
                "differs from the definition vismig saved for it in the secondary (vismig_deferred_indexes)",
            )),
            Some(saved) => Ok(saved),
        }
    }

    /// The index is back: its saved definition is no longer needed.
    async fn forget_deferred(&self, index: &IndexDef) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM vismig_deferred_indexes WHERE index_name = $1")
            .bind(&index.name)
            .execute(&self.pool)
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(()),
            Err(e) => Err(classify(&self.context("updating vismig_deferred_indexes"), e)),
        }
    }
}

impl PostgresStore {
    /// The upsert of `write` (`same_version` false) and `overwrite` (true).
    async fn write_guarded(&self, records: &[VisibilityRecord], same_version: bool) -> StoreResult<Vec<WriteOutcome>> {
        let schema = self.schema().await?;
        self.ensure_writable(schema)?;
        let versioned = schema.has("_version");
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; records.len()];
        let mut rows: Vec<(usize, &VisibilityRecord)> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            match check_limits(r) {
                Ok(()) => rows.push((i, r)),
                Err(reason) => outcomes[i] = Some(WriteOutcome::Failed(reason)),
            }
        }
        let columns: Vec<&str> = BASE_COLUMNS.iter().copied().filter(|c| schema.has(c)).collect();
        let upsert = upsert_clause(&columns, versioned, same_version);
        for chunk in rows.chunks(self.max_batch()) {
            // Large batches go through COPY into a staging table (measured about 5% faster
            // at 1000 rows); small ones, such as single records being isolated after a
            // refused batch, take one multi-row statement, a single round trip.
            let returned = if chunk.len() >= COPY_MIN_ROWS {
                self.copy_write(chunk, &columns, &upsert).await?
            } else {
                self.multi_row_write(chunk, &columns, &upsert).await?
            };
            let mut written: HashMap<(String, String), bool> = HashMap::with_capacity(returned.len());
            for row in returned {
                let ns: String = row.get(0);
                let run: String = row.get(1);
                written.insert((ns.trim_end().to_string(), run.trim_end().to_string()), row.get::<bool, _>(2));
            }
            let mut skipped: Vec<(usize, &VisibilityRecord)> = Vec::new();
            for (i, r) in chunk {
                match written.get(&(r.namespace_id.clone(), r.run_id.clone())) {
                    Some(true) => outcomes[*i] = Some(WriteOutcome::Inserted),
                    Some(false) => outcomes[*i] = Some(WriteOutcome::Updated),
                    None => skipped.push((*i, r)),
                }
            }
            if !skipped.is_empty() {
                let existing = self.stored_versions(&skipped, versioned).await?;
                for (i, r) in skipped {
                    let mine = if versioned { r.version } else { 0 };
                    outcomes[i] = Some(match existing.get(&(r.namespace_id.clone(), r.run_id.clone())) {
                        Some(None) => unknown_version("_version NULL"),
                        Some(Some(theirs)) if *theirs > mine => WriteOutcome::SkippedNewer,
                        _ => WriteOutcome::SkippedPresent,
                    });
                }
            }
        }
        Ok(outcomes.into_iter().map(|o| o.expect("every record has an outcome")).collect())
    }

    /// One multi-row `INSERT … ON CONFLICT` with the rows as bind parameters.
    async fn multi_row_write(
        &self,
        chunk: &[(usize, &VisibilityRecord)],
        columns: &[&str],
        upsert: &str,
    ) -> StoreResult<Vec<PgRow>> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("INSERT INTO executions_visibility ({}) ", columns.join(", ")));
        q.push_values(chunk, |mut b, (_, r)| {
            EncodedRow::new(r, |_, t| micros(t), SearchAttributes::to_json).push_binds(&mut b, columns)
        });
        q.push(upsert);
        q.build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify(&self.context("writing a batch"), e))
    }

    /// COPY into a per-session staging table, then one `INSERT … SELECT … ON CONFLICT`
    /// with the same guard, in one transaction.
    async fn copy_write(
        &self,
        chunk: &[(usize, &VisibilityRecord)],
        columns: &[&str],
        upsert: &str,
    ) -> StoreResult<Vec<PgRow>> {
        let ctx = || self.context("writing a batch through COPY");
        let mut tx = self.pool.begin().await.map_err(|e| classify(&ctx(), e))?;
        // Temporary tables live per connection; ON COMMIT DELETE ROWS empties it for
        // the next batch on the same connection.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TEMP TABLE IF NOT EXISTS vismig_stage ON COMMIT DELETE ROWS AS SELECT {} FROM executions_visibility WITH NO DATA",
            columns.join(", ")
        )))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(&ctx(), e))?;
        let mut buf = Vec::with_capacity(chunk.len() * 1024);
        for (_, r) in chunk {
            copy_row(&mut buf, r, columns);
        }
        let mut copy = tx
            .copy_in_raw(&format!("COPY vismig_stage ({}) FROM STDIN", columns.join(", ")))
            .await
            .map_err(|e| classify(&ctx(), e))?;
        copy.send(buf).await.map_err(|e| classify(&ctx(), e))?;
        copy.finish().await.map_err(|e| classify(&ctx(), e))?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO executions_visibility ({cols}) SELECT {cols} FROM vismig_stage{upsert}",
            cols = columns.join(", ")
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify(&ctx(), e))?;
        tx.commit().await.map_err(|e| classify(&ctx(), e))?;
        Ok(rows)
    }

    /// Current `_version` of the given records (0 without the column; None where it is
    /// NULL, the guard having left such a row as it was).
    async fn stored_versions(
        &self,
        records: &[(usize, &VisibilityRecord)],
        versioned: bool,
    ) -> StoreResult<HashMap<(String, String), Option<i64>>> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT namespace_id::text, run_id::text, {} FROM executions_visibility WHERE (namespace_id, run_id) IN (",
            if versioned { "_version" } else { "0::bigint" }
        ));
        push_keys(&mut q, records.iter().map(|(_, r)| (r.namespace_id.as_str(), r.run_id.as_str())), "::bpchar");
        q.push(")");
        let rows = q
            .build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify(&self.context("reading versions"), e))?;
        let ctx = || self.context("reading versions");
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            let ns: String = r.try_get(0).map_err(|e| classify(&ctx(), e))?;
            let run: String = r.try_get(1).map_err(|e| classify(&ctx(), e))?;
            let version: Option<i64> = r.try_get(2).map_err(|e| classify(&ctx(), e))?;
            out.insert((ns.trim_end().to_string(), run.trim_end().to_string()), version);
        }
        Ok(out)
    }
}

/// `ON CONFLICT` under Temporal's version guard, returning which rows were inserted
/// (xmax = 0) or updated; rows the guard skipped are not returned.
fn upsert_clause(columns: &[&str], versioned: bool, same_version: bool) -> String {
    format!(
        "{} RETURNING namespace_id::text, run_id::text, (xmax = 0) AS inserted",
        on_conflict(columns, versioned, same_version)
    )
}

/// `CREATE [UNIQUE] INDEX name ON …` as `CREATE [UNIQUE] INDEX CONCURRENTLY name ON …`,
/// which builds without blocking writes.
/// `pg_indexes.indexdef` of index `name` made concurrent: only the shape PostgreSQL
/// itself writes (`CREATE [UNIQUE] INDEX name ON [schema.]executions_visibility USING …`),
/// with no `;` anywhere, else None.
fn concurrently(name: &str, definition: &str) -> Option<String> {
    if definition.contains(';') {
        return None;
    }
    for prefix in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
        let Some(rest) = definition.strip_prefix(prefix) else { continue };
        let unquoted = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let ident = if unquoted { name.to_string() } else { quote_ident(name) };
        let on = rest.strip_prefix(&ident)?.strip_prefix(" ON ")?;
        let table = on.split_whitespace().next()?;
        if table != "executions_visibility" && !table.ends_with(".executions_visibility") {
            return None;
        }
        return Some(format!("{prefix}CONCURRENTLY {rest}"));
    }
    None
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_definitions_become_concurrent_builds() {
        assert_eq!(
            concurrently(
                "by_status",
                "CREATE INDEX by_status ON public.executions_visibility USING btree (namespace_id, status)"
            )
            .unwrap(),
            "CREATE INDEX CONCURRENTLY by_status ON public.executions_visibility USING btree (namespace_id, status)"
        );
        assert!(
            concurrently("u", "CREATE UNIQUE INDEX u ON executions_visibility (a)")
                .unwrap()
                .starts_with("CREATE UNIQUE INDEX CONCURRENTLY u ON")
        );
        assert!(concurrently("Odd", "CREATE INDEX \"Odd\" ON executions_visibility (a)").is_some());
        for (name, bad) in [
            ("x", "DROP TABLE x"),
            ("by_status", "CREATE INDEX by_status ON executions_visibility (a); DROP TABLE executions_visibility"),
            ("by_status", "CREATE INDEX other ON executions_visibility (a)"),
            ("by_status", "CREATE INDEX by_status ON other_table (a)"),
        ] {
            assert_eq!(concurrently(name, bad), None, "{bad}");
        }
        assert_eq!(quote_ident("by_\"x"), "\"by_\"\"x\"");
    }
}
