//! The seed scenario: two nodes, eight rails, and a pod on each node with a cluster NIC and
//! eight macvlan NICs (see `netns_tests::scenario`). All eight pools share 172.16.0.0/16, so
//! only the policy routing keeps replies on the NIC they belong to; plus the coordinator's
//! edges. Run as root after `cargo build --release`.

use netns_tests::etcd::TestEtcd;
use netns_tests::probe::{link_mtu, link_names, ping_from, route_dev, tx_packets};
use netns_tests::scenario::{ip_in, Cluster, RAILS};
use netns_tests::{new_pod, Driver, Op, Rail};
use serde_json::{json, Value};

#[test]
fn eight_rails_two_nodes_policy_routing_keeps_replies_on_their_nic() {
    let rails: Vec<Rail> = RAILS.map(Rail::new).collect();
    eight_rails_two_nodes(&Cluster::new(&rails, 2));
}

/// The same with the etcd store: both nodes allocate from the same pools in etcd.
#[test]
fn eight_rails_two_nodes_on_the_etcd_store() {
    let rails: Vec<Rail> = RAILS.map(Rail::new).collect();
    eight_rails_two_nodes(&Cluster::with_etcd(&rails, 2, TestEtcd::get()));
}

fn eight_rails_two_nodes(cluster: &Cluster) {
    let (pod1, ips1) = cluster.pod(1, "pod-node1", true);
    let (pod2, ips2) = cluster.pod(2, "pod-node2", true);

    for (pod, ips) in [(&pod1, &ips1), (&pod2, &ips2)] {
        let mut names = link_names(pod);
        names.sort();
        let mut want: Vec<String> = ["lo", "eth0"].iter().map(|s| s.to_string()).collect();
        want.extend(RAILS.map(|n| format!("net{n}")));
        want.sort();
        assert_eq!(names, want);
        for n in RAILS {
            assert_eq!(link_mtu(pod, &format!("net{n}")), Some(1480), "net{n}");
        }
        // Eight rules with distinct tables, each table's default via its rail's gateway.
        let rules = ip_in(pod, &["-4", "rule", "show"]);
        for (n, ip) in RAILS.zip(ips) {
            let table = 100 + u32::from(n);
            assert!(
                rules.contains(&format!("from {ip} lookup {table}")),
                "rule for net{n} missing:\n{rules}"
            );
            let routes = ip_in(pod, &["route", "show", "table", &table.to_string()]);
            assert!(
                routes.contains(&format!("default via 172.16.1{n}.254 dev net{n}")),
                "table {table}:\n{routes}"
            );
        }
        let main = ip_in(pod, &["route", "show", "table", "main"]);
        let defaults: Vec<&str> = main.lines().filter(|l| l.starts_with("default")).collect();
        assert_eq!(defaults.len(), 1, "main:\n{main}");
        assert!(defaults[0].contains("dev eth0"), "main:\n{main}");
    }
    eprintln!(
        "pod on node 1:\n$ ip rule\n{}$ ip route show table 101\n{}$ ip route show table main\n{}",
        ip_in(&pod1, &["rule"]),
        ip_in(&pod1, &["route", "show", "table", "101"]),
        ip_in(&pod1, &["route", "show", "table", "main"])
    );

    // Every rail carries a ping bound to its NIC, and the reply leaves by that NIC.
    for n in RAILS {
        let dev = format!("net{n}");
        let i = usize::from(n - 1);
        let before = tx_packets(&pod2, &dev);
        assert!(
            ping_from(&pod1, Some(&dev), ips2[i], 3),
            "rail {n}: {} -> {} got no reply",
            ips1[i],
            ips2[i]
        );
        assert!(
            tx_packets(&pod2, &dev) > before,
            "rail {n}: the reply did not leave by {dev}"
        );
        assert_eq!(route_dev(&pod2, ips1[i], ips2[i]), dev);
    }

    // CHECK of one chain passes; DEL of everything leaves lo and eth0 and empty pools.
    let check = cluster.call(
        1,
        &cluster.rail_conflist(1, 3, true),
        &pod1,
        "net3",
        "pod-node1",
    );
    Driver::get().run(Op::Check, &check).expect_ok();
    cluster.detach(1, &pod1, "pod-node1", true);
    cluster.detach(2, &pod2, "pod-node2", true);
    for pod in [&pod1, &pod2] {
        let mut names = link_names(pod);
        names.sort();
        assert_eq!(names, ["eth0", "lo"]);
        assert_eq!(
            ip_in(pod, &["-4", "rule", "show"]).lines().count(),
            3,
            "only the default rules"
        );
    }
    assert_eq!(cluster.held(), 0, "pools must be empty after DEL");
}

#[test]
fn without_the_coordinator_replies_leave_by_the_wrong_nic() {
    let rails: Vec<Rail> = RAILS.map(Rail::new).collect();
    let cluster = Cluster::new(&rails, 2);
    let (pod1, ips1) = cluster.pod(1, "ctl-node1", false);
    let (pod2, ips2) = cluster.pod(2, "ctl-node2", false);
    let mut wrong = 0;
    for n in RAILS {
        let dev = format!("net{n}");
        let i = usize::from(n - 1);
        let leaves_by = route_dev(&pod2, ips1[i], ips2[i]);
        let reached = ping_from(&pod1, Some(&dev), ips2[i], 1);
        // A reply routed out of another rail's NIC never comes back.
        assert_eq!(
            reached,
            leaves_by == dev,
            "rail {n}: reply leaves by {leaves_by}"
        );
        wrong += usize::from(leaves_by != dev);
    }
    assert!(
        wrong > 0,
        "without policy routing some replies must take the wrong NIC"
    );
    eprintln!("control run without coordinator: {wrong} of 8 rails lose their replies");
}

