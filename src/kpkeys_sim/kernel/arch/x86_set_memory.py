"""x86 CPA (change page attribute): ``set_memory_*`` on kernel mappings, splitting large pages.

Sources: ``arch/x86/mm/pat/set_memory.c`` (``lookup_address``,
``__change_page_attr_set_clr``, ``__change_page_attr``,
``should_split_large_page``/``__should_split_large_page``,
``split_large_page``/``__split_large_page``, ``split_set_pte``,
``cpa_process_alias``, ``__cpa_process_fault``, ``cpa_flush``,
``change_page_attr_set_clr``, ``set_memory_ro``/``rw``/``nx``/``x``/``np``/
``p``, ``__set_pages_np``/``__set_pages_p``, ``set_direct_map_*_noflush``,
``pgprot_clear_protnone_bits``, ``split_page_count``); spec kpkeys-series.md
§4.8 (the v6 split hooks) and §9 (Rick Edgecombe's ``set_memory_pks``).

What CPA does here.  For each part of ``[addr, addr + numpages)``:
``lookup_address`` finds the leaf (4K PTE, 2M PDE or 1G PDPTE with PSE).  A
4K entry gets ``(prot & ~mask_clr) | mask_set``.  A large leaf is kept when the
new protection equals the old one, or rewritten in place when the request
covers it exactly; otherwise it is split (``split_large_page``: a 1G page
becomes a PMD table of 2M leaves, a 2M page a PTE table of 4K entries, the
leaf's attributes copied), the new table installed over the leaf with
``set_pud``/``set_pmd`` *directly* — x86 needs no break-before-make — then
``flush_tlb_all()``, and the lookup is repeated.  The aliases of the pages
are then changed too (``cpa_process_alias``): a change through the high
kernel mapping or vmalloc also applies to the direct-map alias (without the
NX bits: the direct map is always NX), and a change through the direct map
also applies to the high kernel mapping of image pages.  Finally one TLB flush
(``cpa_flush``): everything when an alias was changed or more than
``tlb_single_page_flush_ceiling`` pages, else the range.
``__set_pages_np``/``__set_pages_p`` (``set_direct_map_*_noflush``) skip the
alias processing and the flush, as Linux does.

Simplified: ``static_protections()``/``verify_rwx()`` are not modelled (no
request in the model asks for a forbidden combination); the PAT/caching bits,
CLFLUSH and the ``CPA_ARRAY``/``CPA_PAGES_ARRAY`` forms are not modelled;
**CPA never collapses** split tables back into large pages
(``cpa_collapse_large_pages``, v6.15+, is not modelled): a split is permanent,
as it was on every kernel before v6.15 and as arm64 splits are.
``cpa_lock`` is not a lock in the sequential model; as in Linux it is dropped
around the split's page allocation, so the allocator may itself run CPA
(kpkeys' ``set_memory_pkey`` on the new page); ``__split_large_page``
re-checks the leaf afterwards and retries if it changed, as Linux does.

kpkeys port [INF].  No upstream x86 kpkeys exists.  :func:`set_memory_pkey`
is the port of arm64 ``set_memory_pkey`` (v5 06/18) on CPA, as Rick
Edgecombe's ``set_memory_pks`` was: ``change_page_attr_set_clr`` with
``_PAGE_PKEY(pkey)`` / ``_PAGE_PKEY_MASK`` (bits 62:59 of the leaf), only for
direct-map addresses, 0 without PKS, ``-EINVAL`` for a key ≥ 16.  Because CPA
processes aliases, the pkey also reaches the high kernel mapping of image
pages (the static tables; freed init pages have lost theirs in
``free_initmem``): no writable alias is left behind.
Like arm64's, it does not call ``vm_unmap_aliases()`` (the other
``set_memory_*`` calls do).  Splits follow the v6 15/30 contract exactly as
arm64 ``split_kernel_leaf_mapping`` wires it: ``k.prepare_direct_map_split``
before taking the split lock (``k.pgtable_split_lock``), then
``k.ready_for_direct_map_split`` under it (unlock, prepare, retry until
ready), the split table from ``pagetable_alloc(GFP_PGTABLE_KERNEL &
~__GFP_ZERO | __GFP_PGTABLE_SPLIT)`` with the page-table ctor (Linux CPA uses
``alloc_pages(GFP_KERNEL, 0)``).  Direct-map splits are counted by level in
``k.linear_map_stats`` (``split_pud``: 1G → 2M, ``split_pmd``: 2M → 4K; x86
``split_page_count``), which the PBA reads; splits of the high mapping are
not counted there (x86 counts only the direct map) but emit the events.

Rick Edgecombe's PKS page tables (``config.series = "pks-rfc2"``, spec §9)
install a :class:`DmapTableSource` on the kernel: ``split_large_page`` then
takes its table from that reserve (``alloc_dmap_table``) instead of the
v6 15/30 path, and gives a raced table back (``free_dmap_table``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from kpkeys_sim.kernel.arch.x86_head import X86KernelImage
from kpkeys_sim.kernel.arch.x86_pgtable import (
    _KERNPG_TABLE,
    _PAGE_GLOBAL,
    _PAGE_NX,
    _PAGE_PKEY,
    _PAGE_PKEY_MASK,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    PHYSICAL_PMD_PAGE_MASK,
    PHYSICAL_PUD_PAGE_MASK,
    PTE_FLAGS_MASK,
    PTE_PFN_MASK,
    pgprot_4k_2_large,
    pgprot_large_2_4k,
)
from kpkeys_sim.kernel.errors import EFAULT, EINVAL, ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.gfp import __GFP_PGTABLE_SPLIT, __GFP_ZERO, GFP_PGTABLE_KERNEL
from kpkeys_sim.kernel.mm.pgalloc import (
    pagetable_alloc,
    pagetable_dtor,
    pagetable_dtor_free,
    pagetable_pmd_ctor,
    pagetable_pte_ctor,
)
from kpkeys_sim.kernel.mm.pgtable import (
    p4d_offset,
    pgd_offset_k,
    pmd_offset,
    pte_offset_kernel,
    ptep_get,
    pud_offset,
    set_pmd,
    set_pte,
    set_ptes_array,
    set_pud,
)
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_all, flush_tlb_kernel_range
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "CHANGE_PAGE_ATTR",
    "CPA_NO_CHECK_ALIAS",
    "CPA_SPLIT_1G",
    "CPA_SPLIT_2M",
    "PG_LEVEL_1G",
    "PG_LEVEL_2M",
    "PG_LEVEL_4K",
    "PG_LEVEL_NONE",
    "SPLIT_KINDS",
    "DmapTableSource",
    "__change_page_attr",
    "__change_page_attr_set_clr",
    "__set_pages_np",
    "__set_pages_p",
    "change_page_attr_set_clr",
    "cpa_data",
    "cpa_process_alias",
    "direct_map_split_count",
    "lookup_address",
    "set_direct_map_default_noflush",
    "set_direct_map_invalid_noflush",
    "set_direct_map_valid_noflush",
    "set_memory_np",
    "set_memory_np_noalias",
    "set_memory_nx",
    "set_memory_p",
    "set_memory_pkey",
    "set_memory_ro",
    "set_memory_rw",
    "set_memory_x",
    "split_kernel_leaf_mapping",
    "split_large_page",
    "x86_image",
]

#: ``enum pg_level`` (pgtable_types.h).
PG_LEVEL_NONE = 0
PG_LEVEL_4K = 1
PG_LEVEL_2M = 2
PG_LEVEL_1G = 3
#: ``CPA_NO_CHECK_ALIAS`` (set_memory.c).
CPA_NO_CHECK_ALIAS = 1 << 3
#: ``k.linear_map_stats`` keys (the arm64 names of the same levels).
SPLIT_KINDS = ("split_pud", "split_pmd")

CHANGE_PAGE_ATTR = declare_event(
    "x86_change_page_attr",
    "x86 change_page_attr_set_clr()/__set_pages_(n)p calls (set_memory_*, set_memory_pkey, "
    "set_direct_map_*); their table reads, entry writes, splits and TLB flushes are their "
    "own events",
    "kernel",
)
CPA_SPLIT_1G = declare_event(
    "x86_cpa_split_1g", "x86 CPA split_large_page() of a 1 GiB leaf into 2 MiB leaves", "kernel"
)
CPA_SPLIT_2M = declare_event(
    "x86_cpa_split_2m", "x86 CPA split_large_page() of a 2 MiB leaf into 4 KiB PTEs", "kernel"
)

_SPLIT_GFP = GFP_PGTABLE_KERNEL & ~__GFP_ZERO | __GFP_PGTABLE_SPLIT
_PAGE_SHIFT = 12
_PAGE_SIZE = 1 << _PAGE_SHIFT
_LEVEL_SIZE = {PG_LEVEL_4K: 1 << 12, PG_LEVEL_2M: 1 << 21, PG_LEVEL_1G: 1 << 30}


@dataclass(slots=True)
class cpa_data:
    """``struct cpa_data`` (the fields the model uses)."""

    vaddr: int
    numpages: int
    mask_set: int
    mask_clr: int
    flags: int = 0
    pfn: int = 0
    force_split: bool = False
    force_flush_all: bool = False
    flushtlb: bool = False


def x86_image(k: Kernel) -> X86KernelImage:
    """The x86 kernel image ``k`` booted (held by its ``k.arch_mm``)."""
    img = getattr(k.arch_mm, "image", None)
    if not isinstance(img, X86KernelImage):
        raise KernelBug("x86 CPA on a kernel without an x86 image")
    return img


def pgprot_clear_protnone_bits(prot: int) -> int:
    """``pgprot_clear_protnone_bits``: a non-present entry loses ``_PAGE_GLOBAL`` (= PROTNONE)."""
    return prot if prot & _PAGE_PRESENT else prot & ~_PAGE_GLOBAL


# --- lookup ----------------------------------------------------------------------------------


def lookup_address(k: Kernel, address: int) -> tuple[int | None, int]:
    """``lookup_address(address, &level)`` in ``init_mm``: (pointer to the leaf entry, level).

    Returns ``(None, level)`` when an upper entry is none.  A large or
    non-present upper entry is returned as the leaf at its level.
    """
    g = k.pgt
    pgdp = pgd_offset_k(k, address)
    if g.pgd_none(ptep_get(k, pgdp)):
        return None, PG_LEVEL_NONE
    pudp = pud_offset(k, p4d_offset(k, pgdp, address), address)
    pud = ptep_get(k, pudp)
    if g.pud_none(pud):
        return None, PG_LEVEL_1G
    if g.pud_leaf(pud) or not g.pud_present(pud):
        return pudp, PG_LEVEL_1G
    pmdp = pmd_offset(k, pudp, address)
    pmd = ptep_get(k, pmdp)
    if g.pmd_none(pmd):
        return None, PG_LEVEL_2M
    if g.pmd_leaf(pmd) or not g.pmd_present(pmd):
        return pmdp, PG_LEVEL_2M
    return pte_offset_kernel(k, pmdp, address), PG_LEVEL_4K


# --- splitting -------------------------------------------------------------------------------


def _in_direct_map(k: Kernel, address: int) -> bool:
    """``virt_addr_valid``-ish: ``address`` is a direct-map address of RAM."""
    g = k.pgt
    return g.is_lm_address(address) and g.pa(address) < k.machine.mem.end


def _count_split(k: Kernel, level: int, address: int) -> None:
    k.machine.emit(CPA_SPLIT_1G if level == PG_LEVEL_1G else CPA_SPLIT_2M)
    if _in_direct_map(k, address):  # split_page_count(level)
        kind = "split_pud" if level == PG_LEVEL_1G else "split_pmd"
        k.linear_map_stats[kind] = k.linear_map_stats.get(kind, 0) + 1


def direct_map_split_count(k: Kernel) -> int:
    """Direct-map splits so far (both levels): the arch's ``linear_map_split_count``."""
    return sum(k.linear_map_stats.get(kind, 0) for kind in SPLIT_KINDS)


