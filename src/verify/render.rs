//! The verify report as text, verdict first: one line that says whether to worry, one
//! line per namespace, then the counts and differences of the namespaces that differ
//! (of every namespace with `--details`).

use std::collections::BTreeSet;

use super::{NamespaceReport, Report};

/// Statuses named in a namespace's one-line summary before the rest are counted.
const SUMMARY_STATUSES: usize = 3;

impl NamespaceReport {
    /// `name (id)` when the name is known, else the id.
    pub fn label(&self) -> String {
        crate::names::label(&self.namespace, self.name.as_deref())
    }

    /// Records below the cut-off in the primary.
    pub fn compared(&self) -> u64 {
        self.primary.values().sum()
    }

    /// One line: the verdict and what it rests on.
    fn summary(&self) -> String {
        let recent = match self.recent.primary.max(self.recent.secondary) {
            0 => String::new(),
            n => format!(" ({n} recent, not compared)"),
        };
        if self.is_equal() {
            return format!("equal, {} records{recent}", self.compared());
        }
        let mut parts: Vec<String> = self
            .count_differences
            .iter()
            .take(SUMMARY_STATUSES)
            .map(|d| format!("{} {} in the primary, {} in the secondary", d.status, d.primary, d.secondary))
            .collect();
        if self.count_differences.len() > SUMMARY_STATUSES {
            parts.push(format!("{} more statuses differ", self.count_differences.len() - SUMMARY_STATUSES));
        }
        if !self.difference_counts.is_empty() {
            parts.push(self.difference_counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
        }
        format!("DIFFERENT: {}{recent}", parts.join("; "))
    }

    /// The counts per status, and the differing records.
    fn details(&self) -> String {
        let mut out = format!("{}:\n", self.label());
        out.push_str(&format!("  {:<15} {:>12} {:>12}\n", "status", "primary", "secondary"));
        let statuses: BTreeSet<&String> = self.primary.keys().chain(self.secondary.keys()).collect();
        for status in statuses {
            let p = self.primary.get(status).copied().unwrap_or(0);
            let s = self.secondary.get(status).copied().unwrap_or(0);
            let mark = if p == s { "" } else { "  DIFFERENT" };
            out.push_str(&format!("  {status:<15} {p:>12} {s:>12}{mark}\n"));
        }
        out.push_str(&format!(
            "  {:<15} {:>12} {:>12}  (not compared)\n",
            "recent", self.recent.primary, self.recent.secondary
        ));
        for d in &self.differences {
            let fields = if d.fields.is_empty() { String::new() } else { format!(" fields: {}", d.fields.join(", ")) };
            let repair = d.repair.as_ref().map(|r| format!(" -> {r}")).unwrap_or_default();
            out.push_str(&format!(
                "  {:<9} run {} workflow {}{fields}{repair}\n",
                d.kind.label(),
                d.run_id,
                d.workflow_id
            ));
        }
        let listed = self.differences.len() as u64;
        let total: u64 = self.difference_counts.values().sum();
        if total > listed {
            out.push_str(&format!("  … and {} more (--output json lists the first {listed})\n", total - listed));
        }
        out
    }
}

impl Report {
    /// The verdict line: `verify (MODE): equal|different, N namespaces and M records
    /// compared, cut-off T`.
    pub fn verdict(&self) -> String {
        let differing = self.namespaces.iter().filter(|n| !n.is_equal()).count();
        let which = if differing == 0 { String::new() } else { format!(" ({differing} differ)") };
        format!(
            "verify ({}): {}, {} namespaces{which} and {} records compared, cut-off {} (records that started or closed after it are not compared)",
            self.mode,
            self.result,
            self.namespaces.len(),
            self.records_compared,
            self.cutoff.to_rfc3339()
        )
    }

    /// The verdict, one line per namespace, then the details of those that differ (of
    /// all with `all_details`).
    pub fn text(&self, all_details: bool) -> String {
        let mut out = format!("{}\n", self.verdict());
        let width = self.namespaces.iter().map(|n| n.label().len()).max().unwrap_or(0);
        for ns in &self.namespaces {
            out.push_str(&format!("  {:<width$}  {}\n", ns.label(), ns.summary()));
        }
        let detailed: Vec<&NamespaceReport> = self.namespaces.iter().filter(|n| all_details || !n.is_equal()).collect();
        if !detailed.is_empty() {
            out.push_str(if all_details { "details:\n" } else { "details of the namespaces that differ:\n" });
        }
        for ns in detailed {
            out.push_str(&ns.details());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CountDifference, Recent};
    use super::*;
    use chrono::Utc;
    use std::collections::BTreeMap;

    fn namespace(id: &str, name: Option<&str>, primary: u64, secondary: u64) -> NamespaceReport {
        let mut ns = NamespaceReport::empty(id);
        ns.name = name.map(str::to_string);
        ns.primary = BTreeMap::from([("Completed".to_string(), primary)]);
        ns.secondary = BTreeMap::from([("Completed".to_string(), secondary)]);
        ns.recent = Recent { primary: 2, secondary: 2 };
        if primary != secondary {
            ns.count_differences = vec![CountDifference { status: "Completed".into(), primary, secondary }];
        }
        ns
    }

    fn report(namespaces: Vec<NamespaceReport>) -> Report {
        let equal = namespaces.iter().all(|n| n.is_equal());
        Report {
            result: if equal { "equal" } else { "different" },
            mode: "counts",
            cutoff: Utc::now(),
            records_compared: namespaces.iter().map(|n| n.compared()).sum(),
            namespaces,
        }
    }

    #[test]
    fn the_verdict_comes_first_and_details_only_for_namespaces_that_differ() {
        let r = report(vec![namespace("ns-1", Some("orders"), 10, 10), namespace("ns-2", None, 5, 4)]);
        let text = r.text(false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0]
                .starts_with("verify (counts): different, 2 namespaces (1 differ) and 15 records compared, cut-off "),
            "{text}"
        );
        assert_eq!(lines[1], "  orders (ns-1)  equal, 10 records (2 recent, not compared)");
        assert_eq!(
            lines[2],
            "  ns-2           DIFFERENT: Completed 5 in the primary, 4 in the secondary (2 recent, not compared)"
        );
        assert_eq!(lines[3], "details of the namespaces that differ:");
        assert_eq!(lines[4], "ns-2:");
        assert!(!text.contains("orders (ns-1):"), "{text}");
        assert!(r.text(true).contains("orders (ns-1):\n"), "--details lists every namespace");
    }

    #[test]
    fn an_equal_report_is_the_verdict_and_one_line_per_namespace() {
        let r = report(vec![namespace("ns-1", None, 3, 3), namespace("ns-2", None, 4, 4)]);
        assert_eq!(r.text(false).lines().count(), 3, "{}", r.text(false));
        assert!(r.text(false).starts_with("verify (counts): equal, 2 namespaces and 7 records compared"));
    }
}
