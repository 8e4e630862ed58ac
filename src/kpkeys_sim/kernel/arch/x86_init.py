"""x86-64 direct map and vmemmap: ``init_mem_mapping`` and ``sparse_init``, plus the leaf census.

Sources: ``arch/x86/mm/init.c`` (``probe_page_size_mask``, ``init_mem_mapping``,
``init_range_memory_mapping``, ``init_memory_mapping``, ``split_mem_range``,
``adjust_range_page_size_mask``, ``alloc_low_pages``), ``arch/x86/mm/init_64.c``
(``kernel_physical_mapping_init``, ``phys_p4d_init``, ``phys_pud_init``,
``phys_pmd_init``, ``phys_pte_init``, ``vmemmap_populate``,
``vmemmap_set_pmd``), ``mm/sparse-vmemmap.c`` (``vmemmap_populate_hugepages``,
``vmemmap_*_populate``, ``vmemmap_alloc_block_zero``), ``mm/sparse.c``
(``sparse_init``), ``arch/x86/kernel/e820.c``.

Shape.  ``probe_page_size_mask``: 2 MiB pages unless debug_pagealloc, 1 GiB
pages (``direct_gbpages``, GBPAGES assumed) with 2 MiB pages.  The model's
``config.linear_map == "pte"`` and the ``k.force_pte_mapping_hooks`` (kpkeys v7
forces a page-granular linear map, and so does the model's x86 port of v5) act
as debug_pagealloc does: 4 KiB everywhere.  x86 has no BBML2/rodata=full
constraint: CPA splits live large pages without break-before-make (``x86_set_memory``), so
``config.bbml2_noabort`` and ``config.rodata_full`` do not affect the x86
direct map.  ``split_mem_range`` cuts a range into a 4K head up to 2 MiB
alignment, 2 MiB pages up to 1 GiB alignment, 1 GiB pages, a 2 MiB tail and a
4K tail; ``adjust_range_page_size_mask`` then upgrades a range to the larger
size when the whole aligned region around it is RAM (so with RAM from 0 to the
top and no hole, everything would be 1 GiB pages).

e820 (:data:`E820_TABLE`, the model's one RAM range with the ISA hole): RAM
``[0, 0x9fc00)``, reserved ``[0x9fc00, 1 MiB)`` (EBDA, VGA, BIOS), RAM
``[1 MiB, ram_size)``.  So ``[0, 2 MiB)`` is one PTE table (the ISA range
``[0, 1 MiB)`` is always mapped, by ``init_memory_mapping(0, ISA_END_ADDRESS)``,
and ``[1, 2) MiB`` is the 4K head of the next range), the rest of the first
GiB is 2 MiB pages, and every further whole GiB one 1 GiB page; a partial last
GiB is 2 MiB pages (``ram_size`` is a multiple of 2 MiB, so there is no 4K
tail).  ``memory_map_top_down``'s growing steps are not modelled: the ranges
are mapped in one ``init_range_memory_mapping(ISA_END_ADDRESS, end)``; with
``adjust_range_page_size_mask`` and no hole above 1 MiB the final tables have
the same shape, only the order of the table allocations differs.

Writes.  ``init_mem_mapping`` runs while CPU0 is still on ``early_top_pgt``
(``x86_head``): the new tables are zeroed and filled through their ``__va``
alias, which the early direct map covers, and linked into ``init_top_pgt``
through its kernel-image alias (``pgd_offset_k``).  Every store goes through
the guarded helpers of ``kernel/mm/pgtable`` (``set_pte``/``set_pmd``/
``set_pud``, ``*_populate``).  Tables come from ``k.early_pgtable_alloc``
(x86 ``alloc_low_pages``: memblock; the kpkeys v6/v7 PPA installs itself
there), each zeroed with ``clear_page``.  At the end ``load_cr3(init_top_pgt)``
and a full TLB flush, as Linux does.

vmemmap.  ``sparse_init`` → ``vmemmap_populate`` → ``vmemmap_populate_hugepages``:
one 2 MiB ``PAGE_KERNEL_LARGE`` leaf per 2 MiB of ``struct page`` (a 128 MiB
section's 32768 pages), backing and tables from memblock; the table pfns are
recorded in ``k.vmemmap_pgtables`` as on arm64 (kpkeys v7 tracks them).
"""

from __future__ import annotations

import numpy as np