def _take_split_lock(k: Kernel) -> None:
    if k.pgtable_split_lock:
        raise KernelBug(
            "deadlock: the direct-map split lock taken while held (a split allocating a page "
            "table whose pkey change needs another split, spec §4.12)"
        )
    k.pgtable_split_lock = True


class DmapTableSource(Protocol):
    """Where ``split_large_page`` takes its new table from, instead of ``pagetable_alloc``.

    Rick Edgecombe's PKS page tables (spec §9, RFC v2 17/19): ``alloc_dmap_table()``
    and ``free_dmap_table()`` on a reserve of tables.  Installed as
    ``k.dmap_table_source``; absent (None), CPA uses the v6 15/30
    contract below.
    """

    def alloc_dmap_table(self, k: Kernel) -> int | None:
        """A table page (pfn) for a split, or None."""
        ...

    def free_dmap_table(self, k: Kernel, pfn: int) -> None:
        """Take back a split table that was not installed."""
        ...


def _split_alloc(k: Kernel, level: int) -> int | None:
    """The split's table, allocated under the v6 15/30 contract; its pfn or None."""
    source = k.dmap_table_source
    if source is not None:
        _take_split_lock(k)
        try:
            pfn = source.alloc_dmap_table(k)
            if pfn is None:
                return None
            ctor = pagetable_pte_ctor if level == PG_LEVEL_2M else pagetable_pmd_ctor
            if not ctor(k, k.init_mm, pfn):
                source.free_dmap_table(k, pfn)
                return None
            return pfn
        finally:
            k.pgtable_split_lock = False
    ret = k.prepare_direct_map_split(k)
    if ret:
        return None
    while True:
        _take_split_lock(k)
        if k.ready_for_direct_map_split(k):
            break
        k.pgtable_split_lock = False
        if k.prepare_direct_map_split(k):
            return None
    try:
        pfn = pagetable_alloc(k, _SPLIT_GFP, 0)
        if pfn is None:
            return None
        # The ctor (kpkeys v5: set_memory_pkey of the new table) runs under the split
        # lock: a split it needs is the recursion of spec §4.12, reported as a KernelBug.
        ctor = pagetable_pte_ctor if level == PG_LEVEL_2M else pagetable_pmd_ctor
        if not ctor(k, k.init_mm, pfn):
            pagetable_dtor_free(k, pfn, 0)
            return None
        return pfn
    finally:
        k.pgtable_split_lock = False


