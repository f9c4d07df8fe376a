//! The allocation stores side by side in one run: `spiderpool` alone by direct exec on one
//! node (`SPIDERPOOL_NODE_NAME=node1`), each row a fresh store with one /16 pool. Per row the
//! median sequential ADD, the ADDs per second of 32 workers at once, and for etcd the store
//! revisions per 1,000 ADDs (every etcd write raises the revision by one: the writes an ADD
//! costs the cluster). The etcd rows share one etcd on loopback that this section starts
//! (`ipam_store::testing::EtcdServer`), each row under a key prefix of its own.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use ipam_store::testing::{revision, EtcdServer};
use ipam_store::{EtcdStore, StoreConfig};
use netns_tests::paths::temp_dir;
use netns_tests::plugins::our_binary;
use serde_json::{json, Value};

use crate::alloc::add;
use crate::quantile_ms;

/// The rows, one line each: a label and the store. An etcd row gives the keys it adds to the
/// IPAM config's `store` object (a JSON object, `{}` for none).
const ROWS: &[(&str, Store)] = &[
    ("file store", Store::File),
    ("etcd, per address", Store::Etcd("{}")),
];

const ADDS: usize = 200;
const WARM_UP: usize = 5;
const WORKERS: usize = 32;
/// ADDs of the concurrent run, spread evenly over the workers.
const CONCURRENT_ADDS: usize = 2_048;
const NODE_ENV: [(&str, &str); 1] = [("SPIDERPOOL_NODE_NAME", "node1")];
const POOL: &str = "bench";
const POOL_YAML: &str = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
    metadata:\n  name: bench\nspec:\n  subnet: 10.64.0.0/16\n  ips:\n    - 10.64.0.1-10.64.255.254\n";

/// Where a row's allocations live.
enum Store {
    /// The node-local file store (`data_dir`).
    File,
    /// The section's etcd, with these keys (a JSON object) added to the `store` object.
    Etcd(&'static str),
}

/// One row's measurements.
struct Figures {
    median_ms: f64,
    adds_per_s: f64,
    /// etcd rows only.
    revisions_per_1000: Option<f64>,
}

pub fn run() {
    let etcd = EtcdServer::start();
    let rows: Vec<(&str, bool, Figures)> = ROWS
        .iter()
        .enumerate()
        .map(|(i, (label, store))| {
            let scratch = temp_dir("bench-stores");
            let (conf, endpoints) = prepare(store, &etcd, i, scratch.path());
            (
                *label,
                matches!(store, Store::File),
                measure(&conf, endpoints),
            )
        })
        .collect();
    let (_, _, file) = rows
        .iter()
        .find(|(_, is_file, _)| *is_file)
        .expect("a file store row, the base of the ratios");
    println!(
        "| store | ADD median ms | ADD median / file store | etcd revisions per 1,000 ADDs | \
         {WORKERS}-way ADDs/s | {WORKERS}-way ADDs/s / file store |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, _, row) in &rows {
        let revisions = row
            .revisions_per_1000
            .map_or("-".to_owned(), |r| format!("{r:.0}"));
        println!(
            "| {label} | {:.2} | {:.2} | {revisions} | {:.0} | {:.2} |",
            row.median_ms,
            row.median_ms / file.median_ms,
            row.adds_per_s,
            row.adds_per_s / file.adds_per_s
        );
    }
    println!(
        "\nPer row a fresh store and one /16 pool; `spiderpool` by direct exec (for etcd it \
         hands over to `spiderpool-etcd` by exec, as installed), each ADD a new container id. \
         Median of {ADDS} sequential ADDs after {WARM_UP} untimed ones; then {CONCURRENT_ADDS} \
         ADDs by {WORKERS} workers at once, all on one node, timed from the first start to the \
         last answer. Revisions: etcd's header revision before the first ADD and after the \
         last, over all {} ADDs of the row. etcd: one member on loopback, data on the same disk \
         as the file store.",
        WARM_UP + ADDS + CONCURRENT_ADDS
    );
}

/// Writes `store`'s pool and returns the network config, and the etcd endpoints of an etcd
/// row. Row `row` of the etcd rows keeps its keys under `/bench-stores-<row>`.
fn prepare(
    store: &Store,
    etcd: &EtcdServer,
    row: usize,
    scratch: &Path,
) -> (String, Option<Vec<String>>) {
    let data = scratch.join("data");
    let (ipam, endpoints) = match store {
        Store::File => {
            let pools = scratch.join("pools");
            fs::create_dir(&pools).expect("pool dir");
            fs::write(pools.join("bench.yaml"), POOL_YAML).expect("pool manifest");
            let ipam = json!({"type": "spiderpool", "default_ipv4_ippool": [POOL],
                              "ippool_dir": pools, "data_dir": data});
            (ipam, None)
        }
        Store::Etcd(extra) => {
            let mut config = etcd.config();
            config.prefix = format!("/bench-stores-{row}");
            EtcdStore::open(&config, None)
                .and_then(|s| s.put_manifests(&[(POOL.into(), POOL_YAML.into())]))
                .expect("write the pool to etcd");
            let mut store = serde_json::to_value(StoreConfig::Etcd(config.clone()))
                .expect("a store config serialises");
            let extra: Value = serde_json::from_str(extra).expect("a row's extra keys are JSON");
            let Value::Object(extra) = extra else {
                panic!("a row's extra store keys must be a JSON object, not {extra}");
            };
            store.as_object_mut().expect("an object").extend(extra);
            let ipam = json!({"type": "spiderpool", "default_ipv4_ippool": [POOL],
                              "store": store, "data_dir": data});
            (ipam, Some(config.endpoints))
        }
    };
    let conf = json!({"cniVersion": "1.0.0", "name": "stores", "type": "macvlan", "ipam": ipam});
    (conf.to_string(), endpoints)
}

/// Times the sequential and the concurrent ADDs of one row; counts etcd's revisions over
/// both when `endpoints` names an etcd.
fn measure(conf: &str, endpoints: Option<Vec<String>>) -> Figures {
    let binary = our_binary("spiderpool");
    let before = endpoints.as_deref().map(revision);
    for n in 0..WARM_UP {
        add(&binary, conf, n, &NODE_ENV);
    }
    let mut samples: Vec<Duration> = (WARM_UP..WARM_UP + ADDS)
        .map(|n| {
            let started = Instant::now();
            add(&binary, conf, n, &NODE_ENV);
            started.elapsed()
        })
        .collect();
    let first = WARM_UP + ADDS;
    let per_worker = CONCURRENT_ADDS / WORKERS;
    let started = Instant::now();
    thread::scope(|s| {
        for worker in 0..WORKERS {
            let (binary, from) = (&binary, first + worker * per_worker);
            s.spawn(move || {
                for n in from..from + per_worker {
                    add(binary, conf, n, &NODE_ENV);
                }
            });
        }
    });
    let adds_per_s = (WORKERS * per_worker) as f64 / started.elapsed().as_secs_f64();
    let total = first + WORKERS * per_worker;
    let revisions_per_1000 = endpoints
        .as_deref()
        .zip(before)
        .map(|(endpoints, before)| (revision(endpoints) - before) as f64 * 1000.0 / total as f64);
    Figures {
        median_ms: quantile_ms(&mut samples, 0.5),
        adds_per_s,
        revisions_per_1000,
    }
}