from kpkeys_sim.kernel.arch.pgtable_api import LEAF_CENSUS_KEYS
from kpkeys_sim.kernel.arch.x86_pgtable import (
    _PAGE_PSE,
    PAGE_KERNEL,
    PAGE_KERNEL_LARGE,
    mk_pmd_sect_prot,
    mk_pud_sect_prot,
)
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.memblock import (
    MEMBLOCK_ALLOC_NOLEAKTRACE,
    Memblock,
    memblock_phys_alloc_range,
)
from kpkeys_sim.kernel.mm.pgtable import (
    p4d_offset,
    p4d_populate,
    pgd_offset_k,
    pmd_offset,
    pmd_populate_kernel,
    ptep_get,
    ptep_get_array,
    pud_offset,
    pud_populate,
    set_pmd,
    set_ptes_array,
    set_pud,
)

__all__ = [
    "E820_RAM",
    "E820_RESERVED",
    "E820_TABLE",
    "ISA_END_ADDRESS",
    "alloc_low_page",
    "direct_map_leaves",
    "e820_table",
    "force_pte_mapping",
    "init_mem_mapping",
    "init_memory_mapping",
    "kernel_physical_mapping_init",
    "probe_page_size_mask",
    "sparse_init",
    "split_mem_range",
    "vmemmap_populate",
]

PG_LEVEL_2M = 2
PG_LEVEL_1G = 3
ISA_END_ADDRESS = 0x10_0000
E820_RAM = 1
E820_RESERVED = 2
#: The model's firmware memory map below 1 MiB: (start, end, type); RAM continues from 1 MiB.
E820_TABLE = ((0x0, 0x9_FC00, E820_RAM), (0x9_FC00, ISA_END_ADDRESS, E820_RESERVED))
_PAGE_SHIFT = 12
_PAGE_SIZE = 1 << _PAGE_SHIFT
_PMD_SIZE = 1 << 21
_PUD_SIZE = 1 << 30


def e820_table(ram_size: int) -> list[tuple[int, int, int]]:
    """The e820 table of a machine with ``ram_size`` bytes of RAM at physical 0."""
    return [*E820_TABLE, (ISA_END_ADDRESS, ram_size, E820_RAM)]


def force_pte_mapping(k: Kernel) -> bool:
    """The direct map is page granular (debug_pagealloc, ``linear_map = "pte"``, a hook).

    (The kpkeys v5 hook for arm64's pre-BBML2 base kernel, where rodata=full
    forced PTEs, is installed on arm64 only.)
    """
    cfg = k.config
    if cfg.debug_pagealloc or cfg.linear_map == "pte":
        return True
    return any(hook(k) for hook in k.force_pte_mapping_hooks)


def probe_page_size_mask(k: Kernel) -> int:
    """``probe_page_size_mask()``: 2M unless debug_pagealloc; 1G (``direct_gbpages``) with it."""
    if force_pte_mapping(k):
        return 0
    mask = 1 << PG_LEVEL_2M
    if k.pgt.pud_sect_supported:
        mask |= 1 << PG_LEVEL_1G
    return mask


# --- alloc_low_pages ---------------------------------------------------------------------------


def alloc_low_page(k: Kernel) -> int:
    """``alloc_low_page()`` before bootmem: a page from ``k.early_pgtable_alloc``, zeroed.

    Returns the physical address; panics (``KernelBug``) when none is left.
    """
    alloc = k.early_pgtable_alloc
    pa = alloc(k) if alloc is not None else _memblock_page(k)
    if not pa:
        raise KernelBug("alloc_low_pages: can not alloc memory")
    k.machine.clear_page(k.cpu, k.pgt.va(pa))
    return int(pa)


def _memblock_page(k: Kernel) -> int:
    mb = k.memblock
    if mb is None:
        raise KernelBug("alloc_low_pages() without memblock")
    return memblock_phys_alloc_range(mb, _PAGE_SIZE, _PAGE_SIZE, 0, MEMBLOCK_ALLOC_NOLEAKTRACE)


# --- kernel_physical_mapping_init (init_64.c) ----------------------------------------------------


def _phys_pte_init(k: Kernel, pte_pa: int, paddr: int, paddr_end: int, prot: int) -> None:
    """``phys_pte_init``: the none PTEs of ``[paddr, paddr_end)`` (one table)."""
    g = k.pgt
    i = g.pte_index(g.va(paddr))
    n = min(g.PTRS_PER_PTE - i, (paddr_end - paddr + _PAGE_SIZE - 1) >> _PAGE_SHIFT)
    ptep = g.va(pte_pa) + 8 * i
    old = ptep_get_array(k, ptep, n)
    new = g.pte_range(paddr >> _PAGE_SHIFT, n, prot)
    keep = old != np.uint64(0)
    if bool(keep.any()):
        new = np.where(keep, old, new)
    set_ptes_array(k, ptep, new)


