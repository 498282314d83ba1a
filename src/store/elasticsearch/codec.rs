//! A visibility record as Temporal's Elasticsearch store writes it (reference §5.2):
//! the document id, the `_source` fields and their encodings, both ways; and a search
//! answer's hits read into records, or into bad rows naming what is wrong.

use std::borrow::Cow;

use base64::Engine;
use chrono::{DateTime, Timelike, Utc};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::record::{ExecutionStatus, SearchAttributeValue, SearchAttributes, VisibilityRecord};
use crate::store::{BadRow, StoreError, StoreResult};

/// `_source` fields that are the record itself; every other top-level field is a
/// search attribute (named by the user's name up to Temporal v1.30).
pub const BASE_FIELDS: [&str; 20] = [
    "VisibilityTaskKey",
    "NamespaceId",
    "WorkflowId",
    "RunId",
    "WorkflowType",
    "StartTime",
    "ExecutionTime",
    "ExecutionStatus",
    "TaskQueue",
    "RootWorkflowId",
    "RootRunId",
    "ParentWorkflowId",
    "ParentRunId",
    "Memo",
    "MemoEncoding",
    "CloseTime",
    "ExecutionDuration",
    "HistoryLength",
    "StateTransitionCount",
    "HistorySizeBytes",
];

pub fn is_base_field(name: &str) -> bool {
    BASE_FIELDS.contains(&name)
}

/// Temporal's `GetDocID`: `WorkflowId~RunId`, the workflow id cut (on a UTF-8 boundary)
/// so the id stays within Elasticsearch's 512-byte limit.
pub fn doc_id(workflow_id: &str, run_id: &str) -> String {
    const MAX: usize = 512;
    const DELIMITER: &str = "~";
    if run_id.len() + DELIMITER.len() >= MAX {
        // Run ids are UUIDs; this only guards against absurd input, as Temporal does.
        let keep = if run_id.len() >= MAX { MAX } else { MAX - DELIMITER.len() };
        return truncate_utf8(run_id, keep).to_string();
    }
    let room = MAX - run_id.len() - DELIMITER.len();
    format!("{}{DELIMITER}{run_id}", truncate_utf8(workflow_id, room))
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Go's `time.Time` JSON form: RFC 3339, up to nine fraction digits with trailing zeros
/// trimmed, `Z` for UTC. Temporal writes every datetime of a document this way.
pub fn format_time(t: &DateTime<Utc>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos > 0 {
        let digits = format!("{nanos:09}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

fn parse_time(field: &str, v: &Value) -> Result<DateTime<Utc>, String> {
    let s = v.as_str().ok_or_else(|| format!("{field} is not a string: {v}"))?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{field} {s:?} is not an RFC 3339 time: {e}"))
}

/// The `_source` Temporal would write for `r`, search attributes under the names they
/// carry in the record (the caller renames them first when families differ). It
/// serializes straight from the record: a bulk body holds thousands of them.
pub struct Source<'a>(pub &'a VisibilityRecord);

impl Serialize for Source<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("NamespaceId", &r.namespace_id)?;
        m.serialize_entry("WorkflowId", &r.workflow_id)?;
        m.serialize_entry("RunId", &r.run_id)?;
        m.serialize_entry("WorkflowType", &r.workflow_type_name)?;
        m.serialize_entry("StartTime", &format_time(&r.start_time))?;
        m.serialize_entry("ExecutionTime", &format_time(&r.execution_time))?;
        m.serialize_entry("ExecutionStatus", r.status.name())?;
        m.serialize_entry("TaskQueue", &r.task_queue)?;
        m.serialize_entry("RootWorkflowId", &r.root_workflow_id)?;
        m.serialize_entry("RootRunId", &r.root_run_id)?;
        if let Some(p) = &r.parent_workflow_id {
            m.serialize_entry("ParentWorkflowId", p)?;
        }
        if let Some(p) = &r.parent_run_id {
            m.serialize_entry("ParentRunId", p)?;
        }
        if let Some(memo) = r.memo.as_ref().filter(|m| !m.is_empty()) {
            m.serialize_entry("Memo", &base64::engine::general_purpose::STANDARD.encode(memo))?;
            m.serialize_entry("MemoEncoding", &r.encoding)?;
        }
        if let Some(t) = &r.close_time {
            m.serialize_entry("CloseTime", &format_time(t))?;
        }
        for (name, v) in [
            ("ExecutionDuration", r.execution_duration),
            ("HistoryLength", r.history_length),
            ("StateTransitionCount", r.state_transition_count),
            ("HistorySizeBytes", r.history_size_bytes),
        ] {
            if let Some(v) = v {
                m.serialize_entry(name, &v)?;
            }
        }
        if let Some(sa) = &r.search_attributes {
            for (name, value) in &sa.0 {
                // Never over a field of the record itself (the bulk writer fails such a
                // record to the dead letter before it gets here).
                if !is_base_field(name) {
                    m.serialize_entry(name, &AttributeJson(value))?;
                }
            }
        }
        m.end()
    }
}

/// A search attribute's value as JSON, without building a `Value` (as `to_json` does).
struct AttributeJson<'a>(&'a SearchAttributeValue);

