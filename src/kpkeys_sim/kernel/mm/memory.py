"""User address spaces: faults, COW, zap, page-table freeing, fork's page-table copy.

Models ``mm/memory.c`` (``handle_mm_fault``, ``do_anonymous_page``,
``do_fault``, ``do_wp_page``/``wp_page_copy``/``wp_page_reuse``,
``zap_pte_range``…``unmap_vmas``, ``free_pgtables``/``free_pgd_range``,
``copy_page_range``…``copy_pte_range``), ``arch/arm64/mm/fault.c``
(``do_page_fault``'s VMA and permission checks) and ``mm/filemap.c``/
``mm/shmem.c`` reduced to a page cache per file (:class:`file`).  Every
page-table store goes through the helpers of :mod:`kpkeys_sim.kernel.mm.pgtable`
(so through the ``kpkeys_hardened_pgtables`` guard and the MMU check of the
table's linear-map alias), and every PTE-table loop runs inside a lazy MMU
section, as in Linux.

Vectorisation (DESIGN.md): one PTE table is one unit of work.  Zap, copy and
populate load the table once (``ptep_get_array``: one checked read), compute
the new entries with one numpy expression, store them with one bulk helper
per run of non-none entries (one guard, one permission check;
``pgtables_guard_repeat`` keeps the per-entry guard accounting exact), and
update ``struct page`` state (``mapcount``, ``refcount``, ``mapping``) with
numpy fancy indexing on the ``MemMap`` arrays.  The Python work per table is
O(1); only folios whose reference count reaches zero are handled one by one
(through the buddy allocator, with its bad-page checks).

Page state (``docs/model-assumptions.md``):

* an anonymous folio has ``mapping = PAGE_MAPPING_ANON`` on its head;
  page-cache folios ``mapping = file.id << 2`` (``| 2`` for shmem); the
  mapping is cleared when the folio is freed (``free_pages_prepare``);
* ``mapcount`` is per page (the model's ``page_mapcount``), ``refcount`` per
  folio head: one reference per mapping PTE plus one for the page cache;
* large anonymous folios (``MADV_HUGEPAGE``: order ``PMD_ORDER``, compound)
  are PTE-mapped with ``set_ptes`` — the micromm "h:1" case; the model never
  maps user memory with PMD blocks (no THP PMD mappings, no swap, no
  migration, no KSM, no userfaultfd, no fault-around).
* the shared zero page (``empty_zero_page``) maps read faults of private
  anonymous memory with a special PTE; it is allocated by
  :func:`user_mm_init` and never freed.

Hardware Access-flag and dirty-state management: the machine manages the
Access flag in hardware but has no hardware dirty-bit management (DBM), so a
write to a clean writable page (``PTE_RDONLY`` + ``PTE_WRITE``) faults and
``handle_pte_fault`` marks it dirty with ``ptep_set_access_flags`` — the
software path Linux takes on CPUs without FEAT_HAFDBS.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.errors import ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.addr import page_address
from kpkeys_sim.kernel.mm.gfp import __GFP_COMP, __GFP_NOWARN, __GFP_ZERO, GFP_HIGHUSER_MOVABLE
from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_mode_disable, lazy_mmu_mode_enable
from kpkeys_sim.kernel.mm.mm_types import (
    MM_ANONPAGES,
    MM_FILEPAGES,
    MM_SHMEMPAGES,
    VM_EXEC,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    is_cow_mapping,
    mm_struct,
    vm_area_struct,
    vma_lookup,
)
from kpkeys_sim.kernel.mm.mmu_gather import (
    __tlb_adjust_range,
    free_folio_refs,
    mmu_gather,
    pmd_free_tlb,
    pte_free_tlb,
    pud_free_tlb,
    tlb_remove_folio_refs,
)
from kpkeys_sim.kernel.mm.page import PG_dirty, PG_head, PG_tail, PG_uptodate
from kpkeys_sim.kernel.mm.page_alloc import BuddyAllocator, alloc_pages, split_page
from kpkeys_sim.kernel.mm.pgalloc import (
    mm_dec_nr_pmds,
    mm_dec_nr_ptes,
    mm_dec_nr_puds,
    mm_inc_nr_ptes,
    p4d_alloc,
    pmd_alloc,
    pte_alloc,
    pte_alloc_one,
    pud_alloc,
)
from kpkeys_sim.kernel.mm.pgtable import (
    __set_ptes_nosync_array,
    p4d_clear,
    p4dp_get,
    pgd_offset,
    pgdp_get,
    pmd_offset,
    pmd_populate,
    pmdp_get,
    pte_clear_array,
    ptep_get,
    ptep_get_and_clear,
    ptep_get_array,
    ptep_set_access_flags,
    pud_clear,
    pud_offset,
    pudp_get,
    set_pmd_array,
    set_pte_at,
    set_ptes,
    set_ptes_array,
)
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_page
from kpkeys_sim.kernel.sched import current
from kpkeys_sim.machine.events import declare_event
from kpkeys_sim.machine.mmu import Fault

if TYPE_CHECKING:
    from kpkeys_sim.kernel.mm.page import MemMap

__all__ = [
    "COPY_PTE",
    "COW_BREAK",
    "FAULT_FLAG_INSTRUCTION",
    "FAULT_FLAG_USER",
    "FAULT_FLAG_WRITE",
    "FOLIO_DUP_RMAP_PTES",
    "FOLIO_REMOVE_RMAP_PTES",
    "PAGE_FAULT",
    "PAGE_MAPPING_ANON",
    "VM_FAULT_ERROR",
    "VM_FAULT_OOM",
    "VM_FAULT_SIGBUS",
    "VM_FAULT_SIGSEGV",
    "VM_HUGEPAGE",
    "VM_NOHUGEPAGE",
    "ZAP_PTE",
    "UserFault",
    "UserMmState",
    "access_user",
    "anon_vma",
    "anon_vma_prepare",
    "copy_page_range",
    "copy_pmd_range",
    "copy_pte_range",
    "copy_pud_range",
    "do_page_fault",
    "file",
    "filemap_get_folio",
    "filp_create",
    "folio_heads",
    "fput",
    "free_pgd_range",
    "free_pgtables",
    "get_file",
    "handle_mm_fault",
    "populate_vma_range",
    "unmap_page_range",
    "unmap_vmas",
    "user_mm_init",
    "user_read",
    "user_write",
    "wrprotect_ptes",
    "zap_pte_range",
]

I64Array = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]

# include/linux/mm_types.h enum fault_flag
FAULT_FLAG_WRITE = 1 << 0
FAULT_FLAG_USER = 1 << 6
FAULT_FLAG_INSTRUCTION = 1 << 8
# include/linux/mm_types.h enum vm_fault_reason
VM_FAULT_OOM = 0x000001
VM_FAULT_SIGBUS = 0x000002
VM_FAULT_SIGSEGV = 0x000040
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV
# include/linux/mm.h: madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE) flags.
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
#: ``PAGE_MAPPING_ANON``: low bit of ``folio->mapping`` of an anonymous folio.
PAGE_MAPPING_ANON = 0x1
_MAPPING_SHMEM = 0x2

PAGE_FAULT = declare_event(
    "page_fault", "user page faults handled (handle_mm_fault calls, GUP included)", "kernel"
)
COW_BREAK = declare_event("cow_break", "copy-on-write breaks (wp_page_copy)", "kernel")
ZAP_PTE = declare_event("zap_pte", "user PTEs cleared by zap_pte_range", "kernel")
COPY_PTE = declare_event("copy_pte", "user PTEs copied by copy_pte_range (fork)", "kernel")
FOLIO_DUP_RMAP_PTES = declare_event(
    "folio_dup_rmap_ptes",
    "per-folio batches of copy_present_ptes (fork): one folio_try_dup_anon_rmap_pte(s) / "
    "folio_dup_file_rmap_pte(s) + folio_ref_add each (large folios batched by folio_pte_batch)",
    "kernel",
)
FOLIO_REMOVE_RMAP_PTES = declare_event(
    "folio_remove_rmap_ptes",
    "per-folio batches of zap_present_ptes: one folio_remove_rmap_ptes + "
    "__tlb_remove_folio_pages each (large folios batched by folio_pte_batch)",
    "kernel",
)

_HEAD = np.uint32(1 << PG_head)
_TAIL = np.uint32(1 << PG_tail)
_COMPOUND = np.uint32((1 << PG_head) | (1 << PG_tail))
_ZERO64 = np.uint64(0)

try:  # the C function np.count_nonzero wraps (the wrapper's dispatch costs more than a table)
    from numpy._core.multiarray import count_nonzero as _count_nonzero
except ImportError:  # pragma: no cover - numpy < 2
    _count_nonzero = np.count_nonzero


class UserFault(Exception):
    """A user access the kernel answers with a signal (SIGSEGV or SIGBUS).

    ``signal`` is ``"SIGSEGV"`` or ``"SIGBUS"``; ``code`` the ``si_code`` name
    (``SEGV_MAPERR``, ``SEGV_ACCERR``, ``SEGV_PKUERR``, ``BUS_ADRERR``).
    """

    def __init__(self, signal: str, code: str, addr: int) -> None:
        self.signal = signal
        self.code = code
        self.addr = addr
        super().__init__(f"{signal} ({code}) at {addr:#x}")


# --- page cache -----------------------------------------------------------------------------------


class file:
    """A ``struct file`` with its inode's page cache (``address_space.i_pages``), reduced.

    ``size`` is ``i_size`` in bytes; ``i_pages`` maps a page index to the pfn
    of its (order-0) page-cache folio, which holds one reference for the
    cache.  ``shmem`` marks the backing of a shared anonymous mapping
    (``shmem_zero_setup``).  ``f_count`` counts references (each VMA mapping
    the file holds one, as ``vma->vm_file`` does); the last :func:`fput`
    truncates the page cache.
    """

    __slots__ = ("f_count", "i_pages", "id", "name", "shmem", "size")

    def __init__(self, fid: int, name: str, size: int, shmem: bool) -> None:
        self.id = fid
        self.name = name
        self.size = size
        self.shmem = shmem
        self.f_count = 1
        self.i_pages: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<file {self.name!r} size={self.size:#x} cached={len(self.i_pages)}>"

    @property
    def mapping_tag(self) -> int:
        """The value of ``page->mapping`` for this file's page-cache folios."""
        return (self.id << 2) | (_MAPPING_SHMEM if self.shmem else 0)


