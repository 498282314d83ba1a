//! Deep verify: record by record, `migration.concurrency` shards at a time. When both
//! stores return a shard in run-id order (the SQL stores: their primary key), the two
//! scans are merged side by side, each store read once, pages fetched ahead. Otherwise
//! (Elasticsearch's `_doc` order, Cassandra's partitions, or two SQL servers whose
//! collations order the ids differently) each store is scanned once and every page is
//! looked up in the other store by primary key (one batched read per page), which works
//! whatever the stores' orders and families. Differences are re-checked after
//! `recheckAfter`, so writes in flight are not reported; only persistent ones are.
//! `--repair` re-copies missing and different records under the version guard, and
//! deletes an extra record only once the primary confirms, again, that it is gone.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::attribute_names::Renamer;
use crate::backfill::throttle::Throttle;
use crate::record::{RecordKey, TimePrecision, VisibilityRecord};
use crate::store::{Cursor, ScanPage, ShardSpec, Sink, Source, Split, StoreResult, WriteOutcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Missing,
    Extra,
    Different,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Different => "different",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    pub kind: Kind,
    pub namespace_id: String,
    pub run_id: String,
    pub workflow_id: String,
    /// For `different`: the fields whose values differ.
    pub fields: Vec<String>,
    /// With --repair: what was done (`recopied`, `deleted`, or why not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
}

pub struct Options {
    pub namespaces: Vec<String>,
    pub cutoff: DateTime<Utc>,
    pub recheck_after: Duration,
    pub repair: bool,
    pub page: usize,
    /// Shards compared at the same time.
    pub concurrency: usize,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Persistent differences, per namespace id.
    pub differences: BTreeMap<String, Vec<Difference>>,
    pub compared: u64,
}

/// Records that started or closed after the cut-off are still changing: not compared.
fn settled(r: &VisibilityRecord, cutoff: DateTime<Utc>) -> bool {
    r.start_time < cutoff && r.close_time.is_none_or(|t| t < cutoff)
}

/// The names of the fields in which two records differ. Times compare at `precision`,
/// the coarser of the two stores' (Temporal writes nanoseconds to Elasticsearch and the
/// same times truncated to microseconds to SQL: both are the same record).
pub fn differing_fields(a: &VisibilityRecord, b: &VisibilityRecord, precision: TimePrecision) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident),*) => { $( if a.$f != b.$f { out.push(stringify!($f).to_string()); } )* };
    }
    cmp!(workflow_id, workflow_type_name);
    let time = |t| precision.truncate(t);
    if time(a.start_time) != time(b.start_time) {
        out.push("start_time".to_string());
    }
    if time(a.execution_time) != time(b.execution_time) {
        out.push("execution_time".to_string());
    }
    if a.close_time.map(time) != b.close_time.map(time) {
        out.push("close_time".to_string());
    }
    cmp!(
        status,
        history_length,
        history_size_bytes,
        execution_duration,
        state_transition_count,
        task_queue,
        search_attributes,
        parent_workflow_id,
        parent_run_id,
        root_workflow_id,
        root_run_id
    );
    // An empty memo is no memo, and its encoding means nothing: Elasticsearch stores
    // neither, SQL stores NULL or empty bytes with "Proto3", Cassandra may store nothing.
    // Memos compare by content: Temporal writes the same memo as differently ordered
    // bytes to each store (crate::memo).
    let has_memo = |r: &VisibilityRecord| r.memo.as_ref().is_some_and(|m| !m.is_empty());
    if !crate::memo::equivalent(a.memo.as_deref(), b.memo.as_deref()) {
        out.push("memo".to_string());
    } else if has_memo(a) && a.encoding != b.encoding {
        out.push("encoding".to_string());
    }
    // A store without versions (Cassandra, standard SQL) has nothing to compare; its
    // records sit in Elasticsearch at the version `create` gives, 1.
    if a.has_version() && b.has_version() && a.version != b.version {
        out.push("version".to_string());
    }
    out
}

fn by_key(records: Vec<VisibilityRecord>) -> HashMap<RecordKey, VisibilityRecord> {
    records.into_iter().map(|r| (r.key(), r)).collect()
}

pub struct DeepVerify {
    /// Primary records are compared (and re-copied) under the secondary's names.
    pub renamer: Arc<Renamer>,
    pub primary: Arc<dyn Source>,
    pub secondary: Arc<dyn Source>,
    pub sink: Arc<dyn Sink>,
    pub throttle: Arc<Throttle>,
    /// Fields the secondary's schema lacks and `migration.dropMissingFields` lets the
    /// copy leave out: primary records are compared without them.
    pub dropped_fields: Vec<&'static str>,
}

