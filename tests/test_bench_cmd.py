"""``kpkeys-sim bench``: bad input, the JSON document, the table, sensitivity, determinism."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kpkeys_sim.analysis.bench import CONFIGS, SUITES, WORKLOADS
from kpkeys_sim.analysis.calibration import get_calibration
from kpkeys_sim.cli import main

#: A cheap matrix: one small workload, a baseline and one feature configuration.
CHEAP = [
    "bench",
    "--workload",
    "test_vmalloc/vm_map_ram_test",
    "--size",
    "small",
    "--iterations",
    "10",
    "--config",
    "baseline",
    "--config",
    "v5-batch",
    "--jobs",
    "1",
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


# --- bad input -----------------------------------------------------------------------------------


def test_bad_config_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --config is one line naming the value, exit 2, nothing on stdout."""
    code, out, err = _run(["bench", "--config", "v9"], capsys)
    assert code == 2
    assert out == ""
    known = ", ".join(CONFIGS)
    assert (
        err == f"kpkeys-sim: error: unknown configuration 'v9' (known: {known}; or a TOML file)\n"
    )


def test_missing_config_file_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    """A --config that looks like a TOML file but does not exist is named."""
    code, _, err = _run(["bench", "--config", "nope.toml"], capsys)
    assert code == 2
    assert err == "kpkeys-sim: error: bad --config 'nope.toml': no such configuration file\n"


def test_bad_config_file_key_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    """A configuration file with an unknown key is refused naming file and key."""
    p = tmp_path / "mine.toml"
    p.write_text("series = 'v6'\nturbo = true\n")
    code, _, err = _run(["bench", "--config", str(p)], capsys)
    assert code == 2
    assert err == f"kpkeys-sim: error: {p}: unknown key 'turbo'\n"


def test_bad_workload_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --workload is named, with the known ones."""
    code, out, err = _run(["bench", "--workload", "micromm/frok"], capsys)
    assert code == 2
    assert out == ""
    known = ", ".join(WORKLOADS)
    assert err == f"kpkeys-sim: error: unknown workload 'micromm/frok' (known: {known})\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arch", "riscv"], "unknown target 'riscv' (known: arm64-poe, x86-pks)"),
        (["--suite", "v4"], f"unknown suite 'v4' (known: {', '.join(SUITES)})"),
        (["--kernel-ws", "0"], "bad --kernel-ws 0: must be a positive number of bytes"),
        (["--iterations", "-3"], "bad --iterations -3: must be positive"),
        (["--jobs", "0"], "bad --jobs 0: must be positive"),
        (["--mix", "nomix.toml"], "nomix.toml: no such mix file"),
    ],
)
def test_other_bad_values_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bad option value is one line naming it, exit status 2."""
    code, out, err = _run(["bench", *argv], capsys)
    assert code == 2
    assert out == ""
    assert err == f"kpkeys-sim: error: {message}\n"


# --- the JSON document ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cheap_json() -> tuple[str, dict[str, Any]]:
    """The JSON output of the cheap matrix, with sensitivity (run once for the module)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exc:
        main([*CHEAP, "--json", "--sensitivity"])
    assert exc.value.code == 0
    text = buf.getvalue()
    return text, json.loads(text)


def test_json_rows_have_the_documented_fields(cheap_json: tuple[str, dict[str, Any]]) -> None:
    """Each row: benchmark, integer params, config, arch, counters, cycles, overhead."""
    _, doc = cheap_json
    rows = doc["rows"]
    assert [(r["benchmark"], r["config"]) for r in rows] == [
        ("test_vmalloc/vm_map_ram_test", "baseline"),
        ("test_vmalloc/vm_map_ram_test", "v5-batch"),
    ]
    for r in rows:
        assert r["params"] == {"p": 1, "h": 0}
        assert all(type(v) is int for v in r["params"].values())
        assert r["arch"] == "arm64-poe"
        assert isinstance(r["counters"], dict) and all(
            type(v) is int for v in r["counters"].values()
        )
        assert type(r["cycles"]) is int and type(r["baseline_cycles"]) is int
        assert type(r["overhead_pct"]) is float
    base, batch = rows
    assert base["overhead_pct"] == 0.0 and base["cycles"] == base["baseline_cycles"]
    assert batch["baseline_cycles"] == base["cycles"]
    # overhead_pct is computed from the exact prices; cycles are rounded to integers
    expected = 100 * (batch["cycles"] - base["cycles"]) / base["cycles"]
    assert batch["overhead_pct"] == pytest.approx(expected, abs=200 / base["cycles"] + 1e-4)
    assert batch["counters"]["pkey_reg_write"] > 0
    assert "pkey_reg_write" not in base["counters"]


def test_json_top_level(cheap_json: tuple[str, dict[str, Any]]) -> None:
    """calibration (every constant with source and assumption flag), version, seed."""
    _, doc = cheap_json
    assert doc["seed"] == 0
    assert isinstance(doc["version"], str)
    consts = doc["calibration"]["constants"]
    assert set(consts) == set(get_calibration("arm64-poe").constants)
    for c in consts.values():
        assert set(c) == {"value", "unit", "source", "assumption", "rationale"}


def test_sensitivity_has_two_factors_per_constant(
    cheap_json: tuple[str, dict[str, Any]],
) -> None:
    """--sensitivity: one entry per constant and factor 0.5 / 2, with the changed conclusions."""
    _, doc = cheap_json
    sens = doc["sensitivity"]
    names = sorted(get_calibration("arm64-poe").constants)
    assert [(e["constant"], e["factor"]) for e in sens] == [
        (n, f) for n in names for f in (0.5, 2.0)
    ]
    for e in sens:
        assert set(e) == {"constant", "factor", "changes", "max_abs_delta_pp"}
        for ch in e["changes"]:
            assert set(ch) == {"conclusion", "from", "to"}
    isb2 = next(e for e in sens if e["constant"] == "isb" and e["factor"] == 2.0)
    assert isb2["max_abs_delta_pp"] > 0


def test_same_seed_gives_byte_identical_json(
    cheap_json: tuple[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Running the same matrix again with the same seed prints the same bytes."""
    text, _ = cheap_json
    code, out, _ = _run([*CHEAP, "--json", "--sensitivity"], capsys)
    assert code == 0
    assert out == text


