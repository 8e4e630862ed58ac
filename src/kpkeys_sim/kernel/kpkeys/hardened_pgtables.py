"""kpkeys_hardened_pgtables: page tables mapped with a pkey, writable only inside helpers.

Spec kpkeys-series.md §3 (and §4.1–§4.2, §4.10–§4.11 for the allocators it
dispatches to).  This module is ``mm/kpkeys_hardened_pgtables.c`` of each
version, the ``kpkeys_hardened_pgtables`` guard of arm64 ``asm/pgtable.h``
(v5 15/18, spec §3.5), the lazy-MMU batching of arm64 (v5 18/18, v6 28/30,
spec §3.6), ``kernel_pgtables_set_pkey`` of ``mm/memory.c`` (v5 11/18) and
the v5 ctor/dtor hooks (v5 13/18).  :func:`install_kpkeys_hardened_pgtables`
wires everything into a kernel at the boot points the series uses (spec §3.7):

========================  ====================================================
boot point                what runs
========================  ====================================================
install (before           the guard (``k.pgtables_guard``) and its bulk
``paging_init``)          accounting; lazy-MMU hooks; v5: ctor/dtor hooks;
                          v6: the PPA as ``k.early_pgtable_alloc`` and the
                          split hooks; v7: the PPA and the forced PTE-mapped
                          linear map (``kpkeys_hardened_pgtables_early_enabled``)
``smp_prepare_boot_cpu``  v5: :func:`kpkeys_hardened_pgtables_enable`
``mem_init``              v6: :func:`kpkeys_hardened_pgtables_init` (``pba_init``,
                          key, allocator hooks); v7: the same name (key,
                          allocator hooks, ``ppa_finalize``, static tables)
``smp_cpus_done``         v6: :func:`kpkeys_hardened_pgtables_init_late`
late initcall             v6: ``pba_init_shrinker``
========================  ====================================================

With ``config.kpkeys_hardened_pgtables`` false the guard is
``KPKEYS_GUARD_NOOP`` and nothing else is installed: the unmodified kernel.
On a CPU without pkeys the guard is the conditional one, but its static key is
never enabled, so it never switches; the v6/v7 early hooks test the boot CPU
(``arm64_supports_kpkeys_hardened_pgtables`` / ``arch_supports_kpkeys_early``)
and stay out; nothing sets a pkey.

Guard accounting.  A bulk helper (``set_ptes_array``, ...) enters ONE guard for
``n`` entries and calls ``k.pgtables_guard_repeat(k, n - 1)``.  The hook
installed here emits exactly what ``n - 1`` more guards would have emitted,
with the core's event kinds: ``kpkeys_guard_enter`` for each entry whose
condition held and, when the guard wrote the register, ``kpkeys_set_level`` and
``kpkeys_restore`` plus two ``pkey_reg_write`` and (architectures whose
register write needs a context synchronisation, arm64) two ``isb`` per guard.
The outcome of the last guard entered on the CPU (condition, wrote or skipped)
decides; nothing touches the register.
"""

from __future__ import annotations

from kpkeys_sim.kernel.arch import arch_kpkeys_enabled, kpkeys_arch
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_GUARD_COND,
    KPKEYS_GUARD_ENTER,
    KPKEYS_GUARD_NOOP,
    KPKEYS_LVL_PGTABLES,
    KPKEYS_PKEY_DEFAULT,
    KPKEYS_PKEY_PGTABLES,
    KPKEYS_PKEY_REG_INVAL,
    KPKEYS_RESTORE,
    KPKEYS_SET_LEVEL,
    KpkeysGuard,
    kpkeys_restore_pkey_reg,
    kpkeys_set_level,
)
from kpkeys_sim.kernel.kpkeys.noblock import noblock_pgtable_alloc, noblock_pgtable_free
from kpkeys_sim.kernel.kpkeys.pba import PBA_ENABLED_KEY, pba_pgtable_alloc, pba_pgtable_free
from kpkeys_sim.kernel.kpkeys.warn import WARN_ON
from kpkeys_sim.kernel.sched import task_struct
from kpkeys_sim.machine.events import ISB, PKEY_REG_WRITE, declare_event

