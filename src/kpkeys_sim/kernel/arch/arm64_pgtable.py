"""The arm64 page-table format as Linux names it, and the 48-bit kernel memory layout.

Sources: ``arch/arm64/include/asm/pgtable-hwdef.h`` (descriptor bits, geometry),
``pgtable-prot.h`` (``PROT_*``/``PAGE_*``), ``pgtable.h`` (value helpers),
``memory.h`` (``PAGE_OFFSET``, ``__va``/``__pa``, the VA layout),
``fixmap.h``, ``kernel-pgtable.h`` (``ARM64_MEMSTART_ALIGN``),
``arch/arm64/mm/mmap.c`` (``protection_map``, ``vm_get_page_prot``),
``arch/arm64/mm/mmu.c`` (``pgattr_change_is_safe``); spec pkeys-hardware.md
§2.1–§2.3 and kpkeys-series.md §2.6.

Values are plain ``int`` (a ``pte_t`` is its ``pte_val``).  Helpers that do not
depend on the page size are module-level functions with the kernel's names
(``pte_write(pte)``, ``pmd_leaf(pmd)``).  Helpers that do (``pfn_pte``,
``pte_pfn``, the index and ``*_addr_end`` helpers, ``__va``/``__pa``) are
methods of :class:`PgtableGeometry`, the frozen per-page-size geometry that boot
attaches to the kernel as ``k.pgt``: ``k.pgt.pfn_pte(pfn, PAGE_KERNEL)``.

Whole-table helpers for bulk work (fork, munmap, the PTE-only linear map) take
and return ``numpy.uint64`` arrays: one numpy operation per table page
(``ptes_wrprotect(arr)``, ``ptes_present_mask(arr)``, ``k.pgt.pfn_ptes(pfns,
prot)``).

Folding.  4K/48-bit and 16K/48-bit have 4 levels (``p4d`` folded into ``pgd``);
64K/48-bit has 3 levels (``pud`` and ``p4d`` folded, the ``pgd`` is hardware
level 1).  ``mm_p4d_folded``/``mm_pud_folded``/``mm_pmd_folded`` say which.  As
in ``include/asm-generic/pgtable-nop4d.h``/``-nopud.h``, a folded level's
``*_offset`` returns the pointer it was given and its ``*_none``/``*_bad`` are
constant false; the plain value helpers here describe a *real* entry and the
walk helpers in :mod:`kpkeys_sim.kernel.mm.pgtable` apply the folding.

Memory layout (48-bit VA, no KASAN, no KASLR; ``Documentation/arch/arm64/
memory.rst`` of v6.1–v6.8 and the matching ``memory.h``):

====================  ======================================================
``PAGE_OFFSET``       ``0xffff000000000000`` linear map (128 TiB) ...
``PAGE_END``          ``0xffff800000000000``
``MODULES_VADDR``     ``0xffff800000000000`` (2 GiB)
``KIMAGE_VADDR``      ``0xffff800080000000`` = ``MODULES_END`` (kernel image)
``VMALLOC_START``     ``0xffff800080000000`` (the image is a vmalloc-area vm_struct)
``VMALLOC_END``       ``VMEMMAP_START - SZ_256M``
fixmap                ``[FIXADDR_TOP - nr_slots * PAGE_SIZE, FIXADDR_TOP)``,
                      ``FIXADDR_TOP = PCI_IO_START - SZ_8M``
PCI I/O               ``[VMEMMAP_START - SZ_8M - SZ_16M, VMEMMAP_START - SZ_8M)``
``VMEMMAP_START``     ``-(1 << (VA_BITS - VMEMMAP_SHIFT))``: 4K ``0xfffffc0000000000``
                      (2 TiB), 16K ``0xffffff0000000000``, 64K ``0xffffffc000000000``
====================  ======================================================

``PHYS_OFFSET`` (``memstart_addr``) is the start of DRAM rounded down to
``ARM64_MEMSTART_ALIGN``; ``__va(pa) = (pa - PHYS_OFFSET) | PAGE_OFFSET``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.arch.pgtable_api import addr_end
from kpkeys_sim.kernel.mm.addr import (
    __is_lm_address,
    __pa,
    __pa_symbol,
    __phys_to_kimg,
    __va,
    lm_alias,
    page_address,
    virt_to_pfn,
)
from kpkeys_sim.kernel.mm.mm_types import (
    VM_EXEC,
    VM_PKEY_BIT0,
    VM_PKEY_BIT1,
    VM_PKEY_BIT2,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
)
from kpkeys_sim.machine.arch.arm64_poe import (
    PTE_PO_IDX_0,
    PTE_PO_IDX_1,
    PTE_PO_IDX_2,
    PTE_PO_IDX_MASK,
    PTE_PO_IDX_SHIFT,
)

if TYPE_CHECKING:
    from kpkeys_sim.kernel.arch.pgtable_api import ArchPgtable
    from kpkeys_sim.kernel.kernel import Kernel

__all__ = [
    "ARM64_CONT_PMD_SHIFT",
    "ARM64_CONT_PTE_SHIFT",
    "FIXMAP_PAGE_CLEAR",
    "FIXMAP_PAGE_NORMAL",
    "FIXMAP_PAGE_RO",
    "FIX_EARLYCON_MEM_BASE",
    "FIX_FDT",
    "FIX_FDT_END",
    "FIX_HOLE",
    "FIX_P4D",
    "FIX_PGD",
    "FIX_PMD",
    "FIX_PTE",
    "FIX_PUD",
    "FIX_TEXT_POKE0",
    "MT_NORMAL",
    "MT_NORMAL_NC",
    "MT_NORMAL_TAGGED",
    "P4D_TABLE_AF",
    "P4D_TABLE_BIT",
    "P4D_TABLE_PXN",
    "P4D_TABLE_UXN",
    "P4D_TYPE_MASK",
    "P4D_TYPE_TABLE",
    "PAGE_COPY",
    "PAGE_COPY_EXEC",
    "PAGE_EXECONLY",
    "PAGE_KERNEL",
    "PAGE_KERNEL_EXEC",
    "PAGE_KERNEL_EXEC_CONT",
    "PAGE_KERNEL_RO",
    "PAGE_KERNEL_ROX",
    "PAGE_NONE",
    "PAGE_READONLY",
    "PAGE_READONLY_EXEC",
    "PAGE_SHARED",
    "PAGE_SHARED_EXEC",
    "PGD_TABLE_AF",
    "PGD_TABLE_PXN",
    "PGD_TABLE_UXN",
    "PGD_TYPE_TABLE",
    "PMD_SECT_AF",
    "PMD_SECT_CONT",
    "PMD_SECT_NG",
    "PMD_SECT_PXN",
    "PMD_SECT_RDONLY",
    "PMD_SECT_S",
    "PMD_SECT_USER",
    "PMD_SECT_UXN",
    "PMD_SECT_VALID",
    "PMD_TABLE_AF",
    "PMD_TABLE_BIT",
    "PMD_TABLE_PXN",
    "PMD_TABLE_UXN",
    "PMD_TYPE_MASK",
    "PMD_TYPE_SECT",
    "PMD_TYPE_TABLE",
    "PROT_DEFAULT",
    "PROT_NORMAL",
    "PROT_SECT_DEFAULT",
    "PROT_SECT_NORMAL",
    "PROT_SECT_NORMAL_EXEC",
    "PTE_ADDR_MASK",
    "PTE_AF",
    "PTE_ATTRINDX_MASK",
    "PTE_CONT",
    "PTE_DBM",
    "PTE_DIRTY",
    "PTE_GP",
    "PTE_NG",
    "PTE_PO_IDX_0",
    "PTE_PO_IDX_1",
    "PTE_PO_IDX_2",
    "PTE_PO_IDX_MASK",
    "PTE_PO_IDX_SHIFT",
    "PTE_PRESENT_INVALID",
    "PTE_PXN",
    "PTE_RDONLY",
    "PTE_SHARED",
    "PTE_SPECIAL",
    "PTE_SWBITS_MASK",
    "PTE_TABLE_BIT",
    "PTE_TYPE_MASK",
    "PTE_TYPE_PAGE",
    "PTE_USER",
    "PTE_UXN",
    "PTE_VALID",
    "PTE_WRITE",
    "PUD_SECT_RDONLY",
    "PUD_TABLE_AF",
    "PUD_TABLE_BIT",
    "PUD_TABLE_PXN",
    "PUD_TABLE_UXN",
    "PUD_TYPE_MASK",
    "PUD_TYPE_SECT",
    "PUD_TYPE_TABLE",
    "STRUCT_PAGE_MAX_SHIFT",
    "U64_MAX",
    "MT_DEVICE_nGnRE",
    "MT_DEVICE_nGnRnE",
    "PgtableGeometry",
    "__is_lm_address",
    "__pa",
    "__pa_symbol",
    "__phys_to_kimg",
    "__va",
    "lm_alias",
    "mk_p4d_table",
    "mk_pmd_sect_prot",
    "mk_pmd_table",
    "mk_pud_sect_prot",
    "mk_pud_table",
    "p4d_bad",
    "p4d_none",
    "p4d_page_paddr",
    "p4d_present",
    "page_address",
    "pgattr_change_is_safe",
    "pgattr_change_is_safe_array",
    "pgd_bad",
    "pgd_none",
    "pgd_page_paddr",
    "pgd_present",
    "pmd_bad",
    "pmd_cont",
    "pmd_dirty",
    "pmd_leaf",
    "pmd_mkcont",
    "pmd_mknoncont",
    "pmd_none",
    "pmd_page_paddr",
    "pmd_pgprot",
    "pmd_present",
    "pmd_sect",
    "pmd_table",
    "pmd_valid",
    "pmd_write",
    "pmd_young",
    "pte_cont",
    "pte_dirty",
    "pte_hw_dirty",
    "pte_mkclean",
    "pte_mkcont",
    "pte_mkdirty",
    "pte_mkinvalid",
    "pte_mknoncont",
    "pte_mkold",
    "pte_mkspecial",
    "pte_mkwrite",
    "pte_mkwrite_novma",
    "pte_mkyoung",
    "pte_modify",
    "pte_none",
    "pte_pgprot",
    "pte_phys",
    "pte_present",
    "pte_present_invalid",
    "pte_rdonly",
    "pte_same",
    "pte_special",
    "pte_sw_dirty",
    "pte_user",
    "pte_user_exec",
    "pte_valid",
    "pte_valid_not_user",
    "pte_write",
    "pte_wrprotect",
    "pte_young",
    "ptep_access_flags_merge",
    "ptes_cont_mask",
    "ptes_dirty_mask",
    "ptes_mkclean",
    "ptes_mkcont",
    "ptes_mknoncont",
    "ptes_mkold",
    "ptes_none_mask",
    "ptes_pgprot",
    "ptes_phys",
    "ptes_present_mask",
    "ptes_set_pageattr",
    "ptes_special_mask",
    "ptes_user_normal_all",
    "ptes_valid_mask",
    "ptes_valid_not_user_mask",
    "ptes_write_mask",
    "ptes_wrprotect",
    "ptes_young_mask",
    "pud_bad",
    "pud_leaf",
    "pud_none",
    "pud_page_paddr",
    "pud_pgprot",
    "pud_present",
    "pud_sect",
    "pud_table",
    "pud_valid",
    "virt_to_pfn",
    "vm_get_page_prot",
]

U64Array = npt.NDArray[np.uint64]

U64_MAX = (1 << 64) - 1

# --- descriptor bits (pgtable-hwdef.h; spec pkeys-hardware.md §2.2) ------------------------------

PTE_VALID = 1 << 0
PTE_TYPE_MASK = 3 << 0
PTE_TYPE_PAGE = 3 << 0
PTE_TABLE_BIT = 1 << 1
#: AP[1]: EL0 accessible.
PTE_USER = 1 << 6
#: AP[2]: read-only.
PTE_RDONLY = 1 << 7
#: SH[1:0] = inner shareable.
PTE_SHARED = 3 << 8
PTE_AF = 1 << 10
PTE_NG = 1 << 11
#: BTI guarded page.
PTE_GP = 1 << 50
PTE_DBM = 1 << 51
#: Linux uses DBM as its write bit.
PTE_WRITE = PTE_DBM
PTE_CONT = 1 << 52
PTE_PXN = 1 << 53
PTE_UXN = 1 << 54
#: Software bits (pgtable-prot.h).
PTE_DIRTY = 1 << 55
PTE_SPECIAL = 1 << 56
#: Linux ≥ 6.10: a present-but-invalid entry (PROT_NONE) has PTE_VALID clear and nG set.
PTE_PRESENT_INVALID = PTE_NG
PTE_SWBITS_MASK = (1 << 63) | (0xF << 55)
PTE_ATTRINDX_SHIFT = 2
PTE_ATTRINDX_MASK = 7 << PTE_ATTRINDX_SHIFT
#: Output address bits [47:12] (48-bit PA; the bits below the page size are RES0).
PTE_ADDR_MASK = ((1 << 48) - 1) & ~((1 << 12) - 1)

# Memory types (MAIR_EL1 indices, asm/memory.h).
MT_NORMAL = 0
MT_NORMAL_TAGGED = 1
MT_NORMAL_NC = 2
MT_DEVICE_nGnRnE = 3
MT_DEVICE_nGnRE = 4


def _attrindx(mt: int) -> int:
    return mt << PTE_ATTRINDX_SHIFT


# Level 0-2 descriptors.
PMD_TYPE_MASK = 3
PMD_TYPE_TABLE = 3
PMD_TYPE_SECT = 1
PMD_TABLE_BIT = 1 << 1
PMD_SECT_VALID = 1 << 0
PMD_SECT_USER = 1 << 6
PMD_SECT_RDONLY = 1 << 7
PMD_SECT_S = 3 << 8
PMD_SECT_AF = 1 << 10
PMD_SECT_NG = 1 << 11
PMD_SECT_CONT = 1 << 52
PMD_SECT_PXN = 1 << 53
PMD_SECT_UXN = 1 << 54
#: Table-descriptor attributes: AF (FEAT_HAFT only), PXNTable, UXNTable.  They are
#: ignored once POE is enabled (hierarchical permissions disabled, Arm ARM R_BVXDG).
PMD_TABLE_AF = 1 << 10
PMD_TABLE_PXN = 1 << 59
PMD_TABLE_UXN = 1 << 60
PUD_TYPE_MASK = 3
PUD_TYPE_TABLE = 3
PUD_TYPE_SECT = 1
PUD_TABLE_BIT = 1 << 1
PUD_SECT_RDONLY = 1 << 7
PUD_TABLE_AF = 1 << 10
PUD_TABLE_PXN = 1 << 59
PUD_TABLE_UXN = 1 << 60
P4D_TYPE_MASK = 3
P4D_TYPE_TABLE = 3
P4D_TABLE_BIT = 1 << 1
P4D_TABLE_AF = 1 << 10
P4D_TABLE_PXN = 1 << 59
P4D_TABLE_UXN = 1 << 60
PGD_TYPE_TABLE = 3
PGD_TABLE_AF = 1 << 10
PGD_TABLE_PXN = 1 << 59
PGD_TABLE_UXN = 1 << 60

# --- protections (pgtable-prot.h; no KPTI, so PTE_MAYBE_NG = 0; no LPA2) -------------------------

PROT_DEFAULT = PTE_TYPE_PAGE | PTE_AF | PTE_SHARED
PROT_SECT_DEFAULT = PMD_TYPE_SECT | PMD_SECT_AF | PMD_SECT_S
PROT_NORMAL = PROT_DEFAULT | PTE_PXN | PTE_UXN | PTE_WRITE | _attrindx(MT_NORMAL)
PROT_SECT_NORMAL = (
    PROT_SECT_DEFAULT | PMD_SECT_PXN | PMD_SECT_UXN | PTE_WRITE | _attrindx(MT_NORMAL)
)
PROT_SECT_NORMAL_EXEC = PROT_SECT_DEFAULT | PMD_SECT_UXN | _attrindx(MT_NORMAL)
_PAGE_DEFAULT = PROT_DEFAULT | _attrindx(MT_NORMAL)

#: Linear map and kernel data.
PAGE_KERNEL = PROT_NORMAL
PAGE_KERNEL_RO = (PROT_NORMAL & ~PTE_WRITE) | PTE_RDONLY
PAGE_KERNEL_ROX = (PROT_NORMAL & ~(PTE_WRITE | PTE_PXN)) | PTE_RDONLY
PAGE_KERNEL_EXEC = PROT_NORMAL & ~PTE_PXN
PAGE_KERNEL_EXEC_CONT = (PROT_NORMAL & ~PTE_PXN) | PTE_CONT

#: User protections.
PAGE_SHARED = _PAGE_DEFAULT | PTE_USER | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_UXN | PTE_WRITE
PAGE_SHARED_EXEC = _PAGE_DEFAULT | PTE_USER | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_WRITE
PAGE_READONLY = _PAGE_DEFAULT | PTE_USER | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_UXN
PAGE_READONLY_EXEC = _PAGE_DEFAULT | PTE_USER | PTE_RDONLY | PTE_NG | PTE_PXN
PAGE_EXECONLY = _PAGE_DEFAULT | PTE_RDONLY | PTE_NG | PTE_PXN
#: Private writable mappings start read-only (copy on write): arm64's protection_map
#: uses PAGE_READONLY for them; older kernels spelled that PAGE_COPY.
PAGE_COPY = PAGE_READONLY
PAGE_COPY_EXEC = PAGE_READONLY_EXEC
PAGE_NONE = (
    (_PAGE_DEFAULT & ~PTE_VALID) | PTE_PRESENT_INVALID | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_UXN
)

#: Fixmap protections (asm/fixmap.h).
FIXMAP_PAGE_NORMAL = PAGE_KERNEL
FIXMAP_PAGE_RO = PAGE_KERNEL_RO
FIXMAP_PAGE_CLEAR = 0

# --- fixmap slots (asm/fixmap.h ``enum fixed_addresses``, reduced to the slots the model
# uses: the page-table slots of __create_pgd_mapping and set_swapper_pgd) ---------------------
FIX_HOLE = 0
FIX_FDT_END = 1
FIX_FDT = 2
FIX_EARLYCON_MEM_BASE = 3
FIX_TEXT_POKE0 = 4
FIX_PTE = 5
FIX_PMD = 6
FIX_PUD = 7
FIX_P4D = 8
FIX_PGD = 9
_END_OF_FIXED_ADDRESSES = 10

#: ARM64_CONT_PTE_SHIFT / ARM64_CONT_PMD_SHIFT per PAGE_SHIFT (asm/pgtable-hwdef.h, Kconfig).
ARM64_CONT_PTE_SHIFT = {12: 4, 14: 7, 16: 5}
ARM64_CONT_PMD_SHIFT = {12: 4, 14: 5, 16: 5}
#: log2(sizeof(struct page)) (asm/memory.h).
STRUCT_PAGE_MAX_SHIFT = 6

_SZ_8M = 8 << 20
_SZ_16M = 16 << 20
_SZ_256M = 256 << 20
_SZ_2G = 2 << 30
_VA_BITS = 48


def _u64(x: int) -> int:
    return x & U64_MAX


# --- pte value helpers (pgtable.h) ---------------------------------------------------------------


def pte_none(pte: int) -> bool:
    """``pte_none``: the entry is zero."""
    return pte == 0


def pte_valid(pte: int) -> bool:
    """``pte_valid``: the hardware valid bit."""
    return bool(pte & PTE_VALID)


def pte_present_invalid(pte: int) -> bool:
    """``pte_present_invalid``: PROT_NONE-style entry (valid clear, PTE_PRESENT_INVALID set)."""
    return (pte & (PTE_VALID | PTE_PRESENT_INVALID)) == PTE_PRESENT_INVALID


def pte_present(pte: int) -> bool:
    """``pte_present``: valid, or present-invalid (PROT_NONE)."""
    return bool(pte & PTE_VALID) or pte_present_invalid(pte)


def pte_write(pte: int) -> bool:
    """``pte_write``: the software write bit (DBM)."""
    return bool(pte & PTE_WRITE)


def pte_rdonly(pte: int) -> bool:
    """``pte_rdonly``: AP[2]."""
    return bool(pte & PTE_RDONLY)


def pte_user(pte: int) -> bool:
    """``pte_user``: AP[1] (EL0 accessible)."""
    return bool(pte & PTE_USER)


def pte_user_exec(pte: int) -> bool:
    """``pte_user_exec``: UXN clear."""
    return not pte & PTE_UXN


def pte_valid_not_user(pte: int) -> bool:
    """``pte_valid_not_user``: a valid kernel mapping (the barrier condition of ``__set_pte``)."""
    return (pte & (PTE_VALID | PTE_USER | PTE_UXN)) == (PTE_VALID | PTE_UXN)


def pte_special(pte: int) -> bool:
    """``pte_special``."""
    return bool(pte & PTE_SPECIAL)


def pte_hw_dirty(pte: int) -> bool:
    """``pte_hw_dirty``: writable (DBM) and not read-only: hardware has dirtied it."""
    return bool(pte & PTE_WRITE) and not pte & PTE_RDONLY


def pte_sw_dirty(pte: int) -> bool:
    """``pte_sw_dirty``."""
    return bool(pte & PTE_DIRTY)


def pte_dirty(pte: int) -> bool:
    """``pte_dirty``: software or hardware dirty."""
    return pte_sw_dirty(pte) or pte_hw_dirty(pte)


def pte_young(pte: int) -> bool:
    """``pte_young``: the access flag."""
    return bool(pte & PTE_AF)


def pte_cont(pte: int) -> bool:
    """``pte_cont``: the contiguous hint."""
    return bool(pte & PTE_CONT)


def pte_same(a: int, b: int) -> bool:
    """``pte_same``."""
    return a == b


def pte_phys(pte: int) -> int:
    """``__pte_to_phys``: the output address."""
    return pte & PTE_ADDR_MASK


def pte_pgprot(pte: int) -> int:
    """``pte_pgprot``: everything but the output address."""
    return pte & ~PTE_ADDR_MASK & U64_MAX


def pte_mkwrite_novma(pte: int) -> int:
    """``pte_mkwrite_novma``: set PTE_WRITE; a software-dirty entry also loses PTE_RDONLY."""
    pte |= PTE_WRITE
    if pte & PTE_DIRTY:
        pte &= ~PTE_RDONLY
    return pte


#: ``pte_mkwrite(pte, vma)`` without the shadow-stack case.
pte_mkwrite = pte_mkwrite_novma


def pte_wrprotect(pte: int) -> int:
    """``pte_wrprotect``: hardware-dirty becomes PTE_DIRTY; clear PTE_WRITE; set PTE_RDONLY."""
    if pte_hw_dirty(pte):
        pte |= PTE_DIRTY
    return (pte & ~PTE_WRITE) | PTE_RDONLY


def pte_mkclean(pte: int) -> int:
    """``pte_mkclean``: clear PTE_DIRTY, set PTE_RDONLY."""
    return (pte & ~PTE_DIRTY) | PTE_RDONLY


def pte_mkdirty(pte: int) -> int:
    """``pte_mkdirty``: set PTE_DIRTY; a writable entry also loses PTE_RDONLY."""
    pte |= PTE_DIRTY
    if pte & PTE_WRITE:
        pte &= ~PTE_RDONLY
    return pte


def pte_mkold(pte: int) -> int:
    """``pte_mkold``: clear the access flag."""
    return pte & ~PTE_AF


def pte_mkyoung(pte: int) -> int:
    """``pte_mkyoung``: set the access flag."""
    return pte | PTE_AF


def pte_mkspecial(pte: int) -> int:
    """``pte_mkspecial``."""
    return pte | PTE_SPECIAL


def pte_mkcont(pte: int) -> int:
    """``pte_mkcont``."""
    return pte | PTE_CONT


def pte_mknoncont(pte: int) -> int:
    """``pte_mknoncont``."""
    return pte & ~PTE_CONT


def pte_mkinvalid(pte: int) -> int:
    """``pte_mkinvalid``: present-invalid (valid clear, PTE_PRESENT_INVALID set)."""
    return (pte | PTE_PRESENT_INVALID) & ~PTE_VALID


def pte_modify(pte: int, newprot: int) -> int:
    """``pte_modify(pte, newprot)``: new permission bits; address and dirty state kept."""
    mask = (
        PTE_USER
        | PTE_PXN
        | PTE_UXN
        | PTE_RDONLY
        | PTE_PRESENT_INVALID
        | PTE_VALID
        | PTE_WRITE
        | PTE_GP
        | PTE_ATTRINDX_MASK
        | PTE_PO_IDX_MASK
    )
    if pte_hw_dirty(pte):
        pte |= PTE_DIRTY
    pte = (pte & ~mask) | (newprot & mask)
    if pte_sw_dirty(pte):
        pte = pte_mkdirty(pte)
    return pte


_ACCESS_KEEP = PTE_RDONLY | PTE_AF | PTE_WRITE | PTE_DIRTY


def ptep_access_flags_merge(old: int, entry: int) -> int:
    """The value ``__ptep_set_access_flags`` (arch/arm64/mm/fault.c) stores over ``old``.

    The access flag, write and dirty bits of ``entry`` are ORed in, keeping
    PTE_RDONLY the most permissive of the two.
    """
    ent = (entry & _ACCESS_KEEP) ^ PTE_RDONLY
    return ((old ^ PTE_RDONLY) | ent) ^ PTE_RDONLY


# --- pmd / pud / p4d / pgd value helpers (real entries; folding lives in the walk helpers) -------


def pmd_none(pmd: int) -> bool:
    """``pmd_none``."""
    return pmd == 0


def pmd_valid(pmd: int) -> bool:
    """``pmd_valid``."""
    return bool(pmd & PTE_VALID)


def pmd_present(pmd: int) -> bool:
    """``pmd_present`` (``pte_present(pmd_pte(pmd))``)."""
    return pte_present(pmd)


def pmd_table(pmd: int) -> bool:
    """``pmd_table``: a table descriptor."""
    return (pmd & PMD_TYPE_MASK) == PMD_TYPE_TABLE


def pmd_sect(pmd: int) -> bool:
    """``pmd_sect``: a valid block descriptor."""
    return (pmd & PMD_TYPE_MASK) == PMD_TYPE_SECT


def pmd_leaf(pmd: int) -> bool:
    """``pmd_leaf``: present and not a table (a block)."""
    return pmd_present(pmd) and not pmd_table(pmd)


def pmd_bad(pmd: int) -> bool:
    """``pmd_bad``: not a table."""
    return not pmd_table(pmd)


def pmd_cont(pmd: int) -> bool:
    """``pmd_cont``."""
    return bool(pmd & PMD_SECT_CONT)


def pmd_write(pmd: int) -> bool:
    """``pmd_write``."""
    return bool(pmd & PTE_WRITE)


def pmd_dirty(pmd: int) -> bool:
    """``pmd_dirty``."""
    return pte_dirty(pmd)


def pmd_young(pmd: int) -> bool:
    """``pmd_young``."""
    return bool(pmd & PTE_AF)


def pmd_mkcont(pmd: int) -> int:
    """``pmd_mkcont``."""
    return pmd | PMD_SECT_CONT


def pmd_mknoncont(pmd: int) -> int:
    """``pmd_mknoncont``."""
    return pmd & ~PMD_SECT_CONT


def pmd_page_paddr(pmd: int) -> int:
    """``pmd_page_paddr``: physical address of the next-level table (or of the block)."""
    return pmd & PTE_ADDR_MASK


def pmd_pgprot(pmd: int) -> int:
    """``pmd_pgprot``: everything but the output address."""
    return pmd & ~PTE_ADDR_MASK & U64_MAX


def pud_none(pud: int) -> bool:
    """``pud_none`` of a real pud entry."""
    return pud == 0


def pud_valid(pud: int) -> bool:
    """``pud_valid``."""
    return bool(pud & PTE_VALID)


def pud_present(pud: int) -> bool:
    """``pud_present``."""
    return pte_present(pud)


def pud_table(pud: int) -> bool:
    """``pud_table``."""
    return (pud & PUD_TYPE_MASK) == PUD_TYPE_TABLE


def pud_sect(pud: int) -> bool:
    """``pud_sect``: a valid block (1 GiB on 4K)."""
    return (pud & PUD_TYPE_MASK) == PUD_TYPE_SECT


def pud_leaf(pud: int) -> bool:
    """``pud_leaf``: present and not a table."""
    return pud_present(pud) and not pud_table(pud)


def pud_bad(pud: int) -> bool:
    """``pud_bad``: not a table."""
    return not pud_table(pud)


def pud_page_paddr(pud: int) -> int:
    """``pud_page_paddr``."""
    return pud & PTE_ADDR_MASK


def pud_pgprot(pud: int) -> int:
    """``pud_pgprot``."""
    return pud & ~PTE_ADDR_MASK & U64_MAX


def p4d_none(p4d: int) -> bool:
    """``p4d_none`` of a real p4d entry."""
    return p4d == 0


def p4d_bad(p4d: int) -> bool:
    """``p4d_bad``: the table bit is clear."""
    return not p4d & P4D_TABLE_BIT


def p4d_present(p4d: int) -> bool:
    """``p4d_present``: not none."""
    return p4d != 0


def p4d_page_paddr(p4d: int) -> int:
    """``p4d_page_paddr``."""
    return p4d & PTE_ADDR_MASK


def pgd_none(pgd: int) -> bool:
    """``pgd_none`` of a real pgd entry."""
    return pgd == 0


def pgd_bad(pgd: int) -> bool:
    """``pgd_bad``: the table bit is clear."""
    return not pgd & P4D_TABLE_BIT


def pgd_present(pgd: int) -> bool:
    """``pgd_present``: not none."""
    return pgd != 0


def pgd_page_paddr(pgd: int) -> int:
    """``pgd_page_paddr``."""
    return pgd & PTE_ADDR_MASK


def mk_pmd_sect_prot(prot: int) -> int:
    """``mk_pmd_sect_prot``: a page protection turned into a block protection."""
    return (prot & ~PMD_TYPE_MASK) | PMD_TYPE_SECT


def mk_pud_sect_prot(prot: int) -> int:
    """``mk_pud_sect_prot``."""
    return (prot & ~PUD_TYPE_MASK) | PUD_TYPE_SECT


def mk_pmd_table(phys: int, user: bool) -> int:
    """The table entry ``pmd_populate`` (``user``: PXNTable) or ``pmd_populate_kernel``
    (UXNTable) stores for the PTE table at ``phys``: table | AF | PXN/UXNTable."""
    return (
        (phys & PTE_ADDR_MASK)
        | PMD_TYPE_TABLE
        | PMD_TABLE_AF
        | (PMD_TABLE_PXN if user else PMD_TABLE_UXN)
    )


def mk_pud_table(phys: int, user: bool) -> int:
    """The table entry ``pud_populate`` stores for the PMD table at ``phys``."""
    return (
        (phys & PTE_ADDR_MASK)
        | PUD_TYPE_TABLE
        | PUD_TABLE_AF
        | (PUD_TABLE_PXN if user else PUD_TABLE_UXN)
    )


def mk_p4d_table(phys: int, user: bool) -> int:
    """The table entry ``p4d_populate`` stores for the PUD table at ``phys``."""
    return (
        (phys & PTE_ADDR_MASK)
        | P4D_TYPE_TABLE
        | P4D_TABLE_AF
        | (P4D_TABLE_PXN if user else P4D_TABLE_UXN)
    )


# --- pgattr_change_is_safe (arch/arm64/mm/mmu.c) -------------------------------------------------

_SAFE_MASK = PTE_PXN | PTE_RDONLY | PTE_WRITE | PTE_NG | PTE_SWBITS_MASK
_NORMAL_TYPES = (_attrindx(MT_NORMAL), _attrindx(MT_NORMAL_TAGGED))


def pgattr_change_is_safe(old: int, new: int) -> bool:
    """``pgattr_change_is_safe(old, new)``: may a live kernel entry change like this without BBM?

    Creating or removing a mapping is safe; a live entry may only change PXN,
    RDONLY, WRITE, nG and the software bits (and Normal ⇄ Normal-Tagged), never
    its output address, never while CONT is set, never nG → global (spec
    pkeys-hardware.md §2.5).  POIndex is not in the list in mainline.
    """
    if not old & PTE_VALID or not new & PTE_VALID:
        return True
    if (old & PTE_ADDR_MASK) != (new & PTE_ADDR_MASK):
        return False
    if (old | new) & PTE_CONT:
        return False
    if old & ~new & PTE_NG:
        return False
    mask = _SAFE_MASK
    if (old & PTE_ATTRINDX_MASK) in _NORMAL_TYPES and (new & PTE_ATTRINDX_MASK) in _NORMAL_TYPES:
        mask |= PTE_ATTRINDX_MASK
    return ((old ^ new) & ~mask) == 0


def pgattr_change_is_safe_array(old: U64Array, new: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised :func:`pgattr_change_is_safe` over two equal-length descriptor arrays."""
    v = np.uint64(PTE_VALID)
    either_invalid = ((old & v) == 0) | ((new & v) == 0)
    if either_invalid.all():
        return _b(either_invalid)
    same_oa = (old & np.uint64(PTE_ADDR_MASK)) == (new & np.uint64(PTE_ADDR_MASK))
    no_cont = ((old | new) & np.uint64(PTE_CONT)) == 0
    ng_ok = (old & ~new & np.uint64(PTE_NG)) == 0
    attr_mask = np.uint64(PTE_ATTRINDX_MASK)
    a_old = old & attr_mask
    a_new = new & attr_mask
    n0, n1 = (np.uint64(t) for t in _NORMAL_TYPES)
    both_normal = ((a_old == n0) | (a_old == n1)) & ((a_new == n0) | (a_new == n1))
    mask = np.where(both_normal, np.uint64(_SAFE_MASK | PTE_ATTRINDX_MASK), np.uint64(_SAFE_MASK))
    bits_ok = ((old ^ new) & ~mask) == 0
    return _b(either_invalid | (same_oa & no_cont & ng_ok & bits_ok))


