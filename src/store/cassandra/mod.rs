//! Cassandra standard visibility (Temporal v1.23 and before,
//! `schema/cassandra/visibility/schema.cql`): a source only.
//!
//! Layout (shared/reference/temporal-visibility.md §4): tables `open_executions` and
//! `closed_executions`, each partitioned by `(namespace_id uuid, namespace_partition int)`
//! with `namespace_partition` always 0, so a namespace is one partition per table.
//! Clustering is `start_time DESC, run_id ASC` (open) and `close_time DESC, run_id ASC`
//! (closed); times are millisecond timestamps.
//!
//! Shards: per namespace, the closed partition is cut along a fixed grid of UTC days of
//! `close_time` (so one huge partition is scanned in parallel): with P parts in all
//! (`concurrency` x the N of `--shard I/N`), part p scans the days d with d mod P = p,
//! newest first. The plan depends on nothing but the namespace ids and P, never on the
//! data or the moment it is made, so processes of an Indexed Job that plan days apart
//! (a pod restarted after TTL expired the oldest rows) still divide the days between
//! them without a gap. The open partition is one shard, owned by the part its namespace
//! id hashes to. Closed shards come first in the plan, open shards last.
//!
//! Checkpoints made before the grid hold time windows `[from, to)` laid out from the
//! oldest close time found at plan time; they are still scanned as they are. With one
//! process its windows cover all time, so resuming is safe; with `--shard I/N`, N > 1,
//! the processes' windows may not meet, and resuming is refused (see `check_resume`).
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
//!
//! Reading must not hurt production: every statement is paged (`LIMIT`), read at
//! LOCAL_QUORUM unless Temporal's `consistency.default.consistency` says otherwise,
//! with a request timeout; timeouts, unavailable and overloaded errors are transient,
//! so the pipeline backs off (its rate limit applies per page).

mod namespace_records;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use scylla::client::PoolSize;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::frame::types::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OnceCell};
use uuid::Uuid;

use crate::config::persistence::{CassandraStore as CassandraConfig, Tls};
use crate::record::{ExecutionStatus, RecordKey, VisibilityRecord};
use crate::store::{
    BadRow, CountQuery, Counts, Cursor, ScanPage, ShardSpec, Source, Split, Store, StoreError, StoreResult,
};

const DEFAULT_PORT: u16 = 9042;
/// Page size of the streamed reads (counts, estimates, shard planning).
const STREAM_PAGE: i32 = 5_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The closed table's grid: UTC days since the Unix epoch. A constant, so that every
/// process, whenever it plans, cuts the same days.
const GRID_MS: i64 = 24 * 3600 * 1000;

const OPEN_COLUMNS: [&str; 9] = [
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
const CLOSED_COLUMNS: [&str; 12] = [
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

type OpenRow = (
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
type ClosedRow = (
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Open,
    Closed,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Open => "open_executions",
            Table::Closed => "closed_executions",
        }
    }
    fn time_column(self) -> &'static str {
        match self {
            Table::Open => "start_time",
            Table::Closed => "close_time",
        }
    }
    fn columns(self) -> &'static [&'static str] {
        match self {
            Table::Open => &OPEN_COLUMNS,
            Table::Closed => &CLOSED_COLUMNS,
        }
    }
}

/// A shard: one namespace's rows of one table whose clustering time (start time for
/// open, close time for closed) lies in `[from, to)`, in epoch milliseconds; open-ended
/// where None. The open table's shards (from and to None); closed-table windows with
/// bounds come only from checkpoints of the planner before the grid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeWindow {
    pub namespace_id: String,
    pub table: Table,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl TimeWindow {
    fn to_spec(&self) -> ShardSpec {
        ShardSpec(serde_json::to_value(self).expect("time window serializes"))
    }
}

/// The clustering key of the last row read: `(time ms, run id)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusteringKey {
    pub time: i64,
    pub run_id: String,
}

