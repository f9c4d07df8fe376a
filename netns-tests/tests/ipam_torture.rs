//! Torture of the spiderpool IPAM plugin: 32 concurrent workers run real plugin processes
//! allocating and releasing on one pool, and 5% of the allocations are SIGKILLed at a random
//! point. Checked throughout: no address is ever held by two live attachments, and the store
//! reads cleanly after every kill. Checked at the end: after `spiderctl gc --apply` the held
//! set is exactly the live set.
//!
//! Run on the file store (one node) and on the etcd store as 8 nodes x 4 workers (each node
//! its own `SPIDERPOOL_NODE_NAME`, each node's gc its own); and on etcd with an outage: etcd
//! is killed mid-run and restarted, every failure must be code 11, and CNI GC with each node's
//! valid attachments reclaims what the failed calls left.
//!
//! `TORTURE_OPS` sets the number of operations (default 10,000, under a minute here; a bench
//! machine can run 100,000). Run as root after `cargo build --release`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipam_store::{Allocations, FileStore};
use netns_tests::etcd::TestEtcd;
use netns_tests::paths::temp_dir;
use netns_tests::plugins::our_binary;
use netns_tests::Netns;
use serde_json::{json, Value};
use tempfile::TempDir;

const WORKERS: u64 = 32;
const POOL: &str = "torture";
const POOL_SIZE: usize = 1023;
const POOL_YAML: &str = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
    metadata:\n  name: torture\nspec:\n  subnet: 10.200.0.0/16\n  ips:\n    - 10.200.0.1-10.200.3.255\n";
/// Each worker keeps up to this many attachments alive, so releases interleave with claims.
const LIVE_PER_WORKER: usize = 3;
/// One allocation in this many is killed.
const KILL_ONE_IN: u64 = 20;
/// Between two tries of a call that failed because etcd is down.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long a call may keep failing with etcd down before the test gives up.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Where the plugin keeps its state.
enum Backend {
    File { scratch: TempDir },
    Etcd(TestEtcd),
}

impl Backend {
    fn file() -> Backend {
        let scratch = temp_dir("torture");
        fs::create_dir(scratch.path().join("pools")).unwrap();
        fs::write(scratch.path().join("pools/torture.yaml"), POOL_YAML).unwrap();
        Backend::File { scratch }
    }

    fn etcd(etcd: TestEtcd) -> Backend {
        let scratch = temp_dir("torture-pools");
        let file = scratch.path().join("torture.yaml");
        fs::write(&file, POOL_YAML).unwrap();
        let applied = Command::new(our_binary("spiderctl"))
            .arg("apply")
            .arg("-f")
            .arg(&file)
            .arg("--cni-conf-dir")
            .arg(scratch.path().join("conf"))
            .args(etcd.spiderctl_args())
            .output()
            .unwrap();
        assert!(applied.status.success(), "spiderctl apply: {applied:?}");
        Backend::Etcd(etcd)
    }

    fn ipam(&self) -> Value {
        match self {
            Backend::File { scratch } => json!({
                "type": "spiderpool", "default_ipv4_ippool": [POOL],
                "ippool_dir": scratch.path().join("pools"), "data_dir": scratch.path().join("data"),
            }),
            Backend::Etcd(etcd) => json!({
                "type": "spiderpool", "default_ipv4_ippool": [POOL], "store": etcd.store_json(),
            }),
        }
    }

    /// ip -> container id of every address the store holds; the read also proves the store
    /// is intact.
    fn held(&self) -> BTreeMap<IpAddr, String> {
        let held = match self {
            Backend::File { scratch } => FileStore::open(&scratch.path().join("data"))
                .expect("the store opens")
                .held(POOL),
            Backend::Etcd(etcd) => etcd.open("checker").held(POOL),
        }
        .expect("the pool reads");
        assert!(held.len() <= POOL_SIZE);
        held.into_iter()
            .map(|(ip, record)| (ip, record.owner.container_id))
            .collect()
    }

