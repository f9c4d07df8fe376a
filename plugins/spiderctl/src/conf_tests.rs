//! The files under `conf/` are what the code produces now: the rendered conflists and NADs of
//! `conf/seed`, the injected workload, and a device plugin config that offers every seed
//! network's RDMA resource on its master. `SPIDERCTL_BLESS=1` rewrites the rendered files
//! after an intended change.

use std::fs;
use std::path::{Path, PathBuf};

use crate::doctor::RdmaConfig;
use crate::manifests::{self, Document, RawMultusConfig};
use crate::{inject, render};

fn conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf")
}

fn seed_configs() -> Vec<manifests::MultusConfig> {
    let docs = manifests::read(&[conf().join("seed")]).unwrap();
    manifests::multus_configs(&docs).unwrap()
}

/// Compares `file` under conf/rendered with `want`, or rewrites it when blessing.
fn check(file: &str, want: &str) {
    let path = conf().join("rendered").join(file);
    if std::env::var_os("SPIDERCTL_BLESS").is_some() {
        fs::write(&path, want).unwrap();
        return;
    }
    let got = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got == want,
        "conf/rendered/{file} is stale: rerun with SPIDERCTL_BLESS=1 (cargo test -p spiderctl \
         conf_tests) if the change is intended\n--- file\n{got}\n--- now\n{want}"
    );
}

#[test]
fn rendered_conflists_and_nads_match_the_seed() {
    let configs = seed_configs();
    assert_eq!(configs.len(), 8);
    let paths = render::Placement::default();
    let mut names: Vec<String> = Vec::new();
    for config in &configs {
        let name = render::file_name(config);
        check(&name, &render::conflist(config, &paths));
        names.push(name);
    }
    let mut on_disk: Vec<String> = fs::read_dir(conf().join("rendered"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conflist"))
        .collect();
    on_disk.sort();
    names.sort();
    assert_eq!(on_disk, names, "no stale conflist in conf/rendered");
    let nads: Vec<String> = configs.iter().map(|c| render::nad(c, &paths)).collect();
    check("network-attachment-definitions.yaml", &nads.join("---\n"));
}

#[test]
fn the_injected_workload_matches() {
    let raw: Vec<RawMultusConfig> = manifests::read(&[conf().join("seed")])
        .unwrap()
        .into_iter()
        .filter_map(|d| match d {
            Document::MultusConfig(raw) => Some(raw),
            _ => None,
        })
        .collect();
    let text = fs::read_to_string(conf().join("workload/rdma-tools.yaml")).unwrap();
    let workload: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    let injected = inject::inject(&workload, &raw).unwrap();
    check(
        "rdma-tools.yaml",
        &yaml_serde::to_string(&injected).unwrap(),
    );
}

#[test]
fn the_device_plugin_config_offers_each_seed_resource_on_its_master() {
    let rdma = RdmaConfig::load(&conf().join("rdma/config.json")).unwrap();
    for config in seed_configs() {
        let resource = config.rdma_resource_name.as_deref().unwrap();
        assert_eq!(
            rdma.if_names(resource),
            Some(&[config.master.clone()][..]),
            "{resource}"
        );
    }
}
