//! config/k8s/ validated offline: every built-in object against Kubernetes' own schema
//! (kubernetes-validate, strict, pinned to Kubernetes 1.33), the PodMonitor against the
//! prometheus-operator API (npm @kubernetes-models/prometheus-operator, plus a check of
//! its field names), and the manifests against each other and against vismig itself:
//! the ConfigMap's config loads with each container's environment, ports, probes,
//! scrape settings, exit codes, RBAC, volumes and shard counts agree.
//! The tools come from tests/tools/install.sh (VISMIG_TEST_TOOLS, set by tests/run.sh).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use vismig::config::Config;
use vismig::config::migration::parse_duration;

/// The Secret that holds the bearer token of the control endpoints.
const CONTROL_TOKEN_SECRET: &str = "vismig-control-token";

/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.33.0";

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/k8s")
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "config/k8s has too few manifests: {files:?}");
    files
}

/// Every object of every manifest, with the file it came from.
fn objects() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for file in manifest_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                out.push((file.clone(), value));
            }
        }
    }
    out
}

fn find<'a>(objects: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("config/k8s has no {kind} {name}"))
}

fn jobs(objects: &[(PathBuf, Value)]) -> Vec<&Value> {
    objects.iter().map(|(_, o)| o).filter(|o| o["kind"] == "Job").collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

fn kubernetes_validate(tools: &Path, files: &[PathBuf]) -> (bool, String) {
    let exe = tools.join("venv/bin/kubernetes-validate");
    assert!(exe.exists(), "{} is missing: run tests/tools/install.sh", exe.display());
    let out = Command::new(exe).args(["--strict", "--kubernetes-version", KUBERNETES]).args(files).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // A kind it has no schema for is only a warning to it; here it is a failure.
    (out.status.success() && !text.contains("WARN") && !text.contains("ERROR"), text)
}

#[test]
fn built_in_objects_pass_kubernetes_strict_schema() {
    let Some(tools) = common::tools_dir() else { return };
    let crd_free: Vec<PathBuf> = manifest_files()
        .into_iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().contains("monitoring.coreos.com/"))
        .collect();
    let (ok, text) = kubernetes_validate(&tools, &crd_free);
    assert!(ok, "kubernetes-validate --strict -k {KUBERNETES}:\n{text}");
    let passed = text.lines().filter(|l| l.contains(" passed for resource ")).count();
    let expected = objects().iter().filter(|(_, o)| !o["apiVersion"].as_str().unwrap().contains("coreos")).count();
    assert_eq!(passed, expected, "every object is validated:\n{text}");

    // The validator is not a no-op: a misspelt field of the Job fails it.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("job.yaml");
    let job = std::fs::read_to_string(k8s_dir().join("job.yaml")).unwrap();
    std::fs::write(&broken, job.replace("restartPolicy: Never", "restartPolicyy: Never")).unwrap();
    let (ok, text) = kubernetes_validate(&tools, &[broken]);
    assert!(!ok && text.contains("restartPolicyy"), "{text}");
}

