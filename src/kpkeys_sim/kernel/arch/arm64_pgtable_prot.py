"""arm64 page protections (``arch/arm64/include/asm/pgtable-prot.h``).

``PROT_*``/``PAGE_*`` (no KPTI, so ``PTE_MAYBE_NG`` = 0; no LPA2), the fixmap
protections (``asm/fixmap.h``) and ``protection_map`` (``arch/arm64/mm/mmap.c``).
:mod:`kpkeys_sim.kernel.arch.arm64_pgtable` re-exports every public name of this module.
"""

from __future__ import annotations

from kpkeys_sim.kernel.arch.arm64_pgtable_hwdef import (
    MT_NORMAL,
    PMD_SECT_AF,
    PMD_SECT_PXN,
    PMD_SECT_S,
    PMD_SECT_UXN,
    PMD_TYPE_SECT,
    PTE_AF,
    PTE_CONT,
    PTE_NG,
    PTE_PRESENT_INVALID,
    PTE_PXN,
    PTE_RDONLY,
    PTE_SHARED,
    PTE_TYPE_PAGE,
    PTE_USER,
    PTE_UXN,
    PTE_VALID,
    PTE_WRITE,
    _attrindx,
)

__all__ = [
    "FIXMAP_PAGE_CLEAR",
    "FIXMAP_PAGE_NORMAL",
    "FIXMAP_PAGE_RO",
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
    "PROT_DEFAULT",
    "PROT_NORMAL",
    "PROT_SECT_DEFAULT",
    "PROT_SECT_NORMAL",
    "PROT_SECT_NORMAL_EXEC",
]

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
