"""The buddy page allocator (``mm/page_alloc.c``), one zone.

:class:`BuddyAllocator` is the zone: free lists per order ``0..max_order`` and
counters.  The kernel-named functions below take it explicitly: there are no
globals.

Model decisions (also in ``docs/model-assumptions.md``):

* **One zone.**  arm64 Linux has ZONE_DMA/ZONE_DMA32/ZONE_NORMAL (and
  ZONE_MOVABLE).  The model has a single zone covering its whole mem_map,
  no NUMA nodes, no migratetypes or pageblocks, and no watermarks.
  ``__GFP_DMA``, ``__GFP_DMA32`` and ``__GFP_MOVABLE`` are accepted and ignored.
* **MAX_PAGE_ORDER** (inclusive, Linux >= 6.8 naming) is
  ``ARCH_FORCE_MAX_ORDER`` from ``arch/arm64/Kconfig``: 10 for 4K pages
  (4 MiB blocks), 11 for 16K (32 MiB) and 13 for 64K (512 MiB).  These are
  the Kconfig defaults since Linux 6.4, where MAX_ORDER became inclusive
  [U: from memory of arch/arm64/Kconfig].  Every PBA refill order (spec §4.3)
  and PMD_ORDER fits under them.
* **Free lists are LIFO at the head, and there are no per-CPU (pcp) lists.**
  ``__rmqueue_smallest()`` takes the first entry of the smallest non-empty
  order.  ``expand()`` puts the split-off upper halves at the head of their
  lists.  ``__free_one_page()`` merges with free buddies and puts the result at
  the head.  Linux frees order-0..3 pages to per-CPU lists first, and those are
  LIFO too.  The model skips them, so a just-freed page is handed out again by
  the next allocation of its order *provided it did not merge with a free buddy*.
  In Linux it would sit unmerged on the pcp list and be reused even then.
  Linux's ``buddy_merge_likely()`` tail placement and free-page shuffling
  (``CONFIG_SHUFFLE_PAGE_ALLOCATOR``) are not modelled.  Boot handover
  (``__free_pages_core``, ``FPI_TO_TAIL``) *does* add to the tail, so after boot
  the lowest-addressed max-order block is allocated first, as in Linux.
* **Allocation failure returns None** (NULL).  No silent growth.  If the
  request allows direct reclaim (``__GFP_DIRECT_RECLAIM``, part of
  ``GFP_KERNEL``), every callable in ``zone.shrinkers`` is called once, with
  ``nr_to_scan = max(zone.reclaim_nr_to_scan, 1 << order)``, and the allocation
  is retried once.  This is a one-pass ``shrink_slab()``; it is how memory
  pressure drives the PBA shrinker.  Shrinkers run with reclaim disabled
  (``PF_MEMALLOC``), so an allocation failing inside a shrinker does not recurse.
  ``GFP_ATOMIC``/``GFP_NOWAIT`` never reclaim (kswapd is not modelled).
  ``__GFP_NOFAIL`` exhaustion raises :class:`KernelBug` (Linux would OOM-kill
  and loop).  ``order > max_order`` returns None with a warning, as Linux's
  ``WARN_ON_ONCE_GFP`` does.
* **Page state checks.**  ``free_pages_prepare()``'s "Bad page state" checks
  (flags, ``mapping``, ``mapcount``, ``_refcount`` of every page in the range,
  compound order) raise :class:`KernelBug` *before* any state changes.  Linux
  prints, taints and leaks the page.  A refcount underflow (double free)
  also raises :class:`KernelBug`: this is ``VM_BUG_ON_PAGE`` with
  ``CONFIG_DEBUG_VM``.
* **Zeroing** (``__GFP_ZERO``, ``init_on_alloc``, ``init_on_free``) calls
  ``zone.zero_pages(pfn, nr)``, which the machine layer provides.  The default
  only counts the pages (``zone.nr_zeroed_pages``).
* Memory cgroups (``__GFP_ACCOUNT``), page owner, KASAN/MTE tags and
  ``debug_pagealloc`` are not modelled here.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.mm import gfp as _gfp
from kpkeys_sim.kernel.mm.page import (
    MemMap,
    PG_buddy,
    PG_head,
    PG_reserved,
    PG_tail,
    compound_head,
    page_flag_names,
)
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "DIRECT_RECLAIM",
    "MAX_PAGE_ORDER_BY_SHIFT",
    "PAGE_ALLOC",
    "PAGE_ALLOC_FAIL",
    "PAGE_FLAGS_CHECK_AT_FREE",
    "PAGE_FREE",
    "PAGE_ZERO",
    "SHRINK_BATCH",
    "SHRINK_EMPTY",
    "SHRINK_STOP",
    "BuddyAllocator",
    "EventSink",
    "Shrinker",
    "ZeroPages",
    "__free_page",
    "__free_pages",
    "__free_pages_core",
    "__free_pages_core_range",
    "alloc_page",
    "alloc_pages",
    "arch_max_page_order",
    "free_pages",
    "get_order",
    "get_page",
    "nr_free_pages",
    "put_page",
    "split_page",
]

#: arch/arm64/Kconfig ARCH_FORCE_MAX_ORDER defaults, by PAGE_SHIFT [U].
MAX_PAGE_ORDER_BY_SHIFT: dict[int, int] = {12: 10, 14: 11, 16: 13}

#: include/linux/shrinker.h: a scan callback returns these instead of a count.
SHRINK_STOP = (1 << 64) - 1
SHRINK_EMPTY = SHRINK_STOP - 1
#: mm/shrinker.c: default batch of a shrinker scan.
SHRINK_BATCH = 128

PAGE_ALLOC = declare_event(
    "page_alloc", "pages handed out by the buddy allocator (count = 2^order)", "kernel"
)
PAGE_FREE = declare_event(
    "page_free", "pages returned to the buddy allocator at run time (not boot handover)", "kernel"
)
PAGE_ALLOC_FAIL = declare_event(
    "page_alloc_fail", "buddy allocations that returned NULL (count = calls)", "kernel"
)
PAGE_ZERO = declare_event(
    "page_zero", "pages zeroed by the page allocator (__GFP_ZERO, init_on_alloc/free)", "kernel"
)
DIRECT_RECLAIM = declare_event(
    "direct_reclaim", "direct-reclaim passes: shrinkers run after an allocation failed", "kernel"
)

#: A shrinker's scan callback: ``(nr_to_scan) -> freed``, or SHRINK_STOP/SHRINK_EMPTY.
Shrinker = Callable[[int], int]
#: The machine layer's page-zeroing callback: ``(pfn, nr_pages) -> None``.
ZeroPages = Callable[[int, int], None]

_BUDDY = 1 << PG_buddy
_HEAD = 1 << PG_head
_TAIL = 1 << PG_tail
_RESERVED = 1 << PG_reserved
_COMPOUND = _HEAD | _TAIL

#: Flags that must be clear on every page being freed (Linux's PAGE_FLAGS_CHECK_AT_FREE,
#: plus the page types buddy/slab/table that Linux checks through page_type/_mapcount).
PAGE_FLAGS_CHECK_AT_FREE = sum(
    1 << b
    for b in (0, 1, 5, 8, 12, 13, 14, 17, 18, PG_buddy, 25, 26)
    # PG_locked, PG_writeback, PG_lru, PG_active, PG_reserved, PG_private,
    # PG_private_2, PG_unevictable, PG_mlocked, PG_buddy, PG_slab, PG_table
)

# Local aliases: names starting with "__" would be mangled inside class bodies.
_GFP_ZERO = _gfp.__GFP_ZERO
_GFP_COMP = _gfp.__GFP_COMP
_GFP_NOWARN = _gfp.__GFP_NOWARN
_GFP_NOFAIL = _gfp.__GFP_NOFAIL
_GFP_DIRECT_RECLAIM = _gfp.__GFP_DIRECT_RECLAIM


class EventSink(Protocol):
    """Anything with ``emit(kind, n)``, e.g. :class:`kpkeys_sim.machine.events.Instruments`."""

    def emit(self, kind: str, n: int = 1) -> None: ...


def arch_max_page_order(page_shift: int) -> int:
    """MAX_PAGE_ORDER for a page size (arm64 ``ARCH_FORCE_MAX_ORDER``)."""
    try:
        return MAX_PAGE_ORDER_BY_SHIFT[page_shift]
    except KeyError:
        raise ValueError(f"bad page_shift {page_shift!r}: must be 12, 14 or 16") from None


def get_order(size: int, page_shift: int) -> int:
    """``get_order()``: smallest order whose block holds ``size`` bytes (``size >= 1``)."""
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"bad size {size!r}: must be a positive int")
    return max(0, ((size - 1) >> page_shift).bit_length())


class BuddyAllocator:
    """One zone of the buddy allocator over a :class:`MemMap`.

    ``free_area[order]`` is an ``OrderedDict`` of free block head pfns, ordered
    from list head to list tail.  The buddy state of a free head is in the
    mem_map, as in Linux: ``PG_buddy`` is set and ``private`` holds the order.

    Attributes other code may read: ``mem_map``, ``max_order``, ``nr_free``
    (free pages), ``managed_pages`` (pages ever handed over by memblock),
    ``shrinkers`` (list of :data:`Shrinker`, appended to by their owners),
    ``reclaim_nr_to_scan``, ``nr_zeroed_pages``, ``nr_alloc_failures``,
    ``warnings`` (the last 64 allocation-failure messages).
    """

    __slots__ = (
        "_in_reclaim",
        "free_area",
        "init_on_alloc",
        "init_on_free",
        "instruments",
        "kasan_hooks",
        "managed_pages",
        "max_order",
        "mem_map",
        "name",
        "nr_alloc_failures",
        "nr_free",
        "nr_zeroed_pages",
        "reclaim_nr_to_scan",
        "shrinkers",
        "warnings",
        "zero_pages",
    )

    def __init__(
        self,
        mem_map: MemMap,
        *,
        max_order: int | None = None,
        zero_pages: ZeroPages | None = None,
        instruments: EventSink | None = None,
        init_on_alloc: bool = False,
        init_on_free: bool = False,
        name: str = "Normal",
    ) -> None:
        if not isinstance(mem_map, MemMap):
            raise ValueError(f"bad mem_map {mem_map!r}: must be a MemMap")
        if max_order is None:
            max_order = arch_max_page_order(mem_map.page_shift)
        if not isinstance(max_order, int) or not 0 <= max_order <= 20:
            raise ValueError(f"bad max_order {max_order!r}: must be an int in 0..20")
        self.mem_map = mem_map
        self.max_order = max_order
        self.free_area: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(max_order + 1)]
        self.nr_free = 0
        self.managed_pages = 0
        self.shrinkers: list[Shrinker] = []
        self.reclaim_nr_to_scan = SHRINK_BATCH
        self.zero_pages = zero_pages
        self.instruments = instruments
        self.init_on_alloc = bool(init_on_alloc)
        self.init_on_free = bool(init_on_free)
        self.nr_zeroed_pages = 0
        #: Optional KASAN/MTE hooks ``(unpoison(pfn, order, gfp), poison(pfn, order))`` run by
        #: ``post_alloc_hook`` and ``free_pages_prepare`` (security layer; None: no KASAN).
        self.kasan_hooks: (
            tuple[Callable[[int, int, int], None], Callable[[int, int], None]] | None
        ) = None
        self.nr_alloc_failures = 0
        self.warnings: deque[str] = deque(maxlen=64)
        self.name = name
        self._in_reclaim = False

    def __repr__(self) -> str:
        return (
            f"BuddyAllocator(zone={self.name!r}, nr_free={self.nr_free}, "
            f"managed={self.managed_pages}, max_order={self.max_order})"
        )

    def free_counts(self) -> list[int]:
        """Free blocks per order, index = order (``/proc/buddyinfo``)."""
        return [len(fl) for fl in self.free_area]

    def free_blocks(self, order: int) -> Iterator[int]:
        """Head pfns of the free blocks of ``order``, from list head to tail."""
        return iter(list(self.free_area[order]))

    def check(self) -> None:
        """Verify the buddy invariants; raise :class:`KernelBug` naming the first violation.

        Every free block is aligned, inside the mem_map, marked ``PG_buddy`` with
        its order in ``private``, has refcount 0 and no flags that forbid
        freeing, and does not overlap another block.  No two free buddies of the
        same order exist (they would have merged).  ``nr_free`` matches the
        lists, and ``PG_buddy`` is set on free heads only.  Cost: one pass over
        the mem_map; meant for tests.
        """
        mm = self.mem_map
        base = mm.base_pfn
        covered = np.zeros(mm.nr_pages, dtype=np.uint8)
        total = 0
        nblocks = 0
        for order, fl in enumerate(self.free_area):
            n = 1 << order
            for pfn in fl:
                if pfn & (n - 1) or pfn < base or pfn + n > mm.end_pfn:
                    raise KernelBug(f"free block {pfn:#x} order {order}: misaligned or outside")
                i = pfn - base
                if not mm.flags.item(i) & _BUDDY or mm.private.item(i) != order:
                    raise KernelBug(f"free block {pfn:#x} order {order}: buddy state lost")
                if np.any(mm.refcount[i : i + n]):
                    raise KernelBug(f"free block {pfn:#x} order {order}: nonzero refcount")
                if np.any(mm.flags[i : i + n] & np.uint32(PAGE_FLAGS_CHECK_AT_FREE & ~_BUDDY)):
                    raise KernelBug(f"free block {pfn:#x} order {order}: bad flags")
                if np.any(mm.flags[i + 1 : i + n] & np.uint32(_BUDDY | _COMPOUND)):
                    raise KernelBug(f"free block {pfn:#x} order {order}: overlapping block")
                covered[i : i + n] += 1
                total += n
                nblocks += 1
                if order < self.max_order and (pfn ^ n) in fl:
                    raise KernelBug(f"free block {pfn:#x} order {order}: unmerged free buddy")
        if nblocks and int(covered.max()) > 1:
            raise KernelBug("free blocks overlap")
        if total != self.nr_free:
            raise KernelBug(f"nr_free {self.nr_free} != {total} pages on the free lists")
        if mm.count_flag(PG_buddy) != nblocks:
            raise KernelBug("PG_buddy set on a page that is not a free block head")


# ---------------------------------------------------------------------------
# Internal steps (kernel names where Linux has the same step).


def _emit(zone: BuddyAllocator, kind: str, n: int) -> None:
    ins = zone.instruments
    if ins is not None:
        ins.emit(kind, n)


def _zero(zone: BuddyAllocator, pfn: int, nr: int) -> None:
    """``kernel_init_pages()``: zero ``nr`` pages through the machine's callback."""
    zone.nr_zeroed_pages += nr
    if zone.zero_pages is not None:
        zone.zero_pages(pfn, nr)
    _emit(zone, PAGE_ZERO, nr)


