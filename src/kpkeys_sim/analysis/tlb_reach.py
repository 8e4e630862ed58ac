"""TLB-reach model: what the shape of the linear map costs kernel data accesses.

The machine's TLB (``machine/tlb``) has no capacity limit, on purpose: it
exists to expose missing invalidations.  So the cost of *capacity* misses —
the reason a PTE-mapped linear map (v7, ``debug_pagealloc``,
``rodata=full`` without BBML2) is slower than a block-mapped one (v6 with the
PBA, BBML2 systems) — is modelled here, analytically, from three inputs:

1. **The linear map's real shape.**  :func:`linear_map_shape` walks the
   booted kernel's tables over the linear-map range (like ``ptdump``) and
   counts the leaves by size: PUD blocks, contiguous PMD runs, PMD blocks,
   contiguous PTE runs and plain PTEs.  The configuration name plays no part.
2. **Page visits.**  A *visit* is a run of accesses to one page of kernel
   data through the linear map; only its first access can miss the TLB.
   Visits are counted from the model's events (:data:`HOT_VISITS`,
   :data:`COLD_VISITS`): a ``store_pt_entries`` call (one ``pt_write``
   emission) is one visit to a page-table page; a slab object operation is one
   visit (``vmalloc_kmalloc``/``vmalloc_kfree`` included: slab objects the
   model does not allocate itself); a zeroed page is one visit to a freshly
   allocated page.  Software table reads (``pt_read``) add no visit: they
   mostly read the table page the next ``pt_write`` visits anyway.
3. **Working sets.**  Hot visits go uniformly to the kernel's data working
   set ``W`` bytes (a workload parameter, ``kernel_ws``); cold visits go
   uniformly to the whole linear map (RAM), the right reuse model for pages
   just taken from the free lists.

Reuse model (documented assumption).  With accesses spread uniformly over
``W`` bytes, a fraction ``f_t`` of which is mapped by translations of size
``t``, the translations needed are ``N_t = f_t·W/t`` and a TLB level with
``E_t`` entries for that size (times ``kernel_tlb_share``) misses with
probability ``p_t = max(0, 1 - E_t/N_t)`` — the steady state of an LRU or
random-replacement cache under uniform access, i.e. ``max(0, 1 - reach/W)``
per size class.  Each size class gets its own pool (exact for x86's
split-by-size L1 DTLB; for arm64's unified TLBs it overstates capacity when
several sizes are in use — in practice one size dominates).

Cost of one visit: ``Σ_t f_t·(p1_t·l2_tlb_hit + p2_t·(translation_miss +
walk_t·walk_access))`` where ``p1``/``p2`` are the L1/L2 miss probabilities
and ``walk_t = max(1, depth_t - walk_cached_levels)`` the table reads a walk
for that leaf makes below the walk-cached levels.  A contiguous-hint run
counts as one translation of the run's size when the calibration says the
TLB coalesces them (``tlb_coalesces_contig``).

Everything here is a pure function of counts and the calibration table, so
the sensitivity analysis re-prices it without re-running the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from kpkeys_sim.analysis.calibration import CalibrationTable

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel

__all__ = [
    "COLD_VISITS",
    "HOT_VISITS",
    "LinearMapShape",
    "ReachCost",
    "linear_map_shape",
    "reach_cost",
    "visit_cost",
]

#: Event kind -> (basis, visits per unit): visits to the hot kernel working set.
#: ``"calls"`` counts emissions (one ``store_pt_entries`` call = one page), ``"n"`` the count.
HOT_VISITS: dict[str, tuple[str, int]] = {
    "pt_write": ("calls", 1),
    "slab_alloc": ("n", 1),
    "slab_free": ("n", 1),
    "vmalloc_kmalloc": ("n", 1),
    "vmalloc_kfree": ("n", 1),
}
#: Event kind -> (basis, visits per unit): visits to freshly allocated pages (uniform over RAM).
COLD_VISITS: dict[str, tuple[str, int]] = {
    "page_zero": ("n", 1),
}


@dataclass(frozen=True, slots=True)
class LinearMapShape:
    """Bytes of the linear map covered by each kind of leaf, and the walk depth of each.

    ``leaves[kind] = (count, leaf_bytes, depth, contig_run)``: ``count`` leaves
    of ``leaf_bytes`` each, found at a walk depth of ``depth`` table reads;
    ``contig_run`` is the number of entries a contiguous-hint run groups (1
    for an ordinary leaf).
    """

    leaves: Mapping[str, tuple[int, int, int, int]]

    @property
    def total_bytes(self) -> int:
        """Bytes mapped by all leaves."""
        return sum(c * b for c, b, _, _ in self.leaves.values())

    def counts(self) -> dict[str, int]:
        """Leaf kind -> number of leaves (for reports)."""
        return {k: v[0] for k, v in sorted(self.leaves.items())}

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            k: {"count": c, "leaf_bytes": b, "walk_depth": d, "contig_run": r}
            for k, (c, b, d, r) in sorted(self.leaves.items())
        }


def linear_map_shape(k: Kernel) -> LinearMapShape:
    """The leaves of ``k``'s linear map by size, from the live translation tables.

    Uses the arch's ptdump-style walk ``k.arch_mm.linear_map_leaves`` (arm64:
    :func:`kpkeys_sim.kernel.mm.linear_map.linear_map_leaves`, which reads
    the tables as the walker does without perturbing the TLB or the event
    counts) and attaches each kind's size, walk depth and contiguous run
    (``CONT_PTES``/``CONT_PMDS``, spec pkeys-hardware.md §2.3).
    """
    g = k.pgt
    start_level = k.machine.geometry.start_level
    counts = k.arch_mm.linear_map_leaves(k)
    kinds = {
        # kind: (leaf bytes, translation level, contiguous run)
        "pud": (g.PUD_SIZE, 1, 1),
        "contpmd": (g.PMD_SIZE, 2, g.CONT_PMDS),
        "pmd": (g.PMD_SIZE, 2, 1),
        "contpte": (g.PAGE_SIZE, 3, g.CONT_PTES),
        "pte": (g.PAGE_SIZE, 3, 1),
    }
    leaves = {
        kind: (counts[kind], size, level - start_level + 1, run)
        for kind, (size, level, run) in kinds.items()
        if counts.get(kind, 0)
    }
    return LinearMapShape(leaves)


@dataclass(frozen=True, slots=True)
class ReachCost:
    """The TLB-reach part of one run's price, and how it was obtained."""

    kernel_ws: int
    hot_visits: int
    cold_visits: int
    hot_visit_cycles: Fraction
    cold_visit_cycles: Fraction

    @property
    def cycles(self) -> Fraction:
        """Total TLB-reach cycles."""
        return self.hot_visits * self.hot_visit_cycles + self.cold_visits * self.cold_visit_cycles

    def as_dict(self) -> dict[str, object]:
        """JSON form (cycles per visit rounded to 0.01)."""
        return {
            "kernel_ws": self.kernel_ws,
            "hot_visits": self.hot_visits,
            "cold_visits": self.cold_visits,
            "hot_visit_cycles": round(float(self.hot_visit_cycles), 2),
            "cold_visit_cycles": round(float(self.cold_visit_cycles), 2),
            "cycles": round(self.cycles),
        }


