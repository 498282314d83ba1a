//! `vismig demo`: the whole flow on two SQLite files, with nothing to set up. Seeds a
//! primary, backfills it into a secondary, verifies the counts, prints a summary, and
//! leaves the files (and the config it used) in the directory for inspection.

use std::path::Path;
use std::time::Instant;

use tokio::sync::watch;

use crate::commands;
use crate::config::Config;
use crate::metrics::{Control, Metrics};
use crate::store::sql::sqlite::create_database;

const FILES: [&str; 9] = [
    "last-verify.json",
    "primary.db",
    "primary.db-wal",
    "primary.db-shm",
    "secondary.db",
    "secondary.db-wal",
    "secondary.db-shm",
    "checkpoint.json",
    "dead-letter.jsonl",
];

pub async fn run(dir: &Path, records: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let dir = dir.canonicalize()?;
    // Start from scratch, removing only the files an earlier demo left here.
    for f in FILES {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let primary = dir.join("primary.db");
    let secondary = dir.join("secondary.db");
    create_database(&primary).await?;
    create_database(&secondary).await?;
    let config_path = dir.join("vismig.yaml");
    std::fs::write(&config_path, demo_config(&dir))?;
    let config = Config::load(&config_path)?;

    println!("vismig demo in {}", dir.display());
    let t = Instant::now();
    commands::seed(&config, records, 1).await?;
    let seed_secs = t.elapsed().as_secs_f64();
    println!("  seeded   {records} records into primary.db in {seed_secs:.1}s");

    let metrics = Metrics::new();
    let control = Control::new(config.migration.rate.records_per_second);
    let (_stop_tx, stop) = watch::channel(false);
    let summary = commands::backfill(&config, 0, 1, metrics.clone(), control.clone(), stop).await?;
    let secs = summary.elapsed.as_secs_f64();
    let t = &summary.totals;
    println!(
        "  backfill {} records in {secs:.1}s = {:.0} records/s ({} inserted, {} skipped, {} dead-lettered)",
        t.scanned,
        t.scanned as f64 / secs.max(1e-9),
        t.outcomes.inserted,
        t.outcomes.skipped_newer + t.outcomes.skipped_present,
        t.outcomes.dead_letter
    );
    let report = commands::verify(&config, &[], commands::VerifyMode::default(), &metrics, &control).await?;
    print!("{}", report.text(false));
    println!("files: {}, {}, {}", primary.display(), secondary.display(), config_path.display());
    println!("next:  vismig status --config {}", config_path.display());
    println!("       vismig plan --config {}   (what a backfill would do now: nothing left)", config_path.display());
    if !report.is_equal() {
        anyhow::bail!("demo verify found differences");
    }
    Ok(())
}

/// Names for the seed's namespaces (seed 1), as an operator's cluster would have them.
const NAMESPACE_NAMES: [&str; 5] = ["orders", "payments", "shipping", "billing", "notifications"];

fn demo_config(dir: &Path) -> String {
    let generator = crate::seed::Generator::new(1, chrono::Utc::now());
    let names: Vec<String> =
        NAMESPACE_NAMES.iter().zip(generator.namespaces()).map(|(name, id)| format!("{name}: \"{id}\"")).collect();
    format!(
        r#"# Written by `vismig demo`: a SQLite primary and secondary, in Temporal's config shape.
persistence:
  visibilityStore: sqlite-primary
  secondaryVisibilityStore: sqlite-secondary
  datastores:
    sqlite-primary:
      sql:
        pluginName: sqlite
        databaseName: {dir}/primary.db
        connectAddr: localhost
    sqlite-secondary:
      sql:
        pluginName: sqlite
        databaseName: {dir}/secondary.db
        connectAddr: localhost
migration:
  batchSize: 1000
  concurrency: 2
  rate: {{ recordsPerSecond: 0 }}
  checkpoint: {{ type: file, path: {dir}/checkpoint.json }}
  deadLetter: {{ path: {dir}/dead-letter.jsonl }}
  metrics: {{ listen: "" }}
  namespaceNames: {{ {names} }}
"#,
        dir = dir.display(),
        names = names.join(", ")
    )
}