    /// `spiderctl gc --apply` as `node`.
    fn spiderctl_gc(&self, node: &str) {
        let mut gc = Command::new(our_binary("spiderctl"));
        gc.args(["gc", "--apply"]).env("SPIDERPOOL_NODE_NAME", node);
        match self {
            Backend::File { scratch } => gc.arg("--data-dir").arg(scratch.path().join("data")),
            Backend::Etcd(etcd) => gc.args(etcd.spiderctl_args()),
        };
        let out = gc.output().unwrap();
        assert!(out.status.success(), "spiderctl gc: {out:?}");
    }
}

/// Everything the workers share.
struct Shared {
    backend: Backend,
    conf: Vec<u8>,
    /// Workers per node; node k runs workers k * this .. (k + 1) * this.
    workers_per_node: u64,
    /// Where live attachments say their pod is: a real namespace, so gc keeps them.
    live_netns: String,
    /// ip -> container id, for every attachment a worker holds and has not released.
    live: Mutex<BTreeMap<IpAddr, String>>,
    /// (node, container id) of every attachment a worker holds.
    attached: Mutex<BTreeSet<(String, String)>>,
    ops: AtomicU64,
    /// Running average of an ADD's wall time under this load, in µs: kills are spread over it.
    add_micros: AtomicU64,
    kills: AtomicU64,
    /// Killed ADDs that had finished before the signal landed: leaks gc must find too.
    finished_before_kill: AtomicU64,
    /// Calls that failed with code 11 (etcd down), and those that failed otherwise.
    unavailable: AtomicU64,
    wrong_failures: Mutex<Vec<String>>,
    duplicates: Mutex<Vec<String>>,
}

impl Shared {
    fn new(backend: Backend, nodes: u64) -> Shared {
        let conf = json!({"cniVersion": "1.1.0", "name": "torture", "type": "macvlan",
                          "ipam": backend.ipam()});
        Shared {
            backend,
            conf: conf.to_string().into_bytes(),
            workers_per_node: WORKERS / nodes,
            live_netns: String::new(),
            live: Mutex::new(BTreeMap::new()),
            attached: Mutex::new(BTreeSet::new()),
            ops: AtomicU64::new(0),
            add_micros: AtomicU64::new(5_000),
            kills: AtomicU64::new(0),
            finished_before_kill: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            wrong_failures: Mutex::new(Vec::new()),
            duplicates: Mutex::new(Vec::new()),
        }
    }

    fn node_of(&self, worker: u64) -> String {
        format!("node{}", worker / self.workers_per_node)
    }

    fn nodes(&self) -> BTreeSet<String> {
        (0..WORKERS).map(|w| self.node_of(w)).collect()
    }
}

#[test]
fn concurrent_processes_with_kills_never_hand_out_an_address_twice() {
    torture(Backend::file(), 1, false);
}

#[test]
fn etcd_eight_nodes_with_kills_never_hand_out_an_address_twice() {
    torture(Backend::etcd(TestEtcd::get()), 8, false);
}

#[test]
fn etcd_outage_fails_with_code_11_and_leaves_nothing_after_gc() {
    torture(Backend::etcd(TestEtcd::own()), 8, true);
}