def _entries(cal: CalibrationTable, level: int, tbytes: int) -> Fraction:
    share = cal["kernel_tlb_share"]
    if level == 1:
        e = cal["l1_dtlb_entries_large"] if tbytes >= (2 << 20) else cal["l1_dtlb_entries"]
    else:
        e = cal["l2_tlb_entries_1g"] if tbytes >= (1 << 30) else cal["l2_tlb_entries"]
    return e * share


def visit_cost(shape: LinearMapShape, ws: int, cal: CalibrationTable) -> Fraction:
    """Expected cycles of one page visit spread uniformly over ``ws`` bytes of the linear map."""
    total = shape.total_bytes
    if total == 0 or ws <= 0:
        return Fraction(0)
    coalesce = cal["tlb_coalesces_contig"] >= 1
    cost = Fraction(0)
    for count, leaf_bytes, depth, run in shape.leaves.values():
        f = Fraction(count * leaf_bytes, total)
        tbytes = leaf_bytes * run if coalesce else leaf_bytes
        needed = f * ws / tbytes
        if needed <= 0:
            continue
        p1 = max(Fraction(0), 1 - _entries(cal, 1, tbytes) / needed)
        p2 = max(Fraction(0), 1 - _entries(cal, 2, tbytes) / needed)
        walk = max(Fraction(1), depth - cal["walk_cached_levels"])
        cost += f * (
            p1 * cal["l2_tlb_hit"] + p2 * (cal["translation_miss"] + walk * cal["walk_access"])
        )
    return cost


def _visits(
    table: Mapping[str, tuple[str, int]], counts: Mapping[str, int], calls: Mapping[str, int]
) -> int:
    v = 0
    for kind, (basis, per) in table.items():
        v += per * (calls.get(kind, 0) if basis == "calls" else counts.get(kind, 0))
    return v


def reach_cost(
    shape: LinearMapShape,
    counts: Mapping[str, int],
    calls: Mapping[str, int],
    kernel_ws: int,
    cal: CalibrationTable,
) -> ReachCost:
    """The TLB-reach cycles of a run with these event ``counts``/``calls``."""
    hot = _visits(HOT_VISITS, counts, calls)
    cold = _visits(COLD_VISITS, counts, calls)
    return ReachCost(
        kernel_ws,
        hot,
        cold,
        visit_cost(shape, kernel_ws, cal),
        visit_cost(shape, shape.total_bytes, cal),
    )
