"""Every scenario is a real attack: it succeeds on the undefended kernel, and defenses matter."""

from __future__ import annotations

import pytest

from kpkeys_sim.security import run_campaign, scenario_ids
from kpkeys_sim.security.campaign import run_cell
from kpkeys_sim.security.defenses.kasan import HwTagsKasan
from kpkeys_sim.security.scenarios import make_scenario

#: swapper_pg_dir after mark_rodata_ro is read-only through every alias in every
#: configuration (rodata, not a pkey): S5 reports that class as covered by rodata.
RODATA_ONLY = {"S5-swapper-pgd"}
EXPLOITS = [s for s in scenario_ids() if not make_scenario(s).measurement and s not in RODATA_ONLY]


@pytest.mark.parametrize("sid", EXPLOITS)
def test_scenario_succeeds_without_defense(sid: str) -> None:
    """On the undefended kernel the attack reaches its payoff (seed 0, 6 trials)."""
    cell = run_cell(sid, "none", 6, 0)
    assert cell.succeeded >= 1, cell.explanation()
    assert cell.prevented == 0 and cell.detected == 0


def test_swapper_pg_dir_is_read_only_after_boot() -> None:
    """S5-swapper-pgd: the write faults on the base permission (rodata) even without pkeys."""
    cell = run_cell("S5-swapper-pgd", "none", 2, 0)
    assert cell.prevented == 2
    assert any("base_fault" in r for _, r in cell.reasons)


def test_pte_table_reclaim_is_prevented_by_kpkeys_v7() -> None:
    """S1 under kpkeys-v7: whenever the reclaim happens, the overlay stops the stale write."""
    cell = run_cell("S1", "kpkeys-v7", 30, 0)
    assert cell.succeeded == 0
    assert cell.prevented == cell.metrics["reclaimed"]
    assert any("POE overlay" in r for _, r in cell.reasons)


def test_pba_changes_the_reclaim_itself() -> None:
    """S1 under kpkeys-v6: the PBA serves page tables from its own cache, so no reclaim."""
    cell = run_cell("S1", "kpkeys-v6", 30, 0)
    assert cell.metrics["reclaimed"] == 0
    assert cell.failed == cell.trials


def test_user_alias_bypasses_pkeys_but_not_stage2() -> None:
    """S9-user: the user alias of a PTP is not covered by pkeys; stage 2 covers it."""
    assert run_cell("S9-user", "kpkeys-v7", 3, 0).succeeded == 3
    assert run_cell("S9-user", "hyp-s2", 3, 0).prevented == 3


def test_cred_pointer_swap_bypasses_cred_hardening() -> None:
    """S12: kpkeys-cred stops field writes to a live cred but not the pointer swap."""
    assert run_cell("S12-A", "kpkeys-cred", 3, 0).prevented == 3
    assert run_cell("S12-B", "kpkeys-cred", 3, 0).succeeded == 3


def test_one_shot_report_lets_the_attack_through() -> None:
    """S11-report: after the decoy report, HW_TAGS no longer checks; S11-panic stops at it."""
    report = run_cell("S11-report", "kasan-hw-tags", 20, 0)
    panic = run_cell("S11-panic", "kasan-hw-tags", 20, 0)
    assert report.succeeded > 0
    assert panic.succeeded < report.succeeded
    assert any("decoy" in r for _, r in panic.reasons)


def test_tag_check_removed_negative_control() -> None:
    """HW tags with the check removed: S1 succeeds as often as the reclaim happens."""

    class NoCheck(HwTagsKasan):
        def check_access(self, env: object, ptr: int, size: int, write: bool) -> None:
            return None

    cell = run_cell("S1", NoCheck(), 20, 0)
    assert cell.detected == 0
    assert cell.succeeded == cell.metrics["reclaimed"] > 0


def test_exposure_window_batching() -> None:
    """S14: batching cuts the number of pkey switches for the same page-table work."""
    res = run_campaign(["S14"], ["kpkeys-v7"], 1, 0)
    rows = {(r.workload, r.batching): r for r in res.exposure}
    on, off = rows[("fork", True)], rows[("fork", False)]
    assert on.pkey_switches < off.pkey_switches
    assert on.mem_ops_writable > 0 and on.mem_ops == off.mem_ops
    assert res.cells == []


@pytest.mark.parametrize("sid", ["S8-a", "S8-b", "S8-c"])
def test_register_model_per_cpu_and_per_context(sid: str) -> None:
    """S8: another CPU, an IRQ and the next task all run at the default level: prevented."""
    assert run_cell(sid, "kpkeys-v7", 2, 0).prevented == 2


def test_saved_register_is_trusted_on_restore() -> None:
    """S7: a corrupted saved POR_EL1 is loaded on context switch and opens page tables."""
    assert run_cell("S7", "kpkeys-v7", 2, 0).succeeded == 2
    assert run_cell("S7", "hyp-s2", 2, 0).prevented == 2
