"""Workloads on freshly booted model kernels: exact event counts, checked by hand.

The counts come from the model running the kernel's helpers; each test
states the arithmetic that gives the expected value.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator
from dataclasses import replace

import pytest

import kpkeys_sim.workloads as workloads_pkg
from kpkeys_sim.analysis.bench import CONFIGS, Benchmark, baseline_of, run_workload
from kpkeys_sim.analysis.cost import CostInstrument, EventCounts
from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.workloads import measure
from kpkeys_sim.workloads.kernbench import KERNBENCH, _parse, default_mix, load_mix
from kpkeys_sim.workloads.micromm import MAPPING_SIZE
from kpkeys_sim.workloads.test_vmalloc import FIX_SIZE_ALLOC_TEST, VM_MAP_RAM_TEST

GiB = 1 << 30


def _cfg(name: str, ram: int = GiB) -> KernelConfig:
    return CONFIGS[name].kernel_config("arm64", 0, ram)


def _run(bench: str, params: dict[str, int], config: str, iterations: int | None = None):  # type: ignore[no-untyped-def]
    return run_workload(Benchmark(bench, params), _cfg(config), "small", 0, None, None, iterations)


# --- hand-counted guard and lazy-MMU cases -------------------------------------------------------


def _user_ptep(k: Kernel) -> Iterator[int]:
    """A process with 3 populated pages; yields the kernel pointers of their PTEs."""
    from kpkeys_sim.kernel.mm.fork import create_user_task
    from kpkeys_sim.kernel.mm.mmap import (
        MAP_ANONYMOUS,
        MAP_POPULATE,
        MAP_PRIVATE,
        PROT_READ,
        PROT_WRITE,
        do_mmap,
    )
    from kpkeys_sim.kernel.mm.pgtable import (
        p4d_offset,
        pgd_offset,
        pmd_offset,
        pte_offset_map,
        pud_offset,
    )
    from kpkeys_sim.kernel.sched import schedule_to

    p = create_user_task(k, "hand")
    schedule_to(k, p)
    mm = p.mm
    assert mm is not None
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE
    addr = do_mmap(k, mm, 0, 3 * 4096, PROT_READ | PROT_WRITE, flags)
    for i in range(3):
        a = addr + i * 4096
        pmdp = pmd_offset(k, pud_offset(k, p4d_offset(k, pgd_offset(k, mm, a), a), a), a)
        ptep = pte_offset_map(k, pmdp, a)
        assert ptep is not None
        yield ptep


def _hand(config: str, batched_section: bool) -> EventCounts:
    from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_mode
    from kpkeys_sim.kernel.mm.pgtable import ptep_set_wrprotect

    k = boot(_cfg(config, 256 << 20))
    pteps = list(_user_ptep(k))
    c = CostInstrument()
    k.machine.instruments.add(c)

    def three_helpers() -> None:
        for p in pteps:
            ptep_set_wrprotect(k, p)

    def in_section() -> None:
        with lazy_mmu_mode(k):
            three_helpers()

    return measure(c, in_section if batched_section else three_helpers)


def test_unbatched_helper_costs_two_writes_and_two_isbs() -> None:
    """v5-nobatch: each of 3 guarded helper calls = 1 guard, 2 POR_EL1 writes, 2 ISBs."""
    ev = _hand("v5-nobatch", batched_section=False).counts
    assert ev["kpkeys_guard_enter"] == 3
    assert ev["pkey_reg_write"] == 6
    assert ev["isb"] == 6
    assert ev["pt_write"] == 3


def test_unbatched_helpers_switch_even_inside_a_lazy_section() -> None:
    """v5-nobatch: a lazy-MMU section adds no switch; the 3 helpers still switch each time."""
    ev = _hand("v5-nobatch", batched_section=True).counts
    assert ev["lazy_mmu_section"] == 1
    assert ev["pkey_reg_write"] == 6
    assert ev["isb"] == 6
    assert ev.get("kpkeys_lazy_mmu_switch", 0) == 0


@pytest.mark.parametrize("config", ["v5-batch", "v6", "v7"])
def test_batched_section_costs_two_writes(config: str) -> None:
    """Batching: 3 helpers in one lazy-MMU section = 2 writes (enter, leave) and 2 ISBs."""
    ev = _hand(config, batched_section=True).counts
    assert ev["lazy_mmu_section"] == 1
    assert ev["kpkeys_lazy_mmu_switch"] == 2
    assert ev["pkey_reg_write"] == 2
    assert ev["isb"] == 2
    assert ev.get("kpkeys_guard_enter", 0) == 0
    assert ev["pt_write"] == 3


def test_feature_off_helpers_cost_no_switch() -> None:
    """baseline: the same 3 helpers write 3 entries and touch no pkey register."""
    ev = _hand("baseline", batched_section=True).counts
    assert ev["pt_write"] == 3
    assert "pkey_reg_write" not in ev
    assert "isb" not in ev


# --- micromm -------------------------------------------------------------------------------------


def test_fork_copies_every_pte_and_switches_per_entry_without_batching() -> None:
    """One fork, v5-nobatch, counted by hand from the PTE count and the new tables T.

    Per PTE: the child's entry is written and the parent's write-protected (2
    guards).  The child gets T page-table pages (pgd, pud, pmd, 4 PTE tables):
    T - 1 table entries are installed (guarded, each with a DSB+ISB), and each
    new page is protected by set_memory_pkey: one guarded linear-map PTE write
    (with its DSB+ISB) and one single-page TLB flush (TLBI + ISB).
    """
    rec = _run("micromm/fork", {"h": 0}, "v5-nobatch", iterations=1)
    ev = rec.counts.events.counts
    ptes = MAPPING_SIZE["small"] // 4096
    t = ev["pgtable_alloc"]
    guards = 2 * ptes + (t - 1) + t
    assert (ptes, t) == (2048, 7)
    assert ev["copy_pte"] == ptes
    assert ev["kpkeys_guard_enter"] == guards
    assert ev["pkey_reg_write"] == 2 * guards
    assert ev["isb"] == 2 * guards + (t - 1) + 2 * t
    assert ev["tlbi_va"] == t
    assert ev["pt_write"] == 2 * ptes + (t - 1) + t
    assert ev.get("kpkeys_lazy_mmu_switch", 0) == 0


def test_later_forks_do_not_write_protect_again() -> None:
    """The second fork finds the parent's PTEs read-only already: 1 guard per PTE, not 2."""
    one = _run("micromm/fork", {"h": 0}, "v5-nobatch", iterations=1).counts.events.counts
    two = _run("micromm/fork", {"h": 0}, "v5-nobatch", iterations=2).counts.events.counts
    second = two["kpkeys_guard_enter"] - one["kpkeys_guard_enter"]
    assert second == one["kpkeys_guard_enter"] - MAPPING_SIZE["small"] // 4096


