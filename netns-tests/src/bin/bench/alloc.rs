//! The allocation curve: the IPAM plugin alone, called by direct exec with a new container
//! id each time, filling one pool. The median ADD of a window of 100 consecutive allocations
//! shows whether an allocation costs more as the pool fills (the reference host-local scans
//! its state).
//!
//! Timing every allocation of the fill would take minutes (host-local's cost grows with the
//! fill, so its fill is quadratic), so only windows at sampled fill levels are timed, each
//! window 100 real ADDs in a row; the gaps between windows are filled to the state the plugin
//! itself would have left, without exec:
//! - ours through the same `ipam-store` call the plugin makes (`FileStore::allocate`, same
//!   network, container ids, ifname and netns), on a thread whose `fsync`/`fdatasync` a
//!   seccomp filter turns into no-ops, then one `syncfs` makes it durable before the window;
//! - host-local by writing the files host-local 1.1 writes: one per address named by it,
//!   holding `<container id>\r\n<ifname>`, and `last_reserved_ip.0` naming the last one.

use std::fs::{self, File};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ipam_store::{manifest, Allocations, FileStore, Owner};
use netns_tests::paths::temp_dir;
use netns_tests::plugins::{our_binary, REFERENCE_DIR};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::quantile_ms;

pub const WINDOW: usize = 100;

/// The network name (the conflist's `name`) and CNI_NETNS of every call.
const NETWORK: &str = "curve";
const NETNS: &str = "/run/netns/bench-curve";
const IFNAME: &str = "net1";

/// One IPAM's curve: the median ADD time of each timed window.
pub struct Curve {
    pub label: &'static str,
    /// Allocations when done (the last window ends there).
    pub count: usize,
    /// `(fill level at the window's start, median ms)`, by fill level.
    pub windows: Vec<(usize, f64)>,
    /// The first window again, on a fresh pool after the curve: if it differs much from the
    /// first, the machine's load changed during the run.
    pub control: f64,
    /// How the gaps between windows were filled, for the report.
    pub filled_by: &'static str,
}

impl Curve {
    pub fn first(&self) -> f64 {
        self.windows[0].1
    }

    pub fn last(&self) -> f64 {
        self.windows.last().expect("at least one window").1
    }

    /// The median of the window starting at `fill`, if one was timed there.
    pub fn at(&self, fill: usize) -> Option<f64> {
        self.windows
            .iter()
            .find(|(start, _)| *start == fill)
            .map(|(_, ms)| *ms)
    }
}

/// Where windows start: every `every` allocations from 0, and the last 100 of `count`.
fn window_starts(count: usize, every: usize) -> Vec<usize> {
    let last = count - WINDOW;
    let mut starts: Vec<usize> = (0..=last).step_by(every).collect();
    // A window that would overlap the last one gives way to it.
    while starts.last().is_some_and(|&s| s + WINDOW > last) {
        starts.pop();
    }
    starts.push(last);
    starts
}

/// A fresh scratch dir and the `ipam` object of one IPAM filling the /16 in it.
struct Bench {
    scratch: TempDir,
    ipam: Value,
}

impl Bench {
    /// Our spiderpool: the pool manifest in `pools/`, the store in `data/`.
    fn ours() -> Bench {
        let scratch = temp_dir("bench-alloc");
        let pools = scratch.path().join("pools");
        fs::create_dir(&pools).expect("pool dir");
        fs::write(
            pools.join("curve.yaml"),
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  \
             name: curve\nspec:\n  subnet: 10.100.0.0/16\n  ips:\n    - 10.100.0.1-10.100.255.254\n",
        )
        .expect("pool manifest");
        let ipam = json!({
            "type": "spiderpool", "default_ipv4_ippool": ["curve"],
            "ippool_dir": pools, "data_dir": scratch.path().join("data"),
        });
        Bench { scratch, ipam }
    }

    /// The reference host-local: its state in `<scratch>/<network>/`.
    fn reference() -> Bench {
        let scratch = temp_dir("bench-alloc-ref");
        let ipam = json!({
            "type": "host-local", "dataDir": scratch.path(),
            "ranges": [[{"subnet": "10.100.0.0/16", "gateway": Ipv4Addr::new(10, 100, 255, 254).to_string()}]],
        });
        Bench { scratch, ipam }
    }

    fn dir(&self, key: &str) -> &Path {
        Path::new(self.ipam[key].as_str().expect("a path"))
    }

    /// The median ADD of allocations `start..start + WINDOW`, in ms.
    fn window(&self, binary: &Path, start: usize) -> f64 {
        let conf =
            json!({"cniVersion": "1.0.0", "name": NETWORK, "type": "macvlan", "ipam": self.ipam})
                .to_string();
        let mut samples: Vec<Duration> = (start..start + WINDOW)
            .map(|n| {
                let started = Instant::now();
                add(binary, &conf, n, &[]);
                started.elapsed()
            })
            .collect();
        quantile_ms(&mut samples, 0.5)
    }
}

