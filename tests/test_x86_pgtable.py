"""x86-64 page-table format and layout (kernel/arch/x86_pgtable.py).

Descriptors built with the module are checked through the machine's real
x86 walker and access check (``Machine.translate``), so the bit positions,
the table-entry attributes and the pkey field are validated against the
hardware model rather than against themselves.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.strategies import x86_descriptors, x86_keys, x86_pfns

from kpkeys_sim.kernel.arch import x86_pgtable as x
from kpkeys_sim.kernel.arch.pgtable_api import ArchPgtable
from kpkeys_sim.kernel.arch.x86_pgtable import X86PgtableGeometry
from kpkeys_sim.kernel.mm.mm_types import (
    VM_EXEC,
    VM_NONE,
    VM_PKEY_BIT0,
    VM_PKEY_BIT1,
    VM_PKEY_BIT2,
    VM_PKEY_BIT3,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
)
from kpkeys_sim.machine import Machine
from kpkeys_sim.machine.arch.x86_pk import pkr_set_bits
from kpkeys_sim.machine.cpu import CPU
from kpkeys_sim.machine.mmu import Fault

G = X86PgtableGeometry.for_page_size(4096)

#: mypy-visible: the x86 geometry satisfies the generic interface.
_AS_API: ArchPgtable = G

P, RW, US, PWT, PCD, A, D, PSE, GLB = (1 << b for b in range(9))
SPECIAL = 1 << 9
NX = 1 << 63


# --- a tiny table builder using the module's own descriptors ------------------------------------


class X86Tables:
    """Builds 4-level tables in a ``Machine(arch="x86")`` with :mod:`x86_pgtable` entries."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.next_pfn = m.mem.base_pfn + m.mem.nr_frames - 1
        self.kernel_root = self.new_table()
        self.user_root = self.new_table()
        for cpu in m.cpus:
            cpu.ttbr1 = self.kernel_root
            cpu.ttbr0 = self.user_root

    def new_table(self) -> int:
        pfn = self.next_pfn
        self.next_pfn -= 1
        self.m.mem.zero_frames(pfn)
        return pfn << 12

    def map(self, va: int, leaf: int, level: int = 3, *, user_tables: bool | None = None) -> None:
        """Store ``leaf`` for ``va`` at machine ``level`` (3 = PTE, 2 = PMD, 1 = PUD).

        Table entries are ``mk_*_table(pa, user)``; ``user`` defaults to the VA's half.
        """
        user = (va >> 63) == 0 if user_tables is None else user_tables
        mem = self.m.mem
        table = self.user_root if va >> 63 == 0 else self.kernel_root
        index = (G.pgd_index, G.pud_index, G.pmd_index, G.pte_index)
        mk = (G.mk_p4d_table, G.mk_pud_table, G.mk_pmd_table)
        for lv in range(level):
            epa = table + 8 * index[lv](va)
            assert index[lv](va) == self.m.geometry.index(va, lv)
            d = mem.read_u64(epa)
            if not d & P:
                d = mk[lv](self.new_table(), user)
                mem.write_u64(epa, d)
            table = d & x.PTE_PFN_MASK
        mem.write_u64(table + 8 * index[level](va), leaf)


def x86_machine(**kw: int) -> tuple[Machine, CPU, X86Tables]:
    m = Machine(arch="x86", ram_size=kw.pop("ram_size", 64 << 20), phys_base=0)
    cpu = m.cpus[0]
    cpu.pke = 1
    cpu.pks = 1
    cpu.wp = 1
    return m, cpu, X86Tables(m)


KVA = G.PAGE_OFFSET + 0x20_0000  # a direct-map address
UVA = 0x7F00_0000_0000


def _fault(m: Machine, cpu: CPU, va: int, access: str, el: int) -> Fault | None:
    try:
        m.translate(cpu, va, access, el=el)
    except Fault as f:
        return f
    return None


# --- walker + access check ----------------------------------------------------------------------


