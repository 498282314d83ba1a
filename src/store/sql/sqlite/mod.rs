//! SQLite advanced visibility (`schema/sqlite/v3/visibility`): source and sink.
//!
//! Stored exactly as Temporal's SQLite plugin stores it: times as text in Go's layout
//! `2006-01-02 15:04:05.999999999-07:00` (UTC, microseconds), KeywordList values joined
//! by U+2661, and writes by `INSERT … ON CONFLICT DO UPDATE`, never `INSERT OR REPLACE`
//! (whose implicit delete skips the FTS triggers). Besides the files every store has,
//! `ddl.rs` creates a database with Temporal's schema (the demo and the tests).

mod codec;
mod ddl;
mod read;
mod schema;
mod write;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, QueryBuilder, Sqlite};
use tokio::sync::OnceCell;

pub use ddl::create_database;

use super::classify;
use super::query::push_keys;
use crate::config::persistence::SqlStore;
use crate::record::{RecordKey, TimePrecision, VisibilityRecord};
use crate::store::schema::SchemaInfo;
use crate::store::{CountQuery, Counts, Store, StoreResult};

/// SQLite's default limit on bound parameters per statement (SQLITE_MAX_VARIABLE_NUMBER).
const MAX_BINDS: usize = 32_766;

pub struct SqliteStore {
    name: String,
    path: PathBuf,
    /// Reads (scans, counts) run in parallel on this pool.
    pool: SqlitePool,
    /// SQLite has one writer at a time: writes share one connection rather than queue
    /// in SQLite's busy handler, each holding a connection and its page cache.
    writer: SqlitePool,
    schema: OnceCell<schema::Schema>,
    /// Batches waiting for the next write transaction (group commit, see `write.rs`).
    waiting: std::sync::Mutex<Vec<write::WaitingBatch>>,
    /// Held by the task writing a group.
    committer: tokio::sync::Mutex<()>,
    /// Write transactions committed so far (how many groups the batches went in).
    commits: std::sync::atomic::AtomicU64,
}

impl SqliteStore {
    /// Write transactions this store has committed: fewer than the batches written when
    /// concurrent batches shared commits.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rows of a fixed query against this store's database (Temporal's namespace
    /// registry when this is the default store).
    pub async fn raw_rows(&self, sql: &'static str) -> StoreResult<Vec<SqliteRow>> {
        sqlx::query(sql).fetch_all(&self.pool).await.map_err(|e| classify(&self.context("reading namespaces"), e))
    }

    pub async fn open(name: &str, cfg: &SqlStore) -> anyhow::Result<Self> {
        let path = PathBuf::from(&cfg.database_name);
        let read_only = cfg.connect_attributes.get("mode").is_some_and(|m| m == "ro");
        if cfg.connect_attributes.get("mode").is_some_and(|m| m == "memory") {
            anyhow::bail!(
                "store {name:?}: sql.connectAttributes.mode is \"memory\": an in-memory SQLite database lives inside the Temporal process and cannot be migrated"
            );
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(false)
            .read_only(read_only)
            // Temporal's SQLite files are written by one process at a time; wait for its
            // lock rather than failing the batch.
            .busy_timeout(Duration::from_secs(30))
            // A batch is acknowledged (and its checkpoint saved) only once durable.
            .synchronous(SqliteSynchronous::Full)
            // Multi-row statements are long: never log their text.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.max_conns.unwrap_or(4).max(1))
            .acquire_timeout(Duration::from_secs(60))
            .connect_lazy_with(options.clone());
        // Pools connect lazily: a store used only for reading never opens the writer.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(600))
            .connect_lazy_with(options);
        Ok(Self {
            name: name.to_string(),
            path,
            pool,
            writer,
            schema: OnceCell::new(),
            waiting: Default::default(),
            committer: Default::default(),
            commits: Default::default(),
        })
    }

    fn context(&self, what: &str) -> String {
        format!("store {:?} ({}): {what}", self.name, self.describe())
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    async fn preflight(&self) -> StoreResult<()> {
        self.schema().await.map(|_| ())
    }

    async fn schema_info(&self) -> StoreResult<SchemaInfo> {
        self.schema_versions().await
    }

    async fn count(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.count_by_status(query).await
    }

    async fn read(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        self.read_records(keys).await
    }

    /// Temporal truncates times to microseconds for SQL, and so does every writer here.
    fn time_precision(&self) -> TimePrecision {
        TimePrecision::Microseconds
    }
}

/// Completes `… FROM ` with the given keys as a `VALUES` table (`k`) joined to their
/// rows (`e`); `k.column1, k.column2` are the bound keys themselves.
fn push_key_join<'k>(q: &mut QueryBuilder<Sqlite>, keys: impl IntoIterator<Item = (&'k str, &'k str)>) {
    q.push("(VALUES ");
    push_keys(q, keys, "");
    q.push(") AS k CROSS JOIN executions_visibility e ON e.namespace_id = k.column1 AND e.run_id = k.column2");
}
