"""The arm64 linear map: creation (``map_mem``), splitting, and ``set_memory_*``.

Sources: ``arch/arm64/mm/mmu.c`` (``map_mem``, ``__map_memblock``,
``__create_pgd_mapping``, ``alloc_init_p4d``, ``alloc_init_pud``,
``alloc_init_cont_pmd``, ``init_pmd``, ``alloc_init_cont_pte``, ``init_pte``,
``force_pte_mapping``, ``split_kernel_leaf_mapping``, ``split_pud``,
``split_contpmd``, ``split_pmd``, ``split_contpte``, ``pgtable_split_lock``),
``arch/arm64/mm/pageattr.c`` (``__change_memory_common``,
``update_range_prot``, ``change_memory_common``, ``set_memory_ro``/``rw``/
``nx``/``x``/``valid``, ``set_memory_pkey`` (kpkeys v5 06/18),
``set_direct_map_*_noflush``, ``can_set_direct_map``); spec
pkeys-hardware.md §2.3–§2.5, kpkeys-series.md §2.6, §2.8, §4.8.

Shapes (spec pkeys-hardware.md §2.4).  With block mappings allowed the linear
map uses PUD blocks (4K only), contiguous PMD runs, PMD blocks and contiguous
PTE runs wherever alignment allows; with ``force_pte_mapping()`` it is plain
PTEs without CONT (``NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS``).  The kernel
image's ``[_text, __init_begin)`` alias is mapped separately with
``NO_CONT_MAPPINGS`` (its permissions change later) as ``map_mem`` does.

Writing the tables.  ``__create_pgd_mapping`` maps every table it writes at a
fixmap slot (``pte_set_fixmap`` …) as mmu.c does, so those stores are checked
through the fixmap alias.  Everything after boot (splits, ``set_memory_*``)
walks and writes through the linear-map alias of the tables.  Bulk work is one
numpy operation and one permission check per table page: a whole PTE table
of a PTE-only linear map is written in one ``store_pt_entries`` with the
per-entry guard round trips and barriers accounted (``pgtable`` module).

Splitting (``split_kernel_leaf_mapping(start, end)``).  Only with
BBML2_NOABORT (``config.bbml2_noabort``) and when the map is not forced to
PTEs: under ``pgtable_split_lock`` and in a lazy MMU section, split the leaf
containing ``start`` and then ``end`` the kernel's way — PUD block → contPMD
(``split_pud``), contPMD → PMD blocks (``split_contpmd``), PMD block → contPTE
(``split_pmd``), contPTE → PTEs (``split_contpte``) — stopping as soon as the
address is a leaf boundary.  No break-before-make and no TLB maintenance
(BBML2_NOABORT guarantees the old and new, equivalent, translations may
coexist; the caller's ``flush_tlb_kernel_range`` removes them for the range
it changes).  Without BBML2_NOABORT Linux returns 0 *without splitting*
("let the permission change code raise a warning") and the pageattr walk
then refuses a partially covered block with ``-EINVAL``: Linux never performs
BBM on the live linear map.  The kpkeys v6 15/30 hooks are wired as spec §4.8
says: ``k.prepare_direct_map_split(k)`` before the lock, then
``k.ready_for_direct_map_split(k)`` under it (unlock, prepare, retry until
ready); split tables come from ``pagetable_alloc(GFP_PGTABLE_KERNEL &
~__GFP_ZERO | __GFP_PGTABLE_SPLIT)``.  Taking ``pgtable_split_lock`` while it
is held is the deadlock Kevin found (2025-09-18): :class:`KernelBug`.

``set_memory_ro``/``rw``/``nx``/``x`` are ``change_memory_common``: as in
Linux they only accept a range inside one ``VM_ALLOC`` vmalloc area (found
with ``k.find_vm_area``) and return ``-EINVAL`` for anything else, including
linear-map addresses; with ``rodata_full`` they also change the linear-map
alias of each backing page.  Linear-map permissions are changed by
:func:`__change_memory_common` (what that alias update, ``set_memory_valid``
and ``set_memory_pkey`` call) and the ``set_direct_map_*`` helpers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.arch.arm64_pgtable import (
    P4D_TABLE_AF,
    P4D_TABLE_PXN,
    P4D_TABLE_UXN,
    P4D_TYPE_TABLE,
    PAGE_KERNEL,
    PMD_SECT_PXN,
    PMD_TABLE_AF,
    PMD_TABLE_PXN,
    PMD_TABLE_UXN,
    PMD_TYPE_MASK,
    PMD_TYPE_SECT,
    PMD_TYPE_TABLE,
    PTE_ADDR_MASK,
    PTE_CONT,
    PTE_PO_IDX_0,
    PTE_PO_IDX_1,
    PTE_PO_IDX_2,
    PTE_PO_IDX_MASK,
    PTE_PXN,
    PTE_RDONLY,
    PTE_TYPE_MASK,
    PTE_TYPE_PAGE,
    PTE_VALID,
    PTE_WRITE,
    PUD_TABLE_AF,
    PUD_TABLE_PXN,
    PUD_TABLE_UXN,
    PUD_TYPE_TABLE,
    mk_pmd_sect_prot,
    mk_pud_sect_prot,
    p4d_bad,
    pgattr_change_is_safe,
    pgattr_change_is_safe_array,
    pmd_bad,
    pmd_cont,
    pmd_leaf,
    pmd_present,
    pmd_sect,
    pte_cont,
    pte_present,
    ptes_mknoncont,
    ptes_set_pageattr,
    pud_bad,
    pud_leaf,
    pud_present,
    pud_sect,
)
from kpkeys_sim.kernel.arch.pgtable_api import LEAF_CENSUS_KEYS, ArchPgtable
from kpkeys_sim.kernel.errors import EINVAL, ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.fixmap import (
    pmd_clear_fixmap,
    pmd_set_fixmap,
    pmd_set_fixmap_offset,
    pte_clear_fixmap,
    pte_set_fixmap,
    pte_set_fixmap_offset,
    pud_clear_fixmap,
    pud_set_fixmap,
    pud_set_fixmap_offset,
)
from kpkeys_sim.kernel.mm.gfp import __GFP_PGTABLE_SPLIT, __GFP_ZERO, GFP_PGTABLE_KERNEL
from kpkeys_sim.kernel.mm.memblock import (
    MEMBLOCK_ALLOC_NOLEAKTRACE,
    MEMBLOCK_NOMAP,
    memblock_clear_nomap,
    memblock_mark_nomap,
    memblock_phys_alloc_range,
)
from kpkeys_sim.kernel.mm.mm_types import VM_ALLOC, VM_ALLOW_HUGE_VMAP
from kpkeys_sim.kernel.mm.pgalloc import (
    pagetable_alloc,
    pagetable_free,
    pagetable_pmd_ctor,
    pagetable_pte_ctor,
)
from kpkeys_sim.kernel.mm.pgtable import (
    __p4d_populate,
    __pmd_populate,
    __pud_populate,
    __set_ptes_nosync_array,
    p4d_offset,
    pgd_offset_k,
    pgd_offset_pgd,
    pmd_offset,
    pte_offset_kernel,
    ptep_get,
    ptep_get_array,
    pud_offset,
    set_pmd_array,
    set_ptes_array,
    set_pud,
)
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_kernel_range
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "CHANGE_MEMORY_COMMON",
    "LINEAR_MAP_SPLIT",
    "LINEAR_MAP_SPLIT_BY_KIND",
    "NO_BLOCK_MAPPINGS",
    "NO_CONT_MAPPINGS",
    "NO_EXEC_MAPPINGS",
    "SPLIT_KINDS",
    "TABLE_P4D",
    "TABLE_PMD",
    "TABLE_PTE",
    "TABLE_PUD",
    "__change_memory_common",
    "__create_pgd_mapping",
    "__map_memblock",
    "alloc_init_cont_pmd",
    "alloc_init_cont_pte",
    "alloc_init_pud",
    "arch_max_pkey",
    "can_set_direct_map",
    "change_memory_common",
    "early_pgtable_alloc",
    "force_pte_mapping",
    "init_clear_pgtable",
    "init_pmd",
    "init_pte",
    "linear_map_leaves",
    "linear_map_split_count",
    "map_mem",
    "memblock_early_pgtable_alloc",
    "pgd_pgtable_alloc_init_mm",
    "set_direct_map_default_noflush",
    "set_direct_map_invalid_noflush",
    "set_direct_map_valid_noflush",
    "set_memory_nx",
    "set_memory_pkey",
    "set_memory_ro",
    "set_memory_rw",
    "set_memory_valid",
    "set_memory_x",
    "split_contpmd",
    "split_contpte",
    "split_kernel_leaf_mapping",
    "split_pgtable_alloc",
    "split_pmd",
    "split_pud",
    "system_supports_bbml2_noabort",
    "update_range_prot",
]

U64Array = npt.NDArray[np.uint64]

#: __create_pgd_mapping flags (mmu.c).
NO_BLOCK_MAPPINGS = 1 << 0
NO_CONT_MAPPINGS = 1 << 1
NO_EXEC_MAPPINGS = 1 << 2
#: ``enum pgtable_type`` (mmu.c).
TABLE_PTE = 0
TABLE_PMD = 1
TABLE_PUD = 2
TABLE_P4D = 3

#: Split kinds, in the order the kernel applies them.
SPLIT_KINDS = ("split_pud", "split_contpmd", "split_pmd", "split_contpte")

LINEAR_MAP_SPLIT = declare_event(
    "linear_map_split",
    "linear-map leaf splits (split_pud, split_contpmd, split_pmd, split_contpte)",
    "kernel",
)
#: One event kind per split kind (``linear_map_split_pud`` ...), emitted with the total.
LINEAR_MAP_SPLIT_BY_KIND = {
    kind: declare_event(
        f"linear_map_{kind}", f"linear-map {kind}() calls (arch/arm64/mm/mmu.c)", "kernel"
    )
    for kind in SPLIT_KINDS
}

CHANGE_MEMORY_COMMON = declare_event(
    "change_memory_common",
    "__change_memory_common() calls (set_memory_pkey, set_memory_valid and change_memory_common "
    "for set_memory_ro/rw/x/nx): the split lock, the generic page walker's callbacks and the "
    "argument checks; its table reads, entry writes, splits and TLB flush are their own events",
    "kernel",
)

#: A page-table allocator for __create_pgd_mapping: ``(k, pgtable_type) -> phys``.
PgtableAllocFn = Callable[[Kernel, int], int]

_SPLIT_GFP = GFP_PGTABLE_KERNEL & ~__GFP_ZERO | __GFP_PGTABLE_SPLIT


# --- configuration predicates --------------------------------------------------------------------


def system_supports_bbml2_noabort(k: Kernel) -> bool:
    """``system_supports_bbml2_noabort()``: every CPU has BBML2 without TLB-conflict aborts."""
    return k.config.bbml2_noabort


def can_set_direct_map(k: Kernel) -> bool:
    """``can_set_direct_map()``: rodata=full or debug_pagealloc (KFENCE and realms not modelled)."""
    return k.config.rodata_full or k.config.debug_pagealloc


def force_pte_mapping(k: Kernel) -> bool:
    """``force_pte_mapping()`` (spec §2.8), plus the model's ``linear_map = "pte"`` request.

    True when ``config.linear_map == "pte"``; or BBML2_NOABORT is absent and
    rodata=full holds (KFENCE and realm world are not modelled); or
    debug_pagealloc is on; or a ``k.force_pte_mapping_hooks`` entry says so
    (kpkeys v7 forces a PTE-mapped linear map).
    """
    cfg = k.config
    if cfg.linear_map == "pte" or cfg.debug_pagealloc:
        return True
    if not cfg.bbml2_noabort and cfg.rodata_full:
        return True
    return any(hook(k) for hook in k.force_pte_mapping_hooks)


def arch_max_pkey(k: Kernel) -> int:
    """``arch_max_pkey()``: 8 pkeys with POE (``POIndex`` is 3 bits)."""
    return k.machine.arch.nr_pkeys


# --- early allocation ----------------------------------------------------------------------------


def memblock_early_pgtable_alloc(k: Kernel) -> int:
    """The default ``k.early_pgtable_alloc``: one page from memblock (0 on failure).

    ``memblock_phys_alloc_range(PAGE_SIZE, PAGE_SIZE, 0, MEMBLOCK_ALLOC_NOLEAKTRACE)``.
    """
    mb = k.memblock
    if mb is None:
        raise KernelBug("early_pgtable_alloc() without memblock")
    ps = k.pgt.PAGE_SIZE
    return memblock_phys_alloc_range(mb, ps, ps, 0, MEMBLOCK_ALLOC_NOLEAKTRACE)


def early_pgtable_alloc(k: Kernel, pgtable_type: int) -> int:
    """``early_pgtable_alloc(type)`` (mmu.c): through ``k.early_pgtable_alloc``; panics on failure.

    The allocator is replaceable: kpkeys v6/v7 install the PPA
    (``kpkeys_physmem_pgtable_alloc``) there.
    """
    alloc = k.early_pgtable_alloc
    if alloc is None:
        alloc = memblock_early_pgtable_alloc
    pa: int = alloc(k)
    if not pa:
        raise KernelBug(f"Failed to allocate page table page (type {pgtable_type})")
    return pa


def pgd_pgtable_alloc_init_mm(k: Kernel, pgtable_type: int) -> int:
    """``pgd_pgtable_alloc_init_mm(type)``: a ctor'd page-table page after boot (panics if none)."""
    pfn = pagetable_alloc(k, GFP_PGTABLE_KERNEL, 0)
    if pfn is None:
        raise KernelBug("BUG_ON: pgd_pgtable_alloc_init_mm() out of memory")
    ok = (
        pagetable_pte_ctor(k, k.init_mm, pfn)
        if pgtable_type == TABLE_PTE
        else pagetable_pmd_ctor(k, k.init_mm, pfn)
    )
    if not ok:
        pagetable_free(k, pfn, 0)
        raise KernelBug("BUG_ON: page-table ctor failed in pgd_pgtable_alloc_init_mm()")
    return pfn << k.pgt.PAGE_SHIFT


