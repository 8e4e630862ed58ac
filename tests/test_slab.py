"""The SLUB-like slab allocator and kmalloc (kernel/mm/slab.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from tests.strategies import kmalloc_sizes, slab_object_sizes

from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.mm.gfp import (
    __GFP_NOWARN,
    __GFP_RECLAIMABLE,
    __GFP_ZERO,
    GFP_KERNEL,
    GFP_KERNEL_ACCOUNT,
)
from kpkeys_sim.kernel.mm.memblock import Memblock, memblock_add, memblock_free_all
from kpkeys_sim.kernel.mm.page import MemMap, PageHead, PageSlab, PG_slab, compound_order
from kpkeys_sim.kernel.mm.page_alloc import (
    BuddyAllocator,
    __free_page,
    alloc_page,
    alloc_pages,
    nr_free_pages,
)
from kpkeys_sim.kernel.mm.slab import (
    SLAB_HWCACHE_ALIGN,
    SLAB_PAGE_ALLOC,
    SLAB_PAGE_FREE,
    SLAB_SET_PKEY,
    SLAB_TYPESAFE_BY_RCU,
    ZERO_SIZE_PTR,
    KmemCache,
    SlabAllocator,
    calculate_order,
    kfree,
    kmalloc,
    kmalloc_index,
    kmalloc_slab,
    kmem_cache_alloc,
    kmem_cache_create,
    kmem_cache_destroy,
    kmem_cache_free,
    kmem_cache_shrink,
    kmem_cache_zalloc,
    ksize,
    kzalloc,
    virt_to_cache,
)
from kpkeys_sim.machine.events import CountingInstrument, Instruments

BASE = 0x4000_0000


def boot(nr_pages: int = 8192, **kw: object) -> SlabAllocator:
    """A slab allocator over a freshly booted zone of ``nr_pages`` 4K frames (2 CPUs by default)."""
    kw.setdefault("nr_cpus", 2)
    zkw = {k: kw.pop(k) for k in ("instruments",) if k in kw}
    zone = BuddyAllocator(MemMap(BASE >> 12, nr_pages), **zkw)  # type: ignore[arg-type]
    mb = Memblock()
    memblock_add(mb, BASE, nr_pages << 12)
    memblock_free_all(mb, zone)
    return SlabAllocator(zone, **kw)  # type: ignore[arg-type]


def test_kmalloc_cache_orders_match_slub() -> None:
    """calculate_order() gives SLUB's orders for the kmalloc caches (4K pages, 2 CPUs)."""
    sizes = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192]
    assert [calculate_order(s, 2, 12) for s in sizes] == [0] * 8 + [1, 2, 3, 3, 3]
    assert calculate_order(512, 8, 12) == 2  # more CPUs, bigger slabs
    assert calculate_order(5000, 1, 12) == 3


def test_kmalloc_size_classes() -> None:
    """kmalloc picks 8/16/32/64/96/128/192/256/.../8k and goes to pages above 8k."""
    slab = boot()
    names = {n: kmalloc_slab(slab, n, GFP_KERNEL) for n in (1, 9, 64, 65, 97, 129, 193, 8192)}
    assert {n: c.name for n, c in names.items() if c} == {
        1: "kmalloc-8",
        9: "kmalloc-16",
        64: "kmalloc-64",
        65: "kmalloc-96",
        97: "kmalloc-128",
        129: "kmalloc-192",
        193: "kmalloc-256",
        8192: "kmalloc-8k",
    }
    assert kmalloc_slab(slab, 8193, GFP_KERNEL) is None
    assert [kmalloc_index(s) for s in (8, 96, 192, 1024)] == [3, 1, 2, 10]


def test_kmalloc_types_follow_gfp() -> None:
    """__GFP_ACCOUNT uses kmalloc-cg-*, __GFP_RECLAIMABLE uses kmalloc-rcl-*."""
    slab = boot()
    cg = kmalloc_slab(slab, 64, GFP_KERNEL_ACCOUNT)
    rcl = kmalloc_slab(slab, 64, GFP_KERNEL | __GFP_RECLAIMABLE)
    assert cg is not None and cg.name == "kmalloc-cg-64"
    assert rcl is not None and rcl.name == "kmalloc-rcl-64"
    addr = kmalloc(slab, 64, GFP_KERNEL_ACCOUNT)
    assert addr is not None and virt_to_cache(slab, addr) is cg