def _check_order(zone: BuddyAllocator, order: int) -> None:
    if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= zone.max_order:
        raise ValueError(f"bad order {order!r}: must be an int in 0..{zone.max_order}")


def _check_block(zone: BuddyAllocator, pfn: int, order: int) -> int:
    """Validate a (pfn, order) argument; return the array index of ``pfn``."""
    _check_order(zone, order)
    if not isinstance(pfn, int) or isinstance(pfn, bool):
        raise ValueError(f"bad pfn {pfn!r}: must be an int")
    if pfn & ((1 << order) - 1):
        raise ValueError(f"bad pfn {pfn:#x}: not aligned to order {order}")
    return zone.mem_map.check_range(pfn, 1 << order)


def _bad_page(zone: BuddyAllocator, pfn: int, reason: str) -> KernelBug:
    """``bad_page()``: build the "Bad page state" report as a KernelBug."""
    mm = zone.mem_map
    i = pfn - mm.base_pfn
    return KernelBug(
        f"BUG: Bad page state: pfn:{pfn:#x} refcount:{mm.refcount.item(i)} "
        f"mapcount:{mm.mapcount.item(i)} mapping:{mm.mapping.item(i):#x} "
        f"flags:({page_flag_names(mm, pfn)}) reason: {reason}"
    )


