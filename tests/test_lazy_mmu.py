"""Lazy MMU mode: nesting, deferred barriers, interrupt context and the kpkeys batching hooks."""

from __future__ import annotations

import pytest

from kpkeys_sim.kernel.arch.arm64 import POR_EL1_INIT, por_set_kpkeys_level
from kpkeys_sim.kernel.arch.arm64_pgtable import PAGE_KERNEL
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import KPKEYS_LVL_PGTABLES
from kpkeys_sim.kernel.mm.lazy_mmu import (
    is_lazy_mmu_mode_active,
    lazy_mmu_mode,
    lazy_mmu_mode_disable,
    lazy_mmu_mode_enable,
    lazy_mmu_mode_pause,
    lazy_mmu_mode_resume,
)
from kpkeys_sim.kernel.mm.pgalloc import pte_alloc_one_kernel
from kpkeys_sim.kernel.mm.pgtable import set_pte
from kpkeys_sim.kernel.sched import (
    TIF_LAZY_MMU,
    TIF_LAZY_MMU_PENDING,
    current,
    irq_context,
    task_struct,
)
from kpkeys_sim.kernel.sched import (
    test_thread_flag as flag_is_set,
)
from kpkeys_sim.machine import CountingInstrument


def _boot(**kw: object) -> tuple[Kernel, CountingInstrument]:
    counter = CountingInstrument()
    cfg = KernelConfig(ram_size=128 << 20, **kw)  # type: ignore[arg-type]
    return boot(cfg, instruments=[counter]), counter


def _kernel_ptep(k: Kernel) -> tuple[int, int]:
    """A fresh kernel PTE table's first entry and a valid kernel PTE value to store there."""
    pfn = pte_alloc_one_kernel(k)
    assert pfn is not None
    return k.pgt.va(pfn << k.pgt.PAGE_SHIFT), k.pgt.pfn_pte(pfn, PAGE_KERNEL)


def _delta(counter: CountingInstrument, before: dict[str, int], *kinds: str) -> tuple[int, ...]:
    return tuple(counter.counts[x] - before.get(x, 0) for x in kinds)


def test_nested_sections_call_the_arch_hooks_only_for_the_outermost() -> None:
    """enable/enable/disable/disable: one lazy_mmu_section, active until the outer disable."""
    k, counter = _boot(kpkeys_hardened_pgtables=False)
    assert not is_lazy_mmu_mode_active(k)
    before = dict(counter.counts)
    lazy_mmu_mode_enable(k)
    lazy_mmu_mode_enable(k)
    assert current(k).lazy_mmu.enable_count == 2
    lazy_mmu_mode_disable(k)
    assert is_lazy_mmu_mode_active(k)
    lazy_mmu_mode_disable(k)
    assert not is_lazy_mmu_mode_active(k)
    assert _delta(counter, before, "lazy_mmu_section") == (1,)


def test_barriers_are_deferred_to_the_end_of_the_section() -> None:
    """Kernel PTE stores in lazy mode set TIF_LAZY_MMU_PENDING; leaving emits one DSB+ISB."""
    k, counter = _boot(kpkeys_hardened_pgtables=False)
    ptep, pte = _kernel_ptep(k)
    before = dict(counter.counts)
    set_pte(k, ptep, pte)
    assert _delta(counter, before, "dsb", "isb") == (1, 1)
    before = dict(counter.counts)
    with lazy_mmu_mode(k):
        for i in range(4):
            set_pte(k, ptep + 8 * i, pte)
        assert _delta(counter, before, "dsb", "isb") == (0, 0)
        assert flag_is_set(current(k), TIF_LAZY_MMU_PENDING)
    assert _delta(counter, before, "dsb", "isb") == (1, 1)
    assert not flag_is_set(current(k), TIF_LAZY_MMU_PENDING)


def test_leaving_a_nested_section_flushes_pending_barriers_but_stays_lazy() -> None:
    """v6: the inner disable is arch_flush_lazy_mmu_mode: barriers now, mode still active."""
    k, counter = _boot(kpkeys_hardened_pgtables=False)
    ptep, pte = _kernel_ptep(k)
    lazy_mmu_mode_enable(k)
    lazy_mmu_mode_enable(k)
    set_pte(k, ptep, pte)
    before = dict(counter.counts)
    lazy_mmu_mode_disable(k)
    assert _delta(counter, before, "dsb", "isb") == (1, 1)
    assert is_lazy_mmu_mode_active(k)
    lazy_mmu_mode_disable(k)
    assert _delta(counter, before, "dsb", "isb") == (1, 1)


def test_interrupt_context_is_never_lazy() -> None:
    """In an interrupt, lazy mode is inactive, enable is a no-op and barriers are immediate."""
    k, counter = _boot(kpkeys_hardened_pgtables=False)
    ptep, pte = _kernel_ptep(k)
    start = dict(counter.counts)
    with lazy_mmu_mode(k):
        with irq_context(k):
            assert not is_lazy_mmu_mode_active(k)
            lazy_mmu_mode_enable(k)
            assert current(k).lazy_mmu.enable_count == 1
            before = dict(counter.counts)
            set_pte(k, ptep, pte)
            assert _delta(counter, before, "dsb", "isb") == (1, 1)
            lazy_mmu_mode_disable(k)
        assert is_lazy_mmu_mode_active(k)
    assert _delta(counter, start, "lazy_mmu_section") == (1,)


