//! `VisibilityRecord`: the one model every store converts to and from.
//!
//! Field semantics follow Temporal's `InternalVisibilityRequestBase` (see
//! shared/reference/temporal-visibility.md §1). Stores convert at their edge; the
//! pipeline, verifier and flipper only ever see this type.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `temporal.api.enums.v1.WorkflowExecutionStatus`, as stored by SQL and Cassandra (int)
/// and Elasticsearch (name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExecutionStatus {
    Running = 1,
    Completed = 2,
    Failed = 3,
    Canceled = 4,
    Terminated = 5,
    ContinuedAsNew = 6,
    TimedOut = 7,
    Paused = 8,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 8] = [
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Canceled,
        Self::Terminated,
        Self::ContinuedAsNew,
        Self::TimedOut,
        Self::Paused,
    ];

    /// From the SQL/Cassandra integer. 0 (UNSPECIFIED) is never stored by Temporal, so it
    /// is rejected like any other unknown value.
    pub fn from_i64(value: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as i64 == value)
    }

    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The Elasticsearch `ExecutionStatus` keyword (Go enum `String()`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
            Self::Canceled => "Canceled",
            Self::Terminated => "Terminated",
            Self::ContinuedAsNew => "ContinuedAsNew",
            Self::TimedOut => "TimedOut",
            Self::Paused => "Paused",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Running and Paused runs are open: they have no close time and still change.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type of a search attribute, as registered in Temporal's cluster metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SearchAttributeType {
    Keyword,
    Text,
    Int,
    Double,
    Bool,
    Datetime,
    KeywordList,
}

/// One search-attribute value as it appears in the stores' JSON.
///
/// Keyword, Text and Datetime share one JSON form (a string: datetimes keep their
/// original RFC 3339 text and offset, as Temporal stores them), so they share a variant;
/// the attribute's registered type tells them apart where that matters. Ints are kept
/// apart from doubles so that int64 values survive exactly (never through f64).
#[derive(Clone, Debug)]
pub enum SearchAttributeValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    KeywordList(Vec<String>),
    /// A multi-valued Int, Double or Bool: Elasticsearch accepts an array for any type;
    /// SQL stores cannot hold one.
    List(Vec<SearchAttributeValue>),
}

/// Search attributes keyed by field name (`Keyword01`, `BuildIds`, a legacy custom
/// name, ...), never by user alias. Sorted, so encodings are deterministic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchAttributes(pub BTreeMap<String, SearchAttributeValue>);

impl SearchAttributes {
    /// Parses the JSON object Temporal writes into `search_attributes`.
    /// Null values and empty lists are dropped, as Temporal drops them.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let object =
            value.as_object().ok_or_else(|| format!("search_attributes is not a JSON object: {}", short(value)))?;
        let mut map = BTreeMap::new();
        for (name, v) in object {
            let parsed = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => SearchAttributeValue::String(s.clone()),
                serde_json::Value::Bool(b) => SearchAttributeValue::Bool(*b),
                serde_json::Value::Number(n) => SearchAttributeValue::from_number(name, n)?,
                serde_json::Value::Array(items) => {
                    if items.is_empty() {
                        continue;
                    }
                    let mut list = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            serde_json::Value::String(s) => list.push(s.clone()),
                            other => {
                                return Err(format!(
                                    "search attribute {name}: list item {} is not a string",
                                    short(other)
                                ));
                            }
                        }
                    }
                    SearchAttributeValue::KeywordList(list)
                }
                serde_json::Value::Object(_) => {
                    return Err(format!("search attribute {name}: value is a JSON object"));
                }
            };
            map.insert(name.clone(), parsed);
        }
        Ok(Self(map))
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::with_capacity(self.0.len());
        for (name, value) in &self.0 {
            object.insert(name.clone(), value.to_json());
        }
        serde_json::Value::Object(object)
    }
}

