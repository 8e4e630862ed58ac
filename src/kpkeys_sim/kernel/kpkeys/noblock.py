"""The noblock allocator: page-table pages for a PTE-mapped linear map.

Spec: kpkeys-series.md §4.11 (v6 fallback when ``pba_init()`` finds
``arch_has_pte_only_direct_map()``), §3.8 (v7 12/24, where it is the only
allocator: ``kpkeys_pgtable_alloc(gfp, order)`` /
``kpkeys_pgtable_free(page, order)``).  Kernel names:
:func:`noblock_pgtable_alloc`, :func:`noblock_pgtable_free`,
:func:`set_pkey_pgtable`, :func:`set_pkey_default`.

* alloc: ``alloc_pages(gfp, order)``; ``set_memory_pkey(page_address,
  1 << order, KPKEYS_PKEY_PGTABLES)``; on failure free the pages and return
  NULL (None).
* free: ``set_memory_pkey(…, KPKEYS_PKEY_DEFAULT)`` (``WARN_ON`` on error, then
  ignored), then free the pages.

v6's noblock allocator is order 0 only (``kpkeys_pgtable_alloc(gfp)`` has no
order); v7 passes the order through.  Both are this code with ``order``
defaulting to 0.  On a PTE-mapped linear map each call is one leaf-descriptor
update per page plus one kernel TLB range flush — the cost Rick Edgecombe
worried about (§4.11).
"""

from __future__ import annotations

from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import KPKEYS_PKEY_DEFAULT, KPKEYS_PKEY_PGTABLES
from kpkeys_sim.kernel.kpkeys.warn import WARN_ON
from kpkeys_sim.kernel.mm.addr import page_address
from kpkeys_sim.kernel.mm.page_alloc import BuddyAllocator, __free_pages, alloc_pages
from kpkeys_sim.kernel.mm.set_memory import set_memory_pkey
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "NOBLOCK_ALLOC",
    "NOBLOCK_FREE",
    "noblock_pgtable_alloc",
    "noblock_pgtable_free",
    "set_pkey_default",
    "set_pkey_pgtable",
]

NOBLOCK_ALLOC = declare_event(
    "noblock_alloc", "page-table allocations by the noblock allocator (count = pages)", "kernel"
)
NOBLOCK_FREE = declare_event(
    "noblock_free", "page-table frees by the noblock allocator (count = pages)", "kernel"
)


def _zone(k: Kernel) -> BuddyAllocator:
    zone = k.zone
    if zone is None:
        raise RuntimeError("noblock allocator used before the buddy allocator exists")
    return zone


def _set_pkey(k: Kernel, pfn: int, order: int, pkey: int) -> int:
    return set_memory_pkey(k, page_address(k, pfn), 1 << order, pkey)


def set_pkey_pgtable(k: Kernel, pfn: int, order: int = 0) -> int:
    """``set_pkey_pgtable(page, order)``: give the pages ``KPKEYS_PKEY_PGTABLES``; 0 or -errno."""
    return _set_pkey(k, pfn, order, KPKEYS_PKEY_PGTABLES)


def set_pkey_default(k: Kernel, pfn: int, order: int = 0) -> int:
    """``set_pkey_default(page, order)``: give the pages ``KPKEYS_PKEY_DEFAULT``; 0 or -errno."""
    return _set_pkey(k, pfn, order, KPKEYS_PKEY_DEFAULT)


def noblock_pgtable_alloc(k: Kernel, gfp: int, order: int = 0) -> int | None:
    """``noblock_pgtable_alloc(gfp)`` (v6, order 0) / v7 ``kpkeys_pgtable_alloc(gfp, order)``.

    Returns the head pfn of ``1 << order`` protected pages, or None.
    """
    zone = _zone(k)
    page = alloc_pages(zone, gfp, order)
    if page is None:
        return None
    if set_pkey_pgtable(k, page, order):
        __free_pages(zone, page, order)
        return None
    k.machine.emit(NOBLOCK_ALLOC, 1 << order)
    return page


def noblock_pgtable_free(k: Kernel, pfn: int, order: int = 0) -> None:
    """``noblock_pgtable_free(page)`` (v6) / v7 ``kpkeys_pgtable_free(page, order)``.

    Resets the pkey to DEFAULT (``WARN_ON`` on error, otherwise ignored), then
    frees the pages to the buddy allocator.
    """
    ret = set_pkey_default(k, pfn, order)
    WARN_ON(k, ret, f"noblock_pgtable_free: set_pkey_default(pfn {pfn:#x}): {ret}")
    __free_pages(_zone(k), pfn, order)
    k.machine.emit(NOBLOCK_FREE, 1 << order)
