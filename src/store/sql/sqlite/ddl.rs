//! vismig's own DDL for Temporal's SQLite visibility schema (`schema/sqlite/v3/visibility`):
//! the same columns, types, generated search-attribute columns, FTS5 tables and
//! triggers, built from the attribute registry in `record.rs` rather than kept as a
//! copy, and the function that creates a database with it. Used by `vismig demo` and the
//! tests; a test checks it column by column against Temporal's own file.

use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

use crate::record::{SearchAttributeType, known_search_attributes};

const CLOSE_ORDER: &str = "(COALESCE(close_time, '9999-12-31 23:59:59+00:00')) DESC, start_time DESC, run_id";

/// Base columns with their SQLite declarations, in Temporal's order.
const BASE: &[(&str, &str)] = &[
    ("namespace_id", "CHAR(64) NOT NULL"),
    ("run_id", "CHAR(64) NOT NULL"),
    ("_version", "BIGINT NOT NULL DEFAULT 0"),
    ("start_time", "TIMESTAMP NOT NULL"),
    ("execution_time", "TIMESTAMP NOT NULL"),
    ("workflow_id", "VARCHAR(255) NOT NULL"),
    ("workflow_type_name", "VARCHAR(255) NOT NULL"),
    ("status", "INT NOT NULL"),
    ("close_time", "TIMESTAMP NULL"),
    ("history_length", "BIGINT NULL"),
    ("history_size_bytes", "BIGINT NULL"),
    ("execution_duration", "BIGINT NULL"),
    ("state_transition_count", "BIGINT NULL"),
    ("memo", "BLOB NULL"),
    ("encoding", "VARCHAR(64) NOT NULL"),
    ("task_queue", "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("search_attributes", "TEXT NULL"),
    ("parent_workflow_id", "VARCHAR(255) NULL"),
    ("parent_run_id", "VARCHAR(255) NULL"),
    ("root_workflow_id", "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("root_run_id", "VARCHAR(255) NOT NULL DEFAULT ''"),
];

/// Base columns that Temporal indexes for list queries.
const INDEXED_BASE: &[&str] = &[
    "execution_time",
    "workflow_id",
    "workflow_type_name",
    "status",
    "history_length",
    "history_size_bytes",
    "execution_duration",
    "state_transition_count",
    "task_queue",
    "parent_workflow_id",
    "parent_run_id",
    "root_workflow_id",
    "root_run_id",
];

struct Generated {
    name: String,
    kind: SearchAttributeType,
    sql_type: &'static str,
    stored: bool,
}

fn generated_columns() -> Vec<Generated> {
    known_search_attributes()
        .into_iter()
        .map(|a| {
            let (sql_type, stored) = match a.kind {
                SearchAttributeType::Bool => ("BOOLEAN", false),
                SearchAttributeType::Datetime => ("TIMESTAMP", false),
                SearchAttributeType::Double => ("DECIMAL(20, 5)", false),
                // Temporal materialises its predefined int attributes, not the custom ones.
                SearchAttributeType::Int => ("BIGINT", a.predefined),
                SearchAttributeType::Keyword => ("VARCHAR(255)", false),
                SearchAttributeType::Text | SearchAttributeType::KeywordList => ("TEXT", true),
            };
            Generated { name: a.name, kind: a.kind, sql_type, stored }
        })
        .collect()
}

/// The full DDL, as one script of statements.
pub fn ddl() -> String {
    let generated = generated_columns();
    let mut sql = String::from("CREATE TABLE executions_visibility (\n");
    for (name, decl) in BASE {
        sql.push_str(&format!("  {name:<24} {decl},\n"));
    }
    for g in &generated {
        let extract = format!("JSON_EXTRACT(search_attributes, '$.{}')", g.name);
        let expr = if g.kind == SearchAttributeType::Datetime {
            format!("STRFTIME('%Y-%m-%d %H:%M:%f+00:00', {extract})")
        } else {
            extract
        };
        let stored = if g.stored { " STORED" } else { "" };
        sql.push_str(&format!("  {:<36} {} GENERATED ALWAYS AS ({expr}){stored},\n", g.name, g.sql_type));
    }
    sql.push_str("  PRIMARY KEY (namespace_id, run_id)\n);\n");

    sql.push_str(&format!("CREATE INDEX default_idx ON executions_visibility (namespace_id, {CLOSE_ORDER});\n"));
    let indexed = INDEXED_BASE
        .iter()
        .map(|c| c.to_string())
        .chain(generated.iter().filter(|g| !g.stored).map(|g| g.name.clone()));
    for column in indexed {
        sql.push_str(&format!(
            "CREATE INDEX by_{} ON executions_visibility (namespace_id, {column}, {CLOSE_ORDER});\n",
            column.to_lowercase()
        ));
    }

    let text: Vec<&str> =
        generated.iter().filter(|g| g.kind == SearchAttributeType::Text).map(|g| g.name.as_str()).collect();
    let lists: Vec<&str> =
        generated.iter().filter(|g| g.kind == SearchAttributeType::KeywordList).map(|g| g.name.as_str()).collect();
    sql.push_str(&format!(
        "CREATE VIRTUAL TABLE executions_visibility_fts_text USING fts5 ({}, content='executions_visibility', tokenize=\"unicode61 remove_diacritics 2\");\n",
        text.join(", ")
    ));
    // KeywordList values are stored joined by U+2661, the only token separator here.
    sql.push_str(&format!(
        "CREATE VIRTUAL TABLE executions_visibility_fts_keyword_list USING fts5 ({}, content='executions_visibility', tokenize=\"unicode61 remove_diacritics 0 categories 'C* L* M* N* P* S* Z*' separators '\u{2661}'\");\n",
        lists.join(", ")
    ));
    // The external-content FTS tables follow the table through triggers: an insert adds
    // the row's tokens, a delete removes them, an update does both.
    let fts = [("executions_visibility_fts_text", &text), ("executions_visibility_fts_keyword_list", &lists)];
    let add = |prefix: &str| -> String {
        fts.iter()
            .map(|(table, cols)| {
                let values: Vec<String> = cols.iter().map(|c| format!("{prefix}.{c}")).collect();
                format!(
                    "  INSERT INTO {table} (rowid, {}) VALUES ({prefix}.rowid, {});\n",
                    cols.join(", "),
                    values.join(", ")
                )
            })
            .collect()
    };
    let remove = || -> String {
        fts.iter()
            .map(|(table, cols)| {
                let values: Vec<String> = cols.iter().map(|c| format!("OLD.{c}")).collect();
                format!(
                    "  INSERT INTO {table} ({table}, rowid, {}) VALUES ('delete', OLD.rowid, {});\n",
                    cols.join(", "),
                    values.join(", ")
                )
            })
            .collect()
    };
    sql.push_str(&format!(
        "CREATE TRIGGER executions_visibility_ai AFTER INSERT ON executions_visibility BEGIN\n{}END;\n",
        add("NEW")
    ));
    sql.push_str(&format!(
        "CREATE TRIGGER executions_visibility_ad AFTER DELETE ON executions_visibility BEGIN\n{}END;\n",
        remove()
    ));
    sql.push_str(&format!(
        "CREATE TRIGGER executions_visibility_au AFTER UPDATE ON executions_visibility BEGIN\n{}{}END;\n",
        remove(),
        add("NEW")
    ));
    sql
}

/// Creates a SQLite visibility database with vismig's copy of Temporal's schema (for
/// the demo and the tests). WAL mode lets the scanner read while the writer writes.
pub async fn create_database(path: &std::path::Path) -> anyhow::Result<()> {
    use sqlx::Connection;
    let options = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl())).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}