def _phys_pmd_init(
    k: Kernel, pmd_pa: int, paddr: int, paddr_end: int, mask: int, prot: int
) -> None:
    """``phys_pmd_init``: 2M leaves where allowed, else a PTE table."""
    g = k.pgt
    while paddr < paddr_end:
        nxt = (paddr & g.PMD_MASK) + _PMD_SIZE
        pmdp = g.va(pmd_pa) + 8 * g.pmd_index(g.va(paddr))
        pmd = ptep_get(k, pmdp)
        if not g.pmd_none(pmd):
            if not g.pmd_leaf(pmd):
                _phys_pte_init(k, g.pmd_page_paddr(pmd), paddr, min(nxt, paddr_end), prot)
                paddr = nxt
                continue
            if mask & (1 << PG_LEVEL_2M):
                paddr = nxt
                continue
            raise KernelBug("phys_pmd_init: splitting an early 2M leaf is not modelled")
        if mask & (1 << PG_LEVEL_2M):
            set_pmd(k, pmdp, g.pfn_pmd(paddr >> _PAGE_SHIFT, mk_pmd_sect_prot(prot)))
            paddr = nxt
            continue
        pte = alloc_low_page(k)
        _phys_pte_init(k, pte, paddr, min(nxt, paddr_end), prot)
        pmd_populate_kernel(k, pmdp, pte >> _PAGE_SHIFT)
        paddr = nxt


def _phys_pud_init(
    k: Kernel, pud_pa: int, paddr: int, paddr_end: int, mask: int, prot: int
) -> None:
    """``phys_pud_init``: 1G leaves where allowed, else a PMD table."""
    g = k.pgt
    while paddr < paddr_end:
        nxt = (paddr & g.PUD_MASK) + _PUD_SIZE
        pudp = g.va(pud_pa) + 8 * g.pud_index(g.va(paddr))
        pud = ptep_get(k, pudp)
        if not g.pud_none(pud):
            if not g.pud_leaf(pud):
                pmd = g.pud_page_paddr(pud)
                _phys_pmd_init(k, pmd, paddr, min(nxt, paddr_end), mask, prot)
                paddr = nxt
                continue
            if mask & (1 << PG_LEVEL_1G):
                paddr = nxt
                continue
            raise KernelBug("phys_pud_init: splitting an early 1G leaf is not modelled")
        if mask & (1 << PG_LEVEL_1G):
            set_pud(k, pudp, g.pfn_pud(paddr >> _PAGE_SHIFT, mk_pud_sect_prot(prot)))
            paddr = nxt
            continue
        pmd = alloc_low_page(k)
        _phys_pmd_init(k, pmd, paddr, min(nxt, paddr_end), mask, prot)
        pud_populate(k, k.init_mm, pudp, pmd >> _PAGE_SHIFT)
        paddr = nxt


def kernel_physical_mapping_init(
    k: Kernel, paddr_start: int, paddr_end: int, page_size_mask: int, prot: int
) -> int:
    """``kernel_physical_mapping_init``: map ``[paddr_start, paddr_end)`` at ``__va``.

    Per pgd entry: into the existing pud table, or a new one filled first and
    then linked (``p4d_populate_init``; the p4d is folded into the pgd).
    Returns ``paddr_last``.
    """
    g = k.pgt
    vaddr = g.va(paddr_start)
    vaddr_end = g.va(paddr_end)
    while vaddr < vaddr_end:
        nxt = g.pgd_addr_end(vaddr, vaddr_end)
        pgdp = pgd_offset_k(k, vaddr)
        p4dp = p4d_offset(k, pgdp, vaddr)
        pgd = ptep_get(k, pgdp)
        if not g.pgd_none(pgd):
            pud = g.pgd_page_paddr(pgd)
            _phys_pud_init(k, pud, g.pa(vaddr), g.pa(nxt), page_size_mask, prot)
        else:
            pud = alloc_low_page(k)
            _phys_pud_init(k, pud, g.pa(vaddr), g.pa(nxt), page_size_mask, prot)
            p4d_populate(k, k.init_mm, p4dp, pud >> _PAGE_SHIFT)
        vaddr = nxt
    return paddr_end


