//! Our macvlan plugin on the seed's rail, driven through the libcni client the
//! way Multus calls it, with the reference `host-local` as IPAM (kept as the
//! interop test). Run as root after `cargo build --release`.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use netns_tests::conflist::{host_local, list, macvlan, SPEC_VERSIONS};
use netns_tests::paths::temp_dir;
use netns_tests::plugins::{our_binary, wrapper, REFERENCE_DIR};
use netns_tests::probe::{ipv4_addrs, link_mtu, link_names, ping_from};
use netns_tests::{
    exec_plugin, new_pod, Driver, Fabric, Invocation, Netns, Op, PluginDir, Rail, Source,
};
use serde_json::{json, Value};
use tempfile::TempDir;

/// One node with rail 1, a pod, our macvlan and the reference host-local, and
/// the scratch dirs a runtime keeps (host-local state, libcni's cache).
struct Rig {
    fabric: Fabric,
    pod: Netns,
    ipam_dir: TempDir,
    cache_dir: TempDir,
    plugins: PluginDir,
}

impl Rig {
    fn new(rail: Rail) -> Rig {
        Rig::with_plugins(
            rail,
            &[("macvlan", Source::Ours), ("host-local", Source::Reference)],
        )
    }

    fn with_plugins(rail: Rail, plugins: &[(&str, Source)]) -> Rig {
        Rig {
            fabric: Fabric::build(1, &[rail]),
            pod: new_pod(),
            ipam_dir: temp_dir("host-local"),
            cache_dir: temp_dir("cni-cache"),
            plugins: PluginDir::new(plugins),
        }
    }

    fn node(&self) -> &Netns {
        self.fabric.node(1)
    }

    /// Our macvlan on rail 1 with host-local handing out `.first ..= .last`.
    fn conflist(&self, version: &str, first: u8, last: u8) -> Value {
        let ipam = host_local(1, first, last, self.ipam_dir.path());
        list(version, "rail1", &[macvlan(1, ipam)])
    }

    fn call<'a>(&'a self, conflist: &Value, pod: &Netns) -> Invocation<'a> {
        Invocation::new(self.node(), conflist, &self.plugins, self.cache_dir.path()).netns(pod)
    }

    /// Addresses host-local holds (one file per address in its network dir).
    fn held(&self) -> Vec<String> {
        let dir = self.ipam_dir.path().join("rail1");
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.parse::<Ipv4Addr>().is_ok())
            .collect()
    }

    /// Nothing of ours on the node beyond the master, nothing in `pod` but lo.
    #[track_caller]
    fn assert_nothing_left(&self, pod: &Netns) {
        assert_eq!(link_names(pod), ["lo"], "links left in the pod");
        assert_eq!(
            link_names(self.node()),
            ["lo", self.fabric.master(1).as_str()],
            "links left on the node"
        );
    }
}

#[test]
fn every_spec_version_adds_checks_and_deletes() {
    let rig = Rig::new(Rail::new(1));
    let driver = Driver::get();
    for version in SPEC_VERSIONS {
        let pod = new_pod();
        // The reference host-local (1.1.1) speaks up to 1.0.0: 1.1.0 runs without IPAM.
        let conflist = if version == "1.1.0" {
            list(version, "rail1", &[macvlan(1, Value::Null)])
        } else {
            rig.conflist(version, 1, 10)
        };
        let call = rig.call(&conflist, &pod);

        let added = driver.run(Op::Add, &call);
        let result = added.expect_ok().json.clone().expect("ADD prints a result");
        assert_eq!(result["cniVersion"], version, "{result}");
        assert_eq!(result["interfaces"][0]["name"], "net1", "{result}");
        assert_eq!(
            result["interfaces"][0]["sandbox"],
            pod.path().to_string_lossy().as_ref()
        );
        // Interfaces carry their MTU from 1.1.0 on.
        let mtu = (version == "1.1.0").then_some(1500);
        assert_eq!(result["interfaces"][0]["mtu"].as_u64(), mtu, "{result}");
        if version != "1.1.0" {
            let address = result["ips"][0]["address"].as_str().unwrap();
            assert_eq!(ipv4_addrs(&pod, "net1"), [address], "{version}");
            // Before 1.0.0 every IP says its family.
            let family = &result["ips"][0]["version"];
            assert_eq!(
                family.as_str(),
                (version < "1.0.0").then_some("4"),
                "{version}"
            );
            assert_eq!(rig.held().len(), 1, "{version}");
        }
        if version >= "0.4.0" {
            driver.run(Op::Check, &call).expect_ok();
        }
        driver.run(Op::Del, &call).expect_ok();
        rig.assert_nothing_left(&pod);
        assert!(rig.held().is_empty(), "{version}: {:?}", rig.held());
    }
}

