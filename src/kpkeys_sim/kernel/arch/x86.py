"""x86 kpkeys glue on PKS: IA32_PKRS levels, set/restore, PKS enabling, entry and switch.

The series implements kpkeys on arm64 only; Kevin hoped for an x86 PKS port
(spec kpkeys-series.md §7.5).  This module is that port as the model
defines it: the generic API of ``kpkeys.core`` unchanged, with the arm64
rules translated to IA32_PKRS (pkeys-hardware.md §3.2) [INF throughout; the
entry and switch handling follows the PKS core series, which saved PKRS in
``pt_regs`` and ``thread_struct`` (§9)]:

* Each key has an AD (access-disable) and a WD (write-disable) bit
  (:mod:`kpkeys_sim.machine.arch.x86_pk`).  ``KPKEYS_PKEY_DEFAULT`` (0) is RW
  (AD = WD = 0) at every level; ``KPKEYS_PKEY_PGTABLES`` (1) is RW at PGTABLES
  (and UNRESTRICTED) and read-only (WD) otherwise; with the cred series
  ``KPKEYS_PKEY_CRED`` (2) likewise at CRED/UNRESTRICTED.  Other keys are left
  unchanged.  PKS does not control instruction fetches, so there is no
  execute right to grant.
* The initial value access-disables every unmanaged key (as arm64's
  ``POR_EL1_INIT`` leaves them at NONE and Linux's ``init_pkru_value`` does
  for user keys): :data:`PKRS_INIT` = 0x55555558 (0x55555568 with the cred
  levels).  Besides being the safe default, this keeps every value kpkeys
  produces non-zero, so the generic ``KPKEYS_PKEY_REG_INVAL`` (0) keeps its
  meaning ("no value to restore") on x86 too, where 0 would otherwise be a
  legal "everything RW" register.
* The write is WRMSR, ordered for later accesses by itself: no ISB
  (machine fact ``reg_write_needs_sync = False``).
* WD denies supervisor writes only while CR0.WP = 1; enabling sets CR4.PKS
  and (re)asserts CR0.WP.
"""

from __future__ import annotations

from functools import reduce

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
from kpkeys_sim.machine.arch.x86_pk import X86Pk, pkr_set_ad, pkr_set_bits
from kpkeys_sim.machine.cpu import CPU, HwThread

__all__ = [
    "KPKEYS_ARCH",
    "PKRS_INIT",
    "PKRS_INIT_CRED",
    "__kpkeys_set_pkey_reg_nosync",
    "arch_kpkeys_enabled",
    "arch_kpkeys_restore_pkey_reg",
    "arch_kpkeys_set_level",
    "copy_thread",
    "cpu_enable_pks",
    "cpu_feature_enabled_pks",
    "cpu_switch_to",
    "kernel_entry",
    "kernel_exit",
    "pkrs_init",
    "pks_set_kpkeys_level",
    "pks_write_pkrs",
]

_PGTABLES_RW = (KPKEYS_LVL_PGTABLES, KPKEYS_LVL_UNRESTRICTED)
_CRED_RW = (KPKEYS_LVL_CRED, KPKEYS_LVL_UNRESTRICTED)
_LEVELS_PGTABLES = (KPKEYS_LVL_DEFAULT, KPKEYS_LVL_PGTABLES)
_LEVELS_CRED = (*_LEVELS_PGTABLES, KPKEYS_LVL_CRED, KPKEYS_LVL_UNRESTRICTED)


def pks_set_kpkeys_level(pkrs: int, level: KpkeysLevel, cred_levels: bool = False) -> int:
    """``pkrs`` with the kpkeys-managed keys set for ``level`` (x86 analogue of §2.1).

    Key 0: RW.  Key 1: RW at PGTABLES/UNRESTRICTED, else WD (read-only).  With
    ``cred_levels``, key 2: RW at CRED/UNRESTRICTED, else WD.  Other keys
    unchanged.
    """
    if level > KPKEYS_LVL_PGTABLES and not cred_levels:
        raise ValueError(f"{level.name} needs the cred levels (cred_levels=True)")
    pkrs = pkr_set_bits(pkrs, KPKEYS_PKEY_DEFAULT, ad=False, wd=False)
    pkrs = pkr_set_bits(pkrs, KPKEYS_PKEY_PGTABLES, ad=False, wd=level not in _PGTABLES_RW)
    if cred_levels:
        pkrs = pkr_set_bits(pkrs, KPKEYS_PKEY_CRED, ad=False, wd=level not in _CRED_RW)
    return pkrs


#: IA32_PKRS with every key access-disabled (the starting point of the init value).
_PKRS_ALL_AD = reduce(lambda reg, key: pkr_set_ad(reg, key, True), range(X86Pk.nr_pkeys), 0)
#: The default level with unmanaged keys access-disabled: 0x55555558.
PKRS_INIT = pks_set_kpkeys_level(_PKRS_ALL_AD, KPKEYS_LVL_DEFAULT)
#: The same with the cred series' key 2 read-only: 0x55555568.
PKRS_INIT_CRED = pks_set_kpkeys_level(_PKRS_ALL_AD, KPKEYS_LVL_DEFAULT, True)