def init_clear_pgtable(k: Kernel, table: int) -> None:
    """``init_clear_pgtable(table)``: ``clear_page`` (a checked store) then ``dsb(ishst)``."""
    k.machine.clear_page(k.cpu, table)
    k.machine.dsb()


def _bug(what: str) -> KernelBug:
    return KernelBug(f"BUG_ON: {what} (arch/arm64/mm/mmu.c)")


# --- __create_pgd_mapping (mmu.c) ----------------------------------------------------------------


def init_pte(k: Kernel, ptep: int, addr: int, end: int, phys: int, prot: int) -> None:
    """``init_pte()``: the PTEs of ``[addr, end)`` (one table), as one vectorised store.

    Per entry the kernel does ``__set_pte_nosync`` (barriers deferred to the
    fixmap clear) and ``BUG_ON(!pgattr_change_is_safe(old, new))``.
    """
    g = k.pgt
    n = (end - addr) >> g.PAGE_SHIFT
    values = g.pte_range(phys >> g.PAGE_SHIFT, n, prot)
    _check_and_store_ptes(k, ptep, values)


def _check_and_store_ptes(k: Kernel, ptep: int, values: U64Array, fresh: bool = False) -> None:
    # A table just allocated and cleared holds zeros: creating entries is always
    # safe, so the old values need not be read back for the BUG_ON.
    if not fresh:
        old = ptep_get_array(k, ptep, len(values))
        if not bool(np.all(pgattr_change_is_safe_array(old, values))):
            raise _bug("!pgattr_change_is_safe() in init_pte()")
    __set_ptes_nosync_array(k, ptep, values)