/// Our spiderpool filling a /16 pool to `count` addresses, timed every `every`.
pub fn ours(count: usize, every: usize) -> Curve {
    let bench = Bench::ours();
    let fill = |from: usize, to: usize| {
        fill_ours(bench.dir("ippool_dir"), bench.dir("data_dir"), from, to)
    };
    let binary = our_binary("spiderpool");
    let windows = windows("spiderpool (ours)", &bench, &binary, (count, every), fill);
    remove(bench, "spiderpool (ours)");
    Curve {
        label: "spiderpool (ours)",
        count,
        windows,
        control: Bench::ours().window(&binary, 0),
        filled_by: "`FileStore::allocate`, the plugin's own store call, on a thread whose fsyncs \
                    a seccomp filter skips",
    }
}

/// The reference host-local filling the same /16 with `count` addresses, timed every `every`.
pub fn reference(count: usize, every: usize) -> Curve {
    let bench = Bench::reference();
    let dir = bench.scratch.path().join(NETWORK);
    let fill = |from: usize, to: usize| fill_host_local(&dir, from, to);
    let binary = Path::new(REFERENCE_DIR).join("host-local");
    let windows = windows(
        "host-local (reference)",
        &bench,
        &binary,
        (count, every),
        fill,
    );
    remove(bench, "host-local (reference)");
    Curve {
        label: "host-local (reference)",
        count,
        windows,
        control: Bench::reference().window(&binary, 0),
        filled_by: "the files host-local 1.1 writes: one per address, named by it, holding \
                    `<container id>\\r\\n<ifname>`, and `last_reserved_ip.0`",
    }
}