def test_fork_with_batching_switches_per_section() -> None:
    """micromm/fork small, v5-batch: writes = 2 per lazy section + 2 per guard outside sections."""
    rec = _run("micromm/fork", {"h": 0}, "v5-batch", iterations=2)
    ev = rec.counts.events.counts
    assert ev["kpkeys_lazy_mmu_switch"] == 2 * ev["lazy_mmu_section"]
    assert ev["pkey_reg_write"] == ev["kpkeys_lazy_mmu_switch"] + 2 * ev["kpkeys_guard_enter"]
    assert ev["kpkeys_guard_enter"] < ev["lazy_mmu_section"]


def test_fork_iterations_are_checked_constant_and_extrapolated() -> None:
    """10 forks: 3 run (warm-up + two equal windows), 7 extrapolated, counts exactly 10x."""
    rec = _run("micromm/fork", {"h": 1}, "baseline", iterations=10)
    it = rec.counts.iterations
    assert it.constant is True and it.extrapolated and it.executed == 3
    assert rec.counts.events.counts["fork"] == 10
    assert rec.counts.events.counts["copy_pte"] == 10 * MAPPING_SIZE["small"] // 4096


def test_munmap_zaps_every_pte_once() -> None:
    """micromm/munmap small: one munmap per iteration zaps all 2048 PTEs."""
    rec = _run("micromm/munmap", {"h": 0}, "v5-batch", iterations=2)
    ev = rec.counts.events.counts
    assert ev["munmap"] == 2
    assert ev["zap_pte"] == 2 * MAPPING_SIZE["small"] // 4096
    assert rec.counts.iterations.constant is True


