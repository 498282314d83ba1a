//! Reading rows, for every dialect: one row's base columns as its dialect stores them
//! (`RowColumns`) to a record or a dead-letter entry, and a page of a scan; for SQLite
//! and MySQL, whose columns may hold anything, the columns read as stored bytes
//! (`StoredCols`) and the counts by status.

use sqlx::{ColumnIndex, Database, Decode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::query::{Bind, push_namespace_filter};
use super::{BASE_COLUMNS, StoredKey};
use crate::record::{ExecutionStatus, SearchAttributes, VisibilityRecord};
use crate::store::{BadRow, Counts, Cursor, ScanPage, add_count, skip_count};

/// The base columns of one row, read the way one dialect stores them (text times in
/// SQLite, typed ones elsewhere; JSON as text or as a value). Index = position in
/// `BASE_COLUMNS`. Errors name the column.
pub trait RowColumns {
    fn text(&self, i: usize) -> Result<Option<String>, String>;
    fn int(&self, i: usize) -> Result<Option<i64>, String>;
    fn time(&self, i: usize) -> Result<Option<chrono::DateTime<chrono::Utc>>, String>;
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, String>;
    fn search_attributes(&self, i: usize) -> Result<Option<SearchAttributes>, String>;
    /// Column `i` as the dead letter shows it, whatever it holds, for the operator to fix
    /// the row by hand.
    fn raw(&self, i: usize) -> serde_json::Value;
    /// A key column (namespace, run or workflow id) as text for the dead letter.
    fn key_text(&self, i: usize) -> Option<String>;
    /// The cursor after this row: its run id as the next page must compare it.
    fn cursor(&self) -> Cursor;
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

/// `decode_row`, its error naming the record (`namespace/run`) it is about.
pub fn decode_keyed(r: &impl RowColumns) -> Result<VisibilityRecord, String> {
    decode_row(r).map_err(|reason| {
        format!("record {}/{}: {reason}", r.key_text(0).unwrap_or_default(), r.key_text(1).unwrap_or_default())
    })
}

/// A row that cannot be a record, as the dead letter keeps it: its keys, why, and every
/// column as far as it can be rendered.
fn bad_row(r: &impl RowColumns, reason: String) -> BadRow {
    let raw = BASE_COLUMNS.iter().enumerate().map(|(i, column)| (column.to_string(), r.raw(i))).collect();
    BadRow {
        namespace_id: r.key_text(0).unwrap_or_default(),
        run_id: r.key_text(1).unwrap_or_default(),
        workflow_id: r.key_text(3),
        reason,
        raw: serde_json::Value::Object(raw),
    }
}

/// What SQLite and MySQL hold differently among the base columns: times and the JSON
/// of search attributes. Every other column is read as the bytes stored, whatever its
/// declared type (`StoredCols`).
pub trait StoredDialect {
    type Row: Row;
    fn time(row: &Self::Row, i: usize) -> Result<Option<chrono::DateTime<chrono::Utc>>, String>;
    fn search_attributes(text: &str) -> Result<SearchAttributes, String>;
    /// Column `i` as the dead letter shows it when it is a time the dialect decodes.
    fn raw_time(row: &Self::Row, i: usize) -> Option<String>;
}

/// The base columns of a SQLite or MySQL row (`D`), read as stored.
pub struct StoredCols<'r, D: StoredDialect>(&'r D::Row);

impl<'r, D: StoredDialect> StoredCols<'r, D> {
    pub fn new(row: &'r D::Row) -> Self {
        StoredCols(row)
    }
}

impl<D: StoredDialect> RowColumns for StoredCols<'_, D>
where
    usize: ColumnIndex<D::Row>,
    i64: Decodes<<D::Row as Row>::Database>,
    Vec<u8>: Decodes<<D::Row as Row>::Database>,
{
    fn text(&self, i: usize) -> Result<Option<String>, String> {
        text(self.0, i)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, String> {
        int(self.0, i)
    }
    fn time(&self, i: usize) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
        D::time(self.0, i)
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, String> {
        bytes(self.0, i)
    }
    fn search_attributes(&self, i: usize) -> Result<Option<SearchAttributes>, String> {
        text(self.0, i)?.map(|t| D::search_attributes(&t)).transpose()
    }
    fn raw(&self, i: usize) -> serde_json::Value {
        raw_value(self.0, i, D::raw_time(self.0, i))
    }
    fn key_text(&self, i: usize) -> Option<String> {
        Some(lossy(self.0, i))
    }
    fn cursor(&self) -> Cursor {
        stored_run_cursor(self.0)
    }
}

/// A page of a scan from the rows of a query with `LIMIT limit`: records, bad rows, and
/// the cursor after the last row (valid even when every row was bad).
pub fn scan_page<'r, R, C: RowColumns>(rows: &'r [R], limit: usize, columns: impl Fn(&'r R) -> C) -> ScanPage {
    let mut page = ScanPage {
        records: Vec::with_capacity(rows.len()),
        bad_rows: Vec::new(),
        cursor: None,
        done: rows.len() < limit,
    };
    for row in rows {
        let r = columns(row);
        match decode_row(&r) {
            Ok(record) => page.records.push(record),
            Err(reason) => page.bad_rows.push(bad_row(&r, reason)),
        }
        page.cursor = Some(r.cursor());
    }
    page
}

/// A value sqlx can decode from a row of dialect `DB`.
pub trait Decodes<DB: sqlx::Database>: for<'r> Decode<'r, DB> + Type<DB> {}
impl<DB: sqlx::Database, T: for<'r> Decode<'r, DB> + Type<DB>> Decodes<DB> for T {}

/// Column `i`'s bytes whatever its type (SQLite and MySQL columns may hold text that is
/// not UTF-8); None for NULL.
pub fn raw_bytes<R: Row>(row: &R, i: usize) -> Option<Vec<u8>>
where
    usize: ColumnIndex<R>,
    Vec<u8>: Decodes<R::Database>,
{
    row.try_get_unchecked::<Option<Vec<u8>>, _>(i).ok().flatten()
}

/// Column `i` as text for messages, lossy where it is not UTF-8.
pub fn raw_text<R: Row>(row: &R, i: usize) -> String
where
    usize: ColumnIndex<R>,
    Vec<u8>: Decodes<R::Database>,
{
    raw_bytes(row, i).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// A key column for messages and the dead letter: lossy, without CHAR padding.
pub fn lossy<R: Row>(row: &R, i: usize) -> String
where
    usize: ColumnIndex<R>,
    Vec<u8>: Decodes<R::Database>,
{
    raw_text(row, i).trim_end().to_string()
}

/// Base column `i` as text; an error naming the column where it is not UTF-8.
pub fn text<R: Row>(row: &R, i: usize) -> Result<Option<String>, String>
where
    usize: ColumnIndex<R>,
    Vec<u8>: Decodes<R::Database>,
{
    let column = BASE_COLUMNS[i];
    match row.try_get_unchecked::<Option<Vec<u8>>, _>(i) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => String::from_utf8(bytes).map(Some).map_err(|_| format!("{column} is not valid UTF-8")),
        Err(e) => Err(format!("{column}: {e}")),
    }
}

/// Base column `i` as an integer; an error naming the column where it is not one.
fn int<R: Row>(row: &R, i: usize) -> Result<Option<i64>, String>
where
    usize: ColumnIndex<R>,
    i64: Decodes<R::Database>,
{
    row.try_get::<Option<i64>, _>(i).map_err(|e| format!("{} is not an integer: {e}", BASE_COLUMNS[i]))
}

/// Base column `i` as stored bytes, whatever its type.
fn bytes<R: Row>(row: &R, i: usize) -> Result<Option<Vec<u8>>, String>
where
    usize: ColumnIndex<R>,
    Vec<u8>: Decodes<R::Database>,
{
    row.try_get_unchecked::<Option<Vec<u8>>, _>(i).map_err(|e| format!("{}: {e}", BASE_COLUMNS[i]))
}

/// Base column `i` of a SQLite or MySQL row as the dead letter shows it: an integer as a
/// number, a time as the dialect rendered it (`time`), `memo` (binary) as hex, other
/// bytes as text or, where they are not UTF-8, as hex said so; NULL as null.
fn raw_value<R: Row>(row: &R, i: usize, time: Option<String>) -> serde_json::Value
where
    usize: ColumnIndex<R>,
    i64: Decodes<R::Database>,
    Vec<u8>: Decodes<R::Database>,
{
    if let Ok(Some(n)) = row.try_get::<Option<i64>, _>(i) {
        return serde_json::Value::from(n);
    }
    if let Some(time) = time {
        return serde_json::Value::String(time);
    }
    match raw_bytes(row, i) {
        Some(bytes) if BASE_COLUMNS[i] == "memo" => serde_json::json!({ "hex": StoredKey::hex(&bytes) }),
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(s) => serde_json::Value::String(s),
            Err(e) => serde_json::json!({ "invalidUtf8Hex": StoredKey::hex(e.as_bytes()) }),
        },
        None => serde_json::Value::Null,
    }
}

/// The run id of a SQLite or MySQL row exactly as stored (untrimmed, not made lossy),
/// so that the next page starts strictly after this row: a lossy cursor skipped rows or
/// read the same page again forever when a run id was not UTF-8.
fn stored_run_cursor<R: Row>(row: &R) -> Cursor
where
    usize: ColumnIndex<R>,
    Vec<u8>: Decodes<R::Database>,
{
    super::run_cursor(&raw_bytes(row, 1).unwrap_or_default())
}

/// Records per namespace and status of a SQLite or MySQL table, those started or closed
/// at or after `cutoff` (bound as the dialect stores times) apart. `signed`: MySQL's SUM
/// is a DECIMAL, cast back to an integer.
pub async fn count_by_status<'c, DB, E, T>(
    executor: E,
    store: &str,
    namespaces: &[String],
    cutoff: T,
    signed: bool,
) -> Result<Counts, sqlx::Error>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    T: Bind<DB> + Clone,
    String: Bind<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Decodes<DB>,
    Vec<u8>: Decodes<DB>,
{
    let (open, close) = if signed { ("CAST(", " AS SIGNED)") } else { ("", "") };
    let mut q: QueryBuilder<DB> =
        QueryBuilder::new(format!("SELECT namespace_id, status, COUNT(*), {open}SUM(CASE WHEN start_time >= "));
    q.push_bind(cutoff.clone());
    q.push(" OR (close_time IS NOT NULL AND close_time >= ");
    q.push_bind(cutoff);
    q.push(format!(") THEN 1 ELSE 0 END){close} FROM executions_visibility"));
    push_namespace_filter(&mut q, namespaces);
    q.push(" GROUP BY namespace_id, status");
    let rows = q.build().fetch_all(executor).await?;
    let mut counts = Counts::new();
    add_count_rows(&mut counts, store, &rows)?;
    Ok(counts)
}

