"""Page-table format, geometry, write/walk helpers, pgalloc, TLB flushes and mm_types."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.strategies import pte_descriptors

from kpkeys_sim.kernel.arch import arm64_pgtable as pt
from kpkeys_sim.kernel.arch.arm64_pgtable import (
    PAGE_KERNEL,
    PAGE_KERNEL_RO,
    PAGE_NONE,
    PAGE_READONLY,
    PAGE_SHARED,
    PTE_AF,
    PTE_CONT,
    PTE_DIRTY,
    PTE_PO_IDX_0,
    PTE_PO_IDX_2,
    PTE_RDONLY,
    PTE_WRITE,
    PgtableGeometry,
    __is_lm_address,
    __pa,
    __va,
    lm_alias,
    page_address,
    virt_to_pfn,
    vm_get_page_prot,
)
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.errors import ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm import pgalloc as pa
from kpkeys_sim.kernel.mm import pgtable as pg
from kpkeys_sim.kernel.mm.fixmap import in_swapper_pgdir
from kpkeys_sim.kernel.mm.gfp import GFP_PGTABLE_KERNEL
from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_mode
from kpkeys_sim.kernel.mm.mm_types import (
    VM_MAYWRITE,
    VM_PKEY_BIT0,
    VM_PKEY_BIT2,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    find_vma,
    find_vma_intersection,
    insert_vm_struct,
    is_cow_mapping,
    mm_struct,
    remove_vma_from_mm,
    vm_area_struct,
    vma_lookup,
)
from kpkeys_sim.kernel.mm.page import PG_table
from kpkeys_sim.kernel.mm.tlbflush import (
    flush_tlb_kernel_range,
    flush_tlb_mm,
    flush_tlb_page,
    flush_tlb_range,
)
from kpkeys_sim.machine import CountingInstrument
from kpkeys_sim.machine.mmu import Geometry

MiB = 1 << 20
GiB = 1 << 30

# --- geometry and layout -------------------------------------------------------------------------


@pytest.mark.parametrize(
    (
        "ps",
        "levels",
        "ptrs_pgd",
        "ptrs",
        "pmd_shift",
        "pud_shift",
        "cont_ptes",
        "cont_pmds",
        "folded",
    ),
    [
        (4096, 4, 512, 512, 21, 30, 16, 16, False),
        (16384, 4, 2, 2048, 25, 36, 128, 32, False),
        (65536, 3, 64, 8192, 29, 42, 32, 32, True),
    ],
)
def test_geometry_matches_arm64_48bit(
    ps: int,
    levels: int,
    ptrs_pgd: int,
    ptrs: int,
    pmd_shift: int,
    pud_shift: int,
    cont_ptes: int,
    cont_pmds: int,
    folded: bool,
) -> None:
    """PgtableGeometry has Linux's 48-bit values for each granule and agrees with the MMU."""
    g = PgtableGeometry.for_page_size(ps)
    got = (g.CONFIG_PGTABLE_LEVELS, g.PTRS_PER_PGD, g.PTRS_PER_PTE, g.PTRS_PER_PMD)
    assert got == (levels, ptrs_pgd, ptrs, ptrs)
    got = (g.PMD_SHIFT, g.PUD_SHIFT, g.CONT_PTES, g.CONT_PMDS)
    assert got == (pmd_shift, pud_shift, cont_ptes, cont_pmds)
    assert g.mm_p4d_folded and g.mm_pud_folded is folded and not g.mm_pmd_folded
    sizes = (g.CONT_PTE_SIZE, g.CONT_PMD_SIZE, g.PMD_ORDER, g.MAX_DVM_OPS)
    assert sizes == (cont_ptes * ps, cont_pmds * g.PMD_SIZE, pmd_shift - g.PAGE_SHIFT, ptrs)
    assert g.pud_sect_supported is (ps == 4096)
    hw = Geometry.for_arch("arm64", ps)
    assert hw.start_level == g.pgd_level and hw.entries(g.pgd_level) == g.PTRS_PER_PGD
    assert hw.level_shift(2) == g.PMD_SHIFT and hw.level_shift(g.pgd_level) == g.PGDIR_SHIFT
    va = 0xFFFF_8000_1234_5678
    assert hw.index(va, g.pgd_level) == g.pgd_index(va)
    assert hw.index(va, 2) == g.pmd_index(va) and hw.index(va, 3) == g.pte_index(va)


