//! Debian's containerd 1.6 with its CRI plugin, started by the test inside a [`RuntimeHost`]
//! on a node, with a generated `config.toml` that puts every path under a temp dir: root,
//! state, temp, the gRPC and ttrpc sockets, runc's state dir; CNI's bin and conf dirs are
//! ours. What 1.6 does not let us move (libcni's `/var/lib/cni`, the shim sockets in
//! `/run/containerd/s`, the sandbox netns files in `/run/netns`) lands in the host's shields:
//! [`CONTAINERD_COMPILED_IN`].
//!
//! Why these settings: `max_conf_num = 2` makes go-cni attach the first two conflists of the
//! conf dir at once (eth0 = gpu1-macvlan, eth1 = gpu2-macvlan); `restrict_oom_score_adj`
//! because the CRI gives a sandbox oom_score_adj -998, which needs CAP_SYS_RESOURCE (absent
//! here: runc then fails with "can't get final child's PID from pipe"); runc with cgroupfs
//! (no systemd); no TCP streaming service; the `opt` plugin (it would create /opt/containerd)
//! and the snapshotters that cannot work here are disabled. The sandbox image is made offline
//! and imported with `ctr`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::Netns;
use crate::paths::temp_dir;
use crate::runtimes::cgroup::CgroupTree;
use crate::runtimes::host::RuntimeHost;
use crate::runtimes::image::{busybox_rootfs, oci_archive};
use crate::runtimes::networks::Networks;

/// The sandbox ("pause") image: busybox sleeping until the CRI kills it.
pub const SANDBOX_IMAGE: &str = "localhost/sptest-pause:latest";

/// The paths containerd 1.6 writes that no option moves (besides what the helper made).
pub const CONTAINERD_COMPILED_IN: [&str; 5] = [
    "/run/containerd",
    "/run/containerd/s",
    "/var/lib",
    "/var/lib/cni",
    "/var/lib/cni/results",
];

/// Bound on containerd creating its socket.
const START_POLLS: u32 = 600;
const START_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running containerd, killed on drop (then the host kills its shims, and the cgroup tree
/// the sandboxes).
#[derive(Debug)]
pub struct Containerd {
    process: Child,
    // Drop order matters: host and cgroup tree before the state dir.
    pub host: RuntimeHost,
    pub cgroups: CgroupTree,
    dir: TempDir,
}

impl Containerd {
    /// Starts containerd for `networks` with CNI's `max_conf_num`, waits for its socket and
    /// imports the sandbox image.
    pub fn start(node: &Netns, networks: &Networks, max_conf_num: u32) -> Containerd {
        let dir = temp_dir("containerd");
        let d = dir.path().display().to_string();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
temp = "{d}/tmp"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = {max_conf_num}

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "runc"
        Root = "{d}/runc"
        SystemdCgroup = false
"#,
            bin = networks.plugins.path().display(),
            conf = networks.conf_dir.path().display(),
        );
        let config_path = dir.path().join("config.toml");
        fs::write(&config_path, config).expect("write config.toml");
        let log = fs::File::create(dir.path().join("containerd.log")).expect("a log file");

        let host = RuntimeHost::new(node);
        let mut cmd = host.command("containerd");
        cmd.arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a second fd"))
            .stderr(log);
        // SAFETY: prctl(2) is async-signal-safe. If the test process dies, containerd dies
        // with it instead of running on (its shims are killed by the netns sweep of the next
        // run, as they live in the node's namespace).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let process = cmd
            .spawn()
            .expect("containerd starts (Debian's containerd)");
        let containerd = Containerd {
            process,
            host,
            cgroups: CgroupTree::new("cri"),
            dir,
        };
        containerd.wait_for_socket();

        let rootfs = busybox_rootfs(containerd.dir.path());
        let image = oci_archive(&rootfs, SANDBOX_IMAGE, &["/bin/sleep", "infinity"]);
        containerd
            .ctr(&["images", "import", &image.display().to_string()])
            .unwrap_or_else(|e| panic!("importing the sandbox image: {e}"));
        containerd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// `ctr --address <ours> --namespace k8s.io args` (the CRI's namespace), inside the host.
    pub fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let socket = self.socket().display().to_string();
        let mut full = vec!["--address", &socket, "--namespace", "k8s.io"];
        full.extend_from_slice(args);
        self.host.run("ctr", &full)
    }

    /// containerd's own log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn wait_for_socket(&self) {
        for _ in 0..START_POLLS {
            if self.socket().exists() {
                return;
            }
            thread::sleep(START_POLL_INTERVAL);
        }
        panic!(
            "containerd made no socket in {} s: {}",
            START_POLLS as u64 * START_POLL_INTERVAL.as_millis() as u64 / 1000,
            self.log()
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
