//! The coordinator under every order a runtime can attach a pod's networks in: one after
//! another as Multus does (in any order, as podman does), all at once as containerd's CRI
//! does, and NICs deleted later. The pod's routing must always be the function of its NICs
//! that the README states: every NIC its rule and table, the main default route on the
//! owner (`eth0` when the pod has it, else the NIC whose name sorts first), and traffic
//! sourced from any NIC's address leaving by that NIC. Plus the table numbering's edges.
//! Run as root after `cargo build --release`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use netns_tests::probe::{link_names, ping_from};
use netns_tests::scenario::{address_of, ip_in, Cluster, RAILS};
use netns_tests::{gateway_ip, new_pod, Driver, Netns, Op, Rail};
use serde_json::Value;

/// The routing state that matters, as comparable lines: our rules, every route of every
/// table but `local`, and the main table's default routes (its connected routes are the
/// kernel's).
fn observed(pod: &Netns) -> BTreeSet<String> {
    let mut state = BTreeSet::new();
    let rules: Vec<Value> =
        serde_json::from_str(&ip_in(pod, &["-4", "-j", "rule", "show"])).unwrap();
    for r in rules {
        let priority = r["priority"].as_u64().unwrap();
        if [0, 32766, 32767].contains(&priority) {
            continue;
        }
        state.insert(format!(
            "rule {priority}: from {} lookup {}",
            r["src"].as_str().unwrap_or("all"),
            r["table"].as_str().unwrap()
        ));
    }
    let routes: Vec<Value> =
        serde_json::from_str(&ip_in(pod, &["-4", "-j", "route", "show", "table", "all"])).unwrap();
    for r in routes {
        let table = r["table"].as_str().unwrap_or("main");
        let dst = r["dst"].as_str().unwrap();
        if table == "local" || (table == "main" && dst != "default") {
            continue;
        }
        let mut line = format!("table {table}: {dst}");
        if let Some(gw) = r["gateway"].as_str() {
            line += &format!(" via {gw}");
        }
        line += &format!(" dev {}", r["dev"].as_str().unwrap());
        if let Some(src) = r["prefsrc"].as_str() {
            line += &format!(" src {src}");
        }
        state.insert(line);
    }
    state
}

/// Who the README says owns the main default route.
#[derive(Clone, Copy)]
enum Owner<'a> {
    /// The cluster NIC, with this default route of its own.
    Cluster(&'a str),
    /// The NIC whose name sorts first.
    First,
    /// `podDefaultRouteNic: net<N>` when the pod has it, else the first.
    Preferred(u8),
}

/// What the README says the pod's routing is, given its macvlan NICs (rail number ->
/// address) and the owner rule.
fn expected(nics: &BTreeMap<u8, Ipv4Addr>, owner: Owner) -> BTreeSet<String> {
    let mut state = BTreeSet::new();
    for (&n, ip) in nics {
        let table = 100 + u32::from(n);
        state.insert(format!("rule {}: from {ip} lookup {table}", 20_000 + table));
        state.insert(format!(
            "table {table}: default via {} dev net{n}",
            gateway_ip(n)
        ));
        state.insert(format!("table {table}: 172.16.0.0/16 dev net{n} src {ip}"));
    }
    // net1..net8 all have names of one length: the lowest number sorts first.
    let first = nics.keys().next().copied();
    let owner = match owner {
        Owner::Cluster(route) => {
            state.insert(format!("table main: {route}"));
            None
        }
        Owner::First => first,
        Owner::Preferred(n) => nics.contains_key(&n).then_some(n).or(first),
    };
    if let Some(n) = owner {
        state.insert(format!(
            "table main: default via {} dev net{n}",
            gateway_ip(n)
        ));
    }
    state
}