def _cont_chunks(
    first: int, n: int, step: int, addr: int, end: int, delta: int, size: int
) -> U64Array:
    """1 for each of ``n`` entries (``step`` bytes apart from ``first``) in a full cont chunk.

    A chunk ``[a, next)`` of ``alloc_init_cont_pte``/``alloc_init_cont_pmd`` gets
    the contiguous bit when ``(a | next | phys) & ~CONT_MASK == 0``: the whole
    aligned chunk lies in ``[addr, end)`` and the VA→PA offset ``delta`` is
    aligned too.
    """
    if delta & (size - 1):
        return np.zeros(n, dtype=np.uint64)
    va = np.uint64(first) + np.arange(n, dtype=np.uint64) * np.uint64(step)
    start = va & ~np.uint64(size - 1)
    ok = (start >= np.uint64(addr)) & (start + np.uint64(size) <= np.uint64(end))
    return ok.astype(np.uint64)


#: Per table type allocated by ``alloc_init_*``: its fixmap slot, the index of
#: ``addr`` in it, the parent's ``__pXd_populate``, the table descriptor bits and
#: the ``PXN_TABLE`` bit added with ``NO_EXEC_MAPPINGS``.
_NEW_TABLE: dict[
    int,
    tuple[
        Callable[[Kernel, int], int],
        Callable[[ArchPgtable, int], int],
        Callable[[Kernel, int, int, int], None],
        int,
        int,
    ],
] = {
    TABLE_PTE: (
        pte_set_fixmap,
        lambda g, a: g.pte_index(a),
        __pmd_populate,
        PMD_TYPE_TABLE | PMD_TABLE_UXN | PMD_TABLE_AF,
        PMD_TABLE_PXN,
    ),
    TABLE_PMD: (
        pmd_set_fixmap,
        lambda g, a: g.pmd_index(a),
        __pud_populate,
        PUD_TYPE_TABLE | PUD_TABLE_UXN | PUD_TABLE_AF,
        PUD_TABLE_PXN,
    ),
    TABLE_PUD: (
        pud_set_fixmap,
        lambda g, a: g.pud_index(a),
        __p4d_populate,
        P4D_TYPE_TABLE | P4D_TABLE_UXN | P4D_TABLE_AF,
        P4D_TABLE_PXN,
    ),
}


def _alloc_table(
    k: Kernel,
    pgtable_alloc: PgtableAllocFn | None,
    pgtable_type: int,
    parentp: int,
    addr: int,
    flags: int,
) -> int:
    """The "entry is none" branch of ``alloc_init_cont_pte()``/``_cont_pmd()``/``_pud()``.

    ``pgtable_alloc(type)`` a table, map it at its fixmap slot, clear it and
    ``__pXd_populate(parentp, phys, tableval)`` (``| PXN_TABLE`` with
    ``NO_EXEC_MAPPINGS``); returns the fixmap address of ``addr``'s entry.
    """
    set_fixmap, index, populate, tableval, table_pxn = _NEW_TABLE[pgtable_type]
    if flags & NO_EXEC_MAPPINGS:
        tableval |= table_pxn
    if pgtable_alloc is None:
        raise _bug("!pgtable_alloc")
    phys = pgtable_alloc(k, pgtable_type)
    tablep = set_fixmap(k, phys)
    init_clear_pgtable(k, tablep)
    tablep += 8 * index(k.pgt, addr)
    populate(k, parentp, phys, tableval)
    return tablep


