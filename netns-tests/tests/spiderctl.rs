//! `spiderctl apply`, `render`, `inject` and `doctor` as an operator runs them, on the
//! manifests of `conf/` (the seed's YAML, verbatim, for eight GPUs). `doctor` runs inside
//! node namespaces of the harness, never in the root namespace; the last test attaches a pod
//! through the libcni client with a conflist `apply` wrote. Run as root after
//! `cargo build --release`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use ipam_store::Allocations;
use netns_tests::etcd::TestEtcd;
use netns_tests::paths::{temp_dir, workspace_root};
use netns_tests::plugins::our_binary;
use netns_tests::probe::link_names;
use netns_tests::{new_pod, Driver, Fabric, Invocation, Netns, Op, PluginDir, Rail, Source};
use serde_json::Value;
use tempfile::TempDir;

fn conf(path: &str) -> PathBuf {
    workspace_root().join("conf").join(path)
}

/// `conf/seed/*`, as the shell would expand it.
fn seed_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(conf("seed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "conf/seed holds gpu1.yaml .. gpu8.yaml");
    files
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `spiderctl args` with `cmd` (the root namespace for commands that only touch files,
/// a node namespace for doctor).
fn run(mut cmd: Command) -> Output {
    cmd.output()
        .expect("cannot run spiderctl (cargo build --release first, or set SPIDER_BIN_DIR)")
}

fn spiderctl(args: &[&str]) -> Output {
    let mut cmd = Command::new(our_binary("spiderctl"));
    cmd.args(args);
    run(cmd)
}

#[track_caller]
fn ok(out: Output) -> String {
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "spiderctl failed:\n{stdout}{stderr}");
    stdout
}

/// The stderr of a failed run.
#[track_caller]
fn refused(out: Output) -> String {
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "spiderctl succeeded:\n{stdout}{stderr}"
    );
    stderr
}

/// A node's CNI files in a scratch dir: `net.d/` (the conflists), `ippools/`, `data/`.
struct NodeDirs {
    scratch: TempDir,
}

impl NodeDirs {
    fn new(label: &str) -> NodeDirs {
        NodeDirs {
            scratch: temp_dir(label),
        }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.scratch.path().join(sub)
    }

    fn s(&self, sub: &str) -> String {
        self.path(sub).to_str().unwrap().to_owned()
    }

    fn apply_args<P: AsRef<Path>>(&self, files: &[P]) -> Vec<String> {
        let mut args: Vec<String> = vec!["apply".into(), "-f".into()];
        args.extend(
            files
                .iter()
                .map(|f| f.as_ref().to_str().unwrap().to_owned()),
        );
        for (flag, sub) in [
            ("--cni-conf-dir", "net.d"),
            ("--ippool-dir", "ippools"),
            ("--data-dir", "data"),
        ] {
            args.push(flag.into());
            args.push(self.s(sub));
        }
        args
    }

    fn apply<P: AsRef<Path>>(&self, files: &[P]) -> Output {
        let args = self.apply_args(files);
        spiderctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Writes `text` as `name` in the scratch dir (an input manifest); returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, text).unwrap();
        path
    }

    /// Every file apply wrote, with its bytes and mtime.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>, SystemTime)> {
        let mut files = Vec::new();
        for dir in ["net.d", "ippools"] {
            for entry in fs::read_dir(self.path(dir)).unwrap() {
                let path = entry.unwrap().path();
                // The pool index (`ippools/.index/`) is a cache of the files, rebuilt at will.
                if path.file_name() == Some(".index".as_ref()) {
                    continue;
                }
                let meta = fs::metadata(&path).unwrap();
                files.push((
                    path.clone(),
                    fs::read(&path).unwrap(),
                    meta.modified().unwrap(),
                ));
            }
        }
        files.sort();
        files
    }

    /// `spiderctl doctor` inside `node` on these dirs.
    fn doctor(&self, node: &Netns, rdma_config: Option<&Path>) -> Output {
        match rdma_config {
            Some(config) => self.doctor_with(node, &["--rdma-config", config.to_str().unwrap()]),
            None => self.doctor_with(node, &[]),
        }
    }

    /// `spiderctl doctor ARGS` inside `node` on these dirs.
    fn doctor_with(&self, node: &Netns, extra: &[&str]) -> Output {
        let bin = our_binary("spiderctl");
        let mut args = vec![
            bin.to_str().unwrap().to_owned(),
            "doctor".into(),
            "--cni-conf-dir".into(),
            self.s("net.d"),
            "--ippool-dir".into(),
            self.s("ippools"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        run(node.command(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    }

    /// `spiderctl COMMAND --ippool-dir .. --data-dir .. ARGS` (status and gc) on these dirs.
    fn store_cmd(&self, command: &str, extra: &[&str]) -> Output {
        let mut args = vec![command.to_owned()];
        if command == "status" {
            args.extend(["--ippool-dir".into(), self.s("ippools")]);
        }
        args.extend(["--data-dir".into(), self.s("data")]);
        args.extend(extra.iter().map(|a| a.to_string()));
        spiderctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// A SpiderMultusConfig document with `spec` (two-space indented), after a valid pool, so an
/// error must be reported for document 2 and nothing may be written.
fn bad_config(spec: &str, annotations: &str) -> String {
    format!(
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  name: ok-pool\n\
         spec:\n  subnet: 10.9.0.0/24\n  ips: [10.9.0.1-10.9.0.9]\n---\n\
         apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\nmetadata:\n  \
         name: bad\n  namespace: spiderpool\n{annotations}spec:\n{spec}"
    )
}

/// A doctor row: status, check and a fragment of the detail on one line.
#[track_caller]
fn assert_row(stdout: &str, status: &str, check: &str, fragment: &str) {
    let found = stdout.lines().any(|l| {
        let mut cols = l.split_whitespace();
        cols.next() == Some(status) && cols.next() == Some(check) && l.contains(fragment)
    });
    assert!(
        found,
        "no {status} {check} row with {fragment:?} in:\n{stdout}"
    );
}

// ---- apply ----

#[test]
fn applying_the_seed_twice_changes_nothing() {
    let dirs = NodeDirs::new("apply-twice");
    let first = ok(dirs.apply(&seed_files()));
    assert_eq!(first.matches(" created ").count(), 16, "{first}");
    let before = dirs.snapshot();
    assert_eq!(before.len(), 16);
    let names: Vec<String> = before
        .iter()
        .map(|(p, _, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"90-gpu1-macvlan.conflist".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"gpu8-net18.yaml".to_owned()), "{names:?}");

    // A directory is the same as its files.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = ok(dirs.apply(&[conf("seed")]));
    assert_eq!(again.matches(" unchanged ").count(), 16, "{again}");
    assert_eq!(dirs.snapshot(), before, "bytes and mtimes untouched");

    // Each conflist is what `render` prints, plus the node's pool and data dirs.
    let conflist: Value =
        serde_json::from_slice(&fs::read(dirs.path("net.d/90-gpu1-macvlan.conflist")).unwrap())
            .unwrap();
    let mut rendered: Value = serde_json::from_str(
        &fs::read_to_string(conf("rendered/90-gpu1-macvlan.conflist")).unwrap(),
    )
    .unwrap();
    rendered["plugins"][0]["ipam"]["ippool_dir"] = dirs.s("ippools").into();
    rendered["plugins"][0]["ipam"]["data_dir"] = dirs.s("data").into();
    assert_eq!(conflist, rendered);

    // The pool files are what the IPAM plugin reads.
    let pools = ipam_store::manifest::load_dir(&dirs.path("ippools")).unwrap();
    assert_eq!(pools.pools.len(), 8);
    assert_eq!(
        pools.get("gpu3-net13").unwrap().allocatable().to_string(),
        "172.16.13.1-172.16.13.200"
    );

    // Changing one document rewrites its file only.
    let changed = dirs.write(
        "gpu2.yaml",
        &fs::read_to_string(conf("seed/gpu2.yaml"))
            .unwrap()
            .replace("mtu: 1480", "mtu: 1400"),
    );
    let out = ok(dirs.apply(&[changed]));
    assert!(out.contains("90-gpu2-macvlan.conflist updated"), "{out}");
    assert!(out.contains("gpu2-net12.yaml unchanged"), "{out}");
    let after = dirs.snapshot();
    let differ: Vec<&PathBuf> = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| &a.0)
        .collect();
    assert_eq!(differ, [&dirs.path("net.d/90-gpu2-macvlan.conflist")]);
}

#[test]
fn apply_errors_name_the_document_field_and_value_and_write_nothing() {
    let dirs = NodeDirs::new("apply-errors");
    let macvlan = "  cniType: macvlan\n  macvlan:\n    master: [enp11s0f0np0]\n";
    let cases = [
        (
            bad_config("  cniType: sriov\n", ""),
            vec![
                "spec.cniType: \"sriov\" is not supported",
                "supported: macvlan",
            ],
        ),
        (
            bad_config(
                "  cniType: macvlan\n  macvlan:\n    master: [enp11s0f0np0, enp12s0f0np0]\n",
                "",
            ),
            vec![
                "spec.macvlan.master: [\"enp11s0f0np0\",\"enp12s0f0np0\"]",
                "bond masters are not supported",
            ],
        ),
        (
            bad_config(&format!("{macvlan}    vlanID: 5000\n"), ""),
            vec!["spec.macvlan.vlanID: 5000 is outside 0-4094"],
        ),
        (
            bad_config(
                macvlan,
                "  annotations:\n    multus.spidernet.io/cni-version: 2.0.0\n",
            ),
            vec![
                "metadata.annotations.multus.spidernet.io/cni-version: \"2.0.0\"",
                "use one of 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
            ],
        ),
    ];
    for (i, (yaml, fragments)) in cases.iter().enumerate() {
        let file = dirs.write(&format!("bad{i}.yaml"), yaml);
        let err = refused(dirs.apply(&[&file]));
        let want = format!(
            "{} document 2: SpiderMultusConfig spiderpool/bad: ",
            file.display()
        );
        assert!(err.contains(&want), "{want:?} not in {err:?}");
        for fragment in fragments {
            assert!(err.contains(fragment), "{fragment:?} not in {err:?}");
        }
        assert!(
            !dirs.path("ippools").exists() && !dirs.path("net.d").exists(),
            "nothing is written when a document is bad"
        );
    }

    // A bad pool is refused with ipam-store's message, naming the document.
    let file = dirs.write(
        "badpool.yaml",
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata: {name: p}\n\
         spec: {subnet: 10.0.0.0/24, gateway: 10.1.0.1}\n",
    );
    let err = refused(dirs.apply(&[&file]));
    assert!(
        err.contains(&format!(
            "{} document 1: pool p: spec.gateway: 10.1.0.1 is outside subnet 10.0.0.0/24",
            file.display()
        )),
        "{err}"
    );

    // Two documents writing one file are refused before anything is written.
    let twice = dirs.write(
        "twice.yaml",
        &format!(
            "{}---\n{}",
            fs::read_to_string(conf("seed/gpu1.yaml")).unwrap(),
            fs::read_to_string(conf("seed/gpu1.yaml")).unwrap()
        ),
    );
    let err = refused(dirs.apply(&[twice]));
    assert!(err.contains("pool gpu1-net11 is defined twice"), "{err}");
}

#[test]
fn a_pool_already_defined_in_another_file_is_refused() {
    let dirs = NodeDirs::new("apply-dup");
    fs::create_dir_all(dirs.path("ippools")).unwrap();
    fs::copy(conf("seed/gpu1.yaml"), dirs.path("ippools/by-hand.yaml")).unwrap();
    let err = refused(dirs.apply(&[conf("seed/gpu1.yaml")]));
    assert!(
        err.contains("pool gpu1-net11 is already defined in") && err.contains("by-hand.yaml"),
        "{err}"
    );
}

// ---- render ----

#[test]
fn render_prints_the_conflist_and_the_nad() {
    let gpu1 = conf("seed/gpu1.yaml");
    let conflist = ok(spiderctl(&["render", "-f", gpu1.to_str().unwrap()]));
    assert_eq!(
        conflist,
        fs::read_to_string(conf("rendered/90-gpu1-macvlan.conflist")).unwrap()
    );
    let list: Value = serde_json::from_str(&conflist).unwrap();
    assert_eq!(list["name"], "gpu1-macvlan");
    assert_eq!(list["plugins"][0]["master"], "enp11s0f0np0");
    assert_eq!(list["plugins"][0]["mtu"], 1480);
    assert_eq!(
        list["plugins"][0]["ipam"]["default_ipv4_ippool"][0],
        "gpu1-net11"
    );
    assert_eq!(list["plugins"][1]["type"], "coordinator");

    let nad = ok(spiderctl(&[
        "render",
        "-f",
        gpu1.to_str().unwrap(),
        "--format",
        "nad",
    ]));
    let docs = ipam_store::manifest::documents(&nad, "nad.yaml").unwrap();
    assert_eq!(docs.len(), 1);
    let nad = &docs[0];
    assert_eq!(nad["apiVersion"], "k8s.cni.cncf.io/v1");
    assert_eq!(nad["kind"], "NetworkAttachmentDefinition");
    assert_eq!(nad["metadata"]["name"], "gpu1-macvlan");
    assert_eq!(nad["metadata"]["namespace"], "spiderpool");
    assert_eq!(
        nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"],
        "spidernet.io/shared_cx5_gpu1"
    );
    let config: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(config, list);

    // Every SpiderMultusConfig of a directory, as one YAML stream.
    let all = ok(spiderctl(&[
        "render",
        "-f",
        conf("seed").to_str().unwrap(),
        "--format",
        "nad",
    ]));
    assert_eq!(
        all,
        fs::read_to_string(conf("rendered/network-attachment-definitions.yaml")).unwrap()
    );

    let err = refused(spiderctl(&[
        "render",
        "-f",
        conf("rdma/config.json").to_str().unwrap(),
    ]));
    assert!(err.contains("no SpiderMultusConfig"), "{err}");
}

// ---- inject ----

/// A workload of `kind` in group `rdma-network`, two containers.
fn workload(kind: &str, extra_annotation: &str) -> String {
    let meta = format!(
        "annotations:\n  cni.spidernet.io/rdma-resource-inject: rdma-network\n{extra_annotation}"
    );
    let spec = "containers:\n- name: main\n  image: rdma-tools\n- name: side\n  image: side\n";
    let indent = |t: &str, n: usize| -> String {
        t.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect()
    };
    if kind == "Pod" {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: w\n{}spec:\n{}",
            indent(&meta, 2),
            indent(spec, 2)
        )
    } else {
        format!(
            "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: w\nspec:\n  template:\n    \
             metadata:\n{}    spec:\n{}",
            indent(&meta, 6),
            indent(spec, 6)
        )
    }
}

fn inject(networks: &[PathBuf], workload: &Path) -> Output {
    let mut args: Vec<&str> = vec!["inject", "--networks"];
    args.extend(networks.iter().map(|p| p.to_str().unwrap()));
    args.extend(["-f", workload.to_str().unwrap()]);
    spiderctl(&args)
}

const SEED_NETWORKS: &str = "[{\"name\":\"gpu1-macvlan\",\"namespace\":\"spiderpool\"},\n\
    {\"name\":\"gpu2-macvlan\",\"namespace\":\"spiderpool\"},\n\
    {\"name\":\"gpu3-macvlan\",\"namespace\":\"spiderpool\"},\n\
    {\"name\":\"gpu4-macvlan\",\"namespace\":\"spiderpool\"},\n\
    {\"name\":\"gpu5-macvlan\",\"namespace\":\"spiderpool\"},\n\
    {\"name\":\"gpu6-macvlan\",\"namespace\":\"spiderpool\"},\n\
    {\"name\":\"gpu7-macvlan\",\"namespace\":\"spiderpool\"},\n\
    {\"name\":\"gpu8-macvlan\",\"namespace\":\"spiderpool\"}]";

#[test]
fn inject_writes_networks_and_resources_into_every_workload_kind() {
    let dirs = NodeDirs::new("inject");
    for (kind, template) in [
        ("Pod", ""),
        ("Deployment", "/spec/template"),
        ("DaemonSet", "/spec/template"),
        ("StatefulSet", "/spec/template"),
        ("Job", "/spec/template"),
    ] {
        let file = dirs.write(&format!("{kind}.yaml"), &workload(kind, ""));
        let out = ok(inject(&seed_files(), &file));
        let docs = ipam_store::manifest::documents(&out, "out.yaml").unwrap();
        let w = &docs[0];
        let annotations = w
            .pointer(&format!("{template}/metadata/annotations"))
            .unwrap();
        assert_eq!(
            annotations["k8s.v1.cni.cncf.io/networks"], SEED_NETWORKS,
            "{kind}"
        );
        let containers = w.pointer(&format!("{template}/spec/containers")).unwrap();
        let limits = containers[0]["resources"]["limits"].as_object().unwrap();
        assert_eq!(limits.len(), 8, "{kind}: {limits:?}");
        for n in 1..=8 {
            assert_eq!(
                limits[&format!("spidernet.io/shared_cx5_gpu{n}")],
                1,
                "{kind}"
            );
        }
        assert_eq!(containers[1].get("resources"), None, "{kind}");
    }

    // The networks' file order does not matter.
    let file = dirs.write("ds.yaml", &workload("DaemonSet", ""));
    let mut reversed = seed_files();
    reversed.reverse();
    assert_eq!(
        ok(inject(&reversed, &file)),
        ok(inject(&seed_files(), &file))
    );

    // The seed's DaemonSet, injected, is conf/rendered/rdma-tools.yaml; --output-file writes
    // it. `-o` is the output format elsewhere, as in kubectl, so inject does not take it.
    let output = dirs.path("out.yaml");
    let args = |flag: &'static str| {
        [
            "inject".to_owned(),
            "--networks".into(),
            conf("seed").to_str().unwrap().into(),
            "-f".into(),
            conf("workload/rdma-tools.yaml").to_str().unwrap().into(),
            flag.into(),
            output.to_str().unwrap().into(),
        ]
    };
    let err = refused(spiderctl(&args("-o").each_ref().map(String::as_str)));
    assert!(err.contains("'-o'"), "{err}");
    assert!(!output.exists());
    ok(spiderctl(
        &args("--output-file").each_ref().map(String::as_str),
    ));
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        fs::read_to_string(conf("rendered/rdma-tools.yaml")).unwrap()
    );
}

#[test]
fn inject_refuses_conflicts_and_unsupported_configs() {
    let dirs = NodeDirs::new("inject-refuse");
    for annotation in ["k8s.v1.cni.cncf.io/networks", "ipam.spidernet.io/ippools"] {
        let file = dirs.write(
            "conflict.yaml",
            &workload("Deployment", &format!("  {annotation}: '[]'\n")),
        );
        let err = refused(inject(&seed_files(), &file));
        assert!(
            err.contains(&format!(
                "conflict.yaml document 1 (Deployment w): Deployment \
                 spec.template.metadata.annotations.{annotation} is already set"
            )) && err.contains("remove it"),
            "{err}"
        );
    }

    let ipvlan = dirs.write(
        "ipvlan.yaml",
        &fs::read_to_string(conf("seed/gpu2.yaml"))
            .unwrap()
            .replace("cniType: macvlan", "cniType: ipvlan"),
    );
    let file = dirs.write("pod.yaml", &workload("Pod", ""));
    let err = refused(inject(&[conf("seed/gpu1.yaml"), ipvlan.clone()], &file));
    assert!(
        err.contains(&format!(
            "{} document 2: SpiderMultusConfig spiderpool/gpu2-macvlan: spec.cniType: \"ipvlan\" \
             is not supported by these plugins: supported: macvlan",
            ipvlan.display()
        )),
        "{err}"
    );

    let err = refused(inject(&seed_files(), &conf("seed/gpu1.yaml")));
    assert!(
        err.contains("no Pod, Deployment, DaemonSet, StatefulSet, Job carries"),
        "{err}"
    );
}

// ---- doctor, inside node namespaces ----

#[test]
fn doctor_passes_on_the_seed_node() {
    let fabric = Fabric::build(1, &(1..=8).map(Rail::new).collect::<Vec<_>>());
    let dirs = NodeDirs::new("doctor-good");
    ok(dirs.apply(&seed_files()));
    let out = ok(dirs.doctor(fabric.node(1), Some(&conf("rdma/config.json"))));
    for n in 1..=8 {
        let network = format!("gpu{n}-macvlan");
        assert_row(
            &out,
            "ok",
            "master",
            &format!("enp1{n}s0f0np0 is up, mtu 1500"),
        );
        assert_row(&out, "ok", "mtu", "1480 <= master");
        assert_row(
            &out,
            "ok",
            "pools",
            &format!("gpu{n}-net1{n} (200 addresses)"),
        );
        assert_row(
            &out,
            "ok",
            "rdma",
            &format!("spidernet.io/shared_cx5_gpu{n} selects enp1{n}s0f0np0"),
        );
        assert!(out.contains(&network), "{out}");
        assert_row(
            &out,
            "ok",
            "pool",
            &format!("subnet 172.16.0.0/16 (written 172.16.1{n}.0/16), 200 addresses, gateway 172.16.1{n}.254"),
        );
    }
    assert_row(&out, "ok", "overlap", "no two of the 8 pools in");
    // Only our rails are in the conf dir: the first of them is what a runtime that takes one
    // file would give every pod.
    assert_row(
        &out,
        "warn",
        "first-network",
        "90-gpu1-macvlan.conflist (network gpu1-macvlan, plugins macvlan, coordinator) sorts first",
    );
    assert!(out.ends_with("no problems found\n"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    eprintln!("$ spiderctl doctor --rdma-config conf/rdma/config.json\n{out}");

    // Debian's podman drops its bridge in the conf dir: it sorts before our 90-* files.
    let podman = r#"{"cniVersion":"0.4.0","name":"podman","plugins":[{"type":"bridge","bridge":"cni-podman0","ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/16"}]]}}]}"#;
    fs::write(dirs.path("net.d/87-podman-bridge.conflist"), podman).unwrap();
    let out = ok(dirs.doctor(fabric.node(1), None));
    assert_row(
        &out,
        "warn",
        "first-network",
        "is podman's default bridge and sorts first",
    );
    // The cluster network's file, named to sort first, is what such runtimes should take.
    let calico = r#"{"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"calico"}]}"#;
    fs::write(dirs.path("net.d/10-calico.conflist"), calico).unwrap();
    let out = ok(dirs.doctor(fabric.node(1), None));
    assert_row(
        &out,
        "ok",
        "first-network",
        "10-calico.conflist (network k8s-pod-network, plugins calico) sorts first",
    );
}

/// Runs doctor in `node` and returns its stdout, which must report at least one problem.
#[track_caller]
fn doctor_fails(dirs: &NodeDirs, node: &Netns, rdma: Option<&Path>) -> String {
    let out = dirs.doctor(node, rdma);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "doctor passed:\n{stdout}");
    assert!(stderr.contains("problem(s) found"), "{stderr}");
    stdout
}

#[test]
fn doctor_finds_a_missing_master_and_a_master_that_is_down() {
    let fabric = Fabric::build(1, &[Rail::new(1)]);
    let dirs = NodeDirs::new("doctor-master");
    ok(dirs.apply(&[conf("seed/gpu1.yaml"), conf("seed/gpu2.yaml")]));
    let out = doctor_fails(&dirs, fabric.node(1), None);
    assert_row(
        &out,
        "FAIL",
        "master",
        "enp12s0f0np0 does not exist in this network namespace",
    );
    assert_row(&out, "ok", "master", "enp11s0f0np0 is up");
    assert_row(
        &out,
        "warn",
        "rdma",
        "2 network(s) name an RDMA resource: not checked",
    );

    fabric
        .node(1)
        .ip(&["link", "set", "enp11s0f0np0", "down"])
        .unwrap();
    let out = doctor_fails(&dirs, fabric.node(1), None);
    assert_row(&out, "FAIL", "master", "enp11s0f0np0 is down");
}

#[test]
fn doctor_finds_an_mtu_above_the_masters() {
    let fabric = Fabric::build(1, &[Rail::new(1).mtu(1400)]);
    let dirs = NodeDirs::new("doctor-mtu");
    ok(dirs.apply(&[conf("seed/gpu1.yaml")]));
    let out = doctor_fails(&dirs, fabric.node(1), Some(&conf("rdma/config.json")));
    assert_row(
        &out,
        "FAIL",
        "mtu",
        "mtu 1480 is above master enp11s0f0np0 mtu 1400",
    );
}

#[test]
fn doctor_finds_overlapping_missing_and_broken_pools() {
    let fabric = Fabric::build(1, &[Rail::new(1)]);
    let dirs = NodeDirs::new("doctor-pools");
    let extra = dirs.write(
        "extra.yaml",
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  name: gpu1-extra\n\
         spec:\n  subnet: 172.16.0.0/16\n  ips: [172.16.11.150-172.16.11.250]\n---\n\
         apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderMultusConfig\nmetadata:\n  \
         name: nowhere\nspec:\n  cniType: macvlan\n  macvlan:\n    master: [enp11s0f0np0]\n    \
         ippools: {ipv4: [no-such-pool]}\n",
    );
    // Referencing a pool that does not exist is fine at apply time...
    ok(dirs.apply(&[conf("seed/gpu1.yaml"), extra]));
    // ...and a pool file written by hand can be broken.
    fs::write(
        dirs.path("ippools/broken.yaml"),
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata: {name: b}\n\
         spec: {subnet: 10.0.0.0/24, gateway: 10.1.0.1}\n",
    )
    .unwrap();
    let out = doctor_fails(&dirs, fabric.node(1), None);
    assert_row(
        &out,
        "FAIL",
        "overlap",
        "pools gpu1-net11 and gpu1-extra both hand out 172.16.11.150-172.16.11.200",
    );
    assert_row(
        &out,
        "FAIL",
        "pools",
        "default_ipv4_ippool names pool no-such-pool, which is not in",
    );
    assert_row(
        &out,
        "FAIL",
        "pool",
        "spec.gateway: 10.1.0.1 is outside subnet 10.0.0.0/24",
    );
    assert_row(&out, "ok", "pools", "gpu1-net11 (200 addresses)");
}

#[test]
fn doctor_finds_rdma_resources_the_device_plugin_does_not_offer() {
    let fabric = Fabric::build(1, &[Rail::new(1), Rail::new(2)]);
    let dirs = NodeDirs::new("doctor-rdma");
    ok(dirs.apply(&[conf("seed/gpu1.yaml"), conf("seed/gpu2.yaml")]));
    // gpu1's resource is gone; gpu2's selects the wrong NIC. As the seed's ConfigMap.
    let config = serde_json::json!({
        "periodicUpdateInterval": 300,
        "configList": [{
            "resourcePrefix": "spidernet.io",
            "resourceName": "shared_cx5_gpu2",
            "rdmaHcaMax": 100,
            "selectors": {"ifNames": ["enp13s0f0np0"]}
        }]
    });
    let config_map = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: spiderpool-rdma-shared-device-plugin\n\
         data:\n  config.json: |\n    {config}\n"
    );
    let path = dirs.write("rdma-configmap.yaml", &config_map);
    let out = doctor_fails(&dirs, fabric.node(1), Some(&path));
    assert_row(
        &out,
        "FAIL",
        "rdma",
        "spidernet.io/shared_cx5_gpu1 is not in",
    );
    assert_row(&out, "FAIL", "rdma", "spidernet.io/shared_cx5_gpu2 in");
    assert!(
        out.contains("selects ifNames [\"enp13s0f0np0\"], not the master enp12s0f0np0"),
        "{out}"
    );
}

// ---- the applied conflist through libcni ----

#[test]
fn a_pod_attaches_with_the_conflist_apply_wrote() {
    let fabric = Fabric::build(1, &[Rail::new(1)]);
    let dirs = NodeDirs::new("apply-attach");
    ok(dirs.apply(&seed_files()));
    let conflist: Value =
        serde_json::from_slice(&fs::read(dirs.path("net.d/90-gpu1-macvlan.conflist")).unwrap())
            .unwrap();
    let plugins = PluginDir::new(&[
        ("macvlan", Source::Ours),
        ("spiderpool", Source::Ours),
        ("coordinator", Source::Ours),
    ]);
    let cache = temp_dir("apply-attach-cache");
    let pod = new_pod();
    let call = Invocation::new(fabric.node(1), &conflist, &plugins, cache.path())
        .netns(&pod)
        .ifname("net1")
        .cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=rdma-tools-0")
        // A network selection element's `ips`, as Multus passes it: it reaches spiderpool
        // because the rendered macvlan declares the `ips` capability.
        .capability_args(serde_json::json!({"ips": ["172.16.11.150/16"]}));
    let driver = Driver::get();
    let added = driver.run(Op::Add, &call);
    assert_eq!(added.first_address(), "172.16.11.150/16");
    let mut names = link_names(&pod);
    names.sort();
    assert_eq!(names, ["lo", "net1"]);
    driver.run(Op::Check, &call).expect_ok();

    let status = ok(spiderctl(&[
        "status",
        "--pool",
        "gpu1-net11",
        "--ippool-dir",
        &dirs.s("ippools"),
        "--data-dir",
        &dirs.s("data"),
    ]));
    assert!(status.contains("default/rdma-tools-0"), "{status}");

    driver.run(Op::Del, &call).expect_ok();
    assert_eq!(link_names(&pod), ["lo"]);
    let status = ok(spiderctl(&[
        "status",
        "--pool",
        "gpu1-net11",
        "--ippool-dir",
        &dirs.s("ippools"),
        "--data-dir",
        &dirs.s("data"),
    ]));
    assert!(!status.contains("rdma-tools-0"), "{status}");
}

// ---- the etcd store ----

#[test]
fn with_the_etcd_store_apply_puts_the_pools_there_and_status_and_doctor_read_them() {
    let fabric = Fabric::build(1, &(1..=8).map(Rail::new).collect::<Vec<_>>());
    let etcd = TestEtcd::get();
    let _relay = etcd.relay_into(fabric.node(1));
    let conf_dir = temp_dir("etcd-apply");
    let apply = || {
        let mut cmd = Command::new(our_binary("spiderctl"));
        cmd.arg("apply")
            .arg("-f")
            .args(seed_files())
            .arg("--cni-conf-dir")
            .arg(conf_dir.path())
            .args(etcd.spiderctl_args());
        ok(run(cmd))
    };
    let first = apply();
    assert_eq!(first.matches(" written (pool ").count(), 8, "{first}");
    assert_eq!(first.matches(" created (network ").count(), 8, "{first}");
    let conflist: Value = serde_json::from_str(
        &fs::read_to_string(conf_dir.path().join("90-gpu3-macvlan.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(conflist["plugins"][0]["ipam"]["store"], etcd.store_json());
    assert!(conflist["plugins"][0]["ipam"].get("ippool_dir").is_none());
    let second = apply();
    assert_eq!(second.matches(" unchanged ").count(), 16, "{second}");

    let mut status = Command::new(our_binary("spiderctl"));
    status.arg("status").args(etcd.spiderctl_args());
    let status = ok(run(status));
    for n in 1..=8 {
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == [&format!("gpu{n}-net1{n}"), "200", "0", "200"]),
            "{status}"
        );
    }

    let bin = our_binary("spiderctl");
    let args = [
        bin.to_str().unwrap(),
        "doctor",
        "--cni-conf-dir",
        conf_dir.path().to_str().unwrap(),
        "--ippool-dir",
        "/nonexistent",
    ];
    let out = ok(run(fabric.node(1).command(&args)));
    assert_row(&out, "ok", "store", "reachable");
    for n in 1..=8 {
        assert_row(
            &out,
            "ok",
            "pools",
            &format!("gpu{n}-net1{n} (200 addresses)"),
        );
    }
    assert_row(&out, "ok", "overlap", "no two of the 8 pools in etcd");
    assert!(!out.contains("FAIL"), "{out}");
}

// ---- pool edits, reserved IPs ----

/// A SpiderIPPool or SpiderReservedIP manifest.
fn object(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[test]
fn pool_edits_that_strand_a_held_address_are_refused_unless_forced() {
    let fabric = Fabric::build(1, &[Rail::new(1)]);
    let dirs = NodeDirs::new("apply-guard");
    let applied = dirs.apply(&[conf("seed/gpu1.yaml")]);
    let (_, stderr) = text(&applied);
    assert!(applied.status.success(), "{stderr}");
    assert!(
        stderr.contains("uses pool gpu1-net11 with the node-local file store")
            && stderr.contains("two nodes would hand out the same addresses"),
        "{stderr}"
    );
    let conflist: Value =
        serde_json::from_slice(&fs::read(dirs.path("net.d/90-gpu1-macvlan.conflist")).unwrap())
            .unwrap();
    let plugins = PluginDir::new(&[
        ("macvlan", Source::Ours),
        ("spiderpool", Source::Ours),
        ("coordinator", Source::Ours),
    ]);
    let cache = temp_dir("apply-guard-cache");
    let driver = Driver::get();
    let (first, second) = (new_pod(), new_pod());
    let call = |pod: &Netns, name: &str| {
        Invocation::new(fabric.node(1), &conflist, &plugins, cache.path())
            .netns(pod)
            .ifname("net1")
            .container_id(name)
            .cni_args(&format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"
            ))
    };
    let held = driver.run(Op::Add, &call(&first, "holder"));
    assert_eq!(held.first_address(), "172.16.11.1/16");
    let status = || {
        ok(spiderctl(&[
            "status",
            "--ippool-dir",
            &dirs.s("ippools"),
            "--data-dir",
            &dirs.s("data"),
        ]))
    };
    let before = fs::read(dirs.path("ippools/gpu1-net11.yaml")).unwrap();

    let reserve = dirs.write(
        "reserve.yaml",
        &object(
            "SpiderReservedIP",
            "keep-out",
            "  ips: [172.16.11.1-172.16.11.2]\n",
        ),
    );
    let narrower = dirs.write(
        "narrower.yaml",
        &fs::read_to_string(conf("seed/gpu1.yaml"))
            .unwrap()
            .replace("172.16.11.1-172.16.11.200", "172.16.11.100-172.16.11.200"),
    );
    for edit in [&reserve, &narrower] {
        let err = refused(dirs.apply(&[edit]));
        assert!(
            err.contains("172.16.11.1 of pool gpu1-net11 held by default/holder")
                && err.contains("--force"),
            "{err}"
        );
    }
    assert_eq!(
        fs::read(dirs.path("ippools/gpu1-net11.yaml")).unwrap(),
        before
    );
    assert!(!dirs.path("ippools/keep-out.yaml").exists());

    let mut args = dirs.apply_args(&[&reserve]);
    args.push("--force".into());
    let forced = spiderctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let (_, stderr) = text(&forced);
    assert!(
        forced.status.success() && stderr.contains("warning: --force"),
        "{stderr}"
    );
    let shown = status();
    assert!(shown.contains("1 held outside the pool"), "{shown}");
    assert!(
        shown.contains("default/holder (outside the pool)"),
        "{shown}"
    );
    assert!(
        shown.contains("keep-out") && shown.contains("172.16.11.1-172.16.11.2"),
        "{shown}"
    );
    // Neither the held nor the reserved addresses are handed out.
    let next = driver.run(Op::Add, &call(&second, "next"));
    assert_eq!(next.first_address(), "172.16.11.3/16");
    // The stranded address is released by its DEL, and stays out of the pool.
    driver.run(Op::Del, &call(&first, "holder")).expect_ok();
    let shown = status();
    assert!(
        !shown.contains("holder") && !shown.contains("outside"),
        "{shown}"
    );
    driver.run(Op::Del, &call(&second, "next")).expect_ok();
}

#[test]
fn with_the_etcd_store_pool_edits_are_guarded_and_reserved_ips_live_there() {
    let etcd = TestEtcd::get();
    let dirs = NodeDirs::new("etcd-guard");
    let apply = |files: &[&Path], force: bool| {
        let mut cmd = Command::new(our_binary("spiderctl"));
        cmd.arg("apply")
            .arg("-f")
            .args(files)
            .arg("--cni-conf-dir")
            .arg(dirs.path("net.d"))
            .args(etcd.spiderctl_args());
        if force {
            cmd.arg("--force");
        }
        run(cmd)
    };
    let seed = conf("seed/gpu1.yaml");
    let (_, stderr) = text(&apply(&[&seed], false));
    assert!(!stderr.contains("node-local file store"), "{stderr}");
    // An allocation as the plugin on node1 makes it.
    let store = etcd.open("node1");
    let manifest =
        ipam_store::manifest::parse_all(ipam_store::PoolStore::manifests(&store).unwrap()).unwrap();
    let owner = ipam_store::Owner {
        container_id: "etcd-holder".into(),
        ifname: "net1".into(),
        netns: "/run/netns/none".into(),
        pod_namespace: Some("default".into()),
        pod_name: Some("etcd-holder".into()),
        node: Some("node1".into()),
    };
    let pool = manifest.get("gpu1-net11").unwrap();
    let ip = ipam_store::Allocations::allocate(&store, pool, "gpu1-macvlan", &owner).unwrap();

    let reserve = dirs.write(
        "reserve.yaml",
        &object(
            "SpiderReservedIP",
            "etcd-keep-out",
            &format!("  ips: [{ip}]\n"),
        ),
    );
    let err = refused(apply(&[&reserve], false));
    assert!(
        err.contains(&format!(
            "{ip} of pool gpu1-net11 held by default/etcd-holder"
        )),
        "{err}"
    );
    ok(apply(&[&reserve], true));
    let mut status = Command::new(our_binary("spiderctl"));
    status.arg("status").args(etcd.spiderctl_args());
    let shown = ok(run(status));
    assert!(
        shown.contains("1 held outside the pool") && shown.contains("etcd-keep-out"),
        "{shown}"
    );
    ipam_store::Allocations::release(&store, "gpu1-macvlan", "etcd-holder", "net1").unwrap();
}

// ---- output formats, read-only commands, the CLI itself ----

/// Every entry under `root` with its mode, mtime and (for files) bytes: what a read-only
/// command must leave exactly as it was.
fn tree(root: &Path) -> Vec<(PathBuf, u32, SystemTime, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let bytes = match meta.is_file() {
                true => fs::read(&path).unwrap(),
                false => Vec::new(),
            };
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.push((
                path,
                meta.permissions().mode(),
                meta.modified().unwrap(),
                bytes,
            ));
        }
    }
    out.sort();
    out
}

