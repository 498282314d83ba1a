//! The test CA of tests/services (tls.sh) for the TLS tests: its files, their inline
//! base64 forms as Temporal's `caData`/`certData`/`keyData` take them, TCP forwarders
//! that make vismig dial a name the server's certificate does not hold, and a check that
//! a refusal is one line naming the store and the fix, with no secret in it, and TLS
//! fronts ([`tls_front`]) that present a certificate the real server cannot (expired,
//! for another host) in each store's own TLS handshake.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A file of the test CA directory (`ca.crt`, `client.key`, …).
pub fn tls_file(name: &str) -> String {
    let dir = std::env::var("VISMIG_TEST_TLS_DIR").unwrap_or_else(|_| "/tmp/vismig-services/tls".into());
    PathBuf::from(dir).join(name).display().to_string()
}

/// A file of the test CA as Temporal's inline `*Data` fields hold it: base64 of the PEM.
pub fn tls_data(name: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(tls_file(name)).unwrap())
}

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The password user of the secured servers, and its password.
pub fn tls_user() -> (String, String) {
    (env("VISMIG_TEST_TLS_USER", "vismig_tls"), env("VISMIG_TEST_TLS_PASSWORD", "vismig-tls-secret"))
}

/// The user that logs in by client certificate.
pub fn cert_user() -> String {
    env("VISMIG_TEST_TLS_CLIENT_USER", "vismig_cert")
}

/// A `sql:` block with a user, an optional password and a `tls` flow map ("" = none).
pub fn sql_store(plugin: &str, db: &str, addr: &str, user: &str, password: Option<&str>, tls: &str) -> String {
    let password = password.map(|p| format!(", password: \"{p}\"")).unwrap_or_default();
    let tls = if tls.is_empty() { String::new() } else { format!(", tls: {tls}") };
    format!("{{ pluginName: {plugin}, databaseName: {db}, connectAddr: \"{addr}\", user: {user}{password}{tls} }}")
}

/// `tls` with files: the CA, the host name checked.
pub fn tls_files_verified() -> String {
    format!("{{ enabled: true, caFile: \"{}\", enableHostVerification: true }}", tls_file("ca.crt"))
}

/// `tls` with files: the CA, the host name checked, and the test client certificate (the
/// secured Cassandra node requires one).
pub fn tls_files_client_cert() -> String {
    format!(
        "{{ enabled: true, caFile: \"{}\", certFile: \"{}\", keyFile: \"{}\", enableHostVerification: true }}",
        tls_file("ca.crt"),
        tls_file("client.crt"),
        tls_file("client.key")
    )
}

/// `tls` inline (caData, certData, keyData): the client certificate of the test CA.
pub fn tls_inline_client_cert() -> String {
    format!(
        "{{ enabled: true, caData: \"{}\", certData: \"{}\", keyData: \"{}\", enableHostVerification: true }}",
        tls_data("ca.crt"),
        tls_data("client.crt"),
        tls_data("client.key")
    )
}

/// Forwards TCP connections from 127.0.0.2 (any port) to `upstream`, bytes untouched:
/// TLS stays end to end with the real server, but vismig dials an address its
/// certificate (127.0.0.1, localhost) does not name.
pub async fn forward_from_other_address(upstream: &str) -> String {
    forward_from("127.0.0.2:0", upstream).await
}

/// The same from a given `ip:port`: a Cassandra driver reaches the nodes it discovers at
/// the port it first dialled, so a forwarder for Cassandra listens on the node's port at
/// another loopback address (one address per test, as the port is fixed).
pub async fn forward_from(listen: &str, upstream: &str) -> String {
    let listener = TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream.to_string();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr.to_string()
}

/// How a client asks a server for TLS, which a [`tls_front`] speaks before its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// TLS from the first byte (Cassandra's client encryption, HTTPS); the front dials
    /// the upstream over TLS too.
    Direct,
    /// PostgreSQL's SSLRequest, answered `S`; the session goes on to the upstream in plain
    /// text, as a TLS-terminating pgbouncer does.
    Postgres,
    /// MySQL/MariaDB's: the server's greeting is relayed, the client's SSLRequest packet
    /// is taken and passed on, then TLS on both legs (the greeting's nonce reaches the
    /// client untouched, so password logins work through the front).
    Mysql,
}

