//! Hardening of the spiderpool IPAM plugin as a binary, the way a node runs it: its state is
//! private whatever the umask, no container id, ifname or network name and no symlink planted
//! in the store makes it write outside its data dir, and what it reads (stdin, pool files) is
//! bounded. The store's own unit tests check the same rules on the library; these check that
//! nothing between the runtime and the store loses them.
//!
//! The plugin runs in a namespace of its own (it touches no network, but nothing of ours runs
//! in the root netns), behind `timeout` so that a hang fails the test instead of stalling it.
//! Run as root after `cargo build --release`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use netns_tests::conflist::{spiderpool, write_seed_ippool, SEED_POOL};
use netns_tests::paths::temp_dir;
use netns_tests::plugins::{our_binary, wrapper};
use netns_tests::state::DirState;
use netns_tests::{exec_plugin, CniEnv, Netns, Outcome, PluginDir};
use serde_json::{json, Value};
use tempfile::TempDir;

const NETWORK: &str = "gpu1-macvlan";
/// A plugin call takes milliseconds; one still running after this is hung.
const HANG_SECS: u32 = 20;
/// The bounds the plugins document (cni::skel, ipam_store::manifest).
const MAX_STDIN: usize = 1 << 20;
const MAX_MANIFEST: usize = 4 << 20;

/// A namespace to run in, the seed's pool, and scratch space laid out so that anything a
/// plugin writes is seen: the data dir sits four levels down in `scratch`, so a name that
/// climbs out with up to four `..` still lands where the test looks.
struct Rig {
    node: Netns,
    scratch: TempDir,
    /// Apart from `scratch`, whose every byte some tests compare.
    logs: TempDir,
    plugins: PluginDir,
}

impl Rig {
    fn new() -> Rig {
        let scratch = temp_dir("hardening");
        let root = scratch.path();
        for dir in ["ippools", "wrappers"] {
            fs::create_dir(root.join(dir)).unwrap();
        }
        write_seed_ippool(&root.join("ippools"));
        // umask 000: the modes checked below must be the plugin's own choice, not the umask's.
        let prefix = format!("umask 000; exec timeout -s KILL {HANG_SECS}");
        let spiderpool = wrapper(
            &root.join("wrappers"),
            "hardened",
            &prefix,
            &our_binary("spiderpool"),
        );
        Rig {
            node: Netns::new("node"),
            plugins: PluginDir::new(&[("spiderpool", spiderpool)]),
            logs: temp_dir("hardening-log"),
            scratch,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.scratch.path().join("a/b/c/data")
    }

    fn log_file(&self) -> PathBuf {
        self.logs.path().join("spiderpool.log")
    }

    /// The IPAM plugin's stdin as macvlan hands it over, drawing from the seed's pool.
    fn conf(&self) -> Value {
        let mut ipam = spiderpool(
            &[SEED_POOL],
            &[],
            &self.scratch.path().join("ippools"),
            &self.data_dir(),
        );
        ipam["log_file_path"] = json!(self.log_file());
        json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "macvlan", "ipam": ipam})
    }

    /// An ADD of `id`'s net1 (the netns is never opened by an IPAM plugin).
    fn env(&self, id: &str) -> CniEnv {
        CniEnv::add(&self.plugins, id, &self.node.path())
    }

    fn ipam(&self, env: &CniEnv, stdin: &[u8]) -> Outcome {
        exec_plugin(&self.node, &self.plugins, "spiderpool", &env.pairs(), stdin)
    }

    fn add(&self, id: &str) -> Outcome {
        self.ipam(&self.env(id), self.conf().to_string().as_bytes())
    }

    fn del(&self, id: &str) {
        let env = self.env(id).set("CNI_COMMAND", "DEL");
        self.ipam(&env, self.conf().to_string().as_bytes())
            .expect_ok();
    }
}

/// The one address of a successful ADD, without its prefix.
#[track_caller]
fn the_ip(added: &Outcome) -> IpAddr {
    let address = added.first_address();
    address.split_once('/').unwrap().0.parse().unwrap()
}

