//! Helpers for the integration tests: work directories with SQLite stores, a seeded
//! template copied per test, the real `vismig` binary as a child process, and reading
//! every record back through the library.
#![allow(dead_code)]

pub mod proxy;
pub mod tls;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The `sql:` blocks of the two datastores; SQLite files in `dir` unless set.
    pub stores: Option<(String, String)>,
}

impl Work {
    /// A directory with an empty primary and secondary (vismig's copy of Temporal's
    /// SQLite schema) and a config pointing at them.
    pub async fn new(extra_migration: &str) -> Work {
        let work = Work { dir: tempfile::tempdir().unwrap(), stores: None };
        create_database(&work.primary()).await.unwrap();
        create_database(&work.secondary()).await.unwrap();
        work.write_config(extra_migration);
        work
    }

    /// A work directory whose stores are given as `sql:` flow maps (e.g. from `pg_store`),
    /// or None for a SQLite file in the directory.
    pub async fn with_stores(primary: Option<String>, secondary: Option<String>, extra_migration: &str) -> Work {
        let mut work = Work { dir: tempfile::tempdir().unwrap(), stores: None };
        if primary.is_none() {
            create_database(&work.primary()).await.unwrap();
        }
        if secondary.is_none() {
            create_database(&work.secondary()).await.unwrap();
        }
        let p = primary.unwrap_or_else(|| sqlite_store(&work.primary()));
        let s = secondary.unwrap_or_else(|| sqlite_store(&work.secondary()));
        work.stores = Some((p, s));
        work.write_config(extra_migration);
        work
    }

