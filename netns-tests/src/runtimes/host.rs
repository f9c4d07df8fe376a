//! A node for container runtimes: a node network namespace plus a private mount namespace,
//! both held by one helper process; runtimes and their clients enter both with
//! `nsenter --target <helper> --mount --net`.
//!
//! Why not `ip netns exec`: it remounts `/sys` for the namespace, which drops the cgroup
//! mounts that runc needs, and every call gets a mount namespace of its own, so a runtime's
//! netns bind mounts made in one call are invisible to the next.
//!
//! The runtimes are told where their state goes (see `podman.rs`, `containerd.rs`), but some
//! of their paths are compiled in: libcni's cache `/var/lib/cni` (podman's CNI backend and
//! containerd's go-cni both use it), podman's blob info cache `/var/lib/containers/cache`,
//! containerd's shim sockets `/run/containerd/s`, and the netns files in `/run/netns`. So the
//! helper shields the host before anything runs: a tmpfs of its own on `/run` and `/dev/shm`,
//! `/var` as an overlay whose upper layer is a temp dir, `/etc` and `/opt` read-only. Whatever
//! a runtime writes to those lands in this namespace or the temp dir and goes with them, and
//! [`RuntimeHost::written`] lists it, so a test can assert that only the compiled-in paths
//! were used. All mounts are made with `mount -n` (no `/run/mount/utab`, which would be
//! written on the host's `/run` before the tmpfs covers it).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use crate::cmd::run;
use crate::netns::Netns;
use crate::paths::temp_dir;

/// The PATH every runtime command gets (the environment is cleared: nothing of the test's
/// own environment, such as its HOME or XDG dirs, leaks into a runtime's defaults).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the helper makes itself inside its tmpfs `/run`: not written by a runtime.
const OWN_ENTRIES: [&str; 2] = ["/run/netns", "/run/lock"];

/// Bound on waiting for killed processes to be gone.
const KILL_POLLS: u32 = 500;
const KILL_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The helper's namespaces, torn down on drop: every process still inside the mount namespace
/// is killed by pid (only processes this test started can be in it), then the helper, and the
/// namespace goes with its last process, taking its mounts (runtime netns files included).
#[derive(Debug)]
pub struct RuntimeHost {
    helper: Child,
    /// `mnt:[inode]` of the helper's mount namespace: how its members are recognised.
    mount_ns: String,
    /// The overlay's upper and work dirs, and the runtimes' HOME and TMPDIR.
    dir: TempDir,
}

impl RuntimeHost {
    /// A private mount namespace inside `node`'s network namespace, shielded as described
    /// above. Panics if any step fails (nothing is left behind: the helper dies on drop).
    pub fn new(node: &Netns) -> RuntimeHost {
        let dir = temp_dir("runtime-host");
        for sub in ["var-upper", "var-work", "home", "tmp"] {
            fs::create_dir(dir.path().join(sub)).expect("a dir in a fresh temp dir");
        }
        let script = format!(
            "set -e
             mount -n -t tmpfs -o mode=0755 sptest-run /run
             mkdir /run/netns /run/lock
             mount -n -t tmpfs -o mode=1777 sptest-shm /dev/shm
             mount -n -t overlay -o lowerdir=/var,upperdir={upper},workdir={work} sptest-var /var
             for ro in /etc /opt; do mount -n --bind $ro $ro; mount -n -o remount,bind,ro $ro; done
             echo ready
             exec cat",
            upper = dir.path().join("var-upper").display(),
            work = dir.path().join("var-work").display(),
        );
        // `unshare` runs inside the node's network namespace (setns before exec); `ready` is
        // printed only after its mounts, so nothing runs before the shields are up. The
        // helper's stdin is a pipe from us: it ends with this process, even on SIGKILL.
        let mut helper = node
            .command(&[
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start unshare (util-linux): {e}"));
        let mut line = String::new();
        let stdout = helper.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            // `set -e`: the helper has exited; its stderr says which step failed.
            let _ = helper.kill();
            let mut err = String::new();
            if let Some(mut stderr) = helper.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            let _ = helper.wait();
            panic!("runtime host: shielding the mount namespace failed: {err}");
        }
        let mount_ns = fs::read_link(format!("/proc/{}/ns/mnt", helper.id()))
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let host = RuntimeHost {
            helper,
            mount_ns,
            dir,
        };
        let ours = fs::read_link("/proc/self/ns/mnt").expect("our mount namespace");
        assert_ne!(
            ours.to_string_lossy(),
            host.mount_ns,
            "the helper did not get a mount namespace of its own"
        );
        host
    }

    /// `program` as a command inside both namespaces, with a cleared environment (PATH, a
    /// HOME and a TMPDIR of this host's own); the caller adds arguments and variables. The
    /// working directory is the namespace's `/`: pass absolute paths.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.helper.id()))
            .args(["--mount", "--net", "--", program])
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", self.dir.path().join("home"))
            .env("TMPDIR", self.dir.path().join("tmp"));
        cmd
    }