#[track_caller]
fn json(out: Output) -> Value {
    let stdout = ok(out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// The exit code of a finished run.
fn code(out: &Output) -> i32 {
    out.status.code().expect("spiderctl was killed")
}

#[test]
fn status_gc_and_doctor_print_each_format_and_change_nothing() {
    let fabric = Fabric::build(1, &[Rail::new(1), Rail::new(2)]);
    let dirs = NodeDirs::new("formats");
    let applied = dirs.apply(&[conf("seed/gpu1.yaml"), conf("seed/gpu2.yaml")]);
    // The seed writes 172.16.1N.0/16: one warning per pool, however many steps meet it
    // (beside the one per network about shared pools on the node-local store).
    let (_, stderr) = text(&applied);
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:") && l.contains("host bits set"))
        .collect();
    assert_eq!(warned.len(), 2, "{stderr}");
    assert!(warned[0].contains("pool gpu1-net11") && warned[1].contains("pool gpu2-net12"));
    ok(applied);

    // One live allocation (its pod's netns exists) and one leaked (the netns is gone), made
    // by the store the plugin uses.
    let pools = ipam_store::manifest::load_dir(&dirs.path("ippools")).unwrap();
    let pool = pools.get("gpu1-net11").unwrap();
    let store = ipam_store::FileStore::open(&dirs.path("data")).unwrap();
    let live_pod = new_pod();
    let owner = |id: &str, netns: String| ipam_store::Owner {
        container_id: id.into(),
        ifname: "net1".into(),
        netns,
        pod_namespace: Some("default".into()),
        pod_name: Some(format!("pod-{id}")),
        node: None,
    };
    let live = store
        .allocate(
            pool,
            "gpu1-macvlan",
            &owner("live", live_pod.path().display().to_string()),
        )
        .unwrap();
    let gone = dirs.path("gone-netns").display().to_string();
    let leaked = store
        .allocate(pool, "gpu1-macvlan", &owner("leaked", gone))
        .unwrap();
    let before = tree(dirs.scratch.path());

    // status: JSON, names, the table with and without headers, wide, YAML.
    let status = json(dirs.store_cmd("status", &["-o", "json"]));
    let pools = status["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 2, "{status}");
    let gpu1 = &pools[0];
    assert_eq!(gpu1["name"], "gpu1-net11");
    assert_eq!(gpu1["manifest"], true);
    assert_eq!(gpu1["subnet"], "172.16.0.0/16");
    assert_eq!(
        (&gpu1["total"], &gpu1["allocated"], &gpu1["free"]),
        (&Value::from(200), &Value::from(2), &Value::from(198))
    );
    let mut ips: Vec<&str> = gpu1["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap())
        .collect();
    ips.sort();
    let mut want = [live.to_string(), leaked.to_string()];
    want.sort();
    assert_eq!(ips, want);
    assert_eq!(gpu1["allocations"][0]["podNamespace"], "default");
    assert_eq!(gpu1["allocations"][0]["node"], Value::Null);
    assert_eq!(pools[1]["allocated"], 0);
    assert_eq!(
        ok(dirs.store_cmd("status", &["-o", "name"])),
        "spiderippool/gpu1-net11\nspiderippool/gpu2-net12\n"
    );
    let table = ok(dirs.store_cmd("status", &["--no-headers"]));
    let first: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first, ["gpu1-net11", "200", "2", "198"], "{table}");
    assert!(!table.contains("POOL"), "{table}");
    let wide = ok(dirs.store_cmd("status", &["-o", "wide"]));
    assert!(wide.lines().next().unwrap().contains("SUBNET"), "{wide}");
    assert!(
        wide.contains(&live_pod.path().display().to_string()),
        "{wide}"
    );
    let yaml = ok(dirs.store_cmd("status", &["-o", "yaml"]));
    assert!(yaml.starts_with("pools:\n- name: gpu1-net11\n"), "{yaml}");
    // The same store through the environment instead of the flags.
    let mut by_env = Command::new(our_binary("spiderctl"));
    by_env
        .args(["status", "-o", "json"])
        .env("SPIDERCTL_DATA_DIR", dirs.path("data"))
        .env("SPIDERCTL_IPPOOL_DIR", dirs.path("ippools"));
    assert_eq!(json(run(by_env)), status);
    // Warnings once per pool on status too, and none with --quiet.
    let (_, stderr) = text(&dirs.store_cmd("status", &[]));
    assert_eq!(stderr.matches("warning: pool ").count(), 2, "{stderr}");
    let (_, stderr) = text(&dirs.store_cmd("status", &["--quiet"]));
    assert_eq!(stderr, "");

    // gc without --apply: the leak, in each format; --exit-code says it was found.
    let gc = json(dirs.store_cmd("gc", &["-o", "json"]));
    assert_eq!(gc["leaked"].as_array().unwrap().len(), 1, "{gc}");
    assert_eq!(gc["leaked"][0]["ip"], leaked.to_string());
    assert_eq!(gc["leaked"][0]["containerID"], "leaked");
    assert_eq!(gc["leaked"][0]["pool"], "gpu1-net11");
    assert_eq!(gc["released"], Value::Null);
    assert_eq!(
        ok(dirs.store_cmd("gc", &["-o", "name"])),
        format!("allocation/gpu1-net11/{leaked}\n")
    );
    let table = ok(dirs.store_cmd("gc", &["--no-headers"]));
    assert_eq!(
        table.split_whitespace().take(5).collect::<Vec<_>>(),
        [
            "gpu1-net11",
            &leaked.to_string(),
            "gpu1-macvlan",
            "leaked",
            "net1"
        ]
    );
    assert_eq!(code(&dirs.store_cmd("gc", &["--exit-code"])), 3);

    // doctor, in the node: JSON findings, names.
    let doctor = json(dirs.doctor_with(fabric.node(1), &["-o", "json"]));
    let findings = doctor["findings"].as_array().unwrap();
    for f in findings {
        let mut keys: Vec<&String> = f.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["check", "detail", "status", "subject"], "{f}");
    }
    let fails = findings.iter().filter(|f| f["status"] == "fail").count();
    assert_eq!(doctor["problems"], fails);
    assert_eq!(fails, 0, "{doctor}");
    assert!(
        findings.iter().any(|f| f["status"] == "ok"
            && f["check"] == "master"
            && f["subject"] == "gpu1-macvlan"),
        "{doctor}"
    );
    let names = ok(dirs.doctor_with(fabric.node(1), &["-o", "name"]));
    assert!(
        names.lines().any(|l| l == "ok/master/gpu2-macvlan"),
        "{names}"
    );
    assert!(!ok(dirs.doctor_with(fabric.node(1), &["--no-headers"])).contains("STATUS"));

    // None of that wrote anything.
    assert!(
        before == tree(dirs.scratch.path()),
        "a read-only command changed the tree"
    );

    // gc --apply releases the leak; then nothing is found.
    let applied = dirs.store_cmd("gc", &["--apply", "--exit-code", "-o", "json"]);
    assert_eq!(code(&applied), 3);
    let applied: Value = serde_json::from_slice(&applied.stdout).unwrap();
    assert_eq!(applied["released"], 1, "{applied}");
    let after = dirs.store_cmd("gc", &["--exit-code"]);
    assert_eq!(code(&after), 0, "{:?}", text(&after));
    assert_eq!(store.held("gpu1-net11").unwrap().len(), 1);
}

#[test]
fn read_only_commands_refuse_a_missing_data_dir_and_create_nothing() {
    let fabric = Fabric::build(1, &[Rail::new(1)]);
    let scratch = temp_dir("read-only");
    let typo = scratch.path().join("typo");
    let deep = scratch.path().join("nonexistent/x");
    for args in [
        vec!["status", "--data-dir", typo.to_str().unwrap()],
        vec!["gc", "--data-dir", deep.to_str().unwrap()],
        vec!["gc", "--apply", "--data-dir", deep.to_str().unwrap()],
    ] {
        let err = refused(spiderctl(&args));
        let path = args.last().unwrap();
        assert!(
            err.contains(path) && err.contains("--data-dir"),
            "{args:?}: {err}"
        );
    }
    // The data dir named by the environment: the message names the variable too.
    let mut cmd = Command::new(our_binary("spiderctl"));
    cmd.arg("status").env("SPIDERCTL_DATA_DIR", &typo);
    let err = refused(run(cmd));
    assert!(err.contains("SPIDERCTL_DATA_DIR"), "{err}");
    // doctor on dirs that do not exist reports them, and makes none.
    let missing = scratch.path().join("net.d");
    let bin = our_binary("spiderctl");
    let doctor = run(fabric.node(1).command(&[
        bin.to_str().unwrap(),
        "doctor",
        "--cni-conf-dir",
        missing.to_str().unwrap(),
        "--ippool-dir",
        scratch.path().join("ippools").to_str().unwrap(),
    ]));
    assert!(!doctor.status.success());
    assert!(
        tree(scratch.path()).is_empty(),
        "{:?}",
        tree(scratch.path())
    );
}

#[test]
fn the_cli_completes_wraps_its_help_and_names_its_commit() {
    let scratch = temp_dir("cli");
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(spiderctl(&["completion", shell]));
        assert!(
            script.contains("spiderctl") && script.contains("status"),
            "{shell}"
        );
        if shell == "bash" {
            let file = scratch.path().join("spiderctl.bash");
            fs::write(&file, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
            assert!(check.status.success(), "bash -n: {}", text(&check).1);
        }
    }

    // Help wraps to the terminal's width (COLUMNS without a terminal).
    for args in [&["--help"][..], &["apply", "--help"], &["status", "--help"]] {
        let mut cmd = Command::new(our_binary("spiderctl"));
        cmd.args(args).env("COLUMNS", "80");
        let help = ok(run(cmd));
        let long = help
            .lines()
            .filter(|l| l.chars().count() > 80)
            .collect::<Vec<_>>();
        assert!(long.is_empty(), "{args:?}: {long:?}");
    }

    // `spiderctl 0.1.0 (commit <12 hex digits of a commit of this repo>, built YYYY-MM-DD)`.
    let version = ok(spiderctl(&["--version"]));
    let rest = version
        .strip_prefix(&format!("spiderctl {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{version}"));
    let (commit, date) = rest
        .split_once(", built ")
        .unwrap_or_else(|| panic!("{version}"));
    assert_eq!(commit.len(), 12, "{version}");
    assert!(commit.bytes().all(|b| b.is_ascii_hexdigit()), "{version}");
    let known = Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(workspace_root())
        .status()
        .unwrap();
    assert!(known.success(), "{commit} is no commit of this repo");
    let date = date
        .strip_suffix(")\n")
        .unwrap_or_else(|| panic!("{version}"));
    assert!(
        date.len() == 10 && date.bytes().filter(|b| *b == b'-').count() == 2,
        "{version}"
    );
}