def __split_large_page(k: Kernel, kpte: int, level: int, address: int, base: int) -> int:
    """``__split_large_page``: fill table ``base`` from the leaf at ``kpte``, install it.

    Returns 1 when the leaf changed meanwhile (the caller frees ``base`` and
    retries), else 0.
    """
    g = k.pgt
    tmp, tmp_level = lookup_address(k, address)
    old = ptep_get(k, kpte)
    if tmp != kpte or tmp_level != level or not (g.pmd_leaf(old) or not g.pmd_present(old)):
        return 1
    flags = old & PTE_FLAGS_MASK
    if level == PG_LEVEL_2M:
        ref_prot = pgprot_large_2_4k(flags)
        ref_pfn = (old & PHYSICAL_PMD_PAGE_MASK) >> _PAGE_SHIFT
        pfninc = 1
    else:
        ref_prot = flags
        if not ref_prot & _PAGE_PRESENT:
            ref_prot &= ~_PAGE_PSE
        ref_pfn = (old & PHYSICAL_PUD_PAGE_MASK) >> _PAGE_SHIFT
        pfninc = g.PTRS_PER_PMD
    ref_prot = pgprot_clear_protnone_bits(ref_prot)
    pfns = np.uint64(ref_pfn) + np.arange(512, dtype=np.uint64) * np.uint64(pfninc)
    values = ((pfns << np.uint64(_PAGE_SHIFT)) & np.uint64(PTE_PFN_MASK)) | np.uint64(ref_prot)
    set_ptes_array(k, g.va(base << _PAGE_SHIFT), values)  # split_set_pte() x 512
    _count_split(k, level, address)
    table = (base << _PAGE_SHIFT) | _KERNPG_TABLE
    if level == PG_LEVEL_2M:  # __set_pmd_pte(): no break-before-make on x86
        set_pmd(k, kpte, table)
    else:
        set_pud(k, kpte, table)
    flush_tlb_all(k)
    return 0