#[test]
fn the_pod_pings_its_gateway_through_the_macvlan() {
    let rig = Rig::new(Rail::new(1));
    let conflist = rig.conflist("1.0.0", 1, 10);
    let added = Driver::get().run(Op::Add, &rig.call(&conflist, &rig.pod));
    added.first_address();
    assert!(ping_from(&rig.pod, Some("net1"), rig.fabric.gateway(1), 3));
}

#[test]
fn mtu_1480_is_applied() {
    let rig = Rig::new(Rail::new(1));
    let mut conflist = rig.conflist("1.0.0", 1, 10);
    conflist["plugins"][0]["mtu"] = json!(1480);
    let call = rig.call(&conflist, &rig.pod);
    Driver::get().run(Op::Add, &call).expect_ok();
    assert_eq!(link_mtu(&rig.pod, "net1"), Some(1480));
    Driver::get().run(Op::Check, &call).expect_ok();
}

#[test]
fn mtu_above_the_master_is_refused_and_leaves_nothing() {
    let rig = Rig::new(Rail::new(1));
    let mut conflist = rig.conflist("1.0.0", 1, 10);
    conflist["plugins"][0]["mtu"] = json!(9000);
    let refused = Driver::get().run(Op::Add, &rig.call(&conflist, &rig.pod));
    refused.expect_error(101, &["9000", "1500", "enp11s0f0np0"]);
    rig.assert_nothing_left(&rig.pod);
    assert!(rig.held().is_empty());
}

#[test]
fn a_missing_or_down_master_is_refused() {
    let rig = Rig::new(Rail::new(1));
    let mut conflist = rig.conflist("1.0.0", 1, 10);
    conflist["plugins"][0]["master"] = json!("enp99s0f0np0");
    let refused = Driver::get().run(Op::Add, &rig.call(&conflist, &rig.pod));
    refused.expect_error(102, &["enp99s0f0np0", "does not exist"]);

    let master = rig.fabric.master(1);
    rig.node().ip(&["link", "set", &master, "down"]).unwrap();
    let refused = Driver::get().run(Op::Add, &rig.call(&rig.conflist("1.0.0", 1, 10), &rig.pod));
    refused.expect_error(102, &[&master, "down"]);
    rig.assert_nothing_left(&rig.pod);
    assert!(rig.held().is_empty());
}

#[test]
fn malformed_json_and_unknown_versions_are_refused_with_their_codes() {
    let rig = Rig::new(Rail::new(1));
    let pod_path = rig.pod.path();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", pod_path.to_str().unwrap()),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", rig.plugins.path().to_str().unwrap()),
    ];
    // Broken JSON never gets past libcni, so the plugin is called directly.
    let broken = exec_plugin(
        rig.node(),
        &rig.plugins,
        "macvlan",
        &env,
        b"{\"cniVersion\": ",
    );
    broken.expect_error(6, &[]);

    let mut conflist = rig.conflist("1.0.0", 1, 10);
    conflist["cniVersion"] = json!("9.9.9");
    let unknown = Driver::get().run(Op::Add, &rig.call(&conflist, &rig.pod));
    unknown.expect_error(1, &["9.9.9"]);
    rig.assert_nothing_left(&rig.pod);
    assert!(rig.held().is_empty());
}

