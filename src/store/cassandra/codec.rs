//! Rows of `open_executions` and `closed_executions` as stored, and their decoding into
//! `VisibilityRecord`s, or into bad rows that name what is wrong.

use chrono::{DateTime, Utc};
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use super::plan::ClusteringKey;
use super::schema::Table;
use crate::record::{ExecutionStatus, VisibilityRecord};
use crate::store::{BadRow, Cursor, ScanPage};

/// The columns read, in the order of `OpenRow`.
pub(super) const OPEN_COLUMNS: [&str; 9] = [
    "namespace_id",
    "run_id",
    "start_time",
    "workflow_id",
    "workflow_type_name",
    "execution_time",
    "memo",
    "encoding",
    "task_queue",
];

/// The columns read, in the order of `ClosedRow`.
pub(super) const CLOSED_COLUMNS: [&str; 12] = [
    "namespace_id",
    "run_id",
    "close_time",
    "workflow_id",
    "workflow_type_name",
    "start_time",
    "execution_time",
    "status",
    "history_length",
    "memo",
    "encoding",
    "task_queue",
];

/// An `open_executions` row as the driver returns it.
pub(super) type OpenRow = (
    Uuid,
    Uuid,
    CqlTimestamp,
    Option<String>,
    Option<String>,
    Option<CqlTimestamp>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
);
/// A `closed_executions` row as the driver returns it.
pub(super) type ClosedRow = (
    Uuid,
    Uuid,
    CqlTimestamp,
    Option<String>,
    Option<String>,
    Option<CqlTimestamp>,
    Option<CqlTimestamp>,
    Option<i32>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
);

/// A row of either table, columns as stored.
#[derive(Clone, Debug)]
pub(super) struct Raw {
    table: Table,
    namespace_id: Uuid,
    pub(super) run_id: Uuid,
    /// The clustering time (start time for open rows, close time for closed rows).
    key_time: i64,
    pub(super) workflow_id: Option<String>,
    workflow_type_name: Option<String>,
    start_time: Option<i64>,
    execution_time: Option<i64>,
    close_time: Option<i64>,
    status: Option<i32>,
    history_length: Option<i64>,
    memo: Option<Vec<u8>>,
    encoding: Option<String>,
    task_queue: Option<String>,
}

impl Raw {
    /// Where a scan that stopped after this row resumes.
    pub(super) fn clustering_key(&self) -> ClusteringKey {
        ClusteringKey { time: self.key_time, run_id: self.run_id.to_string() }
    }

    pub(super) fn open(r: OpenRow) -> Self {
        let (namespace_id, run_id, start, workflow_id, workflow_type_name, execution_time, memo, encoding, task_queue) =
            r;
        Raw {
            table: Table::Open,
            namespace_id,
            run_id,
            key_time: start.0,
            workflow_id,
            workflow_type_name,
            start_time: Some(start.0),
            execution_time: execution_time.map(|t| t.0),
            close_time: None,
            status: None,
            history_length: None,
            memo,
            encoding,
            task_queue,
        }
    }

    pub(super) fn closed(r: ClosedRow) -> Self {
        let (
            namespace_id,
            run_id,
            close,
            workflow_id,
            workflow_type_name,
            start_time,
            execution_time,
            status,
            history_length,
            memo,
            encoding,
            task_queue,
        ) = r;
        Raw {
            table: Table::Closed,
            namespace_id,
            run_id,
            key_time: close.0,
            workflow_id,
            workflow_type_name,
            start_time: start_time.map(|t| t.0),
            execution_time: execution_time.map(|t| t.0),
            close_time: Some(close.0),
            status,
            history_length,
            memo,
            encoding,
            task_queue,
        }
    }

    fn decode(&self) -> Result<VisibilityRecord, String> {
        let time = |name: &str, ms: Option<i64>| -> Result<DateTime<Utc>, String> {
            let ms = ms.ok_or_else(|| format!("{name} is NULL"))?;
            DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("{name} {ms} ms is out of range"))
        };
        let start_time = time("start_time", self.start_time)?;
        let (status, close_time) = match self.table {
            // Open rows have no status column: Temporal's reader sets RUNNING.
            Table::Open => (ExecutionStatus::Running, None),
            Table::Closed => {
                let s = self.status.ok_or("status is NULL")?;
                let status = ExecutionStatus::from_i64(s as i64)
                    .filter(|s| !s.is_open())
                    .ok_or_else(|| format!("unknown status {s} for a closed run"))?;
                (status, Some(time("close_time", self.close_time)?))
            }
        };
        Ok(VisibilityRecord {
            namespace_id: self.namespace_id.to_string(),
            run_id: self.run_id.to_string(),
            workflow_id: self.workflow_id.clone().ok_or("workflow_id is NULL")?,
            workflow_type_name: self.workflow_type_name.clone().ok_or("workflow_type_name is NULL")?,
            start_time,
            // NULL: Temporal's readers fall back to the start time.
            execution_time: match self.execution_time {
                None => start_time,
                Some(_) => time("execution_time", self.execution_time)?,
            },
            close_time,
            status,
            history_length: self.history_length,
            history_size_bytes: None,
            execution_duration: None,
            state_transition_count: None,
            memo: self.memo.clone(),
            // Kept as stored: Temporal v1.23 writes `Memo.EncodingType.String()`
            // ("Proto3") itself, so a NULL or empty value is not something Temporal would
            // have written for this run and vismig does not invent one ("" is copied).
            encoding: self.encoding.clone().unwrap_or_default(),
            task_queue: self.task_queue.clone().unwrap_or_default(),
            // Standard visibility has no search attributes, parents or version.
            search_attributes: None,
            parent_workflow_id: None,
            parent_run_id: None,
            // Runs started before v1.24 have no root: Temporal's advanced schema holds ''
            // for them (NOT NULL DEFAULT '').
            root_workflow_id: String::new(),
            root_run_id: String::new(),
            version: 0,
        })
    }

    fn bad(&self, reason: String) -> BadRow {
        let ms = |v: Option<i64>| v.map(serde_json::Value::from).unwrap_or(serde_json::Value::Null);
        BadRow {
            namespace_id: self.namespace_id.to_string(),
            run_id: self.run_id.to_string(),
            workflow_id: self.workflow_id.clone(),
            reason,
            raw: serde_json::json!({
                "table": self.table.name(),
                "workflow_id": self.workflow_id,
                "workflow_type_name": self.workflow_type_name,
                "start_time_ms": ms(self.start_time),
                "execution_time_ms": ms(self.execution_time),
                "close_time_ms": ms(self.close_time),
                "status": self.status,
                "history_length": self.history_length,
                "memo": self.memo.as_ref().map(|m| serde_json::json!({ "hex": m.iter().map(|b| format!("{b:02x}")).collect::<String>() })),
                "encoding": self.encoding,
                "task_queue": self.task_queue,
            }),
        }
    }
}

/// Decodes a page of rows into records and bad rows.
pub(super) fn decode_page(rows: Vec<Raw>, cursor: Option<Cursor>, done: bool) -> ScanPage {
    let mut page = ScanPage { records: Vec::with_capacity(rows.len()), bad_rows: Vec::new(), cursor, done };
    for row in &rows {
        match row.decode() {
            Ok(record) => page.records.push(record),
            Err(reason) => page.bad_rows.push(row.bad(reason)),
        }
    }
    page
}
