"""The pkeys block allocator (PBA): kpkeys v6 patches 14-17 (``mm/kpkeys_hardened_pgtables.c``).

Spec: kpkeys-series.md §4.1-§4.9 (described from the v6 state after patch 17,
which the end-of-series file keeps).  Kernel names are kept so that every step
can be found by grepping its name: :func:`pba_pgtable_alloc`,
:func:`pba_pgtable_free`, :func:`__refill_pages`, :func:`refill_pages`,
:func:`refill_pages_and_alloc_one`, :func:`get_cached_page`,
:func:`prepare_page`, :func:`pba_prepare_direct_map_split`,
:func:`pba_ready_for_direct_map_split`, :func:`pba_init`,
:func:`pba_init_late`, :func:`pba_shrink_count`, :func:`pba_shrink_scan`,
:func:`release_whole_block`, :func:`release_page_list`,
:func:`pba_init_shrinker`.

What it is (§4.1): a page-table-page (PTP) allocator for a *block-mapped*
linear map.  It caches whole PMD-sized blocks whose linear-map pkey is already
``KPKEYS_PKEY_PGTABLES``, so that allocating and freeing PTPs rarely splits the
linear map.  Freed PTPs go back to the cache, never to the buddy allocator;
only the shrinker (§4.9) gives memory back.

Model of the kernel objects (docs/model-assumptions.md, "kernel/kpkeys
allocators (PBA, PPA, noblock)"):

* ``struct pkeys_block_allocator`` is :class:`PkeysBlockAllocator`, one per
  kernel at ``k.pba`` (Linux: the static ``pkeys_block_allocator``).
  ``cached_list`` is a Python ``list`` of pfns used as a LIFO stack: its *end*
  is the list head (the most recently added page), so ``list_add`` is
  ``append`` and "the first entry" is ``cached_list[-1]``.  ``nr_cached`` is
  kept separately, as in the kernel, so invariant I5 is a real check.
* The spinlock (always ``spin_lock_bh``) is a no-op: the model is sequential
  and nothing runs between two Python statements.  The places where the kernel
  takes it are marked ``# lock`` in the code.
* ``alloc_mutex`` (§4.4) has an *owner*: the executing context, i.e. the
  thread running on ``k.cpu`` (``k.cpu.current``), or the CPU itself before
  the scheduler has created threads (early boot).  ``alloc_mutex_locked()`` is
  "owner is the caller".  Taking it while already held cannot wait in a
  sequential model: recursive locking by the owner is the kernel's deadlock
  (lockdep: "possible recursive locking detected") and raises
  :class:`~kpkeys_sim.kernel.errors.KernelBug`; so does contention from another
  context, which a sequential run cannot resolve.
* ``struct pba_page_data { bool in_block; u32 block_nr_free; }`` lives in
  ``page->mapping`` (``MemMap.mapping``, int64), packed as the C struct lays
  it out on little-endian arm64: ``in_block`` is byte 0 (bit 0),
  ``block_nr_free`` is the u32 at offset 4 (bits 32-63).  So ``mapping ==
  in_block | block_nr_free << 32``; a page with ``mapping == 0`` is a
  non-block page.
* A ``struct page *`` is its pfn; the zone, mem_map and linear map are reached
  through ``k``.
* The memcg charge of ``__GFP_ACCOUNT`` allocations is an accounting counter
  (:attr:`PkeysBlockAllocator.memcg_charged`, the set of charged pfns); an
  optional page limit (``memcg_limit``, default None = unlimited) makes the
  charge fail with ``-ENOMEM`` so the ``prepare_page`` error path can run.
* WARNs go through :mod:`kpkeys_sim.kernel.kpkeys.warn` (``k.warnings``).

Observability (not kernel state): :class:`PbaStats` (refills by order, shrink
calls, pages released, linear-map splits caused by the PBA's own pkey changes),
the counter :attr:`PkeysBlockAllocator.leaked_pages` (pages lost by
``release_page_list``'s early stop, §4.9), the events ``pba_refill``,
``pba_alloc``, ``pba_free``, ``pba_shrink`` and a bounded time series of
``(op_index, nr_cached)`` samples for the report's "PBA behaviour over the run"
chart (:class:`PbaTimeSeries`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from kpkeys_sim.kernel.errors import ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_LVL_PGTABLES,
    KPKEYS_PKEY_DEFAULT,
    KPKEYS_PKEY_PGTABLES,
    kpkeys_restore_pkey_reg,
    kpkeys_set_level,
)
from kpkeys_sim.kernel.kpkeys.warn import VM_WARN_ON, WARN_ON
from kpkeys_sim.kernel.mm import gfp as _gfp
from kpkeys_sim.kernel.mm.addr import page_address
from kpkeys_sim.kernel.mm.page import MemMap
from kpkeys_sim.kernel.mm.page_alloc import (
    PAGE_ZERO,
    SHRINK_EMPTY,
    SHRINK_STOP,
    BuddyAllocator,
    __free_page,
    __free_pages,
    alloc_pages,
    split_page,
)
from kpkeys_sim.kernel.mm.set_memory import set_memory_pkey
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "BLOCK_ORDER_BY_SHIFT",
    "DEF_PRIORITY",
    "PBA_ALLOC",
    "PBA_CAN_SET_PKEY",
    "PBA_ENABLED_KEY",
    "PBA_FREE",
    "PBA_GFP_ALLOC",
    "PBA_GFP_OPT_MASK",
    "PBA_NR_RESERVED_PAGES",
    "PBA_REFILL",
    "PBA_SHRINK",
    "PBA_SHRINKER_NAME",
    "PBA_UNSHRINKABLE_PAGES",
    "REFILL_ORDERS_BY_SHIFT",
    "SHRINK_EMPTY",
    "SHRINK_STOP",
    "PbaPageData",
    "PbaShrinker",
    "PbaStats",
    "PbaTimeSeries",
    "PkeysBlockAllocator",
    "__refill_pages",
    "__refill_pages_add_to_cache",
    "alloc_mutex_locked",
    "arch_has_pte_only_direct_map",
    "block_head_page",
    "block_worth_shrinking",
    "cached_list_add_pages",
    "cached_list_del_page",
    "cached_page_available",
    "check_gfp",
    "count_shrinkable_pages",
    "dec_block_nr_free",
    "get_cached_page",
    "inc_block_nr_free",
    "mark_block_cached",
    "mark_block_noncached",
    "page_pba_data",
    "pba_check_invariants",
    "pba_enabled",
    "pba_init",
    "pba_init_late",
    "pba_init_shrinker",
    "pba_pgtable_alloc",
    "pba_pgtable_free",
    "pba_prepare_direct_map_split",
    "pba_ready_for_direct_map_split",
    "pba_shrink",
    "pba_shrink_count",
    "pba_shrink_scan",
    "pba_state",
    "prepare_page",
    "refill_pages",
    "refill_pages_and_alloc_one",
    "register_early_region",
    "release_page_list",
    "release_whole_block",
    "set_page_pba_data",
    "shrink_control",
]


# --- constants (§4.3) ---------------------------------------------------------------------

#: GFP mask of every refill allocation.
PBA_GFP_ALLOC = _gfp.GFP_KERNEL
#: Optional bits a PTP allocation may carry on top of GFP_KERNEL (patch 17 state;
#: patch 14 had no __GFP_PGTABLE_SPLIT).
PBA_GFP_OPT_MASK = _gfp.__GFP_ZERO | _gfp.__GFP_ACCOUNT | _gfp.__GFP_PGTABLE_SPLIT
#: The reserve: 2 pages for the split inside a refill + 2 for any other split (§4.8).
PBA_NR_RESERVED_PAGES = 4
#: The shrinker never takes the cache below this.
PBA_UNSHRINKABLE_PAGES = 16
#: ``refill_orders[]`` by PAGE_SHIFT, tried in decreasing order; the last must be 2.
REFILL_ORDERS_BY_SHIFT: dict[int, tuple[int, ...]] = {
    12: (9, 4, 2),  # 4K: 2 MiB block, 64 KiB contpte, 16 KiB
    14: (11, 7, 2),  # 16K: 32 MiB block, 2 MiB contpte, 64 KiB
    16: (9, 5, 2),  # 64K: 32 MiB (not the 512 MiB PMD), 2 MiB contpte, 256 KiB
}
#: ``BLOCK_ORDER = PMD_ORDER`` by PAGE_SHIFT (PMD_SHIFT - PAGE_SHIFT = PAGE_SHIFT - 3).
BLOCK_ORDER_BY_SHIFT: dict[int, int] = {12: 9, 14: 11, 16: 13}
#: Static keys (§3.2), by their kernel names.
PBA_ENABLED_KEY = "pba_enabled_key"
PBA_CAN_SET_PKEY = "pba_can_set_pkey"
#: ``shrinker_alloc(0, "kpkeys-pgtable-block")``.
PBA_SHRINKER_NAME = "kpkeys-pgtable-block"
#: mm/vmscan.c: reclaim starts at this priority and goes down to 0.
DEF_PRIORITY = 12

# --- events ---------------------------------------------------------------------------------

PBA_REFILL = declare_event(
    "pba_refill",
    "PBA refills that obtained pages from the buddy allocator (count = calls)",
    "kernel",
)
PBA_ALLOC = declare_event("pba_alloc", "page-table pages handed out by the PBA", "kernel")
PBA_FREE = declare_event("pba_free", "page-table pages returned to the PBA cache", "kernel")
PBA_SHRINK = declare_event(
    "pba_shrink", "pages the PBA shrinker released to the buddy allocator", "kernel"
)

_IN_BLOCK = 1
_NR_FREE_SHIFT = 32
#: ``gfp & _GFP_CHECK_MASK == GFP_KERNEL`` iff :func:`check_gfp` has nothing to say.
_GFP_CHECK_MASK = _gfp.GFP_KERNEL | ~(_gfp.GFP_KERNEL | PBA_GFP_OPT_MASK)


class PbaPageData(NamedTuple):
    """``struct pba_page_data`` decoded from ``page->mapping`` (§4.4)."""

    in_block: bool
    block_nr_free: int


@dataclass(slots=True)
class shrink_control:
    """``struct shrink_control``: the fields the PBA uses (§4.9)."""

    nr_to_scan: int
    nr_scanned: int = 0


@dataclass(slots=True)
class PbaStats:
    """Counters of what the PBA did (observability, not kernel state).

    ``splits_*`` count linear-map splits (``split_kernel_leaf_mapping`` steps)
    that happened *inside* the PBA's own ``set_memory_pkey()`` calls: refills
    (setting PGTABLES on new pages), releases (resetting DEFAULT) and the
    protection of the early region in ``pba_init_late``.
    """

    refills_by_order: dict[int, int] = field(default_factory=dict)
    refill_alloc_failures: int = 0
    refill_pkey_failures: int = 0
    early_regions: int = 0
    allocs: int = 0
    allocs_split: int = 0
    allocs_split_in_reserve: int = 0
    allocs_refilled: int = 0
    alloc_failures: int = 0
    prepare_failures: int = 0
    frees: int = 0
    shrink_scans: int = 0
    shrink_stops: int = 0
    blocks_released: int = 0
    pages_released: int = 0
    release_failures: int = 0
    splits_by_refill: int = 0
    splits_by_release: int = 0
    splits_by_init_late: int = 0

    @property
    def refills(self) -> int:
        """Successful refills of any order."""
        return sum(self.refills_by_order.values())

    @property
    def splits_caused(self) -> int:
        """Linear-map splits caused by the PBA's own pkey changes."""
        return self.splits_by_refill + self.splits_by_release + self.splits_by_init_late