class anon_vma:
    """``struct anon_vma``, reduced to identity: a VMA has one once it holds anonymous pages.

    ``anon_vma_prepare()`` attaches it on the first anonymous fault;
    ``anon_vma_fork()`` gives the child VMA its own, linked to the parent's
    ``root``.  The model keeps no reverse-map chains (no rmap walks).
    """

    __slots__ = ("root",)

    def __init__(self, root: anon_vma | None = None) -> None:
        self.root: anon_vma = self if root is None else root


def anon_vma_prepare(vma: vm_area_struct) -> None:
    """``anon_vma_prepare(vma)``: give ``vma`` an anon_vma if it has none."""
    if vma.anon_vma is None:
        vma.anon_vma = anon_vma()


class UserMmState:
    """Per-kernel state of the user-memory model: the zero page, the file registry, and
    two reusable scratch buffers for the vectorised ``struct page`` updates (fresh
    multi-megabyte numpy temporaries cost a page fault per 4K of host memory)."""

    __slots__ = ("files", "next_file_id", "scratch", "scratch32", "zero_pfn")

    def __init__(self, zero_pfn: int) -> None:
        self.zero_pfn = zero_pfn
        self.files: dict[int, file] = {}
        self.next_file_id = 1
        self.scratch: list[U64Array] = [np.empty(0, dtype=np.uint64)] * 2
        self.scratch32: npt.NDArray[np.int32] = np.empty(0, dtype=np.int32)

    def add_at(self, arr: npt.NDArray[np.int32], idx: I64Array, delta: int) -> None:
        """``arr[idx] += delta`` for distinct ``idx`` (gather into a reused buffer, scatter)."""
        n = len(idx)
        if len(self.scratch32) < n:
            self.scratch32 = np.empty(max(n, 2 * len(self.scratch32)), dtype=np.int32)
        buf = self.scratch32[:n]
        np.take(arr, idx, out=buf)
        buf += delta
        arr[idx] = buf

    def buffer(self, which: int, n: int) -> U64Array:
        """Scratch buffer ``which`` (0 or 1) with at least ``n`` entries; its first ``n``."""
        buf = self.scratch[which]
        if len(buf) < n:
            buf = np.empty(max(n, 2 * len(buf)), dtype=np.uint64)
            self.scratch[which] = buf
        return buf[:n]


def user_mm_init(k: Kernel) -> UserMmState:
    """Allocate the zero page (``empty_zero_page``) and attach ``k.user_mm`` (idempotent)."""
    st: UserMmState | None = k.user_mm
    if st is not None:
        return st
    pfn = alloc_pages(_zone(k), GFP_HIGHUSER_MOVABLE | __GFP_ZERO, 0)
    if pfn is None:
        raise KernelBug("cannot allocate the zero page")
    st = UserMmState(pfn)
    k.user_mm = st
    return st


def _zone(k: Kernel) -> BuddyAllocator:
    zone = k.zone
    if zone is None:
        raise KernelBug("user memory before mem_init(): no buddy allocator")
    return zone


def _memmap(k: Kernel) -> MemMap:
    mm = k.mem_map
    if mm is None:
        raise KernelBug("user memory before mem_init(): no mem_map")
    return mm


def filp_create(k: Kernel, name: str, size: int, *, shmem: bool = False) -> file:
    """A new file of ``size`` bytes with an empty page cache, holding one reference."""
    st = user_mm_init(k)
    f = file(st.next_file_id, name, size, shmem)
    st.next_file_id += 1
    st.files[f.id] = f
    return f


def get_file(f: file) -> file:
    """``get_file(f)``: take a reference."""
    f.f_count += 1
    return f


def fput(k: Kernel, f: file) -> None:
    """``fput(f)``: drop a reference; the last one truncates the page cache and frees it.

    ``truncate_inode_pages_final``: each cached folio loses its mapping and
    the cache's reference.  A folio still mapped then is a bug.
    """
    if f.f_count <= 0:
        raise KernelBug(f"fput of {f!r} with f_count {f.f_count}")
    f.f_count -= 1
    if f.f_count:
        return
    memmap = _memmap(k)
    pfns = np.fromiter(f.i_pages.values(), dtype=np.int64, count=len(f.i_pages))
    if len(pfns):
        idx = pfns - memmap.base_pfn
        if np.any(memmap.mapcount[idx]):
            raise KernelBug(f"truncating {f!r} while pages are still mapped")
        memmap.flags[idx] &= ~np.uint32((1 << PG_dirty) | (1 << PG_uptodate))
        free_folio_refs(k, pfns, None)
    f.i_pages.clear()
    st: UserMmState = k.user_mm
    st.files.pop(f.id, None)


def filemap_get_folio(k: Kernel, f: file, index: int) -> int | None:
    """``filemap_get_folio``/``shmem_get_folio``: the cached page of ``index``, read in on a miss.

    A miss allocates a zeroed page (the model's file contents start as
    zeros), marks it uptodate and inserts it with the cache's reference.
    Returns None if the allocation fails.
    """
    pfn = f.i_pages.get(index)
    if pfn is not None:
        return pfn
    pfn = alloc_pages(_zone(k), GFP_HIGHUSER_MOVABLE | __GFP_ZERO, 0)
    if pfn is None:
        return None
    memmap = _memmap(k)
    i = pfn - memmap.base_pfn
    memmap.mapping[i] = f.mapping_tag
    memmap.flags[i] |= np.uint32(1 << PG_uptodate)
    f.i_pages[index] = pfn
    return pfn


# --- folios (vectorised struct page updates) ------------------------------------------------------


def _folio_head_idx(k: Kernel, idx: I64Array) -> tuple[I64Array, bool]:
    """:func:`folio_heads` on ``mem_map`` indices (``pfn - base_pfn``)."""
    memmap = _memmap(k)
    flags = memmap.flags[idx]
    if not np.any(flags & _COMPOUND):
        return idx, False
    base = memmap.base_pfn
    heads = idx.copy()
    pending = np.flatnonzero(flags & _TAIL)
    orders = [k.pgt.PMD_ORDER, *[o for o in range(1, 21) if o != k.pgt.PMD_ORDER]]
    for o in orders:
        if not len(pending):
            break
        ci = ((idx[pending] + base) & ~np.int64((1 << o) - 1)) - base
        ok = ((memmap.flags[ci] & _HEAD) != 0) & (memmap.compound_order[ci] == o)
        heads[pending[ok]] = ci[ok]
        pending = pending[~ok]
    if len(pending):
        raise KernelBug(f"tail page {int(idx[pending[0]]) + base:#x} has no compound head")
    return heads, True


def folio_heads(k: Kernel, pfns: I64Array) -> tuple[I64Array, bool]:
    """``page_folio()`` over an array: the head pfn of each page, and whether any is compound.

    Compound pages are naturally aligned, so a tail's head is the pfn aligned
    down to the folio's order; ``PMD_ORDER`` (the model's large folios) is
    tried first, then every other order.
    """
    base = _memmap(k).base_pfn
    hidx, compound = _folio_head_idx(k, pfns - base)
    return (hidx + base, True) if compound else (pfns, False)


def _rss_split(k: Kernel, heads_per_pte: I64Array) -> tuple[int, int, int]:
    """``(anon, file, shmem)`` PTE counts by the folio's mapping kind (head pfns)."""
    return _rss_split_idx(k, heads_per_pte - _memmap(k).base_pfn)


