"""The generic kpkeys framework (kernel/kpkeys/core.py) on a real machine.

Spec kpkeys-series.md §1: levels, set/restore and the INVAL sentinel, the
skip of unchanged writes, guards, the v7 names and the v8 context API.  The
machine is arm64 unless a test says otherwise; every fault is a real MMU
fault on a page mapped with pkey 1 by hand (``helpers_pagetable``).
"""

from __future__ import annotations

import dataclasses
import enum

import pytest

import kpkeys_sim.kernel.kpkeys as kpkeys
from helpers_pagetable import KBed, make_kbed, set_page_pkey
from kpkeys_sim.kernel.arch import arch_kpkeys_enabled, kpkeys_arch
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys import (
    KPKEYS_CTX_DEFAULT,
    KPKEYS_CTX_MAX,
    KPKEYS_CTX_MIN,
    KPKEYS_CTX_PGTABLES,
    KPKEYS_GUARD,
    KPKEYS_GUARD_COND,
    KPKEYS_GUARD_ENTER,
    KPKEYS_GUARD_NOOP,
    KPKEYS_LVL_CRED,
    KPKEYS_LVL_DEFAULT,
    KPKEYS_LVL_MAX,
    KPKEYS_LVL_MIN,
    KPKEYS_LVL_PGTABLES,
    KPKEYS_LVL_UNRESTRICTED,
    KPKEYS_PKEY_CRED,
    KPKEYS_PKEY_DEFAULT,
    KPKEYS_PKEY_PGTABLES,
    KPKEYS_PKEY_REG_INVAL,
    KPKEYS_RESTORE,
    KPKEYS_SET_LEVEL,
    KpkeysGuard,
    KpkeysLevel,
    KpkeysState,
    PkeyRegUnavailableError,
    kpkeys_enabled,
    kpkeys_enter_context,
    kpkeys_leave_context,
    kpkeys_lvl_max,
    kpkeys_restore_pkey_reg,
    kpkeys_set_context,
    kpkeys_set_level,
    kpkeys_supported,
)
from kpkeys_sim.machine import Fault
from kpkeys_sim.machine.arch.arm64_poe import ESR_ELx_Overlay
from kpkeys_sim.machine.events import EVENT_KINDS, ISB, PKEY_REG_WRITE

# POR_EL1 values (spec §2.1 and its [INF] arithmetic).
INIT, PGT = 0x17, 0x57
CRED_INIT, CRED_CRED, CRED_PGT, CRED_UNRESTRICTED = 0x117, 0x517, 0x157, 0x557

pgt_guard = KPKEYS_GUARD("test_pgtables_guard", KPKEYS_LVL_PGTABLES)


def store(tb: KBed, value: int = 0x1234) -> None:
    """One checked 64-bit kernel store to the pkey-1 page on the executing CPU."""
    tb.m.store_u64(tb.k.cpu, tb.page.va, value)


def store_faults(tb: KBed) -> Fault:
    """Perform the store, expecting a fault, and return it."""
    with pytest.raises(Fault) as ei:
        store(tb)
    return ei.value


def reg(tb: KBed) -> int:
    return tb.k.cpu.read_pkey_reg()


@pytest.fixture
def tb() -> KBed:
    return make_kbed()


# --- API surface --------------------------------------------------------------------------


