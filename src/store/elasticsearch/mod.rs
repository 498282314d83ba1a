//! Elasticsearch 7/8 and OpenSearch 2 visibility indices, as Temporal's index template
//! lays them out (reference §5), in both roles.
//!
//! Scan: one scroll in index order (`_doc`) per shard, a shard being one namespace and
//! one run-id range (the same data-independent plan as the SQL stores', so the processes
//! of an Indexed Job agree on it). Measured on OpenSearch 2, a scroll page costs the
//! server a tenth of a `search_after` page sorted on keywords (0.4 s against 4-5 s of
//! server time for 100k documents), and the scan is most of the server's extra work
//! over `_reindex`. Scrolls work alike on Elasticsearch 7/8 and OpenSearch 2, where a
//! point in time does not. The price: a scroll does not survive the process, nor a
//! failed page (a scroll request is not idempotent). So a shard resumes from its start
//! after a restart or an error; the documents it copied already come back from the
//! secondary as "already present" (a version check, no indexing), and none is skipped.
//!
//! Write: `_bulk` with Temporal's document id and `version_type: external` at the
//! source's version, or `create` (insert if absent) when the source has none; per-item
//! results decide the outcome, and only the items the server pushed back (429, 5xx) are
//! retried.

pub mod bulk;
pub mod client;
pub mod document;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use self::client::Client;
use super::run_range::RunRange;
use super::schema::SchemaInfo;
use super::{
    BadRow, CountQuery, Counts, Cursor, IndexDef, ScanPage, ShardSpec, Sink, Source, Split, Store, StoreError,
    StoreResult, WriteOutcome,
};
use crate::attribute_names::Naming;
use crate::config::StoreRef;
use crate::config::persistence::ElasticsearchStore as EsConfig;
use crate::record::{RecordKey, SearchAttributeType, VisibilityRecord};

/// Fields the scan, the counts and the reads filter or sort on; without them as
/// keyword/date fields the index was not made from Temporal's template.
const REQUIRED_MAPPING: [(&str, &[&str]); 6] = [
    ("NamespaceId", &["keyword"]),
    ("RunId", &["keyword"]),
    ("WorkflowId", &["keyword"]),
    ("ExecutionStatus", &["keyword"]),
    ("StartTime", &["date_nanos", "date"]),
    ("CloseTime", &["date_nanos", "date"]),
];

/// The first index template (`schema/elasticsearch/visibility/versioned/vN`) that maps
/// each field, newest first: the mapping of an index tells which template made it
/// (v10 changed only the layout of v9, so it reads as v9).
const TEMPLATE_MARKERS: [(u32, &str); 11] = [
    (14, "TemporalExternalPayloadSizeBytes"),
    (13, "TemporalUsedWorkerDeploymentVersions"),
    (12, "TemporalLowCardinalityKeyword01"),
    (11, "TemporalKeyword01"),
    (9, "TemporalReportedProblems"),
    (8, "TemporalPauseInfo"),
    (7, "RootWorkflowId"),
    (6, "ParentWorkflowId"),
    (5, "BuildIds"),
    (4, "HistorySizeBytes"),
    (1, "ExecutionDuration"),
];

/// The record fields that older templates do not map, with their Elasticsearch names.
const VERSIONED_MAPPING: [(&str, &str); 7] = [
    ("history_size_bytes", "HistorySizeBytes"),
    ("execution_duration", "ExecutionDuration"),
    ("state_transition_count", "StateTransitionCount"),
    ("parent_workflow_id", "ParentWorkflowId"),
    ("parent_run_id", "ParentRunId"),
    ("root_workflow_id", "RootWorkflowId"),
    ("root_run_id", "RootRunId"),
];

/// Most namespaces one terms aggregation lists; a cluster with more is refused loudly.
const MAX_NAMESPACES: usize = 10_000;

pub struct ElasticsearchStore {
    name: String,
    index: String,
    client: Client,
    /// Random per process; see `ScrollCursor::epoch`.
    epoch: String,
    /// Scrolls whose last page failed: the server may have moved them on, so the page
    /// is lost to them and their shard starts again.
    broken_scrolls: std::sync::Mutex<BTreeSet<String>>,
}

/// How long a scroll lives between two pages. A pause of the run longer than this
/// costs the shard a restart from its start, nothing more.
const SCROLL_KEEP_ALIVE: &str = "10m";

