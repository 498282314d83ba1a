//! Namespace names for people: records, JSON and metric labels carry namespace ids, but
//! operators know namespaces by name. Names come from Temporal's default store and
//! `migration.namespaceNames` (which wins), as for the flip.

use std::collections::BTreeMap;

use crate::config::Config;

/// Namespace id -> name, for text output and logs.
#[derive(Clone, Debug, Default)]
pub struct NamespaceNames {
    by_id: BTreeMap<String, String>,
}

impl NamespaceNames {
    /// From a name -> id map (what `commands::namespace_names` returns).
    pub fn from_name_to_id(names: &BTreeMap<String, String>) -> Self {
        Self { by_id: names.iter().map(|(name, id)| (id.clone(), name.clone())).collect() }
    }

    /// The names the config gives: the default store's namespace records, then
    /// `migration.namespaceNames`. A default store that cannot be read only warns: names
    /// are for reading the output, not worth failing a status or a verify for.
    pub async fn load(config: &Config) -> Self {
        let names = crate::commands::namespace_names(config).await.unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "cannot read namespace names from persistence.defaultStore; showing ids (names from migration.namespaceNames only)");
            config.migration.namespace_names.clone()
        });
        Self::from_name_to_id(&names)
    }

    /// The ids of namespaces given by name or by id (a known name is taken as one).
    pub fn ids_of(&self, namespaces: &[String]) -> Vec<String> {
        namespaces
            .iter()
            .map(|n| {
                self.by_id.iter().find(|(_, name)| *name == n).map(|(id, _)| id.clone()).unwrap_or_else(|| n.clone())
            })
            .collect()
    }

    pub fn name(&self, id: &str) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }

    /// `name (id)` when the name is known, else the id.
    pub fn label(&self, id: &str) -> String {
        label(id, self.name(id))
    }
}

/// How text output names a namespace: `name (id)` when the name is known, else the id.
pub fn label(id: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} ({id})"),
        None => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_id_when_known() {
        let names = NamespaceNames::from_name_to_id(&BTreeMap::from([("orders".to_string(), "ns-1".to_string())]));
        assert_eq!(names.label("ns-1"), "orders (ns-1)");
        assert_eq!(names.label("ns-2"), "ns-2");
        assert_eq!(names.name("ns-1"), Some("orders"));
        assert_eq!(names.ids_of(&["orders".into(), "ns-2".into()]), vec!["ns-1".to_string(), "ns-2".into()]);
    }
}