/// What one shard's comparison found before the re-check.
#[derive(Default)]
struct ShardResult {
    compared: u64,
    found: Vec<Difference>,
}

impl DeepVerify {
    pub async fn run(&self, opts: &Options) -> anyhow::Result<Outcome> {
        // The caller has flushed the secondary (commands::verify, before the counts), so
        // writes that reached it just before are compared too.
        let split = Split { per_process: 1, process_index: 0, process_count: 1 };
        let mut shards: Vec<ShardSpec> = self.primary.plan_shards(&opts.namespaces, &split).await?;
        for spec in self.secondary.plan_shards(&opts.namespaces, &split).await? {
            if !shards.contains(&spec) {
                shards.push(spec);
            }
        }
        let merge = self.primary.scans_in_run_id_order() && self.secondary.scans_in_run_id_order();
        let results: Vec<ShardResult> = futures::stream::iter(shards.iter())
            .map(|spec| self.shard(spec, merge, opts))
            .buffer_unordered(opts.concurrency.max(1))
            .try_collect()
            .await?;
        let compared = results.iter().map(|r| r.compared).sum();
        let found: Vec<Difference> = results.into_iter().flat_map(|r| r.found).collect();
        let persistent = if found.is_empty() { found } else { self.recheck(found, opts).await? };
        let mut outcome = Outcome { compared, ..Default::default() };
        let mut repaired = false;
        for mut d in persistent {
            if opts.repair {
                d.repair = Some(self.repair(&d).await?);
                repaired = true;
            }
            outcome.differences.entry(d.namespace_id.clone()).or_default().push(d);
        }
        if repaired {
            // What was re-copied or deleted is visible to the next verify's counts and to
            // Temporal's list queries at once (Elasticsearch: a refresh).
            self.sink.flush().await?;
        }
        Ok(outcome)
    }

    async fn shard(&self, spec: &ShardSpec, merge: bool, opts: &Options) -> anyhow::Result<ShardResult> {
        if merge {
            match self.merge(spec, opts).await? {
                Some(result) => return Ok(result),
                None => tracing::warn!(
                    shard = %spec.0,
                    "the two stores return this shard's runs in different orders (their collations differ); \
                     comparing it by lookups instead"
                ),
            }
        }
        let mut result = ShardResult::default();
        result.compared = self.pass(spec, true, opts, &mut result.found).await?;
        self.pass(spec, false, opts, &mut result.found).await?;
        Ok(result)
    }

