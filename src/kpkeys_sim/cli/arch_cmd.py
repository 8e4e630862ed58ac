"""``kpkeys-sim arch ...``: architecture self-checks (filled in by the arch work)."""

from __future__ import annotations

import click

__all__ = ["arch"]


@click.group()
def arch() -> None:
    """Pkey architecture models: bit-exact access checks."""
