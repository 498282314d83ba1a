//! Reading the index: `impl Source` (the shard plan, one scroll per shard, the estimate
//! and the search attributes in use), and the store's counts and lookups by key.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ElasticsearchStore;
use super::codec::{self, HitsAnswer, decode_hits};
use crate::record::{ExecutionStatus, RecordKey, VisibilityRecord};
use crate::store::run_range::RunRange;
use crate::store::{
    BadRow, CountQuery, Counts, Cursor, ScanPage, ShardSpec, Source, Split, Store, StoreError, StoreResult,
    add_status_count,
};

/// Most namespaces one terms aggregation lists; a cluster with more is refused loudly.
const MAX_NAMESPACES: usize = 10_000;

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

#[async_trait]
impl Source for ElasticsearchStore {
    async fn plan_shards(&self, namespaces: &[String], split: &Split) -> StoreResult<Vec<ShardSpec>> {
        let ids = self.namespace_ids(namespaces).await?;
        Ok(RunRange::plan(&ids, split).iter().map(RunRange::to_spec).collect())
    }

    async fn scan(&self, shard: &ShardSpec, after: Option<&Cursor>, limit: usize) -> StoreResult<ScanPage> {
        let range = RunRange::from_spec(shard)?;
        let live = self.live_scroll(after, &range)?;
        let bytes = self.scroll_page(live.as_deref(), &range, limit).await?;
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
        let body = json!({"query": namespace_filter(namespaces)});
        let v = self.request(Method::POST, &self.index_path("_count"), Some(&body), "counting documents").await?;
        Ok(v["count"].as_u64().unwrap_or(0))
    }

    /// Every mapped field that is not part of the record itself, with the namespaces
    /// whose documents hold it (one aggregation: a filter per field).
    async fn search_attributes_in_use(
        &self,
        namespaces: &[String],
    ) -> StoreResult<Option<BTreeMap<String, BTreeSet<String>>>> {
        let fields: Vec<String> = self.attribute_fields().await?.into_iter().collect();
        if fields.is_empty() {
            return Ok(Some(BTreeMap::new()));
        }
        let mut aggs = serde_json::Map::new();
        for (i, f) in fields.iter().enumerate() {
            aggs.insert(format!("f{i}"), json!({"filter": {"exists": {"field": f}}}));
        }
        let body = json!({
            "size": 0, "track_total_hits": false, "query": namespace_filter(namespaces),
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

impl ElasticsearchStore {
    /// `Store::count`: documents per namespace and status, and those started or closed
    /// since the cutoff, in one aggregation.
    pub(super) async fn count_by_status(&self, query: &CountQuery) -> StoreResult<Counts> {
        let cutoff = codec::format_time(&query.cutoff);
        let body = json!({
            "size": 0, "track_total_hits": false,
            "query": namespace_filter(&query.namespaces),
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
                match ExecutionStatus::from_name(name) {
                    Some(status) => add_status_count(&mut counts, id, status, total, recent),
                    None => {
                        tracing::warn!(store = %self.describe(), namespace_id = id, status = name, documents = total, "documents with an unknown ExecutionStatus are not counted")
                    }
                }
            }
        }
        Ok(counts)
    }

    /// `Store::read`: the documents of `keys`, a thousand run ids a search.
    pub(super) async fn read_by_keys(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
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

    async fn search(&self, body: &Value, what: &str) -> StoreResult<Value> {
        self.request(Method::POST, &self.index_path("_search"), Some(body), what).await
    }

    /// A search for documents, read into records (the answer is not cut by `filter_path`:
    /// see `HitsAnswer`).
    async fn search_records(&self, body: &Value, what: &str) -> StoreResult<(Vec<VisibilityRecord>, Vec<BadRow>)> {
        let bytes = self
            .client
            .raw(Method::POST, &self.index_path("_search"), Some(body))
            .await
            .map_err(|e| self.err(what, e))?;
        let answer = HitsAnswer::parse(&bytes).map_err(|e| self.err(what, e))?;
        Ok(decode_hits(&answer.hits.hits))
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

    /// The scroll `after` names when it is still open in this process; `None` when the
    /// shard starts (again) from its start.
    fn live_scroll(&self, after: Option<&Cursor>, range: &RunRange) -> StoreResult<Option<String>> {
        let Some(c) = after else { return Ok(None) };
        let c: ScrollCursor = serde_json::from_value(c.0.clone()).map_err(|e| {
            StoreError::Permanent(format!("checkpoint cursor {} is not an Elasticsearch scroll: {e}", c.0))
        })?;
        let broken = self.broken_scrolls.lock().unwrap().contains(&c.scroll_id);
        if c.epoch == self.epoch && !broken {
            return Ok(Some(c.scroll_id));
        }
        tracing::info!(store = %self.describe(), namespace_id = %range.namespace_id, start = ?range.start, "reading the shard again from its start (its scroll is gone); documents already copied are skipped by the secondary's version check");
        Ok(None)
    }

    /// The next page of a shard: from its live scroll, or from a new scroll over the
    /// shard's range. A scroll whose page failed is marked broken: the server may have
    /// moved it on.
    async fn scroll_page(&self, live: Option<&str>, range: &RunRange, limit: usize) -> StoreResult<Bytes> {
        match live {
            Some(id) => {
                let body = json!({"scroll": SCROLL_KEEP_ALIVE, "scroll_id": id});
                let result = self.client.raw(Method::POST, "/_search/scroll", Some(&body)).await;
                if result.is_err() {
                    self.broken_scrolls.lock().unwrap().insert(id.to_string());
                }
                result.map_err(|e| self.err("scanning (continuing a scroll)", e))
            }
            None => {
                let body = json!({
                    "size": limit, "version": true,
                    "query": range_query(range), "sort": ["_doc"]
                });
                let path = self.index_path(&format!("_search?scroll={SCROLL_KEEP_ALIVE}"));
                self.client.raw(Method::POST, &path, Some(&body)).await.map_err(|e| self.err("scanning", e))
            }
        }
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
}

fn namespace_filter(namespaces: &[String]) -> Value {
    if namespaces.is_empty() { json!({"match_all": {}}) } else { json!({"terms": {"NamespaceId": namespaces}}) }
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
