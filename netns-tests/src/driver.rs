//! The libcni client: builds the Go `cnidriver` once per process and runs it
//! inside a node namespace, the way kubelet + Multus call plugins on a node.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

use crate::cmd::run;
use crate::netns::Netns;
use crate::paths::workspace_root;
use crate::plugins::PluginDir;

/// Debian's golang-github-appc-cni-dev installs libcni here, for GOPATH mode.
const GOPATH: &str = "/usr/share/gocode";

/// The CNI operation to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Check,
    Del,
    Gc,
    Status,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Check => "check",
            Op::Del => "del",
            Op::Gc => "gc",
            Op::Status => "status",
        }
    }
}

/// Everything one driver call needs. Built with [`Invocation::new`] and the
/// builder methods; `Clone` it to vary one field between calls.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    node: &'a Netns,
    conflist: String,
    netns: Option<PathBuf>,
    ifname: String,
    container_id: String,
    cni_args: String,
    capability_args: Value,
    cni_path: PathBuf,
    cache_dir: PathBuf,
    valid_attachments: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

impl<'a> Invocation<'a> {
    /// A call from `node` of `conflist` with the plugins of `plugins` and
    /// libcni's result cache in `cache_dir` (which must outlive the ADD..DEL
    /// sequence, as libcni hands the cached result to CHECK and DEL).
    /// Defaults: no netns, ifname `net1`, a container id unique to this
    /// process, empty CNI_ARGS, no valid attachments.
    pub fn new(node: &'a Netns, conflist: &Value, plugins: &PluginDir, cache_dir: &Path) -> Self {
        static CONTAINERS: AtomicU64 = AtomicU64::new(0);
        let n = CONTAINERS.fetch_add(1, Ordering::Relaxed);
        Invocation {
            node,
            conflist: conflist.to_string(),
            netns: None,
            ifname: "net1".into(),
            container_id: format!("sptest-{}-{n}", std::process::id()),
            cni_args: String::new(),
            capability_args: serde_json::json!({}),
            cni_path: plugins.path().to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            valid_attachments: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The pod namespace. Only its path is kept, so DEL can still be called
    /// after the namespace is gone.
    pub fn netns(self, pod: &Netns) -> Self {
        self.netns_path(pod.path())
    }

    pub fn netns_path(self, path: impl Into<PathBuf>) -> Self {
        Invocation {
            netns: Some(path.into()),
            ..self
        }
    }

    pub fn ifname(self, ifname: &str) -> Self {
        Invocation {
            ifname: ifname.into(),
            ..self
        }
    }

    pub fn container_id(self, id: &str) -> Self {
        Invocation {
            container_id: id.into(),
            ..self
        }
    }

    /// CNI_ARGS, `K=V;K2=V2` (e.g. `K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p`).
    pub fn cni_args(self, args: &str) -> Self {
        Invocation {
            cni_args: args.into(),
            ..self
        }
    }

    /// libcni's capability arguments, e.g. `{"ips": ["172.16.11.150/16"]}`: the plugins that
    /// declare a capability get its value in `runtimeConfig`.
    pub fn capability_args(self, args: Value) -> Self {
        Invocation {
            capability_args: args,
            ..self
        }
    }

    /// For GC: the `(container id, ifname)` pairs that are still in use.
    pub fn valid_attachments(self, attachments: &[(&str, &str)]) -> Self {
        let valid_attachments = attachments
            .iter()
            .map(|&(id, ifname)| (id.to_owned(), ifname.to_owned()))
            .collect();
        Invocation {
            valid_attachments,
            ..self
        }
    }

    /// An environment variable of the plugins' processes (libcni passes its own environment
    /// on), e.g. `SPIDERPOOL_NODE_NAME`, which a node's agent sets.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn id(&self) -> &str {
        &self.container_id
    }

    /// CNI_NETNS as the driver passes it (empty when there is none).
    pub fn netns_str(&self) -> String {
        self.netns
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn attachments_json(&self) -> String {
        let list: Vec<Value> = self
            .valid_attachments
            .iter()
            .map(|(id, ifname)| serde_json::json!({"containerID": id, "ifname": ifname}))
            .collect();
        Value::Array(list).to_string()
    }
}

/// What the driver reported. On failure `json` is the CNI error object.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub json: Option<Value>,
}

impl Outcome {
    /// The CNI error code, if the call failed (0: the driver's own error).
    pub fn error_code(&self) -> Option<u64> {
        self.error_field("code")?.as_u64()
    }

    /// The CNI error message, if the call failed.
    pub fn error_msg(&self) -> Option<&str> {
        self.error_field("msg")?.as_str()
    }

    /// Panics with everything the driver said unless the call succeeded.
    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        assert!(self.success, "CNI call failed: {self:#?}");
        self
    }

    /// Panics unless the call failed with `code` and a message holding every fragment;
    /// returns the message.
    #[track_caller]
    pub fn expect_error(&self, code: u64, fragments: &[&str]) -> &str {
        assert!(
            !self.success,
            "expected code {code}, got success: {self:#?}"
        );
        assert_eq!(self.error_code(), Some(code), "{self:#?}");
        let msg = self.error_msg().unwrap_or_default();
        for fragment in fragments {
            assert!(msg.contains(fragment), "{fragment:?} not in {msg:?}");
        }
        msg
    }

    /// The result object of a successful ADD.
    #[track_caller]
    pub fn result(&self) -> &Value {
        self.expect_ok().json.as_ref().expect("ADD prints a result")
    }

