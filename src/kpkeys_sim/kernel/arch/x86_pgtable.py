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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.arch.pgtable_api import addr_end
from kpkeys_sim.kernel.mm.mm_types import (
    VM_EXEC,
    VM_PKEY_BIT0,
    VM_PKEY_BIT1,
    VM_PKEY_BIT2,
    VM_PKEY_BIT3,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
)

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel

__all__ = [
    "CPU_ENTRY_AREA_BASE",
    "EFI_VA_END",
    "EFI_VA_START",
    "ESPFIX_BASE_ADDR",
    "FIXADDR_TOP",
    "FIXMAP_PAGE_NORMAL",
    "FIXMAP_PAGE_RO",
    "FIX_APIC_BASE",
    "FIX_DBGP_BASE",
    "FIX_EARLYCON_MEM_BASE",
    "FIX_IO_APIC_BASE_0",
    "KERNEL_IMAGE_SIZE",
    "LDT_BASE_ADDR",
    "LOAD_PHYSICAL_ADDR",
    "MAX_PHYSMEM_BITS",
    "MODULES_END",
    "MODULES_VADDR",
    "PAGE_COPY",
    "PAGE_COPY_EXEC",
    "PAGE_COPY_NOEXEC",
    "PAGE_KERNEL",
    "PAGE_KERNEL_EXEC",
    "PAGE_KERNEL_LARGE",
    "PAGE_KERNEL_LARGE_EXEC",
    "PAGE_KERNEL_RO",
    "PAGE_KERNEL_ROX",
    "PAGE_NONE",
    "PAGE_OFFSET",
    "PAGE_READONLY",
    "PAGE_READONLY_EXEC",
    "PAGE_SHARED",
    "PAGE_SHARED_EXEC",
    "PHYSICAL_PMD_PAGE_MASK",
    "PHYSICAL_PUD_PAGE_MASK",
    "PTE_FLAGS_MASK",
    "PTE_PFN_MASK",
    "TASK_SIZE_MAX",
    "U64_MAX",
    "VMALLOC_END",
    "VMALLOC_SIZE_TB",
    "VMALLOC_START",
    "VMEMMAP_START",
    "VSYSCALL_ADDR",
    "VSYSCALL_PAGE",
    "_KERNPG_TABLE",
    "_PAGE_ACCESSED",
    "_PAGE_BIT_ACCESSED",
    "_PAGE_BIT_CPA_TEST",
    "_PAGE_BIT_DIRTY",
    "_PAGE_BIT_GLOBAL",
    "_PAGE_BIT_NX",
    "_PAGE_BIT_PAT",
    "_PAGE_BIT_PAT_LARGE",
    "_PAGE_BIT_PCD",
    "_PAGE_BIT_PKEY_BIT0",
    "_PAGE_BIT_PKEY_BIT1",
    "_PAGE_BIT_PKEY_BIT2",
    "_PAGE_BIT_PKEY_BIT3",
    "_PAGE_BIT_PRESENT",
    "_PAGE_BIT_PROTNONE",
    "_PAGE_BIT_PSE",
    "_PAGE_BIT_PWT",
    "_PAGE_BIT_RW",
    "_PAGE_BIT_SAVED_DIRTY",
    "_PAGE_BIT_SOFTW1",
    "_PAGE_BIT_SOFTW2",
    "_PAGE_BIT_SOFTW3",
    "_PAGE_BIT_SOFTW4",
    "_PAGE_BIT_SOFTW5",
    "_PAGE_BIT_SOFT_DIRTY",
    "_PAGE_BIT_SPECIAL",
    "_PAGE_BIT_UFFD_WP",
    "_PAGE_BIT_USER",
    "_PAGE_CHG_MASK",
    "_PAGE_DEVMAP",
    "_PAGE_DIRTY",
    "_PAGE_DIRTY_BITS",
    "_PAGE_ENC",
    "_PAGE_GLOBAL",
    "_PAGE_KNL_ERRATUM_MASK",
    "_PAGE_NX",
    "_PAGE_PAT",
    "_PAGE_PAT_LARGE",
    "_PAGE_PCD",
    "_PAGE_PKEY",
    "_PAGE_PKEY_BIT0",
    "_PAGE_PKEY_BIT1",
    "_PAGE_PKEY_BIT2",
    "_PAGE_PKEY_BIT3",
    "_PAGE_PKEY_MASK",
    "_PAGE_PRESENT",
    "_PAGE_PROTNONE",
    "_PAGE_PSE",
    "_PAGE_PWT",
    "_PAGE_RW",
    "_PAGE_SAVED_DIRTY",
    "_PAGE_SOFT_DIRTY",
    "_PAGE_SPECIAL",
    "_PAGE_TABLE",
    "_PAGE_UFFD_WP",
    "_PAGE_USER",
    "__PAGE_KERNEL",
    "__PAGE_KERNEL_EXEC",
    "__PAGE_KERNEL_LARGE",
    "__PAGE_KERNEL_LARGE_EXEC",
    "__PAGE_KERNEL_RO",
    "__PAGE_KERNEL_ROX",
    "__PHYSICAL_MASK_SHIFT",
    "__PHYSICAL_START",
    "__START_KERNEL",
    "__VIRTUAL_MASK_SHIFT",
    "PgtableGeometry",
    "X86PgtableGeometry",
    "__START_KERNEL_map",
    "mk_pmd_sect_prot",
    "mk_pud_sect_prot",
    "p4d_bad",
    "p4d_none",
    "p4d_page_paddr",
    "p4d_present",
    "pgd_bad",
    "pgd_none",
    "pgd_page_paddr",
    "pgd_present",
    "pgprot_4k_2_large",
    "pgprot_large_2_4k",
    "pmd_bad",
    "pmd_dirty",
    "pmd_flags",
    "pmd_leaf",
    "pmd_none",
    "pmd_page_paddr",
    "pmd_pfn_mask",
    "pmd_pgprot",
    "pmd_present",
    "pmd_table",
    "pmd_valid",
    "pmd_write",
    "pmd_young",
    "pte_dirty",
    "pte_exec",
    "pte_flags",
    "pte_flags_pkey",
    "pte_mkclean",
    "pte_mkcont",
    "pte_mkdirty",
    "pte_mkold",
    "pte_mkspecial",
    "pte_mkwrite",
    "pte_mkwrite_novma",
    "pte_mkyoung",
    "pte_modify",
    "pte_none",
    "pte_pgprot",
    "pte_phys",
    "pte_pkey",
    "pte_present",
    "pte_protnone",
    "pte_same",
    "pte_set_pkey",
    "pte_special",
    "pte_user",
    "pte_valid",
    "pte_valid_not_user",
    "pte_write",
    "pte_wrprotect",
    "pte_young",
    "ptep_access_flags_merge",
    "ptes_dirty_mask",
    "ptes_mkclean",
    "ptes_mkcont",
    "ptes_mkold",
    "ptes_none_mask",
    "ptes_pgprot",
    "ptes_phys",
    "ptes_pkey",
    "ptes_present_mask",
    "ptes_set_pageattr",
    "ptes_set_pkey",
    "ptes_special_mask",
    "ptes_user_normal_all",
    "ptes_valid_mask",
    "ptes_valid_not_user_mask",
    "ptes_write_mask",
    "ptes_wrprotect",
    "ptes_young_mask",
    "pud_bad",
    "pud_dirty",
    "pud_flags",
    "pud_leaf",
    "pud_none",
    "pud_page_paddr",
    "pud_pfn_mask",
    "pud_pgprot",
    "pud_present",
    "pud_table",
    "pud_valid",
    "pud_write",
    "pud_young",
    "vm_get_page_prot",
]

