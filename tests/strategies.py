"""All Hypothesis strategies of the project, one section per layer/module.

Add new strategies under the section of the code they exercise (create the
section if it is missing); keep each strategy documented in one line.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from kpkeys_sim.machine.arch.base import ACCESS_KINDS, Perm

__all__ = [
    "access_kinds",
    "arm64_states",
    "perms",
    "por_nibbles",
    "por_values",
    "reserved_nibbles",
    "x86_keys",
    "x86_pkr_values",
    "x86_states",
]

# ---------------------------------------------------------------------------
# machine/arch: common
# ---------------------------------------------------------------------------

#: One of the access kinds ``R``, ``W``, ``X``, ``RW``.
access_kinds = st.sampled_from(ACCESS_KINDS)

#: Any set of rights.
perms = st.builds(Perm, st.booleans(), st.booleans(), st.booleans())

_bits = st.integers(0, 1)


def _pin(draw: st.DrawFn, state: dict[str, Any], fixed: dict[str, Any]) -> None:
    """Override ``state`` with ``fixed``; a value that is a strategy is drawn from."""
    for name, value in fixed.items():
        state[name] = draw(value) if isinstance(value, st.SearchStrategy) else value


# ---------------------------------------------------------------------------
# machine/arch: arm64 FEAT_S1POE
# ---------------------------------------------------------------------------

#: One POR_ELx field value, reserved encodings 0x8–0xF included.
por_nibbles = st.integers(0, 0xF)

#: A reserved POR_ELx field value (bit 3 set).
reserved_nibbles = st.integers(0x8, 0xF)

#: A full 64-bit POR_ELx value.
por_values = st.integers(0, (1 << 64) - 1)


@st.composite
def arm64_states(draw: st.DrawFn, **fixed: Any) -> dict[str, Any]:
    """Keyword arguments for ``arm64_poe.check_access``; ``fixed`` pins (or draws) fields.

    Instruction fetches are never ``unprivileged`` (the check rejects that);
    the leaf level is 0..3.
    """
    state: dict[str, Any] = {
        "el": draw(_bits),
        "access": draw(access_kinds),
        "por_el1": draw(por_values),
        "por_el0": draw(por_values),
        "poindex": draw(st.integers(0, 7)),
        "ap": draw(st.integers(0, 3)),
        "pxn": draw(_bits),
        "uxn": draw(_bits),
        "poe": draw(_bits),
        "e0poe": draw(_bits),
        "pie": draw(_bits),
        "pir": draw(por_nibbles),
        "pire0": draw(por_nibbles),
        "wxn": draw(_bits),
        "pan": draw(_bits),
        "level": draw(st.integers(0, 3)),
    }
    state["unprivileged"] = False
    _pin(draw, state, fixed)
    if "unprivileged" not in fixed:
        state["unprivileged"] = state["access"] != "X" and draw(st.booleans())
    return state


# ---------------------------------------------------------------------------
# machine/arch: x86 PKU/PKS
# ---------------------------------------------------------------------------

#: A protection key 0..15.
x86_keys = st.integers(0, 15)

#: A 32-bit PKRU / IA32_PKRS value.
x86_pkr_values = st.integers(0, (1 << 32) - 1)


@st.composite
def x86_states(draw: st.DrawFn, **fixed: Any) -> dict[str, Any]:
    """Keyword arguments for ``x86_pk.check_access``; ``fixed`` pins (or draws) fields."""
    state: dict[str, Any] = {
        "mode": draw(st.sampled_from(("user", "supervisor"))),
        "access": draw(access_kinds),
        "us": draw(st.sampled_from(("U", "S"))),
        "rw": draw(_bits),
        "key": draw(x86_keys),
        "pkru": draw(x86_pkr_values),
        "pkrs": draw(x86_pkr_values),
        "pke": draw(_bits),
        "pks": draw(_bits),
        "wp": draw(_bits),
    }
    _pin(draw, state, fixed)
    return state
