//! A line-level editor for Temporal's dynamic-config file that changes only the lines
//! it must: the `value:` of the entry whose constraints match, or a new entry appended
//! to the key's list (or a new key at the end). Every other byte, comment and ordering
//! stays as it was; flow-style lists are refused rather than rewritten.

use yaml_serde::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The entry without constraints: the fallback for every namespace.
    Global,
    /// The entry constrained to exactly this namespace NAME.
    Namespace(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scalar {
    Bool(bool),
    /// Written double-quoted: `"on"` and `"off"` are booleans to YAML 1.1 readers.
    Str(String),
}

impl Scalar {
    fn render(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Str(s) => format!("\"{s}\""),
        }
    }

    fn matches(&self, v: &Value) -> bool {
        match self {
            Scalar::Bool(b) => v.as_bool() == Some(*b),
            Scalar::Str(s) => v.as_str() == Some(s.as_str()),
        }
    }
}

/// Where a top-level key's block lives in the file, by line index.
struct Block {
    key_line: usize,
    end: usize,
}

fn top_level_key(line: &str) -> Option<String> {
    if line.starts_with([' ', '\t', '#', '-']) || line.trim().is_empty() {
        return None;
    }
    let key = if let Some(rest) = line.strip_prefix('"') {
        rest.split('"').next()?.to_string()
    } else if let Some(rest) = line.strip_prefix('\'') {
        rest.split('\'').next()?.to_string()
    } else {
        line.split(':').next()?.trim().to_string()
    };
    Some(key)
}

fn find_block(lines: &[&str], key: &str) -> Option<Block> {
    let key_line = lines.iter().position(|l| top_level_key(l).is_some_and(|k| k.eq_ignore_ascii_case(key)))?;
    let mut end = key_line + 1;
    while end < lines.len() && top_level_key(lines[end]).is_none() {
        end += 1;
    }
    Some(Block { key_line, end })
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_entry_start(line: &str) -> bool {
    let t = line.trim_start();
    t == "-" || t.starts_with("- ") || t == "-\n" || t == "-\r\n"
}

/// The entry's constraints match the target exactly.
fn constraints_match(entry: &Value, target: &Target) -> bool {
    let constraints = entry.get("constraints");
    let empty = constraints.is_none_or(|c| c.is_null() || c.as_mapping().is_some_and(|m| m.is_empty()));
    match target {
        Target::Global => empty,
        Target::Namespace(ns) => constraints
            .and_then(Value::as_mapping)
            .is_some_and(|m| m.len() == 1 && m.get("namespace").and_then(Value::as_str) == Some(ns.as_str())),
    }
}

/// Sets `key` for `target` to `value`. Returns the new text (equal to the old one when
/// the file already says so).
pub fn set(text: &str, key: &str, target: &Target, value: &Scalar) -> Result<String, String> {
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let constraint_lines = |pad: &str| match target {
        Target::Global => String::new(),
        Target::Namespace(ns) => format!("{pad}  constraints:{newline}{pad}    namespace: \"{ns}\"{newline}"),
    };
    let Some(block) = find_block(&lines, key) else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(newline);
        }
        out.push_str(&format!("{key}:{newline}  - value: {}{newline}{}", value.render(), constraint_lines("  ")));
        return Ok(out);
    };
    let key_text = lines[block.key_line];
    let after_colon = key_text.split_once(':').map(|(_, r)| r.trim()).unwrap_or("");
    if !after_colon.is_empty() && !after_colon.starts_with('#') {
        return Err(format!(
            "{key} is written in flow style on line {}; vismig edits only block-style lists: change it by hand",
            block.key_line + 1
        ));
    }
    // Entries: from a `-` line to the next `-` line at the same indent.
    let starts: Vec<usize> = (block.key_line + 1..block.end).filter(|&i| is_entry_start(lines[i])).collect();
    let dash = starts.first().map(|&i| indent(lines[i])).unwrap_or(2);
    let starts: Vec<usize> = starts.into_iter().filter(|&i| indent(lines[i]) == dash).collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(block.end);
        let entry_text: String = lines[start..end].iter().map(|l| l.get(dash..).unwrap_or(l.trim_start())).collect();
        let parsed: Value = yaml_serde::from_str(&entry_text)
            .map_err(|e| format!("{key}: the entry on line {} is not valid YAML: {e}", start + 1))?;
        let Some(entry) = parsed.as_sequence().and_then(|s| s.first()) else { continue };
        if !constraints_match(entry, target) {
            continue;
        }
        if entry.get("value").is_some_and(|v| value.matches(v)) {
            return Ok(text.to_string());
        }
        let value_line = (start..end)
            .find(|&i| {
                let t = lines[i].trim_start().trim_start_matches("- ").trim_start();
                t.starts_with("value:")
            })
            .ok_or_else(|| format!("{key}: the entry on line {} has no value: line", start + 1))?;
        let line = lines[value_line];
        let at = line.find("value:").expect("found above") + "value:".len();
        let rest = &line[at..];
        let eol = if rest.ends_with("\r\n") {
            "\r\n"
        } else if rest.ends_with('\n') {
            "\n"
        } else {
            ""
        };
        let body = &rest[..rest.len() - eol.len()];
        // Keep a trailing comment and the spacing before it.
        let comment = body.find(" #").map(|i| &body[body[..i].trim_end().len()..]).unwrap_or("");
        let replaced = format!("{} {}{comment}{eol}", &line[..at], value.render());
        let mut out: String = lines[..value_line].concat();
        out.push_str(&replaced);
        out.push_str(&lines[value_line + 1..].concat());
        return Ok(out);
    }
    // No entry for this target: append one after the key's last non-blank line.
    let mut insert_at = block.end;
    while insert_at > block.key_line + 1 && lines[insert_at - 1].trim().is_empty() {
        insert_at -= 1;
    }
    let pad = " ".repeat(dash);
    let mut out: String = lines[..insert_at].concat();
    if !out.ends_with('\n') {
        out.push_str(newline);
    }
    out.push_str(&format!("{pad}- value: {}{newline}{}", value.render(), constraint_lines(&pad)));
    out.push_str(&lines[insert_at..].concat());
    Ok(out)
}

