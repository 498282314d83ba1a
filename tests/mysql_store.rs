//! The MySQL store against a real server (MariaDB standing in for MySQL 8, with the schema
//! Temporal's own tool applies; tests/services/README.md), through the real binary:
//! SQLite -> MariaDB, MariaDB -> SQLite, MariaDB -> MariaDB, the MySQL 5.7 standard schema
//! as a source, the version guard, the side tables, values MySQL cannot hold, and
//! preflight errors.
//!
//! Run: `tests/services/up.sh mariadb && source tests/services/env.sh && cargo test --test mysql_store`.
//! Gated by `common::service_up("mariadb")`: skipped only when no services are declared up
//! (and never under CI=true); fails when mariadb is not listed or cannot be reached.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use sqlx::Connection;
use vismig::config::Secret;
use vismig::config::persistence::SqlStore;
use vismig::record::{ExecutionStatus, RecordKey, SearchAttributeValue, VisibilityRecord};
use vismig::store::sql::mysql::MysqlStore;
use vismig::store::{Sink, Source, Split, Store, WriteOutcome};

// --- the server ---------------------------------------------------------------------------------

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: source tests/services/env.sh"))
}

fn addr() -> String {
    format!("{}:{}", env("VISMIG_TEST_MYSQL_HOST"), env("VISMIG_TEST_MYSQL_PORT"))
}

/// A fresh database `vm_<name>` with Temporal's schema (`advanced` or `standard`), made
/// by tests/services/reset-db.sh.
async fn fresh_db(name: &str, flavour: &str) -> String {
    let db = format!("vt_m_{name}_{}", std::process::id());
    // reset-db.sh's MariaDB path runs the tool's drop-database without --force, which
    // declines without a terminal and leaves an existing database as it is: drop it here.
    let mut conn = connect("").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}"))).execute(&mut conn).await.unwrap();
    conn.close().await.ok();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/reset-db.sh"))
        .args(["mariadb", &db, flavour])
        .output()
        .unwrap();
    assert!(out.status.success(), "reset-db.sh mariadb {db} {flavour} failed (is mariadb up?): {}", text(&out));
    db
}

fn sql_config(db: &str, plugin: &str) -> SqlStore {
    SqlStore {
        plugin_name: plugin.into(),
        database_name: db.into(),
        connect_addr: addr(),
        user: Some(env("VISMIG_TEST_MYSQL_USER")),
        password: Some(Secret::new(env("VISMIG_TEST_MYSQL_PASSWORD"))),
        ..Default::default()
    }
}

async fn store(db: &str) -> MysqlStore {
    MysqlStore::open("test", &sql_config(db, "mysql8")).await.unwrap()
}

async fn connect(db: &str) -> sqlx::MySqlConnection {
    let options = sqlx::mysql::MySqlConnectOptions::new()
        .host(&env("VISMIG_TEST_MYSQL_HOST"))
        .port(env("VISMIG_TEST_MYSQL_PORT").parse().unwrap())
        .username(&env("VISMIG_TEST_MYSQL_USER"))
        .password(&env("VISMIG_TEST_MYSQL_PASSWORD"));
    let options = if db.is_empty() { options } else { options.database(db) };
    sqlx::MySqlConnection::connect_with(&options).await.unwrap_or_else(|e| panic!("mariadb {db}: {e}"))
}

async fn exec(db: &str, sql: &str) {
    let mut conn = connect(db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut conn).await.unwrap();
    conn.close().await.ok();
}

async fn drop_db(db: &str) {
    exec(db, &format!("DROP DATABASE {db}")).await;
}

