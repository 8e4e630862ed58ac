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

from kpkeys_sim.machine.events import ISB, PKEY_REG_WRITE, Instruments

__all__ = ["CPU", "HwThread"]


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


class CPU:
    """One CPU of the machine.

    Attributes hold the system registers the MMU consults.  arm64 fields:
    ``poe``/``e0poe`` (TCR2_EL1), ``pie`` (TCR2_EL1.PIE), ``pir``/``pire0``
    (PIR_EL1/PIRE0_EL1, 16 nibbles), ``wxn`` (SCTLR_EL1.WXN), ``pan``
    (PSTATE.PAN).  x86 fields: ``wp`` (CR0.WP), ``pke``/``pks`` (CR4).  Both:
    the kernel and user pkey registers, ``ttbr0``/``asid`` (the user tables and
    their ASID; x86: CR3/PCID) and ``ttbr1`` (the kernel tables).
    """

    __slots__ = (
        "_pkey_reg",
        "_user_pkey_reg",
        "asid",
        "cpu_id",
        "current",
        "e0poe",
        "el",
        "exception_stack",
        "instruments",
        "pan",
        "pie",
        "pir",
        "pire0",
        "pke",
        "pkey_reg_effective",
        "pks",
        "poe",
        "sync_needed",
        "ttbr0",
        "ttbr1",
        "user_pkey_reg_effective",
        "wp",
        "wxn",
    )

    def __init__(self, cpu_id: int, instruments: Instruments, sync_needed: bool) -> None:
        self.cpu_id = cpu_id
        self.instruments = instruments
        self.sync_needed = sync_needed
        self.el = 1
        self._pkey_reg = 0
        self.pkey_reg_effective = 0
        self._user_pkey_reg = 0
        self.user_pkey_reg_effective = 0
        self.poe = 0
        self.e0poe = 0
        self.pie = 0
        self.pir = 0
        self.pire0 = 0
        self.wxn = 0
        self.pan = 0
        self.wp = 1
        self.pke = 0
        self.pks = 0
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
        self.instruments.emit(PKEY_REG_WRITE)

    def read_user_pkey_reg(self) -> int:
        """MRS POR_EL0 / RDPKRU."""
        return self._user_pkey_reg

    def write_user_pkey_reg(self, value: int) -> None:
        """MSR POR_EL0 / WRPKRU (no barrier)."""
        self._user_pkey_reg = value
        if not self.sync_needed:
            self.user_pkey_reg_effective = value
        self.instruments.emit(PKEY_REG_WRITE)

    def _synchronise(self) -> None:
        self.pkey_reg_effective = self._pkey_reg
        self.user_pkey_reg_effective = self._user_pkey_reg

    def isb(self) -> None:
        """ISB: later accesses see every earlier register write."""
        self._synchronise()
        self.instruments.emit(ISB)

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
            self.write_pkey_reg(reset_to)
            if self.sync_needed:
                self.isb()

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
            self.write_pkey_reg(nxt.pkey_reg)
            if self.sync_needed:
                self.isb()
        if nxt.user_pkey_reg != self._user_pkey_reg:
            self.write_user_pkey_reg(nxt.user_pkey_reg)
        self.current = nxt
