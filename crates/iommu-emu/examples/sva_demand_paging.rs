//! SVA demand paging end to end: two devices DMA-write distinct patterns over 64 MiB each of
//! untouched process memory through one PASID; every page is faulted in through PRI, the page
//! request queue, the IOPF core and the SVA handler; the CPU reads both patterns back.
//!
//! `cargo run --release -p iommu-emu --example sva_demand_paging [MiB per device]`
//! Exits non-zero on any mismatch, failed DMA or group not answered exactly once.

use iommu_emu::demo::{run_sva_demand_paging, DemoConfig};

fn main() {
    // Up to 1 TiB per device (the emulated memory's limit); more than the host has available
    // is refused when the memory is backed.
    let mib: u64 = match std::env::args().nth(1).map(|a| a.parse::<u64>()) {
        None => 64,
        Some(Ok(m)) if (1..=1 << 20).contains(&m) => m,
        Some(_) => {
            eprintln!("usage: sva_demand_paging [MiB per device, 1 to 1048576]");
            std::process::exit(2);
        }
    };
    let cfg = DemoConfig {
        bytes_per_device: mib << 20,
        ..DemoConfig::default()
    };
    let r = match run_sva_demand_paging(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("setup failed: {e}");
            std::process::exit(2);
        }
    };
    let secs = r.dma_elapsed.as_secs_f64();
    println!(
        "devices                 {} x {mib} MiB, PASID {}",
        cfg.devices, r.pasid
    );
    println!("pages faulted           {}", r.pages_faulted);
    println!("page requests           {}", r.page_requests);
    println!("page request groups     {}", r.groups_sent);
    println!(
        "responses               success {} / invalid {} / failure {} / overflow auto-success {}",
        r.responses[0], r.responses[1], r.responses[2], r.auto_responses
    );
    println!(
        "DMA elapsed             {:.1} ms ({:.0} pages/s, {:.0} MiB/s)",
        secs * 1e3,
        r.pages_faulted as f64 / secs,
        (cfg.devices as u64 * mib) as f64 / secs
    );
    println!(
        "CPU read-back           {:.1} ms",
        r.verify_elapsed.as_secs_f64() * 1e3
    );
    println!(
        "failed DMAs {}  mismatched bytes {}  groups not answered exactly once {}",
        r.dma_failures, r.mismatched_bytes, r.unanswered
    );
    if !r.ok() {
        eprintln!("FAILED");
        std::process::exit(1);
    }
    println!("OK");
}
