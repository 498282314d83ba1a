//! Temporal's `tls` block as every store reads it: the file-or-inline PEM material
//! (`caFile`/`caData`, `certFile`/`certData`, `keyFile`/`keyData`) under Temporal's rules,
//! a rustls client config for the stores that take one, and one-line explanations of
//! failed handshakes. No secret (a key's bytes) ever appears in an error.

use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::persistence::Tls;

/// The PEM bytes of a `tls` block, each read from its file or decoded from its inline
/// base64 form, and checked to hold what it should.
#[derive(Default)]
pub struct TlsMaterial {
    /// The CA certificates to trust (PEM); `None` when neither caFile nor caData is set.
    pub ca: Option<Vec<u8>>,
    /// The client certificate chain and its private key (PEM), set together or not at all.
    pub identity: Option<Identity>,
}

pub struct Identity {
    pub cert: Vec<u8>,
    /// Never printed: Debug is not derived.
    pub key: Vec<u8>,
}

impl TlsMaterial {
    /// Reads the block as Temporal does (`common/auth/tls_config_helper.go`): a file and
    /// its inline form together are refused, as are a certificate without a key and a key
    /// without a certificate. `block` names the block in errors (`sql.tls`).
    pub fn load(tls: &Tls, block: &str) -> Result<Self, String> {
        let ca = artifact(block, ("caFile", tls.ca_file.as_deref()), ("caData", tls.ca_data.as_deref()))?;
        let cert = artifact(block, ("certFile", tls.cert_file.as_deref()), ("certData", tls.cert_data.as_deref()))?;
        let key = artifact(
            block,
            ("keyFile", tls.key_file.as_deref()),
            ("keyData", tls.key_data.as_ref().map(|k| k.expose())),
        )?;
        if let Some((field, pem)) = &ca {
            certificates(block, field, pem)?;
        }
        let identity = match (cert, key) {
            (Some((cert_field, cert)), Some((key_field, key))) => {
                certificates(block, cert_field, &cert)?;
                PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|_| format!("{block}.{key_field} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"))?;
                Some(Identity { cert, key })
            }
            (None, None) => None,
            (Some((field, _)), None) => {
                return Err(format!(
                    "{block}.{field} is set without keyFile or keyData: set the client key too, or neither"
                ));
            }
            (None, Some((field, _))) => {
                return Err(format!(
                    "{block}.{field} is set without certFile or certData: set the client certificate too, or neither"
                ));
            }
        };
        Ok(Self { ca: ca.map(|(_, pem)| pem), identity })
    }
}

/// One artifact from its file or its base64 inline form, with the field it came from.
fn artifact(
    block: &str,
    (file_field, file): (&'static str, Option<&str>),
    (data_field, data): (&'static str, Option<&str>),
) -> Result<Option<(&'static str, Vec<u8>)>, String> {
    let file = file.map(str::trim).filter(|f| !f.is_empty());
    let data = data.map(str::trim).filter(|d| !d.is_empty());
    match (file, data) {
        (Some(_), Some(_)) => Err(format!("{block}: {file_field} and {data_field} are both set; keep one")),
        (Some(path), None) => std::fs::read(path).map(|bytes| Some((file_field, bytes))).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("{block}.{file_field} {path:?} does not exist")
            } else {
                format!("{block}.{file_field} {path:?} cannot be read: {e}")
            }
        }),
        (None, Some(data)) => {
            // Temporal decodes with Go's StdEncoding; line breaks a YAML block scalar
            // leaves in a long value are dropped first.
            let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(compact).map(|bytes| Some((data_field, bytes))).map_err(
                |_| {
                    format!("{block}.{data_field} is not base64 (it holds the PEM file base64-encoded, as in Temporal)")
                },
            )
        }
        (None, None) => Ok(None),
    }
}

fn certificates(block: &str, field: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{block}.{field} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{block}.{field} holds no PEM certificate"));
    }
    Ok(certs)
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Chain to a trusted CA, validity dates and the host name.
    Full,
    /// Chain and dates, any host name (Temporal's `enableHostVerification: false` with a CA).
    ChainOnly,
    /// Nothing: encrypted, not authenticated (Temporal's `enableHostVerification: false`
    /// without a CA). Callers warn.
    Nothing,
}

