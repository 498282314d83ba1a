//! The configured passwords never leave the config: a whole run (seed, a backfill with
//! debug logs, bad rows, a secondary that goes away for a few seconds, verify, status,
//! a wrong password with trace logs) of PostgreSQL (its own role, the password from
//! `${VAR}`) -> OpenSearch (basic auth, the password written in the file), then
//! SQLite -> MariaDB (its own user): every output, log line, `/metrics` and `/readyz`
//! page, the dead letter, the checkpoint and the saved verify result are searched for
//! each password, and for the basic-auth header it would be sent as.

use std::time::Duration;

use base64::Engine;

use crate::common::proxy::FaultProxy;
use crate::common::*;

fn mysql_exec(sql: &str) {
    let out = std::process::Command::new("mysql")
        .args(["-h", &std::env::var("VISMIG_TEST_MYSQL_HOST").unwrap_or("127.0.0.1".into())])
        .args(["-P", &std::env::var("VISMIG_TEST_MYSQL_PORT").unwrap_or("3306".into())])
        .args(["-u", &std::env::var("VISMIG_TEST_MYSQL_USER").unwrap_or("temporal".into())])
        .arg(format!("-p{}", std::env::var("VISMIG_TEST_MYSQL_PASSWORD").unwrap_or("temporal".into())))
        .args(["-e", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "mysql: {}", text(&out));
}

/// Everything a run leaves behind that an operator or a log pipeline gets to see.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }
    fn add_output(&mut self, what: &str, out: &std::process::Output) {
        self.add(what, text(out));
    }
    fn add_file(&mut self, path: &std::path::Path) {
        let content = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.add(path.display().to_string(), content);
    }
    fn assert_free_of(&self, secrets: &[&str]) {
        for (what, text) in &self.0 {
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "{what} contains a configured secret ({} chars):\n{text}",
                    secret.len()
                );
            }
        }
    }
    fn bytes(&self) -> usize {
        self.0.iter().map(|(_, t)| t.len()).sum()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_in_logs_metrics_or_files() {
    if !service_up("postgres") || !service_up("opensearch") || !service_up("mariadb") {
        return;
    }
    let pid = std::process::id();
    let pg_password = format!("Pg-S3cret-{pid}-xyzzy");
    let es_password = format!("Os-S3cret-{pid}-plugh");
    let my_password = format!("My-S3cret-{pid}-frotz");
    let wrong_password = format!("Wr0ng-S3cret-{pid}-gnusto");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("vismig:{es_password}"));
    let mut seen = Seen::default();

    // PostgreSQL: a role of its own, the password in the environment.
    let db = db_name("secrets");
    let role = format!("vt_secret_{pid}");
    reset_db("postgres", &db, "advanced");
    pg_exec(
        &db,
        &format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{pg_password}'; \
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; GRANT USAGE ON SCHEMA public TO {role};"
        ),
    )
    .await;
    let (url, index) = search_index("opensearch", "secrets").await;
    register_seed_attributes(&url, &index).await;
    let proxy = FaultProxy::start(url.trim_start_matches("http://")).await;
    let pg = |password: &str| {
        format!(
            "{{ pluginName: postgres12, databaseName: {db}, connectAddr: \"{}\", user: {role}, password: \"{password}\" }}",
            pg_addr()
        )
    };
    let es = format!(
        "elasticsearch: {{ version: v7, url: {{ scheme: http, host: \"{}\" }}, username: vismig, password: \"{es_password}\", indices: {{ visibility: {index} }} }}",
        proxy.addr()
    );
    let extra = format!(
        "  batchSize: 50\n  concurrency: 2\n  rate: {{ recordsPerSecond: 200 }}\n  metrics: {{ listen: \"127.0.0.1:0\" }}\n  verify: {{ cutoff: 0s, recheckAfter: 1s }}\n{}",
        aliases_yaml(4)
    );
    let work = Work::with_stores(Some(pg("${VISMIG_FAULT_PG_PASSWORD}")), Some(es), &extra).await;
    let run = |args: &[&str], log: &str| {
        work.vismig(args).env("VISMIG_FAULT_PG_PASSWORD", &pg_password).env("RUST_LOG", log).output().unwrap()
    };
    let out = run(&["seed", "--records", "600", "--seed", "4"], "debug");
    assert!(out.status.success(), "{}", text(&out));
    seen.add_output("seed", &out);
    pg_exec(
        &db,
        "INSERT INTO executions_visibility (namespace_id, run_id, workflow_type_name, workflow_id, start_time, execution_time, status, encoding) \
         VALUES ('ns-broken', 'run-status-42', 'T', 'wf', '2024-01-01', '2024-01-01', 42, 'Proto3'), \
                ('ns-broken', 'run-infinity', 'T', 'wf', 'infinity', '2024-01-01', 2, 'Proto3')",
    )
    .await;

    // The backfill, with debug logs; the secondary goes away for 3 s in the middle.
    let mut command = work.vismig(&["backfill"]);
    command.env("VISMIG_FAULT_PG_PASSWORD", &pg_password).env("RUST_LOG", "debug");
    let running = Running::spawn(command);
    wait_until(Duration::from_secs(60), "100 settled records", async || settled(&work) >= 100).await;
    seen.add("/metrics while copying", running.get("/metrics").await.1);
    proxy.cut();
    wait_until(Duration::from_secs(20), "/readyz to say not ready", async || running.get("/readyz").await.0 == 503)
        .await;
    seen.add("/readyz during the outage", running.get("/readyz").await.1);
    seen.add("/metrics during the outage", running.get("/metrics").await.1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore().await;
    let (code, stdout, log) = running.finish().await;
    assert_eq!(code, Some(0), "{stdout}\n{log}");
    assert!(
        log.contains("backing off") && log.contains("\"level\":\"DEBUG\""),
        "the log has the outage, at debug level"
    );
    seen.add("backfill stdout", stdout);
    seen.add("backfill log", log);

    work.write_config(&extra.replace("recordsPerSecond: 200", "recordsPerSecond: 0"));
    let out = run(&["verify", "--deep", "--output", "json"], "debug");
    // Rows that cannot be read are in the dead letter, not in the comparison.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    seen.add_output("verify", &out);
    let out = run(&["status", "--output", "json"], "debug");
    seen.add_output("status", &out);
    seen.add_file(&work.dead_letter());
    seen.add_file(&work.checkpoint());
    seen.add_file(&work.path("last-verify.json"));
    let dead = std::fs::read_to_string(work.dead_letter()).unwrap();
    assert_eq!(dead.lines().count(), 2, "{dead}");

    // A wrong password, with every trace line the libraries emit.
    let wrong = Work::with_stores(Some(pg(&wrong_password)), None, "").await;
    let out = wrong.vismig(&["backfill"]).env("RUST_LOG", "trace").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("password authentication failed"), "{}", text(&out));
    seen.add_output("wrong password", &out);

    // SQLite -> MariaDB with a user of its own.
    let my_db = db_name("secrets");
    // reset-db.sh keeps an existing MariaDB database (the tool asks before dropping).
    mysql_exec(&format!("DROP DATABASE IF EXISTS {my_db}"));
    reset_db("mariadb", &my_db, "advanced");
    let my_user = format!("vt_secret_{pid}");
    mysql_exec(&format!(
        "DROP USER IF EXISTS '{my_user}'@'%'; CREATE USER '{my_user}'@'%' IDENTIFIED BY '{my_password}'; GRANT ALL ON {my_db}.* TO '{my_user}'@'%';"
    ));
    let my = format!(
        "{{ pluginName: mysql8, databaseName: {my_db}, connectAddr: \"{}:{}\", user: {my_user}, password: \"{my_password}\" }}",
        std::env::var("VISMIG_TEST_MYSQL_HOST").unwrap_or("127.0.0.1".into()),
        std::env::var("VISMIG_TEST_MYSQL_PORT").unwrap_or("3306".into())
    );
    let seeded = Work::seeded(300, "").await;
    let to_mysql = Work::with_stores(None, Some(my), "  verify: { cutoff: 0s, recheckAfter: 1s }\n").await;
    std::fs::copy(seeded.primary(), to_mysql.primary()).unwrap();
    let out = to_mysql.vismig(&["backfill"]).env("RUST_LOG", "debug").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    seen.add_output("SQLite -> MariaDB backfill", &out);
    let out = to_mysql.vismig(&["verify", "--deep"]).env("RUST_LOG", "debug").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    seen.add_output("SQLite -> MariaDB verify", &out);
    let broken = to_mysql.config();
    let config = std::fs::read_to_string(&broken).unwrap().replace(&my_password, &wrong_password);
    std::fs::write(&broken, config).unwrap();
    let out = to_mysql.vismig(&["backfill"]).env("RUST_LOG", "trace").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("Access denied"), "{}", text(&out));
    seen.add_output("MariaDB wrong password", &out);

    // The search is not vacuous: the passwords are in the configs (or their environment).
    assert!(std::fs::read_to_string(work.config()).unwrap().contains(&es_password));
    assert!(std::fs::read_to_string(to_mysql.config()).unwrap().contains(&wrong_password));
    seen.assert_free_of(&[&pg_password, &es_password, &my_password, &wrong_password, &basic]);
    println!(
        "secrets: {} outputs, logs, pages and files ({} KiB) searched for 4 passwords and a basic-auth header: none found",
        seen.0.len(),
        seen.bytes() / 1024
    );
    pg_exec(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role};")).await;
    mysql_exec(&format!("DROP USER '{my_user}'@'%'; DROP DATABASE {my_db};"));
    drop_index(&url, &index).await;
}