def test_public_api_is_pinned() -> None:
    """The package re-exports exactly this API."""
    assert sorted(kpkeys.__all__) == sorted(
        [
            "KPKEYS_CTX_DEFAULT",
            "KPKEYS_CTX_MAX",
            "KPKEYS_CTX_MIN",
            "KPKEYS_CTX_PGTABLES",
            "KPKEYS_GUARD",
            "KPKEYS_GUARD_COND",
            "KPKEYS_GUARD_ENTER",
            "KPKEYS_GUARD_NOOP",
            "KPKEYS_LVL_CRED",
            "KPKEYS_LVL_DEFAULT",
            "KPKEYS_LVL_MAX",
            "KPKEYS_LVL_MIN",
            "KPKEYS_LVL_PGTABLES",
            "KPKEYS_LVL_UNRESTRICTED",
            "KPKEYS_PKEY_CRED",
            "KPKEYS_PKEY_DEFAULT",
            "KPKEYS_PKEY_PGTABLES",
            "KPKEYS_PKEY_REG_INVAL",
            "KPKEYS_RESTORE",
            "KPKEYS_SET_LEVEL",
            "KpkeysContext",
            "KpkeysGuard",
            "KpkeysLevel",
            "KpkeysState",
            "PkeyRegUnavailableError",
            "arch_kpkeys_enabled",
            "kpkeys_enabled",
            "kpkeys_enter_context",
            "kpkeys_leave_context",
            "kpkeys_lvl_max",
            "kpkeys_restore_pkey_reg",
            "kpkeys_set_context",
            "kpkeys_set_level",
            "kpkeys_supported",
        ]
    )
    for name in kpkeys.__all__:
        assert hasattr(kpkeys, name), name


def test_constants_have_the_series_values() -> None:
    """Levels, pkeys and the sentinel have the values of spec §1.2/§1.3 (cred v2 numbering)."""
    assert (KPKEYS_LVL_DEFAULT, KPKEYS_LVL_PGTABLES) == (0, 1)
    assert (KPKEYS_LVL_CRED, KPKEYS_LVL_UNRESTRICTED) == (2, 3)
    assert KPKEYS_LVL_MIN is KPKEYS_LVL_DEFAULT
    assert KPKEYS_LVL_MAX is KPKEYS_LVL_PGTABLES
    assert (KPKEYS_PKEY_DEFAULT, KPKEYS_PKEY_PGTABLES, KPKEYS_PKEY_CRED) == (0, 1, 2)
    assert KPKEYS_PKEY_REG_INVAL == 0
    assert [lv.name for lv in KpkeysLevel] == [
        "KPKEYS_LVL_DEFAULT",
        "KPKEYS_LVL_PGTABLES",
        "KPKEYS_LVL_CRED",
        "KPKEYS_LVL_UNRESTRICTED",
    ]


def test_v7_and_v8_names_are_aliases() -> None:
    """The v7 CTX names and kpkeys_set_context/kpkeys_enabled, v8 kpkeys_supported, are aliases."""
    assert KPKEYS_CTX_DEFAULT is KPKEYS_LVL_DEFAULT
    assert KPKEYS_CTX_PGTABLES is KPKEYS_LVL_PGTABLES
    assert KPKEYS_CTX_MIN is KPKEYS_LVL_MIN
    assert KPKEYS_CTX_MAX is KPKEYS_LVL_MAX
    assert kpkeys_set_context is kpkeys_set_level
    assert kpkeys_enabled is arch_kpkeys_enabled
    assert kpkeys_supported is arch_kpkeys_enabled


def test_kernel_event_kinds_are_declared() -> None:
    """The three kpkeys event kinds are declared in the kernel layer."""
    for kind in (KPKEYS_GUARD_ENTER, KPKEYS_SET_LEVEL, KPKEYS_RESTORE):
        assert EVENT_KINDS[kind].layer == "kernel"
    assert (KPKEYS_GUARD_ENTER, KPKEYS_SET_LEVEL, KPKEYS_RESTORE) == (
        "kpkeys_guard_enter",
        "kpkeys_set_level",
        "kpkeys_restore",
    )


def test_lvl_max_follows_the_cred_series() -> None:
    """KPKEYS_LVL_MAX is PGTABLES, or UNRESTRICTED with the cred series."""
    assert kpkeys_lvl_max(make_kbed().k.config) is KPKEYS_LVL_PGTABLES
    assert kpkeys_lvl_max(make_kbed(kpkeys_cred_levels=True).k.config) is KPKEYS_LVL_UNRESTRICTED


