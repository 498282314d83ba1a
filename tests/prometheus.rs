//! The Grafana dashboard against a real Prometheus (Debian's server, installed by
//! tests/tools/install.sh) scraping a real vismig every second: a rate-limited SQLite
//! backfill (config/sqlite-to-sqlite.yaml, as shipped, through its environment
//! variables), then a verify. Every panel's PromQL must parse and return data through
//! Prometheus' HTTP API; every `vismig_` metric the binary exports (read from its own
//! /metrics, not from a list kept here) must appear in a panel; a panel that uses a
//! metric the binary does not export fails with its name; and `promtool check metrics`
//! must pass on the scrape.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::text;
use serde_json::Value;
use vismig::store::sql::sqlite::create_database;

/// Debian's prometheus and promtool, when the tools are installed (VISMIG_TEST_TOOLS,
/// set by tests/run.sh: then a missing binary fails the test).
fn prometheus_binaries() -> Option<(PathBuf, PathBuf)> {
    common::tools_dir()?;
    let find = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([PathBuf::from("/usr/bin")])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!("{name} is not installed: run tests/tools/install.sh (Debian's prometheus package)")
            })
    };
    Some((find("prometheus"), find("promtool")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (by its pid) when the test ends, passing or not.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn base_name(name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(b) = name.strip_suffix(suffix) {
            return b.to_string();
        }
    }
    name.to_string()
}

/// The `vismig_` metric families a /metrics text declares.
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .filter(|n| n.starts_with("vismig_"))
        .collect()
}

/// The `vismig_` names an expression uses, as metric families.
fn used(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("vismig_") {
        let before = &rest[..i];
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if !before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(base_name(&tail[..end]));
        }
        rest = &tail[end..];
    }
    out
}

