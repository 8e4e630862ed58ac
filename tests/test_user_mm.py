"""User address spaces: faults, COW, fork, munmap, exit — and no page or page-table leaks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from tests.strategies import user_mm_fractions, user_mm_kinds, user_mm_lengths, user_mm_payloads

from kpkeys_sim.kernel.arch.arm64_pgtable import PTE_DIRTY, PTE_RDONLY, PTE_WRITE, pmd_leaf
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.fork import (
    create_user_task,
    do_exit,
    kernel_clone,
    kernel_wait,
)
from kpkeys_sim.kernel.mm.memory import (
    UserFault,
    file,
    filp_create,
    fput,
    user_mm_init,
    user_read,
    user_write,
)
from kpkeys_sim.kernel.mm.mm_types import MM_ANONPAGES, mm_struct
from kpkeys_sim.kernel.mm.mmap import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    do_madvise,
    do_mmap,
    do_munmap,
)
from kpkeys_sim.kernel.mm.page import PG_table
from kpkeys_sim.kernel.mm.page_alloc import nr_free_pages
from kpkeys_sim.kernel.mm.pgtable import pgd_offset, pmd_offset, ptep_get, pud_offset
from kpkeys_sim.kernel.sched import current, finish_lazy_tlb, schedule_to, task_struct
from kpkeys_sim.machine import CountingInstrument, Fault, Instrument

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON_PRIVATE = MAP_PRIVATE | MAP_ANONYMOUS


def _boot(**kw: object) -> tuple[Kernel, CountingInstrument]:
    counter = CountingInstrument()
    cfg = KernelConfig(ram_size=256 << 20, **kw)  # type: ignore[arg-type]
    k = boot(cfg, instruments=[counter])
    user_mm_init(k)
    return k, counter


def _pte(k: Kernel, mm: mm_struct, addr: int) -> int:
    pudp = pud_offset(k, pgd_offset(k, mm, addr), addr)
    pmdp = pmd_offset(k, pudp, addr)
    pmd = k.machine.load_u64(k.cpu, pmdp)
    assert pmd and not pmd_leaf(pmd)
    g = k.pgt
    return ptep_get(k, g.va(pmd & ((1 << 48) - 1) & ~0xFFF) + 8 * g.pte_index(addr))


def _pt_pages(k: Kernel) -> int:
    assert k.mem_map is not None
    return k.mem_map.count_flag(PG_table)


def _mm_pt_pages(mm: mm_struct) -> int:
    """Page-table pages an mm owns: its tables and its (page-sized, 4K) pgd."""
    return mm.nr_ptes + mm.nr_pmds + mm.nr_puds + 1


def _walk_tables(k: Kernel, mm: mm_struct) -> tuple[int, int, int]:
    """``(pud, pmd, pte)`` tables reachable from ``mm``'s pgd (4K, 4 levels), by a table walk."""
    g = k.pgt
    mask = ((1 << 48) - 1) & ~0xFFF
    pgd = k.machine.load_table(k.cpu, mm.pgd)
    counts = [0, 0, 0]
    for e1 in pgd[pgd != 0].tolist():
        counts[0] += 1
        pud = k.machine.load_table(k.cpu, g.va(e1 & mask))
        for e2 in pud[pud != 0].tolist():
            counts[1] += 1
            pmd = k.machine.load_table(k.cpu, g.va(e2 & mask))
            counts[2] += int(np.count_nonzero(pmd))
    return counts[0], counts[1], counts[2]


def _free(k: Kernel) -> int:
    assert k.zone is not None
    return nr_free_pages(k.zone)


@pytest.fixture
def kk() -> tuple[Kernel, CountingInstrument]:
    return _boot(kpkeys_hardened_pgtables=False)


def _process(k: Kernel, name: str = "p") -> task_struct:
    t = create_user_task(k, name)
    schedule_to(k, t)
    return t


def _process_mapping(k: Kernel, size: int, flags: int = ANON_PRIVATE) -> tuple[task_struct, int]:
    """A scheduled process with one fresh ``RW`` mapping of ``size`` bytes; its address."""
    p = _process(k)
    assert p.mm is not None
    return p, do_mmap(k, p.mm, 0, size, RW, flags)