/// Where a shard's scan stands: its scroll, valid only in the process that opened it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScrollCursor {
    scroll_id: String,
    /// The opening process's `epoch`: a cursor from a checkpoint of an earlier process
    /// names a scroll that may have run past what was acknowledged.
    epoch: String,
}

impl ElasticsearchStore {
    pub fn open(name: &str, cfg: &EsConfig, store: &StoreRef) -> anyhow::Result<Self> {
        let key = store.es_index_key.as_deref().unwrap_or("visibility");
        let index = cfg.indices.get(key).cloned().ok_or_else(|| {
            anyhow::anyhow!("persistence.datastores.{name}.elasticsearch.indices.{key}: missing (the index name)")
        })?;
        if let Some(v) = cfg.version.as_deref().filter(|v| !v.is_empty() && *v != "v7" && *v != "v8") {
            anyhow::bail!("persistence.datastores.{name}.elasticsearch.version: {v:?} is not v7 or v8");
        }
        let client = Client::new(cfg).map_err(|e| anyhow::anyhow!("persistence.datastores.{name}: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            index,
            client,
            epoch: uuid::Uuid::new_v4().to_string(),
            broken_scrolls: Default::default(),
        })
    }

    fn context(&self, what: &str) -> String {
        format!("{}: {what}", self.describe())
    }

    fn err(&self, what: &str, e: StoreError) -> StoreError {
        match e {
            StoreError::Transient(m) => StoreError::Transient(format!("{}: {m}", self.context(what))),
            StoreError::Permanent(m) => StoreError::Permanent(format!("{}: {m}", self.context(what))),
            StoreError::Unusable(m) => StoreError::Unusable(format!("{}: {m}", self.context(what))),
        }
    }

    async fn search(&self, body: &Value, what: &str) -> StoreResult<Value> {
        self.client
            .json(Method::POST, &format!("/{}/_search", self.index), Some(body), &[])
            .await
            .map(|(_, v)| v)
            .map_err(|e| self.err(what, e))
    }

    /// A search for documents, read into records (the answer is not cut by `filter_path`:
    /// see `HitsAnswer`).
    async fn search_records(&self, body: &Value, what: &str) -> StoreResult<(Vec<VisibilityRecord>, Vec<BadRow>)> {
        let (_, bytes) = self
            .client
            .raw(Method::POST, &format!("/{}/_search", self.index), Some(body), &[])
            .await
            .map_err(|e| self.err(what, e))?;
        let answer = HitsAnswer::parse(&bytes).map_err(|e| self.err(what, e))?;
        Ok(decode_hits(&answer.hits.hits))
    }

    /// Field name -> mapped type, across the concrete indices behind the name.
    pub async fn mapping(&self) -> StoreResult<BTreeMap<String, String>> {
        let (status, v) = self
            .client
            .json(Method::GET, &format!("/{}/_mapping", self.index), None, &[StatusCode::NOT_FOUND])
            .await
            .map_err(|e| self.err("reading the mapping", e))?;
        if status == StatusCode::NOT_FOUND {
            return Err(StoreError::Permanent(format!(
                "{}: index {:?} does not exist; create it as Temporal's schema tools do (index template temporal_visibility_v1_template, then PUT /{})",
                self.describe(),
                self.index,
                self.index
            )));
        }
        let mut fields = BTreeMap::new();
        for (_, idx) in v.as_object().into_iter().flatten() {
            for (name, field) in idx["mappings"]["properties"].as_object().into_iter().flatten() {
                fields.insert(name.clone(), field["type"].as_str().unwrap_or("object").to_string());
            }
        }
        Ok(fields)
    }

    /// The namespace ids present (or those asked for), sorted.
    async fn namespace_ids(&self, namespaces: &[String]) -> StoreResult<Vec<String>> {
        if !namespaces.is_empty() {
            let mut out = namespaces.to_vec();
            out.sort();
            return Ok(out);
        }
        let body = json!({
            "size": 0, "track_total_hits": false,
            "aggs": {"ns": {"terms": {"field": "NamespaceId", "size": MAX_NAMESPACES, "order": {"_key": "asc"}}}}
        });
        let v = self.search(&body, "listing namespaces").await?;
        if v["aggregations"]["ns"]["sum_other_doc_count"].as_u64().unwrap_or(0) > 0 {
            return Err(StoreError::Permanent(format!(
                "{}: more than {MAX_NAMESPACES} namespaces; list the ones to copy in migration.namespaces",
                self.describe()
            )));
        }
        Ok(buckets(&v["aggregations"]["ns"]).filter_map(|b| b["key"].as_str().map(str::to_string)).collect())
    }

