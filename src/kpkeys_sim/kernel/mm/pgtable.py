"""Page-table write, read and walk helpers (arm64 ``asm/pgtable.h``, ``asm/pgalloc.h``).

Arch-neutral: the descriptor format, geometry and layout come from ``k.pgt``
(:class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchPgtable`), ``set_swapper_pgd``
from ``k.arch_mm``; the arm64 fixmap slots live in :mod:`kpkeys_sim.kernel.mm.fixmap`.

Every store to a page-table page goes through one of the writers below, and
every writer stores with :meth:`Machine.store_pt_entries` on ``k.cpu`` through
the pointer it is given — the kernel VA of the entry, i.e. the page's
linear-map alias for tables from the page allocator or memblock, the kernel
image alias for ``swapper_pg_dir`` and the static image tables, or a fixmap
slot while ``__create_pgd_mapping`` runs (exactly the aliases the kernel
writes through).  The MMU checks that alias with the CPU's live pkey register:
there is no side door.

Guards (spec kpkeys-series.md §3.5).  Each helper enters
``with k.pgtables_guard(k):`` around exactly the scope v5 15/18 guards:

==============================  ==============================================
``__set_pte_nosync`` (so        the single store
``__set_pte``, ``set_ptes``)
``set_pmd``/``set_pud``         store + the DSB/ISB after it
``set_p4d``/``set_pgd``         store + ``queue_pte_barriers()``; the
                                ``set_swapper_pgd`` early-return path is *not*
                                guarded
``ptep_test_and_clear_young``   the whole cmpxchg loop
``ptep_get_and_clear``          the xchg
``ptep_set_wrprotect``          the whole loop
``pmdp_establish``              the xchg
``ptep_set_access_flags``       from after the ``pte_same`` early return
==============================  ==============================================

Atomics.  The model is sequential, so a cmpxchg loop succeeds first time: it
is one checked load and one checked store (a read-modify-write faults as a
write, which is what a failing ``cmpxchg``/``xchg`` on a read-only page
reports).

Barriers (v6.16 "arm64/mm: Batch barriers when updating kernel mappings"; only
when ``k.pgt.ARCH_HAS_PTE_BARRIERS``: arm64 yes, x86 no).
``__set_pte`` of a valid kernel entry, ``set_pmd``/``set_pud`` of a valid
entry and ``set_p4d`` call :func:`queue_pte_barriers`: DSB+ISB now, or — when
lazy MMU mode is active (``k.lazy_mmu_active(k)``, installed by
``kernel/mm/lazy_mmu``; absent means never) — set ``TIF_LAZY_MMU_PENDING`` on
``current`` so ``arch_leave_lazy_mmu_mode`` emits them once.

Bulk helpers.  ``set_ptes_array``, ``__set_ptes_nosync_array``,
``pte_clear_array``, ``ptep_get_and_clear_array``,
``ptep_set_wrprotect_array`` and ``set_pmd_array`` write many consecutive
entries of one table with ONE guard and ONE permission check (the pkey is per
page, so this is exact), then call ``k.pgtables_guard_repeat(k, n - 1)`` so
the guard round trips the kernel makes per entry are still counted; barrier
pairs are counted per entry too (one real DSB+ISB, the others emitted as
counts).

Walks.  Pointers are kernel VAs of entries.  ``*_offset`` load the parent
entry with a checked load and return ``__va(table) + index * 8``; a folded
level returns the pointer it was given (``include/asm-generic/pgtable-nop4d.h``,
``-nopud.h``).

Reads (event ``pt_read``).  The software reads of page-table entries made
through the read and walk helpers below — ``ptep_get`` and its
``pXdp_get`` aliases, ``ptep_get_array`` (a bulk load of consecutive
entries), the parent-entry loads of ``pud_offset``/``pmd_offset``/
``pte_offset_kernel``/``pte_offset_map`` and of the ``*_set_fixmap_offset``
helpers (``kernel/mm/fixmap``), and ``ptep_set_access_flags`` when it returns without writing —
emit ``pt_read`` with the number of entries read (one emission per read
operation).  The load inside an update (the xchg/cmpxchg loops, the
access-flag update that writes) is part of that entry's write and emits
nothing here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_page
from kpkeys_sim.kernel.sched import TIF_LAZY_MMU_PENDING, current, set_thread_flag
from kpkeys_sim.machine.events import DSB, ISB, declare_event

if TYPE_CHECKING:
    from kpkeys_sim.kernel.mm.mm_types import mm_struct, vm_area_struct

__all__ = [
    "PT_READ",
    "__p4d_populate",
    "__pgd_populate",
    "__pmd_populate",
    "__pte_clear",
    "__ptep_get",
    "__pud_populate",
    "__set_pte",
    "__set_pte_complete",
    "__set_pte_nosync",
    "__set_ptes_nosync_array",
    "emit_pte_barriers",
    "kernel_pgtable_walk",
    "lazy_mmu_active",
    "p4d_clear",
    "p4d_offset",
    "p4d_populate",
    "p4dp_get",
    "pgd_clear",
    "pgd_offset",
    "pgd_offset_k",
    "pgd_offset_pgd",
    "pgd_populate",
    "pgdp_get",
    "pmd_clear",
    "pmd_off_k",
    "pmd_offset",
    "pmd_populate",
    "pmd_populate_kernel",
    "pmdp_establish",
    "pmdp_get",
    "pte_clear",
    "pte_clear_array",
    "pte_offset_kernel",
    "pte_offset_map",
    "ptep_get",
    "ptep_get_and_clear",
    "ptep_get_and_clear_array",
    "ptep_get_array",
    "ptep_set_access_flags",
    "ptep_set_wrprotect",
    "ptep_set_wrprotect_array",
    "ptep_test_and_clear_young",
    "pud_clear",
    "pud_offset",
    "pud_populate",
    "pudp_get",
    "queue_pte_barriers",
    "set_p4d",
    "set_pgd",
    "set_pmd",
    "set_pmd_array",
    "set_pte",
    "set_pte_at",
    "set_ptes",
    "set_ptes_array",
    "set_pud",
]

U64Array = npt.NDArray[np.uint64]

PT_READ = declare_event(
    "pt_read",
    "page-table entries read by the software read/walk helpers (ptep_get, pXd_offset, "
    "bulk table loads); one emission per read operation",
    "kernel",
)


# --- barriers and lazy MMU (asm/pgtable.h, v6.16) ------------------------------------------------


def lazy_mmu_active(k: Kernel) -> bool:
    """``is_lazy_mmu_mode_active()`` through the ``k.lazy_mmu_active`` hook (absent: False)."""
    hook = getattr(k, "lazy_mmu_active", None)
    return bool(hook(k)) if hook is not None else False


def emit_pte_barriers(k: Kernel) -> None:
    """``emit_pte_barriers()``: ``dsb(ishst); isb()``."""
    k.machine.dsb()
    k.cpu.isb()


def _emit_pte_barriers_n(k: Kernel, n: int) -> None:
    """``n`` back-to-back ``emit_pte_barriers()``: one real pair, the rest counted."""
    if n <= 0:
        return
    emit_pte_barriers(k)
    if n > 1:
        k.machine.emit(DSB, n - 1)
        k.machine.emit(ISB, n - 1)


def queue_pte_barriers(k: Kernel) -> None:
    """``queue_pte_barriers()``: defer to the end of the lazy MMU section, or emit now."""
    hook = getattr(k, "lazy_mmu_active", None)  # lazy_mmu_active(k), inlined
    if hook is not None and hook(k):
        set_thread_flag(current(k), TIF_LAZY_MMU_PENDING)
    else:
        k.machine.dsb()  # emit_pte_barriers(k), inlined
        k.cpu.isb()


def _queue_pte_barriers_n(k: Kernel, n: int) -> None:
    if n <= 0:
        return
    if lazy_mmu_active(k):
        set_thread_flag(current(k), TIF_LAZY_MMU_PENDING)
    else:
        _emit_pte_barriers_n(k, n)


# --- reads ---------------------------------------------------------------------------------------


def _load_entry(k: Kernel, ptep: int) -> int:
    """A checked load of one entry, counted as one ``pt_read``."""
    m = k.machine
    val = m.load_u64(k.cpu, ptep)
    m.emit(PT_READ)
    return val


def ptep_get(k: Kernel, ptep: int) -> int:
    """``ptep_get(ptep)`` / ``__ptep_get``: a checked load of the entry (one ``pt_read``)."""
    return _load_entry(k, ptep)


__ptep_get = ptep_get
pmdp_get = ptep_get
pudp_get = ptep_get
p4dp_get = ptep_get
pgdp_get = ptep_get


def _load_entries(k: Kernel, ptep: int, n: int) -> U64Array:
    """A copy of ``n`` consecutive entries from ``ptep`` (one checked read; no event)."""
    return k.machine.load_entries(k.cpu, ptep, n)


def ptep_get_array(k: Kernel, ptep: int, n: int) -> U64Array:
    """A copy of ``n`` consecutive entries from ``ptep`` (one checked read of the page).

    ``n`` × ``ptep_get`` of consecutive entries: emits ``pt_read`` once with
    count ``n`` (nothing for ``n == 0``).
    """
    m = k.machine
    vals = m.load_entries(k.cpu, ptep, n)  # _load_entries(k, ptep, n)
    if n > 0:
        ins = m.instruments
        if ins.active:
            ins.emit(PT_READ, n)
    return vals


# --- pte writers ---------------------------------------------------------------------------------


def __set_pte_nosync(k: Kernel, ptep: int, pte: int) -> None:
    """``__set_pte_nosync``: the guarded store, no barriers."""
    with k.pgtables_guard(k):
        k.machine.store_pt_entries(k.cpu, ptep, pte)


def __set_pte_complete(k: Kernel, pte: int) -> None:
    """``__set_pte_complete``: barriers only for a valid kernel entry (arm64; x86: none)."""
    g = k.pgt
    if g.ARCH_HAS_PTE_BARRIERS and g.pte_valid_not_user(pte):
        queue_pte_barriers(k)


def __set_pte(k: Kernel, ptep: int, pte: int) -> None:
    """``__set_pte``: ``__set_pte_nosync`` + ``__set_pte_complete``."""
    __set_pte_nosync(k, ptep, pte)
    __set_pte_complete(k, pte)


def set_pte(k: Kernel, ptep: int, pte: int) -> None:
    """``set_pte(ptep, pte)`` (arm64: ``__set_pte``)."""
    __set_pte(k, ptep, pte)


def __set_ptes_nosync_array(k: Kernel, ptep: int, values: U64Array) -> None:
    """``len(values)`` × ``__set_pte_nosync`` on consecutive entries: one guard, one check."""
    n = len(values)
    if n == 0:
        return
    with k.pgtables_guard(k):
        k.machine.store_pt_entries(k.cpu, ptep, values)
    if n > 1:
        k.pgtables_guard_repeat(k, n - 1)


def set_ptes_array(k: Kernel, ptep: int, values: U64Array) -> None:
    """``len(values)`` × ``__set_pte`` on consecutive entries (bulk, exact accounting).

    One guard and one permission check for the page; the ``n - 1`` other guard
    round trips through ``k.pgtables_guard_repeat``; one barrier pair per valid
    kernel entry (queued in lazy MMU mode).
    """
    __set_ptes_nosync_array(k, ptep, values)
    g = k.pgt
    if len(values) and g.ARCH_HAS_PTE_BARRIERS:
        _queue_pte_barriers_n(k, int(np.count_nonzero(g.ptes_valid_not_user_mask(values))))


def set_ptes(k: Kernel, ptep: int, pte: int, nr: int) -> None:
    """``set_ptes(mm, addr, ptep, pte, nr)``: ``nr`` entries, the pfn advancing by one each.

    ``__set_ptes_anysz``: ``nr`` × ``__set_pte_nosync`` then one
    ``__set_pte_complete`` of the last value.
    """
    if nr <= 0:
        return
    if nr == 1:
        __set_pte(k, ptep, pte)
        return
    shift = np.uint64(k.pgt.PAGE_SHIFT)
    values = np.uint64(pte) + (np.arange(nr, dtype=np.uint64) << shift)
    __set_ptes_nosync_array(k, ptep, values)
    __set_pte_complete(k, int(values[-1]))


def set_pte_at(k: Kernel, mm: mm_struct, addr: int, ptep: int, pte: int) -> None:
    """``set_pte_at(mm, addr, ptep, pte)``: ``set_ptes(..., 1)``."""
    set_ptes(k, ptep, pte, 1)


def __pte_clear(k: Kernel, ptep: int) -> None:
    """``__pte_clear``: ``__set_pte(ptep, 0)``."""
    __set_pte(k, ptep, 0)


def pte_clear(k: Kernel, ptep: int) -> None:
    """``pte_clear(mm, addr, ptep)``."""
    __set_pte(k, ptep, 0)


def pte_clear_array(k: Kernel, ptep: int, n: int) -> None:
    """``n`` × ``pte_clear`` on consecutive entries (one guard, one check; accounting kept)."""
    if n <= 0:
        return
    with k.pgtables_guard(k):
        k.machine.store_pt_entries(k.cpu, ptep, 0, n)
    if n > 1:
        k.pgtables_guard_repeat(k, n - 1)


def ptep_get_and_clear(k: Kernel, ptep: int) -> int:
    """``ptep_get_and_clear`` (``__ptep_get_and_clear_anysz``): guarded xchg with 0."""
    m = k.machine
    with k.pgtables_guard(k):
        old = m.load_u64(k.cpu, ptep)
        m.store_pt_entries(k.cpu, ptep, 0)
    return old


def ptep_get_and_clear_array(k: Kernel, ptep: int, n: int) -> U64Array:
    """``n`` × ``ptep_get_and_clear`` on consecutive entries; returns the old values."""
    if n <= 0:
        return np.zeros(0, dtype=np.uint64)
    with k.pgtables_guard(k):
        old = _load_entries(k, ptep, n)
        k.machine.store_pt_entries(k.cpu, ptep, 0, n)
    if n > 1:
        k.pgtables_guard_repeat(k, n - 1)
    return old


def ptep_set_wrprotect(k: Kernel, ptep: int) -> None:
    """``ptep_set_wrprotect`` (``___ptep_set_wrprotect``): the guarded cmpxchg loop."""
    m = k.machine
    with k.pgtables_guard(k):
        old = m.load_u64(k.cpu, ptep)
        m.store_pt_entries(k.cpu, ptep, k.pgt.pte_wrprotect(old))


def ptep_set_wrprotect_array(k: Kernel, ptep: int, mask: npt.NDArray[np.bool_]) -> None:
    """``ptep_set_wrprotect`` on every entry ``ptep + 8*i`` with ``mask[i]`` true.

    One guard and one check per run of consecutive selected entries; the guard
    round trips of the other selected entries are counted through
    ``k.pgtables_guard_repeat``.  Unselected entries are not written.
    """
    idx = np.flatnonzero(mask)
    n = len(idx)
    if n == 0:
        return
    old = _load_entries(k, ptep, int(idx[-1]) + 1)
    new = k.pgt.ptes_wrprotect(old)
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks + 1, [n]))
    m = k.machine
    with k.pgtables_guard(k):
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            lo, hi = int(idx[s]), int(idx[e - 1]) + 1
            m.store_pt_entries(k.cpu, ptep + 8 * lo, new[lo:hi])
    if n > 1:
        k.pgtables_guard_repeat(k, n - 1)


def ptep_test_and_clear_young(k: Kernel, ptep: int) -> bool:
    """``ptep_test_and_clear_young`` (``__ptep_test_and_clear_young``): guarded loop; was young?"""
    m = k.machine
    g = k.pgt
    with k.pgtables_guard(k):
        old = m.load_u64(k.cpu, ptep)
        m.store_pt_entries(k.cpu, ptep, g.pte_mkold(old))
    return g.pte_young(old)


def ptep_set_access_flags(
    k: Kernel,
    ptep: int,
    entry: int,
    dirty: bool,
    vma: vm_area_struct | None = None,
    address: int = 0,
) -> bool:
    """``__ptep_set_access_flags`` (arch/arm64/mm/fault.c).

    Returns False without writing (and without the guard) when the entry is
    already ``entry``.  Otherwise it ORs in the access flag, write and dirty
    bits of ``entry`` keeping PTE_RDONLY the most permissive of the two, under
    the guard (v5 15/18), and returns True (the stored value is the arch's
    ``ptep_access_flags_merge``).  With ``dirty`` the stale
    read-only TLB entry is invalidated with ``flush_tlb_page(vma, address)``;
    ``vma`` is then required.
    """
    m = k.machine
    pte = m.load_u64(k.cpu, ptep)
    if pte == entry:
        # The pte_same() early return: only the read happened.
        m.emit(PT_READ)
        return False
    if dirty and vma is None:
        raise ValueError("ptep_set_access_flags(dirty=True) needs the vma and address to flush")
    with k.pgtables_guard(k):
        val = k.pgt.ptep_access_flags_merge(pte, entry)
        m.store_pt_entries(k.cpu, ptep, val)
    if dirty and vma is not None:
        flush_tlb_page(k, vma, address)
    return True


def pmdp_establish(k: Kernel, vma: vm_area_struct | None, address: int, pmdp: int, pmd: int) -> int:
    """``pmdp_establish(vma, address, pmdp, pmd)``: guarded xchg; returns the old entry."""
    m = k.machine
    with k.pgtables_guard(k):
        old = m.load_u64(k.cpu, pmdp)
        m.store_pt_entries(k.cpu, pmdp, pmd)
    return old


# --- upper-level writers -------------------------------------------------------------------------


def set_pmd(k: Kernel, pmdp: int, pmd: int) -> None:
    """``set_pmd(pmdp, pmd)``: guarded store, then (valid entry) ``queue_pte_barriers``."""
    g = k.pgt
    with k.pgtables_guard(k):
        k.machine.store_pt_entries(k.cpu, pmdp, pmd)
        if g.ARCH_HAS_PTE_BARRIERS and g.pmd_valid(pmd):
            queue_pte_barriers(k)


def set_pmd_array(k: Kernel, pmdp: int, values: U64Array) -> None:
    """``len(values)`` × :func:`set_pmd` on consecutive entries (one guard/check, exact counts)."""
    n = len(values)
    if n == 0:
        return
    g = k.pgt
    with k.pgtables_guard(k):
        k.machine.store_pt_entries(k.cpu, pmdp, values)
        if g.ARCH_HAS_PTE_BARRIERS:
            _queue_pte_barriers_n(k, int(np.count_nonzero(g.ptes_valid_mask(values))))
    if n > 1:
        k.pgtables_guard_repeat(k, n - 1)


def pmd_clear(k: Kernel, pmdp: int) -> None:
    """``pmd_clear(pmdp)``: ``set_pmd(pmdp, 0)``."""
    set_pmd(k, pmdp, 0)


def set_pud(k: Kernel, pudp: int, pud: int) -> None:
    """``set_pud(pudp, pud)``.

    With the pud folded (64K, 3 levels) a pud entry lives in the pgd, so a
    store into ``swapper_pg_dir`` goes through the arch's ``set_swapper_pgd``
    (``k.arch_mm``).  Otherwise: guarded store, then (valid entry)
    ``queue_pte_barriers``.
    """
    g = k.pgt
    if g.mm_pud_folded and k.arch_mm.in_swapper_pgdir(k, pudp):
        k.arch_mm.set_swapper_pgd(k, pudp, pud)
        return
    with k.pgtables_guard(k):
        k.machine.store_pt_entries(k.cpu, pudp, pud)
        if g.ARCH_HAS_PTE_BARRIERS and g.pud_valid(pud):
            queue_pte_barriers(k)


def pud_clear(k: Kernel, pudp: int) -> None:
    """``pud_clear(pudp)``: ``set_pud(pudp, 0)``."""
    set_pud(k, pudp, 0)


def set_p4d(k: Kernel, p4dp: int, p4d: int) -> None:
    """``set_p4d(p4dp, p4d)``.

    3 levels: ``set_pud`` (pgtable-nopud.h).  4 levels: a ``swapper_pg_dir``
    entry goes through the arch's ``set_swapper_pgd``; otherwise guarded
    store, then ``queue_pte_barriers`` (inside the guard scope).
    """
    g = k.pgt
    if g.mm_pud_folded:
        set_pud(k, p4dp, p4d)
        return
    if k.arch_mm.in_swapper_pgdir(k, p4dp):
        k.arch_mm.set_swapper_pgd(k, p4dp, p4d)
        return
    with k.pgtables_guard(k):
        k.machine.store_pt_entries(k.cpu, p4dp, p4d)
        if g.ARCH_HAS_PTE_BARRIERS:
            queue_pte_barriers(k)


def p4d_clear(k: Kernel, p4dp: int) -> None:
    """``p4d_clear(p4dp)``: ``set_p4d(p4dp, 0)``; a no-op when the pud is folded (nopud)."""
    if k.pgt.mm_pud_folded:
        return
    set_p4d(k, p4dp, 0)


def set_pgd(k: Kernel, pgdp: int, pgd: int) -> None:
    """``set_pgd(pgdp, pgd)``: the p4d is folded (nop4d), so ``set_p4d``."""
    set_p4d(k, pgdp, pgd)


def pgd_clear(k: Kernel, pgdp: int) -> None:
    """``pgd_clear(pgdp)``: a no-op, the p4d being folded into the pgd (pgtable-nop4d.h)."""
    return None


# --- populate (asm/pgalloc.h) --------------------------------------------------------------------


def __pmd_populate(k: Kernel, pmdp: int, pte_phys: int, prot: int) -> None:
    """``__pmd_populate(pmdp, ptep_phys, prot)``: ``set_pmd`` of a table descriptor."""
    set_pmd(k, pmdp, (pte_phys & k.pgt.PTE_ADDR_MASK) | prot)


def pmd_populate_kernel(k: Kernel, pmdp: int, pte_pfn: int) -> None:
    """``pmd_populate_kernel(&init_mm, pmdp, pte)``: a kernel table entry (arm64 UXNTable)."""
    g = k.pgt
    set_pmd(k, pmdp, g.mk_pmd_table(pte_pfn << g.PAGE_SHIFT, False))


def pmd_populate(k: Kernel, mm: mm_struct, pmdp: int, pte_pfn: int) -> None:
    """``pmd_populate(mm, pmdp, pte_page)``: a user table entry (arm64 PXNTable)."""
    if mm is k.init_mm:
        raise KernelBug("VM_BUG_ON: pmd_populate() on init_mm (use pmd_populate_kernel)")
    g = k.pgt
    set_pmd(k, pmdp, g.mk_pmd_table(pte_pfn << g.PAGE_SHIFT, True))


def __pud_populate(k: Kernel, pudp: int, pmd_phys: int, prot: int) -> None:
    """``__pud_populate(pudp, pmdp_phys, prot)``: ``set_pud`` of a table descriptor."""
    set_pud(k, pudp, (pmd_phys & k.pgt.PTE_ADDR_MASK) | prot)


def pud_populate(k: Kernel, mm: mm_struct, pudp: int, pmd_pfn: int) -> None:
    """``pud_populate(mm, pudp, pmdp)``: a kernel (init_mm) or user table entry."""
    g = k.pgt
    set_pud(k, pudp, g.mk_pud_table(pmd_pfn << g.PAGE_SHIFT, mm is not k.init_mm))


def __p4d_populate(k: Kernel, p4dp: int, pud_phys: int, prot: int) -> None:
    """``__p4d_populate(p4dp, pudp_phys, prot)`` (4 levels only: a BUILD_BUG otherwise)."""
    if k.pgt.mm_pud_folded:
        raise KernelBug("BUILD_BUG: __p4d_populate() with the pud folded")
    set_p4d(k, p4dp, (pud_phys & k.pgt.PTE_ADDR_MASK) | prot)


def p4d_populate(k: Kernel, mm: mm_struct, p4dp: int, pud_pfn: int) -> None:
    """``p4d_populate(mm, p4dp, pudp)``; a no-op when the pud is folded (nopud)."""
    g = k.pgt
    if g.mm_pud_folded:
        return
    set_p4d(k, p4dp, g.mk_p4d_table(pud_pfn << g.PAGE_SHIFT, mm is not k.init_mm))


def __pgd_populate(k: Kernel, pgdp: int, p4d_phys: int, prot: int) -> None:
    """``__pgd_populate``: a BUILD_BUG on arm64 48-bit (the p4d is always folded)."""
    raise KernelBug("BUILD_BUG: __pgd_populate() with the p4d folded")


def pgd_populate(k: Kernel, mm: mm_struct, pgdp: int, p4d_pfn: int) -> None:
    """``pgd_populate(mm, pgdp, p4dp)``: a no-op (pgtable-nop4d.h)."""
    return None


# --- walks ---------------------------------------------------------------------------------------


def pgd_offset_pgd(k: Kernel, pgd: int, addr: int) -> int:
    """``pgd_offset_pgd(pgd, addr)``: entry of ``addr`` in the pgd at VA ``pgd``."""
    return pgd + 8 * k.pgt.pgd_index(addr)


def pgd_offset(k: Kernel, mm: mm_struct, addr: int) -> int:
    """``pgd_offset(mm, addr)``."""
    return mm.pgd + 8 * k.pgt.pgd_index(addr)


def pgd_offset_k(k: Kernel, addr: int) -> int:
    """``pgd_offset_k(addr)``: ``pgd_offset(&init_mm, addr)`` (a swapper_pg_dir image address)."""
    return k.init_mm.pgd + 8 * k.pgt.pgd_index(addr)


def p4d_offset(k: Kernel, pgdp: int, addr: int) -> int:
    """``p4d_offset(pgdp, addr)``: ``pgdp`` (the p4d is folded)."""
    return pgdp


def pud_offset(k: Kernel, p4dp: int, addr: int) -> int:
    """``pud_offset(p4dp, addr)``: ``p4dp`` when folded, else the entry in the pud table."""
    g = k.pgt
    if g.mm_pud_folded:
        return p4dp
    p4d = _load_entry(k, p4dp)
    return g.va(g.p4d_page_paddr(p4d)) + 8 * g.pud_index(addr)


def pmd_offset(k: Kernel, pudp: int, addr: int) -> int:
    """``pmd_offset(pudp, addr)``: the entry of ``addr`` in the pmd table ``*pudp`` points to."""
    g = k.pgt
    pud = _load_entry(k, pudp)
    return g.va(g.pud_page_paddr(pud)) + 8 * g.pmd_index(addr)


def pte_offset_kernel(k: Kernel, pmdp: int, addr: int) -> int:
    """``pte_offset_kernel(pmdp, addr)``."""
    g = k.pgt
    pmd = _load_entry(k, pmdp)
    return g.va(g.pmd_page_paddr(pmd)) + 8 * g.pte_index(addr)


def pte_offset_map(k: Kernel, pmdp: int, addr: int) -> int | None:
    """``pte_offset_map(pmdp, addr)``: None (NULL) unless ``*pmdp`` is a present table.

    ``__pte_offset_map``: none, non-present, leaf (huge) and bad entries give NULL.
    """
    g = k.pgt
    pmd = _load_entry(k, pmdp)
    if g.pmd_none(pmd) or not g.pmd_present(pmd) or g.pmd_leaf(pmd) or g.pmd_bad(pmd):
        return None
    return g.va(g.pmd_page_paddr(pmd)) + 8 * g.pte_index(addr)


def pmd_off_k(k: Kernel, addr: int) -> int:
    """``pmd_off_k(addr)``: the kernel pmd entry of ``addr`` (the upper levels must exist)."""
    pgdp = pgd_offset_k(k, addr)
    return pmd_offset(k, pud_offset(k, p4d_offset(k, pgdp, addr), addr), addr)


def kernel_pgtable_walk(k: Kernel) -> Iterator[int]:
    """Physical address of every page table reachable from ``swapper_pg_dir``, root first.

    A preorder walk over the hardware levels (folded levels have no table of
    their own), descending into every entry that is a table descriptor
    (``pmd_table`` holds at every upper level).  A table's entries are read
    with one checked load — through ``k.swapper_pg_dir`` for the root, the
    linear-map alias ``__va(phys)`` below — when the walk moves past the
    table, so a caller may change the table's pkey before its entries are
    read (as ``kernel_pgtables_set_pkey`` and ``init_pks_dmap_tables`` do).
    """
    g = k.pgt
    m = k.machine
    swapper_pa = g.pa_symbol(k.swapper_pg_dir)

    def walk(table_pa: int, level: int) -> Iterator[int]:
        yield table_pa
        if level == 3:
            return
        va = k.swapper_pg_dir if table_pa == swapper_pa else g.va(table_pa)
        for desc in m.load_table(k.cpu, va).tolist():
            if g.pmd_table(desc):
                yield from walk(g.pmd_page_paddr(desc), level + 1)

    return walk(swapper_pa, m.geometry.start_level)
