"""The pkeys block allocator (kpkeys v6 14-17; spec kpkeys-series.md §4.1-§4.9).

Unit tests of each step on a booted v6 kernel (block-mapped linear map), and a
Hypothesis state machine over random alloc/free/shrink/memory-pressure/split
sequences that checks invariants I1-I5 of §4.8 through the real linear map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from kpkeys_sim.kernel.arch.arm64_pgtable import page_address
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys import pba as P
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_LVL_PGTABLES,
    kpkeys_restore_pkey_reg,
    kpkeys_set_level,
)
from kpkeys_sim.kernel.mm.gfp import (
    __GFP_NOWARN,
    __GFP_PGTABLE_SPLIT,
    __GFP_ZERO,
    GFP_KERNEL,
    GFP_NOWAIT,
    GFP_PGTABLE_KERNEL,
    GFP_PGTABLE_USER,
)
from kpkeys_sim.kernel.mm.linear_map import set_memory_ro, set_memory_rw
from kpkeys_sim.kernel.mm.page_alloc import __free_pages, alloc_pages
from kpkeys_sim.kernel.mm.vmalloc import vfree, vmalloc, vmalloc_to_page
from kpkeys_sim.machine import CountingInstrument, Fault
from kpkeys_sim.machine.mmu import walk
from strategies import pba_batch_sizes, pba_gfps, pba_pressure_orders, pba_shrink_requests

CFG = KernelConfig(ram_size=256 << 20, nr_cpus=2)
SPLIT_GFP = GFP_PGTABLE_KERNEL & ~__GFP_ZERO | __GFP_PGTABLE_SPLIT
NOWAIT = GFP_NOWAIT | __GFP_NOWARN
# Aliases: names starting with "__" are mangled inside class bodies.
GFP_SPLIT_BIT = __GFP_PGTABLE_SPLIT
GFP_ZERO_BIT = __GFP_ZERO
GFP_KERNEL_NOWARN = GFP_KERNEL | __GFP_NOWARN


# --- helpers ------------------------------------------------------------------------------


def booted(**changes: Any) -> Kernel:
    """A booted v6 kernel with the PBA (256 MiB, block-mapped linear map).

    Boot must not WARN about the allocators; other boot warnings (not this
    file's subject) are dropped so each test sees only the warnings it causes.
    """
    k = boot(CFG.replace(**changes) if changes else CFG)
    clear_boot_warnings(k)
    return k


def clear_boot_warnings(k: Kernel) -> None:
    """Check boot raised no PBA/PPA warning, then forget the boot warnings."""
    ours = [w for w in k.warnings if w.startswith(("pba", "ppa", "VM_WARN: pba"))]
    assert ours == []
    k.warnings.clear()


def lm_leaf(k: Kernel, pfn: int) -> tuple[int, int]:
    """(descriptor, level) of the linear-map leaf of ``pfn``, read as the table walker does."""
    w, _ = walk(k.machine.mem, k.machine.geometry, k.machine.cpus[0].ttbr1, page_address(k, pfn))
    return w.desc, w.level


def lm_pkey(k: Kernel, pfn: int) -> int:
    """The POIndex of the linear-map leaf of ``pfn``."""
    return (lm_leaf(k, pfn)[0] >> 60) & 7


def lm_pkeys(k: Kernel, pfns: list[int]) -> dict[int, int]:
    """POIndex of each pfn; one walk per block-mapped region, one per page otherwise."""
    g = k.pgt
    shift = g.PMD_SHIFT - g.PAGE_SHIFT
    out: dict[int, int] = {}
    region_pkey: dict[int, int] = {}
    for pfn in pfns:
        r = pfn >> shift
        pk = region_pkey.get(r)
        if pk is None:
            desc, level = lm_leaf(k, pfn)
            pk = (desc >> 60) & 7
            if level < 3:
                region_pkey[r] = pk
        out[pfn] = pk
    return out


def drain_to(k: Kernel, n: int) -> list[int]:
    """Allocate ordinary PTPs until ``nr_cached == n`` (``n >= 4``); return them."""
    pba = P.pba_state(k)
    got: list[int] = []
    while pba.nr_cached > n:
        pfn = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
        assert pfn is not None
        got.append(pfn)
    assert pba.nr_cached == n
    return got


def exhaust_buddy(k: Kernel, min_order: int) -> list[tuple[int, int]]:
    """Take every free block of order >= ``min_order`` (no reclaim); return (pfn, order)."""
    zone = k.zone
    assert zone is not None
    held = []
    for order in range(zone.max_order, min_order - 1, -1):
        while (pfn := alloc_pages(zone, NOWAIT, order)) is not None:
            held.append((pfn, order))
    assert not any(zone.free_counts()[min_order:])
    return held


def release(k: Kernel, held: list[tuple[int, int]]) -> None:
    """Give back blocks taken by :func:`exhaust_buddy`."""
    assert k.zone is not None
    for pfn, order in held:
        __free_pages(k.zone, pfn, order)


def splits(k: Kernel) -> dict[str, int]:
    """A copy of the linear-map split counters."""
    return dict(k.linear_map_stats)


def full_block(k: Kernel) -> tuple[int, list[int]]:
    """Make a completely free cached block; return its head and the pages drained for it.

    Drain the boot block to the reserve, refill with ``alloc_one`` (a whole
    new block, its head in use), free the head, then give the drained pages
    back so the cache is large enough to release a whole block.
    """
    pba = P.pba_state(k)
    drained = drain_to(k, P.PBA_NR_RESERVED_PAGES)
    head = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
    assert head is not None and head % pba.BLOCK_NR_PAGES == 0
    P.pba_pgtable_free(k, head)
    assert P.page_pba_data(k, head) == P.PbaPageData(True, pba.BLOCK_NR_PAGES)
    for pfn in drained:
        P.pba_pgtable_free(k, pfn)
    return head, drained


# --- constants and boot -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page_shift", "orders", "block_order", "min_pages"),
    [(12, (9, 4, 2), 9, 64), (14, (11, 7, 2), 11, 256), (16, (9, 5, 2), 13, 1024)],
)
def test_constants_per_page_size(
    page_shift: int, orders: tuple[int, ...], block_order: int, min_pages: int
) -> None:
    """refill_orders, BLOCK_ORDER = PMD_ORDER and PBA_SHRINK_BLOCK_MIN_PAGES follow §4.3."""
    pba = P.PkeysBlockAllocator(page_shift)
    assert pba.refill_orders == orders and orders[-1] == 2
    got = (pba.BLOCK_ORDER, pba.BLOCK_NR_PAGES, pba.PBA_SHRINK_BLOCK_MIN_PAGES)
    assert got == (block_order, 1 << block_order, min_pages)
    assert (P.PBA_NR_RESERVED_PAGES, P.PBA_UNSHRINKABLE_PAGES) == (4, 16)
    assert P.PBA_GFP_ALLOC == GFP_KERNEL


def test_boot_enables_pba_and_protects_early_region() -> None:
    """pba_init pre-fills one early region; pba_init_late gives all of it pkey 1."""
    k = booted()
    pba = P.pba_state(k)
    assert P.pba_enabled(k) and k.static_branch(P.PBA_CAN_SET_PKEY)
    assert pba.stats.early_regions == 1 and pba.stats.refills_by_order == {9: 1}
    assert pba.early_head is not None and pba.early_order == 9 and pba.early_region_protected
    region = list(range(pba.early_head, pba.early_head + pba.BLOCK_NR_PAGES))
    assert set(lm_pkeys(k, region).values()) == {1}
    assert lm_leaf(k, pba.early_head)[1] == 2  # still one PMD block
    assert P.pba_check_invariants(k) == []
    # Boot's own page tables (the splits of init_late, ...) came from the block.
    assert pba.nr_cached == pba.BLOCK_NR_PAGES - pba.stats.allocs + pba.stats.frees
    assert k.warnings == []
    assert isinstance(pba.shrinker, P.PbaShrinker) and pba.shrinker in k.zone.shrinkers  # type: ignore[union-attr]


def test_pte_only_linear_map_leaves_pba_disabled() -> None:
    """arch_has_pte_only_direct_map() (force_pte_mapping) keeps the PBA off (§4.2 step 1)."""
    k = booted(linear_map="pte")
    assert not P.pba_enabled(k)
    assert k.pba is None or k.pba.nr_cached == 0
    assert P.pba_init_shrinker(k) == 0 and not any(
        isinstance(s, P.PbaShrinker)
        for s in k.zone.shrinkers  # type: ignore[union-attr]
    )


# --- allocation, free, reserve ---------------------------------------------------------------


def test_alloc_is_lifo_and_free_never_returns_to_buddy() -> None:
    """Allocation takes the list head; free pushes back on it and leaves the buddy alone."""
    k = booted()
    pba = P.pba_state(k)
    head = pba.cached_list[-1]
    pfn = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
    assert pfn == head
    assert lm_pkey(k, pfn) == 1
    nr_free = k.zone.nr_free  # type: ignore[union-attr]
    P.pba_pgtable_free(k, pfn)
    assert pba.cached_list[-1] == pfn and k.zone.nr_free == nr_free  # type: ignore[union-attr]
    assert int(k.mem_map.refcount[pfn - k.mem_map.base_pfn]) == 1  # type: ignore[union-attr]
    assert P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL) == pfn


def test_reserve_semantics() -> None:
    """Ordinary allocations never take nr_cached from 5 below 4; split allocations can (I2)."""
    k = booted()
    pba = P.pba_state(k)
    drain_to(k, 5)
    assert P.cached_page_available(k, GFP_PGTABLE_KERNEL)
    assert P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL) is not None
    assert pba.nr_cached == 4
    assert not P.cached_page_available(k, GFP_PGTABLE_KERNEL)
    assert P.pba_ready_for_direct_map_split(k)
    for expect in (3, 2, 1, 0):
        assert P.pba_pgtable_alloc(k, SPLIT_GFP) is not None
        assert pba.nr_cached == expect
    assert pba.stats.allocs_split_in_reserve == 4
    assert not P.pba_ready_for_direct_map_split(k)
    assert P.pba_prepare_direct_map_split(k) == 0  # refills
    assert pba.nr_cached == 512 and P.pba_ready_for_direct_map_split(k)
    assert k.warnings == []


def test_split_alloc_on_empty_list_warns_then_refills() -> None:
    """A split allocation finding the list empty WARNs, then refills and allocates one."""
    k = booted()
    pba = P.pba_state(k)
    drain_to(k, 4)
    for _ in range(4):
        P.pba_pgtable_alloc(k, SPLIT_GFP)
    assert pba.nr_cached == 0
    pfn = P.pba_pgtable_alloc(k, SPLIT_GFP)
    assert pfn is not None and lm_pkey(k, pfn) == 1
    assert k.warnings == ["pba: cached_list empty in get_cached_page()"]
    assert pba.nr_cached == 511


def test_alloc_one_on_full_block() -> None:
    """refill_pages_and_alloc_one on a block: the head is in use, in_block, nr_free = 511."""
    k = booted()
    pba = P.pba_state(k)
    drain_to(k, 4)
    head = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
    assert head is not None
    assert head % pba.BLOCK_NR_PAGES == 0 and head not in pba.cached_list
    assert P.page_pba_data(k, head) == P.PbaPageData(True, pba.BLOCK_NR_PAGES - 1)
    assert all(P.page_pba_data(k, head + i).in_block for i in range(1, pba.BLOCK_NR_PAGES))
    assert pba.nr_cached == 4 + pba.BLOCK_NR_PAGES - 1
    assert pba.stats.allocs_refilled == 1 and pba.stats.refills_by_order[9] == 2
    # The block was set to pkey 1 as a whole: still a PMD block, no PMD split.
    assert lm_leaf(k, head)[1] == 2 and lm_pkey(k, head) == 1
    assert P.pba_check_invariants(k) == []


def test_refill_order_fallback() -> None:
    """With no order-9 block left the refill takes order 4, then order 2; none → WARN, None."""
    k = booted()
    pba = P.pba_state(k)
    zone = k.zone
    assert zone is not None
    keep = alloc_pages(zone, NOWAIT, 4)  # leaves free buddies of orders 4..9 behind it
    keep2 = alloc_pages(zone, NOWAIT, 2)
    assert keep is not None and keep2 is not None
    drained = drain_to(k, 4)
    held = exhaust_buddy(k, 5)
    before = splits(k)
    pfn = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
    assert pfn is not None
    assert pba.stats.refills_by_order == {9: 1, 4: 1}
    assert P.page_pba_data(k, pfn) == P.PbaPageData(False, 0)  # not a block
    assert all(not P.page_pba_data(k, p).in_block for p in pba.cached_list[-15:])
    assert set(lm_pkeys(k, list(range(pfn, pfn + 16))).values()) == {1}
    # A sub-block range cannot keep a PMD block: it is PTE-mapped now (split here or before).
    assert lm_leaf(k, pfn)[1] == 3
    assert pba.stats.splits_by_refill == sum(splits(k).values()) - sum(before.values())
    # Drain again and remove order-4 blocks too: order 2 it is.
    held += exhaust_buddy(k, 3)
    drain_to(k, 4)
    pfn2 = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
    assert pfn2 is not None and pba.stats.refills_by_order == {9: 1, 4: 1, 2: 1}
    assert pba.nr_cached >= 4
    # Nothing left at all: WARN and None.
    held += exhaust_buddy(k, 0)
    drain_to(k, 4)
    nwarn = len(k.warnings)
    assert P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL) is None
    assert k.warnings[nwarn:] == ["pba: refill_pages_and_alloc_one() failed"]
    assert pba.stats.refill_alloc_failures == 1 and pba.stats.alloc_failures == 1
    assert P.pba_prepare_direct_map_split(k) == 0  # 4 cached: ready
    release(k, held)
    for p in drained:
        P.pba_pgtable_free(k, p)
    assert P.pba_check_invariants(k) == []


def test_prepare_page_zeroes_at_pgtables_level_and_charges() -> None:
    """__GFP_ZERO clears the protected page at KPKEYS_LVL_PGTABLES; __GFP_ACCOUNT charges."""
    k = booted()
    pba = P.pba_state(k)
    pfn = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
    assert pfn is not None
    va = page_address(k, pfn)
    with pytest.raises(Fault):  # protected: the default level cannot write it
        k.machine.store_u64(k.cpu, va, 0xDEAD)
    reg = kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)
    k.machine.store_u64(k.cpu, va + 8, 0xDEAD)
    kpkeys_restore_pkey_reg(k, reg)
    P.pba_pgtable_free(k, pfn)
    por = k.cpu.read_pkey_reg()
    again = P.pba_pgtable_alloc(k, GFP_PGTABLE_USER)
    assert again == pfn
    assert k.machine.load_u64(k.cpu, va + 8) == 0
    assert k.cpu.read_pkey_reg() == por
    assert pfn in pba.memcg_charged
    P.pba_pgtable_free(k, pfn)
    assert pfn not in pba.memcg_charged
    # A failing memcg charge returns the page to the cache.
    pba.memcg_limit = 0
    n = pba.nr_cached
    assert P.pba_pgtable_alloc(k, GFP_PGTABLE_USER) is None
    assert pba.nr_cached == n and pba.cached_list[-1] == pfn
    assert pba.stats.prepare_failures == 1
    assert P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL) == pfn  # not accounted: fine


def test_check_gfp_only_warns() -> None:
    """check_gfp VM_WARNs on missing GFP_KERNEL bits or foreign bits but never rejects."""
    k = booted()
    assert P.pba_pgtable_alloc(k, GFP_NOWAIT) is not None
    assert len(k.warnings) == 1 and k.warnings[0].startswith("VM_WARN: pba: gfp")
    assert P.pba_pgtable_alloc(k, GFP_KERNEL | __GFP_NOWARN) is not None
    assert "outside GFP_KERNEL|PBA_GFP_OPT_MASK" in k.warnings[1]
    for gfp in (GFP_KERNEL, GFP_PGTABLE_KERNEL, GFP_PGTABLE_USER, SPLIT_GFP):
        P.check_gfp(k, gfp)
    assert len(k.warnings) == 2


def test_recursive_refill_is_a_deadlock() -> None:
    """alloc_mutex held by the caller: ready for a split, and a nested refill deadlocks."""
    k = booted()
    pba = P.pba_state(k)
    drain_to(k, 4)
    for _ in range(2):
        P.pba_pgtable_alloc(k, SPLIT_GFP)
    assert not P.pba_ready_for_direct_map_split(k)
    pba.alloc_mutex_owner = P._current_context(k)
    assert P.alloc_mutex_locked(k) and P.pba_ready_for_direct_map_split(k)
    with pytest.raises(KernelBug, match="recursive locking"):
        P.refill_pages(k)
    with k.on_cpu(1):
        assert not P.alloc_mutex_locked(k)
        with pytest.raises(KernelBug, match="cannot wait"):
            P.refill_pages(k)
    pba.alloc_mutex_owner = None


# --- early region ----------------------------------------------------------------------------


def test_early_region_recorded_once() -> None:
    """Before init_late the refill is the early region; a second one WARNs and stays unprotected."""
    k = booted()
    k.static_branch_disable(P.PBA_CAN_SET_PKEY)
    k.pba = None  # a fresh allocator, as at mem_init (the old cache is simply dropped)
    P.pba_init(k)
    pba = P.pba_state(k)
    first = pba.early_head
    assert first is not None and pba.early_order == 9
    assert set(lm_pkeys(k, list(range(first, first + 512))).values()) == {0}
    assert P.refill_pages(k) == 0
    second = pba.cached_list[-512]
    assert second != first and pba.early_head == first
    assert len(k.warnings) == 1 and "early region already recorded" in k.warnings[0]
    P.pba_init_late(k)
    assert pba.early_region_protected
    assert set(lm_pkeys(k, list(range(first, first + 512))).values()) == {1}
    assert set(lm_pkeys(k, list(range(second, second + 512))).values()) == {0}
    # I3 holds except for the WARNed region.
    bad = [p for p, pk in lm_pkeys(k, pba.cached_list).items() if pk != 1]
    assert set(bad) == set(range(second, second + 512))


# --- 64K pages ------------------------------------------------------------------------------


def test_64k_pages_never_mark_blocks() -> None:
    """64K pages: no refill order equals BLOCK_ORDER (13), so no page is ever in_block."""
    k = boot(KernelConfig(page_size=65536, ram_size=1 << 30, nr_cpus=1))
    clear_boot_warnings(k)
    pba = P.pba_state(k)
    assert P.pba_enabled(k) and pba.BLOCK_ORDER == 13 and pba.refill_orders[0] == 9
    mm = k.mem_map
    assert mm is not None
    got = drain_to(k, 4)
    got.append(P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL))  # type: ignore[arg-type]
    for p in got[: len(got) // 2]:
        P.pba_pgtable_free(k, p)
    assert P.pba_shrink(k, 64) not in (P.SHRINK_STOP, 0)
    assert not np.any(mm.mapping)
    assert all(P.block_head_page(k, p) is None for p in pba.cached_list)
    assert P.pba_check_invariants(k) == []
    assert set(lm_pkeys(k, pba.cached_list).values()) == {1}


# --- shrinker --------------------------------------------------------------------------------


def test_shrink_count() -> None:
    """count = max(0, nr_cached - 16); SHRINK_EMPTY when that is 0."""
    k = booted()
    drain_to(k, 17)
    assert P.pba_shrink_count(k) == 1
    P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
    assert P.pba_shrink_count(k) == P.SHRINK_EMPTY
    drain_to(k, 5)
    assert P.pba_shrink_count(k) == P.SHRINK_EMPTY
    assert P.pba_shrink(k, 100) == P.SHRINK_STOP


def test_block_worth_shrinking() -> None:
    """block_worth_shrinking: nonblock < target, nonblock < nr_to_scan, target >= BLOCK/8."""
    k = booted()
    sc = P.shrink_control(nr_to_scan=100)
    assert P.block_worth_shrinking(k, 64, 0, sc)
    assert not P.block_worth_shrinking(k, 63, 0, sc)
    assert not P.block_worth_shrinking(k, 200, 200, sc)
    assert not P.block_worth_shrinking(k, 200, 100, sc)
    assert P.block_worth_shrinking(k, 200, 99, sc)


def test_fully_free_block_released_whole_without_split() -> None:
    """A completely free block is released whole — whatever nr_to_scan — with no split."""
    k = booted()
    pba = P.pba_state(k)
    head, _ = full_block(k)
    assert lm_leaf(k, head)[1] == 2
    before = splits(k)
    nr_free = k.zone.nr_free  # type: ignore[union-attr]
    assert P.pba_shrink(k, 10) == pba.BLOCK_NR_PAGES
    assert splits(k) == before
    assert pba.stats.blocks_released == 1 and pba.stats.splits_by_release == 0
    assert k.zone.nr_free == nr_free + pba.BLOCK_NR_PAGES  # type: ignore[union-attr]
    desc, level = lm_leaf(k, head)
    assert level == 2 and (desc >> 60) & 7 == 0  # still a PMD block, pkey back to DEFAULT
    assert not any(head <= p < head + pba.BLOCK_NR_PAGES for p in pba.cached_list)
    assert P.pba_check_invariants(k) == []


def test_whole_block_needs_enough_shrinkable_pages() -> None:
    """A free block with fewer than BLOCK_NR_PAGES shrinkable pages: SHRINK_STOP, not a split."""
    k = booted()
    pba = P.pba_state(k)
    drain_to(k, 4)
    head = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
    assert head is not None
    P.pba_pgtable_free(k, head)  # 516 cached, 500 shrinkable < 512
    before = splits(k)
    assert P.pba_shrink(k, 512) == P.SHRINK_STOP
    assert pba.nr_cached == 516 and splits(k) == before


def test_partial_block_shrink_marks_block_noncached() -> None:
    """A partial block worth shrinking loses block status entirely, in-use pages included."""
    k = booted()
    pba = P.pba_state(k)
    head = pba.early_head
    assert head is not None
    n0 = P.page_pba_data(k, head).block_nr_free
    in_use = [P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL) for _ in range(20)]
    assert all(p is not None and P.page_pba_data(k, p).in_block for p in in_use)
    assert P.page_pba_data(k, head).block_nr_free == n0 - 20
    before = splits(k)
    freed = P.pba_shrink(k, 100)
    assert freed == 100
    mm = k.mem_map
    assert mm is not None
    i = head - mm.base_pfn
    assert not np.any(mm.mapping[i : i + pba.BLOCK_NR_PAGES])  # all 512, in use or not
    assert splits(k).get("split_pmd", 0) == before.get("split_pmd", 0) + 1
    assert pba.stats.splits_by_release >= 1
    # The block's pages now count as non-block pages; freeing in-use ones changes no counter.
    for p in in_use:
        assert p is not None
        P.pba_pgtable_free(k, p)
    assert P.pba_check_invariants(k) == []
    released = [p for p in range(head, head + 512) if int(mm.refcount[p - mm.base_pfn]) == 0]
    assert len(released) == 100 and set(lm_pkeys(k, released).values()) == {0}
    # Now only non-block pages: the next shrink takes those.
    n = pba.nr_cached
    assert P.pba_shrink(k, 50) == 50 and pba.nr_cached == n - 50 - 0


def test_nonblock_pages_preferred_when_block_not_worth_it() -> None:
    """When a partial block is not worth shrinking, non-block pages go and the block stays."""
    k = booted()
    pba = P.pba_state(k)
    boot_head = pba.early_head
    assert boot_head is not None
    # 1. A partial shrink of the boot block turns its cached pages into non-block pages.
    assert P.pba_shrink(k, 30) == 30
    assert not P.page_pba_data(k, boot_head).in_block
    loose = pba.nr_cached
    assert all(P.block_head_page(k, p) is None for p in pba.cached_list)
    # 2. A new block B, 200 of its pages cached; the loose pages are kept aside.
    aside = drain_to(k, 4)
    head = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
    assert head is not None
    for _ in range(311):
        assert P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL) is not None
    assert P.page_pba_data(k, head).block_nr_free == 200
    # 3. nonblock (4 + loose) >= target (200): non-block pages go, B is untouched.
    for p in aside:
        P.pba_pgtable_free(k, p)
    assert 4 + len(aside) == loose
    b = P.page_pba_data(k, head)
    assert P.pba_shrink(k, 40) == 40
    assert P.page_pba_data(k, head) == b
    # 4. nonblock < target but nonblock >= nr_to_scan: still non-block pages.
    keep = drain_to(k, 4 + 200 + 100)  # takes the loose pages first (LIFO)...
    assert sum(P.block_head_page(k, p) is None for p in pba.cached_list) == 104
    assert P.pba_shrink(k, 60) == 60
    assert P.page_pba_data(k, head) == b
    # 5. nonblock < nr_to_scan and < target, target >= 64: now the block is worth it.
    assert P.block_worth_shrinking(k, 200, 44, P.shrink_control(nr_to_scan=100))
    assert P.pba_shrink(k, 100) == 100
    assert not P.page_pba_data(k, head).in_block
    # 6. A small block (< PBA_SHRINK_BLOCK_MIN_PAGES free) is never worth it.
    assert not P.block_worth_shrinking(k, 63, 0, P.shrink_control(nr_to_scan=100))
    for p in keep:
        P.pba_pgtable_free(k, p)
    assert P.pba_check_invariants(k) == []


def test_release_page_list_early_stop_leaks() -> None:
    """Without BBML2 a page inside a block cannot be reset: the loop stops and leaks the rest."""
    k = boot(CFG.replace(bbml2_noabort=False, rodata_full=False))  # blocks, never split
    # The PPA's partly used 2 MiB range cannot get its pkey either (a partial block).
    assert "ppa_finalize: set_pkey_pgtable_phys(free_range tail): -22" in k.warnings
    k.warnings.clear()
    pba = P.pba_state(k)
    assert P.pba_enabled(k)
    head = pba.early_head
    assert head is not None
    n0 = P.page_pba_data(k, head).block_nr_free
    # Allocate a few so the block is partial (and worth shrinking).
    in_use = [P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL) for _ in range(8)]
    assert P.page_pba_data(k, head).block_nr_free == n0 - 8
    n = pba.nr_cached
    assert P.pba_shrink(k, 100) == P.SHRINK_STOP  # nothing freed
    assert pba.stats.release_failures == 1
    assert pba.leaked_pages == 99 and len(pba.leaked_pfns) == 99
    assert pba.nr_cached == n - 100 + 1  # the failing page went back, 99 are lost
    leaked = set(pba.leaked_pfns)
    assert not leaked & set(pba.cached_list) and not leaked & set(in_use)
    mm = k.mem_map
    assert mm is not None
    assert all(int(mm.refcount[p - mm.base_pfn]) == 1 for p in leaked)  # never freed
    assert set(lm_pkeys(k, sorted(leaked)).values()) == {1}
    assert P.pba_check_invariants(k) == []


def test_release_whole_block_failure_readds_all_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the whole-block pkey reset fails every page returns to the cache as a non-block page."""
    k = booted()
    pba = P.pba_state(k)
    head, _ = full_block(k)
    n = pba.nr_cached
    calls: list[int] = []

    def failing(k2: Kernel, addr: int, numpages: int, pkey: int) -> int:
        calls.append(numpages)
        return -12

    monkeypatch.setattr(P, "set_memory_pkey", failing)
    assert P.pba_shrink(k, 1) == P.SHRINK_STOP
    assert calls == [512]
    assert pba.nr_cached == n and pba.stats.release_failures == 1
    assert not P.page_pba_data(k, head).in_block
    assert sorted(pba.cached_list[-512:]) == list(range(head, head + 512))
    assert P.pba_check_invariants(k) == []


def test_memory_pressure_runs_the_shrinker() -> None:
    """An allocation failure in the buddy allocator reclaims a free PBA block (do_shrink_slab)."""
    k = booted()
    pba = P.pba_state(k)
    zone = k.zone
    assert zone is not None
    head, _ = full_block(k)
    held = exhaust_buddy(k, 0)
    pfn = alloc_pages(zone, GFP_KERNEL, 9)
    assert pfn == head  # the released block is the one handed out
    assert pba.shrinker is not None and pba.shrinker.nr_calls == 1
    assert pba.stats.blocks_released == 1
    held.append((pfn, 9))
    release(k, held)
    assert P.pba_check_invariants(k) == []


def test_events_and_time_series() -> None:
    """pba_* events are emitted; the (op, nr_cached) series stays bounded."""
    counter = CountingInstrument()
    k = boot(CFG, instruments=[counter])
    clear_boot_warnings(k)
    pba = P.pba_state(k)
    pba.series = P.PbaTimeSeries(max_samples=16)
    n0 = pba.nr_cached
    for _ in range(100):
        p = P.pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)
        assert p is not None
        P.pba_pgtable_free(k, p)
    c = counter.counts
    assert c[P.PBA_REFILL] == 1 and c[P.PBA_ALLOC] >= 100 and c[P.PBA_FREE] == 100
    s = pba.series
    assert s.op_index == 200 and len(s.samples) < 16
    assert [i for i, _ in s.samples] == sorted(i for i, _ in s.samples)
    assert all(n in (n0 - 1, n0) for _, n in s.samples)


