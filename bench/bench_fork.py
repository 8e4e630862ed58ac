"""micromm fork on the model vs the real Linux kernel of this machine (spec §6.2).

Run: ``.venv/bin/python bench/bench_fork.py [--runs N] [--size-mib M] [--huge]``.

The workload (David Hildenbrand's micromm/fork, "h:0"): a process maps 1 GiB
of private anonymous memory (``MAP_PRIVATE|MAP_ANONYMOUS``,
``MADV_NOHUGEPAGE``: 4K folios, PTE-mapped) and writes one byte to every
page; the *timed* part is ``fork()`` + the child's ``_exit(0)`` + the parent's
``waitpid()``.  A shared mapping would not do: its page tables are not copied
at fork.

* Model: a booted model kernel; the parent populates the mapping with
  ``MAP_POPULATE``'s bulk path (untimed), then each run times
  ``kernel_clone`` → ``schedule_to(child)`` → ``do_exit`` → ``kernel_wait``.
* Real: a clean helper process (so the benchmark's own Python heap is not
  part of what ``fork()`` copies) maps and touches 1 GiB through a numpy view
  of an ``mmap.mmap``, then times ``os.fork()`` + ``os._exit(0)`` +
  ``os.waitpid`` on request.

Model and real runs alternate, so a change in host load affects both; each
side reports the median of ``--runs`` runs (at least 5).  The garbage
collector is disabled and no instrument is attached during each timed model
run; one extra untimed run counts the events.  Prints, per
configuration, one line like::

    fork 1GiB h:0 kpkeys=off: model=0.041s real=0.023s ratio=1.78

first with the feature off (``kpkeys_hardened_pgtables=False``), then with
the default configuration (v6, hardened page tables, lazy-MMU batching) when
the kpkeys hardened_pgtables module is importable.  ``--huge`` adds the
model-only "h:1" line (``MADV_HUGEPAGE``: PMD-sized folios, PTE-mapped).
Timings depend on the host; nothing here is a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys

from _common import boot_process, map_populated, print_events, size_name, timed
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.fork import do_exit, kernel_clone, kernel_wait
from kpkeys_sim.kernel.sched import schedule_to, task_struct
from kpkeys_sim.machine import CountingInstrument

_REAL_WORKER = r"""
import mmap, os, sys, time
import numpy as np
size = int(sys.argv[1])
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_NOHUGEPAGE)
view = np.frombuffer(m, dtype=np.uint8)
view[::4096] = 1
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "fork":
        break
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print(time.perf_counter() - t, flush=True)
"""


class RealFork:
    """A helper process holding the touched mapping; :meth:`once` times one fork+exit+wait."""

    def __init__(self, size: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _REAL_WORKER, str(size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the real-fork helper did not start")

    def once(self) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("fork\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()


def model_parent(
    cfg: KernelConfig, size: int, huge: bool
) -> tuple[Kernel, task_struct, CountingInstrument]:
    """Boot, create the parent, map and populate ``size`` bytes (untimed)."""
    k, parent, counter = boot_process(cfg)
    assert parent.mm is not None
    map_populated(k, parent.mm, size, huge)
    return k, parent, counter


def model_fork_once(k: Kernel, parent: task_struct) -> float:
    """Time fork + the child's exit + reaping on the model."""
    return timed(lambda: _fork_exit_wait(k, parent))


def _fork_exit_wait(k: Kernel, parent: task_struct) -> None:
    child = kernel_clone(k)
    assert child is not None
    schedule_to(k, child)
    do_exit(k)
    kernel_wait(k, parent, child.pid)


def measure(
    label: str,
    cfg: KernelConfig,
    size: int,
    runs: int,
    real: RealFork | None,
    huge: bool = False,
) -> None:
    """Alternate model and real runs and print the result line."""
    k, parent, counter = model_parent(cfg, size, huge)
    k.machine.instruments.remove(counter)  # timed runs carry no instrument
    model_fork_once(k, parent)  # warm-up (first-touch of numpy buffers, caches)
    if real is not None:
        real.once()
    model_t: list[float] = []
    real_t: list[float] = []
    for _ in range(runs):
        model_t.append(model_fork_once(k, parent))
        if real is not None:
            real_t.append(real.once())
    m = statistics.median(model_t)
    line = f"fork {size_name(size)} {label}: model={m:.3f}s"
    if real_t:
        r = statistics.median(real_t)
        line += f" real={r:.3f}s ratio={m / r:.2f}"
    print(line, flush=True)
    # One more run, counted.
    print_events(
        k,
        counter,
        lambda: _fork_exit_wait(k, parent),
        "fork+exit",
        (
            "pgtable_alloc",
            "copy_pte",
            "zap_pte",
            "pkey_reg_write",
            "isb",
            "tlbi_asid",
            "lazy_mmu_section",
        ),
    )


def main() -> None:
    """Run the configurations and print one line each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs per side (at least 5)")
    ap.add_argument("--size-mib", type=int, default=1024, help="mapping size in MiB")
    ap.add_argument("--huge", action="store_true", help="also run the model-only h:1 case")
    args = ap.parse_args()
    runs = max(5, args.runs)
    size = args.size_mib << 20
    ram = max(2 << 30, (size * 2 + (512 << 20)) & ~((2 << 20) - 1))
    real = RealFork(size)
    try:
        off = KernelConfig(ram_size=ram, kpkeys_hardened_pgtables=False)
        measure("h:0 kpkeys=off", off, size, runs, real)
        if importlib.util.find_spec("kpkeys_sim.kernel.kpkeys.hardened_pgtables") is not None:
            on = KernelConfig(ram_size=ram)
            measure(f"h:0 kpkeys=on({on.series})", on, size, runs, real)
        if args.huge:
            measure("h:1 kpkeys=off", off, size, runs, None, huge=True)
    finally:
        real.close()


if __name__ == "__main__":
    main()
