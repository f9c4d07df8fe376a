//! A cgroup subtree for the containers one test starts: the runtimes are given
//! `/sptest-<pid>-<n>-<role>` as cgroup parent, so their containers and monitors can be found
//! (and killed, by pid) when a test fails halfway, and the tree is removed afterwards. A
//! container has its own mount, pid and network namespaces, so this is how to find it.
//!
//! Trees left by a dead test process (`sptest-<pid>-...` with that pid gone) are swept the
//! first time a tree is made, as the netns guards sweep their namespaces.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::netns::{owner_pid, PREFIX};
use crate::runtimes::host::kill_until_gone;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEPT: OnceLock<()> = OnceLock::new();

/// `/sptest-<pid>-<n>-<role>` in every cgroup hierarchy, removed on drop with everything in it.
#[derive(Debug)]
pub struct CgroupTree {
    name: String,
}

impl CgroupTree {
    pub fn new(role: &str) -> CgroupTree {
        SWEPT.get_or_init(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        CgroupTree {
            name: format!("{PREFIX}-{}-{n}-{role}", std::process::id()),
        }
    }

    /// The cgroup parent to give a runtime: `/sptest-...`.
    pub fn parent(&self) -> String {
        format!("/{}", self.name)
    }

    /// Pids in the tree, over all hierarchies.
    pub fn processes(&self) -> Vec<u32> {
        processes_under(&self.name)
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

/// The mounted hierarchies: `/sys/fs/cgroup` itself on a unified (v2) host, else each of its
/// subdirectories that is a hierarchy (cpu, memory, ..., unified on a hybrid host like this
/// one).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.procs").exists() {
        return vec![root.to_path_buf()];
    }
    let mut found: Vec<PathBuf> = fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("cgroup.procs").exists() && !p.is_symlink());
    found
}

fn processes_under(name: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for hierarchy in hierarchies() {
        for dir in dirs_depth_first(&hierarchy.join(name)) {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `dir` and its subdirectories, children before parents (the order rmdir needs).
fn dirs_depth_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(dirs_depth_first(&entry.path()));
            }
        }
    } else {
        return out;
    }
    out.push(dir.to_path_buf());
    out
}

/// Kills what runs in the tree, then removes its directories. For `Drop`: reports, never
/// panics.
fn remove(name: &str) {
    kill_until_gone(|| processes_under(name));
    for hierarchy in hierarchies() {
        for dir in dirs_depth_first(&hierarchy.join(name)) {
            if let Err(e) = fs::remove_dir(&dir) {
                eprintln!("cgroup tree: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

fn sweep_stale() {
    let mut names: Vec<String> = hierarchies()
        .iter()
        .flat_map(|h| fs::read_dir(h).into_iter().flatten().flatten())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            owner_pid(name).is_some_and(|pid| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        remove(&name);
    }
}
