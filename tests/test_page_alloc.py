"""The buddy page allocator, mem_map and GFP flags (kernel/mm/page_alloc.py, page.py, gfp.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from tests.strategies import buddy_orders, gfp_masks

from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.mm import gfp
from kpkeys_sim.kernel.mm.gfp import (
    __GFP_ACCOUNT,
    __GFP_COMP,
    __GFP_NOFAIL,
    __GFP_NOWARN,
    __GFP_PGTABLE_SPLIT,
    __GFP_ZERO,
    GFP_ATOMIC,
    GFP_KERNEL,
    GFP_PGTABLE_KERNEL,
    GFP_PGTABLE_USER,
    gfp_names,
)
from kpkeys_sim.kernel.mm.memblock import Memblock, memblock_add, memblock_free_all
from kpkeys_sim.kernel.mm.page import (
    FIELD_DTYPES,
    MemMap,
    PageBuddy,
    PageHead,
    PageTail,
    PG_buddy,
    PG_reserved,
    PG_table,
    __ClearPageTable,
    __SetPageTable,
    compound_head,
    compound_order,
    page_count,
    page_to_pfn,
    pfn_to_page,
    pfn_valid,
)
from kpkeys_sim.kernel.mm.page_alloc import (
    PAGE_ALLOC,
    PAGE_ALLOC_FAIL,
    PAGE_FREE,
    PAGE_ZERO,
    BuddyAllocator,
    __free_page,
    __free_pages,
    alloc_page,
    alloc_pages,
    arch_max_page_order,
    free_pages,
    get_order,
    get_page,
    nr_free_pages,
    put_page,
    split_page,
)
from kpkeys_sim.machine.events import CountingInstrument, Instruments

BASE = 0x4000_0000


def boot_zone(nr_pages: int = 4096, page_shift: int = 12, **kw: object) -> BuddyAllocator:
    """A zone over ``nr_pages`` frames at 1 GiB, all handed over by memblock."""
    mm = MemMap(BASE >> page_shift, nr_pages, page_shift=page_shift)
    zone = BuddyAllocator(mm, **kw)  # type: ignore[arg-type]
    mb = Memblock(page_shift=page_shift)
    memblock_add(mb, BASE, nr_pages << page_shift)
    memblock_free_all(mb, zone)
    return zone


def take_all(zone: BuddyAllocator) -> list[int]:
    """Allocate every free page as order-0 pages."""
    out = []
    while (pfn := alloc_page(zone, GFP_KERNEL | __GFP_NOWARN)) is not None:
        out.append(pfn)
    return out


# --- mem_map -----------------------------------------------------------------


def test_memmap_is_compact() -> None:
    """Per-frame metadata stays within 32 bytes and construction allocates nothing eagerly."""
    per_frame = sum(np.dtype(t).itemsize for t in FIELD_DTYPES.values())
    assert per_frame <= 32
    mm = MemMap(0, 1 << 24)
    assert mm.nbytes == per_frame << 24


def test_memmap_rejects_bad_arguments() -> None:
    """Bad constructor values and out-of-range pfns raise ValueError naming the value."""
    with pytest.raises(ValueError, match="-1"):
        MemMap(-1, 10)
    with pytest.raises(ValueError, match="nr_pages 0"):
        MemMap(0, 0)
    with pytest.raises(ValueError, match="page_shift 13"):
        MemMap(0, 10, page_shift=13)
    mm = MemMap(100, 10)
    with pytest.raises(ValueError, match="0x6e"):
        mm.idx(110)
    assert pfn_valid(mm, 109) and not pfn_valid(mm, 99)
    assert page_to_pfn(pfn_to_page(105)) == 105


def test_64gib_memmap_and_handover_are_correct() -> None:
    """A 64 GiB mem_map boots: every unreserved page is free, in max-order blocks."""
    nr = (64 << 30) >> 12
    zone = boot_zone(nr)
    assert nr_free_pages(zone) == nr == zone.managed_pages
    assert zone.free_counts() == [0] * 10 + [nr >> 10]
    assert zone.mem_map.count_flag(PG_reserved) == 0


def test_max_page_order_follows_arm64_kconfig() -> None:
    """MAX_PAGE_ORDER is 10/11/13 for 4K/16K/64K pages and becomes the zone's default."""
    assert [arch_max_page_order(s) for s in (12, 14, 16)] == [10, 11, 13]
    assert BuddyAllocator(MemMap(0, 16, page_shift=16)).max_order == 13
    with pytest.raises(ValueError, match="13"):
        arch_max_page_order(13)


