//! Deep verify and repair: every kind of difference seeded into the secondary is
//! reported exactly as it is, and nothing else; a run that closes during the verify is
//! not reported (the re-check sees the dual write land); --repair fixes what the version
//! guard allows (and a copy corrupted at the same version) and says why it leaves the rest.

mod common;

use std::time::Duration;

use common::*;
use vismig::record::{ExecutionStatus, VisibilityRecord};

struct Seeded {
    missing: VisibilityRecord,
    extra: VisibilityRecord,
    tampered: VisibilityRecord,
    stale: VisibilityRecord,
    newer: VisibilityRecord,
    closing: VisibilityRecord,
}

/// Backfills, then makes the secondary differ in each way, through the library.
async fn seed_differences(work: &Work) -> Seeded {
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    let primary = all_records(source_of(work, true).await).await;
    let config = vismig::config::Config::load(&work.config()).unwrap();
    let sink = sink_of(work, false).await;
    let psink = sink_of(work, true).await;
    let pick = |i: usize| primary.iter().filter(|r| r.status == ExecutionStatus::Running).nth(i).unwrap().clone();

    // In the primary only: a run the backfill did not see (not a delete from the
    // secondary, which Elasticsearch would keep as a tombstone at a higher version).
    let missing = vismig::seed::Generator::new(98, chrono::Utc::now()).next_record();
    psink.write(std::slice::from_ref(&missing)).await.unwrap();

    let mut g = vismig::seed::Generator::new(99, chrono::Utc::now());
    let extra = g.next_record();
    sink.write(std::slice::from_ref(&extra)).await.unwrap();

    // Same version, one field changed: only a delete and re-insert could change it.
    let tampered = pick(1);
    let mut t = tampered.clone();
    t.task_queue = "tampered-queue".into();
    replace_at_same_version(&config, sink.as_ref(), t).await;

    // Older in the secondary: the primary moved on to a newer version.
    let mut stale = pick(2);
    stale.version += 1;
    stale.workflow_type_name = "Renamed".into();
    psink.write(std::slice::from_ref(&stale)).await.unwrap();

    let newer = pick(3);
    let mut n = newer.clone();
    n.version += 10;
    n.status = ExecutionStatus::Terminated;
    n.close_time = Some(n.start_time + chrono::Duration::seconds(3));
    sink.write(std::slice::from_ref(&n)).await.unwrap();

    // Closes in the primary now; its dual write reaches the secondary during the verify.
    let mut closing = pick(4);
    closing.version += 1;
    closing.status = ExecutionStatus::Completed;
    closing.close_time = Some(closing.start_time + chrono::Duration::seconds(2));
    closing.history_length = Some(12);
    psink.write(std::slice::from_ref(&closing)).await.unwrap();
    // Searchable now (Elasticsearch: a refresh; SQL: nothing to do).
    sink.flush().await.unwrap();
    psink.flush().await.unwrap();

    Seeded { missing, extra, tampered, stale, newer: n, closing }
}

/// Puts `r` in the secondary over the record of the same key and version, which the
/// version guard never does: SQL deletes and inserts; Elasticsearch (where a delete
/// leaves a tombstone at a higher version) indexes with `version_type: external_gte`.
async fn replace_at_same_version(config: &vismig::config::Config, sink: &dyn vismig::store::Sink, r: VisibilityRecord) {
    let secondary = config.secondary();
    if let Some(es) = &config.datastore(&secondary).elasticsearch {
        let url = es.url.as_ref().unwrap();
        let index = &es.indices[secondary.es_index_key.as_deref().unwrap()];
        let id = vismig::store::elasticsearch::document::doc_id(&r.workflow_id, &r.run_id);
        let doc = serde_json::Value::Object(vismig::store::elasticsearch::document::to_source(&r));
        let target =
            format!("{}://{}/{index}/_doc/{id}?version={}&version_type=external_gte", url.scheme, url.host, r.version);
        search_call(reqwest::Method::PUT, &target, Some(doc)).await;
    } else {
        sink.delete(&[r.key()]).await.unwrap();
        sink.write(&[r]).await.unwrap();
    }
}