    fn namespace_filter(namespaces: &[String]) -> Value {
        if namespaces.is_empty() { json!({"match_all": {}}) } else { json!({"terms": {"NamespaceId": namespaces}}) }
    }

    /// Frees a finished scroll now rather than at its keep-alive; a failure only logs.
    async fn clear_scroll(&self, scroll_id: &str) {
        if scroll_id.is_empty() {
            return;
        }
        let body = json!({"scroll_id": [scroll_id]});
        if let Err(e) = self.client.json(Method::DELETE, "/_search/scroll", Some(&body), &[StatusCode::NOT_FOUND]).await
        {
            tracing::debug!(store = %self.describe(), error = %e, "clearing a finished scroll failed; it expires by itself");
        }
    }

    async fn settings(&self) -> StoreResult<serde_json::Map<String, Value>> {
        let (_, v) = self
            .client
            .json(Method::GET, &format!("/{}/_settings?flat_settings=true", self.index), None, &[])
            .await
            .map_err(|e| self.err("reading index settings", e))?;
        let mut out = serde_json::Map::new();
        for (_, idx) in v.as_object().into_iter().flatten() {
            for (k, val) in idx["settings"].as_object().into_iter().flatten() {
                out.insert(k.clone(), val.clone());
            }
        }
        Ok(out)
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

    async fn put_settings(&self, settings: &Value, what: &str) -> StoreResult<()> {
        self.client
            .json(Method::PUT, &format!("/{}/_settings", self.index), Some(settings), &[])
            .await
            .map(|_| ())
            .map_err(|e| self.err(what, e))
    }
}

/// One shard's documents: its namespace and run-id range.
fn range_query(range: &RunRange) -> Value {
    let mut run_bounds = serde_json::Map::new();
    if let Some(start) = &range.start {
        run_bounds.insert("gte".into(), start.clone().into());
    }
    if let Some(end) = &range.end {
        run_bounds.insert("lt".into(), end.clone().into());
    }
    let mut filter = vec![json!({"term": {"NamespaceId": range.namespace_id}})];
    if !run_bounds.is_empty() {
        filter.push(json!({"range": {"RunId": run_bounds}}));
    }
    json!({"bool": {"filter": filter}})
}

fn buckets(agg: &Value) -> impl Iterator<Item = &Value> {
    agg["buckets"].as_array().into_iter().flatten()
}

/// A search or scroll answer, read straight from the answer's bytes: each hit's `_source`
/// stays raw text until its own record is made, so a page of thousands of documents is
/// never a JSON tree in memory all at once. Never asked with `filter_path`: the server
/// then parses and re-prints every `_source`, and Go's `-0` (a double's negative zero)
/// came back as the integer `0` (OpenSearch 2.19); unfiltered, `_source` is the text
/// Temporal wrote, byte for byte.
#[derive(Deserialize)]
struct HitsAnswer<'a> {
    #[serde(rename = "_scroll_id", default)]
    scroll_id: Option<String>,
    // Absent from some answers (a scroll past its end on some servers).
    #[serde(borrow, default)]
    hits: HitList<'a>,
}

#[derive(Deserialize, Default)]
struct HitList<'a> {
    #[serde(borrow, default)]
    hits: Vec<Hit<'a>>,
}

#[derive(Deserialize)]
struct Hit<'a> {
    #[serde(rename = "_id", borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "_version", default)]
    version: i64,
    #[serde(rename = "_source", borrow, default)]
    source: Option<&'a RawValue>,
}

impl<'a> HitsAnswer<'a> {
    fn parse(bytes: &'a [u8]) -> StoreResult<Self> {
        serde_json::from_slice(bytes).map_err(|e| {
            let start = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            StoreError::Permanent(format!(
                "the search answer is not what Elasticsearch sends: {e} (it starts {start:?})"
            ))
        })
    }
}

