//! Container images made offline from Debian's busybox-static: no registry is ever asked.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::run;
use crate::paths::workspace_root;

/// Debian's busybox-static: one static binary, every applet a name for it.
pub const BUSYBOX: &str = "/bin/busybox";
/// Debian's own python3, the one python3-grpcio and python3-protobuf are installed for (the
/// `python3` first on a developer's PATH may be another).
pub const PYTHON: &str = "/usr/bin/python3";

/// A root file system tar in `dir`: `/bin/busybox`, a symlink per applet beside it (so
/// `/bin/sh`, `/bin/sleep`... exist), and the empty directories a runtime mounts onto.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    fs::create_dir_all(&bin).expect("a dir in a temp dir");
    for empty in ["proc", "sys", "dev", "etc", "tmp", "run"] {
        fs::create_dir(root.join(empty)).expect("a dir in a temp dir");
    }
    fs::copy(BUSYBOX, bin.join("busybox"))
        .unwrap_or_else(|e| panic!("{BUSYBOX}: {e}: install Debian's busybox-static"));
    let applets = run(Command::new(BUSYBOX).arg("--list")).expect("busybox --list");
    for applet in applets.lines().filter(|a| *a != "busybox") {
        symlink("busybox", bin.join(applet)).expect("a symlink in a temp dir");
    }
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."))
    .unwrap_or_else(|e| panic!("{e}"));
    tar
}

/// `rootfs_tar` as an OCI image archive named `name` whose command is `cmd`, for
/// `ctr images import` (made by `netns-tests/cri/oci_archive.py`).
pub fn oci_archive(rootfs_tar: &Path, name: &str, cmd: &[&str]) -> PathBuf {
    let out = rootfs_tar.with_file_name("image-oci.tar");
    let script = workspace_root().join("netns-tests/cri/oci_archive.py");
    run(Command::new(PYTHON)
        .arg(script)
        .arg(rootfs_tar)
        .arg(name)
        .arg(&out)
        .args(cmd))
    .unwrap_or_else(|e| panic!("{e}"));
    out
}