# --- the table -----------------------------------------------------------------------------------


def test_table_has_a_row_per_benchmark_and_a_column_per_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The text table: header with the configurations, one row, -v adds the event counts."""
    code, out, _ = _run([*CHEAP, "-v"], capsys)
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.split() == ["baseline", "v5-batch"])
    assert header
    row = next(line for line in lines if line.startswith("test_vmalloc/vm_map_ram_test p:1 h:0"))
    assert row.count("%)") == 2
    assert "(   0.00%)" in row
    assert any("[v5-batch] events vs baseline:" in line for line in lines)
    assert any("[v5-batch] extra cycles by constant:" in line for line in lines)


def test_sensitivity_text_lists_every_constant(capsys: pytest.CaptureFixture[str]) -> None:
    """The text sensitivity summary has one line per constant."""
    code, out, _ = _run([*CHEAP, "--sensitivity", "--arch", "x86-pks"], capsys)
    assert code == 0
    assert "sensitivity: each constant x0.5 and x2" in out
    for name in get_calibration("x86-pks").constants:
        assert any(line.startswith(name + " ") for line in out.splitlines()), name


def test_series_v5_suite_is_the_posted_matrix() -> None:
    """series-v5: exactly the v5 benchmark matrix under baseline, v5-nobatch and v5-batch."""
    benches, configs = SUITES["series-v5"]
    assert configs == ["baseline", "v5-nobatch", "v5-batch"]
    assert [b.label for b in benches] == [
        "micromm/fork h:0",
        "micromm/fork h:1",
        "micromm/munmap h:0",
        "micromm/munmap h:1",
        "test_vmalloc/fix_size_alloc_test p:1 h:0",
        "test_vmalloc/fix_size_alloc_test p:4 h:0",
        "test_vmalloc/fix_size_alloc_test p:16 h:0",
        "test_vmalloc/fix_size_alloc_test p:64 h:0",
        "test_vmalloc/fix_size_alloc_test p:256 h:0",
        "test_vmalloc/fix_size_alloc_test p:16 h:1",
        "test_vmalloc/fix_size_alloc_test p:64 h:1",
        "test_vmalloc/fix_size_alloc_test p:256 h:1",
        "test_vmalloc/random_size_alloc_test p:1 h:0",
        "test_vmalloc/vm_map_ram_test p:1 h:0",
        "kernbench syst",
    ]


def test_config_file_is_a_column_named_after_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """A KernelConfig TOML file runs as a configuration named by its stem."""
    p = tmp_path / "myv7.toml"
    p.write_text('series = "v7"\nkpkeys_hardened_pgtables = true\nbbml2_noabort = true\n')
    argv = [a if a != "v5-batch" else str(p) for a in CHEAP]
    code, out, _ = _run([*argv, "--json"], capsys)
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [r["config"] for r in rows] == ["baseline", "myv7"]
    assert rows[1]["linear_map"].get("pte", 0) > 0
    assert rows[1]["baseline_linear_map"].get("pte", 0) == 0
