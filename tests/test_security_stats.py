"""Tests of the Wilson score interval used for the attack matrix."""

from __future__ import annotations

import pytest
from hypothesis import given
from tests.strategies import wilson_counts

from kpkeys_sim.security.stats import rate, wilson_interval


def test_wilson_known_values() -> None:
    """The interval matches the published Wilson values for 5/10 and 0/10."""
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=1e-4)


def test_wilson_extremes_are_closed() -> None:
    """All-successes gives an upper bound of exactly 1 and no trials gives [0, 1]."""
    assert wilson_interval(7, 7)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert rate(0, 0) == 0.0


def test_wilson_rejects_bad_counts() -> None:
    """More successes than trials is an error naming both counts."""
    with pytest.raises(ValueError, match="k=5, n=3"):
        wilson_interval(5, 3)


@given(wilson_counts)
def test_wilson_contains_the_rate(kn: tuple[int, int]) -> None:
    """The interval lies in [0, 1] and contains the observed rate."""
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
