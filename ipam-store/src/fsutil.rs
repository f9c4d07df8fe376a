//! The store's file operations. None follows a symlink (files are opened with `O_NOFOLLOW`,
//! directories are checked with `lstat`), so together with the name rules nothing can lead
//! outside the data dir. Directories are created 0700 and files 0600.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::error::StoreError;

const SYMLINK_REASON: &str = "it is a symlink, which the store never follows: remove it";

/// Opens with `O_NOFOLLOW`, reporting a symlink as such rather than as "too many levels".
pub(crate) fn open(path: &Path, options: &mut OpenOptions) -> Result<File, StoreError> {
    options
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                StoreError::Corrupt {
                    path: path.into(),
                    reason: SYMLINK_REASON.into(),
                }
            } else {
                StoreError::io("open", path)(e)
            }
        })
}

/// Creates `path` (0700) unless it exists, and checks it is a real directory.
pub(crate) fn ensure_dir(path: &Path) -> Result<(), StoreError> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => is_dir(path).map(drop),
        Err(e) => Err(StoreError::io("create directory", path)(e)),
    }
}

/// Whether `path` is a directory; `false` if nothing has that name, an error if something
/// else (a symlink, a file) does.
pub(crate) fn is_dir(path: &Path) -> Result<bool, StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io("inspect", path)(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(StoreError::Corrupt {
            path: path.into(),
            reason: SYMLINK_REASON.into(),
        });
    }
    if !meta.is_dir() {
        return Err(StoreError::Corrupt {
            path: path.into(),
            reason: "it should be a directory: move it aside".into(),
        });
    }
    Ok(true)
}

/// Whether anything (even a dangling symlink) has this name.
pub(crate) fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("inspect", path)(e)),
    }
}

/// Creates a new file holding `bytes`, flushed to disk before returning.
pub(crate) fn create_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    create_new(path, bytes, true)
}

/// Creates a new file holding `bytes`, flushed first if `flush`. On failure (ENOSPC) the
/// partial file is removed, so the failure itself does not keep the space.
fn create_new(path: &Path, bytes: &[u8], flush: bool) -> Result<(), StoreError> {
    let mut file = open(path, OpenOptions::new().write(true).create_new(true))?;
    file.write_all(bytes)
        .and_then(|()| if flush { file.sync_all() } else { Ok(()) })
        .map_err(|e| {
            // Best effort: the error being reported is the write's.
            let _ = fs::remove_file(path);
            StoreError::io("write", path)(e)
        })
}

/// Creates `target` holding `bytes` unless something already has that name (then `false`).
/// The bytes are written and flushed under `tmp` and hard-linked into place: `target` never
/// exists half-written, and a link, unlike a rename, never replaces what is there. The caller
/// holds a lock that makes `tmp` its own; `tmp` is in the same file system as `target`.
/// The new name is visible at once but durable only after [`sync_dir`] of `target`'s
/// directory, which the caller does after giving up its lock.
pub(crate) fn create_exclusive(
    tmp: &Path,
    target: &Path,
    bytes: &[u8],
) -> Result<bool, StoreError> {
    // A writer killed after linking leaves `tmp` as a second name of a live file: unlinking
    // only drops that name, and the file is never written through it again.
    remove(tmp)?;
    create_synced(tmp, bytes)?;
    let linked = match fs::hard_link(tmp, target) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
        Err(e) => return Err(StoreError::io("link into place", target)(e)),
    };
    remove(tmp)?;
    Ok(linked)
}

/// Reads a small store file; `None` if it does not exist. A file above `limit` bytes is
/// not one the store wrote.
pub(crate) fn read_small(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let file = match open(path, OpenOptions::new().read(true)) {
        Err(StoreError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Ok(None)
        }
        other => other?,
    };
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(StoreError::io("read", path))?;
    if bytes.len() as u64 > limit {
        return Err(StoreError::Corrupt {
            path: path.into(),
            reason: format!(
                "it is larger than {limit} bytes, which the store never writes: move it aside"
            ),
        });
    }
    Ok(Some(bytes))
}

/// Replaces `dir/name` with `bytes` (write `dir/tmp_name`, rename over): every reader sees
/// the old or the new content, whatever process dies when. Nothing is flushed, so after a
/// power cut the file may hold the old content, or be empty or zero-filled: only for files
/// the store can do without (see [`is_torn`]). The caller holds a lock that makes `tmp_name`
/// its own.
pub(crate) fn replace_unflushed(
    dir: &Path,
    tmp_name: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let tmp = dir.join(tmp_name);
    let target = dir.join(name);
    // A previous writer may have died after creating it.
    remove(&tmp)?;
    create_new(&tmp, bytes, false)?;
    fs::rename(&tmp, &target).map_err(StoreError::io("rename into place", &target))
}

/// As [`replace_unflushed`], but durable when it returns: the new content is flushed before
/// the rename, and the rename after it. For state that must survive a power cut.
pub(crate) fn replace_synced(
    dir: &Path,
    tmp_name: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let tmp = dir.join(tmp_name);
    let target = dir.join(name);
    remove(&tmp)?;
    create_synced(&tmp, bytes)?;
    fs::rename(&tmp, &target).map_err(StoreError::io("rename into place", &target))?;
    sync_dir(dir)
}

/// Whether `bytes` are what a power cut leaves of a file written without a flush: nothing, or
/// zeros where the data never reached the disk.
pub(crate) fn is_torn(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Removes a file; `false` if it was already gone.
pub(crate) fn remove(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("remove", path)(e)),
    }
}

/// Makes the directory's entries (links, unlinks, renames) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync directory", dir))
}

/// Takes an exclusive lock on `path` (created if missing), held until the file is dropped.
/// It is `flock`-style, per open file, so it also excludes other threads of this process
/// that open the file themselves.
pub(crate) fn lock(path: &Path) -> Result<File, StoreError> {
    let file = open(path, OpenOptions::new().read(true).write(true).create(true))?;
    file.lock().map_err(StoreError::io("lock", path))?;
    Ok(file)
}

/// The names in a directory, sorted; an absent directory has none.
pub(crate) fn list(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", dir)(e)),
    };
    let mut names = entries
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(StoreError::io("list", dir))?;
    names.sort();
    Ok(names)
}
