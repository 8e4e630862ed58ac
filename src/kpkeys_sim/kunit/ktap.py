"""KTAP version 1 output, exactly as the kernel's KUnit prints it, and a parser for it.

Reference: ``lib/kunit/test.c`` and ``lib/kunit/executor.c`` (Linux 6.6+; the
format has been stable since 6.2), ``lib/kunit/assert.c`` for the
expectation diagnostics, ``lib/kunit/attributes.c`` for the ``# module:``
line, and ``Documentation/dev-tools/ktap.rst``.  What the kernel prints for
a run of built-in suites:

* the executor (``kunit_exec_run_tests``): ``KTAP version 1`` then the plan
  ``1..N`` over the *suites*;
* per suite (``kunit_print_suite_start``), indented by
  ``KUNIT_SUBTEST_INDENT`` (4 spaces): ``KTAP version 1``, ``# Subtest:
  <suite>``, the suite attributes (``kunit_print_attr``: ``# module: <name>``,
  the ``KBUILD_MODNAME`` of the file defining the cases; ``speed`` and
  ``is_init`` print nothing when unset/false), then the plan ``1..M`` over the
  cases;
* per case: whatever the case logged while it ran (``kunit_err`` lines are
  ``    # <case>: <text>``; a multi-line message keeps its embedded
  newlines, so the continuation lines carry no prefix), then
  ``    ok <n> <case>`` / ``    not ok <n> <case>``; a skipped case is ``ok``
  with the directive ``" # SKIP " + status_comment``
  (``kunit_print_ok_not_ok``);
* after the cases (``kunit_print_suite_stats``), at column 0 and only when the
  suite has more than one case (``kunit_stats_enabled == 1``):
  ``# <suite>: pass:P fail:F skip:S total:T`` and
  ``# Totals: pass:P fail:F skip:S total:T`` (the second counts parameterised
  runs; the model has none, so both carry the same numbers);
* the suite's result at column 0: ``ok <i> <suite>`` / ``not ok <i> <suite>``;
  a suite whose cases were all skipped is ``ok`` with the SKIP directive and
  the suite's (empty) status comment, hence a trailing space:
  ``ok 1 <suite> # SKIP `` (``kunit_suite_has_succeeded`` returns
  ``KUNIT_SKIPPED``).

Lines end with ``\\n``; the model prints no printk timestamps or log levels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "KUNIT_INDENT_LEN",
    "KUNIT_SUBSUBTEST_INDENT",
    "KUNIT_SUBTEST_INDENT",
    "KtapCase",
    "KtapSuite",
    "KunitStatus",
    "ktap_case_line",
    "ktap_header",
    "ktap_stats_lines",
    "ktap_suite_end",
    "ktap_suite_start",
    "parse_ktap",
]

KUNIT_INDENT_LEN = 4
KUNIT_SUBTEST_INDENT = " " * KUNIT_INDENT_LEN
KUNIT_SUBSUBTEST_INDENT = " " * (2 * KUNIT_INDENT_LEN)


class KunitStatus(Enum):
    """``enum kunit_status``."""

    KUNIT_SUCCESS = "ok"
    KUNIT_FAILURE = "not ok"
    KUNIT_SKIPPED = "skip"


def _ok_not_ok(status: KunitStatus) -> str:
    """``kunit_status_to_ok_not_ok``: SUCCESS and SKIPPED print ``ok``."""
    return "not ok" if status is KunitStatus.KUNIT_FAILURE else "ok"


def _result_line(status: KunitStatus, number: int, name: str, directive: str) -> str:
    """``kunit_print_ok_not_ok`` without the indentation."""
    header = " # SKIP " if status is KunitStatus.KUNIT_SKIPPED else ""
    body = directive if status is KunitStatus.KUNIT_SKIPPED else ""
    return f"{_ok_not_ok(status)} {number} {name}{header}{body}"


def ktap_header(nr_suites: int) -> list[str]:
    """The executor's header: ``KTAP version 1`` and the plan over the suites."""
    return ["KTAP version 1", f"1..{nr_suites}"]