#: ``pks_set_kpkeys_level`` as (keep, set) masks, without and with the cred levels.
_LEVEL_MASKS = (
    level_masks(pks_set_kpkeys_level, 32, _LEVELS_PGTABLES, False),
    level_masks(pks_set_kpkeys_level, 32, _LEVELS_CRED, True),
)


def pkrs_init(config: KernelConfig) -> int:
    """The initial IA32_PKRS for the series ``config`` applies."""
    return PKRS_INIT_CRED if config.kpkeys_cred_levels else PKRS_INIT


def cpu_feature_enabled_pks(k: Kernel) -> bool:
    """``cpu_feature_enabled(X86_FEATURE_PKS)``: the machine's CPUs implement PKS."""
    return k.machine.has_pkeys


#: The x86 ``arch_kpkeys_enabled()``.
arch_kpkeys_enabled = cpu_feature_enabled_pks


def _gp(k: Kernel, insn: str) -> PkeyRegUnavailableError:
    return PkeyRegUnavailableError(
        f"{insn} IA32_PKRS on CPU{k.cpu.cpu_id} without PKS: #GP "
        "(kernel code must check arch_kpkeys_enabled() first)"
    )


def pks_write_pkrs(k: Kernel, pkrs: int) -> None:
    """``WRMSR IA32_PKRS``: in effect for the next access, no barrier (spec pkeys-hardware §3.2)."""
    if not k.machine.has_pkeys:
        raise _gp(k, "WRMSR")
    k.cpu.write_pkey_reg(pkrs)


#: The raw write of the generic glue interface; on x86 it needs no barrier anyway.
__kpkeys_set_pkey_reg_nosync = pks_write_pkrs


def arch_kpkeys_set_level(k: Kernel, level: KpkeysLevel, skip_unchanged: bool) -> int:
    """RDMSR, WRMSR ``pks_set_kpkeys_level(prev, level)``; return ``prev``.

    No ISB: x86 has none and needs none.  With ``skip_unchanged`` an unchanged
    value returns ``KPKEYS_PKEY_REG_INVAL`` with no WRMSR (the PKS series also
    avoided redundant MSR writes).
    """
    if not k.machine.has_pkeys:
        raise _gp(k, "RDMSR")
    cpu = k.cpu
    prev = cpu.read_pkey_reg()
    keep, bits = _LEVEL_MASKS[k.config.kpkeys_cred_levels][level]
    new = (prev & keep) | bits  # = pks_set_kpkeys_level(prev, level, cred_levels)
    if skip_unchanged and new == prev:
        return KPKEYS_PKEY_REG_INVAL
    cpu.write_pkey_reg(new)
    return prev


def arch_kpkeys_restore_pkey_reg(k: Kernel, reg: int) -> None:
    """``WRMSR IA32_PKRS, reg`` (no barrier)."""
    pks_write_pkrs(k, reg)


def cpu_enable_pks(k: Kernel, cpu: CPU | None = None) -> None:
    """Enable PKS on ``cpu`` (default ``k.cpu``): IA32_PKRS := init, CR4.PKS := 1, CR0.WP := 1.

    CR0.WP is always set in a running Linux kernel; it is asserted here
    because WD only denies supervisor writes while it is 1.
    """
    if not k.machine.has_pkeys:
        raise _gp(k, "WRMSR")
    cpu = k.cpu if cpu is None else cpu
    cpu.write_pkey_reg(pkrs_init(k.config))
    cpu.pks = 1
    cpu.wp = 1


def kernel_entry(k: Kernel) -> None:
    """Exception taken from kernel mode: save IA32_PKRS, reset it to the init value if different.

    The x86 counterpart of arm64 v5 07/18 (the PKS core series kept PKRS in
    ``pt_regs``): handlers run at the default level.
    """
    common_kernel_entry(k, pkrs_init(k.config))


def kernel_exit(k: Kernel) -> None:
    """Return to kernel mode: IA32_PKRS := the value saved at entry."""
    k.cpu.exception_return()


def copy_thread(k: Kernel, parent_thread: HwThread, name: str | None = None) -> HwThread:
    """The child's saved IA32_PKRS/PKRU: the parent's live values (as arm64, v5 08/18)."""
    return common_copy_thread(k, parent_thread, name)


def cpu_switch_to(k: Kernel, next_thread: HwThread) -> None:
    """Context switch: save IA32_PKRS in the outgoing thread, load the next one's if different."""
    common_switch_to(k, next_thread)


KPKEYS_ARCH = KpkeysArchOps(
    name="x86",
    pkey_reg_name="IA32_PKRS",
    arch_kpkeys_enabled=arch_kpkeys_enabled,
    arch_kpkeys_set_level=arch_kpkeys_set_level,
    arch_kpkeys_restore_pkey_reg=arch_kpkeys_restore_pkey_reg,
    kpkeys_set_pkey_reg_nosync=__kpkeys_set_pkey_reg_nosync,
    set_kpkeys_level=pks_set_kpkeys_level,
    pkey_reg_init=pkrs_init,
    cpu_enable=cpu_enable_pks,
    kernel_entry=kernel_entry,
    kernel_exit=kernel_exit,
    copy_thread=copy_thread,
    switch_to=cpu_switch_to,
)
