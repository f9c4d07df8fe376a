//! Binary size and peak RSS of each plugin, ours next to the reference ones. Every plugin is
//! started the same way, through the RSS helper (`rss.rs`), so the figure is its own.

use std::fs;
use std::path::{Path, PathBuf};

use netns_tests::plugins::{our_binary, REFERENCE_DIR};
use netns_tests::{new_pod, Op};

use crate::bed::{Bed, Chain};
use crate::rss;

/// Prints the table: each plugin of the full chains, with its size and the peak RSS of its
/// ADD (macvlan's includes the IPAM it runs: the kernel reports the larger).
pub fn run() {
    println!("| plugin | ours: size KiB | ours: peak RSS KiB | reference: size KiB | reference: peak RSS KiB | RSS ours / reference |");
    println!("|---|---|---|---|---|---|");
    let (ours, floor) = peaks(Chain::OursFull);
    let (reference, _) = peaks(Chain::ReferenceFull);
    // Same roles, in chain order: the main plugin, the IPAM alone, the chained plugin.
    let roles = [
        ("macvlan", "macvlan"),
        ("spiderpool", "host-local"),
        ("coordinator", "sbr"),
    ];
    for (i, (ours_name, reference_name)) in roles.into_iter().enumerate() {
        let (ours_rss, reference_rss) = (ours[i], reference[i]);
        println!(
            "| {ours_name} / {reference_name} | {} | {ours_rss} | {} | {reference_rss} | {:.2} |",
            size_kib(&our_binary(ours_name)),
            size_kib(&Path::new(REFERENCE_DIR).join(reference_name)),
            ours_rss as f64 / reference_rss as f64
        );
    }
    println!(
        "\nThe IPAM row is the IPAM plugin run alone; the others as the chain runs them (the \
         macvlan row is the larger of macvlan and the IPAM it runs). Peak RSS is `ru_maxrss` \
         from `wait4`, each plugin started by a small helper that joins the node's netns and \
         forks it, the same way for ours and the reference. The helper's own memory that the \
         fork copies into the count is {} KiB; `/bin/true` measures {} KiB that way.",
        floor.0, floor.1
    );
}

/// Runs per plugin; the median is reported (a Go plugin's peak varies with its threads).
const RUNS: usize = 5;

/// Peak RSS of the chain's main plugin, of its IPAM run alone, and of its chained plugin (the
/// median of [`RUNS`]); and of `/bin/true` started the same way.
fn peaks(chain: Chain) -> ([u64; 3], (u64, u64)) {
    let bed = Bed::new(chain);
    let pod = new_pod();
    let mut runs: [Vec<u64>; 3] = Default::default();
    for _ in 0..RUNS {
        let (added, chain_rss) = bed.exec_measured(Op::Add, &pod, "footprint", None);
        bed.exec(Op::Del, &pod, "footprint", added.as_ref());
        runs[0].push(chain_rss[0].1);
        runs[1].push(bed.ipam_alone("footprint-ipam", &pod));
        runs[2].push(chain_rss[1].1);
    }
    let floor = rss::floor_kib(&bed.node().path());
    (
        runs.map(|mut r| {
            r.sort_unstable();
            r[r.len() / 2]
        }),
        floor,
    )
}

fn size_kib(path: &PathBuf) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
        / 1024
}
