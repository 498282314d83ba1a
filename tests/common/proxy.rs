//! Proxies that tests put between vismig and a real server, inside the test process, so
//! that a fault hits only that test's traffic and never the shared servers:
//!
//! - [`FaultProxy`]: TCP. `cut` drops every open connection and closes the listening
//!   port (new connections are refused, as by a stopped server) until `restore`; an
//!   optional latency delays each chunk sent to the server.
//! - [`pushback_proxy`]: HTTP, in front of OpenSearch/Elasticsearch. Pushes `_bulk`
//!   requests back with 429s, per item or for the whole cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// A TCP proxy on 127.0.0.1 in front of `upstream` that can be cut and restored.
pub struct FaultProxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    /// Bound again after a restore: (listening, accepted connections so far).
    bound: watch::Receiver<u64>,
    latency_ms: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = tokio::net::lookup_host(upstream).await.unwrap().next().unwrap();
        let first = listen("127.0.0.1:0".parse().unwrap());
        let addr = first.local_addr().unwrap();
        let (up, mut up_rx) = watch::channel(true);
        let (bound_tx, bound) = watch::channel(1u64);
        let latency_ms = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (lat, acc) = (latency_ms.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                let l = match listener.take() {
                    Some(l) => l,
                    None => {
                        while !*up_rx.borrow_and_update() {
                            if up_rx.changed().await.is_err() {
                                return;
                            }
                        }
                        let l = listen(addr);
                        bound_tx.send_modify(|n| *n += 1);
                        l
                    }
                };
                loop {
                    tokio::select! {
                        r = l.accept() => {
                            let Ok((client, _)) = r else { continue };
                            acc.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(pipe(client, upstream, up_rx.clone(), lat.clone()));
                        }
                        r = up_rx.changed() => {
                            if r.is_err() {
                                return;
                            }
                            if !*up_rx.borrow_and_update() {
                                break; // drops the listener: connections are refused
                            }
                        }
                    }
                }
            }
        });
        FaultProxy { addr, up, bound, latency_ms, accepted, task }
    }

    /// `127.0.0.1:port`, for a config's `connectAddr` or URL.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Drops every connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Accepts connections again; returns once the port listens.
    pub async fn restore(&self) {
        let mut bound = self.bound.clone();
        let before = *bound.borrow_and_update();
        self.up.send_replace(true);
        while *bound.borrow_and_update() == before {
            bound.changed().await.unwrap();
        }
    }

    /// Delays each chunk the client sends by this much (0: none).
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.up.send_replace(false);
        self.task.abort();
    }
}

fn listen(addr: SocketAddr) -> tokio::net::TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap_or_else(|e| panic!("proxy cannot bind {addr}: {e}"));
    socket.listen(1024).unwrap()
}

/// Copies both ways until either side closes or the proxy is cut.
async fn pipe(client: TcpStream, upstream: SocketAddr, mut up: watch::Receiver<bool>, latency_ms: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let to_server = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = cr.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            let ms = latency_ms.load(Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let to_client = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await.unwrap_or(0);
            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let cut = async move {
        while *up.borrow_and_update() {
            if up.changed().await.is_err() {
                return;
            }
        }
    };
    // Whichever ends first drops both sockets: a cut closes the connection at once.
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
        _ = cut => {}
    }
}

/// An HTTP proxy in front of OpenSearch that pushes `_bulk` requests back.
pub struct Pushback {
    pub url: String,
    /// Items and whole requests answered 429.
    pub rejected: Arc<AtomicU64>,
    /// While true, every `_bulk` request is refused whole with HTTP 429, as by a cluster
    /// whose write queues are all full.
    pub refuse_all: Arc<AtomicBool>,
    /// `_bulk` requests received.
    pub bulks: Arc<AtomicU64>,
}

/// With `per_item`, the proxy pushes back like a node with a tiny write queue: every
/// third item of a bulk is not forwarded and answered 429 (each document at most
/// twice), and every fourth bulk request is refused whole with HTTP 429. Other
/// requests are forwarded as they are.
pub async fn pushback_proxy(upstream: String, per_item: bool) -> Pushback {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method as M, StatusCode, Uri};
    let rejected = Arc::new(AtomicU64::new(0));
    let refuse_all = Arc::new(AtomicBool::new(false));
    let bulks = Arc::new(AtomicU64::new(0));
    let state = Arc::new((
        upstream,
        rejected.clone(),
        bulks.clone(),
        std::sync::Mutex::new(BTreeMap::new()),
        refuse_all.clone(),
        per_item,
    ));
    let handler = move |method: M, uri: Uri, headers: HeaderMap, body: Bytes| {
        let state = state.clone();
        async move {
            let (upstream, rejected, requests, seen, refuse_all, per_item) =
                (&state.0, &state.1, &state.2, &state.3, &state.4, state.5);
            let http = reqwest::Client::new();
            let target = format!("{upstream}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/json");
            if uri.path() != "/_bulk" {
                let m = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
                let resp =
                    http.request(m, &target).header("content-type", ctype).body(body.to_vec()).send().await.unwrap();
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                return (status, resp.bytes().await.unwrap().to_vec());
            }
            let n = requests.fetch_add(1, Ordering::SeqCst);
            let refusal = json!({"error": {"type": "es_rejected_execution_exception", "reason": "rejected execution (queue capacity 1)"}, "status": 429});
            if refuse_all.load(Ordering::SeqCst) || (per_item && n % 4 == 3) {
                rejected.fetch_add(1, Ordering::SeqCst);
                return (StatusCode::TOO_MANY_REQUESTS, refusal.to_string().into_bytes());
            }
            let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
            let mut forward = Vec::new();
            let mut plan = Vec::new(); // None: forwarded; Some(item): answered here
            for (i, pair) in lines.chunks(2).enumerate() {
                let action: Value = serde_json::from_slice(pair[0]).unwrap();
                let op = action.as_object().unwrap().keys().next().unwrap().clone();
                let id = action[&op]["_id"].as_str().unwrap().to_string();
                let times = {
                    let mut seen = seen.lock().unwrap();
                    let n = seen.entry(id.clone()).or_insert(0u32);
                    *n += 1;
                    *n
                };
                if per_item && i % 3 == 0 && times <= 2 {
                    rejected.fetch_add(1, Ordering::SeqCst);
                    plan.push(Some(json!({op: {"_id": id, "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}})));
                } else {
                    for l in pair {
                        forward.extend_from_slice(l);
                        forward.push(b'\n');
                    }
                    plan.push(None);
                }
            }
            let mut answered: Vec<Value> = if forward.is_empty() {
                Vec::new()
            } else {
                let resp = http
                    .post(&target)
                    .header("content-type", "application/x-ndjson")
                    .body(forward)
                    .send()
                    .await
                    .unwrap();
                let v: Value = resp.json().await.unwrap();
                v["items"].as_array().unwrap().clone()
            };
            answered.reverse();
            let items: Vec<Value> = plan.into_iter().map(|p| p.unwrap_or_else(|| answered.pop().unwrap())).collect();
            (StatusCode::OK, json!({"took": 1, "errors": true, "items": items}).to_string().into_bytes())
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Pushback { url: format!("http://{addr}"), rejected, refuse_all, bulks }
}