class PbaTimeSeries:
    """Bounded ``(op_index, nr_cached)`` samples: one per PBA operation, decimated.

    Every refill, allocation, free and shrink is one operation.  Samples are
    taken every ``stride`` operations; when ``max_samples`` are held, every
    other sample is dropped and the stride doubles, so memory stays bounded and
    the series still spans the whole run.
    """

    __slots__ = ("_countdown", "max_samples", "op_index", "samples", "stride")

    def __init__(self, max_samples: int = 2048) -> None:
        if max_samples < 2:
            raise ValueError(f"bad max_samples {max_samples!r}: must be at least 2")
        self.max_samples = max_samples
        self.samples: list[tuple[int, int]] = []
        self.op_index = 0
        self.stride = 1
        self._countdown = 1

    def record(self, nr_cached: int) -> None:
        """Count one operation; sample ``nr_cached`` if this operation is on the stride."""
        self.op_index += 1
        self._countdown -= 1
        if self._countdown:
            return
        self._countdown = self.stride
        self.samples.append((self.op_index, nr_cached))
        if len(self.samples) >= self.max_samples:
            self.samples = self.samples[1::2]
            self.stride *= 2
            self._countdown = self.stride


class PkeysBlockAllocator:
    """``struct pkeys_block_allocator`` plus ``pba_early_region`` and the per-size constants.

    Kernel state: ``cached_list`` (LIFO stack of pfns; end = list head),
    ``nr_cached``, ``alloc_mutex_owner`` (None when unlocked), ``early_head`` /
    ``early_order`` (``pba_early_region``; ``early_head`` None when no region
    was recorded), ``shrinker``.  Constants for the kernel's page size:
    ``refill_orders``, ``BLOCK_ORDER``, ``BLOCK_NR_PAGES``,
    ``PBA_SHRINK_BLOCK_MIN_PAGES``.  Model-only: ``stats``, ``series``,
    ``leaked_pages``/``leaked_pfns``, ``memcg_charged``/``memcg_limit``,
    ``early_region_protected``.
    """

    __slots__ = (
        "BLOCK_NR_PAGES",
        "BLOCK_ORDER",
        "PBA_SHRINK_BLOCK_MIN_PAGES",
        "alloc_mutex_owner",
        "cached_list",
        "early_head",
        "early_order",
        "early_region_protected",
        "leaked_pages",
        "leaked_pfns",
        "memcg_charged",
        "memcg_limit",
        "nr_cached",
        "refill_orders",
        "series",
        "shrinker",
        "stats",
    )

    def __init__(self, page_shift: int) -> None:
        try:
            self.refill_orders = REFILL_ORDERS_BY_SHIFT[page_shift]
            self.BLOCK_ORDER = BLOCK_ORDER_BY_SHIFT[page_shift]
        except KeyError:
            raise ValueError(f"bad page_shift {page_shift!r}: must be 12, 14 or 16") from None
        self.BLOCK_NR_PAGES = 1 << self.BLOCK_ORDER
        self.PBA_SHRINK_BLOCK_MIN_PAGES = self.BLOCK_NR_PAGES // 8
        self.cached_list: list[int] = []
        self.nr_cached = 0
        self.alloc_mutex_owner: object | None = None
        self.early_head: int | None = None
        self.early_order = 0
        self.early_region_protected = False
        self.shrinker: PbaShrinker | None = None
        self.stats = PbaStats()
        self.series = PbaTimeSeries()
        self.leaked_pages = 0
        self.leaked_pfns: list[int] = []
        self.memcg_charged: set[int] = set()
        self.memcg_limit: int | None = None

    def __repr__(self) -> str:
        return (
            f"PkeysBlockAllocator(nr_cached={self.nr_cached}, "
            f"block_order={self.BLOCK_ORDER}, refill_orders={self.refill_orders})"
        )

    def sample(self) -> None:
        """Record one operation in the time series."""
        self.series.record(self.nr_cached)


