//! kill -9 at random moments during SQLite->PostgreSQL and PostgreSQL->OpenSearch
//! backfills. Each trial starts a rate-limited backfill into an empty secondary, kills
//! it with SIGKILL after a random delay (seeded; the seeds are printed), resumes it to
//! the end, and checks:
//!
//! - the resumed run exits 0 and deep verify finds no difference;
//! - the records copied twice (the resumed run found them already in the secondary:
//!   `skipped_present`, `updated` or `skipped_newer` in its own outcomes) are exactly
//!   those the killed run had written beyond its last saved checkpoint;
//! - the final totals add up: every settled record counted once.
//!
//! VISMIG_FAULT_SEED=<n> replays a run; VISMIG_FAULT_TRIALS=<n> changes the number of
//! trials per pair (default 10).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::*;

const RECORDS: u64 = 3_000;
/// Records per second of the killed run: 3000 records take at least ~3.7 s.
const RATE: u64 = 750;

fn trials() -> u64 {
    std::env::var("VISMIG_FAULT_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

/// The base seed: VISMIG_FAULT_SEED, or the clock. Trial i uses base + i.
fn base_seed(pair: &str) -> u64 {
    let seed = std::env::var("VISMIG_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 % 1_000_000
    });
    println!("kill -9 {pair}: base seed {seed} (rerun with VISMIG_FAULT_SEED={seed})");
    seed
}

fn checkpoint(work: &Work) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(work.checkpoint()).ok()?).ok()
}

fn total(cp: &Option<Value>, field: &str) -> u64 {
    cp.as_ref().and_then(|c| c["totals"][field].as_u64()).unwrap_or(0)
}

/// One trial's figures, as RELIABILITY.md reports them.
#[derive(Debug)]
struct Trial {
    seed: u64,
    kill_after_ms: u64,
    /// Records the checkpoint had settled when the process died.
    settled_at_kill: u64,
    /// Records in the secondary right after the kill.
    present_at_kill: u64,
    /// Records the resumed run found already in the secondary.
    copied_twice: u64,
}

/// Where a trial copies to, and how to look at it.
trait Pair {
    fn name(&self) -> &'static str;
    /// Empties the secondary.
    async fn reset(&self);
    /// Records in the secondary now.
    async fn count(&self) -> u64;
    /// A fresh work directory for one trial, its config pointing at the pair.
    async fn work(&self) -> Work;
}

