//! Smoke tests for the real servers that `tests/services/up.sh` starts: each connects with
//! the client crate the product uses and checks that Temporal's visibility schema is
//! there, as Temporal's own tools created it.
//!
//! Run: `tests/services/up.sh && source tests/services/env.sh && cargo test --test services_smoke`
//!
//! `VISMIG_TEST_SERVICES` (set by env.sh) lists the services that are up. Gated by
//! `common::service_up`: with no services declared up (and not under CI=true) a test prints
//! a skip line and passes; a service missing from the list, unreachable, or lacking the
//! schema fails its test.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sqlx::Connection;

// --- gating and environment ---------------------------------------------------------------

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: source tests/services/env.sh"))
}

fn env_port(name: &str) -> u16 {
    let value = env(name);
    value.parse().unwrap_or_else(|_| panic!("{name}={value} is not a port number"))
}

/// The newest `vX.Y` directory of one of Temporal's versioned schema directories, as
/// "X.Y": the version the schema tool leaves in `schema_version`.
fn latest_schema_version(versioned: &Path) -> String {
    let entries = std::fs::read_dir(versioned).unwrap_or_else(|e| panic!("cannot read {}: {e}", versioned.display()));
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let (major, minor) = name.strip_prefix('v')?.split_once('.')?;
            Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
        })
        .max()
        .map(|(major, minor)| format!("{major}.{minor}"))
        .unwrap_or_else(|| panic!("no vX.Y directories in {}", versioned.display()))
}

fn module_schema_dir(module_var: &str, rel: &str) -> PathBuf {
    Path::new(&env(module_var)).join("schema").join(rel)
}

/// The columns of Temporal's advanced `executions_visibility` that a client writes
/// (reference/temporal-visibility.md section 2.1).
const ADVANCED_BASE_COLUMNS: &[&str] = &[
    "namespace_id",
    "run_id",
    "_version",
    "start_time",
    "execution_time",
    "workflow_id",
    "workflow_type_name",
    "status",
    "close_time",
    "history_length",
    "history_size_bytes",
    "execution_duration",
    "state_transition_count",
    "memo",
    "encoding",
    "task_queue",
    "search_attributes",
    "parent_workflow_id",
    "parent_run_id",
    "root_workflow_id",
    "root_run_id",
];

/// The whole standard `executions_visibility` (section 3): no search attributes, no version.
const STANDARD_COLUMNS: &[&str] = &[
    "namespace_id",
    "run_id",
    "start_time",
    "execution_time",
    "workflow_id",
    "workflow_type_name",
    "status",
    "close_time",
    "history_length",
    "memo",
    "encoding",
    "task_queue",
];

fn assert_has_columns(what: &str, columns: &BTreeMap<String, String>, expected: &[&str]) {
    let missing: Vec<_> = expected.iter().filter(|c| !columns.contains_key(**c)).collect();
    assert!(missing.is_empty(), "{what}: missing columns {missing:?}; has {:?}", columns.keys());
}

// --- PostgreSQL -----------------------------------------------------------------------------

async fn pg_connect(database: &str) -> sqlx::PgConnection {
    let options = sqlx::postgres::PgConnectOptions::new()
        .host(&env("VISMIG_TEST_PG_HOST"))
        .port(env_port("VISMIG_TEST_PG_PORT"))
        .username(&env("VISMIG_TEST_PG_USER"))
        .password(&env("VISMIG_TEST_PG_PASSWORD"))
        .database(database);
    sqlx::PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("postgres: cannot connect to database {database}: {e}"))
}

async fn pg_columns(conn: &mut sqlx::PgConnection, table: &str) -> BTreeMap<String, String> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = $1",
    )
    .bind(table)
    .fetch_all(conn)
    .await
    .unwrap_or_else(|e| panic!("postgres: reading the columns of {table}: {e}"))
    .into_iter()
    .collect()
}

