//! vismig's SQLite DDL against Temporal's own file, taken from the Go module
//! go.temporal.io/server at the pinned version (tests/services/temporal-module.sh; the
//! module cache lives outside the repo). Same columns and types, and a backfill between
//! two databases created from Temporal's file.

mod common;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use common::*;
use sqlx::{Connection, Row};

fn temporal_schema() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/temporal-module.sh");
    let out = std::process::Command::new("bash").arg(script).arg("advanced").output().expect("run temporal-module.sh");
    assert!(out.status.success(), "temporal-module.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let dir = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let file = Path::new(&dir).join("schema/sqlite/v3/visibility/schema.sql");
    assert!(file.exists(), "{} is missing", file.display());
    file
}

async fn create_from(schema: &Path, db: &Path) {
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://").unwrap().filename(db).create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let sql = std::fs::read_to_string(schema).unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// (name, declared type, not null, default, hidden) per column, hidden telling a
/// normal column (0) from a virtual (2) or stored (3) generated one.
async fn columns(db: &Path) -> Vec<(String, String, i64, Option<String>, i64)> {
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://").unwrap().filename(db);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let rows = sqlx::query("SELECT name, type, \"notnull\", dflt_value, hidden FROM pragma_table_xinfo('executions_visibility') ORDER BY cid")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            // Declared types differ only in spacing ("DECIMAL(20,5)" vs "DECIMAL(20, 5)").
            let ty: String = r.get(1);
            (r.get(0), ty.replace(' ', "").to_uppercase(), r.get(2), r.get(3), r.get(4))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn our_ddl_has_temporals_columns_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("temporal.db");
    let ours = dir.path().join("vismig.db");
    create_from(&temporal_schema(), &theirs).await;
    vismig::store::sql::sqlite::create_database(&ours).await.unwrap();
    let (t, o) = (columns(&theirs).await, columns(&ours).await);
    assert!(t.len() >= 80, "Temporal's table has its generated columns ({})", t.len());
    let missing: Vec<_> = t.iter().filter(|c| !o.contains(c)).collect();
    let extra: Vec<_> = o.iter().filter(|c| !t.contains(c)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "differences:\n  only in Temporal's: {missing:?}\n  only in vismig's: {extra:?}"
    );
    assert_eq!(t, o, "same columns in the same order");
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_between_databases_created_from_temporals_file() {
    let schema = temporal_schema();
    let work = Work { dir: tempfile::tempdir().unwrap(), stores: None };
    create_from(&schema, &work.primary()).await;
    create_from(&schema, &work.secondary()).await;
    work.write_config("  batchSize: 300\n");
    let out = work.run(&["seed", "--records", "3000"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3000 inserted"), "{}", text(&out));
    assert_eq!(records(&work.primary()).await, records(&work.secondary()).await);
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The generated columns and FTS tables Temporal queries see the copied values.
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://").unwrap().filename(work.secondary());
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let keyword_lists: i64 =
        sqlx::query("SELECT COUNT(*) FROM executions_visibility WHERE KeywordList01 LIKE '%\u{2661}%'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
    assert!(keyword_lists > 0, "multi-item KeywordLists are joined with U+2661");
    let fts: i64 = sqlx::query("SELECT COUNT(*) FROM executions_visibility_fts_keyword_list WHERE executions_visibility_fts_keyword_list MATCH 'KeywordList01:\"tag-3\"'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    let direct: i64 = sqlx::query("SELECT COUNT(*) FROM executions_visibility WHERE (KeywordList01 = 'tag-3' OR KeywordList01 LIKE 'tag-3\u{2661}%' OR KeywordList01 LIKE '%\u{2661}tag-3' OR KeywordList01 LIKE '%\u{2661}tag-3\u{2661}%')")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert!(direct > 0);
    assert_eq!(fts, direct, "the FTS index agrees with the table (triggers fired for every row)");
}