def _check_free_range(
    zone: BuddyAllocator,
    pfn: int,
    order: int,
    compound: bool,
    *,
    skip_head_ref: bool = False,
    boot: bool = False,
) -> None:
    """``free_pages_prepare()``'s checks on every page of the block; raise before any change.

    ``skip_head_ref``: the head's reference is the one being dropped, so its
    refcount is not checked.  ``boot``: memblock handover, where pages are
    ``PG_reserved`` with refcount 1.
    """
    mm = zone.mem_map
    i = pfn - mm.base_pfn
    if order == 0 and not compound:
        # Fast path: the same checks on one page, with scalar reads.
        f = mm.flags.item(i)
        bad = PAGE_FLAGS_CHECK_AT_FREE & ~_RESERVED if boot else PAGE_FLAGS_CHECK_AT_FREE
        if f & bad:
            raise _bad_page(
                zone, pfn, "freeing a free page" if f & _BUDDY else "flag(s) set at free"
            )
        if f & _COMPOUND:
            raise _bad_page(zone, pfn, "compound page freed as a non-compound block")
        if mm.mapping.item(i):
            raise _bad_page(zone, pfn, "non-NULL mapping")
        if mm.mapcount.item(i):
            raise _bad_page(zone, pfn, "nonzero mapcount")
        if boot and not f & _RESERVED:
            raise _bad_page(zone, pfn, "boot handover of a page not PG_reserved")
        rc = mm.refcount.item(i)
        if rc > 1 if boot else rc and not skip_head_ref:
            raise _bad_page(zone, pfn, "nonzero _refcount")
        return
    n = 1 << order
    flags = mm.flags[i : i + n]
    bad = PAGE_FLAGS_CHECK_AT_FREE & ~_RESERVED if boot else PAGE_FLAGS_CHECK_AT_FREE
    if not boot:
        # Quick pass with one reduction per field; diagnose only when it fails.
        first = 1 if skip_head_ref else 0
        if not (
            (flags & np.uint32(bad if compound else bad | _COMPOUND)).any()
            or mm.mapping[i : i + n].any()
            or mm.mapcount[i : i + n].any()
            or mm.refcount[i + first : i + n].any()
            or (
                compound
                and (mm.compound_order.item(i) != order or not (flags[1:] & np.uint32(_TAIL)).all())
            )
        ):
            return
    hits = np.flatnonzero(flags & np.uint32(bad))
    if hits.size:
        j = int(hits[0])
        what = "freeing a free page" if flags.item(j) & _BUDDY else "flag(s) set at free"
        raise _bad_page(zone, pfn + j, what)
    if compound:
        if mm.compound_order.item(i) != order:
            raise _bad_page(
                zone, pfn, f"compound order {mm.compound_order.item(i)} freed as order {order}"
            )
        if n > 1 and not np.all(flags[1:] & np.uint32(_TAIL)):
            raise _bad_page(zone, pfn, "corrupted compound page tail")
    else:
        hits = np.flatnonzero(flags & np.uint32(_COMPOUND))
        if hits.size:
            raise _bad_page(zone, pfn + int(hits[0]), "compound page freed as a non-compound block")
    hits = np.flatnonzero(mm.mapping[i : i + n])
    if hits.size:
        raise _bad_page(zone, pfn + int(hits[0]), "non-NULL mapping")
    hits = np.flatnonzero(mm.mapcount[i : i + n])
    if hits.size:
        raise _bad_page(zone, pfn + int(hits[0]), "nonzero mapcount")
    if boot:
        hits = np.flatnonzero(~flags & np.uint32(_RESERVED))
        if hits.size:
            raise _bad_page(zone, pfn + int(hits[0]), "boot handover of a page not PG_reserved")
        hits = np.flatnonzero(mm.refcount[i : i + n] > 1)
        first = 0
    else:
        first = 1 if skip_head_ref else 0
        hits = np.flatnonzero(mm.refcount[i + first : i + n])
    if hits.size:
        raise _bad_page(zone, pfn + first + int(hits[0]), "nonzero _refcount")


