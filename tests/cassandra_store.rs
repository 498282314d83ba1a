//! The Cassandra standard-visibility source against the real Cassandra of
//! tests/services, with Temporal v1.23's schema applied by temporal-cassandra-tool and
//! rows written the way Temporal v1.23 writes them (open insert `USING TIMESTAMP` start
//! ms; close = one logged batch deleting the open row and inserting the closed one):
//! 50,001 runs in three namespaces, every field of every record compared after
//! Cassandra -> SQLite, PostgreSQL, MariaDB and OpenSearch; kill -9 and resume, a run in
//! both tables ending closed, counts verify.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use common::*;
use futures::StreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::CqlTimestamp;
use uuid::Uuid;
use vismig::record::{ExecutionStatus, VisibilityRecord};
use vismig::store::Split;

fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap()
}

/// One run as the test writes it, and the record vismig must produce from it.
struct Run {
    record: VisibilityRecord,
    /// Write the closed row without deleting the open one (the close batch's delete missed).
    in_both: bool,
    /// A status Temporal does not define: goes to the dead letter.
    bad_status: Option<i32>,
}

/// `per_ns` runs in each of 3 namespaces, open and closed of every status, with memo;
/// 40 closed runs of the first namespace share one close time (paging inside one
/// clustering time), one run is in both tables, one has an unknown status.
fn runs(per_ns: usize) -> (Vec<Uuid>, Vec<Run>) {
    let namespaces: Vec<Uuid> =
        (0..3).map(|i| Uuid::from_u128(0x1000_0000_0000_4000_8000_0000_0000_0000 + i)).collect();
    let base = 1_700_000_000_000i64;
    let closed = [
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Canceled,
        ExecutionStatus::Terminated,
        ExecutionStatus::ContinuedAsNew,
        ExecutionStatus::TimedOut,
    ];
    let mut out = Vec::new();
    for (n, ns) in namespaces.iter().enumerate() {
        for i in 0..per_ns {
            let k = (n * per_ns + i) as i64;
            let start = base + k * 7_919 + (k % 1000);
            let status = if i % 5 == 0 { ExecutionStatus::Running } else { closed[i % closed.len()] };
            let close = if status.is_open() {
                None
            } else if n == 0 && i < 200 && i % 5 != 0 {
                Some(base + 50_000_000) // shared close time
            } else {
                Some(start + 1_000 + (k * 37) % 900_000)
            };
            let memo = match i % 7 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("\n\x0ememo-{k}").into_bytes()),
            };
            let record = VisibilityRecord {
                namespace_id: ns.to_string(),
                run_id: Uuid::from_u128(0xabcd_0000_0000_4000_8000_0000_0000_0000 + k as u128 * 7_777_777).to_string(),
                workflow_id: format!("wf-{}", k / 2),
                workflow_type_name: format!("Type{}", k % 4),
                start_time: ms(start),
                execution_time: ms(if i % 3 == 0 { start + 60_000 } else { start }),
                close_time: close.map(ms),
                status,
                history_length: close.map(|_| 10 + k),
                history_size_bytes: None,
                execution_duration: None,
                state_transition_count: None,
                encoding: if memo.is_none() { String::new() } else { "Proto3".into() },
                memo,
                task_queue: format!("queue-{}", k % 3),
                search_attributes: None,
                parent_workflow_id: None,
                parent_run_id: None,
                root_workflow_id: String::new(),
                root_run_id: String::new(),
                version: 0,
            };
            out.push(Run { record, in_both: n == 0 && i == 1, bad_status: (n == 1 && i == 2).then_some(99) });
        }
    }
    (namespaces, out)
}