def split_mem_range(
    k: Kernel, start: int, end: int, page_size_mask: int
) -> list[tuple[int, int, int]]:
    """``split_mem_range``: ``(start, end, page_size_mask)`` pieces by alignment, then adjusted."""
    pmd_pages = _PMD_SIZE >> _PAGE_SHIFT
    pud_pages = _PUD_SIZE >> _PAGE_SHIFT
    two_m = page_size_mask & (1 << PG_LEVEL_2M)
    both = page_size_mask & ((1 << PG_LEVEL_2M) | (1 << PG_LEVEL_1G))

    def up(x: int, a: int) -> int:
        return (x + a - 1) // a * a

    def down(x: int, a: int) -> int:
        return x // a * a

    limit = end >> _PAGE_SHIFT
    pfn = start >> _PAGE_SHIFT
    out: list[tuple[int, int, int]] = []

    def save(s: int, e: int, mask: int) -> None:
        if s < e:
            out.append((s << _PAGE_SHIFT, e << _PAGE_SHIFT, mask))

    e = min(up(pfn, pmd_pages), limit)
    if pfn < e:
        save(pfn, e, 0)
        pfn = e
    s, e = up(pfn, pmd_pages), min(up(pfn, pud_pages), down(limit, pmd_pages))
    if s < e:
        save(s, e, two_m)
        pfn = e
    s, e = up(pfn, pud_pages), down(limit, pud_pages)
    if s < e:
        save(s, e, both)
        pfn = e
    s, e = up(pfn, pmd_pages), down(limit, pmd_pages)
    if s < e:
        save(s, e, two_m)
        pfn = e
    save(pfn, limit, 0)
    return _adjust_range_page_size_mask(k, out, page_size_mask)


def memblock_is_region_memory(mb: Memblock, base: int, size: int) -> bool:
    """``memblock_is_region_memory(base, size)``: ``[base, base + size)`` lies in one RAM region."""
    return any(r.base <= base and base + size <= r.end for r in mb.memory.regions)


def _adjust_range_page_size_mask(
    k: Kernel, ranges: list[tuple[int, int, int]], page_size_mask: int
) -> list[tuple[int, int, int]]:
    """``adjust_range_page_size_mask``: upgrade a range whose aligned surroundings are all RAM."""
    mb = k.memblock
    if mb is None:
        raise KernelBug("split_mem_range() without memblock")
    out = []
    for start, end, mask in ranges:
        for level, size in ((PG_LEVEL_2M, _PMD_SIZE), (PG_LEVEL_1G, _PUD_SIZE)):
            bit = 1 << level
            if page_size_mask & bit and not mask & bit:
                s = start & ~(size - 1)
                e = (end + size - 1) & ~(size - 1)
                if memblock_is_region_memory(mb, s, e - s):
                    mask |= bit
        out.append((start, end, mask))
    return out


def init_memory_mapping(k: Kernel, start: int, end: int, prot: int) -> int:
    """``init_memory_mapping(start, end, prot)``: each piece of ``split_mem_range``."""
    ret = 0
    for s, e, mask in split_mem_range(k, start, end, probe_page_size_mask(k)):
        ret = kernel_physical_mapping_init(k, s, e, mask, prot)
    return ret


def init_mem_mapping(k: Kernel) -> None:
    """``init_mem_mapping()``: the ISA range, then all RAM above it, then CR3 := init_top_pgt.

    (The top-down steps are one call; module docstring.)
    """
    from kpkeys_sim.kernel.arch.x86_head import load_cr3

    mb = k.memblock
    if mb is None:
        raise KernelBug("init_mem_mapping() without memblock")
    init_memory_mapping(k, 0, ISA_END_ADDRESS, PAGE_KERNEL)
    for r in list(mb.memory.regions):
        start, end = max(r.base, ISA_END_ADDRESS), r.end
        if start < end:
            init_memory_mapping(k, start, end, PAGE_KERNEL)
    load_cr3(k, 0, k.swapper_pg_dir)


# --- vmemmap (mm/sparse-vmemmap.c, init_64.c) -----------------------------------------------------


def _vmemmap_alloc_block_zero(k: Kernel) -> int:
    """``vmemmap_alloc_block_zero(PAGE_SIZE)`` at boot: memblock, zeroed via ``__va``; pfn."""
    mb = k.memblock
    if mb is None:
        raise KernelBug("vmemmap_alloc_block_zero() without memblock")
    pa = memblock_phys_alloc_range(mb, _PAGE_SIZE, _PAGE_SIZE, 0, 0)
    if not pa:
        raise KernelBug("vmemmap: no memory for a page table")
    k.machine.clear_page(k.cpu, k.pgt.va(pa))
    pfn = pa >> _PAGE_SHIFT
    k.vmemmap_pgtables.append(pfn)
    return pfn


