//! The flip: edits Temporal's dynamic-config file so that reads (per namespace or for
//! all) go to the secondary visibility store, or back, and optionally sets the writing
//! mode. Guarded: reads move to the secondary (or writes to secondary-only) only after
//! a passing verify of those namespaces, younger than `maxVerifyAge`, while writes go to
//! both stores; `--force` overrides, loudly. Every other byte of the file stays as it
//! was; the write is atomic, with a timestamped backup and an audit line in the log.

pub mod dynamic_config;
pub mod edit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use yaml_serde::Value;

use self::dynamic_config::{READ_FROM_SECONDARY, WRITING_MODE};
use self::edit::{Scalar, Target};
use crate::config::Config;

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
    pub path: PathBuf,
    pub changed: bool,
    pub diff: String,
    pub backup: Option<PathBuf>,
    pub poll_interval: Option<String>,
}

/// `names` maps namespace names to ids (see `commands::namespace_names`).
pub fn flip(config: &Config, req: &Request, names: &BTreeMap<String, String>) -> Result<Done, Error> {
    if req.reads.is_none() && req.writes.is_none() {
        return Err(Error::Config(
            "flip: say what to change: --reads secondary|primary and/or --writes off|dual|on".into(),
        ));
    }
    let path = config.dynamic_config_file().ok_or_else(|| {
        Error::Config(
            "config error: migration.flip.dynamicConfigFile: missing (Temporal's dynamic-config file, or point --config at the server config with its dynamicConfigClient block)"
                .into(),
        )
    })?;
    let old = std::fs::read_to_string(&path)
        .map_err(|e| Error::Failed(anyhow::anyhow!("cannot read the dynamic config {}: {e}", path.display())))?;

    let guarded = req.reads == Some(Reads::Secondary) || req.writes == Some(Writes::On);
    if guarded && let Err(reason) = guard(config, &old, req, names) {
        if !req.force {
            return Err(Error::Refused(reason));
        }
        tracing::warn!(reason = %reason, "FORCED FLIP: the guard refused, --force overrides it");
        eprintln!("WARNING: flipping despite the guard (--force): {reason}");
    }

    let mut new = old.clone();
    let targets: Vec<Target> = if req.namespaces.is_empty() {
        vec![Target::Global]
    } else {
        req.namespaces.iter().map(|n| Target::Namespace(n.clone())).collect()
    };
    let mut changes: Vec<(&str, Target, Scalar)> = Vec::new();
    if let Some(reads) = req.reads {
        for t in &targets {
            changes.push((READ_FROM_SECONDARY, t.clone(), Scalar::Bool(reads == Reads::Secondary)));
        }
    }
    if let Some(writes) = req.writes {
        changes.push((WRITING_MODE, Target::Global, Scalar::Str(writes.value().to_string())));
    }
    for (key, target, value) in &changes {
        new = edit::set(&new, key, target, value)
            .map_err(|e| Error::Failed(anyhow::anyhow!("{}: {e}", path.display())))?;
    }
    check_only_intended(&old, &new, &changes).map_err(|e| {
        Error::Failed(anyhow::anyhow!("{}: refusing to write an edit that {e}; nothing was changed", path.display()))
    })?;
    let diff = edit::unified_diff(&path.display().to_string(), &old, &new);
    let poll_interval = config.dynamic_config_client.as_ref().and_then(|c| c.poll_interval.clone());
    if req.dry_run || new == old {
        return Ok(Done { path, changed: new != old, diff, backup: None, poll_interval });
    }
    let backup = backup_path(&path, Utc::now());
    std::fs::copy(&path, &backup)
        .map_err(|e| Error::Failed(anyhow::anyhow!("cannot write the backup {}: {e}", backup.display())))?;
    write_keeping_mode(&path, new.as_bytes())
        .map_err(|e| Error::Failed(anyhow::anyhow!("cannot write {}: {e}", path.display())))?;
    let summary: Vec<String> = changes
        .iter()
        .map(|(k, t, v)| match t {
            Target::Global => format!("{k}={v:?} (all namespaces)"),
            Target::Namespace(n) => format!("{k}={v:?} (namespace {n})"),
        })
        .collect();
    tracing::info!(audit = true, file = %path.display(), backup = %backup.display(), changes = %summary.join("; "), forced = req.force && guarded, "flip: dynamic config changed");
    Ok(Done { path, changed: true, diff, backup: Some(backup), poll_interval })
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
    let doc: Value = yaml_serde::from_str(text).ok()?;
    let map = doc.as_mapping()?;
    let entries = map.iter().find(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(WRITING_MODE)))?.1;
    entries.as_sequence()?.iter().find_map(|e| {
        let unconstrained = e.get("constraints").is_none_or(|c| c.as_mapping().is_none_or(|m| m.is_empty()));
        if unconstrained { e.get("value").and_then(|v| v.as_str().map(String::from)) } else { None }
    })
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

fn backup_path(path: &Path, now: DateTime<Utc>) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("dynamicconfig.yaml");
    path.with_file_name(format!("{name}.vismig-backup-{}", now.format("%Y%m%dT%H%M%S%.3fZ")))
}

/// Atomic replace that keeps the file's permission bits.
fn write_keeping_mode(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let permissions = std::fs::metadata(path)?.permissions();
    crate::backfill::checkpoint::write_atomically(path, data)?;
    std::fs::set_permissions(path, permissions)
}
