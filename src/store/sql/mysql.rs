//! MySQL visibility: MySQL 8 advanced visibility (`schema/mysql/v8/visibility`, plugin
//! `mysql8`) as source and sink, and MySQL 5.7 standard visibility
//! (`schema/mysql/v57/visibility`, plugin `mysql`) as a source only.
//!
//! Stored exactly as Temporal's MySQL plugin stores it: DATETIME(6) as naive UTC
//! truncated to microseconds, `search_attributes` as JSON text with KeywordList values as
//! JSON arrays, and the custom and CHASM search attributes copied into
//! `custom_search_attributes` and `chasm_search_attributes` in the same transaction, with
//! the same JSON and `_version`. Writes use Temporal's own guard
//! (`c = IF(_version < VALUES(_version), VALUES(c), c)`, `_version` assigned last).
//! Values MySQL 8 cannot hold (a memo over 64 KiB, a 256-character id or Keyword) are
//! refused per record, never truncated.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::{ConnectOptions, Executor, QueryBuilder, Row};
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

/// MySQL's limit on placeholders in one prepared statement.
const MAX_BINDS: usize = 65_535;
/// `memo` is a BLOB: at most 65 535 bytes.
const MAX_MEMO_BYTES: usize = 65_535;
/// VARCHAR(255) columns, and the generated VARCHAR(255) / CHAR(255) ARRAY columns of
/// Keyword and KeywordList search attributes on MySQL 8: characters, not bytes.
const MAX_VARCHAR: usize = 255;
/// `namespace_id` and `run_id` are CHAR(64); `encoding` is VARCHAR(64).
const MAX_KEY_CHARS: usize = 64;
/// Double search attributes go into DECIMAL(20,5) generated columns on MySQL 8.
const MAX_DECIMAL_20_5: f64 = 1e15;
/// Upper bound on the bytes of one INSERT statement, below `max_allowed_packet`.
const MAX_STATEMENT_BYTES: usize = 16 << 20;

/// The standard (MySQL 5.7) `executions_visibility`: no version, no search attributes,
/// no size, duration, transition, parent or root columns.
const STANDARD_COLUMNS: [&str; 12] = [
    "namespace_id",
    "run_id",
    "start_time",
    "execution_time",
    "workflow_id",
    "workflow_type_name",
    "status",
    "close_time",
    "history_length",
    "memo",
    "encoding",
    "task_queue",
];

const SIDE_TABLES: [&str; 2] = ["custom_search_attributes", "chasm_search_attributes"];

/// Parameters of Go's MySQL driver that Temporal's DSN may carry in `connectAttributes`;
/// they configure the client, not the session, and vismig sets their equivalents itself.
const DRIVER_PARAMETERS: [&str; 22] = [
    "allowAllFiles",
    "allowCleartextPasswords",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "allowOldPasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "compress",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeout",
    "writeTimeout",
];

pub struct MysqlStore {
    name: String,
    /// `host:port` (or the socket path) and database, for logs and errors.
    location: String,
    database: String,
    /// Plugin `mysql`: the MySQL 5.7 standard schema, read only.
    standard: bool,
    pool: MySqlPool,
    /// For the preflight's probe; never printed (it holds the password).
    options: MySqlConnectOptions,
    schema: OnceCell<Schema>,
}

#[derive(Clone, Copy, Debug)]
struct Schema {
    /// Schemas before Temporal v1.27 (1.9) have no `_version`: rows read as version 0
    /// and writes are insert-if-absent.
    has_version: bool,
    /// `custom_search_attributes` (advanced schema 1.2+).
    custom: Option<SideTable>,
    /// `chasm_search_attributes` (advanced schema 1.11+, Temporal v1.30).
    chasm: Option<SideTable>,
    /// Bytes one statement may hold (from the server's `max_allowed_packet`).
    statement_bytes: usize,
    /// Which columns added since Temporal v1.21 (schema 1.3) the table has.
    columns: Columns,
}

#[derive(Clone, Copy, Debug)]
struct SideTable {
    table: &'static str,
    has_version: bool,
}

impl MysqlStore {
    /// Rows of a fixed query against this store's database (Temporal's namespace
    /// registry when this is the default store).
    pub async fn raw_rows(&self, sql: &'static str) -> StoreResult<Vec<MySqlRow>> {
        sqlx::query(sql).fetch_all(&self.pool).await.map_err(|e| classify(&self.context("reading namespaces"), e))
    }

