//! PostgreSQL and MariaDB secured as production ones are (tests/services, "Secured
//! servers"): vismig reads and writes them over TLS with Temporal's own `tls` fields,
//! in their file and inline forms, as a password user and as a client-certificate user;
//! and each refusal (unknown CA, wrong host name, expired certificate (through a TLS
//! front of the real server, beside the same front with the valid certificate), plain text to a
//! TLS-only server, wrong password, no client certificate) is exit 1 and one line that
//! names the store and the fix, with no secret in it.

mod common;

use common::tls::*;
use common::*;

const RECORDS: u64 = 600;

fn mysql_tls_addr() -> String {
    format!("{}:{}", env("VISMIG_TEST_MYSQL_HOST", "127.0.0.1"), env("VISMIG_TEST_MYSQL_TLS_PORT", "3307"))
}

/// Seeds the primary over its secured connection, backfills into the secondary over its
/// own, and verifies: every record there, counts equal. No warning about an unverified
/// server: both sides check the CA and the host name.
async fn seed_copy_verify(primary: String, secondary: String) {
    let work = Work::with_stores(Some(primary), Some(secondary), "  batchSize: 200\n  concurrency: 2\n").await;
    let out = work.run(&["seed", "--records", &RECORDS.to_string(), "--seed", "21"]);
    assert!(out.status.success(), "seed: {}", text(&out));
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("{RECORDS} inserted")), "{log}");
    assert!(!log.contains("not verified"), "{log}");
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len() as u64, RECORDS);
    assert_eq!(p, s, "every field of every record is the same in both stores");
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `vismig verify` with `primary` as the primary and a SQLite secondary: preflight of
/// the primary is what is tested.
async fn verify_against(primary: String) -> std::process::Output {
    let work = Work::with_stores(Some(primary), None, "").await;
    work.run(&["verify"])
}

// --- PostgreSQL ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn postgres_password_user_to_certificate_user_over_verified_tls() {
    if !service_up("postgres") {
        return;
    }
    let (src, dst) = (db_name("tls_pg_src"), db_name("tls_pg_dst"));
    reset_db("postgres", &src, "advanced");
    reset_db("postgres", &dst, "advanced");
    let (user, password) = tls_user();
    let primary = sql_store("postgres12", &src, &pg_addr(), &user, Some(&password), &tls_files_verified());
    let secondary = sql_store("postgres12", &dst, &pg_addr(), &cert_user(), None, &tls_inline_client_cert());
    seed_copy_verify(primary, secondary).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_tls_without_a_ca_is_encrypted_and_says_it_is_not_verified() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("tls_pg_noca");
    reset_db("postgres", &db, "advanced");
    let (user, password) = tls_user();
    // The user is allowed over TLS only (hostssl): the run passing proves TLS was used.
    let out =
        verify_against(sql_store("postgres12", &db, &pg_addr(), &user, Some(&password), "{ enabled: true }")).await;
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("not verified")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("set sql.tls.caFile (or caData)"), "{}", warnings[0]);
}

