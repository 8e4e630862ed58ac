"""Tasks, ``current``, the context switch, ASIDs and interrupt context.

Models the parts of ``include/linux/sched.h`` (``struct task_struct``),
``kernel/sched/core.c`` (``context_switch``), ``arch/arm64/kernel/process.c``
(``__switch_to``), ``arch/arm64/mm/context.c`` (ASIDs) and
``include/linux/preempt.h`` (``in_interrupt``) that the page-table hardening
series interacts with:

* ``task_struct`` carries the hardware thread state (:class:`HwThread`: the
  saved ``thread.por_el1``/``por_el0`` of kpkeys v5 08/18), the arm64 thread
  flags ``TIF_LAZY_MMU``/``TIF_LAZY_MMU_PENDING`` (arm64 lazy MMU, v6.16; the
  kpkeys v5 18/18 batching reads them), the generic nesting-aware lazy-MMU
  state of v6 (``struct lazy_mmu_state { u8 enable_count; u8 pause_count; }``)
  and the ``thread.por_el1_lazy_mmu`` slot of the kpkeys batching (spec
  kpkeys-series.md §2.5, §3.6).
* ``current`` is per CPU: ``cpu_curr(cpu)`` is ``k.cpu_curr[cpu_id]`` and
  :func:`current` returns the task running on ``k.cpu``.
* :func:`schedule_to` is ``context_switch()``: ``switch_mm_irqs_off()`` (TTBR0
  and the ASID of the next task's mm, a lazy-TLB borrow for kernel threads),
  then ``__switch_to()`` → the kpkeys arch glue (arm64
  ``permission_overlay_switch``, saving the live POR_EL1 into the outgoing
  thread and writing the incoming one with an ISB if it differs), then the
  ``dsb(ish)`` of ``__switch_to``.
* :func:`irq_context` is an interrupt taken from EL1: ``kernel_entry`` (the
  kpkeys glue saves POR_EL1 in ``pt_regs`` and resets it to ``POR_EL1_INIT``,
  v5 07/18), ``irq_enter`` (HARDIRQ count), the handler body, ``irq_exit`` and
  ``kernel_exit`` (POR_EL1 restored, ERET synchronises).  :func:`in_interrupt`
  is true inside it, so lazy MMU mode is off there (spec §2.4, §3.6).

ASID allocation (simplified; ``docs/model-assumptions.md``): Linux hands out
ASIDs lazily from a bitmap with a generation counter and, on rollover, flushes
every TLB and re-allocates (``new_context``/``flush_context``).  The model
gives an mm the lowest free ASID the first time it is switched to, frees it
when the mm is destroyed (``destroy_context``) and, when it hands out an ASID
that was used before, invalidates it first (``TLBI ASIDE1IS``).  The TLB
contents seen by the new owner are the same as after Linux's rollover flush
(no entry of the old owner survives); only the timing and count of the
invalidation differ.  ASID 0 is reserved (Linux: the reserved ASID of
``init_mm``/``swapper``); ``ASID_BITS`` is 16 (arm64 with 16-bit ASIDs; x86
PCIDs are 12 bits — the model uses one space for both).  Running out of ASIDs
raises :class:`~kpkeys_sim.kernel.errors.KernelBug` (65535 live mms).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kpkeys_sim.kernel.arch import copy_thread, cpu_switch_to, kernel_entry, kernel_exit
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.machine.cpu import HwThread
from kpkeys_sim.machine.events import declare_event

if TYPE_CHECKING:
    from kpkeys_sim.kernel.mm.mm_types import mm_struct

__all__ = [
    "ASID_BITS",
    "CONTEXT_SWITCH",
    "EXIT_DEAD",
    "EXIT_ZOMBIE",
    "IRQ_ENTRY",
    "PF_EXITING",
    "PF_KTHREAD",
    "TASK_RUNNING",
    "TIF_LAZY_MMU",
    "TIF_LAZY_MMU_PENDING",
    "SchedState",
    "alloc_pid",
    "asid_alloc",
    "asid_free",
    "clear_thread_flag",
    "cpu_curr",
    "current",
    "dup_task_struct",
    "finish_lazy_tlb",
    "in_interrupt",
    "irq_context",
    "lazy_mmu_state",
    "sched_init",
    "schedule_to",
    "set_thread_flag",
    "switch_mm",
    "task_struct",
    "test_and_clear_thread_flag",
    "test_thread_flag",
]

#: arm64 ``asm/thread_info.h`` (v6.16+) bit numbers [INF: from memory of the header].
TIF_LAZY_MMU = 31
TIF_LAZY_MMU_PENDING = 32

#: ``task->flags`` (``include/linux/sched.h``).
PF_EXITING = 0x00000004
PF_KTHREAD = 0x00200000

#: ``task->__state`` / ``exit_state`` values used by the model.
TASK_RUNNING = 0
EXIT_ZOMBIE = 0x20
EXIT_DEAD = 0x10

#: Width of the ASID space (arm64 with 16-bit ASIDs).
ASID_BITS = 16

CONTEXT_SWITCH = declare_event(
    "context_switch", "context switches (context_switch(): switch_mm + __switch_to)", "kernel"
)
IRQ_ENTRY = declare_event("irq_entry", "interrupts taken from EL1 (irq_context)", "kernel")


class lazy_mmu_state:
    """``struct lazy_mmu_state`` (generic nesting-aware lazy MMU mode, kpkeys v6 base).

    ``enable_count`` counts nested ``lazy_mmu_mode_enable()`` sections;
    ``pause_count`` counts nested ``lazy_mmu_mode_pause()`` sections.
    """

    __slots__ = ("enable_count", "pause_count")

    def __init__(self) -> None:
        self.enable_count = 0
        self.pause_count = 0

    def __repr__(self) -> str:
        return f"lazy_mmu_state(enable_count={self.enable_count}, pause_count={self.pause_count})"


class task_struct:
    """``struct task_struct``: the fields the model needs.

    ``thread`` is the hardware-visible part (:class:`HwThread`: saved pkey
    registers), ``thread_flags`` the arm64 ``thread_info.flags`` bit set,
    ``lazy_mmu`` the generic lazy-MMU nesting state, ``por_el1_lazy_mmu`` the
    kpkeys batching slot (arm64 ``thread.por_el1_lazy_mmu``, v5 18/18 / v6
    28/30).  ``mm`` is None for kernel threads; ``active_mm`` is the mm whose
    tables are live in TTBR0 while the task runs.
    """

    __slots__ = (
        "active_mm",
        "children",
        "comm",
        "cred",
        "exit_code",
        "exit_state",
        "flags",
        "lazy_mmu",
        "mm",
        "on_cpu",
        "parent",
        "pid",
        "por_el1_lazy_mmu",
        "real_cred",
        "thread",
        "thread_flags",
    )

    def __init__(
        self,
        pid: int,
        comm: str,
        thread: HwThread,
        mm: mm_struct | None,
        active_mm: mm_struct | None,
        *,
        flags: int = 0,
        parent: task_struct | None = None,
    ) -> None:
        self.pid = pid
        self.comm = comm
        self.thread = thread
        self.mm = mm
        self.active_mm = active_mm
        self.flags = flags
        self.parent = parent
        self.children: list[task_struct] = []
        self.thread_flags = 0
        self.lazy_mmu = lazy_mmu_state()
        self.por_el1_lazy_mmu = 0
        self.exit_state = 0
        self.exit_code = 0
        self.on_cpu: int | None = None
        #: ``cred``/``real_cred`` (``kernel/cred.py``): linear-map VAs of ``struct cred``, 0 =
        #: NULL.  A child starts with its parent's pointers (``*tsk = *orig`` in
        #: ``dup_task_struct``); no reference is taken (the model has no ``copy_creds`` step).
        self.cred: int = parent.cred if parent is not None else 0
        self.real_cred: int = parent.real_cred if parent is not None else 0

    def __repr__(self) -> str:
        return f"<task_struct pid={self.pid} comm={self.comm!r}>"


class SchedState:
    """The scheduler's bookkeeping for one kernel: pids, tasks, idle tasks, ASIDs."""

    __slots__ = ("asid_free", "asid_next", "asid_used_before", "idle", "next_pid", "tasks")

    def __init__(self) -> None:
        self.next_pid = 1
        self.tasks: dict[int, task_struct] = {}
        self.idle: list[task_struct] = []
        #: Lowest never-used ASID; ASIDs below it were used at least once.
        self.asid_next = 1
        #: Min-heap of freed ASIDs (reused lowest first).
        self.asid_free: list[int] = []
        self.asid_used_before = 0


