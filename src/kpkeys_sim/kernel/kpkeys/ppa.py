"""The pkeys physmem allocator (PPA): memblock page tables made before pkeys can be set.

Spec: kpkeys-series.md §4.10 (v6 end-of-series ``mm/kpkeys_hardened_pgtables.c``;
v7 13/24), §3.4 and §3.7 (when it runs).  Kernel names:
:func:`kpkeys_physmem_pgtable_alloc`, :func:`ppa_refill`,
:func:`ppa_register_full_range`, :func:`ppa_register_allocated_range`,
:func:`ppa_try_extend_last_range`, :func:`ppa_finalize`,
:func:`set_pkey_pgtable_phys`.

Page tables allocated from memblock while the linear map is being built
cannot get their pkey yet.  The PPA hands them out and remembers where they
are, so that :func:`ppa_finalize` can protect them once ``set_memory_pkey()``
is usable (v6: ``kpkeys_hardened_pgtables_init_late``; v7:
``kpkeys_hardened_pgtables_init`` in ``mem_init``).

:func:`kpkeys_physmem_pgtable_alloc` is meant to be installed as
``k.early_pgtable_alloc`` (arm64 ``pgd_pgtable_alloc``'s early path) by
``kpkeys_hardened_pgtables``.  The variant follows ``k.config.series``: "v7"
selects the v7 allocator, anything else the v6 one (v5 has no PPA; a v5
kernel never installs it).

v6 (:class:`PkeysPhysmemAllocator` with ``free_range`` and ``full_ranges``):

* memblock is asked for ``PHYSMEM_REFILL_SIZE = PAGE_SIZE << refill_orders[0]``
  bytes aligned to their size (2 MiB on 4K, 32 MiB on 16K/64K), and pages are
  carved from the **top** of that free range;
* an exhausted free range is registered as *full*, merged with the last full
  range when contiguous (below or above), else appended; when
  ``PHYSMEM_MAX_RANGES = INIT_MEMBLOCK_MEMORY_REGIONS`` ranges are held, the
  range is dropped with a WARN (it stays unprotected);
* a failed refill WARNs and falls back to one untracked, **unprotected**
  memblock page;
* :func:`ppa_finalize` protects the used tail of the free range, gives its
  unused part back with ``memblock_free_late()``, and protects every full range.

v7 (``allocated_ranges``): one memblock page per call, tracked and merged with
the last range when adjacent; :func:`ppa_finalize` protects every range, with
a WARN per failure.  ``0`` is returned on failure (the caller handles it).
The table size is also ``PHYSMEM_MAX_RANGES`` [INF: the spec gives only "16 KB
on arm64", which is 1024 ranges of 16 bytes, i.e. INIT_MEMBLOCK_MEMORY_REGIONS
on arm64]; a full table WARNs and the page stays untracked (unprotected).
"""

from __future__ import annotations

from dataclasses import dataclass

from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import KPKEYS_PKEY_PGTABLES
from kpkeys_sim.kernel.kpkeys.pba import REFILL_ORDERS_BY_SHIFT
from kpkeys_sim.kernel.kpkeys.warn import WARN_ON, warn
from kpkeys_sim.kernel.mm.addr import __va
from kpkeys_sim.kernel.mm.memblock import (
    INIT_MEMBLOCK_MEMORY_REGIONS,
    MEMBLOCK_ALLOC_NOLEAKTRACE,
    Memblock,
    memblock_free_late,
    memblock_phys_alloc_range,
)
from kpkeys_sim.kernel.mm.set_memory import set_memory_pkey

__all__ = [
    "PHYSMEM_MAX_RANGES",
    "PkeysPhysmemAllocator",
    "kpkeys_physmem_pgtable_alloc",
    "physmem_range",
    "ppa_finalize",
    "ppa_refill",
    "ppa_register_allocated_range",
    "ppa_register_full_range",
    "ppa_state",
    "ppa_try_extend_last_range",
    "set_pkey_pgtable_phys",
]

#: ``INIT_MEMBLOCK_MEMORY_REGIONS``: ``memblock_allow_resize()`` has not run yet.
PHYSMEM_MAX_RANGES = INIT_MEMBLOCK_MEMORY_REGIONS


