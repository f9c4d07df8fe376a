//! The test bed every attach measurement runs on: one node with rail 1 (master
//! `enp11s0f0np0`, gateway `172.16.11.254`), the chains to compare, and a way to
//! run a chain by direct exec the way libcni chains plugins.

use std::fs;
use std::io::Write;
use std::process::Stdio;

use netns_tests::conflist::{host_local, list, macvlan, spiderpool};
use netns_tests::paths::temp_dir;
use netns_tests::{Driver, Fabric, Invocation, Netns, Op, PluginDir, Rail, Source};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::rss;

/// Addresses every scenario can hand out: more than the 400 pods of the parallel run.
const FIRST: &str = "172.16.11.1";
const LAST: &str = "172.16.12.254";

/// A chain of plugins as a runtime would call it.
#[derive(Clone, Copy)]
pub enum Chain {
    /// Our macvlan + spiderpool.
    OursIpam,
    /// The reference macvlan + host-local.
    ReferenceIpam,
    /// Our macvlan + spiderpool + coordinator (policy routing, gateway check).
    OursFull,
    /// The reference macvlan + host-local + sbr (source-based routing).
    ReferenceFull,
}

impl Chain {
    pub fn label(self) -> &'static str {
        match self {
            Chain::OursIpam => "ours: macvlan + spiderpool",
            Chain::ReferenceIpam => "reference: macvlan + host-local",
            Chain::OursFull => "ours: macvlan + spiderpool + coordinator",
            Chain::ReferenceFull => "reference: macvlan + host-local + sbr",
        }
    }

    fn plugins(self) -> Vec<(&'static str, Source)> {
        match self {
            Chain::OursIpam => vec![("macvlan", Source::Ours), ("spiderpool", Source::Ours)],
            Chain::OursFull => vec![
                ("macvlan", Source::Ours),
                ("spiderpool", Source::Ours),
                ("coordinator", Source::Ours),
            ],
            Chain::ReferenceIpam => vec![
                ("macvlan", Source::Reference),
                ("host-local", Source::Reference),
            ],
            Chain::ReferenceFull => vec![
                ("macvlan", Source::Reference),
                ("host-local", Source::Reference),
                ("sbr", Source::Reference),
            ],
        }
    }
}

/// A fresh node, state dirs and plugin dir for one chain.
pub struct Bed {
    pub fabric: Fabric,
    pub plugins: PluginDir,
    pub conflist: Value,
    cache: TempDir,
    _state: TempDir,
}

impl Bed {
    pub fn new(chain: Chain) -> Bed {
        let fabric = Fabric::build(1, &[Rail::new(1)]);
        let state = temp_dir("bench-state");
        let pools = state.path().join("pools");
        fs::create_dir(&pools).expect("pool dir");
        fs::write(
            pools.join("bench.yaml"),
            format!(
                "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  \
                 name: bench\nspec:\n  subnet: 172.16.0.0/16\n  gateway: 172.16.11.254\n  ips:\n    \
                 - {FIRST}-{LAST}\n"
            ),
        )
        .expect("pool manifest");
        let ipam = match chain {
            Chain::OursIpam | Chain::OursFull => {
                spiderpool(&["bench"], &[], &pools, &state.path().join("data"))
            }
            Chain::ReferenceIpam | Chain::ReferenceFull => {
                let mut ipam = host_local(1, 1, 1, &state.path().join("host-local"));
                ipam["ranges"][0][0]["rangeStart"] = json!(FIRST);
                ipam["ranges"][0][0]["rangeEnd"] = json!(LAST);
                ipam
            }
        };
        let mut plugins = vec![macvlan(1, ipam)];
        match chain {
            Chain::OursFull => plugins.push(json!({"type": "coordinator"})),
            Chain::ReferenceFull => plugins.push(json!({"type": "sbr"})),
            _ => {}
        }
        Bed {
            fabric,
            plugins: PluginDir::new(&chain.plugins()),
            conflist: list("1.0.0", "bench", &plugins),
            cache: temp_dir("bench-cache"),
            _state: state,
        }
    }

    pub fn node(&self) -> &Netns {
        self.fabric.node(1)
    }

