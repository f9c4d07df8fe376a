//! Self-tests of the harness: the topology behaves like the seed's rails, it
//! cleans up after itself, and the libcni driver works against the reference
//! plugins. Run as root: `cargo test -p netns-tests --test harness`.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use netns_tests::conflist::{host_local, list, macvlan};
use netns_tests::netns::{sweep_stale, PREFIX};
use netns_tests::paths::temp_dir;
use netns_tests::probe::{ipv4_addrs, link_mtu, link_names, ping_from};
use netns_tests::{new_pod, Driver, Fabric, Invocation, Netns, Op, PluginDir, Rail, Source};
use serde_json::{json, Value};

fn listed_namespaces() -> BTreeSet<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Gives `pod` a macvlan on `master` of `node` with `addr`, by hand.
fn hand_macvlan(node: &Netns, master: &str, pod: &Netns, addr: &str) {
    node.ip(&[
        "link", "add", "m0", "link", master, "type", "macvlan", "mode", "bridge",
    ])
    .unwrap();
    node.ip(&["link", "set", "m0", "netns", pod.name()])
        .unwrap();
    pod.ip(&["addr", "add", addr, "dev", "m0"]).unwrap();
    pod.ip(&["link", "set", "m0", "up"]).unwrap();
}

#[test]
fn masters_exist_on_every_node_with_the_mtu_asked() {
    let fabric = Fabric::build(2, &[Rail::new(1).mtu(9000), Rail::new(2)]);
    for k in 1..=2 {
        let node = fabric.node(k);
        let links = link_names(node);
        assert!(links.contains(&"enp11s0f0np0".to_owned()), "{links:?}");
        assert!(links.contains(&"enp12s0f0np0".to_owned()), "{links:?}");
        assert_eq!(link_mtu(node, &fabric.master(1)), Some(9000));
        assert_eq!(link_mtu(node, &fabric.master(2)), Some(1500));
    }
    assert_eq!(link_mtu(fabric.node(1), "enp13s0f0np0"), None);
    assert_eq!(ipv4_addrs(fabric.rail(2), "br0"), ["172.16.12.254/16"]);
    assert_eq!(fabric.gateway(2), Ipv4Addr::new(172, 16, 12, 254));
}

#[test]
fn rails_are_isolated_l2_segments_across_nodes() {
    let fabric = Fabric::build(2, &[Rail::new(1), Rail::new(2)]);
    let (pod1, pod2) = (new_pod(), new_pod());
    hand_macvlan(fabric.node(1), &fabric.master(1), &pod1, "172.16.11.1/16");
    hand_macvlan(fabric.node(2), &fabric.master(1), &pod2, "172.16.11.2/16");

    assert!(
        ping_from(&pod1, Some("m0"), fabric.gateway(1), 3),
        "rail-1 gateway"
    );
    assert!(
        ping_from(&pod1, Some("m0"), Ipv4Addr::new(172, 16, 11, 2), 3),
        "pod on node2"
    );
    // Same /16, but rail 2's gateway is on another segment: no ARP answer.
    assert!(
        !ping_from(&pod1, Some("m0"), fabric.gateway(2), 1),
        "rail 2 leaked into rail 1"
    );
}

