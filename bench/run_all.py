"""Run every benchmark script under ``bench/`` and print their outputs (``make bench``).

Each ``bench/bench_*.py`` present is run as a subprocess with the project's
virtualenv Python (``.venv/bin/python``, else the running interpreter), in
name order, and its output is printed under a header with its exit status and
wall time; ``bench_series_v5.py`` is among them (the series-v5 matrix wall
time, target < 60 s).  A summary table closes the run.  The exit status is
non-zero if any script failed.  Timings depend on the host: nothing here is
a test.

Usage: ``python bench/run_all.py [--only SUBSTRING ...] [--list] [--timeout SECONDS]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def main() -> int:
    """Run the scripts; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SUBSTRING",
        help="run only scripts whose name contains SUBSTRING (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list the scripts and exit")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="per-script timeout in seconds (default 1800)"
    )
    args = parser.parse_args()
    scripts = sorted(p for p in BENCH.glob("bench_*.py") if p.is_file())
    if args.only:
        scripts = [p for p in scripts if any(s in p.name for s in args.only)]
    if args.list:
        for p in scripts:
            print(p.name)
        return 0
    py = _python()
    summary: list[tuple[str, str, float]] = []
    for p in scripts:
        print(f"=== {p.name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [py, str(p)], cwd=ROOT, capture_output=True, text=True, timeout=args.timeout
            )
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
            out, err = proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            status = f"timeout after {args.timeout:.0f} s"
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        dt = time.perf_counter() - t0
        sys.stdout.write(out)
        if err.strip():
            sys.stdout.write("--- stderr ---\n" + err)
        print(f"--- {p.name}: {status}, {dt:.1f} s ---\n", flush=True)
        summary.append((p.name, status, dt))
    print("=== summary ===")
    width = max([len(n) for n, _, _ in summary] + [6])
    for name, status, dt in summary:
        print(f"{name:<{width}}  {dt:8.1f} s  {status}")
    return 0 if all(s == "ok" for _, s, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
