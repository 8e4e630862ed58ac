"""The MMU: table walks, the access check with the effective pkey register, the TLB."""

from __future__ import annotations

import numpy as np
import pytest
from tests.machine_helpers import TableBuilder, arm64_leaf

from kpkeys_sim.machine import CountingInstrument, Fault, Machine
from kpkeys_sim.machine.cpu import CHECKED_SYSREGS
from kpkeys_sim.machine.events import ISB, PKEY_REG_WRITE, TRANSLATION_MISS, WALK_ACCESS
from kpkeys_sim.machine.tlb import TlbEntry

KVA = 0xFFFF_0000_0010_0000  # a kernel (TTBR1) address


def _machine(page_size: int = 4096, **kw: object) -> tuple[Machine, TableBuilder]:
    m = Machine(arch="arm64", page_size=page_size, ram_size=64 << 20, **kw)  # type: ignore[arg-type]
    tb = TableBuilder(m)
    for cpu in m.cpus:
        cpu.ttbr1 = tb.root
        cpu.poe = cpu.e0poe = 1
        cpu.write_pkey_reg(0x17)  # POR_EL1_INIT: pkey 0 RWX, pkey 1 R
        cpu.write_user_pkey_reg(0x7)  # POR_EL0_INIT
        cpu.isb()
    return m, tb


@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
def test_walk_translates_pages_at_every_granule(page_size: int) -> None:
    """A level-3 page maps its VA to the right PA for 4K, 16K and 64K granules."""
    m, tb = _machine(page_size)
    pa = m.mem.base + 7 * page_size
    tb.map(KVA, pa, arm64_leaf(3))
    assert m.translate(m.cpus[0], KVA + 8, "R") == pa + 8
    m.store_u64(m.cpus[0], KVA + 8, 42)
    assert m.mem.read_u64(pa + 8) == 42


def test_block_mapping_translates_whole_block() -> None:
    """A level-2 block maps every address of its 2 MiB range."""
    m, tb = _machine()
    tb.map(0xFFFF_0000_0020_0000, m.mem.base + (2 << 20), arm64_leaf(2), level=2)
    assert m.translate(m.cpus[0], 0xFFFF_0000_003F_F000, "R") == m.mem.base + (4 << 20) - 0x1000


def test_unmapped_address_raises_translation_fault_with_level() -> None:
    """An invalid entry raises a translation fault naming the level and the access."""
    m, _ = _machine()
    with pytest.raises(Fault) as ei:
        m.store_u64(m.cpus[0], KVA, 1)
    f = ei.value
    assert (f.kind, f.level, f.access) == ("translation", 0, "W")
    assert f.syndrome & 0x3F == 0x04  # DFSC translation fault, level 0
    assert (f.syndrome >> 26) == 0x25 and f.syndrome & (1 << 6)


def test_overlay_denies_write_to_pkey1_page_and_allows_after_isb() -> None:
    """POR_EL1_INIT makes pkey 1 read-only; RW for pkey 1 takes effect only after the ISB."""
    m, tb = _machine()
    cpu = m.cpus[0]
    tb.map(KVA, m.mem.base, arm64_leaf(3, pkey=1))
    assert m.load_u64(cpu, KVA) == 0
    with pytest.raises(Fault) as ei:
        m.store_u64(cpu, KVA, 1)
    assert ei.value.result == "overlay_fault" and ei.value.overlay and ei.value.pkey == 1
    assert ei.value.syndrome == 0x0000_0040_9600_004F
    cpu.write_pkey_reg(0x57)  # pkey 1 RW, not yet synchronised
    with pytest.raises(Fault):
        m.store_u64(cpu, KVA, 1)
    cpu.isb()
    m.store_u64(cpu, KVA, 1)
    assert m.mem.read_u64(m.mem.base) == 1


