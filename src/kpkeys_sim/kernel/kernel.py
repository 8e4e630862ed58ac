"""The Kernel object: the state of one booted model kernel, passed explicitly.

Linux keeps this state in globals (``init_mm``, ``mem_map``, the zones, the
static keys) and finds the executing CPU with ``smp_processor_id()``.  The
model keeps it in one ``Kernel`` object that every kernel function takes as
its first argument ``k``; ``k.cpu`` is the CPU the model is currently
executing on (the model is sequential: running something on another CPU is
``with k.on_cpu(i): ...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.machine.cpu import CPU
from kpkeys_sim.machine.machine import Machine

if TYPE_CHECKING:
    from kpkeys_sim.kernel.arch.pgtable_api import ArchMm, ArchPgtable
    from kpkeys_sim.kernel.arch.x86_pks_pgtables import PksRfc2
    from kpkeys_sim.kernel.arch.x86_set_memory import DmapTableSource
    from kpkeys_sim.kernel.cred import CredState
    from kpkeys_sim.kernel.kpkeys.pba import PkeysBlockAllocator
    from kpkeys_sim.kernel.kpkeys.ppa import PkeysPhysmemAllocator
    from kpkeys_sim.kernel.mm.memblock import Memblock
    from kpkeys_sim.kernel.mm.mm_types import mm_struct, vm_struct
    from kpkeys_sim.kernel.mm.page import MemMap
    from kpkeys_sim.kernel.mm.page_alloc import BuddyAllocator
    from kpkeys_sim.kernel.mm.slab import KmemCache, SlabAllocator

__all__ = ["Kernel", "KernelImageSymbols"]


class KernelImageSymbols(Protocol):
    """The kernel image's linker symbols generic code reads (``<asm/sections.h>``).

    Each architecture's image layout (arm64 ``kernel_pgtables.KernelImage``,
    x86 ``x86_head.X86KernelImage``) has these and more; arch code narrows
    ``k.kimage`` to its own type.
    """

    @property
    def pa(self) -> int:
        """Physical address of ``_text``."""

    @property
    def _text(self) -> int: ...
    @property
    def _data(self) -> int: ...
    @property
    def _end(self) -> int: ...


class Kernel:
    """One model kernel on one machine.

    Layers attach their state as attributes during boot (``kernel/boot``):
    allocators, ``init_mm``, the linear map, the kpkeys state.  Static keys
    live in :attr:`static_keys` by their kernel names.
    """

    def __init__(self, machine: Machine, config: KernelConfig) -> None:
        self.machine = machine
        self.config = config
        self.cpu: CPU = machine.cpus[0]
        self.static_keys: dict[str, bool] = {}
        self.log: list[str] = []
        #: Hook returning the context manager every page-table write helper
        #: enters (the ``kpkeys_hardened_pgtables`` guard).  The default is the
        #: NOOP guard of a kernel without the feature; kpkeys_hardened_pgtables
        #: installs the real one at boot.
        self.pgtables_guard: Any = _noop_guard
        #: Accounting hook for bulk page-table operations: a vectorised helper
        #: that writes ``n`` entries under ONE guard (exact, since the register
        #: state is identical at every write) calls ``pgtables_guard_repeat(k,
        #: n - 1)`` so the events of the ``n - 1`` other guard round trips the
        #: kernel would make are still counted.  Default: nothing to count.
        self.pgtables_guard_repeat: Any = _noop_repeat
        #: ``WARN()``/``WARN_ON()`` messages that fired, oldest first
        #: (``kernel/kpkeys/warn.py``).
        self.warnings: list[str] = []
        #: kpkeys v6 pkeys block allocator and the PPA of early page tables
        #: (``kernel/kpkeys/pba.py``, ``ppa.py``); created on first use.
        self.pba: PkeysBlockAllocator | None = None
        #: The cred series' state (``kernel/cred.CredState``), set by ``cred_init``.
        self.cred: CredState | None = None
        self.ppa: PkeysPhysmemAllocator | None = None
        #: Rick Edgecombe's PKS page tables (``series = "pks-rfc2"``, x86), when installed.
        self.pks_rfc2: PksRfc2 | None = None
        #: x86 CPA's source of direct-map split tables instead of ``pagetable_alloc``
        #: (``x86_set_memory.DmapTableSource``; the pks-rfc2 reserve), or None.
        self.dmap_table_source: DmapTableSource | None = None
        self._init_mm_state()
        self._init_task_state()

    # --- memory-management state and hooks (kernel/boot, kernel/mm/{pgtable,pgalloc,
    # linear_map,kernel_pgtables}); set by boot, hooks replaced by kpkeys ------------------
    #: The architecture's page-table format, geometry and memory layout
    #: (``kernel/arch/pgtable_api.ArchPgtable``; arm64: ``arm64_pgtable.PgtableGeometry``,
    #: x86: ``x86_pgtable.X86PgtableGeometry``), set by boot.
    pgt: ArchPgtable
    #: The architecture's mm functions (``kernel/arch/pgtable_api.ArchMm``; arm64:
    #: ``arm64_mm.ARM64_MM``, x86: ``x86_setup.X86Mm``), set by boot.
    arch_mm: ArchMm
    #: ``init_mm`` (its pgd is ``swapper_pg_dir``'s kernel-image VA), set by early boot.
    init_mm: mm_struct
    #: The kernel image's symbols (the arch's image layout), set by early boot.
    kimage: KernelImageSymbols

    def _init_mm_state(self) -> None:
        #: memblock (boot) and, from mem_init on, the buddy zone, its mem_map and the slab.
        self.memblock: Memblock | None = None
        self.zone: BuddyAllocator | None = None
        self.mem_map: MemMap | None = None
        self.slab: SlabAllocator | None = None
        #: arm64 ``pgd_cache`` (16K/64K, where a pgd is smaller than a page).
        self.pgd_cache: KmemCache | None = None
        #: Kernel-image VAs of ``swapper_pg_dir`` and of the fixmap's ``bm_pte`` (0: not yet).
        self.swapper_pg_dir = 0
        self.bm_pte = 0
        #: ``rodata_is_rw``: cleared by ``mark_rodata_ro()`` (set_swapper_pgd then uses the fixmap).
        self.rodata_is_rw = True
        #: The MMU is on (after ``__enable_mmu``); before, boot writes tables physically.
        self.mmu_enabled = False
        #: pfns of page tables statically allocated in the kernel image (for
        #: ``arch_kpkeys_protect_static_pgtables``) and of the fixmap's static tables.
        self.static_pgtables: list[int] = []
        self.fixmap_pgtables: list[int] = []
        #: pfns of the vmemmap's page tables (memblock, generic sparse-vmemmap code).
        self.vmemmap_pgtables: list[int] = []
        #: The kernel image segments as vm_structs (``declare_kernel_vmas``), for vmalloc.
        self.kernel_vmas: list[vm_struct] = []
        #: ``pagetable_*_ctor`` hooks ``(k, pfn, order, level) -> bool | None`` (False = fail)
        #: and ``pagetable_dtor`` hooks ``(k, pfn, order, level) -> None`` (kpkeys v5).
        self.pgtable_ctor_hooks: list[Any] = []
        self.pgtable_dtor_hooks: list[Any] = []
        #: ``pagetable_alloc``/``pagetable_free`` replacements ``(k, gfp, order) -> pfn | None``
        #: and ``(k, pfn, order) -> None`` (kpkeys v6/v7 ``kpkeys_pgtable_alloc/free``).
        self.pgtable_alloc_hook: Any = None
        self.pgtable_free_hook: Any = None
        #: Early (memblock) page-table allocator ``(k) -> phys`` (0 on failure); the
        #: PPA of kpkeys v6/v7 replaces it.  Boot installs memblock's.
        self.early_pgtable_alloc: Any = None
        #: kpkeys v6 15/30 split hooks: ``prepare(k) -> 0 | -errno``, ``ready(k) -> bool``.
        self.prepare_direct_map_split: Any = _prepare_split_default
        self.ready_for_direct_map_split: Any = _ready_split_default
        #: Extra ``force_pte_mapping()`` conditions ``(k) -> bool`` (e.g. kpkeys v7).
        self.force_pte_mapping_hooks: list[Any] = []
        #: ``pgtable_split_lock`` (a mutex; a plain flag in the sequential model).
        self.pgtable_split_lock = False
        #: Linear-map split counters by kind (``split_pud``, ``split_contpmd``, ...).
        self.linear_map_stats: dict[str, int] = {}
        #: ``find_vm_area(k, addr) -> vm_struct | None`` and ``vm_unmap_aliases(k)``
        #: (installed by vmalloc; used by set_memory_ro/rw).
        self.find_vm_area: Any = _no_vm_area
        self.vm_unmap_aliases: Any = _noop_hook
        #: Boot hook lists, each ``hook(k) -> None``, run in registration order:
        #: ``smp_prepare_boot_cpu`` (v5 enable), ``mem_init`` (v6/v7 init),
        #: ``smp_cpus_done`` (v6 init_late), late initcalls (PBA shrinker).
        self.smp_prepare_boot_cpu_hooks: list[Any] = []
        self.mem_init_hooks: list[Any] = []
        self.smp_cpus_done_hooks: list[Any] = []
        self.late_initcalls: list[Any] = []

    # --- tasks, interrupts, lazy MMU, vmalloc, user mm (kernel/sched.py, kernel/mm/
    # lazy_mmu.py, vmalloc.py, memory.py); filled by sched_init/vmalloc_init ---------------

    def _init_task_state(self) -> None:
        nr = len(self.machine.cpus)
        #: ``cpu_curr(cpu)``: the task running on each CPU (``kernel/sched.py``).
        self.cpu_curr: list[Any] = [None] * nr
        #: Per-CPU hard-interrupt nesting (the HARDIRQ part of ``preempt_count``).
        self.hardirq_count: list[int] = [0] * nr
        #: Scheduler bookkeeping (``kernel/sched.SchedState``), set by ``sched_init``.
        self.sched: Any = None
        #: ``is_lazy_mmu_mode_active()`` hook ``(k) -> bool`` read by the PTE helpers;
        #: ``kernel/mm/lazy_mmu.lazy_mmu_init`` installs the real one.
        self.lazy_mmu_active: Any = _never
        #: kpkeys lazy-MMU batching hooks (``kernel/mm/lazy_mmu.py``):
        #: enter ``(k, task) -> None``, leave ``(k, task, barriers_pending) -> None``.
        self.lazy_mmu_enter_hooks: list[Any] = []
        self.lazy_mmu_leave_hooks: list[Any] = []
        #: Early vmalloc-space areas (``vm_area_add_early``) and the vmalloc state
        #: (``kernel/mm/vmalloc.VmapState``, set by ``vmalloc_init``).
        self.vmlist: list[Any] = []
        #: Per-CPU vmalloc'ed IRQ stacks (arm64 ``irq_stack_ptr``), set by ``init_IRQ`` (boot).
        self.irq_stack_ptr: list[int] = []
        self.vmap: Any = None
        #: User address-space state (``kernel/mm/memory.UserMmState``: zero page, files).
        self.user_mm: Any = None

    @property
    def current(self) -> Any:
        """``current``: the task running on ``k.cpu`` (None before ``sched_init``)."""
        return self.cpu_curr[self.cpu.cpu_id]

    def static_branch(self, name: str) -> bool:
        """The value of static key ``name`` (false if never enabled)."""
        return self.static_keys.get(name, False)

    def static_branch_enable(self, name: str) -> None:
        """Enable static key ``name``."""
        self.static_keys[name] = True

    def static_branch_disable(self, name: str) -> None:
        """Disable static key ``name``."""
        self.static_keys[name] = False

    @contextmanager
    def on_cpu(self, cpu_id: int) -> Iterator[CPU]:
        """Execute the body on CPU ``cpu_id`` (restores the previous CPU after)."""
        prev = self.cpu
        self.cpu = self.machine.cpus[cpu_id]
        try:
            yield self.cpu
        finally:
            self.cpu = prev

    def printk(self, msg: str) -> None:
        """Append one line to the kernel log (the boot log ``kpkeys-sim run`` prints)."""
        self.log.append(msg)


def _noop_guard(k: Kernel) -> AbstractContextManager[None]:
    return nullcontext()


def _noop_repeat(k: Kernel, n: int) -> None:
    return None


def _prepare_split_default(k: Kernel) -> int:
    return 0


def _ready_split_default(k: Kernel) -> bool:
    return True


def _no_vm_area(k: Kernel, addr: int) -> None:
    return None


def _noop_hook(k: Kernel) -> None:
    return None


def _never(k: Kernel) -> bool:
    return False
