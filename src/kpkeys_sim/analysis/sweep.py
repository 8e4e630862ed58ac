"""Sweeps: the cross product of a spec's axes, run on an executor, stored point by point.

A sweep spec is a TOML file::

    experiment = "bench"          # a built-in experiment (EXPERIMENTS) or "pkg.module:function"
    description = "batching on/off across series"    # optional

    [base]                        # KernelConfig fields shared by every point (optional)
    ram_size = 1073741824

    [params]                      # the experiment's fixed parameters (optional)
    benchmark = "micromm/fork"
    size = "small"

    [axes]                        # each key lists values; the sweep runs the cross product
    series = ["v5", "v6", "v7"]   # any KernelConfig field: series, lazy_mmu_batching,
    lazy_mmu_batching = [true, false]   # linear_map, page_size, ram_size, arch, ...
    seed = [0, 1, 2]
    # defense = ["none", "kpkeys-v6"]   # for experiments that take a defense (attack)

    [axes.params]                 # experiment-parameter (workload) axes
    h = [0, 1]

The spec is validated at the boundary (pydantic, extra keys forbidden) and
*every* point is resolved — its :class:`~kpkeys_sim.kernel.config.KernelConfig`
built and checked, its parameters validated against the experiment's
parameter model — before anything runs or is written.  A bad spec is one
:class:`~kpkeys_sim.errors.ToolError` naming the file, the key and the problem.

A point's resolved configuration is the KernelConfig's fields (``seed``
included) plus ``"params"`` (and ``"defense"`` when the experiment takes one);
in the store its row is ``("sweep/" + experiment, config_hash, seed)``.

Running (:func:`run_sweep`) is written against :class:`concurrent.futures.Executor`:
a local :class:`~concurrent.futures.ProcessPoolExecutor` by default
(:func:`local_executors`) or a Dask cluster's ``Client.get_executor()``
(:class:`DaskExecutors`, the ``cluster`` extra).  At most ``jobs`` points are
in flight; each finished point is written to the store by the parent as soon
as it completes, so a killed sweep loses only the points that were running.
Rerunning skips the points already stored with status ``ok`` (failed points
are tried again).  A point whose function raises is stored as ``failed`` with
the error.  A point that kills its worker process breaks a process pool
(``BrokenProcessPool``): the pool is recreated, the points that were in
flight are rerun one at a time in a fresh single-worker pool to find the
culprit, which is stored as ``failed``; the sweep then goes on.
"""

from __future__ import annotations

import importlib
import itertools
import multiprocessing
import os
import re
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from kpkeys_sim.analysis.store import ResultRow, ResultStore, config_hash
from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.config import KernelConfig, config_from_mapping

__all__ = [
    "EXPERIMENTS",
    "DaskExecutors",
    "ExecutorFactory",
    "Experiment",
    "PointOutput",
    "SweepPoint",
    "SweepSpec",
    "SweepSummary",
    "load_spec",
    "local_executors",
    "run_point",
    "run_sweep",
]

#: What a point function returns: ``{"counters": {kind: int}, "results": {...}}``.
PointOutput = dict[str, Any]
#: ``make_executor(max_workers)`` returns a fresh executor.
ExecutorFactory = Callable[[int], Executor]
#: ``progress(done, total, description)``.
ProgressFn = Callable[[int, int, str], None]


# --- experiments -------------------------------------------------------------------------------


class _NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True, slots=True)
class Experiment:
    """A built-in sweep experiment: what one point runs.

    ``run(config, params, defense)`` executes in a worker process and returns
    a :data:`PointOutput`; ``params`` is validated with ``params_model`` (extra
    keys forbidden) before the sweep starts.  An experiment that
    ``takes_defense`` runs under each value of the spec's ``defense`` axis
    (``"none"`` when the spec has no such axis); the others refuse the axis.
    """

    name: str
    description: str
    run: Callable[[KernelConfig, dict[str, Any], str | None], PointOutput]
    params_model: type[BaseModel] = _NoParams
    takes_defense: bool = False
    #: ``check(params, defense)`` raises ``ValueError(key, problem)`` for a bad point.
    check: Callable[[dict[str, Any], str | None], None] | None = None


