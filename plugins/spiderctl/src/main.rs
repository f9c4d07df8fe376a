//! `spiderctl`: what operators run on a node to see and repair the spiderpool IPAM store, and
//! to turn spiderpool's SpiderIPPool / SpiderMultusConfig YAML into what the plugins read.

mod agent;
mod apply;
#[cfg(test)]
mod conf_tests;
mod doctor;
mod duration;
mod fsutil;
mod gc;
mod guard;
mod http_server;
mod inject;
mod manifests;
mod output;
mod render;
mod status;
mod store_args;
mod warnings;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use output::OutputArgs;
use store_args::StoreArgs;

// The plugins' defaults (`ippool_dir`, `data_dir`) and the CNI config dir of kubelet.
use ipam_store::defaults::{DEFAULT_CNI_CONF_DIR, DEFAULT_DATA_DIR, DEFAULT_IPPOOL_DIR};

/// `--version`: the crate version, and the commit and day it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SPIDERCTL_COMMIT"),
    ", built ",
    env!("SPIDERCTL_BUILD_DATE"),
    ")"
);

/// `gc --exit-code` when something was found; 1 stays "failed", 2 clap's usage errors.
const EXIT_FOUND: u8 = 3;

/// Operator CLI for the spiderpool IPAM plugin's pools and store.
#[derive(Parser)]
#[command(version = VERSION, about)]
struct Cli {
    /// Do not print warnings about pools (errors are always printed).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Commands,
}

/// What `render` prints.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The network configuration list, as `apply` writes it.
    Conflist,
    /// A Kubernetes NetworkAttachmentDefinition (k8s.cni.cncf.io/v1) holding it.
    Nad,
}

