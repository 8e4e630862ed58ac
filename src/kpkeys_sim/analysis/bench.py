"""The benchmark matrix: named configurations, suites, overheads, sensitivity.

A *configuration* (:class:`BenchConfig`) maps a name to a
:class:`~kpkeys_sim.kernel.config.KernelConfig` (the ``arch`` field comes
from the target CPU).  Every configuration is compared with **its own
baseline**: the same ``KernelConfig`` with ``kpkeys_hardened_pgtables`` off
(the feature off on the same platform, :func:`baseline_of`).  Each
(benchmark, parameter set, kernel configuration) runs once on a freshly
booted kernel with a :class:`~kpkeys_sim.analysis.cost.CostInstrument`
attached, in this process; both runs are priced by the same calibration
table, and ``overhead_pct = 100 * (cycles - baseline_cycles) /
baseline_cycles``.

Named configurations (``CONFIGS``):

===================  ===================================================================
``baseline``         feature off; linear map PTE-mapped (``rodata=full`` without BBML2,
                     as on the series' v6.17-rc1 Graviton3 platform, spec §6.1)
``v5-nobatch``       RFC v5 without lazy-MMU batching (every guarded helper switches)
``v5-batch``         RFC v5 with lazy-MMU batching (v5 18/18)
``baseline-bbml2``   feature off on a BBML2_NOABORT system: block-mapped linear map
``v6``               v6: block-mapped linear map with the PBA, batched (BBML2 system)
``v6-pte``           v6 without BBML2: PTE-mapped, the noblock allocator, batched
``v7``               RFC v7: PTE-mapped linear map forced by the feature, batched
                     (BBML2 system, so its baseline is block-mapped)
===================  ===================================================================

A TOML file of ``KernelConfig`` keys is accepted wherever a name is; its
name is the file's stem.

Suites (``SUITES``): ``series-v5`` is exactly the series' v5 benchmark matrix
(spec §6.2) under ``baseline``, ``v5-nobatch`` and ``v5-batch``;
``v6-v7`` runs the same benchmarks under ``baseline-bbml2``, ``v6`` and
``v7``.

Sensitivity (:func:`sensitivity`): every calibration constant is scaled by
0.5 and by 2 and all rows are re-priced from the **same** event counts (no
re-run).  The *conclusions* compared are, per benchmark and parameter set:

* the overhead class of each non-baseline configuration: ``<1%``,
  ``1-5%`` or ``>=5%``;
* the order of every pair of non-baseline configurations by overhead,
  after rounding overheads to 0.1 percentage point (``<``, ``=``, ``>``).

A scaled constant "changes a conclusion" when any of these differs from the
unscaled result.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from kpkeys_sim import __version__
from kpkeys_sim.analysis.calibration import CalibrationTable, get_calibration
from kpkeys_sim.analysis.cost import CostInstrument, Priced, price
from kpkeys_sim.analysis.tlb_reach import LinearMapShape, linear_map_shape
from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.config import KernelConfig, config_from_mapping, load_config
from kpkeys_sim.workloads import RunCounts, Size, Workload
from kpkeys_sim.workloads.kernbench import KERNBENCH, Kernbench, load_mix
from kpkeys_sim.workloads.micromm import MICROMM_FORK, MICROMM_MUNMAP
from kpkeys_sim.workloads.test_vmalloc import (
    FIX_SIZE_ALLOC_TEST,
    RANDOM_SIZE_ALLOC_TEST,
    VM_MAP_RAM_TEST,
)

__all__ = [
    "CONFIGS",
    "SUITES",
    "WORKLOADS",
    "BenchConfig",
    "BenchResult",
    "Benchmark",
    "Row",
    "baseline_of",
    "compare_v6_v7",
    "format_table",
    "resolve_benchmarks",
    "resolve_config",
    "run_matrix",
    "run_suite",
    "run_workload",
    "sensitivity",
]

#: Benchmark name -> workload.
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        MICROMM_FORK,
        MICROMM_MUNMAP,
        FIX_SIZE_ALLOC_TEST,
        RANDOM_SIZE_ALLOC_TEST,
        VM_MAP_RAM_TEST,
        KERNBENCH,
    )
}

#: Target CPU name -> the architecture of the kernel model that produces the counts:
#: ``x86-pks`` boots the x86-64 kernel model (direct map with 1G/2M pages, CPA, the
#: kpkeys port on IA32_PKRS; ``kernel/arch/x86_*.py``) and prices its events with the
#: x86 table.
TARGET_ARCH = {"arm64-poe": "arm64", "x86-pks": "x86"}


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """A named configuration: KernelConfig fields (``arch`` comes from the target)."""

    name: str
    description: str
    fields: Mapping[str, Any]

    def kernel_config(self, arch: str, seed: int, ram_size: int) -> KernelConfig:
        """The KernelConfig of this configuration on ``arch`` (validated)."""
        data = {**self.fields, "arch": arch, "seed": seed, "ram_size": ram_size}
        return config_from_mapping(data, source=f"configuration {self.name!r}")


#: The v5 platform: no BBML2_NOABORT with rodata=full, so arm64 maps the linear map with
#: PTEs.  ``linear_map = "pte"`` says so explicitly (the same kernel on arm64) and gives
#: x86, whose direct map has no BBML2 constraint, the same page-granular direct map.
_NO_BBML2 = {"bbml2_noabort": False, "rodata_full": True, "linear_map": "pte"}
_BBML2 = {"bbml2_noabort": True, "rodata_full": True, "linear_map": "block"}

#: Configuration name -> configuration.
CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in (
        BenchConfig(
            "baseline",
            "feature off; PTE-mapped linear map (rodata=full, no BBML2: the v5 platform)",
            {**_NO_BBML2, "series": "v5", "kpkeys_hardened_pgtables": False},
        ),
        BenchConfig(
            "v5-nobatch",
            "RFC v5, no lazy-MMU batching; PTE-mapped linear map",
            {
                **_NO_BBML2,
                "series": "v5",
                "kpkeys_hardened_pgtables": True,
                "lazy_mmu_batching": False,
            },
        ),
        BenchConfig(
            "v5-batch",
            "RFC v5 with lazy-MMU batching; PTE-mapped linear map",
            {
                **_NO_BBML2,
                "series": "v5",
                "kpkeys_hardened_pgtables": True,
                "lazy_mmu_batching": True,
            },
        ),
        BenchConfig(
            "baseline-bbml2",
            "feature off; block-mapped linear map (BBML2_NOABORT system)",
            {**_BBML2, "series": "v6", "kpkeys_hardened_pgtables": False},
        ),
        BenchConfig(
            "v6",
            "block-mapped linear map with the PBA, batched (BBML2_NOABORT system)",
            {
                **_BBML2,
                "series": "v6",
                "kpkeys_hardened_pgtables": True,
                "lazy_mmu_batching": True,
            },
        ),
        BenchConfig(
            "v6-pte",
            "v6 without BBML2: PTE-mapped linear map, noblock allocator, batched",
            {
                **_NO_BBML2,
                "series": "v6",
                "kpkeys_hardened_pgtables": True,
                "lazy_mmu_batching": True,
            },
        ),
        BenchConfig(
            "v7",
            "RFC v7: PTE-mapped linear map forced by the feature, batched (BBML2 system)",
            {
                **_BBML2,
                "series": "v7",
                "kpkeys_hardened_pgtables": True,
                "lazy_mmu_batching": True,
            },
        ),
    )
}


def baseline_of(cfg: KernelConfig) -> KernelConfig:
    """The baseline of ``cfg``: the same kernel and platform with the feature off.

    ``lazy_mmu_batching`` only changes kpkeys behaviour, so it is normalised
    (to True) for the baseline; every other field is kept.
    """
    return cfg.replace(kpkeys_hardened_pgtables=False, lazy_mmu_batching=True)


def resolve_config(spec: str) -> BenchConfig:
    """A named configuration or a TOML file of KernelConfig keys; ToolError names a bad one."""
    c = CONFIGS.get(spec)
    if c is not None:
        return c
    p = Path(spec)
    if spec.endswith(".toml") or p.is_file():
        if not p.is_file():
            raise ToolError(f"bad --config {spec!r}: no such configuration file")
        cfg = load_config(p)
        data = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
        for f in ("arch", "seed", "ram_size"):
            data.pop(f)
        return BenchConfig(p.stem, f"configuration file {p}", data)
    known = ", ".join(CONFIGS)
    raise ToolError(f"unknown configuration {spec!r} (known: {known}; or a TOML file)")


@dataclass(frozen=True, slots=True)
class Benchmark:
    """One row of the matrix: a workload with one parameter set."""

    name: str
    params: Mapping[str, int]

    @property
    def label(self) -> str:
        """``micromm/fork h:0`` style label (kernbench is labelled with its result class)."""
        if self.name == "kernbench":
            return "kernbench syst"
        return " ".join([self.name, *(f"{k}:{v}" for k, v in self.params.items())])


_V5_MATRIX: list[tuple[str, dict[str, int]]] = [
    ("micromm/fork", {"h": 0}),
    ("micromm/fork", {"h": 1}),
    ("micromm/munmap", {"h": 0}),
    ("micromm/munmap", {"h": 1}),
    *[("test_vmalloc/fix_size_alloc_test", {"p": p, "h": 0}) for p in (1, 4, 16, 64, 256)],
    *[("test_vmalloc/fix_size_alloc_test", {"p": p, "h": 1}) for p in (16, 64, 256)],
    ("test_vmalloc/random_size_alloc_test", {"p": 1, "h": 0}),
    ("test_vmalloc/vm_map_ram_test", {"p": 1, "h": 0}),
    ("kernbench", {}),
]

#: Suite name -> (benchmarks, configuration names).
SUITES: dict[str, tuple[list[Benchmark], list[str]]] = {
    "series-v5": (
        [Benchmark(n, p) for n, p in _V5_MATRIX],
        ["baseline", "v5-nobatch", "v5-batch"],
    ),
    "v6-v7": (
        [Benchmark(n, p) for n, p in _V5_MATRIX],
        ["baseline-bbml2", "v6", "v7"],
    ),
}


def resolve_benchmarks(names: Sequence[str], size: Size) -> list[Benchmark]:
    """Benchmarks of the named workloads, each with all its parameter sets."""
    out: list[Benchmark] = []
    for n in names:
        w = WORKLOADS.get(n)
        if w is None:
            known = ", ".join(WORKLOADS)
            raise ToolError(f"unknown workload {n!r} (known: {known})")
        out.extend(Benchmark(n, p) for p in w.param_sets(size))
    return out


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One workload run on one kernel configuration: its counts and linear-map shape."""

    config: KernelConfig
    counts: RunCounts
    shape: LinearMapShape
    kernel_ws: int
    wall_s: float


