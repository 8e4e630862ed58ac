"""kernel/cred (the cred hardening series) and its KUnit suite, with mutation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpkeys_sim.cli import main
from kpkeys_sim.kernel import cred as kcred
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import DEFAULT_CONFIG, KernelConfig
from kpkeys_sim.kernel.errors import EFAULT, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_LVL_CRED,
    KPKEYS_LVL_DEFAULT,
    KPKEYS_LVL_PGTABLES,
    KPKEYS_LVL_UNRESTRICTED,
    KPKEYS_PKEY_CRED,
    KPKEYS_PKEY_DEFAULT,
    kpkeys_restore_pkey_reg,
    kpkeys_set_level,
)
from kpkeys_sim.kernel.mm.maccess import copy_to_kernel_nofault
from kpkeys_sim.kernel.mm.slab import SLAB_SET_PKEY, kmem_cache_shrink, virt_to_cache
from kpkeys_sim.kernel.sched import current
from kpkeys_sim.kunit import run_kunit
from kpkeys_sim.kunit.framework import KunitResult
from kpkeys_sim.kunit.ktap import KunitStatus
from kpkeys_sim.machine.mmu import walk

RAM = 1 << 30
OK = KunitStatus.KUNIT_SUCCESS
NOT_OK = KunitStatus.KUNIT_FAILURE
SUITE = "Hardened credentials using kpkeys"
POSITIVE = "kpkeys_hardened_cred_positive"

CRED_KTAP = """\
    KTAP version 1
    # Subtest: Hardened credentials using kpkeys
    # module: kpkeys_hardened_cred_kunit
    1..2
    ok 1 write_current_creds
    ok 2 write_new_creds
# Hardened credentials using kpkeys: pass:2 fail:0 skip:0 total:2
# Totals: pass:2 fail:0 skip:0 total:2
ok 3 Hardened credentials using kpkeys
    KTAP version 1
    # Subtest: kpkeys_hardened_cred_positive
    # module: kpkeys_hardened_cred_kunit
    1..4
    ok 1 guarded_refcount_writers
    ok 2 commit_creds_moves_creds
    ok 3 override_and_revert_creds
    ok 4 freed_cred_slab_writable
# kpkeys_hardened_cred_positive: pass:4 fail:0 skip:0 total:4
# Totals: pass:4 fail:0 skip:0 total:4
ok 4 kpkeys_hardened_cred_positive
"""


def _cfg(series: str = "v6", **kw: object) -> KernelConfig:
    return DEFAULT_CONFIG.replace(series=series, ram_size=RAM, kpkeys_cred_levels=True, **kw)


def _boot(series: str = "v6", **kw: object) -> Kernel:
    return boot(_cfg(series, **kw))


def _lm_pkey(k: Kernel, va: int) -> int:
    """The pkey of the leaf mapping ``va``, read from the tables."""
    m = k.machine
    w, _ = walk(m.mem, m.geometry, k.cpu.ttbr1, va)
    return int(m.arch.desc_pkey(w.desc))


def _status(res: KunitResult, suite: str, case: str) -> KunitStatus:
    return res.suite(suite).case(case).status


def _uid_write(k: Kernel, cred: int) -> int:
    uid = kcred.cred_field(k, cred, "uid")
    return copy_to_kernel_nofault(k, cred + kcred.OFF_UID, (uid + 1).to_bytes(8, "little"))


# --- the KUnit suite ---------------------------------------------------------------------------


@pytest.mark.parametrize("series", ["v5", "v6", "v7"])
def test_cred_suites_pass_in_ktap(series: str) -> None:
    """With the cred levels the cred suite and its positive suite follow the pgtables suites."""
    res = run_kunit(_cfg(series))
    assert [s.name for s in res.suites][2:] == [SUITE, POSITIVE]
    assert res.failed == 0 and res.skipped == 0, res.ktap
    start = res.ktap.index("    KTAP version 1\n    # Subtest: Hardened credentials")
    assert res.ktap[start:] == CRED_KTAP


def test_cred_suites_skip_without_pkeys() -> None:
    """Without pkeys every cred case is skipped with the series' message."""
    res = run_kunit(_cfg(cpu_has_pkeys=False))
    for name in (SUITE, POSITIVE):
        suite = res.suite(name)
        assert suite.count(KunitStatus.KUNIT_SKIPPED) == len(suite.cases)
        assert {c.status_comment for c in suite.cases} == {"kpkeys are not supported"}


def test_default_config_has_no_cred_suite_and_no_creds() -> None:
    """Cred levels off: no cred suite, no cred_jar, no credentials on the tasks."""
    k = boot(DEFAULT_CONFIG.replace(ram_size=RAM))
    assert k.slab is not None
    assert "cred_jar" not in [c.name for c in k.slab.caches()]
    assert current(k).cred == 0
    with pytest.raises(KernelBug, match="before cred_init"):
        kcred.prepare_creds(k)
    res = run_kunit(DEFAULT_CONFIG.replace(ram_size=RAM))
    assert SUITE not in [s.name for s in res.suites]


