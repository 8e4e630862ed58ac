"""TLB maintenance as x86-64 issues it (``arch/x86/mm/tlb.c``, ``asm/tlbflush.h``).

x86 has no broadcast invalidation (no INVLPGB is modelled: Intel cores have
none).  A flush runs on the initiating CPU and, through an IPI, on every other
CPU that may cache the translations; the initiator waits for them
(``on_each_cpu`` / ``flush_tlb_multi``).  The model keeps the machine's
invalidation operations, which reach every CPU's TLB at once (the same end
state as the IPI round), and emits one :data:`TLB_SHOOTDOWN_IPI` event per
flush that needs remote CPUs, so the cost model can price the round trip.

* Kernel ranges (``flush_tlb_kernel_range``): up to
  :data:`tlb_single_page_flush_ceiling` (33) pages, one ``INVLPG`` per page
  (``flush_tlb_one_kernel``) on every CPU; more, a global flush
  (``do_flush_tlb_all``: CR4.PGE toggle) on every CPU.  Remote CPUs: all
  others.
* User ranges (``flush_tlb_mm_range``): up to the ceiling, one ``INVLPG`` per
  page; more, a full flush of the mm's PCID (``flush_tlb_func`` with
  ``TLB_FLUSH_ALL``, a CR3 reload: the machine's per-ASID flush).  Remote CPUs:
  those in ``mm_cpumask(mm)``; the model's ``mm_cpumask`` is the set of other
  CPUs whose ``ttbr0`` (CR3) currently holds the mm's pgd [simplification:
  Linux keeps a CPU in the mask while it runs the mm lazily, which only adds
  IPIs].
* There is no DSB or ISB: x86 orders the page-table store before the
  invalidation by itself.

Spec pkeys-hardware.md §5.2 (INVLPG and full/global flush costs, M-ingo).
"""

from __future__ import annotations

from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.mm_types import mm_struct, vm_area_struct
from kpkeys_sim.kernel.mm.tlbflush import flush_range_pages, mm_of
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "TLB_SHOOTDOWN_IPI",
    "__flush_tlb_kernel_pgtable",
    "flush_tlb_all",
    "flush_tlb_kernel_range",
    "flush_tlb_mm",
    "flush_tlb_mm_range",
    "flush_tlb_page",
    "flush_tlb_range",
    "local_flush_tlb_all",
    "tlb_single_page_flush_ceiling",
]

TLB_SHOOTDOWN_IPI = declare_event(
    "tlb_shootdown_ipi",
    "one x86 TLB-shootdown IPI round (the initiator waits for every remote CPU)",
    "kernel",
)

#: ``tlb_single_page_flush_ceiling``: ranges of more pages are flushed whole (tlb.c).
tlb_single_page_flush_ceiling = 33


def _shootdown(k: Kernel, remote: int) -> None:
    if remote:
        k.machine.instruments.emit(TLB_SHOOTDOWN_IPI)


def flush_tlb_all(k: Kernel) -> None:
    """``flush_tlb_all()``: ``on_each_cpu(do_flush_tlb_all)`` — a global flush everywhere."""
    k.machine.tlbi_all()
    _shootdown(k, len(k.machine.cpus) - 1)


def local_flush_tlb_all(k: Kernel) -> None:
    """``__flush_tlb_all()`` on this CPU (the machine's invalidation reaches every TLB;
    the extra CPUs' entries it drops would be dropped by the caller's next flush)."""
    k.machine.tlbi_all()


def flush_tlb_kernel_range(k: Kernel, start: int, end: int) -> None:
    """``flush_tlb_kernel_range(start, end)``: INVLPG per page on every CPU, or a global flush."""
    start, end, pages = flush_range_pages(k, start, end)
    if pages > tlb_single_page_flush_ceiling:
        flush_tlb_all(k)
        return
    m = k.machine
    for va in range(start, end, k.pgt.PAGE_SIZE):
        m.tlbi_va(va, None)
    _shootdown(k, len(m.cpus) - 1)


def __flush_tlb_kernel_pgtable(k: Kernel, addr: int) -> None:
    """A kernel table entry changed at ``addr``: x86 flushes that page's translations
    (``flush_tlb_kernel_range(addr, addr + PAGE_SIZE)``, e.g. ``pmd_free_pte_page``)."""
    flush_tlb_kernel_range(k, addr, addr + k.pgt.PAGE_SIZE)


def _mm_remote_cpus(k: Kernel, mm: mm_struct) -> int:
    me = k.cpu.cpu_id
    return sum(1 for c in k.machine.cpus if c.cpu_id != me and c.ttbr0 == mm.pgd_phys)


def flush_tlb_mm_range(k: Kernel, mm: mm_struct, start: int, end: int) -> None:
    """``flush_tlb_mm_range(mm, start, end, PAGE_SHIFT, ...)``: per page or the whole PCID."""
    start, end, pages = flush_range_pages(k, start, end)
    m = k.machine
    if pages > tlb_single_page_flush_ceiling:
        m.tlbi_asid(mm.context_id)
    else:
        asid = mm.context_id
        for va in range(start, end, k.pgt.PAGE_SIZE):
            m.tlbi_va(va, asid)
    _shootdown(k, _mm_remote_cpus(k, mm))


def flush_tlb_mm(k: Kernel, mm: mm_struct) -> None:
    """``flush_tlb_mm(mm)``: the whole PCID on every CPU in ``mm_cpumask``."""
    k.machine.tlbi_asid(mm.context_id)
    _shootdown(k, _mm_remote_cpus(k, mm))


def flush_tlb_range(k: Kernel, vma_or_mm: vm_area_struct | mm_struct, start: int, end: int) -> None:
    """``flush_tlb_range(vma, start, end)``."""
    flush_tlb_mm_range(k, mm_of(vma_or_mm), start, end)


def flush_tlb_page(k: Kernel, vma: vm_area_struct | mm_struct, uaddr: int) -> None:
    """``flush_tlb_page(vma, uaddr)``: one page."""
    page = uaddr & k.pgt.PAGE_MASK
    flush_tlb_mm_range(k, mm_of(vma), page, page + k.pgt.PAGE_SIZE)