#[test]
fn the_pod_monitor_passes_the_prometheus_operator_schema() {
    let Some(tools) = common::tools_dir() else { return };
    let monitors: Vec<Value> = objects().into_iter().map(|(_, o)| o).filter(|o| o["kind"] == "PodMonitor").collect();
    assert_eq!(monitors.len(), 1);
    let run = |objects: &Value| {
        let mut child = Command::new("node")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8s/validate-podmonitor.mjs"))
            .arg(tools.join("npm/node_modules"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs (tests/tools/install.sh needs node and npm)");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(objects.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = run(&Value::Array(monitors.clone()));
    assert!(ok && text.contains("1 PodMonitor(s) valid"), "{text}");

    // Not a no-op: a misspelt field and a malformed duration both fail.
    let mut broken = monitors[0].clone();
    broken["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s".into();
    broken["spec"]["podMetricsEndpoints"][0]["scrapeTimeout"] = "10 seconds".into();
    let (ok, text) = run(&Value::Array(vec![broken]));
    assert!(!ok && text.contains("intervall: unknown field") && text.contains("scrapeTimeout"), "{text}");
}

/// The environment a container gives vismig: literal values, and a stand-in for each
/// Secret reference; JOB_COMPLETION_INDEX as an Indexed Job's pod has it.
fn container_env(container: &Value, index: Option<u32>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match (&e["value"], &e["valueFrom"]["secretKeyRef"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::Object(r)) => format!("secret:{}/{}", r["name"].as_str().unwrap(), r["key"].as_str().unwrap()),
            _ => panic!("env {name}: neither a value nor a secretKeyRef"),
        };
        env.insert(name, value);
    }
    if let Some(i) = index {
        env.insert("JOB_COMPLETION_INDEX".into(), i.to_string());
    }
    env
}

fn vismig_containers(job: &Value) -> Vec<&Value> {
    let spec = &job["spec"]["template"]["spec"];
    spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().unwrap())
        .filter(|c| c["image"].as_str().unwrap().contains("/vismig:"))
        .collect()
}

fn secs(text: &str) -> Duration {
    parse_duration(text).unwrap()
}

#[test]
fn the_manifests_agree_with_each_other_and_with_vismig() {
    let objects = objects();
    let config_map = find(&objects, "ConfigMap", "vismig-config");
    let config_text = config_map["data"]["vismig.yaml"].as_str().expect("vismig-config holds vismig.yaml");
    let pvc = find(&objects, "PersistentVolumeClaim", "vismig-data");
    let monitor = objects.iter().map(|(_, o)| o).find(|o| o["kind"] == "PodMonitor").unwrap();
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let scrape_interval = secs(endpoint["interval"].as_str().unwrap());
    let all_jobs = jobs(&objects);
    assert_eq!(all_jobs.len(), 3, "a Job, an Indexed Job and the verify-and-flip Job");
    let mut secret_names = BTreeSet::new();

    for job in &all_jobs {
        let name = job["metadata"]["name"].as_str().unwrap();
        let pod = &job["spec"]["template"];
        let spec = &pod["spec"];
        let indexed = job["spec"]["completionMode"] == "Indexed";
        assert_eq!(spec["restartPolicy"], "Never", "{name}: a pod failure policy needs restartPolicy Never");
        // The PodMonitor and the annotations both find every pod on port 9090.
        for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&pod["metadata"]["labels"][k], v, "{name}: the PodMonitor's selector misses the pods");
        }
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(annotations["prometheus.io/port"], "9090", "{name}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
        assert_eq!(endpoint["path"], "/metrics");

        let rules = job["spec"]["podFailurePolicy"]["rules"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no podFailurePolicy"));
        let action_for = |container: &str, code: u64| {
            rules
                .iter()
                .find(|r| {
                    r["onExitCodes"]["containerName"] == container
                        && r["onExitCodes"]["operator"] == "In"
                        && r["onExitCodes"]["values"].as_array().unwrap().iter().any(|v| v == code)
                })
                .map(|r| r["action"].as_str().unwrap().to_string())
        };
        assert!(
            rules.iter().any(|r| r["action"] == "Ignore"
                && r["onPodConditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "DisruptionTarget"))),
            "{name}: evictions must not count against the backoff limit"
        );

        let grace = Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
        let volumes = spec["volumes"].as_array().unwrap();
        let volume =
            |n: &str| volumes.iter().find(|v| v["name"] == n).unwrap_or_else(|| panic!("{name}: no volume {n}"));
        for c in spec["initContainers"].as_array().into_iter().flatten().chain(spec["containers"].as_array().unwrap()) {
            let cname = c["name"].as_str().unwrap();
            assert!(c["resources"]["requests"]["memory"].is_string(), "{name}/{cname}: no memory request");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{name}/{cname}: no memory limit");
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{name}/{cname}");
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{name}/{cname}");
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(secret) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    secret_names.insert(secret.to_string());
                }
            }
        }
        assert_eq!(spec["securityContext"]["runAsUser"], 10001, "{name}: the image's user");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");

        for c in vismig_containers(job) {
            let cname = c["name"].as_str().unwrap();
            let args = strs(&c["args"]);
            let command = args[0].as_str();
            // The config loads with the container's environment, and says what the pod needs.
            let config_path = args.iter().skip_while(|a| *a != "--config").nth(1).expect("--config");
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| Path::new(config_path).parent().unwrap() == Path::new(m["mountPath"].as_str().unwrap()))
                .unwrap_or_else(|| panic!("{name}/{cname}: nothing mounted at {config_path}'s directory"));
            assert_eq!(volume(mount["name"].as_str().unwrap())["configMap"]["name"], "vismig-config");
            let env = container_env(c, indexed.then_some(2));
            let config = Config::parse(config_text, |k| env.get(k).cloned()).unwrap_or_else(|e| {
                panic!("{name}/{cname}: the ConfigMap's config does not load with the pod's environment: {e}")
            });
            let m = &config.migration;
            if let Some(sql) = config.datastore(&config.secondary()).sql.as_ref() {
                let password = sql.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
                assert!(
                    password.starts_with("secret:"),
                    "{name}/{cname}: the secondary's password does not come from a Secret"
                );
            }
            assert_eq!(m.metrics.listen, "0.0.0.0:9090", "the kubelet and Prometheus must reach it");
            // Beyond loopback, control needs a token: read from a file of a mounted Secret.
            let token_file = m
                .metrics
                .control_token
                .as_ref()
                .and_then(|t| t.file.clone())
                .unwrap_or_else(|| panic!("{name}/{cname}: no migration.metrics.controlToken.file"));
            let token_mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| Path::new(v["mountPath"].as_str().unwrap()) == token_file.parent().unwrap())
                .unwrap_or_else(|| panic!("{name}/{cname}: nothing mounted at {}", token_file.display()));
            let token_secret = &volume(token_mount["name"].as_str().unwrap())["secret"];
            assert_eq!(token_secret["secretName"], CONTROL_TOKEN_SECRET, "{name}/{cname}");
            let file_name = token_file.file_name().unwrap().to_str().unwrap();
            assert!(
                token_secret["items"].as_array().unwrap().iter().any(|i| i["key"] == "token" && i["path"] == file_name),
                "{name}/{cname}: the Secret's key token must land at {}",
                token_file.display()
            );
            assert!(
                m.metrics.linger >= scrape_interval * 2,
                "linger {:?} < two scrapes ({scrape_interval:?})",
                m.metrics.linger
            );
            let data_dir = m.checkpoint.path.parent().unwrap();
            let data_mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| Path::new(v["mountPath"].as_str().unwrap()) == data_dir);
            let data_mount =
                data_mount.unwrap_or_else(|| panic!("{name}/{cname}: nothing mounted at {}", data_dir.display()));
            assert_eq!(
                volume(data_mount["name"].as_str().unwrap())["persistentVolumeClaim"]["claimName"],
                pvc["metadata"]["name"]
            );
            assert_eq!(
                action_for(cname, 2).as_deref(),
                Some("FailJob"),
                "{name}/{cname}: exit 2 (bad config) must fail the Job"
            );
            match command {
                "backfill" => {
                    if indexed {
                        assert!(
                            m.checkpoint.path.ends_with("checkpoint-2.json"),
                            "{:?}: one checkpoint per index",
                            m.checkpoint.path
                        );
                        let n: u64 = args
                            .iter()
                            .skip_while(|a| *a != "--shard")
                            .nth(1)
                            .and_then(|s| s.strip_prefix("$(JOB_COMPLETION_INDEX)/"))
                            .unwrap_or_else(|| panic!("{name}: --shard $(JOB_COMPLETION_INDEX)/N"))
                            .parse()
                            .unwrap();
                        assert_eq!(job["spec"]["completions"], n, "{name}: --shard I/{n} needs completions {n}");
                        assert_eq!(job["spec"]["parallelism"], n, "{name}: --shard I/{n} runs {n} pods at once");
                    }
                    assert_eq!(
                        action_for(cname, 5).as_deref(),
                        Some("Ignore"),
                        "{name}: a stop with the checkpoint saved (exit 5) must restart, uncounted"
                    );
                    assert!(
                        m.stop_timeout + Duration::from_secs(10) <= grace,
                        "{name}: stopTimeout {:?} leaves too little of the grace period {grace:?}",
                        m.stop_timeout
                    );
                    let ports: Vec<&Value> = c["ports"].as_array().unwrap().iter().collect();
                    assert!(
                        ports.iter().any(|p| p["name"] == endpoint["port"] && p["containerPort"] == 9090),
                        "{name}: port {} is 9090",
                        endpoint["port"]
                    );
                    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
                    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
                    for probe in ["livenessProbe", "readinessProbe"] {
                        assert_eq!(
                            c[probe]["httpGet"]["port"], endpoint["port"],
                            "{name}: {probe} on the metrics port"
                        );
                    }
                    // Preflight and the flip guard read Temporal's dynamic config, mounted read-only.
                    let file = config.dynamic_config_file().unwrap();
                    let dc_mount = c["volumeMounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| Path::new(v["mountPath"].as_str().unwrap()) == file.parent().unwrap());
                    let dc_mount = dc_mount.unwrap_or_else(|| panic!("{name}: nothing mounted at {}", file.display()));
                    assert_eq!(
                        volume(dc_mount["name"].as_str().unwrap())["configMap"]["name"],
                        "temporal-dynamic-config"
                    );
                    assert_eq!(spec["automountServiceAccountToken"], false, "{name}: the backfill needs no API token");
                }
                "verify" => assert_eq!(
                    action_for(cname, 3).as_deref(),
                    Some("FailJob"),
                    "{name}: differences must stop the flip"
                ),
                "flip" => {
                    assert_eq!(
                        action_for(cname, 4).as_deref(),
                        Some("FailJob"),
                        "{name}: a refused flip must not be retried"
                    );
                    assert!(args.contains(&"--reads".to_string()));
                    // It edits the copy the fetch step wrote, which the apply step patches back.
                    let file = config.dynamic_config_file().unwrap();
                    let script = |c: &str| -> String {
                        let all = spec["initContainers"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .chain(spec["containers"].as_array().unwrap());
                        all.filter(|x| x["name"] == c)
                            .map(|x| strs(&x["command"]).join(" "))
                            .next()
                            .unwrap_or_else(|| panic!("{name}: no {c} step"))
                    };
                    let file = file.to_str().unwrap().to_string();
                    let (fetch, apply) = (script("fetch"), script("apply"));
                    assert!(
                        fetch.contains(&file) || fetch.contains(&file.replace("dynamic_config.yaml", "")),
                        "{name}: fetch does not write {file}"
                    );
                    assert!(
                        fetch.contains("kubectl get configmap")
                            && apply.contains("kubectl patch configmap")
                            && apply.contains("resourceVersion"),
                        "{name}"
                    );
                }
                other => panic!("{name}/{cname}: unexpected vismig command {other}"),
            }
        }
    }
    assert_eq!(secret_names.len(), 1, "one Secret for the passwords: {secret_names:?}");

    // RBAC: the flip Job's account may get and patch the one ConfigMap it edits, and
    // nothing else; the backfill's account has no role at all.
    let flip_job = all_jobs.iter().find(|j| j["metadata"]["name"] == "vismig-verify-flip").unwrap();
    let flip_spec = &flip_job["spec"]["template"]["spec"];
    let flip_env = container_env(&flip_spec["containers"][0], None);
    let role = find(&objects, "Role", "vismig-flip");
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(strs(&rules[0]["apiGroups"]), [""]);
    assert_eq!(strs(&rules[0]["resources"]), ["configmaps"]);
    assert_eq!(strs(&rules[0]["resourceNames"]), [flip_env["DYNAMIC_CONFIG_MAP"].clone()]);
    let mut verbs = strs(&rules[0]["verbs"]);
    verbs.sort();
    assert_eq!(verbs, ["get", "patch"]);
    let binding = find(&objects, "RoleBinding", "vismig-flip");
    assert_eq!(binding["roleRef"]["name"], "vismig-flip");
    assert_eq!(binding["subjects"].as_array().unwrap().len(), 1);
    assert_eq!(binding["subjects"][0]["name"], flip_spec["serviceAccountName"]);
    for job in &all_jobs {
        let account = job["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap();
        find(&objects, "ServiceAccount", account);
        if job["metadata"]["name"] != "vismig-verify-flip" {
            assert_ne!(
                account,
                flip_spec["serviceAccountName"].as_str().unwrap(),
                "the backfill must not get the flip's role"
            );
        }
    }
    let backfill_jobs: Vec<&&Value> =
        all_jobs.iter().filter(|j| j["metadata"]["name"] != "vismig-verify-flip").collect();
    assert_eq!(backfill_jobs.len(), 2);

    // Only Prometheus reaches the metrics and control port of every vismig pod.
    let policy = find(&objects, "NetworkPolicy", "vismig-metrics");
    assert_eq!(strs(&policy["spec"]["policyTypes"]), ["Ingress"]);
    for job in &all_jobs {
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        for (k, v) in policy["spec"]["podSelector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{}: the NetworkPolicy does not select its pods", job["metadata"]["name"]);
        }
    }
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "one rule: Prometheus");
    let peers = ingress[0]["from"].as_array().expect("a rule without from admits everyone");
    assert!(!peers.is_empty(), "a rule with empty from admits everyone");
    for peer in peers {
        assert!(peer["ipBlock"].is_null(), "{peer}: by pod, not by address");
        let pods = peer["podSelector"]["matchLabels"].as_object().expect("peers are selected pods");
        assert_eq!(pods["app.kubernetes.io/name"], "prometheus", "{peer}");
        assert!(peer["namespaceSelector"]["matchLabels"].is_object(), "{peer}: in Prometheus' own namespace only");
    }
    let ports = ingress[0]["ports"].as_array().expect("a rule without ports admits every port");
    assert_eq!(ports.len(), 1);
    assert_eq!((ports[0]["port"].as_u64(), ports[0]["protocol"].as_str()), (Some(9090), Some("TCP")));

    // The README tells how to create the control token's Secret.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("kubectl create secret generic {CONTROL_TOKEN_SECRET}"))
            && readme.contains("--from-literal=token="),
        "README: how to create {CONTROL_TOKEN_SECRET}"
    );

    // The README tells how to create that Secret with every key the Jobs read.
    let secret = secret_names.iter().next().unwrap();
    assert!(readme.contains(&format!("kubectl create secret generic {secret}")), "README: how to create {secret}");
    for job in &all_jobs {
        for c in vismig_containers(job) {
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
                    assert!(readme.contains(&format!("--from-literal={key}=")), "README: the Secret needs {key}");
                }
            }
        }
    }
}

