"""Attacker primitives, scenarios S1–S14 and the comparator defenses.

The public API (used by ``kpkeys-sim attack``, ``kpkeys-sim run`` and the
report): :func:`run_campaign` → :class:`CampaignResult` (and
:func:`run_default_campaign`, the campaign ``kpkeys-sim run`` includes), the registries
(:func:`scenario_ids`, :func:`defense_names`) and the Wilson interval.
``tests/test_security_campaign.py`` pins ``__all__``.
"""

from __future__ import annotations

from kpkeys_sim.security.campaign import (
    CampaignResult,
    CellResult,
    ExposureRow,
    run_campaign,
    run_default_campaign,
)
from kpkeys_sim.security.defenses import defense_names, make_defense
from kpkeys_sim.security.scenarios import make_scenario, scenario_ids
from kpkeys_sim.security.stats import wilson_interval

__all__ = [
    "CampaignResult",
    "CellResult",
    "ExposureRow",
    "defense_names",
    "make_defense",
    "make_scenario",
    "run_campaign",
    "run_default_campaign",
    "scenario_ids",
    "wilson_interval",
]
