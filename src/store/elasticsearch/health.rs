//! Health signals of an Elasticsearch/OpenSearch secondary: the write thread pool of
//! each node that holds a shard of the index (queue, rejections) and the index's health.
//! A primary gives none: scrolls are reads, which the write pool does not serve.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use super::ElasticsearchStore;
use crate::store::StoreResult;
use crate::store::health::{Reading, Role};

impl ElasticsearchStore {
    pub(super) async fn health_readings(&self, role: Role) -> StoreResult<Vec<Reading>> {
        if role == Role::Primary {
            return Ok(Vec::new());
        }
        let what = "reading the write thread pool and the index health";
        let shards =
            self.request(Method::GET, &format!("/_cat/shards/{}?format=json&h=node", self.index), None, what).await?;
        let holders: BTreeSet<&str> =
            shards.as_array().into_iter().flatten().filter_map(|s| s["node"].as_str()).collect();
        let stats = self
            .request(
                Method::GET,
                "/_nodes/stats/thread_pool?filter_path=nodes.*.name,nodes.*.thread_pool.write",
                None,
                what,
            )
            .await?;
        let mut readings: Vec<Reading> = stats["nodes"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, node)| write_pool(node))
            .filter(|r| matches!(r, Reading::WriteQueue { node, .. } if holders.contains(node.as_str())))
            .collect();
        let health = self.request(Method::GET, &format!("/_cluster/health/{}", self.index), None, what).await?;
        if let Some(status) = health["status"].as_str() {
            readings.push(Reading::IndexHealth { index: self.index.clone(), status: status.to_string() });
        }
        Ok(readings)
    }
}

fn write_pool(node: &Value) -> Option<Reading> {
    let pool = &node["thread_pool"]["write"];
    Some(Reading::WriteQueue {
        node: node["name"].as_str()?.to_string(),
        queued: pool["queue"].as_u64()?,
        rejected_total: pool["rejected"].as_u64()?,
    })
}
