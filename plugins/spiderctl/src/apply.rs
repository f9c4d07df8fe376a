//! `spiderctl apply`: SpiderIPPool documents become pool files in the plugin's `ippool_dir`
//! (or keys in etcd, with the etcd store), SpiderMultusConfig documents become conflists in
//! the CNI config dir.
//!
//! Everything is read and validated before anything is written, so a bad document leaves the
//! node as it was; then each file is written atomically, and only if its content changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipam_store::pool_dir::{self, Wanted};
use ipam_store::{manifest, store as store_mod, Allocations, Manifest, Store, StoreConfig};

use crate::fsutil::write_if_changed;
use crate::guard;
use crate::manifests::{self, Document, MultusConfig, Origin};
use crate::render::{self, Placement};
use crate::store_args::StoreArgs;
use crate::{DEFAULT_DATA_DIR, DEFAULT_IPPOOL_DIR};
use ipam_store::defaults::DEFAULT_NODE_LABELS_FILE;

/// One file to write, and which document it comes from.
#[derive(Debug)]
struct Planned {
    path: PathBuf,
    content: String,
    origin: Origin,
    /// `pool gpu1-net11`, `network gpu1-macvlan`: what must be unique.
    what: String,
    /// The name it is stored under (`<ippool_dir>/<name>.yaml`, etcd's `ippools/<name>`),
    /// for a pool or a reserved IP set.
    pool: Option<String>,
}