def test_get_order() -> None:
    """get_order() is the smallest order whose block holds the size."""
    assert [get_order(s, 12) for s in (1, 4096, 4097, 8192, 8193, 1 << 22)] == [0, 0, 1, 1, 2, 10]


# --- GFP ---------------------------------------------------------------------


def test_gfp_composites_match_the_kernel() -> None:
    """GFP_PGTABLE_* are built as in asm-generic/pgalloc.h and the classic bit values hold."""
    assert GFP_PGTABLE_KERNEL == GFP_KERNEL | __GFP_ZERO
    assert GFP_PGTABLE_USER == GFP_PGTABLE_KERNEL | __GFP_ACCOUNT
    assert (GFP_KERNEL, GFP_ATOMIC, __GFP_ZERO, __GFP_COMP) == (0xCC0, 0x820, 0x100, 0x40000)
    assert __GFP_PGTABLE_SPLIT & gfp.GFP_BITS_MASK


def test_gfp_names_render_like_pGg() -> None:
    """gfp_names() prefers composite names, then single flags, joined by '|'."""
    assert gfp_names(GFP_KERNEL) == "GFP_KERNEL"
    assert gfp_names(GFP_PGTABLE_USER) == "GFP_KERNEL_ACCOUNT|__GFP_ZERO"
    assert gfp_names(GFP_KERNEL | __GFP_PGTABLE_SPLIT) == "GFP_KERNEL|__GFP_PGTABLE_SPLIT"
    assert gfp_names(0) == "0"
    with pytest.raises(ValueError, match="bad gfp mask -1"):
        gfp_names(-1)


# --- allocation and free -------------------------------------------------------


def test_first_allocation_after_boot_is_lowest_block_and_sequential() -> None:
    """Boot frees to the list tail, so allocation starts at the lowest pfn and walks upwards."""
    zone = boot_zone(4096)
    base = zone.mem_map.base_pfn
    got = [alloc_page(zone, GFP_KERNEL) for _ in range(5)]
    assert got == [base + i for i in range(5)]


