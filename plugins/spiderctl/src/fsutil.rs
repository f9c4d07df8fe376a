//! Writing the files a node's plugins read: whole or not at all, and not at all when nothing
//! changed.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What [`write_if_changed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        })
    }
}

/// Writes `content` to `path` through a temp file in the same directory, fsync and rename, so
/// a plugin reading the file concurrently (kubelet may start a pod at any moment) sees the old
/// or the new content, never a part. A file that already holds `content` is left untouched,
/// mtime included: applying the same manifests twice changes nothing. Files are 0644, like the
/// rest of `/etc/cni/net.d`.
pub fn write_if_changed(path: &Path, content: &str) -> io::Result<Change> {
    write_bytes_if_changed(path, content.as_bytes(), 0o644)
}

/// [`write_if_changed`] for any bytes and file mode (plugin binaries are 0755). The rename
/// replaces the directory entry only: a runtime exec'ing the old binary keeps running the old
/// inode, and one exec'ing the path afterwards gets the whole new file.
pub fn write_bytes_if_changed(path: &Path, content: &[u8], mode: u32) -> io::Result<Change> {
    let change = match fs::read(path) {
        Ok(old) if old == content => return Ok(Change::Unchanged),
        Ok(_) => Change::Updated,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Change::Created,
        Err(e) => return Err(e),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    // Hidden and without the .conflist/.yaml suffix: neither libcni nor the pool loader ever
    // reads a temp file left by a crash.
    let temp = dir.join(format!(
        ".{}.spiderctl-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(content)?;
        file.sync_all()?;
        // Closed before the rename: a file still open for writing cannot be exec'd (ETXTBSY),
        // and a runtime may exec the path the moment it is renamed.
        drop(file);
        fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    // The rename is durable once the directory is.
    File::open(dir)?.sync_all()?;
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_updates_and_leaves_identical_content_alone() {
        let dir = std::env::temp_dir().join(format!("spiderctl-fsutil-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.conflist");
        let _ = fs::remove_file(&path);
        assert_eq!(write_if_changed(&path, "one").unwrap(), Change::Created);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(write_if_changed(&path, "one").unwrap(), Change::Unchanged);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        assert_eq!(write_if_changed(&path, "two").unwrap(), Change::Updated);
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
