//! The seed's eight rails planned per node, as large clusters route them: on rail r, node n
//! owns the /27 `172.16.(10+r).(32(n-1))/27`; its pool `gpu<r>-node<n>` hands out `.1`-`.29`
//! of it with the gateway at `.30` (the last usable address), bound to the node by `nodeName`
//! or by `nodeAffinity` on the node's label [`NODE_LABEL`]; rail r's network picks the node's
//! pool with the wildcard `gpu<r>-*`.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::scenario::{node_name, RAILS};
use crate::topology::master_name;

/// The label a node's `nodeAffinity` pools select it by.
pub const NODE_LABEL: &str = "spider.test/node";
/// Each node's subnet on a rail.
pub const PREFIX_LEN: u8 = 27;
const BLOCK: u8 = 32;
/// /27 blocks in a rail's /24.
pub const MAX_NODES: usize = 8;

/// How a pool is tied to its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    NodeName,
    NodeAffinity,
}

/// The pool of `node` on `rail`.
pub fn pool_name(rail: u8, node: usize) -> String {
    format!("gpu{rail}-{}", node_name(node))
}

/// First address of `node`'s subnet on `rail`.
pub fn subnet_base(rail: u8, node: usize) -> Ipv4Addr {
    assert!(
        (1..=MAX_NODES).contains(&node),
        "node {node} not in 1..={MAX_NODES}"
    );
    let block = u8::try_from(node - 1).expect("node fits") * BLOCK;
    Ipv4Addr::new(172, 16, 10 + rail, block)
}

/// `node`'s gateway on `rail`: the last usable address of its subnet.
pub fn gateway(rail: u8, node: usize) -> Ipv4Addr {
    offset(subnet_base(rail, node), BLOCK - 2)
}

/// Whether `ip` is in `node`'s subnet on `rail`.
pub fn in_subnet(rail: u8, node: usize, ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - PREFIX_LEN);
    u32::from(ip) & mask == u32::from(subnet_base(rail, node))
}

/// Rail r's gateways of nodes 1..=nodes as `addr/len`, for [`crate::Fabric::route`].
pub fn gateways(rail: u8, nodes: usize) -> Vec<String> {
    (1..=nodes)
        .map(|k| format!("{}/{PREFIX_LEN}", gateway(rail, k)))
        .collect()
}

/// The labels of `node` for [`Binding::NodeAffinity`] (and one no pool looks at).
pub fn node_labels(node: usize) -> Value {
    json!({NODE_LABEL: node_name(node), "topology.kubernetes.io/zone": "zone-a"})
}

/// The plan as `spiderctl apply` input: the pools of nodes 1..=nodes on the eight rails, then
/// the eight SpiderMultusConfigs (the seed's, with `gpu<r>-*` for the pool).
pub fn manifests(nodes: usize, binding: Binding) -> String {
    let mut docs = Vec::new();
    for rail in RAILS {
        for node in 1..=nodes {
            docs.push(pool(rail, node, binding));
        }
    }
    docs.extend(RAILS.map(multus_config));
    docs.join("---\n")
}

/// Writes [`manifests`] as `dir/rail-plan.yaml`; returns its path.
pub fn write_manifests(dir: &Path, nodes: usize, binding: Binding) -> PathBuf {
    let path = dir.join("rail-plan.yaml");
    fs::write(&path, manifests(nodes, binding))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

fn pool(rail: u8, node: usize, binding: Binding) -> String {
    let base = subnet_base(rail, node);
    let binding = match binding {
        Binding::NodeName => format!("  nodeName: [{}]\n", node_name(node)),
        Binding::NodeAffinity => format!(
            "  nodeAffinity:\n    matchLabels:\n      {NODE_LABEL}: {}\n",
            node_name(node)
        ),
    };
    format!(
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  \
         name: {name}\nspec:\n  subnet: {base}/{PREFIX_LEN}\n  ips:\n    - {first}-{last}\n  \
         gateway: {gateway}\n{binding}",
        name = pool_name(rail, node),
        first = offset(base, 1),
        last = offset(base, BLOCK - 3),
        gateway = gateway(rail, node),
    )
}

fn multus_config(rail: u8) -> String {
    format!(
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\nmetadata:\n  \
         name: gpu{rail}-macvlan\n  namespace: spiderpool\nspec:\n  cniType: macvlan\n  \
         macvlan:\n    master: [\"{master}\"]\n    mtu: 1480\n    ippools:\n      \
         ipv4: [\"gpu{rail}-*\"]\n",
        master = master_name(rail),
    )
}

fn offset(base: Ipv4Addr, by: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + u32::from(by))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_gateways_of_the_plan() {
        assert_eq!(subnet_base(1, 1), Ipv4Addr::new(172, 16, 11, 0));
        assert_eq!(gateway(1, 1), Ipv4Addr::new(172, 16, 11, 30));
        assert_eq!(gateway(8, 4), Ipv4Addr::new(172, 16, 18, 126));
        assert!(in_subnet(3, 2, Ipv4Addr::new(172, 16, 13, 33)));
        assert!(!in_subnet(3, 2, Ipv4Addr::new(172, 16, 13, 64)));
        assert!(!in_subnet(3, 2, Ipv4Addr::new(172, 16, 12, 33)));
        assert_eq!(gateways(2, 2), ["172.16.12.30/27", "172.16.12.62/27"]);
    }

    #[test]
    fn the_manifests_parse_as_the_plan_says() {
        for binding in [Binding::NodeName, Binding::NodeAffinity] {
            let text = manifests(4, binding);
            let pools = ipam_store::manifest::parse(&text, "rail-plan.yaml").expect("parses");
            assert_eq!(pools.pools.len(), 32);
            let pool = pools.get("gpu2-node3").expect("gpu2-node3");
            assert_eq!(pool.size(), 29);
            assert!(pool.filters().binds_nodes(), "{binding:?}");
            assert_eq!(text.matches("kind: SpiderMultusConfig").count(), 8);
        }
    }
}
