"""``kpkeys-sim report``: regenerate a report from a results store, or compare two stores.

* ``kpkeys-sim report DB --html OUT`` writes the HTML report of ``DB`` (for a
  store written by ``kpkeys-sim run``, byte-identical to the run's own);
* ``kpkeys-sim report DB`` prints the store's summary (``--json``: the store);
* ``kpkeys-sim report --compare A B`` prints the metrics that differ between
  two stores (``--json``; ``--html OUT`` writes them as a page).

A missing, foreign or malformed store is one line naming the file and the
problem, exit status 2, and nothing is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from kpkeys_sim.analysis.report import (
    compare_stores,
    render_comparison_html,
    render_report,
    summary_lines,
)
from kpkeys_sim.analysis.store import ResultStore
from kpkeys_sim.errors import ToolError

__all__ = ["report"]


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    parent = path.resolve().parent
    if not parent.is_dir():
        raise ToolError(f"--html {path}: directory {parent} does not exist")
    if path.is_dir():
        raise ToolError(f"--html {path}: is a directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@click.command("report", short_help="Regenerate a report from a store, or compare two stores.")
@click.argument("db", metavar="[DB]", required=False)
@click.option(
    "--html",
    "html_out",
    metavar="OUT",
    default=None,
    help="Write the report (or the comparison) as one HTML page to OUT.",
)
@click.option(
    "--compare",
    nargs=2,
    metavar="A B",
    default=None,
    help="Compare two results stores instead of reporting one.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the store (or the comparison) as JSON."
)
def report(
    db: str | None, html_out: str | None, compare: tuple[str, str] | None, as_json: bool
) -> None:
    """Regenerate the HTML report of results store DB, or compare two stores.

    \b
    kpkeys-sim report DB --html OUT   write DB's report to OUT
    kpkeys-sim report DB              print DB's summary (--json: the whole store)
    kpkeys-sim report --compare A B   print what differs between two stores
    """
    if compare is not None:
        if db is not None:
            raise ToolError("give either DB or --compare A B, not both")
        with ResultStore.open(compare[0]) as a, ResultStore.open(compare[1]) as b:
            cmp = compare_stores(a, b)
        if html_out is not None:
            _write_atomic(Path(html_out), render_comparison_html(cmp))
        if as_json:
            click.echo(json.dumps(cmp.to_json(), indent=2))
        else:
            for line in cmp.lines():
                click.echo(line)
            if html_out is not None:
                click.echo(f"wrote {html_out}")
        return
    if db is None:
        raise ToolError(
            "give a results store DB (kpkeys-sim report DB --html OUT) or --compare A B"
        )
    with ResultStore.open(db) as store:
        if html_out is not None:
            page = render_report(store)
        elif as_json:
            click.echo(store.dump_json(), nl=False)
            return
        else:
            for line in summary_lines(store):
                click.echo(line)
            return
    _write_atomic(Path(html_out), page)
    click.echo(f"wrote {html_out}")
