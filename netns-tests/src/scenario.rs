//! The seed scenario's cluster: nodes with the eight rails, the seed's eight pools in a
//! store shared by the nodes (the seed's pools are cluster-wide), and pods attached the way
//! Multus attaches them: `eth0` from a cluster network (the reference ptp + host-local
//! standing in for Calico), then `net1`..`net8`, one conflist each (macvlan with MTU 1480 +
//! spiderpool [+ coordinator]). Shared by the seed tests and the demo.

use std::fs;
use std::net::Ipv4Addr;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::conflist::{list, spiderpool};
use crate::driver::{Driver, Invocation, Op, Outcome};
use crate::netns::Netns;
use crate::paths::temp_dir;
use crate::plugins::{PluginDir, Source};
use crate::topology::{master_name, new_pod, Fabric, Rail};

pub const RAILS: std::ops::RangeInclusive<u8> = 1..=8;

/// The seed's eight pools, written as the seed writes the first: `gpu{N}-net1{N}`.
pub fn seed_pools_yaml() -> String {
    RAILS
        .map(|n| {
            format!(
                "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  \
                 name: gpu{n}-net1{n}\nspec:\n  gateway: 172.16.1{n}.254\n  subnet: \
                 172.16.1{n}.0/16\n  ips:\n    - 172.16.1{n}.1-172.16.1{n}.200\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

pub struct Cluster {
    pub fabric: Fabric,
    plugins: PluginDir,
    pub pools: TempDir,
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
            data: temp_dir("seed-data"),
            cache: temp_dir("seed-cache"),
            host_local: temp_dir("seed-host-local"),
        };
        fs::write(cluster.pools.path().join("seed.yaml"), seed_pools_yaml()).unwrap();
        cluster
    }

    /// Rail N's conflist: macvlan (MTU 1480) + spiderpool [+ coordinator].
    pub fn rail_conflist(&self, n: u8, coordinator: bool) -> Value {
        let pool = format!("gpu{n}-net1{n}");
        let mut plugins = vec![json!({
            "type": "macvlan", "master": master_name(n), "mode": "bridge", "mtu": 1480,
            "ipam": spiderpool(&[&pool], &[], self.pools.path(), self.data.path()),
        })];
        if coordinator {
            plugins.push(json!({"type": "coordinator"}));
        }
        list("1.0.0", &format!("gpu{n}-macvlan"), &plugins)
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
