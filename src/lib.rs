//! vismig: moves Temporal visibility records from the primary visibility store to the
//! secondary one. The binary (`main.rs`) is the CLI; this library holds the roles, one
//! module each, so the integration tests can read the stores the way vismig does.

pub mod attribute_names;
pub mod backfill;
pub mod commands;
pub mod config;
pub mod demo;
pub mod flip;
pub mod memo;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod progress;
pub mod record;
pub mod retry;
pub mod seed;
pub mod status;
pub mod store;
pub mod tls;
pub mod verify;
