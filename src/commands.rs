//! The work behind each subcommand, shared by the CLI and the demo.

use std::sync::Arc;
use std::time::Instant;

use chrono::{Timelike, Utc};
use tokio::sync::watch;

use crate::backfill::throttle::Throttle;
use crate::backfill::{Backfill, Options, Summary};
use crate::config::Config;
use crate::flip::{self, dynamic_config::ReadState};
use crate::metrics::{Control, Metrics};
use crate::store::{self, Store};
use crate::verify;

/// Opens both stores, runs preflight and the backfill.
pub async fn backfill(
    config: &Config,
    process_index: usize,
    process_count: usize,
    metrics: Arc<Metrics>,
    control: Arc<Control>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Summary> {
    let run = prepare_backfill(config, process_index, process_count, metrics.clone(), control).await?;
    run.preflight().await?;
    let summary = run.run(stop).await?;
    metrics.set_phase("done");
    if !summary.complete {
        tracing::warn!(checkpoint = %summary.checkpoint_path.display(), "stopped before the end; the checkpoint is saved: rerun the same command to resume");
    }
    Ok(summary)
}

/// Opens both stores and sets up a backfill (nothing checked or written yet): what
/// `backfill` runs and `plan` only preflights.
pub async fn prepare_backfill(
    config: &Config,
    process_index: usize,
    process_count: usize,
    metrics: Arc<Metrics>,
    control: Arc<Control>,
) -> anyhow::Result<Backfill> {
    let source = store::open_source(config, &config.primary()).await?;
    let sink = store::open_sink(config, &config.secondary()).await?;
    let renamer = Arc::new(renamer(config, source.naming(), sink.naming()).await?);
    Ok(Backfill {
        config: config.clone(),
        options: Options::from_config(config, process_index, process_count),
        source,
        sink,
        metrics,
        control,
        renamer,
        dropped_fields: Default::default(),
        names: Arc::new(crate::names::NamespaceNames::load(config).await),
    })
}

/// Search-attribute renaming between the two stores' families (reference §6). Each
/// namespace's alias map comes from its record in Temporal's default store (where
/// `temporal operator search-attribute create` keeps it for SQL visibility); a namespace
/// in `migration.searchAttributeAliases` (keyed by name or id) takes that map instead.
pub async fn renamer(
    config: &Config,
    source: crate::attribute_names::Naming,
    sink: crate::attribute_names::Naming,
) -> anyhow::Result<crate::attribute_names::Renamer> {
    use crate::attribute_names::Renamer;
    if source == sink {
        return Ok(Renamer::new(source, sink, &Default::default(), &Default::default()));
    }
    let records = store::namespace_records(config).await?.unwrap_or_default();
    let default_store = config.persistence.default_store.clone().unwrap_or_default();
    let mut ids: std::collections::BTreeMap<String, String> =
        records.iter().map(|r| (r.name.clone(), r.id.clone())).collect();
    ids.extend(config.migration.namespace_names.clone());
    let mut aliases = std::collections::BTreeMap::new();
    for record in &records {
        let map = record.aliases(&default_store).map_err(anyhow::Error::msg)?;
        if !map.is_empty() {
            aliases.insert(record.id.clone(), map);
        }
    }
    let from_records = aliases.len();
    for (namespace, map) in &config.migration.search_attribute_aliases {
        aliases.insert(ids.get(namespace).cloned().unwrap_or_else(|| namespace.clone()), map.clone());
    }
    tracing::info!(
        from_namespace_records = from_records,
        from_config = config.migration.search_attribute_aliases.len(),
        "search-attribute alias maps (migration.searchAttributeAliases overrides a namespace's own)"
    );
    Ok(Renamer::new(source, sink, &aliases, &ids))
}

/// What `verify` compares, beyond the counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyMode {
    pub deep: bool,
    pub repair: bool,
}

