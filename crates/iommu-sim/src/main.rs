//! `iommu-sim`: runs iommu-rs scenarios, checks invariants as they run, and reports.
//!
//! `cargo run --release` runs the built-in default scenario (`scenarios/default.toml`, embedded
//! in the binary) in threads mode: two emulated IOMMUs, PRI devices, SVA processes and a VMM
//! owning a device through iommufd, with unbinds, an exit, munmap, mprotect, a HWPT replace, a
//! reset and a queue overflow while DMA is in flight; every invariant is checked as it runs.

use iommu_sim::foundation;

use std::process::ExitCode;

/// With feature `heap-stats`, the system allocator, counted: `soak` reports the heap's live
/// bytes beside RSS, so growth of the heap (a leak) is told apart from the allocator holding on
/// to freed memory.
#[cfg(feature = "heap-stats")]
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed.
#[cfg(feature = "heap-stats")]
fn heap_live_bytes() -> u64 {
    // `realloc` is already counted in both totals.
    let s = GLOBAL.stats();
    (s.bytes_allocated as u64).saturating_sub(s.bytes_deallocated as u64)
}

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
        /// Also measure the fault-path figures with every other CPU kept busy, each beside
        /// its quiet value.
        #[arg(long)]
        load: bool,
        /// Write the fault-path figures as JSON to this file (stable names: BENCHMARKS.md).
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
    },
    /// Validate scenario files (TOML; format in docs/scenarios.md) without running them.
    Check {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Run a scenario file (TOML; format in docs/scenarios.md), or the built-in default
    /// scenario when no file is given (what `cargo run --release` does).
    Run {
        /// Scenario file; without it, the built-in default scenario runs.
        file: Option<std::path::PathBuf>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// One long-lived world under SVA and iommufd fault traffic with resets, replaces, unbinds,
    /// overflows and process exits: counts lost, doubled and late responses (all must be 0)
    /// and checks that memory stays flat after warm-up.
    Soak {
        /// Stop once this many page request groups were sent (both devices; at least 1;
        /// checked every 20 ms, so up to 20 ms' worth more, a few thousand).
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        groups: u64,
        /// Stop after this many seconds even if fewer groups were sent.
        #[arg(long)]
        seconds: Option<u64>,
        /// Seeds which cycles are disrupted, and how.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One-page DMA jobs each device keeps in flight per cycle.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=256))]
        inflight: u64,
        /// Print progress to stderr every this many seconds (0: never).
        #[arg(long, default_value_t = 10)]
        progress: u64,
        /// One cycle in this many is disrupted, on average (0: none).
        #[arg(long, default_value_t = 16)]
        disrupt_one_in: u32,
        /// The disruptions to mix (comma-separated): reset, unbind, exit, replace, overflow.
        #[arg(long, value_delimiter = ',', default_value = "reset,unbind,exit,replace,overflow", value_parser = parse_disruption)]
        disruptions: Vec<iommu_sim::soak::Disruption>,
    },
    /// The IOMMU core alone under concurrent load: typed attach-handle lookups racing attach,
    /// replace and detach on many tenants' PASIDs.
    Foundation {
        /// Configuration rounds: attach, replace and detach on every tenant's PASID.
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
        rounds: u64,
        /// Reader threads playing the fault path (typed attach-handle lookups).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
        readers: u64,
        /// Tenants (processes and VMMs), one PASID each.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
        tenants: u64,
    },
}

/// `n` and the noun, singular for 1.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn parse_disruption(s: &str) -> Result<iommu_sim::soak::Disruption, String> {
    iommu_sim::soak::Disruption::from_name(s)
        .ok_or_else(|| format!("unknown disruption '{s}' (reset, unbind, exit, replace, overflow)"))
}

