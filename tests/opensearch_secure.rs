//! OpenSearch with its security plugin (tests/services `opensearch_secure`: TLS on HTTP
//! with the test CA, basic auth, no demo configuration): a seed, backfill, deep verify
//! and repair as a user whose role has only what vismig needs (`vismig_migrator`), and
//! each way a secured connection goes wrong — unknown CA, wrong host name, expired
//! certificate, plain HTTP to the TLS-only node, wrong password, a role without the bulk
//! write — ending in exit 1 with one line that names the store and what to fix, and
//! never the password.

mod common;

use std::path::PathBuf;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use vismig::store::Sink;

fn secure_url() -> String {
    std::env::var("VISMIG_TEST_OPENSEARCH_SECURE_URL").unwrap_or_else(|_| "https://127.0.0.1:9202".into())
}

fn tls_dir() -> PathBuf {
    std::env::var_os("VISMIG_TEST_TLS_DIR").map(PathBuf::from).unwrap_or_else(|| "/tmp/vismig-services/tls".into())
}

/// `(user, password)` from env.sh's `VISMIG_TEST_OPENSEARCH_SECURE_<WHO>` (`user:password`).
fn login(who: &str) -> (String, String) {
    let v = std::env::var(format!("VISMIG_TEST_OPENSEARCH_SECURE_{who}")).unwrap_or_else(|_| {
        match who {
            "ADMIN" => "admin:vismig-admin-Pw1",
            "USER" => "vismig:vismig-Pw1",
            _ => "vismig_nowrite:vismig-nowrite-Pw1",
        }
        .into()
    });
    let (u, p) = v.split_once(':').unwrap();
    (u.into(), p.into())
}

/// One JSON request as the admin, over TLS: the answer and its status.
async fn admin_call(method: Method, path: &str, body: Option<Value>) -> (reqwest::StatusCode, Value) {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls_dir().join("ca.crt")).unwrap()).unwrap();
    let http = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let (user, password) = login("ADMIN");
    let mut req = http.request(method, format!("{}{path}", secure_url())).basic_auth(user, Some(password));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `admin_call` that must succeed.
async fn admin(method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, v) = admin_call(method, path, body).await;
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// Two fresh indices on the secured node, `…_primary` and `…_secondary` (the role's
/// index patterns), made by Temporal's template, the seed's attributes registered on both.
struct SecureIndices {
    primary: String,
    secondary: String,
}

impl SecureIndices {
    async fn new(test: &str) -> Self {
        let base = format!("temporal_visibility_v1_vt_{test}_{}", std::process::id());
        let (primary, secondary) = (format!("{base}_primary"), format!("{base}_secondary"));
        for index in [&primary, &secondary] {
            admin_call(Method::DELETE, &format!("/{index}"), None).await;
            admin(Method::PUT, &format!("/{index}"), None).await;
        }
        let (user, password) = login("ADMIN");
        for index in [&primary, &secondary] {
            let mut cfg = es_config(&secure_url(), index);
            cfg.username = Some(user.clone());
            cfg.password = Some(vismig::config::Secret::new(password.clone()));
            cfg.tls = Some(vismig::config::persistence::Tls {
                enabled: true,
                ca_file: Some(tls_dir().join("ca.crt").display().to_string()),
                ..Default::default()
            });
            let store = vismig::store::elasticsearch::ElasticsearchStore::open(
                "admin",
                &cfg,
                &vismig::config::StoreRef { datastore: "admin".into(), es_index_key: None },
            )
            .unwrap();
            let attrs: Vec<_> =
                vismig::seed::SEED_ALIASES.iter().map(|(_, alias, kind)| (alias.to_string(), *kind)).collect();
            store.register_search_attributes(&attrs).await.unwrap();
        }
        SecureIndices { primary, secondary }
    }

    async fn drop(self) {
        for index in [&self.primary, &self.secondary] {
            admin(Method::DELETE, &format!("/{index}"), None).await;
        }
    }
}

/// The `elasticsearch:` datastore body for `index` at `url`, logged in as `user`, with
/// `tls` as the block's `tls` (flow map) or none.
fn secure_store(url: &str, index: &str, (user, password): &(String, String), tls: Option<String>) -> String {
    let (scheme, host) = url.split_once("://").unwrap();
    let tls = tls.map(|t| format!(", tls: {t}")).unwrap_or_default();
    format!(
        "elasticsearch: {{ version: v7, url: {{ scheme: {scheme}, host: \"{host}\" }}, username: {user}, password: \"{password}\", indices: {{ visibility: {index} }}{tls} }}"
    )
}

fn ca_tls(ca: &str) -> Option<String> {
    Some(format!("{{ enabled: true, caFile: \"{}\" }}", tls_dir().join(ca).display()))
}

