"""The series' KUnit suites, ported, with a KUnit model and KTAP output.

Public API: :func:`run_kunit` (boot a kernel for a config and run the suites;
what ``kpkeys-sim kunit`` and ``kpkeys-sim run`` call), :class:`KunitResult`
(the KTAP text and the pass/fail/skip counts) and :func:`parse_ktap`.
The framework is :mod:`kpkeys_sim.kunit.framework`, the KTAP writer
:mod:`kpkeys_sim.kunit.ktap`, the suites :mod:`kpkeys_sim.kunit.hardened_pgtables`.
"""

from kpkeys_sim.kunit.framework import KunitResult
from kpkeys_sim.kunit.ktap import parse_ktap
from kpkeys_sim.kunit.runner import run_kunit, run_kunit_on

__all__ = ["KunitResult", "parse_ktap", "run_kunit", "run_kunit_on"]