/// Values are equal when they hold the same value: an Int and a Double are equal when
/// the double is exactly that integer (`3` and `3.0` are one number, which a store
/// may print either way), and doubles compare as IEEE numbers (`-0.0 == 0.0`: PostgreSQL's
/// numeric has no negative zero, and Temporal's queries do not tell them apart).
impl PartialEq for SearchAttributeValue {
    fn eq(&self, other: &Self) -> bool {
        use SearchAttributeValue::*;
        match (self, other) {
            (String(a), String(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Double(a), Double(b)) => a == b,
            (Int(i), Double(f)) | (Double(f), Int(i)) => int_is_double(*i, *f),
            (Bool(a), Bool(b)) => a == b,
            (KeywordList(a), KeywordList(b)) => a == b,
            (List(a), List(b)) => a == b,
            _ => false,
        }
    }
}

/// Whether `f` is exactly the integer `i` (no rounding on either side).
fn int_is_double(i: i64, f: f64) -> bool {
    // -2^63 and 2^63 are exact doubles; an integral double between them fits an i64.
    f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) && f as i64 == i
}

impl SearchAttributeValue {
    /// A JSON number as Temporal wrote it: an integer that fits int64 stays an Int (never
    /// through f64); anything else is the double its text denotes, correctly rounded
    /// (serde_json's exact parser, feature `float_roundtrip`: `0.42000000000000004` stays
    /// itself, where the default parser gave a neighbour). Go prints a large double such as
    /// 1.2345678901234567e19 as the integer `12345678901234567000`: past int64, an integer
    /// is such a double (Temporal's Int attributes are int64).
    pub fn from_number(name: &str, n: &serde_json::Number) -> Result<Self, String> {
        if let Some(i) = n.as_i64() {
            return Ok(Self::Int(i));
        }
        n.as_f64().map(Self::Double).ok_or_else(|| format!("search attribute {name}: number {n} is out of range"))
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::String(s) => serde_json::Value::String(s.clone()),
            Self::Int(i) => serde_json::Value::from(*i),
            Self::Double(f) => {
                serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
            Self::Bool(b) => serde_json::Value::Bool(*b),
            Self::KeywordList(list) => {
                serde_json::Value::Array(list.iter().cloned().map(serde_json::Value::String).collect())
            }
            Self::List(items) => serde_json::Value::Array(items.iter().map(Self::to_json).collect()),
        }
    }
}

