"""The HTML report and the run summary, rendered from a results store and nothing else.

:func:`render_report` turns a :class:`~kpkeys_sim.analysis.store.ResultStore`
into one self-contained HTML page (jinja2 template
``templates/report.html.j2``; no JavaScript, no network; figures are inline
SVG from :mod:`kpkeys_sim.analysis.plots`).  Because the page is a function
of the store alone, ``kpkeys-sim report DB --html OUT`` regenerates a run's
report byte for byte, and the same seed gives the same page.

The rows the main job writes (:mod:`kpkeys_sim.analysis.mainjob`) and what the
report reads from them:

``main/arch``    ``results.vectors``: ``[{name, passed, detail}]``
``main/boot``    ``results``: ``label``, ``log``, ``facts`` (name -> number)
``main/kunit``   ``results``: ``series``, ``ktap``, counts, ``suites``
``main/bench``   ``results``: a bench row (``analysis/bench.py``, verbose) plus
                 ``label``, ``is_baseline``
``main/v6v7``    the same, for the v6-vs-v7 suite on the default machine's target
``main/v6v7-other``  the same suite on the other target (x86-pks for an arm64
                 machine, arm64-poe for an x86 one); the report puts the two
                 targets' v6 and v7 overheads side by side
``main/attack``  ``results``: a campaign cell plus ``explanation``
``main/attack-exposure``  ``results``: an S14 exposure row
``main/pba``     ``results``: ``samples``, ``markers``, ``stats``

Store-wide facts are in the ``run`` meta key: version, seed, quick, the
resolved configuration and the comparison configurations, each section's
status (``ok``, ``unavailable`` with what is missing, or ``failed`` with the
error), the calibration tables and the text of ``docs/model-assumptions.md``.
Rows of other experiments (sweeps) are listed in a generic table.

:func:`compare_stores` is ``kpkeys-sim report --compare A B``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from markdown_it import MarkdownIt

from kpkeys_sim import __version__
from kpkeys_sim.analysis import plots
from kpkeys_sim.analysis.store import SCHEMA_VERSION, ResultRow, ResultStore
from kpkeys_sim.kernel.config import config_docs

__all__ = [
    "SECTIONS",
    "Comparison",
    "compare_stores",
    "render_comparison_html",
    "render_report",
    "summary_lines",
]

#: Section id -> title, in page order (the ids are the HTML anchors).
SECTIONS: dict[str, str] = {
    "arch": "Architecture self-checks",
    "boot": "Booted machines",
    "kunit": "KUnit results",
    "bench": "Benchmark matrix (series v5)",
    "v6v7": "v6 vs v7 (block vs PTE linear map)",
    "v6v7-other": "v6 vs v7 on the other architecture",
    "attack": "Attack matrix",
    "pba": "PBA over the run",
}

#: v6-vs-v7 section id -> its experiment.
_V6V7_EXPERIMENTS = {"v6v7": "main/v6v7", "v6v7-other": "main/v6v7-other"}

#: The benchmark targets, in the order the side-by-side comparison shows them.
_TARGETS = ("arm64-poe", "x86-pks")

_TOC = [
    ("summary", "Summary"),
    ("configuration", "Configuration and version"),
    ("arch", "Architecture self-checks"),
    ("boot", "Booted machines"),
    ("kunit", "KUnit results"),
    ("bench", "Benchmark matrix"),
    ("breakdown", "Where the overhead comes from"),
    ("v6v7", "v6 vs v7 (block vs PTE linear map)"),
    ("v6v7-other", "v6 vs v7 on the other architecture"),
    ("attack", "Attack matrix"),
    ("pba", "PBA over the run"),
    ("assumptions", "Assumptions and calibration"),
]


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kpkeys_sim.analysis", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
    )


# --- reading the store -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Data:
    """The store's rows grouped by experiment, and the run's meta."""

    run: Mapping[str, Any]
    by_exp: Mapping[str, list[ResultRow]]

    def rows(self, experiment: str) -> list[ResultRow]:
        return self.by_exp.get(experiment, [])

    def section(self, sid: str) -> dict[str, str]:
        for s in self.run.get("sections", []):
            if s["id"] == sid:
                return {"status": s["status"], "detail": s.get("detail", "")}
        if not self.run:
            return {"status": "absent", "detail": "the store was not written by kpkeys-sim run"}
        return {"status": "absent", "detail": f"no {SECTIONS.get(sid, sid)} section"}


def _load(store: ResultStore) -> _Data:
    by_exp: dict[str, list[ResultRow]] = defaultdict(list)
    for row in store.rows():
        by_exp[row.experiment].append(row)
    meta = store.meta()
    run = meta.get("run", {})
    return _Data(run if isinstance(run, dict) else {}, dict(by_exp))


# --- formatting helpers -----------------------------------------------------------------------


def _pct(v: float) -> str:
    return f"{v:+.2f}%"


def _int(v: int | float) -> str:
    return f"{int(v):,}"


def _bench_label(res: Mapping[str, Any]) -> str:
    label = res.get("label")
    if isinstance(label, str):
        return label
    params = res.get("params", {})
    return " ".join([str(res.get("benchmark", "?")), *(f"{k}:{v}" for k, v in params.items())])


def _chart_label(label: str) -> str:
    """A benchmark label short enough for a chart axis on a phone."""
    label = label.replace("test_vmalloc/", "vmalloc/")
    for suffix in ("_alloc_test", "_test"):
        label = label.replace(suffix + " ", " ").removesuffix(suffix)
    return label


def _ordered(rows: Iterable[ResultRow], key: str = "order") -> list[ResultRow]:
    return sorted(rows, key=lambda r: (r.results.get(key, 0), r.experiment, r.config_hash))


# --- sections ---------------------------------------------------------------------------------


def _configuration(d: _Data) -> dict[str, Any] | None:
    cfg = d.run.get("config")
    if not isinstance(cfg, dict):
        return None
    comps: dict[str, Any] = d.run.get("comparison_configs", {})
    columns = ["default machine", *comps]
    docs = config_docs()
    rows = []
    for name in [*[n for n in docs if n in cfg], *[n for n in cfg if n not in docs]]:
        values = [{"text": _fmt_value(cfg[name]), "changed": False}]
        for comp in comps.values():
            v = comp["config"].get(name, cfg[name])
            values.append({"text": _fmt_value(v), "changed": v != cfg[name]})
        rows.append({"name": name, "values": values, "doc": docs.get(name, "")})
    return {"columns": columns, "rows": rows}


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int) and v >= 1 << 20 and v % (1 << 20) == 0:
        return f"{v >> 20} MiB" if v < 1 << 30 or v % (1 << 30) else f"{v >> 30} GiB"
    return str(v)


def _arch(d: _Data) -> dict[str, Any] | None:
    rows = d.rows("main/arch")
    if not rows:
        return None
    vectors = rows[0].results.get("vectors", [])
    passed = sum(1 for v in vectors if v["passed"])
    return {
        "vectors": vectors,
        "passed": passed,
        "failed": len(vectors) - passed,
        "total": len(vectors),
    }


def _boot(d: _Data) -> dict[str, Any] | None:
    rows = _ordered(d.rows("main/boot"))
    if not rows:
        return None
    headers: list[str] = []
    for r in rows:
        for h, _ in r.results.get("facts", []):
            if h not in headers:
                headers.append(h)
    machines = []
    for r in rows:
        facts = dict(r.results.get("facts", []))
        machines.append(
            {
                "label": r.results.get("label", "?"),
                "cells": [_int(facts[h]) if h in facts else "–" for h in headers],
                "log": list(r.results.get("log", [])),
            }
        )
    return {"headers": headers, "machines": machines}


def _kunit(d: _Data) -> list[dict[str, Any]] | None:
    rows = sorted(d.rows("main/kunit"), key=lambda r: str(r.results.get("series")))
    if not rows:
        return None
    return [dict(r.results) for r in rows]


def _bench_rows(d: _Data, experiment: str) -> list[ResultRow]:
    return _ordered(d.rows(experiment))


def _bench(d: _Data) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    rows = _bench_rows(d, "main/bench")
    if not rows:
        return None, None
    configs = _configs_in_order(rows)
    feature = [c for c in configs if not _is_baseline(rows, c)]
    labels = _labels_in_order(rows)
    by = {(_bench_label(r.results), r.results["config"]): r.results for r in rows}
    nice = {c: _config_title(d, c) for c in configs}
    series = {nice[c]: [float(by[(lb, c)]["overhead_pct"]) for lb in labels] for c in feature}
    fig = plots.grouped_hbar_svg(
        "bench-overhead",
        "Overhead vs the baseline (%)",
        [_chart_label(lb) for lb in labels],
        series,
        "overhead (%) — lower is better",
    )
    headers = ["benchmark", "configuration", "Mcycles", "baseline Mcycles", "overhead"]
    table = []
    for lb in labels:
        for c in configs:
            res = by[(lb, c)]
            table.append(
                [
                    _chart_label(lb),
                    c,
                    f"{res['cycles'] / 1e6:.3f}",
                    f"{res['baseline_cycles'] / 1e6:.3f}",
                    _pct(float(res["overhead_pct"])),
                ]
            )
    bench = {
        "intro": (
            "The series' v5 benchmark matrix (spec kpkeys-series.md §6.2) re-enacted on the "
            "model: each benchmark runs on a freshly booted kernel with and without the feature, "
            "both runs are priced by the same calibrated cost model, and the overhead is the "
            "difference over the baseline. Configurations: "
            + "; ".join(f"{c}: {d.run.get('bench_configs', {}).get(c, '')}" for c in configs)
            + "."
        ),
        "figures": [
            {
                "svg": fig,
                "caption": "Overhead of each configuration over its own baseline "
                "(same kernel, feature off), with and without lazy-MMU batching.",
            }
        ],
        "headers": headers,
        "rows": table,
    }
    return bench, _breakdown(d, rows, labels, feature)


def _configs_in_order(rows: Sequence[ResultRow]) -> list[str]:
    out: list[str] = []
    for r in rows:
        c = r.results["config"]
        if c not in out:
            out.append(c)
    return out


def _labels_in_order(rows: Sequence[ResultRow]) -> list[str]:
    out: list[str] = []
    for r in rows:
        lb = _bench_label(r.results)
        if lb not in out:
            out.append(lb)
    return out


def _is_baseline(rows: Sequence[ResultRow], config: str) -> bool:
    return all(bool(r.results.get("is_baseline")) for r in rows if r.results["config"] == config)


def _config_title(d: _Data, name: str) -> str:
    titles: Mapping[str, str] = d.run.get("bench_config_titles", {})
    return titles.get(name, name)


def _delta(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: int(a.get(k, 0)) - int(b.get(k, 0)) for k in sorted(set(a) | set(b))}


def _breakdown(
    d: _Data, rows: Sequence[ResultRow], labels: Sequence[str], feature: Sequence[str]
) -> dict[str, Any]:
    by = {(_bench_label(r.results), r.results["config"]): r.results for r in rows}
    parts: dict[tuple[str, str], dict[str, float]] = {}
    totals: dict[str, float] = defaultdict(float)
    for lb in labels:
        for c in feature:
            res = by[(lb, c)]
            base = float(res["baseline_cycles"]) or 1.0
            extra = _delta(
                res.get("cycles_by_constant", {}), res.get("baseline_cycles_by_constant", {})
            )
            parts[(lb, c)] = {k: 100.0 * v / base for k, v in extra.items() if v}
            for k, v in parts[(lb, c)].items():
                totals[k] += abs(v)
    # the same components, in the same order (so the same colours), in every figure
    top = [k for k, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:7]]
    figures = []
    for i, c in enumerate(feature):
        components: dict[str, list[float]] = {k: [] for k in top}
        if len(totals) > len(top):
            components["other"] = []
        for lb in labels:
            part = parts[(lb, c)]
            for k in top:
                components[k].append(part.get(k, 0.0))
            if "other" in components:
                components["other"].append(sum(v for k, v in part.items() if k not in top))
        title = _config_title(d, c)
        svg = plots.stacked_hbar_svg(
            f"bench-breakdown-{i}",
            f"{title}: overhead by constant",
            [_chart_label(lb) for lb in labels],
            components,
            "share of the baseline's cycles (%)",
        )
        figures.append(
            {"svg": svg, "caption": f"Where the overhead of {c} comes from, per benchmark."}
        )
    tables = []
    for lb in labels:
        base_counts: Mapping[str, int] = next(
            (by[(lb, c)].get("baseline_counters", {}) for c in feature), {}
        )
        kinds = sorted(set(base_counts).union(*(by[(lb, c)].get("counters", {}) for c in feature)))
        headers = ["event", "baseline", *feature]
        trows = []
        for kind in kinds:
            cells = [kind, _int(base_counts.get(kind, 0))]
            changed = False
            for c in feature:
                n = int(by[(lb, c)].get("counters", {}).get(kind, 0))
                diff = n - int(base_counts.get(kind, 0))
                changed = changed or diff != 0
                cells.append(f"{_int(n)} ({diff:+,})" if diff else _int(n))
            if changed:
                trows.append(cells)
        cyc_rows = []
        for c in feature:
            res = by[(lb, c)]
            extra = _delta(
                res.get("cycles_by_constant", {}), res.get("baseline_cycles_by_constant", {})
            )
            top_c = sorted(((k, v) for k, v in extra.items() if v), key=lambda kv: -abs(kv[1]))
            cyc_rows.append(f"{c}: " + ", ".join(f"{k} {v:+,}" for k, v in top_c[:6]))
        tables.append(
            {
                "title": _chart_label(lb),
                "headers": headers,
                "rows": trows or [["(no event count differs from the baseline)", "", *feature]],
                "note": "Extra cycles by constant — " + "; ".join(cyc_rows),
            }
        )
    return {
        "intro": (
            "Each bar splits one overhead into the cost-model constants that priced the "
            "extra events (the configuration's priced cycles minus its baseline's, per "
            "constant, as a share of the baseline). pkey_reg_write and isb are the register "
            "switches the guards add; tlb_reach is the TLB capacity cost of the linear map's "
            "shape. The tables list every event count that differs from the baseline."
        ),
        "figures": figures,
        "tables": tables,
    }


def _target_of(rows: Sequence[ResultRow]) -> str:
    """The benchmark target (``arm64-poe`` or ``x86-pks``) of a suite's rows."""
    return str(rows[0].config.get("target", "?")) if rows else "?"