    pub async fn open(name: &str, cfg: &SqlStore) -> anyhow::Result<Self> {
        let standard = match cfg.plugin_name.as_str() {
            "mysql8" => false,
            "mysql" => true,
            other => anyhow::bail!("store {name:?}: pluginName {other:?} is not a MySQL plugin (mysql8, mysql)"),
        };
        let mut options = MySqlConnectOptions::new()
            .database(&cfg.database_name)
            .statement_cache_capacity(64)
            // Multi-row statements are long: never log their text.
            .disable_statement_logging();
        if cfg.connect_protocol.as_deref() == Some("unix") {
            options = options.socket(&cfg.connect_addr);
        } else {
            let (host, port) = parse_address(&cfg.connect_addr).map_err(|e| anyhow::anyhow!("store {name:?}: {e}"))?;
            options = options.host(&host).port(port);
        }
        if let Some(user) = cfg.user.as_deref().filter(|u| !u.is_empty()) {
            options = options.username(user);
        }
        if let Some(password) = cfg.password.as_ref().filter(|p| !p.is_empty()) {
            options = options.password(password.expose());
        }
        match cfg.tls.as_ref().filter(|t| t.enabled) {
            Some(tls) => {
                // As Temporal: the server's certificate is checked against caFile, and its
                // name only with enableHostVerification.
                let mode = if tls.enable_host_verification == Some(true) {
                    MySqlSslMode::VerifyIdentity
                } else if tls.ca_file.as_deref().is_some_and(|f| !f.is_empty()) {
                    MySqlSslMode::VerifyCa
                } else {
                    MySqlSslMode::Required
                };
                options = options.ssl_mode(mode);
                for (key, file) in [("caFile", &tls.ca_file), ("certFile", &tls.cert_file), ("keyFile", &tls.key_file)]
                {
                    if let Some(file) = file.as_deref().filter(|f| !f.is_empty()) {
                        if !std::path::Path::new(file).exists() {
                            anyhow::bail!("store {name:?}: sql.tls.{key} {file:?} does not exist");
                        }
                        options = match key {
                            "caFile" => options.ssl_ca(file),
                            "certFile" => options.ssl_client_cert(file),
                            _ => options.ssl_client_key(file),
                        };
                    }
                }
                if tls.server_name.as_deref().is_some_and(|s| !s.is_empty()) {
                    tracing::warn!(
                        store = name,
                        "sql.tls.serverName is not supported for MySQL; the certificate is checked against the host of connectAddr"
                    );
                }
            }
            None => options = options.ssl_mode(MySqlSslMode::Preferred),
        }
        let session = Arc::new(
            session_statements(&cfg.connect_attributes)
                .map_err(|e| anyhow::anyhow!("store {name:?}: sql.connectAttributes: {e}"))?,
        );
        let pool = MySqlPoolOptions::new()
            .max_connections(cfg.max_conns.unwrap_or(10).max(1))
            .acquire_timeout(super::CONNECT_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let session = session.clone();
                Box::pin(async move {
                    for statement in session.iter() {
                        conn.execute(sqlx::AssertSqlSafe(statement.clone())).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        Ok(Self {
            name: name.to_string(),
            location: cfg.connect_addr.clone(),
            database: cfg.database_name.clone(),
            standard,
            pool,
            options,
            schema: OnceCell::new(),
        })
    }

    fn context(&self, what: &str) -> String {
        format!("store {:?} ({}): {what}", self.name, self.describe())
    }

    async fn schema(&self) -> StoreResult<Schema> {
        self.schema.get_or_try_init(|| self.inspect()).await.copied()
    }

    async fn inspect(&self) -> StoreResult<Schema> {
        let rows = sqlx::query(
            "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) FROM information_schema.columns \
             WHERE table_schema = ? AND table_name IN ('executions_visibility', 'custom_search_attributes', 'chasm_search_attributes')",
        )
        .bind(&self.database)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify(&self.context("reading the schema"), e))?;
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in &rows {
            let table = lossy(row, 0).to_ascii_lowercase();
            tables.entry(table).or_default().push(lossy(row, 1).to_ascii_lowercase());
        }
        let dir = if self.standard { "schema/mysql/v57/visibility" } else { "schema/mysql/v8/visibility" };
        let Some(columns) = tables.get("executions_visibility") else {
            return Err(StoreError::Permanent(self.context(&format!(
                "table executions_visibility does not exist in database {}: is this Temporal's visibility database ({dir})?",
                self.database
            ))));
        };
        let has = |cols: &[String], c: &str| cols.iter().any(|x| x == c);
        let packet: i64 = sqlx::query("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(&self.context("reading max_allowed_packet"), e))?
            .get(0);
        let statement_bytes = (packet.max(1 << 20) as usize / 2).min(MAX_STATEMENT_BYTES);

        if self.standard {
            for column in STANDARD_COLUMNS {
                if !has(columns, column) {
                    return Err(StoreError::Permanent(
                        self.context(&format!("table executions_visibility has no column {column} ({dir})")),
                    ));
                }
            }
            if has(columns, "search_attributes") {
                tracing::warn!(store = %self.describe(), "pluginName mysql reads the MySQL 5.7 standard schema, but this table has search_attributes: with the advanced schema use pluginName mysql8, or search attributes and versions are not copied");
            }
            let columns = Columns::of(|c| STANDARD_COLUMNS.contains(&c));
            return Ok(Schema { has_version: false, custom: None, chasm: None, statement_bytes, columns });
        }

        for column in BASE_COLUMNS.iter().filter(|c| !super::ADDED_AFTER_1_3.contains(c)) {
            if !has(columns, column) {
                let hint = if *column == "search_attributes" {
                    " (pluginName mysql8 needs Temporal's advanced schema; read a MySQL 5.7 standard schema with pluginName mysql)"
                } else {
                    " (vismig needs schema 1.3, Temporal v1.21, or newer: upgrade it with temporal-sql-tool update-schema)"
                };
                return Err(StoreError::Permanent(
                    self.context(&format!("table executions_visibility has no column {column}{hint}")),
                ));
            }
        }
        let has_version = has(columns, "_version");
        let mut side = [None, None];
        for (i, table) in SIDE_TABLES.iter().enumerate() {
            let Some(cols) = tables.get(*table) else {
                if i == 0 {
                    return Err(StoreError::Permanent(self.context(
                        "table custom_search_attributes does not exist: Temporal's MySQL 8 schema keeps the custom search attributes there (schema 1.2+)",
                    )));
                }
                continue; // chasm_search_attributes came with schema 1.11 (Temporal v1.30)
            };
            let mut required = vec!["namespace_id", "run_id", "search_attributes"];
            if has_version || i == 1 {
                required.push("_version");
            }
            for column in required {
                if !has(cols, column) {
                    return Err(StoreError::Permanent(self.context(&format!("table {table} has no column {column}"))));
                }
            }
            side[i] = Some(SideTable { table, has_version: has(cols, "_version") });
        }
        let present = Columns::of(|c| has(columns, c));
        Ok(Schema { has_version, custom: side[0], chasm: side[1], statement_bytes, columns: present })
    }

    /// `curr_version` from Temporal's `schema_version` table; None without the table.
    async fn schema_version(&self) -> StoreResult<Option<String>> {
        let ctx = || self.context("reading the schema version");
        let tables: i64 = sqlx::query(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = 'schema_version'",
        )
        .bind(&self.database)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| classify(&ctx(), e))?
        .get(0);
        if tables == 0 {
            return Ok(None);
        }
        let row =
            sqlx::query("SELECT CAST(curr_version AS CHAR) FROM schema_version ORDER BY version_partition LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| classify(&ctx(), e))?;
        Ok(row.map(|r| lossy(&r, 0)))
    }

    fn select_columns(&self, schema: Schema) -> String {
        BASE_COLUMNS
            .iter()
            .map(|c| match *c {
                c if schema.columns.has(c) => c.to_string(),
                "_version" => "CAST(0 AS SIGNED) AS _version".to_string(),
                "root_workflow_id" | "root_run_id" => format!("'' AS {c}"),
                c => format!("NULL AS {c}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Existing `_version` per key (0 where the column does not exist), locked until the
    /// transaction ends so that the outcomes computed from them are exact.
    async fn existing_versions(
        conn: &mut sqlx::MySqlConnection,
        rows: &[&EncodedRow],
        schema: Schema,
    ) -> Result<HashMap<(String, String), Result<i64, String>>, sqlx::Error> {
        let version = if schema.has_version { "_version" } else { "CAST(0 AS SIGNED)" };
        let mut found = HashMap::with_capacity(rows.len());
        for (namespace, runs) in by_namespace(rows.iter().map(|r| (&r.namespace_id, &r.run_id))) {
            for chunk in runs.chunks(MAX_BINDS - 1) {
                let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!(
                    "SELECT namespace_id, run_id, {version} FROM executions_visibility WHERE namespace_id = "
                ));
                q.push_bind(namespace.clone());
                q.push(" AND run_id IN (");
                let mut sep = q.separated(", ");
                for run in chunk {
                    sep.push_bind((*run).clone());
                }
                q.push(") FOR UPDATE");
                for row in q.build().persistent(false).fetch_all(&mut *conn).await? {
                    // A NULL `_version` (NOT NULL dropped by hand) panicked here; such a row
                    // might be newer, so it is left as it is (see `write_rows`).
                    let version = match row.try_get::<Option<i64>, _>(2) {
                        Ok(Some(v)) => Ok(v),
                        Ok(None) => Err("_version NULL".to_string()),
                        Err(e) => Err(format!("a _version that cannot be read ({e})")),
                    };
                    found.insert(key_of(&lossy(&row, 0), &lossy(&row, 1)), version);
                }
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl Store for MysqlStore {
    async fn read(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        let schema = self.schema().await?;
        let mut out = Vec::with_capacity(keys.len());
        for (namespace, runs) in by_namespace(keys.iter().map(|k| (&k.namespace_id, &k.run_id))) {
            for chunk in runs.chunks(MAX_BINDS - 1) {
                let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!(
                    "SELECT {} FROM executions_visibility WHERE namespace_id = ",
                    self.select_columns(schema)
                ));
                q.push_bind(namespace.clone());
                q.push(" AND run_id IN (");
                let mut sep = q.separated(", ");
                for run in chunk {
                    sep.push_bind((*run).clone());
                }
                q.push(")");
                let rows = q
                    .build()
                    .persistent(false)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| classify(&self.context("reading"), e))?;
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
        }
        out.sort_by(|a, b| (&a.namespace_id, &a.run_id).cmp(&(&b.namespace_id, &b.run_id)));
        Ok(out)
    }

    /// Temporal truncates times to microseconds for SQL, and so does every writer here.
    fn time_precision(&self) -> crate::record::TimePrecision {
        crate::record::TimePrecision::Microseconds
    }

    fn describe(&self) -> String {
        format!("mysql {}/{}", self.location, self.database)
    }

    async fn preflight(&self) -> StoreResult<()> {
        super::probe(&self.options, &self.context(&format!("connecting to {}", self.location))).await?;
        self.schema().await.map(|_| ())
    }

    async fn schema_info(&self) -> StoreResult<crate::store::schema::SchemaInfo> {
        let schema = self.schema().await?;
        let version = self.schema_version().await?;
        let has = |c: &str| schema.columns.has(c);
        let version = match version {
            Some(v) => format!("schema {v}"),
            None => format!("no schema_version table; {}", crate::store::schema::sql_release_of(has)),
        };
        Ok(crate::store::schema::SchemaInfo::from_columns(
            version,
            has,
            super::upgrade_hint("mysql8", &self.database, "mysql/v8/visibility"),
        ))
    }

    async fn count(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.schema().await?;
        let cutoff = query.cutoff.naive_utc();
        let mut q: QueryBuilder<MySql> = QueryBuilder::new(
            "SELECT namespace_id, status, COUNT(*), \
             CAST(SUM(CASE WHEN start_time >= ",
        );
        q.push_bind(cutoff);
        q.push(" OR (close_time IS NOT NULL AND close_time >= ");
        q.push_bind(cutoff);
        q.push(") THEN 1 ELSE 0 END) AS SIGNED) FROM executions_visibility");
        push_namespace_filter(&mut q, &query.namespaces, " WHERE ");
        q.push(" GROUP BY namespace_id, status");
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("counting"), e))?;
        let mut counts = Counts::new();
        for row in rows {
            let total: i64 = row.try_get(2).map_err(|e| classify(&self.context("counting"), e))?;
            let recent: i64 = row.try_get(3).map_err(|e| classify(&self.context("counting"), e))?;
            // A namespace id that is not UTF-8 (a binary column) or a NULL status (NOT NULL
            // dropped by hand): left out, named in a warning; its rows are dead-lettered.
            let ns = match StoredKey::from_bytes(raw_bytes(&row, 0).unwrap_or_default()) {
                StoredKey::Text(ns) => ns,
                bytes @ StoredKey::Bytes(_) => {
                    skip_count(&self.describe(), &bytes.describe(), "namespace_id is not valid UTF-8", total);
                    continue;
                }
            };
            match row.try_get::<Option<i64>, _>(1).map_err(|e| classify(&self.context("counting"), e))? {
                Some(status) => add_count(&mut counts, &self.describe(), ns.trim_end(), status, total, recent),
                None => skip_count(&self.describe(), ns.trim_end(), "status is NULL", total),
            }
        }
        Ok(counts)
    }
}

#[async_trait]
impl Source for MysqlStore {
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
                // As stored: a lossy namespace id matched no row and was never scanned.
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
        let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!(
            "SELECT {} FROM executions_visibility WHERE namespace_id = ",
            self.select_columns(schema)
        ));
        range.push_bounds(&mut q, after.as_ref(), KeySql::MYSQL)?;
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
            // The stored run id's exact bytes: a lossy cursor skipped rows or re-read a
            // page forever when a (binary) run id was not UTF-8.
            page.cursor = Some(run_cursor(&raw_bytes(row, 1).unwrap_or_default()));
        }
        Ok(page)
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
        let mut q: QueryBuilder<MySql> = QueryBuilder::new("SELECT COUNT(*) FROM executions_visibility");
        push_namespace_filter(&mut q, namespaces, " WHERE ");
        let n: i64 =
            q.build().fetch_one(&self.pool).await.map_err(|e| classify(&self.context("counting rows"), e))?.get(0);
        Ok(n as u64)
    }
}

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
        let mut rows: Vec<(usize, EncodedRow)> = Vec::with_capacity(records.len());
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
        rows: &[(usize, EncodedRow)],
        schema: Schema,
        same_version: bool,
    ) -> StoreResult<Vec<WriteOutcome>> {
        let replaces_same = same_version && schema.has_version;
        let ctx = || self.context("writing a batch");
        let mut tx = self.pool.begin().await.map_err(|e| classify(&ctx(), e))?;
        let all: Vec<&EncodedRow> = rows.iter().map(|(_, r)| r).collect();
        let mut current = Self::existing_versions(&mut tx, &all, schema).await.map_err(|e| classify(&ctx(), e))?;

        // MySQL applies the rows of a multi-row upsert one after the other, so a key that
        // appears twice (keys compare case-insensitively) sees the first one's write.
        let mut outcomes = Vec::with_capacity(rows.len());
        let mut to_write: Vec<&EncodedRow> = Vec::new();
        let mut expected_affected = 0u64;
        // A same-version row whose columns already hold these values counts 1, not 2
        // (the connection asks for found rows, CLIENT_FOUND_ROWS).
        let mut least_affected = 0u64;
        for row in &all {
            let version = if schema.has_version { row.version } else { 0 };
            let key = key_of(&row.namespace_id, &row.run_id);
            let outcome = match current.get(&key) {
                None => WriteOutcome::Inserted,
                Some(Err(why)) => {
                    WriteOutcome::Failed(format!("the secondary already holds this record with {why}; left as it is"))
                }
                Some(Ok(old)) if *old < version => WriteOutcome::Updated,
                Some(Ok(old)) if *old == version && replaces_same => WriteOutcome::Updated,
                Some(Ok(old)) if *old > version => WriteOutcome::SkippedNewer,
                Some(Ok(_)) => WriteOutcome::SkippedPresent,
            };
            match outcome {
                WriteOutcome::Inserted => {
                    expected_affected += 1;
                    least_affected += 1;
                }
                WriteOutcome::Updated => {
                    expected_affected += 2;
                    least_affected += if current.get(&key) == Some(&Ok(version)) { 1 } else { 2 };
                }
                _ => {}
            }
            if matches!(outcome, WriteOutcome::Inserted | WriteOutcome::Updated) {
                current.insert(key, Ok(version));
                to_write.push(row);
            }
            outcomes.push(outcome);
        }

        let columns: Vec<&str> = BASE_COLUMNS.iter().copied().filter(|c| schema.columns.has(c)).collect();
        let upsert = if schema.has_version {
            // Temporal's guard: an equal or older version is a no-op, and `_version` is
            // assigned last because MySQL applies the assignments left to right.
            let guard = if replaces_same { "<=" } else { "<" };
            let set: Vec<String> = columns
                .iter()
                .filter(|c| !matches!(**c, "namespace_id" | "run_id"))
                .map(|c| format!("{c} = IF(_version {guard} VALUES(_version), VALUES({c}), {c})"))
                .collect();
            format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "))
        } else {
            " ON DUPLICATE KEY UPDATE run_id = run_id".to_string()
        };
        let mut affected = 0u64;
        for chunk in statement_chunks(&to_write, columns.len(), schema.statement_bytes) {
            let mut q: QueryBuilder<MySql> =
                QueryBuilder::new(format!("INSERT INTO executions_visibility ({}) ", columns.join(", ")));
            q.push_values(chunk, |mut b, row| {
                for column in &columns {
                    match *column {
                        "namespace_id" => b.push_bind(row.namespace_id.clone()),
                        "run_id" => b.push_bind(row.run_id.clone()),
                        "workflow_type_name" => b.push_bind(row.workflow_type_name.clone()),
                        "workflow_id" => b.push_bind(row.workflow_id.clone()),
                        "start_time" => b.push_bind(row.start_time),
                        "execution_time" => b.push_bind(row.execution_time),
                        "status" => b.push_bind(row.status),
                        "close_time" => b.push_bind(row.close_time),
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
            q.push(&upsert);
            affected +=
                q.build().persistent(false).execute(&mut *tx).await.map_err(|e| classify(&ctx(), e))?.rows_affected();
        }
        if !(least_affected..=expected_affected).contains(&affected) {
            // A row absent when the versions were read was inserted by someone else (a
            // live dual write) before this upsert: the outcomes would be wrong. Nothing
            // is committed; the retry reads the versions again.
            drop(tx);
            return Err(StoreError::Transient(self.context(&format!(
                "a concurrent write changed rows of this batch while it was written ({affected} rows affected, {expected_affected} expected); retrying"
            ))));
        }

        // The side tables follow executions_visibility: the rows written there get the same
        // JSON and version. `<=` overwrites Temporal's insert-if-absent side rows (version
        // 0) and never a newer side row.
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
            for chunk in statement_chunks(&to_write, 4, schema.statement_bytes) {
                let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!("INSERT INTO {} ({columns}) ", side.table));
                q.push_values(chunk, |mut b, row| {
                    b.push_bind(row.namespace_id.clone())
                        .push_bind(row.run_id.clone())
                        .push_bind(row.search_attributes.clone());
                    if with_version {
                        b.push_bind(row.version);
                    }
                });
                q.push(update);
                q.build().persistent(false).execute(&mut *tx).await.map_err(|e| classify(&ctx(), e))?;
            }
        }
        tx.commit().await.map_err(|e| classify(&ctx(), e))?;
        Ok(outcomes)
    }
}

/// Keys grouped by namespace, in first-seen order, so that each lookup is one range of
/// the primary key.
fn by_namespace<'a>(keys: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<(String, Vec<&'a String>)> {
    let mut out: Vec<(String, Vec<&'a String>)> = Vec::new();
    let mut index: HashMap<&'a String, usize> = HashMap::new();
    for (namespace, run) in keys {
        let i = *index.entry(namespace).or_insert_with(|| {
            out.push((namespace.clone(), Vec::new()));
            out.len() - 1
        });
        out[i].1.push(run);
    }
    out
}

/// A key as the primary key compares it: Temporal's tables use case-insensitive,
/// PAD SPACE collations.
fn key_of(namespace_id: &str, run_id: &str) -> (String, String) {
    (namespace_id.trim_end().to_lowercase(), run_id.trim_end().to_lowercase())
}

/// Rows split so that no statement exceeds the placeholder limit or `max_bytes`.
fn statement_chunks<'a>(
    rows: &'a [&'a EncodedRow],
    binds_per_row: usize,
    max_bytes: usize,
) -> Vec<&'a [&'a EncodedRow]> {
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

fn push_namespace_filter(q: &mut QueryBuilder<MySql>, namespaces: &[String], joiner: &str) {
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

/// `host:port`, `[v6]:port` or a bare host (port 3306).
fn parse_address(addr: &str) -> Result<(String, u16), String> {
    let bad = || format!("sql.connectAddr {addr:?} is not host:port");
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, rest) = rest.split_once(']').ok_or_else(bad)?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if rest.is_empty() => 3306,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match addr.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Ok((addr.to_string(), 3306)), // bare IPv6
        Some((host, port)) if !host.is_empty() => Ok((host.to_string(), port.parse().map_err(|_| bad())?)),
        Some(_) => Err(bad()),
        None => Ok((addr.to_string(), 3306)),
    }
}

/// The statements run on every new connection: READ COMMITTED as Temporal's plugin sets
/// it (no gap locks between parallel writers), strict mode so that nothing is ever
/// truncated silently, then each of `connectAttributes` as a session variable, as Go's
/// driver does with parameters it does not know itself.
fn session_statements(attributes: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    if !attributes.keys().any(|k| k == "tx_isolation" || k == "transaction_isolation") {
        out.push("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_string());
    }
    out.push("SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')".to_string());
    for (key, value) in attributes {
        if DRIVER_PARAMETERS.contains(&key.as_str()) || key == "tls" {
            tracing::debug!(attribute = %key, "connect attribute of Go's MySQL driver ignored: vismig sets its own equivalent");
            continue;
        }
        let valid_key = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(format!("{key:?} is not a session variable name"));
        }
        out.push(format!("SET SESSION {key} = {}", session_value(value)));
    }
    Ok(out)
}

/// A session variable's value: numbers and bare words (ON, READ_COMMITTED) as they are,
/// anything else as a quoted string (Temporal's own default is `'READ-COMMITTED'`, quotes
/// included).
fn session_value(value: &str) -> String {
    let v = value.trim();
    let unquoted =
        ['\'', '"'].iter().find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)).filter(|_| v.len() >= 2));
    let bare = !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if unquoted.is_none() && (bare || v.parse::<f64>().is_ok_and(f64::is_finite)) {
        return v.to_string();
    }
    let s = unquoted.unwrap_or(v);
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A record in the column order of `BASE_COLUMNS`, as MySQL stores it.
#[derive(Debug)]
struct EncodedRow {
    namespace_id: String,
    run_id: String,
    workflow_type_name: String,
    workflow_id: String,
    start_time: NaiveDateTime,
    execution_time: NaiveDateTime,
    status: i32,
    close_time: Option<NaiveDateTime>,
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

impl EncodedRow {
    /// Approximate bytes on the wire.
    fn size(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        256 + self.namespace_id.len()
            + self.run_id.len()
            + self.workflow_type_name.len()
            + self.workflow_id.len()
            + self.memo.as_ref().map_or(0, Vec::len)
            + self.encoding.len()
            + self.task_queue.len()
            + 2 * opt(&self.search_attributes) // also written to the side tables
            + opt(&self.parent_workflow_id)
            + opt(&self.parent_run_id)
            + self.root_workflow_id.len()
            + self.root_run_id.len()
    }
}

/// Converts a record for MySQL, or says every value MySQL cannot hold.
fn encode_record(r: &VisibilityRecord, max_bytes: usize) -> Result<EncodedRow, String> {
    let mut problems = mysql_limits(r);
    let mut time = |column: &str, t: DateTime<Utc>| match mysql_datetime(t) {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("{column} {e}"));
            NaiveDateTime::default()
        }
    };
    let row = EncodedRow {
        namespace_id: r.namespace_id.clone(),
        run_id: r.run_id.clone(),
        workflow_type_name: r.workflow_type_name.clone(),
        workflow_id: r.workflow_id.clone(),
        start_time: time("start_time", r.start_time),
        execution_time: time("execution_time", r.execution_time),
        status: r.status.as_i32(),
        close_time: r.close_time.map(|t| time("close_time", t)),
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
    };
    if problems.is_empty() && row.size() > max_bytes {
        problems.push(format!(
            "the record is {} bytes, more than one statement may hold on this server ({max_bytes} bytes, half of max_allowed_packet)",
            row.size()
        ));
    }
    if problems.is_empty() { Ok(row) } else { Err(problems.join("; ")) }
}