def test_fresh_slab_hands_out_objects_in_order() -> None:
    """Without freelist randomisation a new slab's objects come out at increasing offsets."""
    slab = boot()
    cache = kmem_cache_create(slab, "test", 100)
    addrs = [kmem_cache_alloc(cache, GFP_KERNEL) for _ in range(5)]
    assert addrs[0] is not None and addrs[0] % 4096 == 0
    assert addrs == [addrs[0] + i * cache.size for i in range(5)]
    assert cache.size == 104  # word aligned


def test_lifo_reuse_of_freed_object() -> None:
    """The object freed last is the next one allocated (LIFO freelist)."""
    slab = boot()
    cache = kmem_cache_create(slab, "test", 64)
    objs = [kmem_cache_alloc(cache, GFP_KERNEL) for _ in range(10)]
    kmem_cache_free(cache, objs[3])  # type: ignore[arg-type]
    kmem_cache_free(cache, objs[7])  # type: ignore[arg-type]
    assert kmem_cache_alloc(cache, GFP_KERNEL) == objs[7]
    assert kmem_cache_alloc(cache, GFP_KERNEL) == objs[3]


def test_freelist_random_is_seeded_and_permuted() -> None:
    """CONFIG_SLAB_FREELIST_RANDOM shuffles a slab's objects, reproducibly from the seed."""

    def first_slab(seed: int) -> list[int]:
        slab = boot(freelist_random=True, rng=np.random.default_rng(seed))
        cache = kmem_cache_create(slab, "test", 256)
        got = [kmem_cache_alloc(cache, GFP_KERNEL) for _ in range(cache.objects)]
        assert all(a is not None for a in got)
        return [a % 4096 // 256 for a in got if a is not None]

    order = first_slab(1)
    assert sorted(order) == list(range(16)) and order != list(range(16))
    assert first_slab(1) == order
    with pytest.raises(ValueError, match="numpy Generator"):
        boot(freelist_random=True)


def test_objects_are_distinct_and_inside_their_slab() -> None:
    """Every object is unique, inside a PG_slab page whose cache id is the cache's."""
    slab = boot()
    cache = kmem_cache_create(slab, "test", 700)
    mm = slab.mem_map
    addrs = [kmem_cache_alloc(cache, GFP_KERNEL) for _ in range(100)]
    assert len(set(addrs)) == 100
    for a in addrs:
        assert a is not None
        pfn = a >> 12
        assert PageSlab(mm, pfn) and int(mm.slab_cache[mm.idx(pfn)]) == cache.id
        assert virt_to_cache(slab, a + 699) is cache
    assert virt_to_cache(slab, BASE + (8191 << 12)) is None
    head = cache.slabs()[0][0]
    assert PageHead(mm, head) and compound_order(mm, head) == cache.order
    slab.check()


def test_double_free_is_a_kernel_bug() -> None:
    """Freeing a free object raises KernelBug and leaves the allocator consistent."""
    slab = boot()
    cache = kmem_cache_create(slab, "test", 64)
    a = kmem_cache_alloc(cache, GFP_KERNEL)
    assert a is not None
    kmem_cache_alloc(cache, GFP_KERNEL)
    kmem_cache_free(cache, a)
    with pytest.raises(KernelBug, match="double free"):
        kmem_cache_free(cache, a)
    slab.check()
    assert kmem_cache_alloc(cache, GFP_KERNEL) == a


def test_bad_frees_are_kernel_bugs() -> None:
    """Wrong cache, interior pointer and kfree of a non-kmalloc page raise KernelBug."""
    slab = boot()
    one = kmem_cache_create(slab, "one", 64)
    two = kmem_cache_create(slab, "two", 64)
    a = kmem_cache_alloc(one, GFP_KERNEL)
    assert a is not None
    with pytest.raises(KernelBug, match=r"Wrong slab cache\. two but object is from one"):
        kmem_cache_free(two, a)
    with pytest.raises(KernelBug, match="Invalid object pointer"):
        kmem_cache_free(one, a + 8)
    page = alloc_page(slab.zone, GFP_KERNEL)
    assert page is not None
    with pytest.raises(KernelBug, match="not from kmalloc"):
        kfree(slab, page << 12)
    slab.check()


def test_empty_slabs_return_to_buddy_and_are_reused_cross_cache() -> None:
    """Freeing every object of many slabs releases pages; the next page allocation reuses one."""
    slab = boot()
    zone = slab.zone
    cache = kmem_cache_create(slab, "victim", 512)  # order 1, 16 objects per slab
    free0 = nr_free_pages(zone)
    objs = [kmem_cache_alloc(cache, GFP_KERNEL) for _ in range(cache.objects * 40)]
    assert cache.nr_slabs == 40
    for a in objs:
        kmem_cache_free(cache, a)  # type: ignore[arg-type]
    # CPU slab + CPU partial list + min_partial empty slabs on the node list remain.
    kept = 1 + len(cache.cpu_partial_lists[0]) + cache.nr_partial
    assert cache.nr_partial == cache.min_partial == 5
    assert cache.nr_slabs == kept < 40
    assert nr_free_pages(zone) == free0 - kept * 2
    freed_heads = {o >> 12 & ~1 for o in objs if o is not None} - {p for p, _, _ in cache.slabs()}
    reuse = alloc_pages(zone, GFP_KERNEL, 1)
    assert reuse in freed_heads  # the just-freed slab page serves the next allocation
    slab.check()
    zone.check()


def test_min_partial_keeps_empty_slabs() -> None:
    """A slab emptied on the node list stays only while nr_partial (itself counted) < 5."""
    slab = boot(cpu_partial=False)
    cache = kmem_cache_create(slab, "test", 1024)  # 16 objects, order 2
    objs = [kmem_cache_alloc(cache, GFP_KERNEL) for _ in range(cache.objects * 8)]
    for a in objs[: cache.objects * 7]:
        kmem_cache_free(cache, a)  # type: ignore[arg-type]
    assert cache.min_partial == 5 and cache.nr_partial == 4
    assert cache.nr_slabs == 5  # 4 empty on the node list + the (full) CPU slab
    slab.check()


def test_kmem_cache_shrink_and_destroy() -> None:
    """shrink frees every empty slab; destroy refuses a cache with objects, then frees all."""
    slab = boot()
    zone = slab.zone
    free0 = nr_free_pages(zone)
    cache = kmem_cache_create(slab, "test", 2000, flags=SLAB_SET_PKEY)
    objs = [kmem_cache_alloc(cache, GFP_KERNEL) for _ in range(50)]
    for a in objs[1:]:
        kmem_cache_free(cache, a)  # type: ignore[arg-type]
    assert kmem_cache_shrink(cache) == 3  # 4 slabs of 16 objects; one still holds objs[0]
    assert cache.nr_slabs == 1
    with pytest.raises(KernelBug, match="still has objects"):
        kmem_cache_destroy(cache)
    kmem_cache_free(cache, objs[0])  # type: ignore[arg-type]
    kmem_cache_destroy(cache)
    assert nr_free_pages(zone) == free0
    with pytest.raises(ValueError, match="destroyed"):
        kmem_cache_alloc(cache, GFP_KERNEL)
    again = kmem_cache_create(slab, "again", 8)
    assert again.id == cache.id  # ids are reused
    slab.check()


def test_shrink_sorts_partial_list_fullest_first() -> None:
    """After kmem_cache_shrink the node partial list starts with the fullest slab."""
    slab = boot(nr_cpus=2)
    cache = kmem_cache_create(slab, "test", 256)  # 16 objects
    objs = [kmem_cache_alloc(cache, GFP_KERNEL) for _ in range(16 * 4)]
    # Leave slabs with 1, 3 and 2 objects in use (and one full slab, the CPU slab).
    keep = {0, 16, 17, 18, 32, 33}
    for i, a in enumerate(objs[:48]):
        if i not in keep:
            kmem_cache_free(cache, a)  # type: ignore[arg-type]
    kmem_cache_shrink(cache)
    inuse = [cache.inuse[s] for s in cache.node_partial]
    assert inuse == [3, 2, 1]
    slab.check()


def test_kmalloc_large_uses_compound_pages() -> None:
    """kmalloc above 8k takes a compound page; ksize reports it; kfree gives it back."""
    slab = boot()
    zone = slab.zone
    free0 = nr_free_pages(zone)
    a = kmalloc(slab, 20000, GFP_KERNEL)
    assert a is not None and a % (4096 * 8) == 0
    assert ksize(slab, a) == 32768 and nr_free_pages(zone) == free0 - 8
    assert not PageSlab(slab.mem_map, a >> 12)
    kfree(slab, a)
    assert nr_free_pages(zone) == free0
    assert kmalloc(slab, 1 << 23, GFP_KERNEL | __GFP_NOWARN) is None  # above MAX_PAGE_ORDER


def test_kmalloc_zero_and_null() -> None:
    """kmalloc(0) is ZERO_SIZE_PTR; kfree(None) and kfree(ZERO_SIZE_PTR) do nothing."""
    slab = boot()
    assert kmalloc(slab, 0, GFP_KERNEL) == ZERO_SIZE_PTR
    kfree(slab, None)
    kfree(slab, ZERO_SIZE_PTR)
    b = kmalloc(slab, 96, GFP_KERNEL)
    assert b is not None and ksize(slab, b) == 96


def test_zeroing_calls_the_object_callback() -> None:
    """__GFP_ZERO (kzalloc, kmem_cache_zalloc) zeroes object_size bytes through zero_object."""
    calls: list[tuple[int, int]] = []
    slab = boot(zero_object=lambda a, n: calls.append((a, n)))
    a = kzalloc(slab, 50, GFP_KERNEL)
    cache = kmem_cache_create(slab, "test", 40)
    b = kmem_cache_zalloc(cache, GFP_KERNEL)
    kmalloc(slab, 50, GFP_KERNEL)
    assert calls == [(a, 64), (b, 40)]


def test_slab_hooks_run_for_every_slab() -> None:
    """new_slab_hook sees each new slab (and can fail it); free_slab_hook sees each release."""
    seen: list[tuple[str, int, int]] = []
    refuse = {"on": False}

    def new_hook(cache: KmemCache, pfn: int, order: int) -> bool:
        seen.append(("new", pfn, order))
        return not refuse["on"]

    def free_hook(cache: KmemCache, pfn: int, order: int) -> None:
        seen.append(("free", pfn, order))

    slab = boot(new_slab_hook=new_hook, free_slab_hook=free_hook)
    cache = kmem_cache_create(slab, "creds", 192, flags=SLAB_SET_PKEY)
    a = kmem_cache_alloc(cache, GFP_KERNEL)
    assert a is not None and seen == [("new", a >> 12, 0)]
    kmem_cache_free(cache, a)
    kmem_cache_shrink(cache)
    assert seen[-1] == ("free", a >> 12, 0)
    free0 = nr_free_pages(slab.zone)
    refuse["on"] = True
    assert kmem_cache_alloc(cache, GFP_KERNEL) is None
    assert nr_free_pages(slab.zone) == free0
    slab.check()


def test_raising_slab_hook_leaves_no_half_made_slab() -> None:
    """An exception from new_slab_hook propagates and the slab's pages go back to the buddy."""

    def hook(cache: KmemCache, pfn: int, order: int) -> bool:
        raise RuntimeError("set_memory_pkey failed")

    slab = boot(new_slab_hook=hook)
    free0 = nr_free_pages(slab.zone)
    cache = kmem_cache_create(slab, "creds", 192, flags=SLAB_SET_PKEY)
    with pytest.raises(RuntimeError, match="set_memory_pkey"):
        kmem_cache_alloc(cache, GFP_KERNEL)
    assert nr_free_pages(slab.zone) == free0 and cache.nr_slabs == 0
    slab.check()
    slab.zone.check()


def test_allocation_fails_when_memory_is_exhausted() -> None:
    """With the buddy allocator empty, a new slab cannot be made and the allocation is None."""
    slab = boot(nr_pages=64)
    while alloc_page(slab.zone, GFP_KERNEL | __GFP_NOWARN) is not None:
        pass
    assert kmalloc(slab, 64, GFP_KERNEL) is None


def test_order_fallback_to_min_order() -> None:
    """When the preferred slab order is unavailable, SLUB falls back to get_order(size)."""
    slab = boot(nr_pages=16)
    cache = kmem_cache_create(slab, "big", 1024)  # order 2 preferred, min order 0
    held = [alloc_page(slab.zone, GFP_KERNEL) for _ in range(16)]
    for pfn in held[1::2]:
        __free_page(slab.zone, pfn)  # type: ignore[arg-type]
    a = kmem_cache_alloc(cache, GFP_KERNEL)
    assert a is not None
    assert cache.slabs()[0][1] == 0  # an order-0 slab with 4 objects
    objs = [a] + [kmem_cache_alloc(cache, GFP_KERNEL) for _ in range(3)]
    assert len({o >> 12 for o in objs}) == 1
    slab.check()


def test_per_cpu_slabs_are_distinct() -> None:
    """Each CPU allocates from its own CPU slab."""
    slab = boot(nr_cpus=2)
    cache = kmem_cache_create(slab, "test", 128)
    a = kmem_cache_alloc(cache, GFP_KERNEL, cpu=0)
    b = kmem_cache_alloc(cache, GFP_KERNEL, cpu=1)
    assert a is not None and b is not None and a >> 12 != b >> 12
    with pytest.raises(ValueError, match="bad cpu 2"):
        kmem_cache_alloc(cache, GFP_KERNEL, cpu=2)


def test_cache_layout_flags() -> None:
    """SLAB_HWCACHE_ALIGN aligns to the cache line; SLAB_TYPESAFE_BY_RCU adds a free pointer."""
    slab = boot()
    assert kmem_cache_create(slab, "hw", 40, flags=SLAB_HWCACHE_ALIGN).size == 64
    assert kmem_cache_create(slab, "hw2", 20, flags=SLAB_HWCACHE_ALIGN).size == 32
    assert kmem_cache_create(slab, "rcu", 40, flags=SLAB_TYPESAFE_BY_RCU).size == 48
    with pytest.raises(ValueError, match="bad align 24"):
        kmem_cache_create(slab, "x", 40, align=24)
    with pytest.raises(ValueError, match="bad object size 0"):
        kmem_cache_create(slab, "x", 0)


def test_slab_events() -> None:
    """slab_page_alloc/slab_page_free count the pages moving between slab and buddy."""
    counter = CountingInstrument()
    slab = boot(instruments=Instruments([counter]))
    cache = kmem_cache_create(slab, "test", 1024)
    a = kmem_cache_alloc(cache, GFP_KERNEL)
    kmem_cache_free(cache, a)  # type: ignore[arg-type]
    kmem_cache_shrink(cache)
    assert counter.counts[SLAB_PAGE_ALLOC] == counter.counts[SLAB_PAGE_FREE] == 4


# --- stateful ------------------------------------------------------------------


# Names starting with "__" are mangled inside class bodies: use an alias there.
GFP_ZERO = __GFP_ZERO


class SlabMachine(RuleBasedStateMachine):
    """Random batches of kmem_cache_alloc/kmalloc/free/shrink over two CPUs."""

    def __init__(self) -> None:
        super().__init__()
        self.slab = boot(nr_pages=4096, nr_cpus=2)
        self.zone = self.slab.zone
        self.free0 = nr_free_pages(self.zone)
        self.caches = [
            kmem_cache_create(self.slab, "small", 24),
            kmem_cache_create(self.slab, "mid", 700),
            kmem_cache_create(self.slab, "big", 2048),
        ]
        self.live: dict[int, KmemCache | None] = {}  # addr -> cache (None: kmalloc)
        self.freed: list[int] = []

    def _record(self, a: int | None, cache: KmemCache | None) -> None:
        assert a is not None and a not in self.live
        self.live[a] = cache
        if a in self.freed:
            self.freed.remove(a)

    @rule(which=st.integers(0, 2), n=st.integers(1, 40), cpu=st.integers(0, 1))
    def cache_alloc_batch(self, which: int, n: int, cpu: int) -> None:
        cache = self.caches[which]
        for _ in range(n):
            a = kmem_cache_alloc(cache, GFP_KERNEL, cpu)
            self._record(a, cache)
            assert a is not None and virt_to_cache(self.slab, a) is cache

    @rule(size=kmalloc_sizes, cpu=st.integers(0, 1), zero=st.booleans())
    def do_kmalloc(self, size: int, cpu: int, zero: bool) -> None:
        a = kmalloc(self.slab, size, GFP_KERNEL | (GFP_ZERO if zero else 0), cpu)
        self._record(a, None)
        assert a is not None and ksize(self.slab, a) >= size

    @rule(data=st.data(), cpu=st.integers(0, 1))
    def free_batch(self, data: st.DataObject, cpu: int) -> None:
        if not self.live:
            return
        addrs = sorted(self.live)
        picks = data.draw(st.lists(st.sampled_from(addrs), unique=True, max_size=60))
        for a in picks:
            cache = self.live.pop(a)
            if cache is None:
                kfree(self.slab, a, cpu)
            else:
                kmem_cache_free(cache, a, cpu)
            self.freed.append(a)

    @rule(data=st.data())
    def double_free_is_caught(self, data: st.DataObject) -> None:
        if not self.freed:
            return
        a = data.draw(st.sampled_from(self.freed))
        with pytest.raises(KernelBug):
            kfree(self.slab, a)

    @rule(which=st.integers(0, 2))
    def shrink(self, which: int) -> None:
        kmem_cache_shrink(self.caches[which])
        cache = self.caches[which]
        assert all(inuse for _, _, inuse in cache.slabs())

    @rule(size=slab_object_sizes)
    def create_and_destroy(self, size: int) -> None:
        cache = kmem_cache_create(self.slab, "tmp", size)
        a = kmem_cache_alloc(cache, GFP_KERNEL)
        assert a is not None
        kmem_cache_free(cache, a)
        kmem_cache_destroy(cache)

    @invariant()
    def consistent(self) -> None:
        self.slab.check()
        self.zone.check()
        mm = self.slab.mem_map
        slab_pages = self.slab.nr_slab_pages
        assert mm.count_flag(PG_slab) == slab_pages
        large = sum(1 << compound_order(mm, h) for h in self.slab.large_kmalloc)
        assert nr_free_pages(self.zone) + slab_pages + large == self.free0
        in_slabs = sum(1 for a in self.live if (a >> 12) not in self.slab.large_kmalloc)
        assert sum(c.nr_inuse for c in self.slab.caches()) == in_slabs

    @invariant()
    def empty_slabs_are_bounded(self) -> None:
        for cache in self.caches:
            empty_node = sum(1 for s in cache.node_partial if cache.inuse[s] == 0)
            assert empty_node <= cache.min_partial
            empty = sum(1 for _, _, inuse in cache.slabs() if inuse == 0)
            per_cpu = 1 + cache.cpu_partial_slabs + cache.cpu_partial_slabs // 2 + 1
            assert empty <= cache.min_partial + self.slab.nr_cpus * per_cpu

    def teardown(self) -> None:
        for addr, cache in list(self.live.items()):
            if cache is None:
                kfree(self.slab, addr)
            else:
                kmem_cache_free(cache, addr)
        for cache in self.slab.caches():
            kmem_cache_shrink(cache)
        assert nr_free_pages(self.zone) == self.free0
        assert self.slab.nr_slab_pages == 0
        self.slab.check()
        self.zone.check()


TestSlabMachine = SlabMachine.TestCase
TestSlabMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
