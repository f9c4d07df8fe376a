//! Block mode against a real etcd (one member of the test's own) and real local stores.

use std::collections::BTreeSet;

use super::*;
use crate::testing::EtcdServer;
use crate::testutil::{seed_pool, TempDir};

const NET: &str = "gpu1-macvlan";

struct Node {
    _dir: TempDir,
    store: BlockStore,
}

fn config(server: &EtcdServer, block_size: u32) -> EtcdConfig {
    EtcdConfig {
        block_size,
        ..server.config()
    }
}

fn node(config: &EtcdConfig, name: &str) -> Node {
    let dir = TempDir::new(name);
    let store = BlockStore::open(config, dir.path(), Some(name.into())).unwrap();
    Node { _dir: dir, store }
}

fn owner(container_id: &str) -> Owner {
    Owner {
        container_id: container_id.into(),
        ifname: "net1".into(),
        netns: format!("/var/run/netns/{container_id}"),
        ..Owner::default()
    }
}

fn revision(store: &BlockStore) -> i64 {
    store.etcd().unwrap().revision().unwrap()
}

#[test]
fn a_node_allocates_in_its_block_without_writing_to_etcd() {
    let server = EtcdServer::start();
    let config = config(&server, 16);
    let pool = seed_pool();
    let (a, b) = (node(&config, "node-a"), node(&config, "node-b"));
    let first = a.store.allocate(&pool, NET, &owner("a0")).unwrap();
    let other = b.store.allocate(&pool, NET, &owner("b0")).unwrap();
    let size = config.block_size;
    assert_ne!(
        layout::start_of(first, size),
        layout::start_of(other, size),
        "two nodes never share a block"
    );
    let before = revision(&a.store);
    let mut got = BTreeSet::from([first]);
    // The seed pool is 172.16.11.1-200: the block of `first` has at most 16 addresses.
    let room = layout::addresses(&pool, &[layout::start_of(first, size)], size).len() as usize;
    for i in 1..room {
        let ip = a
            .store
            .allocate(&pool, NET, &owner(&format!("a{i}")))
            .unwrap();
        assert_eq!(layout::start_of(ip, size), layout::start_of(first, size));
        assert!(got.insert(ip), "{ip} twice");
    }
    assert_eq!(revision(&a.store), before, "no etcd write inside the block");
    // A repeated ADD gets the same address, DEL is local too.
    assert_eq!(a.store.allocate(&pool, NET, &owner("a0")).unwrap(), first);
    assert_eq!(
        a.store.release(NET, "a0", "net1").unwrap(),
        [(pool.name().to_owned(), first)]
    );
    assert_eq!(revision(&a.store), before, "no etcd write for a local DEL");
    // The next block is one lease.
    let more = a.store.allocate(&pool, NET, &owner("a-next")).unwrap();
    assert_eq!(
        more, first,
        "the freed address comes back first in the block"
    );
    let next = a.store.allocate(&pool, NET, &owner("a-next2")).unwrap();
    assert_ne!(layout::start_of(next, size), layout::start_of(first, size));
    assert_eq!(revision(&a.store), before + 1, "one transaction per lease");
}

