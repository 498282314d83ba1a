//! Reads Temporal's dynamic-config file (a map of key -> list of `{value, constraints}`;
//! keys are case-insensitive to Temporal) for the visibility settings.

use std::path::Path;

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

pub fn readers_of_secondary_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    readers_of_secondary(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
