//! `spiderctl status`: pool usage, and who holds each address.

use std::net::IpAddr;
use std::path::Path;

use ipam_store::Record;
use serde::Serialize;

use crate::output::{Format, OutputArgs, Table};
use crate::store_args::{load_pools, StoreArgs};
use crate::warnings;

/// The report `-o json|yaml` prints (README: spiderctl output).
#[derive(Serialize)]
struct Report {
    pools: Vec<PoolStatus>,
    /// SpiderReservedIPs: addresses no pool hands out.
    reserved: Vec<ReservedStatus>,
    /// etcd block mode: every node's blocks (empty otherwise). Then `allocated` and
    /// `allocations` above are this node's: the others' are in their local stores.
    blocks: Vec<BlockStatus>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BlockStatus {
    pool: String,
    /// The block's first address and its size.
    start: IpAddr,
    size: u32,
    node: String,
    /// `exclusive` (only its node allocates there), `shared` (every node, per address),
    /// `closing` (being returned).
    state: &'static str,
    /// Addresses its node held there when it last wrote the lease.
    used: u32,
    /// Unix seconds of that write.
    updated_at: u64,
}

#[derive(Serialize)]
struct ReservedStatus {
    name: String,
    /// As ranges: `172.16.11.30-172.16.11.31,172.16.11.40`.
    ips: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PoolStatus {
    name: String,
    /// False for a pool the store holds addresses of but no manifest defines any more.
    manifest: bool,
    /// The next three are null without a manifest.
    subnet: Option<String>,
    total: Option<u64>,
    free: Option<u64>,
    allocated: u64,
    /// Held addresses no longer in the pool (a forced or hand edit, a reserved IP): held until
    /// their DEL, never handed out again, not counted against `free`.
    outside: u64,
    disabled: bool,
    allocations: Vec<Allocation>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Allocation {
    ip: IpAddr,
    network: String,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    netns: String,
    node: Option<String>,
    pod_namespace: Option<String>,
    pod_name: Option<String>,
    /// Unix seconds.
    allocated_at: u64,
    /// Outside its pool's addresses (see `outside` above).
    outside_pool: bool,
}

impl From<Record> for Allocation {
    fn from(r: Record) -> Allocation {
        Allocation {
            ip: r.ip,
            network: r.network,
            container_id: r.owner.container_id,
            ifname: r.owner.ifname,
            netns: r.owner.netns,
            node: r.owner.node,
            pod_namespace: r.owner.pod_namespace,
            pod_name: r.owner.pod_name,
            allocated_at: r.time,
            outside_pool: false,
        }
    }
}

pub fn run(
    ippool_dir: &Path,
    store: &StoreArgs,
    only: Option<&str>,
    output: &OutputArgs,
) -> Result<(), String> {
    let store = store.open_existing()?;
    let (manifest, origin) = load_pools(&store, ippool_dir)?;
    warnings::pools(&manifest.warnings);
    if let Some(name) = only {
        if manifest.get(name).is_none()
            && !store
                .pools()
                .map_err(|e| e.to_string())?
                .iter()
                .any(|p| p == name)
        {
            return Err(format!(
                "pool {name} is neither in {origin} nor in the {}",
                store.describe()
            ));
        }
    }
    let wanted = |name: &str| only.is_none_or(|o| o == name);

    let blocks = match store.etcd().map_err(|e| e.to_string())? {
        Some(etcd) => etcd.block_leases().map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let mut report = Report {
        blocks: blocks
            .into_iter()
            .filter(|b| wanted(&b.pool))
            .map(|b| BlockStatus {
                pool: b.pool,
                start: b.start,
                size: b.size,
                node: b.node,
                state: b.state,
                used: b.used,
                updated_at: b.time,
            })
            .collect(),
        pools: Vec::new(),
        reserved: match only {
            Some(_) => Vec::new(),
            None => manifest
                .reserved
                .iter()
                .map(|r| ReservedStatus {
                    name: r.name.clone(),
                    ips: r.ips.to_string(),
                })
                .collect(),
        },
    };
    for pool in manifest.into_iter().filter(|p| wanted(p.name())) {
        let held = store.held(pool.name()).map_err(|e| e.to_string())?;
        let allocations: Vec<Allocation> = held
            .into_iter()
            .map(|(ip, r)| Allocation {
                outside_pool: !pool.allocatable().contains(ip),
                ..r.into()
            })
            .collect();
        let allocated = allocations.len() as u64;
        let outside = allocations.iter().filter(|a| a.outside_pool).count() as u64;
        report.pools.push(PoolStatus {
            name: pool.name().to_owned(),
            manifest: true,
            subnet: Some(pool.subnet().to_string()),
            total: Some(pool.size()),
            free: Some(pool.size().saturating_sub(allocated - outside)),
            allocated,
            outside,
            disabled: pool.disabled(),
            allocations,
        });
    }
    // Addresses still held in pools whose manifest was removed: they are not lost.
    for name in store.pools().map_err(|e| e.to_string())? {
        if wanted(&name) && !report.pools.iter().any(|p| p.name == name) {
            let held = store.held(&name).map_err(|e| e.to_string())?;
            if !held.is_empty() {
                let allocations: Vec<Allocation> = held
                    .into_iter()
                    .map(|(_, r)| Allocation {
                        outside_pool: true,
                        ..r.into()
                    })
                    .collect();
                report.pools.push(PoolStatus {
                    name,
                    manifest: false,
                    subnet: None,
                    total: None,
                    free: None,
                    allocated: allocations.len() as u64,
                    outside: allocations.len() as u64,
                    disabled: false,
                    allocations,
                });
            }
        }
    }
    if !output.print_structured(&report)? {
        print!("{}", render(&report, output));
    }
    Ok(())
}

/// The table formats: the pools, then (when any address is held) one row per address.
fn render(report: &Report, output: &OutputArgs) -> String {
    if output.format == Some(Format::Name) {
        return report
            .pools
            .iter()
            .map(|p| format!("spiderippool/{}\n", p.name))
            .collect();
    }
    let wide = output.wide();
    let dash = |n: Option<u64>| n.map_or("-".into(), |n| n.to_string());
    let mut pools = Table::new(if wide {
        &["POOL", "SUBNET", "TOTAL", "ALLOCATED", "FREE", "STATE"]
    } else {
        &["POOL", "TOTAL", "ALLOCATED", "FREE", "STATE"]
    });
    let mut held = Table::new(if wide {
        &[
            "POOL",
            "ADDRESS",
            "NETWORK",
            "CONTAINER",
            "IFNAME",
            "NODE",
            "POD",
            "NETNS",
        ]
    } else {
        &[
            "POOL",
            "ADDRESS",
            "NETWORK",
            "CONTAINER",
            "IFNAME",
            "NODE",
            "POD",
        ]
    });
    for p in &report.pools {
        let mut state = match (p.manifest, p.disabled) {
            (false, _) => "no-manifest".to_owned(),
            (true, true) => "disabled".to_owned(),
            (true, false) => String::new(),
        };
        if p.manifest && p.outside > 0 {
            let sep = if state.is_empty() { "" } else { ", " };
            state.push_str(&format!("{sep}{} held outside the pool", p.outside));
        }
        let mut row = vec![p.name.clone()];
        if wide {
            row.push(p.subnet.clone().unwrap_or_else(|| "-".into()));
        }
        row.extend([dash(p.total), p.allocated.to_string(), dash(p.free), state]);
        pools.row(row);
        for a in &p.allocations {
            let container = match wide {
                true => a.container_id.clone(),
                false => short(&a.container_id).to_owned(),
            };
            let mut row = vec![
                p.name.clone(),
                a.ip.to_string(),
                a.network.clone(),
                container,
                a.ifname.clone(),
                a.node.clone().unwrap_or_else(|| "-".into()),
                match a.outside_pool && p.manifest {
                    true => format!("{} (outside the pool)", pod(a)),
                    false => pod(a),
                },
            ];
            if wide {
                row.push(a.netns.clone());
            }
            held.row(row);
        }
    }
    let mut out = pools.render("", output.no_headers);
    if !held.is_empty() {
        out.push('\n');
        out.push_str(&held.render("", output.no_headers));
    }
    if !report.blocks.is_empty() {
        let mut blocks = Table::new(&["POOL", "BLOCK", "NODE", "STATE", "USED"]);
        for b in &report.blocks {
            blocks.row(vec![
                b.pool.clone(),
                block_cidr(b.start, b.size),
                b.node.clone(),
                b.state.into(),
                b.used.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&blocks.render("", output.no_headers));
    }
    if !report.reserved.is_empty() {
        let mut reserved = Table::new(&["RESERVED", "ADDRESSES"]);
        for r in &report.reserved {
            reserved.row(vec![r.name.clone(), r.ips.clone()]);
        }
        out.push('\n');
        out.push_str(&reserved.render("", output.no_headers));
    }
    out
}

/// A block as the CIDR it is (blocks are aligned powers of two): 172.16.11.16/28.
fn block_cidr(start: IpAddr, size: u32) -> String {
    let bits = if start.is_ipv4() { 32 } else { 128 };
    format!("{start}/{}", bits - size.trailing_zeros())
}

/// Container ids are 64 hex digits; 12 identify one, as `crictl` shows them.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn pod(a: &Allocation) -> String {
    pod_name(&a.pod_namespace, &a.pod_name)
}

/// `namespace/name` of a pod, as kubectl names it, or `-`.
pub fn pod_name(namespace: &Option<String>, name: &Option<String>) -> String {
    match (namespace, name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.clone(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            pools: vec![
                PoolStatus {
                    name: "gpu1-net11".into(),
                    manifest: true,
                    subnet: Some("172.16.0.0/16".into()),
                    total: Some(200),
                    free: Some(199),
                    allocated: 1,
                    outside: 0,
                    disabled: false,
                    allocations: vec![Allocation {
                        ip: "172.16.11.1".parse().unwrap(),
                        network: "gpu1-macvlan".into(),
                        container_id: "0123456789abcdef".into(),
                        ifname: "net1".into(),
                        netns: "/var/run/netns/x".into(),
                        node: None,
                        pod_namespace: Some("default".into()),
                        pod_name: Some("p".into()),
                        allocated_at: 7,
                        outside_pool: false,
                    }],
                },
                PoolStatus {
                    name: "a-pool-whose-manifest-was-removed".into(),
                    manifest: false,
                    subnet: None,
                    total: None,
                    free: None,
                    allocated: 0,
                    outside: 0,
                    disabled: false,
                    allocations: Vec::new(),
                },
            ],
            reserved: vec![ReservedStatus {
                name: "rail1-switches".into(),
                ips: "172.16.11.250-172.16.11.251".into(),
            }],
            blocks: vec![BlockStatus {
                pool: "gpu1-net11".into(),
                start: "172.16.11.0".parse().unwrap(),
                size: 16,
                node: "node1".into(),
                state: "exclusive",
                used: 1,
                updated_at: 1_700_000_000,
            }],
        }
    }

    /// The documented shape (README: spiderctl output): every key, nulls included.
    #[test]
    fn the_json_shape_is_the_documented_one() {
        let json = serde_json::to_value(report()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&json), ["blocks", "pools", "reserved"]);
        assert_eq!(keys(&json["reserved"][0]), ["ips", "name"]);
        assert_eq!(
            keys(&json["blocks"][0]),
            [
                "node",
                "pool",
                "size",
                "start",
                "state",
                "updatedAt",
                "used"
            ]
        );
        assert_eq!(
            keys(&json["pools"][0]),
            [
                "allocated",
                "allocations",
                "disabled",
                "free",
                "manifest",
                "name",
                "outside",
                "subnet",
                "total"
            ]
        );
        assert_eq!(
            keys(&json["pools"][0]["allocations"][0]),
            [
                "allocatedAt",
                "containerID",
                "ifname",
                "ip",
                "netns",
                "network",
                "node",
                "outsidePool",
                "podName",
                "podNamespace"
            ]
        );
        assert_eq!(json["pools"][1]["total"], serde_json::Value::Null);
        assert_eq!(json["pools"][0]["allocations"][0]["ip"], "172.16.11.1");
    }

    #[test]
    fn tables_and_names() {
        let table = render(&report(), &OutputArgs::default());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["gpu1-net11", "200", "1", "199"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "a-pool-whose-manifest-was-removed",
                "-",
                "0",
                "-",
                "no-manifest"
            ]
        );
        // The column fits the longest name.
        assert_eq!(
            lines[0].find("TOTAL"),
            Some("a-pool-whose-manifest-was-removed".len() + 3)
        );
        assert!(table.contains("0123456789ab   net1"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["gpu1-net11", "172.16.11.0/28", "node1", "exclusive", "1"]),
            "{table}"
        );
        let no_headers = OutputArgs {
            no_headers: true,
            ..OutputArgs::default()
        };
        assert!(!render(&report(), &no_headers).contains("POOL"));
        let wide = OutputArgs {
            format: Some(Format::Wide),
            ..OutputArgs::default()
        };
        let wide = render(&report(), &wide);
        assert!(
            wide.contains("172.16.0.0/16") && wide.contains("0123456789abcdef"),
            "{wide}"
        );
        let name = OutputArgs {
            format: Some(Format::Name),
            ..OutputArgs::default()
        };
        assert_eq!(
            render(&report(), &name),
            "spiderippool/gpu1-net11\nspiderippool/a-pool-whose-manifest-was-removed\n"
        );
    }
}
