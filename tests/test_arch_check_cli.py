"""`kpkeys-sim arch check|list|vectors`: spec vectors through the CLI, validation, exit codes."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kpkeys_sim.cli import main
from kpkeys_sim.machine.arch.vectors import check_vectors

DATA = Path(__file__).parent / "data" / "arch_vectors.jsonl"
VECTOR_LINES: list[dict[str, Any]] = [
    json.loads(line) for line in DATA.read_text().splitlines() if line.strip()
]
PREFIX = "kpkeys-sim: error: "


def run_cli(args: list[str], stdin: str | bytes = "") -> tuple[int, str, str]:
    """Run ``kpkeys_sim.cli.main`` in-process: (exit status, stdout, stderr)."""
    runner = CliRunner()
    code: Any = None
    with runner.isolation(input=stdin) as (out, err, _):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
    return int(code or 0), out.getvalue().decode(), err.getvalue().decode()


def line(obj: dict[str, Any]) -> str:
    """One JSON input line."""
    return json.dumps(obj) + "\n"


A1 = next(v["input"] for v in VECTOR_LINES if v["id"] == "A1")
A7 = next(v["input"] for v in VECTOR_LINES if v["id"] == "A7")
A43 = next(v["input"] for v in VECTOR_LINES if v["id"] == "A43")
X3 = next(v["input"] for v in VECTOR_LINES if v["id"] == "X3")


# --- spec vectors ------------------------------------------------------------------------


def test_vector_file_matches_vector_data() -> None:
    """tests/data/arch_vectors.jsonl holds exactly the level-3 spec vectors of vectors.py."""
    expected = [
        {"id": v.id, "input": dict(v.request), "output": dict(v.expected)}
        for v in check_vectors()
        if v.level == 3
    ]
    assert expected == VECTOR_LINES


@pytest.mark.parametrize("vector", VECTOR_LINES, ids=lambda v: v["id"])
def test_vector_through_cli(vector: dict[str, Any]) -> None:
    """Each spec vector, fed to `arch check`, prints exactly the expected JSON line."""
    code, out, err = run_cli(["arch", "check"], line(vector["input"]))
    assert (code, err) == (0, "")
    assert out == json.dumps(vector["output"]) + "\n"


def test_all_vectors_in_one_stream() -> None:
    """A stream of every vector gives one output line per input line, in order."""
    stdin = "".join(line(v["input"]) for v in VECTOR_LINES)
    code, out, err = run_cli(["arch", "check"], stdin)
    assert (code, err) == (0, "")
    assert [json.loads(o) for o in out.splitlines()] == [v["output"] for v in VECTOR_LINES]


def test_output_format_pinned() -> None:
    """Fault lines carry 16 uppercase hex digits (arm64) or 2 (x86); allow has only result."""
    _, out, _ = run_cli(["arch", "check"], line(A7) + line(X3) + line(A1))
    assert out.splitlines() == [
        '{"result": "overlay_fault", "esr": "0x000000409200004F"}',
        '{"result": "pk_fault", "error_code": "0x25"}',
        '{"result": "allow"}',
    ]


def test_empty_input() -> None:
    """No input: no output, exit status 0."""
    assert run_cli(["arch", "check"], "") == (0, "", "")


def test_blank_lines_skipped_but_counted() -> None:
    """Blank lines produce no output but still count for the line number of an error."""
    stdin = line(A1) + "\n   \n" + line({**A1, "poindex": 9})
    code, out, err = run_cli(["arch", "check"], stdin)
    assert code == 2
    assert out == '{"result": "allow"}\n'
    assert err == PREFIX + "line 4: field 'poindex': must be an integer 0..7, got 9\n"


def test_lines_before_error_answered_and_none_after() -> None:
    """Valid lines before a malformed one are answered; nothing after it is processed."""
    stdin = line(A1) + line(A7) + line({**A1, "poindex": 9}) + line(A1)
    code, out, err = run_cli(["arch", "check"], stdin)
    assert code == 2
    assert out.splitlines() == [
        '{"result": "allow"}',
        '{"result": "overlay_fault", "esr": "0x000000409200004F"}',
    ]
    assert err == PREFIX + "line 3: field 'poindex': must be an integer 0..7, got 9\n"


# --- validation: one pinned message per kind of mistake --------------------------------------


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


PIE_OFF_DIRECT = {"ap": None, "pxn": None, "uxn": None}

BAD_LINES: list[tuple[str, str, str]] = [
    (
        "poindex out of range",
        line({**A1, "poindex": 9}),
        "field 'poindex': must be an integer 0..7, got 9",
    ),
    ("missing field", line(_without(A1, "el")), "field 'el': missing"),
    ("unknown field", line({**A1, "level": 3}), "field 'level': unknown field"),
    (
        "unknown field reported before missing",
        line({**_without(A1, "poindex"), "poidx": 1}),
        "field 'poidx': unknown field",
    ),
    ("bool for int", line({**A1, "el": True}), "field 'el': must be 0 or 1, got true"),
    (
        "int for bool",
        line({**A1, "unprivileged": 0}),
        "field 'unprivileged': must be true or false, got 0",
    ),
    (
        "bad access",
        line({**A1, "access": "RX"}),
        'field \'access\': must be one of "R", "W", "X", "RW", got "RX"',
    ),
    (
        "POR not hex",
        line({**A1, "por_el0": "7"}),
        'field \'por_el0\': must be a hex string "0x..." of at most 64 bits, got "7"',
    ),
    (
        "POR as a number",
        line({**A1, "por_el1": 7}),
        "field 'por_el1': must be a hex string \"0x...\" of at most 64 bits, got 7",
    ),
    (
        "POR wider than 64 bits",
        line({**A1, "por_el1": "0x10000000000000000"}),
        "field 'por_el1': must be a hex string \"0x...\" of at most 64 bits, "
        'got "0x10000000000000000"',
    ),
    (
        "bad AP",
        line({**A1, "ap": "1"}),
        'field \'ap\': must be a two-bit string "00", "01", "10" or "11", got "1"',
    ),
    (
        "AP null without PIE",
        line({**A1, "ap": None}),
        'field \'ap\': must be a two-bit string "00", "01", "10" or "11", got null',
    ),
    (
        "PIR given without PIE",
        line({**A1, "pir": "0x5"}),
        "field 'pir': must be null when pie is 0, got \"0x5\"",
    ),
    (
        "AP given with PIE",
        line({**A43, "ap": "01"}),
        "field 'ap': must be null when pie is 1, got \"01\"",
    ),
    (
        "PIR not a nibble",
        line({**A43, "pir": "0x10"}),
        'field \'pir\': must be a hex nibble string "0x0".."0xF" when pie is 1, got "0x10"',
    ),
    (
        "PIRE0 null with PIE",
        line({**A43, "pire0": None}),
        'field \'pire0\': must be a hex nibble string "0x0".."0xF" when pie is 1, got null',
    ),
    (
        "unprivileged fetch",
        line({**A1, "access": "X", "unprivileged": True}),
        "field 'unprivileged': must be false for an instruction fetch "
        "(LDTR/STTR are loads and stores), got true",
    ),
    ("bad wxn", line({**A1, "wxn": 2}), "field 'wxn': must be 0 or 1, got 2"),
    ("el out of range", line({**A1, "el": 2}), "field 'el': must be 0 or 1, got 2"),
    ("x86 key", line({**X3, "key": 16}), "field 'key': must be an integer 0..15, got 16"),
    (
        "x86 PKRS wider than 32 bits",
        line({**X3, "pkrs": "0x100000000"}),
        'field \'pkrs\': must be a hex string "0x..." of at most 32 bits, got "0x100000000"',
    ),
    (
        "x86 mode",
        line({**X3, "mode": "kernel"}),
        'field \'mode\': must be one of "user", "supervisor", got "kernel"',
    ),
    ("x86 missing us", line(_without(X3, "us")), "field 'us': missing"),
    ("x86 arm64 field", line({**X3, "el": 0}), "field 'el': unknown field"),
    ("x86 rw", line({**X3, "rw": "1"}), "field 'rw': must be 0 or 1, got \"1\""),
    (
        "unknown arch",
        line({**X3, "arch": "mips"}),
        'field \'arch\': must be one of "arm64", "x86", got "mips"',
    ),
    ("missing arch", line(_without(X3, "arch")), "field 'arch': missing"),
    (
        "bad JSON",
        "{\n",
        "invalid JSON: Expecting property name enclosed in double quotes (column 2)",
    ),
    ("not an object", "[1, 2]\n", "expected a JSON object, got list"),
]


@pytest.mark.parametrize(("why", "stdin", "message"), BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_malformed_line(why: str, stdin: str, message: str) -> None:
    """A malformed line gives exactly one pinned error line naming line and field, exit 2."""
    code, out, err = run_cli(["arch", "check"], stdin)
    assert (code, out) == (2, "")
    assert err == f"{PREFIX}line 1: {message}\n"


def test_non_utf8_line() -> None:
    """A line that is not UTF-8 is reported with its number."""
    code, out, err = run_cli(["arch", "check"], line(A1).encode() + b"\xff\xfe\n")
    assert code == 2
    assert out == '{"result": "allow"}\n'
    assert err == PREFIX + "line 2: not valid UTF-8\n"


# --- the real entry point ------------------------------------------------------------------


ENTRY = [sys.executable, "-c", "from kpkeys_sim.cli import main; main()"]


def test_entry_point_streams_and_fails_with_status_2() -> None:
    """The installed entry point answers each line as it arrives and exits 2 on a bad line."""
    proc = subprocess.Popen(
        [*ENTRY, "arch", "check"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line(A7))
    proc.stdin.flush()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout=30)
    sel.close()
    assert ready, "no answer before end of input: output is not flushed per line"
    assert proc.stdout.readline() == '{"result": "overlay_fault", "esr": "0x000000409200004F"}\n'
    out, err = proc.communicate(line({**A1, "poindex": 9}), timeout=30)
    assert proc.returncode == 2
    assert out == ""
    assert err == PREFIX + "line 2: field 'poindex': must be an integer 0..7, got 9\n"


# --- arch list / arch vectors --------------------------------------------------------------


def test_arch_list_table() -> None:
    """`arch list` shows both architectures with their registers."""
    code, out, err = run_cli(["arch", "list"])
    assert (code, err) == (0, "")
    for word in ("arm64", "x86", "POR_EL1", "POR_EL0", "IA32_PKRS", "PKRU", "[62:60]", "[62:59]"):
        assert word in out


def test_arch_list_json() -> None:
    """`arch list --json` gives every fact of every architecture."""
    code, out, _ = run_cli(["arch", "list", "--json"])
    assert code == 0
    facts = {a["name"]: a for a in json.loads(out)}
    assert facts["arm64"]["nr_pkeys"] == 8
    assert facts["arm64"]["page_sizes"] == {"4096": 4, "16384": 4, "65536": 3}
    assert facts["arm64"]["reg_write_needs_sync"] is True
    assert facts["x86"]["pkey_desc_bits"] == [59, 62]
    assert facts["x86"]["kernel_pkey_reg"] == "IA32_PKRS"


def test_arch_vectors_pass() -> None:
    """`arch vectors` runs every spec vector, prints a table and exits 0 when all pass."""
    code, out, err = run_cli(["arch", "vectors"])
    assert (code, err) == (0, "")
    assert "62/62 vectors pass" in out
    assert "FAIL" not in out


def test_arch_vectors_json() -> None:
    """`arch vectors --json` lists every vector with passed = true."""
    code, out, _ = run_cli(["arch", "vectors", "--json"])
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 62
    assert all(r["passed"] for r in rows)
    assert rows[0] == {"vector": "A1", "passed": True, "detail": "allow"}


def test_arch_vectors_mismatch_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """`arch vectors` exits 1 and shows FAIL when a vector does not match."""
    monkeypatch.setattr(
        "kpkeys_sim.cli.arch_cmd.run_self_checks",
        lambda: [("A1", True, "allow"), ("A7", False, "expected overlay_fault, got allow")],
    )
    code, out, _ = run_cli(["arch", "vectors"])
    assert code == 1
    assert "FAIL" in out
    assert "1/2 vectors pass" in out