@pytest.mark.parametrize(
    ("ps", "vmemmap"),
    [(4096, 0xFFFF_FC00_0000_0000), (16384, 0xFFFF_FF00_0000_0000), (65536, 0xFFFF_FFC0_0000_0000)],
)
def test_memory_layout_is_the_48bit_arm64_one(ps: int, vmemmap: int) -> None:
    """PAGE_OFFSET, KIMAGE_VADDR, vmalloc, fixmap and vmemmap follow arm64's memory.h."""
    g = PgtableGeometry.for_page_size(ps)
    assert g.PAGE_OFFSET == 0xFFFF_0000_0000_0000 and g.PAGE_END == 0xFFFF_8000_0000_0000
    assert g.KIMAGE_VADDR == g.VMALLOC_START == 0xFFFF_8000_8000_0000
    got = (g.VMEMMAP_START, g.VMEMMAP_SIZE)
    assert got == (vmemmap, (1 << 47) >> (g.PAGE_SHIFT - 6))
    assert g.VMALLOC_END < g.FIXADDR_START < g.FIXADDR_TOP < g.PCI_IO_START < g.VMEMMAP_START
    assert (g.FIXADDR_TOP - 1) & g.PMD_MASK == g.FIXADDR_START & g.PMD_MASK  # within one PMD
    if ps == 4096:
        assert g.VMALLOC_END == 0xFFFF_FBFF_F000_0000 and g.FIXADDR_TOP == 0xFFFF_FBFF_FE00_0000


def test_address_helpers_round_trip() -> None:
    """__va/__pa/page_address/virt_to_pfn/lm_alias agree; the image is not in the linear map."""
    k = boot(KernelConfig(ram_size=256 * MiB, kpkeys_hardened_pgtables=False))
    base = k.machine.mem.base
    assert __va(k, base) == k.pgt.PAGE_OFFSET
    assert __pa(k, __va(k, base + 0x1234)) == base + 0x1234
    pfn = (base >> 12) + 77
    assert virt_to_pfn(k, page_address(k, pfn)) == pfn
    img = k.kimage
    assert __pa(k, img._data) == img.pa + (img._data - img._text)
    assert lm_alias(k, img._data) == __va(k, __pa(k, img._data))
    assert __is_lm_address(k, __va(k, base)) and not __is_lm_address(k, img._text)


# --- value helpers -------------------------------------------------------------------------------


def test_pte_bit_semantics() -> None:
    """wrprotect keeps hardware-dirty state; mkwrite/mkdirty/mkclean follow asm/pgtable.h."""
    g = PgtableGeometry.for_page_size(4096)
    pte = g.pfn_pte(0x12345, PAGE_KERNEL)
    assert g.pte_pfn(pte) == 0x12345 and pt.pte_write(pte) and pt.pte_dirty(pte)
    wp = pt.pte_wrprotect(pte)
    assert not pt.pte_write(wp) and wp & PTE_RDONLY and wp & PTE_DIRTY and pt.pte_dirty(wp)
    assert pt.pte_mkwrite(wp) & PTE_WRITE and not pt.pte_mkwrite(wp) & PTE_RDONLY
    clean = pt.pte_mkclean(pt.pte_mkwrite(wp))
    assert not pt.pte_dirty(clean) and clean & PTE_RDONLY
    assert pt.pte_mkdirty(clean) == clean & ~PTE_RDONLY | PTE_DIRTY
    assert pt.pte_young(pte) and not pt.pte_young(pt.pte_mkold(pte))
    none = g.pfn_pte(5, PAGE_NONE)
    assert pt.pte_present(none) and not pt.pte_valid(none)
    assert pt.pte_valid_not_user(pte) and not pt.pte_valid_not_user(g.pfn_pte(5, PAGE_SHARED))
    assert PAGE_KERNEL_RO & PTE_RDONLY and not PAGE_KERNEL_RO & PTE_WRITE