def test_cli_runs_the_cred_suite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``kpkeys-sim kunit --config <kpkeys_cred_levels = true>`` exits 0 and prints the suite."""
    cfg = tmp_path / "cred.toml"
    cfg.write_text("kpkeys_cred_levels = true\n")
    with pytest.raises(SystemExit) as exc:
        main(["kunit", "--config", str(cfg)])
    out, err = capsys.readouterr()
    assert exc.value.code in (0, None)
    assert err == ""
    assert out.endswith(CRED_KTAP)
    assert out.startswith("KTAP version 1\n1..4\n")


# --- POR_EL1 and the linear map ------------------------------------------------------------


def test_por_el1_per_level() -> None:
    """POR_EL1_INIT 0x117; CRED 0x517, PGTABLES 0x157, UNRESTRICTED 0x557 (spec §2.1)."""
    k = _boot()
    cpu = k.cpu
    assert cpu.read_pkey_reg() == 0x117
    for level, value in (
        (KPKEYS_LVL_DEFAULT, 0x117),
        (KPKEYS_LVL_CRED, 0x517),
        (KPKEYS_LVL_PGTABLES, 0x157),
        (KPKEYS_LVL_UNRESTRICTED, 0x557),
    ):
        reg = kpkeys_set_level(k, level)
        assert cpu.read_pkey_reg() == value, level.name
        kpkeys_restore_pkey_reg(k, reg)
        assert cpu.read_pkey_reg() == 0x117
    with kcred.kpkeys_hardened_cred(k):
        assert cpu.read_pkey_reg() == 0x517
        with kcred.kpkeys_rcu(k):
            assert cpu.read_pkey_reg() == 0x557
        assert cpu.read_pkey_reg() == 0x517
    assert cpu.read_pkey_reg() == 0x117


@pytest.mark.parametrize("series", ["v5", "v6", "v7"])
def test_cred_slab_pages_carry_pkey_2(series: str) -> None:
    """Every cred_jar page has pkey 2 in the linear map; prepared creds and freed slabs pkey 0."""
    k = _boot(series)
    jar = kcred.cred_state(k).cred_jar
    assert jar.flags & SLAB_SET_PKEY
    page = k.pgt.PAGE_SIZE
    creds = [kcred.prepare_protected_creds(k) for _ in range(jar.objects + 1)]
    assert all(c is not None for c in creds)
    slabs = jar.slabs()
    assert len(slabs) >= 2
    for pfn, order, _ in slabs:
        for i in range(1 << order):
            assert _lm_pkey(k, k.pgt.va((pfn + i) * page)) == KPKEYS_PKEY_CRED
    prepared = kcred.prepare_creds(k)
    assert prepared is not None and not kcred.cred_is_protected(k, prepared)
    assert _lm_pkey(k, prepared) == KPKEYS_PKEY_DEFAULT
    kcred.put_cred(k, prepared)
    for c in creds:
        assert c is not None
        kcred.put_cred(k, c)
    kcred.rcu_barrier(k)
    kmem_cache_shrink(jar)
    left = {pfn for pfn, _, _ in jar.slabs()}
    released = [pfn for pfn, _, _ in slabs if pfn not in left]
    assert released
    for pfn in released:
        assert _lm_pkey(k, k.pgt.va(pfn * page)) == KPKEYS_PKEY_DEFAULT


# --- the cred functions -----------------------------------------------------------------------


def test_init_cred_is_committed_and_shared_by_the_idle_tasks() -> None:
    """init_task's creds went through commit_creds; each idle task holds two references."""
    k = _boot(nr_cpus=4)
    st = kcred.cred_state(k)
    assert kcred.cred_is_protected(k, st.init_cred)
    assert all(t.cred == t.real_cred == st.init_cred for t in k.sched.idle)
    assert kcred.cred_field(k, st.init_cred, "usage") == 2 * 4
    assert kcred.cred_field(k, st.init_cred, "cap_effective") == kcred.CAP_FULL_SET
    assert _uid_write(k, st.init_cred) == -EFAULT
    with pytest.raises(KernelBug, match="twice"):
        kcred.cred_init(k)


def test_protect_creds_moves_and_frees_the_original() -> None:
    """A different pointer, the fields copied, the kmalloc original freed."""
    k = _boot()
    assert k.slab is not None
    new = kcred.prepare_creds(k)
    assert new is not None
    assert _uid_write(k, new) == 0
    kmalloc_cache = virt_to_cache(k.slab, k.pgt.pa(new))
    assert kmalloc_cache is not None and kmalloc_cache.name == "kmalloc-192"
    inuse = kmalloc_cache.nr_inuse
    prot = kcred.protect_creds(k, new)
    assert prot != new and kcred.cred_is_protected(k, prot)
    assert kcred.cred_field(k, prot, "uid") == 1
    assert kcred.cred_field(k, prot, "usage") == 1
    assert kmalloc_cache.nr_inuse == inuse - 1
    assert kcred.protect_creds(k, prot) == prot  # already protected
    assert _uid_write(k, prot) == -EFAULT
    kcred.put_cred(k, prot)


