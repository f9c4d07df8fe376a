//! Debian's podman 4.3 with its CNI backend, run as a user would run it but with every piece
//! of its state under a temp dir, inside a [`RuntimeHost`] on a node.
//!
//! Every default path is overridden: `--root`/`--runroot` (and a `storage.conf` of our own
//! through `CONTAINERS_STORAGE_CONF`), a `containers.conf` through `CONTAINERS_CONF` (which
//! makes podman ignore every other containers.conf) with the CNI backend, our plugin dir and
//! our conf dir, its `tmp_dir` (`/run/libpod`), `image_copy_tmp_dir` (`/var/tmp`), file locks
//! instead of `/dev/shm/libpod_lock`, and the events log. What cannot be moved (libcni's
//! `/var/lib/cni`, the blob info cache `/var/lib/containers/cache`, netns files in
//! `/run/netns`, runc's state in `/run/runc`) lands in the host's shields:
//! [`PODMAN_COMPILED_IN`]. (`--runtime-flag root=...` would move runc's state, but the
//! `podman container cleanup` that conmon runs when a container exits does not get it, so
//! the next start of a restarted container fails with "container with given ID already
//! exists".)
//!
//! Why these settings: crun 1.8 refuses this machine's hybrid cgroups, so runc; setrlimit
//! above the current limits is not permitted here (no CAP_SYS_RESOURCE), so no default
//! ulimits; no systemd, so cgroupfs; containers go under a [`CgroupTree`] of the test.

use std::fs;
use std::process::Output;

use tempfile::TempDir;

use crate::netns::Netns;
use crate::paths::temp_dir;
use crate::runtimes::cgroup::CgroupTree;
use crate::runtimes::host::RuntimeHost;
use crate::runtimes::image::busybox_rootfs;
use crate::runtimes::networks::Networks;

/// The image every container runs, imported from the busybox rootfs.
pub const IMAGE: &str = "localhost/sptest-busybox:latest";

/// The paths podman 4.3 writes that no option moves (besides what the helper itself made).
pub const PODMAN_COMPILED_IN: [&str; 7] = [
    "/run/runc",
    "/var/lib",
    "/var/lib/cni",
    "/var/lib/cni/results",
    "/var/lib/containers",
    "/var/lib/containers/cache",
    "/var/lib/containers/cache/blob-info-cache-v1.boltdb",
];

/// A podman with its own state, torn down on drop: `podman rm --all --force`, then the host's
/// processes (conmon) and the cgroup tree (the containers) are killed, then the state goes.
#[derive(Debug)]
pub struct Podman {
    // Drop order matters: the host and the cgroup tree go before the state dir.
    pub host: RuntimeHost,
    pub cgroups: CgroupTree,
    dir: TempDir,
}

impl Podman {
    /// Writes the configuration for `networks` and imports the busybox image.
    pub fn new(node: &Netns, networks: &Networks) -> Podman {
        let dir = temp_dir("podman");
        let d = dir.path().display().to_string();
        for sub in ["root", "runroot", "tmp", "imgtmp"] {
            fs::create_dir(dir.path().join(sub)).expect("a dir in a fresh temp dir");
        }
        let containers_conf = format!(
            r#"[containers]
default_ulimits = []
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}"]
network_config_dir = "{conf}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
runtime = "runc"
tmp_dir = "{d}/tmp"
image_copy_tmp_dir = "{d}/imgtmp"
lock_type = "file"
"#,
            plugins = networks.plugins.path().display(),
            conf = networks.conf_dir.path().display(),
        );
        fs::write(dir.path().join("containers.conf"), containers_conf).expect("write");
        let storage_conf = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n"
        );
        fs::write(dir.path().join("storage.conf"), storage_conf).expect("write");

        let podman = Podman {
            host: RuntimeHost::new(node),
            cgroups: CgroupTree::new("podman"),
            dir,
        };
        let rootfs = busybox_rootfs(podman.dir.path());
        podman.ok(&["import", &rootfs.display().to_string(), IMAGE]);
        podman
    }

    /// `podman <our global flags> args`, run inside the host.
    pub fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        let mut cmd = self.host.command("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--storage-driver=overlay")
            .args(args);
        cmd.output().expect("podman runs")
    }

    /// `run`, panicking with podman's stderr unless it succeeds; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `podman run -d` of the busybox image under our cgroup parent with `network_args`
    /// (`--network ...`): output (the container id on success). The container waits for
    /// SIGTERM, so a stop or restart does not sit out podman's 10 s grace period.
    pub fn start_container(&self, name: &str, network_args: &[&str]) -> Output {
        let parent = format!("--cgroup-parent={}", self.cgroups.parent());
        let mut args = vec!["run", "-d", "--name", name, &parent];
        args.extend_from_slice(network_args);
        args.extend_from_slice(&[
            IMAGE,
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; sleep 3600 & wait",
        ]);
        self.run(&args)
    }

    /// The container's init pid (0 when it is not running).
    pub fn pid(&self, name: &str) -> u32 {
        let pid = self.ok(&["inspect", "--format", "{{.State.Pid}}", name]);
        pid.parse()
            .unwrap_or_else(|_| panic!("pid of {name}: {pid:?}"))
    }

    /// The netns path podman gave the plugins as CNI_NETNS (`/run/netns/netns-<uuid>`).
    pub fn netns(&self, name: &str) -> String {
        self.ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.SandboxKey}}",
            name,
        ])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // The graceful way first, so the plugins get their DEL; the fields' drops then kill
        // whatever is left.
        let out = self.run(&["rm", "--all", "--force", "--time", "0"]);
        if !out.status.success() {
            eprintln!(
                "podman rm --all: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}