/// Counts both stores below the cut-off and compares them; record by record with
/// `deep`. The result is saved beside the checkpoint for `status` (and the flip guard).
pub async fn verify(
    config: &Config,
    namespaces: &[String],
    mode: VerifyMode,
    metrics: &Arc<Metrics>,
    control: &Arc<Control>,
) -> anyhow::Result<verify::Report> {
    metrics.set_phase("verify");
    let source = store::open_source(config, &config.primary()).await?;
    let sink = store::open_sink(config, &config.secondary()).await?;
    let (a, b) = tokio::join!(source.preflight(), sink.preflight());
    a.map_err(|e| anyhow::anyhow!("primary: {e}"))?;
    b.map_err(|e| anyhow::anyhow!("secondary: {e}"))?;
    let names = crate::names::NamespaceNames::load(config).await;
    let namespaces = if namespaces.is_empty() { config.migration.namespaces.clone() } else { names.ids_of(namespaces) };
    let filter = namespaces.clone();
    // On a whole second: a time truncated to the store's precision (Temporal's µs for SQL,
    // ms for Cassandra) falls on the same side of it as the nanosecond original.
    let cutoff = Utc::now() - chrono::Duration::from_std(config.migration.verify.cutoff)?;
    let cutoff = cutoff.with_nanosecond(0).unwrap_or(cutoff);
    // Count (and deep-compare) what reached the secondary until now (Elasticsearch:
    // after a refresh); one refresh serves both.
    sink.flush().await.map_err(|e| anyhow::anyhow!("secondary: {e}"))?;
    let mut report =
        verify::counts(source.clone() as Arc<dyn Store>, sink.clone() as Arc<dyn Store>, &namespaces, cutoff, metrics)
            .await?;
    if mode.deep || mode.repair {
        let started = Instant::now();
        // The deep scan is limited like the backfill, and PUT /rate changes it live.
        let throttle = Arc::new(Throttle::new(
            control.clone(),
            metrics.clone(),
            config.migration.rate.burst,
            config.migration.batch_size,
        ));
        let renamer = Arc::new(renamer(config, source.naming(), sink.naming()).await?);
        // Fields the operator let the copy drop (an older secondary schema) are not
        // differences; without the option they are, and verify reports them.
        let dropped_fields = if config.migration.drop_missing_fields {
            let (a, b) = tokio::join!(source.schema_info(), sink.schema_info());
            let source_info = a.map_err(|e| anyhow::anyhow!("primary: {e}"))?;
            let sink_info = b.map_err(|e| anyhow::anyhow!("secondary: {e}"))?;
            crate::store::schema::missing_in_sink(&source_info, &sink_info)
        } else {
            Vec::new()
        };
        let deep = verify::deep::DeepVerify {
            dropped_fields,
            renamer,
            primary: source,
            secondary: store::open_source(config, &config.secondary()).await?,
            sink,
            throttle,
        };
        let options = verify::deep::Options {
            namespaces,
            cutoff,
            recheck_after: config.migration.verify.recheck_after,
            repair: mode.repair,
            page: config.migration.batch_size.min(1000),
            concurrency: config.migration.concurrency,
        };
        let outcome = deep.run(&options).await?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            records = outcome.compared,
            seconds = secs,
            records_per_second = outcome.compared as f64 / secs.max(1e-9),
            "deep verify compared records"
        );
        report.add_deep(outcome, metrics);
    }
    report.name_namespaces(&names);
    save_last_verify(config, &filter, &report)?;
    metrics.set_phase("done");
    Ok(report)
}

pub use crate::verify::last_result_path as last_verify_path;

/// Namespace name -> id: Temporal's registry in the default store (when the config has
/// one), with `migration.namespaceNames` taking precedence.
pub async fn namespace_names(config: &Config) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut names = store::namespace_registry(config).await?.unwrap_or_default();
    names.extend(config.migration.namespace_names.clone());
    Ok(names)
}

/// The namespace NAMES a flip of this migration covers: those of `migration.namespaces`
/// (ids) by their names; none (all namespaces) when it is empty.
pub fn flip_names(config: &Config, names: &std::collections::BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    config
        .migration
        .namespaces
        .iter()
        .map(|id| {
            names.iter().find(|(_, v)| *v == id).map(|(name, _)| name.clone()).ok_or_else(|| {
                anyhow::anyhow!(
                    "no name for namespace id {id}: the dynamic config names namespaces; set migration.namespaceNames or persistence.defaultStore"
                )
            })
        })
        .collect()
}

fn save_last_verify(config: &Config, namespaces: &[String], report: &verify::Report) -> anyhow::Result<()> {
    let mut json = serde_json::to_value(report)?;
    json["finishedAt"] = serde_json::Value::String(Utc::now().to_rfc3339());
    // Which namespaces this verify covered (empty: all), for the flip guard.
    json["namespaceFilter"] = serde_json::to_value(namespaces)?;
    let path = last_verify_path(config);
    crate::backfill::checkpoint::write_atomically(
        &path,
        &serde_json::to_vec_pretty(&json)?,
        crate::backfill::checkpoint::PRIVATE_FILE_MODE,
    )
    .map_err(|e| anyhow::anyhow!("cannot save the verify result {}: {e}", path.display()))
}