def test_pause_leaves_the_arch_mode_and_resume_reenters_it() -> None:
    """lazy_mmu_mode_pause/resume run arch leave/enter; nested enables while paused are no-ops."""
    k, counter = _boot(kpkeys_hardened_pgtables=False)
    before = dict(counter.counts)
    with lazy_mmu_mode(k):
        lazy_mmu_mode_pause(k)
        assert not is_lazy_mmu_mode_active(k)
        lazy_mmu_mode_enable(k)
        lazy_mmu_mode_disable(k)
        lazy_mmu_mode_resume(k)
        assert is_lazy_mmu_mode_active(k)
    assert _delta(counter, before, "lazy_mmu_section") == (2,)


def test_unbalanced_disable_is_a_bug() -> None:
    """lazy_mmu_mode_disable without an enable raises KernelBug (VM_WARN_ON)."""
    k, _ = _boot(kpkeys_hardened_pgtables=False)
    with pytest.raises(KernelBug):
        lazy_mmu_mode_disable(k)


def test_hooks_run_in_spec_order_with_the_pending_flag() -> None:
    """Enter hooks see the active mode; leave hooks run before the barriers, told they pend."""
    k, counter = _boot(kpkeys_hardened_pgtables=False)
    ptep, pte = _kernel_ptep(k)
    log: list[tuple[str, object, int]] = []

    def enter(kk: Kernel, t: task_struct) -> None:
        log.append(("enter", is_lazy_mmu_mode_active(kk), counter.counts["dsb"]))

    def leave(kk: Kernel, t: task_struct, pending: bool) -> None:
        log.append(("leave", pending, counter.counts["dsb"]))

    k.lazy_mmu_enter_hooks.append(enter)
    k.lazy_mmu_leave_hooks.append(leave)
    with lazy_mmu_mode(k):
        set_pte(k, ptep, pte)
    dsb_after = counter.counts["dsb"]
    assert [e[:2] for e in log] == [("enter", True), ("leave", True)]
    assert log[1][2] == dsb_after - 1  # the barrier came after the leave hook
    with lazy_mmu_mode(k):
        pass
    assert log[-1][:2] == ("leave", False)


def test_kpkeys_batching_switches_once_per_section() -> None:
    """Feature on: one POR_EL1 switch in and out per section, not per PTE store."""
    k, counter = _boot(kpkeys_hardened_pgtables=True)
    ptep, pte = _kernel_ptep(k)
    before = dict(counter.counts)
    with lazy_mmu_mode(k):
        assert k.cpu.read_pkey_reg() == por_set_kpkeys_level(POR_EL1_INIT, KPKEYS_LVL_PGTABLES)
        for i in range(8):
            set_pte(k, ptep + 8 * i, pte)
    # enter: write + ISB; leave with barriers pending: write (no ISB) + the barrier ISB.
    assert _delta(counter, before, "pkey_reg_write", "isb", "dsb") == (2, 2, 1)
    assert k.cpu.read_pkey_reg() == POR_EL1_INIT
    before = dict(counter.counts)
    for i in range(8):
        set_pte(k, ptep + 8 * i, pte)
    assert _delta(counter, before, "pkey_reg_write") == (16,)


def test_interrupt_inside_a_section_runs_at_the_default_level() -> None:
    """An interrupt in a batched section resets POR_EL1 and the handler takes its own guard."""
    k, counter = _boot(kpkeys_hardened_pgtables=True)
    ptep, pte = _kernel_ptep(k)
    pgtables = por_set_kpkeys_level(POR_EL1_INIT, KPKEYS_LVL_PGTABLES)
    with lazy_mmu_mode(k):
        with irq_context(k):
            assert k.cpu.pkey_reg_effective == POR_EL1_INIT
            before = dict(counter.counts)
            set_pte(k, ptep, pte)  # guarded: switch in and out
            assert _delta(counter, before, "pkey_reg_write") == (2,)
        assert k.cpu.pkey_reg_effective == pgtables
    assert k.cpu.read_pkey_reg() == POR_EL1_INIT
    assert counter.faults == 0
    assert counter.counts["irq_entry"] == 1


def test_v5_nesting_flaw_leaves_the_pgtables_level_enabled() -> None:
    """v5 has no nesting: a nested section overwrites the saved POR, leaking PGTABLES."""
    pgtables = por_set_kpkeys_level(POR_EL1_INIT, KPKEYS_LVL_PGTABLES)
    k5, _ = _boot(kpkeys_hardened_pgtables=True, series="v5")
    lazy_mmu_mode_enable(k5)
    lazy_mmu_mode_enable(k5)
    lazy_mmu_mode_disable(k5)
    assert not flag_is_set(current(k5), TIF_LAZY_MMU)  # the inner leave ended it
    lazy_mmu_mode_disable(k5)
    assert k5.cpu.read_pkey_reg() == pgtables
    k6, _ = _boot(kpkeys_hardened_pgtables=True, series="v6")
    lazy_mmu_mode_enable(k6)
    lazy_mmu_mode_enable(k6)
    lazy_mmu_mode_disable(k6)
    lazy_mmu_mode_disable(k6)
    assert k6.cpu.read_pkey_reg() == POR_EL1_INIT
