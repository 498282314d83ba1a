//! The flip written to a key of a Kubernetes ConfigMap (the dynamic-config file that
//! Temporal's pods mount read-only). A small client of the API server's REST interface
//! on the reqwest (rustls) client vismig already uses, rather than the kube crate: one
//! HTTP and TLS stack in the binary, and two requests (GET and PATCH of one ConfigMap)
//! do not need kube's watch machinery, typed API or its own TLS and hyper setup.
//!
//! Optimistic concurrency: the PATCH carries the `metadata.resourceVersion` of the GET
//! it edits, so the API server answers 409 Conflict when anyone changed the ConfigMap in
//! between. vismig then reads it again, runs the guard and the same edit on the fresh
//! content, and retries, at most [`ATTEMPTS`] times with the crate's back-off
//! ([`conflict_backoff`]). The previous content is saved first as a timestamped file
//! beside the checkpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use super::kubeconfig::{self, Credentials};
use super::{Done, Error, Plan, warn_forced};
use crate::config::migration::ConfigMapTarget;
use crate::retry::Backoff;

/// Tries of GET, edit and PATCH before giving up on conflicts.
pub const ATTEMPTS: u32 = 5;

/// Between conflicting attempts: 100 ms, 200 ms, 400 ms, … jittered, so two flippers
/// that collided do not collide again.
pub fn conflict_backoff() -> Backoff {
    Backoff {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(5),
        max_attempts: Some(ATTEMPTS),
        max_elapsed: None,
    }
}

pub fn describe(cm: &ConfigMapTarget) -> String {
    format!("ConfigMap {}/{} key {}", cm.namespace, cm.name, cm.key)
}

/// The parts of a ConfigMap the flip needs.
pub struct ConfigMap {
    pub resource_version: String,
    /// `data[key]`.
    pub text: String,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    /// `Bearer …`, marked sensitive (never shown by Debug).
    auth: Option<HeaderValue>,
    /// Where the credentials came from, for messages.
    source: String,
}

enum PatchError {
    Conflict(String),
    Other(anyhow::Error),
}

impl Client {
    /// Credentials as [`kubeconfig::resolve`] finds them; `apiServer` replaces the server.
    pub fn new(cm: &ConfigMapTarget) -> anyhow::Result<Client> {
        let creds = kubeconfig::resolve(|k| std::env::var(k).ok(), Path::new(kubeconfig::SERVICE_ACCOUNT_DIR))
            .map_err(|e| anyhow::anyhow!("{}: {e}", describe(cm)))?;
        Self::with_credentials(cm, creds)
    }

