//! Which sqlx errors are worth a retry, which make a store unusable, and which are
//! permanent, for every dialect.

use super::{CONNECT_TIMEOUT, SQL_TLS};
use crate::store::StoreError;

/// Classifies a sqlx error: connection trouble, timeouts and lock contention are worth
/// a retry; a missing table or a refused permission makes the store unusable; anything
/// else (bad SQL, schema, a value the column cannot hold) is permanent.
pub fn classify(context: &str, e: sqlx::Error) -> StoreError {
    classify_login(context, e, None)
}

/// `classify` for an error met while logging in as `login` (MySQL/MariaDB's preflight),
/// which narrows what a 1045 can mean.
pub fn classify_login(context: &str, e: sqlx::Error, login: Option<MysqlLogin>) -> StoreError {
    use sqlx::Error as E;
    let unusable = match &e {
        E::Database(db) => {
            // PostgreSQL: 42P01 undefined table, 42501 insufficient privilege, 3F000 no
            // such schema. MySQL/MariaDB: 1146 no such table, 1142 command denied on a
            // table, 1044 access denied to the database.
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let mysql = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| matches!(e.number(), 1044 | 1142 | 1146));
            let postgres = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some()
                && matches!(code.as_str(), "42P01" | "42501" | "3F000");
            mysql || postgres
        }
        _ => false,
    };
    // A refused certificate or a TLS-only server: the same on every try, and the line
    // says what to change.
    if let Some(fix) = fix(&e, login) {
        return StoreError::Unusable(format!("{context}: {fix}"));
    }
    let transient = match &e {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => true,
        E::Tls(_) => false,
        E::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // SQLite: 5 BUSY, 6 LOCKED (and their extended codes, low byte). Only for
            // SQLite's own errors: PostgreSQL's 42501 (permission denied) has 5 as its
            // low byte too, and was retried for ten minutes as if the table were busy.
            // PostgreSQL: 40001 serialization, 40P01 deadlock, 53xxx resources, 57P0x shutdown, 08xxx connection.
            // MySQL/MariaDB: 1205 lock wait timeout, 1213 deadlock, 2006/2013 gone away/lost.
            let sqlite_busy = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && code.parse::<i64>().map(|c| matches!(c & 0xff, 5 | 6)).unwrap_or(false)
                && !code.starts_with('0');
            sqlite_busy
                || code == "40001"
                || code == "40P01"
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code.starts_with("08")
                || matches!(code.as_str(), "1205" | "1213" | "2006" | "2013")
                || mysql_transient(db.as_ref())
        }
        _ => false,
    };
    let message = match e {
        // The pool retries refused connections until its deadline and keeps no reason.
        E::PoolTimedOut => format!(
            "{context}: no connection to the server within {} s (down or unreachable, or every connection of sql.maxConns busy)",
            CONNECT_TIMEOUT.as_secs()
        ),
        e => format!("{context}: {e}"),
    };
    if transient {
        StoreError::Transient(message)
    } else if unusable {
        StoreError::Unusable(message)
    } else {
        StoreError::Permanent(message)
    }
}

/// What to change for an error that no retry cures: a TLS handshake the server or
/// vismig refused, a login the server refused. The server's own words are kept.
fn fix(e: &sqlx::Error, login: Option<MysqlLogin>) -> Option<String> {
    use sqlx::Error as E;
    let tls = match e {
        E::Tls(inner) => crate::tls::explain(inner.as_ref(), SQL_TLS).or_else(|| Some(inner.to_string())),
        E::Io(io) => crate::tls::explain(io, SQL_TLS),
        _ => None,
    };
    if let Some(tls) = tls {
        return Some(format!("TLS: {tls}"));
    }
    let E::Database(db) = e else { return None };
    let code = db.code().map(|c| c.to_string()).unwrap_or_default();
    let said = db.message();
    let fix = if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        match my.number() {
            // Access denied: a wrong password, or a user that REQUIRE SSL / X509 without it.
            1045 => access_denied_fix(login, said),
            // ER_SECURE_TRANSPORT_REQUIRED (require_secure_transport = ON).
            3159 => "the server accepts TLS connections only: set sql.tls.enabled: true and sql.tls.caFile",
            _ => return None,
        }
    } else {
        match code.as_str() {
            "28P01" => "check sql.user and sql.password",
            "28000" if said.contains("no encryption") => {
                "the server accepts this user over TLS only: set sql.tls.enabled: true and sql.tls.caFile"
            }
            "28000" if said.contains("certificate") => {
                "the server authenticates this user by client certificate: set sql.tls.certFile and keyFile (or certData and keyData) to a certificate whose CN is the user"
            }
            "28000" => {
                "the server's pg_hba.conf refuses this user, host or database: check sql.user, sql.databaseName and sql.tls"
            }
            _ => return None,
        }
    };
    Some(format!("{said}: {fix}"))
}

