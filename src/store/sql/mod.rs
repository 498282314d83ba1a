//! SQL visibility stores. What all dialects share lives here: the base columns Temporal
//! writes, the key-range shards over the primary key `(namespace_id, run_id)`, and the
//! cursor format. Each dialect lives in its own file.

pub mod mysql;
pub mod postgres;
pub mod sqlite;
pub mod sqlite_schema;

use super::{Cursor, StoreError};
use crate::record::{
    ExecutionStatus, SearchAttributeType, SearchAttributeValue, VisibilityRecord, known_search_attribute_type,
};

/// The columns Temporal writes (`sqlplugin.DbFields`), in its order; `_version` is last
/// because MySQL applies ON DUPLICATE KEY UPDATE assignments left to right.
/// Generated search-attribute columns are never written.
pub const BASE_COLUMNS: [&str; 21] = [
    "namespace_id",
    "run_id",
    "workflow_type_name",
    "workflow_id",
    "start_time",
    "execution_time",
    "status",
    "close_time",
    "history_length",
    "history_size_bytes",
    "execution_duration",
    "state_transition_count",
    "memo",
    "encoding",
    "task_queue",
    "search_attributes",
    "parent_workflow_id",
    "parent_run_id",
    "root_workflow_id",
    "root_run_id",
    "_version",
];

pub use super::run_range::{RunRange, StoredKey};

/// Base columns the advanced schema gained after 1.3 (Temporal v1.21-v1.22, the first
/// releases with Dual Visibility): 1.4 duration, transitions and parent ids (v1.23), 1.5/1.6
/// root ids (v1.24/v1.25), 1.9 `_version` (v1.27). A schema without them is read with
/// Temporal's defaults for them (NULL, `''`, 0) and written without them.
pub const ADDED_AFTER_1_3: &[&str] = {
    // VERSIONED_FIELDS in the order Temporal added them: `search_attributes` (1.2) and
    // `history_size_bytes` (1.3) come first, every later one is here.
    crate::store::schema::VERSIONED_FIELDS.split_at(2).1
};

/// How an operator upgrades an advanced SQL schema with Temporal's own tool.
pub fn upgrade_hint(plugin: &str, database: &str, schema_dir: &str) -> String {
    format!(
        "temporal-sql-tool --plugin {plugin} --db {database} update-schema -d ./schema/{schema_dir}/versioned (the schema directory of the Temporal release the cluster runs)"
    )
}