#[test]
fn two_nodes_exhaust_a_pool_through_leases_shares_and_borrows() {
    let server = EtcdServer::start();
    let config = config(&server, 16);
    let pool = seed_pool();
    let (a, b) = (node(&config, "node-a"), node(&config, "node-b"));
    // node-a takes one address and stays idle: its block holds 14 or 15 free ones.
    let lone = a.store.allocate(&pool, NET, &owner("a0")).unwrap();
    let mut got = BTreeSet::from([lone]);
    let mut asked = false;
    for i in 0.. {
        match b.store.allocate(&pool, NET, &owner(&format!("b{i}"))) {
            Ok(ip) => assert!(got.insert(ip), "{ip} twice"),
            Err(StoreError::Asked { nodes, .. }) => {
                assert_eq!(nodes, "node-a");
                assert!(!asked, "asked twice: node-a's pass should have shared");
                asked = true;
                // node-a's agent pass (or gc) shares the asked block.
                a.store.upkeep(DEFAULT_RETURN_AFTER_S).unwrap();
            }
            Err(StoreError::Exhausted { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(asked);
    assert_eq!(got.len(), 200, "every address of the pool, each once");
    // node-a's own block is shared now: its next allocation borrows too, finds no room, and
    // asks for node-b's (full) blocks; once node-b shared them, the pool is exhausted.
    let mut rounds = 0;
    let err = loop {
        match a.store.allocate(&pool, NET, &owner("a1")).unwrap_err() {
            StoreError::Asked { nodes, .. } if rounds < 12 => {
                assert_eq!(nodes, "node-b");
                rounds += 1;
                b.store.upkeep(DEFAULT_RETURN_AFTER_S).unwrap();
            }
            other => break other,
        }
    };
    assert!(matches!(err, StoreError::Exhausted { .. }), "{err}");
    // Asks go ASK_AT_ONCE blocks at a time: node-b holds the 12 others.
    assert!((1..=3).contains(&rounds), "{rounds} rounds");
    // A borrowed address is released through etcd, and can be borrowed again.
    let freed = b
        .store
        .held_by(NET, "b190", "net1")
        .unwrap()
        .pop()
        .unwrap()
        .1;
    b.store.release(NET, "b190", "net1").unwrap();
    assert!(b.store.held_by(NET, "b190", "net1").unwrap().is_empty());
    // Freed in one of node-b's shared blocks, it stays in that block's `held` list until
    // node-b's next pass refreshes it; a borrowed one is free at once.
    b.store.upkeep(DEFAULT_RETURN_AFTER_S).unwrap();
    let again = loop {
        match a.store.allocate(&pool, NET, &owner("a2")) {
            Ok(ip) => break ip,
            // It was in one of node-b's own blocks: node-b's pass shares it.
            Err(StoreError::Asked { .. }) => b.store.upkeep(DEFAULT_RETURN_AFTER_S).unwrap(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(again, freed, "the one free address of the pool");
}

#[test]
fn with_etcd_down_the_blocks_serve_and_a_new_block_is_code_11() {
    let mut server = EtcdServer::start();
    let config = EtcdConfig {
        timeout_ms: 500,
        ..config(&server, 16)
    };
    let pool = seed_pool();
    let a = node(&config, "node-a");
    let first = a.store.allocate(&pool, NET, &owner("a0")).unwrap();
    // Manifests as the plugin reads them: cached.
    a.store.manifests().unwrap();
    server.stop();
    let size = config.block_size;
    let room = layout::addresses(&pool, &[layout::start_of(first, size)], size).len();
    for i in 1..room {
        a.store
            .allocate(&pool, NET, &owner(&format!("a{i}")))
            .unwrap();
    }
    a.store.release(NET, "a3", "net1").unwrap();
    a.store.allocate(&pool, NET, &owner("a3-again")).unwrap();
    let err = a
        .store
        .allocate(&pool, NET, &owner("needs-a-block"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(a.store.manifests().is_ok(), "the cached manifests serve");
    a.store.check_ready().unwrap();
    server.resume();
    let next = a
        .store
        .allocate(&pool, NET, &owner("needs-a-block"))
        .unwrap();
    assert_ne!(layout::start_of(next, size), layout::start_of(first, size));
}

#[test]
fn gc_returns_empty_blocks_and_a_dead_node_is_released_only_when_silent() {
    let server = EtcdServer::start();
    let config = config(&server, 16);
    let pool = seed_pool();
    let (a, b) = (node(&config, "node-a"), node(&config, "node-b"));
    a.store.allocate(&pool, NET, &owner("a0")).unwrap();
    a.store.release(NET, "a0", "net1").unwrap();
    a.store.upkeep(u64::MAX).unwrap();
    assert_eq!(
        a.store.shared().unwrap().block_leases().unwrap().len(),
        1,
        "young blocks stay"
    );
    a.store.upkeep(0).unwrap();
    assert!(
        a.store.shared().unwrap().block_leases().unwrap().is_empty(),
        "empty blocks go back"
    );

    let held = a.store.allocate(&pool, NET, &owner("a1")).unwrap();
    let err = b
        .store
        .shared()
        .unwrap()
        .release_dead_node("node-a", 0)
        .unwrap_err();
    assert!(matches!(err, StoreError::NodeAlive { .. }), "{err}");
    // node-a goes silent for longer than its offline_s: its state and heartbeat say so.
    let long_ago = now() - config.offline_s - 2 * crate::etcd::DEAD_MARGIN_S;
    let mut state = a.store.dir.read(pool.name()).unwrap();
    state.confirmed = long_ago;
    a.store.dir.write(pool.name(), &state).unwrap();
    a.store
        .etcd()
        .unwrap()
        .beat(
            "node-a",
            &Heartbeat {
                time: long_ago,
                offline_s: config.offline_s,
            },
        )
        .unwrap();
    let (blocks, records) = b
        .store
        .shared()
        .unwrap()
        .release_dead_node("node-a", 0)
        .unwrap();
    assert_eq!(blocks, 1);
    assert!(records.is_empty(), "node-a borrowed nothing");
    assert!(b.store.shared().unwrap().block_leases().unwrap().is_empty());
    // node-b may now lease that block; node-a, back, settles first and drops it.
    let mut b_got = BTreeSet::new();
    for i in 0..200 {
        match b.store.allocate(&pool, NET, &owner(&format!("b{i}"))) {
            Ok(ip) => {
                b_got.insert(ip);
            }
            Err(StoreError::Exhausted { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(b_got.contains(&held), "node-a's block went to node-b");
    let err = a.store.allocate(&pool, NET, &owner("a2")).unwrap_err();
    assert!(
        matches!(&err, StoreError::Asked { nodes, .. } if nodes == "node-b"),
        "node-a came back, found its block gone and every block node-b's: {err}"
    );
    assert!(a.store.dir.read(pool.name()).unwrap().blocks.is_empty());
}

#[test]
fn nodes_with_different_block_sizes_are_refused() {
    let server = EtcdServer::start();
    let pool = seed_pool();
    let a = node(&config(&server, 16), "node-a");
    let b = node(&config(&server, 32), "node-b");
    a.store.allocate(&pool, NET, &owner("a0")).unwrap();
    let err = b.store.allocate(&pool, NET, &owner("b0")).unwrap_err();
    assert!(
        err.to_string()
            .contains("blocks of 16 addresses on etcd, but this node's store.block_size is 32"),
        "{err}"
    );
    let per_address = EtcdStore::open(&server.config(), Some("node-c".into())).unwrap();
    let err = per_address.allocate(&pool, NET, &owner("c0")).unwrap_err();
    assert!(err.to_string().contains("store.block_size is 0"), "{err}");
}

#[test]
fn a_block_holding_per_address_records_is_not_leased() {
    let server = EtcdServer::start();
    let pool = seed_pool();
    let per_address = EtcdStore::open(&server.config(), Some("node-old".into())).unwrap();
    let old = per_address.allocate(&pool, NET, &owner("old")).unwrap();
    let a = node(&config(&server, 16), "node-a");
    let mut got = BTreeSet::new();
    loop {
        match a
            .store
            .allocate(&pool, NET, &owner(&format!("a{}", got.len())))
        {
            Ok(ip) => assert!(got.insert(ip), "{ip} twice"),
            Err(StoreError::Exhausted { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!got.contains(&old), "{old} is the per-address node's");
    let block = layout::addresses(&pool, &[layout::start_of(old, 16)], 16).len() as usize;
    assert_eq!(
        got.len(),
        200 - block,
        "every block but the one holding {old}"
    );
    // Its release is still per address, and frees the block for leasing.
    per_address.release(NET, "old", "net1").unwrap();
    let last = a.store.allocate(&pool, NET, &owner("after")).unwrap();
    assert!(layout::holds(layout::start_of(old, 16), 16, last));
}

#[test]
fn two_data_dirs_of_one_node_keep_to_their_own_blocks() {
    let server = EtcdServer::start();
    let config = config(&server, 16);
    let pool = seed_pool();
    // Two conflists on one node naming the same pool with different data dirs.
    let (one, two) = (node(&config, "node-a"), node(&config, "node-a"));
    let mut got = BTreeSet::new();
    for i in 0..40 {
        for (store, tag) in [(&one.store, "one"), (&two.store, "two")] {
            let ip = store
                .allocate(&pool, NET, &owner(&format!("{tag}{i}")))
                .unwrap();
            assert!(got.insert(ip), "{ip} twice");
        }
    }
    let bigger = BlockStore::open(
        &EtcdConfig {
            block_size: 32,
            ..config.clone()
        },
        one._dir.path(),
        Some("node-a".into()),
    )
    .unwrap();
    let err = bigger.allocate(&pool, NET, &owner("big")).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BlockSize {
                theirs: 16,
                ours: 32,
                ..
            }
        ),
        "{err}"
    );
}
