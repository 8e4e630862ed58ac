"""Campaigns: every selected scenario under every selected defense, N seeded trials each.

``run_campaign(scenarios, defenses, trials, seed)`` is the entry point used by
``kpkeys-sim attack``, ``kpkeys-sim run`` and the report.

Per cell (scenario × defense) the runner

1. boots one model kernel with the defense's configuration (plus what the
   scenario needs), installs the defense's hooks, runs the scenario's
   deterministic preparation, and takes a :mod:`snapshot` of the kernel,
   the environment and the defense's private state;
2. for each trial ``t``: restores the snapshot, gives the trial its own
   generator ``Generator(PCG64(SeedSequence(seed, spawn_key=(crc(scenario),
   crc(defense), t))))`` — so a cell's numbers depend only on the seed, the
   scenario, the defense and the trial index, never on which other cells
   run or on how cells are spread over worker processes — runs the trial
   and classifies it.

A prefix that draws random numbers only through the defense's hooks (S1's
groom under the tag-based KASAN/MTE defenses, which tag every allocation)
is recorded once and replayed per trial instead of being rerun
(:mod:`~kpkeys_sim.security.prefix_replay`); the result is the same.

Classification (precedence as in :mod:`outcome`): a detector report made
during the attack → ``detected`` (``detected_after_write`` when the
corrupting write had landed before the first report); else a permission
fault → ``prevented``; else the scenario's own verdict (``succeeded`` when
the payoff was observed, ``failed`` when the groom missed).  A kernel
self-check (:class:`~kpkeys_sim.kernel.errors.KernelBug`: "Bad page
state", double-free and ``VM_BUG_ON`` checks) is a detector too.

Cells are independent, so they run on a process pool (``jobs`` workers); the
result is byte-for-byte the same for any ``jobs``.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kpkeys_sim import __version__
from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.security import snapshot
from kpkeys_sim.security.defenses import Defense, defense_names, make_defense
from kpkeys_sim.security.env import (
    AttackEnv,
    RandomnessUnavailableError,
    Stage2Fault,
    kernel_bug_check,
)
from kpkeys_sim.security.outcome import (
    DETECTED,
    FAILED,
    OUTCOMES,
    PREVENTED,
    SUCCEEDED,
    Detected,
    Prevented,
    TrialResult,
)
from kpkeys_sim.security.prefix_replay import PrefixReplay, record_prefix
from kpkeys_sim.security.scenarios import make_scenario, scenario_ids
from kpkeys_sim.security.scenarios.base import Scenario
from kpkeys_sim.security.stats import wilson_interval

__all__ = [
    "ATTACK_BASE_CONFIG",
    "DEFAULT_CAMPAIGN_TRIALS",
    "CampaignResult",
    "CellResult",
    "ExposureRow",
    "boot_env",
    "classify",
    "run_campaign",
    "run_cell",
    "run_default_campaign",
    "trial_rng",
]

#: The kernel every campaign boots, before the defense's and scenario's knobs:
#: a small machine (trials restore the whole kernel, so its size is the cost).
ATTACK_BASE_CONFIG = KernelConfig().replace(ram_size=64 << 20, nr_cpus=2)


@dataclass(slots=True)
class CellResult:
    """Counts of one (scenario, defense) cell and where its outcomes came from."""

    scenario: str
    defense: str
    trials: int = 0
    succeeded: int = 0
    prevented: int = 0
    detected: int = 0
    failed: int = 0
    detected_after_write: int = 0
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    metrics: Counter[str] = field(default_factory=Counter)

    def add(self, r: TrialResult) -> None:
        """Count one trial."""
        self.trials += 1
        setattr(self, r.outcome, getattr(self, r.outcome) + 1)
        if r.outcome == DETECTED and r.detected_after_write:
            self.detected_after_write += 1
        self.reasons[(r.outcome, r.reason)] += 1
        for k, v in r.metrics:
            self.metrics[k] += v

    def merge(self, other: CellResult) -> None:
        """Add another partial result of the same cell."""
        for name in ("trials", *OUTCOMES, "detected_after_write"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)
        self.metrics.update(other.metrics)

    def interval(self, outcome: str) -> tuple[float, float]:
        """Wilson 95 % interval of the rate of ``outcome``."""
        return wilson_interval(getattr(self, outcome), self.trials)

    def to_json(self) -> dict[str, Any]:
        """The cell as the ``--json`` output has it."""
        return {
            "scenario": self.scenario,
            "defense": self.defense,
            "trials": self.trials,
            "succeeded": self.succeeded,
            "prevented": self.prevented,
            "detected": self.detected,
            "failed": self.failed,
            "detected_after_write": self.detected_after_write,
        }

    def explanation(self) -> list[str]:
        """Lines saying where each outcome came from, most frequent first."""
        out = []
        for (outcome, reason), n in sorted(
            self.reasons.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1])
        ):
            out.append(f"{outcome} {n}/{self.trials}: {reason}")
        if self.metrics:
            logged = ", ".join(f"{k} {v}" for k, v in sorted(self.metrics.items()))
            out.append(f"logged over {self.trials} trials: {logged}")
        return out


@dataclass(frozen=True, slots=True)
class ExposureRow:
    """S14: page-table-pkey exposure of one workload under one defense (batching setting)."""

    defense: str
    workload: str
    batching: bool
    mem_ops: int
    mem_ops_writable: int
    windows: int
    pkey_switches: int

    def to_json(self) -> dict[str, Any]:
        """The row as ``--json`` has it."""
        return {
            "defense": self.defense,
            "workload": self.workload,
            "batching": self.batching,
            "mem_ops": self.mem_ops,
            "mem_ops_writable": self.mem_ops_writable,
            "windows": self.windows,
            "pkey_switches": self.pkey_switches,
        }


@dataclass(slots=True)
class CampaignResult:
    """A campaign's cells (scenario-major, in the order asked), seed and version."""

    seed: int
    trials: int
    scenarios: list[str]
    defenses: list[str]
    cells: list[CellResult]
    exposure: list[ExposureRow] = field(default_factory=list)
    version: str = __version__

    def cell(self, scenario: str, defense: str) -> CellResult:
        """The cell of (scenario, defense); KeyError if it was not run."""
        for c in self.cells:
            if c.scenario == scenario and c.defense == defense:
                return c
        raise KeyError((scenario, defense))

    def to_json(self) -> dict[str, Any]:
        """``{"cells": [...], "seed": S, "version": V}`` (+ ``"exposure"`` when S14 ran)."""
        out: dict[str, Any] = {
            "cells": [c.to_json() for c in self.cells],
            "seed": self.seed,
            "version": self.version,
        }
        if self.exposure:
            out["exposure"] = [r.to_json() for r in self.exposure]
        return out


