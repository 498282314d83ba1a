//! PostgreSQL visibility: the advanced schema (`postgresql/v12`, plugins `postgres12`,
//! `postgres12_pgx`) as source and sink, the standard schema (`postgresql/v96`, plugins
//! `postgres`, `postgres_pgx`, Temporal up to v1.23) as source.
//!
//! Writes are one multi-row `INSERT … ON CONFLICT … DO UPDATE … WHERE _version <
//! excluded._version` per batch, Temporal's own guard; `RETURNING (xmax = 0)` tells
//! inserted rows from updated ones in the same round trip.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{ConnectOptions, Postgres, QueryBuilder, Row};
use tokio::sync::OnceCell;

use super::push_keys;
use super::{BASE_COLUMNS, KeySql, RunRange, check_limits, classify, cursor_run, run_cursor};
use crate::config::SqlFamily;
use crate::config::persistence::SqlStore;
use crate::record::{RecordKey, SearchAttributes, VisibilityRecord};
use crate::store::schema::SchemaInfo;
use crate::store::{
    BadRow, CountQuery, Counts, Cursor, IndexDef, ScanPage, ShardSpec, Sink, Source, Split, Store, StoreError,
    StoreResult, WriteOutcome,
};
use crate::store::{add_count, skip_count};

/// PostgreSQL's limit on bind parameters per statement (a u16 in the protocol).
const MAX_BINDS: usize = 65_535;
/// Batches from this size on are written through COPY.
const COPY_MIN_ROWS: usize = 200;

pub struct PostgresStore {
    name: String,
    address: String,
    database: String,
    standard: bool,
    pool: PgPool,
    /// For the preflight's probe; never printed (it holds the password).
    options: PgConnectOptions,
    schema: OnceCell<Schema>,
}

#[derive(Clone, Debug)]
struct Schema {
    /// Columns of `executions_visibility` that exist (schemas before v1.27 lack
    /// `_version`; the standard schema lacks everything added for advanced visibility).
    columns: HashSet<String>,
    /// `curr_version` of Temporal's `schema_version` table, when it has one.
    version: Option<String>,
}

impl Schema {
    fn has(&self, column: &str) -> bool {
        self.columns.contains(column)
    }
}

/// Columns of the standard (v96) schema; everything else in BASE_COLUMNS is advanced-only.
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

impl PostgresStore {
    /// Rows of a fixed query against this store's database (Temporal's namespace
    /// registry when this is the default store).
    pub async fn raw_rows(&self, sql: &'static str) -> StoreResult<Vec<PgRow>> {
        sqlx::query(sql).fetch_all(&self.pool).await.map_err(|e| classify(&self.context("reading namespaces"), e))
    }

