//! Writing the index: `impl Sink` on `_bulk` requests (NDJSON built straight into one
//! buffer, per-item results turned into outcomes, the items the server pushed back
//! retried alone), and the bulk load's settings, deferred and then restored.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use super::ElasticsearchStore;
use super::client::{Client, error_reason};
use super::codec::{Source, doc_id, is_base_field};
use crate::record::{RecordKey, SearchAttributeType, VisibilityRecord};
use crate::retry::Backoff;
use crate::store::{IndexDef, Sink, Store, StoreError, StoreResult, WriteOutcome};

#[async_trait]
impl Sink for ElasticsearchStore {
    fn max_batch(&self) -> usize {
        // About 1-2 MB of NDJSON: large enough to amortise the round trip, well under
        // http.max_content_length and Temporal's own 16 MiB bulk size.
        2000
    }

    async fn write(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>> {
        bulk_write(&self.client, &self.index, records, Guard::Newer).await.map_err(|e| self.err("bulk write", e))
    }

    async fn overwrite(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>> {
        bulk_write(&self.client, &self.index, records, Guard::SameOrNewer)
            .await
            .map_err(|e| self.err("bulk write (repair)", e))
    }

    async fn delete(&self, keys: &[RecordKey]) -> StoreResult<u64> {
        let found = self.read(keys).await?;
        if found.is_empty() {
            return Ok(0);
        }
        bulk_delete(&self.client, &self.index, &found).await.map_err(|e| self.err("bulk delete", e))
    }

    async fn flush(&self) -> StoreResult<()> {
        self.request(Method::POST, &self.index_path("_refresh"), None, "refreshing the index").await.map(drop)
    }

    async fn register_search_attributes(&self, attributes: &[(String, SearchAttributeType)]) -> StoreResult<()> {
        self.add_to_mapping(attributes).await
    }

    async fn search_attribute_fields(&self) -> StoreResult<Option<BTreeSet<String>>> {
        self.attribute_fields().await.map(Some)
    }

    /// `bulkLoad.deferRefresh`: one "index" to defer, the index's refresh and replica
    /// settings, saved as they are now so the rebuild restores exactly them.
    async fn deferrable_indexes(&self) -> StoreResult<Vec<IndexDef>> {
        let now = self.settings().await?;
        let saved: serde_json::Map<String, Value> =
            BULK_SETTINGS.iter().map(|(k, _)| (k.to_string(), now.get(*k).cloned().unwrap_or(Value::Null))).collect();
        Ok(vec![IndexDef { name: format!("{} settings", self.index), definition: Value::Object(saved).to_string() }])
    }

    async fn drop_index(&self, _index: &IndexDef) -> StoreResult<()> {
        let bulk: serde_json::Map<String, Value> =
            BULK_SETTINGS.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
        self.put_settings(&Value::Object(bulk), "turning refresh and replicas off for the bulk load").await
    }

    async fn build_index(&self, index: &IndexDef) -> StoreResult<()> {
        let saved: Value = serde_json::from_str(&index.definition).map_err(|e| {
            StoreError::Permanent(format!("{}: saved settings {:?} are not JSON: {e}", self.describe(), index.name))
        })?;
        // The checkpoint file is not trusted to carry arbitrary settings: only those the
        // bulk load changed may be restored from it.
        let known = saved.as_object().is_some_and(|m| m.keys().all(|k| BULK_SETTINGS.iter().any(|(b, _)| b == k)));
        if !known {
            return Err(StoreError::Permanent(format!(
                "{}: saved settings {:?} of the checkpoint hold more than {}; refusing to apply them (was the checkpoint edited?)",
                self.describe(),
                index.name,
                BULK_SETTINGS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            )));
        }
        // Null restores a setting that was not set before to the index default.
        self.put_settings(&saved, "restoring refresh and replicas after the bulk load").await?;
        self.flush().await?;
        self.wait_for_restored_replicas().await
    }
}

/// Attempts for items the server pushes back. After that the batch fails as transient
/// and the writer's own retry takes over; items already written then come back as
/// "present".
const ITEM_ATTEMPTS: u32 = 9;

/// Between attempts for pushed-back items: 200 ms doubling to 15 s, jittered (at most
/// about 40 s of waiting over the [`ITEM_ATTEMPTS`]).
fn item_backoff() -> Backoff {
    Backoff {
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(15),
        max_attempts: Some(ITEM_ATTEMPTS),
        max_elapsed: None,
    }
}

/// What one bulk item's result means.
#[derive(Debug, PartialEq)]
enum ItemResult {
    Done(WriteOutcome),
    Retry(String),
    /// The index, not the document, is at fault (it is gone): the whole write fails,
    /// rather than every document going to the dead letter.
    Store(String),
}

/// Which documents a write may replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    /// Temporal's own: `external` versions replace only an older document, and a record
    /// without a version is created where absent.
    Newer,
    /// `verify --repair`: `external_gte` also replaces a document at the same version (a
    /// copy that differs from the primary's is corruption); a record without a version
    /// replaces only a document at version 1, what `create` gave it, never one that
    /// Temporal wrote at its task id.
    SameOrNewer,
}

async fn bulk_write(
    client: &Client,
    index: &str,
    records: &[VisibilityRecord],
    guard: Guard,
) -> Result<Vec<WriteOutcome>, StoreError> {
    let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; records.len()];
    let mut pending: Vec<usize> = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        match shadowed_field(r) {
            Some(name) => {
                outcomes[i] = Some(WriteOutcome::Failed(format!(
                    "search attribute {name:?} has the name of a field Temporal writes itself; the document cannot hold both"
                )))
            }
            None => pending.push(i),
        }
    }
    if pending.is_empty() {
        return Ok(outcomes.into_iter().map(|o| o.expect("every item has an outcome")).collect());
    }
    let mut schedule = item_backoff().start();
    loop {
        let attempt = schedule.failures() + 1;
        let body = index_body(index, pending.iter().map(|&i| &records[i]), guard);
        // A whole request pushed back (429, 5xx, a timeout, no connection) before any item
        // was written goes back to the caller, whose retry backs off where the operator
        // sees it (`/readyz`, `vismig_errors_total`). Once some items are written, it is
        // retried here for the items still pending, so their outcomes are kept.
        let last_reason = match client.bulk(body).await {
            Err(e @ StoreError::Transient(_)) if attempt == 1 => return Err(e),
            Ok(response) => {
                let items = response["items"].as_array().ok_or_else(|| {
                    StoreError::Permanent(format!("_bulk answered without items: {}", error_reason(&response)))
                })?;
                if items.len() != pending.len() {
                    return Err(StoreError::Permanent(format!(
                        "_bulk answered {} items for {} documents",
                        items.len(),
                        pending.len()
                    )));
                }
                let mut retry = Vec::new();
                let mut last_reason = String::new();
                for (&i, item) in pending.iter().zip(items) {
                    match index_result(item, records[i].has_version() || guard == Guard::SameOrNewer) {
                        ItemResult::Done(o) => outcomes[i] = Some(o),
                        ItemResult::Retry(reason) => {
                            last_reason = reason;
                            retry.push(i);
                        }
                        ItemResult::Store(reason) => return Err(StoreError::Unusable(reason)),
                    }
                }
                // Every item pushed back on the first attempt (a write block, a full
                // cluster): the caller's retry backs off where the operator sees it.
                if attempt == 1 && retry.len() == pending.len() && !retry.is_empty() {
                    return Err(StoreError::Transient(format!("every item pushed back: {last_reason}")));
                }
                pending = retry;
                last_reason
            }
            Err(StoreError::Transient(reason)) => reason,
            Err(e) => return Err(e),
        };
        if pending.is_empty() {
            return Ok(outcomes.into_iter().map(|o| o.expect("every item has an outcome")).collect());
        }
        tracing::debug!(items = pending.len(), attempt, reason = %last_reason, "bulk items pushed back; retrying them");
        let Some(delay) = schedule.next_delay() else {
            return Err(StoreError::Transient(format!(
                "{} of {} bulk items still pushed back after {ITEM_ATTEMPTS} attempts: {last_reason}",
                pending.len(),
                records.len()
            )));
        };
        tokio::time::sleep(delay).await;
    }
}

