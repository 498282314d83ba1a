//! The health throttle (issue #22) against the real servers of tests/services and the
//! real binary: each signal drives the rate down and back up, a critical level stops the
//! run with exit 5, the same command resumes, and nothing is lost.
//!
//! - latency: the secondary PostgreSQL behind an in-process TCP proxy that delays every
//!   chunk; also the bounds changed live through `PUT /health`;
//! - replica lag: the streaming replica of tests/services (svc/postgres.sh) paused with
//!   `pg_wal_replay_pause()`, first below, then past the critical lag;
//! - OpenSearch: the write thread pool's queue filled by a flood of bulk requests from
//!   the test into an index of its own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::proxy::FaultProxy;
use common::*;

fn migration(rate: u32, health: &str) -> String {
    format!(
        "  batchSize: 100\n  concurrency: 2\n  rate: {{ recordsPerSecond: {rate} }}\n  metrics: {{ listen: \"127.0.0.1:0\" }}\n  verify: {{ cutoff: 0s, recheckAfter: 1s }}\n  health:\n{health}"
    )
}

fn reason(kind: &str) -> String {
    format!("vismig_throttle_reason{{reason=\"{kind}\"}}")
}

const EFFECTIVE: &str = "vismig_rate_effective_records_per_second";

/// Waits until `kind` is the throttle reason and the effective rate is below `rate`.
async fn slowed_by(run: &Running, kind: &str, rate: f64, within: Duration) {
    let what = format!("the rate lowered for {kind}");
    until(run, within, &what, async || run.metric(&reason(kind)).await == 1.0 && run.metric(EFFECTIVE).await < rate)
        .await;
}

/// Waits until nothing holds the copy back and the effective rate is `rate` again.
async fn back_to(run: &Running, rate: f64, within: Duration) {
    let what = format!("the rate back at {rate}");
    until(run, within, &what, async || run.metric(&reason("none")).await == 1.0 && run.metric(EFFECTIVE).await == rate)
        .await;
}

