"""Campaign determinism, JSON shape, snapshot exactness and the public API."""

from __future__ import annotations

import json

from hypothesis import given, settings
from tests.strategies import attack_seeds

import kpkeys_sim.security as security
from kpkeys_sim.security import run_campaign
from kpkeys_sim.security.campaign import boot_env, classify, run_cell, trial_rng
from kpkeys_sim.security.scenarios import make_scenario

CELL_KEYS = {
    "scenario",
    "defense",
    "trials",
    "succeeded",
    "prevented",
    "detected",
    "failed",
    "detected_after_write",
}


def test_public_api_is_pinned() -> None:
    """The security package exports exactly its documented API."""
    assert security.__all__ == [
        "CampaignResult",
        "CellResult",
        "ExposureRow",
        "defense_names",
        "make_defense",
        "make_scenario",
        "run_campaign",
        "run_default_campaign",
        "scenario_ids",
        "wilson_interval",
    ]


def test_same_seed_same_matrix_bytes() -> None:
    """Two runs with the same seed produce byte-identical JSON."""
    args = (["S1", "S4-A"], ["none", "kasan-hw-tags"], 12, 5)
    a = json.dumps(run_campaign(*args).to_json(), sort_keys=True)
    b = json.dumps(run_campaign(*args).to_json(), sort_keys=True)
    assert a == b


def test_jobs_do_not_change_the_result() -> None:
    """Splitting cells into chunks on two workers gives the same counts as one process."""
    one = run_campaign(["S1"], ["mte-async"], 10, 9).to_json()
    two = run_campaign(["S1"], ["mte-async"], 10, 9, jobs=2, chunk=4).to_json()
    assert one == two


@settings(max_examples=25, deadline=None)
@given(attack_seeds)
def test_trial_generator_is_a_function_of_its_key(seed: int) -> None:
    """The same (seed, scenario, defense, trial) always gives the same generator stream."""
    a = trial_rng(seed, "S3", "hyp-s2", 7).integers(1 << 62, size=4)
    b = trial_rng(seed, "S3", "hyp-s2", 7).integers(1 << 62, size=4)
    assert (a == b).all()


def test_different_seed_changes_the_trials() -> None:
    """Trial generators differ between seeds and between trials."""
    a = trial_rng(1, "S1", "none", 0).integers(1 << 60)
    b = trial_rng(2, "S1", "none", 0).integers(1 << 60)
    c = trial_rng(1, "S1", "none", 1).integers(1 << 60)
    assert len({int(a), int(b), int(c)}) == 3


def test_json_shape() -> None:
    """--json cells carry exactly the documented keys and the counts add up."""
    out = run_campaign(["S12-B"], ["none", "kpkeys-cred"], 3, 0).to_json()
    assert set(out) == {"cells", "seed", "version"}
    for cell in out["cells"]:
        assert set(cell) == CELL_KEYS
        total = cell["succeeded"] + cell["prevented"] + cell["detected"] + cell["failed"]
        assert total == cell["trials"] == 3


def test_restore_equals_fresh_boot() -> None:
    """A trial run after a snapshot restore has the outcome of the same trial on a fresh boot."""
    restored = run_cell("S1", "kasan-hw-tags", 8, 4)
    fresh = []
    for t in range(8):
        env = boot_env("S1", "kasan-hw-tags", seed=4)
        env.begin_trial(trial_rng(4, "S1", "kasan-hw-tags", t))
        env.trace.step = env.state.get("prefix_steps", 0)
        sc = make_scenario("S1")
        fresh.append(classify(env, lambda sc=sc, env=env: sc.trial(env)))
    counts = {o: sum(1 for r in fresh if r.outcome == o) for o in ("succeeded", "detected")}
    assert counts["succeeded"] == restored.succeeded
    assert counts["detected"] == restored.detected
    assert sum(r.detected_after_write for r in fresh) == restored.detected_after_write


def test_prefix_is_equivalent_to_running_it_in_the_trial() -> None:
    """The snapshotted trial prefix gives the same cell as running it inside each trial."""
    with_prefix = run_cell("S1", "none", 10, 2)
    env = boot_env("S1", "none", seed=2, with_prefix=False)
    sc = make_scenario("S1")
    outcomes = []
    from kpkeys_sim.security import snapshot

    snap = snapshot.take([env.k, env.state])
    for t in range(10):
        snap.restore()
        env.begin_trial(trial_rng(2, "S1", "none", t))
        outcomes.append(classify(env, lambda: sc.trial(env)).outcome)
    assert outcomes.count("succeeded") == with_prefix.succeeded
