"""The arm64 linear map: shapes, splitting, set_memory_*/set_direct_map_*, and the MMU check."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from tests.strategies import linear_map_ops

from kpkeys_sim.kernel.arch.arm64_pgtable import (
    PAGE_KERNEL,
    PTE_ADDR_MASK,
    PTE_CONT,
    PTE_PO_IDX_MASK,
    PTE_RDONLY,
    PTE_WRITE,
)
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.errors import EINVAL, ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_GUARD_NOOP,
    KPKEYS_LVL_PGTABLES,
    kpkeys_restore_pkey_reg,
    kpkeys_set_level,
)
from kpkeys_sim.kernel.mm.linear_map import (
    NO_BLOCK_MAPPINGS,
    NO_CONT_MAPPINGS,
    SPLIT_KINDS,
    __change_memory_common,
    __create_pgd_mapping,
    force_pte_mapping,
    linear_map_leaves,
    linear_map_split_count,
    pgd_pgtable_alloc_init_mm,
    set_direct_map_default_noflush,
    set_direct_map_invalid_noflush,
    set_direct_map_valid_noflush,
    set_memory_pkey,
    set_memory_ro,
    set_memory_rw,
)
from kpkeys_sim.kernel.mm.mm_types import VM_ALLOC, vm_struct
from kpkeys_sim.kernel.mm.page_alloc import alloc_pages
from kpkeys_sim.kernel.mm.pgtable import (
    pgd_offset_k,
    pmd_offset,
    pte_offset_kernel,
    ptep_get,
    pud_offset,
    set_pte,
)
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_kernel_range
from kpkeys_sim.machine import CountingInstrument, Fault, Instrument

GiB = 1 << 30
MiB = 1 << 20


class _Sequence(Instrument):
    """Records the kinds of events in order."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    def on_event(self, kind: str, n: int) -> None:
        self.kinds.append(kind)


def _boot(**cfg: Any) -> tuple[Kernel, CountingInstrument]:
    c = CountingInstrument()
    base: dict[str, Any] = {"ram_size": 2 * GiB, "kpkeys_hardened_pgtables": False}
    base.update(cfg)
    return boot(KernelConfig(**base), [c]), c


#: Module-level alias: a name starting with ``__`` would be mangled inside a class body.
change_memory = __change_memory_common


def _lm(k: Kernel, offset: int) -> int:
    """Linear-map VA of DRAM offset ``offset``."""
    return k.pgt.va(k.machine.mem.base + offset)


def _ptep(k: Kernel, va: int) -> int:
    pgdp = pgd_offset_k(k, va)
    return pte_offset_kernel(k, pmd_offset(k, pud_offset(k, pgdp, va), va), va)


# --- an independent walker over the physical tables ----------------------------------------------


def _walk_linear(k: Kernel) -> tuple[list[tuple[int, int, int]], list[tuple[int, np.ndarray]]]:
    """Blocks ``(va, shift, desc)`` and PTE tables ``(va, entries)`` of the linear map.

    Reads swapper_pg_dir and its tables physically (the test's own walker, sharing no
    code with the kernel model's helpers).
    """
    g = k.pgt
    mem = k.machine.mem
    bits = g.PAGE_SHIFT - 3
    blocks: list[tuple[int, int, int]] = []
    ptes: list[tuple[int, np.ndarray]] = []
    lo, hi = g.PAGE_OFFSET, g.PAGE_END

    def rec(tpa: int, va0: int, lvl: int) -> None:
        shift = g.PAGE_SHIFT + (3 - lvl) * bits
        e = mem.frame_ro(tpa >> g.PAGE_SHIFT)
        if lvl == 3:
            ptes.append((va0, e.copy()))
            return
        n = g.PTRS_PER_PGD if lvl == g.pgd_level else 1 << bits
        for i in np.flatnonzero(e[:n]).tolist():
            va = va0 + (i << shift)
            if not lo <= va < hi:
                continue
            d = int(e[i])
            if d & 3 == 3:
                rec(d & PTE_ADDR_MASK, va, lvl + 1)
            else:
                blocks.append((va, shift, d))

    rec(g.pa_symbol(k.swapper_pg_dir), 0xFFFF << 48, g.pgd_level)
    return blocks, ptes