#[test]
fn del_succeeds_when_never_added_twice_and_after_the_netns_is_gone() {
    let rig = Rig::new(Rail::new(1));
    let driver = Driver::get();
    let conflist = rig.conflist("1.0.0", 1, 10);

    driver
        .run(Op::Del, &rig.call(&conflist, &rig.pod))
        .expect_ok();

    let call = rig.call(&conflist, &rig.pod);
    driver.run(Op::Add, &call).first_address();
    driver.run(Op::Del, &call).expect_ok();
    driver.run(Op::Del, &call).expect_ok();
    rig.assert_nothing_left(&rig.pod);

    let doomed = new_pod();
    let call = rig.call(&conflist, &doomed);
    driver.run(Op::Add, &call).first_address();
    drop(doomed);
    driver.run(Op::Del, &call).expect_ok();
    assert!(
        rig.held().is_empty(),
        "DEL must release even without the netns"
    );
}

#[test]
fn add_failing_on_an_exhausted_range_leaves_nothing_and_a_retry_succeeds() {
    let rig = Rig::new(Rail::new(1));
    let driver = Driver::get();
    let conflist = rig.conflist("1.0.0", 1, 1);
    let first = rig.call(&conflist, &rig.pod);
    driver.run(Op::Add, &first).first_address();

    let second_pod = new_pod();
    let second = rig.call(&conflist, &second_pod).container_id("retried");
    let refused = driver.run(Op::Add, &second);
    assert!(!refused.success, "{refused:#?}");
    assert_eq!(link_names(&second_pod), ["lo"], "half-made pod left behind");

    driver.run(Op::Del, &first).expect_ok();
    let retried = driver.run(Op::Add, &second);
    assert_eq!(retried.first_address(), "172.16.11.1/16");
    assert_eq!(ipv4_addrs(&second_pod, "net1"), ["172.16.11.1/16"]);
}

/// Writes an IPAM stand-in that records every command it gets and hands out an
/// address whose route cannot be installed (its gateway is off-link), so ADD
/// fails after the link exists.
fn unroutable_ipam(dir: &Path) -> Source {
    let path = dir.join("unroutable");
    let result = json!({
        "cniVersion": "1.0.0",
        "ips": [{"address": "172.16.11.7/16", "gateway": "172.16.11.254"}],
        "routes": [{"dst": "10.0.0.0/8", "gw": "192.0.2.1"}],
    });
    let script = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND\" >> '{}/calls'\n[ \"$CNI_COMMAND\" = ADD ] && echo '{result}'\nexit 0\n",
        dir.display()
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    Source::File(path)
}

#[test]
fn a_failure_after_the_link_exists_releases_the_ips_and_removes_the_link() {
    let scratch = temp_dir("unroutable");
    let rig = Rig::with_plugins(
        Rail::new(1),
        &[
            ("macvlan", Source::Ours),
            ("unroutable", unroutable_ipam(scratch.path())),
        ],
    );
    let conflist = list(
        "1.0.0",
        "rail1",
        &[macvlan(1, json!({"type": "unroutable"}))],
    );
    let failed = Driver::get().run(Op::Add, &rig.call(&conflist, &rig.pod));
    failed.expect_error(108, &["10.0.0.0/8"]);
    rig.assert_nothing_left(&rig.pod);
    let calls = fs::read_to_string(scratch.path().join("calls")).unwrap();
    assert_eq!(calls.lines().collect::<Vec<_>>(), ["ADD", "DEL"]);
}

