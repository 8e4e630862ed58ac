"""arm64 kpkeys glue: POR_EL1 levels, set/restore, POE enabling, entry and switch.

Models ``arch/arm64/include/asm/kpkeys.h`` and ``asm/por.h`` (v5 04/18,
05/18; v6/v7 ``asm/kpkeys.h``), ``cpu_enable_poe()`` (v5 09/18), the
``kernel_entry``/``kernel_exit`` POR_EL1 handling (v5 07/18) and the
``thread.por_el1`` context switch (v5 08/18); spec kpkeys-series.md
§2.1–§2.5 and pkeys-hardware.md §1.3, §1.8, §1.11.

Register facts come from :mod:`kpkeys_sim.machine.arch.arm64_poe`; the CPU
model does the hardware halves (MSR visibility until ISB, exception
save/reset, context switch).  Every POR_EL1 access checks the machine has
FEAT_S1POE first: without it the register is UNDEFINED
(:class:`~kpkeys_sim.kernel.arch.PkeyRegUnavailableError`).

Model choices:

* ``POR_EL1_INIT`` depends on whether the cred series is applied (0x17, or
  0x117 with ``kpkeys_cred_levels``, spec §2.1); :func:`por_el1_init` picks
  it from the config.  The v5-before-14/18 value 0x7 is not modelled.
* ``CPACR_EL1.E0POE`` (also set by ``cpu_enable_poe``) has no CPU field in
  the model: it only traps EL0 accesses to POR_EL0.
"""

from __future__ import annotations

from kpkeys_sim.kernel.arch import (
    KpkeysArchOps,
    PkeyRegUnavailableError,
    common_copy_thread,
    common_kernel_entry,
    common_switch_to,
    level_masks,
)
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_LVL_CRED,
    KPKEYS_LVL_DEFAULT,
    KPKEYS_LVL_PGTABLES,
    KPKEYS_LVL_UNRESTRICTED,
    KPKEYS_PKEY_CRED,
    KPKEYS_PKEY_DEFAULT,
    KPKEYS_PKEY_PGTABLES,
    KPKEYS_PKEY_REG_INVAL,
    KpkeysLevel,
)
from kpkeys_sim.machine.arch.arm64_poe import POE_R, POE_RW, POE_RWX, por_elx_set_pkey_perms
from kpkeys_sim.machine.cpu import CPU, HwThread

__all__ = [
    "KPKEYS_ARCH",
    "POR_EL1_INIT",
    "POR_EL1_INIT_CRED",
    "__kpkeys_set_pkey_reg_nosync",
    "arch_kpkeys_enabled",
    "arch_kpkeys_restore_pkey_reg",
    "arch_kpkeys_set_level",
    "copy_thread",
    "cpu_enable_poe",
    "cpu_switch_to",
    "kernel_entry",
    "kernel_exit",
    "permission_overlay_switch",
    "por_el1_init",
    "por_set_kpkeys_context",
    "por_set_kpkeys_level",
    "system_supports_poe",
]

_PGTABLES_RW = (KPKEYS_LVL_PGTABLES, KPKEYS_LVL_UNRESTRICTED)
_CRED_RW = (KPKEYS_LVL_CRED, KPKEYS_LVL_UNRESTRICTED)
_LEVELS_PGTABLES = (KPKEYS_LVL_DEFAULT, KPKEYS_LVL_PGTABLES)
_LEVELS_CRED = (*_LEVELS_PGTABLES, KPKEYS_LVL_CRED, KPKEYS_LVL_UNRESTRICTED)