def _leaf_kinds(k: Kernel) -> list[tuple[int, int, str]]:
    """Initial leaves ``(va, size, kind)`` sorted by VA, kinds as the kernel names them."""
    g = k.pgt
    blocks, ptes = _walk_linear(k)
    out = []
    for va, shift, d in blocks:
        if shift == g.PUD_SHIFT and not g.mm_pud_folded:
            kind = "pud"
        else:
            kind = "contpmd" if d & PTE_CONT else "pmd"
        out.append((va, 1 << shift, kind))
    for va, e in ptes:
        for i in np.flatnonzero(e).tolist():
            out.append(
                (va + i * g.PAGE_SIZE, g.PAGE_SIZE, "contpte" if int(e[i]) & PTE_CONT else "pte")
            )
    return sorted(out)


_CHAIN = {
    "pud": ("split_pud", "split_contpmd", "split_pmd", "split_contpte"),
    "contpmd": ("split_contpmd", "split_pmd", "split_contpte"),
    "pmd": ("split_pmd", "split_contpte"),
    "contpte": ("split_contpte",),
    "pte": (),
}


def expected_splits(
    k: Kernel, initial: list[tuple[int, int, str]], cuts: set[int]
) -> dict[str, int]:
    """Minimal split counts for leaf boundaries at ``cuts``, from the initial shape only.

    A unit of a split kind (PUD block, contPMD group, PMD block, contPTE group) is
    split once iff some cut lies strictly inside it and the unit exists: the
    initial leaf containing the cut is of that kind or a larger one.
    """
    g = k.pgt
    size = {
        "split_pud": g.PUD_SIZE,
        "split_contpmd": g.CONT_PMD_SIZE,
        "split_pmd": g.PMD_SIZE,
        "split_contpte": g.CONT_PTE_SIZE,
    }
    starts = [leaf[0] for leaf in initial]
    seen: set[tuple[str, int]] = set()
    for c in cuts:
        i = bisect.bisect_right(starts, c) - 1
        va, sz, kind = initial[i]
        if not va <= c < va + sz:
            continue
        for name in _CHAIN[kind]:
            unit = c & ~(size[name] - 1)
            if unit != c:
                seen.add((name, unit))
    counts = dict.fromkeys(SPLIT_KINDS, 0)
    for name, _unit in seen:
        counts[name] += 1
    return counts


# --- the stateful test ---------------------------------------------------------------------------

_RAM = 2 * GiB
_WIN_LO = (512 * MiB) >> 12
_WIN_PAGES = (1280 * MiB) >> 12


