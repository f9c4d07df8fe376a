//! `scripts/bench`: our plugins next to the reference ones (Debian's
//! containernetworking-plugins), in one run, on one machine. Prints markdown and writes the
//! allocation curve as SVG.
//!
//! `bench [--pods N] [--workers N] [--parallel-pods N] [--pod8-pods N] [--fill-ours N]
//!        [--fill-reference N] [--every-ours N] [--every-reference N] [--gc-sizes N,N]
//!        [--svg PATH] [--only SECTION]`
//!
//! `--only SECTION` runs one section alone (attach, pod8, pool-files, stores, footprint, gc,
//! alloc).
//!
//! How long each section took goes to stderr; with BENCH_VERBOSE set, also each timed window
//! and fill of the allocation curve.

mod alloc;
mod attach;
mod bed;
mod footprint;
mod gc;
mod plot;
mod pod8;
mod pool_files;
mod rss;
mod stores;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Options {
    pods: usize,
    workers: usize,
    parallel_pods: usize,
    pod8_pods: usize,
    fill_ours: usize,
    fill_reference: usize,
    every_ours: usize,
    every_reference: usize,
    gc_sizes: Vec<usize>,
    svg: PathBuf,
    /// Only this section (one of [`SECTIONS`]); all when absent.
    only: Option<String>,
}

const USAGE: &str = "usage: bench [--pods N] [--workers N] [--parallel-pods N] [--pod8-pods N] \
                     [--fill-ours N] [--fill-reference N] [--every-ours N] [--every-reference N] \
                     [--gc-sizes N,N] [--svg PATH] \
                     [--only attach|pod8|pool-files|stores|footprint|gc|alloc]";

