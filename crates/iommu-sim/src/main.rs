//! `iommu-sim`: runs iommu-rs scenarios, checks invariants as they run, and reports.
//!
//! `cargo run --release` runs the built-in scenario. Today that is the foundation layer's
//! scenario (the IOMMU core's object model under concurrent load, [`foundation`]); scenario
//! files, the emulated hardware and the benchmark suite arrive with the later layers.

use iommu_sim::foundation;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Run iommu-rs scenarios and check their invariants")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Measure each figure beside its floor, in one run (see BENCHMARKS.md).
    Bench {
        /// Fewer iterations (a smoke run; figures are noisier).
        #[arg(long)]
        quick: bool,
    },
    /// Validate scenario files (TOML; format in docs/scenarios.md) without running them.
    Check {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Run a scenario file (TOML; format in docs/scenarios.md), or the built-in scenario when
    /// no file is given (the default).
    Run {
        /// Scenario file; without it, the built-in foundation scenario runs.
        file: Option<std::path::PathBuf>,
        /// Write the report as JSON here (scenario files only).
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Write latency histograms as SVG here (scenario files only).
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
        /// Write a Chrome trace (JSON) of the jobs here (scenario files only).
        #[arg(long)]
        trace: Option<std::path::PathBuf>,
        /// Divide every job's length by this (scenario files only).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        scale: u64,
        /// Configuration rounds: attach, replace and detach on every tenant's PASID.
        #[arg(long, default_value_t = 2_000)]
        rounds: u64,
        /// Reader threads playing the fault path (typed attach-handle lookups).
        #[arg(long, default_value_t = 2)]
        readers: usize,
        /// Tenants (processes and VMMs), one PASID each.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
        tenants: u64,
    },
}

fn check(files: &[std::path::PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", f.display());
                failed = true;
                continue;
            }
        };
        match iommu_sim::scenario::Scenario::parse(&text) {
            Ok(s) => println!(
                "{}: ok: scenario '{}': {} IOMMUs, {} devices, {} processes, {} bonds, {} owners, {} jobs, {} events",
                f.display(),
                s.name,
                s.iommus.len(),
                s.devices.len(),
                s.processes.len(),
                s.bonds.len(),
                s.owners.len(),
                s.jobs.len(),
                s.events.len()
            ),
            Err(e) => {
                eprintln!("{}:{e}", f.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_file(
    file: &std::path::Path,
    json: Option<&std::path::Path>,
    plot: Option<&std::path::Path>,
    trace: Option<&std::path::Path>,
    scale: u64,
) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let scenario = match iommu_sim::scenario::Scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}:{e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let opts = iommu_sim::engine::RunOptions {
        scale,
        trace: trace.is_some(),
    };
    let report = iommu_sim::engine::run(&scenario, &opts);
    print!("{}", report.text());
    if let Err(e) = report.write_outputs(json, plot, trace) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    if report.invariants.as_ref().is_some_and(|c| c.passed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match cli.command.unwrap_or(Command::Run {
        file: None,
        json: None,
        plot: None,
        trace: None,
        scale: 1,
        rounds: 2_000,
        readers: 2,
        tenants: 8,
    }) {
        Command::Check { files } => return check(&files),
        Command::Bench { quick } => {
            print!("{}", iommu_sim::bench::run(quick));
            return ExitCode::SUCCESS;
        }
        Command::Run {
            file: Some(file),
            json,
            plot,
            trace,
            scale,
            ..
        } => {
            return run_file(
                &file,
                json.as_deref(),
                plot.as_deref(),
                trace.as_deref(),
                scale,
            )
        }
        Command::Run {
            file: None,
            rounds,
            readers,
            tenants,
            ..
        } => foundation::Config {
            rounds,
            readers,
            tenants: tenants as usize,
        },
    };
    println!(
        "iommu-sim: foundation scenario — {} tenants, {} rounds, {} fault-path readers",
        cfg.tenants, cfg.rounds, cfg.readers
    );
    let r = foundation::run(&cfg);
    let lookups = r.lookups_hit + r.lookups_enoent + r.lookups_ebusy;
    println!(
        "  configuration: {} attaches, {} replaces, {} detaches, {} bad calls refused as expected",
        r.attaches, r.replaces, r.detaches, r.rejected_as_expected
    );
    println!(
        "  typed lookups: {lookups} ({} hit, {} ENOENT, {} EBUSY wrong owner type), {:.1} M/s",
        r.lookups_hit,
        r.lookups_enoent,
        r.lookups_ebusy,
        lookups as f64 / r.elapsed.as_secs_f64() / 1e6
    );
    println!("  elapsed: {:.3} s", r.elapsed.as_secs_f64());
    if r.violations.is_empty() {
        println!("  invariants: all held (no stale or mistyped handle, nothing left attached)");
        ExitCode::SUCCESS
    } else {
        println!("  invariants: {} VIOLATED", r.violations.len());
        for v in r.violations.iter().take(20) {
            println!("    {v}");
        }
        ExitCode::FAILURE
    }
}
