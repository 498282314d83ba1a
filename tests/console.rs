//! The operator's console through the real binary, on a seeded SQLite pair and on
//! PostgreSQL -> PostgreSQL: `plan` (its exit codes, and both stores byte for byte
//! unchanged after it), `status` per namespace with the overall line first, and `verify`
//! verdict first; namespaces named from `migration.namespaceNames`.

mod common;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use common::*;
use serde_json::Value;
use vismig::record::{ExecutionStatus, VisibilityRecord};

/// The seed's namespace ids (the same for every run of a seed).
fn seed_namespaces(seed: u64) -> Vec<String> {
    vismig::seed::Generator::new(seed, chrono::Utc::now()).namespaces().to_vec()
}

/// Names the first two namespaces of the seed; the others stay ids.
fn named(ids: &[String]) -> String {
    format!(
        "  verify: {{ cutoff: 1s, recheckAfter: 1s }}\n  namespaceNames: {{ orders: \"{}\", payments: \"{}\" }}\n",
        ids[0], ids[1]
    )
}

fn per_namespace(records: &[VisibilityRecord]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts.entry(r.namespace_id.clone()).or_default() += 1;
    }
    counts
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The stdout line that starts with `prefix`.
fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{out}"))
}

fn entry<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|n| n["namespace"] == id).unwrap_or_else(|| panic!("{id} not in {list}"))
}

/// A SQLite store as bytes and as rows: the file's hash (after folding the WAL in), and
/// the table's row count, highest `_version` and every record.
#[derive(Debug, PartialEq)]
struct SqliteFingerprint {
    file: u64,
    wal: u64,
    rows: usize,
    max_version: i64,
    records: Vec<VisibilityRecord>,
}

