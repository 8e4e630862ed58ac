"""Rick Edgecombe's "PKS write protected page tables", RFC v2 (2021), on the x86 kernel.

Spec kpkeys-series.md §9 (the series in detail; §4 for the kpkeys PBA it is
contrasted with) and threats-and-peers.md §1.3.  Selected by
``config.series = "pks-rfc2"`` (x86 only); ``install_kpkeys_hardened_pgtables``
returns early into :func:`install_pks_rfc2`.  Three parts:

* **The write window.**  Rick's ``enable_pgtable_write()`` /
  ``disable_pgtable_write()`` around the page-table setters flip IA32_PKRS
  for the page-table key exactly as the kpkeys ``kpkeys_hardened_pgtables``
  guard does around the same helpers, so the model reuses that guard
  (:class:`~kpkeys_sim.kernel.kpkeys.hardened_pgtables.HardenedPgtables`)
  and its static key.  Rick's series had no lazy-MMU batching; the model
  installs the batching hooks only if ``config.lazy_mmu_batching`` asks for
  them (the ``pks-rfc2`` defense turns it off).
* **The grouped-page cache** (v2 03/19, 06/19): every page table after
  ``mem_init`` comes from :func:`get_grouped_page` and goes back through
  :func:`free_grouped_page` (``k.pgtable_alloc_hook``/``k.pgtable_free_hook``).
  A refill allocates one huge-page-sized block (order 9), gives the whole
  2 MiB the page-table key with one ``set_memory_pkey`` (the "perm callback"),
  ``split_page``s it, returns page 0 and lists pages 1..511; if the block
  cannot be had, one order-0 page with its own ``set_memory_pkey``.  Freed
  pages keep their key and are reused most-recently-freed first.  Its
  shrinker (:class:`GroupedPageShrinker`, in the buddy zone's shrinker list
  like the PBA's) resets the key of *any* cached pages and frees them at
  order 0, oldest first: it has no notion of blocks, so releasing one page
  of a 2 MiB group splits that group's direct-map leaf.
* **Direct-map split tables** (v2 17/19): :func:`reserve_page_tables` sets
  aside, at boot, enough tables to map the whole direct map at 4K —
  ``(size >> PUD_SHIFT) + (size >> PMD_SHIFT)`` pages, from memblock in
  2 MiB chunks — on ``tables_cache``.  CPA's ``split_large_page`` takes its
  new table from there (:meth:`DmapTableReserve.alloc_dmap_table`, installed
  as the x86 CPA's :class:`~kpkeys_sim.kernel.arch.x86_set_memory.DmapTableSource`);
  when the reserve is empty after init it WARNs and uses an unprotected
  buddy page.  :func:`init_pks_dmap_tables` (a late initcall) protects every
  reserved table, then walks all of ``init_mm``'s kernel tables and gives
  the key to every table that lacks it.  That walk reaches everything in
  the tree: the boot tables of ``init_mem_mapping``, the vmemmap's tables,
  the image's static tables (``init_top_pgt``, ``level3/level2_kernel_pgt``)
  and the fixmap's (``level2_fixmap_pgt``, ``level1_fixmap_pgt``) — the spec
  gives no exception for the fixmap, and x86 writes fixmap entries through
  the guarded ``set_pte``, so protecting them breaks nothing.

Not modelled (docs/model-assumptions.md, "PKS page tables (Rick Edgecombe,
RFC v2, 2021)"): NUMA (one node, so one list and no round-robin),
``get_grouped_page_atomic()``, the soft mode, the debug checker, the boot
parameters, memory hotplug, the shrinker's ``gfp_mask`` test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kpkeys_sim.kernel.arch.x86_pgtable_types import _PAGE_PKEY_MASK
from kpkeys_sim.kernel.arch.x86_set_memory import (
    lookup_address,
    set_memory_pkey,
)
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import KPKEYS_PKEY_DEFAULT, KPKEYS_PKEY_PGTABLES
from kpkeys_sim.kernel.kpkeys.hardened_pgtables import (
    KPKEYS_HARDENED_PGTABLES_KEY,
    HardenedPgtables,
    kpkeys_lazy_mmu_enter,
    kpkeys_lazy_mmu_exit,
)
from kpkeys_sim.kernel.kpkeys.warn import WARN_ON
from kpkeys_sim.kernel.mm import gfp as _gfp
from kpkeys_sim.kernel.mm.memblock import MEMBLOCK_ALLOC_ACCESSIBLE, memblock_phys_alloc_range
from kpkeys_sim.kernel.mm.page import pfn_runs
from kpkeys_sim.kernel.mm.page_alloc import (
    SHRINK_BATCH,
    SHRINK_EMPTY,
    BuddyAllocator,
    __free_page,
    __free_pages,
    alloc_pages,
    split_page,
)
from kpkeys_sim.kernel.mm.pgtable import kernel_pgtable_walk, ptep_get

__all__ = [
    "GPC_BLOCK_ORDER",
    "DmapTableReserve",
    "GroupedPageCache",
    "GroupedPageShrinker",
    "PksRfc2",
    "direct_map_pkey",
    "free_grouped_page",
    "get_grouped_page",
    "gpc_shrink_scan",
    "init_pks_dmap_tables",
    "install_pks_rfc2",
    "pks_rfc2_state",
    "reserve_page_tables",
    "reserve_size_pages",
]

#: ``HUGETLB_PAGE_ORDER`` on x86-64: one 2 MiB block per refill.
GPC_BLOCK_ORDER = 9
#: ``DEFAULT_SEEKS`` (include/linux/shrinker.h).
DEFAULT_SEEKS = 2
#: mm/vmscan.c: reclaim starts at this priority and goes down to 0.
DEF_PRIORITY = 12
#: ``memblock`` chunk of the pre-bootmem reserve (``reserve_pre_boot``): 2 MiB.
_CHUNK_PAGES = 512
_PAGE_SHIFT = 12
_PUD_SHIFT = 30
_PMD_SHIFT = 21
#: Attribute of ``k`` holding the :class:`PksRfc2` state.


def reserve_size_pages(size: int) -> int:
    """Tables to map ``size`` bytes of direct map at 4K.

    ``(size >> PUD_SHIFT) + (size >> PMD_SHIFT)``: a PMD table per GiB, a PTE table per 2 MiB.
    """
    return (size >> _PUD_SHIFT) + (size >> _PMD_SHIFT)


def _zone(k: Kernel) -> BuddyAllocator:
    zone = k.zone
    if zone is None:
        raise KernelBug("grouped-page cache used before mem_init(): no buddy allocator")
    return zone


def _set_pkey(k: Kernel, pfn: int, numpages: int, pkey: int) -> int:
    return set_memory_pkey(k, k.pgt.va(pfn << _PAGE_SHIFT), numpages, pkey)


def direct_map_pkey(k: Kernel, pfn: int) -> int:
    """The pkey of ``pfn``'s direct-map leaf (what Rick's walk tests)."""
    ptr, _level = lookup_address(k, k.pgt.va(pfn << _PAGE_SHIFT))
    if ptr is None:
        return KPKEYS_PKEY_DEFAULT
    return (ptep_get(k, ptr) & _PAGE_PKEY_MASK) >> 59


# --- the grouped-page cache (v2 03/19, 06/19) -----------------------------------------------------


@dataclass(slots=True)
class GpcStats:
    """What the cache did (observability, not kernel state)."""

    block_refills: int = 0
    single_refills: int = 0
    refill_failures: int = 0
    allocs: int = 0
    frees: int = 0
    shrunk_pages: int = 0
    shrink_failures: int = 0


@dataclass(slots=True)
class GroupedPageCache:
    """``struct grouped_page_cache`` for one node: the free list (end = MRU), gfp, shrinker."""

    gfp: int = _gfp.GFP_KERNEL
    free_list: list[int] = field(default_factory=list)
    shrinker: GroupedPageShrinker | None = None
    stats: GpcStats = field(default_factory=GpcStats)

    @property
    def nr_cached(self) -> int:
        """Pages on the free list."""
        return len(self.free_list)


def _refill(k: Kernel, gpc: GroupedPageCache) -> int | None:
    """A block refill (page 0 returned, 1..511 listed), or one order-0 page; pfn or None."""
    zone = _zone(k)
    page = alloc_pages(zone, gpc.gfp | _gfp.__GFP_NOWARN, GPC_BLOCK_ORDER)
    if page is not None:
        if _set_pkey(k, page, 1 << GPC_BLOCK_ORDER, KPKEYS_PKEY_PGTABLES):
            __free_pages(zone, page, GPC_BLOCK_ORDER)
            gpc.stats.refill_failures += 1
            return None
        split_page(zone, page, GPC_BLOCK_ORDER)
        gpc.free_list.extend(range(page + 1, page + (1 << GPC_BLOCK_ORDER)))
        gpc.stats.block_refills += 1
        return page
    page = alloc_pages(zone, gpc.gfp, 0)  # no grouping guarantee
    if page is None:
        gpc.stats.refill_failures += 1
        return None
    if _set_pkey(k, page, 1, KPKEYS_PKEY_PGTABLES):
        __free_page(zone, page)
        gpc.stats.refill_failures += 1
        return None
    gpc.stats.single_refills += 1
    return page


def get_grouped_page(k: Kernel, gpc: GroupedPageCache) -> int | None:
    """``get_grouped_page(node, gpc)``: the MRU cached page, else a refill; pfn or None.

    In interrupt context: WARN and NULL (the atomic variant is not modelled).
    """
    if k.hardirq_count[k.cpu.cpu_id] > 0:
        WARN_ON(k, True, "get_grouped_page() in interrupt context")
        return None
    if gpc.free_list:
        pfn = gpc.free_list.pop()
    else:
        refilled = _refill(k, gpc)
        if refilled is None:
            return None
        pfn = refilled
    gpc.stats.allocs += 1
    return pfn


def free_grouped_page(k: Kernel, gpc: GroupedPageCache, pfn: int) -> None:
    """``free_grouped_page(gpc, page)``: back on the list as the MRU page, key kept."""
    gpc.free_list.append(pfn)
    gpc.stats.frees += 1


def gpc_shrink_scan(k: Kernel, gpc: GroupedPageCache, nr_to_scan: int) -> int:
    """The shrinker's scan: reset the key of up to ``nr_to_scan`` cached pages, free them.

    Oldest first (``list_lru_walk``), with no block awareness: a page inside
    a 2 MiB group whose direct-map leaf is still 2M makes CPA split it.  On a
    failed key reset the page goes back on the list and the scan stops.
    """
    freed = 0
    zone = _zone(k)
    while freed < nr_to_scan and gpc.free_list:
        pfn = gpc.free_list.pop(0)
        ret = _set_pkey(k, pfn, 1, KPKEYS_PKEY_DEFAULT)
        if ret:
            WARN_ON(k, ret, f"grouped page cache: set_memory_pkey(pfn {pfn:#x}, 0): {ret}")
            gpc.free_list.insert(0, pfn)
            gpc.stats.shrink_failures += 1
            break
        __free_page(zone, pfn)
        freed += 1
    gpc.stats.shrunk_pages += freed
    return freed


class GroupedPageShrinker:
    """The cache's ``struct shrinker`` (``DEFAULT_SEEKS``), called by the zone on failure.

    ``(nr_to_reclaim) -> freed``: direct reclaim's priority loop for this one
    shrinker, ``do_shrink_slab`` without deferral: ``freeable = count``;
    ``total_scan = min((freeable >> priority) * 4 / seeks, 2 * freeable)``;
    scan in batches of ``SHRINK_BATCH`` while ``total_scan >= batch`` or
    ``total_scan >= freeable``; stop once ``nr_to_reclaim`` pages were freed.
    """

    __slots__ = ("gpc", "k", "nr_calls")

    def __init__(self, k: Kernel, gpc: GroupedPageCache) -> None:
        self.k = k
        self.gpc = gpc
        self.nr_calls = 0

    def __call__(self, nr_to_reclaim: int) -> int:
        self.nr_calls += 1
        freed = 0
        for priority in range(DEF_PRIORITY, -1, -1):
            freeable = self.gpc.nr_cached
            if not freeable:
                return freed if freed else SHRINK_EMPTY
            total_scan = min((freeable >> priority) * 4 // DEFAULT_SEEKS, 2 * freeable)
            while total_scan >= SHRINK_BATCH or (total_scan and total_scan >= freeable):
                n = min(SHRINK_BATCH, total_scan)
                got = gpc_shrink_scan(self.k, self.gpc, n)
                if not got:
                    break
                freed += got
                total_scan -= n
                freeable = self.gpc.nr_cached
                if not freeable:
                    break
            if freed >= nr_to_reclaim:
                break
        return freed


# --- the direct-map table reserve (v2 17/19) ------------------------------------------------------


@dataclass(slots=True)
class DmapTableReserve:
    """``tables_cache`` (the llist of reserved tables) and what boot reserved.

    ``chunks`` are the memblock chunks ``(first pfn, pages)``; ``reserved``
    the pages set aside at boot (the memory cost); ``initialized`` is set by
    :func:`init_pks_dmap_tables`.
    """

    tables_cache: list[int] = field(default_factory=list)
    chunks: list[tuple[int, int]] = field(default_factory=list)
    reserved: int = 0
    initialized: bool = False
    taken: int = 0
    returned: int = 0
    unprotected_fallbacks: int = 0

    def alloc_dmap_table(self, k: Kernel) -> int | None:
        """``alloc_dmap_table()``: a reserved table; empty after init → WARN, unprotected page."""
        if self.tables_cache:
            self.taken += 1
            return self.tables_cache.pop()  # the split fills all 512 entries
        if self.initialized:
            WARN_ON(k, True, "pks: direct-map table reserve empty, using an unprotected page")
        if k.zone is None:
            return None
        pfn = alloc_pages(k.zone, _gfp.GFP_KERNEL, 0)
        if pfn is not None:
            self.unprotected_fallbacks += 1
        return pfn

    def free_dmap_table(self, k: Kernel, pfn: int) -> None:
        """``free_dmap_table()``: back onto ``tables_cache``."""
        self.returned += 1
        self.tables_cache.append(pfn)


def reserve_page_tables(k: Kernel, reserve: DmapTableReserve) -> int:
    """``reserve_page_tables()``: set aside tables for a fully split direct map; pages reserved.

    Before bootmem (``reserve_pre_boot``): memblock in 2 MiB chunks, the last
    chunk only as large as needed.  The direct map's size is the RAM span.
    """
    mb = k.memblock
    if mb is None:
        raise KernelBug("reserve_page_tables() without memblock")
    mem = k.machine.mem
    need = reserve_size_pages(mem.end - mem.base)
    left = need
    while left:
        n = min(left, _CHUNK_PAGES)
        size = n << _PAGE_SHIFT
        pa = memblock_phys_alloc_range(
            mb, size, size if n == _CHUNK_PAGES else 1 << _PAGE_SHIFT, 0, MEMBLOCK_ALLOC_ACCESSIBLE
        )
        if not pa:
            WARN_ON(k, True, "pks: reserve_page_tables: memblock allocation failed")
            break
        first = pa >> _PAGE_SHIFT
        reserve.chunks.append((first, n))
        reserve.tables_cache.extend(range(first, first + n))
        left -= n
    reserve.reserved = need - left
    k.printk(
        f"x86/mm: PKS page tables: reserved {reserve.reserved} direct-map split tables "
        f"({(reserve.reserved << _PAGE_SHIFT) >> 10} KiB) for {(mem.end - mem.base) >> 20} MiB"
    )
    return reserve.reserved


def init_pks_dmap_tables(k: Kernel) -> None:
    """``init_pks_dmap_tables()`` (late initcall): protect the reserve, then walk ``init_mm``.

    1. ``set_memory_pkey`` on every reserved table still on ``tables_cache``
       (by chunk runs, one call per contiguous run);
    2. walk all of ``init_mm`` and give the key to any table that lacks it.
       A split the walk's own ``set_memory_pkey`` causes takes its table from
       the reserve, protected in step 1; CPA never merges, so the walk cannot
       lose a table.
    """
    st = pks_rfc2_state(k)
    if st is None or not st.installed:
        return
    reserve = st.reserve
    for first, n in pfn_runs(sorted(reserve.tables_cache)):
        ret = _set_pkey(k, first, n, KPKEYS_PKEY_PGTABLES)
        WARN_ON(k, ret, f"init_pks_dmap_tables: reserve {first:#x}+{n}: {ret}")
    reserve.initialized = True
    fixed = 0
    if not st.skip_walk:
        for table_pa in kernel_pgtable_walk(k):
            pfn = table_pa >> _PAGE_SHIFT
            if direct_map_pkey(k, pfn) != KPKEYS_PKEY_PGTABLES:
                ret = _set_pkey(k, pfn, 1, KPKEYS_PKEY_PGTABLES)
                WARN_ON(k, ret, f"init_pks_dmap_tables: table {pfn:#x}: {ret}")
                fixed += 1
    st.walk_protected = fixed
    k.printk(
        f"x86/mm: PKS page tables: {len(reserve.tables_cache)} reserved tables protected, "
        f"{fixed} boot tables protected by the init_mm walk"
    )


# --- installation --------------------------------------------------------------------------------


@dataclass(slots=True)
class PksRfc2:
    """The per-kernel state of the series: the cache, the reserve, what the walk did.

    ``skip_walk`` is a model knob for negative controls (tests): the late
    initcall protects the reserve but does not walk ``init_mm``.
    """

    gpc: GroupedPageCache = field(default_factory=GroupedPageCache)
    reserve: DmapTableReserve = field(default_factory=DmapTableReserve)
    installed: bool = False
    walk_protected: int = 0
    skip_walk: bool = False


def pks_rfc2_state(k: Kernel) -> PksRfc2 | None:
    """The :class:`PksRfc2` installed on ``k``, or None."""
    return k.pks_rfc2


def _pgtable_alloc(k: Kernel, gfp: int, order: int) -> int | None:
    st = pks_rfc2_state(k)
    if st is None or order:
        raise KernelBug(f"pks-rfc2: pagetable_alloc(order={order}): the cache is order 0 only")
    pfn = get_grouped_page(k, st.gpc)
    if pfn is not None and gfp & _gfp.__GFP_ZERO:
        with k.pgtables_guard(k):
            k.machine.clear_page(k.cpu, k.pgt.va(pfn << _PAGE_SHIFT))
    return pfn


def _pgtable_free(k: Kernel, pfn: int, order: int) -> None:
    st = pks_rfc2_state(k)
    if st is None or order:
        raise KernelBug(f"pks-rfc2: pagetable_free(order={order}): the cache is order 0 only")
    free_grouped_page(k, st.gpc, pfn)


def _pks_rfc2_mem_init(k: Kernel) -> None:
    """At ``mem_init``: the key, the allocator hooks and the shrinker."""
    st = pks_rfc2_state(k)
    if st is None:
        return
    k.static_branch_enable(KPKEYS_HARDENED_PGTABLES_KEY)
    k.pgtable_alloc_hook = _pgtable_alloc
    k.pgtable_free_hook = _pgtable_free
    st.gpc.shrinker = GroupedPageShrinker(k, st.gpc)
    _zone(k).shrinkers.append(st.gpc.shrinker)
    st.installed = True
    k.printk("x86/mm: PKS page tables: enabled (pks-rfc2, grouped-page cache)")


def install_pks_rfc2(k: Kernel) -> HardenedPgtables:
    """Wire Rick's series into ``k`` (called from ``setup_arch`` before ``init_mem_mapping``).

    Returns the guard state (:class:`HardenedPgtables`).  Without PKS on the
    CPUs only the (never-enabled) guard is installed.
    """
    from kpkeys_sim.kernel.arch import arch_kpkeys_enabled

    if k.config.arch != "x86":
        raise KernelBug("pks-rfc2 on a non-x86 kernel")
    hp = HardenedPgtables(k)
    k.pgtables_guard = hp.guard
    k.pgtables_guard_repeat = hp.guard_repeat
    if k.config.lazy_mmu_batching:
        k.lazy_mmu_enter_hooks.append(kpkeys_lazy_mmu_enter)
        k.lazy_mmu_leave_hooks.append(kpkeys_lazy_mmu_exit)
    if not arch_kpkeys_enabled(k):
        return hp
    st = PksRfc2()
    k.pks_rfc2 = st
    reserve_page_tables(k, st.reserve)
    k.dmap_table_source = st.reserve
    k.mem_init_hooks.append(_pks_rfc2_mem_init)
    k.late_initcalls.append(init_pks_dmap_tables)
    return hp
