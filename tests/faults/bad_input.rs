//! Bad input: rows the primary holds but cannot be copied as they are, configs with one
//! bad field, hosts that cannot be reached, wrong passwords.
//!
//! Covered elsewhere and not repeated here: broken rows of SQLite (search attributes
//! that are not a JSON object or hold a nested value, an unknown status, invalid UTF-8,
//! a timestamp that is not one) in `sqlite_backfill::broken_rows_go_to_the_dead_letter_
//! and_the_rest_is_copied`, of MariaDB in `mysql_store::broken_rows_in_mariadb_…`; a
//! memo larger than MySQL's BLOB in `mysql_store::values_mysql_cannot_hold_…`; values
//! PostgreSQL cannot hold in `postgres_store::values_postgres_cannot_hold_…`; a wrong
//! password for PostgreSQL and MariaDB in `postgres_store::preflight_names_a_missing_
//! table_and_a_wrong_password_stays_secret` and `mysql_store::preflight_names_the_store_
//! table_and_column_and_never_the_password`; an unreachable Cassandra in
//! `cassandra_store`; each config field's message in the unit tests of `src/config`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;

fn letters(work: &Work) -> Vec<Value> {
    std::fs::read_to_string(work.dead_letter())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Rows of a PostgreSQL primary that cannot be read as records, copied to OpenSearch:
/// each goes to the dead letter with the reason, the run goes on, and every other
/// record is copied. The NOT NULL constraints are dropped first, as in a database
/// edited by hand or restored from a broken dump.
#[tokio::test(flavor = "multi_thread")]
async fn bad_postgres_rows_go_to_the_dead_letter_and_the_run_goes_on() {
    if !service_up("postgres") || !service_up("opensearch") {
        return;
    }
    let db = db_name("bad_rows_pg");
    reset_db("postgres", &db, "advanced");
    let (url, index) = search_index("opensearch", "bad_rows_pg").await;
    register_seed_attributes(&url, &index).await;
    let work =
        Work::with_stores(Some(pg_store(&db, "postgres12")), Some(search_store(&url, &index)), &aliases_yaml(7)).await;
    let out = work.run(&["seed", "--records", "300", "--seed", "7"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = "'2024-01-01 00:00:00'";
    // (run id, values, the dead letter's reason; empty for a good row)
    let rows: [(&str, String, &str); 15] = [
        (
            "run-sa-array",
            format!("'T', 'wf', {t}, {t}, 2, 'Proto3', '[1, 2]', {t}"),
            "search_attributes is not a JSON object: [1,2]",
        ),
        (
            "run-sa-nested",
            format!("'T', 'wf', {t}, {t}, 2, 'Proto3', '{{\"Keyword01\": {{\"nested\": 1}}}}', {t}"),
            "search attribute Keyword01: value is a JSON object",
        ),
        ("run-status-42", format!("'T', 'wf', {t}, {t}, 42, 'Proto3', NULL, {t}"), "unknown status 42"),
        ("run-null-status", format!("'T', 'wf', {t}, {t}, NULL, 'Proto3', NULL, {t}"), "status is NULL"),
        ("run-null-workflow-id", format!("'T', NULL, {t}, {t}, 2, 'Proto3', NULL, {t}"), "workflow_id is NULL"),
        ("run-null-type", format!("NULL, 'wf', {t}, {t}, 2, 'Proto3', NULL, {t}"), "workflow_type_name is NULL"),
        ("run-null-start", format!("'T', 'wf', NULL, {t}, 2, 'Proto3', NULL, {t}"), "start_time is NULL"),
        ("run-null-encoding", format!("'T', 'wf', {t}, {t}, 2, NULL, NULL, {t}"), "encoding is NULL"),
        (
            "run-infinite-start",
            format!("'T', 'wf', 'infinity', {t}, 2, 'Proto3', NULL, {t}"),
            "start_time: infinity (PostgreSQL's infinite timestamp)",
        ),
        (
            "run-minus-infinite-close",
            format!("'T', 'wf', {t}, {t}, 2, 'Proto3', NULL, '-infinity'"),
            "close_time: -infinity (PostgreSQL's infinite timestamp)",
        ),
        (
            "run-year-294276",
            format!("'T', 'wf', {t}, '294276-12-31 23:59:59', 2, 'Proto3', NULL, {t}"),
            "execution_time: timestamp out of range",
        ),
        // Valid for PostgreSQL, out of range for OpenSearch's date_nanos (1970 to 2262):
        // refused by the secondary, record by record.
        (
            "run-year-2300",
            format!("'T', 'wf', {t}, {t}, 2, 'Proto3', NULL, '2300-01-01 00:00:00'"),
            "HTTP 400: mapper_parsing_exception: failed to parse field [CloseTime] of type [date_nanos]",
        ),
        (
            "run-year-1960",
            format!("'T', 'wf', '1960-01-01 00:00:00', {t}, 2, 'Proto3', NULL, {t}"),
            "HTTP 400: mapper_parsing_exception: failed to parse field [StartTime] of type [date_nanos]",
        ),
        ("run-good-1", format!("'T', 'wf', {t}, {t}, 2, 'Proto3', NULL, {t}"), ""),
        ("run-good-2", format!("'T', 'wf', {t}, {t}, 1, 'Proto3', NULL, NULL"), ""),
    ];
    let mut sql = String::from(
        "ALTER TABLE executions_visibility ALTER COLUMN workflow_id DROP NOT NULL, ALTER COLUMN workflow_type_name DROP NOT NULL, \
         ALTER COLUMN start_time DROP NOT NULL, ALTER COLUMN status DROP NOT NULL, ALTER COLUMN encoding DROP NOT NULL;\n",
    );
    for (run, values, _) in &rows {
        sql.push_str(&format!(
            "INSERT INTO executions_visibility (namespace_id, run_id, workflow_type_name, workflow_id, start_time, execution_time, status, encoding, search_attributes, close_time) VALUES ('ns-broken', '{run}', {values});\n"
        ));
    }
    pg_exec(&db, &sql).await;

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "bad rows never stop the run: {log}");
    let bad = rows.iter().filter(|r| !r.2.is_empty()).count();
    assert!(
        log.contains(&format!(
            "302 inserted, 0 updated, 0 skipped (newer in secondary), 0 skipped (already present), {bad} dead-lettered"
        )),
        "{log}"
    );
    let letters = letters(&work);
    assert_eq!(letters.len(), bad);
    let by_run: BTreeMap<&str, &Value> = letters.iter().map(|l| (l["runId"].as_str().unwrap(), l)).collect();
    for (run, _, reason) in rows.iter().filter(|r| !r.2.is_empty()) {
        let letter = by_run.get(run).unwrap_or_else(|| panic!("{run} is not in the dead letter: {letters:?}"));
        let got = letter["reason"].as_str().unwrap();
        assert!(got.starts_with(reason), "{run}: {got:?} does not start with {reason:?}");
        let stage = if run.starts_with("run-year-") && !run.ends_with("294276") { "write" } else { "scan" };
        assert_eq!(letter["stage"], stage, "{run}");
        assert_eq!(letter["namespaceId"], "ns-broken");
        assert!(letter["record"].is_object(), "{run}: the raw row is kept: {letter}");
    }
    let count = search_call(reqwest::Method::GET, &format!("{url}/{index}/_count"), None).await;
    assert_eq!(count["count"].as_u64(), Some(302));
    println!(
        "bad PostgreSQL rows -> OpenSearch: {bad} bad rows dead-lettered with their reason ({}), 302 good records copied, exit 0",
        rows.iter().filter(|r| !r.2.is_empty()).map(|r| r.2).collect::<Vec<_>>().join("; ")
    );
    drop_index(&url, &index).await;
}

/// A config with one bad field, through the real binary: exit 2, nothing on stdout,
/// and exactly one line on stderr that names the field.
#[test]
fn each_bad_config_field_exits_2_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        r#"persistence:
  visibilityStore: primary
  secondaryVisibilityStore: secondary
  datastores:
    primary:
      sql: {{ pluginName: sqlite, databaseName: "{dir}/p.db", connectAddr: localhost }}
    secondary:
      sql: {{ pluginName: postgres12, databaseName: temporal_visibility, connectAddr: "127.0.0.1:5432", user: temporal, password: "${{VISMIG_TEST_SECRET:-pw}}", maxConns: 4 }}
    cass:
      cassandra: {{ hosts: "127.0.0.1", keyspace: temporal_visibility, connectTimeout: 10s }}
    search:
      elasticsearch: {{ version: v7, url: {{ scheme: http, host: "127.0.0.1:9200" }}, indices: {{ visibility: temporal_visibility_v1 }} }}
migration:
  batchSize: 500
  concurrency: 4
  rate: {{ recordsPerSecond: 5000 }}
  checkpoint: {{ type: file, path: "{dir}/checkpoint.json" }}
  deadLetter: {{ path: "{dir}/dead-letter.jsonl" }}
  metrics: {{ listen: "" }}
  verify: {{ cutoff: 5m, recheckAfter: 30s }}
  flip: {{ mode: manual, maxVerifyAge: 1h }}
"#,
        dir = dir.path().display()
    );
    let config = dir.path().join("vismig.yaml");
    let run = |text: &str, extra: &[&str]| {
        std::fs::write(&config, text).unwrap();
        std::process::Command::new(bin())
            .arg("backfill")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .env_remove("VISMIG_TEST_SECRET")
            .output()
            .unwrap()
    };
    let checkpoint_line = format!("  checkpoint: {{ type: file, path: \"{}/checkpoint.json\" }}", dir.path().display());
    let dead_letter_line = format!("  deadLetter: {{ path: \"{}/dead-letter.jsonl\" }}", dir.path().display());
    let sql = "sql: { pluginName: postgres12, databaseName: temporal_visibility, connectAddr: \"127.0.0.1:5432\"";
    let cases: Vec<(&str, &str, String)> = vec![
        ("persistence.visibilityStore", "  visibilityStore: primary\n", String::new()),
        ("persistence.visibilityStore", "visibilityStore: primary", "visibilityStore: nope".into()),
        (
            "persistence.secondaryVisibilityStore",
            "secondaryVisibilityStore: secondary",
            "secondaryVisibilityStore: primary".into(),
        ),
        (
            "persistence.secondaryVisibilityStore",
            "secondaryVisibilityStore: secondary",
            "secondaryVisibilityStore: cass".into(),
        ),
        ("persistence.datastores.cass", "      cassandra: {", "      cassandr: {".into()),
        ("persistence.datastores.secondary.sql.pluginName", "pluginName: postgres12", "pluginName: oracle".into()),
        ("persistence.datastores.secondary.sql.databaseName", "databaseName: temporal_visibility, ", String::new()),
        (
            "persistence.datastores.secondary.sql.connectAddr",
            "connectAddr: \"127.0.0.1:5432\"",
            "connectAddr: \"\"".into(),
        ),
        ("persistence.datastores.secondary.sql.connectAddr", "127.0.0.1:5432", "db:port".into()),
        ("persistence.datastores.secondary.sql.maxConns", "maxConns: 4", "maxConns: 0".into()),
        ("persistence.datastores.secondary.sql.maxConns", "maxConns: 4", "maxConns: many".into()),
        (
            "persistence.datastores.secondary.sql.password",
            "password: \"${VISMIG_TEST_SECRET:-pw}\"",
            "password: [a, b]".into(),
        ),
        (
            "persistence.datastores.secondary.sql.connectAttributes.sslmode",
            sql,
            format!("{sql}, connectAttributes: {{ sslmode: sometimes }}"),
        ),
        ("persistence.datastores.cass.cassandra.hosts", "hosts: \"127.0.0.1\", ", String::new()),
        (
            "persistence.datastores.cass.cassandra.keyspace",
            "keyspace: temporal_visibility,",
            "keyspace: temporal-visibility,".into(),
        ),
        (
            "persistence.datastores.cass.cassandra.port",
            "hosts: \"127.0.0.1\",",
            "hosts: \"127.0.0.1\", port: ninety,".into(),
        ),
        ("persistence.datastores.cass.cassandra.connectTimeout", "connectTimeout: 10s", "connectTimeout: soon".into()),
        (
            "persistence.datastores.cass.cassandra.consistency.default.consistency",
            "connectTimeout: 10s",
            "connectTimeout: 10s, consistency: { default: { consistency: MOST } }".into(),
        ),
        ("persistence.datastores.search.elasticsearch.url.host", "host: \"127.0.0.1:9200\"", "host: \"\"".into()),
        ("persistence.datastores.search.elasticsearch.url.scheme", "scheme: http", "scheme: ftp".into()),
        (
            "persistence.datastores.search.elasticsearch.indices.visibility",
            "visibility: temporal_visibility_v1",
            "secondary_visibility: x".into(),
        ),
        ("persistence.datastores.search.elasticsearch.version", "version: v7", "version: v6".into()),
        ("migration.batchSize", "batchSize: 500", "batchSize: 0".into()),
        ("migration.batchSize", "batchSize: 500", "batchSize: lots".into()),
        ("migration.concurrency", "concurrency: 4", "concurrency: 65".into()),
        ("migration.rate.recordsPerSecond", "recordsPerSecond: 5000", "recordsPerSecond: 20000000".into()),
        ("migration.rate.burst", "recordsPerSecond: 5000", "recordsPerSecond: 5000, burst: 0".into()),
        ("migration.checkpoint.type", "type: file", "type: redis".into()),
        ("migration.checkpoint.path", &checkpoint_line, "  checkpoint: { type: file, path: \"\" }".into()),
        ("migration.deadLetter.path", &dead_letter_line, "  deadLetter: { path: \"\" }".into()),
        ("migration.metrics.listen", "listen: \"\"", "listen: \"localhost\"".into()),
        ("migration.verify.cutoff", "cutoff: 5m", "cutoff: 5 minutes".into()),
        ("migration.verify.recheckAfter", "recheckAfter: 30s", "recheckAfter: 30".into()),
        ("migration.flip.mode", "mode: manual", "mode: sometimes".into()),
        ("migration.flip.maxVerifyAge", "maxVerifyAge: 1h", "maxVerifyAge: 1d".into()),
        ("migration.namespaces[0]", "  batchSize: 500\n", "  batchSize: 500\n  namespaces: [\"\"]\n".into()),
        (
            "migration.searchAttributeAliases.orders.CustomerId",
            "  batchSize: 500\n",
            "  batchSize: 500\n  searchAttributeAliases: { orders: { CustomerId: Keyword01 } }\n".into(),
        ),
        (
            "migration.bulkLoad.deferRefresh",
            "  batchSize: 500\n",
            "  batchSize: 500\n  bulkLoad: { deferRefresh: true }\n".into(),
        ),
        ("migration: unknown field `batchsize`", "batchSize: 500", "batchsize: 500".into()),
        (
            "migration.flip.target.configMap.name",
            "flip: { mode: manual, maxVerifyAge: 1h }",
            "flip: { target: { configMap: { namespace: temporal, key: dc.yaml } } }".into(),
        ),
        (
            "environment variable VISMIG_TEST_SECRET is not set",
            "${VISMIG_TEST_SECRET:-pw}",
            "${VISMIG_TEST_SECRET}".into(),
        ),
    ];
    let mut checked = 0;
    for (field, from, to) in &cases {
        assert!(base.contains(from), "{field}: the base config has no {from:?}");
        let out = run(&base.replacen(from, to, 1), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {stderr}");
        assert!(out.stdout.is_empty(), "{field}: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(stderr.trim_end().lines().count(), 1, "{field}: one line: {stderr}");
        assert!(stderr.starts_with("config error: ") && stderr.contains(field), "{field}: {stderr}");
        checked += 1;
    }
    // Command-line overrides are checked the same way; a bad --shard is a usage error.
    let out = run(&base, &["--concurrency", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "config error: migration.concurrency: 0 is out of range (1 to 64)"
    );
    let out = run(&base, &["--shard", "3/2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard 3/2: need 0 <= I < N"));
    println!("bad configs: {} fields, each exit 2 with one line naming the field", checked + 2);
}

/// A port nobody listens on (connections refused), and one that accepts connections and
/// never answers (a host behind a black-holing firewall looks the same to a client,
/// without the test depending on the network).
fn refused_and_silent() -> (String, String, std::net::TcpListener) {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = free.local_addr().unwrap().to_string();
    drop(free);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (refused, silent.local_addr().unwrap().to_string(), silent)
}

/// Each kind of server, refused and silent: the backfill fails with exit 1 within the
/// 10 s connect timeout (plus start-up), with a line naming the store and what is wrong,
/// and never the password.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_host_fails_clearly_within_the_connect_timeout() {
    let (refused, silent, _listener) = refused_and_silent();
    let password = "Unreach4ble-Pw";
    let sql = |plugin: &str, addr: &str| {
        format!(
            "{{ pluginName: {plugin}, databaseName: visibility, connectAddr: \"{addr}\", user: temporal, password: \"{password}\" }}"
        )
    };
    let es = |addr: &str| {
        format!(
            "elasticsearch: {{ version: v7, url: {{ scheme: http, host: \"{addr}\" }}, username: u, password: \"{password}\", indices: {{ visibility: v }} }}"
        )
    };
    let cassandra = |addr: &str| {
        let (host, port) = addr.split_once(':').unwrap();
        format!(
            "cassandra: {{ hosts: \"{host}\", port: {port}, keyspace: v, user: u, password: \"{password}\", connectTimeout: 10s }}"
        )
    };
    // (what, primary?, store, expected text)
    let cases = [
        (
            "PostgreSQL refused",
            false,
            sql("postgres12", &refused),
            format!("connecting to {refused}: error communicating with database: Connection refused"),
        ),
        (
            "PostgreSQL silent",
            false,
            sql("postgres12", &silent),
            format!("connecting to {silent}: no answer within 10 s"),
        ),
        (
            "MySQL refused",
            false,
            sql("mysql8", &refused),
            format!("connecting to {refused}: error communicating with database: Connection refused"),
        ),
        ("MySQL silent", false, sql("mysql8", &silent), format!("connecting to {silent}: no answer within 10 s")),
        ("OpenSearch refused", false, es(&refused), "Connection refused".to_string()),
        ("OpenSearch silent", false, es(&silent), "no answer in time".to_string()),
        ("Cassandra refused", true, cassandra(&refused), "connecting".to_string()),
        ("Cassandra silent", true, cassandra(&silent), "connecting".to_string()),
    ];
    let mut runs = Vec::new();
    for (what, primary, store, expected) in cases {
        let work = if primary {
            Work::with_stores(Some(store), None, "").await
        } else {
            Work::with_stores(None, Some(store), "").await
        };
        runs.push(std::thread::spawn(move || {
            let started = Instant::now();
            let out = work.run(&["backfill"]);
            (what, primary, expected, started.elapsed(), out)
        }));
    }
    for run in runs {
        let (what, primary, expected, took, out) = run.join().unwrap();
        let log = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {log}");
        assert!(took < Duration::from_secs(20), "{what}: took {took:?}");
        if what.ends_with("refused") {
            assert!(took < Duration::from_secs(5), "{what}: a refused connection is not waited for ({took:?})");
        }
        let role = if primary { "primary" } else { "secondary" };
        let line = log
            .lines()
            .filter(|l| !l.starts_with('{'))
            .find(|l| l.contains(&format!("store \"{role}\"")) || l.contains(&format!("(store {role})")))
            .unwrap_or_else(|| panic!("{what}: no line names the store: {log}"));
        assert!(line.contains(&expected), "{what}: {line:?} lacks {expected:?}");
        assert!(!log.contains(password), "{what}: the password leaked: {log}");
        println!("unreachable host, {what}: exit 1 after {:.1} s: {}", took.as_secs_f64(), line.trim());
    }
}

/// A wrong password for OpenSearch (security plugin on: 401), from a fake server in the
/// test: exit 1, the store and the server's reason named, the password never shown.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_opensearch_password_is_reported_without_it() {
    use axum::http::{HeaderMap, StatusCode};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let log = log.clone();
        async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            log.lock().unwrap().push(auth);
            (
                StatusCode::UNAUTHORIZED,
                [("content-type", "application/json"), ("www-authenticate", "Basic realm=\"OpenSearch Security\"")],
                r#"{"error":{"root_cause":[{"type":"security_exception","reason":"Unauthorized"}],"type":"security_exception","reason":"Unauthorized"},"status":401}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let password = "Wr0ng-Search-Pw";
    let store = format!(
        "elasticsearch: {{ version: v7, url: {{ scheme: http, host: \"{addr}\" }}, username: vismig, password: \"{password}\", indices: {{ visibility: v }} }}"
    );
    let work = Work::with_stores(None, Some(store), "").await;
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("secondary: elasticsearch") || log.contains("store \"secondary\""), "{log}");
    assert!(log.contains("401") && log.contains("security_exception: Unauthorized"), "{log}");
    assert!(!log.contains(password), "the password leaked: {log}");
    let sent = seen.lock().unwrap().clone();
    assert!(sent.iter().all(|a| a.starts_with("Basic ")), "the credentials were sent: {sent:?}");
}
