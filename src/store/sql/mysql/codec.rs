//! MySQL rows to and from records: DATETIME(6) as naive UTC truncated to microseconds,
//! search attributes as JSON text, the columns of a row read as MySQL holds them, and
//! every value a record holds that MySQL 8's columns cannot hold without truncation.

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use sqlx::Row;
use sqlx::mysql::MySqlRow;

use crate::record::{
    SearchAttributeType, SearchAttributeValue, SearchAttributes, VisibilityRecord, known_search_attribute_type,
};
use crate::store::sql::BASE_COLUMNS;
use crate::store::sql::encoded::EncodedRow;
use crate::store::sql::rows::{StoredCols, StoredDialect};

/// `memo` is a BLOB: at most 65 535 bytes.
const MAX_MEMO_BYTES: usize = 65_535;
/// VARCHAR(255) columns, and the generated VARCHAR(255) / CHAR(255) ARRAY columns of
/// Keyword and KeywordList search attributes on MySQL 8: characters, not bytes.
const MAX_VARCHAR: usize = 255;
/// `namespace_id` and `run_id` are CHAR(64); `encoding` is VARCHAR(64).
const MAX_KEY_CHARS: usize = 64;
/// Double search attributes go into DECIMAL(20,5) generated columns on MySQL 8.
const MAX_DECIMAL_20_5: f64 = 1e15;

/// A record as MySQL binds it: DATETIME(6) as naive UTC, search attributes as JSON text.
pub(super) type Encoded = EncodedRow<NaiveDateTime>;

impl Encoded {
    /// Approximate bytes on the wire.
    pub(super) fn size(&self) -> usize {
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
pub(super) fn encode_record(r: &VisibilityRecord, max_bytes: usize) -> Result<Encoded, String> {
    let mut problems = mysql_limits(r);
    let time = |column: &str, t: DateTime<Utc>| match mysql_datetime(t) {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("{column} {e}"));
            NaiveDateTime::default()
        }
    };
    let row = EncodedRow::new(r, time, encode_search_attributes);
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

/// MySQL's storage of the base columns: DATETIME(6) as naive UTC, JSON as text
/// (MySQL 8 returns it as text; MariaDB's JSON is LONGTEXT).
pub(super) struct Dialect;

impl StoredDialect for Dialect {
    type Row = MySqlRow;
    fn time(row: &MySqlRow, i: usize) -> Result<Option<DateTime<Utc>>, String> {
        row.try_get::<Option<NaiveDateTime>, _>(i)
            .map(|t| t.map(|t| t.and_utc()))
            .map_err(|e| format!("{}: invalid datetime: {e}", BASE_COLUMNS[i]))
    }
    fn search_attributes(text: &str) -> Result<SearchAttributes, String> {
        decode_search_attributes(text)
    }
    fn raw_time(row: &MySqlRow, i: usize) -> Option<String> {
        let time = row.try_get::<Option<NaiveDateTime>, _>(i).ok().flatten();
        time.map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
    }
}

pub(super) type Cols<'r> = StoredCols<'r, Dialect>;

#[cfg(test)]
pub(super) mod tests {
    use super::super::schema::MAX_STATEMENT_BYTES;
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(in crate::store::sql::mysql) fn record() -> VisibilityRecord {
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
}
