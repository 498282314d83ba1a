//! `${VAR}` and `${VAR:-default}` expansion of the raw config text, before YAML parsing.

/// Expands `${VAR}` and `${VAR:-default}` with values from `lookup`. `$${` stands for a
/// literal `${`. An unset variable without a default is an error naming the variable and
/// the line; the variable's value never appears in an error.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    let mut out = String::with_capacity(text.len());
    let mut substituted = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
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
            Some(i) => (&inner[..i], Some(&inner[i + 2..])),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {line}: invalid variable name in ${{{inner}}}"));
        }
        match (lookup(name).filter(|v| !v.is_empty() || default.is_none()), default) {
            (Some(value), _) => {
                out.push_str(&value);
                if !value.is_empty() {
                    substituted.push(value);
                }
            }
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "line {line}: environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                ));
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(Expanded { text: out, substituted })
}

/// The expanded text, and the values taken from the environment (which may be
/// secrets, so error messages about the expanded text are scrubbed of them).
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

    fn env(name: &str) -> Option<String> {
        match name {
            "PWD_X" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_unset_default_and_escape() {
        assert_eq!(expand("a ${PWD_X} b", env).unwrap().text, "a s3cr3t b");
        assert_eq!(expand("${NOPE:-x:y}", env).unwrap().text, "x:y");
        assert_eq!(expand("${PWD_X:-d}", env).unwrap().text, "s3cr3t");
        assert_eq!(expand("${EMPTY:-d}", env).unwrap().text, "d");
        assert_eq!(expand("${EMPTY}", env).unwrap().text, "");
        assert_eq!(expand("cost $5 $${KEEP}", env).unwrap().text, "cost $5 ${KEEP}");
    }

    #[test]
    fn errors_name_the_variable_and_line() {
        assert_eq!(
            expand("a: 1\nb: ${MISSING}\n", env).unwrap_err(),
            "line 2: environment variable MISSING is not set (use ${MISSING:-default} for a default)"
        );
        assert_eq!(expand("x: ${OPEN", env).unwrap_err(), "line 1: unterminated ${ in the config text");
        assert_eq!(expand("x: ${A B}", env).unwrap_err(), "line 1: invalid variable name in ${A B}");
    }
}
