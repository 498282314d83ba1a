//! Config errors: each broken config gives exactly one line naming the field.

use super::*;

const GOOD: &str = r#"
persistence:
  visibilityStore: primary
  secondaryVisibilityStore: secondary
  datastores:
    primary:
      sql: { pluginName: sqlite, databaseName: /tmp/p.db, connectAddr: localhost }
    secondary:
      sql: { pluginName: sqlite, databaseName: /tmp/s.db, connectAddr: localhost, password: "${SECRET_PWD}" }
migration:
  batchSize: 500
  concurrency: 4
"#;

fn env(name: &str) -> Option<String> {
    (name == "SECRET_PWD").then(|| "hunter2-secret".to_string())
}

fn error_of(text: &str) -> String {
    Config::parse(text, env).expect_err("config must be refused").to_string()
}

#[test]
fn a_good_config_loads_with_defaults_and_hides_the_password() {
    let c = Config::parse(GOOD, env).unwrap();
    assert_eq!(c.migration.batch_size, 500);
    assert_eq!(c.migration.rate.records_per_second, 5000);
    assert_eq!(c.migration.metrics.listen, "127.0.0.1:9090");
    assert_eq!(c.primary().datastore, "primary");
    assert_eq!(c.secondary().datastore, "secondary");
    let sql = c.persistence.datastores["secondary"].sql.as_ref().unwrap();
    assert_eq!(sql.password.as_ref().unwrap().expose(), "hunter2-secret");
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "Debug must redact passwords: {debug}");
    assert!(debug.contains("***"));
}

#[test]
fn temporals_own_server_config_is_accepted_with_its_other_keys() {
    let text = r#"
log: { stdout: true, level: info }
persistence:
  defaultStore: default
  visibilityStore: es-visibility
  numHistoryShards: 4
  datastores:
    default:
      sql: { pluginName: postgres12, databaseName: temporal, connectAddr: "127.0.0.1:5432", connectProtocol: tcp, user: temporal, password: temporal, maxConns: 20, maxIdleConns: 20, maxConnLifetime: 1h }
    es-visibility:
      elasticsearch:
        version: v7
        logLevel: error
        url: { scheme: http, host: "127.0.0.1:9200" }
        indices: { visibility: temporal_visibility_v1, secondary_visibility: temporal_visibility_v1_new }
global: { membership: { maxJoinDuration: 30s } }
services: {}
"#;
    let c = Config::parse(text, env).unwrap();
    assert_eq!(c.primary(), StoreRef { datastore: "es-visibility".into(), es_index_key: Some("visibility".into()) });
    assert_eq!(
        c.secondary(),
        StoreRef { datastore: "es-visibility".into(), es_index_key: Some("secondary_visibility".into()) }
    );
}

