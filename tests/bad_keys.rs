//! Rows whose keys or values cannot be decoded never panic a command and never make a scan
//! skip rows or loop: against real SQLite files and the real MariaDB of tests/services
//! (run ids and namespace ids that are not UTF-8, where the schema lets a column hold them:
//! SQLite always, MariaDB once the key columns are VARBINARY), a namespace id with
//! trailing spaces, a text status, and a secondary whose `_version` is not a number.
//! Every such row is scanned exactly once and goes to the dead letter with its key.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use sqlx::Connection;
use vismig::config::Secret;
use vismig::config::persistence::SqlStore;
use vismig::record::{RecordKey, VisibilityRecord};
use vismig::store::sql::mysql::MysqlStore;
use vismig::store::{BadRow, CountQuery, Sink, Source, Split, Store, WriteOutcome};

/// What one scan of every shard returned.
#[derive(Default)]
struct Scanned {
    records: Vec<VisibilityRecord>,
    bad: Vec<BadRow>,
}

impl Scanned {
    /// The raw run ids of the bad rows, as hex (how the dead letter keeps bytes that are
    /// not UTF-8) or as text.
    fn bad_run_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .bad
            .iter()
            .map(|b| match &b.raw["run_id"] {
                serde_json::Value::String(s) => s.trim_end().to_string(),
                other => format!("hex:{}", other["invalidUtf8Hex"].as_str().unwrap()),
            })
            .collect();
        ids.sort();
        ids
    }

    fn keys(&self) -> Vec<(String, String)> {
        let mut keys: Vec<_> = self.records.iter().map(|r| (r.namespace_id.clone(), r.run_id.clone())).collect();
        keys.sort();
        keys
    }
}

/// Scans every shard in pages of `limit`, as the backfill does; a scan that has not
/// finished after 100 pages (far more than the rows) is looping.
async fn scan_all(source: &dyn Source, limit: usize) -> Scanned {
    let split = Split { per_process: 1, process_index: 0, process_count: 1 };
    let mut out = Scanned::default();
    for shard in source.plan_shards(&[], &split).await.unwrap() {
        let mut cursor = None;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 100, "the scan of {shard:?} loops: page {pages}, cursor {cursor:?}");
            let page = tokio::time::timeout(Duration::from_secs(30), source.scan(&shard, cursor.as_ref(), limit))
                .await
                .expect("a page within 30 s")
                .unwrap();
            out.records.extend(page.records);
            out.bad.extend(page.bad_rows);
            cursor = page.cursor.or(cursor);
            if page.done {
                break;
            }
        }
    }
    out
}

const COLUMNS: &str =
    "namespace_id, run_id, workflow_type_name, workflow_id, start_time, execution_time, status, encoding, _version";

// --- SQLite ---------------------------------------------------------------------------------