/// Writes `records` synthetic records into the primary store; returns (count, store).
pub async fn seed(config: &Config, records: u64, seed: u64) -> anyhow::Result<(u64, String)> {
    let sink = store::open_sink(config, &config.primary()).await?;
    sink.preflight().await?;
    let mut generator = crate::seed::Generator::new(seed, Utc::now());
    // The generator names attributes as SQL does; an Elasticsearch primary gets the
    // user's names, registered first as an operator would.
    let renamer = crate::attribute_names::Renamer::new(
        crate::attribute_names::Naming::FieldNames,
        sink.naming(),
        &crate::seed::seed_aliases(generator.namespaces()),
        &Default::default(),
    );
    if !renamer.is_identity() {
        let attributes: Vec<_> =
            crate::seed::SEED_ALIASES.iter().map(|(_, alias, kind)| (alias.to_string(), *kind)).collect();
        sink.register_search_attributes(&attributes).await?;
    }
    // The store's largest batch: seeding has no checkpoint to keep small, and fewer, larger
    // commits rewrite fewer of the schema's index pages per record (SQLite: 10,000).
    let batch = sink.max_batch();
    let started = Instant::now();
    let mut written = 0u64;
    while written < records {
        let n = (records - written).min(batch as u64) as usize;
        let mut chunk: Vec<_> = (0..n).map(|_| generator.next_record()).collect();
        for r in &mut chunk {
            renamer.apply(r).map_err(|e| anyhow::anyhow!("seed: {e}"))?;
        }
        sink.write(&chunk).await?;
        written += n as u64;
    }
    sink.flush().await?;
    tracing::info!(records = written, seconds = started.elapsed().as_secs_f64(), store = %sink.describe(), "seeded");
    Ok((written, sink.describe()))
}

/// The flip state of Temporal's dynamic config, when the config says where it lives.
pub struct FlipState {
    /// The file, or the ConfigMap and key.
    pub location: String,
    pub state: Result<ReadState, String>,
}

pub async fn flip_state(config: &Config) -> Option<FlipState> {
    let location = flip::Location::of(config)?;
    let state = match location.read().await {
        Ok(text) => ReadState::parse(&text).map_err(|e| format!("{}: {e}", location.describe())),
        Err(e) => Err(format!("{e:#}")),
    };
    Some(FlipState { location: location.describe(), state })
}

/// Sets `vismig_read_flipped` from the dynamic config, when it is known. A dynamic
/// config that cannot be read only warns: the metric is not worth failing a backfill.
pub async fn observe_flip_state(config: &Config, metrics: &Metrics) {
    match flip_state(config).await {
        None => {}
        Some(FlipState { state: Ok(state), location }) => {
            metrics.set_read_state(&state, config.migration.namespace_names.keys());
            tracing::info!(dynamic_config = %location, reads_from_secondary = %state.summary(), writing_mode = %state.writing_mode(), "flip state");
        }
        Some(FlipState { state: Err(e), .. }) => {
            tracing::warn!(error = %e, "cannot read the dynamic config; vismig_read_flipped stays unset")
        }
    }
}

impl FlipState {
    /// One row per namespace: `*` (every namespace without its own entry), those with
    /// their own entry, and the names of `migration.namespaceNames`.
    pub fn json(&self, config: &Config) -> serde_json::Value {
        let state = match &self.state {
            Ok(s) => s,
            Err(e) => return serde_json::json!({ "location": self.location, "error": e }),
        };
        let rows: Vec<serde_json::Value> = state
            .rows(config.migration.namespace_names.keys())
            .into_iter()
            .map(|(namespace, secondary, own)| {
                serde_json::json!({
                    "namespace": namespace,
                    "reads": if secondary { "secondary" } else { "primary" },
                    "writes": state.writing_mode(),
                    "ownEntry": own,
                })
            })
            .collect();
        serde_json::json!({
            "location": self.location,
            "writingMode": state.writing_mode(),
            "writingModeSet": state.writing_mode.is_some(),
            "readsFromSecondary": state.summary(),
            "namespaces": rows,
        })
    }

    pub fn text(&self, config: &Config) -> String {
        let state = match &self.state {
            Ok(s) => s,
            Err(e) => return format!("flip state: {e}\n"),
        };
        let mut out = format!(
            "flip state ({}): reads from the secondary: {}; writing mode: {}\n",
            self.location,
            state.summary(),
            state.writing_mode.clone().unwrap_or_else(|| "off (not set)".into())
        );
        let rows = state.rows(config.migration.namespace_names.keys());
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max("namespace".len());
        out.push_str(&format!("  {:<width$}  {:<9}  writes\n", "namespace", "reads"));
        for (namespace, secondary, own) in rows {
            let note = if namespace == flip::dynamic_config::ALL_NAMESPACES {
                "  (every namespace without its own entry)"
            } else if !own {
                "  (no own entry)"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {namespace:<width$}  {:<9}  {}{note}\n",
                if secondary { "secondary" } else { "primary" },
                state.writing_mode()
            ));
        }
        out
    }
}
