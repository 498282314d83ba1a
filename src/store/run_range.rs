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
    pub namespace_id: String,
    pub start: Option<String>,
    pub end: Option<String>,
}

impl RunRange {
    pub fn to_spec(&self) -> ShardSpec {
        ShardSpec(serde_json::to_value(self).expect("run range serializes"))
    }

    pub fn from_spec(spec: &ShardSpec) -> Result<Self, StoreError> {
        serde_json::from_value(spec.0.clone())
            .map_err(|e| StoreError::Permanent(format!("checkpoint shard is not a run-id range: {e}")))
    }

    /// Every namespace split into `split.parts()` run-id ranges, keeping the parts that
    /// belong to this process.
    pub fn plan(namespaces: &[String], split: &Split) -> Vec<RunRange> {
        let parts = split.parts().clamp(1, 65_536);
        let boundary = |i: usize| (i > 0 && i < parts).then(|| format!("{:04x}", i * 65_536 / parts));
        let mut out = Vec::new();
        for ns in namespaces {
            for part in (0..parts).filter(|p| split.owns(*p)) {
                out.push(RunRange { namespace_id: ns.clone(), start: boundary(part), end: boundary(part + 1) });
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
        assert_eq!(all[0], RunRange { namespace_id: "a".into(), start: None, end: Some("4000".into()) });
        assert_eq!(all[1].start, Some("4000".into()));
        assert_eq!(all[3], RunRange { namespace_id: "a".into(), start: Some("c000".into()), end: None });
        for pair in all.windows(2).filter(|w| w[0].namespace_id == w[1].namespace_id) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        let back = RunRange::from_spec(&all[2].to_spec()).unwrap();
        assert_eq!(back, all[2]);
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
