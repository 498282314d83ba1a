//! config/k8s/ against a real Kubernetes API server (tests/services/svc/kube.sh: etcd and
//! kube-apiserver built from k8s.io/kubernetes, RBAC authorizer): every manifest applied
//! with `kubectl apply --dry-run=server` (the real schemas, defaulting, strict field
//! validation and admission), and the shipped RBAC proven least-privilege as the service
//! accounts themselves: `kubectl auth can-i` for what the flip account may and may not
//! do, then a real token of that account patching the one ConfigMap and refused the rest.
//! Each test works in a namespace of its own (no controller manager runs, so namespaces
//! are never finalized: they are left behind, named per run).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PODMONITOR_CRD: &str = "podmonitors.monitoring.coreos.com";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// kubectl as the admin of the test cluster (VISMIG_TEST_KUBECTL/VISMIG_TEST_KUBECONFIG
/// from tests/services/env.sh).
fn kubectl(args: &[&str]) -> Output {
    kubectl_stdin(args, None)
}

fn kubectl_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let bin = std::env::var("VISMIG_TEST_KUBECTL").expect("VISMIG_TEST_KUBECTL is unset: source tests/services/env.sh");
    let kubeconfig =
        std::env::var("VISMIG_TEST_KUBECONFIG").expect("VISMIG_TEST_KUBECONFIG is unset: source tests/services/env.sh");
    let mut child = Command::new(&bin)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--request-timeout=30s")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e} (tests/services/build-kube.sh builds it)"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(out.status.success(), "kubectl {}: {}", args.join(" "), common::text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh namespace, unique per test and run.
fn namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let ns = format!("vt-{test}-{}-{}", std::process::id(), nanos % 1_000_000);
    ok(&["create", "namespace", &ns]);
    ns
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn install_podmonitor_crd() {
    let crd = repo().join("tests/k8s/podmonitor-crd.yaml");
    ok(&["apply", "-f", crd.to_str().unwrap()]);
    ok(&["wait", "--for=condition=Established", &format!("crd/{PODMONITOR_CRD}"), "--timeout=60s"]);
}

#[test]
fn every_manifest_passes_a_server_side_dry_run() {
    if !common::service_up("kube") {
        return;
    }
    install_podmonitor_crd();
    let ns = namespace("manifests");
    let files = manifests();
    assert!(files.len() >= 8, "config/k8s holds {} manifests, expected at least 8", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let out = kubectl(&["apply", "--dry-run=server", "--validate=strict", "-n", &ns, "-f", file.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stdout.contains("(server dry run)") || stderr.contains("Warning") {
            failures.push(format!("{}: {}{}", file.display(), stdout.trim(), stderr.trim()));
        }
    }
    assert!(failures.is_empty(), "the API server refused or warned:\n{}", failures.join("\n"));

    // The CRD is strict: a misspelt PodMonitor field is refused, so the pass above means
    // every field vismig's PodMonitor uses exists where it is written.
    let bad = std::fs::read_to_string(repo().join("config/k8s/podmonitor.yaml"))
        .unwrap()
        .replace("scrapeTimeout:", "scrapeTimout:");
    let out = kubectl_stdin(&["apply", "--dry-run=server", "--validate=strict", "-n", &ns, "-f", "-"], Some(&bad));
    assert!(!out.status.success(), "a misspelt PodMonitor field was accepted: {}", common::text(&out));
    assert!(common::text(&out).contains("scrapeTimout"), "{}", common::text(&out));
}

/// `kubectl auth can-i VERB RESOURCE --as ACCOUNT -n NS`: "yes" or "no".
fn can_i(ns: &str, account: &str, verb: &str, resource: &str) -> bool {
    let as_user = format!("system:serviceaccount:{ns}:{account}");
    let out = kubectl(&["auth", "can-i", verb, resource, "-n", ns, "--as", &as_user]);
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {verb} {resource} as {as_user}: {other:?} {}", common::text(&out)),
    }
}

#[test]
fn the_shipped_rbac_lets_the_flip_account_get_and_patch_one_configmap_and_nothing_else() {
    if !common::service_up("kube") {
        return;
    }
    let ns = namespace("rbac");
    ok(&["apply", "-n", &ns, "-f", repo().join("config/k8s/rbac.yaml").to_str().unwrap()]);
    ok(&["apply", "-n", &ns, "-f", repo().join("config/k8s/configmap.yaml").to_str().unwrap()]);
    ok(&[
        "create",
        "configmap",
        "temporal-dynamic-config",
        "-n",
        &ns,
        "--from-literal=dynamicconfig.yaml=system.enableReadFromSecondaryVisibility:\n  - value: false\n",
    ]);

    let flip = "vismig-flip";
    let target = "configmaps/temporal-dynamic-config";
    for verb in ["get", "patch"] {
        assert!(can_i(&ns, flip, verb, target), "{flip} cannot {verb} {target}");
    }
    let denied: &[(&str, &str)] = &[
        ("update", target),
        ("delete", target),
        ("watch", target),
        ("list", "configmaps"),
        ("create", "configmaps"),
        ("get", "configmaps/vismig-config"),
        ("patch", "configmaps/vismig-config"),
        ("get", "secrets"),
        ("list", "secrets"),
        ("get", "secrets/vismig-store-passwords"),
        ("create", "pods"),
        ("create", "pods/exec"),
        ("get", "pods"),
        ("create", "jobs.batch"),
        ("patch", "jobs.batch"),
        ("create", "serviceaccounts/token"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("patch", "rolebindings.rbac.authorization.k8s.io"),
        ("escalate", "roles.rbac.authorization.k8s.io"),
        ("impersonate", "serviceaccounts"),
    ];
    for (verb, resource) in denied {
        assert!(!can_i(&ns, flip, verb, resource), "{flip} may {verb} {resource}: more than the flip needs");
    }
    // The grant is namespaced: the same ConfigMap name elsewhere is out of reach.
    let as_flip = format!("system:serviceaccount:{ns}:{flip}");
    let out = kubectl(&["auth", "can-i", "patch", target, "-n", "default", "--as", &as_flip]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no", "{}", common::text(&out));
    // The backfill account has no grant at all (and no token mounted: rbac.yaml).
    for (verb, resource) in [("get", target), ("patch", target), ("list", "configmaps"), ("get", "secrets")] {
        assert!(!can_i(&ns, "vismig", verb, resource), "vismig (backfill) may {verb} {resource}");
    }
    // Everything the flip account may do, as the server lists it, beyond what every
    // authenticated user gets from the default cluster roles (discovery, self-reviews,
    // public trust bundles): the backfill account `vismig`, bound to nothing, is that
    // baseline. The difference must be get/patch of that one ConfigMap, nothing else.
    let rules = |account: &str| -> BTreeSet<String> {
        let as_user = format!("system:serviceaccount:{ns}:{account}");
        let list = ok(&["auth", "can-i", "--list", "-n", &ns, "--as", &as_user]);
        list.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
    };
    let baseline = rules("vismig");
    let extra: Vec<String> = rules(flip).difference(&baseline).cloned().collect();
    assert_eq!(
        extra,
        vec!["configmaps [] [temporal-dynamic-config] [get patch]".to_string()],
        "{flip} may do more (or other) than get/patch temporal-dynamic-config"
    );

    // The same with a real token of the account, as the flip Job's pod would hold.
    let token = ok(&["create", "token", flip, "-n", &ns, "--duration=10m"]);
    let token = token.trim();
    let patch = r#"{"metadata":{"annotations":{"vismig.test/patched":"yes"}}}"#;
    ok(&["--token", token, "patch", "configmap", "temporal-dynamic-config", "-n", &ns, "--type=merge", "-p", patch]);
    let got = ok(&["--token", token, "get", "configmap", "temporal-dynamic-config", "-n", &ns, "-o", "yaml"]);
    assert!(got.contains("vismig.test/patched"), "{got}");
    for args in [
        vec!["get", "configmap", "vismig-config"],
        vec!["get", "configmaps"],
        vec!["delete", "configmap", "temporal-dynamic-config"],
        vec!["get", "secrets"],
    ] {
        let mut full = vec!["--token", token, "-n", &ns];
        full.extend(args.iter().copied());
        let out = kubectl(&full);
        let text = common::text(&out);
        assert!(!out.status.success(), "{flip} could: kubectl {}: {text}", args.join(" "));
        assert!(text.contains("Forbidden") && text.contains(&as_flip), "kubectl {}: {text}", args.join(" "));
    }
}