/// Beyond the tables: from every NIC's address, the route to its gateway leaves by that NIC
/// and a ping sourced from the address gets its reply.
fn assert_each_nic_answers_from_its_address(pod: &Netns, nics: &BTreeMap<u8, Ipv4Addr>) {
    for (&n, ip) in nics {
        let gw = gateway_ip(n).to_string();
        let out = ip_in(pod, &["-j", "route", "get", &gw, "from", &ip.to_string()]);
        let route: Vec<Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(
            route[0]["dev"],
            format!("net{n}"),
            "from {ip} to {gw}: {out}"
        );
        assert!(
            ping_from(pod, Some(&ip.to_string()), gateway_ip(n), 3),
            "ping from {ip} to {gw} got no reply"
        );
        assert!(
            ping_from(pod, Some(&format!("net{n}")), gateway_ip(n), 3),
            "ping bound to net{n} to {gw} got no reply"
        );
    }
}

fn assert_state(pod: &Netns, nics: &BTreeMap<u8, Ipv4Addr>, owner: Owner, when: &str) {
    let have = observed(pod);
    let want = expected(nics, owner);
    assert!(
        have == want,
        "{when}: routing differs\n  missing: {:?}\n  unexpected: {:?}",
        want.difference(&have).collect::<Vec<_>>(),
        have.difference(&want).collect::<Vec<_>>()
    );
}

/// Runs `op` for the given rails on `pod`, all at once, with the conflists of rails 1..=8.
fn all_at_once(
    cluster: &Cluster,
    conflists: &[Value],
    pod: &Netns,
    id: &str,
    op: Op,
    rails: &[u8],
) -> Vec<Ipv4Addr> {
    let driver = Driver::get();
    std::thread::scope(|s| {
        let runs: Vec<_> = rails
            .iter()
            .map(|&n| {
                s.spawn(move || {
                    let conflist = &conflists[usize::from(n - 1)];
                    let call = cluster.call(1, conflist, pod, &format!("net{n}"), id);
                    let outcome = driver.run(op, &call);
                    outcome.expect_ok();
                    (op == Op::Add).then(|| address_of(&outcome))
                })
            })
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().expect("attach thread"))
            .collect()
    })
}

/// A fixed pseudo-random permutation of the rails, different for each `seed`.
fn permutation(seed: u64) -> Vec<u8> {
    let mut rails: Vec<u8> = RAILS.collect();
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..rails.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rails.swap(i, (x >> 33) as usize % (i + 1));
    }
    rails
}

fn eight_rail_cluster() -> Cluster {
    let rails: Vec<Rail> = RAILS.map(Rail::new).collect();
    Cluster::new(&rails, 1)
}

/// The conflists of rails 1..=8 as `spiderctl apply` wrote them, each changed by `edit`.
fn seed_conflists(cluster: &Cluster, edit: impl Fn(&mut Value)) -> Vec<Value> {
    RAILS
        .map(|n| {
            let mut conflist = cluster.rail_conflist(1, n, true);
            edit(&mut conflist);
            conflist
        })
        .collect()
}

/// The addresses of net1..net8 in `pod`.
fn addresses_of_nics(pod: &Netns) -> BTreeMap<u8, Ipv4Addr> {
    RAILS
        .map(|n| {
            let addr = netns_tests::probe::ipv4_addrs(pod, &format!("net{n}"));
            (n, addr[0].split('/').next().unwrap().parse().unwrap())
        })
        .collect()
}

/// `rounds` pods: the eight chains attached at once, then half of them deleted at once (a
/// different half each round, the owner among them in some), then the rest; the routing
/// checked against `owner` after each step.
fn bursts(cluster: &Cluster, conflists: &[Value], owner: Owner, rounds: u64) {
    let all: Vec<u8> = RAILS.collect();
    for round in 0..rounds {
        let pod = new_pod();
        let id = format!("burst{round}");
        all_at_once(cluster, conflists, &pod, &id, Op::Add, &all);
        let mut nics = addresses_of_nics(&pod);
        assert_state(&pod, &nics, owner, &format!("round {round}, 8 at once"));
        assert_each_nic_answers_from_its_address(&pod, &nics);

        let order = permutation(round);
        let (gone, kept) = order.split_at(4);
        all_at_once(cluster, conflists, &pod, &id, Op::Del, gone);
        gone.iter().for_each(|n| {
            nics.remove(n);
        });
        assert_state(
            &pod,
            &nics,
            owner,
            &format!("round {round}, {gone:?} deleted"),
        );
        all_at_once(cluster, conflists, &pod, &id, Op::Del, kept);
        assert_state(
            &pod,
            &BTreeMap::new(),
            owner,
            &format!("round {round}, all deleted"),
        );
    }
    assert_eq!(cluster.held(), 0);
}