# --- access to the rest of the kernel -------------------------------------------------------


def pba_state(k: Kernel) -> PkeysBlockAllocator:
    """The kernel's ``pkeys_block_allocator`` (created on first use, like a static struct)."""
    pba = k.pba
    if pba is None:
        pba = PkeysBlockAllocator(k.machine.page_shift)
        k.pba = pba
    return pba


def _zone(k: Kernel) -> BuddyAllocator:
    zone = k.zone
    if zone is None:
        raise KernelBug("PBA used before the buddy allocator exists (mem_init not reached)")
    return zone


def _mem_map(k: Kernel) -> MemMap:
    zone = k.zone
    return (zone if zone is not None else _zone(k)).mem_map


def _set_memory_pkey(k: Kernel, pfn: int, numpages: int, pkey: int) -> int:
    """``set_memory_pkey(page_address(page), numpages, pkey)``; returns 0 or -errno."""
    return set_memory_pkey(k, page_address(k, pfn), numpages, pkey)


def _linear_map_splits(k: Kernel) -> int:
    """The arch's direct-map split counter (arm64 ``linear_map_split_count``)."""
    return k.arch_mm.linear_map_split_count(k)


def _current_context(k: Kernel) -> object:
    """The executing context: the thread running on ``k.cpu``, else the CPU (early boot)."""
    hw = k.cpu.current
    return hw if hw is not None else k.cpu


def arch_has_pte_only_direct_map(k: Kernel) -> bool:
    """``arch_has_pte_only_direct_map()``: the linear map can never contain blocks.

    arm64: ``force_pte_mapping()`` [INF, spec §4.2 step 1], through ``k.arch_mm``.  Evaluated in
    ``mem_init``, so the BBML2 part reflects what is known then (the model has
    one ``bbml2_noabort`` for all CPUs; the 16/30 caveat of a secondary CPU
    without it is not modelled).
    """
    return k.arch_mm.force_pte_mapping(k)


def pba_enabled(k: Kernel) -> bool:
    """``pba_enabled()``: static branch ``pba_enabled_key``."""
    return k.static_branch(PBA_ENABLED_KEY)


# --- per-page data in page->mapping (§4.4) ----------------------------------------------


def page_pba_data(k: Kernel, pfn: int) -> PbaPageData:
    """``page_pba_data(page)`` decoded from ``page->mapping``."""
    mm = _mem_map(k)
    v = int(mm.mapping[mm.idx(pfn)])
    return PbaPageData(bool(v & _IN_BLOCK), (v >> _NR_FREE_SHIFT) & 0xFFFF_FFFF)


def set_page_pba_data(k: Kernel, pfn: int, in_block: bool, block_nr_free: int) -> None:
    """Store ``{in_block, block_nr_free}`` into ``page->mapping`` (packing: module docstring)."""
    mm = _mem_map(k)
    mm.mapping[mm.idx(pfn)] = (1 if in_block else 0) | (block_nr_free << _NR_FREE_SHIFT)