/// Every value of `r` that MySQL 8's advanced schema cannot hold without truncation.
fn mysql_limits(r: &VisibilityRecord) -> Vec<String> {
    let mut problems = Vec::new();
    let chars = |s: &str| s.chars().count();
    for (column, value, max) in [
        ("namespace_id", Some(&r.namespace_id), MAX_KEY_CHARS),
        ("run_id", Some(&r.run_id), MAX_KEY_CHARS),
        ("encoding", Some(&r.encoding), MAX_KEY_CHARS),
        ("workflow_id", Some(&r.workflow_id), MAX_VARCHAR),
        ("workflow_type_name", Some(&r.workflow_type_name), MAX_VARCHAR),
        ("task_queue", Some(&r.task_queue), MAX_VARCHAR),
        ("parent_workflow_id", r.parent_workflow_id.as_ref(), MAX_VARCHAR),
        ("parent_run_id", r.parent_run_id.as_ref(), MAX_VARCHAR),
        ("root_workflow_id", Some(&r.root_workflow_id), MAX_VARCHAR),
        ("root_run_id", Some(&r.root_run_id), MAX_VARCHAR),
    ] {
        if let Some(v) = value
            && chars(v) > max
        {
            let kind = if max == MAX_KEY_CHARS && column != "encoding" { "CHAR" } else { "VARCHAR" };
            problems
                .push(format!("{column} is {} characters; MySQL's {kind}({max}) column holds at most {max}", chars(v)));
        }
    }
    if let Some(memo) = &r.memo
        && memo.len() > MAX_MEMO_BYTES
    {
        problems.push(format!("memo is {} bytes; MySQL's BLOB column holds at most {MAX_MEMO_BYTES}", memo.len()));
    }
    if let Some(sa) = &r.search_attributes {
        problems.extend(check_search_attributes(sa));
    }
    problems
}

