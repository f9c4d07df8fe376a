//! `scripts/image`: the archive holds the static binaries and nothing else, `podman load`
//! takes it, and `agent --once` run in it by podman (`--network none`, a temporary "host" tree
//! mounted) installs the plugins and writes the conflists, pools and GC state. podman runs
//! inside a node netns and a private mount namespace with all its state under temp dirs (see
//! `runtimes::podman`), as does the build. Run as root after `cargo build --release`.

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use netns_tests::agent::HostTree;
use netns_tests::paths::{temp_dir, workspace_root};
use netns_tests::plugins::our_binary;
use netns_tests::runtimes::networks::Networks;
use netns_tests::runtimes::podman::Podman;
use netns_tests::Netns;
use serde_json::Value;

const BINARIES: [&str; 5] = [
    "spiderctl",
    "macvlan",
    "spiderpool",
    "spiderpool-etcd",
    "coordinator",
];

fn tar_member(archive: &std::path::Path, member: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar {member}: {:?}", out);
    out.stdout
}

#[test]
fn the_image_runs_agent_once_under_podman_and_installs_into_the_host_tree() {
    let scratch = temp_dir("image");
    let archive = scratch.path().join("spider-cni-image.tar");
    let built = Command::new(workspace_root().join("scripts/image"))
        .arg("--no-build")
        .arg("--output")
        .arg(&archive)
        .env(
            "SPIDER_BIN_DIR",
            our_binary("spiderctl").parent().expect("a dir"),
        )
        .output()
        .expect("scripts/image runs");
    assert!(
        built.status.success(),
        "scripts/image: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let tag = format!("localhost/spider-cni:{}", env!("CARGO_PKG_VERSION"));

    // One layer: /bin and the five binaries, nothing else.
    let manifest: Value = serde_json::from_slice(&tar_member(&archive, "manifest.json")).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], tag.as_str());
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer = scratch.path().join("layer.tar");
    fs::write(&layer, tar_member(&archive, layers[0].as_str().unwrap())).unwrap();
    let listing = Command::new("tar").arg("-tf").arg(&layer).output().unwrap();
    let entries: BTreeSet<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let mut expected: BTreeSet<String> = BINARIES.iter().map(|b| format!("bin/{b}")).collect();
    expected.insert("bin".into());
    assert_eq!(entries, expected);

    let node = Netns::new("image-node");
    let networks = Networks::apply(&[1]);
    let podman = Podman::new(&node, &networks);
    let loaded = podman.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains(&tag), "{loaded}");
    let entrypoint = podman.ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.Entrypoint}}",
        &tag,
    ]);
    assert_eq!(entrypoint, "[/bin/spiderctl]");

    let host = HostTree::new("image-host");
    let seed = workspace_root().join("conf/seed");
    let parent = format!("--cgroup-parent={}", podman.cgroups.parent());
    let host_mount = format!("{}:/host", host.root().display());
    let config_mount = format!("{}:/config:ro", seed.display());
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        &parent,
        "-v",
        &host_mount,
        "-v",
        &config_mount,
        &tag,
        "agent",
        "--once",
    ];
    let flags = [
        ("--cni-bin-dir", "/host/opt/cni/bin"),
        ("--cni-conf-dir", "/host/etc/cni/net.d"),
        ("--ippool-dir", "/host/etc/cni/net.d/spiderpool/ippools"),
        ("--data-dir", "/host/var/lib/cni/spiderpool"),
        ("--config-dir", "/config"),
    ];
    for (flag, value) in &flags {
        args.extend([*flag, *value]);
    }
    let run = podman.run(&args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "agent --once in the image: {stderr}");
    assert!(stderr.contains("pass done (0 failure(s))"), "{stderr}");

    for plugin in &BINARIES[1..] {
        assert_eq!(
            fs::read(host.bin().join(plugin)).unwrap(),
            fs::read(our_binary(plugin)).unwrap(),
            "{plugin}"
        );
    }
    for n in 1..=8 {
        let conflist = host.conf().join(format!("90-gpu{n}-macvlan.conflist"));
        let conflist: Value = serde_json::from_slice(&fs::read(&conflist).unwrap()).unwrap();
        // Conflists name the pool and data dirs as the agent sees them: so the DaemonSet
        // mounts those host dirs at their own paths (conf/deploy), and here they are /host/...
        assert_eq!(
            conflist["plugins"][0]["ipam"]["ippool_dir"],
            "/host/etc/cni/net.d/spiderpool/ippools"
        );
        assert!(host
            .ippools()
            .join(format!("gpu{n}-net1{n}.yaml"))
            .is_file());
    }
    assert!(host.data().join("agent-gc-misses.json").is_file());

    let help = podman.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        &parent,
        &tag,
        "webhook",
        "--help",
    ]);
    assert!(help.status.success(), "{help:?}");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--tls-cert"));
}