U64Array = npt.NDArray[np.uint64]
BoolArray = npt.NDArray[np.bool_]

U64_MAX = (1 << 64) - 1


def _u64(x: int) -> int:
    return x & U64_MAX


# --- descriptor bits (pgtable_types.h; SDM Vol. 3 §4.5 tables 4-15..4-20) -------------------------

_PAGE_BIT_PRESENT = 0  # pgtable_types.h: is present
_PAGE_BIT_RW = 1  # pgtable_types.h: writeable
_PAGE_BIT_USER = 2  # pgtable_types.h: userspace addressable
_PAGE_BIT_PWT = 3  # pgtable_types.h: page write through
_PAGE_BIT_PCD = 4  # pgtable_types.h: page cache disabled
_PAGE_BIT_ACCESSED = 5  # pgtable_types.h: set by the walker
_PAGE_BIT_DIRTY = 6  # pgtable_types.h: set by a write (leaf only)
_PAGE_BIT_PSE = 7  # pgtable_types.h: 2 MiB / 1 GiB leaf (PDE / PDPTE)
_PAGE_BIT_PAT = 7  # pgtable_types.h: PAT index bit 2 of a 4 KiB PTE (same bit as PSE)
_PAGE_BIT_GLOBAL = 8  # pgtable_types.h: global TLB entry
_PAGE_BIT_SOFTW1 = 9  # pgtable_types.h: available for software
_PAGE_BIT_SOFTW2 = 10  # pgtable_types.h
_PAGE_BIT_SOFTW3 = 11  # pgtable_types.h
_PAGE_BIT_PAT_LARGE = 12  # pgtable_types.h: PAT bit of a 2 MiB / 1 GiB leaf
_PAGE_BIT_SOFTW4 = 57  # pgtable_types.h
_PAGE_BIT_SOFTW5 = 58  # pgtable_types.h
_PAGE_BIT_PKEY_BIT0 = 59  # pgtable_types.h: protection key bit 0 (spec §3.1)
_PAGE_BIT_PKEY_BIT1 = 60  # pgtable_types.h
_PAGE_BIT_PKEY_BIT2 = 61  # pgtable_types.h
_PAGE_BIT_PKEY_BIT3 = 62  # pgtable_types.h
_PAGE_BIT_NX = 63  # pgtable_types.h: no execute (EFER.NXE)

_PAGE_BIT_SPECIAL = _PAGE_BIT_SOFTW1  # pgtable_types.h
_PAGE_BIT_CPA_TEST = _PAGE_BIT_SOFTW1  # pgtable_types.h (CPA self-test marker)
_PAGE_BIT_UFFD_WP = _PAGE_BIT_SOFTW2  # pgtable_types.h
_PAGE_BIT_SOFT_DIRTY = _PAGE_BIT_SOFTW3  # pgtable_types.h
_PAGE_BIT_SAVED_DIRTY = _PAGE_BIT_SOFTW5  # pgtable_types.h (x86-64, shadow stacks)
#: A non-present entry with this bit set is a PROT_NONE mapping (pgtable_types.h).
_PAGE_BIT_PROTNONE = _PAGE_BIT_GLOBAL