def block_head_page(k: Kernel, pfn: int) -> int | None:
    """``block_head_page(page)``: None unless ``in_block``; else the block-aligned pfn."""
    mm = _mem_map(k)
    if not int(mm.mapping[mm.idx(pfn)]) & _IN_BLOCK:
        return None
    return pfn & ~(pba_state(k).BLOCK_NR_PAGES - 1)


def mark_block_cached(k: Kernel, head: int, first: int, n: int) -> None:
    """``mark_block_cached(head, first_cached, n)``: the block's pages become block pages.

    ``head.in_block = true``, ``head.block_nr_free = n``, and ``in_block = true``
    on each of the ``n`` cached pages ``[first, first + n)``.
    """
    mm = _mem_map(k)
    i = mm.check_range(first, n)
    mm.mapping[i : i + n] = _IN_BLOCK
    set_page_pba_data(k, head, True, n)


def mark_block_noncached(k: Kernel, head: int) -> None:
    """``mark_block_noncached(head)``: zero ``->mapping`` of ALL ``BLOCK_NR_PAGES`` pages.

    Including pages currently in use as PTPs: from now on the whole block is
    made of non-block pages (§4.4).
    """
    mm = _mem_map(k)
    n = pba_state(k).BLOCK_NR_PAGES
    i = mm.check_range(head, n)
    mm.mapping[i : i + n] = 0


def inc_block_nr_free(k: Kernel, pfn: int) -> None:
    """``inc_block_nr_free(page)``: one more cached page in the page's block (if in one)."""
    _add_block_nr_free(pba_state(k), _mem_map(k), pfn, 1)


def dec_block_nr_free(k: Kernel, pfn: int) -> None:
    """``dec_block_nr_free(page)``: one fewer cached page in the page's block (if in one)."""
    _add_block_nr_free(pba_state(k), _mem_map(k), pfn, -1)


def _add_block_nr_free(pba: PkeysBlockAllocator, mm: MemMap, pfn: int, delta: int) -> None:
    """:func:`inc_block_nr_free`/:func:`dec_block_nr_free` in place: ``block_head_page``,
    then ``page_pba_data``/``set_page_pba_data`` of the head, on ``page->mapping``."""
    mapping = mm.mapping
    base = mm.base_pfn
    i = pfn - base
    if not 0 <= i < mm.nr_pages:
        i = mm.idx(pfn)  # raises
    if not mapping.item(i) & _IN_BLOCK:
        return
    head = pfn & ~(pba.BLOCK_NR_PAGES - 1)
    i = head - base
    if not 0 <= i < mm.nr_pages:
        i = mm.idx(head)  # raises
    v = mapping.item(i)
    nr_free = ((v >> _NR_FREE_SHIFT) & 0xFFFF_FFFF) + delta
    mapping[i] = (1 if v & _IN_BLOCK else 0) | (nr_free << _NR_FREE_SHIFT)


# --- the cache -------------------------------------------------------------------------------


def cached_list_add_pages(k: Kernel, first: int, n: int) -> None:
    """``cached_list_add_pages()``: push ``first .. first + n - 1`` on the head, one by one.

    Under the lock.  ``block_nr_free`` is not touched here (refills set it with
    :func:`mark_block_cached`; frees call :func:`inc_block_nr_free`).
    """
    pba = pba_state(k)
    # lock
    pba.cached_list.extend(range(first, first + n))
    pba.nr_cached += n


def cached_list_del_page(k: Kernel) -> int:
    """``cached_list_del_page()`` on the first entry: ``list_del``, ``nr_cached--``, block count."""
    return _cached_list_del_page(pba_state(k), _mem_map(k))


def _cached_list_del_page(pba: PkeysBlockAllocator, mm: MemMap) -> int:
    pfn = pba.cached_list.pop()
    pba.nr_cached -= 1
    _add_block_nr_free(pba, mm, pfn, -1)  # dec_block_nr_free
    return pfn


def alloc_mutex_locked(k: Kernel) -> bool:
    """``alloc_mutex_locked()``: the mutex owner is the current context (§4.4)."""
    return pba_state(k).alloc_mutex_owner is _current_context(k)


@contextmanager
def _alloc_mutex(k: Kernel) -> Iterator[None]:
    """``guard(mutex)(&pba->alloc_mutex)``: held until the refill returns."""
    pba = pba_state(k)
    me = _current_context(k)
    owner = pba.alloc_mutex_owner
    if owner is me:
        raise KernelBug(
            "possible recursive locking detected: pkeys_block_allocator.alloc_mutex already "
            "held by the current context (refill re-entered from its own split): deadlock"
        )
    if owner is not None:
        raise KernelBug(
            f"pkeys_block_allocator.alloc_mutex held by {owner!r}: the sequential model "
            "cannot wait for another context"
        )
    pba.alloc_mutex_owner = me
    try:
        yield
    finally:
        pba.alloc_mutex_owner = None


# --- refill (§4.5) ----------------------------------------------------------------------------


def register_early_region(k: Kernel, head: int, order: int) -> int:
    """``register_early_region(page, order)`` (v6 16/30): record the one early region.

    Before ``pba_can_set_pkey`` is enabled the pkey cannot be set, so the
    refilled region is remembered and protected by :func:`pba_init_late`.  Only
    one region can be recorded: a second one WARNs and is left unprotected
    (its pages are still cached and handed out).  Returns 0 in both cases
    [INF: "WARN and leave unprotected", §4.2/§4.5].
    """
    pba = pba_state(k)
    if WARN_ON(
        k,
        pba.early_head is not None,
        f"pba: early region already recorded (pfn {pba.early_head or 0:#x}); "
        f"pages {head:#x}+{1 << order} stay unprotected",
    ):
        return 0
    pba.early_head = head
    pba.early_order = order
    pba.stats.early_regions += 1
    return 0