def split_large_page(k: Kernel, kpte: int, level: int, address: int) -> int:
    """``split_large_page(cpa, kpte, address)``: 0 (split or raced: retry) or ``-ENOMEM``.

    ``cpa_lock`` is dropped around the allocation (module docstring).
    """
    base = _split_alloc(k, level)
    if base is None:
        return -ENOMEM
    if __split_large_page(k, kpte, level, address, base):
        source = k.dmap_table_source
        if source is not None:
            pagetable_dtor(k, base, 0)
            source.free_dmap_table(k, base)
        else:
            pagetable_dtor_free(k, base, 0)
    return 0


def split_kernel_leaf_mapping(k: Kernel, start: int, end: int) -> int:
    """Make ``start`` and ``end`` leaf boundaries (the arm64 entry point, on CPA's splitter).

    x86 has no such function: CPA splits inside ``__change_page_attr``.  This
    is ``set_memory_4k``'s forced split reduced to the two ends, for callers
    of the generic interface.
    """
    if (start | end) & (_PAGE_SIZE - 1):
        return -EINVAL
    for addr in (start, end):
        while True:
            kpte, level = lookup_address(k, addr)
            if kpte is None or level == PG_LEVEL_4K or addr % _LEVEL_SIZE[level] == 0:
                break
            ret = split_large_page(k, kpte, level, addr)
            if ret:
                return ret
    return 0


