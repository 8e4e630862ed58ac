"""vmalloc: the vmap-area allocator, vmalloc/vfree, vmap/vunmap, vm_map_ram and the lazy purge.

Models ``mm/vmalloc.c`` (Linux 6.x) on the arm64 kernel page tables of
``init_mm``:

* **vmap areas.**  ``alloc_vmap_area()`` finds the *lowest* free address in
  ``[vstart, vend)`` that fits ``size`` at ``align`` (Linux:
  ``find_vmap_lowest_match()`` over the augmented rb-tree of free areas).  The
  model keeps the free space as a sorted list of disjoint ``[start, end)``
  ranges (two parallel Python lists searched with ``bisect``) and scans it
  linearly: the same addresses, O(number of free ranges) instead of
  O(log n).  Linux 6.9+ also caches recently freed areas in per-node pools
  (``vmap_node``) and hands them out again by size before searching the
  tree; the model returns every purged area to the one free list, so after a
  purge the next allocation takes the lowest fitting address.
* **Guard page.**  Every ``vm_struct`` area is one page larger than asked
  (``__get_vm_area_node``: ``size += PAGE_SIZE`` unless ``VM_NO_GUARD``); the
  guard is never mapped.
* **Page tables.**  ``vmap_range_noflush()``/``vmap_pages_range_noflush()``
  walk ``init_mm`` from ``pgd_offset_k()``, allocating missing tables with
  the kernel page-table allocators (``pagetable_alloc`` with ctor, i.e. kernel
  PTPs that kpkeys_hardened_pgtables protects).  ``vmap_pte_range()`` /
  ``vmap_pages_pte_range()`` / ``vunmap_pte_range()`` run inside a lazy MMU
  section (``mm/vmalloc.c`` since v6.16), one bulk store per PTE table.
  Linux never frees vmalloc page tables on ``vfree``; neither does the model.
  The only table freed is an (empty) PTE table that a huge PMD mapping
  replaces (``vmap_try_huge_pmd`` → ``pmd_free_pte_page``).
* **Huge mappings.**  ``vmalloc_huge()`` passes ``VM_ALLOW_HUGE_VMAP``:
  ``__vmalloc_node_range`` uses ``PMD_SHIFT`` when the size is at least
  ``PMD_SIZE`` (the area is then PMD-aligned and its size rounded up to
  ``PMD_SIZE``) and otherwise arm64's ``arch_vmap_pte_supported_shift()``
  (``CONT_PTE_SHIFT`` when the size is at least ``CONT_PTE_SIZE``).  Pages
  come from order-``shift - PAGE_SHIFT`` allocations that are ``split_page``d
  (``vm_area_alloc_pages``); PMD blocks are written with ``pmd_set_huge``,
  contiguous PTE groups with ``PTE_CONT`` (``arch_make_huge_pte``).  If the
  high-order allocation fails, it falls back to small pages as Linux does.
* **Lazy purge.**  ``vfree()``/``vunmap()`` clear the PTEs
  (``vunmap_range_noflush``) but do *not* flush the TLB: the area goes on the
  purge list and ``vmap_lazy_nr`` grows by its size in pages.  When it exceeds
  ``lazy_max_pages()`` (32 MiB worth of pages × ``fls(num_online_cpus())``),
  ``__purge_vmap_area_lazy()`` flushes the kernel TLB *once* over the span of
  every lazily freed area (``flush_tlb_kernel_range``, which becomes a full
  ``TLBI VMALLE1IS`` beyond ``MAX_DVM_OPS`` pages) and only then returns the
  areas to the free space.  Until then a stale TLB entry may still translate
  a freed vmalloc address: that is the point of the lazy purge.  Linux runs
  the drain from a workqueue (``drain_vmap_work``); the model runs it
  synchronously at the point Linux schedules it.  Data pages are freed at
  ``vfree`` time (before the flush), as in Linux.
* **vm_map_ram.**  Requests of at most ``VMAP_MAX_ALLOC`` (= ``BITS_PER_LONG``
  = 64) pages use the per-CPU ``vmap_block`` path: a block of
  ``VMAP_BBMAP_BITS`` pages (1024: ``VMAP_BBMAP_BITS_MAX``, which the formula
  gives for a 48-bit VA space with ``NR_CPUS`` = 512) is allocated as one
  vmap area and carved out bump-pointer style in power-of-two chunks
  (``vb_alloc``); ``vb_free`` unmaps without flushing and marks the chunk
  dirty; a block that is entirely dirty is freed lazily like any area
  (``free_vmap_block``).  Larger requests get their own area.  Linux also
  purges fragmented blocks and flushes dirty block ranges in
  ``vm_unmap_aliases()``; the model does both in :func:`vm_unmap_aliases`.

Events: ``vmap_area_alloc``, ``vmap_purge`` (one per ``__purge_vmap_area_lazy``
that flushed, count = areas purged).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.errors import ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm import gfp as _gfp
from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_mode_disable, lazy_mmu_mode_enable
from kpkeys_sim.kernel.mm.mm_types import (
    VM_ALLOC,
    VM_ALLOW_HUGE_VMAP,
    VM_MAP,
    VM_MAP_PUT_PAGES,
    VM_NO_GUARD,
    VM_UNINITIALIZED,
    vm_struct,
)
from kpkeys_sim.kernel.mm.page_alloc import BuddyAllocator, __free_page, alloc_pages, split_page
from kpkeys_sim.kernel.mm.pgalloc import (
    p4d_alloc,
    pmd_alloc,
    pte_alloc_kernel,
    pte_free_kernel,
    pud_alloc,
)
from kpkeys_sim.kernel.mm.pgtable import (
    p4d_offset,
    pgd_offset_k,
    pmd_clear,
    pmd_offset,
    pmdp_get,
    ptep_get_and_clear_array,
    ptep_get_array,
    pud_offset,
    pudp_get,
    set_pmd,
    set_ptes_array,
)
from kpkeys_sim.kernel.mm.pgtable import pte_offset_kernel as _pte_offset_kernel
from kpkeys_sim.kernel.mm.tlbflush import __flush_tlb_kernel_pgtable, flush_tlb_kernel_range
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "FIND_UNLINK_VMAP_AREA",
    "FREE_VMAP_AREA_NOFLUSH",
    "VB_ALLOC",
    "VB_FREE",
    "VMALLOC_KFREE",
    "VMALLOC_KMALLOC",
    "VMALLOC_TOTAL",
    "VMAP_AREA_ALLOC",
    "VMAP_BBMAP_BITS",
    "VMAP_BLOCK",
    "VMAP_MAX_ALLOC",
    "VMAP_PURGE",
    "VMAP_RAM",
    "VmapState",
    "__get_vm_area_node",
    "__purge_vmap_area_lazy",
    "__vmalloc_node_range",
    "alloc_vmap_area",
    "find_vm_area",
    "find_vmap_area",
    "free_vmap_area_noflush",
    "get_vm_area",
    "is_vmalloc_addr",
    "lazy_max_pages",
    "purge_vmap_area_lazy",
    "remove_vm_area",
    "vfree",
    "vm_area_add_early",
    "vm_map_ram",
    "vm_unmap_aliases",
    "vm_unmap_ram",
    "vmalloc",
    "vmalloc_huge",
    "vmalloc_init",
    "vmalloc_to_page",
    "vmap",
    "vmap_area",
    "vmap_block",
    "vmap_pages_range",
    "vmap_pages_range_noflush",
    "vmap_range_noflush",
    "vunmap",
    "vunmap_range",
    "vunmap_range_noflush",
    "vzalloc",
]

U64Array = npt.NDArray[np.uint64]

#: ``BITS_PER_LONG``: the largest ``vm_map_ram`` request served from a vmap block.
VMAP_MAX_ALLOC = 64
#: ``VMAP_BBMAP_BITS``: pages per vmap block (the formula's maximum, see the module doc).
VMAP_BBMAP_BITS = 1024
#: ``vmap_area.flags`` (``mm/vmalloc.c``).
VMAP_RAM = 0x1
VMAP_BLOCK = 0x2

VMAP_AREA_ALLOC = declare_event(
    "vmap_area_alloc", "vmap areas allocated (alloc_vmap_area)", "kernel"
)
VMAP_PURGE = declare_event(
    "vmap_purge",
    "vmap areas returned by a lazy purge (__purge_vmap_area_lazy; one TLB flush per purge)",
    "kernel",
)


FIND_UNLINK_VMAP_AREA = declare_event(
    "find_unlink_vmap_area",
    "busy vmap areas looked up and erased from the busy tree (find_unlink_vmap_area: "
    "remove_vm_area for vfree/vunmap, vm_unmap_ram of a large area)",
    "kernel",
)
FREE_VMAP_AREA_NOFLUSH = declare_event(
    "free_vmap_area_noflush",
    "vmap areas inserted into the lazy-free tree (free_vmap_area_noflush)",
    "kernel",
)
VB_ALLOC = declare_event(
    "vb_alloc", "vb_alloc() calls (vm_map_ram of <= VMAP_MAX_ALLOC pages)", "kernel"
)
VB_FREE = declare_event("vb_free", "vb_free() calls (vm_unmap_ram of a vmap-block range)", "kernel")
VMALLOC_KMALLOC = declare_event(
    "vmalloc_kmalloc",
    "kmalloc_node/kzalloc_node calls of the vmalloc paths for objects the model keeps as Python "
    "objects: the vm_struct (__get_vm_area_node), the pages array of up to PAGE_SIZE "
    "(__vmalloc_area_node) and the vmap_block (new_vmap_block)",
    "kernel",
)
VMALLOC_KFREE = declare_event(
    "vmalloc_kfree",
    "kfree/kvfree/kfree_rcu calls of the vmalloc paths for the same objects (vfree, vunmap, "
    "free_vmap_block)",
    "kernel",
)


def VMALLOC_TOTAL(k: Kernel) -> int:
    """``VMALLOC_TOTAL``: bytes of the vmalloc space."""
    return int(k.pgt.VMALLOC_END - k.pgt.VMALLOC_START)


class vmap_area:
    """``struct vmap_area``: ``[va_start, va_end)`` of the vmalloc space.

    ``vm`` is the ``vm_struct`` of a ``vmalloc``/``vmap`` area; ``flags`` hold
    ``VMAP_RAM``/``VMAP_BLOCK`` for ``vm_map_ram`` areas; ``page_order`` is
    the mapping order of a huge ``vmalloc`` (``vm->page_order`` in Linux).
    """

    __slots__ = ("flags", "page_order", "va_end", "va_start", "vm")

    def __init__(self, va_start: int, va_end: int, flags: int = 0) -> None:
        self.va_start = va_start
        self.va_end = va_end
        self.flags = flags
        self.vm: vm_struct | None = None
        self.page_order = 0

    def __repr__(self) -> str:
        return f"<vmap_area [{self.va_start:#x}, {self.va_end:#x}) flags={self.flags:#x}>"


class vmap_block:
    """``struct vmap_block``: a per-CPU block of ``VMAP_BBMAP_BITS`` pages for ``vm_map_ram``."""

    __slots__ = ("cpu", "dirty", "dirty_max", "dirty_min", "free", "va")

    def __init__(self, va: vmap_area, cpu: int, first: int) -> None:
        self.va = va
        self.cpu = cpu
        self.free = VMAP_BBMAP_BITS - first
        self.dirty = 0
        self.dirty_min = VMAP_BBMAP_BITS
        self.dirty_max = 0

    def __repr__(self) -> str:
        return f"<vmap_block {self.va.va_start:#x} free={self.free} dirty={self.dirty}>"


@dataclass(slots=True)
class VmapState:
    """All vmalloc bookkeeping of one kernel (Linux: file-scope statics of mm/vmalloc.c)."""

    vstart: int
    vend: int
    free_starts: list[int]
    free_ends: list[int]
    busy: dict[int, vmap_area]
    purge_list: list[vmap_area]
    vmap_lazy_nr: int
    vbq: list[list[vmap_block]]
    vmap_blocks: dict[int, vmap_block]
    nr_purges: int = 0

    def free_bytes(self) -> int:
        """Bytes of unallocated vmalloc space (not counting lazily freed areas)."""
        return sum(e - s for s, e in zip(self.free_starts, self.free_ends, strict=True))


# --- the free-range structure -------------------------------------------------------------------


def _free_insert(s: VmapState, start: int, end: int) -> None:
    """Return ``[start, end)`` to the free space, merging with its neighbours
    (``merge_or_add_vmap_area``)."""
    starts, ends = s.free_starts, s.free_ends
    i = bisect.bisect_left(starts, start)
    if (i > 0 and ends[i - 1] > start) or (i < len(starts) and starts[i] < end):
        raise KernelBug(f"vmap area [{start:#x}, {end:#x}) freed twice or overlaps free space")
    merge_prev = i > 0 and ends[i - 1] == start
    merge_next = i < len(starts) and starts[i] == end
    if merge_prev and merge_next:
        ends[i - 1] = ends[i]
        del starts[i]
        del ends[i]
    elif merge_prev:
        ends[i - 1] = end
    elif merge_next:
        starts[i] = start
    else:
        starts.insert(i, start)
        ends.insert(i, end)


def _free_take(s: VmapState, size: int, align: int, vstart: int, vend: int) -> int | None:
    """Carve the lowest ``size`` bytes at ``align`` in ``[vstart, vend)`` out of the free space."""
    starts, ends = s.free_starts, s.free_ends
    i = max(0, bisect.bisect_right(starts, vstart) - 1)
    n = len(starts)
    while i < n:
        fs, fe = starts[i], ends[i]
        if fs >= vend:
            return None
        addr = max(fs, vstart)
        addr = (addr + align - 1) & ~(align - 1)
        if addr + size <= min(fe, vend):
            # Split the free range around [addr, addr + size).
            if addr == fs and addr + size == fe:
                del starts[i]
                del ends[i]
            elif addr == fs:
                starts[i] = addr + size
            elif addr + size == fe:
                ends[i] = addr
            else:
                ends[i] = addr
                starts.insert(i + 1, addr + size)
                ends.insert(i + 1, fe)
            return addr
        i += 1
    return None


# --- init -------------------------------------------------------------------------------------


def vm_area_add_early(k: Kernel, vm: vm_struct) -> None:
    """``vm_area_add_early(vm)``: register an area (the kernel image) before :func:`vmalloc_init`.

    Appends to ``k.vmlist``; ``vmalloc_init`` turns each into a busy area.
    """
    if k.vmap is not None:
        raise KernelBug("vm_area_add_early() after vmalloc_init()")
    k.vmlist.append(vm)


def vmalloc_init(k: Kernel) -> None:
    """``vmalloc_init()``: the free space is ``[VMALLOC_START, VMALLOC_END)`` minus the early areas.

    The early areas are ``k.vmlist`` (:func:`vm_area_add_early`) and the kernel
    image segments (``k.kernel_vmas``, ``declare_kernel_vmas``).  Boot does
    not call it: the first vmalloc-space operation does (Linux calls it from
    ``mm_core_init``; nothing in between uses the vmalloc space).  Each early
    ``vm_struct`` becomes a busy ``vmap_area``
    (``vmap_init_free_space``).  Attaches the state as ``k.vmap`` and installs
    ``k.find_vm_area``/``k.vm_unmap_aliases`` (used by ``set_memory_*``).
    """
    if k.vmap is not None:
        raise KernelBug("vmalloc_init() called twice")
    g = k.pgt
    s = VmapState(
        vstart=g.VMALLOC_START,
        vend=g.VMALLOC_END,
        free_starts=[g.VMALLOC_START],
        free_ends=[g.VMALLOC_END],
        busy={},
        purge_list=[],
        vmap_lazy_nr=0,
        vbq=[[] for _ in k.machine.cpus],
        vmap_blocks={},
    )
    early = [*k.vmlist, *getattr(k, "kernel_vmas", [])]
    for vm in sorted(early, key=lambda v: v.addr):
        start = vm.addr & g.PAGE_MASK
        end = (vm.addr + vm.size + g.PAGE_SIZE - 1) & g.PAGE_MASK
        if start < g.VMALLOC_START or end > g.VMALLOC_END:
            continue
        got = _free_take(s, end - start, g.PAGE_SIZE, start, end)
        if got != start:
            raise KernelBug(f"early vm area {vm!r} overlaps another")
        va = vmap_area(start, end)
        va.vm = vm
        s.busy[start] = va
    k.vmap = s
    k.find_vm_area = find_vm_area
    k.vm_unmap_aliases = vm_unmap_aliases


def _state(k: Kernel) -> VmapState:
    """The vmalloc state; the first use runs :func:`vmalloc_init` (Linux: from ``mm_core_init``)."""
    s: VmapState | None = k.vmap
    if s is None:
        vmalloc_init(k)
        s = k.vmap
        assert s is not None
    return s


# --- vmap areas -------------------------------------------------------------------------------


def lazy_max_pages(k: Kernel) -> int:
    """``lazy_max_pages()``: ``fls(num_online_cpus()) * (32 MiB / PAGE_SIZE)``."""
    return len(k.machine.cpus).bit_length() * ((32 << 20) >> k.pgt.PAGE_SHIFT)


def alloc_vmap_area(
    k: Kernel, size: int, align: int, vstart: int, vend: int, flags: int = 0
) -> vmap_area | None:
    """``alloc_vmap_area()``: the lowest fitting ``[addr, addr + size)``; None when full.

    On failure it purges the lazily freed areas once and retries
    (``reclaim_and_purge_vmap_areas``), as Linux does.
    """
    g = k.pgt
    if size <= 0 or size & (g.PAGE_SIZE - 1) or align & (align - 1) or align < g.PAGE_SIZE:
        raise KernelBug(f"alloc_vmap_area: bad size {size:#x} or align {align:#x}")
    s = _state(k)
    addr = _free_take(s, size, align, vstart, vend)
    if addr is None and s.purge_list:
        __purge_vmap_area_lazy(k, g.VMALLOC_END, 0)
        addr = _free_take(s, size, align, vstart, vend)
    if addr is None:
        return None
    va = vmap_area(addr, addr + size, flags)
    s.busy[addr] = va
    k.machine.emit(VMAP_AREA_ALLOC)
    return va


def find_vmap_area(k: Kernel, addr: int) -> vmap_area | None:
    """``find_vmap_area(addr)``: the busy area *starting* at ``addr`` (the model's lookup key)."""
    return _state(k).busy.get(addr)


def free_vmap_area_noflush(k: Kernel, va: vmap_area) -> None:
    """``free_vmap_area_noflush()``: unlink ``va`` and put it on the purge list (no TLB flush).

    When ``vmap_lazy_nr`` exceeds :func:`lazy_max_pages`, the drain
    (``drain_vmap_area_work`` → ``__purge_vmap_area_lazy``) runs now.
    """
    s = _state(k)
    if s.busy.pop(va.va_start, None) is not va:
        raise KernelBug(f"free_vmap_area_noflush: {va!r} is not allocated")
    s.purge_list.append(va)
    k.machine.emit(FREE_VMAP_AREA_NOFLUSH)
    s.vmap_lazy_nr += (va.va_end - va.va_start) >> k.pgt.PAGE_SHIFT
    if s.vmap_lazy_nr > lazy_max_pages(k):
        __purge_vmap_area_lazy(k, k.pgt.VMALLOC_END, 0)


def __purge_vmap_area_lazy(k: Kernel, start: int, end: int) -> bool:
    """``__purge_vmap_area_lazy(start, end)``: one TLB flush, then free every lazy area.

    The flushed range is ``[min(start, lowest area), max(end, highest
    area))``.  Returns False (and flushes nothing) when nothing is lazy.
    """
    s = _state(k)
    if not s.purge_list:
        return False
    lo = min(start, min(va.va_start for va in s.purge_list))
    hi = max(end, max(va.va_end for va in s.purge_list))
    flush_tlb_kernel_range(k, lo, hi)
    n = len(s.purge_list)
    for va in s.purge_list:
        _free_insert(s, va.va_start, va.va_end)
    s.purge_list = []
    s.vmap_lazy_nr = 0
    s.nr_purges += 1
    k.machine.emit(VMAP_PURGE, n)
    return True


def purge_vmap_area_lazy(k: Kernel) -> None:
    """``purge_vmap_area_lazy()``: purge everything that is lazily freed now."""
    __purge_vmap_area_lazy(k, k.pgt.VMALLOC_END, 0)


# --- page tables ------------------------------------------------------------------------------


class _VmapNoMem(Exception):
    """A page-table allocation failed while mapping (Linux returns ``-ENOMEM``)."""


def _pmd_alloc_k(k: Kernel, addr: int) -> int:
    """The ``init_mm`` pmd entry of ``addr`` (``p4d/pud/pmd_alloc_track``), tables allocated."""
    init_mm = k.init_mm
    p4dp = p4d_alloc(k, init_mm, pgd_offset_k(k, addr), addr)
    pudp = None if p4dp is None else pud_alloc(k, init_mm, p4dp, addr)
    pmdp = None if pudp is None else pmd_alloc(k, init_mm, pudp, addr)
    if pmdp is None:
        raise _VmapNoMem
    return pmdp


def _pte_alloc_kernel(k: Kernel, pmdp: int, addr: int) -> int:
    """``pte_alloc_kernel_track(pmd, addr, mask)``: the pte entry of ``addr`` (table allocated)."""
    ptep = pte_alloc_kernel(k, pmdp, addr)
    if ptep is None:
        raise _VmapNoMem
    return ptep


def _vmap_try_huge_pmd(k: Kernel, pmdp: int, addr: int, end: int, phys: int, prot: int) -> bool:
    """``vmap_try_huge_pmd()``: map ``[addr, end)`` with one PMD block if size/alignment allow.

    An existing (empty) PTE table under the entry is freed first
    (``pmd_free_pte_page``: clear the entry, flush the walk, free the table).
    """
    g = k.pgt
    if end - addr != g.PMD_SIZE or addr & (g.PMD_SIZE - 1) or phys & (g.PMD_SIZE - 1):
        return False
    old = pmdp_get(k, pmdp)
    if not g.pmd_none(old):
        if g.pmd_leaf(old):
            return False
        # pmd_free_pte_page(): the table must be empty (vunmap left it so).
        table = g.pmd_page_paddr(old)
        ptes = ptep_get_array(k, g.va(table), g.PTRS_PER_PTE)
        if np.any(ptes):
            return False
        pmd_clear(k, pmdp)
        __flush_tlb_kernel_pgtable(k, addr)
        pte_free_kernel(k, table >> g.PAGE_SHIFT)
    set_pmd(k, pmdp, g.pfn_pmd(phys >> g.PAGE_SHIFT, g.mk_pmd_sect_prot(prot)))
    return True


def _vmap_pte_values(k: Kernel, pfn: int, nr: int, prot: int, cont: bool) -> U64Array:
    g = k.pgt
    vals = g.pte_range(pfn, nr, prot)
    return g.ptes_mkcont(vals) if cont else vals


def vmap_range_noflush(
    k: Kernel, addr: int, end: int, phys_addr: int, prot: int, max_page_shift: int
) -> int:
    """``vmap_range_noflush()``: map physically contiguous ``[phys_addr, ...)`` at ``[addr, end)``.

    PMD blocks where ``max_page_shift >= PMD_SHIFT`` and alignment allow
    (``vmap_try_huge_pmd``), else PTEs (``vmap_pte_range`` inside lazy MMU
    mode), with ``PTE_CONT`` groups when ``max_page_shift >= CONT_PTE_SHIFT``
    (``arch_vmap_pte_range_map_size``).  Returns 0, or ``-ENOMEM`` when a page
    table cannot be allocated (what was mapped stays mapped, as in Linux).
    """
    try:
        _vmap_range(k, addr, end, phys_addr, prot, max_page_shift)
    except _VmapNoMem:
        return -ENOMEM
    return 0


def _vmap_range(
    k: Kernel, addr: int, end: int, phys_addr: int, prot: int, max_page_shift: int
) -> None:
    g = k.pgt
    while addr < end:
        pmdp = _pmd_alloc_k(k, addr)
        nxt = g.pmd_addr_end(addr, end)
        if max_page_shift >= g.PMD_SHIFT and _vmap_try_huge_pmd(
            k, pmdp, addr, nxt, phys_addr, prot
        ):
            phys_addr += nxt - addr
            addr = nxt
            continue
        ptep = _pte_alloc_kernel(k, pmdp, addr)
        nr = (nxt - addr) >> g.PAGE_SHIFT
        cont = (
            max_page_shift >= g.CONT_PTE_SHIFT
            and not (addr | phys_addr) & (g.CONT_PTE_SIZE - 1)
            and (nxt - addr) % g.CONT_PTE_SIZE == 0
        )
        _vmap_pte_store(k, ptep, _vmap_pte_values(k, phys_addr >> g.PAGE_SHIFT, nr, prot, cont))
        phys_addr += nxt - addr
        addr = nxt


def _vmap_pte_store(k: Kernel, ptep: int, values: U64Array) -> None:
    """The loop of ``vmap_pte_range``/``vmap_pages_pte_range``: a lazy MMU section, one bulk store.

    Linux refuses to map over a live entry (``WARN_ON(!pte_none(...))`` →
    ``-EBUSY``); the model raises :class:`KernelBug`.
    """
    lazy_mmu_mode_enable(k)
    try:
        old = ptep_get_array(k, ptep, len(values))
        if np.any(old):
            raise KernelBug(f"vmap over a live PTE at {ptep:#x} (WARN_ON(!pte_none))")
        set_ptes_array(k, ptep, values)
    finally:
        lazy_mmu_mode_disable(k)


def vmap_pages_range_noflush(
    k: Kernel, addr: int, end: int, prot: int, pages: list[int], page_shift: int
) -> int:
    """``vmap_pages_range_noflush()``: map ``pages`` (pfns) at ``[addr, end)``.

    ``page_shift == PAGE_SHIFT``: ``vmap_small_pages_range_noflush`` (one bulk
    PTE store per table).  Larger: one ``vmap_range_noflush`` per
    ``1 << page_shift`` chunk, each chunk's pages being physically
    contiguous.  Returns 0 or ``-ENOMEM``.
    """
    try:
        _vmap_pages_range(k, addr, end, prot, pages, page_shift)
    except _VmapNoMem:
        return -ENOMEM
    return 0


def _vmap_pages_range(
    k: Kernel, addr: int, end: int, prot: int, pages: list[int], page_shift: int
) -> None:
    g = k.pgt
    nr = (end - addr) >> g.PAGE_SHIFT
    if len(pages) < nr:
        raise KernelBug(f"vmap_pages_range: {len(pages)} pages for {nr} slots")
    if page_shift == g.PAGE_SHIFT:
        pfns = np.asarray(pages[:nr], dtype=np.uint64)
        i = 0
        while addr < end:
            pmdp = _pmd_alloc_k(k, addr)
            nxt = g.pmd_addr_end(addr, end)
            n = (nxt - addr) >> g.PAGE_SHIFT
            ptep = _pte_alloc_kernel(k, pmdp, addr)
            _vmap_pte_store(k, ptep, g.pfn_ptes(pfns[i : i + n], prot))
            i += n
            addr = nxt
        return
    step = 1 << (page_shift - g.PAGE_SHIFT)
    for i in range(0, nr, step):
        _vmap_range(k, addr, addr + (1 << page_shift), pages[i] << g.PAGE_SHIFT, prot, page_shift)
        addr += 1 << page_shift


def vmap_pages_range(
    k: Kernel, addr: int, end: int, prot: int, pages: list[int], page_shift: int
) -> int:
    """``vmap_pages_range()``: :func:`vmap_pages_range_noflush` + ``flush_cache_vmap``.

    ``flush_cache_vmap`` is a no-op on arm64 (PIPT data caches).  Returns 0 or
    ``-ENOMEM``.
    """
    return vmap_pages_range_noflush(k, addr, end, prot, pages, page_shift)


def vunmap_range_noflush(k: Kernel, start: int, end: int) -> None:
    """``vunmap_range_noflush()``: clear every mapping in ``[start, end)``; no TLB flush.

    PMD blocks are cleared with ``pmd_clear_huge``; PTE ranges with
    ``vunmap_pte_range`` (lazy MMU section, one bulk get-and-clear per
    table).  Page tables are kept.
    """
    g = k.pgt
    addr = start
    while addr < end:
        nxt = g.pmd_addr_end(addr, end)
        pgdp = pgd_offset_k(k, addr)
        pudp = pud_offset(k, p4d_offset(k, pgdp, addr), addr)
        pud = pudp_get(k, pudp)
        if g.pud_none(pud) or g.pud_leaf(pud):
            addr = nxt
            continue
        pmdp = pmd_offset(k, pudp, addr)
        pmd = pmdp_get(k, pmdp)
        if g.pmd_none(pmd):
            addr = nxt
            continue
        if g.pmd_leaf(pmd):
            # pmd_clear_huge(): only a whole block may be unmapped.
            if addr & (g.PMD_SIZE - 1) or nxt - addr != g.PMD_SIZE:
                raise KernelBug(f"vunmap of part of a PMD block at {addr:#x}")
            pmd_clear(k, pmdp)
            addr = nxt
            continue
        ptep = _pte_offset_kernel(k, pmdp, addr)
        n = (nxt - addr) >> g.PAGE_SHIFT
        lazy_mmu_mode_enable(k)
        try:
            ptep_get_and_clear_array(k, ptep, n)
        finally:
            lazy_mmu_mode_disable(k)
        addr = nxt


def vunmap_range(k: Kernel, addr: int, end: int) -> None:
    """``vunmap_range()``: unmap and flush the kernel TLB for the range at once."""
    vunmap_range_noflush(k, addr, end)
    flush_tlb_kernel_range(k, addr, end)


# --- vm_struct areas --------------------------------------------------------------------------


def __get_vm_area_node(
    k: Kernel, size: int, align: int, shift: int, flags: int, start: int, end: int
) -> vm_struct | None:
    """``__get_vm_area_node()``: a ``vm_struct`` of ``ALIGN(size, 1 << shift)`` + guard page."""
    g = k.pgt
    size = (size + (1 << shift) - 1) & ~((1 << shift) - 1)
    if not size:
        return None
    if not flags & VM_NO_GUARD:
        size += g.PAGE_SIZE
    align = max(align, g.PAGE_SIZE)
    k.machine.emit(VMALLOC_KMALLOC)  # kzalloc_node(sizeof(struct vm_struct))
    va = alloc_vmap_area(k, size, align, start, end)
    if va is None:
        k.machine.emit(VMALLOC_KFREE)
        return None
    vm = vm_struct(va.va_start, size, flags)
    va.vm = vm
    return vm


def get_vm_area(k: Kernel, size: int, flags: int) -> vm_struct | None:
    """``get_vm_area(size, flags)``: an area anywhere in the vmalloc space."""
    g = k.pgt
    size = (size + g.PAGE_SIZE - 1) & g.PAGE_MASK
    return __get_vm_area_node(
        k, size, g.PAGE_SIZE, g.PAGE_SHIFT, flags, g.VMALLOC_START, g.VMALLOC_END
    )


def find_vm_area(k: Kernel, addr: int) -> vm_struct | None:
    """``find_vm_area(addr)``: the ``vm_struct`` starting at ``addr``."""
    va = find_vmap_area(k, addr)
    return None if va is None else va.vm


def _area_size(k: Kernel, vm: vm_struct) -> int:
    """``get_vm_area_size(vm)``: the size without the guard page."""
    return vm.size if vm.flags & VM_NO_GUARD else vm.size - k.pgt.PAGE_SIZE


def remove_vm_area(k: Kernel, addr: int) -> vm_struct | None:
    """``remove_vm_area(addr)``: unmap the area (no flush) and free its VA lazily.

    ``free_unmap_vmap_area``: ``vunmap_range_noflush`` then
    ``free_vmap_area_noflush``.  Returns the ``vm_struct`` (None if ``addr``
    starts no area).
    """
    va = find_vmap_area(k, addr)
    if va is None or va.vm is None:
        return None
    k.machine.emit(FIND_UNLINK_VMAP_AREA)
    vm = va.vm
    vunmap_range_noflush(k, va.va_start, va.va_start + _area_size(k, vm))
    free_vmap_area_noflush(k, va)
    return vm


# --- vmalloc / vfree --------------------------------------------------------------------------


def _arch_vmap_pte_supported_shift(k: Kernel, size: int) -> int:
    """``arch_vmap_pte_supported_shift(size)``: arm64 CONT_PTE_SHIFT for ≥ CONT_PTE_SIZE
    (an arch without contiguous hints: PAGE_SHIFT)."""
    g = k.pgt
    if g.ARCH_HAS_CONT_PTE and size >= g.CONT_PTE_SIZE:
        return g.CONT_PTE_SHIFT
    return g.PAGE_SHIFT


def _zone(k: Kernel) -> BuddyAllocator:
    zone = k.zone
    if zone is None:
        raise KernelBug("vmalloc before mem_init(): no buddy allocator")
    return zone


def _vm_area_alloc_pages(k: Kernel, gfp: int, order: int, nr_pages: int) -> list[int]:
    """``vm_area_alloc_pages()``: ``nr_pages`` pfns in order-``order`` chunks, each ``split_page``d.

    Returns fewer pages than asked when an allocation fails.
    """
    zone = _zone(k)
    pages: list[int] = []
    step = 1 << order
    while len(pages) < nr_pages:
        pfn = alloc_pages(zone, gfp | (_gfp.__GFP_NOWARN if order else 0), order)
        if pfn is None:
            break
        if order:
            split_page(zone, pfn, order)
        pages.extend(range(pfn, pfn + step))
    return pages


def _pages_array_is_kmalloc(k: Kernel, vm: vm_struct) -> bool:
    """``__vmalloc_area_node`` kmallocs ``area->pages`` when it fits in a page (else it
    is vmalloc'ed, which the model does not re-enact)."""
    return bool(vm.flags & VM_ALLOC) and (_area_size(k, vm) >> k.pgt.PAGE_SHIFT) * 8 <= (
        k.pgt.PAGE_SIZE
    )


def _free_pages_list(k: Kernel, pages: list[int]) -> None:
    zone = _zone(k)
    for pfn in pages:
        __free_page(zone, pfn)


def __vmalloc_node_range(
    k: Kernel, size: int, align: int, start: int, end: int, gfp: int, prot: int, vm_flags: int
) -> int | None:
    """``__vmalloc_node_range()``: allocate ``size`` bytes of virtually contiguous memory.

    Returns the address, or None (NULL) when the VA space or the pages run out.
    See the module docstring for the huge-mapping rules and the fallback.
    """
    g = k.pgt
    if size <= 0 or size > k.machine.mem.nr_frames << g.PAGE_SHIFT:
        return None
    real_size = size
    real_align = align
    shift = g.PAGE_SHIFT
    if vm_flags & VM_ALLOW_HUGE_VMAP:
        shift = g.PMD_SHIFT if size >= g.PMD_SIZE else _arch_vmap_pte_supported_shift(k, size)
        align = max(real_align, 1 << shift)
    while True:
        vm = __get_vm_area_node(
            k, real_size, align, shift, VM_ALLOC | VM_UNINITIALIZED | vm_flags, start, end
        )
        if vm is None:
            return None
        nr = _area_size(k, vm) >> g.PAGE_SHIFT
        if _pages_array_is_kmalloc(k, vm):
            k.machine.emit(VMALLOC_KMALLOC)  # area->pages = kmalloc_node(array_size)
        pages = _vm_area_alloc_pages(k, gfp, shift - g.PAGE_SHIFT, nr)
        vm.pages = pages
        if len(pages) < nr:
            # __vmalloc_area_node failed: vfree what was allocated; a huge attempt
            # is retried with small pages (``goto again`` with shift = PAGE_SHIFT).
            vfree(k, vm.addr)
            if shift > g.PAGE_SHIFT:
                shift = g.PAGE_SHIFT
                align = real_align
                continue
            return None
        va = find_vmap_area(k, vm.addr)
        if va is None:
            raise KernelBug("vmalloc area vanished")
        va.page_order = shift - g.PAGE_SHIFT
        if vmap_pages_range(k, vm.addr, vm.addr + nr * g.PAGE_SIZE, prot, pages, shift):
            vfree(k, vm.addr)
            return None
        vm.flags &= ~VM_UNINITIALIZED
        return vm.addr


def vmalloc(k: Kernel, size: int) -> int | None:
    """``vmalloc(size)``: ``GFP_KERNEL``, ``PAGE_KERNEL``, small pages."""
    g = k.pgt
    return __vmalloc_node_range(
        k, size, 1, g.VMALLOC_START, g.VMALLOC_END, _gfp.GFP_KERNEL, g.PAGE_KERNEL, 0
    )


def vzalloc(k: Kernel, size: int) -> int | None:
    """``vzalloc(size)``: :func:`vmalloc` with ``__GFP_ZERO``."""
    g = k.pgt
    return __vmalloc_node_range(
        k,
        size,
        1,
        g.VMALLOC_START,
        g.VMALLOC_END,
        _gfp.GFP_KERNEL | _gfp.__GFP_ZERO,
        g.PAGE_KERNEL,
        0,
    )


def vmalloc_huge(k: Kernel, size: int, gfp: int = _gfp.GFP_KERNEL) -> int | None:
    """``vmalloc_huge(size, gfp)``: :func:`vmalloc` with ``VM_ALLOW_HUGE_VMAP``."""
    g = k.pgt
    return __vmalloc_node_range(
        k, size, 1, g.VMALLOC_START, g.VMALLOC_END, gfp, g.PAGE_KERNEL, VM_ALLOW_HUGE_VMAP
    )


def vfree(k: Kernel, addr: int) -> None:
    """``vfree(addr)``: unmap (no flush), free the VA lazily, free the pages now.

    ``vfree(NULL)`` (``addr == 0``) does nothing.  An address that starts no
    vmalloc area is a bug (Linux: ``WARN(1, "Trying to vfree() nonexistent vm
    area")``); the model raises :class:`KernelBug`.
    """
    if not addr:
        return
    vm = remove_vm_area(k, addr)
    if vm is None:
        raise KernelBug(f"Trying to vfree() nonexistent vm area ({addr:#x})")
    _free_pages_list(k, vm.pages)
    vm.pages = []
    if _pages_array_is_kmalloc(k, vm):
        k.machine.emit(VMALLOC_KFREE)  # kvfree(vm->pages)
    k.machine.emit(VMALLOC_KFREE)  # kfree(vm)


def vmap(k: Kernel, pages: list[int], count: int, flags: int, prot: int) -> int | None:
    """``vmap(pages, count, flags, prot)``: map ``count`` existing pages contiguously.

    With ``VM_MAP_PUT_PAGES`` the pages are freed by :func:`vunmap`/``vfree``.
    """
    g = k.pgt
    if count <= 0 or count > k.machine.mem.nr_frames or len(pages) < count:
        return None
    vm = get_vm_area(k, count << g.PAGE_SHIFT, flags | VM_MAP)
    if vm is None:
        return None
    if vmap_pages_range(k, vm.addr, vm.addr + (count << g.PAGE_SHIFT), prot, pages, g.PAGE_SHIFT):
        remove_vm_area(k, vm.addr)
        k.machine.emit(VMALLOC_KFREE)  # vunmap() -> kfree(area)
        return None
    if flags & VM_MAP_PUT_PAGES:
        vm.pages = list(pages[:count])
    return vm.addr


def vunmap(k: Kernel, addr: int) -> None:
    """``vunmap(addr)``: unmap a :func:`vmap` area, flushed lazily; frees VM_MAP_PUT_PAGES pages."""
    if not addr:
        return
    vm = remove_vm_area(k, addr)
    if vm is None:
        raise KernelBug(f"Trying to vunmap() nonexistent vm area ({addr:#x})")
    if vm.flags & VM_MAP_PUT_PAGES:
        _free_pages_list(k, vm.pages)
        vm.pages = []
    k.machine.emit(VMALLOC_KFREE)  # kfree(vm)


# --- vm_map_ram (per-CPU vmap blocks) ---------------------------------------------------------


def _get_order(nr_pages: int) -> int:
    return max(0, (nr_pages - 1).bit_length())


def _vb_index(k: Kernel, addr: int) -> int:
    """``addr_to_vb_idx(addr)``."""
    return (addr - k.pgt.VMALLOC_START) // (VMAP_BBMAP_BITS << k.pgt.PAGE_SHIFT)


def new_vmap_block(k: Kernel, order: int) -> int | None:
    """``new_vmap_block(order)``: a fresh block for this CPU; returns the first chunk's address."""
    g = k.pgt
    size = VMAP_BBMAP_BITS << g.PAGE_SHIFT
    k.machine.emit(VMALLOC_KMALLOC)  # kmalloc_node(sizeof(struct vmap_block))
    va = alloc_vmap_area(k, size, size, g.VMALLOC_START, g.VMALLOC_END, VMAP_RAM | VMAP_BLOCK)
    if va is None:
        k.machine.emit(VMALLOC_KFREE)
        return None
    s = _state(k)
    vb = vmap_block(va, k.cpu.cpu_id, 1 << order)
    s.vmap_blocks[_vb_index(k, va.va_start)] = vb
    s.vbq[k.cpu.cpu_id].append(vb)
    return va.va_start


def vb_alloc(k: Kernel, size: int) -> int | None:
    """``vb_alloc(size)``: carve ``2^get_order`` pages out of one of this CPU's blocks."""
    g = k.pgt
    k.machine.emit(VB_ALLOC)
    order = _get_order(size >> g.PAGE_SHIFT)
    s = _state(k)
    q = s.vbq[k.cpu.cpu_id]
    for vb in q:
        if vb.free < 1 << order:
            continue
        pages_off = VMAP_BBMAP_BITS - vb.free
        vb.free -= 1 << order
        if vb.free == 0:
            q.remove(vb)
        return vb.va.va_start + (pages_off << g.PAGE_SHIFT)
    return new_vmap_block(k, order)


def free_vmap_block(k: Kernel, vb: vmap_block) -> None:
    """``free_vmap_block(vb)``: drop the block and free its area lazily."""
    s = _state(k)
    del s.vmap_blocks[_vb_index(k, vb.va.va_start)]
    q = s.vbq[vb.cpu]
    if vb in q:
        q.remove(vb)
    free_vmap_area_noflush(k, vb.va)
    k.machine.emit(VMALLOC_KFREE)  # kfree_rcu(vb, rcu_head)


def vb_free(k: Kernel, addr: int, size: int) -> None:
    """``vb_free(addr, size)``: unmap (no flush), mark dirty, free the block when all dirty."""
    g = k.pgt
    k.machine.emit(VB_FREE)
    order = _get_order(size >> g.PAGE_SHIFT)
    s = _state(k)
    vb = s.vmap_blocks.get(_vb_index(k, addr))
    if vb is None:
        raise KernelBug(f"vm_unmap_ram: {addr:#x} is not in a vmap block")
    offset = (addr - vb.va.va_start) >> g.PAGE_SHIFT
    vunmap_range_noflush(k, addr, addr + size)
    vb.dirty_min = min(vb.dirty_min, offset)
    vb.dirty_max = max(vb.dirty_max, offset + (1 << order))
    vb.dirty += 1 << order
    if vb.dirty > VMAP_BBMAP_BITS:
        raise KernelBug(f"vm_unmap_ram: double unmap in {vb!r}")
    if vb.dirty == VMAP_BBMAP_BITS:
        free_vmap_block(k, vb)


def vm_map_ram(k: Kernel, pages: list[int], count: int) -> int | None:
    """``vm_map_ram(pages, count, node)``: map ``count`` pages, from a vmap block when small."""
    g = k.pgt
    if count <= 0 or len(pages) < count:
        return None
    size = count << g.PAGE_SHIFT
    if count <= VMAP_MAX_ALLOC:
        addr = vb_alloc(k, size)
        if addr is None:
            return None
    else:
        va = alloc_vmap_area(k, size, g.PAGE_SIZE, g.VMALLOC_START, g.VMALLOC_END, VMAP_RAM)
        if va is None:
            return None
        addr = va.va_start
    if vmap_pages_range(k, addr, addr + size, g.PAGE_KERNEL, pages, g.PAGE_SHIFT):
        vm_unmap_ram(k, addr, count)
        return None
    return addr


def vm_unmap_ram(k: Kernel, addr: int, count: int) -> None:
    """``vm_unmap_ram(mem, count)``: undo :func:`vm_map_ram` (TLB flushed lazily)."""
    g = k.pgt
    size = count << g.PAGE_SHIFT
    if count <= 0 or addr & (g.PAGE_SIZE - 1):
        raise KernelBug(f"vm_unmap_ram: bad address {addr:#x} or count {count}")
    if count <= VMAP_MAX_ALLOC:
        vb_free(k, addr, size)
        return
    va = find_vmap_area(k, addr)
    if va is None or not va.flags & VMAP_RAM:
        raise KernelBug(f"vm_unmap_ram: {addr:#x} was not mapped by vm_map_ram")
    k.machine.emit(FIND_UNLINK_VMAP_AREA)
    vunmap_range_noflush(k, va.va_start, va.va_end)
    free_vmap_area_noflush(k, va)


def vm_unmap_aliases(k: Kernel) -> None:
    """``vm_unmap_aliases()``: flush every lazy alias now.

    The dirty ranges of the vmap blocks join the flushed range
    (``_vm_unmap_aliases``); blocks with no live mapping left (``free + dirty
    == VMAP_BBMAP_BITS``) are freed (``purge_fragmented_block``); then
    ``__purge_vmap_area_lazy``; if nothing was lazy but blocks were dirty,
    the range is flushed directly.
    """
    g = k.pgt
    s = _state(k)
    start, end = g.VMALLOC_END, 0
    flush = False
    for vb in list(s.vmap_blocks.values()):
        if vb.dirty and vb.dirty != VMAP_BBMAP_BITS:
            base = vb.va.va_start
            start = min(start, base + (vb.dirty_min << g.PAGE_SHIFT))
            end = max(end, base + (vb.dirty_max << g.PAGE_SHIFT))
            vb.dirty_min = VMAP_BBMAP_BITS
            vb.dirty_max = 0
            flush = True
        if vb.free + vb.dirty == VMAP_BBMAP_BITS and vb.dirty != VMAP_BBMAP_BITS:
            # purge_fragmented_block(): nothing is mapped from it any more.
            free_vmap_block(k, vb)
    if not __purge_vmap_area_lazy(k, start, end) and flush:
        flush_tlb_kernel_range(k, start, end)


# --- lookups ----------------------------------------------------------------------------------


def is_vmalloc_addr(k: Kernel, addr: int) -> bool:
    """``is_vmalloc_addr(x)``: ``VMALLOC_START <= x < VMALLOC_END``."""
    g = k.pgt
    return bool(g.VMALLOC_START <= addr < g.VMALLOC_END)


def vmalloc_to_page(k: Kernel, addr: int) -> int | None:
    """``vmalloc_to_page(addr)``: the pfn mapped at ``addr`` by the kernel tables, or None.

    A software walk of ``init_mm`` (checked loads through the tables' linear
    map aliases); handles PMD blocks and PUD blocks.
    """
    g = k.pgt
    pgdp = pgd_offset_k(k, addr)
    p4dp = p4d_offset(k, pgdp, addr)
    pudp = pud_offset(k, p4dp, addr) if not g.mm_pud_folded else p4dp
    pud = pudp_get(k, pudp)
    if g.pud_none(pud):
        return None
    if g.pud_leaf(pud):
        return int(g.pud_pfn(pud) + ((addr & ~g.PUD_MASK) >> g.PAGE_SHIFT))
    pmdp = pmd_offset(k, pudp, addr)
    pmd = pmdp_get(k, pmdp)
    if g.pmd_none(pmd):
        return None
    if g.pmd_leaf(pmd):
        return int(g.pmd_pfn(pmd) + ((addr & (g.PMD_SIZE - 1)) >> g.PAGE_SHIFT))
    pte = int(ptep_get_array(k, _pte_offset_kernel(k, pmdp, addr), 1)[0])
    if not g.pte_present(pte):
        return None
    return int(g.pte_pfn(pte))
