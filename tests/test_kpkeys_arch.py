"""The kpkeys arch glue: arm64 POR_EL1 (spec §2.1–§2.5) and x86 IA32_PKRS, on real machines.

Covers the register arithmetic, POE/PKS enabling, the ISB rule, exception
entry/return inside a guard, the per-thread level across a context switch,
fork, per-CPU registers, the x86 PKS port and CPUs without the feature.
"""

from __future__ import annotations

import random

import pytest

from helpers_pagetable import KBed, make_kbed
from kpkeys_sim.kernel.arch import (
    PkeyRegUnavailableError,
    copy_thread,
    cpu_enable_pkeys,
    cpu_switch_to,
    kernel_entry,
    kernel_exit,
    kpkeys_arch,
    kpkeys_arch_by_name,
    kpkeys_arch_names,
    level_masks,
    pkey_reg_init,
    x86,
)
from kpkeys_sim.kernel.arch import arm64 as a64
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys import (
    KPKEYS_GUARD,
    KPKEYS_LVL_CRED,
    KPKEYS_LVL_DEFAULT,
    KPKEYS_LVL_PGTABLES,
    KPKEYS_LVL_UNRESTRICTED,
    KPKEYS_PKEY_REG_INVAL,
    KpkeysLevel,
    kpkeys_restore_pkey_reg,
    kpkeys_set_level,
)
from kpkeys_sim.machine import CountingInstrument, Fault, HwThread, Machine
from kpkeys_sim.machine.arch.arm64_poe import POR_ELx_PERM_GET
from kpkeys_sim.machine.events import ISB, PKEY_REG_WRITE

INIT, PGT = 0x17, 0x57
PKRS_INIT, PKRS_PGT = 0x55555558, 0x55555550

pgt_guard = KPKEYS_GUARD("test_arch_pgtables_guard", KPKEYS_LVL_PGTABLES)

CRED_LEVELS = list(KpkeysLevel)
PGT_LEVELS = [KPKEYS_LVL_DEFAULT, KPKEYS_LVL_PGTABLES]


def store(tb: KBed) -> None:
    tb.m.store_u64(tb.k.cpu, tb.page.va, 0x5A5A)


def store_faults(tb: KBed) -> Fault:
    with pytest.raises(Fault) as ei:
        store(tb)
    return ei.value


def reg(tb: KBed) -> int:
    return tb.k.cpu.read_pkey_reg()


def counts(tb: KBed) -> tuple[int, int]:
    """(pkey register writes, ISBs) so far."""
    return tb.counter.counts[PKEY_REG_WRITE], tb.counter.counts[ISB]


# --- arm64 register arithmetic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "cred", "value"),
    [
        (KPKEYS_LVL_DEFAULT, False, 0x17),
        (KPKEYS_LVL_PGTABLES, False, 0x57),
        (KPKEYS_LVL_DEFAULT, True, 0x117),
        (KPKEYS_LVL_PGTABLES, True, 0x157),
        (KPKEYS_LVL_CRED, True, 0x517),
        (KPKEYS_LVL_UNRESTRICTED, True, 0x557),
    ],
)
def test_por_set_kpkeys_level_values(level: KpkeysLevel, cred: bool, value: int) -> None:
    """por_set_kpkeys_level(0, level) gives the spec §2.1 values (0x17, 0x57; cred 0x117…0x557)."""
    assert a64.por_set_kpkeys_level(0, level, cred) == value


def test_por_el1_init_values() -> None:
    """POR_EL1_INIT is 0x17, or 0x117 with the cred series, and follows the config."""
    assert (a64.POR_EL1_INIT, a64.POR_EL1_INIT_CRED) == (0x17, 0x117)
    assert a64.por_el1_init(KernelConfig()) == 0x17
    assert a64.por_el1_init(KernelConfig(kpkeys_cred_levels=True)) == 0x117


