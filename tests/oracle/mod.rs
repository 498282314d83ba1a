//! The oracle: an independent reader of each visibility store, for the fidelity tests.
//!
//! It shares no code with vismig (nothing here uses the `vismig` crate): PostgreSQL,
//! MariaDB and SQLite are read with plain SQL that casts every column to text,
//! Elasticsearch/OpenSearch as the raw text of each `_source`, and Cassandra's standard
//! visibility tables with plain CQL (times as the stored epoch milliseconds). Numbers are taken from their
//! JSON text and parsed with the standard library's correctly rounded parser, times with
//! the small parser below. Two stores are then compared field by field: numbers
//! bit-exact (an integer text against a double only when the double is exactly that
//! integer), times at the coarser store's precision (truncated, never rounded), memos
//! byte for byte. The one documented exception: PostgreSQL's numeric has no negative
//! zero, so a -0 copied there reads back as 0.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Mariadb,
    Sqlite,
    Search,
    Cassandra,
}

impl Kind {
    /// Fraction digits the store keeps in its time fields.
    fn time_digits(self) -> u32 {
        match self {
            Kind::Search => 9,
            Kind::Cassandra => 3,
            _ => 6,
        }
    }
}

/// A point in time: seconds since 1970 and nanoseconds within the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    fn truncated(self, digits: u32) -> Time {
        let unit = 10u32.pow(9 - digits);
        Time { secs: self.secs, nanos: self.nanos / unit * unit }
    }
}

#[derive(Clone, Debug)]
pub enum Attr {
    Text(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    List(Vec<Attr>),
}

/// One record as a store holds it, in neutral form.
#[derive(Clone, Debug)]
pub struct Rec {
    pub workflow_id: String,
    pub workflow_type: String,
    pub start: Time,
    pub execution: Time,
    pub close: Option<Time>,
    pub status: i64,
    pub counters: [Option<i64>; 4],
    pub memo: Vec<u8>,
    pub encoding: String,
    pub task_queue: String,
    pub attrs: BTreeMap<String, Attr>,
    pub parent: (Option<String>, Option<String>),
    pub root: (String, String),
    pub version: i64,
}

/// Every record of one store, by (namespace id, run id).
pub struct Stored {
    pub kind: Kind,
    pub records: BTreeMap<(String, String), Rec>,
}

// ---- parsing text -----------------------------------------------------------------

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `YYYY-MM-DD[T ]hh:mm:ss[.f…][Z|±hh:mm]` (no offset: UTC).
pub fn parse_time(text: &str) -> Time {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> i64 {
        text[from..from + len].parse().unwrap_or_else(|_| panic!("oracle: bad time {text:?}"))
    };
    assert!(b.len() >= 19 && (b[10] == b'T' || b[10] == b' '), "oracle: bad time {text:?}");
    let days = days_from_civil(num(0, 4), num(5, 2), num(8, 2));
    let mut secs = days * 86_400 + num(11, 2) * 3600 + num(14, 2) * 60 + num(17, 2);
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        assert!((1..=9).contains(&n), "oracle: bad fraction in {text:?}");
        nanos = format!("{:0<9}", &frac[..n]).parse().unwrap();
        rest = &frac[n..];
    }
    match rest {
        "" | "Z" => {}
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (h, m): (i64, i64) = (o[1..3].parse().unwrap(), o[4..6].parse().unwrap());
            secs -= sign * (h * 3600 + m * 60);
        }
    }
    Time { secs, nanos }
}

/// A number from its JSON text: an integer text that fits int64 is an Int (Go's `-0` is
/// the double negative zero), anything else the double it denotes.
fn number(text: &str) -> Attr {
    if text == "-0" {
        return Attr::Double(-0.0);
    }
    if text.bytes().all(|c| c.is_ascii_digit() || c == b'-')
        && let Ok(i) = text.parse::<i64>()
    {
        return Attr::Int(i);
    }
    Attr::Double(text.parse().unwrap_or_else(|_| panic!("oracle: not a number: {text}")))
}

