"""S11 — KASAN HW_TAGS one-shot: spend the single report on a benign bug, then run S1.

Spec: threats-and-peers.md §7 S11, §1.6 ("HW_TAGS reports only the first bug,
then disables tag checking" [R30]); the rest of the trial is S1
(:mod:`.dirty_pt`).

Steps: (0) the attacker first triggers a *benign* tag mismatch — a read one
granule past the end of one of its own objects (a small out-of-bounds read
through the object's tagged pointer; the next granule belongs to another
allocation and carries another tag, or is poisoned).  Reports made during
this step are logged as the decoy, not as detection of the attack.  Then
(1–6) S1.

Variants (the ``kasan.fault`` boot parameter of the KASAN/MTE defenses):
``S11-report`` keeps each defense's own setting (``report`` for
``kasan-*``); ``S11-panic`` boots with ``kasan.fault=panic`` — the decoy
report then stops the kernel.  Defenses without KASAN ignore the parameter
(the decoy is an ordinary, harmless read there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.security import groom
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.scenarios.base import register_scenario
from kpkeys_sim.security.scenarios.dirty_pt import DirtyPagetable

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["OneShotPanic", "OneShotReport"]


class _OneShot(DirtyPagetable):
    fault_mode: ClassVar[str | None] = None
    #: The decoy (kernel work and tag draws) runs before S1's prefix.
    prefix_first: ClassVar[bool] = False

    def prepare(self, env: AttackEnv) -> None:
        if self.fault_mode is not None and hasattr(env.defense, "fault"):
            env.defense.fault = self.fault_mode
        super().prepare(env)

    def trial(self, env: AttackEnv) -> TrialResult:
        env.trace.decoy = True
        try:
            with env.syscall():
                a = groom.kmalloc(env, 64)
                groom.kmalloc(env, 64)  # the neighbour whose granule the read touches
                env.kread(a.ptr + a.slot, 8)
        finally:
            env.trace.decoy = False
        return super().trial(env)


@register_scenario
class OneShotReport(_OneShot):
    """S11-report — benign tag mismatch first (kasan.fault as configured), then S1."""

    id: ClassVar[str] = "S11-report"
    title: ClassVar[str] = "spend KASAN's one report on a benign bug, then Dirty Pagetable"
    spec: ClassVar[str] = "threats-and-peers.md §7 S11 (kasan.fault=report)"


@register_scenario
class OneShotPanic(_OneShot):
    """S11-panic — the same with kasan.fault=panic."""

    id: ClassVar[str] = "S11-panic"
    title: ClassVar[str] = "S11 with kasan.fault=panic: the benign bug stops the kernel"
    spec: ClassVar[str] = "threats-and-peers.md §7 S11 (kasan.fault=panic)"
    fault_mode: ClassVar[str | None] = "panic"
