//! Fidelity: records with the hardest values Temporal writes (doubles whose shortest text
//! needs 17 digits, the edge of DECIMAL(20,5), subnormals, negative zero, int64 past 2^53,
//! nanosecond times) are written into the primary as Temporal writes them (raw SQL rows,
//! raw `_source` text), copied by `vismig backfill`, and both stores are read back by the
//! oracle (tests/oracle), which shares no code with vismig, and compared field by field.
//! `vismig verify --deep` must agree that the copy is equal. Cassandra (standard
//! visibility, milliseconds, no search attributes) is written with raw CQL and copied to
//! PostgreSQL; deep verify is refused there, so the counts verify stands in.

mod common;
mod oracle;

use common::*;
use oracle::Kind;

const NS: &str = "6f1c2d3e-0000-4000-8000-0000000000f1";

/// Field name (SQL) -> the user's name (Elasticsearch), as the namespace's alias map.
const ALIASES: [(&str, &str); 10] = [
    ("Double01", "ScoreA"),
    ("Double02", "ScoreB"),
    ("Double03", "ScoreC"),
    ("Int01", "BigA"),
    ("Int02", "BigB"),
    ("Int03", "BigC"),
    ("Datetime01", "WhenA"),
    ("Keyword01", "KeyA"),
    ("KeywordList01", "TagsA"),
    ("Bool01", "FlagA"),
];

fn alias(field: &str) -> String {
    ALIASES.iter().find(|(f, _)| *f == field).map_or(field, |(_, a)| a).to_string()
}

fn field(user: &str) -> String {
    ALIASES.iter().find(|(_, a)| *a == user).map_or(user, |(f, _)| f).to_string()
}

