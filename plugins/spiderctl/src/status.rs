//! `spiderctl status`: pool usage, and who holds each address.

use std::path::Path;

use ipam_store::Record;

use crate::store_args::{load_pools, StoreArgs};

pub fn run(ippool_dir: &Path, store: &StoreArgs, only: Option<&str>) -> Result<(), String> {
    let store = store.open()?;
    let (manifest, origin) = load_pools(&store, ippool_dir)?;
    for warning in &manifest.warnings {
        eprintln!("warning: {warning}");
    }
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

    println!(
        "{:<32} {:>10} {:>10} {:>10}",
        "POOL", "TOTAL", "ALLOCATED", "FREE"
    );
    let mut details = Vec::new();
    for pool in manifest.into_iter().filter(|p| wanted(p.name())) {
        let held = store.held(pool.name()).map_err(|e| e.to_string())?;
        let total = pool.size();
        let allocated = held.len() as u64;
        let state = if pool.disabled() { " (disabled)" } else { "" };
        println!(
            "{:<32} {total:>10} {allocated:>10} {:>10}{state}",
            pool.name(),
            total.saturating_sub(allocated)
        );
        details.push((pool.name().to_owned(), held));
    }
    // Addresses still held in pools whose manifest was removed: they are not lost.
    for name in store.pools().map_err(|e| e.to_string())? {
        if wanted(&name) && manifest.get(&name).is_none() {
            let held = store.held(&name).map_err(|e| e.to_string())?;
            if !held.is_empty() {
                println!(
                    "{name:<32} {:>10} {:>10} {:>10} (no manifest)",
                    "-",
                    held.len(),
                    "-"
                );
                details.push((name, held));
            }
        }
    }
    for (pool, held) in details.iter().filter(|(_, held)| !held.is_empty()) {
        println!("\n{pool}:");
        println!(
            "  {:<40} {:<24} {:<16} {:<8} {:<16} POD",
            "ADDRESS", "NETWORK", "CONTAINER", "IFNAME", "NODE"
        );
        for (ip, record) in held {
            println!(
                "  {:<40} {:<24} {:<16} {:<8} {:<16} {}",
                ip.to_string(),
                record.network,
                short(&record.owner.container_id),
                record.owner.ifname,
                record.owner.node.as_deref().unwrap_or("-"),
                pod(record)
            );
        }
    }
    Ok(())
}

/// Container ids are 64 hex digits; 12 identify one, as `crictl` shows them.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

pub fn pod(record: &Record) -> String {
    match (&record.owner.pod_namespace, &record.owner.pod_name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.clone(),
        _ => "-".into(),
    }
}