def __refill_pages_add_to_cache(k: Kernel, head: int, order: int, alloc_one: bool) -> None:
    """``__refill_pages_add_to_cache()``: mark a full block, push the pages (§4.5).

    With ``alloc_one`` the head page goes to the caller and is not cached; on a
    full block it is still marked ``in_block`` with ``block_nr_free =
    BLOCK_NR_PAGES - 1`` (it carries allocator metadata while in use).
    """
    pba = pba_state(k)
    n = 1 << order
    first = head
    if alloc_one:
        first = head + 1
        n -= 1
    if order == pba.BLOCK_ORDER:
        mark_block_cached(k, head, first, n)
    cached_list_add_pages(k, first, n)


def __refill_pages(k: Kernel, alloc_one: bool) -> int | None:
    """``__refill_pages(alloc_one)`` (v6 14/30, 16/30): get a block, protect it, cache it.

    1. ``alloc_pages(PBA_GFP_ALLOC, order)`` for each refill order in decreasing
       order, *before* taking ``alloc_mutex`` (a failing high-order allocation
       may enter direct reclaim, which may call the PBA shrinker);
    2. under ``alloc_mutex``: ``set_memory_pkey(PGTABLES)`` if
       ``pba_can_set_pkey``, which may split the linear map and draw the split's
       PTPs from the reserve; otherwise :func:`register_early_region`;
    3. on error free the pages and return None;
    4. ``split_page`` and add to the cache.

    Returns the head pfn (handed to the caller when ``alloc_one``), or None.
    """
    pba = pba_state(k)
    zone = _zone(k)
    page: int | None = None
    order = 0
    for order in pba.refill_orders:
        page = alloc_pages(zone, PBA_GFP_ALLOC, order)
        if page is not None:
            break
    if page is None:
        pba.stats.refill_alloc_failures += 1
        return None
    with _alloc_mutex(k):
        if k.static_branch(PBA_CAN_SET_PKEY):
            before = _linear_map_splits(k)
            ret = _set_memory_pkey(k, page, 1 << order, KPKEYS_PKEY_PGTABLES)
            pba.stats.splits_by_refill += _linear_map_splits(k) - before
        else:
            ret = register_early_region(k, page, order)
        if ret:
            pba.stats.refill_pkey_failures += 1
            __free_pages(zone, page, order)
            return None
        split_page(zone, page, order)
        __refill_pages_add_to_cache(k, page, order, alloc_one)
        pba.stats.refills_by_order[order] = pba.stats.refills_by_order.get(order, 0) + 1
        k.machine.emit(PBA_REFILL)
        pba.sample()
    return page


def refill_pages(k: Kernel) -> int:
    """``refill_pages()``: ``__refill_pages(false)``; 0 or ``-ENOMEM``."""
    return 0 if __refill_pages(k, False) is not None else -ENOMEM


def refill_pages_and_alloc_one(k: Kernel) -> int | None:
    """``refill_pages_and_alloc_one()``: ``__refill_pages(true)``; the head page or None."""
    return __refill_pages(k, True)


# --- allocation and free (§4.6, §4.7) -------------------------------------------------------


def check_gfp(k: Kernel, gfp: int) -> None:
    """``check_gfp(gfp)``: ``VM_WARN`` on missing GFP_KERNEL bits or extra bits; never rejects.

    The messages (with the decoded flag names) are built only when a warning fires.
    """
    if gfp & _gfp.GFP_KERNEL != _gfp.GFP_KERNEL:
        VM_WARN_ON(k, True, f"pba: gfp {gfp:#x} ({_gfp.gfp_names(gfp)}) lacks GFP_KERNEL bits")
    if gfp & ~(_gfp.GFP_KERNEL | PBA_GFP_OPT_MASK):
        VM_WARN_ON(
            k,
            True,
            f"pba: gfp {gfp:#x} ({_gfp.gfp_names(gfp)}) has bits outside "
            "GFP_KERNEL|PBA_GFP_OPT_MASK",
        )


def cached_page_available(k: Kernel, gfp: int) -> bool:
    """``cached_page_available(gfp)``: split allocations always; others iff ``nr_cached > 4``."""
    pba = pba_state(k)
    if gfp & _gfp.__GFP_PGTABLE_SPLIT:
        # pr_debug of nr_cached and alloc_mutex_locked(): kept as statistics.
        pba.stats.allocs_split += 1
        if pba.nr_cached <= PBA_NR_RESERVED_PAGES:
            pba.stats.allocs_split_in_reserve += 1
        return True
    return pba.nr_cached > PBA_NR_RESERVED_PAGES


def get_cached_page(k: Kernel, gfp: int) -> int | None:
    """``get_cached_page(gfp)``: take the first (most recent) cached page, under the lock.

    None if not available for ``gfp`` (the reserve rule), or — with a WARN —
    if the list is empty.
    """
    return _get_cached_page(k, pba_state(k), gfp)


def _get_cached_page(k: Kernel, pba: PkeysBlockAllocator, gfp: int) -> int | None:
    # lock
    if gfp & _gfp.__GFP_PGTABLE_SPLIT:
        if not cached_page_available(k, gfp):  # (always true; counts statistics)
            return None
    elif pba.nr_cached <= PBA_NR_RESERVED_PAGES:  # cached_page_available(), inlined
        return None
    if not pba.cached_list:
        WARN_ON(k, True, "pba: cached_list empty in get_cached_page()")
        return None
    return _cached_list_del_page(pba, _mem_map(k))


def _memcg_kmem_charge_page(k: Kernel, pfn: int) -> int:
    pba = pba_state(k)
    if pba.memcg_limit is not None and len(pba.memcg_charged) >= pba.memcg_limit:
        return -ENOMEM
    pba.memcg_charged.add(pfn)
    return 0


def _memcg_kmem_uncharge_page(k: Kernel, pfn: int) -> None:
    pba_state(k).memcg_charged.discard(pfn)


def prepare_page(k: Kernel, pfn: int, gfp: int) -> int:
    """``prepare_page(page, gfp)`` (§4.6 step 4): charge, clear ``private``, zero.

    The page is already protected, so zeroing runs at ``KPKEYS_LVL_PGTABLES``
    through a direct ``kpkeys_set_level`` / ``kpkeys_restore_pkey_reg`` pair
    around a checked ``clear_page`` of its linear-map alias (§3.5), which
    emits ``page_zero`` (one page) as the buddy allocator's zeroing does.
    ``->mapping`` keeps the PBA data.
    """
    return _prepare_page(k, pba_state(k), pfn, gfp)