def alloc_init_cont_pte(
    k: Kernel,
    pmdp: int,
    addr: int,
    end: int,
    phys: int,
    prot: int,
    pgtable_alloc: PgtableAllocFn | None,
    flags: int,
) -> None:
    """``alloc_init_cont_pte()``: PTEs of ``[addr, end)`` under ``*pmdp``, CONT where aligned.

    Allocates and populates the PTE table when ``*pmdp`` is none; the table is
    written through the ``FIX_PTE`` fixmap slot.
    """
    g = k.pgt
    pmd = ptep_get(k, pmdp)
    if pmd_sect(pmd):
        raise _bug("pmd_sect(pmd) in alloc_init_cont_pte()")
    fresh = pmd == 0
    if fresh:
        ptep = _alloc_table(k, pgtable_alloc, TABLE_PTE, pmdp, addr, flags)
    else:
        if pmd_bad(pmd):
            raise _bug("pmd_bad(pmd)")
        ptep = pte_set_fixmap_offset(k, pmdp, addr)
    n = (end - addr) >> g.PAGE_SHIFT
    values = g.pte_range(phys >> g.PAGE_SHIFT, n, prot)
    if not flags & NO_CONT_MAPPINGS:
        cont = _cont_chunks(addr, n, g.PAGE_SIZE, addr, end, phys - addr, g.CONT_PTE_SIZE)
        values |= cont << np.uint64(52)
    _check_and_store_ptes(k, ptep, values, fresh)
    pte_clear_fixmap(k)


def init_pmd(
    k: Kernel,
    pmdp: int,
    addr: int,
    end: int,
    phys: int,
    prot: int,
    pgtable_alloc: PgtableAllocFn | None,
    flags: int,
    cont: npt.NDArray[np.uint64] | None = None,
) -> None:
    """``init_pmd()``: the pmd entries of ``[addr, end)`` (one pmd table).

    Block mappings where ``(addr | next | phys)`` is PMD aligned (unless
    ``NO_BLOCK_MAPPINGS``), else a PTE table (``alloc_init_cont_pte``).  Runs
    of consecutive blocks are written with one check each (``set_pmd`` per
    entry accounted).  ``cont`` flags entries of full contiguous chunks.
    """
    g = k.pgt
    n = ((end - 1) >> g.PMD_SHIFT) - (addr >> g.PMD_SHIFT) + 1
    old_all = ptep_get_array(k, pmdp, n)
    sect_prot = mk_pmd_sect_prot(prot)
    run_start = -1
    run_vals: list[int] = []

    def flush_run() -> None:
        # pmd_set_huge() writes an entry only if pgattr_change_is_safe(old, new);
        # then BUG_ON(!pgattr_change_is_safe(old, *pmdp)).
        nonlocal run_start, run_vals
        if run_start < 0:
            return
        vals = np.array(run_vals, dtype=np.uint64)
        old = old_all[run_start : run_start + len(vals)]
        safe = pgattr_change_is_safe_array(old, vals)
        idx = np.flatnonzero(safe)
        if len(idx):
            breaks = np.flatnonzero(np.diff(idx) != 1)
            for lo, hi in zip(
                np.concatenate(([0], breaks + 1)).tolist(),
                np.concatenate((breaks + 1, [len(idx)])).tolist(),
                strict=True,
            ):
                a0, a1 = int(idx[lo]), int(idx[hi - 1]) + 1
                set_pmd_array(k, pmdp + 8 * (run_start + a0), vals[a0:a1])
        now = np.where(safe, vals, old)
        if not bool(np.all(pgattr_change_is_safe_array(old, now))):
            raise _bug("!pgattr_change_is_safe() in init_pmd()")
        run_start = -1
        run_vals = []

    i = 0
    a = addr
    pa = phys
    while a != end:
        nxt = g.pmd_addr_end(a, end)
        cbit = PTE_CONT if cont is not None and int(cont[i]) else 0
        if ((a | nxt | pa) & ~g.PMD_MASK) == 0 and not flags & NO_BLOCK_MAPPINGS:
            if run_start < 0:
                run_start = i
            run_vals.append(g.pfn_pmd(pa >> g.PAGE_SHIFT, sect_prot | cbit))
        else:
            flush_run()
            old_pmd = int(old_all[i])
            alloc_init_cont_pte(k, pmdp + 8 * i, a, nxt, pa, prot | cbit, pgtable_alloc, flags)
            if old_pmd != 0 and old_pmd != ptep_get(k, pmdp + 8 * i):
                raise _bug("pmd changed under an existing table in init_pmd()")
        pa += nxt - a
        a = nxt
        i += 1
    flush_run()


def alloc_init_cont_pmd(
    k: Kernel,
    pudp: int,
    addr: int,
    end: int,
    phys: int,
    prot: int,
    pgtable_alloc: PgtableAllocFn | None,
    flags: int,
) -> None:
    """``alloc_init_cont_pmd()``: pmd level of ``[addr, end)`` under ``*pudp`` (contPMDs)."""
    g = k.pgt
    pud = ptep_get(k, pudp)
    if pud_sect(pud):
        raise _bug("pud_sect(pud) in alloc_init_cont_pmd()")
    if pud == 0:
        pmdp = _alloc_table(k, pgtable_alloc, TABLE_PMD, pudp, addr, flags)
    else:
        if pud_bad(pud):
            raise _bug("pud_bad(pud)")
        pmdp = pmd_set_fixmap_offset(k, pudp, addr)
    n = ((end - 1) >> g.PMD_SHIFT) - (addr >> g.PMD_SHIFT) + 1
    cont = None
    if not flags & NO_CONT_MAPPINGS:
        cont = _cont_chunks(
            addr & g.PMD_MASK, n, g.PMD_SIZE, addr, end, phys - addr, g.CONT_PMD_SIZE
        )
    init_pmd(k, pmdp, addr, end, phys, prot, pgtable_alloc, flags, cont)
    pmd_clear_fixmap(k)


def alloc_init_pud(
    k: Kernel,
    p4dp: int,
    addr: int,
    end: int,
    phys: int,
    prot: int,
    pgtable_alloc: PgtableAllocFn | None,
    flags: int,
) -> None:
    """``alloc_init_pud()``: 1 GiB blocks (4K, aligned, blocks allowed), else the pmd level."""
    g = k.pgt
    if g.mm_pud_folded:
        pudp = p4dp
    else:
        p4d = ptep_get(k, p4dp)
        if p4d == 0:
            pudp = _alloc_table(k, pgtable_alloc, TABLE_PUD, p4dp, addr, flags)
        else:
            if p4d_bad(p4d):
                raise _bug("p4d_bad(p4d)")
            pudp = pud_set_fixmap_offset(k, p4dp, addr)
    a = addr
    pa = phys
    while True:
        old_pud = ptep_get(k, pudp)
        nxt = g.pud_addr_end(a, end)
        if (
            g.pud_sect_supported
            and ((a | nxt | pa) & ~g.PUD_MASK) == 0
            and not flags & NO_BLOCK_MAPPINGS
        ):
            new = g.pfn_pud(pa >> g.PAGE_SHIFT, mk_pud_sect_prot(prot))
            if pgattr_change_is_safe(old_pud, new):
                set_pud(k, pudp, new)
            if not pgattr_change_is_safe(old_pud, ptep_get(k, pudp)):
                raise _bug("!pgattr_change_is_safe() in alloc_init_pud()")
        else:
            alloc_init_cont_pmd(k, pudp, a, nxt, pa, prot, pgtable_alloc, flags)
            if old_pud != 0 and old_pud != ptep_get(k, pudp):
                raise _bug("pud changed under an existing table")
        pa += nxt - a
        a = nxt
        if a == end:
            break
        pudp += 8
    pud_clear_fixmap(k)


