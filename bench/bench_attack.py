"""Benchmark: 10,000 trials of S1 under every defense (the issue's target: under 60 s).

Run: ``.venv/bin/python bench/bench_attack.py [--trials N] [--jobs J]``.
Prints one line per defense (trials/s of its cell) and the total wall time.
Each cell boots one kernel per chunk of trials, runs the scenario's shared
preparation and trial prefix once, and restores a snapshot before each
trial (``kpkeys_sim.security.snapshot``).
"""

from __future__ import annotations

import argparse
import os
import time

from kpkeys_sim.security import defense_names, run_campaign


def main() -> None:
    """Time the S1 campaign and print the result."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    defenses = defense_names()
    t0 = time.perf_counter()
    res = run_campaign(["S1"], defenses, args.trials, args.seed, jobs=args.jobs)
    wall = time.perf_counter() - t0
    total = args.trials * len(defenses)
    for c in res.cells:
        print(
            f"{c.defense:16s} S {c.succeeded:6d}  P {c.prevented:6d}  D {c.detected:6d}  "
            f"F {c.failed:6d}"
        )
    print(
        f"S1: {total} trials ({args.trials} x {len(defenses)} defenses) in {wall:.1f} s "
        f"on {args.jobs} worker(s): {total / wall:.0f} trials/s"
    )


if __name__ == "__main__":
    main()
