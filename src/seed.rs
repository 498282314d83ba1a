//! Synthetic but realistic visibility records, for demos and benchmarks: several
//! namespaces, running runs and every closed status, proto3 memos, search attributes of
//! every type, unicode and 255-character workflow ids, child runs with parent and root
//! ids. Deterministic for a given seed, so two runs produce the same data.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use std::collections::BTreeMap;

use crate::record::{ExecutionStatus, SearchAttributeType, SearchAttributeValue, SearchAttributes, VisibilityRecord};

pub struct Generator {
    rng: StdRng,
    namespaces: Vec<String>,
    now: DateTime<Utc>,
    produced: u64,
    recent_parents: Vec<(String, String)>,
}

const WORKFLOW_TYPES: [&str; 20] = [
    "OrderWorkflow",
    "PaymentWorkflow",
    "ShipmentWorkflow",
    "RefundWorkflow",
    "InvoiceWorkflow",
    "SignupWorkflow",
    "EmailCampaign",
    "ReportGeneration",
    "DataSync",
    "NightlyBatch",
    "FraudCheck",
    "InventoryRebalance",
    "SubscriptionRenewal",
    "KycVerification",
    "LedgerClose",
    "ImageResize",
    "SearchReindex",
    "CartAbandonment",
    "LoyaltyPoints",
    "Überweisung",
];

impl Generator {
    /// `now` anchors the times: every record starts at least an hour before it, so a
    /// verify with the default five-minute cut-off compares all of them.
    pub fn new(seed: u64, now: DateTime<Utc>) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let namespaces = (0..5).map(|_| uuid_from(&mut rng)).collect();
        Self { rng, namespaces, now, produced: 0, recent_parents: Vec::new() }
    }

    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    pub fn next_record(&mut self) -> VisibilityRecord {
        let i = self.produced;
        self.produced += 1;
        let rng = &mut self.rng;
        // Skewed towards the first namespaces, as real clusters are.
        let ns_index = [0, 0, 0, 1, 1, 2, 2, 3, 4][rng.random_range(0..9)];
        let namespace_id = self.namespaces[ns_index].clone();
        let run_id = uuid_from(rng);
        let workflow_type = WORKFLOW_TYPES[rng.random_range(0..WORKFLOW_TYPES.len())];
        let workflow_id = match i % 1000 {
            7 => format!("{}-{}", "long-id-".repeat(40), i).chars().rev().take(255).collect::<String>(),
            13 => format!("заказ-{i}-注文-🚚"),
            _ => format!("{}-{}", workflow_type.to_lowercase(), i),
        };
        let start_time = self.now - Duration::seconds(3_600 + rng.random_range(0..30 * 86_400));
        let start_time = truncate_micros(start_time + Duration::microseconds(rng.random_range(0..1_000_000)));
        let execution_time =
            if rng.random_bool(0.05) { start_time + Duration::seconds(rng.random_range(1..600)) } else { start_time };
        let status = match rng.random_range(0..100) {
            0..=9 => ExecutionStatus::Running,
            10 => ExecutionStatus::Paused,
            11..=70 => ExecutionStatus::Completed,
            71..=80 => ExecutionStatus::Failed,
            81..=84 => ExecutionStatus::Canceled,
            85..=89 => ExecutionStatus::Terminated,
            90..=94 => ExecutionStatus::ContinuedAsNew,
            _ => ExecutionStatus::TimedOut,
        };
        let (close_time, history_length, history_size_bytes, execution_duration, state_transition_count) =
            if status.is_open() {
                (None, None, None, None, None)
            } else {
                let max_run = (self.now - execution_time).num_seconds().clamp(1, 2_400);
                let close = execution_time + Duration::milliseconds(rng.random_range(1..max_run * 1000));
                let close = truncate_micros(close);
                let length: i64 = rng.random_range(5..2_000);
                (
                    Some(close),
                    Some(length),
                    Some(length * rng.random_range(200..900)),
                    Some((close - execution_time).num_nanoseconds().unwrap_or(0)),
                    Some(length / 2 + rng.random_range(1..10)),
                )
            };
        let (parent_workflow_id, parent_run_id, root_workflow_id, root_run_id) =
            if !self.recent_parents.is_empty() && rng.random_bool(0.2) {
                let (pw, pr) = self.recent_parents[rng.random_range(0..self.recent_parents.len())].clone();
                (Some(pw.clone()), Some(pr.clone()), pw, pr)
            } else {
                (None, None, workflow_id.clone(), run_id.clone())
            };
        if self.recent_parents.len() < 64 {
            self.recent_parents.push((workflow_id.clone(), run_id.clone()));
        } else {
            let slot = rng.random_range(0..64);
            self.recent_parents[slot] = (workflow_id.clone(), run_id.clone());
        }
        let memo = if rng.random_bool(0.8) { Some(memo(rng, i)) } else { None };
        let search_attributes = if rng.random_bool(0.9) { Some(search_attributes(rng, i, start_time)) } else { None };
        VisibilityRecord {
            namespace_id,
            run_id,
            workflow_id,
            workflow_type_name: workflow_type.to_string(),
            start_time,
            execution_time,
            close_time,
            status,
            history_length,
            history_size_bytes,
            execution_duration,
            state_transition_count,
            memo,
            encoding: "Proto3".to_string(),
            task_queue: format!("{}-queue", ["default", "payments", "batch", "critical"][rng.random_range(0..4)]),
            search_attributes,
            parent_workflow_id,
            parent_run_id,
            root_workflow_id,
            root_run_id,
            version: 1_048_576 + i as i64 * 7 + rng.random_range(0..7),
        }
    }
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).expect("in range")
}

