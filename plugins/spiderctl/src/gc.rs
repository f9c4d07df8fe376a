//! `spiderctl gc`: allocations whose pod network namespace is gone are leaks (the runtime
//! never called DEL: a crashed node agent, a killed plugin, podman after its netns bind mount
//! went). Gone means the netns path is missing or is no network namespace any more: an
//! unmounted bind mount leaves an empty file behind. Report them; release with --apply.
//! Only this node's netns can be checked here, so on a shared (etcd) store only this node's
//! allocations are judged; every node runs its own gc.

use std::collections::{BTreeMap, BTreeSet};

use ipam_store::{store, Record, Store};

use crate::store_args::StoreArgs;

/// An attachment as CNI names it: (network, container id, ifname).
pub type AttachmentKey = (String, String, String);

/// What one look at the store found.
#[derive(Debug, Default)]
pub struct Scan {
    /// This node's attachments that hold addresses -> whether their netns still exists.
    pub live: BTreeMap<AttachmentKey, bool>,
    /// The records of the attachments whose netns is gone.
    pub leaked: Vec<Record>,
    /// Every pool with state in the store -> addresses held in it (all nodes').
    pub held: BTreeMap<String, usize>,
}

pub fn key(record: &Record) -> AttachmentKey {
    (
        record.network.clone(),
        record.owner.container_id.clone(),
        record.owner.ifname.clone(),
    )
}

/// Reads every held record once and judges this node's.
pub fn scan(store: &Store) -> Result<Scan, String> {
    let shared = matches!(store, Store::Etcd(_));
    let node = store::this_node();
    let mut scan = Scan::default();
    for pool in store.pools().map_err(|e| e.to_string())? {
        let held = store.held(&pool).map_err(|e| e.to_string())?;
        scan.held.insert(pool, held.len());
        for (_, record) in held {
            if shared && record.owner.node != node {
                continue;
            }
            let alive = netns_alive(&record.owner.netns);
            scan.live.insert(key(&record), alive);
            if !alive {
                scan.leaked.push(record);
            }
        }
    }
    Ok(scan)
}

/// Releases the allocations of the attachments `live` maps to false; returns their records.
pub fn release(store: &Store, live: &BTreeMap<AttachmentKey, bool>) -> Result<Vec<Record>, String> {
    let networks: BTreeSet<&String> = live.keys().map(|(network, _, _)| network).collect();
    let mut released = Vec::new();
    for network in networks {
        let keep = |id: &str, ifname: &str| {
            live.get(&(network.clone(), id.to_owned(), ifname.to_owned()))
                .copied()
                // Not among the held records (an index entry without its record): gc repairs it.
                .unwrap_or(true)
        };
        released.extend(store.gc(network, &keep).map_err(|e| e.to_string())?);
    }
    Ok(released)
}

pub fn run(args: &StoreArgs, apply: bool) -> Result<(), String> {
    let store = args.open()?;
    let scan = scan(&store)?;
    for record in &scan.leaked {
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
            scan.leaked.len()
        );
        return Ok(());
    }
    let released = release(&store, &scan.live)?.len();
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