#[test]
fn eight_chains_at_once_fifty_times_end_in_the_same_routing_and_deletes_hand_main_over() {
    let cluster = eight_rail_cluster();
    let conflists = seed_conflists(&cluster, |_| {});
    bursts(&cluster, &conflists, Owner::First, 50);
}

#[test]
fn a_pod_default_route_nic_owns_main_whenever_it_is_there() {
    let cluster = eight_rail_cluster();
    let conflists = seed_conflists(&cluster, |c| {
        c["plugins"][1]["podDefaultRouteNic"] = "net3".into();
    });
    bursts(&cluster, &conflists, Owner::Preferred(3), 10);
}

#[test]
fn serial_orders_of_adds_and_deletes_give_the_state_of_the_nics_present() {
    let cluster = eight_rail_cluster();
    let driver = Driver::get();
    let mut orders = vec![RAILS.collect::<Vec<u8>>(), RAILS.rev().collect()];
    orders.extend((100..106).map(permutation));
    for (k, order) in orders.iter().enumerate() {
        let pod = new_pod();
        let id = format!("serial{k}");
        let rail_call = |n: u8| {
            cluster.call(
                1,
                &cluster.rail_conflist(1, n, true),
                &pod,
                &format!("net{n}"),
                &id,
            )
        };
        let mut nics = BTreeMap::new();
        for &n in order {
            let call = rail_call(n);
            nics.insert(n, address_of(&driver.run(Op::Add, &call)));
            assert_state(
                &pod,
                &nics,
                Owner::First,
                &format!("order {order:?}, after net{n}"),
            );
        }
        assert_each_nic_answers_from_its_address(&pod, &nics);
        for &n in &permutation(k as u64 + 7) {
            let call = rail_call(n);
            driver.run(Op::Check, &call).expect_ok();
            driver.run(Op::Del, &call).expect_ok();
            nics.remove(&n);
            assert_state(
                &pod,
                &nics,
                Owner::First,
                &format!("order {order:?}, net{n} deleted"),
            );
            // The NICs left still pass CHECK: the main default moved with the owner.
            for &m in nics.keys() {
                let call = rail_call(m);
                driver.run(Op::Check, &call).expect_ok();
            }
        }
    }
    assert_eq!(cluster.held(), 0);
}

#[test]
fn with_a_cluster_nic_it_keeps_main_whatever_the_order_and_every_nic_has_its_table() {
    let cluster = eight_rail_cluster();
    let conflists = seed_conflists(&cluster, |_| {});
    let driver = Driver::get();
    let all: Vec<u8> = RAILS.collect();
    for round in 0..3 {
        let pod = new_pod();
        let id = format!("cluster{round}");
        driver
            .run(
                Op::Add,
                &cluster.call(1, &cluster.cluster_conflist(1), &pod, "eth0", &id),
            )
            .expect_ok();
        let main = ip_in(&pod, &["-j", "route", "show", "default"]);
        let main: Vec<Value> = serde_json::from_str(&main).unwrap();
        let cluster_default = format!(
            "default via {} dev eth0",
            main[0]["gateway"].as_str().unwrap()
        );
        let owner = Owner::Cluster(&cluster_default);
        let ips = all_at_once(&cluster, &conflists, &pod, &id, Op::Add, &all);
        assert_eq!(ips.len(), 8);
        let nics = addresses_of_nics(&pod);
        assert_state(&pod, &nics, owner, "eth0 then 8 at once");
        assert_each_nic_answers_from_its_address(&pod, &nics);
        all_at_once(&cluster, &conflists, &pod, &id, Op::Del, &all);
        assert_state(&pod, &BTreeMap::new(), owner, "all netN deleted");
    }
    assert_eq!(cluster.held(), 0);
}