const SECTIONS: [&str; 7] = [
    "attach",
    "pod8",
    "pool-files",
    "stores",
    "footprint",
    "gc",
    "alloc",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(rss::HELPER_FLAG) {
        return rss::helper(&args[1..]);
    }
    let options = match parse(args.into_iter()) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let wanted = |name: &str| options.only.as_deref().is_none_or(|only| only == name);
    if wanted("attach") {
        let _section = Section::start("attach and detach");
        println!("## Attach and detach\n");
        attach::run(options.pods, options.workers, options.parallel_pods);
    }
    if wanted("pod8") {
        let _section = Section::start("8-NIC pod");
        println!("\n## The seed's 8-NIC pod\n");
        pod8::run(options.pod8_pods);
    }
    if wanted("pool-files") {
        let _section = Section::start("pool files");
        println!("\n## Many pool files (a rail plan's per-node pools)\n");
        pool_files::run(&[1, 1_000, 8_000]);
    }
    if wanted("stores") {
        let _section = Section::start("stores");
        println!("\n## The stores side by side (IPAM alone, direct exec)\n");
        stores::run();
    }
    if wanted("footprint") {
        let _section = Section::start("size and memory");
        println!("\n## Size and memory\n");
        footprint::run();
    }
    if wanted("gc") {
        let _section = Section::start("agent GC pass");
        println!("\n## One agent GC pass\n");
        gc::run(&options.gc_sizes);
    }
    if !wanted("alloc") {
        return ExitCode::SUCCESS;
    }
    println!("\n## Allocation cost as the pool fills (IPAM alone, direct exec)\n");
    let ours = {
        let _section = Section::start("allocation curve: ours");
        alloc::ours(options.fill_ours, options.every_ours)
    };
    let reference = {
        let _section = Section::start("allocation curve: reference");
        alloc::reference(options.fill_reference, options.every_reference)
    };
    let curves = [ours, reference];
    println!("| IPAM | allocations | first 100: median ms | at 2,000: median ms | last 100: median ms | last / first |");
    println!("|---|---|---|---|---|---|");
    for curve in &curves {
        let at_2000 = curve
            .at(2_000)
            .map_or("-".to_owned(), |ms| format!("{ms:.2}"));
        println!(
            "| {} | {} | {:.2} | {at_2000} | {:.2} | {:.2} |",
            curve.label,
            curve.count,
            curve.first(),
            curve.last(),
            curve.last() / curve.first()
        );
    }
    println!(
        "\nEach median is over a window of {w} ADDs in a row, each a new container id and the \
         plugin exec'd, timed at fill 0, then every {} (ours) and {} (reference) allocations, \
         and the last {w}. Between windows the pool is filled, untimed, to the state the plugin \
         would have left, then one `syncfs` makes it durable:",
        options.every_ours,
        options.every_reference,
        w = alloc::WINDOW
    );
    for curve in &curves {
        println!("- {}: {}.", curve.label, curve.filled_by);
    }
    println!(
        "\nControl, the first window again on a fresh pool after the curve (a large change from \
         the first window means the machine's load changed during the run): {}.",
        curves
            .iter()
            .map(|c| format!("{} {:.2} ms (first {:.2})", c.label, c.control, c.first()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Err(e) = std::fs::write(&options.svg, plot::svg(&curves)) {
        eprintln!("bench: cannot write {}: {e}", options.svg.display());
        return ExitCode::FAILURE;
    }
    println!("\n![allocation curve]({})", options.svg.display());
    eprintln!(
        "bench: all sections: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// Reports on stderr how long a section of the run took, when it ends (is dropped).
struct Section {
    name: &'static str,
    started: Instant,
}

impl Section {
    fn start(name: &'static str) -> Section {
        Section {
            name,
            started: Instant::now(),
        }
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        eprintln!(
            "bench: {}: {:.1} s",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        pods: 200,
        workers: 16,
        parallel_pods: 400,
        pod8_pods: 30,
        fill_ours: 65_000,
        fill_reference: 5_000,
        every_ours: 1_000,
        every_reference: 1_000,
        gc_sizes: vec![10_000, 65_000],
        svg: PathBuf::from("bench/alloc-curve.svg"),
        only: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        if flag == "--svg" {
            options.svg = value.into();
            continue;
        }
        if flag == "--only" {
            options.only = Some(value);
            continue;
        }
        if flag == "--gc-sizes" {
            options.gc_sizes = value
                .split(',')
                .map(|n| n.parse().ok().filter(|&n| n > 0))
                .collect::<Option<_>>()
                .ok_or(format!(
                    "--gc-sizes {value}: not a list of positive numbers"
                ))?;
            continue;
        }
        let n: usize = value
            .parse()
            .map_err(|_| format!("{flag} {value}: not a number"))?;
        let slot = match flag.as_str() {
            "--pods" => &mut options.pods,
            "--workers" => &mut options.workers,
            "--parallel-pods" => &mut options.parallel_pods,
            "--pod8-pods" => &mut options.pod8_pods,
            "--fill-ours" => &mut options.fill_ours,
            "--fill-reference" => &mut options.fill_reference,
            "--every-ours" => &mut options.every_ours,
            "--every-reference" => &mut options.every_reference,
            _ => return Err(format!("unknown option {flag}")),
        };
        *slot = n;
    }
    if let Some(only) = options.only.as_deref().filter(|o| !SECTIONS.contains(o)) {
        return Err(format!(
            "--only {only}: not a section ({})",
            SECTIONS.join(", ")
        ));
    }
    if options.fill_ours < alloc::WINDOW || options.fill_reference < alloc::WINDOW {
        return Err(format!("fills need at least {} allocations", alloc::WINDOW));
    }
    if options.every_ours < alloc::WINDOW || options.every_reference < alloc::WINDOW {
        return Err(format!(
            "--every-ours and --every-reference must be at least {} (a window)",
            alloc::WINDOW
        ));
    }
    if options.pods == 0
        || options.workers == 0
        || options.parallel_pods == 0
        || options.pod8_pods == 0
    {
        return Err("--pods, --workers, --parallel-pods and --pod8-pods must be at least 1".into());
    }
    Ok(options)
}

/// The `q` quantile of `samples` (sorted in place), in milliseconds.
fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i].as_secs_f64() * 1e3
}
