//! The Elasticsearch/OpenSearch store against the real OpenSearch 2 and Elasticsearch 7
//! of tests/services, indices made by Temporal's index template: OS->OS in one cluster,
//! SQLite->OS->PostgreSQL (search attributes renamed both ways), PG->OS, OS->ES 7 across
//! clusters, the version guard, per-item 429s retried, kill -9 and resume, the mapping
//! preflight and deferRefresh. Every field of every record is compared.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use vismig::attribute_names::{Naming, Renamer};
use vismig::record::VisibilityRecord;
use vismig::seed::{Generator, seed_aliases};

fn renamed(records: &[VisibilityRecord], seed: u64, from: Naming, to: Naming) -> Vec<VisibilityRecord> {
    let aliases = seed_aliases(Generator::new(seed, chrono::Utc::now()).namespaces());
    let renamer = Renamer::new(from, to, &aliases, &BTreeMap::new());
    records
        .iter()
        .cloned()
        .map(|mut r| {
            renamer.apply(&mut r).unwrap();
            r
        })
        .collect()
}

/// Every `_source` of an index by `_id`, with `_version`.
async fn raw_documents(url: &str, index: &str) -> BTreeMap<String, (i64, Value)> {
    search_call(Method::POST, &format!("{url}/{index}/_refresh"), None).await;
    let mut out = BTreeMap::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({"size": 1000, "version": true, "sort": [{"RunId": "asc"}, {"WorkflowId": "asc"}]});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let v = search_call(Method::POST, &format!("{url}/{index}/_search"), Some(body)).await;
        let hits = v["hits"]["hits"].as_array().unwrap().clone();
        for h in &hits {
            out.insert(h["_id"].as_str().unwrap().to_string(), (h["_version"].as_i64().unwrap(), h["_source"].clone()));
        }
        if hits.len() < 1000 {
            return out;
        }
        after = Some(hits.last().unwrap()["sort"].clone());
    }
}