@pytest.mark.parametrize("cred", [False, True])
def test_por_set_kpkeys_level_leaves_other_fields_alone(cred: bool) -> None:
    """Only fields 0, 1 (and 2 with cred) change; field 0 is always RWX (spec §1.1 invariant)."""
    rng = random.Random(20250815)
    managed = 3 if cred else 2
    for _ in range(300):
        por = rng.getrandbits(64)
        for level in CRED_LEVELS if cred else PGT_LEVELS:
            new = a64.por_set_kpkeys_level(por, level, cred)
            assert POR_ELx_PERM_GET(0, new) == 0x7
            for idx in range(managed, 16):
                assert POR_ELx_PERM_GET(idx, new) == POR_ELx_PERM_GET(idx, por)


def test_por_set_kpkeys_level_refuses_cred_levels_without_cred() -> None:
    """Field 2 is not kpkeys-managed without the cred series, so CRED cannot be encoded."""
    with pytest.raises(ValueError, match="KPKEYS_LVL_CRED needs the cred levels"):
        a64.por_set_kpkeys_level(0x17, KPKEYS_LVL_CRED)


@pytest.mark.parametrize(
    ("fn", "bits"), [(a64.por_set_kpkeys_level, 64), (x86.pks_set_kpkeys_level, 32)]
)
@pytest.mark.parametrize("cred", [False, True])
def test_level_masks_equal_the_register_function(fn: object, bits: int, cred: bool) -> None:
    """The hot-path (keep, set) masks compute exactly the *_set_kpkeys_level function."""
    levels = CRED_LEVELS if cred else PGT_LEVELS
    masks = level_masks(fn, bits, levels, cred)  # type: ignore[arg-type]
    rng = random.Random(bits)
    for _ in range(300):
        r = rng.getrandbits(bits)
        for level in levels:
            keep, setbits = masks[level]
            assert (r & keep) | setbits == fn(r, level, cred)  # type: ignore[operator]


def test_level_masks_need_levels_in_value_order() -> None:
    """The masks are indexed by level, so the levels must be given in value order."""
    with pytest.raises(ValueError, match="value order"):
        level_masks(a64.por_set_kpkeys_level, 64, [KPKEYS_LVL_PGTABLES], False)


# --- arm64 enabling and the ISB rule ---------------------------------------------------------


def test_cpu_enable_poe_writes_init_enables_overlay_and_synchronises() -> None:
    """cpu_enable_poe: POR_EL1 := POR_EL1_INIT, TCR2_EL1.POE|E0POE, ISB (spec §2.3)."""
    counter = CountingInstrument()
    m = Machine(arch="arm64", ram_size=16 << 20, nr_cpus=2, instruments=[counter])
    k = Kernel(m, KernelConfig())
    cpu = m.cpus[1]
    a64.cpu_enable_poe(k, cpu)
    assert (cpu.read_pkey_reg(), cpu.pkey_reg_effective, cpu.poe, cpu.e0poe) == (0x17, 0x17, 1, 1)
    assert not cpu.pkey_reg_pending
    assert (counter.counts[PKEY_REG_WRITE], counter.counts[ISB]) == (1, 1)
    assert m.cpus[0].poe == 0  # only the CPU asked for
    assert pkey_reg_init(k) == 0x17


def test_cpu_enable_poe_without_poe_is_a_kernel_bug() -> None:
    """Without FEAT_S1POE the kernel never enables POE; doing so is an UNDEFINED MSR."""
    m = Machine(arch="arm64", ram_size=16 << 20, has_pkeys=False)
    with pytest.raises(PkeyRegUnavailableError, match="UNDEFINED"):
        cpu_enable_pkeys(Kernel(m, KernelConfig(cpu_has_pkeys=False)))


