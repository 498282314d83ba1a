//! A thin HTTP client for Elasticsearch 7/8 and OpenSearch 2 on reqwest: the handful of
//! JSON endpoints vismig needs, basic auth or AWS SigV4, TLS from Temporal's config block,
//! and one error classification. Raw JSON bodies are the same on all three servers for every
//! call used here (search and scroll, `_bulk`, `_mapping`, `_settings`,
//! `_count`, `_refresh`), so there is no per-flavor code path; the typed client crates
//! would add a second HTTP stack (elasticsearch) or miss ES-only parameters (opensearch).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::aws_signing::AwsSigner;
use crate::config::Secret;
use crate::config::persistence::{ElasticsearchStore as EsConfig, Tls};
use crate::store::StoreError;
use crate::tls::{TlsMaterial, Verify};

/// What `GET /` says about the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// `opensearch` or `elasticsearch`.
    pub distribution: String,
    pub version: String,
}

/// How long preflight waits for the server to connect and answer `GET /`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    http: reqwest::Client,
    /// `scheme://host:port`, no trailing slash.
    base: String,
    username: Option<String>,
    password: Option<Secret>,
    /// Temporal's `aws-request-signing`, when enabled: every request is signed, and no
    /// basic auth is sent (Temporal's signer replaces the `Authorization` header too).
    signer: Option<Arc<AwsSigner>>,
}

impl Client {
    pub fn new(cfg: &EsConfig) -> anyhow::Result<Self> {
        let url = cfg.url.as_ref().ok_or_else(|| anyhow::anyhow!("elasticsearch.url is missing"))?;
        let scheme = if url.scheme.is_empty() { "http" } else { url.scheme.as_str() };
        let base = format!("{scheme}://{}", url.host.trim_end_matches('/'));
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A bulk of a few thousand documents into a busy cluster can take a while;
            // past this the request is retried as a timeout.
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(16);
        // No `Accept-Encoding: gzip`: the server would compress every scroll page (a
        // few MB each) and vismig inflate it, CPU on both sides to save bytes on what is
        // usually a fast network; the copy is bound by the servers' CPU
        // (PERFORMANCE.md, "OpenSearch: pages read from their bytes").
        if let Some(tls) = cfg.tls.as_ref().filter(|t| t.enabled) {
            builder = with_tls(builder, tls)?;
        }
        let http = builder.build().map_err(|e| anyhow::anyhow!("elasticsearch client: {e}"))?;
        let signer = match cfg.aws_request_signing.as_ref().filter(|a| a.enabled) {
            Some(aws) => Some(Arc::new(AwsSigner::new(aws)?)),
            None => None,
        };
        Ok(Self { http, base, username: cfg.username.clone(), password: cfg.password.clone(), signer })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if self.signer.is_some() {
            return req;
        }
        if let Some(user) = &self.username {
            req = req.basic_auth(user, self.password.as_ref().map(|p| p.expose().to_string()));
        }
        req
    }

    /// Sends a JSON request and returns the JSON answer; `allow` lists non-2xx statuses
    /// whose body the caller wants instead of an error (404 for "absent").
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        allow: &[StatusCode],
    ) -> Result<(StatusCode, Value), StoreError> {
        let (status, bytes) = self.send(self.json_request(&method, path, body), &method, path, allow).await?;
        Ok((status, parse_body(&bytes)))
    }

    /// Sends a JSON request and returns the answer's bytes unparsed, for callers that
    /// read it into their own types (a scroll page into records) rather than a tree.
    pub async fn raw(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Bytes, StoreError> {
        self.send(self.json_request(&method, path, body), &method, path, &[]).await.map(|(_, bytes)| bytes)
    }

    /// `POST /_bulk` with an NDJSON body. The answer is cut to what the per-item
    /// outcomes need: a full one repeats index, id, shards and sequence numbers per item.
    pub async fn bulk(&self, body: Vec<u8>) -> Result<Value, StoreError> {
        const PATH: &str = "/_bulk?filter_path=errors,items.*.status,items.*.result,items.*.error";
        let req = self.request(Method::POST, PATH).header("content-type", "application/x-ndjson").body(body);
        self.send(req, &Method::POST, "/_bulk", &[]).await.map(|(_, bytes)| parse_body(&bytes))
    }

    fn json_request(&self, method: &Method, path: &str, body: Option<&Value>) -> reqwest::RequestBuilder {
        let req = self.request(method.clone(), path);
        match body {
            Some(body) => req.json(body),
            None => req,
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        method: &Method,
        path: &str,
        allow: &[StatusCode],
    ) -> Result<(StatusCode, Bytes), StoreError> {
        let what = format!("{method} {}{path}", self.base);
        let mut req = req.build().map_err(|e| transport_error(&what, &e))?;
        if let Some(signer) = &self.signer {
            signer.sign(&mut req, &what).await?;
        }
        let resp = self.http.execute(req).await.map_err(|e| transport_error(&what, &e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| transport_error(&what, &e))?;
        if status.is_success() || allow.contains(&status) {
            return Ok((status, bytes));
        }
        Err(http_error(&what, status, &parse_body(&bytes)).hinted(self.auth_hint(status)))
    }

    /// What to check when the server refuses who vismig is (401) or what it asks (403).
    fn auth_hint(&self, status: StatusCode) -> &'static str {
        match (status, self.signer.is_some()) {
            (StatusCode::UNAUTHORIZED, false) => " (check elasticsearch.username and password)",
            (StatusCode::FORBIDDEN, false) => {
                " (grant the user's role the permission named; README, \"Elasticsearch/OpenSearch permissions\")"
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, true) => {
                " (check aws-request-signing: the region, the credentials, and that the domain's access policy allows them)"
            }
            _ => "",
        }
    }

    /// `GET /`, answered within `CONNECT_TIMEOUT` (a server that accepts connections
    /// but never answers fails preflight then, not after the 120 s of a bulk).
    pub async fn info(&self) -> Result<ServerInfo, StoreError> {
        let req = self.request(Method::GET, "/").timeout(CONNECT_TIMEOUT);
        let v = parse_body(&self.send(req, &Method::GET, "/", &[]).await?.1);
        let version = v["version"]["number"].as_str().unwrap_or_default().to_string();
        let distribution = v["version"]["distribution"].as_str().unwrap_or("elasticsearch").to_string();
        Ok(ServerInfo { distribution, version })
    }
}

/// The `tls` block in errors and hints.
const TLS_BLOCK: &str = "elasticsearch.tls";

/// The client's TLS from Temporal's `tls` block, through the material and verifier every
/// store shares (`crate::tls`: file or inline forms, `serverName`). With a CA the server
/// is checked against it only (chain, dates, and the name unless
/// `enableHostVerification: false`); without one against the system's trust store, as
/// a managed cluster's public certificate needs (Amazon OpenSearch Service).
fn with_tls(builder: reqwest::ClientBuilder, tls: &Tls) -> anyhow::Result<reqwest::ClientBuilder> {
    let material = TlsMaterial::load(tls, TLS_BLOCK).map_err(|e| anyhow::anyhow!(e))?;
    let verify = match (tls.enable_host_verification, material.ca.is_some()) {
        (Some(false), true) => Verify::ChainOnly,
        (Some(false), false) => Verify::Nothing,
        (_, true) => Verify::Full,
        (_, false) => {
            if tls.server_name.as_deref().is_some_and(|n| !n.trim().is_empty()) {
                anyhow::bail!(
                    "{TLS_BLOCK}.serverName needs {TLS_BLOCK}.caFile (or caData): the system trust store checks the host dialled"
                );
            }
            // The system's trust store (reqwest's platform verifier), and the client
            // certificate if there is one.
            return Ok(match &material.identity {
                Some(id) => builder.identity(
                    reqwest::Identity::from_pem(&[id.cert.as_slice(), id.key.as_slice()].concat()).map_err(|_| {
                        anyhow::anyhow!("{TLS_BLOCK}: the client certificate and key do not go together")
                    })?,
                ),
                None => builder,
            });
        }
    };
    let config = crate::tls::client_config(&material, verify, tls.server_name.as_deref(), TLS_BLOCK)
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(builder.use_preconfigured_tls(config))
}

/// An answer as JSON; one that is not JSON (a proxy's error page) as a string.
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into()))
    }
}