/// One action line and one source line per record: `index` at the external version
/// when the source has one (as Temporal writes), else `create` (insert if absent;
/// `create` cannot carry an external version); under `Guard::SameOrNewer`, `index` with
/// `external_gte` (at version 1 for a record without one).
fn index_body<'a>(index: &str, records: impl Iterator<Item = &'a VisibilityRecord>, guard: Guard) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 * 1024);
    for r in records {
        let id = doc_id(&r.workflow_id, &r.run_id);
        let action = match guard {
            Guard::Newer if r.has_version() => {
                Action::Index { _index: index, _id: &id, version: r.version, version_type: "external" }
            }
            Guard::Newer => Action::Create { _index: index, _id: &id },
            Guard::SameOrNewer => {
                Action::Index { _index: index, _id: &id, version: r.version.max(1), version_type: "external_gte" }
            }
        };
        serde_json::to_writer(&mut body, &action).expect("JSON to memory");
        body.push(b'\n');
        serde_json::to_writer(&mut body, &Source(r)).expect("JSON to memory");
        body.push(b'\n');
    }
    body
}

/// A search attribute named like one of the document's own fields (Temporal refuses to
/// register one; a SQL row could still carry it in its JSON).
fn shadowed_field(r: &VisibilityRecord) -> Option<&str> {
    r.search_attributes.as_ref()?.0.keys().map(String::as_str).find(|name| is_base_field(name))
}

