"""Workloads: the series' benchmarks re-enacted on the model kernel.

Each workload drives the model only through kernel functions (the same
helpers the kernel uses: ``mmap``/fault/``fork``/``munmap``/``exit``,
``vmalloc``/``vfree``/``vm_map_ram``), so every event it causes is emitted
by the model; no workload emits an event itself.

* :mod:`~kpkeys_sim.workloads.micromm`: ``micromm/fork`` and
  ``micromm/munmap`` (David Hildenbrand's micro-benchmarks, spec
  kpkeys-series.md §6.2);
* :mod:`~kpkeys_sim.workloads.test_vmalloc`: ``lib/test_vmalloc.c``'s
  ``fix_size_alloc_test``, ``random_size_alloc_test`` and ``vm_map_ram_test``;
* :mod:`~kpkeys_sim.workloads.kernbench`: a kernbench-like mix of process
  lifecycles read from an editable TOML file.

A workload is a :class:`Workload`: a benchmark name, the parameter sets it
is run with, the default kernel data working set of the TLB-reach model, and
``run(k, counter, params, size, rng)`` which returns the event counts of the
measured part (the instrument is reset after setup, so populating a mapping
before a fork is not counted — as the benchmark times only the fork).

Iterations.  A benchmark that repeats one operation many times may run a
reduced number of iterations and scale, but only when the per-iteration
counts are constant: :func:`run_iterations` runs two equal probe windows
after a warm-up and extrapolates only if their counts are identical (every
event kind, counts and emissions); otherwise it runs every iteration.
Periodic workloads (``test_vmalloc``'s lazy purge) are not extrapolated;
they run whole periods (:func:`run_periods`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from kpkeys_sim.analysis.cost import CostInstrument, EventCounts

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel

__all__ = [
    "IterationReport",
    "RunCounts",
    "Size",
    "Workload",
    "measure",
    "run_all",
    "run_iterations",
    "run_periods",
]

#: Workload size: ``"small"`` for tests and quick looks, ``"full"`` for the published matrix.
Size = Literal["small", "full"]


@dataclass(frozen=True, slots=True)
class IterationReport:
    """How the iterations of a run were obtained."""

    requested: int
    executed: int
    extrapolated: bool
    warmup: int = 0
    probe: int = 0
    #: Result of the per-iteration constancy check (None: not checked).
    constant: bool | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "requested": self.requested,
            "executed": self.executed,
            "extrapolated": self.extrapolated,
            "warmup": self.warmup,
            "probe": self.probe,
            "constant": self.constant,
        }


@dataclass(frozen=True, slots=True)
class RunCounts:
    """What a workload run measured: the event counts and how the iterations were done."""

    events: EventCounts
    iterations: IterationReport
    notes: Mapping[str, object] = field(default_factory=dict)


class Workload(Protocol):
    """A benchmark re-enacted on the model."""

    #: Benchmark name as the series' tables write it (``"micromm/fork"``).
    name: str

    def param_sets(self, size: Size) -> list[dict[str, int]]:
        """The parameter sets the benchmark is reported with (``[{"h": 0}, {"h": 1}]``)."""

    def default_kernel_ws(self, params: Mapping[str, int], size: Size) -> int:
        """Default kernel data working set (bytes) of the TLB-reach model for these params."""

    def ram_size(self, params: Mapping[str, int], size: Size) -> int:
        """RAM (bytes) the simulated machine needs for this run."""

    def run(
        self,
        k: Kernel,
        counter: CostInstrument,
        params: Mapping[str, int],
        size: Size,
        rng: np.random.Generator,
        iterations: int | None = None,
    ) -> RunCounts:
        """Run on the booted kernel ``k``; ``counter`` is attached and counts everything.

        ``iterations`` overrides the size's iteration (or loop, or job) count.
        """


def measure(counter: CostInstrument, fn: Callable[[], object]) -> EventCounts:
    """The events ``fn()`` causes (the counter's difference across the call)."""
    c0 = dict(counter.counts)
    k0 = dict(counter.calls)
    fn()
    counts = {k: v - c0.get(k, 0) for k, v in counter.counts.items() if v != c0.get(k, 0)}
    calls = {k: v - k0.get(k, 0) for k, v in counter.calls.items() if v != k0.get(k, 0)}
    return EventCounts(counts, calls)


class _Acc:
    """A mutable sum of EventCounts (fast accumulation over many iterations)."""

    __slots__ = ("calls", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def add(self, e: EventCounts, times: int = 1) -> None:
        c = self.counts
        for k, v in e.counts.items():
            c[k] = c.get(k, 0) + v * times
        c = self.calls
        for k, v in e.calls.items():
            c[k] = c.get(k, 0) + v * times

    def freeze(self) -> EventCounts:
        return EventCounts(
            dict(sorted((k, v) for k, v in self.counts.items() if v)),
            dict(sorted((k, v) for k, v in self.calls.items() if v)),
        )


def run_all(step: Callable[[int], EventCounts], total: int) -> RunCounts:
    """Run every one of ``total`` iterations (no extrapolation)."""
    acc = _Acc()
    for i in range(total):
        acc.add(step(i))
    return RunCounts(acc.freeze(), IterationReport(total, total, False))


def _run_rest(
    step: Callable[[int], EventCounts], acc: _Acc, i: int, total: int, first: int, window: int
) -> RunCounts:
    """The check failed: run iterations ``i`` to ``total`` for real (nothing extrapolated)."""
    while i < total:
        acc.add(step(i))
        i += 1
    return RunCounts(acc.freeze(), IterationReport(total, total, False, first, window, False))


def run_iterations(
    step: Callable[[int], EventCounts],
    total: int,
    *,
    warmup: int = 2,
    probe: int = 8,
    period_marker: str | None = None,
) -> RunCounts:
    """Run ``step(i)`` (which returns the measured counts of iteration ``i``) ``total`` times.

    Iterations are skipped and extrapolated only when the counts of the
    iterations that did run show it is exact:

    * without ``period_marker``: after ``warmup`` iterations, two windows of
      ``probe`` iterations each are run (counts ``A`` then ``B``: the counts
      of ``n`` and ``2n`` iterations, compared per iteration); if ``B == A``
      for every event kind (summed counts and emissions), the rest is whole
      windows of ``A`` plus a remainder run for real;
    * with ``period_marker`` (an event kind that marks a periodic step, e.g.
      ``vmap_purge``): iterations run until the marker has fired in three
      iterations ``m1 < m2 < m3``; if the per-iteration counts of ``(m1, m2]``
      and ``(m2, m3]`` are identical, iteration by iteration, the process is
      taken as periodic with period ``m2 - m1`` and the rest is extrapolated
      from the period ``(m1, m2]`` (whole periods, then the period's first
      iterations).

    If the check fails, every iteration is run.  The check cannot see a
    change that first appears after the probed iterations; workloads use it
    only where the state provably repeats (each iteration undoes the last).
    """
    if period_marker is not None:
        return _run_periodic(step, total, period_marker)
    if total < warmup + 2 * probe:
        return run_all(step, total)
    acc = _Acc()
    i = 0
    for _ in range(warmup):
        acc.add(step(i))
        i += 1
    a = _Acc()
    for _ in range(probe):
        a.add(step(i))
        i += 1
    b = _Acc()
    for _ in range(probe):
        b.add(step(i))
        i += 1
    fa, fb = a.freeze(), b.freeze()
    acc.add(fa)
    acc.add(fb)
    if fb.key() != fa.key():
        return _run_rest(step, acc, i, total, warmup, probe)
    windows, rem = divmod(total - i, probe)
    for _ in range(rem):
        acc.add(step(i))
        i += 1
    acc.add(fa, windows)
    return RunCounts(acc.freeze(), IterationReport(total, i, windows > 0, warmup, probe, True))


def run_periods(
    step: Callable[[int], EventCounts], min_iters: int, marker: str, cap: int
) -> RunCounts:
    """Run whole periods of a periodic process: stop after a ``marker`` iteration.

    Iterations run until at least ``min_iters`` have run *and* the last one
    emitted ``marker`` (e.g. ``vmap_purge``, the lazy purge that closes a
    period of ``test_vmalloc``), or until ``cap`` iterations.  Nothing is
    extrapolated: the counts are those of the iterations that ran, which then
    contain whole periods, so their per-iteration mean has the steady-state
    rate of the periodic step.
    """
    acc = _Acc()
    marks = 0
    i = 0
    while i < cap:
        d = step(i)
        acc.add(d)
        i += 1
        if d.counts.get(marker, 0):
            marks += 1
            if i >= min_iters:
                break
    return RunCounts(acc.freeze(), IterationReport(i, i, False), {"periods": marks})


def _run_periodic(step: Callable[[int], EventCounts], total: int, marker: str) -> RunCounts:
    per: list[EventCounts] = []
    marks: list[int] = []
    acc = _Acc()
    i = 0
    while i < total and len(marks) < 3:
        d = step(i)
        per.append(d)
        acc.add(d)
        if d.counts.get(marker, 0):
            marks.append(i)
        i += 1
    if i == total:
        return RunCounts(acc.freeze(), IterationReport(total, total, False))
    m1, m2, m3 = marks
    period = m2 - m1
    a = per[m1 + 1 : m2 + 1]
    b = per[m2 + 1 : m3 + 1]
    if len(a) != len(b) or any(x.key() != y.key() for x, y in zip(a, b, strict=True)):
        return _run_rest(step, acc, i, total, m1 + 1, period)
    cycle = _Acc()
    for x in a:
        cycle.add(x)
    q, r = divmod(total - i, period)
    acc.add(cycle.freeze(), q)
    for x in a[:r]:
        acc.add(x)
    return RunCounts(acc.freeze(), IterationReport(total, i, True, m1 + 1, period, True))
