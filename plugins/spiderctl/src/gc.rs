//! `spiderctl gc`: allocations whose pod network namespace is gone are leaks (the runtime
//! never called DEL: a crashed node agent, a killed plugin, podman after its netns bind mount
//! went). Gone means the netns path is missing or is no network namespace any more: an
//! unmounted bind mount leaves an empty file behind. Report them; release with --apply.
//! Only this node's netns can be checked here, so on a shared (etcd) store only this node's
//! allocations are judged; every node runs its own gc.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipam_store::{Record, Store};
use serde::Serialize;

use crate::output::{Format, OutputArgs, Table};
use crate::store_args::StoreArgs;

/// The report `-o json|yaml` prints (README: spiderctl output).
#[derive(Serialize)]
struct Report {
    leaked: Vec<Leak>,
    /// How many were released: null without --apply.
    released: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Leak {
    pool: String,
    ip: IpAddr,
    network: String,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    netns: String,
    node: Option<String>,
    pod_namespace: Option<String>,
    pod_name: Option<String>,
}

/// What gc found: `Ok(true)` when something leaked (for `--exit-code`).
pub fn run(
    args: &StoreArgs,
    apply: bool,
    return_after: Duration,
    output: &OutputArgs,
) -> Result<bool, String> {
    let store = args.open_existing()?;
    let scan = scan(&store)?;
    let mut report = Report {
        leaked: scan.leaked.into_iter().map(Leak::from).collect(),
        released: None,
    };
    if apply {
        report.released = Some(release(&store, &scan.live)?.len());
        store
            .upkeep(return_after.as_secs())
            .map_err(|e| format!("block upkeep: {e}"))?;
    }
    if !output.print_structured(&report)? {
        print(&report, output);
    }
    Ok(!report.leaked.is_empty())
}

/// `gc --dead-node NODE`: reports NODE's blocks and silence, and with `apply` takes back its
/// blocks and etcd records, if it has been silent long enough (see
/// `EtcdStore::release_dead_node`).
pub fn dead_node(
    args: &StoreArgs,
    node: &str,
    dead_for: Option<Duration>,
    apply: bool,
) -> Result<(), String> {
    let store = args.open_existing()?;
    let Some(etcd) = store.etcd().map_err(|e| e.to_string())? else {
        return Err("--dead-node needs --store etcd: a file store is one node's own".into());
    };
    let (blocks, silent) = etcd.node_status(node).map_err(|e| e.to_string())?;
    let silence = match silent {
        Some(s) => format!("last reached etcd {s} s ago"),
        None => "never wrote a heartbeat".into(),
    };
    if !apply {
        eprintln!(
            "node {node}: {blocks} block(s), {silence}; run with --apply to take back its \
             blocks and allocations"
        );
        return Ok(());
    }
    let dead_for = dead_for.map_or(0, |d| d.as_secs());
    let (blocks, records) = etcd
        .release_dead_node(node, dead_for)
        .map_err(|e| e.to_string())?;
    println!(
        "node {node}: took back {blocks} block(s) and {} allocation(s)",
        records.len()
    );
    Ok(())
}

/// An attachment as CNI names it: (network, container id, ifname).
pub type AttachmentKey = (String, String, String);

/// What one look at the store found.
#[derive(Debug, Default)]
pub struct Scan {
    /// This node's attachments that hold addresses -> whether their netns still exists.
    pub live: BTreeMap<AttachmentKey, bool>,
    /// The records of the attachments whose netns is gone.
    pub leaked: Vec<Record>,
}

pub fn key(record: &Record) -> AttachmentKey {
    (
        record.network.clone(),
        record.owner.container_id.clone(),
        record.owner.ifname.clone(),
    )
}

/// Reads this node's records once (on etcd through the node's index) and judges them.
pub fn scan(store: &Store) -> Result<Scan, String> {
    let mut scan = Scan::default();
    for record in store.node_records().map_err(|e| e.to_string())? {
        let alive = netns_alive(&record.owner.netns);
        scan.live.insert(key(&record), alive);
        if !alive {
            scan.leaked.push(record);
        }
    }
    Ok(scan)
}

/// Every pool with state -> addresses held in it (every node's), counted by the store.
pub fn held_counts(store: &Store) -> Result<BTreeMap<String, usize>, String> {
    let mut held = BTreeMap::new();
    for pool in store.pools().map_err(|e| e.to_string())? {
        let count = store.held_count(&pool).map_err(|e| e.to_string())?;
        held.insert(pool, count as usize);
    }
    Ok(held)
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

impl From<Record> for Leak {
    fn from(r: Record) -> Leak {
        Leak {
            pool: r.pool,
            ip: r.ip,
            network: r.network,
            container_id: r.owner.container_id,
            ifname: r.owner.ifname,
            netns: r.owner.netns,
            node: r.owner.node,
            pod_namespace: r.owner.pod_namespace,
            pod_name: r.owner.pod_name,
        }
    }
}

/// The table (or names) on stdout; the summary, which is commentary, on stderr.
fn print(report: &Report, output: &OutputArgs) {
    if output.format == Some(Format::Name) {
        for l in &report.leaked {
            println!("allocation/{}/{}", l.pool, l.ip);
        }
    } else if !report.leaked.is_empty() {
        let wide = output.wide();
        let mut table = Table::new(if wide {
            &[
                "POOL",
                "ADDRESS",
                "NETWORK",
                "CONTAINER",
                "IFNAME",
                "NETNS",
                "NODE",
                "POD",
            ]
        } else {
            &["POOL", "ADDRESS", "NETWORK", "CONTAINER", "IFNAME", "NETNS"]
        });
        for l in &report.leaked {
            let mut row = vec![
                l.pool.clone(),
                l.ip.to_string(),
                l.network.clone(),
                l.container_id.clone(),
                l.ifname.clone(),
                l.netns.clone(),
            ];
            if wide {
                let pod = match (&l.pod_namespace, &l.pod_name) {
                    (Some(ns), Some(name)) => format!("{ns}/{name}"),
                    (None, Some(name)) => name.clone(),
                    _ => "-".into(),
                };
                row.extend([l.node.clone().unwrap_or_else(|| "-".into()), pod]);
            }
            table.row(row);
        }
        print!("{}", table.render("", output.no_headers));
    }
    let found = report.leaked.len();
    match report.released {
        None => eprintln!(
            "{found} leaked allocation(s) (netns missing or no network namespace); run with \
             --apply to release them"
        ),
        Some(released) => eprintln!("{found} leaked, released {released} allocation(s)"),
    }
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