def _prepare_free(zone: BuddyAllocator, pfn: int, order: int) -> None:
    """``free_pages_prepare()`` after the checks: clear page flags and compound state."""
    mm = zone.mem_map
    i = pfn - mm.base_pfn
    n = 1 << order
    if n == 1:
        mm.flags[i] = 0
        mm.refcount[i] = 0
    else:
        mm.flags[i : i + n] = 0
        mm.refcount[i : i + n] = 0
    mm.compound_order[i] = 0
    if zone.init_on_free:
        _zero(zone, pfn, n)


def __free_one_page(zone: BuddyAllocator, pfn: int, order: int, to_tail: bool = False) -> None:
    """``__free_one_page()``: merge with free buddies, then add to a free list.

    The merged block goes to the list head (``to_tail`` False) or to its tail
    (``FPI_TO_TAIL``, used by boot handover).  Accounting (``nr_free``) is the
    caller's job.
    """
    mm = zone.mem_map
    base = mm.base_pfn
    end = mm.end_pfn
    flags = mm.flags
    private = mm.private
    free_area = zone.free_area
    max_order = zone.max_order
    while order < max_order:
        buddy = pfn ^ (1 << order)
        if buddy < base or buddy >= end:
            break
        bi = buddy - base
        bf = flags.item(bi)
        if not bf & _BUDDY or private.item(bi) != order:
            break
        del free_area[order][buddy]
        flags[bi] = bf & ~_BUDDY
        private[bi] = 0
        pfn &= buddy
        order += 1
    i = pfn - base
    flags[i] = flags.item(i) | _BUDDY
    private[i] = order
    fl = free_area[order]
    fl[pfn] = None
    if not to_tail:
        fl.move_to_end(pfn, last=False)