/// Hits into records, or bad rows naming what is wrong with the document.
fn decode_hits(hits: &[Hit]) -> (Vec<VisibilityRecord>, Vec<BadRow>) {
    let mut records = Vec::with_capacity(hits.len());
    let mut bad = Vec::new();
    for hit in hits {
        let Some(raw) = hit.source else {
            bad.push(bad_row(hit, Value::Null, "hit without _source (is _source disabled in the mapping?)"));
            continue;
        };
        let source: Map<String, Value> = match serde_json::from_str(raw.get()) {
            Ok(source) => source,
            Err(e) => {
                let reason = format!("document {:?}: _source is not a JSON object: {e}", hit.id);
                bad.push(bad_row(hit, Value::String(raw.get().to_string()), &reason));
                continue;
            }
        };
        match document::from_source(&source, hit.version) {
            Ok(r) => records.push(r),
            Err(reason) => {
                let reason = format!("document {:?}: {reason}", hit.id);
                bad.push(bad_row(hit, Value::Object(source), &reason));
            }
        }
    }
    (records, bad)
}

/// A dead-letter row for `hit`; `source` is its `_source` as far as it could be read.
fn bad_row(hit: &Hit, source: Value, reason: &str) -> BadRow {
    let field = |name: &str| source.get(name).and_then(Value::as_str).map(str::to_string);
    BadRow {
        namespace_id: field("NamespaceId").unwrap_or_default(),
        run_id: field("RunId").unwrap_or_default(),
        workflow_id: field("WorkflowId"),
        reason: reason.to_string(),
        raw: json!({"_id": hit.id, "_version": hit.version, "_source": source}),
    }
}

/// How long the end of a bulk load waits for the restored replicas to be allocated and
/// recovered (copying a big index to another node takes a while); then the run fails
/// (exit 1) saying so, and a rerun waits again.
const REPLICA_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

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

/// The bulk-load settings a deferred refresh changes, and their values while copying.
const BULK_SETTINGS: [(&str, &str); 3] =
    [("index.refresh_interval", "-1"), ("index.number_of_replicas", "0"), ("index.auto_expand_replicas", "false")];

#[async_trait]
impl Store for ElasticsearchStore {
    fn describe(&self) -> String {
        format!("elasticsearch {}/{} (store {})", self.client.base(), self.index, self.name)
    }

    async fn preflight(&self) -> StoreResult<()> {
        let info = self.client.info().await.map_err(|e| self.err("connecting", e))?;
        let major: u32 = info.version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        let supported = match info.distribution.as_str() {
            "opensearch" => (1..=3).contains(&major),
            _ => (7..=9).contains(&major),
        };
        if !supported {
            return Err(StoreError::Permanent(format!(
                "{}: {} {} is not supported (Elasticsearch 7-8 and OpenSearch 1-2 are)",
                self.describe(),
                info.distribution,
                info.version
            )));
        }
        let mapping = self.mapping().await?;
        let mut problems = Vec::new();
        for (field, types) in REQUIRED_MAPPING {
            match mapping.get(field) {
                Some(t) if types.contains(&t.as_str()) => {}
                Some(t) => problems.push(format!("{field} is mapped as {t}, not {}", types.join(" or "))),
                None => problems.push(format!("{field} is not mapped")),
            }
        }
        if !problems.is_empty() {
            return Err(StoreError::Permanent(format!(
                "{}: the index was not made from Temporal's index template ({}); its name must match temporal_visibility_v1* when it is created",
                self.describe(),
                problems.join("; ")
            )));
        }
        tracing::debug!(store = %self.describe(), distribution = %info.distribution, version = %info.version, "connected");
        Ok(())
    }

    /// The template version is read from the mapping (Temporal records none); search
    /// attributes and the external `_version` exist in every template.
    async fn schema_info(&self) -> StoreResult<SchemaInfo> {
        let mapping = self.mapping().await?;
        let version = match TEMPLATE_MARKERS.iter().find(|(_, field)| mapping.contains_key(*field)) {
            Some((v, _)) => format!("index template v{v} (read from the mapping)"),
            None => "a mapping from no Temporal index template".to_string(),
        };
        let upgrade = format!(
            "apply the missing fields with each newer schema/elasticsearch/visibility/versioned/vN/upgrade.sh (PUT /{}/_mapping), or temporal-elasticsearch-tool update-schema --index {} (Temporal v1.30+)",
            self.index, self.index
        );
        let mapped = |field: &str| match VERSIONED_MAPPING.iter().find(|(column, _)| *column == field) {
            Some((_, es)) => mapping.contains_key(*es),
            None => true,
        };
        Ok(SchemaInfo::from_columns(version, mapped, upgrade))
    }

