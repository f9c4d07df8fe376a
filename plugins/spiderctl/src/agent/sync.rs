//! Sync: `--config-dir` (a mounted ConfigMap) applied with `spiderctl apply` semantics at start
//! and whenever its content changes. kubelet updates a ConfigMap volume by swapping its `..data`
//! symlink, which no single file's watch sees, so the watch is a bounded poll of the whole
//! directory's manifests: their names and bytes, compared with what was last applied.

use std::path::{Path, PathBuf};

use crate::manifests;

/// The manifests of the directory: (path, bytes), in apply's order.
type Snapshot = Vec<(PathBuf, Vec<u8>)>;

pub struct ConfigWatch {
    dir: PathBuf,
    /// What the last apply attempt (good or bad) saw: a bad edit is reported once, not at
    /// every poll, and the next edit is tried at once.
    attempted: Option<Snapshot>,
    /// The error of the last look, if it failed: the same error again is not news.
    failed: Option<String>,
}

impl ConfigWatch {
    pub fn new(dir: &Path) -> ConfigWatch {
        ConfigWatch {
            dir: dir.to_path_buf(),
            attempted: None,
            failed: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory differs from what was last attempted; when it does, it counts as
    /// attempted from now on. An unreadable directory is an error, reported once while it
    /// stays the same (and the directory counts as changed once it reads again).
    pub fn changed(&mut self) -> Result<bool, String> {
        let snapshot = match snapshot(&self.dir) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                self.attempted = None;
                if self.failed.as_ref() == Some(&e) {
                    return Ok(false);
                }
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        self.failed = None;
        if self.attempted.as_ref() == Some(&snapshot) {
            return Ok(false);
        }
        self.attempted = Some(snapshot);
        Ok(true)
    }
}

fn snapshot(dir: &Path) -> Result<Snapshot, String> {
    let files = manifests::expand(&[dir.to_path_buf()]).map_err(|e| e.to_string())?;
    files
        .into_iter()
        .map(|path| {
            std::fs::read(&path)
                .map(|bytes| (path.clone(), bytes))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        })
        .collect()
}
