//! `impl Source` for Cassandra: the paged scan of a shard, counts and the estimate.
//!
//! Scans page along the clustering key with a cursor `(time, run id)` of the last row,
//! never with a driver paging state, so a resumed run re-queries from the key. With a
//! DESC time column, "after (t, r)" is `time = t AND run_id > r` followed by `time < t`:
//! two slices, because a CQL tuple comparison `(time, run_id) > (t, r)` compares values
//! in their natural order and would walk the wrong way on the DESC column.
//!
//! A run in both tables (its close batch's delete of the open row missed, or it closed
//! while the scan ran): the secondary's writes are insert-if-absent for records without
//! a version, so a stale open copy landing first would block the closed one for good.
//! For every open row, the scan therefore looks the workflow id up in
//! `closed_executions` through Temporal's secondary index `closed_by_workflow_id`
//! (restricted to the namespace's partition) and, when a closed row with the same run id
//! exists, emits the closed record instead. A run that closes after that lookup is
//! written by Temporal's own dual write, whose close replaces the open record.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::value::{CqlTimestamp, CqlValue};
use uuid::Uuid;

use super::CassandraStore;
use super::codec::{CLOSED_COLUMNS, ClosedRow, OpenRow, Raw, decode_page};
use super::plan::{self, ClusteringKey, GridCursor, GridShard, SavedCursor, Shard, TimeWindow};
use super::schema::Table;
use crate::record::ExecutionStatus;
use crate::store::{CountQuery, Counts, Cursor, ScanPage, ShardSpec, Source, Split, Store, StoreError, StoreResult};

/// Per status, the runs counted and how many of them changed after the cut-off.
type StatusCounts = BTreeMap<i64, (i64, i64)>;

#[async_trait]
impl Source for CassandraStore {
    async fn plan_shards(&self, namespaces: &[String], split: &Split) -> StoreResult<Vec<ShardSpec>> {
        self.check_schema().await?;
        let namespaces = self.namespaces(namespaces).await?;
        Ok(plan::plan(&namespaces, split))
    }

    /// Time windows of the planner before the grid were laid out from the oldest close
    /// time each process found when it planned: one process's windows cover all time,
    /// but the windows of processes that planned at different times may not meet.
    fn check_resume(&self, shards: &[ShardSpec], split: &Split) -> StoreResult<()> {
        if split.process_count <= 1 || !plan::has_bounded_closed_windows(shards) {
            return Ok(());
        }
        Err(StoreError::Permanent(format!(
            "{}: this checkpoint was planned by an older vismig, whose Cassandra time windows can leave gaps between the processes of --shard I/{}; move the checkpoint of every process away and rerun them all (records already copied are found present and skipped, never written twice)",
            self.describe(),
            split.process_count
        )))
    }

    async fn scan(&self, shard: &ShardSpec, after: Option<&Cursor>, limit: usize) -> StoreResult<ScanPage> {
        let shard = Shard::from_spec(shard)?;
        let ns = shard.namespace()?;
        match shard {
            Shard::Grid(g) => self.scan_grid(&g, ns, after, limit).await,
            Shard::Window(w) => self.scan_window(&w, ns, after, limit).await,
        }
    }

    /// Counts the keys (run ids only) of both tables, paged: exact but it reads every
    /// key once; there is no cheap per-partition row count in Cassandra.
    async fn estimate(&self, namespaces: &[String]) -> StoreResult<u64> {
        self.check_schema().await?;
        let mut n = 0u64;
        for ns in self.namespaces(namespaces).await? {
            for table in [Table::Open, Table::Closed] {
                let cql = format!(
                    "SELECT run_id FROM {} WHERE namespace_id = ? AND namespace_partition = 0",
                    self.table(table)
                );
                self.stream::<(Uuid,), _>(&cql, vec![CqlValue::Uuid(ns)], "estimating", |_| n += 1).await?;
            }
        }
        Ok(n)
    }
}

