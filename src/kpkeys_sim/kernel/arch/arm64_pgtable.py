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

Module layout (mirroring the headers): descriptor bits and geometry constants live in
:mod:`~kpkeys_sim.kernel.arch.arm64_pgtable_hwdef` (``pgtable-hwdef.h``, ``fixmap.h``),
protections in :mod:`~kpkeys_sim.kernel.arch.arm64_pgtable_prot` (``pgtable-prot.h``,
``mmap.c``'s ``protection_map``), the value helpers in
:mod:`~kpkeys_sim.kernel.arch.arm64_pgtable_helpers` (``pgtable.h``).  This module
holds :class:`PgtableGeometry` and re-exports all three (``__all__``), so ``from
kpkeys_sim.kernel.arch.arm64_pgtable import PTE_RDONLY`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.arch import arm64_pgtable_helpers, arm64_pgtable_hwdef, arm64_pgtable_prot
from kpkeys_sim.kernel.arch.arm64_pgtable_helpers import *  # noqa: F403 (re-exported via __all__)
from kpkeys_sim.kernel.arch.arm64_pgtable_helpers import (
    U64Array,
    mk_p4d_table,
    mk_pmd_sect_prot,
    mk_pmd_table,
    mk_pud_table,
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
    pmd_pgprot,
    pmd_present,
    pmd_sect,
    pmd_table,
    pmd_valid,
    pmd_write,
    pmd_young,
    pte_dirty,
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
    pte_present,
    pte_same,
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
    ptes_present_mask,
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
    pud_present,
    pud_sect,
    pud_table,
    pud_valid,
    vm_get_page_prot,
)
from kpkeys_sim.kernel.arch.arm64_pgtable_hwdef import *  # noqa: F403 (re-exported via __all__)
from kpkeys_sim.kernel.arch.arm64_pgtable_hwdef import (
    _END_OF_FIXED_ADDRESSES,
    _SZ_2G,
    _SZ_8M,
    _SZ_16M,
    _SZ_256M,
    _VA_BITS,
    ARM64_CONT_PMD_SHIFT,
    ARM64_CONT_PTE_SHIFT,
    PTE_ADDR_MASK,
    STRUCT_PAGE_MAX_SHIFT,
    U64_MAX,
    _u64,
)
from kpkeys_sim.kernel.arch.arm64_pgtable_prot import *  # noqa: F403 (re-exported via __all__)
from kpkeys_sim.kernel.arch.arm64_pgtable_prot import (
    PAGE_KERNEL,
    PAGE_KERNEL_EXEC,
    PAGE_KERNEL_RO,
    PAGE_KERNEL_ROX,
    PAGE_NONE,
    PAGE_READONLY,
    PAGE_READONLY_EXEC,
    PAGE_SHARED,
    PAGE_SHARED_EXEC,
)
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

if TYPE_CHECKING:
    from kpkeys_sim.kernel.arch.pgtable_api import ArchPgtable

__all__ = [
    "PgtableGeometry",
    "__is_lm_address",
    "__pa",
    "__pa_symbol",
    "__phys_to_kimg",
    "__va",
    "lm_alias",
    "page_address",
    "virt_to_pfn",
]
__all__ += arm64_pgtable_hwdef.__all__
__all__ += arm64_pgtable_prot.__all__
__all__ += arm64_pgtable_helpers.__all__

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