# --- test_vmalloc --------------------------------------------------------------------------------


def test_fix_size_one_page_per_iteration() -> None:
    """fix_size_alloc_test p:1, 40 loops: 40 areas, 40 data pages allocated and freed."""
    rec = _run("test_vmalloc/fix_size_alloc_test", {"p": 1, "h": 0}, "v5-batch", iterations=40)
    ev = rec.counts.events.counts
    assert rec.counts.iterations.executed == 40
    assert ev["vmap_area_alloc"] == 40
    assert ev["page_free"] == 40
    # map and unmap are one lazy-MMU section each
    assert ev["lazy_mmu_section"] == 80
    assert ev["kpkeys_lazy_mmu_switch"] == 160


def test_fix_size_stops_at_the_end_of_a_purge_period() -> None:
    """p:256: the lazy purge fires every 64 areas (64 x 257 pages > 16384): small runs 64."""
    rec = run_workload(
        Benchmark("test_vmalloc/fix_size_alloc_test", {"p": 256, "h": 0}),
        _cfg("baseline"),
        "small",
        0,
    )
    ev = rec.counts.events.counts
    assert rec.counts.iterations.executed == 64
    assert rec.counts.notes["periods"] == 1
    assert ev["vmap_purge"] == 64
    assert ev["tlbi_all"] == 1


def test_vm_map_ram_pages_are_allocated_outside_the_measurement() -> None:
    """vm_map_ram_test: the page is allocated once, before counting; no page allocator calls."""
    rec = _run("test_vmalloc/vm_map_ram_test", {"p": 1, "h": 0}, "baseline", iterations=30)
    ev = rec.counts.events.counts
    assert "page_free" not in ev
    assert ev.get("page_alloc", 0) <= 2  # only page-table pages for the first vmap block


def test_random_sizes_are_the_same_for_a_config_and_its_baseline() -> None:
    """random_size_alloc_test draws its sizes from the run's seed: same page counts in both runs."""
    a = _run("test_vmalloc/random_size_alloc_test", {"p": 1, "h": 0}, "v5-batch", 12)
    b = _run("test_vmalloc/random_size_alloc_test", {"p": 1, "h": 0}, "baseline", 12)
    assert a.counts.events.counts["page_free"] == b.counts.events.counts["page_free"]
    assert a.counts.events.counts["vmap_area_alloc"] == 12


def test_vmalloc_params() -> None:
    """The posted test_vmalloc variants, as the series lists them."""
    assert FIX_SIZE_ALLOC_TEST.param_sets("full") == [
        {"p": 1, "h": 0},
        {"p": 4, "h": 0},
        {"p": 16, "h": 0},
        {"p": 64, "h": 0},
        {"p": 256, "h": 0},
        {"p": 16, "h": 1},
        {"p": 64, "h": 1},
        {"p": 256, "h": 1},
    ]
    assert VM_MAP_RAM_TEST.param_sets("full") == [{"p": 1, "h": 0}]


# --- kernbench -----------------------------------------------------------------------------------


