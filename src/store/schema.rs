//! Which record fields a store's schema can hold, and which schema version it is.
//!
//! Temporal added visibility fields release by release (reference §2.10, §5.1): a
//! v1.21 store has no `execution_duration`, a v1.24 one no `_version`, and so on. Each
//! store reports what its schema holds; preflight compares the two sides so that a
//! field the primary has is never dropped silently by an older secondary.

use std::collections::BTreeSet;

use crate::record::VisibilityRecord;

/// The record fields that exist in some Temporal schemas and not in others, named as
/// the SQL columns (Elasticsearch maps them to its own field names). Every other field
/// (ids, type, times, status, history length, memo, task queue) is in every schema.
pub const VERSIONED_FIELDS: [&str; 9] = [
    "search_attributes",
    "history_size_bytes",
    "execution_duration",
    "state_transition_count",
    "parent_workflow_id",
    "parent_run_id",
    "root_workflow_id",
    "root_run_id",
    "_version",
];

/// What one side's schema is and can hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaInfo {
    /// The version as the store records it, for messages: `schema 1.3` (the
    /// `schema_version` table), `index template v5` (read from the mapping), ...
    pub version: String,
    /// Which of `VERSIONED_FIELDS` the schema has.
    pub fields: BTreeSet<&'static str>,
    /// How an operator brings this store to Temporal's newest schema, for messages.
    pub upgrade: String,
}

impl SchemaInfo {
    /// A schema that holds every field (the default for stores that do not vary).
    pub fn complete(version: &str) -> Self {
        Self { version: version.to_string(), fields: VERSIONED_FIELDS.into_iter().collect(), upgrade: String::new() }
    }

    /// Of `VERSIONED_FIELDS`, those among `columns` (a SQL table's column names).
    pub fn from_columns(version: String, columns: impl Fn(&str) -> bool, upgrade: String) -> Self {
        Self { version, fields: VERSIONED_FIELDS.into_iter().filter(|f| columns(f)).collect(), upgrade }
    }
}

/// Which of `VERSIONED_FIELDS` a SQL table has, as a small copyable set; every other
/// base column is in every advanced schema from 1.3 on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Columns(u16);

impl Columns {
    pub fn of(has: impl Fn(&str) -> bool) -> Self {
        Self(VERSIONED_FIELDS.iter().enumerate().filter(|(_, f)| has(f)).fold(0, |bits, (i, _)| bits | 1 << i))
    }

    /// Whether the table has `column` (true for columns every schema has).
    pub fn has(self, column: &str) -> bool {
        match VERSIONED_FIELDS.iter().position(|f| *f == column) {
            Some(i) => self.0 & (1 << i) != 0,
            None => true,
        }
    }
}

/// The fields `source` holds and `sink` cannot, in `VERSIONED_FIELDS` order.
pub fn missing_in_sink(source: &SchemaInfo, sink: &SchemaInfo) -> Vec<&'static str> {
    VERSIONED_FIELDS.into_iter().filter(|f| source.fields.contains(f) && !sink.fields.contains(f)).collect()
}

/// The Temporal releases whose advanced SQL schema has exactly these versioned
/// columns (reference §2.10), for a store that records no version (SQLite).
pub fn sql_release_of(has: impl Fn(&str) -> bool) -> &'static str {
    if !has("search_attributes") {
        "standard visibility (Temporal v1.23 or older)"
    } else if !has("history_size_bytes") {
        "the columns of Temporal v1.20 (schema 1.2)"
    } else if !has("execution_duration") {
        "the columns of Temporal v1.21-v1.22 (schema 1.3)"
    } else if !has("root_workflow_id") {
        "the columns of Temporal v1.23 (schema 1.4)"
    } else if !has("_version") {
        "the columns of Temporal v1.24-v1.26 (schema 1.5-1.6)"
    } else {
        "the columns of Temporal v1.27 or newer (schema 1.9+)"
    }
}

/// Whether `record` holds a value in `field` that a schema without it would lose:
/// anything but the default Temporal gives the column when it adds it (NULL, `''`, 0).
pub fn has_value(record: &VisibilityRecord, field: &str) -> bool {
    match field {
        "search_attributes" => record.search_attributes.as_ref().is_some_and(|s| !s.0.is_empty()),
        "history_size_bytes" => record.history_size_bytes.is_some(),
        "execution_duration" => record.execution_duration.is_some(),
        "state_transition_count" => record.state_transition_count.is_some(),
        "parent_workflow_id" => record.parent_workflow_id.is_some(),
        "parent_run_id" => record.parent_run_id.is_some(),
        "root_workflow_id" => !record.root_workflow_id.is_empty(),
        "root_run_id" => !record.root_run_id.is_empty(),
        "_version" => record.version != 0,
        _ => false,
    }
}

/// `record` as a schema without `fields` keeps it: each of them at Temporal's default.
pub fn without_fields(record: &VisibilityRecord, fields: &[&str]) -> VisibilityRecord {
    let mut r = record.clone();
    for field in fields {
        match *field {
            "search_attributes" => r.search_attributes = None,
            "history_size_bytes" => r.history_size_bytes = None,
            "execution_duration" => r.execution_duration = None,
            "state_transition_count" => r.state_transition_count = None,
            "parent_workflow_id" => r.parent_workflow_id = None,
            "parent_run_id" => r.parent_run_id = None,
            "root_workflow_id" => r.root_workflow_id.clear(),
            "root_run_id" => r.root_run_id.clear(),
            "_version" => r.version = 0,
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_are_those_only_the_source_has() {
        let v13 = ["search_attributes", "history_size_bytes"];
        let old = SchemaInfo::from_columns("schema 1.3".into(), |c| v13.contains(&c), String::new());
        let new = SchemaInfo::complete("schema 1.14");
        assert!(missing_in_sink(&old, &new).is_empty(), "an older primary fits a newer secondary");
        assert_eq!(
            missing_in_sink(&new, &old),
            [
                "execution_duration",
                "state_transition_count",
                "parent_workflow_id",
                "parent_run_id",
                "root_workflow_id",
                "root_run_id",
                "_version"
            ]
        );
        assert_eq!(sql_release_of(|c| v13.contains(&c)), "the columns of Temporal v1.21-v1.22 (schema 1.3)");
        let columns = Columns::of(|c| v13.contains(&c));
        assert!(columns.has("history_size_bytes") && columns.has("workflow_id") && !columns.has("_version"));
    }

    #[test]
    fn values_are_those_a_schema_without_the_field_would_lose() {
        let mut g = crate::seed::Generator::new(7, chrono::Utc::now());
        let r = (0..50).map(|_| g.next_record()).find(|r| r.parent_workflow_id.is_some() && r.version > 0).unwrap();
        assert!(has_value(&r, "parent_workflow_id") && has_value(&r, "_version"));
        let stripped = without_fields(&r, &VERSIONED_FIELDS);
        assert!(VERSIONED_FIELDS.iter().all(|f| !has_value(&stripped, f)));
        assert_eq!(stripped.workflow_id, r.workflow_id);
    }
}