def __rmqueue_smallest(zone: BuddyAllocator, order: int) -> int | None:
    """``__rmqueue_smallest()`` + ``expand()``: take the smallest free block and split it."""
    mm = zone.mem_map
    base = mm.base_pfn
    flags = mm.flags
    private = mm.private
    free_area = zone.free_area
    for current in range(order, zone.max_order + 1):
        fl = free_area[current]
        if not fl:
            continue
        pfn, _ = fl.popitem(last=False)
        i = pfn - base
        flags[i] = flags.item(i) & ~_BUDDY
        private[i] = 0
        high = current
        size = 1 << current
        while high > order:
            high -= 1
            size >>= 1
            p = pfn + size
            j = p - base
            flags[j] = flags.item(j) | _BUDDY
            private[j] = high
            lower = free_area[high]
            lower[p] = None
            lower.move_to_end(p, last=False)
        return pfn
    return None


def _direct_reclaim(zone: BuddyAllocator, order: int) -> int:
    """One ``shrink_slab()`` pass over ``zone.shrinkers`` (with ``PF_MEMALLOC`` set)."""
    nr_to_scan = max(zone.reclaim_nr_to_scan, 1 << order)
    freed = 0
    zone._in_reclaim = True
    try:
        for shrinker in list(zone.shrinkers):
            got = shrinker(nr_to_scan)
            if 0 < got < SHRINK_EMPTY:
                freed += got
    finally:
        zone._in_reclaim = False
    _emit(zone, DIRECT_RECLAIM, 1)
    return freed


