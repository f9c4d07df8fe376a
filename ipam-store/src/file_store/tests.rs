use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;
use crate::pool::{PoolSpec, MAX_POOL_SIZE};
use crate::testutil::{pool_from_yaml, seed_pool, TempDir};

const NET: &str = "gpu1-macvlan";

fn owner(container_id: &str, ifname: &str) -> Owner {
    Owner {
        container_id: container_id.into(),
        ifname: ifname.into(),
        netns: format!("/var/run/netns/{container_id}"),
        pod_namespace: Some("default".into()),
        pod_name: Some(format!("pod-{container_id}")),
        node: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(name: &str, subnet: &str, ips: &[&str]) -> Pool {
    let spec = PoolSpec {
        subnet: subnet.into(),
        ips: ips.iter().map(|s| s.to_string()).collect(),
        ..PoolSpec::default()
    };
    Pool::new(name, &spec).unwrap().0
}

fn open(dir: &TempDir) -> FileStore {
    FileStore::open(&dir.path().join("data")).unwrap()
}

fn held_ips(store: &FileStore, pool: &str) -> Vec<IpAddr> {
    store
        .held(pool)
        .unwrap()
        .into_iter()
        .map(|(ip, _)| ip)
        .collect()
}

/// Writes a record the way a claim does, but with no attachment entry: what a crash between
/// claim and entry would leave if the store wrote them in that order, or a lost entry file.
fn plant_record(store: &FileStore, pool: &Pool, addr: IpAddr, owner: Owner) {
    let dir = store.pool_dir(pool.name()).unwrap();
    dir.create().unwrap();
    let record = Record {
        ip: addr,
        pool: pool.name().into(),
        network: NET.into(),
        owner,
        time: 1,
    };
    assert!(dir.claim(&record).unwrap());
}

/// Every record has its attachment entry: the invariant the store's write order keeps,
/// whatever point a process was killed at.
fn assert_records_indexed(store: &FileStore, pool: &str) {
    for (addr, record) in store.held(pool).unwrap() {
        let entries = store.attachments.read(record.key()).unwrap();
        let held = Held {
            pool: pool.into(),
            ip: addr,
        };
        assert!(
            entries.contains(&held),
            "{addr} held without an entry: {record:?}"
        );
    }
}

#[test]
fn seed_pool_gives_200_addresses_then_exhausts_then_reuses() {
    let dir = TempDir::new("seed");
    let store = open(&dir);
    let pool = seed_pool();
    let mut got = BTreeSet::new();
    for i in 0..200 {
        let addr = store
            .allocate(&pool, NET, &owner(&format!("c{i}"), "net1"))
            .unwrap();
        assert!(pool.allocatable().contains(addr), "{addr}");
        assert!(got.insert(addr), "{addr} given twice");
    }
    assert!(!got.contains(&ip("172.16.11.254")));
    let err = store
        .allocate(&pool, NET, &owner("c200", "net1"))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Exhausted { pool, size: 200 } if pool == "gpu1-net11"),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with("pool gpu1-net11 is exhausted: every address is held (size 200)"));
    // The failed attempt left nothing behind.
    assert!(store
        .attachments
        .read(Key {
            network: NET,
            container_id: "c200",
            ifname: "net1"
        })
        .unwrap()
        .is_empty());

    let released = store.release(NET, "c17", "net1").unwrap();
    assert_eq!(released.len(), 1);
    let freed = released[0].1;
    assert_eq!(
        store.allocate(&pool, NET, &owner("c200", "net1")).unwrap(),
        freed
    );
    assert_records_indexed(&store, "gpu1-net11");
}

