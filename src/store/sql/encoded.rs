//! A record as the values of one row of a multi-row upsert, in `BASE_COLUMNS` order, and
//! the one bind list every dialect uses; only how times and JSON are held differs.

use chrono::{DateTime, Utc};
use sqlx::Database;
use sqlx::query_builder::Separated;

use super::query::Bind;
use crate::record::{SearchAttributes, VisibilityRecord};

/// A record as one dialect binds it: `Time` is its time value (SQLite: Go's text layout;
/// MySQL and PostgreSQL: naive UTC), `Json` its search attributes (text, or a JSONB value).
#[derive(Debug)]
pub struct EncodedRow<Time, Json = String> {
    pub namespace_id: String,
    pub run_id: String,
    pub workflow_type_name: String,
    pub workflow_id: String,
    pub start_time: Time,
    pub execution_time: Time,
    pub status: i32,
    pub close_time: Option<Time>,
    pub history_length: Option<i64>,
    pub history_size_bytes: Option<i64>,
    pub execution_duration: Option<i64>,
    pub state_transition_count: Option<i64>,
    pub memo: Option<Vec<u8>>,
    pub encoding: String,
    pub task_queue: String,
    pub search_attributes: Option<Json>,
    pub parent_workflow_id: Option<String>,
    pub parent_run_id: Option<String>,
    pub root_workflow_id: String,
    pub root_run_id: String,
    pub version: i64,
}

impl<Time, Json> EncodedRow<Time, Json> {
    /// `time` converts each time, told its column (for the errors it may collect);
    /// `json` the search attributes.
    pub fn new(
        r: &VisibilityRecord,
        mut time: impl FnMut(&'static str, DateTime<Utc>) -> Time,
        json: impl Fn(&SearchAttributes) -> Json,
    ) -> Self {
        EncodedRow {
            namespace_id: r.namespace_id.clone(),
            run_id: r.run_id.clone(),
            workflow_type_name: r.workflow_type_name.clone(),
            workflow_id: r.workflow_id.clone(),
            start_time: time("start_time", r.start_time),
            execution_time: time("execution_time", r.execution_time),
            status: r.status.as_i32(),
            close_time: r.close_time.map(|t| time("close_time", t)),
            history_length: r.history_length,
            history_size_bytes: r.history_size_bytes,
            execution_duration: r.execution_duration,
            state_transition_count: r.state_transition_count,
            memo: r.memo.clone(),
            encoding: r.encoding.clone(),
            task_queue: r.task_queue.clone(),
            search_attributes: r.search_attributes.as_ref().map(json),
            parent_workflow_id: r.parent_workflow_id.clone(),
            parent_run_id: r.parent_run_id.clone(),
            root_workflow_id: r.root_workflow_id.clone(),
            root_run_id: r.root_run_id.clone(),
            version: r.version,
        }
    }

    /// Binds the values of `columns` (base columns the table has, in `BASE_COLUMNS`
    /// order) as one tuple of a `VALUES` list.
    pub fn push_binds<DB: Database>(&self, b: &mut Separated<'_, DB, &'static str>, columns: &[&str])
    where
        String: Bind<DB>,
        Time: Bind<DB>,
        Option<Time>: Bind<DB>,
        i32: Bind<DB>,
        i64: Bind<DB>,
        Option<i64>: Bind<DB>,
        Option<Vec<u8>>: Bind<DB>,
        Option<String>: Bind<DB>,
        Option<Json>: Bind<DB>,
    {
        for column in columns {
            match *column {
                "namespace_id" => b.push_bind(&self.namespace_id),
                "run_id" => b.push_bind(&self.run_id),
                "workflow_type_name" => b.push_bind(&self.workflow_type_name),
                "workflow_id" => b.push_bind(&self.workflow_id),
                "start_time" => b.push_bind(&self.start_time),
                "execution_time" => b.push_bind(&self.execution_time),
                "status" => b.push_bind(self.status),
                "close_time" => b.push_bind(&self.close_time),
                "history_length" => b.push_bind(self.history_length),
                "history_size_bytes" => b.push_bind(self.history_size_bytes),
                "execution_duration" => b.push_bind(self.execution_duration),
                "state_transition_count" => b.push_bind(self.state_transition_count),
                "memo" => b.push_bind(&self.memo),
                "encoding" => b.push_bind(&self.encoding),
                "task_queue" => b.push_bind(&self.task_queue),
                "search_attributes" => b.push_bind(&self.search_attributes),
                "parent_workflow_id" => b.push_bind(&self.parent_workflow_id),
                "parent_run_id" => b.push_bind(&self.parent_run_id),
                "root_workflow_id" => b.push_bind(&self.root_workflow_id),
                "root_run_id" => b.push_bind(&self.root_run_id),
                "_version" => b.push_bind(self.version),
                other => unreachable!("not a base column: {other}"),
            };
        }
    }
}