def _crc(s: str) -> int:
    return zlib.crc32(s.encode("utf-8"))


def trial_rng(seed: int, scenario: str, defense: str, trial: int) -> np.random.Generator:
    """The generator of one trial (see the module docstring)."""
    # Trial -1 is the cell's shared preparation; trials are 0, 1, ...
    ss = np.random.SeedSequence(seed, spawn_key=(_crc(scenario), _crc(defense), trial + 1))
    return np.random.Generator(np.random.PCG64(ss))


def classify(env: AttackEnv, run: Callable[[], TrialResult]) -> TrialResult:
    """Run one trial body and turn its signals and trace into a :class:`TrialResult`."""
    verdict: TrialResult | None = None
    prevented: Prevented | None = None
    stopped: Detected | None = None
    try:
        verdict = run()
    except Prevented as p:
        prevented = p
    except Detected as d:
        stopped = d
    except KernelBug as b:
        env.trace.report(kernel_bug_check(b), str(b).splitlines()[0])
    except Stage2Fault as f:
        # Raised inside a kernel path (a validated hypercall), not by the access layer.
        prevented = Prevented("hypervisor validation (stage-2)", f.why)
    attack = [d for d in env.trace.detections if not d.decoy]
    metrics = tuple(sorted(env.trace.metrics.items()))
    if stopped is not None and stopped.detection.decoy:
        return TrialResult(
            DETECTED,
            f"{stopped.detection.detector} stopped the kernel on the decoy bug "
            "(kasan.fault=panic); the attack never ran",
            metrics=metrics,
        )
    if attack:
        first = attack[0]
        payoff = verdict is not None and verdict.payoff
        tail = "; payoff still observed" if payoff else ""
        when = "after the write landed" if first.write_landed else "before the write landed"
        return TrialResult(
            DETECTED,
            f"{first.detector} reported {when}{tail}",
            detected_after_write=first.write_landed,
            payoff=payoff,
            metrics=metrics,
        )
    if prevented is not None:
        return TrialResult(PREVENTED, f"write stopped by {prevented.check}", metrics=metrics)
    assert verdict is not None
    if verdict.outcome not in (SUCCEEDED, FAILED):
        raise RuntimeError(
            f"scenario returned {verdict.outcome!r}; it may only return succeeded or failed"
        )
    return TrialResult(
        verdict.outcome, verdict.reason, payoff=verdict.payoff, metrics=metrics + verdict.metrics
    )


