//! PostgreSQL visibility: the advanced schema (`postgresql/v12`, plugins `postgres12`,
//! `postgres12_pgx`) as source and sink, the standard schema (`postgresql/v96`, plugins
//! `postgres`, `postgres_pgx`, Temporal up to v1.23) as source.
//!
//! Writes are one multi-row `INSERT … ON CONFLICT … DO UPDATE … WHERE _version <
//! excluded._version` per batch, Temporal's own guard; `RETURNING (xmax = 0)` tells
//! inserted rows from updated ones in the same round trip.

mod codec;
mod health;
mod read;
mod schema;
mod write;

use async_trait::async_trait;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use tokio::sync::OnceCell;

use super::{CONNECT_TIMEOUT, classify, parse_address, probe, sql_tls};
use crate::config::SqlFamily;
use crate::config::persistence::{SqlStore, Tls};
use crate::record::{RecordKey, TimePrecision, VisibilityRecord};
use crate::store::schema::SchemaInfo;
use crate::store::{CountQuery, Counts, Store, StoreResult};
use crate::tls::Verify;

/// PostgreSQL's limit on bind parameters per statement (a u16 in the protocol).
const MAX_BINDS: usize = 65_535;

pub struct PostgresStore {
    name: String,
    address: String,
    database: String,
    standard: bool,
    pool: PgPool,
    /// For the preflight's probe; never printed (it holds the password).
    options: PgConnectOptions,
    schema: OnceCell<schema::Schema>,
}

impl PostgresStore {
    /// Rows of a fixed query against this store's database (Temporal's namespace
    /// registry when this is the default store).
    pub async fn raw_rows(&self, sql: &'static str) -> StoreResult<Vec<PgRow>> {
        sqlx::query(sql).fetch_all(&self.pool).await.map_err(|e| classify(&self.context("reading namespaces"), e))
    }

    pub async fn open(name: &str, cfg: &SqlStore, family: SqlFamily) -> anyhow::Result<Self> {
        let (host, port) =
            parse_address(&cfg.connect_addr, 5432).map_err(|e| anyhow::anyhow!("store {name:?}: {e}"))?;
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&host)
            .port(port)
            .database(&cfg.database_name)
            .application_name("vismig")
            .disable_statement_logging();
        if let Some(user) = &cfg.user {
            options = options.username(user);
        }
        if let Some(password) = &cfg.password {
            options = options.password(password.expose());
        }
        // No TLS unless asked for, as Temporal's plugin (sslmode=disable): a server that
        // requires it refuses with a line that says to set sql.tls.enabled.
        options = match &cfg.tls {
            Some(tls) if tls.enabled => with_tls(options, name, &host, tls)?,
            _ => options.ssl_mode(PgSslMode::Disable),
        };
        // Temporal passes connectAttributes as connection parameters; sslmode is the
        // one that changes how we connect, the others are session settings.
        for (key, value) in &cfg.connect_attributes {
            if key == "sslmode" {
                options = options.ssl_mode(value.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "store {name:?}: sql.connectAttributes.sslmode {value:?} is not a PostgreSQL sslmode"
                    )
                })?);
            } else {
                options = options.options([(key.as_str(), value.as_str())]);
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_conns.unwrap_or(8).max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options.clone());
        Ok(Self {
            name: name.to_string(),
            address: format!("{host}:{port}"),
            database: cfg.database_name.clone(),
            standard: family == SqlFamily::PostgresStandard,
            pool,
            options,
            schema: OnceCell::new(),
        })
    }

    fn context(&self, what: &str) -> String {
        format!("store {:?} ({}): {what}", self.name, self.describe())
    }
}

/// `sql.tls` as Temporal's postgres plugins read it: sslmode `require`, or
/// `verify-full` with enableHostVerification; a CA makes `require` check the chain, as
/// lib/pq and pgx do (`verify-ca`). The inline caData/certData/keyData forms too.
fn with_tls(options: PgConnectOptions, name: &str, host: &str, tls: &Tls) -> anyhow::Result<PgConnectOptions> {
    let (material, verify) = sql_tls(name, host, tls)?;
    let mut o = options.ssl_mode(match verify {
        Verify::Full => PgSslMode::VerifyFull,
        Verify::ChainOnly => PgSslMode::VerifyCa,
        Verify::Nothing => PgSslMode::Require,
    });
    if let Some(ca) = material.ca {
        o = o.ssl_root_cert_from_pem(ca);
    }
    if let Some(id) = material.identity {
        o = o.ssl_client_cert_from_pem(id.cert).ssl_client_key_from_pem(id.key);
    }
    Ok(o)
}

#[async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> String {
        format!("postgres {}/{}", self.address, self.database)
    }

    async fn preflight(&self) -> StoreResult<()> {
        probe(&self.options, &self.context(&format!("connecting to {}", self.address)), None).await?;
        self.schema().await.map(|_| ())
    }

    async fn schema_info(&self) -> StoreResult<SchemaInfo> {
        self.schema_versions().await
    }

    async fn count(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.count_by_status(query).await
    }

    async fn read(&self, keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        self.read_records(keys).await
    }

    /// Temporal truncates times to microseconds for SQL, and so does every writer here.
    fn time_precision(&self) -> TimePrecision {
        TimePrecision::Microseconds
    }

    async fn health(&self, probe: crate::store::health::Probe<'_>) -> StoreResult<Vec<crate::store::health::Reading>> {
        self.health_readings(probe.role).await
    }
}