/// A bulk action line.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Action<'a> {
    Index { _index: &'a str, _id: &'a str, version: i64, version_type: &'static str },
    Create { _index: &'a str, _id: &'a str },
}

fn index_result(item: &Value, versioned: bool) -> ItemResult {
    let result = item.get("index").or_else(|| item.get("create")).unwrap_or(&Value::Null);
    let status = result["status"].as_u64().unwrap_or(0);
    match result["error"]["type"].as_str() {
        // A write block (set by an operator, or by the cluster at the disk's flood stage,
        // then answered 429) is lifted in time: wait for it, never dead-letter.
        Some("cluster_block_exception") => return ItemResult::Retry(error_reason(result)),
        // The user's role may not write this index: every record would be refused alike,
        // so the run stops naming the permission instead of dead-lettering them all.
        Some("security_exception") => {
            return ItemResult::Store(format!(
                "{} (grant the user's role this permission on the index; README, \"Elasticsearch/OpenSearch permissions\")",
                error_reason(result)
            ));
        }
        Some("index_not_found_exception") => {
            return ItemResult::Store(format!(
                "{} (was the index deleted? create it again from Temporal's index template, register the search attributes, and rerun to resume)",
                error_reason(result)
            ));
        }
        _ => {}
    }
    match status {
        201 => ItemResult::Done(WriteOutcome::Inserted),
        200 => {
            ItemResult::Done(if result["result"] == "created" { WriteOutcome::Inserted } else { WriteOutcome::Updated })
        }
        409 if !versioned => ItemResult::Done(WriteOutcome::SkippedPresent),
        409 => ItemResult::Done(conflict_outcome(result["error"]["reason"].as_str().unwrap_or_default())),
        429 | 500..=599 => ItemResult::Retry(error_reason(result)),
        _ => ItemResult::Done(WriteOutcome::Failed(format!("HTTP {status}: {}", error_reason(result)))),
    }
}

/// A version conflict under external versioning: the index holds this version or a
/// newer one. Its message says which ("current version [7] is higher or equal to the
/// one provided [5]"); equal means the record is already there.
fn conflict_outcome(reason: &str) -> WriteOutcome {
    let numbers: Vec<i64> =
        reason.split('[').skip(1).filter_map(|part| part.split(']').next()).filter_map(|n| n.parse().ok()).collect();
    match numbers.as_slice() {
        [.., current, provided] if current == provided => WriteOutcome::SkippedPresent,
        _ => WriteOutcome::SkippedNewer,
    }
}

/// Deletes the documents of `records` by id; returns how many existed.
async fn bulk_delete(client: &Client, index: &str, records: &[VisibilityRecord]) -> Result<u64, StoreError> {
    let mut body = Vec::new();
    for r in records {
        serde_json::to_writer(
            &mut body,
            &json!({"delete": {"_index": index, "_id": doc_id(&r.workflow_id, &r.run_id)}}),
        )
        .expect("JSON to memory");
        body.push(b'\n');
    }
    let response = client.bulk(body).await?;
    let mut deleted = 0;
    for item in response["items"].as_array().into_iter().flatten() {
        let d = &item["delete"];
        match d["status"].as_u64() {
            Some(200) => deleted += 1,
            Some(404) => {}
            _ => return Err(StoreError::Transient(format!("delete of {} failed: {}", d["_id"], error_reason(d)))),
        }
    }
    Ok(deleted)
}

/// The bulk-load settings a deferred refresh changes, and their values while copying.
const BULK_SETTINGS: [(&str, &str); 3] =
    [("index.refresh_interval", "-1"), ("index.number_of_replicas", "0"), ("index.auto_expand_replicas", "false")];