async fn run_trial(pair: &impl Pair, seed: u64) -> Trial {
    pair.reset().await;
    let work = pair.work().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Anywhere from during preflight to near the end of the rate-limited copy (which
    // cannot end before ~3.7 s: the first batch is free, the rest at RATE).
    let kill_after_ms = rng.random_range(100..3_300);

    let mut child = work.spawn_quiet(&["backfill", "--rate", &RATE.to_string()]);
    tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
    assert!(child.try_wait().unwrap().is_none(), "seed {seed}: the backfill ended before the kill");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Let the servers finish statements the dead process had already sent.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let at_kill = checkpoint(&work);
    let settled_at_kill = total(&at_kill, "scanned");
    let present_at_kill = pair.count().await;

    let out = work.run(&["backfill", "--rate", "0"]);
    let log = text(&out);
    assert!(out.status.success(), "seed {seed}: the resumed run failed: {log}");
    if at_kill.is_some() {
        assert!(log.contains("resuming from checkpoint"), "seed {seed}: {log}");
    }
    let end = checkpoint(&work);
    assert_eq!(total(&end, "scanned"), RECORDS, "seed {seed}: every record settled");
    let outcomes: u64 =
        ["inserted", "updated", "skippedNewer", "skippedPresent", "deadLetter"].iter().map(|f| total(&end, f)).sum();
    assert_eq!(outcomes, RECORDS, "seed {seed}: each settled record has one outcome: {}", end.unwrap());
    assert_eq!(total(&end, "deadLetter"), 0, "seed {seed}");
    // The resumed run's own outcomes: the final totals less those saved before the kill.
    let again = |f: &str| total(&end, f) - total(&at_kill, f);
    let copied_twice = again("skippedPresent") + again("updated") + again("skippedNewer");
    let unsettled = present_at_kill.checked_sub(total(&at_kill, "inserted")).unwrap_or_else(|| {
        panic!("seed {seed}: the checkpoint settled more records than the secondary held ({present_at_kill})")
    });
    assert_eq!(
        copied_twice, unsettled,
        "seed {seed}: exactly the records written after the last checkpoint are copied again"
    );
    assert_eq!(pair.count().await, RECORDS, "seed {seed}");

    let out = work.run(&["verify", "--deep", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "seed {seed}: deep verify after the resume: {}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result"], "equal");
    Trial { seed, kill_after_ms, settled_at_kill, present_at_kill, copied_twice }
}

async fn run_trials(pair: impl Pair) {
    let base = base_seed(pair.name());
    let started = Instant::now();
    let mut results = Vec::new();
    for i in 0..trials() {
        let trial = run_trial(&pair, base + i).await;
        println!(
            "kill -9 {} trial {:>2}: seed {:>7}, killed after {:>4} ms, {:>4} settled in the checkpoint, {:>4} in the secondary, {:>4} copied twice on resume, deep verify: 0 differences",
            pair.name(),
            i + 1,
            trial.seed,
            trial.kill_after_ms,
            trial.settled_at_kill,
            trial.present_at_kill,
            trial.copied_twice
        );
        results.push(trial);
    }
    let twice: Vec<u64> = results.iter().map(|t| t.copied_twice).collect();
    println!(
        "kill -9 {}: {} trials in {:.0} s, 0 records lost, copied twice per trial {:?} (max {})",
        pair.name(),
        results.len(),
        started.elapsed().as_secs_f64(),
        twice,
        twice.iter().max().unwrap_or(&0)
    );
}

struct SqliteToPostgres {
    db: String,
    template: Work,
}

impl Pair for SqliteToPostgres {
    fn name(&self) -> &'static str {
        "SQLite->PostgreSQL"
    }
    async fn reset(&self) {
        pg_exec(&self.db, "TRUNCATE executions_visibility").await;
    }
    async fn count(&self) -> u64 {
        let pool = sqlx::PgPool::connect(&pg_url(&self.db)).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM executions_visibility").fetch_one(&pool).await.unwrap();
        pool.close().await;
        n as u64
    }
    async fn work(&self) -> Work {
        let work = Work::with_stores(
            None,
            Some(pg_store(&self.db, "postgres12")),
            "  batchSize: 250\n  concurrency: 3\n  verify: { cutoff: 0s, recheckAfter: 1s }\n",
        )
        .await;
        std::fs::copy(self.template.primary(), work.primary()).unwrap();
        work
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_sqlite_to_postgres() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("kill_sqlite_pg");
    reset_db("postgres", &db, "advanced");
    let template = Work::seeded(RECORDS, "").await;
    run_trials(SqliteToPostgres { db, template }).await;
}

struct PostgresToOpenSearch {
    db: String,
    url: String,
    index: String,
}

impl Pair for PostgresToOpenSearch {
    fn name(&self) -> &'static str {
        "PostgreSQL->OpenSearch"
    }
    async fn reset(&self) {
        search_index("opensearch", "kill_pg_os").await;
        register_seed_attributes(&self.url, &self.index).await;
    }
    async fn count(&self) -> u64 {
        search_call(reqwest::Method::POST, &format!("{}/{}/_refresh", self.url, self.index), None).await;
        let v = search_call(reqwest::Method::GET, &format!("{}/{}/_count", self.url, self.index), None).await;
        v["count"].as_u64().unwrap()
    }
    async fn work(&self) -> Work {
        Work::with_stores(
            Some(pg_store(&self.db, "postgres12")),
            Some(search_store(&self.url, &self.index)),
            &format!(
                "  batchSize: 200\n  concurrency: 3\n  verify: {{ cutoff: 0s, recheckAfter: 1s }}\n{}",
                aliases_yaml(7)
            ),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_postgres_to_opensearch() {
    if !service_up("postgres") || !service_up("opensearch") {
        return;
    }
    let db = db_name("kill_pg_os");
    reset_db("postgres", &db, "advanced");
    let (url, index) = search_index("opensearch", "kill_pg_os").await;
    let seeding = Work::with_stores(Some(pg_store(&db, "postgres12")), None, "").await;
    let out = seeding.run(&["seed", "--records", &RECORDS.to_string(), "--seed", "7"]);
    assert!(out.status.success(), "{}", text(&out));
    let pair = PostgresToOpenSearch { db, url: url.clone(), index: index.clone() };
    run_trials(pair).await;
    drop_index(&url, &index).await;
}
