//! Search-attribute names between store families (reference §6).
//!
//! SQL stores key custom search attributes by pre-allocated field names (`Keyword01`)
//! and keep the user's name (the alias) in each namespace's metadata; Elasticsearch
//! stores (up to Temporal v1.30) use the user's name as the field name. Copying between
//! the families renames every custom attribute with the namespace's alias map (from its
//! record in Temporal's default store, or `migration.searchAttributeAliases`), and
//! converts values SQL cannot hold
//! (multi-valued Keyword, Int, ...). Within one family, names pass unchanged.
//!
//! A record whose attribute has no mapping is refused alone, with the reason (dead
//! letter), and preflight refuses the run up front when the source can list what it uses.

use std::collections::{BTreeMap, BTreeSet};

use crate::record::{
    SearchAttributeType, SearchAttributeValue, SearchAttributes, VisibilityRecord, known_search_attribute_type,
    known_search_attributes,
};

/// How a store names custom search attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// Pre-allocated field names plus a per-namespace alias map (SQL; Cassandra has none).
    FieldNames,
    /// The user's names (Elasticsearch and OpenSearch).
    UserNames,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    FieldToUser,
    UserToField,
}

/// Renames (and converts) the search attributes of records going from one family to
/// the other. Built once per run; `apply` is called for every record.
#[derive(Debug, Default)]
pub struct Renamer {
    direction: Option<Direction>,
    /// Namespace id -> field name -> alias.
    aliases: BTreeMap<String, BTreeMap<String, String>>,
}

/// A system attribute Temporal names the same in every store: the predefined ones and
/// the CHASM fields.
fn is_system(name: &str) -> bool {
    static SYSTEM: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            known_search_attributes()
                .into_iter()
                .filter(|a| a.predefined || a.name.starts_with("Temporal"))
                .map(|a| a.name)
                .collect()
        })
        .contains(name)
}

/// A pre-allocated custom field (`Keyword01`, `Int03`, ...), which only SQL stores use.
pub fn is_preallocated(name: &str) -> bool {
    !is_system(name) && known_search_attribute_type(name).is_some()
}

impl Renamer {
    /// `aliases` holds each namespace's alias map, keyed by namespace name or id;
    /// `ids` resolves names to ids (Temporal's namespace registry and namespaceNames).
    pub fn new(
        source: Naming,
        sink: Naming,
        aliases: &BTreeMap<String, BTreeMap<String, String>>,
        ids: &BTreeMap<String, String>,
    ) -> Self {
        let direction = match (source, sink) {
            (Naming::FieldNames, Naming::UserNames) => Some(Direction::FieldToUser),
            (Naming::UserNames, Naming::FieldNames) => Some(Direction::UserToField),
            _ => None,
        };
        let aliases =
            aliases.iter().map(|(ns, map)| (ids.get(ns).cloned().unwrap_or_else(|| ns.clone()), map.clone())).collect();
        Self { direction, aliases }
    }

    /// Identity: source and sink name attributes alike.
    pub fn is_identity(&self) -> bool {
        self.direction.is_none()
    }

    /// The name `name` takes in the sink for records of `namespace_id`, or why it has none.
    pub fn rename(&self, namespace_id: &str, name: &str) -> Result<String, String> {
        let Some(direction) = self.direction else { return Ok(name.to_string()) };
        if is_system(name) {
            return Ok(name.to_string());
        }
        let map = self.aliases.get(namespace_id);
        match direction {
            Direction::FieldToUser => {
                if !is_preallocated(name) {
                    // A legacy custom attribute registered before pre-allocated fields:
                    // Temporal names it the same everywhere.
                    return Ok(name.to_string());
                }
                map.and_then(|m| m.get(name)).cloned().ok_or_else(|| {
                    format!(
                        "search attribute {name} of namespace {namespace_id} has no alias in its namespace's alias map (its record in persistence.defaultStore, or migration.searchAttributeAliases; temporal operator search-attribute list shows it)"
                    )
                })
            }
            Direction::UserToField => map
                .and_then(|m| m.iter().find(|(_, alias)| *alias == name).map(|(field, _)| field.clone()))
                .ok_or_else(|| {
                    format!(
                        "search attribute {name} of namespace {namespace_id} has no SQL field in its namespace's alias map (its record in persistence.defaultStore, or migration.searchAttributeAliases): register it with temporal operator search-attribute create on the SQL store, or map a free pre-allocated field such as Keyword01 to {name:?} for this namespace in migration.searchAttributeAliases"
                    )
                }),
        }
    }