class LinearMapMachine(RuleBasedStateMachine):
    """Random linear-map permission/pkey/validity requests on a block-mapped 4K linear map."""

    @initialize()
    def boot_kernel(self) -> None:
        self.k, _ = _boot(ram_size=_RAM, nr_cpus=2)
        g = self.k.pgt
        n = _RAM >> g.PAGE_SHIFT
        self.exp_valid = np.ones(n, dtype=bool)
        self.exp_ro = np.zeros(n, dtype=bool)
        self.exp_pkey = np.zeros(n, dtype=np.uint8)
        img = self.k.kimage
        self.exp_ro[: (img.init_begin - img._text) >> g.PAGE_SHIFT] = True
        self.initial = _leaf_kinds(self.k)
        self.cuts: set[int] = set()
        self.rng = np.random.default_rng(len(self.initial))
        self.nops = 0

    def _cut(self, page: int, n: int) -> None:
        self.cuts.add(_lm(self.k, page << 12))
        self.cuts.add(_lm(self.k, (page + n) << 12))

    @rule(op=linear_map_ops(_WIN_LO, _WIN_PAGES))
    def request(self, op: tuple[str, int, int, int]) -> None:
        """Apply one request and update the expected per-page state."""
        k = self.k
        name, page, n, arg = op
        va = _lm(k, page << 12)
        size = n << 12
        sl = slice(page, page + n)
        pfn = (k.machine.mem.base >> 12) + page
        self.nops += 1
        if name == "pkey":
            assert set_memory_pkey(k, va, n, arg) == 0
            self.exp_pkey[sl] = arg
        elif name == "ro":
            assert change_memory(k, va, size, PTE_RDONLY, PTE_WRITE) == 0
            self.exp_ro[sl] = True
        elif name == "rw":
            assert change_memory(k, va, size, PTE_WRITE, PTE_RDONLY) == 0
            self.exp_ro[sl] = False
        elif name == "invalid":
            assert set_direct_map_invalid_noflush(k, pfn) == 0
            flush_tlb_kernel_range(k, va, va + size)
            self.exp_valid[sl] = False
        elif name == "default":
            assert set_direct_map_default_noflush(k, pfn) == 0
            flush_tlb_kernel_range(k, va, va + size)
            self.exp_valid[sl] = True
            self.exp_ro[sl] = False
        elif name == "valid":
            assert set_direct_map_valid_noflush(k, pfn, n, bool(arg)) == 0
            self.exp_valid[sl] = bool(arg)
        else:
            before = dict(k.linear_map_stats)
            assert set_memory_ro(k, va, n) == -EINVAL
            assert k.linear_map_stats == before
            return
        self._cut(page, n)

    @invariant()
    def tables_match_requests(self) -> None:
        """Every leaf maps the right frame with exactly the requested bits; splits are minimal."""
        if not hasattr(self, "k"):
            return
        k = self.k
        g = k.pgt
        m = k.machine
        base = g.PAGE_OFFSET
        blocks, ptes = _walk_linear(k)
        covered = 0
        samples: list[int] = []
        for va, shift, d in blocks:
            p0 = (va - base) >> 12
            pn = 1 << (shift - 12)
            covered += pn
            assert d & PTE_ADDR_MASK == m.mem.base + (va - base)
            self._check_uniform(p0, pn, d)
            samples.append(va + int(self.rng.integers(0, 1 << shift)) // 8 * 8)
        for va, e in ptes:
            live = np.flatnonzero(e)
            covered += len(live)
            p0 = (va - base) >> 12
            pages = p0 + live
            d = e[live]
            want_oa = np.uint64(m.mem.base) + (pages.astype(np.uint64) << np.uint64(12))
            assert np.array_equal(d & np.uint64(PTE_ADDR_MASK), want_oa)
            assert np.array_equal((d & np.uint64(1)) != 0, self.exp_valid[pages])
            assert np.array_equal((d & np.uint64(PTE_RDONLY)) != 0, self.exp_ro[pages])
            assert np.array_equal((d & np.uint64(PTE_WRITE)) != 0, ~self.exp_ro[pages])
            assert np.array_equal(
                ((d & np.uint64(PTE_PO_IDX_MASK)) >> np.uint64(60)).astype(np.uint8),
                self.exp_pkey[pages],
            )
            self._check_cont_groups(e)
            for grp in range(0, len(e), 16):
                samples.append(va + ((grp + int(self.rng.integers(0, 16))) << 12))
        assert covered == _RAM >> 12  # no hole, no overlap
        for i, va in enumerate(samples):
            cpu = 1 if i % 7 == 0 else 0
            with k.on_cpu(cpu):
                self._check_access(va)
        got = {kind: k.linear_map_stats.get(kind, 0) for kind in SPLIT_KINDS}
        assert got == expected_splits(k, self.initial, self.cuts)
        for kind, n in got.items():
            if n:
                event(f"linear map: {kind} reached")

    def _check_uniform(self, p0: int, pn: int, d: int) -> None:
        sl = slice(p0, p0 + pn)
        assert np.all(self.exp_valid[sl] == bool(d & 1))
        assert np.all(self.exp_ro[sl] == bool(d & PTE_RDONLY))
        assert np.all(self.exp_ro[sl] != bool(d & PTE_WRITE))
        assert np.all(self.exp_pkey[sl] == (d >> 60) & 7)

    @staticmethod
    def _check_cont_groups(e: np.ndarray) -> None:
        """A contiguous group: all 16 entries CONT, identical attributes, consecutive frames."""
        cont = (e & np.uint64(PTE_CONT)) != 0
        for grp in np.flatnonzero(cont.reshape(-1, 16).any(axis=1)).tolist():
            g16 = e[grp * 16 : grp * 16 + 16]
            assert np.all((g16 & np.uint64(PTE_CONT)) != 0)
            attrs = g16 & ~np.uint64(PTE_ADDR_MASK)
            assert np.all(attrs == attrs[0])
            assert np.all(np.diff((g16 & np.uint64(PTE_ADDR_MASK)).astype(np.int64)) == 4096)

    def _check_access(self, va: int) -> None:
        k = self.k
        page = (va - k.pgt.PAGE_OFFSET) >> 12
        pa = k.machine.mem.base + (va - k.pgt.PAGE_OFFSET)
        valid = bool(self.exp_valid[page])
        ro = bool(self.exp_ro[page])
        pkey = int(self.exp_pkey[page])
        if not valid:
            with pytest.raises(Fault) as ei:
                k.machine.translate(k.cpu, va, "R")
            assert ei.value.kind == "translation"
            return
        if pkey in (0, 1):
            assert k.machine.translate(k.cpu, va, "R") == pa
        else:
            with pytest.raises(Fault) as ei:
                k.machine.translate(k.cpu, va, "R")
            assert ei.value.overlay and ei.value.pkey == pkey
        if pkey == 0 and not ro:
            assert k.machine.translate(k.cpu, va, "W") == pa
        else:
            with pytest.raises(Fault) as ei:
                k.machine.translate(k.cpu, va, "W")
            assert ei.value.kind == "permission"


LinearMapMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestLinearMapStateful = LinearMapMachine.TestCase


# --- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page_size", "kinds"),
    [
        (4096, {"pud", "contpmd", "pmd"}),
        (16384, {"contpmd", "pmd", "contpte", "pte"}),
        (65536, {"pmd", "contpte", "pte"}),
    ],
)
def test_block_linear_map_uses_the_largest_leaves(page_size: int, kinds: set[str]) -> None:
    """A block-mapped linear map uses PUD (4K), contPMD, PMD and contPTE leaves where aligned."""
    k, _ = _boot(page_size=page_size)
    leaves = linear_map_leaves(k)
    assert {kind for kind in ("pud", "contpmd", "pmd", "contpte", "pte") if leaves[kind]} == kinds
    assert not force_pte_mapping(k)


