//! SpiderMultusConfig -> the network configuration list Multus (or any libcni client) runs,
//! as a conflist file or inside a Kubernetes NetworkAttachmentDefinition.
//!
//! The list is `[macvlan (+ spiderpool IPAM), coordinator, chainCNIJsonData...]`, in the order
//! spiderpool's controller builds it. Structs rather than `serde_json::Value` are serialised so
//! the keys keep a readable order (`type` first) without serde_json's `preserve_order`, which
//! would change every other crate's output in the workspace.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipam_store::StoreConfig;
use serde::Serialize;
use serde_json::Value;

use crate::manifests::{Coordinator, MultusConfig};

/// Conflist files are named `90-<network>.conflist`. Container runtimes take the lexically
/// first file of the directory as the pod network, so ours sort after the cluster network's
/// (Multus writes `00-multus.conf`, Calico `10-calico.conflist`) and can never replace it.
pub const CONFLIST_PREFIX: &str = "90";
/// The NetworkAttachmentDefinition annotation the device plugin resource goes in.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";
/// kubectl's copy of the applied object: not something a NetworkAttachmentDefinition inherits.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Where the spiderpool IPAM section says pools and state live; `None` and the file store
/// leave the plugin's defaults out of the conflist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub ippool_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// This node's labels for `nodeAffinity` pools, when not the plugin's default.
    pub node_labels_file: Option<PathBuf>,
    pub store: StoreConfig,
}

/// The conflist file name for `config`.
pub fn file_name(config: &MultusConfig) -> String {
    format!("{CONFLIST_PREFIX}-{}.conflist", config.network)
}

/// The conflist, pretty-printed, as written to `/etc/cni/net.d`.
pub fn conflist(config: &MultusConfig, placement: &Placement) -> String {
    let list = ConfList::of(config, placement);
    let mut text = serde_json::to_string_pretty(&list).expect("a conflist serialises");
    text.push('\n');
    text
}