/// Removes a filled pool's scratch dir: tens of thousands of one-block files. On a file
/// system mounted with `discard` and no journal, each unlink waits for the discard of its
/// block (a third of a millisecond here), so they are unlinked from several threads: the
/// waits overlap. Reports how long it took when BENCH_VERBOSE is set.
fn remove(bench: Bench, label: &str) {
    const THREADS: usize = 8;
    let started = Instant::now();
    let mut files = Vec::new();
    let mut dirs = vec![bench.scratch.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("scratch dir").flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(entry.path()),
                _ => files.push(entry.path()),
            }
        }
    }
    thread::scope(|s| {
        for t in 0..THREADS {
            let files = &files;
            s.spawn(move || {
                for file in files.iter().skip(t).step_by(THREADS) {
                    // What is left (or fails) goes with the TempDir below.
                    let _ = fs::remove_file(file);
                }
            });
        }
    });
    drop(bench);
    // Written back now, not during the next timed window.
    sync_fs(&std::env::temp_dir());
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!(
            "bench: {label}: removed the filled pool ({} files) in {:.2} s",
            files.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// The timed windows of one curve, filling the gaps between them with `fill(from, to)`.
fn windows(
    label: &str,
    bench: &Bench,
    binary: &Path,
    (count, every): (usize, usize),
    fill: impl Fn(usize, usize),
) -> Vec<(usize, f64)> {
    let verbose = std::env::var_os("BENCH_VERBOSE").is_some();
    let mut windows = Vec::new();
    let mut filled = 0;
    for start in window_starts(count, every) {
        if start > filled {
            let started = Instant::now();
            fill(filled, start);
            let synced = Instant::now();
            sync_fs(bench.scratch.path());
            if verbose {
                eprintln!(
                    "bench: {label}: filled {filled}..{start} in {:.2} s, syncfs {:.2} s",
                    synced.duration_since(started).as_secs_f64(),
                    synced.elapsed().as_secs_f64()
                );
            }
        }
        let started = Instant::now();
        windows.push((start, bench.window(binary, start)));
        if verbose {
            eprintln!(
                "bench: {label}: window {start} in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        filled = start + WINDOW;
    }
    windows
}

/// Container id of the `n`th allocation, the same in windows and fills.
fn container_id(n: usize) -> String {
    format!("curve-{n}")
}

/// One ADD by direct exec, with `env` beside the CNI variables.
pub fn add(binary: &Path, conf: &str, n: usize, env: &[(&str, &str)]) {
    let mut child = Command::new(binary)
        .env_clear()
        .envs(env.iter().copied())
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container_id(n))
        .env("CNI_NETNS", NETNS)
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_PATH", REFERENCE_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{} ADD #{n} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Allocations `from..to` in our store, as the plugin's ADD makes them (see the module doc).
fn fill_ours(pools: &Path, data: &Path, from: usize, to: usize) {
    let manifest = manifest::load_dir(pools).expect("pool manifest");
    let pool = manifest.get("curve").expect("pool curve");
    thread::scope(|s| {
        s.spawn(|| {
            without_fsync();
            let store = FileStore::open(data).expect("store");
            for n in from..to {
                // What the plugin's `owner` makes of the CNI_* variables of `add`.
                let owner = Owner {
                    container_id: container_id(n),
                    ifname: IFNAME.into(),
                    netns: NETNS.into(),
                    ..Owner::default()
                };
                store
                    .allocate(pool, NETWORK, &owner)
                    .unwrap_or_else(|e| panic!("filling allocation #{n}: {e}"));
            }
        })
        .join()
        .expect("filling thread");
    });
}

/// Allocations `from..to` of host-local (the `n`th gets the `n+1`th address of the range),
/// written as host-local 1.1 writes them: `<dataDir>/<network>/<ip>` holding the container id
/// and ifname on two lines (CRLF), and `last_reserved_ip.0` (range set 0) naming the last.
/// The directory already exists: the first window, by host-local itself, made it.
fn fill_host_local(dir: &Path, from: usize, to: usize) {
    let first = u32::from(Ipv4Addr::new(10, 100, 0, 1));
    let ip = |n: usize| Ipv4Addr::from(first + u32::try_from(n).expect("fits a /16"));
    for n in from..to {
        let content = format!("{}\r\n{IFNAME}", container_id(n));
        fs::write(dir.join(ip(n).to_string()), content).expect("host-local record");
    }
    fs::write(dir.join("last_reserved_ip.0"), ip(to - 1).to_string()).expect("last reserved");
}

/// Flushes the file system holding `dir`, so the next window's fsyncs do not pay for the fill.
fn sync_fs(dir: &Path) {
    let dir = File::open(dir).expect("scratch dir");
    // SAFETY: syncfs on an fd we own.
    let synced = unsafe { libc::syncfs(dir.as_raw_fd()) };
    assert_eq!(synced, 0, "syncfs: {}", std::io::Error::last_os_error());
}

/// Turns `fsync` and `fdatasync` into no-ops that succeed, for the calling thread only (a
/// seccomp filter applies to the thread that installs it, and to processes it starts; the
/// filling thread starts none and ends with its fill).
fn without_fsync() {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: i64, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k: k as u32,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(load, std::mem::offset_of!(libc::seccomp_data, arch) as u32),
        jump(AUDIT_ARCH_X86_64.into(), 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, std::mem::offset_of!(libc::seccomp_data, nr) as u32),
        jump(libc::SYS_fsync, 2, 0),
        jump(libc::SYS_fdatasync, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        // Errno 0: the call is skipped and returns 0.
        stmt(ret, libc::SECCOMP_RET_ERRNO),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with a filter program that outlives the call (the kernel copies it).
    let installed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ) == 0
    };
    assert!(
        installed,
        "cannot install the no-fsync filter: {}",
        std::io::Error::last_os_error()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_every_n_and_end_at_the_count_without_overlap() {
        assert_eq!(
            window_starts(5_000, 1_000),
            [0, 1_000, 2_000, 3_000, 4_000, 4_900]
        );
        assert_eq!(window_starts(100, 1_000), [0]);
        assert_eq!(window_starts(250, 100), [0, 150]);
        let starts = window_starts(65_000, 1_000);
        assert_eq!((starts[0], starts[starts.len() - 1]), (0, 64_900));
        assert!(starts.windows(2).all(|w| w[0] + WINDOW <= w[1]));
    }

    #[test]
    fn the_no_fsync_filter_skips_fsync_on_its_thread_only() {
        // fsync of a bad fd fails with EBADF unless the call is skipped.
        let fsync_bad_fd = || unsafe { libc::fsync(-1) };
        thread::spawn(move || {
            without_fsync();
            assert_eq!(fsync_bad_fd(), 0);
        })
        .join()
        .expect("filtered thread");
        assert_eq!(fsync_bad_fd(), -1);
    }

    #[test]
    fn host_local_records_are_what_host_local_writes() {
        let dir = temp_dir("bench-alloc-test");
        fill_host_local(dir.path(), 0, 300);
        let read = |name: &str| fs::read_to_string(dir.path().join(name)).expect(name);
        assert_eq!(read("10.100.0.1"), "curve-0\r\nnet1");
        // The 256th address crosses into 10.100.1.0/24 with no gap, as host-local counts.
        assert_eq!(read("10.100.1.0"), "curve-255\r\nnet1");
        assert_eq!(read("10.100.1.44"), "curve-299\r\nnet1");
        assert_eq!(read("last_reserved_ip.0"), "10.100.1.44");
    }
}