__all__ = [
    "KPKEYS_HARDENED_PGTABLES_KEY",
    "KPKEYS_LAZY_MMU_SWITCH",
    "HardenedPgtables",
    "arch_kpkeys_protect_static_pgtables",
    "arm64_supports_kpkeys_hardened_pgtables",
    "hardened_pgtables_state",
    "install_kpkeys_hardened_pgtables",
    "kernel_pgtables_set_pkey",
    "kpkeys_hardened_pgtables_early_enabled",
    "kpkeys_hardened_pgtables_enable",
    "kpkeys_hardened_pgtables_enabled",
    "kpkeys_hardened_pgtables_init",
    "kpkeys_hardened_pgtables_init_late",
    "kpkeys_lazy_mmu_enter",
    "kpkeys_lazy_mmu_exit",
    "kpkeys_pgtable_alloc",
    "kpkeys_pgtable_free",
    "kpkeys_prepare_direct_map_split",
    "kpkeys_protect_pgtable_memory",
    "kpkeys_ready_for_direct_map_split",
    "kpkeys_unprotect_pgtable_memory",
]

#: ``kpkeys_hardened_pgtables_key`` (``__ro_after_init``, default false; spec §3.2).
KPKEYS_HARDENED_PGTABLES_KEY = "kpkeys_hardened_pgtables_key"

KPKEYS_LAZY_MMU_SWITCH = declare_event(
    "kpkeys_lazy_mmu_switch",
    "pkey-register writes made by the kpkeys lazy-MMU batching hooks (enter or leave)",
    "kernel",
)

_GUARD_NAME = "kpkeys_hardened_pgtables"


def kpkeys_hardened_pgtables_enabled(k: Kernel) -> bool:
    """``kpkeys_hardened_pgtables_enabled()``: the static branch (spec §3.2)."""
    return k.static_branch(KPKEYS_HARDENED_PGTABLES_KEY)


# --- the guard and its bulk accounting (spec §1.6, §3.5, §3.6) ----------------------------


class HardenedPgtables:
    """The per-kernel state of the feature: the guard type and the bulk accounting.

    ``guard`` is the ``kpkeys_hardened_pgtables`` guard type:
    ``KPKEYS_GUARD_COND(kpkeys_hardened_pgtables, KPKEYS_LVL_PGTABLES, cond)``
    with ``cond`` = the key is enabled and, with lazy-MMU batching
    (``config.lazy_mmu_batching``), ``in_interrupt() || !lazy-MMU active``
    (v5 18/18: ``TIF_LAZY_MMU``; v6 28/30: ``is_lazy_mmu_mode_active()``).  The
    condition is evaluated once, by the core, at each guard entry; the core
    also stores that entry's outcome in this object's per-CPU table
    (``KPKEYS_GUARD_COND(..., outcomes=)``), which :meth:`guard_repeat` reads.
    """

    __slots__ = ("_isb_per_write", "_last", "guard")

    def __init__(self, k: Kernel) -> None:
        #: cpu_id -> (condition held, the register was written) of the last entry.
        self._last: dict[int, tuple[bool, bool]] = {}
        self._isb_per_write = 1 if k.machine.arch.reg_write_needs_sync else 0
        batching = k.config.lazy_mmu_batching
        last = self._last

        key = KPKEYS_HARDENED_PGTABLES_KEY

        def cond(kk: Kernel) -> bool:
            # kpkeys_hardened_pgtables_enabled() && (!batching || in_interrupt() ||
            # !is_lazy_mmu_mode_active()), with the two helpers read inline (hot path).
            return kk.static_keys.get(key, False) and (
                not batching or kk.hardirq_count[kk.cpu.cpu_id] > 0 or not kk.lazy_mmu_active(kk)
            )

        # The core records each entry's outcome in ``last`` (read by guard_repeat).
        self.guard: type[KpkeysGuard] = KPKEYS_GUARD_COND(
            _GUARD_NAME, KPKEYS_LVL_PGTABLES, cond, outcomes=last
        )
        self.guard.__module__ = __name__

    def guard_repeat(self, k: Kernel, n: int) -> None:
        """Count ``n`` more guard round trips like the last one entered on ``k.cpu``.

        Installed as ``k.pgtables_guard_repeat``.  Emits the events ``n``
        separate guards would emit (module docstring); nothing when the last
        guard's condition was false.
        """
        ins = k.machine.instruments
        if n <= 0 or not ins.active:
            return
        held, wrote = self._last.get(k.cpu.cpu_id, (False, False))
        if not held:
            return
        emit = ins.emit
        emit(KPKEYS_GUARD_ENTER, n)
        if wrote:
            emit(KPKEYS_SET_LEVEL, n)
            emit(KPKEYS_RESTORE, n)
            emit(PKEY_REG_WRITE, 2 * n)
            if self._isb_per_write:
                emit(ISB, 2 * n)