# --- whole-table (vectorised) helpers ------------------------------------------------------------

_V = np.uint64(PTE_VALID)
_PI = np.uint64(PTE_PRESENT_INVALID)
_W = np.uint64(PTE_WRITE)
_RO = np.uint64(PTE_RDONLY)
_DIRTY = np.uint64(PTE_DIRTY)
_AF = np.uint64(PTE_AF)
_CONT = np.uint64(PTE_CONT)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_SPECIAL = np.uint64(PTE_SPECIAL)
_NOT_ADDR = np.uint64(~PTE_ADDR_MASK & U64_MAX)
_VALID_UXN = np.uint64(PTE_VALID | PTE_UXN)
_VALID_USER_UXN = np.uint64(PTE_VALID | PTE_USER | PTE_UXN)
#: The bits telling a normal present user page (valid, nG = not PTE_PRESENT_INVALID
#: alone, not special) from the rest.
_LOW_BITS = np.uint64(PTE_VALID | PTE_PRESENT_INVALID | PTE_SPECIAL)
_USER_PRESENT = np.uint64(PTE_VALID | PTE_NG)
_S7 = np.uint64(7)
_S51 = np.uint64(51)
_S55 = np.uint64(55)
assert (PTE_RDONLY, PTE_WRITE, PTE_DIRTY) == (1 << 7, 1 << 51, 1 << 55)

