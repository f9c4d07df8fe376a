//! Our `spiderpool` IPAM on the seed's rail, behind our macvlan and behind the
//! reference one (interop, kept forever), driven through the libcni client the
//! way Multus calls it, with the seed's SpiderIPPool applied verbatim. Run as
//! root after `cargo build --release` (it needs `spiderctl` too).

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use netns_tests::conflist::{
    ippool, list, macvlan, spiderpool, write_ippools, write_seed_ippool, SEED_POOL, SEED_POOL_SIZE,
    SPEC_VERSIONS,
};
use netns_tests::paths::temp_dir;
use netns_tests::plugins::our_binary;
use netns_tests::probe::{ipv4_addrs, link_names, ping_from};
use netns_tests::{
    exec_plugin, new_pod, Driver, Fabric, Invocation, Netns, Op, Outcome, PluginDir, Rail, Source,
};
use serde_json::{json, Value};
use tempfile::TempDir;

/// The network name of every conflist here (the store keys allocations by it).
const NETWORK: &str = "gpu1-macvlan";
/// CNI_ARGS' pod namespace, as kubelet passes it.
const POD_NAMESPACE: &str = "ai";

/// One node with rail 1, a macvlan (ours or the reference) with our
/// spiderpool, the seed's pool applied, and what a node keeps on disk:
/// `ippools/` (the plugin's `ippool_dir`), `data/` (its store), `cache/`
/// (libcni's), `spiderpool.log`.
struct Rig {
    fabric: Fabric,
    scratch: TempDir,
    plugins: PluginDir,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_macvlan(Source::Ours)
    }

    fn with_macvlan(macvlan: Source) -> Rig {
        let scratch = temp_dir("spiderpool");
        let rig = Rig {
            fabric: Fabric::build(1, &[Rail::new(1)]),
            plugins: PluginDir::new(&[("macvlan", macvlan), ("spiderpool", Source::Ours)]),
            scratch,
        };
        fs::create_dir(rig.ippool_dir()).unwrap();
        write_seed_ippool(&rig.ippool_dir());
        rig
    }

    fn node(&self) -> &Netns {
        self.fabric.node(1)
    }

    fn ippool_dir(&self) -> PathBuf {
        self.scratch.path().join("ippools")
    }

    fn data_dir(&self) -> PathBuf {
        self.scratch.path().join("data")
    }

    /// Adds pools (built with [`ippool`]) next to the seed's.
    fn apply(&self, pools: &[Value]) {
        write_ippools(&self.ippool_dir(), "extra.json", pools);
    }

    /// The macvlan on rail 1 with spiderpool drawing from the `v4` and `v6`
    /// pool lists, logging at debug level to the scratch dir.
    fn conflist(&self, version: &str, v4: &[&str], v6: &[&str]) -> Value {
        let mut ipam = spiderpool(v4, v6, &self.ippool_dir(), &self.data_dir());
        ipam["log_file_path"] = json!(self.scratch.path().join("spiderpool.log"));
        ipam["log_level"] = json!("debug");
        list(version, NETWORK, &[macvlan(1, ipam)])
    }

    /// A call for `pod` (no netns: for GC and STATUS), with the pod's name
    /// in CNI_ARGS as kubelet passes it.
    fn call<'a>(&'a self, conflist: &Value, pod: Option<&Netns>) -> Invocation<'a> {
        let cache = self.scratch.path().join("cache");
        let call = Invocation::new(self.node(), conflist, &self.plugins, &cache);
        match pod {
            Some(pod) => call.netns(pod).cni_args(&format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NAMESPACE};K8S_POD_NAME={}",
                pod.name()
            )),
            None => call,
        }
    }

    /// Runs spiderpool alone for `conflist`'s macvlan, as the macvlan
    /// delegates to it: `command` for `container_id` / `ifname` in `pod`.
    fn ipam(
        &self,
        conflist: &Value,
        command: &str,
        container_id: &str,
        ifname: &str,
        pod: &Netns,
    ) -> Outcome {
        let mut stdin = conflist["plugins"][0].clone();
        stdin["cniVersion"] = conflist["cniVersion"].clone();
        stdin["name"] = conflist["name"].clone();
        let pod_path = pod.path();
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container_id),
            ("CNI_NETNS", pod_path.to_str().unwrap()),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", self.plugins.path().to_str().unwrap()),
        ];
        let stdin = stdin.to_string();
        exec_plugin(
            self.node(),
            &self.plugins,
            "spiderpool",
            &env,
            stdin.as_bytes(),
        )
    }

    /// The addresses the store holds in `pool`: one record file each.
    fn held(&self, pool: &str) -> BTreeSet<IpAddr> {
        let dir = self.data_dir().join("pools").join(pool).join("ips");
        let Ok(entries) = fs::read_dir(&dir) else {
            return BTreeSet::new();
        };
        entries
            .map(|e| {
                let name = e.unwrap().file_name();
                let name = name.to_string_lossy();
                name.parse()
                    .unwrap_or_else(|_| panic!("{name:?} in {} is not an IP", dir.display()))
            })
            .collect()
    }

    /// The attachments the store's release index lists for [`NETWORK`], as
    /// `<container id>:<ifname>`.
    fn indexed(&self) -> BTreeSet<String> {
        let dir = self.data_dir().join("attachments").join(NETWORK);
        let Ok(entries) = fs::read_dir(&dir) else {
            return BTreeSet::new();
        };
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(':'))
            .collect()
    }

    /// `spiderctl ARGS --data-dir <data>`, panicking on failure; its stdout.
    fn spiderctl(&self, args: &[&str]) -> String {
        let out = Command::new(our_binary("spiderctl"))
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .expect("cannot run spiderctl (cargo build --release first)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "spiderctl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `spiderctl gc -o json ARGS`: the report.
    fn gc(&self, args: &[&str]) -> Value {
        let out = self.spiderctl(&[&["gc", "-o", "json"][..], args].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("gc -o json: {e}:\n{out}"))
    }

    /// `spiderctl status`: the whole report.
    fn status(&self) -> String {
        let pools = self.ippool_dir();
        self.spiderctl(&["status", "--ippool-dir", pools.to_str().unwrap()])
    }

    /// `(total, allocated, free)` of `pool` as `spiderctl status` reports it.
    fn usage(&self, pool: &str) -> (u64, u64, u64) {
        let report = self.status();
        let line = report
            .lines()
            .find(|l| l.split_whitespace().next() == Some(pool))
            .unwrap_or_else(|| panic!("pool {pool} not in spiderctl status:\n{report}"));
        let n: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(3)
            .map(|f| f.parse().unwrap_or_else(|_| panic!("bad line {line:?}")))
            .collect();
        (n[0], n[1], n[2])
    }

    /// Nothing in `pod` but lo.
    #[track_caller]
    fn assert_pod_empty(&self, pod: &Netns) {
        assert_eq!(link_names(pod), ["lo"], "links left in the pod");
    }
}

/// `172.16.11.<last>`.
fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(172, 16, 11, last))
}