fn uuid_from(rng: &mut StdRng) -> String {
    let bytes: [u8; 16] = rng.random();
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

fn search_attributes(rng: &mut StdRng, i: u64, start: DateTime<Utc>) -> SearchAttributes {
    use SearchAttributeValue::*;
    let mut sa = SearchAttributes::default();
    let m = &mut sa.0;
    m.insert("Keyword01".into(), String(format!("customer-{}", rng.random_range(0..5_000))));
    if rng.random_bool(0.7) {
        m.insert("Int01".into(), Int(rng.random_range(-1_000_000..i64::MAX / 1024)));
    }
    if rng.random_bool(0.5) {
        m.insert("Double01".into(), Double(rng.random_range(0..1_000_000) as f64 / 100.0 + 0.25));
    }
    if rng.random_bool(0.5) {
        m.insert("Bool01".into(), Bool(rng.random_bool(0.5)));
    }
    if rng.random_bool(0.4) {
        // Temporal keeps the offset the client gave.
        let offset = if i.is_multiple_of(2) { "Z" } else { "+02:00" };
        let t = start + Duration::hours(if offset == "Z" { 0 } else { 2 });
        m.insert("Datetime01".into(), String(format!("{}{offset}", t.format("%Y-%m-%dT%H:%M:%S%.9f"))));
    }
    if rng.random_bool(0.3) {
        // Text values that PostgreSQL's `::tsvector` cast (Temporal's Text columns) accepts,
        // as Temporal itself could not have stored others there.
        let texts = ["urgent delivery to Zürich", "retry after timeout", "ノート 再試行", "plain text note"];
        m.insert("Text01".into(), String(texts[rng.random_range(0..texts.len())].into()));
    }
    if rng.random_bool(0.5) {
        let n = rng.random_range(1..4);
        m.insert("KeywordList01".into(), KeywordList((0..n).map(|k| format!("tag-{}", (i + k) % 17)).collect()));
    }
    if rng.random_bool(0.6) {
        m.insert("BuildIds".into(), KeywordList(vec![format!("assigned:v1.{}", rng.random_range(0..9))]));
    }
    if rng.random_bool(0.1) {
        m.insert("TemporalChangeVersion".into(), KeywordList(vec!["change-1".into(), "change-2".into()]));
    }
    if rng.random_bool(0.05) {
        m.insert("TemporalScheduledById".into(), String(format!("schedule-{}", rng.random_range(0..20))));
    }
    sa
}

/// A proto3 `temporal.api.common.v1.Memo` with one or two fields, each a JSON payload:
/// the bytes Temporal's SDKs produce.
fn memo(rng: &mut StdRng, i: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let fields = rng.random_range(1..3);
    for f in 0..fields {
        let key = if f == 0 { "note" } else { "owner" };
        let data = if f == 0 {
            format!("\"order {i} for {}\"", rng.random_range(0..10_000))
        } else {
            "\"team-payments\"".to_string()
        };
        // Payload { metadata: {"encoding": "json/plain"}, data }
        let mut meta_entry = Vec::new();
        put_bytes(&mut meta_entry, 1, b"encoding");
        put_bytes(&mut meta_entry, 2, b"json/plain");
        let mut payload = Vec::new();
        put_bytes(&mut payload, 1, &meta_entry);
        put_bytes(&mut payload, 2, data.as_bytes());
        // Memo.fields map entry { key = 1; value = 2 }
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, key.as_bytes());
        put_bytes(&mut entry, 2, &payload);
        put_bytes(&mut out, 1, &entry);
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The user's names of the seed's custom search attributes, as an operator would have
/// registered them (`temporal operator search-attribute create`): SQL stores hold them
/// under the pre-allocated field, Elasticsearch under the name.
pub const SEED_ALIASES: [(&str, &str, SearchAttributeType); 7] = [
    ("Keyword01", "CustomerId", SearchAttributeType::Keyword),
    ("Int01", "Amount", SearchAttributeType::Int),
    ("Double01", "Score", SearchAttributeType::Double),
    ("Bool01", "Priority", SearchAttributeType::Bool),
    ("Datetime01", "DueTime", SearchAttributeType::Datetime),
    ("Text01", "Note", SearchAttributeType::Text),
    ("KeywordList01", "Tags", SearchAttributeType::KeywordList),
];

/// The seed's alias map for each of the given namespaces, in the shape of
/// `migration.searchAttributeAliases`.
pub fn seed_aliases(namespaces: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
    let map: BTreeMap<String, String> =
        SEED_ALIASES.iter().map(|(field, alias, _)| (field.to_string(), alias.to_string())).collect();
    namespaces.iter().map(|ns| (ns.clone(), map.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_varied() {
        let now = Utc::now();
        let a: Vec<_> = {
            let mut g = Generator::new(1, now);
            (0..2000).map(|_| g.next_record()).collect()
        };
        let b: Vec<_> = {
            let mut g = Generator::new(1, now);
            (0..2000).map(|_| g.next_record()).collect()
        };
        assert_eq!(a, b);
        for s in ExecutionStatus::ALL {
            assert!(a.iter().any(|r| r.status == s), "status {s} appears");
        }
        assert!(a.iter().any(|r| r.workflow_id.chars().count() == 255));
        assert!(a.iter().any(|r| !r.workflow_id.is_ascii()));
        assert!(a.iter().any(|r| r.parent_run_id.is_some()));
        assert!(a.iter().all(|r| r.workflow_id.chars().count() <= 255));
        assert!(a.iter().all(|r| r.start_time < now - Duration::minutes(59)));
        assert!(a.iter().all(|r| r.status.is_open() == r.close_time.is_none()));
    }
}