# --- thread flags (include/linux/thread_info.h) ------------------------------------------


def set_thread_flag(task: task_struct, flag: int) -> None:
    """``set_ti_thread_flag(task_thread_info(task), flag)``."""
    task.thread_flags |= 1 << flag


def clear_thread_flag(task: task_struct, flag: int) -> None:
    """``clear_ti_thread_flag(task_thread_info(task), flag)``."""
    task.thread_flags &= ~(1 << flag)


def test_thread_flag(task: task_struct, flag: int) -> bool:
    """``test_ti_thread_flag(task_thread_info(task), flag)``."""
    return bool(task.thread_flags >> flag & 1)


def test_and_clear_thread_flag(task: task_struct, flag: int) -> bool:
    """``test_and_clear_ti_thread_flag``: clear ``flag`` and return whether it was set."""
    was = bool(task.thread_flags >> flag & 1)
    task.thread_flags &= ~(1 << flag)
    return was


# --- current and interrupt context ---------------------------------------------------------


def cpu_curr(k: Kernel, cpu_id: int) -> task_struct:
    """``cpu_curr(cpu)``: the task running on CPU ``cpu_id``."""
    t: task_struct | None = k.cpu_curr[cpu_id]
    if t is None:
        raise KernelBug(f"CPU{cpu_id} has no current task: sched_init() has not run")
    return t


