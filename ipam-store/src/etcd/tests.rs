use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::pool::PoolSpec;
use crate::testing::EtcdServer;
use crate::testutil::seed_pool;

const NET: &str = "gpu1-macvlan";

fn config(endpoint: &str) -> EtcdConfig {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    EtcdConfig {
        // Each store its own keys, so tests never see each other's state.
        prefix: format!(
            "/test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
        timeout_ms: 5000,
        ..EtcdConfig::new(vec![endpoint.into()])
    }
}

fn open(config: &EtcdConfig, node: &str) -> EtcdStore {
    EtcdStore::open(config, Some(node.into())).unwrap()
}

fn owner(container_id: &str, ifname: &str) -> Owner {
    Owner {
        container_id: container_id.into(),
        ifname: ifname.into(),
        netns: format!("/var/run/netns/{container_id}"),
        ..Owner::default()
    }
}

fn pool(name: &str, subnet: &str, ips: &[&str], excluded: &[&str]) -> Pool {
    let spec = PoolSpec {
        subnet: subnet.into(),
        ips: ips.iter().map(|s| s.to_string()).collect(),
        exclude_ips: excluded.iter().map(|s| s.to_string()).collect(),
        ..PoolSpec::default()
    };
    Pool::new(name, &spec).unwrap().0
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn seed_pool_gives_200_addresses_then_exhausts_then_reuses_the_freed_one() {
    let server = EtcdServer::start();
    let store = open(&config(&server.endpoint()), "node1");
    let pool = seed_pool();
    let mut got = BTreeSet::new();
    for i in 0..200 {
        let ip = store
            .allocate(&pool, NET, &owner(&format!("c{i}"), "net1"))
            .unwrap();
        assert!(pool.allocatable().contains(ip), "{ip}");
        assert!(got.insert(ip), "{ip} given twice");
    }
    // A repeated ADD gets its address back, not a second one.
    let again = store.allocate(&pool, NET, &owner("c7", "net1")).unwrap();
    assert_eq!(
        store.held_by(NET, "c7", "net1").unwrap(),
        [(pool.name().to_owned(), again)]
    );
    let err = store
        .allocate(&pool, NET, &owner("c200", "net1"))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Exhausted { size: 200, .. }),
        "{err}"
    );

    let freed = store.release(NET, "c42", "net1").unwrap();
    assert_eq!(freed.len(), 1);
    assert!(store.release(NET, "c42", "net1").unwrap().is_empty());
    let next = store.allocate(&pool, NET, &owner("c200", "net1")).unwrap();
    assert_eq!(next, freed[0].1, "the only free address");
    assert_eq!(store.held(pool.name()).unwrap().len(), 200);
    assert_eq!(store.pools().unwrap(), [pool.name()]);
}

#[test]
fn held_attachments_and_records_say_who_holds_what() {
    let server = EtcdServer::start();
    let store = open(&config(&server.endpoint()), "node1");
    let v4 = pool("v4", "10.0.0.0/24", &["10.0.0.10-10.0.0.19"], &[]);
    let v6 = pool("v6", "fd00::/64", &["fd00::10-fd00::1f"], &[]);
    let a = store.allocate(&v4, NET, &owner("a", "net1")).unwrap();
    let a6 = store.allocate(&v6, NET, &owner("a", "net1")).unwrap();
    assert!(a6.is_ipv6());
    let attachments = store.attachments(NET).unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        attachments[0].addresses,
        [("v4".to_owned(), a), ("v6".to_owned(), a6)]
    );
    let (held_ip, record) = &store.held("v4").unwrap()[0];
    assert_eq!(*held_ip, a);
    assert_eq!(record.owner.node.as_deref(), Some("node1"));
    assert_eq!(record.owner.netns, "/var/run/netns/a");
    assert_eq!(store.release(NET, "a", "net1").unwrap().len(), 2);
    assert!(store.attachments(NET).unwrap().is_empty());
    assert!(store.pools().unwrap().is_empty());
}

#[test]
fn disabled_pool_keeps_what_it_gave_and_refuses_more() {
    let server = EtcdServer::start();
    let config = config(&server.endpoint());
    let store = open(&config, "node1");
    let mut spec = PoolSpec {
        subnet: "10.0.0.0/24".into(),
        ips: vec!["10.0.0.10-10.0.0.19".into()],
        ..PoolSpec::default()
    };
    let given = store
        .allocate(&Pool::new("p", &spec).unwrap().0, NET, &owner("a", "net1"))
        .unwrap();
    spec.disable = true;
    let disabled = Pool::new("p", &spec).unwrap().0;
    assert_eq!(
        store.allocate(&disabled, NET, &owner("a", "net1")).unwrap(),
        given
    );
    let err = store
        .allocate(&disabled, NET, &owner("b", "net1"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Disabled { .. }), "{err}");
}

