//! The flip: edits Temporal's dynamic config so that reads (per namespace or for all)
//! go to the secondary visibility store, or back, and optionally sets the writing mode.
//! Guarded: reads move to the secondary (or writes to secondary-only) only after a
//! passing verify of those namespaces, younger than `maxVerifyAge`, while writes go to
//! both stores; `--force` overrides, loudly. Every other byte stays as it was.
//!
//! One edit (`edit.rs`), one guard, two places to write it: a file (`file.rs`: atomic
//! replace, timestamped backup beside it) or a key of a Kubernetes ConfigMap
//! (`configmap.rs`: GET, PATCH carrying the resourceVersion, re-read and re-edit on a
//! conflict, timestamped backup beside the checkpoint). Both log an audit line.

pub mod configmap;
pub mod dynamic_config;
pub mod edit;
mod file;
pub mod kubeconfig;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use yaml_serde::Value;

use self::dynamic_config::{READ_FROM_SECONDARY, ReadState, WRITING_MODE};
use self::edit::{Scalar, Target};
use crate::config::Config;
use crate::config::migration::ConfigMapTarget;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    Secondary,
    Primary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    Off,
    Dual,
    /// Secondary only (Temporal's value `"on"`).
    On,
}

impl Writes {
    pub fn value(self) -> &'static str {
        match self {
            Writes::Off => "off",
            Writes::Dual => "dual",
            Writes::On => "on",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Namespace names; empty = all namespaces (the entry without constraints).
    pub namespaces: Vec<String>,
    pub reads: Option<Reads>,
    pub writes: Option<Writes>,
    pub dry_run: bool,
    pub force: bool,
}

#[derive(Debug)]
pub enum Error {
    /// The guard said no (exit 4).
    Refused(String),
    /// Bad config or usage (exit 2).
    Config(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Failed(e)
    }
}

pub struct Done {
    /// What was edited: the file's path, or the ConfigMap and key.
    pub target: String,
    pub changed: bool,
    pub diff: String,
    /// How it was written, e.g. `written` or `patched (resourceVersion 41 -> 42)`.
    pub action: String,
    pub backup: Option<PathBuf>,
    /// When Temporal will see the change.
    pub applies_when: String,
    /// The dynamic config as it is now (after the edit, unless a dry run).
    pub text: String,
}

/// Where Temporal's dynamic config lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    ConfigMap(ConfigMapTarget),
}

impl Location {
    /// `migration.flip.target.configMap`, else `migration.flip.dynamicConfigFile`, else
    /// the server config's `dynamicConfigClient.filepath`; none when the config names none.
    pub fn of(config: &Config) -> Option<Location> {
        match config.migration.flip.target.as_ref().and_then(|t| t.config_map.clone()) {
            Some(cm) => Some(Location::ConfigMap(cm)),
            None => config.dynamic_config_file().map(Location::File),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Location::File(path) => path.display().to_string(),
            Location::ConfigMap(cm) => configmap::describe(cm),
        }
    }

