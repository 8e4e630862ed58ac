"""The x86-64 kernel port: boot, the direct map, CPA, PKS-protected page tables, user mm."""

from __future__ import annotations

import numpy as np
import pytest

from kpkeys_sim.kernel.arch.x86_pgtable import _PAGE_PSE, PTE_PFN_MASK
from kpkeys_sim.kernel.arch.x86_set_memory import lookup_address, set_memory_pkey, set_memory_ro
from kpkeys_sim.kernel.arch.x86_setup import X86Mm, boot_x86
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_LVL_PGTABLES,
    kpkeys_restore_pkey_reg,
    kpkeys_set_level,
)
from kpkeys_sim.kernel.mm.fork import create_user_task, do_exit, kernel_clone, kernel_wait
from kpkeys_sim.kernel.mm.memory import user_mm_init, user_read, user_write
from kpkeys_sim.kernel.mm.mmap import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    do_mmap,
    do_munmap,
)
from kpkeys_sim.kernel.mm.page import PG_table
from kpkeys_sim.kernel.mm.page_alloc import alloc_pages, nr_free_pages
from kpkeys_sim.kernel.sched import finish_lazy_tlb, schedule_to
from kpkeys_sim.machine import Fault
from kpkeys_sim.machine.mmu import walk

PAGE = 4096
MiB = 1 << 20
GiB = 1 << 30


def _boot(ram: int = 256 * MiB, **kw: object) -> Kernel:
    return boot_x86(KernelConfig(arch="x86", ram_size=ram, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["off", "v6", "v7"])
def k(request: pytest.FixtureRequest) -> Kernel:
    if request.param == "off":
        return _boot(kpkeys_hardened_pgtables=False)
    return _boot(series=request.param)


def _img(k: Kernel):  # type: ignore[no-untyped-def]
    assert isinstance(k.arch_mm, X86Mm)
    return k.arch_mm.image


def _leaf(k: Kernel, va: int) -> tuple[int, int]:
    """(descriptor, size shift) of the leaf the hardware walker finds for ``va`` on CPU0."""
    w, _ = walk(k.machine.mem, k.machine.geometry, k.machine.cpus[0].ttbr1, va)
    return w.desc, w.size_shift


def _pkey(k: Kernel, va: int) -> int:
    return (_leaf(k, va)[0] >> 59) & 0xF


def _tables(k: Kernel) -> dict[int, int]:
    """pfn -> level of every page-table page reachable from init_top_pgt's kernel half."""
    g = k.pgt
    mem = k.machine.mem
    out: dict[int, int] = {}

    def rec(pa: int, level: int) -> None:
        out[pa >> 12] = level
        if level == 3:
            return
        e = mem.frame_ro(pa >> 12)
        for i in range(256 if level == 0 else 0, 512):
            d = int(e[i])
            if d & 1 and not (level in (1, 2) and d & _PAGE_PSE):
                rec(d & PTE_PFN_MASK, level + 1)

    rec(g.pa_symbol(k.swapper_pg_dir), 0)
    return out


# --- boot ------------------------------------------------------------------------------------


def test_boot_log_and_no_warnings(k: Kernel) -> None:
    assert not k.warnings
    log = "\n".join(k.log)
    assert "BIOS-e820" in log and "init_memory_mapping: direct map" in log
    assert "PKS enabled on CPU0" in log
    assert ("kpkeys_hardened_pgtables: enabled" in log) == k.config.kpkeys_hardened_pgtables
    assert all(cpu.ttbr1 == k.init_mm.pgd_phys for cpu in k.machine.cpus)
    assert all(cpu.pks == 1 for cpu in k.machine.cpus)


def test_direct_map_translates_every_ram_page(k: Kernel) -> None:
    g = k.pgt
    m = k.machine
    for pa in range(0, m.mem.end, PAGE):
        assert m.translate(m.cpus[0], g.va(pa) + 8, "R") == pa + 8


def test_image_permissions_after_mark_rodata_ro(k: Kernel) -> None:
    """Text RO+X, rodata RO+NX, data RW+NX on the high mapping; the direct-map alias follows."""
    img = _img(k)
    g = k.pgt
    for va, rw, nx in ((img._text, 0, 0), (img.start_rodata, 0, 1), (img._sdata + 8 * PAGE, 1, 1)):
        desc, _ = _leaf(k, va)
        assert ((desc >> 1) & 1, desc >> 63) == (rw, nx)
        alias, _ = _leaf(k, g.va(g.pa_symbol(va)))
        assert ((alias >> 1) & 1, alias >> 63) == (rw, 1)


# --- the direct-map shape ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ram", "kw", "shape"),
    [
        (256 * MiB, {}, (0, 127, 512)),
        (4 * GiB, {}, (3, 511, 512)),
        (4 * GiB + 64 * MiB, {}, (3, 511 + 32, 512)),
        (256 * MiB, {"debug_pagealloc": True}, (0, 0, 65536)),
        (256 * MiB, {"linear_map": "pte"}, (0, 0, 65536)),
        (256 * MiB, {"bbml2_noabort": False, "rodata_full": True}, (0, 127, 512)),
    ],
)
def test_direct_map_leaf_census(
    ram: int, kw: dict[str, object], shape: tuple[int, int, int]
) -> None:
    """1G where a whole GiB is RAM, 2M elsewhere, 4K for [0, 2M) (the ISA hole); kpkeys off."""
    k = _boot(ram, kpkeys_hardened_pgtables=False, **kw)
    leaves = k.arch_mm.linear_map_leaves(k)
    assert (leaves["pud"], leaves["pmd"], leaves["pte"]) == shape
    assert leaves["pud"] * GiB + leaves["pmd"] * 2 * MiB + leaves["pte"] * PAGE == ram
    assert k.arch_mm.linear_map_split_count(k) == 0


