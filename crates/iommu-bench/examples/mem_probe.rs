//! Zeroing and writing frames through `PhysMem` in ascending and descending frame order (a
//! frame freed on its own comes back in the reverse order of frees; a released range, since
//! `PhysMem::release_frames`, in ascending order), beside the memory floor
//! ([`iommu_bench::floor::MemoryFloor`]): what a fresh-page fault's memory work costs through
//! `vm-memory`, which has no `memset` of its own (the zeroing is a copy from a zero page that
//! the optimiser may turn into one).
//! `cargo run --release -p iommu-bench --example mem_probe`.

use iommu_emu::PhysMem;
use iommu_pt::{ArenaTableMem, PhysAddr};
fn main() {
    let n = 4096u64;
    let phys = PhysMem::new(n as usize).unwrap();
    phys.prefault().expect("host memory for the emulated RAM");
    let base = ArenaTableMem::DEFAULT_BASE.addr().0;
    let zero = [0u8; 4096];
    let data = [0x5au8; 4096];
    // Zeroes then writes every frame in `order`, with `write` (fill or copy); best ns/page.
    let time = |order: &str, write: &dyn Fn(PhysAddr)| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for i in 0..n {
                let f = if order == "asc" { i } else { n - 1 - i };
                let pa = PhysAddr(base + f * 4096);
                phys.write(pa, &zero).unwrap();
                write(pa);
            }
            best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        best
    };
    for order in ["asc", "desc"] {
        let fill = time(order, &|pa| phys.fill(pa, 4096, 0x5a).unwrap());
        println!("phys zero+fill {order}: {fill:.1} ns/page");
        let write = time(order, &|pa| phys.write(pa, &data).unwrap());
        println!("phys zero+write {order}: {write:.1} ns/page");
    }
    let mut f = iommu_bench::floor::MemoryFloor::new(n as usize);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let mut s = 0u64;
        for i in 0..n as usize {
            s += f.page(i) as u64;
        }
        std::hint::black_box(s);
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("floor: {best:.1} ns/page");
}