def test_same_call_sequence_gives_same_pfns() -> None:
    """Two zones driven by the same calls hand out the same pfns (no randomness)."""

    def run() -> list[int | None]:
        zone = boot_zone(2048)
        out: list[int | None] = []
        held: list[tuple[int, int]] = []
        for i in range(200):
            order = i % 4
            pfn = alloc_pages(zone, GFP_KERNEL, order)
            out.append(pfn)
            if pfn is not None:
                held.append((pfn, order))
            if i % 3 == 0 and held:
                p, o = held.pop(len(held) // 2)
                __free_pages(zone, p, o)
        return out

    assert run() == run()


def test_lifo_reuse_of_just_freed_page() -> None:
    """A page freed while its buddy is in use is the next order-0 allocation."""
    zone = boot_zone(1024)
    pages = [alloc_page(zone, GFP_KERNEL) for _ in range(64)]
    victim = pages[41]
    assert victim is not None
    __free_page(zone, victim)
    assert alloc_page(zone, GFP_KERNEL) == victim
    __free_page(zone, pages[10])  # type: ignore[arg-type]
    __free_page(zone, pages[20])  # type: ignore[arg-type]
    assert alloc_page(zone, GFP_KERNEL) == pages[20]
    assert alloc_page(zone, GFP_KERNEL) == pages[10]


def test_free_merges_back_to_max_order_blocks() -> None:
    """Freeing everything that was allocated restores the post-boot free lists."""
    zone = boot_zone(4096)
    before = zone.free_counts()
    held = [(alloc_pages(zone, GFP_KERNEL, o), o) for o in (0, 3, 1, 0, 10, 2, 0, 5)]
    for pfn, order in reversed(held):
        assert pfn is not None
        __free_pages(zone, pfn, order)
    assert zone.free_counts() == before
    zone.check()


def test_exhaustion_returns_none_and_warns() -> None:
    """With no free block, alloc_pages returns None and records a warning unless __GFP_NOWARN."""
    zone = boot_zone(64)
    assert len(take_all(zone)) == 64
    assert alloc_pages(zone, GFP_KERNEL | __GFP_ZERO, 1) is None
    assert list(zone.warnings)[-1] == (
        "page allocation failure: order:1, mode:0xdc0(GFP_KERNEL|__GFP_ZERO)"
    )
    n = len(zone.warnings)
    assert alloc_page(zone, GFP_ATOMIC | __GFP_NOWARN) is None
    assert len(zone.warnings) == n
    assert zone.nr_alloc_failures == 3  # take_all's final probe + the two above
    assert nr_free_pages(zone) == 0


def test_order_above_max_returns_none() -> None:
    """An order above MAX_PAGE_ORDER fails like Linux's WARN_ON_ONCE_GFP (None, warning)."""
    zone = boot_zone(4096)
    assert alloc_pages(zone, GFP_KERNEL, 11) is None
    assert "order:11" in zone.warnings[-1]


def test_nofail_exhaustion_is_a_kernel_bug() -> None:
    """__GFP_NOFAIL that cannot be satisfied raises KernelBug (Linux would loop/OOM)."""
    zone = boot_zone(16)
    take_all(zone)
    with pytest.raises(KernelBug, match="__GFP_NOFAIL"):
        alloc_page(zone, GFP_KERNEL | __GFP_NOFAIL)


def test_reclaim_callback_invoked_once_and_its_memory_used() -> None:
    """On failure, each shrinker runs once with nr_to_scan, then the allocation is retried."""
    zone = boot_zone(32)
    held = take_all(zone)
    cache = [held[7]]
    calls: list[int] = []

    def shrinker(nr_to_scan: int) -> int:
        calls.append(nr_to_scan)
        if not cache:
            return 0
        __free_page(zone, cache.pop())
        return 1

    zone.shrinkers.append(shrinker)
    assert alloc_page(zone, GFP_KERNEL) == held[7]
    assert calls == [128]
    assert alloc_pages(zone, GFP_KERNEL | __GFP_NOWARN, 8) is None
    assert calls == [128, 256]


def test_reclaim_not_run_without_direct_reclaim() -> None:
    """GFP_ATOMIC allocations never call shrinkers."""
    zone = boot_zone(16)
    take_all(zone)
    calls: list[int] = []
    zone.shrinkers.append(lambda n: calls.append(n) or 0)
    assert alloc_page(zone, GFP_ATOMIC | __GFP_NOWARN) is None
    assert calls == []


def test_reclaim_does_not_recurse() -> None:
    """An allocation that fails inside a shrinker does not start another reclaim pass."""
    zone = boot_zone(16)
    take_all(zone)
    depth: list[int] = []

    def shrinker(nr: int) -> int:
        depth.append(nr)
        assert alloc_pages(zone, GFP_KERNEL | __GFP_NOWARN, 4) is None
        return 0

    zone.shrinkers.append(shrinker)
    assert alloc_page(zone, GFP_KERNEL | __GFP_NOWARN) is None
    assert depth == [128]


def test_split_page_makes_independent_pages() -> None:
    """split_page() gives each page refcount 1; freeing them one by one merges the block back."""
    zone = boot_zone(1024)
    pfn = alloc_pages(zone, GFP_KERNEL, 3)
    assert pfn is not None
    mm = zone.mem_map
    assert [page_count(mm, pfn + i) for i in range(8)] == [1] + [0] * 7
    split_page(zone, pfn, 3)
    assert [page_count(mm, pfn + i) for i in range(8)] == [1] * 8
    for i in (5, 0, 7, 2, 1, 6, 3, 4):
        __free_page(zone, pfn + i)
    assert zone.free_counts() == [0] * 10 + [1]
    zone.check()


def test_split_page_refuses_compound_and_free_pages() -> None:
    """split_page() of a compound page, a free page or a split range raises KernelBug."""
    zone = boot_zone(1024)
    comp = alloc_pages(zone, GFP_KERNEL | __GFP_COMP, 2)
    assert comp is not None
    with pytest.raises(KernelBug, match="compound"):
        split_page(zone, comp, 2)
    plain = alloc_pages(zone, GFP_KERNEL, 2)
    assert plain is not None
    split_page(zone, plain, 2)
    with pytest.raises(KernelBug, match="not one allocated block"):
        split_page(zone, plain, 2)
    free_pfn = next(zone.free_blocks(3))
    with pytest.raises(KernelBug, match="refcount 0"):
        split_page(zone, free_pfn, 0)


def test_double_free_is_a_kernel_bug_and_changes_nothing() -> None:
    """Freeing a free page raises KernelBug and leaves the allocator consistent."""
    zone = boot_zone(256)
    pfn = alloc_page(zone, GFP_KERNEL)
    assert pfn is not None
    __free_page(zone, pfn)
    before = (zone.free_counts(), zone.nr_free)
    with pytest.raises(KernelBug, match="double free"):
        __free_page(zone, pfn)
    assert (zone.free_counts(), zone.nr_free) == before
    zone.check()


def test_freeing_a_page_in_use_as_page_table_is_bad_page_state() -> None:
    """A page still marked PG_table (or with a mapping) cannot be freed."""
    zone = boot_zone(256)
    pfn = alloc_page(zone, GFP_KERNEL)
    assert pfn is not None
    mm = zone.mem_map
    __SetPageTable(mm, pfn)
    with pytest.raises(KernelBug, match=r"Bad page state.*table"):
        __free_page(zone, pfn)
    __ClearPageTable(mm, pfn)
    mm.mapping[mm.idx(pfn)] = 0x1234
    with pytest.raises(KernelBug, match="non-NULL mapping"):
        __free_page(zone, pfn)
    mm.mapping[mm.idx(pfn)] = 0
    __free_page(zone, pfn)
    zone.check()


def test_compound_pages_and_put_page() -> None:
    """__GFP_COMP marks head/tails; get_page/put_page on a tail act on the head; 0 frees."""
    zone = boot_zone(1024)
    pfn = alloc_pages(zone, GFP_KERNEL | __GFP_COMP, 2)
    assert pfn is not None
    mm = zone.mem_map
    assert PageHead(mm, pfn) and PageTail(mm, pfn + 3) and compound_order(mm, pfn) == 2
    assert compound_head(mm, pfn + 3) == pfn
    get_page(zone, pfn + 2)
    assert page_count(mm, pfn) == 2
    put_page(zone, pfn + 1)
    put_page(zone, pfn)
    assert not PageHead(mm, pfn) and nr_free_pages(zone) == 1024
    with pytest.raises(KernelBug, match="put_page"):
        put_page(zone, pfn)
    zone.check()


def test_compound_page_freed_with_wrong_order_is_refused() -> None:
    """Freeing a compound page with another order is a Bad page state."""
    zone = boot_zone(1024)
    pfn = alloc_pages(zone, GFP_KERNEL | __GFP_COMP, 2)
    assert pfn is not None
    with pytest.raises(KernelBug, match="compound order 2 freed as order 1"):
        __free_pages(zone, pfn, 1)
    __free_pages(zone, pfn, 2)
    zone.check()


def test_free_pages_with_extra_reference_frees_tails_first() -> None:
    """__free_pages on a non-compound block with another reference frees the tails now."""
    zone = boot_zone(1024)
    pfn = alloc_pages(zone, GFP_KERNEL, 2)
    assert pfn is not None
    get_page(zone, pfn)
    __free_pages(zone, pfn, 2)
    assert nr_free_pages(zone) == 1024 - 1
    put_page(zone, pfn)
    assert nr_free_pages(zone) == 1024
    zone.check()


def test_free_pages_none_is_a_no_op() -> None:
    """free_pages(NULL) does nothing."""
    zone = boot_zone(16)
    free_pages(zone, None, 3)
    assert nr_free_pages(zone) == 16


def test_bad_arguments_raise_value_error() -> None:
    """Negative orders, misaligned pfns, pfns outside the mem_map and bad masks are ValueErrors."""
    zone = boot_zone(64)
    base = zone.mem_map.base_pfn
    with pytest.raises(ValueError, match="bad order -1"):
        alloc_pages(zone, GFP_KERNEL, -1)
    with pytest.raises(ValueError, match="not aligned to order 1"):
        __free_pages(zone, base + 1, 1)
    with pytest.raises(ValueError, match="outside mem_map"):
        __free_page(zone, base + 64)
    with pytest.raises(ValueError, match="bad gfp mask"):
        alloc_page(zone, 1 << 40)


def test_zeroing_goes_through_the_callback() -> None:
    """__GFP_ZERO and init_on_alloc call zero_pages(pfn, nr) and emit page_zero events."""
    calls: list[tuple[int, int]] = []
    counter = CountingInstrument()
    zone = boot_zone(
        64, zero_pages=lambda p, n: calls.append((p, n)), instruments=Instruments([counter])
    )
    pfn = alloc_pages(zone, GFP_PGTABLE_KERNEL, 2)
    assert calls == [(pfn, 4)]
    alloc_page(zone, GFP_KERNEL)
    assert len(calls) == 1 and zone.nr_zeroed_pages == 4
    zone.init_on_alloc = True
    alloc_page(zone, GFP_KERNEL)
    assert len(calls) == 2
    assert counter.counts[PAGE_ZERO] == 5


def test_events_count_pages() -> None:
    """page_alloc/page_free count pages; failures count calls."""
    counter = CountingInstrument()
    zone = boot_zone(16, instruments=Instruments([counter]))
    pfn = alloc_pages(zone, GFP_KERNEL, 3)
    assert pfn is not None
    __free_pages(zone, pfn, 3)
    assert alloc_pages(zone, GFP_KERNEL | __GFP_NOWARN, 5) is None
    assert (counter.counts[PAGE_ALLOC], counter.counts[PAGE_FREE]) == (8, 8)
    assert counter.counts[PAGE_ALLOC_FAIL] == 1


def test_allocated_pages_carry_no_buddy_state() -> None:
    """An allocated head has refcount 1, private 0, no PG_buddy; free heads keep their order."""
    zone = boot_zone(64)
    pfn = alloc_page(zone, GFP_KERNEL)
    assert pfn is not None
    mm = zone.mem_map
    assert not PageBuddy(mm, pfn) and int(mm.private[mm.idx(pfn)]) == 0
    assert PageBuddy(mm, pfn + 1) and int(mm.private[mm.idx(pfn + 1)]) == 0
    assert PageBuddy(mm, pfn + 2) and int(mm.private[mm.idx(pfn + 2)]) == 1
    assert mm.count_flag(PG_buddy) == 6
    assert not mm.test_flag(pfn, PG_table)


# --- stateful ------------------------------------------------------------------


# Names starting with "__" are mangled inside class bodies: use aliases there.
FREE_PAGES = __free_pages
FREE_PAGE = __free_page
GFP_COMP = __GFP_COMP


class BuddyMachine(RuleBasedStateMachine):
    """Random alloc/free/split/get/put sequences against a small zone."""

    def __init__(self) -> None:
        super().__init__()
        self.zone = boot_zone(512, max_order=6)
        self.total = nr_free_pages(self.zone)
        self.owned: dict[int, int] = {}  # head pfn -> order (non-compound, refcount 1)
        self.singles: list[int] = []  # order-0 pages from split_page
        self.compound: dict[int, int] = {}  # head -> order

    def _owned_pages(self) -> int:
        return (
            sum(1 << o for o in self.owned.values())
            + len(self.singles)
            + sum(1 << o for o in self.compound.values())
        )

    @rule(order=buddy_orders, mask=gfp_masks, compound=st.booleans())
    def alloc(self, order: int, mask: int, compound: bool) -> None:
        comp = order > 0 and compound
        pfn = alloc_pages(self.zone, (mask | GFP_COMP) if comp else mask, order)
        if pfn is None:
            assert not any(len(fl) for fl in self.zone.free_area[order:])
            return
        assert pfn % (1 << order) == 0
        mine = {p for h, o in self.owned.items() for p in range(h, h + (1 << o))}
        mine |= set(self.singles)
        mine |= {p for h, o in self.compound.items() for p in range(h, h + (1 << o))}
        assert mine.isdisjoint(range(pfn, pfn + (1 << order)))
        (self.compound if comp else self.owned)[pfn] = order

    @precondition(lambda self: self.owned)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        pfn = data.draw(st.sampled_from(sorted(self.owned)))
        FREE_PAGES(self.zone, pfn, self.owned.pop(pfn))

    @precondition(lambda self: self.owned)
    @rule(data=st.data())
    def split(self, data: st.DataObject) -> None:
        pfn = data.draw(st.sampled_from(sorted(self.owned)))
        order = self.owned.pop(pfn)
        split_page(self.zone, pfn, order)
        self.singles.extend(range(pfn, pfn + (1 << order)))

    @precondition(lambda self: self.singles)
    @rule(data=st.data())
    def free_single(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.singles) - 1))
        FREE_PAGE(self.zone, self.singles.pop(i))

    @precondition(lambda self: self.compound)
    @rule(data=st.data())
    def get_put_compound(self, data: st.DataObject) -> None:
        head = data.draw(st.sampled_from(sorted(self.compound)))
        order = self.compound[head]
        sub = head + data.draw(st.integers(0, (1 << order) - 1))
        get_page(self.zone, sub)
        put_page(self.zone, sub)
        if data.draw(st.booleans()):
            put_page(self.zone, sub)
            del self.compound[head]

    @precondition(lambda self: self.owned or self.singles)
    @rule()
    def double_free_is_caught(self) -> None:
        if self.singles:
            pfn = self.singles.pop()
            FREE_PAGE(self.zone, pfn)
            with pytest.raises(KernelBug):
                FREE_PAGE(self.zone, pfn)

    @invariant()
    def accounting(self) -> None:
        assert nr_free_pages(self.zone) + self._owned_pages() == self.total
        self.zone.check()

    def teardown(self) -> None:
        for pfn, order in self.owned.items():
            FREE_PAGES(self.zone, pfn, order)
        for pfn in self.singles:
            FREE_PAGE(self.zone, pfn)
        for head in self.compound:
            put_page(self.zone, head)
        assert self.zone.free_counts() == [0] * 6 + [512 >> 6]
        self.zone.check()


TestBuddyMachine = BuddyMachine.TestCase
TestBuddyMachine.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)
