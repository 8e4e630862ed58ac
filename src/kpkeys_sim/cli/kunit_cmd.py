"""``kpkeys-sim kunit``: boot a model kernel and run the series' KUnit suites, KTAP on stdout.

Like ``tools/testing/kunit/kunit.py run`` on a kernel built with
``CONFIG_KPKEYS_HARDENED_PGTABLES_KUNIT_TEST=y``: the series' own suite for
the selected version plus the model's positive suite
(:data:`kpkeys_sim.kunit.hardened_pgtables.DEFAULT_SUITES`).  Exit status 0
when no case failed, 1 otherwise, 2 for a bad argument or config (one line
naming the value).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import click

from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.config import (
    DEFAULT_CONFIG,
    KernelConfig,
    config_from_mapping,
    load_config,
)
from kpkeys_sim.kunit.framework import KunitResult
from kpkeys_sim.kunit.runner import run_kunit

__all__ = ["kunit", "run_kunit", "select_config"]

_SERIES = ("v5", "v6", "v7", "pks-rfc2")
_ARCHES = ("arm64", "x86")
_PAGE_SIZES = (4096, 16384, 65536)


def select_config(
    config_file: str | None,
    series: str | None,
    page_size: str | None,
    arch: str | None = None,
) -> KernelConfig:
    """The configuration the command runs: the file (or defaults) with the overrides applied.

    Raises :class:`ToolError` naming the bad value.
    """
    cfg = load_config(config_file) if config_file is not None else DEFAULT_CONFIG
    changes: dict[str, object] = {}
    if series is not None:
        if series not in _SERIES:
            raise ToolError(
                f"bad value {series!r} for '--series': must be one of v5, v6, v7, pks-rfc2"
            )
        changes["series"] = series
    if arch is not None:
        if arch not in _ARCHES:
            raise ToolError(f"bad value {arch!r} for '--arch': must be one of arm64, x86")
        changes["arch"] = arch
    if page_size is not None:
        try:
            ps = int(page_size, 0)
        except ValueError:
            ps = -1
        if ps not in _PAGE_SIZES:
            raise ToolError(
                f"bad value {page_size!r} for '--page-size': must be one of 4096, 16384, 65536"
            )
        changes["page_size"] = ps
    if changes:
        data = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
        cfg = config_from_mapping({**data, **changes}, source=config_file or "<defaults>")
    return cfg


def _json(result: KunitResult) -> str:
    return json.dumps(
        {
            "passed": result.passed,
            "failed": result.failed,
            "skipped": result.skipped,
            "total": result.total,
            "suites": [
                {
                    "name": s.name,
                    "status": s.status.value,
                    "cases": [
                        {"name": c.name, "status": c.status.value, "comment": c.status_comment}
                        for c in s.cases
                    ],
                }
                for s in result.suites
            ],
        },
        indent=2,
    )


@click.command()
@click.option(
    "--series",
    metavar="v5|v6|v7|pks-rfc2",
    help="Series version (overrides the config); pks-rfc2 (x86): the 2021 PKS page tables.",
)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=str),
    help="TOML config file (KernelConfig keys).",
)
@click.option(
    "--arch",
    metavar="arm64|x86",
    help="Kernel architecture: arm64 (POE) or x86 (the kpkeys port to PKS; 4K pages).",
)
@click.option("--page-size", metavar="N", help="Base page size: 4096, 16384 or 65536.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of KTAP.")
def kunit(
    series: str | None,
    config_file: str | None,
    arch: str | None,
    page_size: str | None,
    as_json: bool,
) -> int:
    """Run the kpkeys_hardened_pgtables KUnit suites on a booted model kernel (KTAP output).

    Exit status: 0 all cases passed or skipped, 1 a case failed, 2 bad input.
    """
    if config_file is not None and not Path(config_file).exists():
        raise ToolError(f"{config_file}: no such config file")
    cfg = select_config(config_file, series, page_size, arch)
    result = run_kunit(cfg)
    click.echo(_json(result) if as_json else result.ktap, nl=as_json)
    return 0 if result.ok else 1