fn total_ops(outage: bool) -> u64 {
    let ops = std::env::var("TORTURE_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // The outage run is about what happens around the outage, not volume.
    if outage {
        ops / 5
    } else {
        ops
    }
}

fn torture(backend: Backend, nodes: u64, outage: bool) {
    let total_ops = total_ops(outage);
    let alive = Netns::new("alive");
    let mut shared = Shared::new(backend, nodes);
    shared.live_netns = alive.path().to_string_lossy().into_owned();

    let started = Instant::now();
    let mut outage_took = Duration::ZERO;
    thread::scope(|s| {
        let shared = &shared;
        for worker in 0..WORKERS {
            s.spawn(move || run_worker(shared, worker, total_ops / WORKERS));
        }
        if outage {
            outage_took = cut_etcd(shared, total_ops);
        }
    });
    let elapsed = started.elapsed();

    let duplicates = shared.duplicates.lock().unwrap().clone();
    assert!(
        duplicates.is_empty(),
        "addresses handed out twice: {duplicates:#?}"
    );
    let wrong = shared.wrong_failures.lock().unwrap().clone();
    assert!(wrong.is_empty(), "failures other than code 11: {wrong:#?}");
    let live = shared.live.lock().unwrap().clone();
    let held_before = shared.backend.held();
    let leaked_before = held_before.len() - live.len();
    for (ip, id) in &live {
        assert_eq!(
            held_before.get(ip),
            Some(id),
            "live attachment {id} lost {ip}"
        );
    }

    for node in shared.nodes() {
        if outage {
            cni_gc(&shared, &node);
        } else {
            shared.backend.spiderctl_gc(&node);
        }
    }
    assert_eq!(
        shared.backend.held(),
        live,
        "after gc the store must hold exactly the live attachments"
    );

    eprintln!(
        "torture ({} store, {nodes} node(s)): {} ops by {WORKERS} processes at a time in {:.1}s, \
         {} SIGKILLs ({} landed after the ADD had finished), {} calls failed with code 11 during \
         an outage of {:.1}s, duplicates 0, leaked before gc {leaked_before}, after gc 0, live {}",
        match shared.backend {
            Backend::File { .. } => "file",
            Backend::Etcd(_) => "etcd",
        },
        shared.ops.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        shared.kills.load(Ordering::Relaxed),
        shared.finished_before_kill.load(Ordering::Relaxed),
        shared.unavailable.load(Ordering::Relaxed),
        outage_took.as_secs_f64(),
        live.len()
    );
}

/// Once a third of the run is done, kills etcd and restarts it after the workers saw enough
/// failures; returns how long it was down.
fn cut_etcd(shared: &Shared, total_ops: u64) -> Duration {
    let Backend::Etcd(etcd) = &shared.backend else {
        unreachable!("outages are for etcd");
    };
    poll(Duration::from_secs(120), "a third of the run", || {
        shared.ops.load(Ordering::Relaxed) >= total_ops / 3
    });
    etcd.server().stop();
    let down = Instant::now();
    let seen = shared.unavailable.load(Ordering::Relaxed);
    poll(RETRY_FOR, "failures while etcd is down", || {
        shared.unavailable.load(Ordering::Relaxed) >= seen + 2 * WORKERS
    });
    etcd.server().resume();
    down.elapsed()
}

fn poll(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within {within:?}");
        thread::sleep(RETRY_PAUSE);
    }
}

fn run_worker(shared: &Shared, worker: u64, ops: u64) {
    let node = shared.node_of(worker);
    let mut rng = Rng::new(worker);
    let mut mine: Vec<(String, IpAddr)> = Vec::new();
    for n in 0..ops {
        shared.ops.fetch_add(1, Ordering::Relaxed);
        let id = format!("w{worker}-{n}");
        if rng.below(KILL_ONE_IN) == 0 {
            kill_an_add(shared, &node, &id, &mut rng);
        } else if mine.is_empty() || (mine.len() < LIVE_PER_WORKER && rng.below(2) == 0) {
            if let Some(ip) = add(shared, &node, &id) {
                mine.push((id, ip));
            }
        } else {
            let (id, ip) = mine.swap_remove(rng.below(mine.len() as u64) as usize);
            // Forgotten before the DEL: once DEL starts, another worker may get it back.
            shared.live.lock().unwrap().remove(&ip);
            shared
                .attached
                .lock()
                .unwrap()
                .remove(&(node.clone(), id.clone()));
            // A DEL that cannot reach etcd is retried until it can, as runtimes do.
            let deadline = Instant::now() + RETRY_FOR;
            while !succeeded(
                shared,
                plugin(shared, &node, "DEL", &id, &shared.live_netns),
            ) {
                assert!(Instant::now() < deadline, "DEL {id} kept failing");
                thread::sleep(RETRY_PAUSE);
            }
        }
    }
}

/// Whether the call succeeded; see [`failed`].
fn succeeded(shared: &Shared, child: Child) -> bool {
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        failed(shared, &out);
    }
    out.status.success()
}

/// A failure must be code 11 (etcd down; counted); anything else is noted as wrong.
fn failed(shared: &Shared, out: &Output) {
    let error: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if error["code"] == 11 {
        shared.unavailable.fetch_add(1, Ordering::Relaxed);
    } else {
        shared
            .wrong_failures
            .lock()
            .unwrap()
            .push(format!("{out:?}"));
    }
}

