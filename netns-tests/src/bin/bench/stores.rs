//! The allocation stores side by side in one run: `spiderpool` alone by direct exec on one
//! node (`SPIDERPOOL_NODE_NAME=node1`), each row a fresh store with one /16 pool. Per row the
//! median sequential ADD, the ADDs per second of 32 workers at once, and for etcd the store
//! revisions per 1,000 ADDs (every etcd write raises the revision by one: the writes an ADD
//! costs the cluster). Each etcd row has an etcd of its own on loopback
//! (`ipam_store::testing::EtcdServer`), so its revisions are its own. The sequential ADDs of
//! the rows take turns, one ADD each, so a change in the machine's load hits every row alike.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use ipam_store::testing::{revision, EtcdServer};
use ipam_store::{EtcdStore, StoreConfig};
use netns_tests::paths::temp_dir;
use netns_tests::plugins::our_binary;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::alloc::add;
use crate::quantile_ms;

/// The rows, one line each: a label and the store. An etcd row gives the keys it adds to the
/// IPAM config's `store` object (a JSON object, `{}` for none).
const ROWS: &[(&str, Store)] = &[
    ("file store", Store::File),
    ("etcd, per address", Store::Etcd("{}")),
    (
        "etcd blocks (block_size 16)",
        Store::Etcd(r#"{"block_size": 16}"#),
    ),
];

const ADDS: usize = 200;
const WARM_UP: usize = 5;
const WORKERS: usize = 32;
/// ADDs of the concurrent run, spread evenly over the workers (a multiple of them).
const CONCURRENT_ADDS: usize = 2_048;
const NODE_ENV: [(&str, &str); 1] = [("SPIDERPOOL_NODE_NAME", "node1")];
const POOL: &str = "bench";
const POOL_YAML: &str = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
    metadata:\n  name: bench\nspec:\n  subnet: 10.64.0.0/16\n  ips:\n    - 10.64.0.1-10.64.255.254\n";

/// Where a row's allocations live.
enum Store {
    /// The node-local file store (`data_dir`).
    File,
    /// An etcd of the row's own, with these keys (a JSON object) added to the `store` object.
    Etcd(&'static str),
}

/// One row, ready to run.
struct Row {
    label: &'static str,
    conf: String,
    /// The row's own etcd, for an etcd row.
    etcd: Option<EtcdServer>,
    _scratch: TempDir,
}

pub fn run() {
    let rows: Vec<Row> = ROWS
        .iter()
        .map(|(label, store)| Row::new(label, store))
        .collect();
    let before: Vec<Option<i64>> = rows.iter().map(Row::revision).collect();
    let medians = take_turns(&rows);
    let rates: Vec<f64> = rows.iter().map(Row::concurrent).collect();
    let adds = WARM_UP + ADDS + CONCURRENT_ADDS;
    let (file_median, file_rate) = rows
        .iter()
        .position(|row| row.etcd.is_none())
        .map(|i| (medians[i], rates[i]))
        .expect("a file store row, the base of the ratios");
    println!(
        "| store | ADD median ms | ADD median / file store | etcd revisions per 1,000 ADDs | \
         {WORKERS}-way ADDs/s | {WORKERS}-way ADDs/s / file store |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        let revisions = row
            .revision()
            .zip(before[i])
            .map_or("-".to_owned(), |(now, then)| {
                format!("{:.0}", (now - then) as f64 * 1000.0 / adds as f64)
            });
        println!(
            "| {} | {:.2} | {:.2} | {revisions} | {:.0} | {:.2} |",
            row.label,
            medians[i],
            medians[i] / file_median,
            rates[i],
            rates[i] / file_rate
        );
    }
    println!(
        "\nPer row a fresh store and one /16 pool; `spiderpool` by direct exec (for etcd it \
         hands over to `spiderpool-etcd` by exec, as installed), each ADD a new container id. \
         Median of {ADDS} sequential ADDs after {WARM_UP} untimed ones, the rows taking turns \
         ADD by ADD; then, row by row, {CONCURRENT_ADDS} ADDs by {WORKERS} workers at once, all \
         on one node, timed from the first start to the last answer. Revisions: the row's etcd \
         header revision before its first ADD and after its last, over its {adds} ADDs. etcd: \
         one member per row on loopback, its data on the same disk as the file store's."
    );
}

/// The median sequential ADD of each row, in ms: one ADD of each row in turn.
fn take_turns(rows: &[Row]) -> Vec<f64> {
    let binary = our_binary("spiderpool");
    let mut samples: Vec<Vec<Duration>> = rows.iter().map(|_| Vec::new()).collect();
    for n in 0..WARM_UP + ADDS {
        for (row, samples) in rows.iter().zip(&mut samples) {
            let started = Instant::now();
            add(&binary, &row.conf, n, &NODE_ENV);
            if n >= WARM_UP {
                samples.push(started.elapsed());
            }
        }
    }
    samples
        .iter_mut()
        .map(|samples| quantile_ms(samples, 0.5))
        .collect()
}

impl Row {
    /// A fresh store for `store`, its pool written.
    fn new(label: &'static str, store: &Store) -> Row {
        let scratch = temp_dir("bench-stores");
        let data = scratch.path().join("data");
        let (ipam, etcd) = match store {
            Store::File => {
                let pools = scratch.path().join("pools");
                fs::create_dir(&pools).expect("pool dir");
                fs::write(pools.join("bench.yaml"), POOL_YAML).expect("pool manifest");
                let ipam = json!({"type": "spiderpool", "default_ipv4_ippool": [POOL],
                                  "ippool_dir": pools, "data_dir": data});
                (ipam, None)
            }
            Store::Etcd(extra) => {
                let etcd = EtcdServer::start();
                let config = etcd.config();
                EtcdStore::open(&config, None)
                    .and_then(|s| s.put_manifests(&[(POOL.into(), POOL_YAML.into())]))
                    .expect("write the pool to etcd");
                let mut store = serde_json::to_value(StoreConfig::Etcd(config))
                    .expect("a store config serialises");
                let extra: Value =
                    serde_json::from_str(extra).expect("a row's extra keys are JSON");
                let Value::Object(extra) = extra else {
                    panic!("a row's extra store keys must be a JSON object, not {extra}");
                };
                store.as_object_mut().expect("an object").extend(extra);
                let ipam = json!({"type": "spiderpool", "default_ipv4_ippool": [POOL],
                                  "store": store, "data_dir": data});
                (ipam, Some(etcd))
            }
        };
        let conf = json!({"cniVersion": "1.0.0", "name": "stores", "type": "macvlan",
                          "ipam": ipam});
        Row {
            label,
            conf: conf.to_string(),
            etcd,
            _scratch: scratch,
        }
    }

    /// The revision of the row's etcd now; `None` for the file store.
    fn revision(&self) -> Option<i64> {
        self.etcd.as_ref().map(|etcd| revision(&[etcd.endpoint()]))
    }

    /// ADDs per second of [`WORKERS`] workers at once, after the sequential ADDs.
    fn concurrent(&self) -> f64 {
        let binary = our_binary("spiderpool");
        let per_worker = CONCURRENT_ADDS / WORKERS;
        let first = WARM_UP + ADDS;
        let started = Instant::now();
        thread::scope(|s| {
            for worker in 0..WORKERS {
                let (binary, from) = (&binary, first + worker * per_worker);
                s.spawn(move || {
                    for n in from..from + per_worker {
                        add(binary, &self.conf, n, &NODE_ENV);
                    }
                });
            }
        });
        (WORKERS * per_worker) as f64 / started.elapsed().as_secs_f64()
    }
}