@dataclass(slots=True)
class physmem_range:
    """``struct physmem_range { phys_addr_t addr; phys_addr_t size; }``."""

    addr: int
    size: int

    @property
    def end(self) -> int:
        """First byte after the range."""
        return self.addr + self.size


class PkeysPhysmemAllocator:
    """``struct pkeys_physmem_allocator`` (``__initdata``), both variants.

    v6: ``free_range`` and ``ranges`` (the ``full_ranges[]`` table);
    v7: ``ranges`` (the ``allocated_ranges[]`` table).  ``refill_size`` is
    ``PHYSMEM_REFILL_SIZE``.  Model-only counters: ``nr_allocs``,
    ``nr_fallback_pages`` (v6 untracked pages), ``nr_dropped_ranges`` (WARN and
    drop), ``unprotected`` (ranges handed out that no finalize will protect),
    ``protected`` (ranges :func:`ppa_finalize` gave pkey PGTABLES, successfully
    or not), ``freed`` (v6: the unused part given back), ``finalized``.
    """

    __slots__ = (
        "finalized",
        "free_range",
        "freed",
        "max_ranges",
        "nr_allocs",
        "nr_dropped_ranges",
        "nr_fallback_pages",
        "page_size",
        "protected",
        "ranges",
        "refill_size",
        "unprotected",
        "version",
    )

    def __init__(self, page_shift: int, version: str) -> None:
        if version not in ("v6", "v7"):
            raise ValueError(f"bad PPA version {version!r}: must be 'v6' or 'v7'")
        self.version = version
        self.page_size = 1 << page_shift
        self.refill_size = self.page_size << REFILL_ORDERS_BY_SHIFT[page_shift][0]
        self.free_range = physmem_range(0, 0)
        self.ranges: list[physmem_range] = []
        self.max_ranges = PHYSMEM_MAX_RANGES
        self.nr_allocs = 0
        self.nr_fallback_pages = 0
        self.nr_dropped_ranges = 0
        self.unprotected: list[physmem_range] = []
        self.protected: list[physmem_range] = []
        self.freed: physmem_range | None = None
        self.finalized = False

    def __repr__(self) -> str:
        return (
            f"PkeysPhysmemAllocator({self.version}, ranges={len(self.ranges)}, "
            f"free_range={self.free_range.addr:#x}+{self.free_range.size:#x})"
        )


def ppa_state(k: Kernel) -> PkeysPhysmemAllocator:
    """The kernel's PPA state (created on first use; variant from ``k.config.series``)."""
    ppa = k.ppa
    if ppa is None:
        version = "v7" if k.config.series == "v7" else "v6"
        ppa = PkeysPhysmemAllocator(k.machine.page_shift, version)
        k.ppa = ppa
    return ppa


def _memblock(k: Kernel) -> Memblock:
    mb = k.memblock
    if mb is None:
        raise RuntimeError("PPA used without memblock (k.memblock is None)")
    return mb


def _alloc_page(k: Kernel) -> int:
    """``memblock_phys_alloc_range(PAGE_SIZE, PAGE_SIZE, 0, MEMBLOCK_ALLOC_NOLEAKTRACE)``."""
    ps = ppa_state(k).page_size
    return memblock_phys_alloc_range(_memblock(k), ps, ps, 0, MEMBLOCK_ALLOC_NOLEAKTRACE)


def ppa_try_extend_last_range(ppa: PkeysPhysmemAllocator, addr: int, size: int) -> bool:
    """``ppa_try_extend_last_range()``: merge with the last range if contiguous (below or above)."""
    if not ppa.ranges:
        return False
    last = ppa.ranges[-1]
    if addr + size == last.addr:
        last.addr = addr
        last.size += size
        return True
    if last.end == addr:
        last.size += size
        return True
    return False


def _register_range(k: Kernel, addr: int, size: int, what: str) -> None:
    ppa = ppa_state(k)
    if ppa_try_extend_last_range(ppa, addr, size):
        return
    if WARN_ON(
        k,
        len(ppa.ranges) >= ppa.max_ranges,
        f"ppa: {what} table full ({ppa.max_ranges} ranges); "
        f"[{addr:#x}, {addr + size:#x}) stays unprotected",
    ):
        ppa.nr_dropped_ranges += 1
        ppa.unprotected.append(physmem_range(addr, size))
        return
    ppa.ranges.append(physmem_range(addr, size))