def ktap_suite_start(name: str, module: str | None, nr_cases: int) -> list[str]:
    """``kunit_print_suite_start`` plus the suite's ``# module:`` attribute."""
    lines = [f"{KUNIT_SUBTEST_INDENT}KTAP version 1", f"{KUNIT_SUBTEST_INDENT}# Subtest: {name}"]
    if module:
        lines.append(f"{KUNIT_SUBTEST_INDENT}# module: {module}")
    lines.append(f"{KUNIT_SUBTEST_INDENT}1..{nr_cases}")
    return lines


def ktap_case_line(status: KunitStatus, number: int, name: str, status_comment: str) -> str:
    """The result line of case ``number`` (level 1, 4-space indent)."""
    return KUNIT_SUBTEST_INDENT + _result_line(status, number, name, status_comment)


def ktap_stats_lines(name: str, passed: int, failed: int, skipped: int) -> list[str]:
    """``kunit_print_suite_stats``: printed only when the suite has more than one case."""
    total = passed + failed + skipped
    if total <= 1:
        return []
    counts = f"pass:{passed} fail:{failed} skip:{skipped} total:{total}"
    return [f"# {name}: {counts}", f"# Totals: {counts}"]


def ktap_suite_end(status: KunitStatus, number: int, name: str, status_comment: str = "") -> str:
    """``kunit_print_suite_end``: the suite's result line at level 0."""
    return _result_line(status, number, name, status_comment)


# --- parsing (what tools/testing/kunit/kunit_parser.py extracts) ------------------------


@dataclass(frozen=True, slots=True)
class KtapCase:
    """One parsed case result: its number, name, status and SKIP reason."""

    number: int
    name: str
    status: KunitStatus
    directive: str = ""


@dataclass(slots=True)
class KtapSuite:
    """One parsed suite: its result and its cases' results."""

    number: int
    name: str
    status: KunitStatus
    module: str | None = None
    cases: list[KtapCase] = field(default_factory=list)

    def case(self, name: str) -> KtapCase:
        """The result of case ``name`` (``KeyError`` naming it if absent)."""
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(f"no case {name!r} in suite {self.name!r}")


_RESULT_RE = re.compile(r"^(not ok|ok) (\d+) (.*?)(?: # SKIP ?(.*))?$")


def _parse_result(text: str) -> tuple[KunitStatus, int, str, str] | None:
    m = _RESULT_RE.match(text)
    if m is None:
        return None
    ok, number, name, skip = m.groups()
    if ok == "not ok":
        status = KunitStatus.KUNIT_FAILURE
    elif skip is not None:
        status = KunitStatus.KUNIT_SKIPPED
    else:
        status = KunitStatus.KUNIT_SUCCESS
    return status, int(number), name, skip or ""


def parse_ktap(text: str) -> list[KtapSuite]:
    """Parse KUnit KTAP output into suites and cases (raises ``ValueError`` if malformed).

    Accepts what :mod:`kpkeys_sim.kunit.framework` prints (and the kernel's
    output without printk prefixes): top-level ``KTAP version 1`` and plan,
    nested suites indented by 4 spaces, diagnostics lines are skipped.
    """
    lines = text.splitlines()
    if not lines or lines[0] != "KTAP version 1":
        raise ValueError("KTAP output must start with 'KTAP version 1'")
    suites: list[KtapSuite] = []
    pending: KtapSuite | None = None
    for lineno, line in enumerate(lines[1:], start=2):
        if line.startswith(KUNIT_SUBTEST_INDENT):
            inner = line[KUNIT_INDENT_LEN:]
            if inner.startswith("# Subtest: "):
                pending = KtapSuite(0, inner[len("# Subtest: ") :], KunitStatus.KUNIT_SKIPPED)
            elif inner.startswith("# module: ") and pending is not None:
                pending.module = inner[len("# module: ") :]
            elif pending is not None and (res := _parse_result(inner)) is not None:
                status, number, name, directive = res
                pending.cases.append(KtapCase(number, name, status, directive))
            continue
        res = _parse_result(line)
        if res is None:
            continue  # plan, stats and unindented diagnostic continuation lines
        status, number, name, _directive = res
        if pending is None or pending.name != name:
            raise ValueError(f"line {lineno}: result of suite {name!r} without its subtest header")
        pending.status = status
        pending.number = number
        suites.append(pending)
        pending = None
    return suites
