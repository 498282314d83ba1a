//! A fatal error at full speed must end the run (issue #20, liveness). No rate limit, 4
//! shards, 500-record batches: the scanners are ahead of the writers, so when the
//! writers die (the secondary's index or table gone, a permission revoked) or the
//! checkpoint cannot be saved, scanners are waiting to hand over their next batch. Each
//! test makes the fault happen there, and checks that vismig exits 1 within
//! `migration.stopTimeout` of it, naming the cause, with its checkpoint intact.
//!
//! How the fault lands mid-run on a machine of any speed: the copy starts at 2,000
//! records/s, is paused (`POST /pause`) once the checkpoint has settled 1,000 records
//! and is quiet, the fault is made, the rate lifted (`PUT /rate 0`) and the copy
//! resumed (`POST /resume`). The clock runs from the resume to the process's exit.

use std::time::{Duration, Instant};

use crate::common::*;

const RECORDS: u64 = 20_000;
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn full_speed(extra: &str) -> String {
    format!(
        "  batchSize: 500\n  concurrency: 4\n  rate: {{ recordsPerSecond: 2000 }}\n  stopTimeout: {}s\n  metrics: {{ listen: \"127.0.0.1:0\" }}\n{extra}",
        STOP_TIMEOUT.as_secs()
    )
}

/// What one fatal fault looked like from outside.
struct Ended {
    code: Option<i32>,
    log: String,
    /// From the resume (the fault meets the writers) to the process's exit.
    to_exit: Duration,
    settled_at_fault: u64,
}