def test_page_kernel_supervisor_read_write() -> None:
    m, cpu, t = x86_machine()
    t.map(KVA, G.pfn_pte(0x200, x.PAGE_KERNEL))
    assert m.translate(cpu, KVA + 0x18, "W", el=1) == 0x20_0018
    assert m.translate(cpu, KVA, "R", el=1) == 0x20_0000
    f = _fault(m, cpu, KVA, "R", el=0)  # a user access to a supervisor page: U/S
    assert f is not None and f.result == "base_fault" and f.syndrome == 0x5


def test_page_kernel_ro_write_denied_with_wp() -> None:
    m, cpu, t = x86_machine()
    t.map(KVA, G.pfn_pte(0x200, x.PAGE_KERNEL_RO))
    assert m.translate(cpu, KVA, "R", el=1) == 0x20_0000
    f = _fault(m, cpu, KVA, "W", el=1)
    assert f is not None and f.result == "base_fault" and f.syndrome == 0x3
    cpu.wp = 0  # CR0.WP = 0: supervisor writes ignore R/W
    assert m.translate(cpu, KVA, "W", el=1) == 0x20_0000


def test_pks_write_disable_on_kernel_page() -> None:
    m, cpu, t = x86_machine()
    t.map(KVA, G.pfn_pte(0x200, x.pte_set_pkey(x.PAGE_KERNEL, 1)))
    cpu.write_pkey_reg(pkr_set_bits(0, 1, ad=False, wd=True))
    assert m.translate(cpu, KVA, "R", el=1) == 0x20_0000
    f = _fault(m, cpu, KVA, "W", el=1)
    assert f is not None and f.result == "pk_fault" and f.syndrome == 0x23 and f.pkey == 1
    cpu.wp = 0
    assert m.translate(cpu, KVA, "W", el=1) == 0x20_0000
    cpu.wp = 1
    cpu.write_pkey_reg(0)
    assert m.translate(cpu, KVA, "W", el=1) == 0x20_0000
    cpu.write_pkey_reg(pkr_set_bits(0, 1, ad=True, wd=False))
    f = _fault(m, cpu, KVA, "R", el=1)
    assert f is not None and f.result == "pk_fault" and f.syndrome == 0x21


def test_user_pages_follow_pkru_not_pkrs() -> None:
    m, cpu, t = x86_machine()
    t.map(UVA, G.pfn_pte(0x300, x.pte_set_pkey(x.PAGE_SHARED, 1)))
    cpu.write_pkey_reg(pkr_set_bits(0, 1, ad=True, wd=True))  # PKRS: no effect on user pages
    assert m.translate(cpu, UVA, "W", el=0) == 0x30_0000
    assert m.translate(cpu, UVA, "W", el=1) == 0x30_0000
    cpu.write_user_pkey_reg(pkr_set_bits(0, 1, ad=False, wd=True))
    f = _fault(m, cpu, UVA, "W", el=0)
    assert f is not None and f.result == "pk_fault" and f.syndrome == 0x27
    f = _fault(m, cpu, UVA, "W", el=1)  # supervisor write to a user page: PKRU, WP = 1
    assert f is not None and f.result == "pk_fault" and f.syndrome == 0x23
    assert m.translate(cpu, UVA, "R", el=0) == 0x30_0000


def test_kernel_table_entry_makes_page_supervisor() -> None:
    """U/S is ANDed over the walk: a user leaf under ``_KERNPG_TABLE`` is a supervisor page."""
    m, cpu, t = x86_machine()
    t.map(UVA, G.pfn_pte(0x300, x.pte_set_pkey(x.PAGE_SHARED, 1)), user_tables=False)
    f = _fault(m, cpu, UVA, "R", el=0)
    assert f is not None and f.result == "base_fault" and f.syndrome == 0x5
    cpu.write_pkey_reg(pkr_set_bits(0, 1, ad=False, wd=True))  # now PKRS governs it
    f = _fault(m, cpu, UVA, "W", el=1)
    assert f is not None and f.result == "pk_fault" and f.syndrome == 0x23


