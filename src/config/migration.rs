//! vismig's own `migration:` block. Unknown keys are errors here (a typo must not
//! silently fall back to a default), unlike in Temporal's `persistence:` block.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Kept at this path for the tests and tools that parse `migration:` durations.
pub use super::duration::parse_duration;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Migration {
    /// Namespace ids to copy; empty means all.
    pub namespaces: Vec<String>,
    /// Namespace name -> id: the dynamic config names namespaces, records carry ids.
    pub namespace_names: std::collections::BTreeMap<String, String>,
    pub batch_size: usize,
    pub concurrency: usize,
    pub rate: Rate,
    pub checkpoint: Checkpoint,
    pub dead_letter: DeadLetter,
    pub metrics: Metrics,
    pub verify: Verify,
    pub bulk_load: BulkLoad,
    pub flip: Flip,
    /// The health throttle: latency feedback and store signals (`config/health.rs`).
    pub health: super::health::Health,
    /// Namespace (name or id) -> SQL field name -> the user's name, for copies between
    /// SQL and Elasticsearch (reference §6): the namespace's alias map, as
    /// `temporal operator search-attribute list` shows it.
    pub search_attribute_aliases: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// After SIGTERM/SIGINT, how long the batches already read may take to be written
    /// before they are abandoned (unacknowledged, so the checkpoint never passes them)
    /// and the process exits. Keep it below Kubernetes' terminationGracePeriodSeconds.
    #[serde(deserialize_with = "duration")]
    pub stop_timeout: Duration,
    /// Copy even when the secondary's schema (an older Temporal release) lacks fields the
    /// primary's has; the records lose those values and the summary counts them.
    pub drop_missing_fields: bool,
}

impl Default for Migration {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            namespace_names: Default::default(),
            batch_size: 500,
            concurrency: 4,
            rate: Rate::default(),
            checkpoint: Checkpoint::default(),
            dead_letter: DeadLetter::default(),
            metrics: Metrics::default(),
            verify: Verify::default(),
            bulk_load: BulkLoad::default(),
            flip: Flip::default(),
            health: Default::default(),
            search_attribute_aliases: Default::default(),
            stop_timeout: Duration::from_secs(20),
            drop_missing_fields: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Rate {
    /// Records per second across this process; 0 means unlimited.
    pub records_per_second: u32,
    /// Records that may pass at once; defaults to the larger of the batch size and a
    /// tenth of the rate.
    pub burst: Option<u32>,
}

impl Default for Rate {
    fn default() -> Self {
        Self { records_per_second: 5000, burst: None }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CheckpointType {
    /// A JSON file, replaced atomically (temp file, fsync, rename).
    File,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Checkpoint {
    #[serde(rename = "type")]
    pub kind: CheckpointType,
    pub path: PathBuf,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Self { kind: CheckpointType::File, path: PathBuf::from("data/checkpoint.json") }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeadLetter {
    pub path: PathBuf,
}

impl Default for DeadLetter {
    fn default() -> Self {
        Self { path: PathBuf::from("data/dead-letter.jsonl") }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Metrics {
    /// `host:port` of the metrics and control listener; empty disables it.
    pub listen: String,
    /// Keep serving `/metrics` this long after a command finished (not after a stop by
    /// a signal), so that Prometheus scrapes the final values of a short-lived Job:
    /// phase, progress, verify results. 0 (the default) exits at once.
    #[serde(deserialize_with = "duration")]
    pub linger: Duration,
    /// The bearer token that `POST /pause`, `POST /resume` and `PUT /rate` require.
    /// Without one these are served only on a loopback listener, and off elsewhere.
    pub control_token: Option<ControlToken>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9090".to_string(), linger: Duration::ZERO, control_token: None }
    }
}

/// `migration.metrics.controlToken`: where the token is read from (exactly one of the
/// two), never the token itself, so that the config file holds no secret.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlToken {
    /// A file holding the token (a mounted Kubernetes Secret); surrounding whitespace
    /// such as a final newline is ignored.
    pub file: Option<PathBuf>,
    /// An environment variable holding the token.
    pub env: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Verify {
    /// Records that closed (or started, if open) after now minus this are still
    /// changing and are reported apart, not compared.
    #[serde(deserialize_with = "duration")]
    pub cutoff: Duration,
    #[serde(deserialize_with = "duration")]
    pub recheck_after: Duration,
    /// `vismig run` verifies record by record, not only by counts.
    pub deep: bool,
}

impl Default for Verify {
    fn default() -> Self {
        Self { cutoff: Duration::from_secs(300), recheck_after: Duration::from_secs(30), deep: false }
    }
}

/// Bulk-load tuning of the secondary, off by default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BulkLoad {
    /// Drop the secondary's indexes other than the primary key before the copy and
    /// rebuild them after it (PostgreSQL). Refused while any namespace reads from the
    /// secondary, which needs `flip.dynamicConfigFile` to check.
    pub defer_indexes: bool,
    /// Turn off refresh and replicas of the secondary index during the copy and restore
    /// them after it (Elasticsearch, OpenSearch). Same guard as `deferIndexes`.
    pub defer_refresh: bool,
}

/// The flip of Temporal's read mode, and where its dynamic config lives.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Flip {
    /// What `vismig run` does after a passing verify.
    pub mode: FlipMode,
    /// Temporal's dynamic-config file; defaults to the server config's
    /// `dynamicConfigClient.filepath` when vismig reads Temporal's own config file.
    pub dynamic_config_file: Option<PathBuf>,
    /// The last verify must be younger than this for a flip.
    #[serde(deserialize_with = "duration")]
    pub max_verify_age: Duration,
    /// Where the dynamic config lives when it is not a file vismig can write: absent
    /// means `dynamicConfigFile`.
    pub target: Option<FlipTarget>,
}

impl Default for Flip {
    fn default() -> Self {
        Self {
            mode: FlipMode::Manual,
            dynamic_config_file: None,
            max_verify_age: Duration::from_secs(3600),
            target: None,
        }
    }
}

/// `migration.flip.target`: the dynamic config inside a Kubernetes ConfigMap, edited
/// through the API server (in Kubernetes the mounted file is read-only).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FlipTarget {
    pub config_map: Option<ConfigMapTarget>,
}

/// One key of one ConfigMap. Missing fields are reported by validation, one line each.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConfigMapTarget {
    /// The Kubernetes namespace of the ConfigMap (not a Temporal namespace).
    pub namespace: String,
    pub name: String,
    /// The key of `data` that holds the dynamic-config YAML (the mounted file's name).
    pub key: String,
    /// The API server's URL, instead of the in-cluster address or the kubeconfig's
    /// server (out-of-cluster access through a tunnel, tests).
    pub api_server: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum FlipMode {
    /// Flip reads as soon as verify passes.
    Auto,
    /// Print the exact flip command.
    Manual,
    /// Stop after verify.
    Never,
}

/// Parses the duration inside the deserializer's visit of the value, so that an error
/// names the field itself (`migration.verify.cutoff`), not only the block around it.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as 30s, 5m or 1h")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
            self.visit_str(&n.to_string())
        }
    }
    d.deserialize_any(Visitor)
}
