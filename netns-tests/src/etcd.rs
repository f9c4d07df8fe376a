//! etcd for the tests of the etcd store: the server `scripts/test` started
//! (`SPIDER_ETCD_ENDPOINT`), else one of the test's own, or a 3-member cluster of the test's
//! own; and a relay that makes it reachable from inside a node namespace, where the plugins
//! run, at the same loopback addresses.

use std::fs::File;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use ipam_store::testing::{EtcdCluster, EtcdServer};
use ipam_store::{EtcdConfig, EtcdStore, StoreConfig};
use serde_json::Value;

use crate::netns::Netns;

/// An etcd to test against, with a key prefix of this test's own.
pub struct TestEtcd {
    endpoints: Vec<String>,
    prefix: String,
    /// Set when no shared server was given: stopped on drop.
    own: Option<Own>,
}

/// The etcd a test started itself, to stop or kill parts of it.
enum Own {
    Server(Mutex<EtcdServer>),
    Cluster(Mutex<EtcdCluster>),
}

impl TestEtcd {
    /// The shared server if `scripts/test` started one, else a new one.
    pub fn get() -> TestEtcd {
        match std::env::var("SPIDER_ETCD_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => TestEtcd::with(vec![endpoint], None),
            _ => TestEtcd::own(),
        }
    }

    /// A server of this test's own, which it may stop and resume.
    pub fn own() -> TestEtcd {
        let server = EtcdServer::start();
        TestEtcd::with(
            vec![server.endpoint()],
            Some(Own::Server(Mutex::new(server))),
        )
    }

    /// A 3-member cluster of this test's own, whose members it may kill and restart; the
    /// configs list all three.
    pub fn cluster() -> TestEtcd {
        let cluster = EtcdCluster::start();
        TestEtcd::with(cluster.endpoints(), Some(Own::Cluster(Mutex::new(cluster))))
    }

    fn with(endpoints: Vec<String>, own: Option<Own>) -> TestEtcd {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "/sptest-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        TestEtcd {
            endpoints,
            prefix,
            own,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The etcd store's config for this etcd and prefix, the defaults spelled out.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            prefix: self.prefix.clone(),
            ..EtcdConfig::new(self.endpoints.clone())
        }
    }

    /// The IPAM config's `store` object, as `spiderctl apply` renders it.
    pub fn store_json(&self) -> Value {
        serde_json::to_value(StoreConfig::Etcd(self.config())).expect("a store config serialises")
    }

    /// The `spiderctl` options that select this store.
    pub fn spiderctl_args(&self) -> Vec<String> {
        [
            "--store",
            "etcd",
            "--etcd-endpoints",
            &self.endpoints.join(","),
            "--etcd-prefix",
            &self.prefix,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    pub fn open(&self, node: &str) -> EtcdStore {
        EtcdStore::open(&self.config(), Some(node.into())).expect("open the etcd store")
    }

    /// The test's own server, to stop and resume it.
    pub fn server(&self) -> MutexGuard<'_, EtcdServer> {
        match &self.own {
            Some(Own::Server(server)) => server.lock().expect("the server lock"),
            _ => panic!("only a test's own etcd (TestEtcd::own) can be stopped"),
        }
    }

    /// The test's own cluster, to kill and restart its members.
    pub fn members(&self) -> MutexGuard<'_, EtcdCluster> {
        match &self.own {
            Some(Own::Cluster(cluster)) => cluster.lock().expect("the cluster lock"),
            _ => panic!("only a test's own cluster (TestEtcd::cluster) has members to kill"),
        }
    }

    /// Makes this etcd reachable inside `ns` at the same addresses (see [`LoopbackRelay`]).
    pub fn relay_into(&self, ns: &Netns) -> LoopbackRelay {
        let addrs: Vec<SocketAddr> = self
            .endpoints
            .iter()
            .map(|endpoint| {
                endpoint
                    .trim_start_matches("http://")
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .unwrap_or_else(|| panic!("{endpoint}: not an http://host:port endpoint"))
            })
            .collect();
        LoopbackRelay::new(ns, &addrs)
    }
}

/// Listens on loopback addresses inside a test namespace and relays each connection to the
/// same address in this process's own namespace: how a node namespace reaches the test's
/// etcd on 127.0.0.1 without any link, address or route outside the test's namespaces.
/// Stops on drop.
pub struct LoopbackRelay {
    /// Per address: its listener, and the thread accepting on it.
    relays: Vec<(Arc<TcpListener>, JoinHandle<()>)>,
}

impl LoopbackRelay {
    pub fn new(ns: &Netns, addrs: &[SocketAddr]) -> LoopbackRelay {
        ns.ip(&["link", "set", "lo", "up"])
            .unwrap_or_else(|e| panic!("lo up in {}: {e}", ns.name()));
        LoopbackRelay {
            relays: addrs.iter().map(|&addr| relay(ns, addr)).collect(),
        }
    }
}

/// Listens on `addr` in `ns`, relaying to `addr` here, until the listener is shut down.
fn relay(ns: &Netns, addr: SocketAddr) -> (Arc<TcpListener>, JoinHandle<()>) {
    // A socket belongs to the namespace of the thread that creates it: bind from a thread
    // that entered `ns` and then ends, so no thread of ours stays there.
    let path = ns.path();
    let listener = thread::spawn(move || -> io::Result<TcpListener> {
        let file = File::open(&path)?;
        // SAFETY: setns on an fd we own, affecting only this short-lived thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        TcpListener::bind(addr)
    })
    .join()
    .expect("the bind thread")
    .unwrap_or_else(|e| panic!("listen on {addr} in {}: {e}", ns.name()));
    let listener = Arc::new(listener);
    let accepting = listener.clone();
    let acceptor = thread::spawn(move || {
        for client in accepting.incoming() {
            let Ok(client) = client else {
                return; // shut down by Drop
            };
            // Connected from this thread, so in our own namespace.
            if let Ok(server) = TcpStream::connect(addr) {
                pipe(client, server);
            }
        }
    });
    (listener, acceptor)
}

/// Copies both ways until either side closes.
fn pipe(client: TcpStream, server: TcpStream) {
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    one_way(client, server);
    one_way(server2, client2);
}

impl Drop for LoopbackRelay {
    fn drop(&mut self) {
        for (listener, acceptor) in self.relays.drain(..) {
            // shutdown(2) on a listening socket wakes the blocked accept with an error.
            // SAFETY: the fd is the listener's, alive as long as `listener`.
            unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
            let _ = acceptor.join();
        }
    }
}
