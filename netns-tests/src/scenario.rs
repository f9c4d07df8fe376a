//! The seed scenario's cluster: nodes with the eight rails, the seed's manifests
//! (`conf/seed/`, the seed's YAML extended to eight GPUs) or others (a rail plan's) applied
//! with `spiderctl apply` into this cluster's own dirs: one store shared by the nodes (the
//! seed's pools are cluster-wide: one data dir, or etcd reached from every node through a
//! loopback relay), or each node its own file store, as real nodes have it. Node k is named
//! `node<k>` (its plugins' `SPIDERPOOL_NODE_NAME`). Pods are attached the way Multus attaches
//! them: `eth0` from a cluster network (the reference ptp + host-local standing in for
//! Calico), then `net1`..`net8`, one applied conflist each (macvlan with MTU 1480 +
//! spiderpool + coordinator). Shared by the seed, coordinator and rail plan tests, the demo
//! and the bench.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ipam_store::manifest::{self, Manifest};
use ipam_store::{Allocations, FileStore, PoolStore};

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

/// Where a cluster's pools and allocations live.
pub enum Stores {
    /// One ippool dir and one data dir for every node, filled by one `spiderctl apply`: the
    /// seed's cluster-wide pools (real nodes cannot share a data dir; these can).
    Shared,
    /// An ippool dir and a data dir per node, each filled by the node's own `spiderctl apply`
    /// of the same manifests: real nodes on the node-local file store.
    PerNode,
    /// etcd, reached from every node through a loopback relay; the pools applied once.
    Etcd(TestEtcd),
}

/// What a cluster runs beyond its fabric: the manifests it applies, its stores, its nodes'
/// labels.
pub struct Setup {
    manifests: PathBuf,
    stores: Stores,
    node_labels: Vec<Value>,
}

impl Setup {
    /// The seed's manifests ([`seed_manifests`]) on `stores`.
    pub fn seed(stores: Stores) -> Setup {
        Setup::manifests(Path::new(&seed_manifests()), stores)
    }

    /// The manifests at `path` (a file or a dir, as `spiderctl apply -f` takes them).
    pub fn manifests(path: &Path, stores: Stores) -> Setup {
        Setup {
            manifests: path.to_path_buf(),
            stores,
            node_labels: Vec::new(),
        }
    }

    /// Node k's labels are `labels[k - 1]`, in a labels file of its own that its conflists
    /// name in `node_labels_file` (which `spiderctl apply` does not render).
    pub fn node_labels(self, labels: Vec<Value>) -> Setup {
        Setup {
            node_labels: labels,
            ..self
        }
    }
}

/// One store's dirs, and what the `spiderctl apply` that filled them said.
pub struct NodeDirs {
    pub pools: TempDir,
    /// Where `spiderctl apply` wrote the conflists.
    pub conflists: TempDir,
    pub data: TempDir,
    pub applied: Output,
}

pub struct Cluster {
    pub fabric: Fabric,
    plugins: PluginDir,
    /// Node k's dirs are `dirs[k - 1]`, or `dirs[0]` for every node when they share a store.
    dirs: Vec<NodeDirs>,
    /// `node<k>.json` per node, when the setup gave labels.
    labels: Option<TempDir>,
    cache: TempDir,
    host_local: TempDir,
    /// The etcd store instead of the data dirs, and its relays into the nodes.
    etcd: Option<(TestEtcd, Vec<LoopbackRelay>)>,
}

/// The name node k goes by (`SPIDERPOOL_NODE_NAME` of its plugins and `spiderctl`).
pub fn node_name(k: usize) -> String {
    format!("node{k}")
}

impl Cluster {
    /// A cluster on the file store, one store shared by the nodes, the seed's manifests.
    pub fn new(rails: &[Rail], nodes: usize) -> Cluster {
        Cluster::with(rails, nodes, Setup::seed(Stores::Shared))
    }

    /// The seed's pools and allocations in `etcd`.
    pub fn with_etcd(rails: &[Rail], nodes: usize, etcd: TestEtcd) -> Cluster {
        Cluster::with(rails, nodes, Setup::seed(Stores::Etcd(etcd)))
    }