    /// `ips[0].address` of a successful ADD's result, as `ip/len`.
    #[track_caller]
    pub fn first_address(&self) -> &str {
        self.result()["ips"][0]["address"]
            .as_str()
            .expect("the result has an address")
    }

    fn error_field(&self, key: &str) -> Option<&Value> {
        if self.success {
            return None;
        }
        self.json.as_ref()?.get(key)
    }
}

/// The built `cnidriver` binary.
#[derive(Debug)]
pub struct Driver {
    bin: PathBuf,
}

impl Driver {
    /// Builds the driver on first use in this process (a few seconds with a
    /// cold Go cache) under `<workspace>/target/cnidriver/`.
    pub fn get() -> &'static Driver {
        static DRIVER: OnceLock<Driver> = OnceLock::new();
        DRIVER.get_or_init(build)
    }

    /// Runs `op` inside the invocation's node namespace with CNI_PATH set to
    /// its plugin directory.
    pub fn run(&self, op: Op, inv: &Invocation) -> Outcome {
        // libcni reads the conflist from a file, as from /etc/cni/net.d.
        let mut conflist = tempfile::Builder::new()
            .prefix("sptest-conflist-")
            .suffix(".conflist")
            .tempfile()
            .expect("cannot create conflist file");
        conflist
            .write_all(inv.conflist.as_bytes())
            .expect("cannot write conflist file");

        let bin = self.bin.to_string_lossy();
        let conflist_path = conflist.path().to_string_lossy();
        let cache_dir = inv.cache_dir.to_string_lossy();
        let attachments = inv.attachments_json();
        let capability_args = inv.capability_args.to_string();
        let mut args = vec![
            &*bin,
            op.verb(),
            "--conflist",
            &*conflist_path,
            "--ifname",
            &inv.ifname,
            "--container-id",
            &inv.container_id,
            "--args",
            &inv.cni_args,
            "--capability-args",
            &capability_args,
            "--cache-dir",
            &*cache_dir,
            "--valid-attachments",
            &attachments,
        ];
        let netns = inv.netns.as_ref().map(|p| p.to_string_lossy());
        if let Some(netns) = &netns {
            args.extend(["--netns", netns]);
        }

        let mut cmd = inv.node.command(&args);
        cmd.env("CNI_PATH", &inv.cni_path)
            .envs(inv.env.iter().cloned());
        Outcome::of(&mut cmd)
    }
}

/// The `CNI_*` variables of a direct exec ([`exec_plugin`]): an ADD by default, and any
/// variable changed or removed, as a runtime never would.
#[derive(Debug, Clone)]
pub struct CniEnv {
    vars: Vec<(&'static str, String)>,
}

impl CniEnv {
    /// ADD of `container_id`'s `net1` in the namespace at `netns`, with `plugins` as CNI_PATH.
    pub fn add(plugins: &PluginDir, container_id: &str, netns: &Path) -> CniEnv {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        CniEnv {
            vars: vec![
                ("CNI_COMMAND", "ADD".into()),
                ("CNI_CONTAINERID", container_id.into()),
                ("CNI_NETNS", text(netns)),
                ("CNI_IFNAME", "net1".into()),
                ("CNI_PATH", text(plugins.path())),
            ],
        }
    }

    /// Sets `name` to `value`, or removes it (`None`).
    pub fn with(mut self, name: &'static str, value: Option<&str>) -> CniEnv {
        self.vars.retain(|(n, _)| *n != name);
        if let Some(value) = value {
            self.vars.push((name, value.into()));
        }
        self
    }

    pub fn set(self, name: &'static str, value: &str) -> CniEnv {
        self.with(name, Some(value))
    }

    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.vars.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }
}

/// Runs plugin `name` of `plugins` directly inside `node`, with exactly the
/// given `CNI_*` variables and stdin: for what no client would send (broken
/// JSON, missing variables), which libcni rejects before any plugin runs.
pub fn exec_plugin(
    node: &Netns,
    plugins: &PluginDir,
    name: &str,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> Outcome {
    let bin = plugins.path().join(name);
    let mut cmd = node.command(&[&*bin.to_string_lossy()]);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped());
    Outcome::with_stdin(&mut cmd, stdin)
}

impl Outcome {
    fn of(cmd: &mut Command) -> Outcome {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
        Outcome::from_output(out)
    }

    fn with_stdin(cmd: &mut Command, stdin: &[u8]) -> Outcome {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A plugin may refuse oversized stdin and exit before reading it all.
        let _ = pipe.write_all(stdin);
        drop(pipe);
        Outcome::from_output(child.wait_with_output().expect("cannot wait for plugin"))
    }

    fn from_output(out: Output) -> Outcome {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Outcome {
            success: out.status.success(),
            json: serde_json::from_str(stdout.trim()).ok(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn build() -> Driver {
    let root = workspace_root();
    let dir = root.join("target/cnidriver");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    // Build under a private name, then rename: another test process may be
    // running the previous binary, and rename never disturbs a running file.
    let bin = dir.join("cnidriver");
    let scratch = dir.join(format!("cnidriver.{}", std::process::id()));
    let built = run(Command::new("go")
        .args(["build", "-o"])
        .arg(&scratch)
        .arg("./netns-tests/cnidriver")
        .current_dir(&root)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "")
        // Pure Go: no C toolchain needed, and a static binary.
        .env("CGO_ENABLED", "0"));
    if let Err(e) = built {
        panic!(
            "cannot build cnidriver (needs Debian golang-go and golang-github-appc-cni-dev): {e}"
        );
    }
    fs::rename(&scratch, &bin).unwrap_or_else(|e| panic!("cannot install {}: {e}", bin.display()));
    Driver { bin }
}
