//! The Prometheus registry (every metric named in DESIGN.md, prefixed `vismig_`) and
//! the HTTP listener: `/metrics`, `/healthz`, `/readyz`, and live control
//! (`POST /pause`, `POST /resume`, `PUT /rate`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::sync::watch;

use crate::flip::dynamic_config::ReadState;

/// Every metric vismig exports. One registry per process, no globals.
pub struct Metrics {
    /// vismig's own metrics, named `vismig_…`.
    pub registry: Registry,
    /// The standard `process_…` metrics, unprefixed, as every Prometheus client names them.
    process: Registry,
    pub records_scanned_total: IntCounter,
    pub records_written_total: IntCounterVec,
    pub batch_write_seconds: Histogram,
    pub batch_scan_seconds: Histogram,
    pub rate_limit_records_per_second: IntGauge,
    pub throttle_wait_seconds_total: prometheus::Counter,
    pub checkpoint_writes_total: IntCounter,
    pub checkpoint_age_seconds: Gauge,
    /// A counter, as its `_total` name says (Prometheus' conventions, `promtool check
    /// metrics`): it rises once, from 0 to the estimate, when the backfill has one.
    pub records_estimated_total: IntCounter,
    pub progress_ratio: Gauge,
    pub eta_seconds: Gauge,
    pub phase: IntGaugeVec,
    pub verify_records: IntGaugeVec,
    pub verify_differences: IntGaugeVec,
    pub errors_total: IntCounterVec,
    pub dead_letter_total: IntCounter,
    /// 1 when the namespace (NAME; `*` for every namespace without its own entry)
    /// reads from the secondary store, 0 when from the primary.
    pub read_flipped: IntGaugeVec,
}