#[test]
fn excluded_addresses_held_from_before_are_skipped_not_counted() {
    let server = EtcdServer::start();
    let store = open(&config(&server.endpoint()), "node1");
    let wide = pool("p", "10.0.0.0/24", &["10.0.0.1-10.0.0.3"], &[]);
    for c in ["a", "b", "c"] {
        store.allocate(&wide, NET, &owner(c, "net1")).unwrap();
    }
    // Keep the holder of 10.0.0.2, which is then excluded: the free addresses lie on both
    // sides of a held key that is no longer in the pool.
    let b = ip("10.0.0.2");
    for c in ["a", "b", "c"] {
        if store.held_by(NET, c, "net1").unwrap()[0].1 != b {
            store.release(NET, c, "net1").unwrap();
        }
    }
    let narrow = pool("p", "10.0.0.0/24", &["10.0.0.1-10.0.0.3"], &["10.0.0.2"]);
    let mut got = BTreeSet::new();
    for c in ["x", "y"] {
        got.insert(store.allocate(&narrow, NET, &owner(c, "net1")).unwrap());
    }
    assert!(!got.contains(&b));
    assert_eq!(got.len(), 2);
    let err = store
        .allocate(&narrow, NET, &owner("z", "net1"))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Exhausted { size: 2, .. }),
        "{err}"
    );
}

#[test]
fn gc_judges_only_this_nodes_allocations_and_drops_unconfirmed_entries() {
    let server = EtcdServer::start();
    let config = config(&server.endpoint());
    let (node1, node2) = (open(&config, "node1"), open(&config, "node2"));
    let p = pool("p", "10.0.0.0/24", &["10.0.0.10-10.0.0.19"], &[]);
    for (store, ids) in [(&node1, ["a1", "a2"]), (&node2, ["b1", "b2"])] {
        for id in ids {
            store.allocate(&p, NET, &owner(id, "net1")).unwrap();
        }
    }
    // An entry no record confirms (only a hand edit makes one).
    let stale = node1.keys.attachment(Key {
        network: NET,
        container_id: "ghost",
        ifname: "net1",
    });
    let list = to_json(&[Held {
        pool: "p".into(),
        ip: ip("10.0.0.99"),
    }]);
    node1
        .conn
        .block(async {
            node1
                .conn
                .kv()
                .put(stale.clone(), list, None)
                .await
                .map_err(node1.conn.error("write to"))
        })
        .unwrap();

    // Node 1 knows only a1 is alive: a2 goes, node 2's attachments stay.
    let released = node1.gc(NET, &|id, _| id == "a1").unwrap();
    let ids: Vec<&str> = released
        .iter()
        .map(|r| r.owner.container_id.as_str())
        .collect();
    assert_eq!(ids, ["a2"]);
    let left: BTreeSet<String> = node1
        .attachments(NET)
        .unwrap()
        .into_iter()
        .map(|a| a.container_id)
        .collect();
    assert_eq!(
        left,
        BTreeSet::from(["a1".into(), "b1".into(), "b2".into()])
    );
    assert!(node1.held_by(NET, "ghost", "net1").unwrap().is_empty());
    assert_eq!(node1.release(NET, "ghost", "net1").unwrap(), []);
    // A network gc does not touch other networks.
    assert!(node2.gc("other-net", &|_, _| false).unwrap().is_empty());
    assert_eq!(node2.gc(NET, &|_, _| false).unwrap().len(), 2);
}

#[test]
fn a_damaged_record_is_named_with_its_key() {
    let server = EtcdServer::start();
    let store = open(&config(&server.endpoint()), "node1");
    let p = pool("p", "10.0.0.0/24", &["10.0.0.10"], &[]);
    let key = store.keys.record("p", ip("10.0.0.10"));
    store
        .conn
        .block(async {
            store
                .conn
                .kv()
                .put(key.clone(), "not json", None)
                .await
                .map_err(store.conn.error("write to"))
        })
        .unwrap();
    let err = store.held("p").unwrap_err().to_string();
    assert!(err.contains(&key) && err.contains("etcdctl del"), "{err}");
    // The allocation walks keys only, so it sees the address as held.
    let err = store.allocate(&p, NET, &owner("a", "net1")).unwrap_err();
    assert!(matches!(err, StoreError::Exhausted { .. }), "{err}");
}

