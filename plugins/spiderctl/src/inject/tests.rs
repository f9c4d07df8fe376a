use super::*;
use crate::manifests::parse;

/// SpiderMultusConfig `name` in namespace `spiderpool` on `master`, in inject group `group`
/// (rdma-resource-inject), with RDMA resource `resource`.
fn config_yaml(name: &str, master: &str, group: &str, resource: &str) -> String {
    format!(
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\nmetadata:\n  \
         name: {name}\n  namespace: spiderpool\n  annotations:\n    {RDMA_INJECT}: {group}\n\
         spec:\n  cniType: macvlan\n  macvlan:\n    master: [{master}]\n    \
         rdmaResourceName: {resource}\n"
    )
}

fn configs(yaml: &str) -> Vec<RawMultusConfig> {
    parse(yaml, "networks.yaml")
        .unwrap()
        .into_iter()
        .filter_map(|d| match d {
            Document::MultusConfig(raw) => Some(raw),
            _ => None,
        })
        .collect()
}

/// gpu1..gpu3 of group `rdma-network`, written out of order, plus a config of another group
/// whose cniType is not supported (it must be ignored).
fn three_rails() -> Vec<RawMultusConfig> {
    let mut yaml = [3, 1, 2]
        .map(|n| {
            config_yaml(
                &format!("gpu{n}-macvlan"),
                &format!("enp1{n}s0f0np0"),
                "rdma-network",
                &format!("spidernet.io/shared_cx5_gpu{n}"),
            )
        })
        .join("---\n");
    yaml.push_str(
        "---\napiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\nmetadata:\n  \
         name: other\n  annotations: {cni.spidernet.io/rdma-resource-inject: other-group}\n\
         spec: {cniType: sriov}\n",
    );
    configs(&yaml)
}

const NETWORKS_VALUE: &str = "[{\"name\":\"gpu1-macvlan\",\"namespace\":\"spiderpool\"},\n\
    {\"name\":\"gpu2-macvlan\",\"namespace\":\"spiderpool\"},\n\
    {\"name\":\"gpu3-macvlan\",\"namespace\":\"spiderpool\"}]";

fn yaml(text: &str) -> yaml_serde::Value {
    yaml_serde::from_str(text).unwrap()
}

fn workload(kind: &str) -> String {
    let pod_spec = "containers:\n- name: main\n  image: rdma-tools\n- name: sidecar\n  image: s\n";
    let indent = |text: &str, n: usize| -> String {
        text.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect()
    };
    match kind {
        "Pod" => format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: w\n  annotations:\n    \
             {RDMA_INJECT}: rdma-network\nspec:\n{}",
            indent(pod_spec, 2)
        ),
        _ => format!(
            "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: w\nspec:\n  template:\n    \
             metadata:\n      annotations:\n        {RDMA_INJECT}: rdma-network\n    spec:\n{}",
            indent(pod_spec, 6)
        ),
    }
}

#[test]
fn every_kind_gets_the_networks_and_the_first_container_the_resources() {
    let configs = three_rails();
    for (kind, template) in KINDS {
        let out = inject(&yaml(&workload(kind)), &configs).unwrap();
        let json = to_json(&out).unwrap();
        let annotations = json
            .pointer(&format!("{template}/metadata/annotations"))
            .unwrap();
        assert_eq!(annotations[NETWORKS], NETWORKS_VALUE, "{kind}");
        assert_eq!(annotations[RDMA_INJECT], "rdma-network", "{kind}: kept");
        let containers = json
            .pointer(&format!("{template}/spec/containers"))
            .unwrap();
        assert_eq!(
            containers[0]["resources"]["limits"],
            json!({"spidernet.io/shared_cx5_gpu1": 1, "spidernet.io/shared_cx5_gpu2": 1,
                   "spidernet.io/shared_cx5_gpu3": 1}),
            "{kind}"
        );
        assert_eq!(
            containers[1].get("resources"),
            None,
            "{kind}: only the first container"
        );
        assert_eq!(json["metadata"]["name"], "w");
    }
}

#[test]
fn the_patch_is_rfc6902_and_keeps_what_is_there() {
    let configs = three_rails();
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{
        "cni.spidernet.io/rdma-resource-inject":"rdma-network"}},
        "spec":{"containers":[{"name":"a","resources":{"limits":{"cpu":"1"}}},
                              {"name":"b","resources":{"limits":{"spidernet.io/shared_cx5_gpu2":1}}}]}}"#;
    let ops = patch(&serde_json::from_str(pod).unwrap(), &configs).unwrap();
    let want = json!([
        {"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks",
         "value": NETWORKS_VALUE},
        {"op": "add", "path": "/spec/containers/0/resources/limits/spidernet.io~1shared_cx5_gpu1",
         "value": 1},
        {"op": "add", "path": "/spec/containers/0/resources/limits/spidernet.io~1shared_cx5_gpu3",
         "value": 1},
    ]);
    assert_eq!(serde_json::to_value(&ops).unwrap(), want);

    // Requests but no limits: the limits mapping is added whole.
    let pod = pod.replace("\"limits\":{\"cpu\":\"1\"}", "\"requests\":{\"cpu\":\"1\"}");
    let ops = patch(&serde_json::from_str(&pod).unwrap(), &configs).unwrap();
    assert_eq!(ops[1].path, "/spec/containers/0/resources/limits");
    assert_eq!(
        ops[1].value,
        json!({"spidernet.io/shared_cx5_gpu1": 1, "spidernet.io/shared_cx5_gpu3": 1})
    );
}