/// A JSON value from its raw text; None for null and empty lists (absent values).
fn attr(raw: &RawValue) -> Option<Attr> {
    let text = raw.get().trim();
    Some(match text.as_bytes()[0] {
        b'"' => Attr::Text(serde_json::from_str(text).unwrap()),
        b't' => Attr::Bool(true),
        b'f' => Attr::Bool(false),
        b'n' => return None,
        b'[' => {
            let items: Vec<Box<RawValue>> = serde_json::from_str(text).unwrap();
            let items: Vec<Attr> = items.iter().filter_map(|i| attr(i)).collect();
            if items.is_empty() {
                return None;
            }
            Attr::List(items)
        }
        b'{' => panic!("oracle: an object as a search attribute: {text}"),
        _ => number(text),
    })
}

/// The search-attribute JSON object of a SQL row. SQLite joins KeywordList items with
/// U+2661.
fn attrs_of(text: Option<&str>, kind: Kind) -> BTreeMap<String, Attr> {
    let Some(text) = text else { return BTreeMap::new() };
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).unwrap();
    let mut out = BTreeMap::new();
    for (name, raw) in map {
        let Some(mut value) = attr(&raw) else { continue };
        if kind == Kind::Sqlite
            && let Attr::Text(s) = &value
            && s.contains('\u{2661}')
        {
            value = Attr::List(s.split('\u{2661}').map(|p| Attr::Text(p.to_string())).collect());
        }
        out.insert(name, value);
    }
    out
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

// ---- readers ----------------------------------------------------------------------

/// The 21 base columns, each as its text, in Temporal's order.
fn sql_rec(c: &[Option<String>], kind: Kind) -> ((String, String), Rec) {
    let s = |i: usize| c[i].clone().unwrap_or_default();
    let n = |i: usize| c[i].as_deref().map(|t| t.parse::<i64>().unwrap());
    let t = |i: usize| c[i].as_deref().map(parse_time);
    let key = (s(0).trim_end().to_string(), s(1).trim_end().to_string());
    let rec = Rec {
        workflow_id: s(2),
        workflow_type: s(3),
        start: t(4).unwrap(),
        execution: t(5).unwrap(),
        close: t(6),
        status: n(7).unwrap(),
        counters: [n(8), n(9), n(10), n(11)],
        memo: c[12].as_deref().map(hex).unwrap_or_default(),
        encoding: s(13),
        task_queue: s(14),
        attrs: attrs_of(c[15].as_deref(), kind),
        parent: (c[16].clone(), c[17].clone()),
        root: (s(18), s(19)),
        version: n(20).unwrap_or(0),
    };
    (key, rec)
}

const PG_SELECT: &str = "SELECT namespace_id::text, run_id::text, workflow_id, workflow_type_name, \
    start_time::text, execution_time::text, close_time::text, status::text, history_length::text, \
    history_size_bytes::text, execution_duration::text, state_transition_count::text, encode(memo, 'hex'), \
    encoding, task_queue, search_attributes::text, parent_workflow_id, parent_run_id, root_workflow_id, \
    root_run_id, _version::text FROM executions_visibility";

const MARIADB_SELECT: &str = "SELECT namespace_id, run_id, workflow_id, workflow_type_name, \
    CAST(start_time AS CHAR), CAST(execution_time AS CHAR), CAST(close_time AS CHAR), CAST(status AS CHAR), \
    CAST(history_length AS CHAR), CAST(history_size_bytes AS CHAR), CAST(execution_duration AS CHAR), \
    CAST(state_transition_count AS CHAR), LOWER(HEX(memo)), encoding, task_queue, CAST(search_attributes AS CHAR), \
    parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, CAST(_version AS CHAR) FROM executions_visibility";

const SQLITE_SELECT: &str = "SELECT namespace_id, run_id, workflow_id, workflow_type_name, start_time, \
    execution_time, close_time, CAST(status AS TEXT), CAST(history_length AS TEXT), CAST(history_size_bytes AS TEXT), \
    CAST(execution_duration AS TEXT), CAST(state_transition_count AS TEXT), hex(memo), encoding, task_queue, \
    search_attributes, parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, CAST(_version AS TEXT) \
    FROM executions_visibility";

fn rows_to_stored<R: sqlx::Row>(rows: Vec<R>, kind: Kind) -> Stored
where
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let records = rows
        .iter()
        .map(|row| {
            let cols: Vec<Option<String>> = (0..21).map(|i| row.try_get::<Option<String>, _>(i).unwrap()).collect();
            sql_rec(&cols, kind)
        })
        .collect();
    Stored { kind, records }
}

pub async fn read_postgres(url: &str) -> Stored {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let rows = sqlx::query(PG_SELECT).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows_to_stored(rows, Kind::Postgres)
}