    /// The libcni call attaching `pod` as container `id`.
    pub fn call<'a>(&'a self, pod: &Netns, id: &str) -> Invocation<'a> {
        Invocation::new(
            self.node(),
            &self.conflist,
            &self.plugins,
            self.cache.path(),
        )
        .netns(pod)
        .container_id(id)
    }

    /// ADD through the libcni client; panics on failure.
    pub fn libcni(&self, op: Op, call: &Invocation) {
        Driver::get().run(op, call).expect_ok();
    }

    /// The chain by direct exec, as libcni chains it: ADD through the plugins in order, each
    /// getting the previous result; DEL in reverse order, each getting the ADD's result.
    /// Returns the ADD's final result (for the DEL).
    pub fn exec(&self, op: Op, pod: &Netns, id: &str, added: Option<&Value>) -> Option<Value> {
        self.chain(op, pod, id, added, Spawn::Direct).0
    }

    /// [`Bed::exec`] through the RSS helper, also returning each plugin's peak RSS in KiB (a
    /// plugin that runs its IPAM counts the larger of the two: the kernel reports a process
    /// with the children it waited for).
    pub fn exec_measured(
        &self,
        op: Op,
        pod: &Netns,
        id: &str,
        added: Option<&Value>,
    ) -> (Option<Value>, Vec<(String, u64)>) {
        let (result, peaks) = self.chain(op, pod, id, added, Spawn::Measured);
        let peaks = peaks
            .into_iter()
            .map(|(name, peak)| (name, peak.expect("measured")))
            .collect();
        (result, peaks)
    }

    fn chain(
        &self,
        op: Op,
        pod: &Netns,
        id: &str,
        added: Option<&Value>,
        spawn: Spawn,
    ) -> (Option<Value>, Vec<(String, Option<u64>)>) {
        let (command, order): (&str, Vec<&Value>) = match op {
            Op::Add => ("ADD", self.plugin_confs().collect()),
            Op::Del => ("DEL", self.plugin_confs().rev().collect()),
            other => panic!("bench does not time {other:?}"),
        };
        let netns = pod.path();
        let env = self.env(command, id, netns.to_str().expect("UTF-8 path"));
        let mut prev = added.cloned();
        let mut peaks = Vec::new();
        for plugin in order {
            let mut conf = plugin.clone();
            conf["name"] = self.conflist["name"].clone();
            conf["cniVersion"] = self.conflist["cniVersion"].clone();
            if let Some(prev) = &prev {
                conf["prevResult"] = prev.clone();
            }
            let name = conf["type"].as_str().expect("plugin type").to_owned();
            let (stdout, peak) = run_plugin(self.node(), &self.plugins, &name, &env, &conf, spawn);
            peaks.push((name, peak));
            if command == "ADD" {
                prev = Some(stdout);
            }
        }
        (prev, peaks)
    }

    /// Peak RSS (KiB) of the chain's IPAM plugin run alone for ADD, as the main plugin runs
    /// it; the address is released again.
    pub fn ipam_alone(&self, id: &str, pod: &Netns) -> u64 {
        let mut conf = self.conflist["plugins"][0].clone();
        conf["name"] = self.conflist["name"].clone();
        conf["cniVersion"] = self.conflist["cniVersion"].clone();
        let ipam = conf["ipam"]["type"].as_str().expect("ipam type").to_owned();
        let netns = pod.path();
        let netns = netns.to_str().expect("UTF-8 path");
        let add = self.env("ADD", id, netns);
        let node = self.node();
        let (_, peak) = run_plugin(node, &self.plugins, &ipam, &add, &conf, Spawn::Measured);
        let del = self.env("DEL", id, netns);
        run_plugin(node, &self.plugins, &ipam, &del, &conf, Spawn::Direct);
        peak.expect("measured")
    }

    /// The `CNI_*` variables of one call, as libcni sets them.
    fn env<'a>(&'a self, command: &'a str, id: &'a str, netns: &'a str) -> [(&'a str, &'a str); 5] {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "net1"),
            (
                "CNI_PATH",
                self.plugins.path().to_str().expect("UTF-8 path"),
            ),
        ]
    }

    fn plugin_confs(&self) -> impl DoubleEndedIterator<Item = &Value> {
        self.conflist["plugins"].as_array().expect("plugins").iter()
    }
}

/// How [`run_plugin`] starts a plugin.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Spawn {
    /// Forked from the bench, joining the node's netns between fork and exec: for timing.
    Direct,
    /// Through the RSS helper ([`crate::rss`]), which reports the plugin's own peak RSS.
    Measured,
}

/// Runs one plugin inside `node`; its stdout as JSON and, for [`Spawn::Measured`], its peak
/// RSS in KiB. Panics with what the plugin said if it fails.
pub fn run_plugin(
    node: &Netns,
    plugins: &PluginDir,
    name: &str,
    env: &[(&str, &str)],
    conf: &Value,
    spawn: Spawn,
) -> (Value, Option<u64>) {
    let bin = plugins.path().join(name);
    let mut cmd = match spawn {
        Spawn::Direct => {
            let mut cmd = node.command(&[&*bin.to_string_lossy()]);
            // The reference sbr logs every rule it looks at there.
            cmd.stderr(Stdio::null());
            cmd
        }
        Spawn::Measured => rss::command(&node.path(), &bin),
    };
    let mut child = cmd
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.to_string().as_bytes())
        .expect("plugin stdin");
    let out = child.wait_with_output().expect("plugin output");
    let text = String::from_utf8_lossy(&out.stdout);
    // Measured, stderr carries the RSS helper's own complaints, if any.
    assert!(
        out.status.success(),
        "{name} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name} printed {text:?}: {e}"))
    };
    let peak = (spawn == Spawn::Measured).then(|| rss::report_kib(&out.stderr));
    (json, peak)
}
