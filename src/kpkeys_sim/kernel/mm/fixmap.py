"""arm64 fixmap page-table slots and ``set_swapper_pgd`` (arm64 only).

Sources: ``arch/arm64/include/asm/fixmap.h``, the ``*_set_fixmap`` helpers of
``arch/arm64/include/asm/pgtable.h``, ``__set_fixmap`` and ``set_swapper_pgd``
of ``arch/arm64/mm/mmu.c``.  ``__create_pgd_mapping`` (``linear_map``) writes
the tables it builds through these slots, and once ``mark_rodata_ro()`` has
made ``swapper_pg_dir`` read-only its entries are written through ``FIX_PGD``.
Generic code reaches ``in_swapper_pgdir``/``set_swapper_pgd`` through
``k.arch_mm`` (:class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchMm`).
"""

from __future__ import annotations

from kpkeys_sim.kernel.arch.arm64_pgtable import (
    FIX_PGD,
    FIX_PMD,
    FIX_PTE,
    FIX_PUD,
    FIXMAP_PAGE_CLEAR,
    FIXMAP_PAGE_NORMAL,
    PTE_ADDR_MASK,
)
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.pgtable import __pte_clear, __set_pte, emit_pte_barriers, ptep_get
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_kernel_range

__all__ = [
    "__set_fixmap",
    "clear_fixmap",
    "fixmap_pte",
    "in_swapper_pgdir",
    "p4d_clear_fixmap",
    "p4d_set_fixmap_offset",
    "pgd_clear_fixmap",
    "pgd_set_fixmap",
    "pmd_clear_fixmap",
    "pmd_set_fixmap",
    "pmd_set_fixmap_offset",
    "pte_clear_fixmap",
    "pte_set_fixmap",
    "pte_set_fixmap_offset",
    "pud_clear_fixmap",
    "pud_set_fixmap",
    "pud_set_fixmap_offset",
    "set_fixmap_offset",
    "set_swapper_pgd",
]


def in_swapper_pgdir(k: Kernel, addr: int) -> bool:
    """``in_swapper_pgdir(addr)``: ``addr`` is in swapper_pg_dir's page (kernel-image alias)."""
    sw = k.swapper_pg_dir
    return sw != 0 and (addr & k.pgt.PAGE_MASK) == (sw & k.pgt.PAGE_MASK)


def set_swapper_pgd(k: Kernel, pgdp: int, pgd: int) -> None:
    """``set_swapper_pgd(pgdp, pgd)`` (arch/arm64/mm/mmu.c); not guarded.

    While ``rodata_is_rw`` the entry is written through ``swapper_pg_dir``'s
    kernel-image mapping, then ``dsb(ishst); isb()``.  After
    ``mark_rodata_ro()`` it goes through the ``FIX_PGD`` fixmap slot
    (``pgd_set_fixmap``/``pgd_clear_fixmap``, whose TLB flush orders it).
    """
    m = k.machine
    if k.rodata_is_rw:
        m.store_pt_entries(k.cpu, pgdp, pgd)
        emit_pte_barriers(k)
        return
    fixmap_pgdp = pgd_set_fixmap(k, k.pgt.pa_symbol(pgdp))
    m.store_pt_entries(k.cpu, fixmap_pgdp, pgd)
    pgd_clear_fixmap(k)


def fixmap_pte(k: Kernel, addr: int) -> int:
    """``fixmap_pte(addr)``: the ``bm_pte`` entry (kernel-image VA) mapping fixmap ``addr``."""
    return k.bm_pte + 8 * k.pgt.pte_index(addr)


def __set_fixmap(k: Kernel, idx: int, phys: int, flags: int) -> None:
    """``__set_fixmap(idx, phys, flags)``: map (``__set_pte``) or unmap (clear + TLB flush)."""
    g = k.pgt
    if not 0 < idx < FIX_PGD + 1:
        raise KernelBug(f"BUG_ON: fixmap index {idx} out of range")
    addr = g.fix_to_virt(idx)
    ptep = fixmap_pte(k, addr)
    if flags:
        __set_pte(k, ptep, g.pfn_pte(phys >> g.PAGE_SHIFT, flags))
    else:
        __pte_clear(k, ptep)
        flush_tlb_kernel_range(k, addr, addr + g.PAGE_SIZE)


