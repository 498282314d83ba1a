//! What the index is: the server's distribution and version, the mapping (the fields
//! the scan needs, which Temporal template made it, search attributes added to it),
//! and the index settings the bulk load changes.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::ElasticsearchStore;
use super::codec::is_base_field;
use crate::record::SearchAttributeType;
use crate::store::schema::SchemaInfo;
use crate::store::{Store, StoreError, StoreResult};

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

impl ElasticsearchStore {
    /// `Store::preflight`: a server version vismig speaks to, and an index made from
    /// Temporal's template.
    pub(super) async fn check_server_and_mapping(&self) -> StoreResult<()> {
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
        let problems = required_mapping_problems(&self.mapping().await?);
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

    /// `Store::schema_info`: the template version is read from the mapping (Temporal
    /// records none); search attributes and the external `_version` exist in every
    /// template.
    pub(super) async fn template_version(&self) -> StoreResult<SchemaInfo> {
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

    /// Field name -> mapped type, across the concrete indices behind the name.
    pub async fn mapping(&self) -> StoreResult<BTreeMap<String, String>> {
        let (status, v) = self
            .client
            .json(Method::GET, &self.index_path("_mapping"), None, &[StatusCode::NOT_FOUND])
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

    /// The mapped fields that are search attributes: every one not the record's own.
    pub(super) async fn attribute_fields(&self) -> StoreResult<BTreeSet<String>> {
        Ok(self.mapping().await?.into_keys().filter(|f| !is_base_field(f)).collect())
    }

    /// Temporal's `buildMappingBody`: the field type for each attribute type.
    pub(super) async fn add_to_mapping(&self, attributes: &[(String, SearchAttributeType)]) -> StoreResult<()> {
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
        let body = json!({"properties": properties});
        let what = "adding search attributes to the mapping";
        self.request(Method::PUT, &self.index_path("_mapping"), Some(&body), what).await.map(drop)
    }

    /// The index's settings, flat (`index.refresh_interval`), across the concrete
    /// indices behind the name.
    pub(super) async fn settings(&self) -> StoreResult<serde_json::Map<String, Value>> {
        let path = self.index_path("_settings?flat_settings=true");
        let v = self.request(Method::GET, &path, None, "reading index settings").await?;
        let mut out = serde_json::Map::new();
        for (_, idx) in v.as_object().into_iter().flatten() {
            for (k, val) in idx["settings"].as_object().into_iter().flatten() {
                out.insert(k.clone(), val.clone());
            }
        }
        Ok(out)
    }

    pub(super) async fn put_settings(&self, settings: &Value, what: &str) -> StoreResult<()> {
        self.request(Method::PUT, &self.index_path("_settings"), Some(settings), what).await.map(drop)
    }
}

/// What keeps `mapping` from being one Temporal's template made, one line a field.
fn required_mapping_problems(mapping: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, types) in REQUIRED_MAPPING {
        match mapping.get(field) {
            Some(t) if types.contains(&t.as_str()) => {}
            Some(t) => problems.push(format!("{field} is mapped as {t}, not {}", types.join(" or "))),
            None => problems.push(format!("{field} is not mapped")),
        }
    }
    problems
}
