"""Timings of the kernel/mm allocators: 64 GiB boot handover, page and slab churn.

Run: ``.venv/bin/python bench/bench_allocators.py [--ram-gib N] [--ops N]``.
Prints one line per measurement (seconds, and microseconds per operation).
Never used as a test: timings depend on the host.
"""

from __future__ import annotations

import argparse
import resource
import time

from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
from kpkeys_sim.kernel.mm.memblock import (
    Memblock,
    memblock_add,
    memblock_free_all,
    memblock_phys_alloc,
    memblock_reserve,
)
from kpkeys_sim.kernel.mm.page import MemMap
from kpkeys_sim.kernel.mm.page_alloc import BuddyAllocator, __free_pages, alloc_pages
from kpkeys_sim.kernel.mm.slab import SlabAllocator, kfree, kmalloc

BASE = 0x4000_0000


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Run every measurement and print the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ram-gib", type=int, default=64, help="simulated RAM (GiB)")
    parser.add_argument("--ops", type=int, default=100_000, help="alloc/free pairs per test")
    args = parser.parse_args()
    ram = args.ram_gib << 30
    nr = ram >> 12

    t0 = time.perf_counter()
    mm = MemMap(BASE >> 12, nr)
    t1 = time.perf_counter()
    zone = BuddyAllocator(mm)
    mb = Memblock()
    memblock_add(mb, BASE, ram)
    memblock_reserve(mb, BASE, 32 << 20)  # kernel image and initrd stand-in
    for _ in range(64):
        memblock_phys_alloc(mb, 4096, 4096)  # early page tables
    handed = memblock_free_all(mb, zone)
    t2 = time.perf_counter()
    print(f"MemMap({args.ram_gib} GiB, {nr} frames)      {t1 - t0:8.3f} s")
    print(f"memblock_free_all ({handed} pages) {t2 - t1:8.3f} s")
    print(f"boot total                          {t2 - t0:8.3f} s   max RSS {_rss_mib():.0f} MiB")

    n = args.ops
    t0 = time.perf_counter()
    pfns = [alloc_pages(zone, GFP_KERNEL, 0) for _ in range(n)]
    for pfn in pfns:
        assert pfn is not None
        __free_pages(zone, pfn, 0)
    dt = time.perf_counter() - t0
    print(f"{n} order-0 alloc+free            {dt:8.3f} s   {dt / n * 1e6:6.2f} us/pair")

    t0 = time.perf_counter()
    for i in range(n):
        order = i % 4
        pfn = alloc_pages(zone, GFP_KERNEL, order)
        assert pfn is not None
        __free_pages(zone, pfn, order)
    dt = time.perf_counter() - t0
    print(f"{n} order-0..3 alloc+free (LIFO)  {dt:8.3f} s   {dt / n * 1e6:6.2f} us/pair")

    slab = SlabAllocator(zone, nr_cpus=2)
    t0 = time.perf_counter()
    objs = [kmalloc(slab, 64 + (i % 7) * 100, GFP_KERNEL) for i in range(n)]
    for obj in objs:
        kfree(slab, obj)
    dt = time.perf_counter() - t0
    print(f"{n} kmalloc+kfree (64..664 B)     {dt:8.3f} s   {dt / n * 1e6:6.2f} us/pair")
    zone.check()
    slab.check()
    print(f"invariants checked; max RSS {_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