pub const PHASES: [&str; 6] = ["preflight", "backfill", "indexes", "verify", "done", "failed"];
pub const OUTCOMES: [&str; 5] = ["inserted", "updated", "skipped_newer", "skipped_present", "failed"];
/// Every `errors_total{stage,kind}` pair vismig counts, exported at 0 from the start so
/// that rate() and increase() on the dashboard show 0, not "no data", for a clean run.
pub const ERROR_LABELS: [(&str, &str); 8] = [
    ("scan", "transient"),
    ("scan", "gave_up"),
    ("scan", "permanent"),
    ("scan", "bad_row"),
    ("write", "transient"),
    ("write", "gave_up"),
    ("write", "permanent"),
    ("write", "refused"),
];

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("vismig".to_string()), None).expect("registry");
        let latency_buckets = prometheus::exponential_buckets(0.001, 2.0, 16).expect("buckets");
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry.register(Box::new(m.clone())).expect("metric registers once");
                m
            }};
        }
        let m = Metrics {
            records_scanned_total: reg!(
                IntCounter::new("records_scanned_total", "Records read from the primary store").unwrap()
            ),
            records_written_total: reg!(
                IntCounterVec::new(
                    Opts::new("records_written_total", "Records handed to the secondary store, by outcome"),
                    &["outcome"]
                )
                .unwrap()
            ),
            batch_write_seconds: reg!(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "batch_write_seconds",
                        "Time to write one batch to the secondary, retries included"
                    )
                    .buckets(latency_buckets.clone())
                )
                .unwrap()
            ),
            batch_scan_seconds: reg!(
                Histogram::with_opts(
                    HistogramOpts::new("batch_scan_seconds", "Time to read one page from the primary")
                        .buckets(latency_buckets)
                )
                .unwrap()
            ),
            rate_limit_records_per_second: reg!(
                IntGauge::new(
                    "rate_limit_records_per_second",
                    "Current rate limit in records per second (0 = unlimited)"
                )
                .unwrap()
            ),
            throttle_wait_seconds_total: reg!(
                prometheus::Counter::new(
                    "throttle_wait_seconds_total",
                    "Seconds spent waiting for the rate limiter or a pause"
                )
                .unwrap()
            ),
            checkpoint_writes_total: reg!(IntCounter::new("checkpoint_writes_total", "Checkpoints saved").unwrap()),
            checkpoint_age_seconds: reg!(
                Gauge::new("checkpoint_age_seconds", "Seconds since the last checkpoint save").unwrap()
            ),
            records_estimated_total: reg!(
                IntCounter::new("records_estimated_total", "Estimated records to copy (this process's shards)")
                    .unwrap()
            ),
            progress_ratio: reg!(Gauge::new("progress_ratio", "Scanned records over the estimate, 0 to 1").unwrap()),
            eta_seconds: reg!(Gauge::new("eta_seconds", "Estimated seconds until the backfill is done").unwrap()),
            phase: reg!(IntGaugeVec::new(Opts::new("phase", "1 for the phase the process is in"), &["phase"]).unwrap()),
            verify_records: reg!(
                IntGaugeVec::new(
                    Opts::new("verify_records", "Records counted by the last verify"),
                    &["namespace", "store", "status"]
                )
                .unwrap()
            ),
            verify_differences: reg!(
                IntGaugeVec::new(
                    Opts::new("verify_differences", "Differences found by the last verify"),
                    &["namespace", "kind"]
                )
                .unwrap()
            ),
            errors_total: reg!(
                IntCounterVec::new(Opts::new("errors_total", "Errors by stage and kind"), &["stage", "kind"]).unwrap()
            ),
            dead_letter_total: reg!(
                IntCounter::new("dead_letter_total", "Records written to the dead-letter file").unwrap()
            ),
            read_flipped: reg!(
                IntGaugeVec::new(
                    Opts::new(
                        "read_flipped",
                        "1 when the namespace reads from the secondary store, 0 when from the primary (namespace=\"*\": every namespace without its own entry)"
                    ),
                    &["namespace"]
                )
                .unwrap()
            ),
            registry,
            process: Registry::new(),
        };
        #[cfg(target_os = "linux")]
        m.process
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector");
        for outcome in OUTCOMES {
            m.records_written_total.with_label_values(&[outcome]);
        }
        for (stage, kind) in ERROR_LABELS {
            m.errors_total.with_label_values(&[stage, kind]);
        }
        Arc::new(m)
    }

    pub fn set_phase(&self, phase: &str) {
        for p in PHASES {
            self.phase.with_label_values(&[p]).set(i64::from(p == phase));
        }
    }

    /// Sets `read_flipped` from the dynamic config, one series per row of
    /// [`ReadState::rows`]; series of namespaces no longer listed disappear.
    pub fn set_read_state<'a>(&self, state: &ReadState, also: impl IntoIterator<Item = &'a String>) {
        self.read_flipped.reset();
        for (namespace, secondary, _) in state.rows(also) {
            self.read_flipped.with_label_values(&[namespace.as_str()]).set(i64::from(secondary));
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        TextEncoder::new().encode(&families, &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8 metrics")
    }
}

/// Live control shared by the HTTP listener and the pipeline.
pub struct Control {
    pub paused: watch::Sender<bool>,
    pub rate: watch::Sender<u32>,
    ready: AtomicBool,
    /// Why the process is not ready (backing off from a store), if it is not.
    not_ready_reason: Mutex<Option<String>>,
}

impl Control {
    pub fn new(rate: u32) -> Arc<Self> {
        Arc::new(Self {
            paused: watch::channel(false).0,
            rate: watch::channel(rate).0,
            ready: AtomicBool::new(false),
            not_ready_reason: Mutex::new(Some("starting".to_string())),
        })
    }

    pub fn set_ready(&self) {
        *self.not_ready_reason.lock().unwrap() = None;
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready_reason.lock().unwrap() = Some(reason.into());
        self.ready.store(false, Ordering::SeqCst);
    }

    pub fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(self.not_ready_reason.lock().unwrap().clone().unwrap_or_else(|| "not ready".into()))
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    control: Arc<Control>,
}

/// Binds the listener (failing fast with a clear error) and serves it in the background.
pub async fn serve(listen: &str, metrics: Arc<Metrics>, control: Arc<Control>) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr =
        listen.parse().map_err(|_| anyhow::anyhow!("migration.metrics.listen: {listen:?} is not host:port"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (migration.metrics.listen): {e}"))?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .route("/pause", post(pause_handler))
        .route("/resume", post(resume_handler))
        .route("/rate", put(rate_handler))
        .with_state(AppState { metrics, control });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    Ok(local)
}

async fn metrics_handler(State(s): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn ready_handler(State(s): State<AppState>) -> (StatusCode, String) {
    match s.control.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

async fn pause_handler(State(s): State<AppState>) -> &'static str {
    s.control.paused.send_replace(true);
    tracing::info!("paused through POST /pause");
    "paused\n"
}

async fn resume_handler(State(s): State<AppState>) -> &'static str {
    s.control.paused.send_replace(false);
    tracing::info!("resumed through POST /resume");
    "resumed\n"
}

async fn rate_handler(State(s): State<AppState>, body: String) -> (StatusCode, String) {
    match body.trim().parse::<u32>() {
        Ok(rate) if rate <= 10_000_000 => {
            s.control.rate.send_replace(rate);
            tracing::info!(records_per_second = rate, "rate changed through PUT /rate");
            (StatusCode::OK, format!("rate {rate} records/s\n"))
        }
        _ => (
            StatusCode::BAD_REQUEST,
            format!("PUT /rate takes a whole number of records per second (0 = unlimited), not {:?}\n", body.trim()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_flipped_follows_the_dynamic_config() {
        let m = Metrics::new();
        let text = "system.enableReadFromSecondaryVisibility:\n  - value: true\n    constraints: { namespace: orders }\n  - value: false\n";
        let known = ["payments".to_string()];
        m.set_read_state(&ReadState::parse(text).unwrap(), &known);
        let out = m.render();
        for line in [
            "vismig_read_flipped{namespace=\"*\"} 0",
            "vismig_read_flipped{namespace=\"orders\"} 1",
            "vismig_read_flipped{namespace=\"payments\"} 0",
        ] {
            assert!(out.contains(line), "{line} missing:\n{out}");
        }
        m.set_read_state(
            &ReadState::parse("system.enableReadFromSecondaryVisibility:\n  - value: true\n").unwrap(),
            &[],
        );
        let out = m.render();
        assert!(out.contains("vismig_read_flipped{namespace=\"*\"} 1"), "{out}");
        assert!(!out.contains("namespace=\"orders\""), "a namespace no longer listed disappears: {out}");
    }
}
