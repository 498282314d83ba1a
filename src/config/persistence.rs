//! Temporal's own `persistence:` block, in the shape of Temporal's server config
//! (`common/config/config.go`), so vismig can read the file the server already uses.
//! Keys vismig does not need are ignored, as Temporal's config holds many of them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Secret;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    #[serde(default)]
    pub default_store: Option<String>,
    #[serde(default)]
    pub visibility_store: Option<String>,
    #[serde(default)]
    pub secondary_visibility_store: Option<String>,
    #[serde(default)]
    pub datastores: BTreeMap<String, DataStore>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataStore {
    #[serde(default)]
    pub sql: Option<SqlStore>,
    #[serde(default)]
    pub cassandra: Option<CassandraStore>,
    #[serde(default)]
    pub elasticsearch: Option<ElasticsearchStore>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqlStore {
    #[serde(default)]
    pub plugin_name: String,
    #[serde(default)]
    pub database_name: String,
    #[serde(default)]
    pub connect_addr: String,
    #[serde(default)]
    pub connect_protocol: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub connect_attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub max_conns: Option<u32>,
    #[serde(default)]
    pub max_idle_conns: Option<u32>,
    #[serde(default)]
    pub tls: Option<Tls>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CassandraStore {
    #[serde(default)]
    pub hosts: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub keyspace: String,
    #[serde(default)]
    pub datacenter: Option<String>,
    #[serde(default)]
    pub max_conns: Option<u32>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Temporal's `consistency.default.consistency` (vismig reads at it; LOCAL_QUORUM when unset).
    #[serde(default)]
    pub consistency: Option<CassandraConsistency>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CassandraConsistency {
    #[serde(default)]
    pub default: Option<CassandraConsistencySettings>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CassandraConsistencySettings {
    #[serde(default)]
    pub consistency: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchStore {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub url: Option<EsUrl>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Temporal's keys are snake_case here: `visibility`, `secondary_visibility`.
    #[serde(default)]
    pub indices: BTreeMap<String, String>,
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Temporal's `aws-request-signing` (Amazon OpenSearch Service): SigV4 on every request.
    #[serde(default, rename = "aws-request-signing")]
    pub aws_request_signing: Option<AwsRequestSigning>,
}

/// Temporal's `ESAWSRequestSigningConfig`, same keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsRequestSigning {
    #[serde(default)]
    pub enabled: bool,
    /// Empty: `AWS_REGION` from the environment, as Temporal does.
    #[serde(default)]
    pub region: String,
    /// `static`, `environment` or `aws-sdk-default` (any case, as Temporal compares them).
    #[serde(default)]
    pub credential_provider: String,
    #[serde(default, rename = "static")]
    pub static_credentials: AwsStaticCredentials,
}

/// Temporal's `credentialProvider` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsCredentialProvider {
    Static,
    Environment,
    AwsSdkDefault,
}

impl AwsRequestSigning {
    /// The provider, checked as far as the file can tell (the environment and the
    /// default chain are looked at when the store opens); the error names the key.
    pub fn provider(&self) -> Result<AwsCredentialProvider, String> {
        match self.credential_provider.to_ascii_lowercase().as_str() {
            "static" => {
                let s = &self.static_credentials;
                if s.access_key_id.is_empty() || s.secret_access_key.as_ref().is_none_or(|k| k.is_empty()) {
                    return Err("aws-request-signing.static: accessKeyID and secretAccessKey are both needed with credentialProvider static".into());
                }
                Ok(AwsCredentialProvider::Static)
            }
            "environment" => Ok(AwsCredentialProvider::Environment),
            "aws-sdk-default" => Ok(AwsCredentialProvider::AwsSdkDefault),
            other => Err(format!(
                "aws-request-signing.credentialProvider: {other:?} is not one of static, environment, aws-sdk-default"
            )),
        }
    }
}

/// Temporal's `ESAWSStaticCredentialProvider`; its keys are spelt `accessKeyID` etc.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AwsStaticCredentials {
    #[serde(default, rename = "accessKeyID")]
    pub access_key_id: String,
    #[serde(default, rename = "secretAccessKey")]
    pub secret_access_key: Option<Secret>,
    /// Only for temporary credentials from STS.
    #[serde(default)]
    pub token: Option<Secret>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EsUrl {
    #[serde(default)]
    pub scheme: String,
    #[serde(default)]
    pub host: String,
}

/// Temporal's `tls` block (`common/auth/tls.go`), the same for SQL, Cassandra and
/// Elasticsearch; `crate::tls` reads its files and inline data.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub enable_host_verification: Option<bool>,
    #[serde(default)]
    pub server_name: Option<String>,
    /// The base64 of a PEM file, in place of the matching `*File`.
    #[serde(default)]
    pub cert_data: Option<String>,
    #[serde(default)]
    pub key_data: Option<Secret>,
    #[serde(default)]
    pub ca_data: Option<String>,
}

/// SQL plugin names Temporal accepts, and what they mean to vismig.
pub const SQL_PLUGINS: &[(&str, SqlFamily)] = &[
    ("sqlite", SqlFamily::Sqlite),
    ("postgres12", SqlFamily::Postgres),
    ("postgres12_pgx", SqlFamily::Postgres),
    ("mysql8", SqlFamily::Mysql),
    ("postgres", SqlFamily::PostgresStandard),
    ("postgres_pgx", SqlFamily::PostgresStandard),
    ("mysql", SqlFamily::MysqlStandard),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlFamily {
    Sqlite,
    Postgres,
    Mysql,
    PostgresStandard,
    MysqlStandard,
}

pub fn sql_family(plugin: &str) -> Option<SqlFamily> {
    SQL_PLUGINS.iter().find(|(name, _)| *name == plugin).map(|(_, f)| *f)
}