@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
def test_pte_linear_map_has_no_blocks_outside_the_kernel_alias(page_size: int) -> None:
    """linear_map="pte": plain PTEs without CONT; only the kernel text alias may be blocks."""
    k, _ = _boot(page_size=page_size, linear_map="pte")
    g = k.pgt
    leaves = linear_map_leaves(k)
    assert leaves["pud"] == leaves["contpmd"] == leaves["contpte"] == 0
    img = k.kimage
    alias_pages = (img.init_begin - img._text) >> g.PAGE_SHIFT
    assert leaves["pmd"] * (g.PMD_SIZE >> g.PAGE_SHIFT) + leaves["pte"] == (2 * GiB >> g.PAGE_SHIFT)
    assert leaves["pmd"] * (g.PMD_SIZE >> g.PAGE_SHIFT) <= alias_pages
    assert leaves["tables_pte"] >= (2 * GiB - img.init_begin + img._text) // g.PMD_SIZE


@pytest.mark.parametrize(
    ("cfg", "forced"),
    [
        ({}, False),
        ({"linear_map": "pte"}, True),
        ({"bbml2_noabort": False}, True),
        ({"bbml2_noabort": False, "rodata_full": False}, False),
        ({"debug_pagealloc": True}, True),
    ],
)
def test_force_pte_mapping_follows_the_kernel_rule(cfg: dict[str, Any], forced: bool) -> None:
    """force_pte_mapping(): linear_map=pte, no BBML2_NOABORT with rodata=full, debug_pagealloc."""
    k, _ = _boot(ram_size=256 * MiB, **cfg)
    assert force_pte_mapping(k) is forced
    assert (linear_map_leaves(k)["contpmd"] == 0) is forced