def __create_pgd_mapping(
    k: Kernel,
    pgdir: int,
    phys: int,
    virt: int,
    size: int,
    prot: int,
    pgtable_alloc: PgtableAllocFn | None,
    flags: int,
) -> None:
    """``__create_pgd_mapping(pgdir, phys, virt, size, prot, pgtable_alloc, flags)``.

    ``pgdir`` is the VA of the pgd (``swapper_pg_dir``'s image address for the
    kernel).  ``pgtable_alloc`` None means no table may be needed (permission
    updates of an existing mapping, ``update_mapping_prot``).
    """
    g = k.pgt
    if (phys ^ virt) & ~g.PAGE_MASK & ((1 << 64) - 1):
        raise KernelBug("WARN_ON: phys and virt have different offsets in the page")
    phys &= g.PAGE_MASK
    addr = virt & g.PAGE_MASK
    end = (virt + size + g.PAGE_SIZE - 1) & g.PAGE_MASK
    pgdp = pgd_offset_pgd(k, pgdir, addr)
    while True:
        nxt = g.pgd_addr_end(addr, end)
        # alloc_init_p4d(): the p4d is folded, so p4d_set_fixmap_offset() is pgdp itself.
        p4dp = p4d_offset(k, pgdp, addr)
        alloc_init_pud(k, p4dp, addr, nxt, phys, prot, pgtable_alloc, flags)
        phys += nxt - addr
        addr = nxt
        if addr == end:
            break
        pgdp += 8


def __map_memblock(k: Kernel, pgdp: int, start: int, end: int, prot: int, flags: int) -> None:
    """``__map_memblock(pgdp, start, end, prot, flags)``: linear-map ``[start, end)``."""
    __create_pgd_mapping(
        k, pgdp, start, k.pgt.va(start), end - start, prot, early_pgtable_alloc, flags
    )


def map_mem(k: Kernel, pgdp: int, kernel_start: int, kernel_end: int) -> None:
    """``map_mem(pgdp)``: map every memblock memory range in the linear map.

    ``[kernel_start, kernel_end)`` (the physical ``[_text, __init_begin)``) is
    marked NOMAP for the main loop and then mapped on its own with
    ``NO_CONT_MAPPINGS`` only, so its permissions can later change in place
    (``mark_linear_text_alias_ro``).  With ``force_pte_mapping()`` every other
    range gets ``NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS``.
    """
    mb = k.memblock
    if mb is None:
        raise KernelBug("map_mem() without memblock")
    flags = NO_EXEC_MAPPINGS
    if force_pte_mapping(k):
        flags |= NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS
    memblock_mark_nomap(mb, kernel_start, kernel_end - kernel_start)
    for r in list(mb.memory.regions):
        if r.flags & MEMBLOCK_NOMAP or r.size == 0:
            continue
        __map_memblock(k, pgdp, r.base, r.end, PAGE_KERNEL, flags)
    # As mmu.c: only NO_CONT_MAPPINGS here, so the alias may be block mapped even when
    # the rest of the linear map is forced to PTEs (its permissions only ever change
    # in place, by update_mapping_prot()).
    __map_memblock(k, pgdp, kernel_start, kernel_end, PAGE_KERNEL, NO_CONT_MAPPINGS)
    memblock_clear_nomap(mb, kernel_start, kernel_end - kernel_start)


# --- splitting (mmu.c, BBML2 series; kpkeys v6 15/30 hooks) --------------------------------------


def _count_split(k: Kernel, kind: str) -> None:
    stats = k.linear_map_stats
    stats[kind] = stats.get(kind, 0) + 1
    k.machine.emit(LINEAR_MAP_SPLIT_BY_KIND[kind])
    k.machine.emit(LINEAR_MAP_SPLIT)


def linear_map_split_count(k: Kernel) -> int:
    """Total split steps performed so far (all kinds)."""
    return sum(k.linear_map_stats.get(kind, 0) for kind in SPLIT_KINDS)


def split_pgtable_alloc(k: Kernel, pgtable_type: int, gfp: int) -> int | None:
    """``split_pgtable_alloc(type, gfp)``: a ctor'd table for a split; its phys, or None."""
    pfn = pagetable_alloc(k, gfp, 0)
    if pfn is None:
        return None
    if pgtable_type == TABLE_PTE:
        ok = pagetable_pte_ctor(k, k.init_mm, pfn)
    else:
        ok = pagetable_pmd_ctor(k, k.init_mm, pfn)
    if not ok:
        pagetable_free(k, pfn, 0)
        return None
    return pfn << k.pgt.PAGE_SHIFT


def split_contpte(k: Kernel, ptep: int) -> None:
    """``split_contpte(ptep)``: clear CONT on the aligned group of ``CONT_PTES`` entries."""
    g = k.pgt
    group = ptep & ~(8 * g.CONT_PTES - 1)
    vals = ptep_get_array(k, group, g.CONT_PTES)
    set_ptes_array(k, group, ptes_mknoncont(vals))
    _count_split(k, "split_contpte")


def _split_prots(
    block: int, tableprot: int, table_pxn: int, type_mask: int, leaf_type: int, to_cont: bool
) -> tuple[int, int]:
    """``split_pmd()``/``split_pud()``: the table descriptor's bits and the new entries' prot.

    The block's attributes with the next level's leaf type (``| PTE_CONT`` if
    ``to_cont``); ``PXN_TABLE`` on the table when the block had ``PXN``.
    """
    prot = block & ~PTE_ADDR_MASK & ((1 << 64) - 1)
    if prot & PMD_SECT_PXN:
        tableprot |= table_pxn
    prot = (prot & ~type_mask) | leaf_type
    if to_cont:
        prot |= PTE_CONT
    return tableprot, prot


def _install_split_table(
    k: Kernel,
    populate: Callable[[Kernel, int, int, int], None],
    entryp: int,
    table_phys: int,
    tableprot: int,
    kind: str,
) -> None:
    """Tail of ``split_pmd()``/``split_pud()``: ``dsb(ishst)``, the table replaces the block."""
    k.machine.dsb()
    populate(k, entryp, table_phys, tableprot)
    _count_split(k, kind)


