//! Live dual writes racing the backfill: while vismig copies PostgreSQL -> PostgreSQL,
//! the test plays Temporal with dual visibility writes on: it updates running records,
//! closes others (each time with a higher version) and deletes others, in the primary
//! and then in the secondary, as Temporal's dual writes and retention deletes do. The
//! secondary is reached by vismig through a proxy that adds latency, so that batches
//! stay longer between the scan and the write, where a delete can slip in.
//!
//! Afterwards: no record in the secondary is older than in the primary; the deleted
//! records the backfill brought back (it read them before the delete and wrote them
//! after it) are exactly the `extra` records deep verify reports; `--repair` deletes
//! them, and deep verify is then equal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::Value;
use vismig::record::{ExecutionStatus, RecordKey, VisibilityRecord};

use crate::common::proxy::FaultProxy;
use crate::common::*;

#[derive(Default, Debug)]
struct Writes {
    updated: u64,
    closed: u64,
    deleted: BTreeSet<RecordKey>,
}

#[tokio::test(flavor = "multi_thread")]
async fn live_dual_writes_racing_the_backfill() {
    if !service_up("postgres") {
        return;
    }
    let (a, b) = (db_name("dual_a"), db_name("dual_b"));
    reset_db("postgres", &a, "advanced");
    reset_db("postgres", &b, "advanced");
    let proxy = FaultProxy::start(&pg_addr()).await;
    proxy.set_latency(Duration::from_millis(100));
    let extra = "  batchSize: 100\n  concurrency: 3\n  rate: { recordsPerSecond: 600 }\n  verify: { cutoff: 0s, recheckAfter: 1s }\n";
    let work =
        Work::with_stores(Some(pg_store(&a, "postgres12")), Some(pg_store_at(&b, "postgres12", &proxy.addr())), extra)
            .await;
    // Temporal's own view of both stores: direct connections.
    let direct = Work::with_stores(
        Some(pg_store(&a, "postgres12")),
        Some(pg_store(&b, "postgres12")),
        "  rate: { recordsPerSecond: 0 }\n  verify: { cutoff: 0s, recheckAfter: 1s }\n",
    )
    .await;
    let out = work.run(&["seed", "--records", "3000", "--seed", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let config = vismig::config::Config::load(&direct.config()).unwrap();
    let primary = vismig::store::open_sink(&config, &config.primary()).await.unwrap();
    let secondary = vismig::store::open_sink(&config, &config.secondary()).await.unwrap();
    let mut live: Vec<VisibilityRecord> = all_records(source_of(&direct, true).await).await;

    let child = work
        .vismig(&["backfill"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let seed = std::env::var("VISMIG_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20_261_127u64);
    println!("dual writes: seed {seed} (rerun with VISMIG_FAULT_SEED={seed})");
    let writer = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut w = Writes::default();
            while !done.load(Ordering::SeqCst) && !live.is_empty() {
                let i = rng.random_range(0..live.len());
                let action = rng.random_range(0..10);
                if action < 4 {
                    // Retention (or a namespace delete): gone from both stores.
                    let r = live.swap_remove(i);
                    primary.delete(&[r.key()]).await.unwrap();
                    secondary.delete(&[r.key()]).await.unwrap();
                    w.deleted.insert(r.key());
                } else {
                    let close = action < 7;
                    // A close needs a running record: the next one from i on, if any.
                    let i = if close {
                        (0..live.len())
                            .map(|k| (i + k) % live.len())
                            .find(|&j| live[j].status == ExecutionStatus::Running)
                            .unwrap_or(i)
                    } else {
                        i
                    };
                    let r = &mut live[i];
                    r.version += 1 + rng.random_range(0..3);
                    if close && r.status == ExecutionStatus::Running {
                        r.status = ExecutionStatus::Completed;
                        r.close_time = Some(r.start_time + chrono::Duration::seconds(rng.random_range(1..3_600)));
                        r.history_length = Some(rng.random_range(5..500));
                        w.closed += 1;
                    } else {
                        r.task_queue = format!("live-update-{}", r.version);
                        w.updated += 1;
                    }
                    let r = r.clone();
                    primary.write(std::slice::from_ref(&r)).await.unwrap();
                    secondary.write(std::slice::from_ref(&r)).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            w
        })
    };
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    done.store(true, Ordering::SeqCst);
    let took = started.elapsed();
    let writes = writer.await.unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));

    let p: BTreeMap<RecordKey, VisibilityRecord> =
        all_records(source_of(&direct, true).await).await.into_iter().map(|r| (r.key(), r)).collect();
    let s: BTreeMap<RecordKey, VisibilityRecord> =
        all_records(source_of(&direct, false).await).await.into_iter().map(|r| (r.key(), r)).collect();
    for (key, r) in &p {
        let copy = s.get(key).unwrap_or_else(|| panic!("{key:?} missing from the secondary"));
        assert!(copy.version >= r.version, "{key:?}: the secondary holds version {} < {}", copy.version, r.version);
        assert_eq!(copy, r, "{key:?}");
    }
    let resurrected: BTreeSet<RecordKey> = s.keys().filter(|k| !p.contains_key(k)).cloned().collect();
    assert!(resurrected.is_subset(&writes.deleted), "only deleted records can be extra");
    assert!(
        !resurrected.is_empty(),
        "no delete raced the backfill ({} deletes): the test proves nothing",
        writes.deleted.len()
    );

    let extras = |report: &Value, kind: &str| -> BTreeSet<RecordKey> {
        let mut out = BTreeSet::new();
        for ns in report["namespaces"].as_array().unwrap() {
            for d in ns["differences"].as_array().unwrap() {
                if d["kind"] == kind {
                    out.insert(RecordKey {
                        namespace_id: d["namespaceId"].as_str().unwrap().into(),
                        run_id: d["runId"].as_str().unwrap().into(),
                    });
                }
            }
        }
        out
    };
    let out = direct.run(&["verify", "--deep", "--output", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(extras(&report, "extra"), resurrected, "verify reports exactly the resurrected records");
    assert!(extras(&report, "missing").is_empty() && extras(&report, "different").is_empty(), "{report}");

    let out = direct.run(&["verify", "--repair", "--output", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for ns in report["namespaces"].as_array().unwrap() {
        for d in ns["differences"].as_array().unwrap() {
            assert_eq!(d["repair"], "deleted", "{d}");
        }
    }
    let out = direct.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "after --repair: {}", text(&out));
    let after = all_records(source_of(&direct, false).await).await;
    assert_eq!(after.len(), p.len());
    println!(
        "dual writes racing the backfill ({:.1} s): {} updates, {} closes, {} deletes during the copy; {}; 0 records older in the secondary; {} deleted records resurrected by the backfill, all reported as extra by verify --deep and deleted by --repair; deep verify equal afterwards",
        took.as_secs_f64(),
        writes.updated,
        writes.closed,
        writes.deleted.len(),
        summary.split("records/s): ").nth(1).and_then(|s| s.split("; checkpoint").next()).unwrap_or_default(),
        resurrected.len()
    );
}