# --- splitting -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page_size", "offset", "order"),
    [
        (4096, GiB + 5 * MiB + 0x3000, ["pud", "contpmd", "pmd", "contpte"]),
        (16384, GiB + 40 * MiB + 0x8000, ["contpmd", "pmd", "contpte"]),
        (65536, GiB + 0x30000, ["pmd", "contpte"]),
    ],
)
def test_split_order_and_tlbi_counts(page_size: int, offset: int, order: list[str]) -> None:
    """One page's pkey change splits PUD→contPMD→PMD→contPTE in order, then one TLBI VA."""
    seq = _Sequence()
    k, c = _boot(page_size=page_size)
    k.machine.instruments.add(seq)
    c.reset()
    va = _lm(k, offset)
    assert set_memory_pkey(k, va, 1, 1) == 0
    splits = [
        s.removeprefix("linear_map_split_") for s in seq.kinds if s.startswith("linear_map_split_")
    ]
    assert splits == order
    assert c.counts["linear_map_split"] == len(order)
    assert c.counts["tlbi_va"] == 1 and c.counts["tlbi_all"] == 0
    assert c.counts["pgtable_alloc"] == sum(kind in ("pud", "pmd") for kind in order)
    # The page changed, its neighbours kept their pkey, and nothing moved.
    desc = ptep_get(k, _ptep(k, va))
    assert (desc >> 60) & 7 == 1 and not desc & PTE_CONT
    g = k.pgt
    for delta in (-g.PAGE_SIZE, g.PAGE_SIZE, g.PMD_SIZE):
        assert k.machine.translate(k.cpu, va + delta, "W") == g.pa(va + delta)
    # A second request on the same page splits nothing and flushes the page again.
    c.reset()
    assert set_memory_pkey(k, va, 1, 0) == 0
    assert c.counts["linear_map_split"] == 0 and c.counts["tlbi_va"] == 1


def test_whole_block_changes_do_not_split() -> None:
    """A request covering whole aligned PMD blocks rewrites the blocks in place (no split)."""
    k, c = _boot()
    va = _lm(k, GiB + 64 * MiB)
    c.reset()
    assert set_memory_pkey(k, va, (32 * MiB) >> 12, 2) == 0
    assert k.linear_map_stats == {"split_pud": 1}
    assert c.counts["tlbi_all"] == 1  # 8192 pages >= MAX_DVM_OPS: TLBI VMALLE1IS
    with pytest.raises(Fault) as ei:
        k.machine.translate(k.cpu, va + 12345 * 8, "R")
    assert ei.value.overlay and ei.value.pkey == 2


def test_split_count_helper_sums_every_kind() -> None:
    """linear_map_split_count() is the total of the four split kinds."""
    k, _ = _boot()
    set_memory_pkey(k, _lm(k, GiB + 0x5000), 1, 3)
    assert linear_map_split_count(k) == 4 == sum(k.linear_map_stats.values())


def test_without_bbml2_a_partial_block_change_is_refused() -> None:
    """Without BBML2_NOABORT nothing is split and a partially covered block gives -EINVAL."""
    k, _ = _boot(bbml2_noabort=False, rodata_full=False)
    va = _lm(k, GiB + 0x7000)
    before = linear_map_leaves(k)
    assert set_memory_pkey(k, va, 1, 1) == -EINVAL
    assert linear_map_leaves(k) == before
    assert linear_map_split_count(k) == 0
    assert any("partially covered block" in line for line in k.log)


