"""CPUs: registers, the pkey register's synchronisation rule, exceptions, threads.

The per-CPU pkey register (arm64 POR_EL1, x86 IA32_PKRS) is modelled with the
architectural visibility rule: on arm64 a direct write (MSR) is only
guaranteed to affect later accesses after a context-synchronisation event
(ISB, exception entry, exception return) — Arm ARM D24.1.2.2; before it,
either value may be used.  The model takes the *old* value until the
synchronisation (the choice that exposes a missing ISB as a fault; spec
pkeys-hardware.md §1.8 [INF]).  Reads (MRS) return the last written value.
On x86 the write is ordered for later accesses by itself (PKS series), so it
takes effect at once.

Exception entry and return, and the context switch, are the hardware halves
of the kernel paths in kpkeys v5 07/18 and 08/18: the kernel chooses the
value to reset to (``POR_EL1_INIT``) and passes it in; the CPU does the
save/compare/write/ISB steps and counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, overload

from kpkeys_sim.machine.events import ISB, PKEY_REG_WRITE, Instruments

__all__ = ["CHECKED_SYSREGS", "CPU", "HwThread"]

#: The system-register fields the access check reads besides the pkey registers.
CHECKED_SYSREGS = ("poe", "e0poe", "pie", "pir", "pire0", "wxn", "pan", "wp", "pke", "pks")


@dataclass(slots=True)
class HwThread:
    """The hardware-visible part of a thread: its saved pkey registers.

    ``pkey_reg`` is ``thread.por_el1`` (kpkeys v5 08/18); ``user_pkey_reg`` is
    ``thread.por_el0``.  The kernel's task model keeps one of these per task.
    """

    name: str
    pkey_reg: int = 0
    user_pkey_reg: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class _CheckedSysreg:
    """A system-register field the access check reads: stored in slot ``_<name>``.

    A write refreshes :attr:`CPU.sysregs` and drops :attr:`CPU.verdicts`, so
    the cached check state never outlives a register change.
    """

    __slots__ = ("_slot",)

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    @overload
    def __get__(self, cpu: None, owner: type) -> _CheckedSysreg: ...
    @overload
    def __get__(self, cpu: CPU, owner: type | None = None) -> int: ...
    def __get__(self, cpu: CPU | None, owner: type | None = None) -> int | _CheckedSysreg:
        if cpu is None:
            return self
        value: int = getattr(cpu, self._slot)
        return value

    def __set__(self, cpu: CPU, value: int) -> None:
        setattr(cpu, self._slot, value)
        cpu.sysregs = tuple(getattr(cpu, "_" + n) for n in CHECKED_SYSREGS)
        cpu.verdicts = None


class CPU:
    """One CPU of the machine.

    Attributes hold the system registers the MMU consults.  arm64 fields:
    ``poe``/``e0poe`` (TCR2_EL1), ``pie`` (TCR2_EL1.PIE), ``pir``/``pire0``
    (PIR_EL1/PIRE0_EL1, 16 nibbles), ``wxn`` (SCTLR_EL1.WXN), ``pan``
    (PSTATE.PAN).  x86 fields: ``wp`` (CR0.WP), ``pke``/``pks`` (CR4).  Both:
    the kernel and user pkey registers, ``ttbr0``/``asid`` (the user tables and
    their ASID; x86: CR3/PCID) and ``ttbr1`` (the kernel tables).

    The check-state cache.  ``sysregs`` is the tuple of the
    :data:`CHECKED_SYSREGS` values, refreshed by every write of one of them;
    ``verdicts`` is the owning :class:`~kpkeys_sim.machine.machine.Machine`'s
    verdict table for the current values of those registers
    (:meth:`Machine.check`; its keys hold the effective pkey registers), or
    None.  Every write of one of those registers sets ``verdicts`` to None
    (the machine looks the table up again on the next check), so a cached
    table always belongs to the current values and the cache is exact.
    """

    __slots__ = (
        "_e0poe",
        "_pan",
        "_pie",
        "_pir",
        "_pire0",
        "_pke",
        "_pkey_reg",
        "_pks",
        "_poe",
        "_user_pkey_reg",
        "_wp",
        "_wxn",
        "asid",
        "cpu_id",
        "current",
        "el",
        "exception_stack",
        "instruments",
        "pkey_reg_effective",
        "sync_needed",
        "sysregs",
        "ttbr0",
        "ttbr1",
        "user_pkey_reg_effective",
        "verdicts",
    )

    sysregs: tuple[int, ...]
    verdicts: dict[tuple[int, int, int], Any] | None

    poe = _CheckedSysreg()
    e0poe = _CheckedSysreg()
    pie = _CheckedSysreg()
    pir = _CheckedSysreg()
    pire0 = _CheckedSysreg()
    wxn = _CheckedSysreg()
    pan = _CheckedSysreg()
    wp = _CheckedSysreg()
    pke = _CheckedSysreg()
    pks = _CheckedSysreg()

    def __init__(self, cpu_id: int, instruments: Instruments, sync_needed: bool) -> None:
        self.cpu_id = cpu_id
        self.instruments = instruments
        self.sync_needed = sync_needed
        self.el = 1
        self._pkey_reg = 0
        self.pkey_reg_effective = 0
        self._user_pkey_reg = 0
        self.user_pkey_reg_effective = 0
        self._poe = self._e0poe = self._pie = self._pir = self._pire0 = 0
        self._wxn = self._pan = self._pke = self._pks = 0
        self._wp = 1
        self.wp = 1  # through the descriptor: computes ``sysregs``
        self.verdicts = None
        self.ttbr0 = 0
        self.ttbr1 = 0
        self.asid = 0
        # (saved pkey register, whether the entry path manages it) per nesting level
        self.exception_stack: list[tuple[int, bool]] = []
        self.current: HwThread | None = None

    # --- the pkey registers ----------------------------------------------------------

    def read_pkey_reg(self) -> int:
        """MRS POR_EL1 / RDMSR IA32_PKRS: the last value written."""
        return self._pkey_reg

    def write_pkey_reg(self, value: int) -> None:
        """MSR POR_EL1 / WRMSR IA32_PKRS (no barrier)."""
        self._pkey_reg = value
        if not self.sync_needed:
            self.pkey_reg_effective = value
        ins = self.instruments
        if ins.active:
            ins.emit(PKEY_REG_WRITE)

    def write_pkey_reg_isb(self, value: int) -> None:
        """MSR POR_EL1 then ISB (:meth:`write_pkey_reg` + :meth:`isb`, each counted)."""
        self._pkey_reg = value
        self.pkey_reg_effective = value  # the ISB: both registers synchronised
        self.user_pkey_reg_effective = self._user_pkey_reg
        ins = self.instruments
        if ins.active:
            ins.emit(PKEY_REG_WRITE)
            ins.emit(ISB)

    def _write_pkey_reg_synced(self, value: int) -> None:
        """Write the register with an ISB after it where the architecture needs one."""
        if self.sync_needed:
            self.write_pkey_reg_isb(value)
        else:
            self.write_pkey_reg(value)

    def read_user_pkey_reg(self) -> int:
        """MRS POR_EL0 / RDPKRU."""
        return self._user_pkey_reg

    def write_user_pkey_reg(self, value: int) -> None:
        """MSR POR_EL0 / WRPKRU (no barrier)."""
        self._user_pkey_reg = value
        if not self.sync_needed:
            self.user_pkey_reg_effective = value
        ins = self.instruments
        if ins.active:
            ins.emit(PKEY_REG_WRITE)

    def _synchronise(self) -> None:
        self.pkey_reg_effective = self._pkey_reg
        self.user_pkey_reg_effective = self._user_pkey_reg

    def isb(self) -> None:
        """ISB: later accesses see every earlier register write."""
        self._synchronise()
        ins = self.instruments
        if ins.active:
            ins.emit(ISB)

    @property
    def pkey_reg_pending(self) -> bool:
        """True if a written pkey-register value is not yet in effect."""
        return (
            self._pkey_reg != self.pkey_reg_effective
            or self._user_pkey_reg != self.user_pkey_reg_effective
        )

    # --- exceptions ----------------------------------------------------------------------

    def exception_entry(self, reset_to: int | None) -> None:
        """Take an exception to EL1 from EL1 (kpkeys v5 07/18 ``kernel_entry``).

        Entry is context-synchronising.  With ``reset_to`` given (the kernel's
        entry path manages the register: the CPU has pkeys), the current value
        is saved (``pt_regs.por_el1``) and, if it differs from ``reset_to``, the
        register is written with ``reset_to`` followed by an ISB where the
        architecture needs one (skipped when the value is already the
        default).  With ``reset_to`` None the register is left alone and
        :meth:`exception_return` will not touch it either.
        """
        self._synchronise()
        saved = self._pkey_reg
        self.exception_stack.append((saved, reset_to is not None))
        if reset_to is not None and saved != reset_to:
            self._write_pkey_reg_synced(reset_to)

    def exception_return(self) -> None:
        """Return from the exception: restore the saved value; ERET synchronises (no ISB).

        The register is written back only if the entry path managed it.
        """
        if not self.exception_stack:
            raise RuntimeError(f"CPU{self.cpu_id}: exception return with no exception taken")
        saved, managed = self.exception_stack.pop()
        if managed:
            self.write_pkey_reg(saved)
        self._synchronise()

    def in_interrupt(self) -> bool:
        """True while an exception taken from EL1 is being handled on this CPU."""
        return bool(self.exception_stack)

    # --- threads ---------------------------------------------------------------------------

    def context_switch(self, nxt: HwThread) -> None:
        """Switch to ``nxt`` (``permission_overlay_switch``, kpkeys v5 08/18).

        Save the current register into the outgoing thread; write the incoming
        thread's value, with an ISB where the architecture needs one, only if
        it differs.
        """
        cur = self._pkey_reg
        if self.current is not None:
            self.current.pkey_reg = cur
            self.current.user_pkey_reg = self._user_pkey_reg
        if nxt.pkey_reg != cur:
            self._write_pkey_reg_synced(nxt.pkey_reg)
        if nxt.user_pkey_reg != self._user_pkey_reg:
            self.write_user_pkey_reg(nxt.user_pkey_reg)
        self.current = nxt
