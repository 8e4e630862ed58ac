"""micromm munmap on the model (spec §6.2): unmap a populated 1 GiB private anonymous mapping.

Run: ``.venv/bin/python bench/bench_munmap.py [--runs N] [--size-mib M]``.

Each run maps ``--size-mib`` of private anonymous memory in a model process,
populates it (untimed; h:0 = 4K folios, h:1 = ``MADV_HUGEPAGE`` PMD-sized
folios, PTE-mapped in both cases), then times ``do_munmap`` of the whole
range: the zap (lazy MMU section per PTE table), ``free_pgtables``, and the
``tlb_finish_mmu`` flush plus the freeing of every page and table.  Prints
the median of ``--runs`` runs (at least 5) per configuration, e.g.::

    munmap 1GiB h:0 kpkeys=off: model=0.030s

with the feature off, then with the default configuration (hardened page
tables, v6) when its module is importable, and the events of one run.  The
garbage collector is disabled and no instrument is attached while timing.
Model only: the real kernel's munmap is not measured here.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from functools import partial

from _common import boot_process, map_populated, print_events, size_name, timed
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.mm_types import mm_struct
from kpkeys_sim.kernel.mm.mmap import do_munmap


def _munmap(k: Kernel, mm: mm_struct, addr: int, size: int) -> None:
    if do_munmap(k, mm, addr, size):
        raise RuntimeError("munmap failed")


def measure(label: str, cfg: KernelConfig, size: int, runs: int, huge: bool) -> None:
    """Time ``runs`` munmaps of a freshly populated mapping and print the median."""
    k, p, counter = boot_process(cfg)
    mm = p.mm
    assert mm is not None
    k.machine.instruments.remove(counter)
    times = []
    for _ in range(runs):
        addr = map_populated(k, mm, size, huge)
        times.append(timed(partial(_munmap, k, mm, addr, size)))
    print(f"munmap {size_name(size)} {label}: model={statistics.median(times):.3f}s", flush=True)
    addr = map_populated(k, mm, size, huge)
    print_events(
        k,
        counter,
        partial(_munmap, k, mm, addr, size),
        "munmap",
        (
            "zap_pte",
            "pgtable_free",
            "page_free",
            "pkey_reg_write",
            "isb",
            "tlbi_asid",
            "lazy_mmu_section",
        ),
    )


def main() -> None:
    """Run the configurations and print one line each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs (at least 5)")
    ap.add_argument("--size-mib", type=int, default=1024, help="mapping size in MiB")
    args = ap.parse_args()
    runs = max(5, args.runs)
    size = args.size_mib << 20
    ram = max(2 << 30, (size + (1 << 30)) & ~((2 << 20) - 1))
    configs = [("kpkeys=off", KernelConfig(ram_size=ram, kpkeys_hardened_pgtables=False))]
    if importlib.util.find_spec("kpkeys_sim.kernel.kpkeys.hardened_pgtables") is not None:
        on = KernelConfig(ram_size=ram)
        configs.append((f"kpkeys=on({on.series})", on))
    for label, cfg in configs:
        for huge in (False, True):
            measure(f"h:{int(huge)} {label}", cfg, size, runs, huge)


if __name__ == "__main__":
    main()
