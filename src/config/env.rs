//! `${VAR}` and `${VAR:-default}` expansion inside the config's parsed scalar values.
//!
//! Expanding the raw text before parsing let a value reshape the document: a password
//! with ` #` was cut at the comment, one starting with `*`, `&`, `!` or a quote, or
//! holding `: `, was read as YAML syntax. So each reference is first replaced by an
//! inert marker (letters, digits and `_`, which mean the same in every YAML context,
//! flow mappings included), the text is parsed, and the markers are replaced inside the
//! parsed strings, where a value can only ever be a value.

use yaml_serde::{Mapping, Value};

/// Marks a reference in the text; `{MARK}{n}_` for the n-th reference.
const MARK: &str = "__vismig_env_";
/// Marks `$${`, which stands for a literal `${`.
const ESCAPED: &str = "__vismig_literal_";

/// One `${…}` of the text.
struct Reference {
    name: String,
    default: Option<String>,
    /// The line of the config text, for errors.
    line: usize,
    /// Written inside quotes: the value stays a string even if it looks like a number.
    quoted: bool,
}

/// Parses `text` as YAML and expands `${VAR}` and `${VAR:-default}` inside its string
/// values and keys, with values from `lookup`; `$${` stands for a literal `${`. An
/// unset variable without a default is an error naming the variable and the line; the
/// variable's value never appears in an error. References in comments are ignored.
///
/// A scalar that is one unquoted reference and nothing else takes the type its value
/// reads as (`batchSize: ${BATCH}` with `500` is a number, `true`/`false` a boolean),
/// as the text expansion did; anything else stays a string, whatever it contains.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    let (marked, references) = mark(text)?;
    let mut document: Value = yaml_serde::from_str(&marked).map_err(|e| {
        // The marked text holds no value from the environment: safe to describe.
        let msg = e.to_string().replace('\n', " ");
        match e.location() {
            Some(loc) if !msg.contains("line") => format!("{msg} (line {}, column {})", loc.line(), loc.column()),
            _ => msg,
        }
    })?;
    let mut expander = Expander { references, lookup, substituted: Vec::new() };
    expander.value(&mut document)?;
    let text = yaml_serde::to_string(&document).map_err(|e| format!("cannot re-read the expanded config: {e}"))?;
    Ok(Expanded { text, substituted: expander.substituted })
}

/// Replaces each reference of the text with a marker; checks each one's syntax.
fn mark(text: &str) -> Result<(String, Vec<Reference>), String> {
    if text.contains(MARK) || text.contains(ESCAPED) {
        return Err(format!("the config text contains {MARK:?} or {ESCAPED:?}, which vismig reserves"));
    }
    let mut out = String::with_capacity(text.len());
    let mut references = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str(ESCAPED);
            rest = escaped;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            rest = &after[1..];
            continue;
        }
        let line = text[..text.len() - rest.len() + pos].matches('\n').count() + 1;
        let close = after.find('}').ok_or_else(|| format!("line {line}: unterminated ${{ in the config text"))?;
        let inner = &after[2..close];
        let (name, default) = match inner.find(":-") {
            Some(i) => (&inner[..i], Some(inner[i + 2..].to_string())),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {line}: invalid variable name in ${{{inner}}}"));
        }
        let quoted = out.ends_with(['"', '\'']);
        out.push_str(&format!("{MARK}{}_", references.len()));
        references.push(Reference { name: name.to_string(), default, line, quoted });
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok((out, references))
}

