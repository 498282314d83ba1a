//! Health signals of a PostgreSQL store: as a secondary, the replay lag of its replicas
//! (`pg_stat_replication`, which needs superuser or `pg_monitor` to show the lag); as a
//! primary read through a replica, that replica's own lag.

use sqlx::Row;

use super::PostgresStore;
use crate::store::health::{Reading, Role};
use crate::store::sql::classify;
use crate::store::{Store, StoreResult};

/// `replay_lag` grows while a replica does not replay what it received (it is measured
/// from when the server flushed the WAL the replica has not applied yet); NULL once it
/// caught up and stayed idle.
const REPLICAS: &str = "SELECT coalesce(nullif(application_name, ''), 'replica') || ' at ' || coalesce(client_addr::text, 'local socket'), \
     coalesce(extract(epoch FROM replay_lag)::float8, 0) FROM pg_stat_replication";

/// On a replica: how far replay is behind what it received, as the age of the last
/// transaction replayed; 0 when it replayed everything it received (an idle primary
/// is no lag).
const OWN_LAG: &str = "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() \
     OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8 \
     ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 0) END";

impl PostgresStore {
    pub(super) async fn health_readings(&self, role: Role) -> StoreResult<Vec<Reading>> {
        let what = || self.context("reading replication lag");
        match role {
            Role::Secondary => {
                let rows = sqlx::query(REPLICAS).fetch_all(&self.pool).await.map_err(|e| classify(&what(), e))?;
                Ok(rows
                    .iter()
                    .map(|r| Reading::ReplicaLag { replica: r.get(0), seconds: r.get::<f64, _>(1).max(0.0) })
                    .collect())
            }
            Role::Primary => {
                let row = sqlx::query(OWN_LAG).fetch_one(&self.pool).await.map_err(|e| classify(&what(), e))?;
                let in_recovery: bool = row.get(0);
                Ok(if in_recovery {
                    vec![Reading::ReplicaLag { replica: self.describe(), seconds: row.get::<f64, _>(1).max(0.0) }]
                } else {
                    Vec::new()
                })
            }
        }
    }
}