def current(k: Kernel) -> task_struct:
    """``current``: the task running on ``k.cpu``."""
    t: task_struct | None = k.cpu_curr[k.cpu.cpu_id]
    if t is None:
        raise KernelBug(f"CPU{k.cpu.cpu_id} has no current task: sched_init() has not run")
    return t


def in_interrupt(k: Kernel) -> bool:
    """``in_interrupt()``: ``k.cpu`` is handling an interrupt (HARDIRQ count non-zero)."""
    return k.hardirq_count[k.cpu.cpu_id] > 0


@contextmanager
def irq_context(k: Kernel) -> Iterator[None]:
    """An interrupt taken from EL1 on ``k.cpu``; the body is the handler.

    ``el1_interrupt`` → ``kernel_entry`` (kpkeys glue: POR_EL1 saved in
    ``pt_regs`` and reset to ``POR_EL1_INIT`` with an ISB if it differed, v5
    07/18) → ``irq_enter()`` (HARDIRQ count) → handler → ``irq_exit()`` →
    ``kernel_exit`` (POR_EL1 restored from ``pt_regs``; ERET synchronises).
    The handler therefore runs at the default kpkeys level and
    :func:`in_interrupt` is true, which disables lazy MMU mode (spec §2.4,
    §3.6).  Interrupts nest.
    """
    cpu_id = k.cpu.cpu_id
    kernel_entry(k)
    k.hardirq_count[cpu_id] += 1
    k.machine.emit(IRQ_ENTRY)
    try:
        yield
    finally:
        k.hardirq_count[cpu_id] -= 1
        kernel_exit(k)


# --- ASIDs (arch/arm64/mm/context.c, simplified) ---------------------------------------------


def asid_alloc(k: Kernel) -> int:
    """A free ASID, invalidating its stale TLB entries if it was used before (see module doc)."""
    s: SchedState = k.sched
    if s.asid_free:
        asid = heapq.heappop(s.asid_free)
        # Entries of the previous owner may still be cached on any CPU.
        k.machine.dsb()
        k.machine.tlbi_asid(asid)
        k.machine.dsb()
        s.asid_used_before += 1
        return asid
    if s.asid_next >= 1 << ASID_BITS:
        raise KernelBug(f"out of ASIDs: {(1 << ASID_BITS) - 1} address spaces are live")
    asid = s.asid_next
    s.asid_next += 1
    return asid


