//! Temporal's namespace records in its default store (`persistence.defaultStore`, the
//! `namespaces` table of a SQL store or of Cassandra's main keyspace): each namespace's
//! name, id and search-attribute alias map.
//!
//! The record's `data` column (`detail` in Cassandra) holds a proto3-serialized `NamespaceDetail`
//! (`proto/internal/temporal/server/api/persistence/v1/namespaces.proto`, the same field
//! numbers from Temporal v1.21 to today). Only the alias map is decoded: the messages below
//! declare just the fields on the path to it, and prost skips every other field.

use std::collections::{BTreeMap, HashMap};

/// One namespace as the default store keeps it; `data` is decoded only on demand, so a
/// record vismig cannot decode stops only the commands that need its aliases.
#[derive(Clone, Debug)]
pub struct NamespaceRecord {
    pub name: String,
    pub id: String,
    /// The `data` column (Cassandra: `detail`): a serialized `NamespaceDetail`.
    pub data: Vec<u8>,
    /// The `data_encoding` column (Cassandra: `detail_encoding`), `Proto3`.
    pub encoding: String,
}

/// `temporal.server.api.persistence.v1.NamespaceDetail`, only `config = 2`.
#[derive(Clone, PartialEq, prost::Message)]
struct NamespaceDetail {
    #[prost(message, optional, tag = "2")]
    config: Option<NamespaceConfig>,
}

/// `temporal.server.api.persistence.v1.NamespaceConfig`, only
/// `map<string, string> custom_search_attribute_aliases = 8` (field name -> alias).
#[derive(Clone, PartialEq, prost::Message)]
struct NamespaceConfig {
    #[prost(map = "string, string", tag = "8")]
    custom_search_attribute_aliases: HashMap<String, String>,
}

impl NamespaceRecord {
    /// The namespace's alias map (pre-allocated field name -> the user's name), as
    /// `temporal operator search-attribute create` left it on a SQL visibility store.
    /// `store` names the default store in the error.
    pub fn aliases(&self, store: &str) -> Result<BTreeMap<String, String>, String> {
        let what = format!("namespace {:?} ({}) in store {store:?}", self.name, self.id);
        if !self.encoding.eq_ignore_ascii_case("proto3") {
            return Err(format!(
                "{what}: its record's encoding is {:?}, not Proto3; give its alias map in migration.searchAttributeAliases",
                self.encoding
            ));
        }
        let detail = <NamespaceDetail as prost::Message>::decode(self.data.as_slice()).map_err(|e| {
            format!("{what}: its record does not decode as Temporal's NamespaceDetail ({e}); give its alias map in migration.searchAttributeAliases")
        })?;
        Ok(detail.config.map(|c| c.custom_search_attribute_aliases.into_iter().collect()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf wire format written by hand (not by prost), so the test checks the field
    /// numbers against Temporal's proto rather than against this module's own encoder.
    fn length_delimited(field: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128);
        let mut out = vec![field << 3 | 2, body.len() as u8];
        out.extend_from_slice(body);
        out
    }

    fn entry(key: &str, value: &str) -> Vec<u8> {
        let mut e = length_delimited(1, key.as_bytes());
        e.extend(length_delimited(2, value.as_bytes()));
        length_delimited(8, &e)
    }

    fn record(data: Vec<u8>, encoding: &str) -> NamespaceRecord {
        NamespaceRecord { name: "orders".into(), id: "ns-1".into(), data, encoding: encoding.into() }
    }

    #[test]
    fn reads_the_alias_map_and_skips_every_other_field() {
        // info = 1 {id = 1 "ns-1", name = 3 "orders"}; config = 2 {retention = 1 {seconds = 1: 86400},
        // archival_bucket = 2 "b", aliases = 8 (two entries)}; config_version = 4: 7.
        let mut info = length_delimited(1, b"ns-1");
        info.extend(length_delimited(3, b"orders"));
        let mut config = length_delimited(1, &[0x08, 0x80, 0xa3, 0x05]);
        config.extend(length_delimited(2, b"b"));
        config.extend(entry("Keyword01", "CustomerId"));
        config.extend(entry("Double01", "Score"));
        let mut detail = length_delimited(1, &info);
        detail.extend(length_delimited(2, &config));
        detail.extend([4 << 3, 7]);
        let aliases = record(detail, "Proto3").aliases("default").unwrap();
        assert_eq!(
            aliases,
            BTreeMap::from([("Double01".to_string(), "Score".to_string()), ("Keyword01".into(), "CustomerId".into())])
        );
    }

    #[test]
    fn a_namespace_without_aliases_has_an_empty_map() {
        assert!(record(vec![], "Proto3").aliases("default").unwrap().is_empty());
        assert!(record(length_delimited(1, b""), "Proto3").aliases("default").unwrap().is_empty());
    }

    #[test]
    fn bad_records_are_named() {
        let e = record(vec![0x12, 0x05, 0x01], "Proto3").aliases("default").unwrap_err();
        assert!(e.starts_with("namespace \"orders\" (ns-1) in store \"default\": its record does not decode"), "{e}");
        let e = record(vec![], "json").aliases("default").unwrap_err();
        assert!(e.contains("encoding is \"json\", not Proto3"), "{e}");
    }
}