def test_upper_level_value_helpers() -> None:
    """pmd/pud table, block (sect/leaf), bad and none predicates."""
    table = 0x4000_0000 | pt.PMD_TYPE_TABLE
    block = 0x4020_0000 | pt.PROT_SECT_NORMAL
    assert pt.pmd_table(table) and not pt.pmd_leaf(table) and not pt.pmd_bad(table)
    assert pt.pmd_sect(block) and pt.pmd_leaf(block) and pt.pmd_bad(block)
    assert pt.pud_leaf(block) and pt.pud_table(table) and pt.pmd_none(0) and pt.pud_none(0)
    assert pt.pmd_page_paddr(table) == 0x4000_0000
    g = PgtableGeometry.for_page_size(4096)
    assert g.pmd_pfn(block) == 0x4020_0000 >> 12
    assert pt.p4d_bad(block) and not pt.p4d_bad(table) and pt.p4d_present(table)


@given(pte_descriptors, st.integers(0, 7))
def test_vectorised_helpers_equal_scalar_ones(d: int, shift: int) -> None:
    """Every whole-table helper gives the scalar helper's answer entry by entry."""
    g = PgtableGeometry.for_page_size(4096)
    arr = np.array([d, d ^ (1 << shift), 0, pt.pte_wrprotect(d)], dtype=np.uint64)
    vals = [int(x) for x in arr]
    assert [int(x) for x in pt.ptes_wrprotect(arr)] == [pt.pte_wrprotect(x) for x in vals]
    assert [int(x) for x in pt.ptes_mkold(arr)] == [pt.pte_mkold(x) for x in vals]
    assert [int(x) for x in pt.ptes_mkclean(arr)] == [pt.pte_mkclean(x) for x in vals]
    assert list(pt.ptes_present_mask(arr)) == [pt.pte_present(x) for x in vals]
    assert list(pt.ptes_dirty_mask(arr)) == [pt.pte_dirty(x) for x in vals]
    assert list(pt.ptes_write_mask(arr)) == [pt.pte_write(x) for x in vals]
    assert list(pt.ptes_young_mask(arr)) == [pt.pte_young(x) for x in vals]
    assert list(pt.ptes_valid_mask(arr)) == [pt.pte_valid(x) for x in vals]
    assert list(pt.ptes_none_mask(arr)) == [pt.pte_none(x) for x in vals]
    assert [int(x) for x in g.ptes_pfn(arr)] == [g.pte_pfn(x) for x in vals]
    assert list(pt.ptes_special_mask(arr)) == [pt.pte_special(x) for x in vals]
    assert list(pt.ptes_valid_not_user_mask(arr)) == [pt.pte_valid_not_user(x) for x in vals]
    assert [int(x) for x in pt.ptes_pgprot(arr)] == [pt.pte_pgprot(x) for x in vals]
    assert [int(x) for x in pt.ptes_mkcont(arr)] == [pt.pte_mkcont(x) for x in vals]
    if pt.ptes_user_normal_all(arr, np.empty_like(arr)):
        assert all(pt.pte_present(x) and not pt.pte_special(x) for x in vals)
    new = arr[::-1].copy()
    got = pt.pgattr_change_is_safe_array(arr, new)
    assert list(got) == [
        pt.pgattr_change_is_safe(a, b) for a, b in zip(vals, vals[::-1], strict=True)
    ]


