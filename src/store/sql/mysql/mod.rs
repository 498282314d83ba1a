//! MySQL visibility: MySQL 8 advanced visibility (`schema/mysql/v8/visibility`, plugin
//! `mysql8`) as source and sink, and MySQL 5.7 standard visibility
//! (`schema/mysql/v57/visibility`, plugin `mysql`) as a source only.
//!
//! Stored exactly as Temporal's MySQL plugin stores it: DATETIME(6) as naive UTC
//! truncated to microseconds, `search_attributes` as JSON text with KeywordList values as
//! JSON arrays, and the custom and CHASM search attributes copied into
//! `custom_search_attributes` and `chasm_search_attributes` in the same transaction, with
//! the same JSON and `_version`. Writes use Temporal's own guard
//! (`c = IF(_version < VALUES(_version), VALUES(c), c)`, `_version` assigned last).
//! Values MySQL 8 cannot hold (a memo over 64 KiB, a 256-character id or Keyword) are
//! refused per record, never truncated.

mod codec;
mod health;
mod read;
mod schema;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::{ConnectOptions, Executor};
use tokio::sync::OnceCell;

use super::{CONNECT_TIMEOUT, MysqlLogin, classify, parse_address, probe, sql_tls};
use crate::config::persistence::{SqlStore, Tls};
use crate::record::{RecordKey, TimePrecision, VisibilityRecord};
use crate::store::schema::SchemaInfo;
use crate::store::{CountQuery, Counts, Store, StoreResult};
use crate::tls::Verify;

/// MySQL's limit on placeholders in one prepared statement.
const MAX_BINDS: usize = 65_535;

/// Parameters of Go's MySQL driver that Temporal's DSN may carry in `connectAttributes`;
/// they configure the client, not the session, and vismig sets their equivalents itself.
const DRIVER_PARAMETERS: [&str; 22] = [
    "allowAllFiles",
    "allowCleartextPasswords",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "allowOldPasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "compress",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeout",
    "writeTimeout",
];

pub struct MysqlStore {
    name: String,
    /// `host:port` (or the socket path) and database, for logs and errors.
    location: String,
    database: String,
    /// Plugin `mysql`: the MySQL 5.7 standard schema, read only.
    standard: bool,
    pool: MySqlPool,
    /// For the preflight's probe; never printed (it holds the password).
    options: MySqlConnectOptions,
    /// Whether the login goes over TLS and with a client certificate: narrows a 1045.
    login: MysqlLogin,
    schema: OnceCell<schema::Schema>,
}

impl MysqlStore {
    /// Rows of a fixed query against this store's database (Temporal's namespace
    /// registry when this is the default store).
    pub async fn raw_rows(&self, sql: &'static str) -> StoreResult<Vec<MySqlRow>> {
        sqlx::query(sql).fetch_all(&self.pool).await.map_err(|e| classify(&self.context("reading namespaces"), e))
    }

