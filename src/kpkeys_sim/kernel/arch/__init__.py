"""Kernel arch glue for kpkeys, selected by the machine's architecture name.

Linux splits kpkeys into a generic part (``include/linux/kpkeys.h``, modelled
in :mod:`kpkeys_sim.kernel.kpkeys.core`) and per-arch back-ends
(``arch/*/include/asm/kpkeys.h`` plus the exception-entry and context-switch
code that saves and resets the pkey register; spec kpkeys-series.md §1.7,
§2.2–§2.5).  The model keeps one glue module per architecture in this
package; each exports a :class:`KpkeysArchOps` record named ``KPKEYS_ARCH``
(the hooks, like a kernel ``struct ..._ops``).  Generic kernel code never
imports a glue module: it calls through :func:`kpkeys_arch` or through the
dispatchers below (``kernel_entry``, ``cpu_switch_to``, ...), which pick the
glue from ``k.machine.arch.name``.

Glue modules are loaded on first use.  They import the generic level and
pkey constants from ``kpkeys.core`` while ``kpkeys.core`` calls them through
this registry; loading them lazily breaks that import cycle (Linux resolves
the same mutual dependency by header inclusion order).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kpkeys_sim.machine.cpu import CPU, HwThread

if TYPE_CHECKING:
    from kpkeys_sim.kernel.config import KernelConfig
    from kpkeys_sim.kernel.kernel import Kernel
    from kpkeys_sim.kernel.kpkeys.core import KpkeysLevel

__all__ = [
    "KpkeysArchOps",
    "LevelMasks",
    "PkeyRegUnavailableError",
    "arch_kpkeys_enabled",
    "common_copy_thread",
    "common_kernel_entry",
    "common_switch_to",
    "copy_thread",
    "cpu_enable_pkeys",
    "cpu_switch_to",
    "kernel_entry",
    "kernel_exit",
    "kpkeys_arch",
    "kpkeys_arch_by_name",
    "kpkeys_arch_names",
    "level_masks",
    "pkey_reg_init",
]


class PkeyRegUnavailableError(RuntimeError):
    """The kernel touched the pkey register on a CPU that does not implement it.

    arm64: POR_EL1 is only accessible when FEAT_S1POE is implemented; an MSR or
    MRS to it is otherwise UNDEFINED (an undefined-instruction exception, i.e.
    an oops).  x86: RDMSR/WRMSR of IA32_PKRS without PKS raise #GP.  Kernel
    code must test ``arch_kpkeys_enabled()`` first (spec §1.7: "Features check
    for this at init time and stay disabled").
    """


@dataclass(frozen=True, slots=True)
class KpkeysArchOps:
    """The hooks one architecture provides to the generic kpkeys code.

    Every hook takes the kernel ``k`` first and acts on ``k.cpu``.

    * ``arch_kpkeys_enabled(k)``: the CPUs implement the pkey feature
      (arm64 ``system_supports_poe()``, spec §2.2).
    * ``arch_kpkeys_set_level(k, level, skip_unchanged)``: switch the register
      to ``level``; return the previous value, or ``KPKEYS_PKEY_REG_INVAL`` when
      ``skip_unchanged`` is true and the value would not change (no write).
    * ``arch_kpkeys_restore_pkey_reg(k, reg)``: write ``reg`` back, with the
      barrier the architecture needs.
    * ``kpkeys_set_pkey_reg_nosync(k, reg)``: the raw write with no barrier
      (arm64 ``__kpkeys_set_pkey_reg_nosync``).
    * ``set_kpkeys_level(reg, level, cred_levels)``: the pure register
      computation (arm64 ``por_set_kpkeys_level``).
    * ``pkey_reg_init(config)``: the register value of the default level with
      every unmanaged key inaccessible (arm64 ``POR_EL1_INIT``).
    * ``cpu_enable(k, cpu)``: enable the feature on ``cpu`` (arm64
      ``cpu_enable_poe``).
    * ``kernel_entry(k)``/``kernel_exit(k)``: exception taken from / returning
      to kernel mode (arm64 ``kernel_entry``/``kernel_exit``, v5 07/18).
    * ``copy_thread(k, parent, name)``: the child's saved registers (v5 08/18).
    * ``switch_to(k, next)``: the register half of the context switch
      (arm64 ``permission_overlay_switch``, v5 08/18).
    """

    name: str
    pkey_reg_name: str
    arch_kpkeys_enabled: Callable[[Kernel], bool]
    arch_kpkeys_set_level: Callable[[Kernel, KpkeysLevel, bool], int]
    arch_kpkeys_restore_pkey_reg: Callable[[Kernel, int], None]
    kpkeys_set_pkey_reg_nosync: Callable[[Kernel, int], None]
    set_kpkeys_level: Callable[[int, KpkeysLevel, bool], int]
    pkey_reg_init: Callable[[KernelConfig], int]
    cpu_enable: Callable[[Kernel, CPU], None]
    kernel_entry: Callable[[Kernel], None]
    kernel_exit: Callable[[Kernel], None]
    copy_thread: Callable[[Kernel, HwThread, str | None], HwThread]
    switch_to: Callable[[Kernel, HwThread], None]


#: Machine architecture name -> module that defines its ``KPKEYS_ARCH``.
_GLUE_MODULES: dict[str, str] = {
    "arm64": "kpkeys_sim.kernel.arch.arm64",
    "x86": "kpkeys_sim.kernel.arch.x86",
}
_LOADED: dict[str, KpkeysArchOps] = {}


def kpkeys_arch_names() -> list[str]:
    """Names of the architectures that have kpkeys glue, sorted."""
    return sorted(_GLUE_MODULES)


def kpkeys_arch_by_name(name: str) -> KpkeysArchOps:
    """The glue of architecture ``name``; ``KeyError`` naming it if there is none."""
    ops = _LOADED.get(name)
    if ops is not None:
        return ops
    try:
        modname = _GLUE_MODULES[name]
    except KeyError:
        raise KeyError(
            f"no kpkeys glue for architecture {name!r} (known: {', '.join(kpkeys_arch_names())})"
        ) from None
    ops = importlib.import_module(modname).KPKEYS_ARCH
    if not isinstance(ops, KpkeysArchOps) or ops.name != name:
        raise TypeError(f"{modname}.KPKEYS_ARCH is not the KpkeysArchOps of {name!r}: {ops!r}")
    _LOADED[name] = ops
    return ops


def kpkeys_arch(k: Kernel) -> KpkeysArchOps:
    """The glue of the machine ``k`` runs on (one dict lookup once loaded)."""
    ops = _LOADED.get(k.machine.arch.name)
    return ops if ops is not None else kpkeys_arch_by_name(k.machine.arch.name)


# --- register arithmetic both glue modules share ----------------------------------------

#: ``(keep, bits)`` per level: ``new = (reg & keep) | bits``.
LevelMasks = tuple[tuple[int, int], ...]


def level_masks(
    set_kpkeys_level: Callable[[int, KpkeysLevel, bool], int],
    reg_bits: int,
    levels: Sequence[KpkeysLevel],
    cred_levels: bool,
) -> LevelMasks:
    """Precompute ``set_kpkeys_level`` as one AND and one OR per level (guard hot path).

    ``set_kpkeys_level(reg, level)`` replaces the managed fields and keeps
    every other bit, so ``set_kpkeys_level(ones, l) ^ set_kpkeys_level(0, l)``
    is exactly the mask of kept bits and ``set_kpkeys_level(0, l)`` the bits
    set.  ``levels`` are the levels the configuration allows, in value order
    from 0, so the result is indexed by the level
    (``tests/test_kpkeys_arch.py`` checks it against the function on random
    registers).
    """
    ones = (1 << reg_bits) - 1
    out = []
    for i, level in enumerate(levels):
        if level != i:
            raise ValueError(f"levels must be in value order from 0, got {list(levels)}")
        bits = set_kpkeys_level(0, level, cred_levels)
        out.append((set_kpkeys_level(ones, level, cred_levels) ^ bits, bits))
    return tuple(out)


# --- the shape both glue modules share: entry, fork, switch -----------------------------


def common_kernel_entry(k: Kernel, init: int) -> None:
    """Exception entry from kernel mode: save the register, reset it to ``init`` if different.

    The reset happens only when the machine has the pkey feature (arm64: the
    ``kernel_entry`` code is an alternative patched in for S1POE, v5 07/18).
    The save/compare/write/barrier steps are the CPU model's
    ``exception_entry``.
    """
    k.cpu.exception_entry(reset_to=init if k.machine.has_pkeys else None)


def common_copy_thread(k: Kernel, parent_thread: HwThread, name: str | None) -> HwThread:
    """The child's saved pkey registers (arm64 ``copy_thread``, v5 08/18; spec §2.5).

    ``dup_task_struct`` copies the parent's thread struct; then, with the
    pkey feature, the kernel register is taken from the live register (the
    parent is running, so its current level is there, not in its saved copy)
    and so is the user register [INF: the user register follows the same
    rule].  ``parent_thread`` must be the thread running on ``k.cpu`` when the
    CPU has one.
    """
    cpu = k.cpu
    if cpu.current is not None and cpu.current is not parent_thread:
        raise ValueError(
            f"copy_thread: {parent_thread.name!r} is not the thread running on "
            f"CPU{cpu.cpu_id} ({cpu.current.name!r})"
        )
    child = HwThread(
        name if name is not None else f"{parent_thread.name}-child",
        pkey_reg=parent_thread.pkey_reg,
        user_pkey_reg=parent_thread.user_pkey_reg,
        extra=dict(parent_thread.extra),
    )
    if k.machine.has_pkeys:
        child.pkey_reg = cpu.read_pkey_reg()
        child.user_pkey_reg = cpu.read_user_pkey_reg()
    return child


def common_switch_to(k: Kernel, next_thread: HwThread) -> None:
    """Register half of a context switch to ``next_thread`` (v5 08/18; spec §2.5).

    With the pkey feature: save the live register into the outgoing thread,
    write ``next_thread``'s value (and barrier) only if it differs, the CPU
    model's ``context_switch``.  Without it only the running thread changes.

    A thread whose saved kernel register is 0 was never initialised (threads
    come from :func:`copy_thread`, or are the context already running on the
    CPU); loading 0 would revoke even pkey 0, so it raises ``ValueError``.
    """
    if k.machine.has_pkeys:
        if next_thread.pkey_reg == 0:
            raise ValueError(
                f"cpu_switch_to: thread {next_thread.name!r} has no saved pkey register "
                "(create threads with copy_thread)"
            )
        k.cpu.context_switch(next_thread)
    else:
        k.cpu.current = next_thread


# --- generic entry points (what non-arch kernel code calls) ---------------------------


def arch_kpkeys_enabled(k: Kernel) -> bool:
    """kpkeys are usable: the CPUs implement the pkey feature (spec §1.6, §1.7, §2.2).

    v7 calls this ``kpkeys_enabled()`` and v8 ``kpkeys_supported()``.
    """
    return kpkeys_arch(k).arch_kpkeys_enabled(k)


def pkey_reg_init(k: Kernel) -> int:
    """The default-level register value for ``k``'s configuration (arm64 ``POR_EL1_INIT``)."""
    return kpkeys_arch(k).pkey_reg_init(k.config)


def cpu_enable_pkeys(k: Kernel, cpu: CPU | None = None) -> None:
    """Enable the pkey feature on ``cpu`` (default ``k.cpu``); arm64 ``cpu_enable_poe``."""
    kpkeys_arch(k).cpu_enable(k, k.cpu if cpu is None else cpu)


def kernel_entry(k: Kernel) -> None:
    """An exception taken from kernel mode on ``k.cpu`` (arm64 ``kernel_entry``, v5 07/18).

    The handler runs at the default level: the register is saved and reset.
    """
    kpkeys_arch(k).kernel_entry(k)


def kernel_exit(k: Kernel) -> None:
    """Return from the exception taken by :func:`kernel_entry`: the saved register comes back."""
    kpkeys_arch(k).kernel_exit(k)


def copy_thread(k: Kernel, parent_thread: HwThread, name: str | None = None) -> HwThread:
    """The saved registers of a thread forked by ``parent_thread`` (v5 08/18 ``copy_thread``)."""
    return kpkeys_arch(k).copy_thread(k, parent_thread, name)


def cpu_switch_to(k: Kernel, next_thread: HwThread) -> None:
    """Switch ``k.cpu`` to ``next_thread``: save the outgoing pkey register, load the next one.

    arm64 ``__switch_to`` → ``permission_overlay_switch`` (v5 08/18).
    """
    kpkeys_arch(k).switch_to(k, next_thread)