def test_kernbench_one_job_forks_execs_and_exits_once() -> None:
    """One measured job: 1 fork, 1 exit, and one munmap per early-unmapped region (3)."""
    rec = _run("kernbench", {}, "v5-batch", iterations=1)
    ev = rec.counts.events.counts
    assert ev["fork"] == 1
    assert ev["exit"] == 1
    assert ev["munmap"] == 3
    assert ev["page_fault"] >= rec.counts.notes["touched_pages"]


def test_default_mix_is_valid() -> None:
    """The shipped mix parses and has file and anonymous regions."""
    mix = default_mix()
    assert {r.kind for r in mix.region} == {"file", "anon"}
    assert KERNBENCH.mix == mix


def test_mix_unknown_key_is_named(tmp_path: pathlib.Path) -> None:
    """A mix file with an unknown key is refused with the key's name."""
    text = pathlib.Path(workloads_pkg.__file__).parent.parent / "data/kernbench_mix.toml"
    bad = tmp_path / "mix.toml"
    bad.write_text("bogus = 1\n" + text.read_text())
    with pytest.raises(ToolError, match=r"mix.toml: unknown key 'bogus'"):
        load_mix(bad)


def test_mix_bad_distribution_is_named() -> None:
    """A lognormal without a median is refused naming the region and the field."""
    text = """
name = "x"
jobs_full = 1
jobs_small = 1
[parent]
anon_kib = 0
file_kib = 0
[[region]]
what = "r"
kind = "anon"
count = 1
size_kib = { dist = "lognormal", sigma = 1.0, min = 4, max = 8 }
touch = 0.5
"""
    with pytest.raises(
        ToolError, match=r"x.toml: region\[0\].size_kib: lognormal needs a positive 'median'"
    ):
        _parse(text, "x.toml")


# --- honesty -------------------------------------------------------------------------------------


