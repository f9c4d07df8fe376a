//! The seed's 8-NIC pod through the libcni client: attach and detach time of the whole pod,
//! the eight chains one after another (as Multus runs them) and all eight at once (as
//! containerd's CRI does). Ours: the seed's conflists as `spiderctl apply` writes them
//! (macvlan MTU 1480 + spiderpool + coordinator with its gateway check). Reference: macvlan
//! MTU 1480 + host-local + sbr on the same eight rails.

use std::time::{Duration, Instant};

use netns_tests::conflist::{host_local, list, macvlan};
use netns_tests::paths::temp_dir;
use netns_tests::scenario::{Cluster, RAILS};
use netns_tests::{new_pod, Driver, Fabric, Invocation, Netns, Op, PluginDir, Rail, Source};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::quantile_ms;

/// One side of the comparison: how to make the invocation of rail N's chain for a pod.
trait Side: Sync {
    fn label(&self) -> &'static str;
    fn call<'a>(&'a self, rail: u8, pod: &Netns, id: &str) -> Invocation<'a>;
}

struct Ours {
    cluster: Cluster,
    conflists: Vec<Value>,
}

impl Side for Ours {
    fn label(&self) -> &'static str {
        "ours: macvlan + spiderpool + coordinator"
    }

    fn call<'a>(&'a self, rail: u8, pod: &Netns, id: &str) -> Invocation<'a> {
        let conflist = &self.conflists[usize::from(rail - 1)];
        self.cluster
            .call(1, conflist, pod, &format!("net{rail}"), id)
    }
}

struct Reference {
    fabric: Fabric,
    plugins: PluginDir,
    conflists: Vec<Value>,
    cache: TempDir,
    _state: TempDir,
}

impl Reference {
    fn new() -> Reference {
        let rails: Vec<Rail> = RAILS.map(Rail::new).collect();
        let state = temp_dir("bench-pod8-reference");
        let conflists = RAILS
            .map(|n| {
                let ipam = host_local(n, 1, 200, &state.path().join(format!("rail{n}")));
                let mut plugin = macvlan(n, ipam);
                plugin["mtu"] = json!(1480);
                list(
                    "1.0.0",
                    &format!("gpu{n}-reference"),
                    &[plugin, json!({"type": "sbr"})],
                )
            })
            .collect();
        Reference {
            fabric: Fabric::build(1, &rails),
            plugins: PluginDir::new(&[
                ("macvlan", Source::Reference),
                ("host-local", Source::Reference),
                ("sbr", Source::Reference),
            ]),
            conflists,
            cache: temp_dir("bench-pod8-cache"),
            _state: state,
        }
    }
}

impl Side for Reference {
    fn label(&self) -> &'static str {
        "reference: macvlan + host-local + sbr"
    }

    fn call<'a>(&'a self, rail: u8, pod: &Netns, id: &str) -> Invocation<'a> {
        Invocation::new(
            self.fabric.node(1),
            &self.conflists[usize::from(rail - 1)],
            &self.plugins,
            self.cache.path(),
        )
        .netns(pod)
        .ifname(&format!("net{rail}"))
        .container_id(id)
        .cni_args(&format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={id}"
        ))
    }
}

/// Medians over the pods, in ms, and how many chain calls failed.
struct PodFigures {
    attach: f64,
    detach: f64,
    failures: usize,
}

/// Runs `op` on the eight chains of `pod`, serially or all at once; the number of failures.
fn whole_pod(side: &dyn Side, pod: &Netns, id: &str, op: Op, at_once: bool) -> usize {
    let driver = Driver::get();
    let run = |rail: u8| !driver.run(op, &side.call(rail, pod, id)).success;
    if !at_once {
        return RAILS.filter(|&n| run(n)).count();
    }
    std::thread::scope(|s| {
        let runs: Vec<_> = RAILS.map(|n| s.spawn(move || run(n))).collect();
        runs.into_iter()
            .map(|r| r.join().expect("chain thread"))
            .filter(|failed| *failed)
            .count()
    })
}

fn measure(side: &dyn Side, pods: usize, at_once: bool) -> PodFigures {
    let mut attach = Vec::with_capacity(pods);
    let mut detach = Vec::with_capacity(pods);
    let mut failures = 0;
    for i in 0..pods {
        let pod = new_pod();
        let id = format!("pod8-{i}");
        let started = Instant::now();
        failures += whole_pod(side, &pod, &id, Op::Add, at_once);
        attach.push(started.elapsed());
        let started = Instant::now();
        failures += whole_pod(side, &pod, &id, Op::Del, at_once);
        detach.push(started.elapsed());
    }
    PodFigures {
        attach: median(attach),
        detach: median(detach),
        failures,
    }
}

fn median(mut samples: Vec<Duration>) -> f64 {
    quantile_ms(&mut samples, 0.5)
}

/// The table: for each way of attaching, ours, the reference and the ratio.
pub fn run(pods: usize) {
    let rails: Vec<Rail> = RAILS.map(Rail::new).collect();
    let cluster = Cluster::new(&rails, 1);
    let conflists = RAILS.map(|n| cluster.rail_conflist(1, n, true)).collect();
    let ours = Ours { cluster, conflists };
    let reference = Reference::new();
    println!("| 8-NIC pod | chains | attach median ms | detach median ms | failed calls |");
    println!("|---|---|---|---|---|");
    for (at_once, how) in [(false, "one after another"), (true, "all 8 at once")] {
        let a = measure(&ours, pods, at_once);
        let b = measure(&reference, pods, at_once);
        for (side, f) in [(&ours as &dyn Side, &a), (&reference, &b)] {
            println!(
                "| {} | {how} | {:.1} | {:.1} | {} |",
                side.label(),
                f.attach,
                f.detach,
                f.failures
            );
        }
        println!(
            "| **ratio ours / reference** | {how} | **{:.2}** | **{:.2}** | |",
            a.attach / b.attach,
            a.detach / b.detach
        );
    }
    println!(
        "\n{pods} pods per row, each a fresh netns on one node with the seed's eight rails, \
         through the libcni client (one process per chain, as a runtime calls them); a pod's \
         time is from its first ADD to its last answer."
    );
}