_PAGE_PRESENT = 1 << _PAGE_BIT_PRESENT
_PAGE_RW = 1 << _PAGE_BIT_RW
_PAGE_USER = 1 << _PAGE_BIT_USER
_PAGE_PWT = 1 << _PAGE_BIT_PWT
_PAGE_PCD = 1 << _PAGE_BIT_PCD
_PAGE_ACCESSED = 1 << _PAGE_BIT_ACCESSED
_PAGE_DIRTY = 1 << _PAGE_BIT_DIRTY
_PAGE_PSE = 1 << _PAGE_BIT_PSE
_PAGE_GLOBAL = 1 << _PAGE_BIT_GLOBAL
_PAGE_PAT = 1 << _PAGE_BIT_PAT
_PAGE_PAT_LARGE = 1 << _PAGE_BIT_PAT_LARGE
_PAGE_SPECIAL = 1 << _PAGE_BIT_SPECIAL
_PAGE_PKEY_BIT0 = 1 << _PAGE_BIT_PKEY_BIT0
_PAGE_PKEY_BIT1 = 1 << _PAGE_BIT_PKEY_BIT1
_PAGE_PKEY_BIT2 = 1 << _PAGE_BIT_PKEY_BIT2
_PAGE_PKEY_BIT3 = 1 << _PAGE_BIT_PKEY_BIT3
_PAGE_PKEY_MASK = _PAGE_PKEY_BIT0 | _PAGE_PKEY_BIT1 | _PAGE_PKEY_BIT2 | _PAGE_PKEY_BIT3
_PAGE_NX = 1 << _PAGE_BIT_NX
_PAGE_PROTNONE = 1 << _PAGE_BIT_PROTNONE
#: Tested by pte_dirty/cleared by pte_mkclean; only *set* with user shadow stacks (not modelled).
_PAGE_SAVED_DIRTY = 1 << _PAGE_BIT_SAVED_DIRTY
_PAGE_DIRTY_BITS = _PAGE_DIRTY | _PAGE_SAVED_DIRTY  # pgtable_types.h (x86-64)
#: Configured out in the model (CONFIG_MEM_SOFT_DIRTY, userfaultfd WP, ZONE_DEVICE, SME/TDX).
_PAGE_SOFT_DIRTY = 0
_PAGE_UFFD_WP = 0
_PAGE_DEVMAP = 0
_PAGE_ENC = 0
_PAGE_CC = 0
#: Knights Landing may set A/D in a not-present entry: ``*_none`` ignore them (pgtable_types.h).
_PAGE_KNL_ERRATUM_MASK = _PAGE_DIRTY | _PAGE_ACCESSED

__PHYSICAL_MASK_SHIFT = 52  # page_64_types.h
__VIRTUAL_MASK_SHIFT = 47  # page_64_types.h (4-level)
_PHYSICAL_MASK = (1 << __PHYSICAL_MASK_SHIFT) - 1  # page_types.h __PHYSICAL_MASK
_PAGE_SHIFT = 12  # page_types.h
_PMD_SHIFT = 21  # pgtable_64_types.h
_PUD_SHIFT = 30  # pgtable_64_types.h
_PGDIR_SHIFT = 39  # pgtable_64_types.h (4-level)
#: ``PHYSICAL_PAGE_MASK``: output-address bits 51:12 (pgtable_types.h ``PTE_PFN_MASK``).
PTE_PFN_MASK = _PHYSICAL_MASK & ~((1 << _PAGE_SHIFT) - 1)
PTE_FLAGS_MASK = _u64(~PTE_PFN_MASK)  # pgtable_types.h
#: Output-address bits of a 2 MiB / 1 GiB leaf (page_types.h).
PHYSICAL_PMD_PAGE_MASK = _PHYSICAL_MASK & ~((1 << _PMD_SHIFT) - 1)
PHYSICAL_PUD_PAGE_MASK = _PHYSICAL_MASK & ~((1 << _PUD_SHIFT) - 1)

#: The bits ``pte_modify`` keeps from the old entry (pgtable_types.h).  The pkey
#: and NX bits are *not* in it: mprotect() replaces them from the new pgprot.
_PAGE_CHG_MASK = (
    PTE_PFN_MASK
    | _PAGE_PCD
    | _PAGE_PWT
    | _PAGE_SPECIAL
    | _PAGE_ACCESSED
    | _PAGE_DIRTY_BITS
    | _PAGE_SOFT_DIRTY
    | _PAGE_DEVMAP
    | _PAGE_CC
    | _PAGE_UFFD_WP
)


def _PAGE_PKEY(pkey: int) -> int:
    """The leaf bits of protection key ``pkey`` (PKS series ``_PAGE_PKEY(pkey)``)."""
    if not 0 <= pkey < 16:
        raise ValueError(f"x86 pkey {pkey} out of range 0..15")
    return pkey << _PAGE_BIT_PKEY_BIT0


# --- protections (pgtable_types.h; no PTI, no SME: __pgprot_mask keeps every bit) --------------

__PP = _PAGE_PRESENT
__RW = _PAGE_RW
_USR = _PAGE_USER
___A = _PAGE_ACCESSED
___D = _PAGE_DIRTY
___G = _PAGE_GLOBAL
__NX = _PAGE_NX
_PSE = _PAGE_PSE

#: Table entries (what pXd_populate store): user and kernel (pgtable_types.h).
_PAGE_TABLE = __PP | __RW | _USR | ___A | ___D | _PAGE_ENC
_KERNPG_TABLE = __PP | __RW | ___A | ___D | _PAGE_ENC

__PAGE_KERNEL = __PP | __RW | ___A | __NX | ___D | ___G
__PAGE_KERNEL_EXEC = __PP | __RW | ___A | ___D | ___G
__PAGE_KERNEL_RO = __PP | ___A | __NX | ___G
__PAGE_KERNEL_ROX = __PP | ___A | ___G
__PAGE_KERNEL_LARGE = __PP | __RW | ___A | __NX | ___D | _PSE | ___G
__PAGE_KERNEL_LARGE_EXEC = __PP | __RW | ___A | ___D | _PSE | ___G