pub async fn read_mariadb(url: &str) -> Stored {
    let pool = sqlx::MySqlPool::connect(url).await.unwrap();
    let rows = sqlx::query(MARIADB_SELECT).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows_to_stored(rows, Kind::Mariadb)
}

pub async fn read_sqlite(path: &std::path::Path) -> Stored {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows = sqlx::query(SQLITE_SELECT).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows_to_stored(rows, Kind::Sqlite)
}

#[derive(Deserialize)]
struct Answer {
    hits: Hits,
}
#[derive(Deserialize)]
struct Hits {
    hits: Vec<Hit>,
}
#[derive(Deserialize)]
struct Hit {
    #[serde(rename = "_version")]
    version: i64,
    #[serde(rename = "_source")]
    source: Box<RawValue>,
}

const STATUS_NAMES: [&str; 8] =
    ["Running", "Completed", "Failed", "Canceled", "Terminated", "ContinuedAsNew", "TimedOut", "Paused"];

/// Every document of an index (at most 1000), from the text of `_source`.
pub async fn read_search(url: &str, index: &str) -> Stored {
    let http = reqwest::Client::new();
    http.post(format!("{url}/{index}/_refresh")).send().await.unwrap();
    let text = http
        .post(format!("{url}/{index}/_search"))
        .header("content-type", "application/json")
        .body(r#"{"size": 1000, "version": true, "query": {"match_all": {}}}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer: Answer = serde_json::from_str(&text).unwrap_or_else(|e| panic!("oracle: {e}: {text}"));
    let mut records = BTreeMap::new();
    for hit in answer.hits.hits {
        let mut f: BTreeMap<String, Box<RawValue>> = serde_json::from_str(hit.source.get()).unwrap();
        let mut take = |name: &str| f.remove(name);
        let text = |v: Option<Box<RawValue>>| v.map(|r| serde_json::from_str::<String>(r.get()).unwrap());
        let int = |v: Option<Box<RawValue>>| v.map(|r| r.get().parse::<i64>().unwrap());
        let key = (text(take("NamespaceId")).unwrap(), text(take("RunId")).unwrap());
        let status_name = text(take("ExecutionStatus")).unwrap();
        let memo = text(take("Memo")).map(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b).unwrap()
        });
        let rec = Rec {
            workflow_id: text(take("WorkflowId")).unwrap(),
            workflow_type: text(take("WorkflowType")).unwrap(),
            start: parse_time(&text(take("StartTime")).unwrap()),
            execution: parse_time(&text(take("ExecutionTime")).unwrap()),
            close: text(take("CloseTime")).map(|t| parse_time(&t)),
            status: STATUS_NAMES.iter().position(|n| *n == status_name).unwrap() as i64 + 1,
            counters: [
                int(take("HistoryLength")),
                int(take("HistorySizeBytes")),
                int(take("ExecutionDuration")),
                int(take("StateTransitionCount")),
            ],
            memo: memo.unwrap_or_default(),
            encoding: text(take("MemoEncoding")).unwrap_or_default(),
            task_queue: text(take("TaskQueue")).unwrap_or_default(),
            parent: (text(take("ParentWorkflowId")), text(take("ParentRunId"))),
            root: (text(take("RootWorkflowId")).unwrap_or_default(), text(take("RootRunId")).unwrap_or_default()),
            version: hit.version,
            attrs: BTreeMap::new(),
        };
        take("VisibilityTaskKey");
        let attrs = f.iter().filter_map(|(name, raw)| attr(raw).map(|a| (name.clone(), a))).collect();
        records.insert(key, Rec { attrs, ..rec });
    }
    Stored { kind: Kind::Search, records }
}

/// An open row: namespace, run, start (its clustering time), workflow id, type,
/// execution time, memo, encoding, task queue.
type OpenRow = (
    uuid::Uuid,
    uuid::Uuid,
    scylla::value::CqlTimestamp,
    Option<String>,
    Option<String>,
    Option<scylla::value::CqlTimestamp>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
);

/// A closed row: namespace, run, close (its clustering time), start, execution time,
/// status, history length, workflow id, type, memo, encoding, task queue.
type ClosedRow = (
    uuid::Uuid,
    uuid::Uuid,
    scylla::value::CqlTimestamp,
    Option<scylla::value::CqlTimestamp>,
    Option<scylla::value::CqlTimestamp>,
    Option<i32>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
);