/// The seed pool's addresses, 172.16.11.1 ..= .200.
fn seed_range() -> BTreeSet<IpAddr> {
    (1..=200)
        .map(|last| IpAddr::V4(Ipv4Addr::new(172, 16, 11, last)))
        .collect()
}

/// The `ips[].address` entries of a successful ADD's result, `ip/len` each.
#[track_caller]
fn addresses(outcome: &Outcome) -> Vec<String> {
    let result = outcome.result();
    let ips = result["ips"].as_array().expect("the result has ips");
    ips.iter()
        .map(|ip| ip["address"].as_str().expect("an address").to_owned())
        .collect()
}

/// The one address of a successful single-stack ADD, without its prefix.
#[track_caller]
fn the_ip(outcome: &Outcome) -> IpAddr {
    let all = addresses(outcome);
    assert_eq!(all.len(), 1, "{all:?}");
    let (ip, _) = all[0].split_once('/').expect("ip/len");
    ip.parse().expect("an IP address")
}

/// `(dst, via)` of the routes on `dev` in `ns`.
fn routes(ns: &Netns, dev: &str) -> Vec<(String, Option<String>)> {
    let out = ns.ip(&["-j", "route", "show", "dev", dev]).unwrap();
    let routes: Vec<Value> = serde_json::from_str(&out).unwrap();
    routes
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap().to_owned(),
                r["gateway"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn every_spec_version_allocates_from_the_seed_pool_and_del_frees_it() {
    let rig = Rig::new();
    let driver = Driver::get();
    let gateway = rig.fabric.gateway(1);
    for version in SPEC_VERSIONS {
        let pod = new_pod();
        let call = rig.call(&rig.conflist(version, &[SEED_POOL], &[]), Some(&pod));

        let added = driver.run(Op::Add, &call);
        let result = added.result();
        assert_eq!(result["cniVersion"], version, "{result}");
        let ip = the_ip(&added);
        assert!(seed_range().contains(&ip), "{version}: {ip}");
        // The seed writes 172.16.11.0/16: the address carries the /16.
        let address = format!("{ip}/16");
        assert_eq!(result["ips"][0]["address"], address.as_str(), "{result}");
        assert_eq!(result["ips"][0]["gateway"], "172.16.11.254", "{result}");
        assert_eq!(ipv4_addrs(&pod, "net1"), [address.as_str()], "{version}");
        assert_eq!(rig.held(SEED_POOL), BTreeSet::from([ip]), "{version}");
        assert_eq!(rig.usage(SEED_POOL), (200, 1, 199), "{version}");
        let report = rig.status();
        let holder = format!("{POD_NAMESPACE}/{}", pod.name());
        assert!(
            report.contains(&ip.to_string()) && report.contains(&holder),
            "{version}: spiderctl status does not show {ip} held by {holder}:\n{report}"
        );

        if version >= "0.4.0" {
            driver.run(Op::Check, &call).expect_ok();
        }
        assert!(
            ping_from(&pod, Some("net1"), gateway, 3),
            "{version}: no reply from {gateway}"
        );

        driver.run(Op::Del, &call).expect_ok();
        rig.assert_pod_empty(&pod);
        assert!(rig.held(SEED_POOL).is_empty(), "{version}: DEL kept it");
        assert!(rig.indexed().is_empty(), "{version}: {:?}", rig.indexed());
        assert_eq!(rig.usage(SEED_POOL), (200, 0, 200), "{version}");
    }
}

#[test]
fn the_reference_macvlan_works_with_our_ipam() {
    let rig = Rig::with_macvlan(Source::Reference);
    let driver = Driver::get();
    let pod = new_pod();
    let call = rig.call(&rig.conflist("1.0.0", &[SEED_POOL], &[]), Some(&pod));

    let added = driver.run(Op::Add, &call);
    let ip = the_ip(&added);
    assert!(seed_range().contains(&ip), "{ip}");
    assert_eq!(added.result()["ips"][0]["gateway"], "172.16.11.254");
    assert_eq!(ipv4_addrs(&pod, "net1"), [format!("{ip}/16")]);
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([ip]));
    driver.run(Op::Check, &call).expect_ok();
    assert!(ping_from(&pod, Some("net1"), rig.fabric.gateway(1), 3));

    driver.run(Op::Del, &call).expect_ok();
    rig.assert_pod_empty(&pod);
    assert!(rig.held(SEED_POOL).is_empty());
}

#[test]
fn the_seed_pool_serves_200_pods_refuses_the_201st_and_gives_it_a_freed_address() {
    let rig = Rig::new();
    let driver = Driver::get();
    let conflist = rig.conflist("1.0.0", &[SEED_POOL], &[]);
    let pods: Vec<Netns> = (0..SEED_POOL_SIZE).map(|_| new_pod()).collect();
    let calls: Vec<Invocation> = pods
        .iter()
        .map(|pod| rig.call(&conflist, Some(pod)))
        .collect();
    let ips: Vec<IpAddr> = calls
        .iter()
        .map(|call| the_ip(&driver.run(Op::Add, call)))
        .collect();
    let distinct: BTreeSet<IpAddr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), SEED_POOL_SIZE, "an address was given twice");
    assert_eq!(distinct, seed_range());

    let last_pod = new_pod();
    // An id without digits, so "200" in the message can only be the pool size.
    let last = rig
        .call(&conflist, Some(&last_pod))
        .container_id("the-last-pod");
    let refused = driver.run(Op::Add, &last);
    let msg = refused.expect_error(103, &[SEED_POOL]);
    assert!(
        msg.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "200"),
        "the pool size is not in {msg:?}"
    );
    rig.assert_pod_empty(&last_pod);
    assert_eq!(rig.held(SEED_POOL), distinct);
    assert_eq!(rig.usage(SEED_POOL), (200, 200, 0));
    assert!(!rig.indexed().contains("the-last-pod:net1"));
    // A full pool still answers a repeated ADD with the address it gave.
    let again = rig.ipam(&conflist, "ADD", calls[0].id(), "net1", &pods[0]);
    assert_eq!(the_ip(&again), ips[0]);

    let leaving = 123;
    driver.run(Op::Del, &calls[leaving]).expect_ok();
    rig.assert_pod_empty(&pods[leaving]);
    let retried = driver.run(Op::Add, &last);
    assert_eq!(the_ip(&retried), ips[leaving]);
    assert_eq!(
        ipv4_addrs(&last_pod, "net1"),
        [format!("{}/16", ips[leaving])]
    );
    assert_eq!(rig.usage(SEED_POOL), (200, 200, 0));
}