# --- set / restore ------------------------------------------------------------------------


def test_set_level_returns_the_previous_value_and_restore_writes_it_back(tb: KBed) -> None:
    """kpkeys_set_level returns the old POR_EL1; restore puts it back (spec §1.4)."""
    assert reg(tb) == INIT
    prev = kpkeys_set_level(tb.k, KPKEYS_LVL_PGTABLES)
    assert prev == INIT
    assert reg(tb) == PGT
    store(tb)
    kpkeys_restore_pkey_reg(tb.k, prev)
    assert reg(tb) == INIT
    store_faults(tb)
    c = tb.counter.counts
    assert (c[KPKEYS_SET_LEVEL], c[KPKEYS_RESTORE], c[PKEY_REG_WRITE], c[ISB]) == (1, 1, 2, 2)


class _Other(enum.IntEnum):
    PGTABLES = 1


@pytest.mark.parametrize(
    "bad", [1, 0, True, 1.0, "KPKEYS_LVL_PGTABLES", None, _Other.PGTABLES], ids=repr
)
def test_set_level_refuses_anything_but_a_level_constant(tb: KBed, bad: object) -> None:
    """A plain int (or any non-KpkeysLevel) is refused with TypeError and nothing is written."""
    with pytest.raises(TypeError, match="only takes constant values"):
        kpkeys_set_level(tb.k, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="only takes constant values"):
        kpkeys_enter_context(tb.k, bad)  # type: ignore[arg-type]
    assert reg(tb) == INIT
    assert tb.counter.counts[PKEY_REG_WRITE] == 0


@pytest.mark.parametrize("level", [KPKEYS_LVL_CRED, KPKEYS_LVL_UNRESTRICTED])
def test_cred_levels_are_out_of_range_without_the_cred_series(tb: KBed, level: KpkeysLevel) -> None:
    """CRED/UNRESTRICTED raise ValueError naming the level unless the cred levels are configured."""
    with pytest.raises(ValueError, match=rf"{level.name} \({int(level)}\) is outside"):
        kpkeys_set_level(tb.k, level)
    assert reg(tb) == INIT
    assert tb.counter.counts[PKEY_REG_WRITE] == 0


@pytest.mark.parametrize(
    ("level", "value"),
    [
        (KPKEYS_LVL_DEFAULT, CRED_INIT),
        (KPKEYS_LVL_PGTABLES, CRED_PGT),
        (KPKEYS_LVL_CRED, CRED_CRED),
        (KPKEYS_LVL_UNRESTRICTED, CRED_UNRESTRICTED),
    ],
)
def test_cred_series_levels_set_their_por_values(level: KpkeysLevel, value: int) -> None:
    """With the cred series every level is accepted and gives the spec §2.1 POR_EL1 value."""
    tb = make_kbed(kpkeys_cred_levels=True)
    assert reg(tb) == CRED_INIT
    prev = kpkeys_set_level(tb.k, level)
    assert (prev, reg(tb)) == (CRED_INIT, value)


def test_restore_of_inval_does_nothing(tb: KBed) -> None:
    """kpkeys_restore_pkey_reg(KPKEYS_PKEY_REG_INVAL) writes nothing and emits nothing."""
    kpkeys_set_level(tb.k, KPKEYS_LVL_PGTABLES)
    tb.counter.reset()
    kpkeys_restore_pkey_reg(tb.k, KPKEYS_PKEY_REG_INVAL)
    assert reg(tb) == PGT
    assert tb.counter.snapshot() == {}


def test_unchanged_value_is_written_again_without_the_skip(tb: KBed) -> None:
    """RFC v5–v7 arm64: setting the current level still writes POR_EL1 and issues an ISB."""
    assert kpkeys_set_level(tb.k, KPKEYS_LVL_DEFAULT) == INIT
    c = tb.counter.counts
    assert (c[PKEY_REG_WRITE], c[ISB], c[KPKEYS_SET_LEVEL]) == (1, 1, 1)