/// An ADD; `None` if it failed (etcd down): what it may have taken is then a leak for GC,
/// like a runtime that gave up on the pod.
fn add(shared: &Shared, node: &str, id: &str) -> Option<IpAddr> {
    let started = Instant::now();
    let out = plugin(shared, node, "ADD", id, &shared.live_netns)
        .wait_with_output()
        .unwrap();
    if !out.status.success() {
        failed(shared, &out);
        return None;
    }
    let micros = started.elapsed().as_micros() as u64;
    let average = shared.add_micros.load(Ordering::Relaxed);
    shared
        .add_micros
        .store((average * 15 + micros) / 16, Ordering::Relaxed);
    let ip = address(&out.stdout);
    let mut live = shared.live.lock().unwrap();
    if let Some(holder) = live.insert(ip, id.to_owned()) {
        shared
            .duplicates
            .lock()
            .unwrap()
            .push(format!("{ip} given to {id} while {holder} holds it"));
    }
    shared
        .attached
        .lock()
        .unwrap()
        .insert((node.to_owned(), id.to_owned()));
    Some(ip)
}

/// An ADD for a pod that will never exist (its netns path is made up), killed at a random
/// point: whatever it leaves is a leak for gc, and must never be handed out twice.
fn kill_an_add(shared: &Shared, node: &str, id: &str, rng: &mut Rng) {
    let gone = format!("/run/netns/sptest-gone-{}-{id}", std::process::id());
    let mut child = plugin(shared, node, "ADD", id, &gone);
    // Fault injection: the delay picks where in the plugin's run the signal lands, anywhere
    // from exec to exit (an ADD's average wall time, plus a margin to also kill late).
    let run_time = shared.add_micros.load(Ordering::Relaxed) * 5 / 4;
    thread::sleep(Duration::from_micros(rng.below(run_time.max(1))));
    // The child may have finished already; then the kill is a no-op and it holds an address.
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    shared.kills.fetch_add(1, Ordering::Relaxed);
    if out.status.success() {
        shared.finished_before_kill.fetch_add(1, Ordering::Relaxed);
        let ip = address(&out.stdout);
        let live = shared.live.lock().unwrap();
        if let Some(holder) = live.get(&ip) {
            shared
                .duplicates
                .lock()
                .unwrap()
                .push(format!("{ip} given to killed {id} while {holder} holds it"));
        }
    }
    // The file store must read cleanly whatever point the kill hit (etcd applies a
    // transaction whole or not at all, and may be down on purpose).
    if let Backend::File { .. } = shared.backend {
        shared.backend.held();
    }
}

/// CNI GC as `node`'s runtime runs it: everything of that node not in its valid attachments
/// goes.
fn cni_gc(shared: &Shared, node: &str) {
    let valid: Vec<Value> = shared
        .attached
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| n == node)
        .map(|(_, id)| json!({"containerID": id, "ifname": "net1"}))
        .collect();
    let mut conf: Value = serde_json::from_slice(&shared.conf).unwrap();
    conf["cni.dev/valid-attachments"] = json!(valid);
    let mut child = Command::new(our_binary("spiderpool"))
        .env_clear()
        .env("CNI_COMMAND", "GC")
        .env("CNI_PATH", "/nonexistent")
        .env("SPIDERPOOL_NODE_NAME", node)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "GC as {node}: {out:?}");
}

fn plugin(shared: &Shared, node: &str, command: &str, id: &str, netns: &str) -> Child {
    let mut child = Command::new(our_binary("spiderpool"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/nonexistent")
        .env("SPIDERPOOL_NODE_NAME", node)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spiderpool runs");
    let mut stdin = child.stdin.take().unwrap();
    // A killed child may close its stdin first.
    let _ = stdin.write_all(&shared.conf);
    child
}

fn address(stdout: &[u8]) -> IpAddr {
    let result: Value = serde_json::from_slice(stdout).expect("ADD prints a result");
    let cidr = result["ips"][0]["address"].as_str().expect("an address");
    cidr.split('/').next().unwrap().parse().unwrap()
}

/// xorshift64*: reproducible per worker, no dependency.
struct Rng(u64);

impl Rng {
    fn new(worker: u64) -> Rng {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng((now ^ (worker + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
