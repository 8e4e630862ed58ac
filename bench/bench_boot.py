"""Boot time and peak memory of the model kernel (``kernel/boot``), per configuration.

Run: ``.venv/bin/python bench/bench_boot.py [--only NAME]``.  Each configuration
boots in its own process, so the peak resident size (``ru_maxrss``) is that
boot's alone.  Prints one line per configuration: seconds, peak RSS (MiB),
linear-map leaves and table pages.  The targets (issue "The kernel memory
model"): a 64 GiB boot under 10 s and under 2 GiB resident.  Never used as a
test: timings depend on the host.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS: dict[str, dict[str, object]] = {
    "4k-block-4g": {"ram_size": 4 << 30},
    "4k-block-64g": {"ram_size": 64 << 30},
    "4k-pte-64g": {"ram_size": 64 << 30, "linear_map": "pte"},
    "16k-block-64g": {"ram_size": 64 << 30, "page_size": 16384},
    "64k-pte-64g": {"ram_size": 64 << 30, "page_size": 65536, "linear_map": "pte"},
}


def _one(name: str) -> dict[str, object]:
    """Boot configuration ``name`` in this process and measure it."""
    from kpkeys_sim.kernel.boot import boot
    from kpkeys_sim.kernel.config import KernelConfig
    from kpkeys_sim.kernel.mm.linear_map import linear_map_leaves

    cfg = KernelConfig(**CONFIGS[name])  # type: ignore[arg-type]
    t0 = time.perf_counter()
    k = boot(cfg)
    seconds = time.perf_counter() - t0
    leaves = linear_map_leaves(k)
    return {
        "name": name,
        "seconds": round(seconds, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "leaves": {kind: n for kind, n in leaves.items() if n},
    }


def main() -> None:
    """Boot every configuration (or ``--only``) in a child process and print the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(CONFIGS), help="one configuration")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_one(args.child)))
        return
    names = [args.only] if args.only else list(CONFIGS)
    for name in names:
        out = subprocess.run(
            [sys.executable, __file__, "--child", name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out)
        print(
            f"{r['name']:>14}: {r['seconds']:6.2f} s  peak RSS {r['peak_rss_mib']:7.1f} MiB  "
            f"{r['leaves']}"
        )


if __name__ == "__main__":
    main()
