//! The allocation curve: the IPAM plugin alone, called by direct exec with a new container
//! id each time, filling one pool. The median ADD per window of 100 allocations shows whether
//! an allocation costs more as the pool fills (the reference host-local scans its state).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use netns_tests::paths::temp_dir;
use netns_tests::plugins::{our_binary, REFERENCE_DIR};
use serde_json::{json, Value};

use crate::quantile_ms;

pub const WINDOW: usize = 100;

/// Median ADD time of each window of `WINDOW` consecutive allocations, in ms.
pub struct Curve {
    pub label: &'static str,
    pub windows: Vec<f64>,
}

impl Curve {
    pub fn first(&self) -> f64 {
        self.windows[0]
    }

    pub fn last(&self) -> f64 {
        *self.windows.last().expect("at least one window")
    }
}

/// Our spiderpool filling a /16 pool with `count` addresses.
pub fn ours(count: usize) -> Curve {
    let scratch = temp_dir("bench-alloc");
    let pools = scratch.path().join("pools");
    std::fs::create_dir(&pools).expect("pool dir");
    std::fs::write(
        pools.join("curve.yaml"),
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  name: curve\n\
         spec:\n  subnet: 10.100.0.0/16\n  ips:\n    - 10.100.0.1-10.100.255.254\n",
    )
    .expect("pool manifest");
    let ipam = json!({
        "type": "spiderpool", "default_ipv4_ippool": ["curve"],
        "ippool_dir": pools, "data_dir": scratch.path().join("data"),
    });
    fill("spiderpool (ours)", &our_binary("spiderpool"), ipam, count)
}

/// The reference host-local filling the same /16 with `count` addresses.
pub fn reference(count: usize) -> Curve {
    let scratch = temp_dir("bench-alloc-ref");
    let ipam = json!({
        "type": "host-local", "dataDir": scratch.path(),
        "ranges": [[{"subnet": "10.100.0.0/16", "gateway": Ipv4Addr::new(10, 100, 255, 254).to_string()}]],
    });
    fill(
        "host-local (reference)",
        &Path::new(REFERENCE_DIR).join("host-local"),
        ipam,
        count,
    )
}

fn fill(label: &'static str, binary: &Path, ipam: Value, count: usize) -> Curve {
    let conf = json!({"cniVersion": "1.0.0", "name": "curve", "type": "macvlan", "ipam": ipam})
        .to_string();
    let mut samples = Vec::with_capacity(count);
    for n in 0..count {
        let started = Instant::now();
        add(binary, &conf, n);
        samples.push(started.elapsed());
    }
    let windows = samples
        .chunks_mut(WINDOW)
        .map(|window| quantile_ms(window, 0.5))
        .collect();
    Curve { label, windows }
}

fn add(binary: &Path, conf: &str, n: usize) {
    let mut child = Command::new(binary)
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", format!("curve-{n}"))
        .env("CNI_NETNS", "/run/netns/bench-curve")
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", REFERENCE_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{} ADD #{n} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}
