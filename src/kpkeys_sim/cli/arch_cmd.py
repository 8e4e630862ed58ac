"""``kpkeys-sim arch ...``: the pkey architecture models, from the command line.

* ``arch check`` — bit-exact verdicts for accesses given as JSON lines;
* ``arch list`` — the registered architectures and their facts;
* ``arch vectors`` — run every spec §4 test vector through the model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kpkeys_sim.errors import ToolError
from kpkeys_sim.machine.arch import arch_names, get_arch
from kpkeys_sim.machine.arch.vectors import run_self_checks

__all__ = ["arch", "check_line"]


@click.group()
def arch() -> None:
    """Pkey architecture models: bit-exact access checks."""


def _fail(lineno: int, message: str) -> ToolError:
    return ToolError(f"line {lineno}: {message}")


def check_line(text: str | bytes, lineno: int) -> dict[str, str]:
    """The ``arch check`` output object for one input line; :class:`ToolError` if malformed."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(lineno, "not valid UTF-8") from None
    try:
        obj: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise _fail(lineno, f"expected a JSON object, got {type(obj).__name__}")
    names = arch_names()
    if "arch" not in obj:
        raise _fail(lineno, "field 'arch': missing")
    if obj["arch"] not in names:
        listed = ", ".join(f'"{n}"' for n in names)
        raise _fail(lineno, f"field 'arch': must be one of {listed}, got {json.dumps(obj['arch'])}")
    model = get_arch(obj["arch"])
    try:
        request = model.parse_check_request(obj)
    except ValueError as exc:
        field, why = exc.args
        raise _fail(lineno, f"field '{field}': {why}") from None
    return model.verdict_json(model.check_request(request))


def _stdin_lines() -> Iterator[bytes]:
    """Lines of stdin as bytes, so that a line that is not UTF-8 is reported with its number."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        yield from buffer
    else:
        for line in sys.stdin:
            yield line.encode("utf-8", "surrogateescape")


_CHECK_HELP = """Check accesses given as JSON lines on stdin; one JSON verdict line per access.

\b
arm64 input: {"arch": "arm64", "el": 0|1, "unprivileged": bool,
  "access": "R"|"W"|"X"|"RW", "por_el1": "0x..", "por_el0": "0x..",
  "poindex": 0..7, "ap": "00".."11", "pxn": 0|1, "uxn": 0|1,
  "poe": 0|1, "e0poe": 0|1, "pie": 0|1, "pir": "0x0".."0xF",
  "pire0": "0x0".."0xF", "wxn": 0|1, "pan": 0|1}
  (pir/pire0 are null when pie is 0; ap/pxn/uxn are null when pie is 1;
  the leaf is a level-3 page.)
x86 input: {"arch": "x86", "mode": "user"|"supervisor", "access": ...,
  "us": "U"|"S", "rw": 0|1, "key": 0..15, "pkru": "0x..", "pkrs": "0x..",
  "pke": 0|1, "pks": 0|1, "wp": 0|1}

\b
Output: {"result": "allow"|"overlay_fault"|"base_fault"|"pk_fault"}, plus
"esr" (arm64, "0x" + 16 hex digits) or "error_code" (x86) for faults.

Every field is required and no other field is allowed.  Blank lines are
skipped (they still count for line numbers).  The first malformed line stops
the command with one error line naming the line and the field, exit status 2;
the lines before it have been answered.
"""


@arch.command(
    "check", help=_CHECK_HELP, short_help="Bit-exact verdicts for accesses given as JSON lines."
)
def check() -> None:
    for lineno, raw in enumerate(_stdin_lines(), 1):
        if not raw.strip():
            continue
        out = check_line(raw.rstrip(b"\r\n"), lineno)
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


@arch.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def list_cmd(as_json: bool) -> None:
    """List the registered pkey architectures and their facts."""
    models = [get_arch(name) for name in arch_names()]
    if as_json:
        rows = [
            {
                "name": a.name,
                "description": a.description,
                "nr_pkeys": a.nr_pkeys,
                "pkey_desc_bits": [a.pkey_desc_lo, a.pkey_desc_hi],
                "kernel_pkey_reg": a.kernel_pkey_reg,
                "user_pkey_reg": a.user_pkey_reg,
                "reg_write_needs_sync": a.reg_write_needs_sync,
                "page_sizes": {str(k): v for k, v in a.page_sizes.items()},
            }
            for a in models
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="pkey architectures")
    for col in ("name", "pkeys", "desc bits", "kernel reg", "user reg", "sync", "page sizes"):
        table.add_column(col)
    for a in models:
        sizes = ", ".join(f"{k // 1024}K:{v} levels" for k, v in a.page_sizes.items())
        cells = (
            a.name,
            str(a.nr_pkeys),
            f"[{a.pkey_desc_hi}:{a.pkey_desc_lo}]",
            a.kernel_pkey_reg,
            a.user_pkey_reg,
            "ISB" if a.reg_write_needs_sync else "none",
            sizes,
        )
        table.add_row(*(Text(c) for c in cells))
    console = Console()
    console.print(table)
    for a in models:
        console.print(f"{a.name}: {a.description}", highlight=False, markup=False)


@arch.command("vectors", short_help="Run the spec §4 test vectors; exit 1 on a mismatch.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def vectors(ctx: click.Context, as_json: bool) -> None:
    """Run every spec §4 test vector through the model; exit 1 if any fails."""
    results = run_self_checks()
    failed = sum(1 for _, ok, _ in results if not ok)
    if as_json:
        click.echo(
            json.dumps([{"vector": n, "passed": ok, "detail": d} for n, ok, d in results], indent=2)
        )
    else:
        table = Table(title="spec §4 test vectors")
        table.add_column("vector")
        table.add_column("result")
        table.add_column("detail")
        for name, ok, detail in results:
            table.add_row(Text(name), Text("PASS" if ok else "FAIL"), Text(detail))
        console = Console()
        console.print(table)
        console.print(
            f"{len(results) - failed}/{len(results)} vectors pass", highlight=False, markup=False
        )
    if failed:
        ctx.exit(1)
