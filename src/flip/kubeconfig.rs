//! Where the Kubernetes API server is and how to authenticate to it, found the way
//! kubectl and client-go do, in this order:
//!
//! 1. `KUBECONFIG` set: the kubeconfig file(s) it lists (colon-separated, merged: the
//!    first file that sets a value wins);
//! 2. in a pod (`KUBERNETES_SERVICE_HOST`/`_PORT` set and a service-account token
//!    mounted): `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the token
//!    and the CA from `/var/run/secrets/kubernetes.io/serviceaccount/`;
//! 3. `~/.kube/config`.
//!
//! From a kubeconfig: the current context's cluster (`server`,
//! `certificate-authority-data` or `certificate-authority`, `insecure-skip-tls-verify`)
//! and user (`token`, `tokenFile`, `client-certificate(-data)` + `client-key(-data)`).
//! Exec plugins and auth providers are refused with a message: vismig runs no commands.

use std::path::{Path, PathBuf};

use base64::Engine;
use yaml_serde::Value;

use crate::config::Secret;

/// The mounted service-account directory of a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, Default)]
pub struct Credentials {
    /// The API server's base URL, without a trailing slash.
    pub server: String,
    pub token: Option<Secret>,
    /// PEM: the CA bundle that signs the API server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM: client certificate chain followed by its private key.
    pub identity_pem: Option<Secret>,
    pub insecure_skip_tls_verify: bool,
    /// Where these came from, for messages (never the secrets themselves).
    pub source: String,
}

/// Finds the credentials; `env` reads environment variables, `service_account_dir`
/// is [`SERVICE_ACCOUNT_DIR`] outside tests.
pub fn resolve(env: impl Fn(&str) -> Option<String>, service_account_dir: &Path) -> Result<Credentials, String> {
    if let Some(list) = env("KUBECONFIG").filter(|v| !v.trim().is_empty()) {
        let files: Vec<PathBuf> = std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect();
        return from_kubeconfig(&files);
    }
    if let (Some(host), Some(port)) = (env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT"))
        && service_account_dir.join("token").exists()
    {
        return in_cluster(&host, &port, service_account_dir);
    }
    let home = env("HOME").map(PathBuf::from);
    match home.map(|h| h.join(".kube/config")).filter(|p| p.exists()) {
        Some(path) => from_kubeconfig(&[path]),
        None => Err("no Kubernetes credentials: not in a pod (KUBERNETES_SERVICE_HOST unset or no service-account token mounted), KUBECONFIG unset and no ~/.kube/config".into()),
    }
}

fn in_cluster(host: &str, port: &str, dir: &Path) -> Result<Credentials, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| format!("cannot read the service account's {}: {e}", path.display()))
    };
    let token = String::from_utf8(read("token")?).map_err(|_| "the service-account token is not text".to_string())?;
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    Ok(Credentials {
        server: format!("https://{host}:{port}"),
        token: Some(Secret::new(token.trim())),
        ca_pem: dir.join("ca.crt").exists().then(|| read("ca.crt")).transpose()?,
        identity_pem: None,
        insecure_skip_tls_verify: false,
        source: format!("in-cluster service account ({})", dir.display()),
    })
}

/// One kubeconfig file, parsed, with its path (relative file names in it are relative
/// to its directory).
struct File {
    path: PathBuf,
    doc: Value,
}

impl File {
    /// The `field` map of the entry called `name` in the list `list` (clusters, users,
    /// contexts).
    fn named(&self, list: &str, field: &str, name: &str) -> Option<&Value> {
        self.doc
            .get(list)?
            .as_sequence()?
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
            .get(field)
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { self.path.parent().unwrap_or(Path::new(".")).join(p) }
    }
}