#[test]
fn the_store_and_the_log_are_private_whatever_the_umask() {
    let rig = Rig::new();
    for id in ["c1", "c2"] {
        rig.add(id).first_address();
    }
    rig.del("c1");

    let state = DirState::of(&rig.data_dir());
    assert!(state.len() >= 8, "{state:?}");
    for (path, kind, mode) in state.modes() {
        let want = match kind {
            "dir" => 0o700,
            "file" => 0o600,
            other => panic!("{}: a {other} in the store", path.display()),
        };
        assert_eq!(mode, want, "{} ({kind}) is {mode:o}", path.display());
    }
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&rig.data_dir()), 0o700);
    assert_eq!(mode(&rig.log_file()), 0o600);
    // The parents the plugin made: readable, never world-writable, even under umask 000.
    for parent in ["a", "a/b", "a/b/c"] {
        assert_eq!(mode(&rig.scratch.path().join(parent)), 0o755, "{parent}");
    }
}

#[test]
fn no_container_id_ifname_or_network_name_writes_outside_the_data_dir() {
    let rig = Rig::new();
    rig.add("c1").first_address();
    let stdin = rig.conf().to_string();
    let before = DirState::of(rig.scratch.path());

    let mut tried = 0;
    let hostile = [
        ("CNI_CONTAINERID", ".."),
        ("CNI_CONTAINERID", "."),
        ("CNI_CONTAINERID", "../escaped"),
        ("CNI_CONTAINERID", "../../../../escaped"),
        ("CNI_CONTAINERID", "c1/../../../../escaped"),
        ("CNI_IFNAME", ".."),
        ("CNI_IFNAME", "../../x"),
        ("CNI_IFNAME", "net1/../x"),
    ];
    for (var, value) in hostile {
        for command in ["ADD", "DEL", "CHECK"] {
            let env = rig.env("c1").set(var, value).set("CNI_COMMAND", command);
            let refused = rig.ipam(&env, stdin.as_bytes());
            refused.expect_error(4, &[var, value]);
            tried += 1;
        }
    }
    // The network name becomes a directory name too.
    for name in ["..", "../../../../escaped", "gpu1/../../x"] {
        let mut conf = rig.conf();
        conf["name"] = json!(name);
        let refused = rig.ipam(&rig.env("c1"), conf.to_string().as_bytes());
        refused.expect_error(7, &["field name", name]);
        tried += 1;
    }
    let diff = DirState::of(rig.scratch.path()).diff(&before);
    assert!(diff.is_empty(), "written outside the rules: {diff:#?}");
    println!("hardening: {tried} hostile names refused, nothing written");
}

/// What a symlink planted at a store path must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planted {
    /// The ADD is refused with code 5 naming the path.
    Refused,
    /// The ADD works without following it (a temp name is unlinked and made afresh, a record
    /// name counts as taken).
    Harmless,
}

