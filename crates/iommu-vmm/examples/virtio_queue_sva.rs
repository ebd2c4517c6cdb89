//! A virtio device (virtio-queue's split `Queue`) DMAs through the emulated IOMMU via
//! vm-memory's `IommuMemory`, with its rings and buffers unmapped when it is kicked: every
//! first access is an ATS miss resolved by a PRI page request. Two variants: SVA on a process
//! whose pages were swapped out, and an iommufd fault-capable HWPT whose IOAS a VMM thread
//! fills on demand. Prints what happened and exits non-zero if any counter does not add up.
//!
//! Run: `cargo run --release -p iommu-vmm --example virtio_queue_sva [chains] [input bytes]`
//! (default 64 chains of 10,000 bytes). `tests/example.rs` runs the same flow, smaller.

use iommu_vmm::demo::{run_demo, DemoConfig, VariantReport};

fn print(r: &VariantReport) {
    println!("{}:", r.variant);
    println!(
        "  chains {} published, {} processed; {} bytes in, {} out",
        r.chains, r.processed.chains, r.processed.bytes_in, r.processed.bytes_out
    );
    println!(
        "  driver verified {} chains, {} of {} output bytes right, {} wrong",
        r.verified.chains, r.verified.bytes_ok, r.expected_bytes, r.verified.bytes_bad
    );
    println!(
        "  region {} pages, {} unmapped at kick ({} of them swapped out after the driver wrote them); made present by the fault handler {}",
        r.region_pages, r.pages_unmapped, r.pages_swapped_out, r.pages_made_present
    );
    println!(
        "  page requests {} in {} groups; answered {}; handler got {} groups, sent {} responses; auto {}; stray/abandoned/outstanding {}",
        r.page_requests,
        r.groups_sent,
        r.groups_answered,
        r.handler_groups,
        r.handler_responses,
        r.auto_responses,
        r.endpoint_anomalies
    );
    let a = &r.ats;
    println!(
        "  IOTLB: {} translations, {} hits, {} ATS requests, {} chunks filled, {} flushes, {} stale fills dropped, {} failed",
        a.translations, a.hits, a.ats_requests, a.chunks_filled, a.flushes, a.stale_fills_dropped, a.failures
    );
}

fn arg(n: usize, default: u64) -> Result<u64, String> {
    match std::env::args().nth(n) {
        None => Ok(default),
        Some(a) => a
            .parse()
            .map_err(|_| format!("argument {n}: {a:?} is not a number")),
    }
}

fn main() {
    let cfg = match (arg(1, 64), arg(2, 10_000)) {
        (Ok(c), Ok(l)) if (1..=8192).contains(&c) && (2..=1 << 20).contains(&l) => DemoConfig {
            chains: c as u16,
            input_len: l as u32,
        },
        _ => {
            eprintln!("usage: virtio_queue_sva [chains 1..8192] [input bytes 2..1048576]");
            std::process::exit(2);
        }
    };
    let reports = match run_demo(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("setup failed: {e}");
            std::process::exit(1);
        }
    };
    let mut failed = false;
    for r in &reports {
        print(r);
        for p in r.problems() {
            eprintln!("FAIL ({}): {p}", r.variant);
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
    println!("OK: every byte verified, every page request group answered exactly once");
}
