//! SQLite advanced visibility (`schema/sqlite/v3/visibility`): source and sink.
//!
//! Stored exactly as Temporal's SQLite plugin stores it: times as text in Go's layout
//! `2006-01-02 15:04:05.999999999-07:00` (UTC, microseconds), KeywordList values joined
//! by U+2661, and writes by `INSERT … ON CONFLICT DO UPDATE`, never `INSERT OR REPLACE`
//! (whose implicit delete skips the FTS triggers).

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, TimeZone, Timelike, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, QueryBuilder, Row, Sqlite};
use tokio::sync::OnceCell;

use super::push_keys;
use super::{BASE_COLUMNS, KeySql, RunRange, StoredKey, classify, cursor_run, run_cursor};
use crate::config::persistence::SqlStore;
use crate::record::{
    RecordKey, SearchAttributeType, SearchAttributeValue, SearchAttributes, VisibilityRecord,
    known_search_attribute_type,
};
use crate::store::schema::Columns;
use crate::store::{
    BadRow, CountQuery, Counts, Cursor, ScanPage, ShardSpec, Sink, Source, Split, Store, StoreError, StoreResult,
    WriteOutcome,
};
use crate::store::{add_count, skip_count};

/// SQLite's default limit on bound parameters per statement (SQLITE_MAX_VARIABLE_NUMBER).
const MAX_BINDS: usize = 32_766;
const KEYWORD_LIST_SEPARATOR: char = '\u{2661}';

pub struct SqliteStore {
    name: String,
    path: PathBuf,
    /// Reads (scans, counts) run in parallel on this pool.
    pool: SqlitePool,
    /// SQLite has one writer at a time: writes share one connection rather than queue
    /// in SQLite's busy handler, each holding a connection and its page cache.
    writer: SqlitePool,
    schema: OnceCell<Schema>,
    /// Batches waiting for the next write transaction (group commit, see `write`).
    waiting: std::sync::Mutex<Vec<WaitingBatch>>,
    /// Held by the task writing a group.
    committer: tokio::sync::Mutex<()>,
    /// Write transactions committed so far (how many groups the batches went in).
    commits: std::sync::atomic::AtomicU64,
}

/// A batch handed to the writer, encoded, and where its outcomes go.
struct WaitingBatch {
    rows: Vec<EncodedRow>,
    done: tokio::sync::oneshot::Sender<StoreResult<Vec<WriteOutcome>>>,
}

#[derive(Clone, Copy, Debug)]
struct Schema {
    /// Files created before Temporal v1.27 have no `_version`: rows read as version 0
    /// and writes are insert-if-absent.
    has_version: bool,
    /// Which columns added since Temporal v1.21 the file has (each release's
    /// `schema.sql` is the schema of that release, never upgraded).
    columns: Columns,
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

    async fn schema(&self) -> StoreResult<Schema> {
        self.schema.get_or_try_init(|| self.inspect()).await.copied()
    }

