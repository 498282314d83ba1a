//! The PostgreSQL store against the real server of tests/services, with Temporal's
//! schemas applied by temporal-sql-tool: every field of every record compared after
//! SQLite->PG, PG->SQLite, PG->PG (with kill -9 and resume), standard (v96) -> advanced,
//! plus the version guard and the column limits.

mod common;

use common::*;
use vismig::record::{ExecutionStatus, VisibilityRecord};
use vismig::store::Sink;

async fn pg_sink(work: &Work) -> std::sync::Arc<dyn Sink> {
    let config = vismig::config::Config::load(&work.config()).unwrap();
    vismig::store::open_sink(&config, &config.secondary()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_postgres_copies_every_field() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("sqlite_to_pg");
    reset_db("postgres", &db, "advanced");
    let seeded = Work::seeded(3_000, "").await;
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), "  batchSize: 700\n").await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();

    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3000 inserted"), "{}", text(&out));
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len(), 3_000);
    assert_eq!(p, s, "every field of every record survives SQLite -> PostgreSQL");
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_sqlite_copies_every_field() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("pg_to_sqlite");
    reset_db("postgres", &db, "advanced");
    let work = Work::with_stores(Some(pg_store(&db, "postgres12_pgx")), None, "").await;
    let out = work.run(&["seed", "--records", "2000", "--seed", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len(), 2_000);
    assert_eq!(p, s);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_postgres_resumes_after_kill_9() {
    if !service_up("postgres") {
        return;
    }
    let (a, b) = (db_name("pg_kill_a"), db_name("pg_kill_b"));
    reset_db("postgres", &a, "advanced");
    reset_db("postgres", &b, "advanced");
    let work = Work::with_stores(
        Some(pg_store(&a, "postgres12")),
        Some(pg_store(&b, "postgres12")),
        "  batchSize: 200\n  concurrency: 3\n  rate: { recordsPerSecond: 1500 }\n",
    )
    .await;
    let out = work.run(&["seed", "--records", "5000", "--seed", "9"]);
    assert!(out.status.success(), "{}", text(&out));

    kill_9_after(&work, 1_000).await;
    assert!(settled(&work) < 5_000);

    let out = work.run(&["backfill", "--rate", "0"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("resuming shard after cursor"), "{log}");
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len(), 5_000);
    assert_eq!(p, s);
    let out = work.run(&["verify", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_version_guard_holds_on_postgres() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("pg_guard");
    reset_db("postgres", &db, "advanced");
    let seeded = Work::seeded(1_000, "").await;
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), "").await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let primary = records(&work.primary()).await;

    let mut newer = primary[0].clone();
    newer.version += 100;
    newer.status = ExecutionStatus::Terminated;
    newer.close_time = Some(newer.start_time + chrono::Duration::seconds(5));
    newer.workflow_type_name = "ChangedByLiveWrite".into();
    let mut older = primary[1].clone();
    older.version -= 1;
    older.workflow_type_name = "Stale".into();
    let sink = pg_sink(&work).await;
    let outcomes = sink.write(&[newer.clone(), older]).await.unwrap();
    assert_eq!(outcomes.iter().map(|o| o.label()).collect::<Vec<_>>(), ["inserted", "inserted"]);

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("998 inserted, 1 updated, 1 skipped (newer in secondary), 0 skipped (already present)"),
        "{log}"
    );
    let s = all_records(source_of(&work, false).await).await;
    assert_eq!(s.iter().find(|r| r.run_id == newer.run_id).unwrap(), &newer);
    assert_eq!(s.iter().find(|r| r.run_id == primary[1].run_id).unwrap(), &primary[1]);

    // Writing the same batch again changes nothing.
    let again = sink.write(&primary[2..10]).await.unwrap();
    assert!(again.iter().all(|o| o.label() == "skipped_present"), "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn values_postgres_cannot_hold_go_to_the_dead_letter() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("pg_limits");
    reset_db("postgres", &db, "advanced");
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), "").await;
    let mut g = vismig::seed::Generator::new(3, chrono::Utc::now());
    let mut batch: Vec<VisibilityRecord> = (0..20).map(|_| g.next_record()).collect();
    batch[4].workflow_id = "w".repeat(256);
    batch[9].task_queue = "nul\0byte".into();
    batch[12]
        .search_attributes
        .get_or_insert_with(Default::default)
        .0
        .insert("Keyword02".into(), vismig::record::SearchAttributeValue::String("k".repeat(300)));
    // Temporal's PG schema casts Text to tsvector: a colon that is not a weight label cannot be held.
    batch[15]
        .search_attributes
        .get_or_insert_with(Default::default)
        .0
        .insert("Text01".into(), vismig::record::SearchAttributeValue::String("note: retry".into()));
    write(&work.primary(), &batch).await;

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("16 inserted"), "{log}");
    assert!(log.contains("4 dead-lettered"), "{log}");
    let letters = std::fs::read_to_string(work.dead_letter()).unwrap();
    assert!(letters.contains("workflow_id has 256 characters; the column holds at most 255"), "{letters}");
    assert!(letters.contains("task_queue contains a NUL character"), "{letters}");
    assert!(letters.contains("search attribute Keyword02 (Keyword) has 300 characters"), "{letters}");
    assert!(letters.contains("syntax error in tsvector"), "{letters}");
    assert_eq!(all_records(source_of(&work, false).await).await.len(), 16);
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_postgres_rows_are_inserted_only_where_absent() {
    if !service_up("postgres") {
        return;
    }
    let (std_db, adv_db) = (db_name("pg_std"), db_name("pg_std_adv"));
    reset_db("postgres", &std_db, "standard");
    reset_db("postgres", &adv_db, "advanced");
    let work = Work::with_stores(Some(pg_store(&std_db, "postgres")), Some(pg_store(&adv_db, "postgres12")), "").await;

    // Rows as Temporal v1.23's standard store writes them: no search attributes, no version.
    let url = format!(
        "postgres://{}:{}@{}:{}/{std_db}",
        std::env::var("VISMIG_TEST_PG_USER").unwrap_or("temporal".into()),
        std::env::var("VISMIG_TEST_PG_PASSWORD").unwrap_or("temporal".into()),
        std::env::var("VISMIG_TEST_PG_HOST").unwrap_or("127.0.0.1".into()),
        std::env::var("VISMIG_TEST_PG_PORT").unwrap_or("5432".into()),
    );
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO executions_visibility (namespace_id, run_id, start_time, execution_time, workflow_id, workflow_type_name, status, close_time, history_length, memo, encoding, task_queue)
         SELECT 'ns-standard', md5(i::text), TIMESTAMP '2023-01-01 00:00:00' + i * INTERVAL '1 second', TIMESTAMP '2023-01-01 00:00:00' + i * INTERVAL '1 second',
                'wf-' || i, 'LegacyWorkflow', CASE WHEN i % 4 = 0 THEN 1 ELSE 2 END,
                CASE WHEN i % 4 = 0 THEN NULL ELSE TIMESTAMP '2023-01-01 01:00:00.123456' + i * INTERVAL '1 second' END,
                CASE WHEN i % 4 = 0 THEN NULL ELSE 10 + i END, '\\x0a0b'::bytea, 'Proto3', 'legacy-queue'
         FROM generate_series(1, 400) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();

    // One run the live dual writes already put into the secondary, with a version.
    let mut live = all_records(source_of(&work, true).await).await[0].clone();
    live.version = 77;
    live.status = ExecutionStatus::Completed;
    live.close_time = Some(live.start_time + chrono::Duration::seconds(1));
    live.history_length = Some(3);
    pg_sink(&work).await.write(std::slice::from_ref(&live)).await.unwrap();

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("399 inserted, 0 updated, 1 skipped (newer in secondary)"), "{log}");
    let p = all_records(source_of(&work, true).await).await;
    let s = all_records(source_of(&work, false).await).await;
    assert_eq!(s.len(), 400);
    assert!(p.iter().all(|r| r.version == 0 && r.search_attributes.is_none()));
    assert_eq!(s.iter().find(|r| r.run_id == live.run_id).unwrap(), &live, "the live write is kept");
    let copied: Vec<&VisibilityRecord> = s.iter().filter(|r| r.run_id != live.run_id).collect();
    for r in copied {
        assert_eq!(Some(r), p.iter().find(|x| x.run_id == r.run_id), "copied as read");
    }
    assert_eq!(p.iter().filter(|r| r.status == ExecutionStatus::Running).count(), 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_names_a_missing_table_and_a_wrong_password_stays_secret() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("pg_preflight");
    reset_db("postgres", &db, "advanced");
    let work = Work::with_stores(None, Some(pg_store("postgres", "postgres12")), "").await;
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("table executions_visibility does not exist in database \"postgres\""),
        "{}",
        text(&out)
    );

    let wrong = pg_store(&db, "postgres12").replace("password: \"", "password: \"Wr0ngS3cret-");
    let work = Work::with_stores(None, Some(wrong), "").await;
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(!log.contains("Wr0ngS3cret"), "the password never appears: {log}");
}