def _prepare_page(k: Kernel, pba: PkeysBlockAllocator, pfn: int, gfp: int) -> int:
    if gfp & _gfp.__GFP_ACCOUNT:
        # _memcg_kmem_charge_page(), inlined
        if pba.memcg_limit is not None and len(pba.memcg_charged) >= pba.memcg_limit:
            return -ENOMEM
        pba.memcg_charged.add(pfn)
    mm = _mem_map(k)
    mm.private[mm.idx(pfn)] = 0
    if gfp & _gfp.__GFP_ZERO:
        m = k.machine
        g = k.pgt
        reg = kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)
        try:
            m.clear_page(k.cpu, g.va(pfn << g.PAGE_SHIFT))  # page_address(pfn)
            ins = m.instruments
            if ins.active:
                ins.emit(PAGE_ZERO)
        finally:
            kpkeys_restore_pkey_reg(k, reg)
    return 0


def pba_pgtable_alloc(k: Kernel, gfp: int) -> int | None:
    """``pba_pgtable_alloc(gfp)`` (§4.6): one protected order-0 PTP, or None.

    ``check_gfp``; :func:`get_cached_page`; if none, ``refill_pages_and_alloc_one``
    (WARN and None if that fails); :func:`prepare_page`, whose failure returns
    the page to the cache.
    """
    pba = k.pba
    if pba is None:
        pba = pba_state(k)
    if gfp & _GFP_CHECK_MASK != _gfp.GFP_KERNEL:  # check_gfp() would warn
        check_gfp(k, gfp)
    page = _get_cached_page(k, pba, gfp)
    if page is None:
        page = refill_pages_and_alloc_one(k)
        if WARN_ON(k, page is None, "pba: refill_pages_and_alloc_one() failed"):
            pba.stats.alloc_failures += 1
            return None
        assert page is not None
        pba.stats.allocs_refilled += 1
    ret = _prepare_page(k, pba, page, gfp)
    if ret:
        pba.stats.prepare_failures += 1
        pba_pgtable_free(k, page)
        return None
    pba.stats.allocs += 1
    ins = k.machine.instruments
    if ins.active:
        ins.emit(PBA_ALLOC)
    pba.series.record(pba.nr_cached)  # pba.sample()
    return page


def pba_pgtable_free(k: Kernel, pfn: int) -> None:
    """``pba_pgtable_free(page)`` (§4.7): uncharge and push back on the cache.

    Pages are never returned to the buddy allocator here; the pkey stays
    PGTABLES while the page is cached.
    """
    pba = k.pba
    if pba is None:
        pba = pba_state(k)
    pba.memcg_charged.discard(pfn)  # _memcg_kmem_uncharge_page
    # lock; cached_list_add_pages(pfn, 1) and inc_block_nr_free(pfn), inlined
    pba.cached_list.append(pfn)
    pba.nr_cached += 1
    _add_block_nr_free(pba, _mem_map(k), pfn, 1)
    pba.stats.frees += 1
    ins = k.machine.instruments
    if ins.active:
        ins.emit(PBA_FREE)
    pba.series.record(pba.nr_cached)  # pba.sample()


# --- linear-map splitting support (§4.8, v6 15/30) ---------------------------------------


def pba_ready_for_direct_map_split(k: Kernel) -> bool:
    """``pba_ready_for_direct_map_split()``: ``nr_cached >= 4`` or the caller holds alloc_mutex."""
    return pba_state(k).nr_cached >= PBA_NR_RESERVED_PAGES or alloc_mutex_locked(k)


def pba_prepare_direct_map_split(k: Kernel) -> int:
    """``pba_prepare_direct_map_split()``: 0 if ready, else ``refill_pages()`` (0 or -ENOMEM)."""
    if pba_ready_for_direct_map_split(k):
        return 0
    return refill_pages(k)


# --- init (§4.2) --------------------------------------------------------------------------------


def pba_init(k: Kernel) -> None:
    """``pba_init()`` (``__init``, from ``kpkeys_hardened_pgtables_init`` in ``mem_init``).

    Nothing if ``arch_has_pte_only_direct_map()``; otherwise enable
    ``pba_enabled_key`` and pre-fill the cache (WARN on failure).  The refill
    becomes the early region, since ``pba_can_set_pkey`` is still false.
    """
    if arch_has_pte_only_direct_map(k):
        return
    pba_state(k)
    k.static_branch_enable(PBA_ENABLED_KEY)
    WARN_ON(k, refill_pages(k), "pba_init: initial refill_pages() failed")


def pba_init_late(k: Kernel) -> None:
    """``pba_init_late()`` (``__init``): enable ``pba_can_set_pkey``; protect the early region.

    Called by ``kpkeys_hardened_pgtables_init_late`` when the PBA is enabled
    (the caller checks ``pba_enabled()``).  A failure to set the pkey WARNs
    [INF: the spec gives no error handling here].
    """
    pba = pba_state(k)
    k.static_branch_enable(PBA_CAN_SET_PKEY)
    if pba.early_head is not None:
        before = _linear_map_splits(k)
        ret = _set_memory_pkey(k, pba.early_head, 1 << pba.early_order, KPKEYS_PKEY_PGTABLES)
        pba.stats.splits_by_init_late += _linear_map_splits(k) - before
        if not WARN_ON(k, ret, f"pba_init_late: set_memory_pkey on the early region: {ret}"):
            pba.early_region_protected = True


# --- shrinker (§4.9, v6 17/30) ---------------------------------------------------------


def count_shrinkable_pages(k: Kernel) -> int:
    """``count_shrinkable_pages()``: ``max(0, nr_cached - PBA_UNSHRINKABLE_PAGES)``."""
    return max(0, pba_state(k).nr_cached - PBA_UNSHRINKABLE_PAGES)


def pba_shrink_count(k: Kernel, sc: shrink_control | None = None) -> int:
    """``pba_shrink_count()``: the shrinkable pages, or ``SHRINK_EMPTY`` if none."""
    n = count_shrinkable_pages(k)
    return n if n else SHRINK_EMPTY