/// Passwords made of YAML syntax reach the real servers intact through `${VAR}`. Each
/// broke or reshaped the config when the reference was expanded in the text before
/// parsing: ` #` cut it, a leading `*`, `&`, `!` or quote, or a `: `, was read as YAML.
/// The references are unquoted inside flow mappings, the hardest place for them.
#[tokio::test(flavor = "multi_thread")]
async fn passwords_made_of_yaml_syntax_reach_postgres_and_mariadb_through_env() {
    if !service_up("postgres") || !service_up("mariadb") {
        return;
    }
    let pid = std::process::id();
    let sql_literal = |s: &str| s.replace('\'', "''");
    let seeded = Work::seeded(100, "").await;

    // Backfills SQLite -> the store, with the password only in the environment.
    let backfill = async |store: String, password: &str| {
        let work = Work::with_stores(None, Some(store), "").await;
        std::fs::copy(seeded.primary(), work.primary()).unwrap();
        let out = work.vismig(&["backfill"]).env("VISMIG_TEST_YAML_PASSWORD", password).output().unwrap();
        assert!(out.status.success(), "password {password:?}: {}", text(&out));
        assert!(!text(&out).contains(password), "the password is never shown");
        let cp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(work.checkpoint()).unwrap()).unwrap();
        assert_eq!(cp["totals"]["inserted"], 100, "password {password:?}: every record written");
    };

    let db = db_name("yaml_pwd");
    let role = format!("vt_yaml_{pid}");
    reset_db("postgres", &db, "advanced");
    for (i, password) in
        [format!("*Pg{pid}&a !b #c: d\"e'f"), format!("\"Pg{pid}' #x: {{y}}, [z] &w ${{HOME}}")].iter().enumerate()
    {
        let create = if i == 0 { "CREATE" } else { "ALTER" };
        pg_exec(
            &db,
            &format!(
                "{create} ROLE {role} LOGIN PASSWORD '{}'; TRUNCATE executions_visibility; \
                 GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; GRANT USAGE ON SCHEMA public TO {role};",
                sql_literal(password)
            ),
        )
        .await;
        let store = format!(
            "{{ pluginName: postgres12, databaseName: {db}, connectAddr: \"{}\", user: {role}, password: ${{VISMIG_TEST_YAML_PASSWORD}} }}",
            pg_addr()
        );
        backfill(store, password).await;
    }
    pg_exec(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role};")).await;

    let my_db = db_name("yaml_pwd");
    mysql_exec(&format!("DROP DATABASE IF EXISTS {my_db}"));
    reset_db("mariadb", &my_db, "advanced");
    let my_user = format!("vt_yaml_{pid}");
    for (i, password) in [format!("&My{pid} #a: b*c!d\"e'f"), format!("!My{pid}: '#q\" - [x]")].iter().enumerate() {
        let create = if i == 0 { "CREATE USER" } else { "ALTER USER" };
        mysql_exec(&format!(
            "{create} '{my_user}'@'%' IDENTIFIED BY '{}'; GRANT ALL ON {my_db}.* TO '{my_user}'@'%'; TRUNCATE {my_db}.executions_visibility;",
            sql_literal(password)
        ));
        let store = format!(
            "{{ pluginName: mysql8, databaseName: {my_db}, connectAddr: \"{}:{}\", user: {my_user}, password: ${{VISMIG_TEST_YAML_PASSWORD}} }}",
            std::env::var("VISMIG_TEST_MYSQL_HOST").unwrap_or("127.0.0.1".into()),
            std::env::var("VISMIG_TEST_MYSQL_PORT").unwrap_or("3306".into())
        );
        backfill(store, password).await;
    }
    mysql_exec(&format!("DROP USER '{my_user}'@'%'; DROP DATABASE {my_db};"));
}