#[test]
fn allocation_is_idempotent_per_attachment() {
    let dir = TempDir::new("idem");
    let pool = seed_pool();
    let first = open(&dir)
        .allocate(&pool, NET, &owner("c1", "net1"))
        .unwrap();
    // Another instance (another process in real life) sees the same allocation.
    let store = open(&dir);
    assert_eq!(
        store.allocate(&pool, NET, &owner("c1", "net1")).unwrap(),
        first
    );
    let other_ifname = store.allocate(&pool, NET, &owner("c1", "net2")).unwrap();
    let other_network = store
        .allocate(&pool, "other", &owner("c1", "net1"))
        .unwrap();
    assert_eq!(
        BTreeSet::from([first, other_ifname, other_network]).len(),
        3
    );
    assert_eq!(store.held("gpu1-net11").unwrap().len(), 3);
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.insert(path.clone(), Vec::new());
                todo.push(path);
            } else {
                files.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[track_caller]
fn assert_refused(err: StoreError, want: IpAddr, why: Refusal) {
    match err {
        StoreError::Refused { ip, why: got, .. } if ip == want && got == why => {}
        other => panic!("expected {want} refused ({why}), got {other:?}"),
    }
}

#[test]
fn an_exact_request_gets_that_address_or_a_refusal_that_changes_nothing() {
    let dir = TempDir::new("exact");
    let store = open(&dir);
    let pool = seed_pool();
    let wanted = ip("172.16.11.150");
    let c1 = owner("c1", "net1");
    assert_eq!(
        store.allocate_exact(&pool, NET, &c1, wanted).unwrap(),
        wanted
    );
    // A repeated ADD asking again gets it again, and so does one asking for anything.
    assert_eq!(
        store.allocate_exact(&pool, NET, &c1, wanted).unwrap(),
        wanted
    );
    assert_eq!(store.allocate(&pool, NET, &c1).unwrap(), wanted);
    assert_records_indexed(&store, "gpu1-net11");
    assert_eq!(
        store.held_by(NET, "c1", "net1").unwrap(),
        [("gpu1-net11".to_owned(), wanted)]
    );

    let before = snapshot(store.root());
    let held_by_c1 = Refusal::HeldBy {
        network: NET.into(),
        container_id: "c1".into(),
        ifname: "net1".into(),
    };
    let err = store
        .allocate_exact(&pool, NET, &owner("c2", "net1"), wanted)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("172.16.11.150 cannot be given from pool gpu1-net11: held by container c1"),
        "{err}"
    );
    assert_refused(err, wanted, held_by_c1.clone());
    // Another network is another attachment too.
    let err = store
        .allocate_exact(&pool, "other-net", &owner("c1", "net1"), wanted)
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
    let err = store
        .allocate_exact(&pool, NET, &c1, ip("172.16.11.151"))
        .unwrap_err();
    assert_refused(err, ip("172.16.11.151"), Refusal::HoldsOther(wanted));
    for outside in ["172.16.11.254", "172.16.11.201", "10.0.0.1", "fd00::1"] {
        let err = store
            .allocate_exact(&pool, NET, &owner("c3", "net1"), ip(outside))
            .unwrap_err();
        assert_refused(err, ip(outside), Refusal::NotInPool);
    }
    assert_eq!(
        snapshot(store.root()),
        before,
        "a refusal changed the store"
    );

    // Allocations that ask for anything never get the requested address.
    let others: BTreeSet<IpAddr> = (0..199)
        .map(|i| {
            store
                .allocate(&pool, NET, &owner(&format!("any{i}"), "net1"))
                .unwrap()
        })
        .collect();
    assert_eq!(others.len(), 199);
    assert!(!others.contains(&wanted));
    assert!(matches!(
        store.allocate(&pool, NET, &owner("one-more", "net1")),
        Err(StoreError::Exhausted { .. })
    ));

    // Released, it can be asked for again.
    assert_eq!(store.release(NET, "c1", "net1").unwrap().len(), 1);
    let c2 = owner("c2", "net1");
    assert_eq!(
        store.allocate_exact(&pool, NET, &c2, wanted).unwrap(),
        wanted
    );
    assert_records_indexed(&store, "gpu1-net11");
}