/// A rustls client config for this material, on aws-lc-rs. With `Full` or `ChainOnly`
/// a CA is required: vismig does not read a system trust store for these stores.
/// `server_name` (Temporal's `serverName`) is the name the certificate is checked
/// against in place of the host dialled.
pub fn client_config(
    material: &TlsMaterial,
    verify: Verify,
    server_name: Option<&str>,
    block: &str,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = match verify {
        Verify::Nothing => Checked { webpki: None, name: NameCheck::Skip, provider: provider.clone() },
        Verify::Full | Verify::ChainOnly => {
            let ca = material.ca.as_deref().ok_or_else(|| {
                format!("{block}.caFile or caData is required to verify the server's certificate (vismig reads no system trust store for this store)")
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(block, "caFile/caData", ca)? {
                roots.add(cert).map_err(|e| format!("{block}.caFile/caData: {e}"))?;
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("{block}: {e}"))?;
            let name = match (verify, server_name.map(str::trim).filter(|n| !n.is_empty())) {
                (Verify::ChainOnly, _) => NameCheck::Skip,
                (_, Some(name)) => NameCheck::As(
                    rustls::pki_types::ServerName::try_from(name.to_string())
                        .map_err(|_| format!("{block}.serverName {name:?} is not a host name or IP address"))?,
                ),
                (_, None) => NameCheck::Dialled,
            };
            Checked { webpki: Some(webpki), name, provider: provider.clone() }
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{block}: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    match &material.identity {
        Some(id) => {
            let certs = certificates(block, "certFile/certData", &id.cert)?;
            let key = PrivateKeyDer::from_pem_slice(&id.key)
                .map_err(|_| format!("{block}.keyFile/keyData holds no PEM private key"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("{block}: the client certificate and key do not go together ({e})"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The one line preflight logs when a store is encrypted but its server not verified.
pub fn unverified_warning(store: &str, block: &str) -> String {
    format!(
        "store {store:?}: {block}.enabled without caFile/caData or enableHostVerification: the connection is encrypted but the server's certificate is not verified (Temporal's meaning of these settings); set {block}.caFile (or caData) to the CA that signed it to verify it"
    )
}

/// What went wrong in a TLS handshake, said with its fix, when the error (or one it
/// wraps) is a rustls error about the server's certificate or the server's alert.
/// `block` names the config block to fix (`sql.tls`).
pub fn explain(error: &(dyn std::error::Error + 'static), block: &str) -> Option<String> {
    find_rustls(error).map(|tls| fix_for(tls, block))
}

/// The same for a driver that keeps only the text of the error (the Cassandra driver
/// reports a failed connection pool as a message): rustls's own wording, in its short
/// (`UnknownIssuer`) and its longer (`certificate not valid for name …`) forms.
pub fn explain_text(said: &str, block: &str) -> Option<String> {
    use rustls::CertificateError as C;
    let certificate = said.split("invalid peer certificate: ").nth(1)?;
    let error = [
        ("UnknownIssuer", C::UnknownIssuer),
        ("BadSignature", C::BadSignature),
        ("NotValidForName", C::NotValidForName),
        ("certificate not valid for name", C::NotValidForName),
        ("Expired", C::Expired),
        ("certificate expired", C::Expired),
        ("NotValidYet", C::NotValidYet),
        ("certificate not valid yet", C::NotValidYet),
    ]
    .into_iter()
    .find(|(name, _)| certificate.starts_with(name))
    .map(|(_, e)| e)
    .unwrap_or_else(|| C::Other(rustls::OtherError(Arc::new(std::io::Error::other(certificate.to_string())))));
    Some(fix_for(&rustls::Error::InvalidCertificate(error), block))
}

fn fix_for(tls: &rustls::Error, block: &str) -> String {
    use rustls::CertificateError as C;
    match tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the server's certificate is not signed by a CA vismig trusts: set {block}.caFile (or caData) to the CA that signed it"
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the server's certificate is not issued for the host vismig connects to: connect by a name the certificate holds (or set {block}.serverName to one), or set {block}.enableHostVerification: false to check the CA only"
        ),
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired: renew it on the server".to_string()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet: check the clocks of the server and of this host".to_string()
        }
        rustls::Error::InvalidCertificate(other) => {
            format!(
                "the server's certificate was refused ({other:?}): check the server's certificate and {block}.caFile"
            )
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the server ended the TLS handshake ({alert:?}): it probably requires a client certificate: set {block}.certFile and keyFile (or certData and keyData)"
        ),
        other => format!("TLS handshake failed ({other}): check {block}"),
    }
}

/// The rustls error inside an error chain. `io::Error` needs its own look: its
/// `source()` skips the error it wraps, which is where rustls puts itself.
fn find_rustls<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(tls) = find_rustls(inner)
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// Which name the server's certificate must hold.
#[derive(Debug)]
enum NameCheck {
    /// The host vismig dialled.
    Dialled,
    /// Temporal's `serverName`.
    As(rustls::pki_types::ServerName<'static>),
    /// Any: the chain and dates are still checked.
    Skip,
}

/// The server-certificate check the config asks for: webpki's (chain, dates, name) with
/// the name chosen by the config, or none at all (`webpki: None`). The handshake's
/// signatures are always checked against the certificate presented, so even an
/// unverified connection is encrypted to whoever holds that certificate's key.
#[derive(Debug)]
struct Checked {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    name: NameCheck,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        let Some(webpki) = &self.webpki else {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        };
        let name = match &self.name {
            NameCheck::As(name) => name,
            _ => server_name,
        };
        match webpki.verify_server_cert(end_entity, intermediates, name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }))
                if matches!(self.name, NameCheck::Skip) =>
            {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUJ4Fq3pV1\n-----END CERTIFICATE-----\n";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn file_and_data_of_one_artifact_are_refused_naming_both() {
        let tls = Tls { enabled: true, ca_file: Some("/x".into()), ca_data: Some(b64(CERT)), ..Tls::default() };
        let e = TlsMaterial::load(&tls, "sql.tls").err().unwrap();
        assert_eq!(e, "sql.tls: caFile and caData are both set; keep one");
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let tls = Tls { enabled: true, cert_data: Some(b64(CERT)), ..Tls::default() };
        let e = TlsMaterial::load(&tls, "cassandra.tls").err().unwrap();
        assert!(e.starts_with("cassandra.tls.certData is set without keyFile or keyData"), "{e}");
    }

    #[test]
    fn bad_inline_data_names_the_field_and_never_shows_the_value() {
        let tls = Tls {
            enabled: true,
            cert_data: Some(b64(CERT)),
            key_data: Some(Secret::new("c2VjcmV0LWtleQ==?!")),
            ..Tls::default()
        };
        let e = TlsMaterial::load(&tls, "sql.tls").err().unwrap();
        assert!(e.starts_with("sql.tls.keyData is not base64"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let tls = Tls { key_data: Some(Secret::new(b64("secret-key"))), ..tls };
        let e = TlsMaterial::load(&tls, "sql.tls").err().unwrap();
        assert!(e.starts_with("sql.tls.keyData holds no PEM private key"), "{e}");
        assert!(!e.contains("secret-key"), "{e}");
    }

    #[test]
    fn a_missing_file_names_field_and_path() {
        let tls = Tls { enabled: true, ca_file: Some("/nonexistent/ca.pem".into()), ..Tls::default() };
        let e = TlsMaterial::load(&tls, "sql.tls").err().unwrap();
        assert_eq!(e, "sql.tls.caFile \"/nonexistent/ca.pem\" does not exist");
    }

    #[test]
    fn inline_data_may_be_wrapped_over_lines() {
        let wrapped: String = b64("not a certificate")
            .chars()
            .collect::<Vec<_>>()
            .chunks(8)
            .map(|c| c.iter().collect::<String>() + "\n")
            .collect();
        let tls = Tls { enabled: true, ca_data: Some(wrapped), ..Tls::default() };
        let e = TlsMaterial::load(&tls, "sql.tls").err().unwrap();
        assert_eq!(e, "sql.tls.caData holds no PEM certificate");
    }

    #[test]
    fn verification_needs_a_ca() {
        let e = client_config(&TlsMaterial::default(), Verify::Full, None, "cassandra.tls").err().unwrap();
        assert!(e.starts_with("cassandra.tls.caFile or caData is required"), "{e}");
        assert!(client_config(&TlsMaterial::default(), Verify::Nothing, None, "cassandra.tls").is_ok());
    }

    #[test]
    fn handshake_errors_kept_as_text_are_explained() {
        let said = "Control connection pool error: The pool is broken; Last connection failed with: invalid peer certificate: certificate not valid for name \"127.0.0.3\"; certificate is only valid for IpAddress(127.0.0.1)";
        let fix = explain_text(said, "cassandra.tls").unwrap();
        assert!(fix.starts_with("the server's certificate is not issued for the host"), "{fix}");
        let fix = explain_text("…: invalid peer certificate: UnknownIssuer", "cassandra.tls").unwrap();
        assert!(fix.contains("set cassandra.tls.caFile"), "{fix}");
        assert_eq!(explain_text("Connection refused (os error 111)", "cassandra.tls"), None);
    }

    #[test]
    fn handshake_errors_inside_io_errors_are_explained() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let said = explain(&io, "sql.tls").unwrap();
        assert!(said.contains("set sql.tls.caFile (or caData)"), "{said}");
        let plain = std::io::Error::other("connection refused");
        assert_eq!(explain(&plain, "sql.tls"), None);
    }
}
