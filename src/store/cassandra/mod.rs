//! Cassandra standard visibility (Temporal v1.23 and before,
//! `schema/cassandra/visibility/schema.cql`): a source only, so no `write.rs`.
//!
//! Layout (shared/reference/temporal-visibility.md §4): tables `open_executions` and
//! `closed_executions`, each partitioned by `(namespace_id uuid, namespace_partition int)`
//! with `namespace_partition` always 0, so a namespace is one partition per table.
//! Clustering is `start_time DESC, run_id ASC` (open) and `close_time DESC, run_id ASC`
//! (closed); times are millisecond timestamps. How the partitions are cut into shards
//! is in `plan.rs`; how a shard is paged, and runs found in both tables, in `read.rs`.
//!
//! Reading must not hurt production: every statement is paged (`LIMIT`), read at
//! LOCAL_QUORUM unless Temporal's `consistency.default.consistency` says otherwise,
//! with a request timeout (`cql.rs`); timeouts, unavailable and overloaded errors are
//! transient, so the pipeline backs off (its rate limit applies per page).

mod codec;
mod cql;
mod namespace_records;
mod plan;
mod read;
mod schema;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use scylla::client::PoolSize;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::frame::types::Consistency;
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::{Mutex, OnceCell};

pub use plan::{ClusteringKey, GridCursor, GridShard, TimeWindow};
pub use schema::Table;

use crate::config::duration::parse_duration_or_seconds;
use crate::config::persistence::{CassandraStore as CassandraConfig, Tls};
use crate::record::{RecordKey, TimePrecision, VisibilityRecord};
use crate::store::schema::SchemaInfo;
use crate::store::{CountQuery, Counts, Store, StoreError, StoreResult};
use crate::tls::{TlsMaterial, Verify};

const DEFAULT_PORT: u16 = 9042;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A session on one visibility keyspace, read at one consistency level.
pub struct CassandraStore {
    name: String,
    hosts: String,
    keyspace: String,
    consistency: Consistency,
    session: Session,
    /// Prepared statements by page size and text, each prepared once (`cql.rs`).
    prepared: Mutex<HashMap<String, PreparedStatement>>,
    /// Set once the schema check passed, so it runs once per store.
    checked: OnceCell<()>,
}

impl CassandraStore {
    pub async fn open(name: &str, cfg: &CassandraConfig) -> anyhow::Result<Self> {
        let keyspace = cfg.keyspace.trim().to_string();
        if keyspace.is_empty() || !keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            anyhow::bail!("store {name:?}: cassandra.keyspace {keyspace:?} is not a plain keyspace name");
        }
        let hosts: Vec<String> =
            cfg.hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect();
        if hosts.is_empty() {
            anyhow::bail!("store {name:?}: cassandra.hosts is empty");
        }
        let describe = format!("cassandra {}/{keyspace}", hosts.join(","));
        let connect_timeout = cfg
            .connect_timeout
            .as_deref()
            .and_then(|t| parse_duration_or_seconds(t).ok())
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let builder = session_builder(name, cfg, &hosts, &keyspace, connect_timeout)
            .map_err(|e| anyhow::anyhow!("store {name:?} ({describe}): {e}"))?;
        let consistency = read_consistency(name, cfg)?;
        // The driver's timeout covers the TCP connect only: a node that accepts the
        // connection and never answers the handshake would hold the start for a minute.
        let session = match tokio::time::timeout(connect_timeout, builder.build()).await {
            Ok(session) => session.map_err(|e| {
                anyhow::anyhow!(
                    "store {name:?} ({describe}): {}",
                    connect_error(
                        &e,
                        cfg.tls.as_ref().is_some_and(|t| t.enabled),
                        cfg.tls.as_ref().is_some_and(|t| t.cert_file.is_some() || t.cert_data.is_some())
                    )
                )
            })?,
            Err(_) => anyhow::bail!(
                "store {name:?} ({describe}): connecting: no answer within {} s (cassandra.connectTimeout): is the node up, and are hosts and port right?",
                connect_timeout.as_secs_f64()
            ),
        };
        Ok(Self {
            name: name.to_string(),
            hosts: hosts.join(","),
            keyspace,
            consistency,
            session,
            prepared: Mutex::new(HashMap::new()),
            checked: OnceCell::new(),
        })
    }

    fn context(&self, what: &str) -> String {
        format!("store {:?} ({}): {what}", self.name, self.describe())
    }

    /// A table's name qualified by the keyspace.
    fn table(&self, table: Table) -> String {
        format!("{}.{}", self.keyspace, table.name())
    }
}

#[async_trait]
impl Store for CassandraStore {
    /// Cassandra `timestamp` columns hold milliseconds.
    fn time_precision(&self) -> TimePrecision {
        TimePrecision::Milliseconds
    }

    fn describe(&self) -> String {
        format!("cassandra {}/{}", self.hosts, self.keyspace)
    }

    async fn preflight(&self) -> StoreResult<()> {
        self.check_schema().await
    }

    async fn schema_info(&self) -> StoreResult<SchemaInfo> {
        Ok(schema::schema_info())
    }

    async fn count(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.count_by_status(query).await
    }