#[test]
fn each_broken_config_names_its_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            GOOD.replace("  visibilityStore: primary\n", ""),
            "config error: persistence.visibilityStore: missing (name the primary visibility store, a key of persistence.datastores)",
        ),
        (
            GOOD.replace("visibilityStore: primary", "visibilityStore: nope"),
            "config error: persistence.visibilityStore: store \"nope\" is not in persistence.datastores (known: primary, secondary)",
        ),
        (
            GOOD.replace("secondaryVisibilityStore: secondary", "secondaryVisibilityStore: other"),
            "config error: persistence.secondaryVisibilityStore: store \"other\" is not in persistence.datastores (known: primary, secondary)",
        ),
        (
            GOOD.replace("  secondaryVisibilityStore: secondary\n", ""),
            "config error: persistence.secondaryVisibilityStore: missing (name the secondary visibility store, or set indices.secondary_visibility on an Elasticsearch primary)",
        ),
        (
            GOOD.replace("secondaryVisibilityStore: secondary", "secondaryVisibilityStore: primary"),
            "config error: persistence.secondaryVisibilityStore: \"primary\" is also the visibilityStore; the secondary must be another store",
        ),
        (
            GOOD.replacen("pluginName: sqlite", "pluginName: oracle", 1),
            "config error: persistence.datastores.primary.sql.pluginName: unsupported \"oracle\" (supported: sqlite, postgres12, postgres12_pgx, mysql8, postgres, postgres_pgx, mysql)",
        ),
        (
            GOOD.replacen("databaseName: /tmp/p.db, ", "", 1),
            "config error: persistence.datastores.primary.sql.databaseName: missing",
        ),
        (
            GOOD.replace("pluginName: sqlite, databaseName: /tmp/s.db", "pluginName: postgres, databaseName: v"),
            "config error: persistence.secondaryVisibilityStore: \"secondary\" uses pluginName \"postgres\", a standard visibility schema, which can only be read; use an advanced plugin (postgres12, mysql8, sqlite)",
        ),
        (
            GOOD.replace("batchSize: 500", "batchSize: 0"),
            "config error: migration.batchSize: 0 is out of range (1 to 10000)",
        ),
        (
            GOOD.replace("batchSize: 500", "batchSize: 20000"),
            "config error: migration.batchSize: 20000 is out of range (1 to 10000)",
        ),
        (
            GOOD.replace("concurrency: 4", "concurrency: 65"),
            "config error: migration.concurrency: 65 is out of range (1 to 64)",
        ),
        (
            format!("{GOOD}  rate: {{ recordsPerSecond: 20000000 }}\n"),
            "config error: migration.rate.recordsPerSecond: 20000000 is out of range (0 = unlimited, up to 10000000)",
        ),
        (format!("{GOOD}  rate: {{ burst: 0 }}\n"), "config error: migration.rate.burst: must be at least 1"),
        (
            format!("{GOOD}  metrics: {{ controlToken: {{ file: /run/token, env: TOKEN }} }}\n"),
            "config error: migration.metrics.controlToken: needs exactly one of file (a path) or env (a variable name)",
        ),
        (
            format!("{GOOD}  metrics: {{ controlToken: {{}} }}\n"),
            "config error: migration.metrics.controlToken: needs exactly one of file (a path) or env (a variable name)",
        ),
        (
            format!("{GOOD}  metrics: {{ controlToken: {{ env: \"MY TOKEN\" }} }}\n"),
            "config error: migration.metrics.controlToken.env: \"MY TOKEN\" is not an environment variable name (letters, digits, _)",
        ),
        (
            format!("{GOOD}  metrics: {{ listen: \"localhost\" }}\n"),
            "config error: migration.metrics.listen: \"localhost\" is not an address like 127.0.0.1:9090",
        ),
        (
            GOOD.replace("  password: \"${SECRET_PWD}\"", "").replace("${SECRET_PWD}", "${NOT_SET_ANYWHERE}"),
            "config error: line 9: environment variable NOT_SET_ANYWHERE is not set (use ${NOT_SET_ANYWHERE:-default} for a default)",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error_of(&text), want, "config:\n{text}");
    }
}

#[test]
fn address_modes_and_cassandra_settings_are_checked_when_loading() {
    let pg = |sql: &str| {
        GOOD.replace(
            "sql: { pluginName: sqlite, databaseName: /tmp/s.db, connectAddr: localhost, password: \"${SECRET_PWD}\" }",
            sql,
        )
    };
    let cassandra =
        |body: &str| GOOD.replace("    secondary:\n", &format!("    cass:\n      cassandra: {body}\n    secondary:\n"));
    let cases = [
        (
            pg("sql: { pluginName: postgres12, databaseName: v, connectAddr: \"db:port\" }"),
            "config error: persistence.datastores.secondary.sql.connectAddr: \"db:port\" is not host:port (a port is a number up to 65535; IPv6 as [::1]:5432)",
        ),
        (
            pg("sql: { pluginName: mysql8, databaseName: v, connectAddr: \"db:70000\" }"),
            "config error: persistence.datastores.secondary.sql.connectAddr: \"db:70000\" is not host:port (a port is a number up to 65535; IPv6 as [::1]:5432)",
        ),
        (
            pg(
                "sql: { pluginName: postgres12, databaseName: v, connectAddr: \"db:5432\", connectAttributes: { sslmode: sometimes } }",
            ),
            "config error: persistence.datastores.secondary.sql.connectAttributes.sslmode: \"sometimes\" is not a PostgreSQL sslmode (disable, allow, prefer, require, verify-ca, verify-full)",
        ),
        (
            cassandra("{ hosts: h, keyspace: \"temporal-vis\" }"),
            "config error: persistence.datastores.cass.cassandra.keyspace: \"temporal-vis\" is not a plain keyspace name (letters, digits, _)",
        ),
        (
            cassandra("{ hosts: h, keyspace: v, connectTimeout: 5 seconds }"),
            "config error: persistence.datastores.cass.cassandra.connectTimeout: \"5 seconds\" is not a duration (use e.g. 10s, 600ms)",
        ),
        (
            cassandra("{ hosts: h, keyspace: v, consistency: { default: { consistency: MAYBE } } }"),
            "config error: persistence.datastores.cass.cassandra.consistency.default.consistency: \"MAYBE\" is not a consistency level (e.g. LOCAL_QUORUM, QUORUM, ONE)",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error_of(&text), want, "config:\n{text}");
    }
    for ok in ["db", "db:5432", "[::1]:5432", "[::1]", "::1", "10.0.0.1:3306"] {
        assert!(valid_host_port(ok), "{ok}");
    }
    for bad in ["", "db:", ":5432", "db:port", "[::1]5432", "[]:1"] {
        assert!(!valid_host_port(bad), "{bad}");
    }
}

