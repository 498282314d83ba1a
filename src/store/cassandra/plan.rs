//! The shard plan and the checkpoint format of the Cassandra scan: shards, cursors and
//! the fixed UTC-day grid. Its own file, apart from `read.rs`, because it is the part a
//! checkpoint keeps (older planners' shards included) and is pure logic, tested without a server.
//!
//! Per namespace, the closed partition is cut along a fixed grid of UTC days of
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

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::schema::Table;
use crate::store::{Cursor, ShardSpec, Split, StoreError, StoreResult};

/// The closed table's grid: UTC days since the Unix epoch. A constant, so that every
/// process, whenever it plans, cuts the same days.
pub(super) const GRID_MS: i64 = 24 * 3600 * 1000;

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

/// The clustering key of the last row read: `(time ms, run id)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusteringKey {
    pub time: i64,
    pub run_id: String,
}

/// The two kinds of cursor this store saves in checkpoints, as the JSON of their fields.
pub(super) trait SavedCursor: Serialize + DeserializeOwned {
    /// What the cursor is, for the error when a checkpoint holds something else.
    const KIND: &'static str;

    fn from_cursor(cursor: &Cursor) -> StoreResult<Self> {
        serde_json::from_value(cursor.0.clone()).map_err(|e| {
            StoreError::Permanent(format!("checkpoint cursor {} is not a Cassandra {}: {e}", cursor.0, Self::KIND))
        })
    }

    fn to_cursor(&self) -> Cursor {
        Cursor(serde_json::to_value(self).expect("a cursor serializes"))
    }
}

impl SavedCursor for ClusteringKey {
    const KIND: &'static str = "clustering key";
}

impl ClusteringKey {
    pub(super) fn run_uuid(&self) -> StoreResult<Uuid> {
        Uuid::parse_str(&self.run_id)
            .map_err(|_| StoreError::Permanent(format!("checkpoint cursor run id {:?} is not a UUID", self.run_id)))
    }
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

    /// Where the scan starts, or goes on, given the newest close time left to read (ms):
    /// the newest of this shard's days that can hold it.
    pub(super) fn cursor_at(&self, close_time: i64) -> GridCursor {
        GridCursor { day: self.owned_at_or_before(close_time.div_euclid(self.grid_ms)), after: None }
    }

    /// The closed rows of one day, as a window.
    pub(super) fn day_window(&self, day: i64) -> TimeWindow {
        TimeWindow {
            namespace_id: self.namespace_id.clone(),
            table: Table::Closed,
            from: Some(day * self.grid_ms),
            to: Some((day + 1) * self.grid_ms),
        }
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

impl SavedCursor for GridCursor {
    const KIND: &'static str = "grid cursor";
}

/// A shard spec as saved in a checkpoint: a grid shard (has `gridMs`) or a time window.
pub(super) enum Shard {
    Grid(GridShard),
    Window(TimeWindow),
}

impl Shard {
    pub(super) fn from_spec(spec: &ShardSpec) -> StoreResult<Self> {
        let what = |e: serde_json::Error| {
            StoreError::Permanent(format!("checkpoint shard {} is not a Cassandra shard: {e}", spec.0))
        };
        if spec.0.get("gridMs").is_some() {
            serde_json::from_value(spec.0.clone()).map(Shard::Grid).map_err(what)
        } else {
            serde_json::from_value(spec.0.clone()).map(Shard::Window).map_err(what)
        }
    }

    /// The shard's namespace id, which a checkpoint keeps as text.
    pub(super) fn namespace(&self) -> StoreResult<Uuid> {
        let id = match self {
            Shard::Grid(g) => &g.namespace_id,
            Shard::Window(w) => &w.namespace_id,
        };
        Uuid::parse_str(id)
            .map_err(|_| StoreError::Permanent(format!("checkpoint shard namespace {id:?} is not a UUID")))
    }
}

/// The shards this process owns of the given namespaces: each namespace's grid parts it
/// owns, then the open partitions it owns. Closed shards come first, so that the closed
/// copy of a run is written before any open one.
pub(super) fn plan(namespaces: &[Uuid], split: &Split) -> Vec<ShardSpec> {
    let parts = split.parts();
    let mut closed = Vec::new();
    let mut open = Vec::new();
    for ns in namespaces {
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
            let w = TimeWindow { namespace_id: ns.to_string(), table: Table::Open, from: None, to: None };
            open.push(ShardSpec(serde_json::to_value(w).expect("time window serializes")));
        }
    }
    closed.extend(open);
    closed
}

/// True when a checkpoint holds closed-table windows with bounds: the planner before the
/// grid made them, and the windows of processes that planned apart may leave gaps.
pub(super) fn has_bounded_closed_windows(shards: &[ShardSpec]) -> bool {
    shards.iter().any(|s| {
        matches!(Shard::from_spec(s), Ok(Shard::Window(w)) if w.table == Table::Closed && (w.from.is_some() || w.to.is_some()))
    })
}

/// The part that owns a namespace's open partition: fixed by its id, not by its place
/// in a list of namespaces that changes as namespaces come and go.
fn open_part(ns: Uuid, parts: usize) -> usize {
    (ns.as_u128() % parts.max(1) as u128) as usize
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
    fn processes_divide_every_part_between_them_closed_shards_first() {
        let namespaces = [Uuid::from_u128(7), Uuid::from_u128(8)];
        let plans: Vec<Vec<ShardSpec>> = (0..2)
            .map(|process_index| plan(&namespaces, &Split { per_process: 3, process_index, process_count: 2 }))
            .collect();
        let mut residues = std::collections::BTreeMap::<String, Vec<i64>>::new();
        let mut open_owners = Vec::new();
        for shards in &plans {
            let first_open = shards.iter().position(|s| matches!(Shard::from_spec(s), Ok(Shard::Window(_))));
            let last_grid = shards.iter().rposition(|s| matches!(Shard::from_spec(s), Ok(Shard::Grid(_))));
            assert!(first_open.is_none_or(|o| last_grid.is_none_or(|g| g < o)), "closed shards first");
            for s in shards {
                match Shard::from_spec(s).unwrap() {
                    Shard::Grid(g) => {
                        assert_eq!(g.modulus, 6);
                        residues.entry(g.namespace_id).or_default().push(g.residue);
                    }
                    Shard::Window(w) => open_owners.push(w.namespace_id),
                }
            }
        }
        assert_eq!(residues.len(), namespaces.len());
        for parts in residues.values_mut() {
            parts.sort();
            assert_eq!(*parts, (0..6).collect::<Vec<_>>());
        }
        open_owners.sort();
        assert_eq!(open_owners, namespaces.iter().map(Uuid::to_string).collect::<Vec<_>>());
        assert!(!has_bounded_closed_windows(&plans.concat()));
    }

    #[test]
    fn a_grid_shard_reads_its_days_newest_first() {
        let g = GridShard { namespace_id: "n".into(), grid_ms: GRID_MS, modulus: 4, residue: 1 };
        // Close time in day 10: the newest owned day at or before it is 9.
        assert_eq!(g.cursor_at(10 * GRID_MS + 5), GridCursor { day: 9, after: None });
        let day = g.day_window(9);
        assert_eq!((day.from, day.to, day.table), (Some(9 * GRID_MS), Some(10 * GRID_MS), Table::Closed));
        let legacy = TimeWindow { namespace_id: "n".into(), table: Table::Closed, from: Some(5), to: None };
        assert!(has_bounded_closed_windows(&[ShardSpec(serde_json::to_value(legacy).unwrap())]));
    }
}
