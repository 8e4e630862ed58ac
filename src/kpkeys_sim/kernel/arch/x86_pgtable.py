"""The x86-64 page-table format as Linux names it, and the 4-level kernel memory layout.

Sources (Linux, x86-64): ``arch/x86/include/asm/pgtable_types.h`` (``_PAGE_BIT_*``,
``_PAGE_*``, ``PAGE_*``, ``_PAGE_TABLE``/``_KERNPG_TABLE``, ``_PAGE_CHG_MASK``),
``pgtable.h`` (value helpers: ``pte_*``, ``pmd_*``, ``pud_*``, ``p4d_*``,
``pgd_*``, ``pte_modify``, ``pte_flags_pkey``), ``pgtable_64_types.h``
(``PGDIR_SHIFT`` … ``PTRS_PER_*``, ``VMALLOC_*``, ``VMEMMAP_START``,
``MODULES_*``), ``page_64_types.h`` (``__PAGE_OFFSET_BASE_L4``,
``__START_KERNEL_map``, ``KERNEL_IMAGE_SIZE``, ``__PHYSICAL_MASK_SHIFT``,
``__VIRTUAL_MASK_SHIFT``, ``TASK_SIZE_MAX``), ``page_64.h``
(``__phys_addr_nodebug``, ``__phys_addr_symbol``), ``page.h`` (``__va``),
``page_types.h`` (``PHYSICAL_PAGE_MASK``, ``PHYSICAL_PMD_PAGE_MASK``),
``pgalloc.h`` (``pmd_populate`` … ``p4d_populate``), ``fixmap.h``
(``FIXADDR_TOP``, ``enum fixed_addresses``), ``cpu_entry_area.h``,
``sparsemem.h`` (``SECTION_SIZE_BITS``, ``MAX_PHYSMEM_BITS``),
``arch/x86/mm/pgprot.c`` (``protection_map``, ``vm_get_page_prot``),
``arch/x86/mm/tlb.c`` (``tlb_single_page_flush_ceiling``),
``Documentation/arch/x86/x86_64/mm.rst`` (the layout table); spec
pkeys-hardware.md §3 (the key field, PKRU/PKRS) and kpkeys-series.md §9
(PKS-protected page tables, the x86 precedent).

Values are plain ``int`` (a ``pte_t`` is its ``pte_val``).  Helpers that do
not depend on the geometry are module-level functions with the kernel's names
(``pte_write(pte)``, ``pmd_leaf(pmd)``); :class:`X86PgtableGeometry` (the
object boot attaches as ``k.pgt``) exposes all of them again as methods, and
adds the geometry, the layout and the pfn/address helpers, so that it
satisfies :class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchPgtable`.

Configuration modelled (everything else is treated as "not configured"):
4-level paging (no LA57, so the p4d is folded into the pgd at run time as
``pgtable_l5_enabled()`` false does), 4 KiB base pages, 2 MiB (PSE at the PDE)
and 1 GiB (PSE at the PDPTE, X86_FEATURE_GBPAGES) leaves, no KASLR
(``CONFIG_RANDOMIZE_MEMORY``/``RANDOMIZE_BASE`` off, so the region bases are
the ``*_BASE_L4`` constants), no PTI (``_PAGE_GLOBAL`` stays in kernel
protections), no SME/TDX (``_PAGE_ENC`` = ``_PAGE_CC`` = 0), no user shadow
stacks (``_PAGE_SAVED_DIRTY`` is never *set*, only tested), no
``CONFIG_MEM_SOFT_DIRTY``, no userfaultfd write-protect, no ``ZONE_DEVICE``
(``_PAGE_SOFT_DIRTY`` = ``_PAGE_UFFD_WP`` = ``_PAGE_DEVMAP`` = 0), NX
supported (``__supported_pte_mask`` keeps every bit), and PAT left at its
power-on default (memory types are not modelled; see below).

Not modelled: the L1TF "PTE inversion" of non-present entries
(``pgtable-invert.h``: a PROT_NONE entry stores the inverted pfn; here the
pfn is stored as is); the Knights Landing A/D erratum is honoured only where
``*_none`` ignores A/D as Linux does.

Memory layout (``mm.rst``, 4-level, no KASLR):

======================  ======================================================
``PAGE_OFFSET``         ``0xffff888000000000`` direct map of all RAM (64 TiB)
``VMALLOC_START``       ``0xffffc90000000000`` (32 TiB; ``VMALLOC_END`` is
                        inclusive in Linux: ``0xffffe8ffffffffff``)
``VMEMMAP_START``       ``0xffffea0000000000`` (1 TiB, 64-byte ``struct page``)
``CPU_ENTRY_AREA_BASE`` ``0xfffffe0000000000`` (constant only)
``__START_KERNEL_map``  ``0xffffffff80000000`` kernel text mapping (512 MiB),
                        ``__START_KERNEL`` = ``+ __PHYSICAL_START`` (16 MiB)
``MODULES_VADDR``       ``__START_KERNEL_map + KERNEL_IMAGE_SIZE``
                        = ``0xffffffffa0000000`` … ``MODULES_END``
                        ``0xffffffffff000000``
fixmap                  ``[FIXADDR_START, FIXADDR_TOP)``, ``FIXADDR_TOP`` =
                        ``0xffffffffff7ff000`` (vsyscall page at its top slot)
======================  ======================================================

``__va(pa) = pa + PAGE_OFFSET`` (x86 RAM starts at physical 0; there is no
``PHYS_OFFSET``, which the interface reports as 0).  ``__pa`` of a VA at or
above ``__START_KERNEL_map`` is ``va - __START_KERNEL_map + phys_base``, where
``phys_base`` is the difference between where the image was loaded and where
it was linked to run (``LOAD_PHYSICAL_ADDR``); below it, ``va - PAGE_OFFSET``.

Pkeys.  The key of a page sits in bits 62:59 of the *leaf* entry
(``_PAGE_PKEY_BIT0..3``); the key register is chosen by the page's effective
U/S: PKRU for user pages, IA32_PKRS for supervisor pages (spec §3.1–§3.2).
:func:`pte_flags_pkey` (Linux) reads it; :func:`pte_set_pkey`,
:func:`_PAGE_PKEY` and :func:`ptes_set_pkey` (model names, after the PKS
series' ``_PAGE_PKEY()``) write it.

Module layout (mirroring the headers): the constants live in
:mod:`~kpkeys_sim.kernel.arch.x86_pgtable_types` (``pgtable_types.h``,
``page_64_types.h``, ``pgtable_64_types.h``, ``fixmap.h``), the value helpers and
``vm_get_page_prot`` in :mod:`~kpkeys_sim.kernel.arch.x86_pgtable_helpers`
(``pgtable.h``, ``pgprot.c``).  This module holds :class:`X86PgtableGeometry` and
re-exports both (``__all__``), so ``from kpkeys_sim.kernel.arch.x86_pgtable import
_PAGE_PSE`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.arch import x86_pgtable_helpers, x86_pgtable_types
from kpkeys_sim.kernel.arch.pgtable_api import addr_end
from kpkeys_sim.kernel.arch.x86_pgtable_helpers import *  # noqa: F403 (re-exported via __all__)
from kpkeys_sim.kernel.arch.x86_pgtable_helpers import (
    _PFN,
    U64Array,
    mk_pmd_sect_prot,
    mk_pud_sect_prot,
    p4d_bad,
    p4d_none,
    p4d_page_paddr,
    p4d_present,
    pgd_bad,
    pgd_none,
    pgd_page_paddr,
    pgd_present,
    pmd_bad,
    pmd_dirty,
    pmd_leaf,
    pmd_none,
    pmd_page_paddr,
    pmd_pfn_mask,
    pmd_pgprot,
    pmd_present,
    pmd_table,
    pmd_valid,
    pmd_write,
    pmd_young,
    pte_dirty,
    pte_exec,
    pte_flags,
    pte_flags_pkey,
    pte_mkclean,
    pte_mkcont,
    pte_mkdirty,
    pte_mkold,
    pte_mkspecial,
    pte_mkwrite,
    pte_mkwrite_novma,
    pte_mkyoung,
    pte_modify,
    pte_none,
    pte_pgprot,
    pte_phys,
    pte_pkey,
    pte_present,
    pte_protnone,
    pte_same,
    pte_set_pkey,
    pte_special,
    pte_user,
    pte_valid,
    pte_valid_not_user,
    pte_write,
    pte_wrprotect,
    pte_young,
    ptep_access_flags_merge,
    ptes_dirty_mask,
    ptes_mkclean,
    ptes_mkcont,
    ptes_mkold,
    ptes_none_mask,
    ptes_pgprot,
    ptes_phys,
    ptes_pkey,
    ptes_present_mask,
    ptes_set_pageattr,
    ptes_set_pkey,
    ptes_special_mask,
    ptes_user_normal_all,
    ptes_valid_mask,
    ptes_valid_not_user_mask,
    ptes_write_mask,
    ptes_wrprotect,
    ptes_young_mask,
    pud_bad,
    pud_leaf,
    pud_none,
    pud_page_paddr,
    pud_pfn_mask,
    pud_pgprot,
    pud_present,
    pud_table,
    pud_valid,
    pud_write,
    vm_get_page_prot,
)
from kpkeys_sim.kernel.arch.x86_pgtable_types import *  # noqa: F403 (re-exported via __all__)
from kpkeys_sim.kernel.arch.x86_pgtable_types import (
    _END_OF_PERMANENT_FIXED_ADDRESSES,
    _KERNPG_TABLE,
    _PAGE_SHIFT,
    _PAGE_TABLE,
    _PGDIR_SHIFT,
    _PHYSICAL_ALIGN,
    _PMD_SHIFT,
    _PUD_SHIFT,
    _SECTION_SIZE_BITS,
    _START_KERNEL,
    _START_KERNEL_MAP,
    _STRUCT_PAGE_SHIFT,
    _TLB_SINGLE_PAGE_FLUSH_CEILING,
    _VIRTUAL_MASK_SHIFT,
    _VMEMMAP_SIZE,
    CPU_ENTRY_AREA_BASE,
    FIXADDR_TOP,
    KERNEL_IMAGE_SIZE,
    LOAD_PHYSICAL_ADDR,
    MAX_PHYSMEM_BITS,
    MODULES_END,
    MODULES_VADDR,
    PAGE_COPY,
    PAGE_COPY_EXEC,
    PAGE_KERNEL,
    PAGE_KERNEL_EXEC,
    PAGE_KERNEL_LARGE,
    PAGE_KERNEL_LARGE_EXEC,
    PAGE_KERNEL_RO,
    PAGE_KERNEL_ROX,
    PAGE_NONE,
    PAGE_OFFSET,
    PAGE_READONLY,
    PAGE_READONLY_EXEC,
    PAGE_SHARED,
    PAGE_SHARED_EXEC,
    PHYSICAL_PMD_PAGE_MASK,
    PHYSICAL_PUD_PAGE_MASK,
    PTE_PFN_MASK,
    TASK_SIZE_MAX,
    VMALLOC_END,
    VMALLOC_START,
    VMEMMAP_START,
    _u64,
)

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel

__all__ = [
    "PgtableGeometry",
    "X86PgtableGeometry",
]
__all__ += x86_pgtable_types.__all__
__all__ += x86_pgtable_helpers.__all__

# --- the geometry / layout object (k.pgt) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class X86PgtableGeometry:
    """Geometry and memory layout of the x86-64 4-level kernel (``k.pgt`` on x86).

    Implements :class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchPgtable`.
    Build it with :meth:`for_page_size`.  The only boot-time variable is
    ``phys_base`` (where the image was loaded relative to
    ``LOAD_PHYSICAL_ADDR``); everything else is a constant of the
    configuration in the module docstring.  Names without an x86 meaning
    (``PHYS_OFFSET``, ``PAGE_END``, ``CONT_*``, ``MAX_DVM_OPS``) carry the
    equivalent documented on each.
    """

    #: ``phys_base`` (page_64.h): physical load address of ``_text`` minus
    #: ``LOAD_PHYSICAL_ADDR``; 0 when the kernel runs where it was linked.
    phys_base: int = 0

    # --- geometry (pgtable_64_types.h, page_types.h) ---
    PAGE_SHIFT = _PAGE_SHIFT
    PAGE_SIZE = 1 << _PAGE_SHIFT
    PAGE_MASK = _u64(~((1 << _PAGE_SHIFT) - 1))
    #: Bits of *one half* of the address space (``__VIRTUAL_MASK_SHIFT`` = 47), so
    #: ``1 << VA_BITS`` is the user half as on arm64; x86 ``TASK_SIZE_MAX`` is one
    #: page less (:data:`TASK_SIZE_MAX`).
    VA_BITS = _VIRTUAL_MASK_SHIFT
    CONFIG_PGTABLE_LEVELS = 4
    #: The machine walker starts at level 0 (the PML4).
    pgd_level = 0
    PTRS_PER_PTE = 512
    PTRS_PER_PMD = 512
    PTRS_PER_PUD = 512
    #: Folded (``pgtable_l5_enabled()`` false): one p4d per pgd entry.
    PTRS_PER_P4D = 1
    PTRS_PER_PGD = 512
    PMD_SHIFT = _PMD_SHIFT
    PMD_SIZE = 1 << _PMD_SHIFT
    PMD_MASK = _u64(~((1 << _PMD_SHIFT) - 1))
    PUD_SHIFT = _PUD_SHIFT
    PUD_SIZE = 1 << _PUD_SHIFT
    PUD_MASK = _u64(~((1 << _PUD_SHIFT) - 1))
    #: With 4 levels ``P4D_SHIFT`` equals ``PGDIR_SHIFT`` (the p4d is folded).
    P4D_SHIFT = _PGDIR_SHIFT
    P4D_SIZE = 1 << _PGDIR_SHIFT
    P4D_MASK = _u64(~((1 << _PGDIR_SHIFT) - 1))
    PGDIR_SHIFT = _PGDIR_SHIFT
    PGDIR_SIZE = 1 << _PGDIR_SHIFT
    PGDIR_MASK = _u64(~((1 << _PGDIR_SHIFT) - 1))
    PGD_SIZE = 512 * 8
    PMD_ORDER = _PMD_SHIFT - _PAGE_SHIFT
    PUD_ORDER = _PUD_SHIFT - _PAGE_SHIFT
    mm_p4d_folded = True
    mm_pud_folded = False
    mm_pmd_folded = False
    #: 1 GiB leaves (X86_FEATURE_GBPAGES, assumed present).
    pud_sect_supported = True
    #: Pages at which a range flush becomes a full flush: more than
    #: ``tlb_single_page_flush_ceiling`` (33), i.e. 34.
    MAX_DVM_OPS = _TLB_SINGLE_PAGE_FLUSH_CEILING + 1

    # --- no contiguous hint: one entry per "contiguous" group ---
    ARCH_HAS_CONT_PTE = False
    CONT_PTE_SHIFT = _PAGE_SHIFT
    CONT_PTES = 1
    CONT_PTE_SIZE = 1 << _PAGE_SHIFT
    CONT_PTE_MASK = _u64(~((1 << _PAGE_SHIFT) - 1))
    CONT_PMD_SHIFT = _PMD_SHIFT
    CONT_PMDS = 1
    CONT_PMD_SIZE = 1 << _PMD_SHIFT
    CONT_PMD_MASK = _u64(~((1 << _PMD_SHIFT) - 1))

    # --- no barrier after kernel PTE writes (x86 stores are ordered for the walker) ---
    ARCH_HAS_PTE_BARRIERS = False

    # --- layout ---
    PAGE_OFFSET = PAGE_OFFSET
    #: End of the direct-map region (``PAGE_OFFSET + 2^MAX_PHYSMEM_BITS``, mm.rst).
    PAGE_END = PAGE_OFFSET + (1 << MAX_PHYSMEM_BITS)
    #: x86 RAM starts at physical 0: ``__va(pa) = pa + PAGE_OFFSET``.
    PHYS_OFFSET = 0
    MODULES_VADDR = MODULES_VADDR
    MODULES_END = MODULES_END
    #: VA of ``_text`` (``__START_KERNEL``); the image region starts at ``__START_KERNEL_map``.
    KIMAGE_VADDR = _START_KERNEL
    START_KERNEL_map = _START_KERNEL_MAP
    KERNEL_IMAGE_SIZE = KERNEL_IMAGE_SIZE
    VMALLOC_START = VMALLOC_START
    VMALLOC_END = VMALLOC_END
    VMEMMAP_START = VMEMMAP_START
    VMEMMAP_SIZE = _VMEMMAP_SIZE
    VMEMMAP_END = VMEMMAP_START + _VMEMMAP_SIZE
    FIXADDR_TOP = FIXADDR_TOP
    FIXADDR_START = FIXADDR_TOP - (_END_OF_PERMANENT_FIXED_ADDRESSES << _PAGE_SHIFT)
    CPU_ENTRY_AREA_BASE = CPU_ENTRY_AREA_BASE
    TASK_SIZE_MAX = TASK_SIZE_MAX
    SECTION_SIZE_BITS = _SECTION_SIZE_BITS
    PAGES_PER_SECTION = 1 << (_SECTION_SIZE_BITS - _PAGE_SHIFT)
    MAX_PHYSMEM_BITS = MAX_PHYSMEM_BITS

    # --- format ---
    PTE_ADDR_MASK = PTE_PFN_MASK
    PTE_PFN_MASK = PTE_PFN_MASK

    # --- pgprots ---
    PAGE_NONE = PAGE_NONE
    PAGE_KERNEL = PAGE_KERNEL
    PAGE_KERNEL_RO = PAGE_KERNEL_RO
    PAGE_KERNEL_ROX = PAGE_KERNEL_ROX
    PAGE_KERNEL_EXEC = PAGE_KERNEL_EXEC
    PAGE_KERNEL_LARGE = PAGE_KERNEL_LARGE
    PAGE_KERNEL_LARGE_EXEC = PAGE_KERNEL_LARGE_EXEC
    PAGE_SHARED = PAGE_SHARED
    PAGE_SHARED_EXEC = PAGE_SHARED_EXEC
    PAGE_COPY = PAGE_COPY
    PAGE_COPY_EXEC = PAGE_COPY_EXEC
    PAGE_READONLY = PAGE_READONLY
    PAGE_READONLY_EXEC = PAGE_READONLY_EXEC
    _PAGE_TABLE = _PAGE_TABLE
    _KERNPG_TABLE = _KERNPG_TABLE

    @classmethod
    def for_page_size(
        cls, page_size: int = 4096, *, dram_start: int = 0, kimage_pa: int | None = None
    ) -> X86PgtableGeometry:
        """The x86-64 geometry (``page_size`` must be 4096).

        ``kimage_pa`` is the physical address ``_text`` was loaded at (default
        ``dram_start + LOAD_PHYSICAL_ADDR``: 16 MiB on a real x86 machine, whose
        RAM starts at 0).  It must be 2 MiB aligned (``CONFIG_PHYSICAL_ALIGN``).
        ``dram_start`` only moves that default; the layout does not depend on it.
        """
        if page_size != 4096:
            raise ValueError(f"bad page_size {page_size!r}: x86-64 paging has 4096-byte pages")
        kpa = dram_start + LOAD_PHYSICAL_ADDR if kimage_pa is None else kimage_pa
        if kpa % _PHYSICAL_ALIGN:
            raise ValueError(f"kernel image load address {kpa:#x} is not 2 MiB aligned")
        return cls(phys_base=_u64(kpa - LOAD_PHYSICAL_ADDR))

    # --- addresses (page.h, page_64.h) ---------------------------------------------------------

    def va(self, pa: int) -> int:
        """``__va(pa)``: ``pa + PAGE_OFFSET``."""
        return pa + PAGE_OFFSET

    def is_lm_address(self, va: int) -> bool:
        """``va`` lies in the direct map ``[PAGE_OFFSET, PAGE_END)``."""
        return PAGE_OFFSET <= va < self.PAGE_END

    def pa(self, va: int) -> int:
        """``__pa(va)`` (``__phys_addr_nodebug``): image VAs via ``__START_KERNEL_map``
        and ``phys_base``, everything else via ``PAGE_OFFSET``."""
        if va >= _START_KERNEL_MAP:
            return _u64(va - _START_KERNEL_MAP + self.phys_base)
        return _u64(va - PAGE_OFFSET)

    def pa_symbol(self, va: int) -> int:
        """``__pa_symbol(sym)`` (``__phys_addr_symbol``)."""
        return _u64(va - _START_KERNEL_MAP + self.phys_base)

    def phys_to_kimg(self, pa: int) -> int:
        """The kernel-image VA of ``pa`` (inverse of :meth:`pa_symbol`)."""
        return _u64(pa + _START_KERNEL_MAP - self.phys_base)

    @property
    def kimage_voffset(self) -> int:
        """``VA - PA`` of the image (arm64 name; x86: ``__START_KERNEL_map - phys_base``)."""
        return _u64(_START_KERNEL_MAP - self.phys_base)

    def fix_to_virt(self, idx: int) -> int:
        """``__fix_to_virt(idx)``."""
        return FIXADDR_TOP - (idx << _PAGE_SHIFT)

    def vmemmap_page(self, pfn: int) -> int:
        """``pfn_to_page(pfn)`` with ``vmemmap = VMEMMAP_START`` (64-byte ``struct page``)."""
        return VMEMMAP_START + (pfn << _STRUCT_PAGE_SHIFT)

    # --- indices and range steps (pgtable.h, pgtable-nop4d semantics for the p4d) ----------------

    def pgd_index(self, addr: int) -> int:
        """``pgd_index(addr)``."""
        return (addr >> _PGDIR_SHIFT) & 511

    def p4d_index(self, addr: int) -> int:
        """``p4d_index``: 0 (folded)."""
        return 0

    def pud_index(self, addr: int) -> int:
        """``pud_index(addr)``."""
        return (addr >> _PUD_SHIFT) & 511

    def pmd_index(self, addr: int) -> int:
        """``pmd_index(addr)``."""
        return (addr >> _PMD_SHIFT) & 511

    def pte_index(self, addr: int) -> int:
        """``pte_index(addr)``."""
        return (addr >> _PAGE_SHIFT) & 511

    _addr_end = staticmethod(addr_end)

    def pgd_addr_end(self, addr: int, end: int) -> int:
        """``pgd_addr_end(addr, end)``: the next 512 GiB boundary, capped at ``end``."""
        return self._addr_end(addr, end, 1 << _PGDIR_SHIFT)

    def p4d_addr_end(self, addr: int, end: int) -> int:
        """``p4d_addr_end``: ``end`` (folded)."""
        return end

    def pud_addr_end(self, addr: int, end: int) -> int:
        """``pud_addr_end(addr, end)``."""
        return self._addr_end(addr, end, 1 << _PUD_SHIFT)

    def pmd_addr_end(self, addr: int, end: int) -> int:
        """``pmd_addr_end(addr, end)``."""
        return self._addr_end(addr, end, 1 << _PMD_SHIFT)

    def pte_cont_addr_end(self, addr: int, end: int) -> int:
        """No contiguous hint: the next page boundary, capped at ``end``."""
        return self._addr_end(addr, end, 1 << _PAGE_SHIFT)

    def pmd_cont_addr_end(self, addr: int, end: int) -> int:
        """No contiguous hint: :meth:`pmd_addr_end`."""
        return self._addr_end(addr, end, 1 << _PMD_SHIFT)

    # --- pfn <-> descriptor (pgtable.h; no L1TF inversion) -------------------------------------

    def pfn_pte(self, pfn: int, prot: int) -> int:
        """``pfn_pte(pfn, prot)``."""
        return ((pfn << _PAGE_SHIFT) & PTE_PFN_MASK) | prot

    def pte_pfn(self, pte: int) -> int:
        """``pte_pfn(pte)``."""
        return (pte & PTE_PFN_MASK) >> _PAGE_SHIFT

    def pfn_pmd(self, pfn: int, prot: int) -> int:
        """``pfn_pmd(pfn, prot)``: the address is cut to 2 MiB (``PHYSICAL_PMD_PAGE_MASK``)."""
        return ((pfn << _PAGE_SHIFT) & PHYSICAL_PMD_PAGE_MASK) | prot

    def pmd_pfn(self, pmd: int) -> int:
        """``pmd_pfn(pmd)``: first frame of a 2 MiB leaf, or the PTE table's frame."""
        return (pmd & pmd_pfn_mask(pmd)) >> _PAGE_SHIFT

    def pfn_pud(self, pfn: int, prot: int) -> int:
        """``pfn_pud(pfn, prot)``: the address is cut to 1 GiB (``PHYSICAL_PUD_PAGE_MASK``)."""
        return ((pfn << _PAGE_SHIFT) & PHYSICAL_PUD_PAGE_MASK) | prot

    def pud_pfn(self, pud: int) -> int:
        """``pud_pfn(pud)``: first frame of a 1 GiB leaf, or the PMD table's frame."""
        return (pud & pud_pfn_mask(pud)) >> _PAGE_SHIFT

    def pte_advance_pfn(self, pte: int, nr: int) -> int:
        """``pte_advance_pfn(pte, nr)``."""
        return pte + (nr << _PAGE_SHIFT)

    # --- table descriptors (pgalloc.h, pageattr.c) -----------------------------------------------

    def mk_pmd_table(self, phys: int, user: bool) -> int:
        """The pmd entry for the PTE table at ``phys``.

        ``user``: ``pmd_populate`` (``_PAGE_TABLE``); else ``_KERNPG_TABLE`` as
        the kernel's own mappings use (CPA's ``split_large_page``, init_64.c).
        Note Linux's ``pmd_populate_kernel`` stores ``_PAGE_TABLE`` too: the
        U/S bit of a table entry is ANDed with the leaf's, so a supervisor
        leaf stays supervisor either way.
        """
        return (phys & PTE_PFN_MASK) | (_PAGE_TABLE if user else _KERNPG_TABLE)

    def mk_pud_table(self, phys: int, user: bool) -> int:
        """The pud entry for the PMD table at ``phys`` (``pud_populate``)."""
        return (phys & PTE_PFN_MASK) | (_PAGE_TABLE if user else _KERNPG_TABLE)

    def mk_p4d_table(self, phys: int, user: bool) -> int:
        """The p4d (= pgd with 4 levels) entry for the PUD table at ``phys`` (``p4d_populate``)."""
        return (phys & PTE_PFN_MASK) | (_PAGE_TABLE if user else _KERNPG_TABLE)

    # --- vectorised pfn helpers -----------------------------------------------------------------

    def pfn_ptes(self, pfns: npt.NDArray[np.uint64] | npt.NDArray[np.int64], prot: int) -> U64Array:
        """Vectorised ``pfn_pte``."""
        p = np.asarray(pfns).astype(np.uint64)
        return ((p << np.uint64(_PAGE_SHIFT)) & _PFN) | np.uint64(prot)

    def pte_range(self, first_pfn: int, nr: int, prot: int) -> U64Array:
        """``nr`` consecutive page descriptors from ``first_pfn`` (``set_ptes`` values)."""
        base = np.uint64(self.pfn_pte(first_pfn, prot))
        return base + (np.arange(nr, dtype=np.uint64) << np.uint64(_PAGE_SHIFT))

    def ptes_pfn(self, arr: U64Array) -> U64Array:
        """Vectorised ``pte_pfn``."""
        return (arr & _PFN) >> np.uint64(_PAGE_SHIFT)

    # --- value helpers as methods (the ArchPgtable surface) -------------------------------------

    pte_flags = staticmethod(pte_flags)
    pte_none = staticmethod(pte_none)
    pte_present = staticmethod(pte_present)
    pte_valid = staticmethod(pte_valid)
    pte_protnone = staticmethod(pte_protnone)
    pte_write = staticmethod(pte_write)
    pte_dirty = staticmethod(pte_dirty)
    pte_young = staticmethod(pte_young)
    pte_special = staticmethod(pte_special)
    pte_user = staticmethod(pte_user)
    pte_exec = staticmethod(pte_exec)
    pte_same = staticmethod(pte_same)
    pte_phys = staticmethod(pte_phys)
    pte_pgprot = staticmethod(pte_pgprot)
    pte_mkwrite = staticmethod(pte_mkwrite)
    pte_mkwrite_novma = staticmethod(pte_mkwrite_novma)
    pte_wrprotect = staticmethod(pte_wrprotect)
    pte_mkdirty = staticmethod(pte_mkdirty)
    pte_mkclean = staticmethod(pte_mkclean)
    pte_mkyoung = staticmethod(pte_mkyoung)
    pte_mkold = staticmethod(pte_mkold)
    pte_mkspecial = staticmethod(pte_mkspecial)
    pte_modify = staticmethod(pte_modify)
    pte_mkcont = staticmethod(pte_mkcont)
    ptep_access_flags_merge = staticmethod(ptep_access_flags_merge)
    pte_valid_not_user = staticmethod(pte_valid_not_user)
    pte_pkey = staticmethod(pte_pkey)
    pte_set_pkey = staticmethod(pte_set_pkey)
    pte_flags_pkey = staticmethod(pte_flags_pkey)
    pmd_none = staticmethod(pmd_none)
    pmd_present = staticmethod(pmd_present)
    pmd_valid = staticmethod(pmd_valid)
    pmd_table = staticmethod(pmd_table)
    pmd_leaf = staticmethod(pmd_leaf)
    pmd_bad = staticmethod(pmd_bad)
    pmd_write = staticmethod(pmd_write)
    pmd_young = staticmethod(pmd_young)
    pmd_dirty = staticmethod(pmd_dirty)
    pmd_page_paddr = staticmethod(pmd_page_paddr)
    pmd_pgprot = staticmethod(pmd_pgprot)
    mk_pmd_sect_prot = staticmethod(mk_pmd_sect_prot)
    mk_pud_sect_prot = staticmethod(mk_pud_sect_prot)
    pud_none = staticmethod(pud_none)
    pud_present = staticmethod(pud_present)
    pud_valid = staticmethod(pud_valid)
    pud_table = staticmethod(pud_table)
    pud_leaf = staticmethod(pud_leaf)
    pud_bad = staticmethod(pud_bad)
    pud_write = staticmethod(pud_write)
    pud_page_paddr = staticmethod(pud_page_paddr)
    pud_pgprot = staticmethod(pud_pgprot)
    p4d_none = staticmethod(p4d_none)
    p4d_present = staticmethod(p4d_present)
    p4d_bad = staticmethod(p4d_bad)
    p4d_page_paddr = staticmethod(p4d_page_paddr)
    pgd_none = staticmethod(pgd_none)
    pgd_present = staticmethod(pgd_present)
    pgd_bad = staticmethod(pgd_bad)
    pgd_page_paddr = staticmethod(pgd_page_paddr)
    ptes_phys = staticmethod(ptes_phys)
    ptes_pgprot = staticmethod(ptes_pgprot)
    ptes_none_mask = staticmethod(ptes_none_mask)
    ptes_valid_mask = staticmethod(ptes_valid_mask)
    ptes_present_mask = staticmethod(ptes_present_mask)
    ptes_write_mask = staticmethod(ptes_write_mask)
    ptes_dirty_mask = staticmethod(ptes_dirty_mask)
    ptes_young_mask = staticmethod(ptes_young_mask)
    ptes_special_mask = staticmethod(ptes_special_mask)
    ptes_user_normal_all = staticmethod(ptes_user_normal_all)
    ptes_valid_not_user_mask = staticmethod(ptes_valid_not_user_mask)
    ptes_wrprotect = staticmethod(ptes_wrprotect)
    ptes_mkold = staticmethod(ptes_mkold)
    ptes_mkclean = staticmethod(ptes_mkclean)
    ptes_mkcont = staticmethod(ptes_mkcont)
    ptes_set_pageattr = staticmethod(ptes_set_pageattr)
    ptes_pkey = staticmethod(ptes_pkey)
    ptes_set_pkey = staticmethod(ptes_set_pkey)

    def vm_get_page_prot(self, k: Kernel, vm_flags: int) -> int:
        """``vm_get_page_prot(vm_flags)``: see the module-level :func:`vm_get_page_prot`."""
        return vm_get_page_prot(k, vm_flags)


#: The arm64 module's class name, for code that picks ``<arch>_pgtable.PgtableGeometry``.
PgtableGeometry = X86PgtableGeometry


if TYPE_CHECKING:
    from kpkeys_sim.kernel.arch.pgtable_api import ArchPgtable

    #: mypy-visible: the x86 geometry implements the generic interface.
    _IMPLEMENTS_API: ArchPgtable = X86PgtableGeometry()