    /// `nodes` nodes on `rails`, their stores filled as `setup` says.
    pub fn with(rails: &[Rail], nodes: usize, setup: Setup) -> Cluster {
        let fabric = Fabric::build(nodes, rails);
        let (etcd, per_node) = match setup.stores {
            Stores::Shared => (None, false),
            Stores::PerNode => (None, true),
            Stores::Etcd(etcd) => {
                let relays = (1..=nodes)
                    .map(|k| etcd.relay_into(fabric.node(k)))
                    .collect();
                (Some((etcd, relays)), false)
            }
        };
        let applying = match per_node {
            true => (1..=nodes).map(Some).collect(),
            false => vec![None],
        };
        let dirs = applying
            .into_iter()
            .map(|node| apply(&setup.manifests, node, etcd.as_ref().map(|(e, _)| e)))
            .collect();
        let labels = (!setup.node_labels.is_empty()).then(|| {
            assert_eq!(setup.node_labels.len(), nodes, "one set of labels per node");
            let dir = temp_dir("node-labels");
            for (k, labels) in (1..=nodes).zip(&setup.node_labels) {
                let path = dir.path().join(format!("{}.json", node_name(k)));
                fs::write(&path, labels.to_string())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            dir
        });
        Cluster {
            fabric,
            plugins: PluginDir::new(&[
                ("macvlan", Source::Ours),
                ("spiderpool", Source::Ours),
                ("coordinator", Source::Ours),
                ("ptp", Source::Reference),
                ("host-local", Source::Reference),
            ]),
            dirs,
            labels,
            cache: temp_dir("seed-cache"),
            host_local: temp_dir("seed-host-local"),
            etcd,
        }
    }

    /// Node k's dirs (the shared ones unless each node has its own store).
    pub fn dirs(&self, node: usize) -> &NodeDirs {
        match self.dirs.len() {
            1 => &self.dirs[0],
            _ => &self.dirs[node - 1],
        }
    }

    /// Rail N's conflist as `spiderctl apply` wrote it for `node` (macvlan MTU 1480 +
    /// spiderpool + coordinator), or without its coordinator; naming the node's labels file
    /// if the setup gave labels.
    pub fn rail_conflist(&self, node: usize, n: u8, coordinator: bool) -> Value {
        let path = self
            .dirs(node)
            .conflists
            .path()
            .join(format!("90-gpu{n}-macvlan.conflist"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut conflist: Value = serde_json::from_str(&text).expect("a conflist");
        if !coordinator {
            let plugins = conflist["plugins"].as_array_mut().expect("plugins");
            plugins.retain(|p| p["type"] != "coordinator");
        }
        if let Some(labels) = &self.labels {
            let file = labels.path().join(format!("{}.json", node_name(node)));
            conflist["plugins"][0]["ipam"]["node_labels_file"] = json!(file);
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
        .env("SPIDERPOOL_NODE_NAME", &node_name(node))
    }

    /// `spiderctl doctor` as node k's agent would run it: inside the node, as the node, on
    /// its dirs.
    pub fn doctor(&self, node: usize) -> Output {
        let dirs = self.dirs(node);
        let bin = our_binary("spiderctl");
        let (conflists, pools) = (dirs.conflists.path(), dirs.pools.path());
        let args = [
            &*bin.to_string_lossy(),
            "doctor",
            "--cni-conf-dir",
            &*conflists.to_string_lossy(),
            "--ippool-dir",
            &*pools.to_string_lossy(),
        ];
        self.fabric
            .node(node)
            .command(&args)
            .env("SPIDERPOOL_NODE_NAME", node_name(node))
            .output()
            .expect("spiderctl doctor runs")
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
                let conflist = self.rail_conflist(node, n, coordinator);
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
            let conflist = self.rail_conflist(node, n, coordinator);
            driver
                .run(
                    Op::Del,
                    &self.call(node, &conflist, pod, &format!("net{n}"), id),
                )
                .expect_ok();
        }
    }

    /// How many addresses the cluster's stores hold, over all their pools.
    pub fn held(&self) -> usize {
        if let Some((etcd, _)) = &self.etcd {
            let store = etcd.open("checker");
            let manifests = store.manifests().expect("etcd's manifests");
            let pools = manifest::parse_all(manifests).expect("etcd's pools parse");
            return held_in(&store, &pools);
        }
        self.dirs
            .iter()
            .map(|dirs| {
                let store = FileStore::open(dirs.data.path()).expect("the data dir opens");
                let pools = manifest::load_dir(dirs.pools.path()).expect("the pools parse");
                held_in(&store, &pools)
            })
            .sum()
    }
}

fn held_in(store: &dyn Allocations, pools: &Manifest) -> usize {
    pools
        .into_iter()
        .map(|p| store.held(p.name()).expect("the store answers").len())
        .sum()
}

/// `spiderctl apply` of `manifests` into new dirs, as `node` (its own store's index) or
/// for every node (`None`), on the file store or `etcd`.
fn apply(manifests: &Path, node: Option<usize>, etcd: Option<&TestEtcd>) -> NodeDirs {
    let label = node.map_or("seed".into(), node_name);
    let (pools, conflists, data) = (
        temp_dir(&format!("{label}-pools")),
        temp_dir(&format!("{label}-conflists")),
        temp_dir(&format!("{label}-data")),
    );
    let mut cmd = Command::new(our_binary("spiderctl"));
    cmd.arg("apply").arg("-f").arg(manifests);
    cmd.arg("--ippool-dir").arg(pools.path());
    cmd.arg("--cni-conf-dir").arg(conflists.path());
    match etcd {
        Some(etcd) => cmd.args(etcd.spiderctl_args()),
        None => cmd.arg("--data-dir").arg(data.path()),
    };
    if let Some(k) = node {
        cmd.env("SPIDERPOOL_NODE_NAME", node_name(k));
    }
    let applied = cmd.output().expect("spiderctl runs");
    assert!(applied.status.success(), "spiderctl apply: {applied:?}");
    NodeDirs {
        pools,
        conflists,
        data,
        applied,
    }
}

pub fn address_of(outcome: &Outcome) -> Ipv4Addr {
    let cidr = outcome.first_address();
    cidr.split('/').next().unwrap().parse().unwrap()
}

pub fn ip_in(pod: &Netns, args: &[&str]) -> String {
    pod.ip(args).unwrap_or_else(|e| panic!("{e}"))
}