def _rss_split_idx(k: Kernel, hidx: I64Array) -> tuple[int, int, int]:
    mapping = _memmap(k).mapping[hidx]
    anon = int(np.count_nonzero(mapping & PAGE_MAPPING_ANON))
    shmem = int(np.count_nonzero((mapping & 3) == _MAPPING_SHMEM))
    return anon, len(mapping) - anon - shmem, shmem


def _add_rss(mm: mm_struct, anon: int, filep: int, shmem: int) -> None:
    mm.rss_stat[MM_ANONPAGES] += anon
    mm.rss_stat[MM_FILEPAGES] += filep
    mm.rss_stat[MM_SHMEMPAGES] += shmem


def _is_anon(k: Kernel, pfn: int) -> bool:
    memmap = _memmap(k)
    head = int(folio_heads(k, np.array([pfn], dtype=np.int64))[0][0])
    return bool(int(memmap.mapping[head - memmap.base_pfn]) & PAGE_MAPPING_ANON)


# --- runs of consecutive selected entries ---------------------------------------------------------


def _runs(mask: npt.NDArray[np.bool_]) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` index ranges of the true runs of ``mask``."""
    n = len(mask)
    if n and bool(mask.all()):
        yield 0, n
        return
    idx = np.flatnonzero(mask)
    if not len(idx):
        return
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks + 1, [len(idx)]))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(idx[s]), int(idx[e - 1]) + 1


# --- upper-level walks ----------------------------------------------------------------------------


def _pmd_tables(k: Kernel, mm: mm_struct, addr: int, end: int) -> Iterator[tuple[int, int, int]]:
    """For each existing PMD table under ``[addr, end)``: ``(pudp, a, e)``.

    ``pudp`` points at the entry referencing the PMD table (the pgd entry when
    the pud is folded); ``[a, e)`` is the part of the range that table maps.
    """
    g = k.pgt
    pgdp = pgd_offset(k, mm, addr)
    while addr < end:
        nxt = g.pgd_addr_end(addr, end)
        pgd = pgdp_get(k, pgdp)
        if pgd:
            if g.mm_pud_folded:
                yield pgdp, addr, nxt
            else:
                a = addr
                pudp = pud_offset(k, pgdp, a)
                while a < nxt:
                    pnext = g.pud_addr_end(a, nxt)
                    if pudp_get(k, pudp):
                        yield pudp, a, pnext
                    pudp += 8
                    a = pnext
        pgdp += 8
        addr = nxt


def _pmd_slice(k: Kernel, pudp: int, a: int, e: int) -> tuple[int, U64Array]:
    """The pointer to ``a``'s PMD entry and the PMD entries covering ``[a, e)`` (one load)."""
    g = k.pgt
    pmdp = pmd_offset(k, pudp, a)
    n = ((e - 1) >> g.PMD_SHIFT) - (a >> g.PMD_SHIFT) + 1
    return pmdp, ptep_get_array(k, pmdp, n)


def _pmd_steps(k: Kernel, a: int, e: int, pmds: U64Array) -> Iterator[tuple[int, int, int, int]]:
    """``(i, pmd, start, end)`` for each non-none PMD entry ``i`` of ``pmds`` over ``[a, e)``."""
    shift = k.pgt.PMD_SHIFT
    first = a & k.pgt.PMD_MASK
    idx = np.flatnonzero(pmds)
    for i, pmd in zip(idx.tolist(), pmds[idx].tolist(), strict=True):
        yield i, pmd, max(a, first + (i << shift)), min(e, first + ((i + 1) << shift))


def _pte_table_ptr(k: Kernel, pmd: int, addr: int) -> int:
    """``pte_offset_map(pmd, addr)`` for a PMD entry value: a table, or a bug in this model."""
    g = k.pgt
    if not g.pmd_table(pmd):
        raise KernelBug(f"user PMD entry {pmd:#x} at {addr:#x} is not a table (not modelled)")
    return g.va(g.pmd_page_paddr(pmd)) + 8 * g.pte_index(addr)


# --- zap (unmap) ----------------------------------------------------------------------------------


class _PteBatch:
    """The PTE values one walk over a VMA touched, for one vectorised ``struct page`` update.

    Linux updates the rmap and queues folio references per PTE table; the
    model accumulates the tables' values over the VMA and applies the same
    updates in one numpy pass at the end of the walk (nothing can observe the
    difference in the sequential model).  Within one VMA a page is mapped at
    most once, so the per-page updates need no de-duplication.
    """

    __slots__ = ("count", "normal", "slices", "vals")

    def __init__(self) -> None:
        self.vals: list[U64Array] = []
        #: Per added table slice: its first entry's position in the batch and the
        #: ``pos`` given to :meth:`add` (None: consecutive entries).
        self.slices: list[tuple[int, I64Array | None]] = []
        #: Which entries :meth:`normal_idx` kept (None: all of them).
        self.normal: npt.NDArray[np.bool_] | None = None
        self.count = 0

    def add(self, vals: U64Array, pos: I64Array | None = None) -> None:
        """Add one table slice's entries; ``pos`` are their indices in the slice when
        none entries were skipped (None: the entries are consecutive)."""
        n = len(vals)
        self.vals.append(vals)
        if n:
            self.slices.append((self.count, pos))
        self.count += n

    def adjacent(self) -> npt.NDArray[np.bool_]:
        """Per entry: it follows the previous entry in its table (``False`` for the
        first entry of each added slice and after skipped none entries)."""
        adj = np.ones(self.count, dtype=np.bool_)
        for start, pos in self.slices:
            adj[start] = False
            if pos is not None:
                adj[start + 1 : start + len(pos)] = np.diff(pos) == 1
        return adj

    def normal_idx(self, k: Kernel) -> tuple[I64Array, U64Array]:
        """``mem_map`` indices (``pfn - base_pfn``) of the normal (not ``pte_special``)
        entries, and those entries.  Both live in the scratch buffers: use them
        before the next batch.

        Every entry must be present (the model has no swap entries) and map a
        frame with a ``struct page``: anything else is a corrupted page table,
        which Linux reports as "BUG: Bad page map" — a :class:`KernelBug` here.
        """
        g = k.pgt
        st = user_mm_init(k)
        n = self.count
        vals = np.concatenate(self.vals, out=st.buffer(0, n))
        self.normal = None
        if not g.ptes_user_normal_all(vals, st.buffer(1, n)):
            # Slow path: entries other than present, non-special user pages.
            if not bool(g.ptes_present_mask(vals).all()):
                raise KernelBug("BUG: Bad page map: non-present user PTE (swap is not modelled)")
            normal = ~g.ptes_special_mask(vals)
            if not bool(normal.all()):
                vals = vals[normal]
                self.normal = normal
        memmap = _memmap(k)
        idx: I64Array = g.ptes_pfn(vals).view(np.int64)
        idx -= memmap.base_pfn
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= memmap.nr_pages):
            raise KernelBug("BUG: Bad page map: user PTE maps a pfn without a struct page")
        return idx, vals

    def rmap_batches(
        self,
        k: Kernel,
        idx: I64Array,
        vals: U64Array,
        hidx: I64Array,
        compound: bool,
        ignore_dirty: bool,
    ) -> int:
        """The number of per-folio batches (rmap operations) over the normal entries.

        ``idx``/``vals``/``hidx`` are :meth:`normal_idx`'s result and the folio
        heads.  Linux handles a small folio one PTE at a time, and a large one
        in batches (``folio_pte_batch``): consecutive entries of one table
        slice mapping consecutive pages of the same folio whose values agree
        once the ignored bits are cleared (access flag and write permission
        always; the dirty state when ``ignore_dirty``, i.e. for zap and for a
        shared mapping's copy).  A special entry or a skipped none entry ends
        a batch.
        """
        n = len(idx)
        if not compound or n < 2:
            return n
        adj = self.adjacent()
        if self.normal is not None:
            adj[1:] &= self.normal[:-1]
            adj = adj[self.normal]
        cont = adj[1:]
        cont &= hidx[1:] == hidx[:-1]
        cont &= idx[1:] == idx[:-1] + 1
        # __pte_batch_clear_ignored(): pte_wrprotect(pte_mkold()), pte_mkclean() for
        # FPB_IGNORE_DIRTY; the output addresses were compared above.
        g = k.pgt
        norm = g.ptes_wrprotect(g.ptes_mkold(vals))
        if ignore_dirty:
            norm = g.ptes_mkclean(norm)
        norm = g.ptes_pgprot(norm)
        cont &= norm[1:] == norm[:-1]
        return n - int(np.count_nonzero(cont))


def _ptes_pfn(k: Kernel, vals: U64Array) -> I64Array:
    """``pte_pfn`` of each entry as int64 (an output address never reaches bit 63)."""
    pfns: I64Array = k.pgt.ptes_pfn(vals).view(np.int64)
    return pfns


def _fold_refs(heads: I64Array, compound: bool) -> tuple[I64Array, I64Array | None]:
    """``(heads, counts)`` with each head once: run-length encoding (a folio's pages are
    mapped consecutively), falling back to ``np.unique`` if a folio appears in two runs."""
    if not compound:
        return heads, None
    b = np.flatnonzero(heads[1:] != heads[:-1]) + 1
    starts = np.concatenate((np.zeros(1, dtype=np.int64), b))
    u = heads[starts]
    c = np.diff(np.append(starts, len(heads))).astype(np.int64)
    if len(np.unique(u)) != len(u):
        uu, cc = np.unique(heads, return_counts=True)
        return uu.astype(np.int64), cc.astype(np.int64)
    return u, c


def _zap_finish(k: Kernel, tlb: mmu_gather, vma: vm_area_struct, batch: _PteBatch) -> None:
    """The rmap/rss/dirty updates of :func:`zap_pte_range`, and the gather's folio batch."""
    if not batch.count:
        return
    idx, vals = batch.normal_idx(k)
    if len(idx):
        memmap = _memmap(k)
        user_mm_init(k).add_at(memmap.mapcount, idx, -1)
        hidx, compound = _folio_head_idx(k, idx)
        if vma.vm_file is None:
            _add_rss(vma.vm_mm, -len(hidx), 0, 0)
        else:
            anon, filep, shmem = _rss_split_idx(k, hidx)
            _add_rss(vma.vm_mm, -anon, -filep, -shmem)
            if filep or shmem:
                dirty = k.pgt.ptes_dirty_mask(vals)
                if bool(dirty.any()):
                    memmap.flags[hidx[dirty]] |= np.uint32(1 << PG_dirty)
        nops = batch.rmap_batches(k, idx, vals, hidx, compound, True)
        u, c = _fold_refs(hidx, compound)
        # The gather keeps the array: copy it out of the scratch buffer.
        tlb_remove_folio_refs(tlb, u.copy() if u.base is not None else u, c, index=True)
        k.machine.emit(FOLIO_REMOVE_RMAP_PTES, nops)
    k.machine.emit(ZAP_PTE, batch.count)


def _zap_ptes(k: Kernel, tlb: mmu_gather, pmd: int, addr: int, end: int, batch: _PteBatch) -> None:
    g = k.pgt
    n = (end - addr) >> g.PAGE_SHIFT
    # _pte_table_ptr(k, pmd, addr), inlined
    if not g.pmd_table(pmd):
        raise KernelBug(f"user PMD entry {pmd:#x} at {addr:#x} is not a table (not modelled)")
    ptep = g.va(g.pmd_page_paddr(pmd)) + 8 * g.pte_index(addr)
    old = ptep_get_array(k, ptep, n)
    cleared = int(_count_nonzero(old))
    if not cleared:
        return
    lazy_mmu_mode_enable(k)
    try:
        pos = None
        if cleared == n:
            pte_clear_array(k, ptep, n)
        else:
            nz = old != _ZERO64
            for lo, hi in _runs(nz):
                pte_clear_array(k, ptep + 8 * lo, hi - lo)
            old = old[nz]
            pos = np.flatnonzero(nz)
    finally:
        lazy_mmu_mode_disable(k)
    batch.add(old, pos)
    tlb.cleared_ptes = True
    __tlb_adjust_range(tlb, addr, end - addr)


def zap_pte_range(
    k: Kernel, tlb: mmu_gather, vma: vm_area_struct, pmd: int, addr: int, end: int
) -> int:
    """``zap_pte_range()``: clear the PTEs of ``[addr, end)`` under one PMD entry ``pmd``.

    In a lazy MMU section: one load of the table slice, one guarded bulk
    store per run of non-none entries (Linux's per-entry
    ``ptep_get_and_clear_full``; in the sequential model the xchg is the
    batch load plus the guarded store); then ``mapcount`` is decremented per
    page (``folio_remove_rmap_ptes``, counted once per folio batch as
    ``folio_remove_rmap_ptes``), dirty shared file pages are marked dirty,
    the rss counters drop, and the folio references go to the gather
    (dropped after the TLB flush).  Returns the number of entries cleared.
    """
    batch = _PteBatch()
    _zap_ptes(k, tlb, pmd, addr, end, batch)
    _zap_finish(k, tlb, vma, batch)
    return batch.count


def unmap_page_range(k: Kernel, tlb: mmu_gather, vma: vm_area_struct, addr: int, end: int) -> None:
    """``unmap_page_range()``: ``zap_p4d_range`` → ``zap_pud_range`` → … → ``zap_pte_range``.

    The ``struct page`` updates of every table are applied once at the end
    (:class:`_PteBatch`).
    """
    batch = _PteBatch()
    for pudp, a, e in _pmd_tables(k, vma.vm_mm, addr, end):
        _pmdp, pmds = _pmd_slice(k, pudp, a, e)
        for _i, pmd, s, t in _pmd_steps(k, a, e, pmds):
            _zap_ptes(k, tlb, pmd, s, t, batch)
    _zap_finish(k, tlb, vma, batch)


def unmap_vmas(
    k: Kernel, tlb: mmu_gather, vmas: list[vm_area_struct], start: int, end: int
) -> None:
    """``unmap_vmas()``: zap ``[start, end)`` in each VMA (``unmap_single_vma``)."""
    for vma in vmas:
        s = max(start, vma.vm_start)
        e = min(end, vma.vm_end)
        if s < e:
            unmap_page_range(k, tlb, vma, s, e)


# --- free_pgtables --------------------------------------------------------------------------------


def _free_pte_tables(k: Kernel, tlb: mmu_gather, pudp: int, addr: int, end: int) -> None:
    """``free_pmd_range``'s loop: ``free_pte_range`` on every PTE table of ``[addr, end)``.

    ``pmd_clear`` of every populated entry (bulk per run: one guard, one
    check, per-entry accounting kept), then ``pte_free_tlb`` and
    ``mm_dec_nr_ptes`` per table.
    """
    g = k.pgt
    pmdp, pmds = _pmd_slice(k, pudp, addr, end)
    nz = pmds != _ZERO64
    if not bool(nz.any()):
        return
    first = addr & g.PMD_MASK
    for lo, hi in _runs(nz):
        set_pmd_array(k, pmdp + 8 * lo, np.zeros(hi - lo, dtype=np.uint64))
    for i in np.flatnonzero(nz).tolist():
        pmd = int(pmds[i])
        if g.pmd_leaf(pmd):
            raise KernelBug("free_pte_range on a PMD block mapping")
        pte_free_tlb(tlb, g.pmd_page_paddr(pmd) >> g.PAGE_SHIFT, first + (i << g.PMD_SHIFT))
        mm_dec_nr_ptes(k, tlb.mm)


def _ceil_ok(end: int, ceiling: int) -> bool:
    """``!(end - 1 > ceiling - 1)`` with unsigned wrap (ceiling 0 = top of the address space)."""
    u = (1 << 64) - 1
    return not ((end - 1) & u) > ((ceiling - 1) & u)


def _upper_table_inside(start: int, end: int, floor: int, ceiling: int, mask: int) -> bool:
    """The tail test of ``free_pmd_range()``/``free_pud_range()``: may the upper table go?

    ``start`` (already ``& mask``) not below ``floor``, and ``end - 1`` not above
    ``(ceiling & mask) - 1`` (a ceiling that masks to 0 keeps the table).
    """
    if start < floor:
        return False
    if ceiling:
        ceiling &= mask
        if not ceiling:
            return False
    return _ceil_ok(end, ceiling)


def free_pgd_range(
    k: Kernel, tlb: mmu_gather, addr: int, end: int, floor: int, ceiling: int
) -> None:
    """``free_pgd_range(tlb, addr, end, floor, ceiling)`` (mm/memory.c).

    Frees the PTE tables covering ``[addr, end)`` (rounded out to PMD
    boundaries but kept inside ``[floor, ceiling)``), and each upper-level
    table (PMD, PUD) once the range it maps lies entirely inside ``[floor,
    ceiling)`` — the kernel's exact rule, so a table still shared with a
    neighbouring VMA is kept.  The pgd itself is freed by ``pgd_free``.
    """
    g = k.pgt
    u = (1 << 64) - 1
    addr &= g.PMD_MASK
    if addr < floor:
        addr = (addr + g.PMD_SIZE) & u
        if not addr:
            return
    if ceiling:
        ceiling &= g.PMD_MASK
        if not ceiling:
            return
    if not _ceil_ok(end, ceiling):
        end -= g.PMD_SIZE
    if addr > ((end - 1) & u):
        return
    mm = tlb.mm
    pgdp = pgd_offset(k, mm, addr)
    while addr != end:
        nxt = g.pgd_addr_end(addr, end)
        if pgdp_get(k, pgdp):
            if g.mm_pud_folded:
                # pgtable-nopud.h: the pgd entry is the pud entry; free_pmd_range directly.
                _free_pmd_range(k, tlb, pgdp, addr, nxt, floor, ceiling)
            else:
                _free_pud_range(k, tlb, pgdp, addr, nxt, floor, ceiling)
        pgdp += 8
        addr = nxt


def _free_pmd_range(
    k: Kernel, tlb: mmu_gather, pudp: int, addr: int, end: int, floor: int, ceiling: int
) -> None:
    """``free_pmd_range()``: the PTE tables, then the PMD table if the PUD range is inside."""
    g = k.pgt
    _free_pte_tables(k, tlb, pudp, addr, end)
    start = addr & g.PUD_MASK
    if not _upper_table_inside(start, end, floor, ceiling, g.PUD_MASK):
        return
    pud = pudp_get(k, pudp)
    pud_clear(k, pudp)
    pmd_free_tlb(tlb, g.pud_page_paddr(pud) >> g.PAGE_SHIFT, start)
    mm_dec_nr_pmds(k, tlb.mm)


def _free_pud_range(
    k: Kernel, tlb: mmu_gather, p4dp: int, addr: int, end: int, floor: int, ceiling: int
) -> None:
    """``free_pud_range()``: each PMD range, then the PUD table if the P4D range is inside."""
    g = k.pgt
    start = addr
    pudp = pud_offset(k, p4dp, addr)
    a = addr
    while a != end:
        nxt = g.pud_addr_end(a, end)
        if pudp_get(k, pudp):
            _free_pmd_range(k, tlb, pudp, a, nxt, floor, ceiling)
        pudp += 8
        a = nxt
    # free_p4d_range is folded into this (p4d == pgd on arm64 48-bit): the pud
    # table goes when the PGDIR range is inside [floor, ceiling).
    start &= g.PGDIR_MASK
    if not _upper_table_inside(start, end, floor, ceiling, g.PGDIR_MASK):
        return
    p4d = p4dp_get(k, p4dp)
    p4d_clear(k, p4dp)
    pud_free_tlb(tlb, g.p4d_page_paddr(p4d) >> g.PAGE_SHIFT, start)
    mm_dec_nr_puds(k, tlb.mm)


def free_pgtables(
    k: Kernel, tlb: mmu_gather, vmas: list[vm_area_struct], floor: int, ceiling: int
) -> None:
    """``free_pgtables(tlb, vmas, floor, ceiling)``: free the tables of ``vmas`` (sorted).

    As Linux: VMAs closer than ``PMD_SIZE`` are grouped, and each group's
    ``free_pgd_range`` is bounded by ``floor`` (the same for every group) and
    the next group's start (or ``ceiling``): a lower group keeps an upper
    table shared with a higher one, which the higher group frees.
    """
    g = k.pgt
    i = 0
    n = len(vmas)
    while i < n:
        vma = vmas[i]
        addr = vma.vm_start
        j = i
        while j + 1 < n and vmas[j + 1].vm_start <= vmas[j].vm_end + g.PMD_SIZE:
            j += 1
        last = vmas[j]
        nxt_start = vmas[j + 1].vm_start if j + 1 < n else ceiling
        free_pgd_range(k, tlb, addr, last.vm_end, floor, nxt_start)
        i = j + 1


# --- fault handling -------------------------------------------------------------------------------


def _pte_of(k: Kernel, pmdp: int, addr: int) -> tuple[int, int] | None:
    """``(ptep, pte)`` of ``addr`` under ``*pmdp``, or None when the PMD is none."""
    pmd = pmdp_get(k, pmdp)
    if not pmd:
        return None
    ptep = _pte_table_ptr(k, pmd, addr)
    return ptep, ptep_get(k, ptep)


def _anon_folio_order(k: Kernel, vma: vm_area_struct, pmdp: int, addr: int) -> int:
    """``alloc_anon_folio``'s order: ``PMD_ORDER`` for ``VM_HUGEPAGE`` when the aligned range
    lies in the VMA and all its PTEs are none; otherwise 0."""
    g = k.pgt
    if not vma.vm_flags & VM_HUGEPAGE or vma.vm_flags & VM_NOHUGEPAGE:
        return 0
    haddr = addr & g.PMD_MASK
    if haddr < vma.vm_start or haddr + g.PMD_SIZE > vma.vm_end:
        return 0
    pmd = pmdp_get(k, pmdp)
    if pmd:
        ptes = ptep_get_array(k, _pte_table_ptr(k, pmd, haddr), g.PTRS_PER_PTE)
        if bool(ptes.any()):
            return 0
    return int(g.PMD_ORDER)


def _new_anon_folio(k: Kernel, order: int) -> int | None:
    gfp = GFP_HIGHUSER_MOVABLE | __GFP_ZERO
    if order:
        gfp |= __GFP_COMP | __GFP_NOWARN
    return alloc_pages(_zone(k), gfp, order)


def _folio_add_new_anon_rmap(k: Kernel, head: int, nr: int) -> None:
    """``folio_add_new_anon_rmap`` + ``folio_ref_add(nr - 1)``: a mapping and a ref per PTE."""
    memmap = _memmap(k)
    i = head - memmap.base_pfn
    memmap.mapping[i] = PAGE_MAPPING_ANON
    memmap.mapcount[i : i + nr] = 1
    memmap.refcount[i] = nr
    memmap.flags[i] |= np.uint32(1 << PG_uptodate)


def _mk_anon_pte(k: Kernel, vma: vm_area_struct, pfn: int) -> int:
    """``mk_pte`` + ``pte_sw_mkyoung`` + (VM_WRITE) ``pte_mkwrite(pte_mkdirty())``."""
    g = k.pgt
    entry = g.pte_mkyoung(g.pfn_pte(pfn, vma.vm_page_prot))
    if vma.vm_flags & VM_WRITE:
        entry = g.pte_mkwrite(g.pte_mkdirty(entry))
    return entry


def do_anonymous_page(k: Kernel, vma: vm_area_struct, addr: int, pmdp: int, flags: int) -> int:
    """``do_anonymous_page()``: a read maps the zero page, a write a new zeroed folio.

    The folio is order 0, or ``PMD_ORDER`` for ``VM_HUGEPAGE`` VMAs (mapped
    by ``PTRS_PER_PTE`` PTEs with one ``set_ptes``).  The PTE table is
    allocated on demand (``pte_alloc``).
    """
    g = k.pgt
    mm = vma.vm_mm
    if pte_alloc(k, mm, pmdp):
        return VM_FAULT_OOM
    if not flags & FAULT_FLAG_WRITE:
        got = _pte_of(k, pmdp, addr)
        assert got is not None
        ptep, pte = got
        if pte:
            return 0
        st = user_mm_init(k)
        entry = g.pte_mkspecial(g.pfn_pte(st.zero_pfn, vma.vm_page_prot))
        set_pte_at(k, mm, addr, ptep, entry)
        return 0
    order = _anon_folio_order(k, vma, pmdp, addr)
    head = _new_anon_folio(k, order)
    if head is None and order:
        order = 0
        head = _new_anon_folio(k, 0)
    if head is None:
        return VM_FAULT_OOM
    nr = 1 << order
    start = addr & ~((nr << g.PAGE_SHIFT) - 1)
    got = _pte_of(k, pmdp, start)
    assert got is not None
    ptep, pte = got
    if pte:
        free_folio_refs(k, np.array([head], dtype=np.int64), None)
        return 0
    anon_vma_prepare(vma)
    _folio_add_new_anon_rmap(k, head, nr)
    _add_rss(mm, nr, 0, 0)
    set_ptes(k, ptep, _mk_anon_pte(k, vma, head), nr)
    return 0


def _vma_pgoff(k: Kernel, vma: vm_area_struct, addr: int) -> int:
    return vma.vm_pgoff + ((addr - vma.vm_start) >> k.pgt.PAGE_SHIFT)


def do_fault(k: Kernel, vma: vm_area_struct, addr: int, pmdp: int, flags: int) -> int:
    """``do_fault()`` for a file (or shmem) VMA with no PTE yet.

    ``do_read_fault``: map the page-cache page with ``vm_page_prot``;
    ``do_cow_fault`` (write, private): a new anonymous copy;
    ``do_shared_fault`` (write, shared): the page-cache page, writable and
    dirty.  Beyond EOF: ``VM_FAULT_SIGBUS``.
    """
    g = k.pgt
    mm = vma.vm_mm
    f = vma.vm_file
    if not isinstance(f, file):
        raise KernelBug(f"do_fault on {vma!r} without a model file")
    index = _vma_pgoff(k, vma, addr)
    if index >= (f.size + g.PAGE_SIZE - 1) >> g.PAGE_SHIFT:
        return VM_FAULT_SIGBUS
    if pte_alloc(k, mm, pmdp):
        return VM_FAULT_OOM
    cache = filemap_get_folio(k, f, index)
    if cache is None:
        return VM_FAULT_OOM
    got = _pte_of(k, pmdp, addr)
    assert got is not None
    ptep, pte = got
    if pte:
        return 0
    memmap = _memmap(k)
    write = bool(flags & FAULT_FLAG_WRITE)
    if write and not vma.vm_flags & VM_SHARED:
        new = _new_anon_folio(k, 0)
        if new is None:
            return VM_FAULT_OOM
        m = k.machine
        m.copy_page(k.cpu, page_address(k, new), page_address(k, cache))
        anon_vma_prepare(vma)
        _folio_add_new_anon_rmap(k, new, 1)
        _add_rss(mm, 1, 0, 0)
        set_pte_at(k, mm, addr, ptep, _mk_anon_pte(k, vma, new))
        return 0
    i = cache - memmap.base_pfn
    memmap.refcount[i] += 1
    memmap.mapcount[i] += 1
    if f.shmem:
        _add_rss(mm, 0, 0, 1)
    else:
        _add_rss(mm, 0, 1, 0)
    entry = g.pte_mkyoung(g.pfn_pte(cache, vma.vm_page_prot))
    if write:
        entry = g.pte_mkwrite(g.pte_mkdirty(entry))
        memmap.flags[i] |= np.uint32(1 << PG_dirty)
    set_pte_at(k, mm, addr, ptep, entry)
    return 0


def _wp_page_reuse(k: Kernel, vma: vm_area_struct, addr: int, ptep: int, orig: int) -> int:
    """``wp_page_reuse()``: make the entry young, dirty and writable in place (flush the RO one)."""
    g = k.pgt
    entry = g.pte_mkwrite(g.pte_mkdirty(g.pte_mkyoung(orig)))
    ptep_set_access_flags(k, ptep, entry, True, vma, addr)
    return 0


def _wp_can_reuse_anon_folio(k: Kernel, pfn: int, ptep: int) -> bool:
    """``wp_can_reuse_anon_folio()``: the folio is mapped only here.

    Small folio: ``refcount == 1``.  Large folio (Linux 6.15+
    ``__wp_can_reuse_large_anon_folio``): every reference is a mapping, and
    all of them are PTEs of this table.
    """
    memmap = _memmap(k)
    base = memmap.base_pfn
    heads, compound = folio_heads(k, np.array([pfn], dtype=np.int64))
    head = int(heads[0])
    hi = head - base
    rc = int(memmap.refcount[hi])
    if not compound:
        return rc == 1
    nr = 1 << int(memmap.compound_order[hi])
    if int(memmap.mapcount[hi : hi + nr].sum()) != rc:
        return False
    g = k.pgt
    table = ptep & ~(g.PAGE_SIZE - 1)
    ptes = ptep_get_array(k, table, g.PTRS_PER_PTE)
    pfns = _ptes_pfn(k, ptes)
    here = (ptes != _ZERO64) & (pfns >= head) & (pfns < head + nr)
    return int(np.count_nonzero(here)) == rc


def wp_page_copy(k: Kernel, vma: vm_area_struct, addr: int, ptep: int, orig: int) -> int:
    """``wp_page_copy()``: break COW with a new order-0 anonymous page.

    Copy the old page through the linear map (``copy_user_highpage``; a
    zeroed page for the zero page), ``ptep_clear_flush`` the old entry, map
    the copy writable and dirty, then drop the old page's mapping and
    reference.
    """
    g = k.pgt
    mm = vma.vm_mm
    special = g.pte_special(orig)
    new = _new_anon_folio(k, 0)
    if new is None:
        return VM_FAULT_OOM
    old_pfn = g.pte_pfn(orig)
    if not special:
        k.machine.copy_page(k.cpu, page_address(k, new), page_address(k, old_pfn))
    entry = _mk_anon_pte(k, vma, new)
    ptep_get_and_clear(k, ptep)
    flush_tlb_page(k, vma, addr)
    anon_vma_prepare(vma)
    _folio_add_new_anon_rmap(k, new, 1)
    if special:
        _add_rss(mm, 1, 0, 0)
    else:
        heads = folio_heads(k, np.array([old_pfn], dtype=np.int64))[0]
        anon, filep, shmem = _rss_split(k, heads)
        _add_rss(mm, 1 - anon, -filep, -shmem)
    set_pte_at(k, mm, addr, ptep, entry)
    if not special:
        memmap = _memmap(k)
        memmap.mapcount[old_pfn - memmap.base_pfn] -= 1
        free_folio_refs(k, heads, None)
    k.machine.emit(COW_BREAK)
    return 0


def do_wp_page(k: Kernel, vma: vm_area_struct, addr: int, ptep: int, orig: int) -> int:
    """``do_wp_page()``: a write to a present, write-protected PTE of a writable VMA.

    Shared mappings are made writable in place (``wp_page_shared``); an
    anonymous folio mapped only here is reused (``wp_page_reuse``); anything
    else — a folio shared with another process after fork, the zero page, a
    private file page — is copied (``wp_page_copy``).
    """
    if vma.vm_flags & VM_SHARED:
        memmap = _memmap(k)
        pfn = k.pgt.pte_pfn(orig)
        memmap.flags[pfn - memmap.base_pfn] |= np.uint32(1 << PG_dirty)
        return _wp_page_reuse(k, vma, addr, ptep, orig)
    if not k.pgt.pte_special(orig):
        pfn = k.pgt.pte_pfn(orig)
        if _is_anon(k, pfn) and _wp_can_reuse_anon_folio(k, pfn, ptep):
            return _wp_page_reuse(k, vma, addr, ptep, orig)
    return wp_page_copy(k, vma, addr, ptep, orig)


def handle_mm_fault(k: Kernel, vma: vm_area_struct, address: int, flags: int) -> int:
    """``handle_mm_fault(vma, address, flags)`` → ``__handle_mm_fault`` → ``handle_pte_fault``.

    Allocates missing upper tables (``p4d_alloc``/``pud_alloc``/``pmd_alloc``);
    then: no PTE → ``do_anonymous_page``/``do_fault``; a write to a
    non-writable PTE → ``do_wp_page``; otherwise the access/dirty update
    through ``ptep_set_access_flags`` (a write marks it dirty and flushes the
    stale read-only entry).  Returns 0 or ``VM_FAULT_*`` bits.
    """
    mm = vma.vm_mm
    k.machine.emit(PAGE_FAULT)
    pgdp = pgd_offset(k, mm, address)
    p4dp = p4d_alloc(k, mm, pgdp, address)
    pudp = None if p4dp is None else pud_alloc(k, mm, p4dp, address)
    pmdp = None if pudp is None else pmd_alloc(k, mm, pudp, address)
    if pmdp is None:
        return VM_FAULT_OOM
    got = _pte_of(k, pmdp, address)
    if got is None or not got[1]:
        if vma.vm_file is None:
            return do_anonymous_page(k, vma, address, pmdp, flags)
        return do_fault(k, vma, address, pmdp, flags)
    ptep, pte = got
    g = k.pgt
    if not g.pte_present(pte):
        raise KernelBug(f"non-present PTE {pte:#x} at {address:#x}: swap is not modelled")
    entry = pte
    write = bool(flags & FAULT_FLAG_WRITE)
    if write:
        if not g.pte_write(entry):
            return do_wp_page(k, vma, address, ptep, pte)
        entry = g.pte_mkdirty(entry)
    entry = g.pte_mkyoung(entry)
    ptep_set_access_flags(k, ptep, entry, write, vma if write else None, address)
    return 0


_ACCESS_VM_FLAGS = {"R": VM_READ | VM_WRITE | VM_EXEC, "W": VM_WRITE, "RW": VM_WRITE, "X": VM_EXEC}


def do_page_fault(k: Kernel, addr: int, access: str, fault: Fault | None = None) -> None:
    """arm64 ``do_page_fault()`` for a user access by ``current``: check the VMA, then fault in.

    Raises :class:`UserFault` for SIGSEGV (no VMA: ``SEGV_MAPERR``; VMA not
    allowing the access: ``SEGV_ACCERR``; a pkey overlay fault:
    ``SEGV_PKUERR``) and SIGBUS.  A read is allowed by any of
    ``VM_READ|VM_WRITE|VM_EXEC`` (arm64 without EPAN).
    """
    if fault is not None and fault.overlay:
        raise UserFault("SIGSEGV", "SEGV_PKUERR", addr)
    task = current(k)
    mm = task.mm
    if mm is None:
        raise UserFault("SIGSEGV", "SEGV_MAPERR", addr)
    vma = vma_lookup(mm, addr)
    if vma is None:
        raise UserFault("SIGSEGV", "SEGV_MAPERR", addr)
    if not vma.vm_flags & _ACCESS_VM_FLAGS[access]:
        raise UserFault("SIGSEGV", "SEGV_ACCERR", addr)
    flags = FAULT_FLAG_USER
    if access in ("W", "RW"):
        flags |= FAULT_FLAG_WRITE
    elif access == "X":
        flags |= FAULT_FLAG_INSTRUCTION
    ret = handle_mm_fault(k, vma, addr, flags)
    if ret & VM_FAULT_SIGBUS:
        raise UserFault("SIGBUS", "BUS_ADRERR", addr)
    if ret & VM_FAULT_SIGSEGV:
        raise UserFault("SIGSEGV", "SEGV_ACCERR", addr)
    if ret & VM_FAULT_OOM:
        raise KernelBug(
            f"out of memory handling a fault at {addr:#x} (the OOM killer is not modelled)"
        )


def access_user(k: Kernel, va: int, access: str) -> int:
    """A user-mode (EL0) access by ``current`` to ``va``: the physical address, faulting in.

    Each attempt is ``Machine.translate(k.cpu, va, access, el=0)``; a fault
    goes to :func:`do_page_fault` (an exception from EL0: POR_EL1 is not
    touched) and the access is retried, as the hardware re-executes the
    instruction.
    """
    for _ in range(4):
        try:
            return k.machine.translate(k.cpu, va, access, el=0)
        except Fault as f:
            do_page_fault(k, va, access, f)
    raise KernelBug(f"fault loop on a user {access} at {va:#x}")


def user_write(k: Kernel, va: int, data: bytes) -> None:
    """A user store of ``data`` at ``va`` (may cross pages) by ``current``."""
    page = k.machine.page_size
    off = 0
    while off < len(data):
        a = va + off
        n = min(len(data) - off, page - (a & (page - 1)))
        pa = access_user(k, a, "W")
        k.machine.mem.write_bytes(pa, data[off : off + n])
        off += n


def user_read(k: Kernel, va: int, n: int) -> bytes:
    """A user load of ``n`` bytes at ``va`` (may cross pages) by ``current``."""
    page = k.machine.page_size
    out = bytearray()
    while len(out) < n:
        a = va + len(out)
        m = min(n - len(out), page - (a & (page - 1)))
        pa = access_user(k, a, "R")
        out += k.machine.mem.read_bytes(pa, m)
    return bytes(out)


# --- populate (MAP_POPULATE / mm_populate) --------------------------------------------------------


def _alloc_small_pages(k: Kernel, nr: int) -> list[int] | None:
    """``nr`` zeroed order-0 pages; whole ``PTRS_PER_PTE`` batches come from one split block."""
    zone = _zone(k)
    g = k.pgt
    out: list[int] = []
    while len(out) < nr:
        if nr - len(out) >= g.PTRS_PER_PTE:
            blk = alloc_pages(zone, GFP_HIGHUSER_MOVABLE | __GFP_ZERO | __GFP_NOWARN, g.PMD_ORDER)
            if blk is not None:
                split_page(zone, blk, int(g.PMD_ORDER))
                out.extend(range(blk, blk + g.PTRS_PER_PTE))
                continue
        p = alloc_pages(zone, GFP_HIGHUSER_MOVABLE | __GFP_ZERO, 0)
        if p is None:
            if out:
                free_folio_refs(k, np.array(out, dtype=np.int64), None)
            return None
        out.append(p)
    return out


def populate_vma_range(k: Kernel, vma: vm_area_struct, start: int, end: int) -> int:
    """``populate_vma_page_range()``: fault in ``[start, end)`` of ``vma`` (GUP).

    Writable private mappings are populated for write (``FOLL_WRITE``),
    everything else for read.  Private anonymous memory takes a bulk path:
    per PTE table, the none entries get fresh zeroed folios (one
    ``PMD_ORDER`` folio per table for ``VM_HUGEPAGE``; otherwise order-0
    pages, taken from ``split_page``d ``PMD_ORDER`` blocks when a whole table
    is filled — Linux faults pages in one at a time, so only *which* frames
    are used differs) and one bulk ``set_ptes``.  Other VMAs go through
    :func:`handle_mm_fault` page by page.  Returns 0 or ``-ENOMEM``.
    """
    g = k.pgt
    write = (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
    flags = FAULT_FLAG_WRITE if write else 0
    if vma.vm_file is not None or not write:
        for a in range(start, end, g.PAGE_SIZE):
            pte = _lookup_pte(k, vma.vm_mm, a)
            if pte and (not write or g.pte_write(pte)):
                continue
            if handle_mm_fault(k, vma, a, flags) & VM_FAULT_ERROR:
                return -ENOMEM
        return 0
    mm = vma.vm_mm
    addr = start
    while addr < end:
        nxt = g.pmd_addr_end(addr, end)
        pgdp = pgd_offset(k, mm, addr)
        p4dp = p4d_alloc(k, mm, pgdp, addr)
        pudp = None if p4dp is None else pud_alloc(k, mm, p4dp, addr)
        pmdp = None if pudp is None else pmd_alloc(k, mm, pudp, addr)
        if pmdp is None or pte_alloc(k, mm, pmdp):
            return -ENOMEM
        if _populate_pte_table(k, vma, pmdp, addr, nxt):
            return -ENOMEM
        addr = nxt
    return 0


def _populate_pte_table(k: Kernel, vma: vm_area_struct, pmdp: int, addr: int, end: int) -> int:
    g = k.pgt
    mm = vma.vm_mm
    pmd = pmdp_get(k, pmdp)
    ptep = _pte_table_ptr(k, pmd, addr)
    n = (end - addr) >> g.PAGE_SHIFT
    old = ptep_get_array(k, ptep, n)
    need = old == _ZERO64
    nr = int(np.count_nonzero(need))
    # Entries already present but read-only (zero page, COW): a write fault each.
    for i in np.flatnonzero(~need & ~g.ptes_write_mask(old)).tolist():
        if handle_mm_fault(k, vma, addr + (i << g.PAGE_SHIFT), FAULT_FLAG_WRITE) & VM_FAULT_ERROR:
            return -ENOMEM
    if not nr:
        return 0
    memmap = _memmap(k)
    anon_vma_prepare(vma)
    huge = (
        nr == g.PTRS_PER_PTE
        and vma.vm_flags & VM_HUGEPAGE
        and not vma.vm_flags & VM_NOHUGEPAGE
        and (addr & g.PMD_MASK) >= vma.vm_start
        and (addr & g.PMD_MASK) + g.PMD_SIZE <= vma.vm_end
    )
    head = _new_anon_folio(k, int(g.PMD_ORDER)) if huge else None
    if head is not None:
        _folio_add_new_anon_rmap(k, head, nr)
        pfns = np.arange(head, head + nr, dtype=np.int64)
    else:
        got = _alloc_small_pages(k, nr)
        if got is None:
            return -ENOMEM
        pfns = np.asarray(got, dtype=np.int64)
        idx = pfns - memmap.base_pfn
        memmap.mapping[idx] = PAGE_MAPPING_ANON
        memmap.mapcount[idx] = 1
        memmap.refcount[idx] = 1
        memmap.flags[idx] |= np.uint32(1 << PG_uptodate)
    entry = _mk_anon_pte(k, vma, 0)
    vals = np.zeros(n, dtype=np.uint64)
    vals[need] = g.pfn_ptes(pfns, entry)
    for lo, hi in _runs(need):
        set_ptes_array(k, ptep + 8 * lo, vals[lo:hi])
    _add_rss(mm, nr, 0, 0)
    k.machine.emit(PAGE_FAULT, nr)
    return 0


def _lookup_pte(k: Kernel, mm: mm_struct, addr: int) -> int:
    """The PTE value mapping ``addr`` in ``mm`` (0 if any level is missing)."""
    for pudp, a, e in _pmd_tables(k, mm, addr, addr + 1):
        _pmdp, pmds = _pmd_slice(k, pudp, a, e)
        pmd = int(pmds[0])
        if not pmd:
            return 0
        return ptep_get(k, _pte_table_ptr(k, pmd, addr))
    return 0


# --- fork: copy_page_range ------------------------------------------------------------------------


def _vma_needs_copy(dst_vma: vm_area_struct, src_vma: vm_area_struct) -> bool:
    """``vma_needs_copy()``: only VMAs with anonymous pages (or PFN maps) copy their tables.

    Shared and not-yet-COWed file mappings are refaulted by the child.
    """
    if src_vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP):
        return True
    return src_vma.anon_vma is not None


def _store_wrprotected(k: Kernel, ptep: int, new: U64Array) -> None:
    n = len(new)
    with k.pgtables_guard(k):
        k.machine.store_pt_entries(k.cpu, ptep, new)
    if n > 1:
        k.pgtables_guard_repeat(k, n - 1)


def wrprotect_ptes(k: Kernel, ptep: int, ptes: U64Array) -> None:
    """``wrprotect_ptes(mm, addr, ptep, nr)`` (arm64 ``__wrprotect_ptes``) on consecutive entries.

    ``nr`` × ``___ptep_set_wrprotect`` — each a guarded cmpxchg loop — whose
    loads are ``ptes``, the values the caller just read in the same lazy MMU
    section (in the sequential model the cmpxchg succeeds first time).  One
    guard and one permission check for the run; the ``nr - 1`` other guard
    round trips are counted through ``k.pgtables_guard_repeat``, as the bulk
    helpers of ``kernel/mm/pgtable`` do.
    """
    if len(ptes):
        _store_wrprotected(k, ptep, k.pgt.ptes_wrprotect(ptes))


def _copy_finish(k: Kernel, dst_vma: vm_area_struct, batch: _PteBatch) -> None:
    """The rmap/refcount/rss updates of :func:`copy_pte_range` for the copied entries."""
    if not batch.count:
        return
    idx, vals = batch.normal_idx(k)
    if len(idx):
        memmap = _memmap(k)
        st = user_mm_init(k)
        st.add_at(memmap.mapcount, idx, 1)
        hidx, compound = _folio_head_idx(k, idx)
        shared = bool(dst_vma.vm_flags & VM_SHARED)
        nops = batch.rmap_batches(k, idx, vals, hidx, compound, shared)
        k.machine.emit(FOLIO_DUP_RMAP_PTES, nops)
        if dst_vma.vm_file is None:
            _add_rss(dst_vma.vm_mm, len(hidx), 0, 0)
        else:
            _add_rss(dst_vma.vm_mm, *_rss_split_idx(k, hidx))
        if compound:
            u, c = _fold_refs(hidx, True)
            assert c is not None
            memmap.refcount[u] += c.astype(np.int32)
        else:
            st.add_at(memmap.refcount, hidx, 1)
    k.machine.emit(COPY_PTE, batch.count)


def _copy_ptes(
    k: Kernel,
    dst_vma: vm_area_struct,
    src_vma: vm_area_struct,
    dst_pmdp: int,
    dst_pmd: int,
    src_pmd: int,
    addr: int,
    end: int,
    batch: _PteBatch,
) -> int:
    g = k.pgt
    dst_mm = dst_vma.vm_mm
    n = (end - addr) >> g.PAGE_SHIFT
    # _pte_table_ptr(k, src_pmd, addr), inlined
    if not g.pmd_table(src_pmd):
        raise KernelBug(f"user PMD entry {src_pmd:#x} at {addr:#x} is not a table (not modelled)")
    pte_off = 8 * g.pte_index(addr)
    src_ptep = g.va(g.pmd_page_paddr(src_pmd)) + pte_off
    src = ptep_get_array(k, src_ptep, n)
    copied = int(_count_nonzero(src))
    if not copied:
        return 0
    if not dst_pmd:
        # __pte_alloc(): pte_alloc_one + pmd_install.  The entry was read as none in
        # this walk (``dst_pmd``) and nothing runs in between in the sequential
        # model, so pmd_install's re-check under the lock is elided.
        new = pte_alloc_one(k, dst_mm)
        if new is None:
            return -ENOMEM
        mm_inc_nr_ptes(k, dst_mm)
        pmd_populate(k, dst_mm, dst_pmdp, new)
        dst_table = g.va(new << g.PAGE_SHIFT)
    else:
        dst_table = g.va(g.pmd_page_paddr(dst_pmd))
    dst_ptep = dst_table + pte_off
    all_nz = copied == n
    nz = None if all_nz else src != _ZERO64
    pos = None if nz is None else np.flatnonzero(nz)
    vals = src
    lazy_mmu_mode_enable(k)
    try:
        if is_cow_mapping(src_vma.vm_flags):
            wmask = g.ptes_write_mask(vals)
            nw = int(_count_nonzero(wmask))
            if nw == n:
                vals = g.ptes_wrprotect(vals)
                _store_wrprotected(k, src_ptep, vals)
            elif nw:
                for lo, hi in _runs(wmask):
                    wrprotect_ptes(k, src_ptep + 8 * lo, vals[lo:hi])
                vals = np.where(wmask, g.ptes_wrprotect(vals), vals)
        if src_vma.vm_flags & VM_SHARED:
            clean = g.ptes_mkclean(vals)
            vals = clean if nz is None else np.where(nz, clean, _ZERO64)
        vals = g.ptes_mkold(vals)
        # set_ptes() of user entries: __set_pte_complete emits no barrier for them.
        if nz is None:
            __set_ptes_nosync_array(k, dst_ptep, vals)
        else:
            for lo, hi in _runs(nz):
                __set_ptes_nosync_array(k, dst_ptep + 8 * lo, vals[lo:hi])
            vals = vals[nz]
    finally:
        lazy_mmu_mode_disable(k)
    batch.add(vals, pos)
    return 0


def copy_pte_range(
    k: Kernel,
    dst_vma: vm_area_struct,
    src_vma: vm_area_struct,
    dst_pmdp: int,
    dst_pmd: int,
    src_pmd: int,
    addr: int,
    end: int,
) -> int:
    """``copy_pte_range()``: copy the PTEs of ``[addr, end)`` into the child (vectorised).

    ``dst_pmd``/``src_pmd`` are the current PMD entries (``dst_pmdp`` points
    at the child's).  Allocates the child's PTE table when ``dst_pmd`` is none
    (``__pte_alloc``: ``pte_alloc_one`` + ``pmd_install``).  Then, inside a
    lazy MMU section, with one load of the parent's table slice: for a COW
    mapping the writable entries are write-protected in the parent
    (:func:`wrprotect_ptes`, one bulk store per run) and in the child's copy;
    the child's entries are made old (and clean for shared mappings) and each
    run of non-none entries is stored with one bulk ``set_ptes``.  Finally
    ``mapcount`` and the folio references grow by one per copied PTE
    (``folio_try_dup_anon_rmap_ptes``/``folio_dup_file_rmap_ptes`` +
    ``folio_ref_add``) and the child's rss counters are updated; the rmap
    work is counted per folio batch (``folio_dup_rmap_ptes``: one per small
    folio, one per ``folio_pte_batch`` run of a large one,
    :meth:`_PteBatch.rmap_batches`).  Returns 0 or ``-ENOMEM``.
    """
    batch = _PteBatch()
    ret = _copy_ptes(k, dst_vma, src_vma, dst_pmdp, dst_pmd, src_pmd, addr, end, batch)
    _copy_finish(k, dst_vma, batch)
    return ret


def copy_pmd_range(
    k: Kernel,
    dst_vma: vm_area_struct,
    src_vma: vm_area_struct,
    dst_pudp: int,
    src_pudp: int,
    addr: int,
    end: int,
) -> int:
    """``copy_pmd_range()``: allocate the child's PMD table, then copy each populated PTE table.

    The ``struct page`` updates of all the tables are applied once at the end.
    """
    dst_mm = dst_vma.vm_mm
    dst_pmdp = pmd_alloc(k, dst_mm, dst_pudp, addr)
    if dst_pmdp is None:
        return -ENOMEM
    _src_pmdp, src_pmds = _pmd_slice(k, src_pudp, addr, end)
    if not bool(src_pmds.any()):
        return 0
    dst_pmds = ptep_get_array(k, dst_pmdp, len(src_pmds))
    batch = _PteBatch()
    ret = 0
    for i, pmd, s, t in _pmd_steps(k, addr, end, src_pmds):
        ret = _copy_ptes(k, dst_vma, src_vma, dst_pmdp + 8 * i, dst_pmds.item(i), pmd, s, t, batch)
        if ret:
            break
    _copy_finish(k, dst_vma, batch)
    return ret


def copy_pud_range(
    k: Kernel,
    dst_vma: vm_area_struct,
    src_vma: vm_area_struct,
    dst_p4dp: int,
    src_pudp: int,
    addr: int,
    end: int,
) -> int:
    """``copy_pud_range()``: allocate the child's PUD table (4 levels), then the PMD range."""
    dst_pudp = pud_alloc(k, dst_vma.vm_mm, dst_p4dp, addr)
    if dst_pudp is None:
        return -ENOMEM
    return copy_pmd_range(k, dst_vma, src_vma, dst_pudp, src_pudp, addr, end)


def copy_page_range(k: Kernel, dst_vma: vm_area_struct, src_vma: vm_area_struct) -> int:
    """``copy_page_range(dst_vma, src_vma)``: duplicate the parent's page tables for one VMA.

    Skipped unless ``vma_needs_copy``.  Walks the parent's existing PMD tables
    (``copy_p4d_range`` → ``copy_pud_range`` → ``copy_pmd_range`` →
    ``copy_pte_range``), allocating the child's tables level by level.
    Returns 0 or ``-ENOMEM``.  The parent's TLB is flushed by the caller
    (``dup_mmap`` → ``flush_tlb_mm(oldmm)``).
    """
    if not _vma_needs_copy(dst_vma, src_vma):
        return 0
    src_mm = src_vma.vm_mm
    dst_mm = dst_vma.vm_mm
    for src_pudp, a, e in _pmd_tables(k, src_mm, src_vma.vm_start, src_vma.vm_end):
        dst_pgdp = pgd_offset(k, dst_mm, a)
        dst_p4dp = p4d_alloc(k, dst_mm, dst_pgdp, a)
        if dst_p4dp is None:
            return -ENOMEM
        if copy_pud_range(k, dst_vma, src_vma, dst_p4dp, src_pudp, a, e):
            return -ENOMEM
    return 0
