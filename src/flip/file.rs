//! The flip written to a dynamic-config file on disk: read, edit, keep a timestamped
//! backup beside it, replace it atomically with its permission bits kept.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{Done, Error, Plan, warn_forced};

pub(super) fn flip(
    path: &Path,
    dry_run: bool,
    poll_interval: Option<String>,
    plan: impl Fn(&str, &str) -> Result<Plan, Error>,
    changes: &str,
) -> Result<Done, Error> {
    let label = path.display().to_string();
    let old = std::fs::read_to_string(path)
        .map_err(|e| Error::Failed(anyhow::anyhow!("cannot read the dynamic config {label}: {e}")))?;
    let planned = plan(&label, &old)?;
    if let Some(reason) = &planned.forced {
        warn_forced(reason);
    }
    let applies_when = poll_interval
        .map(|p| format!("within its dynamicConfigClient.pollInterval ({p})"))
        .unwrap_or_else(|| "at its next dynamicConfigClient.pollInterval (60s in Temporal's docker config)".into());
    let changed = planned.new != old;
    if dry_run || !changed {
        return Ok(Done {
            target: label,
            changed,
            diff: planned.diff,
            action: "written".into(),
            backup: None,
            applies_when,
            text: old,
        });
    }
    let backup = backup_path(path, Utc::now());
    std::fs::copy(path, &backup)
        .map_err(|e| Error::Failed(anyhow::anyhow!("cannot write the backup {}: {e}", backup.display())))?;
    write_keeping_mode(path, planned.new.as_bytes())
        .map_err(|e| Error::Failed(anyhow::anyhow!("cannot write {label}: {e}")))?;
    tracing::info!(audit = true, file = %label, backup = %backup.display(), changes, forced = planned.forced.is_some(), "flip: dynamic config changed");
    Ok(Done {
        target: label,
        changed: true,
        diff: planned.diff,
        action: "written".into(),
        backup: Some(backup),
        applies_when,
        text: planned.new,
    })
}

fn backup_path(path: &Path, now: DateTime<Utc>) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("dynamicconfig.yaml");
    path.with_file_name(format!("{name}.vismig-backup-{}", now.format("%Y%m%dT%H%M%S%.3fZ")))
}

/// Atomic replace that keeps the file's permission bits.
fn write_keeping_mode(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    crate::backfill::checkpoint::write_atomically(path, data, mode)
}