#[test]
fn a_repeated_add_gets_the_same_address_never_a_second_one() {
    let rig = Rig::new();
    let driver = Driver::get();
    let conflist = rig.conflist("1.0.0", &[SEED_POOL], &[]);
    let pod = new_pod();

    // The IPAM plugin alone, as a macvlan delegates to it.
    let exec = |command, ifname| rig.ipam(&conflist, command, "repeated", ifname, &pod);
    let first = the_ip(&exec("ADD", "net1"));
    assert_eq!(the_ip(&exec("ADD", "net1")), first);
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([first]));
    // Another ifname of the same container is another attachment.
    let other = the_ip(&exec("ADD", "net2"));
    assert_ne!(other, first);
    exec("DEL", "net1").expect_ok();
    exec("DEL", "net2").expect_ok();
    assert!(rig.held(SEED_POOL).is_empty());

    // Through libcni: the pod lost its link (a runtime retrying after a
    // failure further down the chain), the retried ADD keeps the address.
    let call = rig.call(&conflist, Some(&pod));
    let ip = the_ip(&driver.run(Op::Add, &call));
    pod.ip(&["link", "del", "net1"]).unwrap();
    assert_eq!(the_ip(&driver.run(Op::Add, &call)), ip);
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([ip]));
    assert_eq!(ipv4_addrs(&pod, "net1"), [format!("{ip}/16")]);
}