def _prep_new_page(zone: BuddyAllocator, pfn: int, order: int, gfp: int) -> None:
    """``prep_new_page()``/``post_alloc_hook()``: refcount, zeroing, compound setup."""
    mm = zone.mem_map
    i = pfn - mm.base_pfn
    n = 1 << order
    mm.refcount[i] = 1
    if (gfp & _GFP_ZERO or zone.init_on_alloc) and not zone.init_on_free:
        _zero(zone, pfn, n)
    if gfp & _GFP_COMP and order:
        mm.flags[i] = mm.flags.item(i) | _HEAD
        mm.compound_order[i] = order
        mm.flags[i + 1 : i + n] |= np.uint32(_TAIL)
    if zone.kasan_hooks is not None:
        zone.kasan_hooks[0](pfn, order, gfp)  # kasan_unpoison_pages()


# ---------------------------------------------------------------------------
# Public API (kernel names).


def alloc_pages(zone: BuddyAllocator, gfp: int, order: int) -> int | None:
    """``alloc_pages(gfp, order)`` (mm/page_alloc.c ``__alloc_pages``): head pfn or None.

    The head page gets refcount 1; the other pages of a non-compound block keep
    refcount 0 (use :func:`split_page` to make them independent).  With
    ``__GFP_COMP`` the block is a compound page (``PG_head`` + ``PG_tail``).
    On failure: one direct-reclaim pass and one retry when ``gfp`` allows direct
    reclaim and shrinkers are registered (see the module docstring).  Then it
    returns None, recording a "page allocation failure" warning unless
    ``__GFP_NOWARN`` is set.
    """
    _gfp.check_gfp_arg(gfp)
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise ValueError(f"bad order {order!r}: must be a non-negative int")
    if order > zone.max_order:
        # WARN_ON_ONCE_GFP(order > MAX_PAGE_ORDER, gfp): NULL, as in Linux.
        _alloc_failed(zone, gfp, order)
        return None
    pfn = __rmqueue_smallest(zone, order)
    if pfn is None and gfp & _GFP_DIRECT_RECLAIM and zone.shrinkers and not zone._in_reclaim:
        _direct_reclaim(zone, order)
        pfn = __rmqueue_smallest(zone, order)
    if pfn is None:
        _alloc_failed(zone, gfp, order)
        if gfp & _GFP_NOFAIL:
            raise KernelBug(
                f"out of memory: __GFP_NOFAIL allocation of order {order} failed "
                "(Linux would OOM-kill and retry forever)"
            )
        return None
    zone.nr_free -= 1 << order
    _prep_new_page(zone, pfn, order, gfp)
    _emit(zone, PAGE_ALLOC, 1 << order)
    return pfn


def _alloc_failed(zone: BuddyAllocator, gfp: int, order: int) -> None:
    """``warn_alloc()``: record the failure."""
    zone.nr_alloc_failures += 1
    _emit(zone, PAGE_ALLOC_FAIL, 1)
    if not gfp & _GFP_NOWARN:
        zone.warnings.append(
            f"page allocation failure: order:{order}, mode:{gfp:#x}({_gfp.gfp_names(gfp)})"
        )


def alloc_page(zone: BuddyAllocator, gfp: int) -> int | None:
    """``alloc_page(gfp)``: ``alloc_pages(zone, gfp, 0)``."""
    return alloc_pages(zone, gfp, 0)


