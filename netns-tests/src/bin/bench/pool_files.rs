//! ADD cost against the number of pool files in `ippool_dir`: a rail plan puts one pool per
//! node per rail in every node's dir (8,000 files for 1,000 nodes x 8 rails). The network
//! lists `gpu1-*`; this node (`SPIDERPOOL_NODE_NAME=node1`) may use one of the pools. Timed
//! with the pool index (`<ippool_dir>/.index/`, what an ADD reads normally) and without it
//! (`.index` made a plain file, so every ADD reads every pool file, as before the index).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use netns_tests::paths::temp_dir;
use netns_tests::plugins::our_binary;
use serde_json::json;

use crate::alloc::add;
use crate::quantile_ms;

const ADDS: usize = 200;
const WARM_UP: usize = 5;
const RAILS: usize = 8;
const NODE_ENV: [(&str, &str); 1] = [("SPIDERPOOL_NODE_NAME", "node1")];

pub fn run(counts: &[usize]) {
    println!(
        "| pool files in ippool_dir | ADD median ms, with the index | ADD median ms, every file \
         read | with the index / 1 file |"
    );
    println!("|---|---|---|---|");
    let mut one_file = None;
    for &files in counts {
        let indexed = median_add(files, true);
        let scanned = median_add(files, false);
        let base = *one_file.get_or_insert(indexed);
        println!(
            "| {files} | {indexed:.2} | {scanned:.2} | {:.2} |",
            indexed / base
        );
    }
    println!(
        "\nMedian of {ADDS} ADDs of `spiderpool` by direct exec (each a new container id), \
         after {WARM_UP} untimed ones; the pools are `gpu<r>-node<n>` /22s with `nodeName`, {RAILS} \
         rails, and the network lists `gpu1-*`."
    );
}

/// The median ADD with `files` pool files (1 file: this node's pool alone).
fn median_add(files: usize, index: bool) -> f64 {
    let scratch = temp_dir("bench-pool-files");
    let pools = scratch.path().join("pools");
    fs::create_dir(&pools).expect("pool dir");
    write_pools(&pools, files);
    if !index {
        fs::write(pools.join(".index"), "").expect("index blocker");
    }
    let conf = json!({
        "cniVersion": "1.0.0", "name": "rail1", "type": "macvlan",
        "ipam": {"type": "spiderpool", "default_ipv4_ippool": ["gpu1-*"],
                 "ippool_dir": pools, "data_dir": scratch.path().join("data")},
    })
    .to_string();
    let binary = our_binary("spiderpool");
    for n in 0..WARM_UP {
        add(&binary, &conf, n, &NODE_ENV);
    }
    let mut samples: Vec<Duration> = (WARM_UP..WARM_UP + ADDS)
        .map(|n| {
            let started = Instant::now();
            add(&binary, &conf, n, &NODE_ENV);
            started.elapsed()
        })
        .collect();
    quantile_ms(&mut samples, 0.5)
}

/// `files` pools: node k's pool of rail r for k = 1.., r = 1..=8, node1's of rail 1 first.
fn write_pools(dir: &Path, files: usize) {
    for i in 0..files {
        let (node, rail) = (i / RAILS + 1, i % RAILS + 1);
        let name = format!("gpu{rail}-node{node}");
        let block = i * 4;
        let (a, b) = (block / 256, block % 256);
        let text = format!(
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  name: \
             {name}\nspec:\n  subnet: 10.{a}.{b}.0/22\n  ips: [10.{a}.{b}.1-10.{a}.{}.254]\n  \
             nodeName: [node{node}]\n",
            b + 3
        );
        fs::write(dir.join(format!("{name}.yaml")), text).expect("pool file");
    }
}
