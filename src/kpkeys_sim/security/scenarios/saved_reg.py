"""S7 — corrupting a saved pkey-register value [H].

Spec: threats-and-peers.md §7 S7; kpkeys-series.md §2.4, §2.5, §3.6 (where
POR_EL1 is saved: ``pt_regs.por_el1`` on exception entry,
``thread.por_el1`` on context switch, ``thread.por_el1_lazy_mmu`` across a
lazy-MMU section).  PKS analogue: IA32_PKRS saved in the thread.

Steps:

1. Preconditions (shared): the attacker has two tasks on CPU 0 — the one
   running now and a sleeping one, T — and a live PTE table (see
   :mod:`.common`).  The attacker has an arbitrary-write primitive.
2. The first corrupting write: T's saved register value (``thread.por_el1``
   in T's ``task_struct``, ordinary kernel memory) gets the page-table
   pkey's field set to RW — the value the PGTABLES level would give.  The
   model's ``task_struct`` is a Python object, so the write is applied to
   the saved value directly (no defense modelled here protects
   ``task_struct``; KASAN would see an access through an untagged, valid
   pointer).
3. T is scheduled: ``__switch_to`` → the arch glue loads T's saved value
   (``permission_overlay_switch``; the open question is whether any restore
   path validates it — the model's glue does not, as the series' code does
   not).
4. T, running at its default context, makes the page-table write (the
   second write of the primitive, into the live PTE table).
5. Payoff: user R/W of the target through the forged entry.
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

__all__ = ["SavedPkeyReg"]


@register_scenario
class SavedPkeyReg(Scenario):
    """S7 — set the page-table pkey to RW in a sleeping thread's saved register."""

    id: ClassVar[str] = "S7"
    title: ClassVar[str] = "corrupt a sleeping thread's saved POR_EL1/PKRS, then write a PTP"
    spec: ClassVar[str] = "threats-and-peers.md §7 S7"

    def prepare(self, env: AttackEnv) -> None:
        lt = prepare_live_table(env)
        env.state["sleeper"] = kapi.spawn_thread(env, lt.attacker)

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        sleeper = env.state["sleeper"]
        with env.syscall():
            kapi.corrupt_saved_pkey_reg(env, sleeper)
        with env.syscall():
            kapi.schedule(env, sleeper)
            forge_live_pte(env, lt)
        return live_table_payoff(env, lt, "saved register gave the thread page-table write access")
