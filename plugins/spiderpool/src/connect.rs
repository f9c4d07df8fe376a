//! How a binary reaches the etcd store. The etcd client (gRPC, TLS, an async runtime) more
//! than doubles the binary and the memory every run maps, even on the file store path where
//! none of it runs (measured: 4.5 vs 1.9 MB, peak RSS 2664 vs 1652 KiB). So `spiderpool` is
//! built without it and hands an etcd config over to `spiderpool-etcd`, the same plugin with
//! the client, installed beside it: an exec, so the runtime still sees one plugin, with the
//! same environment and stdin, answer once.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use cni::{Error, Invocation};
use ipam_store::{EtcdConfig, PoolStore};

/// The binary that has the etcd client.
pub const ETCD_BUILD: &str = "spiderpool-etcd";

/// `spiderpool-etcd`: connects (in block mode, with the node's local store in `data_dir`).
/// Only with the `etcd` feature, so `spiderpool`'s build compiles none of the client.
#[cfg(feature = "etcd")]
pub fn etcd_client(
    _: &Invocation,
    etcd: &EtcdConfig,
    data_dir: &Path,
) -> Result<Box<dyn PoolStore>, Error> {
    let node = ipam_store::store::this_node();
    let store: Box<dyn PoolStore> = match etcd.block_size {
        0 => Box::new(ipam_store::EtcdStore::open(etcd, node).map_err(crate::errors::store_error)?),
        _ => Box::new(
            ipam_store::BlockStore::open(etcd, data_dir, node)
                .map_err(crate::errors::store_error)?,
        ),
    };
    Ok(store)
}

/// `spiderpool`: replaces this process with [`ETCD_BUILD`] from its own directory, fed the
/// same stdin. Returns only if that failed.
pub fn hand_over(inv: &Invocation, _: &EtcdConfig, _: &Path) -> Result<Box<dyn PoolStore>, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find this executable", e))?;
    let target = exe.with_file_name(ETCD_BUILD);
    let stdin = stdin_copy(&inv.stdin).map_err(|e| Error::io("copy stdin", e))?;
    let e = Command::new(&target).stdin(stdin).exec();
    Err(Error::io(
        format!(
            "run {} for the etcd store (store.type etcd): spiderpool is built without the etcd \
             client; install {ETCD_BUILD} in the same directory",
            target.display()
        ),
        e,
    ))
}

/// The stdin bytes in a memory file, which unlike a pipe takes any size without a reader.
fn stdin_copy(bytes: &[u8]) -> io::Result<File> {
    // SAFETY: a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"spiderpool-stdin".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}