def test_page_none_and_cleared_entries_do_not_translate() -> None:
    m, cpu, t = x86_machine()
    t.map(UVA, G.pfn_pte(0x300, x.PAGE_NONE))
    f = _fault(m, cpu, UVA, "R", el=0)
    assert f is not None and f.kind == "translation"
    assert x.pte_present(G.pfn_pte(0x300, x.PAGE_NONE))
    assert not x.pte_valid(G.pfn_pte(0x300, x.PAGE_NONE))


def test_2m_and_1g_leaves_translate() -> None:
    m, cpu, t = x86_machine()
    va2 = G.PAGE_OFFSET + 0x4000_0000
    pmd = G.pfn_pmd(0x4_0000 >> 0, x.PAGE_KERNEL_LARGE)  # pfn 0x40000 = 1 GiB
    t.map(va2, pmd, level=2)
    assert m.translate(cpu, va2 + 0x1_2345, "W", el=1) == 0x4000_0000 + 0x1_2345
    assert m.translate(cpu, va2 + 0x1F_FFF8, "R", el=1) == 0x4000_0000 + 0x1F_FFF8
    va1 = G.PAGE_OFFSET + (8 << 30)
    pud = G.pfn_pud((8 << 30) >> 12, x.mk_pud_sect_prot(x.PAGE_KERNEL_RO))
    t.map(va1, pud, level=1)
    assert m.translate(cpu, va1 + 0x3FFF_F000, "R", el=1) == (8 << 30) + 0x3FFF_F000
    assert _fault(m, cpu, va1, "W", el=1) is not None
    # pfn of a PSE leaf ignores the PAT_LARGE bit (bit 12) and anything below the leaf size
    assert G.pmd_pfn(pmd | x._PAGE_PAT_LARGE) == 0x4_0000
    assert G.pud_pfn(pud | x._PAGE_PAT_LARGE) == (8 << 30) >> 12
    assert x.pmd_leaf(pmd) and not x.pmd_table(pmd) and x.pmd_bad(pmd)
    assert x.pud_leaf(pud) and not x.pud_table(pud) and x.pud_bad(pud)
    # pfn_pmd/pfn_pud cut the address to the leaf size
    assert G.pfn_pmd(0x4_0001, x.PAGE_KERNEL_LARGE) == pmd
    assert G.pmd_page_paddr(pmd) == 0x4000_0000


def test_pkey_on_2m_leaf() -> None:
    m, cpu, t = x86_machine()
    va2 = G.PAGE_OFFSET + 0x4000_0000
    t.map(va2, G.pfn_pmd(0x4_0000, x.pte_set_pkey(x.PAGE_KERNEL_LARGE, 1)), level=2)
    cpu.write_pkey_reg(pkr_set_bits(0, 1, ad=False, wd=True))
    f = _fault(m, cpu, va2 + 0x1000, "W", el=1)
    assert f is not None and f.result == "pk_fault" and f.level == 2


def test_table_entries() -> None:
    for mk in (G.mk_pmd_table, G.mk_pud_table, G.mk_p4d_table):
        assert mk(0x12_3000, True) == 0x12_3000 | x._PAGE_TABLE
        assert mk(0x12_3000, False) == 0x12_3000 | x._KERNPG_TABLE
    assert x._PAGE_TABLE == P | RW | US | A | D
    assert x._KERNPG_TABLE == P | RW | A | D
    for user in (True, False):
        e = G.mk_pmd_table(0x12_3000, user)
        assert x.pmd_table(e) and x.pmd_present(e) and not x.pmd_leaf(e) and not x.pmd_bad(e)
        assert G.pmd_pfn(e) == 0x123 and G.pmd_page_paddr(e) == 0x12_3000
        e = G.mk_pud_table(0x12_3000, user)
        assert x.pud_table(e) and not x.pud_leaf(e) and not x.pud_bad(e)
        assert G.pud_pfn(e) == 0x123
        e = G.mk_p4d_table(0x12_3000, user)
        assert x.p4d_present(e) and not x.p4d_bad(e) and not x.p4d_none(e)
        assert x.pgd_present(e) and not x.pgd_bad(e) and x.pgd_page_paddr(e) == 0x12_3000
    assert x.pmd_bad(0x12_3000 | x._KERNPG_TABLE | NX)
    assert x.p4d_bad(0x12_3000 | x._KERNPG_TABLE | GLB)