impl CassandraStore {
    /// Pages through a light projection of both tables per namespace (never COUNT(*)
    /// over a partition): a run in both tables counts once, as closed.
    pub(super) async fn count_by_status(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.check_schema().await?;
        // Stored times are whole milliseconds: `t >= cutoff` is `t >= ceil(cutoff in ms)`.
        let cutoff = (query.cutoff.timestamp_micros() + 999).div_euclid(1000);
        let mut counts = Counts::new();
        for ns in self.namespaces(&query.namespaces).await? {
            let by_status = self.count_namespace(ns, cutoff).await?;
            let ns = ns.to_string();
            for (status, (total, recent)) in by_status {
                crate::store::add_count(&mut counts, &self.describe(), &ns, status, total, recent);
            }
        }
        Ok(counts)
    }

    /// One namespace's counts: the closed table's by status, then the open runs with no
    /// closed row, as running. `cutoff` in epoch milliseconds.
    async fn count_namespace(&self, ns: Uuid, cutoff: i64) -> StoreResult<StatusCounts> {
        let mut open: HashMap<Uuid, bool> = HashMap::new();
        let cql = format!(
            "SELECT run_id, start_time FROM {} WHERE namespace_id = ? AND namespace_partition = 0",
            self.table(Table::Open)
        );
        self.stream::<(Uuid, CqlTimestamp), _>(&cql, vec![CqlValue::Uuid(ns)], "counting", |(run, start)| {
            open.insert(run, start.0 >= cutoff);
        })
        .await?;
        let mut by_status = StatusCounts::new();
        let cql = format!(
            "SELECT run_id, status, start_time, close_time FROM {} WHERE namespace_id = ? AND namespace_partition = 0",
            self.table(Table::Closed)
        );
        self.stream::<(Uuid, Option<i32>, Option<CqlTimestamp>, CqlTimestamp), _>(
            &cql,
            vec![CqlValue::Uuid(ns)],
            "counting",
            |(run, status, start, close)| {
                open.remove(&run);
                let recent = close.0 >= cutoff || start.is_some_and(|s| s.0 >= cutoff);
                // A closed row with an open status is a bad row when copied: not counted either.
                let status = status.map(i64::from).filter(|s| !matches!(s, 1 | 8)).unwrap_or(0);
                let e = by_status.entry(status).or_default();
                e.0 += 1;
                e.1 += recent as i64;
            },
        )
        .await?;
        if !open.is_empty() {
            let e = by_status.entry(ExecutionStatus::Running as i64).or_default();
            e.0 += open.len() as i64;
            e.1 += open.values().filter(|r| **r).count() as i64;
        }
        Ok(by_status)
    }

    /// The namespace ids to work on: the given ones (which must be UUIDs), else every
    /// namespace with a partition in either table.
    async fn namespaces(&self, given: &[String]) -> StoreResult<Vec<Uuid>> {
        if !given.is_empty() {
            return given
                .iter()
                .map(|n| {
                    Uuid::parse_str(n.trim()).map_err(|_| {
                        StoreError::Permanent(
                            self.context(&format!("namespace {n:?} is not a namespace id (Cassandra stores UUIDs)")),
                        )
                    })
                })
                .collect();
        }
        let mut found = BTreeSet::new();
        for table in [Table::Open, Table::Closed] {
            let cql = format!("SELECT DISTINCT namespace_id, namespace_partition FROM {}", self.table(table));
            self.stream::<(Uuid, i32), _>(&cql, vec![], "listing namespaces", |(ns, partition)| {
                if partition == 0 {
                    found.insert(ns);
                }
            })
            .await?;
        }
        Ok(found.into_iter().collect())
    }