async fn pg_primary_key(conn: &mut sqlx::PgConnection, table: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = $1::regclass AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(table)
    .fetch_all(conn)
    .await
    .unwrap_or_else(|e| panic!("postgres: reading the primary key of {table}: {e}"))
}

async fn pg_schema_version(conn: &mut sqlx::PgConnection, database: &str) -> String {
    sqlx::query_scalar::<_, String>("SELECT curr_version FROM schema_version WHERE db_name = $1")
        .bind(database)
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("postgres: reading schema_version of {database}: {e}"))
}

#[tokio::test]
async fn postgres_has_temporal_visibility_schemas() {
    if !common::service_up("postgres") {
        return;
    }
    let advanced =
        latest_schema_version(&module_schema_dir("VISMIG_TEST_TEMPORAL_MODULE", "postgresql/v12/visibility/versioned"));
    for database in ["temporal_visibility", "temporal_visibility_secondary"] {
        let mut conn = pg_connect(database).await;
        let columns = pg_columns(&mut conn, "executions_visibility").await;
        let what = format!("postgres {database}.executions_visibility");
        assert_has_columns(&what, &columns, ADVANCED_BASE_COLUMNS);
        assert_eq!(columns["search_attributes"], "jsonb", "{what}.search_attributes");
        assert_eq!(columns["_version"], "bigint", "{what}._version");
        assert_eq!(columns["start_time"], "timestamp without time zone", "{what}.start_time");
        // Generated search-attribute columns live on the same table in PostgreSQL
        // (unquoted in Temporal's DDL, so folded to lower case).
        assert_has_columns(&what, &columns, &["keyword01", "temporalnamespacedivision", "temporalkeyword01"]);
        assert_eq!(
            pg_primary_key(&mut conn, "executions_visibility").await,
            ["namespace_id", "run_id"],
            "{what} primary key"
        );
        assert_eq!(pg_schema_version(&mut conn, database).await, advanced, "postgres {database} schema version");
        conn.close().await.ok();
    }

    let standard = latest_schema_version(&module_schema_dir(
        "VISMIG_TEST_TEMPORAL_MODULE_STANDARD",
        "postgresql/v96/visibility/versioned",
    ));
    let database = "temporal_visibility_standard";
    let mut conn = pg_connect(database).await;
    let columns = pg_columns(&mut conn, "executions_visibility").await;
    let what = format!("postgres {database}.executions_visibility");
    assert_has_columns(&what, &columns, STANDARD_COLUMNS);
    assert!(!columns.contains_key("_version"), "{what}: standard schema must not have _version");
    assert!(!columns.contains_key("search_attributes"), "{what}: standard schema must not have search_attributes");
    assert_eq!(
        pg_primary_key(&mut conn, "executions_visibility").await,
        ["namespace_id", "run_id"],
        "{what} primary key"
    );
    assert_eq!(pg_schema_version(&mut conn, database).await, standard, "postgres {database} schema version");
    conn.close().await.ok();
}

// --- MariaDB (standing in for MySQL 8) --------------------------------------------------------

async fn mysql_connect(database: &str) -> sqlx::MySqlConnection {
    let options = sqlx::mysql::MySqlConnectOptions::new()
        .host(&env("VISMIG_TEST_MYSQL_HOST"))
        .port(env_port("VISMIG_TEST_MYSQL_PORT"))
        .username(&env("VISMIG_TEST_MYSQL_USER"))
        .password(&env("VISMIG_TEST_MYSQL_PASSWORD"))
        .database(database);
    sqlx::MySqlConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("mariadb: cannot connect to database {database}: {e}"))
}