def hardened_pgtables_state(k: Kernel) -> HardenedPgtables | None:
    """The :class:`HardenedPgtables` installed on ``k``, or None (feature not configured)."""
    owner = getattr(k.pgtables_guard_repeat, "__self__", None)
    return owner if isinstance(owner, HardenedPgtables) else None


# --- lazy-MMU batching (spec §3.6; v5 18/18, v6 28/30) ---------------------------------------


def kpkeys_lazy_mmu_enter(k: Kernel, task: task_struct) -> None:
    """``kpkeys_lazy_mmu_enter()``: ``thread.por_el1_lazy_mmu = kpkeys_set_level(PGTABLES)``.

    Registered in ``k.lazy_mmu_enter_hooks``; ``arch_enter_lazy_mmu_mode()``
    calls it (not in interrupt context) for the outermost section (v6; every
    section in v5).  Only when the feature is enabled.
    """
    if not k.static_keys.get(KPKEYS_HARDENED_PGTABLES_KEY, False):  # feature enabled?
        return
    reg = kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)
    task.por_el1_lazy_mmu = reg
    if reg != KPKEYS_PKEY_REG_INVAL:
        ins = k.machine.instruments
        if ins.active:
            ins.emit(KPKEYS_LAZY_MMU_SWITCH)


def kpkeys_lazy_mmu_exit(k: Kernel, task: task_struct, barriers_pending: bool) -> None:
    """``kpkeys_lazy_mmu_exit()``: restore the POR saved by :func:`kpkeys_lazy_mmu_enter`.

    If barriers are pending (``TIF_LAZY_MMU_PENDING``) the saved value is
    written WITHOUT an ISB (``__kpkeys_set_pkey_reg_nosync``): the ISB of
    ``emit_pte_barriers()``, which ``arch_leave_lazy_mmu_mode()`` runs right
    after, synchronises it.  Otherwise ``kpkeys_restore_pkey_reg`` (write +
    ISB).  A saved ``KPKEYS_PKEY_REG_INVAL`` (nothing was written at entry, or
    the slot never filled) restores nothing.
    """
    if not k.static_keys.get(KPKEYS_HARDENED_PGTABLES_KEY, False):  # feature enabled?
        return
    reg = task.por_el1_lazy_mmu
    if reg == KPKEYS_PKEY_REG_INVAL:
        return
    ins = k.machine.instruments
    if barriers_pending:
        kpkeys_arch(k).kpkeys_set_pkey_reg_nosync(k, reg)
        if ins.active:
            ins.emit(KPKEYS_RESTORE)
    else:
        kpkeys_restore_pkey_reg(k, reg)
    if ins.active:
        ins.emit(KPKEYS_LAZY_MMU_SWITCH)


# --- set_memory_pkey on pages --------------------------------------------------------------------


