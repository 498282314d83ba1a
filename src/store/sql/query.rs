//! Queries every dialect builds the same way: the shards of a scan and the page query
//! along one of them, its cursor, lists of keys and namespaces, the select list of a
//! schema, and the version-guarded `ON CONFLICT` of PostgreSQL and SQLite.

use sqlx::{ColumnIndex, Database, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::rows::{Decodes, raw_bytes};
use super::{RunRange, StoredKey};
use crate::store::{Cursor, ShardSpec, Split, StoreError};

/// A value sqlx can bind in dialect `DB`.
pub trait Bind<DB: Database>: for<'t> Encode<'t, DB> + Type<DB> {}
impl<DB: Database, T: for<'t> Encode<'t, DB> + Type<DB>> Bind<DB> for T {}

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

    fn push<DB: Database>(self, q: &mut QueryBuilder<DB>, key: &StoredKey)
    where
        String: Bind<DB>,
        Vec<u8>: Bind<DB>,
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
    pub fn push_bounds<DB: Database>(
        &self,
        q: &mut QueryBuilder<DB>,
        after: Option<&StoredKey>,
        keys: KeySql,
    ) -> Result<(), StoreError>
    where
        String: Bind<DB>,
        Vec<u8>: Bind<DB>,
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

/// The shards of the given namespaces, or when none are given of every namespace the
/// table holds (SQLite and MySQL), planned by their ids as stored: trimmed or lossy, a
/// namespace id matched no row and was never scanned.
pub async fn plan_stored_shards<'c, DB, E>(
    executor: E,
    namespaces: &[String],
    split: &Split,
) -> Result<Vec<ShardSpec>, sqlx::Error>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    Vec<u8>: Decodes<DB>,
{
    let namespaces: Vec<StoredKey> = if namespaces.is_empty() {
        sqlx::query::<DB>("SELECT DISTINCT namespace_id FROM executions_visibility ORDER BY namespace_id")
            .fetch_all(executor)
            .await?
            .iter()
            .map(|row| StoredKey::from_bytes(raw_bytes(row, 0).unwrap_or_default()))
            .collect()
    } else {
        namespaces.iter().map(|ns| StoredKey::Text(ns.clone())).collect()
    };
    Ok(RunRange::plan_keys(&namespaces, split).iter().map(RunRange::to_spec).collect())
}

/// The query of one page of `shard`: `SELECT select FROM executions_visibility` within
/// the shard's run-id range, after the run id of the cursor `after`, in run-id order.
pub fn scan_query<DB: Database>(
    select: &str,
    keys: KeySql,
    shard: &ShardSpec,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<QueryBuilder<DB>, StoreError>
where
    DB::Arguments: Default,
    String: Bind<DB>,
    Vec<u8>: Bind<DB>,
    i64: Bind<DB>,
{
    let range = RunRange::from_spec(shard)?;
    let after = after.map(cursor_run).transpose()?;
    let mut q = QueryBuilder::new(format!("SELECT {select} FROM executions_visibility WHERE namespace_id = "));
    range.push_bounds(&mut q, after.as_ref(), keys)?;
    q.push(" ORDER BY run_id LIMIT ").push_bind(limit as i64);
    Ok(q)
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

/// Appends `(namespace_id, run_id), …` for an `IN (…)` list of primary keys; `cast` is
/// appended to each bound value (PostgreSQL compares CHAR(64) keys as `::bpchar`).
pub fn push_keys<'k, DB: Database>(
    q: &mut QueryBuilder<DB>,
    keys: impl IntoIterator<Item = (&'k str, &'k str)>,
    cast: &str,
) where
    String: Bind<DB>,
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

/// Appends ` WHERE namespace_id IN (…)` for the given namespace ids; nothing for none
/// (every namespace).
pub fn push_namespace_filter<DB: Database>(q: &mut QueryBuilder<DB>, namespaces: &[String])
where
    String: Bind<DB>,
{
    if namespaces.is_empty() {
        return;
    }
    q.push(" WHERE namespace_id IN (");
    let mut sep = q.separated(", ");
    for ns in namespaces {
        sep.push_bind(ns.clone());
    }
    q.push(")");
}

/// The rows of the given namespaces (all when none are given), counted; SQLite and
/// MySQL, whose namespace ids compare as bound.
pub async fn count_rows<'c, DB, E>(executor: E, namespaces: &[String]) -> Result<u64, sqlx::Error>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    String: Bind<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Decodes<DB>,
{
    let mut q: QueryBuilder<DB> = QueryBuilder::new("SELECT COUNT(*) FROM executions_visibility");
    push_namespace_filter(&mut q, namespaces);
    let n: i64 = q.build().fetch_one(executor).await?.try_get(0)?;
    Ok(n as u64)
}

/// The select list in `BASE_COLUMNS` order: each column the table has, prefixed with
/// `table` (e.g. `e.`), and for each it lacks `stand_in(column) AS column`, the value
/// Temporal gives a column it adds, so that every schema reads as the same record.
pub fn select_list(table: &str, has: impl Fn(&str) -> bool, stand_in: impl Fn(&str) -> &'static str) -> String {
    super::BASE_COLUMNS
        .iter()
        .map(|c| if has(c) { format!("{table}{c}") } else { format!("{} AS {c}", stand_in(c)) })
        .collect::<Vec<_>>()
        .join(", ")
}

/// ` ON CONFLICT …` under Temporal's own guard (PostgreSQL and SQLite): the new row's
/// columns replace a stored row of an older `_version` (or the same one, `same_version`:
/// repair), so an equal or older version is a silent no-op and a record without a
/// version (0) is only ever inserted. Without `_version`: insert-if-absent.
pub fn on_conflict(columns: &[&str], versioned: bool, same_version: bool) -> String {
    if !versioned {
        return " ON CONFLICT (namespace_id, run_id) DO NOTHING".to_string();
    }
    let set: Vec<String> = columns
        .iter()
        .filter(|c| !matches!(**c, "namespace_id" | "run_id"))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let guard = if same_version { "<=" } else { "<" };
    format!(
        " ON CONFLICT (namespace_id, run_id) DO UPDATE SET {} WHERE executions_visibility._version {guard} excluded._version",
        set.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
