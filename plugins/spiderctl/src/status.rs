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
        // Held but no longer allocatable (a forced or hand edit, a reserved IP): still held
        // until their DEL, and not counted against the pool's free addresses.
        let outside = held
            .iter()
            .filter(|(ip, _)| !pool.allocatable().contains(*ip))
            .count() as u64;
        let mut state = String::new();
        if pool.disabled() {
            state.push_str(" (disabled)");
        }
        if outside > 0 {
            state.push_str(&format!(" ({outside} held outside the pool)"));
        }
        println!(
            "{:<32} {total:>10} {allocated:>10} {:>10}{state}",
            pool.name(),
            total.saturating_sub(allocated - outside)
        );
        let marked: Vec<_> = held
            .into_iter()
            .map(|(ip, record)| (ip, record, !pool.allocatable().contains(ip)))
            .collect();
        details.push((pool.name().to_owned(), marked));
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
                details.push((
                    name,
                    held.into_iter().map(|(ip, r)| (ip, r, true)).collect(),
                ));
            }
        }
    }
    for (pool, held) in details.iter().filter(|(_, held)| !held.is_empty()) {
        println!("\n{pool}:");
        println!(
            "  {:<40} {:<24} {:<16} {:<8} {:<16} POD",
            "ADDRESS", "NETWORK", "CONTAINER", "IFNAME", "NODE"
        );
        for (ip, record, outside) in held {
            println!(
                "  {:<40} {:<24} {:<16} {:<8} {:<16} {}{}",
                ip.to_string(),
                record.network,
                short(&record.owner.container_id),
                record.owner.ifname,
                record.owner.node.as_deref().unwrap_or("-"),
                pod(record),
                if *outside { " (outside the pool)" } else { "" }
            );
        }
    }
    if only.is_none() && !manifest.reserved.is_empty() {
        println!("\nRESERVED (no pool hands these out):");
        for reserved in &manifest.reserved {
            println!("  {:<32} {}", reserved.name, reserved.ips);
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
