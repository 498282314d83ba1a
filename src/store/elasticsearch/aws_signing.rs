//! SigV4 signing of every Elasticsearch/OpenSearch request for Amazon OpenSearch Service
//! (Temporal's `aws-request-signing` block), with credentials resolved as Temporal does.

use std::time::{Duration, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderName, HeaderValue};

use crate::config::persistence::{AwsCredentialProvider, AwsRequestSigning};
use crate::store::StoreError;

/// The signing name of Amazon OpenSearch Service (and of its Elasticsearch predecessor).
pub const SERVICE: &str = "es";

/// Where the credentials come from; Temporal's three `credentialProvider` values.
enum CredentialSource {
    /// `static` and `environment`: fixed for the life of the process, as in Temporal
    /// (it reads the environment once, when it builds its client).
    Fixed(Credentials),
    /// `aws-sdk-default`: the SDK's chain (environment, profile, web identity, ECS/EKS,
    /// instance metadata), built on first use because building it is async.
    DefaultChain(tokio::sync::OnceCell<DefaultCredentialsChain>),
}

pub struct AwsSigner {
    region: String,
    source: CredentialSource,
    /// The chain's last credentials, reused until shortly before they expire, so that a
    /// scan does not ask STS or the metadata service once per page.
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

/// Credentials this close to their expiry are fetched again before signing.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

impl AwsSigner {
    /// The signer for an enabled block; errors name the field (the caller prefixes the
    /// store) and never a credential.
    pub fn new(cfg: &AwsRequestSigning) -> anyhow::Result<Self> {
        let region = match cfg.region.trim() {
            "" => std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()).ok_or_else(|| {
                anyhow::anyhow!(
                    "elasticsearch.aws-request-signing.region: empty and AWS_REGION is not set (set the region of the domain, e.g. us-east-1)"
                )
            })?,
            r => r.to_string(),
        };
        let source = match cfg.provider().map_err(|e| anyhow::anyhow!("elasticsearch.{e}"))? {
            AwsCredentialProvider::Static => {
                let s = &cfg.static_credentials;
                let secret = s.secret_access_key.as_ref().map(|k| k.expose()).unwrap_or_default();
                let token = s.token.as_ref().filter(|t| !t.is_empty()).map(|t| t.expose().to_string());
                CredentialSource::Fixed(Credentials::new(&s.access_key_id, secret, token, None, "vismig-static"))
            }
            AwsCredentialProvider::Environment => {
                CredentialSource::Fixed(from_environment(|name| std::env::var(name).ok())?)
            }
            AwsCredentialProvider::AwsSdkDefault => CredentialSource::DefaultChain(tokio::sync::OnceCell::new()),
        };
        Ok(Self { region, source, cached: tokio::sync::Mutex::new(None) })
    }

    /// Adds `x-amz-date`, `authorization` (and `x-amz-security-token` with temporary
    /// credentials) to a built request, signed over its method, URL, headers and body.
    /// Errors start with `what` (the request).
    pub async fn sign(&self, req: &mut reqwest::Request, what: &str) -> Result<(), StoreError> {
        let credentials = self.credentials(what).await?;
        sign_request(req, &credentials, &self.region, SERVICE, SystemTime::now())
            .map_err(|e| StoreError::Permanent(format!("{what}: aws-request-signing: {e}")))
    }

    async fn credentials(&self, what: &str) -> Result<Credentials, StoreError> {
        let chain = match &self.source {
            CredentialSource::Fixed(c) => return Ok(c.clone()),
            CredentialSource::DefaultChain(chain) => chain,
        };
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.expiry().is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        {
            return Ok(c.clone());
        }
        let region = aws_config::Region::new(self.region.clone());
        let chain = chain.get_or_init(|| DefaultCredentialsChain::builder().region(region).build()).await;
        // The SDK's error names the providers it tried and why each declined; it holds
        // no credential. Transient: a metadata service or STS may answer next time.
        let fresh = chain.provide_credentials().await.map_err(|e| {
            StoreError::Transient(format!(
                "{what}: aws-request-signing: no credentials from the AWS SDK's default chain (credentialProvider aws-sdk-default): {}",
                error_chain(&e)
            ))
        })?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }
}

/// Temporal's `environment` provider (aws-sdk-go-v2's `NewEnvConfig`): the key from
/// `AWS_ACCESS_KEY_ID` or else `AWS_ACCESS_KEY`, the secret from `AWS_SECRET_ACCESS_KEY`
/// or else `AWS_SECRET_KEY`, and `AWS_SESSION_TOKEN` if set.
fn from_environment(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Credentials> {
    let first = |names: &[&str]| names.iter().find_map(|n| var(n).filter(|v| !v.is_empty()));
    let key = first(&["AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"]);
    let secret = first(&["AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"]);
    let (Some(key), Some(secret)) = (key, secret) else {
        anyhow::bail!(
            "elasticsearch.aws-request-signing: credentialProvider environment needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (or AWS_ACCESS_KEY and AWS_SECRET_KEY)"
        );
    };
    Ok(Credentials::new(key, secret, first(&["AWS_SESSION_TOKEN"]), None, "vismig-environment"))
}

/// Signs `req` in place at `time`: the part that test vectors check. The body is signed
/// as sent (its SHA-256 goes into the canonical request); a streamed body, which vismig
/// never sends, could not be.
pub fn sign_request(
    req: &mut reqwest::Request,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), String> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let headers: Vec<(&str, &str)> =
        req.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))).collect();
    let body = match req.body() {
        None => SignableBody::Bytes(&[]),
        Some(body) => SignableBody::Bytes(body.as_bytes().ok_or("a streamed body cannot be signed")?),
    };
    let signable = SignableRequest::new(req.method().as_str(), req.url().as_str(), headers.into_iter(), body)
        .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
    let (new_headers, _query) = instructions.into_parts();
    for header in new_headers {
        let mut value = HeaderValue::from_str(header.value()).map_err(|e| e.to_string())?;
        value.set_sensitive(header.sensitive());
        req.headers_mut().insert(HeaderName::from_static(header.name()), value);
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

#[cfg(test)]
#[path = "aws_signing_tests.rs"]
mod tests;