/// Adds the `(namespace_id, status, total, recent)` rows of a SQLite or MySQL count,
/// grouped by namespace and status. Those columns hold whatever was written: a namespace
/// id that is not UTF-8, or a status that is NULL or not an integer, panicked here. Such
/// groups are left out, named in a warning (their rows go to the dead letter when copied).
fn add_count_rows<R: Row>(counts: &mut Counts, store: &str, rows: &[R]) -> Result<(), sqlx::Error>
where
    usize: ColumnIndex<R>,
    i64: Decodes<R::Database>,
    Vec<u8>: Decodes<R::Database>,
{
    for row in rows {
        let total: i64 = row.try_get(2)?;
        let recent: i64 = row.try_get(3)?;
        let ns = match StoredKey::from_bytes(raw_bytes(row, 0).unwrap_or_default()) {
            StoredKey::Text(ns) => ns,
            bytes @ StoredKey::Bytes(_) => {
                skip_count(store, &bytes.describe(), "namespace_id is not valid UTF-8", total);
                continue;
            }
        };
        let ns = ns.trim_end();
        match row.try_get::<Option<i64>, _>(1) {
            Ok(Some(status)) => add_count(counts, store, ns, status, total, recent),
            Ok(None) => skip_count(store, ns, "status is NULL", total),
            Err(_) => skip_count(store, ns, &format!("status {:?} is not an integer", raw_text(row, 1)), total),
        }
    }
    Ok(())
}
