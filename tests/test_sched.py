"""Tasks, current, the context switch (POR_EL1, TTBR0/ASID), ASID reuse and interrupt context."""

from __future__ import annotations

import pytest

from kpkeys_sim.kernel.arch.arm64 import POR_EL1_INIT, por_set_kpkeys_level
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_LVL_PGTABLES,
    kpkeys_restore_pkey_reg,
    kpkeys_set_level,
)
from kpkeys_sim.kernel.mm.fork import create_user_task, do_exit, kernel_clone, kernel_wait
from kpkeys_sim.kernel.mm.memory import user_mm_init, user_write
from kpkeys_sim.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, do_mmap
from kpkeys_sim.kernel.mm.page_alloc import nr_free_pages
from kpkeys_sim.kernel.sched import (
    ASID_BITS,
    asid_alloc,
    asid_free,
    cpu_curr,
    current,
    dup_task_struct,
    finish_lazy_tlb,
    in_interrupt,
    irq_context,
    schedule_to,
)
from kpkeys_sim.machine import CountingInstrument, Fault

PGTABLES_POR = por_set_kpkeys_level(POR_EL1_INIT, KPKEYS_LVL_PGTABLES)


def _boot(**kw: object) -> tuple[Kernel, CountingInstrument]:
    counter = CountingInstrument()
    cfg = KernelConfig(ram_size=128 << 20, **kw)  # type: ignore[arg-type]
    k = boot(cfg, instruments=[counter])
    user_mm_init(k)
    return k, counter


def test_sched_init_runs_one_idle_task_per_cpu() -> None:
    """After boot every CPU runs its swapper/N idle task, pid 0, borrowing init_mm."""
    k, _ = _boot(nr_cpus=3)
    for cpu in k.machine.cpus:
        t = cpu_curr(k, cpu.cpu_id)
        assert (t.pid, t.comm, t.mm, t.active_mm) == (0, f"swapper/{cpu.cpu_id}", None, k.init_mm)
        assert cpu.current is t.thread
    with k.on_cpu(2):
        assert current(k).comm == "swapper/2"
    assert k.current is current(k)


def test_context_switch_loads_ttbr0_and_asid_of_the_next_mm() -> None:
    """schedule_to a user task loads its pgd into TTBR0 with its own ASID."""
    k, counter = _boot()
    a = create_user_task(k, "a")
    b = create_user_task(k, "b")
    schedule_to(k, a)
    assert a.mm is not None and b.mm is not None
    assert (k.cpu.ttbr0, k.cpu.asid) == (a.mm.pgd_phys, a.mm.context_id)
    schedule_to(k, b)
    assert (k.cpu.ttbr0, k.cpu.asid) == (b.mm.pgd_phys, b.mm.context_id)
    assert 0 < a.mm.context_id != b.mm.context_id
    assert current(k) is b and a.on_cpu is None and b.on_cpu == 0
    assert counter.counts["context_switch"] == 2


def test_por_el1_is_per_task_across_context_switches() -> None:
    """A task switched out at the PGTABLES level gets it back; the other runs at default."""
    k, _ = _boot(kpkeys_hardened_pgtables=True)
    a = create_user_task(k, "a")
    b = create_user_task(k, "b")
    schedule_to(k, a)
    saved = kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)
    assert k.cpu.pkey_reg_effective == PGTABLES_POR
    schedule_to(k, b)
    assert k.cpu.pkey_reg_effective == POR_EL1_INIT
    assert a.thread.pkey_reg == PGTABLES_POR
    schedule_to(k, a)
    assert k.cpu.pkey_reg_effective == PGTABLES_POR
    kpkeys_restore_pkey_reg(k, saved)
    assert k.cpu.pkey_reg_effective == POR_EL1_INIT


