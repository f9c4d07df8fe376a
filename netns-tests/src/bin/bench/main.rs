//! `scripts/bench`: our plugins next to the reference ones (Debian's
//! containernetworking-plugins), in one run, on one machine. Prints markdown and writes the
//! allocation curve as SVG.
//!
//! `bench [--pods N] [--workers N] [--parallel-pods N] [--fill-ours N] [--fill-reference N]
//!        [--svg PATH]`

mod alloc;
mod attach;
mod bed;
mod footprint;
mod plot;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

struct Options {
    pods: usize,
    workers: usize,
    parallel_pods: usize,
    fill_ours: usize,
    fill_reference: usize,
    svg: PathBuf,
}

const USAGE: &str = "usage: bench [--pods N] [--workers N] [--parallel-pods N] [--fill-ours N] \
                     [--fill-reference N] [--svg PATH]";

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!("## Attach and detach\n");
    attach::run(options.pods, options.workers, options.parallel_pods);

    println!("\n## Size and memory\n");
    footprint::run();

    println!("\n## Allocation cost as the pool fills (IPAM alone, direct exec)\n");
    let curves = [
        alloc::ours(options.fill_ours),
        alloc::reference(options.fill_reference),
    ];
    println!("| IPAM | allocations | first 100: median ms | at 2,000: median ms | last 100: median ms | last / first |");
    println!("|---|---|---|---|---|---|");
    for curve in &curves {
        let at_2000 = curve
            .windows
            .get(2_000 / alloc::WINDOW)
            .map_or("-".to_owned(), |ms| format!("{ms:.2}"));
        println!(
            "| {} | {} | {:.2} | {at_2000} | {:.2} | {:.2} |",
            curve.label,
            curve.windows.len() * alloc::WINDOW,
            curve.first(),
            curve.last(),
            curve.last() / curve.first()
        );
    }
    if let Err(e) = std::fs::write(&options.svg, plot::svg(&curves)) {
        eprintln!("bench: cannot write {}: {e}", options.svg.display());
        return ExitCode::FAILURE;
    }
    println!("\n![allocation curve]({})", options.svg.display());
    ExitCode::SUCCESS
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        pods: 200,
        workers: 16,
        parallel_pods: 400,
        fill_ours: 65_000,
        fill_reference: 5_000,
        svg: PathBuf::from("bench/alloc-curve.svg"),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        if flag == "--svg" {
            options.svg = value.into();
            continue;
        }
        let n: usize = value
            .parse()
            .map_err(|_| format!("{flag} {value}: not a number"))?;
        let slot = match flag.as_str() {
            "--pods" => &mut options.pods,
            "--workers" => &mut options.workers,
            "--parallel-pods" => &mut options.parallel_pods,
            "--fill-ours" => &mut options.fill_ours,
            "--fill-reference" => &mut options.fill_reference,
            _ => return Err(format!("unknown option {flag}")),
        };
        *slot = n;
    }
    if options.fill_ours < alloc::WINDOW || options.fill_reference < alloc::WINDOW {
        return Err(format!("fills need at least {} allocations", alloc::WINDOW));
    }
    if options.pods == 0 || options.workers == 0 || options.parallel_pods == 0 {
        return Err("--pods, --workers and --parallel-pods must be at least 1".into());
    }
    Ok(options)
}

/// The `q` quantile of `samples` (sorted in place), in milliseconds.
fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i].as_secs_f64() * 1e3
}