# --- __change_page_attr ----------------------------------------------------------------------


def __cpa_process_fault(k: Kernel, cpa: cpa_data, address: int, primary: bool) -> int:
    """``__cpa_process_fault``: no mapping; ignored on alias paths, ``-EFAULT`` otherwise."""
    if not primary:
        cpa.numpages = 1
        return 0
    k.printk(f"CPA: called for zero pte. vaddr = {address:#x} cpa->vaddr = {cpa.vaddr:#x}")
    return -EFAULT


def should_split_large_page(k: Kernel, kpte: int, old: int, level: int, cpa: cpa_data) -> int:
    """``should_split_large_page`` (no static protections): 1 split, 0 done, <0 error."""
    address = cpa.vaddr
    if cpa.force_split:
        return 1
    psize = _LEVEL_SIZE[level]
    pmask = ~(psize - 1)
    lpaddr = (address + psize) & pmask
    numpages = (lpaddr - address) >> _PAGE_SHIFT
    cpa.numpages = min(cpa.numpages, numpages)
    old_prot = old & PTE_FLAGS_MASK
    req_prot = (old_prot & ~cpa.mask_clr) | cpa.mask_set
    req_prot = pgprot_clear_protnone_bits(pgprot_4k_2_large(req_prot))
    if req_prot & _PAGE_PRESENT:
        req_prot |= _PAGE_PSE
    mask = PHYSICAL_PMD_PAGE_MASK if level == PG_LEVEL_2M else PHYSICAL_PUD_PAGE_MASK
    old_pfn = (old & mask) >> _PAGE_SHIFT
    cpa.pfn = old_pfn + ((address & (psize - 1)) >> _PAGE_SHIFT)
    if req_prot == old_prot:
        return 0  # cpa_inc_lp_sameprot(): keep the large page
    if address != address & pmask or cpa.numpages != psize >> _PAGE_SHIFT:
        return 1
    new = (old_pfn << _PAGE_SHIFT) | req_prot
    if level == PG_LEVEL_2M:
        set_pmd(k, kpte, new)
    else:
        set_pud(k, kpte, new)
    cpa.flushtlb = True
    return 0


def __change_page_attr(k: Kernel, cpa: cpa_data, primary: bool) -> int:
    """``__change_page_attr``: change the leaf of ``cpa.vaddr``; ``cpa.numpages`` = pages done."""
    g = k.pgt
    address = cpa.vaddr
    while True:
        kpte, level = lookup_address(k, address)
        if kpte is None:
            return __cpa_process_fault(k, cpa, address, primary)
        old = ptep_get(k, kpte)
        if g.pte_none(old):
            return __cpa_process_fault(k, cpa, address, primary)
        if level == PG_LEVEL_4K:
            new_prot = ((old & PTE_FLAGS_MASK) & ~cpa.mask_clr) | cpa.mask_set
            new_prot = pgprot_clear_protnone_bits(new_prot)
            pfn = (old & PTE_PFN_MASK) >> _PAGE_SHIFT
            new = (pfn << _PAGE_SHIFT) | new_prot
            cpa.pfn = pfn
            if new != old:
                set_pte(k, kpte, new)
                cpa.flushtlb = True
            cpa.numpages = 1
            return 0
        do_split = should_split_large_page(k, kpte, old, level, cpa)
        if do_split <= 0:
            return do_split
        err = split_large_page(k, kpte, level, address)
        if err:
            return err


