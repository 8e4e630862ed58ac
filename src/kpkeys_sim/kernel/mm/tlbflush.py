"""``<asm/tlbflush.h>``: the TLB maintenance generic code calls, dispatched to the arch.

Each function runs the architecture's implementation in ``k.arch_mm``
(:class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchMm`): arm64 broadcasts TLBIs
with their DSB/ISB (``kernel/arch/arm64_tlbflush.py``); x86 invalidates with
INVLPG/CR3 on each CPU through shootdown IPIs (``kernel/arch/x86_tlb.py``).
"""

from __future__ import annotations

from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.mm_types import mm_struct, vm_area_struct

__all__ = [
    "__flush_tlb_kernel_pgtable",
    "flush_range_pages",
    "flush_tlb_all",
    "flush_tlb_kernel_range",
    "flush_tlb_mm",
    "flush_tlb_page",
    "flush_tlb_range",
    "local_flush_tlb_all",
    "mm_of",
]


def flush_range_pages(k: Kernel, start: int, end: int) -> tuple[int, int, int]:
    """``[start, end)`` widened to whole pages: (start, end, number of pages).

    Shared by the architectures' range flushes.
    """
    g = k.pgt
    start &= g.PAGE_MASK
    end = (end + g.PAGE_SIZE - 1) & g.PAGE_MASK
    return start, end, max(0, (end - start) >> g.PAGE_SHIFT)


def mm_of(x: vm_area_struct | mm_struct) -> mm_struct:
    """The mm of a flush's ``vma`` argument (Linux passes the VMA; the model also takes the mm)."""
    return x.vm_mm if isinstance(x, vm_area_struct) else x


def flush_tlb_all(k: Kernel) -> None:
    """``flush_tlb_all()``: every CPU's TLB, all translations."""
    k.arch_mm.flush_tlb_all(k)


def local_flush_tlb_all(k: Kernel) -> None:
    """``local_flush_tlb_all()``."""
    k.arch_mm.local_flush_tlb_all(k)


def flush_tlb_kernel_range(k: Kernel, start: int, end: int) -> None:
    """``flush_tlb_kernel_range(start, end)``: kernel VAs ``[start, end)`` on every CPU."""
    k.arch_mm.flush_tlb_kernel_range(k, start, end)


def __flush_tlb_kernel_pgtable(k: Kernel, addr: int) -> None:
    """A kernel table entry at ``addr`` changed (arm64 ``__flush_tlb_kernel_pgtable``)."""
    k.arch_mm.flush_tlb_kernel_pgtable(k, addr)


def flush_tlb_mm(k: Kernel, mm: mm_struct) -> None:
    """``flush_tlb_mm(mm)``: every translation of ``mm``."""
    k.arch_mm.flush_tlb_mm(k, mm)


def flush_tlb_range(k: Kernel, vma_or_mm: vm_area_struct | mm_struct, start: int, end: int) -> None:
    """``flush_tlb_range(vma, start, end)``: user VAs of the VMA's mm (or the mm)."""
    k.arch_mm.flush_tlb_range(k, vma_or_mm, start, end)


def flush_tlb_page(k: Kernel, vma: vm_area_struct | mm_struct, uaddr: int) -> None:
    """``flush_tlb_page(vma, uaddr)``: one user page."""
    k.arch_mm.flush_tlb_page(k, vma, uaddr)