/// A stand-in for kubectl: `get configmap NAME -o json` prints the ConfigMap kept in
/// $FAKE_KUBE/configmap.json; `patch configmap NAME --type merge -p PATCH` applies the
/// merge patch to it (refusing a stale resourceVersion, as the API server does) and
/// bumps the version. Every call is logged to $FAKE_KUBE/calls.
const FAKE_KUBECTL: &str = r#"#!/bin/bash
set -euo pipefail
printf '%s\n' "$*" >>"$FAKE_KUBE/calls"
case "$1 $2" in
  "get configmap")
    [ "$3" = "$(jq -r .metadata.name "$FAKE_KUBE/configmap.json")" ] || { echo "configmaps \"$3\" not found" >&2; exit 1; }
    cat "$FAKE_KUBE/configmap.json" ;;
  "patch configmap")
    [ "$4 $5 $6" = "--type merge -p" ] || { echo "unexpected: $*" >&2; exit 1; }
    printf '%s' "$7" >"$FAKE_KUBE/patch.json"
    current=$(jq -r .metadata.resourceVersion "$FAKE_KUBE/configmap.json")
    wanted=$(jq -r '.metadata.resourceVersion // empty' "$FAKE_KUBE/patch.json")
    if [ -n "$wanted" ] && [ "$wanted" != "$current" ]; then
      echo "Error from server (Conflict): the object has been modified" >&2; exit 1
    fi
    jq --slurpfile p "$FAKE_KUBE/patch.json" '. * ($p[0] | del(.metadata)) | .metadata.resourceVersion = ((.metadata.resourceVersion | tonumber) + 1 | tostring)' \
      "$FAKE_KUBE/configmap.json" >"$FAKE_KUBE/next.json"
    mv "$FAKE_KUBE/next.json" "$FAKE_KUBE/configmap.json"
    echo "configmap/$3 patched" ;;
  *) echo "unexpected kubectl $*" >&2; exit 1 ;;