#[test]
fn pool_lists_fall_through_exhausted_and_disabled_pools_and_name_bad_entries() {
    let rig = Rig::new();
    let driver = Driver::get();
    rig.apply(&[
        ippool(
            "one-left",
            json!({"subnet": "172.16.0.0/16", "ips": ["172.16.11.201"], "gateway": "172.16.11.254"}),
        ),
        ippool(
            "switched-off",
            json!({"subnet": "172.16.0.0/16", "ips": ["172.16.11.210-172.16.11.219"], "disable": true}),
        ),
        ippool(
            "gpu1-net11-v6",
            json!({"subnet": "fd00:11::/64", "ips": ["fd00:11::1-fd00:11::9"]}),
        ),
    ]);
    let add = |v4: &[&str]| {
        let pod = new_pod();
        let outcome = driver.run(
            Op::Add,
            &rig.call(&rig.conflist("1.0.0", v4, &[]), Some(&pod)),
        );
        (pod, outcome)
    };

    // The first pool while it has room, then the next.
    let (_pod1, first) = add(&["one-left", SEED_POOL]);
    assert_eq!(the_ip(&first), Ipv4Addr::new(172, 16, 11, 201));
    let (_pod2, second) = add(&["one-left", SEED_POOL]);
    let second = the_ip(&second);
    assert!(seed_range().contains(&second), "{second}");

    // A disabled pool is skipped; alone, it is refused as having nothing.
    let (_pod3, third) = add(&["switched-off", SEED_POOL]);
    let third = the_ip(&third);
    assert!(seed_range().contains(&third), "{third}");
    assert!(rig.held("switched-off").is_empty());
    let (pod4, refused) = add(&["switched-off"]);
    refused.expect_error(103, &["switched-off", "disable"]);
    rig.assert_pod_empty(&pod4);

    // A listed pool that does not exist, or of the wrong family: the config is wrong.
    let (pod5, refused) = add(&[SEED_POOL, "no-such-pool"]);
    refused.expect_error(7, &["no-such-pool"]);
    rig.assert_pod_empty(&pod5);
    let (pod6, refused) = add(&["gpu1-net11-v6"]);
    refused.expect_error(7, &["gpu1-net11-v6", "default_ipv4_ippool"]);
    rig.assert_pod_empty(&pod6);

    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([second, third]));
    assert_eq!(rig.held("one-left").len(), 1);
    assert!(rig.held("gpu1-net11-v6").is_empty());
}