async fn count(index: &str) -> u64 {
    admin(Method::POST, &format!("/{index}/_refresh"), None).await;
    admin(Method::GET, &format!("/{index}/_count"), None).await["count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_verify_and_repair_over_tls_with_the_least_privilege_role() {
    if !service_up("opensearch_secure") {
        return;
    }
    let idx = SecureIndices::new("sec_ok").await;
    let url = secure_url();
    // The seed writes into the primary, which vismig's role may only read: as the admin.
    let seeder =
        Work::with_stores(Some(secure_store(&url, &idx.primary, &login("ADMIN"), ca_tls("ca.crt"))), None, "").await;
    let out = seeder.run(&["seed", "--records", "1200", "--seed", "9"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(count(&idx.primary).await, 1200);

    let user = login("USER");
    let work = Work::with_stores(
        Some(secure_store(&url, &idx.primary, &user, ca_tls("ca.crt"))),
        Some(secure_store(&url, &idx.secondary, &user, ca_tls("ca.crt"))),
        "  verify: { recheckAfter: 1s }\n",
    )
    .await;
    let out = work.run(&["backfill", "--concurrency", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("1200 inserted"), "{}", text(&out));
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut outputs = vec![text(&out)];

    // A record the primary never had, put into the secondary behind vismig's back:
    // the repair removes it (a delete through the same role).
    let hit =
        &admin(Method::POST, &format!("/{}/_search", idx.secondary), Some(json!({"size": 1}))).await["hits"]["hits"][0];
    let mut extra = hit["_source"].clone();
    extra["RunId"] = json!(uuid::Uuid::new_v4().to_string());
    let id = vismig::store::elasticsearch::document::doc_id(
        extra["WorkflowId"].as_str().unwrap(),
        extra["RunId"].as_str().unwrap(),
    );
    admin(
        Method::PUT,
        &format!("/{}/_doc/{id}?version=1&version_type=external&refresh=true", idx.secondary),
        Some(extra),
    )
    .await;
    let out = work.run(&["verify", "--deep", "--repair"]);
    assert_eq!(out.status.code(), Some(3), "the extra record is reported: {}", text(&out));
    assert!(text(&out).contains("extra"), "{}", text(&out));
    outputs.push(text(&out));
    assert_eq!(count(&idx.secondary).await, 1200, "the extra record is gone");
    let out = work.run(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for t in outputs.iter().chain([&text(&out)]) {
        assert!(!t.contains(&user.1), "the password leaked: {t}");
    }
    idx.drop().await;
}

/// A TLS front of the secured node presenting `cert` of the test CA: a certificate the
/// node itself cannot present (expired, for another host).
async fn presenting(cert: &str) -> String {
    let upstream = secure_url().trim_start_matches("https://").trim_end_matches('/').to_string();
    format!("https://{}", common::tls::tls_front(&upstream, cert, common::tls::Handshake::Direct).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_broken_secured_connection_fails_in_one_line_naming_the_store_and_the_fix() {
    if !service_up("opensearch_secure") {
        return;
    }
    let idx = SecureIndices::new("sec_bad").await;
    let url = secure_url();
    let plain = url.replacen("https://", "http://", 1);
    let expired = presenting("expired").await;
    let wrong_host = presenting("wronghost").await;
    let user = login("USER");
    let wrong_password = (user.0.clone(), "Wr0ng-Secure-Pw".to_string());
    let nowrite = login("NOWRITE_USER");
    // (what, store, the words the line must hold)
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "unknown CA",
            secure_store(&url, &idx.secondary, &user, ca_tls("other-ca.crt")),
            &["UnknownIssuer", "set elasticsearch.tls.caFile (or caData) to the CA that signed it"],
        ),
        (
            // No CA: reqwest checks the server with the platform's trust store, whose
            // verifier logs its own ERROR record on a refusal; vismig's log filter drops it.
            "TLS without a CA",
            secure_store(&url, &idx.secondary, &user, Some("{ enabled: true }".into())),
            &["UnknownIssuer", "set elasticsearch.tls.caFile (or caData) to the CA that signed it"],
        ),
        (
            "wrong host name",
            secure_store(&wrong_host, &idx.secondary, &user, ca_tls("ca.crt")),
            &["certificate not valid for name \"127.0.0.1\"", "connect by a name the certificate holds"],
        ),
        (
            "expired certificate",
            secure_store(&expired, &idx.secondary, &user, ca_tls("ca.crt")),
            &["certificate expired", "has expired: renew it on the server"],
        ),
        (
            "plain HTTP to the TLS-only node",
            secure_store(&plain, &idx.secondary, &user, None),
            &["connection closed", "set url.scheme https and tls.enabled: true"],
        ),
        (
            "wrong password",
            secure_store(&url, &idx.secondary, &wrong_password, ca_tls("ca.crt")),
            &["HTTP 401", "check elasticsearch.username and password"],
        ),
        (
            "a role without the bulk write",
            secure_store(&url, &idx.secondary, &nowrite, ca_tls("ca.crt")),
            &["no permissions for [indices:data/write/bulk[s]", "grant the user's role this permission"],
        ),
    ];
    for (what, store, words) in cases {
        // A SQLite primary with records, so only the secured secondary can be at fault.
        let work = Work::with_stores(None, Some(store), "").await;
        let out = work.run(&["seed", "--records", "50"]);
        assert!(out.status.success(), "{what}: seed: {}", text(&out));
        let out = work.run(&["backfill"]);
        let log = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {log}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Besides the JSON log: the error, one line; a preflight error under its heading.
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with('{') && !l.trim().is_empty() && *l != "vismig: preflight failed:")
            .collect();
        assert_eq!(lines.len(), 1, "{what}: one line: {stderr}");
        let line = lines[0];
        assert!(line.contains("(store secondary)") || line.contains("store \"secondary\""), "{what}: {line}");
        let named = line.matches("(store secondary)").count() + line.matches("store \"secondary\"").count();
        assert_eq!(named, 1, "{what}: the store is named once: {line}");
        for word in words {
            assert!(line.contains(word), "{what}: {line:?} lacks {word:?}");
        }
        // RUST_LOG is set (info): the verifier's own line is dropped all the same.
        assert!(!log.contains("failed to verify TLS certificate"), "{what}: the verifier's own line: {log}");
        for secret in [&user.1, &wrong_password.1, &nowrite.1] {
            assert!(!log.contains(secret.as_str()), "{what}: a password leaked: {log}");
        }
        println!("secured OpenSearch, {what}: exit 1: {line}");
    }
    assert_eq!(count(&idx.secondary).await, 0, "nothing was written by a refused run");
    idx.drop().await;
}
