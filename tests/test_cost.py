"""The cost model: calibration tables, pricing, TLB reach, exact iteration scaling.

Kernel-level counting (guard round trips, lazy-MMU sections) is checked on
freshly booted kernels by hand-counted small cases; pricing and the TLB-reach
model are checked against arithmetic done by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from fractions import Fraction

import pytest

import kpkeys_sim.kernel
from kpkeys_sim.analysis.calibration import CALIBRATIONS, get_calibration
from kpkeys_sim.analysis.cost import PRICES, UNPRICED, CostInstrument, EventCounts, price
from kpkeys_sim.analysis.tlb_reach import (
    COLD_VISITS,
    HOT_VISITS,
    LinearMapShape,
    reach_cost,
    visit_cost,
)
from kpkeys_sim.errors import ToolError
from kpkeys_sim.machine.events import EVENT_KINDS
from kpkeys_sim.workloads import run_iterations

ARM = get_calibration("arm64-poe")
X86 = get_calibration("x86-pks")
K4, M2, G1 = 4096, 2 << 20, 1 << 30

#: A PTE-mapped 1 GiB linear map (4-level walk) and a 2 MiB-block one (3-level walk).
PTE_MAP = LinearMapShape({"pte": (G1 // K4, K4, 4, 1)})
PMD_MAP = LinearMapShape({"pmd": (G1 // M2, M2, 3, 1)})


def _all_kernel_modules() -> None:
    for info in pkgutil.walk_packages(kpkeys_sim.kernel.__path__, "kpkeys_sim.kernel."):
        importlib.import_module(info.name)


# --- calibration -----------------------------------------------------------------------------


def test_every_constant_cites_a_source_or_is_an_assumption() -> None:
    """Each constant has a unit, a source and a rationale; sourceless ones are assumptions."""
    for table in CALIBRATIONS.values():
        for c in table.constants.values():
            assert c.unit and c.rationale, c.name
            assert c.source, c.name
            if c.source == "no published figure":
                assert c.assumption, c.name


def test_both_targets_have_the_same_constants() -> None:
    """arm64-poe and x86-pks define the same constant names (one pricing for both)."""
    assert set(ARM.constants) == set(X86.constants)


def test_x86_register_write_is_a_wrmsr_without_isb() -> None:
    """On x86-pks the register write is priced as WRMSR and an ISB costs nothing."""
    assert X86["isb"] == 0
    assert "WRMSR" in X86.constants["pkey_reg_write"].unit
    assert "MSR POR_EL1" in ARM.constants["pkey_reg_write"].unit


def test_unknown_target_is_a_tool_error() -> None:
    """An unknown target name is refused with its name in the message."""
    with pytest.raises(ToolError, match="unknown target 'riscv'"):
        get_calibration("riscv")


def test_scaled_changes_one_constant_only() -> None:
    """scaled() multiplies exactly one constant and leaves the table itself unchanged."""
    t = ARM.scaled("isb", Fraction(1, 2))
    assert t["isb"] == ARM["isb"] / 2
    assert all(t[n] == ARM[n] for n in ARM if n != "isb")
    assert ARM["isb"] == 30


# --- the event classification ----------------------------------------------------------------


def test_every_declared_event_is_priced_or_explained() -> None:
    """Every event kind the model declares is in PRICES or in UNPRICED (with a reason)."""
    _all_kernel_modules()
    missing = sorted(set(EVENT_KINDS) - set(PRICES) - set(UNPRICED))
    assert missing == []
    assert not set(PRICES) & set(UNPRICED)


def test_every_priced_constant_exists_in_every_table() -> None:
    """PRICES only names constants that both calibration tables define."""
    for const, basis in PRICES.values():
        assert basis in ("n", "calls")
        for table in CALIBRATIONS.values():
            assert const in table.constants, const


def test_every_constant_is_used() -> None:
    """Each calibration constant prices an event or feeds the TLB-reach model."""
    used = {c for c, _ in PRICES.values()} | {
        "l1_dtlb_entries",
        "l1_dtlb_entries_large",
        "l2_tlb_entries",
        "l2_tlb_entries_1g",
        "l2_tlb_hit",
        "walk_access",
        "walk_cached_levels",
        "translation_miss",
        "kernel_tlb_share",
        "tlb_coalesces_contig",
    }
    assert set(ARM.constants) <= used


# --- pricing ---------------------------------------------------------------------------------


def test_price_by_hand() -> None:
    """2 MSR + 2 ISB + 512 entries + one alloc of 512 pages, priced by hand on arm64-poe."""
    ev = EventCounts(
        {"pkey_reg_write": 2, "isb": 2, "pt_write": 512, "page_alloc": 512},
        {"pkey_reg_write": 2, "isb": 2, "pt_write": 1, "page_alloc": 1},
    )
    p = price(ev, ARM, PTE_MAP, kernel_ws=0)
    # 2*10 + 2*30 + 512*3 + 1*140 (the allocator call is priced per call, not per page)
    assert p.by_constant["pkey_reg_write"] == 20
    assert p.by_constant["isb"] == 60
    assert p.by_constant["pt_entry_write"] == 1536
    assert p.by_constant["page_alloc_call"] == 140
    assert p.by_constant["tlb_reach"] == 0
    assert p.cycles == 20 + 60 + 1536 + 140
    assert p.unpriced == ()


def test_accounting_events_cost_nothing() -> None:
    """Guard-entry and set/restore accounting events add no cycles of their own."""
    ev = EventCounts({"kpkeys_guard_enter": 5, "kpkeys_set_level": 5, "kpkeys_restore": 5})
    assert price(ev, ARM, PTE_MAP, 0).cycles == 0


def test_unknown_event_is_reported_not_priced() -> None:
    """An event kind in neither table is listed in ``unpriced`` and costs nothing."""
    p = price(EventCounts({"mystery": 3}, {"mystery": 1}), ARM, PTE_MAP, 0)
    assert p.unpriced == ("mystery",)
    assert p.cycles == 0


def test_instrument_counts_sums_and_emissions() -> None:
    """CostInstrument keeps the summed count and the number of emissions per kind."""
    c = CostInstrument()
    c.on_event("pt_write", 512)
    c.on_event("pt_write", 1)
    c.on_event("isb", 1)
    snap = c.snapshot()
    assert snap.counts == {"isb": 1, "pt_write": 513}
    assert snap.calls == {"isb": 1, "pt_write": 2}
    c.reset()
    assert c.snapshot().counts == {}


# --- TLB reach -------------------------------------------------------------------------------


def test_visit_cost_by_hand_pte_mapped() -> None:
    """4 MiB working set on a PTE-mapped map: L1 and L2 miss probabilities by hand."""
    ws = 4 << 20
    # translations needed: 1024; L1 holds 48*0.5 = 24, L2 2048*0.5 = 1024.
    p1 = 1 - Fraction(24, 1024)
    p2 = Fraction(0)
    expected = p1 * 6 + p2 * (10 + 2 * 30)
    assert visit_cost(PTE_MAP, ws, ARM) == expected


def test_visit_cost_by_hand_beyond_l2_reach() -> None:
    """64 MiB on a PTE-mapped map misses the L2 TLB with probability 1 - 1024/16384."""
    ws = 64 << 20
    p1 = 1 - Fraction(24, 16384)
    p2 = 1 - Fraction(1024, 16384)
    walk = 4 - 2  # walk depth 4, two levels in the walk caches
    assert visit_cost(PTE_MAP, ws, ARM) == p1 * 6 + p2 * (10 + walk * 30)


def test_block_mapping_has_more_reach_than_ptes() -> None:
    """The same working set costs less per visit on a block-mapped linear map."""
    ws = 64 << 20
    # 32 blocks needed, 24 L1 entries: p1 = 1/4; the L2 TLB holds them all.
    assert visit_cost(PMD_MAP, ws, ARM) == Fraction(1, 4) * 6
    assert visit_cost(PTE_MAP, ws, ARM) > 10 * visit_cost(PMD_MAP, ws, ARM)


def test_contiguous_runs_coalesce_only_where_the_tlb_does() -> None:
    """A contpte run counts as one 64 KiB translation on arm64, as 16 on x86."""
    cont = LinearMapShape({"contpte": (G1 // K4, K4, 4, 16)})
    ws = 4 << 20
    assert visit_cost(cont, ws, ARM) < visit_cost(PTE_MAP, ws, ARM)
    assert visit_cost(cont, ws, X86) == visit_cost(
        LinearMapShape({"pte": (G1 // K4, K4, 4, 1)}), ws, X86
    )


def test_reach_cost_counts_visits_from_events() -> None:
    """Hot visits are pt_write emissions and slab ops; cold visits are zeroed pages."""
    ev_counts = {"pt_write": 1000, "slab_alloc": 3, "page_zero": 7}
    ev_calls = {"pt_write": 4, "slab_alloc": 3, "page_zero": 7}
    r = reach_cost(PTE_MAP, ev_counts, ev_calls, 64 << 20, ARM)
    assert r.hot_visits == 4 + 3
    assert r.cold_visits == 7
    assert r.cycles == 7 * visit_cost(PTE_MAP, 64 << 20, ARM) + 7 * visit_cost(PTE_MAP, G1, ARM)
    assert set(HOT_VISITS) == {
        "pt_write",
        "slab_alloc",
        "slab_free",
        "vmalloc_kmalloc",
        "vmalloc_kfree",
    }
    assert set(COLD_VISITS) == {"page_zero"}


# --- exact iteration scaling -------------------------------------------------------------------


def _ev(**kw: int) -> EventCounts:
    return EventCounts(dict(kw), dict.fromkeys(kw, 1))


def test_constant_iterations_are_extrapolated_exactly() -> None:
    """Constant per-iteration counts: few iterations run, the total is exact."""
    ran: list[int] = []

    def step(i: int) -> EventCounts:
        ran.append(i)
        return _ev(isb=2)

    r = run_iterations(step, 10_000, warmup=2, probe=4)
    assert r.events.counts == {"isb": 20_000}
    assert r.iterations.extrapolated
    assert len(ran) < 30


def test_warmup_differences_are_kept() -> None:
    """A different first iteration is counted once, not extrapolated."""

    def step(i: int) -> EventCounts:
        return _ev(isb=2, page_alloc=1) if i == 0 else _ev(isb=2)

    r = run_iterations(step, 1000, warmup=1, probe=4)
    assert r.events.counts == {"isb": 2000, "page_alloc": 1}


def test_varying_iterations_run_in_full() -> None:
    """Counts that differ between the probe windows force every iteration to run."""
    ran: list[int] = []

    def isb(i: int) -> int:
        return 2 if i % 10 == 3 else 1

    def step(i: int) -> EventCounts:
        ran.append(i)
        return _ev(isb=isb(i))

    r = run_iterations(step, 300, warmup=1, probe=4)
    assert not r.iterations.extrapolated
    assert len(ran) == 300
    assert r.events.counts["isb"] == sum(isb(i) for i in range(300))


def test_periodic_iterations_extrapolate_per_period() -> None:
    """A marker every 7 iterations: verified over two periods, then extrapolated exactly."""

    def counts(i: int) -> dict[str, int]:
        return {"isb": 1, "vmap_purge": 1} if i % 7 == 6 else {"isb": 1}

    ran: list[int] = []

    def step(i: int) -> EventCounts:
        ran.append(i)
        c = counts(i)
        return EventCounts(c, dict.fromkeys(c, 1))

    total = 1003
    r = run_iterations(step, total, period_marker="vmap_purge")
    assert r.iterations.extrapolated
    assert r.iterations.probe == 7
    assert len(ran) < 40
    assert r.events.counts == {"isb": total, "vmap_purge": sum(i % 7 == 6 for i in range(total))}


def test_aperiodic_marker_runs_everything() -> None:
    """If two periods differ, no extrapolation happens."""
    marks = {3, 10, 20, 40}

    def step(i: int) -> EventCounts:
        c = {"isb": 1, "vmap_purge": 1} if i in marks else {"isb": 1}
        return EventCounts(c, dict.fromkeys(c, 1))

    r = run_iterations(step, 100, period_marker="vmap_purge")
    assert not r.iterations.extrapolated
    assert r.iterations.executed == 100
    assert r.events.counts == {"isb": 100, "vmap_purge": 4}


def test_calibration_doc_matches_the_tables() -> None:
    """docs/calibration.md contains the generated tables of every constant."""
    import pathlib

    from kpkeys_sim.analysis.calibration import calibration_markdown

    doc = pathlib.Path(__file__).parent.parent / "docs" / "calibration.md"
    assert calibration_markdown() in doc.read_text(encoding="utf-8")


# --- the per-folio split of the Redis-derived fork cost -----------------------------------------


@pytest.mark.parametrize("target", sorted(CALIBRATIONS))
def test_per_folio_split_keeps_the_small_folio_pte_cost(target: str) -> None:
    """folio_op + folio_rmap is the Redis-derived 72 cycles per small-folio PTE (one batch per
    PTE); 512 PTEs of one large folio in one batch cost 512 * folio_op + 1 * folio_rmap."""
    cal = get_calibration(target)
    assert cal["folio_op"] + cal["folio_rmap"] == 72
    shape = LinearMapShape({})
    small = price(
        EventCounts({"copy_pte": 512, "folio_dup_rmap_ptes": 512}, {}), cal, shape, 1 << 20
    )
    large = price(EventCounts({"copy_pte": 512, "folio_dup_rmap_ptes": 1}, {}), cal, shape, 1 << 20)
    assert small.cycles == 512 * 72
    assert large.cycles == 512 * cal["folio_op"] + cal["folio_rmap"]


def test_pt_read_is_priced_per_read_operation() -> None:
    """pt_read: basis 'calls' (one price per read operation, whatever its entry count)."""
    shape = LinearMapShape({})
    p = price(EventCounts({"pt_read": 512 + 3}, {"pt_read": 4}), ARM, shape, 1 << 20)
    assert p.cycles == 4 * ARM["pt_read"]
