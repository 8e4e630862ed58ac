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


# ---------------------------------------------------------------------------
# kernel/mm allocators
# ---------------------------------------------------------------------------

from kpkeys_sim.kernel.mm import gfp as _gfp  # noqa: E402  (section-local import)

__all__ += [  # each section extends the export list
    "buddy_orders",
    "gfp_masks",
    "kmalloc_sizes",
    "memblock_layouts",
    "slab_object_sizes",
]

#: A buddy allocation order, biased to small orders as real workloads are.
buddy_orders = st.one_of(st.integers(0, 2), st.integers(0, 6))

#: A GFP mask: a common base (GFP_KERNEL/ATOMIC/NOWAIT) plus optional modifier bits.
gfp_masks = st.builds(
    lambda base, extra: base | extra,
    st.sampled_from((_gfp.GFP_KERNEL, _gfp.GFP_ATOMIC, _gfp.GFP_NOWAIT, _gfp.GFP_PGTABLE_USER)),
    st.sampled_from((0, _gfp.__GFP_ZERO, _gfp.__GFP_NOWARN, _gfp.__GFP_ACCOUNT)),
)

#: A kmalloc request size, 1 byte to two 4K pages (every 4K kmalloc cache).
kmalloc_sizes = st.one_of(st.integers(1, 256), st.integers(1, 8192))

#: An object size for kmem_cache_create (1 byte to 5000 bytes).
slab_object_sizes = st.integers(1, 5000)


@st.composite
def memblock_layouts(
    draw: st.DrawFn, page_size: int = 4096, max_pages: int = 4096
) -> dict[str, Any]:
    """Memory and reserved ranges (bytes) for memblock, inside ``[base, base + max_pages pages)``.

    Returns ``{"base", "nr_pages", "memory": [(base, size)], "reserved": [(base, size)]}``.
    Memory ranges are page aligned (they may touch or overlap); reserved ranges
    are arbitrary byte ranges inside the window, so page rounding is exercised.
    """
    base = 0x4000_0000
    span = max_pages * page_size
    n_mem = draw(st.integers(1, 4))
    memory = []
    for _ in range(n_mem):
        start = draw(st.integers(0, max_pages - 1))
        length = draw(st.integers(1, max_pages - start))
        memory.append((base + start * page_size, length * page_size))
    n_res = draw(st.integers(0, 6))
    reserved = []
    for _ in range(n_res):
        start = draw(st.integers(0, span - 1))
        length = draw(st.integers(1, min(span - start, 64 * page_size)))
        reserved.append((base + start, length))
    return {"base": base, "nr_pages": max_pages, "memory": memory, "reserved": reserved}
