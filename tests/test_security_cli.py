"""The ``kpkeys-sim attack`` command: output, JSON and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from kpkeys_sim.cli import main; main()", "attack", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_json_output() -> None:
    """--json prints only the campaign object with the requested cell."""
    p = _run(
        "--scenario", "S12-A", "--defense", "kpkeys-cred", "--trials", "2", "--json", "--jobs", "1"
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["cells"] == [
        {
            "scenario": "S12-A",
            "defense": "kpkeys-cred",
            "trials": 2,
            "succeeded": 0,
            "prevented": 2,
            "detected": 0,
            "failed": 0,
            "detected_after_write": 0,
        }
    ]
    assert out["seed"] == 0


def test_matrix_and_explanations() -> None:
    """The terminal output has the matrix and where each outcome came from."""
    p = _run("--scenario", "S12-B", "--defense", "none", "--trials", "2", "--jobs", "1")
    assert p.returncode == 0, p.stderr
    assert "Attack matrix" in p.stdout
    assert "S12-B: where the outcomes came from" in p.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scenario", "S99"), "kpkeys-sim: error: unknown scenario 'S99' (known: "),
        (("--defense", "pkru"), "kpkeys-sim: error: unknown defense 'pkru' (known: "),
        (("--trials", "x"), "kpkeys-sim: error: bad value 'x' for --trials: not an integer"),
        (("--trials", "0"), "kpkeys-sim: error: bad value '0' for --trials: must be at least 1"),
        (("--seed", "-1"), "kpkeys-sim: error: bad value '-1' for --seed: must be at least 0"),
    ],
)
def test_bad_values_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    """A bad value exits with status 2 and one line naming it, no traceback."""
    p = _run(*args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(message)
    assert p.stdout == ""
