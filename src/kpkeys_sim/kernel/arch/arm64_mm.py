"""arm64's :class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchMm`: the arch mm functions
generic code reaches through ``k.arch_mm`` (boot installs :data:`ARM64_MM`).

The implementations are the arm64 mm modules' own functions:
``arch/arm64/mm/pageattr.c`` and ``mmu.c`` (:mod:`kpkeys_sim.kernel.mm.linear_map`)
and the fixmap/``set_swapper_pgd`` helpers (:mod:`kpkeys_sim.kernel.mm.fixmap`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kpkeys_sim.kernel.arch import arm64_tlbflush
from kpkeys_sim.kernel.kpkeys.core import KPKEYS_PKEY_PGTABLES
from kpkeys_sim.kernel.kpkeys.warn import WARN_ON
from kpkeys_sim.kernel.mm import fixmap, linear_map
from kpkeys_sim.kernel.mm.page import pfn_runs

if TYPE_CHECKING:
    from kpkeys_sim.kernel.arch.pgtable_api import ArchMm
    from kpkeys_sim.kernel.kernel import Kernel

__all__ = ["ARM64_MM", "Arm64Mm", "arch_kpkeys_protect_static_pgtables"]


def arch_kpkeys_protect_static_pgtables(k: Kernel) -> None:
    """arm64 ``arch_kpkeys_protect_static_pgtables()`` (v6, v7; spec §3.4 step 3, §3.8).

    Give ``KPKEYS_PKEY_PGTABLES`` to the page tables statically allocated in
    the kernel image (``k.static_pgtables``), except ``swapper_pg_dir`` (made
    read-only by ``mark_rodata_ro``; the KUnit tests skip the PGD for that
    reason).  The fixmap's tables are not protected (still used after boot,
    e.g. by ``set_swapper_pgd``; spec §3.8).  Contiguous pfns are protected
    with one ``set_memory_pkey`` call on their linear-map alias each run
    [INF: the arm64 diff is not in the spec].  ``WARN_ON`` per failure.
    """
    g = k.pgt
    swapper_pfn = g.pa_symbol(k.swapper_pg_dir) >> g.PAGE_SHIFT if k.swapper_pg_dir else -1
    skip = {swapper_pfn, *k.fixmap_pgtables}
    for first, n in pfn_runs(sorted({p for p in k.static_pgtables if p not in skip})):
        ret = linear_map.set_memory_pkey(k, g.va(first << g.PAGE_SHIFT), n, KPKEYS_PKEY_PGTABLES)
        WARN_ON(k, ret, f"arch_kpkeys_protect_static_pgtables: pfn {first:#x}+{n}: {ret}")


class Arm64Mm:
    """The arm64 arch mm functions, by their kernel names."""

    __slots__ = ()

    set_memory_ro = staticmethod(linear_map.set_memory_ro)
    set_memory_rw = staticmethod(linear_map.set_memory_rw)
    set_memory_nx = staticmethod(linear_map.set_memory_nx)
    set_memory_x = staticmethod(linear_map.set_memory_x)
    set_memory_valid = staticmethod(linear_map.set_memory_valid)
    set_memory_pkey = staticmethod(linear_map.set_memory_pkey)
    set_direct_map_invalid_noflush = staticmethod(linear_map.set_direct_map_invalid_noflush)
    set_direct_map_default_noflush = staticmethod(linear_map.set_direct_map_default_noflush)
    set_direct_map_valid_noflush = staticmethod(linear_map.set_direct_map_valid_noflush)
    force_pte_mapping = staticmethod(linear_map.force_pte_mapping)
    split_kernel_leaf_mapping = staticmethod(linear_map.split_kernel_leaf_mapping)
    linear_map_split_count = staticmethod(linear_map.linear_map_split_count)
    linear_map_leaves = staticmethod(linear_map.linear_map_leaves)
    in_swapper_pgdir = staticmethod(fixmap.in_swapper_pgdir)
    set_swapper_pgd = staticmethod(fixmap.set_swapper_pgd)
    arch_kpkeys_protect_static_pgtables = staticmethod(arch_kpkeys_protect_static_pgtables)
    flush_tlb_all = staticmethod(arm64_tlbflush.flush_tlb_all)
    local_flush_tlb_all = staticmethod(arm64_tlbflush.local_flush_tlb_all)
    flush_tlb_kernel_range = staticmethod(arm64_tlbflush.flush_tlb_kernel_range)
    flush_tlb_kernel_pgtable = staticmethod(getattr(arm64_tlbflush, "__flush_tlb_kernel_pgtable"))
    flush_tlb_mm = staticmethod(arm64_tlbflush.flush_tlb_mm)
    flush_tlb_range = staticmethod(arm64_tlbflush.flush_tlb_range)
    flush_tlb_page = staticmethod(arm64_tlbflush.flush_tlb_page)


#: The one instance boot attaches as ``k.arch_mm``.
ARM64_MM = Arm64Mm()

if TYPE_CHECKING:
    #: Static check: arm64 provides the whole ArchMm interface.
    _ARCH_MM: ArchMm = ARM64_MM
