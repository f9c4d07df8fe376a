use super::*;

/// The seed's "Create CNI config and IPPool" step, verbatim: rdmaResourceName under `spec`,
/// ippools under `spec.macvlan`.
const SEED_CREATE: &str =
    include_str!("../../../../conf/seed-verbatim/create-cni-config-and-ippool.yaml");

/// The seed's custom-MTU example, verbatim: everything under `spec.macvlan`.
const SEED_MTU: &str = r#"apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata:
  name: gpu1-macvlan
  namespace: spiderpool
spec:
  cniType: macvlan
  macvlan:
    master: ["enp11s0f0np0"]
    rdmaResourceName: spidernet.io/shared_cx5_gpu1
    mtu: 1480
    ippools:
      ipv4: ["gpu1-net11"]
"#;

/// The seed's webhook example, verbatim: rdmaResourceName under `spec.macvlan`, ippools under
/// `spec`, and the inject annotation.
const SEED_WEBHOOK: &str = r#"apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderIPPool
metadata:
  name: gpu1-net11
spec:
  gateway: 172.16.11.254
  subnet: 172.16.11.0/16
  ips:
  - 172.16.11.1-172.16.11.200
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata:
  name: gpu1-sriov
  namespace: spiderpool
  annotations:
    cni.spidernet.io/rdma-resource-inject: rdma-network
spec:
  cniType: macvlan
  macvlan:
    master: ["enp11s0f0np0"]
    rdmaResourceName: spidernet.io/gpu1rdma
  ippools:
    ipv4: ["gpu1-net11"]
"#;

fn only_config(yaml: &str) -> MultusConfig {
    let configs = multus_configs(&parse(yaml, "seed.yaml").unwrap()).unwrap();
    assert_eq!(configs.len(), 1);
    configs.into_iter().next().unwrap()
}

#[test]
fn the_seeds_three_forms_read_verbatim() {
    let docs = parse(SEED_CREATE, "seed.yaml").unwrap();
    assert!(matches!(&docs[0], Document::Pool { origin, .. } if origin.document == 1));
    let create = only_config(SEED_CREATE);
    assert_eq!(create.origin.to_string(), "seed.yaml document 2");
    assert_eq!(create.network, "gpu1-macvlan");
    assert_eq!(create.namespace.as_deref(), Some("spiderpool"));
    assert_eq!(create.master, "enp11s0f0np0");
    assert_eq!(create.mtu, None);
    assert_eq!(
        create.rdma_resource_name.as_deref(),
        Some("spidernet.io/shared_cx5_gpu1")
    );
    assert_eq!(create.ipv4_pools, ["gpu1-net11"]);
    assert!(create.ipv6_pools.is_empty() && create.ipam && create.chain.is_empty());
    assert_eq!(create.cni_version, CniVersion::V1_0_0);
    assert_eq!(create.coordinator, Some(Coordinator::default()));

    let mtu = only_config(SEED_MTU);
    assert_eq!(mtu.mtu, Some(1480));
    assert_eq!(mtu.rdma_resource_name, create.rdma_resource_name);
    assert_eq!(mtu.ipv4_pools, create.ipv4_pools);

    let webhook = only_config(SEED_WEBHOOK);
    assert_eq!(webhook.network, "gpu1-sriov");
    assert_eq!(
        webhook.rdma_resource_name.as_deref(),
        Some("spidernet.io/gpu1rdma")
    );
    assert_eq!(webhook.ipv4_pools, ["gpu1-net11"]);
    assert_eq!(
        webhook
            .annotations
            .get("cni.spidernet.io/rdma-resource-inject")
            .map(String::as_str),
        Some("rdma-network")
    );
}

