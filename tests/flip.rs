//! The flip and `vismig run`: comment-preserving edits of a realistic dynamic-config
//! file, the guard's refusals (exit 4), --force, --dry-run, rollback, and the whole
//! flow from preflight to flip. `configmap` flips a ConfigMap through a fake API server.

#[path = "flip/apiserver.rs"]
mod apiserver;
mod common;
#[path = "flip/configmap.rs"]
mod configmap;

use std::os::unix::fs::PermissionsExt;

use common::*;

const DYNAMIC_CONFIG: &str = r#"# Dynamic config of the prod Temporal cluster. Owned by the platform team.
frontend.enableClientVersionCheck:
  - value: true
    constraints: {}
limit.maxIDLength:
  - value: 255
    constraints: {}
# Visibility migration (runbook VIS-42): dual writes on since 2026-11-20
system.secondaryVisibilityWritingMode:
  - value: "dual"   # do not turn "on" before reads moved
system.enableReadFromSecondaryVisibility:
  - value: false
    constraints:
      namespace: "payments"
  - value: false   # all other namespaces
history.defaultActivityRetryPolicy:
  - value:
      InitialIntervalInSeconds: 1
      MaximumIntervalCoefficient: 100.0
      BackoffCoefficient: 2.0
      MaximumAttempts: 0
matching.numTaskqueueReadPartitions:
  - value: 8
    constraints:
      namespace: "payments"
      taskQueueName: "checkout"
"#;

