//! Install: the plugins beside the agent's executable (the image's) become the node's, in
//! `--cni-bin-dir`. Each file is replaced by rename only when its bytes differ, so a runtime
//! exec'ing a plugin mid-upgrade runs the old or the new build, never part of one.

use std::path::{Path, PathBuf};

use crate::fsutil::{write_bytes_if_changed, Change};

/// What the node's conflists name (`spiderpool` execs `spiderpool-etcd` for the etcd store).
pub const PLUGINS: [&str; 4] = ["macvlan", "spiderpool", "spiderpool-etcd", "coordinator"];

/// `--plugins-from`, else the directory of the running executable.
pub fn source_dir(plugins_from: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(dir) = plugins_from {
        return Ok(dir.to_path_buf());
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the agent's own executable: {e}; pass --plugins-from"))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} has no directory; pass --plugins-from", exe.display()))
}

/// Copies every plugin of `from` into `to` (created if needed, 0755 files); returns what
/// happened to each. All are read before any is written: a missing one installs nothing, as a
/// node with half a set of new plugins would run a mix no test has seen.
pub fn install(from: &Path, to: &Path) -> Result<Vec<(&'static str, Change)>, String> {
    let mut binaries = Vec::with_capacity(PLUGINS.len());
    for name in PLUGINS {
        let path = from.join(name);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read plugin {}: {e} (--plugins-from names the directory holding {})",
                path.display(),
                PLUGINS.join(", ")
            )
        })?;
        binaries.push((name, bytes));
    }
    std::fs::create_dir_all(to)
        .map_err(|e| format!("cannot create --cni-bin-dir {}: {e}", to.display()))?;
    binaries
        .into_iter()
        .map(|(name, bytes)| {
            let path = to.join(name);
            write_bytes_if_changed(&path, &bytes, 0o755)
                .map(|change| (name, change))
                .map_err(|e| format!("cannot install {}: {e}", path.display()))
        })
        .collect()
}