#[test]
fn an_exact_request_in_a_fresh_or_disabled_pool_creates_nothing_when_refused() {
    let dir = TempDir::new("exact-fresh");
    let store = open(&dir);
    let pool = seed_pool();
    let before = snapshot(store.root());
    let err = store
        .allocate_exact(&pool, NET, &owner("c1", "net1"), ip("172.16.11.250"))
        .unwrap_err();
    assert_refused(err, ip("172.16.11.250"), Refusal::NotInPool);
    assert_eq!(snapshot(store.root()), before);

    let c1 = owner("c1", "net1");
    let wanted = ip("172.16.11.7");
    store.allocate_exact(&pool, NET, &c1, wanted).unwrap();
    let disabled = pool_from_yaml(
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata: {name: gpu1-net11}\n\
         spec: {subnet: 172.16.0.0/16, ips: [172.16.11.1-172.16.11.200], disable: true}\n",
    );
    // A disabled pool keeps what it gave, and gives nothing new.
    assert_eq!(
        store.allocate_exact(&disabled, NET, &c1, wanted).unwrap(),
        wanted
    );
    assert!(matches!(
        store.allocate_exact(&disabled, NET, &owner("c2", "net1"), ip("172.16.11.8")),
        Err(StoreError::Disabled { .. })
    ));
}

