//! Our networks as an operator installs them for a runtime: `spiderctl apply -f
//! conf/seed/gpuN.yaml ...` into a conf dir, a pool dir and a data dir of their own, and a
//! plugin dir holding our three plugins plus the reference `loopback` (containerd's CRI runs
//! it for `lo` in every sandbox, as every node has it).

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use ipam_store::{Allocations, FileStore, Record};
use tempfile::TempDir;

use crate::paths::{temp_dir, workspace_root};
use crate::plugins::{our_binary, PluginDir, Source};
use crate::topology::gateway_ip;

/// One applied network: `gpuN-macvlan` on rail N, pool `gpuN-net1N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rail(pub u8);

impl Rail {
    pub fn network(self) -> String {
        format!("gpu{}-macvlan", self.0)
    }

    pub fn pool(self) -> String {
        format!("gpu{}-net1{}", self.0, self.0)
    }

    pub fn gateway(self) -> Ipv4Addr {
        gateway_ip(self.0)
    }

    /// Whether the seed's pool hands out `ip`: `172.16.1N.1` - `172.16.1N.200`.
    pub fn pool_has(self, ip: Ipv4Addr) -> bool {
        let [a, b, c, d] = ip.octets();
        (a, b, c) == (172, 16, 10 + self.0) && (1..=200).contains(&d)
    }
}

/// An allocation as the store shows it: who holds which address, and for which pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Held {
    pub ip: IpAddr,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
}

impl From<Record> for Held {
    fn from(r: Record) -> Held {
        Held {
            ip: r.ip,
            network: r.network,
            container_id: r.owner.container_id,
            ifname: r.owner.ifname,
            netns: r.owner.netns,
            pod_namespace: r.owner.pod_namespace,
            pod_name: r.owner.pod_name,
        }
    }
}

/// The applied conflists and pools, the store, and the plugin dir; removed on drop.
#[derive(Debug)]
pub struct Networks {
    pub rails: Vec<Rail>,
    pub conf_dir: TempDir,
    pub pools: TempDir,
    pub data: TempDir,
    pub plugins: PluginDir,
}

impl Networks {
    /// `spiderctl apply -f conf/seed/gpuN.yaml` for each rail, with the dirs given as flags.
    pub fn apply(rails: &[u8]) -> Networks {
        let networks = Networks {
            rails: rails.iter().map(|&n| Rail(n)).collect(),
            conf_dir: temp_dir("rt-conf"),
            pools: temp_dir("rt-pools"),
            data: temp_dir("rt-data"),
            plugins: PluginDir::new(&[
                ("macvlan", Source::Ours),
                ("spiderpool", Source::Ours),
                ("coordinator", Source::Ours),
                ("loopback", Source::Reference),
            ]),
        };
        let mut apply = Command::new(our_binary("spiderctl"));
        apply.arg("apply");
        for &n in rails {
            apply
                .arg("-f")
                .arg(workspace_root().join(format!("conf/seed/gpu{n}.yaml")));
        }
        apply
            .arg("--cni-conf-dir")
            .arg(networks.conf_dir.path())
            .arg("--ippool-dir")
            .arg(networks.pools.path())
            .arg("--data-dir")
            .arg(networks.data.path());
        let out = apply.output().expect("spiderctl runs");
        assert!(out.status.success(), "spiderctl apply: {out:?}");
        networks
    }

    /// The file names in the conf dir (the runtimes read it: they must not add their own
    /// networks there; podman's CNI backend keeps its `cni.lock` beside them).
    pub fn conf_files(&self) -> BTreeSet<String> {
        fs::read_dir(self.conf_dir.path())
            .expect("the conf dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Every allocation of every pool of these networks.
    pub fn held(&self) -> Vec<Held> {
        let store = FileStore::open(self.data.path()).expect("the data dir opens as a store");
        let mut held: Vec<Held> = self
            .rails
            .iter()
            .flat_map(|rail| store.held(&rail.pool()).expect("the store reads"))
            .map(|(_, record)| Held::from(record))
            .collect();
        held.sort();
        held
    }
}