def _rng_seed(seed: int, bench: Benchmark) -> list[int]:
    key = bench.name + "".join(f";{k}={v}" for k, v in sorted(bench.params.items()))
    return [seed, zlib.crc32(key.encode())]


def run_workload(
    bench: Benchmark,
    cfg: KernelConfig,
    size: Size,
    seed: int,
    kernel_ws: int | None = None,
    workload: Workload | None = None,
    iterations: int | None = None,
) -> RunRecord:
    """Boot a fresh kernel with ``cfg``, run ``bench`` on it, return the counts and shape.

    The cost instrument is attached after boot, so boot is not counted; the
    workload resets it after its own setup.  The workload's random choices
    come from a generator seeded from ``seed`` and the benchmark (the same
    for a configuration and its baseline).  The linear-map shape is read at
    the end of the run (splits only accumulate).
    """
    from kpkeys_sim.kernel.boot import boot

    w = workload if workload is not None else WORKLOADS[bench.name]
    t0 = time.perf_counter()
    k = boot(cfg)
    counter = CostInstrument()
    k.machine.instruments.add(counter)
    rng = np.random.default_rng(_rng_seed(seed, bench))
    counts = w.run(k, counter, bench.params, size, rng, iterations)
    k.machine.instruments.remove(counter)
    shape = linear_map_shape(k)
    ws = kernel_ws if kernel_ws is not None else w.default_kernel_ws(bench.params, size)
    return RunRecord(cfg, counts, shape, ws, time.perf_counter() - t0)