def _set_memory_pkey(k: Kernel, pfn: int, numpages: int, pkey: int) -> int:
    """``set_memory_pkey(page_address(page), numpages, pkey)``: 0 or -errno."""
    from kpkeys_sim.kernel.mm.addr import page_address
    from kpkeys_sim.kernel.mm.set_memory import set_memory_pkey

    return set_memory_pkey(k, page_address(k, pfn), numpages, pkey)


# --- RFC v5: ctor/dtor and the swapper_pg_dir walk (v5 11/18, 13/18; spec §3.3) ---------------


def kpkeys_protect_pgtable_memory(k: Kernel, pfn: int, order: int = 0) -> int:
    """``kpkeys_protect_pgtable_memory(folio)``: give a new PTP the PGTABLES pkey (v5 13/18).

    If the feature is enabled: ``set_memory_pkey(folio_address, 1 << order,
    KPKEYS_PKEY_PGTABLES)``, ``WARN_ON`` on error; returns the error (non-zero
    makes ``__pagetable_ctor`` fail).
    """
    if not kpkeys_hardened_pgtables_enabled(k):
        return 0
    ret = _set_memory_pkey(k, pfn, 1 << order, KPKEYS_PKEY_PGTABLES)
    WARN_ON(k, ret, f"kpkeys_protect_pgtable_memory: set_memory_pkey(pfn {pfn:#x}): {ret}")
    return ret


def kpkeys_unprotect_pgtable_memory(k: Kernel, pfn: int, order: int = 0) -> None:
    """``kpkeys_unprotect_pgtable_memory(folio)``: back to ``KPKEYS_PKEY_DEFAULT`` (v5 13/18).

    ``WARN_ON`` on error; the result is otherwise ignored.
    """
    if not kpkeys_hardened_pgtables_enabled(k):
        return
    ret = _set_memory_pkey(k, pfn, 1 << order, KPKEYS_PKEY_DEFAULT)
    WARN_ON(k, ret, f"kpkeys_unprotect_pgtable_memory: set_memory_pkey(pfn {pfn:#x}): {ret}")


def _v5_pgtable_ctor(k: Kernel, pfn: int, order: int, level: str) -> bool:
    """The ``__pagetable_ctor`` part of v5 12/18–13/18: fail if the pkey cannot be set."""
    return kpkeys_protect_pgtable_memory(k, pfn, order) == 0


def _v5_pgtable_dtor(k: Kernel, pfn: int, order: int, level: str | None) -> None:
    """The ``pagetable_dtor`` part of v5 13/18."""
    kpkeys_unprotect_pgtable_memory(k, pfn, order)


def kernel_pgtables_set_pkey(k: Kernel, pkey: int) -> int:
    """``kernel_pgtables_set_pkey(pkey)`` (mm/memory.c, ``__init``; v5 11/18, spec §3.3 step 3).

    No-op returning 0 without kpkeys.  Under ``init_mm.page_table_lock``, walk
    ``swapper_pg_dir`` recursively: for each table page, ``set_memory_pkey`` on
    that page (1 page), then recurse into every entry that is not none, not
    bad and not a leaf.  Folded levels (``mm_p4d_folded``, ``mm_pud_folded``)
    have no table of their own and are stepped through by walking the
    hardware levels.  ``swapper_pg_dir`` itself is skipped (``mark_rodata_ro``
    makes it read-only).  Stops at the first error and returns it.

    Table pages are reached as the kernel does, through ``pXd_offset``, i.e.
    through their linear-map alias ``__va(phys)``; their entries are read with
    one checked load of each page.
    """
    if not arch_kpkeys_enabled(k):
        return 0
    mm = k.init_mm
    if mm.page_table_lock:
        raise KernelBug("BUG: spinlock recursion on init_mm.page_table_lock")
    from kpkeys_sim.kernel.mm.pgtable import kernel_pgtable_walk

    g = k.pgt
    swapper_pa = g.pa_symbol(k.swapper_pg_dir)
    mm.page_table_lock = True
    try:
        for table_pa in kernel_pgtable_walk(k):
            if table_pa == swapper_pa:
                continue
            err = _set_memory_pkey(k, table_pa >> g.PAGE_SHIFT, 1, pkey)
            if err:
                return err
        return 0
    finally:
        mm.page_table_lock = False