def set_fixmap_offset(k: Kernel, idx: int, phys: int) -> int:
    """``set_fixmap_offset(idx, phys)``: map ``phys``'s page at slot ``idx``; return its VA."""
    g = k.pgt
    __set_fixmap(k, idx, phys & g.PAGE_MASK, FIXMAP_PAGE_NORMAL)
    return g.fix_to_virt(idx) + (phys & (g.PAGE_SIZE - 1))


def clear_fixmap(k: Kernel, idx: int) -> None:
    """``clear_fixmap(idx)``."""
    __set_fixmap(k, idx, 0, FIXMAP_PAGE_CLEAR)


def pte_set_fixmap(k: Kernel, phys: int) -> int:
    """``pte_set_fixmap(addr)``: a PTE table (or entry) mapped at ``FIX_PTE``."""
    return set_fixmap_offset(k, FIX_PTE, phys)


def pte_set_fixmap_offset(k: Kernel, pmdp: int, addr: int) -> int:
    """``pte_set_fixmap_offset(pmdp, addr)``: the PTE entry of ``addr``, through ``FIX_PTE``."""
    pmd = ptep_get(k, pmdp)
    return pte_set_fixmap(k, (pmd & PTE_ADDR_MASK) + 8 * k.pgt.pte_index(addr))


def pte_clear_fixmap(k: Kernel) -> None:
    """``pte_clear_fixmap()``."""
    clear_fixmap(k, FIX_PTE)


def pmd_set_fixmap(k: Kernel, phys: int) -> int:
    """``pmd_set_fixmap(addr)``."""
    return set_fixmap_offset(k, FIX_PMD, phys)


def pmd_set_fixmap_offset(k: Kernel, pudp: int, addr: int) -> int:
    """``pmd_set_fixmap_offset(pudp, addr)``."""
    pud = ptep_get(k, pudp)
    return pmd_set_fixmap(k, (pud & PTE_ADDR_MASK) + 8 * k.pgt.pmd_index(addr))


def pmd_clear_fixmap(k: Kernel) -> None:
    """``pmd_clear_fixmap()``."""
    clear_fixmap(k, FIX_PMD)


def pud_set_fixmap(k: Kernel, phys: int) -> int:
    """``pud_set_fixmap(addr)`` (4 levels only)."""
    return set_fixmap_offset(k, FIX_PUD, phys)


def pud_set_fixmap_offset(k: Kernel, p4dp: int, addr: int) -> int:
    """``pud_set_fixmap_offset(p4dp, addr)``: ``p4dp`` itself when the pud is folded."""
    if k.pgt.mm_pud_folded:
        return p4dp
    p4d = ptep_get(k, p4dp)
    return pud_set_fixmap(k, (p4d & PTE_ADDR_MASK) + 8 * k.pgt.pud_index(addr))


def pud_clear_fixmap(k: Kernel) -> None:
    """``pud_clear_fixmap()``: a no-op when the pud is folded."""
    if not k.pgt.mm_pud_folded:
        clear_fixmap(k, FIX_PUD)


def p4d_set_fixmap_offset(k: Kernel, pgdp: int, addr: int) -> int:
    """``p4d_set_fixmap_offset(pgdp, addr)``: ``pgdp`` (the p4d is folded; ``FIX_P4D`` unused)."""
    return pgdp


def p4d_clear_fixmap(k: Kernel) -> None:
    """``p4d_clear_fixmap()``: a no-op (the p4d is folded)."""
    return None


def pgd_set_fixmap(k: Kernel, phys: int) -> int:
    """``pgd_set_fixmap(addr)``: a pgd entry mapped at ``FIX_PGD`` (``set_swapper_pgd``)."""
    return set_fixmap_offset(k, FIX_PGD, phys)


def pgd_clear_fixmap(k: Kernel) -> None:
    """``pgd_clear_fixmap()``."""
    clear_fixmap(k, FIX_PGD)