#[test]
fn threads_asking_for_one_address_get_it_once() {
    let dir = TempDir::new("exact-race");
    let store = open(&dir);
    let pool = seed_pool();
    let wanted = ip("172.16.11.42");
    let results: Vec<Result<IpAddr, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|t| {
                let (store, pool) = (&store, &pool);
                s.spawn(move || {
                    store.allocate_exact(pool, NET, &owner(&format!("t{t}"), "net1"), wanted)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for result in results.iter().filter(|r| r.is_err()) {
        assert!(
            matches!(
                result,
                Err(StoreError::Refused {
                    why: Refusal::HeldBy { .. },
                    ..
                })
            ),
            "{result:?}"
        );
    }
    assert_eq!(held_ips(&store, "gpu1-net11"), [wanted]);
    assert_records_indexed(&store, "gpu1-net11");
    // The losers hold nothing, not even an entry.
    let entries = fsutil::list(&store.root().join("attachments").join(NET)).unwrap();
    assert_eq!(
        entries.iter().filter(|n| n.contains(':')).count(),
        1,
        "{entries:?}"
    );
}

#[test]
fn release_returns_what_was_held_and_absent_is_ok() {
    let dir = TempDir::new("release");
    let store = open(&dir);
    let (v4, v6) = (seed_pool(), pool("v6", "fd00::/64", &["fd00::1-fd00::ff"]));
    assert!(store.release(NET, "never", "net1").unwrap().is_empty());
    let a = store.allocate(&v4, NET, &owner("c1", "net1")).unwrap();
    let b = store.allocate(&v6, NET, &owner("c1", "net1")).unwrap();
    assert_eq!(b, ip("fd00::1"));
    assert_eq!(
        store.release(NET, "c1", "net1").unwrap(),
        vec![("gpu1-net11".to_string(), a), ("v6".to_string(), b)]
    );
    assert!(store.release(NET, "c1", "net1").unwrap().is_empty());
    assert!(store.held("gpu1-net11").unwrap().is_empty());
    assert!(store.attachments(NET).unwrap().is_empty());
    // No attachment file is left behind either.
    assert_eq!(
        fsutil::list(&store.attachments.dir().join(NET)).unwrap(),
        ["lock"]
    );
}

#[test]
fn held_and_attachments_show_who_holds_what() {
    let dir = TempDir::new("status");
    let store = open(&dir);
    let pool = seed_pool();
    let a = store.allocate(&pool, NET, &owner("c1", "net1")).unwrap();
    let b = store.allocate(&pool, NET, &owner("c2", "net1")).unwrap();
    let held = store.held("gpu1-net11").unwrap();
    assert_eq!(held.iter().map(|(ip, _)| *ip).collect::<Vec<_>>(), [a, b]);
    let record = &held[0].1;
    assert_eq!(record.owner, owner("c1", "net1"));
    assert_eq!((record.ip, record.network.as_str()), (a, NET));
    assert!(record.time > 1_600_000_000);
    assert_eq!(
        store.attachments(NET).unwrap(),
        vec![
            Attachment {
                container_id: "c1".into(),
                ifname: "net1".into(),
                addresses: vec![("gpu1-net11".into(), a)],
            },
            Attachment {
                container_id: "c2".into(),
                ifname: "net1".into(),
                addresses: vec![("gpu1-net11".into(), b)],
            },
        ]
    );
    assert_eq!(store.pools().unwrap(), ["gpu1-net11"]);
    assert!(store.held("unknown-pool").unwrap().is_empty());
}

#[test]
fn disabled_pool_refuses_new_attachments_but_keeps_old_ones() {
    let dir = TempDir::new("disabled");
    let store = open(&dir);
    let addr = store
        .allocate(&seed_pool(), NET, &owner("c1", "net1"))
        .unwrap();
    let disabled = pool_from_yaml(
        &crate::testutil::SEED_YAML.replace("  gateway:", "  disable: true\n  gateway:"),
    );
    assert!(disabled.disabled());
    let err = store
        .allocate(&disabled, NET, &owner("c2", "net1"))
        .unwrap_err();
    assert!(matches!(&err, StoreError::Disabled { pool } if pool == "gpu1-net11"));
    assert!(err
        .to_string()
        .contains("set disable: false or use another pool"));
    assert_eq!(
        store
            .allocate(&disabled, NET, &owner("c1", "net1"))
            .unwrap(),
        addr
    );

    // A disabled pool that never held anything is refused without a trace in the data dir.
    let fresh = TempDir::new("disabled-fresh");
    let store = open(&fresh);
    let err = store
        .allocate(&disabled, NET, &owner("c1", "net1"))
        .unwrap_err();
    assert!(matches!(&err, StoreError::Disabled { .. }), "{err:?}");
    assert!(store.pools().unwrap().is_empty());
}

#[test]
fn gc_releases_gone_attachments_of_its_network_only() {
    let dir = TempDir::new("gc");
    let store = open(&dir);
    let pool = seed_pool();
    let a = store.allocate(&pool, NET, &owner("a", "net1")).unwrap();
    store.allocate(&pool, NET, &owner("b", "net1")).unwrap();
    store.allocate(&pool, NET, &owner("a", "net2")).unwrap();
    let other = store
        .allocate(&pool, "other-net", &owner("b", "net1"))
        .unwrap();
    let released = store
        .gc(NET, &|cid, ifname| cid == "a" && ifname == "net1")
        .unwrap();
    let mut who: Vec<_> = released
        .iter()
        .map(|r| (r.owner.container_id.as_str(), r.owner.ifname.as_str()))
        .collect();
    who.sort();
    assert_eq!(who, [("a", "net2"), ("b", "net1")]);
    assert_eq!(held_ips(&store, "gpu1-net11"), [a, other]);
    assert!(store.gc(NET, &|_, _| true).unwrap().is_empty());
}

#[test]
fn record_without_entry_is_never_reused_and_gc_reclaims_or_reindexes_it() {
    let dir = TempDir::new("orphan");
    let store = open(&dir);
    let pool = seed_pool();
    assert_eq!(
        store.allocate(&pool, NET, &owner("a", "net1")).unwrap(),
        ip("172.16.11.1")
    );
    // The next address by the cursor, and one further on, are taken behind the bitmap's back.
    plant_record(&store, &pool, ip("172.16.11.2"), owner("gone", "net1"));
    plant_record(&store, &pool, ip("172.16.11.4"), owner("live", "net1"));
    assert_eq!(
        store.allocate(&pool, NET, &owner("b", "net1")).unwrap(),
        ip("172.16.11.3")
    );
    assert_eq!(
        store.allocate(&pool, NET, &owner("c", "net1")).unwrap(),
        ip("172.16.11.5")
    );

    let released = store.gc(NET, &|cid, _| cid != "gone").unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].ip, released[0].owner.container_id.as_str()),
        (ip("172.16.11.2"), "gone")
    );
    // The live one got its entry back, so its DEL finds it.
    assert_eq!(
        store.release(NET, "live", "net1").unwrap(),
        [("gpu1-net11".to_string(), ip("172.16.11.4"))]
    );
    assert_records_indexed(&store, "gpu1-net11");
}