def cpa_process_alias(k: Kernel, cpa: cpa_data) -> int:
    """``cpa_process_alias``: the direct-map alias, then the high kernel mapping alias."""
    g = k.pgt
    mem = k.machine.mem
    pfn = cpa.pfn
    if not mem.base_pfn <= pfn < mem.end >> _PAGE_SHIFT:  # pfn_range_is_mapped()
        return 0
    vaddr = cpa.vaddr
    no_nx = ~_PAGE_NX
    if not _in_direct_map(k, vaddr):
        alias = replace(
            cpa,
            vaddr=g.va(pfn << _PAGE_SHIFT),
            mask_set=cpa.mask_set & no_nx,
            mask_clr=cpa.mask_clr & no_nx,
            flushtlb=False,
        )
        cpa.force_flush_all = True
        ret = __change_page_attr_set_clr(k, alias, False)
        cpa.flushtlb |= alias.flushtlb
        if ret:
            return ret
    img = x86_image(k)
    hi_start = g.pa_symbol(img._text) >> _PAGE_SHIFT
    hi_end = g.pa_symbol((img._brk_end + g.PMD_SIZE - 1) & g.PMD_MASK) >> _PAGE_SHIFT
    if not img._text <= vaddr < img._brk_end and hi_start <= pfn <= hi_end:
        alias = replace(
            cpa,
            vaddr=g.phys_to_kimg(pfn << _PAGE_SHIFT),
            mask_set=cpa.mask_set & no_nx,
            mask_clr=cpa.mask_clr & no_nx,
            flushtlb=False,
        )
        cpa.force_flush_all = True
        __change_page_attr_set_clr(k, alias, False)  # "the high mapping range is imprecise"
        cpa.flushtlb |= alias.flushtlb
    return 0


def __change_page_attr_set_clr(k: Kernel, cpa: cpa_data, primary: bool) -> int:
    """``__change_page_attr_set_clr(cpa, primary)``: the loop over ``cpa.numpages`` pages.

    Aliases are processed on the primary call unless ``CPA_NO_CHECK_ALIAS``
    (``change_page_attr_set_clr`` passes ``checkalias`` as ``primary``, so an
    NX-only change is not primary, as in Linux).  On return
    ``cpa.vaddr``/``cpa.numpages`` describe the whole request again (for
    ``cpa_flush``).
    """
    if not (cpa.mask_set | cpa.mask_clr) and not cpa.force_split:
        return 0
    start, total = cpa.vaddr, cpa.numpages
    addr, left = start, total
    ret = 0
    while left:
        cpa.vaddr, cpa.numpages = addr, left
        ret = __change_page_attr(k, cpa, primary)
        if ret:
            break
        if primary and not cpa.flags & CPA_NO_CHECK_ALIAS:
            ret = cpa_process_alias(k, cpa)
            if ret:
                break
        left -= cpa.numpages
        addr += cpa.numpages << _PAGE_SHIFT
    cpa.vaddr, cpa.numpages = start, total
    return ret


def cpa_flush(k: Kernel, cpa: cpa_data) -> None:
    """``cpa_flush``: all when aliases changed or beyond the ceiling, else the range."""
    if cpa.force_flush_all:
        flush_tlb_all(k)
    else:
        flush_tlb_kernel_range(k, cpa.vaddr, cpa.vaddr + (cpa.numpages << _PAGE_SHIFT))


def change_page_attr_set_clr(
    k: Kernel,
    addr: int,
    numpages: int,
    mask_set: int,
    mask_clr: int,
    force_split: bool = False,
    in_flag: int = 0,
    unmap_aliases: bool = True,
) -> int:
    """``change_page_attr_set_clr(&addr, numpages, mask_set, mask_clr, force_split, in_flag)``.

    ``unmap_aliases`` False skips ``vm_unmap_aliases()`` (the kpkeys port's
    ``set_memory_pkey``, module docstring).
    """
    k.machine.emit(CHANGE_PAGE_ATTR)
    if not (mask_set or mask_clr) and not force_split:
        return 0
    if addr & (_PAGE_SIZE - 1):
        addr &= ~(_PAGE_SIZE - 1)
        k.printk("WARNING: change_page_attr_set_clr: unaligned address")
    if unmap_aliases:
        k.vm_unmap_aliases(k)
    cpa = cpa_data(addr, numpages, mask_set, mask_clr, in_flag, force_split=force_split)
    checkalias = (mask_set | mask_clr) != _PAGE_NX and not in_flag & CPA_NO_CHECK_ALIAS
    ret = __change_page_attr_set_clr(k, cpa, checkalias)
    if cpa.flushtlb or cpa.force_flush_all:
        cpa_flush(k, cpa)
    return ret


# --- the set_memory_* API --------------------------------------------------------------------


