"""The pkeys physmem allocator for early page tables (spec kpkeys-series.md §4.10).

v6: 2 MiB (4K pages) refill ranges carved from the top, full ranges merged
when contiguous, a bounded table, an unprotected fallback page, and
``ppa_finalize``.  v7: page-by-page memblock allocations tracked and merged.
"""

from __future__ import annotations

from kpkeys_sim.kernel.arch.arm64_pgtable import page_address
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys import ppa as Q
from kpkeys_sim.kernel.mm.memblock import (
    INIT_MEMBLOCK_MEMORY_REGIONS,
    Memblock,
    memblock_add,
    memblock_reserve,
)
from kpkeys_sim.machine import Machine
from kpkeys_sim.machine.mmu import walk

BASE = 0x4000_0000
MiB = 1 << 20
PS = 4096


def ppa_kernel(series: str = "v6", mem: int = 64 * MiB) -> Kernel:
    """A kernel with only memblock set up (``[BASE, BASE + mem)``), as when paging_init runs."""
    m = Machine(page_size=PS, ram_size=mem)
    k = Kernel(m, KernelConfig(series=series, ram_size=64 * MiB))  # type: ignore[arg-type]
    mb = Memblock(page_shift=12)
    memblock_add(mb, BASE, mem)
    k.memblock = mb
    return k


def lm_leaf(k: Kernel, pfn: int) -> tuple[int, int]:
    """(descriptor, level) of the linear-map leaf of ``pfn`` (a physical walk)."""
    w, _ = walk(k.machine.mem, k.machine.geometry, k.machine.cpus[0].ttbr1, page_address(k, pfn))
    return w.desc, w.level


def pkeys_of(k: Kernel, r: Q.physmem_range) -> set[int]:
    """The POIndex values of the linear-map leaves of every page of ``r``."""
    return {(lm_leaf(k, pfn)[0] >> 60) & 7 for pfn in range(r.addr >> 12, r.end >> 12)}


def test_constants() -> None:
    """PHYSMEM_MAX_RANGES = INIT_MEMBLOCK_MEMORY_REGIONS; refill = PAGE_SIZE << refill_orders[0]."""
    assert Q.PHYSMEM_MAX_RANGES == INIT_MEMBLOCK_MEMORY_REGIONS
    assert Q.PkeysPhysmemAllocator(12, "v6").refill_size == 2 * MiB
    assert Q.PkeysPhysmemAllocator(14, "v6").refill_size == 32 * MiB
    assert Q.PkeysPhysmemAllocator(16, "v6").refill_size == 32 * MiB


def test_v6_carves_from_the_top_and_merges_full_ranges() -> None:
    """v6: pages come from the top of an aligned 2 MiB range; exhausted ranges merge."""
    k = ppa_kernel()
    top = BASE + 64 * MiB
    first = Q.kpkeys_physmem_pgtable_alloc(k)
    ppa = Q.ppa_state(k)
    assert ppa.version == "v6"
    assert first == top - PS and ppa.free_range == Q.physmem_range(top - 2 * MiB, 2 * MiB - PS)
    got = [first] + [Q.kpkeys_physmem_pgtable_alloc(k) for _ in range(511)]
    assert got == list(range(top - PS, top - 2 * MiB - 1, -PS))
    assert ppa.free_range.size == 0 and ppa.ranges == []
    nxt = Q.kpkeys_physmem_pgtable_alloc(k)  # registers the full range, refills below it
    assert nxt == top - 2 * MiB - PS
    assert ppa.ranges == [Q.physmem_range(top - 2 * MiB, 2 * MiB)]
    for _ in range(512):
        Q.kpkeys_physmem_pgtable_alloc(k)
    assert ppa.ranges == [Q.physmem_range(top - 4 * MiB, 4 * MiB)]  # contiguous below: merged
    assert ppa.nr_allocs == 1025 and k.warnings == []


def test_v6_merges_above_and_appends_when_not_contiguous() -> None:
    """ppa_try_extend_last_range merges a range just above or below; others are appended."""
    ppa = Q.PkeysPhysmemAllocator(12, "v6")
    assert not Q.ppa_try_extend_last_range(ppa, BASE, 2 * MiB)
    ppa.ranges.append(Q.physmem_range(BASE, 2 * MiB))
    assert Q.ppa_try_extend_last_range(ppa, BASE + 2 * MiB, 2 * MiB)
    assert Q.ppa_try_extend_last_range(ppa, BASE - 2 * MiB, 2 * MiB)
    assert ppa.ranges == [Q.physmem_range(BASE - 2 * MiB, 6 * MiB)]
    assert not Q.ppa_try_extend_last_range(ppa, BASE + 8 * MiB, 2 * MiB)


def test_v6_full_table_warns_and_drops() -> None:
    """A full range that fits nowhere when the table is full: WARN, dropped, stays unprotected."""
    k = ppa_kernel()
    ppa = Q.ppa_state(k)
    ppa.max_ranges = 1
    top = BASE + 64 * MiB
    for _ in range(512):
        Q.kpkeys_physmem_pgtable_alloc(k)
    memblock_reserve(k.memblock, top - 4 * MiB, 2 * MiB)  # type: ignore[arg-type]
    for _ in range(512):  # full range 1 registered; range 2 is 4 MiB lower
        Q.kpkeys_physmem_pgtable_alloc(k)
    assert ppa.free_range.addr == top - 6 * MiB
    Q.kpkeys_physmem_pgtable_alloc(k)  # range 2 is full and not contiguous: no room
    assert ppa.ranges == [Q.physmem_range(top - 2 * MiB, 2 * MiB)]
    assert ppa.nr_dropped_ranges == 1
    assert ppa.unprotected == [Q.physmem_range(top - 6 * MiB, 2 * MiB)]
    assert len(k.warnings) == 1 and "full_ranges table full" in k.warnings[0]


