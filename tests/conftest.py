"""Test-session settings shared by every test module.

Hypothesis runs derandomized by default (profile ``kpkeys``): the examples
are a function of the test, so ``make test`` and CI see the same cases on
every run and a red run reproduces.  Set ``HYPOTHESIS_PROFILE=explore`` to
search with fresh random examples (and more of them) while developing.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("kpkeys", derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "kpkeys"))