/// Search attributes MySQL 8 copies into generated columns that cannot hold them:
/// Keyword values and KeywordList items over 255 characters (VARCHAR(255) and the
/// CHAR(255) ARRAY index), Doubles outside DECIMAL(20,5). Attributes whose type is not
/// fixed by Temporal (legacy custom names) have no generated column and no limit.
fn check_search_attributes(sa: &SearchAttributes) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in &sa.0 {
        let Some(kind) = known_search_attribute_type(name) else { continue };
        match (kind, value) {
            (SearchAttributeType::Keyword, SearchAttributeValue::String(s)) if s.chars().count() > MAX_VARCHAR => {
                problems.push(format!(
                    "search attribute {name} (Keyword) is {} characters; MySQL 8 stores it in a VARCHAR(255) column, at most 255",
                    s.chars().count()
                ))
            }
            (SearchAttributeType::Keyword | SearchAttributeType::KeywordList, SearchAttributeValue::KeywordList(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if item.chars().count() > MAX_VARCHAR {
                        problems.push(format!(
                            "search attribute {name} (KeywordList): item {} is {} characters; MySQL 8 indexes the items as CHAR(255), at most 255",
                            i + 1,
                            item.chars().count()
                        ));
                    }
                }
            }
            (SearchAttributeType::KeywordList, SearchAttributeValue::String(s)) if s.chars().count() > MAX_VARCHAR => {
                problems.push(format!(
                    "search attribute {name} (KeywordList): item 1 is {} characters; MySQL 8 indexes the items as CHAR(255), at most 255",
                    s.chars().count()
                ))
            }
            (SearchAttributeType::Double, SearchAttributeValue::Double(f)) if f.abs() >= MAX_DECIMAL_20_5 => {
                problems.push(format!(
                    "search attribute {name} (Double) is {f}; MySQL 8 stores it as DECIMAL(20,5), below 1e15"
                ))
            }
            (SearchAttributeType::Double, SearchAttributeValue::Int(i)) if i.unsigned_abs() >= 1_000_000_000_000_000 => {
                problems.push(format!(
                    "search attribute {name} (Double) is {i}; MySQL 8 stores it as DECIMAL(20,5), below 1e15"
                ))
            }
            _ => {}
        }
    }
    problems
}