fn flip_config(work: &Work, extra: &str) -> std::path::PathBuf {
    let dc = work.path("dynamicconfig.yaml");
    if !dc.exists() {
        std::fs::write(&dc, DYNAMIC_CONFIG).unwrap();
        std::fs::set_permissions(&dc, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    // `extra` may bring its own verify settings.
    let verify = if extra.contains("  verify:") { "" } else { "  verify: { cutoff: 5m, recheckAfter: 1s }\n" };
    work.write_config(&format!(
        "{verify}  flip: {{ mode: auto, dynamicConfigFile: \"{}\", maxVerifyAge: 1h }}\n{extra}",
        dc.display()
    ));
    dc
}

fn changed_lines(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    new.lines().enumerate().filter(|(i, l)| a.get(*i) != Some(l)).map(|(_, l)| l.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_goes_from_preflight_to_flip_and_changes_only_the_intended_line() {
    let work = Work::seeded(2_000, "").await;
    let dc = flip_config(&work, "");
    let out = work.run(&["run"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("backfill complete"), "{log}");
    assert!(log.contains("verify (counts): equal"), "{log}");
    assert!(log.contains("flipped:"), "{log}");
    let new = std::fs::read_to_string(&dc).unwrap();
    assert_eq!(new.lines().count(), DYNAMIC_CONFIG.lines().count());
    assert_eq!(changed_lines(DYNAMIC_CONFIG, &new), vec!["  - value: true   # all other namespaces"]);
    assert_eq!(std::fs::metadata(&dc).unwrap().permissions().mode() & 0o777, 0o640, "file mode kept");
    let backups: Vec<_> = std::fs::read_dir(work.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("dynamicconfig.yaml.vismig-backup-"))
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(std::fs::read_to_string(backups[0].path()).unwrap(), DYNAMIC_CONFIG);
    assert!(log.contains("\"audit\":true"), "an audit line is logged: {log}");
    let status = text(&work.run(&["status"]));
    assert!(status.contains("reads from the secondary: all except payments; writing mode: dual"), "{status}");

    // Idempotent, then rolled back with --reads primary.
    let out = work.run(&["flip", "--reads", "secondary"]);
    assert!(text(&out).contains("nothing to do"), "{}", text(&out));
    let out = work.run(&["flip", "--reads", "primary"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&dc).unwrap(), DYNAMIC_CONFIG, "rolled back byte for byte");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guard_refuses_without_a_recent_passing_verify_and_dual_writes() {
    let work = Work::seeded(1_000, "").await;
    let dc = flip_config(&work, "");
    // No verify yet.
    let out = work.run(&["flip", "--reads", "secondary"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("no verify has run"), "{}", text(&out));

    // A failed verify (nothing copied yet).
    assert_eq!(work.run(&["verify"]).status.code(), Some(3));
    let out = work.run(&["flip", "--reads", "secondary"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out).contains("the last verify found differences"), "{}", text(&out));

    // A passing verify, but too old.
    assert!(work.run(&["backfill"]).status.success());
    assert_eq!(work.run(&["verify"]).status.code(), Some(0));
    let last = work.path("last-verify.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&last).unwrap()).unwrap();
    v["finishedAt"] = serde_json::json!((chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339());
    std::fs::write(&last, v.to_string()).unwrap();
    let out = work.run(&["flip", "--reads", "secondary"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out).contains("more than migration.flip.maxVerifyAge"), "{}", text(&out));

    // Fresh verify, but writes are not dual.
    assert_eq!(work.run(&["verify"]).status.code(), Some(0));
    std::fs::write(&dc, DYNAMIC_CONFIG.replace("\"dual\"", "\"off\"")).unwrap();
    let out = work.run(&["flip", "--reads", "secondary"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out).contains("not \"dual\""), "{}", text(&out));

    // --dry-run shows the diff and writes nothing; --force flips, loudly.
    let before = std::fs::read_to_string(&dc).unwrap();
    let out = work.run(&["flip", "--reads", "secondary", "--writes", "dual", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("+  - value: \"dual\""), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&dc).unwrap(), before);
    let out = work.run(&["flip", "--reads", "secondary", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("WARNING: flipping despite the guard"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_namespace_is_flipped_by_name() {
    let work = Work::seeded(1_000, "").await;
    let primary = records(&work.primary()).await;
    let id = primary[0].namespace_id.clone();
    let dc = flip_config(&work, &format!("  namespaces: [\"{id}\"]\n  namespaceNames: {{ payments: \"{id}\" }}\n"));
    let out = work.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let new = std::fs::read_to_string(&dc).unwrap();
    assert_eq!(changed_lines(DYNAMIC_CONFIG, &new), vec!["  - value: true"]);
    let readers = vismig::flip::dynamic_config::readers_of_secondary(&new).unwrap();
    assert_eq!(readers, vec!["payments"]);

    // A namespace this verify did not cover is refused.
    let out = work.run(&["flip", "--reads", "secondary", "--namespace", "orders"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("has no id (not in the default store"), "{}", text(&out));
}

/// Temporal's persistence database, created with temporal-sql-tool from the module's
/// postgresql/v12/temporal schema, with namespaces registered as Temporal stores them:
/// (name, id, NamespaceDetail bytes).
fn temporal_default_store(db: &str, namespaces: &[(&str, &str, Vec<u8>)]) {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set by tests/services/env.sh"));
    let tool = env("VISMIG_TEST_SQL_TOOL");
    let base = [
        "--ep".to_string(),
        env("VISMIG_TEST_PG_HOST"),
        "-p".into(),
        env("VISMIG_TEST_PG_PORT"),
        "-u".into(),
        env("VISMIG_TEST_PG_USER"),
        "--pw".into(),
        env("VISMIG_TEST_PG_PASSWORD"),
        "--pl".into(),
        "postgres12".into(),
        "--db".into(),
        db.to_string(),
    ];
    let versioned = format!("{}/schema/postgresql/v12/temporal/versioned", env("VISMIG_TEST_TEMPORAL_MODULE"));
    for args in
        [vec!["create-database"], vec!["setup-schema", "-v", "0.0"], vec!["update-schema", "-d", versioned.as_str()]]
    {
        let out = std::process::Command::new(&tool).args(&base).args(&args).output().unwrap();
        assert!(out.status.success(), "temporal-sql-tool {args:?}: {}", text(&out));
    }
    let psql = std::process::Command::new("psql")
        .env("PGPASSWORD", env("VISMIG_TEST_PG_PASSWORD"))
        .args([
            "-h",
            &env("VISMIG_TEST_PG_HOST"),
            "-p",
            &env("VISMIG_TEST_PG_PORT"),
            "-U",
            &env("VISMIG_TEST_PG_USER"),
            "-d",
            db,
            "-c",
        ])
        .arg(format!(
            "INSERT INTO namespaces (partition_id, id, name, notification_version, data, data_encoding, is_global) VALUES {}",
            namespaces
                .iter()
                .map(|(name, id, data)| {
                    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                    format!("(54321, decode(replace('{id}', '-', ''), 'hex'), '{name}', 1, decode('{hex}', 'hex'), 'Proto3', false)")
                })
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .output()
        .unwrap();
    assert!(psql.status.success(), "{}", text(&psql));
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_names_come_from_temporals_default_store() {
    if !service_up("postgres") {
        return;
    }
    let work = Work::seeded(1_000, "").await;
    let id = records(&work.primary()).await[0].namespace_id.clone();
    let db = db_name("flip_default_store");
    temporal_default_store(&db, &[("payments", &id, vec![0x0a, 0x00])]);
    let dc = flip_config(&work, &format!("  namespaces: [\"{id}\"]\n"));
    // Point the config at Temporal's default store, as the server's own config does.
    let config = std::fs::read_to_string(work.config())
        .unwrap()
        .replacen("persistence:\n", "persistence:\n  defaultStore: default\n", 1)
        .replacen(
            "  datastores:\n",
            &format!("  datastores:\n    default:\n      sql: {}\n", pg_store(&db, "postgres12")),
            1,
        );
    std::fs::write(work.config(), config).unwrap();

    let out = work.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let new = std::fs::read_to_string(&dc).unwrap();
    assert_eq!(vismig::flip::dynamic_config::readers_of_secondary(&new).unwrap(), vec!["payments"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_opensearch_takes_aliases_from_temporals_namespace_records() {
    if !service_up("postgres") || !service_up("opensearch") {
        return;
    }
    let db = db_name("alias_pg_os");
    let default_db = db_name("alias_pg_os_default");
    reset_db("postgres", &db, "advanced");
    let (url, index) = search_index("opensearch", "alias_pg_os").await;
    register_seed_attributes(&url, &index).await;
    let work = Work::with_stores(Some(pg_store(&db, "postgres12")), Some(search_store(&url, &index)), "").await;
    // Each namespace's alias map is in its record in the default store, as
    // `temporal operator search-attribute create` leaves it; the first namespace's record
    // holds a wrong map that migration.searchAttributeAliases overrides.
    let seed_map: Vec<(&str, &str)> = vismig::seed::SEED_ALIASES.iter().map(|(f, a, _)| (*f, *a)).collect();
    let ids = vismig::seed::Generator::new(23, chrono::Utc::now()).namespaces().to_vec();
    let names: Vec<String> = (0..ids.len()).map(|i| format!("ns{i}")).collect();
    let records: Vec<(&str, &str, Vec<u8>)> = ids
        .iter()
        .zip(&names)
        .enumerate()
        .map(|(i, (id, name))| {
            let map = if i == 0 { vec![("Keyword01", "Wrong")] } else { seed_map.clone() };
            (name.as_str(), id.as_str(), namespace_detail(name, &map))
        })
        .collect();
    temporal_default_store(&default_db, &records);
    let override_yaml: String = seed_map.iter().map(|(f, a)| format!("      {f}: {a}\n")).collect();
    let dc = flip_config(
        &work,
        &format!(
            "  verify: {{ cutoff: 5m, recheckAfter: 1s, deep: true }}\n  searchAttributeAliases:\n    {}:\n{override_yaml}",
            names[0]
        ),
    );
    let config = std::fs::read_to_string(work.config())
        .unwrap()
        .replacen("persistence:\n", "persistence:\n  defaultStore: default\n", 1)
        .replacen(
            "  datastores:\n",
            &format!("  datastores:\n    default:\n      sql: {}\n", pg_store(&default_db, "postgres12")),
            1,
        );
    std::fs::write(work.config(), config).unwrap();
    let out = work.run(&["seed", "--records", "1500", "--seed", "23"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["run"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("backfill complete: 1500 records settled"), "{log}");
    assert!(log.contains("verify (deep): equal"), "{log}");
    // Every document carries the users' names, in every namespace.
    let http = reqwest::Client::new();
    http.post(format!("{url}/{index}/_refresh")).send().await.unwrap();
    let found: serde_json::Value = http
        .post(format!("{url}/{index}/_search"))
        .json(&serde_json::json!({"size": 2000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let docs: Vec<serde_json::Value> =
        found["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_source"].clone()).collect();
    assert_eq!(docs.len(), 1500);
    assert!(docs.iter().any(|d| d["NamespaceId"] == ids[0].as_str() && d.get("CustomerId").is_some()));
    assert!(docs.iter().all(|d| d.get("Keyword01").is_none() && d.get("Wrong").is_none()));
    assert!(std::fs::read_to_string(&dc).unwrap().contains("value: true"));
    drop_index(&url, &index).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_goes_from_postgres_to_opensearch_and_flips() {
    if !service_up("postgres") || !service_up("opensearch") {
        return;
    }
    let db = db_name("run_pg_os");
    reset_db("postgres", &db, "advanced");
    let (url, index) = search_index("opensearch", "run_pg_os").await;
    register_seed_attributes(&url, &index).await;
    let work = Work::with_stores(Some(pg_store(&db, "postgres12")), Some(search_store(&url, &index)), "").await;
    // Deep verify: records compared field by field under Elasticsearch's attribute names.
    let dc =
        flip_config(&work, &format!("  verify: {{ cutoff: 5m, recheckAfter: 1s, deep: true }}\n{}", aliases_yaml(23)));
    let out = work.run(&["seed", "--records", "1500", "--seed", "23"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["run"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("backfill complete: 1500 records settled"), "{log}");
    assert!(log.contains("verify (deep): equal"), "{log}");
    assert!(log.contains("flipped:"), "{log}");
    let new = std::fs::read_to_string(&dc).unwrap();
    assert_eq!(changed_lines(DYNAMIC_CONFIG, &new), vec!["  - value: true   # all other namespaces"]);
    let status = text(&work.run(&["status"]));
    assert!(status.contains("last verify: equal (deep)"), "{status}");
    drop_index(&url, &index).await;
}