fn from_kubeconfig(paths: &[PathBuf]) -> Result<Credentials, String> {
    let mut files = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            // kubectl skips listed files that do not exist.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && paths.len() > 1 => continue,
            Err(e) => return Err(format!("cannot read the kubeconfig {}: {e}", path.display())),
        };
        let doc: Value = yaml_serde::from_str(&text).map_err(|e| {
            format!("the kubeconfig {} is not valid YAML: {}", path.display(), e.to_string().replace('\n', " "))
        })?;
        files.push(File { path: path.clone(), doc });
    }
    let shown = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let context_name = files
        .iter()
        .find_map(|f| f.doc.get("current-context").and_then(Value::as_str).filter(|s| !s.is_empty()))
        .ok_or_else(|| format!("the kubeconfig {shown} has no current-context (kubectl config use-context NAME)"))?;
    let context = files
        .iter()
        .find_map(|f| f.named("contexts", "context", context_name))
        .ok_or_else(|| format!("the kubeconfig {shown}: current-context {context_name:?} is not in contexts"))?;
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let cluster_name = field(context, "cluster")
        .ok_or_else(|| format!("the kubeconfig {shown}: context {context_name:?} names no cluster"))?;
    let (cluster_file, cluster) =
        files.iter().find_map(|f| f.named("clusters", "cluster", &cluster_name).map(|c| (f, c))).ok_or_else(|| {
            format!("the kubeconfig {shown}: cluster {cluster_name:?} (of context {context_name:?}) is not in clusters")
        })?;
    let server = field(cluster, "server")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("the kubeconfig {shown}: cluster {cluster_name:?} has no server"))?;
    let at = |what: &str| format!("the kubeconfig {shown}: {what}");
    let mut creds = Credentials {
        server: server.trim_end_matches('/').to_string(),
        insecure_skip_tls_verify: cluster.get("insecure-skip-tls-verify").and_then(Value::as_bool).unwrap_or(false),
        source: format!("kubeconfig {shown}, context {context_name:?}"),
        ..Default::default()
    };
    creds.ca_pem = data_or_file(cluster_file, cluster, "certificate-authority-data", "certificate-authority")
        .map_err(|e| at(&format!("cluster {cluster_name:?}: {e}")))?;

    let Some(user_name) = field(context, "user") else { return Ok(creds) };
    let Some((user_file, user)) = files.iter().find_map(|f| f.named("users", "user", &user_name).map(|u| (f, u)))
    else {
        return Err(at(&format!("user {user_name:?} (of context {context_name:?}) is not in users")));
    };
    let at_user = |e: String| at(&format!("user {user_name:?}: {e}"));
    if let Some(token) = field(user, "token").filter(|t| !t.is_empty()) {
        creds.token = Some(Secret::new(token));
    } else if let Some(file) = field(user, "tokenFile") {
        let path = user_file.resolve(&file);
        let token = std::fs::read_to_string(&path)
            .map_err(|e| at_user(format!("cannot read tokenFile {}: {e}", path.display())))?;
        creds.token = Some(Secret::new(token.trim()));
    }
    let cert = data_or_file(user_file, user, "client-certificate-data", "client-certificate").map_err(at_user)?;
    let key = data_or_file(user_file, user, "client-key-data", "client-key").map_err(at_user)?;
    match (cert, key) {
        (Some(mut cert), Some(key)) => {
            if !cert.ends_with(b"\n") {
                cert.push(b'\n');
            }
            cert.extend_from_slice(&key);
            creds.identity_pem = Some(Secret::new(
                String::from_utf8(cert).map_err(|_| at_user("the client certificate or key is not PEM".into()))?,
            ));
        }
        (None, None) => {}
        _ => return Err(at_user("needs both client-certificate and client-key".into())),
    }
    if creds.token.is_none() && creds.identity_pem.is_none() {
        for (k, what) in [("exec", "an exec plugin"), ("auth-provider", "an auth provider")] {
            if user.get(k).is_some() {
                return Err(at_user(format!(
                    "authenticates through {what}, which vismig does not run; give it a token (kubectl create token SERVICE_ACCOUNT) or run vismig in the cluster"
                )));
            }
        }
    }
    Ok(creds)
}