def _run_arch_vectors(
    config: KernelConfig, params: dict[str, Any], defense: str | None
) -> PointOutput:
    """The spec §4 architecture vectors (independent of the kernel knobs)."""
    from kpkeys_sim.machine.arch.vectors import run_self_checks

    rows = run_self_checks()
    failed = [name for name, ok, _ in rows if not ok]
    return {
        "counters": {"vectors": len(rows), "vectors_failed": len(failed)},
        "results": {"passed": len(rows) - len(failed), "failed": failed},
    }


def _run_boot(config: KernelConfig, params: dict[str, Any], defense: str | None) -> PointOutput:
    """Boot the configuration; count the boot's events; the linear map's leaves."""
    from kpkeys_sim.analysis.cost import CostInstrument
    from kpkeys_sim.analysis.tlb_reach import linear_map_shape
    from kpkeys_sim.kernel.boot import boot

    counter = CostInstrument()
    k = boot(config, instruments=[counter])
    pba = getattr(k, "pba", None)
    return {
        "counters": dict(sorted(counter.counts.items())),
        "results": {
            "log_lines": len(k.log),
            "linear_map": linear_map_shape(k).counts(),
            "pba_nr_cached": int(pba.nr_cached) if pba is not None else None,
        },
    }


def _run_kunit(config: KernelConfig, params: dict[str, Any], defense: str | None) -> PointOutput:
    """The series' KUnit suites on the configuration."""
    from kpkeys_sim.kunit.runner import run_kunit

    res = run_kunit(config)
    failing = [
        f"{s.name}.{c.name}" for s in res.suites for c in s.cases if c.status.value == "not ok"
    ]
    return {
        "counters": {"passed": res.passed, "failed": res.failed, "skipped": res.skipped},
        "results": {"total": res.total, "failing": failing},
    }


class _BenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    benchmark: str
    size: Literal["small", "full"] = "small"
    h: int | None = None
    p: int | None = None
    kernel_ws: int | None = None


def _run_bench(config: KernelConfig, params: dict[str, Any], defense: str | None) -> PointOutput:
    """One benchmark on the configuration and on its baseline, priced by the cost model."""
    from kpkeys_sim.analysis import bench
    from kpkeys_sim.analysis.calibration import get_calibration
    from kpkeys_sim.analysis.cost import price

    wparams = {k: params[k] for k in ("p", "h") if params.get(k) is not None}
    b = bench.Benchmark(params["benchmark"], wparams)
    size = params["size"]
    target = "arm64-poe" if config.arch == "arm64" else "x86-pks"
    cal = get_calibration(target)
    run = bench.run_workload(b, config, size, config.seed, params.get("kernel_ws"))
    base_cfg = bench.baseline_of(config)
    base = (
        run
        if base_cfg == config
        else bench.run_workload(b, base_cfg, size, config.seed, params.get("kernel_ws"))
    )
    row = bench.Row(
        b,
        "sweep point",
        target,
        run,
        base,
        price(run.counts.events, cal, run.shape, run.kernel_ws),
        price(base.counts.events, cal, base.shape, base.kernel_ws),
    )
    result = row.as_dict(verbose=True)
    counters = {k: int(v) for k, v in result.pop("counters").items()}
    return {"counters": counters, "results": result}


class _AttackParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    scenario: str
    trials: int = Field(default=10, ge=1)


def _run_attack(config: KernelConfig, params: dict[str, Any], defense: str | None) -> PointOutput:
    """One attack scenario under one defense, on a kernel of this configuration."""
    from kpkeys_sim.security.campaign import run_cell

    cell = run_cell(
        params["scenario"], defense or "none", params["trials"], config.seed, base=config
    )
    lo, hi = cell.interval("succeeded")
    return {
        "counters": {k: int(v) for k, v in sorted(cell.metrics.items())},
        "results": {
            **cell.to_json(),
            "explanation": cell.explanation(),
            "succeeded_ci": [round(lo, 4), round(hi, 4)],
        },
    }


