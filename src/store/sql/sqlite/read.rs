//! Reading a SQLite store: the run-id range shards, the paged scan along the primary
//! key, counts by namespace and status, estimates, and lookups by key.

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite};

use super::codec::{Cols, format_time};
use super::schema::select_columns;
use super::{MAX_BINDS, SqliteStore, push_key_join};
use crate::record::{RecordKey, VisibilityRecord};
use crate::store::sql::query::{count_rows, plan_stored_shards, scan_query};
use crate::store::sql::rows::{self, decode_keyed, scan_page};
use crate::store::sql::{KeySql, classify};
use crate::store::{CountQuery, Counts, Cursor, ScanPage, ShardSpec, Source, Split, Store, StoreError, StoreResult};

impl SqliteStore {
    /// The records of `keys` that exist, in key order.
    pub(super) async fn read_records(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        let schema = self.schema().await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_BINDS / 2) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("SELECT {} FROM ", select_columns(schema, "e.")));
            push_key_join(&mut q, chunk.iter().map(|k| (k.namespace_id.as_str(), k.run_id.as_str())));
            q.push(" ORDER BY e.namespace_id, e.run_id");
            let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("reading"), e))?;
            for row in &rows {
                out.push(decode_keyed(&Cols::new(row)).map_err(|e| StoreError::Permanent(self.context(&e)))?);
            }
        }
        Ok(out)
    }

    /// Records per namespace and status, those started or closed after the cut-off apart.
    pub(super) async fn count_by_status(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.schema().await?;
        rows::count_by_status(&self.pool, &self.describe(), &query.namespaces, format_time(query.cutoff), false)
            .await
            .map_err(|e| classify(&self.context("counting"), e))
    }
}

#[async_trait]
impl Source for SqliteStore {
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
        let mut q = scan_query(&select_columns(schema, ""), KeySql::SQLITE, shard, after, limit)?;
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("scanning"), e))?;
        Ok(scan_page(&rows, limit, Cols::new))
    }

    async fn estimate(&self, namespaces: &[String]) -> StoreResult<u64> {
        count_rows(&self.pool, namespaces).await.map_err(|e| classify(&self.context("counting rows"), e))
    }
}
