"""Mutation tests: remove one protection step and the matching KUnit case reports ``not ok``.

Each test runs the same suite twice on the same configuration: without the
mutation (negative control: the case is ``ok``) and with it (the case is
``not ok``).  A mutation is a ``monkeypatch`` of one kernel function for the
duration of the test, applied before boot (steps that run during boot) or
just before the suites run (steps that only matter afterwards).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from kpkeys_sim.kernel import arch as kernel_arch
from kpkeys_sim.kernel.config import DEFAULT_CONFIG
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys import hardened_pgtables as hp
from kpkeys_sim.kernel.kpkeys import pba, ppa
from kpkeys_sim.kernel.kpkeys.core import KPKEYS_GUARD_NOOP
from kpkeys_sim.kernel.mm import pgtable
from kpkeys_sim.kunit import run_kunit
from kpkeys_sim.kunit.framework import KunitResult
from kpkeys_sim.kunit.hardened_pgtables import kpkeys_hardened_pgtables_positive_suite
from kpkeys_sim.kunit.ktap import KunitStatus

RAM = 1 << 30
OK = KunitStatus.KUNIT_SUCCESS
NOT_OK = KunitStatus.KUNIT_FAILURE


def _run(
    series: str, before: Callable[[Kernel], object] | None = None, *, positive_only: bool = False
) -> KunitResult:
    suites = [kpkeys_hardened_pgtables_positive_suite()] if positive_only else None
    return run_kunit(DEFAULT_CONFIG.replace(series=series, ram_size=RAM), suites, before)


def _status(res: KunitResult, suite: str, case: str) -> KunitStatus:
    return res.suite(suite).case(case).status


def _control_then_mutant(
    series: str,
    suite: str,
    case: str,
    mutate: Callable[[], object],
    *,
    at_kunit: bool = False,
) -> KunitResult:
    """Assert ``case`` is ok, then apply ``mutate`` and return the mutant run.

    ``at_kunit`` mutations are applied just before the suites run, and only
    the positive suite runs (the mutation is confined to what it tests).
    """
    control = _run(series, positive_only=at_kunit)
    assert _status(control, suite, case) is OK, control.ktap
    if at_kunit:
        mutant = _run(series, lambda k: mutate(), positive_only=True)
    else:
        mutate()
        mutant = _run(series)
    assert _status(mutant, suite, case) is NOT_OK, mutant.ktap
    assert mutant.suite(suite).status is NOT_OK
    return mutant


V5_SUITE = "Hardened pgtables using kpkeys"
V6_SUITE = V7_SUITE = "kpkeys_hardened_pgtables"
POSITIVE = "kpkeys_hardened_pgtables_positive"


def test_v5_ctor_pkey(monkeypatch: pytest.MonkeyPatch) -> None:
    """v5 13/18: without the ctor's set_memory_pkey new PTPs are writable."""
    mutant = _control_then_mutant(
        "v5",
        V5_SUITE,
        "write_kernel_vmalloc_pte",
        lambda: monkeypatch.setattr(hp, "kpkeys_protect_pgtable_memory", lambda k, p, o=0: 0),
    )
    assert _status(mutant, V5_SUITE, "write_user_pmd") is NOT_OK
    # The boot-time tables were still walked.
    assert _status(mutant, V5_SUITE, "write_linear_map_pte") is OK


def test_v5_swapper_pg_dir_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """v5 11/18: without ``kernel_pgtables_set_pkey`` the linear map's boot tables are writable."""
    mutant = _control_then_mutant(
        "v5",
        V5_SUITE,
        "write_linear_map_pte",
        lambda: monkeypatch.setattr(hp, "kernel_pgtables_set_pkey", lambda k, pkey: 0),
    )
    assert _status(mutant, V5_SUITE, "write_kernel_vmalloc_pte") is OK


def test_v6_early_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """v6 16/30: ``pba_init_late`` minus its set_memory_pkey: the IRQ stacks' PTE is writable.

    The rest of the early region stays in the PBA cache and keeps being handed
    out, so later page tables (a vmalloc area's PTE table) are writable too.
    """

    def pba_init_late_without_pkey(k: Kernel) -> None:
        k.static_branch_enable(pba.PBA_CAN_SET_PKEY)

    mutant = _control_then_mutant(
        "v6",
        V6_SUITE,
        "write_early_kernel_vmap_pte",
        lambda: monkeypatch.setattr(pba, "pba_init_late", pba_init_late_without_pkey),
    )
    assert _status(mutant, V6_SUITE, "write_kernel_vmalloc_pte") is NOT_OK


def _set_pmd_without_guard(k: Kernel, pmdp: int, pmd: int) -> None:
    """``set_pmd`` with ``KPKEYS_GUARD_NOOP`` in place of the ``kpkeys_hardened_pgtables`` guard."""
    noop = KPKEYS_GUARD_NOOP("kpkeys_hardened_pgtables")
    with noop(k):
        k.machine.store_pt_entries(k.cpu, pmdp, pmd)
        if k.pgt.ARCH_HAS_PTE_BARRIERS and k.pgt.pmd_valid(pmd):
            pgtable.queue_pte_barriers(k)


@pytest.mark.parametrize("series", ["v5", "v6", "v7"])
def test_guard_missing_in_set_pmd(monkeypatch: pytest.MonkeyPatch, series: str) -> None:
    """v5 15/18: one helper without its guard faults on a protected table (``try faulted``)."""
    mutant = _control_then_mutant(
        series,
        POSITIVE,
        "guarded_helpers_write",
        lambda: monkeypatch.setattr(pgtable, "set_pmd", _set_pmd_without_guard),
        at_kunit=True,
    )
    log = mutant.suite(POSITIVE).case("guarded_helpers_write").log
    assert log == ("    # guarded_helpers_write: try faulted",)


def test_exception_entry_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """v5 07/18: without the POR_EL1 reset in ``kernel_entry`` a handler runs at PGTABLES."""

    def mutate() -> None:
        ops = kernel_arch.kpkeys_arch_by_name("arm64")

        def kernel_entry_without_reset(k: Kernel) -> None:
            k.cpu.exception_entry(reset_to=None)

        monkeypatch.setitem(
            kernel_arch._LOADED,
            "arm64",
            dataclasses.replace(ops, kernel_entry=kernel_entry_without_reset),
        )

    mutant = _control_then_mutant(
        "v6", POSITIVE, "interrupt_in_guarded_section", mutate, at_kunit=True
    )
    log = mutant.suite(POSITIVE).case("interrupt_in_guarded_section").log
    assert "Handler ran at the interrupted level" in log


def test_v7_ppa_finalize(monkeypatch: pytest.MonkeyPatch) -> None:
    """v7 13/24: without ``ppa_finalize`` the linear map's memblock page tables are writable."""
    mutant = _control_then_mutant(
        "v7",
        V7_SUITE,
        "write_direct_map_pgtables",
        lambda: monkeypatch.setattr(ppa, "ppa_finalize", lambda k: None),
    )
    assert _status(mutant, V7_SUITE, "write_vmemmap_pmd") is NOT_OK
    assert _status(mutant, V7_SUITE, "write_kernel_vmalloc_pte") is OK