@dataclass(frozen=True, slots=True)
class _Unit:
    bench: Benchmark
    cfg: KernelConfig
    size: Size
    seed: int
    kernel_ws: int | None
    mix: str | None
    iterations: int | None


def _run_unit(u: _Unit) -> RunRecord:
    w: Workload | None = None
    if u.mix is not None and u.bench.name == "kernbench":
        w = Kernbench(load_mix(u.mix))
    return run_workload(u.bench, u.cfg, u.size, u.seed, u.kernel_ws, w, u.iterations)


@dataclass(frozen=True, slots=True)
class Row:
    """One (benchmark, parameter set, configuration) result."""

    bench: Benchmark
    config: str
    arch: str
    run: RunRecord
    base: RunRecord
    priced: Priced
    base_priced: Priced

    @property
    def cycles(self) -> int:
        """Priced cycles of the configuration's run."""
        return self.priced.cycles_int

    @property
    def baseline_cycles(self) -> int:
        """Priced cycles of the baseline run."""
        return self.base_priced.cycles_int

    @property
    def overhead_pct(self) -> float:
        """``100 * (cycles - baseline_cycles) / baseline_cycles`` (exact, then rounded to 1e-4)."""
        return _overhead(self.priced.cycles, self.base_priced.cycles)

    def as_dict(self, verbose: bool = False) -> dict[str, Any]:
        """The JSON row."""
        d: dict[str, Any] = {
            "benchmark": self.bench.name,
            "params": dict(self.bench.params),
            "config": self.config,
            "arch": self.arch,
            "counters": dict(self.run.counts.events.counts),
            "cycles": self.cycles,
            "baseline_cycles": self.baseline_cycles,
            "overhead_pct": self.overhead_pct,
            "baseline_counters": dict(self.base.counts.events.counts),
            "iterations": self.run.counts.iterations.as_dict(),
            "tlb_reach": self.priced.reach.as_dict(),
            "baseline_tlb_reach": self.base_priced.reach.as_dict(),
            "linear_map": self.run.shape.counts(),
            "baseline_linear_map": self.base.shape.counts(),
        }
        if verbose:
            d["cycles_by_constant"] = {k: round(v) for k, v in self.priced.by_constant.items()}
            d["baseline_cycles_by_constant"] = {
                k: round(v) for k, v in self.base_priced.by_constant.items()
            }
        return d