/// The `search_attributes` JSON: as every SQL dialect but SQLite writes it, KeywordList
/// values as JSON arrays.
pub fn encode_search_attributes(sa: &SearchAttributes) -> String {
    sa.to_json().to_string()
}

pub fn decode_search_attributes(text: &str) -> Result<SearchAttributes, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("search_attributes is not valid JSON: {e}"))?;
    SearchAttributes::from_json(&json)
}

/// A UTC time as MySQL's DATETIME(6) holds it: naive UTC, truncated (not rounded) to
/// microseconds, years 1000 to 9999.
pub fn mysql_datetime(t: DateTime<Utc>) -> Result<NaiveDateTime, String> {
    let year = t.year();
    if !(1000..=9999).contains(&year) {
        return Err(format!("{} is outside MySQL's DATETIME range (years 1000 to 9999)", t.to_rfc3339()));
    }
    DateTime::from_timestamp_micros(t.timestamp_micros())
        .map(|t| t.naive_utc())
        .ok_or_else(|| format!("{} cannot be represented", t.to_rfc3339()))
}

fn raw_bytes(row: &MySqlRow, index: usize) -> Option<Vec<u8>> {
    row.try_get_unchecked::<Option<Vec<u8>>, _>(index).ok().flatten()
}

fn raw_text(row: &MySqlRow, index: usize) -> String {
    raw_bytes(row, index).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

fn lossy(row: &MySqlRow, index: usize) -> String {
    raw_text(row, index).trim_end().to_string()
}

fn bad_row(row: &MySqlRow, reason: String) -> BadRow {
    let mut raw = serde_json::Map::new();
    for (i, column) in BASE_COLUMNS.iter().enumerate() {
        let value = if let Ok(Some(n)) = row.try_get::<Option<i64>, _>(i) {
            serde_json::Value::from(n)
        } else if let Ok(Some(t)) = row.try_get::<Option<NaiveDateTime>, _>(i) {
            serde_json::Value::String(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        } else {
            match raw_bytes(row, i) {
                Some(bytes) if *column == "memo" => serde_json::json!({ "hex": hex(&bytes) }),
                Some(bytes) => match String::from_utf8(bytes) {
                    Ok(s) => serde_json::Value::String(s),
                    Err(e) => serde_json::json!({ "invalidUtf8Hex": hex(e.as_bytes()) }),
                },
                None => serde_json::Value::Null,
            }
        };
        raw.insert((*column).to_string(), value);
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

fn text(row: &MySqlRow, index: usize) -> Result<Option<String>, String> {
    let column = BASE_COLUMNS[index];
    match row.try_get_unchecked::<Option<Vec<u8>>, _>(index) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => String::from_utf8(bytes).map(Some).map_err(|_| format!("{column} is not valid UTF-8")),
        Err(e) => Err(format!("{column}: {e}")),
    }
}

fn int(row: &MySqlRow, index: usize) -> Result<Option<i64>, String> {
    row.try_get::<Option<i64>, _>(index).map_err(|e| format!("{} is not an integer: {e}", BASE_COLUMNS[index]))
}

fn time(row: &MySqlRow, index: usize) -> Result<Option<DateTime<Utc>>, String> {
    row.try_get::<Option<NaiveDateTime>, _>(index)
        .map(|t| t.map(|t| t.and_utc()))
        .map_err(|e| format!("{}: invalid datetime: {e}", BASE_COLUMNS[index]))
}

/// MySQL's storage of the base columns: DATETIME(6) as naive UTC, JSON as text
/// (MySQL 8 returns it as text; MariaDB's JSON is LONGTEXT).
struct Cols<'r>(&'r MySqlRow);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn record() -> VisibilityRecord {
        let mut g = crate::seed::Generator::new(3, Utc::now());
        let mut r = g.next_record();
        r.search_attributes = None;
        r
    }

    #[test]
    fn datetimes_are_naive_utc_truncated_to_micros() {
        let n = mysql_datetime(t("2024-05-01T14:00:00.123456789+02:00")).unwrap();
        assert_eq!(n.format("%Y-%m-%d %H:%M:%S%.9f").to_string(), "2024-05-01 12:00:00.123456000");
        assert_eq!(mysql_datetime(t("1000-01-01T00:00:00Z")).unwrap().and_utc(), t("1000-01-01T00:00:00Z"));
        assert!(mysql_datetime(t("0999-12-31T23:59:59Z")).unwrap_err().contains("outside MySQL's DATETIME range"));
    }

    #[test]
    fn keyword_lists_stay_json_arrays() {
        let sa = SearchAttributes::from_json(&serde_json::json!({
            "KeywordList01": ["a", "b c"], "BuildIds": ["only"], "Int01": 9007199254740993i64, "Keyword01": "k"
        }))
        .unwrap();
        let text = encode_search_attributes(&sa);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["KeywordList01"], serde_json::json!(["a", "b c"]));
        assert_eq!(json["BuildIds"], serde_json::json!(["only"]));
        assert_eq!(json["Int01"], serde_json::json!(9007199254740993i64));
        assert_eq!(decode_search_attributes(&text).unwrap(), sa);
        // MySQL 8 returns its binary JSON normalised: the same values.
        let normalised = "{\"Int01\": 9007199254740993, \"BuildIds\": [\"only\"], \"Keyword01\": \"k\", \"KeywordList01\": [\"a\", \"b c\"]}";
        assert_eq!(decode_search_attributes(normalised).unwrap(), sa);
        assert!(decode_search_attributes("{nope").unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn values_mysql_cannot_hold_are_refused_with_the_column() {
        let ok = record();
        assert!(encode_record(&ok, MAX_STATEMENT_BYTES).is_ok());

        let mut r = ok.clone();
        r.memo = Some(vec![7; MAX_MEMO_BYTES]);
        assert!(encode_record(&r, MAX_STATEMENT_BYTES).is_ok(), "exactly 65535 bytes fit");
        r.memo = Some(vec![7; MAX_MEMO_BYTES + 1]);
        assert_eq!(
            encode_record(&r, MAX_STATEMENT_BYTES).unwrap_err(),
            "memo is 65536 bytes; MySQL's BLOB column holds at most 65535"
        );

        let mut r = ok.clone();
        r.workflow_id = "é".repeat(255); // characters, not bytes
        assert!(encode_record(&r, MAX_STATEMENT_BYTES).is_ok());
        r.workflow_id = "x".repeat(256);
        r.parent_run_id = Some("p".repeat(300));
        let e = encode_record(&r, MAX_STATEMENT_BYTES).unwrap_err();
        assert!(e.contains("workflow_id is 256 characters; MySQL's VARCHAR(255) column holds at most 255"), "{e}");
        assert!(e.contains("parent_run_id is 300 characters"), "{e}");
        for field in ["workflow_type_name", "task_queue", "root_workflow_id", "root_run_id", "run_id"] {
            let mut r = ok.clone();
            let long = "y".repeat(256);
            match field {
                "workflow_type_name" => r.workflow_type_name = long,
                "task_queue" => r.task_queue = long,
                "root_workflow_id" => r.root_workflow_id = long,
                "root_run_id" => r.root_run_id = long,
                _ => r.run_id = long,
            }
            assert!(encode_record(&r, MAX_STATEMENT_BYTES).unwrap_err().starts_with(field), "{field}");
        }

        let mut r = ok.clone();
        r.start_time = t("0500-01-01T00:00:00Z");
        assert!(encode_record(&r, MAX_STATEMENT_BYTES).unwrap_err().starts_with("start_time "));

        assert!(encode_record(&ok, 100).unwrap_err().contains("max_allowed_packet"));
    }

    #[test]
    fn long_keywords_are_refused_only_where_mysql_8_indexes_them() {
        let sa = |v: serde_json::Value| SearchAttributes::from_json(&v).unwrap();
        let long = "k".repeat(256);
        assert!(check_search_attributes(&sa(serde_json::json!({"Keyword01": "k".repeat(255)}))).is_empty());
        let p = check_search_attributes(&sa(serde_json::json!({"Keyword01": long})));
        assert_eq!(
            p,
            [
                "search attribute Keyword01 (Keyword) is 256 characters; MySQL 8 stores it in a VARCHAR(255) column, at most 255"
            ]
        );
        let p = check_search_attributes(&sa(serde_json::json!({"KeywordList02": ["a", long]})));
        assert!(p[0].starts_with("search attribute KeywordList02 (KeywordList): item 2 is 256 characters"), "{p:?}");
        let p = check_search_attributes(&sa(serde_json::json!({"BuildIds": [long]})));
        assert_eq!(p.len(), 1);
        // Text has a TEXT column; a legacy custom name has no generated column at all.
        assert!(check_search_attributes(&sa(serde_json::json!({"Text01": long, "CustomKeyword": long}))).is_empty());
        let p = check_search_attributes(&sa(serde_json::json!({"Double01": 1e15, "Double02": 99999.5})));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("DECIMAL(20,5)"));
    }

    #[test]
    fn statements_stay_under_the_placeholder_and_byte_limits() {
        let r = encode_record(&record(), MAX_STATEMENT_BYTES).unwrap();
        let rows: Vec<&EncodedRow> = std::iter::repeat_n(&r, 7_000).collect();
        let chunks = statement_chunks(&rows, 21, usize::MAX);
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [3120, 3120, 760]);
        assert!(chunks.iter().all(|c| c.len() * 21 <= MAX_BINDS));
        let chunks = statement_chunks(&rows[..10], 21, r.size() * 3);
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert!(statement_chunks(&[], 21, 10).is_empty());
        assert_eq!(MAX_BINDS / BASE_COLUMNS.len(), 3120);
    }

    #[test]
    fn connect_addresses() {
        assert_eq!(parse_address("127.0.0.1:3306").unwrap(), ("127.0.0.1".into(), 3306));
        assert_eq!(parse_address("db.example").unwrap(), ("db.example".into(), 3306));
        assert_eq!(parse_address("[::1]:3307").unwrap(), ("::1".into(), 3307));
        assert_eq!(parse_address("::1").unwrap(), ("::1".into(), 3306));
        for bad in ["", "host:port", ":3306", "[::1]x"] {
            assert!(parse_address(bad).unwrap_err().contains("is not host:port"), "{bad}");
        }
    }

    #[test]
    fn connect_attributes_become_session_variables() {
        let attrs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let s = session_statements(&attrs(&[])).unwrap();
        assert_eq!(s[0], "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
        assert!(s[1].contains("STRICT_ALL_TABLES"));
        let s = session_statements(&attrs(&[
            ("tx_isolation", "'READ-COMMITTED'"),
            ("parseTime", "true"),
            ("innodb_lock_wait_timeout", "30"),
            ("time_zone", "+00:00"),
            ("autocommit", "ON"),
        ]))
        .unwrap();
        assert!(!s.iter().any(|x| x.contains("ISOLATION LEVEL")), "{s:?}");
        assert!(!s.iter().any(|x| x.contains("parseTime")), "{s:?}");
        assert!(s.contains(&"SET SESSION tx_isolation = 'READ-COMMITTED'".to_string()), "{s:?}");
        assert!(s.contains(&"SET SESSION innodb_lock_wait_timeout = 30".to_string()), "{s:?}");
        assert!(s.contains(&"SET SESSION time_zone = '+00:00'".to_string()), "{s:?}");
        assert!(s.contains(&"SET SESSION autocommit = ON".to_string()), "{s:?}");
        assert_eq!(session_value("it's"), "'it''s'");
        assert_eq!(session_value("READ-COMMITTED"), "'READ-COMMITTED'");
        assert_eq!(session_value("-1"), "-1");
        assert_eq!(session_value("\"quoted\""), "'quoted'");
        assert!(
            session_statements(&attrs(&[("x; DROP TABLE t", "1")])).unwrap_err().contains("not a session variable")
        );
    }

    #[test]
    fn keys_compare_like_the_primary_key() {
        assert_eq!(key_of("NS ", "AbC"), key_of("ns", "abc"));
        let (a, b, c) = ("a".to_string(), "b".to_string(), "r".to_string());
        let groups = by_namespace([(&a, &c), (&b, &c), (&a, &c)].into_iter());
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, "a");
        assert_eq!(groups[0].1.len(), 2);
    }
}