fn from_millis(ms: i64) -> Time {
    Time { secs: ms.div_euclid(1000), nanos: ms.rem_euclid(1000) as u32 * 1_000_000 }
}

/// Every row of one table of the keyspace, paged by the driver.
async fn cql_rows<R>(session: &scylla::client::session::Session, cql: &str) -> Vec<R>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    use futures::TryStreamExt;
    let pager = session.query_iter(cql, ()).await.unwrap_or_else(|e| panic!("oracle: {cql}: {e}"));
    pager.rows_stream::<R>().unwrap().try_collect().await.unwrap_or_else(|e| panic!("oracle: {cql}: {e}"))
}

/// Every run of a keyspace with Temporal's Cassandra standard visibility schema (v1.23).
/// As Temporal's reader does: an open row is Running with no close time, a NULL execution
/// time is the start time; standard visibility has no search attributes, version, parent,
/// root or counters other than the history length. A run in both tables (the close
/// batch's delete of the open row missed) is the closed one.
pub async fn read_cassandra(host: &str, keyspace: &str) -> Stored {
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(host)
        .use_keyspace(keyspace, false)
        .build()
        .await
        .unwrap_or_else(|e| panic!("oracle: Cassandra {host}: {e}"));
    let rec = |workflow_id: Option<String>, workflow_type: Option<String>, start: Time| Rec {
        workflow_id: workflow_id.expect("oracle: workflow_id is NULL"),
        workflow_type: workflow_type.expect("oracle: workflow_type_name is NULL"),
        start,
        execution: start,
        close: None,
        status: 1,
        counters: [None; 4],
        memo: Vec::new(),
        encoding: String::new(),
        task_queue: String::new(),
        attrs: BTreeMap::new(),
        parent: (None, None),
        root: (String::new(), String::new()),
        version: 0,
    };
    let mut records = BTreeMap::new();
    let open: Vec<OpenRow> = cql_rows(
        &session,
        "SELECT namespace_id, run_id, start_time, workflow_id, workflow_type_name, execution_time, memo, encoding, \
         task_queue FROM open_executions",
    )
    .await;
    for (ns, run, start, workflow_id, workflow_type, execution, memo, encoding, task_queue) in open {
        let start = from_millis(start.0);
        let r = Rec {
            execution: execution.map_or(start, |t| from_millis(t.0)),
            memo: memo.unwrap_or_default(),
            encoding: encoding.unwrap_or_default(),
            task_queue: task_queue.unwrap_or_default(),
            ..rec(workflow_id, workflow_type, start)
        };
        records.insert((ns.to_string(), run.to_string()), r);
    }
    let closed: Vec<ClosedRow> = cql_rows(
        &session,
        "SELECT namespace_id, run_id, close_time, start_time, execution_time, status, history_length, workflow_id, \
         workflow_type_name, memo, encoding, task_queue FROM closed_executions",
    )
    .await;
    for (ns, run, close, start, execution, status, history_length, workflow_id, workflow_type, memo, encoding, queue) in
        closed
    {
        let start = from_millis(start.expect("oracle: a closed row without start_time").0);
        let r = Rec {
            execution: execution.map_or(start, |t| from_millis(t.0)),
            close: Some(from_millis(close.0)),
            status: status.expect("oracle: a closed row without status") as i64,
            counters: [history_length, None, None, None],
            memo: memo.unwrap_or_default(),
            encoding: encoding.unwrap_or_default(),
            task_queue: queue.unwrap_or_default(),
            ..rec(workflow_id, workflow_type, start)
        };
        records.insert((ns.to_string(), run.to_string()), r);
    }
    Stored { kind: Kind::Cassandra, records }
}

// ---- comparing --------------------------------------------------------------------

/// Whether two numbers (or values) are the same, bit for bit. `target` is the store the
/// second one was read from.
fn same_attr(a: &Attr, b: &Attr, target: Kind) -> bool {
    match (a, b) {
        (Attr::Double(x), Attr::Double(y)) => {
            x.to_bits() == y.to_bits() || (target == Kind::Postgres && *x == 0.0 && y.to_bits() == 0)
        }
        (Attr::Int(i), Attr::Double(f)) | (Attr::Double(f), Attr::Int(i)) => {
            f.fract() == 0.0 && f.to_bits() != (-0.0f64).to_bits() && (*f as i128) == (*i as i128) && f.abs() < 9.3e18
        }
        (Attr::Int(x), Attr::Int(y)) => x == y,
        (Attr::Text(x), Attr::Text(y)) => x == y,
        (Attr::Bool(x), Attr::Bool(y)) => x == y,
        (Attr::List(x), Attr::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_attr(p, q, target)),
        _ => false,
    }
}