def _v6v7_intro(target: str, base_cfg: Sequence[str]) -> str:
    if target == "x86-pks":
        return (
            "The same benchmarks on the x86-64 kernel model, with the kpkeys design ported to "
            "PKS (IA32_PKRS) and priced with the x86 calibration table. The feature-off kernel "
            "keeps a direct map of 1 GiB and 2 MiB pages ("
            + ", ".join(base_cfg)
            + "); x86 has no BBML2 constraint, CPA splits large pages in place. v6 keeps the "
            "large pages and allocates page tables from the pkeys block allocator; v7 forces a "
            "4 KiB direct map, so its overhead includes the TLB-reach cost of mapping kernel "
            "data with 4K translations (analysis/tlb_reach.py)."
        )
    return (
        "The same benchmarks on a BBML2_NOABORT system, where the feature-off kernel keeps "
        "a block-mapped linear map ("
        + ", ".join(base_cfg)
        + "). v6 keeps the blocks and allocates page tables from the pkeys block "
        "allocator; v7 forces a PTE-mapped linear map, so its overhead includes the "
        "TLB-reach cost of mapping kernel data with 4K translations (analysis/tlb_reach.py)."
    )


def _v6v7(d: _Data, sid: str) -> dict[str, Any] | None:
    """The v6-vs-v7 section ``sid`` (one target's suite): figure, numbers, TLB-reach table."""
    rows = _bench_rows(d, _V6V7_EXPERIMENTS[sid])
    if not rows:
        return None
    target = _target_of(rows)
    configs = _configs_in_order(rows)
    feature = [c for c in configs if not _is_baseline(rows, c)]
    base_cfg = [c for c in configs if c not in feature]
    labels = _labels_in_order(rows)
    by = {(_bench_label(r.results), r.results["config"]): r.results for r in rows}
    series = {
        _config_title(d, c): [float(by[(lb, c)]["overhead_pct"]) for lb in labels] for c in feature
    }
    fig = plots.grouped_hbar_svg(
        f"{sid}-overhead",
        f"v6 vs v7 on {target}: overhead (%)",
        [_chart_label(lb) for lb in labels],
        series,
        "overhead (%) vs the block-mapped, feature-off baseline",
    )
    headers = ["benchmark", "configuration", "overhead", "TLB-reach Mcycles", "linear-map leaves"]
    table = []
    for lb in labels:
        for c in configs:
            res = by[(lb, c)]
            table.append(
                [
                    _chart_label(lb),
                    c,
                    _pct(float(res["overhead_pct"])),
                    f"{res.get('tlb_reach', {}).get('cycles', 0) / 1e6:.3f}",
                    _leaves(res.get("linear_map", {})),
                ]
            )
    reach_headers = [
        "benchmark",
        *[f"{c} reach Mcycles" for c in configs],
        *[f"{c} reach cost (% of baseline)" for c in feature],
    ]
    reach_rows = []
    for lb in labels:
        cells = [_chart_label(lb)]
        for c in configs:
            cells.append(f"{by[(lb, c)].get('tlb_reach', {}).get('cycles', 0) / 1e6:.3f}")
        for c in feature:
            res = by[(lb, c)]
            extra = res.get("tlb_reach", {}).get("cycles", 0) - res.get(
                "baseline_tlb_reach", {}
            ).get("cycles", 0)
            base = float(res["baseline_cycles"]) or 1.0
            cells.append(_pct(100.0 * extra / base))
        reach_rows.append(cells)
    return {
        "target": target,
        "intro": _v6v7_intro(target, base_cfg),
        "figures": [
            {
                "svg": fig,
                "caption": f"v6 vs v7 overhead on {target} against the block-mapped baseline.",
            }
        ],
        "headers": headers,
        "rows": table,
        "reach": {"headers": reach_headers, "rows": reach_rows},
    }