def asid_free(k: Kernel, asid: int) -> None:
    """``destroy_context()``: give ``asid`` back (its TLB entries are invalidated on reuse)."""
    s: SchedState = k.sched
    if not 0 < asid < s.asid_next or asid in s.asid_free:
        raise KernelBug(f"freeing ASID {asid} that is not allocated")
    heapq.heappush(s.asid_free, asid)


# --- context switch -------------------------------------------------------------------------


def _mm_asid(k: Kernel, mm: mm_struct) -> int:
    asid: int = mm.context_id
    if asid == 0:
        asid = asid_alloc(k)
        mm.context_id = asid
    return asid


def switch_mm(k: Kernel, prev: mm_struct | None, nxt: mm_struct) -> None:
    """``switch_mm_irqs_off()`` → ``check_and_switch_context()`` + ``cpu_switch_mm()``.

    Loads ``nxt``'s tables into TTBR0 of ``k.cpu`` with its ASID (allocated on
    first use).  No TLB maintenance: entries are ASID-tagged.
    """
    cpu = k.cpu
    asid = _mm_asid(k, nxt)
    cpu.ttbr0 = nxt.pgd_phys
    cpu.asid = asid
    nxt.cpu_bitmap |= 1 << cpu.cpu_id


def schedule_to(k: Kernel, nxt: task_struct) -> None:
    """Switch ``k.cpu`` from ``current`` to ``nxt`` (``context_switch()``).

    Order as in Linux: the mm part, then ``__switch_to`` with the kpkeys arch
    glue (arm64 ``permission_overlay_switch``: the outgoing task's live
    POR_EL1 is saved in its ``thread.por_el1``, the incoming task's value
    written with an ISB if different, v5 08/18), then ``__switch_to``'s
    ``dsb(ish)``, then ``finish_task_switch``.

    The mm part follows ``context_switch()`` with lazy-TLB reference counting
    (``CONFIG_MMU_LAZY_TLB_REFCOUNT``): a kernel thread (no ``mm``) borrows
    the previous ``active_mm`` (``mmgrab`` when it came from a user task);
    switching to a user task runs ``switch_mm_irqs_off`` (TTBR0 + ASID), and
    when the previous task was a kernel thread (or a task that has exited)
    its borrowed ``active_mm`` is dropped in ``finish_task_switch``
    (``mmdrop``, which frees a dead mm's pgd).

    The lazy-MMU state and the ``TIF_LAZY_MMU*`` flags are per task and
    travel with it; a task switched out inside a lazy-MMU section keeps its
    PGTABLES level in its saved POR_EL1 and gets it back when it runs again.
    """
    cpu_id = k.cpu.cpu_id
    prev = current(k)
    if nxt is prev:
        return
    if nxt.exit_state:
        raise KernelBug(f"schedule_to: {nxt!r} has exited")
    if nxt.on_cpu is not None:
        raise KernelBug(f"schedule_to: {nxt!r} is already running on CPU{nxt.on_cpu}")
    if in_interrupt(k):
        raise KernelBug("schedule_to: scheduling while atomic (in interrupt context)")
    drop = None
    if nxt.mm is None:
        nxt.active_mm = prev.active_mm
        if prev.mm is not None:
            _mmgrab(prev.active_mm)
        else:
            prev.active_mm = None
    else:
        switch_mm(k, prev.active_mm, nxt.mm)
        nxt.active_mm = nxt.mm
        if prev.mm is None:
            drop = prev.active_mm
            prev.active_mm = None
    cpu_switch_to(k, nxt.thread)
    k.machine.dsb()
    prev.on_cpu = None
    nxt.on_cpu = cpu_id
    k.cpu_curr[cpu_id] = nxt
    k.machine.emit(CONTEXT_SWITCH)
    if drop is not None:
        _mmdrop(k, drop)


def _mmgrab(mm: mm_struct | None) -> None:
    if mm is not None:
        mm.mm_count += 1


