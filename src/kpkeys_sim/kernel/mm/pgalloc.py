"""Page-table page allocation: ``pagetable_alloc``, the ctors/dtors, ``*_alloc_one``, ``__*_alloc``.

Sources: ``include/linux/mm.h`` (``pagetable_alloc``, ``pagetable_free``,
``__pagetable_ctor``, ``pagetable_*_ctor``, ``pagetable_dtor``),
``include/asm-generic/pgalloc.h`` (``__pte_alloc_one*``, ``pmd_alloc_one``,
``__pud_alloc_one``, ``__p4d_alloc_one``, ``__pgd_alloc``, the frees),
``arch/arm64/mm/pgd.c`` (``pgd_alloc``: a page when the pgd is page sized (4K),
else an object of ``pgd_cache``), ``mm/memory.c`` (``__pte_alloc``,
``pmd_install``, ``__pte_alloc_kernel``, ``__pmd_alloc``, ``__pud_alloc``,
``__p4d_alloc``), ``include/linux/mm.h`` (``pte_alloc``, ``pmd_alloc``,
``pud_alloc``, ``p4d_alloc``, ``pte_alloc_map``); spec kpkeys-series.md
§3.3 step 4 (v5 ctor/dtor), §3.4 (v6/v7 allocator hooks).

Hooks for kpkeys (installed on the kernel object):

* ``k.pgtable_ctor_hooks``: ``hook(k, pfn, order, level) -> bool | None`` run by
  every ``pagetable_*_ctor`` before the page is marked a page table; ``False``
  makes the ctor fail and the caller frees the page and returns None (v5 12/18:
  ``__pagetable_ctor`` returns bool).  ``k.pgtable_dtor_hooks``:
  ``hook(k, pfn, order, level) -> None`` run by ``pagetable_dtor``.
* ``k.pgtable_alloc_hook(k, gfp, order) -> pfn | None`` and
  ``k.pgtable_free_hook(k, pfn, order)``: when set they replace the buddy
  allocator under ``pagetable_alloc``/``pagetable_free`` (v6/v7
  ``kpkeys_pgtable_alloc``/``kpkeys_pgtable_free``).

Model choices: a table page is its pfn (``ptdesc``/``struct page *``); every
``*_alloc_one`` returns the pfn and every ``*_free`` takes it, except the pgd,
which is a pointer (VA) as in Linux because on 16K/64K it is a sub-page slab
object.  ``level`` is one of ``"pte"``, ``"pmd"``, ``"pud"``, ``"p4d"``,
``"pgd"``.  ``PG_table`` is set on every page of the block (Linux sets the
page type on the folio).  Locks (``mm->page_table_lock``, the split pmd/pte
locks) are ``mm.page_table_lock``; re-taking it is a :class:`KernelBug`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from kpkeys_sim.kernel.errors import ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.gfp import (
    __GFP_COMP,
    __GFP_HIGHMEM,
    GFP_PGTABLE_KERNEL,
    GFP_PGTABLE_USER,
)
from kpkeys_sim.kernel.mm.mm_types import mm_struct
from kpkeys_sim.kernel.mm.page import PG_table
from kpkeys_sim.kernel.mm.page_alloc import BuddyAllocator, __free_pages, alloc_pages
from kpkeys_sim.kernel.mm.pgtable import (
    p4d_offset,
    p4d_populate,
    pmd_offset,
    pmd_populate,
    pmd_populate_kernel,
    pte_offset_kernel,
    pte_offset_map,
    pud_offset,
    pud_populate,
)
from kpkeys_sim.kernel.mm.slab import kmem_cache_alloc, kmem_cache_free
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "PGTABLE_ALLOC",
    "PGTABLE_FREE",
    "PGTABLE_LEVELS",
    "__p4d_alloc",
    "__pgd_alloc",
    "__pmd_alloc",
    "__pte_alloc",
    "__pte_alloc_kernel",
    "__pud_alloc",
    "mm_dec_nr_pmds",
    "mm_dec_nr_ptes",
    "mm_dec_nr_puds",
    "mm_inc_nr_pmds",
    "mm_inc_nr_ptes",
    "mm_inc_nr_puds",
    "p4d_alloc",
    "p4d_alloc_one",
    "p4d_free",
    "pagetable_alloc",
    "pagetable_dtor",
    "pagetable_dtor_free",
    "pagetable_free",
    "pagetable_p4d_ctor",
    "pagetable_pgd_ctor",
    "pagetable_pmd_ctor",
    "pagetable_pte_ctor",
    "pagetable_pud_ctor",
    "pgd_alloc",
    "pgd_free",
    "pgdir_is_page_size",
    "pgtable_cache_init",
    "pmd_alloc",
    "pmd_alloc_one",
    "pmd_free",
    "pmd_install",
    "pte_alloc",
    "pte_alloc_kernel",
    "pte_alloc_map",
    "pte_alloc_one",
    "pte_alloc_one_kernel",
    "pte_free",
    "pte_free_kernel",
    "pud_alloc",
    "pud_alloc_one",
    "pud_free",
]

PGTABLE_LEVELS = ("pte", "pmd", "pud", "p4d", "pgd")

PGTABLE_ALLOC = declare_event(
    "pgtable_alloc", "page-table pages allocated by pagetable_alloc (count = pages)", "kernel"
)
PGTABLE_FREE = declare_event(
    "pgtable_free", "page-table pages freed by pagetable_free (count = pages)", "kernel"
)
_CTOR_EVENT = {
    lv: declare_event(
        f"pgtable_alloc_{lv}", f"{lv} page-table pages constructed (pagetable_{lv}_ctor)", "kernel"
    )
    for lv in PGTABLE_LEVELS
}
_DTOR_EVENT = {
    lv: declare_event(
        f"pgtable_free_{lv}", f"{lv} page-table pages destructed (pagetable_dtor)", "kernel"
    )
    for lv in PGTABLE_LEVELS
}
_TABLE = np.uint32(1 << PG_table)
_NOT_TABLE = np.uint32(~(1 << PG_table) & 0xFFFFFFFF)
_TABLE_BIT = 1 << PG_table
_NOT_TABLE_BITS = ~(1 << PG_table) & 0xFFFFFFFF


def _zone(k: Kernel) -> BuddyAllocator:
    zone = k.zone
    if zone is None:
        raise KernelBug("pagetable_alloc() before mem_init(): no buddy allocator")
    return zone


@contextmanager
def _page_table_lock(mm: mm_struct) -> Iterator[None]:
    """``spin_lock(&mm->page_table_lock)`` … ``spin_unlock``."""
    if mm.page_table_lock:
        raise KernelBug(f"BUG: spinlock recursion on {mm!r}->page_table_lock")
    mm.page_table_lock = True
    try:
        yield
    finally:
        mm.page_table_lock = False


# --- pagetable_alloc / pagetable_free ------------------------------------------------------------


def pagetable_alloc(k: Kernel, gfp: int, order: int = 0) -> int | None:
    """``pagetable_alloc(gfp, order)``: a page-table block's head pfn, or None.

    ``k.pgtable_alloc_hook`` when set (kpkeys v6/v7), else
    ``alloc_pages(gfp | __GFP_COMP, order)`` from the buddy allocator (which
    zeroes ``__GFP_ZERO`` pages with a checked store through the linear map).
    Before ``mem_init()`` there is no memory to allocate: None.
    """
    hook = k.pgtable_alloc_hook
    if hook is not None:
        pfn: int | None = hook(k, gfp, order)
    elif k.zone is None:
        # Before mem_init() the buddy allocator manages no memory: alloc_pages()
        # returns NULL (with a "page allocation failure" warning).
        k.printk(f"page allocation failure: order:{order}, before mem_init()")
        return None
    else:
        pfn = alloc_pages(k.zone, gfp | __GFP_COMP if order else gfp, order)
    if pfn is None:
        return None
    ins = k.machine.instruments
    if ins.active:
        ins.emit(PGTABLE_ALLOC, 1 << order)
    return pfn


def pagetable_free(k: Kernel, pfn: int, order: int = 0) -> None:
    """``pagetable_free(ptdesc)``: ``k.pgtable_free_hook`` when set, else ``__free_pages``."""
    ins = k.machine.instruments
    if ins.active:
        ins.emit(PGTABLE_FREE, 1 << order)
    hook = k.pgtable_free_hook
    if hook is not None:
        hook(k, pfn, order)
    else:
        __free_pages(_zone(k), pfn, order)


# --- ctors and dtor ------------------------------------------------------------------------------


def __pagetable_ctor(k: Kernel, pfn: int, order: int, level: str) -> bool:
    """``__pagetable_ctor``: the ctor hooks (any False fails it), then mark ``PG_table``."""
    for hook in k.pgtable_ctor_hooks:
        if hook(k, pfn, order, level) is False:
            return False
    mm = k.mem_map
    if mm is not None:
        if order == 0:
            i = mm.idx(pfn)
            flags = mm.flags
            flags[i] = flags.item(i) | _TABLE_BIT
        else:
            i = mm.check_range(pfn, 1 << order)
            mm.flags[i : i + (1 << order)] |= _TABLE
    ins = k.machine.instruments
    if ins.active:
        ins.emit(_CTOR_EVENT[level], 1 << order)
    return True


def pagetable_pte_ctor(k: Kernel, mm: mm_struct | None, pfn: int, order: int = 0) -> bool:
    """``pagetable_pte_ctor(mm, ptdesc)`` (the split ptlock always initialises in the model)."""
    return __pagetable_ctor(k, pfn, order, "pte")


def pagetable_pmd_ctor(k: Kernel, mm: mm_struct | None, pfn: int, order: int = 0) -> bool:
    """``pagetable_pmd_ctor(mm, ptdesc)``."""
    return __pagetable_ctor(k, pfn, order, "pmd")


def pagetable_pud_ctor(k: Kernel, pfn: int, order: int = 0) -> bool:
    """``pagetable_pud_ctor(ptdesc)`` (bool since kpkeys v5 12/18)."""
    return __pagetable_ctor(k, pfn, order, "pud")


def pagetable_p4d_ctor(k: Kernel, pfn: int, order: int = 0) -> bool:
    """``pagetable_p4d_ctor(ptdesc)``."""
    return __pagetable_ctor(k, pfn, order, "p4d")


def pagetable_pgd_ctor(k: Kernel, pfn: int, order: int = 0) -> bool:
    """``pagetable_pgd_ctor(ptdesc)``."""
    return __pagetable_ctor(k, pfn, order, "pgd")


def pagetable_dtor(k: Kernel, pfn: int, order: int = 0, level: str | None = None) -> None:
    """``pagetable_dtor(ptdesc)``: dtor hooks (kpkeys v5: reset the pkey), clear ``PG_table``."""
    for hook in k.pgtable_dtor_hooks:
        hook(k, pfn, order, level)
    mm = k.mem_map
    if mm is not None:
        if order == 0:
            i = mm.idx(pfn)
            flags = mm.flags
            flags[i] = flags.item(i) & _NOT_TABLE_BITS
        else:
            i = mm.check_range(pfn, 1 << order)
            mm.flags[i : i + (1 << order)] &= _NOT_TABLE
    if level is not None:
        ins = k.machine.instruments
        if ins.active:
            ins.emit(_DTOR_EVENT[level], 1 << order)


def pagetable_dtor_free(k: Kernel, pfn: int, order: int = 0, level: str | None = None) -> None:
    """``pagetable_dtor_free(ptdesc)``: dtor, then ``pagetable_free``."""
    pagetable_dtor(k, pfn, order, level)
    pagetable_free(k, pfn, order)


def _alloc_ctor(k: Kernel, gfp: int, level: str, mm: mm_struct | None) -> int | None:
    pfn = pagetable_alloc(k, gfp, 0)
    if pfn is None:
        return None
    if level == "pte":
        ok = __pagetable_ctor(k, pfn, 0, "pte")  # pagetable_pte_ctor(mm, pfn)
    elif level == "pmd":
        ok = pagetable_pmd_ctor(k, mm, pfn)
    elif level == "pud":
        ok = pagetable_pud_ctor(k, pfn)
    else:
        ok = pagetable_p4d_ctor(k, pfn)
    if not ok:
        pagetable_free(k, pfn, 0)
        return None
    return pfn


def _gfp_for(k: Kernel, mm: mm_struct) -> int:
    return GFP_PGTABLE_KERNEL if mm is k.init_mm else GFP_PGTABLE_USER


# --- *_alloc_one / *_free (asm-generic/pgalloc.h) ------------------------------------------------


def pte_alloc_one_kernel(k: Kernel) -> int | None:
    """``pte_alloc_one_kernel(&init_mm)``: a kernel PTE table (GFP_PGTABLE_KERNEL); pfn/None."""
    return _alloc_ctor(k, GFP_PGTABLE_KERNEL & ~__GFP_HIGHMEM, "pte", k.init_mm)


def pte_alloc_one(k: Kernel, mm: mm_struct) -> int | None:
    """``pte_alloc_one(mm)``: a user PTE table (``GFP_PGTABLE_USER``); pfn or None."""
    return _alloc_ctor(k, GFP_PGTABLE_USER, "pte", mm)


def pte_free_kernel(k: Kernel, pfn: int) -> None:
    """``pte_free_kernel(&init_mm, pte)``: dtor and free."""
    pagetable_dtor_free(k, pfn, 0, "pte")


def pte_free(k: Kernel, mm: mm_struct, pfn: int) -> None:
    """``pte_free(mm, pte_page)``: dtor and free."""
    pagetable_dtor(k, pfn, 0, "pte")  # pagetable_dtor_free()
    pagetable_free(k, pfn, 0)


def pmd_alloc_one(k: Kernel, mm: mm_struct, addr: int) -> int | None:
    """``pmd_alloc_one(mm, addr)``: ``GFP_PGTABLE_KERNEL`` for init_mm, else ``_USER``."""
    return _alloc_ctor(k, _gfp_for(k, mm), "pmd", mm)


def pmd_free(k: Kernel, mm: mm_struct, pfn: int) -> None:
    """``pmd_free(mm, pmd)``."""
    pagetable_dtor_free(k, pfn, 0, "pmd")


def pud_alloc_one(k: Kernel, mm: mm_struct, addr: int) -> int | None:
    """``pud_alloc_one(mm, addr)`` (``__pud_alloc_one``): frees, returns None if the ctor fails."""
    if k.pgt.mm_pud_folded:
        raise KernelBug("BUILD_BUG: pud_alloc_one() with the pud folded")
    return _alloc_ctor(k, _gfp_for(k, mm), "pud", mm)


def pud_free(k: Kernel, mm: mm_struct, pfn: int) -> None:
    """``pud_free(mm, pud)``."""
    pagetable_dtor_free(k, pfn, 0, "pud")


def p4d_alloc_one(k: Kernel, mm: mm_struct, addr: int) -> int | None:
    """``p4d_alloc_one(mm, addr)``: never valid on arm64 48-bit (the p4d is folded)."""
    if k.pgt.mm_p4d_folded:
        raise KernelBug("BUILD_BUG: p4d_alloc_one() with the p4d folded")
    return _alloc_ctor(k, _gfp_for(k, mm), "p4d", mm)


def p4d_free(k: Kernel, mm: mm_struct, pfn: int) -> None:
    """``p4d_free(mm, p4d)``."""
    pagetable_dtor_free(k, pfn, 0, "p4d")


def pgdir_is_page_size(k: Kernel) -> bool:
    """``pgdir_is_page_size()`` (arm64 pgd.c): ``PGD_SIZE == PAGE_SIZE`` (4K only)."""
    return k.pgt.PGD_SIZE == k.pgt.PAGE_SIZE


def pgtable_cache_init(k: Kernel) -> None:
    """``pgtable_cache_init()`` (arm64 pgd.c): create ``pgd_cache`` when a pgd is below a page."""
    from kpkeys_sim.kernel.mm.slab import kmem_cache_create

    if pgdir_is_page_size(k) or k.pgd_cache is not None:
        return
    if k.slab is None:
        raise KernelBug("pgtable_cache_init() before kmem_cache_init()")
    size = k.pgt.PGD_SIZE
    k.pgd_cache = kmem_cache_create(k.slab, "pgd_cache", size, size)


def __pgd_alloc(k: Kernel, mm: mm_struct, order: int = 0) -> int | None:
    """``__pgd_alloc(mm, order)``: a page-sized pgd; its VA, or None."""
    pfn = pagetable_alloc(k, _gfp_for(k, mm), order)
    if pfn is None:
        return None
    if not pagetable_pgd_ctor(k, pfn, order):
        pagetable_free(k, pfn, order)
        return None
    return k.pgt.va(pfn << k.pgt.PAGE_SHIFT)


def pgd_alloc(k: Kernel, mm: mm_struct) -> int | None:
    """``pgd_alloc(mm)`` (arm64 pgd.c): the VA of a zeroed pgd, or None.

    4K: a page-table page (``__pgd_alloc``, with the pgd ctor).  16K/64K: an
    object of ``pgd_cache`` (``kmem_cache_alloc(pgd_cache, GFP_PGTABLE_USER)``),
    which has no ctor (so no ``PG_table`` and no ctor hook).
    """
    if pgdir_is_page_size(k):
        return __pgd_alloc(k, mm, 0)
    if k.pgd_cache is None:
        pgtable_cache_init(k)
    assert k.pgd_cache is not None
    pa = kmem_cache_alloc(k.pgd_cache, GFP_PGTABLE_USER, k.cpu.cpu_id % max(1, k.config.nr_cpus))
    if pa is None:
        return None
    return k.pgt.va(pa)


def pgd_free(k: Kernel, mm: mm_struct, pgd: int) -> None:
    """``pgd_free(mm, pgd)``: the page (dtor + free) or the ``pgd_cache`` object."""
    g = k.pgt
    if pgdir_is_page_size(k):
        pagetable_dtor_free(k, g.pa(pgd) >> g.PAGE_SHIFT, 0, "pgd")
        return
    assert k.pgd_cache is not None
    kmem_cache_free(k.pgd_cache, g.pa(pgd), k.cpu.cpu_id % max(1, k.config.nr_cpus))


# --- accounting (include/linux/mm.h) -------------------------------------------------------------


def mm_inc_nr_ptes(k: Kernel, mm: mm_struct) -> None:
    """``mm_inc_nr_ptes(mm)``: ``pgtables_bytes += PTRS_PER_PTE * sizeof(pte_t)``."""
    mm.pgtables_bytes += k.pgt.PTRS_PER_PTE * 8
    mm.nr_ptes += 1


def mm_dec_nr_ptes(k: Kernel, mm: mm_struct) -> None:
    """``mm_dec_nr_ptes(mm)``."""
    mm.pgtables_bytes -= k.pgt.PTRS_PER_PTE * 8
    mm.nr_ptes -= 1


def mm_inc_nr_pmds(k: Kernel, mm: mm_struct) -> None:
    """``mm_inc_nr_pmds(mm)``."""
    mm.pgtables_bytes += k.pgt.PTRS_PER_PMD * 8
    mm.nr_pmds += 1


def mm_dec_nr_pmds(k: Kernel, mm: mm_struct) -> None:
    """``mm_dec_nr_pmds(mm)``."""
    mm.pgtables_bytes -= k.pgt.PTRS_PER_PMD * 8
    mm.nr_pmds -= 1


def mm_inc_nr_puds(k: Kernel, mm: mm_struct) -> None:
    """``mm_inc_nr_puds(mm)`` (nothing when the pud is folded)."""
    if k.pgt.mm_pud_folded:
        return
    mm.pgtables_bytes += k.pgt.PTRS_PER_PUD * 8
    mm.nr_puds += 1


def mm_dec_nr_puds(k: Kernel, mm: mm_struct) -> None:
    """``mm_dec_nr_puds(mm)``."""
    if k.pgt.mm_pud_folded:
        return
    mm.pgtables_bytes -= k.pgt.PTRS_PER_PUD * 8
    mm.nr_puds -= 1


# --- allocate-and-populate (mm/memory.c) ---------------------------------------------------------


def pmd_install(k: Kernel, mm: mm_struct, pmdp: int, pte_pfn: int) -> bool:
    """``pmd_install(mm, pmd, &pte)``: populate ``*pmdp`` if still none; True if installed."""
    with _page_table_lock(mm):
        if k.pgt.pmd_none(k.machine.load_u64(k.cpu, pmdp)):
            mm_inc_nr_ptes(k, mm)
            pmd_populate(k, mm, pmdp, pte_pfn)
            return True
    return False


def __pte_alloc(k: Kernel, mm: mm_struct, pmdp: int) -> int:
    """``__pte_alloc(mm, pmd)``: 0, or ``-ENOMEM``."""
    new = pte_alloc_one(k, mm)
    if new is None:
        return -ENOMEM
    if not pmd_install(k, mm, pmdp, new):
        pte_free(k, mm, new)
    return 0


def __pte_alloc_kernel(k: Kernel, pmdp: int) -> int:
    """``__pte_alloc_kernel(pmd)``: 0, or ``-ENOMEM``."""
    new = pte_alloc_one_kernel(k)
    if new is None:
        return -ENOMEM
    with _page_table_lock(k.init_mm):
        installed = k.pgt.pmd_none(k.machine.load_u64(k.cpu, pmdp))
        if installed:
            pmd_populate_kernel(k, pmdp, new)
    if not installed:
        pte_free_kernel(k, new)
    return 0


def __pmd_alloc(k: Kernel, mm: mm_struct, pudp: int, addr: int) -> int:
    """``__pmd_alloc(mm, pud, address)``: 0, or ``-ENOMEM``."""
    new = pmd_alloc_one(k, mm, addr)
    if new is None:
        return -ENOMEM
    with _page_table_lock(mm):
        installed = not k.pgt.pud_present(k.machine.load_u64(k.cpu, pudp))
        if installed:
            mm_inc_nr_pmds(k, mm)
            pud_populate(k, mm, pudp, new)
    if not installed:
        pmd_free(k, mm, new)
    return 0


def __pud_alloc(k: Kernel, mm: mm_struct, p4dp: int, addr: int) -> int:
    """``__pud_alloc(mm, p4d, address)``: 0, or ``-ENOMEM`` (4 levels only)."""
    new = pud_alloc_one(k, mm, addr)
    if new is None:
        return -ENOMEM
    with _page_table_lock(mm):
        installed = not k.pgt.p4d_present(k.machine.load_u64(k.cpu, p4dp))
        if installed:
            mm_inc_nr_puds(k, mm)
            p4d_populate(k, mm, p4dp, new)
    if not installed:
        pud_free(k, mm, new)
    return 0


def __p4d_alloc(k: Kernel, mm: mm_struct, pgdp: int, addr: int) -> int:
    """``__p4d_alloc``: never called on arm64 48-bit (``pgd_none()`` of a folded p4d is 0)."""
    raise KernelBug("BUILD_BUG: __p4d_alloc() with the p4d folded")


def p4d_alloc(k: Kernel, mm: mm_struct, pgdp: int, addr: int) -> int | None:
    """``p4d_alloc(mm, pgd, addr)``: the p4d is folded, so ``p4d_offset(pgd, addr)``."""
    return p4d_offset(k, pgdp, addr)


def pud_alloc(k: Kernel, mm: mm_struct, p4dp: int, addr: int) -> int | None:
    """``pud_alloc(mm, p4d, addr)``: allocate a pud table if ``*p4d`` is none; the pud pointer."""
    if k.pgt.mm_pud_folded:
        return pud_offset(k, p4dp, addr)
    if k.pgt.p4d_none(k.machine.load_u64(k.cpu, p4dp)) and __pud_alloc(k, mm, p4dp, addr):
        return None
    return pud_offset(k, p4dp, addr)


def pmd_alloc(k: Kernel, mm: mm_struct, pudp: int, addr: int) -> int | None:
    """``pmd_alloc(mm, pud, addr)``: allocate a pmd table if ``*pud`` is none; the pmd pointer."""
    if k.pgt.pud_none(k.machine.load_u64(k.cpu, pudp)) and __pmd_alloc(k, mm, pudp, addr):
        return None
    return pmd_offset(k, pudp, addr)


def pte_alloc(k: Kernel, mm: mm_struct, pmdp: int) -> int:
    """``pte_alloc(mm, pmd)``: 0 if ``*pmd`` is (now) populated, else ``-ENOMEM``."""
    if k.pgt.pmd_none(k.machine.load_u64(k.cpu, pmdp)):
        return __pte_alloc(k, mm, pmdp)
    return 0


def pte_alloc_map(k: Kernel, mm: mm_struct, pmdp: int, addr: int) -> int | None:
    """``pte_alloc_map(mm, pmd, address)``: the PTE pointer, or None."""
    if pte_alloc(k, mm, pmdp):
        return None
    return pte_offset_map(k, pmdp, addr)


def pte_alloc_kernel(k: Kernel, pmdp: int, addr: int) -> int | None:
    """``pte_alloc_kernel(pmd, address)``: the kernel PTE pointer, or None."""
    if k.pgt.pmd_none(k.machine.load_u64(k.cpu, pmdp)) and __pte_alloc_kernel(k, pmdp):
        return None
    return pte_offset_kernel(k, pmdp, addr)