/// Every record of a MySQL store, in key order, read through vismig's own source.
async fn mysql_records(db: &str, plugin: &str) -> Vec<VisibilityRecord> {
    let store = MysqlStore::open("test", &sql_config(db, plugin)).await.unwrap();
    let split = Split { per_process: 3, process_index: 0, process_count: 1 };
    let mut out = Vec::new();
    for shard in store.plan_shards(&[], &split).await.unwrap() {
        let mut cursor = None;
        loop {
            let page = store.scan(&shard, cursor.as_ref(), 400).await.unwrap();
            assert!(page.bad_rows.is_empty(), "unexpected bad rows: {:?}", page.bad_rows);
            out.extend(page.records);
            cursor = page.cursor.or(cursor);
            if page.done {
                break;
            }
        }
    }
    out.sort_by(|a, b| (&a.namespace_id, &a.run_id).cmp(&(&b.namespace_id, &b.run_id)));
    out
}

/// Asserts that two record lists are equal, showing the count and the first difference
/// rather than both lists.
#[track_caller]
fn assert_same(left: &[VisibilityRecord], right: &[VisibilityRecord], what: &str) {
    assert_eq!(left.len(), right.len(), "{what}: record counts differ");
    if let Some((l, r)) = left.iter().zip(right).find(|(l, r)| l != r) {
        panic!("{what}: first difference\n  left:  {l:?}\n  right: {r:?}");
    }
}

// --- configs ------------------------------------------------------------------------------------

fn sqlite_yaml(path: &Path) -> String {
    format!("sql: {{ pluginName: sqlite, databaseName: \"{}\", connectAddr: localhost }}", path.display())
}

fn mysql_yaml(db: &str, plugin: &str) -> String {
    format!(
        "sql: {{ pluginName: {plugin}, databaseName: {db}, connectAddr: \"{}\", user: temporal, password: \"${{VISMIG_TEST_MYSQL_PASSWORD}}\", maxConns: 6 }}",
        addr()
    )
}

fn configure(work: &Work, primary: &str, secondary: &str, extra: &str) {
    let text = format!(
        "persistence:\n  visibilityStore: primary\n  secondaryVisibilityStore: secondary\n  datastores:\n    primary:\n      {primary}\n    secondary:\n      {secondary}\nmigration:\n  checkpoint: {{ type: file, path: \"{}\" }}\n  deadLetter: {{ path: \"{}\" }}\n  metrics: {{ listen: \"\" }}\n{extra}",
        work.checkpoint().display(),
        work.dead_letter().display(),
    );
    std::fs::write(work.config(), text).unwrap();
}

fn backfill(work: &Work) -> String {
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "backfill failed: {log}");
    log
}

fn verify_equal(work: &Work) {
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(": equal"), "{}", text(&out));
}

fn seed(work: &Work, records: u64) {
    let out = work.run(&["seed", "--records", &records.to_string()]);
    assert!(out.status.success(), "seed failed: {}", text(&out));
}

/// `search_attributes` and `_version` of every row of `table`.
async fn json_and_versions(db: &str, table: &str) -> BTreeMap<String, (Option<serde_json::Value>, i64)> {
    let mut conn = connect(db).await;
    let rows: Vec<(String, Option<String>, i64)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT run_id, search_attributes, _version FROM {table}")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.ok();
    rows.into_iter().map(|(run, sa, v)| (run, (sa.map(|s| serde_json::from_str(&s).unwrap()), v))).collect()
}

async fn assert_side_tables_match(db: &str) {
    let main = json_and_versions(db, "executions_visibility").await;
    for table in ["custom_search_attributes", "chasm_search_attributes"] {
        let side = json_and_versions(db, table).await;
        assert_eq!(side.len(), main.len(), "{table} has one row per record");
        for (run, expected) in &main {
            assert_eq!(side.get(run), Some(expected), "{table} row of {run}: same JSON and _version");
        }
    }
}