/// `<name>-data` (base64) or `<name>` (a file), as bytes.
fn data_or_file(file: &File, v: &Value, data_key: &str, file_key: &str) -> Result<Option<Vec<u8>>, String> {
    if let Some(data) = v.get(data_key).and_then(Value::as_str) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.split_whitespace().collect::<String>())
            .map_err(|_| format!("{data_key} is not base64"))?;
        return Ok(Some(bytes));
    }
    match v.get(file_key).and_then(Value::as_str) {
        Some(name) => {
            let path = file.resolve(name);
            std::fs::read(&path).map(Some).map_err(|e| format!("cannot read {file_key} {}: {e}", path.display()))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: prod
clusters:
  - name: prod-cluster
    cluster:
      server: https://k8s.example.com:6443/
      certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmZha2UKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=
contexts:
  - name: prod
    context: { cluster: prod-cluster, user: vismig, namespace: temporal }
users:
  - name: vismig
    user:
      tokenFile: token.txt
"#;

    #[test]
    fn a_kubeconfig_gives_server_ca_and_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config"), KUBECONFIG).unwrap();
        std::fs::write(dir.path().join("token.txt"), "s3cret-token\n").unwrap();
        let vars = [("KUBECONFIG", dir.path().join("config").display().to_string())];
        let c = resolve(env(&vars), Path::new("/nonexistent")).unwrap();
        assert_eq!(c.server, "https://k8s.example.com:6443");
        assert_eq!(c.token.as_ref().unwrap().expose(), "s3cret-token");
        assert!(c.ca_pem.unwrap().starts_with(b"-----BEGIN CERTIFICATE-----\nfake\n"));
        assert!(c.source.contains("context \"prod\""), "{}", c.source);
        assert!(!format!("{:?}", c.token).contains("s3cret"), "Debug hides the token");
    }

    #[test]
    fn merged_kubeconfigs_client_certs_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a");
        let second = dir.path().join("b");
        std::fs::write(&first, "current-context: dev\n").unwrap();
        std::fs::write(dir.path().join("client.crt"), "-----BEGIN CERTIFICATE-----\nc\n-----END CERTIFICATE-----")
            .unwrap();
        std::fs::write(
            &second,
            "current-context: other\ncontexts: [{name: dev, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: \"https://10.1.1.1\", insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {client-certificate: client.crt, client-key-data: a2V5Cg==}}]\n",
        )
        .unwrap();
        let list = format!("{}:{}:{}", first.display(), dir.path().join("missing").display(), second.display());
        let vars = [("KUBECONFIG", list)];
        let c = resolve(env(&vars), Path::new("/nonexistent")).unwrap();
        assert_eq!(c.server, "https://10.1.1.1");
        assert!(c.insecure_skip_tls_verify);
        assert!(c.token.is_none());
        assert_eq!(
            c.identity_pem.unwrap().expose(),
            "-----BEGIN CERTIFICATE-----\nc\n-----END CERTIFICATE-----\nkey\n"
        );

        std::fs::write(&second, "current-context: dev\ncontexts: [{name: dev, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: \"https://x\"}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\n").unwrap();
        let vars = [("KUBECONFIG", second.display().to_string())];
        let e = resolve(env(&vars), Path::new("/nonexistent")).unwrap_err();
        assert!(e.contains("user \"u\": authenticates through an exec plugin"), "{e}");
        std::fs::write(&second, "current-context: gone\n").unwrap();
        let e = resolve(env(&vars), Path::new("/nonexistent")).unwrap_err();
        assert!(e.ends_with("current-context \"gone\" is not in contexts"), "{e}");
    }

    #[test]
    fn in_a_pod_the_service_account_is_used() {
        let sa = tempfile::tempdir().unwrap();
        std::fs::write(sa.path().join("token"), "pod-token\n").unwrap();
        std::fs::write(sa.path().join("ca.crt"), "CA").unwrap();
        let vars = [("KUBERNETES_SERVICE_HOST", "fd00::1".to_string()), ("KUBERNETES_SERVICE_PORT", "443".to_string())];
        let c = resolve(env(&vars), sa.path()).unwrap();
        assert_eq!(c.server, "https://[fd00::1]:443");
        assert_eq!(c.token.unwrap().expose(), "pod-token");
        assert_eq!(c.ca_pem.unwrap(), b"CA");
        let e = resolve(env(&[("HOME", "/nonexistent".to_string())]), sa.path()).unwrap_err();
        assert!(e.starts_with("no Kubernetes credentials"), "{e}");
    }
}
