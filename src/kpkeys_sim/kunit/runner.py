"""``run_kunit(config)``: boot a model kernel and run the KUnit suites on it (``kunit.py run``).

The suites are those a kernel built with
``CONFIG_KPKEYS_HARDENED_PGTABLES_KUNIT_TEST=y`` runs at boot: the series'
suite of ``config.series`` and the model's positive suite.  The test depends
on ``CONFIG_KPKEYS_HARDENED_PGTABLES`` (spec §5.1), so with
``config.kpkeys_hardened_pgtables`` false there is no suite to run (the KTAP
plan is ``1..0``).  With the cred series configured
(``config.kpkeys_cred_levels``, ``CONFIG_KPKEYS_HARDENED_CRED_KUNIT_TEST``)
its suite and the model's cred positive suite follow
(:func:`kpkeys_sim.kunit.hardened_cred.cred_suites`, spec §5.2).

Built-in KUnit tests run from ``kernel_init_freeable()``: after the
initcalls, before ``free_initmem()`` and ``mark_rodata_ro()``, so
``swapper_pg_dir`` is still writable (spec §5.1: "PGD skipped").
:func:`run_kunit` runs them at that point of the model's boot
(``boot(..., kunit_run_all_tests=...)``); :func:`run_kunit_on` runs them on an
already booted kernel (after ``mark_rodata_ro``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kunit.framework import KunitResult, KunitSuite, kunit_run_tests
from kpkeys_sim.kunit.hardened_cred import cred_suites
from kpkeys_sim.kunit.hardened_pgtables import default_suites

__all__ = ["boot_for_kunit", "run_kunit", "run_kunit_on"]


def boot_for_kunit(config: KernelConfig) -> Kernel:
    """Boot a kernel for ``config`` (``kpkeys_sim.kernel.boot.boot``)."""
    from kpkeys_sim.kernel.boot import boot

    return boot(config)


def run_kunit_on(k: Kernel, suites: Sequence[KunitSuite] | None = None) -> KunitResult:
    """Run ``suites`` (default: the configured ones) on the booted kernel ``k``."""
    if suites is None:
        suites = default_suites(k.config.series) if k.config.kpkeys_hardened_pgtables else []
        if k.config.kpkeys_cred_levels:
            suites = [*suites, *cred_suites()]
    return kunit_run_tests(k, suites)


def run_kunit(
    config: KernelConfig,
    suites: Sequence[KunitSuite] | None = None,
    before: Callable[[Kernel], object] | None = None,
) -> KunitResult:
    """Boot a kernel for ``config`` and run the KUnit suites during its boot.

    Returns the KTAP text and the counts.  ``suites`` defaults to the series'
    suite plus the positive suite (none when the feature is not configured).
    ``before(k)``, when given, runs just before the suites (tests use it to
    alter the booted kernel).  Raises :class:`~kpkeys_sim.errors.ToolError` for a
    configuration the kernel model cannot boot.
    """
    from kpkeys_sim.kernel.boot import boot

    results: list[KunitResult] = []

    def kunit_run_all_tests(k: Kernel) -> None:
        if before is not None:
            before(k)
        results.append(run_kunit_on(k, suites))

    boot(config, kunit_run_all_tests=kunit_run_all_tests)
    return results[0]