def test_interrupts_run_at_the_default_level_and_restore_on_return() -> None:
    """irq_context resets POR_EL1 to POR_EL1_INIT (kernel_entry) and restores it on exit."""
    k, counter = _boot(kpkeys_hardened_pgtables=True)
    assert not in_interrupt(k)
    saved = kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)
    with irq_context(k):
        assert in_interrupt(k)
        assert k.cpu.pkey_reg_effective == POR_EL1_INIT
        with irq_context(k):
            assert in_interrupt(k)
        assert in_interrupt(k)
    assert not in_interrupt(k)
    assert k.cpu.pkey_reg_effective == PGTABLES_POR
    kpkeys_restore_pkey_reg(k, saved)
    assert counter.counts["irq_entry"] == 2


def test_interrupts_are_per_cpu() -> None:
    """in_interrupt is true only on the CPU taking the interrupt."""
    k, _ = _boot(nr_cpus=2)
    with irq_context(k):
        with k.on_cpu(1):
            assert not in_interrupt(k)
        assert in_interrupt(k)


def test_scheduling_errors_are_kernel_bugs() -> None:
    """Switching to a running or dead task, or from interrupt context, raises KernelBug."""
    k, _ = _boot(nr_cpus=2)
    a = create_user_task(k, "a")
    schedule_to(k, a)
    with k.on_cpu(1), pytest.raises(KernelBug, match="already running"):
        schedule_to(k, a)
    b = create_user_task(k, "b")
    with irq_context(k), pytest.raises(KernelBug, match="atomic"):
        schedule_to(k, b)
    with pytest.raises(KernelBug, match="not current"):
        dup_task_struct(k, b)
    do_exit(k)
    with pytest.raises(KernelBug, match="exited"):
        schedule_to(k, a)


def test_reused_asid_is_invalidated_first() -> None:
    """A freed ASID handed out again is TLBI'd: the new owner sees no stale translation."""
    k, counter = _boot()
    a = create_user_task(k, "a")
    schedule_to(k, a)
    assert a.mm is not None
    asid = a.mm.context_id
    va = do_mmap(k, a.mm, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    user_write(k, va, b"secret")
    k.machine.translate(k.cpu, va, "R", el=0)  # cached under the ASID
    do_exit(k)
    finish_lazy_tlb(k)
    assert kernel_wait(k, current(k)) is not None
    before = counter.counts["tlbi_asid"]
    b = create_user_task(k, "b")
    schedule_to(k, b)
    assert b.mm is not None and b.mm.context_id == asid
    assert counter.counts["tlbi_asid"] == before + 1
    with pytest.raises(Fault):
        k.machine.translate(k.cpu, va, "R", el=0)


def test_asid_allocator_hands_out_lowest_free_and_rejects_double_free() -> None:
    """ASIDs start at 1, come back lowest first, and a double free is a bug."""
    k, _ = _boot()
    got = [asid_alloc(k) for _ in range(3)]
    assert got == [1, 2, 3]
    asid_free(k, 2)
    asid_free(k, 1)
    assert asid_alloc(k) == 1
    with pytest.raises(KernelBug):
        asid_free(k, 2)
    assert ASID_BITS == 16


def test_exited_mm_lent_to_idle_is_freed_by_finish_lazy_tlb() -> None:
    """The dead mm stays loaded on the idle task (lazy TLB) until it is given back."""
    k, _ = _boot()
    assert k.zone is not None
    free0 = nr_free_pages(k.zone)
    a = create_user_task(k, "a")
    schedule_to(k, a)
    mm = a.mm
    do_exit(k)
    assert current(k).pid == 0 and current(k).active_mm is mm
    assert mm is not None and mm.pgd != 0
    finish_lazy_tlb(k)
    assert mm.pgd == 0 and current(k).active_mm is k.init_mm
    kernel_wait(k, current(k))
    assert nr_free_pages(k.zone) == free0


def test_fork_child_inherits_the_live_por_el1() -> None:
    """copy_thread: the child's saved POR_EL1 is the parent's live value at fork."""
    k, _ = _boot(kpkeys_hardened_pgtables=True)
    p = create_user_task(k, "p")
    schedule_to(k, p)
    saved = kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)
    c = kernel_clone(k)
    kpkeys_restore_pkey_reg(k, saved)
    assert c is not None and c.thread.pkey_reg == PGTABLES_POR
    assert c.parent is p and c in p.children
