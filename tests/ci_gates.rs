//! CI cannot quietly shrink: `tests/run.sh` refuses, under CI=true, every knob that narrows
//! the suite, and a lost run bit on up.sh is an error; every integration test gates on its
//! service (and the operations tools) through `tests/common`, which fails instead of
//! skipping once services are declared up or under CI.
//!
//! The run.sh cases run the real script with a PATH that has no cargo: a refusal must come
//! before the first step, and a script that got past the guards fails at once at
//! "toolchain" instead of starting the whole suite inside this test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{replica_gate, service_gate, tools_gate};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/run.sh` of `root` with exactly `vars` in its environment (plus a PATH
/// without cargo); returns the exit code and stderr.
fn run_sh(root: &Path, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new("/bin/bash")
        .arg(root.join("tests/run.sh"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn run_sh_under_ci_refuses_every_knob_that_shrinks_the_suite() {
    for (var, value, says) in [
        ("VISMIG_SKIP_SERVICES", "1", "refuses VISMIG_SKIP_SERVICES=1"),
        ("VISMIG_SKIP_E2E", "1", "refuses VISMIG_SKIP_E2E=1"),
        ("VISMIG_SERVICES", "postgres opensearch", "leaves out mariadb"),
        ("VISMIG_SERVICES", "postgres,mariadb,cassandra,opensearch,opensearch_secure", "leaves out elasticsearch"),
        ("VISMIG_SERVICES", "postgres mariadb cassandra opensearch elasticsearch", "leaves out opensearch_secure"),
        ("VISMIG_SERVICES", "postgres mariadb cassandra opensearch opensearch_secure elasticsearch", "leaves out kube"),
    ] {
        let (code, err) = run_sh(&repo(), &[("CI", "true"), (var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {err}");
        assert!(err.contains(says) && err.lines().count() == 1, "{var}={value}: {err}");
    }
}

#[test]
fn run_sh_under_ci_accepts_the_whole_suite() {
    // Past the guards, the first step needs cargo, which this PATH lacks: not a refusal.
    for vars in [
        vec![("CI", "true")],
        vec![
            ("CI", "true"),
            ("VISMIG_SERVICES", "kube elasticsearch opensearch_secure opensearch cassandra mariadb postgres"),
        ],
        vec![("VISMIG_SKIP_E2E", "1")],
    ] {
        let (code, err) = run_sh(&repo(), &vars);
        assert_ne!(code, Some(0), "{vars:?}: {err}");
        assert!(!err.contains("refuses"), "{vars:?}: {err}");
    }
}

#[test]
fn run_sh_without_the_run_bit_on_up_sh_is_an_error_not_a_skip() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("tests/services")).unwrap();
    std::fs::copy(repo().join("tests/run.sh"), root.path().join("tests/run.sh")).unwrap();
    std::fs::copy(repo().join("tests/services/lib.sh"), root.path().join("tests/services/lib.sh")).unwrap();
    let up = root.path().join("tests/services/up.sh");
    std::fs::write(&up, "#!/usr/bin/env bash\nexit 0\n").unwrap();
    // fs::write creates it with mode 0644 (no run bit).
    for vars in [vec![], vec![("CI", "true")]] {
        let (code, err) = run_sh(root.path(), &vars);
        assert_eq!(code, Some(2), "{vars:?}: {err}");
        assert!(err.contains("tests/services/up.sh is not executable"), "{vars:?}: {err}");
    }
}

#[test]
fn a_service_missing_from_the_declared_list_fails_the_test() {
    let all = "postgres mariadb cassandra opensearch elasticsearch";
    assert_eq!(service_gate("mariadb", Some(all), false), Ok(true));
    assert_eq!(service_gate("mariadb", Some(all), true), Ok(true));
    let err = service_gate("mariadb", Some("postgres opensearch"), false).unwrap_err();
    assert!(err.contains("does not list mariadb"), "{err}");
    assert!(service_gate("mariadb", Some(""), false).is_err(), "an empty list declares services, none of them up");
    // Nothing declared: a developer's machine skips, CI fails.
    assert_eq!(service_gate("mariadb", None, false), Ok(false));
    let err = service_gate("mariadb", None, true).unwrap_err();
    assert!(err.contains("CI=true") && err.contains("mariadb"), "{err}");
}

#[test]
fn the_tools_gate_fails_under_ci() {
    let dir = PathBuf::from("/var/cache/vismig-tools");
    assert_eq!(tools_gate(Some(dir.clone()), true), Ok(Some(dir)));
    assert_eq!(tools_gate(None, false), Ok(None));
    assert!(tools_gate(None, true).unwrap_err().contains("TEST_TOOLS is unset"));
}

#[test]
fn the_replica_gate_fails_under_ci() {
    assert_eq!(replica_gate(Some("5433".into()), true), Ok(Some("5433".into())));
    assert_eq!(replica_gate(None, false), Ok(None));
    assert!(replica_gate(None, true).unwrap_err().contains("made no PostgreSQL replica"));
}

/// Every gate is the one in tests/common: no test file reads the service or tool lists
/// itself or prints its own skip line (each of those once let a narrowed run pass).
#[test]
fn no_test_file_has_a_gate_of_its_own() {
    let needles = [
        format!("\"{}:", "skipped"),
        format!("\"{} ", "skipped"),
        format!("\"VISMIG_TEST_{}\"", "SERVICES"),
        format!("\"VISMIG_TEST_{}\"", "TOOLS"),
    ];
    let mut offenders = Vec::new();
    let mut files = vec![repo().join("tests")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests/common/mod.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle.as_str())) {
                offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "gates outside tests/common (use common::service_up / tools_dir):\n{}",
        offenders.join("\n")
    );
}