def _overhead(cycles: Fraction, base: Fraction) -> float:
    if base == 0:
        return 0.0
    return round(float((cycles - base) * 100 / base), 4)


@dataclass
class BenchResult:
    """The rows of a matrix run, with what is needed to re-price them."""

    rows: list[Row]
    configs: list[str]
    benchmarks: list[Benchmark]
    target: str
    calibration: CalibrationTable
    seed: int
    size: Size
    suite: str | None = None
    wall_s: float = 0.0
    sensitivity: list[dict[str, Any]] | None = field(default=None)

    def as_dict(self, verbose: bool = False) -> dict[str, Any]:
        """The JSON document (deterministic: no timings)."""
        d: dict[str, Any] = {
            "rows": [r.as_dict(verbose) for r in self.rows],
            "calibration": self.calibration.as_dict(),
            "version": __version__,
            "seed": self.seed,
            "suite": self.suite,
            "size": self.size,
            "target": self.target,
            "kernel_arch": TARGET_ARCH[self.target],
            "configs": {n: _config_doc(n) for n in self.configs},
        }
        if self.sensitivity is not None:
            d["sensitivity"] = self.sensitivity
        return d

    def to_json(self, verbose: bool = False) -> str:
        """The JSON document as text (sorted keys, byte-identical for the same seed)."""
        return json.dumps(self.as_dict(verbose), sort_keys=True, indent=1) + "\n"

    def row(self, benchmark: str, params: Mapping[str, int], config: str) -> Row:
        """The row of ``benchmark``/``params``/``config`` (KeyError if absent)."""
        for r in self.rows:
            if (
                r.bench.name == benchmark
                and dict(r.bench.params) == dict(params)
                and (r.config == config)
            ):
                return r
        raise KeyError((benchmark, dict(params), config))