def test_negative_control_without_poe_the_overlay_is_ignored() -> None:
    """With TCR2_EL1.POE = 0 or no pkeys the same write is allowed: the fault was the overlay's."""
    m, tb = _machine()
    tb.map(KVA, m.mem.base, arm64_leaf(3, pkey=1))
    m.cpus[0].poe = 0
    m.store_u64(m.cpus[0], KVA, 5)
    m2, tb2 = _machine(has_pkeys=False)
    tb2.map(KVA, m2.mem.base, arm64_leaf(3, pkey=1))
    m2.store_u64(m2.cpus[0], KVA, 5)


def test_base_permission_fault_on_read_only_page() -> None:
    """AP = 10 (read-only) with a permissive overlay gives a base permission fault."""
    m, tb = _machine()
    tb.map(KVA, m.mem.base, arm64_leaf(3, ap=0b10))
    with pytest.raises(Fault) as ei:
        m.store_u64(m.cpus[0], KVA, 1)
    assert ei.value.result == "base_fault" and not ei.value.overlay


def test_stale_tlb_entry_stays_until_tlbi() -> None:
    """Changing a live descriptor's pkey has no effect until the TLB entry is invalidated."""
    m, tb = _machine()
    cpu = m.cpus[0]
    epa = tb.map(KVA, m.mem.base, arm64_leaf(3, pkey=0))
    m.store_u64(cpu, KVA, 1)  # fills the TLB
    m.mem.write_u64(epa, m.mem.base | arm64_leaf(3, pkey=1))
    m.store_u64(cpu, KVA, 2)  # stale entry: still pkey 0
    m.tlbi_va(KVA)
    with pytest.raises(Fault):
        m.store_u64(cpu, KVA, 3)


def test_tlbi_broadcasts_to_every_cpu() -> None:
    """A broadcast TLBI removes the entry from every CPU's TLB."""
    m, tb = _machine(nr_cpus=2)
    epa = tb.map(KVA, m.mem.base, arm64_leaf(3))
    for cpu in m.cpus:
        m.load_u64(cpu, KVA)
    assert all(len(t) == 1 for t in m.tlbs)
    m.mem.write_u64(epa, 0)
    m.tlbi_va(KVA)
    for cpu in m.cpus:
        with pytest.raises(Fault):
            m.load_u64(cpu, KVA)


def test_asid_tagged_user_entries() -> None:
    """nG user entries are per ASID; TLBI ASID removes only that ASID's entries."""
    m, tb = _machine()
    cpu = m.cpus[0]
    root0 = tb.new_table()
    cpu.ttbr0 = root0
    uva = 0x40_0000
    tb.map(uva, m.mem.base, arm64_leaf(3, ap=0b01, ng=True, uxn=False), root=root0)
    cpu.asid = 5
    m.translate(cpu, uva, "R", el=0)
    cpu.asid = 6
    cpu.ttbr0 = tb.new_table()  # ASID 6 has nothing mapped
    with pytest.raises(Fault):
        m.translate(cpu, uva, "R", el=0)
    cpu.asid = 5
    cpu.ttbr0 = root0
    tb.map(uva, 0, 0, root=root0)  # unmap in memory only
    m.translate(cpu, uva, "R", el=0)  # stale ASID-5 entry
    m.tlbi_asid(5)
    with pytest.raises(Fault):
        m.translate(cpu, uva, "R", el=0)


def test_events_counted() -> None:
    """Register writes, ISBs, misses and walker accesses are reported to instruments."""
    counter = CountingInstrument()
    m, tb = _machine(instruments=[counter])
    counter.reset()
    tb.map(KVA, m.mem.base, arm64_leaf(3))
    m.load_u64(m.cpus[0], KVA)
    m.load_u64(m.cpus[0], KVA)
    assert counter.counts[TRANSLATION_MISS] == 1
    assert counter.counts[WALK_ACCESS] == 4
    m.cpus[0].write_pkey_reg(0x57)
    m.cpus[0].isb()
    assert counter.counts[PKEY_REG_WRITE] == 1 and counter.counts[ISB] == 1


