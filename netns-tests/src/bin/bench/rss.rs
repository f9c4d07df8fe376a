//! Peak RSS of one plugin run, the plugin's own.
//!
//! The kernel's `ru_maxrss` of a child is the larger of what it touched after exec and the
//! high-water mark of the memory it had *before* exec: a fork child's copy of its parent's
//! anonymous pages, or, for `vfork`/`posix_spawn` (which share the parent's memory until
//! exec), the parent's whole high-water mark. Started from the bench (a few MiB, more once its
//! workers ran), a 2 MiB plugin reports the bench's size whichever way it is started.
//!
//! So the bench starts a small helper (itself, re-executed with [`HELPER_FLAG`]) that joins
//! the node's netns, forks the plugin from its own few hundred KiB, and reports the plugin's
//! `ru_maxrss` from `wait4`. The same path runs ours and the reference plugins, and
//! [`floor_kib`] measures `/bin/true` through it, to show the floor.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

/// `bench --measure-rss NETNS PROGRAM`: run PROGRAM (stdin, stdout and environment passed on,
/// stderr dropped) inside the netns at NETNS; print `maxrss KIB` (PROGRAM's peak) and
/// `copied KIB` (the helper's own anonymous memory when it forked: the floor) on stderr, and
/// exit with PROGRAM's status.
pub const HELPER_FLAG: &str = "--measure-rss";

/// A command for the helper running `program` inside the netns at `netns`; the caller sets
/// environment and stdin/stdout. Its stderr carries the report: pass the whole output to
/// [`report_kib`].
pub fn command(netns: &Path, program: &Path) -> Command {
    let me = std::env::current_exe().expect("the bench's own executable");
    let mut cmd = Command::new(me);
    cmd.arg(HELPER_FLAG)
        .arg(netns)
        .arg(program)
        .stderr(Stdio::piped());
    cmd
}

/// The peak RSS the helper reported on `stderr`, in KiB.
pub fn report_kib(stderr: &[u8]) -> u64 {
    field(stderr, "maxrss")
}

fn field(stderr: &[u8], name: &str) -> u64 {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("the RSS helper did not report {name}: {text:?}"))
}

/// The helper itself (`args`: what follows [`HELPER_FLAG`]). Single-threaded: it runs before
/// the bench starts anything else.
pub fn helper(args: &[String]) -> ExitCode {
    let [netns, program] = args else {
        eprintln!("usage: bench {HELPER_FLAG} NETNS PROGRAM");
        return ExitCode::from(2);
    };
    match run(Path::new(netns), Path::new(program)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bench {HELPER_FLAG}: {e}");
            ExitCode::from(126)
        }
    }
}

fn run(netns: &Path, program: &Path) -> std::io::Result<u8> {
    let ns = File::open(netns)?;
    // SAFETY: setns on an fd we own; this process has one thread, so all of it moves.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(ns);
    // The reference sbr logs every rule it looks at on stderr, which carries our report.
    let devnull = File::options().write(true).open("/dev/null")?;
    let path = CString::new(program.as_os_str().as_bytes())?;
    let argv = [path.as_ptr(), std::ptr::null()];
    let copied = anonymous_kib()?;
    // SAFETY: fork in a single-threaded process; the child only calls the async-signal-safe
    // dup2, execv and _exit on data prepared before the fork. execv passes on our environment.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe {
            libc::dup2(devnull.as_raw_fd(), 2);
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills; pid is our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        return Err(std::io::Error::last_os_error());
    }
    eprintln!("maxrss {}\ncopied {copied}", usage.ru_maxrss);
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else {
        128 + libc::WTERMSIG(status) as u8
    })
}

/// This process's resident anonymous memory in KiB (resident minus file-backed, from statm):
/// what a fork copies into the child's count.
fn anonymous_kib() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: Vec<u64> = statm
        .split_whitespace()
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let page_kib = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024;
    Ok(pages[1].saturating_sub(pages[2]) * page_kib)
}

/// The floor of the measurement, in KiB: the helper's own anonymous memory that its fork
/// copies into the child's count; and the peak RSS of `/bin/true` measured the same way.
pub fn floor_kib(netns: &Path) -> (u64, u64) {
    let out = command(netns, Path::new("/bin/true"))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .expect("the RSS helper runs");
    assert!(
        out.status.success(),
        "/bin/true through the RSS helper failed"
    );
    (field(&out.stderr, "copied"), report_kib(&out.stderr))
}