    pub async fn open(name: &str, cfg: &SqlStore, family: SqlFamily) -> anyhow::Result<Self> {
        let (host, port) = split_addr(&cfg.connect_addr, 5432).ok_or_else(|| {
            anyhow::anyhow!("store {name:?}: sql.connectAddr {:?} is not host:port", cfg.connect_addr)
        })?;
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&host)
            .port(port)
            .database(&cfg.database_name)
            .application_name("vismig")
            .disable_statement_logging();
        if let Some(user) = &cfg.user {
            options = options.username(user);
        }
        if let Some(password) = &cfg.password {
            options = options.password(password.expose());
        }
        options = match &cfg.tls {
            Some(tls) if tls.enabled => {
                let verify = tls.enable_host_verification.unwrap_or(false);
                let mut o = options.ssl_mode(if verify { PgSslMode::VerifyFull } else { PgSslMode::Require });
                if let Some(ca) = &tls.ca_file {
                    o = o.ssl_root_cert(ca);
                    if !verify {
                        o = o.ssl_mode(PgSslMode::VerifyCa);
                    }
                }
                if let Some(cert) = &tls.cert_file {
                    o = o.ssl_client_cert(cert);
                }
                if let Some(key) = &tls.key_file {
                    o = o.ssl_client_key(key);
                }
                o
            }
            _ => options.ssl_mode(PgSslMode::Prefer),
        };
        // Temporal passes connectAttributes as connection parameters; sslmode is the
        // one that changes how we connect, the others are session settings.
        for (key, value) in &cfg.connect_attributes {
            if key == "sslmode" {
                options = options.ssl_mode(value.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "store {name:?}: sql.connectAttributes.sslmode {value:?} is not a PostgreSQL sslmode"
                    )
                })?);
            } else {
                options = options.options([(key.as_str(), value.as_str())]);
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_conns.unwrap_or(8).max(1))
            .acquire_timeout(super::CONNECT_TIMEOUT)
            .connect_lazy_with(options.clone());
        Ok(Self {
            name: name.to_string(),
            address: format!("{host}:{port}"),
            database: cfg.database_name.clone(),
            standard: family == SqlFamily::PostgresStandard,
            pool,
            options,
            schema: OnceCell::new(),
        })
    }

    fn context(&self, what: &str) -> String {
        format!("store {:?} ({}): {what}", self.name, self.describe())
    }

    async fn schema(&self) -> StoreResult<&Schema> {
        self.schema.get_or_try_init(|| self.inspect()).await
    }

    async fn inspect(&self) -> StoreResult<Schema> {
        let rows = sqlx::query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'executions_visibility'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify(&self.context("connecting and reading the schema"), e))?;
        let columns: HashSet<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        if columns.is_empty() {
            return Err(StoreError::Permanent(self.context(&format!(
                "table executions_visibility does not exist in database {:?}: create it with temporal-sql-tool (schema {})",
                self.database,
                if self.standard { "postgresql/v96/visibility" } else { "postgresql/v12/visibility" }
            ))));
        }
        let version = self.schema_version().await?;
        let required: Vec<&str> = if self.standard {
            STANDARD_COLUMNS.to_vec()
        } else {
            BASE_COLUMNS.iter().copied().filter(|c| !super::ADDED_AFTER_1_3.contains(c)).collect()
        };
        for column in required {
            if !columns.contains(column) {
                let hint = if !self.standard && !columns.contains("search_attributes") {
                    " (this looks like the standard schema: use pluginName postgres)".to_string()
                } else {
                    format!(
                        " (schema {}; vismig needs schema 1.3, Temporal v1.21, or newer: upgrade with {})",
                        version.as_deref().unwrap_or("unrecorded"),
                        self.upgrade_hint()
                    )
                };
                return Err(StoreError::Permanent(
                    self.context(&format!("table executions_visibility has no column {column}{hint}")),
                ));
            }
        }
        Ok(Schema { columns, version })
    }

    /// `curr_version` from Temporal's `schema_version` table; None without the table.
    async fn schema_version(&self) -> StoreResult<Option<String>> {
        let ctx = || self.context("reading the schema version");
        let exists: bool = sqlx::query("SELECT to_regclass('schema_version') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(&ctx(), e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let row = sqlx::query("SELECT curr_version::text FROM schema_version ORDER BY version_partition LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| classify(&ctx(), e))?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    fn upgrade_hint(&self) -> String {
        super::upgrade_hint("postgres12", &self.database, "postgresql/v12/visibility")
    }

    /// The select list in BASE_COLUMNS order, with typed stand-ins for columns this
    /// schema does not have.
    fn select_list(schema: &Schema) -> String {
        BASE_COLUMNS
            .iter()
            .map(|c| {
                if schema.has(c) {
                    return c.to_string();
                }
                let stand_in = match *c {
                    "_version" => "0::bigint",
                    "search_attributes" => "NULL::jsonb",
                    "root_workflow_id" | "root_run_id" => "''::varchar",
                    "parent_workflow_id" | "parent_run_id" => "NULL::varchar",
                    _ => "NULL::bigint",
                };
                format!("{stand_in} AS {c}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn ensure_writable(&self, schema: &Schema) -> StoreResult<()> {
        if self.standard || !schema.has("search_attributes") {
            return Err(StoreError::Permanent(self.context(
                "the standard visibility schema can only be read; write to an advanced schema (postgresql/v12)",
            )));
        }
        Ok(())
    }
}

fn split_addr(addr: &str, default_port: u16) -> Option<(String, u16)> {
    match addr.rsplit_once(':') {
        Some((host, port)) => Some((host.trim_matches(['[', ']']).to_string(), port.parse().ok()?)),
        None if !addr.is_empty() => Some((addr.to_string(), default_port)),
        None => None,
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn read(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        let schema = self.schema().await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_BINDS / 2) {
            let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
                "SELECT {} FROM executions_visibility WHERE (namespace_id, run_id) IN (",
                Self::select_list(schema)
            ));
            push_keys(&mut q, chunk.iter().map(|k| (k.namespace_id.as_str(), k.run_id.as_str())), "::bpchar");
            q.push(") ORDER BY namespace_id, run_id");
            let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("reading"), e))?;
            for row in &rows {
                out.push(super::decode_row(&Cols(row)).map_err(|reason| StoreError::Permanent(self.context(&reason)))?);
            }
        }
        Ok(out)
    }

    /// Temporal truncates times to microseconds for SQL, and so does every writer here.
    fn time_precision(&self) -> crate::record::TimePrecision {
        crate::record::TimePrecision::Microseconds
    }

    fn describe(&self) -> String {
        format!("postgres {}/{}", self.address, self.database)
    }

    async fn preflight(&self) -> StoreResult<()> {
        super::probe(&self.options, &self.context(&format!("connecting to {}", self.address))).await?;
        self.schema().await.map(|_| ())
    }

    async fn schema_info(&self) -> StoreResult<SchemaInfo> {
        let schema = self.schema().await?;
        let version = match &schema.version {
            Some(v) => format!("schema {v}"),
            None => format!("no schema_version table; {}", super::super::schema::sql_release_of(|c| schema.has(c))),
        };
        Ok(SchemaInfo::from_columns(version, |c| schema.has(c), self.upgrade_hint()))
    }

    async fn count(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.schema().await?;
        let cutoff = query.cutoff.naive_utc();
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT namespace_id::text, status, COUNT(*), COUNT(*) FILTER (WHERE start_time >= ");
        q.push_bind(cutoff).push(" OR close_time >= ").push_bind(cutoff).push(") FROM executions_visibility");
        if !query.namespaces.is_empty() {
            q.push(" WHERE namespace_id = ANY(").push_bind(query.namespaces.clone()).push("::bpchar[])");
        }
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
        let range = RunRange::from_spec(shard)?;
        let after = after.map(cursor_run).transpose()?;
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {} FROM executions_visibility WHERE namespace_id = ",
            Self::select_list(schema)
        ));
        range.push_bounds(&mut q, after.as_ref(), KeySql::POSTGRES)?;
        q.push(" ORDER BY run_id LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| classify(&self.context("scanning"), e))?;
        let done = rows.len() < limit;
        let mut page = ScanPage { records: Vec::with_capacity(rows.len()), bad_rows: Vec::new(), cursor: None, done };
        for row in &rows {
            let run_id: String = row.try_get(1).unwrap_or_default();
            match super::decode_row(&Cols(row)) {
                Ok(record) => page.records.push(record),
                Err(reason) => page.bad_rows.push(bad_row(row, reason)),
            }
            page.cursor = Some(run_cursor(run_id.trim_end().as_bytes()));
        }
        Ok(page)
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
        if !namespaces.is_empty() {
            q.push(" WHERE namespace_id = ANY(").push_bind(namespaces.to_vec()).push("::bpchar[])");
        }
        let n: i64 =
            q.build().fetch_one(&self.pool).await.map_err(|e| classify(&self.context("counting rows"), e))?.get(0);
        Ok(n as u64)
    }
}

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
                let existing = self.versions(&skipped, versioned).await?;
                for (i, r) in skipped {
                    let mine = if versioned { r.version } else { 0 };
                    outcomes[i] = Some(match existing.get(&(r.namespace_id.clone(), r.run_id.clone())) {
                        Some(None) => WriteOutcome::Failed(
                            "the secondary already holds this record with _version NULL; left as it is".into(),
                        ),
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
            for column in columns {
                match *column {
                    "namespace_id" => b.push_bind(&r.namespace_id),
                    "run_id" => b.push_bind(&r.run_id),
                    "workflow_type_name" => b.push_bind(&r.workflow_type_name),
                    "workflow_id" => b.push_bind(&r.workflow_id),
                    "start_time" => b.push_bind(micros(r.start_time)),
                    "execution_time" => b.push_bind(micros(r.execution_time)),
                    "status" => b.push_bind(r.status.as_i32()),
                    "close_time" => b.push_bind(r.close_time.map(micros)),
                    "history_length" => b.push_bind(r.history_length),
                    "history_size_bytes" => b.push_bind(r.history_size_bytes),
                    "execution_duration" => b.push_bind(r.execution_duration),
                    "state_transition_count" => b.push_bind(r.state_transition_count),
                    "memo" => b.push_bind(r.memo.as_deref()),
                    "encoding" => b.push_bind(&r.encoding),
                    "task_queue" => b.push_bind(&r.task_queue),
                    "search_attributes" => b.push_bind(r.search_attributes.as_ref().map(SearchAttributes::to_json)),
                    "parent_workflow_id" => b.push_bind(r.parent_workflow_id.as_deref()),
                    "parent_run_id" => b.push_bind(r.parent_run_id.as_deref()),
                    "root_workflow_id" => b.push_bind(&r.root_workflow_id),
                    "root_run_id" => b.push_bind(&r.root_run_id),
                    "_version" => b.push_bind(r.version),
                    other => unreachable!("not a base column: {other}"),
                };
            }
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

    /// Current `_version` of the given records (0 without the column; None where it is
    /// NULL, the guard having left such a row as it was).
    async fn versions(
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

/// `ON CONFLICT` under Temporal's version guard (insert-if-absent without `_version`),
/// returning which rows were inserted (xmax = 0) or updated; rows the guard skipped are
/// not returned. `same_version` lets a row replace one at its own version too (repair).
fn upsert_clause(columns: &[&str], versioned: bool, same_version: bool) -> String {
    let conflict = if versioned {
        let set: Vec<String> = columns
            .iter()
            .filter(|c| !matches!(**c, "namespace_id" | "run_id"))
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let guard = if same_version { "<=" } else { "<" };
        format!("DO UPDATE SET {} WHERE executions_visibility._version {guard} excluded._version", set.join(", "))
    } else {
        "DO NOTHING".to_string()
    };
    format!(
        " ON CONFLICT (namespace_id, run_id) {conflict} RETURNING namespace_id::text, run_id::text, (xmax = 0) AS inserted"
    )
}

/// COPY text format: backslash escapes for the characters that delimit fields and rows.
fn copy_text(buf: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

fn copy_field(buf: &mut Vec<u8>, v: Option<&str>, last: bool) {
    match v {
        Some(s) => copy_text(buf, s),
        None => buf.extend_from_slice(b"\\N"),
    }
    buf.push(if last { b'\n' } else { b'\t' });
}

/// One COPY text row of `columns` (BASE_COLUMNS, less those the schema lacks, in order).
fn copy_row(buf: &mut Vec<u8>, r: &VisibilityRecord, columns: &[&str]) {
    let t = |d: DateTime<Utc>| micros(d).format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let n = |v: Option<i64>| v.map(|x| x.to_string());
    let memo = r.memo.as_ref().map(|m| format!("\\x{}", m.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    let sa = r.search_attributes.as_ref().map(|s| s.to_json().to_string());
    let fields: Vec<Option<String>> = vec![
        Some(r.namespace_id.clone()),
        Some(r.run_id.clone()),
        Some(r.workflow_type_name.clone()),
        Some(r.workflow_id.clone()),
        Some(t(r.start_time)),
        Some(t(r.execution_time)),
        Some(r.status.as_i32().to_string()),
        r.close_time.map(t),
        n(r.history_length),
        n(r.history_size_bytes),
        n(r.execution_duration),
        n(r.state_transition_count),
        memo,
        Some(r.encoding.clone()),
        Some(r.task_queue.clone()),
        sa,
        r.parent_workflow_id.clone(),
        r.parent_run_id.clone(),
        Some(r.root_workflow_id.clone()),
        Some(r.root_run_id.clone()),
        Some(r.version.to_string()),
    ];
    let written: Vec<&Option<String>> =
        BASE_COLUMNS.iter().zip(&fields).filter(|(c, _)| columns.contains(c)).map(|(_, f)| f).collect();
    for (i, f) in written.iter().enumerate() {
        copy_field(buf, f.as_deref(), i + 1 == written.len());
    }
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

/// PostgreSQL keeps microseconds; truncate (as Temporal does) rather than let the
/// server round.
fn micros(t: DateTime<Utc>) -> NaiveDateTime {
    DateTime::from_timestamp_micros(t.timestamp_micros()).expect("in range").naive_utc()
}

fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(row: &'r PgRow, i: usize) -> Result<T, String> {
    row.try_get::<T, _>(i).map_err(|e| format!("{}: {e}", BASE_COLUMNS[i]))
}

/// A TIMESTAMP column. sqlx adds the value to 2000-01-01 unchecked and panics on
/// `infinity`, `-infinity` and years past chrono's range (PostgreSQL goes to 294276):
/// here they are errors naming the column, and the row goes to the dead letter.
fn timestamp(row: &PgRow, i: usize) -> Result<Option<NaiveDateTime>, String> {
    use sqlx::ValueRef;
    use sqlx::postgres::PgValueFormat;
    let column = BASE_COLUMNS[i];
    let raw = row.try_get_raw(i).map_err(|e| format!("{column}: {e}"))?;
    if raw.is_null() {
        return Ok(None);
    }
    if raw.format() == PgValueFormat::Text {
        return get::<Option<NaiveDateTime>>(row, i);
    }
    let bytes: [u8; 8] = raw
        .as_bytes()
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{column}: not an 8-byte TIMESTAMP"))?;
    match i64::from_be_bytes(bytes) {
        i64::MAX => Err(format!("{column}: infinity (PostgreSQL's infinite timestamp) has no value to copy")),
        i64::MIN => Err(format!("{column}: -infinity (PostgreSQL's infinite timestamp) has no value to copy")),
        micros => chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::microseconds(micros)))
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "{column}: timestamp out of range ({micros} µs from 2000-01-01; years up to 262142 can be copied)"
                )
            }),
    }
}

/// PostgreSQL's storage of the base columns: typed TIMESTAMP (naive UTC), INTEGER status
/// and BIGINT counters, BYTEA memo, JSONB search attributes; CHAR(64) ids space-padded.
struct Cols<'r>(&'r PgRow);

impl super::RowColumns for Cols<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, String> {
        get(self.0, i)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, String> {
        // status is INTEGER, the counters BIGINT.
        match self.0.try_get::<Option<i64>, _>(i) {
            Ok(v) => Ok(v),
            Err(_) => get::<Option<i32>>(self.0, i).map(|v| v.map(i64::from)),
        }
    }
    fn time(&self, i: usize) -> Result<Option<DateTime<Utc>>, String> {
        Ok(timestamp(self.0, i)?.map(|t| t.and_utc()))
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, String> {
        get(self.0, i)
    }
    fn search_attributes(&self, i: usize) -> Result<Option<SearchAttributes>, String> {
        get::<Option<serde_json::Value>>(self.0, i)?.map(|v| SearchAttributes::from_json(&v)).transpose()
    }
}

fn bad_row(row: &PgRow, reason: String) -> BadRow {
    let text = |i: usize| row.try_get::<Option<String>, _>(i).ok().flatten().map(|s| s.trim_end().to_string());
    let mut raw = serde_json::Map::new();
    for (i, column) in BASE_COLUMNS.iter().enumerate() {
        let value = if let Ok(Some(n)) = row.try_get::<Option<i64>, _>(i) {
            serde_json::Value::from(n)
        } else if let Ok(Some(n)) = row.try_get::<Option<i32>, _>(i) {
            serde_json::Value::from(n)
        } else if row.try_get_raw(i).is_ok_and(|v| {
            use sqlx::{TypeInfo, ValueRef};
            v.type_info().name() == "TIMESTAMP"
        }) {
            match timestamp(row, i) {
                Ok(t) => t.map(|t| serde_json::Value::from(t.to_string())).unwrap_or(serde_json::Value::Null),
                Err(reason) => serde_json::Value::from(reason),
            }
        } else if let Ok(Some(v)) = row.try_get::<Option<serde_json::Value>, _>(i) {
            v
        } else {
            text(i).map(serde_json::Value::from).unwrap_or(serde_json::Value::Null)
        };
        raw.insert((*column).to_string(), value);
    }
    BadRow {
        namespace_id: text(0).unwrap_or_default(),
        run_id: text(1).unwrap_or_default(),
        workflow_id: text(3),
        reason,
        raw: serde_json::Value::Object(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_addresses() {
        assert_eq!(split_addr("db:6432", 5432), Some(("db".into(), 6432)));
        assert_eq!(split_addr("db", 5432), Some(("db".into(), 5432)));
        assert_eq!(split_addr("[::1]:5432", 5432), Some(("::1".into(), 5432)));
        assert_eq!(split_addr("db:port", 5432), None);
        assert_eq!(split_addr("", 5432), None);
    }

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

    #[test]
    fn copy_rows_escape_delimiters_and_mark_nulls() {
        let mut g = crate::seed::Generator::new(1, Utc::now());
        let mut r = g.next_record();
        r.workflow_id = "tab\there\nnew\\line".into();
        r.memo = Some(vec![0x0a, 0xff]);
        r.parent_run_id = None;
        let mut buf = Vec::new();
        copy_row(&mut buf, &r, &BASE_COLUMNS);
        let line = String::from_utf8(buf).unwrap();
        assert!(line.ends_with('\n'));
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), BASE_COLUMNS.len());
        assert_eq!(fields[3], "tab\\there\\nnew\\\\line");
        assert_eq!(fields[12], "\\\\x0aff");
        assert_eq!(fields[17], "\\N");

        // A schema without the root ids and `_version` (Temporal v1.23's 1.4): those
        // columns are left out of the row, the others keep their order.
        let columns: Vec<&str> = BASE_COLUMNS
            .iter()
            .copied()
            .filter(|c| !["root_workflow_id", "root_run_id", "_version"].contains(c))
            .collect();
        let mut buf = Vec::new();
        copy_row(&mut buf, &r, &columns);
        let line = String::from_utf8(buf).unwrap();
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), BASE_COLUMNS.len() - 3);
        assert_eq!(fields[17], "\\N", "parent_run_id is the last column");
    }

    #[test]
    fn times_are_truncated_to_microseconds() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T12:00:00.123456789Z").unwrap().with_timezone(&Utc);
        assert_eq!(micros(t).to_string(), "2024-05-01 12:00:00.123456");
    }
}
