"""arm64 page-table hardware definitions (``arch/arm64/include/asm/pgtable-hwdef.h``).

Descriptor bits (``PTE_*``, ``PMD_*``, ``PUD_*``, ``P4D_*``, ``PGD_*``), the memory
types (``MT_*``, ``asm/memory.h``), the contiguous-hint geometry, the fixmap slot
indices (``asm/fixmap.h``) and the layout sizes; the POIndex bits ``PTE_PO_IDX_*``
are re-exported from :mod:`kpkeys_sim.machine.arch.arm64_poe`.  Spec
pkeys-hardware.md §2.2.  :mod:`kpkeys_sim.kernel.arch.arm64_pgtable` re-exports every
public name of this module.
"""

from __future__ import annotations

from kpkeys_sim.machine.arch.arm64_poe import (
    PTE_PO_IDX_0,
    PTE_PO_IDX_1,
    PTE_PO_IDX_2,
    PTE_PO_IDX_MASK,
    PTE_PO_IDX_SHIFT,
)

__all__ = [
    "ARM64_CONT_PMD_SHIFT",
    "ARM64_CONT_PTE_SHIFT",
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
]

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