#[test]
fn entries_torn_by_a_power_cut_confirm_nothing_and_gc_repairs_the_index() {
    let dir = TempDir::new("torn");
    let store = open(&dir);
    let pool = seed_pool();
    let live = store.allocate(&pool, NET, &owner("live", "net1")).unwrap();
    let gone = store.allocate(&pool, NET, &owner("gone", "net1")).unwrap();
    // Entries are not flushed: a power cut can leave one zero-filled or empty.
    let entry = |cid: &str| {
        store
            .attachments
            .dir()
            .join(NET)
            .join(format!("{cid}:net1"))
    };
    let len = fs::metadata(entry("live")).unwrap().len() as usize;
    fs::write(entry("live"), vec![0u8; len]).unwrap();
    fs::write(entry("gone"), b"").unwrap();

    assert!(store.attachments(NET).unwrap().is_empty());
    assert!(store.release(NET, "gone", "net1").unwrap().is_empty());
    // Their records still hold the addresses.
    let fresh = store.allocate(&pool, NET, &owner("new", "net1")).unwrap();
    assert!(![live, gone].contains(&fresh), "{fresh} handed out again");

    let released = store.gc(NET, &|cid, _| cid != "gone").unwrap();
    assert_eq!(
        released.iter().map(|r| r.ip).collect::<Vec<_>>(),
        [gone],
        "{released:?}"
    );
    assert_eq!(
        store.release(NET, "live", "net1").unwrap(),
        [("gpu1-net11".to_string(), live)]
    );
    let names = fsutil::list(&store.attachments.dir().join(NET)).unwrap();
    assert_eq!(names, ["lock", "new:net1"]);
}

#[test]
fn entry_without_record_is_reclaimed_by_retry_and_dropped_by_gc() {
    let dir = TempDir::new("entry");
    let store = open(&dir);
    let pool = seed_pool();
    store.allocate(&pool, NET, &owner("a", "net1")).unwrap();
    // What a process killed between its entry write and its claim leaves behind.
    for (cid, addr) in [("retried", "172.16.11.9"), ("deleted", "172.16.11.10")] {
        let key = Key {
            network: NET,
            container_id: cid,
            ifname: "net1",
        };
        store
            .attachments
            .update(key, |list| {
                list.push(Held {
                    pool: "gpu1-net11".into(),
                    ip: ip(addr),
                })
            })
            .unwrap();
    }
    assert_eq!(store.attachments(NET).unwrap().len(), 1);
    // The retried ADD gets the address it was about to get.
    assert_eq!(
        store
            .allocate(&pool, NET, &owner("retried", "net1"))
            .unwrap(),
        ip("172.16.11.9")
    );
    assert!(store.gc(NET, &|_, _| true).unwrap().is_empty());
    let names = fsutil::list(&store.attachments.dir().join(NET)).unwrap();
    assert_eq!(names, ["a:net1", "lock", "retried:net1"]);
}

#[test]
fn failed_write_leaves_the_store_consistent_and_usable() {
    let dir = TempDir::new("fail");
    let store = open(&dir);
    let pool = seed_pool();
    store.allocate(&pool, NET, &owner("a", "net1")).unwrap();
    // The claim cannot write its file (a directory sits at the name), as with ENOSPC.
    let blocker = dir.path().join("data/pools/gpu1-net11/claim.tmp");
    fs::create_dir(&blocker).unwrap();
    let err = store.allocate(&pool, NET, &owner("b", "net1")).unwrap_err();
    assert!(
        matches!(&err, StoreError::Io { path, .. } if *path == blocker),
        "{err:?}"
    );
    assert_eq!(held_ips(&store, "gpu1-net11"), [ip("172.16.11.1")]);
    fs::remove_dir(&blocker).unwrap();
    assert_eq!(
        store.allocate(&pool, NET, &owner("b", "net1")).unwrap(),
        ip("172.16.11.2")
    );
    assert_eq!(
        store.allocate(&pool, NET, &owner("c", "net1")).unwrap(),
        ip("172.16.11.3")
    );
    assert_records_indexed(&store, "gpu1-net11");
}

