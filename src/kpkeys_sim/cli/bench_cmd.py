"""``kpkeys-sim bench``: the benchmark matrix, priced by the cost model."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from kpkeys_sim.analysis.bench import (
    SUITES,
    format_table,
    resolve_benchmarks,
    resolve_config,
    run_matrix,
    sensitivity,
)
from kpkeys_sim.analysis.calibration import get_calibration
from kpkeys_sim.errors import ToolError
from kpkeys_sim.workloads import Size

__all__ = ["bench"]


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task("bench", total=None)

        def update(done: int, total: int, desc: str) -> None:
            prog.update(task, completed=done, total=total, description=desc)

        yield update


@click.command()
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    metavar="NAME",
    help="Benchmark to run (repeatable), e.g. micromm/fork; default: the suite's.",
)
@click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="NAME|FILE",
    help="Configuration name or KernelConfig TOML file (repeatable).",
)
@click.option(
    "--suite",
    default=None,
    metavar="NAME",
    help=f"Named suite: {', '.join(SUITES)} (default series-v5 without --workload).",
)
@click.option(
    "--arch",
    "target",
    default="arm64-poe",
    show_default=True,
    metavar="TARGET",
    help="Target CPU: arm64-poe or x86-pks.",
)
@click.option(
    "--size",
    type=click.Choice(["small", "full"]),
    default="full",
    show_default=True,
    help="Workload size.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option(
    "--kernel-ws",
    type=int,
    default=None,
    metavar="BYTES",
    help="Kernel data working set of the TLB-reach model (default: per workload).",
)
@click.option("--mix", default=None, metavar="FILE", help="kernbench mix file (TOML).")
@click.option(
    "--iterations",
    type=int,
    default=None,
    metavar="N",
    help="Override the workloads' iteration / loop / job count.",
)
@click.option(
    "--jobs",
    type=int,
    default=None,
    metavar="N",
    help="Worker processes (default: the CPU count; results do not depend on it).",
)
@click.option(
    "--sensitivity",
    "do_sens",
    is_flag=True,
    help="Scale each calibration constant x0.5 and x2 and report what changes.",
)
@click.option("--json", "as_json", is_flag=True, help="Write the results as JSON to stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Show the event counts behind each overhead.")
def bench(
    workloads: tuple[str, ...],
    configs: tuple[str, ...],
    suite: str | None,
    target: str,
    size: str,
    seed: int,
    kernel_ws: int | None,
    mix: str | None,
    iterations: int | None,
    jobs: int | None,
    do_sens: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    """Run benchmarks under configurations and print an mmtests-style comparison.

    Each configuration's overhead is against the same kernel with
    CONFIG_KPKEYS_HARDENED_PGTABLES off, priced by the target's calibration
    table.  `--suite series-v5` is the series' v5 benchmark matrix.
    """
    get_calibration(target)
    if kernel_ws is not None and kernel_ws <= 0:
        raise ToolError(f"bad --kernel-ws {kernel_ws}: must be a positive number of bytes")
    if iterations is not None and iterations <= 0:
        raise ToolError(f"bad --iterations {iterations}: must be positive")
    if jobs is not None and jobs <= 0:
        raise ToolError(f"bad --jobs {jobs}: must be positive")
    njobs = jobs if jobs is not None else (os.cpu_count() or 1)
    for c in configs:
        resolve_config(c)
    sz: Size = "small" if size == "small" else "full"
    if suite is None and not workloads:
        suite = "series-v5"
    if suite is not None:
        if suite not in SUITES:
            raise ToolError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
        benches, default_configs = SUITES[suite]
        if workloads:
            wanted = resolve_benchmarks(workloads, sz)
            names = {b.name for b in wanted}
            benches = [b for b in benches if b.name in names]
    else:
        benches = resolve_benchmarks(workloads, sz)
        default_configs = SUITES["series-v5"][1]
    if mix is not None:
        from kpkeys_sim.workloads.kernbench import load_mix

        load_mix(mix)
    names_cfg = list(configs) if configs else default_configs
    with _progress(sys.stderr.isatty() and not as_json) as prog:
        res = run_matrix(
            benches,
            names_cfg,
            target,
            seed,
            sz,
            kernel_ws=kernel_ws,
            mix=mix,
            iterations=iterations,
            jobs=njobs,
            progress=prog,
        )
    res.suite = suite
    if do_sens:
        sensitivity(res)
    if as_json:
        click.echo(res.to_json(verbose), nl=False)
    else:
        click.echo(format_table(res, verbose))
