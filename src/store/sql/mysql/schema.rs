//! The MySQL schema: the columns of `executions_visibility` and its side tables of search
//! attributes (read once), the statement size the server allows, Temporal's
//! `schema_version`, and the select list that reads any of its releases.

use std::collections::BTreeMap;

use sqlx::Row;

use super::MysqlStore;
use crate::store::schema::{Columns, SchemaInfo, sql_release_of};
use crate::store::sql::query::select_list;
use crate::store::sql::rows::lossy;
use crate::store::sql::{STANDARD_COLUMNS, classify, required_columns, upgrade_hint};
use crate::store::{Store, StoreError, StoreResult};

/// Upper bound on the bytes of one INSERT statement, below `max_allowed_packet`.
pub(super) const MAX_STATEMENT_BYTES: usize = 16 << 20;

const SIDE_TABLES: [&str; 2] = ["custom_search_attributes", "chasm_search_attributes"];

#[derive(Clone, Copy, Debug)]
pub(super) struct Schema {
    /// Schemas before Temporal v1.27 (1.9) have no `_version`: rows read as version 0
    /// and writes are insert-if-absent.
    pub(super) has_version: bool,
    /// `custom_search_attributes` (advanced schema 1.2+).
    pub(super) custom: Option<SideTable>,
    /// `chasm_search_attributes` (advanced schema 1.11+, Temporal v1.30).
    pub(super) chasm: Option<SideTable>,
    /// Bytes one statement may hold (from the server's `max_allowed_packet`).
    pub(super) statement_bytes: usize,
    /// Which columns added since Temporal v1.21 (schema 1.3) the table has.
    pub(super) columns: Columns,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct SideTable {
    pub(super) table: &'static str,
    pub(super) has_version: bool,
}

/// Column names by table, lower case.
type Tables = BTreeMap<String, Vec<String>>;

fn has(columns: &[String], column: &str) -> bool {
    columns.iter().any(|x| x == column)
}

impl MysqlStore {
    pub(super) async fn schema(&self) -> StoreResult<Schema> {
        self.schema.get_or_try_init(|| self.inspect()).await.copied()
    }

    async fn inspect(&self) -> StoreResult<Schema> {
        let tables = self.table_columns().await?;
        let dir = if self.standard { "schema/mysql/v57/visibility" } else { "schema/mysql/v8/visibility" };
        let Some(columns) = tables.get("executions_visibility") else {
            return Err(StoreError::Permanent(self.context(&format!(
                "table executions_visibility does not exist in database {}: is this Temporal's visibility database ({dir})?",
                self.database
            ))));
        };
        let statement_bytes = self.statement_bytes().await?;
        if self.standard {
            self.check_standard(columns, dir)?;
            let columns = Columns::of(|c| STANDARD_COLUMNS.contains(&c));
            return Ok(Schema { has_version: false, custom: None, chasm: None, statement_bytes, columns });
        }
        for column in required_columns() {
            if !has(columns, column) {
                let hint = if column == "search_attributes" {
                    " (pluginName mysql8 needs Temporal's advanced schema; read a MySQL 5.7 standard schema with pluginName mysql)"
                } else {
                    " (vismig needs schema 1.3, Temporal v1.21, or newer: upgrade it with temporal-sql-tool update-schema)"
                };
                return Err(StoreError::Permanent(
                    self.context(&format!("table executions_visibility has no column {column}{hint}")),
                ));
            }
        }
        let has_version = has(columns, "_version");
        let [custom, chasm] = self.side_tables(&tables, has_version)?;
        let present = Columns::of(|c| has(columns, c));
        Ok(Schema { has_version, custom, chasm, statement_bytes, columns: present })
    }

    /// The columns of `executions_visibility` and its side tables.
    async fn table_columns(&self) -> StoreResult<Tables> {
        let rows = sqlx::query(
            "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) FROM information_schema.columns \
             WHERE table_schema = ? AND table_name IN ('executions_visibility', 'custom_search_attributes', 'chasm_search_attributes')",
        )
        .bind(&self.database)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify(&self.context("reading the schema"), e))?;
        let mut tables = Tables::new();
        for row in &rows {
            let table = lossy(row, 0).to_ascii_lowercase();
            tables.entry(table).or_default().push(lossy(row, 1).to_ascii_lowercase());
        }
        Ok(tables)
    }