def test_unchanged_value_is_skipped_with_the_skip() -> None:
    """cred v2 1/8: setting the current level returns INVAL with no write and no ISB."""
    tb = make_kbed(skip_unchanged_pkey_writes=True)
    assert kpkeys_set_level(tb.k, KPKEYS_LVL_DEFAULT) == KPKEYS_PKEY_REG_INVAL
    assert tb.counter.snapshot() == {}
    assert kpkeys_set_level(tb.k, KPKEYS_LVL_PGTABLES) == INIT
    assert reg(tb) == PGT


# --- v8 context API -----------------------------------------------------------------------


def test_enter_and_leave_context(tb: KBed) -> None:
    """v8: enter saves the POR in the state and leave restores it (spec §1.10)."""
    state = kpkeys_enter_context(tb.k, KPKEYS_CTX_PGTABLES)
    assert state == KpkeysState(entered_context=True, arch_state=INIT)
    store(tb)
    kpkeys_leave_context(tb.k, state)
    assert reg(tb) == INIT
    store_faults(tb)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.entered_context = False  # type: ignore[misc]


def test_enter_context_skips_an_unchanged_value_whatever_the_config(tb: KBed) -> None:
    """v8 builds the skip into the hook: entering the current context writes nothing."""
    assert not tb.k.config.skip_unchanged_pkey_writes
    state = kpkeys_enter_context(tb.k, KPKEYS_CTX_DEFAULT)
    assert not state.entered_context
    kpkeys_leave_context(tb.k, state)
    assert tb.counter.snapshot() == {}


# --- guards ---------------------------------------------------------------------------------


def test_guarded_write_succeeds_and_the_same_write_faults_outside(tb: KBed) -> None:
    """Inside the guard the pkey-1 page is writable; outside it the store takes an Overlay fault."""
    with pgt_guard(tb.k):
        store(tb, 0xC0FFEE)
    assert tb.m.load_u64(tb.k.cpu, tb.page.va) == 0xC0FFEE
    f = store_faults(tb)
    assert f.result == "overlay_fault"
    assert f.syndrome & ESR_ELx_Overlay
    assert (f.pkey, f.access, f.el, f.va) == (1, "W", 1, tb.page.va)
    assert tb.m.load_u64(tb.k.cpu, tb.page.va) == 0xC0FFEE  # reads stay allowed


def test_guard_costs_two_register_writes_and_two_isbs(tb: KBed) -> None:
    """Without the skip, one guard = MSR+ISB at entry and MSR+ISB at exit (spec §2.2 cost model)."""
    with pgt_guard(tb.k) as g:
        assert g.state == INIT
    assert tb.counter.snapshot() == {
        ISB: 2,
        KPKEYS_GUARD_ENTER: 1,
        KPKEYS_RESTORE: 1,
        KPKEYS_SET_LEVEL: 1,
        PKEY_REG_WRITE: 2,
    }


def test_nested_guards_without_skip_restore_level_by_level(tb: KBed) -> None:
    """Inner guard saves the outer's level and restores it; the outer restores the default."""
    with pgt_guard(tb.k) as outer:
        with pgt_guard(tb.k) as inner:
            assert inner.state == PGT
            store(tb)
        assert reg(tb) == PGT
        store(tb)
        assert outer.state == INIT
    assert reg(tb) == INIT
    store_faults(tb)
    c = tb.counter.counts
    assert (c[PKEY_REG_WRITE], c[ISB], c[KPKEYS_GUARD_ENTER]) == (4, 4, 2)