#[test]
fn kubectl_get_output_with_every_default_filled_in_is_accepted() {
    let yaml = r#"apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"spiderpool.spidernet.io/v2beta1"}
  creationTimestamp: "2024-05-01T10:00:00Z"
  generation: 1
  name: gpu1-macvlan
  namespace: spiderpool
  resourceVersion: "4242"
  uid: 0b0c1d2e-0000-4000-8000-000000000000
spec:
  chainCNIJsonData: null
  cniType: macvlan
  coordinator:
    detectGateway: false
    detectIPConflict: false
    hijackCIDR: []
    hostRPFilter: 0
    hostRuleTable: 500
    mode: auto
    podCIDRType: auto
    podDefaultRouteNIC: ""
    podMACPrefix: ""
    podRPFilter: 0
    tunePodRoutes: true
    txQueueLen: 0
  disableIPAM: false
  enableCoordinator: true
  macvlan:
    master:
    - enp11s0f0np0
    mtu: 0
    vlanID: 0
    ippools:
      ipv4: [gpu1-net11]
"#;
    let config = only_config(yaml);
    assert_eq!(config.mtu, None);
    assert_eq!(config.master, "enp11s0f0np0");
    let c = config.coordinator.unwrap();
    assert!(!c.detect_gateway, "an explicit false is kept");
    assert_eq!(c.pod_rp_filter, Some(0));
    assert_eq!(c.tune_pod_routes, Some(true));
    assert_eq!(c.pod_default_route_nic, None);
}

#[test]
fn cr_name_names_the_network_and_other_kinds_are_passed_over() {
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n",
        SEED_MTU.replace(
            "  namespace: spiderpool\n",
            "  namespace: spiderpool\n  annotations:\n    multus.spidernet.io/cr-name: rail1\n"
        )
    );
    let docs = parse(&yaml, "x.yaml").unwrap();
    assert!(
        matches!(&docs[1], Document::Other { kind, origin } if kind == "ConfigMap" && origin.document == 2)
    );
    let config = only_config(&yaml);
    assert_eq!(config.name, "gpu1-macvlan");
    assert_eq!(config.network, "rail1");
}

/// A SpiderMultusConfig `x` in namespace `ns` with `spec` (indented two spaces) and extra
/// `annotations` lines, as document 2 of `test.yaml` (a pool comes first).
fn error_for(spec: &str, annotations: &str) -> String {
    let yaml = format!(
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata: {{name: p}}\n\
         spec: {{subnet: 10.0.0.0/24}}\n---\napiVersion: spiderpool.spidernet.io/v2beta1\n\
         kind: SpiderMultusConfig\nmetadata:\n  name: x\n  namespace: ns\n  annotations:\n    \
         a: b\n{annotations}spec:\n{spec}"
    );
    let docs = parse(&yaml, "test.yaml").unwrap();
    let err = multus_configs(&docs).unwrap_err().to_string();
    assert!(
        err.starts_with("test.yaml document 2: SpiderMultusConfig ns/x: "),
        "{err}"
    );
    err
}

const MACVLAN: &str = "  cniType: macvlan\n  macvlan:\n    master: [eth1]\n";