struct Expander<F> {
    references: Vec<Reference>,
    lookup: F,
    substituted: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Expander<F> {
    fn value(&mut self, value: &mut Value) -> Result<(), String> {
        match value {
            Value::String(s) => {
                if let Some(typed) = self.scalar(s)? {
                    *value = typed;
                }
            }
            Value::Sequence(items) => {
                for item in items {
                    self.value(item)?;
                }
            }
            Value::Mapping(map) => {
                let mut expanded = Mapping::with_capacity(map.len());
                for (mut k, mut v) in std::mem::take(map) {
                    self.value(&mut k)?;
                    self.value(&mut v)?;
                    expanded.insert(k, v);
                }
                *map = expanded;
            }
            Value::Tagged(tagged) => self.value(&mut tagged.value)?,
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
        Ok(())
    }

    /// Expands the markers of one string in place; returns the typed value when the
    /// string was one unquoted reference whose value reads as a number or boolean.
    fn scalar(&mut self, s: &mut String) -> Result<Option<Value>, String> {
        if !s.contains(MARK) && !s.contains(ESCAPED) {
            return Ok(None);
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s.as_str();
        let mut whole = None;
        loop {
            let next_mark = rest.find(MARK);
            let next_escape = rest.find(ESCAPED).filter(|e| next_mark.is_none_or(|m| *e < m));
            match (next_mark, next_escape) {
                (None, None) => break,
                (_, Some(e)) => {
                    out.push_str(&rest[..e]);
                    out.push_str("${");
                    rest = &rest[e + ESCAPED.len()..];
                }
                (Some(m), None) => {
                    out.push_str(&rest[..m]);
                    let after = &rest[m + MARK.len()..];
                    let end = after.find('_').expect("a marker ends with _");
                    let index: usize = after[..end].parse().expect("a marker holds its index");
                    let value = self.resolve(index)?;
                    if m == 0 && end + 1 == after.len() && out.is_empty() && !self.references[index].quoted {
                        whole = Some(value.clone());
                    }
                    out.push_str(&value);
                    rest = &after[end + 1..];
                }
            }
        }
        out.push_str(rest);
        *s = out;
        Ok(whole.and_then(|value| typed(&value)))
    }

    fn resolve(&mut self, index: usize) -> Result<String, String> {
        let r = &self.references[index];
        match ((self.lookup)(&r.name).filter(|v| !v.is_empty() || r.default.is_none()), &r.default) {
            (Some(value), _) => {
                if !value.is_empty() {
                    self.substituted.push(value.clone());
                }
                Ok(value)
            }
            (None, Some(default)) => Ok(default.clone()),
            (None, None) => Err(format!(
                "line {}: environment variable {} is not set (use ${{{}:-default}} for a default)",
                r.line, r.name, r.name
            )),
        }
    }
}

/// The value of an unquoted scalar that was one reference: a whole number or a boolean
/// written as YAML writes it, else None (it stays a string). Only forms that print back
/// as they were read, so that a password such as `0123` or `1e3` is never altered.
fn typed(value: &str) -> Option<Value> {
    match value {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    if let Ok(n) = value.parse::<u64>()
        && n.to_string() == value
    {
        return Some(Value::Number(n.into()));
    }
    if let Ok(n) = value.parse::<i64>()
        && n.to_string() == value
    {
        return Some(Value::Number(n.into()));
    }
    None
}

/// The expanded document as YAML text (every value quoted as it needs), and the values
/// taken from the environment (which may be secrets, so error messages about the
/// expanded document are scrubbed of them).
pub struct Expanded {
    pub text: String,
    pub substituted: Vec<String>,
}

// Hand-written: the text and the values may hold secrets.
impl std::fmt::Debug for Expanded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expanded {{ {} bytes, {} substitutions }}", self.text.len(), self.substituted.len())
    }
}

impl Expanded {
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for value in &self.substituted {
            out = out.replace(value.as_str(), "***");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::expand;
    use yaml_serde::Value;

    fn env(name: &str) -> Option<String> {
        match name {
            "PWD_X" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            "BATCH" => Some("500".into()),
            "ZERO_LED" => Some("0123".into()),
            "TRICKY" => Some(TRICKY.into()),
            _ => None,
        }
    }

    /// Every character that reshaped a document when expanded in the text.
    const TRICKY: &str = "*a&b !c \"d' #e: f}, [g] {h ${I} $${J} \\n";

    fn parsed(text: &str) -> Value {
        yaml_serde::from_str(&expand(text, env).unwrap().text).unwrap()
    }

    #[test]
    fn expands_set_unset_default_and_escape() {
        assert_eq!(parsed("a: x ${PWD_X} y")["a"], "x s3cr3t y");
        assert_eq!(parsed("a: ${NOPE:-x:y}")["a"], "x:y");
        assert_eq!(parsed("a: ${PWD_X:-d}")["a"], "s3cr3t");
        assert_eq!(parsed("a: ${EMPTY:-d}")["a"], "d");
        assert_eq!(parsed("a: \"${EMPTY}\"")["a"], "");
        assert_eq!(parsed("a: cost $5 $${KEEP}")["a"], "cost $5 ${KEEP}");
        assert_eq!(parsed("{ a: ${PWD_X}, b: [${PWD_X}] }")["b"][0], "s3cr3t", "in flow collections too");
        assert_eq!(parsed("${PWD_X}: 1")["s3cr3t"], 1, "in keys too");
    }

    #[test]
    fn a_value_never_changes_the_document() {
        for text in [
            "a: ${TRICKY}\nb: 1\n",
            "a: \"${TRICKY}\"\nb: 1\n",
            "a: '${TRICKY}'\nb: 1\n",
            "{ a: ${TRICKY}, b: 1 }",
            "a: |\n  ${TRICKY}\nb: 1\n",
        ] {
            let doc = parsed(text);
            let a = doc["a"].as_str().unwrap_or_else(|| panic!("{text}: {doc:?}"));
            assert_eq!(a.trim_end_matches('\n'), TRICKY, "{text}");
            assert_eq!(doc["b"], 1, "{text}");
        }
    }

    #[test]
    fn a_lone_unquoted_reference_keeps_its_type_and_a_quoted_one_stays_a_string() {
        assert_eq!(parsed("n: ${BATCH}")["n"], 500);
        assert_eq!(parsed("n: \"${BATCH}\"")["n"], "500");
        assert_eq!(parsed("n: ${ZERO_LED}")["n"], "0123", "never altered by reading it as a number");
        assert_eq!(parsed("n: ${NOPE:-true}")["n"], true);
        assert_eq!(parsed("n: x${BATCH}")["n"], "x500");
    }

    #[test]
    fn errors_name_the_variable_and_line() {
        let e = |text: &str| expand(text, env).unwrap_err();
        assert_eq!(
            e("a: 1\nb: ${MISSING}\n"),
            "line 2: environment variable MISSING is not set (use ${MISSING:-default} for a default)"
        );
        assert_eq!(e("x: ${OPEN"), "line 1: unterminated ${ in the config text");
        assert_eq!(e("x: ${A B}"), "line 1: invalid variable name in ${A B}");
        assert!(expand("a: 1 # ${MISSING} only in a comment\n", env).is_ok());
    }
}