    /// Walks one shard of both stores side by side in run-id order, like a merge join:
    /// a run on one side only is missing or extra, a run on both is compared field by
    /// field. None when a store turns out not to return the runs in byte order of their
    /// ids (then the walk would pair the wrong runs; the caller falls back to lookups).
    async fn merge(&self, spec: &ShardSpec, opts: &Options) -> anyhow::Result<Option<ShardResult>> {
        // The limit counts the records read from both stores together.
        let read = |source: &Arc<dyn Source>| {
            OrderedPages::new(PageReader::start(source.clone(), spec, opts.page, self.throttle.clone(), opts.page))
        };
        let (mut primary, mut secondary) = (read(&self.primary), read(&self.secondary));
        let mut result = ShardResult::default();
        loop {
            let (p, s) = tokio::try_join!(primary.fill(), secondary.fill())?;
            if !(p && s) {
                return Ok(None);
            }
            let order = match (primary.head(), secondary.head()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(a), Some(b)) => a.run_id.as_bytes().cmp(b.run_id.as_bytes()),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let a = primary.pop();
                    if settled(&a, opts.cutoff) {
                        result.found.push(difference(Kind::Missing, &a, Vec::new()));
                    }
                }
                std::cmp::Ordering::Greater => {
                    let b = secondary.pop();
                    if settled(&b, opts.cutoff) {
                        result.found.push(difference(Kind::Extra, &b, Vec::new()));
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (a, b) = (primary.pop(), secondary.pop());
                    if settled(&a, opts.cutoff) {
                        result.compared += 1;
                        let fields = differing_fields(&self.for_secondary(&a), &b, self.time_precision());
                        if !fields.is_empty() {
                            result.found.push(difference(Kind::Different, &a, fields));
                        }
                    }
                }
            }
        }
        // A row one store cannot decode is neither missing nor extra: the backfill sent
        // it to the dead letter, and the count comparison shows it.
        let unreadable: HashSet<&String> = primary.unreadable.iter().chain(secondary.unreadable.iter()).collect();
        result.found.retain(|d| !unreadable.contains(&d.run_id));
        Ok(Some(result))
    }

    /// Scans one store's shard and looks every page up in the other store. The primary
    /// pass finds missing and different records, the secondary pass the extra ones.
    async fn pass(
        &self,
        spec: &ShardSpec,
        from_primary: bool,
        opts: &Options,
        found: &mut Vec<Difference>,
    ) -> anyhow::Result<u64> {
        let (scanned, other) =
            if from_primary { (&self.primary, &self.secondary) } else { (&self.secondary, &self.primary) };
        // Charged for the page read here and the same records looked up in the other store.
        let mut pages = PageReader::start(scanned.clone(), spec, opts.page, self.throttle.clone(), opts.page * 2);
        let mut compared = 0;
        while let Some(page) = pages.next().await {
            let page = page?;
            let records: Vec<VisibilityRecord> = page.records.into_iter().filter(|r| settled(r, opts.cutoff)).collect();
            let keys: Vec<RecordKey> = records.iter().map(VisibilityRecord::key).collect();
            let others = by_key(other.read(&keys).await?);
            for r in records {
                match (others.get(&r.key()), from_primary) {
                    (None, true) => found.push(difference(Kind::Missing, &r, Vec::new())),
                    (None, false) => found.push(difference(Kind::Extra, &r, Vec::new())),
                    (Some(o), true) => {
                        compared += 1;
                        let fields = differing_fields(&self.for_secondary(&r), o, self.time_precision());
                        if !fields.is_empty() {
                            found.push(difference(Kind::Different, &r, fields));
                        }
                    }
                    (Some(_), false) => {}
                }
            }
        }
        Ok(compared)
    }

    /// Waits, then reads each difference again from both stores; keeps those that persist.
    async fn recheck(&self, found: Vec<Difference>, opts: &Options) -> anyhow::Result<Vec<Difference>> {
        tracing::info!(
            differences = found.len(),
            after_seconds = opts.recheck_after.as_secs(),
            "re-checking differences after a delay, so that writes in flight are not reported"
        );
        tokio::time::sleep(opts.recheck_after).await;
        self.sink.flush().await?;
        let keys: Vec<RecordKey> = found
            .iter()
            .map(|d| RecordKey { namespace_id: d.namespace_id.clone(), run_id: d.run_id.clone() })
            .collect();
        let mut p = HashMap::new();
        let mut s = HashMap::new();
        for chunk in keys.chunks(opts.page.max(1)) {
            p.extend(by_key(self.primary.read(chunk).await?));
            s.extend(by_key(self.secondary.read(chunk).await?));
        }
        let mut out = Vec::new();
        for key in keys {
            match (p.get(&key), s.get(&key)) {
                (Some(a), None) if settled(a, opts.cutoff) => out.push(difference(Kind::Missing, a, Vec::new())),
                (None, Some(b)) if settled(b, opts.cutoff) => out.push(difference(Kind::Extra, b, Vec::new())),
                (Some(a), Some(b)) if settled(a, opts.cutoff) => {
                    let fields = differing_fields(&self.for_secondary(a), b, self.time_precision());
                    if !fields.is_empty() {
                        out.push(difference(Kind::Different, a, fields));
                    }
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| (&a.namespace_id, &a.run_id).cmp(&(&b.namespace_id, &b.run_id)));
        Ok(out)
    }

    async fn repair(&self, d: &Difference) -> anyhow::Result<String> {
        let key = RecordKey { namespace_id: d.namespace_id.clone(), run_id: d.run_id.clone() };
        let primary = self.primary.read(std::slice::from_ref(&key)).await?.pop();
        Ok(match (d.kind, primary) {
            (Kind::Extra, None) => {
                // The primary confirmed once more that the run is gone (a retention delete
                // raced the backfill): the copy is an orphan that would never expire.
                let n = self.sink.delete(std::slice::from_ref(&key)).await?;
                if n == 1 { "deleted".into() } else { "already gone".into() }
            }
            (Kind::Extra, Some(_)) => "not deleted: the primary has it again".into(),
            (_, None) => "not recopied: the primary no longer has it".into(),
            (_, Some(mut record)) => match self.renamer.apply(&mut record) {
                Err(reason) => format!("not recopied: {reason}"),
                Ok(()) => self.recopy(record, d.kind).await?,
            },
        })
    }

    /// A missing record is written as the backfill writes it. A different one overwrites
    /// the secondary's copy at the same version too: same version with other content is
    /// corruption, not a newer write (a newer version is still never overwritten).
    async fn recopy(&self, record: VisibilityRecord, kind: Kind) -> anyhow::Result<String> {
        let records = std::slice::from_ref(&record);
        let outcome = if kind == Kind::Different {
            self.sink.overwrite(records).await?
        } else {
            self.sink.write(records).await?
        };
        Ok(match outcome.into_iter().next() {
            Some(WriteOutcome::Inserted) | Some(WriteOutcome::Updated) => "recopied".into(),
            // Only Elasticsearch can refuse a record it does not hold: it keeps a deleted
            // document's version (index.gc_deletes, 60 s by default) as Temporal's own
            // versioned deletes rely on.
            Some(WriteOutcome::SkippedNewer) if kind == Kind::Missing => {
                "not recopied: the secondary deleted it at a newer version (Elasticsearch keeps a delete's version for index.gc_deletes, 60s by default; a run Temporal deleted stays deleted, a delete made by hand can be repaired after that)".into()
            }
            Some(WriteOutcome::SkippedNewer) => "not recopied: the secondary holds a newer version".into(),
            Some(WriteOutcome::SkippedPresent) if kind == Kind::Different => {
                "not recopied: the secondary's schema has no _version column, so a stale copy cannot be told from a newer write (upgrade it with temporal-sql-tool update-schema, or fix the row by hand)".into()
            }
            Some(WriteOutcome::SkippedPresent) => "not recopied: the secondary has it now".into(),
            Some(WriteOutcome::Failed(reason)) => format!("not recopied: {reason}"),
            None => "not recopied: no outcome".into(),
        })
    }

    /// The precision both stores keep times at: the coarser of the two.
    fn time_precision(&self) -> TimePrecision {
        self.primary.time_precision().min(self.secondary.time_precision())
    }

    /// A primary record as the secondary should hold it: search attributes under the
    /// secondary family's names. One that cannot be renamed is compared as it is (its
    /// copy failed, and the comparison shows where).
    fn for_secondary<'a>(&self, r: &'a VisibilityRecord) -> std::borrow::Cow<'a, VisibilityRecord> {
        let r: std::borrow::Cow<'a, VisibilityRecord> = if self.dropped_fields.is_empty() {
            std::borrow::Cow::Borrowed(r)
        } else {
            std::borrow::Cow::Owned(crate::store::schema::without_fields(r, &self.dropped_fields))
        };
        if self.renamer.is_identity() {
            return r;
        }
        let mut copy = r.clone().into_owned();
        match self.renamer.apply(&mut copy) {
            Ok(()) => std::borrow::Cow::Owned(copy),
            Err(_) => r,
        }
    }
}

