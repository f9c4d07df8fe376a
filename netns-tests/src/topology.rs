//! Node / fabric / pod topologies, as the seed cluster looks from one rail.
//!
//! A node is a namespace whose masters `enp1{N}s0f0np0` are veths; rail N is a
//! namespace holding a bridge that joins the veth peers of that rail from all
//! nodes, so each rail is an isolated L2 segment across nodes, optionally with
//! the seed's gateway `172.16.(10+N).254/16` on the bridge.

use std::net::Ipv4Addr;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::netns::Netns;

/// Prefix length of the seed's pools and gateways (`172.16.1N.0/16`).
pub const RAIL_PREFIX_LEN: u8 = 16;
const BRIDGE: &str = "br0";

/// One rail of the fabric: the index N (1..=8) names the master and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rail {
    pub index: u8,
    pub master_mtu: u32,
    pub gateway: bool,
}

impl Rail {
    /// Rail N with the seed's defaults: MTU 1500 and a gateway.
    pub fn new(index: u8) -> Rail {
        assert!((1..=8).contains(&index), "rail index {index} not in 1..=8");
        Rail {
            index,
            master_mtu: 1500,
            gateway: true,
        }
    }

    pub fn mtu(self, master_mtu: u32) -> Rail {
        Rail { master_mtu, ..self }
    }

    pub fn without_gateway(self) -> Rail {
        Rail {
            gateway: false,
            ..self
        }
    }
}

/// The node's master NIC for rail N: `enp11s0f0np0` .. `enp18s0f0np0`.
pub fn master_name(rail: u8) -> String {
    format!("enp1{rail}s0f0np0")
}

/// The seed's gateway on rail N: `172.16.(10+N).254`.
pub fn gateway_ip(rail: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, 10 + rail, 254)
}

/// Nodes and rails, torn down (every namespace deleted) on drop.
#[derive(Debug)]
pub struct Fabric {
    nodes: Vec<Netns>,
    rails: Vec<(Rail, Netns)>,
}

impl Fabric {
    /// Builds `nodes` nodes (numbered from 1), each with one master per rail.
    /// Panics on failure; namespaces made so far are removed while unwinding.
    pub fn build(nodes: usize, rails: &[Rail]) -> Fabric {
        let rails: Vec<(Rail, Netns)> = rails.iter().map(|&r| (r, build_rail(r))).collect();
        let nodes = (1..=nodes).map(|k| build_node(k, &rails)).collect();
        for (_, ns) in &rails {
            wait_forwarding(ns);
        }
        Fabric { nodes, rails }
    }

    /// Node k, 1-based.
    pub fn node(&self, k: usize) -> &Netns {
        k.checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .unwrap_or_else(|| panic!("no node{k} in a {}-node fabric", self.nodes.len()))
    }

    /// The fabric namespace of rail N (holds the bridge and gateway).
    pub fn rail(&self, n: u8) -> &Netns {
        &self.rail_entry(n).1
    }

    /// Master name of rail N on every node; panics if rail N was not built.
    pub fn master(&self, n: u8) -> String {
        self.rail_entry(n);
        master_name(n)
    }

    /// Gateway of rail N; panics if rail N was built without one.
    pub fn gateway(&self, n: u8) -> Ipv4Addr {
        assert!(self.rail_entry(n).0.gateway, "rail {n} has no gateway");
        gateway_ip(n)
    }