def test_write_after_msr_but_before_isb_still_faults() -> None:
    """The MSR alone is not enough: until the ISB the old POR_EL1 applies (spec §2.2, hw §1.8)."""
    tb = make_kbed()
    a64.__kpkeys_set_pkey_reg_nosync(tb.k, PGT)
    assert reg(tb) == PGT and tb.k.cpu.pkey_reg_pending
    f = store_faults(tb)
    assert f.result == "overlay_fault"
    tb.k.cpu.isb()
    store(tb)


def test_arch_set_level_issues_the_isb_itself() -> None:
    """arch_kpkeys_set_level is MSR + ISB: nothing is pending after it and the write succeeds."""
    tb = make_kbed()
    prev = a64.arch_kpkeys_set_level(tb.k, KPKEYS_LVL_PGTABLES, False)
    assert prev == INIT and not tb.k.cpu.pkey_reg_pending
    store(tb)
    a64.arch_kpkeys_restore_pkey_reg(tb.k, prev)
    assert not tb.k.cpu.pkey_reg_pending
    store_faults(tb)
    assert counts(tb) == (2, 2)


# --- exception entry / return (v5 07/18) -----------------------------------------------------


def test_exception_inside_a_guard_runs_the_handler_at_the_default_level() -> None:
    """An exception taken in a guarded section resets POR_EL1; the handler's write faults;
    after the return the section's write succeeds again (spec §2.4)."""
    tb = make_kbed()
    with pgt_guard(tb.k):
        store(tb)
        before = counts(tb)
        kernel_entry(tb.k)
        assert reg(tb) == INIT
        assert tb.k.cpu.in_interrupt()
        f = store_faults(tb)
        assert f.result == "overlay_fault"
        kernel_exit(tb.k)
        assert reg(tb) == PGT
        store(tb)
        w, i = counts(tb)
        # Entry: MSR + ISB (value differed).  Return: MSR, no ISB (ERET synchronises).
        assert (w - before[0], i - before[1]) == (2, 1)
    assert reg(tb) == INIT


def test_handler_takes_its_own_guard() -> None:
    """Interrupt-context page-table writes need their own guard (spec §2.4 consequence)."""
    tb = make_kbed()
    with pgt_guard(tb.k):
        kernel_entry(tb.k)
        with pgt_guard(tb.k):
            store(tb)
        assert reg(tb) == INIT
        kernel_exit(tb.k)
        assert reg(tb) == PGT


def test_exception_entry_at_the_default_level_skips_the_write_and_isb() -> None:
    """Entry writes POR_EL1 and ISBs only when it differs from POR_EL1_INIT."""
    tb = make_kbed()
    kernel_entry(tb.k)
    assert counts(tb) == (0, 0)
    kernel_exit(tb.k)
    assert reg(tb) == INIT


def test_exception_entry_without_poe_leaves_the_register_alone() -> None:
    """Without S1POE the entry code does not touch POR_EL1 (no reset, no ISB)."""
    tb = make_kbed(has_pkeys=False)
    kernel_entry(tb.k)
    assert reg(tb) == 0
    assert counts(tb) == (0, 0)
    store(tb)
    kernel_exit(tb.k)


# --- threads (v5 08/18) -------------------------------------------------------------------------


def _two_threads(tb: KBed) -> tuple[HwThread, HwThread]:
    """Thread A (the context already running, like init_task) and B forked from it."""
    a = HwThread("A")
    tb.k.cpu.current = a
    b = copy_thread(tb.k, a, "B")
    return a, b


def test_thread_sleeping_in_a_guard_keeps_its_level_across_a_switch() -> None:
    """A switches away inside a guard; B runs at the default level and faults; back in A the
    write succeeds (permission_overlay_switch, spec §2.5)."""
    tb = make_kbed()
    a, b = _two_threads(tb)
    with pgt_guard(tb.k):
        store(tb)
        cpu_switch_to(tb.k, b)  # A sleeps on a mutex
        assert a.pkey_reg == PGT
        assert reg(tb) == INIT
        assert store_faults(tb).result == "overlay_fault"
        cpu_switch_to(tb.k, a)
        assert reg(tb) == PGT
        store(tb)
    assert reg(tb) == INIT


