//! The Prometheus registry (every metric named in DESIGN.md, prefixed `vismig_`) and
//! the HTTP listener: `/metrics`, `/healthz`, `/readyz`, and live control
//! (`POST /pause`, `POST /resume`, `PUT /rate`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::config::Secret;
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
    /// The limit the throttle applies now: the rate limit, or lower where the health
    /// throttle lowered it (0 = unlimited, as for the rate limit).
    pub rate_effective_records_per_second: IntGauge,
    /// 1 for why the copy is slowed or paused right now (`none` when it is not).
    pub throttle_reason: IntGaugeVec,
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
/// Every `throttle_reason{reason}`, exported from the start; one of them is 1.
pub const THROTTLE_REASONS: [&str; 9] = [
    "none",
    "paused",
    "secondary_write_latency",
    "primary_read_latency",
    "write_queue",
    "write_rejections",
    "index_health",
    "replica_lag",
    "unreachable",
];
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
            rate_effective_records_per_second: reg!(
                IntGauge::new(
                    "rate_effective_records_per_second",
                    "The rate limit in force now, after the health throttle (0 = unlimited)"
                )
                .unwrap()
            ),
            throttle_reason: reg!(
                IntGaugeVec::new(
                    Opts::new("throttle_reason", "1 for why the copy is slowed or paused now (none: it is not)"),
                    &["reason"]
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
        m.set_throttle_reason("none");
        Arc::new(m)
    }

    pub fn set_phase(&self, phase: &str) {
        for p in PHASES {
            self.phase.with_label_values(&[p]).set(i64::from(p == phase));
        }
    }

    pub fn set_throttle_reason(&self, reason: &str) {
        for r in THROTTLE_REASONS {
            self.throttle_reason.with_label_values(&[r]).set(i64::from(r == reason));
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
    /// `migration.health`, replaced by `PUT /health`.
    pub health: watch::Sender<crate::config::health::Health>,
    /// The health throttle's limit in records per second, below `rate` (0 = none).
    pub health_limit: watch::Sender<u32>,
    /// The health throttle's pause (a red index, a pausing signal), apart from the
    /// operator's so that `POST /resume` does not lift it.
    pub health_pause: watch::Sender<bool>,
    /// Why the copy is slowed or paused now, in plain words; None when it is not.
    throttle_reason: Mutex<Option<String>>,
    ready: AtomicBool,
    /// Why the process is not ready (backing off from a store), if it is not.
    not_ready_reason: Mutex<Option<String>>,
}

impl Control {
    pub fn new(rate: u32) -> Arc<Self> {
        Arc::new(Self {
            paused: watch::channel(false).0,
            rate: watch::channel(rate).0,
            health: watch::channel(Default::default()).0,
            health_limit: watch::channel(0).0,
            health_pause: watch::channel(false).0,
            throttle_reason: Mutex::new(None),
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

    pub fn throttle_reason(&self) -> Option<String> {
        self.throttle_reason.lock().unwrap().clone()
    }

    pub fn set_throttle_reason(&self, reason: Option<String>) {
        *self.throttle_reason.lock().unwrap() = reason;
    }

    /// The limit the throttle applies: the rate, or the health limit where it is lower
    /// (0 = unlimited).
    pub fn effective_rate(&self) -> u32 {
        let (rate, health) = (*self.rate.borrow(), *self.health_limit.borrow());
        match (rate, health) {
            (0, h) => h,
            (r, 0) => r,
            (r, h) => r.min(h),
        }
    }

    pub fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(self.not_ready_reason.lock().unwrap().clone().unwrap_or_else(|| "not ready".into()))
        }
    }
}

/// Who may use the mutating endpoints (`POST /pause`, `POST /resume`, `PUT /rate`).
/// Anyone who reaches a listener in the pod network could otherwise pause the migration
/// or lift the throttle on the production primary.
#[derive(Clone)]
enum ControlAccess {
    /// A loopback listener without a token: only this machine reaches it.
    Local,
    /// Requests must carry `Authorization: Bearer <token>`.
    Token(Arc<Secret>),
    /// A listener beyond loopback without a token: control is off.
    Off,
}

/// Tokens shorter than this are refused: the token is all that stands between the pod
/// network and the production primary's throttle.
const MIN_TOKEN_LEN: usize = 16;

impl ControlAccess {
    /// Reads the token from where `migration.metrics.controlToken` says, or decides by
    /// the listener's address when there is none.
    fn resolve(config: &crate::config::migration::Metrics, addr: &SocketAddr) -> anyhow::Result<Self> {
        let Some(source) = &config.control_token else {
            return Ok(if addr.ip().is_loopback() { Self::Local } else { Self::Off });
        };
        let at = "migration.metrics.controlToken";
        let (token, from) = match (&source.file, &source.env) {
            (Some(file), None) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("{at}.file: cannot read {}: {e}", file.display()))?;
                (text.trim().to_string(), format!("{at}.file: {}", file.display()))
            }
            (None, Some(name)) => {
                let value = std::env::var(name)
                    .map_err(|_| anyhow::anyhow!("{at}.env: environment variable {name} is not set (or not UTF-8)"))?;
                (value.trim().to_string(), format!("{at}.env: {name}"))
            }
            _ => anyhow::bail!("{at}: needs exactly one of file or env"),
        };
        if token.chars().count() < MIN_TOKEN_LEN {
            anyhow::bail!(
                "{from} holds a token of {} characters; use at least {MIN_TOKEN_LEN} random ones (e.g. openssl rand -hex 32)",
                token.chars().count()
            );
        }
        Ok(Self::Token(Arc::new(Secret::new(token))))
    }

    /// None when the request may change the run; else the answer that refuses it.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        match self {
            Self::Local => None,
            Self::Off => Some(
                (
                    StatusCode::FORBIDDEN,
                    "control is off: this listener is not on loopback and migration.metrics.controlToken is not set\n",
                )
                    .into_response(),
            ),
            Self::Token(token) => {
                let offered = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                // Constant time: how long the comparison takes says nothing about how
                // much of a guess was right (only whether its length was).
                let valid = offered.is_some_and(|o| bool::from(o.as_bytes().ct_eq(token.expose().as_bytes())));
                if valid {
                    return None;
                }
                tracing::warn!(
                    header = if offered.is_some() { "wrong token" } else { "no bearer token" },
                    "refused a control request"
                );
                Some((
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "control needs the header Authorization: Bearer <the token of migration.metrics.controlToken>\n",
                )
                    .into_response())
            }
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::Local => "open on loopback (no controlToken)",
            Self::Token(_) => "bearer token required",
            Self::Off => "off (listener beyond loopback and no controlToken)",
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    control: Arc<Control>,
    access: ControlAccess,
}

/// Binds the listener (failing fast with a clear error) and serves it in the background.
pub async fn serve(
    config: &crate::config::migration::Metrics,
    metrics: Arc<Metrics>,
    control: Arc<Control>,
) -> anyhow::Result<SocketAddr> {
    let listen = &config.listen;
    let addr: SocketAddr =
        listen.parse().map_err(|_| anyhow::anyhow!("migration.metrics.listen: {listen:?} is not host:port"))?;
    let access = ControlAccess::resolve(config, &addr)?;
    if matches!(access, ControlAccess::Off) {
        tracing::warn!(
            address = %addr,
            "control endpoints (POST /pause, POST /resume, PUT /rate) are off: the listener is not on loopback and migration.metrics.controlToken is not set"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (migration.metrics.listen): {e}"))?;
    let local = listener.local_addr()?;
    tracing::debug!(control = access.describe(), "control access");
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .route("/pause", post(pause_handler))
        .route("/resume", post(resume_handler))
        .route("/rate", put(rate_handler))
        .route("/health", put(health_handler))
        .with_state(AppState { metrics, control, access });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    Ok(local)
}

async fn metrics_handler(State(s): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn ready_handler(State(s): State<AppState>) -> (StatusCode, String) {
    match s.control.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

async fn pause_handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = s.access.refusal(&headers) {
        return refused;
    }
    s.control.paused.send_replace(true);
    tracing::info!("paused through POST /pause");
    "paused\n".into_response()
}

async fn resume_handler(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = s.access.refusal(&headers) {
        return refused;
    }
    s.control.paused.send_replace(false);
    tracing::info!("resumed through POST /resume");
    "resumed\n".into_response()
}

async fn rate_handler(State(s): State<AppState>, headers: HeaderMap, body: String) -> Response {
    if let Some(refused) = s.access.refusal(&headers) {
        return refused;
    }
    match body.trim().parse::<u32>() {
        Ok(rate) if rate <= 10_000_000 => {
            s.control.rate.send_replace(rate);
            tracing::info!(records_per_second = rate, "rate changed through PUT /rate");
            (StatusCode::OK, format!("rate {rate} records/s\n")).into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            format!("PUT /rate takes a whole number of records per second (0 = unlimited), not {:?}\n", body.trim()),
        )
            .into_response(),
    }
}

/// `PUT /health` with a `migration.health` block (YAML or JSON): replaces the bounds
/// while the run goes on, validated as the config file is.
async fn health_handler(State(s): State<AppState>, headers: HeaderMap, body: String) -> Response {
    if let Some(refused) = s.access.refusal(&headers) {
        return refused;
    }
    let parsed: Result<crate::config::health::Health, String> = yaml_serde::from_str(&body).map_err(|e| e.to_string());
    let problems = match parsed {
        Ok(health) => {
            let mut problems = Vec::new();
            health.validate("health", &mut problems);
            if problems.is_empty() {
                tracing::info!(health = ?health, "health bounds changed through PUT /health");
                s.control.health.send_replace(health);
                return (StatusCode::OK, "health bounds changed\n").into_response();
            }
            problems
        }
        Err(e) => vec![format!("health: {}", e.lines().next().unwrap_or_default())],
    };
    (StatusCode::BAD_REQUEST, format!("PUT /health takes a migration.health block: {}\n", problems.join("; ")))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::migration::{ControlToken, Metrics as MetricsConfig};

    /// Serves on `listen` (port 0) and returns the URL to reach it through loopback.
    async fn start(listen: &str, control_token: Option<ControlToken>) -> (String, Arc<Control>) {
        let config = MetricsConfig { listen: listen.to_string(), control_token, ..Default::default() };
        let control = Control::new(100);
        let addr = serve(&config, Metrics::new(), control.clone()).await.unwrap();
        (format!("http://127.0.0.1:{}", addr.port()), control)
    }

    async fn call(req: reqwest::RequestBuilder) -> (u16, String) {
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Every endpoint anyone may call stays open: Prometheus and the kubelet have no token.
    async fn open_endpoints_answer(base: &str) {
        let http = reqwest::Client::new();
        for path in ["/metrics", "/healthz"] {
            assert_eq!(call(http.get(format!("{base}{path}"))).await.0, 200, "{path}");
        }
        assert_eq!(call(http.get(format!("{base}/readyz"))).await.0, 503, "/readyz answers (not ready yet)");
    }

    #[tokio::test]
    async fn control_beyond_loopback_needs_the_bearer_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        let (base, control) = start("0.0.0.0:0", Some(ControlToken { file: Some(file), env: None })).await;
        open_endpoints_answer(&base).await;
        let http = reqwest::Client::new();

        for (what, req) in [
            ("no header", http.post(format!("{base}/pause"))),
            ("wrong token", http.post(format!("{base}/pause")).bearer_auth("0123456789abcdef0124")),
            ("a prefix of the token", http.post(format!("{base}/pause")).bearer_auth("0123456789abcdef")),
            ("basic auth", http.post(format!("{base}/pause")).basic_auth("x", Some("0123456789abcdef0123"))),
            ("rate, no header", http.put(format!("{base}/rate")).body("0")),
        ] {
            let (status, body) = call(req).await;
            assert_eq!(status, 401, "{what}: {body}");
            assert!(body.contains("Authorization: Bearer"), "{what}: {body}");
        }
        assert!(!*control.paused.borrow(), "a refused request changes nothing");
        assert_eq!(*control.rate.borrow(), 100, "a refused request changes nothing");

        let with_token = |req: reqwest::RequestBuilder| req.bearer_auth("0123456789abcdef0123");
        assert_eq!(call(with_token(http.post(format!("{base}/pause")))).await, (200, "paused\n".into()));
        assert!(*control.paused.borrow());
        assert_eq!(call(with_token(http.put(format!("{base}/rate")).body("250"))).await.0, 200);
        assert_eq!(*control.rate.borrow(), 250);
        assert_eq!(call(with_token(http.post(format!("{base}/resume")))).await.0, 200);
        assert!(!*control.paused.borrow());
    }

    #[tokio::test]
    async fn without_a_token_control_is_off_beyond_loopback_and_open_on_it() {
        let (base, control) = start("0.0.0.0:0", None).await;
        open_endpoints_answer(&base).await;
        let http = reqwest::Client::new();
        for req in [
            http.post(format!("{base}/pause")),
            http.post(format!("{base}/resume")),
            http.put(format!("{base}/rate")).body("0"),
        ] {
            let (status, body) = call(req).await;
            assert_eq!(status, 403, "{body}");
            assert!(body.contains("migration.metrics.controlToken is not set"), "{body}");
        }
        assert!(!*control.paused.borrow());
        assert_eq!(*control.rate.borrow(), 100);

        let (base, control) = start("127.0.0.1:0", None).await;
        assert_eq!(call(http.post(format!("{base}/pause"))).await.0, 200, "loopback: this machine only");
        assert!(*control.paused.borrow());
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_read_or_is_short_stops_the_start_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "hunter2\n").unwrap();
        let cases = [
            (
                ControlToken { file: Some(dir.path().join("absent")), env: None },
                "migration.metrics.controlToken.file: cannot read",
            ),
            (ControlToken { file: Some(short), env: None }, "holds a token of 7 characters; use at least 16"),
            (
                ControlToken { file: None, env: Some("VISMIG_TEST_TOKEN_NEVER_SET".into()) },
                "migration.metrics.controlToken.env: environment variable VISMIG_TEST_TOKEN_NEVER_SET is not set",
            ),
        ];
        for (token, want) in cases {
            let config =
                MetricsConfig { listen: "127.0.0.1:0".into(), control_token: Some(token), ..Default::default() };
            let e = serve(&config, Metrics::new(), Control::new(1)).await.unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("hunter2"), "the token is never shown: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

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