def kpkeys_hardened_pgtables_enable(k: Kernel) -> None:
    """RFC v5 ``kpkeys_hardened_pgtables_enable()`` (``__init``; v5 11/18, 16/18; spec §3.3).

    Called by arm64 ``smp_prepare_boot_cpu()`` once the boot CPU's features
    are known: return if kpkeys are unavailable; enable the static key (guards
    become active and the PTP ctors set pkeys); then
    ``WARN_ON(kernel_pgtables_set_pkey(KPKEYS_PKEY_PGTABLES))``.
    """
    if not arch_kpkeys_enabled(k):
        return
    k.static_branch_enable(KPKEYS_HARDENED_PGTABLES_KEY)
    ret = kernel_pgtables_set_pkey(k, KPKEYS_PKEY_PGTABLES)
    WARN_ON(k, ret, f"kernel_pgtables_set_pkey(KPKEYS_PKEY_PGTABLES): {ret}")
    k.printk("kpkeys_hardened_pgtables: enabled (swapper_pg_dir tables protected)")


# --- v6/v7: allocator hooks (spec §3.4, §3.8, §4.1, §4.11) --------------------------------------


def kpkeys_pgtable_alloc(k: Kernel, gfp: int, order: int = 0) -> int | None:
    """``kpkeys_pgtable_alloc(gfp)`` (v6) / ``kpkeys_pgtable_alloc(gfp, order)`` (v7).

    v6: the PBA if ``pba_enabled()``, else the noblock allocator (order 0 only:
    the v6 interface has no order).  v7: the noblock allocator with ``order``.
    Returns the head pfn or None.
    """
    if k.config.series == "v7":
        return noblock_pgtable_alloc(k, gfp, order)
    if order:
        raise KernelBug(f"v6 kpkeys_pgtable_alloc() has no order; pagetable_alloc(order={order})")
    if k.static_keys.get(PBA_ENABLED_KEY, False):  # pba_enabled()
        return pba_pgtable_alloc(k, gfp)
    return noblock_pgtable_alloc(k, gfp, 0)


def kpkeys_pgtable_free(k: Kernel, pfn: int, order: int = 0) -> None:
    """``kpkeys_pgtable_free(page)`` (v6) / ``kpkeys_pgtable_free(page, order)`` (v7)."""
    if k.config.series == "v7":
        noblock_pgtable_free(k, pfn, order)
        return
    if order:
        raise KernelBug(f"v6 kpkeys_pgtable_free() has no order; pagetable_free(order={order})")
    if k.static_keys.get(PBA_ENABLED_KEY, False):  # pba_enabled()
        pba_pgtable_free(k, pfn)
    else:
        noblock_pgtable_free(k, pfn, 0)


def _pagetable_alloc_hook(k: Kernel, gfp: int, order: int) -> int | None:
    """``pagetable_alloc()``: ``kpkeys_pgtable_alloc`` when the feature is enabled (§3.4)."""
    if k.static_keys.get(KPKEYS_HARDENED_PGTABLES_KEY, False):  # the feature is enabled
        return kpkeys_pgtable_alloc(k, gfp, order)
    from kpkeys_sim.kernel.mm.gfp import __GFP_COMP
    from kpkeys_sim.kernel.mm.page_alloc import alloc_pages

    zone = k.zone
    if zone is None:
        raise KernelBug("pagetable_alloc() before mem_init(): no buddy allocator")
    return alloc_pages(zone, gfp | __GFP_COMP if order else gfp, order)