def _prepared_env(
    scenario_id: str,
    defense_name: str | Defense,
    base: KernelConfig | None,
    seed: int,
) -> tuple[AttackEnv, Scenario]:
    """Boot the cell's kernel, install the defense and run the scenario's preparation."""
    from kpkeys_sim.security import kapi

    sc = make_scenario(scenario_id)
    if isinstance(defense_name, Defense):
        df = type(defense_name)()
        df.__dict__.update(defense_name.__dict__)
        name = df.name
    else:
        df = make_defense(defense_name)
        name = defense_name
    cfg = sc.kernel_config(df.kernel_config(base or ATTACK_BASE_CONFIG))
    k = kapi.boot_kernel(cfg)
    env = AttackEnv(k, df)
    env.begin_trial(trial_rng(seed, scenario_id, name, -1))
    df.install(env)
    sc.prepare(env)
    env.end_trial()
    return env, sc


def boot_env(
    scenario_id: str,
    defense_name: str | Defense,
    base: KernelConfig | None = None,
    *,
    seed: int = 0,
    with_prefix: bool = True,
) -> AttackEnv:
    """Boot the kernel of one cell, install the defense, run the scenario's preparation.

    The preparation is shared by every trial of the cell (one boot), so the
    random numbers it draws (e.g. KASAN tags of the pages it allocates) come
    from the cell's preparation generator (trial index -1).  With
    ``with_prefix`` the scenario's trial prefix runs too, when it draws no
    random number at all (:meth:`Scenario.prefix`).
    """
    env, sc = _prepared_env(scenario_id, defense_name, base, seed)
    if not with_prefix:
        return env
    try:
        sc.prefix(env)
    except RandomnessUnavailableError:
        return boot_env(scenario_id, defense_name, base, seed=seed, with_prefix=False)
    env.state["prefix_done"] = True
    env.state["prefix_steps"] = env.trace.step
    return env


def _cell_env(
    scenario_id: str,
    defense_name: str | Defense,
    base: KernelConfig | None,
    seed: int,
    replay: bool,
) -> tuple[AttackEnv, PrefixReplay | None]:
    """The environment a cell's trials start from, and the prefix replay if there is one.

    As :func:`boot_env`; when the prefix draws random numbers only through
    the defense's hooks (the tag-based KASAN/MTE defenses), it is recorded
    once and replayed per trial (:mod:`~kpkeys_sim.security.prefix_replay`)
    instead of being run in each trial.
    """
    env, sc = _prepared_env(scenario_id, defense_name, base, seed)
    try:
        sc.prefix(env)
    except RandomnessUnavailableError:
        pass
    else:
        env.state["prefix_done"] = True
        env.state["prefix_steps"] = env.trace.step
        return env, None
    if replay and sc.prefix_first:
        env, sc = _prepared_env(scenario_id, defense_name, base, seed)
        name = env.defense.name
        rp = record_prefix(env, sc, lambda: trial_rng(seed, scenario_id, name, -1))
        if rp is not None:
            return env, rp
    return boot_env(scenario_id, defense_name, base, seed=seed, with_prefix=False), None


