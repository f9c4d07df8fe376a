//! A throw-away etcd cluster of three members on loopback (plain http), each with its own
//! data dir and free client and peer ports: a test can find the leader, SIGKILL a member,
//! restart it on its data, and wait until the cluster has a leader again. Every member is
//! killed and the data removed on drop.

use std::path::PathBuf;
use std::process::Child;

use super::probe::{self, Status};
use super::{free_port, fresh_dir, healthy, member_command, spawn, wait_serving, Member};
use crate::store::EtcdConfig;

/// Members of a cluster: the smallest that survives the loss of one (of its leader, too).
pub const MEMBERS: usize = 3;

pub struct EtcdCluster {
    dir: PathBuf,
    seats: Vec<Seat>,
    /// Each seat's process while it runs; apart from `seats` so a wait can poll both.
    children: Vec<Option<Child>>,
    /// `name=peer URL` of every member, for `--initial-cluster`.
    initial_cluster: String,
}

/// Where one member lives.
struct Seat {
    name: String,
    client: String,
    peer: String,
}

impl EtcdCluster {
    /// Starts the three members and waits until they serve with a leader; panics (naming the
    /// logs) if they do not.
    pub fn start() -> EtcdCluster {
        let dir = fresh_dir("etcd-cluster");
        let seats: Vec<Seat> = (0..MEMBERS)
            .map(|i| Seat {
                name: format!("m{i}"),
                client: format!("http://{}", free_port()),
                peer: format!("http://{}", free_port()),
            })
            .collect();
        let initial_cluster = seats
            .iter()
            .map(|s| format!("{}={}", s.name, s.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir,
            seats,
            children: (0..MEMBERS).map(|_| None).collect(),
            initial_cluster,
        };
        // All at once: the first alone has no quorum to serve.
        for member in 0..MEMBERS {
            cluster.launch(member);
        }
        cluster.wait_for_leader();
        cluster
    }

    /// Every member's client URL, `http://127.0.0.1:<port>`, member 0 first.
    pub fn endpoints(&self) -> Vec<String> {
        self.seats.iter().map(|s| s.client.clone()).collect()
    }

    /// A client config listing all three members.
    pub fn config(&self) -> EtcdConfig {
        config_for(self.endpoints())
    }

    /// The PID of `member` while it runs.
    pub fn pid(&self, member: usize) -> Option<u32> {
        self.children[member].as_ref().map(Child::id)
    }

    /// The member that leads, if every running member follows the same one and it is
    /// running; `None` during an election.
    pub fn leader(&self) -> Option<usize> {
        agreed_leader(&self.seats, &self.running())
    }

    /// SIGKILLs `member` by its PID and reaps it.
    pub fn kill(&mut self, member: usize) {
        let mut child = self.children[member]
            .take()
            .unwrap_or_else(|| panic!("etcd member {member} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts `member` again on its data dir and ports, and waits until it follows the
    /// cluster's leader (see [`EtcdCluster::wait_for_leader`]). Call it from a thread that
    /// outlives the cluster (the test's own): a member dies with the thread that starts it.
    pub fn restart(&mut self, member: usize) {
        assert!(
            self.children[member].is_none(),
            "etcd member {member} is already running"
        );
        self.launch(member);
        self.wait_for_leader();
    }

    /// Polls (within 30 s, else panics naming the logs) until one running member leads,
    /// every running member follows it, and it serves a linearizable read; returns it.
    pub fn wait_for_leader(&mut self) -> usize {
        let running = self.running();
        let (seats, children) = (&self.seats, &mut self.children);
        let mut leader = None;
        wait_serving(
            &self.dir,
            || {
                children.iter_mut().enumerate().find_map(|(i, child)| {
                    let status = child.as_mut()?.try_wait().ok().flatten()?;
                    Some(format!("{status} (member {i})"))
                })
            },
            || {
                leader = agreed_leader(seats, &running)
                    .filter(|&i| healthy(&config_for(vec![seats[i].client.clone()])));
                leader.is_some()
            },
        );
        leader.expect("wait_serving returns once a leader was found")
    }

    fn running(&self) -> Vec<bool> {
        self.children.iter().map(Option::is_some).collect()
    }

    fn launch(&mut self, member: usize) {
        let seat = &self.seats[member];
        let command = member_command(&Member {
            name: &seat.name,
            data: &self.dir.join(&seat.name),
            log: &self.dir.join(format!("{}.log", seat.name)),
            client: &seat.client,
            peer: &seat.peer,
            initial_cluster: &self.initial_cluster,
        });
        self.children[member] = Some(spawn(command));
    }
}

/// The running member that every running member names as leader, if there is one.
fn agreed_leader(seats: &[Seat], running: &[bool]) -> Option<usize> {
    let statuses: Vec<(usize, Status)> = seats
        .iter()
        .enumerate()
        .filter(|(i, _)| running[*i])
        .map(|(i, seat)| probe::status(&seat.client).map(|s| (i, s)))
        .collect::<Option<_>>()?;
    let (leader, id) = statuses
        .iter()
        .find(|(_, s)| s.leader == s.member)
        .map(|(i, s)| (*i, s.member))?;
    statuses
        .iter()
        .all(|(_, s)| s.leader == id)
        .then_some(leader)
}

/// A client config for `endpoints`, the defaults spelled out.
fn config_for(endpoints: Vec<String>) -> EtcdConfig {
    EtcdConfig {
        timeout_ms: 2000,
        ..EtcdConfig::new(endpoints)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for mut child in self.children.iter_mut().filter_map(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PoolStore;
    use crate::EtcdStore;

    #[test]
    fn a_killed_leader_is_replaced_and_rejoins_on_its_data() {
        let mut cluster = EtcdCluster::start();
        let manifest = [("p".to_owned(), "written before the kill".to_owned())];
        EtcdStore::open(&cluster.config(), None)
            .expect("open the store")
            .put_manifests(&manifest)
            .expect("write through all three endpoints");
        let old = cluster.leader().expect("a leader after start");
        let pid = cluster.pid(old).expect("the leader runs");

        cluster.kill(old);
        assert!(cluster.pid(old).is_none());
        // SIGKILLed: gone from the process table once reaped.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        let new = cluster.wait_for_leader();
        assert_ne!(new, old, "the killed member cannot lead");
        // The two left serve (through a live endpoint: a client given all three may try
        // the dead one first and fail, which is the store's concern, not this harness's).
        let live = config_for(vec![cluster.endpoints()[new].clone()]);
        let read = EtcdStore::open(&live, None).unwrap().manifests();
        assert_eq!(read.expect("read with one member down").len(), 1);

        cluster.restart(old);
        let leader = cluster.leader().expect("a leader after the restart");
        assert!(cluster.pid(old).is_some());
        // The restarted member follows too, and serves the data from its own dir.
        let alone = config_for(vec![cluster.endpoints()[old].clone()]);
        assert!(healthy(&alone), "member {old} serves after its restart");
        let read = EtcdStore::open(&alone, None).unwrap().manifests().unwrap();
        assert!(read[0].1.contains("before the kill"), "{read:?}");
        eprintln!("leader {old} killed, {new} took over, {leader} leads after the restart");
    }
}
