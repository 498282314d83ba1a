//! Reaching a PostgreSQL or MySQL server: `sql.connectAddr` as host and port, the connect
//! timeout, and the preflight's probe that says why a server cannot be reached.

use super::{MysqlLogin, classify_login};
use crate::config::persistence::Tls;
use crate::store::StoreError;
use crate::tls::{TlsMaterial, Verify};

/// How long vismig waits for a PostgreSQL or MySQL server to accept a connection, in
/// preflight and for each connection of the pool (Temporal's SQL config has no such
/// setting). Past it, preflight fails with one line saying so, and a run in progress
/// backs off and tries again: `/readyz` says so within this time of a server going away.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens one connection outside the pool and closes it again, so that preflight can say
/// why a server cannot be reached (refused, no answer, wrong password) instead of the
/// pool's "timed out", and says so within `CONNECT_TIMEOUT`. `login` (MySQL/MariaDB)
/// says how vismig logged in, which narrows an access-denied line.
pub async fn probe<O, C>(options: &O, context: &str, login: Option<MysqlLogin>) -> Result<(), StoreError>
where
    O: sqlx::ConnectOptions<Connection = C>,
    C: sqlx::Connection,
{
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(classify_login(context, e, login)),
        Err(_) => Err(StoreError::Transient(format!(
            "{context}: no answer within {} s (is the server up, and is sql.connectAddr right?)",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// `sql.connectAddr` as host and port: `host:port`, `[v6]:port`, or a bare host or IPv6
/// address (then `default_port`, the dialect's own).
pub fn parse_address(addr: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || format!("sql.connectAddr {addr:?} is not host:port");
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, rest) = rest.split_once(']').ok_or_else(bad)?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if rest.is_empty() => default_port,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match addr.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Ok((addr.to_string(), default_port)), // bare IPv6
        Some((host, port)) if !host.is_empty() => Ok((host.to_string(), port.parse().map_err(|_| bad())?)),
        Some(_) => Err(bad()),
        None => Ok((addr.to_string(), default_port)),
    }
}

/// `sql.tls` read once for PostgreSQL and MySQL: the PEM material (files or inline data)
/// and how much of the server's certificate to check. Temporal's plugins check the name
/// only with `enableHostVerification`; with a CA vismig checks the chain (PostgreSQL's
/// drivers do too; Temporal's MySQL driver checks nothing then); with neither, the
/// connection is encrypted but not verified, and preflight says so in one warning line.
pub fn sql_tls(store: &str, host: &str, tls: &Tls) -> anyhow::Result<(TlsMaterial, Verify)> {
    let material = TlsMaterial::load(tls, SQL_TLS).map_err(|e| anyhow::anyhow!("store {store:?}: {e}"))?;
    let host_verification = tls.enable_host_verification == Some(true);
    if let Some(name) = tls.server_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        // sqlx checks the certificate against the host it dials and has no override.
        if host_verification && !name.eq_ignore_ascii_case(host) {
            anyhow::bail!(
                "store {store:?}: {SQL_TLS}.serverName {name:?} differs from sql.connectAddr's host {host:?}: vismig checks the SQL server's certificate against the host it connects to; put {name:?} in connectAddr, or remove serverName"
            );
        }
    }
    let verify = if host_verification {
        Verify::Full
    } else if material.ca.is_some() {
        Verify::ChainOnly
    } else {
        tracing::warn!("{}", crate::tls::unverified_warning(store, SQL_TLS));
        Verify::Nothing
    };
    Ok((material, verify))
}

/// The config block TLS errors of SQL stores name.
pub const SQL_TLS: &str = "sql.tls";

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// A `tls` block with an inline CA (the PEM's content is not checked here).
    fn with_ca(host_verification: Option<bool>, server_name: Option<&str>) -> Tls {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        Tls {
            enabled: true,
            ca_data: Some(base64::engine::general_purpose::STANDARD.encode(pem)),
            enable_host_verification: host_verification,
            server_name: server_name.map(str::to_string),
            ..Tls::default()
        }
    }

    #[test]
    fn sql_tls_checks_as_much_as_the_block_says() {
        let verify = |tls: &Tls| sql_tls("s", "db.example", tls).map(|(_, v)| v).map_err(|e| e.to_string());
        assert_eq!(verify(&with_ca(Some(true), None)), Ok(Verify::Full));
        assert_eq!(verify(&with_ca(None, None)), Ok(Verify::ChainOnly));
        assert_eq!(verify(&Tls { enabled: true, ..Tls::default() }), Ok(Verify::Nothing));
        // serverName: the host dialled is accepted, another one refused naming the field
        // when the name is checked, and irrelevant when it is not.
        assert_eq!(verify(&with_ca(Some(true), Some("DB.example"))), Ok(Verify::Full));
        let refused = verify(&with_ca(Some(true), Some("other.example"))).unwrap_err();
        assert!(refused.starts_with("store \"s\": sql.tls.serverName \"other.example\" differs"), "{refused}");
        assert_eq!(verify(&with_ca(None, Some("other.example"))), Ok(Verify::ChainOnly));
    }

    #[test]
    fn connect_addresses() {
        assert_eq!(parse_address("127.0.0.1:3306", 3306).unwrap(), ("127.0.0.1".into(), 3306));
        assert_eq!(parse_address("db.example", 3306).unwrap(), ("db.example".into(), 3306));
        assert_eq!(parse_address("[::1]:3307", 3306).unwrap(), ("::1".into(), 3307));
        assert_eq!(parse_address("::1", 3306).unwrap(), ("::1".into(), 3306));
        for bad in ["", "host:port", ":3306", "[::1]x"] {
            assert!(parse_address(bad, 3306).unwrap_err().contains("is not host:port"), "{bad}");
        }
        // PostgreSQL's default port, and the same forms.
        assert_eq!(parse_address("db:6432", 5432), Ok(("db".into(), 6432)));
        assert_eq!(parse_address("db", 5432), Ok(("db".into(), 5432)));
        assert_eq!(parse_address("[::1]:5432", 5432), Ok(("::1".into(), 5432)));
        assert!(parse_address("db:port", 5432).is_err());
        assert!(parse_address("", 5432).is_err());
    }
}
