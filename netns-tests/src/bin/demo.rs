//! The README's demo: the seed scenario on throw-away namespaces. Two nodes with the eight
//! rails; `spiderctl apply -f conf/seed` (the seed's YAML for eight GPUs) and `spiderctl
//! doctor`; a pod per node (like the rdma-tools DaemonSet) attached through the libcni client
//! as Multus does: `eth0`, then `net1`..`net8` (macvlan + spiderpool + coordinator). It prints
//! what the seed prints, pings every rail across the nodes, shows the pools, detaches
//! everything and removes every namespace.

use std::process::{Command, ExitCode};

use netns_tests::paths::workspace_root;
use netns_tests::plugins::our_binary;
use netns_tests::probe::ping_from;
use netns_tests::scenario::{ip_in, Cluster, RAILS};
use netns_tests::Rail;

fn main() -> ExitCode {
    step("building two nodes with eight rails (masters enp11s0f0np0 .. enp18s0f0np0)");
    let rails: Vec<Rail> = RAILS.map(Rail::new).collect();
    let cluster = Cluster::new(&rails, 2);

    step("spiderctl apply -f conf/seed (done while building): what it wrote");
    for dir in [
        cluster.dirs(1).pools.path(),
        cluster.dirs(1).conflists.path(),
    ] {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        println!("{}", names.join("\n"));
    }
    print!(
        "{}",
        serde_json::to_string_pretty(&cluster.rail_conflist(1, 1, true)).expect("JSON") + "\n"
    );

    step("spiderctl doctor, on node 1");
    let rdma_config = workspace_root().join("conf/rdma/config.json");
    let doctor = cluster
        .fabric
        .node(1)
        .command(&[
            &*our_binary("spiderctl").to_string_lossy(),
            "doctor",
            "--cni-conf-dir",
            &cluster.dirs(1).conflists.path().to_string_lossy(),
            "--ippool-dir",
            &cluster.dirs(1).pools.path().to_string_lossy(),
            "--rdma-config",
            &rdma_config.to_string_lossy(),
        ])
        .status();
    let doctor_ok = doctor.is_ok_and(|s| s.success());

    step("attaching a pod on each node: eth0, then net1..net8 through libcni");
    let (pod1, ips1) = cluster.pod(1, "rdma-tools-node1", true);
    let (pod2, ips2) = cluster.pod(2, "rdma-tools-node2", true);

    step("pod on node 1: ip a");
    print!("{}", ip_in(&pod1, &["-br", "addr", "show"]));
    step("pod on node 1: ip rule");
    print!("{}", ip_in(&pod1, &["rule"]));
    step("pod on node 1: ip route show table 101");
    print!("{}", ip_in(&pod1, &["route", "show", "table", "101"]));
    step("pod on node 1: ip route show table main");
    print!("{}", ip_in(&pod1, &["route", "show", "table", "main"]));

    step("ping from the pod on node 1 to the pod on node 2, bound to each netN");
    let mut all_reached = true;
    for (n, (from, to)) in RAILS.zip(ips1.iter().zip(&ips2)) {
        let dev = format!("net{n}");
        let reached = ping_from(&pod1, Some(&dev), *to, 3);
        all_reached &= reached;
        let verdict = if reached { "reply" } else { "NO REPLY" };
        println!("rail {n}: {from} -> {to} via {dev}: {verdict}");
    }

    step("spiderctl status");
    let status = Command::new(our_binary("spiderctl"))
        .args(["status", "--ippool-dir"])
        .arg(cluster.dirs(1).pools.path())
        .arg("--data-dir")
        .arg(cluster.dirs(1).data.path())
        .status();
    let status_ok = status.is_ok_and(|s| s.success());

    step("detaching both pods (CNI DEL) and removing every namespace");
    cluster.detach(1, &pod1, "rdma-tools-node1", true);
    cluster.detach(2, &pod2, "rdma-tools-node2", true);
    let held = cluster.held();
    println!("addresses still held: {held}");

    if doctor_ok && all_reached && status_ok && held == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn step(what: &str) {
    println!("\n==> {what}");
}