    pub async fn open(name: &str, cfg: &SqlStore) -> anyhow::Result<Self> {
        let standard = match cfg.plugin_name.as_str() {
            "mysql8" => false,
            "mysql" => true,
            other => anyhow::bail!("store {name:?}: pluginName {other:?} is not a MySQL plugin (mysql8, mysql)"),
        };
        let mut options = MySqlConnectOptions::new()
            .database(&cfg.database_name)
            .statement_cache_capacity(64)
            // Multi-row statements are long: never log their text.
            .disable_statement_logging();
        if cfg.connect_protocol.as_deref() == Some("unix") {
            options = options.socket(&cfg.connect_addr);
        } else {
            let (host, port) =
                parse_address(&cfg.connect_addr, 3306).map_err(|e| anyhow::anyhow!("store {name:?}: {e}"))?;
            options = options.host(&host).port(port);
        }
        if let Some(user) = cfg.user.as_deref().filter(|u| !u.is_empty()) {
            options = options.username(user);
        }
        if let Some(password) = cfg.password.as_ref().filter(|p| !p.is_empty()) {
            options = options.password(password.expose());
        }
        let block = cfg.tls.as_ref().filter(|t| t.enabled);
        let login = MysqlLogin {
            tls: block.is_some() || cfg.connect_attributes.get("tls").is_some_and(|v| !v.is_empty() && v != "false"),
            cert: block.is_some_and(|t| t.cert_file.is_some() || t.cert_data.is_some()),
        };
        options = match block {
            Some(tls) => with_tls(options, name, &tls_host(cfg), tls)?,
            None => options.ssl_mode(
                driver_tls_mode(cfg.connect_attributes.get("tls"))
                    .map_err(|e| anyhow::anyhow!("store {name:?}: sql.connectAttributes.tls {e}"))?,
            ),
        };
        let session = Arc::new(
            session_statements(&cfg.connect_attributes)
                .map_err(|e| anyhow::anyhow!("store {name:?}: sql.connectAttributes: {e}"))?,
        );
        let pool = MySqlPoolOptions::new()
            .max_connections(cfg.max_conns.unwrap_or(10).max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let session = session.clone();
                Box::pin(async move {
                    for statement in session.iter() {
                        conn.execute(sqlx::AssertSqlSafe(statement.clone())).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        Ok(Self {
            name: name.to_string(),
            location: cfg.connect_addr.clone(),
            database: cfg.database_name.clone(),
            standard,
            pool,
            options,
            login,
            schema: OnceCell::new(),
        })
    }

    fn context(&self, what: &str) -> String {
        format!("store {:?} ({}): {what}", self.name, self.describe())
    }
}

/// `sql.tls` as Temporal's mysql plugin reads it: the name is checked with
/// enableHostVerification (`VERIFY_IDENTITY`); a CA alone makes vismig check the chain
/// (`VERIFY_CA`) where Temporal's driver checks nothing. The inline forms too.
fn with_tls(options: MySqlConnectOptions, name: &str, host: &str, tls: &Tls) -> anyhow::Result<MySqlConnectOptions> {
    let (material, verify) = sql_tls(name, host, tls)?;
    let mut o = options.ssl_mode(match verify {
        Verify::Full => MySqlSslMode::VerifyIdentity,
        Verify::ChainOnly => MySqlSslMode::VerifyCa,
        Verify::Nothing => MySqlSslMode::Required,
    });
    if let Some(ca) = material.ca {
        o = o.ssl_ca_from_pem(ca);
    }
    if let Some(id) = material.identity {
        o = o.ssl_client_cert_from_pem(id.cert).ssl_client_key_from_pem(id.key);
    }
    Ok(o)
}

/// The host the certificate is checked against: connectAddr's (a unix socket has none).
fn tls_host(cfg: &SqlStore) -> String {
    parse_address(&cfg.connect_addr, 3306).map(|(host, _)| host).unwrap_or_default()
}

/// Go's MySQL driver's own `tls` parameter, for a config that sets it in
/// connectAttributes instead of a `tls` block: no TLS unless it says so, as Temporal.
fn driver_tls_mode(value: Option<&String>) -> Result<MySqlSslMode, String> {
    Ok(match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "false") => MySqlSslMode::Disabled,
        Some("true") => MySqlSslMode::VerifyIdentity,
        Some("skip-verify") => MySqlSslMode::Required,
        Some("preferred") => MySqlSslMode::Preferred,
        Some(other) => {
            return Err(format!(
                "{other:?} is not one of true, false, skip-verify, preferred (for a CA or client certificate, use sql.tls)"
            ));
        }
    })
}

#[async_trait]
impl Store for MysqlStore {
    fn describe(&self) -> String {
        format!("mysql {}/{}", self.location, self.database)
    }

    async fn preflight(&self) -> StoreResult<()> {
        probe(&self.options, &self.context(&format!("connecting to {}", self.location)), Some(self.login)).await?;
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
        self.health_readings(probe).await
    }
}

/// The statements run on every new connection: READ COMMITTED as Temporal's plugin sets
/// it (no gap locks between parallel writers), strict mode so that nothing is ever
/// truncated silently, then each of `connectAttributes` as a session variable, as Go's
/// driver does with parameters it does not know itself.
fn session_statements(attributes: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    if !attributes.keys().any(|k| k == "tx_isolation" || k == "transaction_isolation") {
        out.push("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_string());
    }
    out.push("SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')".to_string());
    for (key, value) in attributes {
        if DRIVER_PARAMETERS.contains(&key.as_str()) || key == "tls" {
            tracing::debug!(attribute = %key, "connect attribute of Go's MySQL driver ignored: vismig sets its own equivalent");
            continue;
        }
        let valid_key = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(format!("{key:?} is not a session variable name"));
        }
        out.push(format!("SET SESSION {key} = {}", session_value(value)));
    }
    Ok(out)
}

/// A session variable's value: numbers and bare words (ON, READ_COMMITTED) as they are,
/// anything else as a quoted string (Temporal's own default is `'READ-COMMITTED'`, quotes
/// included).
fn session_value(value: &str) -> String {
    let v = value.trim();
    let unquoted =
        ['\'', '"'].iter().find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)).filter(|_| v.len() >= 2));
    let bare = !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if unquoted.is_none() && (bare || v.parse::<f64>().is_ok_and(f64::is_finite)) {
        return v.to_string();
    }
    let s = unquoted.unwrap_or(v);
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Keys grouped by namespace, in first-seen order, so that each lookup is one range of
/// the primary key.
fn by_namespace<'a>(keys: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<(String, Vec<&'a String>)> {
    let mut out: Vec<(String, Vec<&'a String>)> = Vec::new();
    let mut index: HashMap<&'a String, usize> = HashMap::new();
    for (namespace, run) in keys {
        let i = *index.entry(namespace).or_insert_with(|| {
            out.push((namespace.clone(), Vec::new()));
            out.len() - 1
        });
        out[i].1.push(run);
    }
    out
}

/// A key as the primary key compares it: Temporal's tables use case-insensitive,
/// PAD SPACE collations.
fn key_of(namespace_id: &str, run_id: &str) -> (String, String) {
    (namespace_id.trim_end().to_lowercase(), run_id.trim_end().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_attributes_become_session_variables() {
        let attrs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let s = session_statements(&attrs(&[])).unwrap();
        assert_eq!(s[0], "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
        assert!(s[1].contains("STRICT_ALL_TABLES"));
        let s = session_statements(&attrs(&[
            ("tx_isolation", "'READ-COMMITTED'"),
            ("parseTime", "true"),
            ("innodb_lock_wait_timeout", "30"),
            ("time_zone", "+00:00"),
            ("autocommit", "ON"),
        ]))
        .unwrap();
        assert!(!s.iter().any(|x| x.contains("ISOLATION LEVEL")), "{s:?}");
        assert!(!s.iter().any(|x| x.contains("parseTime")), "{s:?}");
        assert!(s.contains(&"SET SESSION tx_isolation = 'READ-COMMITTED'".to_string()), "{s:?}");
        assert!(s.contains(&"SET SESSION innodb_lock_wait_timeout = 30".to_string()), "{s:?}");
        assert!(s.contains(&"SET SESSION time_zone = '+00:00'".to_string()), "{s:?}");
        assert!(s.contains(&"SET SESSION autocommit = ON".to_string()), "{s:?}");
        assert_eq!(session_value("it's"), "'it''s'");
        assert_eq!(session_value("READ-COMMITTED"), "'READ-COMMITTED'");
        assert_eq!(session_value("-1"), "-1");
        assert_eq!(session_value("\"quoted\""), "'quoted'");
        assert!(
            session_statements(&attrs(&[("x; DROP TABLE t", "1")])).unwrap_err().contains("not a session variable")
        );
    }

    #[test]
    fn keys_compare_like_the_primary_key() {
        assert_eq!(key_of("NS ", "AbC"), key_of("ns", "abc"));
        let (a, b, c) = ("a".to_string(), "b".to_string(), "r".to_string());
        let groups = by_namespace([(&a, &c), (&b, &c), (&a, &c)].into_iter());
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, "a");
        assert_eq!(groups[0].1.len(), 2);
    }
}