/// How long vismig waits for a PostgreSQL or MySQL server to accept a connection, in
/// preflight and for each connection of the pool (Temporal's SQL config has no such
/// setting). Past it, preflight fails with one line saying so, and a run in progress
/// backs off and tries again: `/readyz` says so within this time of a server going away.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens one connection outside the pool and closes it again, so that preflight can say
/// why a server cannot be reached (refused, no answer, wrong password) instead of the
/// pool's "timed out", and says so within `CONNECT_TIMEOUT`.
pub async fn probe<O, C>(options: &O, context: &str) -> Result<(), StoreError>
where
    O: sqlx::ConnectOptions<Connection = C>,
    C: sqlx::Connection,
{
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(classify(context, e)),
        Err(_) => Err(StoreError::Transient(format!(
            "{context}: no answer within {} s (is the server up, and is sql.connectAddr right?)",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// How a dialect binds a key to compare it with its key columns.
#[derive(Clone, Copy, Debug)]
pub struct KeySql {
    /// After a text key. PostgreSQL: `::bpchar`: its key columns are CHAR(64), and a
    /// text parameter would make the server compare them as text, which the primary key
    /// cannot serve: every page became a scan of the whole namespace.
    pub text_cast: &'static str,
    /// Around key bytes that are not UTF-8.
    pub bytes_open: &'static str,
    pub bytes_close: &'static str,
}

impl KeySql {
    /// SQLite: bytes as TEXT, since a BLOB sorts after every text value and never equals one.
    pub const SQLITE: KeySql = KeySql { text_cast: "", bytes_open: "CAST(", bytes_close: " AS TEXT)" };
    /// MySQL: only a binary column can hold such bytes, and it compares them as they are.
    pub const MYSQL: KeySql = KeySql { text_cast: "", bytes_open: "", bytes_close: "" };
    /// PostgreSQL text is always UTF-8: bytes never come from it (the server refuses them).
    pub const POSTGRES: KeySql = KeySql { text_cast: "::bpchar", bytes_open: "", bytes_close: "" };

    fn push<DB: sqlx::Database>(self, q: &mut sqlx::QueryBuilder<DB>, key: &StoredKey)
    where
        String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        Vec<u8>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        match key {
            StoredKey::Text(text) => {
                q.push_bind(text.clone()).push(self.text_cast);
            }
            StoredKey::Bytes(bytes) => {
                q.push(self.bytes_open).push_bind(bytes.clone()).push(self.bytes_close);
            }
        }
    }
}

impl RunRange {
    /// Completes `… WHERE namespace_id = ` with this range's bounds, resuming after the
    /// run id `after` (the cursor) when there is one. Ordering by run id within one
    /// namespace walks the primary key `(namespace_id, run_id)` in every dialect. Keys
    /// are bound exactly as stored (`KeySql`).
    pub fn push_bounds<DB: sqlx::Database>(
        &self,
        q: &mut sqlx::QueryBuilder<DB>,
        after: Option<&StoredKey>,
        keys: KeySql,
    ) -> Result<(), StoreError>
    where
        String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        Vec<u8>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        keys.push(q, &self.namespace_key()?);
        match (after, &self.start) {
            (Some(run), _) => {
                q.push(" AND run_id > ");
                keys.push(q, run);
            }
            (None, Some(start)) => {
                q.push(" AND run_id >= ").push_bind(start.clone()).push(keys.text_cast);
            }
            (None, None) => {}
        }
        if let Some(end) = &self.end {
            q.push(" AND run_id < ").push_bind(end.clone()).push(keys.text_cast);
        }
        Ok(())
    }
}

/// The cursor after a row whose stored run id is `run_id`: the text itself (the format
/// of every earlier checkpoint), or `{"runIdHex": …}` when it is not UTF-8.
pub fn run_cursor(run_id: &[u8]) -> Cursor {
    match std::str::from_utf8(run_id) {
        Ok(text) => Cursor(serde_json::Value::String(text.to_string())),
        Err(_) => Cursor(serde_json::json!({ "runIdHex": StoredKey::hex(run_id) })),
    }
}

pub fn cursor_run(cursor: &Cursor) -> Result<StoredKey, StoreError> {
    if let Some(text) = cursor.0.as_str() {
        return Ok(StoredKey::Text(text.to_string()));
    }
    cursor
        .0
        .get("runIdHex")
        .and_then(|hex| hex.as_str())
        .and_then(StoredKey::from_hex)
        .map(StoredKey::Bytes)
        .ok_or_else(|| StoreError::Permanent(format!("checkpoint cursor {} is not a SQL run id", cursor.0)))
}

/// Every namespace record in the `namespaces` table of Temporal's default SQL store (the
/// persistence database, not visibility). Ids are stored as 16 bytes.
pub async fn namespace_rows(
    name: &str,
    cfg: &crate::config::persistence::SqlStore,
) -> anyhow::Result<Vec<super::namespaces::NamespaceRecord>> {
    use crate::config::SqlFamily;
    use sqlx::Row;
    type Raw = (String, Vec<u8>, Vec<u8>, String);
    let query = "SELECT name, id, data, data_encoding FROM namespaces";
    // Each dialect's store has its own row type; the four columns decode the same way.
    macro_rules! decode {
        ($store:expr) => {
            $store
                .raw_rows(query)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect::<Result<_, _>>()
        };
    }
    let rows: Vec<Raw> = match crate::config::persistence::sql_family(&cfg.plugin_name) {
        Some(family @ (SqlFamily::Postgres | SqlFamily::PostgresStandard)) => {
            decode!(postgres::PostgresStore::open(name, cfg, family).await?)
        }
        Some(SqlFamily::Mysql | SqlFamily::MysqlStandard) => decode!(mysql::MysqlStore::open(name, cfg).await?),
        Some(SqlFamily::Sqlite) => decode!(sqlite::SqliteStore::open(name, cfg).await?),
        None => anyhow::bail!("persistence.datastores.{name}.sql.pluginName {:?} is not supported", cfg.plugin_name),
    }
    // A name that is not text or a NULL id (a table edited by hand) panicked here.
    .map_err(|e: sqlx::Error| anyhow::anyhow!("store {name:?}: a row of the namespaces table cannot be read: {e}"))?;
    rows.into_iter()
        .map(|(n, id, data, encoding)| {
            let id = uuid::Uuid::from_slice(&id)
                .map_err(|_| anyhow::anyhow!("namespace {n:?} in store {name:?} has an id that is not 16 bytes"))?;
            Ok(super::namespaces::NamespaceRecord { name: n, id: id.to_string(), data, encoding })
        })
        .collect()
}

/// The base columns of one row, read the way one dialect stores them (text times in
/// SQLite, typed ones elsewhere; JSON as text or as a value). Index = position in
/// `BASE_COLUMNS`. Errors name the column.
pub trait RowColumns {
    fn text(&self, i: usize) -> Result<Option<String>, String>;
    fn int(&self, i: usize) -> Result<Option<i64>, String>;
    fn time(&self, i: usize) -> Result<Option<chrono::DateTime<chrono::Utc>>, String>;
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, String>;
    fn search_attributes(&self, i: usize) -> Result<Option<crate::record::SearchAttributes>, String>;
}

fn required<T>(value: Option<T>, i: usize) -> Result<T, String> {
    value.ok_or_else(|| format!("{} is NULL", BASE_COLUMNS[i]))
}

/// One row in `BASE_COLUMNS` order to a record, for every dialect; the error says which
/// column is wrong, and the row goes to the dead letter with it.
pub fn decode_row(r: &impl RowColumns) -> Result<VisibilityRecord, String> {
    let status_int = required(r.int(6)?, 6)?;
    let status = ExecutionStatus::from_i64(status_int).ok_or_else(|| format!("unknown status {status_int}"))?;
    Ok(VisibilityRecord {
        namespace_id: required(r.text(0)?, 0)?.trim_end().to_string(),
        run_id: required(r.text(1)?, 1)?.trim_end().to_string(),
        workflow_type_name: required(r.text(2)?, 2)?,
        workflow_id: required(r.text(3)?, 3)?,
        start_time: required(r.time(4)?, 4)?,
        execution_time: required(r.time(5)?, 5)?,
        status,
        close_time: r.time(7)?,
        history_length: r.int(8)?,
        history_size_bytes: r.int(9)?,
        execution_duration: r.int(10)?,
        state_transition_count: r.int(11)?,
        memo: r.bytes(12)?,
        encoding: required(r.text(13)?, 13)?,
        task_queue: r.text(14)?.unwrap_or_default(),
        search_attributes: r.search_attributes(15)?,
        parent_workflow_id: r.text(16)?,
        parent_run_id: r.text(17)?,
        root_workflow_id: r.text(18)?.unwrap_or_default(),
        root_run_id: r.text(19)?.unwrap_or_default(),
        version: r.int(20)?.unwrap_or(0),
    })
}

/// Appends `(namespace_id, run_id), …` for an `IN (…)` list of primary keys; `cast` is
/// appended to each bound value (PostgreSQL compares CHAR(64) keys as `::bpchar`).
pub fn push_keys<'k, DB: sqlx::Database>(
    q: &mut sqlx::QueryBuilder<DB>,
    keys: impl IntoIterator<Item = (&'k str, &'k str)>,
    cast: &str,
) where
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut sep = q.separated(", ");
    for (namespace_id, run_id) in keys {
        sep.push("(");
        sep.push_bind_unseparated(namespace_id.to_string());
        sep.push_unseparated(format!("{cast}, "));
        sep.push_bind_unseparated(run_id.to_string());
        sep.push_unseparated(format!("{cast})"));
    }
}