    async fn count(&self, query: &CountQuery) -> StoreResult<Counts> {
        let cutoff = document::format_time(&query.cutoff);
        let body = json!({
            "size": 0, "track_total_hits": false,
            "query": Self::namespace_filter(&query.namespaces),
            "aggs": {"ns": {"terms": {"field": "NamespaceId", "size": MAX_NAMESPACES},
                "aggs": {"status": {"terms": {"field": "ExecutionStatus", "size": 50},
                    "aggs": {"recent": {"filter": {"bool": {"should": [
                        {"range": {"StartTime": {"gte": cutoff}}},
                        {"range": {"CloseTime": {"gte": cutoff}}}
                    ], "minimum_should_match": 1}}}}}}}}
        });
        let v = self.search(&body, "counting").await?;
        let mut counts = Counts::new();
        for ns in buckets(&v["aggregations"]["ns"]) {
            let id = ns["key"].as_str().unwrap_or_default();
            for st in buckets(&ns["status"]) {
                let name = st["key"].as_str().unwrap_or_default();
                let total = st["doc_count"].as_i64().unwrap_or(0);
                let recent = st["recent"]["doc_count"].as_i64().unwrap_or(0);
                match crate::record::ExecutionStatus::from_name(name) {
                    Some(status) => super::add_status_count(&mut counts, id, status, total, recent),
                    None => {
                        tracing::warn!(store = %self.describe(), namespace_id = id, status = name, documents = total, "documents with an unknown ExecutionStatus are not counted")
                    }
                }
            }
        }
        Ok(counts)
    }

    async fn read(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        let mut by_ns: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for k in keys {
            by_ns.entry(&k.namespace_id).or_default().push(&k.run_id);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (ns, runs) in by_ns {
            for chunk in runs.chunks(1000) {
                let body = json!({
                    "size": chunk.len() * 2, "version": true, "track_total_hits": false,
                    "query": {"bool": {"filter": [{"term": {"NamespaceId": ns}}, {"terms": {"RunId": chunk}}]}}
                });
                let (records, bad) = self.search_records(&body, "reading records by key").await?;
                if let Some(b) = bad.first() {
                    return Err(StoreError::Permanent(format!("{}: {}", self.describe(), b.reason)));
                }
                out.extend(records);
            }
        }
        Ok(out)
    }

    fn naming(&self) -> Naming {
        Naming::UserNames
    }
}

#[async_trait]
impl Source for ElasticsearchStore {
    async fn plan_shards(&self, namespaces: &[String], split: &Split) -> StoreResult<Vec<ShardSpec>> {
        let ids = self.namespace_ids(namespaces).await?;
        Ok(RunRange::plan(&ids, split).iter().map(RunRange::to_spec).collect())
    }

