//! `scripts/bench`: our plugins next to the reference ones (Debian's
//! containernetworking-plugins), in one run, on one machine. Prints markdown.
//!
//! `bench [--pods N] [--fill-ours N] [--fill-reference N]`

mod alloc;
mod attach;

use std::process::ExitCode;
use std::time::Duration;

struct Options {
    pods: usize,
    fill_ours: usize,
    fill_reference: usize,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("bench: {e}\nusage: bench [--pods N] [--fill-ours N] [--fill-reference N]");
            return ExitCode::from(2);
        }
    };
    println!("## Attach and detach\n");
    attach::run(options.pods);
    println!("\n## Allocation cost as the pool fills (IPAM alone, direct exec)\n");
    let curves = [
        alloc::ours(options.fill_ours),
        alloc::reference(options.fill_reference),
    ];
    println!("| IPAM | allocations | first 100: median ms | last 100: median ms | last / first |");
    println!("|---|---|---|---|---|");
    for curve in &curves {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} |",
            curve.label,
            curve.windows.len() * alloc::WINDOW,
            curve.first(),
            curve.last(),
            curve.last() / curve.first()
        );
    }
    ExitCode::SUCCESS
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        pods: 200,
        fill_ours: 65_000,
        fill_reference: 2_100,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|_| format!("{flag} {value}: not a number"))?;
        if n < alloc::WINDOW {
            return Err(format!("{flag} {n}: at least {} needed", alloc::WINDOW));
        }
        match flag.as_str() {
            "--pods" => options.pods = n,
            "--fill-ours" => options.fill_ours = n,
            "--fill-reference" => options.fill_reference = n,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

/// The `q` quantile of `samples` (sorted in place), in milliseconds.
fn quantile_ms(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i].as_secs_f64() * 1e3
}