def _mmdrop(k: Kernel, mm: mm_struct) -> None:
    from kpkeys_sim.kernel.mm.fork import mmdrop

    mmdrop(k, mm)


def finish_lazy_tlb(k: Kernel) -> None:
    """Make the kernel thread running on ``k.cpu`` give back a borrowed user mm.

    What the CPU's next switch to a user task would do for the lazy-TLB
    reference (``finish_task_switch`` → ``mmdrop``), done now: the thread
    switches to ``init_mm`` (arm64 ``switch_mm`` to ``init_mm`` loads the
    reserved TTBR0, modelled as TTBR0 = 0) and drops the borrowed mm, which
    frees it if its last user has exited.  Used after the last process of a
    run exits, before leak checks.
    """
    t = current(k)
    if t.mm is not None:
        raise KernelBug(f"finish_lazy_tlb: {t!r} is a user task")
    old = t.active_mm
    init_mm = getattr(k, "init_mm", None)
    if old is None or old is init_mm:
        return
    t.active_mm = init_mm
    _mmgrab(init_mm)
    k.cpu.ttbr0 = 0
    k.cpu.asid = 0
    _mmdrop(k, old)


# --- task creation ----------------------------------------------------------------------------


def alloc_pid(k: Kernel) -> int:
    """``alloc_pid()``: the next pid (pids are never reused in the model)."""
    s: SchedState = k.sched
    pid = s.next_pid
    s.next_pid += 1
    return pid


def dup_task_struct(
    k: Kernel, parent: task_struct, comm: str | None = None, mm: Any = None
) -> task_struct:
    """``dup_task_struct()`` + ``copy_thread()``: a new task forked by ``parent`` (running here).

    ``parent`` must be ``current``: ``copy_thread`` takes the child's
    ``thread.por_el1`` from the live POR_EL1 (v5 08/18).  The child starts
    with clear thread flags and lazy-MMU state (Linux clears them in
    ``copy_thread``/``dup_task_struct``) and is registered in
    ``k.sched.tasks``; it is not running anywhere.
    """
    if parent is not current(k):
        raise KernelBug(f"dup_task_struct: {parent!r} is not current on CPU{k.cpu.cpu_id}")
    pid = alloc_pid(k)
    name = comm if comm is not None else parent.comm
    thread = copy_thread(k, parent.thread, f"{name}/{pid}")
    child = task_struct(
        pid,
        name,
        thread,
        mm,
        mm if mm is not None else parent.active_mm,
        parent=parent,
        flags=parent.flags & PF_KTHREAD,
    )
    parent.children.append(child)
    k.sched.tasks[pid] = child
    return child


def sched_init(k: Kernel) -> None:
    """``sched_init()``: one idle task (``swapper/N``, pid 0) per CPU, running on it.

    Each idle task is a kernel thread whose ``active_mm`` is ``init_mm`` (when
    boot has created it) and whose hardware thread becomes the CPU's running
    thread (``cpu.current``); its saved POR_EL1 is the live one.  Also
    installs the lazy-MMU hooks (:func:`kpkeys_sim.kernel.mm.lazy_mmu.lazy_mmu_init`).
    Idempotent per kernel: a second call raises :class:`KernelBug`.
    """
    from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_init

    if k.sched is not None:
        raise KernelBug("sched_init() called twice")
    k.sched = SchedState()
    init_mm = getattr(k, "init_mm", None)
    for cpu in k.machine.cpus:
        hw = cpu.current
        if hw is None:
            hw = HwThread(
                f"swapper/{cpu.cpu_id}",
                pkey_reg=cpu.read_pkey_reg(),
                user_pkey_reg=cpu.read_user_pkey_reg(),
            )
            cpu.current = hw
        idle = task_struct(0, f"swapper/{cpu.cpu_id}", hw, None, init_mm, flags=PF_KTHREAD)
        idle.on_cpu = cpu.cpu_id
        _mmgrab(init_mm)
        k.sched.idle.append(idle)
        k.cpu_curr[cpu.cpu_id] = idle
    lazy_mmu_init(k)