/// (indexes on executions_visibility, how many of them are valid)
async fn index_count(db: &str) -> (i64, i64) {
    pg_row(
        db,
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE i.indisvalid) FROM pg_index i WHERE i.indrelid = 'executions_visibility'::regclass",
    )
    .await
}

fn dynamic_config(work: &Work, reads_secondary: bool) -> String {
    let path = work.path("dynamicconfig.yaml");
    std::fs::write(
        &path,
        format!(
            "# Temporal dynamic config\nsystem.secondaryVisibilityWritingMode:\n  - value: \"dual\"\nsystem.enableReadFromSecondaryVisibility:\n  - value: {reads_secondary}\n    constraints: {{ namespace: \"orders\" }}\n"
        ),
    )
    .unwrap();
    format!("  bulkLoad: {{ deferIndexes: true }}\n  flip: {{ dynamicConfigFile: \"{}\" }}\n", path.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_load_defers_the_indexes_and_rebuilds_them() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("pg_bulk");
    reset_db("postgres", &db, "advanced");
    let before = index_count(&db).await;
    assert!(before.0 > 50, "Temporal's schema has its indexes: {before:?}");
    let seeded = Work::seeded(2_000, "").await;
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), "").await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let extra = dynamic_config(&work, false);
    work.write_config(&extra);

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("dropped the secondary's indexes other than the primary key"), "{log}");
    assert!(log.contains("all deferred indexes rebuilt"), "{log}");
    assert_eq!(index_count(&db).await, (before.0, before.0), "every index is back and valid");
    let cp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(work.checkpoint()).unwrap()).unwrap();
    let deferred = cp["deferredIndexes"].as_array().unwrap();
    assert_eq!(deferred.len() as i64, before.0 - 1, "all but the primary key were deferred");
    assert!(
        deferred.iter().all(|d| d["rebuilt"] == true && d["definition"].as_str().unwrap().starts_with("CREATE INDEX"))
    );
    assert_eq!(all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_load_is_refused_while_a_namespace_reads_from_the_secondary() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("pg_bulk_refused");
    reset_db("postgres", &db, "advanced");
    let before = index_count(&db).await;
    let seeded = Work::seeded(1_000, "").await;
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), "").await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    work.write_config(&dynamic_config(&work, true));
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("deferIndexes refused"), "{log}");
    assert!(log.contains("(orders)"), "{log}");
    assert_eq!(index_count(&db).await, before, "nothing was dropped");

    work.write_config("  bulkLoad: { deferIndexes: true }\n");
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("needs migration.flip.dynamicConfigFile"), "{}", text(&out));
    assert_eq!(index_count(&db).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn indexes_dropped_before_a_crash_are_rebuilt_on_the_next_start() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("pg_bulk_crash");
    reset_db("postgres", &db, "advanced");
    let before = index_count(&db).await;
    let seeded = Work::seeded(3_000, "").await;
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), "").await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    work.write_config(&format!(
        "{}  rate: {{ recordsPerSecond: 1000 }}\n  batchSize: 200\n",
        dynamic_config(&work, false)
    ));
    kill_9_after(&work, 500).await;
    assert_eq!(index_count(&db).await.0, 1, "only the primary key is left during the copy");
    let out = work.run(&["status"]);
    assert!(text(&out).contains("dropped now"), "{}", text(&out));

    // Deferring is off now: the dropped indexes come back anyway, and the copy completes.
    work.write_config("");
    let out = work.run(&["backfill", "--rate", "0"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("rebuilding the indexes the bulk load deferred"), "{log}");
    assert_eq!(index_count(&db).await, (before.0, before.0));
    assert_eq!(all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
}

/// The checkpoint file is not trusted with SQL: deferred index definitions that differ
/// from what vismig saved in the secondary (`vismig_deferred_indexes`) are refused, all
/// of them before any index is built, and nothing runs; the true checkpoint then
/// rebuilds every index.
#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_checkpoint_runs_no_sql() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("pg_bulk_tamper");
    reset_db("postgres", &db, "advanced");
    let before = index_count(&db).await;
    let seeded = Work::seeded(3_000, "").await;
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), "").await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    work.write_config(&format!(
        "{}  rate: {{ recordsPerSecond: 1000 }}\n  batchSize: 200\n",
        dynamic_config(&work, false)
    ));
    kill_9_after(&work, 500).await;
    assert_eq!(index_count(&db).await, (1, 1), "only the primary key is left during the copy");
    let good = std::fs::read_to_string(work.checkpoint()).unwrap();
    let saved_rows = async || -> i64 {
        let pool = sqlx::PgPool::connect(&pg_url(&db)).await.unwrap();
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM vismig_deferred_indexes").fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    };
    assert_eq!(saved_rows().await, before.0 - 1, "every definition is saved in the secondary");

    let tamper = |edit: &dyn Fn(&mut Vec<serde_json::Value>)| {
        let mut cp: serde_json::Value = serde_json::from_str(&good).unwrap();
        edit(cp["deferredIndexes"].as_array_mut().unwrap());
        std::fs::write(work.checkpoint(), serde_json::to_vec_pretty(&cp).unwrap()).unwrap();
    };
    type Edit<'a> = &'a dyn Fn(&mut Vec<serde_json::Value>);
    let cases: [(&str, Edit); 2] = [
        ("differs from the definition vismig saved", &|d| {
            let last = d.last_mut().unwrap();
            let def = last["definition"].as_str().unwrap().to_string();
            last["definition"] = format!("{def}; DROP TABLE executions_visibility").into();
        }),
        ("is not among the definitions vismig saved", &|d| {
            d.push(serde_json::json!({
                "name": "vt_evil",
                "definition": "CREATE INDEX vt_evil ON executions_visibility (run_id)",
                "dropped": true,
                "rebuilt": false
            }))
        }),
    ];
    for (want, edit) in cases {
        tamper(edit);
        let out = work.run(&["backfill", "--rate", "0"]);
        let log = text(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        assert!(log.contains(want) && log.contains("refusing to drop or build anything"), "{log}");
        // executions_visibility is still there (index_count reads it), and no index ran.
        assert_eq!(index_count(&db).await, (1, 1), "nothing was built: {want}");
    }

    std::fs::write(work.checkpoint(), &good).unwrap();
    let out = work.run(&["backfill", "--rate", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(index_count(&db).await, (before.0, before.0), "every index is back from the saved definitions");
    assert_eq!(saved_rows().await, 0, "a rebuilt index's saved definition is removed");
    assert_eq!(all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
}

/// Temporal v1.23 (the last release with Cassandra visibility) creates the advanced
/// PostgreSQL schema at 1.4: no root ids (1.5/1.6) and no `_version` (1.9). A primary
/// that has them is refused (the fields would be lost); told `dropMissingFields`, the
/// secondary takes every other field, rows go in where absent, as without a version,
/// and the summary counts the records that lost a value.
#[tokio::test(flavor = "multi_thread")]
async fn a_temporal_v1_23_secondary_without_root_ids_or_version_takes_the_records() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("pg_v123");
    reset_db("postgres", &db, "advanced-v1.23");
    let pool = sqlx::PgPool::connect(&pg_url(&db)).await.unwrap();
    let (missing,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'executions_visibility' \
         AND column_name IN ('root_workflow_id', 'root_run_id', '_version')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(missing, 0, "temporal-sql-tool v1.23 creates schema 1.4");

    let seeded = Work::seeded(1_200, "").await;
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), "  batchSize: 300\n").await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("has no root_workflow_id, root_run_id, _version"), "{}", text(&out));

    work.write_config("  batchSize: 300\n  dropMissingFields: true\n");
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1200 inserted"), "{}", text(&out));
    assert!(text(&out).contains("1200 records were copied without values"), "{}", text(&out));

    let p = all_records(source_of(&work, true).await).await;
    let s = all_records(source_of(&work, false).await).await;
    assert_eq!(s.len(), 1_200);
    assert!(p.iter().any(|r| !r.root_workflow_id.is_empty() && r.version > 0), "the seed has root ids and versions");
    let without_new_columns = |r: &VisibilityRecord| {
        let mut r = r.clone();
        r.root_workflow_id.clear();
        r.root_run_id.clear();
        r.version = 0;
        r
    };
    let expected: Vec<VisibilityRecord> = p.iter().map(without_new_columns).collect();
    assert_eq!(s, expected, "every field schema 1.4 has survives");
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