def set_memory_ro(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_ro(addr, numpages)``: clear ``_PAGE_RW``."""
    return change_page_attr_set_clr(k, addr, numpages, 0, _PAGE_RW)


def set_memory_rw(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_rw(addr, numpages)``: set ``_PAGE_RW``."""
    return change_page_attr_set_clr(k, addr, numpages, _PAGE_RW, 0)


def set_memory_nx(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_nx(addr, numpages)``: set ``_PAGE_NX`` (no alias processing)."""
    return change_page_attr_set_clr(k, addr, numpages, _PAGE_NX, 0)


def set_memory_x(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_x(addr, numpages)``: clear ``_PAGE_NX``."""
    return change_page_attr_set_clr(k, addr, numpages, 0, _PAGE_NX)


def set_memory_np(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_np(addr, numpages)``: clear ``_PAGE_PRESENT``."""
    return change_page_attr_set_clr(k, addr, numpages, 0, _PAGE_PRESENT)


def set_memory_p(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_p(addr, numpages)``: set ``_PAGE_PRESENT``."""
    return change_page_attr_set_clr(k, addr, numpages, _PAGE_PRESENT, 0)


def set_memory_np_noalias(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_np_noalias(addr, numpages)``: clear PRESENT|RW on ``addr`` only (no alias)."""
    return change_page_attr_set_clr(
        k, addr, numpages, 0, _PAGE_PRESENT | _PAGE_RW, in_flag=CPA_NO_CHECK_ALIAS
    )


def set_memory_valid(k: Kernel, addr: int, numpages: int, enable: bool) -> int:
    """arm64's ``set_memory_valid`` on x86: ``set_memory_p``/``set_memory_np``."""
    return set_memory_p(k, addr, numpages) if enable else set_memory_np(k, addr, numpages)


def set_memory_pkey(k: Kernel, addr: int, numpages: int, pkey: int) -> int:
    """``set_memory_pkey(addr, numpages, pkey)`` on x86 (the kpkeys port; module docstring).

    0 without PKS; ``-EINVAL`` unless ``addr`` is a direct-map address or if
    ``pkey >= arch_max_pkey()`` (16); else CPA with ``_PAGE_PKEY(pkey)`` set and
    ``_PAGE_PKEY_MASK`` cleared.
    """
    if not k.machine.has_pkeys:
        return 0
    if not k.pgt.is_lm_address(addr):
        return -EINVAL
    if not 0 <= pkey < k.machine.arch.nr_pkeys:
        return -EINVAL
    return change_page_attr_set_clr(
        k, addr, numpages, _PAGE_PKEY(pkey), _PAGE_PKEY_MASK, unmap_aliases=False
    )


def __set_pages_np(k: Kernel, pfn: int, numpages: int) -> int:
    """``__set_pages_np``: clear PRESENT|RW on the direct map; no alias, no flush."""
    k.machine.emit(CHANGE_PAGE_ATTR)
    g = k.pgt
    cpa = cpa_data(g.va(pfn << _PAGE_SHIFT), numpages, 0, _PAGE_PRESENT | _PAGE_RW)
    cpa.flags = CPA_NO_CHECK_ALIAS
    return __change_page_attr_set_clr(k, cpa, True)


def __set_pages_p(k: Kernel, pfn: int, numpages: int) -> int:
    """``__set_pages_p``: set PRESENT|RW on the direct map; no alias, no flush."""
    k.machine.emit(CHANGE_PAGE_ATTR)
    g = k.pgt
    cpa = cpa_data(g.va(pfn << _PAGE_SHIFT), numpages, _PAGE_PRESENT | _PAGE_RW, 0)
    cpa.flags = CPA_NO_CHECK_ALIAS
    return __change_page_attr_set_clr(k, cpa, True)


def set_direct_map_invalid_noflush(k: Kernel, pfn: int) -> int:
    """``set_direct_map_invalid_noflush(page)``: ``__set_pages_np(page, 1)``."""
    return __set_pages_np(k, pfn, 1)


def set_direct_map_default_noflush(k: Kernel, pfn: int) -> int:
    """``set_direct_map_default_noflush(page)``: ``__set_pages_p(page, 1)``."""
    return __set_pages_p(k, pfn, 1)


def set_direct_map_valid_noflush(k: Kernel, pfn: int, nr: int, valid: bool) -> int:
    """``set_direct_map_valid_noflush(page, nr, valid)``."""
    return __set_pages_p(k, pfn, nr) if valid else __set_pages_np(k, pfn, nr)
