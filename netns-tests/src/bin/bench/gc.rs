//! The cost of one `spiderctl agent --once` pass (install check, GC) over a file store holding
//! N allocations: all live (the steady state: every netns is PID 1's, which exists), or all
//! leaked, where the first pass judges every one and counts its miss (the state file lists all
//! N) and the second releases them all. Wall time and peak RSS from GNU time, which
//! forks the agent from its own small process (see `rss.rs` for why not from the bench).

use std::process::Command;

use netns_tests::agent::{allocate_many, big_pool_yaml, pool_from_yaml, HostTree};
use netns_tests::plugins::our_binary;

/// `(wall s, peak RSS KiB)` of one pass.
fn pass(host: &HostTree) -> (f64, u64) {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(our_binary("spiderctl"))
        .args(host.agent_args(false))
        .arg("--once")
        .output()
        .expect("GNU time (Debian's time package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent --once failed: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let mut fields = last.split_whitespace();
    let wall = fields.next().and_then(|f| f.parse().ok());
    let rss = fields.next().and_then(|f| f.parse().ok());
    match (wall, rss) {
        (Some(wall), Some(rss)) => (wall, rss),
        _ => panic!("no `%e %M` line from GNU time: {stderr}"),
    }
}

pub fn run(sizes: &[usize]) {
    println!("| allocations | pass | wall s | peak RSS MiB |");
    println!("|---|---|---|---|");
    let gone = format!("/run/netns/sptest-{}-bench-gone", std::process::id());
    let cases: [(&str, &str, &[&str]); 2] = [
        ("all live", "/proc/1/ns/net", &["judge all, nothing to do"]),
        (
            "all leaked",
            &gone,
            &["first: judge all, count a miss each", "second: release all"],
        ),
    ];
    for &n in sizes {
        for (state, netns, passes) in cases {
            let host = HostTree::new("bench-gc");
            let yaml = big_pool_yaml("gc-bench", n as u32);
            std::fs::create_dir_all(host.ippools()).expect("a dir in a temp dir");
            std::fs::write(host.ippools().join("gc-bench.yaml"), &yaml).expect("write the pool");
            // Installs the plugins before the allocations exist: the timed passes then only
            // compare them.
            pass(&host);
            allocate_many(&host.data(), &pool_from_yaml(&yaml), "bench", n, netns);
            for label in passes {
                let (wall, rss) = pass(&host);
                println!(
                    "| {n} {state} | {label} | {wall:.2} | {:.1} |",
                    rss as f64 / 1024.0
                );
            }
        }
    }
    println!(
        "\nOne `spiderctl agent --once` on the file store under GNU time, the default \
         `--gc-misses 2`; the install step finds the plugins unchanged."
    );
}