/// A shard of the closed table on the day grid: one namespace's rows whose close day
/// `d` (`close_time` div `grid_ms`) has `d mod modulus == residue`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GridShard {
    pub namespace_id: String,
    pub grid_ms: i64,
    pub modulus: i64,
    pub residue: i64,
}

impl GridShard {
    /// The newest day at or before `day` that belongs to this shard.
    pub fn owned_at_or_before(&self, day: i64) -> i64 {
        day - (day - self.residue).rem_euclid(self.modulus)
    }
}

/// Where a grid shard's scan stopped: in day `day`, after the row `after` (from the
/// day's newest row when None). Days are scanned newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GridCursor {
    pub day: i64,
    pub after: Option<ClusteringKey>,
}

/// A shard spec as saved in a checkpoint: a grid shard (has `gridMs`) or a time window.
enum Shard {
    Grid(GridShard),
    Window(TimeWindow),
}

impl Shard {
    fn from_spec(spec: &ShardSpec) -> StoreResult<Self> {
        let what = |e: serde_json::Error| {
            StoreError::Permanent(format!("checkpoint shard {} is not a Cassandra shard: {e}", spec.0))
        };
        if spec.0.get("gridMs").is_some() {
            serde_json::from_value(spec.0.clone()).map(Shard::Grid).map_err(what)
        } else {
            serde_json::from_value(spec.0.clone()).map(Shard::Window).map_err(what)
        }
    }
}

/// The part that owns a namespace's open partition: fixed by its id, not by its place
/// in a list of namespaces that changes as namespaces come and go.
fn open_part(ns: Uuid, parts: usize) -> usize {
    (ns.as_u128() % parts.max(1) as u128) as usize
}

fn parse_namespace(id: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| StoreError::Permanent(format!("checkpoint shard namespace {id:?} is not a UUID")))
}

pub struct CassandraStore {
    name: String,
    hosts: String,
    keyspace: String,
    consistency: Consistency,
    session: Session,
    prepared: Mutex<HashMap<String, PreparedStatement>>,
    checked: OnceCell<()>,
}