impl Serialize for AttributeJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            SearchAttributeValue::String(s) => serializer.serialize_str(s),
            SearchAttributeValue::Int(i) => serializer.serialize_i64(*i),
            // JSON has no NaN or infinity: null, as `to_json` writes it.
            SearchAttributeValue::Double(f) if !f.is_finite() => serializer.serialize_unit(),
            SearchAttributeValue::Double(f) => serializer.serialize_f64(*f),
            SearchAttributeValue::Bool(b) => serializer.serialize_bool(*b),
            SearchAttributeValue::KeywordList(list) => serializer.collect_seq(list),
            SearchAttributeValue::List(items) => serializer.collect_seq(items.iter().map(AttributeJson)),
        }
    }
}

/// [`Source`] as a JSON map, for tests and tools that write single documents.
pub fn to_source(r: &VisibilityRecord) -> Map<String, Value> {
    match serde_json::to_value(Source(r)) {
        Ok(Value::Object(m)) => m,
        other => unreachable!("a Source serializes as a map: {other:?}"),
    }
}

/// Reads one hit (`_source` plus `_version`) back into a record. Documents without a
/// `VisibilityTaskKey` or with fields Temporal never writes are still read; a field
/// with the wrong type is an error naming it.
pub fn from_source(source: &Map<String, Value>, version: i64) -> Result<VisibilityRecord, String> {
    let fields = Fields(source);
    let status = fields.status()?;
    let (memo, encoding) = fields.memo()?;
    let close_time = fields.opt_time("CloseTime")?;
    let search_attributes = search_attributes(source)?;
    Ok(VisibilityRecord {
        namespace_id: fields.text("NamespaceId")?,
        run_id: fields.text("RunId")?,
        workflow_id: fields.text("WorkflowId")?,
        workflow_type_name: fields.text("WorkflowType")?,
        start_time: fields.time("StartTime")?,
        execution_time: fields.time("ExecutionTime")?,
        history_length: fields.opt_int("HistoryLength")?,
        history_size_bytes: fields.opt_int("HistorySizeBytes")?,
        execution_duration: fields.opt_int("ExecutionDuration")?,
        state_transition_count: fields.opt_int("StateTransitionCount")?,
        task_queue: fields.opt_text("TaskQueue")?.unwrap_or_default(),
        parent_workflow_id: fields.opt_text("ParentWorkflowId")?,
        parent_run_id: fields.opt_text("ParentRunId")?,
        root_workflow_id: fields.opt_text("RootWorkflowId")?.unwrap_or_default(),
        root_run_id: fields.opt_text("RootRunId")?.unwrap_or_default(),
        close_time,
        status,
        memo,
        encoding,
        search_attributes,
        version,
    })
}

/// One `_source`'s fields read as the types Temporal writes them, each error naming
/// the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn text(&self, name: &str) -> Result<String, String> {
        match self.0.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("{name} is not a string: {other}")),
            None => Err(format!("{name} is missing")),
        }
    }

    fn opt_text(&self, name: &str) -> Result<Option<String>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("{name} is not a string: {other}")),
        }
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| format!("{name} is not an int64: {v}")),
        }
    }

    fn time(&self, name: &str) -> Result<DateTime<Utc>, String> {
        parse_time(name, self.0.get(name).ok_or_else(|| format!("{name} is missing"))?)
    }

    fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse_time(name, v).map(Some),
        }
    }

    fn status(&self) -> Result<ExecutionStatus, String> {
        let name = self.text("ExecutionStatus")?;
        ExecutionStatus::from_name(&name).ok_or_else(|| format!("ExecutionStatus {name:?} is unknown"))
    }

    /// The memo's bytes and its encoding.
    fn memo(&self) -> Result<(Option<Vec<u8>>, String), String> {
        let memo = match self.opt_text("Memo")? {
            Some(b64) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| format!("Memo is not base64: {e}"))?,
            ),
            None => None,
        };
        let encoding = match (self.opt_text("MemoEncoding")?, &memo) {
            (Some(e), _) => e,
            // Temporal refuses to read a memo without its encoding; so does vismig.
            (None, Some(_)) => return Err("Memo without MemoEncoding".into()),
            // No memo: Temporal's only encoding, as the SQL stores hold it.
            (None, None) => "Proto3".to_string(),
        };
        Ok((memo, encoding))
    }
}