def _pagetable_free_hook(k: Kernel, pfn: int, order: int) -> None:
    """``pagetable_free()``: ``kpkeys_pgtable_free`` when the feature is enabled (§3.4)."""
    if k.static_keys.get(KPKEYS_HARDENED_PGTABLES_KEY, False):  # the feature is enabled
        kpkeys_pgtable_free(k, pfn, order)
        return
    from kpkeys_sim.kernel.mm.page_alloc import __free_pages

    zone = k.zone
    if zone is None:
        raise KernelBug("pagetable_free() before mem_init(): no buddy allocator")
    __free_pages(zone, pfn, order)


def kpkeys_prepare_direct_map_split(k: Kernel) -> int:
    """``kpkeys_prepare_direct_map_split()`` (v6 15/30): PBA ``prepare`` or 0 (spec §4.1)."""
    from kpkeys_sim.kernel.kpkeys.pba import pba_enabled, pba_prepare_direct_map_split

    return pba_prepare_direct_map_split(k) if pba_enabled(k) else 0


def kpkeys_ready_for_direct_map_split(k: Kernel) -> bool:
    """``kpkeys_ready_for_direct_map_split()`` (v6 15/30): PBA ``ready`` or true (spec §4.1)."""
    from kpkeys_sim.kernel.kpkeys.pba import pba_enabled, pba_ready_for_direct_map_split

    return pba_ready_for_direct_map_split(k) if pba_enabled(k) else True


def arch_kpkeys_protect_static_pgtables(k: Kernel) -> None:
    """``arch_kpkeys_protect_static_pgtables()`` (v6, v7; spec §3.4 step 3, §3.8).

    Give ``KPKEYS_PKEY_PGTABLES`` to the page tables statically allocated in
    the kernel image.  Which tables, and through which alias, is the
    architecture's: ``k.arch_mm.arch_kpkeys_protect_static_pgtables``
    (arm64: ``kernel/arch/arm64_mm.py``; x86: ``kernel/arch/x86_setup.py``).
    """
    k.arch_mm.arch_kpkeys_protect_static_pgtables(k)


def arm64_supports_kpkeys_hardened_pgtables(k: Kernel) -> bool:
    """v6 ``arm64_supports_kpkeys_hardened_pgtables()`` (spec §2.2, §3.4).

    Before the boot capabilities are finalised the boot CPU is tested
    (``cpu_has_poe()``), after that ``system_supports_poe()``: in the model
    both are the machine's pkey feature (all CPUs are alike).
    """
    return k.machine.has_pkeys


def kpkeys_hardened_pgtables_early_enabled(k: Kernel) -> bool:
    """v7 ``kpkeys_hardened_pgtables_early_enabled()``: configured and POE on the boot CPU.

    ``arch_supports_kpkeys_early()`` tests the boot CPU before the
    capabilities are finalised (spec §1.9, §2.2).  v7 12/24: the linear map
    must then be fully PTE-mapped; the model hooks this into
    ``force_pte_mapping()`` [INF, spec §3.8].
    """
    return k.config.kpkeys_hardened_pgtables and k.machine.has_pkeys


def _install_allocator_hooks(k: Kernel) -> None:
    k.pgtable_alloc_hook = _pagetable_alloc_hook
    k.pgtable_free_hook = _pagetable_free_hook


def kpkeys_hardened_pgtables_init(k: Kernel) -> None:
    """``kpkeys_hardened_pgtables_init()`` (``__init``, from ``mem_init``; v6 13/30, v7 12/24).

    Runs before the first ``pagetable_alloc()``.  If kpkeys are available:

    * v6: ``pba_init()`` (which may pre-fill the cache into the early region),
      then enable ``kpkeys_hardened_pgtables_key`` (spec §3.4);
    * v7: enable the key, ``ppa_finalize()``, then
      ``arch_kpkeys_protect_static_pgtables()`` (spec §3.8).

    Either way ``pagetable_alloc``/``pagetable_free`` then go through
    :func:`kpkeys_pgtable_alloc`/:func:`kpkeys_pgtable_free`: v6 from the end
    of this function, v7 from right after the key is enabled, so a table the
    v7 steps allocate (on x86, the split of the image's 2M high-mapping leaf
    when the static tables' alias gets the key) is already protected.
    """
    if not arch_kpkeys_enabled(k):
        return
    if k.config.series == "v7":
        k.static_branch_enable(KPKEYS_HARDENED_PGTABLES_KEY)
        # pagetable_alloc() tests the static key, so tables allocated from here on
        # (e.g. by a direct-map split in the steps below) already come protected.
        _install_allocator_hooks(k)
        from kpkeys_sim.kernel.kpkeys.ppa import ppa_finalize

        _v7_track_vmemmap_pgtables(k)
        ppa_finalize(k)
        arch_kpkeys_protect_static_pgtables(k)
    else:
        from kpkeys_sim.kernel.kpkeys.pba import pba_init

        pba_init(k)
        k.static_branch_enable(KPKEYS_HARDENED_PGTABLES_KEY)
        _install_allocator_hooks(k)
    k.printk(f"kpkeys_hardened_pgtables: enabled ({k.config.series})")