    async fn inspect(&self) -> StoreResult<Schema> {
        if !self.path.exists() {
            return Err(StoreError::Permanent(
                self.context(&format!("database file {} does not exist (sql.databaseName)", self.path.display())),
            ));
        }
        let rows = sqlx::query("SELECT name FROM pragma_table_xinfo('executions_visibility')")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify(&self.context("reading the schema"), e))?;
        let columns: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        if columns.is_empty() {
            return Err(StoreError::Permanent(self.context(
                "table executions_visibility does not exist: is this Temporal's visibility database (schema/sqlite/v3/visibility)?",
            )));
        }
        let has_version = columns.iter().any(|c| c == "_version");
        for column in BASE_COLUMNS.iter().filter(|c| !super::ADDED_AFTER_1_3.contains(c)) {
            if !columns.iter().any(|c| c == column) {
                return Err(StoreError::Permanent(self.context(&format!(
                    "table executions_visibility has no column {column} (vismig reads the SQLite schema of Temporal v1.21 and newer)"
                ))));
            }
        }
        Ok(Schema { has_version, columns: Columns::of(|c| columns.iter().any(|x| x == c)) })
    }

    /// The columns of a record, each prefixed with `table` (e.g. `e.`).
    /// Columns the file lacks are read as Temporal's defaults for them.
    fn select_columns(schema: Schema, table: &str) -> String {
        BASE_COLUMNS
            .iter()
            .map(|c| match *c {
                c if schema.columns.has(c) => format!("{table}{c}"),
                "_version" => "0 AS _version".into(),
                "root_workflow_id" | "root_run_id" => format!("'' AS {c}"),
                c => format!("NULL AS {c}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Existing `_version` per key (0 where the column does not exist), or why it cannot
    /// be read (a text value in a file edited by hand): such a row is left as it is.
    async fn existing_versions(
        conn: &mut sqlx::SqliteConnection,
        rows: &[EncodedRow],
        schema: Schema,
    ) -> Result<Existing, sqlx::Error> {
        let mut found = HashMap::with_capacity(rows.len());
        for chunk in rows.chunks(MAX_BINDS / 2) {
            let version = if schema.has_version { "e._version" } else { "0" };
            // The key comes from the bound values (our own text), never decoded from the row.
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("SELECT k.column1, k.column2, {version} FROM "));
            push_key_join(&mut q, chunk.iter().map(|r| (r.namespace_id.as_str(), r.run_id.as_str())));
            for row in q.build().persistent(false).fetch_all(&mut *conn).await? {
                let version = row
                    .try_get::<i64, _>(2)
                    .map_err(|_| format!("_version {:?}, which is not an integer", raw_text(&row, 2)));
                found.insert((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?), version);
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// SQLite records no schema version (Temporal creates the file from its release's
    /// `schema/sqlite/v3/visibility/schema.sql` and never upgrades it): the columns tell.
    async fn schema_info(&self) -> StoreResult<crate::store::schema::SchemaInfo> {
        let schema = self.schema().await?;
        let has = |c: &str| schema.columns.has(c);
        Ok(crate::store::schema::SchemaInfo::from_columns(
            format!("no schema_version in SQLite; {}", crate::store::schema::sql_release_of(has)),
            has,
            "SQLite files are never upgraded by Temporal: create a new file with the newer release's schema/sqlite/v3/visibility/schema.sql".to_string(),
        ))
    }

    async fn read(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        let schema = self.schema().await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_BINDS / 2) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("SELECT {} FROM ", Self::select_columns(schema, "e.")));
            push_key_join(&mut q, chunk.iter().map(|k| (k.namespace_id.as_str(), k.run_id.as_str())));
            q.push(" ORDER BY e.namespace_id, e.run_id");
            let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("reading"), e))?;
            for row in &rows {
                out.push(super::decode_row(&Cols(row)).map_err(|reason| {
                    StoreError::Permanent(self.context(&format!(
                        "record {}/{}: {reason}",
                        lossy(row, 0),
                        lossy(row, 1)
                    )))
                })?);
            }
        }
        Ok(out)
    }

    /// Temporal truncates times to microseconds for SQL, and so does every writer here.
    fn time_precision(&self) -> crate::record::TimePrecision {
        crate::record::TimePrecision::Microseconds
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    async fn preflight(&self) -> StoreResult<()> {
        self.schema().await.map(|_| ())
    }

    async fn count(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.schema().await?;
        let cutoff = format_time(query.cutoff);
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT namespace_id, status, COUNT(*), \
             SUM(CASE WHEN start_time >= ",
        );
        q.push_bind(cutoff.clone());
        q.push(" OR (close_time IS NOT NULL AND close_time >= ");
        q.push_bind(cutoff);
        q.push(") THEN 1 ELSE 0 END) FROM executions_visibility");
        push_namespace_filter(&mut q, &query.namespaces, " WHERE ");
        q.push(" GROUP BY namespace_id, status");
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("counting"), e))?;
        let mut counts = Counts::new();
        for row in rows {
            let total: i64 = row.try_get(2).map_err(|e| classify(&self.context("counting"), e))?;
            let recent: i64 = row.try_get(3).map_err(|e| classify(&self.context("counting"), e))?;
            // SQLite holds whatever was written: a namespace id that is not UTF-8, or a
            // status that is text or NULL, panicked here. Left out, named in a warning.
            let ns = match StoredKey::from_bytes(raw_bytes(&row, 0).unwrap_or_default()) {
                StoredKey::Text(ns) => ns,
                bytes @ StoredKey::Bytes(_) => {
                    skip_count(&self.describe(), &bytes.describe(), "namespace_id is not valid UTF-8", total);
                    continue;
                }
            };
            match row.try_get::<i64, _>(1) {
                Ok(status) => add_count(&mut counts, &self.describe(), &ns, status, total, recent),
                Err(_) => {
                    let why = format!("status {:?} is not an integer", raw_text(&row, 1));
                    skip_count(&self.describe(), &ns, &why, total)
                }
            }
        }
        Ok(counts)
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
        let namespaces = if namespaces.is_empty() {
            sqlx::query("SELECT DISTINCT namespace_id FROM executions_visibility ORDER BY namespace_id")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| classify(&self.context("listing namespaces"), e))?
                .iter()
                // As stored: trimmed or lossy, a namespace id matched no row and was never scanned.
                .map(|row| StoredKey::from_bytes(raw_bytes(row, 0).unwrap_or_default()))
                .collect()
        } else {
            namespaces.iter().map(|ns| StoredKey::Text(ns.clone())).collect::<Vec<_>>()
        };
        Ok(RunRange::plan_keys(&namespaces, split).iter().map(RunRange::to_spec).collect())
    }

    async fn scan(&self, shard: &ShardSpec, after: Option<&Cursor>, limit: usize) -> StoreResult<ScanPage> {
        let schema = self.schema().await?;
        let range = RunRange::from_spec(shard)?;
        let after = after.map(cursor_run).transpose()?;
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {} FROM executions_visibility WHERE namespace_id = ",
            Self::select_columns(schema, "")
        ));
        range.push_bounds(&mut q, after.as_ref(), KeySql::SQLITE)?;
        q.push(" ORDER BY run_id LIMIT ");
        q.push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("scanning"), e))?;
        let done = rows.len() < limit;
        let mut page = ScanPage { records: Vec::with_capacity(rows.len()), bad_rows: Vec::new(), cursor: None, done };
        for row in &rows {
            match super::decode_row(&Cols(row)) {
                Ok(record) => page.records.push(record),
                Err(reason) => page.bad_rows.push(bad_row(row, reason)),
            }
            // The cursor is the stored run id's exact bytes (untrimmed, not made lossy),
            // so the next page starts strictly after this row.
            page.cursor = Some(run_cursor(&raw_bytes(row, 1).unwrap_or_default()));
        }
        Ok(page)
    }

    async fn estimate(&self, namespaces: &[String]) -> StoreResult<u64> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT COUNT(*) FROM executions_visibility");
        push_namespace_filter(&mut q, namespaces, " WHERE ");
        let n: i64 =
            q.build().fetch_one(&self.pool).await.map_err(|e| classify(&self.context("counting rows"), e))?.get(0);
        Ok(n as u64)
    }
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
        let rows: Vec<EncodedRow> = records.iter().map(encode_record).collect();
        let _turn = self.committer.lock().await;
        let mut outcomes = self.write_transaction(schema, &[&rows], true).await?;
        Ok(outcomes.remove(0))
    }
}

