//! A CNI_PATH assembled per test: symlinks to our binaries, the reference
//! plugins, or test doubles, under the names the conflist uses. Needed because
//! ours and the reference share names (`macvlan`), and mixing them
//! (reference macvlan + our IPAM, ...) is part of the contract.

use std::env;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::paths::{temp_dir, workspace_root};

/// Debian's `containernetworking-plugins`.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Where a plugin binary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Our release build: `$SPIDER_BIN_DIR`, else
    /// `<workspace>/target/x86_64-unknown-linux-gnu/release` (release builds
    /// use an explicit target triple, see `.cargo/config.toml`).
    Ours,
    /// The reference plugin of the same name in [`REFERENCE_DIR`].
    Reference,
    /// Any executable, e.g. a test double written by the test.
    File(PathBuf),
}

impl Source {
    fn binary(&self, name: &str) -> PathBuf {
        match self {
            Source::Ours => our_binary(name),
            Source::Reference => Path::new(REFERENCE_DIR).join(name),
            Source::File(path) => path.clone(),
        }
    }

    fn missing_hint(&self) -> &'static str {
        match self {
            Source::Ours => "run cargo build --release first (or set SPIDER_BIN_DIR)",
            Source::Reference => "install Debian's containernetworking-plugins",
            Source::File(_) => "the test should have written it",
        }
    }
}

/// One of our built binaries (a plugin, `spiderctl`).
pub fn our_binary(name: &str) -> PathBuf {
    ours_dir().join(name)
}

/// An executable script in `dir` that runs `binary` behind the shell command prefix `prefix`
/// (`exec timeout 10`, `umask 000; exec`, `exec nsenter --mount=... --`), passing on stdin,
/// environment and arguments: a plugin run under a changed process context, for a CNI_PATH.
pub fn wrapper(dir: &Path, label: &str, prefix: &str, binary: &Path) -> Source {
    let name = binary.file_name().expect("a binary has a name");
    let path = dir.join(format!("{label}-{}", name.to_string_lossy()));
    let script = format!("#!/bin/sh\n{prefix} '{}' \"$@\"\n", binary.display());
    fs::write(&path, script).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
    Source::File(path)
}

/// Directory of our built plugins.
fn ours_dir() -> PathBuf {
    env::var_os("SPIDER_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/x86_64-unknown-linux-gnu/release"))
}

/// A temporary directory to use as CNI_PATH; removed on drop.
#[derive(Debug)]
pub struct PluginDir {
    dir: TempDir,
}

impl PluginDir {
    /// One symlink per `(name, source)`: plugin `name` resolves to
    /// `source`'s binary. Panics, saying how to fix it, if one is missing.
    pub fn new(plugins: &[(&str, Source)]) -> PluginDir {
        let dir = temp_dir("cni-path");
        for (name, source) in plugins {
            let target = source.binary(name);
            assert!(
                target.is_file(),
                "plugin {name}: {} not found: {}",
                target.display(),
                source.missing_hint()
            );
            symlink(&target, dir.path().join(name))
                .unwrap_or_else(|e| panic!("cannot link plugin {name}: {e}"));
        }
        PluginDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