    /// Renames the record's attributes for the sink and converts values the sink cannot
    /// hold; an error names the attribute and why.
    pub fn apply(&self, r: &mut VisibilityRecord) -> Result<(), String> {
        let Some(direction) = self.direction else { return Ok(()) };
        let Some(sa) = r.search_attributes.take() else { return Ok(()) };
        let mut out = BTreeMap::new();
        for (name, value) in sa.0 {
            let target = self.rename(&r.namespace_id, &name)?;
            let value = match direction {
                Direction::UserToField => to_sql_value(&target, value)?,
                Direction::FieldToUser => value,
            };
            if out.insert(target.clone(), value).is_some() {
                return Err(format!("two search attributes map to {target} in namespace {}", r.namespace_id));
            }
        }
        r.search_attributes = Some(SearchAttributes(out));
        Ok(())
    }
}

/// Fits an Elasticsearch value to the type of the SQL field it goes to. Elasticsearch
/// takes an array for any type; SQL holds one value, except in KeywordList fields.
fn to_sql_value(field: &str, value: SearchAttributeValue) -> Result<SearchAttributeValue, String> {
    use SearchAttributeValue as V;
    let Some(kind) = known_search_attribute_type(field) else { return Ok(value) };
    let single = |items_len: usize| -> Result<(), String> {
        if items_len == 1 {
            Ok(())
        } else {
            Err(format!(
                "search attribute {field} ({kind:?}) holds {items_len} values in Elasticsearch; the SQL column holds one"
            ))
        }
    };
    let value = match value {
        V::KeywordList(items) if kind != SearchAttributeType::KeywordList => {
            single(items.len())?;
            V::String(items.into_iter().next().expect("one item"))
        }
        V::List(items) => {
            single(items.len())?;
            items.into_iter().next().expect("one item")
        }
        other => other,
    };
    let fits = matches!(
        (kind, &value),
        (SearchAttributeType::Keyword | SearchAttributeType::Text | SearchAttributeType::Datetime, V::String(_))
            | (SearchAttributeType::KeywordList, V::KeywordList(_))
            | (SearchAttributeType::Int, V::Int(_))
            | (SearchAttributeType::Double, V::Double(_) | V::Int(_))
            | (SearchAttributeType::Bool, V::Bool(_))
    );
    match (kind, value) {
        (SearchAttributeType::KeywordList, V::String(s)) => Ok(V::KeywordList(vec![s])),
        (_, value) if fits => Ok(value),
        (_, value) => Err(format!("search attribute {field} is {kind:?} in SQL, but the value is {}", value.to_json())),
    }
}

