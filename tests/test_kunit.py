"""The KUnit model: KTAP, expectations, skips, actions, the suites and ``kpkeys-sim kunit``."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpkeys_sim.cli import main
from kpkeys_sim.kernel.config import DEFAULT_CONFIG, KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.maccess import copy_from_kernel_nofault, copy_to_kernel_nofault
from kpkeys_sim.kunit import parse_ktap, run_kunit, run_kunit_on
from kpkeys_sim.kunit.framework import (
    KUNIT_ASSERT_NOT_NULL_MSG,
    KUNIT_CASE,
    KUNIT_EXPECT_EQ,
    KUNIT_EXPECT_EQ_MSG,
    KUNIT_EXPECT_TRUE,
    Kunit,
    KunitResult,
    KunitSuite,
    kunit_add_action,
    kunit_run_tests,
    kunit_skip,
)
from kpkeys_sim.kunit.ktap import KunitStatus
from kpkeys_sim.kunit.runner import boot_for_kunit

# One booted kernel per configuration for the whole module (boots are the slow part).
_KERNELS: dict[KernelConfig, Kernel] = {}


def _kernel(cfg: KernelConfig = DEFAULT_CONFIG) -> Kernel:
    if cfg not in _KERNELS:
        _KERNELS[cfg] = boot_for_kunit(cfg)
    return _KERNELS[cfg]


# --- the framework and the KTAP format -----------------------------------------------------------


def _passing(test: Kunit) -> None:
    KUNIT_EXPECT_EQ(test, 1 + 1, 2)


def _failing(test: Kunit) -> None:
    ret = 0
    KUNIT_EXPECT_EQ_MSG(test, ret, -14, "Direct PTE write wasn't prevented")


def _skipping(test: Kunit) -> None:
    kunit_skip(test, "kpkeys are not supported")


def _asserting(test: Kunit) -> None:
    ptep = None
    KUNIT_ASSERT_NOT_NULL_MSG(test, ptep, "Failed to get PTE")
    KUNIT_EXPECT_TRUE(test, False)  # not reached: the assertion ended the case


def test_ktap_format_of_a_mixed_run() -> None:
    """Pass, fail (with the kernel's diagnostic lines), skip and assertion print as KUnit does."""
    k = _kernel()
    suites = [
        KunitSuite(
            "demo",
            (
                KUNIT_CASE(_passing),
                KUNIT_CASE(_failing),
                KUNIT_CASE(_skipping),
                KUNIT_CASE(_asserting),
            ),
            "demo_kunit",
        ),
        KunitSuite("single", (KUNIT_CASE(_passing),)),
    ]
    res = kunit_run_tests(k, suites)
    lines = res.ktap.splitlines()
    here = "test_kunit.py"  # files outside the package print their basename
    fail_line = _failing.__code__.co_firstlineno + 2
    assert_line = _asserting.__code__.co_firstlineno + 2
    assert lines == [
        "KTAP version 1",
        "1..2",
        "    KTAP version 1",
        "    # Subtest: demo",
        "    # module: demo_kunit",
        "    1..4",
        "    ok 1 _passing",
        f"    # _failing: EXPECTATION FAILED at {here}:{fail_line}",
        "    Expected ret == -14, but",
        "        ret == 0 (0x0)",
        "Direct PTE write wasn't prevented",
        "    not ok 2 _failing",
        "    ok 3 _skipping # SKIP kpkeys are not supported",
        f"    # _asserting: ASSERTION FAILED at {here}:{assert_line}",
        "    Expected ptep != NULL, but",
        "        ptep == 0000000000000000",
        "        NULL == 0000000000000000",
        "Failed to get PTE",
        "    not ok 4 _asserting",
        "# demo: pass:1 fail:2 skip:1 total:4",
        "# Totals: pass:1 fail:2 skip:1 total:4",
        "not ok 1 demo",
        "    KTAP version 1",
        "    # Subtest: single",
        "    1..1",
        "    ok 1 _passing",
        "ok 2 single",
    ]
    assert (res.passed, res.failed, res.skipped, res.total) == (2, 2, 1, 5)
    assert not res.ok


def test_all_skipped_suite_is_ok_with_an_empty_skip_directive() -> None:
    """``kunit_suite_has_succeeded`` is SKIPPED: ``ok 1 name # SKIP `` (empty status comment)."""
    res = kunit_run_tests(_kernel(), [KunitSuite("s", (KUNIT_CASE(_skipping),) * 2)])
    assert res.ktap.splitlines()[-1] == "ok 1 s # SKIP "
    assert res.ok


def test_actions_run_in_reverse_after_the_case_even_when_it_fails() -> None:
    """Deferred actions (``kunit_add_action``) run LIFO after the case ends, failed or not."""
    order: list[str] = []

    def case(test: Kunit) -> None:
        kunit_add_action(test, lambda: order.append("first"))
        kunit_add_action(test, lambda: order.append("second"))
        KUNIT_ASSERT_NOT_NULL_MSG(test, None, "stop")
        order.append("not reached")

    kunit_run_tests(_kernel(), [KunitSuite("a", (KUNIT_CASE(case),))])
    assert order == ["second", "first"]


def test_a_kernel_oops_in_a_case_fails_it_and_the_run_goes_on() -> None:
    """An unhandled kernel fault ends the case as the kthread dying: ``try faulted``."""
    from kpkeys_sim.kernel.mm.maccess import kernel_store_u64

    k = _kernel()

    def case(test: Kunit) -> None:
        # A plain store (no fixup) to a protected PTE oopses.
        from kpkeys_sim.kunit.hardened_pgtables import get_kernel_pte

        ptep = get_kernel_pte(test.k, test.k.irq_stack_ptr[0])
        assert ptep is not None
        kernel_store_u64(test.k, ptep, 0)

    res = kunit_run_tests(k, [KunitSuite("o", (KUNIT_CASE(case), KUNIT_CASE(_passing)))])
    assert res.ktap.splitlines()[4:8] == [
        "    1..2",
        "    # case: try faulted",
        "    not ok 1 case",
        "    ok 2 _passing",
    ]
    assert any(
        line.startswith("Unable to handle kernel write to read-only memory") for line in k.log
    )
    assert not k.cpu.exception_stack


def test_parse_ktap_round_trips_the_runner_output() -> None:
    """``parse_ktap`` recovers every suite and case status the runner printed."""
    res = run_kunit_on(_kernel())
    parsed = parse_ktap(res.ktap)
    assert [(s.name, s.status) for s in parsed] == [(s.name, s.status) for s in res.suites]
    for ps, rs in zip(parsed, res.suites, strict=True):
        assert [(c.name, c.status, c.directive) for c in ps.cases] == [
            (c.name, c.status, c.status_comment) for c in rs.cases
        ]
    with pytest.raises(ValueError, match="KTAP version 1"):
        parse_ktap("1..1\n")


# --- maccess -------------------------------------------------------------------------------------


def test_copy_nofault_fixes_up_faults_and_lets_other_errors_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hardware fault becomes -EFAULT with a balanced exception; anything else propagates."""
    from kpkeys_sim.kunit.hardened_pgtables import get_kernel_pte

    k = _kernel()
    ptep = get_kernel_pte(k, k.irq_stack_ptr[0])
    assert ptep is not None
    assert copy_to_kernel_nofault(k, ptep, b"\0" * 8) == -14
    assert not k.cpu.exception_stack
    ret, data = copy_from_kernel_nofault(k, ptep, 8)
    assert ret == 0 and len(data) == 8
    unmapped = k.pgt.VMALLOC_END - k.pgt.PAGE_SIZE
    assert copy_from_kernel_nofault(k, unmapped, 8) == (-14, b"")
    with pytest.raises(TypeError, match="src must be bytes"):
        copy_to_kernel_nofault(k, ptep, 8)  # type: ignore[arg-type]

    def broken(*args: object) -> None:
        raise RuntimeError("model bug")

    monkeypatch.setattr(k.machine, "store_bytes", broken)
    with pytest.raises(RuntimeError, match="model bug"):
        copy_to_kernel_nofault(k, ptep, b"\0" * 8)


# --- the suites on booted kernels ----------------------------------------------------------------

#: ``kpkeys-sim kunit --series v6`` on the default configuration, pinned.
GOLDEN_V6 = """\
KTAP version 1
1..2
    KTAP version 1
    # Subtest: kpkeys_hardened_pgtables
    # module: kpkeys_hardened_pgtables_kunit
    1..5
    ok 1 write_direct_map_pgtables
    ok 2 write_kernel_image_pud
    ok 3 write_kernel_vmalloc_pte
    ok 4 write_early_kernel_vmap_pte
    ok 5 write_user_pmd
# kpkeys_hardened_pgtables: pass:5 fail:0 skip:0 total:5
# Totals: pass:5 fail:0 skip:0 total:5
ok 1 kpkeys_hardened_pgtables
    KTAP version 1
    # Subtest: kpkeys_hardened_pgtables_positive
    # module: kpkeys_hardened_pgtables_kunit
    1..3
    ok 1 guarded_helpers_write
    ok 2 freed_pgtable_writable
    ok 3 interrupt_in_guarded_section
# kpkeys_hardened_pgtables_positive: pass:3 fail:0 skip:0 total:3
# Totals: pass:3 fail:0 skip:0 total:3
ok 2 kpkeys_hardened_pgtables_positive
"""


def test_v6_default_config_ktap_is_pinned() -> None:
    """The whole KTAP output of the v6 suites on the default configuration."""
    res = run_kunit(DEFAULT_CONFIG.replace(series="v6"))
    assert res.ktap == GOLDEN_V6
    assert (res.passed, res.failed, res.skipped) == (8, 0, 0)


@pytest.mark.parametrize(
    ("series", "suite", "cases"),
    [
        (
            "v5",
            "Hardened pgtables using kpkeys",
            ["write_linear_map_pte", "write_kernel_vmalloc_pte", "write_user_pmd"],
        ),
        (
            "v7",
            "kpkeys_hardened_pgtables",
            [
                "write_direct_map_pgtables",
                "write_kernel_image_pud",
                "write_kernel_vmalloc_pte",
                "write_vmemmap_pmd",
                "write_user_pmd",
            ],
        ),
    ],
)
def test_series_suites_pass(series: str, suite: str, cases: list[str]) -> None:
    """The v5 and v7 suites (and the positive suite) pass on their default configurations."""
    res = run_kunit(DEFAULT_CONFIG.replace(series=series))
    assert [s.name for s in res.suites] == [suite, "kpkeys_hardened_pgtables_positive"]
    assert [c.name for c in res.suites[0].cases] == cases
    assert res.failed == 0 and res.skipped == 0, res.ktap


@pytest.mark.parametrize("series", ["v5", "v6", "v7"])
def test_every_case_skips_without_pkeys(series: str) -> None:
    """Without pkeys every case is ``ok N name # SKIP kpkeys are not supported``."""
    res = run_kunit(DEFAULT_CONFIG.replace(series=series, cpu_has_pkeys=False))
    assert res.skipped == res.total == len(res.suites[0].cases) + 3
    for line in res.ktap.splitlines():
        if line.startswith("    ok "):
            assert line.endswith(" # SKIP kpkeys are not supported")
    assert [ln for ln in res.ktap.splitlines() if not ln.startswith(" ")][-1].endswith("# SKIP ")


def test_no_suite_without_the_feature() -> None:
    """The test depends on CONFIG_KPKEYS_HARDENED_PGTABLES: without it the plan is ``1..0``."""
    res = run_kunit(DEFAULT_CONFIG.replace(kpkeys_hardened_pgtables=False))
    assert res.ktap == "KTAP version 1\n1..0\n"
    assert isinstance(res, KunitResult) and res.ok and res.total == 0


def test_v6_folded_pud_writes_the_unprotected_pgd() -> None:
    """64K pages fold the PUD into swapper_pg_dir: v6's unconditional PUD write is not prevented."""
    res = run_kunit(DEFAULT_CONFIG.replace(series="v6", page_size=65536))
    suite = res.suites[0]
    assert suite.case("write_direct_map_pgtables").status is KunitStatus.KUNIT_FAILURE
    assert "Direct PUD write wasn't prevented" in suite.case("write_direct_map_pgtables").log


# --- kpkeys-sim kunit ----------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["kunit", *args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 0), out, err


def test_cli_prints_ktap_and_exits_0_when_all_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """``kpkeys-sim kunit --series v6`` prints the pinned KTAP and exits 0."""
    code, out, err = _cli(capsys, "--series", "v6")
    assert (code, out, err) == (0, GOLDEN_V6, "")


def test_cli_exits_1_when_a_case_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A failing case (v6, 64K pages: the folded PUD) gives exit status 1."""
    cfg = tmp_path / "k.toml"
    cfg.write_text('series = "v6"\n')
    code, out, _ = _cli(capsys, "--config", str(cfg), "--page-size", "65536")
    assert code == 1
    assert "not ok 1 kpkeys_hardened_pgtables" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--series", "v9"], "bad value 'v9' for '--series': must be one of v5, v6, v7, pks-rfc2"),
        (
            ["--page-size", "8192"],
            "bad value '8192' for '--page-size': must be one of 4096, 16384, 65536",
        ),
        (
            ["--page-size", "big"],
            "bad value 'big' for '--page-size': must be one of 4096, 16384, 65536",
        ),
        (["--config", "/nonexistent/k.toml"], "/nonexistent/k.toml: no such config file"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Bad arguments print one line naming the value and exit 2, with nothing on stdout."""
    code, out, err = _cli(capsys, *args)
    assert (code, out, err) == (2, "", f"kpkeys-sim: error: {message}\n")


def test_cli_bad_config_key_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An unknown key in --config is rejected by name (load_config), exit 2."""
    cfg = tmp_path / "k.toml"
    cfg.write_text("serie = 'v6'\n")
    code, out, err = _cli(capsys, "--config", str(cfg))
    assert (code, out) == (2, "")
    assert err == f"kpkeys-sim: error: {cfg}: unknown key 'serie'\n"


def test_cli_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` prints the counts and per-case statuses instead of KTAP."""
    import json

    code, out, _ = _cli(capsys, "--series", "v7", "--json")
    data = json.loads(out)
    assert code == 0
    assert (data["passed"], data["failed"], data["skipped"], data["total"]) == (8, 0, 0, 8)
    assert data["suites"][0]["cases"][3] == {
        "name": "write_vmemmap_pmd",
        "status": "ok",
        "comment": "",
    }
