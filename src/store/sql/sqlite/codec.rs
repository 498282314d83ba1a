//! SQLite rows to and from records: times as text in Go's layout, KeywordList values
//! joined by U+2661, and the columns of a row read as SQLite holds them (anything).

use chrono::{DateTime, NaiveDateTime, TimeZone, Timelike, Utc};
use sqlx::sqlite::SqliteRow;

use crate::record::{
    SearchAttributeType, SearchAttributeValue, SearchAttributes, VisibilityRecord, known_search_attribute_type,
};
use crate::store::sql::BASE_COLUMNS;
use crate::store::sql::encoded::EncodedRow;
use crate::store::sql::rows::{self, StoredCols, StoredDialect};

const KEYWORD_LIST_SEPARATOR: char = '\u{2661}';

/// A record as SQLite binds it: times as Go's text layout, search attributes as text.
pub(super) type Encoded = EncodedRow<String>;

pub(super) fn encode_record(r: &VisibilityRecord) -> Encoded {
    EncodedRow::new(r, |_, t| format_time(t), encode_search_attributes)
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

/// SQLite's storage of the base columns: times as text in Go's layout, JSON as text,
/// and any column may hold any type.
pub(super) struct Dialect;

impl StoredDialect for Dialect {
    type Row = SqliteRow;
    fn time(row: &SqliteRow, i: usize) -> Result<Option<DateTime<Utc>>, String> {
        rows::text(row, i)?.map(|t| parse_time(&t).map_err(|e| format!("{}: {e}", BASE_COLUMNS[i]))).transpose()
    }
    fn search_attributes(text: &str) -> Result<SearchAttributes, String> {
        decode_search_attributes(text)
    }
    /// Times are text: the dead letter shows them as stored.
    fn raw_time(_: &SqliteRow, _: usize) -> Option<String> {
        None
    }
}

pub(super) type Cols<'r> = StoredCols<'r, Dialect>;

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
