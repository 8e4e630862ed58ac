"""TLB maintenance as arm64 ``asm/tlbflush.h`` issues it (arm64's ``k.arch_mm`` flushes).

Every function emits the barriers and TLBIs of the kernel code through the
machine (``Machine.dsb``/``tlbi_va``/``tlbi_asid``/``tlbi_all`` and
``CPU.isb``), so their counts are the machine's ``dsb``/``tlbi_*``/``isb``
events.  Spec pkeys-hardware.md §2.5 ("Linux TLBI building blocks").

* Kernel ranges: ``DSB ISHST``; one ``TLBI VAALE1IS`` per page; ``DSB ISH``;
  ``ISB`` — or ``flush_tlb_all()`` (``TLBI VMALLE1IS``) when the range has
  ``MAX_DVM_OPS`` (= ``PTRS_PER_PTE``) pages or more.  The model has no
  FEAT_TLBIRANGE (``system_supports_tlb_range()`` false).
* User ranges: the same per ASID (``TLBI VAE1IS``/``VALE1IS``), falling back to
  ``flush_tlb_mm()`` (``TLBI ASIDE1IS``).  No KPTI, so no ``__tlbi_user``.
* The model's TLB has no walk caches, so the leaf-only (``*L*``) and the
  all-level forms invalidate the same entries; both count as ``tlbi_va``.
"""

from __future__ import annotations

from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.mm_types import mm_struct, vm_area_struct
from kpkeys_sim.kernel.mm.tlbflush import flush_range_pages, mm_of

__all__ = [
    "__flush_tlb_kernel_pgtable",
    "flush_tlb_all",
    "flush_tlb_kernel_range",
    "flush_tlb_mm",
    "flush_tlb_page",
    "flush_tlb_range",
    "local_flush_tlb_all",
]


def flush_tlb_all(k: Kernel) -> None:
    """``flush_tlb_all()``: ``DSB ISHST; TLBI VMALLE1IS; DSB ISH; ISB``."""
    m = k.machine
    m.dsb()
    m.tlbi_all()
    m.dsb()
    k.cpu.isb()


def local_flush_tlb_all(k: Kernel) -> None:
    """``local_flush_tlb_all()``: only broadcast TLBIs exist here: :func:`flush_tlb_all`."""
    flush_tlb_all(k)


def flush_tlb_kernel_range(k: Kernel, start: int, end: int) -> None:
    """``flush_tlb_kernel_range(start, end)``: invalidate kernel VAs ``[start, end)``.

    ``DSB ISHST``; ``TLBI VAALE1IS`` per page; ``DSB ISH``; ``ISB``.  At
    ``MAX_DVM_OPS`` pages or more: :func:`flush_tlb_all`.
    """
    start, end, pages = flush_range_pages(k, start, end)
    g = k.pgt
    if pages >= g.MAX_DVM_OPS:
        flush_tlb_all(k)
        return
    m = k.machine
    m.dsb()
    step = g.PAGE_SIZE
    for va in range(start, end, step):
        m.tlbi_va(va, None)
    m.dsb()
    k.cpu.isb()


def __flush_tlb_kernel_pgtable(k: Kernel, addr: int) -> None:
    """``__flush_tlb_kernel_pgtable(kaddr)``: ``DSB ISHST; TLBI VAAE1IS; DSB ISH; ISB``.

    Used after a kernel table entry changes (all levels, any ASID).
    """
    m = k.machine
    m.dsb()
    m.tlbi_va(addr, None)
    m.dsb()
    k.cpu.isb()


def flush_tlb_mm(k: Kernel, mm: mm_struct) -> None:
    """``flush_tlb_mm(mm)``: ``DSB ISHST; TLBI ASIDE1IS, ASID(mm); DSB ISH``."""
    m = k.machine
    m.dsb()
    m.tlbi_asid(mm.context_id)
    m.dsb()


def flush_tlb_range(k: Kernel, vma_or_mm: vm_area_struct | mm_struct, start: int, end: int) -> None:
    """``flush_tlb_range(vma, start, end)``: per-ASID range flush of user VAs.

    ``DSB ISHST``; ``TLBI VAE1IS`` per page with the mm's ASID; ``DSB ISH``.  At
    ``MAX_DVM_OPS`` pages or more: :func:`flush_tlb_mm`.  Accepts the VMA (as
    Linux) or its mm.
    """
    mm = mm_of(vma_or_mm)
    start, end, pages = flush_range_pages(k, start, end)
    if pages >= k.pgt.MAX_DVM_OPS:
        flush_tlb_mm(k, mm)
        return
    m = k.machine
    asid = mm.context_id
    m.dsb()
    for va in range(start, end, k.pgt.PAGE_SIZE):
        m.tlbi_va(va, asid)
    m.dsb()


def flush_tlb_page(k: Kernel, vma: vm_area_struct | mm_struct, uaddr: int) -> None:
    """``flush_tlb_page(vma, uaddr)``: ``DSB ISHST; TLBI VALE1IS, uaddr|ASID; DSB ISH``."""
    mm = mm_of(vma)
    m = k.machine
    m.dsb()
    m.tlbi_va(uaddr & k.pgt.PAGE_MASK, mm.context_id)
    m.dsb()
