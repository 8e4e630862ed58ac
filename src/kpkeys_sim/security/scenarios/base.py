"""The scenario interface and registry.

A scenario (spec threats-and-peers.md §7) is a sequence of steps on a booted
model kernel:

* :meth:`Scenario.kernel_config` — anything the scenario needs from the
  kernel beyond the defense's choices (e.g. the cred series' levels);
* :meth:`Scenario.prepare` — the deterministic preconditions shared by every
  trial (the attacker process, its mappings).  It must not draw random
  numbers (the environment refuses), because it runs once and is
  snapshotted;
* :meth:`Scenario.trial` — one seeded attempt: the grooming, the corrupting
  write, the payoff check.  It returns ``succeeded`` or ``failed`` (groom
  missed); a permission fault (:class:`~kpkeys_sim.security.outcome.Prevented`),
  a stopping detector (:class:`~kpkeys_sim.security.outcome.Detected`) or a
  kernel self-check (:class:`~kpkeys_sim.kernel.errors.KernelBug`) ends it
  early, and report-mode detections recorded on the trace turn it into
  ``detected`` (see :mod:`kpkeys_sim.security.campaign`).

Variants the spec names are separate scenario IDs (``S4-A``, ``S4-B``, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.security.outcome import FAILED, SUCCEEDED, TrialResult

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["Scenario", "failed", "register_scenario", "succeeded"]


class Scenario(ABC):
    """Base class of scenarios; subclasses set the class attributes and the two steps."""

    id: ClassVar[str] = ""
    title: ClassVar[str] = ""
    spec: ClassVar[str] = ""
    #: Scenarios that are measurements, not exploits (S14), produce no outcome cells.
    measurement: ClassVar[bool] = False
    #: True if :meth:`trial` runs :meth:`run_prefix_if_needed` before anything else
    #: (no kernel work, attacker step or random draw precedes it): then a prefix whose
    #: only random draws are the defense's may be recorded once and replayed per trial
    #: (:mod:`~kpkeys_sim.security.prefix_replay`).
    prefix_first: ClassVar[bool] = True

    def kernel_config(self, base: KernelConfig) -> KernelConfig:
        """The configuration the scenario needs on top of the defense's."""
        return base

    def prepare(self, env: AttackEnv) -> None:  # noqa: B027 - optional hook, no-op by default
        """Deterministic preconditions shared by every trial (no randomness)."""

    def prefix(self, env: AttackEnv) -> None:  # noqa: B027 - optional hook, no-op by default
        """The first steps of every trial, if they draw no random number (default: none).

        The campaign runs it once after :meth:`prepare` and snapshots the
        result; if it tries to draw (the defense's hooks may, e.g. KASAN tags),
        the campaign boots afresh without it and the trial runs these steps
        itself (see :meth:`run_prefix_if_needed`).  Either way each trial
        starts from the same state, so the result is the same.
        """

    def run_prefix_if_needed(self, env: AttackEnv) -> None:
        """Run :meth:`prefix` in the trial unless the campaign already ran it.

        A prefix the campaign recorded for replay (its random draws are the
        defense's, :mod:`~kpkeys_sim.security.prefix_replay`) is replayed here,
        at the point of the trial where it would run.
        """
        if not env.state.get("prefix_done"):
            self.prefix(env)
        elif env.prefix_replay is not None:
            env.prefix_replay()

    @abstractmethod
    def trial(self, env: AttackEnv) -> TrialResult:
        """One seeded attempt; returns succeeded/failed or raises an outcome signal."""


def succeeded(reason: str, **metrics: int) -> TrialResult:
    """A ``succeeded`` result with its one-line reason."""
    return TrialResult(SUCCEEDED, reason, payoff=True, metrics=tuple(sorted(metrics.items())))


def failed(reason: str, **metrics: int) -> TrialResult:
    """A ``failed`` (groom missed) result with its one-line reason."""
    return TrialResult(FAILED, reason, metrics=tuple(sorted(metrics.items())))


_REGISTRY: dict[str, type[Scenario]] = {}


def register_scenario(cls: type[Scenario]) -> type[Scenario]:
    """Register a scenario class under ``cls.id`` (usable as a decorator)."""
    if not cls.id:
        raise ValueError(f"{cls.__name__} has no id")
    if cls.id in _REGISTRY and _REGISTRY[cls.id] is not cls:
        raise ValueError(f"scenario {cls.id!r} registered twice")
    _REGISTRY[cls.id] = cls
    return cls