    /// The newest close time of a namespace's closed rows before `before` (of all when
    /// None), if any: one row read, along the clustering order.
    async fn newest_close_before(&self, ns: Uuid, before: Option<i64>) -> StoreResult<Option<i64>> {
        let mut cql = format!(
            "SELECT close_time FROM {} WHERE namespace_id = ? AND namespace_partition = 0",
            self.table(Table::Closed)
        );
        let mut values = vec![CqlValue::Uuid(ns)];
        if let Some(t) = before {
            cql.push_str(" AND close_time < ?");
            values.push(CqlValue::Timestamp(CqlTimestamp(t)));
        }
        cql.push_str(" LIMIT 1");
        let rows: Vec<(CqlTimestamp,)> = self.fetch(&cql, values, "scanning").await?;
        Ok(rows.first().map(|(t,)| t.0))
    }

    /// One page of a grid shard: its days newest first, each read along the clustering
    /// order; an exhausted day leads to the next of the shard's days that can hold rows
    /// (found from the newest row below it, so empty stretches cost one read, not one
    /// per day). The shard is done when no closed row is older than its current day.
    async fn scan_grid(&self, g: &GridShard, ns: Uuid, after: Option<&Cursor>, limit: usize) -> StoreResult<ScanPage> {
        let start = match after {
            Some(c) => Some(GridCursor::from_cursor(c)?),
            None => self.newest_close_before(ns, None).await?.map(|t| g.cursor_at(t)),
        };
        let Some(mut at) = start else {
            return Ok(ScanPage { records: Vec::new(), bad_rows: Vec::new(), cursor: None, done: true });
        };
        let mut rows = Vec::new();
        let done = loop {
            let want = limit - rows.len();
            let got = self.page_rows(&g.day_window(at.day), ns, at.after.as_ref(), want).await?;
            let full = got.len() >= want;
            if let Some(last) = got.last() {
                at.after = Some(last.clustering_key());
            }
            rows.extend(got);
            if full {
                break false;
            }
            match self.newest_close_before(ns, Some(at.day * g.grid_ms)).await? {
                None => break true,
                Some(t) => at = g.cursor_at(t),
            }
        };
        Ok(decode_page(rows, Some(at.to_cursor()), done))
    }