def test_pgattr_change_is_safe_rules() -> None:
    """Live entries may change PXN/RDONLY/WRITE/nG/sw bits only; never CONT, OA or global."""
    g = PgtableGeometry.for_page_size(4096)
    pte = g.pfn_pte(9, PAGE_KERNEL)
    assert pt.pgattr_change_is_safe(pte, pte | PTE_RDONLY)
    assert not pt.pgattr_change_is_safe(pte, pte | PTE_PO_IDX_0)  # POIndex: not in mainline
    assert not pt.pgattr_change_is_safe(pte, g.pfn_pte(10, PAGE_KERNEL))
    assert not pt.pgattr_change_is_safe(pte | PTE_CONT, pte | PTE_CONT | PTE_RDONLY)
    assert not pt.pgattr_change_is_safe(pte | pt.PTE_NG, pte)
    assert pt.pgattr_change_is_safe(0, pte) and pt.pgattr_change_is_safe(pte, 0)


def test_vm_get_page_prot_maps_flags_and_pkeys() -> None:
    """protection_map: private writable is read-only (COW); pkey bits become POIndex with POE."""
    k = boot(KernelConfig(ram_size=128 * MiB, kpkeys_hardened_pgtables=False))
    assert vm_get_page_prot(k, VM_READ | VM_WRITE) == PAGE_READONLY
    assert vm_get_page_prot(k, VM_READ | VM_WRITE | VM_SHARED) == PAGE_SHARED
    prot = vm_get_page_prot(k, VM_READ | VM_PKEY_BIT0 | VM_PKEY_BIT2)
    assert prot == PAGE_READONLY | PTE_PO_IDX_0 | PTE_PO_IDX_2
    k2 = boot(KernelConfig(ram_size=128 * MiB, cpu_has_pkeys=False))
    assert vm_get_page_prot(k2, VM_READ | VM_PKEY_BIT0) == PAGE_READONLY


# --- write helpers: guards, barriers, accounting -------------------------------------------------


class Bed:
    """A booted kernel with a counting guard, an event counter and a scratch PTE table."""

    def __init__(self, **cfg: Any) -> None:
        conf: dict[str, Any] = {"ram_size": 256 * MiB, "kpkeys_hardened_pgtables": False}
        conf.update(cfg)
        self.c = CountingInstrument()
        self.k = boot(KernelConfig(**conf), [self.c])
        self.guards = 0
        self.repeats = 0
        self.k.pgtables_guard = self._guard
        self.k.pgtables_guard_repeat = self._repeat
        pfn = pa.pte_alloc_one_kernel(self.k)
        assert pfn is not None
        self.table_pfn = pfn
        self.table = page_address(self.k, pfn)
        self.c.reset()

    @contextmanager
    def _guard_cm(self) -> Iterator[None]:
        self.guards += 1
        yield

    def _guard(self, k: Kernel) -> Any:
        return self._guard_cm()

    def _repeat(self, k: Kernel, n: int) -> None:
        self.repeats += n

    def pte(self, pfn: int, prot: int = PAGE_KERNEL) -> int:
        return self.k.pgt.pfn_pte(pfn, prot)


def test_set_pte_guards_the_store_and_emits_barriers_for_kernel_entries() -> None:
    """set_pte: one guard, one checked store, DSB+ISB only for a valid kernel entry."""
    b = Bed()
    pg.set_pte(b.k, b.table, b.pte(100))
    assert (b.guards, b.c.counts["pt_write"], b.c.counts["dsb"], b.c.counts["isb"]) == (1, 1, 1, 1)
    pg.set_pte(b.k, b.table + 8, b.pte(101, PAGE_SHARED))  # user entry: no barriers
    pg.pte_clear(b.k, b.table + 16)
    assert (b.guards, b.c.counts["dsb"]) == (3, 1)
    assert pg.ptep_get(b.k, b.table) == b.pte(100)


