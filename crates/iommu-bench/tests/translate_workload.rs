//! The translation workloads measure what their names say: the strided misses miss the IOTLB and
//! mostly start from the paging-structure cache; the cold misses miss both.

use iommu_bench::translate::{cold_span, stride, Translate};
use iommu_pt::Access;

#[test]
fn strided_misses_hit_the_paging_structure_cache_and_cold_ones_miss_every_cache() {
    let w = Translate::new();
    let win = w.iommu.dma_window();
    let n = 100_000u64;
    let before = w.iommu.stats();
    for i in 0..n {
        win.translate_source(w.sid, None, stride(i), Access::READ)
            .expect("mapped");
    }
    drop(win);
    let mid = w.iommu.stats();
    let win = w.iommu.dma_window();
    for i in 0..n {
        win.translate_source(w.sid, None, cold_span(i), Access::READ)
            .expect("mapped");
    }
    drop(win);
    let after = w.iommu.stats();
    let strided_hits = mid.iotlb_hits - before.iotlb_hits;
    let strided_psc = mid.psc_hits - before.psc_hits;
    let cold_hits = after.iotlb_hits - mid.iotlb_hits;
    let cold_psc = after.psc_hits - mid.psc_hits;
    assert!(strided_hits < n / 100, "strided IOTLB hits: {strided_hits}");
    assert!(
        strided_psc > n * 3 / 4,
        "strided walks from the cache: {strided_psc}"
    );
    assert!(cold_hits < n / 20, "cold IOTLB hits: {cold_hits}");
    assert!(cold_psc < n / 20, "cold walks from the cache: {cold_psc}");
}
