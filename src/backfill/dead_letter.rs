//! The dead-letter file: one JSON line per record that could not be copied, with the
//! reason, so that no record is ever dropped silently. Lines are flushed and synced
//! before the batch that produced them is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::Serialize;
use tokio::sync::Mutex;

use super::checkpoint::PRIVATE_FILE_MODE;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterEntry {
    pub time: String,
    /// `scan` (the primary's row could not be read) or `write` (the secondary refused it).
    pub stage: &'static str,
    pub store: String,
    pub namespace_id: String,
    pub run_id: String,
    pub workflow_id: Option<String>,
    pub reason: String,
    pub record: serde_json::Value,
}

impl DeadLetterEntry {
    pub fn now(stage: &'static str, store: String, namespace_id: String, run_id: String) -> Self {
        Self {
            time: Utc::now().to_rfc3339(),
            stage,
            store,
            namespace_id,
            run_id,
            workflow_id: None,
            reason: String::new(),
            record: serde_json::Value::Null,
        }
    }
}

pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<BufWriter<File>>>,
}

impl DeadLetter {
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), file: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the entries durably; the file is created on first use.
    pub async fn append(&self, entries: &[DeadLetterEntry]) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut guard = self.file.lock().await;
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let cannot =
                |e: std::io::Error| anyhow::anyhow!("cannot open dead-letter file {}: {e}", self.path.display());
            // Whole records (memos, search attributes): readable by vismig's user only. The
            // mode applies to a new file; one left by an older vismig is narrowed as well.
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(PRIVATE_FILE_MODE)
                .open(&self.path)
                .map_err(cannot)?;
            f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE)).map_err(cannot)?;
            *guard = Some(BufWriter::new(f));
        }
        let w = guard.as_mut().expect("opened above");
        for entry in entries {
            serde_json::to_writer(&mut *w, entry)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        w.get_ref().sync_data()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_dead_letter_file_is_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let entry = || DeadLetterEntry::now("write", "s".into(), "ns".into(), "run".into());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let fresh = dir.path().join("sub/dead-letter.jsonl");
        DeadLetter::new(&fresh).append(&[entry()]).await.unwrap();
        assert_eq!(mode(&fresh), 0o600, "a new dead-letter file");

        // A file left by an older vismig with the default umask is narrowed on first use.
        let old = dir.path().join("old.jsonl");
        std::fs::write(&old, "{}\n").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        DeadLetter::new(&old).append(&[entry()]).await.unwrap();
        assert_eq!(mode(&old), 0o600, "an existing dead-letter file");
        assert_eq!(std::fs::read_to_string(&old).unwrap().lines().count(), 2, "appended, not truncated");
    }
}
