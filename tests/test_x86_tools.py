"""x86 in the tools: the ``pks`` defense, ``kpkeys-sim kunit --arch x86``, bench on x86-pks.

The ``pks`` defense is kpkeys v6 on the x86-64 kernel model; its negative
control is the same defense with ``kpkeys_hardened_pgtables`` off.  The CLI
checks run the entry point in-process (``main``) except the kernel-BUG case,
which runs a real interpreter so stderr is the whole story (no traceback).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from tests.cli_helpers import run_cli

from kpkeys_sim.analysis.bench import TARGET_ARCH, Row, resolve_benchmarks, run_matrix
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.security.campaign import ATTACK_BASE_CONFIG, boot_env, run_campaign, run_cell
from kpkeys_sim.security.defenses import make_defense
from kpkeys_sim.security.defenses.base import _REGISTRY
from kpkeys_sim.security.defenses.kpkeys import Pks

PKS_FAULT = "write stopped by PKS protection-key fault (IA32_PKRS, pkey 1)"
S5 = ["S5-lm-pmd", "S5-user-pmd", "S5-vmemmap-pmd", "S5-swapper-pgd"]


# --- the pks defense ---------------------------------------------------------------------------


class PksFeatureOff(Pks):
    """Negative control: ``pks`` with the page-table pkey feature configured out."""

    name: ClassVar[str] = "pks-feature-off-test"
    pkey_protects_pgtables: ClassVar[bool] = False

    def kernel_config(self, base: KernelConfig) -> KernelConfig:
        return super().kernel_config(base).replace(kpkeys_hardened_pgtables=False)


def test_pks_configures_x86_v6_block_direct_map() -> None:
    cfg = make_defense("pks").kernel_config(ATTACK_BASE_CONFIG)
    assert (cfg.arch, cfg.series, cfg.linear_map, cfg.page_size) == ("x86", "v6", "block", 4096)
    assert cfg.kpkeys_hardened_pgtables and cfg.lazy_mmu_batching
    env = boot_env("S5-lm-pmd", "pks")
    k = env.k
    assert k.machine.fmt == "x86"
    assert k.arch_mm.linear_map_leaves(k)["pmd"] > 0  # 2M pages survive in the direct map
    assert PksFeatureOff.name not in _REGISTRY  # the control is never registered


@pytest.fixture(scope="module")
def pks_campaign() -> dict[str, Any]:
    return run_campaign(S5, ["pks"], 2, 7).to_json()


def _cell(res: dict[str, Any], sid: str) -> dict[str, Any]:
    cells: list[dict[str, Any]] = [c for c in res["cells"] if c["scenario"] == sid]
    (c,) = cells
    return c


@pytest.mark.parametrize("sid", ["S5-lm-pmd", "S5-user-pmd", "S5-swapper-pgd"])
def test_pks_prevents_with_a_pks_fault(pks_campaign: dict[str, Any], sid: str) -> None:
    """The direct-map and user PMDs and init_top_pgt (writable .data, pkey-protected)."""
    c = _cell(pks_campaign, sid)
    assert (c["prevented"], c["succeeded"], c["trials"]) == (2, 0, 2)
    cell = run_cell(sid, "pks", 2, 7)
    assert dict(cell.reasons) == {("prevented", PKS_FAULT): 2}


def test_pks_leaves_the_vmemmap_tables_open_as_v6_does(pks_campaign: dict[str, Any]) -> None:
    c = _cell(pks_campaign, "S5-vmemmap-pmd")
    assert (c["succeeded"], c["prevented"]) == (2, 0)


def test_swapper_pgd_is_a_rodata_fault_on_arm64_but_a_pkey_fault_on_x86() -> None:
    arm = run_cell("S5-swapper-pgd", "kpkeys-v6", 1, 7)
    assert arm.prevented == 1
    ((_, reason),) = arm.reasons
    assert "base_fault" in reason and "PKS" not in reason
    x86 = run_cell("S5-swapper-pgd", "pks", 1, 7)
    assert dict(x86.reasons) == {("prevented", PKS_FAULT): 1}


def test_none_x86_is_the_x86_kernel_without_the_feature() -> None:
    """``none-x86`` boots x86 with the feature off; the root table differs from arm64's:
    x86 keeps ``init_top_pgt`` writable, arm64 makes ``swapper_pg_dir`` read-only."""
    cfg = make_defense("none-x86").kernel_config(ATTACK_BASE_CONFIG)
    assert (cfg.arch, cfg.kpkeys_hardened_pgtables) == ("x86", False)
    arm = run_cell("S5-swapper-pgd", "none", 2, 7)
    assert arm.prevented == 2
    ((_, reason),) = arm.reasons
    assert "base_fault" in reason
    x86 = run_cell("S5-swapper-pgd", "none-x86", 2, 7)
    assert x86.succeeded == 2, x86.explanation()


@pytest.mark.parametrize("sid", ["S5-lm-pmd", "S5-swapper-pgd"])
def test_negative_control_pks_without_the_feature_lets_the_write_through(sid: str) -> None:
    cell = run_cell(sid, PksFeatureOff(), 2, 7)
    assert (cell.succeeded, cell.prevented) == (2, 0), cell.explanation()


def test_pks_column_is_deterministic_for_a_seed(pks_campaign: dict[str, Any]) -> None:
    again = run_campaign(S5, ["pks"], 2, 7).to_json()
    assert json.dumps(again, sort_keys=True) == json.dumps(pks_campaign, sort_keys=True)


# --- kpkeys-sim kunit --arch x86 ---------------------------------------------------------------


@pytest.mark.parametrize("series", ["v6", "v5"])
def test_kunit_on_x86_passes(series: str) -> None:
    code, out, err = run_cli(["kunit", "--arch", "x86", "--series", series])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "KTAP version 1" and lines[1] == "1..2"
    assert lines[-1] == "ok 2 kpkeys_hardened_pgtables_positive"
    assert sum(1 for ln in lines if ln.startswith("ok ")) == 2
    assert not any(ln.lstrip().startswith("not ok") for ln in lines)
    assert sum(1 for ln in lines if ln.startswith("    ok ")) >= 6


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--arch", "riscv"], "bad value 'riscv' for '--arch'"),
        (["--arch", "x86", "--page-size", "16384"], "bad value 16384 for 'page_size'"),
    ],
)
def test_kunit_bad_arch_input_is_one_line_exit_2(args: list[str], named: str) -> None:
    code, out, err = run_cli(["kunit", *args])
    assert (code, out) == (2, "")
    assert err.startswith("kpkeys-sim: error: ") and named in err
    assert err.count("\n") == 1


def _kunit_subprocess(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from kpkeys_sim.cli import main; main()",
            "kunit",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_kernel_bug_is_one_line_exit_1_no_traceback(tmp_path: Path) -> None:
    """arm64 v5 without rodata=full: the recursive linear-map split (spec §4.12)."""
    cfg = tmp_path / "v5.toml"
    cfg.write_text(f'series = "v5"\nrodata_full = false\nram_size = {256 << 20}\n')
    p = _kunit_subprocess(cfg)
    assert p.returncode == 1
    assert p.stdout == ""
    assert p.stderr.startswith("kpkeys-sim: the model kernel hit a BUG:")
    assert p.stderr.count("\n") == 1
    assert "Traceback" not in p.stderr


def test_kernel_bug_control_v5_with_rodata_full_boots(tmp_path: Path) -> None:
    """Negative control: v5 with rodata=full (no recursive split) boots and its suites pass."""
    cfg = tmp_path / "v5.toml"
    cfg.write_text(f'series = "v5"\nrodata_full = true\nram_size = {256 << 20}\n')
    code, out, err = run_cli(["kunit", "--config", str(cfg)])
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith("ok 2 ")


# --- bench on x86-pks ---------------------------------------------------------------------------


def test_x86_pks_target_boots_the_x86_kernel() -> None:
    assert TARGET_ARCH["x86-pks"] == "x86"
    assert TARGET_ARCH["arm64-poe"] == "arm64"


def _fork_v7_rows(target: str) -> list[Row]:
    res = run_matrix(resolve_benchmarks(["micromm/fork"], "small"), ["v7"], target, 0, "small")
    assert res.as_dict()["kernel_arch"] == TARGET_ARCH[target]
    assert res.rows
    for r in res.rows:
        assert r.run.config.arch == TARGET_ARCH[target]
        assert r.priced.unpriced == () and r.base_priced.unpriced == ()
    return res.rows


def test_bench_fork_v7_on_x86_pks_pays_ipis_not_isbs() -> None:
    for r in _fork_v7_rows("x86-pks"):
        c = r.as_dict()["counters"]
        assert c.get("tlb_shootdown_ipi", 0) > 0
        # one set_memory_pkey (CPA + flush with IPI) per page-table allocation
        assert c["tlb_shootdown_ipi"] == c["pgtable_alloc"] == c["x86_change_page_attr"]
        assert c.get("isb", 0) == 0 and c.get("dsb", 0) == 0
        assert r.as_dict()["baseline_counters"].get("tlb_shootdown_ipi", 0) == 0
        assert r.priced.by_constant["tlb_shootdown_ipi"] > 0


def test_bench_fork_v7_on_arm64_poe_pays_isbs_not_ipis() -> None:
    for r in _fork_v7_rows("arm64-poe"):
        c = r.as_dict()["counters"]
        assert c.get("isb", 0) > 0
        assert c.get("tlb_shootdown_ipi", 0) == 0