/// `net154` would be table 254 (`main`) if names mapped straight to 100 + N: it must get a
/// table of its own, and neither its ADD nor its DEL may touch the main table of the NIC that
/// owns it.
#[test]
fn a_nic_named_net154_leaves_the_main_table_of_its_neighbour_alone() {
    let cluster = Cluster::new(&[Rail::new(1), Rail::new(2)], 1);
    let driver = Driver::get();
    let pod = new_pod();
    let net1 = cluster.call(1, &cluster.rail_conflist(1, 1, true), &pod, "net1", "n154");
    driver.run(Op::Add, &net1).expect_ok();
    let main_before = ip_in(&pod, &["route", "show", "table", "main"]);
    assert!(
        main_before.contains("default via 172.16.11.254 dev net1"),
        "{main_before}"
    );

    let odd = cluster.call(
        1,
        &cluster.rail_conflist(1, 2, true),
        &pod,
        "net154",
        "n154",
    );
    let ip = address_of(&driver.run(Op::Add, &odd));
    let rules = ip_in(&pod, &["-4", "rule", "show"]);
    let table = rules
        .lines()
        .find(|l| l.contains(&format!("from {ip} ")))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no rule for {ip}:\n{rules}"))
        .to_owned();
    let number: u32 = table
        .parse()
        .unwrap_or_else(|_| panic!("table {table} is named"));
    assert!(
        (2000..12_000).contains(&number),
        "net154 got table {number}"
    );
    let main_during = ip_in(&pod, &["route", "show", "table", "main"]);
    assert!(
        main_during.contains("default via 172.16.11.254 dev net1"),
        "{main_during}"
    );
    driver.run(Op::Check, &odd).expect_ok();

    driver.run(Op::Del, &odd).expect_ok();
    assert_eq!(
        ip_in(&pod, &["route", "show", "table", "main"]),
        main_before
    );
    assert_eq!(ip_in(&pod, &["route", "show", "table", &table]), "");
    driver.run(Op::Check, &net1).expect_ok();
    driver.run(Op::Del, &net1).expect_ok();
    assert_eq!(cluster.held(), 0);
}

/// A rule or route of someone else in the table (or at the priority) a NIC's name maps to is
/// refused, not taken over, and the failed ADD leaves everything as it was.
#[test]
fn a_table_or_priority_in_use_by_others_is_refused_and_left_alone() {
    let cluster = Cluster::new(&[Rail::new(2)], 1);
    let driver = Driver::get();
    for (what, setup) in [
        (
            "rule",
            vec![
                "rule", "add", "priority", "20102", "from", "10.1.2.3", "lookup", "500",
            ],
        ),
        (
            "rule",
            vec![
                "rule", "add", "priority", "100", "from", "all", "lookup", "102",
            ],
        ),
        (
            "route",
            vec!["route", "add", "10.9.0.0/16", "dev", "lo", "table", "102"],
        ),
    ] {
        let pod = new_pod();
        pod.ip(&setup).unwrap();
        let before = observed(&pod);
        let call = cluster.call(
            1,
            &cluster.rail_conflist(1, 2, true),
            &pod,
            "net2",
            "foreign",
        );
        let failed = driver.run(Op::Add, &call);
        let msg = failed
            .expect_error(7, &["table 102", "net2", what])
            .to_owned();
        assert!(msg.contains("did not make"), "{msg}");
        assert_eq!(observed(&pod), before, "{setup:?}");
        // The runtime's DEL of the failed chain removes macvlan's link and address.
        driver.run(Op::Del, &call).expect_ok();
        assert_eq!(observed(&pod), before, "DEL after {setup:?}");
        assert_eq!(link_names(&pod), ["lo"]);
    }
    assert_eq!(cluster.held(), 0);
}
