//! Temporal's namespace records when its default store (`persistence.defaultStore`) is
//! Cassandra: the `namespaces` table of Temporal's main keyspace
//! (schema/cassandra/temporal/schema.cql), not the visibility keyspace. Temporal keeps
//! every namespace in partition 0 of that table, with `detail` (a serialized
//! `NamespaceDetail`) and `detail_encoding`, the same blob the SQL stores call `data`.

use scylla::value::CqlValue;
use uuid::Uuid;

use super::CassandraStore;
use crate::store::namespaces::NamespaceRecord;

/// The one partition Temporal writes namespaces to (`constNamespacePartition`).
const NAMESPACES_PARTITION: i32 = 0;

/// A row of partition 0 that is not a namespace: Temporal's notification-version counter
/// (`namespaceMetadataRecordName`), which Temporal itself skips when listing.
const METADATA_ROW: &str = "temporal-namespace-metadata";

impl CassandraStore {
    /// Every namespace record of this keyspace. A namespace row without its id, detail or
    /// encoding (Temporal always writes all three) is one error line naming the store and
    /// the namespace, as an unreadable row of a SQL default store is.
    pub async fn namespace_records(&self) -> anyhow::Result<Vec<NamespaceRecord>> {
        type Row = (String, Option<Uuid>, Option<Vec<u8>>, Option<String>);
        let cql = format!(
            "SELECT name, id, detail, detail_encoding FROM {}.namespaces WHERE namespaces_partition = ?",
            self.keyspace
        );
        let mut rows: Vec<Row> = Vec::new();
        self.stream::<Row, _>(&cql, vec![CqlValue::Int(NAMESPACES_PARTITION)], "reading the namespaces table", |row| {
            rows.push(row)
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e} (persistence.defaultStore must be Temporal's main keyspace, schema/cassandra/temporal)"
            )
        })?;
        rows.into_iter()
            .filter(|(name, ..)| name != METADATA_ROW)
            .map(|(name, id, detail, encoding)| match (id, detail, encoding) {
                (Some(id), Some(data), Some(encoding)) => {
                    Ok(NamespaceRecord { name, id: id.to_string(), data, encoding })
                }
                (id, detail, _) => {
                    let missing = if id.is_none() {
                        "id"
                    } else if detail.is_none() {
                        "detail"
                    } else {
                        "detail_encoding"
                    };
                    Err(anyhow::anyhow!(
                        "{}: namespace {name:?} has a NULL {missing} in the namespaces table",
                        self.context("namespace records")
                    ))
                }
            })
            .collect()
    }
}