# --- pgprots: each one against its documented bits (pgtable_types.h) ----------------------------

PGPROTS = {
    "PAGE_NONE": A | GLB,
    "PAGE_SHARED": P | RW | US | A | NX,
    "PAGE_SHARED_EXEC": P | RW | US | A,
    "PAGE_COPY_NOEXEC": P | US | A | NX,
    "PAGE_COPY": P | US | A | NX,
    "PAGE_COPY_EXEC": P | US | A,
    "PAGE_READONLY": P | US | A | NX,
    "PAGE_READONLY_EXEC": P | US | A,
    "PAGE_KERNEL": P | RW | A | D | GLB | NX,
    "PAGE_KERNEL_RO": P | A | GLB | NX,
    "PAGE_KERNEL_EXEC": P | RW | A | D | GLB,
    "PAGE_KERNEL_ROX": P | A | GLB,
    "PAGE_KERNEL_LARGE": P | RW | A | D | PSE | GLB | NX,
    "PAGE_KERNEL_LARGE_EXEC": P | RW | A | D | PSE | GLB,
}


@pytest.mark.parametrize("name", sorted(PGPROTS))
def test_pgprot_bits(name: str) -> None:
    assert getattr(x, name) == PGPROTS[name]
    if hasattr(G, name):
        assert getattr(G, name) == PGPROTS[name]


def test_bit_positions() -> None:
    assert x._PAGE_PKEY_BIT0 == 1 << 59 and x._PAGE_PKEY_BIT3 == 1 << 62
    assert x._PAGE_PKEY_MASK == 0xF << 59
    assert x._PAGE_NX == NX
    assert x._PAGE_SPECIAL == SPECIAL
    assert x._PAGE_PROTNONE == x._PAGE_GLOBAL
    assert x.PTE_PFN_MASK == ((1 << 52) - 1) & ~0xFFF
    assert x.PAGE_KERNEL == 0x8000_0000_0000_0163


# --- vm_get_page_prot ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "prot"),
    [
        (VM_NONE, x.PAGE_NONE),
        (VM_READ, x.PAGE_READONLY),
        (VM_READ | VM_WRITE, x.PAGE_COPY),
        (VM_READ | VM_EXEC, x.PAGE_READONLY_EXEC),
        (VM_READ | VM_WRITE | VM_EXEC, x.PAGE_COPY_EXEC),
        (VM_SHARED, x.PAGE_NONE),
        (VM_SHARED | VM_READ, x.PAGE_READONLY),
        (VM_SHARED | VM_READ | VM_WRITE, x.PAGE_SHARED),
        (VM_SHARED | VM_READ | VM_WRITE | VM_EXEC, x.PAGE_SHARED_EXEC),
        (VM_EXEC, x.PAGE_READONLY_EXEC),
    ],
)
def test_vm_get_page_prot(flags: int, prot: int) -> None:
    assert x.vm_get_page_prot(None, flags) == prot
    assert G.vm_get_page_prot(None, flags) == prot  # type: ignore[arg-type]


def test_private_writable_is_not_writable_until_cow() -> None:
    assert not x.pte_write(x.vm_get_page_prot(None, VM_READ | VM_WRITE))
    assert x.pte_write(x.vm_get_page_prot(None, VM_SHARED | VM_READ | VM_WRITE))


