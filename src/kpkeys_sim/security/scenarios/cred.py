"""S12 — credentials versus kpkeys_hardened_cred (DirtyCred-style contrast case).

Spec: threats-and-peers.md §1.2, §4.5, §7 S12; kpkeys-series.md §7.6;
the cred model is :mod:`kpkeys_sim.security.cred_model`.

Preconditions (shared): the attacker task runs with uid 1000 credentials
installed by ``commit_creds()``; ``init_cred`` (uid 0) exists.  Under
``kpkeys-cred`` both live creds sit in the ``SLAB_SET_PKEY`` cache
(``KPKEYS_PKEY_CRED``); elsewhere in the plain ``cred_jar``.  The attacker
has an arbitrary-write primitive and knows the addresses involved (a leak,
or ``&init_cred`` as a kernel symbol).

``S12-A`` (overwrite a live cred): write 0 over the ``uid..fsgid`` fields of
the attacker's live cred.  ``S12-B`` (pointer swap): overwrite
``task->cred`` with ``&init_cred``.  Payoff for both: the kernel's own
``current_cred()->euid`` read returns 0 (credentials raised).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.security.cred_model import (
    OFF_UID,
    TASK_CRED,
    current_euid,
    install_cred_model,
)
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.pointers import canonical
from kpkeys_sim.security.primitives import ArbitraryWrite
from kpkeys_sim.security.scenarios.base import Scenario, failed, register_scenario, succeeded

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["CredFields", "CredPointer"]


class _Cred(Scenario):
    def kernel_config(self, base: KernelConfig) -> KernelConfig:
        return base

    def prepare(self, env: AttackEnv) -> None:
        from kpkeys_sim.kernel.arch import arch_kpkeys_enabled

        hardened = bool(
            env.k.config.kpkeys_cred_levels
            and env.k.config.kpkeys_hardened_pgtables
            and arch_kpkeys_enabled(env.k)
        )
        env.state["creds"] = install_cred_model(env, hardened)

    def _payoff(self, env: AttackEnv, how: str) -> TrialResult:
        euid = current_euid(env, env.state["creds"])
        if euid == 0:
            return succeeded(f"{how}: current_cred()->euid is 0 (credentials raised)")
        return failed(f"{how}: euid still {euid}")


@register_scenario
class CredFields(_Cred):
    """S12-A — overwrite the uid fields of the attacker's live cred."""

    id: ClassVar[str] = "S12-A"
    title: ClassVar[str] = "overwrite the fields of a live struct cred"
    spec: ClassVar[str] = "threats-and-peers.md §7 S12 variant A"

    def trial(self, env: AttackEnv) -> TrialResult:
        world = env.state["creds"]
        with env.syscall():
            ArbitraryWrite().write(env, world.user_cred.ptr + OFF_UID, bytes(32))
        return self._payoff(env, "live cred uid fields zeroed")


@register_scenario
class CredPointer(_Cred):
    """S12-B — swap ``task->cred`` for ``&init_cred`` (the pointer is not protected)."""

    id: ClassVar[str] = "S12-B"
    title: ClassVar[str] = "swap task->cred for a privileged cred (DirtyCred-like)"
    spec: ClassVar[str] = "threats-and-peers.md §7 S12 variant B; [R29][R49]"

    def trial(self, env: AttackEnv) -> TrialResult:
        world = env.state["creds"]
        with env.syscall():
            ArbitraryWrite().write_u64(
                env, world.task.ptr + TASK_CRED, canonical(world.init_cred.ptr)
            )
        return self._payoff(env, "task->cred now points at init_cred")
