//! `spiderctl gc`: allocations whose pod network namespace is gone are leaks (the runtime
//! never called DEL: a crashed node agent, a killed plugin, podman after its netns bind mount
//! went). Gone means the netns path is missing or is no network namespace any more: an
//! unmounted bind mount leaves an empty file behind. Report them; release with --apply.
//! Only this node's netns can be checked here, so on a shared (etcd) store only this node's
//! allocations are judged; every node runs its own gc.

use std::collections::{BTreeMap, BTreeSet};

use ipam_store::{store, Record, Store};

use crate::store_args::StoreArgs;

pub fn run(args: &StoreArgs, apply: bool) -> Result<(), String> {
    let store = args.open()?;
    let shared = matches!(store, Store::Etcd(_));
    let node = store::this_node();
    // (network, container id, ifname) -> whether its netns still exists.
    let mut live: BTreeMap<(String, String, String), bool> = BTreeMap::new();
    let mut leaked: Vec<Record> = Vec::new();
    for pool in store.pools().map_err(|e| e.to_string())? {
        for (_, record) in store.held(&pool).map_err(|e| e.to_string())? {
            if shared && record.owner.node != node {
                continue;
            }
            let alive = netns_alive(&record.owner.netns);
            let key = (
                record.network.clone(),
                record.owner.container_id.clone(),
                record.owner.ifname.clone(),
            );
            live.insert(key, alive);
            if !alive {
                leaked.push(record);
            }
        }
    }
    for record in &leaked {
        println!(
            "leaked {} (pool {}) network {} container {} ifname {}: netns {:?} is gone (missing \
             or no network namespace)",
            record.ip,
            record.pool,
            record.network,
            record.owner.container_id,
            record.owner.ifname,
            record.owner.netns
        );
    }
    if !apply {
        println!(
            "{} leaked allocation(s); run with --apply to release them",
            leaked.len()
        );
        return Ok(());
    }
    let networks: BTreeSet<&String> = live.keys().map(|(network, _, _)| network).collect();
    let mut released = 0;
    for network in networks {
        let keep = |id: &str, ifname: &str| {
            live.get(&(network.clone(), id.to_owned(), ifname.to_owned()))
                .copied()
                // Not among the held records (an index entry without its record): gc repairs it.
                .unwrap_or(true)
        };
        released += store.gc(network, &keep).map_err(|e| e.to_string())?.len();
    }
    println!("released {released} allocation(s)");
    Ok(())
}

/// Whether the attachment's netns is still a network namespace. A record without a netns
/// (never written by ADD, which requires one), or one whose path cannot be examined, cannot
/// be judged: kept, since releasing a live pod's address would hand it out twice.
fn netns_alive(path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    cni::netns::is_live(path).unwrap_or_else(|e| {
        eprintln!("spiderctl: cannot tell whether netns {path} is alive ({e}): kept");
        true
    })
}