def split_pmd(k: Kernel, pmdp: int, pmd: int, gfp: int, to_cont: bool) -> int:
    """``split_pmd(pmdp, pmd, gfp, to_cont)``: a PMD block → a PTE table (contPTE if ``to_cont``).

    The table is filled through its linear-map alias (``__set_pte`` each),
    ``dsb(ishst)``, then the table descriptor replaces the block (BBML2: no BBM).
    """
    g = k.pgt
    pfn = g.pmd_pfn(pmd)
    pte_phys = split_pgtable_alloc(k, TABLE_PTE, gfp)
    if pte_phys is None:
        return -ENOMEM
    tableprot, prot = _split_prots(
        pmd,
        PMD_TYPE_TABLE | PMD_TABLE_UXN | PMD_TABLE_AF,
        PMD_TABLE_PXN,
        PTE_TYPE_MASK,
        PTE_TYPE_PAGE,
        to_cont,
    )
    set_ptes_array(k, g.va(pte_phys), g.pte_range(pfn, g.PTRS_PER_PTE, prot))
    _install_split_table(k, __pmd_populate, pmdp, pte_phys, tableprot, "split_pmd")
    return 0


def split_contpmd(k: Kernel, pmdp: int) -> None:
    """``split_contpmd(pmdp)``: clear CONT on the aligned group of ``CONT_PMDS`` entries."""
    g = k.pgt
    group = pmdp & ~(8 * g.CONT_PMDS - 1)
    vals = ptep_get_array(k, group, g.CONT_PMDS)
    set_pmd_array(k, group, ptes_mknoncont(vals))
    _count_split(k, "split_contpmd")


def split_pud(k: Kernel, pudp: int, pud: int, gfp: int, to_cont: bool) -> int:
    """``split_pud(pudp, pud, gfp, to_cont)``: a PUD block → a pmd table of (cont)PMD blocks."""
    g = k.pgt
    step = g.PMD_SIZE >> g.PAGE_SHIFT
    pfn = g.pud_pfn(pud)
    pmd_phys = split_pgtable_alloc(k, TABLE_PMD, gfp)
    if pmd_phys is None:
        return -ENOMEM
    tableprot, prot = _split_prots(
        pud,
        PUD_TYPE_TABLE | PUD_TABLE_UXN | PUD_TABLE_AF,
        PUD_TABLE_PXN,
        PMD_TYPE_MASK,
        PMD_TYPE_SECT,
        to_cont,
    )
    pfns = np.uint64(pfn) + np.arange(g.PTRS_PER_PMD, dtype=np.uint64) * np.uint64(step)
    set_pmd_array(k, g.va(pmd_phys), g.pfn_ptes(pfns, prot))
    _install_split_table(k, __pud_populate, pudp, pmd_phys, tableprot, "split_pud")
    return 0


def _split_kernel_leaf_mapping_locked(k: Kernel, addr: int) -> int:
    """``split_kernel_leaf_mapping_locked(addr)``: make ``addr`` a leaf boundary."""
    g = k.pgt
    if addr & (g.PGDIR_SIZE - 1) == 0:
        return 0
    pgdp = pgd_offset_k(k, addr)
    if g.mm_pud_folded:
        pudp = pgdp
    else:
        if ptep_get(k, pgdp) == 0:  # !p4d_present
            return 0
        if addr & (g.PUD_SIZE - 1) == 0:
            return 0
        pudp = pud_offset(k, p4d_offset(k, pgdp, addr), addr)
    pud = ptep_get(k, pudp)
    if not pud_present(pud):
        return 0
    if pud_leaf(pud):
        ret = split_pud(k, pudp, pud, _SPLIT_GFP, True)
        if ret:
            return ret
    if addr & (g.CONT_PMD_SIZE - 1) == 0:
        return 0
    pmdp = pmd_offset(k, pudp, addr)
    pmd = ptep_get(k, pmdp)
    if not pmd_present(pmd):
        return 0
    if pmd_leaf(pmd):
        if pmd_cont(pmd):
            split_contpmd(k, pmdp)
        if addr & (g.PMD_SIZE - 1) == 0:
            return 0
        ret = split_pmd(k, pmdp, pmd, _SPLIT_GFP, True)
        if ret:
            return ret
    if addr & (g.CONT_PTE_SIZE - 1) == 0:
        return 0
    ptep = pte_offset_kernel(k, pmdp, addr)
    pte = ptep_get(k, ptep)
    if not pte_present(pte):
        return 0
    if pte_cont(pte):
        split_contpte(k, ptep)
    return 0


def _mutex_lock_split(k: Kernel) -> None:
    if k.pgtable_split_lock:
        raise KernelBug(
            "deadlock: pgtable_split_lock taken while held (a split allocating a page table "
            "whose pkey change needs another split, spec §4.12)"
        )
    k.pgtable_split_lock = True


def _lazy_enter(k: Kernel) -> bool:
    if getattr(k, "sched", None) is None:
        return False
    from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_mode_enable

    lazy_mmu_mode_enable(k)
    return True


def _lazy_leave(k: Kernel, entered: bool) -> None:
    if not entered:
        return
    from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_mode_disable

    lazy_mmu_mode_disable(k)


def split_kernel_leaf_mapping(k: Kernel, start: int, end: int) -> int:
    """``split_kernel_leaf_mapping(start, end)``: make ``start`` and ``end`` leaf boundaries.

    0 without BBML2_NOABORT or with a PTE-forced map (nothing to split);
    ``-EINVAL`` for unaligned bounds; ``-ENOMEM`` when a table cannot be
    allocated or ``k.prepare_direct_map_split`` fails.
    """
    if not system_supports_bbml2_noabort(k):
        return 0
    if force_pte_mapping(k):
        return 0
    mask = k.pgt.PAGE_SIZE - 1
    if start & mask or end & mask:
        return -EINVAL
    ret: int = k.prepare_direct_map_split(k)
    if ret:
        return ret
    while True:
        _mutex_lock_split(k)
        if k.ready_for_direct_map_split(k):
            break
        k.pgtable_split_lock = False
        ret = k.prepare_direct_map_split(k)
        if ret:
            return ret
    entered = _lazy_enter(k)
    try:
        ret = _split_kernel_leaf_mapping_locked(k, start)
        if not ret:
            ret = _split_kernel_leaf_mapping_locked(k, end)
    finally:
        _lazy_leave(k, entered)
        k.pgtable_split_lock = False
    return ret


# --- pageattr.c ----------------------------------------------------------------------------------