fn short(value: &serde_json::Value) -> String {
    let mut s = value.to_string();
    if s.len() > 80 {
        let mut cut = 80;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// One workflow run's visibility record.
#[derive(Clone, Debug, PartialEq)]
pub struct VisibilityRecord {
    pub namespace_id: String,
    pub run_id: String,
    pub workflow_id: String,
    pub workflow_type_name: String,
    pub start_time: DateTime<Utc>,
    pub execution_time: DateTime<Utc>,
    /// None while the run is open.
    pub close_time: Option<DateTime<Utc>>,
    pub status: ExecutionStatus,
    pub history_length: Option<i64>,
    pub history_size_bytes: Option<i64>,
    /// Nanoseconds from execution time to close time, computed by Temporal's history service.
    pub execution_duration: Option<i64>,
    pub state_transition_count: Option<i64>,
    /// Proto3-serialized `temporal.api.common.v1.Memo`; opaque bytes, copied unchanged.
    pub memo: Option<Vec<u8>>,
    /// Memo encoding, `"Proto3"` for every record Temporal writes.
    pub encoding: String,
    pub task_queue: String,
    /// None when Temporal wrote no search attributes (SQL NULL).
    pub search_attributes: Option<SearchAttributes>,
    pub parent_workflow_id: Option<String>,
    pub parent_run_id: Option<String>,
    pub root_workflow_id: String,
    pub root_run_id: String,
    /// The visibility task id of the last write; 0 when the source has no version
    /// (Cassandra, standard SQL, SQL rows written before Temporal v1.27). A record with
    /// version 0 is only ever inserted where absent, never over an existing record.
    pub version: i64,
}

impl VisibilityRecord {
    pub fn key(&self) -> RecordKey {
        RecordKey { namespace_id: self.namespace_id.clone(), run_id: self.run_id.clone() }
    }

    pub fn has_version(&self) -> bool {
        self.version > 0
    }

    /// A JSON rendering for dead-letter files and reports (memo as base64).
    pub fn to_json(&self) -> serde_json::Value {
        use base64::Engine;
        serde_json::json!({
            "namespaceId": self.namespace_id,
            "runId": self.run_id,
            "workflowId": self.workflow_id,
            "workflowTypeName": self.workflow_type_name,
            "startTime": self.start_time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "executionTime": self.execution_time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "closeTime": self.close_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            "status": self.status.name(),
            "historyLength": self.history_length,
            "historySizeBytes": self.history_size_bytes,
            "executionDuration": self.execution_duration,
            "stateTransitionCount": self.state_transition_count,
            "memo": self.memo.as_ref().map(|m| base64::engine::general_purpose::STANDARD.encode(m)),
            "encoding": self.encoding,
            "taskQueue": self.task_queue,
            "searchAttributes": self.search_attributes.as_ref().map(SearchAttributes::to_json),
            "parentWorkflowId": self.parent_workflow_id,
            "parentRunId": self.parent_run_id,
            "rootWorkflowId": self.root_workflow_id,
            "rootRunId": self.root_run_id,
            "version": self.version,
        })
    }
}

/// The finest time a store keeps. Temporal writes Elasticsearch times with nanoseconds
/// and truncates them to microseconds for the SQL stores (milliseconds for Cassandra), so
/// two stores agree on a time at the coarser of their precisions. Ordered coarse to fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimePrecision {
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

impl TimePrecision {
    /// `t` cut down to this precision as Temporal does (Go's `Time.Truncate`: towards the
    /// past, never rounded up).
    pub fn truncate(self, t: DateTime<Utc>) -> DateTime<Utc> {
        use chrono::Timelike;
        let unit = match self {
            Self::Milliseconds => 1_000_000,
            Self::Microseconds => 1_000,
            Self::Nanoseconds => return t,
        };
        // The sub-second part counts up from the second before, so this is a floor for
        // times before 1970 too (a leap second's extra second keeps its own).
        t.with_nanosecond(t.nanosecond() / unit * unit).unwrap_or(t)
    }
}

/// A record's identity in every store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordKey {
    pub namespace_id: String,
    pub run_id: String,
}

/// Search attributes whose type Temporal fixes: the predefined system attributes and
/// the pre-allocated custom and CHASM field names of the SQL schemas. `stored` says
/// whether SQLite's schema materialises the generated column (text and list columns,
/// which the FTS5 tables index). Legacy custom attributes with free names are not here;
/// their type lives only in the cluster's metadata.
pub struct KnownSearchAttribute {
    pub name: String,
    pub kind: SearchAttributeType,
    pub predefined: bool,
}

pub fn known_search_attributes() -> Vec<KnownSearchAttribute> {
    use SearchAttributeType::*;
    let predefined = [
        ("TemporalChangeVersion", KeywordList),
        ("BinaryChecksums", KeywordList),
        ("BatcherUser", Keyword),
        ("TemporalScheduledStartTime", Datetime),
        ("TemporalScheduledById", Keyword),
        ("TemporalSchedulePaused", Bool),
        ("TemporalNamespaceDivision", Keyword),
        ("BuildIds", KeywordList),
        ("TemporalPauseInfo", KeywordList),
        ("TemporalReportedProblems", KeywordList),
        ("TemporalWorkerDeploymentVersion", Keyword),
        ("TemporalWorkflowVersioningBehavior", Keyword),
        ("TemporalWorkerDeployment", Keyword),
        ("TemporalUsedWorkerDeploymentVersions", KeywordList),
        ("TemporalExternalPayloadSizeBytes", Int),
        ("TemporalExternalPayloadCount", Int),
    ];
    let mut out: Vec<KnownSearchAttribute> = predefined
        .into_iter()
        .map(|(name, kind)| KnownSearchAttribute { name: name.to_string(), kind, predefined: true })
        .collect();
    let numbered = |prefix: &str, kind: SearchAttributeType, count: usize, out: &mut Vec<KnownSearchAttribute>| {
        for i in 1..=count {
            out.push(KnownSearchAttribute { name: format!("{prefix}{i:02}"), kind, predefined: false });
        }
    };
    // Pre-allocated custom attributes (SQL advanced schema).
    numbered("Bool", Bool, 3, &mut out);
    numbered("Datetime", Datetime, 3, &mut out);
    numbered("Double", Double, 3, &mut out);
    numbered("Int", Int, 3, &mut out);
    numbered("Keyword", Keyword, 10, &mut out);
    numbered("Text", Text, 3, &mut out);
    numbered("KeywordList", KeywordList, 3, &mut out);
    // Pre-allocated CHASM attributes.
    numbered("TemporalBool", Bool, 2, &mut out);
    numbered("TemporalDatetime", Datetime, 2, &mut out);
    numbered("TemporalDouble", Double, 2, &mut out);
    numbered("TemporalInt", Int, 2, &mut out);
    numbered("TemporalKeyword", Keyword, 4, &mut out);
    numbered("TemporalLowCardinalityKeyword", Keyword, 1, &mut out);
    numbered("TemporalKeywordList", KeywordList, 2, &mut out);
    out
}

/// The registered type of a predefined or pre-allocated attribute, if it is one.
pub fn known_search_attribute_type(name: &str) -> Option<SearchAttributeType> {
    use std::sync::OnceLock;
    static TYPES: OnceLock<BTreeMap<String, SearchAttributeType>> = OnceLock::new();
    TYPES.get_or_init(|| known_search_attributes().into_iter().map(|a| (a.name, a.kind)).collect()).get(name).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_ints_and_names_round_trip() {
        for s in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::from_i64(s as i64), Some(s));
            assert_eq!(ExecutionStatus::from_name(s.name()), Some(s));
        }
        assert_eq!(ExecutionStatus::from_i64(0), None);
        assert_eq!(ExecutionStatus::from_i64(9), None);
        assert!(ExecutionStatus::Running.is_open());
        assert!(ExecutionStatus::Paused.is_open());
        assert!(!ExecutionStatus::TimedOut.is_open());
    }

    #[test]
    fn search_attributes_keep_int64_exact_and_drop_nulls() {
        let sa = SearchAttributes::from_json(&json!({
            "Int01": 9007199254740993i64,
            "Double01": 3.5,
            "Double02": 3,
            "Keyword01": "k",
            "Bool01": true,
            "KeywordList01": ["a", "b"],
            "Empty": [],
            "Gone": null
        }))
        .unwrap();
        assert_eq!(sa.0["Int01"], SearchAttributeValue::Int(9007199254740993));
        assert_eq!(sa.0["Double01"], SearchAttributeValue::Double(3.5));
        // Go writes 3.0 as `3`: kept as the integer form so the JSON text is unchanged.
        assert_eq!(sa.0["Double02"], SearchAttributeValue::Int(3));
        assert!(!sa.0.contains_key("Empty"));
        assert!(!sa.0.contains_key("Gone"));
        assert_eq!(sa.to_json()["Int01"], json!(9007199254740993i64));
        assert_eq!(sa.to_json()["KeywordList01"], json!(["a", "b"]));
    }

    /// Doubles whose shortest text needs 17 digits, the DECIMAL(20,5) edge, subnormals,
    /// negative zero in Go's and serde's forms, the largest double, and integers past 2^53
    /// and past int64 (Go prints large doubles as integers): each parses to the double the
    /// text denotes (checked against the standard library's correctly rounded parser) and
    /// prints back to a text that parses to the same bits.
    #[test]
    fn numbers_round_trip_exactly() {
        let doubles = [
            "0.42000000000000004",
            "123456789012345.67",
            "-999999999999999.9",
            "5e-324",
            "-5e-324",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
            "-0",
            "-0.0",
            "0.30000000000000004",
            "1e+21",
            "12345678901234567000",
            "18446744073709551616",
        ];
        for text in doubles {
            let sa =
                SearchAttributes::from_json(&serde_json::from_str(&format!("{{\"D\": {text}}}")).unwrap()).unwrap();
            let SearchAttributeValue::Double(f) = sa.0["D"] else { panic!("{text} read as {:?}", sa.0["D"]) };
            let exact: f64 = text.parse().unwrap();
            assert_eq!(f.to_bits(), exact.to_bits(), "{text} read as {f:e}");
            let written = sa.to_json().to_string();
            let back = SearchAttributes::from_json(&serde_json::from_str(&written).unwrap()).unwrap();
            let SearchAttributeValue::Double(g) = back.0["D"] else { panic!("{written} read as {:?}", back.0["D"]) };
            assert_eq!(g.to_bits(), exact.to_bits(), "{text} written as {written}");
        }
        for int in [9007199254740993i64, i64::MAX, i64::MIN, -9007199254740993] {
            let sa = SearchAttributes::from_json(&serde_json::from_str(&format!("{{\"I\": {int}}}")).unwrap()).unwrap();
            assert_eq!(sa.0["I"], SearchAttributeValue::Int(int));
            assert_eq!(sa.to_json().to_string(), format!("{{\"I\":{int}}}"));
        }
    }

    #[test]
    fn times_truncate_towards_the_past() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let ns = t("2024-05-01T10:00:01.123456999Z");
        assert_eq!(TimePrecision::Microseconds.truncate(ns), t("2024-05-01T10:00:01.123456Z"));
        assert_eq!(TimePrecision::Milliseconds.truncate(ns), t("2024-05-01T10:00:01.123Z"));
        assert_eq!(TimePrecision::Nanoseconds.truncate(ns), ns);
        let before_1970 = t("1969-12-31T23:59:59.999999999Z");
        assert_eq!(TimePrecision::Microseconds.truncate(before_1970), t("1969-12-31T23:59:59.999999Z"));
        assert!(TimePrecision::Milliseconds < TimePrecision::Microseconds);
        assert!(TimePrecision::Microseconds < TimePrecision::Nanoseconds);
    }

    #[test]
    fn numbers_compare_by_value() {
        use SearchAttributeValue::{Double, Int};
        assert_eq!(Int(3), Double(3.0));
        assert_eq!(Double(1e18), Int(1_000_000_000_000_000_000));
        assert_ne!(Int(9007199254740993), Double(9007199254740992.0));
        assert_ne!(Int(i64::MAX), Double(9223372036854775808.0));
        assert_ne!(Int(3), Double(3.5));
        // PostgreSQL's numeric keeps no sign on zero; Temporal's queries do not tell them apart.
        assert_eq!(Double(-0.0), Double(0.0));
        assert_eq!(Double(-0.0), Int(0));
        assert_ne!(Double(f64::NAN), Double(f64::NAN));
    }

    #[test]
    fn search_attributes_reject_non_objects_and_nested_values() {
        assert!(SearchAttributes::from_json(&json!([1])).unwrap_err().contains("not a JSON object"));
        assert!(SearchAttributes::from_json(&json!({"X": {"a": 1}})).unwrap_err().contains("X"));
        assert!(SearchAttributes::from_json(&json!({"L": [1]})).unwrap_err().contains("not a string"));
    }
}