PAGE_KERNEL = __PAGE_KERNEL | _PAGE_ENC
PAGE_KERNEL_RO = __PAGE_KERNEL_RO | _PAGE_ENC
PAGE_KERNEL_EXEC = __PAGE_KERNEL_EXEC | _PAGE_ENC
PAGE_KERNEL_ROX = __PAGE_KERNEL_ROX | _PAGE_ENC
PAGE_KERNEL_LARGE = __PAGE_KERNEL_LARGE | _PAGE_ENC
PAGE_KERNEL_LARGE_EXEC = __PAGE_KERNEL_LARGE_EXEC | _PAGE_ENC

#: PROT_NONE: not present, ``_PAGE_PROTNONE`` (= G) marks it present to software.
PAGE_NONE = ___A | ___G
PAGE_SHARED = __PP | __RW | _USR | ___A | __NX
PAGE_SHARED_EXEC = __PP | __RW | _USR | ___A
PAGE_COPY_NOEXEC = __PP | _USR | ___A | __NX
PAGE_COPY_EXEC = __PP | _USR | ___A
PAGE_COPY = PAGE_COPY_NOEXEC
PAGE_READONLY = __PP | _USR | ___A | __NX
PAGE_READONLY_EXEC = __PP | _USR | ___A

#: Fixmap protections (fixmap.h).
FIXMAP_PAGE_NORMAL = PAGE_KERNEL
FIXMAP_PAGE_RO = PAGE_KERNEL_RO


def pgprot_4k_2_large(prot: int) -> int:
    """``pgprot_4k_2_large``: move the PAT bit from bit 7 (4 KiB) to bit 12 (large leaf)."""
    pat = prot & _PAGE_PAT
    return (prot & ~(_PAGE_PAT | _PAGE_PAT_LARGE)) | (_PAGE_PAT_LARGE if pat else 0)


def pgprot_large_2_4k(prot: int) -> int:
    """``pgprot_large_2_4k``: move the PAT bit from bit 12 back to bit 7 (PSE dropped)."""
    pat = prot & _PAGE_PAT_LARGE
    return (prot & ~(_PAGE_PAT | _PAGE_PAT_LARGE)) | (_PAGE_PAT if pat else 0)


def mk_pmd_sect_prot(prot: int) -> int:
    """A page protection turned into a 2 MiB-leaf one: PAT moved, ``| _PAGE_PSE``.

    (arm64 name; x86 spells it ``pmd_mkhuge(pfn_pmd(pfn, pgprot_4k_2_large(prot)))``.)
    """
    return pgprot_4k_2_large(prot) | _PAGE_PSE


def mk_pud_sect_prot(prot: int) -> int:
    """A page protection turned into a 1 GiB-leaf one (as :func:`mk_pmd_sect_prot`)."""
    return pgprot_4k_2_large(prot) | _PAGE_PSE


# --- memory layout (page_64_types.h, pgtable_64_types.h, fixmap.h, mm.rst; 4-level, no KASLR) --

#: Direct map base (page_64_types.h ``__PAGE_OFFSET_BASE_L4``).
PAGE_OFFSET = 0xFFFF_8880_0000_0000
#: 4-level: 46 bits of physical address space, the direct map's size (sparsemem.h).
MAX_PHYSMEM_BITS = 46
#: ``__VMALLOC_BASE_L4`` and ``VMALLOC_SIZE_TB_L4`` (pgtable_64_types.h).
VMALLOC_START = 0xFFFF_C900_0000_0000
VMALLOC_SIZE_TB = 32
#: Inclusive, as Linux defines it (pgtable_64_types.h): ``VMALLOC_START + 32 TiB - 1``.
VMALLOC_END = VMALLOC_START + (VMALLOC_SIZE_TB << 40) - 1
#: ``__VMEMMAP_BASE_L4`` (pgtable_64_types.h); 1 TiB (mm.rst).
VMEMMAP_START = 0xFFFF_EA00_0000_0000
_VMEMMAP_SIZE = 1 << 40
#: LDT remap for PTI (``LDT_PGD_ENTRY_L4`` = -240, pgtable_64_types.h); constant only.
LDT_BASE_ADDR = 0xFFFF_8800_0000_0000
#: ``CPU_ENTRY_AREA_PGD`` = -4 (cpu_entry_area.h / pgtable_areas.h); constant only.
CPU_ENTRY_AREA_BASE = 0xFFFF_FE00_0000_0000
#: ``ESPFIX_PGD_ENTRY`` = -2 (pgtable_64_types.h); constant only.
ESPFIX_BASE_ADDR = 0xFFFF_FF00_0000_0000
#: EFI runtime region ``[EFI_VA_END, EFI_VA_START)`` (pgtable_64_types.h); constant only.
EFI_VA_START = _u64(-4 << 30)
EFI_VA_END = _u64(-68 << 30)
#: Kernel text mapping base (page_64_types.h).
__START_KERNEL_map = 0xFFFF_FFFF_8000_0000
#: ``CONFIG_PHYSICAL_START`` default (page_types.h ``__PHYSICAL_START``).
__PHYSICAL_START = 0x100_0000
#: ``CONFIG_PHYSICAL_ALIGN`` default: the image is loaded 2 MiB aligned (Kconfig).
_PHYSICAL_ALIGN = 0x20_0000
#: ``LOAD_PHYSICAL_ADDR`` (boot.h): ``__PHYSICAL_START`` rounded up to the alignment.
LOAD_PHYSICAL_ADDR = (__PHYSICAL_START + _PHYSICAL_ALIGN - 1) & ~(_PHYSICAL_ALIGN - 1)
#: VA of ``_text`` (page_types.h ``__START_KERNEL``).
__START_KERNEL = __START_KERNEL_map + __PHYSICAL_START
# Aliases usable inside the class body (``__name`` there would be name-mangled).
_START_KERNEL_MAP = __START_KERNEL_map
_START_KERNEL = __START_KERNEL
_VIRTUAL_MASK_SHIFT = __VIRTUAL_MASK_SHIFT
#: Without ``CONFIG_RANDOMIZE_BASE``: 512 MiB (page_64_types.h).
KERNEL_IMAGE_SIZE = 512 << 20
#: pgtable_64_types.h.
MODULES_VADDR = __START_KERNEL_map + KERNEL_IMAGE_SIZE
MODULES_END = 0xFFFF_FFFF_FF00_0000
#: The legacy vsyscall page (uapi/asm/vsyscall.h ``VSYSCALL_ADDR`` = -10 MiB).
VSYSCALL_ADDR = _u64(-10 << 20)
#: fixmap.h (x86-64): ``round_up(VSYSCALL_ADDR + PAGE_SIZE, PMD_SIZE) - PAGE_SIZE``.
FIXADDR_TOP = (
    ((VSYSCALL_ADDR + (1 << _PAGE_SHIFT)) + (1 << _PMD_SHIFT) - 1) & ~((1 << _PMD_SHIFT) - 1)
) - (1 << _PAGE_SHIFT)
#: ``TASK_SIZE_MAX`` (page_64_types.h): the user half minus the guard page.
TASK_SIZE_MAX = (1 << __VIRTUAL_MASK_SHIFT) - (1 << _PAGE_SHIFT)