def _pageattr_ptes(k: Kernel, ptep: int, n: int, set_mask: int, clear_mask: int) -> None:
    """``pageattr_pte_entry`` on ``n`` consecutive PTEs: ``__set_pte(masked)`` each."""
    old = ptep_get_array(k, ptep, n)
    set_ptes_array(k, ptep, ptes_set_pageattr(old, set_mask, clear_mask))


def _pageattr_pmds(
    k: Kernel, pmdp: int, addr: int, end: int, set_mask: int, clear_mask: int
) -> int:
    g = k.pgt
    n = ((end - 1) >> g.PMD_SHIFT) - (addr >> g.PMD_SHIFT) + 1
    vals = ptep_get_array(k, pmdp, n)
    run_start = -1
    run: list[int] = []

    def flush() -> None:
        nonlocal run_start, run
        if run_start >= 0:
            set_pmd_array(k, pmdp + 8 * run_start, np.array(run, dtype=np.uint64))
        run_start = -1
        run = []

    a = addr
    for i in range(n):
        nxt = g.pmd_addr_end(a, end)
        pmd = int(vals[i])
        if pmd == 0:
            flush()
        elif pmd_sect(pmd):
            if nxt - a != g.PMD_SIZE:
                flush()
                return -EINVAL  # WARN_ON_ONCE: a partially covered block
            if run_start < 0:
                run_start = i
            run.append((pmd & ~clear_mask) | set_mask)
        elif pmd_leaf(pmd) or not pmd_present(pmd):
            flush()
        else:
            flush()
            ptep = g.va(pmd & PTE_ADDR_MASK) + 8 * g.pte_index(a)
            _pageattr_ptes(k, ptep, (nxt - a) >> g.PAGE_SHIFT, set_mask, clear_mask)
        a = nxt
    flush()
    return 0


def _pageattr_walk(k: Kernel, start: int, end: int, set_mask: int, clear_mask: int) -> int:
    """``walk_kernel_page_table_range_lockless(start, end, &pageattr_ops)``."""
    g = k.pgt
    addr = start
    while addr < end:
        nxt_pgd = g.pgd_addr_end(addr, end)
        pgdp = pgd_offset_k(k, addr)
        if ptep_get(k, pgdp) == 0:
            addr = nxt_pgd
            continue
        a = addr
        while a < nxt_pgd:
            nxt = g.pud_addr_end(a, nxt_pgd)
            pudp = pgdp if g.mm_pud_folded else pud_offset(k, pgdp, a)
            pud = ptep_get(k, pudp)
            if pud == 0:
                a = nxt
                continue
            if pud_sect(pud):
                if nxt - a != g.PUD_SIZE:
                    return -EINVAL  # WARN_ON_ONCE: a partially covered block
                set_pud(k, pudp, (pud & ~clear_mask) | set_mask)
            elif not (pud_leaf(pud) or not pud_present(pud)):
                pmdp = g.va(pud & PTE_ADDR_MASK) + 8 * g.pmd_index(a)
                ret = _pageattr_pmds(k, pmdp, a, nxt, set_mask, clear_mask)
                if ret:
                    return ret
            a = nxt
        addr = nxt_pgd
    return 0


def update_range_prot(k: Kernel, start: int, size: int, set_mask: int, clear_mask: int) -> int:
    """``update_range_prot(start, size, set_mask, clear_mask)``: split at both ends, then rewrite.

    Every leaf in the range gets ``(val & ~clear_mask) | set_mask`` through
    ``set_pud``/``set_pmd``/``__set_pte`` inside a lazy MMU section.  No TLB flush.
    """
    ret = split_kernel_leaf_mapping(k, start, start + size)
    if ret:
        k.printk(f"WARNING: update_range_prot: split_kernel_leaf_mapping() returned {ret}")
        return ret
    entered = _lazy_enter(k)
    try:
        ret = _pageattr_walk(k, start, start + size, set_mask, clear_mask)
    finally:
        _lazy_leave(k, entered)
    if ret:
        k.printk(
            f"WARNING: update_range_prot: partially covered block in [{start:#x}, "
            f"{start + size:#x})"
        )
    return ret


def __change_memory_common(k: Kernel, start: int, size: int, set_mask: int, clear_mask: int) -> int:
    """``__change_memory_common(start, size, set_mask, clear_mask)``.

    ``update_range_prot`` then ``flush_tlb_kernel_range`` — skipped when the
    only change is setting PTE_VALID (an invalid entry is never cached).
    Emits ``change_memory_common`` once per call.
    """
    k.machine.emit(CHANGE_MEMORY_COMMON)
    ret = update_range_prot(k, start, size, set_mask, clear_mask)
    if set_mask != PTE_VALID or clear_mask:
        flush_tlb_kernel_range(k, start, start + size)
    return ret


def change_memory_common(
    k: Kernel, addr: int, numpages: int, set_mask: int, clear_mask: int
) -> int:
    """``change_memory_common(addr, numpages, set_mask, clear_mask)`` (pageattr.c).

    The range must lie in one ``VM_ALLOC`` area without ``VM_ALLOW_HUGE_VMAP``
    (``k.find_vm_area``), else ``-EINVAL`` — linear-map addresses included.
    With rodata=full a read-only change is applied to the linear alias of each
    backing page too; then ``vm_unmap_aliases`` and ``__change_memory_common``.
    """
    g = k.pgt
    start = addr
    size = g.PAGE_SIZE * numpages
    if addr & (g.PAGE_SIZE - 1):
        start &= g.PAGE_MASK
        k.printk("WARNING: change_memory_common: unaligned address")
    end = start + size
    area = k.find_vm_area(k, addr)
    if (
        area is None
        or end > area.addr + area.size
        or (area.flags & (VM_ALLOC | VM_ALLOW_HUGE_VMAP)) != VM_ALLOC
    ):
        return -EINVAL
    if not numpages:
        return 0
    if k.config.rodata_full and PTE_RDONLY in (set_mask, clear_mask):
        for pfn in list(area.pages):
            __change_memory_common(k, g.va(pfn << g.PAGE_SHIFT), g.PAGE_SIZE, set_mask, clear_mask)
    k.vm_unmap_aliases(k)
    return __change_memory_common(k, start, size, set_mask, clear_mask)


