//! The two tables of standard visibility and the preflight check that the keyspace
//! holds them with every column vismig reads; no versions (the schema never changed).

use std::collections::BTreeSet;

use scylla::value::CqlValue;
use serde::{Deserialize, Serialize};

use super::CassandraStore;
use super::codec::{CLOSED_COLUMNS, OPEN_COLUMNS};
use crate::store::schema::SchemaInfo;
use crate::store::{StoreError, StoreResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Open,
    Closed,
}

impl Table {
    pub(super) fn name(self) -> &'static str {
        match self {
            Table::Open => "open_executions",
            Table::Closed => "closed_executions",
        }
    }

    /// The clustering time column, newest first in the partition.
    pub(super) fn time_column(self) -> &'static str {
        match self {
            Table::Open => "start_time",
            Table::Closed => "close_time",
        }
    }

    pub(super) fn columns(self) -> &'static [&'static str] {
        match self {
            Table::Open => &OPEN_COLUMNS,
            Table::Closed => &CLOSED_COLUMNS,
        }
    }
}

/// Standard visibility holds none of the fields Temporal added later; it is read only,
/// so an upgrade path is never asked for.
pub(super) fn schema_info() -> SchemaInfo {
    SchemaInfo::from_columns("standard visibility (Cassandra)".to_string(), |_| false, String::new())
}

impl CassandraStore {
    /// Both tables exist with every column read; checked once per store, then remembered.
    pub(super) async fn check_schema(&self) -> StoreResult<()> {
        self.checked
            .get_or_try_init(|| async {
                for table in [Table::Open, Table::Closed] {
                    self.check_table(table).await?;
                }
                Ok(())
            })
            .await
            .copied()
    }

    async fn check_table(&self, table: Table) -> StoreResult<()> {
        let mut found = BTreeSet::new();
        self.stream::<(String,), _>(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
            vec![CqlValue::Text(self.keyspace.to_lowercase()), CqlValue::Text(table.name().into())],
            "reading the schema",
            |(c,)| {
                found.insert(c);
            },
        )
        .await?;
        if found.is_empty() {
            return Err(StoreError::Permanent(self.context(&format!(
                "table {} does not exist in keyspace {:?}: is this Temporal's Cassandra visibility keyspace (schema/cassandra/visibility)?",
                table.name(),
                self.keyspace
            ))));
        }
        let wanted = table.columns().iter().chain(["namespace_partition"].iter());
        let missing: Vec<&str> = wanted.filter(|c| !found.contains(**c)).copied().collect();
        if !missing.is_empty() {
            return Err(StoreError::Permanent(self.context(&format!(
                "table {} has no column {}",
                table.name(),
                missing.join(", ")
            ))));
        }
        Ok(())
    }
}
