//! Network namespaces by path: open, validate, and run code inside one.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sched::{setns, CloneFlags};

use crate::error::Error;

pub struct NetNs {
    file: File,
    path: String,
}

impl NetNs {
    /// Opens the runtime's netns. Missing is "container unknown" (code 3); a path that is
    /// not a netns is a bad CNI_NETNS (code 4).
    pub fn open(path: &str) -> Result<NetNs, Error> {
        match find(path).map_err(|e| Error::io(format!("open netns {path}"), e))? {
            Found::Live(ns) => Ok(ns),
            Found::Missing => Err(Error::UnknownContainer {
                path: path.to_string(),
            }),
            Found::NotANetns => Err(Error::InvalidEnv {
                name: "CNI_NETNS",
                reason: format!(
                    "{path} is not a network namespace: pass the pod's /run/netns/<name> or \
                     /proc/<pid>/ns/net"
                ),
            }),
        }
    }

    /// DEL's view: nothing is left to clean up in a netns that is gone, or whose path no
    /// longer is a network namespace (the empty file a runtime leaves when its bind mount is
    /// gone), so neither is an error.
    pub fn open_if_live(path: &str) -> Result<Option<NetNs>, Error> {
        Ok(
            match find(path).map_err(|e| Error::io(format!("open netns {path}"), e))? {
                Found::Live(ns) => Some(ns),
                Found::Missing | Found::NotANetns => None,
            },
        )
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Holds an exclusive lock scoped to this namespace until the guard is dropped. Every
    /// path to one namespace (`/run/netns/<name>`, `/proc/<pid>/ns/net`) opens the same nsfs
    /// inode, so `flock` on it serialises every process working on the pod, whichever path it
    /// was given, with no file on disk to clean up; the kernel drops it if the process dies.
    pub fn lock(&self) -> Result<NetNsLock<'_>, Error> {
        self.file
            .lock()
            .map_err(|e| Error::io(format!("lock netns {}", self.path), e))?;
        Ok(NetNsLock { ns: self })
    }

    /// Runs `f` inside this netns and returns to the original one, whatever `f` returns.
    pub fn run<T>(&self, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let _back = self.enter()?;
        f()
    }

    fn enter(&self) -> Result<Restore, Error> {
        let original = File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::io("open current netns", e))?;
        setns(&self.file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::io(format!("enter netns {}", self.path), e.into()))?;
        Ok(Restore { original })
    }
}

/// What a netns path leads to.
enum Found {
    Live(NetNs),
    Missing,
    NotANetns,
}

/// The lock of [`NetNs::lock`], given up on drop.
pub struct NetNsLock<'a> {
    ns: &'a NetNs,
}

impl Drop for NetNsLock<'_> {
    fn drop(&mut self) {
        // Closing the file would give it up too; unlocking keeps the netns usable meanwhile.
        let _ = self.ns.file.unlock();
    }
}

/// Whether `path` is a network namespace now, as GC judges an attachment alive: `Ok(false)`
/// when nothing is there or what is there is no network namespace (the empty file a runtime
/// leaves when its bind mount is gone, a directory, a namespace of another type), `Err` when
/// it cannot be told (the path cannot be opened for another reason).
pub fn is_live(path: &str) -> io::Result<bool> {
    Ok(matches!(find(path)?, Found::Live(_)))
}

/// What `path` leads to; `Err` when it cannot be told (it cannot be opened for another reason
/// than not being there).
fn find(path: &str) -> io::Result<Found> {
    if path.is_empty() {
        return Ok(Found::Missing);
    }
    match open_ns_file(path) {
        Ok(file) if is_net_ns(&file) => Ok(Found::Live(NetNs {
            file,
            path: path.to_string(),
        })),
        Ok(_) => Ok(Found::NotANetns),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Found::Missing)
        }
        Err(e) => Err(e),
    }
}

/// Opens a namespace path without side effects: never blocking on a FIFO, never taking a
/// terminal (close-on-exec, as every std file).
fn open_ns_file(path: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// A bind-mounted nsfs file (ip netns, runtimes) or a /proc/<pid>/ns/net link, both of which
/// open the namespace itself. The file system and then the namespace's type are asked of the
/// kernel: a file-system check alone lets through other procfs files, and namespaces of
/// another type (/proc/<pid>/ns/uts) would only fail later as a netlink EINVAL; what an
/// unmounted bind mount leaves is an empty file of the underlying file system.
fn is_net_ns(file: &File) -> bool {
    let on_nsfs = nix::sys::statfs::fstatfs(file)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which `file` owns.
    on_nsfs && unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) } == libc::CLONE_NEWNET
}

/// Returns the thread to its original netns when dropped.
struct Restore {
    original: File,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // Going on in the wrong namespace could touch the host's network: stop instead.
        if let Err(e) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            panic!("cannot return to the original netns: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_unknown_container_and_a_plain_file_is_refused() {
        assert_eq!(NetNs::open("/nonexistent/netns").err().unwrap().code(), 3);
        assert!(NetNs::open_if_live("/nonexistent/netns").unwrap().is_none());
        assert!(NetNs::open_if_live("").unwrap().is_none());
        assert!(NetNs::open_if_live("/etc/hostname").unwrap().is_none());
        for path in [
            "/etc/hostname",
            "/proc/self/status",
            "/proc/self/ns/uts",
            "/",
        ] {
            let err = NetNs::open(path).err().unwrap();
            assert_eq!(err.code(), 4, "{path}");
            assert!(err.to_string().contains(path), "{err}");
            assert!(err.to_string().contains("not a network namespace"), "{err}");
        }
    }

    #[test]
    fn only_a_network_namespace_is_live() {
        let dir = std::env::temp_dir().join(format!("cni-netns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // What a runtime's netns path turns into when its bind mount is gone.
        let stale = dir.join("stale");
        std::fs::write(&stale, "").unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let text = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        assert!(is_live("/proc/self/ns/net").unwrap());
        for gone in [
            text(&stale),
            text(&fifo),
            text(&dir),
            text(&dir.join("missing")),
            text(&stale.join("under-a-file")),
            "/proc/self/ns/uts".into(),
            "/proc/self/status".into(),
        ] {
            assert!(!is_live(&gone).unwrap(), "{gone}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn our_own_netns_opens() {
        let ns = NetNs::open("/proc/self/ns/net").unwrap();
        assert_eq!(ns.path(), "/proc/self/ns/net");
    }

    #[test]
    fn the_lock_covers_the_namespace_whatever_path_opened_it() {
        let a = NetNs::open("/proc/self/ns/net").unwrap();
        let b = NetNs::open("/proc/thread-self/ns/net").unwrap();
        let held = a.lock().unwrap();
        assert!(
            b.file.try_lock().is_err(),
            "a second open of the same netns must not get the lock"
        );
        drop(held);
        b.file.try_lock().expect("free once the guard is dropped");
    }
}