/// One store's pages of one shard, read ahead by a task of their own (one page in
/// flight, one waiting: memory stays at a few pages), the throttle charged `charge`
/// records per page. The task stops when the reader is dropped.
struct PageReader {
    pages: mpsc::Receiver<StoreResult<ScanPage>>,
    task: tokio::task::JoinHandle<()>,
}

impl PageReader {
    fn start(source: Arc<dyn Source>, spec: &ShardSpec, page: usize, throttle: Arc<Throttle>, charge: usize) -> Self {
        let (tx, pages) = mpsc::channel(1);
        let spec = spec.clone();
        let task = tokio::spawn(async move {
            let (_never_tx, mut never) = watch::channel(false);
            let mut cursor: Option<Cursor> = None;
            loop {
                throttle.acquire(charge, &mut never).await;
                let result = source.scan(&spec, cursor.as_ref(), page).await;
                let last = match &result {
                    Ok(p) => {
                        if p.cursor.is_some() {
                            cursor = p.cursor.clone();
                        }
                        p.done
                    }
                    Err(_) => true,
                };
                if tx.send(result).await.is_err() || last {
                    return;
                }
            }
        });
        Self { pages, task }
    }

    /// The next page; None after the last one (or after an error, which comes first).
    async fn next(&mut self) -> Option<StoreResult<ScanPage>> {
        self.pages.recv().await
    }
}