#[test]
fn edited_pool_keeps_held_addresses_and_releases_dropped_ones() {
    let dir = TempDir::new("edit");
    let store = open(&dir);
    let before = pool("p", "10.0.0.0/24", &["10.0.0.1-10.0.0.200"]);
    for cid in ["a", "b", "c"] {
        store.allocate(&before, NET, &owner(cid, "net1")).unwrap();
    }
    let after = pool("p", "10.0.0.0/24", &["10.0.0.2-10.0.0.10"]);
    assert_eq!(
        store.allocate(&after, NET, &owner("d", "net1")).unwrap(),
        ip("10.0.0.4")
    );
    assert_eq!(
        store.release(NET, "a", "net1").unwrap(),
        [("p".to_string(), ip("10.0.0.1"))]
    );
}

#[test]
fn ipv6_and_maximum_size_pools() {
    let dir = TempDir::new("sizes");
    let store = open(&dir);
    let v6 = pool("v6", "fd00::/64", &["fd00::a-fd00::c"]);
    let got: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|cid| store.allocate(&v6, NET, &owner(cid, "net1")).unwrap())
        .collect();
    assert_eq!(got, [ip("fd00::a"), ip("fd00::b"), ip("fd00::c")]);
    assert!(matches!(
        store.allocate(&v6, NET, &owner("d", "net1")),
        Err(StoreError::Exhausted { size: 3, .. })
    ));

    let big = pool("big", "10.0.0.0/8", &["10.0.0.0-10.255.255.255"]);
    assert_eq!(u128::from(big.size()), MAX_POOL_SIZE - 2);
    assert_eq!(
        store.allocate(&big, NET, &owner("a", "net1")).unwrap(),
        ip("10.0.0.1")
    );
    assert_eq!(
        store.allocate(&big, NET, &owner("b", "net1")).unwrap(),
        ip("10.0.0.2")
    );
}

#[test]
fn names_that_would_become_bad_paths_are_refused() {
    let dir = TempDir::new("names");
    let store = open(&dir);
    let pool = seed_pool();
    for (network, cid, ifname, what) in [
        ("../x", "c", "net1", NameKind::Network),
        (NET, "../../etc", "net1", NameKind::ContainerId),
        (NET, "c", "a/b", NameKind::Ifname),
    ] {
        let err = store
            .allocate(&pool, network, &owner(cid, ifname))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidName { what: w, .. } if *w == what),
            "{err:?}"
        );
        let err = store.release(network, cid, ifname).unwrap_err();
        assert!(matches!(err, StoreError::InvalidName { .. }));
    }
    assert!(matches!(
        store.held("../x"),
        Err(StoreError::InvalidName { .. })
    ));
    assert!(matches!(
        store.gc("a/b", &|_, _| true),
        Err(StoreError::InvalidName { .. })
    ));
}

