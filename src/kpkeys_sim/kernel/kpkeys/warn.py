"""``WARN()`` / ``WARN_ON()`` / ``VM_WARN_ON()`` for the modelled kernel.

Linux prints a "WARNING: ..." report with a backtrace, taints the kernel and
carries on; the code after the ``WARN_ON`` runs as written.  The model records
the message in ``k.warnings`` (one string per warning that fired), appends the
"WARNING:" line to the kernel log (``k.printk``) and emits one ``warn`` event,
then returns to the caller exactly like the kernel does.

``VM_WARN_ON()`` is compiled in only with ``CONFIG_DEBUG_VM``; the model
always evaluates it (a debug build, which is what the series' authors test
with), and tags its messages with ``VM_WARN`` so a reader can tell them apart
(docs/model-assumptions.md, "kernel/kpkeys allocators").

There is no ``WARN_ON_ONCE`` state here: every helper fires every time; a caller
that models a ``_ONCE`` variant keeps its own flag.
"""

from __future__ import annotations

from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.machine.events import declare_event

__all__ = ["VM_WARN_ON", "WARN", "WARN_ON", "warn"]

#: Event kind: one per warning that fired.
WARN = declare_event("warn", "kernel WARN()/WARN_ON()/VM_WARN_ON() reports that fired", "kernel")


def warn(k: Kernel, msg: str) -> None:
    """``WARN(1, msg)``: record ``msg`` in ``k.warnings``, log it and emit a ``warn`` event."""
    k.warnings.append(msg)
    k.printk(f"WARNING: {msg}")
    k.machine.emit(WARN)


def WARN_ON(k: Kernel, cond: object, msg: str) -> bool:
    """``WARN_ON(cond)``: warn with ``msg`` if ``cond`` is true; return ``bool(cond)``."""
    if cond:
        warn(k, msg)
        return True
    return False


def VM_WARN_ON(k: Kernel, cond: object, msg: str) -> bool:
    """``VM_WARN_ON(cond)`` (``CONFIG_DEBUG_VM`` assumed on): as :func:`WARN_ON`, tagged."""
    return WARN_ON(k, cond, f"VM_WARN: {msg}")
