//! A store that goes away for 30 s in the middle of a backfill, then comes back. The
//! shared servers are never stopped: each test reaches its store through an in-process
//! TCP proxy (`common::proxy::FaultProxy`) and cuts that, which drops every open
//! connection and refuses new ones, as a stopped server does. Checked: vismig does not
//! give up, backs off (few attempts, growing delays), `/readyz` answers 503 naming the
//! back-off and `vismig_errors_total{stage,kind="transient"}` counts the attempts while
//! the store is away, it is ready again once the store is back, the run completes with
//! exit 0, and no record is lost. Also: OpenSearch refusing every bulk with 429 for a
//! while, through the pushback proxy.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::proxy::{FaultProxy, pushback_proxy};
use crate::common::*;

const RECORDS: u64 = 4_000;
const OUTAGE: Duration = Duration::from_secs(30);

fn migration(extra: &str) -> String {
    format!(
        "  batchSize: 100\n  concurrency: 2\n  rate: {{ recordsPerSecond: 400 }}\n  metrics: {{ listen: \"127.0.0.1:0\" }}\n  verify: {{ cutoff: 0s, recheckAfter: 1s }}\n{extra}"
    )
}

/// What one outage looked like from outside.
struct Observed {
    settled_at_cut: u64,
    not_ready_after: Duration,
    reason: String,
    attempts: f64,
    ready_after_restore: Duration,
}