fn summary_line(out: &std::process::Output) -> String {
    text(out).lines().find(|l| l.contains("backfill complete")).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_to_opensearch_in_one_cluster_copies_every_document() {
    if !service_up("opensearch") {
        return;
    }
    let pair = IndexPair::new("os_os", true).await;
    let (url, primary, secondary) = (pair.url.clone(), pair.primary.clone(), pair.secondary.clone());
    // The seed's first layout: one datastore, indices.visibility -> indices.secondary_visibility.
    let work = Work::new("").await;
    let (scheme, host) = url.split_once("://").unwrap();
    std::fs::write(
        work.config(),
        format!(
            "persistence:\n  visibilityStore: es-visibility\n  datastores:\n    es-visibility:\n      elasticsearch:\n        version: v7\n        url: {{ scheme: {scheme}, host: \"{host}\" }}\n        indices: {{ visibility: {primary}, secondary_visibility: {secondary} }}\nmigration:\n  checkpoint: {{ type: file, path: \"{}\" }}\n  deadLetter: {{ path: \"{}\" }}\n  metrics: {{ listen: \"\" }}\n  batchSize: 400\n",
            work.checkpoint().display(),
            work.dead_letter().display()
        ),
    )
    .unwrap();
    let out = work.run(&["seed", "--records", "3000", "--seed", "11"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(summary_line(&out).contains("3000 inserted"), "{}", text(&out));

    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len(), 3000);
    assert_eq!(p, s, "every field of every record, versions included");
    // Byte for byte: the same ids, external versions and _source documents.
    let (a, b) = (raw_documents(&url, &primary).await, raw_documents(&url, &secondary).await);
    assert_eq!(a.len(), 3000);
    assert_eq!(a, b);
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    pair.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_opensearch_to_postgres_round_trips_every_field() {
    if !service_up("opensearch") || !service_up("postgres") {
        return;
    }
    let (url, index) = search_index("opensearch", "sqlite_os_pg").await;
    register_seed_attributes(&url, &index).await;
    // SQLite (field names) -> OpenSearch (the user's names).
    let seeded = Work::seeded(2_000, "").await;
    let to_os = Work::with_stores(None, Some(search_store(&url, &index)), &aliases_yaml(1)).await;
    std::fs::copy(seeded.primary(), to_os.primary()).unwrap();
    let out = to_os.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(summary_line(&out).contains("2000 inserted"), "{}", text(&out));
    let original = all_records(source_of(&to_os, true).await).await;
    let in_os = all_records(source_of(&to_os, false).await).await;
    assert_eq!(in_os, renamed(&original, 1, Naming::FieldNames, Naming::UserNames));
    let doc = raw_documents(&url, &index).await;
    let with_customer = doc.values().find(|(_, d)| d.get("CustomerId").is_some()).expect("a document with CustomerId");
    assert!(with_customer.1.get("Keyword01").is_none(), "stored under the user's name");
    let out = to_os.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // OpenSearch -> PostgreSQL: back to field names; the records equal the SQLite originals.
    let db = db_name("os_to_pg");
    reset_db("postgres", &db, "advanced");
    let to_pg =
        Work::with_stores(Some(search_store(&url, &index)), Some(pg_store(&db, "postgres12")), &aliases_yaml(1)).await;
    let out = to_pg.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    let in_pg = all_records(source_of(&to_pg, false).await).await;
    assert_eq!(in_pg, original, "SQLite -> OpenSearch -> PostgreSQL loses and changes nothing");
    let out = to_pg.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    drop_index(&url, &index).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_opensearch_copies_every_field() {
    if !service_up("opensearch") || !service_up("postgres") {
        return;
    }
    let db = db_name("pg_to_os");
    reset_db("postgres", &db, "advanced");
    let (url, index) = search_index("opensearch", "pg_to_os").await;
    register_seed_attributes(&url, &index).await;
    let work =
        Work::with_stores(Some(pg_store(&db, "postgres12")), Some(search_store(&url, &index)), &aliases_yaml(7)).await;
    let out = work.run(&["seed", "--records", "2500", "--seed", "7"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["backfill", "--concurrency", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let p = all_records(source_of(&work, true).await).await;
    let s = all_records(source_of(&work, false).await).await;
    assert_eq!(p.len(), 2500);
    assert_eq!(s, renamed(&p, 7, Naming::FieldNames, Naming::UserNames));
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    drop_index(&url, &index).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_to_elasticsearch_7_across_clusters() {
    if !service_up("opensearch") || !service_up("elasticsearch") {
        return;
    }
    let (os, primary) = search_index("opensearch", "os_to_es7").await;
    let (es, secondary) = search_index("elasticsearch", "os_to_es7").await;
    register_seed_attributes(&es, &secondary).await;
    let work = Work::with_stores(Some(search_store(&os, &primary)), Some(search_store(&es, &secondary)), "").await;
    let out = work.run(&["seed", "--records", "1500", "--seed", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len(), 1500);
    assert_eq!(p, s);
    assert_eq!(raw_documents(&os, &primary).await, raw_documents(&es, &secondary).await);
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    drop_index(&os, &primary).await;
    drop_index(&es, &secondary).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_version_guard_holds_on_opensearch() {
    if !service_up("opensearch") {
        return;
    }
    let pair = IndexPair::new("os_versions", true).await;
    let (url, primary, secondary) = (pair.url.clone(), pair.primary.clone(), pair.secondary.clone());
    let work = Work::with_stores(Some(search_store(&url, &primary)), Some(search_store(&url, &secondary)), "").await;
    let out = work.run(&["seed", "--records", "400", "--seed", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    let source = all_records(source_of(&work, true).await).await;
    // In the secondary before the backfill: 30 newer, 30 at the same version, 30 older,
    // each with a task queue that shows whether the backfill replaced it.
    let sink = sink_of(&work, false).await;
    let mut pre = Vec::new();
    for (i, r) in source.iter().take(90).enumerate() {
        let mut r = r.clone();
        r.task_queue = format!("pre-{i}");
        r.version += match i / 30 {
            0 => 10,
            1 => 0,
            _ => -1,
        };
        pre.push(r);
    }
    sink.write(&pre).await.unwrap();
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    let line = summary_line(&out);
    assert!(line.contains("310 inserted, 30 updated"), "{line}");
    assert!(line.contains("30 skipped (newer in secondary), 30 skipped (already present)"), "{line}");
    let after: BTreeMap<_, _> =
        all_records(source_of(&work, false).await).await.into_iter().map(|r| (r.key(), r)).collect();
    for (i, p) in pre.iter().enumerate() {
        let s = &after[&p.key()];
        match i / 30 {
            0 | 1 => assert_eq!(s, p, "record {i}: a newer or equal version stays"),
            _ => assert_eq!(s, &source[i], "record {i}: an older version is replaced"),
        }
    }
    pair.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_attribute_named_like_a_record_field_fails_only_its_record() {
    if !service_up("opensearch") {
        return;
    }
    let pair = IndexPair::new("os_shadow", true).await;
    let (url, primary, secondary) = (pair.url.clone(), pair.primary.clone(), pair.secondary.clone());
    let work = Work::with_stores(Some(search_store(&url, &primary)), Some(search_store(&url, &secondary)), "").await;
    let sink = sink_of(&work, false).await;
    let mut g = vismig::seed::Generator::new(9, chrono::Utc::now());
    let mut batch: Vec<VisibilityRecord> = (0..3).map(|_| g.next_record()).collect();
    let sa = batch[1].search_attributes.get_or_insert_with(Default::default);
    sa.0.insert("RunId".into(), vismig::record::SearchAttributeValue::String("another run".into()));
    let outcomes = sink.write(&batch).await.unwrap();
    assert_eq!(outcomes[0], vismig::store::WriteOutcome::Inserted);
    assert_eq!(outcomes[2], vismig::store::WriteOutcome::Inserted);
    assert!(
        matches!(&outcomes[1], vismig::store::WriteOutcome::Failed(reason) if reason.contains("\"RunId\"")),
        "{:?}",
        outcomes[1]
    );
    let docs = raw_documents(&url, &secondary).await;
    assert_eq!(docs.len(), 2);
    assert!(docs.values().all(|(_, src)| src["RunId"] != "another run"));
    pair.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn items_pushed_back_with_429_are_retried_and_nothing_is_lost() {
    if !service_up("opensearch") {
        return;
    }
    let pair = IndexPair::new("os_429", true).await;
    let (url, primary, secondary) = (pair.url.clone(), pair.primary.clone(), pair.secondary.clone());
    let proxy = proxy::pushback_proxy(url.clone(), true).await;
    let rejected: Arc<AtomicU64> = proxy.rejected.clone();
    let work = Work::with_stores(
        Some(search_store(&url, &primary)),
        Some(search_store(&proxy.url, &secondary)),
        "  batchSize: 300\n",
    )
    .await;
    let out = work.run(&["seed", "--records", "2000", "--seed", "9"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["backfill", "--concurrency", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(summary_line(&out).contains("2000 inserted"), "{}", text(&out));
    assert!(rejected.load(Ordering::SeqCst) > 600, "the proxy pushed back {} times", rejected.load(Ordering::SeqCst));
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p, s, "every pushed-back item was written in the end");
    assert!(!work.dead_letter().exists() || std::fs::read_to_string(work.dead_letter()).unwrap().is_empty());
    pair.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_to_opensearch_resumes_after_kill_9() {
    if !service_up("opensearch") {
        return;
    }
    let pair = IndexPair::new("os_kill", true).await;
    let (url, primary, secondary) = (pair.url.clone(), pair.primary.clone(), pair.secondary.clone());
    let work = Work::with_stores(
        Some(search_store(&url, &primary)),
        Some(search_store(&url, &secondary)),
        "  batchSize: 200\n  rate: { recordsPerSecond: 1500 }\n",
    )
    .await;
    let out = work.run(&["seed", "--records", "5000", "--seed", "13"]);
    assert!(out.status.success(), "{}", text(&out));
    kill_9_after(&work, 1500).await;
    let before = settled(&work);
    assert!((1500..5000).contains(&before), "killed mid-run at {before}");
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resuming from checkpoint"), "{}", text(&out));
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len(), 5000);
    assert_eq!(p, s);
    pair.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_lists_attributes_the_secondary_cannot_hold() {
    if !service_up("opensearch") || !service_up("postgres") {
        return;
    }
    let pair = IndexPair::new("os_pre", false).await;
    let (url, primary, secondary) = (pair.url.clone(), pair.primary.clone(), pair.secondary.clone());
    let work = Work::with_stores(Some(search_store(&url, &primary)), Some(search_store(&url, &secondary)), "").await;
    let out = work.run(&["seed", "--records", "200", "--seed", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    // No mapping for the seed's attributes in the secondary: refused before any write.
    let out = work.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    for name in ["CustomerId", "Amount", "Score", "Priority", "DueTime", "Note", "Tags"] {
        assert!(t.contains(&format!("no mapping for search attribute {name}")), "{name}: {t}");
    }
    assert!(t.contains("temporal operator search-attribute create"), "{t}");
    assert_eq!(raw_documents(&url, &secondary).await.len(), 0);

    // OpenSearch -> PostgreSQL without an alias map: each attribute named, per namespace.
    let db = db_name("os_pre_pg");
    reset_db("postgres", &db, "advanced");
    let to_pg = Work::with_stores(Some(search_store(&url, &primary)), Some(pg_store(&db, "postgres12")), "").await;
    let out = to_pg.run(&["backfill"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("search attribute CustomerId of namespace"), "{t}");
    assert!(t.contains("has no SQL field in its namespace's alias map"), "{t}");
    pair.drop().await;
}

async fn bulk_settings(url: &str, index: &str) -> (Value, Value, Value) {
    let v = search_call(Method::GET, &format!("{url}/{index}/_settings?flat_settings=true"), None).await;
    let s = &v[index]["settings"];
    (
        s["index.refresh_interval"].clone(),
        s["index.number_of_replicas"].clone(),
        s["index.auto_expand_replicas"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn defer_refresh_turns_refresh_off_and_restores_it_even_after_a_crash() {
    if !service_up("opensearch") {
        return;
    }
    let pair = IndexPair::new("os_defer", true).await;
    let (url, primary, secondary) = (pair.url.clone(), pair.primary.clone(), pair.secondary.clone());
    let before = bulk_settings(&url, &secondary).await;
    assert_eq!(before.2, json!("0-2"), "Temporal's template expands replicas");
    let dir = tempfile::tempdir().unwrap();
    let dynamic = dir.path().join("dynamicconfig.yaml");
    std::fs::write(&dynamic, "system.secondaryVisibilityWritingMode:\n  - value: \"dual\"\n").unwrap();
    let extra = |defer: bool| {
        format!(
            "  batchSize: 200\n  rate: {{ recordsPerSecond: 1500 }}\n  bulkLoad: {{ deferRefresh: {defer} }}\n  flip: {{ dynamicConfigFile: \"{}\" }}\n",
            dynamic.display()
        )
    };
    let work =
        Work::with_stores(Some(search_store(&url, &primary)), Some(search_store(&url, &secondary)), &extra(true)).await;
    let out = work.run(&["seed", "--records", "5000", "--seed", "17"]);
    assert!(out.status.success(), "{}", text(&out));
    kill_9_after(&work, 1500).await;
    let during = bulk_settings(&url, &secondary).await;
    assert_eq!(during, (json!("-1"), json!("0"), json!("false")), "bulk-load settings while copying");
    // Restarted with deferring off: the saved settings are still restored at the end,
    // and the run waits for the health they allow (green: replicas expand 0-2).
    work.write_config(&extra(false));
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(bulk_settings(&url, &secondary).await, before, "the index settings are as before the bulk load");
    let log = text(&out);
    assert!(log.contains("replicas restored after the bulk load; the index is green"), "{log}");
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p, s);
    pair.drop().await;
}

/// deferRefresh on an index with one replica and auto-expansion off, on the one-node
/// test cluster: the replica can never be placed. The run restores the replica count,
/// waits for the health that allows (yellow), says why the index cannot be green, and
/// completes. Waiting for green instead times out with a message naming the health and
/// the unassigned shard.
#[tokio::test(flavor = "multi_thread")]
async fn defer_refresh_restores_a_replica_a_one_node_cluster_cannot_place() {
    if !service_up("opensearch") {
        return;
    }
    let (url, index) = search_index("opensearch", "os_defer_replica").await;
    register_seed_attributes(&url, &index).await;
    let settings = json!({"index.number_of_replicas": 1, "index.auto_expand_replicas": false});
    search_call(Method::PUT, &format!("{url}/{index}/_settings"), Some(settings)).await;
    let before = bulk_settings(&url, &index).await;
    assert_eq!((before.1.clone(), before.2.clone()), (json!("1"), json!("false")));
    let dir = tempfile::tempdir().unwrap();
    let dynamic = dir.path().join("dynamicconfig.yaml");
    std::fs::write(&dynamic, "system.secondaryVisibilityWritingMode:\n  - value: \"dual\"\n").unwrap();
    let extra = format!(
        "  bulkLoad: {{ deferRefresh: true }}\n  flip: {{ dynamicConfigFile: \"{}\" }}\n{}",
        dynamic.display(),
        aliases_yaml(1)
    );
    let seeded = Work::seeded(500, "").await;
    let work = Work::with_stores(None, Some(search_store(&url, &index)), &extra).await;
    std::fs::copy(seeded.primary(), work.primary()).unwrap();
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(bulk_settings(&url, &index).await, before, "the replica is restored");
    assert!(
        log.contains("the index can only be yellow on this cluster: 1 replicas per shard but 1 data node(s)"),
        "{log}"
    );
    let store = vismig::store::elasticsearch::ElasticsearchStore::open(
        "test",
        &es_config(&url, &index),
        &vismig::config::StoreRef { datastore: "test".into(), es_index_key: None },
    )
    .unwrap();
    assert_eq!(store.wait_for_health("yellow", std::time::Duration::from_secs(5)).await.unwrap(), "yellow");
    let err = store.wait_for_health("green", std::time::Duration::from_secs(2)).await.unwrap_err().to_string();
    assert!(err.contains("the index is yellow, not green") && err.contains("1 unassigned"), "{err}");
    println!("deferRefresh with 1 replica on 1 node: restored, waited for yellow, said why; green timed out: {err}");
    drop_index(&url, &index).await;
}

/// A proxy in front of the primary that loses every third scroll page, six times in
/// all, after the server has moved the scroll on: the answer never reaches vismig
/// (HTTP 502 instead).
async fn lossy_scroll_proxy(upstream: String) -> (String, Arc<AtomicU64>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method as M, StatusCode, Uri};
    let lost = Arc::new(AtomicU64::new(0));
    let state = Arc::new((upstream, lost.clone(), AtomicU64::new(0)));
    let handler = move |method: M, uri: Uri, headers: HeaderMap, body: Bytes| {
        let state = state.clone();
        async move {
            let (upstream, lost, scrolls) = (&state.0, &state.1, &state.2);
            let target = format!("{upstream}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/json");
            let m = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
            let resp = reqwest::Client::new()
                .request(m, &target)
                .header("content-type", ctype)
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let bytes = resp.bytes().await.unwrap().to_vec();
            if uri.path() == "/_search/scroll"
                && method == M::POST
                && scrolls.fetch_add(1, Ordering::SeqCst) % 3 == 2
                && lost.load(Ordering::SeqCst) < 6
            {
                lost.fetch_add(1, Ordering::SeqCst);
                return (StatusCode::BAD_GATEWAY, b"upstream connection reset".to_vec());
            }
            (status, bytes)
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), lost)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scroll_page_lost_in_flight_restarts_its_shard_and_nothing_is_skipped() {
    if !service_up("opensearch") {
        return;
    }
    let pair = IndexPair::new("os_lost", true).await;
    let (url, primary, secondary) = (pair.url.clone(), pair.primary.clone(), pair.secondary.clone());
    let seeding = Work::with_stores(Some(search_store(&url, &primary)), None, "").await;
    let out = seeding.run(&["seed", "--records", "3000", "--seed", "19"]);
    assert!(out.status.success(), "{}", text(&out));
    let (proxy, lost) = lossy_scroll_proxy(url.clone()).await;
    // One shard per namespace, pages of 100: about six scroll pages per shard.
    let work = Work::with_stores(
        Some(search_store(&proxy, &primary)),
        Some(search_store(&url, &secondary)),
        "  batchSize: 100\n  concurrency: 1\n",
    )
    .await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lost.load(Ordering::SeqCst) >= 5, "the proxy lost {} pages", lost.load(Ordering::SeqCst));
    assert!(text(&out).contains("reading the shard again from its start"), "{}", text(&out));
    let (p, s) = (all_records(source_of(&seeding, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len(), 3000);
    assert_eq!(p, s, "no page lost with its scroll was skipped");
    pair.drop().await;
}