impl SqliteStore {
    async fn write_group(&self, schema: Schema, group: Vec<WaitingBatch>) {
        if group.len() > 1 {
            let batches: Vec<&[EncodedRow]> = group.iter().map(|b| b.rows.as_slice()).collect();
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
        batches: &[&[EncodedRow]],
        same_version: bool,
    ) -> StoreResult<Vec<Vec<WriteOutcome>>> {
        let ctx = || self.context("writing a batch");
        // IMMEDIATE takes the write lock up front, so the versions read below cannot
        // change before the upsert: the per-record outcomes are exact.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| classify(&ctx(), e))?;
        let mut outcomes = Vec::with_capacity(batches.len());
        for rows in batches {
            let existing = Self::existing_versions(&mut tx, rows, schema).await.map_err(|e| classify(&ctx(), e))?;

            let columns: Vec<&str> = BASE_COLUMNS.iter().copied().filter(|c| schema.columns.has(c)).collect();
            // A row whose stored version cannot be read is not written at all.
            let writable: Vec<&EncodedRow> = rows
                .iter()
                .filter(|r| !matches!(existing.get(&(r.namespace_id.clone(), r.run_id.clone())), Some(Err(_))))
                .collect();
            for chunk in writable.chunks(MAX_BINDS / BASE_COLUMNS.len()) {
                let mut q: QueryBuilder<Sqlite> =
                    QueryBuilder::new(format!("INSERT INTO executions_visibility ({}) ", columns.join(", ")));
                q.push_values(chunk, |mut b, row| {
                    for column in &columns {
                        match *column {
                            "namespace_id" => b.push_bind(row.namespace_id.clone()),
                            "run_id" => b.push_bind(row.run_id.clone()),
                            "workflow_type_name" => b.push_bind(row.workflow_type_name.clone()),
                            "workflow_id" => b.push_bind(row.workflow_id.clone()),
                            "start_time" => b.push_bind(row.start_time.clone()),
                            "execution_time" => b.push_bind(row.execution_time.clone()),
                            "status" => b.push_bind(row.status),
                            "close_time" => b.push_bind(row.close_time.clone()),
                            "history_length" => b.push_bind(row.history_length),
                            "history_size_bytes" => b.push_bind(row.history_size_bytes),
                            "execution_duration" => b.push_bind(row.execution_duration),
                            "state_transition_count" => b.push_bind(row.state_transition_count),
                            "memo" => b.push_bind(row.memo.clone()),
                            "encoding" => b.push_bind(row.encoding.clone()),
                            "task_queue" => b.push_bind(row.task_queue.clone()),
                            "search_attributes" => b.push_bind(row.search_attributes.clone()),
                            "parent_workflow_id" => b.push_bind(row.parent_workflow_id.clone()),
                            "parent_run_id" => b.push_bind(row.parent_run_id.clone()),
                            "root_workflow_id" => b.push_bind(row.root_workflow_id.clone()),
                            "root_run_id" => b.push_bind(row.root_run_id.clone()),
                            "_version" => b.push_bind(row.version),
                            other => unreachable!("not a base column: {other}"),
                        };
                    }
                });
                if schema.has_version {
                    // Temporal's own guard: an equal or older version is a silent no-op, and a
                    // record without a version (0) is therefore only ever inserted.
                    let set: Vec<String> = columns
                        .iter()
                        .filter(|c| !matches!(**c, "namespace_id" | "run_id"))
                        .map(|c| format!("{c} = excluded.{c}"))
                        .collect();
                    let guard = if same_version { "<=" } else { "<" };
                    q.push(format!(
                        " ON CONFLICT (namespace_id, run_id) DO UPDATE SET {} WHERE executions_visibility._version {guard} excluded._version",
                        set.join(", ")
                    ));
                } else {
                    q.push(" ON CONFLICT (namespace_id, run_id) DO NOTHING");
                }
                q.build().persistent(false).execute(&mut *tx).await.map_err(|e| classify(&ctx(), e))?;
            }
            outcomes.push(outcomes_of(rows, &existing, schema, same_version));
        }
        tx.commit().await.map_err(|e| classify(&ctx(), e))?;
        self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(outcomes)
    }
}

/// The `_version` of each key already in the table, or why it cannot be read.
type Existing = HashMap<(String, String), Result<i64, String>>;

/// Each row's outcome, from the version it found in the table (none: inserted).
fn outcomes_of(rows: &[EncodedRow], existing: &Existing, schema: Schema, same_version: bool) -> Vec<WriteOutcome> {
    rows.iter()
        .map(|r| {
            let version = if schema.has_version { r.version } else { 0 };
            match existing.get(&(r.namespace_id.clone(), r.run_id.clone())) {
                None => WriteOutcome::Inserted,
                Some(Err(why)) => unknown_version(why),
                Some(Ok(old)) if *old < version => WriteOutcome::Updated,
                Some(Ok(old)) if *old == version && same_version && schema.has_version => WriteOutcome::Updated,
                Some(Ok(old)) if *old > version => WriteOutcome::SkippedNewer,
                Some(Ok(_)) => WriteOutcome::SkippedPresent,
            }
        })
        .collect()
}

/// A row of the secondary whose version cannot be read might be newer: it is never
/// overwritten, and the record goes to the dead letter saying why.
fn unknown_version(why: &str) -> WriteOutcome {
    WriteOutcome::Failed(format!("the secondary already holds this record with {why}; left as it is"))
}

fn push_key_join<'k>(q: &mut QueryBuilder<Sqlite>, keys: impl IntoIterator<Item = (&'k str, &'k str)>) {
    q.push("(VALUES ");
    push_keys(q, keys, "");
    q.push(") AS k CROSS JOIN executions_visibility e ON e.namespace_id = k.column1 AND e.run_id = k.column2");
}