#[test]
fn every_error_names_document_object_field_value_and_fix() {
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            "  cniType: ipvlan\n  ipvlan: {master: [eth1]}\n".into(),
            "",
            vec!["spec.cniType: \"ipvlan\" is not supported", "supported: macvlan"],
        ),
        (
            "  macvlan: {master: [eth1]}\n".into(),
            "",
            vec!["spec.cniType is required", "cniType: macvlan"],
        ),
        (
            "  cniType: macvlan\n  macvlan:\n    master: [enp11s0f0np0, enp12s0f0np0]\n".into(),
            "",
            vec![
                "spec.macvlan.master: [\"enp11s0f0np0\",\"enp12s0f0np0\"] lists 2 interfaces",
                "bond",
                "list one master",
            ],
        ),
        (
            format!("{MACVLAN}    vlanID: 5000\n"),
            "",
            vec!["spec.macvlan.vlanID: 5000 is outside 0-4094", "1 to 4094"],
        ),
        (
            "  cniType: macvlan\n  macvlan:\n    master: [enp11s0f0np0]\n    vlanID: 100\n".into(),
            "",
            vec!["spec.macvlan.vlanID: 100 makes the master enp11s0f0np0.100, 16 bytes", "15-byte"],
        ),
        (
            format!("{MACVLAN}    mtu: 20\n"),
            "",
            vec!["spec.macvlan.mtu: 20 is not a usable MTU", "68-65535"],
        ),
        (
            MACVLAN.into(),
            "    multus.spidernet.io/cni-version: 0.2.0\n",
            vec![
                "metadata.annotations.multus.spidernet.io/cni-version: \"0.2.0\" is not a CNI version",
                "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
            ],
        ),
        (
            MACVLAN.into(),
            "    multus.spidernet.io/cr-name: Rail_1\n",
            vec!["metadata.annotations.multus.spidernet.io/cr-name: \"Rail_1\" is not a valid name"],
        ),
        (
            format!("{MACVLAN}  enableCoordinater: false\n"),
            "",
            vec!["spec.enableCoordinater is not a field read here", "spelling", "enableCoordinator"],
        ),
        (
            format!("{MACVLAN}  sriov: {{resourceName: x}}\n"),
            "",
            vec!["spec.sriov belongs to cniType sriov, not macvlan: remove it"],
        ),
        (
            "  cniType: macvlan\n".into(),
            "",
            vec!["spec.macvlan is required for cniType macvlan"],
        ),
        (
            "  cniType: macvlan\n  macvlan: {master: eth1}\n".into(),
            "",
            vec!["spec.macvlan.master: \"eth1\" must be a list of strings"],
        ),
        (
            "  cniType: macvlan\n  macvlan: {master: [\"eth1/x\"]}\n".into(),
            "",
            vec!["spec.macvlan.master[0]: \"eth1/x\" is not an interface name"],
        ),
        (
            format!("{MACVLAN}    bond: {{name: bond0, mode: 1}}\n"),
            "",
            vec!["spec.macvlan.bond: {\"mode\":1,\"name\":\"bond0\"} is not supported"],
        ),
        (
            format!("{MACVLAN}    rdmaResourceName: a.io/x\n  rdmaResourceName: a.io/y\n"),
            "",
            vec!["spec.rdmaResourceName: \"a.io/y\" and spec.macvlan.rdmaResourceName \"a.io/x\" differ"],
        ),
        (
            format!("{MACVLAN}    rdmaResourceName: shared_cx5_gpu1\n"),
            "",
            vec![
                "spec.macvlan.rdmaResourceName: \"shared_cx5_gpu1\" is not a resource name",
                "spidernet.io/shared_cx5_gpu1",
            ],
        ),
        (
            format!("{MACVLAN}    ippools: {{ipv4: [GPU1]}}\n"),
            "",
            vec!["spec.macvlan.ippools.ipv4[0]: \"GPU1\" is not a pool name"],
        ),
        (
            format!("{MACVLAN}    ippools: {{ipv4: [\"gpu1-[0-9\"]}}\n"),
            "",
            vec![
                "spec.macvlan.ippools.ipv4[0]: \"gpu1-[0-9\": the [ at position 6 has no closing ]",
            ],
        ),
        (
            format!("{MACVLAN}    ippools: {{ipv5: [p]}}\n"),
            "",
            vec!["spec.macvlan.ippools.ipv5 is not a field read here"],
        ),
        (
            format!("{MACVLAN}  ippools: {{ipv4: [p]}}\n  disableIPAM: true\n"),
            "",
            vec!["spec.disableIPAM: true, but ippools are set"],
        ),
        (
            format!("{MACVLAN}  enableCoordinator: \"no\"\n"),
            "",
            vec!["spec.enableCoordinator: \"no\" must be true or false"],
        ),
        (
            format!("{MACVLAN}  enableCoordinator: false\n  coordinator: {{detectGateway: true}}\n"),
            "",
            vec!["spec.coordinator is set but enableCoordinator is false"],
        ),
        (
            format!("{MACVLAN}  chainCNIJsonData: ['{{\"type\": ']\n"),
            "",
            vec!["spec.chainCNIJsonData[0]: \"{\\\"type\\\": \" is not JSON"],
        ),
        (
            format!("{MACVLAN}  chainCNIJsonData: ['{{\"sysctl\": {{}}}}']\n"),
            "",
            vec!["spec.chainCNIJsonData[0]: \"{\\\"sysctl\\\": {}}\" is not a plugin config", "\"type\""],
        ),
        (
            format!("{MACVLAN}  coordinator: {{mode: overlay}}\n"),
            "",
            vec!["spec.coordinator.mode: \"overlay\" is not supported", "auto or underlay"],
        ),
        (
            format!("{MACVLAN}  coordinator: {{mode: disabled}}\n"),
            "",
            vec!["spec.coordinator.mode: \"disabled\": set spec.enableCoordinator: false"],
        ),
        (
            format!("{MACVLAN}  coordinator: {{hijackCIDR: [169.254.0.0/16]}}\n"),
            "",
            vec!["spec.coordinator.hijackCIDR: [\"169.254.0.0/16\"] is not supported"],
        ),
        (
            format!("{MACVLAN}  coordinator: {{podRPFilter: 5}}\n"),
            "",
            vec!["spec.coordinator.podRPFilter: 5 is not an rp_filter value"],
        ),
        (
            format!("{MACVLAN}  coordinator: {{detectOptions: {{retries: 0}}}}\n"),
            "",
            vec!["spec.coordinator.detectOptions.retries: 0 would never send a probe"],
        ),
        (
            format!("{MACVLAN}  coordinator: {{podDefaultRouteNIC: \"a b\"}}\n"),
            "",
            vec!["spec.coordinator.podDefaultRouteNIC: \"a b\" is not an interface name"],
        ),
        (
            format!("{MACVLAN}  coordinator: {{txQueueLen: 1000}}\n"),
            "",
            vec!["spec.coordinator.txQueueLen: 1000 is not supported"],
        ),
        (
            format!("{MACVLAN}  coordinator: {{vxlan: true}}\n"),
            "",
            vec!["spec.coordinator.vxlan is not a field read here"],
        ),
    ];
    for (spec, annotations, fragments) in cases {
        let err = error_for(&spec, annotations);
        for fragment in fragments {
            assert!(err.contains(fragment), "{fragment:?} not in {err:?}");
        }
    }
}

