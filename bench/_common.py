"""Helpers shared by the micromm benchmark scripts (``bench_fork.py``, ``bench_munmap.py``).

The scripts run as ``python bench/bench_*.py``, so this directory is on
``sys.path`` and they import this module as ``_common``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence

from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.fork import create_user_task
from kpkeys_sim.kernel.mm.memory import user_mm_init
from kpkeys_sim.kernel.mm.mm_types import mm_struct
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
from kpkeys_sim.kernel.sched import schedule_to, task_struct
from kpkeys_sim.machine import CountingInstrument


def boot_process(cfg: KernelConfig) -> tuple[Kernel, task_struct, CountingInstrument]:
    """Boot with a counting instrument and schedule a user process ``micromm``."""
    counter = CountingInstrument()
    k = boot(cfg, instruments=[counter])
    user_mm_init(k)
    p = create_user_task(k, "micromm")
    schedule_to(k, p)
    return k, p, counter


def map_populated(k: Kernel, mm: mm_struct, size: int, huge: bool) -> int:
    """Map ``size`` bytes private anonymous, ``MADV_(NO)HUGEPAGE``, and populate them."""
    addr = do_mmap(k, mm, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    if addr < 0:
        raise RuntimeError(f"mmap failed: {addr}")
    do_madvise(k, mm, addr, size, MADV_HUGEPAGE if huge else MADV_NOHUGEPAGE)
    if mm_populate(k, mm, addr, size):
        raise RuntimeError("populate failed")
    return addr


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes, with the garbage collector collected and then disabled."""
    gc.collect()
    gc.disable()
    try:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    finally:
        gc.enable()


def size_name(size: int) -> str:
    """``1GiB``, ``1.5GiB`` or ``512MiB``."""
    return f"{size / (1 << 30):g}GiB" if size >= 1 << 30 else f"{size >> 20}MiB"


def print_events(
    k: Kernel,
    counter: CountingInstrument,
    fn: Callable[[], object],
    what: str,
    kinds: Sequence[str],
) -> None:
    """Attach ``counter``, run ``fn()`` once (timed as the measured runs) and print its events."""
    k.machine.instruments.add(counter)
    before = dict(counter.counts)
    timed(fn)
    events = " ".join(f"{kind}={counter.counts[kind] - before.get(kind, 0)}" for kind in kinds)
    print(f"  events per {what}: {events}", flush=True)
