//! Every visibility schema a Temporal release from v1.21 on can have, as primary and as
//! secondary: the same version on both sides, an older primary into a newer secondary,
//! and a newer primary refused by an older secondary unless told to drop the fields.
//! Each schema is made the way an operator of that release made it (Temporal's own
//! tool and files, see tests/services/reset-db.sh), and each test copies a handful of
//! records through the real binary. The README's table of versions and stores points
//! at these tests.

mod common;

use common::*;
use vismig::record::VisibilityRecord;
use vismig::store::schema::without_fields;
use vismig::store::sql::ADDED_AFTER_1_3;

/// `n` records as a release whose schema lacks `lacking` writes them: those fields at
/// the value Temporal gives a column it adds (NULL, `''`, 0).
fn records_of_release(n: usize, lacking: &[&str]) -> Vec<VisibilityRecord> {
    let mut g = vismig::seed::Generator::new(19, chrono::Utc::now() - chrono::Duration::hours(2));
    let mut out: Vec<VisibilityRecord> = (0..n).map(|_| without_fields(&g.next_record(), lacking)).collect();
    out.sort_by(|a, b| (&a.namespace_id, &a.run_id).cmp(&(&b.namespace_id, &b.run_id)));
    out
}

/// Columns Temporal's PostgreSQL schema 1.4 (v1.23) has that 1.3 (v1.21-v1.22) lacks.
const ADDED_IN_1_4: [&str; 4] = ["execution_duration", "state_transition_count", "parent_workflow_id", "parent_run_id"];

async fn pg_column_count(db: &str, columns: &[&str]) -> i64 {
    let pool = sqlx::PgPool::connect(&pg_url(db)).await.unwrap();
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'executions_visibility' AND column_name = ANY($1)",
    )
    .bind(columns.iter().map(|c| c.to_string()).collect::<Vec<_>>())
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

/// Temporal v1.21/v1.22 (PostgreSQL schema 1.3, the first releases with Dual
/// Visibility) on both sides: preflight names the version of each, and every record
/// arrives with every field it has.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_1_3_primary_into_postgres_1_3_secondary() {
    if !service_up("postgres") {
        return;
    }
    let (p, s) = (db_name("sv_pg13_p"), db_name("sv_pg13_s"));
    reset_db("postgres", &p, "advanced@1.3");
    reset_db("postgres", &s, "advanced@1.3");
    assert_eq!(pg_column_count(&p, &ADDED_IN_1_4).await, 0, "update-schema -v 1.3 stops before 1.4");
    let work = Work::with_stores(Some(pg_store(&p, "postgres12")), Some(pg_store(&s, "postgres12")), "").await;
    let records = records_of_release(12, ADDED_AFTER_1_3);
    sink_of(&work, true).await.write(&records).await.unwrap();

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("12 inserted"), "{log}");
    assert!(log.contains("schema versions: primary schema 1.3, secondary schema 1.3"), "{log}");
    assert_eq!(all_records(source_of(&work, false).await).await, records);
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// An older primary (1.3) into the newest secondary (1.14): the columns 1.3 lacks get
/// Temporal's defaults in the secondary, as its own update-schema gives old rows.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_1_3_primary_into_the_newest_postgres_secondary() {
    if !service_up("postgres") {
        return;
    }
    let (p, s) = (db_name("sv_pg13_new_p"), db_name("sv_pg13_new_s"));
    reset_db("postgres", &p, "advanced@1.3");
    reset_db("postgres", &s, "advanced");
    let work = Work::with_stores(Some(pg_store(&p, "postgres12")), Some(pg_store(&s, "postgres12")), "").await;
    let records = records_of_release(10, ADDED_AFTER_1_3);
    sink_of(&work, true).await.write(&records).await.unwrap();

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("schema versions: primary schema 1.3, secondary schema 1.14"), "{log}");
    assert_eq!(all_records(source_of(&work, false).await).await, records);
    // Read with plain SQL: the defaults are in the table, not made up by vismig's reader.
    let pool = sqlx::PgPool::connect(&pg_url(&s)).await.unwrap();
    let (rows, defaults): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE execution_duration IS NULL AND state_transition_count IS NULL \
         AND parent_workflow_id IS NULL AND parent_run_id IS NULL AND root_workflow_id = '' AND root_run_id = '' \
         AND _version = 0) FROM executions_visibility",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!((rows, defaults), (10, 10));
}

