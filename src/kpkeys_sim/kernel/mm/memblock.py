"""memblock, the boot-time physical memory allocator (``mm/memblock.c``).

:class:`Memblock` holds the ``memory`` and ``reserved`` region lists (sorted,
non-overlapping, adjacent regions with equal flags merged, as
``memblock_merge_regions()`` leaves them).  The kernel-named functions take it
explicitly.  All addresses and sizes are physical, in bytes.

Model decisions (also in ``docs/model-assumptions.md``):

* Allocation is **top-down** by default (``memblock_bottom_up()`` false, the
  Linux default): the highest suitable free address wins.  The first page is
  never handed out, and the size is rounded up to the alignment
  (``memblock_alloc_range_nid``).  A failed allocation returns 0.
* The region arrays grow without limit.  Linux has static arrays of
  ``INIT_MEMBLOCK_*_REGIONS`` entries that can double only after
  ``memblock_allow_resize()``.  The constants are still provided because
  the PPA sizes its range table with ``INIT_MEMBLOCK_MEMORY_REGIONS``.  On
  arm64 that is ``INIT_MEMBLOCK_REGIONS * 8`` = 1024.  This is consistent
  with spec §4.10, where the table is "16 KB on arm64" at 16 bytes per range
  [U: arch/arm64/include/asm/memory.h].
* No NUMA ids; ``MEMBLOCK_HOTPLUG`` is recorded but never skipped (no
  ``movable_node``); kmemleak is not modelled, so ``MEMBLOCK_ALLOC_NOLEAKTRACE``
  behaves as ``MEMBLOCK_ALLOC_ACCESSIBLE``.
* ``memblock_free_all()`` hands every free page (memory minus reserved minus
  ``NOMAP``, page-rounded inwards) to the buddy allocator in the chunks
  ``__free_pages_memory()`` cuts, vectorised per range.  Every other page of
  the mem_map stays ``PG_reserved`` with refcount 1.  After it, memblock
  allocations raise :class:`KernelBug` (Linux would hand out pages the buddy
  allocator owns).
* ``memblock_free_late()`` frees pages straight to the buddy allocator and,
  as in Linux, leaves the ``reserved`` list unchanged (arm64 selects
  ``ARCH_KEEP_MEMBLOCK``, so the list outlives boot but is not kept exact).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.mm.page import PG_reserved
from kpkeys_sim.kernel.mm.page_alloc import (
    BuddyAllocator,
    EventSink,
    __free_pages_core,
    __free_pages_core_range,
)
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "INIT_MEMBLOCK_MEMORY_REGIONS",
    "INIT_MEMBLOCK_REGIONS",
    "INIT_MEMBLOCK_RESERVED_REGIONS",
    "MEMBLOCK_ALLOC",
    "MEMBLOCK_ALLOC_ACCESSIBLE",
    "MEMBLOCK_ALLOC_ANYWHERE",
    "MEMBLOCK_ALLOC_NOLEAKTRACE",
    "MEMBLOCK_DRIVER_MANAGED",
    "MEMBLOCK_HOTPLUG",
    "MEMBLOCK_MIRROR",
    "MEMBLOCK_NOMAP",
    "MEMBLOCK_NONE",
    "MEMBLOCK_RSRV_NOINIT",
    "PHYS_ADDR_MAX",
    "Memblock",
    "MemblockRegion",
    "MemblockType",
    "for_each_free_mem_range",
    "memblock_add",
    "memblock_bottom_up",
    "memblock_clear_nomap",
    "memblock_end_of_DRAM",
    "memblock_free",
    "memblock_free_all",
    "memblock_free_late",
    "memblock_is_memory",
    "memblock_is_region_reserved",
    "memblock_is_reserved",
    "memblock_mark_mirror",
    "memblock_mark_nomap",
    "memblock_phys_alloc",
    "memblock_phys_alloc_range",
    "memblock_phys_free",
    "memblock_phys_mem_size",
    "memblock_remove",
    "memblock_reserve",
    "memblock_reserved_size",
    "memblock_set_bottom_up",
    "memblock_set_current_limit",
    "memblock_start_of_DRAM",
]

#: include/linux/memblock.h
INIT_MEMBLOCK_REGIONS = 128
#: arm64 override (INIT_MEMBLOCK_REGIONS * 8) [U]; the PPA's PHYSMEM_MAX_RANGES.
INIT_MEMBLOCK_MEMORY_REGIONS = INIT_MEMBLOCK_REGIONS * 8
#: Linux: INIT_MEMBLOCK_REGIONS + NR_CPUS + 1; the model takes NR_CPUS = 64 (its CPU limit).
INIT_MEMBLOCK_RESERVED_REGIONS = INIT_MEMBLOCK_REGIONS + 64 + 1

# enum memblock_flags
MEMBLOCK_NONE = 0x0
MEMBLOCK_HOTPLUG = 0x1
MEMBLOCK_MIRROR = 0x2
MEMBLOCK_NOMAP = 0x4
MEMBLOCK_DRIVER_MANAGED = 0x8
MEMBLOCK_RSRV_NOINIT = 0x10
_ALL_FLAGS = 0x1F

PHYS_ADDR_MAX = (1 << 64) - 1
# Special values of an allocation's ``end``.
MEMBLOCK_ALLOC_ANYWHERE = PHYS_ADDR_MAX
MEMBLOCK_ALLOC_ACCESSIBLE = 0
MEMBLOCK_ALLOC_NOLEAKTRACE = 1

MEMBLOCK_ALLOC = declare_event("memblock_alloc", "successful memblock allocations", "kernel")


class MemblockRegion(NamedTuple):
    """``struct memblock_region``: ``[base, base + size)`` with ``MEMBLOCK_*`` flags."""

    base: int
    size: int
    flags: int

    @property
    def end(self) -> int:
        """First byte after the region."""
        return self.base + self.size


class MemblockType:
    """``struct memblock_type``: a sorted, merged list of regions."""

    __slots__ = ("name", "regions")

    def __init__(self, name: str) -> None:
        self.name = name
        self.regions: list[MemblockRegion] = []

    def __repr__(self) -> str:
        body = ", ".join(f"[{r.base:#x}-{r.end - 1:#x} f={r.flags:#x}]" for r in self.regions)
        return f"MemblockType({self.name}: {body})"

    @property
    def cnt(self) -> int:
        """Number of regions."""
        return len(self.regions)

    @property
    def total_size(self) -> int:
        """Sum of region sizes in bytes."""
        return sum(r.size for r in self.regions)


class Memblock:
    """``struct memblock`` plus the model's counters.

    ``nr_allocated_bytes``/``nr_allocs`` count successful allocations
    (cumulative; frees do not decrement them).  ``zone`` is the buddy allocator
    once ``memblock_free_all()`` has run (None before).
    """

    __slots__ = (
        "bottom_up",
        "current_limit",
        "instruments",
        "memory",
        "nr_allocated_bytes",
        "nr_allocs",
        "page_shift",
        "page_size",
        "reserved",
        "zone",
    )

    def __init__(self, *, page_shift: int = 12, instruments: EventSink | None = None) -> None:
        if page_shift not in (12, 14, 16):
            raise ValueError(f"bad page_shift {page_shift!r}: must be 12, 14 or 16")
        self.page_shift = page_shift
        self.page_size = 1 << page_shift
        self.memory = MemblockType("memory")
        self.reserved = MemblockType("reserved")
        self.bottom_up = False
        self.current_limit = MEMBLOCK_ALLOC_ANYWHERE
        self.nr_allocated_bytes = 0
        self.nr_allocs = 0
        self.zone: BuddyAllocator | None = None
        self.instruments = instruments

    def __repr__(self) -> str:
        return f"Memblock(memory={self.memory!r}, reserved={self.reserved!r})"


# ---------------------------------------------------------------------------
# Region list operations (memblock_add_range / memblock_remove_range / setclr_flag).


def _check_range(base: int, size: int) -> int:
    if not isinstance(base, int) or isinstance(base, bool) or base < 0:
        raise ValueError(f"bad base {base!r}: must be a non-negative int")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"bad size {size!r}: must be a non-negative int")
    return min(base + size, PHYS_ADDR_MAX)  # memblock_cap_size()


def _merge(regions: list[MemblockRegion]) -> list[MemblockRegion]:
    """``memblock_merge_regions()``: sort and merge touching regions with equal flags."""
    out: list[MemblockRegion] = []
    for r in sorted(regions):
        if r.size == 0:
            continue
        if out and out[-1].end == r.base and out[-1].flags == r.flags:
            prev = out[-1]
            out[-1] = MemblockRegion(prev.base, prev.size + r.size, prev.flags)
        else:
            out.append(r)
    return out


def _add_range(t: MemblockType, base: int, size: int, flags: int) -> int:
    """``memblock_add_range()``: insert the parts of the range not already covered."""
    end = _check_range(base, size)
    if base == end:
        return 0
    new: list[MemblockRegion] = []
    cur = base
    for r in t.regions:
        if r.base >= end:
            break
        if r.end <= cur:
            continue
        if r.base > cur:
            new.append(MemblockRegion(cur, r.base - cur, flags))
        cur = max(cur, r.end)
    if cur < end:
        new.append(MemblockRegion(cur, end - cur, flags))
    t.regions = _merge(t.regions + new)
    return 0


def _isolate(t: MemblockType, base: int, end: int) -> None:
    """``memblock_isolate_range()``: split regions at ``base`` and ``end``."""
    out: list[MemblockRegion] = []
    for r in t.regions:
        cuts = sorted({r.base, r.end} | {c for c in (base, end) if r.base < c < r.end})
        out.extend(MemblockRegion(a, b - a, r.flags) for a, b in itertools.pairwise(cuts))
    t.regions = out


def _remove_range(t: MemblockType, base: int, size: int) -> int:
    """``memblock_remove_range()``: drop every byte of the range from the list."""
    end = _check_range(base, size)
    if base == end:
        return 0
    _isolate(t, base, end)
    t.regions = _merge([r for r in t.regions if r.end <= base or r.base >= end])
    return 0


def _setclr_flag(t: MemblockType, base: int, size: int, flag: int, set_: bool) -> int:
    """``memblock_setclr_flag()``: set or clear ``flag`` on every region in the range."""
    end = _check_range(base, size)
    if base == end:
        return 0
    _isolate(t, base, end)
    t.regions = _merge(
        [
            r
            if r.end <= base or r.base >= end
            else MemblockRegion(r.base, r.size, r.flags | flag if set_ else r.flags & ~flag)
            for r in t.regions
        ]
    )
    return 0


def _check_no_buddy(mb: Memblock, what: str) -> None:
    if mb.zone is not None:
        raise KernelBug(f"{what} after memblock_free_all(): the buddy allocator owns the pages")


# ---------------------------------------------------------------------------
# Public API (kernel names).


def memblock_add(mb: Memblock, base: int, size: int) -> int:
    """``memblock_add()``: add ``[base, base + size)`` to ``memory``; returns 0."""
    return _add_range(mb.memory, base, size, MEMBLOCK_NONE)


def memblock_remove(mb: Memblock, base: int, size: int) -> int:
    """``memblock_remove()``: remove the range from ``memory``; returns 0."""
    return _remove_range(mb.memory, base, size)


def memblock_reserve(mb: Memblock, base: int, size: int) -> int:
    """``memblock_reserve()``: add the range to ``reserved``; returns 0."""
    return _add_range(mb.reserved, base, size, MEMBLOCK_NONE)


def memblock_phys_free(mb: Memblock, base: int, size: int) -> int:
    """``memblock_phys_free()``: remove the range from ``reserved`` (before handover); 0."""
    _check_no_buddy(mb, "memblock_phys_free()")
    return _remove_range(mb.reserved, base, size)


def memblock_free(mb: Memblock, base: int, size: int) -> None:
    """``memblock_free()``: as :func:`memblock_phys_free`.

    Linux's ``memblock_free(void *ptr, size)`` takes a linear-map pointer.
    There is no linear map at this layer, so the model takes the physical
    address.
    """
    memblock_phys_free(mb, base, size)


def memblock_mark_nomap(mb: Memblock, base: int, size: int) -> int:
    """``memblock_mark_nomap()``: the range is memory but never mapped nor freed to buddy."""
    return _setclr_flag(mb.memory, base, size, MEMBLOCK_NOMAP, True)


def memblock_clear_nomap(mb: Memblock, base: int, size: int) -> int:
    """``memblock_clear_nomap()``."""
    return _setclr_flag(mb.memory, base, size, MEMBLOCK_NOMAP, False)


def memblock_mark_mirror(mb: Memblock, base: int, size: int) -> int:
    """``memblock_mark_mirror()``: mark mirrored memory (allocations may ask for it)."""
    return _setclr_flag(mb.memory, base, size, MEMBLOCK_MIRROR, True)


def memblock_set_bottom_up(mb: Memblock, enable: bool) -> None:
    """``memblock_set_bottom_up()``: allocate from low addresses up instead of top-down."""
    mb.bottom_up = bool(enable)


def memblock_bottom_up(mb: Memblock) -> bool:
    """``memblock_bottom_up()``."""
    return mb.bottom_up


def memblock_set_current_limit(mb: Memblock, limit: int) -> None:
    """``memblock_set_current_limit()``: the top used for ``MEMBLOCK_ALLOC_ACCESSIBLE``."""
    _check_range(limit, 0)
    mb.current_limit = limit


def memblock_phys_mem_size(mb: Memblock) -> int:
    """``memblock_phys_mem_size()``: bytes of memory."""
    return mb.memory.total_size


def memblock_reserved_size(mb: Memblock) -> int:
    """``memblock_reserved_size()``: bytes reserved."""
    return mb.reserved.total_size


def memblock_start_of_DRAM(mb: Memblock) -> int:
    """``memblock_start_of_DRAM()``: lowest memory address (0 if no memory)."""
    return mb.memory.regions[0].base if mb.memory.regions else 0


def memblock_end_of_DRAM(mb: Memblock) -> int:
    """``memblock_end_of_DRAM()``: first address after the highest memory region."""
    return mb.memory.regions[-1].end if mb.memory.regions else 0


def _contains(t: MemblockType, addr: int) -> bool:
    return any(r.base <= addr < r.end for r in t.regions)


def memblock_is_memory(mb: Memblock, addr: int) -> bool:
    """``memblock_is_memory()``."""
    return _contains(mb.memory, addr)


def memblock_is_reserved(mb: Memblock, addr: int) -> bool:
    """``memblock_is_reserved()``."""
    return _contains(mb.reserved, addr)


def memblock_is_region_reserved(mb: Memblock, base: int, size: int) -> bool:
    """``memblock_is_region_reserved()``: the range intersects a reserved region."""
    end = _check_range(base, size)
    return any(r.base < end and base < r.end for r in mb.reserved.regions)


def for_each_free_mem_range(mb: Memblock, flags: int = MEMBLOCK_NONE) -> Iterator[tuple[int, int]]:
    """``for_each_free_mem_range()``: ``(start, end)`` of memory not reserved, ascending.

    As ``__next_mem_range()`` does: ``NOMAP`` memory is skipped unless
    ``flags`` has ``MEMBLOCK_NOMAP``, and with ``MEMBLOCK_MIRROR`` only mirrored
    memory is returned.
    """
    if flags & ~_ALL_FLAGS:
        raise ValueError(f"bad memblock flags {flags:#x}")
    res = mb.reserved.regions
    for m in mb.memory.regions:
        if flags & MEMBLOCK_MIRROR and not m.flags & MEMBLOCK_MIRROR:
            continue
        if not flags & MEMBLOCK_NOMAP and m.flags & MEMBLOCK_NOMAP:
            continue
        cur = m.base
        for r in res:
            if r.end <= cur:
                continue
            if r.base >= m.end:
                break
            if r.base > cur:
                yield cur, r.base
            cur = max(cur, r.end)
        if cur < m.end:
            yield cur, m.end


def _find_in_range(mb: Memblock, size: int, align: int, start: int, end: int, flags: int) -> int:
    """``memblock_find_in_range_node()``: top-down (default) or bottom-up search; 0 if none."""
    if end in (MEMBLOCK_ALLOC_ACCESSIBLE, MEMBLOCK_ALLOC_NOLEAKTRACE):
        end = mb.current_limit
    start = max(start, mb.page_size)  # avoid allocating the first page
    end = max(start, end)
    ranges = list(for_each_free_mem_range(mb, flags))
    if mb.bottom_up:
        for lo, hi in ranges:
            lo, hi = min(max(lo, start), end), min(max(hi, start), end)
            cand = (lo + align - 1) & ~(align - 1)
            if cand < hi and hi - cand >= size:
                return cand
        return 0
    for lo, hi in reversed(ranges):
        lo, hi = min(max(lo, start), end), min(max(hi, start), end)
        if hi < size:
            continue
        cand = (hi - size) & ~(align - 1)
        if cand >= lo:
            return cand
    return 0


def memblock_phys_alloc_range(
    mb: Memblock, size: int, align: int, start: int, end: int, flags: int = MEMBLOCK_NONE
) -> int:
    """``memblock_phys_alloc_range()`` (``memblock_alloc_range_nid``): reserve and return.

    Finds ``size`` bytes aligned to ``align`` (a power of two) inside
    ``[start, end)`` in free memory, top-down unless bottom-up is set, and
    reserves them.  ``size`` is first rounded up to ``align`` as in Linux.
    ``end`` may be ``MEMBLOCK_ALLOC_ACCESSIBLE``/``MEMBLOCK_ALLOC_NOLEAKTRACE``
    (up to ``current_limit``) or ``MEMBLOCK_ALLOC_ANYWHERE``.  ``flags`` are the
    memory-region flags wanted (Linux's ``choose_memblock_flags()``).
    ``MEMBLOCK_MIRROR`` falls back to any memory, as Linux does after its
    warning.  Returns the physical address, or 0 when nothing fits.
    """
    _check_no_buddy(mb, "memblock_phys_alloc_range()")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"bad size {size!r}: must be a positive int")
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise ValueError(f"bad align {align!r}: must be a positive power of two")
    _check_range(start, 0)
    _check_range(end, 0)
    if flags & ~(MEMBLOCK_MIRROR | MEMBLOCK_NOMAP):
        raise ValueError(f"bad memblock allocation flags {flags:#x}")
    size = (size + align - 1) & ~(align - 1)
    while True:
        found = _find_in_range(mb, size, align, start, end, flags)
        if found:
            memblock_reserve(mb, found, size)
            mb.nr_allocated_bytes += size
            mb.nr_allocs += 1
            if mb.instruments is not None:
                mb.instruments.emit(MEMBLOCK_ALLOC, 1)
            return found
        if flags & MEMBLOCK_MIRROR:
            flags &= ~MEMBLOCK_MIRROR
            continue
        return 0


def memblock_phys_alloc(mb: Memblock, size: int, align: int) -> int:
    """``memblock_phys_alloc()``: anywhere below ``current_limit``; 0 on failure."""
    return memblock_phys_alloc_range(mb, size, align, 0, MEMBLOCK_ALLOC_ACCESSIBLE)


def memblock_free_all(mb: Memblock, zone: BuddyAllocator) -> int:
    """``memblock_free_all()`` (``free_low_memory_core_early``): hand free pages to the buddy.

    Every page of the zone's mem_map outside the free ranges is initialised as
    reserved (``PG_reserved``, refcount 1; ``memmap_init_reserved_pages`` and
    ``init_unavailable_range``).  Then every free range (memory minus reserved,
    minus ``NOMAP``, rounded inwards to whole pages) is freed in the chunks
    ``__free_pages_memory()`` cuts (largest order that alignment allows, up to
    ``MAX_PAGE_ORDER``).  Returns the number of pages handed over.  Memory
    outside the mem_map is a programming error (``ValueError``).
    """
    if mb.zone is not None or zone.managed_pages:
        raise ValueError("memblock_free_all() called twice (the zone already has managed pages)")
    mm = zone.mem_map
    if mm.page_shift != mb.page_shift:
        raise ValueError(
            f"bad zone: page_shift {mm.page_shift} differs from memblock's {mb.page_shift}"
        )
    shift = mb.page_shift
    for r in mb.memory.regions:
        lo, hi = r.base >> shift, (r.end + mb.page_size - 1) >> shift
        if lo < mm.base_pfn or hi > mm.end_pfn:
            raise ValueError(
                f"bad memory region [{r.base:#x}, {r.end:#x}): outside the mem_map "
                f"[{mm.pfn_to_phys(mm.base_pfn):#x}, {mm.pfn_to_phys(mm.end_pfn):#x})"
            )
    free: list[tuple[int, int]] = []
    for start, end in for_each_free_mem_range(mb):
        start_pfn = (start + mb.page_size - 1) >> shift
        end_pfn = end >> shift
        if start_pfn < end_pfn:
            free.append((start_pfn, end_pfn))
    # memmap_init_reserved_pages()/init_unavailable_range(): every page outside
    # the free ranges is reserved with refcount 1.  Free ranges are left fresh
    # (their refcount is 0 after __free_pages_core() anyway).
    base = mm.base_pfn
    prev = base
    for start_pfn, end_pfn in [*free, (mm.end_pfn, mm.end_pfn)]:
        if prev < start_pfn:
            mm.flags[prev - base : start_pfn - base] |= np.uint32(1 << PG_reserved)
            mm.refcount[prev - base : start_pfn - base] = 1
        prev = end_pfn
    count = 0
    for start_pfn, end_pfn in free:
        count += __free_pages_core_range(zone, start_pfn, end_pfn)
    mb.zone = zone
    return count


def memblock_free_late(mb: Memblock, base: int, size: int) -> None:
    """``memblock_free_late()``: free a memblock range straight to the buddy allocator.

    Each whole page of the range goes through ``__free_pages_core()`` as an
    order-0 page (to the free-list tail), as in Linux.  The ``reserved`` list
    is left as it is.  Calling it before ``memblock_free_all()`` is a
    programming error (``ValueError``); freeing a page that is not reserved
    raises :class:`KernelBug`.
    """
    end = _check_range(base, size)
    zone = mb.zone
    if zone is None:
        raise ValueError("memblock_free_late() before memblock_free_all()")
    shift = mb.page_shift
    for pfn in range((base + mb.page_size - 1) >> shift, end >> shift):
        __free_pages_core(zone, pfn, 0)