    async fn scan(&self, shard: &ShardSpec, after: Option<&Cursor>, limit: usize) -> StoreResult<ScanPage> {
        let range = RunRange::from_spec(shard)?;
        let live = match after {
            None => None,
            Some(c) => {
                let c: ScrollCursor = serde_json::from_value(c.0.clone()).map_err(|e| {
                    StoreError::Permanent(format!("checkpoint cursor {} is not an Elasticsearch scroll: {e}", c.0))
                })?;
                let broken = self.broken_scrolls.lock().unwrap().contains(&c.scroll_id);
                if c.epoch == self.epoch && !broken {
                    Some(c.scroll_id)
                } else {
                    tracing::info!(store = %self.describe(), namespace_id = %range.namespace_id, start = ?range.start, "reading the shard again from its start (its scroll is gone); documents already copied are skipped by the secondary's version check");
                    None
                }
            }
        };
        let (_, bytes) = match &live {
            Some(id) => {
                let body = json!({"scroll": SCROLL_KEEP_ALIVE, "scroll_id": id});
                let result = self.client.raw(Method::POST, "/_search/scroll", Some(&body), &[]).await;
                if result.is_err() {
                    self.broken_scrolls.lock().unwrap().insert(id.clone());
                }
                result.map_err(|e| self.err("scanning (continuing a scroll)", e))?
            }
            None => {
                let body = json!({
                    "size": limit, "version": true,
                    "query": range_query(&range), "sort": ["_doc"]
                });
                let path = format!("/{}/_search?scroll={SCROLL_KEEP_ALIVE}", self.index);
                self.client.raw(Method::POST, &path, Some(&body), &[]).await.map_err(|e| self.err("scanning", e))?
            }
        };
        let answer = HitsAnswer::parse(&bytes).map_err(|e| self.err("scanning", e))?;
        let scroll_id = answer.scroll_id.unwrap_or_default();
        // Only an empty page ends a scroll: a short one may come from a multi-shard index.
        let done = answer.hits.hits.is_empty();
        if done {
            self.clear_scroll(&scroll_id).await;
        }
        let cursor =
            (!scroll_id.is_empty()).then(|| Cursor(json!(ScrollCursor { scroll_id, epoch: self.epoch.clone() })));
        let (records, bad_rows) = decode_hits(&answer.hits.hits);
        Ok(ScanPage { records, bad_rows, cursor, done })
    }

    async fn estimate(&self, namespaces: &[String]) -> StoreResult<u64> {
        let body = json!({"query": Self::namespace_filter(namespaces)});
        let (_, v) = self
            .client
            .json(Method::POST, &format!("/{}/_count", self.index), Some(&body), &[])
            .await
            .map_err(|e| self.err("counting documents", e))?;
        Ok(v["count"].as_u64().unwrap_or(0))
    }

    /// Every mapped field that is not part of the record itself, with the namespaces
    /// whose documents hold it (one aggregation: a filter per field).
    async fn search_attributes_in_use(
        &self,
        namespaces: &[String],
    ) -> StoreResult<Option<BTreeMap<String, BTreeSet<String>>>> {
        let fields: Vec<String> = self.mapping().await?.into_keys().filter(|f| !document::is_base_field(f)).collect();
        if fields.is_empty() {
            return Ok(Some(BTreeMap::new()));
        }
        let mut aggs = serde_json::Map::new();
        for (i, f) in fields.iter().enumerate() {
            aggs.insert(format!("f{i}"), json!({"filter": {"exists": {"field": f}}}));
        }
        let body = json!({
            "size": 0, "track_total_hits": false, "query": Self::namespace_filter(namespaces),
            "aggs": {"ns": {"terms": {"field": "NamespaceId", "size": MAX_NAMESPACES}, "aggs": aggs}}
        });
        let v = self.search(&body, "listing the search attributes in use").await?;
        let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ns in buckets(&v["aggregations"]["ns"]) {
            let id = ns["key"].as_str().unwrap_or_default().to_string();
            for (i, f) in fields.iter().enumerate() {
                if ns[format!("f{i}")]["doc_count"].as_u64().unwrap_or(0) > 0 {
                    used.entry(id.clone()).or_default().insert(f.clone());
                }
            }
        }
        Ok(Some(used))
    }
}

#[async_trait]
impl Sink for ElasticsearchStore {
    fn max_batch(&self) -> usize {
        // About 1-2 MB of NDJSON: large enough to amortise the round trip, well under
        // http.max_content_length and Temporal's own 16 MiB bulk size.
        2000
    }