#[test]
fn errors_from_durations_and_passwords_name_the_field_itself() {
    let e = error_of(&format!("{GOOD}  verify: {{ cutoff: 5 minutes }}\n"));
    assert!(e.starts_with("config error: migration.verify.cutoff: invalid duration \"5 minutes\""), "{e}");
    let e = error_of(&format!("{GOOD}  flip: {{ maxVerifyAge: 1d }}\n"));
    assert!(e.starts_with("config error: migration.flip.maxVerifyAge: invalid duration \"1d\""), "{e}");
    let e = error_of(&GOOD.replace("password: \"${SECRET_PWD}\"", "password: [\"${SECRET_PWD}\"]"));
    assert!(
        e.starts_with("config error: persistence.datastores.secondary.sql.password: invalid type: sequence"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    let c = Config::parse(&format!("{GOOD}  verify: {{ cutoff: 0, recheckAfter: 1s }}\n"), env).unwrap();
    assert_eq!(c.migration.verify.cutoff, std::time::Duration::ZERO);
    let c = Config::parse(&GOOD.replace("password: \"${SECRET_PWD}\"", "password: 12345"), env).unwrap();
    assert_eq!(
        c.persistence.datastores["secondary"].sql.as_ref().unwrap().password.as_ref().unwrap().expose(),
        "12345"
    );
}

#[test]
fn unknown_keys_in_the_migration_block_are_errors() {
    let e = error_of(&GOOD.replace("concurrency: 4", "concurency: 4"));
    assert!(e.starts_with("config error: migration: unknown field `concurency`"), "{e}");
    assert_eq!(e.lines().count(), 1);
    let e = error_of(&format!("{GOOD}  checkpoint: {{ type: file, paht: x }}\n"));
    assert!(e.starts_with("config error: migration.checkpoint: unknown field `paht`"), "{e}");
    let e = error_of(&format!("{GOOD}  checkpoint: {{ type: redis }}\n"));
    assert!(e.contains("migration.checkpoint.type: unknown variant `redis`"), "{e}");
}

#[test]
fn parse_errors_never_echo_expanded_secrets() {
    // The secret lands where a number is expected: the error must not quote it.
    let text = GOOD.replace("batchSize: 500", "batchSize: ${SECRET_PWD}");
    let e = error_of(&text);
    assert!(!e.contains("hunter2"), "{e}");
    assert!(e.contains("batchSize"), "{e}");
}

#[test]
fn several_problems_are_reported_one_per_line() {
    let text = GOOD.replace("batchSize: 500", "batchSize: 0").replace("concurrency: 4", "concurrency: 0");
    let e = error_of(&text);
    assert_eq!(e.lines().count(), 2, "{e}");
}

#[test]
fn a_configmap_flip_target_is_read_and_each_bad_field_named() {
    let target = |body: &str| format!("{GOOD}  flip:\n    target:\n      configMap: {body}\n");
    let c = Config::parse(
        &target("{ namespace: temporal, name: temporal-dynamic-config, key: dynamic_config.yaml, apiServer: \"https://10.0.0.1:6443\" }"),
        env,
    )
    .unwrap();
    let cm = c.migration.flip.target.unwrap().config_map.unwrap();
    assert_eq!(
        (cm.namespace.as_str(), cm.name.as_str(), cm.key.as_str()),
        ("temporal", "temporal-dynamic-config", "dynamic_config.yaml")
    );
    assert_eq!(cm.api_server.as_deref(), Some("https://10.0.0.1:6443"));

    let cases = [
        (
            target("{ name: dc, key: dc.yaml }"),
            "config error: migration.flip.target.configMap.namespace: missing (the Kubernetes namespace of the ConfigMap)",
        ),
        (
            target("{ namespace: Temporal_NS, name: dc, key: dc.yaml }"),
            "config error: migration.flip.target.configMap.namespace: \"Temporal_NS\" is not a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)",
        ),
        (
            target("{ namespace: temporal, key: dc.yaml }"),
            "config error: migration.flip.target.configMap.name: missing (the ConfigMap that holds Temporal's dynamic config)",
        ),
        (
            target("{ namespace: temporal, name: \"dc..x\", key: dc.yaml }"),
            "config error: migration.flip.target.configMap.name: \"dc..x\" is not a ConfigMap name (lower-case letters, digits, '-' and '.', at most 253)",
        ),
        (
            target("{ namespace: temporal, name: dc }"),
            "config error: migration.flip.target.configMap.key: missing (the key of the ConfigMap's data that holds the YAML, e.g. dynamic_config.yaml)",
        ),
        (
            target("{ namespace: temporal, name: dc, key: \"a/b.yaml\" }"),
            "config error: migration.flip.target.configMap.key: \"a/b.yaml\" is not a ConfigMap key (letters, digits, '-', '_' and '.')",
        ),
        (
            target("{ namespace: temporal, name: dc, key: dc.yaml, apiServer: \"10.0.0.1:6443\" }"),
            "config error: migration.flip.target.configMap.apiServer: \"10.0.0.1:6443\" is not a URL like https://10.0.0.1:6443",
        ),
        (
            format!("{GOOD}  flip:\n    target: {{}}\n"),
            "config error: migration.flip.target: needs configMap: { namespace, name, key } (or leave target out to edit migration.flip.dynamicConfigFile)",
        ),
        (
            format!(
                "{GOOD}  flip:\n    dynamicConfigFile: /etc/dc.yaml\n    target: {{ configMap: {{ namespace: t, name: dc, key: dc.yaml }} }}\n"
            ),
            "config error: migration.flip.dynamicConfigFile: set together with migration.flip.target.configMap; keep one (in Kubernetes, the ConfigMap that Temporal's pods mount)",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error_of(&text), want, "config:\n{text}");
    }
    let e = error_of(&target("{ namespace: t, name: dc, key: dc.yaml, server: x }"));
    assert!(e.starts_with("config error: migration.flip.target.configMap: unknown field `server`"), "{e}");
}

#[test]
fn temporals_aws_request_signing_block_is_read_with_its_own_key_names() {
    let es = |signing: &str| {
        format!(
            r#"
persistence:
  visibilityStore: es
  datastores:
    es:
      elasticsearch:
        url: {{ scheme: https, host: "search-x.us-east-1.es.amazonaws.com" }}
        indices: {{ visibility: a, secondary_visibility: b }}
        aws-request-signing:
{signing}
"#
        )
    };
    let text = es(
        "          enabled: true\n          region: eu-west-1\n          credentialProvider: static\n          static:\n            accessKeyID: AKIDTEST\n            secretAccessKey: \"${SECRET_PWD}\"\n            token: tok",
    );
    let c = Config::parse(&text, env).unwrap();
    let aws = c.persistence.datastores["es"].elasticsearch.as_ref().unwrap().aws_request_signing.clone().unwrap();
    assert!(aws.enabled);
    assert_eq!(aws.region, "eu-west-1");
    assert_eq!(aws.provider(), Ok(persistence::AwsCredentialProvider::Static));
    assert_eq!(aws.static_credentials.access_key_id, "AKIDTEST");
    assert_eq!(aws.static_credentials.secret_access_key.as_ref().unwrap().expose(), "hunter2-secret");
    assert_eq!(aws.static_credentials.token.as_ref().unwrap().expose(), "tok");
    assert!(!format!("{c:?}").contains("hunter2"), "Debug must redact the secret key");

    let at = "config error: persistence.datastores.es.elasticsearch.aws-request-signing";
    let e = error_of(&es("          enabled: true\n          credentialProvider: instance-role"));
    assert_eq!(
        e,
        format!("{at}.credentialProvider: \"instance-role\" is not one of static, environment, aws-sdk-default")
    );
    let e = error_of(&es(
        "          enabled: true\n          credentialProvider: static\n          static: { accessKeyID: AKIDTEST }",
    ));
    assert_eq!(
        e,
        format!("{at}.static: accessKeyID and secretAccessKey are both needed with credentialProvider static")
    );
    // A disabled block is not looked at, as in Temporal.
    assert!(Config::parse(&es("          enabled: false\n          credentialProvider: nonsense"), env).is_ok());
}