def ppa_register_full_range(k: Kernel, addr: int, size: int) -> None:
    """v6 ``ppa_register_full_range()``: remember an exhausted refill range."""
    _register_range(k, addr, size, "full_ranges")


def ppa_register_allocated_range(k: Kernel, addr: int, size: int) -> None:
    """v7 ``ppa_register_allocated_range()``: remember one allocated page."""
    _register_range(k, addr, size, "allocated_ranges")


def ppa_refill(k: Kernel) -> None:
    """v6 ``ppa_refill()``: a new ``PHYSMEM_REFILL_SIZE`` free range, aligned to its size.

    WARN on failure; ``free_range = {addr, addr ? size : 0}``.
    """
    ppa = ppa_state(k)
    size = ppa.refill_size
    addr = memblock_phys_alloc_range(_memblock(k), size, size, 0, MEMBLOCK_ALLOC_NOLEAKTRACE)
    WARN_ON(k, not addr, f"ppa_refill: memblock allocation of {size:#x} bytes failed")
    ppa.free_range = physmem_range(addr, size if addr else 0)


def _physmem_alloc_v6(k: Kernel) -> int:
    ppa = ppa_state(k)
    fr = ppa.free_range
    if fr.size == 0:
        if fr.addr:
            ppa_register_full_range(k, fr.addr, ppa.refill_size)
        ppa_refill(k)
        fr = ppa.free_range
    if not fr.addr:
        # Fallback: one untracked page, never protected.
        pa = _alloc_page(k)
        if pa:
            ppa.nr_fallback_pages += 1
            ppa.unprotected.append(physmem_range(pa, ppa.page_size))
        return pa
    fr.size -= ppa.page_size
    return fr.addr + fr.size


def _physmem_alloc_v7(k: Kernel) -> int:
    ppa = ppa_state(k)
    pa = _alloc_page(k)
    if not pa:
        return 0
    ppa_register_allocated_range(k, pa, ppa.page_size)
    return pa


def kpkeys_physmem_pgtable_alloc(k: Kernel) -> int:
    """``kpkeys_physmem_pgtable_alloc()`` (``__init``): physical address of a PTP, 0 on failure.

    v6 or v7 per ``k.config.series`` (module docstring).
    """
    ppa = ppa_state(k)
    pa = _physmem_alloc_v7(k) if ppa.version == "v7" else _physmem_alloc_v6(k)
    if pa:
        ppa.nr_allocs += 1
    return pa


def set_pkey_pgtable_phys(k: Kernel, pa: int, size: int) -> int:
    """``set_pkey_pgtable_phys(pa, size)``: ``set_memory_pkey(__va(pa), pages, PGTABLES)``."""
    return set_memory_pkey(k, __va(k, pa), size >> k.machine.page_shift, KPKEYS_PKEY_PGTABLES)


def ppa_finalize(k: Kernel) -> None:
    """``ppa_finalize()``: protect every tracked early page table (§4.10).

    v6: protect the used tail ``[addr + size, addr + PHYSMEM_REFILL_SIZE)`` of
    the free range, ``memblock_free_late()`` its unused ``[addr, addr + size)``,
    reset it, then protect every full range.  v7: protect every allocated
    range.  Each failure WARNs [INF for v6, which the spec does not detail].
    """
    ppa = ppa_state(k)
    if ppa.version == "v6":
        fr = ppa.free_range
        if fr.addr:
            used = ppa.refill_size - fr.size
            if used:
                tail = physmem_range(fr.addr + fr.size, used)
                ppa.protected.append(tail)
                ret = set_pkey_pgtable_phys(k, tail.addr, tail.size)
                WARN_ON(k, ret, f"ppa_finalize: set_pkey_pgtable_phys(free_range tail): {ret}")
            if fr.size:
                memblock_free_late(_memblock(k), fr.addr, fr.size)
                ppa.freed = physmem_range(fr.addr, fr.size)
        ppa.free_range = physmem_range(0, 0)
    for r in ppa.ranges:
        ppa.protected.append(physmem_range(r.addr, r.size))
        ret = set_pkey_pgtable_phys(k, r.addr, r.size)
        if ret:
            warn(k, f"ppa_finalize: set_pkey_pgtable_phys([{r.addr:#x}, {r.end:#x})): {ret}")
    ppa.finalized = True
