//! The Source and Sink traits every store implements, and the factory that opens a
//! store from the config. A store lives in one folder and converts to and from
//! `VisibilityRecord` at its edge; nothing outside `store/` sees its types.
//! Cursors and shard specs are opaque JSON to the pipeline: only the store that made
//! them reads them, and the checkpoint stores them as they are.
//!
//! Every store folder has the same parts, so a reader who knows one knows them all:
//!
//! | file        | holds |
//! | ----------- | ----- |
//! | `mod.rs`    | the store's struct, `open` (connect from the config) and `describe` |
//! | `schema.rs` | inspecting the schema: tables/columns or mapping, versions, preflight |
//! | `read.rs`   | `impl Source`: shard plans, the paged scan, counts, lookups by key |
//! | `write.rs`  | `impl Sink`: the guarded upsert, overwrite, delete, bulk-load steps |
//! | `codec.rs`  | rows or documents to and from `VisibilityRecord`, and bad rows |
//!
//! A store adds a file only for a role the others lack (Elasticsearch's HTTP client,
//! SQLite's DDL, Cassandra's namespace records) and omits one only where the role
//! cannot exist (Cassandra is never a secondary: no `write.rs`). The three SQL stores
//! keep what they share in `sql/` itself.

pub mod cassandra;
pub mod elasticsearch;
pub mod health;
pub mod namespaces;
pub mod run_range;
pub mod schema;
pub mod sql;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::attribute_names::Naming;
use crate::config::{Config, SqlFamily, StoreRef, persistence};
use crate::record::{ExecutionStatus, RecordKey, SearchAttributeType, TimePrecision, VisibilityRecord};

/// A slice of a source's key space, scanned by one worker. Made by `Source::plan_shards`
/// and saved in the checkpoint, so a resumed run scans exactly the same slices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardSpec(pub serde_json::Value);

impl ShardSpec {
    /// The namespace id the shard belongs to: every store plans one namespace's rows per
    /// shard and names it `namespaceId` in the spec (run ranges, Cassandra windows and
    /// grid parts alike).
    pub fn namespace_id(&self) -> Option<&str> {
        self.0.get("namespaceId").and_then(serde_json::Value::as_str)
    }
}

/// How this process divides the key space: `per_process` shards for each of
/// `process_count` processes (`--shard I/N`), of which this one owns the shards whose
/// part number is `process_index` modulo `process_count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Split {
    pub per_process: usize,
    pub process_index: usize,
    pub process_count: usize,
}

impl Split {
    pub fn parts(&self) -> usize {
        self.per_process.max(1) * self.process_count.max(1)
    }

    pub fn owns(&self, part: usize) -> bool {
        part % self.process_count.max(1) == self.process_index
    }
}

/// Where a scan stopped inside a shard: the next page starts strictly after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cursor(pub serde_json::Value);

/// A row the source could read but not convert: it goes to the dead letter.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BadRow {
    pub namespace_id: String,
    pub run_id: String,
    pub workflow_id: Option<String>,
    pub reason: String,
    /// The raw row, as far as it could be rendered, for the operator to fix it by hand.
    pub raw: serde_json::Value,
}

/// One page of a shard's scan. `cursor` is the position after the last row of this
/// page (valid even when every row was bad); `done` says the shard is exhausted.
pub struct ScanPage {
    pub records: Vec<VisibilityRecord>,
    pub bad_rows: Vec<BadRow>,
    pub cursor: Option<Cursor>,
    pub done: bool,
}

/// What happened to one record written to the sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The record was absent and is now written.
    Inserted,
    /// An older version was replaced.
    Updated,
    /// The sink already holds a newer version; nothing written.
    SkippedNewer,
    /// The sink already holds this record (same version, or the source has no version
    /// and writes are insert-if-absent); nothing written.
    SkippedPresent,
    /// The sink refused this record for good (the value cannot be held there).
    Failed(String),
}

impl WriteOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Inserted => "inserted",
            Self::Updated => "updated",
            Self::SkippedNewer => "skipped_newer",
            Self::SkippedPresent => "skipped_present",
            Self::Failed(_) => "failed",
        }
    }
}

