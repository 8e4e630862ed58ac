"""The main job behind ``kpkeys-sim run``: everything the model knows, end to end.

:func:`run_main_job` is a pure function of :class:`MainJobOptions` (the
default machine's configuration, whose ``seed`` seeds everything, and
``quick``): it runs the stages below and returns a :class:`MainJobResults`
— result rows for the store, the KTAP texts and the run's metadata.  It
writes nothing; :func:`write_report_dir` does that, atomically.

Stages (each one calls the layer that owns the work, never a copy of it):

==============  ==================================================================
``arch``        the spec §4 pkey-architecture vectors (``machine/arch/vectors``)
``boot``        boot the default machine and the comparison configurations of the
                benchmark matrix (``kernel/boot``), with their boot logs
``kunit``       the series' KUnit suites for v5, v6 and v7 (``kunit/runner``)
``bench``       the series-v5 benchmark matrix (``analysis/bench.run_suite``)
``v6v7``        the v6-vs-v7 comparison (``analysis/bench.compare_v6_v7``) on the
                default machine's architecture
``v6v7-other``  the same comparison on the other architecture (x86-pks when the
                default machine is arm64, arm64-poe when it is x86), so POE and PKS
                can be compared side by side
``attack``      the default attack campaign: every scenario under every defense
                (``security/campaign.run_campaign``)
``pba``         the pkeys block allocator over a run of the default machine:
                kernbench, fork, vmalloc, with ``drop_caches`` between phases
==============  ==================================================================

A stage whose layer is not part of this version of the model (its module
cannot be imported) is recorded as *unavailable* with what is missing, and
the report says so; a stage that raises is recorded as *failed* with the
error and the others still run.  ``--quick`` runs the ``small`` workload
sizes and half the default campaign's attack trials (:data:`QUICK`), and
the report says so.

With ``jobs > 1`` the stages run in a process pool (``spawn``), largest
first; every stage derives its randomness from the seed alone, so the
results are the same for any ``jobs``.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing
import os
import queue
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kpkeys_sim import __version__
from kpkeys_sim.analysis.report import render_report
from kpkeys_sim.analysis.store import ResultRow, ResultStore, config_hash
from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.config import DEFAULT_CONFIG, KernelConfig, config_docs
from kpkeys_sim.machine.events import Instrument

__all__ = [
    "FULL",
    "MARKER",
    "QUICK",
    "STAGES",
    "MainJobOptions",
    "MainJobResults",
    "ProgressFn",
    "RunScale",
    "SectionStatus",
    "check_out_dir",
    "config_toml",
    "preflight",
    "run_main_job",
    "write_report_dir",
]

#: Marker file: a directory holding it was created by ``kpkeys-sim run`` and may be replaced.
MARKER = ".kpkeys-sim-report"

#: ``progress(done, total, message)``: units of work done out of ``total``.
ProgressFn = Callable[[float, float, str], None]
_StageProgress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class RunScale:
    """How big the run is: workload sizes and the share of the default campaign's trials."""

    name: str
    size: str  # workloads.Size: "small" or "full"
    attack_divisor: int  # trials per cell = the default campaign's trials // attack_divisor
    pba_size: str

    def attack_trials(self) -> int:
        """Trials per attack cell: ``security.campaign.DEFAULT_CAMPAIGN_TRIALS`` scaled down."""
        default: int = _need(
            "kpkeys_sim.security.campaign",
            "DEFAULT_CAMPAIGN_TRIALS",
            "the default attack campaign (security/campaign.py)",
        )
        return max(1, default // self.attack_divisor)


#: The full run: the default attack campaign as security/campaign.py defines it.
FULL = RunScale("full", "full", 1, "full")
#: ``--quick``: small workloads, half the attack trials.
QUICK = RunScale("quick", "small", 2, "small")


@dataclass(frozen=True, slots=True)
class MainJobOptions:
    """What to run: the default machine (``config``, its ``seed`` included) and the scale."""

    config: KernelConfig = DEFAULT_CONFIG
    quick: bool = False
    jobs: int = 1
    config_file: str | None = None

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.config.seed

    @property
    def scale(self) -> RunScale:
        """:data:`QUICK` or :data:`FULL`."""
        return QUICK if self.quick else FULL


@dataclass(frozen=True, slots=True)
class SectionStatus:
    """What became of one stage: ``ok``, ``unavailable``, ``skipped`` or ``failed``."""

    id: str
    title: str
    status: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        """JSON form (in the store's ``run`` meta)."""
        return {"id": self.id, "title": self.title, "status": self.status, "detail": self.detail}


@dataclass(slots=True)
class MainJobResults:
    """Everything the main job produced: rows, KTAP texts, section statuses, metadata."""

    options: MainJobOptions
    rows: list[ResultRow]
    sections: list[SectionStatus]
    ktap: dict[str, str]
    meta: dict[str, Any]

    @property
    def failed(self) -> list[SectionStatus]:
        """The stages that raised."""
        return [s for s in self.sections if s.status == "failed"]


@dataclass(slots=True)
class _StageOutput:
    rows: list[ResultRow] = field(default_factory=list)
    ktap: dict[str, str] = field(default_factory=dict)
    status: str = "ok"
    detail: str = ""


class _Unavailable(Exception):
    """A stage's layer is missing from this version of the model."""


class _Skipped(Exception):
    """A stage does not apply to the configuration."""


def _need(module: str, attr: str, what: str) -> Any:
    """``module.attr``, or :class:`_Unavailable` naming ``what`` if it is not in this version."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise _Unavailable(f"{what} ({exc})") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise _Unavailable(f"{what} ({module}.{attr} is missing)") from None


def _cfg_dict(cfg: KernelConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(KernelConfig)}


def _target(cfg: KernelConfig) -> str:
    return "arm64-poe" if cfg.arch == "arm64" else "x86-pks"


def _other_target(cfg: KernelConfig) -> str:
    """The benchmark target of the architecture the default machine is not."""
    return "x86-pks" if cfg.arch == "arm64" else "arm64-poe"


# --- stages -----------------------------------------------------------------------------------


def _stage_arch(opts: MainJobOptions, progress: _StageProgress) -> _StageOutput:
    from kpkeys_sim.machine.arch.vectors import run_self_checks

    progress(0, 1, "architecture vectors")
    vectors = [{"name": n, "passed": ok, "detail": d} for n, ok, d in run_self_checks()]
    failed = sum(1 for v in vectors if not v["passed"])
    row = ResultRow(
        "main/arch",
        {"check": "spec pkeys-hardware.md §4 vectors", "seed": opts.seed},
        opts.seed,
        {"vectors": len(vectors), "vectors_failed": failed},
        {"label": "architecture vectors", "vectors": vectors},
    )
    progress(1, 1, "architecture vectors")
    return _StageOutput([row])


def _comparison_configs(opts: MainJobOptions) -> dict[str, tuple[str, KernelConfig]]:
    """The benchmark matrix's named configurations on the default machine's arch and RAM."""
    try:
        configs: Mapping[str, Any] = _need(
            "kpkeys_sim.analysis.bench", "CONFIGS", "the benchmark configurations"
        )
    except _Unavailable:
        return {}
    cfg = opts.config
    return {
        name: (c.description, c.kernel_config(cfg.arch, cfg.seed, cfg.ram_size))
        for name, c in configs.items()
    }


def _stage_boot(opts: MainJobOptions, progress: _StageProgress) -> _StageOutput:
    boot = _need("kpkeys_sim.kernel.boot", "boot", "the kernel boot (kernel/boot.py)")
    cost = _need("kpkeys_sim.analysis.cost", "CostInstrument", "the cost model's event counter")
    machines: list[tuple[str, KernelConfig]] = [("default machine", opts.config)]
    for name, (_, cfg) in _comparison_configs(opts).items():
        if cfg != opts.config:
            machines.append((name, cfg))
    out = _StageOutput()
    for i, (label, cfg) in enumerate(machines):
        progress(i, len(machines), f"boot {label}")
        counter = cost()
        k = boot(cfg, instruments=[counter])
        counts = dict(sorted(counter.counts.items()))
        tlbi = sum(counts.get(x, 0) for x in ("tlbi_va", "tlbi_asid", "tlbi_all"))
        facts: list[tuple[str, int]] = [
            ("boot log lines", len(k.log)),
            ("pkey register writes", counts.get("pkey_reg_write", 0)),
            ("ISBs", counts.get("isb", 0)),
            ("page-table entries written", counts.get("pt_write", 0)),
            ("TLB invalidations", tlbi),
            *_linear_map_facts(k),
        ]
        pba = getattr(k, "pba", None)
        if pba is not None:
            facts.append(("PBA cached pages", int(pba.nr_cached)))
        out.rows.append(
            ResultRow(
                "main/boot",
                {**_cfg_dict(cfg), "machine": label},
                cfg.seed,
                counts,
                {"order": i, "label": label, "log": list(k.log), "facts": facts},
            )
        )
    progress(len(machines), len(machines), "boot")
    return out


def _linear_map_facts(k: Any) -> list[tuple[str, int]]:
    try:
        shape = _need("kpkeys_sim.analysis.tlb_reach", "linear_map_shape", "linear-map shape")(k)
    except _Unavailable:
        return []
    names = {
        "pud": "PUD blocks",
        "contpmd": "cont-PMD blocks",
        "pmd": "PMD blocks",
        "contpte": "cont-PTEs",
        "pte": "PTEs",
    }
    return [(f"linear map {names.get(kind, kind)}", n) for kind, n in shape.counts().items()]


def _status_name(value: str) -> str:
    return {"ok": "pass", "not ok": "fail", "skip": "skip"}.get(value, value)


def _stage_kunit(opts: MainJobOptions, progress: _StageProgress) -> _StageOutput:
    run_kunit = _need("kpkeys_sim.kunit.runner", "run_kunit", "the KUnit suites (kunit/runner)")
    out = _StageOutput()
    series = ("v5", "v6", "v7")
    for i, v in enumerate(series):
        progress(i, len(series), f"KUnit {v}")
        cfg = opts.config.replace(series=v)
        res = run_kunit(cfg)
        suites = [
            {
                "name": s.name,
                "status": _status_name(s.status.value),
                "cases": [
                    {
                        "name": c.name,
                        "status": _status_name(c.status.value),
                        "comment": c.status_comment,
                    }
                    for c in s.cases
                ],
            }
            for s in res.suites
        ]
        out.rows.append(
            ResultRow(
                "main/kunit",
                _cfg_dict(cfg),
                cfg.seed,
                {"passed": res.passed, "failed": res.failed, "skipped": res.skipped},
                {
                    "series": v,
                    "ktap": res.ktap,
                    "passed": res.passed,
                    "failed": res.failed,
                    "skipped": res.skipped,
                    "total": res.total,
                    "suites": suites,
                },
            )
        )
        out.ktap[v] = res.ktap
    progress(len(series), len(series), "KUnit")
    return out


def _bench_rows(experiment: str, res: Any) -> list[ResultRow]:
    rows = []
    for i, r in enumerate(res.rows):
        d = r.as_dict(verbose=True)
        d.update({"order": i, "label": r.bench.label, "is_baseline": r.run is r.base})
        config = {
            **_cfg_dict(r.run.config),
            "benchmark": r.bench.name,
            "params": dict(r.bench.params),
            "bench_config": r.config,
            "size": res.size,
            "target": res.target,
        }
        counters = {k: int(v) for k, v in r.run.counts.events.counts.items()}
        rows.append(ResultRow(experiment, config, r.run.config.seed, counters, d))
    return rows


def _stage_bench(opts: MainJobOptions, progress: _StageProgress) -> _StageOutput:
    run_suite = _need(
        "kpkeys_sim.analysis.bench", "run_suite", "the benchmark matrix (analysis/bench.py)"
    )
    res = run_suite(
        "series-v5", None, _target(opts.config), opts.seed, opts.scale.size, progress=progress
    )
    return _StageOutput(_bench_rows("main/bench", res))


def _stage_v6v7(opts: MainJobOptions, progress: _StageProgress) -> _StageOutput:
    compare = _need(
        "kpkeys_sim.analysis.bench", "compare_v6_v7", "the v6-vs-v7 comparison (analysis/bench.py)"
    )
    res = compare(_target(opts.config), opts.seed, opts.scale.size, progress=progress)
    return _StageOutput(_bench_rows("main/v6v7", res))


def _stage_v6v7_other(opts: MainJobOptions, progress: _StageProgress) -> _StageOutput:
    compare = _need(
        "kpkeys_sim.analysis.bench", "compare_v6_v7", "the v6-vs-v7 comparison (analysis/bench.py)"
    )
    res = compare(_other_target(opts.config), opts.seed, opts.scale.size, progress=progress)
    return _StageOutput(_bench_rows("main/v6v7-other", res))


def _stage_attack(opts: MainJobOptions, progress: _StageProgress) -> _StageOutput:
    run_campaign = _need(
        "kpkeys_sim.security.campaign", "run_campaign", "the attack campaign (security/)"
    )
    scenario_ids = _need("kpkeys_sim.security.scenarios", "scenario_ids", "the attack scenarios")
    defense_names = _need("kpkeys_sim.security.defenses", "defense_names", "the defenses")
    base: KernelConfig = _need(
        "kpkeys_sim.security.campaign", "ATTACK_BASE_CONFIG", "the campaign's base kernel"
    )
    trials = opts.scale.attack_trials()
    total = len(scenario_ids()) * len(defense_names()) * trials
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total, "attack campaign")

    progress(0, total, "attack campaign")
    res = run_campaign(None, None, trials, opts.seed, progress=advance)
    out = _StageOutput()
    for i, cell in enumerate(res.cells):
        lo, hi = cell.interval("succeeded")
        out.rows.append(
            ResultRow(
                "main/attack",
                {
                    "scenario": cell.scenario,
                    "defense": cell.defense,
                    "trials": trials,
                    "base": _cfg_dict(base),
                    "seed": opts.seed,
                },
                opts.seed,
                {k: int(v) for k, v in sorted(cell.metrics.items())},
                {
                    **cell.to_json(),
                    "order": i,
                    "explanation": cell.explanation(),
                    "succeeded_ci": [round(lo, 4), round(hi, 4)],
                },
            )
        )
    for i, ex in enumerate(res.exposure):
        j = ex.to_json()
        out.rows.append(
            ResultRow(
                "main/attack-exposure",
                {"defense": j["defense"], "workload": j["workload"], "batching": j["batching"]},
                opts.seed,
                {},
                {**j, "order": i},
            )
        )
    return out


class _PbaTracker(Instrument):
    """Marks when the PBA refills, shrinks, and when the linear map is split, by PBA op index."""

    def __init__(self, k: Any) -> None:
        self.k = k
        self.markers: dict[str, list[int]] = {"refill": [], "shrink": [], "linear-map split": []}

    def _op(self) -> int:
        pba = getattr(self.k, "pba", None)
        return int(pba.series.op_index) if pba is not None else 0

    def on_event(self, kind: str, n: int) -> None:
        if kind == "pba_refill":
            self.markers["refill"].append(self._op())
        elif kind == "pba_shrink":
            self.markers["shrink"].append(self._op())
        elif kind == "linear_map_split":
            self.markers["linear-map split"].extend([self._op()] * n)


def _thin(xs: Sequence[int], span: int, buckets: int = 1200) -> list[int]:
    """At most one marker per 1/``buckets`` of the span (the rug cannot show more)."""
    if not xs:
        return []
    step = max(1, span // buckets)
    out: list[int] = []
    last = -1
    for x in sorted(xs):
        b = x // step
        if b != last:
            out.append(x)
            last = b
    return out


def _drop_caches(k: Any) -> int:
    """``echo 2 > /proc/sys/vm/drop_caches``: ``drop_slab()`` runs every shrinker until dry.

    ``drop_slab`` (mm/vmscan.c) repeats ``shrink_slab`` while a pass frees more
    than 10 objects; the model's registered shrinkers are the zone's list.
    """
    zone = k.zone
    total = 0
    for _ in range(64):
        freed = 0
        for shrinker in list(zone.shrinkers):
            got = shrinker(1 << 30)
            if 0 < got < (1 << 62):
                freed += got
        total += freed
        if freed <= 10:
            break
    return total


_PBA_PHASES: tuple[tuple[str, dict[str, int]], ...] = (
    ("kernbench", {}),
    ("micromm/fork", {"h": 0}),
    ("drop_caches", {}),
    ("test_vmalloc/fix_size_alloc_test", {"p": 256, "h": 0}),
    ("micromm/munmap", {"h": 0}),
    ("drop_caches", {}),
)


def _stage_pba(opts: MainJobOptions, progress: _StageProgress) -> _StageOutput:
    boot = _need("kpkeys_sim.kernel.boot", "boot", "the kernel boot (kernel/boot.py)")
    _need("kpkeys_sim.kernel.kpkeys.pba", "PbaTimeSeries", "the PBA time series")
    workloads: Mapping[str, Any] = _need(
        "kpkeys_sim.analysis.bench", "WORKLOADS", "the workloads (workloads/)"
    )
    cost = _need("kpkeys_sim.analysis.cost", "CostInstrument", "the cost model's event counter")
    numpy = importlib.import_module("numpy")
    split_count = _need(
        "kpkeys_sim.kernel.mm.linear_map", "linear_map_split_count", "linear-map statistics"
    )
    cfg = opts.config
    progress(0, len(_PBA_PHASES) + 1, "boot the default machine")
    k = boot(cfg)
    pba = getattr(k, "pba", None)
    if pba is None:
        raise _Skipped(
            "the default machine does not use the pkeys block allocator "
            f"(series {cfg.series}, linear map {cfg.linear_map}); the PBA is v6's, block-mapped"
        )
    tracker = _PbaTracker(k)
    k.machine.instruments.add(tracker)
    phases = [("boot", 0, pba.series.op_index)]
    for i, (name, params) in enumerate(_PBA_PHASES, start=1):
        progress(i, len(_PBA_PHASES) + 1, f"PBA run: {name}")
        start = pba.series.op_index
        if name == "drop_caches":
            _drop_caches(k)
        else:
            w = workloads.get(name)
            if w is None:
                continue
            rng = numpy.random.default_rng([opts.seed, i])
            counter = cost()
            k.machine.instruments.add(counter)
            w.run(k, counter, params, opts.scale.pba_size, rng)
            k.machine.instruments.remove(counter)
        label = name + "".join(f" {a}:{b}" for a, b in params.items())
        phases.append((label, start, pba.series.op_index))
    k.machine.instruments.remove(tracker)
    samples = [[int(x), int(y)] for x, y in pba.series.samples]
    span = max([s[0] for s in samples] + [1])
    markers = {kind: _thin(xs, span) for kind, xs in tracker.markers.items()}
    markers["phase start"] = [p[1] for p in phases[1:]]
    totals = {kind: len(xs) for kind, xs in tracker.markers.items()}
    totals["phase start"] = len(phases) - 1
    st = pba.stats
    stats: list[tuple[str, int]] = [
        ("PBA operations", int(pba.series.op_index)),
        ("refills", int(st.refills)),
        *[(f"refills of order {o}", int(n)) for o, n in sorted(st.refills_by_order.items())],
        ("allocations", int(st.allocs)),
        ("allocations that refilled", int(st.allocs_refilled)),
        ("allocations that split a cached block", int(st.allocs_split)),
        ("frees", int(st.frees)),
        ("shrink scans", int(st.shrink_scans)),
        ("blocks released", int(st.blocks_released)),
        ("pages released", int(st.pages_released)),
        ("linear-map splits caused by the PBA", int(st.splits_caused)),
        ("linear-map splits", int(split_count(k))),
        ("peak cached pages", max([s[1] for s in samples] + [0])),
        ("cached pages at the end", int(pba.nr_cached)),
        ("pages leaked by release_page_list", int(pba.leaked_pages)),
    ]
    intro = (
        "One kernel of the default configuration, booted and then driven through these "
        "phases (PBA operation ranges): "
        + "; ".join(f"{n} ({a}–{b})" for n, a, b in phases)
        + ". drop_caches runs every registered shrinker, as writing 2 to "
        "/proc/sys/vm/drop_caches does. Refills and shrinks before the first phase "
        "(during boot) are counted in the statistics but not marked on the time axis."
    )
    row = ResultRow(
        "main/pba",
        {**_cfg_dict(cfg), "phases": [p[0] for p in phases], "size": opts.scale.pba_size},
        cfg.seed,
        dict(stats),
        {
            "samples": samples,
            "markers": markers,
            "marker_totals": totals,
            "stats": stats,
            "intro": intro,
        },
    )
    progress(len(_PBA_PHASES) + 1, len(_PBA_PHASES) + 1, "PBA run")
    return _StageOutput([row])


@dataclass(frozen=True, slots=True)
class _Stage:
    id: str
    title: str
    weight: int
    run: Callable[[MainJobOptions, _StageProgress], _StageOutput]


#: The stages in report order.  Weights: each stage's share of a full run's time (measured
#: on 2 cores), for the progress bar and to start the longest stages first.
STAGES: tuple[_Stage, ...] = (
    _Stage("arch", "Architecture self-checks", 1, _stage_arch),
    _Stage("boot", "Booted machines", 2, _stage_boot),
    _Stage("kunit", "KUnit results", 2, _stage_kunit),
    _Stage("bench", "Benchmark matrix (series v5)", 30, _stage_bench),
    _Stage("v6v7", "v6 vs v7 (block vs PTE linear map)", 28, _stage_v6v7),
    _Stage(
        "v6v7-other",
        "v6 vs v7 on the other architecture (x86-pks on arm64, arm64-poe on x86)",
        30,
        _stage_v6v7_other,
    ),
    _Stage("attack", "Attack matrix", 12, _stage_attack),
    _Stage("pba", "PBA over the run", 3, _stage_pba),
)


def _run_stage(stage: _Stage, opts: MainJobOptions, progress: _StageProgress) -> _StageOutput:
    try:
        return stage.run(opts, progress)
    except _Unavailable as exc:
        return _StageOutput(status="unavailable", detail=str(exc))
    except _Skipped as exc:
        return _StageOutput(status="skipped", detail=str(exc))
    except Exception as exc:
        return _StageOutput(status="failed", detail=_error_line(exc))


def _error_line(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _stage_in_worker(stage_id: str, opts: MainJobOptions, q: Any) -> _StageOutput:
    """Run one stage in a pool worker, sending progress to the parent through ``q``."""
    stage = next(s for s in STAGES if s.id == stage_id)

    def progress(done: int, total: int, what: str) -> None:
        q.put((stage_id, done, total, what))

    return _run_stage(stage, opts, progress)


# --- the job ----------------------------------------------------------------------------------


def _command(opts: MainJobOptions) -> str:
    parts = ["kpkeys-sim run"]
    if opts.quick:
        parts.append("--quick")
    if opts.config_file is not None:
        parts.append("--config config.toml")
    elif opts.seed:
        parts.append(f"--seed {opts.seed}")
    return " ".join(parts)


def _assumptions_md() -> str:
    """``docs/model-assumptions.md`` of this source tree ('' when not installed from one)."""
    p = Path(__file__).resolve().parents[3] / "docs" / "model-assumptions.md"
    try:
        return p.read_text(encoding="utf-8")
    except OSError:
        return ""


def _calibration_tables() -> list[dict[str, Any]]:
    try:
        tables: Mapping[str, Any] = _need(
            "kpkeys_sim.analysis.calibration", "CALIBRATIONS", "the calibration tables"
        )
    except _Unavailable:
        return []
    return [t.as_dict() for _, t in sorted(tables.items())]


_TITLES = {
    "baseline": "baseline (feature off)",
    "v5-nobatch": "without batching (v5-nobatch)",
    "v5-batch": "with batching (v5-batch)",
    "baseline-bbml2": "baseline, block map (feature off)",
    "v6": "v6: block map + PBA",
    "v6-pte": "v6 on a PTE map (noblock)",
    "v7": "v7: PTE map",
}


def preflight(opts: MainJobOptions) -> None:
    """Boot the default machine once, so a configuration the model refuses is bad input.

    Raises the model's :class:`ToolError` (one line naming the key) before
    anything runs or is written.  Does nothing if this version has no boot.
    """
    try:
        boot = _need("kpkeys_sim.kernel.boot", "boot", "the kernel boot")
    except _Unavailable:
        return
    boot(opts.config)


def run_main_job(opts: MainJobOptions, progress: ProgressFn | None = None) -> MainJobResults:
    """Run every stage; return the rows, KTAP texts and metadata (writes nothing)."""
    report = progress or (lambda done, total, what: None)
    total = float(sum(s.weight for s in STAGES))
    share: dict[str, float] = {s.id: 0.0 for s in STAGES}
    lock = threading.Lock()

    def stage_progress(stage: _Stage, done: int, n: int, what: str) -> None:
        with lock:
            share[stage.id] = stage.weight * (min(done, n) / n if n else 1.0)
            report(sum(share.values()), total, f"{stage.title}: {what}")

    outputs: dict[str, _StageOutput] = {}
    if opts.jobs <= 1 or len(STAGES) <= 1:
        for stage in STAGES:
            outputs[stage.id] = _run_stage(stage, opts, functools.partial(stage_progress, stage))
            stage_progress(stage, 1, 1, "done")
    else:
        outputs = _run_parallel(opts, stage_progress)
    report(total, total, "done")

    rows: list[ResultRow] = []
    sections: list[SectionStatus] = []
    ktap: dict[str, str] = {}
    for stage in STAGES:
        out = outputs[stage.id]
        rows.extend(out.rows)
        ktap.update(out.ktap)
        sections.append(SectionStatus(stage.id, stage.title, out.status, out.detail))
    comps = _comparison_configs(opts)
    cfg = _cfg_dict(opts.config)
    meta: dict[str, Any] = {
        "kind": "kpkeys-sim run",
        "version": __version__,
        "seed": opts.seed,
        "quick": opts.quick,
        "scale": {
            "name": opts.scale.name,
            "workload_size": opts.scale.size,
            "attack_trials": _attack_trials_or_none(opts.scale),
        },
        "command": _command(opts),
        "config": cfg,
        "config_hash": config_hash(cfg),
        "comparison_configs": {
            name: {"description": desc, "config": _cfg_dict(c)} for name, (desc, c) in comps.items()
        },
        "bench_configs": {name: desc for name, (desc, _) in comps.items()},
        "bench_config_titles": {n: t for n, t in _TITLES.items() if n in comps},
        "sections": [s.to_json() for s in sections],
        "calibration": _calibration_tables(),
        "assumptions_md": _assumptions_md(),
    }
    return MainJobResults(opts, rows, sections, ktap, meta)


def _attack_trials_or_none(scale: RunScale) -> int | None:
    try:
        return scale.attack_trials()
    except _Unavailable:
        return None


def _watch_parent(parent: int) -> None:
    from kpkeys_sim.analysis.sweep import _watch_parent as watch

    watch(parent)


def _run_parallel(
    opts: MainJobOptions, stage_progress: Callable[[_Stage, int, int, str], None]
) -> dict[str, _StageOutput]:
    ctx = multiprocessing.get_context("spawn")
    by_id = {s.id: s for s in STAGES}
    with ctx.Manager() as manager:
        q = manager.Queue()
        with ProcessPoolExecutor(
            max_workers=opts.jobs,
            mp_context=ctx,
            initializer=_watch_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures: dict[Future[_StageOutput], str] = {}
            for stage in sorted(STAGES, key=lambda s: -s.weight):
                futures[pool.submit(_stage_in_worker, stage.id, opts, q)] = stage.id
            pending = set(futures)
            outputs: dict[str, _StageOutput] = {}
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(q, by_id, stage_progress)
                for fut in done:
                    sid = futures[fut]
                    try:
                        outputs[sid] = fut.result()
                    except Exception as exc:  # the worker process died (BrokenProcessPool)
                        outputs[sid] = _StageOutput(status="failed", detail=_error_line(exc))
                    stage_progress(by_id[sid], 1, 1, "done")
            _drain(q, by_id, stage_progress)
    return outputs


def _drain(
    q: Any, by_id: Mapping[str, _Stage], stage_progress: Callable[[_Stage, int, int, str], None]
) -> None:
    while True:
        try:
            sid, done, total, what = q.get_nowait()
        except queue.Empty:
            return
        stage_progress(by_id[sid], done, total, what)


# --- writing ----------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def config_toml(cfg: KernelConfig, header: str = "") -> str:
    """``cfg`` as a TOML file that ``--config`` (``load_config``) reads back to ``cfg``."""
    docs = config_docs()
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, value in _cfg_dict(cfg).items():
        lines.append(f"# {docs[name]}")
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an output directory we may not write (``ToolError``); never modifies anything."""
    if out.exists() and not out.is_dir():
        raise ToolError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not force:
        raise ToolError(
            f"--out {out}: directory is not empty and was not created by kpkeys-sim run "
            "(use --force to write into it)"
        )
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ToolError(f"--out {out}: parent directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ToolError(f"--out {out}: parent directory {parent} is not writable")


def write_report_dir(results: MainJobResults, out: Path, *, force: bool = False) -> list[Path]:
    """Write the store, ``results.json``, the report, KTAP and ``config.toml`` into ``out``.

    Everything is written into a temporary directory next to ``out`` and
    renamed into place at the end, so an interrupted run leaves no
    half-written report.  A directory that holds :data:`MARKER` (made by an
    earlier run) is replaced whole; a non-empty directory without it is
    refused unless ``force``, in which case the files are moved into it one
    by one (each rename atomic) and its other files are left alone.
    Returns the paths written, relative to ``out``.
    """
    check_out_dir(out, force)
    target = out.resolve()
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        tmp.mkdir()  # (not mkdtemp: the report directory gets the umask's permissions)
        written = _write_into(results, tmp)
        _move_into_place(tmp, target, written)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ToolError(f"--out {out}: cannot write the report: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _write_into(results: MainJobResults, d: Path) -> list[Path]:
    with ResultStore.create_or_open(d / "results.sqlite") as store:
        store.put_many(results.rows)
        store.set_meta("run", results.meta)
        (d / "results.json").write_text(store.dump_json(), encoding="utf-8")
        (d / "report.html").write_text(render_report(store), encoding="utf-8")
    written = [Path("report.html"), Path("results.sqlite"), Path("results.json")]
    (d / "ktap").mkdir()
    for series, text in sorted(results.ktap.items()):
        (d / "ktap" / f"{series}.tap").write_text(text, encoding="utf-8")
        written.append(Path("ktap") / f"{series}.tap")
    header = (
        f"The resolved configuration of the default machine of this run (kpkeys-sim {__version__}"
        f"{', --quick' if results.options.quick else ''}).\n"
        "Rerun with: kpkeys-sim run --config config.toml"
        + (" --quick" if results.options.quick else "")
    )
    (d / "config.toml").write_text(config_toml(results.options.config, header), encoding="utf-8")
    written.append(Path("config.toml"))
    (d / MARKER).write_text(
        "This directory was created by kpkeys-sim run; a later run may replace it.\n",
        encoding="utf-8",
    )
    return written


def _move_into_place(tmp: Path, out: Path, written: Sequence[Path]) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        return
    if (out / MARKER).is_file():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    # --force into a directory we did not create: file by file, leaving the rest alone.
    (out / "ktap").mkdir(exist_ok=True)
    for rel in written:
        os.replace(tmp / rel, out / rel)
    shutil.rmtree(tmp, ignore_errors=True)
