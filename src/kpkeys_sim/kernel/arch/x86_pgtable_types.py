"""x86-64 page-table types: descriptor bits, masks, protections and the 4-level layout.

Sources (Linux, x86-64): ``arch/x86/include/asm/pgtable_types.h`` (``_PAGE_BIT_*``,
``_PAGE_*``, ``PAGE_*``, ``_PAGE_TABLE``/``_KERNPG_TABLE``, ``_PAGE_CHG_MASK``,
``pgprot_4k_2_large``), ``page_64_types.h`` and ``pgtable_64_types.h`` (the layout
constants), ``page_types.h``, ``fixmap.h`` (``FIXADDR_TOP``, ``enum fixed_addresses``),
``sparsemem.h``, ``arch/x86/mm/pgprot.c`` (``protection_map``) and
``arch/x86/mm/tlb.c`` (``tlb_single_page_flush_ceiling``).  The configuration
modelled and the layout table are in :mod:`kpkeys_sim.kernel.arch.x86_pgtable`,
which re-exports every public name of this module.
"""

from __future__ import annotations

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
    "__START_KERNEL_map",
    "pgprot_4k_2_large",
    "pgprot_large_2_4k",
]

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

# --- protection_map (arch/x86/mm/pgprot.c) -----------------------------------------------------

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
