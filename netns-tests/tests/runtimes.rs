//! Our plugins driven by real container runtimes, the way their users drive them (issue 14):
//! Debian's podman 4.3 (CNI backend) and containerd 1.6's CRI (through our own CRI client),
//! each on a node namespace with rails 1 and 2, with the seed's gpu1 and gpu2 networks
//! applied by `spiderctl apply`. Each runtime runs in a private mount namespace with all its
//! state in temp dirs; the host paths they would use are shielded, and each test asserts
//! that only the paths the runtime compiles in were written there and that the host's CNI
//! and runtime dirs did not change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use netns_tests::probe::link_names;
use netns_tests::runtimes::cgroup::CgroupTree;
use netns_tests::runtimes::containerd::{Containerd, CONTAINERD_COMPILED_IN};
use netns_tests::runtimes::cri::CriClient;
use netns_tests::runtimes::host::RuntimeHost;
use netns_tests::runtimes::networks::{Held, Networks, Rail};
use netns_tests::runtimes::podman::{Podman, PODMAN_COMPILED_IN};
use netns_tests::runtimes::routing::{self, expected_owner, Expected, Failure, PodNet, Report};
use netns_tests::state::DirState;
use netns_tests::topology;
use netns_tests::Fabric;

/// The host paths the runtimes would use by default: none of them may change.
const HOST_PATHS: [&str; 9] = [
    "/opt/cni/bin",
    "/etc/cni/net.d",
    "/var/lib/cni",
    "/etc/containers",
    "/var/lib/containers",
    "/run/containers",
    "/run/libpod",
    "/run/containerd",
    "/var/lib/containerd",
];

/// Restarts of the podman container: podman attaches its networks in random order, so each
/// restart is another chance for the order to matter.
const PODMAN_RESTARTS: usize = 4;
/// Sandboxes through the CRI, one after another; inside each, go-cni attaches both networks
/// at once.
const SANDBOXES: usize = 50;
/// The Kubernetes namespace our CRI client puts its pods in.
const POD_NAMESPACE: &str = "sptest-ns";

fn node_with_two_rails() -> Fabric {
    Fabric::build(1, &[topology::Rail::new(1), topology::Rail::new(2)])
}

fn host_paths() -> Vec<DirState> {
    HOST_PATHS
        .iter()
        .map(|p| DirState::of(Path::new(p)))
        .collect()
}

fn assert_host_paths_unchanged(before: &[DirState]) {
    for (path, (before, after)) in HOST_PATHS.iter().zip(before.iter().zip(host_paths())) {
        let diff = after.diff(before);
        assert!(diff.is_empty(), "{path} changed: {diff:?}");
    }
}

/// Only the compiled-in paths were written to the shields, and libcni's cache holds no
/// result any more (every attachment got its DEL).
fn assert_only_compiled_in_paths(host: &RuntimeHost, allowed: &[&str]) {
    let written = host.written();
    let unexpected: Vec<&String> = written
        .iter()
        .filter(|p| !allowed.contains(&p.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "written outside the runtime's dirs: {unexpected:?} (all: {written:?})"
    );
}

/// The namespace at `path` (inode `inode`) is gone: no file, no mount of it in the runtime's
/// mount namespace, no process of ours in it.
fn assert_netns_gone(host: &RuntimeHost, cgroups: &CgroupTree, path: &str, inode: u64) {
    assert!(!host.exists(path), "{path} is still there");
    let mounts = host.netns_mounts(inode);
    assert!(mounts.is_empty(), "{path} is still mounted: {mounts:?}");
    let inside: Vec<u32> = host
        .processes()
        .into_iter()
        .chain(cgroups.processes())
        .filter(|pid| {
            PodNet::of_pid(*pid).ns_file().metadata().is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino() == inode
            })
        })
        .collect();
    assert!(
        inside.is_empty(),
        "processes {inside:?} are still in {path}"
    );
}

/// What the store must hold for a live pod: one record per NIC, for exactly this attachment.
fn live_records(
    report: &Report,
    rails: &[(Rail, &str)],
    container_id: &str,
    netns: &str,
    pod: (Option<&str>, &str),
) -> Vec<Held> {
    let mut held: Vec<Held> = rails
        .iter()
        .map(|(rail, ifname)| Held {
            ip: IpAddr::V4(report.nic(ifname).address),
            network: rail.network(),
            container_id: container_id.to_owned(),
            ifname: (*ifname).to_owned(),
            netns: netns.to_owned(),
            pod_namespace: pod.0.map(str::to_owned),
            pod_name: Some(pod.1.to_owned()),
        })
        .collect();
    held.sort();
    held
}

fn expected(rails: &[(Rail, &str)]) -> Vec<Expected> {
    rails
        .iter()
        .map(|(rail, ifname)| Expected {
            ifname: (*ifname).to_owned(),
            gateway: rail.gateway(),
        })
        .collect()
}