    /// Makes rail N a router between subnets: each of `gateways` (`addr/len`, one per subnet)
    /// on its bridge, and forwarding on, inside the rail's namespace only. Redirects are off:
    /// the subnets share the bridge's one L2 segment here (each behind its own leaf in a real
    /// fabric), and a redirect would send the pods straight to each other, around the gateway.
    pub fn route(&self, n: u8, gateways: &[String]) {
        let ns = self.rail(n);
        for gateway in gateways {
            must(ns, &["addr", "add", gateway, "dev", BRIDGE]);
        }
        let sysctl = [
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            &format!("net.ipv4.conf.{BRIDGE}.send_redirects=0"),
        ];
        // `exec` enters the rail's namespace before sysctl starts (or fails to spawn), so these
        // writes land in the namespace's own /proc/sys/net.
        let out = ns.exec(&sysctl);
        assert!(
            out.status.success(),
            "building topology: {sysctl:?} in {}: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every namespace of the fabric, nodes first.
    pub fn namespaces(&self) -> impl Iterator<Item = &Netns> {
        self.nodes.iter().chain(self.rails.iter().map(|(_, ns)| ns))
    }

    fn rail_entry(&self, n: u8) -> &(Rail, Netns) {
        self.rails
            .iter()
            .find(|(r, _)| r.index == n)
            .unwrap_or_else(|| panic!("rail {n} is not part of this fabric"))
    }
}

/// A fresh pod namespace with `lo` up, as a runtime hands it to CNI.
pub fn new_pod() -> Netns {
    let pod = Netns::new("pod");
    must(&pod, &["link", "set", "lo", "up"]);
    pod
}

fn build_rail(rail: Rail) -> Netns {
    let ns = Netns::new(&format!("rail{}", rail.index));
    must(&ns, &["link", "add", BRIDGE, "type", "bridge"]);
    if rail.gateway {
        let addr = format!("{}/{RAIL_PREFIX_LEN}", gateway_ip(rail.index));
        must(&ns, &["addr", "add", &addr, "dev", BRIDGE]);
    }
    must(&ns, &["link", "set", BRIDGE, "up"]);
    ns
}

fn build_node(k: usize, rails: &[(Rail, Netns)]) -> Netns {
    let node = Netns::new(&format!("node{k}"));
    must(&node, &["link", "set", "lo", "up"]);
    for (rail, rail_ns) in rails {
        let master = master_name(rail.index);
        let mtu = rail.master_mtu.to_string();
        let peer = format!("n{k}");
        // Created inside the node with the peer placed straight into the rail
        // namespace: neither end ever exists in the root namespace. Both ends
        // get the MTU so the bridge (min of its ports) carries it too.
        must(
            &node,
            &[
                "link",
                "add",
                &master,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "mtu",
                &mtu,
                "netns",
                rail_ns.name(),
            ],
        );
        must(&node, &["link", "set", &master, "up"]);
        must(rail_ns, &["link", "set", &peer, "master", BRIDGE, "up"]);
    }
    node
}

/// Bound on how long new bridge ports may take to forward.
const FORWARDING_POLLS: u32 = 500;
const FORWARDING_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls until every port of the rail's bridge forwards and the bridge has carrier. A veth's
/// carrier reaches the bridge through the kernel's link-watch work, up to a second later:
/// until then the bridge drops what the node sends.
fn wait_forwarding(rail: &Netns) {
    for _ in 0..FORWARDING_POLLS {
        let ports = rail.exec(&["bridge", "-j", "link", "show"]).stdout;
        let ports: Vec<Value> = serde_json::from_slice(&ports).unwrap_or_default();
        let bridge_up = rail
            .ip(&["-j", "link", "show", "dev", BRIDGE])
            .ok()
            .and_then(|out| serde_json::from_str::<Vec<Value>>(&out).ok())
            .is_some_and(|links| links.first().is_some_and(|l| l["operstate"] == "UP"));
        if bridge_up && !ports.is_empty() && ports.iter().all(|p| p["state"] == "forwarding") {
            return;
        }
        thread::sleep(FORWARDING_POLL_INTERVAL);
    }
    panic!(
        "building topology: the ports of {} never started forwarding",
        rail.name()
    );
}

#[track_caller]
fn must(ns: &Netns, args: &[&str]) {
    if let Err(e) = ns.ip(args) {
        panic!("building topology: {e}");
    }
}
