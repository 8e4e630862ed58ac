"""Tag-based detectors: detection rates agree with their mechanics within statistical error."""

from __future__ import annotations

import numpy as np

from kpkeys_sim.security.campaign import boot_env, run_cell
from kpkeys_sim.security.defenses.kasan import HwTagsKasan, SwTagsKasan
from kpkeys_sim.security.stats import wilson_interval

#: z for a two-sided 99.9 % interval: the tests fail by chance about once in a thousand runs.
Z999 = 3.2905


def _miss_rate_ok(succeeded: int, reclaimed: int, p_match: float) -> bool:
    lo, hi = wilson_interval(succeeded, reclaimed, Z999)
    return lo <= p_match <= hi


def test_hw_tags_miss_one_in_fourteen() -> None:
    """S1 under MTE: a reclaimed stale write goes undetected with probability 1/14."""
    cell = run_cell("S1", "kasan-hw-tags", 700, 3)
    reclaimed = cell.metrics["reclaimed"]
    assert reclaimed > 400
    assert _miss_rate_ok(cell.succeeded, reclaimed, 1 / 14), (cell.succeeded, reclaimed)


def test_sw_tags_miss_one_in_254() -> None:
    """S1 under software tags: undetected with probability 1/254 (here: very rarely)."""
    cell = run_cell("S1", "kasan-sw-tags", 700, 3)
    reclaimed = cell.metrics["reclaimed"]
    assert _miss_rate_ok(cell.succeeded, reclaimed, 1 / 254), (cell.succeeded, reclaimed)
    assert cell.succeeded < 12


def test_tag_draws_are_uniform_over_the_kasan_ranges() -> None:
    """kasan_random_tag() covers exactly 0xF0-0xFD (HW) and 0x00-0xFD (SW), uniformly."""
    for cls, lo, hi in ((HwTagsKasan, 0xF0, 0xFD), (SwTagsKasan, 0x00, 0xFD)):
        env = boot_env("S8-a", cls())
        env.begin_trial(np.random.default_rng(11))
        df = env.defense
        assert isinstance(df, cls)
        tags = np.array([df.random_tag(env) for _ in range(50_000)])
        assert tags.min() == lo and tags.max() == hi
        counts = np.bincount(tags - lo, minlength=hi - lo + 1)
        expected = len(tags) / (hi - lo + 1)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        dof = hi - lo
        assert chi2 < dof + 5 * np.sqrt(2 * dof)