fn push_namespace_filter(q: &mut QueryBuilder<Sqlite>, namespaces: &[String], joiner: &str) {
    if namespaces.is_empty() {
        return;
    }
    q.push(joiner).push("namespace_id IN (");
    let mut sep = q.separated(", ");
    for ns in namespaces {
        sep.push_bind(ns.clone());
    }
    q.push(")");
}

/// A record in the column order of `BASE_COLUMNS`, as SQLite stores it.
struct EncodedRow {
    namespace_id: String,
    run_id: String,
    workflow_type_name: String,
    workflow_id: String,
    start_time: String,
    execution_time: String,
    status: i32,
    close_time: Option<String>,
    history_length: Option<i64>,
    history_size_bytes: Option<i64>,
    execution_duration: Option<i64>,
    state_transition_count: Option<i64>,
    memo: Option<Vec<u8>>,
    encoding: String,
    task_queue: String,
    search_attributes: Option<String>,
    parent_workflow_id: Option<String>,
    parent_run_id: Option<String>,
    root_workflow_id: String,
    root_run_id: String,
    version: i64,
}

fn encode_record(r: &VisibilityRecord) -> EncodedRow {
    EncodedRow {
        namespace_id: r.namespace_id.clone(),
        run_id: r.run_id.clone(),
        workflow_type_name: r.workflow_type_name.clone(),
        workflow_id: r.workflow_id.clone(),
        start_time: format_time(r.start_time),
        execution_time: format_time(r.execution_time),
        status: r.status.as_i32(),
        close_time: r.close_time.map(format_time),
        history_length: r.history_length,
        history_size_bytes: r.history_size_bytes,
        execution_duration: r.execution_duration,
        state_transition_count: r.state_transition_count,
        memo: r.memo.clone(),
        encoding: r.encoding.clone(),
        task_queue: r.task_queue.clone(),
        search_attributes: r.search_attributes.as_ref().map(encode_search_attributes),
        parent_workflow_id: r.parent_workflow_id.clone(),
        parent_run_id: r.parent_run_id.clone(),
        root_workflow_id: r.root_workflow_id.clone(),
        root_run_id: r.root_run_id.clone(),
        version: r.version,
    }
}