def por_set_kpkeys_level(por: int, level: KpkeysLevel, cred_levels: bool = False) -> int:
    """``por`` with the kpkeys-managed fields set for ``level`` (spec §2.1; v5 05/18).

    Field ``KPKEYS_PKEY_DEFAULT`` := RWX (kernel text is mapped with pkey 0);
    field ``KPKEYS_PKEY_PGTABLES`` := RW at PGTABLES (and UNRESTRICTED), else R.
    With the cred series (``cred_levels``), field ``KPKEYS_PKEY_CRED`` := RW at
    CRED and UNRESTRICTED, else R.  Every other field is left unchanged, so
    other pkey users keep their settings.  v7 name: ``por_set_kpkeys_context``.
    """
    if level > KPKEYS_LVL_PGTABLES and not cred_levels:
        raise ValueError(f"{level.name} needs the cred levels (cred_levels=True)")
    por = por_elx_set_pkey_perms(por, KPKEYS_PKEY_DEFAULT, POE_RWX)
    por = por_elx_set_pkey_perms(
        por, KPKEYS_PKEY_PGTABLES, POE_RW if level in _PGTABLES_RW else POE_R
    )
    if cred_levels:
        por = por_elx_set_pkey_perms(por, KPKEYS_PKEY_CRED, POE_RW if level in _CRED_RW else POE_R)
    return por


#: v7 name (spec §1.9).
por_set_kpkeys_context = por_set_kpkeys_level

#: ``POR_EL1_INIT`` from v5 14/18 on: ``PREP(0, RWX) | PREP(1, R)`` = 0x17 (spec §2.1).
POR_EL1_INIT = por_set_kpkeys_level(0, KPKEYS_LVL_DEFAULT)
#: ``POR_EL1_INIT`` with the cred series (cred v2 5/8): ``... | PREP(2, R)`` = 0x117.
POR_EL1_INIT_CRED = por_set_kpkeys_level(0, KPKEYS_LVL_DEFAULT, True)


#: ``por_set_kpkeys_level`` as (keep, set) masks, without and with the cred levels.
_LEVEL_MASKS = (
    level_masks(por_set_kpkeys_level, 64, _LEVELS_PGTABLES, False),
    level_masks(por_set_kpkeys_level, 64, _LEVELS_CRED, True),
)


def por_el1_init(config: KernelConfig) -> int:
    """``POR_EL1_INIT`` for the series ``config`` applies."""
    return POR_EL1_INIT_CRED if config.kpkeys_cred_levels else POR_EL1_INIT


def system_supports_poe(k: Kernel) -> bool:
    """The ``ARM64_HAS_S1POE`` capability: the machine's CPUs implement FEAT_S1POE."""
    return k.machine.has_pkeys


#: v5/v6 ``arch_kpkeys_enabled()`` is ``system_supports_poe()`` (spec §2.2).
arch_kpkeys_enabled = system_supports_poe


def _undefined(k: Kernel, insn: str) -> PkeyRegUnavailableError:
    return PkeyRegUnavailableError(
        f"{insn} on CPU{k.cpu.cpu_id} without FEAT_S1POE: UNDEFINED instruction "
        "(kernel code must check arch_kpkeys_enabled() first)"
    )


def __kpkeys_set_pkey_reg_nosync(k: Kernel, reg: int) -> None:
    """``MSR POR_EL1, reg`` with **no** ISB (spec §2.2).

    Until the next context-synchronisation event later accesses may still use
    the old value (the machine keeps using it, pkeys-hardware.md §1.8).
    """
    if not k.machine.has_pkeys:
        raise _undefined(k, "MSR POR_EL1")
    k.cpu.write_pkey_reg(reg)


def arch_kpkeys_set_level(k: Kernel, level: KpkeysLevel, skip_unchanged: bool) -> int:
    """Read POR_EL1, write ``por_set_kpkeys_level(prev, level)``, ISB; return ``prev`` (§2.2).

    RFC v5/v6/v7 write and ISB even when the value does not change; with
    ``skip_unchanged`` (cred v2 1/8, v8) an unchanged value returns
    ``KPKEYS_PKEY_REG_INVAL`` with no write and no ISB (§1.5).
    """
    if not k.machine.has_pkeys:
        raise _undefined(k, "MRS POR_EL1")
    cpu = k.cpu
    prev = cpu.read_pkey_reg()
    keep, bits = _LEVEL_MASKS[k.config.kpkeys_cred_levels][level]
    new = (prev & keep) | bits  # = por_set_kpkeys_level(prev, level, cred_levels)
    if skip_unchanged and new == prev:
        return KPKEYS_PKEY_REG_INVAL
    cpu.write_pkey_reg_isb(new)
    return prev