#[test]
fn dual_stack_is_all_or_nothing() {
    let rig = Rig::new();
    let driver = Driver::get();
    rig.apply(&[ippool(
        "v6-one-left",
        json!({"subnet": "fd00:11::/64", "ips": ["fd00:11::1"]}),
    )]);
    let conflist = rig.conflist("1.0.0", &[SEED_POOL], &["v6-one-left"]);

    let first_pod = new_pod();
    let first = rig.call(&conflist, Some(&first_pod));
    let added = driver.run(Op::Add, &first);
    let got = addresses(&added);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1], "fd00:11::1/64");
    let v4: IpAddr = got[0].split_once('/').unwrap().0.parse().unwrap();
    assert!(seed_range().contains(&v4), "{got:?}");

    // v4 has room, v6 has none: the IPAM itself keeps nothing (our macvlan
    // would also DEL after an IPAM failure; the reference one does not).
    let third_pod = new_pod();
    let refused = rig.ipam(&conflist, "ADD", "third", "net1", &third_pod);
    refused.expect_error(103, &["v6-one-left"]);
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([v4]), "v4 kept");
    assert_eq!(
        rig.indexed(),
        BTreeSet::from([format!("{}:net1", first.id())])
    );

    // Through the chain: no link either.
    let second_pod = new_pod();
    let second = rig.call(&conflist, Some(&second_pod));
    let refused = driver.run(Op::Add, &second);
    refused.expect_error(103, &["v6-one-left"]);
    rig.assert_pod_empty(&second_pod);
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([v4]), "v4 kept");
    assert_eq!(
        rig.indexed(),
        BTreeSet::from([format!("{}:net1", first.id())])
    );
    assert_eq!(rig.held("v6-one-left").len(), 1);

    // Once the v6 address is free, the retry gets both.
    driver.run(Op::Del, &first).expect_ok();
    let retried = addresses(&driver.run(Op::Add, &second));
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert_eq!(retried[1], "fd00:11::1/64");
    assert_eq!(ipv4_addrs(&second_pod, "net1"), [retried[0].as_str()]);
}

/// `conflist` as `spiderctl render` writes it: the macvlan declares the `ips` capability, so
/// libcni (Multus, podman) passes requests in its `runtimeConfig`.
fn with_ips_capability(mut conflist: Value) -> Value {
    conflist["plugins"][0]["capabilities"] = json!({"ips": true});
    conflist
}

#[test]
fn a_requested_address_is_given_exactly_as_podman_and_multus_ask_for_it() {
    let rig = Rig::new();
    let driver = Driver::get();
    let conflist = with_ips_capability(rig.conflist("1.0.0", &[SEED_POOL], &[]));
    let args =
        |pod: &Netns, extra: &str| format!("IgnoreUnknown=1;K8S_POD_NAME={}{extra}", pod.name());

    // podman's `--network gpu1-macvlan:ip=172.16.11.150`: CNI_ARGS IP= and runtimeConfig.ips.
    let podman_pod = new_pod();
    let podman = rig
        .call(&conflist, Some(&podman_pod))
        .cni_args(&args(&podman_pod, ";IP=172.16.11.150"))
        .capability_args(json!({"ips": ["172.16.11.150"]}));
    let added = driver.run(Op::Add, &podman);
    assert_eq!(addresses(&added), ["172.16.11.150/16"]);
    assert_eq!(ipv4_addrs(&podman_pod, "net1"), ["172.16.11.150/16"]);
    driver.run(Op::Check, &podman).expect_ok();
    // A repeated ADD asking again gets the same address.
    let mut repeated = conflist.clone();
    repeated["plugins"][0]["runtimeConfig"] = json!({"ips": ["172.16.11.150"]});
    let again = rig.ipam(&repeated, "ADD", podman.id(), "net1", &podman_pod);
    assert_eq!(the_ip(&again), ip(150));

    // Multus' network selection `ips`, with the prefix, as runtimeConfig only.
    let multus_pod = new_pod();
    let multus = rig
        .call(&conflist, Some(&multus_pod))
        .capability_args(json!({"ips": ["172.16.11.151/16"]}));
    assert_eq!(the_ip(&driver.run(Op::Add, &multus)), ip(151));
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([ip(150), ip(151)]));

    // Somebody else asking for a held address is refused, naming it, its holder and the
    // pools; nothing is held and no link is left.
    let late_pod = new_pod();
    let late = rig
        .call(&conflist, Some(&late_pod))
        .cni_args(&args(&late_pod, ";IP=172.16.11.150"));
    let refused = driver.run(Op::Add, &late);
    refused.expect_error(
        109,
        &[
            "requested 172.16.11.150",
            &format!("held by container {}", podman.id()),
            "pools considered: gpu1-net11 (172.16.11.1-172.16.11.200)",
        ],
    );
    rig.assert_pod_empty(&late_pod);
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([ip(150), ip(151)]));

    // Once it is released, the same request gets it.
    driver.run(Op::Del, &podman).expect_ok();
    assert_eq!(the_ip(&driver.run(Op::Add, &late)), ip(150));
    assert_eq!(ipv4_addrs(&late_pod, "net1"), ["172.16.11.150/16"]);
}