def test_v7_forces_a_4k_direct_map() -> None:
    k = _boot(series="v7")
    leaves = k.arch_mm.linear_map_leaves(k)
    assert (leaves["pud"], leaves["pmd"], leaves["pte"]) == (0, 0, 65536)


# --- CPA -------------------------------------------------------------------------------------


def test_set_memory_ro_splits_one_2m_leaf_once() -> None:
    k = _boot(kpkeys_hardened_pgtables=False)
    g = k.pgt
    m = k.machine
    cpu = m.cpus[0]
    va = g.va(100 * MiB + 5 * PAGE)
    assert _leaf(k, va)[1] == 21
    m.store_u64(cpu, va, 1)  # a writable 2M TLB entry is cached
    before = dict(k.linear_map_stats)
    assert set_memory_ro(k, va, 1) == 0
    assert k.linear_map_stats.get("split_pmd", 0) == before.get("split_pmd", 0) + 1
    assert k.arch_mm.linear_map_split_count(k) == 1
    with pytest.raises(Fault) as exc:
        m.store_u64(cpu, va, 2)
    f = exc.value
    assert (f.kind, f.syndrome, f.va) == ("permission", 0x3, va)  # P | W, supervisor, no PK
    for nb in (va - PAGE, va + PAGE, va - 5 * PAGE + 2 * MiB - PAGE):
        m.store_u64(cpu, nb, 3)
        assert _leaf(k, nb)[1] == 12
    assert set_memory_ro(k, va + PAGE, 1) == 0  # same 2M page: no second split
    assert k.arch_mm.linear_map_split_count(k) == 1
    kpte, level = lookup_address(k, va)
    assert kpte is not None and level == 1


def test_set_memory_ro_on_a_1g_leaf_splits_to_2m_then_4k() -> None:
    k = _boot(4 * GiB, kpkeys_hardened_pgtables=False)
    g = k.pgt
    va = g.va(2 * GiB + 6 * MiB + 3 * PAGE)
    assert _leaf(k, va)[1] == 30
    assert set_memory_ro(k, va, 1) == 0
    assert (k.linear_map_stats["split_pud"], k.linear_map_stats["split_pmd"]) == (1, 1)
    assert _leaf(k, va + 2 * MiB)[1] == 21
    leaves = k.arch_mm.linear_map_leaves(k)
    assert (leaves["pud"], leaves["pmd"], leaves["pte"]) == (2, 511 + 511, 512 + 512)


@pytest.mark.parametrize("series", ["v6", "v7"])
def test_set_memory_pkey_makes_writes_need_the_pgtables_level(series: str) -> None:
    k = _boot(series=series)
    assert k.zone is not None
    m = k.machine
    cpu = m.cpus[0]
    pfn = alloc_pages(k.zone, 0, 0)
    assert pfn is not None
    va = k.pgt.va(pfn << 12)
    assert set_memory_pkey(k, va, 1, 1) == 0
    assert _pkey(k, va) == 1
    m.load_u64(cpu, va)  # reads stay allowed
    with pytest.raises(Fault) as exc:
        m.store_u64(cpu, va, 1)
    assert (exc.value.syndrome, exc.value.pkey) == (0x23, 1)  # P | W | PK
    reg = kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)
    m.store_u64(cpu, va, 1)
    kpkeys_restore_pkey_reg(k, reg)
    with pytest.raises(Fault):
        m.store_u64(cpu, va + 8, 1)


# --- every page table protected ----------------------------------------------------------------


@pytest.mark.parametrize(("series", "ram"), [("v6", 256 * MiB), ("v7", 256 * MiB), ("v6", 4 * GiB)])
def test_every_init_mm_table_has_pkey_1_except_by_design(series: str, ram: int) -> None:
    """Exceptions: the fixmap tables (spec §3.8) and v6's vmemmap tables (not PPA-tracked).

    ``init_top_pgt`` is protected (x86 keeps it writable, so the port's
    static-table hook covers it), and under v7 so is the high-mapping split
    table made while protecting the static tables (v7 installs the allocator
    hooks before that step).
    """
    k = _boot(ram, series=series)
    g = k.pgt
    img = _img(k)
    tables = _tables(k)
    fixmap = {g.pa_symbol(v) >> 12 for v in img.fixmap_pgtables}
    root = g.pa_symbol(img.init_top_pgt) >> 12
    expected = set(fixmap)
    if series == "v6":
        expected |= set(k.vmemmap_pgtables)
    unprotected = {pfn for pfn in tables if _pkey(k, g.va(pfn << 12)) != 1}
    assert unprotected - expected == set()
    assert root not in unprotected
    if series == "v7":
        l2 = k.machine.mem.frame_ro(g.pa_symbol(img.level2_kernel_pgt) >> 12)
        split = int(l2[g.pmd_index(img._sdata)])
        assert not split & _PAGE_PSE  # the .data leaf was split ...
        assert (split & PTE_PFN_MASK) >> 12 not in unprotected  # ... with a protected table
    assert fixmap <= unprotected
    for va in img.static_pgtables[1:]:
        assert _pkey(k, va) == 1  # the high alias too (CPA alias processing)