async fn mysql_columns(conn: &mut sqlx::MySqlConnection, database: &str, table: &str) -> BTreeMap<String, String> {
    // CAST: information_schema columns may be binary strings on MySQL 8.
    sqlx::query_as::<_, (String, String)>(
        "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR) FROM information_schema.columns \
         WHERE table_schema = ? AND table_name = ?",
    )
    .bind(database)
    .bind(table)
    .fetch_all(conn)
    .await
    .unwrap_or_else(|e| panic!("mariadb: reading the columns of {database}.{table}: {e}"))
    .into_iter()
    .collect()
}

async fn mysql_primary_key(conn: &mut sqlx::MySqlConnection, database: &str, table: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.key_column_usage \
         WHERE table_schema = ? AND table_name = ? AND constraint_name = 'PRIMARY' \
         ORDER BY ordinal_position",
    )
    .bind(database)
    .bind(table)
    .fetch_all(conn)
    .await
    .unwrap_or_else(|e| panic!("mariadb: reading the primary key of {database}.{table}: {e}"))
}

async fn mysql_schema_version(conn: &mut sqlx::MySqlConnection, database: &str) -> String {
    sqlx::query_scalar::<_, String>("SELECT CAST(curr_version AS CHAR) FROM schema_version WHERE db_name = ?")
        .bind(database)
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("mariadb: reading schema_version of {database}: {e}"))
}

#[tokio::test]
async fn mariadb_has_temporal_visibility_schemas() {
    if !common::service_up("mariadb") {
        return;
    }
    // The MariaDB variant is derived from mysql/v8 and keeps its versions.
    let advanced =
        latest_schema_version(&module_schema_dir("VISMIG_TEST_TEMPORAL_MODULE", "mysql/v8/visibility/versioned"));
    for database in ["temporal_visibility", "temporal_visibility_secondary"] {
        let mut conn = mysql_connect(database).await;
        let columns = mysql_columns(&mut conn, database, "executions_visibility").await;
        let what = format!("mariadb {database}.executions_visibility");
        assert_has_columns(&what, &columns, ADVANCED_BASE_COLUMNS);
        assert_eq!(columns["start_time"], "datetime", "{what}.start_time");
        // MariaDB's JSON is LONGTEXT with a JSON_VALID check; MySQL 8 reports "json".
        assert!(
            ["json", "longtext"].contains(&columns["search_attributes"].as_str()),
            "{what}.search_attributes is {}",
            columns["search_attributes"]
        );
        assert_eq!(
            mysql_primary_key(&mut conn, database, "executions_visibility").await,
            ["namespace_id", "run_id"],
            "{what} primary key"
        );
        // MySQL keeps the custom and CHASM search attributes in side tables, written in
        // the same transaction with the same JSON and version.
        for table in ["custom_search_attributes", "chasm_search_attributes"] {
            let columns = mysql_columns(&mut conn, database, table).await;
            let what = format!("mariadb {database}.{table}");
            assert_has_columns(&what, &columns, &["namespace_id", "run_id", "_version", "search_attributes"]);
            assert_eq!(columns["_version"], "bigint", "{what}._version");
            assert_eq!(
                mysql_primary_key(&mut conn, database, table).await,
                ["namespace_id", "run_id"],
                "{what} primary key"
            );
        }
        assert_eq!(mysql_schema_version(&mut conn, database).await, advanced, "mariadb {database} schema version");
        conn.close().await.ok();
    }

    let standard = latest_schema_version(&module_schema_dir(
        "VISMIG_TEST_TEMPORAL_MODULE_STANDARD",
        "mysql/v57/visibility/versioned",
    ));
    let database = "temporal_visibility_standard";
    let mut conn = mysql_connect(database).await;
    let columns = mysql_columns(&mut conn, database, "executions_visibility").await;
    let what = format!("mariadb {database}.executions_visibility");
    assert_has_columns(&what, &columns, STANDARD_COLUMNS);
    assert!(!columns.contains_key("_version"), "{what}: standard schema must not have _version");
    assert_eq!(mysql_schema_version(&mut conn, database).await, standard, "mariadb {database} schema version");
    conn.close().await.ok();
}

