"""Wall time of the whole series-v5 matrix on the model (target: under 60 s).

Runs ``kpkeys-sim bench --suite series-v5`` in-process (full size, the
target's default worker count) and prints the comparison table, the wall
time, the CPU time of the worker processes and the per-run wall times.
Timings depend on the host and its load: nothing here is a test.

Usage: ``python bench/bench_series_v5.py [--size small|full] [--jobs N] [--arch TARGET]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from kpkeys_sim.analysis.bench import format_table, run_suite

TARGET_S = 60.0


def _cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    """Run the matrix once and print the table and the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--arch", default="arm64-poe")
    args = parser.parse_args()
    size = "small" if args.size == "small" else "full"
    c0 = _cpu_s()
    t0 = time.perf_counter()
    res = run_suite("series-v5", None, args.arch, 0, size, jobs=args.jobs)
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - c0
    print(format_table(res))
    print()
    runs = {}
    for r in res.rows:
        for rec in (r.run, r.base):
            runs[(r.bench.label, rec.config)] = rec.wall_s
    slow = sorted(runs.items(), key=lambda kv: -kv[1])[:5]
    print(
        "slowest runs: "
        + "; ".join(
            f"{b} [{'on' if c.kpkeys_hardened_pgtables else 'off'}, {c.series}] {s:.1f} s"
            for (b, c), s in slow
        )
    )
    verdict = "under" if wall < TARGET_S else "OVER"
    print(
        f"series-v5 matrix ({size}, {args.jobs} jobs, {len(runs)} kernel runs): "
        f"wall {wall:.1f} s ({verdict} the {TARGET_S:.0f} s target), CPU {cpu:.1f} s"
    )


if __name__ == "__main__":
    main()
