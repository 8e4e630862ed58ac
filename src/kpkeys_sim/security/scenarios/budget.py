"""S13 — pkey budget and sharing: a feature's open guard exposes another feature's data.

Spec: threats-and-peers.md §7 S13; kpkeys-series.md §7.3 (pkey exhaustion:
8 POE keys, sharing, hierarchy of trust), §7.6 (the cred series' levels and
the ``kpkeys_rcu`` guard at ``KPKEYS_LVL_UNRESTRICTED``).

A legitimate guard of feature A is open on CPU 0 — the attacker's write
(aimed at its live PTE table, see :mod:`.common`) executes in the same
call path on the same CPU.  The pkey policy decides what A's guard opens:

``S13-separate``  one key per feature: A is the cred feature with its own
                  key (``KPKEYS_PKEY_CRED``); its guard is
                  ``kpkeys_hardened_cred`` (``KPKEYS_LVL_CRED``).
``S13-shared``    A shares the page-table key (8 keys are not enough for one
                  per feature): its guard therefore switches to the level
                  that opens that key (``KPKEYS_LVL_PGTABLES``).
``S13-unrestricted``  hierarchy of trust: A's guard is the RCU guard of the
                  cred series (``kpkeys_rcu``, ``KPKEYS_LVL_UNRESTRICTED``,
                  RW on every kpkeys key), wrapping ``rcu_head`` writes.

The kernel runs with the cred series' levels (``kpkeys_cred_levels``).
The libmpk-style virtualisation what-if of the spec is not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_GUARD,
    KPKEYS_LVL_CRED,
    KPKEYS_LVL_PGTABLES,
    KPKEYS_LVL_UNRESTRICTED,
    KpkeysGuard,
)
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.scenarios.base import Scenario, register_scenario
from kpkeys_sim.security.scenarios.common import (
    forge_live_pte,
    live_table_payoff,
    prepare_live_table,
)

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["SeparateKeys", "SharedKey", "UnrestrictedGuard"]

_cred_guard = KPKEYS_GUARD("kpkeys_hardened_cred", KPKEYS_LVL_CRED)
_shared_guard = KPKEYS_GUARD("feature_sharing_pgtables_key", KPKEYS_LVL_PGTABLES)
_rcu_guard = KPKEYS_GUARD("kpkeys_rcu", KPKEYS_LVL_UNRESTRICTED)


class _Budget(Scenario):
    guard: ClassVar[type[KpkeysGuard]]
    policy: ClassVar[str] = ""

    def kernel_config(self, base: KernelConfig) -> KernelConfig:
        return base.replace(kpkeys_cred_levels=True)

    def prepare(self, env: AttackEnv) -> None:
        prepare_live_table(env)

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        with env.syscall(), type(self).guard(env.k):
            env.trace.count("writes_in_foreign_window")
            forge_live_pte(env, lt)
        return live_table_payoff(env, lt, f"{self.policy}: write inside feature A's guard landed")


@register_scenario
class SeparateKeys(_Budget):
    """S13-separate — feature A has its own key; its guard leaves page tables read-only."""

    id: ClassVar[str] = "S13-separate"
    title: ClassVar[str] = "one key per feature: write to a PTP inside the cred guard"
    spec: ClassVar[str] = "threats-and-peers.md §7 S13"
    guard = _cred_guard
    policy: ClassVar[str] = "separate keys"


@register_scenario
class SharedKey(_Budget):
    """S13-shared — feature A shares the page-table key."""

    id: ClassVar[str] = "S13-shared"
    title: ClassVar[str] = "shared key: write to a PTP inside feature A's guard"
    spec: ClassVar[str] = "threats-and-peers.md §7 S13"
    guard = _shared_guard
    policy: ClassVar[str] = "shared key"


@register_scenario
class UnrestrictedGuard(_Budget):
    """S13-unrestricted — the RCU guard at the UNRESTRICTED level opens every key."""

    id: ClassVar[str] = "S13-unrestricted"
    title: ClassVar[str] = "hierarchy: write to a PTP inside the kpkeys_rcu (UNRESTRICTED) guard"
    spec: ClassVar[str] = "threats-and-peers.md §7 S13; kpkeys-series.md §7.6"
    guard = _rcu_guard
    policy: ClassVar[str] = "unrestricted level"
