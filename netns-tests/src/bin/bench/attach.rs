//! ADD and DEL timings of our plugins next to the reference ones, in one run on
//! the same netns topology.
//!
//! Each scenario gets a fresh node and N fresh pods; ADD runs for all N pods,
//! then DEL for all N, each call timed on its own. Two ways to call: through
//! the libcni client (what a runtime pays, Go start-up included) and by direct
//! exec of the first plugin (what the plugins themselves cost).

use std::time::{Duration, Instant};

use netns_tests::conflist::{host_local, list, macvlan};
use netns_tests::paths::temp_dir;
use netns_tests::{
    exec_plugin, new_pod, Driver, Fabric, Invocation, Netns, Op, Outcome, PluginDir, Rail, Source,
};
use serde_json::Value;

use crate::quantile_ms;

struct Scenario {
    label: &'static str,
    plugins: [(&'static str, Source); 2],
}

#[derive(Clone, Copy)]
enum Via {
    Libcni,
    Exec,
}

/// Median and p95 of ADD and DEL, in milliseconds.
struct Figures {
    add: (f64, f64),
    del: (f64, f64),
}

/// Prints the markdown table for `n` pods per scenario.
pub fn run(n: usize) {
    let scenarios = [
        Scenario {
            label: "ours: macvlan + reference host-local",
            plugins: [("macvlan", Source::Ours), ("host-local", Source::Reference)],
        },
        Scenario {
            label: "reference: macvlan + host-local",
            plugins: [
                ("macvlan", Source::Reference),
                ("host-local", Source::Reference),
            ],
        },
    ];
    println!("| scenario | via | ADD median ms | ADD p95 ms | DEL median ms | DEL p95 ms |");
    println!("|---|---|---|---|---|---|");
    for via in [Via::Libcni, Via::Exec] {
        let figures: Vec<Figures> = scenarios.iter().map(|s| measure(s, via, n)).collect();
        for (scenario, f) in scenarios.iter().zip(&figures) {
            row(scenario.label, via, f);
        }
        let (ours, reference) = (&figures[0], &figures[1]);
        println!(
            "| **ratio ours / reference** | {} | **{:.2}** | | **{:.2}** | |",
            via_name(via),
            ours.add.0 / reference.add.0,
            ours.del.0 / reference.del.0
        );
    }
    println!("\nN = {n} pods per scenario, sequential: all ADDs, then all DELs.");
}

fn measure(scenario: &Scenario, via: Via, n: usize) -> Figures {
    let fabric = Fabric::build(1, &[Rail::new(1)]);
    let node = fabric.node(1);
    let (ipam_dir, cache_dir) = (temp_dir("bench-ipam"), temp_dir("bench-cache"));
    let plugins = PluginDir::new(&scenario.plugins);
    let last = u8::try_from(n.min(250)).expect("fits");
    let conflist = list(
        "1.0.0",
        "bench",
        &[macvlan(1, host_local(1, 1, last, ipam_dir.path()))],
    );
    let pods: Vec<Netns> = (0..n).map(|_| new_pod()).collect();
    let calls: Vec<Invocation> = pods
        .iter()
        .map(|pod| Invocation::new(node, &conflist, &plugins, cache_dir.path()).netns(pod))
        .collect();
    let time_all = |op: Op| -> Vec<Duration> {
        calls
            .iter()
            .map(|call| {
                let start = Instant::now();
                let outcome = match via {
                    Via::Libcni => Driver::get().run(op, call),
                    Via::Exec => exec(node, &plugins, &conflist, call, op),
                };
                let took = start.elapsed();
                outcome.expect_ok();
                took
            })
            .collect()
    };
    let add = time_all(Op::Add);
    let del = time_all(Op::Del);
    Figures {
        add: median_p95(add),
        del: median_p95(del),
    }
}

/// The first plugin of `conflist`, run directly with the list's name and
/// version merged into its config, as libcni would hand it over.
fn exec(node: &Netns, plugins: &PluginDir, conflist: &Value, call: &Invocation, op: Op) -> Outcome {
    let mut conf = conflist["plugins"][0].clone();
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    let command = match op {
        Op::Add => "ADD",
        Op::Del => "DEL",
        other => panic!("bench does not time {other:?}"),
    };
    let netns = call.netns_str();
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", call.id()),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", plugins.path().to_str().expect("UTF-8 path")),
    ];
    let name = conf["type"].as_str().expect("plugin type").to_owned();
    exec_plugin(node, plugins, &name, &env, conf.to_string().as_bytes())
}

fn median_p95(mut samples: Vec<Duration>) -> (f64, f64) {
    (
        quantile_ms(&mut samples, 0.5),
        quantile_ms(&mut samples, 0.95),
    )
}

fn via_name(via: Via) -> &'static str {
    match via {
        Via::Libcni => "libcni",
        Via::Exec => "exec",
    }
}

fn row(label: &str, via: Via, f: &Figures) {
    println!(
        "| {label} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        via_name(via),
        f.add.0,
        f.add.1,
        f.del.0,
        f.del.1
    );
}