/// What a sysctl of the pod reads (`/proc/sys/net` is the reader's namespace's).
fn pod_sysctl(pod: &Netns, path: &str) -> String {
    let out = pod.exec(&["cat", path]);
    assert!(out.status.success(), "cat {path}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn dns_bcqueuelen_and_both_notifies_are_applied_as_the_reference_does() {
    let rig = Rig::new(Rail::new(1));
    let mut conflist = rig.conflist("1.0.0", 1, 10);
    let dns = json!({"nameservers": ["10.233.0.10"], "domain": "cluster.local",
                     "search": ["ai.svc.cluster.local"], "options": ["ndots:5"]});
    conflist["plugins"][0]["dns"] = dns.clone();
    conflist["plugins"][0]["bcqueuelen"] = json!(2000);
    let call = rig.call(&conflist, &rig.pod);
    let added = Driver::get().run(Op::Add, &call);
    assert_eq!(added.result()["dns"], dns, "{:#?}", added.result());

    let links: Value =
        serde_json::from_str(&rig.pod.ip(&["-d", "-j", "link", "show", "net1"]).unwrap()).unwrap();
    let info = &links[0]["linkinfo"]["info_data"];
    assert_eq!(info["bcqueuelen"], 2000, "{links}");
    for sysctl in [
        "/proc/sys/net/ipv4/conf/net1/arp_notify",
        "/proc/sys/net/ipv6/conf/net1/ndisc_notify",
    ] {
        assert_eq!(pod_sysctl(&rig.pod, sysctl), "1", "{sysctl}");
    }
    Driver::get().run(Op::Check, &call).expect_ok();
    Driver::get().run(Op::Del, &call).expect_ok();
    rig.assert_nothing_left(&rig.pod);
}

#[test]
fn a_missing_ipam_plugin_is_refused_before_any_link_is_made() {
    let rig = Rig::new(Rail::new(1));
    let log = rig.cache_dir.path().join("macvlan.log");
    let mut conflist = list(
        "1.0.0",
        "rail1",
        &[macvlan(1, json!({"type": "no-such-ipam"}))],
    );
    conflist["plugins"][0]["log_file_path"] = json!(log);
    conflist["plugins"][0]["log_level"] = json!("debug");
    // The pod already has the interface name: had the link been tried first, the answer would
    // be "already exists" (106).
    rig.pod
        .ip(&[
            "link", "add", "net1", "type", "veth", "peer", "name", "peer1",
        ])
        .unwrap();
    let refused = Driver::get().run(Op::Add, &rig.call(&conflist, &rig.pod));
    refused.expect_error(7, &["ipam.type", "no-such-ipam", "CNI_PATH"]);
    let mut links = link_names(&rig.pod);
    links.sort();
    assert_eq!(links, ["lo", "net1", "peer1"]);
    rig.pod.ip(&["link", "del", "net1"]).unwrap();

    // With the name free, still no link was made and undone: no rollback in the log.
    let refused = Driver::get().run(Op::Add, &rig.call(&conflist, &rig.pod));
    refused.expect_error(7, &["no-such-ipam"]);
    rig.assert_nothing_left(&rig.pod);
    let logged = fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains("rollback"), "{logged}");
}

/// Every point where the ADD can run out of file descriptors (the netns, each netlink
/// socket, the pipes to the IPAM plugin), tried by lowering the macvlan's limit one step at a
/// time (the IPAM plugin gets its limit back, so only our macvlan is squeezed): an ADD that
/// fails leaves no link and no allocation, one that succeeds is undone by DEL.
#[test]
fn running_out_of_descriptors_anywhere_in_an_add_leaves_nothing() {
    let scratch = temp_dir("nofile");
    let host_local = wrapper(
        scratch.path(),
        "nofile-restored",
        "ulimit -S -n \"$(ulimit -H -n)\"; exec",
        &Path::new(REFERENCE_DIR).join("host-local"),
    );
    let mut failures = 0;
    for limit in 3..=16u32 {
        let squeezed = wrapper(
            scratch.path(),
            &format!("nofile-{limit}"),
            &format!("ulimit -S -n {limit}; exec"),
            &our_binary("macvlan"),
        );
        let rig = Rig::with_plugins(
            Rail::new(1),
            &[("macvlan", squeezed), ("host-local", host_local.clone())],
        );
        let conflist = rig.conflist("1.0.0", 1, 10);
        let call = rig.call(&conflist, &rig.pod);
        let added = Driver::get().run(Op::Add, &call);
        if added.success {
            Driver::get().run(Op::Del, &call).expect_ok();
        } else {
            failures += 1;
        }
        assert_eq!(link_names(&rig.pod), ["lo"], "limit {limit}: {added:#?}");
        assert!(rig.held().is_empty(), "limit {limit}: {:?}", rig.held());
    }
    assert!(failures > 2, "the limits never bit: {failures} failures");
}