BoolArray = npt.NDArray[np.bool_]


def _b(x: object) -> BoolArray:
    return np.asarray(x, dtype=np.bool_)


def ptes_none_mask(arr: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised ``pte_none``."""
    return _b(arr == _ZERO)


def ptes_valid_mask(arr: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised ``pte_valid``."""
    return _b((arr & _V) != _ZERO)


def ptes_present_mask(arr: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised ``pte_present``."""
    return _b(((arr & _V) != _ZERO) | ((arr & (_V | _PI)) == _PI))


def ptes_write_mask(arr: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised ``pte_write``."""
    return _b((arr & _W) != _ZERO)


def ptes_dirty_mask(arr: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised ``pte_dirty``."""
    return _b(((arr & _DIRTY) != _ZERO) | (((arr & _W) != _ZERO) & ((arr & _RO) == _ZERO)))


def ptes_young_mask(arr: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised ``pte_young``."""
    return _b((arr & _AF) != _ZERO)


def ptes_cont_mask(arr: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised ``pte_cont``."""
    return _b((arr & _CONT) != _ZERO)


def ptes_phys(arr: U64Array) -> U64Array:
    """Vectorised ``__pte_to_phys``."""
    return arr & np.uint64(PTE_ADDR_MASK)


def ptes_special_mask(arr: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised ``pte_special``."""
    return _b((arr & _SPECIAL) != _ZERO)


def ptes_valid_not_user_mask(arr: U64Array) -> npt.NDArray[np.bool_]:
    """Vectorised ``pte_valid_not_user``."""
    return _b((arr & _VALID_USER_UXN) == _VALID_UXN)


def ptes_user_normal_all(arr: U64Array, out: U64Array) -> bool:
    """True if every entry is valid, nG (user) and not special (``out``: scratch buffer).

    False does not mean otherwise: e.g. a global entry or a PROT_NONE one fails
    this fast test; look closer with :func:`ptes_present_mask` and
    :func:`ptes_special_mask`.
    """
    low = np.bitwise_and(arr, _LOW_BITS, out=out)
    return bool(np.all(low == _USER_PRESENT))


def ptes_pgprot(arr: U64Array) -> U64Array:
    """Vectorised ``pte_pgprot``: everything but the output address."""
    return arr & _NOT_ADDR


def ptes_wrprotect(arr: U64Array) -> U64Array:
    """Vectorised ``pte_wrprotect`` (hardware-dirty entries gain PTE_DIRTY).

    Hardware-dirty is "PTE_WRITE (bit 51) set and PTE_RDONLY (bit 7) clear":
    that bit moved up to PTE_DIRTY (bit 55), all in integer operations.
    """
    hw_dirty = (arr >> _S51) & (~arr >> _S7) & _ONE
    return ((arr | (hw_dirty << _S55)) & ~_W) | _RO


def ptes_mkold(arr: U64Array) -> U64Array:
    """Vectorised ``pte_mkold``."""
    return arr & ~_AF


def ptes_mkclean(arr: U64Array) -> U64Array:
    """Vectorised ``pte_mkclean``."""
    return (arr & ~_DIRTY) | _RO


def ptes_mkcont(arr: U64Array) -> U64Array:
    """Vectorised ``pte_mkcont``."""
    return arr | _CONT


def ptes_mknoncont(arr: U64Array) -> U64Array:
    """Vectorised ``pte_mknoncont``."""
    return arr & ~_CONT


def ptes_set_pageattr(arr: U64Array, set_mask: int, clear_mask: int) -> U64Array:
    """Vectorised ``set_pageattr_masks`` (pageattr.c): ``(val & ~clear) | set``."""
    return (arr & ~np.uint64(clear_mask)) | np.uint64(set_mask)


# --- arm64 protection_map (arch/arm64/mm/mmap.c) -------------------------------------------------

_PROTECTION_MAP: tuple[int, ...] = (
    PAGE_NONE,  # VM_NONE
    PAGE_READONLY,  # VM_READ
    PAGE_READONLY,  # VM_WRITE
    PAGE_READONLY,  # VM_WRITE | VM_READ
    PAGE_READONLY_EXEC,  # VM_EXEC (PAGE_EXECONLY with Enhanced PAN)
    PAGE_READONLY_EXEC,
    PAGE_READONLY_EXEC,
    PAGE_READONLY_EXEC,
    PAGE_NONE,  # VM_SHARED
    PAGE_READONLY,
    PAGE_SHARED,
    PAGE_SHARED,
    PAGE_READONLY_EXEC,
    PAGE_READONLY_EXEC,
    PAGE_SHARED_EXEC,
    PAGE_SHARED_EXEC,
)


def vm_get_page_prot(k: Kernel, vm_flags: int) -> int:
    """``vm_get_page_prot(vm_flags)`` (arch/arm64/mm/mmap.c).

    ``protection_map[vm_flags & (VM_READ|VM_WRITE|VM_EXEC|VM_SHARED)]``, plus the
    POIndex bits from ``VM_PKEY_BIT0..2`` when the system supports POE.
    """
    prot = _PROTECTION_MAP[vm_flags & (VM_READ | VM_WRITE | VM_EXEC | VM_SHARED)]
    if k.machine.has_pkeys:
        if vm_flags & VM_PKEY_BIT0:
            prot |= PTE_PO_IDX_0
        if vm_flags & VM_PKEY_BIT1:
            prot |= PTE_PO_IDX_1
        if vm_flags & VM_PKEY_BIT2:
            prot |= PTE_PO_IDX_2
    return prot


# --- the per-kernel geometry object (k.pgt): the ArchPgtable of arm64 ----------------------------


@dataclass(frozen=True, slots=True)
class PgtableGeometry:
    """Geometry and memory layout of the arm64 48-bit kernel for one page size.

    Field names are the kernel's macros.  Build it with :meth:`for_page_size`;
    boot attaches it as ``k.pgt``.  ``PHYS_OFFSET`` (``memstart_addr``) and
    ``kimage_voffset`` are boot-time constants of the machine.
    """

    PAGE_SHIFT: int
    PAGE_SIZE: int
    PAGE_MASK: int
    VA_BITS: int
    CONFIG_PGTABLE_LEVELS: int
    #: Hardware level of the pgd (0 for 4 levels, 1 for 3 levels).
    pgd_level: int
    PTRS_PER_PTE: int
    PTRS_PER_PMD: int
    PTRS_PER_PUD: int
    PTRS_PER_P4D: int
    PTRS_PER_PGD: int
    PMD_SHIFT: int
    PMD_SIZE: int
    PMD_MASK: int
    PUD_SHIFT: int
    PUD_SIZE: int
    PUD_MASK: int
    P4D_SHIFT: int
    P4D_SIZE: int
    P4D_MASK: int
    PGDIR_SHIFT: int
    PGDIR_SIZE: int
    PGDIR_MASK: int
    #: Bytes of a pgd table (``PTRS_PER_PGD * 8``; below PAGE_SIZE on 16K/64K).
    PGD_SIZE: int
    CONT_PTE_SHIFT: int
    CONT_PTES: int
    CONT_PTE_SIZE: int
    CONT_PTE_MASK: int
    CONT_PMD_SHIFT: int
    CONT_PMDS: int
    CONT_PMD_SIZE: int
    CONT_PMD_MASK: int
    PMD_ORDER: int
    PUD_ORDER: int
    mm_p4d_folded: bool
    mm_pud_folded: bool
    mm_pmd_folded: bool
    #: 1 GiB PUD blocks exist (4K granule only, ``pud_sect_supported()``).
    pud_sect_supported: bool
    #: ``MAX_DVM_OPS``: TLBI-by-VA loops switch to a full flush at this many pages.
    MAX_DVM_OPS: int
    # --- layout ---
    PAGE_OFFSET: int
    PAGE_END: int
    MODULES_VADDR: int
    MODULES_END: int
    KIMAGE_VADDR: int
    VMALLOC_START: int
    VMALLOC_END: int
    FIXADDR_TOP: int
    FIXADDR_START: int
    PCI_IO_START: int
    PCI_IO_END: int
    VMEMMAP_SHIFT: int
    VMEMMAP_START: int
    VMEMMAP_SIZE: int
    VMEMMAP_END: int
    SECTION_SIZE_BITS: int
    PAGES_PER_SECTION: int
    ARM64_MEMSTART_ALIGN: int
    #: ``memstart_addr``: DRAM start rounded down to ARM64_MEMSTART_ALIGN.
    PHYS_OFFSET: int
    #: ``KIMAGE_VADDR - __pa_symbol(_text)``.
    kimage_voffset: int

    @classmethod
    def for_page_size(
        cls, page_size: int, *, dram_start: int = 0x4000_0000, kimage_pa: int | None = None
    ) -> PgtableGeometry:
        """The geometry for ``page_size`` (4096, 16384, 65536) with DRAM at ``dram_start``.

        ``kimage_pa`` is the physical address of the kernel image's first byte
        (default: ``dram_start``).
        """
        if page_size not in (4096, 16384, 65536):
            raise ValueError(f"bad page_size {page_size!r}: must be 4096, 16384 or 65536")
        shift = page_size.bit_length() - 1
        bits = shift - 3
        levels = 4 if shift in (12, 14) else 3

        def level_shift(n: int) -> int:  # ARM64_HW_PGTABLE_LEVEL_SHIFT(n)
            return bits * (4 - n) + 3

        pmd_shift = level_shift(2)
        pgdir_shift = level_shift(4 - levels)
        pud_shift = level_shift(1) if levels > 3 else pgdir_shift
        ptrs_pgd = 1 << (_VA_BITS - pgdir_shift)
        ptrs_pud = (1 << bits) if levels > 3 else 1
        cont_pte_shift = ARM64_CONT_PTE_SHIFT[shift] + shift
        cont_pmd_shift = ARM64_CONT_PMD_SHIFT[shift] + pmd_shift
        page_offset = _u64(-(1 << _VA_BITS))
        page_end = _u64(-(1 << (_VA_BITS - 1)))
        modules_vaddr = page_end
        modules_end = modules_vaddr + _SZ_2G
        vmemmap_shift = shift - STRUCT_PAGE_MAX_SHIFT
        vmemmap_size = (page_end - page_offset) >> vmemmap_shift
        vmemmap_start = _u64(-(1 << (_VA_BITS - vmemmap_shift)))
        pci_io_end = vmemmap_start - _SZ_8M
        pci_io_start = pci_io_end - _SZ_16M
        fixaddr_top = pci_io_start - _SZ_8M
        section_bits = 29 if shift == 16 else 27
        memstart_shift = {12: pud_shift, 14: cont_pmd_shift, 16: pmd_shift}[shift]
        memstart_align = 1 << max(memstart_shift, section_bits)
        phys_offset = dram_start & ~(memstart_align - 1)
        kpa = dram_start if kimage_pa is None else kimage_pa
        return cls(
            PAGE_SHIFT=shift,
            PAGE_SIZE=page_size,
            PAGE_MASK=_u64(~(page_size - 1)),
            VA_BITS=_VA_BITS,
            CONFIG_PGTABLE_LEVELS=levels,
            pgd_level=4 - levels,
            PTRS_PER_PTE=1 << bits,
            PTRS_PER_PMD=1 << bits,
            PTRS_PER_PUD=ptrs_pud,
            PTRS_PER_P4D=1,
            PTRS_PER_PGD=ptrs_pgd,
            PMD_SHIFT=pmd_shift,
            PMD_SIZE=1 << pmd_shift,
            PMD_MASK=_u64(~((1 << pmd_shift) - 1)),
            PUD_SHIFT=pud_shift,
            PUD_SIZE=1 << pud_shift,
            PUD_MASK=_u64(~((1 << pud_shift) - 1)),
            P4D_SHIFT=pgdir_shift,
            P4D_SIZE=1 << pgdir_shift,
            P4D_MASK=_u64(~((1 << pgdir_shift) - 1)),
            PGDIR_SHIFT=pgdir_shift,
            PGDIR_SIZE=1 << pgdir_shift,
            PGDIR_MASK=_u64(~((1 << pgdir_shift) - 1)),
            PGD_SIZE=ptrs_pgd * 8,
            CONT_PTE_SHIFT=cont_pte_shift,
            CONT_PTES=1 << ARM64_CONT_PTE_SHIFT[shift],
            CONT_PTE_SIZE=1 << cont_pte_shift,
            CONT_PTE_MASK=_u64(~((1 << cont_pte_shift) - 1)),
            CONT_PMD_SHIFT=cont_pmd_shift,
            CONT_PMDS=1 << ARM64_CONT_PMD_SHIFT[shift],
            CONT_PMD_SIZE=1 << cont_pmd_shift,
            CONT_PMD_MASK=_u64(~((1 << cont_pmd_shift) - 1)),
            PMD_ORDER=pmd_shift - shift,
            PUD_ORDER=pud_shift - shift,
            mm_p4d_folded=True,
            mm_pud_folded=levels < 4,
            mm_pmd_folded=False,
            pud_sect_supported=shift == 12,
            MAX_DVM_OPS=1 << bits,
            PAGE_OFFSET=page_offset,
            PAGE_END=page_end,
            MODULES_VADDR=modules_vaddr,
            MODULES_END=modules_end,
            KIMAGE_VADDR=modules_end,
            VMALLOC_START=modules_end,
            VMALLOC_END=vmemmap_start - _SZ_256M,
            FIXADDR_TOP=fixaddr_top,
            FIXADDR_START=fixaddr_top - (_END_OF_FIXED_ADDRESSES << shift),
            PCI_IO_START=pci_io_start,
            PCI_IO_END=pci_io_end,
            VMEMMAP_SHIFT=vmemmap_shift,
            VMEMMAP_START=vmemmap_start,
            VMEMMAP_SIZE=vmemmap_size,
            VMEMMAP_END=vmemmap_start + vmemmap_size,
            SECTION_SIZE_BITS=section_bits,
            PAGES_PER_SECTION=1 << (section_bits - shift),
            ARM64_MEMSTART_ALIGN=memstart_align,
            PHYS_OFFSET=phys_offset,
            kimage_voffset=_u64(modules_end - kpa),
        )

    # --- indices and range steps (pgtable.h) -----------------------------------------------

    def pgd_index(self, addr: int) -> int:
        """``pgd_index(addr)``."""
        return (addr >> self.PGDIR_SHIFT) & (self.PTRS_PER_PGD - 1)

    def pud_index(self, addr: int) -> int:
        """``pud_index(addr)`` (0 when the pud is folded)."""
        return (addr >> self.PUD_SHIFT) & (self.PTRS_PER_PUD - 1)

    def pmd_index(self, addr: int) -> int:
        """``pmd_index(addr)``."""
        return (addr >> self.PMD_SHIFT) & (self.PTRS_PER_PMD - 1)

    def pte_index(self, addr: int) -> int:
        """``pte_index(addr)``."""
        return (addr >> self.PAGE_SHIFT) & (self.PTRS_PER_PTE - 1)

    _addr_end = staticmethod(addr_end)

    def pgd_addr_end(self, addr: int, end: int) -> int:
        """``pgd_addr_end(addr, end)``: the next pgd boundary, capped at ``end``."""
        return self._addr_end(addr, end, self.PGDIR_SIZE)

    def p4d_addr_end(self, addr: int, end: int) -> int:
        """``p4d_addr_end``: ``end`` (the p4d is always folded on arm64 48-bit)."""
        return end

    def pud_addr_end(self, addr: int, end: int) -> int:
        """``pud_addr_end``: ``end`` when the pud is folded (64K)."""
        if self.mm_pud_folded:
            return end
        return self._addr_end(addr, end, self.PUD_SIZE)

    def pmd_addr_end(self, addr: int, end: int) -> int:
        """``pmd_addr_end(addr, end)``."""
        return self._addr_end(addr, end, self.PMD_SIZE)

    def pmd_cont_addr_end(self, addr: int, end: int) -> int:
        """``pmd_cont_addr_end(addr, end)``."""
        return self._addr_end(addr, end, self.CONT_PMD_SIZE)

    def pte_cont_addr_end(self, addr: int, end: int) -> int:
        """``pte_cont_addr_end(addr, end)``."""
        return self._addr_end(addr, end, self.CONT_PTE_SIZE)

    # --- pfn <-> descriptor ------------------------------------------------------------------

    def pfn_pte(self, pfn: int, prot: int) -> int:
        """``pfn_pte(pfn, prot)``: a descriptor mapping frame ``pfn`` with ``prot``."""
        return ((pfn << self.PAGE_SHIFT) & PTE_ADDR_MASK) | prot

    def pte_pfn(self, pte: int) -> int:
        """``pte_pfn(pte)``."""
        return (pte & PTE_ADDR_MASK) >> self.PAGE_SHIFT

    def pfn_pmd(self, pfn: int, prot: int) -> int:
        """``pfn_pmd(pfn, prot)``."""
        return ((pfn << self.PAGE_SHIFT) & PTE_ADDR_MASK) | prot

    def pmd_pfn(self, pmd: int) -> int:
        """``pmd_pfn(pmd)``: the first frame of a block, or the table's frame."""
        return (
            (pmd & PTE_ADDR_MASK) & self.PMD_MASK if pmd_sect(pmd) else pmd & PTE_ADDR_MASK
        ) >> (self.PAGE_SHIFT)

    def pfn_pud(self, pfn: int, prot: int) -> int:
        """``pfn_pud(pfn, prot)``."""
        return ((pfn << self.PAGE_SHIFT) & PTE_ADDR_MASK) | prot

    def pud_pfn(self, pud: int) -> int:
        """``pud_pfn(pud)``."""
        return (
            (pud & PTE_ADDR_MASK) & self.PUD_MASK if pud_sect(pud) else pud & PTE_ADDR_MASK
        ) >> (self.PAGE_SHIFT)

    def pte_advance_pfn(self, pte: int, nr: int) -> int:
        """``pte_advance_pfn(pte, nr)``."""
        return pte + (nr << self.PAGE_SHIFT)

    def pfn_ptes(self, pfns: npt.NDArray[np.uint64] | npt.NDArray[np.int64], prot: int) -> U64Array:
        """Vectorised ``pfn_pte``: one descriptor per pfn, all with ``prot``."""
        p = np.asarray(pfns).astype(np.uint64)
        return ((p << np.uint64(self.PAGE_SHIFT)) & np.uint64(PTE_ADDR_MASK)) | np.uint64(prot)

    def pte_range(self, first_pfn: int, nr: int, prot: int) -> U64Array:
        """``nr`` consecutive page descriptors from ``first_pfn`` (``set_ptes`` values)."""
        base = np.uint64(self.pfn_pte(first_pfn, prot))
        return base + (np.arange(nr, dtype=np.uint64) << np.uint64(self.PAGE_SHIFT))

    def ptes_pfn(self, arr: U64Array) -> U64Array:
        """Vectorised ``pte_pfn``."""
        return (arr & np.uint64(PTE_ADDR_MASK)) >> np.uint64(self.PAGE_SHIFT)

    # --- addresses (memory.h) -----------------------------------------------------------------

    def va(self, pa: int) -> int:
        """``__va(pa)`` / ``__phys_to_virt``: the linear-map address of ``pa``."""
        return (pa - self.PHYS_OFFSET) | self.PAGE_OFFSET

    def is_lm_address(self, va: int) -> bool:
        """``__is_lm_address(va)``: ``va`` lies in the linear map."""
        return ((va - self.PAGE_OFFSET) & U64_MAX) < (self.PAGE_END - self.PAGE_OFFSET)

    def pa(self, va: int) -> int:
        """``__pa(va)`` / ``__virt_to_phys``: linear-map or kernel-image address to physical."""
        if self.is_lm_address(va):
            return (va & ~self.PAGE_OFFSET & U64_MAX) + self.PHYS_OFFSET
        return (va - self.kimage_voffset) & U64_MAX

    def pa_symbol(self, va: int) -> int:
        """``__pa_symbol(sym)`` / ``__kimg_to_phys``: physical address of a kernel-image VA."""
        return (va - self.kimage_voffset) & U64_MAX

    def phys_to_kimg(self, pa: int) -> int:
        """``__phys_to_kimg(pa)``: the kernel-image VA of physical ``pa``."""
        return (pa + self.kimage_voffset) & U64_MAX

    def fix_to_virt(self, idx: int) -> int:
        """``__fix_to_virt(idx)``."""
        return self.FIXADDR_TOP - (idx << self.PAGE_SHIFT)

    def vmemmap_page(self, pfn: int) -> int:
        """VA of ``struct page`` of ``pfn`` in the vmemmap (SPARSEMEM_VMEMMAP ``pfn_to_page``)."""
        return self.VMEMMAP_START + ((pfn - (self.PHYS_OFFSET >> self.PAGE_SHIFT)) << 6)

    # --- the ArchPgtable surface: format constants and value helpers (module-level above) -----
    #: Behaviour flags (see :class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchPgtable`).
    ARCH_HAS_CONT_PTE = True
    ARCH_HAS_PTE_BARRIERS = True
    PTE_ADDR_MASK = PTE_ADDR_MASK
    PAGE_NONE = PAGE_NONE
    PAGE_KERNEL = PAGE_KERNEL
    PAGE_KERNEL_RO = PAGE_KERNEL_RO
    PAGE_KERNEL_ROX = PAGE_KERNEL_ROX
    PAGE_KERNEL_EXEC = PAGE_KERNEL_EXEC
    PAGE_SHARED = PAGE_SHARED
    PAGE_SHARED_EXEC = PAGE_SHARED_EXEC
    PAGE_READONLY = PAGE_READONLY
    PAGE_READONLY_EXEC = PAGE_READONLY_EXEC
    pte_none = staticmethod(pte_none)
    pte_present = staticmethod(pte_present)
    pte_valid = staticmethod(pte_valid)
    pte_write = staticmethod(pte_write)
    pte_dirty = staticmethod(pte_dirty)
    pte_young = staticmethod(pte_young)
    pte_special = staticmethod(pte_special)
    pte_user = staticmethod(pte_user)
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
    pud_none = staticmethod(pud_none)
    pud_present = staticmethod(pud_present)
    pud_valid = staticmethod(pud_valid)
    pud_table = staticmethod(pud_table)
    pud_leaf = staticmethod(pud_leaf)
    pud_bad = staticmethod(pud_bad)
    pud_page_paddr = staticmethod(pud_page_paddr)
    p4d_none = staticmethod(p4d_none)
    p4d_present = staticmethod(p4d_present)
    p4d_bad = staticmethod(p4d_bad)
    p4d_page_paddr = staticmethod(p4d_page_paddr)
    pgd_none = staticmethod(pgd_none)
    pgd_present = staticmethod(pgd_present)
    pgd_bad = staticmethod(pgd_bad)
    pgd_page_paddr = staticmethod(pgd_page_paddr)
    mk_pmd_table = staticmethod(mk_pmd_table)
    mk_pud_table = staticmethod(mk_pud_table)
    mk_p4d_table = staticmethod(mk_p4d_table)
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
    vm_get_page_prot = staticmethod(vm_get_page_prot)


if TYPE_CHECKING:
    #: Static check: the arm64 geometry object provides the whole arch-neutral interface.
    _ARCH_PGTABLE: type[ArchPgtable] = PgtableGeometry
