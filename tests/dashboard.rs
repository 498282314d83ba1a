//! The Grafana dashboard uses only metric names vismig exports, and shows every one.
//! tests/prometheus.rs evaluates its PromQL against a real Prometheus scraping a backfill.

use std::collections::BTreeSet;

fn base(name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(b) = name.strip_suffix(suffix) {
            return b.to_string();
        }
    }
    name.to_string()
}

fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        if rest == "vismig_" && (i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_')) {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == '_') {
                j += 1;
            }
            out.insert(base(&bytes[i..j].iter().collect::<String>()));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_dashboard_and_the_exported_metrics_match() {
    let metrics = vismig::metrics::Metrics::new();
    // Label sets appear on /metrics once used: use each once.
    metrics.set_phase("backfill");
    metrics.verify_records.with_label_values(&["ns", "primary", "Completed"]).set(1);
    metrics.verify_differences.with_label_values(&["ns", "missing"]).set(0);
    metrics.errors_total.with_label_values(&["write", "transient"]).inc();
    metrics.read_flipped.with_label_values(&["*"]).set(0);
    let exported: BTreeSet<String> = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("vismig_"))
        .map(|l| base(l.split(['{', ' ']).next().unwrap()))
        .collect();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/vismig.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: String = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    let used = names_in(&exprs);
    let unknown: Vec<&String> = used.difference(&exported).collect();
    let unshown: Vec<&String> = exported.difference(&used).collect();
    assert!(unknown.is_empty(), "the dashboard uses names vismig does not export: {unknown:?}");
    assert!(unshown.is_empty(), "exported but on no panel: {unshown:?}");
    assert!(exported.len() >= 16, "{exported:?}");
    let rendered = metrics.render();
    assert!(rendered.contains("\nprocess_resident_memory_bytes "), "process metrics keep their standard names");
    assert!(!rendered.contains("vismig_process_"));
}