impl CassandraStore {
    pub async fn open(name: &str, cfg: &CassandraConfig) -> anyhow::Result<Self> {
        let keyspace = cfg.keyspace.trim().to_string();
        if keyspace.is_empty() || !keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            anyhow::bail!("store {name:?}: cassandra.keyspace {keyspace:?} is not a plain keyspace name");
        }
        let hosts: Vec<String> =
            cfg.hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect();
        if hosts.is_empty() {
            anyhow::bail!("store {name:?}: cassandra.hosts is empty");
        }
        let port = cfg.port.unwrap_or(DEFAULT_PORT);
        let describe = format!("cassandra {}/{keyspace}", hosts.join(","));
        let connect_timeout = parse_duration(cfg.connect_timeout.as_deref()).unwrap_or(Duration::from_secs(10));
        let mut builder = SessionBuilder::new()
            .known_nodes(hosts.iter().map(|h| if h.contains(':') { h.clone() } else { format!("{h}:{port}") }))
            .connection_timeout(connect_timeout)
            // vismig only reads its own tables: no need to fetch every keyspace's schema.
            .keyspaces_to_fetch([keyspace.clone()]);
        if let Some(user) = cfg.user.as_deref().filter(|u| !u.is_empty()) {
            let password = cfg.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
            builder = builder.user(user, password);
        }
        if let Some(dc) = cfg.datacenter.as_deref().filter(|d| !d.is_empty()) {
            builder = builder.prefer_datacenter(dc.to_string());
        }
        if let Some(n) = cfg.max_conns.and_then(|n| NonZeroUsize::new(n as usize)) {
            builder = builder.pool_size(PoolSize::PerHost(n));
        }
        if let Some(tls) = cfg.tls.as_ref().filter(|t| t.enabled) {
            let config = tls_config(tls).map_err(|e| anyhow::anyhow!("store {name:?} ({describe}): tls: {e}"))?;
            builder = builder.tls_context(Some(Arc::new(config)));
        }
        let consistency = match cfg.consistency.as_ref().and_then(|c| c.default.as_ref()).map(|d| d.consistency.clone())
        {
            None => Consistency::LocalQuorum,
            Some(c) => parse_consistency(&c).ok_or_else(|| {
                anyhow::anyhow!(
                    "store {name:?}: cassandra.consistency.default.consistency {c:?} is not a consistency level"
                )
            })?,
        };
        // The driver's timeout covers the TCP connect only: a node that accepts the
        // connection and never answers the handshake would hold the start for a minute.
        let session = match tokio::time::timeout(connect_timeout, builder.build()).await {
            Ok(session) => session.map_err(|e| anyhow::anyhow!("store {name:?} ({describe}): connecting: {e}"))?,
            Err(_) => anyhow::bail!(
                "store {name:?} ({describe}): connecting: no answer within {} s (cassandra.connectTimeout): is the node up, and are hosts and port right?",
                connect_timeout.as_secs_f64()
            ),
        };
        Ok(Self {
            name: name.to_string(),
            hosts: hosts.join(","),
            keyspace,
            consistency,
            session,
            prepared: Mutex::new(HashMap::new()),
            checked: OnceCell::new(),
        })
    }

    fn context(&self, what: &str) -> String {
        format!("store {:?} ({}): {what}", self.name, self.describe())
    }

    fn table(&self, table: Table) -> String {
        format!("{}.{}", self.keyspace, table.name())
    }

    async fn statement(&self, cql: &str, page_size: i32) -> StoreResult<PreparedStatement> {
        let key = format!("{page_size}|{cql}");
        if let Some(p) = self.prepared.lock().await.get(&key) {
            return Ok(p.clone());
        }
        let mut p = self.session.prepare(cql).await.map_err(|e| {
            let message = self.context(&format!("preparing `{cql}`: {e}"));
            if prepare_transient(&e) { StoreError::Transient(message) } else { StoreError::Permanent(message) }
        })?;
        p.set_consistency(self.consistency);
        p.set_page_size(page_size);
        p.set_request_timeout(Some(REQUEST_TIMEOUT));
        self.prepared.lock().await.insert(key, p.clone());
        Ok(p)
    }

    /// One page (the statement carries its own LIMIT), deserialized as `R`.
    async fn fetch<R>(&self, cql: &str, values: Vec<CqlValue>, what: &str) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let statement = self.statement(cql, STREAM_PAGE).await?;
        let result =
            self.session.execute_unpaged(&statement, values).await.map_err(|e| classify(&self.context(what), e))?;
        let rows =
            result.into_rows_result().map_err(|e| StoreError::Permanent(self.context(&format!("{what}: {e}"))))?;
        rows.rows::<R>()
            .map_err(|e| StoreError::Permanent(self.context(&format!("{what}: {e}"))))?
            .collect::<Result<Vec<R>, _>>()
            .map_err(|e| StoreError::Permanent(self.context(&format!("{what}: {e}"))))
    }

    /// Every row of a statement, fetched page by page by the driver, folded by `f`.
    async fn stream<R, F>(&self, cql: &str, values: Vec<CqlValue>, what: &str, mut f: F) -> StoreResult<()>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
        F: FnMut(R),
    {
        let statement = self.statement(cql, STREAM_PAGE).await?;
        let pager = self
            .session
            .execute_iter(statement, values)
            .await
            .map_err(|e| loose(&self.context(what), &e.to_string()))?;
        let mut rows =
            pager.rows_stream::<R>().map_err(|e| StoreError::Permanent(self.context(&format!("{what}: {e}"))))?;
        while let Some(row) = rows.try_next().await.map_err(|e| loose(&self.context(what), &e.to_string()))? {
            f(row);
        }
        Ok(())
    }

    async fn check_schema(&self) -> StoreResult<()> {
        self.checked
            .get_or_try_init(|| async {
                for table in [Table::Open, Table::Closed] {
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
                }
                Ok(())
            })
            .await
            .copied()
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
            Some(c) => Some(serde_json::from_value::<GridCursor>(c.0.clone()).map_err(|e| {
                StoreError::Permanent(format!("checkpoint cursor {} is not a Cassandra grid cursor: {e}", c.0))
            })?),
            None => self
                .newest_close_before(ns, None)
                .await?
                .map(|t| GridCursor { day: g.owned_at_or_before(t.div_euclid(g.grid_ms)), after: None }),
        };
        let Some(mut at) = start else {
            return Ok(ScanPage { records: Vec::new(), bad_rows: Vec::new(), cursor: None, done: true });
        };
        let mut rows = Vec::new();
        let done = loop {
            let day = TimeWindow {
                namespace_id: g.namespace_id.clone(),
                table: Table::Closed,
                from: Some(at.day * g.grid_ms),
                to: Some((at.day + 1) * g.grid_ms),
            };
            let want = limit - rows.len();
            let got = self.page_rows(&day, ns, at.after.as_ref(), want).await?;
            let full = got.len() >= want;
            if let Some(last) = got.last() {
                at.after = Some(ClusteringKey { time: last.key_time, run_id: last.run_id.to_string() });
            }
            rows.extend(got);
            if full {
                break false;
            }
            match self.newest_close_before(ns, Some(at.day * g.grid_ms)).await? {
                None => break true,
                Some(t) => at = GridCursor { day: g.owned_at_or_before(t.div_euclid(g.grid_ms)), after: None },
            }
        };
        let cursor = Some(Cursor(serde_json::to_value(&at).expect("grid cursor serializes")));
        Ok(self.decode_page(rows, cursor, done))
    }

    /// Decodes a page of rows into records and bad rows.
    fn decode_page(&self, rows: Vec<Raw>, cursor: Option<Cursor>, done: bool) -> ScanPage {
        let mut page = ScanPage { records: Vec::with_capacity(rows.len()), bad_rows: Vec::new(), cursor, done };
        for row in &rows {
            match row.decode() {
                Ok(record) => page.records.push(record),
                Err(reason) => page.bad_rows.push(row.bad(reason)),
            }
        }
        page
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
        let mut out = Vec::new();
        let time = w.table.time_column();
        let base = format!(
            "SELECT {} FROM {} WHERE namespace_id = ? AND namespace_partition = 0",
            w.table.columns().join(", "),
            self.table(w.table)
        );
        let mut values = vec![CqlValue::Uuid(ns)];
        let mut cql = base.clone();
        if let Some(key) = after {
            let run = Uuid::parse_str(&key.run_id).map_err(|_| {
                StoreError::Permanent(format!("checkpoint cursor run id {:?} is not a UUID", key.run_id))
            })?;
            // The rest of the cursor's own time, then everything older.
            let same = format!("{base} AND {time} = ? AND run_id > ? LIMIT ?");
            out = self
                .fetch_raw(
                    w.table,
                    &same,
                    vec![
                        CqlValue::Uuid(ns),
                        CqlValue::Timestamp(CqlTimestamp(key.time)),
                        CqlValue::Uuid(run),
                        CqlValue::Int(limit as i32),
                    ],
                )
                .await?;
            if out.len() >= limit {
                return Ok(out);
            }
            cql.push_str(&format!(" AND {time} < ?"));
            values.push(CqlValue::Timestamp(CqlTimestamp(key.time)));
        } else if let Some(to) = w.to {
            cql.push_str(&format!(" AND {time} < ?"));
            values.push(CqlValue::Timestamp(CqlTimestamp(to)));
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

    async fn fetch_raw(&self, table: Table, cql: &str, values: Vec<CqlValue>) -> StoreResult<Vec<Raw>> {
        Ok(match table {
            Table::Open => self.fetch::<OpenRow>(cql, values, "scanning").await?.into_iter().map(Raw::open).collect(),
            Table::Closed => {
                self.fetch::<ClosedRow>(cql, values, "scanning").await?.into_iter().map(Raw::closed).collect()
            }
        })
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

/// A row of either table, columns as stored.
#[derive(Clone, Debug)]
struct Raw {
    table: Table,
    namespace_id: Uuid,
    run_id: Uuid,
    /// The clustering time (start time for open rows, close time for closed rows).
    key_time: i64,
    workflow_id: Option<String>,
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
    fn open(r: OpenRow) -> Self {
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

    fn closed(r: ClosedRow) -> Self {
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

#[async_trait]
impl Store for CassandraStore {
    /// Cassandra `timestamp` columns hold milliseconds.
    fn time_precision(&self) -> crate::record::TimePrecision {
        crate::record::TimePrecision::Milliseconds
    }

    fn describe(&self) -> String {
        format!("cassandra {}/{}", self.hosts, self.keyspace)
    }

    async fn preflight(&self) -> StoreResult<()> {
        self.check_schema().await
    }

    /// Standard visibility holds none of the fields Temporal added later; it is read
    /// only, so an upgrade path is never asked for.
    async fn schema_info(&self) -> StoreResult<crate::store::schema::SchemaInfo> {
        Ok(crate::store::schema::SchemaInfo::from_columns(
            "standard visibility (Cassandra)".to_string(),
            |_| false,
            String::new(),
        ))
    }

    /// Pages through a light projection of both tables per namespace (never COUNT(*)
    /// over a partition): a run in both tables counts once, as closed.
    async fn count(&self, query: &CountQuery) -> StoreResult<Counts> {
        self.check_schema().await?;
        // Stored times are whole milliseconds: `t >= cutoff` is `t >= ceil(cutoff in ms)`.
        let cutoff = (query.cutoff.timestamp_micros() + 999).div_euclid(1000);
        let mut counts = Counts::new();
        for ns in self.namespaces(&query.namespaces).await? {
            let mut open: HashMap<Uuid, bool> = HashMap::new();
            let cql = format!(
                "SELECT run_id, start_time FROM {} WHERE namespace_id = ? AND namespace_partition = 0",
                self.table(Table::Open)
            );
            self.stream::<(Uuid, CqlTimestamp), _>(&cql, vec![CqlValue::Uuid(ns)], "counting", |(run, start)| {
                open.insert(run, start.0 >= cutoff);
            })
            .await?;
            let mut by_status: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
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
            let ns = ns.to_string();
            for (status, (total, recent)) in by_status {
                crate::store::add_count(&mut counts, &self.describe(), &ns, status, total, recent);
            }
        }
        Ok(counts)
    }

    /// Cassandra cannot find a run by its id (the clustering key starts with a time), so
    /// deep verify would have to scan every partition per batch: refused, with the reason.
    async fn read(&self, _keys: &[RecordKey]) -> StoreResult<Vec<VisibilityRecord>> {
        Err(StoreError::Permanent(self.context(
            "verify --deep is not supported with a Cassandra primary: Cassandra cannot look runs up by run id (the counts verify works)",
        )))
    }
}

#[async_trait]
impl Source for CassandraStore {
    async fn plan_shards(&self, namespaces: &[String], split: &Split) -> StoreResult<Vec<ShardSpec>> {
        self.check_schema().await?;
        let namespaces = self.namespaces(namespaces).await?;
        let parts = split.parts();
        let mut closed = Vec::new();
        let mut open = Vec::new();
        for ns in &namespaces {
            for part in (0..parts).filter(|p| split.owns(*p)) {
                let g = GridShard {
                    namespace_id: ns.to_string(),
                    grid_ms: GRID_MS,
                    modulus: parts as i64,
                    residue: part as i64,
                };
                closed.push(ShardSpec(serde_json::to_value(g).expect("grid shard serializes")));
            }
            if split.owns(open_part(*ns, parts)) {
                open.push(
                    TimeWindow { namespace_id: ns.to_string(), table: Table::Open, from: None, to: None }.to_spec(),
                );
            }
        }
        // Closed shards first: the closed copy of a run is written before any open one.
        closed.extend(open);
        Ok(closed)
    }

    /// Time windows of the planner before the grid were laid out from the oldest close
    /// time each process found when it planned: one process's windows cover all time,
    /// but the windows of processes that planned at different times may not meet.
    fn check_resume(&self, shards: &[ShardSpec], split: &Split) -> StoreResult<()> {
        if split.process_count <= 1 {
            return Ok(());
        }
        let legacy = shards.iter().any(|s| {
            matches!(Shard::from_spec(s), Ok(Shard::Window(w)) if w.table == Table::Closed && (w.from.is_some() || w.to.is_some()))
        });
        if legacy {
            return Err(StoreError::Permanent(format!(
                "{}: this checkpoint was planned by an older vismig, whose Cassandra time windows can leave gaps between the processes of --shard I/{}; move the checkpoint of every process away and rerun them all (records already copied are found present and skipped, never written twice)",
                self.describe(),
                split.process_count
            )));
        }
        Ok(())
    }

    async fn scan(&self, shard: &ShardSpec, after: Option<&Cursor>, limit: usize) -> StoreResult<ScanPage> {
        let (namespace_id, w) = match Shard::from_spec(shard)? {
            Shard::Grid(g) => {
                let ns = parse_namespace(&g.namespace_id)?;
                return self.scan_grid(&g, ns, after, limit).await;
            }
            Shard::Window(w) => (w.namespace_id.clone(), w),
        };
        let ns = parse_namespace(&namespace_id)?;
        let after: Option<ClusteringKey> = after
            .map(|c| {
                serde_json::from_value(c.0.clone()).map_err(|e| {
                    StoreError::Permanent(format!("checkpoint cursor {} is not a Cassandra clustering key: {e}", c.0))
                })
            })
            .transpose()?;
        let mut rows = self.page_rows(&w, ns, after.as_ref(), limit).await?;
        let done = rows.len() < limit;
        let cursor = rows.last().map(|r| {
            Cursor(serde_json::to_value(ClusteringKey { time: r.key_time, run_id: r.run_id.to_string() }).unwrap())
        });
        if w.table == Table::Open && !rows.is_empty() {
            let twins = self.closed_twins(ns, &rows).await?;
            if !twins.is_empty() {
                tracing::info!(
                    store = %self.describe(),
                    namespace_id = %ns,
                    runs = twins.len(),
                    "runs found in both open_executions and closed_executions: copied as closed"
                );
                for row in &mut rows {
                    if let Some(twin) = twins.get(&row.run_id) {
                        *row = twin.clone();
                    }
                }
            }
        }
        Ok(self.decode_page(rows, cursor, done))
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

/// Go durations as Temporal's config writes them: `10s`, `500ms`, `1m`, or bare seconds.
/// Temporal's `connectTimeout` (`10s`, `500ms`, `1.5s`, a bare number of seconds).
pub fn parse_duration(text: Option<&str>) -> Option<Duration> {
    let t = text?.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len()));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

pub fn parse_consistency(text: &str) -> Option<Consistency> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        _ => return None,
    })
}

/// rustls only (no OpenSSL): the CA file's roots, an optional client certificate, and
/// Temporal's `enableHostVerification` (default off: the chain is verified, the name is not).
fn tls_config(tls: &Tls) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let ca = tls
        .ca_file
        .as_deref()
        .filter(|f| !f.is_empty())
        .ok_or("caFile is required with tls.enabled (vismig does not read the system trust store for Cassandra)")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("caFile {ca}: {e}"))? {
        roots.add(cert.map_err(|e| format!("caFile {ca}: {e}"))?).map_err(|e| format!("caFile {ca}: {e}"))?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
        if tls.enable_host_verification.unwrap_or(false) { verifier } else { Arc::new(ChainOnly(verifier)) };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (tls.cert_file.as_deref().filter(|f| !f.is_empty()), tls.key_file.as_deref().filter(|f| !f.is_empty())) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("certFile {cert}: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("keyFile {key}: {e}"))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| e.to_string())
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err("certFile and keyFile go together".into()),
    }
}

/// Verifies the chain and signatures, accepting a certificate issued for another name
/// (Temporal's `enableHostVerification: false`, its default for Cassandra).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn transient_db(db: &DbError) -> bool {
    matches!(
        db,
        DbError::Unavailable { .. }
            | DbError::Overloaded
            | DbError::IsBootstrapping
            | DbError::ReadTimeout { .. }
            | DbError::WriteTimeout { .. }
            | DbError::ReadFailure { .. }
            | DbError::RateLimitReached { .. }
            | DbError::ServerError
    )
}

fn prepare_transient(e: &scylla::errors::PrepareError) -> bool {
    !matches!(
        e,
        scylla::errors::PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(
                DbError::SyntaxError | DbError::Invalid | DbError::Unauthorized | DbError::ConfigError,
                _
            )
        }
    )
}

/// Timeouts, overload, unavailable replicas and lost connections are worth a retry;
/// a bad statement, a schema mismatch or a permission error is not.
fn classify(context: &str, e: ExecutionError) -> StoreError {
    let transient = match &e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => transient_db(db),
        ExecutionError::LastAttemptError(
            RequestAttemptError::BrokenConnectionError(_) | RequestAttemptError::UnableToAllocStreamId,
        ) => true,
        ExecutionError::EmptyPlan | ExecutionError::ConnectionPoolError(_) | ExecutionError::RequestTimeout(_) => true,
        ExecutionError::PrepareError(p) => prepare_transient(p),
        _ => false,
    };
    let message = format!("{context}: {e}");
    if transient { StoreError::Transient(message) } else { StoreError::Permanent(message) }
}