#[test]
fn the_order_is_stable_and_numeric() {
    let yaml_of = |order: &[u32]| -> String {
        order
            .iter()
            .map(|n| {
                config_yaml(
                    &format!("gpu{n}-macvlan"),
                    "eth1",
                    "g",
                    &format!("a.io/r{n}"),
                )
            })
            .collect::<Vec<_>>()
            .join("---\n")
    };
    let pod = yaml(&workload("Pod").replace("rdma-network", "g"));
    let annotation = |order: &[u32]| -> String {
        let out = to_json(&inject(&pod, &configs(&yaml_of(order))).unwrap()).unwrap();
        out["metadata"]["annotations"][NETWORKS]
            .as_str()
            .unwrap()
            .to_string()
    };
    let sorted = annotation(&[10, 2, 1, 9]);
    assert_eq!(sorted, annotation(&[1, 2, 9, 10]));
    assert_eq!(sorted, annotation(&[9, 10, 1, 2]));
    let names: Vec<&str> = sorted
        .split("\"name\":\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "gpu1-macvlan",
            "gpu2-macvlan",
            "gpu9-macvlan",
            "gpu10-macvlan"
        ]
    );
    assert_eq!(natural_cmp("a01", "a1"), Ordering::Equal);
    assert_eq!(natural_cmp("a", "a1"), Ordering::Less);
    assert_eq!(natural_cmp("b1", "a2"), Ordering::Greater);
}

#[test]
fn conflicting_annotations_are_refused() {
    let configs = three_rails();
    for conflicting in [
        NETWORKS,
        "ipam.spidernet.io/ippools",
        "ipam.spidernet.io/ippool",
    ] {
        let text = workload("Deployment").replace(
            "        cni.spidernet.io/rdma-resource-inject",
            &format!("        {conflicting}: x\n        cni.spidernet.io/rdma-resource-inject"),
        );
        let err = inject(&yaml(&text), &configs).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "Deployment spec.template.metadata.annotations.{conflicting} is already set (\"x\")"
            )) && err.contains("remove it"),
            "{err}"
        );
    }
}

#[test]
fn a_matched_config_must_be_valid_and_others_are_ignored() {
    let mut yaml_text = config_yaml("gpu1-macvlan", "eth1", "rdma-network", "a.io/r1");
    yaml_text.push_str("---\n");
    yaml_text.push_str(
        &config_yaml("bad", "eth2", "rdma-network", "a.io/r2")
            .replace("cniType: macvlan", "cniType: ipvlan"),
    );
    let err = inject(&yaml(&workload("Pod")), &configs(&yaml_text))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("networks.yaml document 2: SpiderMultusConfig spiderpool/bad: spec.cniType: \"ipvlan\" is not supported"),
        "{err}"
    );

    let no_rdma = config_yaml("gpu1-macvlan", "eth1", "rdma-network", "a.io/r1")
        .replace("    rdmaResourceName: a.io/r1\n", "");
    let err = inject(&yaml(&workload("Pod")), &configs(&no_rdma))
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no rdmaResourceName"), "{err}");
    // The generic group needs no RDMA resource.
    let generic = no_rdma.replace(RDMA_INJECT, NETWORK_INJECT);
    let pod = workload("Pod").replace(RDMA_INJECT, NETWORK_INJECT);
    let out = to_json(&inject(&yaml(&pod), &configs(&generic)).unwrap()).unwrap();
    assert_eq!(
        out["metadata"]["annotations"][NETWORKS],
        "[{\"name\":\"gpu1-macvlan\",\"namespace\":\"spiderpool\"}]"
    );
    assert_eq!(out["spec"]["containers"][0].get("resources"), None);
}

#[test]
fn what_cannot_be_injected_says_why() {
    let configs = three_rails();
    let err = inject(
        &yaml(&workload("Pod").replace("rdma-network", "nobody")),
        &configs,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no SpiderMultusConfig in the --networks files carries cni.spidernet.io/rdma-resource-inject: nobody"), "{err}");

    let plain =
        yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n");
    assert_eq!(group(&to_json(&plain).unwrap()), Ok(None));
    let err = inject(&plain, &configs).unwrap_err().to_string();
    assert!(
        err.contains("Pod metadata.annotations carries neither"),
        "{err}"
    );

    let cron = yaml("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\n");
    let err = inject(&cron, &configs).unwrap_err().to_string();
    assert!(err.contains("kind \"CronJob\" is not supported: inject handles Pod, Deployment, DaemonSet, StatefulSet, Job"), "{err}");

    let no_containers = workload("Job").replace("      containers:", "      initContainers:");
    let err = inject(&yaml(&no_containers), &configs)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.template.spec.containers is missing or empty"),
        "{err}"
    );

    let empty_group = workload("Pod").replace("rdma-network", "\"\"");
    let err = inject(&yaml(&empty_group), &configs)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must name a group"), "{err}");
}

#[test]
fn yaml_key_order_survives_and_array_adds_work() {
    let mut doc = yaml("z: 1\na: {list: [x, z]}\n");
    apply_patch(
        &mut doc,
        &[
            PatchOp::add("/a/list/1".into(), json!("y")),
            PatchOp::add("/a/list/-".into(), json!("end")),
            PatchOp::add("/m~1n".into(), json!(true)),
        ],
    )
    .unwrap();
    assert_eq!(
        yaml_serde::to_string(&doc).unwrap(),
        "z: 1\na:\n  list:\n  - x\n  - y\n  - z\n  - end\nm/n: true\n"
    );
    let err = apply_patch(&mut doc, &[PatchOp::add("/nope/x".into(), json!(1))]).unwrap_err();
    assert_eq!(err.to_string(), "patch add /nope/x: nope does not exist");
}