// --- Cassandra --------------------------------------------------------------------------------

#[tokio::test]
async fn cassandra_has_temporal_standard_visibility() {
    if !common::service_up("cassandra") {
        return;
    }
    let port = env_port("VISMIG_TEST_CASSANDRA_PORT");
    let mut builder = scylla::client::session_builder::SessionBuilder::new();
    for host in env("VISMIG_TEST_CASSANDRA_HOSTS").split(',').map(str::trim).filter(|h| !h.is_empty()) {
        builder = builder.known_node(format!("{host}:{port}"));
    }
    let session = builder.build().await.unwrap_or_else(|e| panic!("cassandra: cannot connect: {e}"));
    let keyspace = "temporal_visibility";

    // (column name) -> (kind, type, clustering order)
    type Columns = BTreeMap<String, (String, String, String)>;
    async fn columns(session: &scylla::client::session::Session, keyspace: &str, table: &str) -> Columns {
        let result = session
            .query_unpaged(
                "SELECT column_name, kind, type, clustering_order FROM system_schema.columns \
                 WHERE keyspace_name = ? AND table_name = ?",
                (keyspace, table),
            )
            .await
            .unwrap_or_else(|e| panic!("cassandra: reading the columns of {keyspace}.{table}: {e}"))
            .into_rows_result()
            .unwrap_or_else(|e| panic!("cassandra: columns of {keyspace}.{table}: {e}"));
        result
            .rows::<(String, String, String, String)>()
            .unwrap_or_else(|e| panic!("cassandra: columns of {keyspace}.{table}: {e}"))
            .map(|row| {
                let (name, kind, ty, order) =
                    row.unwrap_or_else(|e| panic!("cassandra: columns of {keyspace}.{table}: {e}"));
                (name, (kind, ty, order))
            })
            .collect()
    }

    let common = [
        ("namespace_id", "partition_key", "uuid"),
        ("namespace_partition", "partition_key", "int"),
        ("run_id", "clustering", "uuid"),
        ("workflow_id", "regular", "text"),
        ("execution_time", "regular", "timestamp"),
        ("workflow_type_name", "regular", "text"),
        ("memo", "regular", "blob"),
        ("encoding", "regular", "text"),
        ("task_queue", "regular", "text"),
    ];
    for (table, time_column, extra) in [
        ("open_executions", "start_time", &[][..]),
        (
            "closed_executions",
            "close_time",
            &[
                ("start_time", "regular", "timestamp"),
                ("status", "regular", "int"),
                ("history_length", "regular", "bigint"),
            ][..],
        ),
    ] {
        let cols = columns(&session, keyspace, table).await;
        assert!(!cols.is_empty(), "cassandra: table {keyspace}.{table} does not exist");
        for (name, kind, ty) in common.iter().chain(extra.iter()) {
            let (have_kind, have_ty, _) = cols.get(*name).unwrap_or_else(|| {
                panic!("cassandra {keyspace}.{table}: missing column {name}; has {:?}", cols.keys())
            });
            assert_eq!((have_kind.as_str(), have_ty.as_str()), (*kind, *ty), "cassandra {keyspace}.{table}.{name}");
        }
        // Rows of a namespace are ordered newest first by the time column.
        let (kind, ty, order) = &cols[time_column];
        assert_eq!(
            (kind.as_str(), ty.as_str(), order.as_str()),
            ("clustering", "timestamp", "desc"),
            "cassandra {keyspace}.{table}.{time_column}"
        );
    }

    let version = session
        .query_unpaged(
            "SELECT curr_version FROM temporal_visibility.schema_version WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .unwrap_or_else(|e| panic!("cassandra: reading schema_version: {e}"))
        .into_rows_result()
        .unwrap_or_else(|e| panic!("cassandra: schema_version: {e}"))
        .single_row::<(Option<String>,)>()
        .unwrap_or_else(|e| panic!("cassandra: schema_version of {keyspace}: {e}"))
        .0;
    let expected = latest_schema_version(&module_schema_dir(
        "VISMIG_TEST_TEMPORAL_MODULE_STANDARD",
        "cassandra/visibility/versioned",
    ));
    assert_eq!(version.as_deref(), Some(expected.as_str()), "cassandra {keyspace} schema version");
}

// --- OpenSearch and Elasticsearch -------------------------------------------------------------------------------

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body = response.text().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(status.is_success(), "GET {url}: HTTP {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

#[tokio::test]
async fn opensearch_has_temporal_visibility_indices() {
    if !common::service_up("opensearch") {
        return;
    }
    check_search_store("opensearch", &env("VISMIG_TEST_OPENSEARCH_URL"), |root| {
        root["version"]["distribution"] == "opensearch"
    })
    .await;
}

#[tokio::test]
async fn elasticsearch_has_temporal_visibility_indices() {
    if !common::service_up("elasticsearch") {
        return;
    }
    check_search_store("elasticsearch", &env("VISMIG_TEST_ELASTICSEARCH_URL"), |root| {
        root["version"].get("distribution").is_none()
            && root["version"]["number"].as_str().is_some_and(|v| v.starts_with("7.") || v.starts_with("8."))
    })
    .await;
}

/// Temporal's cluster settings, template and both indices with the template's mapping.
async fn check_search_store(service: &str, url: &str, is_expected_server: impl Fn(&Value) -> bool) {
    let url = url.trim_end_matches('/');
    let client = reqwest::Client::new();

    let root = get_json(&client, &format!("{url}/")).await;
    assert!(is_expected_server(&root), "{service}: GET {url}/ answered {root}");

    // Temporal's cluster settings: writes to a missing index must fail.
    let settings = get_json(&client, &format!("{url}/_cluster/settings")).await;
    assert_eq!(
        settings["persistent"]["action"]["auto_create_index"], "false",
        "{service}: cluster settings {settings}"
    );
    let template = get_json(&client, &format!("{url}/_template/temporal_visibility_v1_template")).await;
    assert!(template.get("temporal_visibility_v1_template").is_some(), "{service}: template missing: {template}");

    let expected = [
        ("NamespaceId", "keyword"),
        ("WorkflowId", "keyword"),
        ("RunId", "keyword"),
        ("WorkflowType", "keyword"),
        ("ExecutionStatus", "keyword"),
        ("TaskQueue", "keyword"),
        ("TemporalNamespaceDivision", "keyword"),
        ("BuildIds", "keyword"),
        ("ParentWorkflowId", "keyword"),
        ("RootRunId", "keyword"),
        ("StartTime", "date_nanos"),
        ("ExecutionTime", "date_nanos"),
        ("CloseTime", "date_nanos"),
        ("ExecutionDuration", "long"),
        ("HistoryLength", "long"),
        ("HistorySizeBytes", "long"),
        ("StateTransitionCount", "long"),
        ("TemporalSchedulePaused", "boolean"),
        ("TemporalDouble01", "scaled_float"),
    ];
    for index in ["temporal_visibility_v1", "temporal_visibility_v1_new"] {
        let mapping = get_json(&client, &format!("{url}/{index}/_mapping")).await;
        let mappings = &mapping[index]["mappings"];
        assert_eq!(mappings["dynamic"], "false", "{service} {index}: mapping {mappings}");
        for (field, ty) in expected {
            assert_eq!(
                mappings["properties"][field]["type"], ty,
                "{service} {index}: field {field} in mapping {mappings}"
            );
        }
        let settings = get_json(&client, &format!("{url}/{index}/_settings")).await;
        assert_eq!(
            settings[index]["settings"]["index"]["sort"]["field"],
            serde_json::json!(["CloseTime", "StartTime", "RunId"]),
            "{service} {index}: index sort from Temporal's template"
        );
    }
}