    /// Runs `program args` inside; stdout on success, else the command line and its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        run(self.command(program).args(args))
    }

    /// Whether `path` exists as this mount namespace sees it (a runtime's netns file is a
    /// bind mount only visible here).
    pub fn exists(&self, path: &str) -> bool {
        self.command("test")
            .args(["-e", path])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The mount namespace's mounts of network namespace `inode` (`net:[inode]`), as
    /// `/proc/<helper>/mountinfo` lists them.
    pub fn netns_mounts(&self, inode: u64) -> Vec<String> {
        let info =
            fs::read_to_string(format!("/proc/{}/mountinfo", self.helper.id())).unwrap_or_default();
        let needle = format!("net:[{inode}]");
        info.lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// Pids of the processes inside the mount namespace, the helper excepted: the runtimes,
    /// their shims and monitors. (Containers get mount namespaces of their own: see
    /// [`crate::runtimes::cgroup::CgroupTree`] for those.)
    pub fn processes(&self) -> Vec<u32> {
        let helper = self.helper.id();
        pids()
            .into_iter()
            .filter(|&pid| pid != helper)
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/ns/mnt"))
                    .is_ok_and(|l| l.to_string_lossy() == self.mount_ns)
            })
            .collect()
    }

    /// Everything written to the shields so far, as absolute paths the runtimes used: what is
    /// in `/var`'s upper layer, and in the private `/run` and `/dev/shm` (the helper's own
    /// `/run/netns` and `/run/lock` only when they hold something).
    pub fn written(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.dir.path().join("var-upper"), "/var", &mut out);
        let root = PathBuf::from(format!("/proc/{}/root", self.helper.id()));
        walk(&root.join("run"), "/run", &mut out);
        walk(&root.join("dev/shm"), "/dev/shm", &mut out);
        out.retain(|p| !OWN_ENTRIES.contains(&p.as_str()));
        out.sort();
        out
    }
}

impl Drop for RuntimeHost {
    fn drop(&mut self) {
        kill_until_gone(|| self.processes());
        let _ = self.helper.kill();
        let _ = self.helper.wait();
    }
}

/// SIGKILLs what `members` lists until it lists nothing (bounded). For `Drop`: reports,
/// never panics.
pub(crate) fn kill_until_gone(members: impl Fn() -> Vec<u32>) {
    for _ in 0..KILL_POLLS {
        let pids = members();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) on a pid we just found among our own processes; it may have
            // exited meanwhile (ESRCH), which is fine.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        thread::sleep(KILL_POLL_INTERVAL);
    }
    eprintln!("runtime host: processes {:?} survived SIGKILL", members());
}

/// Every pid in /proc.
pub(crate) fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Appends `prefix/<relative path>` of every entry under `dir` (depth first, parents first).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        out.push(name.clone());
        if is_dir {
            walk(&entry.path(), &name, out);
        }
    }
}