def test_preempted_thread_keeps_its_level_across_a_switch() -> None:
    """An interrupt preempts A inside a guard and switches to B, which faults; when A is
    resumed and the exception returns, A's write succeeds."""
    tb = make_kbed()
    a, b = _two_threads(tb)
    with pgt_guard(tb.k):
        kernel_entry(tb.k)  # timer interrupt; the handler runs at INIT
        cpu_switch_to(tb.k, b)  # preempt_schedule_irq
        store_faults(tb)
        cpu_switch_to(tb.k, a)
        kernel_exit(tb.k)
        store(tb)


def test_context_switch_writes_only_when_the_levels_differ() -> None:
    """Switching between threads at the same level costs no MSR and no ISB."""
    tb = make_kbed()
    a, b = _two_threads(tb)
    tb.counter.reset()
    cpu_switch_to(tb.k, b)
    cpu_switch_to(tb.k, a)
    assert counts(tb) == (0, 0)


def test_copy_thread_inherits_the_live_level() -> None:
    """The child's thread.por_el1 is the parent's live POR_EL1, not its stale saved copy."""
    tb = make_kbed()
    a = HwThread("A", pkey_reg=INIT)
    tb.k.cpu.current = a
    with pgt_guard(tb.k):
        child = copy_thread(tb.k, a)
    assert child.pkey_reg == PGT
    assert child.name == "A-child"
    assert a.pkey_reg == INIT  # the parent's saved copy is only updated when it switches out
    with pytest.raises(ValueError, match="is not the thread running"):
        copy_thread(tb.k, HwThread("stranger"))


def test_switching_to_an_uninitialised_thread_is_refused() -> None:
    """A thread with no saved POR_EL1 (0) would revoke pkey 0 too; the switch refuses it."""
    tb = make_kbed()
    with pytest.raises(ValueError, match="'fresh' has no saved pkey register"):
        cpu_switch_to(tb.k, HwThread("fresh"))
    assert reg(tb) == INIT


def test_guard_level_is_per_cpu() -> None:
    """A guard on CPU0 does not open the page on CPU1: POR_EL1 is per CPU."""
    tb = make_kbed()
    with pgt_guard(tb.k):
        store(tb)
        with tb.k.on_cpu(1):
            store_faults(tb)
            assert reg(tb) == INIT


def test_without_poe_switch_and_fork_do_not_touch_the_register() -> None:
    """No POE: switching threads writes nothing; the child copies the parent's thread struct."""
    tb = make_kbed(has_pkeys=False)
    a = HwThread("A", pkey_reg=0x99)
    cpu_switch_to(tb.k, a)
    b = copy_thread(tb.k, a, "B")
    assert b.pkey_reg == 0x99
    cpu_switch_to(tb.k, b)
    assert tb.k.cpu.current is b
    assert counts(tb) == (0, 0)


# --- x86 PKS ------------------------------------------------------------------------------------


def test_x86_pkrs_values() -> None:
    """IA32_PKRS: key 0 RW, key 1 WD at DEFAULT and RW at PGTABLES, unmanaged keys AD."""
    assert (x86.PKRS_INIT, x86.PKRS_INIT_CRED) == (0x55555558, 0x55555568)
    assert x86.pks_set_kpkeys_level(x86.PKRS_INIT, KPKEYS_LVL_PGTABLES) == PKRS_PGT
    assert x86.pks_set_kpkeys_level(x86.PKRS_INIT_CRED, KPKEYS_LVL_CRED, True) == 0x55555548
    assert x86.pks_set_kpkeys_level(x86.PKRS_INIT_CRED, KPKEYS_LVL_UNRESTRICTED, True) == (
        0x55555540
    )


