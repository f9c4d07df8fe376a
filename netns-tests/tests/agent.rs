//! `spiderctl agent` as a process, on temporary "host" trees: install (whole files, only what
//! changed, 16-way ADD/DEL churn through the installed plugins while builds are swapped), sync
//! of a ConfigMap volume (kubelet's `..data` swap, a bad edit kept out), GC counting misses
//! across `--once` runs and never touching another node's allocations in etcd, the metrics
//! (checked by `promtool check metrics`) and health endpoints, and SIGTERM in a pass. Run as
//! root after `cargo build --release`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ipam_store::{Allocations, FileStore, Owner};
use netns_tests::agent::{
    allocate_many, big_pool_yaml, http_get, poll, pool_from_yaml, spiderctl, Agent, HostTree,
};
use netns_tests::conflist::{list, macvlan, spiderpool, SEED_IPPOOL_YAML, SEED_POOL};
use netns_tests::etcd::TestEtcd;
use netns_tests::paths::{temp_dir, workspace_root};
use netns_tests::plugins::our_binary;
use netns_tests::{new_pod, Driver, Fabric, Invocation, Netns, Op, PluginDir, Rail, Source};
use serde_json::Value;

const PLUGINS: [&str; 4] = ["macvlan", "spiderpool", "spiderpool-etcd", "coordinator"];