#[test]
fn state_is_private_0700_and_0600() {
    let dir = TempDir::new("perm");
    let store = open(&dir);
    store
        .allocate(&seed_pool(), NET, &owner("c1", "net1"))
        .unwrap();
    let data = dir.path().join("data");
    let mode = |rel: &str| {
        fs::symlink_metadata(data.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for d in [
        "",
        "pools",
        "pools/gpu1-net11",
        "pools/gpu1-net11/ips",
        "attachments",
        "attachments/gpu1-macvlan",
    ] {
        assert_eq!(mode(d), 0o700, "{d}");
    }
    for f in [
        "pools/gpu1-net11/lock",
        "pools/gpu1-net11/bitmap",
        "pools/gpu1-net11/ips/172.16.11.1",
        "attachments/gpu1-macvlan/lock",
        "attachments/gpu1-macvlan/c1:net1",
    ] {
        assert_eq!(mode(f), 0o600, "{f}");
    }
    store.check_ready().unwrap();
    assert_eq!(fsutil::list(&data).unwrap(), ["attachments", "pools"]);
}

#[test]
fn symlinks_planted_in_the_store_are_refused() {
    let dir = TempDir::new("symlink");
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    let data = dir.path().join("data");
    let pool = seed_pool();
    let is_symlink_error = |err: StoreError| {
        assert!(
            matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains("symlink")),
            "{err:?}"
        );
    };

    // At the data dir itself.
    symlink(dir.path(), &data).unwrap();
    is_symlink_error(FileStore::open(&data).unwrap_err());
    fs::remove_file(&data).unwrap();

    let store = FileStore::open(&data).unwrap();
    // At a pool's directory.
    let victim_dir = dir.path().join("victim-dir");
    fs::create_dir(&victim_dir).unwrap();
    symlink(&victim_dir, data.join("pools/gpu1-net11")).unwrap();
    is_symlink_error(store.allocate(&pool, NET, &owner("c", "net1")).unwrap_err());
    is_symlink_error(store.held("gpu1-net11").unwrap_err());
    fs::remove_file(data.join("pools/gpu1-net11")).unwrap();
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 0);

    // At the pool's lock and bitmap.
    for name in ["lock", "bitmap"] {
        let path = data.join("pools/gpu1-net11").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(&victim, &path).unwrap();
        is_symlink_error(store.allocate(&pool, NET, &owner("c", "net1")).unwrap_err());
        fs::remove_file(&path).unwrap();
    }

    // At an attachment file, and at a record (never followed: the address counts as taken).
    store.allocate(&pool, NET, &owner("c", "net1")).unwrap();
    let entry = data.join("attachments/gpu1-macvlan/c:net1");
    fs::remove_file(&entry).unwrap();
    symlink(&victim, &entry).unwrap();
    is_symlink_error(store.release(NET, "c", "net1").unwrap_err());
    symlink(&victim, data.join("pools/gpu1-net11/ips/172.16.11.2")).unwrap();
    assert_eq!(
        store.allocate(&pool, NET, &owner("d", "net1")).unwrap(),
        ip("172.16.11.3")
    );
    is_symlink_error(store.held("gpu1-net11").unwrap_err());

    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn check_ready_reports_a_damaged_layout() {
    let dir = TempDir::new("writable");
    let store = open(&dir);
    store.check_ready().unwrap();
    let pools = dir.path().join("data/pools");
    fs::remove_dir(&pools).unwrap();
    fs::write(&pools, "").unwrap();
    let err = store.check_ready().unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if *path == pools),
        "{err:?}"
    );
}

/// One worker's loop: allocate, check exclusivity, repeat the ADD, release. A holder owns the
/// file `markers/<ip>` from allocation to release; finding it taken means two live holders.
/// Allocates and releases `rounds` times (forever with `None`): every other round asks for
/// one address exactly (one that other workers ask for too), which may be refused as held.
fn churn(store: &FileStore, pool: &Pool, markers: &Path, worker: &str, rounds: Option<u32>) {
    let mut round = 0;
    while rounds.is_none_or(|n| round < n) {
        let cid = format!("{worker}-{round}");
        let wanted = (round % 2 == 1).then(|| {
            let index = (u64::from(round) * 7 + worker.len() as u64) % pool.size();
            pool.allocatable().ip_at(index).unwrap()
        });
        let take = || match wanted {
            Some(ip) => store.allocate_exact(pool, NET, &owner(&cid, "net1"), ip),
            None => store.allocate(pool, NET, &owner(&cid, "net1")),
        };
        let addr = match take() {
            Ok(addr) => addr,
            Err(StoreError::Refused {
                why: Refusal::HeldBy { .. },
                ..
            }) => {
                round += 1;
                continue;
            }
            Err(e) => panic!("worker {worker}: {e}"),
        };
        if let Some(ip) = wanted {
            assert_eq!(addr, ip, "an exact request got another address");
        }
        let marker = markers.join(addr.to_string());
        if let Err(e) = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            panic!("{addr} held twice (worker {worker}): {e}");
        }
        assert_eq!(take().unwrap(), addr);
        fs::remove_file(&marker).unwrap();
        assert_eq!(
            store.release(NET, &cid, "net1").unwrap(),
            [(pool.name().to_string(), addr)]
        );
        round += 1;
    }
}

/// Data dir with a markers dir beside it, for [`churn`].
fn churn_dirs(dir: &TempDir) -> (PathBuf, PathBuf) {
    let markers = dir.path().join("markers");
    fs::create_dir(&markers).unwrap();
    (dir.path().join("data"), markers)
}