def _free_checked(zone: BuddyAllocator, pfn: int, order: int) -> None:
    """Free a block that passed :func:`_check_free_range`: clear, merge, account."""
    if zone.kasan_hooks is not None:
        zone.kasan_hooks[1](pfn, order)  # kasan_poison_pages()
    _prepare_free(zone, pfn, order)
    __free_one_page(zone, pfn, order)
    zone.nr_free += 1 << order
    _emit(zone, PAGE_FREE, 1 << order)


def __free_pages(zone: BuddyAllocator, pfn: int, order: int) -> None:
    """``__free_pages(page, order)`` (mm/page_alloc.c): drop a reference; free at zero.

    As in Linux: if the head's refcount drops to zero the whole block is freed.
    If someone else still holds a reference to a *non-compound* head, the tail
    parts are freed now (``order-1 .. 0`` pieces) and the head page is freed
    by the last :func:`put_page`.  A refcount already at zero raises
    :class:`KernelBug` (double free).  A compound page must be freed with its
    own order.
    """
    mm = zone.mem_map
    if order == 0 and type(order) is int and type(pfn) is int and mm.base_pfn <= pfn < mm.end_pfn:
        # Fast path for the common case (an order-0, non-compound page whose last
        # reference is dropped): the same checks and steps as below, with the argument
        # checks of _check_block done inline.
        i = pfn - mm.base_pfn
        if mm.refcount.item(i) == 1 and not mm.flags.item(i) & _COMPOUND:
            _check_free_range(zone, pfn, 0, False, skip_head_ref=True)
            _free_checked(zone, pfn, 0)
            return
    i = _check_block(zone, pfn, order)
    rc = mm.refcount.item(i)
    flags = mm.flags.item(i)
    head = bool(flags & _HEAD)
    if flags & _TAIL:
        raise _bad_page(zone, pfn, "__free_pages() on a tail page")
    if rc <= 0:
        raise KernelBug(
            f"VM_BUG_ON_PAGE: __free_pages() of pfn {pfn:#x} order {order} with refcount {rc} "
            "(double free?)"
        )
    if rc == 1:
        _check_free_range(zone, pfn, order, head, skip_head_ref=True)
        _free_checked(zone, pfn, order)
        return
    if head:
        mm.refcount[i] = rc - 1
        return
    for o in range(order - 1, -1, -1):
        _check_free_range(zone, pfn + (1 << o), o, False)
    mm.refcount[i] = rc - 1
    for o in range(order - 1, -1, -1):
        _free_checked(zone, pfn + (1 << o), o)


def __free_page(zone: BuddyAllocator, pfn: int) -> None:
    """``__free_page(page)``: ``__free_pages(zone, pfn, 0)``."""
    __free_pages(zone, pfn, 0)


def free_pages(zone: BuddyAllocator, pfn: int | None, order: int) -> None:
    """``free_pages(addr, order)``: as ``__free_pages`` but a NULL (None) address is a no-op.

    Linux takes a linear-map virtual address here; the model has no linear map
    at this layer and takes the pfn.
    """
    if pfn is None:
        return
    __free_pages(zone, pfn, order)


def get_page(zone: BuddyAllocator, pfn: int) -> None:
    """``get_page()``: take a reference on the (head of the) page; on a free page, KernelBug."""
    mm = zone.mem_map
    head = compound_head(mm, pfn)
    i = head - mm.base_pfn
    rc = mm.refcount.item(i)
    if rc <= 0:
        raise KernelBug(f"VM_BUG_ON_PAGE: get_page() on pfn {pfn:#x} with refcount {rc}")
    mm.refcount[i] = rc + 1


def put_page(zone: BuddyAllocator, pfn: int) -> None:
    """``put_page()`` (``folio_put``): drop a reference; at zero free the page or compound page.

    A non-compound page is freed as order 0, as in Linux (``put_page`` on the
    head of a non-compound high-order block frees only that page).
    """
    mm = zone.mem_map
    head = compound_head(mm, pfn)
    i = head - mm.base_pfn
    rc = mm.refcount.item(i)
    if rc <= 0:
        raise KernelBug(f"VM_BUG_ON_PAGE: put_page() on pfn {pfn:#x} with refcount {rc}")
    if rc > 1:
        mm.refcount[i] = rc - 1
        return
    flags = mm.flags.item(i)
    compound = bool(flags & _HEAD)
    order = mm.compound_order.item(i) if compound else 0
    _check_free_range(zone, head, order, compound, skip_head_ref=True)
    _free_checked(zone, head, order)


