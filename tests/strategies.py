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


# ---------------------------------------------------------------------------
# --- linear map ---
# kernel/mm/linear_map (set_memory_*, set_direct_map_*, splitting)
# ---------------------------------------------------------------------------

__all__ += ["linear_map_ops", "linear_map_ranges", "linear_pkeys"]  # this section's exports

#: A pkey for set_memory_pkey (every POIndex value; POR_EL1_INIT grants 0 RWX, 1 R, 2-7 none).
linear_pkeys = st.integers(0, 7)

#: Alignment units (in 4K pages) the linear map cares about: page, contPTE, PMD, contPMD, PUD.
_LINEAR_UNITS = (1, 16, 512, 8192, 262144)


@st.composite
def linear_map_ranges(
    draw: st.DrawFn, first_page: int, nr_pages: int, max_len: int = 1024
) -> tuple[int, int]:
    """A page range ``(page, npages)`` inside ``[first_page, first_page + nr_pages)``.

    Biased to start on or next to a contPTE/PMD/contPMD/PUD boundary and to
    lengths that end on or next to one, so every split kind is reached.
    """
    unit = draw(st.sampled_from(_LINEAR_UNITS))
    lo = -(-first_page // unit) * unit
    hi = first_page + nr_pages - 1
    if lo > hi:
        base = draw(st.integers(first_page, hi))
    else:
        base = lo + unit * draw(st.integers(0, max(0, (hi - lo) // unit)))
    base += draw(st.sampled_from((0, 0, 1, -1, unit // 2)))
    base = min(max(base, first_page), hi)
    length = draw(
        st.one_of(
            st.sampled_from((1, 2, 15, 16, 17, 511, 512, 513)),
            st.integers(1, max_len),
        )
    )
    length = max(1, min(length, first_page + nr_pages - base))
    return base, length


@st.composite
def linear_map_ops(draw: st.DrawFn, first_page: int, nr_pages: int) -> tuple[str, int, int, int]:
    """One linear-map request ``(op, page, npages, arg)`` in the page window.

    ``op`` is ``pkey`` (arg = pkey), ``ro``, ``rw``, ``invalid`` (one page),
    ``default`` (one page), ``valid`` (arg 1 = make valid, 0 = invalid, one page)
    or ``set_memory_ro`` (refused for linear-map addresses).
    """
    op = draw(
        st.sampled_from(
            ("pkey", "pkey", "ro", "rw", "invalid", "default", "valid", "set_memory_ro")
        )
    )
    page, n = draw(linear_map_ranges(first_page, nr_pages))
    arg = 0
    if op == "pkey":
        arg = draw(linear_pkeys)
    elif op == "valid":
        arg = draw(st.integers(0, 1))
        if not arg:
            n = 1
    elif op in ("invalid", "default"):
        n = 1
    return op, page, n, arg


__all__ += ["pte_descriptors"]

_PTE_ATTR_BITS = (1, 2, 4, 1 << 6, 1 << 7, 3 << 8, 1 << 10, 1 << 11, 1 << 51, 1 << 52, 1 << 53)
_PTE_ATTR_BITS += (1 << 54, 1 << 55, 1 << 56)

#: A 64-bit descriptor: a random word, or a page/block built from the Linux attribute bits.
pte_descriptors = st.one_of(
    st.integers(0, (1 << 64) - 1),
    st.builds(
        lambda oa, attrs, pkey: (oa << 12) | attrs | (pkey << 60),
        st.integers(0, (1 << 36) - 1),
        st.sets(st.sampled_from(_PTE_ATTR_BITS)).map(sum),
        st.integers(0, 7),
    ),
)


# ---------------------------------------------------------------------------
# --- pkeys block allocator ---
# kernel/kpkeys/pba (kpkeys v6 14-17: PBA alloc/free/shrink under memory pressure)
# ---------------------------------------------------------------------------

__all__ += [  # this section's exports
    "pba_batch_sizes",
    "pba_gfps",
    "pba_pressure_orders",
    "pba_shrink_requests",
]

#: A PTP allocation mask the PBA sees: kernel/user page tables, plain GFP_KERNEL, or a split's.
pba_gfps = st.sampled_from(
    (
        _gfp.GFP_PGTABLE_KERNEL,
        _gfp.GFP_PGTABLE_USER,
        _gfp.GFP_KERNEL,
        _gfp.GFP_PGTABLE_KERNEL & ~_gfp.__GFP_ZERO | _gfp.__GFP_PGTABLE_SPLIT,
    )
)

#: A shrinker request: a few pages, around the 4K block minimum (64), or a whole 4K block.
pba_shrink_requests = st.one_of(
    st.integers(1, 32), st.sampled_from((63, 64, 65, 128, 511, 512, 513)), st.integers(1, 1024)
)

#: A number of PTP allocations in a row: a few, or enough to drain a 4K block and refill.
pba_batch_sizes = st.one_of(st.integers(1, 16), st.integers(100, 700))

#: The order memory pressure allocates at until the buddy allocator fails (reclaim runs).
pba_pressure_orders = st.sampled_from((9, 9, 7, 4))


# ---------------------------------------------------------------------------
# --- user mm ---
# kernel/mm/{memory,mmap,fork} (mmap, faults, COW, fork, munmap, exit)
# ---------------------------------------------------------------------------

__all__ += [  # this section's exports
    "user_mm_fractions",
    "user_mm_kinds",
    "user_mm_lengths",
    "user_mm_payloads",
]

#: A mapping length in pages: small, or around a PTE table (512 pages) to cross PMD boundaries.
user_mm_lengths = st.one_of(st.integers(1, 8), st.integers(500, 1100))

#: The kind of mapping: private/shared anonymous, MADV_HUGEPAGE anonymous, private/shared file.
user_mm_kinds = st.sampled_from(
    ("anon_private", "anon_private", "anon_shared", "anon_huge", "file_private", "file_shared")
)

#: A position inside a mapping as a fraction of its length (0 = first page, 1 = last).
user_mm_fractions = st.floats(0.0, 1.0, allow_nan=False)

#: Bytes a process writes (short, so one write stays inside one page most of the time).
user_mm_payloads = st.binary(min_size=1, max_size=24)


# ---------------------------------------------------------------------------
# --- security ---
# security/ (attack campaigns: Wilson intervals, KASAN/MTE tags, seeds)
# ---------------------------------------------------------------------------

__all__ += [  # this section's exports
    "attack_seeds",
    "hw_tags",
    "sw_tags",
    "wilson_counts",
]

#: A (successes, trials) pair with 0 <= successes <= trials and at least one trial.
wilson_counts = st.integers(1, 100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))

#: A random KASAN software tag (0x00-0xFD: neither match-all 0xFF nor invalid 0xFE).
sw_tags = st.integers(0x00, 0xFD)

#: A random KASAN hardware (MTE) tag as the pointer's top byte (0xF0-0xFD).
hw_tags = st.integers(0xF0, 0xFD)

#: A campaign seed.
attack_seeds = st.integers(0, 2**32 - 1)

# ---------------------------------------------------------------------------
# kernel/arch/x86_pgtable: x86-64 descriptors
# ---------------------------------------------------------------------------

__all__ += [  # this section's exports
    "x86_descriptors",
    "x86_pfns",
]

#: A 4 KiB frame number with a 52-bit physical address.
x86_pfns = st.one_of(st.integers(0, 0xFFFF), st.integers(0, (1 << 40) - 1))

#: Attribute, software, key and NX bits of an x86 entry (bits 0-12, 57-63).
_X86_ATTR_BITS = (*(1 << b for b in range(13)), *(1 << b for b in range(57, 64)))

#: An x86 descriptor: a pfn plus any mix of attribute, software, key and NX bits.
x86_descriptors = st.builds(
    lambda pfn, bits: (pfn << 12) | sum(set(bits)),
    x86_pfns,
    st.lists(st.sampled_from(_X86_ATTR_BITS), max_size=12),
)