/// Writes the runs with Temporal v1.23's statements and timestamps.
async fn write_runs(s: &Session, runs: &[Run]) {
    let insert_open = s
        .prepare(
            "INSERT INTO open_executions (namespace_id, namespace_partition, workflow_id, run_id, start_time, execution_time, workflow_type_name, memo, encoding, task_queue) VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
        )
        .await
        .unwrap();
    let delete_open = s
        .prepare("DELETE FROM open_executions WHERE namespace_id = ? AND namespace_partition = 0 AND start_time = ? AND run_id = ?")
        .await
        .unwrap();
    let insert_closed = s
        .prepare(
            "INSERT INTO closed_executions (namespace_id, namespace_partition, workflow_id, run_id, start_time, execution_time, close_time, workflow_type_name, status, history_length, memo, encoding, task_queue) VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .await
        .unwrap();
    let (insert_open, delete_open, insert_closed) = (&insert_open, &delete_open, &insert_closed);
    futures::stream::iter(runs)
        .map(|run| async move {
            let r = &run.record;
            let ns = Uuid::parse_str(&r.namespace_id).unwrap();
            let id = Uuid::parse_str(&r.run_id).unwrap();
            let ts = |t: DateTime<Utc>| CqlTimestamp(t.timestamp_millis());
            let encoding = (!r.encoding.is_empty()).then(|| r.encoding.clone());
            s.execute_unpaged(
                insert_open,
                (
                    ns,
                    &r.workflow_id,
                    id,
                    ts(r.start_time),
                    ts(r.execution_time),
                    &r.workflow_type_name,
                    &r.memo,
                    &encoding,
                    &r.task_queue,
                    r.start_time.timestamp_millis(),
                ),
            )
            .await
            .unwrap();
            let Some(close) = r.close_time else { return };
            let closed_values = (
                ns,
                &r.workflow_id,
                id,
                ts(r.start_time),
                ts(r.execution_time),
                ts(close),
                &r.workflow_type_name,
                run.bad_status.unwrap_or(r.status.as_i32()),
                r.history_length.unwrap(),
                &r.memo,
                &encoding,
                &r.task_queue,
            );
            let mut batch = Batch::new(BatchType::Logged);
            // Temporal: close time in ms, or start + 1 s for runs shorter than that.
            let stamp = close.timestamp_millis().max(r.start_time.timestamp_millis() + 1_000);
            batch.set_timestamp(Some(stamp));
            batch.append_statement(insert_closed.clone());
            if run.in_both {
                s.batch(&batch, (closed_values,)).await.unwrap();
            } else {
                batch.append_statement(delete_open.clone());
                s.batch(&batch, (closed_values, (ns, ts(r.start_time), id))).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// What the secondary must hold: every run but the one with an unknown status, sorted.
fn expected(runs: &[Run]) -> Vec<VisibilityRecord> {
    let mut want: Vec<VisibilityRecord> =
        runs.iter().filter(|r| r.bad_status.is_none()).map(|r| r.record.clone()).collect();
    want.sort_by(|a, b| (&a.namespace_id, &a.run_id).cmp(&(&b.namespace_id, &b.run_id)));
    want
}

async fn seeded_keyspace(test: &str, per_ns: usize) -> (Keyspace, Vec<Run>) {
    let ks = Keyspace::create(test);
    let (_, runs) = runs(per_ns);
    let s = session(&ks).await;
    write_runs(&s, &runs).await;
    (ks, runs)
}

/// 50,001 runs in three namespaces, written once per test process and copied by each
/// copy test into its own target. Keyspaces an earlier test process left are dropped.
async fn shared_keyspace() -> &'static (Keyspace, Vec<Run>) {
    static SHARED: tokio::sync::OnceCell<(Keyspace, Vec<Run>)> = tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            drop_stale_shared_keyspaces().await;
            let started = Instant::now();
            let seeded = seeded_keyspace("cass_shared", 16_667).await;
            eprintln!("wrote {} runs into Cassandra in {:.1}s", seeded.1.len(), started.elapsed().as_secs_f64());
            seeded
        })
        .await
}

async fn drop_stale_shared_keyspaces() {
    let s = SessionBuilder::new()
        .known_node(format!("{}:{}", cassandra_host(), cassandra_port()))
        .build()
        .await
        .expect("Cassandra is listed in VISMIG_TEST_SERVICES but unreachable");
    let rows = s.query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces", ()).await.unwrap();
    let names: Vec<String> =
        rows.into_rows_result().unwrap().rows::<(String,)>().unwrap().map(|r| r.unwrap().0).collect();
    for name in names {
        let Some(pid) = name.strip_prefix("vt_cass_shared_") else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        drop(Keyspace::named(name));
    }
}

fn assert_same(got: &[VisibilityRecord], want: &[VisibilityRecord]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_to_sqlite_copies_every_field() {
    if !service_up("cassandra") {
        return;
    }
    let (ks, runs) = shared_keyspace().await;
    let want = expected(runs);
    let work = cassandra_work(ks, None, "  batchSize: 300\n  concurrency: 4\n").await;

    // The source itself, paged by 7 over a plan of 5 windows per namespace: the rows
    // sharing one close time are paged through, nothing repeats, nothing is missing.
    let source = source_of(&work, true).await;
    let split = Split { per_process: 5, process_index: 0, process_count: 1 };
    let shards = source.plan_shards(&[], &split).await.unwrap();
    assert!(shards.len() > 6, "closed partitions are split into windows: {shards:?}");
    assert_eq!(shards.last().unwrap().0["table"], "open", "open shards come last");
    // Two processes of an Indexed Job take disjoint parts of the same plan.
    let part = |i| Split { per_process: 2, process_index: i, process_count: 2 };
    let (p0, p1) = (source.plan_shards(&[], &part(0)).await.unwrap(), source.plan_shards(&[], &part(1)).await.unwrap());
    let whole = source.plan_shards(&[], &Split { per_process: 4, process_index: 0, process_count: 1 }).await.unwrap();
    assert!(p0.iter().all(|s| !p1.contains(s)), "disjoint");
    assert_eq!(p0.len() + p1.len(), whole.len());
    assert!(p0.iter().chain(&p1).all(|s| whole.contains(s)));

    let mut seen = Vec::new();
    let mut bad = Vec::new();
    for shard in &shards {
        let mut cursor = None;
        loop {
            let page = source.scan(shard, cursor.as_ref(), 7).await.unwrap();
            seen.extend(page.records.into_iter().map(|r| (r.namespace_id, r.run_id, r.status)));
            bad.extend(page.bad_rows);
            cursor = page.cursor.or(cursor);
            if page.done {
                break;
            }
        }
    }
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].reason.contains("unknown status 99"), "{bad:?}");
    let unique: BTreeSet<_> = seen.iter().map(|(n, r, _)| (n.clone(), r.clone())).collect();
    assert_eq!(unique.len(), want.len(), "every run once");
    assert_eq!(seen.len(), want.len() + 1, "the run in both tables is read twice, both times closed");
    let both = &runs.iter().find(|r| r.in_both).unwrap().record;
    assert!(seen.iter().filter(|(_, r, _)| *r == both.run_id).all(|(_, _, s)| *s == both.status));

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 dead-lettered"), "{log}");
    let s = all_records(source_of(&work, false).await).await;
    assert_same(&s, &want);
    let copied = s.iter().find(|r| r.run_id == both.run_id).unwrap();
    assert!(copied.close_time.is_some() && copied.status != ExecutionStatus::Running, "{copied:?}");
    let letters = std::fs::read_to_string(work.dead_letter()).unwrap();
    assert!(letters.contains("unknown status 99"), "{letters}");

    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = work.run(&["verify", "--deep"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("not supported with a Cassandra primary"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_to_postgres_copies_every_field() {
    if !service_up("cassandra") || !service_up("postgres") {
        return;
    }
    let (ks, runs) = shared_keyspace().await;
    let want = expected(runs);
    let db = db_name("cass_pg");
    reset_db("postgres", &db, "advanced");
    let work = cassandra_work(ks, Some(pg_store(&db, "postgres12")), "  batchSize: 500\n  concurrency: 4\n").await;
    let started = Instant::now();
    let out = work.run(&["backfill"]);
    let elapsed = started.elapsed();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    for line in log.lines().filter(|l| l.contains("inserted")) {
        eprintln!("{line}");
    }
    eprintln!(
        "Cassandra -> PostgreSQL: {} records in {:.2}s ({:.0} records/s, whole process)",
        want.len(),
        elapsed.as_secs_f64(),
        want.len() as f64 / elapsed.as_secs_f64()
    );
    assert_same(&all_records(source_of(&work, false).await).await, &want);
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_backfill_resumes_after_kill_9() {
    if !service_up("cassandra") {
        return;
    }
    let (ks, runs) = seeded_keyspace("cass_kill", 1_000).await;
    let want = expected(&runs);
    let work =
        cassandra_work(&ks, None, "  batchSize: 100\n  concurrency: 2\n  rate: { recordsPerSecond: 600 }\n").await;
    kill_9_after(&work, 600).await;
    assert!(settled(&work) < want.len() as u64);

    let out = work.run(&["backfill", "--rate", "0"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("resuming shard after cursor"), "{log}");
    assert_same(&all_records(source_of(&work, false).await).await, &want);
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_names_a_missing_table() {
    if !service_up("cassandra") {
        return;
    }
    let ks = Keyspace::create("cass_preflight");
    let s = session(&ks).await;
    s.query_unpaged("DROP TABLE open_executions", ()).await.unwrap();
    let work = cassandra_work(&ks, None, "").await;
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("table open_executions does not exist in keyspace"), "{log}");
    assert!(log.contains(&format!("cassandra {}/{}", cassandra_host(), ks.0)), "{log}");

    // Nobody listens there: one line naming the store, and no retry loop.
    let config = std::fs::read_to_string(work.config()).unwrap();
    std::fs::write(work.config(), config.replace(&format!("port: {}", cassandra_port()), "port: 1")).unwrap();
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("store \"primary\" (cassandra {}/{}): connecting", cassandra_host(), ks.0)), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_to_mariadb_copies_every_field() {
    if !service_up("cassandra") || !service_up("mariadb") {
        return;
    }
    let (ks, runs) = shared_keyspace().await;
    let want = expected(runs);
    let db = db_name("cass_my");
    reset_db("mariadb", &db, "advanced");
    let work = cassandra_work(ks, Some(mysql_store(&db, "mysql8")), "  batchSize: 500\n  concurrency: 4\n").await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_same(&all_records(source_of(&work, false).await).await, &want);
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_to_opensearch_copies_every_field() {
    if !service_up("cassandra") || !service_up("opensearch") {
        return;
    }
    let (ks, runs) = shared_keyspace().await;
    // Elasticsearch keeps no empty memo and no encoding without a memo (Temporal's
    // document omits both), and reads such a run back with Temporal's only encoding.
    // Written with `create` (no version in Cassandra), a document is at version 1.
    let want: Vec<VisibilityRecord> = expected(runs)
        .into_iter()
        .map(|mut r| {
            if r.memo.as_ref().is_none_or(|m| m.is_empty()) {
                r.memo = None;
                r.encoding = "Proto3".into();
            }
            r.version = 1;
            r
        })
        .collect();
    let (url, index) = search_index("opensearch", "cass_os").await;
    let work = cassandra_work(ks, Some(search_store(&url, &index)), "  batchSize: 500\n  concurrency: 4\n").await;
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 dead-lettered"), "{log}");
    assert_same(&all_records(source_of(&work, false).await).await, &want);
    // No version in Cassandra: written with `create`, so a second run changes nothing.
    std::fs::remove_file(work.checkpoint()).unwrap();
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    // The run in both tables is read twice (open and closed), both times present.
    assert!(
        log.contains("0 inserted") && log.contains(&format!("{} skipped (already present)", want.len() + 1)),
        "{log}"
    );
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    drop_index(&url, &index).await;
}

/// Closed runs of one namespace spread over 63 days (one every ~2.5 h) and a few open
/// ones; the oldest third written `USING TTL ttl_s`, as Temporal's retention expires
/// closed rows. Returns the runs that outlive the TTL.
async fn runs_over_63_days(s: &Session, ttl_s: i32) -> Vec<Run> {
    let ns = Uuid::from_u128(0x2000_0000_0000_4000_8000_0000_0000_0000);
    let base = 1_700_000_000_000i64;
    let step = 63 * 24 * 3600 * 1000 / 600;
    let (mut expiring, mut lasting) = (Vec::new(), Vec::new());
    for i in 0..600i64 {
        let open = i % 10 == 9;
        let close = base + i * step;
        let record = VisibilityRecord {
            namespace_id: ns.to_string(),
            run_id: Uuid::from_u128(0xdcba_0000_0000_4000_8000_0000_0000_0000 + i as u128 * 7_777).to_string(),
            workflow_id: format!("wf-grid-{i}"),
            workflow_type_name: "GridType".into(),
            start_time: ms(close - 3_600_000),
            execution_time: ms(close - 3_600_000),
            close_time: (!open).then(|| ms(close)),
            status: if open { ExecutionStatus::Running } else { ExecutionStatus::Completed },
            history_length: (!open).then_some(12),
            history_size_bytes: None,
            execution_duration: None,
            state_transition_count: None,
            encoding: "Proto3".into(),
            memo: Some(format!("memo-{i}").into_bytes()),
            task_queue: "grid-queue".into(),
            search_attributes: None,
            parent_workflow_id: None,
            parent_run_id: None,
            root_workflow_id: String::new(),
            root_run_id: String::new(),
            version: 0,
        };
        let run = Run { record, in_both: false, bad_status: None };
        if i < 200 && !open { expiring.push(run) } else { lasting.push(run) }
    }
    write_runs(s, &lasting).await;
    let insert = s
        .prepare(
            "INSERT INTO closed_executions (namespace_id, namespace_partition, workflow_id, run_id, start_time, execution_time, close_time, workflow_type_name, status, history_length, memo, encoding, task_queue) VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
        )
        .await
        .unwrap();
    for run in &expiring {
        let r = &run.record;
        let ts = |t: DateTime<Utc>| CqlTimestamp(t.timestamp_millis());
        let values = (
            ns,
            &r.workflow_id,
            Uuid::parse_str(&r.run_id).unwrap(),
            ts(r.start_time),
            ts(r.execution_time),
            ts(r.close_time.unwrap()),
            &r.workflow_type_name,
            r.status.as_i32(),
            r.history_length.unwrap(),
            &r.memo,
            &r.encoding,
            &r.task_queue,
            ttl_s,
        );
        s.execute_unpaged(&insert, values).await.unwrap();
    }
    lasting
}

/// Issue #20: two processes of an Indexed Job (`--shard 0/2`, `--shard 1/2`) plan at
/// different times, the second after TTL expired the oldest closed rows (a pod
/// restarted). The plan of each must not depend on when it is made, and together they
/// copy every run that is left. Also: a checkpoint of the planner before the grid (time
/// windows) still resumes alone, and is refused with `--shard I/N`, N > 1.
#[tokio::test(flavor = "multi_thread")]
async fn cassandra_shard_plans_agree_across_processes_after_ttl() {
    if !service_up("cassandra") {
        return;
    }
    const TTL_S: i32 = 25;
    let ks = Keyspace::create("cass_grid");
    let s = session(&ks).await;
    let written = Instant::now();
    let lasting = runs_over_63_days(&s, TTL_S).await;
    let extra = "  batchSize: 50\n  concurrency: 2\n";
    let work = cassandra_work(&ks, None, extra).await;
    let source = source_of(&work, true).await;
    let split = |i| Split { per_process: 2, process_index: i, process_count: 2 };
    let plan_before =
        (source.plan_shards(&[], &split(0)).await.unwrap(), source.plan_shards(&[], &split(1)).await.unwrap());

    // Process 0 copies its part while every row is there.
    let checkpoint = work.checkpoint().display().to_string();
    let out = work.run(&["backfill", "--shard", "0/2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(written.elapsed() < std::time::Duration::from_secs(TTL_S as u64), "process 0 ran before the TTL");

    // The oldest third expires; process 1 starts (fresh) only then.
    let closed_left = || async {
        let rows = s.query_unpaged("SELECT run_id FROM closed_executions", ()).await.unwrap();
        rows.into_rows_result().unwrap().rows_num()
    };
    let lasting_closed = lasting.iter().filter(|r| r.record.close_time.is_some()).count();
    wait_until(std::time::Duration::from_secs(90), "the TTL to expire the oldest rows", async || {
        closed_left().await == lasting_closed
    })
    .await;
    let plan_after =
        (source.plan_shards(&[], &split(0)).await.unwrap(), source.plan_shards(&[], &split(1)).await.unwrap());
    assert_eq!(plan_before, plan_after, "the plan does not depend on when it is made");
    let config = std::fs::read_to_string(work.config()).unwrap();
    std::fs::write(work.config(), config.replace(&checkpoint, &format!("{checkpoint}.1"))).unwrap();
    let out = work.run(&["backfill", "--shard", "1/2"]);
    assert!(out.status.success(), "{}", text(&out));

    // Every run the primary still holds is in the secondary, field for field.
    let left = all_records(source.clone()).await;
    assert_eq!(left.len(), lasting.len());
    let copied: std::collections::BTreeMap<(String, String), VisibilityRecord> =
        all_records(source_of(&work, false).await)
            .await
            .into_iter()
            .map(|r| ((r.namespace_id.clone(), r.run_id.clone()), r))
            .collect();
    let missing: Vec<_> = left
        .iter()
        .filter(|r| copied.get(&(r.namespace_id.clone(), r.run_id.clone())) != Some(*r))
        .map(|r| r.close_time)
        .collect();
    assert!(missing.is_empty(), "{} of {} runs not copied, closed at {missing:?}", missing.len(), left.len());
    println!(
        "Cassandra, --shard 0/2 then --shard 1/2 after TTL expired the oldest {} closed runs: all {} runs left copied, plans identical",
        600 - lasting.len(),
        left.len()
    );

    // A checkpoint of the old planner (time windows from the oldest close time) in
    // place of process 0's.
    std::fs::write(work.config(), &config).unwrap();
    let mut cp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(work.checkpoint()).unwrap()).unwrap();
    let ns = left[0].namespace_id.clone();
    let cut = 1_700_000_000_000i64 + 40 * 24 * 3600 * 1000;
    let window = |from: Option<i64>, to: Option<i64>, id: usize| serde_json::json!({"id": id, "spec": {"namespaceId": ns, "table": "closed", "from": from, "to": to}, "cursor": null, "done": false, "settled": 0});
    let open = serde_json::json!({"id": 2, "spec": {"namespaceId": ns, "table": "open", "from": null, "to": null}, "cursor": null, "done": false, "settled": 0});
    cp["shards"] = serde_json::json!([window(None, Some(cut), 0), window(Some(cut), None, 1), open]);
    cp["completedAt"] = serde_json::Value::Null;
    std::fs::write(work.checkpoint(), cp.to_string()).unwrap();
    let out = work.run(&["backfill", "--shard", "0/2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("planned by an older vismig"), "{}", text(&out));
    // Alone (`--shard 0/1`), its windows cover all time: it resumes and copies everything.
    exec(&work.secondary(), "DELETE FROM executions_visibility").await;
    cp["split"] = serde_json::json!({"perProcess": 2, "processIndex": 0, "processCount": 1});
    std::fs::write(work.checkpoint(), cp.to_string()).unwrap();
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resuming from checkpoint"), "{}", text(&out));
    let again = all_records(source_of(&work, false).await).await;
    assert_eq!(again, left, "the old windows, resumed alone, copy every run");
}

/// Not a test: writes the Cassandra source of `benches/run.sh` (pair `cassandra`), runs
/// written as Temporal v1.23 writes them into the keyspace VISMIG_BENCH_KEYSPACE, left
/// in place for the harness to copy and drop.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark data: benches/run.sh --pairs cassandra"]
async fn write_cassandra_benchmark_keyspace() {
    assert!(service_up("cassandra"), "needs tests/services/up.sh cassandra");
    let records: usize = std::env::var("VISMIG_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_001);
    let name = std::env::var("VISMIG_BENCH_KEYSPACE").expect("VISMIG_BENCH_KEYSPACE");
    let started = Instant::now();
    let ks = Keyspace::create_named(name);
    let (_, runs) = runs(records.div_ceil(3));
    write_runs(&session(&ks).await, &runs).await;
    println!("wrote {} runs into Cassandra keyspace {} in {:.1}s", runs.len(), ks.0, started.elapsed().as_secs_f64());
    // One run has a status Temporal does not know: the backfill dead-letters it.
    println!("copyable: {}", runs.len() - 1);
    std::mem::forget(ks);
}

/// PostgreSQL -> OpenSearch with Temporal's default store on Cassandra: each namespace's
/// alias map is read from its record in the main keyspace's `namespaces` table (detail
/// blob in Temporal's NamespaceDetail encoding, written here by hand), the metadata row
/// Temporal keeps in the same partition is skipped, migration.searchAttributeAliases
/// overrides one namespace's (wrong) map, and a record that does not decode stops the
/// next run with one line naming the namespace and the store.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_opensearch_takes_aliases_from_a_cassandra_default_store() {
    if !service_up("cassandra") || !service_up("postgres") || !service_up("opensearch") {
        return;
    }
    let ks = Keyspace::create_main("cass_default_ns");
    let db = db_name("alias_cass_default");
    reset_db("postgres", &db, "advanced");
    let (url, index) = search_index("opensearch", "alias_cass_default").await;
    register_seed_attributes(&url, &index).await;
    let work = Work::with_stores(Some(pg_store(&db, "postgres12")), Some(search_store(&url, &index)), "").await;

    let seed_map: Vec<(&str, &str)> = vismig::seed::SEED_ALIASES.iter().map(|(f, a, _)| (*f, *a)).collect();
    let ids = vismig::seed::Generator::new(29, Utc::now()).namespaces().to_vec();
    let names: Vec<String> = (0..ids.len()).map(|i| format!("ns{i}")).collect();
    let s = session(&ks).await;
    // As Temporal's metadata store writes them: the id row, the namespace row in
    // partition 0, and the notification-version row beside them.
    for (i, (id, name)) in ids.iter().zip(&names).enumerate() {
        let id = Uuid::parse_str(id).unwrap();
        let map = if i == 0 { vec![("Keyword01", "Wrong")] } else { seed_map.clone() };
        s.query_unpaged("INSERT INTO namespaces_by_id (id, name) VALUES (?, ?)", (id, name)).await.unwrap();
        s.query_unpaged(
            "INSERT INTO namespaces (namespaces_partition, id, name, detail, detail_encoding, notification_version, is_global_namespace) VALUES (0, ?, ?, ?, 'Proto3', ?, false)",
            (id, name, namespace_detail(name, &map), i as i64),
        )
        .await
        .unwrap();
    }
    s.query_unpaged(
        "INSERT INTO namespaces (namespaces_partition, name, notification_version) VALUES (0, 'temporal-namespace-metadata', ?)",
        (ids.len() as i64,),
    )
    .await
    .unwrap();

    let override_yaml: String = seed_map.iter().map(|(f, a)| format!("      {f}: {a}\n")).collect();
    let config = std::fs::read_to_string(work.config())
        .unwrap()
        .replacen("persistence:\n", "persistence:\n  defaultStore: default\n", 1)
        .replacen(
            "  datastores:\n",
            &format!(
                "  datastores:\n    default:\n      cassandra: {{ hosts: \"{}\", port: {}, keyspace: {}, connectTimeout: 10s }}\n",
                cassandra_host(),
                cassandra_port(),
                ks.0
            ),
            1,
        );
    let config = format!("{config}  searchAttributeAliases:\n    {}:\n{override_yaml}", names[0]);
    assert!(config.contains("\nmigration:\n"), "{config}");
    std::fs::write(work.config(), config).unwrap();

    let out = work.run(&["seed", "--records", "1500", "--seed", "29"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("backfill complete: 1500 records settled"), "{log}");
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Every document carries the users' names, in every namespace.
    let http = reqwest::Client::new();
    http.post(format!("{url}/{index}/_refresh")).send().await.unwrap();
    let found: serde_json::Value = http
        .post(format!("{url}/{index}/_search"))
        .json(&serde_json::json!({"size": 2000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let docs: Vec<serde_json::Value> =
        found["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_source"].clone()).collect();
    assert_eq!(docs.len(), 1500);
    for id in &ids {
        assert!(docs.iter().any(|d| d["NamespaceId"] == id.as_str() && d.get("CustomerId").is_some()), "{id}");
    }
    assert!(docs.iter().all(|d| d.get("Keyword01").is_none() && d.get("Wrong").is_none()));

    // A record that is not a NamespaceDetail: one line naming it, before anything is copied.
    s.query_unpaged(
        "UPDATE namespaces SET detail = ? WHERE namespaces_partition = 0 AND name = ?",
        (vec![0x12u8, 0x05, 0x01], &names[1]),
    )
    .await
    .unwrap();
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_ne!(out.status.code(), Some(0), "{log}");
    let want = format!(
        "namespace \"{}\" ({}) in store \"default\": its record does not decode as Temporal's NamespaceDetail",
        names[1], ids[1]
    );
    assert!(log.lines().any(|l| l.contains(&want)), "{log}");

    // A namespace row without its id (Temporal always writes one): one line naming it.
    s.query_unpaged(
        "INSERT INTO namespaces (namespaces_partition, name, detail, detail_encoding) VALUES (0, 'broken', ?, 'Proto3')",
        (namespace_detail("broken", &[]),),
    )
    .await
    .unwrap();
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert_ne!(out.status.code(), Some(0), "{log}");
    assert!(log.lines().any(|l| l.contains("namespace \"broken\" has a NULL id in the namespaces table")), "{log}");
    drop_index(&url, &index).await;
}

// --- the secured node: password authentication, TLS and a client certificate required -

/// The `cassandra:` block of the secured node's reader, with the given `tls` flow map
/// ("" = none) and password; `hosts` may be a forwarder's `host:port`.
fn secured_cassandra(ks: &Keyspace, hosts: &str, password: &str, tls: &str) -> String {
    let (user, _) = common::tls::tls_user();
    let tls = if tls.is_empty() { String::new() } else { format!(", tls: {tls}") };
    format!(
        "{{ hosts: \"{hosts}\", port: {}, keyspace: {}, user: {user}, password: \"{password}\", connectTimeout: 10s{tls} }}",
        ks.node().port(),
        ks.0
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn secured_cassandra_to_secured_postgres_over_verified_tls() {
    if !service_up("cassandra") || !service_up("postgres") {
        return;
    }
    let ks = Keyspace::create_secured("cass_tls");
    let (_, runs) = runs(200);
    write_runs(&session(&ks).await, &runs).await;
    let db = db_name("cass_tls_pg");
    reset_db("postgres", &db, "advanced");
    let (_, password) = common::tls::tls_user();
    // Cassandra: files (the client certificate too), host name verified; PostgreSQL: the certificate user, inline data.
    let primary = secured_cassandra(&ks, &cassandra_host(), &password, &common::tls::tls_files_client_cert());
    let secondary = common::tls::sql_store(
        "postgres12",
        &db,
        &pg_addr(),
        &common::tls::cert_user(),
        None,
        &common::tls::tls_inline_client_cert(),
    );
    let work = cassandra_work_with(&primary, Some(secondary), "  batchSize: 300\n  concurrency: 2\n").await;
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("not verified") && !log.contains(&password), "{log}");
    assert_same(&all_records(source_of(&work, false).await).await, &expected(&runs));
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn secured_cassandra_takes_inline_ca_and_checks_the_server_name_given() {
    if !service_up("cassandra") {
        return;
    }
    let ks = Keyspace::create_secured("cass_tls_inline");
    let (_, runs) = runs(50);
    write_runs(&session(&ks).await, &runs).await;
    let (_, password) = common::tls::tls_user();
    // Dialled at 127.0.0.2, which the certificate does not name: with serverName
    // `localhost` (which it does) the name check passes, so serverName is what is checked.
    let port = ks.node().port();
    let other = common::tls::forward_from(&format!("127.0.0.2:{port}"), &format!("{}:{port}", cassandra_host())).await;
    let tls = format!(
        "{{ enabled: true, caData: \"{}\", certData: \"{}\", keyData: \"{}\", enableHostVerification: true, serverName: localhost }}",
        common::tls::tls_data("ca.crt"),
        common::tls::tls_data("client.crt"),
        common::tls::tls_data("client.key")
    );
    let other = other.split(':').next().unwrap();
    let work = cassandra_work_with(&secured_cassandra(&ks, other, &password, &tls), None, "").await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_same(&all_records(source_of(&work, false).await).await, &expected(&runs));
}

#[tokio::test(flavor = "multi_thread")]
async fn secured_cassandra_refusals_are_one_line_with_the_fix() {
    if !service_up("cassandra") {
        return;
    }
    use common::tls::{
        Handshake, assert_one_line_refusal, forward_from, tls_file, tls_files_client_cert, tls_files_verified,
        tls_front_at, tls_user,
    };
    let ks = Keyspace::create_secured("cass_tls_refuse");
    let (_, password) = tls_user();
    let host = cassandra_host();
    let refused = async |hosts: &str, password: &str, tls: &str| {
        cassandra_work_with(&secured_cassandra(&ks, hosts, password, tls), None, "").await.run(&["verify"])
    };

    let tls = format!("{{ enabled: true, caFile: \"{}\", enableHostVerification: true }}", tls_file("other-ca.crt"));
    let out = refused(&host, &password, &tls).await;
    assert_one_line_refusal(&out, "not signed by a CA vismig trusts: set cassandra.tls.caFile", &[&password]);

    let port = ks.node().port();
    let other = forward_from(&format!("127.0.0.3:{port}"), &format!("{host}:{port}")).await;
    let out = refused(other.split(':').next().unwrap(), &password, &tls_files_client_cert()).await;
    assert_one_line_refusal(&out, "not issued for the host vismig connects to", &[&password]);

    let out = refused(&host, &password, "").await;
    assert_one_line_refusal(&out, "set cassandra.tls", &[&password]);

    // Expired certificate: a TLS front of the real node (at another loopback address on
    // the node's port, named by serverName); the same front with the valid certificate
    // works, so only the certificate differs.
    let tls = format!(
        "{{ enabled: true, caFile: \"{}\", certFile: \"{}\", keyFile: \"{}\", enableHostVerification: true, serverName: localhost }}",
        tls_file("ca.crt"),
        tls_file("client.crt"),
        tls_file("client.key")
    );
    let upstream = format!("{host}:{port}");
    let good = tls_front_at(&format!("127.0.0.4:{port}"), &upstream, "server", Handshake::Direct).await;
    let out = refused(good.split(':').next().unwrap(), &password, &tls).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let expired = tls_front_at(&format!("127.0.0.5:{port}"), &upstream, "expired", Handshake::Direct).await;
    let out = refused(expired.split(':').next().unwrap(), &password, &tls).await;
    assert_one_line_refusal(&out, "the server's certificate has expired: renew it on the server", &[&password]);

    // No client certificate: the node requires one.
    let out = refused(&host, &password, &tls_files_verified()).await;
    assert_one_line_refusal(&out, "set cassandra.tls.certFile and keyFile", &[&password]);

    let out = refused(&host, "not-the-password-x9", &tls_files_client_cert()).await;
    assert_one_line_refusal(&out, "check cassandra.user and cassandra.password", &["not-the-password-x9", &password]);

    // No login at all.
    let body = secured_cassandra(&ks, &host, &password, &tls_files_client_cert())
        .replace(&format!(", user: {}, password: \"{password}\"", tls_user().0), "");
    let out = cassandra_work_with(&body, None, "").await.run(&["verify"]);
    assert_one_line_refusal(&out, "set cassandra.user and cassandra.password", &[&password]);
}
