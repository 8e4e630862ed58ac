"""``kpkeys-sim run``: the main job, end to end."""

from __future__ import annotations

import click

__all__ = ["run"]


@click.command()
def run() -> None:
    """Run everything the model can do end to end and summarise it."""
    click.echo("kpkeys-sim run")
