"""The Kernel object: the state of one booted model kernel, passed explicitly.

Linux keeps this state in globals (``init_mm``, ``mem_map``, the zones, the
static keys) and finds the executing CPU with ``smp_processor_id()``.  The
model keeps it in one ``Kernel`` object that every kernel function takes as
its first argument ``k``; ``k.cpu`` is the CPU the model is currently
executing on (the model is sequential: running something on another CPU is
``with k.on_cpu(i): ...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.machine.cpu import CPU
from kpkeys_sim.machine.machine import Machine

__all__ = ["Kernel"]


class Kernel:
    """One model kernel on one machine.

    Layers attach their state as attributes during boot (``kernel/boot``):
    allocators, ``init_mm``, the linear map, the kpkeys state.  Static keys
    live in :attr:`static_keys` by their kernel names.
    """

    def __init__(self, machine: Machine, config: KernelConfig) -> None:
        self.machine = machine
        self.config = config
        self.cpu: CPU = machine.cpus[0]
        self.static_keys: dict[str, bool] = {}
        self.log: list[str] = []
        #: Hook returning the context manager every page-table write helper
        #: enters (the ``kpkeys_hardened_pgtables`` guard).  The default is the
        #: NOOP guard of a kernel without the feature; kpkeys_hardened_pgtables
        #: installs the real one at boot.
        self.pgtables_guard: Any = _noop_guard
        #: Accounting hook for bulk page-table operations: a vectorised helper
        #: that writes ``n`` entries under ONE guard (exact, since the register
        #: state is identical at every write) calls ``pgtables_guard_repeat(k,
        #: n - 1)`` so the events of the ``n - 1`` other guard round trips the
        #: kernel would make are still counted.  Default: nothing to count.
        self.pgtables_guard_repeat: Any = _noop_repeat

    def static_branch(self, name: str) -> bool:
        """The value of static key ``name`` (false if never enabled)."""
        return self.static_keys.get(name, False)

    def static_branch_enable(self, name: str) -> None:
        """Enable static key ``name``."""
        self.static_keys[name] = True

    def static_branch_disable(self, name: str) -> None:
        """Disable static key ``name``."""
        self.static_keys[name] = False

    @contextmanager
    def on_cpu(self, cpu_id: int) -> Iterator[CPU]:
        """Execute the body on CPU ``cpu_id`` (restores the previous CPU after)."""
        prev = self.cpu
        self.cpu = self.machine.cpus[cpu_id]
        try:
            yield self.cpu
        finally:
            self.cpu = prev

    def printk(self, msg: str) -> None:
        """Append one line to the kernel log (the boot log ``kpkeys-sim run`` prints)."""
        self.log.append(msg)


def _noop_guard(k: Kernel) -> AbstractContextManager[None]:
    return nullcontext()


def _noop_repeat(k: Kernel, n: int) -> None:
    return None
