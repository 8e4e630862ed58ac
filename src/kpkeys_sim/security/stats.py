"""Statistics for campaign cells: the Wilson score interval.

A cell of the attack matrix is a count ``k`` of one outcome among ``n``
independent seeded trials.  Its 95 % interval is the Wilson score interval
(Wilson 1927; Brown, Cai & DasGupta, *Statistical Science* 16(2), 2001, who
recommend it over the normal "Wald" interval for small ``n`` and for rates
near 0 or 1, which is where attack outcomes live).  ``z`` = 1.959963984540054
is the 97.5 % quantile of the standard normal distribution.

Integers in, floats out: the interval is only ever shown in reports.
"""

from __future__ import annotations

import math

__all__ = ["Z95", "rate", "wilson_interval"]

#: 97.5 % quantile of the standard normal distribution (two-sided 95 %).
Z95 = 1.959963984540054


def rate(k: int, n: int) -> float:
    """``k / n`` (0.0 when ``n`` is 0)."""
    return k / n if n else 0.0


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval ``(lo, hi)`` for ``k`` successes in ``n`` trials.

    ``n == 0`` gives the uninformative ``(0.0, 1.0)``.  Raises ``ValueError``
    for counts outside ``0 <= k <= n``.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"bad counts k={k}, n={n}: need 0 <= k <= n")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)