#[test]
fn an_unreachable_etcd_is_unavailable_and_work_resumes_when_it_returns() {
    let mut server = EtcdServer::start();
    let config = EtcdConfig {
        timeout_ms: 1000,
        ..config(&server.endpoint())
    };
    let store = open(&config, "node1");
    let p = pool("p", "10.0.0.0/24", &["10.0.0.10-10.0.0.19"], &[]);
    let a = store.allocate(&p, NET, &owner("a", "net1")).unwrap();
    server.stop();
    for result in [
        store.allocate(&p, NET, &owner("b", "net1")).map(drop),
        store.release(NET, "a", "net1").map(drop),
        store.check_ready(),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains(&server.endpoint()), "{err}");
    }
    server.resume();
    store.check_ready().unwrap();
    assert_eq!(store.held_by(NET, "a", "net1").unwrap(), [("p".into(), a)]);
    let b = store.allocate(&p, NET, &owner("b", "net1")).unwrap();
    assert_ne!(a, b);
}

#[test]
fn manifests_are_written_in_one_transaction_and_read_back() {
    let server = EtcdServer::start();
    let store = open(&config(&server.endpoint()), "node1");
    let docs = vec![
        ("a".to_owned(), "kind: SpiderIPPool # a\n".to_owned()),
        ("b".to_owned(), "kind: SpiderIPPool # b\n".to_owned()),
    ];
    assert_eq!(store.put_manifests(&docs).unwrap(), [true, true]);
    assert_eq!(store.put_manifests(&docs).unwrap(), [false, false]);
    let read = store.manifests().unwrap();
    let texts: Vec<&str> = read.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, [docs[0].1.as_str(), docs[1].1.as_str()]);
    assert!(read[0].0.ends_with("/ippools/a"), "{}", read[0].0);
}

#[track_caller]
fn assert_refused(result: Result<IpAddr, StoreError>, want: IpAddr, why: Refusal) {
    match result {
        Err(StoreError::Refused { ip, why: got, .. }) if ip == want && got == why => {}
        other => panic!("expected {want} refused ({why}), got {other:?}"),
    }
}

/// Every key under the store's prefix, with its value and revision.
fn snapshot(store: &EtcdStore) -> Vec<(String, Vec<u8>, i64)> {
    let all = store
        .conn
        .block(async {
            let mut kv = store.conn.kv();
            store.scan(&mut kv, store.keys.prefix(), false).await
        })
        .unwrap();
    all.iter()
        .map(|kv| (key_text(kv), kv.value().to_vec(), kv.mod_revision()))
        .collect()
}

#[test]
fn an_exact_request_gets_that_address_or_a_refusal_that_changes_nothing() {
    let server = EtcdServer::start();
    let config = config(&server.endpoint());
    let store = open(&config, "node1");
    let pool = seed_pool();
    let wanted = ip("172.16.11.150");
    let c1 = owner("c1", "net1");
    assert_eq!(
        store.allocate_exact(&pool, NET, &c1, wanted).unwrap(),
        wanted
    );
    assert_eq!(
        store.allocate_exact(&pool, NET, &c1, wanted).unwrap(),
        wanted
    );
    assert_eq!(store.allocate(&pool, NET, &c1).unwrap(), wanted);
    assert_eq!(
        store.held_by(NET, "c1", "net1").unwrap(),
        [(pool.name().to_owned(), wanted)]
    );

    let before = snapshot(&store);
    let held_by_c1 = Refusal::HeldBy {
        network: NET.into(),
        container_id: "c1".into(),
        ifname: "net1".into(),
    };
    assert_refused(
        store.allocate_exact(&pool, NET, &owner("c2", "net1"), wanted),
        wanted,
        held_by_c1,
    );
    // From another node too: the store is shared.
    let other_node = open(&config, "node2");
    assert!(matches!(
        other_node.allocate_exact(&pool, NET, &owner("c9", "net1"), wanted),
        Err(StoreError::Refused { .. })
    ));
    assert_refused(
        store.allocate_exact(&pool, NET, &c1, ip("172.16.11.151")),
        ip("172.16.11.151"),
        Refusal::HoldsOther(wanted),
    );
    for outside in ["172.16.11.254", "172.16.11.201", "10.0.0.1"] {
        assert_refused(
            store.allocate_exact(&pool, NET, &owner("c3", "net1"), ip(outside)),
            ip(outside),
            Refusal::NotInPool,
        );
    }
    assert_eq!(snapshot(&store), before, "a refusal changed the store");

    // Allocations that ask for anything never get it.
    let others: BTreeSet<IpAddr> = (0..199)
        .map(|i| {
            store
                .allocate(&pool, NET, &owner(&format!("any{i}"), "net1"))
                .unwrap()
        })
        .collect();
    assert_eq!(others.len(), 199);
    assert!(!others.contains(&wanted));
    assert_eq!(store.release(NET, "c1", "net1").unwrap().len(), 1);
    assert_eq!(
        other_node
            .allocate_exact(&pool, NET, &owner("c2", "net1"), wanted)
            .unwrap(),
        wanted
    );
}