def block_worth_shrinking(k: Kernel, target_n: int, nonblock_n: int, sc: shrink_control) -> bool:
    """``block_worth_shrinking()``: prefer a partial block over the non-block pages.

    True iff ``nonblock_n < target_n`` and ``nonblock_n < sc.nr_to_scan`` and
    ``target_n >= PBA_SHRINK_BLOCK_MIN_PAGES``.
    """
    return (
        nonblock_n < target_n
        and nonblock_n < sc.nr_to_scan
        and target_n >= pba_state(k).PBA_SHRINK_BLOCK_MIN_PAGES
    )


def release_whole_block(k: Kernel, pages: list[int], head: int) -> int:
    """``release_whole_block(list, head)``: reset the whole block's pkey, free its pages.

    One ``set_memory_pkey(DEFAULT)`` over ``BLOCK_NR_PAGES`` pages, so no
    split.  On failure every page of the block goes back to the cache (as
    non-block pages: the block was already marked non-cached) and 0 is returned.
    """
    pba = pba_state(k)
    zone = _zone(k)
    before = _linear_map_splits(k)
    ret = _set_memory_pkey(k, head, pba.BLOCK_NR_PAGES, KPKEYS_PKEY_DEFAULT)
    pba.stats.splits_by_release += _linear_map_splits(k) - before
    if ret:
        pba.stats.release_failures += 1
        cached_list_add_pages(k, head, pba.BLOCK_NR_PAGES)
        return 0
    for pfn in pages:
        __free_page(zone, pfn)
    pba.stats.blocks_released += 1
    return len(pages)


def release_page_list(k: Kernel, pages: list[int]) -> int:
    """``release_page_list(list)``: reset each page's pkey and free it, in order.

    Resetting one page inside a block mapping splits the linear map (drawing
    the split's PTPs from the PBA).  On the first failure that page goes back
    to the cache and the loop **stops**: the pages after it were taken off the
    cache but are neither freed nor re-added — the leak of the code as written
    (§4.9 [SRC loop, INF leak]).  The model counts them in ``leaked_pages`` and
    keeps them in ``leaked_pfns``.
    """
    pba = pba_state(k)
    zone = _zone(k)
    freed = 0
    for i, pfn in enumerate(pages):
        before = _linear_map_splits(k)
        ret = _set_memory_pkey(k, pfn, 1, KPKEYS_PKEY_DEFAULT)
        pba.stats.splits_by_release += _linear_map_splits(k) - before
        if ret:
            pba.stats.release_failures += 1
            cached_list_add_pages(k, pfn, 1)
            rest = pages[i + 1 :]
            pba.leaked_pages += len(rest)
            pba.leaked_pfns.extend(rest)
            break
        __free_page(zone, pfn)
        freed += 1
    return freed


def pba_shrink_scan(k: Kernel, sc: shrink_control) -> int:
    """``pba_shrink_scan()`` (§4.9 pseudo-code): free a whole block, part of one, or loose pages.

    Returns the number of pages freed, or ``SHRINK_STOP``.  ``sc.nr_scanned`` is
    the number of pages taken off the cache.
    """
    pba = pba_state(k)
    BLOCK_NR_PAGES = pba.BLOCK_NR_PAGES
    pba.stats.shrink_scans += 1
    sc.nr_scanned = 0
    # lock
    shrinkable = count_shrinkable_pages(k)
    nonblock = 0
    target: int | None = None
    target_n = 0
    for pfn in reversed(pba.cached_list):  # head to tail
        b = block_head_page(k, pfn)
        if b is None:
            nonblock += 1
            continue
        nr_free = page_pba_data(k, b).block_nr_free
        if nr_free > target_n:
            target = b
            target_n = nr_free
        if target_n == BLOCK_NR_PAGES:
            break
    if target_n == BLOCK_NR_PAGES:
        if shrinkable < BLOCK_NR_PAGES:
            # unlock
            pba.stats.shrink_stops += 1
            pba.sample()
            return SHRINK_STOP
        sc.nr_to_scan = BLOCK_NR_PAGES
    elif block_worth_shrinking(k, target_n, nonblock, sc):
        sc.nr_to_scan = min(sc.nr_to_scan, target_n)
    else:
        sc.nr_to_scan = min(sc.nr_to_scan, nonblock)
        target = None
    moved: list[int] = []
    kept: list[int] = []
    nr_moved = 0
    lst = pba.cached_list
    pos = len(lst) - 1  # head to tail = from the end of the Python list
    while pos >= 0:
        if not (nr_moved < sc.nr_to_scan and nr_moved < shrinkable):
            break
        pfn = lst[pos]
        if block_head_page(k, pfn) == target:
            moved.append(pfn)
            nr_moved += 1
        else:
            kept.append(pfn)
        pos -= 1
    # Rebuild the list: the untouched tail part, then the kept pages in their order.
    pba.cached_list = lst[: pos + 1] + kept[::-1]
    pba.nr_cached -= nr_moved
    sc.nr_scanned = nr_moved
    if target is not None:
        mark_block_noncached(k, target)
    # unlock
    if target_n == BLOCK_NR_PAGES:
        assert target is not None
        freed = release_whole_block(k, moved, target)
    else:
        freed = release_page_list(k, moved)
    pba.stats.pages_released += freed
    if freed:
        k.machine.emit(PBA_SHRINK, freed)
    else:
        pba.stats.shrink_stops += 1
    pba.sample()
    return freed if freed else SHRINK_STOP


def pba_shrink(k: Kernel, nr_to_scan: int) -> int:
    """One direct ``scan_objects`` call with ``nr_to_scan`` (tests and workloads).

    ``sc.nr_scanned`` starts at ``nr_to_scan`` as ``do_shrink_slab`` sets it.
    Returns what :func:`pba_shrink_scan` returns.
    """
    return pba_shrink_scan(k, shrink_control(nr_to_scan=nr_to_scan, nr_scanned=nr_to_scan))


