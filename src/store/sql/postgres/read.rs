//! Reading a PostgreSQL store: the run-id range shards, the paged scan along the primary
//! key, counts by namespace and status, estimates, and lookups by key.

use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder, Row};

use super::codec::Cols;
use super::schema::select_columns;
use super::{MAX_BINDS, PostgresStore};
use crate::record::{RecordKey, VisibilityRecord};
use crate::store::sql::query::{push_keys, scan_query};
use crate::store::sql::rows::{decode_keyed, scan_page};
use crate::store::sql::{KeySql, RunRange, classify};
use crate::store::{
    CountQuery, Counts, Cursor, ScanPage, ShardSpec, Source, Split, Store, StoreError, StoreResult, add_count,
    skip_count,
};

impl PostgresStore {
    /// The records of `keys` that exist, in key order.
    pub(super) async fn read_records(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        let schema = self.schema().await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_BINDS / 2) {
            let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
                "SELECT {} FROM executions_visibility WHERE (namespace_id, run_id) IN (",
                select_columns(schema)
            ));
            push_keys(&mut q, chunk.iter().map(|k| (k.namespace_id.as_str(), k.run_id.as_str())), "::bpchar");
            q.push(") ORDER BY namespace_id, run_id");
            let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("reading"), e))?;
            for row in &rows {
                out.push(decode_keyed(&Cols(row)).map_err(|e| StoreError::Permanent(self.context(&e)))?);
            }
        }
        Ok(out)
    }

    /// Records per namespace and status, those started or closed after the cut-off apart.
    pub(super) async fn count_by_status(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.schema().await?;
        let cutoff = query.cutoff.naive_utc();
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT namespace_id::text, status, COUNT(*), COUNT(*) FILTER (WHERE start_time >= ");
        q.push_bind(cutoff).push(" OR close_time >= ").push_bind(cutoff).push(") FROM executions_visibility");
        push_namespace_filter(&mut q, &query.namespaces);
        q.push(" GROUP BY 1, 2");
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("counting"), e))?;
        let mut counts = Counts::new();
        for row in rows {
            let ctx = || self.context("counting");
            let ns: String = row.try_get(0).map_err(|e| classify(&ctx(), e))?;
            let total: i64 = row.try_get(2).map_err(|e| classify(&ctx(), e))?;
            let recent: i64 = row.try_get(3).map_err(|e| classify(&ctx(), e))?;
            // A NULL status (NOT NULL dropped by hand) panicked here; such rows go to
            // the dead letter when copied, so they are left out of the comparison.
            match row.try_get::<Option<i32>, _>(1).map_err(|e| classify(&ctx(), e))? {
                Some(status) => add_count(&mut counts, &self.describe(), &ns, i64::from(status), total, recent),
                None => skip_count(&self.describe(), &ns, "status is NULL", total),
            }
        }
        Ok(counts)
    }
}

/// ` WHERE namespace_id = ANY(…)` for the given namespace ids, compared as the key
/// column's CHAR(64) so that the primary key serves it; nothing for none.
fn push_namespace_filter(q: &mut QueryBuilder<Postgres>, namespaces: &[String]) {
    if !namespaces.is_empty() {
        q.push(" WHERE namespace_id = ANY(").push_bind(namespaces.to_vec()).push("::bpchar[])");
    }
}

#[async_trait]
impl Source for PostgresStore {
    /// Every shard walks the primary key `(namespace_id, run_id)` in run-id order.
    fn scans_in_run_id_order(&self) -> bool {
        true
    }

    async fn plan_shards(&self, namespaces: &[String], split: &Split) -> StoreResult<Vec<ShardSpec>> {
        self.schema().await?;
        let namespaces = if namespaces.is_empty() {
            // A loose index scan over the primary key: one probe per namespace instead
            // of reading every row.
            sqlx::query(
                "WITH RECURSIVE ns AS ( \
                   (SELECT namespace_id FROM executions_visibility ORDER BY namespace_id LIMIT 1) \
                   UNION ALL \
                   SELECT (SELECT e.namespace_id FROM executions_visibility e WHERE e.namespace_id > ns.namespace_id ORDER BY e.namespace_id LIMIT 1) \
                   FROM ns WHERE ns.namespace_id IS NOT NULL) \
                 SELECT namespace_id::text FROM ns WHERE namespace_id IS NOT NULL",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify(&self.context("listing namespaces"), e))?
            .iter()
            .map(|r| r.get::<String, _>(0).trim_end().to_string())
            .collect()
        } else {
            namespaces.to_vec()
        };
        Ok(RunRange::plan(&namespaces, split).iter().map(RunRange::to_spec).collect())
    }

    async fn scan(&self, shard: &ShardSpec, after: Option<&Cursor>, limit: usize) -> StoreResult<ScanPage> {
        let schema = self.schema().await?;
        let mut q = scan_query(&select_columns(schema), KeySql::POSTGRES, shard, after, limit)?;
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("scanning"), e))?;
        Ok(scan_page(&rows, limit, Cols))
    }

    async fn estimate(&self, namespaces: &[String]) -> StoreResult<u64> {
        if namespaces.is_empty() {
            // The planner's estimate is free; -1 means the table was never analyzed.
            let n: f32 = sqlx::query("SELECT reltuples FROM pg_class WHERE oid = 'executions_visibility'::regclass")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| classify(&self.context("estimating rows"), e))?
                .get(0);
            if n >= 0.0 {
                return Ok(n as u64);
            }
        }
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT COUNT(*) FROM executions_visibility");
        push_namespace_filter(&mut q, namespaces);
        let n: i64 =
            q.build().fetch_one(&self.pool).await.map_err(|e| classify(&self.context("counting rows"), e))?.get(0);
        Ok(n as u64)
    }
}