#[derive(Subcommand)]
enum Commands {
    /// Each pool's total / allocated / free addresses and who holds which address.
    Status {
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
        /// Directory of SpiderIPPool manifests (the plugin's `ippool_dir`; file store only).
        #[arg(long, env = "SPIDERCTL_IPPOOL_DIR", default_value = DEFAULT_IPPOOL_DIR)]
        ippool_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Finds this node's allocations whose network namespace no longer exists; releases them
    /// with --apply.
    Gc {
        /// Release what was found (default: only report it).
        #[arg(long)]
        apply: bool,
        /// Exit with 3 when a leaked allocation was found (released or not), 0 when none.
        #[arg(long)]
        exit_code: bool,
        /// Block mode: with --apply, return blocks that are empty and were leased longer ago
        /// than this (Go duration).
        #[arg(long, value_parser = duration::parse, default_value = "5m")]
        return_after: std::time::Duration,
        /// etcd: instead, take back the blocks and allocations of NODE, a node gone for good
        /// (with --apply; without, report them). Refused until NODE has not reached etcd for
        /// --dead-for, and for longer than its store.offline_s plus a margin for clocks.
        #[arg(long, value_name = "NODE")]
        dead_node: Option<String>,
        /// With --dead-node: the silence asked for, at least (Go duration; default: the
        /// node's store.offline_s plus the margin).
        #[arg(long, value_parser = duration::parse, requires = "dead_node")]
        dead_for: Option<std::time::Duration>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The node agent of the DaemonSet: installs the plugins, keeps the config dir applied,
    /// reclaims leaked allocations, serves metrics and health.
    Agent(agent::AgentArgs),
    /// Writes SpiderIPPools as pool files (<ippool-dir>/<name>.yaml), or into etcd with
    /// --store etcd, and SpiderMultusConfigs as conflists (<cni-conf-dir>/90-<name>.conflist)
    /// that use that store. Validates everything first; what would not change is left alone.
    Apply {
        /// Manifest files (YAML, any number of documents, or JSON); a directory means its
        /// *.yaml, *.yml and *.json files.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Where the conflists go.
        #[arg(long, env = "SPIDERCTL_CNI_CONF_DIR", default_value = DEFAULT_CNI_CONF_DIR)]
        cni_conf_dir: PathBuf,
        /// Where the pool files go; a non-default dir is written into the conflists.
        #[arg(long, env = "SPIDERCTL_IPPOOL_DIR", default_value = DEFAULT_IPPOOL_DIR)]
        ippool_dir: PathBuf,
        /// This node's labels file for `nodeAffinity` pools, written into the conflists
        /// when not the plugin's default (/etc/cni/net.d/spiderpool/node-labels.json).
        #[arg(long, env = "SPIDERCTL_NODE_LABELS_FILE")]
        node_labels_file: Option<PathBuf>,
        /// The conflists name this store (a non-default data dir, or etcd).
        #[command(flatten)]
        store: StoreArgs,
        /// Apply a pool change even though it leaves held addresses outside their pool (they
        /// stay held, are never handed out again, and are released by their DEL).
        #[arg(long)]
        force: bool,
    },
    /// Prints what the SpiderMultusConfigs render to.
    Render {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "conflist")]
        format: Format,
        /// As for apply: a non-default dir is written into the IPAM section.
        #[arg(long, env = "SPIDERCTL_IPPOOL_DIR", default_value = DEFAULT_IPPOOL_DIR)]
        ippool_dir: PathBuf,
        /// This node's labels file for `nodeAffinity` pools, written into the conflists
        /// when not the plugin's default (/etc/cni/net.d/spiderpool/node-labels.json).
        #[arg(long, env = "SPIDERCTL_NODE_LABELS_FILE")]
        node_labels_file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Does what spiderpool's webhook does: writes the networks annotation and the RDMA
    /// resource limits of the SpiderMultusConfigs whose inject group the workload names.
    Inject {
        /// Files with the SpiderMultusConfigs to choose from.
        #[arg(long, required = true, num_args = 1..)]
        networks: Vec<PathBuf>,
        /// The workload manifest (Pod, Deployment, DaemonSet, StatefulSet, Job).
        #[arg(short = 'f', long = "filename")]
        workload: PathBuf,
        /// Write the result to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        output_file: Option<PathBuf>,
    },
    /// Serves inject as a Kubernetes mutating admission webhook: AdmissionReview v1 over
    /// HTTPS (POST, any path), answered with a JSONPatch. Prints the bound address on stdout.
    Webhook {
        /// Files with the SpiderMultusConfigs to choose from (read once, at start).
        #[arg(long, required = true, num_args = 1..)]
        networks: Vec<PathBuf>,
        /// PEM certificate (chain) the API server trusts through the webhook's caBundle.
        #[arg(long)]
        tls_cert: PathBuf,
        /// PEM private key of the certificate.
        #[arg(long)]
        tls_key: PathBuf,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: std::net::SocketAddr,
        /// Inject only in these namespaces (comma-separated; default: all).
        #[arg(long, value_delimiter = ',')]
        namespaces_include: Vec<String>,
        /// Never inject in these namespaces (comma-separated); wins over --namespaces-include.
        #[arg(long, value_delimiter = ',')]
        namespaces_exclude: Vec<String>,
    },
    /// Checks masters, MTUs, pools and RDMA resources on this node (in this network
    /// namespace); exits non-zero when anything would keep a pod from attaching.
    Doctor {
        #[arg(long, env = "SPIDERCTL_CNI_CONF_DIR", default_value = DEFAULT_CNI_CONF_DIR)]
        cni_conf_dir: PathBuf,
        /// Pools of networks that do not name their own ippool_dir.
        #[arg(long, env = "SPIDERCTL_IPPOOL_DIR", default_value = DEFAULT_IPPOOL_DIR)]
        ippool_dir: PathBuf,
        /// The k8s-rdma-shared-dev-plugin config.json (or its ConfigMap).
        #[arg(long)]
        rdma_config: Option<PathBuf>,
        /// The network (conflist `name`) that must sort first in the conf dir, where runtimes
        /// that take one file find the pod network; without it, doctor warns when the first
        /// file is one of ours or a runtime's default.
        #[arg(long)]
        cluster_network: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Prints a completion script for the shell, e.g. `spiderctl completion bash >
    /// /etc/bash_completion.d/spiderctl`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    warnings::set_quiet(cli.quiet);
    let outcome = match cli.command {
        Commands::Status {
            pool,
            ippool_dir,
            store,
            output,
        } => status::run(&ippool_dir, &store, pool.as_deref(), &output),
        Commands::Gc {
            apply,
            dead_node: Some(node),
            dead_for,
            store,
            ..
        } => gc::dead_node(&store, &node, dead_for, apply),
        Commands::Gc {
            apply,
            exit_code,
            return_after,
            dead_node: None,
            store,
            output,
            ..
        } => match gc::run(&store, apply, return_after, &output) {
            Ok(true) if exit_code => return ExitCode::from(EXIT_FOUND),
            other => other.map(drop),
        },
        Commands::Agent(args) => agent::run(&args),
        Commands::Apply {
            files,
            cni_conf_dir,
            ippool_dir,
            node_labels_file,
            store,
            force,
        } => apply::run(
            &files,
            &cni_conf_dir,
            &ippool_dir,
            node_labels_file.as_deref(),
            &store,
            force,
        ),
        Commands::Render {
            files,
            format,
            ippool_dir,
            node_labels_file,
            store,
        } => render_cmd(
            &files,
            format,
            &ippool_dir,
            node_labels_file.as_deref(),
            &store,
        ),
        Commands::Inject {
            networks,
            workload,
            output_file,
        } => inject::run(&networks, &workload, output_file.as_deref()),
        Commands::Webhook {
            networks,
            tls_cert,
            tls_key,
            listen,
            namespaces_include,
            namespaces_exclude,
        } => webhook::run(
            &networks,
            &tls_cert,
            &tls_key,
            listen,
            namespaces_include,
            namespaces_exclude,
        ),
        Commands::Doctor {
            cni_conf_dir,
            ippool_dir,
            rdma_config,
            cluster_network,
            output,
        } => doctor::run(
            &cni_conf_dir,
            &ippool_dir,
            rdma_config.as_deref(),
            cluster_network.as_deref(),
            &output,
        ),
        Commands::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "spiderctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spiderctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every SpiderMultusConfig of `files`: conflists one after the other, NADs as one
/// multi-document YAML stream.
fn render_cmd(
    files: &[PathBuf],
    format: Format,
    ippool_dir: &std::path::Path,
    node_labels_file: Option<&std::path::Path>,
    store: &StoreArgs,
) -> Result<(), String> {
    let docs = manifests::read(files).map_err(|e| e.to_string())?;
    let configs = manifests::multus_configs(&docs).map_err(|e| e.to_string())?;
    if configs.is_empty() {
        return Err("no SpiderMultusConfig in the given files: nothing to render".into());
    }
    let placement = apply::placement(ippool_dir, node_labels_file, store)?;
    let rendered: Vec<String> = configs
        .iter()
        .map(|c| match format {
            Format::Conflist => render::conflist(c, &placement),
            Format::Nad => render::nad(c, &placement),
        })
        .collect();
    let separator = match format {
        Format::Conflist => "",
        Format::Nad => "---\n",
    };
    print!("{}", rendered.join(separator));
    Ok(())
}