@given(x86_keys)
def test_vm_get_page_prot_pkey(pkey: int) -> None:
    bits = (VM_PKEY_BIT0, VM_PKEY_BIT1, VM_PKEY_BIT2, VM_PKEY_BIT3)
    vm_pkey = sum(b for i, b in enumerate(bits) if pkey >> i & 1)
    prot = x.vm_get_page_prot(None, VM_SHARED | VM_READ | VM_WRITE | vm_pkey)
    assert x.pte_pkey(prot) == pkey
    assert prot & ~x._PAGE_PKEY_MASK == x.PAGE_SHARED


# --- value helpers ------------------------------------------------------------------------------


@given(x86_descriptors)
def test_pte_helper_round_trips(pte: int) -> None:
    assert x.pte_mkwrite(x.pte_wrprotect(pte)) == pte | RW
    assert x.pte_wrprotect(x.pte_mkwrite(pte)) == pte & ~RW
    assert not x.pte_write(x.pte_wrprotect(pte)) and x.pte_write(x.pte_mkwrite_novma(pte))
    assert x.pte_dirty(x.pte_mkdirty(pte)) and not x.pte_dirty(x.pte_mkclean(pte))
    assert x.pte_young(x.pte_mkyoung(pte)) and not x.pte_young(x.pte_mkold(pte))
    assert x.pte_special(x.pte_mkspecial(pte))
    assert x.pte_mkold(x.pte_mkyoung(pte)) == pte & ~A
    assert x.pte_mkcont(pte) == pte
    # every modifier leaves the pfn and the key alone
    for f in (x.pte_wrprotect, x.pte_mkwrite, x.pte_mkdirty, x.pte_mkclean, x.pte_mkold):
        out = f(pte)
        assert G.pte_pfn(out) == G.pte_pfn(pte) and x.pte_pkey(out) == x.pte_pkey(pte)
    assert x.pte_phys(pte) | x.pte_pgprot(pte) == pte


@given(x86_pfns, x86_descriptors)
def test_pfn_pte_round_trip(pfn: int, prot_src: int) -> None:
    prot = x.pte_pgprot(prot_src)
    pte = G.pfn_pte(pfn, prot)
    assert G.pte_pfn(pte) == pfn and x.pte_pgprot(pte) == prot
    if pfn + 3 < 1 << 40:  # advancing past the 52-bit physical address space overflows
        assert G.pte_advance_pfn(pte, 3) == G.pfn_pte(pfn + 3, prot)


@given(x86_descriptors, x86_keys)
def test_pkey_set_get(pte: int, pkey: int) -> None:
    out = x.pte_set_pkey(pte, pkey)
    assert x.pte_pkey(out) == pkey == x.pte_flags_pkey(x.pte_flags(out))
    assert out & ~x._PAGE_PKEY_MASK == pte & ~x._PAGE_PKEY_MASK


@given(x86_descriptors, x86_descriptors)
def test_pte_modify(pte: int, newprot_src: int) -> None:
    newprot = x.pte_pgprot(newprot_src)
    out = x.pte_modify(pte, newprot)
    keep = x._PAGE_CHG_MASK
    assert out & keep == pte & keep
    assert out & ~keep & x.U64_MAX == newprot & ~keep & x.U64_MAX
    assert x.pte_pkey(out) == x.pte_pkey(newprot)  # mprotect() changes the key
    assert x.pte_exec(out) == x.pte_exec(newprot)