# --- the state machine --------------------------------------------------------------------

SM_CFG = KernelConfig(ram_size=128 << 20, nr_cpus=2)
#: Split counts of every run of the state machine, written at module teardown.
SPLIT_LOG: list[dict[str, Any]] = []


class PbaStateMachine(RuleBasedStateMachine):
    """Random PBA workloads on a booted kernel; I1-I5 and the split budget after every step."""

    k: Kernel

    @initialize()
    def boot_kernel(self) -> None:
        self.k = boot(SM_CFG)
        clear_boot_warnings(self.k)
        self.pba = P.pba_state(self.k)
        self.in_use: set[int] = set()  # our direct PBA allocations
        self.hook_in_use: set[int] = set()  # PTPs handed out through pagetable_alloc
        self.owned: set[int] = set(self.pba.cached_list)
        self.prev_cached: set[int] = set(self.pba.cached_list)
        self.hog: list[tuple[int, int]] = []
        self.ro_areas: list[int] = []
        self.vm_pages: set[int] = set()
        self.step_splits: dict[str, int] = {}
        self.step_alloc: set[int] = set()
        self.steps = 0
        self.i1_checked = 0
        k = self.k
        orig_alloc, orig_free = k.pgtable_alloc_hook, k.pgtable_free_hook
        orig_prepare = k.prepare_direct_map_split

        def alloc_hook(k2: Kernel, gfp: int, order: int) -> int | None:
            pfn: int | None = orig_alloc(k2, gfp, order)
            if pfn is not None:
                self.hook_in_use.add(pfn)
                self.step_alloc.add(pfn)
            return pfn

        def free_hook(k2: Kernel, pfn: int, order: int) -> None:
            self.hook_in_use.discard(pfn)
            orig_free(k2, pfn, order)

        def prepare(k2: Kernel) -> int:
            ret: int = orig_prepare(k2)
            if ret == 0 and not P.alloc_mutex_locked(k2):
                # I1: outside a refill, a successful prepare leaves >= 4 cached.
                assert self.pba.nr_cached >= P.PBA_NR_RESERVED_PAGES
                self.i1_checked += 1
            return ret

        k.pgtable_alloc_hook = alloc_hook
        k.pgtable_free_hook = free_hook
        k.prepare_direct_map_split = prepare
        self.stats0 = dict(k.linear_map_stats)

    def _begin(self) -> tuple[int, int, int, dict[str, int]]:
        self.step_alloc = set()
        st_ = self.pba.stats
        self.orders0 = dict(st_.refills_by_order)
        return st_.pages_released, self.pba.leaked_pages, st_.refills, dict(self.k.linear_map_stats)

    def _splits_since(self, before: dict[str, int]) -> dict[str, int]:
        now = self.k.linear_map_stats
        return {
            kd: now.get(kd, 0) - before.get(kd, 0) for kd in now if now[kd] != before.get(kd, 0)
        }

    def _alloc_one(self, gfp: int) -> int | None:
        """One PBA allocation, checking I2 and that a cache hit never splits the linear map."""
        st_ = self.pba.stats
        before = self.pba.nr_cached
        ref0, scans0, o9 = st_.refills, st_.shrink_scans, st_.refills_by_order.get(9, 0)
        sp0 = dict(self.k.linear_map_stats)
        if gfp & GFP_SPLIT_BIT:
            # The split contract (§4.8): prepare before taking a split table.  Raw split
            # allocations that drain the reserve make the next refill's own split find an
            # empty cache and re-enter the refill: the alloc_mutex deadlock.
            if P.pba_prepare_direct_map_split(self.k):
                return None
            assert P.pba_ready_for_direct_map_split(self.k)
            before = self.pba.nr_cached
        pfn = P.pba_pgtable_alloc(self.k, gfp)
        after = self.pba.nr_cached
        refilled = st_.refills > ref0
        if not gfp & GFP_SPLIT_BIT:
            assert after >= min(before, P.PBA_NR_RESERVED_PAGES)  # I2
            if not refilled:
                assert pfn is None or before > P.PBA_NR_RESERVED_PAGES
        if pfn is not None:
            self.in_use.add(pfn)
            self.step_alloc.add(pfn)
            if gfp & GFP_ZERO_BIT:
                assert not np.any(self.k.machine.mem.frame_ro(pfn))
        sp = self._splits_since(sp0)
        if not refilled:
            assert not sp, f"an allocation from the cache split the linear map: {sp}"
        elif st_.shrink_scans == scans0 and st_.refills_by_order.get(9, 0) > o9:
            # A whole-block refill keeps the PMD block: at most PUD/contPMD splits.
            assert not sp.get("split_pmd") and not sp.get("split_contpte"), sp
        return pfn

    @rule(gfp=pba_gfps)
    def alloc(self, gfp: int) -> None:
        rel0, leak0, _, sp0 = self._begin()
        self._alloc_one(gfp)
        self._after_step(rel0, leak0, self._splits_since(sp0))

    @rule(n=pba_batch_sizes, gfp=pba_gfps)
    def alloc_batch(self, n: int, gfp: int) -> None:
        """Many allocations in a row: drains the cache, refills whole blocks."""
        rel0, leak0, _, sp0 = self._begin()
        for _ in range(n):
            self._alloc_one(gfp)
        self._after_step(rel0, leak0, self._splits_since(sp0))

    @precondition(lambda self: bool(self.in_use))
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        rel0, leak0, _, sp0 = self._begin()
        pfn = data.draw(st.sampled_from(sorted(self.in_use)))
        self.in_use.discard(pfn)
        P.pba_pgtable_free(self.k, pfn)
        assert self.pba.cached_list[-1] == pfn
        sp = self._splits_since(sp0)
        assert not sp
        self._after_step(rel0, leak0, sp)

    @precondition(lambda self: bool(self.in_use))
    @rule(fraction=st.sampled_from((0.25, 0.5, 1.0)), order=st.sampled_from(("asc", "desc")))
    def free_batch(self, fraction: float, order: str) -> None:
        """Free a share of the in-use pages (all of them makes blocks completely free)."""
        rel0, leak0, _, sp0 = self._begin()
        pages = sorted(self.in_use, reverse=order == "desc")
        for pfn in pages[: max(1, int(len(pages) * fraction))]:
            self.in_use.discard(pfn)
            P.pba_pgtable_free(self.k, pfn)
        sp = self._splits_since(sp0)
        assert not sp
        self._after_step(rel0, leak0, sp)

    @rule()
    def cycle_block(self) -> None:
        """Drain the cache into a fresh refill, free it all, shrink: a whole block comes back."""
        rel0, leak0, _, sp0 = self._begin()
        got = []
        while self.pba.nr_cached > P.PBA_NR_RESERVED_PAGES:
            pfn = self._alloc_one(GFP_PGTABLE_KERNEL)
            assert pfn is not None
            got.append(pfn)
        pfn = self._alloc_one(GFP_PGTABLE_KERNEL)  # refill (and alloc one)
        if pfn is not None:
            got.append(pfn)
        for p in got:
            self.in_use.discard(p)
            P.pba_pgtable_free(self.k, p)
        blocks0, rb0 = self.pba.stats.blocks_released, self.pba.stats.splits_by_release
        P.pba_shrink(self.k, 1)
        if self.pba.stats.blocks_released > blocks0:
            assert self.pba.stats.splits_by_release == rb0  # a whole block: no split
        self._after_step(rel0, leak0, self._splits_since(sp0))

    @rule(nr=pba_shrink_requests)
    def shrink(self, nr: int) -> None:
        rel0, leak0, _, sp0 = self._begin()
        blocks0 = self.pba.stats.blocks_released
        rb0 = self.pba.stats.splits_by_release
        ret = P.pba_shrink(self.k, nr)
        assert ret == P.SHRINK_STOP or 0 < ret <= max(nr, self.pba.BLOCK_NR_PAGES)
        if self.pba.stats.blocks_released > blocks0:
            assert self.pba.stats.splits_by_release == rb0  # a whole block: no split
        self._after_step(rel0, leak0, self._splits_since(sp0))

    @rule(order=pba_pressure_orders)
    def memory_pressure(self, order: int) -> None:
        """Allocate from the buddy allocator until an allocation fails (reclaim runs)."""
        rel0, leak0, _, sp0 = self._begin()
        zone = self.k.zone
        assert zone is not None
        while (pfn := alloc_pages(zone, GFP_KERNEL_NOWARN, order)) is not None:
            self.hog.append((pfn, order))
        self._after_step(rel0, leak0, self._splits_since(sp0))

    @precondition(lambda self: bool(self.hog))
    @rule()
    def relieve_pressure(self) -> None:
        rel0, leak0, _, sp0 = self._begin()
        release(self.k, self.hog)
        self.hog = []
        self._after_step(rel0, leak0, self._splits_since(sp0))

    @rule()
    def set_memory_ro_split(self) -> None:
        """vmalloc a page and make it read-only: its linear alias is split (rodata=full)."""
        rel0, leak0, _, sp0 = self._begin()
        addr = vmalloc(self.k, self.k.pgt.PAGE_SIZE)
        if addr is not None:
            ret = set_memory_ro(self.k, addr, 1)
            assert ret in (0, -12)
            self.ro_areas.append(addr)
            pfn = vmalloc_to_page(self.k, addr)
            assert pfn is not None
            self.vm_pages.add(pfn)
            if ret == 0 and not self.hog:
                assert lm_leaf(self.k, pfn)[1] == 3
        self._after_step(rel0, leak0, self._splits_since(sp0))

    @precondition(lambda self: bool(self.ro_areas))
    @rule()
    def vfree_ro(self) -> None:
        rel0, leak0, _, sp0 = self._begin()
        addr = self.ro_areas.pop()
        assert set_memory_rw(self.k, addr, 1) in (0, -12)
        vfree(self.k, addr)
        self._after_step(rel0, leak0, self._splits_since(sp0))

    def _after_step(self, rel0: int, leak0: int, sp: dict[str, int]) -> None:
        self.steps += 1
        for kd, n in sp.items():
            self.step_splits[kd] = self.step_splits.get(kd, 0) + n
        pba = self.pba
        cached = set(pba.cached_list)
        # Pages enter the PBA only through refills.
        refilled = sum(
            (n - self.orders0.get(o, 0)) << o for o, n in pba.stats.refills_by_order.items()
        )
        fresh = (cached | self.step_alloc) - self.owned
        assert len(fresh) <= refilled, (len(fresh), refilled)
        self.owned |= fresh
        # Pages leave the cache only to an allocation or through the shrinker.
        left = self.prev_cached - cached - self.step_alloc
        released = pba.stats.pages_released - rel0
        leaked = pba.leaked_pages - leak0
        gone = [p for p in left if p not in self.hook_in_use and p not in self.in_use]
        assert len(gone) <= released + leaked, (len(gone), released, leaked)
        mm = self.k.mem_map
        assert mm is not None
        hogged = {p for pfn, o in self.hog for p in range(pfn, pfn + (1 << o))}
        leaked_set = set(pba.leaked_pfns)
        for p in gone:
            rc = int(mm.refcount[p - mm.base_pfn])
            assert rc == 0 or p in hogged or p in leaked_set or p in self.vm_pages, p
        self.prev_cached = cached

    @invariant()
    def allocator_invariants(self) -> None:
        if not hasattr(self, "k"):
            return
        assert P.pba_check_invariants(self.k) == []  # I4, I5, structure
        pba = self.pba
        # I3 through the real linear map: cached pages and PTPs in use carry pkey 1.
        pages = list(pba.cached_list) + sorted(self.in_use) + sorted(self.hook_in_use)
        keys = lm_pkeys(self.k, pages)
        bad = [p for p, pk in keys.items() if pk != 1]
        assert not bad, f"I3: {len(bad)} pages without pkey 1, e.g. {bad[:4]}"
        assert not self.k.warnings or all("VM_WARN" not in w for w in self.k.warnings)

    def teardown(self) -> None:
        if hasattr(self, "k"):
            s = self.pba.stats
            SPLIT_LOG.append(
                {
                    "steps": self.steps,
                    "splits_total": self._splits_since(self.stats0),
                    "splits_in_steps": self.step_splits,
                    "splits_by_refill": s.splits_by_refill,
                    "splits_by_release": s.splits_by_release,
                    "refills_by_order": dict(s.refills_by_order),
                    "blocks_released": s.blocks_released,
                    "pages_released": s.pages_released,
                    "leaked_pages": self.pba.leaked_pages,
                    "i1_checks": self.i1_checked,
                }
            )


TestPbaStateMachine = PbaStateMachine.TestCase
TestPbaStateMachine.settings = settings(
    max_examples=30,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestPbaStateMachine = pytest.mark.slow(TestPbaStateMachine)


@pytest.fixture(scope="module", autouse=True)
def _write_split_log(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Write the state machine's per-run split counts to a JSON file under pytest's tmp dir."""
    yield
    if SPLIT_LOG:
        out: Path = tmp_path_factory.mktemp("pba") / "pba_split_counts.json"
        out.write_text(json.dumps(SPLIT_LOG, indent=1))
        total_steps = sum(r["steps"] for r in SPLIT_LOG)
        print(
            f"\nPBA state machine: {len(SPLIT_LOG)} runs, {total_steps} steps; "
            f"split counts in {out}"
        )
