"""``kpkeys-sim attack``: run an attack campaign and show the outcome matrix.

Each selected scenario runs under each selected defense for ``--trials``
seeded trials (:func:`kpkeys_sim.security.run_campaign`).  On a terminal the
result is a matrix (rows scenarios, columns defenses; each cell the
succeeded/prevented/detected rates with their Wilson 95 % intervals) and,
per scenario, where each outcome came from; S14 prints its exposure table.
``--json`` prints ``{"cells": [...], "seed": S, "version": V}`` (plus
``"exposure"`` when S14 ran) and nothing else.
"""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kpkeys_sim.errors import ToolError
from kpkeys_sim.security import CampaignResult, defense_names, run_campaign, scenario_ids

__all__ = ["attack", "render_campaign"]


def _fmt_rate(k: int, n: int, lo: float, hi: float) -> str:
    return f"{100 * k / n:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}]"


def render_campaign(console: Console, res: CampaignResult, *, explain: bool = True) -> None:
    """Print the matrix, the explanations and the S14 table of ``res``."""
    if res.cells:
        table = Table(
            title=f"Attack matrix: {res.trials} trials per cell, seed {res.seed} "
            "(S = succeeded, P = prevented, D = detected; 95% Wilson intervals)",
            show_lines=True,
        )
        table.add_column("scenario", style="bold")
        for d in res.defenses:
            table.add_column(d, overflow="fold")
        for s in res.scenarios:
            cells = [c for c in res.cells if c.scenario == s]
            if not cells:
                continue
            row = [s]
            for c in cells:
                parts = []
                for o, letter in (("succeeded", "S"), ("prevented", "P"), ("detected", "D")):
                    k = getattr(c, o)
                    lo, hi = c.interval(o)
                    parts.append(f"{letter} {_fmt_rate(k, c.trials, lo, hi)}")
                if c.failed:
                    parts.append(f"failed {100 * c.failed / c.trials:.0f}%")
                if c.detected_after_write:
                    parts.append(f"(D after write {c.detected_after_write})")
                row.append("\n".join(parts))
            table.add_row(*row)
        console.print(table)
    if explain:
        for s in res.scenarios:
            cells = [c for c in res.cells if c.scenario == s]
            if not cells:
                continue
            console.print(f"[bold]{s}[/bold]: where the outcomes came from")
            for c in cells:
                for line in c.explanation():
                    console.print(f"  {c.defense}: {line}", highlight=False)
    if res.exposure:
        t = Table(title="S14: memory operations executed while the page-table pkey is writable")
        for col in (
            "defense",
            "workload",
            "batching",
            "mem ops",
            "writable",
            "windows",
            "pkey switches",
        ):
            t.add_column(col)
        for r in res.exposure:
            t.add_row(
                r.defense,
                r.workload,
                "on" if r.batching else "off",
                str(r.mem_ops),
                str(r.mem_ops_writable),
                str(r.windows),
                str(r.pkey_switches),
            )
        console.print(t)


def _validate(values: tuple[str, ...], known: list[str], what: str) -> list[str] | None:
    if not values:
        return None
    for v in values:
        if v not in known:
            raise ToolError(f"unknown {what} {v!r} (known: {', '.join(known)})")
    return list(dict.fromkeys(values))


@click.command()
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="ID",
    help="Scenario to run (repeatable; default: all).",
)
@click.option(
    "--defense",
    "defenses",
    multiple=True,
    metavar="NAME",
    help="Defense to run under (repeatable; default: all).",
)
@click.option("--trials", default="100", metavar="N", help="Seeded trials per cell.")
@click.option("--seed", default="0", metavar="S", help="Campaign seed.")
@click.option(
    "--jobs", default=None, metavar="J", help="Worker processes (default: the number of CPUs)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def attack(
    scenarios: tuple[str, ...],
    defenses: tuple[str, ...],
    trials: str,
    seed: str,
    jobs: str | None,
    as_json: bool,
) -> None:
    """Run attack scenarios under defenses and show who succeeds, is prevented or detected."""
    sc = _validate(scenarios, scenario_ids(), "scenario")
    df = _validate(defenses, defense_names(), "defense")
    n = _int_arg(trials, "--trials", 1)
    s = _int_arg(seed, "--seed", 0)
    j = _int_arg(jobs, "--jobs", 1) if jobs is not None else max(1, os.cpu_count() or 1)
    console = Console()
    if sys.stdout.isatty() and not as_json:
        total = len(sc or scenario_ids()) * len(df or defense_names()) * n
        with Progress(
            TextColumn("attack"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as prog:
            task = prog.add_task("trials", total=total)
            res = run_campaign(sc, df, n, s, jobs=j, progress=lambda k: prog.advance(task, k))
    else:
        res = run_campaign(sc, df, n, s, jobs=j)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2, sort_keys=False))
        return
    render_campaign(console, res)


def _int_arg(value: str, name: str, minimum: int) -> int:
    try:
        v = int(value, 10)
    except ValueError:
        raise ToolError(f"bad value {value!r} for {name}: not an integer") from None
    if v < minimum:
        raise ToolError(f"bad value {value!r} for {name}: must be at least {minimum}")
    return v