@given(st.lists(x86_descriptors, min_size=1, max_size=40))
def test_bulk_helpers_match_scalar(ptes: list[int]) -> None:
    arr = np.array(ptes, dtype=np.uint64)
    for bulk, one in (
        (x.ptes_none_mask, x.pte_none),
        (x.ptes_valid_mask, x.pte_valid),
        (x.ptes_present_mask, x.pte_present),
        (x.ptes_write_mask, x.pte_write),
        (x.ptes_dirty_mask, x.pte_dirty),
        (x.ptes_young_mask, x.pte_young),
        (x.ptes_special_mask, x.pte_special),
        (x.ptes_valid_not_user_mask, x.pte_valid_not_user),
    ):
        assert bulk(arr).tolist() == [one(p) for p in ptes]
    for bulk_v, one_v in (
        (x.ptes_wrprotect, x.pte_wrprotect),
        (x.ptes_mkold, x.pte_mkold),
        (x.ptes_mkclean, x.pte_mkclean),
        (x.ptes_mkcont, x.pte_mkcont),
        (x.ptes_phys, x.pte_phys),
        (x.ptes_pgprot, x.pte_pgprot),
        (x.ptes_pkey, x.pte_pkey),
    ):
        assert [int(v) for v in bulk_v(arr)] == [one_v(p) for p in ptes]
    assert [int(v) for v in G.ptes_pfn(arr)] == [G.pte_pfn(p) for p in ptes]
    assert [int(v) for v in x.ptes_set_pkey(arr, 5)] == [x.pte_set_pkey(p, 5) for p in ptes]
    out = np.empty_like(arr)
    expect = all(x.pte_valid(p) and x.pte_user(p) and not x.pte_special(p) for p in ptes)
    assert x.ptes_user_normal_all(arr, out) == expect


def test_pfn_ptes_and_pte_range() -> None:
    pfns = np.array([1, 0x123, (1 << 40) - 1], dtype=np.uint64)
    assert [int(v) for v in G.pfn_ptes(pfns, x.PAGE_KERNEL)] == [
        G.pfn_pte(int(p), x.PAGE_KERNEL) for p in pfns
    ]
    assert [int(v) for v in G.pte_range(0x100, 4, x.PAGE_KERNEL)] == [
        G.pfn_pte(0x100 + i, x.PAGE_KERNEL) for i in range(4)
    ]


def test_none_ignores_knl_erratum_bits() -> None:
    for none in (x.pte_none, x.pmd_none, x.pud_none, x.p4d_none):
        assert none(0) and none(A | D) and not none(P) and not none(0x1000)


def test_protnone_and_present() -> None:
    pte = G.pfn_pte(0x42, x.PAGE_NONE)
    assert x.pte_protnone(pte) and x.pte_present(pte) and not x.pte_valid(pte)
    assert not x.pte_protnone(G.pfn_pte(0x42, x.PAGE_KERNEL))  # present + global
    assert x.ptep_access_flags_merge(pte, 7) == 7


# --- layout and addresses -----------------------------------------------------------------------


def test_layout_constants() -> None:
    assert G.PAGE_OFFSET == 0xFFFF_8880_0000_0000
    assert G.PAGE_END == 0xFFFF_C880_0000_0000
    assert G.VMALLOC_START == 0xFFFF_C900_0000_0000
    assert G.VMALLOC_END == 0xFFFF_E8FF_FFFF_FFFF
    assert G.VMEMMAP_START == 0xFFFF_EA00_0000_0000
    assert G.KIMAGE_VADDR == 0xFFFF_FFFF_8100_0000
    assert G.MODULES_VADDR == 0xFFFF_FFFF_A000_0000
    assert G.MODULES_END == 0xFFFF_FFFF_FF00_0000
    assert G.FIXADDR_TOP == 0xFFFF_FFFF_FF7F_F000
    assert G.FIXADDR_START < 0xFFFF_FFFF_FF60_0000 < G.FIXADDR_TOP
    assert G.fix_to_virt(x.VSYSCALL_PAGE) == x.VSYSCALL_ADDR == 0xFFFF_FFFF_FF60_0000
    assert x.CPU_ENTRY_AREA_BASE == 0xFFFF_FE00_0000_0000
    assert G.PHYS_OFFSET == 0 and G.VA_BITS == 47 and x.TASK_SIZE_MAX == (1 << 47) - 4096
    assert G.MAX_DVM_OPS == 34
    regions = [
        (G.PAGE_OFFSET, G.PAGE_END),
        (G.VMALLOC_START, G.VMALLOC_END),
        (G.VMEMMAP_START, G.VMEMMAP_END),
        (x.__START_KERNEL_map, x.__START_KERNEL_map + x.KERNEL_IMAGE_SIZE),
        (G.MODULES_VADDR, G.MODULES_END),
        (G.FIXADDR_START, G.FIXADDR_TOP),
    ]
    for (_, e0), (s1, _) in itertools.pairwise(regions):
        assert e0 <= s1