/// Polls `cond` every 100 ms; on time-out, fails with the throttle's metrics and log.
async fn until(run: &Running, within: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond().await {
        if std::time::Instant::now() > deadline {
            let page = run.get("/metrics").await.1;
            let throttle: Vec<&str> = page
                .lines()
                .filter(|l| l.starts_with("vismig_throttle_reason") || l.starts_with("vismig_rate_"))
                .collect();
            let log = run.log();
            let log: Vec<&str> = log.lines().filter(|l| l.contains("health")).collect();
            panic!("timed out after {within:?} waiting for {what}\n{}\n{}", throttle.join("\n"), log.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `vismig status` of the work directory.
fn status(work: &Work) -> String {
    text(&work.run(&["status"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_secondary_lowers_the_rate_and_it_climbs_back_and_the_bounds_change_live() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("health_latency");
    reset_db("postgres", &db, "advanced");
    let proxy = FaultProxy::start(&pg_addr()).await;
    let seeded = Work::seeded(20_000, "").await;
    let health = "    interval: 1s\n    window: 5\n    increase: 100\n    secondaryWriteP95: { max: 1s }\n";
    let work =
        Work::with_stores(None, Some(pg_store_at(&db, "postgres12", &proxy.addr())), &migration(500, health)).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let run = Running::start(&work, &["backfill"]);
    wait_until(Duration::from_secs(60), "1000 settled records", async || settled(&work) >= 1_000).await;
    back_to(&run, 500.0, Duration::from_secs(30)).await;

    // Well above what a busy test machine takes (a 100-record upsert: 0.1-0.4 s).
    proxy.set_latency(Duration::from_millis(1500));
    slowed_by(&run, "secondary_write_latency", 500.0, Duration::from_secs(30)).await;
    let lowered = run.metric(EFFECTIVE).await;
    wait_until(Duration::from_secs(10), "the reason in status", async || {
        status(&work).contains("health throttle: secondary write p95")
    })
    .await;
    let said = status(&work);
    assert!(said.contains("> 1000 ms; rate lowered to"), "{said}");
    assert!(run.log().contains("secondary write p95"), "the reason is logged when it changes");

    proxy.set_latency(Duration::ZERO);
    back_to(&run, 500.0, Duration::from_secs(60)).await;
    assert!(run.log().contains("nothing holds the copy back any more"));

    // The bounds change live: a bound every write exceeds, then none.
    let http = reqwest::Client::new();
    let put = async |body: &str| {
        let resp = http.put(format!("{}/health", run.base)).body(body.to_string()).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    let (code, body) = put("interval: 1s\nwindow: 5\nsecondaryWriteP95: { max: 30s, critical: 1s }\n").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("health.secondaryWriteP95.critical: 1s must be above max 30s"), "{body}");
    assert_eq!(put("interval: 1s\nwindow: 5\nincrease: 100\nsecondaryWriteP95: { max: 1ms }\n").await.0, 200);
    slowed_by(&run, "secondary_write_latency", 500.0, Duration::from_secs(30)).await;
    assert_eq!(put("interval: 1s\nincrease: 100\n").await.0, 200);
    back_to(&run, 500.0, Duration::from_secs(60)).await;

    http.put(format!("{}/rate", run.base)).body("0").send().await.unwrap();
    let (code, stdout, log) = run.finish().await;
    assert_eq!(code, Some(0), "{stdout}\n{log}");
    println!(
        "write p95 over 1 s behind a 1.5 s proxy: rate 500 -> {lowered} records/s, back to 500 once it was fast again"
    );
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len(), 20_000);
    assert_eq!(p, s, "nothing lost, nothing changed");
}

async fn replica(sql: &str) {
    let url = pg_replica_url().expect("checked at the start of the test");
    let pool = sqlx::PgPool::connect(&url).await.expect("the replica of tests/services answers");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&pool).await.unwrap();
    pool.close().await;
}

/// Resumes the replica's replay when the test ends, however it ends: the replica is shared.
struct ResumeReplay;

impl Drop for ResumeReplay {
    fn drop(&mut self) {
        let _ = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(replica("SELECT pg_wal_replay_resume()"));
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_postgres_replica_lowers_the_rate_and_its_critical_lag_stops_the_run_with_exit_5() {
    if !service_up("postgres") || pg_replica_url().is_none() {
        return;
    }
    let db = db_name("health_replica");
    reset_db("postgres", &db, "advanced");
    replica("SELECT pg_wal_replay_resume()").await;
    let _resume = ResumeReplay;
    let seeded = Work::seeded(12_000, "").await;
    let health = "    interval: 1s\n    increase: 100\n    replicaLag: { max: 2s, critical: 8s }\n";
    let work = Work::with_stores(None, Some(pg_store(&db, "postgres12")), &migration(400, health)).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let run = Running::start(&work, &["backfill"]);
    wait_until(Duration::from_secs(60), "500 settled records", async || settled(&work) >= 500).await;
    back_to(&run, 400.0, Duration::from_secs(30)).await;

    replica("SELECT pg_wal_replay_pause()").await;
    slowed_by(&run, "replica_lag", 400.0, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(10), "the reason in status", async || {
        status(&work).contains("health throttle: replica lag")
    })
    .await;
    replica("SELECT pg_wal_replay_resume()").await;
    back_to(&run, 400.0, Duration::from_secs(60)).await;

    // Past the critical lag: the run stops with its checkpoint saved.
    replica("SELECT pg_wal_replay_pause()").await;
    let (code, stdout, log) = run.finish().await;
    assert_eq!(code, Some(5), "{stdout}\n{log}");
    assert!(stdout.contains("stopped at a critical level (replica lag"), "{stdout}");
    assert!(stdout.contains(">= critical 8 s"), "{stdout}");
    assert!(log.contains("critical level reached"), "{log}");
    let said = status(&work);
    assert!(said.contains("health throttle: critical: replica lag"), "{said}");
    let stopped_at = settled(&work);
    assert!(stopped_at < 12_000, "stopped before the end: {stopped_at}");

    // Once the replica caught up, the same command resumes and copies everything.
    replica("SELECT pg_wal_replay_resume()").await;
    work.write_config(&migration(0, health).replace("  metrics: { listen: \"127.0.0.1:0\" }\n", ""));
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    println!(
        "replica paused: the rate went down and back up; past 8 s of lag the run stopped (exit 5) at {stopped_at} settled and resumed to the end"
    );
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len(), 12_000);
    assert_eq!(p, s, "nothing lost, nothing changed");
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Keeps OpenSearch's write thread pool busy: 32 clients sending bulks into `index`
/// until `stop` is set (the pool has as many threads as cores; the rest queue).
fn flood(url: String, index: String, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    let line = serde_json::json!({ "index": { "_index": index } }).to_string();
    let doc = serde_json::json!({ "padding": "x".repeat(200) }).to_string();
    let body: String = (0..500).map(|_| format!("{line}\n{doc}\n")).collect();
    (0..32)
        .map(|_| {
            let (url, body, stop) = (url.clone(), body.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::SeqCst) {
                    let _ = http
                        .post(format!("{url}/_bulk"))
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_opensearch_write_queue_lowers_the_rate_and_it_climbs_back() {
    if !service_up("opensearch") {
        return;
    }
    let (url, index) = search_index("opensearch", "health_queue").await;
    register_seed_attributes(&url, &index).await;
    let flood_index = format!("vismig_flood_{}", std::process::id());
    search_call(
        reqwest::Method::PUT,
        &format!("{url}/{flood_index}"),
        Some(serde_json::json!({ "settings": { "number_of_replicas": 0 } })),
    )
    .await;
    let seeded = Work::seeded(12_000, "").await;
    let health = "    interval: 1s\n    increase: 100\n    writeQueue: { max: 10 }\n";
    let work = Work::with_stores(
        None,
        Some(search_store(&url, &index)),
        &format!("{}{}", migration(400, health), aliases_yaml(1)),
    )
    .await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let run = Running::start(&work, &["backfill"]);
    wait_until(Duration::from_secs(60), "500 settled records", async || settled(&work) >= 500).await;
    back_to(&run, 400.0, Duration::from_secs(30)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let flooders = flood(url.clone(), flood_index.clone(), stop.clone());
    slowed_by(&run, "write_queue", 400.0, Duration::from_secs(30)).await;
    let lowered = run.metric(EFFECTIVE).await;
    wait_until(Duration::from_secs(10), "the reason in status", async || {
        let said = status(&work);
        said.contains("health throttle: write queue") && said.contains("> 10 on node")
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for f in flooders {
        f.await.unwrap();
    }
    drop_index(&url, &flood_index).await;
    back_to(&run, 400.0, Duration::from_secs(60)).await;

    reqwest::Client::new().put(format!("{}/rate", run.base)).body("0").send().await.unwrap();
    let (code, stdout, log) = run.finish().await;
    assert_eq!(code, Some(0), "{stdout}\n{log}");
    println!(
        "OpenSearch write queue over 10 under a bulk flood: rate 400 -> {lowered} records/s, back to 400 after it"
    );
    work.write_config(
        &format!("{}{}", migration(0, health), aliases_yaml(1)).replace("  metrics: { listen: \"127.0.0.1:0\" }\n", ""),
    );
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    drop_index(&url, &index).await;
}

/// tests/services has no MySQL replica: this checks the path to one against the real
/// MariaDB listed as its own replica. It is asked, found to be no replica, and said so
/// with its address; the copy goes on and completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_mysql_server_listed_as_a_replica_that_is_none_is_named_in_a_warning() {
    if !service_up("mariadb") {
        return;
    }
    let db = db_name("health_mysql");
    reset_db("mariadb", &db, "advanced");
    let address = format!(
        "{}:{}",
        std::env::var("VISMIG_TEST_MYSQL_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
        std::env::var("VISMIG_TEST_MYSQL_PORT").unwrap_or_else(|_| "3306".into())
    );
    let seeded = Work::seeded(3_000, "").await;
    let health = format!("    interval: 1s\n    replicaLag: {{ max: 5s }}\n    mysqlReplicas: [\"{address}\"]\n");
    let work = Work::with_stores(None, Some(mysql_store(&db, "mysql8")), &migration(600, &health)).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let run = Running::start(&work, &["backfill"]);
    let (code, stdout, log) = run.finish().await;
    assert_eq!(code, Some(0), "{stdout}\n{log}");
    let warning =
        format!("replica {address} (migration.health.mysqlReplicas): not a replica (SHOW REPLICA STATUS is empty)");
    assert!(log.contains(&warning), "{log}");
    assert!(log.contains("health signals unavailable; the rate holds until they answer"), "{log}");
}