esac
"#;

const TEMPORAL_DYNAMIC_CONFIG: &str = "# Owned by the platform team.\nlimit.maxIDLength:\n  - value: 255\n    constraints: {}\nsystem.secondaryVisibilityWritingMode:\n  - value: \"dual\"\nsystem.enableReadFromSecondaryVisibility:\n  - value: false   # all namespaces\n";

#[tokio::test(flavor = "multi_thread")]
async fn the_verify_and_flip_job_flips_the_configmap_through_get_and_patch_only() {
    use std::os::unix::fs::PermissionsExt;
    let objects = objects();
    let job = find(&objects, "Job", "vismig-verify-flip");
    let spec = &job["spec"]["template"]["spec"];
    let steps: Vec<&Value> =
        spec["initContainers"].as_array().unwrap().iter().chain(spec["containers"].as_array().unwrap()).collect();
    let names: Vec<&str> = steps.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fetch", "verify", "flip", "apply"]);

    // The stores: a backfilled SQLite pair. Each step runs with its container's
    // environment and its volumes (/work, /data) mapped to directories here.
    let work = common::Work::seeded(500, "").await;
    let out = work.run(&["backfill"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let root = work.path("pod");
    let (work_dir, data_dir, kube, bin) = (root.join("work"), root.join("data"), root.join("kube"), root.join("bin"));
    for d in [&work_dir, &data_dir, &kube, &bin] {
        std::fs::create_dir_all(d).unwrap();
    }
    let kubectl = bin.join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let map = |s: &str| s.replace("/work", work_dir.to_str().unwrap()).replace("/data", data_dir.to_str().unwrap());
    let fetch_env = container_env(steps[0], None);
    let (cm_name, cm_key) = (fetch_env["DYNAMIC_CONFIG_MAP"].clone(), fetch_env["DYNAMIC_CONFIG_KEY"].clone());
    let configmap = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": cm_name, "resourceVersion": "4711"},
        "data": {cm_key.clone(): TEMPORAL_DYNAMIC_CONFIG, "other.yaml": "untouched: true\n"},
    });
    std::fs::write(kube.join("configmap.json"), configmap.to_string()).unwrap();
    // vismig's own config for these stores, with the flip's file from the environment,
    // as the ConfigMap's config has it.
    work.write_config("  flip: { dynamicConfigFile: \"${VISMIG_DYNAMIC_CONFIG_FILE}\" }\n");

    let run_step = |step: &Value| -> (Option<i32>, String) {
        let env = container_env(step, None);
        let mut cmd = if step["image"].as_str().unwrap().contains("/vismig:") {
            let args: Vec<String> = strs(&step["args"]);
            let config_at = args.iter().position(|a| a == "--config").unwrap() + 1;
            let mut args = args.clone();
            args[config_at] = work.config().to_str().unwrap().to_string();
            let mut c = Command::new(common::bin());
            c.args(&args);
            c
        } else {
            let command = strs(&step["command"]);
            assert_eq!(&command[..2], ["/bin/bash", "-ceu"]);
            let mut c = Command::new("bash");
            c.args(["-ceu", &map(&command[2])]);
            c
        };
        for (k, v) in &env {
            cmd.env(k, map(v));
        }
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = cmd.env("PATH", path).env("FAKE_KUBE", &kube).stdin(Stdio::null()).output().unwrap();
        (out.status.code(), common::text(&out))
    };
    let mut log = String::new();
    for step in &steps {
        let (code, text) = run_step(step);
        log.push_str(&format!("--- {}: exit {code:?}\n{text}", step["name"]));
        assert_eq!(code, Some(0), "{log}");
    }
    // get, then one patch that carries the resourceVersion it read.
    let calls = std::fs::read_to_string(kube.join("calls")).unwrap();
    let verbs: Vec<&str> = calls.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(verbs, ["get", "patch"], "{calls}");
    let patch: Value = serde_json::from_str(&std::fs::read_to_string(kube.join("patch.json")).unwrap()).unwrap();
    assert_eq!(patch["metadata"]["resourceVersion"], "4711", "{patch}");
    let after: Value = serde_json::from_str(&std::fs::read_to_string(kube.join("configmap.json")).unwrap()).unwrap();
    let flipped = after["data"][&cm_key].as_str().unwrap();
    assert_eq!(
        flipped,
        TEMPORAL_DYNAMIC_CONFIG.replace("  - value: false   # all namespaces", "  - value: true   # all namespaces"),
        "only the read flag changed, comments kept:\n{log}"
    );
    assert_eq!(after["data"]["other.yaml"], "untouched: true\n");
    let backups: Vec<String> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("dynamic-config-before-flip-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(std::fs::read_to_string(data_dir.join(&backups[0])).unwrap(), TEMPORAL_DYNAMIC_CONFIG);

    // Run again: already flipped, so nothing is patched.
    std::fs::remove_file(kube.join("calls")).unwrap();
    std::fs::remove_dir_all(&work_dir).unwrap();
    std::fs::create_dir_all(&work_dir).unwrap();
    for step in &steps {
        let (code, text) = run_step(step);
        assert_eq!(code, Some(0), "{text}");
    }
    let calls = std::fs::read_to_string(kube.join("calls")).unwrap();
    assert_eq!(calls.lines().count(), 1, "only the get: {calls}");

    // Someone changes the ConfigMap between fetch and apply: the patch is refused.
    std::fs::remove_dir_all(&work_dir).unwrap();
    std::fs::create_dir_all(&work_dir).unwrap();
    let mut cm: Value = serde_json::from_str(&std::fs::read_to_string(kube.join("configmap.json")).unwrap()).unwrap();
    cm["data"][&cm_key] = TEMPORAL_DYNAMIC_CONFIG.into();
    std::fs::write(kube.join("configmap.json"), cm.to_string()).unwrap();
    for step in &steps[..3] {
        assert_eq!(run_step(step).0, Some(0));
    }
    cm["metadata"]["resourceVersion"] = "9999".into();
    std::fs::write(kube.join("configmap.json"), cm.to_string()).unwrap();
    let (code, text) = run_step(steps[3]);
    assert_ne!(code, Some(0), "a stale patch must fail: {text}");
    assert!(text.contains("Conflict"), "{text}");
}
