"""arm64 page-table value helpers (``arch/arm64/include/asm/pgtable.h``).

``pte_*``, ``pmd_*``, ``pud_*``, ``p4d_*``, ``pgd_*`` on plain ``int`` values, their
whole-table (``numpy.uint64`` array) counterparts ``ptes_*``,
``pgattr_change_is_safe`` (``arch/arm64/mm/mmu.c``) and ``vm_get_page_prot``
(``arch/arm64/mm/mmap.c``).  :class:`~kpkeys_sim.kernel.arch.arm64_pgtable.PgtableGeometry`
exposes them again as methods, and :mod:`kpkeys_sim.kernel.arch.arm64_pgtable`
re-exports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.arch.arm64_pgtable_hwdef import (
    MT_NORMAL,
    MT_NORMAL_TAGGED,
    P4D_TABLE_AF,
    P4D_TABLE_BIT,
    P4D_TABLE_PXN,
    P4D_TABLE_UXN,
    P4D_TYPE_TABLE,
    PMD_SECT_CONT,
    PMD_TABLE_AF,
    PMD_TABLE_PXN,
    PMD_TABLE_UXN,
    PMD_TYPE_MASK,
    PMD_TYPE_SECT,
    PMD_TYPE_TABLE,
    PTE_ADDR_MASK,
    PTE_AF,
    PTE_ATTRINDX_MASK,
    PTE_CONT,
    PTE_DIRTY,
    PTE_GP,
    PTE_NG,
    PTE_PRESENT_INVALID,
    PTE_PXN,
    PTE_RDONLY,
    PTE_SPECIAL,
    PTE_SWBITS_MASK,
    PTE_USER,
    PTE_UXN,
    PTE_VALID,
    PTE_WRITE,
    PUD_TABLE_AF,
    PUD_TABLE_PXN,
    PUD_TABLE_UXN,
    PUD_TYPE_MASK,
    PUD_TYPE_SECT,
    PUD_TYPE_TABLE,
    U64_MAX,
    _attrindx,
)
from kpkeys_sim.kernel.arch.arm64_pgtable_prot import _PROTECTION_MAP
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
)

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel

__all__ = [
    "mk_p4d_table",
    "mk_pmd_sect_prot",
    "mk_pmd_table",
    "mk_pud_sect_prot",
    "mk_pud_table",
    "p4d_bad",
    "p4d_none",
    "p4d_page_paddr",
    "p4d_present",
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
    "vm_get_page_prot",
]

U64Array = npt.NDArray[np.uint64]


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


# --- vm_get_page_prot (arch/arm64/mm/mmap.c) -------------------------------------------------


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
