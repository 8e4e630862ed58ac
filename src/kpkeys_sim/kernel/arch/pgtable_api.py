"""The arch-neutral page-table interface generic mm code is written against.

In Linux, generic mm code (``mm/memory.c``, ``mm/vmalloc.c``, ``kernel/fork.c``
…) includes ``<linux/pgtable.h>``/``<asm/pgtable.h>`` and gets the
architecture's descriptor format, geometry and layout through macros and
inline functions with fixed names; arch mm code (``set_memory_*``, the direct
map) is reached through ``<linux/set_memory.h>``.  The model mirrors that with
two protocols:

* :class:`ArchPgtable` — the per-kernel object ``k.pgt`` built at boot
  (arm64: :class:`~kpkeys_sim.kernel.arch.arm64_pgtable.PgtableGeometry`; x86:
  :class:`~kpkeys_sim.kernel.arch.x86_pgtable.X86PgtableGeometry`).
  Geometry and layout constants, address, index and pfn helpers, descriptor
  predicates/modifiers with the kernel's names, table-descriptor builders,
  the vectorised (``numpy.uint64`` array) helpers bulk code uses, the pgprots
  generic code uses, ``vm_get_page_prot``, and the arch behaviours generic
  helpers branch on (barriers after kernel PTE writes, contiguous hints).
  Descriptors are plain ``int`` (a ``pte_t`` is its ``pte_val``).
* :class:`ArchMm` — the per-kernel object ``k.arch_mm``: the arch mm functions
  generic code calls (``set_memory_*``, ``set_direct_map_*``,
  ``force_pte_mapping``, the direct-map split counter, ``set_swapper_pgd``).
  Generic callers use the ``<linux/set_memory.h>`` names in
  :mod:`kpkeys_sim.kernel.mm.set_memory`, which dispatch here.

Generic modules import neither ``arm64_pgtable`` nor the arm64 mm modules
(``linear_map``, ``kernel_pgtables``, ``fixmap``); an arch provides one object
of each kind.  Hot loops bind ``g = k.pgt`` (and the helpers they call) to
locals.

Folding.  The value helpers describe a *real* entry of their level; folded
levels (``mm_p4d_folded``/``mm_pud_folded``/``mm_pmd_folded``) are handled
by the walk helpers of :mod:`kpkeys_sim.kernel.mm.pgtable`
(``include/asm-generic/pgtable-nop4d.h``, ``-nopud.h``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel
    from kpkeys_sim.kernel.mm.mm_types import mm_struct, vm_area_struct

__all__ = ["LEAF_CENSUS_KEYS", "ArchMm", "ArchPgtable", "BoolArray", "U64Array", "addr_end"]

U64Array = npt.NDArray[np.uint64]
BoolArray = npt.NDArray[np.bool_]


#: Keys of ``ArchMm.linear_map_leaves``: leaves by kind (``pud`` 1G-class blocks,
#: ``contpmd``, ``pmd``, ``contpte``, ``pte``), non-zero invalid leaves, and the
#: direct map's table pages by level.
LEAF_CENSUS_KEYS = (
    "pud",
    "contpmd",
    "pmd",
    "contpte",
    "pte",
    "invalid",
    "tables_pud",
    "tables_pmd",
    "tables_pte",
)


def addr_end(addr: int, end: int, size: int) -> int:
    """The generic ``pXd_addr_end(addr, end)`` step: the next ``size`` boundary after
    ``addr``, capped at ``end`` (compared as ``boundary - 1 < end - 1`` so that an
    ``end`` of 0, the top of the address space, works)."""
    mask = (1 << 64) - 1
    boundary = ((addr + size) & ~(size - 1)) & mask
    return boundary if ((boundary - 1) & mask) < ((end - 1) & mask) else end


class ArchPgtable(Protocol):
    """``<asm/pgtable.h>``, ``<asm/page.h>``, ``<asm/memory.h>`` of one architecture.

    Names are the kernel's.  Where a generic name does not exist the
    docstring says what the arm64 implementation means, and an x86 one
    provides the equivalent.
    """

    # --- geometry -------------------------------------------------------------------------------

    @property
    def PAGE_SHIFT(self) -> int: ...
    @property
    def PAGE_SIZE(self) -> int: ...
    @property
    def PAGE_MASK(self) -> int: ...
    @property
    def VA_BITS(self) -> int: ...
    @property
    def CONFIG_PGTABLE_LEVELS(self) -> int: ...
    @property
    def pgd_level(self) -> int:
        """Hardware level of the pgd (the machine walker's start level)."""

    @property
    def PTRS_PER_PTE(self) -> int: ...
    @property
    def PTRS_PER_PMD(self) -> int: ...
    @property
    def PTRS_PER_PUD(self) -> int: ...
    @property
    def PTRS_PER_P4D(self) -> int: ...
    @property
    def PTRS_PER_PGD(self) -> int: ...
    @property
    def PMD_SHIFT(self) -> int: ...
    @property
    def PMD_SIZE(self) -> int: ...
    @property
    def PMD_MASK(self) -> int: ...
    @property
    def PUD_SHIFT(self) -> int: ...
    @property
    def PUD_SIZE(self) -> int: ...
    @property
    def PUD_MASK(self) -> int: ...
    @property
    def P4D_SHIFT(self) -> int: ...
    @property
    def P4D_SIZE(self) -> int: ...
    @property
    def P4D_MASK(self) -> int: ...
    @property
    def PGDIR_SHIFT(self) -> int: ...
    @property
    def PGDIR_SIZE(self) -> int: ...
    @property
    def PGDIR_MASK(self) -> int: ...
    @property
    def PGD_SIZE(self) -> int:
        """Bytes of a pgd table (``PTRS_PER_PGD * 8``)."""

    @property
    def PMD_ORDER(self) -> int: ...
    @property
    def PUD_ORDER(self) -> int: ...
    @property
    def mm_p4d_folded(self) -> bool: ...
    @property
    def mm_pud_folded(self) -> bool: ...
    @property
    def mm_pmd_folded(self) -> bool: ...
    @property
    def pud_sect_supported(self) -> bool:
        """PUD-level leaves exist (arm64: 4K granule; x86: gbpages)."""

    @property
    def MAX_DVM_OPS(self) -> int:
        """TLB flush by VA switches to a full flush at this many pages
        (arm64 ``MAX_DVM_OPS``; x86 ``tlb_single_page_flush_ceiling``)."""

    # --- contiguous hints (arm64 CONT_PTE/CONT_PMD; an arch without them: 1 entry) ---------------

    @property
    def ARCH_HAS_CONT_PTE(self) -> bool:
        """The arch has a contiguous-PTE hint (arm64 ``PTE_CONT``; x86: no)."""

    @property
    def CONT_PTE_SHIFT(self) -> int: ...
    @property
    def CONT_PTES(self) -> int: ...
    @property
    def CONT_PTE_SIZE(self) -> int: ...
    @property
    def CONT_PMD_SHIFT(self) -> int: ...
    @property
    def CONT_PMDS(self) -> int: ...
    @property
    def CONT_PMD_SIZE(self) -> int: ...

    # --- memory layout --------------------------------------------------------------------------

    @property
    def PAGE_OFFSET(self) -> int:
        """Start of the direct (linear) map."""

    @property
    def PAGE_END(self) -> int:
        """End of the direct map's VA range."""

    @property
    def PHYS_OFFSET(self) -> int:
        """Physical address ``PAGE_OFFSET`` maps."""

    @property
    def MODULES_VADDR(self) -> int: ...
    @property
    def MODULES_END(self) -> int: ...
    @property
    def KIMAGE_VADDR(self) -> int:
        """VA of the kernel image (x86 ``__START_KERNEL_map`` + load offset)."""

    @property
    def VMALLOC_START(self) -> int: ...
    @property
    def VMALLOC_END(self) -> int: ...
    @property
    def VMEMMAP_START(self) -> int: ...
    @property
    def FIXADDR_START(self) -> int: ...
    @property
    def FIXADDR_TOP(self) -> int: ...
    @property
    def SECTION_SIZE_BITS(self) -> int: ...
    @property
    def PAGES_PER_SECTION(self) -> int: ...

    # --- addresses (memory.h) -------------------------------------------------------------------

    def va(self, pa: int) -> int:
        """``__va(pa)``: the direct-map VA of ``pa``."""

    def pa(self, va: int) -> int:
        """``__pa(va)``: physical address of a direct-map or kernel-image VA."""

    def pa_symbol(self, va: int) -> int:
        """``__pa_symbol(sym)``: physical address of a kernel-image VA."""

    def phys_to_kimg(self, pa: int) -> int:
        """The kernel-image VA of ``pa`` (arm64 ``__phys_to_kimg``)."""

    def is_lm_address(self, va: int) -> bool:
        """``__is_lm_address(va)``: ``va`` lies in the direct map."""

    def vmemmap_page(self, pfn: int) -> int:
        """VA of ``pfn``'s ``struct page`` in the vmemmap (``pfn_to_page``)."""

    def fix_to_virt(self, idx: int) -> int:
        """``__fix_to_virt(idx)``."""

    # --- indices and range steps ----------------------------------------------------------------

    def pgd_index(self, addr: int) -> int: ...
    def pud_index(self, addr: int) -> int: ...
    def pmd_index(self, addr: int) -> int: ...
    def pte_index(self, addr: int) -> int: ...
    def pgd_addr_end(self, addr: int, end: int) -> int: ...
    def p4d_addr_end(self, addr: int, end: int) -> int: ...
    def pud_addr_end(self, addr: int, end: int) -> int: ...
    def pmd_addr_end(self, addr: int, end: int) -> int: ...

    # --- pfn <-> descriptor ---------------------------------------------------------------------

    @property
    def PTE_ADDR_MASK(self) -> int:
        """The output-address bits of a descriptor (arm64 ``PTE_ADDR_MASK``,
        x86 ``PTE_PFN_MASK``)."""

    def pfn_pte(self, pfn: int, prot: int) -> int: ...
    def pte_pfn(self, pte: int) -> int: ...
    def pfn_pmd(self, pfn: int, prot: int) -> int: ...
    def pmd_pfn(self, pmd: int) -> int: ...
    def pfn_pud(self, pfn: int, prot: int) -> int: ...
    def pud_pfn(self, pud: int) -> int: ...
    def pte_advance_pfn(self, pte: int, nr: int) -> int: ...

    # --- pte value helpers ----------------------------------------------------------------------

    def pte_none(self, pte: int) -> bool: ...
    def pte_present(self, pte: int) -> bool: ...
    def pte_valid(self, pte: int) -> bool:
        """The hardware valid/present bit (not PROT_NONE)."""

    def pte_write(self, pte: int) -> bool: ...
    def pte_dirty(self, pte: int) -> bool: ...
    def pte_young(self, pte: int) -> bool: ...
    def pte_special(self, pte: int) -> bool: ...
    def pte_user(self, pte: int) -> bool:
        """The entry is accessible from user mode (arm64 AP[1], x86 ``_PAGE_USER``)."""

    def pte_same(self, a: int, b: int) -> bool: ...
    def pte_phys(self, pte: int) -> int:
        """``__pte_to_phys``: the output address."""

    def pte_pgprot(self, pte: int) -> int: ...
    def pte_mkwrite(self, pte: int) -> int: ...
    def pte_mkwrite_novma(self, pte: int) -> int: ...
    def pte_wrprotect(self, pte: int) -> int: ...
    def pte_mkdirty(self, pte: int) -> int: ...
    def pte_mkclean(self, pte: int) -> int: ...
    def pte_mkyoung(self, pte: int) -> int: ...
    def pte_mkold(self, pte: int) -> int: ...
    def pte_mkspecial(self, pte: int) -> int: ...
    def pte_modify(self, pte: int, newprot: int) -> int: ...
    def pte_mkcont(self, pte: int) -> int:
        """Set the contiguous hint (identity when ``not ARCH_HAS_CONT_PTE``)."""

    def ptep_access_flags_merge(self, old: int, entry: int) -> int:
        """The value ``ptep_set_access_flags`` stores over ``old`` when it differs from
        ``entry`` (arm64 ``__ptep_set_access_flags``: OR in AF/WRITE/DIRTY keeping
        ``PTE_RDONLY`` the most permissive; x86: ``entry``)."""

    # --- pmd / pud / p4d / pgd value helpers (a real entry of that level) ---------------------

    def pmd_none(self, pmd: int) -> bool: ...
    def pmd_present(self, pmd: int) -> bool: ...
    def pmd_valid(self, pmd: int) -> bool: ...
    def pmd_table(self, pmd: int) -> bool:
        """A table descriptor (points to a PTE table)."""

    def pmd_leaf(self, pmd: int) -> bool: ...
    def pmd_bad(self, pmd: int) -> bool: ...
    def pmd_write(self, pmd: int) -> bool: ...
    def pmd_young(self, pmd: int) -> bool: ...
    def pmd_dirty(self, pmd: int) -> bool: ...
    def pmd_page_paddr(self, pmd: int) -> int:
        """Physical address of the next-level table (or of the leaf)."""

    def pmd_pgprot(self, pmd: int) -> int: ...
    def mk_pmd_sect_prot(self, prot: int) -> int:
        """A page protection turned into a PMD-leaf protection (x86: ``| _PAGE_PSE``)."""

    def pud_none(self, pud: int) -> bool: ...
    def pud_present(self, pud: int) -> bool: ...
    def pud_valid(self, pud: int) -> bool: ...
    def pud_table(self, pud: int) -> bool: ...
    def pud_leaf(self, pud: int) -> bool: ...
    def pud_bad(self, pud: int) -> bool: ...
    def pud_page_paddr(self, pud: int) -> int: ...
    def p4d_none(self, p4d: int) -> bool: ...
    def p4d_present(self, p4d: int) -> bool: ...
    def p4d_bad(self, p4d: int) -> bool: ...
    def p4d_page_paddr(self, p4d: int) -> int: ...
    def pgd_none(self, pgd: int) -> bool: ...
    def pgd_present(self, pgd: int) -> bool: ...
    def pgd_bad(self, pgd: int) -> bool: ...
    def pgd_page_paddr(self, pgd: int) -> int: ...

    # --- table descriptors (what pXd_populate store) -------------------------------------------

    def mk_pmd_table(self, phys: int, user: bool) -> int:
        """The pmd entry for the PTE table at ``phys``: ``pmd_populate`` (``user``) or
        ``pmd_populate_kernel`` (arm64 ``TABLE|AF|PXNTable`` / ``|UXNTable``; x86
        ``_PAGE_TABLE`` / ``_KERNPG_TABLE``)."""

    def mk_pud_table(self, phys: int, user: bool) -> int:
        """The pud entry for the PMD table at ``phys`` (``pud_populate``)."""

    def mk_p4d_table(self, phys: int, user: bool) -> int:
        """The p4d entry for the PUD table at ``phys`` (``p4d_populate``)."""

    # --- whole-table (vectorised) helpers: one numpy operation per table page ------------------

    def pfn_ptes(self, pfns: npt.NDArray[np.uint64] | npt.NDArray[np.int64], prot: int) -> U64Array:
        """Vectorised ``pfn_pte``."""

    def pte_range(self, first_pfn: int, nr: int, prot: int) -> U64Array:
        """``nr`` consecutive page descriptors from ``first_pfn`` (``set_ptes`` values)."""

    def ptes_pfn(self, arr: U64Array) -> U64Array:
        """Vectorised ``pte_pfn``."""

    def ptes_phys(self, arr: U64Array) -> U64Array: ...
    def ptes_pgprot(self, arr: U64Array) -> U64Array:
        """Vectorised ``pte_pgprot`` (everything but the output address)."""

    def ptes_none_mask(self, arr: U64Array) -> BoolArray: ...
    def ptes_valid_mask(self, arr: U64Array) -> BoolArray: ...
    def ptes_present_mask(self, arr: U64Array) -> BoolArray: ...
    def ptes_write_mask(self, arr: U64Array) -> BoolArray: ...
    def ptes_dirty_mask(self, arr: U64Array) -> BoolArray: ...
    def ptes_young_mask(self, arr: U64Array) -> BoolArray: ...
    def ptes_special_mask(self, arr: U64Array) -> BoolArray: ...
    def ptes_user_normal_all(self, arr: U64Array, out: U64Array) -> bool:
        """Fast test: True guarantees every entry is a present, non-special user page
        (False: look closer).  ``out`` is a scratch buffer of ``len(arr)``."""

    def ptes_valid_not_user_mask(self, arr: U64Array) -> BoolArray:
        """Vectorised ``pte_valid_not_user`` (the arm64 barrier condition)."""

    def ptes_wrprotect(self, arr: U64Array) -> U64Array: ...
    def ptes_mkold(self, arr: U64Array) -> U64Array: ...
    def ptes_mkclean(self, arr: U64Array) -> U64Array: ...
    def ptes_mkcont(self, arr: U64Array) -> U64Array:
        """Vectorised ``pte_mkcont``."""

    # --- barriers -------------------------------------------------------------------------------

    @property
    def ARCH_HAS_PTE_BARRIERS(self) -> bool:
        """A valid kernel ``set_pte``/``set_pmd``/``set_pud``/``set_p4d`` is followed by
        ``queue_pte_barriers()`` (DSB+ISB; batched in lazy MMU mode): arm64 yes, x86 no."""

    def pte_valid_not_user(self, pte: int) -> bool:
        """A valid kernel entry (the barrier condition of arm64 ``__set_pte``)."""

    # --- pgprots and vm_get_page_prot -----------------------------------------------------------

    @property
    def PAGE_NONE(self) -> int: ...
    @property
    def PAGE_KERNEL(self) -> int: ...
    @property
    def PAGE_KERNEL_RO(self) -> int: ...
    @property
    def PAGE_KERNEL_ROX(self) -> int: ...
    @property
    def PAGE_KERNEL_EXEC(self) -> int: ...
    @property
    def PAGE_SHARED(self) -> int: ...
    @property
    def PAGE_SHARED_EXEC(self) -> int: ...
    @property
    def PAGE_READONLY(self) -> int: ...
    @property
    def PAGE_READONLY_EXEC(self) -> int: ...
    def vm_get_page_prot(self, k: Kernel, vm_flags: int) -> int:
        """``vm_get_page_prot(vm_flags)``: ``protection_map`` + the pkey bits."""


class ArchMm(Protocol):
    """The arch mm functions generic code calls (``k.arch_mm``).

    ``addr`` arguments are kernel VAs (direct map or vmalloc); results are 0 or
    ``-errno`` as in the kernel.
    """

    def set_memory_ro(self, k: Kernel, addr: int, numpages: int) -> int: ...
    def set_memory_rw(self, k: Kernel, addr: int, numpages: int) -> int: ...
    def set_memory_nx(self, k: Kernel, addr: int, numpages: int) -> int: ...
    def set_memory_x(self, k: Kernel, addr: int, numpages: int) -> int: ...
    def set_memory_valid(self, k: Kernel, addr: int, numpages: int, enable: bool) -> int: ...
    def set_memory_pkey(self, k: Kernel, addr: int, numpages: int, pkey: int) -> int: ...
    def set_direct_map_invalid_noflush(self, k: Kernel, pfn: int) -> int: ...
    def set_direct_map_default_noflush(self, k: Kernel, pfn: int) -> int: ...
    def set_direct_map_valid_noflush(self, k: Kernel, pfn: int, nr: int, valid: bool) -> int: ...
    def force_pte_mapping(self, k: Kernel) -> bool:
        """The direct map is page-granular (never has block/huge leaves)."""

    def split_kernel_leaf_mapping(self, k: Kernel, start: int, end: int) -> int:
        """Split direct-map leaves so ``[start, end)`` has leaf boundaries at both ends."""

    def linear_map_split_count(self, k: Kernel) -> int:
        """Direct-map leaf splits so far (the PBA's statistics read it)."""

    def linear_map_leaves(self, k: Kernel) -> dict[str, int]:
        """Direct-map leaves by size name (``"pte"``, ``"pmd"``, ``"pud"``, ``cont_*``)."""

    def in_swapper_pgdir(self, k: Kernel, addr: int) -> bool:
        """``addr`` is an entry of the kernel's root table that must be written through
        :meth:`set_swapper_pgd` (arm64 once the pgd is read-only; x86: never)."""

    def set_swapper_pgd(self, k: Kernel, pgdp: int, pgd: int) -> None:
        """arm64 ``set_swapper_pgd``: store a root entry of ``swapper_pg_dir``."""

    def arch_kpkeys_protect_static_pgtables(self, k: Kernel) -> None:
        """kpkeys v6/v7: give ``KPKEYS_PKEY_PGTABLES`` to the kernel image's static tables
        (which ones, and through which alias, is the architecture's)."""

    # --- TLB maintenance (``<asm/tlbflush.h>``; generic callers use kernel/mm/tlbflush.py) -------

    def flush_tlb_all(self, k: Kernel) -> None: ...
    def local_flush_tlb_all(self, k: Kernel) -> None: ...
    def flush_tlb_kernel_range(self, k: Kernel, start: int, end: int) -> None: ...
    def flush_tlb_kernel_pgtable(self, k: Kernel, addr: int) -> None: ...
    def flush_tlb_mm(self, k: Kernel, mm: mm_struct) -> None: ...
    def flush_tlb_range(
        self, k: Kernel, vma_or_mm: vm_area_struct | mm_struct, start: int, end: int
    ) -> None: ...
    def flush_tlb_page(self, k: Kernel, vma: vm_area_struct | mm_struct, uaddr: int) -> None: ...
