"""The cost model: an Instrument that counts every event, and the pricing of the counts.

:class:`CostInstrument` is attached to a booted kernel's machine and counts
every event by kind — both the summed count (``counts[kind]``, e.g. entries
written) and the number of emissions (``calls[kind]``, e.g. page-table pages
written, since ``store_pt_entries`` emits once per page).

:func:`price` turns the counts into cycles with a calibration table
(:mod:`kpkeys_sim.analysis.calibration`) and nothing else:

* :data:`PRICES` maps each priced event kind to the constant that prices it
  and the basis (``"n"``: per counted unit; ``"calls"``: per emission);
* :data:`UNPRICED` lists the kinds deliberately not priced, each with the
  reason (almost always: the work is already priced through the finer
  events it causes, so pricing it again would count it twice);
* the TLB-reach part (:mod:`kpkeys_sim.analysis.tlb_reach`) adds the
  capacity-miss cost of kernel data accesses for the linear map's real shape.

A kind in neither table is reported in :attr:`Priced.unpriced` (and priced at
zero) so that a new kernel event can never silently change results; the
tests require the list to be empty for every workload.

Baseline and configuration runs are priced by the same function, so the
overhead of a configuration is ``(cycles - baseline_cycles) /
baseline_cycles`` over two complete priced runs, not a price of the extra
events alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from kpkeys_sim.analysis.calibration import CalibrationTable
from kpkeys_sim.analysis.tlb_reach import LinearMapShape, ReachCost, reach_cost
from kpkeys_sim.machine.events import Instrument

__all__ = [
    "PRICES",
    "UNPRICED",
    "CostInstrument",
    "EventCounts",
    "Priced",
    "price",
]

_LEVELS = ("pte", "pmd", "pud", "p4d", "pgd")

#: Event kind -> (calibration constant, basis).  Basis ``"n"`` prices each counted
#: unit, ``"calls"`` each emission of the event.
PRICES: dict[str, tuple[str, str]] = {
    # machine layer
    "pkey_reg_write": ("pkey_reg_write", "n"),
    "isb": ("isb", "n"),
    "dsb": ("dsb", "n"),
    "tlbi_va": ("tlbi_va", "n"),
    "tlbi_asid": ("tlbi_asid", "n"),
    "tlbi_all": ("tlbi_all", "n"),
    "pt_write": ("pt_entry_write", "n"),
    # software page-table reads: one price per read operation (emission)
    "pt_read": ("pt_read", "calls"),
    "translation_miss": ("translation_miss", "n"),
    "walk_access": ("walk_access", "n"),
    # page and slab allocators: an allocator call costs the same whatever its order
    "page_alloc": ("page_alloc_call", "calls"),
    "page_alloc_fail": ("page_alloc_call", "n"),
    "page_free": ("page_free_call", "calls"),
    "page_zero": ("page_zero", "n"),
    "slab_alloc": ("slab_op", "n"),
    "slab_free": ("slab_op", "n"),
    # scheduler, lazy MMU
    "context_switch": ("context_switch", "n"),
    "lazy_mmu_section": ("lazy_mmu_section", "n"),
    # page tables: construction/destruction per level (the pages are page_alloc events)
    **{f"pgtable_alloc_{lv}": ("pgtable_ctor", "n") for lv in _LEVELS},
    **{f"pgtable_free_{lv}": ("pgtable_ctor", "n") for lv in _LEVELS},
    "linear_map_split": ("linear_map_split", "n"),
    "change_memory_common": ("change_memory_common", "n"),
    # x86 CPA (split_large_page, change_page_attr_set_clr) and TLB shootdowns
    "x86_cpa_split_1g": ("linear_map_split", "n"),
    "x86_cpa_split_2m": ("linear_map_split", "n"),
    "x86_change_page_attr": ("change_memory_common", "n"),
    "tlb_shootdown_ipi": ("tlb_shootdown_ipi", "n"),
    # user memory (mm/memory.c)
    "page_fault": ("page_fault", "n"),
    "cow_break": ("page_copy", "n"),
    "copy_pte": ("folio_op", "n"),
    "zap_pte": ("folio_op", "n"),
    "folio_dup_rmap_ptes": ("folio_rmap", "n"),
    "folio_remove_rmap_ptes": ("folio_rmap", "n"),
    "munmap": ("vma_op", "n"),
    "fork": ("process_fork", "n"),
    "exit": ("process_exit", "n"),
    # vmalloc
    "vmap_area_alloc": ("vma_op", "n"),
    "vmap_purge": ("vma_op", "n"),
    "find_unlink_vmap_area": ("vmap_tree_op", "n"),
    "free_vmap_area_noflush": ("vmap_tree_op", "n"),
    "vb_alloc": ("vmap_block_op", "n"),
    "vb_free": ("vmap_block_op", "n"),
    "vmalloc_kmalloc": ("slab_op", "n"),
    "vmalloc_kfree": ("slab_op", "n"),
    # kpkeys allocators (their buddy allocations and pkey changes are priced separately)
    "pba_alloc": ("pba_cache_op", "n"),
    "pba_free": ("pba_cache_op", "n"),
    "pba_shrink": ("pba_cache_op", "n"),
}

_ACCOUNTING = "accounting only: its cost is the pkey_reg_write/isb events it causes"

#: Event kind -> why it is not priced.
UNPRICED: dict[str, str] = {
    "kpkeys_guard_enter": _ACCOUNTING,
    "kpkeys_set_level": _ACCOUNTING,
    "kpkeys_restore": _ACCOUNTING,
    "kpkeys_lazy_mmu_switch": _ACCOUNTING,
    "pgtable_alloc": "the pages are page_alloc events; construction is pgtable_alloc_<level>",
    "pgtable_free": "the pages are page_free (or PBA) events; destruction is pgtable_free_<level>",
    "memblock_alloc": "boot only; runs are counted after boot",
    "slab_page_alloc": "the slab's pages are page_alloc events, priced there",
    "slab_page_free": "the slab's pages are page_free events, priced there",
    "noblock_alloc": "its work is the page_alloc and set_memory_pkey events it causes",
    "noblock_free": "its work is the set_memory_pkey and page_free events it causes",
    "pba_refill": "its work is the page_alloc, set_memory_pkey and cache events it causes",
    "direct_reclaim": "its work is the shrinker's events",
    "warn": "a diagnostic, not work",
    **{
        f"linear_map_split_{kind}": "a breakdown of linear_map_split by level, priced there"
        for kind in ("pud", "contpmd", "pmd", "contpte")
    },
    "irq_entry": "interrupt handling is outside every workload's definition",
}


class CostInstrument(Instrument):
    """Counts every event by kind: summed counts and number of emissions."""

    __slots__ = ("calls", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def on_event(self, kind: str, n: int) -> None:
        counts = self.counts
        counts[kind] = counts.get(kind, 0) + n
        calls = self.calls
        calls[kind] = calls.get(kind, 0) + 1

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.counts.clear()
        self.calls.clear()

    def snapshot(self) -> EventCounts:
        """The counts so far, frozen."""
        return EventCounts(dict(sorted(self.counts.items())), dict(sorted(self.calls.items())))


@dataclass(frozen=True, slots=True)
class EventCounts:
    """Event counts of one run: ``counts[kind]`` (summed) and ``calls[kind]`` (emissions)."""

    counts: Mapping[str, int] = field(default_factory=dict)
    calls: Mapping[str, int] = field(default_factory=dict)

    def __sub__(self, other: EventCounts) -> EventCounts:
        return EventCounts(_sub(self.counts, other.counts), _sub(self.calls, other.calls))

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(_add(self.counts, other.counts), _add(self.calls, other.calls))

    def scaled(self, factor: int) -> EventCounts:
        """Every count multiplied by ``factor`` (linear extrapolation of per-iteration counts)."""
        return EventCounts(
            {k: v * factor for k, v in self.counts.items()},
            {k: v * factor for k, v in self.calls.items()},
        )

    def key(self) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
        """A hashable, order-independent form (for equality checks of per-iteration counts)."""
        return (
            tuple(sorted((k, v) for k, v in self.counts.items() if v)),
            tuple(sorted((k, v) for k, v in self.calls.items() if v)),
        )


def _sub(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b)}
    return {k: v for k, v in sorted(out.items()) if v}


def _add(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}
    return {k: v for k, v in sorted(out.items()) if v}


@dataclass(frozen=True, slots=True)
class Priced:
    """The price of one run: total cycles and where they come from."""

    cycles: Fraction
    by_constant: Mapping[str, Fraction]
    reach: ReachCost
    unpriced: tuple[str, ...]

    @property
    def cycles_int(self) -> int:
        """Total cycles rounded to an integer (for reports and JSON)."""
        return round(self.cycles)


def price(
    events: EventCounts,
    cal: CalibrationTable,
    shape: LinearMapShape,
    kernel_ws: int,
) -> Priced:
    """Price ``events`` with ``cal``; add the TLB-reach cost for ``shape`` and ``kernel_ws``."""
    by_const: dict[str, Fraction] = {}
    unpriced: list[str] = []
    for kind, n in events.counts.items():
        p = PRICES.get(kind)
        if p is None:
            if kind not in UNPRICED:
                unpriced.append(kind)
            continue
        const, basis = p
        units = events.calls.get(kind, 0) if basis == "calls" else n
        by_const[const] = by_const.get(const, Fraction(0)) + units * cal[const]
    reach = reach_cost(shape, events.counts, events.calls, kernel_ws, cal)
    by_const["tlb_reach"] = reach.cycles
    total = sum(by_const.values(), Fraction(0))
    return Priced(total, dict(sorted(by_const.items())), reach, tuple(sorted(unpriced)))