def test_bulk_helpers_keep_exact_accounting() -> None:
    """set_ptes/set_ptes_array/pte_clear_array: one guard + (n-1) repeats, per-entry counts."""
    b = Bed()
    pg.set_ptes(b.k, b.table, b.pte(200), 8)
    assert [b.k.pgt.pte_pfn(int(x)) for x in pg.ptep_get_array(b.k, b.table, 8)] == list(
        range(200, 208)
    )
    assert (b.guards, b.repeats, b.c.counts["pt_write"], b.c.counts["dsb"]) == (1, 7, 8, 1)
    vals = b.k.pgt.pte_range(300, 16, PAGE_KERNEL)
    vals[3] = b.pte(7, PAGE_SHARED)
    pg.set_ptes_array(b.k, b.table + 64, vals)
    assert (b.guards, b.repeats, b.c.counts["dsb"], b.c.counts["isb"]) == (2, 22, 16, 16)
    old = pg.ptep_get_and_clear_array(b.k, b.table + 64, 16)
    assert np.array_equal(old, vals) and not pg.ptep_get_array(b.k, b.table + 64, 16).any()
    pg.pte_clear_array(b.k, b.table, 8)
    assert (b.guards, b.repeats, b.c.counts["pt_write"]) == (4, 44, 8 + 16 + 16 + 8)


def test_wrprotect_young_and_access_flags() -> None:
    """wrprotect (scalar and masked), test_and_clear_young, set_access_flags' early return."""
    b = Bed()
    k = b.k
    pg.set_ptes_array(k, b.table, k.pgt.pte_range(400, 8, PAGE_SHARED | PTE_WRITE))
    b.c.reset()
    g0, r0 = b.guards, b.repeats
    mask = np.array([1, 1, 0, 1, 0, 0, 1, 1], dtype=bool)
    pg.ptep_set_wrprotect_array(k, b.table, mask)
    got = pg.ptep_get_array(k, b.table, 8)
    assert list(pt.ptes_write_mask(got)) == list(~mask)
    assert (b.c.counts["pt_write"], b.guards - g0, b.repeats - r0) == (5, 1, 4)
    pg.ptep_set_wrprotect(k, b.table + 16)
    assert not pt.pte_write(pg.ptep_get(k, b.table + 16))
    assert pg.ptep_test_and_clear_young(k, b.table) is True
    assert pg.ptep_test_and_clear_young(k, b.table) is False
    cur = pg.ptep_get(k, b.table)
    g1, w1 = b.guards, b.c.counts["pt_write"]
    assert pg.ptep_set_access_flags(k, b.table, cur, False) is False
    assert (b.guards, b.c.counts["pt_write"]) == (g1, w1)  # no write, no guard
    want = pt.pte_mkyoung(pt.pte_mkdirty(pt.pte_mkwrite(cur)))
    with pytest.raises(ValueError, match="vma"):
        pg.ptep_set_access_flags(k, b.table, want, True)
    mm = mm_struct(0, 0)
    mm.context_id = 5
    tl = b.c.counts["tlbi_va"]
    assert pg.ptep_set_access_flags(k, b.table, want, True, vm_area_struct(mm, 0, 4096, 0, 0), 0)
    assert (
        pg.ptep_get(k, b.table) & (PTE_AF | PTE_WRITE | PTE_DIRTY) == PTE_AF | PTE_WRITE | PTE_DIRTY
    )
    assert not pg.ptep_get(k, b.table) & PTE_RDONLY and b.c.counts["tlbi_va"] == tl + 1
    old = pg.ptep_get(k, b.table + 8)
    assert pg.pmdp_establish(k, None, 0, b.table + 8, 0) == old and pg.ptep_get(k, b.table + 8) == 0


def test_lazy_mmu_defers_the_barriers() -> None:
    """Inside a lazy MMU section set_pte/set_pmd queue their barriers: one DSB+ISB at the end."""
    b = Bed()
    with lazy_mmu_mode(b.k):
        for i in range(3):
            pg.set_pte(b.k, b.table + 8 * i, b.pte(500 + i))
        assert b.c.counts["dsb"] == 0 and b.c.counts["isb"] == 0
    assert b.c.counts["dsb"] == 1 and b.c.counts["isb"] == 1