/// Checks a record against the column limits of Temporal's PostgreSQL and MySQL
/// schemas, so that a value the target cannot hold is refused for this record alone,
/// with the reason, instead of failing the batch or being truncated.
pub fn check_limits(r: &VisibilityRecord) -> Result<(), String> {
    let fields: [(&str, Option<&str>, usize); 10] = [
        ("namespace_id", Some(&r.namespace_id), 64),
        ("run_id", Some(&r.run_id), 64),
        ("workflow_id", Some(&r.workflow_id), 255),
        ("workflow_type_name", Some(&r.workflow_type_name), 255),
        ("task_queue", Some(&r.task_queue), 255),
        ("encoding", Some(&r.encoding), 64),
        ("parent_workflow_id", r.parent_workflow_id.as_deref(), 255),
        ("parent_run_id", r.parent_run_id.as_deref(), 255),
        ("root_workflow_id", Some(&r.root_workflow_id), 255),
        ("root_run_id", Some(&r.root_run_id), 255),
    ];
    for (name, value, max) in fields {
        let Some(value) = value else { continue };
        let chars = value.chars().count();
        if chars > max {
            return Err(format!("{name} has {chars} characters; the column holds at most {max}"));
        }
        if value.contains('\0') {
            return Err(format!("{name} contains a NUL character, which SQL text columns cannot hold"));
        }
    }
    if let Some(sa) = &r.search_attributes {
        for (name, value) in &sa.0 {
            let strings: Vec<&str> = match value {
                SearchAttributeValue::String(s) => vec![s.as_str()],
                SearchAttributeValue::KeywordList(items) => items.iter().map(String::as_str).collect(),
                SearchAttributeValue::List(items) => {
                    return Err(format!(
                        "search attribute {name} holds {} values (a multi-valued attribute from Elasticsearch); SQL stores hold one value per attribute",
                        items.len()
                    ));
                }
                _ => continue,
            };
            for s in strings {
                if s.contains('\0') {
                    return Err(format!("search attribute {name} contains a NUL character"));
                }
                if known_search_attribute_type(name) == Some(SearchAttributeType::Keyword) && s.chars().count() > 255 {
                    return Err(format!(
                        "search attribute {name} (Keyword) has {} characters; its column holds at most 255",
                        s.chars().count()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Classifies a sqlx error: connection trouble, timeouts and lock contention are worth
/// a retry; a missing table or a refused permission makes the store unusable; anything
/// else (bad SQL, schema, a value the column cannot hold) is permanent.
pub fn classify(context: &str, e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let unusable = match &e {
        E::Database(db) => {
            // PostgreSQL: 42P01 undefined table, 42501 insufficient privilege, 3F000 no
            // such schema. MySQL/MariaDB: 1146 no such table, 1142 command denied on a
            // table, 1044 access denied to the database.
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let mysql = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| matches!(e.number(), 1044 | 1142 | 1146));
            let postgres = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some()
                && matches!(code.as_str(), "42P01" | "42501" | "3F000");
            mysql || postgres
        }
        _ => false,
    };
    let transient = match &e {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => true,
        E::Tls(_) => false,
        E::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // SQLite: 5 BUSY, 6 LOCKED (and their extended codes, low byte). Only for
            // SQLite's own errors: PostgreSQL's 42501 (permission denied) has 5 as its
            // low byte too, and was retried for ten minutes as if the table were busy.
            // PostgreSQL: 40001 serialization, 40P01 deadlock, 53xxx resources, 57P0x shutdown, 08xxx connection.
            // MySQL/MariaDB: 1205 lock wait timeout, 1213 deadlock, 2006/2013 gone away/lost.
            let sqlite_busy = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && code.parse::<i64>().map(|c| matches!(c & 0xff, 5 | 6)).unwrap_or(false)
                && !code.starts_with('0');
            sqlite_busy
                || code == "40001"
                || code == "40P01"
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code.starts_with("08")
                || matches!(code.as_str(), "1205" | "1213" | "2006" | "2013")
                || mysql_transient(db.as_ref())
        }
        _ => false,
    };
    let message = match e {
        // The pool retries refused connections until its deadline and keeps no reason.
        E::PoolTimedOut => format!(
            "{context}: no connection to the server within {} s (down or unreachable, or every connection of sql.maxConns busy)",
            CONNECT_TIMEOUT.as_secs()
        ),
        e => format!("{context}: {e}"),
    };
    if transient {
        StoreError::Transient(message)
    } else if unusable {
        StoreError::Unusable(message)
    } else {
        StoreError::Permanent(message)
    }
}

/// MySQL/MariaDB report most errors with SQLSTATE HY000, so the error number decides:
/// 1205 lock wait timeout, 1213 deadlock, 1040 too many connections, 1053 shutdown,
/// 1290/1836 read-only (a failover in progress), 1927 connection killed (MariaDB),
/// 3572 NOWAIT lock, 4031 idle session closed.
fn mysql_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some_and(|e| matches!(e.number(), 1040 | 1053 | 1205 | 1213 | 1290 | 1836 | 1927 | 3572 | 4031))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_added_after_1_3_are_the_versioned_fields_after_history_size_bytes() {
        assert_eq!(
            ADDED_AFTER_1_3,
            [
                "execution_duration",
                "state_transition_count",
                "parent_workflow_id",
                "parent_run_id",
                "root_workflow_id",
                "root_run_id",
                "_version"
            ]
        );
    }

    #[test]
    fn cursors_round_trip_and_reject_foreign_json() {
        assert_eq!(cursor_run(&run_cursor(b"abc")).unwrap(), StoredKey::Text("abc".into()));
        assert_eq!(run_cursor(b"abc").0, serde_json::json!("abc"), "text cursors keep their old format");
        let bytes = run_cursor(&[0xfe, b'1']);
        assert_eq!(bytes.0, serde_json::json!({"runIdHex": "fe31"}));
        assert_eq!(cursor_run(&bytes).unwrap(), StoredKey::Bytes(vec![0xfe, b'1']));
        assert!(cursor_run(&Cursor(serde_json::json!({"slice": 1}))).is_err());
        assert!(cursor_run(&Cursor(serde_json::json!({"runIdHex": "f"}))).is_err());
    }
}