/// SQLite stores a KeywordList as one string joined by U+2661 (a one-item list is just
/// the item); every other value as in the other SQL dialects.
pub fn encode_search_attributes(sa: &SearchAttributes) -> String {
    let mut json = sa.to_json();
    if let Some(object) = json.as_object_mut() {
        for value in object.values_mut() {
            if let serde_json::Value::Array(items) = value {
                let joined: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
                *value = serde_json::Value::String(joined.join(&KEYWORD_LIST_SEPARATOR.to_string()));
            }
        }
    }
    json.to_string()
}

/// The inverse of `encode_search_attributes`: a string holding U+2661 is a list, and
/// so is any string of an attribute registered as KeywordList.
pub fn decode_search_attributes(text: &str) -> Result<SearchAttributes, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("search_attributes is not valid JSON: {e}"))?;
    let mut sa = SearchAttributes::from_json(&json)?;
    for (name, value) in sa.0.iter_mut() {
        if let SearchAttributeValue::String(s) = value {
            if s.contains(KEYWORD_LIST_SEPARATOR) {
                *value =
                    SearchAttributeValue::KeywordList(s.split(KEYWORD_LIST_SEPARATOR).map(str::to_string).collect());
            } else if known_search_attribute_type(name) == Some(SearchAttributeType::KeywordList) {
                *value = SearchAttributeValue::KeywordList(vec![s.clone()]);
            }
        }
    }
    Ok(sa)
}