def _config_doc(name: str) -> str:
    c = CONFIGS.get(name)
    return c.description if c is not None else "configuration file"


ProgressFn = Callable[[int, int, str], None]


def run_matrix(
    benchmarks: Sequence[Benchmark],
    configs: Sequence[str],
    target: str = "arm64-poe",
    seed: int = 0,
    size: Size = "full",
    *,
    kernel_ws: int | None = None,
    mix: str | None = None,
    iterations: int | None = None,
    jobs: int = 1,
    progress: ProgressFn | None = None,
) -> BenchResult:
    """Run every benchmark under every configuration (and each one's baseline), price them.

    ``configs`` are names or TOML paths (:func:`resolve_config`); ``target``
    names the calibration table and the machine architecture; ``kernel_ws``
    overrides every workload's default kernel working set; ``mix`` is a
    kernbench mix file (default: the shipped one); ``iterations`` overrides
    the workloads' iteration counts.  Each distinct (benchmark, kernel
    configuration) runs once; with ``jobs > 1`` the runs are spread over that
    many worker processes (the results do not depend on it).
    """
    t0 = time.perf_counter()
    cal = get_calibration(target)
    arch = TARGET_ARCH[cal.name]
    bcs = [resolve_config(c) for c in configs]
    if mix is not None:
        load_mix(mix)
    plan: list[tuple[int, str, KernelConfig, KernelConfig]] = []
    units: dict[tuple[int, KernelConfig], _Unit] = {}
    for bi, bench in enumerate(benchmarks):
        w = WORKLOADS[bench.name]
        ram = w.ram_size(bench.params, size)
        for bc in bcs:
            cfg = bc.kernel_config(arch, seed, ram)
            base_cfg = baseline_of(cfg)
            plan.append((bi, bc.name, cfg, base_cfg))
            for c in (base_cfg, cfg):
                units.setdefault((bi, c), _Unit(bench, c, size, seed, kernel_ws, mix, iterations))
    records = _execute(units, jobs, progress)
    rows: list[Row] = []
    for bi, name, cfg, base_cfg in plan:
        run, base = records[(bi, cfg)], records[(bi, base_cfg)]
        rows.append(_make_row(benchmarks[bi], name, cal.name, run, base, cal))
    return BenchResult(
        rows,
        [b.name for b in bcs],
        list(benchmarks),
        cal.name,
        cal,
        seed,
        size,
        wall_s=time.perf_counter() - t0,
    )


def _execute(
    units: Mapping[tuple[int, KernelConfig], _Unit], jobs: int, progress: ProgressFn | None
) -> dict[tuple[int, KernelConfig], RunRecord]:
    total = len(units)
    out: dict[tuple[int, KernelConfig], RunRecord] = {}
    if jobs <= 1 or total <= 1:
        for i, (key, u) in enumerate(units.items()):
            if progress is not None:
                progress(i, total, u.bench.label)
            out[key] = _run_unit(u)
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(jobs, total), mp_context=ctx) as ex:
            futs = {ex.submit(_run_unit, u): key for key, u in units.items()}
            for done, fut in enumerate(as_completed(futs), 1):
                out[futs[fut]] = fut.result()
                if progress is not None:
                    progress(done, total, units[futs[fut]].bench.label)
    if progress is not None:
        progress(total, total, "done")
    return out


def _make_row(
    bench: Benchmark,
    name: str,
    target: str,
    run: RunRecord,
    base: RunRecord,
    cal: CalibrationTable,
) -> Row:
    p = price(run.counts.events, cal, run.shape, run.kernel_ws)
    bp = price(base.counts.events, cal, base.shape, base.kernel_ws)
    return Row(bench, name, target, run, base, p, bp)


