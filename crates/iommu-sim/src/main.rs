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
    /// Run the built-in scenario (the default).
    Run {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match cli.command.unwrap_or(Command::Run {
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
            rounds,
            readers,
            tenants,
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