/// A unified diff of two texts that differ in one region (what `set` produces).
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    if prefix == a.len() && prefix == b.len() {
        return String::new();
    }
    let ctx = 3;
    let start = prefix.saturating_sub(ctx);
    let a_end = (a.len() - suffix + ctx).min(a.len());
    let b_end = (b.len() - suffix + ctx).min(b.len());
    let mut out = format!(
        "--- {path}\n+++ {path} (flipped)\n@@ -{},{} +{},{} @@\n",
        start + 1,
        a_end - start,
        start + 1,
        b_end - start
    );
    let line = |l: &str| if l.ends_with('\n') { l.to_string() } else { format!("{l}\n") };
    for l in &a[start..prefix] {
        out.push_str(&format!(" {}", line(l)));
    }
    for l in &a[prefix..a.len() - suffix] {
        out.push_str(&format!("-{}", line(l)));
    }
    for l in &b[prefix..b.len() - suffix] {
        out.push_str(&format!("+{}", line(l)));
    }
    for l in &a[a.len() - suffix..a_end] {
        out.push_str(&format!(" {}", line(l)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# Temporal dynamic config for the prod cluster
frontend.enableClientVersionCheck:
  - value: true
    constraints: {}

# Visibility migration, see runbook
system.secondaryVisibilityWritingMode:
  - value: "dual"   # turned on 2026-11-01
    constraints: {}
SYSTEM.EnableReadFromSecondaryVisibility:
  - value: false
    constraints:
      namespace: "orders"
  - value: false # everyone else
history.defaultActivityRetryPolicy:
  - value:
      InitialIntervalInSeconds: 1
      MaximumAttempts: 0
"#;

    fn changed_lines(a: &str, b: &str) -> Vec<(usize, String)> {
        let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        b.iter().enumerate().filter(|(i, l)| a.get(*i) != Some(l)).map(|(i, l)| (i + 1, l.to_string())).collect()
    }

    #[test]
    fn flips_one_namespace_changing_exactly_one_line() {
        let key = "system.enableReadFromSecondaryVisibility";
        let out = set(FILE, key, &Target::Namespace("orders".into()), &Scalar::Bool(true)).unwrap();
        assert_eq!(changed_lines(FILE, &out), vec![(11, "  - value: true".to_string())]);
        assert_eq!(
            set(&out, key, &Target::Namespace("orders".into()), &Scalar::Bool(true)).unwrap(),
            out,
            "idempotent"
        );
    }

    #[test]
    fn the_global_entry_keeps_its_comment() {
        let key = "system.enableReadFromSecondaryVisibility";
        let out = set(FILE, key, &Target::Global, &Scalar::Bool(true)).unwrap();
        assert_eq!(changed_lines(FILE, &out), vec![(14, "  - value: true # everyone else".to_string())]);
    }

    #[test]
    fn a_new_namespace_is_appended_to_its_key() {
        let key = "system.enableReadFromSecondaryVisibility";
        let out = set(FILE, key, &Target::Namespace("payments".into()), &Scalar::Bool(true)).unwrap();
        let added: Vec<&str> = out.lines().skip(14).take(3).collect();
        assert_eq!(added, ["  - value: true", "    constraints:", "      namespace: \"payments\""]);
        assert!(out.ends_with("      MaximumAttempts: 0\n"));
        let doc: Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(doc["SYSTEM.EnableReadFromSecondaryVisibility"].as_sequence().unwrap().len(), 3);
    }

    #[test]
    fn writing_mode_strings_are_quoted_and_missing_keys_appended() {
        let out =
            set(FILE, "system.secondaryVisibilityWritingMode", &Target::Global, &Scalar::Str("on".into())).unwrap();
        assert_eq!(changed_lines(FILE, &out), vec![(8, "  - value: \"on\"   # turned on 2026-11-01".to_string())]);
        let out =
            set("a: 1\n", "system.visibilityEnableShadowReadMode", &Target::Global, &Scalar::Bool(false)).unwrap();
        assert_eq!(out, "a: 1\nsystem.visibilityEnableShadowReadMode:\n  - value: false\n");
    }

    #[test]
    fn crlf_files_stay_crlf_and_flow_style_is_refused() {
        let crlf = FILE.replace('\n', "\r\n");
        let out = set(&crlf, "system.enableReadFromSecondaryVisibility", &Target::Global, &Scalar::Bool(true)).unwrap();
        assert_eq!(out.matches("\r\n").count(), out.matches('\n').count(), "every line ends in CRLF");
        let flow = "system.enableReadFromSecondaryVisibility: [{value: false}]\n";
        assert!(
            set(flow, "system.enableReadFromSecondaryVisibility", &Target::Global, &Scalar::Bool(true))
                .unwrap_err()
                .contains("flow style")
        );
    }

    #[test]
    fn diffs_show_the_changed_region() {
        let out = set(FILE, "system.enableReadFromSecondaryVisibility", &Target::Global, &Scalar::Bool(true)).unwrap();
        let diff = unified_diff("dc.yaml", FILE, &out);
        assert!(diff.contains("-  - value: false # everyone else\n+  - value: true # everyone else\n"), "{diff}");
        assert_eq!(unified_diff("dc.yaml", FILE, FILE), "");
    }

    /// What Helm's `toYaml` writes into the chart's `<release>-dynamic-config` ConfigMap:
    /// keys sorted, lists not indented under their key, no newline at the end (`|-`).
    #[test]
    fn helm_rendered_configmap_text() {
        let helm = "system.enableReadFromSecondaryVisibility:\n- constraints:\n    namespace: orders\n  value: false\nsystem.secondaryVisibilityWritingMode:\n- value: dual";
        let key = "system.enableReadFromSecondaryVisibility";
        let out = set(helm, key, &Target::Namespace("orders".into()), &Scalar::Bool(true)).unwrap();
        assert_eq!(changed_lines(helm, &out), vec![(4, "  value: true".to_string())]);
        let out = set(&out, key, &Target::Global, &Scalar::Bool(true)).unwrap();
        let out =
            set(&out, "system.secondaryVisibilityWritingMode", &Target::Global, &Scalar::Str("on".into())).unwrap();
        assert_eq!(
            out,
            "system.enableReadFromSecondaryVisibility:\n- constraints:\n    namespace: orders\n  value: true\n- value: true\nsystem.secondaryVisibilityWritingMode:\n- value: \"on\""
        );
        let doc: Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(doc[key].as_sequence().unwrap().len(), 2);
    }
}