def test_nested_guards_with_skip_make_the_inner_guard_free() -> None:
    """With the skip the inner guard writes nothing and the outer one does the restore."""
    tb = make_kbed(skip_unchanged_pkey_writes=True)
    with pgt_guard(tb.k):
        with pgt_guard(tb.k) as inner:
            assert inner.state == KPKEYS_PKEY_REG_INVAL
            store(tb)
        assert reg(tb) == PGT
        store(tb)
    assert reg(tb) == INIT
    store_faults(tb)
    c = tb.counter.counts
    assert (c[PKEY_REG_WRITE], c[ISB], c[KPKEYS_GUARD_ENTER], c[KPKEYS_RESTORE]) == (2, 2, 2, 1)


def test_condition_false_at_entry_is_not_retested_at_exit(tb: KBed) -> None:
    """A guard entered with its condition false restores nothing even if it is true at exit."""
    flag = {"on": False}
    calls: list[Kernel] = []

    def cond(k: Kernel) -> bool:
        calls.append(k)
        return flag["on"]

    guard = KPKEYS_GUARD_COND("flipping_guard", KPKEYS_LVL_PGTABLES, cond)
    kpkeys_set_level(tb.k, KPKEYS_LVL_PGTABLES)  # a value exit must not clobber
    tb.counter.reset()
    with guard(tb.k) as g:
        assert g.state == KPKEYS_PKEY_REG_INVAL
        flag["on"] = True  # e.g. the static key being enabled inside the section
    assert calls == [tb.k]
    assert reg(tb) == PGT
    assert tb.counter.snapshot() == {}


def test_condition_true_at_entry_restores_even_if_false_at_exit(tb: KBed) -> None:
    """A guard entered with its condition true restores at exit whatever the condition says then."""
    flag = {"on": True}
    guard = KPKEYS_GUARD_COND("flipping_guard", KPKEYS_LVL_PGTABLES, lambda k: flag["on"])
    with guard(tb.k):
        flag["on"] = False
    assert reg(tb) == INIT
    assert tb.counter.counts[KPKEYS_RESTORE] == 1


def test_guard_condition_receives_the_kernel(tb: KBed) -> None:
    """The condition is called with the kernel the guard was created for."""
    seen: list[Kernel] = []

    def cond(k: Kernel) -> bool:
        seen.append(k)
        return True

    guard = KPKEYS_GUARD_COND("seeing_guard", KPKEYS_LVL_PGTABLES, cond)
    with guard(tb.k):
        pass
    assert seen == [tb.k]


def test_guard_restores_when_the_body_raises(tb: KBed) -> None:
    """Leaving the scope by an exception still restores the register (cleanup.h semantics)."""
    with pytest.raises(RuntimeError, match="boom"), pgt_guard(tb.k):
        raise RuntimeError("boom")
    assert reg(tb) == INIT


def test_noop_guard_never_switches(tb: KBed) -> None:
    """KPKEYS_GUARD_NOOP: the same 'with' works, nothing is written, the write still faults."""
    noop = KPKEYS_GUARD_NOOP("test_noop_guard")
    with noop(tb.k) as g:
        assert g.state == 0
        store_faults(tb)
    assert tb.counter.counts[PKEY_REG_WRITE] == 0
    assert noop.level is None


def test_guard_types_carry_their_name_and_level() -> None:
    """A factory defines a KpkeysGuard subclass named after the guard, holding its level."""
    assert issubclass(pgt_guard, KpkeysGuard)
    assert pgt_guard.__name__ == pgt_guard.name == "test_pgtables_guard"
    assert pgt_guard.level is KPKEYS_LVL_PGTABLES
    assert not hasattr(pgt_guard(make_kbed().k), "__dict__")  # __slots__: cheap instances