/// Every difference between `primary` and `secondary`, one line each ("" = none). `rename`
/// gives a primary attribute's name in the secondary; `skip` lists runs not expected in
/// the secondary.
pub fn compare(primary: &Stored, secondary: &Stored, rename: &dyn Fn(&str) -> String) -> Vec<String> {
    let digits = primary.kind.time_digits().min(secondary.kind.time_digits());
    let mut out = Vec::new();
    for (key, a) in &primary.records {
        let Some(b) = secondary.records.get(key) else {
            out.push(format!("{key:?}: missing in the secondary"));
            continue;
        };
        let mut diff = |field: &str, x: String, y: String| {
            if x != y {
                out.push(format!("{key:?} {field}: {x} != {y}"));
            }
        };
        diff("workflow_id", a.workflow_id.clone(), b.workflow_id.clone());
        diff("workflow_type", a.workflow_type.clone(), b.workflow_type.clone());
        let t = |t: Time| format!("{:?}", t.truncated(digits));
        diff("start_time", t(a.start), t(b.start));
        diff("execution_time", t(a.execution), t(b.execution));
        diff("close_time", format!("{:?}", a.close.map(t)), format!("{:?}", b.close.map(t)));
        diff("status", a.status.to_string(), b.status.to_string());
        diff("counters", format!("{:?}", a.counters), format!("{:?}", b.counters));
        diff("memo", format!("{:02x?}", a.memo), format!("{:02x?}", b.memo));
        if !a.memo.is_empty() {
            diff("encoding", a.encoding.clone(), b.encoding.clone());
        }
        diff("task_queue", a.task_queue.clone(), b.task_queue.clone());
        diff("parent", format!("{:?}", a.parent), format!("{:?}", b.parent));
        diff("root", format!("{:?}", a.root), format!("{:?}", b.root));
        if a.version > 0 {
            diff("version", a.version.to_string(), b.version.to_string());
        }
        let renamed: BTreeMap<String, &Attr> = a.attrs.iter().map(|(n, v)| (rename(n), v)).collect();
        let names = |m: &BTreeMap<String, &Attr>| m.keys().cloned().collect::<Vec<_>>();
        let theirs: BTreeMap<String, &Attr> = b.attrs.iter().map(|(n, v)| (n.clone(), v)).collect();
        if names(&renamed) != names(&theirs) {
            out.push(format!("{key:?} search attribute names: {:?} != {:?}", names(&renamed), names(&theirs)));
        }
        for (name, x) in &renamed {
            if let Some(y) = theirs.get(name)
                && !same_attr(x, y, secondary.kind)
            {
                out.push(format!("{key:?} search attribute {name}: {x:?} != {y:?}"));
            }
        }
    }
    for key in secondary.records.keys() {
        if !primary.records.contains_key(key) {
            out.push(format!("{key:?}: extra in the secondary"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_parses_times_and_numbers_itself() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Time { secs: 0, nanos: 0 });
        assert_eq!(parse_time("2024-05-01T10:00:01.1234569Z"), Time { secs: 1714557601, nanos: 123456900 });
        assert_eq!(parse_time("2024-05-01 12:00:01.5+02:00"), Time { secs: 1714557601, nanos: 500000000 });
        assert_eq!(parse_time("1969-12-31 23:59:59.999999"), Time { secs: -1, nanos: 999999000 });
        assert!(matches!(number("9007199254740993"), Attr::Int(9007199254740993)));
        assert!(matches!(number("-0"), Attr::Double(f) if f.to_bits() == (-0.0f64).to_bits()));
        assert!(matches!(number("0.42000000000000004"), Attr::Double(f) if f.to_bits() == 0x3FDAE147AE147AE2));
        assert!(same_attr(&number("1e+21"), &number("1000000000000000000000"), Kind::Search));
        assert!(!same_attr(&number("0.42000000000000004"), &number("0.42"), Kind::Search));
        assert!(!same_attr(&number("-0"), &number("0.0"), Kind::Search));
        assert!(same_attr(&number("-0"), &number("0.0"), Kind::Postgres));
    }
}