def test_geometry() -> None:
    assert (G.PTRS_PER_PGD, G.PTRS_PER_P4D, G.PTRS_PER_PUD) == (512, 1, 512)
    assert (G.PTRS_PER_PMD, G.PTRS_PER_PTE, G.PGD_SIZE) == (512, 512, 4096)
    assert (G.PGDIR_SHIFT, G.P4D_SHIFT, G.PUD_SHIFT, G.PMD_SHIFT) == (39, 39, 30, 21)
    assert (G.mm_p4d_folded, G.mm_pud_folded, G.mm_pmd_folded) == (True, False, False)
    assert (G.PMD_ORDER, G.PUD_ORDER) == (9, 18)
    assert not G.ARCH_HAS_CONT_PTE and G.CONT_PTES == 1 and G.CONT_PMDS == 1
    assert not G.ARCH_HAS_PTE_BARRIERS
    va = 0xFFFF_C912_3456_7000
    assert G.pgd_addr_end(va, va + (1 << 40)) == (va | ((1 << 39) - 1)) + 1
    assert G.pmd_addr_end(va, va + 0x1000) == va + 0x1000
    assert G.p4d_addr_end(va, va + 5) == va + 5
    assert G.pud_addr_end(x.U64_MAX & ~0xFFF, 0) == 0  # end 0 = top of the address space
    with pytest.raises(ValueError, match="4096"):
        X86PgtableGeometry.for_page_size(16384)


@given(st.integers(0, (1 << 46) - 1))
def test_direct_map_va_pa_round_trip(pa: int) -> None:
    va = G.va(pa)
    assert G.is_lm_address(va) and G.pa(va) == pa


@pytest.mark.parametrize("kimage_pa", [None, 0x0, 0x20_0000, 0x4100_0000])
def test_image_pa_uses_phys_base(kimage_pa: int | None) -> None:
    g = X86PgtableGeometry.for_page_size(4096, kimage_pa=kimage_pa)
    load = 0x100_0000 if kimage_pa is None else kimage_pa
    assert g.phys_base == (load - 0x100_0000) & x.U64_MAX
    assert g.pa_symbol(g.KIMAGE_VADDR) == load
    assert g.pa(g.KIMAGE_VADDR + 0x1234) == load + 0x1234  # __pa of an image address
    assert g.phys_to_kimg(load + 0x5000) == g.KIMAGE_VADDR + 0x5000
    assert not g.is_lm_address(g.KIMAGE_VADDR)
    assert g.va(g.pa_symbol(g.KIMAGE_VADDR)) == g.PAGE_OFFSET + load  # lm_alias


def test_unaligned_image_rejected() -> None:
    with pytest.raises(ValueError, match="2 MiB"):
        X86PgtableGeometry.for_page_size(4096, kimage_pa=0x1000)


def test_vmemmap_page() -> None:
    assert G.vmemmap_page(0) == G.VMEMMAP_START
    assert G.vmemmap_page(0x1234) == G.VMEMMAP_START + 0x1234 * 64
    assert G.vmemmap_page((1 << 34) - 1) < G.VMEMMAP_END


# --- the generic interface ----------------------------------------------------------------------


def _api_members() -> list[str]:
    return sorted(
        n for n in vars(ArchPgtable) if not n.startswith("_") and n not in ("mro", "register")
    )


def test_satisfies_arch_pgtable() -> None:
    members = _api_members()
    assert len(members) > 100
    missing = [n for n in members if not hasattr(G, n)]
    assert missing == []
    for n in members:
        if isinstance(vars(ArchPgtable)[n], property):
            assert isinstance(getattr(G, n), (int, bool)), n
        else:
            assert callable(getattr(G, n)), n
