//! The backfill end to end on SQLite, through the real binary: resume after kill -9,
//! SIGTERM, idempotence, the version guard, dead letters, the rate limit, the metrics
//! and control endpoints, and config errors.

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use common::*;
use sqlx::Connection;
use vismig::record::{ExecutionStatus, VisibilityRecord};

async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_run_then_resume_copies_every_record_exactly() {
    let work = Work::seeded(10_000, "  batchSize: 200\n  concurrency: 2\n  rate: { recordsPerSecond: 2500 }\n").await;
    let mut child = work.spawn_quiet(&["backfill"]);
    wait_for(|| settled(&work) >= 2_000, "2000 settled records in the checkpoint").await;
    child.kill().unwrap(); // SIGKILL: no chance to save anything more
    child.wait().unwrap();
    let at_kill = settled(&work);
    assert!(at_kill < 10_000, "the kill came before the end ({at_kill})");

    let out = work.run(&["backfill", "--rate", "0"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("resuming from checkpoint"), "{log}");
    assert!(log.contains("resuming shard after cursor"), "the log names the resume cursor: {log}");
    assert!(log.contains("backfill complete"), "{log}");

    let (p, s) = (records(&work.primary()).await, records(&work.secondary()).await);
    assert_eq!(p.len(), 10_000);
    assert_eq!(p, s, "every field of every record is the same in both stores");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_inserts_nothing() {
    let work = Work::seeded(2_000, "").await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2000 inserted"), "{}", text(&out));

    // Same checkpoint: nothing left to do.
    let out = work.run(&["backfill"]);
    assert!(out.status.success());
    assert!(text(&out).contains("already complete"), "{}", text(&out));

    // Checkpoint gone: everything is scanned again, and every record is skipped.
    std::fs::remove_file(work.checkpoint()).unwrap();
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("0 inserted, 0 updated, 0 skipped (newer in secondary), 2000 skipped (already present)"),
        "{log}"
    );
    assert_eq!(records(&work.primary()).await, records(&work.secondary()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_version_guard_keeps_newer_records_and_replaces_older_ones() {
    let work = Work::seeded(1_000, "").await;
    let primary = records(&work.primary()).await;

    // Already in the secondary: a newer version (a live dual write), an older one, and
    // an unversioned copy of a record whose source also has no version.
    let mut newer = primary[0].clone();
    newer.version += 100;
    newer.status = ExecutionStatus::Terminated;
    newer.close_time = Some(newer.start_time + chrono::Duration::seconds(5));
    newer.workflow_type_name = "ChangedByLiveWrite".into();
    let mut older = primary[1].clone();
    older.version -= 1;
    older.workflow_type_name = "Stale".into();
    write(&work.secondary(), &[newer.clone(), older]).await;

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("998 inserted, 1 updated, 1 skipped (newer in secondary), 0 skipped (already present)"),
        "{log}"
    );

    let secondary = records(&work.secondary()).await;
    let by_key =
        |rs: &[VisibilityRecord], r: &VisibilityRecord| rs.iter().find(|x| x.run_id == r.run_id).cloned().unwrap();
    assert_eq!(by_key(&secondary, &newer), newer, "the newer record keeps every value");
    assert_eq!(by_key(&secondary, &primary[1]), primary[1], "the older record was replaced");
    assert_eq!(secondary.len(), 1_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_without_a_version_are_only_inserted_where_absent() {
    let work = Work::new("").await;
    let mut g = vismig::seed::Generator::new(7, chrono::Utc::now());
    let mut source: Vec<VisibilityRecord> = (0..50).map(|_| g.next_record()).collect();
    for r in &mut source {
        r.version = 0; // as read from Cassandra or a pre-1.27 schema
    }
    write(&work.primary(), &source).await;
    let mut present = source[3].clone();
    present.workflow_type_name = "WrittenByTemporal".into();
    present.version = 0;
    write(&work.secondary(), std::slice::from_ref(&present)).await;

    let out = work.run(&["backfill"]);
    assert!(
        text(&out).contains("49 inserted, 0 updated, 0 skipped (newer in secondary), 1 skipped (already present)"),
        "{}",
        text(&out)
    );
    let secondary = records(&work.secondary()).await;
    assert_eq!(secondary.iter().find(|r| r.run_id == present.run_id).unwrap().workflow_type_name, "WrittenByTemporal");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_rows_go_to_the_dead_letter_and_the_rest_is_copied() {
    let work = Work::seeded(1_000, "").await;
    let cols = "namespace_id, run_id, workflow_type_name, workflow_id, start_time, execution_time, status, encoding, search_attributes";
    exec(
        &work.primary(),
        &format!(
            "INSERT INTO executions_visibility ({cols}) VALUES
             ('ns-broken', 'run-bad-json', 'T', 'wf-1', '2024-01-01 00:00:00+00:00', '2024-01-01 00:00:00+00:00', 2, 'Proto3', '[1, 2]'),
             ('ns-broken', 'run-bad-value', 'T', 'wf-0', '2024-01-01 00:00:00+00:00', '2024-01-01 00:00:00+00:00', 2, 'Proto3', '{{\"Keyword01\": {{\"nested\": 1}}}}'),
             ('ns-broken', 'run-bad-status', 'T', 'wf-2', '2024-01-01 00:00:00+00:00', '2024-01-01 00:00:00+00:00', 42, 'Proto3', NULL),
             ('ns-broken', 'run-bad-utf8', 'T', CAST(X'66FF6F' AS TEXT), '2024-01-01 00:00:00+00:00', '2024-01-01 00:00:00+00:00', 2, 'Proto3', NULL),
             ('ns-broken', 'run-bad-time', 'T', 'wf-4', 'yesterday', '2024-01-01 00:00:00+00:00', 2, 'Proto3', NULL),
             ('ns-broken', 'run-good', 'T', 'wf-5', '2024-01-01 00:00:00+00:00', '2024-01-01 00:00:00+00:00', 2, 'Proto3', '{{\"Keyword01\":\"ok\"}}');"
        ),
    )
    .await;

    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "bad rows never stop the run: {log}");
    assert!(log.contains("1001 inserted"), "{log}");
    assert!(log.contains("5 dead-lettered"), "{log}");

    let letters: Vec<serde_json::Value> = std::fs::read_to_string(work.dead_letter())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 5);
    let reason =
        |run: &str| letters.iter().find(|l| l["runId"] == run).unwrap()["reason"].as_str().unwrap().to_string();
    assert_eq!(reason("run-bad-json"), "search_attributes is not a JSON object: [1,2]");
    assert_eq!(reason("run-bad-value"), "search attribute Keyword01: value is a JSON object");
    assert_eq!(reason("run-bad-status"), "unknown status 42");
    assert_eq!(reason("run-bad-utf8"), "workflow_id is not valid UTF-8");
    assert!(reason("run-bad-time").contains("start_time: invalid timestamp \"yesterday\""));
    assert!(letters.iter().all(|l| l["stage"] == "scan" && l["namespaceId"] == "ns-broken"));
    assert_eq!(
        letters.iter().find(|l| l["runId"] == "run-bad-utf8").unwrap()["record"]["workflow_id"]["invalidUtf8Hex"],
        "66ff6f"
    );

    let secondary = records(&work.secondary()).await;
    assert_eq!(secondary.len(), 1_001);
    assert!(secondary.iter().any(|r| r.run_id == "run-good"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_holds() {
    let work = Work::seeded(10_000, "  batchSize: 500\n").await;
    let started = Instant::now();
    let out = work.run(&["backfill", "--rate", "2000"]);
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(elapsed >= Duration::from_millis(4_500), "10k records at 2000/s took only {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_is_what_slows_the_run() {
    // The same 2000 records without a limit, then at 400/s: the limited run must take
    // at least (2000 - one burst of 200) / 400 = 4.5 s, well above the unlimited one.
    let free = Work::seeded(2_000, "  batchSize: 200\n").await;
    let started = Instant::now();
    assert!(free.run(&["backfill", "--rate", "0"]).status.success());
    let unlimited = started.elapsed();

    let limited = Work::seeded(2_000, "  batchSize: 200\n").await;
    let started = Instant::now();
    let out = limited.run(&["backfill", "--rate", "400"]);
    let throttled = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(throttled >= Duration::from_millis(4_500), "2000 records at 400/s took only {throttled:?}");
    assert!(throttled > unlimited * 2, "limited {throttled:?} vs unlimited {unlimited:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_saves_the_checkpoint_and_exits_5_so_a_job_restarts_it() {
    let work = Work::seeded(10_000, "  batchSize: 200\n  rate: { recordsPerSecond: 1500 }\n").await;
    let child = work
        .vismig(&["backfill"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| settled(&work) >= 1_000, "1000 settled records").await;
    let pid = child.id().to_string();
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let log = text(&out);
    // Not 0: a Kubernetes Job counts exit 0 as a completion and would never resume.
    assert_eq!(out.status.code(), Some(5), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("run the same command to resume"), "{log}");
    // Well inside Kubernetes' default 30 s grace period.
    assert!(took < Duration::from_secs(10), "exit took {took:?} after SIGTERM");
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.checkpoint()).unwrap()).unwrap();
    let saved_at = chrono::DateTime::parse_from_rfc3339(checkpoint["updatedAt"].as_str().unwrap()).unwrap();
    let signalled_at = chrono::Utc::now() - chrono::Duration::from_std(took).unwrap();
    assert!(saved_at >= signalled_at, "the checkpoint was saved after the signal ({saved_at} < {signalled_at})");
    let stopped_at = settled(&work);
    assert!(stopped_at > 0 && stopped_at < 10_000, "{stopped_at}");
    assert_eq!(records(&work.secondary()).await.len() as u64, stopped_at, "every settled record is written, no more");

    // The restart resumes: it copies only the rest.
    let out = work.run(&["backfill", "--rate", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.checkpoint()).unwrap()).unwrap();
    let totals = &checkpoint["totals"];
    assert_eq!(totals["inserted"], 10_000, "{checkpoint}");
    for again in ["updated", "skippedNewer", "skippedPresent"] {
        assert_eq!(totals[again], 0, "the stop settled every batch it read: nothing is copied twice ({checkpoint})");
    }
    assert_eq!(records(&work.primary()).await, records(&work.secondary()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_hangs_after_sigterm_is_abandoned_at_the_stop_timeout() {
    let work = Work::seeded(
        5_000,
        "  batchSize: 100\n  concurrency: 1\n  rate: { recordsPerSecond: 1000 }\n  stopTimeout: 2s\n",
    )
    .await;
    let child = work
        .vismig(&["backfill"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(|| settled(&work) >= 500, "500 settled records").await;
    // Another writer holds the secondary's write lock: vismig's next write waits for it
    // (SQLite's busy timeout is 30 s), like a write to a store that stopped answering.
    let mut lock = hold_write_lock(&work.secondary(), "BEGIN EXCLUSIVE").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = settled(&work);
    let pid = child.id().to_string();
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let took = signalled.elapsed();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(5), "{log}");
    assert!(log.contains("abandoning them"), "{log}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "exit took {took:?} (stopTimeout 2s)");
    assert_eq!(settled(&work), before, "nothing was written while the lock was held");
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();

    let out = work.run(&["backfill", "--rate", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(records(&work.primary()).await, records(&work.secondary()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_verify_report_progress_and_differences() {
    let work = Work::seeded(1_000, "").await;
    let out = work.run(&["status"]);
    assert!(text(&out).contains("no checkpoint"), "{}", text(&out));
    assert!(work.run(&["backfill"]).status.success());

    let out = work.run(&["status", "--output", "json"]);
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cp["totals"]["inserted"], 1_000);
    assert!(cp["completedAt"].is_string());
    assert!(text(&work.run(&["status"])).contains("backfill complete"));

    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(": equal"));

    // One record missing from the secondary: verify exits 3 and says where.
    let victim = records(&work.secondary()).await.into_iter().find(|r| r.status == ExecutionStatus::Completed).unwrap();
    exec(&work.secondary(), &format!("DELETE FROM executions_visibility WHERE run_id = '{}'", victim.run_id)).await;
    let out = work.run(&["verify", "--output", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result"], "different");
    let ns = report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == victim.namespace_id.as_str())
        .unwrap();
    let diff = &ns["countDifferences"][0];
    assert_eq!(diff["status"], "Completed");
    assert_eq!(diff["primary"].as_u64().unwrap(), diff["secondary"].as_u64().unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_live_control() {
    // Listening beyond loopback, as in a pod: control needs the bearer token.
    let token = format!("vt-control-token-{}", std::process::id());
    let work = Work::seeded(10_000, "  batchSize: 100\n  concurrency: 1\n  rate: { recordsPerSecond: 400 }\n  metrics: { listen: \"0.0.0.0:0\", controlToken: { env: VT_CONTROL_TOKEN } }\n").await;
    let mut child = work
        .vismig(&["backfill", "--log-format", "json"])
        .env("VT_CONTROL_TOKEN", &token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The listener's address is in the log.
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(a) = v["address"].as_str()
            {
                let _ = addr_tx.send(a.to_string());
            }
        }
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).expect("listener address logged");
    let port = addr.rsplit(':').next().unwrap().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for(|| settled(&work) >= 200, "progress").await;

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        "vismig_records_scanned_total",
        "vismig_records_written_total{outcome=\"inserted\"}",
        "vismig_batch_write_seconds_bucket",
        "vismig_batch_scan_seconds_bucket",
        "vismig_rate_limit_records_per_second 400",
        "vismig_rate_effective_records_per_second 400",
        "vismig_throttle_reason{reason=\"none\"} 1",
        "vismig_throttle_wait_seconds_total",
        "vismig_checkpoint_writes_total",
        "vismig_checkpoint_age_seconds",
        "vismig_records_estimated_total 10000",
        "vismig_progress_ratio",
        "vismig_eta_seconds",
        "vismig_phase{phase=\"backfill\"} 1",
        "vismig_dead_letter_total",
        "\nprocess_resident_memory_bytes ",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);

    // Without the token, or with another, control is refused.
    assert_eq!(http.post(format!("{base}/pause")).send().await.unwrap().status(), 401);
    assert_eq!(http.post(format!("{base}/pause")).bearer_auth("not-the-token-000").send().await.unwrap().status(), 401);
    assert_eq!(http.put(format!("{base}/rate")).body("0").send().await.unwrap().status(), 401);
    let http = reqwest::Client::builder()
        .default_headers(
            [(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap())].into_iter().collect(),
        )
        .build()
        .unwrap();

    // Pause: nothing more is scanned.
    assert_eq!(http.post(format!("{base}/pause")).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let scanned = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("vismig_records_scanned_total"))
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let a = scanned(&http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = scanned(&http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap());
    assert_eq!(a, b, "paused: no records scanned");

    // A bad rate is refused; an unlimited rate and resume let it finish quickly.
    assert_eq!(http.put(format!("{base}/rate")).body("fast").send().await.unwrap().status(), 400);
    assert_eq!(http.put(format!("{base}/rate")).body("0").send().await.unwrap().status(), 200);
    assert_eq!(http.post(format!("{base}/resume")).send().await.unwrap().status(), 200);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success());
    assert_eq!(records(&work.primary()).await, records(&work.secondary()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configs_exit_2_with_one_line_naming_the_field() {
    let work = Work::new("  batchSize: 0\n").await;
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "config error: migration.batchSize: 0 is out of range (1 to 10000)");

    let work = Work::new("").await;
    let out = work.run(&["backfill", "--concurrency", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("migration.concurrency"));

    let out =
        std::process::Command::new(bin()).args(["backfill", "--config", "/nonexistent/vismig.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/vismig.yaml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_database_fails_preflight_with_one_clear_line() {
    let work = Work::new("").await;
    std::fs::remove_file(work.secondary()).unwrap();
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1));
    let log = text(&out);
    assert!(log.contains("secondary: store \"secondary\""), "{log}");
    assert!(log.contains("does not exist (sql.databaseName)"), "{log}");
}

#[test]
fn the_example_configs_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml")
            && let Err(e) = vismig::config::Config::load(&path)
        {
            panic!("{}: {e}", path.display());
        }
    }
}

/// Concurrent batches share transactions (group commit); each still gets its own exact
/// outcomes, and a batch the table already holds, older or newer, is reported as such.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_batches_committed_together_keep_their_own_outcomes() {
    use vismig::store::{Sink, WriteOutcome};
    let work = Work::new("").await;
    let sink = open(&work.secondary()).await;
    let mut g = vismig::seed::Generator::new(11, chrono::Utc::now());
    let batches: Vec<Vec<VisibilityRecord>> = (0..8).map(|_| (0..300).map(|_| g.next_record()).collect()).collect();
    // Batch 0 is in the table already at a newer version, batch 1 at an older one.
    let mut newer = batches[0].clone();
    newer.iter_mut().for_each(|r| r.version += 5);
    let mut older = batches[1].clone();
    older.iter_mut().for_each(|r| r.version -= 1);
    sink.write(&newer).await.unwrap();
    sink.write(&older).await.unwrap();

    // Another process holds SQLite's write lock while the eight batches arrive: the first
    // waits for it in SQLite's busy handler, the others queue behind it.
    let mut holder = hold_write_lock(&work.secondary(), "BEGIN IMMEDIATE").await;
    let commits_before = sink.commits();
    let writes: Vec<_> = batches
        .iter()
        .map(|b| {
            let sink = sink.clone();
            let b = b.clone();
            tokio::spawn(async move { sink.write(&b).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    let outcomes: Vec<Vec<WriteOutcome>> =
        futures::future::join_all(writes).await.into_iter().map(Result::unwrap).collect();
    // The first transaction holds what had arrived when it began, the next one the rest.
    let commits = sink.commits() - commits_before;
    assert!(commits <= 2, "8 concurrent batches took {commits} transactions, not grouped");
    assert!(outcomes[0].iter().all(|o| *o == WriteOutcome::SkippedNewer), "{:?}", &outcomes[0][..3]);
    assert!(outcomes[1].iter().all(|o| *o == WriteOutcome::Updated), "{:?}", &outcomes[1][..3]);
    for o in &outcomes[2..] {
        assert!(o.len() == 300 && o.iter().all(|o| *o == WriteOutcome::Inserted));
    }
    let key_versions = |rs: Vec<VisibilityRecord>| {
        let mut v: Vec<_> = rs.into_iter().map(|r| (r.key(), r.version)).collect();
        v.sort();
        v
    };
    let want = key_versions(newer.into_iter().chain(batches[1..].iter().flatten().cloned()).collect());
    assert_eq!(key_versions(records(&work.secondary()).await), want);
}

/// A connection of "another process" to a SQLite file, holding its write lock in an open
/// transaction (`begin`: BEGIN IMMEDIATE or EXCLUSIVE) until it rolls back.
async fn hold_write_lock(path: &std::path::Path, begin: &'static str) -> sqlx::SqliteConnection {
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://").unwrap().filename(path);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::raw_sql(begin).execute(&mut conn).await.unwrap();
    conn
}
