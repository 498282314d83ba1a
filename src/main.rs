//! vismig: moves Temporal visibility records from the primary visibility store to the
//! secondary one. The CLI maps each subcommand to one function; exit codes follow
//! DESIGN.md: 0 done/equal, 1 failed, 2 bad config or usage, 3 verify found differences,
//! 4 flip refused, 5 stopped by a signal before the end (checkpoint saved: run again).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use vismig::config::migration::FlipMode;
use vismig::config::{Config, ConfigError};
use vismig::metrics::{self, Control, Metrics};
use vismig::{backfill, commands, demo, flip, plan, progress, status};

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
    /// What a backfill would do and how long it would take: preflight, records per namespace in both stores, shards, a short read probe. Writes nothing.
    Plan {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
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
        /// Namespaces to compare, by id or name (default: migration.namespaces, or all).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Compare record by record, not only counts.
        #[arg(long)]
        deep: bool,
        /// Re-copy missing and different records; delete extras the primary confirms are gone (implies --deep).
        #[arg(long)]
        repair: bool,
        /// Counts per status (and differences) of every namespace, not only of those that differ.
        #[arg(long)]
        details: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Edit Temporal's dynamic config (file or ConfigMap): reads from the secondary (per namespace or all) and the writing mode.
    Flip {
        #[arg(long, short)]
        config: PathBuf,
        /// Namespace NAMES to flip (default: all namespaces).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        #[arg(long, value_enum)]
        reads: Option<ReadsArg>,
        #[arg(long, value_enum)]
        writes: Option<WritesArg>,
        /// Print the diff, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Flip even though the guard refuses (no passing, recent verify; writes not dual).
        #[arg(long)]
        force: bool,
    },
    /// Preflight, backfill, verify, then flip as migration.flip.mode says (auto, manual, never).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show progress overall and per namespace (rate, ETA, dead letters, last verify) and the flip state.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// Also list every shard with its cursor.
        #[arg(long)]
        shards: bool,
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

#[derive(Clone, Copy, ValueEnum)]
enum ReadsArg {
    Secondary,
    Primary,
}

impl ReadsArg {
    fn into_reads(self) -> flip::Reads {
        match self {
            ReadsArg::Secondary => flip::Reads::Secondary,
            ReadsArg::Primary => flip::Reads::Primary,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum WritesArg {
    Off,
    Dual,
    On,
}

impl WritesArg {
    fn into_writes(self) -> flip::Writes {
        match self {
            WritesArg::Off => flip::Writes::Off,
            WritesArg::Dual => flip::Writes::Dual,
            WritesArg::On => flip::Writes::On,
        }
    }
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

/// Exit code of a backfill (or `run`) stopped by SIGTERM/SIGINT before the end, with its
/// checkpoint saved. Not 0, so that a Kubernetes Job does not count the stopped pod as
/// a completion: it is restarted and resumes from the checkpoint.
const EXIT_STOPPED: u8 = 5;

/// Failures that map to exit codes.
enum Failure {
    Config(String),
    Run(anyhow::Error),
}

fn flip_exit(result: Result<flip::Done, flip::Error>, dry_run: bool) -> Result<u8, Failure> {
    match result {
        Ok(done) => {
            print!("{}", done.diff);
            if dry_run {
                println!("dry run: {} would change; nothing written", done.target);
            } else if done.changed {
                println!(
                    "flipped: {} {} (backup {}); Temporal applies it {}",
                    done.target,
                    done.action,
                    done.backup.map(|b| b.display().to_string()).unwrap_or_default(),
                    done.applies_when
                );
            } else {
                println!("nothing to do: {} already says so", done.target);
            }
            Ok(0)
        }
        Err(flip::Error::Refused(reason)) => {
            eprintln!("flip refused: {reason} (--force overrides)");
            Ok(4)
        }
        Err(flip::Error::Config(msg)) => Err(Failure::Config(msg)),
        Err(flip::Error::Failed(e)) => Err(Failure::Run(e)),
    }
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

/// Log targets silenced in every filter (see `init_logging`).
const QUIET_TARGETS: &str = "rustls_platform_verifier=off";

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=error"));
    // reqwest's platform verifier logs its own ERROR record for every refused server
    // certificate; vismig's error already says it, with the fix. Added on top of
    // RUST_LOG too, so that the record stays out whatever the operator sets.
    let filter = filter.add_directive(QUIET_TARGETS.parse().expect("a valid directive"));
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

/// Keeps the process (and its `/metrics`) up for `migration.metrics.linger` after a
/// command finished, so that Prometheus scrapes the final values of a short Job. A stop
/// signal ends the wait at once.
async fn linger(config: &Config, stop: Option<watch::Receiver<bool>>) {
    let linger = config.migration.metrics.linger;
    if linger.is_zero() || config.migration.metrics.listen.is_empty() {
        return;
    }
    tracing::info!(
        seconds = linger.as_secs_f64(),
        "finished; serving /metrics a little longer (migration.metrics.linger) so Prometheus scrapes the final values"
    );
    match stop {
        Some(mut stop) => {
            tokio::select! {
                _ = tokio::time::sleep(linger) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        None => tokio::time::sleep(linger).await,
    }
}

async fn start_listener(config: &Config, metrics: &Arc<Metrics>, control: &Arc<Control>) -> anyhow::Result<()> {
    let listen = &config.migration.metrics.listen;
    if listen.is_empty() {
        return Ok(());
    }
    let addr = metrics::serve(&config.migration.metrics, metrics.clone(), control.clone()).await?;
    tracing::info!(address = %addr, "metrics and control listening (/metrics /healthz /readyz, POST /pause /resume, PUT /rate)");
    Ok(())
}

async fn run(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Backfill { config, shard, rate, concurrency, batch_size } => {
            let overrides = Overrides { rate, concurrency, batch_size };
            backfill_command(&config, shard.unwrap_or((0, 1)), overrides).await
        }
        Command::Plan { config, output } => plan_command(&config, output).await,
        Command::Verify { config, namespaces, deep, repair, details, output } => {
            verify_command(&config, &namespaces, commands::VerifyMode { deep, repair }, output, details).await
        }
        Command::Flip { config, namespaces, reads, writes, dry_run, force } => {
            let config = Config::load(&config)?;
            let request = flip::Request {
                namespaces,
                reads: reads.map(ReadsArg::into_reads),
                writes: writes.map(WritesArg::into_writes),
                dry_run,
                force,
            };
            let names = commands::namespace_names(&config).await?;
            flip_exit(flip::flip(&config, &request, &names).await, dry_run)
        }
        Command::Run { config } => run_command(&config).await,
        Command::Status { config, shards, output } => {
            let config = Config::load(&config)?;
            print!("{}", status::status(&config, status::Options { json: output == Output::Json, shards }).await?);
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

/// The command line's overrides of the config's `migration:` block for a backfill.
struct Overrides {
    rate: Option<u32>,
    concurrency: Option<usize>,
    batch_size: Option<usize>,
}

/// The config file with the command line's overrides applied and checked again.
fn load_with_overrides(path: &Path, overrides: Overrides) -> Result<Config, ConfigError> {
    let mut config = Config::load(path)?;
    let migration = &mut config.migration;
    if let Some(r) = overrides.rate {
        migration.rate.records_per_second = r;
    }
    if let Some(c) = overrides.concurrency {
        migration.concurrency = c;
    }
    if let Some(b) = overrides.batch_size {
        migration.batch_size = b;
    }
    config.revalidate()?;
    Ok(config)
}

/// The metrics, the control state and their HTTP listener for a long-running command,
/// with the flip state already observed.
async fn observe(config: &Config) -> anyhow::Result<(Arc<Metrics>, Arc<Control>)> {
    let metrics = Metrics::new();
    let control = Control::new(config.migration.rate.records_per_second);
    control.health.send_replace(config.migration.health.clone());
    start_listener(config, &metrics, &control).await?;
    commands::observe_flip_state(config, &metrics).await;
    Ok((metrics, control))
}

async fn backfill_command(path: &Path, (index, count): (usize, usize), overrides: Overrides) -> Result<u8, Failure> {
    let config = load_with_overrides(path, overrides)?;
    let (metrics, control) = observe(&config).await?;
    let stop = stop_signal();
    let result = commands::backfill(&config, index, count, metrics, control, stop.clone()).await;
    let code = match &result {
        Ok(summary) => {
            print_summary(summary);
            if summary.complete { 0 } else { EXIT_STOPPED }
        }
        Err(_) => 1,
    };
    if code != EXIT_STOPPED {
        linger(&config, Some(stop)).await;
    }
    result?;
    Ok(code)
}

async fn verify_command(
    path: &Path,
    namespaces: &[String],
    mode: commands::VerifyMode,
    output: Output,
    details: bool,
) -> Result<u8, Failure> {
    let config = Config::load(path)?;
    let (metrics, control) = observe(&config).await?;
    control.set_ready();
    let result = commands::verify(&config, namespaces, mode, &metrics, &control).await;
    linger(&config, None).await;
    let report = result?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        print!("{}", report.text(details));
    }
    Ok(if report.is_equal() { 0 } else { 3 })
}

/// `vismig plan`: exit 0 when a backfill could start, 1 when it could not (the reasons,
/// one line each); a bad config is exit 2 like everywhere.
async fn plan_command(path: &Path, output: Output) -> Result<u8, Failure> {
    let config = Config::load(path)?;
    let plan = plan::plan(&config).await;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&plan).expect("plan serializes"));
    } else {
        print!("{}", plan.text());
    }
    Ok(if plan.ready { 0 } else { 1 })
}

/// `vismig run`: backfill, verify, then flip as `migration.flip.mode` says; each step
/// runs only if the one before ended well.
async fn run_command(path: &Path) -> Result<u8, Failure> {
    let config = Config::load(path)?;
    let (metrics, control) = observe(&config).await?;
    let stop = stop_signal();
    let summary = match commands::backfill(&config, 0, 1, metrics.clone(), control.clone(), stop.clone()).await {
        Ok(summary) => summary,
        Err(e) => {
            linger(&config, Some(stop)).await;
            return Err(e.into());
        }
    };
    print_summary(&summary);
    if !summary.complete {
        return Ok(EXIT_STOPPED);
    }
    let mode = commands::VerifyMode { deep: config.migration.verify.deep, repair: false };
    let result = commands::verify(&config, &[], mode, &metrics, &control).await;
    linger(&config, Some(stop)).await;
    let report = result?;
    print!("{}", report.text(false));
    if !report.is_equal() {
        eprintln!("verify found differences: not flipping (see vismig verify --deep, and --repair)");
        return Ok(3);
    }
    flip_after_verify(&config, path, &metrics).await
}

/// The last step of `vismig run`, after a verify that passed: flip reads to the
/// secondary (auto), print the command that does it (manual), or nothing (never).
async fn flip_after_verify(config: &Config, path: &Path, metrics: &Metrics) -> Result<u8, Failure> {
    let registry = commands::namespace_names(config).await?;
    let names = commands::flip_names(config, &registry)?;
    match config.migration.flip.mode {
        FlipMode::Auto => {
            let request =
                flip::Request { namespaces: names, reads: Some(flip::Reads::Secondary), ..Default::default() };
            let result = flip::flip(config, &request, &registry).await;
            if let Ok(done) = &result
                && let Ok(state) = flip::dynamic_config::ReadState::parse(&done.text)
            {
                metrics.set_read_state(&state, config.migration.namespace_names.keys());
            }
            flip_exit(result, false)
        }
        FlipMode::Manual => {
            let ns: String = names.iter().map(|n| format!(" --namespace {n}")).collect();
            println!(
                "verify passed; to move reads to the secondary run:\n  vismig flip --config {} --reads secondary{ns}",
                path.display()
            );
            Ok(0)
        }
        FlipMode::Never => Ok(0),
    }
}

fn print_summary(s: &backfill::Summary) {
    let t = &s.totals;
    let secs = s.elapsed.as_secs_f64();
    let stopped = match &s.stopped_by {
        Some(reason) => format!("stopped at a critical level ({reason}); run the same command to resume"),
        None => "stopped early; run the same command to resume".to_string(),
    };
    let state = if s.complete { "complete" } else { stopped.as_str() };
    println!(
        "backfill {state}: {} records settled in {:.1}s ({:.0} records/s): {} inserted, {} updated, {} skipped (newer in secondary), {} skipped (already present), {} dead-lettered; checkpoint {}",
        t.scanned,
        secs,
        if secs > 0.0 { t.scanned as f64 / secs } else { 0.0 },
        t.outcomes.inserted,
        t.outcomes.updated,
        t.outcomes.skipped_newer,
        t.outcomes.skipped_present,
        t.outcomes.dead_letter,
        s.checkpoint_path.display()
    );
    if t.outcomes.without_fields > 0 {
        println!(
            "{} records were copied without values the secondary's schema has no field for (migration.dropMissingFields)",
            t.outcomes.without_fields
        );
    }
}
