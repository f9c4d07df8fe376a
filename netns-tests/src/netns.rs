//! Network namespaces owned by the test process, deleted when dropped.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use crate::cmd::run;

/// Every namespace made here is named `<PREFIX>-<pid>-<counter>-<role>`: the
/// pid of the creating process lets a later run tell the leftovers of a dead
/// run from the namespaces of a live one running in parallel.
pub const PREFIX: &str = "sptest";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEPT: OnceLock<()> = OnceLock::new();
/// The first `ip netns add` on a host makes /run/netns a shared mount; two
/// racing first calls can stack two mounts, each hiding the other's
/// namespaces. Tests run in parallel threads, so additions go one at a time.
static ADD_LOCK: Mutex<()> = Mutex::new(());

/// Bound on waiting for killed processes to leave a namespace being deleted.
const KILL_POLLS: u32 = 200;
const KILL_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A named network namespace (`ip netns add`), deleted on drop together with
/// any process still running in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `sptest-<pid>-<n>-<role>`. The first call of the process also
    /// removes namespaces left behind by dead test processes.
    pub fn new(role: &str) -> Netns {
        SWEPT.get_or_init(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}-{}-{n}-{role}", std::process::id());
        let _serial = ADD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = run(Command::new("ip").args(["netns", "add", &name])) {
            panic!("cannot create netns (are we root?): {e}");
        }
        Netns { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, as a runtime passes it in CNI_NETNS.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `args` as a command that runs inside the namespace, not yet started:
    /// for callers that need to set environment or stdin.
    pub fn command(&self, args: &[&str]) -> Command {
        command_in(&self.path(), args)
    }

    /// Runs `args` inside the namespace and returns whatever it produced.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    /// `ip -n NAME args...`: stdout on success, else the command and stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }
}

/// `args` as a command that runs inside the network namespace of `ns_file` (a `/run/netns`
/// name, a `/proc/<pid>/ns/net`), not yet started. The child joins the namespace itself
/// between fork and exec, which costs one syscall where `ip netns exec` costs a process and a
/// remount of /sys.
pub fn command_in(ns_file: &Path, args: &[&str]) -> Command {
    let (program, rest) = args.split_first().expect("a program to run");
    let ns =
        File::open(ns_file).unwrap_or_else(|e| panic!("cannot open {}: {e}", ns_file.display()));
    let mut cmd = Command::new(program);
    cmd.args(rest);
    // SAFETY: the closure only calls setns(2), which is async-signal-safe, on an fd that
    // the closure owns (opened close-on-exec, so the plugin does not inherit it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    cmd
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

/// Deletes every `sptest-<pid>-*` namespace whose creating process is gone.
/// Namespaces of live processes (including this one) are left alone.
pub fn sweep_stale() {
    let listing = match run(Command::new("ip").args(["netns", "list"])) {
        Ok(listing) => listing,
        Err(e) => return eprintln!("harness: cannot sweep stale namespaces: {e}"),
    };
    // Lines look like `name` or `name (id: 3)`.
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(pid) = owner_pid(name) {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                remove(name);
            }
        }
    }
}

pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

/// Kills what runs inside, then deletes the name. `ip netns del` alone only
/// unmounts the name: a process left inside would keep the namespace and its
/// links alive, out of sight. Errors are reported, not raised: this runs in
/// `Drop`, possibly while a failed test unwinds.
fn remove(name: &str) {
    for _ in 0..KILL_POLLS {
        let pids = match run(Command::new("ip").args(["netns", "pids", name])) {
            Ok(pids) => pids,
            Err(e) => {
                eprintln!("harness: {e}");
                break;
            }
        };
        if pids.trim().is_empty() {
            break;
        }
        for pid in pids.split_whitespace() {
            // The process may exit by itself meanwhile: ignore the result.
            let _ = run(Command::new("kill").args(["-KILL", pid]));
        }
        thread::sleep(KILL_POLL_INTERVAL);
    }
    if let Err(e) = run(Command::new("ip").args(["netns", "del", name])) {
        eprintln!("harness: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_reads_the_pid_field_only_for_our_prefix() {
        assert_eq!(owner_pid("sptest-1234-7-node1"), Some(1234));
        assert_eq!(owner_pid("sptest-1234-7-pod"), Some(1234));
        assert_eq!(owner_pid("sptestx-1234-7-pod"), None);
        assert_eq!(owner_pid("cni-1234"), None);
        assert_eq!(owner_pid("sptest-abc-7-pod"), None);
    }
}
