//! The flip of a dynamic config held in a Kubernetes ConfigMap, against the fake API
//! server of `apiserver.rs` (no real API server runs here): the exact requests (GET,
//! then a merge PATCH of the one key carrying the resourceVersion read), a conflict
//! retried with a fresh GET, a persistent conflict failing with exit 1, dry runs and
//! guard refusals that send no PATCH, the bearer token carried and never printed, TLS
//! with the kubeconfig's CA and client certificate, errors that name what and where,
//! `status` and the `vismig_read_flipped` metric read from the ConfigMap.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::apiserver::{FakeApiServer, Request};
use super::{DYNAMIC_CONFIG, changed_lines};
use crate::common::*;

const NS: &str = "temporal";
const NAME: &str = "temporal-dynamic-config";
const KEY: &str = "dynamic_config.yaml";
const OTHER_KEY: &str = "development.yaml";
const OTHER: &str = "# unrelated, must stay\nfrontend.rps:\n  - value: 10\n";
const TOKEN: &str = "kube-token-9c1f7e2b4d";
const PATH: &str = "/api/v1/namespaces/temporal/configmaps/temporal-dynamic-config";

struct Cluster {
    api: FakeApiServer,
    kubeconfig: PathBuf,
}

/// A fake API server holding the ConfigMap (the dynamic config plus another key), a
/// kubeconfig with the token and a server that is never reached, and a vismig config
/// whose `apiServer` points at the fake.
async fn cluster(work: &Work, extra: &str) -> Cluster {
    let api = FakeApiServer::new(Some(TOKEN));
    api.put(NS, NAME, &[(KEY, DYNAMIC_CONFIG), (OTHER_KEY, OTHER)]);
    let url = api.serve_http().await;
    let kubeconfig = work.path("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\ncontexts:\n  - name: test\n    context: {{ cluster: test, user: vismig }}\nclusters:\n  - name: test\n    cluster: {{ server: \"https://kubernetes.invalid:6443\" }}\nusers:\n  - name: vismig\n    user: {{ token: {TOKEN} }}\n"
        ),
    )
    .unwrap();
    write_config(work, &format!("apiServer: \"{url}\""), extra);
    Cluster { api, kubeconfig }
}

fn write_config(work: &Work, api_server: &str, extra: &str) {
    let sep = if api_server.is_empty() { "" } else { ", " };
    work.write_config(&format!(
        "  verify: {{ cutoff: 5m, recheckAfter: 1s }}\n  flip:\n    mode: auto\n    maxVerifyAge: 1h\n    target:\n      configMap: {{ namespace: {NS}, name: {NAME}, key: {KEY}{sep}{api_server} }}\n{extra}"
    ));
}

/// Runs vismig with this kubeconfig, off the async runtime that serves the fake.
async fn vismig(work: &Work, kubeconfig: &Path, args: &[&str]) -> Output {
    let mut cmd = work.vismig(args);
    cmd.env("KUBECONFIG", kubeconfig).env_remove("KUBERNETES_SERVICE_HOST").env_remove("KUBERNETES_SERVICE_PORT");
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

/// What `vismig verify` saves after a passing verify of all namespaces.
fn passing_verify(work: &Work) {
    let v = json!({"result": "equal", "mode": "counts", "namespaces": [], "namespaceFilter": [],
                   "finishedAt": chrono::Utc::now().to_rfc3339()});
    std::fs::write(work.path("last-verify.json"), v.to_string()).unwrap();
}

fn backups(work: &Work) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(work.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with(&format!("configmap-{NS}-{NAME}-{KEY}.vismig-backup-"))
        })
        .collect();
    found.sort();
    found
}

/// Method, and for a PATCH its resourceVersion precondition.
fn sequence(log: &[Request]) -> Vec<String> {
    log.iter()
        .map(|r| match r.method.as_str() {
            "PATCH" => {
                let body: Value = serde_json::from_str(&r.body).unwrap();
                format!("PATCH {}", body["metadata"]["resourceVersion"].as_str().unwrap())
            }
            m => m.to_string(),
        })
        .collect()
}

const FLIPPED: &str = "  - value: true   # all other namespaces";