@pytest.mark.parametrize("cred", [False, True])
def test_x86_kpkeys_register_values_are_never_the_inval_sentinel(cred: bool) -> None:
    """Starting from the init value no level yields 0, so INVAL keeps its meaning on x86."""
    init = x86.PKRS_INIT_CRED if cred else x86.PKRS_INIT
    for level in CRED_LEVELS if cred else PGT_LEVELS:
        assert x86.pks_set_kpkeys_level(init, level, cred) != KPKEYS_PKEY_REG_INVAL


def test_x86_guarded_write_succeeds_and_the_same_write_pk_faults_outside() -> None:
    """x86 PKS: the guard opens key 1 with WRMSR only (no ISB); outside, a PK #PF (0x23)."""
    tb = make_kbed("x86")
    assert (tb.k.cpu.pks, tb.k.cpu.wp, reg(tb)) == (1, 1, PKRS_INIT)
    with pgt_guard(tb.k):
        assert reg(tb) == PKRS_PGT
        store(tb)
    f = store_faults(tb)
    assert f.result == "pk_fault"
    assert f.syndrome == 0x23  # P | W | PK, supervisor
    assert f.pkey == 1
    assert counts(tb) == (2, 0)


def test_x86_nested_guards_with_skip_write_once() -> None:
    """x86 with the skip: the inner guard issues no WRMSR."""
    tb = make_kbed("x86", skip_unchanged_pkey_writes=True)
    with pgt_guard(tb.k), pgt_guard(tb.k) as inner:
        assert inner.state == KPKEYS_PKEY_REG_INVAL
        store(tb)
    assert counts(tb) == (2, 0)
    assert reg(tb) == PKRS_INIT


def test_x86_control_wp_clear_disarms_write_disable() -> None:
    """Mutation: with CR0.WP = 0, WD no longer stops supervisor writes (why enabling sets WP)."""
    tb = make_kbed("x86")
    store_faults(tb)
    tb.k.cpu.wp = 0
    store(tb)


def test_x86_control_pks_disabled_lets_the_write_through() -> None:
    """Mutation: with CR4.PKS = 0 IA32_PKRS is not consulted."""
    tb = make_kbed("x86")
    tb.k.cpu.pks = 0
    store(tb)


def test_x86_exception_inside_a_guard_runs_at_the_default_level() -> None:
    """x86 entry saves and resets IA32_PKRS like arm64; the return restores it."""
    tb = make_kbed("x86")
    with pgt_guard(tb.k):
        kernel_entry(tb.k)
        assert reg(tb) == PKRS_INIT
        store_faults(tb)
        kernel_exit(tb.k)
        store(tb)


def test_x86_without_pks_raises_gp() -> None:
    """No PKS: RDMSR/WRMSR of IA32_PKRS is a #GP, i.e. a kernel bug."""
    tb = make_kbed("x86", has_pkeys=False)
    with pytest.raises(PkeyRegUnavailableError, match="#GP"):
        kpkeys_set_level(tb.k, KPKEYS_LVL_PGTABLES)
    with pytest.raises(PkeyRegUnavailableError, match="#GP"):
        kpkeys_restore_pkey_reg(tb.k, PKRS_INIT)
    with pgt_guard(tb.k):
        store(tb)


# --- registry -----------------------------------------------------------------------------------


def test_registry_maps_arch_names_to_glue() -> None:
    """'arm64' and 'x86' have glue; an unknown name is a KeyError naming it."""
    assert kpkeys_arch_names() == ["arm64", "x86"]
    assert kpkeys_arch_by_name("arm64") is a64.KPKEYS_ARCH
    assert kpkeys_arch_by_name("x86") is x86.KPKEYS_ARCH
    assert kpkeys_arch(make_kbed("x86").k).pkey_reg_name == "IA32_PKRS"
    with pytest.raises(KeyError, match="riscv"):
        kpkeys_arch_by_name("riscv")