#[test]
fn dropping_a_fabric_removes_its_namespaces_and_their_processes() {
    let fabric = Fabric::build(2, &[Rail::new(1), Rail::new(2).without_gateway()]);
    let names: Vec<String> = fabric.namespaces().map(|ns| ns.name().to_owned()).collect();
    assert_eq!(names.len(), 4);
    assert!(names.iter().all(|n| listed_namespaces().contains(n)));
    // A process left inside must not keep the namespace alive.
    let mut squatter = fabric
        .node(1)
        .command(&["sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    drop(fabric);

    let left = listed_namespaces();
    assert!(
        names.iter().all(|n| !left.contains(n)),
        "left behind: {left:?}"
    );
    assert_eq!(squatter.wait().unwrap().signal(), Some(9));
}

#[test]
fn sweep_removes_namespaces_of_dead_processes_only() {
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let stale = format!("{PREFIX}-{dead_pid}-0-stale");
    let live = Netns::new("live");
    let status = Command::new("ip").args(["netns", "add", &stale]).status();
    assert!(status.unwrap().success());

    sweep_stale();

    let left = listed_namespaces();
    assert!(!left.contains(&stale), "stale namespace survived: {left:?}");
    assert!(left.contains(live.name()), "live namespace swept: {left:?}");
}

#[test]
fn driver_adds_checks_and_deletes_with_reference_plugins() {
    let fabric = Fabric::build(1, &[Rail::new(1)]);
    let pod = new_pod();
    let (ipam_dir, cache_dir) = (temp_dir("host-local"), temp_dir("cni-cache"));
    let plugins = PluginDir::new(&[
        ("macvlan", Source::Reference),
        ("host-local", Source::Reference),
    ]);
    let conflist = list(
        "1.0.0",
        "ref-macvlan",
        &[macvlan(1, host_local(1, 1, 10, ipam_dir.path()))],
    );
    let driver = Driver::get();
    let inv = Invocation::new(fabric.node(1), &conflist, &plugins, cache_dir.path()).netns(&pod);

    let added = driver.run(Op::Add, &inv);
    let result = added
        .expect_ok()
        .json
        .as_ref()
        .expect("ADD prints a result");
    let address = result["ips"][0]["address"]
        .as_str()
        .expect("result has an IP");
    let (ip, prefix) = address.split_once('/').unwrap();
    let ip: Ipv4Addr = ip.parse().unwrap();
    assert!(
        (Ipv4Addr::new(172, 16, 11, 1)..=Ipv4Addr::new(172, 16, 11, 10)).contains(&ip),
        "{address} outside the range"
    );
    assert_eq!(prefix, "16");
    assert_eq!(ipv4_addrs(&pod, "net1"), [address]);
    assert!(ping_from(&pod, Some("net1"), fabric.gateway(1), 3));

    driver.run(Op::Check, &inv).expect_ok();
    driver.run(Op::Del, &inv).expect_ok();
    assert!(!link_names(&pod).contains(&"net1".to_owned()));
}

/// Writes an executable shell script to `dir/name`, to stand in for a plugin.
fn script_plugin(dir: &Path, name: &str, body: &str) -> Source {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    Source::File(path)
}

#[test]
fn driver_reports_errors_as_cni_error_json() {
    let node = Netns::new("node");
    let scratch = temp_dir("failing");
    let failing = script_plugin(
        scratch.path(),
        "failing",
        r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"bad master","details":"fix it"}'; exit 1"#,
    );
    let plugins = PluginDir::new(&[("failing", failing)]);
    let conflist =
        |plugin: &str| json!({"cniVersion": "1.0.0", "name": "err", "plugins": [{"type": plugin}]});
    let driver = Driver::get();

    // A plugin's error is passed through with its code.
    let inv = Invocation::new(&node, &conflist("failing"), &plugins, scratch.path());
    let outcome = driver.run(Op::Add, &inv);
    assert!(!outcome.success);
    assert_eq!(outcome.error_code(), Some(7), "{outcome:#?}");
    assert_eq!(outcome.error_msg(), Some("bad master"));
    assert_eq!(outcome.json.as_ref().unwrap()["details"], "fix it");

    // The driver's own failures get code 0.
    let inv = Invocation::new(&node, &conflist("absent"), &plugins, scratch.path());
    let outcome = driver.run(Op::Add, &inv);
    assert_eq!(outcome.error_code(), Some(0), "{outcome:#?}");
    assert!(
        outcome.error_msg().unwrap().contains("absent"),
        "{outcome:#?}"
    );
}

/// GC and STATUS are emulated in the driver (libcni 1.1.2 lacks them): check
/// the stdin and environment a plugin gets, with a plugin that records them.
#[test]
fn driver_gc_and_status_send_what_libcni_1_2_sends() {
    let node = Netns::new("node");
    let scratch = temp_dir("recorder");
    let record = |cmd: &str| scratch.path().join(format!("{cmd}.record"));
    let recorder = script_plugin(
        scratch.path(),
        "recorder",
        &format!(
            "{{ echo \"$CNI_PATH\"; cat; }} > '{}/'\"$CNI_COMMAND\".record",
            scratch.path().display()
        ),
    );
    let plugins = PluginDir::new(&[("recorder", recorder)]);
    let conflist = json!({
        "cniVersion": "1.1.0", "name": "rec",
        "plugins": [{"type": "recorder", "own": 1}],
    });
    let inv = Invocation::new(&node, &conflist, &plugins, scratch.path())
        .valid_attachments(&[("c1", "net1"), ("c2", "net2")]);
    let driver = Driver::get();

    driver.run(Op::Gc, &inv).expect_ok();
    driver.run(Op::Status, &inv).expect_ok();

    let read = |cmd: &str| -> (String, Value) {
        let text = fs::read_to_string(record(cmd)).unwrap();
        let (path, stdin) = text.split_once('\n').unwrap();
        (path.to_owned(), serde_json::from_str(stdin).unwrap())
    };
    let attachments = json!([
        {"containerID": "c1", "ifname": "net1"},
        {"containerID": "c2", "ifname": "net2"},
    ]);
    let (gc_path, gc) = read("GC");
    assert_eq!(gc_path, plugins.path().to_string_lossy());
    assert_eq!(gc["name"], "rec");
    assert_eq!(gc["cniVersion"], "1.1.0");
    assert_eq!(gc["own"], 1);
    assert_eq!(gc["cni.dev/valid-attachments"], attachments);
    assert_eq!(gc["cni.dev/attachments"], attachments);
    let (_, status) = read("STATUS");
    assert_eq!(
        status,
        json!({"type": "recorder", "own": 1, "name": "rec", "cniVersion": "1.1.0"})
    );
}