/// A `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition carrying the same list (compact, in
/// `spec.config`) and the SpiderMultusConfig's annotations, as spiderpool's controller makes it.
pub fn nad(config: &MultusConfig, placement: &Placement) -> String {
    let mut annotations: BTreeMap<&str, &str> = config
        .annotations
        .iter()
        .filter(|(k, _)| *k != LAST_APPLIED)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(resource) = &config.rdma_resource_name {
        annotations.insert(RESOURCE_NAME_ANNOTATION, resource);
    }
    let nad = Nad {
        api_version: "k8s.cni.cncf.io/v1",
        kind: "NetworkAttachmentDefinition",
        metadata: NadMetadata {
            name: &config.network,
            namespace: config.namespace.as_deref(),
            annotations,
        },
        spec: NadSpec {
            config: serde_json::to_string(&ConfList::of(config, placement))
                .expect("a conflist serialises"),
        },
    };
    yaml_serde::to_string(&nad).expect("a NetworkAttachmentDefinition serialises")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfList<'a> {
    cni_version: &'static str,
    name: &'a str,
    /// Not read by any plugin (libcni and Multus ignore unknown list keys): kept so that
    /// `spiderctl doctor` can check it against the device plugin's config on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    rdma_resource_name: Option<&'a str>,
    plugins: Vec<Plugin<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Plugin<'a> {
    Macvlan(Macvlan<'a>),
    Coordinator(&'a Coordinator),
    Chained(&'a Value),
}

#[derive(Serialize)]
struct Macvlan<'a> {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    master: &'a str,
    /// spiderpool always renders bridge: pods on one master reach each other directly.
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    /// With spiderpool: `{"ips": true}`, so that libcni (Multus' network selection `ips`,
    /// podman's `ip=`) passes the requested addresses in `runtimeConfig.ips`.
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Capabilities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<Ipam<'a>>,
}

#[derive(Serialize)]
struct Capabilities {
    ips: bool,
}

#[derive(Serialize)]
struct Ipam<'a> {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    default_ipv4_ippool: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    default_ipv6_ippool: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    ippool_dir: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_labels_file: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "is_file_store")]
    store: &'a StoreConfig,
}

fn is_file_store(store: &&StoreConfig) -> bool {
    **store == StoreConfig::File
}

impl<'a> ConfList<'a> {
    fn of(config: &'a MultusConfig, placement: &'a Placement) -> ConfList<'a> {
        let ipam = config.ipam.then_some(Ipam {
            plugin_type: "spiderpool",
            default_ipv4_ippool: &config.ipv4_pools,
            default_ipv6_ippool: &config.ipv6_pools,
            ippool_dir: placement.ippool_dir.as_ref(),
            data_dir: placement.data_dir.as_ref(),
            node_labels_file: placement.node_labels_file.as_ref(),
            store: &placement.store,
        });
        let mut plugins = vec![Plugin::Macvlan(Macvlan {
            plugin_type: "macvlan",
            master: &config.master,
            mode: "bridge",
            mtu: config.mtu,
            capabilities: ipam.is_some().then_some(Capabilities { ips: true }),
            ipam,
        })];
        plugins.extend(config.coordinator.as_ref().map(Plugin::Coordinator));
        plugins.extend(config.chain.iter().map(Plugin::Chained));
        ConfList {
            cni_version: config.cni_version.as_str(),
            name: &config.network,
            rdma_resource_name: config.rdma_resource_name.as_deref(),
            plugins,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Nad<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: NadMetadata<'a>,
    spec: NadSpec,
}

#[derive(Serialize)]
struct NadMetadata<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct NadSpec {
    config: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::{multus_configs, parse};

    fn render_one(yaml: &str) -> String {
        let docs = parse(yaml, "test.yaml").unwrap();
        let configs = multus_configs(&docs).unwrap();
        assert_eq!(configs.len(), 1);
        conflist(&configs[0], &Placement::default())
    }

    #[test]
    fn the_designs_example_conflist() {
        let yaml = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\n\
            metadata:\n  name: gpu1-macvlan\n  namespace: spiderpool\nspec:\n  cniType: macvlan\n  \
            macvlan:\n    master: [\"enp11s0f0np0\"]\n    mtu: 1480\n    ippools:\n      ipv4: [\"gpu1-net11\"]\n";
        let got: Value = serde_json::from_str(&render_one(yaml)).unwrap();
        let want: Value = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"gpu1-macvlan","plugins":[
              {"type":"macvlan","master":"enp11s0f0np0","mode":"bridge","mtu":1480,
               "capabilities":{"ips":true},
               "ipam":{"type":"spiderpool","default_ipv4_ippool":["gpu1-net11"]}},
              {"type":"coordinator","podDefaultCniNic":"eth0","detectGateway":true}]}"#,
        )
        .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn keys_keep_their_order_and_the_text_ends_with_a_newline() {
        let yaml = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\n\
            metadata: {name: n}\nspec: {cniType: macvlan, macvlan: {master: [eth1]}}\n";
        let text = render_one(yaml);
        assert!(text.ends_with("}\n"));
        let order = [
            "\"cniVersion\"",
            "\"name\"",
            "\"plugins\"",
            "\"type\": \"macvlan\"",
            "\"master\"",
            "\"mode\"",
            "\"capabilities\"",
            "\"ipam\"",
        ];
        let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn paths_coordinator_chain_and_disabled_ipam() {
        let yaml = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\n\
            metadata:\n  name: n\n  annotations:\n    multus.spidernet.io/cni-version: 0.4.0\n\
            spec:\n  cniType: macvlan\n  macvlan: {master: [eth1], vlanID: 7}\n  \
            coordinator: {podDefaultRouteNIC: net1, detectGateway: false, podRPFilter: -5, mode: auto, hostRPFilter: 0}\n  \
            chainCNIJsonData:\n  - '{\"type\": \"tuning\", \"sysctl\": {\"net.core.somaxconn\": \"4096\"}}'\n  - {type: sbr}\n";
        let docs = parse(yaml, "t.yaml").unwrap();
        let config = &multus_configs(&docs).unwrap()[0];
        let paths = Placement {
            ippool_dir: Some("/tmp/pools".into()),
            data_dir: Some("/tmp/data".into()),
            node_labels_file: Some("/tmp/labels.json".into()),
            store: StoreConfig::File,
        };
        let got: Value = serde_json::from_str(&conflist(config, &paths)).unwrap();
        assert_eq!(got["cniVersion"], "0.4.0");
        assert_eq!(got["plugins"][0]["master"], "eth1.7");
        assert_eq!(got["plugins"][0]["ipam"]["ippool_dir"], "/tmp/pools");
        assert_eq!(got["plugins"][0]["ipam"]["data_dir"], "/tmp/data");
        assert_eq!(
            got["plugins"][0]["ipam"]["node_labels_file"],
            "/tmp/labels.json"
        );
        assert_eq!(
            got["plugins"][1],
            serde_json::json!({"type":"coordinator","podDefaultCniNic":"eth0",
                "podDefaultRouteNic":"net1","podRPFilter":-1,"detectGateway":false})
        );
        assert_eq!(got["plugins"][2]["type"], "tuning");
        assert_eq!(got["plugins"][3], serde_json::json!({"type": "sbr"}));

        let no_ipam = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\n\
            metadata: {name: n}\nspec:\n  cniType: macvlan\n  macvlan: {master: [eth1]}\n  \
            disableIPAM: true\n  enableCoordinator: false\n  chainCNIJsonData: [{type: tuning}]\n";
        let docs = parse(no_ipam, "t.yaml").unwrap();
        let got: Value = serde_json::from_str(&conflist(
            &multus_configs(&docs).unwrap()[0],
            &Placement::default(),
        ))
        .unwrap();
        assert_eq!(got["plugins"][0].get("ipam"), None);
        assert_eq!(
            got["plugins"][0].get("capabilities"),
            None,
            "no IPAM: no requests to pass"
        );
        assert_eq!(got["plugins"][1]["type"], "tuning", "no coordinator");
    }

    #[test]
    fn nad_carries_the_list_and_the_resource_annotation() {
        let yaml = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\n\
            metadata:\n  name: gpu1-macvlan\n  namespace: spiderpool\n  annotations:\n    \
            cni.spidernet.io/rdma-resource-inject: rdma-network\nspec:\n  cniType: macvlan\n  \
            rdmaResourceName: spidernet.io/shared_cx5_gpu1\n  macvlan:\n    master: [\"enp11s0f0np0\"]\n";
        let docs = parse(yaml, "t.yaml").unwrap();
        let config = &multus_configs(&docs).unwrap()[0];
        let text = nad(config, &Placement::default());
        let value: Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(value["apiVersion"], "k8s.cni.cncf.io/v1");
        assert_eq!(value["kind"], "NetworkAttachmentDefinition");
        assert_eq!(value["metadata"]["name"], "gpu1-macvlan");
        assert_eq!(value["metadata"]["namespace"], "spiderpool");
        let annotations = &value["metadata"]["annotations"];
        assert_eq!(
            annotations["k8s.v1.cni.cncf.io/resourceName"],
            "spidernet.io/shared_cx5_gpu1"
        );
        assert_eq!(
            annotations["cni.spidernet.io/rdma-resource-inject"],
            "rdma-network"
        );
        let inner: Value = serde_json::from_str(value["spec"]["config"].as_str().unwrap()).unwrap();
        let file: Value = serde_json::from_str(&conflist(config, &Placement::default())).unwrap();
        assert_eq!(inner, file, "spec.config is the conflist");
        assert_eq!(file["rdmaResourceName"], "spidernet.io/shared_cx5_gpu1");
    }

    #[test]
    fn file_names_sort_after_the_cluster_network() {
        let yaml = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\n\
            metadata:\n  name: gpu1-macvlan\n  annotations: {multus.spidernet.io/cr-name: rail1}\n\
            spec: {cniType: macvlan, macvlan: {master: [eth1]}}\n";
        let docs = parse(yaml, "t.yaml").unwrap();
        let config = &multus_configs(&docs).unwrap()[0];
        assert_eq!(file_name(config), "90-rail1.conflist");
        assert!("10-calico.conflist" < file_name(config).as_str());
        let got: Value = serde_json::from_str(&conflist(config, &Placement::default())).unwrap();
        assert_eq!(got["name"], "rail1");
    }
}