    fn with_credentials(cm: &ConfigMapTarget, creds: Credentials) -> anyhow::Result<Client> {
        let what = describe(cm);
        let base = cm.api_server.clone().unwrap_or(creds.server).trim_end_matches('/').to_string();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("vismig/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &creds.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| anyhow::anyhow!("{what}: the API server's CA ({}) is not PEM: {e}", creds.source))?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some(identity) = &creds.identity_pem {
            let identity = reqwest::Identity::from_pem(identity.expose().as_bytes()).map_err(|e| {
                anyhow::anyhow!("{what}: the client certificate and key ({}) are not usable: {e}", creds.source)
            })?;
            builder = builder.identity(identity);
        }
        if creds.insecure_skip_tls_verify {
            tracing::warn!(source = %creds.source, "insecure-skip-tls-verify: the API server's certificate is not checked");
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let auth = match &creds.token {
            Some(token) => {
                if base.starts_with("http://") && !is_loopback(&base) {
                    tracing::warn!(server = %base, "sending the Kubernetes bearer token over plain HTTP");
                }
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    anyhow::anyhow!("{what}: the bearer token ({}) holds invalid characters", creds.source)
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = builder.build().map_err(|e| anyhow::anyhow!("{what}: cannot set up the HTTP client: {e}"))?;
        Ok(Client { http, base, auth, source: creds.source })
    }

    fn url(&self, cm: &ConfigMapTarget) -> String {
        // Namespace and name are validated DNS names: nothing to escape.
        format!("{}/api/v1/namespaces/{}/configmaps/{}", self.base, cm.namespace, cm.name)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url).header(ACCEPT, "application/json");
        match &self.auth {
            Some(auth) => r.header(AUTHORIZATION, auth.clone()),
            None => r,
        }
    }

    pub async fn get(&self, cm: &ConfigMapTarget) -> anyhow::Result<ConfigMap> {
        let what = describe(cm);
        let response = self
            .request(reqwest::Method::GET, &self.url(cm))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{what}: cannot reach the Kubernetes API server {}: {e}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(self.http_error(cm, "GET", status, &body));
        }
        let resource_version = body["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow::anyhow!("{what}: the API server's answer has no metadata.resourceVersion"))?
            .to_string();
        if body["immutable"] == Value::Bool(true) {
            anyhow::bail!(
                "{what}: the ConfigMap is immutable (immutable: true), so it cannot be edited; make it mutable, or edit a copy and point Temporal's pods at it"
            );
        }
        let Some(text) = body["data"][&cm.key].as_str() else {
            if body["binaryData"][&cm.key].is_string() {
                anyhow::bail!("{what}: the key is in binaryData; vismig edits text (data) only");
            }
            let keys: Vec<&str> =
                body["data"].as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
            anyhow::bail!(
                "{what}: the ConfigMap has no data key {:?} (keys: {}); set migration.flip.target.configMap.key to the file name Temporal reads",
                cm.key,
                if keys.is_empty() { "none".to_string() } else { keys.join(", ") }
            );
        };
        Ok(ConfigMap { resource_version, text: text.to_string() })
    }

    /// A JSON merge patch of `data[key]` alone, carrying `resourceVersion` as the
    /// precondition. Returns the new resourceVersion.
    async fn patch(&self, cm: &ConfigMapTarget, resource_version: &str, text: &str) -> Result<String, PatchError> {
        let what = describe(cm);
        let body = json!({
            "metadata": { "resourceVersion": resource_version },
            "data": { cm.key.clone(): text },
        });
        let response = self
            .request(reqwest::Method::PATCH, &format!("{}?fieldManager=vismig", self.url(cm)))
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                PatchError::Other(anyhow::anyhow!(
                    "{what}: PATCH to the Kubernetes API server {} failed, so the flip may or may not have been applied (check with kubectl get configmap): {e}",
                    self.base
                ))
            })?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status == StatusCode::CONFLICT {
            return Err(PatchError::Conflict(status_message(&answer)));
        }
        if !status.is_success() {
            return Err(PatchError::Other(self.http_error(cm, "PATCH", status, &answer)));
        }
        if answer["data"][&cm.key].as_str() != Some(text) {
            tracing::warn!(configmap = %what, "the API server's answer to the PATCH does not hold the edited text (a mutating webhook?)");
        }
        Ok(answer["metadata"]["resourceVersion"].as_str().unwrap_or("?").to_string())
    }

    fn http_error(&self, cm: &ConfigMapTarget, method: &str, status: StatusCode, body: &Value) -> anyhow::Error {
        let what = describe(cm);
        let message = status_message(body);
        let hint = match status {
            StatusCode::UNAUTHORIZED => format!("the API server did not accept the credentials ({})", self.source),
            StatusCode::FORBIDDEN => format!(
                "vismig's identity ({}) needs RBAC get and patch on configmaps/{} in namespace {}",
                self.source, cm.name, cm.namespace
            ),
            StatusCode::NOT_FOUND => format!("no such ConfigMap at {} (migration.flip.target.configMap)", self.base),
            _ => String::new(),
        };
        let parts: Vec<&str> = [hint.as_str(), message.as_str()].into_iter().filter(|s| !s.is_empty()).collect();
        anyhow::anyhow!("{what}: {method} answered HTTP {status}: {}", parts.join(": "))
    }
}

/// The `message` of a Kubernetes Status object, shortened.
fn status_message(body: &Value) -> String {
    let message = body["message"].as_str().unwrap_or_default();
    match message.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &message[..i]),
        None => message.to_string(),
    }
}

