//! Helpers for the integration tests: work directories with SQLite stores, a seeded
//! template copied per test, the real `vismig` binary as a child process, and reading
//! every record back through the library.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::sync::Arc;

use sqlx::Connection;
use tokio::sync::OnceCell;
use vismig::config::persistence::SqlStore;
use vismig::record::VisibilityRecord;
use vismig::store::sql::sqlite::{SqliteStore, create_database};
use vismig::store::{Sink, Source, Split};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vismig")
}

pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    /// A directory with an empty primary and secondary (vismig's copy of Temporal's
    /// SQLite schema) and a config pointing at them.
    pub async fn new(extra_migration: &str) -> Work {
        let work = Work { dir: tempfile::tempdir().unwrap() };
        create_database(&work.primary()).await.unwrap();
        create_database(&work.secondary()).await.unwrap();
        work.write_config(extra_migration);
        work
    }

    /// Like `new`, with the primary holding `records` seeded records (seed 1).
    pub async fn seeded(records: u64, extra_migration: &str) -> Work {
        let template = template(records).await;
        let work = Work { dir: tempfile::tempdir().unwrap() };
        std::fs::copy(template, work.primary()).unwrap();
        create_database(&work.secondary()).await.unwrap();
        work.write_config(extra_migration);
        work
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn primary(&self) -> PathBuf {
        self.path("primary.db")
    }
    pub fn secondary(&self) -> PathBuf {
        self.path("secondary.db")
    }
    pub fn config(&self) -> PathBuf {
        self.path("vismig.yaml")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.path("checkpoint.json")
    }
    pub fn dead_letter(&self) -> PathBuf {
        self.path("dead-letter.jsonl")
    }

    pub fn write_config(&self, extra_migration: &str) {
        let text = format!(
            "persistence:\n  visibilityStore: primary\n  secondaryVisibilityStore: secondary\n  datastores:\n    primary:\n      sql: {{ pluginName: sqlite, databaseName: \"{}\", connectAddr: localhost }}\n    secondary:\n      sql: {{ pluginName: sqlite, databaseName: \"{}\", connectAddr: localhost }}\nmigration:\n  checkpoint: {{ type: file, path: \"{}\" }}\n  deadLetter: {{ path: \"{}\" }}\n{}",
            self.primary().display(),
            self.secondary().display(),
            self.checkpoint().display(),
            self.dead_letter().display(),
            if extra_migration.contains("metrics") {
                extra_migration.to_string()
            } else {
                format!("  metrics: {{ listen: \"\" }}\n{extra_migration}")
            }
        );
        std::fs::write(self.config(), text).unwrap();
    }

    pub fn vismig(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).arg("--config").arg(self.config()).env("RUST_LOG", "info").stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.vismig(args).output().unwrap()
    }
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn sqlite_config(path: &Path) -> SqlStore {
    SqlStore { plugin_name: "sqlite".into(), database_name: path.display().to_string(), ..Default::default() }
}

pub async fn open(path: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open("test", &sqlite_config(path)).await.unwrap())
}

/// Every record of a SQLite store, in key order, read through vismig's own source.
pub async fn records(path: &Path) -> Vec<VisibilityRecord> {
    let store = open(path).await;
    let split = Split { per_process: 1, process_index: 0, process_count: 1 };
    let mut out = Vec::new();
    for shard in store.plan_shards(&[], &split).await.unwrap() {
        let mut cursor = None;
        loop {
            let page = store.scan(&shard, cursor.as_ref(), 1000).await.unwrap();
            assert!(page.bad_rows.is_empty(), "unexpected bad rows: {:?}", page.bad_rows);
            out.extend(page.records);
            cursor = page.cursor.or(cursor);
            if page.done {
                break;
            }
        }
    }
    out.sort_by(|a, b| (&a.namespace_id, &a.run_id).cmp(&(&b.namespace_id, &b.run_id)));
    out
}

pub async fn write(path: &Path, records: &[VisibilityRecord]) {
    open(path).await.write(records).await.unwrap();
}

pub async fn exec(path: &Path, sql: &str) {
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://").unwrap().filename(path);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// A primary seeded once per test binary and size, copied by each test that needs it.
async fn template(records: u64) -> PathBuf {
    static TEMPLATES: OnceCell<tokio::sync::Mutex<std::collections::HashMap<u64, PathBuf>>> = OnceCell::const_new();
    let map = TEMPLATES.get_or_init(|| async { tokio::sync::Mutex::new(Default::default()) }).await;
    let mut map = map.lock().await;
    if let Some(p) = map.get(&records) {
        return p.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("template-{}-{records}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let work = Work { dir: tempfile::tempdir_in(&dir).unwrap() };
    create_database(&work.primary()).await.unwrap();
    create_database(&work.secondary()).await.unwrap();
    work.write_config("");
    let out = work.run(&["seed", "--records", &records.to_string()]);
    assert!(out.status.success(), "seed failed: {}", text(&out));
    // Fold the WAL into the file so that a plain copy is complete.
    exec(&work.primary(), "PRAGMA wal_checkpoint(TRUNCATE);").await;
    let path = dir.join("primary.db");
    std::fs::copy(work.primary(), &path).unwrap();
    map.insert(records, path.clone());
    path
}

/// The checkpoint's settled count, or 0.
pub fn settled(work: &Work) -> u64 {
    let Ok(text) = std::fs::read_to_string(work.checkpoint()) else { return 0 };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { return 0 };
    json["totals"]["scanned"].as_u64().unwrap_or(0)
}