/// The fix for MySQL/MariaDB's 1045 when nothing else is known: the server answers a
/// wrong password, a plain-text login to `require_secure_transport` or to a user
/// `REQUIRE SSL`, and a missing client certificate for a user `REQUIRE X509` alike.
const ACCESS_DENIED_FIX: &str = "check sql.user and sql.password; a user created with REQUIRE SSL or REQUIRE X509 also needs sql.tls (with certFile and keyFile for X509)";

/// How vismig logged in to a MySQL/MariaDB server, which narrows what a 1045 can mean.
#[derive(Clone, Copy, Debug)]
pub struct MysqlLogin {
    /// Over TLS (a `tls` block, or the driver's `tls` parameter).
    pub tls: bool,
    /// With a client certificate (`certFile`/`certData`).
    pub cert: bool,
}

/// The fix for a 1045, narrowed by what vismig sent (`login`, when known): the causes
/// the login rules out are not listed. The server's own words (`said`: `using password:
/// YES/NO`) say whether a password went.
fn access_denied_fix(login: Option<MysqlLogin>, said: &str) -> &'static str {
    let Some(login) = login else { return ACCESS_DENIED_FIX };
    let password = !said.contains("using password: NO");
    match (login.tls, login.cert, password) {
        (false, _, _) => {
            "the login went in plain text, which a server with require_secure_transport or a user created with REQUIRE SSL or X509 refuses with this same error: set sql.tls.enabled: true and sql.tls.caFile; if the server takes plain text, check sql.user and sql.password"
        }
        (true, false, false) => {
            "no password and no client certificate was sent: for a user created with REQUIRE X509 set sql.tls.certFile and keyFile (or certData and keyData), otherwise set sql.password"
        }
        (true, false, true) => {
            "check sql.user and sql.password (a user created with REQUIRE X509 also needs sql.tls.certFile and keyFile)"
        }
        (true, true, _) => {
            "check sql.user and sql.password, and that sql.tls.certFile is the certificate the user's REQUIRE asks for"
        }
    }
}

/// MySQL/MariaDB report most errors with SQLSTATE HY000, so the error number decides:
/// 1205 lock wait timeout, 1213 deadlock, 1040 too many connections, 1053 shutdown,
/// 1290/1836 read-only (a failover in progress), 1927 connection killed (MariaDB),
/// 3572 NOWAIT lock, 4031 idle session closed.
fn mysql_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some_and(|e| matches!(e.number(), 1040 | 1053 | 1205 | 1213 | 1290 | 1836 | 1927 | 3572 | 4031))
}

#[cfg(test)]
mod access_denied_tests {
    use super::{ACCESS_DENIED_FIX, MysqlLogin, access_denied_fix};

    fn line(password: &str, tls: bool, cert: bool) -> String {
        let said = format!("Access denied for user 'u'@'h' (using password: {password})");
        let fix = access_denied_fix(Some(MysqlLogin { tls, cert }), &said);
        format!("store \"p\" (mysql x/y): connecting to x: {said}: {fix}")
    }

    #[test]
    fn a_1045_lists_only_the_causes_the_login_leaves_open() {
        let plain = line("YES", false, false);
        assert!(plain.contains("went in plain text") && plain.contains("set sql.tls.enabled: true"), "{plain}");
        let no_cert = line("NO", true, false);
        assert!(no_cert.contains("no password and no client certificate was sent"), "{no_cert}");
        assert!(no_cert.contains("set sql.tls.certFile and keyFile") && !no_cert.contains("plain text"), "{no_cert}");
        let password = line("YES", true, false);
        assert!(password.starts_with("store \"p\"") && password.contains("check sql.user and sql.password"));
        assert!(!password.contains("plain text") && !password.contains("REQUIRE SSL"), "{password}");
        let with_cert = line("YES", true, true);
        assert!(with_cert.contains("the certificate the user's REQUIRE asks for"), "{with_cert}");
        for l in [plain, no_cert, password, with_cert] {
            assert!(!l.contains(ACCESS_DENIED_FIX), "{l}");
        }
        // A login not known (any error but the preflight's) keeps the fix that lists every cause.
        assert_eq!(access_denied_fix(None, "Access denied (using password: YES)"), ACCESS_DENIED_FIX);
    }
}