/// A newer primary (1.14) into an older secondary (1.3): preflight refuses, naming the
/// fields, both versions and the upgrade; with `dropMissingFields` the records are
/// copied without them and the summary counts those that lost a value.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_newest_primary_into_a_1_3_secondary_is_refused_unless_told() {
    if !service_up("postgres") {
        return;
    }
    let (p, s) = (db_name("sv_pg_new13_p"), db_name("sv_pg_new13_s"));
    reset_db("postgres", &p, "advanced");
    reset_db("postgres", &s, "advanced@1.3");
    let work = Work::with_stores(Some(pg_store(&p, "postgres12")), Some(pg_store(&s, "postgres12")), "").await;
    let records = records_of_release(10, &[]);
    sink_of(&work, true).await.write(&records).await.unwrap();

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let line = log.lines().find(|l| l.contains("preflight failed")).unwrap_or_else(|| panic!("{log}"));
    for needle in [
        "schema 1.3",
        "schema 1.14",
        "execution_duration, state_transition_count, parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, _version",
        "temporal-sql-tool --plugin postgres12",
        "update-schema",
        "migration.dropMissingFields",
    ] {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
    assert_eq!(all_records(source_of(&work, false).await).await, vec![], "nothing copied");

    work.write_config("  dropMissingFields: true\n");
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let losing =
        records.iter().filter(|r| ADDED_AFTER_1_3.iter().any(|f| vismig::store::schema::has_value(r, f))).count();
    assert!(losing > 0);
    assert!(
        log.contains(&format!("{losing} records were copied without values the secondary's schema has no field for")),
        "{log}"
    );
    let expected: Vec<VisibilityRecord> = records.iter().map(|r| without_fields(r, ADDED_AFTER_1_3)).collect();
    assert_eq!(all_records(source_of(&work, false).await).await, expected);
    // The fields the operator let go are not differences; without the option they are.
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    work.write_config("");
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

/// An index left invalid in the secondary (an interrupted `CREATE INDEX CONCURRENTLY`,
/// here a unique one that met duplicates) fails preflight, named.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_secondary_with_an_invalid_index_fails_preflight() {
    if !service_up("postgres") {
        return;
    }
    let s = db_name("sv_pg_invalid");
    reset_db("postgres", &s, "advanced");
    let work = Work::with_stores(None, Some(pg_store(&s, "postgres12")), "").await;
    let records = records_of_release(4, &[]);
    write(&work.primary(), &records).await;
    sink_of(&work, false).await.write(&records[..2]).await.unwrap();
    let pool = sqlx::PgPool::connect(&pg_url(&s)).await.unwrap();
    let failed = sqlx::raw_sql("CREATE UNIQUE INDEX CONCURRENTLY vt_by_nothing ON executions_visibility ((1))")
        .execute(&pool)
        .await;
    assert!(failed.is_err(), "two rows break the unique index");
    pool.close().await;

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let line = log.lines().find(|l| l.contains("invalid indexes")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("vt_by_nothing") && line.contains("preflight failed"), "{line}");

    pg_exec(&s, "DROP INDEX vt_by_nothing").await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The versioned fields a store's schema lacks, as its own preflight reports them.
async fn lacking(store: std::sync::Arc<dyn vismig::store::Source>) -> Vec<&'static str> {
    let info = store.schema_info().await.unwrap();
    vismig::store::schema::VERSIONED_FIELDS.into_iter().filter(|f| !info.fields.contains(f)).collect()
}

/// The `sql:` block of a database on a SQL service of tests/services.
fn sql_store(service: &str, db: &str) -> String {
    match service {
        "postgres" => pg_store(db, "postgres12"),
        "mariadb" => mysql_store(db, "mysql8"),
        other => panic!("not a SQL service: {other}"),
    }
}

/// Copies a handful of records from a database at schema `primary` to one at schema
/// `secondary` (reset-db.sh flavours: `advanced@X.Y` or `advanced`), the primary's
/// records written as its release writes them; the secondary ends with exactly them
/// and deep verify agrees.
async fn copy_between_schema_versions(service: &str, primary: &str, secondary: &str, tag: &str) {
    let (p, s) = (db_name(&format!("sv_{tag}_p")), db_name(&format!("sv_{tag}_s")));
    reset_db(service, &p, primary);
    reset_db(service, &s, secondary);
    let work = Work::with_stores(Some(sql_store(service, &p)), Some(sql_store(service, &s)), "").await;
    let records = records_of_release(6, &lacking(source_of(&work, true).await).await);
    sink_of(&work, true).await.write(&records).await.unwrap();

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{service} {primary} -> {secondary}: {log}");
    let version = |flavour: &str| flavour.strip_prefix("advanced@").unwrap_or("1.14").to_string();
    let named =
        format!("schema versions: primary schema {}, secondary schema {}", version(primary), version(secondary));
    assert!(log.contains(&named), "{named:?} not in: {log}");
    assert_eq!(all_records(source_of(&work, false).await).await, records, "{service} {primary} -> {secondary}");
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{service} {primary} -> {secondary}: {}", text(&out));
}

