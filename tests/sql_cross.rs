//! Between SQL families: MySQL 8 (MariaDB variant) and PostgreSQL, both ways, every
//! field of every record compared, then verify.

mod common;

use common::*;

async fn copy_and_compare(primary: String, secondary: String, records: u64) {
    let work = Work::with_stores(Some(primary), Some(secondary), "  batchSize: 400\n  concurrency: 3\n").await;
    let out = work.run(&["seed", "--records", &records.to_string(), "--seed", "11"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = work.run(&["backfill"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("{records} inserted")), "{log}");
    let (p, s) = (all_records(source_of(&work, true).await).await, all_records(source_of(&work, false).await).await);
    assert_eq!(p.len() as u64, records);
    assert_eq!(p, s, "every field of every record is the same in both stores");
    let out = work.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_postgres_copies_every_field() {
    if !service_up("mariadb") || !service_up("postgres") {
        return;
    }
    let (m, p) = (db_name("x_my_src"), db_name("x_pg_dst"));
    reset_db("mariadb", &m, "advanced");
    reset_db("postgres", &p, "advanced");
    copy_and_compare(mysql_store(&m, "mysql8"), pg_store(&p, "postgres12"), 2_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_mariadb_copies_every_field() {
    if !service_up("mariadb") || !service_up("postgres") {
        return;
    }
    let (p, m) = (db_name("x_pg_src"), db_name("x_my_dst"));
    reset_db("postgres", &p, "advanced");
    reset_db("mariadb", &m, "advanced");
    copy_and_compare(pg_store(&p, "postgres12"), mysql_store(&m, "mysql8"), 2_000).await;
}