    /// Like `new`, with the primary holding `records` seeded records (seed 1).
    pub async fn seeded(records: u64, extra_migration: &str) -> Work {
        let template = template(records).await;
        let work = Work { dir: tempfile::tempdir().unwrap(), stores: None };
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

    /// Writes the config. A store given as a flow map (`{ pluginName: … }`) is a `sql:`
    /// block; any other text is the whole datastore body (`elasticsearch: { … }`).
    pub fn write_config(&self, extra_migration: &str) {
        let (p, s) =
            self.stores.clone().unwrap_or_else(|| (sqlite_store(&self.primary()), sqlite_store(&self.secondary())));
        let body = |store: String| if store.starts_with('{') { format!("sql: {store}") } else { store };
        let (p, s) = (body(p), body(s));
        let text = format!(
            "persistence:\n  visibilityStore: primary\n  secondaryVisibilityStore: secondary\n  datastores:\n    primary:\n      {p}\n    secondary:\n      {s}\nmigration:\n  checkpoint: {{ type: file, path: \"{}\" }}\n  deadLetter: {{ path: \"{}\" }}\n{}",
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

    /// Starts `vismig` in the background with its output thrown away.
    pub fn spawn_quiet(&self, args: &[&str]) -> std::process::Child {
        self.vismig(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.vismig(args).output().unwrap()
    }
}

pub fn sqlite_store(path: &Path) -> String {
    format!("{{ pluginName: sqlite, databaseName: \"{}\", connectAddr: localhost }}", path.display())
}

/// Whether the integration tests of `service` run: VISMIG_TEST_SERVICES (from
/// tests/services/env.sh) lists it. Every integration test gates through here, so the
/// rule is one: see `service_gate`. Listed but unreachable: the test itself fails when it
/// connects.
pub fn service_up(service: &str) -> bool {
    let services = std::env::var("VISMIG_TEST_SERVICES").ok();
    match service_gate(service, services.as_deref(), under_ci()) {
        Ok(run) => run,
        Err(why) => panic!("{why}"),
    }
}

/// The gate of a test that needs `service`, from VISMIG_TEST_SERVICES (`services`) and
/// whether this is CI. Skipping (Ok(false), said on stderr) is only for a developer's
/// machine with no services at all; once services are declared up, or under CI, a
/// missing one fails the test, so that a suite cannot quietly shrink to what happens to
/// be running.
pub fn service_gate(service: &str, services: Option<&str>, ci: bool) -> Result<bool, String> {
    match services {
        Some(list) if list.split_whitespace().any(|s| s == service) => Ok(true),
        Some(list) => {
            Err(format!("VISMIG_TEST_SERVICES={list:?} does not list {service}: tests/services/up.sh must start it"))
        }
        None if ci => Err(format!(
            "CI=true but VISMIG_TEST_SERVICES is unset: this test needs {service} (tests/run.sh starts it with tests/services/up.sh)"
        )),
        None => {
            eprintln!(
                "skipped: VISMIG_TEST_SERVICES is unset (run tests/services/up.sh and source tests/services/env.sh)"
            );
            Ok(false)
        }
    }
}

/// Where tests/tools/install.sh put the operations tools (VISMIG_TEST_TOOLS, exported by
/// tests/run.sh), for the tests that need them; None (skipped, said on stderr) only off
/// CI. Under CI an unset VISMIG_TEST_TOOLS fails the test.
pub fn tools_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("VISMIG_TEST_TOOLS").map(PathBuf::from);
    match tools_gate(dir, under_ci()) {
        Ok(dir) => dir,
        Err(why) => panic!("{why}"),
    }
}

/// The gate of a test that needs the operations tools; the rule of `service_gate`.
pub fn tools_gate(dir: Option<PathBuf>, ci: bool) -> Result<Option<PathBuf>, String> {
    match dir {
        Some(dir) => Ok(Some(dir)),
        None if ci => Err(
            "CI=true but VISMIG_TEST_TOOLS is unset: tests/run.sh installs the tools (tests/tools/install.sh) and exports it"
                .to_string(),
        ),
        None => {
            eprintln!(
                "skipped: VISMIG_TEST_TOOLS is unset (run tests/tools/install.sh, then export VISMIG_TEST_TOOLS=/var/cache/vismig-tools)"
            );
            Ok(None)
        }
    }
}

/// The URL (database `postgres`) of the streaming PostgreSQL replica of tests/services,
/// which up.sh makes only with the disk for it: None (skipped, said on stderr) off CI.
pub fn pg_replica_url() -> Option<String> {
    let port = match replica_gate(std::env::var("VISMIG_TEST_PG_REPLICA_PORT").ok(), under_ci()) {
        Ok(port) => port?,
        Err(why) => panic!("{why}"),
    };
    let url = pg_url("postgres");
    let (head, _) = url.rsplit_once(':').unwrap();
    Some(format!("{head}:{port}/postgres"))
}

/// The gate of a test that needs the PostgreSQL replica; the rule of `service_gate`.
pub fn replica_gate(port: Option<String>, ci: bool) -> Result<Option<String>, String> {
    match port {
        Some(port) => Ok(Some(port)),
        None if ci => {
            Err("CI=true but VISMIG_TEST_PG_REPLICA_PORT is unset: up.sh made no PostgreSQL replica (it says why)"
                .to_string())
        }
        None => {
            eprintln!("skipped: no PostgreSQL replica (VISMIG_TEST_PG_REPLICA_PORT unset; up.sh says why)");
            Ok(None)
        }
    }
}

/// CI systems (GitHub Actions, GitLab, and tests/run.sh's own callers) set CI=true.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A fresh database on a service of tests/services, with Temporal's schema applied by
/// Temporal's own tool (`advanced` or `standard`).
pub fn reset_db(service: &str, database: &str, schema: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/reset-db.sh");
    let out = Command::new("bash").arg(script).args([service, database, schema]).output().unwrap();
    assert!(out.status.success(), "reset-db.sh {service} {database} {schema}: {}", text(&out));
}

/// A unique database name for one test.
pub fn db_name(test: &str) -> String {
    format!("vt_{}_{}", test, std::process::id())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The `sql:` block of a PostgreSQL datastore on the test server.
pub fn pg_store(database: &str, plugin: &str) -> String {
    pg_store_at(database, plugin, &pg_addr())
}

/// `host:port` of the PostgreSQL of tests/services.
pub fn pg_addr() -> String {
    format!("{}:{}", env_or("VISMIG_TEST_PG_HOST", "127.0.0.1"), env_or("VISMIG_TEST_PG_PORT", "5432"))
}

/// The `sql:` block of a PostgreSQL datastore reached through `addr` (a proxy).
pub fn pg_store_at(database: &str, plugin: &str, addr: &str) -> String {
    format!(
        "{{ pluginName: {plugin}, databaseName: {database}, connectAddr: \"{addr}\", user: {}, password: \"{}\" }}",
        env_or("VISMIG_TEST_PG_USER", "temporal"),
        env_or("VISMIG_TEST_PG_PASSWORD", "temporal"),
    )
}

/// A connection URL for a database on the PostgreSQL of tests/services.
pub fn pg_url(db: &str) -> String {
    format!(
        "postgres://{}:{}@{}:{}/{db}",
        env_or("VISMIG_TEST_PG_USER", "temporal"),
        env_or("VISMIG_TEST_PG_PASSWORD", "temporal"),
        env_or("VISMIG_TEST_PG_HOST", "127.0.0.1"),
        env_or("VISMIG_TEST_PG_PORT", "5432"),
    )
}

/// Runs SQL statements on a database of the PostgreSQL of tests/services.
pub async fn pg_exec(db: &str, sql: &str) {
    let pool = sqlx::PgPool::connect(&pg_url(db)).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&pool).await.unwrap();
    pool.close().await;
}

/// One row of a query on a database of the PostgreSQL of tests/services.
pub async fn pg_row<T>(db: &str, sql: &str) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let pool = sqlx::PgPool::connect(&pg_url(db)).await.unwrap();
    let row = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&pool).await.unwrap();
    pool.close().await;
    row
}

/// The `sql:` block of a MySQL 8 (MariaDB variant) datastore on the test server.
pub fn mysql_store(database: &str, plugin: &str) -> String {
    format!(
        "{{ pluginName: {plugin}, databaseName: {database}, connectAddr: \"{}:{}\", user: {}, password: \"{}\" }}",
        env_or("VISMIG_TEST_MYSQL_HOST", "127.0.0.1"),
        env_or("VISMIG_TEST_MYSQL_PORT", "3306"),
        env_or("VISMIG_TEST_MYSQL_USER", "temporal"),
        env_or("VISMIG_TEST_MYSQL_PASSWORD", "temporal"),
    )
}

/// A fresh index named `temporal_visibility_v1_vt_<test>_<pid>` on the OpenSearch or
/// Elasticsearch of tests/services, made by Temporal's index template (applied by up.sh).
pub async fn search_index(service: &str, test: &str) -> (String, String) {
    let url = search_url(service);
    let index = format!("temporal_visibility_v1_vt_{test}_{}", std::process::id());
    let http = reqwest::Client::new();
    http.delete(format!("{url}/{index}")).send().await.unwrap();
    let resp = http.put(format!("{url}/{index}")).send().await.unwrap();
    assert!(resp.status().is_success(), "creating index {index}: {}", resp.text().await.unwrap());
    (url, index)
}

/// Two indices on the test OpenSearch, `<test>_a` (primary) and `<test>_b`
/// (secondary, with the seed's attributes mapped when `register`).
pub struct IndexPair {
    pub url: String,
    pub primary: String,
    pub secondary: String,
}

impl IndexPair {
    pub async fn new(test: &str, register: bool) -> Self {
        let (url, primary) = search_index("opensearch", &format!("{test}_a")).await;
        let (_, secondary) = search_index("opensearch", &format!("{test}_b")).await;
        if register {
            register_seed_attributes(&url, &secondary).await;
        }
        Self { url, primary, secondary }
    }