#[test]
fn an_absent_gateway_fails_the_add_and_del_leaves_nothing() {
    let cluster = Cluster::new(&[Rail::new(5).without_gateway()], 1);
    let pod = new_pod();
    let call = cluster.call(1, &cluster.rail_conflist(1, 5, true), &pod, "net5", "no-gw");
    let failed = Driver::get().run(Op::Add, &call);
    assert_eq!(failed.error_code(), Some(104), "{failed:#?}");
    let msg = failed.error_msg().unwrap();
    for fragment in ["172.16.15.254", "net5", "3 tries x 100 ms"] {
        assert!(msg.contains(fragment), "{fragment:?} not in {msg:?}");
    }
    assert_eq!(
        ip_in(&pod, &["-4", "rule", "show"]).lines().count(),
        3,
        "no rule of ours"
    );
    // The runtime's DEL after a failed ADD.
    Driver::get().run(Op::Del, &call).expect_ok();
    assert_eq!(link_names(&pod), ["lo"]);
    assert_eq!(cluster.held(), 0);
}

#[test]
fn an_mtu_above_the_master_keeps_the_pod_from_being_created() {
    let cluster = Cluster::new(&[Rail::new(1)], 1);
    let pod = new_pod();
    let mut conflist = cluster.rail_conflist(1, 1, true);
    conflist["plugins"][0]["mtu"] = json!(9000);
    let failed = Driver::get().run(
        Op::Add,
        &cluster.call(1, &conflist, &pod, "net1", "big-mtu"),
    );
    assert_eq!(failed.error_code(), Some(101), "{failed:#?}");
    let msg = failed.error_msg().unwrap();
    assert!(
        msg.contains("9000") && msg.contains("1500") && msg.contains("enp11s0f0np0"),
        "{msg}"
    );
    assert_eq!(link_names(&pod), ["lo"]);
    assert_eq!(cluster.held(), 0);
}

#[test]
fn an_address_already_answered_for_is_refused_with_the_mac_that_answered() {
    let cluster = Cluster::new(&[Rail::new(1)], 1);
    // Somebody outside the pool's bookkeeping already uses the first address.
    let squatter = new_pod();
    let node = cluster.fabric.node(1);
    node.ip(&[
        "link",
        "add",
        "sq0",
        "link",
        "enp11s0f0np0",
        "type",
        "macvlan",
        "mode",
        "bridge",
    ])
    .unwrap();
    node.ip(&["link", "set", "sq0", "netns", squatter.name()])
        .unwrap();
    squatter
        .ip(&["addr", "add", "172.16.11.1/16", "dev", "sq0"])
        .unwrap();
    squatter.ip(&["link", "set", "sq0", "up"]).unwrap();
    let squatter_mac = {
        let out = ip_in(&squatter, &["-j", "link", "show", "dev", "sq0"]);
        let links: Value = serde_json::from_str(&out).unwrap();
        links[0]["address"].as_str().unwrap().to_owned()
    };

    let pod = new_pod();
    let mut conflist = cluster.rail_conflist(1, 1, true);
    conflist["plugins"][1]["detectIPConflict"] = json!(true);
    let call = cluster.call(1, &conflist, &pod, "net1", "conflict");
    let failed = Driver::get().run(Op::Add, &call);
    assert_eq!(failed.error_code(), Some(105), "{failed:#?}");
    let msg = failed.error_msg().unwrap();
    assert!(
        msg.contains("172.16.11.1") && msg.contains(&squatter_mac),
        "{msg}"
    );
    Driver::get().run(Op::Del, &call).expect_ok();
    assert_eq!(link_names(&pod), ["lo"]);
    assert_eq!(cluster.held(), 0);
}

#[test]
fn ipv6_gateways_are_found_by_neighbour_solicitation() {
    let cluster = Cluster::new(&[Rail::new(1)], 1);
    // The rail's IPv6 gateway; no DAD, so it answers at once.
    cluster
        .fabric
        .rail(1)
        .ip(&["addr", "add", "fd00:11::fe/64", "dev", "br0", "nodad"])
        .unwrap();
    let v6_pools = netns_tests::conflist::ippool(
        "gpu1-net11-v6",
        json!({"subnet": "fd00:11::/64", "ips": ["fd00:11::1-fd00:11::10"], "gateway": "fd00:11::fe"}),
    );
    let absent = netns_tests::conflist::ippool(
        "gpu1-net11-v6-nogw",
        json!({"subnet": "fd00:11::/64", "ips": ["fd00:11::20-fd00:11::30"], "gateway": "fd00:11::fd"}),
    );
    netns_tests::conflist::write_ippools(
        cluster.dirs(1).pools.path(),
        "v6.json",
        &[v6_pools, absent],
    );
    let driver = Driver::get();
    for (pool, reachable) in [("gpu1-net11-v6", true), ("gpu1-net11-v6-nogw", false)] {
        let pod = new_pod();
        let mut conflist = cluster.rail_conflist(1, 1, true);
        conflist["plugins"][0]["ipam"]["default_ipv6_ippool"] = json!([pool]);
        let call = cluster.call(1, &conflist, &pod, "net1", pool);
        let outcome = driver.run(Op::Add, &call);
        if reachable {
            outcome.expect_ok();
        } else {
            outcome.expect_error(104, &["fd00:11::fd", "neighbour solicitation", "net1"]);
        }
        driver.run(Op::Del, &call).expect_ok();
    }
    assert_eq!(cluster.held(), 0);
}