def split_page(zone: BuddyAllocator, pfn: int, order: int) -> None:
    """``split_page(page, order)``: make an order-N non-compound block 2^N order-0 pages.

    Each page ends up with refcount 1 and can be freed on its own with
    :func:`__free_page`.  A compound page, a head with refcount 0 or a range
    holding free or already-split pages raises :class:`KernelBug` (Linux:
    ``VM_BUG_ON_PAGE(PageCompound(page))``, ``VM_BUG_ON_PAGE(!page_count(page))``).
    """
    i = _check_block(zone, pfn, order)
    mm = zone.mem_map
    n = 1 << order
    if np.any(mm.flags[i : i + n] & np.uint32(_COMPOUND)):
        raise KernelBug(f"VM_BUG_ON_PAGE: split_page() of compound page {pfn:#x}")
    if mm.refcount.item(i) <= 0:
        raise KernelBug(f"VM_BUG_ON_PAGE: split_page() of pfn {pfn:#x} with refcount 0")
    if np.any(mm.flags[i : i + n] & np.uint32(_BUDDY)) or np.any(mm.refcount[i + 1 : i + n]):
        raise KernelBug(
            f"split_page() of pfn {pfn:#x} order {order}: range is not one allocated block"
        )
    mm.refcount[i + 1 : i + n] = 1


def nr_free_pages(zone: BuddyAllocator) -> int:
    """``nr_free_pages()``: free pages in the zone."""
    return zone.nr_free


def __free_pages_core(zone: BuddyAllocator, pfn: int, order: int) -> None:
    """``__free_pages_core()``: hand a boot-time (memblock) block to the buddy allocator.

    Clears ``PG_reserved`` and sets the refcount to 0 on every page, counts
    the pages as managed, and frees the block to the *tail* of its free list
    (``FPI_TO_TAIL``).  Used by ``memblock_free_late()``.  Not counted as a
    ``page_free`` event.
    """
    i = _check_block(zone, pfn, order)
    _check_free_range(zone, pfn, order, compound=False, boot=True)
    n = 1 << order
    mm = zone.mem_map
    mm.flags[i : i + n] &= np.uint32(~_RESERVED & 0xFFFFFFFF)
    mm.refcount[i : i + n] = 0
    if zone.init_on_free:
        _zero(zone, pfn, n)
    __free_one_page(zone, pfn, order, to_tail=True)
    zone.nr_free += n
    zone.managed_pages += n


def __free_pages_core_range(zone: BuddyAllocator, start_pfn: int, end_pfn: int) -> int:
    """Boot handover of ``[start_pfn, end_pfn)``: memblock's ``__free_pages_memory()`` loop.

    It has the same effect as calling :func:`__free_pages_core` on each chunk that
    ``__free_pages_memory()`` (mm/memblock.c) cuts.  Chunk order is
    ``min(max_order, __ffs(pfn))`` and shrinks to fit before ``end_pfn``.  The
    per-page work (checks, clearing ``PG_reserved``, refcount) is vectorised
    over the whole range, so 64 GiB hands over in a fraction of a second.
    Each page must be either reserved (``PG_reserved``, refcount 1) or fresh
    (no flags, refcount 0, as ``memblock_free_all()`` leaves free ranges).
    Returns the number of pages freed.
    """
    mm = zone.mem_map
    if start_pfn >= end_pfn:
        return 0
    mm.check_range(start_pfn, end_pfn - start_pfn)
    i, j = start_pfn - mm.base_pfn, end_pfn - mm.base_pfn
    flags = mm.flags[i:j]
    bad = np.flatnonzero(flags & np.uint32(PAGE_FLAGS_CHECK_AT_FREE & ~_RESERVED | _COMPOUND))
    if bad.size:
        raise _bad_page(zone, start_pfn + int(bad[0]), "boot handover of a page in use")
    refcount = mm.refcount[i:j]
    if np.any(refcount > 1) or np.any(mm.mapping[i:j]) or np.any(mm.mapcount[i:j]):
        raise _bad_page(zone, start_pfn, "boot handover of a page in use")
    # Only write what is set: untouched (fresh) mem_map memory stays unallocated.
    if np.any(flags):
        flags &= np.uint32(~_RESERVED & 0xFFFFFFFF)
    if np.any(refcount):
        refcount[:] = 0
    max_order = zone.max_order
    pfn = start_pfn
    while pfn < end_pfn:
        order = min(max_order, (pfn & -pfn).bit_length() - 1) if pfn else max_order
        while pfn + (1 << order) > end_pfn:
            order -= 1
        if zone.init_on_free:
            _zero(zone, pfn, 1 << order)
        __free_one_page(zone, pfn, order, to_tail=True)
        pfn += 1 << order
    n = end_pfn - start_pfn
    zone.nr_free += n
    zone.managed_pages += n
    return n
