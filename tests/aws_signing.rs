//! Temporal's `aws-request-signing` (Amazon OpenSearch Service) proven without AWS: vismig
//! talks to the test OpenSearch through tests/tools/sigv4_proxy.py, which recomputes every
//! request's SigV4 signature with botocore and refuses a mismatch with AWS's 403. A seed,
//! a backfill and a deep verify pass through it with each of Temporal's three credential
//! providers; a wrong secret is refused in one line that never shows it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;
use reqwest::Method;

const REGION: &str = "eu-west-1";

/// The verifying proxy, killed when dropped.
struct SigV4Proxy {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SigV4Proxy {
    /// A proxy in front of the test OpenSearch that accepts only `access_key`/`secret`
    /// (and `token`, when given) signatures for `REGION` and service `es`.
    fn start(tools: &std::path::Path, access_key: &str, secret: &str, token: Option<&str>) -> SigV4Proxy {
        let python = tools.join("sigv4-venv/bin/python");
        assert!(python.exists(), "{} is missing: run tests/tools/install.sh", python.display());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("proxy.log");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/sigv4_proxy.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(["--upstream", &search_url("opensearch"), "--region", REGION, "--access-key", access_key])
            .env("SIGV4_PROXY_SECRET_KEY", secret)
            .env("SIGV4_PROXY_TOKEN", token.unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let addr = first
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| {
                panic!("sigv4_proxy.py did not start: {first:?} {}", std::fs::read_to_string(&log).unwrap())
            })
            .to_string();
        SigV4Proxy { child, addr, log, _dir: dir }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap().lines().map(String::from).collect()
    }
}

impl Drop for SigV4Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A work directory whose one OpenSearch datastore, reached through `proxy`, holds the
/// primary and the secondary index, with `signing` as its `aws-request-signing` block.
async fn signed_work(proxy: &SigV4Proxy, primary: &str, secondary: &str, signing: &str) -> Work {
    let work = Work::new("").await;
    std::fs::write(
        work.config(),
        format!(
            "persistence:\n  visibilityStore: es-visibility\n  datastores:\n    es-visibility:\n      elasticsearch:\n        version: v7\n        url: {{ scheme: http, host: \"{}\" }}\n        indices: {{ visibility: {primary}, secondary_visibility: {secondary} }}\n        aws-request-signing:\n{signing}\nmigration:\n  checkpoint: {{ type: file, path: \"{}\" }}\n  deadLetter: {{ path: \"{}\" }}\n  metrics: {{ listen: \"\" }}\n  batchSize: 300\n",
            proxy.addr,
            work.checkpoint().display(),
            work.dead_letter().display()
        ),
    )
    .unwrap();
    work
}

fn static_block(access_key: &str, secret: &str) -> String {
    format!(
        "          enabled: true\n          region: {REGION}\n          credentialProvider: static\n          static:\n            accessKeyID: {access_key}\n            secretAccessKey: \"{secret}\"\n"
    )
}

/// `vismig ARGS` with no AWS variable of the test's own environment, and `env` added.
fn run_clean(work: &Work, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = work.vismig(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    // The SDK's default chain must never reach for an instance metadata service: the
    // environment answers first, and this makes sure nothing else is tried.
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

/// The verifier for `access_key`/`secret` (and `token`) and two fresh indices behind it,
/// or None when the test is skipped (no OpenSearch, no tools, off CI).
async fn behind_verifier(
    test: &str,
    access_key: &str,
    secret: &str,
    token: Option<&str>,
) -> Option<(SigV4Proxy, IndexPair)> {
    if !service_up("opensearch") {
        return None;
    }
    let tools = tools_dir()?;
    let proxy = SigV4Proxy::start(&tools, access_key, secret, token);
    Some((proxy, IndexPair::new(test, true).await))
}

async fn doc_count(index: &str) -> u64 {
    let url = search_url("opensearch");
    search_call(Method::POST, &format!("{url}/{index}/_refresh"), None).await;
    search_call(Method::GET, &format!("{url}/{index}/_count"), None).await["count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_backfill_and_deep_verify_pass_a_botocore_verifier_and_a_wrong_secret_is_refused() {
    let pid = std::process::id();
    let access_key = format!("AKIDVISMIG{pid}");
    let secret = format!("vismig/Secret+Key{pid}/wJalrXUtnFEMI");
    let Some((proxy, pair)) = behind_verifier("sigv4", &access_key, &secret, None).await else { return };
    let (primary, secondary) = (pair.primary.clone(), pair.secondary.clone());
    let work = signed_work(&proxy, &primary, &secondary, &static_block(&access_key, &secret)).await;
    let mut outputs = Vec::new();
    for args in
        [&["seed", "--records", "1500", "--seed", "5"][..], &["backfill", "--concurrency", "3"], &["verify", "--deep"]]
    {
        let out = run_clean(&work, args, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "vismig {args:?} through the verifier: {}\nproxy: {:?}",
            text(&out),
            proxy.lines()
        );
        outputs.push(text(&out));
    }
    assert_eq!((doc_count(&primary).await, doc_count(&secondary).await), (1500, 1500));

    // Every request vismig made was verified, and it made every kind of call through it.
    let lines = proxy.lines();
    assert!(lines.iter().all(|l| l.starts_with("verified ")), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "verified GET /"), "{lines:#?}");
    for call in
        ["/_mapping", "_search?scroll=", "POST /_search/scroll", "POST /_bulk?filter_path=", "DELETE /_search/scroll"]
    {
        assert!(
            lines.iter().any(|l| l.contains(call)),
            "no verified {call:?} among {} requests: {lines:#?}",
            lines.len()
        );
    }
    println!("sigv4: {} requests verified by botocore, none refused", lines.len());

    // A wrong secret: AWS's 403 for every request, so preflight fails: exit 1, one line
    // naming the store and the server's reason, the secrets of neither config shown.
    let wrong = format!("wrong/Secret+Key{pid}");
    let bad = signed_work(&proxy, &primary, &secondary, &static_block(&access_key, &wrong)).await;
    let before = proxy.lines().len();
    let out = run_clean(&bad, &["backfill"], &[]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR") || l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(errors[0].contains("(store es-visibility)") && errors[0].contains("HTTP 403"), "{}", errors[0]);
    assert!(errors[0].contains("signature does not match"), "{}", errors[0]);
    assert!(errors[0].contains("(check aws-request-signing: the region, the credentials"), "{}", errors[0]);
    for secret in [&secret, &wrong] {
        assert!(!log.contains(secret.as_str()), "a secret leaked: {log}");
    }
    for text in &outputs {
        assert!(!text.contains(&secret), "the secret leaked: {text}");
    }
    let refused: Vec<String> = proxy.lines()[before..].to_vec();
    assert!(!refused.is_empty() && refused.iter().all(|l| l.starts_with("refused ")), "{refused:#?}");
    println!("sigv4, wrong secret: exit 1: {}", errors[0].trim());
    pair.drop().await;
}

/// `environment` (with aws-sdk-go's fallback names) and `aws-sdk-default` (the AWS SDK's
/// chain, answered by its environment provider), both with a session token, the region
/// from `AWS_REGION`: a deep verify through the verifier passes with each.
#[tokio::test(flavor = "multi_thread")]
async fn environment_and_sdk_default_credentials_with_a_session_token_are_verified() {
    let pid = std::process::id();
    let access_key = format!("ASIAVISMIG{pid}");
    let secret = format!("env/Secret+Key{pid}");
    let token = format!("FwoGZXIvYXdzEXAMPLE{pid}//token+=");
    let Some((proxy, pair)) = behind_verifier("sigv4_env", &access_key, &secret, Some(&token)).await else { return };
    let (primary, secondary) = (pair.primary.clone(), pair.secondary.clone());

    let block = |provider: &str| format!("          enabled: true\n          credentialProvider: {provider}\n");
    let environment = signed_work(&proxy, &primary, &secondary, &block("environment")).await;
    let go_names = [
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY", &access_key),
        ("AWS_SECRET_KEY", &secret),
        ("AWS_SESSION_TOKEN", &token),
    ];
    let out = run_clean(&environment, &["seed", "--records", "400"], &go_names);
    assert_eq!(out.status.code(), Some(0), "{}\nproxy: {:?}", text(&out), proxy.lines());
    let out = run_clean(&environment, &["backfill"], &go_names);
    assert_eq!(out.status.code(), Some(0), "{}\nproxy: {:?}", text(&out), proxy.lines());

    let sdk = signed_work(&proxy, &primary, &secondary, &block("aws-sdk-default")).await;
    let sdk_names = [
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", &access_key),
        ("AWS_SECRET_ACCESS_KEY", &secret),
        ("AWS_SESSION_TOKEN", &token),
    ];
    let out = run_clean(&sdk, &["verify", "--deep"], &sdk_names);
    assert_eq!(out.status.code(), Some(0), "{}\nproxy: {:?}", text(&out), proxy.lines());
    assert!(!text(&out).contains(&secret) && !text(&out).contains(&token), "{}", text(&out));

    // Without the token, the verifier (which expects this session's) refuses.
    let out = run_clean(&sdk, &["verify"], &sdk_names[..3]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("x-amz-security-token is not signed"), "{}", text(&out));

    let lines = proxy.lines();
    let verified = lines.iter().filter(|l| l.starts_with("verified ")).count();
    assert!(verified > 10, "{lines:#?}");
    assert!(
        lines.iter().filter(|l| l.starts_with("refused ")).all(|l| l.contains("x-amz-security-token")),
        "{lines:#?}"
    );
    assert_eq!(doc_count(&secondary).await, 400);
    println!("sigv4: environment and aws-sdk-default with a session token, {verified} requests verified");
    pair.drop().await;
}