/// Every panel (rows' panels included) with its PromQL targets.
fn panels(dashboard: &Value) -> Vec<(String, Vec<String>)> {
    fn walk(panels: &Value, out: &mut Vec<(String, Vec<String>)>) {
        for p in panels.as_array().into_iter().flatten() {
            let exprs: Vec<String> = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["hide"] != true)
                .filter_map(|t| t["expr"].as_str().map(str::to_string))
                .collect();
            if !exprs.is_empty() {
                out.push((p["title"].as_str().unwrap_or("?").to_string(), exprs));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's variables as the dashboard would fill them with "All" selected; any other
/// `$` left in an expression fails the test.
fn substitute(expr: &str, variables: &BTreeMap<String, String>) -> String {
    let mut out = expr.to_string();
    for (name, value) in variables {
        out = out.replace(&format!("${{{name}}}"), value).replace(&format!("[[{name}]]"), value);
    }
    // Longest names first, so $job does not eat $job_name.
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out.replace(&format!("${name}"), &variables[name]);
    }
    assert!(!out.contains('$'), "unknown Grafana variable left in {expr:?} -> {out:?}");
    out
}

fn variables(dashboard: &Value) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = [("__rate_interval", "1m"), ("__interval", "15s"), ("__range", "5m")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for v in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap().to_string();
        if v["type"] == "datasource" {
            continue;
        }
        let all = v["allValue"].as_str().map(str::to_string).unwrap_or_else(|| ".*".to_string());
        assert!(v["includeAll"] == true, "variable {name}: the test selects All");
        vars.insert(name, all);
    }
    vars
}

async fn scrape(http: &reqwest::Client, port: u16) -> Option<String> {
    let r = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?;
    r.text().await.ok()
}

/// Runs a vismig command with the shipped SQLite config's variables; while it runs,
/// keeps the last /metrics text it served.
async fn run_scraped(
    http: &reqwest::Client,
    dir: &Path,
    env: &BTreeMap<&str, String>,
    args: &[&str],
    port: u16,
) -> (std::process::Output, String) {
    let child = Command::new(common::bin())
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("VISMIG_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let mut last = String::new();
    while !waiter.is_finished() {
        if let Some(text) = scrape(http, port).await {
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = waiter.await.unwrap();
    assert!(!last.is_empty(), "never scraped vismig {args:?} (pid {pid}) on port {port}: {}", text(&out));
    (out, last)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_panel_returns_data_from_prometheus_scraping_a_real_backfill() {
    let Some((prometheus, promtool)) = prometheus_binaries() else { return };
    let started = Instant::now();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let (backfill_port, verify_port, prom_port) = (free_port(), free_port(), free_port());

    // The stores, and the shipped config as is, with a dynamic-config file added so
    // that the flip state has something to report.
    let primary = dir.path().join("visibility.db");
    let secondary = dir.path().join("visibility-secondary.db");
    create_database(&primary).await.unwrap();
    create_database(&secondary).await.unwrap();
    let shipped = std::fs::read_to_string(repo.join("config/sqlite-to-sqlite.yaml")).unwrap();
    assert!(
        shipped.contains("${VISMIG_METRICS_LISTEN:-") && shipped.contains("${VISMIG_METRICS_LINGER:-"),
        "{shipped}"
    );
    assert!(!shipped.contains("\n  flip:"), "the test adds the flip block itself");
    let dynamic_config = dir.path().join("dynamicconfig.yaml");
    std::fs::write(&dynamic_config, "system.secondaryVisibilityWritingMode:\n  - value: \"dual\"\n").unwrap();
    let config = dir.path().join("vismig.yaml");
    std::fs::write(&config, format!("{shipped}  flip: {{ dynamicConfigFile: \"{}\" }}\n", dynamic_config.display()))
        .unwrap();
    let config = config.to_str().unwrap().to_string();
    let env: BTreeMap<&str, String> = [
        ("VISMIG_PRIMARY_DB", primary.display().to_string()),
        ("VISMIG_SECONDARY_DB", secondary.display().to_string()),
        // Long enough after the end for Prometheus (1 s scrapes) to see the final values.
        ("VISMIG_METRICS_LINGER", "3s".to_string()),
    ]
    .into_iter()
    .collect();
    let out = Command::new(common::bin())
        .args(["seed", "--config", &config, "--records", "6000"])
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("VISMIG_METRICS_LISTEN", format!("127.0.0.1:{backfill_port}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "seed: {}", text(&out));

    // Prometheus on a free port, scraping both processes every second.
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vismig\n    static_configs:\n      - targets: [\"127.0.0.1:{backfill_port}\", \"127.0.0.1:{verify_port}\"]\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Running(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(prom_log.try_clone().unwrap())
            .stderr(prom_log)
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{prom_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{api}/-/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "Prometheus did not become ready:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t0 = chrono::Utc::now();

    // The backfill, slowed down to last about 15 s (the rate limit and its waits show).
    let (out, backfill_scrape) =
        run_scraped(&http, dir.path(), &env, &["backfill", "--config", &config, "--rate", "400"], backfill_port).await;
    assert_eq!(out.status.code(), Some(0), "backfill: {}", text(&out));
    let (out, verify_scrape) =
        run_scraped(&http, dir.path(), &env, &["verify", "--config", &config], verify_port).await;
    assert_eq!(out.status.code(), Some(0), "verify: {}", text(&out));
    let t1 = chrono::Utc::now();

    // promtool lints the scrape as Prometheus' own tooling sees it.
    for (what, scrape) in [("backfill", &backfill_scrape), ("verify", &verify_scrape)] {
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool check metrics on the {what} scrape: {}\n{scrape}", text(&out));
    }

    // What the binary exports, from its own /metrics.
    let exported: BTreeSet<String> = exported(&backfill_scrape).union(&exported(&verify_scrape)).cloned().collect();
    assert!(exported.len() >= 16, "{exported:?}");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("dashboards/vismig.json")).unwrap()).unwrap();
    let vars = variables(&dashboard);
    let panels = panels(&dashboard);
    let on_panels: BTreeSet<String> = panels.iter().flat_map(|(_, exprs)| exprs.iter().flat_map(|e| used(e))).collect();
    let unshown: Vec<&String> = exported.difference(&on_panels).collect();
    assert!(unshown.is_empty(), "vismig exports these metrics, but no dashboard panel shows them: {unshown:?}");

    // Every panel's every query, through Prometheus' HTTP API, over the run.
    let mut problems = Vec::new();
    for (title, exprs) in &panels {
        for expr in exprs {
            let missing: Vec<String> = used(expr).difference(&exported).cloned().collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "panel {title:?}: uses {missing:?}, which the vismig binary does not export (not in the /metrics of its backfill or verify)"
                ));
                continue;
            }
            let query = substitute(expr, &vars);
            let mut url = reqwest::Url::parse(&format!("{api}/api/v1/query_range")).unwrap();
            url.query_pairs_mut()
                .append_pair("query", &query)
                .append_pair("start", &t0.timestamp().to_string())
                .append_pair("end", &(t1.timestamp() + 1).to_string())
                .append_pair("step", "1");
            let r: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            if r["status"] != "success" {
                problems.push(format!("panel {title:?}: {query}: {} {}", r["errorType"], r["error"]));
            } else if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
                problems.push(format!("panel {title:?}: {query}: no data"));
            }
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
    eprintln!(
        "{} panels, {} queries, {} exported vismig_ metrics: all returned data; {:.0}s",
        panels.len(),
        panels.iter().map(|(_, e)| e.len()).sum::<usize>(),
        exported.len(),
        started.elapsed().as_secs_f64()
    );
}