def _check_attack(params: dict[str, Any], defense: str | None) -> None:
    try:
        from kpkeys_sim.security.defenses import defense_names
        from kpkeys_sim.security.scenarios import make_scenario, scenario_ids
    except ImportError as exc:
        raise ValueError("experiment", f"not available in this version ({exc})") from None
    known = scenario_ids()
    if params["scenario"] not in known:
        raise ValueError("params.scenario", f"unknown scenario (known: {', '.join(known)})")
    if make_scenario(params["scenario"]).measurement:
        raise ValueError("params.scenario", "a measurement, not an attack (kpkeys-sim attack)")
    names = defense_names()
    if defense not in names:
        raise ValueError("axes.defense", f"unknown defense (known: {', '.join(names)})")


#: The built-in experiments, by name.  (``run`` functions are module-level so
#: they pickle by reference into worker processes.)
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "arch-vectors",
            "the spec §4 pkey architecture test vectors (a cheap smoke point)",
            _run_arch_vectors,
        ),
        Experiment("boot", "boot the configuration: boot events, linear-map leaves", _run_boot),
        Experiment("kunit", "the series' KUnit suites on the configuration", _run_kunit),
        Experiment(
            "bench",
            "one benchmark (params: benchmark, size, h, p, kernel_ws) vs its baseline",
            _run_bench,
            _BenchParams,
        ),
        Experiment(
            "attack",
            "one attack scenario (params: scenario, trials) under each defense",
            _run_attack,
            _AttackParams,
            takes_defense=True,
            check=_check_attack,
        ),
    )
}


def _resolve_callable(ref: str) -> Callable[..., Any]:
    """Import ``"pkg.module:function"`` (``ImportError``/``AttributeError`` if missing)."""
    module_name, _, attr = ref.partition(":")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise AttributeError(f"{ref} is not callable")
    return fn  # type: ignore[no-any-return]


def run_point(experiment: str, config: Mapping[str, Any]) -> PointOutput:
    """Run one point (in a worker): the experiment on the point's resolved configuration."""
    kernel = {k: v for k, v in config.items() if k not in ("params", "defense")}
    cfg = config_from_mapping(kernel, source=f"sweep point of {experiment}")
    params = dict(config.get("params", {}))
    defense = config.get("defense")
    exp = EXPERIMENTS.get(experiment)
    if exp is not None:
        return exp.run(cfg, params, defense)
    out = _resolve_callable(experiment)(cfg, params)
    return dict(out)


# --- the spec ----------------------------------------------------------------------------------

_KERNEL_FIELDS = [f.name for f in fields(KernelConfig) if f.name != "seed"]
_Values = list[Any]

_AxesModel: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "_AxesModel",
    __config__=ConfigDict(extra="forbid", strict=True),
    seed=(list[int] | None, Field(default=None, min_length=1)),
    defense=(list[str] | None, Field(default=None, min_length=1)),
    params=(dict[str, list[Any]], Field(default_factory=dict)),
    **{name: (_Values | None, Field(default=None, min_length=1)) for name in _KERNEL_FIELDS},
)


class _SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    experiment: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    axes: _AxesModel = Field(default_factory=_AxesModel)  # type: ignore[valid-type]


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One point of a sweep: its experiment, resolved configuration and axis values."""

    experiment: str
    config: Mapping[str, Any]
    label: str

    @property
    def seed(self) -> int:
        """The point's seed."""
        return int(self.config["seed"])

    @property
    def store_experiment(self) -> str:
        """The row's experiment name in the store."""
        return f"sweep/{self.experiment}"

    @property
    def key(self) -> tuple[str, str, int]:
        """The point's row key in the store."""
        return (self.store_experiment, config_hash(self.config), self.seed)


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """A validated spec: the file it came from and its points, in cross-product order."""

    path: Path
    experiment: str
    description: str
    points: tuple[SweepPoint, ...]