def run_suite(
    suite: str,
    configs: Sequence[str] | None = None,
    arch: str = "arm64-poe",
    seed: int = 0,
    size: Size = "full",
    progress: ProgressFn | None = None,
    jobs: int = 1,
) -> BenchResult:
    """Run a named suite (``series-v5``, ``v6-v7``); ``configs`` overrides its configurations.

    ``arch`` is the target CPU name (``arm64-poe`` or ``x86-pks``); ``jobs``
    worker processes run the kernels (results do not depend on it).
    """
    try:
        benches, default_configs = SUITES[suite]
    except KeyError:
        raise ToolError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})") from None
    res = run_matrix(
        benches,
        list(configs) if configs else default_configs,
        arch,
        seed,
        size,
        progress=progress,
        jobs=jobs,
    )
    res.suite = suite
    return res


def compare_v6_v7(
    arch: str = "arm64-poe",
    seed: int = 0,
    size: Size = "full",
    progress: ProgressFn | None = None,
    jobs: int = 1,
) -> BenchResult:
    """The v6-vs-v7 comparison: the v5 benchmark matrix under baseline-bbml2, v6 and v7.

    v6 keeps the block-mapped linear map (PBA); v7 forces it PTE-mapped, so
    its overhead against the block-mapped baseline includes the TLB-reach
    cost of the linear map (see each row's ``linear_map`` and ``tlb_reach``).
    """
    return run_suite("v6-v7", None, arch, seed, size, progress, jobs)


# --- sensitivity -------------------------------------------------------------------------------

_CLASSES = ((1.0, "<1%"), (5.0, "1-5%"))


def _class(pct: float) -> str:
    for limit, name in _CLASSES:
        if pct < limit:
            return name
    return ">=5%"


def _conclusions(res: BenchResult, overheads: Mapping[tuple[str, str], float]) -> dict[str, str]:
    """Conclusion id -> value, for the overheads ``(bench label, config) -> pct``."""
    out: dict[str, str] = {}
    feature_configs = [c for c in res.configs if not _is_baseline(res, c)]
    for b in res.benchmarks:
        for c in feature_configs:
            out[f"{b.label} [{c}] class"] = _class(overheads[(b.label, c)])
        for i, a in enumerate(feature_configs):
            for c in feature_configs[i + 1 :]:
                x = round(overheads[(b.label, a)], 1)
                y = round(overheads[(b.label, c)], 1)
                rel = "<" if x < y else (">" if x > y else "=")
                out[f"{b.label} [{a} vs {c}] order"] = rel
    return out


def _is_baseline(res: BenchResult, config: str) -> bool:
    return all(r.run is r.base for r in res.rows if r.config == config)


def _overheads(res: BenchResult, cal: CalibrationTable) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for r in res.rows:
        p = price(r.run.counts.events, cal, r.run.shape, r.run.kernel_ws).cycles
        bp = price(r.base.counts.events, cal, r.base.shape, r.base.kernel_ws).cycles
        out[(r.bench.label, r.config)] = _overhead(p, bp)
    return out


def sensitivity(res: BenchResult) -> list[dict[str, Any]]:
    """Scale each constant by 0.5 and 2, re-price, report the conclusions that change.

    Returns one entry per constant and factor: ``{"constant", "factor",
    "changes": [{"conclusion", "from", "to"}, ...], "max_abs_delta_pp"}``.
    The result is also stored in ``res.sensitivity``.
    """
    base_oh = _overheads(res, res.calibration)
    base_c = _conclusions(res, base_oh)
    out: list[dict[str, Any]] = []
    for name in sorted(res.calibration.constants):
        for factor in (Fraction(1, 2), Fraction(2)):
            cal = res.calibration.scaled(name, factor)
            oh = _overheads(res, cal)
            conc = _conclusions(res, oh)
            changes = [
                {"conclusion": k, "from": base_c[k], "to": v}
                for k, v in conc.items()
                if v != base_c[k]
            ]
            delta = max((abs(oh[k] - base_oh[k]) for k in oh), default=0.0)
            out.append(
                {
                    "constant": name,
                    "factor": float(factor),
                    "changes": changes,
                    "max_abs_delta_pp": round(delta, 4),
                }
            )
    res.sensitivity = out
    return out


# --- text output ---------------------------------------------------------------------------------


