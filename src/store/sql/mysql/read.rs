//! Reading a MySQL store: the run-id range shards, the paged scan along the primary key,
//! counts by namespace and status, estimates, and lookups by key.

use async_trait::async_trait;
use sqlx::mysql::MySql;
use sqlx::{QueryBuilder, Row};

use super::codec::Cols;
use super::schema::select_columns;
use super::{MAX_BINDS, MysqlStore, by_namespace};
use crate::record::{RecordKey, VisibilityRecord};
use crate::store::sql::query::{count_rows, plan_stored_shards, scan_query};
use crate::store::sql::rows::{self, decode_keyed, scan_page};
use crate::store::sql::{KeySql, classify};
use crate::store::{CountQuery, Counts, Cursor, ScanPage, ShardSpec, Source, Split, Store, StoreError, StoreResult};

impl MysqlStore {
    /// The records of `keys` that exist, in key order. Each namespace's runs are one
    /// range of the primary key.
    pub(super) async fn read_records(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        let schema = self.schema().await?;
        let mut out = Vec::with_capacity(keys.len());
        for (namespace, runs) in by_namespace(keys.iter().map(|k| (&k.namespace_id, &k.run_id))) {
            for chunk in runs.chunks(MAX_BINDS - 1) {
                let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!(
                    "SELECT {} FROM executions_visibility WHERE namespace_id = ",
                    select_columns(schema)
                ));
                push_runs(&mut q, &namespace, chunk);
                let rows = q
                    .build()
                    .persistent(false)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| classify(&self.context("reading"), e))?;
                for row in &rows {
                    out.push(decode_keyed(&Cols::new(row)).map_err(|e| StoreError::Permanent(self.context(&e)))?);
                }
            }
        }
        out.sort_by(|a, b| (&a.namespace_id, &a.run_id).cmp(&(&b.namespace_id, &b.run_id)));
        Ok(out)
    }

    /// Records per namespace and status, those started or closed after the cut-off apart.
    pub(super) async fn count_by_status(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.schema().await?;
        rows::count_by_status(&self.pool, &self.describe(), &query.namespaces, query.cutoff.naive_utc(), true)
            .await
            .map_err(|e| classify(&self.context("counting"), e))
    }
}

/// Completes `… WHERE namespace_id = ` with the namespace and its runs.
pub(super) fn push_runs(q: &mut QueryBuilder<MySql>, namespace: &str, runs: &[&String]) {
    q.push_bind(namespace.to_string());
    q.push(" AND run_id IN (");
    let mut sep = q.separated(", ");
    for run in runs {
        sep.push_bind((*run).clone());
    }
    q.push(")");
}

#[async_trait]
impl Source for MysqlStore {
    /// Every shard walks the primary key `(namespace_id, run_id)` in run-id order.
    fn scans_in_run_id_order(&self) -> bool {
        true
    }

    async fn plan_shards(&self, namespaces: &[String], split: &Split) -> StoreResult<Vec<ShardSpec>> {
        self.schema().await?;
        plan_stored_shards(&self.pool, namespaces, split)
            .await
            .map_err(|e| classify(&self.context("listing namespaces"), e))
    }

    async fn scan(&self, shard: &ShardSpec, after: Option<&Cursor>, limit: usize) -> StoreResult<ScanPage> {
        let schema = self.schema().await?;
        let mut q = scan_query(&select_columns(schema), KeySql::MYSQL, shard, after, limit)?;
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("scanning"), e))?;
        Ok(scan_page(&rows, limit, Cols::new))
    }

    async fn estimate(&self, namespaces: &[String]) -> StoreResult<u64> {
        if namespaces.is_empty() {
            // InnoDB's statistics are free but approximate (and stale on young tables):
            // trusted only where counting would be slow.
            let rows: Option<i64> = sqlx::query(
                "SELECT CAST(table_rows AS SIGNED) FROM information_schema.tables \
                 WHERE table_schema = ? AND table_name = 'executions_visibility'",
            )
            .bind(&self.database)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| classify(&self.context("estimating rows"), e))?
            .and_then(|row| row.try_get::<Option<i64>, _>(0).ok().flatten());
            if let Some(n) = rows.filter(|n| *n >= 1_000_000) {
                return Ok(n as u64);
            }
        }
        count_rows(&self.pool, namespaces).await.map_err(|e| classify(&self.context("counting rows"), e))
    }
}
