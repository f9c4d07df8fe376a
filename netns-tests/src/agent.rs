//! `spiderctl agent` under test: a temporary "host" tree for it to install and write into, the
//! agent as a child process whose stderr is collected line by line, a minimal HTTP GET for its
//! endpoints, and leaked allocations made directly in a file store (for GC tests and the bench).

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipam_store::{manifest, Allocations, FileStore, Owner, Pool};
use tempfile::TempDir;

use crate::paths::temp_dir;
use crate::plugins::our_binary;

/// Bound on polls of the agent (a line, a file, an HTTP answer).
pub const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A node's paths under a temp dir, as the DaemonSet mounts them: `opt/cni/bin`,
/// `etc/cni/net.d`, its `spiderpool/ippools`, `var/lib/cni/spiderpool`, and `config` (the
/// ConfigMap volume).
pub struct HostTree {
    scratch: TempDir,
}

impl HostTree {
    pub fn new(label: &str) -> HostTree {
        let tree = HostTree {
            scratch: temp_dir(label),
        };
        fs::create_dir(tree.config()).expect("a dir in a fresh temp dir");
        tree
    }

    pub fn root(&self) -> &Path {
        self.scratch.path()
    }

    pub fn bin(&self) -> PathBuf {
        self.root().join("opt/cni/bin")
    }

    pub fn conf(&self) -> PathBuf {
        self.root().join("etc/cni/net.d")
    }

    pub fn ippools(&self) -> PathBuf {
        self.conf().join("spiderpool/ippools")
    }

    pub fn data(&self) -> PathBuf {
        self.root().join("var/lib/cni/spiderpool")
    }

    pub fn config(&self) -> PathBuf {
        self.root().join("config")
    }

    /// `agent` with every host path of this tree; `config` adds `--config-dir`.
    pub fn agent_args(&self, config: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["agent".into()];
        for (flag, path) in [
            ("--cni-bin-dir", self.bin()),
            ("--cni-conf-dir", self.conf()),
            ("--ippool-dir", self.ippools()),
            ("--data-dir", self.data()),
        ] {
            args.push(flag.into());
            args.push(path.into());
        }
        if config {
            args.extend(["--config-dir".into(), self.config().into()]);
        }
        args
    }

    /// Writes `files` as a new version of the ConfigMap volume the way kubelet does: a fresh
    /// timestamped dir, `..data` swapped to it by rename, a symlink per file through `..data`,
    /// the previous version removed.
    pub fn write_configmap(&self, version: u32, files: &[(&str, &str)]) {
        let config = self.config();
        let dir_name = format!("..2026_12_02_00_00_{version:02}.000000001");
        let dir = config.join(&dir_name);
        fs::create_dir(&dir).expect("a new version dir");
        for (name, text) in files {
            fs::write(dir.join(name), text).expect("write a ConfigMap file");
        }
        let tmp = config.join("..data_tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&dir_name, &tmp).expect("symlink ..data_tmp");
        let previous = fs::read_link(config.join("..data")).ok();
        fs::rename(&tmp, config.join("..data")).expect("swap ..data");
        for entry in fs::read_dir(&config).expect("read the config dir") {
            let entry = entry.expect("a dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !files.iter().any(|(f, _)| *f == name) {
                fs::remove_file(entry.path()).expect("remove a dropped key");
            }
        }
        for (name, _) in files {
            let link = config.join(name);
            if fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("key link");
            }
        }
        if let Some(previous) = previous {
            fs::remove_dir_all(config.join(previous)).expect("remove the old version");
        }
    }
}

/// `spiderctl args` run to completion.
pub fn spiderctl(args: &[OsString], env: &[(&str, &str)]) -> Output {
    Command::new(our_binary("spiderctl"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("cannot run spiderctl (cargo build --release first, or set SPIDER_BIN_DIR)")
}

/// A running agent; killed (by its pid) on drop if still running.
pub struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    pub fn start(args: &[OsString]) -> Agent {
        let mut child = Command::new(our_binary("spiderctl"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start spiderctl agent");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Agent { child, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Index of the first line holding `fragment`, waiting for it (bounded).
    #[track_caller]
    pub fn wait_line(&self, fragment: &str) -> usize {
        let found = poll(|| self.log().iter().position(|l| l.contains(fragment)));
        found.unwrap_or_else(|| {
            panic!(
                "no {fragment:?} in the agent's log:\n{}",
                self.log().join("\n")
            )
        })
    }

    /// The address of its HTTP endpoints, from its log.
    pub fn http_addr(&self) -> SocketAddr {
        let at = self.wait_line("serving /metrics");
        let line = &self.log()[at];
        let addr = line.rsplit("http://").next().expect("an address");
        addr.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill {}", self.child.id());
    }

    /// Waits (bounded) for it to exit.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = poll(|| self.child.try_wait().expect("wait for the agent"));
        status.unwrap_or_else(|| panic!("the agent did not exit:\n{}", self.log().join("\n")))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` until it gives something, for at most [`WAIT`].
pub fn poll<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// `GET path` on `addr`: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(WAIT)).expect("a timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (code, body.to_owned())
}

/// A pool `name` of `count` addresses from 10.64.0.1 on (a /10: up to ~4M), as YAML.
pub fn big_pool_yaml(name: &str, count: u32) -> String {
    let first = u32::from(std::net::Ipv4Addr::new(10, 64, 0, 1));
    let last = std::net::Ipv4Addr::from(first + count - 1);
    format!(
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  name: {name}\n\
         spec:\n  subnet: 10.64.0.0/10\n  ips:\n    - 10.64.0.1-{last}\n"
    )
}

pub fn pool_from_yaml(yaml: &str) -> Pool {
    let mut parsed = manifest::parse(yaml, "test pool").expect("a valid pool");
    parsed.pools.remove(0)
}

/// Allocates `count` addresses of `pool` in the file store at `data_dir`, for attachments of
/// network `network` whose netns is `netns` (a path that is gone makes them leaks).
pub fn allocate_many(data_dir: &Path, pool: &Pool, network: &str, count: usize, netns: &str) {
    let store = FileStore::open(data_dir).expect("open the file store");
    for i in 0..count {
        let owner = Owner {
            container_id: format!("leak-{i:08}"),
            ifname: "net1".into(),
            netns: netns.into(),
            pod_namespace: Some("default".into()),
            pod_name: Some(format!("pod-{i}")),
            node: None,
        };
        store
            .allocate(pool, network, &owner)
            .unwrap_or_else(|e| panic!("allocation {i}: {e}"));
    }
}