def _pydantic_problem(path: Path, exc: ValidationError, prefix: str = "") -> ToolError:
    err = exc.errors()[0]
    key = prefix + (".".join(str(p) for p in err["loc"]) or "<root>")
    if err["type"] == "extra_forbidden":
        return ToolError(f"{path}: unknown key {key!r}")
    if err["type"] == "missing":
        return ToolError(f"{path}: missing key {key!r}")
    return ToolError(f"{path}: bad value {err.get('input')!r} for {key!r}: {err['msg']}")


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec, resolving every point; ``ToolError`` if anything is wrong."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolError(f"{p}: no such sweep spec") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise ToolError(f"{p}: cannot read sweep spec: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolError(f"{p}: not valid TOML: {exc}") from None
    try:
        spec = _SpecModel.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_problem(p, exc) from None

    exp = EXPERIMENTS.get(spec.experiment)
    if exp is None:
        if ":" not in spec.experiment:
            known = ", ".join(sorted(EXPERIMENTS))
            raise ToolError(
                f"{p}: bad value {spec.experiment!r} for 'experiment': not a built-in "
                f"experiment ({known}) nor 'package.module:function'"
            )
        try:
            _resolve_callable(spec.experiment)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ToolError(
                f"{p}: bad value {spec.experiment!r} for 'experiment': cannot import it ({exc})"
            ) from None
    dumped: dict[str, Any] = spec.axes.model_dump(exclude_none=True)  # type: ignore[attr-defined]
    order = list(data.get("axes", {}))  # the spec's own order of the axes
    axes = {name: dumped[name] for name in order if name in dumped}
    param_axes: dict[str, list[Any]] = axes.pop("params", {})
    defenses: list[str] | None = axes.pop("defense", None)
    if defenses is not None and (exp is None or not exp.takes_defense):
        raise ToolError(
            f"{p}: unknown key 'axes.defense': experiment {spec.experiment!r} takes no defense"
        )
    if exp is not None and exp.takes_defense and defenses is None:
        defenses = ["none"]
    for name, values in param_axes.items():
        if not values:
            raise ToolError(f"{p}: bad value [] for 'axes.params.{name}': list is empty")
        if name in spec.params:
            raise ToolError(
                f"{p}: key 'axes.params.{name}' is also set in [params]; give it in one place"
            )
    for name in axes:
        if name in spec.base:
            raise ToolError(f"{p}: key 'axes.{name}' is also set in [base]; give it in one place")

    try:
        base = config_from_mapping(dict(spec.base), source=str(p))
    except ToolError as exc:
        raise _rekey(exc, p, "base.") from None
    for name, values in axes.items():  # each value alone first, so the error names its axis
        for value in values:
            try:
                base.replace(**{name: value})
            except ToolError as exc:
                raise _rekey(exc, p, "axes.") from None
    names = list(axes) + [f"params.{n}" for n in param_axes] + (["defense"] if defenses else [])
    value_lists = list(axes.values()) + list(param_axes.values()) + ([defenses] if defenses else [])
    points: list[SweepPoint] = []
    seen: set[tuple[str, str, int]] = set()
    for combo in itertools.product(*value_lists):
        chosen = dict(zip(names, combo, strict=True))
        kernel = {k: v for k, v in chosen.items() if k in axes}
        label = " ".join(f"{k}={_fmt(v)}" for k, v in chosen.items()) or "(single point)"
        try:
            cfg = base.replace(**kernel)
        except ToolError as exc:
            msg = str(exc).removeprefix("<replace>: ")
            raise ToolError(f"{p}: [axes] point {label}: {msg}") from None
        params = {**spec.params, **{k[7:]: v for k, v in chosen.items() if k.startswith("params.")}}
        if exp is not None:
            try:
                params = exp.params_model.model_validate(params).model_dump()
            except ValidationError as exc:
                raise _pydantic_problem(p, exc, prefix="params.") from None
        if exp is not None and exp.check is not None:
            defense = chosen.get("defense")
            try:
                exp.check(params, defense)
            except ValueError as exc:
                key, problem = exc.args
                value = defense if key == "axes.defense" else params.get(key[7:], spec.experiment)
                raise ToolError(f"{p}: bad value {value!r} for {key!r}: {problem}") from None
        config: dict[str, Any] = {f.name: getattr(cfg, f.name) for f in fields(KernelConfig)}
        config["params"] = params
        if defenses:
            config["defense"] = chosen["defense"]
        point = SweepPoint(spec.experiment, config, label)
        if point.key in seen:
            raise ToolError(f"{p}: [axes] point {label} appears twice in the cross product")
        seen.add(point.key)
        points.append(point)
    return SweepSpec(p, spec.experiment, spec.description, tuple(points))