fn transport_error(what: &str, e: &reqwest::Error) -> StoreError {
    // The URL in reqwest's message carries no credentials (they go in a header).
    let mut msg = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    if e.is_timeout() {
        msg.push_str(" (no answer in time: is the server up, and is url.host right?)");
    }
    let hint = connection_hint(what, e, &msg);
    msg.push_str(&hint);
    if e.is_decode() || e.is_builder() { StoreError::Permanent(msg) } else { StoreError::Transient(msg) }
}

/// What to fix when TLS or the scheme is wrong: a refused certificate as every store
/// explains it, or plain HTTP to a server that only speaks TLS.
fn connection_hint(what: &str, e: &reqwest::Error, msg: &str) -> String {
    if let Some(why) = crate::tls::explain(e, TLS_BLOCK) {
        format!(" ({why})")
    } else if what.contains(" http://") && msg.contains("connection closed before message completed") {
        " (a TLS-only server closes plain HTTP: set url.scheme https and tls.enabled: true)".to_string()
    } else {
        String::new()
    }
}

/// 429 and 5xx are the server pushing back or failing over: retried. Anything else
/// (a 4xx) is a request the server will refuse again.
fn http_error(what: &str, status: StatusCode, body: &Value) -> StoreError {
    let msg = format!("{what}: HTTP {status}: {}", error_reason(body));
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        StoreError::Transient(msg)
    } else {
        StoreError::Permanent(msg)
    }
}

/// The `type: reason` of an Elasticsearch error body, or the body itself, shortened.
pub fn error_reason(body: &Value) -> String {
    let err = &body["error"];
    let text = match (err["type"].as_str(), err["reason"].as_str()) {
        (Some(t), Some(r)) => {
            let cause = &err["caused_by"];
            match cause["reason"].as_str() {
                Some(c) => format!("{t}: {r} (caused by {}: {c})", cause["type"].as_str().unwrap_or("error")),
                None => format!("{t}: {r}"),
            }
        }
        _ => match body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    };
    let mut text = text;
    if text.len() > 400 {
        let mut cut = 400;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_server_reason_and_classify_pushback_as_transient() {
        let body = json!({"error": {"type": "es_rejected_execution_exception", "reason": "queue full"}, "status": 429});
        let e = http_error("POST http://h/_bulk", StatusCode::TOO_MANY_REQUESTS, &body);
        assert!(matches!(e, StoreError::Transient(_)));
        assert!(e.to_string().contains("es_rejected_execution_exception: queue full"), "{e}");
        let e = http_error(
            "GET http://h/x",
            StatusCode::NOT_FOUND,
            &json!({"error": {"type": "index_not_found_exception", "reason": "no such index [x]"}}),
        );
        assert!(matches!(e, StoreError::Permanent(_)));
        assert!(e.to_string().contains("no such index [x]"));
        assert!(matches!(http_error("x", StatusCode::BAD_GATEWAY, &Value::Null), StoreError::Transient(_)));
    }
}
