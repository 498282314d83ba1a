//! PostgreSQL rows to and from records: typed columns read (timestamps checked, since
//! sqlx panics on PostgreSQL's infinities), records as COPY text rows, and the column
//! limits a record must fit before it is written.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, TypeInfo, ValueRef};

use crate::record::{
    SearchAttributeType, SearchAttributeValue, SearchAttributes, VisibilityRecord, known_search_attribute_type,
};
use crate::store::Cursor;
use crate::store::sql::rows::RowColumns;
use crate::store::sql::{BASE_COLUMNS, StoredKey, run_cursor};

/// Checks a record against the column limits of Temporal's PostgreSQL schema (MySQL
/// has its own checks in `mysql/codec.rs`), so that a value the target cannot hold is
/// refused for this record alone, with the reason, instead of failing the batch or
/// being truncated.
pub(super) fn check_limits(r: &VisibilityRecord) -> Result<(), String> {
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
pub(super) fn copy_row(buf: &mut Vec<u8>, r: &VisibilityRecord, columns: &[&str]) {
    let t = |d: DateTime<Utc>| micros(d).format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let n = |v: Option<i64>| v.map(|x| x.to_string());
    let memo = r.memo.as_ref().map(|m| format!("\\x{}", StoredKey::hex(m)));
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

/// PostgreSQL keeps microseconds; truncate (as Temporal does) rather than let the
/// server round.
pub(super) fn micros(t: DateTime<Utc>) -> NaiveDateTime {
    DateTime::from_timestamp_micros(t.timestamp_micros()).expect("in range").naive_utc()
}

fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(row: &'r PgRow, i: usize) -> Result<T, String> {
    row.try_get::<T, _>(i).map_err(|e| format!("{}: {e}", BASE_COLUMNS[i]))
}

/// A TIMESTAMP column. sqlx adds the value to 2000-01-01 unchecked and panics on
/// `infinity`, `-infinity` and years past chrono's range (PostgreSQL goes to 294276):
/// here they are errors naming the column, and the row goes to the dead letter.
fn timestamp(row: &PgRow, i: usize) -> Result<Option<NaiveDateTime>, String> {
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
pub(super) struct Cols<'r>(pub(super) &'r PgRow);

impl RowColumns for Cols<'_> {
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
    /// Integers as numbers, times as text (or why they cannot be copied), JSON as
    /// itself, the rest as text.
    fn raw(&self, i: usize) -> serde_json::Value {
        let row = self.0;
        if let Ok(Some(n)) = row.try_get::<Option<i64>, _>(i) {
            serde_json::Value::from(n)
        } else if let Ok(Some(n)) = row.try_get::<Option<i32>, _>(i) {
            serde_json::Value::from(n)
        } else if row.try_get_raw(i).is_ok_and(|v| v.type_info().name() == "TIMESTAMP") {
            match timestamp(row, i) {
                Ok(t) => t.map(|t| serde_json::Value::from(t.to_string())).unwrap_or(serde_json::Value::Null),
                Err(reason) => serde_json::Value::from(reason),
            }
        } else if let Ok(Some(v)) = row.try_get::<Option<serde_json::Value>, _>(i) {
            v
        } else {
            self.key_text(i).map(serde_json::Value::from).unwrap_or(serde_json::Value::Null)
        }
    }
    fn key_text(&self, i: usize) -> Option<String> {
        self.0.try_get::<Option<String>, _>(i).ok().flatten().map(|s| s.trim_end().to_string())
    }
    /// PostgreSQL text is always UTF-8: the run id itself, without CHAR(64) padding.
    fn cursor(&self) -> Cursor {
        let run_id: String = self.0.try_get(1).unwrap_or_default();
        run_cursor(run_id.trim_end().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