    /// One page of a time window: an open partition, or a closed window of a checkpoint
    /// made before the grid. Open rows whose run also has a closed row come out closed.
    async fn scan_window(
        &self,
        w: &TimeWindow,
        ns: Uuid,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<ScanPage> {
        let after = after.map(ClusteringKey::from_cursor).transpose()?;
        let mut rows = self.page_rows(w, ns, after.as_ref(), limit).await?;
        let done = rows.len() < limit;
        let cursor = rows.last().map(|r| r.clustering_key().to_cursor());
        if w.table == Table::Open && !rows.is_empty() {
            self.replace_with_closed_twins(ns, &mut rows).await?;
        }
        Ok(decode_page(rows, cursor, done))
    }

    /// Rows of one window after `after`, in clustering order, at most `limit`.
    async fn page_rows(
        &self,
        w: &TimeWindow,
        ns: Uuid,
        after: Option<&ClusteringKey>,
        limit: usize,
    ) -> StoreResult<Vec<Raw>> {
        let limit = limit.clamp(1, i32::MAX as usize);
        let time = w.table.time_column();
        let base = format!(
            "SELECT {} FROM {} WHERE namespace_id = ? AND namespace_partition = 0",
            w.table.columns().join(", "),
            self.table(w.table)
        );
        let mut out = Vec::new();
        // The rest of the cursor's own time, then everything older; else from the window's end.
        let before = match after {
            Some(key) => {
                out = self.rows_at_cursor_time(w.table, &base, ns, key, limit).await?;
                if out.len() >= limit {
                    return Ok(out);
                }
                Some(key.time)
            }
            None => w.to,
        };
        let mut cql = base;
        let mut values = vec![CqlValue::Uuid(ns)];
        if let Some(t) = before {
            cql.push_str(&format!(" AND {time} < ?"));
            values.push(CqlValue::Timestamp(CqlTimestamp(t)));
        }
        if let Some(from) = w.from {
            cql.push_str(&format!(" AND {time} >= ?"));
            values.push(CqlValue::Timestamp(CqlTimestamp(from)));
        }
        cql.push_str(" LIMIT ?");
        values.push(CqlValue::Int((limit - out.len()) as i32));
        out.extend(self.fetch_raw(w.table, &cql, values).await?);
        Ok(out)
    }

    /// The first slice of "after (t, r)": the rows at the cursor's time t whose run id
    /// follows r, at most `limit`.
    async fn rows_at_cursor_time(
        &self,
        table: Table,
        base: &str,
        ns: Uuid,
        key: &ClusteringKey,
        limit: usize,
    ) -> StoreResult<Vec<Raw>> {
        let run = key.run_uuid()?;
        let cql = format!("{base} AND {} = ? AND run_id > ? LIMIT ?", table.time_column());
        let values = vec![
            CqlValue::Uuid(ns),
            CqlValue::Timestamp(CqlTimestamp(key.time)),
            CqlValue::Uuid(run),
            CqlValue::Int(limit as i32),
        ];
        self.fetch_raw(table, &cql, values).await
    }

    async fn fetch_raw(&self, table: Table, cql: &str, values: Vec<CqlValue>) -> StoreResult<Vec<Raw>> {
        Ok(match table {
            Table::Open => self.fetch::<OpenRow>(cql, values, "scanning").await?.into_iter().map(Raw::open).collect(),
            Table::Closed => {
                self.fetch::<ClosedRow>(cql, values, "scanning").await?.into_iter().map(Raw::closed).collect()
            }
        })
    }

    /// Swaps each open row whose run also has a closed row for that closed row.
    async fn replace_with_closed_twins(&self, ns: Uuid, rows: &mut [Raw]) -> StoreResult<()> {
        let twins = self.closed_twins(ns, rows).await?;
        if twins.is_empty() {
            return Ok(());
        }
        tracing::info!(
            store = %self.describe(),
            namespace_id = %ns,
            runs = twins.len(),
            "runs found in both open_executions and closed_executions: copied as closed"
        );
        for row in rows {
            if let Some(twin) = twins.get(&row.run_id) {
                *row = twin.clone();
            }
        }
        Ok(())
    }

    /// Closed rows of the given runs of one namespace, found through Temporal's
    /// `closed_by_workflow_id` index (by workflow id, inside the namespace's partition).
    /// Paged: a cron workflow may have thousands of closed runs under one id.
    async fn closed_twins(&self, ns: Uuid, open: &[Raw]) -> StoreResult<HashMap<Uuid, Raw>> {
        let runs: BTreeSet<Uuid> = open.iter().map(|r| r.run_id).collect();
        let workflows: BTreeSet<String> = open.iter().filter_map(|r| r.workflow_id.clone()).collect();
        let cql = format!(
            "SELECT {} FROM {} WHERE namespace_id = ? AND namespace_partition = 0 AND workflow_id = ?",
            CLOSED_COLUMNS.join(", "),
            self.table(Table::Closed)
        );
        let (cql, runs) = (&cql, &runs);
        let lookups: Vec<_> = workflows
            .into_iter()
            .map(|wf| {
                Box::pin(async move {
                    let mut twins = Vec::new();
                    self.stream::<ClosedRow, _>(
                        cql,
                        vec![CqlValue::Uuid(ns), CqlValue::Text(wf)],
                        "looking up closed runs of open rows",
                        |row| {
                            if runs.contains(&row.1) {
                                twins.push(Raw::closed(row));
                            }
                        },
                    )
                    .await
                    .map(|()| twins)
                })
            })
            .collect();
        let found: Vec<Vec<Raw>> = futures::stream::iter(lookups).buffer_unordered(8).try_collect().await?;
        Ok(found.into_iter().flatten().map(|r| (r.run_id, r)).collect())
    }
}