/// Runs a backfill, cuts `proxy` once `settled` passes 1000, keeps it cut for 30 s,
/// restores it, and checks what `/readyz` and `/metrics` say meanwhile and after.
/// `stage` is where the errors come from: `write` (secondary) or `scan` (primary).
async fn cut_for_30s(work: &Work, proxy: &FaultProxy, stage: &str) -> Observed {
    let run = Running::start(work, &["backfill"]);
    wait_until(Duration::from_secs(60), "1000 settled records", async || settled(work) >= 1_000).await;
    let (status, _) = run.get("/readyz").await;
    assert_eq!(status, 200, "ready while copying");
    let errors = format!("vismig_errors_total{{kind=\"transient\",stage=\"{stage}\"}}");

    let settled_at_cut = settled(work);
    proxy.cut();
    let cut_at = Instant::now();
    let mut reason = String::new();
    wait_until(Duration::from_secs(20), "/readyz to say not ready", async || {
        let (status, body) = run.get("/readyz").await;
        reason = body.trim().to_string();
        status == 503
    })
    .await;
    let not_ready_after = cut_at.elapsed();
    assert!(reason.contains(&format!("backing off after a {stage} error")), "{reason}");

    // Stays not ready, keeps backing off, never gives up, while the store is away.
    let mut samples = Vec::new();
    while cut_at.elapsed() < OUTAGE {
        let (status, _) = run.get("/readyz").await;
        assert_eq!(status, 503, "not ready during the outage ({:?} in)", cut_at.elapsed());
        samples.push(run.metric(&errors).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let attempts = run.metric(&errors).await;
    assert!(attempts >= 3.0, "{errors} = {attempts}: the attempts are counted");
    // Back-off: with 2 writers or scanners at 200 ms doubling to 15 s, some ten attempts
    // each in 30 s, not hundreds.
    assert!(attempts <= 40.0, "{errors} = {attempts}: no back-off?");
    assert!(samples.windows(2).all(|w| w[0] <= w[1]), "{samples:?}");
    let progress_during = settled(work);

    proxy.restore().await;
    let restored_at = Instant::now();
    wait_until(Duration::from_secs(45), "/readyz to say ready again", async || run.get("/readyz").await.0 == 200).await;
    let ready_after_restore = restored_at.elapsed();
    // Finish the copy unthrottled; the fault is over.
    reqwest::Client::new().put(format!("{}/rate", run.base)).body("0").send().await.unwrap();
    let (code, stdout, log) = run.finish().await;
    assert_eq!(code, Some(0), "{stdout}\n{log}");
    assert!(stdout.contains("backfill complete"), "{stdout}");
    assert!(log.contains("store answered again; continuing"), "{log}");
    assert!(settled(work) > progress_during, "the copy went on after the restore");
    Observed { settled_at_cut, not_ready_after, reason, attempts, ready_after_restore }
}

fn report(what: &str, o: &Observed) {
    println!(
        "{what} cut for {} s at {} settled: /readyz 503 after {:.1} s ({:?}), {} transient errors counted (back-off), ready {:.1} s after the restore, exit 0, 0 records lost",
        OUTAGE.as_secs(),
        o.settled_at_cut,
        o.not_ready_after.as_secs_f64(),
        o.reason,
        o.attempts,
        o.ready_after_restore.as_secs_f64()
    );
}

/// Deep verify exits 0 (the stores are equal, record by record).
fn deep_verify_equal(work: &Work, extra: &str) {
    work.write_config(&migration(extra).replace("  metrics: { listen: \"127.0.0.1:0\" }\n", ""));
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secondary_postgres_away_for_30_s() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("outage_pg_secondary");
    reset_db("postgres", &db, "advanced");
    let proxy = FaultProxy::start(&pg_addr()).await;
    let seeded = Work::seeded(RECORDS, "").await;
    let work = Work::with_stores(None, Some(pg_store_at(&db, "postgres12", &proxy.addr())), &migration("")).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let observed = cut_for_30s(&work, &proxy, "write").await;
    report("secondary PostgreSQL (SQLite->PostgreSQL)", &observed);
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len() as u64, RECORDS);
    assert_eq!(p, s, "nothing lost, nothing changed");
    deep_verify_equal(&work, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_primary_postgres_away_for_30_s() {
    if !service_up("postgres") || !service_up("opensearch") {
        return;
    }
    let db = db_name("outage_pg_primary");
    reset_db("postgres", &db, "advanced");
    let (url, index) = search_index("opensearch", "outage_pg_primary").await;
    register_seed_attributes(&url, &index).await;
    let proxy = FaultProxy::start(&pg_addr()).await;
    let work = Work::with_stores(
        Some(pg_store_at(&db, "postgres12", &proxy.addr())),
        Some(search_store(&url, &index)),
        &migration(&aliases_yaml(5)),
    )
    .await;
    let out = work.run(&["seed", "--records", &RECORDS.to_string(), "--seed", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    let observed = cut_for_30s(&work, &proxy, "scan").await;
    report("primary PostgreSQL (PostgreSQL->OpenSearch)", &observed);
    let count = search_call(reqwest::Method::GET, &format!("{url}/{index}/_count"), None).await;
    assert_eq!(count["count"].as_u64(), Some(RECORDS));
    deep_verify_equal(&work, &aliases_yaml(5));
    drop_index(&url, &index).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secondary_opensearch_away_for_30_s() {
    if !service_up("opensearch") {
        return;
    }
    let (url, index) = search_index("opensearch", "outage_os_secondary").await;
    register_seed_attributes(&url, &index).await;
    let proxy = FaultProxy::start(url.trim_start_matches("http://")).await;
    let seeded = Work::seeded(RECORDS, "").await;
    let work = Work::with_stores(
        None,
        Some(search_store(&format!("http://{}", proxy.addr()), &index)),
        &migration(&aliases_yaml(1)),
    )
    .await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let observed = cut_for_30s(&work, &proxy, "write").await;
    report("secondary OpenSearch (SQLite->OpenSearch)", &observed);
    let count = search_call(reqwest::Method::GET, &format!("{url}/{index}/_count"), None).await;
    assert_eq!(count["count"].as_u64(), Some(RECORDS));
    deep_verify_equal(&work, &aliases_yaml(1));
    drop_index(&url, &index).await;
}

/// The whole cluster refuses every bulk request with 429 for 10 s (the per-item case
/// is `elasticsearch_store::items_pushed_back_with_429_are_retried_and_nothing_is_lost`).
#[tokio::test(flavor = "multi_thread")]
async fn opensearch_refusing_every_bulk_with_429() {
    if !service_up("opensearch") {
        return;
    }
    let (url, index) = search_index("opensearch", "os_429_all").await;
    register_seed_attributes(&url, &index).await;
    let proxy = pushback_proxy(url.clone(), false).await;
    let seeded = Work::seeded(2_000, "").await;
    let work = Work::with_stores(None, Some(search_store(&proxy.url, &index)), &migration(&aliases_yaml(1))).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let run = Running::start(&work, &["backfill"]);
    wait_until(Duration::from_secs(60), "500 settled records", async || settled(&work) >= 500).await;
    proxy.refuse_all.store(true, Ordering::SeqCst);
    let refused_at = Instant::now();
    let bulks_before = proxy.bulks.load(Ordering::SeqCst);
    let mut reason = String::new();
    wait_until(Duration::from_secs(10), "/readyz to say not ready", async || {
        let (status, body) = run.get("/readyz").await;
        reason = body;
        status == 503
    })
    .await;
    assert!(reason.contains("backing off after a write error") && reason.contains("429"), "{reason}");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(refused_at.elapsed())).await;
    let refused = proxy.bulks.load(Ordering::SeqCst) - bulks_before;
    proxy.refuse_all.store(false, Ordering::SeqCst);
    let errors = run.metric("vismig_errors_total{kind=\"transient\",stage=\"write\"}").await;
    assert!(errors >= 2.0, "the refusals are counted: {errors}");
    // Two writers backing off from 200 ms: about 6 attempts each in 10 s.
    assert!(refused <= 20, "{refused} bulk requests in 10 s of 429s: no back-off?");
    wait_until(Duration::from_secs(30), "/readyz to say ready again", async || run.get("/readyz").await.0 == 200).await;
    reqwest::Client::new().put(format!("{}/rate", run.base)).body("0").send().await.unwrap();
    let (code, stdout, log) = run.finish().await;
    assert_eq!(code, Some(0), "{stdout}\n{log}");
    assert!(stdout.contains("2000 inserted"), "{stdout}");
    println!(
        "OpenSearch refusing every bulk with 429 for 10 s: {refused} bulk requests refused (back-off), {errors} transient errors counted, /readyz 503 ({:?}), exit 0, 2000 of 2000 records copied",
        reason.trim()
    );
    let p = all_records(source_of(&work, true).await).await;
    let s = all_records(source_of(&work, false).await).await;
    assert_eq!(p.len(), s.len());
    assert!(!work.dead_letter().exists());
    drop_index(&url, &index).await;
}

/// Writes to the secondary index blocked for 8 s (`index.blocks.write`, what an operator
/// or the cluster at its disk's flood stage sets): vismig waits, never dead-letters.
#[tokio::test(flavor = "multi_thread")]
async fn an_opensearch_write_block_is_waited_out() {
    if !service_up("opensearch") {
        return;
    }
    let (url, index) = search_index("opensearch", "os_write_block").await;
    register_seed_attributes(&url, &index).await;
    let seeded = Work::seeded(2_000, "").await;
    let work = Work::with_stores(None, Some(search_store(&url, &index)), &migration(&aliases_yaml(1))).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let settings = format!("{url}/{index}/_settings");
    let run = Running::start(&work, &["backfill"]);
    wait_until(Duration::from_secs(60), "500 settled records", async || settled(&work) >= 500).await;
    search_call(reqwest::Method::PUT, &settings, Some(serde_json::json!({"index.blocks.write": true}))).await;
    let mut reason = String::new();
    wait_until(Duration::from_secs(15), "/readyz to say not ready", async || {
        let (status, body) = run.get("/readyz").await;
        reason = body;
        status == 503
    })
    .await;
    assert!(reason.contains("cluster_block_exception"), "{reason}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    search_call(reqwest::Method::PUT, &settings, Some(serde_json::json!({"index.blocks.write": null}))).await;
    reqwest::Client::new().put(format!("{}/rate", run.base)).body("0").send().await.unwrap();
    let (code, stdout, log) = run.finish().await;
    assert_eq!(code, Some(0), "{stdout}\n{log}");
    assert!(stdout.contains("2000 inserted") && stdout.contains("0 dead-lettered"), "{stdout}");
    assert!(!work.dead_letter().exists(), "nothing is dead-lettered for a block");
    println!(
        "OpenSearch write block for 8 s: /readyz 503 ({}), exit 0, 2000 of 2000 records copied, 0 dead-lettered",
        reason.trim()
    );
    drop_index(&url, &index).await;
}

/// The secondary index deleted in the middle of the copy: the run stops (exit 1) saying
/// so, nothing goes to the dead letter, and once the index is back the rerun resumes and
/// completes.
#[tokio::test(flavor = "multi_thread")]
async fn the_opensearch_index_deleted_mid_run() {
    if !service_up("opensearch") {
        return;
    }
    let (url, index) = search_index("opensearch", "os_index_gone").await;
    register_seed_attributes(&url, &index).await;
    let seeded = Work::seeded(2_000, "").await;
    let extra = migration(&aliases_yaml(1)).replace("  metrics: { listen: \"127.0.0.1:0\" }\n", "");
    let work = Work::with_stores(None, Some(search_store(&url, &index)), &extra).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let child = work
        .vismig(&["backfill"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "500 settled records", async || settled(&work) >= 500).await;
    drop_index(&url, &index).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("no such index") && log.contains("was the index deleted?"), "{log}");
    assert!(log.contains("checkpoint saved"), "{log}");
    assert!(!work.dead_letter().exists(), "nothing is dead-lettered for a missing index");
    let stopped_at = settled(&work);
    assert!(stopped_at < 2_000, "{stopped_at}");

    search_index("opensearch", "os_index_gone").await;
    register_seed_attributes(&url, &index).await;
    work.write_config(&extra.replace("recordsPerSecond: 400", "recordsPerSecond: 0"));
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resuming from checkpoint"), "{}", text(&out));
    // What was copied before the delete is gone with the index: verify finds it missing,
    // and --repair copies it again (and refreshes, so that the next verify counts it).
    let out = work.run(&["verify", "--repair", "--output", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let repaired = String::from_utf8_lossy(&out.stdout).to_string();
    let out = work.run(&["verify", "--deep", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}\nrepair: {repaired}", String::from_utf8_lossy(&out.stdout));
    println!(
        "OpenSearch index deleted mid-run: exit 1 at {stopped_at} settled naming the missing index, 0 dead-lettered; recreated, resumed, repaired: deep verify equal"
    );
    drop_index(&url, &index).await;
}
