//! Block mode of the etcd store through the real plugin processes (`spiderpool`, handing over
//! to `spiderpool-etcd`) and `spiderctl`: each simulated node has its own
//! `SPIDERPOOL_NODE_NAME` and data dir, all share one etcd and the seed's 200-address pool.
//! Run as root after `cargo build --release`.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;

use netns_tests::etcd::TestEtcd;
use netns_tests::paths::temp_dir;
use netns_tests::plugins::our_binary;
use netns_tests::Netns;
use serde_json::{json, Value};
use tempfile::TempDir;

const POOL: &str = "gpu1-net11";
const BLOCK: u32 = 16;
const POOL_YAML: &str = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
    metadata:\n  name: gpu1-net11\nspec:\n  subnet: 172.16.0.0/16\n  ips:\n    - 172.16.11.1-172.16.11.200\n";

/// One etcd with the pool applied, and the nodes' data dirs.
struct Cluster {
    etcd: TestEtcd,
    scratch: TempDir,
    /// A live namespace: what the pods' netns paths point at, so gc keeps them.
    pod_ns: Netns,
}

impl Cluster {
    fn new(etcd: TestEtcd) -> Cluster {
        netns_tests::netns::sweep_stale();
        let scratch = temp_dir("blocks");
        let file = scratch.path().join("pool.yaml");
        std::fs::write(&file, POOL_YAML).unwrap();
        let applied = Command::new(our_binary("spiderctl"))
            .arg("apply")
            .arg("-f")
            .arg(&file)
            .arg("--cni-conf-dir")
            .arg(scratch.path().join("conf"))
            .args(etcd.spiderctl_args())
            .output()
            .unwrap();
        assert!(applied.status.success(), "spiderctl apply: {applied:?}");
        Cluster {
            etcd,
            scratch,
            pod_ns: Netns::new("blocks-pod"),
        }
    }

    fn data_dir(&self, node: &str) -> PathBuf {
        self.scratch.path().join(node)
    }

    fn conf(&self, node: &str) -> Vec<u8> {
        let mut store = self.etcd.store_json();
        store["block_size"] = json!(BLOCK);
        store["timeout_ms"] = json!(1000);
        json!({"cniVersion": "1.1.0", "name": "blocks", "type": "macvlan", "ipam": {
            "type": "spiderpool", "default_ipv4_ippool": [POOL], "store": store,
            "data_dir": self.data_dir(node),
        }})
        .to_string()
        .into_bytes()
    }

    fn plugin(&self, node: &str, command: &str, id: &str) -> Output {
        let mut child = Command::new(our_binary("spiderpool"))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", self.pod_ns.path())
            .env("CNI_IFNAME", "net1")
            .env("CNI_PATH", "/nonexistent")
            .env("SPIDERPOOL_NODE_NAME", node)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spiderpool runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&self.conf(node))
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// ADD: the address, or the CNI error code and message.
    fn add(&self, node: &str, id: &str) -> Result<IpAddr, (u64, String)> {
        let out = self.plugin(node, "ADD", id);
        let answer: Value = serde_json::from_slice(&out.stdout).expect("ADD prints JSON");
        match out.status.success() {
            true => {
                let cidr = answer["ips"][0]["address"].as_str().expect("an address");
                Ok(cidr.split('/').next().unwrap().parse().unwrap())
            }
            false => Err((
                answer["code"].as_u64().unwrap(),
                answer["msg"].as_str().unwrap_or_default().to_owned(),
            )),
        }
    }

    fn del(&self, node: &str, id: &str) {
        let out = self.plugin(node, "DEL", id);
        assert!(out.status.success(), "DEL {id} on {node}: {out:?}");
    }