impl Drop for PageReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A shard's records from one store, checked to come in byte order of their run ids.
struct OrderedPages {
    pages: PageReader,
    records: VecDeque<VisibilityRecord>,
    /// The run id of the last record received, to check the next page against.
    last: Option<String>,
    done: bool,
    unreadable: Vec<String>,
}

impl OrderedPages {
    fn new(pages: PageReader) -> Self {
        Self { pages, records: VecDeque::new(), last: None, done: false, unreadable: Vec::new() }
    }

    /// Makes sure a record is at the head unless the shard is done; false when a page
    /// broke the order (the walk must stop).
    async fn fill(&mut self) -> StoreResult<bool> {
        while self.records.is_empty() && !self.done {
            let Some(page) = self.pages.next().await else {
                self.done = true;
                break;
            };
            let page = page?;
            self.done = page.done;
            self.unreadable.extend(page.bad_rows.into_iter().map(|b| {
                tracing::warn!(namespace_id = %b.namespace_id, run_id = %b.run_id, reason = %b.reason, "unreadable row: not compared");
                b.run_id
            }));
            let ids = self.last.iter().map(String::as_bytes).chain(page.records.iter().map(|r| r.run_id.as_bytes()));
            if !ids.clone().zip(ids.skip(1)).all(|(a, b)| a < b) {
                return Ok(false);
            }
            if let Some(r) = page.records.last() {
                self.last = Some(r.run_id.clone());
            }
            self.records.extend(page.records);
        }
        Ok(true)
    }

    fn head(&self) -> Option<&VisibilityRecord> {
        self.records.front()
    }

    fn pop(&mut self) -> VisibilityRecord {
        self.records.pop_front().expect("a head record")
    }
}

fn difference(kind: Kind, r: &VisibilityRecord, fields: Vec<String>) -> Difference {
    Difference {
        kind,
        namespace_id: r.namespace_id.clone(),
        run_id: r.run_id.clone(),
        workflow_id: r.workflow_id.clone(),
        fields,
        repair: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_level_differences_and_the_cutoff() {
        let now = Utc::now();
        let mut g = crate::seed::Generator::new(4, now);
        let a = g.next_record();
        let mut b = a.clone();
        assert!(differing_fields(&a, &b, NS).is_empty());
        b.task_queue = "other".into();
        b.version += 1;
        assert_eq!(differing_fields(&a, &b, NS), vec!["task_queue", "version"]);
        let (mut c, mut d) = (a.clone(), a.clone());
        c.memo = None;
        c.encoding = String::new();
        d.memo = Some(Vec::new());
        d.encoding = "Proto3".into();
        assert!(differing_fields(&c, &d, NS).is_empty(), "an empty memo is no memo, whatever its encoding");
        d.memo = Some(vec![1]);
        assert_eq!(differing_fields(&c, &d, NS), vec!["memo"]);
        let mut e = a.clone();
        e.version = 0;
        assert!(differing_fields(&a, &e, NS).is_empty(), "no version on one side: nothing to compare");
        assert!(settled(&a, now));
        assert!(!settled(&a, a.start_time));
    }

    const NS: TimePrecision = TimePrecision::Nanoseconds;

    /// Temporal writes `…01.123456900Z` to Elasticsearch and `…01.123456` to SQL: the same
    /// record at microseconds, a different one at nanoseconds; and a time one microsecond
    /// off is still a difference at microseconds (truncation, not rounding: .9999999 is
    /// not .000001 of the next microsecond).
    #[test]
    fn times_compare_at_the_coarser_precision() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let mut g = crate::seed::Generator::new(4, Utc::now());
        let mut es = g.next_record();
        es.start_time = t("2024-05-01T10:00:01.123456900Z");
        es.execution_time = t("2024-05-01T10:00:01.999999999Z");
        es.close_time = Some(t("2024-05-01T10:00:02.000000001Z"));
        let mut sql = es.clone();
        sql.start_time = t("2024-05-01T10:00:01.123456Z");
        sql.execution_time = t("2024-05-01T10:00:01.999999Z");
        sql.close_time = Some(t("2024-05-01T10:00:02Z"));
        assert!(differing_fields(&es, &sql, TimePrecision::Microseconds).is_empty());
        assert_eq!(differing_fields(&es, &sql, NS), vec!["start_time", "execution_time", "close_time"]);
        sql.start_time = t("2024-05-01T10:00:01.123457Z");
        sql.close_time = None;
        assert_eq!(differing_fields(&es, &sql, TimePrecision::Microseconds), vec!["start_time", "close_time"]);
    }
}
