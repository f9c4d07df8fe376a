//! The README's demo: a throw-away node with the seed's first rail, a pod
//! attached through the libcni client exactly as Multus would, its interfaces,
//! a ping to the rail's gateway, and DEL. Every namespace is removed on exit.

use std::process::ExitCode;

use netns_tests::conflist::{host_local, list, macvlan};
use netns_tests::paths::temp_dir;
use netns_tests::probe::ping_from;
use netns_tests::{new_pod, Driver, Fabric, Invocation, Op, PluginDir, Rail, Source};

fn main() -> ExitCode {
    let fabric = Fabric::build(1, &[Rail::new(1)]);
    let pod = new_pod();
    let (ipam_dir, cache_dir) = (temp_dir("demo-ipam"), temp_dir("demo-cache"));
    let plugins = PluginDir::new(&[("macvlan", Source::Ours), ("host-local", Source::Reference)]);
    let conflist = list(
        "1.0.0",
        "macvlan-conf-1",
        &[macvlan(1, host_local(1, 1, 200, ipam_dir.path()))],
    );
    let node = fabric.node(1);
    let call = Invocation::new(node, &conflist, &plugins, cache_dir.path())
        .netns(&pod)
        .ifname("net1")
        .cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=demo-pod");

    step(&format!(
        "node {} with master {} (MTU 1500); rail gateway {}",
        node.name(),
        fabric.master(1),
        fabric.gateway(1)
    ));
    println!("{}", serde_json::to_string_pretty(&conflist).expect("JSON"));

    step("CNI ADD through libcni (our macvlan, reference host-local)");
    let driver = Driver::get();
    let added = driver.run(Op::Add, &call);
    if !added.success {
        eprintln!("ADD failed: {}", added.stdout);
        return ExitCode::FAILURE;
    }
    println!("{}", added.stdout.trim());

    step(&format!("interfaces of pod netns {}", pod.name()));
    match pod.ip(&["-br", "addr", "show"]) {
        Ok(out) => print!("{out}"),
        Err(e) => eprintln!("{e}"),
    }

    step("ping the gateway from the pod through net1");
    let reached = ping_from(&pod, Some("net1"), fabric.gateway(1), 3);
    println!(
        "{}",
        if reached {
            "gateway answered"
        } else {
            "NO ANSWER"
        }
    );

    step("CNI CHECK, then DEL");
    let checked = driver.run(Op::Check, &call);
    let deleted = driver.run(Op::Del, &call);
    for (op, outcome) in [("CHECK", &checked), ("DEL", &deleted)] {
        let verdict = if outcome.success {
            "ok"
        } else {
            outcome.stdout.trim()
        };
        println!("{op}: {verdict}");
    }

    step("cleaning up the demo's namespaces");
    if reached && checked.success && deleted.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn step(what: &str) {
    println!("\n==> {what}");
}
