//! Health signals of a MySQL/MariaDB secondary: the lag of the replicas listed in
//! `migration.health.mysqlReplicas`, asked of each replica (the source does not know
//! it), with the secondary's own user, password and TLS.

use sqlx::mysql::MySqlRow;
use sqlx::{ConnectOptions, Connection, Row};

use super::MysqlStore;
use crate::store::health::{Probe, Reading, Role};
use crate::store::sql::{classify, parse_address};
use crate::store::{StoreError, StoreResult};

impl MysqlStore {
    pub(super) async fn health_readings(&self, probe: Probe<'_>) -> StoreResult<Vec<Reading>> {
        if probe.role == Role::Primary {
            return Ok(Vec::new());
        }
        let mut readings = Vec::new();
        for replica in probe.mysql_replicas {
            let seconds = self.replica_lag(replica).await?;
            readings.push(Reading::ReplicaLag { replica: format!("replica {replica}"), seconds });
        }
        Ok(readings)
    }

    async fn replica_lag(&self, replica: &str) -> StoreResult<f64> {
        let what = format!("replica {replica} (migration.health.mysqlReplicas)");
        let (host, port) = parse_address(replica, 3306).map_err(|e| StoreError::Permanent(format!("{what}: {e}")))?;
        let mut conn = self.options.clone().host(&host).port(port).connect().await.map_err(|e| classify(&what, e))?;
        // MySQL 8.0.22+ and MariaDB 10.5.1+ say REPLICA; older ones only SLAVE.
        let rows = match sqlx::query("SHOW REPLICA STATUS").fetch_all(&mut conn).await {
            Ok(rows) => rows,
            Err(_) => sqlx::query("SHOW SLAVE STATUS").fetch_all(&mut conn).await.map_err(|e| classify(&what, e))?,
        };
        let _ = conn.close().await;
        let Some(row) = rows.first() else {
            return Err(StoreError::Permanent(format!("{what}: not a replica (SHOW REPLICA STATUS is empty)")));
        };
        seconds_behind(row).ok_or_else(|| {
            StoreError::Transient(format!("{what}: replication is not running (Seconds_Behind_Source is NULL)"))
        })
    }
}

/// `Seconds_Behind_Source` (MySQL 8.0.22+) or `Seconds_Behind_Master`; None while the
/// replica's SQL thread is not running.
fn seconds_behind(row: &MySqlRow) -> Option<f64> {
    ["Seconds_Behind_Source", "Seconds_Behind_Master"].iter().find_map(|column| {
        row.try_get::<Option<u64>, _>(*column)
            .map(|v| v.map(|n| n as f64))
            .or_else(|_| row.try_get::<Option<i64>, _>(*column).map(|v| v.map(|n| n.max(0) as f64)))
            .ok()
            .flatten()
    })
}