/// Go's `2006-01-02 15:04:05.999999999-07:00` for a UTC time truncated to microseconds,
/// as Temporal's SQLite plugin writes it: trailing zeros of the fraction trimmed, no
/// fraction at all when it is zero.
pub fn format_time(t: DateTime<Utc>) -> String {
    let micros = t.nanosecond() / 1_000 % 1_000_000;
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    if micros != 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str("+00:00");
    s
}

/// Parses the time texts SQLite files hold: Go's layout above, with `T` or a space,
/// any number of fraction digits, and an offset (`+00:00`, `Z`) or none (UTC).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let s = text.trim();
    let bad = || format!("invalid timestamp {s:?}");
    if s.len() < 19 {
        return Err(bad());
    }
    let (date_time, rest) = s.split_at(19);
    let naive =
        NaiveDateTime::parse_from_str(&date_time.replacen('T', " ", 1), "%Y-%m-%d %H:%M:%S").map_err(|_| bad())?;
    let mut rest = rest;
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        let padded = format!("{:0<9}", &frac[..digits]);
        nanos = padded.parse().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset_secs: i32 = match rest {
        "" | "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let h: i32 = o[1..3].parse().map_err(|_| bad())?;
            let m: i32 = o[4..6].parse().map_err(|_| bad())?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad()),
    };
    let local = naive.with_nanosecond(nanos).ok_or_else(bad)?;
    let utc = Utc.from_utc_datetime(&local) - chrono::Duration::seconds(offset_secs as i64);
    Ok(utc)
}

fn raw_bytes(row: &SqliteRow, index: usize) -> Option<Vec<u8>> {
    row.try_get_unchecked::<Option<Vec<u8>>, _>(index).ok().flatten()
}

