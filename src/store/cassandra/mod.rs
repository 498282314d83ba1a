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
        let builder = session_builder(cfg, &hosts, &keyspace, connect_timeout)
            .map_err(|e| anyhow::anyhow!("store {name:?} ({describe}): tls: {e}"))?;
        let consistency = read_consistency(name, cfg)?;
        // The driver's timeout covers the TCP connect only: a node that accepts the
        // connection and never answers the handshake would hold the start for a minute.
        let session = match tokio::time::timeout(connect_timeout, builder.build()).await {
            Ok(session) => session.map_err(|e| anyhow::anyhow!("store {name:?} ({describe}): connecting: {e}"))?,
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

/// The driver's settings from Temporal's config: the nodes (with the port where a host
/// names none), timeout, credentials, preferred datacenter, pool size and TLS. Fails
/// only on the TLS files.
fn session_builder(
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
        builder = builder.tls_context(Some(Arc::new(tls_config(tls)?)));
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

/// rustls only (no OpenSSL): the CA file's roots, an optional client certificate, and
/// Temporal's `enableHostVerification` (default off: the chain is verified, the name is not).
fn tls_config(tls: &Tls) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let ca = tls
        .ca_file
        .as_deref()
        .filter(|f| !f.is_empty())
        .ok_or("caFile is required with tls.enabled (vismig does not read the system trust store for Cassandra)")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("caFile {ca}: {e}"))? {
        roots.add(cert.map_err(|e| format!("caFile {ca}: {e}"))?).map_err(|e| format!("caFile {ca}: {e}"))?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
        if tls.enable_host_verification.unwrap_or(false) { verifier } else { Arc::new(ChainOnly(verifier)) };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (tls.cert_file.as_deref().filter(|f| !f.is_empty()), tls.key_file.as_deref().filter(|f| !f.is_empty())) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("certFile {cert}: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("keyFile {key}: {e}"))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| e.to_string())
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err("certFile and keyFile go together".into()),
    }
}

/// Methods of `ServerCertVerifier` with one signature that `ChainOnly` passes on as they are.
macro_rules! delegate_signature_checks {
    ($($method:ident),*) => {$(
        fn $method(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.0.$method(message, cert, dss)
        }
    )*};
}

/// Verifies the chain and signatures, accepting a certificate issued for another name
/// (Temporal's `enableHostVerification: false`, its default for Cassandra).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    // rustls asks for the TLS 1.2 and the TLS 1.3 handshake signature checks apart; this
    // verifier relaxes the name only, so both pass straight to the wrapped one.
    delegate_signature_checks!(verify_tls12_signature, verify_tls13_signature);

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
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
