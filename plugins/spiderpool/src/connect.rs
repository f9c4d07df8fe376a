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

/// `spiderpool`: in block mode, the node's blocks serve what needs no etcd
/// ([`ipam_store::LocalBlocks`]); anything else, and every per-address config, replaces this
/// process with [`ETCD_BUILD`] from its own directory, fed the same stdin. Returns an error
/// only if that failed.
pub fn hand_over(
    inv: &Invocation,
    etcd: &EtcdConfig,
    data_dir: &Path,
) -> Result<Box<dyn PoolStore>, Error> {
    if etcd.block_size == 0 {
        let (context, source) = exec_etcd_build(&inv.stdin);
        return Err(Error::Io { context, source });
    }
    let stdin = inv.stdin.clone();
    let escalate = Box::new(move || {
        let (what, source) = exec_etcd_build(&stdin);
        ipam_store::StoreError::Handover { what, source }
    });
    let store = ipam_store::LocalBlocks::open(etcd, data_dir, escalate)
        .map_err(crate::errors::store_error)?;
    Ok(Box::new(store))
}

/// Execs [`ETCD_BUILD`] with `stdin`; returns only if that failed, with what it was doing
/// and why.
fn exec_etcd_build(stdin: &[u8]) -> (String, io::Error) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return ("find this executable".into(), e),
    };
    let target = exe.with_file_name(ETCD_BUILD);
    let stdin = match stdin_copy(stdin) {
        Ok(file) => file,
        Err(e) => return ("copy stdin".into(), e),
    };
    let e = Command::new(&target).stdin(stdin).exec();
    let context = format!(
        "run {} for the etcd store (store.type etcd): spiderpool is built without the etcd \
         client; install {ETCD_BUILD} in the same directory",
        target.display()
    );
    (context, e)
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