def test_fork_child_sees_parent_data_through_its_own_tables(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """Data written by the parent before fork is read by the child with EL0 accesses."""
    k, _ = kk
    parent, a = _process_mapping(k, 16 * PAGE)
    for i in range(16):
        user_write(k, a + i * PAGE + 7, bytes([i + 1]) * 5)
    child = kernel_clone(k)
    assert child is not None and child.mm is not None
    schedule_to(k, child)
    assert k.cpu.ttbr0 == child.mm.pgd_phys and k.cpu.asid == child.mm.context_id
    assert child.mm.context_id != parent.mm.context_id
    for i in range(16):
        pa = k.machine.translate(k.cpu, a + i * PAGE + 7, "R", el=0)
        assert k.machine.mem.read_bytes(pa, 5) == bytes([i + 1]) * 5


def test_cow_isolates_writes_in_both_directions(kk: tuple[Kernel, CountingInstrument]) -> None:
    """After fork, a write by either process is invisible to the other (copy on write)."""
    k, counter = kk
    parent, a = _process_mapping(k, 4 * PAGE)
    user_write(k, a, b"original")
    user_write(k, a + PAGE, b"second")
    child = kernel_clone(k)
    assert child is not None
    schedule_to(k, child)
    user_write(k, a, b"CHILD!!!")
    schedule_to(k, parent)
    assert user_read(k, a, 8) == b"original"
    user_write(k, a + PAGE, b"PARENT")
    schedule_to(k, child)
    assert user_read(k, a, 8) == b"CHILD!!!"
    assert user_read(k, a + PAGE, 6) == b"second"
    assert counter.counts["cow_break"] == 2


def test_fork_write_protects_both_and_flushes_parent_tlb(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """Fork clears PTE_WRITE in parent and child PTEs and flushes the parent's ASID."""
    k, counter = kk
    parent, a = _process_mapping(k, 2 * PAGE)
    user_write(k, a, b"x")
    assert _pte(k, parent.mm, a) & PTE_WRITE
    k.machine.translate(k.cpu, a, "W", el=0)  # a writable TLB entry is cached
    before = counter.counts["tlbi_asid"]
    child = kernel_clone(k)
    assert child is not None and child.mm is not None
    assert counter.counts["tlbi_asid"] == before + 1
    for mm in (parent.mm, child.mm):
        pte = _pte(k, mm, a)
        # write-protected, read-only, and the hardware-dirty state kept as PTE_DIRTY
        assert (pte & PTE_WRITE, pte & PTE_RDONLY, pte & PTE_DIRTY) == (0, PTE_RDONLY, PTE_DIRTY)
    with pytest.raises(Fault):
        k.machine.translate(k.cpu, a, "W", el=0)


def test_munmap_frees_every_page_table_page_that_became_empty(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """Unmapping frees the PTE tables covering only the hole, and keeps shared ones."""
    k, _ = kk
    g = k.pgt
    p = _process(k)
    mm = p.mm
    assert mm is not None
    base_pt = _pt_pages(k)
    # 8 MiB, PMD aligned (anonymous, PMD multiple): 4 PTE tables once populated.
    a = do_mmap(k, mm, 0, 8 << 20, RW, ANON_PRIVATE | MAP_POPULATE)
    assert a % g.PMD_SIZE == 0
    assert mm.nr_ptes == 4
    assert _pt_pages(k) == base_pt + 4 + 1 + 1  # 4 PTE, 1 PMD, 1 PUD table
    # Unmap the 2nd and 3rd MiB-2 ranges: [a + 2M, a + 6M) covers tables 1 and 2 exactly.
    assert do_munmap(k, mm, a + (2 << 20), 4 << 20) == 0
    assert mm.nr_ptes == 2
    assert _pt_pages(k) == base_pt + 2 + 1 + 1
    # A hole inside one table keeps it (its other pages stay mapped).
    assert do_munmap(k, mm, a + PAGE, PAGE) == 0
    assert mm.nr_ptes == 2
    # Unmapping the rest empties everything below the pgd.
    assert do_munmap(k, mm, a, 2 << 20) == 0
    assert do_munmap(k, mm, a + (6 << 20), 2 << 20) == 0
    assert (mm.nr_ptes, mm.nr_pmds, mm.nr_puds) == (0, 0, 0)
    assert _pt_pages(k) == base_pt


def test_munmap_keeps_a_table_shared_with_a_neighbouring_vma(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """free_pgd_range's floor/ceiling: a PTE table still covering another VMA survives."""
    k, _ = kk
    g = k.pgt
    p = _process(k)
    mm = p.mm
    assert mm is not None
    a = do_mmap(k, mm, 0, 2 << 20, RW, ANON_PRIVATE)
    assert a % g.PMD_SIZE == 0
    assert do_munmap(k, mm, a, 2 << 20) == 0
    lo = do_mmap(k, mm, a, 8 * PAGE, RW, ANON_PRIVATE | MAP_FIXED)
    hi = do_mmap(k, mm, a + 16 * PAGE, 8 * PAGE, RW, ANON_PRIVATE | MAP_FIXED)
    assert (lo, hi) == (a, a + 16 * PAGE)
    user_write(k, lo, b"a")
    user_write(k, hi, b"b")
    assert mm.nr_ptes == 1
    assert do_munmap(k, mm, hi, 8 * PAGE) == 0
    assert mm.nr_ptes == 1  # the table also maps `lo`
    assert user_read(k, lo, 1) == b"a"
    assert do_munmap(k, mm, lo, 8 * PAGE) == 0
    assert mm.nr_ptes == 0


def test_read_fault_maps_the_zero_page_then_write_breaks_it(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """A read of fresh anonymous memory maps the zero page; a write replaces it."""
    k, counter = kk
    p, a = _process_mapping(k, PAGE)
    assert user_read(k, a, 4) == bytes(4)
    assert p.mm.rss_stat[MM_ANONPAGES] == 0
    zero = k.user_mm.zero_pfn
    assert k.pgt.pte_pfn(_pte(k, p.mm, a)) == zero
    user_write(k, a, b"zz")
    assert k.pgt.pte_pfn(_pte(k, p.mm, a)) != zero
    assert p.mm.rss_stat[MM_ANONPAGES] == 1
    assert counter.counts["cow_break"] == 1


def test_shared_anonymous_mapping_is_not_copied_and_stays_shared(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """MAP_SHARED memory: fork copies no page tables and writes are seen by both."""
    k, _ = kk
    parent, a = _process_mapping(k, 4 * PAGE, MAP_SHARED | MAP_ANONYMOUS)
    user_write(k, a, b"shared")
    child = kernel_clone(k)
    assert child is not None and child.mm is not None
    assert child.mm.nr_ptes == 0
    schedule_to(k, child)
    assert user_read(k, a, 6) == b"shared"
    user_write(k, a, b"CHANGE")
    schedule_to(k, parent)
    assert user_read(k, a, 6) == b"CHANGE"


def test_private_file_write_does_not_reach_the_page_cache(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """A write to a private file mapping copies the page; the file keeps its data."""
    k, _ = kk
    p = _process(k)
    assert p.mm is not None
    f = filp_create(k, "data", 2 * PAGE)
    shared = do_mmap(k, p.mm, 0, 2 * PAGE, RW, MAP_SHARED, f)
    private = do_mmap(k, p.mm, 0, 2 * PAGE, RW, MAP_PRIVATE, f)
    user_write(k, shared, b"file")
    assert user_read(k, private, 4) == b"file"
    user_write(k, private, b"mine")
    assert user_read(k, shared, 4) == b"file"
    assert user_read(k, private, 4) == b"mine"
    fput(k, f)


def test_access_outside_a_vma_or_against_its_protection_is_sigsegv(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """Unmapped addresses and writes to read-only VMAs raise SIGSEGV; beyond EOF is SIGBUS."""
    k, _ = kk
    p = _process(k)
    assert p.mm is not None
    ro = do_mmap(k, p.mm, 0, PAGE, PROT_READ, ANON_PRIVATE)
    with pytest.raises(UserFault) as e1:
        user_write(k, ro, b"x")
    assert (e1.value.signal, e1.value.code) == ("SIGSEGV", "SEGV_ACCERR")
    with pytest.raises(UserFault) as e2:
        user_read(k, 0x20000, 1)
    assert e2.value.code == "SEGV_MAPERR"
    f = filp_create(k, "short", PAGE)
    m = do_mmap(k, p.mm, 0, 2 * PAGE, PROT_READ, MAP_SHARED, f)
    fput(k, f)
    with pytest.raises(UserFault) as e3:
        user_read(k, m + PAGE, 1)
    assert e3.value.signal == "SIGBUS"


def test_huge_folio_is_pte_mapped_and_fork_exit_leaks_nothing(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """MADV_HUGEPAGE: one PMD_ORDER folio mapped by 512 PTEs; COW copies one page."""
    k, counter = kk
    g = k.pgt
    free0 = _free(k)
    pt0 = _pt_pages(k)
    p, a = _process_mapping(k, 2 << 20)
    assert do_madvise(k, p.mm, a, 2 << 20, MADV_HUGEPAGE) == 0
    user_write(k, a + 5 * PAGE, b"huge")
    first = k.pgt.pte_pfn(_pte(k, p.mm, a))
    last = k.pgt.pte_pfn(_pte(k, p.mm, a + (2 << 20) - PAGE))
    assert last == first + g.PTRS_PER_PTE - 1
    assert k.mem_map is not None
    assert k.mem_map.compound_order[first - k.mem_map.base_pfn] == g.PMD_ORDER
    child = kernel_clone(k)
    assert child is not None
    schedule_to(k, child)
    user_write(k, a + 5 * PAGE, b"HUGE")
    assert counter.counts["cow_break"] == 1
    do_exit(k)
    assert current(k) is p
    assert user_read(k, a + 5 * PAGE, 4) == b"huge"
    assert kernel_wait(k, p) == (child.pid, 0)
    user_write(k, a + 6 * PAGE, b"reuse")  # the folio is exclusive again: no copy
    assert counter.counts["cow_break"] == 1
    do_exit(k)
    finish_lazy_tlb(k)
    assert _free(k) == free0
    assert _pt_pages(k) == pt0


def test_madv_dontneed_frees_pages_and_keeps_tables(kk: tuple[Kernel, CountingInstrument]) -> None:
    """MADV_DONTNEED zaps the range (pages freed, reads see zeros) but keeps the PTE table."""
    k, _ = kk
    p, a = _process_mapping(k, 4 * PAGE, ANON_PRIVATE | MAP_POPULATE)
    user_write(k, a + PAGE, b"gone")
    free0 = _free(k)
    assert do_madvise(k, p.mm, a + PAGE, 2 * PAGE, MADV_DONTNEED) == 0
    assert _free(k) == free0 + 2
    assert p.mm.rss_stat[MM_ANONPAGES] == 2 and p.mm.nr_ptes == 1
    assert user_read(k, a + PAGE, 4) == bytes(4)


def test_exit_frees_everything_and_releases_the_asid(
    kk: tuple[Kernel, CountingInstrument],
) -> None:
    """exit_mmap + mmdrop give back data pages, page tables, the pgd and the ASID."""
    k, _ = kk
    free0 = _free(k)
    pt0 = _pt_pages(k)
    p = _process(k)
    assert p.mm is not None
    asid = p.mm.context_id
    a = do_mmap(k, p.mm, 0, 3 << 20, RW, ANON_PRIVATE | MAP_POPULATE)
    user_write(k, a, b"bye")
    do_exit(k, 3)
    finish_lazy_tlb(k)
    assert _free(k) == free0
    assert _pt_pages(k) == pt0
    assert asid in k.sched.asid_free


def test_fork_with_hardened_pgtables_has_no_overlay_faults() -> None:
    """With kpkeys_hardened_pgtables on, fork/COW/exit write page tables only at PGTABLES."""
    k, counter = _boot(kpkeys_hardened_pgtables=True)
    kernel_faults: list[Fault] = []

    class KernelFaults(Instrument):
        def on_fault(self, fault: object) -> None:
            assert isinstance(fault, Fault)
            if fault.el == 1:
                kernel_faults.append(fault)

    k.machine.instruments.add(KernelFaults())
    free0 = _free(k)
    p, a = _process_mapping(k, 4 << 20, ANON_PRIVATE | MAP_POPULATE)
    user_write(k, a, b"parent")
    child = kernel_clone(k)
    assert child is not None
    schedule_to(k, child)
    user_write(k, a, b"child!")
    do_exit(k)
    kernel_wait(k, p)
    assert user_read(k, a, 6) == b"parent"
    do_exit(k)
    finish_lazy_tlb(k)
    assert kernel_faults == []
    assert counter.faults == 1  # the child's copy-on-write fault at EL0
    assert counter.counts["lazy_mmu_section"] > 0
    assert _free(k) <= free0  # the PBA may keep pages cached for page tables


# --- random operations: a reference model ------------------------------------------------------


@dataclass
class Mapping:
    """One mapping of a process: its range, kind, backing key and offset in the backing."""

    addr: int
    pages: int
    kind: str
    backing: int
    off: int = 0


@dataclass
class Proc:
    """A process of the model world and the bytes it expects in its private mappings."""

    task: task_struct
    maps: list[Mapping] = field(default_factory=list)
    private: dict[int, int] = field(default_factory=dict)


class World:
    """Random user-mm operations with an independent model of the expected memory contents."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.procs: list[Proc] = []
        self.shared: dict[int, dict[int, int]] = {}
        self.next_backing = 1
        self.free0 = _free(k)
        self.pt0 = _pt_pages(k)
        #: The last writes ``(va, length)``: reads of them (by any process mapping the
        #: address) are what catches a write leaking across a fork.
        self.recent: list[tuple[int, int]] = []

    def run(self, p: Proc) -> None:
        schedule_to(self.k, p.task)

    def spawn(self) -> None:
        t = create_user_task(self.k, f"p{len(self.procs)}")
        self.procs.append(Proc(t))

    def mmap(self, p: Proc, kind: str, pages: int) -> None:
        k = self.k
        self.run(p)
        mm = p.task.mm
        assert mm is not None
        length = pages * PAGE
        f: file | None = None
        if kind in ("anon_private", "anon_huge"):
            addr = do_mmap(k, mm, 0, length, RW, ANON_PRIVATE)
        elif kind == "anon_shared":
            addr = do_mmap(k, mm, 0, length, RW, MAP_SHARED | MAP_ANONYMOUS)
        else:
            f = filp_create(k, "f", length)
            flags = MAP_PRIVATE if kind == "file_private" else MAP_SHARED
            addr = do_mmap(k, mm, 0, length, RW, flags, f)
            fput(k, f)
        assert addr > 0
        if kind == "anon_huge":
            assert do_madvise(k, mm, addr, length, MADV_HUGEPAGE) == 0
        backing = self.next_backing
        self.next_backing += 1
        if kind in ("anon_shared", "file_shared"):
            self.shared[backing] = {}
        p.maps.append(Mapping(addr, pages, kind, backing))

    def _store(self, p: Proc, m: Mapping) -> dict[int, int]:
        return self.shared.get(m.backing, p.private)

    def _key(self, m: Mapping, va: int) -> int:
        return va - m.addr + m.off if m.backing in self.shared else va

    def write(self, p: Proc, m: Mapping, frac: float, data: bytes) -> None:
        data = data[: m.pages * PAGE]
        va = m.addr + max(0, min(int(frac * m.pages * PAGE), m.pages * PAGE - len(data)))
        self.run(p)
        user_write(self.k, va, data)
        store = self._store(p, m)
        for i, b in enumerate(data):
            store[self._key(m, va + i)] = b
        self.recent = [*self.recent[-31:], (va, len(data))]

    def read_recent(self, pick: int, who: int) -> None:
        """Re-read a recent write's bytes from a process mapping that address (if any)."""
        if not self.recent:
            return
        va, n = self.recent[pick % len(self.recent)]
        holders = [
            (p, m)
            for p in self.procs
            for m in p.maps
            if m.addr <= va and va + n <= m.addr + m.pages * PAGE
        ]
        if holders:
            p, m = holders[who % len(holders)]
            self.read_at(p, m, va, n)

    def read(self, p: Proc, m: Mapping, frac: float, n: int) -> None:
        self.read_at(p, m, m.addr + max(0, min(int(frac * m.pages * PAGE), m.pages * PAGE - n)), n)

    def read_at(self, p: Proc, m: Mapping, va: int, n: int) -> None:
        self.run(p)
        got = user_read(self.k, va, n)
        store = self._store(p, m)
        want = bytes(store.get(self._key(m, va + i), 0) for i in range(n))
        assert got == want, f"pid {p.task.pid} read {got!r} at {va:#x}, expected {want!r}"

    def fork(self, p: Proc) -> None:
        self.run(p)
        c = kernel_clone(self.k)
        assert c is not None
        self.procs.append(
            Proc(
                c,
                [Mapping(m.addr, m.pages, m.kind, m.backing, m.off) for m in p.maps],
                dict(p.private),
            )
        )

    def munmap(self, p: Proc, m: Mapping, part: int) -> None:
        """``part`` 0: the whole mapping; 1: its first half; 2: its last page."""
        self.run(p)
        mm = p.task.mm
        assert mm is not None
        if part == 0 or m.pages == 1:
            start, pages = m.addr, m.pages
        elif part == 1:
            start, pages = m.addr, m.pages // 2
        else:
            start, pages = m.addr + (m.pages - 1) * PAGE, 1
        assert do_munmap(self.k, mm, start, pages * PAGE) == 0
        end = start + pages * PAGE
        for va in [v for v in p.private if start <= v < end]:
            del p.private[va]
        p.maps.remove(m)
        if start > m.addr:
            p.maps.append(Mapping(m.addr, (start - m.addr) // PAGE, m.kind, m.backing, m.off))
        if end < m.addr + m.pages * PAGE:
            tail = (m.addr + m.pages * PAGE - end) // PAGE
            p.maps.append(Mapping(end, tail, m.kind, m.backing, m.off + end - m.addr))

    def exit(self, p: Proc) -> None:
        self.run(p)
        do_exit(self.k)
        parent = p.task.parent
        assert parent is not None
        assert kernel_wait(self.k, parent, p.task.pid) == (p.task.pid, 0)
        self.procs.remove(p)

    def check_tables(self) -> None:
        """Every page-table page belongs to a live mm; every mapped page is counted once."""
        k = self.k
        live = {id(p.task.mm): p.task.mm for p in self.procs if p.task.mm is not None}
        for t in k.cpu_curr:  # a dead mm lent to the idle task (lazy TLB) keeps its pgd
            if t is not None and t.active_mm is not None and t.active_mm is not k.init_mm:
                live[id(t.active_mm)] = t.active_mm
        assert _pt_pages(k) == self.pt0 + sum(_mm_pt_pages(mm) for mm in live.values())
        for mm in live.values():
            assert _walk_tables(k, mm) == (mm.nr_puds, mm.nr_pmds, mm.nr_ptes), mm
        assert k.mem_map is not None
        mapped = sum(sum(mm.rss_stat) for mm in live.values())
        assert int(k.mem_map.mapcount.sum()) == mapped

    def finish(self) -> None:
        for p in list(self.procs):
            self.exit(p)
        finish_lazy_tlb(self.k)
        assert _pt_pages(self.k) == self.pt0
        assert _free(self.k) == self.free0
        assert not self.k.user_mm.files


class UserMmMachine(RuleBasedStateMachine):
    """Random mmap/write/read/fork/munmap/exit sequences against the reference model."""

    def __init__(self) -> None:
        super().__init__()
        self.w: World | None = None

    @initialize()
    def start(self) -> None:
        k, _ = _boot(kpkeys_hardened_pgtables=False)
        self.w = World(k)
        self.w.spawn()

    @property
    def world(self) -> World:
        assert self.w is not None
        return self.w

    @precondition(lambda self: self.w is not None and len(self.w.procs) < 4)
    @rule()
    def spawn(self) -> None:
        self.world.spawn()

    @precondition(lambda self: self.w is not None and bool(self.w.procs))
    @rule(data=st.data(), kind=user_mm_kinds, pages=user_mm_lengths)
    def mmap(self, data: st.DataObject, kind: str, pages: int) -> None:
        p = data.draw(st.sampled_from(self.world.procs))
        if len(p.maps) < 4:
            self.world.mmap(p, kind, pages)

    @precondition(lambda self: self.w is not None and any(p.maps for p in self.w.procs))
    @rule(data=st.data(), frac=user_mm_fractions, payload=user_mm_payloads)
    def write(self, data: st.DataObject, frac: float, payload: bytes) -> None:
        p = data.draw(st.sampled_from([p for p in self.world.procs if p.maps]))
        m = data.draw(st.sampled_from(p.maps))
        self.world.write(p, m, frac, payload)

    @precondition(lambda self: self.w is not None and any(p.maps for p in self.w.procs))
    @rule(data=st.data(), frac=user_mm_fractions, n=st.integers(1, 24))
    def read(self, data: st.DataObject, frac: float, n: int) -> None:
        p = data.draw(st.sampled_from([p for p in self.world.procs if p.maps]))
        m = data.draw(st.sampled_from(p.maps))
        self.world.read(p, m, frac, min(n, m.pages * PAGE))

    @precondition(lambda self: self.w is not None and bool(self.w.recent))
    @rule(pick=st.integers(0, 31), who=st.integers(0, 7))
    def read_recent(self, pick: int, who: int) -> None:
        self.world.read_recent(pick, who)

    @precondition(
        lambda self: (
            self.w is not None and 0 < len(self.w.procs) < 5 and any(p.maps for p in self.w.procs)
        )
    )
    @rule(data=st.data(), frac=user_mm_fractions, payload=user_mm_payloads)
    def cow_probe(self, data: st.DataObject, frac: float, payload: bytes) -> None:
        """Fork, then a write in each process is read back in the other at the same place."""
        w = self.world
        p = data.draw(st.sampled_from([p for p in w.procs if p.maps]))
        m = data.draw(st.sampled_from(p.maps))
        w.fork(p)
        child = w.procs[-1]
        cm = next(x for x in child.maps if x.addr == m.addr)
        n = min(len(payload), m.pages * PAGE)
        w.write(p, m, frac, payload)
        w.read(child, cm, frac, n)
        w.write(child, cm, frac, payload[::-1])
        w.read(p, m, frac, n)

    @precondition(lambda self: self.w is not None and 0 < len(self.w.procs) < 5)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        self.world.fork(data.draw(st.sampled_from(self.world.procs)))

    @precondition(lambda self: self.w is not None and any(p.maps for p in self.w.procs))
    @rule(data=st.data(), part=st.integers(0, 2))
    def munmap(self, data: st.DataObject, part: int) -> None:
        p = data.draw(st.sampled_from([p for p in self.world.procs if p.maps]))
        self.world.munmap(p, data.draw(st.sampled_from(p.maps)), part)

    @precondition(lambda self: self.w is not None and bool(self.w.procs))
    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        self.world.exit(data.draw(st.sampled_from(self.world.procs)))

    @invariant()
    def tables_accounted(self) -> None:
        if self.w is not None:
            self.w.check_tables()

    def teardown(self) -> None:
        if self.w is not None:
            self.w.finish()


UserMmMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_user_mm_state_machine = UserMmMachine.TestCase


@pytest.mark.slow
def test_ten_thousand_random_operations_leak_nothing() -> None:
    """10,000 seeded random operations keep the books and end with no page or table leak."""
    k, _ = _boot(kpkeys_hardened_pgtables=False)
    w = World(k)
    rng = np.random.default_rng(20260227)
    kinds = ("anon_private", "anon_private", "anon_shared", "anon_huge", "file_private")
    for step in range(10_000):
        op = int(rng.integers(0, 100))
        procs = w.procs
        with_maps = [p for p in procs if p.maps]
        if not procs or (op < 4 and len(procs) < 4):
            w.spawn()
        elif op < 14 and len(procs[int(rng.integers(len(procs)))].maps) < 4:
            p = procs[int(rng.integers(len(procs)))]
            pages = int(rng.integers(1, 9)) if rng.random() < 0.7 else int(rng.integers(500, 1100))
            w.mmap(p, kinds[int(rng.integers(len(kinds)))], pages)
        elif op < 50 and with_maps:
            p = with_maps[int(rng.integers(len(with_maps)))]
            m = p.maps[int(rng.integers(len(p.maps)))]
            data = bytes(rng.integers(1, 256, int(rng.integers(1, 16))).astype(np.uint8))
            w.write(p, m, float(rng.random()), data)
        elif op < 65 and w.recent:
            w.read_recent(int(rng.integers(32)), int(rng.integers(8)))
        elif op < 80 and with_maps:
            p = with_maps[int(rng.integers(len(with_maps)))]
            m = p.maps[int(rng.integers(len(p.maps)))]
            w.read(p, m, float(rng.random()), min(int(rng.integers(1, 16)), m.pages * PAGE))
        elif op < 86 and len(procs) < 6:
            w.fork(procs[int(rng.integers(len(procs)))])
        elif op < 94 and with_maps:
            p = with_maps[int(rng.integers(len(with_maps)))]
            w.munmap(p, p.maps[int(rng.integers(len(p.maps)))], int(rng.integers(0, 3)))
        elif op >= 94 and procs:
            w.exit(procs[int(rng.integers(len(procs)))])
        if step % 50 == 0:
            w.check_tables()
    w.check_tables()
    w.finish()


@pytest.mark.parametrize("page_size", [16384, 65536])
@pytest.mark.parametrize("hardened", [False, True])
def test_fork_cow_munmap_exit_on_large_granules(page_size: int, hardened: bool) -> None:
    """16K and 64K granules: fork, COW (small and PMD-order folios), munmap, exit leak nothing."""
    counter = CountingInstrument()
    cfg = KernelConfig(ram_size=2 << 30, page_size=page_size, kpkeys_hardened_pgtables=hardened)
    k = boot(cfg, instruments=[counter])
    user_mm_init(k)
    g = k.pgt
    warm = create_user_task(k, "warm")  # the first pgd fills a pgd_cache slab page
    schedule_to(k, warm)
    do_exit(k)
    finish_lazy_tlb(k)
    free0, pt0 = _free(k), _pt_pages(k)
    p, a = _process_mapping(k, 3 * g.PMD_SIZE)
    b = do_mmap(k, p.mm, 0, g.PMD_SIZE, RW, ANON_PRIVATE)
    assert do_madvise(k, p.mm, b, g.PMD_SIZE, MADV_HUGEPAGE) == 0
    user_write(k, a + 5, b"abc")
    user_write(k, a + g.PMD_SIZE + page_size, b"def")
    user_write(k, b + 7, b"huge")
    child = kernel_clone(k)
    assert child is not None
    schedule_to(k, child)
    assert user_read(k, a + g.PMD_SIZE + page_size, 3) == b"def"
    user_write(k, a + 5, b"XYZ")
    user_write(k, b + 7, b"HUGE")
    do_exit(k)
    assert (user_read(k, a + 5, 3), user_read(k, b + 7, 4)) == (b"abc", b"huge")
    kernel_wait(k, p)
    assert do_munmap(k, p.mm, a, g.PMD_SIZE) == 0
    do_exit(k)
    finish_lazy_tlb(k)
    assert (_free(k), _pt_pages(k)) == (free0, pt0)
    assert counter.counts["cow_break"] == 2
