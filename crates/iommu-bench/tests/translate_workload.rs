//! The translation workloads measure what their names say: the strided misses miss the IOTLB and
//! mostly start from the paging-structure cache; the cold misses miss both.

use iommu_bench::translate::{cold_span, stride, Translate};
use iommu_pt::Access;

#[test]
fn strided_misses_hit_the_paging_structure_cache_and_cold_ones_miss_every_cache() {
    let w = Translate::new();
    let n = 100_000u64;
    // (IOTLB hits, walks from the paging-structure cache) over `n` translations of `iova(i)`.
    let hits = |iova: fn(u64) -> u64| {
        let before = w.iommu.stats();
        let win = w.iommu.dma_window();
        for i in 0..n {
            win.translate_source(w.sid, None, iova(i), Access::READ)
                .expect("mapped");
        }
        drop(win);
        let after = w.iommu.stats();
        (
            after.iotlb_hits - before.iotlb_hits,
            after.psc_hits - before.psc_hits,
        )
    };
    let (strided_hits, strided_psc) = hits(stride);
    let (cold_hits, cold_psc) = hits(cold_span);
    assert!(strided_hits < n / 100, "strided IOTLB hits: {strided_hits}");
    assert!(
        strided_psc > n * 3 / 4,
        "strided walks from the cache: {strided_psc}"
    );
    assert!(cold_hits < n / 20, "cold IOTLB hits: {cold_hits}");
    assert!(cold_psc < n / 20, "cold walks from the cache: {cold_psc}");
}