/// The server side of TLS with `cert` (a file stem of the test CA: `server`, `expired`, …).
fn tls_acceptor(cert: &str) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(tls_file(&format!("{cert}.crt"))).unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file(tls_file(&format!("{cert}.key"))).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The front's own client side toward the real server: the test CA, the name `localhost`,
/// and the test client certificate for servers that ask for one.
fn tls_connector() -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(tls_file("ca.crt")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(tls_file("client.crt")).unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file(tls_file("client.key")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One MySQL packet (3-byte little-endian length, sequence id, payload), whole.
async fn mysql_packet(from: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    from.read_exact(&mut header).await?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut packet = header.to_vec();
    packet.resize(4 + len, 0);
    from.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}

/// A TLS front of the real server at `upstream`, as a TLS-terminating balancer is: it
/// speaks the client's side of `handshake`, completes TLS with `cert` (a file stem of the
/// test CA: `server`, `expired`, `wronghost`, …) and relays the session. Listens on
/// `127.0.0.1:0`; returns its `ip:port`.
pub async fn tls_front(upstream: &str, cert: &str, handshake: Handshake) -> String {
    tls_front_at("127.0.0.1:0", upstream, cert, handshake).await
}

/// The same listening on `listen` (a Cassandra driver reaches the nodes it discovers at
/// the port it first dialled: a front for Cassandra listens on the node's port at another
/// loopback address).
pub async fn tls_front_at(listen: &str, upstream: &str, cert: &str, handshake: Handshake) -> String {
    let acceptor = tls_acceptor(cert);
    let connector = tls_connector();
    let listener = TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream.to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, connector, upstream) = (acceptor.clone(), connector.clone(), upstream.clone());
            tokio::spawn(async move {
                let _ = relay(client, &upstream, acceptor, connector, handshake).await;
            });
        }
    });
    addr.to_string()
}

async fn relay(
    mut client: TcpStream,
    upstream: &str,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    handshake: Handshake,
) -> std::io::Result<()> {
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut server = TcpStream::connect(upstream).await?;
    match handshake {
        Handshake::Postgres => {
            // SSLRequest: length 8, code 80877103.
            let mut request = [0u8; 8];
            client.read_exact(&mut request).await?;
            if request != [0, 0, 0, 8, 4, 210, 22, 47] {
                return Ok(());
            }
            client.write_all(b"S").await?;
            let mut tls = acceptor.accept(client).await?;
            tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
        }
        Handshake::Direct => {
            let mut tls = acceptor.accept(client).await?;
            let mut server = connector.connect(name, server).await?;
            tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
        }
        Handshake::Mysql => {
            let greeting = mysql_packet(&mut server).await?;
            client.write_all(&greeting).await?;
            // SSLRequest: a 32-byte handshake response with CLIENT_SSL (0x800) and no more.
            let request = mysql_packet(&mut client).await?;
            if request.len() != 4 + 32 || request[5] & 0x08 == 0 {
                return Ok(());
            }
            server.write_all(&request).await?;
            let mut tls = acceptor.accept(client).await?;
            let mut server = connector.connect(name, server).await?;
            tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
        }
    }
    Ok(())
}

/// A refusal as an operator reads it: exit 1, and the one closing line (`vismig: …`,
/// printed after the same message's log record) names the store (`store "primary"`) and
/// holds `fix`; no secret appears anywhere in the output. Returns that line.
pub fn assert_one_line_refusal(out: &Output, fix: &str, secrets: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("vismig: ")).collect();
    assert_eq!(lines.len(), 1, "one closing line; stderr:\n{stderr}");
    assert!(lines[0].contains("store \"primary\""), "the line names the store: {}", lines[0]);
    assert!(lines[0].contains(fix), "the line says {fix:?}: {}", lines[0]);
    for secret in secrets {
        assert!(!stderr.contains(secret) && !stdout.contains(secret), "a secret is shown; stderr:\n{stderr}");
    }
    eprintln!("refusal: {}", lines[0]);
    lines[0].to_string()
}
