"""kpkeys_hardened_pgtables: boot sequences, protection of every table, exact guard accounting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kpkeys_sim.kernel.arch.arm64_pgtable import PTE_ADDR_MASK, page_address, pmd_table
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import DEFAULT_CONFIG, KernelConfig
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys import hardened_pgtables as hp
from kpkeys_sim.kernel.kpkeys.core import KPKEYS_PKEY_PGTABLES
from kpkeys_sim.kernel.mm import pgtable
from kpkeys_sim.kernel.mm.fork import create_user_task, do_exit, kernel_clone, kernel_wait
from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_mode
from kpkeys_sim.kernel.mm.memory import user_read, user_write
from kpkeys_sim.kernel.mm.mm_types import mm_struct
from kpkeys_sim.kernel.mm.mmap import (
    MAP_ANONYMOUS,
    MAP_POPULATE,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    do_mmap,
    do_munmap,
)
from kpkeys_sim.kernel.mm.page_alloc import nr_free_pages
from kpkeys_sim.kernel.mm.pgalloc import pte_alloc_one_kernel, pte_free_kernel
from kpkeys_sim.kernel.mm.vmalloc import vfree, vmalloc
from kpkeys_sim.kernel.sched import current, finish_lazy_tlb, irq_context, schedule_to
from kpkeys_sim.machine import CountingInstrument, Fault
from kpkeys_sim.machine.mmu import walk

SERIES = ("v5", "v6", "v7")
RAM = 512 << 20


def _cfg(series: str, **kw: object) -> KernelConfig:
    return DEFAULT_CONFIG.replace(series=series, ram_size=RAM, **kw)


def _boot(series: str, **kw: object) -> tuple[Kernel, CountingInstrument]:
    counter = CountingInstrument()
    k = boot(_cfg(series, **kw), instruments=[counter])
    return k, counter


def _lm_pkey(k: Kernel, va: int) -> int:
    """The pkey of the linear-map (or any kernel) leaf mapping ``va``, read from the tables."""
    m = k.machine
    w, _ = walk(m.mem, m.geometry, k.cpu.ttbr1, va)
    return int(m.arch.desc_pkey(w.desc))


def _table_va(k: Kernel, ptr: int) -> int:
    """The linear-map alias of the table page holding entry pointer ``ptr``."""
    g = k.pgt
    return g.va(g.pa(ptr) & ~(g.PAGE_SIZE - 1)) if g.is_lm_address(ptr) else ptr


@contextmanager
def _counting(counter: CountingInstrument) -> Iterator[CountingInstrument]:
    counter.reset()
    yield counter


def _kernel_ptrs(k: Kernel, addr: int) -> dict[str, int]:
    """Entry pointers of every level for kernel address ``addr`` (folded levels left out)."""
    pgdp = pgtable.pgd_offset_k(k, addr)
    pudp = pgtable.pud_offset(k, pgtable.p4d_offset(k, pgdp, addr), addr)
    pmdp = pgtable.pmd_offset(k, pudp, addr)
    out = {"pmd": pmdp}
    if not k.pgt.mm_pud_folded:
        out["pud"] = pudp
    if pmd_table(pgtable.pmdp_get(k, pmdp)):
        out["pte"] = pgtable.pte_offset_kernel(k, pmdp, addr)
    return out


def _user_ptrs(k: Kernel, mm: mm_struct, addr: int) -> dict[str, int]:
    pgdp = pgtable.pgd_offset(k, mm, addr)
    pudp = pgtable.pud_offset(k, pgtable.p4d_offset(k, pgdp, addr), addr)
    pmdp = pgtable.pmd_offset(k, pudp, addr)
    out = {"user_pmd": pmdp, "user_pte": pgtable.pte_offset_kernel(k, pmdp, addr)}
    if not k.pgt.mm_pud_folded:
        out["user_pud"] = pudp
    return out


# --- boot and run --------------------------------------------------------------------------------


@pytest.mark.parametrize("series", SERIES)
def test_boot_fork_munmap_and_vmalloc_with_the_feature(series: str) -> None:
    """Every version boots and runs fork/COW/munmap/exit and vmalloc/vfree with tables protected."""
    k, counter = _boot(series)
    assert hp.kpkeys_hardened_pgtables_enabled(k)
    page = k.pgt.PAGE_SIZE
    parent = create_user_task(k, "parent")
    schedule_to(k, parent)
    assert parent.mm is not None
    addr = do_mmap(
        k,
        parent.mm,
        0,
        64 * page,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
    )
    assert addr > 0
    user_write(k, addr, b"parent")
    for name, ptr in _user_ptrs(k, parent.mm, addr).items():
        assert _lm_pkey(k, _table_va(k, ptr)) == KPKEYS_PKEY_PGTABLES, name
    child = kernel_clone(k)
    assert child is not None and child.mm is not None
    schedule_to(k, child)
    assert user_read(k, addr, 6) == b"parent"
    user_write(k, addr, b"child!")  # COW break in the child
    assert _lm_pkey(k, _table_va(k, _user_ptrs(k, child.mm, addr)["user_pte"])) == 1
    do_exit(k, 0, next_task=parent)
    assert kernel_wait(k, parent) == (child.pid, 0)
    assert user_read(k, addr, 6) == b"parent"
    assert do_munmap(k, parent.mm, addr, 32 * page) == 0
    for _ in range(8):
        area = vmalloc(k, 4 * page)
        assert area is not None
        ptep = _kernel_ptrs(k, area)["pte"]
        assert _lm_pkey(k, _table_va(k, ptep)) == KPKEYS_PKEY_PGTABLES
        vfree(k, area)
    do_exit(k, 0)
    finish_lazy_tlb(k)
    assert current(k).pid == 0
    assert k.warnings == []
    assert counter.counts["kpkeys_guard_enter"] + counter.counts["kpkeys_lazy_mmu_switch"] > 0
    # The default level is back on every CPU.
    for cpu in k.machine.cpus:
        assert cpu.read_pkey_reg() == 0x17


# --- no side door: every helper's target refuses an unguarded store ------------------------------


@pytest.mark.parametrize("series", SERIES)
def test_every_helper_target_faults_outside_the_guard(series: str) -> None:
    """A raw store at the default level to each helper's target is an overlay fault (pkey 1).

    The targets are the entries the helpers write: a vmalloc area's PTE, PMD and
    PUD, a PTE-mapped linear-map page's PTE, PMD and PUD, the kernel image's
    PUD and a user mapping's PTE, PMD and PUD.  The same store succeeds under
    the guard, and the helper itself (same value) succeeds from the default level.
    """
    k, _ = _boot(series)
    from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
    from kpkeys_sim.kernel.mm.linear_map import (
        set_direct_map_default_noflush,
        set_direct_map_invalid_noflush,
    )
    from kpkeys_sim.kernel.mm.page_alloc import alloc_pages

    zone = k.zone
    assert zone is not None
    area = vmalloc(k, k.pgt.PAGE_SIZE)
    assert area is not None
    targets = {f"vmalloc_{n}": p for n, p in _kernel_ptrs(k, area).items()}
    pfn = alloc_pages(zone, GFP_KERNEL, 0)
    assert pfn is not None
    assert set_direct_map_invalid_noflush(k, pfn) == 0
    assert set_direct_map_default_noflush(k, pfn) == 0
    targets |= {f"linear_{n}": p for n, p in _kernel_ptrs(k, page_address(k, pfn)).items()}
    if not k.pgt.mm_pud_folded:
        image = _kernel_ptrs(k, k.kimage._data)
        targets["image_pud"] = image["pud"]
    task = create_user_task(k, "u")
    schedule_to(k, task)
    assert task.mm is not None
    uaddr = do_mmap(
        k, task.mm, 0, k.pgt.PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE
    )
    targets |= _user_ptrs(k, task.mm, uaddr)
    m = k.machine
    writers = {"pte": pgtable.set_pte, "pmd": pgtable.set_pmd, "pud": pgtable.set_pud}
    for name, ptr in targets.items():
        val = m.load_u64(k.cpu, ptr)
        with pytest.raises(Fault) as exc:
            m.store_u64(k.cpu, ptr, val)
        assert exc.value.overlay and exc.value.pkey == KPKEYS_PKEY_PGTABLES, name
        with k.pgtables_guard(k):
            m.store_u64(k.cpu, ptr, val)
        writers[name.rsplit("_", 1)[1]](k, ptr, val)
        assert m.load_u64(k.cpu, ptr) == val
    assert k.cpu.read_pkey_reg() == 0x17


# --- exact accounting ----------------------------------------------------------------------------


def _kpkeys_cost(c: CountingInstrument) -> tuple[int, int, int]:
    """(register writes, ISBs not paired with a barrier DSB, guard entries)."""
    return (
        c.counts["pkey_reg_write"],
        c.counts["isb"] - c.counts["dsb"],
        c.counts["kpkeys_guard_enter"],
    )


def test_each_guarded_helper_costs_two_writes_and_two_isbs_without_batching() -> None:
    """Without batching a guarded helper call is exactly 2 register writes and 2 ISBs."""
    k, counter = _boot("v6", lazy_mmu_batching=False)
    area = vmalloc(k, 4 * k.pgt.PAGE_SIZE)
    assert area is not None
    p = _kernel_ptrs(k, area)
    pte, pmd, pud = p["pte"], p["pmd"], p["pud"]
    val = pgtable.ptep_get(k, pte)
    calls = {
        "set_pte": lambda: pgtable.set_pte(k, pte, val),
        "set_pmd": lambda: pgtable.set_pmd(k, pmd, pgtable.pmdp_get(k, pmd)),
        "set_pud": lambda: pgtable.set_pud(k, pud, pgtable.pudp_get(k, pud)),
        "ptep_test_and_clear_young": lambda: pgtable.ptep_test_and_clear_young(k, pte),
        "ptep_set_wrprotect": lambda: pgtable.ptep_set_wrprotect(k, pte),
        "ptep_get_and_clear": lambda: pgtable.ptep_get_and_clear(k, pte),
        "pmdp_establish": lambda: pgtable.pmdp_establish(k, None, 0, pmd, pgtable.pmdp_get(k, pmd)),
    }
    for name, call in calls.items():
        with _counting(counter) as c:
            call()
        assert _kpkeys_cost(c) == (2, 2, 1), name
        assert c.counts["kpkeys_set_level"] == c.counts["kpkeys_restore"] == 1, name
    pgtable.set_pte(k, pte, val)
    # A bulk helper over n entries is accounted as n guard round trips.
    vals = pgtable.ptep_get_array(k, pte, 4)
    with _counting(counter) as c:
        pgtable.set_ptes_array(k, pte, vals)
    assert _kpkeys_cost(c) == (8, 8, 4)
    with _counting(counter) as c:
        for i in range(4):
            pgtable.set_pte(k, pte + 8 * i, int(vals[i]))
    assert _kpkeys_cost(c) == (8, 8, 4)
    with _counting(counter) as c:
        vfree(k, area)
    assert _kpkeys_cost(c) == (8, 8, 4)  # 4 PTEs cleared, each its own round trip


def test_batching_costs_two_writes_per_lazy_mmu_section() -> None:
    """With batching a lazy-MMU section costs 2 register writes, whatever it writes.

    With barriers pending the restore has no ISB (the barrier's ISB follows);
    without, it has its own.  vmalloc and vfree are one section each.
    """
    k, counter = _boot("v6")
    area = vmalloc(k, 4 * k.pgt.PAGE_SIZE)
    assert area is not None
    pte = _kernel_ptrs(k, area)["pte"]
    vals = pgtable.ptep_get_array(k, pte, 4)
    with _counting(counter) as c, lazy_mmu_mode(k):
        pgtable.set_ptes_array(k, pte, vals)  # valid kernel PTEs: barriers queued
        pgtable.set_pte(k, pte, int(vals[0]))
    assert c.counts["pkey_reg_write"] == 2
    assert (c.counts["isb"], c.counts["dsb"]) == (2, 1)  # enter ISB + the barrier ISB
    assert c.counts["kpkeys_guard_enter"] == 0
    assert c.counts["kpkeys_lazy_mmu_switch"] == 2
    with _counting(counter) as c, lazy_mmu_mode(k):
        pgtable.ptep_test_and_clear_young(k, pte)  # no barriers
    assert (c.counts["pkey_reg_write"], c.counts["isb"], c.counts["dsb"]) == (2, 2, 0)
    with _counting(counter) as c:
        vfree(k, area)
        area = vmalloc(k, 4 * k.pgt.PAGE_SIZE)
    assert c.counts["pkey_reg_write"] == 4 and c.counts["lazy_mmu_section"] == 2
    # Nested sections (v6 generic nesting) still cost one switch pair.
    with _counting(counter) as c, lazy_mmu_mode(k), lazy_mmu_mode(k):
        pgtable.set_pte(k, pte, int(vals[0]))
    assert c.counts["pkey_reg_write"] == 2


def test_interrupt_in_a_lazy_section_takes_its_own_guard() -> None:
    """In interrupt context the guard switches per write even inside a lazy section (v5 18/18)."""
    k, counter = _boot("v6")
    area = vmalloc(k, k.pgt.PAGE_SIZE)
    assert area is not None
    pte = _kernel_ptrs(k, area)["pte"]
    val = pgtable.ptep_get(k, pte)
    with lazy_mmu_mode(k):
        with _counting(counter) as c, irq_context(k):
            pgtable.set_pte(k, pte, val)
        # entry: reset to INIT (write + ISB); guard: 2 writes + 2 ISBs; exit: 1 write.
        assert c.counts["kpkeys_guard_enter"] == 1
        assert c.counts["pkey_reg_write"] == 4
        with _counting(counter) as c:
            pgtable.set_pte(k, pte, val)
        assert c.counts["kpkeys_guard_enter"] == 0 and c.counts["pkey_reg_write"] == 0


def test_skip_unchanged_nested_guards_write_once() -> None:
    """Skip-unchanged writes (cred v2 1/8): a nested guard and its bulk repeats write nothing."""
    k, counter = _boot("v6", lazy_mmu_batching=False, skip_unchanged_pkey_writes=True)
    area = vmalloc(k, 4 * k.pgt.PAGE_SIZE)
    assert area is not None
    pte = _kernel_ptrs(k, area)["pte"]
    vals = pgtable.ptep_get_array(k, pte, 4)
    with _counting(counter) as c, k.pgtables_guard(k):
        pgtable.set_ptes_array(k, pte, vals)
    assert c.counts["pkey_reg_write"] == 2
    assert c.counts["kpkeys_guard_enter"] == 5
    with _counting(counter) as c:
        pgtable.set_ptes_array(k, pte, vals)
    assert c.counts["pkey_reg_write"] == 8


def test_guard_repeat_counts_nothing_when_the_condition_was_false() -> None:
    """Inside a lazy section (batching) the guard does not switch, nor do its repeats."""
    k, counter = _boot("v6")
    state = hp.hardened_pgtables_state(k)
    assert state is not None
    with lazy_mmu_mode(k), k.pgtables_guard(k), _counting(counter) as c:
        k.pgtables_guard_repeat(k, 10)
        assert c.snapshot() == {}


# --- feature off / no pkeys ----------------------------------------------------------------------


def _no_pgtables_pkey_anywhere(k: Kernel) -> None:
    """No linear-map leaf carries a non-zero pkey."""
    g = k.pgt
    m = k.machine
    for pfn in range(m.mem.base_pfn, m.mem.base_pfn + m.mem.nr_frames, 97):
        assert _lm_pkey(k, g.va(pfn << g.PAGE_SHIFT)) == 0


@pytest.mark.parametrize("series", SERIES)
def test_feature_off_is_the_unmodified_kernel(series: str) -> None:
    """Not configured: the NOOP guard, no hooks, no pkey set, no kpkeys event."""
    k, counter = _boot(series, kpkeys_hardened_pgtables=False)
    assert k.pgtables_guard.__name__ == "kpkeys_hardened_pgtables"
    assert k.pgtables_guard.level is None  # KPKEYS_GUARD_NOOP
    assert hp.hardened_pgtables_state(k) is None
    assert not hp.kpkeys_hardened_pgtables_enabled(k)
    assert k.pgtable_alloc_hook is None and not k.pgtable_ctor_hooks
    assert not k.lazy_mmu_enter_hooks
    _no_pgtables_pkey_anywhere(k)
    with _counting(counter) as c:
        area = vmalloc(k, 4 * k.pgt.PAGE_SIZE)
        assert area is not None
        vfree(k, area)
    assert c.counts["pkey_reg_write"] == 0 and c.counts["kpkeys_guard_enter"] == 0


@pytest.mark.parametrize("series", SERIES)
def test_no_pkeys_on_the_cpu_changes_nothing(series: str) -> None:
    """Configured but the CPU lacks POE: the key stays off, no pkey is set, no register write."""
    k, counter = _boot(series, cpu_has_pkeys=False)
    assert not hp.kpkeys_hardened_pgtables_enabled(k)
    assert k.early_pgtable_alloc is not hp._early_pgtable_alloc_ppa
    _no_pgtables_pkey_anywhere(k)
    with _counting(counter) as c:
        area = vmalloc(k, 4 * k.pgt.PAGE_SIZE)
        assert area is not None
        vfree(k, area)
    assert c.counts["pkey_reg_write"] == 0 and c.counts["kpkeys_guard_enter"] == 0


# --- RFC v5 --------------------------------------------------------------------------------------


def _tables_from_swapper(k: Kernel) -> list[int]:
    """Physical addresses of every table reachable from swapper_pg_dir (swapper first)."""
    m = k.machine
    g = k.pgt
    out: list[int] = []

    def rec(pa: int, level: int) -> None:
        out.append(pa)
        if level == 3:
            return
        for d in m.mem.frame_ro(pa >> g.PAGE_SHIFT).tolist():
            if d & 3 == 3:
                rec(d & PTE_ADDR_MASK, level + 1)

    rec(g.pa_symbol(k.swapper_pg_dir), m.geometry.start_level)
    return out


def test_v5_walk_protects_every_table_but_swapper_pg_dir() -> None:
    """``kernel_pgtables_set_pkey``: every table under swapper_pg_dir has pkey 1, swapper 0."""
    k, _ = _boot("v5")
    g = k.pgt
    swapper, *tables = _tables_from_swapper(k)
    assert _lm_pkey(k, g.va(swapper)) == 0
    assert tables
    for pa in tables:
        assert _lm_pkey(k, g.va(pa)) == KPKEYS_PKEY_PGTABLES, hex(pa)


def test_v5_walk_takes_the_lock_and_stops_at_the_first_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The walk holds init_mm.page_table_lock and returns the first error without going on."""
    k, _ = _boot("v5")
    k.init_mm.page_table_lock = True
    with pytest.raises(KernelBug, match="spinlock recursion"):
        hp.kernel_pgtables_set_pkey(k, KPKEYS_PKEY_PGTABLES)
    k.init_mm.page_table_lock = False
    calls: list[int] = []

    def failing(kk: Kernel, pfn: int, n: int, pkey: int) -> int:
        calls.append(pfn)
        return -22 if len(calls) == 2 else 0

    monkeypatch.setattr(hp, "_set_memory_pkey", failing)
    assert hp.kernel_pgtables_set_pkey(k, KPKEYS_PKEY_PGTABLES) == -22
    assert len(calls) == 2
    assert not k.init_mm.page_table_lock


def test_v5_ctor_sets_and_dtor_resets_and_a_failing_ctor_unwinds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PTP ctor protects, the dtor unprotects, a ctor failure frees the page (v5 12–13/18)."""
    k, _ = _boot("v5")
    zone = k.zone
    assert zone is not None
    pfn = pte_alloc_one_kernel(k)
    assert pfn is not None
    assert _lm_pkey(k, page_address(k, pfn)) == KPKEYS_PKEY_PGTABLES
    pte_free_kernel(k, pfn)
    assert _lm_pkey(k, page_address(k, pfn)) == 0
    free_before = nr_free_pages(zone)
    monkeypatch.setattr(hp, "_set_memory_pkey", lambda kk, p, n, pkey: -22)
    assert pte_alloc_one_kernel(k) is None
    assert nr_free_pages(zone) == free_before
    assert k.warnings and "kpkeys_protect_pgtable_memory" in k.warnings[-1]


def test_v5_nested_lazy_sections_leave_the_pgtables_level_on() -> None:
    """The flaw noted under v5 18/18: a nested section overwrites the single saved slot."""
    k, _ = _boot("v5")
    with lazy_mmu_mode(k), lazy_mmu_mode(k):
        pass
    assert k.cpu.read_pkey_reg() == 0x57  # still KPKEYS_LVL_PGTABLES
    k.cpu.write_pkey_reg(0x17)
    k.cpu.isb()


# --- v6 and v7 -----------------------------------------------------------------------------------


def test_v6_boot_wiring() -> None:
    """v6: the PPA serves early tables; init_late protects them, static tables, the early region."""
    from kpkeys_sim.kernel.kpkeys.pba import pba_enabled, pba_state
    from kpkeys_sim.kernel.kpkeys.ppa import ppa_state

    k, _ = _boot("v6")
    g = k.pgt
    assert k.early_pgtable_alloc is hp._early_pgtable_alloc_ppa
    assert k.prepare_direct_map_split is hp.kpkeys_prepare_direct_map_split
    assert k.ready_for_direct_map_split is hp.kpkeys_ready_for_direct_map_split
    ppa = ppa_state(k)
    assert ppa.nr_allocs > 0 and ppa.finalized
    for r in ppa.ranges:
        assert _lm_pkey(k, g.va(r.addr)) == KPKEYS_PKEY_PGTABLES
    swapper_pfn = g.pa_symbol(k.swapper_pg_dir) >> g.PAGE_SHIFT
    for pfn in k.static_pgtables:
        want = 0 if pfn == swapper_pfn or pfn in k.fixmap_pgtables else KPKEYS_PKEY_PGTABLES
        assert _lm_pkey(k, page_address(k, pfn)) == want
    for pfn in k.fixmap_pgtables:
        assert _lm_pkey(k, page_address(k, pfn)) == 0
    assert pba_enabled(k)
    pba = pba_state(k)
    assert pba.early_head is not None and pba.early_region_protected
    assert pba.shrinker is not None


def test_v6_pte_mapped_linear_map_uses_the_noblock_allocator() -> None:
    """v6 with a PTE-only linear map: no PBA; page-table pages come from the noblock allocator."""
    from kpkeys_sim.kernel.kpkeys.pba import pba_enabled

    k, counter = _boot("v6", linear_map="pte")
    assert not pba_enabled(k)
    with _counting(counter) as c:
        pfn = pte_alloc_one_kernel(k)
        assert pfn is not None
        pte_free_kernel(k, pfn)
    assert c.counts["noblock_alloc"] == 1 and c.counts["noblock_free"] == 1
    assert _lm_pkey(k, page_address(k, pfn)) == 0


def test_v7_boot_wiring() -> None:
    """v7: PTE-mapped linear map, early tables tracked by the PPA (vmemmap's too) and protected."""
    from kpkeys_sim.kernel.kpkeys.ppa import ppa_state
    from kpkeys_sim.kernel.mm.linear_map import force_pte_mapping, linear_map_leaves

    k, _ = _boot("v7")
    g = k.pgt
    assert force_pte_mapping(k)
    leaves = linear_map_leaves(k)
    # map_mem maps the kernel image's alias [_text, __init_begin) with
    # NO_CONT_MAPPINGS only: PMD blocks remain there, nowhere else.
    img = k.kimage
    assert leaves["pmd"] == (img.init_begin - img._text) // g.PMD_SIZE
    assert leaves["pud"] == leaves["contpmd"] == leaves["contpte"] == 0
    ppa = ppa_state(k)
    assert ppa.version == "v7" and ppa.finalized
    for pfn in k.vmemmap_pgtables:
        assert _lm_pkey(k, page_address(k, pfn)) == KPKEYS_PKEY_PGTABLES
    for r in ppa.ranges:
        for off in range(0, r.size, g.PAGE_SIZE):
            assert _lm_pkey(k, g.va(r.addr + off)) == KPKEYS_PKEY_PGTABLES


def test_v7_allocator_passes_the_order_through() -> None:
    """v7 ``kpkeys_pgtable_alloc(gfp, order)``: every page of the block is protected, then reset."""
    from kpkeys_sim.kernel.mm.gfp import GFP_PGTABLE_KERNEL
    from kpkeys_sim.kernel.mm.pgalloc import pagetable_alloc, pagetable_free

    k, _ = _boot("v7")
    pfn = pagetable_alloc(k, GFP_PGTABLE_KERNEL, 2)
    assert pfn is not None
    pkeys = [_lm_pkey(k, page_address(k, pfn + i)) for i in range(4)]
    assert pkeys == [KPKEYS_PKEY_PGTABLES] * 4
    pagetable_free(k, pfn, 2)
    assert [_lm_pkey(k, page_address(k, pfn + i)) for i in range(4)] == [0] * 4
    with pytest.raises(KernelBug, match="no order"):
        hp.kpkeys_pgtable_alloc(_boot("v6")[0], GFP_PGTABLE_KERNEL, 1)


def test_hardened_guard_is_a_kpkeys_cond_guard() -> None:
    """The installed guard is ``KPKEYS_GUARD_COND(kpkeys_hardened_pgtables, PGTABLES, ...)``."""
    from kpkeys_sim.kernel.kpkeys.core import KPKEYS_LVL_PGTABLES, KpkeysGuard

    k, _ = _boot("v7")
    assert issubclass(k.pgtables_guard, KpkeysGuard)
    assert k.pgtables_guard.__name__ == "kpkeys_hardened_pgtables"
    assert k.pgtables_guard.level is KPKEYS_LVL_PGTABLES
