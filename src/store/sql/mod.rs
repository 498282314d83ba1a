//! SQL visibility stores: one folder per dialect (`postgres/`, `mysql/`, `sqlite/`), each
//! with the files every store has, and here what the dialects share: the base columns
//! Temporal writes, reaching a server and classifying its errors (`connect`, `errors`),
//! the key-range queries and cursors (`query`), rows to records and dead letters
//! (`rows`), records to bound rows (`encoded`), and the write outcomes (`outcome`).

pub mod mysql;
pub mod postgres;
pub mod sqlite;

mod connect;
mod encoded;
mod errors;
mod outcome;
mod query;
mod rows;

pub use super::run_range::{RunRange, StoredKey};
pub use connect::{CONNECT_TIMEOUT, SQL_TLS, parse_address, probe, sql_tls};
pub use errors::{MysqlLogin, classify, classify_login};
pub use query::{KeySql, run_cursor};

/// The columns Temporal writes (`sqlplugin.DbFields`), in its order; `_version` is last
/// because MySQL applies ON DUPLICATE KEY UPDATE assignments left to right.
/// Generated search-attribute columns are never written.
pub const BASE_COLUMNS: [&str; 21] = [
    "namespace_id",
    "run_id",
    "workflow_type_name",
    "workflow_id",
    "start_time",
    "execution_time",
    "status",
    "close_time",
    "history_length",
    "history_size_bytes",
    "execution_duration",
    "state_transition_count",
    "memo",
    "encoding",
    "task_queue",
    "search_attributes",
    "parent_workflow_id",
    "parent_run_id",
    "root_workflow_id",
    "root_run_id",
    "_version",
];

/// The columns of the standard `executions_visibility` (PostgreSQL 9.6, MySQL 5.7, read
/// only): no version, no search attributes, no size, duration, transition, parent or
/// root columns.
const STANDARD_COLUMNS: [&str; 12] = [
    "namespace_id",
    "run_id",
    "start_time",
    "execution_time",
    "workflow_id",
    "workflow_type_name",
    "status",
    "close_time",
    "history_length",
    "memo",
    "encoding",
    "task_queue",
];

/// Base columns the advanced schema gained after 1.3 (Temporal v1.21-v1.22, the first
/// releases with Dual Visibility): 1.4 duration, transitions and parent ids (v1.23), 1.5/1.6
/// root ids (v1.24/v1.25), 1.9 `_version` (v1.27). A schema without them is read with
/// Temporal's defaults for them (NULL, `''`, 0) and written without them.
pub const ADDED_AFTER_1_3: &[&str] = {
    // VERSIONED_FIELDS in the order Temporal added them: `search_attributes` (1.2) and
    // `history_size_bytes` (1.3) come first, every later one is here.
    crate::store::schema::VERSIONED_FIELDS.split_at(2).1
};

/// The base columns every advanced schema vismig reads has (1.3, Temporal v1.21, on).
fn required_columns() -> impl Iterator<Item = &'static str> {
    BASE_COLUMNS.into_iter().filter(|c| !ADDED_AFTER_1_3.contains(c))
}

/// How an operator upgrades an advanced SQL schema with Temporal's own tool.
pub fn upgrade_hint(plugin: &str, database: &str, schema_dir: &str) -> String {
    format!(
        "temporal-sql-tool --plugin {plugin} --db {database} update-schema -d ./schema/{schema_dir}/versioned (the schema directory of the Temporal release the cluster runs)"
    )
}

/// Every namespace record in the `namespaces` table of Temporal's default SQL store (the
/// persistence database, not visibility). Ids are stored as 16 bytes.
pub async fn namespace_rows(
    name: &str,
    cfg: &crate::config::persistence::SqlStore,
) -> anyhow::Result<Vec<super::namespaces::NamespaceRecord>> {
    use crate::config::SqlFamily;
    use sqlx::Row;
    type Raw = (String, Vec<u8>, Vec<u8>, String);
    let query = "SELECT name, id, data, data_encoding FROM namespaces";
    // Each dialect's store has its own row type; the four columns decode the same way.
    macro_rules! decode {
        ($store:expr) => {
            $store
                .raw_rows(query)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect::<Result<_, _>>()
        };
    }
    let rows: Vec<Raw> = match crate::config::persistence::sql_family(&cfg.plugin_name) {
        Some(family @ (SqlFamily::Postgres | SqlFamily::PostgresStandard)) => {
            decode!(postgres::PostgresStore::open(name, cfg, family).await?)
        }
        Some(SqlFamily::Mysql | SqlFamily::MysqlStandard) => decode!(mysql::MysqlStore::open(name, cfg).await?),
        Some(SqlFamily::Sqlite) => decode!(sqlite::SqliteStore::open(name, cfg).await?),
        None => anyhow::bail!("persistence.datastores.{name}.sql.pluginName {:?} is not supported", cfg.plugin_name),
    }
    // A name that is not text or a NULL id (a table edited by hand) panicked here.
    .map_err(|e: sqlx::Error| anyhow::anyhow!("store {name:?}: a row of the namespaces table cannot be read: {e}"))?;
    rows.into_iter()
        .map(|(n, id, data, encoding)| {
            let id = uuid::Uuid::from_slice(&id)
                .map_err(|_| anyhow::anyhow!("namespace {n:?} in store {name:?} has an id that is not 16 bytes"))?;
            Ok(super::namespaces::NamespaceRecord { name: n, id: id.to_string(), data, encoding })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_added_after_1_3_are_the_versioned_fields_after_history_size_bytes() {
        assert_eq!(
            ADDED_AFTER_1_3,
            [
                "execution_duration",
                "state_transition_count",
                "parent_workflow_id",
                "parent_run_id",
                "root_workflow_id",
                "root_run_id",
                "_version"
            ]
        );
    }
}
