"""Running the ``kpkeys-sim`` entry point in-process, for CLI tests."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner

from kpkeys_sim.cli import main

__all__ = ["run_cli"]


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """Run ``kpkeys_sim.cli.main`` in-process: (exit status, stdout, stderr)."""
    runner = CliRunner()
    code: Any = None
    with runner.isolation() as (out, err, _):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
    return int(code or 0), out.getvalue().decode(), err.getvalue().decode()