@pytest.mark.parametrize("ps", [4096, 65536])
def test_swapper_pg_dir_is_written_through_the_fixmap_after_mark_rodata_ro(ps: int) -> None:
    """A top-level swapper entry: set_p4d/set_pud go through FIX_PGD (unguarded) after boot."""
    b = Bed(page_size=ps)
    k = b.k
    g = k.pgt
    entry = pg.pgd_offset_k(k, g.VMALLOC_START + 8 * g.PGDIR_SIZE)
    assert in_swapper_pgdir(k, entry) and not k.rodata_is_rw
    desc = (b.table_pfn << g.PAGE_SHIFT) | pt.PMD_TYPE_TABLE
    g0 = b.guards
    pg.set_pgd(k, entry, desc)
    assert pg.ptep_get(k, entry) == desc
    # set_swapper_pgd itself is not guarded: the two guards are the fixmap PTE's
    # __set_pte (pgd_set_fixmap) and __pte_clear (pgd_clear_fixmap).
    assert b.guards - g0 == 2 and b.c.counts["pt_write"] == 3
    assert b.c.counts["tlbi_va"] == 1  # pgd_clear_fixmap's flush
    (pg.pud_clear if g.mm_pud_folded else pg.p4d_clear)(k, entry)
    assert pg.ptep_get(k, entry) == 0


def test_set_pmd_guards_store_and_barriers() -> None:
    """set_pmd: the guard covers the store and the DSB/ISB of a valid entry."""
    b = Bed()
    inside: list[int] = []
    real = b._guard_cm

    @contextmanager
    def spy() -> Iterator[None]:
        with real():
            yield
            inside.append(b.c.counts["dsb"])

    b.k.pgtables_guard = lambda kk: spy()
    pg.set_pmd(b.k, b.table, b.pte(5))
    assert inside == [1]
    pg.pmd_clear(b.k, b.table)
    assert inside == [1, 1]


def test_walk_helpers_agree_with_the_mmu() -> None:
    """pgd_offset_k → pud → pmd → pte_offset_kernel reach the entry the MMU uses."""
    k = boot(KernelConfig(ram_size=256 * MiB, linear_map="pte", kpkeys_hardened_pgtables=False))
    g = k.pgt
    va = __va(k, k.machine.mem.base + 100 * MiB + 0x3000)
    pgdp = pg.pgd_offset_k(k, va)
    assert pg.p4d_offset(k, pgdp, va) == pgdp
    pmdp = pg.pmd_offset(k, pg.pud_offset(k, pgdp, va), va)
    assert pmdp == pg.pmd_off_k(k, va)
    ptep = pg.pte_offset_kernel(k, pmdp, va)
    assert pg.pte_offset_map(k, pmdp, va) == ptep
    assert g.pte_pfn(pg.ptep_get(k, ptep)) << 12 == k.machine.translate(k.cpu, va, "R") & ~0xFFF
    kb = boot(KernelConfig(ram_size=256 * MiB, kpkeys_hardened_pgtables=False))
    vb = __va(kb, kb.machine.mem.base + 100 * MiB)
    assert pg.pte_offset_map(kb, pg.pmd_off_k(kb, vb), vb) is None  # a PMD block


# --- pgalloc -------------------------------------------------------------------------------------


