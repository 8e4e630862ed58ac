"""S8 — cross-CPU and preemption timing: a write racing a legitimate guarded section.

Spec: threats-and-peers.md §7 S8; kpkeys-series.md §2.4 (exception entry
resets the register), §2.5 (per-thread save), §3.6 (lazy-MMU batching);
Kees Cook's per-CPU argument [R68].  A regression test of the register
model: the attacker's write is aimed at its live PTE table (see
:mod:`.common`) at the moment another context has page tables writable.

``S8-a``  CPU 0 is inside ``set_pte()``'s guard (the kernel's own guard,
          entered on CPU 0); the attacker's write runs on CPU 1.
``S8-b``  CPU 0 is inside the guard and takes an interrupt; the attacker's
          write runs in the interrupt handler on CPU 0 (e.g. a corrupted
          timer callback).
``S8-c``  A task on CPU 0 is inside a lazy-MMU section (batching: the
          register was switched once for the section) and is preempted; the
          attacker's task is scheduled on CPU 0 and writes.

Interleavings are exact points of the sequential model: the write happens
while the other context is inside its section, which the model holds open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.security import kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.scenarios.base import Scenario, register_scenario
from kpkeys_sim.security.scenarios.common import (
    forge_live_pte,
    live_table_payoff,
    prepare_live_table,
)

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["CrossCpu", "IrqInGuard", "PreemptLazyMmu"]


class _Timing(Scenario):
    def prepare(self, env: AttackEnv) -> None:
        lt = prepare_live_table(env)
        env.state["victim_task"] = kapi.spawn_thread(env, lt.attacker)


@register_scenario
class CrossCpu(_Timing):
    """S8-a — attacker write on CPU 1 while CPU 0 is inside set_pte()'s guard."""

    id: ClassVar[str] = "S8-a"
    title: ClassVar[str] = "write on CPU 1 while CPU 0 is inside a page-table guard"
    spec: ClassVar[str] = "threats-and-peers.md §7 S8 (a)"

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        k = env.k
        with env.syscall(), k.on_cpu(0), k.pgtables_guard(k), k.on_cpu(1):
            forge_live_pte(env, lt)
        return live_table_payoff(env, lt, "write on CPU 1 landed during CPU 0's guard")


@register_scenario
class IrqInGuard(_Timing):
    """S8-b — attacker write in an interrupt taken inside the guard on the same CPU."""

    id: ClassVar[str] = "S8-b"
    title: ClassVar[str] = "write from an IRQ handler taken inside a page-table guard"
    spec: ClassVar[str] = "threats-and-peers.md §7 S8 (b)"

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        k = env.k
        with env.syscall(), k.on_cpu(0), k.pgtables_guard(k), kapi.irq(env):
            forge_live_pte(env, lt)
        return live_table_payoff(env, lt, "write from the IRQ handler landed")


@register_scenario
class PreemptLazyMmu(_Timing):
    """S8-c — preemption inside a lazy-MMU section; the attacker's task writes."""

    id: ClassVar[str] = "S8-c"
    title: ClassVar[str] = "preempt a lazy-MMU section; the next task on the CPU writes"
    spec: ClassVar[str] = "threats-and-peers.md §7 S8 (c)"

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        victim = env.state["victim_task"]
        with env.syscall():
            kapi.schedule(env, victim)
            kapi.lazy_mmu_enter(env)
            kapi.schedule(env, lt.attacker.task)
            forge_live_pte(env, lt)
            kapi.schedule(env, victim)
            kapi.lazy_mmu_leave(env)
            kapi.schedule(env, lt.attacker.task)
        return live_table_payoff(env, lt, "write by the next task landed during the section")
