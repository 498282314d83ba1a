//! The SQLite file's schema: which of the columns Temporal added over releases it has
//! (read once, from `pragma_table_xinfo`), and the select list that reads any of them.

use sqlx::Row;

use super::SqliteStore;
use crate::store::schema::{Columns, SchemaInfo, sql_release_of};
use crate::store::sql::query::select_list;
use crate::store::sql::{classify, required_columns};
use crate::store::{StoreError, StoreResult};

#[derive(Clone, Copy, Debug)]
pub(super) struct Schema {
    /// Files created before Temporal v1.27 have no `_version`: rows read as version 0
    /// and writes are insert-if-absent.
    pub(super) has_version: bool,
    /// Which columns added since Temporal v1.21 the file has (each release's
    /// `schema.sql` is the schema of that release, never upgraded).
    pub(super) columns: Columns,
}

impl SqliteStore {
    pub(super) async fn schema(&self) -> StoreResult<Schema> {
        self.schema.get_or_try_init(|| self.inspect()).await.copied()
    }

    async fn inspect(&self) -> StoreResult<Schema> {
        if !self.path.exists() {
            return Err(StoreError::Permanent(
                self.context(&format!("database file {} does not exist (sql.databaseName)", self.path.display())),
            ));
        }
        let rows = sqlx::query("SELECT name FROM pragma_table_xinfo('executions_visibility')")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify(&self.context("reading the schema"), e))?;
        let columns: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        if columns.is_empty() {
            return Err(StoreError::Permanent(self.context(
                "table executions_visibility does not exist: is this Temporal's visibility database (schema/sqlite/v3/visibility)?",
            )));
        }
        let has_version = columns.iter().any(|c| c == "_version");
        for column in required_columns() {
            if !columns.iter().any(|c| c == column) {
                return Err(StoreError::Permanent(self.context(&format!(
                    "table executions_visibility has no column {column} (vismig reads the SQLite schema of Temporal v1.21 and newer)"
                ))));
            }
        }
        Ok(Schema { has_version, columns: Columns::of(|c| columns.iter().any(|x| x == c)) })
    }

    /// SQLite records no schema version (Temporal creates the file from its release's
    /// `schema/sqlite/v3/visibility/schema.sql` and never upgrades it): the columns tell.
    pub(super) async fn schema_versions(&self) -> StoreResult<SchemaInfo> {
        let schema = self.schema().await?;
        let has = |c: &str| schema.columns.has(c);
        Ok(SchemaInfo::from_columns(
            format!("no schema_version in SQLite; {}", sql_release_of(has)),
            has,
            "SQLite files are never upgraded by Temporal: create a new file with the newer release's schema/sqlite/v3/visibility/schema.sql".to_string(),
        ))
    }
}

/// The columns of a record, each prefixed with `table` (e.g. `e.`).
/// Columns the file lacks are read as Temporal's defaults for them.
pub(super) fn select_columns(schema: Schema, table: &str) -> String {
    select_list(
        table,
        |c| schema.columns.has(c),
        |c| match c {
            "_version" => "0",
            "root_workflow_id" | "root_run_id" => "''",
            _ => "NULL",
        },
    )
}