/// Every top-level field that is not the record's own, or `None` when there is none.
fn search_attributes(source: &Map<String, Value>) -> Result<Option<SearchAttributes>, String> {
    let mut attrs = std::collections::BTreeMap::new();
    for (name, v) in source {
        if is_base_field(name) {
            continue;
        }
        if let Some(value) = sa_from_json(name, v)? {
            attrs.insert(name.clone(), value);
        }
    }
    Ok((!attrs.is_empty()).then_some(SearchAttributes(attrs)))
}

/// A search attribute's JSON value. Elasticsearch accepts an array for any type, so a
/// multi-valued Int or Bool is kept as a list; null and empty arrays are absent values.
fn sa_from_json(name: &str, v: &Value) -> Result<Option<SearchAttributeValue>, String> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::String(s) => SearchAttributeValue::String(s.clone()),
        Value::Bool(b) => SearchAttributeValue::Bool(*b),
        Value::Number(n) => SearchAttributeValue::from_number(name, n)?,
        Value::Array(items) if items.is_empty() => return Ok(None),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            SearchAttributeValue::KeywordList(items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
        }
        Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                match sa_from_json(name, item)? {
                    Some(SearchAttributeValue::KeywordList(_) | SearchAttributeValue::List(_)) => {
                        return Err(format!("search attribute {name}: nested arrays"));
                    }
                    Some(value) => list.push(value),
                    None => {}
                }
            }
            SearchAttributeValue::List(list)
        }
        Value::Object(_) => return Err(format!("search attribute {name}: value is a JSON object")),
    }))
}

/// A search or scroll answer, read straight from the answer's bytes: each hit's `_source`
/// stays raw text until its own record is made, so a page of thousands of documents is
/// never a JSON tree in memory all at once. Never asked with `filter_path`: the server
/// then parses and re-prints every `_source`, and Go's `-0` (a double's negative zero)
/// came back as the integer `0` (OpenSearch 2.19); unfiltered, `_source` is the text
/// Temporal wrote, byte for byte.
#[derive(Deserialize)]
pub(super) struct HitsAnswer<'a> {
    #[serde(rename = "_scroll_id", default)]
    pub(super) scroll_id: Option<String>,
    // Absent from some answers (a scroll past its end on some servers).
    #[serde(borrow, default)]
    pub(super) hits: HitList<'a>,
}

#[derive(Deserialize, Default)]
pub(super) struct HitList<'a> {
    #[serde(borrow, default)]
    pub(super) hits: Vec<Hit<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Hit<'a> {
    #[serde(rename = "_id", borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "_version", default)]
    version: i64,
    #[serde(rename = "_source", borrow, default)]
    source: Option<&'a RawValue>,
}

impl<'a> HitsAnswer<'a> {
    pub(super) fn parse(bytes: &'a [u8]) -> StoreResult<Self> {
        serde_json::from_slice(bytes).map_err(|e| {
            let start = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            StoreError::Permanent(format!(
                "the search answer is not what Elasticsearch sends: {e} (it starts {start:?})"
            ))
        })
    }
}