# --- fixmap slots (fixmap.h ``enum fixed_addresses``, x86-64, reduced to the permanent slots a
# machine without OHCI1394/paravirt/APEI has; x86 writes page tables through the direct map, so
# it has no FIX_PTE/FIX_PMD/FIX_PUD/FIX_PGD slots) ------------------------------------------------
VSYSCALL_PAGE = (FIXADDR_TOP - VSYSCALL_ADDR) >> _PAGE_SHIFT
FIX_DBGP_BASE = VSYSCALL_PAGE + 1
FIX_EARLYCON_MEM_BASE = VSYSCALL_PAGE + 2
FIX_APIC_BASE = VSYSCALL_PAGE + 3
FIX_IO_APIC_BASE_0 = VSYSCALL_PAGE + 4
#: ``MAX_IO_APICS`` = 128 I/O APIC slots (apicdef.h).
_END_OF_PERMANENT_FIXED_ADDRESSES = FIX_IO_APIC_BASE_0 + 128

#: ``tlb_single_page_flush_ceiling`` (arch/x86/mm/tlb.c): a range of *more* than
#: 33 pages is flushed whole, so the full flush starts at 34 pages.
_TLB_SINGLE_PAGE_FLUSH_CEILING = 33
#: log2(sizeof(struct page)).
_STRUCT_PAGE_SHIFT = 6
#: sparsemem.h (x86-64).
_SECTION_SIZE_BITS = 27


# --- pte value helpers (pgtable.h) ---------------------------------------------------------------


def pte_flags(pte: int) -> int:
    """``pte_flags``: everything but the pfn."""
    return pte & PTE_FLAGS_MASK


def pte_none(pte: int) -> bool:
    """``pte_none``: no bits set except possibly A/D (the KNL erratum)."""
    return not pte & ~_PAGE_KNL_ERRATUM_MASK


def pte_valid(pte: int) -> bool:
    """The hardware present bit (arm64 ``pte_valid``; x86 ``pte_flags & _PAGE_PRESENT``)."""
    return bool(pte & _PAGE_PRESENT)


def pte_protnone(pte: int) -> bool:
    """``pte_protnone``: a PROT_NONE entry (PROTNONE set, PRESENT clear)."""
    return (pte & (_PAGE_PROTNONE | _PAGE_PRESENT)) == _PAGE_PROTNONE


def pte_present(pte: int) -> bool:
    """``pte_present``: present, or PROT_NONE."""
    return bool(pte & (_PAGE_PRESENT | _PAGE_PROTNONE))


def pte_write(pte: int) -> bool:
    """``pte_write``: the R/W bit (no shadow-stack case)."""
    return bool(pte & _PAGE_RW)


def pte_dirty(pte: int) -> bool:
    """``pte_dirty``: Dirty or SavedDirty."""
    return bool(pte & _PAGE_DIRTY_BITS)


def pte_young(pte: int) -> bool:
    """``pte_young``: the Accessed bit."""
    return bool(pte & _PAGE_ACCESSED)


def pte_special(pte: int) -> bool:
    """``pte_special``."""
    return bool(pte & _PAGE_SPECIAL)


def pte_user(pte: int) -> bool:
    """The U/S bit of the entry (x86 ``pte_flags(pte) & _PAGE_USER``)."""
    return bool(pte & _PAGE_USER)


def pte_exec(pte: int) -> bool:
    """``pte_exec``: NX clear."""
    return not pte & _PAGE_NX


def pte_valid_not_user(pte: int) -> bool:
    """A present supervisor entry (the arm64 barrier condition; x86 has no such barrier)."""
    return (pte & (_PAGE_PRESENT | _PAGE_USER)) == _PAGE_PRESENT


def pte_same(a: int, b: int) -> bool:
    """``pte_same``."""
    return a == b


def pte_phys(pte: int) -> int:
    """The output address of a 4 KiB entry (``pte_val & PTE_PFN_MASK``)."""
    return pte & PTE_PFN_MASK


def pte_pgprot(pte: int) -> int:
    """``pte_pgprot``: ``pte_flags``."""
    return pte & PTE_FLAGS_MASK