def _overheads_by(rows: Sequence[ResultRow]) -> dict[tuple[str, str], float]:
    """(benchmark label, configuration) -> overhead (%) of one suite's rows."""
    return {
        (_bench_label(r.results), r.results["config"]): float(r.results["overhead_pct"])
        for r in rows
    }


def _side_by_side(d: _Data) -> dict[str, Any] | None:
    """v6 and v7 overheads on both targets, one row per benchmark, with a generated comparison.

    Needs both v6-vs-v7 suites, on two different targets; the columns are in
    :data:`_TARGETS` order (arm64-poe first) whichever the default machine is.
    """
    suites: dict[str, list[ResultRow]] = {}
    for exp in _V6V7_EXPERIMENTS.values():
        rows = _bench_rows(d, exp)
        if rows:
            suites[_target_of(rows)] = rows
    targets = [t for t in _TARGETS if t in suites]
    targets += sorted(t for t in suites if t not in targets)
    if len(targets) < 2:
        return None
    per = {t: _overheads_by(suites[t]) for t in targets}
    feature_by = {
        t: [c for c in _configs_in_order(suites[t]) if not _is_baseline(suites[t], c)]
        for t in targets
    }
    feature = [c for c in feature_by[targets[0]] if all(c in feature_by[t] for t in targets)]
    labels = [
        lb
        for lb in _labels_in_order(suites[targets[0]])
        if all((lb, c) in per[t] for t in targets for c in feature)
    ]
    if not feature or not labels:
        return None
    headers = ["benchmark", *[f"{c} {t}" for t in targets for c in feature], "comparison"]
    table = []
    for lb in labels:
        cells = [_chart_label(lb)]
        cells += [_pct(per[t][(lb, c)]) for t in targets for c in feature]
        cells.append(
            _compare_line([{c: per[t][(lb, c)] for c in feature} for t in targets], targets)
        )
        table.append(cells)
    gmean = [
        {c: _geomean_overhead([per[t][(lb, c)] for lb in labels]) for c in feature} for t in targets
    ]
    table.append(
        ["geomean", *[_pct(g[c]) for g in gmean for c in feature], _compare_line(gmean, targets)]
    )
    role = {
        t: "this run's default machine"
        if suites[t][0].experiment == "main/v6v7"
        else "the other architecture"
        for t in targets
    }
    return {
        "intro": (
            "The same v6-vs-v7 suite, seed and workload size on both targets, each against its "
            "own feature-off, large-page baseline: "
            + " and ".join(f"{t} ({role[t]})" for t in targets)
            + ". The last column compares the two targets per benchmark; pp is percentage "
            "points of overhead."
        ),
        "headers": headers,
        "rows": table,
    }