#[test]
fn a_family_without_a_request_allocates_as_usual_and_one_outside_the_network_is_refused() {
    let rig = Rig::new();
    let driver = Driver::get();
    rig.apply(&[ippool(
        "v6",
        json!({"subnet": "fd00:11::/64", "ips": ["fd00:11::1-fd00:11::9"]}),
    )]);
    let dual = with_ips_capability(rig.conflist("1.0.0", &[SEED_POOL], &["v6"]));
    let pod = new_pod();
    let call = rig
        .call(&dual, Some(&pod))
        .capability_args(json!({"ips": ["172.16.11.77"]}));
    let got = addresses(&driver.run(Op::Add, &call));
    assert_eq!(got[0], "172.16.11.77/16", "{got:?}");
    assert!(got[1].starts_with("fd00:11::"), "{got:?}");

    // A request in a family the network does not allocate, and one in none of its pools.
    let v4_only = with_ips_capability(rig.conflist("1.0.0", &[SEED_POOL], &[]));
    for (request, fragments) in [
        (
            "fd00:11::5",
            &["requested fd00:11::5 is IPv6", "allocates no IPv6"][..],
        ),
        (
            "172.16.11.250",
            &[
                "requested 172.16.11.250 is in none of the IPv4 pools",
                "gpu1-net11 (172.16.11.1-172.16.11.200)",
            ][..],
        ),
        (
            "172.16.11.9/24",
            &["pool gpu1-net11 is 172.16.0.0/16", "not the /24 asked for"][..],
        ),
    ] {
        let other = new_pod();
        let refused = driver.run(
            Op::Add,
            &rig.call(&v4_only, Some(&other))
                .capability_args(json!({"ips": [request]})),
        );
        refused.expect_error(109, fragments);
        rig.assert_pod_empty(&other);
    }
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([ip(77)]));
}

#[test]
fn routes_of_the_pool_reach_the_result_and_the_pod() {
    let rig = Rig::new();
    rig.apply(&[ippool(
        "routed",
        json!({
            "subnet": "172.16.0.0/16",
            "ips": ["172.16.11.220-172.16.11.229"],
            "gateway": "172.16.11.254",
            "routes": [
                {"dst": "10.20.0.0/16", "gw": "172.16.11.254"},
                {"dst": "192.168.50.0/24", "gw": "172.16.11.253"},
            ],
        }),
    )]);
    let pod = new_pod();
    let call = rig.call(&rig.conflist("1.0.0", &["routed"], &[]), Some(&pod));
    let added = Driver::get().run(Op::Add, &call);
    let result = added.result();
    assert_eq!(
        result["routes"],
        json!([
            {"dst": "10.20.0.0/16", "gw": "172.16.11.254"},
            {"dst": "192.168.50.0/24", "gw": "172.16.11.253"},
        ]),
        "{result}"
    );
    let installed = routes(&pod, "net1");
    for (dst, via) in [
        ("10.20.0.0/16", "172.16.11.254"),
        ("192.168.50.0/24", "172.16.11.253"),
    ] {
        assert!(
            installed.contains(&(dst.to_owned(), Some(via.to_owned()))),
            "{dst} via {via} not in {installed:?}"
        );
    }
    assert!(
        !installed.iter().any(|(dst, _)| dst == "default"),
        "{installed:?}"
    );

    // The route carries traffic: an address behind the rail's gateway answers.
    rig.fabric
        .rail(1)
        .ip(&["addr", "add", "10.20.0.1/32", "dev", "br0"])
        .unwrap();
    assert!(ping_from(
        &pod,
        Some("net1"),
        Ipv4Addr::new(10, 20, 0, 1),
        3
    ));
    Driver::get().run(Op::Check, &call).expect_ok();
}