#[test]
fn symlinks_planted_in_the_store_are_never_followed() {
    let rig = Rig::new();
    let first = the_ip(&rig.add("c1"));
    let data = rig.data_dir();
    let victim = rig.scratch.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("precious"), "precious").unwrap();
    let untouched = DirState::of(&victim);
    // The next address the round-robin cursor offers, planted first, before any other ADD
    // moves the cursor past it.
    let IpAddr::V4(first) = first else {
        panic!("the seed's pool is IPv4")
    };
    let next = Ipv4Addr::from(u32::from(first) + 1).to_string();
    let next_record = format!("pools/{SEED_POOL}/ips/{next}");
    let pool = format!("pools/{SEED_POOL}");
    let index = format!("attachments/{NETWORK}");
    let plants = [
        (next_record.clone(), Planted::Harmless),
        (format!("{pool}/lock"), Planted::Refused),
        (format!("{pool}/bitmap"), Planted::Refused),
        (format!("{pool}/claim.tmp"), Planted::Harmless),
        (format!("{pool}/ips"), Planted::Refused),
        (pool.clone(), Planted::Refused),
        (format!("{index}/c2:net1"), Planted::Refused),
        (format!("{index}/update.tmp"), Planted::Harmless),
        (index.clone(), Planted::Refused),
    ];
    for (rel, expect) in &plants {
        let path = data.join(rel);
        let aside = PathBuf::from(format!("{}.aside", path.display()));
        let existed = fs::symlink_metadata(&path).is_ok();
        if existed {
            fs::rename(&path, &aside).unwrap();
        }
        // A directory's place gets a link to a directory, a file's a link to a file.
        let target = if existed && fs::metadata(&aside).unwrap().is_dir() {
            victim.clone()
        } else {
            victim.join("precious")
        };
        symlink(&target, &path).unwrap();

        let added = rig.add("c2");
        match expect {
            Planted::Refused => {
                added.expect_error(5, &[&path.to_string_lossy(), "symlink"]);
            }
            Planted::Harmless => {
                let ip = the_ip(&added);
                assert_ne!(ip.to_string(), next, "{rel}: the planted record was taken");
                rig.del("c2");
            }
        }
        let diff = DirState::of(&victim).diff(&untouched);
        assert!(diff.is_empty(), "{rel}: followed: {diff:#?}");

        // A temp name was unlinked by the plugin itself.
        let _ = fs::remove_file(&path);
        if existed {
            fs::rename(&aside, &path).unwrap();
        }
    }
    // Nothing is wedged: once the links are gone the store serves again.
    rig.add("c3").first_address();
    println!(
        "hardening: {} planted symlinks, none followed",
        plants.len()
    );
}

/// `text` followed by YAML comment lines up to exactly `len` bytes.
fn padded(text: &str, len: usize) -> String {
    let mut out = String::with_capacity(len);
    out.push_str(text);
    while out.len() < len {
        let room = len - out.len();
        let line = room.min(64);
        // `#` + filler + newline; a single byte left is a blank line.
        if line > 1 {
            out.push('#');
            out.push_str(&"x".repeat(line - 2));
        }
        out.push('\n');
    }
    out
}

#[test]
fn stdin_is_read_up_to_1_mib_and_refused_beyond() {
    let rig = Rig::new();
    let conf = rig.conf().to_string();
    // Trailing whitespace is valid JSON: the config itself fits, only the size varies.
    let spaced = |len: usize| format!("{conf}{}", " ".repeat(len - conf.len()));
    rig.ipam(&rig.env("at-limit"), spaced(MAX_STDIN).as_bytes())
        .first_address();
    for size in [MAX_STDIN + 1, 10 << 20] {
        let over = spaced(size);
        let refused = rig.ipam(&rig.env("over-limit"), over.as_bytes());
        refused.expect_error(6, &["network config", "larger than 1048576 bytes"]);
    }
}

#[test]
fn pool_files_are_read_up_to_4_mib_and_only_when_regular() {
    let rig = Rig::new();
    let ippools = rig.scratch.path().join("ippools");
    // Things that would block or never end if read: they must be skipped.
    let fifo = ippools.join("fifo.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    symlink("/dev/zero", ippools.join("zero.yaml")).unwrap();
    symlink("/dev/urandom", ippools.join("random.yml")).unwrap();
    symlink("loop.json", ippools.join("loop.json")).unwrap();

    let pool = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  \
                name: big\nspec:\n  subnet: 172.16.0.0/16\n  ips:\n    - 172.16.11.220\n";
    let big = ippools.join("big.yaml");
    let mut conf = rig.conf();
    conf["ipam"]["default_ipv4_ippool"] = json!(["big"]);
    let stdin = conf.to_string();

    fs::write(&big, padded(pool, MAX_MANIFEST)).unwrap();
    let added = rig.ipam(&rig.env("big-at-limit"), stdin.as_bytes());
    assert_eq!(added.first_address(), "172.16.11.220/16");

    fs::write(&big, padded(pool, MAX_MANIFEST + 1)).unwrap();
    let refused = rig.ipam(&rig.env("big-over-limit"), stdin.as_bytes());
    refused.expect_error(7, &[&big.to_string_lossy(), "larger than 4194304 bytes"]);
}