def test_split_hooks_prepare_and_ready_are_called_in_order() -> None:
    """prepare before the lock; ready under it; not ready → unlock, prepare again, retry."""
    k, _ = _boot()
    calls: list[str] = []
    ready = iter([False, True])

    def prepare(kk: Kernel) -> int:
        calls.append(f"prepare locked={kk.pgtable_split_lock}")
        return 0

    def is_ready(kk: Kernel) -> bool:
        calls.append(f"ready locked={kk.pgtable_split_lock}")
        return next(ready)

    k.prepare_direct_map_split = prepare
    k.ready_for_direct_map_split = is_ready
    assert set_memory_pkey(k, _lm(k, GiB + 0x5000), 1, 1) == 0
    assert calls == [
        "prepare locked=False",
        "ready locked=True",
        "prepare locked=False",
        "ready locked=True",
    ]
    assert not k.pgtable_split_lock


def test_split_failures_return_enomem_and_leave_the_map_alone() -> None:
    """A failing prepare hook or table allocation makes the change fail with -ENOMEM."""
    k, _ = _boot()
    va = _lm(k, GiB + 0x5000)
    before = linear_map_leaves(k)
    k.prepare_direct_map_split = lambda kk: -ENOMEM
    assert set_memory_pkey(k, va, 1, 1) == -ENOMEM
    k.prepare_direct_map_split = lambda kk: 0
    k.pgtable_alloc_hook = lambda kk, gfp, order: None
    assert set_memory_pkey(k, va, 1, 1) == -ENOMEM
    assert linear_map_leaves(k) == before
    assert k.machine.translate(k.cpu, va, "W") == k.pgt.pa(va)


def test_recursive_split_lock_is_a_deadlock() -> None:
    """Taking pgtable_split_lock while it is held is the deadlock of spec §4.12: KernelBug."""
    k, _ = _boot()
    k.pgtable_split_lock = True
    with pytest.raises(KernelBug, match="pgtable_split_lock"):
        set_memory_pkey(k, _lm(k, GiB + 0x5000), 1, 1)


# --- set_memory_* argument rules -----------------------------------------------------------------


def test_set_memory_pkey_argument_rules() -> None:
    """No-op without POE; -EINVAL off the linear map and for pkey >= arch_max_pkey()."""
    k, _ = _boot()
    assert set_memory_pkey(k, k.pgt.VMALLOC_START + GiB, 1, 1) == -EINVAL
    assert set_memory_pkey(k, _lm(k, GiB), 1, 8) == -EINVAL
    assert linear_map_split_count(k) == 0
    k2, _ = _boot(cpu_has_pkeys=False)
    va = _lm(k2, GiB + 0x5000)
    assert set_memory_pkey(k2, va, 1, 1) == 0
    assert linear_map_split_count(k2) == 0
    assert (ptep_get(k2, pud_offset(k2, pgd_offset_k(k2, va), va)) >> 60) & 7 == 0


def _vmalloc_area(k: Kernel, npages: int) -> tuple[vm_struct, list[int]]:
    """A VM_ALLOC area mapped by hand at VMALLOC_START + 1 GiB, registered for find_vm_area."""
    g = k.pgt
    assert k.zone is not None
    head = alloc_pages(k.zone, 0, 2)
    assert head is not None
    pfns = [head + i for i in range(npages)]
    addr = g.VMALLOC_START + GiB
    for i, pfn in enumerate(pfns):
        __create_pgd_mapping(
            k,
            k.init_mm.pgd,
            pfn << g.PAGE_SHIFT,
            addr + i * g.PAGE_SIZE,
            g.PAGE_SIZE,
            PAGE_KERNEL,
            pgd_pgtable_alloc_init_mm,
            NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS,
        )
    area = vm_struct(addr, (npages + 1) * g.PAGE_SIZE, VM_ALLOC, pages=pfns)
    k.find_vm_area = lambda kk, a: area if area.addr <= a < area.addr + area.size else None
    return area, pfns


