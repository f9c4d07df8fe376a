//! Binary size and peak RSS of each plugin, ours next to the reference ones.

use std::fs;
use std::path::{Path, PathBuf};

use netns_tests::plugins::{our_binary, REFERENCE_DIR};
use netns_tests::{new_pod, Op};

use crate::bed::{Bed, Chain};

/// Prints the table: each plugin of the full chains, with its size and the peak RSS of its
/// ADD (macvlan's includes the IPAM it runs: the kernel reports the larger).
pub fn run() {
    println!("| plugin | ours: size KiB | ours: peak RSS KiB | reference: size KiB | reference: peak RSS KiB | RSS ours / reference |");
    println!("|---|---|---|---|---|---|");
    let ours = peaks(Chain::OursFull);
    let reference = peaks(Chain::ReferenceFull);
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
    println!("\nThe IPAM row is the IPAM plugin run alone; the others as the chain runs them.");
}

/// Peak RSS of the chain's main plugin, of its IPAM run alone, and of its chained plugin.
fn peaks(chain: Chain) -> [u64; 3] {
    let bed = Bed::new(chain);
    let pod = new_pod();
    let (added, chain_rss) = bed.exec_measured(Op::Add, &pod, "footprint", None);
    bed.exec(Op::Del, &pod, "footprint", added.as_ref());
    let alone = bed.ipam_alone("footprint-ipam", &pod);
    [chain_rss[0].1, alone, chain_rss[1].1]
}

fn size_kib(path: &PathBuf) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
        / 1024
}