/// How long the end of a bulk load waits for the restored replicas to be allocated and
/// recovered (copying a big index to another node takes a while); then the run fails
/// (exit 1) saying so, and a rerun waits again.
const REPLICA_WAIT: Duration = Duration::from_secs(30 * 60);

impl ElasticsearchStore {
    /// Until the replicas are back every document has one copy: the run is done only
    /// once the index has the health its settings allow on this cluster.
    async fn wait_for_restored_replicas(&self) -> StoreResult<()> {
        let health = self.request(Method::GET, "/_cluster/health", None, "reading the cluster's health").await?;
        let data_nodes = health["number_of_data_nodes"].as_u64().unwrap_or(1);
        let now = self.settings().await?;
        let replicas =
            now.get("index.number_of_replicas").and_then(Value::as_str).and_then(|r| r.parse().ok()).unwrap_or(1);
        let auto_expand = now.get("index.auto_expand_replicas").and_then(Value::as_str);
        let (wanted, short) = reachable_health(replicas, auto_expand, data_nodes);
        let started = std::time::Instant::now();
        let reached = self.wait_for_health(wanted, REPLICA_WAIT).await?;
        match short {
            None => {
                tracing::info!(index = %self.index, health = %reached, replicas, data_nodes, seconds = started.elapsed().as_secs_f64(), "replicas restored after the bulk load; the index is green")
            }
            Some(reason) => {
                tracing::warn!(index = %self.index, health = %reached, replicas, data_nodes, "replicas restored after the bulk load, but the index can only be yellow on this cluster: {reason}. Every document has one copy until data nodes are added")
            }
        }
        Ok(())
    }

    /// Waits until the index's health is `wanted` (or better), at most `timeout`; returns
    /// the health reached. An error names the health, the shards not yet allocated and
    /// what to do.
    pub async fn wait_for_health(&self, wanted: &str, timeout: std::time::Duration) -> StoreResult<String> {
        let started = std::time::Instant::now();
        loop {
            // One request waits at most 50 s: well inside the client's request timeout.
            let left = timeout.saturating_sub(started.elapsed()).as_secs().clamp(1, 50);
            let path = format!("/_cluster/health/{}?wait_for_status={wanted}&timeout={left}s", self.index);
            let (_, v) = self
                .client
                .json(Method::GET, &path, None, &[StatusCode::REQUEST_TIMEOUT])
                .await
                .map_err(|e| self.err("reading the index's health", e))?;
            let status = v["status"].as_str().unwrap_or("unknown").to_string();
            if v["timed_out"] == Value::Bool(false) {
                return Ok(status);
            }
            let shards = format!(
                "{} shard copies initializing, {} unassigned",
                v["initializing_shards"].as_u64().unwrap_or(0),
                v["unassigned_shards"].as_u64().unwrap_or(0)
            );
            if started.elapsed() >= timeout {
                return Err(StoreError::Permanent(format!(
                    "{}: the index is {status}, not {wanted}, {} s after its replicas were restored ({shards}); the copy itself is complete. Check the cluster (GET _cluster/allocation/explain), then rerun the same command to wait again",
                    self.describe(),
                    timeout.as_secs()
                )));
            }
            tracing::info!(index = %self.index, health = %status, wanted, %shards, "waiting for the restored replicas");
        }
    }
}