/// "<kind>: <n> of <SANDBOXES> sandboxes" for each kind of failure seen.
fn summary(failures: &[(usize, Failure)]) -> Vec<String> {
    let mut by_kind: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, f) in failures {
        by_kind.entry(f.kind).or_default().insert(*i);
    }
    by_kind
        .iter()
        .map(|(kind, pods)| format!("{kind}: {} of {SANDBOXES} sandboxes", pods.len()))
        .collect()
}

#[test]
fn podman_attaches_two_networks_by_interface_name_across_restarts_and_releases_on_stop() {
    let before = host_paths();
    let fabric = node_with_two_rails();
    let networks = Networks::apply(&[1, 2]);
    let podman = Podman::new(fabric.node(1), &networks);
    let rails = [(Rail(1), "net1"), (Rail(2), "net2")];
    let owner = expected_owner(&["net1", "net2"]);

    let started = podman.start_container(
        "c1",
        &[
            "--network",
            "gpu1-macvlan:interface_name=net1",
            "--network",
            "gpu2-macvlan:interface_name=net2",
        ],
    );
    assert!(
        started.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let id = String::from_utf8_lossy(&started.stdout).trim().to_owned();

    let mut previous: Option<(String, u64)> = None;
    for round in 0..=PODMAN_RESTARTS {
        if round > 0 {
            podman.ok(&["restart", "--time", "5", "c1"]);
        }
        let pod = PodNet::of_pid(podman.pid("c1"));
        let netns = podman.netns("c1");
        if let Some((path, inode)) = previous.take() {
            if pod.inode() == inode {
                // The kernel gave the new namespace the freed one's inode number (two live
                // namespaces never share one), so the old one is gone: mounts and processes
                // with that inode are the new namespace's.
                assert!(!podman.host.exists(&path), "{path} is still there");
                assert_ne!(path, netns, "round {round}: the same netns path again");
            } else {
                assert_netns_gone(&podman.host, &podman.cgroups, &path, inode);
            }
        }
        assert_eq!(pod.links(), ["net1", "net2"], "round {round}");
        let report = routing::check(&pod, &expected(&rails), &owner);
        assert!(
            report.failures.is_empty(),
            "round {round}: {:#?}\n{:#?}",
            report.failures,
            report.nics
        );
        for (rail, ifname) in rails {
            let nic = report.nic(ifname);
            assert!(
                rail.pool_has(nic.address),
                "round {round}: {nic:?} not from {}",
                rail.pool()
            );
            // README: the table of netN is 100 + N, the rule's priority 20000 + table.
            let table = 100 + u32::from(rail.0);
            assert_eq!(
                nic.rule,
                Some((table, 20000 + table)),
                "round {round}: {nic:?}"
            );
        }
        // No leak across restarts: the pools hold exactly what is live, for this netns.
        assert_eq!(
            networks.held(),
            live_records(&report, &rails, &id, &netns, (None, "c1")),
            "round {round}"
        );
        previous = Some((netns, pod.inode()));
    }

    podman.ok(&["stop", "--time", "5", "c1"]);
    assert_eq!(networks.held(), [], "after podman stop");
    let (path, inode) = previous.take().expect("the last netns");
    assert_netns_gone(&podman.host, &podman.cgroups, &path, inode);
    podman.ok(&["rm", "c1"]);
    assert_eq!(networks.held(), [], "after podman rm");

    // Podman's own default network was never set up: no conflist of its own among ours (its
    // CNI backend keeps a lock file there), no bridge on the node.
    let files: Vec<String> = networks.conf_files().into_iter().collect();
    assert_eq!(
        files,
        [
            "90-gpu1-macvlan.conflist",
            "90-gpu2-macvlan.conflist",
            "cni.lock"
        ]
    );
    let node_links = link_names(fabric.node(1));
    assert!(
        !node_links.iter().any(|l| l.starts_with("cni-podman")),
        "{node_links:?}"
    );
    assert_only_compiled_in_paths(&podman.host, &PODMAN_COMPILED_IN);
    drop(podman);
    assert_host_paths_unchanged(&before);
}

#[test]
fn podman_static_ip_request_gets_exactly_that_address_or_a_clear_refusal() {
    let before = host_paths();
    let fabric = node_with_two_rails();
    let networks = Networks::apply(&[1, 2]);
    let podman = Podman::new(fabric.node(1), &networks);
    let wanted = Ipv4Addr::new(172, 16, 11, 150);
    let rails = [(Rail(1), "eth0")];

    // Podman 4.3 sends the request as CNI_ARGS IP=172.16.11.150 and adds
    // "capabilities": {"ips": true} to each plugin's config, but no runtimeConfig, even when
    // the conflist declares the capability itself: IP= is all spiderpool gets.
    let request = format!("gpu1-macvlan:ip={wanted}");
    let started = podman.start_container("static", &["--network", &request]);
    assert!(
        started.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let id = String::from_utf8_lossy(&started.stdout).trim().to_owned();
    let pod = PodNet::of_pid(podman.pid("static"));
    assert_eq!(pod.ipv4("eth0"), [(wanted, 16)]);
    let report = routing::check(&pod, &expected(&rails), "eth0");
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    let netns = podman.netns("static");
    assert_eq!(
        networks.held(),
        live_records(&report, &rails, &id, &netns, (None, "static"))
    );

    // The same address for another container: refused, naming the address, holding nothing.
    let again = podman.start_container("again", &["--network", &request]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "a second {wanted} was handed out");
    assert!(stderr.contains(&wanted.to_string()), "{stderr}");
    podman.ok(&["rm", "--force", "again"]);
    assert_eq!(
        networks.held(),
        live_records(&report, &rails, &id, &netns, (None, "static"))
    );

    podman.ok(&["rm", "--force", "--time", "5", "static"]);
    assert_eq!(networks.held(), []);
    assert_only_compiled_in_paths(&podman.host, &PODMAN_COMPILED_IN);
    drop(podman);
    assert_host_paths_unchanged(&before);
}

#[test]
fn containerd_cri_attaches_two_networks_at_once_in_50_sandboxes_and_releases_them() {
    let before = host_paths();
    let fabric = node_with_two_rails();
    let networks = Networks::apply(&[1, 2]);
    // max_conf_num = 2: go-cni attaches the conf dir's first two conflists at the same time,
    // as eth0 (90-gpu1-macvlan) and eth1 (90-gpu2-macvlan).
    let containerd = Containerd::start(fabric.node(1), &networks, 2);
    let mut cri = CriClient::connect(&containerd.socket());
    assert_eq!(cri.version().0, "containerd");
    let rails = [(Rail(1), "eth0"), (Rail(2), "eth1")];
    // podDefaultCniNic is eth0, and eth0 is ours here: it owns the main default.
    let owner = expected_owner(&["eth0", "eth1"]);
    assert_eq!(owner, "eth0");

    let mut failures: Vec<(usize, Failure)> = Vec::new();
    let mut layouts: BTreeMap<String, BTreeSet<Option<(u32, u32)>>> = BTreeMap::new();
    for i in 0..SANDBOXES {
        let name = format!("pod-{i}");
        let uid = format!("00000000-0000-0000-0000-{i:012}");
        let cgroup = format!("{}/pod{uid}", containerd.cgroups.parent());
        let id = cri
            .run_sandbox(&name, &uid, POD_NAMESPACE, &cgroup)
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", containerd.log()));
        let sandbox = cri.inspect(&id).expect("PodSandboxStatus");
        assert_eq!(sandbox.state, "SANDBOX_READY", "{name}");
        let pod = PodNet::of_pid(sandbox.pid);
        assert_eq!(pod.links(), ["eth0", "eth1"], "{name}");

        let report = routing::check(&pod, &expected(&rails), &owner);
        failures.extend(report.failures.iter().cloned().map(|f| (i, f)));
        for (rail, ifname) in rails {
            let nic = report.nic(ifname);
            assert!(
                rail.pool_has(nic.address),
                "{name}: {nic:?} not from {}",
                rail.pool()
            );
            layouts
                .entry(ifname.to_owned())
                .or_default()
                .insert(nic.rule);
        }
        // The CRI's pod IP is eth0's, and the store knows the pod by the CNI_ARGS containerd
        // sent (K8S_POD_NAMESPACE, K8S_POD_NAME) and the netns it passed.
        assert_eq!(sandbox.ip, report.nic("eth0").address.to_string(), "{name}");
        assert_eq!(
            networks.held(),
            live_records(
                &report,
                &rails,
                &id,
                &sandbox.netns,
                (Some(POD_NAMESPACE), &name)
            ),
            "{name}"
        );

        let inode = pod.inode();
        cri.stop(&id)
            .unwrap_or_else(|e| panic!("StopPodSandbox {name}: {e}"));
        assert_eq!(networks.held(), [], "{name}: after StopPodSandbox");
        cri.remove(&id)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {name}: {e}"));
        assert_eq!(networks.held(), [], "{name}: after RemovePodSandbox");
        assert_netns_gone(&containerd.host, &containerd.cgroups, &sandbox.netns, inode);
    }

    assert!(
        failures.is_empty(),
        "{:#?}\nfirst failures: {:#?}",
        summary(&failures),
        failures.iter().take(12).collect::<Vec<_>>()
    );
    // The table and priority of a NIC follow from its name alone, whichever chain ran first.
    for (ifname, seen) in &layouts {
        assert_eq!(seen.len(), 1, "{ifname} got different rules: {seen:?}");
    }
    assert_only_compiled_in_paths(&containerd.host, &CONTAINERD_COMPILED_IN);
    drop(cri);
    drop(containerd);
    assert_host_paths_unchanged(&before);
}
