//! What a store can say about its own health, for the health throttle: readings only,
//! no judgement (`backfill/health` compares them with the configured bounds).

/// Which side of the copy the store is on: the signals differ (a secondary's replicas
/// replay vismig's writes; a primary may be read through a replica that lags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
}

/// What the health poll asks a store, beyond its role.
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    pub role: Role,
    /// `migration.health.mysqlReplicas`: replicas a MySQL/MariaDB secondary cannot name itself.
    pub mysql_replicas: &'a [String],
}

/// One reading of one signal.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// Elasticsearch/OpenSearch: a node holding the index, its write thread pool's queue
    /// and the rejections it counted since it started.
    WriteQueue { node: String, queued: u64, rejected_total: u64 },
    /// Elasticsearch/OpenSearch: the index's health (`green`, `yellow`, `red`).
    IndexHealth { index: String, status: String },
    /// A replica's lag behind the server it replicates, in seconds.
    ReplicaLag { replica: String, seconds: f64 },
}
