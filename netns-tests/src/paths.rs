//! Where things live on disk: the workspace and scratch directories.

use std::path::PathBuf;

use tempfile::TempDir;

/// The Cargo workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("netns-tests lives inside the workspace")
        .to_path_buf()
}

/// A fresh scratch directory, removed when the guard drops. The label shows
/// up in the name to make a leftover directory easy to trace to its test.
pub fn temp_dir(label: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sptest-{label}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create temp dir for {label}: {e}"))
}