/// What a preflight found wrong with attribute names, one line each.
pub fn check(
    renamer: &Renamer,
    used: Option<&BTreeMap<String, BTreeSet<String>>>,
    sink_fields: Option<&BTreeSet<String>>,
    sink: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut absent: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(used) = used {
        for (ns, names) in used {
            for name in names {
                match renamer.rename(ns, name) {
                    Ok(target) => {
                        if sink_fields.is_some_and(|f| !f.contains(&target)) {
                            absent.entry(target).or_default().insert(ns.clone());
                        }
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
    }
    // Aliases the config maps to must exist in the sink, used yet or not.
    if let (Some(fields), Some(Direction::FieldToUser)) = (sink_fields, renamer.direction) {
        for (ns, map) in &renamer.aliases {
            for alias in map.values() {
                if !fields.contains(alias) {
                    absent.entry(alias.clone()).or_default().insert(ns.clone());
                }
            }
        }
    }
    for (name, namespaces) in absent {
        problems.push(format!(
            "{sink} has no mapping for search attribute {name} (used in namespace {}): add it with `temporal operator search-attribute create --name {name} --type <type>` while dual visibility is configured, or PUT <index>/_mapping",
            namespaces.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use SearchAttributeValue as V;

    fn renamer(source: Naming, sink: Naming) -> Renamer {
        let aliases = BTreeMap::from([(
            "orders".to_string(),
            BTreeMap::from([
                ("Keyword01".to_string(), "CustomerId".to_string()),
                ("Int01".to_string(), "Amount".to_string()),
            ]),
        )]);
        let ids = BTreeMap::from([("orders".to_string(), "ns-1".to_string())]);
        Renamer::new(source, sink, &aliases, &ids)
    }

    fn record(attrs: Vec<(&str, V)>) -> VisibilityRecord {
        let mut r = crate::seed::Generator::new(1, chrono::Utc::now()).next_record();
        r.namespace_id = "ns-1".into();
        r.search_attributes = Some(SearchAttributes(attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
        r
    }

    #[test]
    fn sql_to_search_renames_fields_to_aliases_and_keeps_system_names() {
        let r_ = renamer(Naming::FieldNames, Naming::UserNames);
        let mut r = record(vec![
            ("Keyword01", V::String("c-1".into())),
            ("BuildIds", V::KeywordList(vec!["b".into()])),
            ("LegacyName", V::Int(3)),
        ]);
        r_.apply(&mut r).unwrap();
        let sa = &r.search_attributes.unwrap().0;
        assert_eq!(sa["CustomerId"], V::String("c-1".into()));
        assert!(sa.contains_key("BuildIds") && sa.contains_key("LegacyName") && !sa.contains_key("Keyword01"));
        let mut r = record(vec![("Keyword02", V::String("x".into()))]);
        assert!(r_.apply(&mut r).unwrap_err().contains("Keyword02 of namespace ns-1 has no alias"));
    }

    #[test]
    fn search_to_sql_maps_back_and_unwraps_single_values() {
        let r_ = renamer(Naming::UserNames, Naming::FieldNames);
        let mut r =
            record(vec![("CustomerId", V::KeywordList(vec!["c-1".into()])), ("Amount", V::List(vec![V::Int(7)]))]);
        r_.apply(&mut r).unwrap();
        let sa = &r.search_attributes.unwrap().0;
        assert_eq!(sa["Keyword01"], V::String("c-1".into()));
        assert_eq!(sa["Int01"], V::Int(7));
        let mut r = record(vec![("Amount", V::List(vec![V::Int(7), V::Int(8)]))]);
        assert!(r_.apply(&mut r).unwrap_err().contains("holds 2 values"));
        let mut r = record(vec![("Amount", V::String("seven".into()))]);
        assert!(r_.apply(&mut r).unwrap_err().contains("Int01 is Int"));
        let mut r = record(vec![("Unmapped", V::Bool(true))]);
        assert!(r_.apply(&mut r).unwrap_err().contains("Unmapped of namespace ns-1 has no SQL field"));
    }

    #[test]
    fn same_family_is_identity_and_preflight_lists_every_gap() {
        let same = renamer(Naming::UserNames, Naming::UserNames);
        let mut r = record(vec![("Whatever", V::Int(1))]);
        same.apply(&mut r).unwrap();
        assert!(r.search_attributes.unwrap().0.contains_key("Whatever"));

        let used =
            BTreeMap::from([("ns-1".to_string(), BTreeSet::from(["CustomerId".to_string(), "Missing".to_string()]))]);
        let fields = BTreeSet::from(["Keyword02".to_string()]);
        let problems = check(&renamer(Naming::UserNames, Naming::FieldNames), Some(&used), Some(&fields), "pg");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("Missing of namespace ns-1 has no SQL field"));
        assert!(problems[1].contains("pg has no mapping for search attribute Keyword01"));
    }
}
