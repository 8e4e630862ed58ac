"""vmalloc/vfree, vmap, vm_map_ram, huge mappings and the lazy purge of freed vmap areas."""

from __future__ import annotations

import pytest

from kpkeys_sim.kernel.arch.arm64_pgtable import (
    PAGE_KERNEL,
    PTE_CONT,
    page_address,
    pmd_leaf,
)
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
from kpkeys_sim.kernel.mm.mm_types import VM_MAP
from kpkeys_sim.kernel.mm.page import PG_table
from kpkeys_sim.kernel.mm.page_alloc import __free_page, alloc_pages, nr_free_pages
from kpkeys_sim.kernel.mm.pgtable import pgd_offset_k, pmd_offset, ptep_get, pud_offset
from kpkeys_sim.kernel.mm.vmalloc import (
    VMAP_BBMAP_BITS,
    VMAP_MAX_ALLOC,
    find_vm_area,
    is_vmalloc_addr,
    lazy_max_pages,
    purge_vmap_area_lazy,
    vfree,
    vm_map_ram,
    vm_unmap_aliases,
    vm_unmap_ram,
    vmalloc,
    vmalloc_huge,
    vmalloc_to_page,
    vmap,
    vunmap,
    vzalloc,
)
from kpkeys_sim.machine import CountingInstrument, Fault

PAGE = 4096


def _boot(**kw: object) -> tuple[Kernel, CountingInstrument]:
    counter = CountingInstrument()
    cfg = KernelConfig(ram_size=256 << 20, **kw)  # type: ignore[arg-type]
    return boot(cfg, instruments=[counter]), counter


@pytest.fixture
def kk() -> tuple[Kernel, CountingInstrument]:
    return _boot(kpkeys_hardened_pgtables=False)


def _pmd(k: Kernel, addr: int) -> int:
    pudp = pud_offset(k, pgd_offset_k(k, addr), addr)
    return k.machine.load_u64(k.cpu, pmd_offset(k, pudp, addr))


def _leaf_pte(k: Kernel, addr: int) -> int:
    pmd = _pmd(k, addr)
    g = k.pgt
    return ptep_get(k, g.va(pmd & ((1 << 48) - 1) & ~0xFFF) + 8 * g.pte_index(addr))


def _free(k: Kernel) -> int:
    assert k.zone is not None
    return nr_free_pages(k.zone)


def test_vmalloc_data_lands_in_the_backing_pages(kk: tuple[Kernel, CountingInstrument]) -> None:
    """Bytes stored through a vmalloc address are in the page vmalloc_to_page returns."""
    k, _ = kk
    a = vmalloc(k, 5 * PAGE)
    assert a is not None and is_vmalloc_addr(k, a)
    for i in range(5):
        k.machine.store_bytes(k.cpu, a + i * PAGE + 3, bytes([0xA0 + i]))
    for i in range(5):
        pfn = vmalloc_to_page(k, a + i * PAGE)
        assert pfn is not None
        got = k.machine.load_bytes(k.cpu, page_address(k, pfn) + 3, 1)
        assert got == bytes([0xA0 + i])
    vm = find_vm_area(k, a)
    assert vm is not None and vm.size == 6 * PAGE and vm.nr_pages == 5  # + guard page
    vfree(k, a)


def test_guard_page_separates_areas(kk: tuple[Kernel, CountingInstrument]) -> None:
    """The page after a vmalloc area is never mapped: touching it faults."""
    k, _ = kk
    a = vmalloc(k, 2 * PAGE)
    b = vmalloc(k, PAGE)
    assert a is not None and b is not None
    assert b >= a + 3 * PAGE
    with pytest.raises(Fault):
        k.machine.load_bytes(k.cpu, a + 2 * PAGE, 1)