def _rekey(exc: ToolError, path: Path, prefix: str) -> ToolError:
    """``exc`` (a config error naming a bare key) re-issued for ``path``, the key prefixed."""
    msg = str(exc).split(": ", 1)[1]
    msg = re.sub(r"(for |key )'", lambda m: f"{m.group(1)}'{prefix}", msg, count=1)
    return ToolError(f"{path}: {msg}")


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# --- executors ---------------------------------------------------------------------------------


def _watch_parent(parent: int) -> None:
    """Pool worker initializer: exit when the parent process is gone.

    A killed parent (``SIGKILL``) cannot shut its pool down, and a pool worker
    blocked on its call queue never sees end-of-file (it holds the queue's
    write end itself), so without this it would wait forever.
    """

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="kpkeys-sim-parent-watch", daemon=True).start()


def local_executors() -> ExecutorFactory:
    """Fresh local process pools (``spawn``: safe with the parent's threads).

    Workers exit on their own if the parent dies (:func:`_watch_parent`).
    """
    ctx = multiprocessing.get_context("spawn")

    def make(max_workers: int) -> Executor:
        return ProcessPoolExecutor(
            max_workers=max_workers,
            mp_context=ctx,
            initializer=_watch_parent,
            initargs=(os.getpid(),),
        )

    return make


class DaskExecutors(AbstractContextManager["DaskExecutors"]):
    """A connection to a Dask scheduler; ``factory`` gives ``Client.get_executor()`` executors.

    Needs the ``cluster`` extra (``dask[distributed]``); connecting is
    bounded by ``timeout`` seconds.  Failing to import or to connect is a
    :class:`ToolError` naming the scheduler address.
    """

    def __init__(self, address: Any, timeout: float = 10.0) -> None:
        try:
            distributed: Any = importlib.import_module("distributed")
        except ImportError:
            raise ToolError(
                f"--scheduler {address}: needs the 'cluster' extra "
                "(pip install 'kpkeys-sim[cluster]')"
            ) from None
        try:
            self.client: Any = distributed.Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ToolError(f"--scheduler {address}: cannot connect: {exc}") from None

    @property
    def nthreads(self) -> int:
        """Total worker threads of the cluster (at least 1)."""
        threads: dict[str, int] = self.client.nthreads()
        return max(1, sum(threads.values()))

    def factory(self, max_workers: int) -> Executor:
        """A ``concurrent.futures.Executor`` on the cluster (``max_workers`` is the cluster's)."""
        executor: Executor = self.client.get_executor(pure=False)
        return executor

    def close(self) -> None:
        """Disconnect from the scheduler (the cluster keeps running)."""
        self.client.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- running -----------------------------------------------------------------------------------


