"""`kpkeys-sim run`: the output directory, determinism, atomic writes and bad input."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from tests.cli_helpers import run_cli

from kpkeys_sim.analysis import mainjob
from kpkeys_sim.analysis.mainjob import MARKER, STAGES, MainJobOptions, run_main_job
from kpkeys_sim.analysis.store import ResultStore
from kpkeys_sim.cli.run_cmd import _run_with_progress
from kpkeys_sim.kernel.config import DEFAULT_CONFIG, load_config
from kpkeys_sim.security.campaign import DEFAULT_CAMPAIGN_TRIALS

PREFIX = "kpkeys-sim: error: "
FILES = ["config.toml", "report.html", "results.json", "results.sqlite"]


def listing(d: Path) -> list[str]:
    """Every path under ``d``, relative, sorted."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def shared_quick_run(factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    """One ``kpkeys-sim run --quick`` per test session: (dir, status, stdout, stderr).

    The run's directory lives under the session's base temporary directory;
    test_report.py uses the same run, so the session pays for it once.
    """
    base = factory.getbasetemp() / "shared-quick-run"
    done = base / "done.json"
    if not done.exists():
        base.mkdir(exist_ok=True)
        code, stdout, stderr = run_cli(["run", "--quick", "--out", str(base / "report")])
        done.write_text(json.dumps([code, stdout, stderr]))
    code, stdout, stderr = json.loads(done.read_text())
    return base / "report", code, stdout, stderr


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    """The session's ``kpkeys-sim run --quick``: (dir, status, stdout, stderr)."""
    return shared_quick_run(tmp_path_factory)


def _sections(out: Path) -> dict[str, dict[str, str]]:
    with ResultStore.open(out / "results.sqlite") as st:
        return {s["id"]: s for s in st.meta()["run"]["sections"]}


# --- the quick run ----------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_run_writes_the_report_directory(quick_run: tuple[Path, int, str, str]) -> None:
    """The run writes the report, the store, its JSON, KTAP per series and the config."""
    out, code, stdout, stderr = quick_run
    assert code == 0, stdout + stderr
    assert stderr == ""  # no progress bar in a pipe
    names = listing(out)
    for f in FILES:
        assert f in names
    assert MARKER in names
    kunit = _sections(out)["kunit"]
    if kunit["status"] == "ok":
        assert {"ktap/v5.tap", "ktap/v6.tap", "ktap/v7.tap"} <= set(names)
        assert (out / "ktap" / "v6.tap").read_text().startswith("KTAP version 1\n")
    else:
        assert kunit["status"] == "unavailable"
    assert not [p for p in out.parent.iterdir() if p.name.endswith((".tmp", ".old"))]


@pytest.mark.slow
def test_quick_run_prints_a_summary(quick_run: tuple[Path, int, str, str]) -> None:
    """The summary names the scale and seed, one line per part, and what was written."""
    out, _, stdout, _ = quick_run
    lines = stdout.splitlines()
    trials = DEFAULT_CAMPAIGN_TRIALS // 2
    assert lines[0].startswith(f"kpkeys-sim run (seed 0, quick: small workloads, {trials} trials")
    assert "  architecture vectors: 62/62 pass" in lines
    v6v7 = [ln for ln in lines if ln.startswith("  v6 vs v7 on ")]
    assert [ln.split(" (")[0] for ln in v6v7] == [
        "  v6 vs v7 on arm64-poe",
        "  v6 vs v7 on x86-pks",
    ], v6v7
    assert all("v6 " in ln and "v7 " in ln and "geomean" in ln for ln in v6v7)
    assert lines[-2].startswith(f"wrote {out}/: report.html results.sqlite results.json")
    assert lines[-1] == f"open {out / 'report.html'}"
    for sid, sec in _sections(out).items():
        if sec["status"] == "unavailable":
            assert any("not available in this version: " + sec["detail"] in ln for ln in lines), sid


@pytest.mark.slow
def test_no_part_of_the_quick_run_failed(quick_run: tuple[Path, int, str, str]) -> None:
    """Every part of the run either ran or is plainly not in this version; none crashed."""
    out, _, _, _ = quick_run
    failed = {sid: s["detail"] for sid, s in _sections(out).items() if s["status"] == "failed"}
    assert failed == {}