fn raw_text(row: &SqliteRow, index: usize) -> String {
    raw_bytes(row, index).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

fn lossy(row: &SqliteRow, index: usize) -> String {
    raw_text(row, index).trim_end().to_string()
}

fn bad_row(row: &SqliteRow, reason: String) -> BadRow {
    let mut raw = serde_json::Map::new();
    for (i, column) in BASE_COLUMNS.iter().enumerate() {
        let value = match row.try_get::<Option<i64>, _>(i) {
            Ok(Some(n)) => serde_json::Value::from(n),
            _ => match row.try_get_unchecked::<Option<Vec<u8>>, _>(i) {
                Ok(Some(bytes)) => match String::from_utf8(bytes) {
                    Ok(s) => serde_json::Value::String(s),
                    Err(e) => serde_json::json!({ "invalidUtf8Hex": hex(e.as_bytes()) }),
                },
                _ => serde_json::Value::Null,
            },
        };
        raw.insert((*column).to_string(), value);
    }
    if let Some(serde_json::Value::String(_)) = raw.get("memo") {
        // Memo bytes are binary: render them as hex, not as text.
        if let Ok(Some(bytes)) = row.try_get_unchecked::<Option<Vec<u8>>, _>(12) {
            raw.insert("memo".into(), serde_json::json!({ "hex": hex(&bytes) }));
        }
    }
    BadRow {
        namespace_id: lossy(row, 0),
        run_id: lossy(row, 1),
        workflow_id: Some(lossy(row, 3)),
        reason,
        raw: serde_json::Value::Object(raw),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(row: &SqliteRow, index: usize) -> Result<Option<String>, String> {
    let column = BASE_COLUMNS[index];
    match row.try_get_unchecked::<Option<Vec<u8>>, _>(index) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => String::from_utf8(bytes).map(Some).map_err(|_| format!("{column} is not valid UTF-8")),
        Err(e) => Err(format!("{column}: {e}")),
    }
}

fn int(row: &SqliteRow, index: usize) -> Result<Option<i64>, String> {
    row.try_get::<Option<i64>, _>(index).map_err(|e| format!("{} is not an integer: {e}", BASE_COLUMNS[index]))
}

fn time(row: &SqliteRow, index: usize) -> Result<Option<DateTime<Utc>>, String> {
    text(row, index)?.map(|t| parse_time(&t).map_err(|e| format!("{}: {e}", BASE_COLUMNS[index]))).transpose()
}

/// SQLite's storage of the base columns: times as text in Go's layout, JSON as text.
struct Cols<'r>(&'r SqliteRow);

impl super::RowColumns for Cols<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, String> {
        text(self.0, i)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, String> {
        int(self.0, i)
    }
    fn time(&self, i: usize) -> Result<Option<DateTime<Utc>>, String> {
        time(self.0, i)
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, String> {
        self.0.try_get_unchecked::<Option<Vec<u8>>, _>(i).map_err(|e| format!("{}: {e}", BASE_COLUMNS[i]))
    }
    fn search_attributes(&self, i: usize) -> Result<Option<SearchAttributes>, String> {
        text(self.0, i)?.map(|t| decode_search_attributes(&t)).transpose()
    }
}

/// Creates a SQLite visibility database with vismig's copy of Temporal's schema (for
/// the demo and the tests). WAL mode lets the scanner read while the writer writes.
pub async fn create_database(path: &std::path::Path) -> anyhow::Result<()> {
    use sqlx::Connection;
    let options = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(super::sqlite_schema::ddl())).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn times_use_gos_layout_truncated_to_micros() {
        assert_eq!(format_time(t("2024-05-01T12:00:00.123456789Z")), "2024-05-01 12:00:00.123456+00:00");
        assert_eq!(format_time(t("2024-05-01T12:00:00.120000Z")), "2024-05-01 12:00:00.12+00:00");
        assert_eq!(format_time(t("2024-05-01T12:00:00Z")), "2024-05-01 12:00:00+00:00");
        assert_eq!(format_time(t("1000-01-01T00:00:00Z")), "1000-01-01 00:00:00+00:00");
    }

    #[test]
    fn times_parse_every_layout_seen_in_files() {
        let want = t("2024-05-01T12:00:00.123456Z");
        for text in [
            "2024-05-01 12:00:00.123456+00:00",
            "2024-05-01T12:00:00.123456Z",
            "2024-05-01 12:00:00.123456",
            "2024-05-01 14:00:00.123456+02:00",
            "2024-05-01 12:00:00.123456000+00:00",
        ] {
            assert_eq!(parse_time(text).unwrap(), want, "{text}");
        }
        assert_eq!(parse_time("2024-05-01 12:00:00+00:00").unwrap(), t("2024-05-01T12:00:00Z"));
        for bad in ["", "yesterday", "2024-13-01 00:00:00", "2024-05-01 12:00:00.+00:00", "2024-05-01 12:00:00 UTC"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keyword_lists_are_joined_with_a_heart_and_split_back() {
        let sa = SearchAttributes::from_json(&serde_json::json!({
            "KeywordList01": ["a", "b c"],
            "BuildIds": ["only"],
            "CustomList": ["x", "y"],
            "Keyword01": "plain",
            "Int01": 7
        }))
        .unwrap();
        let text = encode_search_attributes(&sa);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["KeywordList01"], "a\u{2661}b c");
        assert_eq!(json["BuildIds"], "only");
        assert_eq!(json["Int01"], 7);
        assert_eq!(decode_search_attributes(&text).unwrap(), sa);
    }

    #[test]
    fn broken_search_attributes_say_what_is_wrong() {
        assert!(decode_search_attributes("{not json").unwrap_err().contains("not valid JSON"));
        assert!(decode_search_attributes("[]").unwrap_err().contains("not a JSON object"));
    }
}
