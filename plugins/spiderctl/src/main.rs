//! `spiderctl`: what operators run on a node to see and repair the spiderpool IPAM store.

mod gc;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operator CLI for the spiderpool IPAM plugin's pools and store.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

/// Where the plugin keeps its pools and its state; the defaults are the plugin's.
#[derive(clap::Args)]
struct Dirs {
    /// Directory of SpiderIPPool manifests (the plugin's `ippool_dir`).
    #[arg(long, default_value = "/etc/cni/net.d/spiderpool/ippools")]
    ippool_dir: PathBuf,
    /// The store (the plugin's `data_dir`).
    #[arg(long, default_value = "/var/lib/cni/spiderpool")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Commands {
    /// Each pool's total / allocated / free addresses and who holds which address.
    Status {
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Finds allocations whose network namespace no longer exists; releases them with --apply.
    Gc {
        /// Release what was found (default: only report it).
        #[arg(long)]
        apply: bool,
        /// The store (the plugin's `data_dir`).
        #[arg(long, default_value = "/var/lib/cni/spiderpool")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Commands::Status { pool, dirs } => {
            status::run(&dirs.ippool_dir, &dirs.data_dir, pool.as_deref())
        }
        Commands::Gc { apply, data_dir } => gc::run(&data_dir, apply),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spiderctl: {e}");
            ExitCode::FAILURE
        }
    }
}
