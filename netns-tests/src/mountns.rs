//! A private mount namespace for fault injection: a read-only bind mount or a small tmpfs that
//! only the plugins started inside it see. Nothing is ever mounted in the test's own mount
//! namespace (the host's): as root, `chmod` cannot make a directory unwritable, and remounting
//! anything the host uses is off limits.
//!
//! A helper process (`unshare --mount ... cat`) holds the namespace for as long as the guard
//! lives; plugins enter it through a wrapper script on their CNI_PATH, and the test reads and
//! writes its files through `/proc/<helper>/root`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::cmd::run;
use crate::plugins::{wrapper, Source};

/// A mount namespace of its own, removed (its helper killed) on drop.
#[derive(Debug)]
pub struct MountNs {
    helper: Child,
}

impl MountNs {
    /// A new mount namespace that receives the host's later mounts (so the `/run/netns/*` of
    /// pods made afterwards are visible inside) but never sends its own back (`slave`).
    pub fn unshare() -> MountNs {
        let mut helper = Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "sh", "-c"])
            // `ready` is printed only after unshare(2): until then the helper's namespace is
            // the host's, and a mount made through it would land there.
            .arg("echo ready; exec cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start unshare (util-linux): {e}"));
        let mut line = String::new();
        let stdout = helper.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("cannot read from the mount namespace helper");
        let ns = MountNs { helper };
        assert_eq!(line.trim(), "ready", "mount namespace helper failed");
        let ours = fs::read_link("/proc/self/ns/mnt").expect("our mount namespace");
        let theirs = fs::read_link(ns.ns_file()).expect("the helper's mount namespace");
        assert_ne!(
            ours, theirs,
            "the helper did not get a mount namespace of its own"
        );
        ns
    }

    fn ns_file(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.helper.id()))
    }

    /// Runs `script` with `sh -c` inside the namespace (e.g. a `mount`); panics on failure.
    pub fn sh(&self, script: &str) {
        let ns = format!("--mount={}", self.ns_file().display());
        run(Command::new("nsenter").args([&ns, "sh", "-c", script]))
            .unwrap_or_else(|e| panic!("in the private mount namespace: {e}"));
    }

    /// Where the test finds `path` as the namespace sees it.
    pub fn view(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").expect("an absolute path");
        PathBuf::from(format!("/proc/{}/root", self.helper.id())).join(relative)
    }

    /// An executable in `dir` that runs `binary` inside the namespace, to stand in for it on a
    /// CNI_PATH: the plugins it delegates to (IPAM) inherit the namespace.
    pub fn wrapper(&self, dir: &Path, binary: &Path) -> Source {
        let prefix = format!("exec nsenter --mount={} --", self.ns_file().display());
        wrapper(dir, "in-mountns", &prefix, binary)
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        // The helper is our own child: kill it by its pid, and reap it. Its namespace (and any
        // tmpfs in it) goes with its last process.
        let _ = self.helper.kill();
        let _ = self.helper.wait();
    }
}