def test_commit_creds_consumes_the_callers_reference() -> None:
    """The prepared object is gone; current's creds are a protected copy with two references."""
    k = _boot()
    st = kcred.cred_state(k)
    task = current(k)
    before = kcred.cred_field(k, st.init_cred, "usage")
    new = kcred.prepare_creds(k)
    assert new is not None
    assert kcred.commit_creds(k, new) == 0
    assert task.cred == task.real_cred != new
    assert kcred.cred_is_protected(k, task.cred)
    assert kcred.cred_field(k, task.cred, "usage") == 2
    assert kcred.cred_field(k, st.init_cred, "usage") == before - 2
    with pytest.raises(KernelBug, match="current's credentials"):
        kcred.put_cred_many(k, task.cred, 2)


def test_put_cred_goes_through_rcu_and_checks_slab_set_pkey() -> None:
    """The last put queues the cred; the tail write links it; put_cred_rcu frees by cache."""
    k = _boot()
    st = kcred.cred_state(k)
    jar = st.cred_jar
    kcred.rcu_barrier(k)
    a = kcred.prepare_protected_creds(k)
    b = kcred.prepare_protected_creds(k)
    plain = kcred.prepare_creds(k)
    assert a is not None and b is not None and plain is not None
    inuse = jar.nr_inuse
    kcred.put_cred(k, a)
    kcred.put_cred(k, b)
    kcred.put_cred(k, plain)
    heads = [c + kcred.OFF_RCU_NEXT for c in (a, b, plain)]
    assert st.rcu_pending == heads
    # rcu_segcblist_enqueue's tail write went into the previous (protected) rcu_head.
    assert kcred.cred_field(k, a, "rcu.next") == heads[1]
    assert kcred.cred_field(k, b, "rcu.next") == heads[2]
    assert kcred.cred_field(k, a, "rcu.func") == kcred.PUT_CRED_RCU
    assert jar.nr_inuse == inuse
    assert kcred.rcu_barrier(k) == 3
    assert jar.nr_inuse == inuse - 2
    assert st.rcu_pending == []


def test_unguarded_writer_oopses() -> None:
    """A refcount write without the guard is a fault on protected memory (oops)."""
    from kpkeys_sim.kernel.errors import Oops
    from kpkeys_sim.kernel.mm.maccess import kernel_store_u64

    k = _boot()
    cred = kcred.prepare_protected_creds(k)
    assert cred is not None
    with pytest.raises(Oops, match="write to read-only memory"):
        kernel_store_u64(k, cred + kcred.OFF_USAGE, 2)
    kcred.get_cred(k, cred)
    assert kcred.cred_field(k, cred, "usage") == 2


def test_feature_off_without_pkeys_is_upstream() -> None:
    """Cred levels without pkeys: plain cred_jar, prepare_creds from it, no moves, no switch."""
    k = _boot(cpu_has_pkeys=False)
    assert k.slab is not None
    st = kcred.cred_state(k)
    assert not kcred.kpkeys_hardened_cred_enabled(k)
    assert not st.cred_jar.flags & SLAB_SET_PKEY
    new = kcred.prepare_creds(k)
    assert new is not None
    assert virt_to_cache(k.slab, k.pgt.pa(new)) is st.cred_jar
    assert kcred.protect_creds(k, new) == new
    assert _uid_write(k, new) == 0
    assert kcred.commit_creds(k, new) == 0
    assert current(k).cred == new
    assert _uid_write(k, new) == 0


# --- mutation tests -----------------------------------------------------------------------------


def _run() -> KunitResult:
    return run_kunit(_cfg())


def test_mutation_slab_hook_skips_set_memory_pkey(monkeypatch: pytest.MonkeyPatch) -> None:
    """(a) The SLAB_SET_PKEY hook does not call set_memory_pkey: write_current_creds not ok."""
    control = _run()
    assert _status(control, SUITE, "write_current_creds") is OK, control.ktap

    def no_pkey(k: Kernel, addr: int, numpages: int, pkey: int) -> int:
        return 0

    monkeypatch.setattr(kcred, "set_memory_pkey", no_pkey)
    mutant = _run()
    assert _status(mutant, SUITE, "write_current_creds") is NOT_OK, mutant.ktap
    assert "Write to current->cred wasn't prevented" in mutant.ktap
    assert _status(mutant, SUITE, "write_new_creds") is NOT_OK
    assert mutant.suite(SUITE).status is NOT_OK


def test_mutation_commit_creds_does_not_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """(b) commit_creds keeps the prepared (kmalloc) creds: write_current_creds not ok."""
    control = _run()
    assert _status(control, SUITE, "write_current_creds") is OK, control.ktap

    def no_move(k: Kernel, cred: int) -> int:
        return cred

    # commit_creds looks protect_creds up in its module; the suite calls its own import.
    monkeypatch.setattr(kcred, "protect_creds", no_move)
    mutant = _run()
    assert _status(mutant, SUITE, "write_current_creds") is NOT_OK, mutant.ktap
    assert "Write to current->real_cred wasn't prevented" in mutant.ktap
    assert _status(mutant, SUITE, "write_new_creds") is OK
    assert _status(mutant, POSITIVE, "commit_creds_moves_creds") is NOT_OK