    /// Cassandra cannot find a run by its id (the clustering key starts with a time), so
    /// deep verify would have to scan every partition per batch: refused, with the reason.
    async fn read(&self, _keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        Err(StoreError::Permanent(self.context(
            "verify --deep is not supported with a Cassandra primary: Cassandra cannot look runs up by run id (the counts verify works)",
        )))
    }
}

/// Why a session could not be made, with the fix where the cause is known: a refused
/// certificate, a refused login, a TLS-only node dialled in plain text (`tls` off), which
/// drops the connection at the driver's first request, and a node that requires a client
/// certificate when none is set (`client_cert` off), which drops the TLS connection at
/// that request (the driver keeps no TLS alert in its error). What went wrong and the fix
/// come first; the driver's own sentence follows in parentheses.
fn connect_error(e: &scylla::errors::NewSessionError, tls: bool, client_cert: bool) -> String {
    let said = e.to_string();
    if let Some(tls) =
        crate::tls::explain(e, "cassandra.tls").or_else(|| crate::tls::explain_text(&said, "cassandra.tls"))
    {
        return format!("connecting: TLS: {tls}");
    }
    let first_request_dropped = said.contains("Request: OPTIONS") && said.contains("Connection broken");
    let cause = if said.contains("Authentication failed") || said.contains("Provided username") {
        "the node refused the login: check cassandra.user and cassandra.password"
    } else if said.contains("requires authentication") || said.contains("Authentication") && said.contains("required") {
        "the node requires a login: set cassandra.user and cassandra.password"
    } else if !tls && said.contains("connection setup request") && said.contains("frame header") {
        "the node closed the connection at once, as a node that requires TLS does: set cassandra.tls.enabled: true and cassandra.tls.caFile"
    } else if tls && !client_cert && first_request_dropped {
        "the node closed the TLS connection at the first request, as a node that requires a client certificate does: set cassandra.tls.certFile and keyFile (or certData and keyData)"
    } else {
        return format!("connecting: {said}");
    };
    format!("connecting: {cause} (the driver said: {said})")
}

/// The driver's settings from Temporal's config: the nodes (with the port where a host
/// names none), timeout, credentials, preferred datacenter, pool size and TLS. Fails
/// only on the TLS files.
fn session_builder(
    name: &str,
    cfg: &CassandraConfig,
    hosts: &[String],
    keyspace: &str,
    connect_timeout: Duration,
) -> Result<SessionBuilder, String> {
    let port = cfg.port.unwrap_or(DEFAULT_PORT);
    let mut builder = SessionBuilder::new()
        .known_nodes(hosts.iter().map(|h| if h.contains(':') { h.clone() } else { format!("{h}:{port}") }))
        .connection_timeout(connect_timeout)
        // vismig only reads its own tables: no need to fetch every keyspace's schema.
        .keyspaces_to_fetch([keyspace.to_string()]);
    if let Some(user) = cfg.user.as_deref().filter(|u| !u.is_empty()) {
        let password = cfg.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
        builder = builder.user(user, password);
    }
    if let Some(dc) = cfg.datacenter.as_deref().filter(|d| !d.is_empty()) {
        builder = builder.prefer_datacenter(dc.to_string());
    }
    if let Some(n) = cfg.max_conns.and_then(|n| NonZeroUsize::new(n as usize)) {
        builder = builder.pool_size(PoolSize::PerHost(n));
    }
    if let Some(tls) = cfg.tls.as_ref().filter(|t| t.enabled) {
        builder = builder.tls_context(Some(Arc::new(tls_config(name, tls)?)));
    }
    Ok(builder)
}

/// The level every read runs at: Temporal's `consistency.default.consistency`, else LOCAL_QUORUM.
fn read_consistency(name: &str, cfg: &CassandraConfig) -> anyhow::Result<Consistency> {
    match cfg.consistency.as_ref().and_then(|c| c.default.as_ref()).map(|d| d.consistency.as_str()) {
        None => Ok(Consistency::LocalQuorum),
        Some(c) => parse_consistency(c).ok_or_else(|| {
            anyhow::anyhow!(
                "store {name:?}: cassandra.consistency.default.consistency {c:?} is not a consistency level"
            )
        }),
    }
}

pub fn parse_consistency(text: &str) -> Option<Consistency> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        _ => return None,
    })
}

/// `cassandra.tls` on rustls: Temporal's gocql checks nothing unless
/// `enableHostVerification` is on (then chain and name, against `serverName` when set);
/// vismig also checks the chain whenever a CA is given, and warns when nothing is checked.
fn tls_config(name: &str, tls: &Tls) -> Result<rustls::ClientConfig, String> {
    const BLOCK: &str = "cassandra.tls";
    let material = TlsMaterial::load(tls, BLOCK)?;
    let verify = if tls.enable_host_verification == Some(true) {
        Verify::Full
    } else if material.ca.is_some() {
        Verify::ChainOnly
    } else {
        tracing::warn!("{}", crate::tls::unverified_warning(name, BLOCK));
        Verify::Nothing
    };
    crate::tls::client_config(&material, verify, tls.server_name.as_deref(), BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_levels_parse() {
        assert_eq!(parse_consistency("LOCAL_ONE"), Some(Consistency::LocalOne));
        assert_eq!(parse_consistency("bogus"), None);
    }
}
