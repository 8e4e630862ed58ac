"""``lib/test_vmalloc.c`` (Uladzislau Rezki's test module), the tests the series reports.

Definitions (spec kpkeys-series.md §6.2, "micromm/vmalloc"; module
parameters ``nr_pages`` = ``p``, ``use_huge`` = ``h``, ``test_loop_count``):

* ``fix_size_alloc_test``: each iteration ``vmalloc(p * PAGE_SIZE)`` (or
  ``vmalloc_huge(p * PAGE_SIZE, GFP_KERNEL)`` when ``h``; ``p = 0`` means 1
  page), writes one byte at the start of the area, and ``vfree``\\ s it.
* ``random_size_alloc_test``: each iteration ``vmalloc`` of a uniformly
  random number of pages in ``[1, 100]``, one byte written, ``vfree``.  ``p``
  and ``h`` do not affect it (its label ``p:1 h:0`` is nominal).
* ``vm_map_ram_test``: ``max(p, 1)`` pages are allocated once (bulk, not
  timed); each iteration ``vm_map_ram``\\ s them, writes one byte through the
  mapping and ``vm_unmap_ram``\\ s it.

The byte is written by a checked kernel store on the executing CPU
(``Machine.store_bytes``), so its TLB miss and walk are the model's.  The
test runs in a kernel thread; the model runs it in the context of the task
current on CPU 0 after boot.

Iterations.  The module's default ``test_loop_count`` is 1,000,000; the
model cannot run that many and the per-iteration counts are *not* constant,
so nothing is extrapolated.  vmalloc frees lazily: every
``lazy_max_pages()`` pages freed (64 MiB with the model's 2 CPUs), a lazy
purge returns the areas and flushes the kernel TLB once, so the counts are
periodic.  The full size therefore runs at least :data:`MIN_ITERS` iterations
and then up to the end of a purge period
(:func:`~kpkeys_sim.workloads.run_periods`; an explicit ``iterations``
runs exactly that many loops, as ``test_loop_count`` does): the run holds whole periods
and its per-iteration mean has the purge rate of a long run.  The one-off
cost of the first period (allocating the vmalloc page tables, which are
never freed) is amortised over fewer iterations than in a 1,000,000-loop run
— a small upward bias of both the baseline and the configuration, reported
in each row's iteration count.  ``random_size_alloc_test`` draws a new size
every iteration; it runs :data:`RANDOM_LOOPS` iterations (the overhead is a
ratio of sums over the same random sizes in both runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from kpkeys_sim.analysis.cost import CostInstrument, EventCounts
from kpkeys_sim.workloads import RunCounts, Size, measure, run_all, run_periods

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel

__all__ = [
    "CAP_FACTOR",
    "FIX_SIZE_ALLOC_TEST",
    "MIN_ITERS",
    "RANDOM_LOOPS",
    "RANDOM_SIZE_ALLOC_TEST",
    "VM_MAP_RAM_TEST",
    "FixSizeAllocTest",
    "RandomSizeAllocTest",
    "VmMapRamTest",
]

GiB = 1 << 30
MiB = 1 << 20

#: Minimum iterations by size and ``nr_pages`` (then up to the end of a purge period).
MIN_ITERS: dict[str, dict[int, int]] = {
    "small": {1: 50, 4: 50, 16: 50, 64: 50, 256: 20},
    "full": {1: 2000, 4: 2000, 16: 2000, 64: 1000, 256: 300},
}
#: At most this many times MIN_ITERS when no purge comes.
CAP_FACTOR = 12
#: ``test_loop_count`` of ``random_size_alloc_test``.
RANDOM_LOOPS: dict[str, int] = {"small": 30, "full": 1000}

#: The event that closes a period: the lazy purge (one TLB flush per purge).
_PERIOD_MARKER = "vmap_purge"


def _store_byte(k: Kernel, addr: int, value: int) -> None:
    """``*((u8 *)addr) = value``: a checked kernel store on the executing CPU."""
    k.machine.store_bytes(k.cpu, addr, bytes([value]))


def _nr_pages(params: Mapping[str, int]) -> int:
    """``nr_pages``, where ``p = 0`` means 1 page."""
    return params["p"] if params["p"] > 0 else 1


def _run_periods_of(
    counter: CostInstrument,
    once: Callable[[], None],
    size: Size,
    nr: int,
    iterations: int | None,
) -> RunCounts:
    """Measure ``once()`` per iteration: ``iterations`` exactly, else whole purge periods."""

    def step(i: int) -> EventCounts:
        return measure(counter, once)

    counter.reset()
    if iterations is not None:
        return run_all(step, iterations)
    table = MIN_ITERS[size]
    n = table.get(nr, min(table.values()))
    return run_periods(step, n, _PERIOD_MARKER, n * CAP_FACTOR)


class _VmallocTest:
    name = ""

    def default_kernel_ws(self, params: Mapping[str, int], size: Size) -> int:
        """Kernel data working set: the vmalloc PTE tables in use plus the vmap bookkeeping.

        The lazy purge lets up to ``lazy_max_pages()`` (64 MiB with 2 CPUs) of
        freed VA accumulate, all mapped through PTE tables of the kernel; their
        page-table pages (1/512 of the span) plus ~1 MiB of vmap_area/vm_struct
        and slab objects are the hot set: 1 MiB + 128 KiB.
        """
        return MiB + 128 * 1024

    def ram_size(self, params: Mapping[str, int], size: Size) -> int:
        """1 GiB is plenty for areas of at most 256 pages."""
        return GiB


class FixSizeAllocTest(_VmallocTest):
    """``fix_size_alloc_test``: vmalloc / write one byte / vfree of ``p`` pages."""

    name = "test_vmalloc/fix_size_alloc_test"

    def param_sets(self, size: Size) -> list[dict[str, int]]:
        """The posted variants: p in {1, 4, 16, 64, 256} with h:0, p in {16, 64, 256} with h:1."""
        return [{"p": p, "h": 0} for p in (1, 4, 16, 64, 256)] + [
            {"p": p, "h": 1} for p in (16, 64, 256)
        ]

    def run(
        self,
        k: Kernel,
        counter: CostInstrument,
        params: Mapping[str, int],
        size: Size,
        rng: np.random.Generator,
        iterations: int | None = None,
    ) -> RunCounts:
        """Run ``test_loop_count`` iterations (extrapolated per period when exact)."""
        from kpkeys_sim.kernel.mm.vmalloc import vfree, vmalloc, vmalloc_huge

        nr = _nr_pages(params)
        nbytes = nr * k.pgt.PAGE_SIZE
        huge = bool(params["h"])

        def once() -> None:
            ptr = vmalloc_huge(k, nbytes) if huge else vmalloc(k, nbytes)
            if not ptr:
                raise RuntimeError(f"{self.name}: vmalloc({nbytes}) failed")
            _store_byte(k, ptr, 0)
            vfree(k, ptr)

        return _run_periods_of(counter, once, size, nr, iterations)


class RandomSizeAllocTest(_VmallocTest):
    """``random_size_alloc_test``: vmalloc of 1..100 random pages / write / vfree."""

    name = "test_vmalloc/random_size_alloc_test"

    def param_sets(self, size: Size) -> list[dict[str, int]]:
        """The posted (nominal) label p:1 h:0."""
        return [{"p": 1, "h": 0}]

    def run(
        self,
        k: Kernel,
        counter: CostInstrument,
        params: Mapping[str, int],
        size: Size,
        rng: np.random.Generator,
        iterations: int | None = None,
    ) -> RunCounts:
        """Run every iteration; sizes are ``get_random_u32_inclusive(1, 100)`` from ``rng``."""
        from kpkeys_sim.kernel.mm.vmalloc import vfree, vmalloc

        loops = iterations if iterations is not None else RANDOM_LOOPS[size]
        sizes = rng.integers(1, 101, size=loops)
        page = k.pgt.PAGE_SIZE

        def step(i: int) -> EventCounts:
            def once() -> None:
                ptr = vmalloc(k, int(sizes[i]) * page)
                if not ptr:
                    raise RuntimeError(f"{self.name}: vmalloc failed")
                _store_byte(k, ptr, 1)
                vfree(k, ptr)

            return measure(counter, once)

        counter.reset()
        return run_all(step, loops)


class VmMapRamTest(_VmallocTest):
    """``vm_map_ram_test``: vm_map_ram / write one byte / vm_unmap_ram of ``p`` bulk pages."""

    name = "test_vmalloc/vm_map_ram_test"

    def param_sets(self, size: Size) -> list[dict[str, int]]:
        """The posted variant p:1 h:0."""
        return [{"p": 1, "h": 0}]

    def run(
        self,
        k: Kernel,
        counter: CostInstrument,
        params: Mapping[str, int],
        size: Size,
        rng: np.random.Generator,
        iterations: int | None = None,
    ) -> RunCounts:
        """Allocate the pages (not measured), then map / write one byte / unmap, repeatedly."""
        from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
        from kpkeys_sim.kernel.mm.page_alloc import alloc_pages
        from kpkeys_sim.kernel.mm.vmalloc import vm_map_ram, vm_unmap_ram

        nr = _nr_pages(params)
        zone = k.zone
        if zone is None:
            raise RuntimeError("vm_map_ram_test: the kernel has no page allocator")
        pages: list[int] = []
        for _ in range(nr):
            pfn = alloc_pages(zone, GFP_KERNEL, 0)
            if pfn is None:
                raise RuntimeError("vm_map_ram_test: page allocation failed")
            pages.append(pfn)

        def once() -> None:
            ptr = vm_map_ram(k, pages, nr)
            if not ptr:
                raise RuntimeError("vm_map_ram_test: vm_map_ram failed")
            _store_byte(k, ptr, ord("a"))
            vm_unmap_ram(k, ptr, nr)

        return _run_periods_of(counter, once, size, nr, iterations)


FIX_SIZE_ALLOC_TEST = FixSizeAllocTest()
RANDOM_SIZE_ALLOC_TEST = RandomSizeAllocTest()
VM_MAP_RAM_TEST = VmMapRamTest()