/// A SQLite primary whose keys are as bad as a file edited by hand can make them. Sorted
/// by bytes, ns-a holds r1 r2 | 0x80 0xc3( | é | 0xfe1 0xfe2: with pages of two, a cursor
/// made lossy (U+FFFD = ef bf bd) jumped over é, then re-read the last page forever.
async fn sqlite_with_bad_keys() -> Work {
    let work = Work::new("").await;
    let row = |ns: &str, run: &str, status: &str| {
        format!(
            "({ns}, {run}, 'T', 'wf', '2024-01-01 00:00:00+00:00', '2024-01-01 00:00:00+00:00', {status}, 'Proto3', 1)"
        )
    };
    let rows = [
        row("'ns-a'", "'r1'", "2"),
        row("'ns-a'", "'r2'", "2"),
        row("'ns-a'", "CAST(X'80' AS TEXT)", "2"),
        row("'ns-a'", "CAST(X'C328' AS TEXT)", "2"),
        row("'ns-a'", "'é'", "2"),
        row("'ns-a'", "CAST(X'FE31' AS TEXT)", "2"),
        row("'ns-a'", "CAST(X'FE32' AS TEXT)", "2"),
        row("'ns-a'", "'r-text-status'", "'done'"),
        row("'ns-b '", "'r3'", "1"),
        row("CAST(X'FF6E73' AS TEXT)", "'r4'", "2"),
    ];
    exec(&work.primary(), &format!("INSERT INTO executions_visibility ({COLUMNS}) VALUES {}", rows.join(", "))).await;
    work
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_scans_every_row_once_whatever_its_key_bytes() {
    let work = sqlite_with_bad_keys().await;
    let source = source_of(&work, true).await;
    for limit in [1, 2, 3, 1000] {
        let scanned = scan_all(source.as_ref(), limit).await;
        let want: Vec<(String, String)> = [("ns-a", "r1"), ("ns-a", "r2"), ("ns-a", "é"), ("ns-b", "r3")]
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect();
        assert_eq!(scanned.keys(), want, "pages of {limit}: the good records, each once");
        assert_eq!(
            scanned.bad_run_ids(),
            ["hex:80", "hex:c328", "hex:fe31", "hex:fe32", "r-text-status", "r4"],
            "pages of {limit}: every bad row, once"
        );
        let r4 = scanned.bad.iter().find(|b| b.raw["run_id"] == "r4").unwrap();
        assert_eq!(r4.raw["namespace_id"]["invalidUtf8Hex"], "ff6e73");
        assert_eq!(r4.reason, "namespace_id is not valid UTF-8");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_backfill_and_verify_with_bad_keys_finish() {
    let work = sqlite_with_bad_keys().await;
    work.write_config("  batchSize: 2\n");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(bin())
            .args(["backfill", "--config"])
            .arg(work.config())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the backfill ends (no scan loops)")
    .unwrap();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("4 inserted") && log.contains("6 dead-lettered"), "{log}");
    let letters = std::fs::read_to_string(work.dead_letter()).unwrap();
    assert_eq!(letters.lines().count(), 6, "{letters}");
    assert!(letters.contains("\"invalidUtf8Hex\":\"fe32\""), "{letters}");

    // Counting the primary reads a text status and a namespace id that is not UTF-8:
    // both groups are left out with a warning naming them (verify panicked on them). The
    // four rows whose run ids are not UTF-8 count, and are missing from the secondary:
    // verify says so (exit 3) rather than calling the stores equal.
    let out = work.run(&["verify"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("rows not counted: status \\\"done\\\" is not an integer"), "{log}");
    assert!(log.contains("(not UTF-8, hex) ff6e73"), "{log}");
    let counts = source_of(&work, true)
        .await
        .count(&CountQuery { namespaces: vec![], cutoff: chrono::Utc::now() })
        .await
        .unwrap();
    let totals: BTreeMap<&str, u64> =
        counts.iter().map(|(ns, c)| (ns.as_str(), c.by_status.values().sum::<u64>() + c.recent)).collect();
    assert_eq!(totals, BTreeMap::from([("ns-a", 7), ("ns-b", 1)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_secondary_with_a_version_that_is_not_a_number_fails_that_record_only() {
    let work = Work::new("").await;
    exec(
        &work.secondary(),
        &format!(
            "INSERT INTO executions_visibility ({COLUMNS}) VALUES
             ('ns', 'r-odd', 'T', 'wf', '2024-01-01 00:00:00+00:00', '2024-01-01 00:00:00+00:00', 2, 'Proto3', 1),
             ('ns', 'r-ok', 'T', 'wf', '2024-01-01 00:00:00+00:00', '2024-01-01 00:00:00+00:00', 2, 'Proto3', 1)"
        ),
    )
    .await;
    let sink = sink_of(&work, false).await;
    let keys: Vec<RecordKey> =
        ["r-odd", "r-ok"].iter().map(|r| RecordKey { namespace_id: "ns".into(), run_id: r.to_string() }).collect();
    let mut records = sink.read(&keys).await.unwrap();
    records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    exec(&work.secondary(), "UPDATE executions_visibility SET _version = 'v?' WHERE run_id = 'r-odd'").await;
    for r in &mut records {
        r.version = 5;
        r.workflow_id = "wf-new".into();
    }
    let outcomes = sink.write(&records).await.unwrap();
    assert!(matches!(&outcomes[0], WriteOutcome::Failed(why) if why.contains("_version")), "{outcomes:?}");
    assert_eq!(outcomes[1], WriteOutcome::Updated);
    let after = open(&work.secondary()).await;
    let ok = after.read(&keys[1..]).await.unwrap();
    assert_eq!(ok[0].workflow_id, "wf-new");
    let odd = sqlx::query_scalar::<_, String>("SELECT workflow_id FROM executions_visibility WHERE run_id = 'r-odd'");
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(work.secondary());
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    assert_eq!(odd.fetch_one(&mut conn).await.unwrap(), "wf", "a row whose version is unknown is never overwritten");
}

// --- MariaDB --------------------------------------------------------------------------------

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: source tests/services/env.sh"))
}

fn mysql_config(db: &str) -> SqlStore {
    SqlStore {
        plugin_name: "mysql8".into(),
        database_name: db.into(),
        connect_addr: format!("{}:{}", env("VISMIG_TEST_MYSQL_HOST"), env("VISMIG_TEST_MYSQL_PORT")),
        user: Some(env("VISMIG_TEST_MYSQL_USER")),
        password: Some(Secret::new(env("VISMIG_TEST_MYSQL_PASSWORD"))),
        ..Default::default()
    }
}

async fn mysql_exec(db: &str, sql: &str) {
    let options = sqlx::mysql::MySqlConnectOptions::new()
        .host(&env("VISMIG_TEST_MYSQL_HOST"))
        .port(env("VISMIG_TEST_MYSQL_PORT").parse().unwrap())
        .username(&env("VISMIG_TEST_MYSQL_USER"))
        .password(&env("VISMIG_TEST_MYSQL_PASSWORD"))
        .database(db);
    let mut conn = sqlx::MySqlConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut conn).await.unwrap();
    conn.close().await.ok();
}

/// Temporal's MariaDB schema with both key columns made VARBINARY: the only way such a
/// server can hold key bytes that are not UTF-8 (a utf8mb4 column refuses them).
async fn mariadb_with_binary_keys(test: &str) -> String {
    let db = db_name(test);
    reset_db("mariadb", &db, "advanced");
    mysql_exec(
        &db,
        "ALTER TABLE executions_visibility MODIFY namespace_id VARBINARY(64) NOT NULL, MODIFY run_id VARBINARY(64) NOT NULL",
    )
    .await;
    let row = |ns: &str, run: &str| {
        format!("({ns}, {run}, 'T', 'wf', '2024-01-01 00:00:00', '2024-01-01 00:00:00', 2, 'Proto3', 1)")
    };
    let rows = [
        row("'ns-a'", "'r1'"),
        row("'ns-a'", "'r2'"),
        row("'ns-a'", "X'80'"),
        row("'ns-a'", "X'C328'"),
        row("'ns-a'", "X'C3A9'"),
        row("'ns-a'", "X'FE31'"),
        row("'ns-a'", "X'FE32'"),
        row("X'FF6E73'", "'r4'"),
    ];
    mysql_exec(&db, &format!("INSERT INTO executions_visibility ({COLUMNS}) VALUES {}", rows.join(", "))).await;
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_scans_every_row_once_whatever_its_key_bytes() {
    if !service_up("mariadb") {
        return;
    }
    let db = mariadb_with_binary_keys("bad_keys_scan").await;
    let store = MysqlStore::open("test", &mysql_config(&db)).await.unwrap();
    for limit in [1, 2, 3, 1000] {
        let scanned = scan_all(&store, limit).await;
        let want: Vec<(String, String)> = [("ns-a", "r1"), ("ns-a", "r2"), ("ns-a", "é")]
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect();
        assert_eq!(scanned.keys(), want, "pages of {limit}: the good records, each once");
        assert_eq!(
            scanned.bad_run_ids(),
            ["hex:80", "hex:c328", "hex:fe31", "hex:fe32", "r4"],
            "pages of {limit}: every bad row, once"
        );
    }
    // Counting reads the namespace id that is not UTF-8 without failing; it is left out.
    let counts = store.count(&CountQuery { namespaces: vec![], cutoff: chrono::Utc::now() }).await.unwrap();
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["ns-a"]);
    mysql_exec(&db, &format!("DROP DATABASE {db}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_secondary_with_a_null_version_fails_that_record_only() {
    if !service_up("mariadb") {
        return;
    }
    let db = db_name("bad_keys_version");
    reset_db("mariadb", &db, "advanced");
    mysql_exec(
        &db,
        &format!(
            "INSERT INTO executions_visibility ({COLUMNS}) VALUES
             ('ns', 'r-odd', 'T', 'wf', '2024-01-01 00:00:00', '2024-01-01 00:00:00', 2, 'Proto3', 1),
             ('ns', 'r-ok', 'T', 'wf', '2024-01-01 00:00:00', '2024-01-01 00:00:00', 2, 'Proto3', 1)"
        ),
    )
    .await;
    let store = MysqlStore::open("test", &mysql_config(&db)).await.unwrap();
    let keys: Vec<RecordKey> =
        ["r-odd", "r-ok"].iter().map(|r| RecordKey { namespace_id: "ns".into(), run_id: r.to_string() }).collect();
    let mut records = store.read(&keys).await.unwrap();
    records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    mysql_exec(
        &db,
        "ALTER TABLE executions_visibility MODIFY _version BIGINT NULL; UPDATE executions_visibility SET _version = NULL WHERE run_id = 'r-odd'",
    )
    .await;
    for r in &mut records {
        r.version = 5;
        r.workflow_id = "wf-new".into();
    }
    let outcomes = store.write(&records).await.unwrap();
    assert!(matches!(&outcomes[0], WriteOutcome::Failed(why) if why.contains("_version")), "{outcomes:?}");
    assert_eq!(outcomes[1], WriteOutcome::Updated);
    let mut after = store.read(&keys[1..]).await.unwrap();
    assert_eq!(after.remove(0).workflow_id, "wf-new");
    mysql_exec(&db, &format!("DROP DATABASE {db}")).await;
}

// --- PostgreSQL -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn postgres_null_status_and_null_version_never_panic() {
    if !service_up("postgres") {
        return;
    }
    let (a, b) = (db_name("bad_keys_pg_a"), db_name("bad_keys_pg_b"));
    reset_db("postgres", &a, "advanced");
    reset_db("postgres", &b, "advanced");
    let insert = format!(
        "INSERT INTO executions_visibility ({COLUMNS}) VALUES
         ('ns', 'r-odd', 'T', 'wf', '2024-01-01 00:00:00', '2024-01-01 00:00:00', 2, 'Proto3', 1),
         ('ns', 'r-ok', 'T', 'wf', '2024-01-01 00:00:00', '2024-01-01 00:00:00', 2, 'Proto3', 1)"
    );
    pg_exec(&a, &insert).await;
    pg_exec(&b, &insert).await;
    let work = Work::with_stores(Some(pg_store(&a, "postgres12")), Some(pg_store(&b, "postgres12")), "").await;

    // The primary: a NULL status (NOT NULL dropped by hand) is left out of the count.
    pg_exec(
        &a,
        "ALTER TABLE executions_visibility ALTER COLUMN status DROP NOT NULL; UPDATE executions_visibility SET status = NULL WHERE run_id = 'r-odd'",
    )
    .await;
    let counts = source_of(&work, true)
        .await
        .count(&CountQuery { namespaces: vec![], cutoff: chrono::Utc::now() })
        .await
        .unwrap();
    assert_eq!(counts["ns"].by_status.values().sum::<u64>(), 1, "{counts:?}");

    // The secondary: a NULL `_version` fails that record, and the row stays as it was.
    let sink = sink_of(&work, false).await;
    let keys: Vec<RecordKey> =
        ["r-odd", "r-ok"].iter().map(|r| RecordKey { namespace_id: "ns".into(), run_id: r.to_string() }).collect();
    let mut records = sink.read(&keys).await.unwrap();
    records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    pg_exec(
        &b,
        "ALTER TABLE executions_visibility ALTER COLUMN _version DROP NOT NULL; UPDATE executions_visibility SET _version = NULL WHERE run_id = 'r-odd'",
    )
    .await;
    for r in &mut records {
        r.version = 5;
        r.workflow_id = "wf-new".into();
    }
    let outcomes = sink.write(&records).await.unwrap();
    assert!(matches!(&outcomes[0], WriteOutcome::Failed(why) if why.contains("_version NULL")), "{outcomes:?}");
    assert_eq!(outcomes[1], WriteOutcome::Updated);
    let ok = sink.read(&keys[1..]).await.unwrap();
    assert_eq!(ok[0].workflow_id, "wf-new");
}

// --- Temporal's namespaces table ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_row_of_the_namespaces_table_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.db");
    vismig::store::sql::sqlite::create_database(&path).await.unwrap();
    exec(&path, "CREATE TABLE namespaces (name TEXT, id BLOB, data BLOB, data_encoding TEXT); INSERT INTO namespaces VALUES ('ok', randomblob(16), X'', 'Proto3'), (CAST(X'FF' AS TEXT), randomblob(16), X'', 'Proto3')").await;
    let err = vismig::store::sql::namespace_rows("default", &sqlite_config(&path)).await.unwrap_err().to_string();
    assert!(err.contains("store \"default\": a row of the namespaces table cannot be read"), "{err}");
}
