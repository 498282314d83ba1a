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
//!
//! The files are every store's (see `store/mod.rs`): the scan in `read.rs`, the bulk
//! writes in `write.rs`, the mapping and settings in `schema.rs`, documents in
//! `codec.rs`; plus `client.rs`, the HTTP client the other stores get from their driver,
//! and `aws_signing.rs`, its SigV4 signer for Amazon OpenSearch Service.

pub mod aws_signing;
pub mod client;
pub mod codec;
mod health;
mod read;
mod schema;
mod write;

/// The name the codec had before every store folder took the same shape; tests and
/// tools still reach `doc_id` and `to_source` by it.
pub use self::codec as document;

use std::collections::BTreeSet;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;

use self::client::Client;
use super::schema::SchemaInfo;
use super::{CountQuery, Counts, Store, StoreError, StoreResult};
use crate::attribute_names::Naming;
use crate::config::StoreRef;
use crate::config::persistence::ElasticsearchStore as EsConfig;
use crate::record::{RecordKey, VisibilityRecord};

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

    /// `e`, saying which store failed doing `what`.
    fn err(&self, what: &str, e: StoreError) -> StoreError {
        match e {
            StoreError::Transient(m) => StoreError::Transient(format!("{}: {m}", self.context(what))),
            StoreError::Permanent(m) => StoreError::Permanent(format!("{}: {m}", self.context(what))),
            StoreError::Unusable(m) => StoreError::Unusable(format!("{}: {m}", self.context(what))),
        }
    }

    /// `/<index>/<endpoint>`.
    fn index_path(&self, endpoint: &str) -> String {
        format!("/{}/{endpoint}", self.index)
    }

    /// A JSON request that must succeed; its answer as JSON, its error saying `what`
    /// the store was doing.
    async fn request(&self, method: Method, path: &str, body: Option<&Value>, what: &str) -> StoreResult<Value> {
        self.client.json(method, path, body, &[]).await.map(|(_, v)| v).map_err(|e| self.err(what, e))
    }
}

/// Each part lives in the file of its role: preflight and the template version in
/// `schema.rs`, counts and lookups by key in `read.rs`.
#[async_trait]
impl Store for ElasticsearchStore {
    fn describe(&self) -> String {
        format!("elasticsearch {}/{} (store {})", self.client.base(), self.index, self.name)
    }

    async fn preflight(&self) -> StoreResult<()> {
        self.check_server_and_mapping().await
    }

    async fn schema_info(&self) -> StoreResult<SchemaInfo> {
        self.template_version().await
    }

    async fn count(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.count_by_status(query).await
    }

    async fn read(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        self.read_by_keys(keys).await
    }

    fn naming(&self) -> Naming {
        Naming::UserNames
    }

    async fn health(&self, probe: crate::store::health::Probe<'_>) -> StoreResult<Vec<crate::store::health::Reading>> {
        self.health_readings(probe.role).await
    }
}