def kpkeys_hardened_pgtables_init_late(k: Kernel) -> None:
    """v6 ``kpkeys_hardened_pgtables_init_late()`` (``__init``, spec §3.4).

    Called at the earliest point where a linear-map range may change pkey
    (arm64: once every CPU was checked for BBML2_NOABORT, ``smp_cpus_done``).
    If the feature is enabled, in this order: ``pba_init_late()`` (when the
    PBA is enabled; first, so later splits need not draw PTPs from the
    still-unprotected early region), ``ppa_finalize()``,
    ``arch_kpkeys_protect_static_pgtables()``.
    """
    if not kpkeys_hardened_pgtables_enabled(k):
        return
    from kpkeys_sim.kernel.kpkeys.pba import pba_enabled, pba_init_late
    from kpkeys_sim.kernel.kpkeys.ppa import ppa_finalize

    if pba_enabled(k):
        pba_init_late(k)
    ppa_finalize(k)
    arch_kpkeys_protect_static_pgtables(k)


def _pba_init_shrinker(k: Kernel) -> None:
    """``late_initcall(pba_init_shrinker)`` (v6 17/30)."""
    from kpkeys_sim.kernel.kpkeys.pba import pba_init_shrinker

    pba_init_shrinker(k)


def _early_pgtable_alloc_ppa(k: Kernel) -> int:
    """arm64 early page-table allocation through ``kpkeys_physmem_pgtable_alloc()`` (v6, v7)."""
    from kpkeys_sim.kernel.kpkeys.ppa import kpkeys_physmem_pgtable_alloc

    return kpkeys_physmem_pgtable_alloc(k)


def _v7_force_pte_mapping(k: Kernel) -> bool:
    return kpkeys_hardened_pgtables_early_enabled(k)


def _v5_base_force_pte_mapping(k: Kernel) -> bool:
    """The linear-map rule of RFC v5's base kernel (v6.17-rc1), before block mappings.

    v5 predates Yang Shi's "large block mapping when rodata=full" series
    (spec §2.8): ``can_set_direct_map()`` — rodata=full (the default) or
    debug_pagealloc — then always made ``map_mem()`` use
    ``NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS``.  Without it, v5's ctor
    ``set_memory_pkey`` meets block mappings and hits the recursive split Kevin
    found (spec §4.12), which the model reproduces with rodata=full off.
    """
    return k.config.rodata_full or k.config.debug_pagealloc


def _v5_x86_force_pte_mapping(k: Kernel) -> bool:
    """The model's x86 port of v5: a page-granular direct map, always [INF].

    v5 protects each table in its ctor with ``set_memory_pkey``; on a direct
    map with large pages that can need a split whose new table's ctor needs
    another split (the recursion Kevin found, spec §4.12).  On arm64 v5 relied
    on its base kernel mapping the linear map with PTEs (rodata=full); x86 has
    no such rule, so the port imposes it as debug_pagealloc would.
    """
    return True


