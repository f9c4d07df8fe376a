//! Attach and detach: each chain of ours next to its reference counterpart, sequentially
//! (each call timed on its own) and 16 workers at a time (pods per second), plus the kernel
//! floor of the same link work done by `ip`.
//!
//! Sequential: a fresh node and N fresh pods per chain; ADD for all N, then DEL for all N.
//! Two ways to call: through the libcni client (what a runtime pays, Go start-up included)
//! and by direct exec of the chain (what the plugins themselves cost).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use netns_tests::{new_pod, Netns, Op};
use serde_json::Value;

use crate::bed::{Bed, Chain};
use crate::quantile_ms;

pub const PAIRS: [(Chain, Chain); 2] = [
    (Chain::OursIpam, Chain::ReferenceIpam),
    (Chain::OursFull, Chain::ReferenceFull),
];

#[derive(Clone, Copy)]
enum Via {
    Libcni,
    Exec,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Libcni => "libcni",
            Via::Exec => "exec",
        }
    }
}

/// Median and p95 of ADD and DEL, in milliseconds.
pub struct Figures {
    pub add: (f64, f64),
    pub del: (f64, f64),
}

/// The sequential table, the kernel floor, and the parallel table; `n` pods per
/// sequential run, `parallel_pods` spread over `workers` for the parallel one.
pub fn run(n: usize, workers: usize, parallel_pods: usize) {
    println!("| chain | via | ADD median ms | ADD p95 ms | DEL median ms | DEL p95 ms |");
    println!("|---|---|---|---|---|---|");
    let mut ours_del_exec = None;
    for via in [Via::Libcni, Via::Exec] {
        for (ours, reference) in PAIRS {
            let a = sequential(ours, via, n);
            let b = sequential(reference, via, n);
            row(ours.label(), via.name(), &a);
            row(reference.label(), via.name(), &b);
            println!(
                "| **ratio ours / reference** | {} | **{:.2}** | | **{:.2}** | |",
                via.name(),
                a.add.0 / b.add.0,
                a.del.0 / b.del.0
            );
            if matches!((via, ours), (Via::Exec, Chain::OursIpam)) {
                ours_del_exec = Some(a.del.0);
            }
        }
    }
    let floor = kernel_floor(n);
    row("kernel floor: `ip` doing the same link work", "ip", &floor);
    if let Some(del) = ours_del_exec {
        println!(
            "| **ratio ours (macvlan + spiderpool, exec) / floor** | | | | **{:.2}** | |",
            del / floor.del.0
        );
    }
    println!(
        "\nN = {n} pods per chain, sequential: all ADDs, then all DELs. The floor is two `ip` \
         processes per ADD (create the macvlan in the pod from the node; address and up in one \
         `ip -batch` inside the pod) and one per DEL, so it includes their start-up."
    );

    println!("\n| chain | workers | pods | ADD pods/s | DEL pods/s |");
    println!("|---|---|---|---|---|");
    let mut rates = Vec::new();
    for chain in [Chain::OursFull, Chain::ReferenceFull] {
        let (add, del) = parallel(chain, workers, parallel_pods);
        println!(
            "| {} | {workers} | {parallel_pods} | {add:.0} | {del:.0} |",
            chain.label()
        );
        rates.push((add, del));
    }
    println!(
        "| **ratio ours / reference** | | | **{:.2}** | **{:.2}** |",
        rates[0].0 / rates[1].0,
        rates[0].1 / rates[1].1
    );
    println!("\nParallel runs call the chains by direct exec.");
}

fn sequential(chain: Chain, via: Via, n: usize) -> Figures {
    let bed = Bed::new(chain);
    let pods: Vec<Netns> = (0..n).map(|_| new_pod()).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let mut added: Vec<Option<Value>> = vec![None; n];
    let mut add = Vec::with_capacity(n);
    for (i, pod) in pods.iter().enumerate() {
        let started = Instant::now();
        match via {
            Via::Libcni => bed.libcni(Op::Add, &bed.call(pod, &ids[i])),
            Via::Exec => added[i] = bed.exec(Op::Add, pod, &ids[i], None),
        }
        add.push(started.elapsed());
    }
    let mut del = Vec::with_capacity(n);
    for (i, pod) in pods.iter().enumerate() {
        let started = Instant::now();
        match via {
            Via::Libcni => bed.libcni(Op::Del, &bed.call(pod, &ids[i])),
            Via::Exec => {
                bed.exec(Op::Del, pod, &ids[i], added[i].as_ref());
            }
        }
        del.push(started.elapsed());
    }
    Figures {
        add: median_p95(add),
        del: median_p95(del),
    }
}

/// `workers` threads attach `pods` pods, then detach them; pods per second of each phase.
fn parallel(chain: Chain, workers: usize, pods: usize) -> (f64, f64) {
    let bed = Bed::new(chain);
    let netns: Vec<Netns> = (0..pods).map(|_| new_pod()).collect();
    let ids: Vec<String> = (0..pods).map(|i| format!("par-{i}")).collect();
    let results: Vec<std::sync::Mutex<Option<Value>>> =
        (0..pods).map(|_| std::sync::Mutex::new(None)).collect();
    let phase = |op: Op| -> f64 {
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pods {
                        break;
                    }
                    let mut slot = results[i].lock().expect("result slot");
                    let added = bed.exec(op, &netns[i], &ids[i], slot.as_ref());
                    if matches!(op, Op::Add) {
                        *slot = added;
                    }
                });
            }
        });
        pods as f64 / started.elapsed().as_secs_f64()
    };
    let add = phase(Op::Add);
    let del = phase(Op::Del);
    (add, del)
}

/// The same link work by `ip`: create the macvlan inside the pod from the node, then address
/// it and bring it up in one batch inside the pod; delete it.
fn kernel_floor(n: usize) -> Figures {
    let bed = Bed::new(Chain::ReferenceIpam);
    let node = bed.node();
    let pods: Vec<Netns> = (0..n).map(|_| new_pod()).collect();
    let mut add = Vec::with_capacity(n);
    for (i, pod) in pods.iter().enumerate() {
        let batch = format!(
            "addr add 172.16.{}.{}/16 dev net1\nlink set net1 up\n",
            11 + i / 250,
            1 + i % 250
        );
        let started = Instant::now();
        ip(
            &[
                "-n",
                node.name(),
                "link",
                "add",
                "net1",
                "link",
                "enp11s0f0np0",
                "netns",
                pod.name(),
                "type",
                "macvlan",
                "mode",
                "bridge",
            ],
            None,
        );
        ip(&["-n", pod.name(), "-batch", "-"], Some(&batch));
        add.push(started.elapsed());
    }
    let mut del = Vec::with_capacity(n);
    for pod in &pods {
        let started = Instant::now();
        ip(&["-n", pod.name(), "link", "del", "net1"], None);
        del.push(started.elapsed());
    }
    Figures {
        add: median_p95(add),
        del: median_p95(del),
    }
}

fn ip(args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("ip runs");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .expect("ip stdin");
    }
    assert!(child.wait().expect("ip").success(), "ip {args:?} failed");
}

fn median_p95(mut samples: Vec<Duration>) -> (f64, f64) {
    (
        quantile_ms(&mut samples, 0.5),
        quantile_ms(&mut samples, 0.95),
    )
}

fn row(label: &str, via: &str, f: &Figures) {
    println!(
        "| {label} | {via} | {:.2} | {:.2} | {:.2} | {:.2} |",
        f.add.0, f.add.1, f.del.0, f.del.1
    );
}
