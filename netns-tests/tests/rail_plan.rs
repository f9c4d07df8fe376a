//! Issue 16's rail plan: pools chosen per node. Four nodes, eight routed rails: on each rail
//! every node has a /27 of its own (`netns_tests::rail_plan`) behind its own gateway on the
//! rail's bridge, the rail namespace routing between them; the networks pick the node's pool
//! with `gpu<r>-*`. On the file store each node has its own store, on etcd all share one;
//! the pools are bound by `nodeName` or by `nodeAffinity`. Plus the control (the seed's
//! shared pools on two node-local stores collide, and spiderctl says so) and a node no pool
//! serves. Run as root after `cargo build --release`.

use std::net::Ipv4Addr;
use std::process::Output;

use netns_tests::etcd::TestEtcd;
use netns_tests::paths::temp_dir;
use netns_tests::probe::{forwarded_datagrams, link_names, ping_from, route_get, tx_packets};
use netns_tests::rail_plan::{self, Binding};
use netns_tests::scenario::{address_of, node_name, Cluster, Setup, Stores, RAILS};
use netns_tests::{new_pod, Driver, Netns, Op, Rail};

const NODES: usize = 4;
const UNBOUND: &str = "two nodes would hand out the same addresses";

fn rails() -> Vec<Rail> {
    RAILS.map(|n| Rail::new(n).without_gateway()).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The details of doctor's rows with `status`, `check` and `subject` (its columns).
fn doctor_details(report: &str, status: &str, check: &str, subject: &str) -> Vec<String> {
    report
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() > 3 && cols[..3] == [status, check, subject]).then(|| cols[3..].join(" "))
        })
        .collect()
}

#[test]
fn rail_plan_on_node_local_file_stores_bound_by_node_name() {
    let dir = temp_dir("rail-plan");
    let manifests = rail_plan::write_manifests(dir.path(), NODES, Binding::NodeName);
    let cluster = Cluster::with(
        &rails(),
        NODES,
        Setup::manifests(&manifests, Stores::PerNode),
    );
    for k in 1..=NODES {
        let applied = &cluster.dirs(k).applied;
        assert!(!stderr(applied).contains(UNBOUND), "node{k}: {applied:?}");
        let doctor = stdout(&cluster.doctor(k));
        assert!(!doctor.contains(UNBOUND), "node{k}:\n{doctor}");
        // Doctor, as this node, finds exactly its own pool behind each `gpu<r>-*`.
        for n in RAILS {
            let network = format!("gpu{n}-macvlan");
            assert_eq!(
                doctor_details(&doctor, "ok", "pools", &network),
                [format!("{} (29 addresses)", rail_plan::pool_name(n, k))],
                "node{k}:\n{doctor}"
            );
        }
    }
    routed_rail_plan(&cluster);
}

#[test]
fn rail_plan_on_the_etcd_store_bound_by_node_affinity() {
    let dir = temp_dir("rail-plan-etcd");
    let manifests = rail_plan::write_manifests(dir.path(), NODES, Binding::NodeAffinity);
    let setup = Setup::manifests(&manifests, Stores::Etcd(TestEtcd::get()))
        .node_labels((1..=NODES).map(rail_plan::node_labels).collect());
    routed_rail_plan(&Cluster::with(&rails(), NODES, setup));
}

/// Every node's pod gets its node's address on each rail, and a ping from each netN's
/// address reaches the next node's pod through the rail's gateway, request and reply each
/// leaving by netN via its own node's gateway.
fn routed_rail_plan(cluster: &Cluster) {
    for n in RAILS {
        cluster.fabric.route(n, &rail_plan::gateways(n, NODES));
    }
    let pods: Vec<(Netns, Vec<Ipv4Addr>)> = (1..=NODES)
        .map(|k| cluster.pod(k, &format!("rails-{}", node_name(k)), true))
        .collect();
    for (k, (_, ips)) in (1..=NODES).zip(&pods) {
        for (n, ip) in RAILS.zip(ips) {
            assert!(
                rail_plan::in_subnet(n, k, *ip),
                "node{k} net{n} got {ip}, outside {}/{}",
                rail_plan::subnet_base(n, k),
                rail_plan::PREFIX_LEN
            );
        }
    }

    for k in 1..=NODES {
        let peer = k % NODES + 1;
        let ((pod, ips), (peer_pod, peer_ips)) = (&pods[k - 1], &pods[peer - 1]);
        for n in RAILS {
            let (dev, i) = (format!("net{n}"), usize::from(n - 1));
            let (from, to) = (ips[i], peer_ips[i]);
            let rail = cluster.fabric.rail(n);
            let sent_before = tx_packets(pod, &dev);
            let (tx_before, forwarded_before) =
                (tx_packets(peer_pod, &dev), forwarded_datagrams(rail));
            // Bound to netN's address, so the request is routed by netN's table too (bound
            // to the device alone, ping's packets would take the main table, which has no
            // route to another subnet on netN, and go on-link around the gateway).
            assert!(
                ping_from(pod, Some(&from.to_string()), to, 3),
                "rail {n}: node{k} {from} -> node{peer} {to} got no reply"
            );
            assert!(
                tx_packets(pod, &dev) > sent_before,
                "rail {n}: node{k}'s request did not leave by {dev}"
            );
            assert!(
                tx_packets(peer_pod, &dev) > tx_before,
                "rail {n}: node{peer}'s reply did not leave by {dev}"
            );
            // Request and reply were both routed by the rail.
            let forwarded = forwarded_datagrams(rail) - forwarded_before;
            assert!(
                forwarded >= 2,
                "rail {n}: the gateway forwarded {forwarded} packets"
            );
            for (ns, node, src, dst) in [(pod, k, from, to), (peer_pod, peer, to, from)] {
                let route = route_get(ns, dst, src);
                assert_eq!(route["dev"], dev.as_str(), "rail {n}, node{node}: {route}");
                assert_eq!(
                    route["gateway"],
                    rail_plan::gateway(n, node).to_string(),
                    "rail {n}: node{node} must route {src} -> {dst} by its gateway: {route}"
                );
            }
        }
    }

    for (k, (pod, _)) in (1..=NODES).zip(&pods) {
        cluster.detach(k, pod, &format!("rails-{}", node_name(k)), true);
    }
    assert_eq!(cluster.held(), 0, "pools must be empty after DEL");
}