def test_guard_factories_check_their_arguments() -> None:
    """A non-constant level, a bad name or a non-callable condition is refused at definition."""
    with pytest.raises(TypeError, match="only takes constant values"):
        KPKEYS_GUARD("g", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="only takes constant values"):
        KPKEYS_GUARD_COND("g", 1, lambda k: True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cond must be callable"):
        KPKEYS_GUARD_COND("g", KPKEYS_LVL_PGTABLES, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="identifier"):
        KPKEYS_GUARD("not a name", KPKEYS_LVL_PGTABLES)
    with pytest.raises(ValueError, match="identifier"):
        KPKEYS_GUARD_NOOP("")


def test_cred_guard_range_is_checked_at_entry() -> None:
    """A CRED guard can be defined anywhere but only enters when the cred levels are configured."""
    cred_guard = KPKEYS_GUARD("test_cred_guard", KPKEYS_LVL_CRED)
    plain = make_kbed()
    with pytest.raises(ValueError, match="KPKEYS_LVL_CRED"), cred_guard(plain.k):
        pass
    assert reg(plain) == INIT
    cred = make_kbed(kpkeys_cred_levels=True)
    with cred_guard(cred.k):
        assert reg(cred) == CRED_CRED
        store_faults(cred)  # pkey 1 (page tables) stays read-only at the CRED level
    assert reg(cred) == CRED_INIT


def test_unrestricted_level_opens_both_kpkeys(tb: KBed) -> None:
    """UNRESTRICTED (cred v2 2/8) makes the page-table pkey writable too."""
    tb = make_kbed(kpkeys_cred_levels=True)
    with KPKEYS_GUARD("test_rcu_guard", KPKEYS_LVL_UNRESTRICTED)(tb.k):
        store(tb)
    store_faults(tb)


# --- CPUs without the feature -----------------------------------------------------------------


def test_without_pkeys_guards_do_not_switch_and_writes_succeed() -> None:
    """No POE: KPKEYS_GUARD's condition is false, nothing is written, the page is plain RW."""
    tb = make_kbed(has_pkeys=False)
    assert not arch_kpkeys_enabled(tb.k)
    with pgt_guard(tb.k) as g:
        assert g.state == KPKEYS_PKEY_REG_INVAL
        store(tb)
    store(tb)
    c = tb.counter.counts
    assert (c[PKEY_REG_WRITE], c[ISB], c[KPKEYS_GUARD_ENTER], c[KPKEYS_SET_LEVEL]) == (0, 0, 0, 0)


def test_without_pkeys_set_level_is_a_kernel_bug() -> None:
    """No POE: kpkeys_set_level/restore of a real value raise (POR_EL1 is UNDEFINED)."""
    tb = make_kbed(has_pkeys=False)
    with pytest.raises(PkeyRegUnavailableError, match="without FEAT_S1POE"):
        kpkeys_set_level(tb.k, KPKEYS_LVL_PGTABLES)
    with pytest.raises(PkeyRegUnavailableError):
        kpkeys_restore_pkey_reg(tb.k, INIT)
    kpkeys_restore_pkey_reg(tb.k, KPKEYS_PKEY_REG_INVAL)  # nothing to do: fine
    assert tb.counter.snapshot() == {}


# --- negative controls: the protection is the register, not the test -------------------------


def test_control_register_left_at_pgtables_lets_the_outside_write_through(tb: KBed) -> None:
    """Mutation: skip the restore, and the 'outside the guard' write succeeds."""
    kpkeys_set_level(tb.k, KPKEYS_LVL_PGTABLES)
    store(tb)


def test_control_page_with_the_default_pkey_is_writable_at_default(tb: KBed) -> None:
    """Mutation: map the page with pkey 0 instead of 1, and the unguarded write succeeds."""
    store_faults(tb)
    set_page_pkey(tb.m, tb.page, 0)
    store(tb)


def test_control_overlay_disabled_lets_the_write_through(tb: KBed) -> None:
    """Mutation: clear TCR2_EL1.POE, and POR_EL1 no longer restricts EL1 accesses."""
    tb.k.cpu.poe = 0
    store(tb)


def test_glue_is_selected_by_machine_arch(tb: KBed) -> None:
    """The core reaches the arm64 glue for an arm64 machine."""
    assert kpkeys_arch(tb.k).name == "arm64"
    assert kpkeys_arch(make_kbed("x86").k).name == "x86"