// --- the cases ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_mariadb_copies_every_field() {
    if !service_up("mariadb") {
        return;
    }
    let db = fresh_db("sqlite_to_mariadb", "advanced").await;
    let work = Work::seeded(2_000, "").await;
    configure(&work, &sqlite_yaml(&work.primary()), &mysql_yaml(&db, "mysql8"), "  batchSize: 700\n  concurrency: 3\n");
    let log = backfill(&work);
    assert!(
        log.contains(
            "2000 inserted, 0 updated, 0 skipped (newer in secondary), 0 skipped (already present), 0 dead-lettered"
        ),
        "{log}"
    );
    assert!(log.contains(&format!("mysql {}/{db}", addr())), "the log names the store: {log}");
    assert!(!log.contains("temporal@") && !log.contains("password"), "{log}");

    let primary = records(&work.primary()).await;
    let secondary = mysql_records(&db, "mysql8").await;
    assert_eq!(primary.len(), 2_000);
    assert_same(&primary, &secondary, "every field of every record is the same in both stores");
    assert!(secondary.iter().any(|r| matches!(
        r.search_attributes.as_ref().and_then(|sa| sa.0.get("KeywordList01")),
        Some(SearchAttributeValue::KeywordList(l)) if l.len() > 1
    )));
    assert_side_tables_match(&db).await;
    verify_equal(&work);

    // Everything again without the checkpoint: every record is already there.
    std::fs::remove_file(work.checkpoint()).unwrap();
    let log = backfill(&work);
    assert!(
        log.contains("0 inserted, 0 updated, 0 skipped (newer in secondary), 2000 skipped (already present)"),
        "{log}"
    );
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_sqlite_copies_every_field() {
    if !service_up("mariadb") {
        return;
    }
    let db = fresh_db("mariadb_to_sqlite", "advanced").await;
    let work = Work::new("").await;
    configure(&work, &mysql_yaml(&db, "mysql8"), &sqlite_yaml(&work.secondary()), "  batchSize: 500\n");
    seed(&work, 1_500);
    let log = backfill(&work);
    assert!(log.contains("1500 inserted"), "{log}");

    let primary = mysql_records(&db, "mysql8").await;
    assert_eq!(primary.len(), 1_500);
    assert_same(&primary, &records(&work.secondary()).await, "every field of every record is the same in both stores");
    verify_equal(&work);
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_rows_in_mariadb_go_to_the_dead_letter_and_the_rest_is_copied() {
    if !service_up("mariadb") {
        return;
    }
    let db = fresh_db("broken_rows", "advanced").await;
    let mut g = vismig::seed::Generator::new(21, chrono::Utc::now());
    let good: Vec<VisibilityRecord> = (0..50).map(|_| g.next_record()).collect();
    store(&db).await.write(&good).await.unwrap();
    let cols = "namespace_id, run_id, workflow_type_name, workflow_id, start_time, execution_time, status, encoding, search_attributes, memo";
    exec(
        &db,
        &format!(
            "INSERT INTO executions_visibility ({cols}) VALUES
             ('ns-broken', 'run-bad-json', 'T', 'wf-1', '2024-01-01 00:00:00', '2024-01-01 00:00:00', 2, 'Proto3', '[1, 2]', NULL),
             ('ns-broken', 'run-bad-value', 'T', 'wf-2', '2024-01-01 00:00:00', '2024-01-01 00:00:00', 2, 'Proto3', '{{\"Keyword01\": {{\"nested\": 1}}}}', X'00FF'),
             ('ns-broken', 'run-bad-status', 'T', 'wf-3', '2024-01-01 00:00:00', '2024-01-01 00:00:00', 42, 'Proto3', NULL, NULL),
             ('ns-broken', 'run-good', 'T', 'wf-4', '2024-01-01 00:00:00.5', '2024-01-01 00:00:00', 2, 'Proto3', '{{\"Keyword01\": \"ok\"}}', NULL);"
        ),
    )
    .await;
    let work = Work::new("").await;
    configure(&work, &mysql_yaml(&db, "mysql8"), &sqlite_yaml(&work.secondary()), "");
    let log = backfill(&work);
    assert!(log.contains("51 inserted"), "{log}");
    assert!(log.contains("3 dead-lettered"), "{log}");
    let letters: Vec<serde_json::Value> = std::fs::read_to_string(work.dead_letter())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let letter = |run: &str| letters.iter().find(|l| l["runId"] == run).unwrap().clone();
    assert_eq!(letter("run-bad-json")["reason"], "search_attributes is not a JSON object: [1,2]");
    assert_eq!(letter("run-bad-value")["reason"], "search attribute Keyword01: value is a JSON object");
    assert_eq!(letter("run-bad-value")["record"]["memo"]["hex"], "00ff", "memo bytes rendered as hex");
    assert_eq!(letter("run-bad-value")["record"]["start_time"], "2024-01-01 00:00:00.000000");
    assert_eq!(letter("run-bad-status")["reason"], "unknown status 42");
    assert!(letters.iter().all(|l| l["stage"] == "scan" && l["namespaceId"] == "ns-broken"));

    let copied = records(&work.secondary()).await;
    assert_eq!(copied.len(), 51);
    let run_good = copied.iter().find(|r| r.run_id == "run-good").unwrap();
    assert_eq!(run_good.start_time.to_rfc3339(), "2024-01-01T00:00:00.500+00:00");
    assert_eq!(run_good.version, 0, "the column default");
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_mariadb_copies_every_field() {
    if !service_up("mariadb") {
        return;
    }
    let (a, b) = (fresh_db("m2m_primary", "advanced").await, fresh_db("m2m_secondary", "advanced").await);
    let work = Work::new("").await;
    configure(&work, &mysql_yaml(&a, "mysql8"), &mysql_yaml(&b, "mysql8"), "  batchSize: 1000\n  concurrency: 4\n");
    seed(&work, 2_500);
    let log = backfill(&work);
    assert!(log.contains("2500 inserted, 0 updated"), "{log}");

    let primary = mysql_records(&a, "mysql8").await;
    assert_eq!(primary.len(), 2_500);
    assert_same(&primary, &mysql_records(&b, "mysql8").await, "primary and secondary");
    assert_side_tables_match(&b).await;
    verify_equal(&work);

    // read() returns what scan returns.
    let keys: Vec<RecordKey> = primary.iter().step_by(97).map(VisibilityRecord::key).collect();
    let read = store(&b).await.read(&keys).await.unwrap();
    assert_eq!(read, primary.iter().step_by(97).cloned().collect::<Vec<_>>());
    drop_db(&a).await;
    drop_db(&b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_5_7_standard_to_advanced_inserts_where_absent_with_version_0() {
    if !service_up("mariadb") {
        return;
    }
    let (std_db, adv) =
        (fresh_db("standard_primary", "standard").await, fresh_db("standard_secondary", "advanced").await);
    // Rows as Temporal v1.23's standard MySQL store writes them
    // (common/persistence/sql/sqlplugin/mysql/visibility.go @ v1.23.1).
    let mut g = vismig::seed::Generator::new(11, chrono::Utc::now());
    // The v57 schema's tables are utf8mb3 here: characters outside the BMP (the seed's
    // emoji) never made it into such a table, so they are left out.
    let bmp = |s: &str| s.chars().filter(|c| (*c as u32) <= 0xFFFF).collect::<String>();
    let source: Vec<VisibilityRecord> = (0..300)
        .map(|_| {
            let r = g.next_record();
            VisibilityRecord { workflow_id: bmp(&r.workflow_id), ..r }
        })
        .collect();
    let mut conn = connect(&std_db).await;
    for r in &source {
        sqlx::query(
            "INSERT INTO executions_visibility (namespace_id, workflow_id, run_id, start_time, execution_time, workflow_type_name, status, memo, encoding, task_queue) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE run_id=VALUES(run_id)",
        )
        .bind(&r.namespace_id)
        .bind(&r.workflow_id)
        .bind(&r.run_id)
        .bind(r.start_time.naive_utc())
        .bind(r.execution_time.naive_utc())
        .bind(&r.workflow_type_name)
        .bind(1)
        .bind(&r.memo)
        .bind(&r.encoding)
        .bind(&r.task_queue)
        .execute(&mut conn)
        .await
        .unwrap();
        if let Some(close) = r.close_time {
            sqlx::query(
                "INSERT INTO executions_visibility (namespace_id, workflow_id, run_id, start_time, execution_time, workflow_type_name, close_time, status, history_length, memo, encoding, task_queue) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE workflow_id = VALUES(workflow_id), start_time = VALUES(start_time), execution_time = VALUES(execution_time), workflow_type_name = VALUES(workflow_type_name), \
                 close_time = VALUES(close_time), status = VALUES(status), history_length = VALUES(history_length), memo = VALUES(memo), encoding = VALUES(encoding), task_queue = VALUES(task_queue)",
            )
            .bind(&r.namespace_id)
            .bind(&r.workflow_id)
            .bind(&r.run_id)
            .bind(r.start_time.naive_utc())
            .bind(r.execution_time.naive_utc())
            .bind(&r.workflow_type_name)
            .bind(close.naive_utc())
            .bind(r.status.as_i32())
            .bind(r.history_length)
            .bind(&r.memo)
            .bind(&r.encoding)
            .bind(&r.task_queue)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    conn.close().await.ok();

    // What the standard schema keeps of a record: no version, no search attributes, no
    // size/duration/transition/parent/root values.
    let expected: Vec<VisibilityRecord> = {
        let mut v: Vec<VisibilityRecord> = source
            .iter()
            .map(|r| VisibilityRecord {
                // Open runs are written with status 1 (Running) by the Started statement.
                status: if r.close_time.is_none() { ExecutionStatus::Running } else { r.status },
                history_size_bytes: None,
                execution_duration: None,
                state_transition_count: None,
                search_attributes: None,
                parent_workflow_id: None,
                parent_run_id: None,
                root_workflow_id: String::new(),
                root_run_id: String::new(),
                version: 0,
                ..r.clone()
            })
            .collect();
        v.sort_by(|a, b| (&a.namespace_id, &a.run_id).cmp(&(&b.namespace_id, &b.run_id)));
        v
    };
    assert_same(&mysql_records(&std_db, "mysql").await, &expected, "the standard source reads every column");

    // Already in the secondary: one record written by Temporal since (a version), one
    // written before v1.27 (version 0). Neither is overwritten by an unversioned copy.
    let mut live = source[5].clone();
    live.workflow_type_name = "WrittenByTemporal".into();
    let mut old = source[6].clone();
    old.version = 0;
    old.workflow_type_name = "WrittenBeforeV127".into();
    let outcomes = store(&adv).await.write(&[live.clone(), old.clone()]).await.unwrap();
    assert_eq!(outcomes, [WriteOutcome::Inserted, WriteOutcome::Inserted]);

    let work = Work::new("").await;
    configure(&work, &mysql_yaml(&std_db, "mysql"), &mysql_yaml(&adv, "mysql8"), "");
    let log = backfill(&work);
    assert!(
        log.contains(
            "298 inserted, 0 updated, 1 skipped (newer in secondary), 1 skipped (already present), 0 dead-lettered"
        ),
        "{log}"
    );
    let copied = mysql_records(&adv, "mysql8").await;
    let by_run = |run: &str| copied.iter().find(|r| r.run_id == run).unwrap().clone();
    assert_eq!(by_run(&live.run_id), live);
    assert_eq!(by_run(&old.run_id), old);
    let rest: Vec<VisibilityRecord> =
        copied.into_iter().filter(|r| r.run_id != live.run_id && r.run_id != old.run_id).collect();
    let expected_rest: Vec<VisibilityRecord> =
        expected.into_iter().filter(|r| r.run_id != live.run_id && r.run_id != old.run_id).collect();
    assert_same(&rest, &expected_rest, "the copied records");
    assert!(rest.iter().all(|r| r.version == 0 && r.search_attributes.is_none()));
    verify_equal(&work);

    // The standard schema can only be read.
    configure(&work, &sqlite_yaml(&work.primary()), &mysql_yaml(&std_db, "mysql"), "");
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("standard visibility schema, which can only be read"), "{}", text(&out));
    let refused = MysqlStore::open("test", &sql_config(&std_db, "mysql")).await.unwrap().write(&source[..1]).await;
    assert!(refused.unwrap_err().to_string().contains("can only be read"));
    drop_db(&std_db).await;
    drop_db(&adv).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_version_guard_keeps_newer_records_and_replaces_older_ones() {
    if !service_up("mariadb") {
        return;
    }
    let db = fresh_db("version_guard", "advanced").await;
    let work = Work::seeded(1_000, "").await;
    configure(&work, &sqlite_yaml(&work.primary()), &mysql_yaml(&db, "mysql8"), "");
    let primary = records(&work.primary()).await;

    let mut newer = primary[0].clone();
    newer.version += 100;
    newer.status = ExecutionStatus::Terminated;
    newer.close_time = Some(newer.start_time + chrono::Duration::seconds(5));
    newer.workflow_type_name = "ChangedByLiveWrite".into();
    newer.search_attributes =
        Some(vismig::record::SearchAttributes::from_json(&serde_json::json!({"Keyword01": "live"})).unwrap());
    let mut older = primary[1].clone();
    older.version -= 1;
    older.workflow_type_name = "Stale".into();
    older.search_attributes = None;
    let mut same = primary[2].clone();
    same.workflow_type_name = "SameVersion".into();
    let sink = store(&db).await;
    sink.write(&[newer.clone(), older, same.clone()]).await.unwrap();

    let log = backfill(&work);
    assert!(
        log.contains(
            "997 inserted, 1 updated, 1 skipped (newer in secondary), 1 skipped (already present), 0 dead-lettered"
        ),
        "{log}"
    );
    let secondary = mysql_records(&db, "mysql8").await;
    let by_run = |r: &VisibilityRecord| secondary.iter().find(|x| x.run_id == r.run_id).cloned().unwrap();
    assert_eq!(by_run(&newer), newer, "the newer record keeps every value");
    assert_eq!(by_run(&primary[1]), primary[1], "the older record was replaced");
    assert_eq!(by_run(&same), same, "an equal version is not overwritten");
    assert_eq!(secondary.len(), 1_000);
    assert_side_tables_match(&db).await;

    // The store's own outcomes, record by record, including a key twice in one batch.
    let mut twice = primary[3].clone();
    twice.version += 10;
    let outcomes = sink.write(&[newer.clone(), primary[1].clone(), twice.clone(), primary[3].clone()]).await.unwrap();
    assert_eq!(
        outcomes,
        [WriteOutcome::SkippedPresent, WriteOutcome::SkippedPresent, WriteOutcome::Updated, WriteOutcome::SkippedNewer]
    );
    assert_eq!(sink.read(&[twice.key()]).await.unwrap(), [twice]);
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn side_tables_hold_the_same_json_and_version() {
    if !service_up("mariadb") {
        return;
    }
    let db = fresh_db("side_tables", "advanced").await;
    let sink = store(&db).await;
    let mut g = vismig::seed::Generator::new(5, chrono::Utc::now());
    let mut batch: Vec<VisibilityRecord> = (0..300).map(|_| g.next_record()).collect();
    // One record's side rows as Temporal's insert-if-absent path leaves them: version 0.
    exec(
        &db,
        &format!(
            "INSERT INTO custom_search_attributes (namespace_id, run_id, search_attributes) VALUES ('{0}', '{1}', '{{\"Keyword01\":\"start\"}}'); \
             INSERT INTO chasm_search_attributes (namespace_id, run_id, search_attributes) VALUES ('{0}', '{1}', '{{\"Keyword01\":\"start\"}}');",
            batch[0].namespace_id, batch[0].run_id
        ),
    )
    .await;
    let outcomes = sink.write(&batch).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == WriteOutcome::Inserted));
    assert_side_tables_match(&db).await;
    let main = json_and_versions(&db, "executions_visibility").await;
    let kl = main.values().find_map(|(sa, _)| sa.as_ref().and_then(|sa| sa.get("KeywordList01").cloned()));
    assert!(kl.is_some_and(|v| v.is_array()), "KeywordList stays a JSON array");

    // Newer versions with other search attributes replace all three rows; older ones none.
    for r in batch.iter_mut().take(100) {
        r.version += 50;
        r.search_attributes =
            Some(vismig::record::SearchAttributes::from_json(&serde_json::json!({"Keyword02": "updated"})).unwrap());
    }
    let mut stale = batch[150].clone();
    stale.version -= 1;
    stale.search_attributes = None;
    let mut with_stale = batch[..100].to_vec();
    with_stale.push(stale);
    let outcomes = sink.write(&with_stale).await.unwrap();
    assert_eq!(outcomes.iter().filter(|o| **o == WriteOutcome::Updated).count(), 100);
    assert_eq!(outcomes[100], WriteOutcome::SkippedNewer);
    assert_side_tables_match(&db).await;
    assert_eq!(sink.read(&[batch[0].key()]).await.unwrap(), [batch[0].clone()]);
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn values_mysql_cannot_hold_go_to_the_dead_letter_and_the_rest_is_copied() {
    if !service_up("mariadb") {
        return;
    }
    let db = fresh_db("dead_letter", "advanced").await;
    let work = Work::seeded(1_000, "").await;
    let mut g = vismig::seed::Generator::new(99, chrono::Utc::now());
    let mut big_memo = g.next_record();
    big_memo.run_id = "00000000-big-memo".into();
    big_memo.status = ExecutionStatus::Completed;
    big_memo.close_time = Some(big_memo.start_time + chrono::Duration::seconds(1));
    big_memo.memo = Some(vec![0x0a; 70_000]);
    let mut long_keyword = big_memo.clone();
    long_keyword.run_id = "00000000-long-keyword".into();
    long_keyword.memo = None;
    long_keyword.search_attributes =
        Some(vismig::record::SearchAttributes::from_json(&serde_json::json!({"Keyword01": "k".repeat(256)})).unwrap());
    write(&work.primary(), &[big_memo.clone(), long_keyword.clone()]).await;

    configure(&work, &sqlite_yaml(&work.primary()), &mysql_yaml(&db, "mysql8"), "");
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "refused records never stop the run: {log}");
    assert!(log.contains("1000 inserted"), "{log}");
    assert!(log.contains("2 dead-lettered"), "{log}");

    let letters: Vec<serde_json::Value> = std::fs::read_to_string(work.dead_letter())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2);
    let letter = |run: &str| letters.iter().find(|l| l["runId"] == run).unwrap().clone();
    assert_eq!(letter(&big_memo.run_id)["reason"], "memo is 70000 bytes; MySQL's BLOB column holds at most 65535");
    assert_eq!(
        letter(&long_keyword.run_id)["reason"],
        "search attribute Keyword01 (Keyword) is 256 characters; MySQL 8 stores it in a VARCHAR(255) column, at most 255"
    );
    assert!(letters.iter().all(|l| l["stage"] == "write" && l["store"] == format!("mysql {}/{db}", addr())));

    let mut expected = records(&work.primary()).await;
    expected.retain(|r| r.run_id != big_memo.run_id && r.run_id != long_keyword.run_id);
    assert_same(&mysql_records(&db, "mysql8").await, &expected, "everything else is copied, nothing truncated");

    // The two refused records are reported by verify, not hidden.
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_before_v1_27_has_no_version_and_is_written_insert_if_absent() {
    if !service_up("mariadb") {
        return;
    }
    let db = fresh_db("pre_v127", "advanced").await;
    exec(
        &db,
        "ALTER TABLE executions_visibility DROP COLUMN _version; \
         ALTER TABLE custom_search_attributes DROP COLUMN _version; \
         DROP TABLE chasm_search_attributes;",
    )
    .await;
    let work = Work::seeded(1_000, "").await;
    configure(&work, &sqlite_yaml(&work.primary()), &mysql_yaml(&db, "mysql8"), "");
    // The primary's versions would be lost: refused unless told.
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("has no _version, which the primary"), "{}", text(&out));
    configure(&work, &sqlite_yaml(&work.primary()), &mysql_yaml(&db, "mysql8"), "  dropMissingFields: true\n");
    let log = backfill(&work);
    assert!(log.contains("1000 inserted"), "{log}");
    let expected: Vec<VisibilityRecord> =
        records(&work.primary()).await.into_iter().map(|r| VisibilityRecord { version: 0, ..r }).collect();
    assert_same(&mysql_records(&db, "mysql8").await, &expected, "records without a version");

    std::fs::remove_file(work.checkpoint()).unwrap();
    let log = backfill(&work);
    assert!(
        log.contains("0 inserted, 0 updated, 0 skipped (newer in secondary), 1000 skipped (already present)"),
        "{log}"
    );
    drop_db(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_names_the_store_table_and_column_and_never_the_password() {
    if !service_up("mariadb") {
        return;
    }
    let db = fresh_db("preflight", "advanced").await;
    exec(&db, "ALTER TABLE executions_visibility DROP COLUMN root_run_id").await;
    let work = Work::new("").await;
    configure(&work, &sqlite_yaml(&work.primary()), &mysql_yaml(&db, "mysql8"), "");
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = text(&out);
    // A column that schema 1.3 (Temporal v1.21) lacks too: the schema comparison names it.
    assert!(log.contains(&format!("the secondary mysql {}/{db} (schema 1.14) has no root_run_id", addr())), "{log}");
    exec(&db, "ALTER TABLE executions_visibility DROP COLUMN task_queue").await;
    let out = work.run(&["backfill"]);
    assert!(
        text(&out).contains(&format!(
            "secondary: store \"secondary\" (mysql {}/{db}): table executions_visibility has no column task_queue",
            addr()
        )),
        "{}",
        text(&out)
    );

    exec(
        &db,
        "ALTER TABLE executions_visibility ADD COLUMN root_run_id VARCHAR(255) NOT NULL DEFAULT '', ADD COLUMN task_queue VARCHAR(255) NOT NULL DEFAULT ''; DROP TABLE custom_search_attributes",
    )
    .await;
    let out = work.run(&["backfill"]);
    assert!(text(&out).contains("table custom_search_attributes does not exist"), "{}", text(&out));

    // A wrong password: the error says so, and never shows it.
    let yaml = mysql_yaml(&db, "mysql8").replace("\"${VISMIG_TEST_MYSQL_PASSWORD}\"", "\"Wr0ng-s3cret\"");
    configure(&work, &sqlite_yaml(&work.primary()), &yaml, "");
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("store \"secondary\"") && log.contains("Access denied"), "{log}");
    assert!(!log.contains("Wr0ng-s3cret"), "the password leaked: {log}");

    // TLS required: a server without TLS is refused, never used in plain text.
    let yaml = mysql_yaml(&db, "mysql8").replace("maxConns: 6", "maxConns: 6, tls: { enabled: true }");
    configure(&work, &sqlite_yaml(&work.primary()), &yaml, "");
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("store \"secondary\"") && log.contains("TLS"), "{log}");
    let yaml = mysql_yaml(&db, "mysql8")
        .replace("maxConns: 6", "maxConns: 6, tls: { enabled: true, caFile: /nonexistent/ca.pem }");
    configure(&work, &sqlite_yaml(&work.primary()), &yaml, "");
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("sql.tls.caFile \"/nonexistent/ca.pem\" does not exist"), "{}", text(&out));
    drop_db(&db).await;
}