def arch_kpkeys_restore_pkey_reg(k: Kernel, reg: int) -> None:
    """``MSR POR_EL1, reg`` then ISB (spec §2.2)."""
    if not k.machine.has_pkeys:
        raise _undefined(k, "MSR POR_EL1")
    k.cpu.write_pkey_reg_isb(reg)


def cpu_enable_poe(k: Kernel, cpu: CPU | None = None) -> None:
    """Enable POE at EL0 and EL1 on ``cpu`` (default ``k.cpu``), v5 09/18 (spec §2.3).

    In order: ``POR_EL1 := POR_EL1_INIT``; ``TCR2_EL1.E0POE | TCR2_EL1.POE``
    (``cpu.e0poe``, ``cpu.poe``); ``CPACR_EL1.E0POE`` (not modelled); ISB.
    """
    if not k.machine.has_pkeys:
        raise _undefined(k, "MSR POR_EL1")
    cpu = k.cpu if cpu is None else cpu
    cpu.write_pkey_reg(por_el1_init(k.config))
    cpu.e0poe = 1
    cpu.poe = 1
    cpu.isb()


def kernel_entry(k: Kernel) -> None:
    """Exception taken from EL1 on ``k.cpu`` (v5 07/18, spec §2.4).

    With S1POE: save POR_EL1 in ``pt_regs.por_el1``; if it is not
    ``POR_EL1_INIT``, write ``POR_EL1_INIT`` and ISB.  So every handler runs at
    the default level, even if it interrupted a guarded section.  Without
    S1POE the alternative is not patched in and POR_EL1 is not touched.
    """
    common_kernel_entry(k, por_el1_init(k.config))


def kernel_exit(k: Kernel) -> None:
    """Return to EL1: ``POR_EL1 := pt_regs.por_el1``, no ISB (ERET synchronises), spec §2.4."""
    k.cpu.exception_return()


def copy_thread(k: Kernel, parent_thread: HwThread, name: str | None = None) -> HwThread:
    """The child's ``thread.por_el1``/``por_el0`` (v5 08/18, spec §2.5).

    With POE the child inherits the *live* POR_EL1 of the forking parent
    (``p->thread.por_el1 = read_sysreg_s(SYS_POR_EL1)``); see
    :func:`~kpkeys_sim.kernel.arch.common_copy_thread`.
    """
    return common_copy_thread(k, parent_thread, name)


def permission_overlay_switch(k: Kernel, next_thread: HwThread) -> None:
    """Switch POR_EL1/POR_EL0 to ``next_thread``'s (v5 08/18, spec §2.5).

    Save the live POR_EL1 into ``current->thread.por_el1``; if
    ``next_thread``'s value differs, write it and ISB.  Without POE only the
    running thread changes.
    """
    common_switch_to(k, next_thread)


def cpu_switch_to(k: Kernel, next_thread: HwThread) -> None:
    """``__switch_to`` → ``cpu_switch_to``: the model keeps only the pkey-register part."""
    permission_overlay_switch(k, next_thread)


KPKEYS_ARCH = KpkeysArchOps(
    name="arm64",
    pkey_reg_name="POR_EL1",
    arch_kpkeys_enabled=arch_kpkeys_enabled,
    arch_kpkeys_set_level=arch_kpkeys_set_level,
    arch_kpkeys_restore_pkey_reg=arch_kpkeys_restore_pkey_reg,
    kpkeys_set_pkey_reg_nosync=__kpkeys_set_pkey_reg_nosync,
    set_kpkeys_level=por_set_kpkeys_level,
    pkey_reg_init=por_el1_init,
    cpu_enable=cpu_enable_poe,
    kernel_entry=kernel_entry,
    kernel_exit=kernel_exit,
    copy_thread=copy_thread,
    switch_to=permission_overlay_switch,
)
