//! The PostgreSQL schema: the columns of `executions_visibility` (read once), Temporal's
//! `schema_version`, the select list that reads any of its releases, and whether it can
//! be written at all (the standard schema cannot).

use std::collections::HashSet;

use sqlx::Row;

use super::PostgresStore;
use crate::store::schema::{SchemaInfo, sql_release_of};
use crate::store::sql::query::select_list;
use crate::store::sql::{STANDARD_COLUMNS, classify, required_columns, upgrade_hint};
use crate::store::{StoreError, StoreResult};

#[derive(Clone, Debug)]
pub(super) struct Schema {
    /// Columns of `executions_visibility` that exist (schemas before v1.27 lack
    /// `_version`; the standard schema lacks everything added for advanced visibility).
    columns: HashSet<String>,
    /// `curr_version` of Temporal's `schema_version` table, when it has one.
    version: Option<String>,
}

impl Schema {
    pub(super) fn has(&self, column: &str) -> bool {
        self.columns.contains(column)
    }
}

impl PostgresStore {
    pub(super) async fn schema(&self) -> StoreResult<&Schema> {
        self.schema.get_or_try_init(|| self.inspect()).await
    }

    async fn inspect(&self) -> StoreResult<Schema> {
        let rows = sqlx::query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'executions_visibility'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify(&self.context("connecting and reading the schema"), e))?;
        let columns: HashSet<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        if columns.is_empty() {
            return Err(StoreError::Permanent(self.context(&format!(
                "table executions_visibility does not exist in database {:?}: create it with temporal-sql-tool (schema {})",
                self.database,
                if self.standard { "postgresql/v96/visibility" } else { "postgresql/v12/visibility" }
            ))));
        }
        let version = self.schema_version().await?;
        let required: Vec<&str> = if self.standard { STANDARD_COLUMNS.to_vec() } else { required_columns().collect() };
        for column in required {
            if !columns.contains(column) {
                let hint = if !self.standard && !columns.contains("search_attributes") {
                    " (this looks like the standard schema: use pluginName postgres)".to_string()
                } else {
                    format!(
                        " (schema {}; vismig needs schema 1.3, Temporal v1.21, or newer: upgrade with {})",
                        version.as_deref().unwrap_or("unrecorded"),
                        self.upgrade_hint()
                    )
                };
                return Err(StoreError::Permanent(
                    self.context(&format!("table executions_visibility has no column {column}{hint}")),
                ));
            }
        }
        Ok(Schema { columns, version })
    }

    /// `curr_version` from Temporal's `schema_version` table; None without the table.
    async fn schema_version(&self) -> StoreResult<Option<String>> {
        let ctx = || self.context("reading the schema version");
        let exists: bool = sqlx::query("SELECT to_regclass('schema_version') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(&ctx(), e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let row = sqlx::query("SELECT curr_version::text FROM schema_version ORDER BY version_partition LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| classify(&ctx(), e))?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    fn upgrade_hint(&self) -> String {
        upgrade_hint("postgres12", &self.database, "postgresql/v12/visibility")
    }

    /// The recorded schema version (or the release its columns say) and the versioned
    /// fields it holds.
    pub(super) async fn schema_versions(&self) -> StoreResult<SchemaInfo> {
        let schema = self.schema().await?;
        let version = match &schema.version {
            Some(v) => format!("schema {v}"),
            None => format!("no schema_version table; {}", sql_release_of(|c| schema.has(c))),
        };
        Ok(SchemaInfo::from_columns(version, |c| schema.has(c), self.upgrade_hint()))
    }

    pub(super) fn ensure_writable(&self, schema: &Schema) -> StoreResult<()> {
        if self.standard || !schema.has("search_attributes") {
            return Err(StoreError::Permanent(self.context(
                "the standard visibility schema can only be read; write to an advanced schema (postgresql/v12)",
            )));
        }
        Ok(())
    }
}

/// The select list in BASE_COLUMNS order, with typed stand-ins for columns this
/// schema does not have.
pub(super) fn select_columns(schema: &Schema) -> String {
    select_list(
        "",
        |c| schema.has(c),
        |c| match c {
            "_version" => "0::bigint",
            "search_attributes" => "NULL::jsonb",
            "root_workflow_id" | "root_run_id" => "''::varchar",
            "parent_workflow_id" | "parent_run_id" => "NULL::varchar",
            _ => "NULL::bigint",
        },
    )
}
