//! The seed scenario's cluster: nodes with the eight rails, the seed's manifests
//! (`conf/seed/`, the seed's YAML extended to eight GPUs) applied with `spiderctl apply` into
//! this cluster's own dirs, one store shared by the nodes (the seed's pools are cluster-wide),
//! and pods attached the way Multus attaches them: `eth0` from a cluster network (the
//! reference ptp + host-local standing in for Calico), then `net1`..`net8`, one applied
//! conflist each (macvlan with MTU 1480 + spiderpool + coordinator). Shared by the seed tests
//! and the demo.

use std::ffi::OsStr;
use std::fs;
use std::net::Ipv4Addr;
use std::process::{Command, Output};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::conflist::list;
use crate::driver::{Driver, Invocation, Op, Outcome};
use crate::netns::Netns;
use crate::paths::temp_dir;
use crate::paths::workspace_root;
use crate::plugins::{our_binary, PluginDir, Source};
use crate::topology::{new_pod, Fabric, Rail};

pub const RAILS: std::ops::RangeInclusive<u8> = 1..=8;

/// `conf/seed`: the seed's SpiderIPPool and SpiderMultusConfig YAML for the eight GPUs.
pub fn seed_manifests() -> String {
    workspace_root()
        .join("conf/seed")
        .to_string_lossy()
        .into_owned()
}

pub struct Cluster {
    pub fabric: Fabric,
    plugins: PluginDir,
    pub pools: TempDir,
    /// Where `spiderctl apply` wrote the conflists.
    pub conflists: TempDir,
    /// One store for both nodes: the seed's pools are cluster-wide.
    pub data: TempDir,
    cache: TempDir,
    host_local: TempDir,
}

impl Cluster {
    pub fn new(rails: &[Rail], nodes: usize) -> Cluster {
        let cluster = Cluster {
            fabric: Fabric::build(nodes, rails),
            plugins: PluginDir::new(&[
                ("macvlan", Source::Ours),
                ("spiderpool", Source::Ours),
                ("coordinator", Source::Ours),
                ("ptp", Source::Reference),
                ("host-local", Source::Reference),
            ]),
            pools: temp_dir("seed-pools"),
            conflists: temp_dir("seed-conflists"),
            data: temp_dir("seed-data"),
            cache: temp_dir("seed-cache"),
            host_local: temp_dir("seed-host-local"),
        };
        let seed = seed_manifests();
        let applied = cluster.spiderctl(&[
            "apply".as_ref(),
            "-f".as_ref(),
            seed.as_ref(),
            "--ippool-dir".as_ref(),
            cluster.pools.path().as_os_str(),
            "--cni-conf-dir".as_ref(),
            cluster.conflists.path().as_os_str(),
            "--data-dir".as_ref(),
            cluster.data.path().as_os_str(),
        ]);
        assert!(applied.status.success(), "spiderctl apply: {applied:?}");
        cluster
    }

    /// Runs `spiderctl` (our build) with `args`, e.g. a command and this cluster's dirs.
    pub fn spiderctl(&self, args: &[&OsStr]) -> Output {
        Command::new(our_binary("spiderctl"))
            .args(args)
            .output()
            .expect("spiderctl runs")
    }

    /// Rail N's conflist as `spiderctl apply` wrote it (macvlan MTU 1480 + spiderpool +
    /// coordinator), or without its coordinator.
    pub fn rail_conflist(&self, n: u8, coordinator: bool) -> Value {
        let path = self
            .conflists
            .path()
            .join(format!("90-gpu{n}-macvlan.conflist"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut conflist: Value = serde_json::from_str(&text).expect("a conflist");
        if !coordinator {
            let plugins = conflist["plugins"].as_array_mut().expect("plugins");
            plugins.retain(|p| p["type"] != "coordinator");
        }
        conflist
    }

    /// The cluster network: ptp with a per-node /24 and the pod's default route.
    pub fn cluster_conflist(&self, node: usize) -> Value {
        list(
            "1.0.0",
            "k8s-pod-network",
            &[json!({
                "type": "ptp",
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.host_local.path(),
                    "subnet": format!("10.233.{}.0/24", 63 + node),
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            })],
        )
    }

    pub fn call<'a>(
        &'a self,
        node: usize,
        conflist: &Value,
        pod: &Netns,
        ifname: &str,
        id: &str,
    ) -> Invocation<'a> {
        Invocation::new(
            self.fabric.node(node),
            conflist,
            &self.plugins,
            self.cache.path(),
        )
        .netns(pod)
        .ifname(ifname)
        .container_id(id)
        .cni_args(&format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={id}"
        ))
    }

    /// Attaches `eth0` and `net1`..`net8` to a new pod on `node`; returns the pod and the
    /// address of each netN.
    pub fn pod(&self, node: usize, id: &str, coordinator: bool) -> (Netns, Vec<Ipv4Addr>) {
        let pod = new_pod();
        let driver = Driver::get();
        driver
            .run(
                Op::Add,
                &self.call(node, &self.cluster_conflist(node), &pod, "eth0", id),
            )
            .expect_ok();
        let addresses = RAILS
            .map(|n| {
                let conflist = self.rail_conflist(n, coordinator);
                let added = driver.run(
                    Op::Add,
                    &self.call(node, &conflist, &pod, &format!("net{n}"), id),
                );
                address_of(&added)
            })
            .collect();
        (pod, addresses)
    }

    pub fn detach(&self, node: usize, pod: &Netns, id: &str, coordinator: bool) {
        let driver = Driver::get();
        for n in RAILS {
            let conflist = self.rail_conflist(n, coordinator);
            driver
                .run(
                    Op::Del,
                    &self.call(node, &conflist, pod, &format!("net{n}"), id),
                )
                .expect_ok();
        }
    }

    /// How many addresses the store holds, over all eight pools.
    pub fn held(&self) -> usize {
        let store = ipam_store::FileStore::open(self.data.path()).unwrap();
        RAILS
            .map(|n| store.held(&format!("gpu{n}-net1{n}")).unwrap().len())
            .sum()
    }
}

pub fn address_of(outcome: &Outcome) -> Ipv4Addr {
    let cidr = outcome.first_address();
    cidr.split('/').next().unwrap().parse().unwrap()
}

pub fn ip_in(pod: &Netns, args: &[&str]) -> String {
    pod.ip(args).unwrap_or_else(|e| panic!("{e}"))
}
