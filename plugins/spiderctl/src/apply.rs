//! `spiderctl apply`: SpiderIPPool documents become pool files in the plugin's `ippool_dir`
//! (or keys in etcd, with the etcd store), SpiderMultusConfig documents become conflists in
//! the CNI config dir.
//!
//! Everything is read and validated before anything is written, so a bad document leaves the
//! node as it was; then each file is written atomically, and only if its content changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipam_store::{manifest, Allocations, Store, StoreConfig};

use crate::fsutil::write_if_changed;
use crate::manifests::{self, Document, Origin};
use crate::render::{self, Placement};
use crate::store_args::StoreArgs;
use crate::{DEFAULT_DATA_DIR, DEFAULT_IPPOOL_DIR};

/// One file to write, and which document it comes from.
#[derive(Debug)]
struct Planned {
    path: PathBuf,
    content: String,
    origin: Origin,
    /// `pool gpu1-net11`, `network gpu1-macvlan`: what must be unique.
    what: String,
    /// The pool's name, for a pool.
    pool: Option<String>,
}

pub fn run(
    files: &[PathBuf],
    cni_conf_dir: &Path,
    ippool_dir: &Path,
    store: &StoreArgs,
) -> Result<(), String> {
    let docs = manifests::read(files).map_err(|e| e.to_string())?;
    let placement = placement(ippool_dir, store)?;
    let plan = plan(&docs, cni_conf_dir, ippool_dir, &placement)?;
    if plan.is_empty() {
        return Err(format!(
            "no SpiderIPPool or SpiderMultusConfig in {}: nothing to apply",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // With etcd the pools go there first, in one transaction: a conflist must not name a
    // pool the nodes cannot read yet.
    let (pools, files): (Vec<&Planned>, Vec<&Planned>) = plan
        .iter()
        .partition(|p| p.pool.is_some() && placement.store != StoreConfig::File);
    if !pools.is_empty() {
        put_pools(&pools, store)?;
    } else {
        check_other_pool_files(&plan, ippool_dir)?;
    }
    for dir in [cni_conf_dir, ippool_dir] {
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

fn put_pools(pools: &[&Planned], store: &StoreArgs) -> Result<(), String> {
    let Store::Etcd(etcd) = store.open()? else {
        unreachable!("pools go to etcd only with the etcd store");
    };
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
pub fn placement(ippool_dir: &Path, store: &StoreArgs) -> Result<Placement, String> {
    let config = store.config()?;
    if config != StoreConfig::File {
        return Ok(Placement {
            ippool_dir: None,
            data_dir: None,
            store: config,
        });
    }
    let explicit = |dir: &Path, default: &str| -> Result<Option<PathBuf>, String> {
        let absolute = std::path::absolute(dir)
            .map_err(|e| format!("cannot make {} absolute: {e}", dir.display()))?;
        Ok((absolute != Path::new(default)).then_some(absolute))
    };
    Ok(Placement {
        ippool_dir: explicit(ippool_dir, DEFAULT_IPPOOL_DIR)?,
        data_dir: explicit(&store.data_dir, DEFAULT_DATA_DIR)?,
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
                let content = serde_yaml_ng::to_string(value)
                    .map_err(|e| format!("{origin}: cannot write as YAML: {e}"))?;
                let parsed =
                    manifest::parse(&content, &origin.to_string()).map_err(|e| e.to_string())?;
                crate::warnings::pools(&parsed.warnings);
                let [pool] = parsed.pools.as_slice() else {
                    unreachable!("one SpiderIPPool document is one pool");
                };
                Planned {
                    path: ippool_dir.join(format!("{}.yaml", pool.name())),
                    content,
                    origin: origin.clone(),
                    what: format!("pool {}", pool.name()),
                    pool: Some(pool.name().to_owned()),
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