fn differences(report: &serde_json::Value) -> Vec<(String, String, Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    for ns in report["namespaces"].as_array().unwrap() {
        for d in ns["differences"].as_array().unwrap() {
            out.push((
                d["kind"].as_str().unwrap().to_string(),
                d["runId"].as_str().unwrap().to_string(),
                d["fields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect(),
                d["repair"].as_str().map(str::to_string),
            ));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

async fn deep_verify_reports_each_difference_exactly(work: Work) {
    let seeded = seed_differences(&work).await;
    let child =
        work.vismig(&["verify", "--deep", "--output", "json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    // The dual write of the closing run lands while verify waits to re-check.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sink = sink_of(&work, false).await;
    sink.write(std::slice::from_ref(&seeded.closing)).await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result"], "different");
    assert_eq!(report["mode"], "deep");

    let mut want = vec![
        ("missing".to_string(), seeded.missing.run_id.clone(), vec![], None),
        ("extra".to_string(), seeded.extra.run_id.clone(), vec![], None),
        ("different".to_string(), seeded.tampered.run_id.clone(), vec!["task_queue".to_string()], None),
        (
            "different".to_string(),
            seeded.stale.run_id.clone(),
            vec!["workflow_type_name".to_string(), "version".to_string()],
            None,
        ),
        (
            "different".to_string(),
            seeded.newer.run_id.clone(),
            vec!["close_time".to_string(), "status".to_string(), "version".to_string()],
            None,
        ),
    ];
    want.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(differences(&report), want, "exactly the seeded differences, and not the run that closed meanwhile");

    // Repair: what the guard allows is fixed, and so is the copy that differs at the same
    // version (corruption, not a newer write); the newer version stays, saying why.
    let out = work.run(&["verify", "--repair", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let repairs: Vec<(String, Option<String>)> = differences(&report).into_iter().map(|d| (d.1, d.3)).collect();
    let repair_of = |run: &str| repairs.iter().find(|r| r.0 == run).unwrap().1.clone().unwrap();
    assert_eq!(repair_of(&seeded.missing.run_id), "recopied");
    assert_eq!(repair_of(&seeded.extra.run_id), "deleted");
    assert_eq!(repair_of(&seeded.stale.run_id), "recopied");
    assert_eq!(repair_of(&seeded.tampered.run_id), "recopied");
    assert!(repair_of(&seeded.newer.run_id).contains("newer version"));
    let repaired = source_of(&work, false).await.read(&[seeded.tampered.key()]).await.unwrap();
    assert_eq!(repaired.len(), 1);
    assert_eq!(repaired[0].task_queue, seeded.tampered.task_queue, "the primary's value is back");
    assert_eq!(repaired[0].version, seeded.tampered.version, "at the same version");

    // Verify again: only the newer version, which the guard must keep, is left.
    let out = work.run(&["verify", "--deep", "--output", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let left: Vec<String> = differences(&report).into_iter().map(|d| d.1).collect();
    assert_eq!(left, vec![seeded.newer.run_id.clone()]);
    let status = text(&work.run(&["status"]));
    assert!(status.contains("last verify: different (deep)"), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_deep_verify_and_repair() {
    let work = Work::seeded(2_000, "  verify: { cutoff: 5m, recheckAfter: 3s }\n").await;
    deep_verify_reports_each_difference_exactly(work).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_deep_verify_and_repair() {
    if !service_up("postgres") {
        return;
    }
    let (a, b) = (db_name("deep_a"), db_name("deep_b"));
    reset_db("postgres", &a, "advanced");
    reset_db("postgres", &b, "advanced");
    let work = Work::with_stores(
        Some(pg_store(&a, "postgres12")),
        Some(pg_store(&b, "postgres12")),
        "  verify: { cutoff: 5m, recheckAfter: 3s }\n",
    )
    .await;
    let out = work.run(&["seed", "--records", "2000"]);
    assert!(out.status.success(), "{}", text(&out));
    deep_verify_reports_each_difference_exactly(work).await;
}

/// MySQL keeps copies of the search attributes in its side tables: a repair at the same
/// version rewrites them with the row.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_deep_verify_and_repair() {
    if !service_up("mariadb") {
        return;
    }
    let (a, b) = (db_name("deep_ma"), db_name("deep_mb"));
    reset_db("mariadb", &a, "advanced");
    reset_db("mariadb", &b, "advanced");
    let work = Work::with_stores(
        Some(mysql_store(&a, "mysql8")),
        Some(mysql_store(&b, "mysql8")),
        "  verify: { cutoff: 5m, recheckAfter: 3s }\n",
    )
    .await;
    let out = work.run(&["seed", "--records", "2000"]);
    assert!(out.status.success(), "{}", text(&out));
    let primary = sink_of(&work, true).await;
    let secondary = sink_of(&work, false).await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));

    // One record's search attributes corrupted at the same version, in the row and in
    // the side table alike (as a partial restore would leave them).
    let record = all_records(source_of(&work, true).await).await.into_iter().find(|r| r.has_version()).unwrap();
    let mut corrupt = record.clone();
    let mut sa = corrupt.search_attributes.clone().unwrap_or_default();
    sa.0.insert("Keyword01".into(), vismig::record::SearchAttributeValue::String("corrupt".into()));
    corrupt.search_attributes = Some(sa);
    secondary.delete(&[corrupt.key()]).await.unwrap();
    secondary.write(std::slice::from_ref(&corrupt)).await.unwrap();
    let side = || async {
        let url = format!(
            "mysql://{}:{}@{}:{}/{b}",
            std::env::var("VISMIG_TEST_MYSQL_USER").unwrap_or("temporal".into()),
            std::env::var("VISMIG_TEST_MYSQL_PASSWORD").unwrap_or("temporal".into()),
            std::env::var("VISMIG_TEST_MYSQL_HOST").unwrap_or("127.0.0.1".into()),
            std::env::var("VISMIG_TEST_MYSQL_PORT").unwrap_or("3306".into()),
        );
        let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
        let row: (String, i64) = sqlx::query_as(
            "SELECT CAST(search_attributes AS CHAR), _version FROM custom_search_attributes WHERE namespace_id = ? AND run_id = ?",
        )
        .bind(&record.namespace_id)
        .bind(&record.run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        row
    };
    assert!(side().await.0.contains("corrupt"));
    drop(primary);

    let out = work.run(&["verify", "--deep", "--repair", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = differences(&report);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].2, vec!["search_attributes".to_string()]);
    assert_eq!(found[0].3.as_deref(), Some("recopied"));
    let (json, version) = side().await;
    assert!(!json.contains("corrupt"), "the side table was repaired too: {json}");
    assert_eq!(version, record.version);
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_deep_verify_and_repair() {
    if !service_up("opensearch") {
        return;
    }
    let (url, a) = search_index("opensearch", "deep_a").await;
    let (_, b) = search_index("opensearch", "deep_b").await;
    let attrs =
        vismig::seed::SEED_ALIASES.iter().map(|(_, alias, kind)| (alias.to_string(), *kind)).collect::<Vec<_>>();
    let work = Work::with_stores(
        Some(search_store(&url, &a)),
        Some(search_store(&url, &b)),
        "  verify: { cutoff: 5m, recheckAfter: 3s }\n",
    )
    .await;
    let sink = sink_of(&work, false).await;
    sink.register_search_attributes(&attrs).await.unwrap();
    let out = work.run(&["seed", "--records", "2000"]);
    assert!(out.status.success(), "{}", text(&out));
    deep_verify_reports_each_difference_exactly(work).await;
    drop_index(&url, &a).await;
    drop_index(&url, &b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_copy_verifies_equal_in_deep_mode() {
    let work = Work::seeded(2_000, "  verify: { cutoff: 5m, recheckAfter: 1s }\n").await;
    assert!(work.run(&["backfill"]).status.success());
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("verify (deep): equal"), "{}", text(&out));
}

/// Deep verify merges two SQL scans in run-id order, which needs both stores to order
/// the ids alike. MariaDB's collation is case-insensitive ("a..." before "B..."), SQLite
/// compares bytes ("B..." before "a..."): the walk notices, compares those shards by
/// lookups instead, and reports exactly the one real difference.
#[tokio::test(flavor = "multi_thread")]
async fn deep_verify_falls_back_to_lookups_when_the_stores_order_run_ids_differently() {
    if !service_up("mariadb") {
        return;
    }
    let db = db_name("deep_collation");
    reset_db("mariadb", &db, "advanced");
    let work = Work::with_stores(
        Some(mysql_store(&db, "mysql8")),
        None,
        "  concurrency: 2\n  verify: { cutoff: 0s, recheckAfter: 1s }\n",
    )
    .await;
    let primary = sink_of(&work, true).await;
    let secondary = sink_of(&work, false).await;
    let mut g = vismig::seed::Generator::new(7, chrono::Utc::now() - chrono::Duration::hours(1));
    let mut records: Vec<VisibilityRecord> = (0..400).map(|_| g.next_record()).collect();
    // Run ids that differ only in case order differently in the two stores.
    for (i, r) in records.iter_mut().enumerate().take(40) {
        let prefix = if i % 2 == 0 { "a" } else { "B" };
        r.run_id = format!("{prefix}{:07}-run", i / 2);
    }
    primary.write(&records).await.unwrap();
    secondary.write(&records).await.unwrap();

    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("different orders"), "the fallback was not taken: {}", text(&out));

    let mut tampered = records[7].clone();
    tampered.task_queue = "tampered-queue".into();
    secondary.delete(&[tampered.key()]).await.unwrap();
    secondary.write(std::slice::from_ref(&tampered)).await.unwrap();
    let out = work.run(&["verify", "--deep", "--output", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        differences(&report),
        vec![("different".to_string(), tampered.run_id.clone(), vec!["task_queue".to_string()], None)]
    );
}