def vmemmap_populate(k: Kernel, start: int, end: int) -> None:
    """``vmemmap_populate`` → ``vmemmap_populate_hugepages``: a 2M leaf per 2M of memmap."""
    g = k.pgt
    mb = k.memblock
    if mb is None:
        raise KernelBug("vmemmap_populate() without memblock")
    addr = start
    while addr < end:
        nxt = g.pmd_addr_end(addr, end)
        pgdp = pgd_offset_k(k, addr)
        p4dp = p4d_offset(k, pgdp, addr)
        if g.pgd_none(ptep_get(k, pgdp)):  # vmemmap_p4d_populate (pgd_populate is a no-op)
            p4d_populate(k, k.init_mm, p4dp, _vmemmap_alloc_block_zero(k))
        pudp = pud_offset(k, p4dp, addr)
        if g.pud_none(ptep_get(k, pudp)):
            pud_populate(k, k.init_mm, pudp, _vmemmap_alloc_block_zero(k))
        pmdp = pmd_offset(k, pudp, addr)
        if g.pmd_none(ptep_get(k, pmdp)):
            p = memblock_phys_alloc_range(mb, _PMD_SIZE, _PMD_SIZE, 0, 0)
            if not p:
                raise KernelBug("vmemmap: no memory for a 2M block")
            set_pmd(k, pmdp, g.pfn_pmd(p >> _PAGE_SHIFT, PAGE_KERNEL_LARGE))  # vmemmap_set_pmd
        addr = nxt


def sparse_init(k: Kernel) -> int:
    """``sparse_init()``: the vmemmap of every present section; returns the sections done."""
    g = k.pgt
    mem = k.machine.mem
    sec = 1 << g.SECTION_SIZE_BITS
    nsec = 0
    for s in range(mem.base & ~(sec - 1), mem.end, sec):
        first = g.vmemmap_page(s >> _PAGE_SHIFT)
        vmemmap_populate(k, first, first + (g.PAGES_PER_SECTION << 6))
        nsec += 1
    return nsec


# --- the leaf census (ptdump-style; arm64 ``linear_map_leaves``) ---------------------------------


def direct_map_leaves(k: Kernel) -> dict[str, int]:
    """Direct-map leaves by size and its page-table pages by level.

    Keys as arm64's ``linear_map_leaves``: ``pud`` (1G), ``pmd`` (2M), ``pte``
    (4K), ``contpmd``/``contpte`` (always 0: x86 has no contiguous hint),
    ``invalid`` (non-zero, non-present entries), ``tables_pud``/``tables_pmd``/
    ``tables_pte``, ``pgtable_pages``.  Physical reads, as the walker does: no
    events, no TLB fills.
    """
    g = k.pgt
    mem = k.machine.mem
    out = dict.fromkeys(LEAF_CENSUS_KEYS, 0)
    p = np.uint64(1)
    pse = np.uint64(_PAGE_PSE)
    z = np.uint64(0)
    addr_mask = np.uint64(g.PTE_ADDR_MASK)

    def level(pa: int, name: str, nxt: object) -> None:
        out[f"tables_{name}"] += 1
        e = mem.frame_ro(pa >> _PAGE_SHIFT)
        present = (e & p) != z
        out["invalid"] += int(np.count_nonzero(~present & (e != z)))
        if nxt is None:
            out["pte"] += int(np.count_nonzero(present))
            return
        leaf = present & ((e & pse) != z)
        out["pud" if name == "pud" else "pmd"] += int(np.count_nonzero(leaf))
        for t in (e[present & ~leaf] & addr_mask).tolist():
            nxt(int(t))  # type: ignore[operator]

    def pte(pa: int) -> None:
        level(pa, "pte", None)

    def pmd(pa: int) -> None:
        level(pa, "pmd", pte)

    root = mem.frame_ro(g.pa_symbol(k.swapper_pg_dir) >> _PAGE_SHIFT)
    top = root[g.pgd_index(g.PAGE_OFFSET) : g.pgd_index(g.PAGE_END - 1) + 1]
    for t in (top[(top & p) != z] & addr_mask).tolist():
        level(int(t), "pud", pmd)
    out["pgtable_pages"] = out["tables_pud"] + out["tables_pmd"] + out["tables_pte"]
    return out