fn is_loopback(url: &str) -> bool {
    reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(String::from)).is_some_and(|h| {
        h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}

/// Reads, guards, edits and patches `cm`, retrying on conflicts; `plan` runs the guard
/// and the edit on each version read.
pub(super) async fn flip(
    cm: &ConfigMapTarget,
    dry_run: bool,
    backup_dir: &Path,
    plan: impl Fn(&str, &str) -> Result<Plan, Error>,
    changes: &str,
) -> Result<Done, Error> {
    let client = Client::new(cm)?;
    let what = describe(cm);
    let label = format!("configmaps/{}/{}/{}", cm.namespace, cm.name, cm.key);
    let applies_when = "after the kubelet refreshes the mounted ConfigMap (about a minute; never for a subPath mount), then within its dynamicConfigClient.pollInterval".to_string();
    let mut warned = false;
    let mut conflicts: Vec<String> = Vec::new();
    let mut schedule = conflict_backoff().start();
    loop {
        let attempt = schedule.failures() + 1;
        let current = client.get(cm).await?;
        let planned = plan(&label, &current.text)?;
        if let Some(reason) = &planned.forced
            && !warned
        {
            warn_forced(reason);
            warned = true;
        }
        let changed = planned.new != current.text;
        if dry_run || !changed {
            return Ok(Done {
                target: what,
                changed,
                diff: planned.diff,
                action: "patched".into(),
                backup: None,
                applies_when,
                text: current.text,
            });
        }
        let backup = write_backup(backup_dir, cm, &current.text)?;
        match client.patch(cm, &current.resource_version, &planned.new).await {
            Ok(new_version) => {
                tracing::info!(
                    audit = true,
                    configmap = %what,
                    resource_version_before = %current.resource_version,
                    resource_version_after = %new_version,
                    attempt,
                    backup = %backup.display(),
                    changes,
                    forced = planned.forced.is_some(),
                    "flip: dynamic config changed"
                );
                return Ok(Done {
                    target: what,
                    changed: true,
                    diff: planned.diff,
                    action: format!("patched (resourceVersion {} -> {new_version})", current.resource_version),
                    backup: Some(backup),
                    applies_when,
                    text: planned.new,
                });
            }
            Err(PatchError::Conflict(message)) => {
                // Nothing was written: this backup is of a version that stays as it was.
                let _ = std::fs::remove_file(&backup);
                tracing::warn!(configmap = %what, attempt, attempts = ATTEMPTS, resource_version = %current.resource_version, answer = %message, "the ConfigMap changed since it was read (409 Conflict): reading it again");
                conflicts.push(message);
                match schedule.next_delay() {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => break,
                }
            }
            // The backup stays: the PATCH may have been applied.
            Err(PatchError::Other(e)) => return Err(Error::Failed(e)),
        }
    }
    Err(Error::Failed(anyhow::anyhow!(
        "{what}: still changing under vismig: the API server answered 409 Conflict to all {ATTEMPTS} attempts (last: {}); nothing was changed. Find what keeps rewriting it (a GitOps controller, another flip) and run the flip again",
        conflicts.last().map(String::as_str).unwrap_or("")
    )))
}

fn write_backup(dir: &Path, cm: &ConfigMapTarget, text: &str) -> Result<PathBuf, Error> {
    let name = format!(
        "configmap-{}-{}-{}.vismig-backup-{}",
        cm.namespace,
        cm.name,
        cm.key,
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let path = dir.join(name);
    crate::backfill::checkpoint::write_atomically(&path, text.as_bytes(), 0o644).map_err(|e| {
        Error::Failed(anyhow::anyhow!(
            "cannot write the backup {} (beside the checkpoint): {e}; nothing was changed",
            path.display()
        ))
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_back_off() {
        assert!(is_loopback("http://127.0.0.1:8080"));
        assert!(is_loopback("http://[::1]:8080"));
        assert!(is_loopback("http://localhost"));
        assert!(!is_loopback("http://10.0.0.1"));
        // Four waits between the five attempts, each in the upper half of 100 ms doubled.
        let mut schedule = conflict_backoff().start();
        for failure in 1..ATTEMPTS {
            let d = schedule.next_delay().expect("attempts left").as_millis() as u64;
            let base = 100u64 << (failure - 1);
            assert!((base / 2..=base).contains(&d), "{failure}: {d}");
        }
        assert_eq!(schedule.next_delay(), None, "no wait after the last attempt");
    }
}
