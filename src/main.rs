//! vismig: moves Temporal visibility records from the primary visibility store to the
//! secondary one. The CLI maps each subcommand to one function; exit codes follow
//! DESIGN.md: 0 done/equal, 1 failed, 2 bad config or usage, 3 verify found differences.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use vismig::config::{Config, ConfigError};
use vismig::metrics::{self, Control, Metrics};
use vismig::{backfill, commands, demo, progress};

#[derive(Parser)]
#[command(name = "vismig", version, about = "Migrate Temporal visibility records between stores")]
struct Cli {
    /// Log format: text on a terminal, JSON otherwise, unless set.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Preflight, then copy every record from the primary to the secondary; resumes from the checkpoint.
    Backfill {
        #[arg(long, short)]
        config: PathBuf,
        /// This process's part of an Indexed Job: I/N (0-based I).
        #[arg(long, value_parser = parse_shard)]
        shard: Option<(usize, usize)>,
        /// Records per second (0 = unlimited); overrides migration.rate.recordsPerSecond.
        #[arg(long)]
        rate: Option<u32>,
        /// Shards scanned in parallel; overrides migration.concurrency.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Records per batch; overrides migration.batchSize.
        #[arg(long)]
        batch_size: Option<usize>,
    },
    /// Compare the two stores: counts per namespace and status.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
        /// Namespace ids to compare (default: migration.namespaces, or all).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Compare record by record, not only counts.
        #[arg(long)]
        deep: bool,
        /// Re-copy missing and different records; delete extras the primary confirms are gone (implies --deep).
        #[arg(long)]
        repair: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show checkpoint progress per shard.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Write N synthetic, realistic records into the primary store.
    Seed {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        records: u64,
        /// Random seed; the same seed gives the same records.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Seed a SQLite primary, migrate it to a SQLite secondary, verify, and print a summary.
    Demo {
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        #[arg(long, default_value = "vismig-demo")]
        dir: PathBuf,
    },
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 0/4")?;
    let i: usize = i.trim().parse().map_err(|_| "I in I/N must be a number")?;
    let n: usize = n.trim().parse().map_err(|_| "N in I/N must be a number")?;
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need 0 <= I < N"));
    }
    Ok((i, n))
}

/// Failures that map to exit codes.
enum Failure {
    Config(String),
    Run(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Run(e)
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Config(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            tracing::error!("{e:#}");
            eprintln!("vismig: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and freed
/// batch memory stays in them: two arenas keep the resident set flat and small. The
/// MALLOC_ARENA_MAX environment variable, if set, still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=error"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| progress::LogWriter);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_target(false).init();
    }
}

/// SIGINT and SIGTERM (what Kubernetes sends on eviction) set the returned flag.
fn stop_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        let name = tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::warn!(
            signal = name,
            "stopping: no new reads; settling the batches in flight, then saving the checkpoint"
        );
        tx.send_replace(true);
    });
    rx
}

async fn start_listener(config: &Config, metrics: &Arc<Metrics>, control: &Arc<Control>) -> anyhow::Result<()> {
    let listen = &config.migration.metrics.listen;
    if listen.is_empty() {
        return Ok(());
    }
    let addr = metrics::serve(listen, metrics.clone(), control.clone()).await?;
    tracing::info!(address = %addr, "metrics and control listening (/metrics /healthz /readyz, POST /pause /resume, PUT /rate)");
    Ok(())
}

async fn run(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Backfill { config, shard, rate, concurrency, batch_size } => {
            let mut config = Config::load(&config)?;
            if let Some(r) = rate {
                config.migration.rate.records_per_second = r;
            }
            if let Some(c) = concurrency {
                config.migration.concurrency = c;
            }
            if let Some(b) = batch_size {
                config.migration.batch_size = b;
            }
            config.revalidate()?;
            let (index, count) = shard.unwrap_or((0, 1));
            let metrics = Metrics::new();
            let control = Control::new(config.migration.rate.records_per_second);
            start_listener(&config, &metrics, &control).await?;
            let summary = commands::backfill(&config, index, count, metrics, control, stop_signal()).await?;
            print_summary(&summary);
            Ok(0)
        }
        Command::Verify { config, namespaces, deep, repair, output } => {
            let config = Config::load(&config)?;
            let metrics = Metrics::new();
            let control = Control::new(0);
            start_listener(&config, &metrics, &control).await?;
            control.set_ready();
            let mode = commands::VerifyMode { deep, repair };
            let report = commands::verify(&config, &namespaces, mode, &metrics).await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                print!("{}", report.text());
            }
            Ok(if report.is_equal() { 0 } else { 3 })
        }
        Command::Status { config, output } => {
            let config = Config::load(&config)?;
            let store = backfill::checkpoint::FileCheckpoint::new(&config.migration.checkpoint.path);
            let Some(cp) = store.load()? else {
                if output == Output::Json {
                    println!("{}", serde_json::json!({"checkpoint": null, "path": store.path()}));
                } else {
                    println!("no checkpoint at {}: no backfill has started with this config", store.path().display());
                }
                return Ok(0);
            };
            let last_verify: Option<serde_json::Value> = std::fs::read_to_string(commands::last_verify_path(&config))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if output == Output::Json {
                let mut json = serde_json::to_value(&cp).expect("checkpoint serializes");
                json["lastVerify"] = last_verify.unwrap_or(serde_json::Value::Null);
                println!("{}", serde_json::to_string_pretty(&json).expect("status serializes"));
            } else {
                print!("{}", commands::status_text(&cp));
                match last_verify {
                    Some(v) => println!(
                        "last verify: {} ({}) at {}",
                        v["result"].as_str().unwrap_or("?"),
                        v["mode"].as_str().unwrap_or("?"),
                        v["finishedAt"].as_str().unwrap_or("?")
                    ),
                    None => println!("last verify: none"),
                }
            }
            Ok(0)
        }
        Command::Seed { config, records, seed } => {
            let config = Config::load(&config)?;
            let written = commands::seed(&config, records, seed).await?;
            println!("seeded {} records into {}", written.0, written.1);
            Ok(0)
        }
        Command::Demo { records, dir } => {
            demo::run(&dir, records).await?;
            Ok(0)
        }
    }
}

fn print_summary(s: &backfill::Summary) {
    let t = &s.totals;
    let secs = s.elapsed.as_secs_f64();
    let state = if s.complete { "complete" } else { "stopped early; run the same command to resume" };
    println!(
        "backfill {state}: {} records settled in {:.1}s ({:.0} records/s): {} inserted, {} updated, {} skipped (newer in secondary), {} skipped (already present), {} dead-lettered; checkpoint {}",
        t.scanned,
        secs,
        if secs > 0.0 { t.scanned as f64 / secs } else { 0.0 },
        t.inserted,
        t.updated,
        t.skipped_newer,
        t.skipped_present,
        t.dead_letter,
        s.checkpoint_path.display()
    );
}