/// A store error, classified so the writer knows whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying after a back-off: connection lost, timeout, lock busy, overload.
    #[error("{0}")]
    Transient(String),
    /// Retrying will not help: schema mismatch, permission, a bad statement.
    #[error("{0}")]
    Permanent(String),
    /// The store refuses every request whatever the record: its table or index is gone,
    /// or the permission was revoked. Not retried, and no record is to blame: the writer
    /// stops the run at once instead of writing a refused batch record by record.
    #[error("{0}")]
    Unusable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// The same error with `hint` (what to check or do) appended to its message.
    pub fn hinted(self, hint: &str) -> StoreError {
        match self {
            StoreError::Transient(m) => StoreError::Transient(m + hint),
            StoreError::Permanent(m) => StoreError::Permanent(m + hint),
            StoreError::Unusable(m) => StoreError::Unusable(m + hint),
        }
    }
}

/// Which records a count covers. Runs that changed after the cut-off are still
/// moving and are counted apart ("recent"), not compared.
#[derive(Clone, Debug)]
pub struct CountQuery {
    pub namespaces: Vec<String>,
    pub cutoff: DateTime<Utc>,
}

/// Counts per namespace id: status -> count for settled records, plus the records
/// that started or closed after the cut-off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamespaceCounts {
    pub by_status: BTreeMap<ExecutionStatus, u64>,
    pub recent: u64,
}

pub type Counts = BTreeMap<String, NamespaceCounts>;

/// Adds one `(namespace, status, total, recent)` row of a store's count query, the
/// status as SQL and Cassandra store it; rows with a status Temporal does not define are
/// left out with a warning (their records go to the dead letter when copied, so they are
/// in neither store's comparison).
pub fn add_count(counts: &mut Counts, store: &str, namespace_id: &str, status: i64, total: i64, recent: i64) {
    let Some(status) = ExecutionStatus::from_i64(status) else {
        tracing::warn!(store, namespace_id, status, rows = total, "rows with an unknown status are not counted");
        return;
    };
    add_status_count(counts, namespace_id, status, total, recent);
}

/// Leaves a `(namespace, status)` group of a store's count query out, with a warning
/// naming it: a status or namespace id that cannot be read (their records go to the
/// dead letter when copied, so they are in neither store's comparison).
pub fn skip_count(store: &str, namespace_id: &str, why: &str, total: i64) {
    tracing::warn!(store, namespace_id, rows = total, "rows not counted: {why}");
}

/// Adds `total` records of one namespace and status, of which `recent` are past the cut-off.
pub fn add_status_count(counts: &mut Counts, namespace_id: &str, status: ExecutionStatus, total: i64, recent: i64) {
    let entry = counts.entry(namespace_id.trim_end().to_string()).or_default();
    entry.recent += recent as u64;
    if total > recent {
        *entry.by_status.entry(status).or_default() += (total - recent) as u64;
    }
}

