"""``kpkeys-sim run``: the main job, end to end (what ``make run`` runs).

Boots the default machine and the comparison configurations, runs the KUnit
suites, the benchmark matrix, the v6-vs-v7 comparison (on the default
machine's architecture and on the other one: arm64 POE and x86 PKS side by
side), the attack campaign and the PBA run (:mod:`kpkeys_sim.analysis.mainjob`),
then writes the report directory and prints a short summary.  Progress is
shown on a terminal only.  Bad input (a config file, a seed, an output
directory we may not write) is one line and exit status 2, before anything
runs; nothing is written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from kpkeys_sim.analysis.mainjob import (
    MainJobOptions,
    MainJobResults,
    check_out_dir,
    preflight,
    run_main_job,
    write_report_dir,
)
from kpkeys_sim.analysis.report import summary_lines
from kpkeys_sim.analysis.store import ResultStore
from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.config import DEFAULT_CONFIG, load_config

__all__ = ["run"]

_HELP = """Run everything the model can do end to end and write a report.

\b
Boots the default machine (arm64 POE, 4K pages, v6 block-mapped linear map
with the PBA, lazy-MMU batching) and the comparison configurations; runs the
KUnit suites (v5, v6, v7), the series-v5 benchmark matrix, the v6-vs-v7
comparison on arm64-poe and on x86-pks (side by side), the default attack
campaign and the PBA over a run; prints a short summary and writes into
--out DIR:
  report.html      the report (one self-contained page, no JavaScript)
  results.sqlite   the results store (kpkeys-sim report DB regenerates the page)
  results.json     the same content as the store, as JSON
  ktap/*.tap       the KTAP output of each series' KUnit run
  config.toml      the resolved configuration of the default machine

--quick uses small workloads and half the attack trials (the report says
so).  DIR is written atomically (a temporary directory renamed at the
end).  A non-empty DIR that an earlier run did not create is refused unless
--force.  The exit status is 1 when a part of the run failed (the report
says which), 2 for bad input.
"""


def _int_option(value: str, name: str, minimum: int) -> int:
    try:
        v = int(value, 10)
    except ValueError:
        raise ToolError(f"bad value {value!r} for {name}: not an integer") from None
    if v < minimum:
        raise ToolError(f"bad value {value!r} for {name}: must be at least {minimum}")
    return v


def _default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@click.command("run", help=_HELP, short_help="Run the main job end to end and write a report.")
@click.option(
    "--out",
    "out",
    default="kpkeys-report",
    metavar="DIR",
    show_default=True,
    help="Directory to write the report into.",
)
@click.option("--quick", is_flag=True, help="Small workloads and fewer trials (under a minute).")
@click.option(
    "--force", is_flag=True, help="Write into a non-empty DIR that kpkeys-sim run did not create."
)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    default=None,
    help="TOML file of KernelConfig keys for the default machine.",
)
@click.option(
    "--seed",
    default=None,
    metavar="N",
    help="Seed of every random choice (default: the config's, 0).",
)
@click.option(
    "--jobs",
    "-j",
    default=None,
    metavar="N",
    help="Stages run at once in worker processes (default: the CPUs available).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of text.")
@click.pass_context
def run(
    ctx: click.Context,
    out: str,
    quick: bool,
    force: bool,
    config_file: str | None,
    seed: str | None,
    jobs: str | None,
    as_json: bool,
) -> None:
    cfg = load_config(config_file) if config_file is not None else DEFAULT_CONFIG
    if seed is not None:
        cfg = cfg.replace(seed=_int_option(seed, "--seed", 0))
    n_jobs = _int_option(jobs, "--jobs", 1) if jobs is not None else _default_jobs()
    out_dir = Path(out)
    check_out_dir(out_dir, force)
    opts = MainJobOptions(config=cfg, quick=quick, jobs=n_jobs, config_file=config_file)
    try:
        preflight(opts)
    except ToolError as exc:
        raise ToolError(f"{config_file or '<default config>'}: {exc}") from None

    console = Console(stderr=True)
    t0 = time.monotonic()
    results = _run_with_progress(opts, console)
    written = write_report_dir(results, out_dir, force=force)
    elapsed = time.monotonic() - t0
    with ResultStore.open(out_dir / "results.sqlite") as store:
        lines = summary_lines(store)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": str(out_dir),
                    "files": [str(p) for p in written],
                    "quick": quick,
                    "seed": cfg.seed,
                    "sections": [s.to_json() for s in results.sections],
                    "summary": lines,
                },
                indent=2,
            )
        )
    else:
        trials = results.meta["scale"]["attack_trials"]
        scale = "quick: small workloads" if quick else "full"
        if trials is not None:
            scale += f", {trials} trials per attack cell"
        click.echo(f"kpkeys-sim run (seed {cfg.seed}, {scale}) finished in {elapsed:.1f} s")
        for line in lines:
            click.echo(f"  {line}")
        click.echo(f"wrote {out_dir}/: " + " ".join(str(p) for p in written))
        click.echo(f"open {out_dir / 'report.html'}")
    if results.failed:
        ctx.exit(1)


def _run_with_progress(opts: MainJobOptions, console: Console) -> MainJobResults:
    if not console.is_terminal:
        return run_main_job(opts)
    with Progress(
        TextColumn("[bold]kpkeys-sim run[/bold]"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("starting", total=100.0)

        def progress(done: float, total: float, what: str) -> None:
            bar.update(task, completed=100.0 * done / total if total else 100.0, description=what)

        return run_main_job(opts, progress)
