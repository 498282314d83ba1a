//! Reads Temporal's dynamic-config file (a map of key -> list of `{value, constraints}`;
//! keys are case-insensitive to Temporal) for the visibility settings.

use std::collections::BTreeMap;

use yaml_serde::Value;

pub const READ_FROM_SECONDARY: &str = "system.enableReadFromSecondaryVisibility";
pub const WRITING_MODE: &str = "system.secondaryVisibilityWritingMode";

/// The entries of `key` (any case), or none.
fn entries<'a>(doc: &'a Value, key: &str) -> Vec<&'a Value> {
    let Value::Mapping(map) = doc else { return Vec::new() };
    map.iter()
        .filter(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(key)))
        .flat_map(|(_, v)| v.as_sequence().map(|s| s.iter().collect::<Vec<_>>()).unwrap_or_default())
        .collect()
}

/// Who reads from the secondary: `all` for an entry without constraints, else the
/// namespace names of the entries whose value is true.
pub fn readers_of_secondary(text: &str) -> Result<Vec<String>, String> {
    let doc: Value = yaml_serde::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut readers = Vec::new();
    for entry in entries(&doc, READ_FROM_SECONDARY) {
        if entry.get("value").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let namespace = entry.get("constraints").and_then(|c| c.get("namespace")).and_then(Value::as_str);
        let constrained = entry.get("constraints").and_then(Value::as_mapping).is_some_and(|m| !m.is_empty());
        readers.push(match (namespace, constrained) {
            (Some(ns), _) => ns.to_string(),
            (None, false) => "all".to_string(),
            (None, true) => "some (constraints other than namespace)".to_string(),
        });
    }
    Ok(readers)
}

/// The read and write settings as Temporal resolves them: a namespace uses the first
/// entry constrained to exactly its name, else the first entry without constraints,
/// else the default (`false`); a value that is not a boolean counts as the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadState {
    /// The entry without constraints: what every namespace without its own entry does.
    pub all: bool,
    /// Namespaces (NAMES) with their own entry.
    pub namespaces: BTreeMap<String, bool>,
    /// `system.secondaryVisibilityWritingMode` without constraints, if set.
    pub writing_mode: Option<String>,
}

impl ReadState {
    pub fn parse(text: &str) -> Result<ReadState, String> {
        let doc: Value = yaml_serde::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        let mut state = ReadState::default();
        let mut all = None;
        for entry in entries(&doc, READ_FROM_SECONDARY) {
            let value = entry.get("value").and_then(Value::as_bool).unwrap_or(false);
            let constraints = entry.get("constraints").and_then(Value::as_mapping);
            match constraints.map(|m| (m.len(), m.get("namespace").and_then(Value::as_str))) {
                None | Some((0, _)) => {
                    all.get_or_insert(value);
                }
                Some((1, Some(ns))) => {
                    state.namespaces.entry(ns.to_string()).or_insert(value);
                }
                // namespaceId, taskQueueName, ...: not a per-namespace-name setting.
                Some(_) => {}
            }
        }
        state.all = all.unwrap_or(false);
        state.writing_mode = entries(&doc, WRITING_MODE).into_iter().find_map(|e| {
            let unconstrained =
                e.get("constraints").is_none_or(|c| c.is_null() || c.as_mapping().is_some_and(|m| m.is_empty()));
            if unconstrained { e.get("value").and_then(|v| v.as_str().map(String::from)) } else { None }
        });
        Ok(state)
    }

    /// Whether this namespace (by NAME) reads from the secondary.
    pub fn reads_secondary(&self, namespace: &str) -> bool {
        self.namespaces.get(namespace).copied().unwrap_or(self.all)
    }

    /// The writing mode Temporal uses: the set value, or its default `off`.
    pub fn writing_mode(&self) -> &str {
        self.writing_mode.as_deref().unwrap_or("off")
    }

    /// One row per namespace worth showing: `*` (namespaces without their own entry),
    /// those with their own entry, and `also` (e.g. the names vismig knows) with the
    /// value they inherit. Each row: (name, reads from the secondary, has its own entry).
    pub fn rows<'a>(&self, also: impl IntoIterator<Item = &'a String>) -> Vec<(String, bool, bool)> {
        let mut rows = vec![(ALL_NAMESPACES.to_string(), self.all, true)];
        let mut names: BTreeMap<String, (bool, bool)> =
            self.namespaces.iter().map(|(n, v)| (n.clone(), (*v, true))).collect();
        for name in also {
            names.entry(name.clone()).or_insert((self.all, false));
        }
        rows.extend(names.into_iter().map(|(n, (v, own))| (n, v, own)));
        rows
    }

    /// A one-line summary: who reads from the secondary.
    pub fn summary(&self) -> String {
        let pick = |want: bool| -> Vec<&str> {
            self.namespaces.iter().filter(|(_, v)| **v == want).map(|(n, _)| n.as_str()).collect()
        };
        match (self.all, pick(true), pick(false)) {
            (true, _, except) if except.is_empty() => "all".to_string(),
            (true, _, except) => format!("all except {}", except.join(", ")),
            (false, only, _) if only.is_empty() => "no namespace".to_string(),
            (false, only, _) => only.join(", "),
        }
    }
}