class PbaShrinker:
    """The registered ``struct shrinker`` ("kpkeys-pgtable-block", ``seeks = 0``).

    Called by the buddy zone on allocation failure as ``(nr_to_reclaim) ->
    freed``.  The model runs direct reclaim's priority loop for this one
    shrinker: ``do_shrink_slab()`` (mm/shrinker.c) at priority
    ``DEF_PRIORITY`` (12) down to 0, stopping once ``nr_to_reclaim`` pages were
    freed (``do_try_to_free_pages``).  ``do_shrink_slab`` as in Linux:
    ``freeable = count`` (return if 0/``SHRINK_EMPTY``); ``seeks == 0`` gives
    ``delta = freeable / 2``; ``total_scan = min((nr_deferred >> priority) +
    delta, 2 * freeable)``; scan in batches of ``batch = BLOCK_NR_PAGES`` while
    ``total_scan >= batch`` or ``total_scan >= freeable``, stopping on
    ``SHRINK_STOP``; the unscanned work is deferred (capped at ``2 * freeable``).
    """

    __slots__ = ("batch", "k", "name", "nr_calls", "nr_deferred", "seeks")

    def __init__(self, k: Kernel, batch: int) -> None:
        self.k = k
        self.name = PBA_SHRINKER_NAME
        self.seeks = 0
        self.batch = batch
        self.nr_deferred = 0
        self.nr_calls = 0

    def __repr__(self) -> str:
        return f"<shrinker {self.name} batch={self.batch} nr_deferred={self.nr_deferred}>"

    def do_shrink_slab(self, priority: int) -> int:
        """``do_shrink_slab(shrinkctl, shrinker, priority)``: freed pages (or SHRINK_EMPTY)."""
        k = self.k
        freeable = pba_shrink_count(k)
        if freeable in (0, SHRINK_EMPTY):
            return freeable
        nr = self.nr_deferred
        self.nr_deferred = 0
        delta = freeable // 2  # seeks == 0
        total_scan = min((nr >> priority) + delta, 2 * freeable)
        freed = scanned = 0
        while total_scan >= self.batch or total_scan >= freeable:
            nr_to_scan = min(self.batch, total_scan)
            sc = shrink_control(nr_to_scan=nr_to_scan, nr_scanned=nr_to_scan)
            ret = pba_shrink_scan(k, sc)
            if ret == SHRINK_STOP:
                break
            freed += ret
            total_scan -= sc.nr_scanned
            scanned += sc.nr_scanned
        self.nr_deferred = min(max(nr + delta - scanned, 0), 2 * freeable)
        return freed

    def __call__(self, nr_to_reclaim: int) -> int:
        self.nr_calls += 1
        freed = 0
        for priority in range(DEF_PRIORITY, -1, -1):
            ret = self.do_shrink_slab(priority)
            if ret == SHRINK_EMPTY:
                break
            freed += ret
            if freed >= nr_to_reclaim:
                break
        return freed


def pba_init_shrinker(k: Kernel) -> int:
    """``pba_init_shrinker()`` (``late_initcall``): register the shrinker if the PBA is enabled.

    ``shrinker_alloc(0, "kpkeys-pgtable-block")`` with ``seeks = 0`` and ``batch
    = BLOCK_NR_PAGES``, registered in the buddy zone's shrinker list (memory
    pressure).  Returns 0 (an initcall's return value).
    """
    if not pba_enabled(k):
        return 0
    pba = pba_state(k)
    if pba.shrinker is None:
        pba.shrinker = PbaShrinker(k, pba.BLOCK_NR_PAGES)
        _zone(k).shrinkers.append(pba.shrinker)
    return 0


# --- model checks ---------------------------------------------------------------------------


def pba_check_invariants(k: Kernel) -> list[str]:
    """Violations of §4.8 I4/I5 and of the cache's structure; empty when all hold.

    * I5: ``nr_cached == len(cached_list)``; no pfn twice on the list;
    * every cached page is an allocated order-0 page (refcount 1, not buddy);
    * I4: for each block head H with ``in_block``, ``H.block_nr_free`` equals
      the number of cached ``in_block`` pages in ``[H, H + BLOCK_NR_PAGES)``.

    I1-I3 need the caller's context or the linear map: the tests check them.
    """
    import numpy as np

    from kpkeys_sim.kernel.mm.page import PG_buddy

    pba = pba_state(k)
    out: list[str] = []
    lst = pba.cached_list
    if pba.nr_cached != len(lst):
        out.append(f"I5: nr_cached {pba.nr_cached} != len(cached_list) {len(lst)}")
    if len(set(lst)) != len(lst):
        out.append("cached_list holds a page twice")
    if not lst:
        return out
    mm = _mem_map(k)
    idx = np.asarray(lst, dtype=np.int64) - mm.base_pfn
    if np.any(mm.refcount[idx] != 1):
        bad = lst[int(np.flatnonzero(mm.refcount[idx] != 1)[0])]
        out.append(f"cached page {bad:#x} has refcount {int(mm.refcount[bad - mm.base_pfn])}")
    if np.any(mm.flags[idx] & np.uint32(1 << PG_buddy)):
        out.append("a cached page is free in the buddy allocator")
    mapping = mm.mapping[idx]
    in_block = (mapping & _IN_BLOCK) != 0
    heads = (np.asarray(lst, dtype=np.int64)[in_block]) & ~(pba.BLOCK_NR_PAGES - 1)
    uniq, counts = np.unique(heads, return_counts=True)
    cached_in = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    # Every block head with in_block set, whether its pages are cached or in use.
    n = pba.BLOCK_NR_PAGES
    first = -(-mm.base_pfn // n) * n
    aligned = np.arange(first, mm.end_pfn, n, dtype=np.int64)
    hmap = mm.mapping[aligned - mm.base_pfn]
    for h, v in zip(
        aligned[(hmap & _IN_BLOCK) != 0].tolist(),
        hmap[(hmap & _IN_BLOCK) != 0].tolist(),
        strict=True,
    ):
        nr_free = (v >> _NR_FREE_SHIFT) & 0xFFFF_FFFF
        if nr_free != cached_in.get(h, 0):
            out.append(f"I4: block {h:#x} block_nr_free {nr_free} != {cached_in.get(h, 0)} cached")
    for h in cached_in:
        if not page_pba_data(k, h).in_block:
            out.append(f"I4: cached block page of block {h:#x} whose head is not in_block")
    return out
