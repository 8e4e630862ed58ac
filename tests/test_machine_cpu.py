"""CPUs: the pkey register's synchronisation rule, exceptions and context switches."""

from __future__ import annotations

import pytest

from kpkeys_sim.machine import CountingInstrument, HwThread, Machine
from kpkeys_sim.machine.events import ISB, PKEY_REG_WRITE

INIT, PGTABLES = 0x17, 0x57


def _cpu(arch: str = "arm64") -> tuple[Machine, CountingInstrument]:
    c = CountingInstrument()
    m = Machine(arch=arch, ram_size=16 << 20, instruments=[c])
    m.cpus[0].write_pkey_reg(INIT)
    m.cpus[0].isb()
    c.reset()
    return m, c


def test_arm64_write_takes_effect_only_after_isb() -> None:
    """MSR is read back at once but governs accesses only after an ISB."""
    m, c = _cpu()
    cpu = m.cpus[0]
    cpu.write_pkey_reg(PGTABLES)
    assert cpu.read_pkey_reg() == PGTABLES
    assert cpu.pkey_reg_effective == INIT and cpu.pkey_reg_pending
    cpu.isb()
    assert cpu.pkey_reg_effective == PGTABLES and not cpu.pkey_reg_pending
    assert (c.counts[PKEY_REG_WRITE], c.counts[ISB]) == (1, 1)


def test_x86_write_takes_effect_at_once() -> None:
    """WRMSR IA32_PKRS needs no barrier (ordered like WRPKRU)."""
    m, _ = _cpu("x86")
    m.cpus[0].write_pkey_reg(0x8)
    assert m.cpus[0].pkey_reg_effective == 0x8


def test_exception_entry_resets_with_isb_only_if_changed() -> None:
    """Entry saves and resets to the default (ISB only if different); return restores, no ISB."""
    m, c = _cpu()
    cpu = m.cpus[0]
    cpu.exception_entry(reset_to=INIT)
    assert (c.counts[PKEY_REG_WRITE], c.counts[ISB]) == (0, 0)
    cpu.exception_return()
    cpu.write_pkey_reg(PGTABLES)
    cpu.isb()
    c.reset()
    cpu.exception_entry(reset_to=INIT)
    assert cpu.in_interrupt() and cpu.pkey_reg_effective == INIT
    assert (c.counts[PKEY_REG_WRITE], c.counts[ISB]) == (1, 1)
    cpu.exception_return()
    assert not cpu.in_interrupt() and cpu.pkey_reg_effective == PGTABLES
    assert (c.counts[PKEY_REG_WRITE], c.counts[ISB]) == (2, 1)


def test_exception_entry_synchronises_a_pending_write() -> None:
    """Exception entry is a context-synchronisation event."""
    m, _ = _cpu()
    cpu = m.cpus[0]
    cpu.write_pkey_reg(PGTABLES)
    cpu.exception_entry(reset_to=None)
    assert cpu.pkey_reg_effective == PGTABLES


def test_exception_return_without_entry_is_a_model_error() -> None:
    """Returning from no exception is refused."""
    m, _ = _cpu()
    with pytest.raises(RuntimeError, match="no exception"):
        m.cpus[0].exception_return()


def test_context_switch_saves_and_restores_per_thread_value() -> None:
    """The outgoing value is saved; the incoming one is written with an ISB only if different."""
    m, c = _cpu()
    cpu = m.cpus[0]
    a, b = HwThread("a", pkey_reg=INIT), HwThread("b", pkey_reg=INIT)
    cpu.context_switch(a)
    assert (c.counts[PKEY_REG_WRITE], c.counts[ISB]) == (0, 0)
    cpu.write_pkey_reg(PGTABLES)
    cpu.isb()
    cpu.context_switch(b)
    assert a.pkey_reg == PGTABLES and cpu.pkey_reg_effective == INIT
    cpu.context_switch(a)
    assert cpu.pkey_reg_effective == PGTABLES
    assert c.counts[ISB] == 3


def test_x86_entry_and_switch_need_no_isb() -> None:
    """On x86 the register write on entry and on switch is not followed by an ISB."""
    m, c = _cpu("x86")
    cpu = m.cpus[0]
    cpu.write_pkey_reg(0x8)
    c.reset()
    cpu.exception_entry(reset_to=0x0)
    cpu.exception_return()
    cpu.context_switch(HwThread("t", pkey_reg=0x4))
    assert c.counts[ISB] == 0 and c.counts[PKEY_REG_WRITE] == 3


def test_unmanaged_exception_leaves_the_register_alone() -> None:
    """Without a reset value (no pkeys) neither entry nor return writes the register."""
    m, c = _cpu()
    cpu = m.cpus[0]
    cpu.exception_entry(reset_to=None)
    cpu.exception_return()
    assert c.counts[PKEY_REG_WRITE] == 0


def test_instruments_active_follows_attached_event_observers() -> None:
    """Emitters skip the call only while no attached instrument observes events."""
    m, c = _cpu()
    assert m.instruments.active
    m.instruments.remove(c)
    assert not m.instruments.active
    m.cpus[0].write_pkey_reg_isb(PGTABLES)
    m.instruments.add(c)
    m.cpus[0].write_pkey_reg_isb(INIT)
    assert (c.counts[PKEY_REG_WRITE], c.counts[ISB]) == (1, 1)
    assert m.cpus[0].pkey_reg_effective == INIT and not m.cpus[0].pkey_reg_pending