@dataclass(slots=True)
class SweepSummary:
    """What a sweep did: points in the spec, skipped (already stored), ran, failed."""

    total: int
    skipped: int
    ok: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON form (``kpkeys-sim sweep --json``)."""
        return {
            "total": self.total,
            "skipped": self.skipped,
            "ok": self.ok,
            "failed": [{"point": label, "error": err} for label, err in self.failed],
        }


def _check_output(out: Any) -> tuple[dict[str, int], dict[str, Any]]:
    if not isinstance(out, Mapping):
        raise TypeError(f"the experiment returned {type(out).__name__}, not a mapping")
    counters = out.get("counters", {})
    results = out.get("results", {})
    if not isinstance(counters, Mapping) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in counters.values()
    ):
        raise TypeError("the experiment's 'counters' must map names to integers")
    if not isinstance(results, Mapping):
        raise TypeError("the experiment's 'results' must be a mapping")
    return {str(k): int(v) for k, v in counters.items()}, dict(results)


def _row(point: SweepPoint, fut_or_exc: Future[PointOutput] | BaseException) -> ResultRow:
    """The row of a finished point (``failed`` with the error if it raised)."""
    try:
        if isinstance(fut_or_exc, BaseException):
            raise fut_or_exc
        counters, results = _check_output(fut_or_exc.result())
        return ResultRow(point.store_experiment, point.config, point.seed, counters, results)
    except Exception as exc:
        if isinstance(exc, BrokenProcessPool):
            error = "the worker process died while running this point (BrokenProcessPool)"
        else:
            first = str(exc).splitlines()[0] if str(exc) else ""
            error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return ResultRow(
            point.store_experiment, point.config, point.seed, status="failed", error=error
        )


def run_sweep(
    spec: SweepSpec,
    store: ResultStore,
    make_executor: ExecutorFactory,
    jobs: int,
    progress: ProgressFn | None = None,
) -> SweepSummary:
    """Run the points of ``spec`` not yet stored as ``ok``; store each as it finishes."""
    done = store.keys(status="ok")
    todo = deque(pt for pt in spec.points if pt.key not in done)
    summary = SweepSummary(total=len(spec.points), skipped=len(spec.points) - len(todo))
    finished = summary.skipped
    report = progress or (lambda d, t, s: None)
    report(finished, summary.total, f"{summary.skipped} already stored")

    def record(point: SweepPoint, row: ResultRow) -> None:
        nonlocal finished
        store.put(row)
        finished += 1
        if row.status == "ok":
            summary.ok += 1
        else:
            summary.failed.append((point.label, row.error))
        report(finished, summary.total, f"{row.status}: {point.label}")

    window = max(1, jobs)
    executor = make_executor(window)
    in_flight: dict[Future[PointOutput], SweepPoint] = {}
    try:
        while todo or in_flight:
            broken = False
            while todo and len(in_flight) < window:
                try:
                    fut = executor.submit(run_point, todo[0].experiment, dict(todo[0].config))
                except BrokenProcessPool:  # a worker died since the last wait
                    broken = True
                    break
                in_flight[fut] = todo.popleft()
            suspects: list[SweepPoint] = []
            if not broken:
                ready, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for fut in ready:
                    pt = in_flight.pop(fut)
                    if isinstance(fut.exception(), BrokenProcessPool):
                        suspects.append(pt)
                        broken = True
                    else:
                        record(pt, _row(pt, fut))
            if not broken:
                continue
            # A worker died: every point still in flight is lost with the pool.
            suspects.extend(in_flight.values())
            in_flight.clear()
            executor.shutdown(wait=False)
            for pt in suspects:  # one at a time, each in a fresh pool, to find the culprit
                solo = make_executor(1)
                try:
                    f = solo.submit(run_point, pt.experiment, dict(pt.config))
                    wait([f])
                    record(pt, _row(pt, f))
                finally:
                    solo.shutdown(wait=True)
            executor = make_executor(window)
    finally:
        for fut in in_flight:  # interrupted: drop what has not started
            fut.cancel()
        executor.shutdown(wait=not in_flight)
    return summary