pub fn run(
    files: &[PathBuf],
    cni_conf_dir: &Path,
    ippool_dir: &Path,
    node_labels_file: Option<&Path>,
    store: &StoreArgs,
    force: bool,
) -> Result<(), String> {
    let docs = manifests::read(files).map_err(|e| e.to_string())?;
    let placement = placement(ippool_dir, node_labels_file, store)?;
    let plan = plan(&docs, cni_conf_dir, ippool_dir, &placement)?;
    if plan.is_empty() {
        return Err(format!(
            "no SpiderIPPool, SpiderReservedIP or SpiderMultusConfig in {}: nothing to apply",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let file_store = placement.store == StoreConfig::File;
    if file_store {
        check_other_pool_files(&plan, ippool_dir)?;
    }
    let opened = match file_store && !store.data_dir.exists() {
        // Nothing allocated yet, and apply must not create the data dir.
        true => None,
        false => Some(store.open()?),
    };
    check_edits(&docs, &plan, ippool_dir, opened.as_ref(), file_store, force)?;
    // With etcd the pools go there first, in one transaction: a conflist must not name a
    // pool the nodes cannot read yet.
    let (pools, files): (Vec<&Planned>, Vec<&Planned>) =
        plan.iter().partition(|p| p.pool.is_some() && !file_store);
    if let Some(etcd) = opened
        .as_ref()
        .map(Store::etcd)
        .transpose()
        .map_err(|e| e.to_string())?
        .flatten()
    {
        put_pools(&pools, etcd)?;
    }
    write_files(&files, &[cni_conf_dir, ippool_dir])?;
    if file_store && files.iter().any(|p| p.pool.is_some()) {
        // So that the next ADD reads the index, not every pool file.
        let node = store_mod::this_node().unwrap_or_default();
        if let Err(e) = pool_dir::refresh_index(ippool_dir, &node) {
            eprintln!("warning: {e}: ADDs read every pool file until it can be written");
        }
    }
    Ok(())
}

/// Refuses (unless `force`) pool edits that strand held addresses; warns of pools that two
/// nodes would share on the node-local store.
fn check_edits(
    docs: &[Document],
    plan: &[Planned],
    ippool_dir: &Path,
    store: Option<&Store>,
    file_store: bool,
    force: bool,
) -> Result<(), String> {
    let (old, new) = views(plan, ippool_dir, store)?;
    if let Some(allocations) = store {
        let stranded = guard::stranded(&old, &new, &**allocations)?;
        match (stranded.is_empty(), force) {
            (true, _) => {}
            (false, false) => return Err(guard::refusal(&stranded)),
            (false, true) => eprintln!("warning: --force: {}", guard::refusal(&stranded)),
        }
    }
    if file_store {
        let configs = manifests::multus_configs(docs).map_err(|e| e.to_string())?;
        for warning in unbound_pools(&configs, &new) {
            eprintln!("warning: {warning}");
        }
    }
    Ok(())
}

fn write_files(files: &[&Planned], dirs: &[&Path]) -> Result<(), String> {
    for &dir in dirs {
        if files.iter().any(|p| p.path.parent() == Some(dir)) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    for item in files {
        let change = write_if_changed(&item.path, &item.content)
            .map_err(|e| format!("cannot write {}: {e}", item.path.display()))?;
        println!("{} {change} ({})", item.path.display(), item.what);
    }
    Ok(())
}

/// The definitions in force and those after this apply: the existing pool files (or etcd's
/// manifests) with the planned ones put in. Unparsable existing files are skipped with a
/// warning, as the plugin skips them.
fn views(
    plan: &[Planned],
    ippool_dir: &Path,
    store: Option<&Store>,
) -> Result<(Manifest, Manifest), String> {
    let shared = match store {
        Some(store) => store.shared().map_err(|e| e.to_string())?,
        None => None,
    };
    let existing: Vec<(String, String, String)> = match shared {
        Some(etcd) => etcd
            .manifests()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(source, text)| {
                let name = source.rsplit('/').next().unwrap_or_default().to_owned();
                (name, source, text)
            })
            .collect(),
        _ if ippool_dir.is_dir() => manifest::list_dir(ippool_dir)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|path| {
                let text = manifest::read_text(&path).map_err(|e| e.to_string())?;
                Ok((path.display().to_string(), path.display().to_string(), text))
            })
            .collect::<Result<_, String>>()?,
        _ => Vec::new(),
    };
    let etcd = shared.is_some();
    let planned: Vec<(String, &Planned)> = plan
        .iter()
        .filter_map(|p| {
            let name = p.pool.as_ref()?;
            Some(match etcd {
                true => (name.clone(), p),
                false => (p.path.display().to_string(), p),
            })
        })
        .collect();
    let parse = |sources: Vec<(String, String)>| {
        pool_dir::parse_tolerant(sources, &Wanted::Entries(&[]), str::to_owned)
            .map_err(|e| e.to_string())
    };
    let old = parse(
        existing
            .iter()
            .map(|(_, source, text)| (source.clone(), text.clone()))
            .collect(),
    )?;
    let mut new_sources: Vec<(String, String)> = existing
        .into_iter()
        .filter(|(key, _, _)| !planned.iter().any(|(k, _)| k == key))
        .map(|(_, source, text)| (source, text))
        .collect();
    new_sources.extend(
        planned
            .iter()
            .map(|(_, p)| (p.origin.to_string(), p.content.clone())),
    );
    let new = parse(new_sources)?;
    // Broken existing files are reported once, here.
    for skipped in &new.skipped {
        eprintln!(
            "warning: {} is skipped, the IPAM plugin skips it too: {}",
            skipped.source, skipped.error
        );
    }
    Ok((old.manifest, new.manifest))
}

/// The warning for each pool a network would use on the node-local file store that is not
/// bound to nodes: every node would hand out its addresses.
pub fn unbound_pools(configs: &[MultusConfig], pools: &Manifest) -> Vec<String> {
    let names: Vec<&str> = pools.into_iter().map(|p| p.name()).collect();
    let mut out = Vec::new();
    for config in configs.iter().filter(|c| c.ipam) {
        let lists = [&config.ipv4_pools, &config.ipv6_pools];
        for name in lists
            .into_iter()
            .flat_map(|list| ipam_store::pattern::expand(list, &names))
        {
            let pool = pools.get(name).expect("expanded from these pools");
            if !pool.filters().binds_nodes() {
                out.push(unbound_warning(&config.network, name));
            }
        }
    }
    out
}

/// What `apply` and `doctor` say of a shared pool on a node-local store.
pub fn unbound_warning(network: &str, pool: &str) -> String {
    format!(
        "network {network} uses pool {pool} with the node-local file store, and the pool has no \
         nodeName or nodeAffinity: two nodes would hand out the same addresses; bind it to \
         nodes or use the etcd store"
    )
}

fn put_pools(pools: &[&Planned], etcd: &ipam_store::EtcdStore) -> Result<(), String> {
    if pools.is_empty() {
        return Ok(());
    }
    let manifests: Vec<(String, String)> = pools
        .iter()
        .filter_map(|p| Some((p.pool.clone()?, p.content.clone())))
        .collect();
    let changed = etcd.put_manifests(&manifests).map_err(|e| e.to_string())?;
    for ((name, _), changed) in manifests.iter().zip(changed) {
        let change = if changed { "written" } else { "unchanged" };
        println!("{}/ippools/{name} {change} (pool {name})", etcd.describe());
    }
    Ok(())
}

/// What the conflists' IPAM sections say about pools and state: the etcd store, or the dirs
/// that differ from the plugin's defaults (so the common case renders the short list of the
/// DESIGN), made absolute because the plugin runs in the runtime's working directory, not ours.
pub fn placement(
    ippool_dir: &Path,
    node_labels_file: Option<&Path>,
    store: &StoreArgs,
) -> Result<Placement, String> {
    let explicit = |path: &Path, default: &str| -> Result<Option<PathBuf>, String> {
        let absolute = std::path::absolute(path)
            .map_err(|e| format!("cannot make {} absolute: {e}", path.display()))?;
        Ok((absolute != Path::new(default)).then_some(absolute))
    };
    // Read on the node with either store.
    let node_labels_file = node_labels_file
        .map(|f| explicit(f, DEFAULT_NODE_LABELS_FILE))
        .transpose()?
        .flatten();
    let config = store.config()?;
    if config != StoreConfig::File {
        return Ok(Placement {
            ippool_dir: None,
            data_dir: None,
            node_labels_file,
            store: config,
        });
    }
    Ok(Placement {
        ippool_dir: explicit(ippool_dir, DEFAULT_IPPOOL_DIR)?,
        data_dir: explicit(&store.data_dir, DEFAULT_DATA_DIR)?,
        node_labels_file,
        store: config,
    })
}

fn plan(
    docs: &[Document],
    cni_conf_dir: &Path,
    ippool_dir: &Path,
    placement: &Placement,
) -> Result<Vec<Planned>, String> {
    let mut plan: Vec<Planned> = Vec::new();
    for doc in docs {
        let item = match doc {
            Document::Pool { origin, value } => {
                // The pool file is the document alone, validated by the very parser the IPAM
                // plugin will read it with.
                let content = yaml_serde::to_string(value)
                    .map_err(|e| format!("{origin}: cannot write as YAML: {e}"))?;
                let parsed =
                    manifest::parse(&content, &origin.to_string()).map_err(|e| e.to_string())?;
                crate::warnings::pools(&parsed.warnings);
                let (name, what) = match (parsed.pools.as_slice(), parsed.reserved.as_slice()) {
                    ([pool], []) => (pool.name(), "pool"),
                    ([], [reserved]) => (reserved.name.as_str(), "reserved IPs"),
                    _ => unreachable!("one document is one pool or one reserved IP set"),
                };
                Planned {
                    path: ippool_dir.join(format!("{name}.yaml")),
                    content,
                    origin: origin.clone(),
                    what: format!("{what} {name}"),
                    pool: Some(name.to_owned()),
                }
            }
            Document::MultusConfig(raw) => {
                let config = raw.validate().map_err(|e| e.to_string())?;
                Planned {
                    path: cni_conf_dir.join(render::file_name(&config)),
                    content: render::conflist(&config, placement),
                    origin: raw.origin.clone(),
                    what: format!("network {}", config.network),
                    pool: None,
                }
            }
            Document::Other { origin, kind } => {
                eprintln!(
                    "{origin}: kind {kind} skipped: apply writes SpiderIPPool and \
                     SpiderMultusConfig"
                );
                continue;
            }
        };
        if let Some(first) = plan.iter().find(|p| p.path == item.path) {
            return Err(format!(
                "{} is defined twice, in {} and in {}: names must be unique (both would be \
                 written to {}); rename or drop one",
                item.what,
                first.origin,
                item.origin,
                item.path.display()
            ));
        }
        plan.push(item);
    }
    Ok(plan)
}

/// The IPAM plugin refuses a directory where two files define one pool, so a pool applied
/// here must not also live in another file of `ippool_dir` (one written by hand, say).
fn check_other_pool_files(plan: &[Planned], ippool_dir: &Path) -> Result<(), String> {
    let ours: BTreeMap<&Path, &Planned> = plan
        .iter()
        .filter(|p| p.path.parent() == Some(ippool_dir))
        .map(|p| (p.path.as_path(), p))
        .collect();
    if ours.is_empty() || !ippool_dir.is_dir() {
        return Ok(());
    }
    for file in manifests::expand(&[ippool_dir.to_path_buf()]).map_err(|e| e.to_string())? {
        if ours.contains_key(file.as_path()) {
            continue;
        }
        let existing = manifest::load_file(&file).map_err(|e| {
            format!(
                "{e} (an existing file of {}, which the IPAM plugin also reads: fix or remove it)",
                ippool_dir.display()
            )
        })?;
        for pool in &existing {
            let target = ippool_dir.join(format!("{}.yaml", pool.name()));
            if let Some(item) = ours.get(target.as_path()) {
                return Err(format!(
                    "{}: pool {} is already defined in {}: the IPAM plugin refuses a pool \
                     defined twice; remove that file or that pool from it, then apply again",
                    item.origin,
                    pool.name(),
                    file.display()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network on `gpu1-*` over a pool bound by `binding` and one that is not.
    const DOCS: &str = "\
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderIPPool
metadata: {name: gpu1-node1}
spec: {subnet: 172.16.11.0/27, ips: [172.16.11.1-172.16.11.29], nodeName: [node1]}
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderIPPool
metadata: {name: gpu1-shared}
spec: {subnet: 172.16.11.64/27, ips: [172.16.11.65-172.16.11.90]}
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata: {name: gpu1-macvlan, namespace: spiderpool}
spec:
  cniType: macvlan
  macvlan: {master: [enp11s0f0np0], ippools: {ipv4: [\"gpu1-*\"]}}
";

    #[test]
    fn only_pools_bound_to_no_node_are_warned_of_in_one_readable_line() {
        let docs = manifests::parse(DOCS, "plan.yaml").unwrap();
        let configs = manifests::multus_configs(&docs).unwrap();
        let pools = manifest::parse(DOCS, "plan.yaml").unwrap();
        let warnings = unbound_pools(&configs, &pools);
        assert_eq!(
            warnings,
            [
                "network gpu1-macvlan uses pool gpu1-shared with the node-local file store, and \
              the pool has no nodeName or nodeAffinity: two nodes would hand out the same \
              addresses; bind it to nodes or use the etcd store"
            ]
        );
    }
}
