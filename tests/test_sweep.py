"""`kpkeys-sim sweep`: specs, the local pool, a Dask cluster, resume after kill, crashing points."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from tests.cli_helpers import run_cli

from kpkeys_sim.analysis.store import ResultStore, config_hash
from kpkeys_sim.analysis.sweep import load_spec, local_executors, run_sweep
from kpkeys_sim.cli.sweep_cmd import _run
from kpkeys_sim.kernel.config import KernelConfig

TESTS = Path(__file__).resolve().parent
PREFIX = "kpkeys-sim: error: "


# --- user experiments run by the specs below (imported by name in the workers) ------------------


def slow_point(config: KernelConfig, params: dict[str, Any]) -> dict[str, Any]:
    """Sleep, append the point's index to the log, return it."""
    time.sleep(float(params["delay"]))
    with open(params["log"], "a", encoding="utf-8") as f:
        f.write(f"{params['i']}\n")
    return {"counters": {"i": int(params["i"])}, "results": {"series": config.series}}


def crashy_point(config: KernelConfig, params: dict[str, Any]) -> dict[str, Any]:
    """Kill the worker process at ``die``, raise at ``raise``, else succeed."""
    if params["i"] == params["die"]:
        os._exit(13)
    if params["i"] == params["raise"]:
        raise RuntimeError(f"boom at point {params['i']}")
    return {"counters": {"i": int(params["i"])}, "results": {"ok": True}}


# --- helpers ----------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` and return the path."""
    path.write_text(text, encoding="utf-8")
    return path


VECTORS_SPEC = """\
experiment = "arch-vectors"
description = "three series, batching on and off, two seeds"
[base]
ram_size = 1073741824
[axes]
series = ["v5", "v6", "v7"]
lazy_mmu_batching = [true, false]
seed = [0, 1]
"""


# --- specs ------------------------------------------------------------------------------------


def test_spec_points_are_the_cross_product(tmp_path: Path) -> None:
    """Every combination of the axes is one point, in the spec's axis order."""
    spec = load_spec(write(tmp_path / "s.toml", VECTORS_SPEC))
    assert len(spec.points) == 12
    assert spec.points[0].label == "series=v5 lazy_mmu_batching=true seed=0"
    assert spec.points[-1].label == "series=v7 lazy_mmu_batching=false seed=1"
    cfg = spec.points[0].config
    assert cfg["ram_size"] == 1 << 30 and cfg["params"] == {} and cfg["seed"] == 0
    assert len({p.key for p in spec.points}) == 12
    # the two seeds of one configuration share the config hash, and differ in the key's seed
    assert spec.points[1].label == "series=v5 lazy_mmu_batching=true seed=1"
    assert spec.points[0].key[1] == spec.points[1].key[1] == config_hash(cfg)
    assert (spec.points[0].key[2], spec.points[1].key[2]) == (0, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('experiment = "arch-vectors"\n[axes]\nserie = ["v6"]\n', "unknown key 'axes.serie'"),
        (
            'experiment = "arch-vectors"\n[axes]\nseries = "v6"\n',
            "bad value 'v6' for 'axes.series': Input should be a valid list",
        ),
        (
            'experiment = "arch-vectors"\n[axes]\nseries = ["v9"]\n',
            "bad value 'v9' for 'axes.series': Input should be 'v5', 'v6', 'v7' or 'pks-rfc2'",
        ),
        (
            'experiment = "arch-vectors"\n[base]\npage_size = 3\n',
            "bad value 3 for 'base.page_size': Input should be 4096, 16384 or 65536",
        ),
        ('experiment = "arch-vectors"\n[params]\nsize = 3\n', "unknown key 'params.size'"),
        (
            'experiment = "arch-vectors"\n[axes]\ndefense = ["kasan"]\n',
            "unknown key 'axes.defense': experiment 'arch-vectors' takes no defense",
        ),
        ("[axes]\nseed = [1]\n", "missing key 'experiment'"),
        (
            'experiment = "nope"\n',
            "bad value 'nope' for 'experiment': not a built-in experiment (arch-vectors, attack, "
            "bench, boot, kunit) "
            "nor 'package.module:function'",
        ),
        ('experiment = "arch-vectors"\ncolour = 1\n', "unknown key 'colour'"),
        (
            'experiment = "arch-vectors"\n[axes]\nseed = [1, 1]\n',
            "[axes] point seed=1 appears twice in the cross product",
        ),
        (
            'experiment = "arch-vectors"\n[axes]\nram_size = [2097152]\npage_size = [65536]\n',
            "[axes] point ram_size=2097152 page_size=65536: bad value 2097152 for 'ram_size': "
            "must be a positive multiple of 33554432 bytes",
        ),
    ],
)
def test_bad_spec_is_one_line_exit_2_nothing_written(
    tmp_path: Path, text: str, message: str
) -> None:
    """A malformed spec names the file, the key and the problem; no store is created."""
    spec = write(tmp_path / "bad.toml", text)
    code, out, err = run_cli(["sweep", str(spec)])
    assert (code, out) == (2, "")
    assert err == f"{PREFIX}{spec}: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_invalid_toml_and_missing_spec(tmp_path: Path) -> None:
    """Unparsable TOML and a missing file are one-line errors naming the file."""
    spec = write(tmp_path / "t.toml", "experiment = \n")
    code, _, err = run_cli(["sweep", str(spec)])
    assert code == 2
    assert err.startswith(f"{PREFIX}{spec}: not valid TOML: ") and err.count("\n") == 1
    code, _, err = run_cli(["sweep", str(tmp_path / "none.toml")])
    assert (code, err) == (2, f"{PREFIX}{tmp_path / 'none.toml'}: no such sweep spec\n")


