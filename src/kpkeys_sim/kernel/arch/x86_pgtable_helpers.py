"""x86-64 page-table value helpers (``arch/x86/include/asm/pgtable.h``).

``pte_*``, ``pmd_*``, ``pud_*``, ``p4d_*``, ``pgd_*`` on plain ``int`` values, their
whole-table (``numpy.uint64`` array) counterparts ``ptes_*``, and
``vm_get_page_prot`` (``arch/x86/mm/pgprot.c``).  The bits they test live in
:mod:`kpkeys_sim.kernel.arch.x86_pgtable_types`;
:class:`~kpkeys_sim.kernel.arch.x86_pgtable.X86PgtableGeometry` exposes them again
as methods, and :mod:`kpkeys_sim.kernel.arch.x86_pgtable` re-exports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.arch.x86_pgtable_types import (
    _KERNPG_TABLE,
    _PAGE_ACCESSED,
    _PAGE_BIT_PKEY_BIT0,
    _PAGE_CHG_MASK,
    _PAGE_DIRTY,
    _PAGE_DIRTY_BITS,
    _PAGE_KNL_ERRATUM_MASK,
    _PAGE_NX,
    _PAGE_PKEY,
    _PAGE_PKEY_BIT0,
    _PAGE_PKEY_BIT1,
    _PAGE_PKEY_BIT2,
    _PAGE_PKEY_BIT3,
    _PAGE_PKEY_MASK,
    _PAGE_PRESENT,
    _PAGE_PROTNONE,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_SOFT_DIRTY,
    _PAGE_SPECIAL,
    _PAGE_USER,
    _PROTECTION_MAP,
    PHYSICAL_PMD_PAGE_MASK,
    PHYSICAL_PUD_PAGE_MASK,
    PTE_FLAGS_MASK,
    PTE_PFN_MASK,
    U64_MAX,
    pgprot_4k_2_large,
)
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


# --- mk_p?d_sect_prot (model names for pmd_mkhuge(pfn_pmd(..., pgprot_4k_2_large(prot)))) ------


def mk_pmd_sect_prot(prot: int) -> int:
    """A page protection turned into a 2 MiB-leaf one: PAT moved, ``| _PAGE_PSE``.

    (arm64 name; x86 spells it ``pmd_mkhuge(pfn_pmd(pfn, pgprot_4k_2_large(prot)))``.)
    """
    return pgprot_4k_2_large(prot) | _PAGE_PSE


def mk_pud_sect_prot(prot: int) -> int:
    """A page protection turned into a 1 GiB-leaf one (as :func:`mk_pmd_sect_prot`)."""
    return pgprot_4k_2_large(prot) | _PAGE_PSE


# --- vm_get_page_prot (arch/x86/mm/pgprot.c) ---------------------------------------------------


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
