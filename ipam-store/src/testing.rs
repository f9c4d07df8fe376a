//! A throw-away etcd server for tests: Debian's `etcd` on free loopback ports with a fresh
//! data dir, killed and removed on drop, restartable on the same data to test outages; with
//! TLS and client certificates from a throw-away CA if asked. [`EtcdCluster`]: three members
//! on loopback whose leader a test can kill and restart.

mod cluster;
mod probe;

pub use cluster::EtcdCluster;
pub use probe::revision;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::store::{Allocations, EtcdConfig};
use crate::EtcdStore;

/// How long a started etcd may take to serve.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Between two looks at a starting etcd.
const POLL_EVERY: Duration = Duration::from_millis(20);

pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
    tls: bool,
}

impl EtcdServer {
    /// Starts etcd and waits until it serves; panics (naming the log) if it does not.
    pub fn start() -> EtcdServer {
        EtcdServer::start_with(false)
    }

    /// The same over TLS, clients authenticated by certificate: the CA, the server's and a
    /// client's certificate are made with the openssl CLI in the server's dir.
    pub fn start_tls() -> EtcdServer {
        EtcdServer::start_with(true)
    }

    fn start_with(tls: bool) -> EtcdServer {
        let dir = fresh_dir("etcd");
        if tls {
            make_pki(&dir);
        }
        let mut server = EtcdServer {
            child: None,
            dir,
            client: free_port(),
            peer: free_port(),
            tls,
        };
        server.resume();
        server
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    /// A client config for this server, with the CA and the client certificate under TLS.
    pub fn config(&self) -> EtcdConfig {
        let file = |name: &str| self.tls.then(|| self.dir.join(name));
        EtcdConfig {
            timeout_ms: 2000,
            ca_file: file("ca.pem"),
            cert_file: file("client.pem"),
            key_file: file("client.key"),
            ..EtcdConfig::new(vec![self.endpoint()])
        }
    }

    /// Kills etcd (SIGKILL: the harshest outage) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data and ports, and waits until it serves.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let peer = format!("http://{}", self.peer);
        let mut command = member_command(&Member {
            name: "test",
            data: &self.dir.join("data"),
            log: &self.dir.join("etcd.log"),
            client: &self.endpoint(),
            peer: &peer,
            initial_cluster: &format!("test={peer}"),
        });
        if self.tls {
            command
                .arg("--cert-file")
                .arg(self.dir.join("server.pem"))
                .arg("--key-file")
                .arg(self.dir.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(self.dir.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let config = self.config();
        let child = self.child.insert(spawn(command));
        wait_serving(
            &self.dir,
            || child.try_wait().ok().flatten().map(|s| s.to_string()),
            || healthy(&config),
        );
    }
}

/// Whether it serves a linearizable read, through the store's own client.
pub(crate) fn healthy(config: &EtcdConfig) -> bool {
    EtcdStore::open(config, None).is_ok_and(|store| store.check_ready().is_ok())
}

/// How one etcd member is started.
pub(crate) struct Member<'a> {
    pub name: &'a str,
    pub data: &'a Path,
    /// Appended to, so a restarted member's log follows its earlier runs.
    pub log: &'a Path,
    pub client: &'a str,
    pub peer: &'a str,
    /// `name=peer URL,...` of every member.
    pub initial_cluster: &'a str,
}

/// The etcd command line of `member`, its output to its log. It dies with the thread that
/// spawns it (`PR_SET_PDEATHSIG`), even when the test process is killed and no Drop runs: so
/// start and restart members from the test's own thread, not from a thread that ends first.
pub(crate) fn member_command(member: &Member) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(member.log)
        .expect("open the etcd log");
    let mut command = Command::new("etcd");
    command
        .args(["--name", member.name, "--data-dir"])
        .arg(member.data)
        .args(["--listen-client-urls", member.client])
        .args(["--advertise-client-urls", member.client])
        .args(["--listen-peer-urls", member.peer])
        .args(["--initial-advertise-peer-urls", member.peer])
        .args(["--initial-cluster", member.initial_cluster])
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
}

pub(crate) fn spawn(mut command: Command) -> Child {
    command
        .spawn()
        .expect("start etcd (Debian's etcd-server; scripts/deps installs it)")
}

/// Polls until `ready`, within [`READY_WITHIN`]; panics, naming the logs in `dir`, if
/// `exited` reports that a process it watches ended (with how) or time runs out.
pub(crate) fn wait_serving(
    dir: &Path,
    mut exited: impl FnMut() -> Option<String>,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + READY_WITHIN;
    while !ready() {
        if let Some(status) = exited() {
            panic!("etcd exited with {status}: see {}", dir.display());
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not serve within {READY_WITHIN:?}: see the logs in {}",
            dir.display()
        );
        std::thread::sleep(POLL_EVERY);
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new empty dir `ipam-store-<label>-<pid>-<n>` in the temp dir, for one etcd's data.
pub(crate) fn fresh_dir(label: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ipam-store-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the etcd test dir");
    dir
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
}

/// A CA, and a server and a client certificate it signed (both for 127.0.0.1, with both key
/// usages, as etcd checks them), as PEM files in `dir`.
fn make_pki(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("the openssl CLI makes the test certificates (apt-get install openssl)");
        assert!(
            status.success(),
            "openssl {args:?} failed in {}",
            dir.display()
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509", "-days", "2", "-subj", "/CN=test-ca"],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write the extensions file");
    for name in ["server", "client"] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &[
                &["req", "-subj", &format!("/CN={name}")],
                &ec[..],
                &["-keyout", &key, "-out", &csr],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            &pem,
        ]);
    }
}