def test_workloads_never_emit_events() -> None:
    """No workload module calls emit(): every event comes from the model's kernel code."""
    root = pathlib.Path(workloads_pkg.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("emit", "on_event"), f"{path.name} calls {node.attr}"


def test_baseline_is_the_same_kernel_with_the_feature_off() -> None:
    """baseline_of() flips only the feature (and normalises the kpkeys-only batching knob)."""
    cfg = _cfg("v7")
    base = baseline_of(cfg)
    assert base == replace(cfg, kpkeys_hardened_pgtables=False, lazy_mmu_batching=True)
    assert baseline_of(_cfg("v5-nobatch")) == _cfg("baseline")


def test_rng_is_seeded_per_run() -> None:
    """Two runs with the same seed give identical counts."""
    a = _run("test_vmalloc/random_size_alloc_test", {"p": 1, "h": 0}, "baseline", 5)
    b = _run("test_vmalloc/random_size_alloc_test", {"p": 1, "h": 0}, "baseline", 5)
    assert a.counts.events == b.counts.events


# --- each configuration's counters, pinned -----------------------------------------------------

#: v6-pte and v7 (both with a PTE-mapped linear map) count the same events.
_PINNED_V6_PTE = {
    "change_memory_common": 7,
    "copy_pte": 2048,
    "dsb": 29,
    "folio_dup_rmap_ptes": 4,
    "fork": 1,
    "isb": 47,
    "kpkeys_guard_enter": 6,
    "kpkeys_lazy_mmu_switch": 22,
    "kpkeys_restore": 17,
    "kpkeys_set_level": 17,
    "lazy_mmu_section": 11,
    "noblock_alloc": 7,
    "page_alloc": 7,
    "page_zero": 7,
    "pgtable_alloc": 7,
    "pgtable_alloc_pgd": 1,
    "pgtable_alloc_pmd": 1,
    "pgtable_alloc_pte": 4,
    "pgtable_alloc_pud": 1,
    "pkey_reg_write": 34,
    "pt_read": 2097,
    "pt_write": 4109,
    "tlbi_asid": 1,
    "tlbi_va": 7,
    "translation_miss": 14,
    "walk_access": 56,
}

#: micromm/fork small, h:1, one fork, seed 0 (regenerate deliberately when the kernel changes).
PINNED = {
    "baseline": {
        "copy_pte": 2048,
        "dsb": 8,
        "folio_dup_rmap_ptes": 4,
        "fork": 1,
        "isb": 6,
        "lazy_mmu_section": 4,
        "page_alloc": 7,
        "page_zero": 7,
        "pgtable_alloc": 7,
        "pgtable_alloc_pgd": 1,
        "pgtable_alloc_pmd": 1,
        "pgtable_alloc_pte": 4,
        "pgtable_alloc_pud": 1,
        "pt_read": 2062,
        "pt_write": 4102,
        "tlbi_asid": 1,
        "translation_miss": 7,
        "walk_access": 28,
    },
    "v5-nobatch": {
        "change_memory_common": 7,
        "copy_pte": 2048,
        "dsb": 29,
        "folio_dup_rmap_ptes": 4,
        "fork": 1,
        "isb": 8238,
        "kpkeys_guard_enter": 4109,
        "kpkeys_restore": 4109,
        "kpkeys_set_level": 4109,
        "lazy_mmu_section": 11,
        "page_alloc": 7,
        "page_zero": 7,
        "pgtable_alloc": 7,
        "pgtable_alloc_pgd": 1,
        "pgtable_alloc_pmd": 1,
        "pgtable_alloc_pte": 4,
        "pgtable_alloc_pud": 1,
        "pkey_reg_write": 8218,
        "pt_read": 2097,
        "pt_write": 4109,
        "tlbi_asid": 1,
        "tlbi_va": 7,
        "translation_miss": 14,
        "walk_access": 56,
    },
    "v5-batch": {
        "change_memory_common": 7,
        "copy_pte": 2048,
        "dsb": 29,
        "folio_dup_rmap_ptes": 4,
        "fork": 1,
        "isb": 47,
        "kpkeys_guard_enter": 6,
        "kpkeys_lazy_mmu_switch": 22,
        "kpkeys_restore": 17,
        "kpkeys_set_level": 17,
        "lazy_mmu_section": 11,
        "page_alloc": 7,
        "page_zero": 7,
        "pgtable_alloc": 7,
        "pgtable_alloc_pgd": 1,
        "pgtable_alloc_pmd": 1,
        "pgtable_alloc_pte": 4,
        "pgtable_alloc_pud": 1,
        "pkey_reg_write": 34,
        "pt_read": 2097,
        "pt_write": 4109,
        "tlbi_asid": 1,
        "tlbi_va": 7,
        "translation_miss": 14,
        "walk_access": 56,
    },
    "baseline-bbml2": {
        "copy_pte": 2048,
        "dsb": 8,
        "folio_dup_rmap_ptes": 4,
        "fork": 1,
        "isb": 6,
        "lazy_mmu_section": 4,
        "page_alloc": 7,
        "page_zero": 7,
        "pgtable_alloc": 7,
        "pgtable_alloc_pgd": 1,
        "pgtable_alloc_pmd": 1,
        "pgtable_alloc_pte": 4,
        "pgtable_alloc_pud": 1,
        "pt_read": 2062,
        "pt_write": 4102,
        "tlbi_asid": 1,
    },
    "v6": {
        "copy_pte": 2048,
        "dsb": 8,
        "folio_dup_rmap_ptes": 4,
        "fork": 1,
        "isb": 40,
        "kpkeys_guard_enter": 6,
        "kpkeys_lazy_mmu_switch": 8,
        "kpkeys_restore": 17,
        "kpkeys_set_level": 17,
        "lazy_mmu_section": 4,
        "page_zero": 7,
        "pba_alloc": 7,
        "pgtable_alloc": 7,
        "pgtable_alloc_pgd": 1,
        "pgtable_alloc_pmd": 1,
        "pgtable_alloc_pte": 4,
        "pgtable_alloc_pud": 1,
        "pkey_reg_write": 34,
        "pt_read": 2062,
        "pt_write": 4102,
        "tlbi_asid": 1,
    },
    "v6-pte": _PINNED_V6_PTE,
    "v7": _PINNED_V6_PTE,
}


@pytest.mark.parametrize("config", sorted(PINNED))
def test_config_counters_are_pinned(config: str) -> None:
    """One small fork under each named configuration gives exactly the pinned counters."""
    rec = _run("micromm/fork", {"h": 1}, config, iterations=1)
    assert dict(rec.counts.events.counts) == PINNED[config]


def test_pinned_counters_obey_the_batching_rules() -> None:
    """In the pinned runs: nobatch = 2 writes per guard; batch = 2 per section + 2 per guard."""
    nb = PINNED["v5-nobatch"]
    assert nb["pkey_reg_write"] == 2 * nb["kpkeys_guard_enter"]
    for name in ("v5-batch", "v6-pte", "v7"):
        b = PINNED[name]
        assert b["kpkeys_lazy_mmu_switch"] == 2 * b["lazy_mmu_section"]
        assert b["pkey_reg_write"] == b["kpkeys_lazy_mmu_switch"] + 2 * b["kpkeys_guard_enter"]
    assert "pkey_reg_write" not in PINNED["baseline"]
    assert "pkey_reg_write" not in PINNED["baseline-bbml2"]


# --- baseline events added with the cost model's baseline work, checked by hand -----------------


def _counter(k: Kernel) -> CostInstrument:
    c = CostInstrument()
    k.machine.instruments.add(c)
    return c


def test_pt_read_counts_entries_and_read_operations() -> None:
    """ptep_get: 1 entry, 1 read; ptep_get_array(7): 7 entries, 1 read; updates read nothing."""
    from kpkeys_sim.kernel.mm.page_alloc import alloc_pages
    from kpkeys_sim.kernel.mm.pgtable import (
        ptep_get,
        ptep_get_and_clear_array,
        ptep_get_array,
        ptep_set_access_flags,
    )

    k = boot(_cfg("baseline", 256 << 20))
    c = _counter(k)
    assert k.zone is not None
    pfn = alloc_pages(k.zone, 0, 0)
    assert pfn is not None
    table = k.pgt.va(pfn << k.pgt.PAGE_SHIFT)  # a plain kernel page: no guard, no pkey
    e = measure(c, lambda: ptep_get(k, table))
    assert (e.counts.get("pt_read"), e.calls.get("pt_read")) == (1, 1)
    e = measure(c, lambda: ptep_get_array(k, table + 8, 7))
    assert (e.counts.get("pt_read"), e.calls.get("pt_read")) == (7, 1)
    # An xchg is part of the entry's update: pt_write only.
    e = measure(c, lambda: ptep_get_and_clear_array(k, table, 4))
    assert "pt_read" not in e.counts and e.counts["pt_write"] == 4
    # ptep_set_access_flags with the value already there: only the read (pte_same return).
    e = measure(c, lambda: ptep_set_access_flags(k, table, 0, False))
    assert (e.counts.get("pt_read"), e.counts.get("pt_write")) == (1, None)


def test_pba_prepare_page_emits_one_page_zero_per_zeroed_ptp() -> None:
    """v6: a PTP from the PBA cache with __GFP_ZERO is one clear_page: page_zero 1; without, 0."""
    from kpkeys_sim.kernel.kpkeys.pba import pba_pgtable_alloc, pba_pgtable_free
    from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL, GFP_PGTABLE_KERNEL

    k = boot(_cfg("v6", 256 << 20))
    c = _counter(k)
    box: list[int | None] = []
    e = measure(c, lambda: box.append(pba_pgtable_alloc(k, GFP_PGTABLE_KERNEL)))
    assert box[0] is not None
    assert e.counts.get("page_zero") == 1 and e.counts.get("pba_alloc") == 1
    pba_pgtable_free(k, box[0])
    e = measure(c, lambda: box.append(pba_pgtable_alloc(k, GFP_KERNEL)))
    assert box[1] is not None and "page_zero" not in e.counts
    pba_pgtable_free(k, box[1])


def test_set_memory_pkey_is_one_change_memory_common_call() -> None:
    """v7 (PTE-mapped linear map): set_memory_pkey of one page is one __change_memory_common:
    no split; the pageattr walk reads the pgd entry, the pgd entry again (pud_offset), the
    pud entry, one pmd entry and one pte entry (5 reads), writes 1 PTE and flushes 1 VA."""
    from kpkeys_sim.kernel.mm.linear_map import set_memory_pkey
    from kpkeys_sim.kernel.mm.page_alloc import alloc_pages

    k = boot(_cfg("v7", 256 << 20))
    c = _counter(k)
    assert k.zone is not None
    pfn = alloc_pages(k.zone, 0, 0)
    assert pfn is not None
    va = k.pgt.va(pfn << k.pgt.PAGE_SHIFT)
    e = measure(c, lambda: set_memory_pkey(k, va, 1, 0))
    assert e.counts["change_memory_common"] == 1
    assert (e.counts["pt_read"], e.calls["pt_read"]) == (5, 5)
    assert e.counts["pt_write"] == 1 and e.counts["tlbi_va"] == 1
    assert "linear_map_split" not in e.counts


def _huge_process(k: Kernel) -> tuple[object, int]:
    from kpkeys_sim.kernel.mm.fork import create_user_task
    from kpkeys_sim.kernel.mm.mmap import (
        MADV_HUGEPAGE,
        MAP_ANONYMOUS,
        MAP_PRIVATE,
        PROT_READ,
        PROT_WRITE,
        do_madvise,
        do_mmap,
        mm_populate,
    )
    from kpkeys_sim.kernel.sched import schedule_to

    p = create_user_task(k, "huge")
    schedule_to(k, p)
    mm = p.mm
    assert mm is not None
    size = k.pgt.PMD_SIZE
    addr = do_mmap(k, mm, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert addr > 0 and addr % size == 0
    assert do_madvise(k, mm, addr, size, MADV_HUGEPAGE) == 0
    assert mm_populate(k, mm, addr, size) == 0
    return p, addr


def test_fork_and_zap_batch_rmap_work_per_folio() -> None:
    """One PMD-order folio mapped by a full PTE table, then page 5 COW-broken in the parent:
    the table maps folio[0..4], a small page, folio[6..511].  Fork copies 512 PTEs in 3
    per-folio batches (folio_pte_batch stops at the foreign pfn); munmap zaps 512 PTEs in 3."""
    from kpkeys_sim.kernel.mm.fork import do_exit, kernel_clone, kernel_wait
    from kpkeys_sim.kernel.mm.memory import user_write
    from kpkeys_sim.kernel.mm.mmap import do_munmap
    from kpkeys_sim.kernel.sched import schedule_to

    k = boot(_cfg("baseline", 256 << 20))
    c = _counter(k)
    parent, addr = _huge_process(k)
    box: list[object] = []
    e = measure(c, lambda: box.append(kernel_clone(k)))
    assert (e.counts["copy_pte"], e.counts["folio_dup_rmap_ptes"]) == (512, 1)
    user_write(k, addr + 5 * k.pgt.PAGE_SIZE, b"x")  # wp_page_copy: an order-0 page at PTE 5
    e = measure(c, lambda: box.append(kernel_clone(k)))
    assert (e.counts["copy_pte"], e.counts["folio_dup_rmap_ptes"]) == (512, 3)
    for child in box:
        schedule_to(k, child)  # type: ignore[arg-type]
        do_exit(k, 0, next_task=parent)  # type: ignore[arg-type]
        assert kernel_wait(k, parent, child.pid) is not None  # type: ignore[arg-type,attr-defined]
    mm = parent.mm  # type: ignore[attr-defined]
    e = measure(c, lambda: do_munmap(k, mm, addr, k.pgt.PMD_SIZE))
    assert (e.counts["zap_pte"], e.counts["folio_remove_rmap_ptes"]) == (512, 3)


@pytest.mark.parametrize("h, batches", [(0, 2048), (1, 4)])
def test_micromm_h0_and_h1_differ_by_per_folio_batching(h: int, batches: int) -> None:
    """Small size (8 MiB = 2048 PTEs in 4 tables): h:0 has one rmap batch per PTE, h:1 one
    per table (each table maps one PMD-order folio), for both fork and munmap."""
    fork = _run("micromm/fork", {"h": h}, "baseline", iterations=1).counts.events.counts
    assert (fork["copy_pte"], fork["folio_dup_rmap_ptes"]) == (2048, batches)
    unmap = _run("micromm/munmap", {"h": h}, "baseline", iterations=1).counts.events.counts
    assert (unmap["zap_pte"], unmap["folio_remove_rmap_ptes"]) == (2048, batches)


def test_vmalloc_vfree_bookkeeping_events() -> None:
    """vmalloc(1 page) + vfree: kzalloc(vm_struct) + kmalloc(pages array of 8 bytes); vfree:
    find_unlink_vmap_area, free_vmap_area_noflush (lazy tree), kvfree(pages) + kfree(vm).
    600 pages: the 4800-byte pages array is vmalloc'ed in Linux, so one kmalloc/kfree."""
    from kpkeys_sim.kernel.mm.vmalloc import vfree, vmalloc

    k = boot(_cfg("baseline", 256 << 20))
    c = _counter(k)
    page = k.pgt.PAGE_SIZE
    for nr, objs in ((1, 2), (600, 1)):
        box: list[int | None] = []

        def alloc(nr: int = nr, box: list[int | None] = box) -> None:
            box.append(vmalloc(k, nr * page))

        e = measure(c, alloc)
        ptr = box[0]
        assert ptr
        assert e.counts.get("vmalloc_kmalloc") == objs
        assert e.counts.get("vmap_area_alloc") == 1
        e = measure(c, lambda ptr=ptr: vfree(k, ptr))
        assert e.counts.get("vmalloc_kfree") == objs
        assert e.counts.get("find_unlink_vmap_area") == 1
        assert e.counts.get("free_vmap_area_noflush") == 1


def test_vm_map_ram_vmap_block_events() -> None:
    """vm_map_ram(1 page) / vm_unmap_ram: one vb_alloc and one vb_free per call; the first
    call also creates the CPU's vmap block (kmalloc of the vmap_block + its vmap area)."""
    from kpkeys_sim.kernel.mm.page_alloc import alloc_pages
    from kpkeys_sim.kernel.mm.vmalloc import vm_map_ram, vm_unmap_ram

    k = boot(_cfg("baseline", 256 << 20))
    c = _counter(k)
    assert k.zone is not None
    pfn = alloc_pages(k.zone, 0, 0)
    assert pfn is not None
    expect_first = {"vb_alloc": 1, "vb_free": 1, "vmalloc_kmalloc": 1, "vmap_area_alloc": 1}
    expect_next = {"vb_alloc": 1, "vb_free": 1}
    for expect in (expect_first, expect_next):

        def once() -> None:
            addr = vm_map_ram(k, [pfn], 1)
            assert addr
            vm_unmap_ram(k, addr, 1)

        e = measure(c, once)
        got = {
            kind: e.counts[kind]
            for kind in ("vb_alloc", "vb_free", "vmalloc_kmalloc", "vmap_area_alloc")
            if kind in e.counts
        }
        assert got == expect
        assert "find_unlink_vmap_area" not in e.counts and "vmalloc_kfree" not in e.counts