/// Whether process `pid` (a child of this one) has exited: gone, or a zombie.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Runs the backfill of `work` as described at the top, calls `fault` while it is
/// paused, and waits at most `STOP_TIMEOUT` + 30 s for it to end.
async fn fatal_at_full_speed(work: &Work, command: std::process::Command, fault: impl AsyncFnOnce()) -> Ended {
    let run = Running::spawn(command);
    wait_until(Duration::from_secs(120), "1000 settled records", async || settled(work) >= 1_000).await;
    let http = reqwest::Client::new();
    http.post(format!("{}/pause", run.base)).send().await.unwrap().error_for_status().unwrap();
    // Quiet: the batches in flight at the pause are written and the checkpoint saved.
    let mut last = settled(work);
    let mut still_since = Instant::now();
    wait_until(Duration::from_secs(30), "the paused copy to settle", async || {
        let now = settled(work);
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
        still_since.elapsed() > Duration::from_millis(2_500)
    })
    .await;
    let settled_at_fault = settled(work);
    assert!(settled_at_fault < RECORDS - 5_000, "the copy is far from done at the fault: {settled_at_fault}");
    fault().await;
    http.put(format!("{}/rate", run.base)).body("0").send().await.unwrap().error_for_status().unwrap();
    http.post(format!("{}/resume", run.base)).send().await.unwrap().error_for_status().unwrap();
    let resumed = Instant::now();
    let limit = STOP_TIMEOUT + Duration::from_secs(30);
    while !exited(run.pid()) {
        if resumed.elapsed() > limit {
            let log = run.log();
            drop(run); // kills it
            panic!("vismig still running {limit:?} after a fatal fault at full speed (hung); log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let to_exit = resumed.elapsed();
    let (code, stdout, log) = run.finish().await;
    Ended { code, log: format!("{stdout}\n{log}"), to_exit, settled_at_fault }
}

/// The checks every fatal fault shares: exit 1 within stopTimeout naming `cause`, the
/// checkpoint whole and not past what was settled, nothing dead-lettered.
fn check_ended(what: &str, work: &Work, ended: &Ended, cause: &str) {
    assert_eq!(ended.code, Some(1), "{what}: {}", ended.log);
    assert!(ended.log.contains(cause), "{what}: the cause {cause:?} is named: {}", ended.log);
    assert!(
        ended.to_exit <= STOP_TIMEOUT,
        "{what}: exit {:?} after the fault, migration.stopTimeout is {STOP_TIMEOUT:?}",
        ended.to_exit
    );
    let cp: serde_json::Value = serde_json::from_slice(&std::fs::read(work.checkpoint()).unwrap()).unwrap();
    let settled = cp["totals"]["scanned"].as_u64().unwrap();
    assert!(settled >= ended.settled_at_fault && settled < RECORDS, "{what}: checkpoint settled {settled}");
    assert!(cp["completedAt"].is_null(), "{what}: the checkpoint does not say complete");
    assert!(!work.dead_letter().exists(), "{what}: nothing is dead-lettered for a store fault");
    println!(
        "{what}: exit 1 {:.2} s after the fault (stopTimeout {} s), at {} settled of {RECORDS}, checkpoint intact at {settled}",
        ended.to_exit.as_secs_f64(),
        STOP_TIMEOUT.as_secs(),
        ended.settled_at_fault,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_index_deleted_at_full_speed() {
    if !service_up("opensearch") {
        return;
    }
    let (url, index) = search_index("opensearch", "fatal_os_gone").await;
    register_seed_attributes(&url, &index).await;
    let seeded = Work::seeded(RECORDS, "").await;
    let work = Work::with_stores(None, Some(search_store(&url, &index)), &full_speed(&aliases_yaml(1))).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let ended = fatal_at_full_speed(&work, work.vismig(&["backfill"]), async || drop_index(&url, &index).await).await;
    check_ended("OpenSearch index deleted", &work, &ended, "was the index deleted?");
    drop_index(&url, &index).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_table_dropped_at_full_speed() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("fatal_pg_dropped");
    reset_db("postgres", &db, "advanced");
    let seeded = Work::seeded(RECORDS, "").await;
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), &full_speed("")).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let ended = fatal_at_full_speed(&work, work.vismig(&["backfill"]), async || {
        pg_exec(&db, "DROP TABLE executions_visibility").await
    })
    .await;
    check_ended("PostgreSQL secondary table dropped", &work, &ended, "does not exist");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_permission_revoked_at_full_speed() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("fatal_pg_revoked");
    let role = format!("vt_fatal_revoked_{}", std::process::id());
    reset_db("postgres", &db, "advanced");
    pg_exec(
        &db,
        &format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'revoked'; \
             GRANT USAGE ON SCHEMA public TO {role}; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};"
        ),
    )
    .await;
    let store = format!(
        "{{ pluginName: postgres12, databaseName: {db}, connectAddr: \"{}\", user: {role}, password: revoked }}",
        pg_addr()
    );
    let seeded = Work::seeded(RECORDS, "").await;
    let work = Work::with_stores(None, Some(store), &full_speed("")).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let ended = fatal_at_full_speed(&work, work.vismig(&["backfill"]), async || {
        pg_exec(&db, &format!("REVOKE INSERT, UPDATE ON executions_visibility FROM {role}")).await
    })
    .await;
    check_ended("PostgreSQL permission revoked", &work, &ended, "permission denied");
    pg_exec(&db, &format!("DROP OWNED BY {role}")).await;
    pg_exec("postgres", &format!("DROP DATABASE {db} WITH (FORCE)")).await;
    pg_exec("postgres", &format!("DROP ROLE {role}")).await;
}

/// The checkpoint's directory made read-only mid-run. vismig runs as root in CI, and
/// root writes anywhere: the child is started without CAP_DAC_OVERRIDE (dropped from its
/// capability bounding set before exec), so the directory's mode binds it as it binds an
/// operator's non-root pod on a read-only volume. After the fault the directory is made
/// writable again and the rerun resumes from the checkpoint left behind, to the end.
#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_directory_unwritable_at_full_speed() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !service_up("postgres") {
        return;
    }
    let db = db_name("fatal_cp_readonly");
    reset_db("postgres", &db, "advanced");
    let seeded = Work::seeded(RECORDS, "").await;
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), &full_speed("")).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    // The checkpoint in a directory of its own (`work.checkpoint()` is a link to it).
    let state = work.path("state");
    std::fs::create_dir(&state).unwrap();
    let config = std::fs::read_to_string(work.config()).unwrap();
    let moved = state.join("checkpoint.json");
    let config = config.replace(&work.checkpoint().display().to_string(), &moved.display().to_string());
    std::fs::write(work.config(), config).unwrap();
    std::os::unix::fs::symlink(&moved, work.checkpoint()).unwrap();

    let mut command = work.vismig(&["backfill"]);
    // SAFETY: prctl is async-signal-safe; it only changes the child's own capabilities.
    unsafe {
        command.pre_exec(|| {
            // linux/capability.h: CAP_DAC_OVERRIDE 1, CAP_DAC_READ_SEARCH 2.
            for cap in [1, 2] {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut at_fault = Vec::new();
    let ended = fatal_at_full_speed(&work, command, async || {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o555)).unwrap();
        at_fault = std::fs::read(&moved).unwrap();
    })
    .await;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    check_ended("checkpoint directory read-only", &work, &ended, "cannot save checkpoint");
    assert!(ended.log.contains("is intact"), "{}", ended.log);
    assert_eq!(std::fs::read(&moved).unwrap(), at_fault, "the checkpoint is the one saved before the fault");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1, "no temporary file left behind");

    let out = work.run(&["backfill", "--rate", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resuming from checkpoint"), "{}", text(&out));
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len() as u64, RECORDS);
    assert_eq!(p, s, "resumed from the checkpoint left behind: nothing lost");
}
