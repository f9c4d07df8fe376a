//! Our CRI client (`netns-tests/cri/client.py`, over containerd's socket), as one long-lived
//! process: protoc compiles `cri.proto` into a temp dir, Debian's python3 runs the client, and
//! requests and answers are JSON lines on its stdin and stdout.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::cmd::run;
use crate::paths::{temp_dir, workspace_root};
use crate::runtimes::image::PYTHON;

/// Bound on the CRI becoming ready (its CNI conf loaded) after containerd started.
const READY_POLLS: u32 = 600;
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A sandbox as the CRI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub state: String,
    /// The pod IP the CRI reports (go-cni's: the address of `eth0`).
    pub ip: String,
    /// The sandbox's init ("pause") process.
    pub pid: u32,
    /// The netns path containerd gave the plugins as CNI_NETNS.
    pub netns: String,
}

/// The client process, killed on drop.
#[derive(Debug)]
pub struct CriClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _pb: TempDir,
}

impl CriClient {
    /// A client of the CRI at `socket`; returns once the runtime says it is ready, its
    /// network included.
    pub fn connect(socket: &Path) -> CriClient {
        let pb = temp_dir("cri-pb");
        let proto_dir = workspace_root().join("netns-tests/cri");
        run(Command::new("protoc")
            .arg("-I")
            .arg(&proto_dir)
            .arg(format!("--python_out={}", pb.path().display()))
            .arg(proto_dir.join("cri.proto")))
        .unwrap_or_else(|e| panic!("compiling cri.proto (Debian's protobuf-compiler): {e}"));
        let mut child = Command::new(PYTHON)
            .arg(proto_dir.join("client.py"))
            .arg(socket)
            .arg(pb.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut client = CriClient {
            child,
            stdin,
            stdout,
            _pb: pb,
        };
        client.wait_ready();
        client
    }

    /// One request; the answer, or the error the runtime gave.
    pub fn call(&mut self, request: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{request}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("CRI client gone: {e}"));
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("CRI client: {e}"));
        assert!(n > 0, "the CRI client exited (python3-grpcio installed?)");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("CRI client answered {line:?}: {e}"));
        match answer["error"].as_str() {
            Some(error) => Err(error.to_owned()),
            None => Ok(answer),
        }
    }

    /// `Version`: (runtime name, runtime version, CRI version).
    pub fn version(&mut self) -> (String, String, String) {
        let v = self.call(json!({"op": "version"})).expect("CRI Version");
        let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        (
            s("runtime_name"),
            s("runtime_version"),
            s("runtime_api_version"),
        )
    }

    /// `RunPodSandbox` with the metadata kubelet would send; the sandbox id.
    pub fn run_sandbox(
        &mut self,
        name: &str,
        uid: &str,
        namespace: &str,
        cgroup_parent: &str,
    ) -> Result<String, String> {
        let answer = self.call(json!({
            "op": "run", "name": name, "uid": uid, "namespace": namespace,
            "cgroup_parent": cgroup_parent,
        }))?;
        Ok(answer["id"].as_str().expect("a sandbox id").to_owned())
    }

    /// `PodSandboxStatus` (verbose).
    pub fn inspect(&mut self, id: &str) -> Result<Sandbox, String> {
        let s = self.call(json!({"op": "inspect", "id": id}))?;
        let text = |k: &str| s[k].as_str().unwrap_or("").to_owned();
        Ok(Sandbox {
            id: id.to_owned(),
            state: text("state"),
            ip: text("ip"),
            pid: s["pid"].as_u64().unwrap_or(0) as u32,
            netns: text("netns"),
        })
    }

    pub fn stop(&mut self, id: &str) -> Result<(), String> {
        self.call(json!({"op": "stop", "id": id})).map(drop)
    }

    pub fn remove(&mut self, id: &str) -> Result<(), String> {
        self.call(json!({"op": "remove", "id": id})).map(drop)
    }

    /// Polls `Status` until RuntimeReady and NetworkReady (bounded).
    fn wait_ready(&mut self) {
        let mut last = String::new();
        for _ in 0..READY_POLLS {
            match self.call(json!({"op": "status"})) {
                Ok(s)
                    if s["conditions"]["RuntimeReady"] == true
                        && s["conditions"]["NetworkReady"] == true =>
                {
                    return
                }
                Ok(s) => last = s.to_string(),
                Err(e) => last = e,
            }
            thread::sleep(READY_POLL_INTERVAL);
        }
        panic!("the CRI never became ready: {last}");
    }
}

impl Drop for CriClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
