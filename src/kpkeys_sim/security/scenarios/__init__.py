"""Attack scenarios S1–S14 (spec threats-and-peers.md §7), one module per family.

=========  ==================================================================
module     scenarios
=========  ==================================================================
dirty_pt   S1 (Dirty Pagetable, PTE), S2-PMD / S2-PUD (SLUBStick-style reclaim)
double     S3 (Dirty Pagedirectory double allocation)
pagejack   S4-A (page UAF → PTP), S4-B (page UAF → struct file f_mode)
coverage   S5-* (arbitrary write to each page-table class)
pba_meta   S6-A, S6-B (PBA / free-list metadata corruption)
saved_reg  S7 (saved pkey-register corruption)
timing     S8-a, S8-b, S8-c (cross-CPU, IRQ, preemption)
alias      S9 (secondary kernel alias of a PTP)
deputy     S10-* (confused deputy through page-table helper inputs)
oneshot    S11-report, S11-panic (KASAN HW_TAGS one-shot)
cred       S12-A, S12-B (credentials)
budget     S13 (pkey budget and sharing)
window     S14 (exposure window; a measurement, reported separately)
=========  ==================================================================
"""

from __future__ import annotations

from kpkeys_sim.security.scenarios.base import _REGISTRY, Scenario, register_scenario

__all__ = ["Scenario", "make_scenario", "register_scenario", "scenario_ids"]

_MODULES = (
    "dirty_pt",
    "double",
    "pagejack",
    "coverage",
    "pba_meta",
    "saved_reg",
    "timing",
    "alias",
    "deputy",
    "oneshot",
    "cred",
    "budget",
    "window",
)


def _load() -> None:
    import importlib

    for m in _MODULES:
        importlib.import_module(f"kpkeys_sim.security.scenarios.{m}")


def _key(sid: str) -> tuple[int, str]:
    num = sid[1:].split("-", 1)[0]
    return (int(num) if num.isdigit() else 99, sid)


def scenario_ids() -> list[str]:
    """Every registered scenario ID, in spec order (S1, S2-PMD, ..., S14)."""
    _load()
    return sorted(_REGISTRY, key=_key)


def make_scenario(sid: str) -> Scenario:
    """A fresh instance of scenario ``sid`` (KeyError naming it)."""
    _load()
    try:
        cls = _REGISTRY[sid]
    except KeyError:
        raise KeyError(f"unknown scenario {sid!r}") from None
    return cls()