fn seed(file: &str) -> String {
    fs::read_to_string(workspace_root().join("conf/seed").join(file)).unwrap()
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn with(mut args: Vec<OsString>, extra: &[&str]) -> Vec<OsString> {
    args.extend(os(extra));
    args
}

/// `agent --once` on `host`, with its config dir when it holds something.
#[track_caller]
fn once(host: &HostTree, extra: &[&str], env: &[(&str, &str)]) -> String {
    let config = fs::read_dir(host.config()).unwrap().next().is_some();
    let mut args = with(host.agent_args(config), &["--once"]);
    args.extend(os(extra));
    let out = spiderctl(&args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "agent --once failed:\n{stderr}");
    stderr
}

fn release_dir() -> PathBuf {
    our_binary("spiderctl").parent().unwrap().to_path_buf()
}

/// The plugins of `from`, each with `suffix` appended (a build that differs in its bytes and
/// still runs: nothing reads past an ELF's sections), in a new dir.
fn other_build(from: &Path, suffix: &[u8], only: &[&str]) -> tempfile::TempDir {
    let dir = temp_dir("agent-build");
    for name in PLUGINS {
        let mut bytes = fs::read(from.join(name)).unwrap();
        if only.contains(&name) {
            bytes.extend_from_slice(suffix);
        }
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn inode(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

fn hidden_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn once_installs_the_plugins_and_then_only_what_changed() {
    let host = HostTree::new("agent-install");
    fs::write(host.config().join("gpu1.yaml"), seed("gpu1.yaml")).unwrap();
    let log = once(&host, &[], &[]);
    for name in PLUGINS {
        let installed = host.bin().join(name);
        assert_eq!(
            fs::read(&installed).unwrap(),
            fs::read(release_dir().join(name)).unwrap(),
            "{name}"
        );
        assert_eq!(
            fs::metadata(&installed).unwrap().mode() & 0o777,
            0o755,
            "{name}"
        );
        assert!(
            log.contains(&format!("{} created", installed.display())),
            "{log}"
        );
    }
    assert!(host.conf().join("90-gpu1-macvlan.conflist").is_file());
    assert!(host.ippools().join("gpu1-net11.yaml").is_file());

    // Nothing differs: nothing is rewritten.
    let before: Vec<u64> = PLUGINS.iter().map(|n| inode(&host.bin().join(n))).collect();
    let log = once(&host, &[], &[]);
    assert!(!log.contains("install:"), "{log}");
    let after: Vec<u64> = PLUGINS.iter().map(|n| inode(&host.bin().join(n))).collect();
    assert_eq!(before, after);

    // Another build of macvlan only: only macvlan is replaced.
    let build = other_build(&release_dir(), b"\0build B\n", &["macvlan"]);
    let from = build.path().to_str().unwrap();
    let log = once(&host, &["--plugins-from", from], &[]);
    assert!(log.contains("macvlan updated"), "{log}");
    assert_eq!(log.matches("install:").count(), 1, "{log}");
    assert_eq!(
        fs::read(host.bin().join("macvlan")).unwrap(),
        fs::read(build.path().join("macvlan")).unwrap()
    );
    assert_ne!(inode(&host.bin().join("macvlan")), before[0]);
    for (name, ino) in PLUGINS.iter().zip(&before).skip(1) {
        assert_eq!(inode(&host.bin().join(name)), *ino, "{name}");
    }
    assert!(hidden_files(&host.bin()).is_empty());

    // A build missing a plugin installs nothing and says which file.
    fs::remove_file(build.path().join("coordinator")).unwrap();
    let macvlan = inode(&host.bin().join("macvlan"));
    let out = spiderctl(
        &with(host.agent_args(true), &["--once", "--plugins-from", from]),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{from}/coordinator")), "{stderr}");
    assert!(stderr.contains("--plugins-from"), "{stderr}");
    assert_eq!(inode(&host.bin().join("macvlan")), macvlan);
}

/// The records of `pool` in the file store at `data`, as (container id, ip).
fn held(data: &Path, pool: &str) -> BTreeSet<String> {
    let store = FileStore::open(data).unwrap();
    store
        .held(pool)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r.owner.container_id)
        .collect()
}

fn owner(id: &str, netns: &str, node: Option<&str>) -> Owner {
    Owner {
        container_id: id.into(),
        ifname: "net1".into(),
        netns: netns.into(),
        pod_namespace: Some("team".into()),
        pod_name: Some(format!("pod-{id}")),
        node: node.map(str::to_owned),
    }
}

fn gc_state(host: &HostTree) -> Vec<Value> {
    let text = fs::read_to_string(host.data().join("agent-gc-misses.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn gc_releases_only_after_two_consecutive_misses_counted_across_once_runs() {
    let host = HostTree::new("agent-gc");
    fs::create_dir_all(host.ippools()).unwrap();
    fs::write(host.ippools().join("gpu1-net11.yaml"), SEED_IPPOOL_YAML).unwrap();
    let pool = pool_from_yaml(SEED_IPPOOL_YAML);
    let live = Netns::new("agent-gc-pod");
    let not_a_netns = host.root().join("stale-netns");
    fs::write(&not_a_netns, "").unwrap();
    let gone = format!("/run/netns/sptest-{}-gone", std::process::id());
    let store = FileStore::open(&host.data()).unwrap();
    let live_path = live.path().to_string_lossy().into_owned();
    for (id, netns) in [
        ("live", live_path.as_str()),
        ("gone", gone.as_str()),
        ("empty-file", not_a_netns.to_str().unwrap()),
    ] {
        store
            .allocate(&pool, "net", &owner(id, netns, None))
            .unwrap();
    }
    let all: BTreeSet<String> = ["live", "gone", "empty-file"].map(String::from).into();

    let log = once(&host, &[], &[]);
    assert!(!log.contains("released"), "{log}");
    assert_eq!(held(&host.data(), SEED_POOL), all);
    let state = gc_state(&host);
    assert_eq!(state.len(), 2, "{state:?}");
    assert!(state.iter().all(|m| m["misses"] == 1), "{state:?}");

    let log = once(&host, &[], &[]);
    for id in ["gone", "empty-file"] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("container {id} ")))
            .unwrap_or_else(|| panic!("no release of {id}:\n{log}"));
        assert!(line.contains("released 172.16.11."), "{line}");
        assert!(
            line.contains(&format!("(pool {SEED_POOL}) pod team/pod-{id}")),
            "{line}"
        );
    }
    assert_eq!(held(&host.data(), SEED_POOL), ["live".to_owned()].into());
    assert!(gc_state(&host).is_empty());
    assert!(hidden_files(&host.data()).is_empty());
}

#[test]
fn gc_on_etcd_never_touches_another_nodes_allocations() {
    let etcd = TestEtcd::get();
    let host = HostTree::new("agent-gc-etcd");
    let pool = pool_from_yaml(SEED_IPPOOL_YAML);
    let ours = etcd.open("node-a");
    ours.put_manifests(&[(SEED_POOL.into(), SEED_IPPOOL_YAML.into())])
        .unwrap();
    let theirs = etcd.open("node-b");
    let gone = format!("/run/netns/sptest-{}-gone-etcd", std::process::id());
    ours.allocate(&pool, "net", &owner("ours", &gone, Some("node-a")))
        .unwrap();
    theirs
        .allocate(&pool, "net", &owner("theirs", &gone, Some("node-b")))
        .unwrap();
    let store_args = etcd.spiderctl_args();
    let args: Vec<&str> = store_args.iter().map(String::as_str).collect();
    let env = [("SPIDERPOOL_NODE_NAME", "node-a")];
    once(&host, &args, &env);
    let log = once(&host, &args, &env);
    assert!(log.contains("container ours "), "{log}");
    assert!(!log.contains("container theirs "), "{log}");
    let left: Vec<String> = ours
        .held(SEED_POOL)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r.owner.container_id)
        .collect();
    assert_eq!(left, ["theirs"]);
    // node-b's own agent releases it.
    let env = [("SPIDERPOOL_NODE_NAME", "node-b")];
    once(&host, &args, &env);
    once(&host, &args, &env);
    assert!(theirs.held(SEED_POOL).unwrap().is_empty());
}

/// The value of the sample `name` (with its labels) in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/deps installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sync_follows_configmap_swaps_keeps_the_last_good_config_and_serves_metrics() {
    let host = HostTree::new("agent-sync");
    host.write_configmap(1, &[("gpu1.yaml", &seed("gpu1.yaml"))]);
    let args = with(
        host.agent_args(true),
        &[
            "--config-poll",
            "50ms",
            "--gc-interval",
            "1h",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let mut agent = Agent::start(&args);
    let addr = agent.http_addr();
    poll(|| (http_get(addr, "/readyz").0 == 200).then_some(()))
        .unwrap_or_else(|| panic!("never ready:\n{}", agent.log().join("\n")));
    assert_eq!(http_get(addr, "/healthz").0, 200);
    let gpu2 = host.conf().join("90-gpu2-macvlan.conflist");
    assert!(host.conf().join("90-gpu1-macvlan.conflist").is_file());
    assert!(!gpu2.exists());

    host.write_configmap(
        2,
        &[
            ("gpu1.yaml", &seed("gpu1.yaml")),
            ("gpu2.yaml", &seed("gpu2.yaml")),
        ],
    );
    poll(|| gpu2.is_file().then_some(()))
        .unwrap_or_else(|| panic!("gpu2 never applied:\n{}", agent.log().join("\n")));
    let metrics = |name: &str| sample(&http_get(addr, "/metrics").1, name);
    poll(|| (metrics("spiderpool_agent_config_applies_total") == Some(2.0)).then_some(()))
        .expect("two applies counted");

    // A bad edit: refused as a whole, counted, logged; what was applied stays.
    let snapshot = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.clone(), fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let (conf_before, pools_before) = (snapshot(&host.conf()), snapshot(&host.ippools()));
    let broken = seed("gpu2.yaml").replace("172.16.12.1-172.16.12.200", "172.16.12.300");
    assert_ne!(broken, seed("gpu2.yaml"));
    let gpu3 = seed("gpu3.yaml");
    host.write_configmap(
        3,
        &[
            ("gpu1.yaml", &seed("gpu1.yaml")),
            ("gpu2.yaml", &broken),
            ("gpu3.yaml", &gpu3),
        ],
    );
    poll(|| (metrics("spiderpool_agent_config_apply_failures_total") == Some(1.0)).then_some(()))
        .unwrap_or_else(|| panic!("the bad edit was not counted:\n{}", agent.log().join("\n")));
    let at = agent.wait_line("refused, nothing changed");
    let refusal = agent.log()[at].clone();
    assert!(refusal.contains("172.16.12.300"), "{refusal}");
    assert_eq!(snapshot(&host.conf()), conf_before);
    assert_eq!(snapshot(&host.ippools()), pools_before);
    assert_eq!(
        http_get(addr, "/readyz").0,
        200,
        "the last good config is in force"
    );

    let (code, text) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    promtool_check(&text);
    assert_eq!(
        sample(
            &text,
            "spiderpool_agent_pool_addresses{pool=\"gpu2-net12\"}"
        ),
        Some(200.0)
    );
    assert_eq!(
        sample(
            &text,
            "spiderpool_agent_pool_free_addresses{pool=\"gpu1-net11\"}"
        ),
        Some(200.0)
    );
    assert_eq!(
        sample(&text, "spiderpool_agent_plugin_updates_total"),
        Some(4.0)
    );
    assert!(sample(&text, "spiderpool_agent_gc_last_success_timestamp_seconds").is_some());
    assert_eq!(http_get(addr, "/nothing").0, 404);

    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().success(), "{}", agent.log().join("\n"));
}

#[test]
fn sigterm_in_a_pass_finishes_it_writes_it_whole_and_exits_0() {
    const LEAKS: usize = 5000;
    let host = HostTree::new("agent-sigterm");
    let yaml = big_pool_yaml("leaky", LEAKS as u32);
    fs::create_dir_all(host.ippools()).unwrap();
    fs::write(host.ippools().join("leaky.yaml"), &yaml).unwrap();
    let gone = format!("/run/netns/sptest-{}-gone-term", std::process::id());
    allocate_many(&host.data(), &pool_from_yaml(&yaml), "net", LEAKS, &gone);
    // No --config-dir: the pass is install and a GC over the leaks.
    let args = with(
        host.agent_args(false),
        &["--gc-interval", "1h", "--metrics-addr", "127.0.0.1:0"],
    );
    let mut agent = Agent::start(&args);
    agent.wait_line("pass started");
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit();
    let log = agent.log();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    let at = |fragment: &str| {
        log.iter()
            .position(|l| l.contains(fragment))
            .unwrap_or_else(|| panic!("no {fragment:?}:\n{}", log.join("\n")))
    };
    assert!(at("pass started") < at("pass done (0 failure(s))"));
    assert!(at("pass done") < at("arrived during the pass; the pass completed first"));
    assert!(at("pass done") < at("stopping on signal"));
    let state = gc_state(&host);
    assert_eq!(
        state.len(),
        LEAKS,
        "every leak counted once, in one whole file"
    );
    assert!(state.iter().all(|m| m["misses"] == 1));
    assert_eq!(held(&host.data(), "leaky").len(), LEAKS);
    assert!(hidden_files(&host.data()).is_empty());
    assert!(hidden_files(&host.bin()).is_empty());
}

#[test]
fn sixteen_way_churn_while_the_agent_swaps_builds_never_fails() {
    const THREADS: usize = 16;
    const MIN_ROUNDS: usize = 6;
    const MIN_SWAPS: usize = 8;
    let host = HostTree::new("agent-churn");
    fs::create_dir_all(host.ippools()).unwrap();
    fs::write(host.ippools().join("gpu1-net11.yaml"), SEED_IPPOOL_YAML).unwrap();
    let builds = [
        other_build(&release_dir(), b"", &[]),
        other_build(&release_dir(), b"\0build B\n", &PLUGINS),
    ];
    let from = |k: usize| builds[k % 2].path().to_str().unwrap().to_owned();
    once(&host, &["--plugins-from", &from(0)], &[]);

    let fabric = Fabric::build(1, &[Rail::new(1)]);
    // CNI_PATH entries resolve through the agent's bin dir at each exec.
    let plugins = PluginDir::new(&[
        ("macvlan", Source::File(host.bin().join("macvlan"))),
        ("spiderpool", Source::File(host.bin().join("spiderpool"))),
    ]);
    let conflist = list(
        "1.0.0",
        "churn",
        &[macvlan(
            1,
            spiderpool(&[SEED_POOL], &[], &host.ippools(), &host.data()),
        )],
    );
    let cache = temp_dir("agent-churn-cache");
    let swaps = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let pod = new_pod();
                    let mut rounds = 0;
                    while rounds < MIN_ROUNDS
                        || (swaps.load(Ordering::SeqCst) < MIN_SWAPS && rounds < 500)
                    {
                        let call =
                            Invocation::new(fabric.node(1), &conflist, &plugins, cache.path())
                                .netns(&pod);
                        for op in [Op::Add, Op::Del] {
                            let outcome = Driver::get().run(op, &call);
                            if !outcome.success {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("{op:?}: {outcome:?}"));
                            }
                        }
                        rounds += 1;
                    }
                })
            })
            .collect();
        s.spawn(|| {
            let mut k = 1;
            while !done.load(Ordering::SeqCst) {
                let log = once(&host, &["--plugins-from", &from(k)], &[]);
                assert_eq!(log.matches(" updated").count(), PLUGINS.len(), "{log}");
                swaps.fetch_add(1, Ordering::SeqCst);
                k += 1;
            }
        });
        for worker in workers {
            worker.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed calls: {failures:#?}",
        failures.len()
    );
    assert!(swaps.load(Ordering::SeqCst) >= MIN_SWAPS);
    assert!(held(&host.data(), SEED_POOL).is_empty());
    assert!(hidden_files(&host.bin()).is_empty());
}

#[test]
fn bad_flags_are_refused_naming_the_flag_and_nothing_is_written() {
    let host = HostTree::new("agent-flags");
    for (flag, value, why) in [
        ("--gc-interval", "5", "without a unit"),
        ("--gc-interval", "0s", "is zero"),
        ("--config-poll", "2 days", "unknown unit"),
        ("--gc-misses", "0", "0 is not in 1.."),
        ("--metrics-addr", "localhost", "invalid socket address"),
    ] {
        let out = spiderctl(&with(host.agent_args(false), &["--once", flag, value]), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(
            stderr.contains(flag) && stderr.contains(why),
            "{flag} {value}: {stderr}"
        );
    }
    assert!(!host.bin().exists() && !host.data().exists());
}