def test_vfree_is_flushed_lazily_a_stale_tlb_entry_survives_until_the_purge(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """After vfree the PTE is gone but a cached translation still works until the purge."""
    k, counter = kk
    a = vmalloc(k, PAGE)
    assert a is not None
    k.machine.store_bytes(k.cpu, a, b"live")  # caches the translation
    free0 = _free(k)
    flushes = counter.counts["tlbi_va"] + counter.counts["tlbi_all"]
    vfree(k, a)
    assert _free(k) == free0 + 1  # the page is freed at once
    assert vmalloc_to_page(k, a) is None  # the page tables no longer map it
    assert counter.counts["tlbi_va"] + counter.counts["tlbi_all"] == flushes
    assert k.machine.load_bytes(k.cpu, a, 4) == b"live"  # the stale entry still translates
    with k.on_cpu(1), pytest.raises(Fault):
        k.machine.load_bytes(k.cpu, a, 4)  # a CPU without the entry walks and faults
    purge_vmap_area_lazy(k)
    assert counter.counts["vmap_purge"] == 1
    with pytest.raises(Fault):
        k.machine.load_bytes(k.cpu, a, 4)


def test_lazy_purge_runs_once_lazy_max_pages_are_freed(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """Freed areas accumulate until lazy_max_pages, then one purge flushes them all."""
    k, counter = kk
    assert lazy_max_pages(k) == 2 * (32 << 20) // PAGE  # fls(2 CPUs) = 2
    size = 1 << 20  # 256 pages + 1 guard
    per_area = size // PAGE + 1
    needed = lazy_max_pages(k) // per_area + 1
    for _ in range(needed - 1):
        a = vmalloc(k, size)
        assert a is not None
        vfree(k, a)
    assert counter.counts["vmap_purge"] == 0
    a = vmalloc(k, size)
    assert a is not None
    vfree(k, a)
    assert counter.counts["vmap_purge"] == needed
    assert k.vmap.vmap_lazy_nr == 0 and k.vmap.nr_purges == 1


def test_purged_space_is_reused_lowest_first(kk: tuple[Kernel, CountingInstrument]) -> None:
    """After a purge the freed range is free again and the next area takes it."""
    k, _ = kk
    a = vmalloc(k, 3 * PAGE)
    assert a is not None
    vfree(k, a)
    b = vmalloc(k, 3 * PAGE)
    assert b is not None and b != a  # a is still lazily held
    purge_vmap_area_lazy(k)
    c = vmalloc(k, 3 * PAGE)
    assert c == a


def test_vmalloc_keeps_its_page_tables_and_leaks_no_pages(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """vfree returns every data page; the kernel page tables built for vmalloc stay."""
    k, _ = kk
    assert k.mem_map is not None
    a = vmalloc(k, 8 * PAGE)  # the first use may build kernel page tables
    assert a is not None
    vfree(k, a)
    purge_vmap_area_lazy(k)
    free0 = _free(k)
    tables0 = k.mem_map.count_flag(PG_table)
    for n in (1, 7, 300, 600):
        b = vzalloc(k, n * PAGE)
        assert b is not None
        k.machine.store_bytes(k.cpu, b + (n - 1) * PAGE, b"end")
        vfree(k, b)
    purge_vmap_area_lazy(k)
    grown = k.mem_map.count_flag(PG_table) - tables0
    assert grown >= 0
    assert _free(k) == free0 - grown


def test_huge_vmalloc_is_pmd_mapped(kk: tuple[Kernel, CountingInstrument]) -> None:
    """vmalloc_huge of 4 MiB: PMD-aligned, two PMD blocks, data round-trips."""
    k, _ = kk
    g = k.pgt
    a = vmalloc_huge(k, 4 << 20, GFP_KERNEL)
    assert a is not None and a % g.PMD_SIZE == 0
    assert pmd_leaf(_pmd(k, a)) and pmd_leaf(_pmd(k, a + g.PMD_SIZE))
    k.machine.store_bytes(k.cpu, a + (3 << 20) + 11, b"huge")
    pfn = vmalloc_to_page(k, a + (3 << 20) + 11)
    assert pfn is not None
    assert k.machine.load_bytes(k.cpu, page_address(k, pfn) + 11, 4) == b"huge"
    free0 = _free(k)
    vfree(k, a)
    assert _free(k) == free0 + 1024


def test_huge_vmalloc_below_pmd_size_uses_contiguous_ptes(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """vmalloc_huge of 64 KiB (CONT_PTE_SIZE): 16 PTEs with the contiguous hint."""
    k, _ = kk
    g = k.pgt
    a = vmalloc_huge(k, g.CONT_PTE_SIZE, GFP_KERNEL)
    assert a is not None and a % g.CONT_PTE_SIZE == 0
    ptes = [_leaf_pte(k, a + i * PAGE) for i in range(g.CONT_PTES)]
    assert all(p & PTE_CONT for p in ptes)
    assert len({g.pte_pfn(p) - i for i, p in enumerate(ptes)}) == 1  # physically contiguous
    small = vmalloc(k, g.CONT_PTE_SIZE)
    assert small is not None and not _leaf_pte(k, small) & PTE_CONT


def test_vmap_maps_existing_pages(kk: tuple[Kernel, CountingInstrument]) -> None:
    """Data written through a vmap address appears in the pages' linear-map alias."""
    k, _ = kk
    assert k.zone is not None
    pages = [alloc_pages(k.zone, GFP_KERNEL, 0) for _ in range(3)]
    assert all(p is not None for p in pages)
    pfns = [p for p in pages if p is not None]
    a = vmap(k, pfns, 3, VM_MAP, PAGE_KERNEL)
    assert a is not None
    k.machine.store_bytes(k.cpu, a + 2 * PAGE + 9, b"vmap")
    assert k.machine.load_bytes(k.cpu, page_address(k, pfns[2]) + 9, 4) == b"vmap"
    vunmap(k, a)
    assert vmalloc_to_page(k, a) is None
    for p in pfns:
        __free_page(k.zone, p)


def test_vm_map_ram_small_requests_share_a_vmap_block(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """Up to VMAP_MAX_ALLOC pages come from one per-CPU block; larger ones get an area."""
    k, counter = kk
    assert k.zone is not None
    pfns = [p for p in (alloc_pages(k.zone, GFP_KERNEL, 0) for _ in range(80)) if p is not None]
    a = vm_map_ram(k, pfns, 1)
    b = vm_map_ram(k, pfns, 3)  # rounded up to 4 pages
    c = vm_map_ram(k, pfns, 1)
    assert a is not None and b is not None and c is not None
    assert (b - a, c - b) == (PAGE, 4 * PAGE)
    assert a % (VMAP_BBMAP_BITS * PAGE) == 0
    k.machine.store_bytes(k.cpu, b + 2 * PAGE, b"ram")
    assert k.machine.load_bytes(k.cpu, page_address(k, pfns[2]), 3) == b"ram"
    areas = counter.counts["vmap_area_alloc"]
    big = vm_map_ram(k, pfns, VMAP_MAX_ALLOC + 1)
    assert big is not None and counter.counts["vmap_area_alloc"] == areas + 1
    for addr, n in ((a, 1), (b, 3), (c, 1), (big, VMAP_MAX_ALLOC + 1)):
        vm_unmap_ram(k, addr, n)
        assert vmalloc_to_page(k, addr) is None
    vm_unmap_aliases(k)
    for p in pfns:
        __free_page(k.zone, p)


def test_fully_dirty_vmap_block_is_freed_lazily(kk: tuple[Kernel, CountingInstrument]) -> None:
    """A block whose every page was mapped and unmapped goes to the purge list."""
    k, _ = kk
    assert k.zone is not None
    pfn = alloc_pages(k.zone, GFP_KERNEL, 0)
    assert pfn is not None
    first = vm_map_ram(k, [pfn], 1)
    assert first is not None
    vm_unmap_ram(k, first, 1)
    for _ in range(VMAP_BBMAP_BITS - 1):
        addr = vm_map_ram(k, [pfn], 1)
        assert addr is not None
        vm_unmap_ram(k, addr, 1)
    assert not k.vmap.vmap_blocks
    assert k.vmap.vmap_lazy_nr == VMAP_BBMAP_BITS
    __free_page(k.zone, pfn)


def test_vfree_of_an_unknown_address_is_a_bug(kk: tuple[Kernel, CountingInstrument]) -> None:
    """vfree of an address that starts no area raises KernelBug; vfree(NULL) is fine."""
    k, _ = kk
    vfree(k, 0)
    a = vmalloc(k, PAGE)
    assert a is not None
    with pytest.raises(KernelBug):
        vfree(k, a + PAGE)


def test_vmalloc_with_hardened_pgtables_writes_tables_without_faults() -> None:
    """Feature on: vmalloc/vfree write kernel PTEs inside lazy sections, no overlay fault."""
    k, counter = _boot(kpkeys_hardened_pgtables=True)
    before = counter.counts["lazy_mmu_section"]
    a = vmalloc(k, 3 * PAGE)
    assert a is not None
    k.machine.store_bytes(k.cpu, a, b"x")
    vfree(k, a)
    assert counter.faults == 0
    assert counter.counts["lazy_mmu_section"] - before == 2  # vmap_pte_range, vunmap_pte_range