async fn sqlite_fingerprint(path: &Path) -> SqliteFingerprint {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).unwrap().hash(&mut hasher);
    let wal = std::fs::metadata(path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
    let records = records(path).await;
    SqliteFingerprint {
        file: hasher.finish(),
        wal,
        rows: records.len(),
        max_version: records.iter().map(|r| r.version).max().unwrap_or(0),
        records,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_status_and_verify_on_sqlite() {
    let ids = seed_namespaces(1);
    let work = Work::seeded(2_000, &named(&ids)).await;
    let primary = per_namespace(&records(&work.primary()).await);
    let (orders, payments) = (format!("orders ({})", ids[0]), format!("payments ({})", ids[1]));
    // Both files complete in themselves, so that their bytes say everything.
    exec(&work.secondary(), "PRAGMA wal_checkpoint(TRUNCATE);").await;
    let before = (sqlite_fingerprint(&work.primary()).await, sqlite_fingerprint(&work.secondary()).await);

    // plan: the verdict, a line per namespace with its name, the copy and the durations.
    let out = work.run(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = stdout(&out);
    assert_eq!(plan.lines().next().unwrap(), "plan: a backfill can start (nothing was written)", "{plan}");
    let n = primary[&ids[0]];
    assert!(line(&plan, &format!("  {orders}")).contains(&format!(" {n} in the primary (")), "{plan}");
    assert!(line(&plan, &format!("  {orders}")).ends_with(", 0 in the secondary"), "{plan}");
    assert!(line(&plan, &format!("  {}", ids[2])).contains(&format!(" {} in the primary", primary[&ids[2]])));
    assert!(line(&plan, "  total").contains("2000 in the primary, 0 in the secondary"), "{plan}");
    assert!(line(&plan, "copy: a new backfill of ~2000 records; ").contains(" shards, "), "{plan}");
    assert!(line(&plan, "read probe: ").ends_with(" records/s"), "{plan}");
    assert!(line(&plan, "expected duration: at least ").contains("estimated"), "{plan}");
    let out = work.run(&["plan", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = json(&out);
    assert_eq!(plan["ready"], true);
    assert_eq!(plan["problems"], serde_json::json!([]));
    assert_eq!(plan["namespaces"].as_array().unwrap().len(), 5);
    let ns = entry(&plan["namespaces"], &ids[0]);
    assert_eq!(
        (ns["name"].as_str(), ns["primaryTotal"].as_u64(), ns["secondaryTotal"].as_u64()),
        (Some("orders"), Some(n), Some(0))
    );
    assert!(entry(&plan["namespaces"], &ids[2]).get("name").is_none(), "no name: none in the JSON");
    assert_eq!((plan["copy"]["start"].as_str(), plan["copy"]["records"].as_u64()), (Some("new"), Some(2_000)));
    assert!(plan["probe"]["records"].as_u64().unwrap() > 0, "{plan}");
    assert!(plan["duration"]["expectedSeconds"].is_number(), "{plan}");

    // plan wrote nothing: the stores byte for byte, no checkpoint, dead letter or verify result.
    let after = (sqlite_fingerprint(&work.primary()).await, sqlite_fingerprint(&work.secondary()).await);
    assert!(before == after, "plan changed a store");
    assert_eq!(after.0.rows, 2_000);
    for file in [work.checkpoint(), work.dead_letter(), work.path("last-verify.json")] {
        assert!(!file.exists(), "plan wrote {}", file.display());
    }

    // status before any backfill: the overall line first, then every namespace at 0.
    let out = work.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = stdout(&out);
    assert!(status.starts_with("no checkpoint at "), "{status}");
    assert!(status.lines().next().unwrap().ends_with("; 0 dead-lettered; last verify: none"), "{status}");
    assert!(line(&status, &format!("  {orders}")).contains(&format!(" 0 of {n} ")), "{status}");

    assert!(work.run(&["backfill"]).status.success());
    let out = work.run(&["status"]);
    let status = stdout(&out);
    let first = status.lines().next().unwrap();
    assert!(first.starts_with("backfill complete: 2000 of ~2000 records settled (100%), 0 dead-lettered"), "{status}");
    assert!(first.ends_with("last verify: none"), "{status}");
    assert!(status.lines().nth(1).unwrap().starts_with("  namespace "), "{status}");
    let row = line(&status, &format!("  {orders}"));
    assert!(row.contains(&format!(" {n} of {n} ")) && row.contains(" 100% "), "{row}");
    assert!(row.ends_with("not verified"), "{row}");
    assert!(line(&status, &format!("  {} ", ids[2])).contains(&format!("{0} of {0}", primary[&ids[2]])));
    assert!(line(&status, "  shards: ").contains("(--shards lists"), "{status}");
    assert!(!status.contains("  shard   0 "), "the shard table is behind --shards: {status}");
    assert!(stdout(&work.run(&["status", "--shards"])).contains("  shard   0 done "));
    let out = work.run(&["status", "--output", "json"]);
    let status = json(&out);
    assert!(status["shards"].as_array().is_some_and(|s| !s.is_empty()), "the checkpoint's fields stay");
    assert_eq!(
        status["namespaceProgress"][&ids[0]]["settled"].as_u64(),
        Some(n),
        "the checkpoint's per-namespace count"
    );
    assert!(status["completedAt"].is_string());
    assert_eq!(
        (status["overall"]["state"].as_str(), status["overall"]["settled"].as_u64()),
        (Some("complete"), Some(2_000))
    );
    let ns = entry(&status["perNamespace"], &ids[0]);
    assert_eq!(
        (ns["name"].as_str(), ns["settled"].as_u64(), ns["estimated"].as_u64()),
        (Some("orders"), Some(n), Some(n))
    );
    assert_eq!(ns["lastVerify"], Value::Null);

    // verify: the verdict line, one line per namespace with its name, no details when equal.
    let out = work.run(&["verify", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    let compared = |id: &str| -> u64 {
        entry(&report["namespaces"], id)["primary"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum()
    };
    assert_eq!(entry(&report["namespaces"], &ids[0])["name"], "orders", "the JSON gains the name beside the id");
    assert_eq!(report["recordsCompared"].as_u64(), Some(ids.iter().map(|id| compared(id)).sum()));
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let verify = stdout(&out);
    let total = report["recordsCompared"].as_u64().unwrap();
    assert!(
        verify.starts_with(&format!("verify (counts): equal, 5 namespaces and {total} records compared, cut-off ")),
        "{verify}"
    );
    assert_eq!(verify.lines().count(), 6, "the verdict and one line per namespace: {verify}");
    assert!(line(&verify, &format!("  {orders}")).ends_with(&format!("  equal, {} records", compared(&ids[0]))));
    assert!(line(&verify, &format!("  {} ", ids[3])).ends_with(&format!("  equal, {} records", compared(&ids[3]))));
    let details = stdout(&work.run(&["verify", "--details"]));
    assert!(details.contains("\ndetails:\n") && details.contains(&format!("\n{orders}:\n")), "{details}");
    let status = stdout(&work.run(&["status"]));
    assert!(line(&status, &format!("  {orders}")).ends_with("equal"), "{status}");

    // One record missing in payments: verdict different, details only for payments.
    let victim = records(&work.secondary())
        .await
        .into_iter()
        .find(|r| r.namespace_id == ids[1] && r.status == ExecutionStatus::Completed && r.close_time.is_some())
        .unwrap();
    exec(&work.secondary(), &format!("DELETE FROM executions_visibility WHERE run_id = '{}'", victim.run_id)).await;
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let verify = stdout(&out);
    assert!(verify.starts_with("verify (counts): different, 5 namespaces (1 differ) and "), "{verify}");
    let completed =
        report["namespaces"].as_array().unwrap().iter().find(|n| n["namespace"] == ids[1].as_str()).unwrap()["primary"]
            ["Completed"]
            .as_u64()
            .unwrap();
    assert!(
        line(&verify, &format!("  {payments}"))
            .contains(&format!("DIFFERENT: Completed {completed} in the primary, {} in the secondary", completed - 1)),
        "{verify}"
    );
    assert!(line(&verify, &format!("  {orders}")).contains("  equal, "), "{verify}");
    assert!(verify.contains(&format!("details of the namespaces that differ:\n{payments}:\n")), "{verify}");
    assert!(!verify.contains(&format!("\n{orders}:\n")), "no details for an equal namespace: {verify}");
    let out = work.run(&["verify", "--output", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let report = json(&out);
    assert_eq!(report["result"], "different");
    let ns = entry(&report["namespaces"], &ids[1]);
    assert_eq!(
        (ns["name"].as_str(), ns["countDifferences"][0]["status"].as_str()),
        (Some("payments"), Some("Completed"))
    );
    let status = stdout(&work.run(&["status"]));
    assert!(status.lines().next().unwrap().contains("last verify: different (counts) at "), "{status}");
    assert!(line(&status, &format!("  {payments}")).ends_with("different"), "{status}");
    assert!(line(&status, &format!("  {orders}")).ends_with("equal"), "{status}");

    // plan after the copy: nothing to do, still exit 0.
    let out = work.run(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(line(&stdout(&out), "copy: nothing to do: checkpoint ").contains("complete (2000 records settled"));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_of_a_running_backfill_has_rates_and_etas_per_namespace() {
    let ids = seed_namespaces(1);
    let work =
        Work::seeded(2_000, &format!("{}  batchSize: 50\n  rate: {{ recordsPerSecond: 300 }}\n", named(&ids))).await;
    let mut child = work.spawn_quiet(&["backfill"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while settled(&work) < 700 {
        assert!(std::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let text_status = stdout(&work.run(&["status"]));
    let json_status = json(&work.run(&["status", "--output", "json"]));
    child.kill().unwrap();
    child.wait().unwrap();

    let first = text_status.lines().next().unwrap();
    assert!(first.starts_with("backfill in progress: ") && first.contains(" records/s, ETA "), "{text_status}");
    let moving: Vec<&str> = text_status.lines().filter(|l| l.starts_with("  ") && l.contains(" records/s ")).collect();
    assert!(!moving.is_empty(), "a namespace being copied shows its rate and ETA: {text_status}");
    assert!(json_status["overall"]["recordsPerSecond"].as_f64().unwrap() > 0.0, "{json_status}");
    assert!(json_status["overall"]["etaSeconds"].as_f64().is_some(), "{json_status}");
    let rows = json_status["perNamespace"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().any(|r| r["recordsPerSecond"].as_f64().is_some_and(|r| r > 0.0)), "{json_status}");
    let settled_sum: u64 = rows.iter().map(|r| r["settled"].as_u64().unwrap()).sum();
    assert!(settled_sum >= 700, "per-namespace counts cover what the run settled: {json_status}");
    assert!(json_status["perNamespace"].to_string().contains("\"name\":\"orders\""), "{json_status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_logged_and_counted_under_the_namespace_name() {
    let ids = seed_namespaces(1);
    let work = Work::seeded(1_000, &named(&ids)).await;
    let cols = "namespace_id, run_id, workflow_type_name, workflow_id, start_time, execution_time, status, encoding, search_attributes";
    exec(
        &work.primary(),
        &format!(
            "INSERT INTO executions_visibility ({cols}) VALUES ('{}', 'run-bad-json', 'T', 'wf-1', '2024-01-01 00:00:00+00:00', '2024-01-01 00:00:00+00:00', 2, 'Proto3', '[1, 2]');",
            ids[0]
        ),
    )
    .await;
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let letter = log.lines().find(|l| l.contains("record sent to the dead letter")).expect("a dead-letter log line");
    assert!(letter.contains(&format!("\"namespace\":\"orders ({})\"", ids[0])), "{letter}");
    let status = stdout(&work.run(&["status"]));
    assert!(status.lines().next().unwrap().contains(", 1 dead-lettered; "), "{status}");
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let orders = words(line(&status, &format!("  orders ({})", ids[0])));
    assert_eq!(orders[orders.len() - 3..], ["1", "not", "verified"], "{status}");
    let payments = words(line(&status, &format!("  payments ({})", ids[1])));
    assert_eq!(payments[payments.len() - 3..], ["0", "not", "verified"], "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_exits_1_with_one_line_per_reason_and_2_for_bad_config() {
    // A checkpoint of another run (other namespaces): a backfill would refuse it.
    let work = Work::seeded(1_000, "").await;
    assert!(work.run(&["backfill"]).status.success());
    let checkpoint = std::fs::read(work.checkpoint()).unwrap();
    work.write_config("  namespaces: [\"some-other-namespace\"]\n");
    // And a secondary without its table.
    exec(&work.secondary(), "DROP TABLE executions_visibility;").await;
    let out = work.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let plan = stdout(&out);
    let first = plan.lines().next().unwrap();
    assert!(
        first.starts_with("plan: a backfill cannot start (") && first.ends_with("; nothing was written)"),
        "{plan}"
    );
    let problems: Vec<&str> = plan.lines().filter(|l| l.starts_with("  problem: ")).collect();
    assert!(problems.iter().any(|p| p.starts_with("  problem: secondary: ")), "{plan}");
    assert!(problems.iter().any(|p| p.contains("belongs to another run")), "{plan}");
    assert_eq!(problems.len(), 2, "one line per reason, none repeating another: {plan}");
    assert!(first.starts_with("plan: a backfill cannot start (2 problems; "), "{plan}");
    let out = work.run(&["plan", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let json = json(&out);
    assert_eq!(json["ready"], false);
    assert_eq!(json["problems"].as_array().unwrap().len(), problems.len());
    assert_eq!(std::fs::read(work.checkpoint()).unwrap(), checkpoint, "plan never touches the checkpoint");

    // A secondary that is not there: the primary's namespaces are still listed.
    work.write_config("");
    let config = std::fs::read_to_string(work.config()).unwrap();
    std::fs::write(work.config(), config.replace("secondary.db", "missing.db")).unwrap();
    let out = work.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let plan = stdout(&out);
    assert!(line(&plan, "  total").ends_with("1000 in the primary, ? in the secondary"), "{plan}");
    assert!(line(&plan, "  problem: secondary: ").contains("missing.db does not exist"), "{plan}");
    assert!(!work.path("missing.db").exists(), "plan created the secondary's file");

    work.write_config("  batchSize: 0\n");
    let out = work.run(&["plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("migration.batchSize"), "{}", text(&out));
}

/// Row count, highest `_version`, and an md5 of every row of a PostgreSQL visibility
/// table followed by an md5 of its index definitions (a bulk load's deferral drops them).
async fn pg_fingerprint(db: &str) -> (i64, i64, String) {
    pg_row(
        db,
        "SELECT count(*)::bigint, coalesce(max(_version), 0)::bigint, coalesce(md5(string_agg(t::text, '|' ORDER BY namespace_id, run_id)), '') \
         || ':' || (SELECT md5(string_agg(indexdef, '|' ORDER BY indexname)) FROM pg_indexes WHERE tablename = 'executions_visibility') \
         FROM executions_visibility t",
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_status_and_verify_on_postgres_to_postgres() {
    if !service_up("postgres") {
        return;
    }
    let (a, b) = (db_name("console_a"), db_name("console_b"));
    reset_db("postgres", &a, "advanced");
    reset_db("postgres", &b, "advanced");
    let ids = seed_namespaces(7);
    let work =
        Work::with_stores(Some(pg_store(&a, "postgres12")), Some(pg_store(&b, "postgres12")), &named(&ids)).await;
    let out = work.run(&["seed", "--records", "3000", "--seed", "7"]);
    assert!(out.status.success(), "{}", text(&out));
    let primary = per_namespace(&all_records(source_of(&work, true).await).await);
    let (orders, payments) = (format!("orders ({})", ids[0]), format!("payments ({})", ids[1]));
    // A record already in the secondary (a dual write): plan says what the secondary holds.
    let dual = all_records(source_of(&work, true).await).await.into_iter().find(|r| r.namespace_id == ids[0]).unwrap();
    sink_of(&work, false).await.write(std::slice::from_ref(&dual)).await.unwrap();

    let before = (pg_fingerprint(&a).await, pg_fingerprint(&b).await);
    let out = work.run(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = stdout(&out);
    assert_eq!(plan.lines().next().unwrap(), "plan: a backfill can start (nothing was written)", "{plan}");
    assert!(line(&plan, "primary   postgres").contains(", schema "), "{plan}");
    let n = primary[&ids[0]];
    let row = line(&plan, &format!("  {orders}"));
    assert!(row.contains(&format!(" {n} in the primary (")) && row.ends_with(", 1 in the secondary"), "{plan}");
    assert!(line(&plan, "  total").contains("3000 in the primary, 1 in the secondary"), "{plan}");
    assert!(line(&plan, "copy: a new backfill of ~").contains(" shards, "), "{plan}");
    assert!(line(&plan, "read probe: ").ends_with(" records/s"), "{plan}");
    let out = work.run(&["plan", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let plan = json(&out);
    assert_eq!(plan["ready"], true);
    assert_eq!(entry(&plan["namespaces"], &ids[1])["name"], "payments");
    assert_eq!(entry(&plan["namespaces"], &ids[1])["primaryTotal"].as_u64(), Some(primary[&ids[1]]));
    let after = (pg_fingerprint(&a).await, pg_fingerprint(&b).await);
    assert_eq!(before, after, "plan changed a store");
    assert_eq!((after.0.0, after.1.0), (3_000, 1));
    assert!(!work.checkpoint().exists(), "plan wrote a checkpoint");

    assert!(work.run(&["backfill"]).status.success());
    let status = stdout(&work.run(&["status"]));
    assert!(status.starts_with("backfill complete: 3000 of ~"), "{status}");
    assert!(line(&status, &format!("  {payments}")).contains(&format!(" {0} of {0} ", primary[&ids[1]])), "{status}");
    let status = json(&work.run(&["status", "--output", "json"]));
    assert_eq!(entry(&status["perNamespace"], &ids[0])["settled"].as_u64(), Some(n));
    assert_eq!(status["overall"]["state"], "complete");

    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let verify = stdout(&out);
    assert!(verify.starts_with("verify (counts): equal, 5 namespaces and "), "{verify}");
    assert_eq!(verify.lines().count(), 6, "{verify}");
    assert!(line(&verify, &format!("  {orders}")).contains("  equal, "), "{verify}");

    pg_exec(&b, &format!("DELETE FROM executions_visibility WHERE run_id = '{}'", dual.run_id)).await;
    let out = work.run(&["verify", "--output", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["result"], "different");
    assert_eq!(entry(&report["namespaces"], &ids[0])["name"], "orders");
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3));
    let verify = stdout(&out);
    assert!(verify.starts_with("verify (counts): different, 5 namespaces (1 differ) and "), "{verify}");
    assert!(line(&verify, &format!("  {orders}")).contains("  DIFFERENT: "), "{verify}");
    assert!(verify.contains(&format!("details of the namespaces that differ:\n{orders}:\n")), "{verify}");
    let status = stdout(&work.run(&["status"]));
    assert!(line(&status, &format!("  {orders}")).ends_with("different"), "{status}");
    assert!(line(&status, &format!("  {payments}")).ends_with("equal"), "{status}");
}
