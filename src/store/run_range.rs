//! Run-id range shards, shared by the stores whose records sort by run id within a
//! namespace (SQL: the primary key; Elasticsearch: a keyword sort).

use serde::{Deserialize, Serialize};

use super::{ShardSpec, Split, StoreError};

/// A shard: the runs of one namespace whose run id lies in `[start, end)` (open-ended
/// where None). Run ids are random UUIDs, so fixed hex-prefix boundaries split every
/// namespace evenly without reading any data: the plan is the same in every process of
/// an Indexed Job, and each shard is one range of the primary key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRange {
    /// The namespace id as text (for people only when `namespace_id_hex` is set).
    pub namespace_id: String,
    /// The stored namespace id's bytes, in hex, when they are not UTF-8: the scan binds
    /// these, so that such a namespace is scanned (and its rows dead-lettered) rather
    /// than looked up under a lossy name that matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_id_hex: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
}

/// A key column's value exactly as the store holds it: text when it is UTF-8, else its
/// bytes. Scans resume after the exact bytes of the last row's key (a lossy rendering
/// sorts elsewhere: the next page skipped rows, or read the same page again forever).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredKey {
    Text(String),
    Bytes(Vec<u8>),
}

impl StoredKey {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => Self::Text(text),
            Err(e) => Self::Bytes(e.into_bytes()),
        }
    }

    /// The bytes as hex, for cursors, shard specs and messages.
    pub fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
        if !hex.len().is_multiple_of(2) {
            return None;
        }
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
    }

    /// For logs and errors: the text, or the bytes in hex, said as such.
    pub fn describe(&self) -> String {
        match self {
            Self::Text(text) => format!("{text:?}"),
            Self::Bytes(bytes) => format!("(not UTF-8, hex) {}", Self::hex(bytes)),
        }
    }
}

impl RunRange {
    pub fn to_spec(&self) -> ShardSpec {
        ShardSpec(serde_json::to_value(self).expect("run range serializes"))
    }

    pub fn from_spec(spec: &ShardSpec) -> Result<Self, StoreError> {
        serde_json::from_value(spec.0.clone())
            .map_err(|e| StoreError::Permanent(format!("checkpoint shard is not a run-id range: {e}")))
    }

    /// The namespace id to bind, exactly as stored.
    pub fn namespace_key(&self) -> Result<StoredKey, StoreError> {
        match &self.namespace_id_hex {
            None => Ok(StoredKey::Text(self.namespace_id.clone())),
            Some(hex) => StoredKey::from_hex(hex).map(StoredKey::Bytes).ok_or_else(|| {
                StoreError::Permanent(format!("checkpoint shard has a namespaceIdHex that is not hex: {hex:?}"))
            }),
        }
    }

    /// Every namespace split into `split.parts()` run-id ranges, keeping the parts that
    /// belong to this process.
    pub fn plan(namespaces: &[String], split: &Split) -> Vec<RunRange> {
        let keys: Vec<StoredKey> = namespaces.iter().map(|ns| StoredKey::Text(ns.clone())).collect();
        Self::plan_keys(&keys, split)
    }

    /// `plan` for namespace ids read from the store, as stored (untrimmed, and bytes where
    /// they are not UTF-8), so that every one of them is scanned.
    pub fn plan_keys(namespaces: &[StoredKey], split: &Split) -> Vec<RunRange> {
        let parts = split.parts().clamp(1, 65_536);
        let boundary = |i: usize| (i > 0 && i < parts).then(|| format!("{:04x}", i * 65_536 / parts));
        let mut out = Vec::new();
        for ns in namespaces {
            let (namespace_id, namespace_id_hex) = match ns {
                StoredKey::Text(text) => (text.clone(), None),
                StoredKey::Bytes(bytes) => (String::from_utf8_lossy(bytes).into_owned(), Some(StoredKey::hex(bytes))),
            };
            for part in (0..parts).filter(|p| split.owns(*p)) {
                out.push(RunRange {
                    namespace_id: namespace_id.clone(),
                    namespace_id_hex: namespace_id_hex.clone(),
                    start: boundary(part),
                    end: boundary(part + 1),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_namespace_without_gaps() {
        let ns = vec!["a".to_string(), "b".to_string()];
        let all = RunRange::plan(&ns, &Split { per_process: 4, process_index: 0, process_count: 1 });
        assert_eq!(all.len(), 8);
        assert_eq!(
            all[0],
            RunRange { namespace_id: "a".into(), namespace_id_hex: None, start: None, end: Some("4000".into()) }
        );
        assert_eq!(all[1].start, Some("4000".into()));
        assert_eq!(
            all[3],
            RunRange { namespace_id: "a".into(), namespace_id_hex: None, start: Some("c000".into()), end: None }
        );
        for pair in all.windows(2).filter(|w| w[0].namespace_id == w[1].namespace_id) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        let back = RunRange::from_spec(&all[2].to_spec()).unwrap();
        assert_eq!(back, all[2]);
    }

    #[test]
    fn a_namespace_id_that_is_not_utf8_is_planned_by_its_bytes() {
        let split = Split { per_process: 2, process_index: 0, process_count: 1 };
        let plan = RunRange::plan_keys(
            &[StoredKey::from_bytes(vec![0xff, b'n']), StoredKey::from_bytes(b"ns ".to_vec())],
            &split,
        );
        assert_eq!(plan.len(), 4);
        let back = RunRange::from_spec(&plan[0].to_spec()).unwrap();
        assert_eq!(back.namespace_key().unwrap(), StoredKey::Bytes(vec![0xff, b'n']));
        assert_eq!(plan[2].namespace_key().unwrap(), StoredKey::Text("ns ".into()), "kept untrimmed");
        assert!(plan[2].to_spec().0.get("namespaceIdHex").is_none(), "text ids keep the old shard format");
        assert_eq!(StoredKey::from_hex("00ff7a"), Some(vec![0, 0xff, b'z']));
        assert_eq!(StoredKey::from_hex("0"), None);
        assert_eq!(StoredKey::from_hex("zz"), None);
    }

    #[test]
    fn processes_of_an_indexed_job_take_disjoint_parts() {
        let ns = vec!["a".to_string()];
        let p0 = RunRange::plan(&ns, &Split { per_process: 2, process_index: 0, process_count: 2 });
        let p1 = RunRange::plan(&ns, &Split { per_process: 2, process_index: 1, process_count: 2 });
        let whole = RunRange::plan(&ns, &Split { per_process: 4, process_index: 0, process_count: 1 });
        let mut union: Vec<RunRange> = p0.iter().chain(p1.iter()).cloned().collect();
        union.sort_by(|a, b| a.start.cmp(&b.start));
        assert_eq!(union, whole);
    }
}
