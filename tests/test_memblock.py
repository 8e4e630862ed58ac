"""memblock: region lists, top-down allocation, handover to the buddy allocator (memblock.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from tests.strategies import memblock_layouts

from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
from kpkeys_sim.kernel.mm.memblock import (
    INIT_MEMBLOCK_MEMORY_REGIONS,
    INIT_MEMBLOCK_REGIONS,
    MEMBLOCK_ALLOC,
    MEMBLOCK_ALLOC_ACCESSIBLE,
    MEMBLOCK_ALLOC_ANYWHERE,
    MEMBLOCK_ALLOC_NOLEAKTRACE,
    MEMBLOCK_MIRROR,
    MEMBLOCK_NOMAP,
    Memblock,
    MemblockRegion,
    for_each_free_mem_range,
    memblock_add,
    memblock_end_of_DRAM,
    memblock_free,
    memblock_free_all,
    memblock_free_late,
    memblock_is_memory,
    memblock_is_region_reserved,
    memblock_is_reserved,
    memblock_mark_mirror,
    memblock_mark_nomap,
    memblock_phys_alloc,
    memblock_phys_alloc_range,
    memblock_phys_free,
    memblock_phys_mem_size,
    memblock_remove,
    memblock_reserve,
    memblock_reserved_size,
    memblock_set_bottom_up,
    memblock_set_current_limit,
    memblock_start_of_DRAM,
)
from kpkeys_sim.kernel.mm.page import MemMap, PG_reserved
from kpkeys_sim.kernel.mm.page_alloc import BuddyAllocator, alloc_page, nr_free_pages
from kpkeys_sim.machine.events import CountingInstrument, Instruments

BASE = 0x4000_0000
MiB = 1 << 20


def fresh(size: int = 64 * MiB, page_shift: int = 12) -> Memblock:
    """A memblock with one memory region of ``size`` bytes at 1 GiB."""
    mb = Memblock(page_shift=page_shift)
    memblock_add(mb, BASE, size)
    return mb


def zone_for(mb: Memblock, nr_pages: int | None = None) -> BuddyAllocator:
    """A zone whose mem_map covers [BASE, end of DRAM)."""
    shift = mb.page_shift
    nr = nr_pages if nr_pages is not None else (memblock_end_of_DRAM(mb) - BASE) >> shift
    return BuddyAllocator(MemMap(BASE >> shift, nr, page_shift=shift))


# --- region lists -------------------------------------------------------------


def test_add_merges_and_only_fills_gaps() -> None:
    """Adjacent adds merge; an overlapping add only covers the gaps; remove splits a region."""
    mb = Memblock()
    memblock_add(mb, BASE, MiB)
    memblock_add(mb, BASE + MiB, MiB)
    assert mb.memory.regions == [MemblockRegion(BASE, 2 * MiB, 0)]
    memblock_add(mb, BASE + 4 * MiB, MiB)
    memblock_add(mb, BASE + MiB, 4 * MiB)
    assert mb.memory.regions == [MemblockRegion(BASE, 5 * MiB, 0)]
    memblock_remove(mb, BASE + MiB, 4096)
    assert [(r.base - BASE, r.size) for r in mb.memory.regions] == [
        (0, MiB),
        (MiB + 4096, 4 * MiB - 4096),
    ]
    assert memblock_phys_mem_size(mb) == 5 * MiB - 4096
    assert memblock_start_of_DRAM(mb) == BASE and memblock_end_of_DRAM(mb) == BASE + 5 * MiB
    assert memblock_is_memory(mb, BASE) and not memblock_is_memory(mb, BASE + MiB)


def test_reserve_and_phys_free() -> None:
    """Reservations merge and memblock_phys_free/memblock_free remove any sub-range."""
    mb = fresh()
    memblock_reserve(mb, BASE, 8192)
    memblock_reserve(mb, BASE + 8192, 100)
    assert memblock_reserved_size(mb) == 8292 and mb.reserved.cnt == 1
    memblock_phys_free(mb, BASE + 4096, 4096)
    assert [(r.base - BASE, r.size) for r in mb.reserved.regions] == [(0, 4096), (8192, 100)]
    memblock_free(mb, BASE + 8192, 100)
    assert memblock_is_reserved(mb, BASE) and not memblock_is_reserved(mb, BASE + 8192)
    assert memblock_is_region_reserved(mb, BASE + 4000, 200)
    assert not memblock_is_region_reserved(mb, BASE + 4096, 4096)


def test_free_ranges_skip_reserved_and_nomap() -> None:
    """for_each_free_mem_range yields memory minus reserved, skipping NOMAP unless asked."""
    mb = fresh(16 * MiB)
    memblock_reserve(mb, BASE + MiB, MiB)
    memblock_mark_nomap(mb, BASE + 8 * MiB, MiB)
    rel = [(a - BASE, b - BASE) for a, b in for_each_free_mem_range(mb)]
    assert rel == [(0, MiB), (2 * MiB, 8 * MiB), (9 * MiB, 16 * MiB)]
    with_nomap = [(a - BASE, b - BASE) for a, b in for_each_free_mem_range(mb, MEMBLOCK_NOMAP)]
    # One range per memory region, as __next_mem_range() yields them.
    assert with_nomap == [(0, MiB), (2 * MiB, 8 * MiB), (8 * MiB, 9 * MiB), (9 * MiB, 16 * MiB)]


def test_region_constants() -> None:
    """INIT_MEMBLOCK_REGIONS is 128 and the arm64 memory-region table holds 1024 (16 KB)."""
    assert INIT_MEMBLOCK_REGIONS == 128
    assert INIT_MEMBLOCK_MEMORY_REGIONS * 16 == 16 * 1024
    assert MEMBLOCK_ALLOC_ANYWHERE == (1 << 64) - 1
    assert (MEMBLOCK_ALLOC_ACCESSIBLE, MEMBLOCK_ALLOC_NOLEAKTRACE) == (0, 1)


# --- allocation ------------------------------------------------------------------


def test_allocation_is_top_down_and_aligned() -> None:
    """Allocations come from the top of free memory, aligned, below earlier ones."""
    mb = fresh(64 * MiB)
    a = memblock_phys_alloc(mb, 4096, 4096)
    assert a == BASE + 64 * MiB - 4096
    b = memblock_phys_alloc(mb, 100, 2 * MiB)  # the top 2 MiB is no longer whole
    assert b == BASE + 60 * MiB
    assert memblock_reserved_size(mb) == 4096 + 2 * MiB  # size rounded up to the alignment
    c = memblock_phys_alloc(mb, 8192, 4096)
    assert c == BASE + 64 * MiB - 3 * 4096
    assert mb.nr_allocs == 3 and mb.nr_allocated_bytes == 4096 + 2 * MiB + 8192


def test_allocation_honours_start_end_and_limit() -> None:
    """Explicit [start, end) bounds the search; ACCESSIBLE/NOLEAKTRACE use current_limit."""
    mb = fresh(64 * MiB)
    got = memblock_phys_alloc_range(mb, 4096, 4096, BASE, BASE + 10 * MiB)
    assert got == BASE + 10 * MiB - 4096
    memblock_set_current_limit(mb, BASE + 20 * MiB)
    got = memblock_phys_alloc_range(mb, 2 * MiB, 2 * MiB, 0, MEMBLOCK_ALLOC_NOLEAKTRACE)
    assert got == BASE + 18 * MiB
    got = memblock_phys_alloc_range(mb, 4096, 4096, 0, MEMBLOCK_ALLOC_ANYWHERE)
    assert got == BASE + 64 * MiB - 4096


def test_allocation_skips_reserved_and_fails_with_zero() -> None:
    """A reserved top is skipped; when nothing fits the result is 0; page 0 is never returned."""
    mb = fresh(4 * MiB)
    memblock_reserve(mb, BASE + 3 * MiB, MiB)
    assert memblock_phys_alloc(mb, MiB, MiB) == BASE + 2 * MiB
    assert memblock_phys_alloc(mb, 8 * MiB, 4096) == 0
    low = Memblock()
    memblock_add(low, 0, 8192)
    assert memblock_phys_alloc(low, 4096, 4096) == 4096
    assert memblock_phys_alloc(low, 4096, 4096) == 0


def test_bottom_up_allocation() -> None:
    """memblock_set_bottom_up(true) allocates from the lowest suitable address."""
    mb = fresh(16 * MiB)
    memblock_set_bottom_up(mb, True)
    assert memblock_phys_alloc(mb, 4096, 4096) == BASE
    assert memblock_phys_alloc(mb, 4096, MiB) == BASE + MiB


def test_mirror_request_falls_back() -> None:
    """A MEMBLOCK_MIRROR request prefers mirrored memory, then falls back to any memory."""
    mb = fresh(16 * MiB)
    memblock_mark_mirror(mb, BASE, MiB)
    assert memblock_phys_alloc_range(mb, 4096, 4096, 0, 0, MEMBLOCK_MIRROR) == BASE + MiB - 4096
    memblock_reserve(mb, BASE, MiB)
    assert memblock_phys_alloc_range(mb, 4096, 4096, 0, 0, MEMBLOCK_MIRROR) == (
        BASE + 16 * MiB - 4096
    )


def test_allocation_emits_events() -> None:
    """Each successful allocation is one memblock_alloc event."""
    counter = CountingInstrument()
    mb = Memblock(instruments=Instruments([counter]))
    memblock_add(mb, BASE, MiB)
    memblock_phys_alloc(mb, 4096, 4096)
    memblock_phys_alloc(mb, 2 * MiB, 4096)
    assert counter.counts[MEMBLOCK_ALLOC] == 1


def test_bad_arguments_raise_value_error() -> None:
    """Zero sizes, non-power-of-two alignments and negative bases are ValueErrors."""
    mb = fresh()
    with pytest.raises(ValueError, match="bad align 3"):
        memblock_phys_alloc(mb, 4096, 3)
    with pytest.raises(ValueError, match="bad size 0"):
        memblock_phys_alloc(mb, 0, 4096)
    with pytest.raises(ValueError, match="bad base -4096"):
        memblock_reserve(mb, -4096, 4096)


# --- handover ----------------------------------------------------------------------


def test_free_all_hands_over_exactly_the_unreserved_pages() -> None:
    """Unreserved whole pages go to the buddy allocator; reserved, partial and NOMAP pages stay."""
    mb = fresh(8 * MiB)
    memblock_reserve(mb, BASE + 100, 10)  # partial page 0
    memblock_reserve(mb, BASE + 5 * 4096 + 1, 8192)  # pages 5..7 (partially)
    memblock_mark_nomap(mb, BASE + MiB, MiB)  # pages 256..511
    top = memblock_phys_alloc(mb, 4096, 4096)  # page 2047
    zone = zone_for(mb)
    n = memblock_free_all(mb, zone)
    reserved_pages = {0, 5, 6, 7, 2047, *range(256, 512)}
    assert n == 2048 - len(reserved_pages) == nr_free_pages(zone) == zone.managed_pages
    mm = zone.mem_map
    is_reserved = mm.flags & np.uint32(1 << PG_reserved) != 0
    assert set(np.flatnonzero(is_reserved).tolist()) == reserved_pages
    assert (mm.refcount[is_reserved] == 1).all()
    assert top == BASE + 2047 * 4096
    zone.check()


def test_free_all_cuts_chunks_like_free_pages_memory() -> None:
    """An unaligned free range is cut into the largest aligned chunks, then merged."""
    mb = Memblock()
    memblock_add(mb, BASE + 3 * 4096, 1029 * 4096)  # pfns 3 .. 1031 relative
    zone = BuddyAllocator(MemMap(BASE >> 12, 2048))
    memblock_free_all(mb, zone)
    # 3 (o0), 4-7 (o2), 8-15 (o3), ..., 512-1023 (o9), 1024-1031 (o3)
    assert zone.free_counts() == [1, 0, 1, 2, 1, 1, 1, 1, 1, 1, 0]
    assert nr_free_pages(zone) == 1029
    zone.check()


def test_first_buddy_allocation_is_lowest_handed_over_page() -> None:
    """Boot handover frees to the list tail, so the first page allocated is the lowest."""
    mb = fresh(16 * MiB)
    memblock_reserve(mb, BASE, 4 * 4096)
    zone = zone_for(mb)
    memblock_free_all(mb, zone)
    assert alloc_page(zone, GFP_KERNEL) == (BASE >> 12) + 4


def test_free_all_checks_its_arguments() -> None:
    """Memory outside the mem_map, a page-size mismatch and a second call are ValueErrors."""
    mb = fresh(8 * MiB)
    with pytest.raises(ValueError, match="outside the mem_map"):
        memblock_free_all(mb, zone_for(mb, nr_pages=100))
    with pytest.raises(ValueError, match="page_shift 14"):
        memblock_free_all(mb, BuddyAllocator(MemMap(BASE >> 14, 512, page_shift=14)))
    zone = zone_for(mb)
    memblock_free_all(mb, zone)
    with pytest.raises(ValueError, match="called twice"):
        memblock_free_all(mb, zone)


def test_allocation_after_handover_is_a_kernel_bug() -> None:
    """memblock allocations and phys frees after memblock_free_all raise KernelBug."""
    mb = fresh(8 * MiB)
    memblock_free_all(mb, zone_for(mb))
    with pytest.raises(KernelBug, match="after memblock_free_all"):
        memblock_phys_alloc(mb, 4096, 4096)
    with pytest.raises(KernelBug, match="after memblock_free_all"):
        memblock_phys_free(mb, BASE, 4096)


def test_free_late_gives_pages_to_the_buddy_allocator() -> None:
    """memblock_free_late frees the whole pages of a reserved range; twice is a KernelBug."""
    mb = fresh(8 * MiB)
    got = memblock_phys_alloc(mb, 4 * 4096, 4096)
    with pytest.raises(ValueError, match="before memblock_free_all"):
        memblock_free_late(mb, got, 4096)
    zone = zone_for(mb)
    memblock_free_all(mb, zone)
    before = nr_free_pages(zone)
    memblock_free_late(mb, got + 1, 3 * 4096)  # whole pages: 1 and 2 of the 4
    assert nr_free_pages(zone) == before + 2
    assert memblock_is_reserved(mb, got + 4096)  # the reserved list is left as is
    with pytest.raises(KernelBug, match="freeing a free page"):
        memblock_free_late(mb, got + 4096, 4096)
    zone.check()


def test_64k_pages_handover() -> None:
    """With 64K pages, MAX_PAGE_ORDER 13 blocks (512 MiB) are handed over."""
    mb = fresh(1 << 30, page_shift=16)
    zone = zone_for(mb)
    assert memblock_free_all(mb, zone) == (1 << 30) >> 16
    assert zone.free_counts()[13] == 2


@settings(max_examples=60, deadline=None)
@given(layout=memblock_layouts())
def test_free_all_matches_free_ranges(layout: dict[str, Any]) -> None:
    """For any layout, the pages handed over are exactly the whole pages of the free ranges."""
    mb = Memblock()
    for base, size in layout["memory"]:
        memblock_add(mb, base, size)
    for base, size in layout["reserved"]:
        memblock_reserve(mb, base, size)
    expected = np.zeros(layout["nr_pages"], dtype=bool)
    for lo, hi in for_each_free_mem_range(mb):
        a, b = (lo + 4095) >> 12, hi >> 12
        expected[a - (BASE >> 12) : b - (BASE >> 12)] = True
    zone = BuddyAllocator(MemMap(BASE >> 12, layout["nr_pages"]))
    n = memblock_free_all(mb, zone)
    assert n == int(expected.sum()) == nr_free_pages(zone)
    reserved = zone.mem_map.flags & np.uint32(1 << PG_reserved) != 0
    assert (reserved == ~expected).all()
    zone.check()