def test_foreign_db_is_refused_and_untouched(tmp_path: Path) -> None:
    """--db naming a file that is not a store is an error and the file is not modified."""
    spec = write(tmp_path / "s.toml", VECTORS_SPEC)
    db = tmp_path / "foreign.db"
    db.write_bytes(b"not sqlite at all\n" * 100)
    code, _, err = run_cli(["sweep", str(spec), "--db", str(db)])
    assert code == 2
    assert err.startswith(f"{PREFIX}{db}: not a kpkeys-sim results store: not an SQLite database")
    assert db.read_bytes() == b"not sqlite at all\n" * 100


def test_unreachable_scheduler_writes_nothing(tmp_path: Path) -> None:
    """A scheduler that cannot be reached is one line naming it, and no store is created."""
    spec = write(tmp_path / "s.toml", VECTORS_SPEC)
    code, _, err = run_cli(["sweep", str(spec), "--scheduler", "tcp://127.0.0.1:1"])
    assert code == 2
    assert err.startswith(f"{PREFIX}--scheduler tcp://127.0.0.1:1: cannot connect: ")
    assert not (tmp_path / "s.sqlite").exists()


# --- local pool -------------------------------------------------------------------------------


def test_local_pool_runs_every_point_then_resumes_nothing(tmp_path: Path) -> None:
    """The local pool stores one ok row per point; a rerun skips them all."""
    spec = write(tmp_path / "s.toml", VECTORS_SPEC)
    code, out, err = run_cli(["sweep", str(spec), "--jobs", "2"])
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"sweep {spec}: 12 points: 0 already stored, 12 ran: 12 ok, 0 failed",
        f"results: {tmp_path / 's.sqlite'}",
    ]
    with ResultStore.open(tmp_path / "s.sqlite") as st:
        rows = st.rows()
    assert len(rows) == 12
    assert {r.experiment for r in rows} == {"sweep/arch-vectors"}
    assert all(r.status == "ok" and r.counters["vectors_failed"] == 0 for r in rows)
    assert {r.key for r in rows} == {p.key for p in load_spec(spec).points}
    code, out, _ = run_cli(["sweep", str(spec), "--json"])
    assert code == 0
    assert json.loads(out) == {
        "total": 12,
        "skipped": 12,
        "ok": 0,
        "failed": [],
        "db": str(tmp_path / "s.sqlite"),
    }


