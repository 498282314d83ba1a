//! Fault injection (issue #10), against the real servers of tests/services and the real
//! binary; RELIABILITY.md lists each fault, its trials and outcome, and how to rerun it.
//!
//! - `kill`: kill -9 at random moments of SQLite->PostgreSQL and PostgreSQL->OpenSearch
//!   backfills, resumed and deep-verified; seeds are logged, records copied twice counted.
//! - `outage`: the secondary, then the primary, unreachable for 30 s behind an
//!   in-process TCP proxy (the shared servers are never stopped); OpenSearch refusing
//!   every bulk with 429.
//! - `dual_writes`: a concurrent writer updating, closing and deleting records in both
//!   stores while the backfill runs; verify --deep and --repair afterwards.
//! - `fatal`: a fatal error at full speed (index or table gone, permission revoked,
//!   checkpoint directory read-only) ends the run with exit 1 within stopTimeout.
//! - `bad_input`: bad rows, bad configs, unreachable hosts, wrong passwords.
//! - `secrets`: the configured passwords appear in no log, metric or output file.
//!
//! Print the figures with `cargo test --test faults -- --nocapture`.

#[path = "faults/bad_input.rs"]
mod bad_input;
mod common;
#[path = "faults/dual_writes.rs"]
mod dual_writes;
#[path = "faults/fatal.rs"]
mod fatal;
#[path = "faults/kill.rs"]
mod kill;
#[path = "faults/outage.rs"]
mod outage;
#[path = "faults/secrets.rs"]
mod secrets;