/// The refusals both SQL servers make alike: unknown CA, wrong host name (the real
/// server dialled at an address its certificate does not name, then the same with
/// `enableHostVerification` off, which passes: the CA is still checked, the name not),
/// wrong password, and the certificate user without a certificate (`no_cert_fix`).
async fn common_refusals(plugin: &str, db: &str, addr: &str, no_cert_fix: &str) {
    let (user, password) = tls_user();
    let store =
        |addr: &str, user: &str, password: Option<&str>, tls: &str| sql_store(plugin, db, addr, user, password, tls);
    let secrets = [password.as_str()];

    let tls = format!("{{ enabled: true, caFile: \"{}\", enableHostVerification: true }}", tls_file("other-ca.crt"));
    let out = verify_against(store(addr, &user, Some(&password), &tls)).await;
    assert_one_line_refusal(&out, "not signed by a CA vismig trusts: set sql.tls.caFile", &secrets);

    let other = forward_from_other_address(addr).await;
    let out = verify_against(store(&other, &user, Some(&password), &tls_files_verified())).await;
    assert_one_line_refusal(&out, "not issued for the host vismig connects to", &secrets);
    let tls = format!("{{ enabled: true, caFile: \"{}\" }}", tls_file("ca.crt"));
    let out = verify_against(store(&other, &user, Some(&password), &tls)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = verify_against(store(addr, &user, Some("not-the-password-x9"), &tls_files_verified())).await;
    assert_one_line_refusal(&out, "check sql.user and sql.password", &["not-the-password-x9", &password]);

    let out = verify_against(store(addr, &cert_user(), None, &tls_files_verified())).await;
    assert_one_line_refusal(&out, no_cert_fix, &secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_refusals_are_one_line_with_the_fix() {
    if !service_up("postgres") {
        return;
    }
    let db = db_name("tls_pg_refuse");
    reset_db("postgres", &db, "advanced");
    let addr = pg_addr();
    common_refusals("postgres12", &db, &addr, "set sql.tls.certFile and keyFile").await;

    // Expired certificate: a TLS front of the real server; with the valid certificate
    // the same front works, so only the certificate differs.
    let (user, password) = (env("VISMIG_TEST_PG_USER", "temporal"), env("VISMIG_TEST_PG_PASSWORD", "temporal"));
    let through = |front: &str| sql_store("postgres12", &db, front, &user, Some(&password), &tls_files_verified());
    let out = verify_against(through(&tls_front(&addr, "server", Handshake::Postgres).await)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = verify_against(through(&tls_front(&addr, "expired", Handshake::Postgres).await)).await;
    assert_one_line_refusal(&out, "the server's certificate has expired: renew it on the server", &[&password]);

    // Plain text for a user the server accepts over TLS only.
    let (user, password) = tls_user();
    let out = verify_against(sql_store("postgres12", &db, &addr, &user, Some(&password), "")).await;
    assert_one_line_refusal(&out, "over TLS only: set sql.tls.enabled: true", &[&password]);
}

// --- MariaDB (the secured instance) -------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_password_user_to_x509_user_over_verified_tls() {
    if !service_up("mariadb") {
        return;
    }
    let (src, dst) = (db_name("tls_my_src"), db_name("tls_my_dst"));
    reset_db("mariadb-tls", &src, "advanced");
    reset_db("mariadb-tls", &dst, "advanced");
    let (user, password) = tls_user();
    let primary = sql_store("mysql8", &src, &mysql_tls_addr(), &user, Some(&password), &tls_files_verified());
    let secondary = sql_store("mysql8", &dst, &mysql_tls_addr(), &cert_user(), None, &tls_inline_client_cert());
    seed_copy_verify(primary, secondary).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_refusals_are_one_line_with_the_fix() {
    if !service_up("mariadb") {
        return;
    }
    let db = db_name("tls_my_refuse");
    reset_db("mariadb-tls", &db, "advanced");
    let addr = mysql_tls_addr();
    common_refusals("mysql8", &db, &addr, "no password and no client certificate was sent: for a user created with REQUIRE X509 set sql.tls.certFile and keyFile").await;

    // Expired certificate: a TLS front of the real server speaking MariaDB's handshake
    // (greeting relayed, SSLRequest taken, TLS on both legs); with the valid certificate
    // the same front works, so only the certificate differs.
    let (user, password) = tls_user();
    let through = |front: &str| sql_store("mysql8", &db, front, &user, Some(&password), &tls_files_verified());
    let out = verify_against(through(&tls_front(&addr, "server", Handshake::Mysql).await)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = verify_against(through(&tls_front(&addr, "expired", Handshake::Mysql).await)).await;
    assert_one_line_refusal(&out, "the server's certificate has expired: renew it on the server", &[&password]);

    // Plain text to require_secure_transport, the user REQUIRE SSL.
    let out = verify_against(sql_store("mysql8", &db, &addr, &user, Some(&password), "")).await;
    let line = assert_one_line_refusal(&out, "the login went in plain text", &[&password]);
    assert!(line.contains("set sql.tls.enabled: true and sql.tls.caFile"), "{line}");

    // A wrong password over TLS: the line no longer lists plain text or REQUIRE SSL.
    let out =
        verify_against(sql_store("mysql8", &db, &addr, &user, Some("not-the-password-x9"), &tls_files_verified()))
            .await;
    let line = assert_one_line_refusal(&out, "check sql.user and sql.password", &[&password, "not-the-password-x9"]);
    assert!(!line.contains("plain text") && !line.contains("REQUIRE SSL"), "{line}");
}