def run_cell(
    scenario_id: str,
    defense_name: str | Defense,
    trials: int,
    seed: int,
    first: int = 0,
    base: KernelConfig | None = None,
    *,
    replay: bool = True,
) -> CellResult:
    """Run trials ``first .. first + trials - 1`` of one cell.

    ``defense_name`` may also be a configured :class:`Defense` instance (tests
    use this for defenses with a parameter changed or a check removed).
    ``replay`` False runs a random-drawing prefix in every trial instead of
    replaying it (same result, slower; for tests).
    """
    sc = make_scenario(scenario_id)
    env, rp = _cell_env(scenario_id, defense_name, base, seed, replay)
    df = env.defense
    name = df.name
    snap = snapshot.take([env.k, env.state])
    dstate = df.save() if rp is None else rp.pre_state
    cell = CellResult(scenario_id, name)
    env.prefix_replay = None if rp is None else rp.bind(env)

    def body() -> TrialResult:
        return sc.trial(env)

    prefix_steps = env.state.get("prefix_steps", 0)
    for t in range(first, first + trials):
        snap.restore()
        df.restore(dstate)
        env.begin_trial(trial_rng(seed, scenario_id, name, t))
        env.trace.step = prefix_steps
        try:
            cell.add(classify(env, body))
        finally:
            env.end_trial()
    return cell


#: Trials per cell of the default campaign ``kpkeys-sim run`` includes.
DEFAULT_CAMPAIGN_TRIALS = 20


def run_default_campaign(seed: int = 0, *, jobs: int = 1) -> CampaignResult:
    """The campaign ``kpkeys-sim run`` includes: every scenario × every defense, 20 trials."""
    return run_campaign(None, None, DEFAULT_CAMPAIGN_TRIALS, seed, jobs=jobs)


def _cell_job(args: tuple[str, str, int, int, int]) -> CellResult:
    s, d, n, seed, first = args
    return run_cell(s, d, n, seed, first)


def _check_names(scenarios: Sequence[str], defenses: Sequence[str]) -> None:
    known_s = scenario_ids()
    for s in scenarios:
        if s not in known_s:
            raise ToolError(f"unknown scenario {s!r} (known: {', '.join(known_s)})")
    known_d = defense_names()
    for d in defenses:
        if d not in known_d:
            raise ToolError(f"unknown defense {d!r} (known: {', '.join(known_d)})")


def run_campaign(
    scenarios: Sequence[str] | None,
    defenses: Sequence[str] | None,
    trials: int,
    seed: int,
    *,
    jobs: int = 1,
    chunk: int = 2500,
    progress: Callable[[int], None] | None = None,
) -> CampaignResult:
    """Run every scenario under every defense for ``trials`` seeded trials.

    ``scenarios``/``defenses`` None means all registered ones.  ``jobs`` > 1
    spreads the work over a process pool (cells are split into chunks of at
    most ``chunk`` trials; each chunk boots its own kernel).  ``progress`` is
    called with the number of trials just finished.
    """
    sc_list = list(scenarios) if scenarios else scenario_ids()
    df_list = list(defenses) if defenses else defense_names()
    _check_names(sc_list, df_list)
    if trials < 1:
        raise ToolError(f"bad value {trials} for trials: must be at least 1")
    exploit = [s for s in sc_list if not make_scenario(s).measurement]
    jobs_list: list[tuple[str, str, int, int, int]] = []
    for s in exploit:
        for d in df_list:
            for first in range(0, trials, chunk):
                jobs_list.append((s, d, min(chunk, trials - first), seed, first))
    cells: dict[tuple[str, str], CellResult] = {
        (s, d): CellResult(s, d) for s in exploit for d in df_list
    }
    if jobs > 1 and len(jobs_list) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for part in pool.map(_cell_job, jobs_list):
                cells[(part.scenario, part.defense)].merge(part)
                if progress is not None:
                    progress(part.trials)
    else:
        for job in jobs_list:
            part = _cell_job(job)
            cells[(part.scenario, part.defense)].merge(part)
            if progress is not None:
                progress(part.trials)
    exposure: list[ExposureRow] = []
    if any(make_scenario(s).measurement for s in sc_list):
        from kpkeys_sim.security.scenarios.window import exposure_rows

        exposure = exposure_rows(df_list)
    return CampaignResult(
        seed=seed,
        trials=trials,
        scenarios=sc_list,
        defenses=df_list,
        cells=[cells[(s, d)] for s in exploit for d in df_list],
        exposure=exposure,
    )