/// The label and row name that stand for every namespace without its own entry.
pub const ALL_NAMESPACES: &str = "*";

/// What to tell the operator when a flip of reads adds the read key to a file that did
/// not have it: Temporal v1.23 and older look the key up once, when the server starts
/// (`GetEnableReadFromSecondaryVisibilityConfig` in `common/persistence/visibility/defs.go
/// @ v1.23.1`), and when it is absent then they never read it, so such a flip does
/// nothing until the next restart. From v1.24 on the key is read at every poll.
pub fn read_key_added_warning(old: &str) -> Option<String> {
    let doc: Value = yaml_serde::from_str(old).ok()?;
    let present = doc
        .as_mapping()
        .is_some_and(|m| m.keys().any(|k| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(READ_FROM_SECONDARY))));
    (!present).then(|| {
        format!(
            "{READ_FROM_SECONDARY} was not in the dynamic config before this flip: Temporal v1.24 and later read it at the next poll, \
             but v1.23 and older only read it if it was there when the server started, so on such a cluster restart Temporal now \
             (or, next time, add the key with value false before the restart that turns on dual writes)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_when_a_flip_adds_the_read_key() {
        assert!(read_key_added_warning("system.secondaryVisibilityWritingMode:\n  - value: \"dual\"\n").is_some());
        assert!(read_key_added_warning("").is_some());
        let present = "SYSTEM.enableReadFromSecondaryVisibility:\n  - value: false\n";
        assert!(read_key_added_warning(present).is_none());
    }

    #[test]
    fn finds_readers_whatever_the_key_case() {
        let text = r#"
# comment
system.secondaryVisibilityWritingMode:
  - value: "dual"
SYSTEM.enableReadFromSecondaryVisibility:
  - value: true
    constraints: { namespace: "orders" }
  - value: false
"#;
        assert_eq!(readers_of_secondary(text).unwrap(), vec!["orders"]);
        let global = "system.enableReadFromSecondaryVisibility:\n  - value: true\n";
        assert_eq!(readers_of_secondary(global).unwrap(), vec!["all"]);
        assert!(readers_of_secondary("other.key:\n  - value: 1\n").unwrap().is_empty());
        assert!(readers_of_secondary("a: [").is_err());
    }

    #[test]
    fn read_state_resolves_like_temporal() {
        let text = r#"
system.secondaryVisibilityWritingMode:
  - value: "dual"
    constraints: {}
system.enableReadFromSecondaryVisibility:
  - value: true
    constraints: { namespace: "orders" }
  - value: false
    constraints: { namespace: "orders" }
  - value: true
    constraints: { namespaceId: "0b1c" }
  - value: "yes"
    constraints: { namespace: "billing" }
  - value: true
  - value: false
"#;
        let s = ReadState::parse(text).unwrap();
        assert!(s.all, "the first unconstrained entry wins");
        assert_eq!(s.namespaces.len(), 2, "{s:?}");
        assert!(s.reads_secondary("orders"), "the first entry for a namespace wins");
        assert!(!s.reads_secondary("billing"), "a non-boolean value is the default, false");
        assert!(s.reads_secondary("payments"), "no own entry: the unconstrained one");
        assert_eq!(s.writing_mode(), "dual");
        assert_eq!(s.summary(), "all except billing");
        let names = ["payments".to_string()];
        assert_eq!(
            s.rows(&names),
            vec![
                ("*".to_string(), true, true),
                ("billing".to_string(), false, true),
                ("orders".to_string(), true, true),
                ("payments".to_string(), true, false),
            ]
        );
        let empty = ReadState::parse("other: 1\n").unwrap();
        assert_eq!((empty.all, empty.writing_mode(), empty.summary().as_str()), (false, "off", "no namespace"));
        assert_eq!(
            ReadState::parse(
                "system.enableReadFromSecondaryVisibility:\n  - value: true\n    constraints: { namespace: a }\n"
            )
            .unwrap()
            .summary(),
            "a"
        );
    }
}