def test_v7_split_table_unprotected_if_hooks_come_after_the_static_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mutation: installing v7's allocator hooks after the static-table step (the old
    order) leaves the .data high-mapping split table with pkey 0."""
    from kpkeys_sim.kernel.kpkeys import hardened_pgtables as hp

    real = hp._install_allocator_hooks
    calls: list[int] = []

    def late(kk: object) -> None:
        calls.append(1)

    orig_protect = hp.arch_kpkeys_protect_static_pgtables

    def protect_then_install(kk: Kernel) -> None:
        orig_protect(kk)
        real(kk)

    monkeypatch.setattr(hp, "_install_allocator_hooks", late)
    monkeypatch.setattr(hp, "arch_kpkeys_protect_static_pgtables", protect_then_install)
    k = _boot(256 * MiB, series="v7")
    assert calls
    g = k.pgt
    img = _img(k)
    l2 = k.machine.mem.frame_ro(g.pa_symbol(img.level2_kernel_pgt) >> 12)
    split = int(l2[g.pmd_index(img._sdata)])
    assert not split & _PAGE_PSE
    assert _pkey(k, g.va(split & PTE_PFN_MASK)) == 0


def test_negative_control_without_the_feature_tables_are_writable() -> None:
    k = _boot(kpkeys_hardened_pgtables=False)
    g = k.pgt
    m = k.machine
    for pfn in _tables(k):
        va = g.va(pfn << 12)
        assert _pkey(k, va) == 0
        m.store_u64(m.cpus[0], va + 8 * 511, m.load_u64(m.cpus[0], va + 8 * 511))


def test_with_the_feature_a_table_write_outside_the_guard_faults() -> None:
    k = _boot(series="v7")
    g = k.pgt
    m = k.machine
    pfn = max(p for p, lvl in _tables(k).items() if lvl == 3)
    va = g.va(pfn << 12)
    with pytest.raises(Fault) as exc:
        m.store_u64(m.cpus[0], va, 0)
    assert exc.value.syndrome == 0x23


# --- user mm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("series", ["off", "v6", "v7"])
def test_user_mm_mmap_fault_fork_munmap_exit_leak_nothing(series: str) -> None:
    k = _boot(kpkeys_hardened_pgtables=series != "off", series="v6" if series == "off" else series)
    user_mm_init(k)
    assert k.zone is not None and k.mem_map is not None
    warm = create_user_task(k, "warm")
    schedule_to(k, warm)
    do_exit(k)
    finish_lazy_tlb(k)
    free0, pt0 = nr_free_pages(k.zone), k.mem_map.count_flag(PG_table)
    p = create_user_task(k, "p")
    schedule_to(k, p)
    assert p.mm is not None
    a = do_mmap(k, p.mm, 0, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(64):
        user_write(k, a + i * PAGE, bytes([i + 1]) * 8)
    c = kernel_clone(k)
    assert c is not None
    schedule_to(k, c)
    assert user_read(k, a + 5 * PAGE, 8) == bytes([6]) * 8
    user_write(k, a, b"child!!!")
    schedule_to(k, p)
    assert user_read(k, a, 8) == bytes([1]) * 8
    assert do_munmap(k, p.mm, a, 64 * PAGE) == 0
    schedule_to(k, c)
    do_exit(k, 0, next_task=p)
    assert kernel_wait(k, p) == (c.pid, 0)
    do_exit(k)
    finish_lazy_tlb(k)
    assert nr_free_pages(k.zone) == free0
    assert k.mem_map.count_flag(PG_table) == pt0
    assert not k.warnings
    assert bool(np.all(np.array([cpu.pks for cpu in k.machine.cpus]) == 1))


# --- the series' KUnit suites on x86 ---------------------------------------------------------


@pytest.mark.parametrize("series", ["v6", "v7"])
def test_kunit_suites_pass_on_x86(series: str) -> None:
    from kpkeys_sim.kunit.runner import run_kunit_on

    results = []
    _boot_cfg = KernelConfig(arch="x86", ram_size=256 * MiB, series=series)  # type: ignore[arg-type]
    boot_x86(_boot_cfg, kunit_run_all_tests=lambda kk: results.append(run_kunit_on(kk)))
    (res,) = results
    assert res.ok and res.failed == 0 and res.skipped == 0 and res.passed == 8