def test_crashing_points_are_recorded_and_the_others_kept(tmp_path: Path) -> None:
    """A point that kills its worker and one that raises are stored failed; the rest succeed."""
    spec = write(
        tmp_path / "c.toml",
        'experiment = "test_sweep:crashy_point"\n'
        "[params]\ndie = 2\nraise = 4\n"
        "[axes.params]\ni = [0, 1, 2, 3, 4, 5, 6]\n",
    )
    db = tmp_path / "c.sqlite"
    code, out, _ = run_cli(["sweep", str(spec), "--jobs", "2", "--db", str(db)])
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"sweep {spec}: 7 points: 0 already stored, 7 ran: 5 ok, 2 failed"
    assert sorted(lines[1:3]) == [
        "  failed: params.i=2: the worker process died while running this point "
        "(BrokenProcessPool)",
        "  failed: params.i=4: RuntimeError: boom at point 4",
    ]
    with ResultStore.open(db) as st:
        rows = {r.config["params"]["i"]: r for r in st.rows()}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5, 6]
    assert {i for i, r in rows.items() if r.status == "failed"} == {2, 4}
    assert all(rows[i].counters == {"i": i} for i in (0, 1, 3, 5, 6))
    # a rerun retries only the failed points (they fail again: they are deterministic)
    code, out, _ = run_cli(["sweep", str(spec), "--jobs", "2", "--db", str(db)])
    assert code == 1
    assert out.splitlines()[0] == (
        f"sweep {spec}: 7 points: 5 already stored, 2 ran: 0 ok, 2 failed"
    )