/// 8 nodes ask for the same few addresses at once while others allocate anything: each
/// address goes to one attachment at a time, exact requests get exactly theirs.
#[test]
fn concurrent_exact_requests_never_share_an_address() {
    let server = EtcdServer::start();
    let config = config(&server.endpoint());
    let p = Arc::new(pool("p", "10.0.0.0/24", &["10.0.0.1-10.0.0.20"], &[]));
    let holders: Arc<Mutex<HashMap<IpAddr, String>>> = Arc::default();
    let mut threads = Vec::new();
    for node in 0..8 {
        for worker in 0..2 {
            let (config, p, holders) = (config.clone(), p.clone(), holders.clone());
            threads.push(std::thread::spawn(move || {
                let store = open(&config, &format!("node{node}"));
                let mut won = 0;
                for round in 0..20u8 {
                    let id = format!("n{node}w{worker}r{round}");
                    let wanted = (worker == 0).then(|| IpAddr::from([10, 0, 0, 1 + round % 4]));
                    let got = match wanted {
                        Some(want) => store.allocate_exact(&p, NET, &owner(&id, "net1"), want),
                        None => store.allocate(&p, NET, &owner(&id, "net1")),
                    };
                    let ip = match got {
                        Ok(ip) => ip,
                        Err(StoreError::Refused {
                            why: Refusal::HeldBy { .. },
                            ..
                        })
                        | Err(StoreError::Exhausted { .. }) => continue,
                        Err(e) => panic!("{id}: {e}"),
                    };
                    if let Some(want) = wanted {
                        assert_eq!(ip, want);
                        won += 1;
                    }
                    let earlier = holders.lock().unwrap().insert(ip, id.clone());
                    assert!(earlier.is_none(), "{ip} held by {earlier:?} and {id}");
                    holders.lock().unwrap().remove(&ip);
                    assert_eq!(store.release(NET, &id, "net1").unwrap(), [("p".into(), ip)]);
                }
                won
            }));
        }
    }
    let won: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(won > 0, "no exact request ever succeeded");
    let store = open(&config, "check");
    assert!(store.held("p").unwrap().is_empty());
    assert!(store.attachments(NET).unwrap().is_empty());
}