def pte_mkwrite_novma(pte: int) -> int:
    """``pte_mkwrite_novma``: set R/W."""
    return pte | _PAGE_RW


#: ``pte_mkwrite(pte, vma)`` without the shadow-stack VMA case (its
#: ``pte_clear_saveddirty`` is a no-op without X86_FEATURE_USER_SHSTK).
pte_mkwrite = pte_mkwrite_novma


def pte_wrprotect(pte: int) -> int:
    """``pte_wrprotect``: clear R/W (``pte_mksaveddirty`` is a no-op without shadow stacks)."""
    return pte & ~_PAGE_RW


def pte_mkdirty(pte: int) -> int:
    """``pte_mkdirty``: set Dirty (and ``_PAGE_SOFT_DIRTY``, configured out)."""
    return pte | _PAGE_DIRTY | _PAGE_SOFT_DIRTY


def pte_mkclean(pte: int) -> int:
    """``pte_mkclean``: clear Dirty and SavedDirty."""
    return pte & ~_PAGE_DIRTY_BITS


def pte_mkyoung(pte: int) -> int:
    """``pte_mkyoung``: set Accessed."""
    return pte | _PAGE_ACCESSED


def pte_mkold(pte: int) -> int:
    """``pte_mkold``: clear Accessed."""
    return pte & ~_PAGE_ACCESSED


def pte_mkspecial(pte: int) -> int:
    """``pte_mkspecial``."""
    return pte | _PAGE_SPECIAL


def pte_mkcont(pte: int) -> int:
    """No contiguous hint on x86: the identity (``ARCH_HAS_CONT_PTE`` is False)."""
    return pte


def pte_modify(pte: int, newprot: int) -> int:
    """``pte_modify(pte, newprot)``: keep ``_PAGE_CHG_MASK`` (pfn, A, D, special, cache
    bits), take everything else from ``newprot`` — including NX and the pkey bits.

    With R/W going away a Dirty entry would become Write=0,Dirty=1; Linux moves
    Dirty to SavedDirty there only with user shadow stacks, so here it stays.
    """
    return (pte & _PAGE_CHG_MASK) | (newprot & ~_PAGE_CHG_MASK & U64_MAX)


def ptep_access_flags_merge(old: int, entry: int) -> int:
    """What ``ptep_set_access_flags`` stores when ``entry`` differs: ``entry`` itself.

    (arch/x86/mm/pgtable.c: ``if (changed && dirty) set_pte(ptep, entry)``.)
    """
    return entry


def pte_flags_pkey(flags: int) -> int:
    """``pte_flags_pkey(pte_flags)``: the 4-bit protection key of a leaf."""
    return (flags & _PAGE_PKEY_MASK) >> _PAGE_BIT_PKEY_BIT0


def pte_pkey(pte: int) -> int:
    """The protection key of a leaf entry (``pte_flags_pkey(pte_flags(pte))``)."""
    return (pte >> _PAGE_BIT_PKEY_BIT0) & 0xF


def pte_set_pkey(pte: int, pkey: int) -> int:
    """``pte`` with its key field replaced by ``pkey`` (the PKS series' ``set_memory_pks`` step)."""
    return (pte & ~_PAGE_PKEY_MASK) | _PAGE_PKEY(pkey)


# --- pmd / pud / p4d / pgd value helpers (real entries; folding lives in the walk helpers) -------


def pmd_pfn_mask(pmd: int) -> int:
    """``pmd_pfn_mask``: the 2 MiB-aligned mask for a PSE leaf, else ``PTE_PFN_MASK``."""
    return PHYSICAL_PMD_PAGE_MASK if pmd & _PAGE_PSE else PTE_PFN_MASK


def pmd_flags(pmd: int) -> int:
    """``pmd_flags``: everything but the pfn (bit 12 = PAT of a PSE leaf is a flag)."""
    return pmd & ~pmd_pfn_mask(pmd) & U64_MAX


def pud_pfn_mask(pud: int) -> int:
    """``pud_pfn_mask``: the 1 GiB-aligned mask for a PSE leaf, else ``PTE_PFN_MASK``."""
    return PHYSICAL_PUD_PAGE_MASK if pud & _PAGE_PSE else PTE_PFN_MASK


def pud_flags(pud: int) -> int:
    """``pud_flags``."""
    return pud & ~pud_pfn_mask(pud) & U64_MAX


def pmd_none(pmd: int) -> bool:
    """``pmd_none``: zero but for A/D (KNL erratum)."""
    return not pmd & ~_PAGE_KNL_ERRATUM_MASK


def pmd_valid(pmd: int) -> bool:
    """The hardware present bit."""
    return bool(pmd & _PAGE_PRESENT)


def pmd_present(pmd: int) -> bool:
    """``pmd_present``: PRESENT, PROTNONE or PSE (a THP being split stays present)."""
    return bool(pmd_flags(pmd) & (_PAGE_PRESENT | _PAGE_PROTNONE | _PAGE_PSE))


def pmd_leaf(pmd: int) -> bool:
    """``pmd_leaf``: the PSE bit (x86 does not also test PRESENT here)."""
    return bool(pmd & _PAGE_PSE)


def pmd_table(pmd: int) -> bool:
    """A present entry pointing to a PTE table (PRESENT set, PSE clear)."""
    return (pmd & (_PAGE_PRESENT | _PAGE_PSE)) == _PAGE_PRESENT


def pmd_bad(pmd: int) -> bool:
    """``pmd_bad``: flags other than U/S and A differ from ``_KERNPG_TABLE`` (P|RW|D)."""
    return (pmd_flags(pmd) & ~(_PAGE_USER | _PAGE_ACCESSED)) != (_KERNPG_TABLE & ~_PAGE_ACCESSED)