def set_memory_ro(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_ro(addr, numpages)``: set PTE_RDONLY, clear PTE_WRITE (vmalloc areas only)."""
    return change_memory_common(k, addr, numpages, PTE_RDONLY, PTE_WRITE)


def set_memory_rw(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_rw(addr, numpages)``: set PTE_WRITE, clear PTE_RDONLY (vmalloc areas only)."""
    return change_memory_common(k, addr, numpages, PTE_WRITE, PTE_RDONLY)


def set_memory_nx(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_nx(addr, numpages)``: set PXN (no BTI, so PTE_MAYBE_GP is 0)."""
    return change_memory_common(k, addr, numpages, PTE_PXN, 0)


def set_memory_x(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_x(addr, numpages)``: clear PXN."""
    return change_memory_common(k, addr, numpages, 0, PTE_PXN)


def set_memory_valid(k: Kernel, addr: int, numpages: int, enable: bool) -> int:
    """``set_memory_valid(addr, numpages, enable)``: set or clear PTE_VALID (any kernel range)."""
    size = k.pgt.PAGE_SIZE * numpages
    if enable:
        return __change_memory_common(k, addr, size, PTE_VALID, 0)
    return __change_memory_common(k, addr, size, 0, PTE_VALID)


def set_memory_pkey(k: Kernel, addr: int, numpages: int, pkey: int) -> int:
    """``set_memory_pkey(addr, numpages, pkey)`` (kpkeys v5 06/18; spec §2.6).

    1. no-op (0) without POE; 2. ``-EINVAL`` unless ``addr`` is a linear-map
    address; 3. ``-EINVAL`` if ``pkey >= arch_max_pkey()``; 4. set
    ``PTE_PO_IDX_0/1/2`` (bits 60–62) from the pkey's bits, clear
    ``PTE_PO_IDX_MASK``; 5. ``__change_memory_common`` over
    ``numpages`` pages (which splits block mappings at both ends first).
    """
    if not k.machine.has_pkeys:
        return 0
    if not k.pgt.is_lm_address(addr):
        return -EINVAL
    if pkey >= arch_max_pkey(k):
        return -EINVAL
    set_prot = 0
    if pkey & 1:
        set_prot |= PTE_PO_IDX_0
    if pkey & 2:
        set_prot |= PTE_PO_IDX_1
    if pkey & 4:
        set_prot |= PTE_PO_IDX_2
    return __change_memory_common(k, addr, k.pgt.PAGE_SIZE * numpages, set_prot, PTE_PO_IDX_MASK)


def set_direct_map_invalid_noflush(k: Kernel, pfn: int) -> int:
    """``set_direct_map_invalid_noflush(page)``: clear PTE_VALID on the page's alias; no flush."""
    if not can_set_direct_map(k):
        return 0
    g = k.pgt
    return update_range_prot(k, g.va(pfn << g.PAGE_SHIFT), g.PAGE_SIZE, 0, PTE_VALID)


def set_direct_map_default_noflush(k: Kernel, pfn: int) -> int:
    """``set_direct_map_default_noflush(page)``: valid and writable again (pkey kept); no flush."""
    if not can_set_direct_map(k):
        return 0
    g = k.pgt
    return update_range_prot(
        k, g.va(pfn << g.PAGE_SHIFT), g.PAGE_SIZE, PTE_VALID | PTE_WRITE, PTE_RDONLY
    )


def set_direct_map_valid_noflush(k: Kernel, pfn: int, nr: int, valid: bool) -> int:
    """``set_direct_map_valid_noflush(page, nr, valid)``: ``set_memory_valid`` of the alias.

    (``set_memory_valid`` flushes when clearing; "noflush" refers to the
    callers' contract.)
    """
    if not can_set_direct_map(k):
        return 0
    g = k.pgt
    return set_memory_valid(k, g.va(pfn << g.PAGE_SHIFT), nr, valid)


# --- a ptdump-style summary ----------------------------------------------------------------------


def linear_map_leaves(k: Kernel) -> dict[str, int]:
    """Leaves of the linear map by kind, and its page-table pages by level.

    Keys: ``pud``, ``contpmd``, ``pmd``, ``contpte``, ``pte`` (valid leaf
    descriptors of each kind), ``invalid`` (non-zero, non-valid leaves),
    ``tables_pud``/``tables_pmd``/``tables_pte`` and ``pgtable_pages`` (tables
    reachable from the linear-map entries of ``swapper_pg_dir``, which itself
    is not counted).  Reads the tables as the walker does (physical reads, no
    TLB fills), so reporting does not perturb the run's event counts.
    """
    g = k.pgt
    mem = k.machine.mem
    out = dict.fromkeys(LEAF_CENSUS_KEYS, 0)
    mask = np.uint64(PTE_ADDR_MASK)
    shift = g.PAGE_SHIFT
    v = np.uint64(PTE_VALID)
    t = np.uint64(2)
    c = np.uint64(PTE_CONT)
    z = np.uint64(0)

    def frame(pa: int) -> U64Array:
        return mem.frame_ro(pa >> shift)

    def pte_table(pa: int) -> None:
        out["tables_pte"] += 1
        e = frame(pa)
        valid = (e & v) != z
        cont = (e & c) != z
        out["contpte"] += int(np.count_nonzero(valid & cont))
        out["pte"] += int(np.count_nonzero(valid & ~cont))
        out["invalid"] += int(np.count_nonzero(~valid & (e != z)))

    def pmd_table(pa: int) -> None:
        out["tables_pmd"] += 1
        e = frame(pa)
        valid = (e & v) != z
        table = valid & ((e & t) != z)
        block = valid & ~table
        cont = (e & c) != z
        out["contpmd"] += int(np.count_nonzero(block & cont))
        out["pmd"] += int(np.count_nonzero(block & ~cont))
        out["invalid"] += int(np.count_nonzero(~valid & (e != z)))
        for nxt in (e[table] & mask).tolist():
            pte_table(int(nxt))

    def pud_level(entries: U64Array) -> None:
        valid = (entries & v) != z
        table = valid & ((entries & t) != z)
        out["pud"] += int(np.count_nonzero(valid & ~table))
        out["invalid"] += int(np.count_nonzero(~valid & (entries != z)))
        for nxt in (entries[table] & mask).tolist():
            pmd_table(int(nxt))

    root = frame(g.pa_symbol(k.swapper_pg_dir))
    lo = g.pgd_index(g.PAGE_OFFSET)
    hi = g.pgd_index(g.PAGE_END - 1)
    top = root[lo : hi + 1]
    if g.mm_pud_folded:
        sel = top[(top & v) != z]
        pmd_tables = (sel[(sel & t) != z] & mask).tolist()
        out["invalid"] += int(np.count_nonzero(((top & v) == z) & (top != z)))
        for pa in pmd_tables:
            pmd_table(int(pa))
    else:
        for pa in (top[(top & v) != z] & mask).tolist():
            out["tables_pud"] += 1
            pud_level(frame(int(pa)))
    out["pgtable_pages"] = out["tables_pud"] + out["tables_pmd"] + out["tables_pte"]
    return out