/// Schema versions where a Temporal release stops (reference §2.10): 1.3 v1.21-v1.22,
/// 1.4 v1.23, 1.5 v1.24, 1.6 v1.25-v1.26, 1.9 v1.27-v1.29, 1.13 v1.30, 1.14 v1.31+.
const SQL_RELEASE_SCHEMAS: [&str; 7] = ["1.3", "1.4", "1.5", "1.6", "1.9", "1.13", "1.14"];

#[tokio::test(flavor = "multi_thread")]
async fn postgres_every_release_schema_same_version_and_into_the_newest() {
    if !service_up("postgres") {
        return;
    }
    for v in SQL_RELEASE_SCHEMAS {
        let flavour = format!("advanced@{v}");
        let tag = v.replace('.', "");
        copy_between_schema_versions("postgres", &flavour, &flavour, &format!("pg_same{tag}")).await;
        copy_between_schema_versions("postgres", &flavour, "advanced", &format!("pg_up{tag}")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_every_release_schema_same_version_and_into_the_newest() {
    if !service_up("mariadb") {
        return;
    }
    for v in SQL_RELEASE_SCHEMAS {
        let flavour = format!("advanced@{v}");
        let tag = v.replace('.', "");
        copy_between_schema_versions("mariadb", &flavour, &flavour, &format!("my_same{tag}")).await;
        copy_between_schema_versions("mariadb", &flavour, "advanced", &format!("my_up{tag}")).await;
    }
}

/// The newest MySQL schema into a v1.21 one (1.3): refused, naming the fields, both
/// versions and temporal-sql-tool; `dropMissingFields` copies and counts.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_newest_primary_into_a_1_3_secondary_is_refused_unless_told() {
    if !service_up("mariadb") {
        return;
    }
    let (p, s) = (db_name("sv_my_new13_p"), db_name("sv_my_new13_s"));
    reset_db("mariadb", &p, "advanced");
    reset_db("mariadb", &s, "advanced@1.3");
    let work = Work::with_stores(Some(mysql_store(&p, "mysql8")), Some(mysql_store(&s, "mysql8")), "").await;
    let records = records_of_release(6, &[]);
    sink_of(&work, true).await.write(&records).await.unwrap();
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let line = log.lines().find(|l| l.contains("preflight failed")).unwrap_or_else(|| panic!("{log}"));
    for needle in ["(schema 1.3) has no execution_duration", "(schema 1.14) has", "temporal-sql-tool --plugin mysql8"] {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
    work.write_config("  dropMissingFields: true\n");
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    let expected: Vec<VisibilityRecord> = records.iter().map(|r| without_fields(r, ADDED_AFTER_1_3)).collect();
    assert_eq!(all_records(source_of(&work, false).await).await, expected);
}

/// A SQLite file made from `schema/sqlite/v3/visibility/schema.sql` of Temporal's module
/// at `release`, as that release's server creates it (it never upgrades a file).
async fn sqlite_of_release(path: &std::path::Path, release: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/temporal-module.sh");
    let out = std::process::Command::new("bash").args([script, release]).output().unwrap();
    assert!(out.status.success(), "temporal-module.sh {release}: {}", text(&out));
    let module = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let ddl = std::fs::read_to_string(format!("{module}/schema/sqlite/v3/visibility/schema.sql")).unwrap();
    use sqlx::Connection;
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// Releases whose SQLite schema differs (v1.21: no duration, parent or root ids, no
/// `_version`; v1.23: parent ids; v1.24: root ids; v1.32: `_version`).
const SQLITE_RELEASES: [&str; 4] = ["v1.21.6", "v1.23.1", "v1.24.3", "v1.32.0"];

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_every_release_schema_same_version_and_into_the_newest() {
    for release in SQLITE_RELEASES {
        for newest in [false, true] {
            let work = Work { dir: tempfile::tempdir().unwrap(), stores: None };
            sqlite_of_release(&work.primary(), release).await;
            sqlite_of_release(&work.secondary(), if newest { "v1.32.0" } else { release }).await;
            work.write_config("");
            let records = records_of_release(6, &lacking(source_of(&work, true).await).await);
            sink_of(&work, true).await.write(&records).await.unwrap();
            let out = work.run(&["backfill"]);
            let log = text(&out);
            assert!(out.status.success(), "{release} (into newest: {newest}): {log}");
            assert!(
                log.contains("schema versions: primary no schema_version in SQLite; the columns of Temporal"),
                "{log}"
            );
            assert_eq!(all_records(source_of(&work, false).await).await, records, "{release} (into newest: {newest})");
            let out = work.run(&["verify", "--deep"]);
            assert_eq!(out.status.code(), Some(0), "{release}: {}", text(&out));
        }
    }
    // The newest file into a v1.21 file: refused, naming what the older file lacks.
    let work = Work { dir: tempfile::tempdir().unwrap(), stores: None };
    sqlite_of_release(&work.primary(), "v1.32.0").await;
    sqlite_of_release(&work.secondary(), "v1.21.6").await;
    work.write_config("");
    sink_of(&work, true).await.write(&records_of_release(3, &[])).await.unwrap();
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "(no schema_version in SQLite; the columns of Temporal v1.21-v1.22 (schema 1.3)) has no execution_duration"
        ),
        "{}",
        text(&out)
    );
}

/// An index made with the settings and mappings of Temporal's index template
/// `versioned/v{template}` (from the Go module tests/services uses), named outside
/// `temporal_visibility_v1*` so that the cluster's current template does not add to it.
async fn index_of_template(url: &str, index: &str, template: u32) {
    let module = std::env::var("VISMIG_TEST_TEMPORAL_MODULE").expect("source tests/services/env.sh");
    let file = format!("{module}/schema/elasticsearch/visibility/versioned/v{template}/index_template_v7.json");
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let _ = reqwest::Client::new().delete(format!("{url}/{index}")).send().await;
    let body = serde_json::json!({"settings": t["settings"], "mappings": t["mappings"]});
    search_call(reqwest::Method::PUT, &format!("{url}/{index}"), Some(body)).await;
}

/// `n` records as a release with index template `lacking` writes them to Elasticsearch:
/// always versioned (the external version is the visibility task id).
fn search_records_of_release(n: usize, lacking: &[&str]) -> Vec<VisibilityRecord> {
    records_of_release(n, lacking)
        .into_iter()
        .map(|r| VisibilityRecord { version: r.version.max(1), search_attributes: None, ..r })
        .collect()
}

/// Copies records between indices made from templates `primary` and `secondary`;
/// returns the backfill's log.
async fn copy_between_templates(service: &str, primary: u32, secondary: u32, extra: &str) -> (bool, String) {
    let url = search_url(service);
    let pid = std::process::id();
    let (p, s) = (format!("vt_tpl{primary}_{secondary}_p_{pid}"), format!("vt_tpl{primary}_{secondary}_s_{pid}"));
    index_of_template(&url, &p, primary).await;
    index_of_template(&url, &s, secondary).await;
    let work = Work::with_stores(Some(search_store(&url, &p)), Some(search_store(&url, &s)), extra).await;
    let records = search_records_of_release(6, &lacking(source_of(&work, true).await).await);
    let primary_sink = sink_of(&work, true).await;
    primary_sink.write(&records).await.unwrap();
    primary_sink.flush().await.unwrap();
    let out = work.run(&["backfill"]);
    let log = text(&out);
    if out.status.success() {
        let named = format!(
            "schema versions: primary index template v{} (read from the mapping), secondary index template v{}",
            if primary == 10 { 9 } else { primary },
            if secondary == 10 { 9 } else { secondary }
        );
        assert!(log.contains(&named), "{named:?} not in: {log}");
        sink_of(&work, false).await.flush().await.unwrap();
        assert_eq!(all_records(source_of(&work, false).await).await, records, "v{primary} -> v{secondary}");
        let out = work.run(&["verify", "--deep"]);
        assert_eq!(out.status.code(), Some(0), "v{primary} -> v{secondary}: {}", text(&out));
    }
    drop_index(&url, &p).await;
    drop_index(&url, &s).await;
    (out.status.success(), log)
}

/// Every index template from v5 (Temporal v1.21) to v14 (v1.31+), on OpenSearch: same
/// template on both sides, and into an index of the newest template.
#[tokio::test(flavor = "multi_thread")]
async fn opensearch_every_index_template_same_version_and_into_the_newest() {
    if !service_up("opensearch") {
        return;
    }
    for v in 5..=14 {
        let targets = if v == 14 { vec![14] } else { vec![v, 14] };
        for target in targets {
            let (ok, log) = copy_between_templates("opensearch", v, target, "").await;
            assert!(ok, "v{v} -> v{target}: {log}");
        }
    }
}

/// Elasticsearch 7: the oldest template (v1.21) on both sides and into the newest; the
/// newest into the oldest is refused, naming the fields, both templates and the upgrade.
#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_oldest_template_and_the_newest_into_it() {
    if !service_up("elasticsearch") {
        return;
    }
    for target in [5, 14] {
        let (ok, log) = copy_between_templates("elasticsearch", 5, target, "").await;
        assert!(ok, "v5 -> v{target}: {log}");
    }
    let (ok, log) = copy_between_templates("elasticsearch", 14, 5, "").await;
    assert!(!ok, "{log}");
    let line = log.lines().find(|l| l.contains("preflight failed")).unwrap_or_else(|| panic!("{log}"));
    for needle in [
        "(index template v5 (read from the mapping)) has no parent_workflow_id, parent_run_id, root_workflow_id, root_run_id",
        "(index template v14 (read from the mapping)) has",
        "upgrade.sh",
    ] {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
}