@pytest.mark.slow
def test_config_toml_is_the_resolved_config(quick_run: tuple[Path, int, str, str]) -> None:
    """config.toml loads back to the default machine's configuration."""
    out, _, _, _ = quick_run
    assert load_config(out / "config.toml") == DEFAULT_CONFIG
    with ResultStore.open(out / "results.sqlite") as st:
        assert st.meta()["run"]["config"] == json.loads(
            json.dumps({k: getattr(DEFAULT_CONFIG, k) for k in st.meta()["run"]["config"]})
        )


@pytest.mark.slow
def test_results_json_has_the_store_content(quick_run: tuple[Path, int, str, str]) -> None:
    """results.json is exactly the store's content (meta and every row)."""
    out, _, _, _ = quick_run
    with ResultStore.open(out / "results.sqlite") as st:
        assert json.loads((out / "results.json").read_text()) == st.to_json()
        assert (out / "results.json").read_text() == st.dump_json()
        rows = st.rows()
    assert rows, "the store holds no row"
    assert len({r.key for r in rows}) == len(rows)


@pytest.mark.slow
def test_same_seed_gives_byte_identical_outputs(
    quick_run: tuple[Path, int, str, str], tmp_path: Path
) -> None:
    """A second run with the same seed writes the same report.html and results.json bytes."""
    out, first_code, _, _ = quick_run
    again = tmp_path / "again"
    code, stdout, stderr = run_cli(["run", "--quick", "--out", str(again), "--seed", "0"])
    assert code == first_code, stdout + stderr
    for name in ("report.html", "results.json", "config.toml"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    for tap in (out / "ktap").glob("*.tap"):
        assert (again / "ktap" / tap.name).read_bytes() == tap.read_bytes()


# --- the output directory ---------------------------------------------------------------------


def test_the_other_architecture() -> None:
    """The v6v7-other stage runs the target of the architecture the default machine is not."""
    assert mainjob._other_target(DEFAULT_CONFIG) == "x86-pks"
    assert mainjob._other_target(DEFAULT_CONFIG.replace(arch="x86")) == "arm64-poe"
    assert mainjob._target(DEFAULT_CONFIG.replace(arch="x86")) == "x86-pks"
    ids = [s.id for s in STAGES]
    assert ids.index("v6v7-other") == ids.index("v6v7") + 1
    weights = {s.id: s.weight for s in STAGES}
    assert weights["v6v7-other"] >= weights["v6v7"]  # x86 runs a little longer


def _fast_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep only the architecture stage (fast) so directory tests do not run the whole job."""
    monkeypatch.setattr(mainjob, "STAGES", tuple(s for s in STAGES if s.id == "arch"))


def test_refuses_a_non_empty_directory_it_did_not_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-empty --out without the marker is refused (exit 2, untouched) unless --force."""
    _fast_stages(monkeypatch)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    code, stdout, err = run_cli(["run", "--quick", "--out", str(out)])
    assert (code, stdout) == (2, "")
    assert err == (
        f"{PREFIX}--out {out}: directory is not empty and was not created by kpkeys-sim run "
        "(use --force to write into it)\n"
    )
    assert listing(out) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    code, _, err = run_cli(["run", "--quick", "--out", str(out), "--force"])
    assert (code, err) == (0, "")
    assert (out / "notes.txt").read_text() == "keep me\n"
    assert {"report.html", "results.sqlite", "results.json", "config.toml"} <= set(listing(out))
    assert MARKER not in listing(out)  # still not a directory kpkeys-sim created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_unwritable_output_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails (here: ktap is a file in a --force directory) is one line, exit 2."""
    _fast_stages(monkeypatch)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "ktap").write_text("not a directory\n")
    code, stdout, err = run_cli(["run", "--quick", "--out", str(out), "--force"])
    assert (code, stdout) == (2, "")
    assert err.startswith(f"{PREFIX}--out {out}: cannot write the report: [Errno 17] File exists")
    assert err.count("\n") == 1
    assert (out / "ktap").read_text() == "not a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_replaces_a_directory_it_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory an earlier run created is replaced whole, without --force."""
    _fast_stages(monkeypatch)
    out = tmp_path / "rep"
    assert run_cli(["run", "--quick", "--out", str(out)])[0] == 0
    (out / "stale.txt").write_text("from an older run\n")
    code, _, err = run_cli(["run", "--quick", "--out", str(out)])
    assert (code, err) == (0, "")
    assert "stale.txt" not in listing(out)
    assert MARKER in listing(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_interrupted_run_leaves_no_half_written_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interruption while writing removes the temporary directory; --out never appears."""
    _fast_stages(monkeypatch)

    def interrupted(store: ResultStore) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(mainjob, "render_report", interrupted)
    out = tmp_path / "never"
    code, _, err = run_cli(["run", "--quick", "--out", str(out)])
    assert code == 130
    assert err == "\nkpkeys-sim: aborted\n"
    assert list(tmp_path.iterdir()) == []


def test_a_failed_part_is_reported_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part that raises is recorded as failed with its error; the others still run."""

    def broken(opts: MainJobOptions, progress: Any) -> Any:
        raise RuntimeError("the model broke\nsecond line")

    arch = next(s for s in STAGES if s.id == "arch")
    monkeypatch.setattr(
        mainjob,
        "STAGES",
        (arch, mainjob._Stage("boot", "Booted machines", 1, broken)),
    )
    out = tmp_path / "r"
    code, stdout, _ = run_cli(["run", "--quick", "--jobs", "1", "--out", str(out)])
    assert code == 1
    assert "  Booted machines: FAILED: RuntimeError: the model broke" in stdout.splitlines()
    html = (out / "report.html").read_text()
    assert "this part of the run failed: RuntimeError: the model broke" in html
    assert "62/62" in html


def test_progress_reaches_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress callback goes from 0 to the total and ends with 'done'."""
    _fast_stages(monkeypatch)
    seen: list[tuple[float, float, str]] = []
    res = run_main_job(MainJobOptions(quick=True), lambda d, t, w: seen.append((d, t, w)))
    assert seen[-1] == (1.0, 1.0, "done")
    assert all(0 <= d <= t for d, t, _ in seen)
    assert [s.status for s in res.sections] == ["ok"]


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "series = 'v9'\n",
            "bad value 'v9' for 'series': Input should be 'v5', 'v6', 'v7' or 'pks-rfc2'",
        ),
        ("colour = 1\n", "unknown key 'colour'"),
        ("series = \n", "not valid TOML: Invalid value (at line 1, column 10)"),
    ],
)
def test_bad_config_is_one_line_exit_2_nothing_written(
    tmp_path: Path, toml: str, message: str
) -> None:
    """A malformed --config names the file, the key and the problem; nothing is written."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["run", "--quick", "--config", str(cfg), "--out", str(out)])
    assert (code, stdout) == (2, "")
    assert err == f"{PREFIX}{cfg}: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_config_the_model_refuses_is_bad_input(tmp_path: Path) -> None:
    """A valid config the kernel model cannot boot is refused up front: one line, exit 2."""
    cfg = tmp_path / "x86.toml"
    cfg.write_text('arch = "x86"\npage_size = 16384\n')
    code, stdout, err = run_cli(
        ["run", "--quick", "--config", str(cfg), "--out", str(tmp_path / "o")]
    )
    assert (code, stdout) == (2, "")
    assert err.startswith(f"{PREFIX}{cfg}: bad value 16384 for 'page_size': ")
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x86.toml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "x"], "bad value 'x' for --seed: not an integer"),
        (["--seed", "-1"], "bad value '-1' for --seed: must be at least 0"),
        (["--jobs", "0"], "bad value '0' for --jobs: must be at least 1"),
        (["--config", "missing.toml"], "missing.toml: no such config file"),
    ],
)
def test_bad_options_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad --seed/--jobs/--config values are refused before anything runs or is written."""
    out = tmp_path / "out"
    code, stdout, err = run_cli(["run", "--quick", "--out", str(out), *args])
    assert (code, stdout, err) == (2, "", f"{PREFIX}{message}\n")
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """--out naming a regular file is an error, and the file is untouched."""
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = run_cli(["run", "--quick", "--out", str(f)])
    assert (code, err) == (2, f"{PREFIX}--out {f}: exists and is not a directory\n")
    assert f.read_text() == "x"


def test_store_is_a_real_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """results.sqlite is a plain SQLite database with one row per result."""
    _fast_stages(monkeypatch)
    out = tmp_path / "o"
    assert run_cli(["run", "--quick", "--out", str(out)])[0] == 0
    conn = sqlite3.connect(out / "results.sqlite")
    try:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM results WHERE experiment = 'main/arch'"
        ).fetchone()
    finally:
        conn.close()
    assert n == 1


def test_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal `run` draws a progress bar that reaches 100%."""
    _fast_stages(monkeypatch)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    res = _run_with_progress(MainJobOptions(quick=True, jobs=1), console)
    assert [s.status for s in res.sections] == ["ok"]
    assert "kpkeys-sim run" in buf.getvalue() and "100%" in buf.getvalue()