/// The control: the seed's cluster-wide pools on two node-local stores both hand out
/// `172.16.11.1`; `apply` and `doctor` warn of every such pool.
#[test]
fn shared_pools_on_node_local_stores_collide_and_spiderctl_warns() {
    let rails: Vec<Rail> = RAILS.map(Rail::new).collect();
    let cluster = Cluster::with(&rails, 2, Setup::seed(Stores::PerNode));
    for k in 1..=2 {
        let applied = stderr(&cluster.dirs(k).applied);
        let report = stdout(&cluster.doctor(k));
        for n in RAILS {
            let pool = format!("gpu{n}-net1{n}");
            let network = format!("gpu{n}-macvlan");
            assert!(
                applied.lines().any(|l| l.starts_with("warning:")
                    && l.contains(&network)
                    && l.contains(&pool)
                    && l.contains(UNBOUND)),
                "node{k}: apply does not warn of {pool}:\n{applied}"
            );
            let warned = doctor_details(&report, "warn", "pools", &network);
            assert!(
                warned
                    .iter()
                    .any(|w| w.contains(&pool) && w.contains(UNBOUND)),
                "node{k}: doctor does not warn of {pool}:\n{report}"
            );
        }
    }
    let first: Vec<(Netns, Ipv4Addr)> = (1..=2)
        .map(|k| {
            let pod = new_pod();
            let call = cluster.call(
                k,
                &cluster.rail_conflist(k, 1, true),
                &pod,
                "net1",
                "shared",
            );
            let added = Driver::get().run(Op::Add, &call);
            (pod, address_of(&added))
        })
        .collect();
    assert_eq!(first[0].1, Ipv4Addr::new(172, 16, 11, 1));
    assert_eq!(
        first[0].1, first[1].1,
        "each node's store hands out the same first address"
    );
    for (k, (pod, _)) in (1..=2).zip(&first) {
        let call = cluster.call(k, &cluster.rail_conflist(k, 1, true), pod, "net1", "shared");
        Driver::get().run(Op::Del, &call).expect_ok();
    }
    assert_eq!(cluster.held(), 0);
}

/// node5 has no pool in the plan: its ADD is refused with code 110 naming each pool and why,
/// and leaves no link and no allocation.
#[test]
fn a_node_no_pool_serves_gets_code_110_naming_every_excluded_pool() {
    let dir = temp_dir("rail-plan-node5");
    let manifests = rail_plan::write_manifests(dir.path(), NODES, Binding::NodeName);
    let cluster = Cluster::with(
        &[Rail::new(1).without_gateway()],
        NODES + 1,
        Setup::manifests(&manifests, Stores::PerNode),
    );
    let pod = new_pod();
    let call = cluster.call(
        5,
        &cluster.rail_conflist(5, 1, true),
        &pod,
        "net1",
        "nowhere",
    );
    let failed = Driver::get().run(Op::Add, &call);
    let why: Vec<String> = (1..=NODES)
        .map(|k| format!("gpu1-node{k}: nodeName [node{k}] does not include node5"))
        .collect();
    let fragments: Vec<&str> = why.iter().map(String::as_str).collect();
    let msg = failed.expect_error(110, &fragments);
    eprintln!("node5's ADD: code 110: {msg}");
    // Doctor on node5 predicts it.
    let doctor = stdout(&cluster.doctor(5));
    let failed = doctor_details(&doctor, "FAIL", "pools", "gpu1-macvlan");
    assert!(
        failed
            .iter()
            .any(|f| f.contains("no pool serves node node5")
                && fragments.iter().all(|w| f.contains(w))),
        "{doctor}"
    );
    assert_eq!(link_names(&pod), ["lo"]);
    assert_eq!(cluster.held(), 0);
    // The runtime's DEL after the failed ADD.
    Driver::get().run(Op::Del, &call).expect_ok();
    assert_eq!(link_names(&pod), ["lo"]);
    assert_eq!(cluster.held(), 0);
}
