"""``kpkeys-sim sweep SPEC.toml``: run the cross product of a spec's axes into a results store.

The work is :mod:`kpkeys_sim.analysis.sweep`; this module is the command line:
validation order (spec, then store, then scheduler — so bad input writes
nothing), the progress bar (on a terminal only) and the summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kpkeys_sim.analysis.store import ResultStore, validate_store
from kpkeys_sim.analysis.sweep import (
    EXPERIMENTS,
    DaskExecutors,
    ExecutorFactory,
    SweepSpec,
    SweepSummary,
    load_spec,
    local_executors,
    run_sweep,
)
from kpkeys_sim.errors import ToolError

__all__ = ["sweep"]

_HELP = f"""Run the cross product of the axes of SPEC (TOML) and store every point.

\b
SPEC keys: experiment (built-in: {", ".join(sorted(EXPERIMENTS))}; or
"package.module:function"), description, [base] (KernelConfig fields),
[params] (the experiment's parameters), [axes] (lists of values: any
KernelConfig field — series, lazy_mmu_batching, linear_map, page_size,
ram_size, arch, ... — plus seed, defense and [axes.params]).

Points run on a local process pool (--jobs) or on a Dask cluster
(--scheduler, needs the 'cluster' extra).  Each finished point is written to
the store at once; a rerun skips the points already stored.  A point that
raises or kills its worker is stored as failed and the sweep goes on; the
exit status is 1 when any point failed.
"""


def _default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@click.command("sweep", help=_HELP, short_help="Run a parameter sweep into a results store.")
@click.argument("spec_path", metavar="SPEC.toml")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Points run at once (default: the CPUs available; with --scheduler: the cluster's).",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    default=None,
    help="Run on the Dask cluster of this scheduler instead of a local process pool.",
)
@click.option(
    "--db",
    "db_path",
    metavar="FILE",
    default=None,
    help="Results store to write (default: SPEC with the suffix .sqlite).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def sweep(
    ctx: click.Context,
    spec_path: str,
    jobs: int | None,
    scheduler: str | None,
    db_path: str | None,
    as_json: bool,
) -> None:
    spec = load_spec(spec_path)
    db = Path(db_path) if db_path is not None else spec.path.with_suffix(".sqlite")
    if db.exists():
        if not db.is_file():
            raise ToolError(f"{db}: not a results store: not a regular file")
        validate_store(db)
    elif not db.parent.is_dir():
        raise ToolError(f"{db}: cannot create results store: no directory {db.parent}")

    console = Console(stderr=True)
    cluster: DaskExecutors | None = None
    if scheduler is not None:
        cluster = DaskExecutors(scheduler)
    try:
        make: ExecutorFactory
        if cluster is not None:
            make = cluster.factory
            n_jobs = jobs or cluster.nthreads
        else:
            make = local_executors()
            n_jobs = jobs or _default_jobs()
        with ResultStore.create_or_open(db) as store:
            summary = _run(spec.path.name, spec, store, make, n_jobs, console)
    finally:
        if cluster is not None:
            cluster.close()
    if as_json:
        click.echo(json.dumps({**summary.to_json(), "db": str(db)}, indent=2))
    else:
        ran = summary.ok + len(summary.failed)
        click.echo(
            f"sweep {spec.path}: {summary.total} points: {summary.skipped} already stored, "
            f"{ran} ran: {summary.ok} ok, {len(summary.failed)} failed"
        )
        for label, error in summary.failed:
            click.echo(f"  failed: {label}: {error}")
        click.echo(f"results: {db}")
    if summary.failed:
        ctx.exit(1)


def _run(
    name: str,
    spec: SweepSpec,
    store: ResultStore,
    make: ExecutorFactory,
    jobs: int,
    console: Console,
) -> SweepSummary:
    if not console.is_terminal:
        return run_sweep(spec, store, make, jobs)
    with Progress(
        TextColumn("[bold]sweep[/bold] {task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("", total=len(spec.points), name=name)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        return run_sweep(spec, store, make, jobs, progress)