def pmd_write(pmd: int) -> bool:
    """``pmd_write``."""
    return bool(pmd & _PAGE_RW)


def pmd_dirty(pmd: int) -> bool:
    """``pmd_dirty``."""
    return bool(pmd & _PAGE_DIRTY_BITS)


def pmd_young(pmd: int) -> bool:
    """``pmd_young``."""
    return bool(pmd & _PAGE_ACCESSED)


def pmd_page_paddr(pmd: int) -> int:
    """Physical address of the PTE table, or of a 2 MiB leaf (``pmd_val & pmd_pfn_mask``)."""
    return pmd & pmd_pfn_mask(pmd)


def pmd_pgprot(pmd: int) -> int:
    """``pmd_pgprot``: ``pmd_flags``."""
    return pmd_flags(pmd)


def pud_none(pud: int) -> bool:
    """``pud_none``: zero but for A/D (KNL erratum)."""
    return not pud & ~_PAGE_KNL_ERRATUM_MASK


def pud_valid(pud: int) -> bool:
    """The hardware present bit."""
    return bool(pud & _PAGE_PRESENT)


def pud_present(pud: int) -> bool:
    """``pud_present``: the PRESENT bit."""
    return bool(pud & _PAGE_PRESENT)


def pud_leaf(pud: int) -> bool:
    """``pud_leaf``: PRESENT and PSE (a 1 GiB page)."""
    return (pud & (_PAGE_PSE | _PAGE_PRESENT)) == (_PAGE_PSE | _PAGE_PRESENT)


def pud_table(pud: int) -> bool:
    """A present entry pointing to a PMD table."""
    return (pud & (_PAGE_PRESENT | _PAGE_PSE)) == _PAGE_PRESENT


def pud_bad(pud: int) -> bool:
    """``pud_bad``: a flag outside ``_KERNPG_TABLE | _PAGE_USER`` is set (PSE, NX, G …)."""
    return bool(pud_flags(pud) & ~(_KERNPG_TABLE | _PAGE_USER))


def pud_write(pud: int) -> bool:
    """``pud_write``."""
    return bool(pud & _PAGE_RW)


def pud_dirty(pud: int) -> bool:
    """``pud_dirty``."""
    return bool(pud & _PAGE_DIRTY_BITS)


def pud_young(pud: int) -> bool:
    """``pud_young``."""
    return bool(pud & _PAGE_ACCESSED)


def pud_page_paddr(pud: int) -> int:
    """Physical address of the PMD table, or of a 1 GiB leaf."""
    return pud & pud_pfn_mask(pud)


def pud_pgprot(pud: int) -> int:
    """``pud_pgprot``: ``pud_flags``."""
    return pud_flags(pud)


def p4d_none(p4d: int) -> bool:
    """``p4d_none`` of a real entry: zero but for A/D."""
    return not p4d & ~_PAGE_KNL_ERRATUM_MASK


def p4d_present(p4d: int) -> bool:
    """``p4d_present``: the PRESENT bit."""
    return bool(p4d & _PAGE_PRESENT)


def p4d_bad(p4d: int) -> bool:
    """``p4d_bad``: a flag outside ``_KERNPG_TABLE | _PAGE_USER`` is set (no PTI: NX counts)."""
    return bool(p4d & PTE_FLAGS_MASK & ~(_KERNPG_TABLE | _PAGE_USER))


def p4d_page_paddr(p4d: int) -> int:
    """Physical address of the PUD table (``p4d_pgtable``'s ``__pa``)."""
    return p4d & PTE_PFN_MASK


def pgd_none(pgd: int) -> bool:
    """``pgd_none`` of a real (5-level) pgd entry; with 4 levels the walk helpers fold it."""
    return pgd == 0


def pgd_present(pgd: int) -> bool:
    """``pgd_present`` of a real entry: the PRESENT bit."""
    return bool(pgd & _PAGE_PRESENT)


def pgd_bad(pgd: int) -> bool:
    """``pgd_bad`` of a real entry (as :func:`p4d_bad`)."""
    return bool(pgd & PTE_FLAGS_MASK & ~(_KERNPG_TABLE | _PAGE_USER))


def pgd_page_paddr(pgd: int) -> int:
    """Physical address of the next-level table."""
    return pgd & PTE_PFN_MASK


# --- whole-table (vectorised) helpers ------------------------------------------------------------

_ZERO = np.uint64(0)
_P = np.uint64(_PAGE_PRESENT)
_PN = np.uint64(_PAGE_PRESENT | _PAGE_PROTNONE)
_RW = np.uint64(_PAGE_RW)
_US = np.uint64(_PAGE_USER)
_A = np.uint64(_PAGE_ACCESSED)
_DB = np.uint64(_PAGE_DIRTY_BITS)
_SP = np.uint64(_PAGE_SPECIAL)
_KNL = np.uint64(U64_MAX & ~_PAGE_KNL_ERRATUM_MASK)
_PFN = np.uint64(PTE_PFN_MASK)
_FLAGS = np.uint64(PTE_FLAGS_MASK)
_PKEY = np.uint64(_PAGE_PKEY_MASK)
_P_US = np.uint64(_PAGE_PRESENT | _PAGE_USER)
_P_US_SP = np.uint64(_PAGE_PRESENT | _PAGE_USER | _PAGE_SPECIAL)


def _b(x: object) -> BoolArray:
    return np.asarray(x, dtype=np.bool_)


def ptes_none_mask(arr: U64Array) -> BoolArray:
    """Vectorised ``pte_none``."""
    return _b((arr & _KNL) == _ZERO)