def test_pagetable_ctor_marks_pg_table_and_failing_ctor_unwinds() -> None:
    """Ctor sets PG_table and counts per level; a failing ctor hook frees the page, returns None."""
    b = Bed()
    k = b.k
    assert k.mem_map is not None and k.zone is not None
    assert k.mem_map.test_flag(b.table_pfn, PG_table)
    seen: list[tuple[int, str | None]] = []
    k.pgtable_dtor_hooks.append(lambda kk, pfn, order, level: seen.append((pfn, level)))
    pa.pte_free_kernel(k, b.table_pfn)
    assert seen == [(b.table_pfn, "pte")] and not k.mem_map.test_flag(b.table_pfn, PG_table)
    free = k.zone.nr_free
    k.pgtable_ctor_hooks.append(lambda kk, pfn, order, level: level != "pmd")
    assert pa.pmd_alloc_one(k, k.init_mm, 0) is None
    assert k.zone.nr_free == free
    pfn = pa.pte_alloc_one_kernel(k)
    assert pfn is not None and b.c.counts["pgtable_alloc_pte"] == 1
    assert b.c.counts["pgtable_alloc"] == 2 and b.c.counts["pgtable_free"] == 2


def test_allocator_hooks_replace_the_buddy_path() -> None:
    """k.pgtable_alloc_hook / k.pgtable_free_hook take over pagetable_alloc/free."""
    b = Bed()
    k = b.k
    log: list[Any] = []
    assert k.zone is not None
    k.pgtable_alloc_hook = lambda kk, gfp, order: log.append(("alloc", gfp, order)) or 12345
    k.pgtable_free_hook = lambda kk, pfn, order: log.append(("free", pfn, order))
    assert pa.pagetable_alloc(k, GFP_PGTABLE_KERNEL) == 12345
    pa.pagetable_free(k, 12345)
    assert [entry[0] for entry in log] == ["alloc", "free"]


@pytest.mark.parametrize("ps", [4096, 16384, 65536])
def test_user_tables_are_allocated_populated_and_accounted(ps: int) -> None:
    """pgd_alloc + pud/pmd/pte_alloc build a user walk once; pgtables_bytes counts the tables."""
    b = Bed(page_size=ps)
    k = b.k
    g = k.pgt
    pgd = pa.pgd_alloc(k, mm_struct(0, 0))
    assert pgd is not None
    mm = mm_struct(pgd, g.pa(pgd), name="user")
    if ps == 4096:
        assert pgd & (g.PAGE_SIZE - 1) == 0
    else:
        assert k.pgd_cache is not None and g.PGD_SIZE < g.PAGE_SIZE
    addr = 0x0000_7FFF_1234_5000
    for _ in range(2):
        pgdp = pg.pgd_offset(k, mm, addr)
        p4dp = pa.p4d_alloc(k, mm, pgdp, addr)
        assert p4dp is not None
        pudp = pa.pud_alloc(k, mm, p4dp, addr)
        assert pudp is not None
        pmdp = pa.pmd_alloc(k, mm, pudp, addr)
        assert pmdp is not None
        ptep = pa.pte_alloc_map(k, mm, pmdp, addr)
        assert ptep is not None
    assert (mm.nr_ptes, mm.nr_pmds, mm.nr_puds) == (1, 1, 0 if g.mm_pud_folded else 1)
    assert mm.pgtables_bytes == 8 * (
        g.PTRS_PER_PTE + g.PTRS_PER_PMD + (0 if g.mm_pud_folded else g.PTRS_PER_PUD)
    )
    pg.set_pte_at(k, mm, addr, ptep, g.pfn_pte(k.machine.mem.base_pfn + 10, PAGE_SHARED))
    k.cpu.ttbr0 = mm.pgd_phys
    k.cpu.asid = 9
    want = ((k.machine.mem.base_pfn + 10) << g.PAGE_SHIFT) + (addr & (g.PAGE_SIZE - 1))
    assert k.machine.translate(k.cpu, addr, "R") == want
    with pytest.raises(KernelBug):
        pg.pmd_populate(k, k.init_mm, pmdp, 1)


def test_pte_alloc_reports_enomem() -> None:
    """__pte_alloc returns -ENOMEM when no table page can be had."""
    b = Bed()
    k = b.k
    k.pgtable_alloc_hook = lambda kk, gfp, order: None
    mm = mm_struct(0, 0)
    assert pa.__pte_alloc(k, mm, b.table) == -ENOMEM
    assert pa.pte_alloc_map(k, mm, b.table, 0) is None