def _compare_line(values: Sequence[Mapping[str, float]], targets: Sequence[str]) -> str:
    """One benchmark's comparison: the cost of v7 over v6 on each target, and which is higher.

    ``values[i]`` maps configuration -> overhead (%) on ``targets[i]``.
    """
    configs = list(values[0])
    if len(configs) >= 2:
        a, b = configs[0], configs[-1]
        gaps = [v[b] - v[a] for v in values]
        text = f"{b} − {a}: " + " vs ".join(
            f"{g:+.1f} pp on {t}" for g, t in zip(gaps, targets, strict=True)
        )
        worst = max(range(len(gaps)), key=lambda i: gaps[i])
        if len(gaps) == 2 and abs(gaps[0] - gaps[1]) < 0.5:
            return text + " (about the same)"
        return text + f" (larger on {targets[worst]})"
    c = configs[0]
    return f"{c}: " + " vs ".join(
        f"{_pct(v[c])} on {t}" for v, t in zip(values, targets, strict=True)
    )


def _leaves(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {_int(v)}" for k, v in counts.items() if v) or "–"


def _attack(d: _Data) -> dict[str, Any] | None:
    rows = _ordered(d.rows("main/attack"))
    if not rows:
        return None
    cells = [dict(r.results) for r in rows]
    scenarios: list[str] = []
    defenses: list[str] = []
    for c in cells:
        if c["scenario"] not in scenarios:
            scenarios.append(c["scenario"])
        if c["defense"] not in defenses:
            defenses.append(c["defense"])
    grid = {(c["scenario"], c["defense"]): c for c in cells}
    values = []
    texts = []
    for s in scenarios:
        vrow = []
        trow = []
        for df in defenses:
            cell = grid.get((s, df))
            if cell is None or not cell["trials"]:
                vrow.append(0.0)
                trow.append("–")
                continue
            vrow.append(cell["succeeded"] / cell["trials"])
            trow.append(_cell_text(cell))
        values.append(vrow)
        texts.append(trow)
    svg = plots.heatmap_svg(
        "attack-matrix",
        "Attack success rate",
        scenarios,
        defenses,
        values,
        texts,
        "attack success rate",
    )
    out_cells = []
    for c in cells:
        lo, hi = c.get("succeeded_ci", (0.0, 1.0))
        out_cells.append(
            {
                **c,
                "ci": f"{c['succeeded'] / c['trials']:.2f} [{lo:.2f}, {hi:.2f}]"
                if c["trials"]
                else "–",
                "headline": _cell_text(c, long=True),
                "explanation": list(c.get("explanation", [])),
            }
        )
    by_scenario = [
        {"scenario": s, "cells": [c for c in out_cells if c["scenario"] == s]} for s in scenarios
    ]
    exposure = None
    ex_rows = _ordered(d.rows("main/attack-exposure"))
    if ex_rows:
        known = [
            "defense",
            "workload",
            "batching",
            "mem_ops",
            "mem_ops_writable",
            "windows",
            "pkey_switches",
        ]
        keys = [k for k in known if k in ex_rows[0].results]
        keys += [k for k in ex_rows[0].results if k not in keys and k != "order"]
        exposure = {
            "headers": keys,
            "rows": [[_fmt_value(r.results.get(k, "")) for k in keys] for r in ex_rows],
        }
    trials = max((c["trials"] for c in cells), default=0)
    return {
        "intro": (
            f"Each cell runs one attack scenario (spec threats-and-peers.md §7) against one "
            f"defense for {trials} seeded trials. Colour: the share of trials in which the "
            "attack succeeded (green: never, red: always). Letters: S succeeded, P prevented "
            "(a permission check faulted the write), D detected (a detector reported it), "
            "F failed (the groom missed)."
        ),
        "svg": svg,
        "caption": "The attack matrix; each cell's explanation is listed below the table.",
        "cells": out_cells,
        "by_scenario": by_scenario,
        "exposure": exposure,
    }


def _cell_text(c: Mapping[str, Any], long: bool = False) -> str:
    parts = []
    for key, short in (("succeeded", "S"), ("prevented", "P"), ("detected", "D"), ("failed", "F")):
        if c[key]:
            parts.append(f"{key} {c[key]}/{c['trials']}" if long else f"{short}{c[key]}")
    return (", " if long else " ").join(parts) or "no trials"


def _pba(d: _Data) -> dict[str, Any] | None:
    rows = d.rows("main/pba")
    if not rows:
        return None
    res = rows[0].results
    samples = res.get("samples", [])
    xs = [int(s[0]) for s in samples]
    ys = [float(s[1]) for s in samples]
    markers = {k: [int(x) for x in v] for k, v in res.get("markers", {}).items()}
    svg = plots.timeseries_svg(
        "pba-series",
        "Pages cached by the PBA",
        xs,
        {"cached pages (nr_cached)": ys},
        markers,
        "PBA operation (refill, allocation, free or shrink)",
        "pages",
        {k: int(v) for k, v in res.get("marker_totals", {}).items()},
    )
    stats = [(str(k), _fmt_value(v)) for k, v in res.get("stats", [])]
    return {
        "intro": str(res.get("intro", "")),
        "svg": svg,
        "caption": (
            "Top: the cache size after each PBA operation. Bottom: when the cache was "
            "refilled, shrunk, and when the linear map was split (counts in brackets)."
        ),
        "stats": stats,
    }


def _calibration(d: _Data) -> list[dict[str, Any]]:
    out = []
    for t in d.run.get("calibration", []):
        consts = [{"name": n, **c} for n, c in t.get("constants", {}).items()]
        out.append({"target": t.get("target", ""), "cpu": t.get("cpu", ""), "constants": consts})
    return out


def _assumptions_html(d: _Data) -> str:
    text = d.run.get("assumptions_md", "")
    if not text:
        return ""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    html: str = md.render(str(text))
    return html


def _other(d: _Data) -> dict[str, Any] | None:
    rows = [r for exp, rs in sorted(d.by_exp.items()) if not exp.startswith("main/") for r in rs]
    if not rows:
        return None
    table = []
    for r in rows:
        table.append(
            [
                r.experiment,
                r.config_hash[:12],
                str(r.seed),
                r.status,
                _short(r.counters) if r.status == "ok" else r.error,
                _short(r.results),
            ]
        )
    return {
        "intro": f"{len(rows)} rows not written by the main job (for example sweep points).",
        "headers": ["experiment", "config hash", "seed", "status", "counters / error", "results"],
        "rows": table,
    }


def _short(obj: Mapping[str, Any], limit: int = 160) -> str:
    text = ", ".join(f"{k}={v}" for k, v in obj.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the summary -----------------------------------------------------------------------------


def summary_lines(store: ResultStore) -> list[str]:
    """The short summary of a store: what passed, headline overheads, the attack matrix."""
    return _summary(_load(store))


def _summary(d: _Data) -> list[str]:
    lines: list[str] = []
    for sid, title in SECTIONS.items():
        sec = d.section(sid)
        if sec["status"] == "unavailable":
            lines.append(f"{title}: not available in this version: {sec['detail']}")
            continue
        if sec["status"] == "failed":
            lines.append(f"{title}: FAILED: {sec['detail']}")
            continue
        if sec["status"] == "absent":
            continue
        lines.extend(_summary_of(d, sid))
    for exp, rows in sorted(d.by_exp.items()):
        if exp.startswith("main/"):
            continue
        failed = sum(1 for r in rows if r.status == "failed")
        lines.append(f"{exp}: {len(rows)} rows ({len(rows) - failed} ok, {failed} failed)")
    if not lines:
        lines.append("the store holds no result")
    return lines


def _summary_of(d: _Data, sid: str) -> list[str]:
    if sid == "arch":
        a = _arch(d)
        return [f"architecture vectors: {a['passed']}/{a['total']} pass"] if a else []
    if sid == "boot":
        rows = d.rows("main/boot")
        return [f"booted {len(rows)} machine configurations"] if rows else []
    if sid == "kunit":
        ks = _kunit(d) or []
        parts = [
            f"{k['series']} {k['passed']}/{k['total']} pass"
            + (f", {k['failed']} FAIL" if k["failed"] else "")
            + (f", {k['skipped']} skip" if k["skipped"] else "")
            for k in ks
        ]
        return ["KUnit: " + "; ".join(parts)] if parts else []
    if sid == "bench":
        return _summary_bench(d, "main/bench", "overhead")
    if sid in _V6V7_EXPERIMENTS:
        rows = _bench_rows(d, _V6V7_EXPERIMENTS[sid])
        return _summary_bench(d, _V6V7_EXPERIMENTS[sid], f"v6 vs v7 on {_target_of(rows)}")
    if sid == "attack":
        return _summary_attack(d)
    if sid == "pba":
        rows = d.rows("main/pba")
        if not rows:
            return []
        st = dict(rows[0].results.get("stats", []))
        keys = [k for k in ("refills", "shrink scans", "linear-map splits", "peak cached pages")]
        return ["PBA over the run: " + ", ".join(f"{k} {st[k]}" for k in keys if k in st)]
    return []


def _summary_bench(d: _Data, experiment: str, what: str) -> list[str]:
    rows = _bench_rows(d, experiment)
    if not rows:
        return []
    configs = _configs_in_order(rows)
    feature = [c for c in configs if not _is_baseline(rows, c)]
    by_cfg: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_cfg[r.results["config"]].append(float(r.results["overhead_pct"]))
    parts = []
    for c in feature:
        vals = by_cfg[c]
        gmean = _geomean_overhead(vals)
        parts.append(f"{c} {min(vals):+.1f}%..{max(vals):+.1f}% (geomean {gmean:+.1f}%)")
    return [f"{what} ({len(_labels_in_order(rows))} benchmarks): " + "; ".join(parts)]


def _geomean_overhead(pcts: Sequence[float]) -> float:
    """Geometric mean of the slowdown factors, as a percentage."""
    if not pcts:
        return 0.0
    logs = [math.log(max(1e-9, 1.0 + p / 100.0)) for p in pcts]
    return 100.0 * (math.exp(sum(logs) / len(logs)) - 1.0)


def _summary_attack(d: _Data) -> list[str]:
    rows = _ordered(d.rows("main/attack"))
    if not rows:
        return []
    cells = [r.results for r in rows]
    defenses: list[str] = []
    for c in cells:
        if c["defense"] not in defenses:
            defenses.append(c["defense"])
    scen = len({c["scenario"] for c in cells})
    trials = max(c["trials"] for c in cells)
    lines = [
        f"attack matrix: {scen} scenarios x {len(defenses)} defenses, {trials} trials per cell "
        "(S succeeded / P prevented / D detected / F failed)"
    ]
    for df in defenses:
        mine = [c for c in cells if c["defense"] == df]
        agg = [sum(c[k] for c in mine) for k in ("succeeded", "prevented", "detected", "failed")]
        wins = sum(1 for c in mine if c["succeeded"])
        lines.append(
            f"  {df}: S {agg[0]} / P {agg[1]} / D {agg[2]} / F {agg[3]}; "
            f"an attack succeeds in {wins} of {len(mine)} scenarios"
        )
    return lines


# --- rendering --------------------------------------------------------------------------------


def render_report(store: ResultStore) -> str:
    """The HTML report of ``store`` (deterministic: same store content, same bytes)."""
    d = _load(store)
    bench, breakdown = _bench(d)
    sections = {sid: d.section(sid) for sid in SECTIONS}
    other = _other(d)
    toc = [{"id": i, "title": t} for i, t in _TOC]
    if other:
        toc.append({"id": "other", "title": "Other results"})
    quick = bool(d.run.get("quick", False))
    ctx = {
        "title": "kpkeys-sim report" + (" (quick run)" if quick else ""),
        "version": d.run.get("version", __version__),
        "schema_version": SCHEMA_VERSION,
        "seed": d.run.get("seed", "–"),
        "config_hash": d.run.get("config_hash", ""),
        "quick": quick,
        "command": d.run.get("command", "kpkeys-sim report"),
        "toc": toc,
        "summary": _summary(d),
        "configuration": _configuration(d),
        "sections": sections,
        "arch": _arch(d),
        "boot": _boot(d),
        "kunit": _kunit(d),
        "bench": bench,
        "breakdown": breakdown,
        "v6v7": _v6v7(d, "v6v7"),
        "v6v7_other": _v6v7(d, "v6v7-other"),
        "side_by_side": _side_by_side(d),
        "attack": _attack(d),
        "pba": _pba(d),
        "calibration": _calibration(d),
        "assumptions_html": _assumptions_html(d),
        "other": other,
    }
    return _env().get_template("report.html.j2").render(ctx)


# --- comparing two stores ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two stores compared: changed metrics, and rows found in only one of them."""

    a: str
    b: str
    changed: list[tuple[str, str, str, str, str]]  # experiment, what, metric, a, b
    unchanged: int
    only_a: list[str]
    only_b: list[str]

    def to_json(self) -> dict[str, Any]:
        """JSON form (``kpkeys-sim report --compare --json``)."""
        return {
            "a": self.a,
            "b": self.b,
            "changed": [
                {"experiment": e, "row": w, "metric": m, "a": x, "b": y}
                for e, w, m, x, y in self.changed
            ],
            "unchanged_metrics": self.unchanged,
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
        }

    def lines(self) -> list[str]:
        """Plain-text form."""
        out = [f"comparing {self.a} (A) with {self.b} (B)"]
        out.append(f"{len(self.changed)} metrics differ, {self.unchanged} are the same")
        for e, w, m, x, y in self.changed:
            out.append(f"  {e} {w}: {m}: {x} -> {y}")
        for tag, rows in (("only in A", self.only_a), ("only in B", self.only_b)):
            for r in rows:
                out.append(f"  {tag}: {r}")
        return out


def _row_name(r: ResultRow) -> str:
    res = r.results
    if "benchmark" in res:
        return f"{_bench_label(res)} [{res.get('config', '')}]"
    if "scenario" in res:
        return f"{res['scenario']} x {res['defense']}"
    for key in ("series", "label"):
        if key in res:
            return str(res[key])
    params = r.config.get("params")
    if isinstance(params, Mapping) and params:
        return " ".join(f"{k}={v}" for k, v in params.items())
    return r.config_hash[:12]


def _metrics(r: ResultRow) -> dict[str, Any]:
    out: dict[str, Any] = {"status": r.status}
    for k, v in r.results.items():
        if isinstance(v, bool | int | float | str) and k not in ("ktap", "label", "intro"):
            out[k] = v
    for k, v in r.counters.items():
        out[f"counters.{k}"] = v
    return out


def compare_stores(a: ResultStore, b: ResultStore) -> Comparison:
    """Compare the rows of two stores, matched by (experiment, what was run).

    Rows are matched on their full key when the stores share it, else on the
    experiment and a readable row name (so two runs with different seeds
    still line up).  For each matched pair every scalar result and counter
    is compared.
    """
    rows_a = a.rows()
    rows_b = b.rows()

    def index(rows: Sequence[ResultRow]) -> dict[tuple[str, str], ResultRow]:
        out: dict[tuple[str, str], ResultRow] = {}
        for r in rows:
            out.setdefault((r.experiment, f"{_row_name(r)} seed {r.seed}"), r)
        return out

    ia = index(rows_a)
    ib = index(rows_b)
    if not set(ia) & set(ib):  # different seeds: match without the seed
        ia = {(e, n.rsplit(" seed ", 1)[0]): r for (e, n), r in ia.items()}
        ib = {(e, n.rsplit(" seed ", 1)[0]): r for (e, n), r in ib.items()}
    changed: list[tuple[str, str, str, str, str]] = []
    unchanged = 0
    for key in sorted(set(ia) & set(ib)):
        ma = _metrics(ia[key])
        mb = _metrics(ib[key])
        for m in sorted(set(ma) | set(mb)):
            va, vb = ma.get(m), mb.get(m)
            if va == vb:
                unchanged += 1
            else:
                changed.append((key[0], key[1], m, _show(va), _show(vb)))
    only_a = [f"{e} {n}" for e, n in sorted(set(ia) - set(ib))]
    only_b = [f"{e} {n}" for e, n in sorted(set(ib) - set(ia))]
    return Comparison(str(a.path), str(b.path), changed, unchanged, only_a, only_b)


def _show(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_comparison_html(cmp: Comparison) -> str:
    """A small self-contained HTML page of a comparison."""
    return _env().get_template("compare.html.j2").render(cmp=cmp, version=__version__)