/// Pager errors wrap the same causes in several layers: classified by their text.
fn loose(context: &str, text: &str) -> StoreError {
    let lower = text.to_lowercase();
    let transient = [
        "timeout",
        "timed out",
        "overloaded",
        "unavailable",
        "bootstrapping",
        "broken connection",
        "connection pool",
        "read failure",
        "rate limit",
    ]
    .iter()
    .any(|w| lower.contains(w));
    let message = format!("{context}: {text}");
    if transient { StoreError::Transient(message) } else { StoreError::Permanent(message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_day_belongs_to_exactly_one_grid_shard() {
        let modulus = 6;
        let shards: Vec<GridShard> = (0..modulus)
            .map(|residue| GridShard { namespace_id: "ns".into(), grid_ms: GRID_MS, modulus, residue })
            .collect();
        for day in -20..40 {
            let owners: Vec<i64> =
                shards.iter().filter(|g| g.owned_at_or_before(day) == day).map(|g| g.residue).collect();
            assert_eq!(owners, vec![day.rem_euclid(modulus)], "day {day}");
            for g in &shards {
                let d = g.owned_at_or_before(day);
                assert!(d <= day && day - d < modulus && d.rem_euclid(modulus) == g.residue, "day {day} {g:?} {d}");
            }
        }
    }

    #[test]
    fn checkpoint_shards_of_both_planners_are_told_apart() {
        let grid = ShardSpec(serde_json::json!({"namespaceId": "n", "gridMs": GRID_MS, "modulus": 4, "residue": 1}));
        assert!(matches!(Shard::from_spec(&grid), Ok(Shard::Grid(g)) if g.residue == 1));
        let window = ShardSpec(serde_json::json!({"namespaceId": "n", "table": "closed", "from": 5, "to": null}));
        assert!(matches!(Shard::from_spec(&window), Ok(Shard::Window(w)) if w.from == Some(5)));
        let junk = ShardSpec(serde_json::json!({"slice": 3}));
        assert!(Shard::from_spec(&junk).is_err());
        // The open partition's owner does not depend on which other namespaces exist.
        let ns = Uuid::from_u128(0x1000_0000_0000_4000_8000_0000_0000_0007);
        assert_eq!(open_part(ns, 4), 3);
    }

    #[test]
    fn go_durations_and_consistency_levels_parse() {
        assert_eq!(parse_duration(Some("10s")), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration(Some("500ms")), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration(Some("2m")), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration(Some("soon")), None);
        assert_eq!(parse_consistency("LOCAL_ONE"), Some(Consistency::LocalOne));
        assert_eq!(parse_consistency("bogus"), None);
    }
}