# --- resume after kill ------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Pids of the direct children of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_resume_after_kill_skips_stored_points(tmp_path: Path) -> None:
    """A sweep killed mid-run keeps its stored points; the rerun computes only the others."""
    log = tmp_path / "points.log"
    spec = write(
        tmp_path / "r.toml",
        'experiment = "test_sweep:slow_point"\n'
        f"[params]\ndelay = 0.4\nlog = {json.dumps(str(log))}\n"
        f"[axes.params]\ni = {list(range(12))}\n",
    )
    db = tmp_path / "r.sqlite"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-c", "from kpkeys_sim.cli import main; main()", "sweep", str(spec)]
    proc = subprocess.Popen(
        [*cmd, "--jobs", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        stored = 0
        while stored < 3:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "the sweep stored nothing in 120 s"
            time.sleep(0.1)
            if db.exists():
                with ResultStore.open(db) as st:
                    stored = len(st)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the orphaned pool workers finish their point and exit on their own
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "pool workers outlived the killed sweep"

    with ResultStore.open(db) as st:
        before = {r.config["params"]["i"]: r for r in st.rows()}
    assert 3 <= len(before) < 12
    logged_before = len(log.read_text().splitlines())

    done = subprocess.run(
        [*cmd, "--jobs", "2"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"sweep {spec}: 12 points: {len(before)} already stored, {12 - len(before)} ran: "
        f"{12 - len(before)} ok, 0 failed"
    )
    rerun = [int(x) for x in log.read_text().splitlines()[logged_before:]]
    assert sorted(rerun) == sorted(set(range(12)) - set(before))
    with ResultStore.open(db) as st:
        after = {r.config["params"]["i"]: r for r in st.rows()}
    assert sorted(after) == list(range(12))
    assert all(after[i] == before[i] for i in before)


# --- Dask -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dask_local_cluster_runs_the_same_points(tmp_path: Path) -> None:
    """--scheduler on a LocalCluster bound to 127.0.0.1 stores the same rows as the local pool."""
    distributed = pytest.importorskip("distributed", reason="the 'cluster' extra is required")
    spec = write(tmp_path / "s.toml", VECTORS_SPEC)
    crash = write(
        tmp_path / "c.toml",
        'experiment = "test_sweep:crashy_point"\n'
        "[params]\ndie = -1\nraise = 1\n"
        "[axes.params]\ni = [0, 1, 2]\n",
    )
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        host="127.0.0.1",
        protocol="tcp",
        dashboard_address=None,
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        with ThreadPoolExecutor(1) as bounded:
            result = bounded.submit(
                run_cli,
                ["sweep", str(spec), "--scheduler", address, "--db", str(tmp_path / "d.db")],
            ).result(timeout=180)
            crashed = bounded.submit(run_cli, ["sweep", str(crash), "--scheduler", address]).result(
                timeout=180
            )
    code, out, err = result
    assert (code, err) == (0, "")
    assert (
        out.splitlines()[0] == f"sweep {spec}: 12 points: 0 already stored, 12 ran: 12 ok, 0 failed"
    )
    with ResultStore.open(tmp_path / "d.db") as st:
        rows = st.rows()
    assert {r.key for r in rows} == {p.key for p in load_spec(spec).points}
    assert all(r.status == "ok" for r in rows)
    code, out, _ = crashed
    assert code == 1
    assert "  failed: params.i=1: RuntimeError: boom at point 1" in out.splitlines()


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the sweep draws a progress bar that reaches every point."""
    spec = load_spec(
        write(tmp_path / "s.toml", 'experiment = "arch-vectors"\n[axes]\nseed = [0, 1, 2]\n')
    )
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with ResultStore.create_or_open(tmp_path / "s.sqlite") as st:
        summary = _run("s.toml", spec, st, local_executors(), 1, console)
    assert summary.ok == 3
    text = buf.getvalue()
    assert "sweep" in text and "s.toml" in text and "3/3" in text


class _BreakingPool(Executor):
    """An executor that runs points at once, except point ``die``: it breaks the pool.

    In a pool of several workers the dying point stays pending and every later
    ``submit`` raises ``BrokenProcessPool`` (a worker died between two waits);
    a one-worker pool fails it at once, as the real pool does when it breaks.
    """

    def __init__(self, max_workers: int, die: int, log: list[int]) -> None:
        self.max_workers = max_workers
        self.die = die
        self.log = log
        self.broken = False
        self.pending: list[Future[Any]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.broken:
            raise BrokenProcessPool("a child process terminated abruptly")
        fut: Future[Any] = Future()
        i = args[1]["params"]["i"]
        self.log.append(i)
        if i == self.die:
            if self.max_workers == 1:
                fut.set_exception(BrokenProcessPool("a child process terminated abruptly"))
            else:
                self.broken = True
                self.pending.append(fut)
            return fut
        fut.set_result(fn(*args, **kwargs))
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for fut in self.pending:
            if not fut.done():
                fut.set_exception(BrokenProcessPool("a child process terminated abruptly"))


def test_pool_that_breaks_between_waits_loses_no_point(tmp_path: Path) -> None:
    """A submit that finds the pool broken requeues its point; the dying point alone fails."""
    spec = load_spec(
        write(
            tmp_path / "b.toml",
            'experiment = "test_sweep:crashy_point"\n[params]\ndie = 1\nraise = -1\n'
            "[axes.params]\ni = [0, 1, 2, 3, 4]\n",
        )
    )
    log: list[int] = []
    with ResultStore.create_or_open(tmp_path / "b.sqlite") as st:
        summary = run_sweep(spec, st, lambda n: _BreakingPool(n, 1, log), 2)
        rows = {r.config["params"]["i"]: r for r in st.rows()}
    assert summary.ok == 4
    assert summary.failed == [
        ("params.i=1", "the worker process died while running this point (BrokenProcessPool)")
    ]
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert [i for i, r in rows.items() if r.status == "failed"] == [1]
    assert log.count(1) == 2  # once in the pool, once alone to find the culprit
    assert sorted(set(log)) == [0, 1, 2, 3, 4]