/// What every store can do in either role.
#[async_trait]
pub trait Store: Send + Sync {
    /// A name for logs and errors: kind and location, never credentials.
    fn describe(&self) -> String;
    /// Connects and checks the schema; one clear error naming what is wrong.
    async fn preflight(&self) -> StoreResult<()>;
    /// The schema version found and which of the record fields that vary between
    /// Temporal releases it holds, for preflight to compare both sides.
    async fn schema_info(&self) -> StoreResult<schema::SchemaInfo>;
    /// Counts by namespace and status, for verify.
    async fn count(&self, query: &CountQuery) -> StoreResult<Counts>;
    /// Reads the given records (absent ones are left out), in no particular order.
    async fn read(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>>;
    /// How this store names custom search attributes (reference §6).
    fn naming(&self) -> Naming {
        Naming::FieldNames
    }
    /// The finest time this store keeps in its time fields (Elasticsearch: nanoseconds).
    fn time_precision(&self) -> TimePrecision {
        TimePrecision::Nanoseconds
    }
    /// The health signals this store gives in the probe's role; none where it has none.
    async fn health(&self, _probe: health::Probe<'_>) -> StoreResult<Vec<health::Reading>> {
        Ok(Vec::new())
    }
}

#[async_trait]
pub trait Source: Store {
    /// Splits the key space of the given namespaces (all when empty) into shards, and
    /// returns those this process owns. The same inputs give the same plan in every process.
    async fn plan_shards(&self, namespaces: &[String], split: &Split) -> StoreResult<Vec<ShardSpec>>;
    /// Checks, before a run resumes from a checkpoint, that its saved shards are still
    /// safe to scan as they are with this split (a plan an older vismig made may not be).
    fn check_resume(&self, _shards: &[ShardSpec], _split: &Split) -> StoreResult<()> {
        Ok(())
    }
    /// Reads up to `limit` rows of `shard` after `after` (from the start when None).
    async fn scan(&self, shard: &ShardSpec, after: Option<&Cursor>, limit: usize) -> StoreResult<ScanPage>;
    /// True when `scan` returns a shard's records in ascending byte order of their run
    /// ids, and a shard planned by one such store means the same runs in another (the
    /// SQL stores: run-id ranges walked along the primary key). Deep verify then merges
    /// the two scans instead of looking every page up in the other store.
    fn scans_in_run_id_order(&self) -> bool {
        false
    }
    /// An estimate of the records in the given namespaces (all when empty), cheap to get.
    async fn estimate(&self, namespaces: &[String]) -> StoreResult<u64>;
    /// The custom search attributes records of each namespace id use, when the store can
    /// tell without reading every record; None when it cannot.
    async fn search_attributes_in_use(
        &self,
        _namespaces: &[String],
    ) -> StoreResult<Option<BTreeMap<String, BTreeSet<String>>>> {
        Ok(None)
    }
}

#[async_trait]
pub trait Sink: Store {
    /// Largest batch this sink can take in one round trip.
    fn max_batch(&self) -> usize;
    /// Writes `records` in one round trip where the store allows it, never over a newer
    /// version; returns one outcome per record, in order.
    async fn write(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>>;
    /// Like `write`, and also over a record held at the same version: `verify --repair`'s
    /// answer to a copy that differs from the primary at the same version, which is
    /// corruption, not a newer write. Still never over a newer version. A record without a
    /// version replaces only a copy without one (SQL `_version` 0; Elasticsearch version 1,
    /// what `create` gives). A schema without `_version` keeps its row (`SkippedPresent`):
    /// nothing there tells a stale copy from a newer write.
    async fn overwrite(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>>;
    /// Deletes the given records (verify --repair, for extras the primary no longer has).
    async fn delete(&self, keys: &[RecordKey]) -> StoreResult<u64>;

    /// Makes every write so far visible to reads (Elasticsearch: a refresh).
    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Makes custom search attributes holdable, as `temporal operator search-attribute
    /// create` does to this store (Elasticsearch: a mapping per name). SQL stores have
    /// their pre-allocated columns already. Used by `vismig seed`.
    async fn register_search_attributes(&self, _attributes: &[(String, SearchAttributeType)]) -> StoreResult<()> {
        Ok(())
    }

    /// The search-attribute fields this sink can hold, when it has a fixed list
    /// (an Elasticsearch mapping); None when any name is accepted.
    async fn search_attribute_fields(&self) -> StoreResult<Option<BTreeSet<String>>> {
        Ok(None)
    }

    /// Indexes the store holds but does not use (PostgreSQL: `pg_index.indisvalid =
    /// false`, left by an interrupted `CREATE INDEX CONCURRENTLY`), by name.
    async fn invalid_indexes(&self) -> StoreResult<Vec<String>> {
        Ok(Vec::new())
    }

    /// The indexes a bulk load may drop and rebuild: every index but the primary key.
    async fn deferrable_indexes(&self) -> StoreResult<Vec<IndexDef>> {
        Err(StoreError::Permanent(format!(
            "{}: migration.bulkLoad.deferIndexes is not supported by this store",
            self.describe()
        )))
    }

    /// Refuses, before anything runs, deferred indexes of the checkpoint that do not match
    /// what the store itself saved (the checkpoint file is not trusted to carry SQL).
    async fn check_deferred_indexes(&self, _indexes: &[IndexDef]) -> StoreResult<()> {
        Ok(())
    }

    /// Drops one index (it was saved in the checkpoint before).
    async fn drop_index(&self, index: &IndexDef) -> StoreResult<()> {
        Err(StoreError::Permanent(format!("{}: cannot drop index {}", self.describe(), index.name)))
    }

    /// Builds one index from its saved definition without blocking writes; a no-op if
    /// a valid index of that name exists, and a half-built one is replaced.
    async fn build_index(&self, index: &IndexDef) -> StoreResult<()> {
        Err(StoreError::Permanent(format!("{}: cannot build index {}", self.describe(), index.name)))
    }
}

/// An index of the secondary as the store can re-create it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    pub name: String,
    /// The store's own statement that creates it (PostgreSQL: `pg_indexes.indexdef`).
    pub definition: String,
}

/// A store that can play both roles (every writable store can also be read).
pub trait SourceSink: Source + Sink {}
impl<T: Source + Sink> SourceSink for T {}

/// Opens the store named by `store` for reading.
pub async fn open_source(config: &Config, store: &StoreRef) -> anyhow::Result<Arc<dyn Source>> {
    let ds = config.datastore(store);
    if let Some(sql) = &ds.sql {
        return match persistence::sql_family(&sql.plugin_name) {
            Some(SqlFamily::Sqlite) => Ok(Arc::new(sql::sqlite::SqliteStore::open(&store.datastore, sql).await?)),
            Some(family @ (SqlFamily::Postgres | SqlFamily::PostgresStandard)) => {
                Ok(Arc::new(sql::postgres::PostgresStore::open(&store.datastore, sql, family).await?))
            }
            Some(SqlFamily::Mysql | SqlFamily::MysqlStandard) => {
                Ok(Arc::new(sql::mysql::MysqlStore::open(&store.datastore, sql).await?))
            }
            _ => Err(not_built(store, &format!("sql/{}", sql.plugin_name))),
        };
    }
    if let Some(cassandra) = &ds.cassandra {
        return Ok(Arc::new(cassandra::CassandraStore::open(&store.datastore, cassandra).await?));
    }
    if let Some(es) = &ds.elasticsearch {
        return Ok(Arc::new(elasticsearch::ElasticsearchStore::open(&store.datastore, es, store)?));
    }
    Err(not_built(store, kind(ds)))
}

/// Opens the store named by `store` for writing.
pub async fn open_sink(config: &Config, store: &StoreRef) -> anyhow::Result<Arc<dyn Sink>> {
    let ds = config.datastore(store);
    if let Some(sql) = &ds.sql {
        return match persistence::sql_family(&sql.plugin_name) {
            Some(SqlFamily::Sqlite) => Ok(Arc::new(sql::sqlite::SqliteStore::open(&store.datastore, sql).await?)),
            Some(family @ SqlFamily::Postgres) => {
                Ok(Arc::new(sql::postgres::PostgresStore::open(&store.datastore, sql, family).await?))
            }
            Some(SqlFamily::Mysql) => Ok(Arc::new(sql::mysql::MysqlStore::open(&store.datastore, sql).await?)),
            Some(SqlFamily::MysqlStandard) => Err(anyhow::anyhow!(
                "store {:?}: pluginName \"mysql\" is MySQL 5.7 standard visibility, which can only be read; write to Temporal's advanced schema with pluginName mysql8",
                store.datastore
            )),
            _ => Err(not_built(store, &format!("sql/{}", sql.plugin_name))),
        };
    }
    if let Some(es) = &ds.elasticsearch {
        return Ok(Arc::new(elasticsearch::ElasticsearchStore::open(&store.datastore, es, store)?));
    }
    Err(not_built(store, kind(ds)))
}

/// Namespace name -> id from the `namespaces` table of Temporal's default store
/// (`persistence.defaultStore`); None without a default store.
pub async fn namespace_registry(config: &Config) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    Ok(namespace_records(config).await?.map(|records| records.into_iter().map(|r| (r.name, r.id)).collect()))
}

/// The namespace records of Temporal's default store (`persistence.defaultStore`, SQL or
/// Cassandra); None without one (names then come from migration.namespaceNames, aliases
/// from migration.searchAttributeAliases).
pub async fn namespace_records(config: &Config) -> anyhow::Result<Option<Vec<namespaces::NamespaceRecord>>> {
    let Some(name) = &config.persistence.default_store else { return Ok(None) };
    let Some(ds) = config.persistence.datastores.get(name) else {
        anyhow::bail!("persistence.defaultStore: store {name:?} is not in persistence.datastores");
    };
    if let Some(sql) = &ds.sql {
        return Ok(Some(sql::namespace_rows(name, sql).await?));
    }
    if let Some(cassandra) = &ds.cassandra {
        return Ok(Some(cassandra::CassandraStore::open(name, cassandra).await?.namespace_records().await?));
    }
    anyhow::bail!("persistence.defaultStore: store {name:?} is {}, not a SQL or Cassandra store", kind(ds))
}

fn kind(ds: &crate::config::DataStore) -> &'static str {
    if ds.cassandra.is_some() {
        "cassandra"
    } else if ds.elasticsearch.is_some() {
        "elasticsearch"
    } else {
        "sql"
    }
}

fn not_built(store: &StoreRef, kind: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "store {:?}: {kind} is not supported by this version of vismig yet (supported: sql/sqlite, sql/postgres12, sql/postgres12_pgx, sql/mysql8, elasticsearch, and sql/postgres, sql/postgres_pgx, sql/mysql or cassandra as a source)",
        store.datastore
    )
}