#[test]
fn document_level_errors_name_the_document() {
    let err = parse("--- 42\n", "x.yaml").unwrap_err().to_string();
    assert_eq!(
        err,
        "x.yaml document 1: document is 42, not a Kubernetes object: write a mapping with \
         apiVersion, kind, metadata and spec"
    );
    let err = parse(
        "apiVersion: spiderpool.spidernet.io/v1\nkind: SpiderMultusConfig\nmetadata: {name: a}\n",
        "x.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "x.yaml document 1: apiVersion: \"spiderpool.spidernet.io/v1\" is not supported"
        ),
        "{err}"
    );
    let err = parse(
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\nmetadata: {namespace: a}\n",
        "x.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("x.yaml document 1: SpiderMultusConfig: metadata.name is required"),
        "{err}"
    );
    let err = parse("a: [", "broken.yaml").unwrap_err().to_string();
    assert!(
        err.starts_with("broken.yaml: cannot parse as YAML"),
        "{err}"
    );
}

#[test]
fn a_vlan_becomes_part_of_the_master_and_detect_options_pass_through() {
    let config = only_config(&format!(
        "apiVersion: {API_VERSION}\nkind: SpiderMultusConfig\nmetadata: {{name: v}}\nspec:\n{MACVLAN}    \
         vlanID: 42\n  coordinator:\n    detectOptions: {{retries: 5, interval: 10ms, timeout: 250}}\n    \
         podDefaultCniNic: net0\n    detectIPConflict: true\n"
    ));
    assert_eq!(config.master, "eth1.42");
    assert_eq!(config.namespace, None);
    let c = config.coordinator.unwrap();
    assert_eq!(c.pod_default_cni_nic, "net0");
    assert_eq!(c.detect_ip_conflict, Some(true));
    assert_eq!(
        c.detect_options,
        Some(serde_json::json!({"retries": 5, "interval": "10ms", "timeout": 250}))
    );
}

#[test]
fn pool_lists_take_wildcards_as_spiderpool_does() {
    let config =
        only_config(&SEED_MTU.replace("[\"gpu1-net11\"]", "[\"gpu1-*\", \"gpu1-node[0-9]\"]"));
    assert_eq!(config.ipv4_pools, ["gpu1-*", "gpu1-node[0-9]"]);
}