    async fn write(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>> {
        bulk::write(&self.client, &self.index, records, bulk::Guard::Newer).await.map_err(|e| self.err("bulk write", e))
    }

    async fn overwrite(&self, records: &[VisibilityRecord]) -> StoreResult<Vec<WriteOutcome>> {
        bulk::write(&self.client, &self.index, records, bulk::Guard::SameOrNewer)
            .await
            .map_err(|e| self.err("bulk write (repair)", e))
    }

    async fn delete(&self, keys: &[RecordKey]) -> StoreResult<u64> {
        let found = self.read(keys).await?;
        if found.is_empty() {
            return Ok(0);
        }
        bulk::delete(&self.client, &self.index, &found).await.map_err(|e| self.err("bulk delete", e))
    }

    async fn flush(&self) -> StoreResult<()> {
        self.client
            .json(Method::POST, &format!("/{}/_refresh", self.index), None, &[])
            .await
            .map(|_| ())
            .map_err(|e| self.err("refreshing the index", e))
    }

    /// Temporal's `buildMappingBody`: the field type for each attribute type.
    async fn register_search_attributes(&self, attributes: &[(String, SearchAttributeType)]) -> StoreResult<()> {
        let mut properties = serde_json::Map::new();
        for (name, kind) in attributes {
            let mapping = match kind {
                SearchAttributeType::Text => json!({"type": "text"}),
                SearchAttributeType::Keyword | SearchAttributeType::KeywordList => json!({"type": "keyword"}),
                SearchAttributeType::Int => json!({"type": "long"}),
                SearchAttributeType::Double => json!({"type": "scaled_float", "scaling_factor": 10000}),
                SearchAttributeType::Bool => json!({"type": "boolean"}),
                SearchAttributeType::Datetime => json!({"type": "date_nanos"}),
            };
            properties.insert(name.clone(), mapping);
        }
        self.client
            .json(Method::PUT, &format!("/{}/_mapping", self.index), Some(&json!({"properties": properties})), &[])
            .await
            .map(|_| ())
            .map_err(|e| self.err("adding search attributes to the mapping", e))
    }

    async fn search_attribute_fields(&self) -> StoreResult<Option<BTreeSet<String>>> {
        Ok(Some(self.mapping().await?.into_keys().filter(|f| !document::is_base_field(f)).collect()))
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
        // Until the replicas are back every document has one copy: the run is done only
        // once the index has the health its settings allow on this cluster.
        let (_, health) = self
            .client
            .json(Method::GET, "/_cluster/health", None, &[])
            .await
            .map_err(|e| self.err("reading the cluster's health", e))?;
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
    fn a_page_is_read_from_its_bytes_into_records_and_bad_rows() {
        let good = r#"{"NamespaceId":"ns","WorkflowId":"w\"1","RunId":"r1","WorkflowType":"t","StartTime":"2024-05-01T12:00:00Z","ExecutionTime":"2024-05-01T12:00:00Z","ExecutionStatus":"Running","CustomerId":"c-1"}"#;
        let bad = r#"{"NamespaceId":"ns","WorkflowId":"w2","RunId":"r2","WorkflowType":"t","StartTime":"noon","ExecutionTime":"2024-05-01T12:00:00Z","ExecutionStatus":"Running"}"#;
        let page = format!(
            r#"{{"_scroll_id":"abc","hits":{{"hits":[{{"_id":"w\"1~r1","_version":7,"_source":{good}}},{{"_id":"w2~r2","_version":3,"_source":{bad}}},{{"_id":"w3~r3","_version":1}}]}}}}"#
        );
        let answer = HitsAnswer::parse(page.as_bytes()).unwrap();
        assert_eq!(answer.scroll_id.as_deref(), Some("abc"));
        assert_eq!(answer.hits.hits[0].id, "w\"1~r1");
        let (records, bad_rows) = decode_hits(&answer.hits.hits);
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].workflow_id.as_str(), records[0].version), ("w\"1", 7));
        assert!(records[0].search_attributes.as_ref().unwrap().0.contains_key("CustomerId"));
        assert_eq!(bad_rows.len(), 2);
        assert!(
            bad_rows[0].reason.contains("\"w2~r2\"") && bad_rows[0].reason.contains("StartTime"),
            "{}",
            bad_rows[0].reason
        );
        assert_eq!((bad_rows[0].run_id.as_str(), &bad_rows[0].raw["_version"]), ("r2", &json!(3)));
        assert_eq!(bad_rows[0].raw["_source"]["StartTime"], "noon");
        assert!(bad_rows[1].reason.contains("without _source"), "{}", bad_rows[1].reason);
        assert_eq!((&bad_rows[1].raw["_id"], &bad_rows[1].raw["_source"]), (&json!("w3~r3"), &Value::Null));

        // A page with no hits is filtered down to `{}`; an answer that is not JSON is an error.
        let empty = HitsAnswer::parse(b"{}").unwrap();
        assert!(empty.scroll_id.is_none() && empty.hits.hits.is_empty());
        let e = HitsAnswer::parse(b"<html>bad gateway</html>").err().unwrap();
        assert!(e.to_string().contains("bad gateway"), "{e}");
    }
}