def ptes_valid_mask(arr: U64Array) -> BoolArray:
    """Vectorised :func:`pte_valid` (PRESENT)."""
    return _b((arr & _P) != _ZERO)


def ptes_present_mask(arr: U64Array) -> BoolArray:
    """Vectorised ``pte_present`` (PRESENT or PROTNONE)."""
    return _b((arr & _PN) != _ZERO)


def ptes_write_mask(arr: U64Array) -> BoolArray:
    """Vectorised ``pte_write``."""
    return _b((arr & _RW) != _ZERO)


def ptes_dirty_mask(arr: U64Array) -> BoolArray:
    """Vectorised ``pte_dirty``."""
    return _b((arr & _DB) != _ZERO)


def ptes_young_mask(arr: U64Array) -> BoolArray:
    """Vectorised ``pte_young``."""
    return _b((arr & _A) != _ZERO)


def ptes_special_mask(arr: U64Array) -> BoolArray:
    """Vectorised ``pte_special``."""
    return _b((arr & _SP) != _ZERO)


def ptes_valid_not_user_mask(arr: U64Array) -> BoolArray:
    """Vectorised :func:`pte_valid_not_user`."""
    return _b((arr & _P_US) == _P)


def ptes_user_normal_all(arr: U64Array, out: U64Array) -> bool:
    """True iff every entry is PRESENT, USER and not special (``out``: scratch, ``len(arr)``)."""
    np.bitwise_and(arr, _P_US_SP, out=out)
    return bool((out == _P_US).all())


def ptes_phys(arr: U64Array) -> U64Array:
    """Vectorised :func:`pte_phys`."""
    return arr & _PFN


def ptes_pgprot(arr: U64Array) -> U64Array:
    """Vectorised ``pte_pgprot``."""
    return arr & _FLAGS


def ptes_wrprotect(arr: U64Array) -> U64Array:
    """Vectorised ``pte_wrprotect``."""
    return arr & ~_RW


def ptes_mkold(arr: U64Array) -> U64Array:
    """Vectorised ``pte_mkold``."""
    return arr & ~_A


def ptes_mkclean(arr: U64Array) -> U64Array:
    """Vectorised ``pte_mkclean``."""
    return arr & ~_DB


def ptes_mkcont(arr: U64Array) -> U64Array:
    """No contiguous hint on x86: an unchanged copy."""
    return arr.copy()


def ptes_set_pageattr(arr: U64Array, set_mask: int, clear_mask: int) -> U64Array:
    """Vectorised CPA step (pageattr.c ``__change_page_attr``): ``(val & ~clear) | set``."""
    return (arr & ~np.uint64(clear_mask)) | np.uint64(set_mask)


def ptes_pkey(arr: U64Array) -> U64Array:
    """Vectorised :func:`pte_pkey`."""
    return (arr & _PKEY) >> np.uint64(_PAGE_BIT_PKEY_BIT0)


def ptes_set_pkey(arr: U64Array, pkey: int) -> U64Array:
    """Vectorised :func:`pte_set_pkey`."""
    return (arr & ~_PKEY) | np.uint64(_PAGE_PKEY(pkey))


# --- protection_map and vm_get_page_prot (arch/x86/mm/pgprot.c) ----------------------------------

_PROTECTION_MAP: tuple[int, ...] = (
    PAGE_NONE,  # VM_NONE
    PAGE_READONLY,  # VM_READ
    PAGE_COPY,  # VM_WRITE
    PAGE_COPY,  # VM_WRITE | VM_READ
    PAGE_READONLY_EXEC,  # VM_EXEC
    PAGE_READONLY_EXEC,  # VM_EXEC | VM_READ
    PAGE_COPY_EXEC,  # VM_EXEC | VM_WRITE
    PAGE_COPY_EXEC,  # VM_EXEC | VM_WRITE | VM_READ
    PAGE_NONE,  # VM_SHARED
    PAGE_READONLY,  # VM_SHARED | VM_READ
    PAGE_SHARED,  # VM_SHARED | VM_WRITE
    PAGE_SHARED,  # VM_SHARED | VM_WRITE | VM_READ
    PAGE_READONLY_EXEC,  # VM_SHARED | VM_EXEC
    PAGE_READONLY_EXEC,  # VM_SHARED | VM_EXEC | VM_READ
    PAGE_SHARED_EXEC,  # VM_SHARED | VM_EXEC | VM_WRITE
    PAGE_SHARED_EXEC,  # VM_SHARED | VM_EXEC | VM_WRITE | VM_READ
)


def vm_get_page_prot(k: Kernel | None, vm_flags: int) -> int:
    """``vm_get_page_prot(vm_flags)`` (arch/x86/mm/pgprot.c).

    ``protection_map[vm_flags & (VM_READ|VM_WRITE|VM_EXEC|VM_SHARED)]`` plus
    ``_PAGE_PKEY_BIT0..3`` from ``VM_PKEY_BIT0..3``.  As on x86 (where the
    condition is ``CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS``, a build-time
    one), the key bits are copied whatever the machine: a VMA only carries
    key bits once ``pkey_mprotect`` accepted the key.  ``k`` is unused.
    """
    prot = _PROTECTION_MAP[vm_flags & (VM_READ | VM_WRITE | VM_EXEC | VM_SHARED)]
    if vm_flags & VM_PKEY_BIT0:
        prot |= _PAGE_PKEY_BIT0
    if vm_flags & VM_PKEY_BIT1:
        prot |= _PAGE_PKEY_BIT1
    if vm_flags & VM_PKEY_BIT2:
        prot |= _PAGE_PKEY_BIT2
    if vm_flags & VM_PKEY_BIT3:
        prot |= _PAGE_PKEY_BIT3
    return prot


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