/// One record as Temporal holds it; attribute values are their JSON text as Go writes it.
struct Hard {
    run: &'static str,
    status: (i32, &'static str),
    start: &'static str,
    execution: &'static str,
    close: Option<&'static str>,
    counters: [Option<i64>; 4],
    memo: &'static [u8],
    parent: Option<(&'static str, &'static str)>,
    attrs: Vec<(&'static str, &'static str)>,
    version: i64,
}

/// `sql_only` adds legacy custom attributes (no column, no alias) that only SQL pairs carry.
fn hard_records(sql_only: bool) -> Vec<Hard> {
    let mut third = vec![
        ("Double01", "0.30000000000000004"),
        ("Double02", "1e-7"),
        ("Double03", "999999999999999.9"),
        ("Keyword01", "\"k-3\""),
    ];
    if sql_only {
        third.extend([
            ("CustomHuge", "1.7976931348623157e+308"),
            ("CustomE21", "1e+21"),
            ("CustomGoInteger", "12345678901234567000"),
        ]);
    }
    vec![
        Hard {
            run: "run-1",
            status: (2, "Completed"),
            start: "2024-05-01T10:00:01.1234569Z",
            execution: "2024-05-01T10:00:01.999999999Z",
            close: Some("2024-05-01T10:00:02.000000001Z"),
            counters: [Some(11), Some(2048), Some(876543101), Some(7)],
            memo: &[0x0a, 0x0b, 0x0a, 0x03, 0x6b, 0x65, 0x79, 0x12, 0x04, 0x0a, 0x02, 0x08, 0x01],
            parent: None,
            attrs: vec![
                ("Double01", "0.42000000000000004"),
                ("Double02", "123456789012345.67"),
                ("Double03", "-999999999999999.9"),
                ("Int01", "9007199254740993"),
                ("Int02", "9223372036854775807"),
                ("Int03", "-9223372036854775808"),
                ("Datetime01", "\"2024-05-01T10:00:01.123456789+02:00\""),
                ("Keyword01", "\"k-1\""),
                ("KeywordList01", "[\"a\",\"b c\"]"),
                ("Bool01", "true"),
            ],
            version: 1048612,
        },
        Hard {
            run: "run-2",
            status: (1, "Running"),
            start: "2024-05-01T10:00:03.000000999Z",
            execution: "2024-05-01T10:00:03.000000999Z",
            close: None,
            counters: [None, None, None, None],
            memo: &[0xff, 0x00, 0x7f],
            parent: Some(("parent-wf", "parent-run")),
            attrs: vec![
                ("Double01", "5e-324"),
                ("Double02", "-0"),
                ("Double03", "2.2250738585072014e-308"),
                ("Int01", "-9007199254740993"),
                ("Keyword01", "\"k-2\""),
            ],
            version: 1048613,
        },
        Hard {
            run: "run-3",
            status: (3, "Failed"),
            start: "2024-05-01T10:00:04.5Z",
            execution: "2024-05-01T10:00:04.5Z",
            close: Some("2024-05-01T10:00:05.999999500Z"),
            counters: [Some(3), Some(100), Some(1499999500), Some(2)],
            memo: &[],
            parent: None,
            attrs: third,
            version: 1048614,
        },
    ]
}

/// A time as Temporal writes it to SQL: truncated to microseconds; `sep` between date and
/// time, `suffix` after.
fn sql_time(rfc3339: &str, sep: &str, suffix: &str, trim: bool) -> String {
    let t = oracle::parse_time(rfc3339);
    let (date, time) = rfc3339.split_at(10);
    let mut frac = format!("{:06}", t.nanos / 1000);
    if trim {
        frac = frac.trim_end_matches('0').to_string();
    }
    let dot = if frac.is_empty() { "" } else { "." };
    format!("{date}{sep}{}{dot}{frac}{suffix}", &time[1..9])
}

fn attrs_json(h: &Hard, sqlite: bool) -> String {
    let items: Vec<String> = h
        .attrs
        .iter()
        .map(|(k, v)| {
            let v = if sqlite && v.starts_with('[') {
                let list: Vec<String> = serde_json::from_str(v).unwrap();
                serde_json::to_string(&list.join("\u{2661}")).unwrap()
            } else {
                v.to_string()
            };
            format!("\"{k}\":{v}")
        })
        .collect();
    format!("{{{}}}", items.join(","))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The INSERT Temporal's SQL plugins amount to, for one dialect.
fn insert_sql(records: &[Hard], kind: Kind) -> String {
    let mut out = String::new();
    for h in records {
        let time = |t: &str| match kind {
            Kind::Sqlite => quote(&sql_time(t, " ", "+00:00", true)),
            _ => quote(&sql_time(t, " ", "", false)),
        };
        let memo_hex: String = h.memo.iter().map(|b| format!("{b:02x}")).collect();
        let memo = match kind {
            Kind::Postgres => format!("decode('{memo_hex}', 'hex')"),
            Kind::Mariadb => format!("UNHEX('{memo_hex}')"),
            _ => format!("X'{memo_hex}'"),
        };
        let n = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
        let (pw, pr) = h.parent.map_or(("NULL".into(), "NULL".into()), |(w, r)| (quote(w), quote(r)));
        let sa = quote(&attrs_json(h, kind == Kind::Sqlite));
        out.push_str(&format!(
            "INSERT INTO executions_visibility (namespace_id, run_id, workflow_type_name, workflow_id, start_time, \
             execution_time, status, close_time, history_length, history_size_bytes, execution_duration, \
             state_transition_count, memo, encoding, task_queue, search_attributes, parent_workflow_id, parent_run_id, \
             root_workflow_id, root_run_id, _version) VALUES ('{NS}', '{run}', 'HardWorkflow', 'wf-{run}', {start}, {exec}, \
             {status}, {close}, {hl}, {hsb}, {dur}, {stc}, {memo}, 'Proto3', 'orders', {sa}, {pw}, {pr}, 'wf-{run}', '{run}', {v});\n",
            run = h.run,
            start = time(h.start),
            exec = time(h.execution),
            status = h.status.0,
            close = h.close.map_or("NULL".to_string(), time),
            hl = n(h.counters[0]),
            hsb = n(h.counters[1]),
            dur = n(h.counters[2]),
            stc = n(h.counters[3]),
            v = h.version,
        ));
    }
    out
}

/// The `_source` text Temporal's Elasticsearch store writes: nanosecond times, numbers
/// as Go prints them, attributes under the user's names.
fn source_text(h: &Hard) -> String {
    let mut f: Vec<String> = vec![
        format!("\"VisibilityTaskKey\":\"1~{}\"", h.version),
        format!("\"NamespaceId\":\"{NS}\""),
        format!("\"WorkflowId\":\"wf-{}\"", h.run),
        format!("\"RunId\":\"{}\"", h.run),
        "\"WorkflowType\":\"HardWorkflow\"".to_string(),
        format!("\"StartTime\":\"{}\"", h.start),
        format!("\"ExecutionTime\":\"{}\"", h.execution),
        format!("\"ExecutionStatus\":\"{}\"", h.status.1),
        "\"TaskQueue\":\"orders\"".to_string(),
        format!("\"RootWorkflowId\":\"wf-{}\"", h.run),
        format!("\"RootRunId\":\"{}\"", h.run),
    ];
    if let Some((w, r)) = h.parent {
        f.push(format!("\"ParentWorkflowId\":\"{w}\",\"ParentRunId\":\"{r}\""));
    }
    if !h.memo.is_empty() {
        use base64::Engine;
        f.push(format!(
            "\"Memo\":\"{}\",\"MemoEncoding\":\"Proto3\"",
            base64::engine::general_purpose::STANDARD.encode(h.memo)
        ));
    }
    if let Some(close) = h.close {
        f.push(format!("\"CloseTime\":\"{close}\""));
    }
    for (name, v) in
        ["HistoryLength", "HistorySizeBytes", "ExecutionDuration", "StateTransitionCount"].iter().zip(h.counters)
    {
        if let Some(v) = v {
            f.push(format!("\"{name}\":{v}"));
        }
    }
    for (k, v) in &h.attrs {
        f.push(format!("\"{}\":{v}", alias(k)));
    }
    format!("{{{}}}", f.join(","))
}

/// Indexes the records into `index` as Temporal does (external version = task id), and
/// gives the index the attributes' mappings (Temporal's `buildMappingBody` types).
async fn put_documents(url: &str, index: &str, records: &[Hard]) {
    register_aliases(url, index).await;
    let http = reqwest::Client::new();
    for h in records {
        let resp = http
            .put(format!("{url}/{index}/_doc/wf-{}~{}?version={}&version_type=external", h.run, h.run, h.version))
            .header("content-type", "application/json")
            .body(source_text(h))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    http.post(format!("{url}/{index}/_refresh")).send().await.unwrap();
}

async fn register_aliases(url: &str, index: &str) {
    let mut props = serde_json::Map::new();
    for (f, a) in ALIASES {
        let mapping = match f.trim_end_matches(char::is_numeric) {
            "Double" => serde_json::json!({"type": "scaled_float", "scaling_factor": 10000}),
            "Int" => serde_json::json!({"type": "long"}),
            "Datetime" => serde_json::json!({"type": "date_nanos"}),
            "Bool" => serde_json::json!({"type": "boolean"}),
            _ => serde_json::json!({"type": "keyword"}),
        };
        props.insert(a.to_string(), mapping);
    }
    search_call(
        reqwest::Method::PUT,
        &format!("{url}/{index}/_mapping"),
        Some(serde_json::json!({"properties": props})),
    )
    .await;
}

fn aliases_config() -> String {
    let mut out = format!("  searchAttributeAliases:\n    \"{NS}\":\n");
    for (f, a) in ALIASES {
        out.push_str(&format!("      {f}: {a}\n"));
    }
    out
}

const MIGRATION: &str = "  verify: { cutoff: 1m, recheckAfter: 1s }\n";

/// Backfills, checks the oracle finds no difference, and that deep verify says equal.
async fn copy_and_check(work: &Work, read: impl AsyncFn(bool) -> oracle::Stored, rename: &dyn Fn(&str) -> String) {
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!work.dead_letter().exists(), "dead letter: {}", std::fs::read_to_string(work.dead_letter()).unwrap());
    let (primary, secondary) = (read(true).await, read(false).await);
    assert_eq!(primary.records.len(), 3, "the primary holds the records");
    let found = oracle::compare(&primary, &secondary, rename);
    assert!(found.is_empty(), "the oracle found differences:\n{}", found.join("\n"));
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn same(name: &str) -> String {
    name.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_sqlite_is_exact() {
    let work = Work::new(MIGRATION).await;
    exec(&work.primary(), &insert_sql(&hard_records(true), Kind::Sqlite)).await;
    let (p, s) = (work.primary(), work.secondary());
    copy_and_check(&work, async |primary| oracle::read_sqlite(if primary { &p } else { &s }).await, &same).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_postgres_is_exact() {
    if !service_up("postgres") {
        return;
    }
    let (a, b) = (db_name("fid_pa"), db_name("fid_pb"));
    reset_db("postgres", &a, "advanced");
    reset_db("postgres", &b, "advanced");
    pg_exec(&a, &insert_sql(&hard_records(true), Kind::Postgres)).await;
    let work = Work::with_stores(Some(pg_store(&a, "postgres12")), Some(pg_store(&b, "postgres12")), MIGRATION).await;
    copy_and_check(&work, async |primary| oracle::read_postgres(&pg_url(if primary { &a } else { &b })).await, &same)
        .await;
}

fn mariadb_url(db: &str) -> String {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    format!(
        "mysql://{}:{}@{}:{}/{db}",
        env("VISMIG_TEST_MYSQL_USER", "temporal"),
        env("VISMIG_TEST_MYSQL_PASSWORD", "temporal"),
        env("VISMIG_TEST_MYSQL_HOST", "127.0.0.1"),
        env("VISMIG_TEST_MYSQL_PORT", "3306"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_postgres_is_exact() {
    if !service_up("mariadb") || !service_up("postgres") {
        return;
    }
    let (a, b) = (db_name("fid_ma"), db_name("fid_mb"));
    reset_db("mariadb", &a, "advanced");
    reset_db("postgres", &b, "advanced");
    let pool = sqlx::MySqlPool::connect(&mariadb_url(&a)).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(insert_sql(&hard_records(true), Kind::Mariadb))).execute(&pool).await.unwrap();
    pool.close().await;
    let work = Work::with_stores(Some(mysql_store(&a, "mysql8")), Some(pg_store(&b, "postgres12")), MIGRATION).await;
    copy_and_check(
        &work,
        async |primary| {
            if primary {
                oracle::read_mariadb(&mariadb_url(&a)).await
            } else {
                oracle::read_postgres(&pg_url(&b)).await
            }
        },
        &same,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_to_postgres_is_exact_at_microseconds() {
    if !service_up("opensearch") || !service_up("postgres") {
        return;
    }
    let (url, index) = search_index("opensearch", "fid_op").await;
    put_documents(&url, &index, &hard_records(false)).await;
    let db = db_name("fid_op");
    reset_db("postgres", &db, "advanced");
    let work = Work::with_stores(
        Some(search_store(&url, &index)),
        Some(pg_store(&db, "postgres12")),
        &format!("{MIGRATION}{}", aliases_config()),
    )
    .await;
    copy_and_check(
        &work,
        async |primary| {
            if primary { oracle::read_search(&url, &index).await } else { oracle::read_postgres(&pg_url(&db)).await }
        },
        &field,
    )
    .await;
    drop_index(&url, &index).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_opensearch_is_exact() {
    if !service_up("opensearch") || !service_up("postgres") {
        return;
    }
    let db = db_name("fid_po");
    reset_db("postgres", &db, "advanced");
    pg_exec(&db, &insert_sql(&hard_records(false), Kind::Postgres)).await;
    let (url, index) = search_index("opensearch", "fid_po").await;
    register_aliases(&url, &index).await;
    let work = Work::with_stores(
        Some(pg_store(&db, "postgres12")),
        Some(search_store(&url, &index)),
        &format!("{MIGRATION}{}", aliases_config()),
    )
    .await;
    copy_and_check(
        &work,
        async |primary| {
            if primary { oracle::read_postgres(&pg_url(&db)).await } else { oracle::read_search(&url, &index).await }
        },
        &alias,
    )
    .await;
    drop_index(&url, &index).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_to_opensearch_is_exact() {
    if !service_up("opensearch") {
        return;
    }
    let (url, a) = search_index("opensearch", "fid_oa").await;
    let (_, b) = search_index("opensearch", "fid_ob").await;
    put_documents(&url, &a, &hard_records(false)).await;
    register_aliases(&url, &b).await;
    let work = Work::with_stores(Some(search_store(&url, &a)), Some(search_store(&url, &b)), MIGRATION).await;
    copy_and_check(&work, async |primary| oracle::read_search(&url, if primary { &a } else { &b }).await, &same).await;
    drop_index(&url, &a).await;
    drop_index(&url, &b).await;
}

/// Damages the copy behind vismig's back (`damage`: one record changed at the same version,
/// one deleted), then proves with the oracle that it sees the damage, that `verify --deep
/// --repair` undoes it exactly, and that the next deep verify agrees.
async fn repair_and_check(
    work: &Work,
    read: impl AsyncFn(bool) -> oracle::Stored,
    rename: &dyn Fn(&str) -> String,
    damage: impl AsyncFnOnce(),
) {
    damage().await;
    let found = oracle::compare(&read(true).await, &read(false).await, rename);
    assert!(
        found.iter().any(|d| d.contains("run-1") && d.contains("search attribute")),
        "the oracle sees the change: {found:?}"
    );
    assert!(found.iter().any(|d| d.contains("run-2") && d.contains("missing")), "the oracle sees the loss: {found:?}");
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let repair = work.run(&["verify", "--deep", "--repair"]);
    assert!(repair.status.code() == Some(0) || repair.status.code() == Some(3), "{}", text(&repair));
    let found = oracle::compare(&read(true).await, &read(false).await, rename);
    assert!(
        found.is_empty(),
        "after --repair the oracle still finds differences:\n{}\nrepair said:\n{}",
        found.join("\n"),
        text(&repair)
    );
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_repair_restores_the_primary_exactly() {
    if !service_up("postgres") {
        return;
    }
    let (a, b) = (db_name("fid_ra"), db_name("fid_rb"));
    reset_db("postgres", &a, "advanced");
    reset_db("postgres", &b, "advanced");
    pg_exec(&a, &insert_sql(&hard_records(true), Kind::Postgres)).await;
    let work = Work::with_stores(Some(pg_store(&a, "postgres12")), Some(pg_store(&b, "postgres12")), MIGRATION).await;
    let read = async |primary| oracle::read_postgres(&pg_url(if primary { &a } else { &b })).await;
    copy_and_check(&work, read, &same).await;
    // The nearest neighbour of the 17-digit double, and a counter, at the same _version.
    let damage = async || {
        pg_exec(
            &b,
            "UPDATE executions_visibility SET search_attributes = jsonb_set(search_attributes, '{Double01}', '0.42'), \
             history_length = 12 WHERE run_id = 'run-1'; DELETE FROM executions_visibility WHERE run_id = 'run-2'",
        )
        .await
    };
    repair_and_check(&work, read, &same, damage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_repair_restores_the_primary_exactly() {
    if !service_up("opensearch") {
        return;
    }
    let (url, a) = search_index("opensearch", "fid_ra").await;
    let (_, b) = search_index("opensearch", "fid_rb").await;
    put_documents(&url, &a, &hard_records(false)).await;
    register_aliases(&url, &b).await;
    let work = Work::with_stores(Some(search_store(&url, &a)), Some(search_store(&url, &b)), MIGRATION).await;
    let read = async |primary| oracle::read_search(&url, if primary { &a } else { &b }).await;
    copy_and_check(&work, read, &same).await;
    // run-1 re-indexed at its own version with one double changed; run-2 deleted.
    let damage = async || {
        let http = reqwest::Client::new();
        let run1 = &hard_records(false)[0];
        let changed = source_text(run1).replace("0.42000000000000004", "0.42");
        assert_ne!(changed, source_text(run1));
        let resp = http
            .put(format!(
                "{url}/{b}/_doc/wf-run-1~run-1?version={}&version_type=external_gte&refresh=true",
                run1.version
            ))
            .header("content-type", "application/json")
            .body(changed)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        // A document lost without a trace (a shard restored from an older snapshot): no
        // delete tombstone is kept, which a by-hand DELETE would leave for a minute.
        let resp = http
            .put(format!("{url}/{b}/_settings"))
            .header("content-type", "application/json")
            .body(r#"{"index.gc_deletes":"0s"}"#)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        let resp = http.delete(format!("{url}/{b}/_doc/wf-run-2~run-2?refresh=true")).send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        let resp = http.post(format!("{url}/{b}/_refresh")).send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    };
    repair_and_check(&work, read, &same, damage).await;
    drop_index(&url, &a).await;
    drop_index(&url, &b).await;
}

/// A double Elasticsearch holds but Temporal's DECIMAL(20,5) column cannot (1e21): the
/// record goes to the dead letter with the reason, never a rounded neighbour; the others
/// are copied.
#[tokio::test(flavor = "multi_thread")]
async fn opensearch_to_postgres_dead_letters_what_decimal_cannot_hold() {
    if !service_up("opensearch") || !service_up("postgres") {
        return;
    }
    let mut records = hard_records(false);
    records[2].attrs[0] = ("Double01", "1e+21");
    let (url, index) = search_index("opensearch", "fid_dl").await;
    put_documents(&url, &index, &records).await;
    let db = db_name("fid_dl");
    reset_db("postgres", &db, "advanced");
    let work = Work::with_stores(
        Some(search_store(&url, &index)),
        Some(pg_store(&db, "postgres12")),
        &format!("{MIGRATION}{}", aliases_config()),
    )
    .await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    let letters = std::fs::read_to_string(work.dead_letter()).unwrap();
    let lines: Vec<serde_json::Value> = letters.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{letters}");
    assert_eq!(lines[0]["runId"], "run-3");
    let reason = lines[0]["reason"].as_str().unwrap();
    assert!(reason.contains("overflow") || reason.contains("Double01"), "{reason}");
    let secondary = oracle::read_postgres(&pg_url(&db)).await;
    assert_eq!(
        secondary.records.keys().map(|k| k.1.as_str()).collect::<Vec<_>>(),
        vec!["run-1", "run-2"],
        "the others are copied, and no rounded neighbour of run-3"
    );
    drop_index(&url, &index).await;
}

/// One run as Temporal v1.23's Cassandra standard visibility writes it.
struct CqlRun {
    ns: &'static str,
    run: &'static str,
    workflow_id: String,
    workflow_type: &'static str,
    start_ms: i64,
    execution_ms: i64,
    /// Close time (ms), status and history length of a closed run.
    closed: Option<(i64, i32, i64)>,
    memo: Option<&'static [u8]>,
    encoding: Option<&'static str>,
    task_queue: &'static str,
    /// The close batch's delete of the open row missed: the run is in both tables.
    in_both: bool,
}

const CQL_NS: [&str; 2] = ["6f1c2d3e-0000-4000-8000-0000000000c1", "6f1c2d3e-0000-4000-8000-0000000000c2"];

/// Eight runs with the edges of every column: a 255-character workflow id (the widest
/// Temporal's SQL column holds) with multi-byte characters, quotes and backslashes, unicode
/// types and queues, memo blobs with 0x00/0xff, an empty memo and a NULL one, the
/// largest int64 history length and 0, a close under a second after the start, times
/// at .999 ms and past 2038, every closed status, and a run in both tables.
fn cql_runs() -> Vec<CqlRun> {
    let long_id: String = "wf-é漢🚀'\\".chars().cycle().take(255).collect();
    let base = 1_714_557_601_000i64; // 2024-05-01T10:00:01Z
    let run = |ns: usize, run, workflow_id: &str, start_ms: i64, closed| CqlRun {
        ns: CQL_NS[ns],
        run,
        workflow_id: workflow_id.to_string(),
        workflow_type: "HardWorkflow",
        start_ms,
        execution_ms: start_ms,
        closed,
        memo: Some(&[0x0a, 0x0b, 0x0a, 0x03, 0x6b, 0x65, 0x79, 0x12, 0x04, 0x0a, 0x02, 0x08, 0x01]),
        encoding: Some("Proto3"),
        task_queue: "orders",
        in_both: false,
    };
    vec![
        CqlRun {
            execution_ms: base + 3_600_000, // a delayed start
            task_queue: "очередь-заказов",
            ..run(0, "a0000000-0000-4000-8000-000000000001", &long_id, base + 123, None)
        },
        CqlRun { memo: Some(&[]), ..run(0, "a0000000-0000-4000-8000-000000000002", "wf-empty-memo", base + 999, None) },
        CqlRun {
            memo: Some(&[0x00, 0xff, 0x7f, 0x80]),
            ..run(0, "a0000000-0000-4000-8000-000000000003", "wf-max", base, Some((base + 86_400_000, 2, i64::MAX)))
        },
        CqlRun {
            memo: None,
            encoding: None,
            ..run(0, "a0000000-0000-4000-8000-000000000004", "wf-quick", base + 1_999, Some((base + 2_001, 3, 0)))
        },
        CqlRun {
            workflow_type: "Ödeme-処理-💳",
            ..run(0, "a0000000-0000-4000-8000-000000000005", "wf-'quoted' \\ id", base + 5, Some((base + 7_999, 7, 12)))
        },
        run(1, "a0000000-0000-4000-8000-000000000006", "wf-2038", 2_147_483_648_001, Some((2_147_483_649_999, 6, 3))),
        CqlRun {
            in_both: true,
            ..run(1, "a0000000-0000-4000-8000-000000000007", "wf-both", base + 10, Some((base + 20_000, 4, 9)))
        },
        run(1, "a0000000-0000-4000-8000-000000000008", "wf-terminated", base + 30, Some((base + 31_000, 5, 1))),
    ]
}

fn cql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn cql_opt(v: Option<&str>) -> String {
    v.map_or("null".into(), cql_text)
}

fn cql_blob(v: Option<&[u8]>) -> String {
    v.map_or("null".into(), |b| format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
}

/// Temporal's writes as raw CQL: the open insert `USING TIMESTAMP` start ms; the close as
/// one logged batch (timestamp: close ms, or start + 1 s when shorter) that inserts the
/// closed row and deletes the open one.
async fn write_cql_runs(ks: &Keyspace, runs: &[CqlRun]) {
    let s = session(ks).await;
    for r in runs {
        let open = format!(
            "INSERT INTO open_executions (namespace_id, namespace_partition, workflow_id, run_id, start_time, \
             execution_time, workflow_type_name, memo, encoding, task_queue) VALUES ({ns}, 0, {wf}, {run}, {start}, \
             {exec}, {wt}, {memo}, {enc}, {tq}) USING TIMESTAMP {start}",
            ns = r.ns,
            wf = cql_text(&r.workflow_id),
            run = r.run,
            start = r.start_ms,
            exec = r.execution_ms,
            wt = cql_text(r.workflow_type),
            memo = cql_blob(r.memo),
            enc = cql_opt(r.encoding),
            tq = cql_text(r.task_queue),
        );
        s.query_unpaged(open.as_str(), ()).await.unwrap_or_else(|e| panic!("{open}: {e}"));
        let Some((close, status, history_length)) = r.closed else { continue };
        let delete = format!(
            "DELETE FROM open_executions WHERE namespace_id = {} AND namespace_partition = 0 AND start_time = {} AND run_id = {};",
            r.ns, r.start_ms, r.run
        );
        let batch = format!(
            "BEGIN BATCH USING TIMESTAMP {stamp} INSERT INTO closed_executions (namespace_id, namespace_partition, \
             workflow_id, run_id, start_time, execution_time, close_time, workflow_type_name, status, history_length, \
             memo, encoding, task_queue) VALUES ({ns}, 0, {wf}, {run}, {start}, {exec}, {close}, {wt}, {status}, \
             {history_length}, {memo}, {enc}, {tq}); {delete} APPLY BATCH",
            stamp = close.max(r.start_ms + 1_000),
            ns = r.ns,
            wf = cql_text(&r.workflow_id),
            run = r.run,
            start = r.start_ms,
            exec = r.execution_ms,
            wt = cql_text(r.workflow_type),
            memo = cql_blob(r.memo),
            enc = cql_opt(r.encoding),
            tq = cql_text(r.task_queue),
            delete = if r.in_both { "" } else { delete.as_str() },
        );
        s.query_unpaged(batch.as_str(), ()).await.unwrap_or_else(|e| panic!("{batch}: {e}"));
    }
}

/// Cassandra -> PostgreSQL: the oracle reads the keyspace with plain CQL and the database
/// with plain SQL and finds them equal at Cassandra's millisecond precision; then a value
/// changed by hand in PostgreSQL (one history length, one start time by 1 ms) is found,
/// so the comparison is not empty by construction. Deep verify is refused for a
/// Cassandra primary (README), so the counts verify stands in for it.
#[tokio::test(flavor = "multi_thread")]
async fn cassandra_to_postgres_is_exact_at_milliseconds() {
    if !service_up("cassandra") || !service_up("postgres") {
        return;
    }
    let ks = Keyspace::create("fid_cq");
    let runs = cql_runs();
    write_cql_runs(&ks, &runs).await;
    let db = db_name("fid_cq");
    reset_db("postgres", &db, "advanced");
    let work = cassandra_work(&ks, Some(pg_store(&db, "postgres12")), MIGRATION).await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!work.dead_letter().exists(), "dead letter: {}", std::fs::read_to_string(work.dead_letter()).unwrap());

    let host = format!("{}:{}", cassandra_host(), cassandra_port());
    let primary = oracle::read_cassandra(&host, &ks.0).await;
    assert_eq!(primary.records.len(), runs.len(), "the oracle reads every run of the keyspace");
    let both = &primary.records[&(CQL_NS[1].to_string(), runs[6].run.to_string())];
    assert_eq!((both.status, both.close.is_some()), (4, true), "a run in both tables is the closed one");
    let max = &primary.records[&(CQL_NS[0].to_string(), runs[2].run.to_string())];
    assert_eq!(max.counters[0], Some(i64::MAX));
    let secondary = oracle::read_postgres(&pg_url(&db)).await;
    let found = oracle::compare(&primary, &secondary, &same);
    assert!(found.is_empty(), "the oracle found differences:\n{}", found.join("\n"));

    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = work.run(&["verify", "--deep"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("not supported with a Cassandra primary"), "{}", text(&out));

    pg_exec(
        &db,
        &format!(
            "UPDATE executions_visibility SET history_length = history_length - 1 WHERE run_id = '{}';
             UPDATE executions_visibility SET start_time = start_time + interval '1 millisecond' WHERE run_id = '{}';",
            runs[2].run, runs[0].run
        ),
    )
    .await;
    let found = oracle::compare(&primary, &oracle::read_postgres(&pg_url(&db)).await, &same);
    assert_eq!(found.len(), 2, "{}", found.join("\n"));
    assert!(found[0].contains("start_time") && found[1].contains("counters"), "{}", found.join("\n"));
}

/// Temporal accepts workflow ids up to 1,000 characters (`limit.maxIDLength`) and
/// Cassandra holds them, but Temporal's PostgreSQL column is VARCHAR(255): that run goes
/// to the dead letter with the reason, never a truncated id; the others are copied.
#[tokio::test(flavor = "multi_thread")]
async fn cassandra_to_postgres_dead_letters_a_workflow_id_too_long_for_postgres() {
    if !service_up("cassandra") || !service_up("postgres") {
        return;
    }
    let ks = Keyspace::create("fid_cl");
    let mut runs = cql_runs();
    runs[3].workflow_id = "x".repeat(1000);
    write_cql_runs(&ks, &runs).await;
    let db = db_name("fid_cl");
    reset_db("postgres", &db, "advanced");
    let work = cassandra_work(&ks, Some(pg_store(&db, "postgres12")), MIGRATION).await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    let letters = std::fs::read_to_string(work.dead_letter()).unwrap();
    let lines: Vec<serde_json::Value> = letters.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{letters}");
    assert_eq!(lines[0]["runId"], runs[3].run);
    let reason = lines[0]["reason"].as_str().unwrap();
    assert!(reason.contains("too long") || reason.contains("workflow_id"), "{reason}");
    let secondary = oracle::read_postgres(&pg_url(&db)).await;
    let mut primary = oracle::read_cassandra(&format!("{}:{}", cassandra_host(), cassandra_port()), &ks.0).await;
    primary.records.remove(&(CQL_NS[0].to_string(), runs[3].run.to_string()));
    let found = oracle::compare(&primary, &secondary, &same);
    assert!(found.is_empty(), "the others are copied exactly:\n{}", found.join("\n"));
}