def test_v6_refill_failure_falls_back_to_an_unprotected_page() -> None:
    """No aligned 2 MiB range left: WARN, then one untracked memblock page per call."""
    k = ppa_kernel(mem=4 * MiB)
    memblock_reserve(k.memblock, BASE, 3 * MiB)  # type: ignore[arg-type]
    pa = Q.kpkeys_physmem_pgtable_alloc(k)
    ppa = Q.ppa_state(k)
    assert pa == BASE + 4 * MiB - PS
    assert ppa.free_range == Q.physmem_range(0, 0) and ppa.ranges == []
    assert ppa.nr_fallback_pages == 1 and ppa.unprotected == [Q.physmem_range(pa, PS)]
    assert k.warnings == ["ppa_refill: memblock allocation of 0x200000 bytes failed"]
    assert Q.kpkeys_physmem_pgtable_alloc(k) == pa - PS  # tries the refill again first
    assert len(k.warnings) == 2 and ppa.nr_fallback_pages == 2


def test_v7_tracks_each_page_and_merges_adjacent() -> None:
    """v7: one memblock page per call; adjacent pages extend the last range."""
    k = ppa_kernel("v7")
    ppa = Q.ppa_state(k)
    assert ppa.version == "v7"
    top = BASE + 64 * MiB
    pas = [Q.kpkeys_physmem_pgtable_alloc(k) for _ in range(3)]
    assert pas == [top - PS, top - 2 * PS, top - 3 * PS]
    assert ppa.ranges == [Q.physmem_range(top - 3 * PS, 3 * PS)]
    memblock_reserve(k.memblock, top - 4 * PS, PS)  # type: ignore[arg-type]
    assert Q.kpkeys_physmem_pgtable_alloc(k) == top - 5 * PS
    assert ppa.ranges == [
        Q.physmem_range(top - 3 * PS, 3 * PS),
        Q.physmem_range(top - 5 * PS, PS),
    ]
    ppa.max_ranges = 2
    memblock_reserve(k.memblock, top - 6 * PS, PS)  # type: ignore[arg-type]
    assert Q.kpkeys_physmem_pgtable_alloc(k) == top - 7 * PS
    assert len(ppa.ranges) == 2 and ppa.unprotected == [Q.physmem_range(top - 7 * PS, PS)]
    assert len(k.warnings) == 1 and "allocated_ranges table full" in k.warnings[0]


def test_v7_failure_returns_zero() -> None:
    """v7: an exhausted memblock gives 0 and tracks nothing."""
    k = ppa_kernel("v7", mem=4 * MiB)
    memblock_reserve(k.memblock, BASE, 4 * MiB)  # type: ignore[arg-type]
    assert Q.kpkeys_physmem_pgtable_alloc(k) == 0
    ppa = Q.ppa_state(k)
    assert ppa.ranges == [] and ppa.nr_allocs == 0 and k.warnings == []


def test_v6_boot_finalize_protects_used_tail_and_frees_the_rest() -> None:
    """v6 boot: the used tail gets pkey 1, the unused part goes back to the buddy allocator."""
    k = boot(KernelConfig(ram_size=256 * MiB, nr_cpus=1))
    ppa = Q.ppa_state(k)
    assert ppa.finalized and ppa.free_range == Q.physmem_range(0, 0)
    assert ppa.nr_allocs >= 1 and ppa.unprotected == []
    assert not [w for w in k.warnings if w.startswith("ppa")]
    tail = ppa.protected[0]
    assert tail.size == ppa.nr_allocs * PS and tail.end % (2 * MiB) == 0
    assert pkeys_of(k, tail) == {1}
    freed = ppa.freed
    assert freed is not None and freed.end == tail.addr and freed.addr % (2 * MiB) == 0
    assert pkeys_of(k, freed) == {0}
    mm = k.mem_map
    assert mm is not None
    i, j = (freed.addr >> 12) - mm.base_pfn, (freed.end >> 12) - mm.base_pfn
    assert not mm.refcount[i:j].any()  # free in the buddy allocator


def test_v7_boot_finalize_protects_every_range() -> None:
    """v7 boot (PTE-mapped linear map): every page-by-page early table has pkey 1."""
    k = boot(KernelConfig(ram_size=256 * MiB, nr_cpus=1, series="v7"))
    ppa = Q.ppa_state(k)
    assert ppa.finalized and ppa.version == "v7"
    # Every allocation is tracked (boot may register more, e.g. the vmemmap's tables).
    assert sum(r.size for r in ppa.ranges) >= ppa.nr_allocs * PS > 0
    assert ppa.protected == ppa.ranges
    for r in ppa.ranges:
        assert pkeys_of(k, r) == {1}
        assert lm_leaf(k, r.addr >> 12)[1] == 3
    assert not [w for w in k.warnings if w.startswith("ppa")]
