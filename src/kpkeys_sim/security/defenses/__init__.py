"""Defense models, registered by name (``kpkeys-sim attack --defense NAME``).

One module per family: :mod:`.kpkeys` (``none``, kpkeys v6 and v7,
``kpkeys-cred``, ``none-x86``, ``pks``, ``pks-rfc2``), :mod:`.hyp` (stage-2
``hyp-s2`` and ``hyp-s2-validate``), :mod:`.kasan` (``kasan-generic``,
``kasan-sw-tags``, ``kasan-hw-tags``) and :mod:`.mte` (``mte-sync``,
``mte-async``).
"""

from __future__ import annotations

from kpkeys_sim.security.defenses import hyp, kasan, kpkeys, mte  # noqa: F401 - registration
from kpkeys_sim.security.defenses.base import _REGISTRY, Defense, register_defense

__all__ = ["DEFENSE_ORDER", "Defense", "defense_names", "make_defense", "register_defense"]

#: Column order of the attack matrix.
DEFENSE_ORDER: tuple[str, ...] = (
    "none",
    "kpkeys-v6",
    "kpkeys-v7",
    "kpkeys-cred",
    "none-x86",
    "pks",
    "pks-rfc2",
    "hyp-s2",
    "hyp-s2-validate",
    "kasan-generic",
    "kasan-sw-tags",
    "kasan-hw-tags",
    "mte-sync",
    "mte-async",
)


def defense_names() -> list[str]:
    """Every registered defense, in matrix order."""
    known = [n for n in DEFENSE_ORDER if n in _REGISTRY]
    return known + sorted(n for n in _REGISTRY if n not in DEFENSE_ORDER)


def make_defense(name: str) -> Defense:
    """A fresh instance of the defense registered as ``name`` (KeyError naming it)."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown defense {name!r}") from None
    return cls()