#[test]
fn gc_releases_what_is_not_a_valid_attachment() {
    let rig = Rig::new();
    let driver = Driver::get();
    let conflist = rig.conflist("1.1.0", &[SEED_POOL], &[]);
    let pods: Vec<Netns> = (0..3).map(|_| new_pod()).collect();
    let calls: Vec<Invocation> = pods
        .iter()
        .map(|pod| rig.call(&conflist, Some(pod)))
        .collect();
    let ips: Vec<IpAddr> = calls
        .iter()
        .map(|call| the_ip(&driver.run(Op::Add, call)))
        .collect();
    assert_eq!(rig.held(SEED_POOL).len(), 3);

    let gc = rig
        .call(&conflist, None)
        .valid_attachments(&[(calls[0].id(), "net1"), (calls[1].id(), "net1")]);
    driver.run(Op::Gc, &gc).expect_ok();
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([ips[0], ips[1]]));
    let kept = calls[..2].iter().map(|c| format!("{}:net1", c.id()));
    assert_eq!(rig.indexed(), kept.collect());
    driver.run(Op::Check, &calls[0]).expect_ok();
    // The runtime's DEL of the collected one still succeeds.
    driver.run(Op::Del, &calls[2]).expect_ok();
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([ips[0], ips[1]]));
}

#[test]
fn status_is_ok_with_good_pools_and_50_without_them() {
    let rig = Rig::new();
    let driver = Driver::get();
    let status = |conflist: &Value| driver.run(Op::Status, &rig.call(conflist, None));

    let mut conflist = rig.conflist("1.1.0", &[SEED_POOL], &[]);
    status(&conflist).expect_ok();

    let missing = rig.scratch.path().join("no-ippools-here");
    conflist["plugins"][0]["ipam"]["ippool_dir"] = json!(missing);
    status(&conflist).expect_error(50, &["no-ippools-here"]);

    // A data dir that cannot be a directory: the store is unusable.
    let mut unwritable = rig.conflist("1.1.0", &[SEED_POOL], &[]);
    let file = rig.scratch.path().join("a-file");
    fs::write(&file, "").unwrap();
    unwritable["plugins"][0]["ipam"]["data_dir"] = json!(file);
    status(&unwritable).expect_error(50, &["a-file"]);

    // A broken file breaks only itself; one whose name is the pool's breaks the network.
    fs::write(rig.ippool_dir().join("broken.yaml"), "kind: [\n").unwrap();
    let conflist = rig.conflist("1.1.0", &[SEED_POOL], &[]);
    status(&conflist).expect_ok();
    let named = format!("{SEED_POOL}.yml");
    fs::write(rig.ippool_dir().join(&named), "kind: [\n").unwrap();
    status(&conflist).expect_error(50, &[&named, "cannot parse as YAML"]);
}