/// Hits into records, or bad rows naming what is wrong with the document.
pub(super) fn decode_hits(hits: &[Hit]) -> (Vec<VisibilityRecord>, Vec<BadRow>) {
    let mut records = Vec::with_capacity(hits.len());
    let mut bad = Vec::new();
    for hit in hits {
        let Some(raw) = hit.source else {
            bad.push(bad_row(hit, Value::Null, "hit without _source (is _source disabled in the mapping?)"));
            continue;
        };
        let source: Map<String, Value> = match serde_json::from_str(raw.get()) {
            Ok(source) => source,
            Err(e) => {
                let reason = format!("document {:?}: _source is not a JSON object: {e}", hit.id);
                bad.push(bad_row(hit, Value::String(raw.get().to_string()), &reason));
                continue;
            }
        };
        match from_source(&source, hit.version) {
            Ok(r) => records.push(r),
            Err(reason) => {
                let reason = format!("document {:?}: {reason}", hit.id);
                bad.push(bad_row(hit, Value::Object(source), &reason));
            }
        }
    }
    (records, bad)
}

/// A dead-letter row for `hit`; `source` is its `_source` as far as it could be read.
fn bad_row(hit: &Hit, source: Value, reason: &str) -> BadRow {
    let field = |name: &str| source.get(name).and_then(Value::as_str).map(str::to_string);
    BadRow {
        namespace_id: field("NamespaceId").unwrap_or_default(),
        run_id: field("RunId").unwrap_or_default(),
        workflow_id: field("WorkflowId"),
        reason: reason.to_string(),
        raw: json!({"_id": hit.id, "_version": hit.version, "_source": source}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doc_ids_follow_temporal_and_stay_within_512_bytes() {
        assert_eq!(doc_id("order-42", "8d7e"), "order-42~8d7e");
        let long = "é".repeat(400); // 800 bytes
        let id = doc_id(&long, "0123456789abcdef0123456789abcdef0123");
        assert!(id.len() <= 512, "{}", id.len());
        assert!(id.ends_with("~0123456789abcdef0123456789abcdef0123"));
        assert!(id.is_char_boundary(id.len() - 37));
    }

    #[test]
    fn times_are_written_like_go_and_read_with_any_offset() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T12:00:00.123450000Z").unwrap().with_timezone(&Utc);
        assert_eq!(format_time(&t), "2024-05-01T12:00:00.12345Z");
        let t = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(format_time(&t), "2024-05-01T12:00:00Z");
        let back = parse_time("X", &json!("2024-05-01T14:00:00+02:00")).unwrap();
        assert_eq!(back, t);
        assert!(parse_time("StartTime", &json!("yesterday")).unwrap_err().contains("StartTime"));
    }

    #[test]
    fn the_reference_example_round_trips() {
        let src = json!({"VisibilityTaskKey":"3~1048612","NamespaceId":"2f1c","WorkflowId":"order-42",
            "RunId":"8d7e","WorkflowType":"OrderWorkflow","StartTime":"2024-05-01T12:00:00.123456789Z",
            "ExecutionTime":"2024-05-01T12:00:00.123456789Z","ExecutionStatus":"Completed",
            "TaskQueue":"orders","RootWorkflowId":"order-42","RootRunId":"8d7e",
            "Memo":"CgsKA2tleRIE","MemoEncoding":"Proto3","CustomerId":"c-1","Amounts":[1,2],
            "CloseTime":"2024-05-01T12:00:01.623456789Z","ExecutionDuration":1500000000i64,
            "HistoryLength":11,"StateTransitionCount":7,"HistorySizeBytes":2048});
        let r = from_source(src.as_object().unwrap(), 1048612).unwrap();
        assert_eq!(r.status, ExecutionStatus::Completed);
        assert_eq!(r.version, 1048612);
        assert_eq!(r.execution_duration, Some(1_500_000_000));
        let sa = r.search_attributes.as_ref().unwrap();
        assert_eq!(sa.0["CustomerId"], SearchAttributeValue::String("c-1".into()));
        assert_eq!(
            sa.0["Amounts"],
            SearchAttributeValue::List(vec![SearchAttributeValue::Int(1), SearchAttributeValue::Int(2)])
        );
        let mut written = Value::Object(to_source(&r));
        written["VisibilityTaskKey"] = json!("3~1048612");
        assert_eq!(written, src);
    }

    #[test]
    fn sources_write_attribute_values_as_json_without_overwriting_record_fields() {
        let mut g = crate::seed::Generator::new(1, chrono::Utc::now());
        let mut r = g.next_record();
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("Ratio".to_string(), SearchAttributeValue::Double(f64::NAN));
        attrs.insert("Score".to_string(), SearchAttributeValue::Double(1.5));
        attrs.insert("Tags".to_string(), SearchAttributeValue::KeywordList(vec!["a".into(), "b".into()]));
        attrs.insert("Flags".to_string(), SearchAttributeValue::List(vec![SearchAttributeValue::Bool(true)]));
        attrs.insert("RunId".to_string(), SearchAttributeValue::String("not the run id".into()));
        r.search_attributes = Some(SearchAttributes(attrs));
        let src = to_source(&r);
        assert_eq!(src["Ratio"], Value::Null);
        assert_eq!(src["Score"], json!(1.5));
        assert_eq!(src["Tags"], json!(["a", "b"]));
        assert_eq!(src["Flags"], json!([true]));
        assert_eq!(src["RunId"], json!(r.run_id));
        // The text of a bulk line has each key once.
        let text = serde_json::to_string(&Source(&r)).unwrap();
        assert_eq!(text.matches("\"RunId\"").count(), 1, "{text}");
    }

    #[test]
    fn bad_documents_name_the_field() {
        let mut src = json!({"NamespaceId":"n","WorkflowId":"w","RunId":"r","WorkflowType":"t",
            "StartTime":"2024-05-01T12:00:00Z","ExecutionTime":"2024-05-01T12:00:00Z","ExecutionStatus":"Running"});
        assert!(from_source(src.as_object().unwrap(), 0).is_ok());
        src["ExecutionStatus"] = json!("Sleeping");
        assert!(from_source(src.as_object().unwrap(), 0).unwrap_err().contains("ExecutionStatus"));
        src["ExecutionStatus"] = json!("Running");
        src["Memo"] = json!("CgsK");
        assert!(from_source(src.as_object().unwrap(), 0).unwrap_err().contains("MemoEncoding"));
        src["MemoEncoding"] = json!("Proto3");
        src["HistoryLength"] = json!("eleven");
        assert!(from_source(src.as_object().unwrap(), 0).unwrap_err().contains("HistoryLength"));
    }

    #[test]
    fn a_page_is_read_from_its_bytes_into_records_and_bad_rows() {
        let good = r#"{"NamespaceId":"ns","WorkflowId":"w\"1","RunId":"r1","WorkflowType":"t","StartTime":"2024-05-01T12:00:00Z","ExecutionTime":"2024-05-01T12:00:00Z","ExecutionStatus":"Running","CustomerId":"c-1"}"#;
        let bad = r#"{"NamespaceId":"ns","WorkflowId":"w2","RunId":"r2","WorkflowType":"t","StartTime":"noon","ExecutionTime":"2024-05-01T12:00:00Z","ExecutionStatus":"Running"}"#;
        let page = format!(
            r#"{{"_scroll_id":"abc","hits":{{"hits":[{{"_id":"w\"1~r1","_version":7,"_source":{good}}},{{"_id":"w2~r2","_version":3,"_source":{bad}}},{{"_id":"w3~r3","_version":1}}]}}}}"#
        );
        let answer = HitsAnswer::parse(page.as_bytes()).unwrap();
        assert_eq!(answer.scroll_id.as_deref(), Some("abc"));
        assert_eq!(answer.hits.hits[0].id, "w\"1~r1");
        let (records, bad_rows) = decode_hits(&answer.hits.hits);
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].workflow_id.as_str(), records[0].version), ("w\"1", 7));
        assert!(records[0].search_attributes.as_ref().unwrap().0.contains_key("CustomerId"));
        assert_eq!(bad_rows.len(), 2);
        assert!(
            bad_rows[0].reason.contains("\"w2~r2\"") && bad_rows[0].reason.contains("StartTime"),
            "{}",
            bad_rows[0].reason
        );
        assert_eq!((bad_rows[0].run_id.as_str(), &bad_rows[0].raw["_version"]), ("r2", &json!(3)));
        assert_eq!(bad_rows[0].raw["_source"]["StartTime"], "noon");
        assert!(bad_rows[1].reason.contains("without _source"), "{}", bad_rows[1].reason);
        assert_eq!((&bad_rows[1].raw["_id"], &bad_rows[1].raw["_source"]), (&json!("w3~r3"), &Value::Null));

        // A page with no hits is filtered down to `{}`; an answer that is not JSON is an error.
        let empty = HitsAnswer::parse(b"{}").unwrap();
        assert!(empty.scroll_id.is_none() && empty.hits.hits.is_empty());
        let e = HitsAnswer::parse(b"<html>bad gateway</html>").err().unwrap();
        assert!(e.to_string().contains("bad gateway"), "{e}");
    }
}
