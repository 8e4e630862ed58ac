"""The mmu_gather: batched TLB invalidation and deferred freeing on unmap.

Models ``mm/mmu_gather.c``, ``include/asm-generic/tlb.h`` and arm64
``asm/tlb.h``:

* ``tlb_gather_mmu()``/``tlb_gather_mmu_fullmm()`` start a gather over one mm
  (``fullmm``: the whole address space is being torn down, ``exit_mmap``).
* The zap code records the unmapped range (``__tlb_adjust_range``), sets
  ``cleared_ptes``/``freed_tables``, and hands over the folio references the
  cleared PTEs held (``tlb_remove_folio_refs``) and the page-table pages it
  unlinked (``pte_free_tlb``/``pmd_free_tlb``/``pud_free_tlb``).
* ``tlb_flush_mmu()`` first invalidates the TLB (arm64 ``tlb_flush()``: for a
  ``fullmm`` gather only ``flush_tlb_mm()`` and only if tables were freed —
  the ASID allocator will not hand the ASID out again without invalidating it;
  otherwise ``__flush_tlb_range`` over ``[start, end)``, which becomes
  ``flush_tlb_mm`` at ``MAX_DVM_OPS`` pages), *then* drops the folio
  references (``tlb_batch_pages_flush`` → ``free_pages_and_swap_cache`` →
  ``folio_put_refs``), freeing folios whose count reaches zero, and frees the
  page-table pages (``tlb_table_flush``; arm64 selects
  ``MMU_GATHER_RCU_TABLE_FREE``, whose grace period the sequential model
  does not need).  A page is therefore never reused while a stale TLB entry
  may still reach it.
* ``tlb_finish_mmu()`` is a final ``tlb_flush_mmu()``.

Vectorisation: the references of one PTE table are one batch (numpy arrays
of folio head pfns and counts); the flush applies each batch with one numpy
subtraction and frees only the folios that reach zero (each through the buddy
allocator with its "bad page" checks).  Linux flushes early when a batch page
fills up (``tlb_next_batch`` fails after ``MAX_GATHER_BATCH_COUNT``); the
model never runs out of batch space, so it flushes once at the end — the same
invalidations for a single-range unmap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.page import PG_head
from kpkeys_sim.kernel.mm.page_alloc import __free_pages
from kpkeys_sim.kernel.mm.pgalloc import pmd_free, pte_free, pud_free
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_mm, flush_tlb_range

if TYPE_CHECKING:
    from kpkeys_sim.kernel.mm.mm_types import mm_struct

__all__ = [
    "__tlb_adjust_range",
    "free_folio_refs",
    "mmu_gather",
    "pmd_free_tlb",
    "pte_free_tlb",
    "pud_free_tlb",
    "tlb_finish_mmu",
    "tlb_flush",
    "tlb_flush_mmu",
    "tlb_flush_mmu_tlbonly",
    "tlb_gather_mmu",
    "tlb_gather_mmu_fullmm",
    "tlb_remove_folio_refs",
]

I64Array = npt.NDArray[np.int64]

_HEAD = 1 << PG_head


class mmu_gather:
    """``struct mmu_gather``: the pending range, folio references and tables of one unmap."""

    __slots__ = (
        "base_pfn",
        "cleared_ptes",
        "end",
        "freed_tables",
        "fullmm",
        "mm",
        "page_batches",
        "start",
        "tables",
    )

    def __init__(self, mm: mm_struct, fullmm: bool, task_size: int, base_pfn: int) -> None:
        self.mm = mm
        self.base_pfn = base_pfn
        self.fullmm = fullmm
        self.freed_tables = False
        self.cleared_ptes = False
        #: ``(heads, counts)``: folio heads as ``mem_map`` indices (``pfn - base_pfn``) and
        #: the references to drop (counts None = 1 each; heads unique within the batch).
        self.page_batches: list[tuple[I64Array, I64Array | None]] = []
        #: ``(pfn, level)`` of page-table pages to free after the flush.
        self.tables: list[tuple[int, str]] = []
        self.start = task_size
        self.end = 0

    def __repr__(self) -> str:
        return (
            f"<mmu_gather mm={self.mm!r} fullmm={self.fullmm} [{self.start:#x}, {self.end:#x}) "
            f"batches={len(self.page_batches)} tables={len(self.tables)}>"
        )


def _task_size(k: Kernel) -> int:
    return 1 << k.pgt.VA_BITS


def _base_pfn(k: Kernel) -> int:
    return 0 if k.mem_map is None else k.mem_map.base_pfn


def tlb_gather_mmu(k: Kernel, mm: mm_struct) -> mmu_gather:
    """``tlb_gather_mmu(tlb, mm)``: a gather for a partial unmap."""
    return mmu_gather(mm, False, _task_size(k), _base_pfn(k))


def tlb_gather_mmu_fullmm(k: Kernel, mm: mm_struct) -> mmu_gather:
    """``tlb_gather_mmu_fullmm(tlb, mm)``: a gather for tearing down the whole mm."""
    return mmu_gather(mm, True, _task_size(k), _base_pfn(k))


def __tlb_adjust_range(tlb: mmu_gather, address: int, range_size: int) -> None:
    """``__tlb_adjust_range()``: widen the range to flush."""
    tlb.start = min(tlb.start, address)
    tlb.end = max(tlb.end, address + range_size)


def tlb_remove_folio_refs(
    tlb: mmu_gather, heads: I64Array, counts: I64Array | None, *, index: bool = False
) -> None:
    """Queue references to drop after the flush (``tlb_remove_folio``/``__tlb_remove_folio_pages``).

    ``heads`` are folio head pfns (``index``: ``mem_map`` indices, ``pfn -
    base_pfn``); ``counts`` the references per head (None: one each, and
    ``heads`` holds no duplicates).  The array is kept, not copied.
    """
    if len(heads):
        if not index:
            heads = heads - tlb.base_pfn
        tlb.page_batches.append((heads, counts))


def pte_free_tlb(tlb: mmu_gather, pfn: int, addr: int) -> None:
    """``pte_free_tlb(tlb, pte, addr)``: free a PTE table after the flush."""
    __tlb_adjust_range(tlb, addr, 1)
    tlb.freed_tables = True
    tlb.tables.append((pfn, "pte"))


def pmd_free_tlb(tlb: mmu_gather, pfn: int, addr: int) -> None:
    """``pmd_free_tlb(tlb, pmd, addr)``: free a PMD table after the flush."""
    __tlb_adjust_range(tlb, addr, 1)
    tlb.freed_tables = True
    tlb.tables.append((pfn, "pmd"))


def pud_free_tlb(tlb: mmu_gather, pfn: int, addr: int) -> None:
    """``pud_free_tlb(tlb, pud, addr)``: free a PUD table after the flush."""
    __tlb_adjust_range(tlb, addr, 1)
    tlb.freed_tables = True
    tlb.tables.append((pfn, "pud"))


def tlb_flush(k: Kernel, tlb: mmu_gather) -> None:
    """arm64 ``tlb_flush(tlb)`` (``asm/tlb.h``).

    ``fullmm``: ``flush_tlb_mm`` only when tables were freed (to drop walk
    caches); leaf entries need nothing since the ASID is invalidated before
    reuse.  Otherwise a range flush of ``[start, end)``.
    """
    if tlb.fullmm:
        if tlb.freed_tables:
            flush_tlb_mm(k, tlb.mm)
        return
    flush_tlb_range(k, tlb.mm, tlb.start, tlb.end)


def tlb_flush_mmu_tlbonly(k: Kernel, tlb: mmu_gather) -> None:
    """``tlb_flush_mmu_tlbonly()``: invalidate if anything was cleared, then reset the range."""
    if not (tlb.freed_tables or tlb.cleared_ptes):
        return
    tlb_flush(k, tlb)
    tlb.start = _task_size(k)
    tlb.end = 0
    tlb.freed_tables = False
    tlb.cleared_ptes = False


def free_folio_refs(
    k: Kernel, heads: I64Array, counts: I64Array | None, *, index: bool = False
) -> int:
    """Drop references on folios (``folio_put_refs`` on each); free those reaching zero.

    ``heads`` are head pfns, or ``mem_map`` indices with ``index``.  One numpy
    gather, subtraction and scatter on ``mem_map.refcount``; each folio that
    reaches zero loses its ``mapping`` (``free_pages_prepare`` clears
    anon/page-cache mappings) and goes back to the buddy allocator with its
    order.  Returns the number of folios freed.  A count going negative is a
    :class:`KernelBug` (refcount underflow), raised before any change.
    """
    mm = k.mem_map
    zone = k.zone
    if mm is None or zone is None:
        raise KernelBug("folio references dropped before mem_init()")
    base = mm.base_pfn
    idx = heads if index else heads - base
    rc = mm.refcount
    cur = rc[idx]
    if counts is None:
        cur -= 1
    else:
        cur -= counts.astype(np.int32)
    if len(cur) and int(cur.min()) < 0:
        bad = int(idx[int(np.flatnonzero(cur < 0)[0])]) + base
        raise KernelBug(f"VM_BUG_ON_FOLIO: refcount underflow on pfn {bad:#x}")
    rc[idx] = cur
    zero = np.flatnonzero(cur == 0)
    if not len(zero):
        return 0
    flags = mm.flags
    order_arr = mm.compound_order
    for j in zero.tolist():
        i = int(idx[j])
        order = int(order_arr[i]) if int(flags[i]) & _HEAD else 0
        mm.mapping[i] = 0
        rc[i] = 1
        __free_pages(zone, i + base, order)
    return len(zero)


def _free_table(k: Kernel, mm: mm_struct, pfn: int, level: str) -> None:
    if level == "pte":
        pte_free(k, mm, pfn)
    elif level == "pmd":
        pmd_free(k, mm, pfn)
    else:
        pud_free(k, mm, pfn)


def tlb_flush_mmu(k: Kernel, tlb: mmu_gather) -> None:
    """``tlb_flush_mmu()``: the TLB invalidation, then the deferred page and table frees."""
    tlb_flush_mmu_tlbonly(k, tlb)
    batches, tlb.page_batches = tlb.page_batches, []
    for heads, counts in batches:
        free_folio_refs(k, heads, counts, index=True)
    tables, tlb.tables = tlb.tables, []
    for pfn, level in tables:
        _free_table(k, tlb.mm, pfn, level)


def tlb_finish_mmu(k: Kernel, tlb: mmu_gather) -> None:
    """``tlb_finish_mmu()``: flush whatever is still pending."""
    tlb_flush_mmu(k, tlb)