    /// Half the server's `max_allowed_packet`, at most `MAX_STATEMENT_BYTES`.
    async fn statement_bytes(&self) -> StoreResult<usize> {
        let packet: i64 = sqlx::query("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify(&self.context("reading max_allowed_packet"), e))?
            .get(0);
        Ok((packet.max(1 << 20) as usize / 2).min(MAX_STATEMENT_BYTES))
    }

    /// Plugin `mysql` reads the MySQL 5.7 standard columns, and warns when the table is
    /// the advanced one (its search attributes and versions would not be copied).
    fn check_standard(&self, columns: &[String], dir: &str) -> StoreResult<()> {
        for column in STANDARD_COLUMNS {
            if !has(columns, column) {
                return Err(StoreError::Permanent(
                    self.context(&format!("table executions_visibility has no column {column} ({dir})")),
                ));
            }
        }
        if has(columns, "search_attributes") {
            tracing::warn!(store = %self.describe(), "pluginName mysql reads the MySQL 5.7 standard schema, but this table has search_attributes: with the advanced schema use pluginName mysql8, or search attributes and versions are not copied");
        }
        Ok(())
    }

    /// `custom_search_attributes` (required) and `chasm_search_attributes` (from schema
    /// 1.11, Temporal v1.30), each checked for the columns the writes fill.
    fn side_tables(&self, tables: &Tables, has_version: bool) -> StoreResult<[Option<SideTable>; 2]> {
        let mut side = [None, None];
        for (i, table) in SIDE_TABLES.iter().enumerate() {
            let Some(cols) = tables.get(*table) else {
                if i == 0 {
                    return Err(StoreError::Permanent(self.context(
                        "table custom_search_attributes does not exist: Temporal's MySQL 8 schema keeps the custom search attributes there (schema 1.2+)",
                    )));
                }
                continue; // chasm_search_attributes came with schema 1.11 (Temporal v1.30)
            };
            let mut required = vec!["namespace_id", "run_id", "search_attributes"];
            if has_version || i == 1 {
                required.push("_version");
            }
            for column in required {
                if !has(cols, column) {
                    return Err(StoreError::Permanent(self.context(&format!("table {table} has no column {column}"))));
                }
            }
            side[i] = Some(SideTable { table, has_version: has(cols, "_version") });
        }
        Ok(side)
    }

    /// `curr_version` from Temporal's `schema_version` table; None without the table.
    async fn schema_version(&self) -> StoreResult<Option<String>> {
        let ctx = || self.context("reading the schema version");
        let tables: i64 = sqlx::query(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = 'schema_version'",
        )
        .bind(&self.database)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| classify(&ctx(), e))?
        .get(0);
        if tables == 0 {
            return Ok(None);
        }
        let row =
            sqlx::query("SELECT CAST(curr_version AS CHAR) FROM schema_version ORDER BY version_partition LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| classify(&ctx(), e))?;
        Ok(row.map(|r| lossy(&r, 0)))
    }

    /// The recorded schema version (or the release its columns say) and the versioned
    /// fields it holds.
    pub(super) async fn schema_versions(&self) -> StoreResult<SchemaInfo> {
        let schema = self.schema().await?;
        let version = self.schema_version().await?;
        let has = |c: &str| schema.columns.has(c);
        let version = match version {
            Some(v) => format!("schema {v}"),
            None => format!("no schema_version table; {}", sql_release_of(has)),
        };
        Ok(SchemaInfo::from_columns(version, has, upgrade_hint("mysql8", &self.database, "mysql/v8/visibility")))
    }
}

/// The select list in `BASE_COLUMNS` order; columns the table lacks are read as
/// Temporal's defaults for them.
pub(super) fn select_columns(schema: Schema) -> String {
    select_list(
        "",
        |c| schema.columns.has(c),
        |c| match c {
            "_version" => "CAST(0 AS SIGNED)",
            "root_workflow_id" | "root_run_id" => "''",
            _ => "NULL",
        },
    )
}