/// `(ip, container id)` of each leak of a `gc -o json` report.
fn leaked(report: &Value) -> Vec<(IpAddr, String)> {
    report["leaked"]
        .as_array()
        .unwrap_or_else(|| panic!("no leaked list: {report}"))
        .iter()
        .map(|l| {
            let ip = l["ip"].as_str().unwrap().parse().unwrap();
            (ip, l["containerID"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn spiderctl_gc_reports_then_releases_allocations_of_gone_pods() {
    let rig = Rig::new();
    let driver = Driver::get();
    let conflist = rig.conflist("1.0.0", &[SEED_POOL], &[]);
    let live = new_pod();
    let live_ip = the_ip(&driver.run(Op::Add, &rig.call(&conflist, Some(&live))));
    let doomed = new_pod();
    let doomed_call = rig.call(&conflist, Some(&doomed));
    let leaked_ip = the_ip(&driver.run(Op::Add, &doomed_call));
    // The runtime lost the pod without a DEL.
    drop(doomed);
    let both = BTreeSet::from([live_ip, leaked_ip]);

    let report = rig.gc(&[]);
    assert_eq!(
        leaked(&report),
        [(leaked_ip, doomed_call.id().to_owned())],
        "{report}"
    );
    assert_eq!(report["released"], Value::Null);
    assert_eq!(rig.held(SEED_POOL), both, "a dry run released something");

    let applied = rig.gc(&["--apply"]);
    assert_eq!(applied["released"], 1, "{applied}");
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([live_ip]));
    assert!(leaked(&rig.gc(&[])).is_empty());
    driver.run(Op::Del, &doomed_call).expect_ok();
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([live_ip]));
}

/// podman never sends DEL once a container's netns bind mount is gone, and what is left at
/// the path is the empty file the mount was made on: gc must see that as gone, not as alive
/// because the path exists.
#[test]
fn spiderctl_gc_treats_a_netns_path_that_is_no_namespace_as_gone() {
    let rig = Rig::new();
    let driver = Driver::get();
    let conflist = rig.conflist("1.0.0", &[SEED_POOL], &[]);
    let live = new_pod();
    let live_ip = the_ip(&driver.run(Op::Add, &rig.call(&conflist, Some(&live))));
    let stale = rig.scratch.path().join("netns-stale");
    fs::write(&stale, "").unwrap();
    let mut stdin = conflist["plugins"][0].clone();
    stdin["cniVersion"] = json!("1.0.0");
    stdin["name"] = json!(NETWORK);
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "stale-netns"),
        ("CNI_NETNS", stale.to_str().unwrap()),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", rig.plugins.path().to_str().unwrap()),
    ];
    let stdin = stdin.to_string();
    let added = exec_plugin(
        rig.node(),
        &rig.plugins,
        "spiderpool",
        &env,
        stdin.as_bytes(),
    );
    let stale_ip = the_ip(&added);

    let report = rig.gc(&[]);
    assert_eq!(
        leaked(&report),
        [(stale_ip, "stale-netns".to_owned())],
        "{report}"
    );
    let applied = rig.gc(&["--apply"]);
    assert_eq!(applied["released"], 1, "{applied}");
    assert_eq!(rig.held(SEED_POOL), BTreeSet::from([live_ip]));
    assert_eq!(rig.indexed().len(), 1, "{:?}", rig.indexed());
}

/// A DEL whose netns path no longer is a namespace (its bind mount gone, the empty file left)
/// has nothing to clean up in the pod but must still release the address, and succeed.
#[test]
fn del_with_a_netns_path_that_is_no_namespace_releases_and_succeeds() {
    let rig = Rig::new();
    let driver = Driver::get();
    let conflist = rig.conflist("1.0.0", &[SEED_POOL], &[]);
    let pod = new_pod();
    let call = |pod| rig.call(&conflist, Some(pod)).container_id("unmounted");
    the_ip(&driver.run(Op::Add, &call(&pod)));
    let stale = rig.scratch.path().join("netns-unmounted");
    fs::write(&stale, "").unwrap();
    driver
        .run(Op::Del, &call(&pod).netns_path(&stale))
        .expect_ok();
    assert_eq!(rig.held(SEED_POOL), BTreeSet::new());
}

#[test]
fn add_on_an_unusable_store_fails_with_5_and_leaves_no_link() {
    let rig = Rig::new();
    let file = rig.scratch.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let mut conflist = rig.conflist("1.0.0", &[SEED_POOL], &[]);
    conflist["plugins"][0]["ipam"]["data_dir"] = json!(file);
    let pod = new_pod();
    let refused = Driver::get().run(Op::Add, &rig.call(&conflist, Some(&pod)));
    refused.expect_error(5, &["not-a-dir"]);
    rig.assert_pod_empty(&pod);
}

#[test]
fn without_spiderpool_etcd_beside_it_an_etcd_config_fails_with_5_naming_it() {
    let rig = Rig::new();
    // A copy, not a symlink: spiderpool looks for spiderpool-etcd beside its real file.
    let lonely = rig.scratch.path().join("lonely");
    fs::create_dir(&lonely).unwrap();
    fs::copy(our_binary("spiderpool"), lonely.join("spiderpool")).unwrap();
    let plugins = PluginDir::new(&[("spiderpool", Source::File(lonely.join("spiderpool")))]);
    let pod = new_pod();
    let pod_path = pod.path();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "lonely"),
        ("CNI_NETNS", pod_path.to_str().unwrap()),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", plugins.path().to_str().unwrap()),
    ];
    let mut stdin = rig.conflist("1.0.0", &[SEED_POOL], &[])["plugins"][0].clone();
    stdin["cniVersion"] = json!("1.0.0");
    stdin["name"] = json!(NETWORK);
    stdin["ipam"]["store"] = json!({"type": "etcd", "endpoints": ["http://127.0.0.1:1"]});
    let refused = exec_plugin(
        rig.node(),
        &plugins,
        "spiderpool",
        &env,
        stdin.to_string().as_bytes(),
    );
    let missing = lonely.join("spiderpool-etcd");
    refused.expect_error(
        5,
        &[
            missing.to_str().unwrap(),
            "install spiderpool-etcd in the same directory",
        ],
    );
    assert!(rig.held(SEED_POOL).is_empty());
}