/// 8 nodes x 4 threads allocate and release from one small pool at once: an address is never
/// held by two attachments at a time, and nothing is left when all is released.
#[test]
fn concurrent_nodes_never_share_an_address() {
    let server = EtcdServer::start();
    let config = config(&server.endpoint());
    let p = Arc::new(pool("p", "10.0.0.0/24", &["10.0.0.1-10.0.0.40"], &[]));
    let holders: Arc<Mutex<HashMap<IpAddr, String>>> = Arc::default();
    let mut threads = Vec::new();
    for node in 0..8 {
        for worker in 0..4 {
            let (config, p, holders) = (config.clone(), p.clone(), holders.clone());
            threads.push(std::thread::spawn(move || {
                let store = open(&config, &format!("node{node}"));
                for round in 0..25 {
                    let id = format!("n{node}w{worker}r{round}");
                    let ip = store.allocate(&p, NET, &owner(&id, "net1")).unwrap();
                    let earlier = holders.lock().unwrap().insert(ip, id.clone());
                    assert!(earlier.is_none(), "{ip} held by {earlier:?} and {id}");
                    holders.lock().unwrap().remove(&ip);
                    assert_eq!(store.release(NET, &id, "net1").unwrap(), [("p".into(), ip)]);
                }
            }));
        }
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let store = open(&config, "check");
    assert!(store.held("p").unwrap().is_empty());
    assert!(store.attachments(NET).unwrap().is_empty());
}

#[test]
fn tls_with_a_client_certificate_works_and_anything_less_is_refused() {
    let server = EtcdServer::start_tls();
    let config = EtcdConfig {
        prefix: config(&server.endpoint()).prefix,
        ..server.config()
    };
    let p = pool("p", "10.0.0.0/24", &["10.0.0.10-10.0.0.19"], &[]);
    let store = open(&config, "node1");
    let a = store.allocate(&p, NET, &owner("a", "net1")).unwrap();
    assert_eq!(store.held_by(NET, "a", "net1").unwrap(), [("p".into(), a)]);

    let anonymous = EtcdConfig {
        cert_file: None,
        key_file: None,
        ..config.clone()
    };
    let wrong_ca = EtcdConfig {
        ca_file: config.cert_file.clone(),
        ..config.clone()
    };
    for refused in [anonymous, wrong_ca] {
        let err = open(&refused, "node1").held("p").unwrap_err().to_string();
        assert!(err.contains(&server.endpoint()), "{err}");
    }
    let missing = EtcdConfig {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..config
    };
    let err = EtcdStore::open(&missing, None).err().unwrap().to_string();
    assert!(
        err.contains("store.ca_file") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
}

#[test]
fn the_last_free_addresses_of_a_large_pool_are_found_by_counting() {
    let server = EtcdServer::start();
    let store = open(&config(&server.endpoint()), "node1");
    // 1,100 addresses: more than a batch of counted windows' worth of slices, a partial
    // last window and slice.
    let p = pool("p", "10.0.0.0/16", &["10.0.1.0-10.0.5.75"], &[]);
    assert_eq!(p.size(), 1100);
    for i in 0..1100 {
        store
            .allocate(&p, NET, &owner(&format!("c{i}"), "net1"))
            .unwrap();
    }
    let freed: BTreeSet<IpAddr> = [7, 555, 1099]
        .iter()
        .map(|i| store.release(NET, &format!("c{i}"), "net1").unwrap()[0].1)
        .collect();
    let got: BTreeSet<IpAddr> = (0..3)
        .map(|i| {
            store
                .allocate(&p, NET, &owner(&format!("n{i}"), "net1"))
                .unwrap()
        })
        .collect();
    assert_eq!(got, freed);
    let err = store.allocate(&p, NET, &owner("n3", "net1")).unwrap_err();
    assert!(
        matches!(err, StoreError::Exhausted { size: 1100, .. }),
        "{err}"
    );
}

#[test]
fn a_nodes_gc_reads_its_own_attachments_through_the_index() {
    let server = EtcdServer::start();
    let config = config(&server.endpoint());
    let (a, b) = (open(&config, "node-a"), open(&config, "node-b"));
    let pool = seed_pool();
    for i in 0..3 {
        a.allocate(&pool, NET, &owner(&format!("a{i}"), "net1"))
            .unwrap();
    }
    for i in 0..2 {
        b.allocate(&pool, NET, &owner(&format!("b{i}"), "net1"))
            .unwrap();
    }
    let ids = |store: &EtcdStore| -> BTreeSet<String> {
        store
            .node_records()
            .unwrap()
            .into_iter()
            .map(|r| r.owner.container_id)
            .collect()
    };
    assert_eq!(
        ids(&a),
        BTreeSet::from(["a0".into(), "a1".into(), "a2".into()])
    );
    assert_eq!(ids(&b), BTreeSet::from(["b0".into(), "b1".into()]));
    // A store written before the index: the first gc builds it from every record once.
    let block = |f| a.conn.block(f);
    block(async {
        let mut kv = a.conn.kv();
        let prefix = a.keys.node("node-a");
        kv.delete(
            prefix,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
        Ok(())
    })
    .unwrap();
    let released = a.gc(NET, &|id, _| id != "a1").unwrap();
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0].owner.container_id, "a1");
    assert_eq!(ids(&a), BTreeSet::from(["a0".into(), "a2".into()]));
    assert_eq!(ids(&b).len(), 2, "node-b's are not node-a's to judge");
    // A release drops the index entry with the entry.
    a.release(NET, "a0", "net1").unwrap();
    assert_eq!(ids(&a), BTreeSet::from(["a2".into()]));
    assert_eq!(a.held_count(pool.name()).unwrap(), 3, "a2, b0, b1");
}