# --- TLB flushes ---------------------------------------------------------------------------------


def test_tlb_flush_counts() -> None:
    """Kernel ranges: TLBI VA per page below MAX_DVM_OPS, else one VMALLE1IS; user: per ASID."""
    b = Bed()
    k = b.k
    c = b.c
    flush_tlb_kernel_range(k, k.pgt.PAGE_OFFSET, k.pgt.PAGE_OFFSET + 511 * 4096)
    assert (c.counts["tlbi_va"], c.counts["tlbi_all"], c.counts["dsb"], c.counts["isb"]) == (
        511,
        0,
        2,
        1,
    )
    c.reset()
    flush_tlb_kernel_range(k, k.pgt.PAGE_OFFSET, k.pgt.PAGE_OFFSET + 512 * 4096)
    assert (c.counts["tlbi_va"], c.counts["tlbi_all"]) == (0, 1)
    mm = mm_struct(0, 0)
    mm.context_id = 3
    c.reset()
    flush_tlb_range(k, mm, 0x1000, 0x5000)
    flush_tlb_page(k, vm_area_struct(mm, 0, 0x10000, 0, 0), 0x2000)
    flush_tlb_mm(k, mm)
    assert (c.counts["tlbi_va"], c.counts["tlbi_asid"], c.counts["dsb"]) == (5, 1, 6)
    c.reset()
    flush_tlb_range(k, mm, 0, 512 * 4096)
    assert (c.counts["tlbi_va"], c.counts["tlbi_asid"]) == (0, 1)


def test_stale_tlb_entry_survives_until_the_flush() -> None:
    """A changed kernel PTE is invisible to a CPU that cached it until flush_tlb_kernel_range."""
    b = Bed(linear_map="pte")
    k = b.k
    g = k.pgt
    va = __va(k, k.machine.mem.base + 100 * MiB)
    ptep = pg.pte_offset_kernel(k, pg.pmd_off_k(k, va), va)
    k.machine.translate(k.cpu, va, "W")
    pg.set_pte(k, ptep, pg.ptep_get(k, ptep) | PTE_RDONLY)
    assert k.machine.translate(k.cpu, va, "W") == g.pa(va)  # stale, writable
    flush_tlb_kernel_range(k, va, va + g.PAGE_SIZE)
    with pytest.raises(Exception, match="fault"):
        k.machine.translate(k.cpu, va, "W")


# --- mm_types ------------------------------------------------------------------------------------


def test_vma_list_is_sorted_and_refuses_overlap() -> None:
    """insert_vm_struct keeps VMAs sorted, refuses overlaps; find_vma/vma_lookup semantics."""
    mm = mm_struct(0, 0)
    a = vm_area_struct(mm, 0x1000, 0x3000, VM_READ, 0)
    c = vm_area_struct(mm, 0x8000, 0x9000, VM_READ, 0)
    assert insert_vm_struct(mm, c) == 0 and insert_vm_struct(mm, a) == 0
    assert insert_vm_struct(mm, vm_area_struct(mm, 0x2000, 0x8800, VM_READ, 0)) == -ENOMEM
    assert [v.vm_start for v in mm.mmap] == [0x1000, 0x8000] and mm.map_count == 2
    assert find_vma(mm, 0x500) is a and find_vma(mm, 0x4000) is c and find_vma(mm, 0x9000) is None
    assert vma_lookup(mm, 0x4000) is None and vma_lookup(mm, 0x2FFF) is a
    assert find_vma_intersection(mm, 0x3000, 0x8001) is c
    remove_vma_from_mm(mm, a)
    assert find_vma(mm, 0) is c and mm.total_vm == 0x1000
    assert is_cow_mapping(VM_READ | VM_MAYWRITE) and not is_cow_mapping(VM_SHARED | VM_MAYWRITE)