#[test]
fn threads_never_hold_an_address_twice() {
    let dir = TempDir::new("threads");
    let (data, markers) = churn_dirs(&dir);
    let store = FileStore::open(&data).unwrap();
    let pool = seed_pool();
    std::thread::scope(|s| {
        for t in 0..32 {
            let (store, pool, markers) = (&store, &pool, &markers);
            s.spawn(move || churn(store, pool, markers, &format!("t{t}"), Some(8)));
        }
    });
    assert!(store.held("gpu1-net11").unwrap().is_empty());
}

const CHILD_ENV: &str = "IPAM_STORE_TEST_CHILD";

/// Not a test of its own: the body of the child processes below, which run this test binary
/// filtered to this function with [`CHILD_ENV`] = `<data dir>|<markers dir>|<name>|<rounds>`
/// (rounds 0: until killed).
#[test]
fn child_worker() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = arg.split('|').collect();
    let [data, markers, name, rounds] = parts[..] else {
        panic!("bad {CHILD_ENV}: {arg}");
    };
    let store = FileStore::open(Path::new(data)).unwrap();
    let rounds = rounds.parse().unwrap();
    churn(
        &store,
        &seed_pool(),
        Path::new(markers),
        name,
        (rounds > 0).then_some(rounds),
    );
}

fn spawn_child(data: &Path, markers: &Path, name: &str, rounds: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "file_store::tests::child_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{}|{}|{name}|{rounds}", data.display(), markers.display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn processes_never_hold_an_address_twice() {
    let dir = TempDir::new("procs");
    let (data, markers) = churn_dirs(&dir);
    let children: Vec<_> = (0..8)
        .map(|i| spawn_child(&data, &markers, &format!("p{i}"), 12))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(held_ips(&FileStore::open(&data).unwrap(), "gpu1-net11").is_empty());
}

#[test]
fn sigkill_at_any_point_never_duplicates_and_gc_reclaims_the_leak() {
    let dir = TempDir::new("kill");
    let (data, markers) = churn_dirs(&dir);
    // Kill times spread over the children's lifetimes, so kills land at varied points of
    // allocate and release.
    for round in 0..8u64 {
        let children: Vec<_> = (0..3)
            .map(|i| spawn_child(&data, &markers, &format!("k{round}x{i}"), 0))
            .collect();
        for (i, mut child) in children.into_iter().enumerate() {
            std::thread::sleep(Duration::from_millis(5 + (round * 7 + i as u64 * 13) % 40));
            // Still running: a child that stopped by itself found a duplicate.
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    let store = FileStore::open(&data).unwrap();
    assert_records_indexed(&store, "gpu1-net11");
    store.gc(NET, &|_, _| false).unwrap();
    assert!(store.held("gpu1-net11").unwrap().is_empty());
    // No attachment file is left (theirs contain ':', the lock and temp file do not).
    let names = fsutil::list(&data.join("attachments").join(NET)).unwrap();
    assert!(names.iter().all(|n| !n.contains(':')), "{names:?}");
    // Nothing leaked: the whole pool is there to take.
    let pool = seed_pool();
    let all: BTreeSet<_> = (0..200)
        .map(|i| {
            store
                .allocate(&pool, NET, &owner(&format!("after{i}"), "net1"))
                .unwrap()
        })
        .collect();
    assert_eq!(all.len(), 200);
}

#[test]
fn open_existing_creates_nothing_and_refuses_a_missing_data_dir() {
    let dir = TempDir::new("open-existing");
    let missing = dir.path().join("typo/data");
    let err = FileStore::open_existing(&missing).unwrap_err();
    assert!(err.to_string().contains("typo/data"), "{err}");
    assert!(!dir.path().join("typo").exists());

    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let err = FileStore::open_existing(&file).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");

    // An empty data dir reads as an empty store and stays empty.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let store = FileStore::open_existing(&empty).unwrap();
    assert!(store.pools().unwrap().is_empty());
    assert!(store.held("gpu1-net11").unwrap().is_empty());
    assert!(store.attachments(NET).unwrap().is_empty());
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
}