    /// The dynamic config's text now.
    pub async fn read(&self) -> anyhow::Result<String> {
        match self {
            Location::File(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the dynamic config {}: {e}", path.display())),
            Location::ConfigMap(cm) => Ok(configmap::Client::new(cm)?.get(cm).await?.text),
        }
    }
}

/// One edit: set `key` for a target to a value.
type Change = (&'static str, Target, Scalar);

/// The edit of one version of the dynamic config, checked and guarded.
struct Plan {
    new: String,
    diff: String,
    /// The guard refused and `--force` overrode it: why.
    forced: Option<String>,
}

/// `names` maps namespace names to ids (see `commands::namespace_names`).
pub async fn flip(config: &Config, req: &Request, names: &BTreeMap<String, String>) -> Result<Done, Error> {
    if req.reads.is_none() && req.writes.is_none() {
        return Err(Error::Config(
            "flip: say what to change: --reads secondary|primary and/or --writes off|dual|on".into(),
        ));
    }
    let location = Location::of(config).ok_or_else(|| {
        Error::Config(
            "config error: migration.flip.dynamicConfigFile: missing (Temporal's dynamic-config file, or migration.flip.target.configMap, or point --config at the server config with its dynamicConfigClient block)"
                .into(),
        )
    })?;
    let changes = changes(req);
    let plan = |label: &str, old: &str| self::plan(config, req, names, &changes, label, old);
    match &location {
        Location::File(path) => {
            let poll = config.dynamic_config_client.as_ref().and_then(|c| c.poll_interval.clone());
            file::flip(path, req.dry_run, poll, plan, &summary(&changes))
        }
        Location::ConfigMap(cm) => {
            let backup_dir = config.migration.checkpoint.path.parent().map(Path::to_path_buf).unwrap_or_default();
            configmap::flip(cm, req.dry_run, &backup_dir, plan, &summary(&changes)).await
        }
    }
}

fn changes(req: &Request) -> Vec<Change> {
    let targets: Vec<Target> = if req.namespaces.is_empty() {
        vec![Target::Global]
    } else {
        req.namespaces.iter().map(|n| Target::Namespace(n.clone())).collect()
    };
    let mut changes = Vec::new();
    if let Some(reads) = req.reads {
        for t in &targets {
            changes.push((READ_FROM_SECONDARY, t.clone(), Scalar::Bool(reads == Reads::Secondary)));
        }
    }
    if let Some(writes) = req.writes {
        changes.push((WRITING_MODE, Target::Global, Scalar::Str(writes.value().to_string())));
    }
    changes
}

/// For the audit line.
fn summary(changes: &[Change]) -> String {
    let parts: Vec<String> = changes
        .iter()
        .map(|(k, t, v)| match t {
            Target::Global => format!("{k}={v:?} (all namespaces)"),
            Target::Namespace(n) => format!("{k}={v:?} (namespace {n})"),
        })
        .collect();
    parts.join("; ")
}

/// Guards, edits and checks one version `old` of the dynamic config (`label` names it
/// in messages). Run again on every fresh read, so a concurrent change is re-checked.
fn plan(
    config: &Config,
    req: &Request,
    names: &BTreeMap<String, String>,
    changes: &[Change],
    label: &str,
    old: &str,
) -> Result<Plan, Error> {
    let guarded = req.reads == Some(Reads::Secondary) || req.writes == Some(Writes::On);
    let mut forced = None;
    if guarded && let Err(reason) = guard(config, old, req, names) {
        if !req.force {
            return Err(Error::Refused(reason));
        }
        forced = Some(reason);
    }
    if req.reads.is_some()
        && !req.dry_run
        && let Some(warning) = dynamic_config::read_key_added_warning(old)
    {
        tracing::warn!(dynamic_config = %label, "{warning}");
        eprintln!("WARNING: {warning}");
    }
    let mut new = old.to_string();
    for (key, target, value) in changes {
        new = edit::set(&new, key, target, value).map_err(|e| Error::Failed(anyhow::anyhow!("{label}: {e}")))?;
    }
    check_only_intended(old, &new, changes).map_err(|e| {
        Error::Failed(anyhow::anyhow!("{label}: refusing to write an edit that {e}; nothing was changed"))
    })?;
    let diff = edit::unified_diff(label, old, &new);
    Ok(Plan { new, diff, forced })
}

/// Says loudly that `--force` overrode the guard.
fn warn_forced(reason: &str) {
    tracing::warn!(reason = %reason, "FORCED FLIP: the guard refused, --force overrides it");
    eprintln!("WARNING: flipping despite the guard (--force): {reason}");
}

/// Why reads may not move to the secondary yet, if they may not.
fn guard(config: &Config, dynamic_config: &str, req: &Request, names: &BTreeMap<String, String>) -> Result<(), String> {
    let path = crate::verify::last_result_path(config);
    let text = std::fs::read_to_string(&path)
        .map_err(|_| format!("no verify has run ({} is missing): run vismig verify first", path.display()))?;
    let last: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not a verify result: {e}", path.display()))?;
    if last["result"] != "equal" {
        return Err(format!("the last verify found differences ({}): fix them and verify again", path.display()));
    }
    let finished = last["finishedAt"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| format!("{} has no finishedAt", path.display()))?;
    let age = Utc::now() - finished.with_timezone(&Utc);
    let max = chrono::Duration::from_std(config.migration.flip.max_verify_age).unwrap_or(chrono::Duration::MAX);
    if age > max {
        return Err(format!(
            "the last verify passed {} minutes ago, more than migration.flip.maxVerifyAge ({} minutes): verify again",
            age.num_minutes(),
            max.num_minutes()
        ));
    }
    let filter: Vec<String> = last["namespaceFilter"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    if !filter.is_empty() {
        if req.namespaces.is_empty() {
            return Err(
                "the last verify covered only some namespaces; a flip for all namespaces needs a verify of all".into(),
            );
        }
        for name in &req.namespaces {
            let id = names.get(name).ok_or_else(|| {
                format!(
                    "namespace {name:?} has no id (not in the default store's namespaces table nor in migration.namespaceNames), so the last verify cannot be matched to it"
                )
            })?;
            if !filter.contains(id) {
                return Err(format!("the last verify did not cover namespace {name:?} ({id})"));
            }
        }
    }
    if req.reads == Some(Reads::Secondary) && req.writes != Some(Writes::Dual) {
        let mode = writing_mode(dynamic_config);
        if mode.as_deref() != Some("dual") && mode.as_deref() != Some("on") {
            return Err(format!(
                "{WRITING_MODE} is {}, not \"dual\": Temporal does not write to the secondary, so reads from it would miss new records",
                mode.map(|m| format!("{m:?}")).unwrap_or_else(|| "not set (off)".into())
            ));
        }
    }
    Ok(())
}

/// The global writing mode in the dynamic config, if set.
pub fn writing_mode(text: &str) -> Option<String> {
    ReadState::parse(text).ok()?.writing_mode
}

/// The edited document must equal the old one except for the edited keys, and the
/// edits must be in place (applying them again changes nothing).
fn check_only_intended(old: &str, new: &str, changes: &[(&str, Target, Scalar)]) -> Result<(), String> {
    let parse =
        |t: &str| -> Result<Value, String> { yaml_serde::from_str(t).map_err(|e| format!("does not parse: {e}")) };
    let (a, b) = (parse(old)?, parse(new)?);
    let edited = |k: &Value| k.as_str().is_some_and(|k| changes.iter().any(|(key, _, _)| k.eq_ignore_ascii_case(key)));
    let others = |v: &Value| -> Vec<(Value, Value)> {
        v.as_mapping()
            .map(|m| m.iter().filter(|(k, _)| !edited(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    if others(&a) != others(&b) {
        return Err("would change other keys".into());
    }
    for (key, target, value) in changes {
        if edit::set(new, key, target, value).map_err(|e| e.to_string())? != new {
            return Err(format!("did not set {key}"));
        }
    }
    Ok(())
}
