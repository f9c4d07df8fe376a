//! The seed scenario's cluster: nodes with the eight rails, the seed's manifests
//! (`conf/seed/`, the seed's YAML extended to eight GPUs) applied with `spiderctl apply` into
//! this cluster's own dirs, one store shared by the nodes (the seed's pools are cluster-wide:
//! one data dir, or etcd reached from every node through a loopback relay),
//! and pods attached the way Multus attaches them: `eth0` from a cluster network (the
//! reference ptp + host-local standing in for Calico), then `net1`..`net8`, one applied
//! conflist each (macvlan with MTU 1480 + spiderpool + coordinator). Shared by the seed tests
//! and the demo.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::Ipv4Addr;
use std::process::{Command, Output};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::conflist::list;
use crate::driver::{Driver, Invocation, Op, Outcome};
use crate::etcd::{LoopbackRelay, TestEtcd};
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
    /// The etcd store instead of `data`, and its relays into the nodes.
    etcd: Option<(TestEtcd, Vec<LoopbackRelay>)>,
}

impl Cluster {
    /// A cluster on the file store.
    pub fn new(rails: &[Rail], nodes: usize) -> Cluster {
        Cluster::build(rails, nodes, None)
    }

    /// A cluster whose pools and allocations live in `etcd`.
    pub fn with_etcd(rails: &[Rail], nodes: usize, etcd: TestEtcd) -> Cluster {
        Cluster::build(rails, nodes, Some(etcd))
    }

    fn build(rails: &[Rail], nodes: usize, etcd: Option<TestEtcd>) -> Cluster {
        let fabric = Fabric::build(nodes, rails);
        let etcd = etcd.map(|etcd| {
            let relays = (1..=nodes)
                .map(|k| etcd.relay_into(fabric.node(k)))
                .collect();
            (etcd, relays)
        });
        let cluster = Cluster {
            fabric,
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
            etcd,
        };
        let mut apply: Vec<OsString> = ["apply", "-f", &seed_manifests()]
            .map(OsString::from)
            .to_vec();
        apply.extend(["--ippool-dir".into(), cluster.pools.path().into()]);
        apply.extend(["--cni-conf-dir".into(), cluster.conflists.path().into()]);
        match &cluster.etcd {
            Some((etcd, _)) => apply.extend(etcd.spiderctl_args().into_iter().map(OsString::from)),
            None => apply.extend(["--data-dir".into(), cluster.data.path().into()]),
        }
        let apply: Vec<&OsStr> = apply.iter().map(OsString::as_os_str).collect();
        let applied = cluster.spiderctl(&apply);
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
        let store = match &self.etcd {
            Some((etcd, _)) => ipam_store::Store::Etcd(Box::new(etcd.open("checker"))),
            None => ipam_store::Store::File(ipam_store::FileStore::open(self.data.path()).unwrap()),
        };
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