fn check(files: &[std::path::PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        let text = match iommu_sim::scenario::read_text(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                failed = true;
                continue;
            }
        };
        match iommu_sim::scenario::Scenario::parse(&text) {
            Ok(s) => println!(
                "{}: ok: scenario '{}': {}, {}, {}, {}, {}, {}, {}",
                f.display(),
                iommu_sim::report::escape(&s.name),
                count(s.iommus.len() as u64, "IOMMU", "IOMMUs"),
                count(s.devices.len() as u64, "device", "devices"),
                count(s.processes.len() as u64, "process", "processes"),
                count(s.bonds.len() as u64, "bond", "bonds"),
                count(s.owners.len() as u64, "owner", "owners"),
                count(s.jobs.len() as u64, "job", "jobs"),
                count(s.events.len() as u64, "event", "events"),
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

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Threads,
    Deterministic,
}

/// The `run` command's outputs and options.
#[derive(clap::Args)]
struct RunArgs {
    /// `threads` (real concurrency) or `deterministic` (one seeded scheduler).
    #[arg(long, value_enum, default_value_t = ModeArg::Threads)]
    mode: ModeArg,
    /// The deterministic scheduler's seed (default: the scenario's `seed`); refused in
    /// threads mode, which has none.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write latency histograms as SVG here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Write a Chrome trace (JSON) of the jobs and events here.
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// Divide every job's length by this.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    scale: u64,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn run_file(file: Option<&std::path::Path>, args: RunArgs) -> ExitCode {
    let (name, text) = match file {
        Some(f) => match iommu_sim::scenario::read_text(f) {
            Ok(t) => (f.display().to_string(), t),
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        },
        None => (
            "<built-in default scenario>".to_string(),
            iommu_sim::DEFAULT_SCENARIO.to_string(),
        ),
    };
    let scenario = match iommu_sim::scenario::Scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}:{e}");
            return ExitCode::FAILURE;
        }
    };
    if let (Some(seed), ModeArg::Threads) = (args.seed, args.mode) {
        eprintln!(
            "--seed {seed}: a seed applies to --mode deterministic only (threads mode is not reproducible and has no seed)"
        );
        return ExitCode::FAILURE;
    }
    let mode = match args.mode {
        ModeArg::Threads => iommu_sim::engine::Mode::Threads,
        ModeArg::Deterministic => iommu_sim::engine::Mode::Deterministic {
            seed: args.seed.unwrap_or(scenario.seed),
        },
    };
    // The output paths are checked before the run: one that cannot be written fails at once,
    // not after the whole scenario ran. An existing file is opened without truncating it (an
    // interrupted run leaves it as it was) and a new one is removed again.
    for p in [&args.json, &args.plot, &args.trace].into_iter().flatten() {
        let existed = p.exists();
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p);
        if let Err(e) = opened {
            eprintln!("iommu-sim run: cannot write {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
        if !existed {
            let _ = std::fs::remove_file(p);
        }
    }
    println!("iommu-sim: running {}", iommu_sim::report::escape(&name));
    let opts = iommu_sim::engine::RunOptions {
        scale: args.scale,
        trace: args.trace.is_some(),
        mode,
        progress: !args.no_progress,
    };
    let (json, plot, trace) = (
        args.json.as_deref(),
        args.plot.as_deref(),
        args.trace.as_deref(),
    );
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
    // No subcommand: `run` with its defaults (the built-in default scenario).
    let command = cli
        .command
        .unwrap_or_else(|| Cli::parse_from(["iommu-sim", "run"]).command.expect("run"));
    let cfg = match command {
        Command::Check { files } => return check(&files),
        Command::Bench { quick, load, json } => {
            let opts = iommu_sim::bench::Options { quick, load, json };
            return match iommu_sim::bench::run(&opts) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("iommu-sim bench: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Run { file, args } => return run_file(file.as_deref(), args),
        Command::Soak {
            groups,
            seconds,
            seed,
            inflight,
            progress,
            disrupt_one_in,
            disruptions,
        } => {
            let cfg = iommu_sim::soak::Config {
                groups,
                time_limit: seconds.map(std::time::Duration::from_secs),
                seed,
                inflight: inflight as usize,
                progress: (progress > 0).then(|| std::time::Duration::from_secs(progress)),
                disrupt_one_in,
                disruptions,
                #[cfg(feature = "heap-stats")]
                heap_live: Some(heap_live_bytes),
                #[cfg(not(feature = "heap-stats"))]
                heap_live: None,
            };
            return match iommu_sim::soak::run(&cfg) {
                Ok(r) => {
                    print!("{}", r.text());
                    if r.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("soak: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Foundation {
            rounds,
            readers,
            tenants,
        } => foundation::Config {
            rounds,
            readers: readers as usize,
            tenants: tenants as usize,
        },
    };
    println!(
        "iommu-sim: foundation scenario — {}, {}, {}",
        count(cfg.tenants as u64, "tenant", "tenants"),
        count(cfg.rounds, "round", "rounds"),
        count(
            cfg.readers as u64,
            "fault-path reader",
            "fault-path readers"
        ),
    );
    let r = match foundation::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("iommu-sim: foundation: {e}");
            return ExitCode::from(2);
        }
    };
    let lookups = r.lookups_hit + r.lookups_enoent + r.lookups_ebusy;
    println!(
        "  configuration: {} attaches, {} replaces, {} detaches, {} refused as expected",
        r.attaches,
        r.replaces,
        r.detaches,
        count(r.rejected_as_expected, "bad call", "bad calls"),
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