def _v7_track_vmemmap_pgtables(k: Kernel) -> None:
    """v7: the vmemmap's boot page tables are memblock page tables tracked by the PPA.

    v7 13/24: every early page table is either in a static pool or a memblock
    allocation tracked by the PPA, and v7's KUnit ``write_vmemmap_pmd`` checks
    the vmemmap's PMD.  The model's ``sparse_init`` allocates those tables
    from memblock directly (``k.vmemmap_pgtables``), so they are registered in
    ``allocated_ranges`` here, before ``ppa_finalize()`` [INF: same final
    state as tracking them at allocation].  v6 does not track them (its PPA
    serves arm64's ``early_pgtable_alloc`` only; the v6 KUnit has no vmemmap
    case), so in the model they stay unprotected under v6.
    """
    from kpkeys_sim.kernel.kpkeys.ppa import ppa_register_allocated_range

    if not kpkeys_hardened_pgtables_early_enabled(k):
        return
    shift = k.pgt.PAGE_SHIFT
    for pfn in sorted(set(k.vmemmap_pgtables)):
        ppa_register_allocated_range(k, pfn << shift, 1 << shift)


# --- installation ------------------------------------------------------------------------------


def install_kpkeys_hardened_pgtables(k: Kernel) -> HardenedPgtables | None:
    """Wire the feature into ``k``; boot calls this before ``paging_init()``.

    Returns the per-kernel state, or None when the feature is not configured
    (``config.kpkeys_hardened_pgtables`` false: the guard is
    ``KPKEYS_GUARD_NOOP(kpkeys_hardened_pgtables)`` and nothing else changes).
    The boot-point table is in the module docstring.
    """
    cfg = k.config
    if cfg.series == "v5" and cfg.arch == "arm64":  # the v5 base kernel's arm64 rule
        k.force_pte_mapping_hooks.append(_v5_base_force_pte_mapping)
    if cfg.series == "v5" and cfg.arch == "x86" and cfg.kpkeys_hardened_pgtables:
        k.force_pte_mapping_hooks.append(_v5_x86_force_pte_mapping)
    if not cfg.kpkeys_hardened_pgtables:
        k.pgtables_guard = KPKEYS_GUARD_NOOP(_GUARD_NAME)
        return None
    if cfg.series == "pks-rfc2":  # Rick Edgecombe's PKS page tables (spec §9), x86 only
        from kpkeys_sim.kernel.arch.x86_pks_pgtables import install_pks_rfc2

        return install_pks_rfc2(k)
    hp = HardenedPgtables(k)
    k.pgtables_guard = hp.guard
    k.pgtables_guard_repeat = hp.guard_repeat
    if cfg.lazy_mmu_batching:
        k.lazy_mmu_enter_hooks.append(kpkeys_lazy_mmu_enter)
        k.lazy_mmu_leave_hooks.append(kpkeys_lazy_mmu_exit)
    if cfg.series == "v5":
        k.pgtable_ctor_hooks.append(_v5_pgtable_ctor)
        k.pgtable_dtor_hooks.append(_v5_pgtable_dtor)
        k.smp_prepare_boot_cpu_hooks.append(kpkeys_hardened_pgtables_enable)
    elif cfg.series == "v6":
        if arm64_supports_kpkeys_hardened_pgtables(k):
            k.early_pgtable_alloc = _early_pgtable_alloc_ppa
        k.prepare_direct_map_split = kpkeys_prepare_direct_map_split
        k.ready_for_direct_map_split = kpkeys_ready_for_direct_map_split
        k.mem_init_hooks.append(kpkeys_hardened_pgtables_init)
        k.smp_cpus_done_hooks.append(kpkeys_hardened_pgtables_init_late)
        k.late_initcalls.append(_pba_init_shrinker)
    else:
        if kpkeys_hardened_pgtables_early_enabled(k):
            k.early_pgtable_alloc = _early_pgtable_alloc_ppa
        k.force_pte_mapping_hooks.append(_v7_force_pte_mapping)
        k.mem_init_hooks.append(kpkeys_hardened_pgtables_init)
    return hp
