"""kpkeys-sim: an executable model of pkeys-based kernel hardening.

The public API is small and re-exported here; everything else is reachable
through the layer packages (``machine``, ``kernel``, ``kunit``, ``workloads``,
``security``, ``analysis``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