def format_table(res: BenchResult, verbose: bool = False) -> str:
    """An mmtests-style comparison table: one row per benchmark, one column per configuration.

    Each cell is the priced Mcycles and, in parentheses, the overhead against
    that configuration's own baseline (the same kernel with the feature off).
    With ``verbose``, each row is followed by the event counts that differ
    from the baseline and the cycles they account for.
    """
    cal = res.calibration
    head = (
        f"kpkeys-sim bench: target {res.target} ({cal.cpu}); size {res.size}; seed {res.seed}"
        + (f"; suite {res.suite}" if res.suite else "")
    )
    lines = [head, "cells: Mcycles (overhead vs the same kernel with the feature off)", ""]
    width = max([len(b.label) for b in res.benchmarks] + [10]) + 2
    colw = 24
    lines.append(" " * width + "".join(f"{c:>{colw}}" for c in res.configs))
    by_key = {(r.bench.label, r.config): r for r in res.rows}
    for b in res.benchmarks:
        cells = []
        for c in res.configs:
            r = by_key[(b.label, c)]
            cells.append(f"{r.cycles / 1e6:>11.3f} ({r.overhead_pct:>7.2f}%)")
        lines.append(f"{b.label:<{width}}" + "".join(f"{x:>{colw}}" for x in cells))
        if verbose:
            lines.extend(_explain(b, res, by_key))
    lines.append("")
    for c in res.configs:
        lines.append(f"  {c}: {_config_doc(c)}")
    if res.sensitivity is not None:
        lines.append("")
        lines.extend(format_sensitivity(res.sensitivity))
    return "\n".join(lines)


def _explain(b: Benchmark, res: BenchResult, by_key: Mapping[tuple[str, str], Row]) -> list[str]:
    out = []
    for c in res.configs:
        r = by_key[(b.label, c)]
        if r.run is r.base:
            continue
        ev = r.run.counts.events.counts
        bev = r.base.counts.events.counts
        diffs = [
            f"{k}={ev.get(k, 0)}({ev.get(k, 0) - bev.get(k, 0):+d})"
            for k in sorted(set(ev) | set(bev))
            if ev.get(k, 0) != bev.get(k, 0)
        ]
        pc = r.priced.by_constant
        bpc = r.base_priced.by_constant
        cyc = sorted(
            ((k, pc.get(k, Fraction(0)) - bpc.get(k, Fraction(0))) for k in set(pc) | set(bpc)),
            key=lambda kv: -abs(kv[1]),
        )
        top = ", ".join(f"{k} {round(v):+d}" for k, v in cyc if round(v) != 0)
        out.append(f"    [{c}] events vs baseline: {' '.join(diffs) or 'none'}")
        out.append(f"    [{c}] extra cycles by constant: {top or 'none'}")
        lm = r.run.shape.counts()
        blm = r.base.shape.counts()
        if lm != blm:
            out.append(f"    [{c}] linear map leaves: {lm} (baseline {blm})")
    return out


def format_sensitivity(sens: Sequence[Mapping[str, Any]]) -> list[str]:
    """The sensitivity summary: one line per constant with the changes at x0.5 and x2."""
    lines = [
        "sensitivity: each constant x0.5 and x2, re-priced from the same counts;",
        "conclusions = overhead class (<1%, 1-5%, >=5%) per row and the order of configurations",
        f"{'constant':<24}{'max |delta| pp':>16}  conclusions changed (x0.5 | x2)",
    ]
    by_const: dict[str, dict[float, Mapping[str, Any]]] = {}
    for e in sens:
        by_const.setdefault(e["constant"], {})[e["factor"]] = e
    for name, ent in by_const.items():
        half, dbl = ent[0.5], ent[2.0]
        delta = max(half["max_abs_delta_pp"], dbl["max_abs_delta_pp"])
        line = f"{name:<24}{delta:>16.3f}  {len(half['changes']):>3} | {len(dbl['changes']):<3}"
        lines.append((line + _first_change(half, dbl)).rstrip())
    return lines


def _first_change(half: Mapping[str, Any], dbl: Mapping[str, Any]) -> str:
    for e, tag in ((half, "x0.5"), (dbl, "x2")):
        if e["changes"]:
            c = e["changes"][0]
            return f"  e.g. {tag}: {c['conclusion']} {c['from']} -> {c['to']}"
    return ""
