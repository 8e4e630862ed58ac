"""The ``kpkeys-sim`` command.

Each subcommand lives in its own module of this package and is attached to
the :data:`main` group here.  Errors of the tool (:class:`ToolError`, click
usage errors) print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import sys

import click

from kpkeys_sim import __version__
from kpkeys_sim.cli.arch_cmd import arch
from kpkeys_sim.cli.attack_cmd import attack
from kpkeys_sim.cli.bench_cmd import bench
from kpkeys_sim.cli.kunit_cmd import kunit
from kpkeys_sim.cli.report_cmd import report
from kpkeys_sim.cli.run_cmd import run
from kpkeys_sim.cli.sweep_cmd import sweep
from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.errors import KernelBug, Oops

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kpkeys-sim")
def cli() -> None:
    """kpkeys-sim: an executable model of pkeys-based kernel hardening."""


cli.add_command(run)
cli.add_command(arch)
cli.add_command(bench)
cli.add_command(attack)
cli.add_command(kunit)
cli.add_command(sweep)
cli.add_command(report)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning tool errors into one line and exit status 2."""
    try:
        rv = cli.main(args=argv, prog_name="kpkeys-sim", standalone_mode=False)
    except ToolError as exc:
        click.echo(f"kpkeys-sim: error: {exc}", err=True)
        sys.exit(ToolError.exit_status)
    except (KernelBug, Oops) as exc:
        # The modelled kernel crashed (a result of the configuration, e.g. the v5
        # recursive split of spec §4.12): one line, exit status 1.
        what = "BUG" if isinstance(exc, KernelBug) else "Oops"
        click.echo(f"kpkeys-sim: the model kernel hit a {what}: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message() if hasattr(exc, "format_message") else str(exc))
        sys.exit(0)
    except click.UsageError as exc:
        click.echo(f"kpkeys-sim: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("kpkeys-sim: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
