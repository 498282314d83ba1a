//! One YAML file: Temporal's `persistence:` block plus vismig's `migration:` block.
//! Loading parses, expands `${VAR}` references inside the parsed values (see `env`),
//! and validates; every problem becomes one line that names the field or the line.

pub mod duration;
mod env;
pub mod health;
pub mod migration;
pub mod persistence;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

pub use migration::Migration;
pub use persistence::{DataStore, Persistence, SqlFamily};

/// A password or other secret: never printed by Debug or Display.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Numbers are accepted too: YAML reads an unquoted all-digit password as one.
        // Refused inside the visit of the value, so that the error names the field;
        // never with the value (it may be most of a password).
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Secret, E> {
                Ok(Secret(s.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Secret, E> {
                Ok(Secret(n.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Secret, E> {
                Ok(Secret(n.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Secret, E> {
                Ok(Secret(n.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Secret, E> {
                Ok(Secret(b.to_string()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Secret, E> {
                Ok(Secret(String::new()))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Secret, E> {
                Ok(Secret(String::new()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub persistence: Persistence,
    /// Temporal's own `dynamicConfigClient` block, when vismig reads the server's file.
    #[serde(default)]
    pub dynamic_config_client: Option<DynamicConfigClient>,
    #[serde(default)]
    pub migration: Migration,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DynamicConfigClient {
    #[serde(default)]
    pub filepath: Option<std::path::PathBuf>,
    #[serde(default)]
    pub poll_interval: Option<String>,
}

/// Which role a store plays, and where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRef {
    /// The datastore's name in `persistence.datastores`.
    pub datastore: String,
    /// For Elasticsearch: which index key of `indices` (`visibility` or `secondary_visibility`).
    pub es_index_key: Option<String>,
}

/// Configuration problems, one line each, naming the field.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "config error: {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self { problems: vec![problem.into()] }
    }
}

impl Config {
    /// Reads, expands and validates the config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, |name| std::env::var(name).ok())
    }

    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let expanded = env::expand(text, env).map_err(ConfigError::one)?;
        let config: Config =
            yaml_serde::from_str(&expanded.text).map_err(|e| ConfigError::one(expanded.scrub(&field_error(&e))))?;
        config.validate()?;
        Ok(config)
    }

    /// The primary (source) store.
    pub fn primary(&self) -> StoreRef {
        let name = self.persistence.visibility_store.clone().unwrap_or_default();
        let es = self.is_elasticsearch(&name);
        StoreRef { datastore: name, es_index_key: es.then(|| "visibility".to_string()) }
    }

    /// The secondary (target) store: `secondaryVisibilityStore`, or the primary
    /// Elasticsearch datastore's `indices.secondary_visibility`.
    pub fn secondary(&self) -> StoreRef {
        match &self.persistence.secondary_visibility_store {
            Some(name) => StoreRef {
                datastore: name.clone(),
                es_index_key: self.is_elasticsearch(name).then(|| "visibility".to_string()),
            },
            None => StoreRef {
                datastore: self.persistence.visibility_store.clone().unwrap_or_default(),
                es_index_key: Some("secondary_visibility".to_string()),
            },
        }
    }

    /// Temporal's dynamic-config file: `migration.flip.dynamicConfigFile`, else the
    /// server config's `dynamicConfigClient.filepath`.
    pub fn dynamic_config_file(&self) -> Option<std::path::PathBuf> {
        self.migration
            .flip
            .dynamic_config_file
            .clone()
            .or_else(|| self.dynamic_config_client.as_ref().and_then(|c| c.filepath.clone()))
    }

    pub fn datastore(&self, store: &StoreRef) -> &DataStore {
        &self.persistence.datastores[&store.datastore]
    }

    fn is_elasticsearch(&self, name: &str) -> bool {
        self.persistence.datastores.get(name).is_some_and(|d| d.elasticsearch.is_some())
    }

    /// Validates again after command-line overrides were applied.
    pub fn revalidate(&self) -> Result<(), ConfigError> {
        self.validate()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let p = &self.persistence;
        let known: Vec<&str> = p.datastores.keys().map(String::as_str).collect();
        let known_list = if known.is_empty() { "none".to_string() } else { known.join(", ") };

        for (name, ds) in &p.datastores {
            validate_datastore(name, ds, &mut problems);
        }

        match &p.visibility_store {
            None => problems.push(
                "persistence.visibilityStore: missing (name the primary visibility store, a key of persistence.datastores)"
                    .to_string(),
            ),
            Some(name) if !p.datastores.contains_key(name) => problems.push(format!(
                "persistence.visibilityStore: store {name:?} is not in persistence.datastores (known: {known_list})"
            )),
            Some(_) => {}
        }

        match &p.secondary_visibility_store {
            None => {
                let es_secondary_index = p
                    .visibility_store
                    .as_ref()
                    .and_then(|n| p.datastores.get(n))
                    .and_then(|d| d.elasticsearch.as_ref())
                    .is_some_and(|es| es.indices.contains_key("secondary_visibility"));
                if !es_secondary_index {
                    problems.push(
                        "persistence.secondaryVisibilityStore: missing (name the secondary visibility store, or set indices.secondary_visibility on an Elasticsearch primary)"
                            .to_string(),
                    );
                }
            }
            Some(name) if !p.datastores.contains_key(name) => problems.push(format!(
                "persistence.secondaryVisibilityStore: store {name:?} is not in persistence.datastores (known: {known_list})"
            )),
            Some(name) => {
                if p.visibility_store.as_deref() == Some(name.as_str()) {
                    problems.push(format!(
                        "persistence.secondaryVisibilityStore: {name:?} is also the visibilityStore; the secondary must be another store"
                    ));
                }
                let ds = &p.datastores[name];
                if ds.cassandra.is_some() {
                    problems.push(format!(
                        "persistence.secondaryVisibilityStore: {name:?} is Cassandra, which can only be read (Temporal does not write visibility to Cassandra any more)"
                    ));
                }
                if let Some(sql) = &ds.sql
                    && matches!(
                        persistence::sql_family(&sql.plugin_name),
                        Some(SqlFamily::PostgresStandard | SqlFamily::MysqlStandard)
                    )
                {
                    problems.push(format!(
                        "persistence.secondaryVisibilityStore: {name:?} uses pluginName {:?}, a standard visibility schema, which can only be read; use an advanced plugin (postgres12, mysql8, sqlite)",
                        sql.plugin_name
                    ));
                }
            }
        }

        validate_migration(&self.migration, &mut problems);
        self.validate_bulk_load(&mut problems);
        if problems.is_empty() { Ok(()) } else { Err(ConfigError { problems }) }
    }
}

impl Config {
    /// Each bulk-load option belongs to one kind of secondary.
    fn validate_bulk_load(&self, problems: &mut Vec<String>) {
        let b = &self.migration.bulk_load;
        if !b.defer_indexes && !b.defer_refresh {
            return;
        }
        let secondary = self.secondary();
        let Some(ds) = self.persistence.datastores.get(&secondary.datastore) else { return };
        let postgres =
            ds.sql.as_ref().is_some_and(|s| persistence::sql_family(&s.plugin_name) == Some(SqlFamily::Postgres));
        if b.defer_indexes && !postgres {
            problems.push(format!(
                "migration.bulkLoad.deferIndexes: only for a PostgreSQL secondary; {:?} is not one{}",
                secondary.datastore,
                if ds.elasticsearch.is_some() { " (for Elasticsearch use deferRefresh)" } else { "" }
            ));
        }
        if b.defer_refresh && ds.elasticsearch.is_none() {
            problems.push(format!(
                "migration.bulkLoad.deferRefresh: only for an Elasticsearch or OpenSearch secondary; {:?} is not one{}",
                secondary.datastore,
                if postgres { " (for PostgreSQL use deferIndexes)" } else { "" }
            ));
        }
    }
}

fn validate_datastore(name: &str, ds: &DataStore, problems: &mut Vec<String>) {
    let at = format!("persistence.datastores.{name}");
    let kinds = [ds.sql.is_some(), ds.cassandra.is_some(), ds.elasticsearch.is_some()].iter().filter(|k| **k).count();
    if kinds != 1 {
        problems.push(format!("{at}: needs exactly one of sql, cassandra or elasticsearch (found {kinds})"));
        return;
    }
    if let Some(sql) = &ds.sql {
        match persistence::sql_family(&sql.plugin_name) {
            None => {
                let supported: Vec<&str> = persistence::SQL_PLUGINS.iter().map(|(n, _)| *n).collect();
                problems.push(format!(
                    "{at}.sql.pluginName: unsupported {:?} (supported: {})",
                    sql.plugin_name,
                    supported.join(", ")
                ));
            }
            Some(family) => {
                if sql.database_name.is_empty() {
                    problems.push(format!("{at}.sql.databaseName: missing"));
                }
                let unix = sql.connect_protocol.as_deref() == Some("unix");
                if family != SqlFamily::Sqlite && sql.connect_addr.is_empty() {
                    problems.push(format!("{at}.sql.connectAddr: missing (host:port)"));
                } else if family != SqlFamily::Sqlite && !unix && !valid_host_port(&sql.connect_addr) {
                    problems.push(format!(
                        "{at}.sql.connectAddr: {:?} is not host:port (a port is a number up to 65535; IPv6 as [::1]:5432)",
                        sql.connect_addr
                    ));
                }
                if matches!(family, SqlFamily::Postgres | SqlFamily::PostgresStandard)
                    && let Some(mode) = sql.connect_attributes.get("sslmode")
                    && !["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].contains(&mode.as_str())
                {
                    problems.push(format!(
                        "{at}.sql.connectAttributes.sslmode: {mode:?} is not a PostgreSQL sslmode (disable, allow, prefer, require, verify-ca, verify-full)"
                    ));
                }
            }
        }
        if sql.max_conns == Some(0) {
            problems.push(format!("{at}.sql.maxConns: must be at least 1"));
        }
    }
    if let Some(c) = &ds.cassandra {
        if c.hosts.trim().is_empty() {
            problems.push(format!("{at}.cassandra.hosts: missing (comma-separated host names)"));
        }
        if c.keyspace.is_empty() {
            problems.push(format!("{at}.cassandra.keyspace: missing"));
        } else if !c.keyspace.trim().chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            problems.push(format!(
                "{at}.cassandra.keyspace: {:?} is not a plain keyspace name (letters, digits, _)",
                c.keyspace
            ));
        }
        if let Some(t) = &c.connect_timeout
            && duration::parse_duration_or_seconds(t).ok().is_none_or(|d| d.is_zero())
        {
            problems.push(format!("{at}.cassandra.connectTimeout: {t:?} is not a duration (use e.g. 10s, 600ms)"));
        }
        if let Some(level) = c.consistency.as_ref().and_then(|x| x.default.as_ref()).map(|d| d.consistency.as_str())
            && crate::store::cassandra::parse_consistency(level).is_none()
        {
            problems.push(format!(
                "{at}.cassandra.consistency.default.consistency: {level:?} is not a consistency level (e.g. LOCAL_QUORUM, QUORUM, ONE)"
            ));
        }
    }
    if let Some(es) = &ds.elasticsearch {
        if es.url.as_ref().is_none_or(|u| u.host.is_empty()) {
            problems.push(format!("{at}.elasticsearch.url.host: missing (host:port)"));
        }
        if let Some(u) = &es.url
            && !u.scheme.is_empty()
            && u.scheme != "http"
            && u.scheme != "https"
        {
            problems.push(format!("{at}.elasticsearch.url.scheme: must be http or https, not {:?}", u.scheme));
        }
        if !es.indices.contains_key("visibility") {
            problems.push(format!("{at}.elasticsearch.indices.visibility: missing"));
        }
        if let Some(v) = &es.version
            && !v.is_empty()
            && v != "v7"
            && v != "v8"
        {
            problems.push(format!("{at}.elasticsearch.version: must be v7 or v8 (or empty), not {v:?}"));
        }
        if let Some(Err(e)) = es.aws_request_signing.as_ref().filter(|a| a.enabled).map(|a| a.provider()) {
            problems.push(format!("{at}.elasticsearch.{e}"));
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address, the port a number.
fn valid_host_port(addr: &str) -> bool {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, "")) => !host.is_empty(),
            Some((host, port)) => !host.is_empty() && port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok()),
            None => false,
        };
    }
    match addr.split(':').count() {
        1 => !addr.is_empty(),
        2 => addr.split_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
        _ => addr.parse::<std::net::Ipv6Addr>().is_ok(),
    }
}

fn validate_migration(m: &Migration, problems: &mut Vec<String>) {
    if !(1..=10_000).contains(&m.batch_size) {
        problems.push(format!("migration.batchSize: {} is out of range (1 to 10000)", m.batch_size));
    }
    if !(1..=64).contains(&m.concurrency) {
        problems.push(format!("migration.concurrency: {} is out of range (1 to 64)", m.concurrency));
    }
    if m.rate.records_per_second > 10_000_000 {
        problems.push(format!(
            "migration.rate.recordsPerSecond: {} is out of range (0 = unlimited, up to 10000000)",
            m.rate.records_per_second
        ));
    }
    if m.rate.burst == Some(0) {
        problems.push("migration.rate.burst: must be at least 1".to_string());
    }
    if m.checkpoint.path.as_os_str().is_empty() {
        problems.push("migration.checkpoint.path: missing".to_string());
    }
    if m.dead_letter.path.as_os_str().is_empty() {
        problems.push("migration.deadLetter.path: missing".to_string());
    }
    if !m.metrics.listen.is_empty() && m.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
        problems
            .push(format!("migration.metrics.listen: {:?} is not an address like 127.0.0.1:9090", m.metrics.listen));
    }
    if let Some(token) = &m.metrics.control_token {
        let at = "migration.metrics.controlToken";
        match (&token.file, &token.env) {
            (Some(_), Some(_)) | (None, None) => {
                problems.push(format!("{at}: needs exactly one of file (a path) or env (a variable name)"))
            }
            (Some(file), None) if file.as_os_str().is_empty() => problems.push(format!("{at}.file: empty path")),
            (None, Some(name)) if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                problems.push(format!("{at}.env: {name:?} is not an environment variable name (letters, digits, _)"))
            }
            _ => {}
        }
    }
    for (i, ns) in m.namespaces.iter().enumerate() {
        if ns.trim().is_empty() {
            problems.push(format!("migration.namespaces[{i}]: empty namespace id"));
        }
    }
    for (ns, map) in &m.search_attribute_aliases {
        let mut seen = std::collections::BTreeSet::new();
        for (field, alias) in map {
            let at = format!("migration.searchAttributeAliases.{ns}.{field}");
            if !crate::attribute_names::is_preallocated(field) {
                problems.push(format!(
                    "{at}: {field:?} is not a pre-allocated SQL field name (Keyword01-10, Int01-03, Double01-03, Bool01-03, Datetime01-03, Text01-03, KeywordList01-03)"
                ));
            }
            if alias.trim().is_empty() {
                problems.push(format!("{at}: empty alias"));
            } else if !seen.insert(alias) {
                problems.push(format!("{at}: alias {alias:?} is mapped from two fields"));
            }
        }
    }
    validate_flip_target(&m.flip, problems);
    m.health.validate("migration.health", problems);
}

fn validate_flip_target(flip: &migration::Flip, problems: &mut Vec<String>) {
    let Some(target) = &flip.target else { return };
    let at = "migration.flip.target.configMap";
    let Some(cm) = &target.config_map else {
        problems.push(
            "migration.flip.target: needs configMap: { namespace, name, key } (or leave target out to edit migration.flip.dynamicConfigFile)"
                .to_string(),
        );
        return;
    };
    if flip.dynamic_config_file.is_some() {
        problems.push(format!(
            "migration.flip.dynamicConfigFile: set together with {at}; keep one (in Kubernetes, the ConfigMap that Temporal's pods mount)"
        ));
    }
    let dns_label = |s: &str| {
        s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if cm.namespace.is_empty() {
        problems.push(format!("{at}.namespace: missing (the Kubernetes namespace of the ConfigMap)"));
    } else if !dns_label(&cm.namespace) {
        problems.push(format!(
            "{at}.namespace: {:?} is not a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)",
            cm.namespace
        ));
    }
    if cm.name.is_empty() {
        problems.push(format!("{at}.name: missing (the ConfigMap that holds Temporal's dynamic config)"));
    } else if cm.name.len() > 253 || !cm.name.split('.').all(|part| !part.is_empty() && dns_label(part)) {
        problems.push(format!(
            "{at}.name: {:?} is not a ConfigMap name (lower-case letters, digits, '-' and '.', at most 253)",
            cm.name
        ));
    }
    if cm.key.is_empty() {
        problems.push(format!(
            "{at}.key: missing (the key of the ConfigMap's data that holds the YAML, e.g. dynamic_config.yaml)"
        ));
    } else if cm.key.len() > 253 || !cm.key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        problems.push(format!("{at}.key: {:?} is not a ConfigMap key (letters, digits, '-', '_' and '.')", cm.key));
    }
    if let Some(url) = &cm.api_server {
        let ok = reqwest::Url::parse(url).is_ok_and(|u| {
            (u.scheme() == "https" || u.scheme() == "http") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if !ok {
            problems.push(format!("{at}.apiServer: {url:?} is not a URL like https://10.0.0.1:6443"));
        }
    }
}

/// An error of reading the expanded document into the config, as one line naming the
/// field. Its position is left out: it is a position in the expanded document (which
/// `env::expand` re-writes), not in the operator's file. The message may quote a value
/// from the environment; the caller scrubs it.
fn field_error(e: &yaml_serde::Error) -> String {
    let mut msg = e.to_string().replace('\n', " ");
    if let Some(loc) = e.location() {
        msg = msg.replace(&format!(" at line {} column {}", loc.line(), loc.column()), "");
    }
    msg
}

#[cfg(test)]
mod tests;
