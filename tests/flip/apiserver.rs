//! A fake Kubernetes API server for the ConfigMap flip: GET and JSON-merge PATCH of
//! `/api/v1/namespaces/{ns}/configmaps/{name}` with resourceVersion semantics (every
//! change bumps it; a PATCH whose `metadata.resourceVersion` is not the current one
//! gets 409 Conflict), bearer-token checks (401), and a log of every request. It can
//! play a concurrent writer that changes the ConfigMap just before the next PATCHes
//! arrive. Over plain HTTP, or over TLS with a client certificate required.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

#[derive(Clone, Debug)]
pub struct ConfigMap {
    pub resource_version: u64,
    pub data: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

type Interference = Box<dyn Fn(&mut ConfigMap) + Send>;

#[derive(Default)]
struct Inner {
    objects: BTreeMap<(String, String), ConfigMap>,
    log: Vec<Request>,
    /// None: any caller is accepted (TLS client certificates authenticate instead).
    token: Option<String>,
    /// How many of the next PATCHes a concurrent writer gets in before, and what it does.
    interfere: usize,
    interference: Option<Interference>,
}

#[derive(Clone, Default)]
pub struct FakeApiServer {
    inner: Arc<Mutex<Inner>>,
}

impl FakeApiServer {
    pub fn new(token: Option<&str>) -> Self {
        let server = Self::default();
        server.inner.lock().unwrap().token = token.map(String::from);
        server
    }

    pub fn put(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let cm = ConfigMap {
            resource_version: 1000,
            data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            labels: [("app.kubernetes.io/name".to_string(), "temporal".to_string())].into(),
        };
        self.inner.lock().unwrap().objects.insert((namespace.into(), name.into()), cm);
    }

    pub fn get(&self, namespace: &str, name: &str) -> ConfigMap {
        self.inner.lock().unwrap().objects[&(namespace.to_string(), name.to_string())].clone()
    }

    pub fn log(&self) -> Vec<Request> {
        self.inner.lock().unwrap().log.clone()
    }

    /// Before each of the next `times` PATCHes, `change` edits the ConfigMap as another
    /// writer would (bumping its resourceVersion).
    pub fn interfere(&self, times: usize, change: impl Fn(&mut ConfigMap) + Send + 'static) {
        let mut inner = self.inner.lock().unwrap();
        inner.interfere = times;
        inner.interference = Some(Box::new(change));
    }

    fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Serves plain HTTP on 127.0.0.1; returns the base URL.
    pub async fn serve_http(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = self.router();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// Serves HTTPS with `tls/server.crt`, accepting only clients with a certificate
    /// signed by `tls/ca.crt`; returns the base URL.
    pub async fn serve_tls(&self, tls_dir: &Path) -> String {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{self, RootCertStore, server::WebPkiClientVerifier};

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(tls_dir.join("ca.crt")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
        let certs: Vec<CertificateDer> =
            CertificateDer::pem_file_iter(tls_dir.join("server.crt")).unwrap().map(|c| c.unwrap()).collect();
        let key = PrivateKeyDer::from_pem_file(tls_dir.join("server.key")).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
        let app = self.router();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("https://127.0.0.1:{}", addr.port())
    }
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            // A client without a valid certificate fails here and is dropped.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> axum::response::Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

fn object(namespace: &str, name: &str, cm: &ConfigMap) -> axum::response::Response {
    let body = json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "0e6e5d1c-4d5c-4a43-9b0f-7d2f8e7c0a11",
            "resourceVersion": cm.resource_version.to_string(),
            "labels": cm.labels,
        },
        "data": cm.data,
    });
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn handle(
    State(server): State<FakeApiServer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let mut inner = server.inner.lock().unwrap();
    inner.log.push(Request {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: body.clone(),
    });
    if let Some(token) = &inner.token
        && header("authorization") != Some(format!("Bearer {token}"))
    {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", namespace, "configmaps", name] = parts.as_slice() else {
        return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
    };
    let key = (namespace.to_string(), name.to_string());
    if !inner.objects.contains_key(&key) {
        return status(StatusCode::NOT_FOUND, "NotFound", &format!("configmaps \"{name}\" not found"));
    }
    match method {
        Method::GET => object(namespace, name, &inner.objects[&key]),
        Method::PATCH => {
            if header("content-type").as_deref() != Some("application/merge-patch+json") {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    "expected a JSON merge patch",
                );
            }
            let Ok(patch) = serde_json::from_str::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "the patch is not JSON");
            };
            if inner.interfere > 0 {
                inner.interfere -= 1;
                let change = inner.interference.take().unwrap();
                let cm = inner.objects.get_mut(&key).unwrap();
                change(cm);
                cm.resource_version += 1;
                inner.interference = Some(change);
            }
            let cm = inner.objects.get_mut(&key).unwrap();
            if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
                && rv != cm.resource_version.to_string()
            {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on configmaps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            if let Some(data) = patch["data"].as_object() {
                for (k, v) in data {
                    match v.as_str() {
                        Some(text) => {
                            cm.data.insert(k.clone(), text.to_string());
                        }
                        None => {
                            cm.data.remove(k);
                        }
                    }
                }
            }
            cm.resource_version += 1;
            object(namespace, name, cm)
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "the fake serves GET and PATCH"),
    }
}
