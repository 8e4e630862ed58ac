"""``micromm/fork`` and ``micromm/munmap`` (David Hildenbrand's mm micro-benchmarks).

Definition (spec kpkeys-series.md §6.2): a 1 GiB private anonymous mapping
is populated, then either forked or unmapped; ``h:0`` backs it with
page-sized folios, ``h:1`` with PMD-sized folios (``MADV_HUGEPAGE``), in
both cases mapped by PTEs.

Re-enactment on the model (every step is a kernel function of the model):

* setup (not measured): a user process (``create_user_task``, scheduled
  on CPU 0), ``do_mmap(1 GiB, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS)``,
  ``do_madvise(MADV_HUGEPAGE)`` for ``h:1``, ``mm_populate`` (the
  benchmark's memset / ``MADV_POPULATE_WRITE``);
* ``micromm/fork``, per iteration: ``kernel_clone`` (the measured fork),
  then the child runs and exits (``do_exit``) and the parent reaps it
  (``kernel_wait``).  Only the fork is measured: the benchmark times
  ``fork()`` in the parent, while the child's ``_exit`` and its page-table
  teardown run concurrently on another CPU [INF, documented in
  ``docs/model-assumptions.md``];
* ``micromm/munmap``, per iteration: map and populate (not measured), then
  ``do_munmap`` of the whole range (measured).

Iterations (``ITERATIONS``, overridable): each iteration leaves the state
as it found it (the child is gone, or the mapping is gone), so the
per-iteration counts are expected to be constant after a warm-up (the PBA's
cache fills during the first iteration in v6).  :func:`~kpkeys_sim.
workloads.run_iterations` checks it (two one-iteration windows after the
warm-up) and extrapolates only when their counts match exactly.  ``munmap``
is not extrapolated: each iteration needs a fresh 1 GiB populate (seconds of
host time), so the full size runs one iteration and the small size two,
checked equal (``tests/test_workloads.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from kpkeys_sim.analysis.cost import CostInstrument, EventCounts
from kpkeys_sim.workloads import RunCounts, Size, measure, run_iterations

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel
    from kpkeys_sim.kernel.mm.mm_types import mm_struct
    from kpkeys_sim.kernel.sched import task_struct

__all__ = [
    "ITERATIONS",
    "MAPPING_SIZE",
    "MICROMM_FORK",
    "MICROMM_MUNMAP",
    "MicrommFork",
    "MicrommMunmap",
]

GiB = 1 << 30
MiB = 1 << 20

#: Mapping size by workload size (full: the benchmark's 1 GiB).
MAPPING_SIZE: dict[str, int] = {"small": 8 * MiB, "full": GiB}
#: Iterations by workload size and benchmark (full: extrapolated when exact).
ITERATIONS: dict[str, dict[str, int]] = {
    "micromm/fork": {"small": 4, "full": 10},
    "micromm/munmap": {"small": 2, "full": 1},
}


def _setup_process(k: Kernel) -> tuple[task_struct, mm_struct]:
    """A user process ``micromm``, scheduled in; the task and its mm."""
    from kpkeys_sim.kernel.mm.fork import create_user_task
    from kpkeys_sim.kernel.sched import schedule_to

    p = create_user_task(k, "micromm")
    schedule_to(k, p)
    assert p.mm is not None
    return p, p.mm


def _map_populated(k: Kernel, mm: mm_struct, size: int, huge: bool) -> int:
    from kpkeys_sim.kernel.mm.mmap import (
        MADV_HUGEPAGE,
        MADV_NOHUGEPAGE,
        MAP_ANONYMOUS,
        MAP_PRIVATE,
        PROT_READ,
        PROT_WRITE,
        do_madvise,
        do_mmap,
        mm_populate,
    )

    addr = do_mmap(k, mm, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    if addr < 0:
        raise RuntimeError(f"micromm: mmap of {size} bytes failed ({addr})")
    if do_madvise(k, mm, addr, size, MADV_HUGEPAGE if huge else MADV_NOHUGEPAGE):
        raise RuntimeError("micromm: madvise failed")
    mm_populate(k, mm, addr, size)
    return addr


class _Micromm:
    name = ""

    def param_sets(self, size: Size) -> list[dict[str, int]]:
        """h:0 (page-sized folios) and h:1 (PMD-sized folios, PTE-mapped)."""
        return [{"h": 0}, {"h": 1}]

    def ram_size(self, params: Mapping[str, int], size: Size) -> int:
        """The mapping plus 1 GiB for page tables, the kernel and the allocators' slack."""
        return MAPPING_SIZE[size] + GiB if size == "full" else GiB

    def iterations(self, size: Size, override: int | None = None) -> int:
        """Iterations for ``size`` (or ``override``)."""
        return override if override is not None else ITERATIONS[self.name][size]


class MicrommFork(_Micromm):
    """``micromm/fork``: fork a process with a populated 1 GiB mapping; the child exits."""

    name = "micromm/fork"

    def default_kernel_ws(self, params: Mapping[str, int], size: Size) -> int:
        """The parent's and the child's page tables (2 x size/512) plus 1 MiB of other data."""
        return 2 * MAPPING_SIZE[size] // 512 + MiB

    def run(
        self,
        k: Kernel,
        counter: CostInstrument,
        params: Mapping[str, int],
        size: Size,
        rng: np.random.Generator,
        iterations: int | None = None,
    ) -> RunCounts:
        """Set up, then fork (measured) / child exit / reap, iteration after iteration."""
        from kpkeys_sim.kernel.mm.fork import do_exit, kernel_clone, kernel_wait
        from kpkeys_sim.kernel.sched import schedule_to

        parent, mm = _setup_process(k)
        _map_populated(k, mm, MAPPING_SIZE[size], bool(params["h"]))

        def step(i: int) -> EventCounts:
            box: list[task_struct] = []

            def fork() -> None:
                child = kernel_clone(k)
                if child is None:
                    raise RuntimeError("micromm/fork: fork failed")
                box.append(child)

            counts = measure(counter, fork)
            schedule_to(k, box[0])
            do_exit(k, 0, next_task=parent)
            if kernel_wait(k, parent, box[0].pid) is None:
                raise RuntimeError("micromm/fork: the child was not reaped")
            return counts

        counter.reset()
        return run_iterations(step, self.iterations(size, iterations), warmup=1, probe=1)


class MicrommMunmap(_Micromm):
    """``micromm/munmap``: unmap a populated 1 GiB mapping."""

    name = "micromm/munmap"

    def default_kernel_ws(self, params: Mapping[str, int], size: Size) -> int:
        """The mapping's page tables (size/512) plus 1 MiB of other data."""
        return MAPPING_SIZE[size] // 512 + MiB

    def run(
        self,
        k: Kernel,
        counter: CostInstrument,
        params: Mapping[str, int],
        size: Size,
        rng: np.random.Generator,
        iterations: int | None = None,
    ) -> RunCounts:
        """Per iteration: map and populate (not measured), then munmap (measured)."""
        from kpkeys_sim.kernel.mm.mmap import do_munmap

        _, mm = _setup_process(k)
        nbytes = MAPPING_SIZE[size]
        huge = bool(params["h"])

        def step(i: int) -> EventCounts:
            addr = _map_populated(k, mm, nbytes, huge)

            def unmap() -> None:
                if do_munmap(k, mm, addr, nbytes):
                    raise RuntimeError("micromm/munmap: munmap failed")

            return measure(counter, unmap)

        counter.reset()
        return run_iterations(step, self.iterations(size, iterations), warmup=0, probe=1)


MICROMM_FORK = MicrommFork()
MICROMM_MUNMAP = MicrommMunmap()