    /// `spiderctl` with this etcd and `node`'s data dir in block mode.
    fn spiderctl(&self, node: &str, args: &[&str]) -> Output {
        Command::new(our_binary("spiderctl"))
            .args(args)
            .args(self.etcd.spiderctl_args())
            .args(["--etcd-block-size", &BLOCK.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir(node))
            .env("SPIDERPOOL_NODE_NAME", node)
            .output()
            .unwrap()
    }

    /// The node's agent pass: `spiderctl gc --apply`, which also shares asked blocks.
    fn pass(&self, node: &str) {
        if !self.data_dir(node).is_dir() {
            return;
        }
        let out = self.spiderctl(node, &["gc", "--apply"]);
        assert!(out.status.success(), "gc on {node}: {out:?}");
    }

    fn blocks(&self, node: &str) -> Vec<Value> {
        let out = self.spiderctl(node, &["status", "-o", "json"]);
        assert!(out.status.success(), "status: {out:?}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        report["blocks"].as_array().unwrap().clone()
    }

    fn revision(&self) -> i64 {
        self.etcd.open("checker").revision().unwrap()
    }
}

/// The pool's addresses in the block holding `ip` (172.16.11.1-200, blocks of 16).
fn block_room(ip: IpAddr) -> usize {
    let IpAddr::V4(v4) = ip else { unreachable!() };
    let last = v4.octets()[3] as u32;
    let start = last - last % BLOCK;
    (start..start + BLOCK)
        .filter(|a| (1..=200).contains(a))
        .count()
}

fn same_block(a: IpAddr, b: IpAddr) -> bool {
    let octet = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.octets()[3] as u32 / BLOCK,
        IpAddr::V6(_) => unreachable!(),
    };
    octet(a) == octet(b)
}

#[test]
fn with_etcd_stopped_the_blocks_serve_adds_and_dels_and_a_new_block_is_code_11() {
    let cluster = Cluster::new(TestEtcd::own());
    let first = cluster.add("node-a", "a0").unwrap();
    let before = cluster.revision();
    let room = block_room(first);
    for i in 1..room / 2 {
        let ip = cluster.add("node-a", &format!("a{i}")).unwrap();
        assert!(same_block(ip, first), "{ip} outside the block of {first}");
    }
    assert_eq!(
        cluster.revision(),
        before,
        "ADDs inside a block write nothing to etcd"
    );

    cluster.etcd.server().stop();
    for i in room / 2..room {
        let ip = cluster.add("node-a", &format!("a{i}")).unwrap();
        assert!(same_block(ip, first));
    }
    cluster.del("node-a", "a1");
    let again = cluster.add("node-a", "a1-again").unwrap();
    assert!(
        same_block(again, first),
        "the freed address, from the block"
    );
    let (code, msg) = cluster.add("node-a", "needs-a-block").unwrap_err();
    assert_eq!(code, 11, "{msg}");
    assert!(
        msg.contains(&cluster.etcd.endpoints()[0]),
        "names the endpoints: {msg}"
    );
    // A node that never leased has nothing to serve from.
    let (code, _) = cluster.add("node-b", "b0").unwrap_err();
    assert_eq!(code, 11);

    cluster.etcd.server().resume();
    let next = cluster.add("node-a", "needs-a-block").unwrap();
    assert!(!same_block(next, first), "a second block");
    cluster.add("node-b", "b0").unwrap();
    let blocks = cluster.blocks("node-a");
    let of = |node: &str| blocks.iter().filter(|b| b["node"] == node).count();
    assert_eq!((of("node-a"), of("node-b")), (2, 1), "{blocks:?}");
    // Everything held is what the node's pods hold: gc finds nothing to release.
    let out = cluster.spiderctl("node-a", &["gc", "--exit-code"]);
    assert!(out.status.success(), "no leak: {out:?}");
}

#[test]
fn nodes_exhaust_a_shared_pool_concurrently_borrowing_from_an_idle_one() {
    let cluster = Cluster::new(TestEtcd::get());
    // node-a takes a few addresses and goes idle: its block keeps room that only a borrow
    // can use.
    let mut idle = BTreeSet::new();
    for i in 0..3 {
        idle.insert(cluster.add("node-a", &format!("a{i}")).unwrap());
    }
    let got = Mutex::new(Vec::new());
    let asks = Mutex::new(0u32);
    thread::scope(|s| {
        for node in ["node-b", "node-c"] {
            let (cluster, got, asks) = (&cluster, &got, &asks);
            s.spawn(move || {
                let mut n = 0;
                let mut in_a_row = 0;
                loop {
                    match cluster.add(node, &format!("{node}-{n}")) {
                        Ok(ip) => {
                            got.lock().unwrap().push(ip);
                            n += 1;
                            in_a_row = 0;
                        }
                        Err((103, _)) => break,
                        // Asked for blocks: the other nodes' agent passes share them.
                        Err((11, msg)) if msg.contains("asked node(s)") && in_a_row < 40 => {
                            *asks.lock().unwrap() += 1;
                            in_a_row += 1;
                            for other in ["node-a", "node-b", "node-c"] {
                                if other != node {
                                    cluster.pass(other);
                                }
                            }
                        }
                        Err((code, msg)) => panic!("{node}: ADD {n}: code {code}: {msg}"),
                    }
                }
            });
        }
    });
    let got = got.into_inner().unwrap();
    let distinct: BTreeSet<IpAddr> = got.iter().copied().chain(idle.iter().copied()).collect();
    assert_eq!(got.len() + idle.len(), 200, "the whole pool was handed out");
    assert_eq!(distinct.len(), 200, "and never an address twice");
    assert!(
        *asks.lock().unwrap() > 0,
        "the last addresses needed asking"
    );
    let blocks = cluster.blocks("node-b");
    let a_block = blocks
        .iter()
        .find(|b| b["node"] == "node-a")
        .expect("node-a keeps its block");
    assert_eq!(a_block["state"], "shared", "node-a shared it: {a_block}");
    assert_eq!(a_block["used"], 3, "with its 3 addresses held: {a_block}");
    let borrowed = got
        .iter()
        .filter(|ip| idle.iter().any(|a| same_block(**ip, *a)))
        .count();
    assert_eq!(
        borrowed + 3,
        block_room(*idle.iter().next().unwrap()),
        "node-a's block was filled by borrows"
    );
}
