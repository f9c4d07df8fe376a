//! `conf/deploy/`, what an operator applies with `kubectl apply -f conf/deploy/`: every
//! resource validates (strictly: no unknown field) against the schemas of a current Kubernetes
//! release with `kubernetes-validate` (PyPI, schemas bundled, no cluster), the generated files
//! are in sync with `conf/seed`, and the DaemonSet runs the agent with the paths and flags the
//! agent's own tests use. No cluster is needed; see the README for what that leaves untested.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use netns_tests::paths::{temp_dir, workspace_root};
use netns_tests::plugins::our_binary;
use serde_json::Value;

/// The Kubernetes releases whose schemas the manifests must pass: the newest kubernetes-validate
/// bundles, and an older one still run by many clusters.
const KUBERNETES: [&str; 2] = ["1.37.0", "1.30.0"];
/// Debian's python3, for which scripts/deps installs kubernetes-validate.
const PYTHON: &str = "/usr/bin/python3";

fn deploy_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(workspace_root().join("conf/deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn validate(files: &[PathBuf], version: &str) -> Output {
    Command::new(PYTHON)
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .args(files)
        .output()
        .expect("kubernetes-validate (scripts/deps installs it with pip)")
}

/// Every document of `conf/deploy/*.yaml`, as JSON (through PyYAML, which kubernetes-validate
/// brings).
fn documents() -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
                  print(json.dumps(docs))";
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .args(deploy_files())
        .output()
        .expect("python3 with PyYAML");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in conf/deploy"))
}

#[test]
fn every_resource_passes_kubernetes_validate_strictly() {
    for version in KUBERNETES {
        let out = validate(&deploy_files(), version);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let all = format!("{stdout}{stderr}");
        assert!(out.status.success(), "{all}");
        let passed = all
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert_eq!(passed, 6, "Namespace, ConfigMap, DaemonSet, Deployment, Service, MutatingWebhookConfiguration:\n{all}");
        // The CRD's kind is the one it has no schema for; checked below instead.
        for line in all.lines().filter(|l| !l.contains(" passed for resource ")) {
            assert!(
                line.contains("Couldn't find schema for kind NetworkAttachmentDefinition with api version k8s.cni.cncf.io/v1"),
                "{line}"
            );
        }
    }

    // The validation can fail: an unknown field is refused under --strict.
    let scratch = temp_dir("deploy-bad");
    let bad = scratch.path().join("agent.yaml");
    let text = fs::read_to_string(workspace_root().join("conf/deploy/20-agent.yaml")).unwrap();
    fs::write(&bad, text.replace("tolerations:", "tolerationz:")).unwrap();
    let out = validate(&[bad], KUBERNETES[0]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tolerationz"));
}

#[test]
fn the_generated_files_are_in_sync_with_conf_seed() {
    let out = Command::new(workspace_root().join("scripts/render-deploy"))
        .arg("--check")
        .env("SPIDER_BIN_DIR", our_binary("spiderctl").parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents();
    // The ConfigMap holds each seed file, byte for byte.
    let config = find(&docs, "ConfigMap", "spider-cni-config");
    let data = config["data"].as_object().unwrap();
    let seed_dir = workspace_root().join("conf/seed");
    let seed: Vec<_> = fs::read_dir(&seed_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(data.len(), seed.len());
    for path in seed {
        let key = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            data[key],
            fs::read_to_string(&path).unwrap().as_str(),
            "{key}"
        );
    }
    // Each NAD: its conflist is valid JSON named as the NAD, as Multus requires.
    let nads: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkAttachmentDefinition")
        .collect();
    assert_eq!(nads.len(), 8);
    for nad in nads {
        assert_eq!(nad["apiVersion"], "k8s.cni.cncf.io/v1");
        assert_eq!(nad["metadata"]["namespace"], "spiderpool");
        let conflist: Value =
            serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(conflist["name"], nad["metadata"]["name"]);
        assert_eq!(conflist["plugins"][0]["type"], "macvlan");
        assert_eq!(conflist["plugins"][0]["ipam"]["type"], "spiderpool");
    }
}

#[test]
fn the_daemonset_runs_the_agent_on_the_hosts_own_paths() {
    let docs = documents();
    let ds = find(&docs, "DaemonSet", "spider-cni-agent");
    let pod = &ds["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "agent");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let host_path = |mount_path: &str| -> String {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        volume["hostPath"]["path"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // The dirs named in conflists are mounted at the host's own paths; the bin dir is not named.
    for (flag, host) in [
        ("--cni-conf-dir", "/etc/cni/net.d"),
        ("--data-dir", "/var/lib/cni/spiderpool"),
        ("--cni-bin-dir", "/opt/cni/bin"),
    ] {
        let value = args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{flag}=")))
            .unwrap_or_else(|| panic!("no {flag}"));
        assert_eq!(host_path(value), host, "{flag}={value}");
        if flag != "--cni-bin-dir" {
            assert_eq!(
                value, host,
                "{flag} must be the host's path: conflists name it"
            );
        }
    }
    let ippool_dir = args
        .iter()
        .find_map(|a| a.strip_prefix("--ippool-dir="))
        .unwrap();
    assert!(ippool_dir.starts_with("/etc/cni/net.d/"), "{ippool_dir}");
    let netns = mounts
        .iter()
        .find(|m| m["mountPath"] == "/run/netns")
        .unwrap();
    assert_eq!(netns["mountPropagation"], "HostToContainer");
    assert_eq!(host_path("/run/netns"), "/run/netns");
    // Every flag is one the agent takes.
    let help = Command::new(our_binary("spiderctl"))
        .args(["agent", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap();
        assert!(help.contains(flag), "spiderctl agent has no {flag}");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    let port = annotations["prometheus.io/port"].as_str().unwrap();
    assert!(args.contains(&format!("--metrics-addr=0.0.0.0:{port}").as_str()));
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(pod["spec"]["tolerations"][0]["operator"], "Exists");
    // The webhook serves the ConfigMap the agent applies.
    let webhook = find(&docs, "Deployment", "spider-cni-webhook");
    let config = &webhook["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(config["configMap"]["name"], "spider-cni-config");
}