def test_set_memory_ro_rw_follow_change_memory_common() -> None:
    """set_memory_ro/rw: -EINVAL on the linear map; on a VM_ALLOC area also the linear alias."""
    k, _ = _boot()
    g = k.pgt
    assert set_memory_ro(k, _lm(k, GiB), 1) == -EINVAL
    area, pfns = _vmalloc_area(k, 4)
    assert set_memory_ro(k, area.addr, 4) == 0
    for i, pfn in enumerate(pfns):
        with pytest.raises(Fault):
            k.machine.translate(k.cpu, area.addr + i * g.PAGE_SIZE, "W")
        with pytest.raises(Fault):  # rodata=full: the linear alias too
            k.machine.translate(k.cpu, g.va(pfn << g.PAGE_SHIFT), "W")
    assert set_memory_rw(k, area.addr, 4) == 0
    assert k.machine.translate(k.cpu, area.addr, "W") == pfns[0] << g.PAGE_SHIFT
    assert k.machine.translate(k.cpu, g.va(pfns[3] << g.PAGE_SHIFT), "W") == pfns[3] << g.PAGE_SHIFT
    # area->size counts the guard page (Linux checks end > addr + size): 5 pages pass, 6 fail.
    assert set_memory_ro(k, area.addr, 6) == -EINVAL


# --- every page-table write goes through the MMU check -------------------------------------------


def test_set_pte_faults_when_the_table_alias_is_read_only() -> None:
    """A PTE table whose linear alias is read-only cannot be written: set_pte faults (W)."""
    k, _ = _boot()
    g = k.pgt
    va = _lm(k, GiB + 0x5000)
    assert set_memory_pkey(k, va, 1, 0) == 0  # now PTE-mapped
    ptep = _ptep(k, va)
    table = ptep & g.PAGE_MASK
    assert __change_memory_common(k, table, g.PAGE_SIZE, PTE_RDONLY, PTE_WRITE) == 0
    old = ptep_get(k, ptep)
    with pytest.raises(Fault) as ei:
        set_pte(k, ptep, old | PTE_RDONLY)
    f = ei.value
    assert (f.kind, f.result, f.access, f.va) == ("permission", "base_fault", "W", ptep)
    assert ptep_get(k, ptep) == old


def test_set_pte_faults_on_a_pkey_protected_table_unless_at_pgtables_level() -> None:
    """pkey 1 on a table's alias: set_pte faults at POR_EL1_INIT, succeeds at PGTABLES level."""
    k, _ = _boot()
    va = _lm(k, GiB + 0x5000)
    assert set_memory_pkey(k, va, 1, 0) == 0
    ptep = _ptep(k, va)
    assert set_memory_pkey(k, ptep & k.pgt.PAGE_MASK, 1, 1) == 0
    old = ptep_get(k, ptep)
    with pytest.raises(Fault) as ei:
        set_pte(k, ptep, old | PTE_RDONLY)
    assert ei.value.overlay and ei.value.pkey == 1 and ei.value.access == "W"
    prev = kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)
    set_pte(k, ptep, old | PTE_RDONLY)
    kpkeys_restore_pkey_reg(k, prev)
    assert ptep_get(k, ptep) == old | PTE_RDONLY


def test_kpkeys_guard_is_what_makes_helpers_work_on_protected_tables() -> None:
    """With kpkeys v7 every PTP is pkey-protected: helpers work, a NOOP guard makes them fault."""
    k, _ = _boot(series="v7", kpkeys_hardened_pgtables=True, ram_size=256 * MiB)
    va = _lm(k, 200 * MiB)
    ptep = _ptep(k, va)
    old = ptep_get(k, ptep)
    set_pte(k, ptep, old | PTE_RDONLY)  # guarded: fine
    with pytest.raises(Fault):
        k.machine.store_u64(k.cpu, ptep, old)  # a plain store is not
    k.pgtables_guard = KPKEYS_GUARD_NOOP("kpkeys_hardened_pgtables")
    with pytest.raises(Fault) as ei:
        set_pte(k, ptep, old)
    assert ei.value.overlay and ei.value.pkey == 1
    assert ptep_get(k, ptep) == old | PTE_RDONLY
