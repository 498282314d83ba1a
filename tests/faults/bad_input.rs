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
