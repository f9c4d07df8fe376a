//! Measures allocation cost as a pool fills: allocates `COUNT` addresses from a /16 pool and
//! prints the median and p95 of the first 100, of 100 at every 10,000, and of the last 100
//! allocations, then of 100 releases. Nothing is asserted; this is for the numbers in the notes.
//!
//! `cargo run --release -p ipam-store --example fill -- [COUNT] [DATA_DIR | etcd=URL]`
//! (default 65000 in a fresh directory under the system temp dir, removed afterwards; pass a
//! DATA_DIR on the file system the plugin will use, as fsync cost depends on it; `etcd=URL`
//! fills the etcd store at that endpoint, under the prefix /fill-<pid>).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipam_store::pool::PoolSpec;
use ipam_store::{EtcdConfig, Owner, Pool, Store, StoreConfig};

const NETWORK: &str = "fill";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(Ok(65_000), |s| s.parse())?;
    let mut config = StoreConfig::File;
    let (data_dir, temporary) = match args.next() {
        Some(target) => match target.strip_prefix("etcd=") {
            Some(endpoint) => {
                config = StoreConfig::Etcd(EtcdConfig {
                    prefix: format!("/fill-{}", std::process::id()),
                    ..EtcdConfig::new(vec![endpoint.into()])
                });
                (PathBuf::new(), false)
            }
            None => (PathBuf::from(target), false),
        },
        None => (
            std::env::temp_dir().join(format!("ipam-store-fill-{}", std::process::id())),
            true,
        ),
    };
    let spec = PoolSpec {
        subnet: "10.200.0.0/16".into(),
        ips: vec!["10.200.0.1-10.200.255.254".into()],
        ..PoolSpec::default()
    };
    let (pool, _) = Pool::new("fill", &spec)?;
    if count < 200 || count as u64 > pool.size() {
        return Err(format!("COUNT must be between 200 and {}", pool.size()).into());
    }
    let store = Store::open(&config, &data_dir, Some("fill".into()))?;
    let owner = |i: usize| Owner {
        container_id: format!("c{i}"),
        ifname: "net1".into(),
        ..Owner::default()
    };

    let mut allocations = Vec::with_capacity(count);
    for i in 0..count {
        let start = Instant::now();
        store.allocate(&pool, NETWORK, &owner(i))?;
        allocations.push(start.elapsed());
    }
    let mut releases = Vec::with_capacity(100);
    for i in 0..100 {
        let start = Instant::now();
        store.release(NETWORK, &format!("c{i}"), "net1")?;
        releases.push(start.elapsed());
    }
    report("first 100 allocations", &allocations[..100]);
    for at in (10_000..count - 100).step_by(10_000) {
        report(&format!("100 from {at}"), &allocations[at..at + 100]);
    }
    report(&format!("last 100 of {count}"), &allocations[count - 100..]);
    report("100 releases when full", &releases);
    if temporary {
        std::fs::remove_dir_all(&data_dir)?;
    }
    Ok(())
}

fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!("{what:>24}: median {:?}, p95 {:?}", at(0.5), at(0.95));
}