    pub async fn drop(self) {
        drop_index(&self.url, &self.primary).await;
        drop_index(&self.url, &self.secondary).await;
    }
}

pub fn search_url(service: &str) -> String {
    match service {
        "opensearch" => env_or("VISMIG_TEST_OPENSEARCH_URL", "http://127.0.0.1:9200"),
        "elasticsearch" => env_or("VISMIG_TEST_ELASTICSEARCH_URL", "http://127.0.0.1:9201"),
        other => panic!("not a search service: {other}"),
    }
}

/// The `elasticsearch:` datastore body for one index (cluster-to-cluster layout).
pub fn search_store(url: &str, index: &str) -> String {
    let (scheme, host) = url.split_once("://").unwrap();
    format!(
        "elasticsearch: {{ version: v7, url: {{ scheme: {scheme}, host: \"{host}\" }}, indices: {{ visibility: {index} }} }}"
    )
}

/// One JSON request to a search service; panics on a non-2xx answer.
pub async fn search_call(method: reqwest::Method, url: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

/// The seed's attributes, registered on an index as `temporal operator search-attribute
/// create` would.
pub async fn register_seed_attributes(url: &str, index: &str) {
    let store = vismig::store::elasticsearch::ElasticsearchStore::open(
        "test",
        &es_config(url, index),
        &vismig::config::StoreRef { datastore: "test".into(), es_index_key: None },
    )
    .unwrap();
    let attrs: Vec<_> = vismig::seed::SEED_ALIASES.iter().map(|(_, alias, kind)| (alias.to_string(), *kind)).collect();
    store.register_search_attributes(&attrs).await.unwrap();
}

pub fn es_config(url: &str, index: &str) -> vismig::config::persistence::ElasticsearchStore {
    let (scheme, host) = url.split_once("://").unwrap();
    vismig::config::persistence::ElasticsearchStore {
        url: Some(vismig::config::persistence::EsUrl { scheme: scheme.into(), host: host.into() }),
        indices: BTreeMap::from([("visibility".to_string(), index.to_string())]),
        ..Default::default()
    }
}

/// `migration.searchAttributeAliases` for the namespaces of seed `seed`.
pub fn aliases_yaml(seed: u64) -> String {
    let mut out = String::from("  searchAttributeAliases:\n");
    let generator = vismig::seed::Generator::new(seed, chrono::Utc::now());
    for (ns, map) in vismig::seed::seed_aliases(generator.namespaces()) {
        out.push_str(&format!("    \"{ns}\":\n"));
        for (field, alias) in map {
            out.push_str(&format!("      {field}: {alias}\n"));
        }
    }
    out
}

/// Deletes an index made by `search_index`.
pub async fn drop_index(url: &str, index: &str) {
    reqwest::Client::new().delete(format!("{url}/{index}")).send().await.unwrap();
}

/// Opens a store of a work directory's config through vismig's factory.
pub async fn source_of(work: &Work, primary: bool) -> Arc<dyn Source> {
    let config = vismig::config::Config::load(&work.config()).unwrap();
    let store = if primary { config.primary() } else { config.secondary() };
    vismig::store::open_source(&config, &store).await.unwrap()
}

/// Opens a store of a work directory's config as a sink, through vismig's factory.
pub async fn sink_of(work: &Work, primary: bool) -> Arc<dyn vismig::store::Sink> {
    let config = vismig::config::Config::load(&work.config()).unwrap();
    let store = if primary { config.primary() } else { config.secondary() };
    vismig::store::open_sink(&config, &store).await.unwrap()
}

/// Every record of any store, in key order, read through vismig's own source.
pub async fn all_records(store: Arc<dyn Source>) -> Vec<VisibilityRecord> {
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
    all_records(open(path).await).await
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
    remove_stale_templates();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("template-{}-{records}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let work = Work { dir: tempfile::tempdir_in(&dir).unwrap(), stores: None };
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

/// Templates of test processes that have ended (each left ~100 MB per size behind).
fn remove_stale_templates() {
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("template-").and_then(|rest| rest.split('-').next()) else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts `vismig backfill`, waits until the checkpoint has settled `records`, then
/// kills it with SIGKILL (no chance to save anything more).
pub async fn kill_9_after(work: &Work, records: u64) {
    let mut child = work.spawn_quiet(&["backfill"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while settled(work) < records {
        assert!(std::time::Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The checkpoint's settled count, or 0.
pub fn settled(work: &Work) -> u64 {
    let Ok(text) = std::fs::read_to_string(work.checkpoint()) else { return 0 };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { return 0 };
    json["totals"]["scanned"].as_u64().unwrap_or(0)
}

/// A `vismig` child process whose stderr (the JSON log) is collected as it comes, with
/// the address of its metrics listener (the config must say `listen: "127.0.0.1:0"`).
pub struct Running {
    child: Option<std::process::Child>,
    /// `http://127.0.0.1:port`
    pub base: String,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts `vismig <args> --log-format json` and waits for the listener's address.
    pub fn start(work: &Work, args: &[&str]) -> Running {
        Running::spawn(work.vismig(args))
    }

    /// Like `start`, for a command prepared by the caller (`work.vismig(…)` with more
    /// environment).
    pub fn spawn(mut command: Command) -> Running {
        let mut child =
            command.arg("--log-format").arg("json").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(a) = v["address"].as_str()
                {
                    let _ = addr_tx.send(a.to_string());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(60)).expect("the metrics listener's address is logged");
        Running { child: Some(child), base: format!("http://{addr}"), log, reader: Some(reader) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// GET `path` of the listener: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// One sample of `/metrics` (the first series whose line starts with `series`), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.get("/metrics").await.1, series)
    }

    /// Waits for the process to end: (exit code, stdout, the whole log).
    pub async fn finish(mut self) -> (Option<i32>, String, String) {
        let mut child = self.child.take().unwrap();
        let out = tokio::task::spawn_blocking(move || {
            let mut stdout = String::new();
            use std::io::Read;
            child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
            (child.wait().unwrap(), stdout)
        })
        .await
        .unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (out.0.code(), out.1, self.log())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of the first line of a Prometheus text page that starts with `series`
/// followed by a space, or 0 when there is none.
pub fn metric_value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Polls `cond` every 50 ms until it holds; panics after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- Cassandra ----------------------------------------------------------------

pub fn cassandra_host() -> String {
    std::env::var("VISMIG_TEST_CASSANDRA_HOSTS")
        .ok()
        .and_then(|h| h.split(',').map(str::trim).find(|h| !h.is_empty()).map(str::to_string))
        .unwrap_or_else(|| "127.0.0.1".into())
}

pub fn cassandra_port() -> String {
    std::env::var("VISMIG_TEST_CASSANDRA_PORT").unwrap_or_else(|_| "9042".into())
}

/// A keyspace with Temporal v1.23's visibility schema, dropped when the test ends; on the
/// plain node, or on the secured one (`create_secured`).
pub struct Keyspace(pub String, CassandraNode);

/// Which Cassandra node of tests/services a keyspace lives on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CassandraNode {
    Plain,
    /// Password authentication, TLS and a client certificate required: reached as the
    /// superuser over TLS with the test client certificate.
    Secured,
}

impl CassandraNode {
    pub fn port(self) -> String {
        match self {
            CassandraNode::Plain => cassandra_port(),
            CassandraNode::Secured => std::env::var("VISMIG_TEST_CASSANDRA_TLS_PORT").unwrap_or_else(|_| "9142".into()),
        }
    }

    /// temporal-cassandra-tool's connection arguments for this node.
    fn tool_args(self) -> Vec<String> {
        let mut args = vec!["--ep".to_string(), cassandra_host(), "-p".into(), self.port()];
        if self == CassandraNode::Secured {
            let (user, password) = cassandra_superuser();
            args.extend(["-u".into(), user, "--pw".into(), password, "--tls".into()]);
            for (flag, file) in
                [("--tls-ca-file", "ca.crt"), ("--tls-cert-file", "client.crt"), ("--tls-key-file", "client.key")]
            {
                args.extend([flag.to_string(), tls::tls_file(file)]);
            }
        }
        args
    }
}

/// The secured node's superuser, which tests use to make and fill keyspaces.
pub fn cassandra_superuser() -> (String, String) {
    (
        tls::env("VISMIG_TEST_CASSANDRA_SUPERUSER", "cassandra"),
        tls::env("VISMIG_TEST_CASSANDRA_SUPERUSER_PASSWORD", "vismig-cassandra-Su1"),
    )
}

impl Keyspace {
    pub fn create(test: &str) -> Keyspace {
        Self::create_named(format!("vt_{test}_{}", std::process::id()))
    }

    pub fn create_named(name: String) -> Keyspace {
        Self::with_schema(name, &standard_schema(), CassandraNode::Plain)
    }

    /// On the secured node, made by Temporal's tool over verified TLS as the superuser.
    pub fn create_secured(test: &str) -> Keyspace {
        Self::with_schema(format!("vt_{test}_{}", std::process::id()), &standard_schema(), CassandraNode::Secured)
    }

    /// An existing keyspace of the plain node, to drop.
    pub fn named(name: String) -> Keyspace {
        Keyspace(name, CassandraNode::Plain)
    }

    pub fn node(&self) -> CassandraNode {
        self.1
    }

    /// A keyspace with Temporal's main schema (namespaces, executions, ...) of the newest
    /// module, as a Cassandra `persistence.defaultStore` has it.
    pub fn create_main(test: &str) -> Keyspace {
        let module = std::env::var("VISMIG_TEST_TEMPORAL_MODULE").expect("VISMIG_TEST_TEMPORAL_MODULE");
        Self::with_schema(
            format!("vt_{test}_{}", std::process::id()),
            &format!("{module}/schema/cassandra/temporal/versioned"),
            CassandraNode::Plain,
        )
    }

    /// The keyspace made by temporal-cassandra-tool: setup-schema, then every version of
    /// `versioned`.
    fn with_schema(name: String, versioned: &str, node: CassandraNode) -> Keyspace {
        let tool = std::env::var("VISMIG_TEST_CASSANDRA_TOOL").expect("VISMIG_TEST_CASSANDRA_TOOL (source env.sh)");
        let run = |args: &[&str]| {
            let out = Command::new(&tool).args(node.tool_args()).args(args).output().unwrap();
            assert!(out.status.success(), "temporal-cassandra-tool {args:?}: {}", text(&out));
        };
        let _ = Command::new(&tool).args(node.tool_args()).args(["drop-keyspace", "-k", &name, "-f"]).output();
        run(&["create-keyspace", "-k", &name, "--rf", "1"]);
        run(&["-k", &name, "setup-schema", "-v", "0.0"]);
        run(&["-k", &name, "update-schema", "-d", versioned]);
        Keyspace(name, node)
    }
}

fn standard_schema() -> String {
    let module = std::env::var("VISMIG_TEST_TEMPORAL_MODULE_STANDARD").expect("VISMIG_TEST_TEMPORAL_MODULE_STANDARD");
    format!("{module}/schema/cassandra/visibility/versioned")
}

impl Drop for Keyspace {
    fn drop(&mut self) {
        if let Ok(tool) = std::env::var("VISMIG_TEST_CASSANDRA_TOOL") {
            let _ = Command::new(tool).args(self.1.tool_args()).args(["drop-keyspace", "-k", &self.0, "-f"]).output();
        }
    }
}

/// A work directory whose primary is the Cassandra keyspace and whose secondary is the
/// given `sql:` block (SQLite in the directory when None).
pub async fn cassandra_work(ks: &Keyspace, secondary: Option<String>, extra: &str) -> Work {
    let body = format!(
        "{{ hosts: \"{}\", port: {}, keyspace: {}, connectTimeout: 10s }}",
        cassandra_host(),
        ks.node().port(),
        ks.0
    );
    cassandra_work_with(&body, secondary, extra).await
}

/// Like `cassandra_work`, with the whole `cassandra:` flow map given (credentials, tls).
pub async fn cassandra_work_with(cassandra: &str, secondary: Option<String>, extra: &str) -> Work {
    let work = Work::with_stores(None, secondary, extra).await;
    let (_, s) = work.stores.clone().unwrap();
    let text = format!(
        "persistence:\n  visibilityStore: primary\n  secondaryVisibilityStore: secondary\n  datastores:\n    primary:\n      cassandra: {cassandra}\n    secondary:\n      {}\nmigration:\n  checkpoint: {{ type: file, path: \"{}\" }}\n  deadLetter: {{ path: \"{}\" }}\n  metrics: {{ listen: \"\" }}\n{extra}",
        if s.starts_with('{') { format!("sql: {s}") } else { s.clone() },
        work.checkpoint().display(),
        work.dead_letter().display(),
    );
    std::fs::write(work.config(), text).unwrap();
    work
}

/// A CQL session on the keyspace; on the secured node as the superuser over TLS, the CA
/// and host name checked by vismig's own TLS code.
pub async fn session(ks: &Keyspace) -> scylla::client::session::Session {
    let mut builder = scylla::client::session_builder::SessionBuilder::new()
        .known_node(format!("{}:{}", cassandra_host(), ks.node().port()))
        .use_keyspace(&ks.0, false);
    if ks.node() == CassandraNode::Secured {
        let (user, password) = cassandra_superuser();
        let tls = vismig::config::persistence::Tls {
            enabled: true,
            ca_file: Some(tls::tls_file("ca.crt")),
            cert_file: Some(tls::tls_file("client.crt")),
            key_file: Some(tls::tls_file("client.key")),
            ..Default::default()
        };
        let material = vismig::tls::TlsMaterial::load(&tls, "cassandra.tls").unwrap();
        let config = vismig::tls::client_config(&material, vismig::tls::Verify::Full, None, "cassandra.tls").unwrap();
        builder = builder.user(user, password).tls_context(Some(Arc::new(config)));
    }
    builder.build().await.expect("Cassandra is listed in VISMIG_TEST_SERVICES but unreachable")
}

/// A length-delimited protobuf field, in wire format written by hand (independent of the
/// prost messages vismig decodes with).
pub fn proto_field(field: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for mut v in [field << 3 | 2, body.len() as u64] {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    out.extend_from_slice(body);
    out
}

/// A NamespaceDetail as Temporal stores it: info (1) with the name, config (2) with a
/// retention and the alias map (8: field name -> alias).
pub fn namespace_detail(name: &str, aliases: &[(&str, &str)]) -> Vec<u8> {
    let mut config = proto_field(1, &[0x08, 0x80, 0xa3, 0x05]); // retention: 1 day
    for (field, alias) in aliases {
        let entry = [proto_field(1, field.as_bytes()), proto_field(2, alias.as_bytes())].concat();
        config.extend(proto_field(8, &entry));
    }
    [proto_field(1, &proto_field(3, name.as_bytes())), proto_field(2, &config)].concat()
}