/// The health an index can reach with its replica settings on `data_nodes` data nodes:
/// green, or yellow with the reason when its replicas cannot all be placed (a replica
/// never shares a node with its primary).
pub fn reachable_health(replicas: u64, auto_expand: Option<&str>, data_nodes: u64) -> (&'static str, Option<String>) {
    // With auto_expand_replicas "min-max" the cluster sets the count itself, to at least min.
    let needed = match auto_expand.filter(|a| *a != "false") {
        Some(range) => range.split('-').next().and_then(|m| m.parse::<u64>().ok()).unwrap_or(0),
        None => replicas,
    };
    if needed < data_nodes.max(1) {
        ("green", None)
    } else {
        let what =
            auto_expand.filter(|a| *a != "false").map(|a| format!(" (auto_expand_replicas {a})")).unwrap_or_default();
        (
            "yellow",
            Some(format!(
                "{needed} replicas per shard{what} but {data_nodes} data node(s): a replica is never placed on its primary's node"
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_an_index_can_reach_follows_its_replicas_and_the_nodes() {
        assert_eq!(reachable_health(0, Some("false"), 1), ("green", None));
        assert_eq!(reachable_health(2, Some("false"), 3).0, "green");
        let (wanted, why) = reachable_health(1, Some("false"), 1);
        assert_eq!(wanted, "yellow");
        assert!(why.unwrap().contains("1 replicas per shard but 1 data node(s)"));
        // Temporal's template: 0-2 replicas, expanded to what the nodes allow.
        assert_eq!(reachable_health(2, Some("0-2"), 1), ("green", None));
        assert_eq!(reachable_health(0, Some("1-all"), 1).0, "yellow");
        assert_eq!(reachable_health(1, None, 2), ("green", None));
    }

    #[test]
    fn item_results_become_outcomes() {
        let ok = |s: u64, r: &str| json!({"index": {"status": s, "result": r}});
        assert_eq!(index_result(&ok(201, "created"), true), ItemResult::Done(WriteOutcome::Inserted));
        assert_eq!(index_result(&ok(200, "updated"), true), ItemResult::Done(WriteOutcome::Updated));
        let conflict = |cur: i64, given: i64| {
            json!({"index": {"status": 409, "error": {"type": "version_conflict_engine_exception",
                "reason": format!("[wf~run]: version conflict, current version [{cur}] is higher or equal to the one provided [{given}]")}}})
        };
        assert_eq!(index_result(&conflict(7, 5), true), ItemResult::Done(WriteOutcome::SkippedNewer));
        assert_eq!(index_result(&conflict(5, 5), true), ItemResult::Done(WriteOutcome::SkippedPresent));
        let exists = json!({"create": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "[x]: version conflict, document already exists (current version [1])"}}});
        assert_eq!(index_result(&exists, false), ItemResult::Done(WriteOutcome::SkippedPresent));
        let busy = json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}});
        assert!(matches!(index_result(&busy, true), ItemResult::Retry(r) if r.contains("queue full")));
        let blocked = json!({"index": {"status": 403, "error": {"type": "cluster_block_exception", "reason": "index [v] blocked by: [FORBIDDEN/8/index write (api)];"}}});
        assert!(matches!(index_result(&blocked, true), ItemResult::Retry(r) if r.contains("index write")));
        // What OpenSearch's security plugin answers per item when the role may not write.
        let denied = json!({"index": {"status": 403, "error": {"type": "security_exception", "reason": "no permissions for [indices:data/write/bulk[s]] and User [name=vismig, backend_roles=[], requestedTenant=null]"}}});
        assert!(
            matches!(index_result(&denied, true), ItemResult::Store(r) if r.contains("indices:data/write/bulk[s]"))
        );
        let gone = json!({"index": {"status": 404, "error": {"type": "index_not_found_exception", "reason": "no such index [v]"}}});
        assert!(matches!(index_result(&gone, true), ItemResult::Store(r) if r.contains("no such index [v]")));
        let bad = json!({"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [Amount] of type [long]"}}});
        assert!(
            matches!(index_result(&bad, true), ItemResult::Done(WriteOutcome::Failed(r)) if r.contains("mapper_parsing_exception") && r.contains("Amount"))
        );
    }

    #[test]
    fn the_body_is_ndjson_with_external_versions_or_create() {
        let mut g = crate::seed::Generator::new(3, chrono::Utc::now());
        let mut a = g.next_record();
        a.version = 42;
        let mut b = g.next_record();
        b.version = 0;
        let body = String::from_utf8(index_body("vis", [&a, &b].into_iter(), Guard::Newer)).unwrap();
        let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["index"]["version"], 42);
        assert_eq!(lines[0]["index"]["version_type"], "external");
        assert_eq!(lines[0]["index"]["_id"], doc_id(&a.workflow_id, &a.run_id));
        assert_eq!(lines[1]["RunId"], a.run_id);
        assert!(lines[2]["create"]["version"].is_null());
        assert!(body.ends_with('\n'));

        // A repair: the same version replaces, a record without one replaces version 1.
        let body = String::from_utf8(index_body("vis", [&a, &b].into_iter(), Guard::SameOrNewer)).unwrap();
        let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["index"]["version"], 42);
        assert_eq!(lines[0]["index"]["version_type"], "external_gte");
        assert_eq!(lines[2]["index"]["version"], 1);
        assert_eq!(lines[2]["index"]["version_type"], "external_gte");
    }
}