#[tokio::test(flavor = "multi_thread")]
async fn run_flips_the_configmap_with_one_get_and_one_patch_of_the_one_line() {
    let work = Work::seeded(1_000, "").await;
    let c = cluster(&work, "").await;
    let out = vismig(&work, &c.kubeconfig, &["run"]).await;
    let log_text = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log_text}");
    assert!(log_text.contains("verify (counts): equal"), "{log_text}");
    assert!(
        log_text.contains(&format!("flipped: ConfigMap {NS}/{NAME} key {KEY} patched (resourceVersion 1000 -> 1001)")),
        "{log_text}"
    );
    assert!(log_text.contains("\"audit\":true"), "an audit line is logged: {log_text}");
    assert!(!log_text.contains(TOKEN), "the token is never printed: {log_text}");

    // The flip state read at the start (GET), then the flip's GET and PATCH.
    let log = c.api.log();
    assert_eq!(sequence(&log), ["GET", "GET", "PATCH 1000"], "{log:#?}");
    for r in &log {
        assert_eq!(r.path, PATH);
        assert_eq!(r.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()), "{r:?}");
    }
    let patch = &log[2];
    assert_eq!(patch.query, "fieldManager=vismig");
    assert_eq!(patch.content_type.as_deref(), Some("application/merge-patch+json"));
    let body: Value = serde_json::from_str(&patch.body).unwrap();
    let new = body["data"][KEY].as_str().unwrap().to_string();
    assert_eq!(body, json!({"metadata": {"resourceVersion": "1000"}, "data": {KEY: new}}), "only the one key is sent");
    assert_eq!(changed_lines(DYNAMIC_CONFIG, &new), vec![FLIPPED]);
    assert_eq!(new.lines().count(), DYNAMIC_CONFIG.lines().count());
    assert_eq!(
        new.replace(FLIPPED, "  - value: false   # all other namespaces"),
        DYNAMIC_CONFIG,
        "all else byte for byte"
    );

    let cm = c.api.get(NS, NAME);
    assert_eq!(cm.resource_version, 1001);
    assert_eq!(cm.data[KEY], new);
    assert_eq!(cm.data[OTHER_KEY], OTHER);
    let backups = backups(&work);
    assert_eq!(backups.len(), 1, "one backup beside the checkpoint");
    assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), DYNAMIC_CONFIG);

    // status reads the flip state from the ConfigMap.
    let out = vismig(&work, &c.kubeconfig, &["status"]).await;
    let status = text(&out);
    assert!(
        status.contains(&format!(
            "flip state (ConfigMap {NS}/{NAME} key {KEY}): reads from the secondary: all except payments; writing mode: dual"
        )),
        "{status}"
    );
    let out = vismig(&work, &c.kubeconfig, &["status", "--output", "json"]).await;
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["flip"]["location"], format!("ConfigMap {NS}/{NAME} key {KEY}"));
    assert_eq!(json["flip"]["writingMode"], "dual");
    assert_eq!(
        json["flip"]["namespaces"],
        json!([
            {"namespace": "*", "reads": "secondary", "writes": "dual", "ownEntry": true},
            {"namespace": "payments", "reads": "primary", "writes": "dual", "ownEntry": true},
        ])
    );

    // Rolled back with --reads primary: the ConfigMap holds the original text again.
    let out = vismig(&work, &c.kubeconfig, &["flip", "--reads", "primary"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(c.api.get(NS, NAME).data[KEY], DYNAMIC_CONFIG, "rolled back byte for byte");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_is_retried_with_a_fresh_get_and_keeps_the_other_writers_change() {
    let work = Work::new("").await;
    let c = cluster(&work, "").await;
    passing_verify(&work);
    // Someone raises limit.maxIDLength between vismig's GET and its PATCH, once.
    c.api.interfere(1, |cm| {
        let text = cm.data[KEY].replace("  - value: 255\n", "  - value: 300\n");
        cm.data.insert(KEY.into(), text);
    });
    let out = vismig(&work, &c.kubeconfig, &["flip", "--reads", "secondary"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("409 Conflict"), "the retry is logged: {}", text(&out));
    assert_eq!(sequence(&c.api.log()), ["GET", "PATCH 1000", "GET", "PATCH 1001"]);
    let cm = c.api.get(NS, NAME);
    assert_eq!(cm.resource_version, 1002);
    let theirs = DYNAMIC_CONFIG.replace("  - value: 255\n", "  - value: 300\n");
    assert_eq!(changed_lines(&theirs, &cm.data[KEY]), vec![FLIPPED], "the edit re-applied to the fresh text");
    assert!(cm.data[KEY].contains("  - value: 300\n"), "the other writer's change is kept");
    let backups = backups(&work);
    assert_eq!(backups.len(), 1, "only the backup of the version replaced: {backups:?}");
    assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), theirs);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_conflict_fails_with_a_clear_error_and_exit_1() {
    let work = Work::new("").await;
    let c = cluster(&work, "").await;
    passing_verify(&work);
    c.api.interfere(usize::MAX, |cm| {
        let text = format!("{}# touched by a controller\n", cm.data[KEY]);
        cm.data.insert(KEY.into(), text);
    });
    let out = vismig(&work, &c.kubeconfig, &["flip", "--reads", "secondary"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr.contains(&format!(
            "vismig: ConfigMap {NS}/{NAME} key {KEY}: still changing under vismig: the API server answered 409 Conflict to all 5 attempts"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(
        sequence(&c.api.log()),
        ["GET", "PATCH 1000", "GET", "PATCH 1001", "GET", "PATCH 1002", "GET", "PATCH 1003", "GET", "PATCH 1004"]
    );
    let now = &c.api.get(NS, NAME).data[KEY];
    assert!(now.starts_with(DYNAMIC_CONFIG), "only the controller's lines were added");
    assert!(!now.contains(FLIPPED));
    assert!(backups(&work).is_empty(), "no backup of versions that were never replaced");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_diff_and_sends_no_patch() {
    let work = Work::new("").await;
    let c = cluster(&work, "").await;
    passing_verify(&work);
    let out =
        vismig(&work, &c.kubeconfig, &["flip", "--reads", "secondary", "--namespace", "orders", "--dry-run"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout.starts_with(&format!("--- configmaps/{NS}/{NAME}/{KEY}\n")), "{stdout}");
    assert!(
        stdout.contains("   - value: false   # all other namespaces\n+  - value: true\n+    constraints:\n+      namespace: \"orders\"\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("dry run: ConfigMap {NS}/{NAME} key {KEY} would change; nothing written")),
        "{stdout}"
    );
    assert_eq!(sequence(&c.api.log()), ["GET"]);
    assert_eq!(c.api.get(NS, NAME).resource_version, 1000);
    assert!(backups(&work).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guard_refuses_with_exit_4_and_writes_nothing() {
    let work = Work::new("").await;
    let c = cluster(&work, "").await;
    let out = vismig(&work, &c.kubeconfig, &["flip", "--reads", "secondary"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("flip refused: no verify has run"), "{}", text(&out));

    // A passing verify, but the ConfigMap says writes are off.
    passing_verify(&work);
    c.api.put(NS, NAME, &[(KEY, &DYNAMIC_CONFIG.replace("\"dual\"", "\"off\"")), (OTHER_KEY, OTHER)]);
    let out = vismig(&work, &c.kubeconfig, &["flip", "--reads", "secondary"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("system.secondaryVisibilityWritingMode is \"off\", not \"dual\""), "{}", text(&out));
    assert_eq!(sequence(&c.api.log()), ["GET", "GET"], "no PATCH");
    assert_eq!(c.api.get(NS, NAME).resource_version, 1000);
    assert!(backups(&work).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn api_errors_name_what_and_where_and_never_show_the_token() {
    let work = Work::new("").await;
    let c = cluster(&work, "").await;
    let flip = ["flip", "--reads", "primary"];

    let wrong = work.path("wrong-kubeconfig");
    std::fs::write(&wrong, std::fs::read_to_string(&c.kubeconfig).unwrap().replace(TOKEN, "not-the-token")).unwrap();
    let out = vismig(&work, &wrong, &flip).await;
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out);
    assert!(
        e.contains(&format!(
            "ConfigMap {NS}/{NAME} key {KEY}: GET answered HTTP 401 Unauthorized: the API server did not accept the credentials (kubeconfig {}, context \"test\")",
            wrong.display()
        )),
        "{e}"
    );
    assert!(!e.contains("not-the-token"), "{e}");

    let cfg = std::fs::read_to_string(work.config()).unwrap();
    std::fs::write(work.config(), cfg.replace(&format!("key: {KEY}"), "key: docker.yaml")).unwrap();
    let e = text(&vismig(&work, &c.kubeconfig, &flip).await);
    assert!(
        e.contains(&format!(
            "ConfigMap {NS}/{NAME} key docker.yaml: the ConfigMap has no data key \"docker.yaml\" (keys: {OTHER_KEY}, {KEY})"
        )),
        "{e}"
    );
    std::fs::write(work.config(), cfg.replace(&format!("name: {NAME}"), "name: missing")).unwrap();
    let e = text(&vismig(&work, &c.kubeconfig, &flip).await);
    assert!(
        e.contains(&format!("ConfigMap {NS}/missing key {KEY}: GET answered HTTP 404 Not Found: no such ConfigMap at")),
        "{e}"
    );

    // A bad target is a config error (exit 2), one line per field.
    std::fs::write(work.config(), cfg.replace(&format!("namespace: {NS}, "), "")).unwrap();
    let out = vismig(&work, &c.kubeconfig, &flip).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "config error: migration.flip.target.configMap.namespace: missing (the Kubernetes namespace of the ConfigMap)"
    );
    assert!(sequence(&c.api.log()).iter().all(|m| m == "GET"));
}

#[tokio::test(flavor = "multi_thread")]
async fn long_running_commands_export_the_flip_state_read_from_the_configmap() {
    let work = Work::seeded(1_000, "").await;
    let c = cluster(
        &work,
        "  batchSize: 50\n  concurrency: 1\n  rate: { recordsPerSecond: 100 }\n  metrics: { listen: \"127.0.0.1:0\" }\n",
    )
    .await;
    let mut cmd = work.vismig(&["backfill", "--log-format", "json"]);
    cmd.env("KUBECONFIG", &c.kubeconfig).env_remove("KUBERNETES_SERVICE_HOST");
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(a) = v["address"].as_str()
            {
                let _ = addr_tx.send(a.to_string());
            }
        }
    });
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("listener address logged");
    let http = reqwest::Client::new();
    let want = ["vismig_read_flipped{namespace=\"*\"} 0", "vismig_read_flipped{namespace=\"payments\"} 0"];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        if want.iter().all(|w| metrics.contains(w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for w in want {
        assert!(metrics.contains(w), "{w} missing:\n{metrics}");
    }
    assert_eq!(sequence(&c.api.log()), ["GET"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_with_the_kubeconfigs_ca_and_client_certificate() {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flip/tls");
    let api = FakeApiServer::new(None);
    api.put(NS, NAME, &[(KEY, DYNAMIC_CONFIG)]);
    let url = api.serve_tls(&tls).await;
    let work = Work::new("").await;
    write_config(&work, "", "");
    passing_verify(&work);
    let b64 = |f: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(tls.join(f)).unwrap());
    let kubeconfig = |user: &str| {
        let path = work.path("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "current-context: tls\ncontexts: [{{name: tls, context: {{cluster: c, user: u}}}}]\nclusters: [{{name: c, cluster: {{server: \"{url}\", certificate-authority-data: {}}}}}]\nusers: [{{name: u, user: {user}}}]\n",
                b64("ca.crt")
            ),
        )
        .unwrap();
        path
    };

    // Without a client certificate the server ends the handshake.
    let out = vismig(&work, &kubeconfig("{}"), &["flip", "--reads", "secondary"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot reach the Kubernetes API server https://127.0.0.1:"), "{}", text(&out));

    let user = format!("{{client-certificate-data: {}, client-key-data: {}}}", b64("client.crt"), b64("client.key"));
    let out = vismig(&work, &kubeconfig(&user), &["flip", "--reads", "secondary"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sequence(&api.log()), ["GET", "PATCH 1000"], "the failed handshake never reached the server");
    assert_eq!(changed_lines(DYNAMIC_CONFIG, &api.get(NS, NAME).data[KEY]), vec![FLIPPED]);
}
