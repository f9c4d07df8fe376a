//! Torture of the spiderpool IPAM plugin: 32 concurrent workers run real plugin processes
//! allocating and releasing on one pool, and 5% of the allocations are SIGKILLed at a random
//! point. Checked throughout: no address is ever held by two live attachments, and the store
//! opens cleanly after every kill. Checked at the end: after `spiderctl gc --apply` the held set
//! is exactly the live set.
//!
//! `TORTURE_OPS` sets the number of operations (default 10,000, under a minute here; a bench
//! machine can run 100,000). Run as root after `cargo build --release`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipam_store::FileStore;
use netns_tests::paths::temp_dir;
use netns_tests::plugins::our_binary;
use netns_tests::Netns;
use serde_json::{json, Value};

const WORKERS: u64 = 32;
const POOL: &str = "torture";
const POOL_SIZE: usize = 1023;
/// Each worker keeps up to this many attachments alive, so releases interleave with claims.
const LIVE_PER_WORKER: usize = 3;
/// One allocation in this many is killed.
const KILL_ONE_IN: u64 = 20;

/// Everything the workers share.
struct Shared {
    conf: Vec<u8>,
    data_dir: PathBuf,
    /// Where live attachments say their pod is: a real namespace, so gc keeps them.
    live_netns: String,
    /// ip -> container id, for every attachment a worker holds and has not released.
    live: Mutex<BTreeMap<IpAddr, String>>,
    ops: AtomicU64,
    /// Running average of an ADD's wall time under this load, in µs: kills are spread over it.
    add_micros: AtomicU64,
    kills: AtomicU64,
    /// Killed ADDs that had finished before the signal landed: leaks gc must find too.
    finished_before_kill: AtomicU64,
    duplicates: Mutex<Vec<String>>,
}

#[test]
fn concurrent_processes_with_kills_never_hand_out_an_address_twice() {
    let total_ops: u64 = std::env::var("TORTURE_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let scratch = temp_dir("torture");
    let pools = scratch.path().join("pools");
    fs::create_dir(&pools).unwrap();
    fs::write(
        pools.join("torture.yaml"),
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  name: torture\n\
         spec:\n  subnet: 10.200.0.0/16\n  ips:\n    - 10.200.0.1-10.200.3.255\n",
    )
    .unwrap();
    let alive = Netns::new("alive");
    let shared = Shared {
        conf: json!({
            "cniVersion": "1.0.0", "name": "torture", "type": "macvlan",
            "ipam": {
                "type": "spiderpool", "default_ipv4_ippool": [POOL],
                "ippool_dir": pools, "data_dir": scratch.path().join("data"),
            },
        })
        .to_string()
        .into_bytes(),
        data_dir: scratch.path().join("data"),
        live_netns: alive.path().to_string_lossy().into_owned(),
        live: Mutex::new(BTreeMap::new()),
        ops: AtomicU64::new(0),
        add_micros: AtomicU64::new(5_000),
        kills: AtomicU64::new(0),
        finished_before_kill: AtomicU64::new(0),
        duplicates: Mutex::new(Vec::new()),
    };

    let started = Instant::now();
    thread::scope(|s| {
        for worker in 0..WORKERS {
            let shared = &shared;
            s.spawn(move || run_worker(shared, worker, total_ops / WORKERS));
        }
    });
    let elapsed = started.elapsed();

    let duplicates = shared.duplicates.lock().unwrap().clone();
    assert!(
        duplicates.is_empty(),
        "addresses handed out twice: {duplicates:#?}"
    );
    let live = shared.live.into_inner().unwrap();
    let held_before = held(&shared.data_dir);
    let leaked_before = held_before.len() - live.len();
    for (ip, id) in &live {
        assert_eq!(
            held_before.get(ip),
            Some(id),
            "live attachment {id} lost {ip}"
        );
    }

    let gc = Command::new(our_binary("spiderctl"))
        .args(["gc", "--apply", "--data-dir"])
        .arg(&shared.data_dir)
        .output()
        .unwrap();
    assert!(gc.status.success(), "spiderctl gc: {gc:?}");
    let held_after = held(&shared.data_dir);
    assert_eq!(
        held_after, live,
        "after gc the store must hold exactly the live attachments"
    );

    eprintln!(
        "torture: {} ops by {WORKERS} processes at a time in {:.1}s, {} SIGKILLs ({} landed after \
         the ADD had finished), duplicates 0, leaked before gc {leaked_before}, after gc 0, \
         live {}",
        shared.ops.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        shared.kills.load(Ordering::Relaxed),
        shared.finished_before_kill.load(Ordering::Relaxed),
        live.len()
    );
}

fn run_worker(shared: &Shared, worker: u64, ops: u64) {
    let mut rng = Rng::new(worker);
    let mut mine: Vec<(String, IpAddr)> = Vec::new();
    for n in 0..ops {
        shared.ops.fetch_add(1, Ordering::Relaxed);
        let id = format!("w{worker}-{n}");
        if rng.below(KILL_ONE_IN) == 0 {
            kill_an_add(shared, &id, &mut rng);
        } else if mine.is_empty() || (mine.len() < LIVE_PER_WORKER && rng.below(2) == 0) {
            let ip = add(shared, &id);
            mine.push((id, ip));
        } else {
            let (id, ip) = mine.swap_remove(rng.below(mine.len() as u64) as usize);
            // Forgotten before the DEL: once DEL starts, another worker may get it back.
            shared.live.lock().unwrap().remove(&ip);
            let out = plugin(shared, "DEL", &id, &shared.live_netns)
                .wait_with_output()
                .unwrap();
            assert!(out.status.success(), "DEL {id}: {out:?}");
        }
    }
}

fn add(shared: &Shared, id: &str) -> IpAddr {
    let out = plugin(shared, "ADD", id, &shared.live_netns)
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "ADD {id}: {out:?}");
    let ip = address(&out.stdout);
    let mut live = shared.live.lock().unwrap();
    if let Some(holder) = live.insert(ip, id.to_owned()) {
        shared
            .duplicates
            .lock()
            .unwrap()
            .push(format!("{ip} given to {id} while {holder} holds it"));
    }
    ip
}

/// An ADD for a pod that will never exist (its netns path is made up), killed at a random
/// point: whatever it leaves is a leak for gc, and must never be handed out twice.
fn kill_an_add(shared: &Shared, id: &str, rng: &mut Rng) {
    let gone = format!("/run/netns/sptest-gone-{}-{id}", std::process::id());
    let mut child = plugin(shared, "ADD", id, &gone);
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
    // The store must open and read cleanly whatever point the kill hit.
    let store = FileStore::open(&shared.data_dir).expect("store opens after a kill");
    store.held(POOL).expect("pool reads after a kill");
}

fn plugin(shared: &Shared, command: &str, id: &str, netns: &str) -> Child {
    let mut child = Command::new(our_binary("spiderpool"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/nonexistent")
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

/// ip -> container id of every address the store holds.
fn held(data_dir: &Path) -> BTreeMap<IpAddr, String> {
    let store = FileStore::open(data_dir).unwrap();
    let held = store.held(POOL).unwrap();
    assert!(held.len() <= POOL_SIZE);
    held.into_iter()
        .map(|(ip, record)| (ip, record.owner.container_id))
        .collect()
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