def test_store_pt_entries_checks_once_and_counts_entries() -> None:
    """A bulk page-table store is checked against the page's alias and counts its entries."""
    import numpy as np

    counter = CountingInstrument()
    m, tb = _machine(instruments=[counter])
    tb.map(KVA, m.mem.base, arm64_leaf(3, pkey=1))
    vals = np.arange(512, dtype=np.uint64)
    with pytest.raises(Fault):
        m.store_pt_entries(m.cpus[0], KVA, vals)
    m.cpus[0].write_pkey_reg(0x57)
    m.cpus[0].isb()
    m.store_pt_entries(m.cpus[0], KVA, vals)
    assert counter.counts["pt_write"] == 512
    assert m.mem.read_u64(m.mem.base + 8 * 511) == 511


def test_x86_walk_with_large_page_and_pks() -> None:
    """x86: a 2 MiB PS leaf translates; PKRS write-disable gives a pk fault with the PK bit."""
    m = Machine(arch="x86", ram_size=64 << 20)
    tb = TableBuilder(m)
    cpu = m.cpus[0]
    cpu.ttbr1 = tb.root
    cpu.pks = 1
    # present | RW | PS | global, key 1, supervisor
    tb.map(KVA & ~0x1FFFFF, m.mem.base, 0x1 | 0x2 | 0x80 | 0x100 | (1 << 59), level=2)
    m.store_u64(cpu, KVA, 9)
    cpu.write_pkey_reg(0b1000)  # WD for key 1; x86 needs no barrier
    with pytest.raises(Fault) as ei:
        m.store_u64(cpu, KVA, 9)
    assert ei.value.result == "pk_fault" and ei.value.syndrome == 0x23


def test_verdict_cache_follows_system_register_writes() -> None:
    """A cached verdict never outlives a write of a register the check reads.

    Clearing TCR2_EL1.POE after a denied write must allow it, and setting it
    again must deny it again, with the same TLB entry (only the CPU's cached
    verdict table changes).
    """
    m, tb = _machine()
    cpu = m.cpus[0]
    tb.map(KVA, m.mem.base, arm64_leaf(3, pkey=1))
    with pytest.raises(Fault):
        m.store_u64(cpu, KVA, 1)
    cpu.poe = 0
    m.store_u64(cpu, KVA, 2)
    cpu.poe = 1
    with pytest.raises(Fault):
        m.store_u64(cpu, KVA, 3)
    assert cpu.sysregs == tuple(getattr(cpu, n) for n in CHECKED_SYSREGS)
    assert m.mem.read_u64(m.mem.base) == 2


def test_tlb_entry_attr_key_ignores_only_the_output_address() -> None:
    """``attr_key`` is equal for entries differing only in the output address, else different."""
    d = arm64_leaf(3)
    a = TlbEntry(d | 0x1000, 3, 12, 0x1000)
    assert a.attr_key == TlbEntry(d | 0x7000, 3, 12, 0x7000).attr_key
    others = [
        TlbEntry(d, 2, 21, 0),
        TlbEntry(d, 3, 12, 0, us=False),
        TlbEntry(d, 3, 12, 0, rw=False),
    ]
    assert len({a.attr_key, *(e.attr_key for e in others)}) == 4


def test_load_entries_is_a_checked_copy() -> None:
    """``load_entries`` reads through the MMU (one check) and returns a copy."""
    m, tb = _machine()
    cpu = m.cpus[0]
    tb.map(KVA, m.mem.base, arm64_leaf(3))
    m.store_pt_entries(cpu, KVA + 16, np.arange(1, 4, dtype=np.uint64))
    got = m.load_entries(cpu, KVA + 8, 4)
    assert got.tolist() == [0, 1, 2, 3]
    got[1] = 9
    assert m.load_u64(cpu, KVA + 16) == 1
    with pytest.raises(ValueError):
        m.load_entries(cpu, KVA + 4088, 2)
    with pytest.raises(Fault):
        m.load_entries(cpu, KVA + (1 << 20), 1)
