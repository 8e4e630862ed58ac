"""Lazy MMU mode: the generic nesting-aware API and the arm64 deferred barriers.

Generic part (``include/linux/pgtable.h``, "Nesting support for lazy MMU
mode", the base of kpkeys v6 28/30; spec kpkeys-series.md §3.6):

* :func:`lazy_mmu_mode_enable` / :func:`lazy_mmu_mode_disable` nest through
  the per-task ``struct lazy_mmu_state`` (``enable_count``); the arch hooks
  run only for the *outermost* section: ``arch_enter_lazy_mmu_mode()`` when
  the count goes 0 → 1, ``arch_leave_lazy_mmu_mode()`` when it goes back to 0.
  Leaving a nested section calls ``arch_flush_lazy_mmu_mode()`` instead.
* :func:`lazy_mmu_mode_pause` / :func:`lazy_mmu_mode_resume` leave and
  re-enter the arch mode around code that must not batch.
* All of them do nothing in interrupt context, and
  :func:`is_lazy_mmu_mode_active` is false there (spec §3.6 [INF]).

arm64 part (``arch/arm64/include/asm/pgtable.h``, v6.16 "arm64/mm: Batch
barriers when updating kernel mappings"): in lazy MMU mode the page-table
helpers do not issue the ``dsb(ishst); isb()`` that makes a new kernel
mapping (or a cleared table entry) visible; ``queue_pte_barriers()`` sets
``TIF_LAZY_MMU_PENDING`` instead, and ``arch_flush_lazy_mmu_mode()`` /
``arch_leave_lazy_mmu_mode()`` emit the barriers once
(``emit_pte_barriers()``).

Version differences (``KernelConfig.series``):

* ``"v5"`` (kpkeys RFC v5 on v6.17-rc1): no generic nesting.  Every
  ``lazy_mmu_mode_enable()`` calls ``arch_enter_lazy_mmu_mode()`` (sets
  ``TIF_LAZY_MMU``) and every ``lazy_mmu_mode_disable()`` calls
  ``arch_leave_lazy_mmu_mode()`` (clears it).  A nested section therefore
  ends the outer one early and overwrites the single
  ``thread.por_el1_lazy_mmu`` slot — the known flaw noted in v5 18/18, which
  the model reproduces (the outer leave then restores the PGTABLES level).
* ``"v6"``/``"v7"``: the generic counting described above;
  ``TIF_LAZY_MMU`` is not used (arm64 replaced it with
  ``is_lazy_mmu_mode_active()``).

The kpkeys batching (v5 18/18, v6 28/30) plugs into the arch hooks through
two hook lists on the kernel, called in this order (spec §3.6 steps 1–4):

* ``k.lazy_mmu_enter_hooks``: ``hook(k, task)``, called by
  ``arch_enter_lazy_mmu_mode()`` after the mode is active (v5: after
  ``TIF_LAZY_MMU`` is set), in registration order.  The kpkeys hook does
  ``task.por_el1_lazy_mmu = kpkeys_set_level(KPKEYS_LVL_PGTABLES)``.
* ``k.lazy_mmu_leave_hooks``: ``hook(k, task, barriers_pending)``, called by
  ``arch_leave_lazy_mmu_mode()`` in reverse registration order *before* the
  pending barriers are emitted; ``barriers_pending`` is
  ``test_thread_flag(TIF_LAZY_MMU_PENDING)``.  The kpkeys hook restores the
  saved POR_EL1 without an ISB when barriers are pending (the ISB of
  ``emit_pte_barriers()`` follows and synchronises it) and with one
  otherwise.  Then ``arch_flush_lazy_mmu_mode()`` emits the DSB+ISB if
  pending, then (v5) ``TIF_LAZY_MMU`` is cleared.

Each outermost section emits one ``lazy_mmu_section`` event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.sched import (
    TIF_LAZY_MMU,
    TIF_LAZY_MMU_PENDING,
    current,
    in_interrupt,
    task_struct,
)
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "LAZY_MMU_SECTION",
    "LazyMmuEnterHook",
    "LazyMmuLeaveHook",
    "arch_enter_lazy_mmu_mode",
    "arch_flush_lazy_mmu_mode",
    "arch_leave_lazy_mmu_mode",
    "is_lazy_mmu_mode_active",
    "lazy_mmu_init",
    "lazy_mmu_mode",
    "lazy_mmu_mode_disable",
    "lazy_mmu_mode_enable",
    "lazy_mmu_mode_pause",
    "lazy_mmu_mode_resume",
    "queue_lazy_mmu_barriers",
]

LAZY_MMU_SECTION = declare_event(
    "lazy_mmu_section", "outermost lazy MMU sections (arch_enter_lazy_mmu_mode calls)", "kernel"
)

#: ``hook(k, task)``: run by ``arch_enter_lazy_mmu_mode()``.
LazyMmuEnterHook = Callable[[Kernel, task_struct], None]
#: ``hook(k, task, barriers_pending)``: run by ``arch_leave_lazy_mmu_mode()``.
LazyMmuLeaveHook = Callable[[Kernel, task_struct, bool], None]

_U8_MAX = 255


def _nesting(k: Kernel) -> bool:
    return k.config.series != "v5"


def is_lazy_mmu_mode_active(k: Kernel) -> bool:
    """``is_lazy_mmu_mode_active()``: page-table updates on ``k.cpu`` may be batched.

    False in interrupt context.  v6/v7: the current task has an enabled,
    unpaused section.  v5: the current task has ``TIF_LAZY_MMU`` set.
    """
    if k.hardirq_count[k.cpu.cpu_id]:
        return False
    t: task_struct | None = k.cpu_curr[k.cpu.cpu_id]
    if t is None:
        return False
    if k.config.series == "v5":
        return bool(t.thread_flags >> TIF_LAZY_MMU & 1)
    st = t.lazy_mmu
    return st.enable_count > 0 and st.pause_count == 0


def queue_lazy_mmu_barriers(k: Kernel) -> bool:
    """The lazy-mode half of arm64 ``queue_pte_barriers()``.

    If lazy MMU mode is active, set ``TIF_LAZY_MMU_PENDING`` on ``current``
    and return True (the caller must not emit the barriers); otherwise return
    False (the caller emits them now).
    """
    if not is_lazy_mmu_mode_active(k):
        return False
    t = current(k)
    t.thread_flags |= 1 << TIF_LAZY_MMU_PENDING
    return True


def arch_enter_lazy_mmu_mode(k: Kernel) -> None:
    """arm64 ``arch_enter_lazy_mmu_mode()`` with the kpkeys batching hooks.

    Nothing in interrupt context.  v5 sets ``TIF_LAZY_MMU``.  Then every
    ``k.lazy_mmu_enter_hooks`` entry runs (kpkeys: switch to PGTABLES and save
    the previous POR_EL1 in ``current->thread.por_el1_lazy_mmu``).
    """
    if not in_interrupt(k):
        _arch_enter(k, current(k))


def _arch_enter(k: Kernel, t: task_struct) -> None:
    """:func:`arch_enter_lazy_mmu_mode` for ``t`` = ``current``, not in interrupt context."""
    if k.config.series == "v5":
        t.thread_flags |= 1 << TIF_LAZY_MMU
    k.machine.emit(LAZY_MMU_SECTION)
    for hook in k.lazy_mmu_enter_hooks:
        hook(k, t)


def arch_flush_lazy_mmu_mode(k: Kernel) -> None:
    """arm64 ``arch_flush_lazy_mmu_mode()``: emit the pending barriers (DSB+ISB) once."""
    if not in_interrupt(k):
        _arch_flush(k, current(k))


def _arch_flush(k: Kernel, t: task_struct) -> None:
    """:func:`arch_flush_lazy_mmu_mode` for ``t`` = ``current``, not in interrupt context."""
    if t.thread_flags >> TIF_LAZY_MMU_PENDING & 1:
        t.thread_flags &= ~(1 << TIF_LAZY_MMU_PENDING)
        _emit_pte_barriers(k)


def arch_leave_lazy_mmu_mode(k: Kernel) -> None:
    """arm64 ``arch_leave_lazy_mmu_mode()`` with the kpkeys batching (spec §3.6 steps 1–4).

    1. nothing in interrupt context; 2. the leave hooks, told whether barriers
    are pending (kpkeys: restore POR_EL1, without ISB if they are); 3.
    ``arch_flush_lazy_mmu_mode()``; 4. (v5) clear ``TIF_LAZY_MMU``.
    """
    if not in_interrupt(k):
        _arch_leave(k, current(k))


def _arch_leave(k: Kernel, t: task_struct) -> None:
    """:func:`arch_leave_lazy_mmu_mode` for ``t`` = ``current``, not in interrupt context."""
    pending = bool(t.thread_flags >> TIF_LAZY_MMU_PENDING & 1)
    for hook in reversed(k.lazy_mmu_leave_hooks):
        hook(k, t, pending)
    _arch_flush(k, t)
    if k.config.series == "v5":
        t.thread_flags &= ~(1 << TIF_LAZY_MMU)


def lazy_mmu_mode_enable(k: Kernel) -> None:
    """``lazy_mmu_mode_enable()``: open a (possibly nested) lazy MMU section.

    v6/v7: ``arch_enter_lazy_mmu_mode()`` only when this is the outermost
    section.  v5: always (no nesting support).  No-op in interrupt context
    and while paused.
    """
    cpu_id = k.cpu.cpu_id
    if k.hardirq_count[cpu_id]:
        return
    if k.config.series == "v5":
        arch_enter_lazy_mmu_mode(k)
        return
    t: task_struct | None = k.cpu_curr[cpu_id]
    if t is None:
        raise KernelBug(f"CPU{cpu_id} has no current task: sched_init() has not run")
    st = t.lazy_mmu
    if st.pause_count > 0:
        return
    if st.enable_count == _U8_MAX:
        raise KernelBug("lazy_mmu_mode_enable: enable_count overflow (VM_WARN_ON)")
    st.enable_count += 1
    if st.enable_count == 1:
        _arch_enter(k, t)


def lazy_mmu_mode_disable(k: Kernel) -> None:
    """``lazy_mmu_mode_disable()``: close the innermost lazy MMU section.

    v6/v7: the outermost close calls ``arch_leave_lazy_mmu_mode()``; closing a
    nested section calls ``arch_flush_lazy_mmu_mode()`` (pending barriers are
    emitted, the kpkeys level stays).  v5: always ``arch_leave``.
    """
    cpu_id = k.cpu.cpu_id
    if k.hardirq_count[cpu_id]:
        return
    if k.config.series == "v5":
        arch_leave_lazy_mmu_mode(k)
        return
    t: task_struct | None = k.cpu_curr[cpu_id]
    if t is None:
        raise KernelBug(f"CPU{cpu_id} has no current task: sched_init() has not run")
    st = t.lazy_mmu
    if st.pause_count > 0:
        return
    if st.enable_count == 0:
        raise KernelBug("lazy_mmu_mode_disable without lazy_mmu_mode_enable (VM_WARN_ON)")
    st.enable_count -= 1
    if st.enable_count == 0:
        _arch_leave(k, t)
    else:
        _arch_flush(k, t)


def lazy_mmu_mode_pause(k: Kernel) -> None:
    """``lazy_mmu_mode_pause()``: leave the arch mode until :func:`lazy_mmu_mode_resume`.

    v5 has no pause; it is modelled as a no-op there.
    """
    if in_interrupt(k) or not _nesting(k):
        return
    st = current(k).lazy_mmu
    if st.pause_count == _U8_MAX:
        raise KernelBug("lazy_mmu_mode_pause: pause_count overflow (VM_WARN_ON)")
    st.pause_count += 1
    if st.pause_count == 1 and st.enable_count > 0:
        arch_leave_lazy_mmu_mode(k)


def lazy_mmu_mode_resume(k: Kernel) -> None:
    """``lazy_mmu_mode_resume()``: undo one :func:`lazy_mmu_mode_pause`."""
    if in_interrupt(k) or not _nesting(k):
        return
    st = current(k).lazy_mmu
    if st.pause_count == 0:
        raise KernelBug("lazy_mmu_mode_resume without lazy_mmu_mode_pause (VM_WARN_ON)")
    st.pause_count -= 1
    if st.pause_count == 0 and st.enable_count > 0:
        arch_enter_lazy_mmu_mode(k)


@contextmanager
def lazy_mmu_mode(k: Kernel) -> Iterator[None]:
    """``with lazy_mmu_mode(k):`` = enable … disable (the disable runs on exceptions too)."""
    lazy_mmu_mode_enable(k)
    try:
        yield
    finally:
        lazy_mmu_mode_disable(k)


def _emit_pte_barriers(k: Kernel) -> None:
    from kpkeys_sim.kernel.mm.pgtable import emit_pte_barriers

    emit_pte_barriers(k)


def lazy_mmu_init(k: Kernel) -> None:
    """Install :func:`is_lazy_mmu_mode_active` as ``k.lazy_mmu_active`` (read by PTE helpers)."""
    k.lazy_mmu_active = is_lazy_mmu_mode_active
