"""A SLUB-like slab allocator (``mm/slub.c``, ``mm/slab_common.c``) over the buddy allocator.

Objects are identified by their **physical address** (an ``int``): slab head
pfn << PAGE_SHIFT plus ``index * cache.size``.  The kernel layer converts them
to linear-map virtual addresses (``__va``) when it needs to.  NULL is ``None``;
``kmalloc(0)`` returns :data:`ZERO_SIZE_PTR` as Linux does.

What is modelled, following SLUB of Linux 6.8-6.12 (after "delay freezing of
partial slabs"):

* **Slabs** are compound page-allocator blocks of ``cache.order``
  (``calculate_order()`` with ``slub_max_order = PAGE_ALLOC_COSTLY_ORDER = 3``,
  ``min_objects = 4 * (fls(nr_cpus) + 1)``, the 1/16 -> 1/2 waste loop).  When
  that order is not available they fall back to ``get_order(size)``.  Every
  page of a slab is marked ``PG_slab`` and carries the cache id in
  ``MemMap.slab_cache``.  Linux marks only the folio head; the model marks
  every page so a pfn lookup needs no ``compound_head()``.
* **A CPU slab per CPU** (``cpu`` argument, default 0), a **per-CPU partial
  list** (``CONFIG_SLUB_CPU_PARTIAL``: ``cpu_partial``/``cpu_partial_slabs``
  from ``set_cpu_partial()``; a free to a full slab puts it there; when the list
  holds ``cpu_partial_slabs`` slabs it is drained to the node list) and **one
  node partial list** with ``min_partial = clamp(ilog2(size)/2, 5, 10)``.
  **Empty slabs go back to the buddy allocator**: when a free empties a
  slab on the node partial list while ``nr_partial >= min_partial``, when a
  drained CPU partial list holds empty slabs under the same condition, and on
  ``kmem_cache_shrink()``/``kmem_cache_destroy()``.  This is the path
  cross-cache attacks use.  Full slabs are on no list (as without
  ``SLUB_DEBUG``).
* **Freelists are LIFO** within a slab: allocation pops the head, free pushes
  it.  A fresh slab hands out objects in index order, or in a shuffled order
  with ``freelist_random=True`` (``CONFIG_SLAB_FREELIST_RANDOM``: a per-cache
  random sequence and a random start per slab, drawn from the
  ``numpy.random.Generator`` passed in).  SLUB's separate lockless per-CPU
  freelist and its remote-free freelist are merged into the one per-slab
  freelist.  The order differs from Linux only when frees from other CPUs
  interleave.
* **The freelist lives in the model's own per-slab numpy arrays**, not in
  simulated memory, so a use-after-free write cannot corrupt it here.
  Freelist-pointer corruption attacks are out of scope of this module.
* **Checks** raise :class:`KernelBug` before changing state: double free (SLUB
  catches only the "object == freelist head" case with
  ``CONFIG_SLAB_FREELIST_HARDENED``; the model catches every double free), an
  address that is not an object start ("Invalid object pointer",
  ``slub_debug``), a free to the wrong cache ("Wrong slab cache",
  ``cache_from_obj``), ``kfree()`` of a page not from kmalloc, and destroying a
  cache that still has objects.
* **kmalloc**: caches ``kmalloc-8 .. kmalloc-{2*PAGE_SIZE}`` (8, 16, 32, 64,
  96, 128, 192, 256, 512, 1k, 2k, 4k, 8k for 4K pages), in three types chosen
  by ``kmalloc_type()``: normal, ``kmalloc-cg-*`` (``__GFP_ACCOUNT``) and
  ``kmalloc-rcl-*`` (``__GFP_RECLAIMABLE``).  Larger requests go to the page
  allocator as compound pages (``kmalloc_large``).  No ``dma-kmalloc``, no
  ``CONFIG_RANDOM_KMALLOC_CACHES``, no ``SLAB_BUCKETS``, and no cache merging
  (as with ``slab_nomerge``): every ``kmem_cache_create()`` makes a distinct cache.
* ``SLAB_TYPESAFE_BY_RCU`` moves the free pointer after the object (size +8)
  but slab pages are freed at once (no RCU grace period).  ``SLAB_SET_PKEY``
  (the cred series) is only recorded: the kernel layer sets the pkey in
  ``new_slab_hook``/``free_slab_hook``, which run for every slab.  No memcg,
  no KASAN/KFENCE/redzones/poisoning, no NUMA.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.mm import gfp as _gfp
from kpkeys_sim.kernel.mm.page import PG_slab, compound_head, compound_order
from kpkeys_sim.kernel.mm.page_alloc import (
    BuddyAllocator,
    EventSink,
    __free_pages,
    alloc_pages,
    get_order,
    put_page,
)
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "ARCH_KMALLOC_MINALIGN",
    "ARCH_SLAB_MINALIGN",
    "KMALLOC_CGROUP",
    "KMALLOC_NORMAL",
    "KMALLOC_RECLAIM",
    "MAX_OBJS_PER_PAGE",
    "MAX_PARTIAL",
    "MIN_PARTIAL",
    "PAGE_ALLOC_COSTLY_ORDER",
    "SLAB_ACCOUNT",
    "SLAB_ALLOC",
    "SLAB_FREE",
    "SLAB_HWCACHE_ALIGN",
    "SLAB_KMALLOC",
    "SLAB_NO_MERGE",
    "SLAB_PAGE_ALLOC",
    "SLAB_PAGE_FREE",
    "SLAB_PANIC",
    "SLAB_RECLAIM_ACCOUNT",
    "SLAB_SET_PKEY",
    "SLAB_TYPESAFE_BY_RCU",
    "ZERO_SIZE_PTR",
    "FreeSlabHook",
    "KmemCache",
    "SlabAllocator",
    "SlabHook",
    "ZeroObject",
    "allocate_slab",
    "calculate_order",
    "deactivate_slab",
    "discard_slab",
    "flush_cpu_slab",
    "kfree",
    "kmalloc",
    "kmalloc_index",
    "kmalloc_slab",
    "kmalloc_type",
    "kmem_cache_alloc",
    "kmem_cache_create",
    "kmem_cache_destroy",
    "kmem_cache_free",
    "kmem_cache_shrink",
    "kmem_cache_zalloc",
    "ksize",
    "kzalloc",
    "put_cpu_partial",
    "virt_to_cache",
]

# include/linux/slab.h flag values (the classic ones; recent kernels number them
# from an enum whose values depend on the configuration).
SLAB_HWCACHE_ALIGN = 0x00002000
SLAB_PANIC = 0x00040000
SLAB_TYPESAFE_BY_RCU = 0x00080000
SLAB_RECLAIM_ACCOUNT = 0x00020000
SLAB_NO_MERGE = 0x01000000
SLAB_ACCOUNT = 0x04000000
#: Model marker of caches made by create_kmalloc_caches() (Linux 6.x has SLAB_KMALLOC too).
SLAB_KMALLOC = 0x00001000
#: Cred series (RFC v2): slabs of this cache get a pkey.  Bit chosen by the model [U].
SLAB_SET_PKEY = 0x40000000
_KNOWN_SLAB_FLAGS = (
    SLAB_HWCACHE_ALIGN
    | SLAB_PANIC
    | SLAB_TYPESAFE_BY_RCU
    | SLAB_RECLAIM_ACCOUNT
    | SLAB_NO_MERGE
    | SLAB_ACCOUNT
    | SLAB_KMALLOC
    | SLAB_SET_PKEY
)

#: include/linux/mmzone.h
PAGE_ALLOC_COSTLY_ORDER = 3
#: mm/slub.c
MIN_PARTIAL = 5
MAX_PARTIAL = 10
MAX_OBJS_PER_PAGE = 32767
#: arm64 without KASAN tags/MTE: __alignof__(unsigned long long).
ARCH_SLAB_MINALIGN = 8
#: arm64 since 6.5 (DMA bouncing lets kmalloc go down to 8 bytes).
ARCH_KMALLOC_MINALIGN = 8
#: arm64 L1_CACHE_BYTES (cache_line_size()).
_CACHE_LINE = 64
#: include/linux/slab.h: what kmalloc(0) returns.
ZERO_SIZE_PTR = 16

# enum kmalloc_cache_type (the types the model has).
KMALLOC_NORMAL = 0
KMALLOC_RECLAIM = 1
KMALLOC_CGROUP = 2
_KMALLOC_PREFIX = {
    KMALLOC_NORMAL: "kmalloc-",
    KMALLOC_RECLAIM: "kmalloc-rcl-",
    KMALLOC_CGROUP: "kmalloc-cg-",
}

SLAB_ALLOC = declare_event("slab_alloc", "objects allocated from slab caches", "kernel")
SLAB_FREE = declare_event("slab_free", "objects freed to slab caches", "kernel")
SLAB_PAGE_ALLOC = declare_event(
    "slab_page_alloc", "pages taken from the buddy allocator for new slabs", "kernel"
)
SLAB_PAGE_FREE = declare_event(
    "slab_page_free", "pages of empty slabs returned to the buddy allocator", "kernel"
)

#: Called for every new slab ``(cache, head_pfn, order) -> ok``; False fails the allocation.
SlabHook = Callable[["KmemCache", int, int], bool]
#: Called for every slab about to go back to the buddy allocator ``(cache, head_pfn, order)``.
FreeSlabHook = Callable[["KmemCache", int, int], None]
#: The machine layer's object-zeroing callback ``(phys_addr, nbytes)``.
ZeroObject = Callable[[int, int], None]

_GFP_ZERO = _gfp.__GFP_ZERO
_GFP_COMP = _gfp.__GFP_COMP
_GFP_NOWARN = _gfp.__GFP_NOWARN
_GFP_NORETRY = _gfp.__GFP_NORETRY
_GFP_NOFAIL = _gfp.__GFP_NOFAIL
_GFP_NOMEMALLOC = _gfp.__GFP_NOMEMALLOC
_GFP_RECLAIM = _gfp.__GFP_RECLAIM
_GFP_DIRECT_RECLAIM = _gfp.__GFP_DIRECT_RECLAIM
_GFP_ACCOUNT = _gfp.__GFP_ACCOUNT
_GFP_RECLAIMABLE = _gfp.__GFP_RECLAIMABLE

# Where a slab is (per-slot location codes).
_LOC_UNUSED = 0
_LOC_FULL = 1  # on no list (all objects allocated, not a CPU slab)
_LOC_CPU = 2  # some CPU's current slab ("frozen")
_LOC_CPU_PARTIAL = 3  # on a CPU's partial list
_LOC_NODE_PARTIAL = 4  # on the node partial list
_LOC_NAMES = ("unused", "full", "cpu", "cpu_partial", "node_partial")

_SHRINK_PROMOTE_MAX = 32


def calculate_order(size: int, nr_cpus: int, page_shift: int) -> int:
    """``calculate_order()`` (mm/slub.c, 6.8+): slab order for objects of ``size`` bytes."""
    page_size = 1 << page_shift
    max_order = PAGE_ALLOC_COSTLY_ORDER
    min_objects = 4 * (nr_cpus.bit_length() + 1)  # 4 * (fls(nr_cpus) + 1)
    max_objects = max((page_size << max_order) // size, 1)
    min_objects = min(min_objects, max_objects)
    min_order = get_order(min_objects * size, page_shift)
    if (page_size << min_order) // size > MAX_OBJS_PER_PAGE:
        return get_order(size * MAX_OBJS_PER_PAGE, page_shift) - 1
    fraction = 16
    while fraction > 1:
        order = min_order
        while order <= max_order:
            slab_size = page_size << order
            if slab_size % size <= slab_size // fraction:
                break
            order += 1
        if order <= max_order:
            return order
        fraction //= 2
    return get_order(size, page_shift)


def _calculate_alignment(flags: int, align: int, size: int) -> int:
    """``calculate_alignment()`` (mm/slab_common.c)."""
    if flags & SLAB_HWCACHE_ALIGN:
        ralign = _CACHE_LINE
        while size <= ralign // 2:
            ralign //= 2
        align = max(align, ralign)
    align = max(align, ARCH_SLAB_MINALIGN)
    return (align + 7) & ~7


class KmemCache:
    """``struct kmem_cache``: one cache and the packed state of its slabs.

    Public read-only attributes: ``id`` (>= 1, stored in ``MemMap.slab_cache``),
    ``name``, ``object_size``, ``size`` (stride), ``align``, ``flags``,
    ``order``/``objects`` (preferred slab order and objects per such slab),
    ``min_order``, ``min_partial``, ``cpu_partial``, ``cpu_partial_slabs``,
    ``nr_slabs``, ``nr_slab_pages``, ``nr_inuse`` (objects allocated),
    ``nr_partial`` (node partial list length), ``allocator``.

    Per slab (a *slot*): freelist links ``nxt[slot, i]`` and an allocated
    bitmap ``allocated[slot, i]`` as numpy rows; scalar fields in Python lists.

    ``gen`` counts changes: every function of this module that changes a
    cache's state (its attributes or the containers in
    :attr:`snapshot_owned`) increments it first.  Only this module changes
    a cache.  The attack campaign's snapshot
    (``kpkeys_sim.security.snapshot``) uses it to skip restoring the caches
    a trial did not touch; it is not kernel state.
    """

    #: Snapshot protocol: the generation attribute, and the containers only the cache
    #: holds (changed only together with a ``gen`` increment).
    snapshot_gen_attr: ClassVar[str] = "gen"
    snapshot_owned: ClassVar[tuple[str, ...]] = (
        "allocated",
        "cpu_partial_lists",
        "cpu_slab",
        "fl_head",
        "free_slots",
        "inuse",
        "loc",
        "node_partial",
        "nobj",
        "nxt",
        "pfn_to_slot",
        "random_seq",
        "slab_order",
        "slab_pfn",
    )

    __slots__ = (
        "align",
        "allocated",
        "allocator",
        "cpu_partial",
        "cpu_partial_lists",
        "cpu_partial_slabs",
        "cpu_slab",
        "fl_head",
        "flags",
        "free_slots",
        "gen",
        "id",
        "inuse",
        "loc",
        "min_order",
        "min_partial",
        "name",
        "nobj",
        "node_partial",
        "nr_inuse",
        "nr_slab_pages",
        "nxt",
        "object_size",
        "objects",
        "order",
        "pfn_to_slot",
        "random_seq",
        "size",
        "slab_order",
        "slab_pfn",
    )

    def __init__(
        self, allocator: SlabAllocator, cache_id: int, name: str, size: int, align: int, flags: int
    ) -> None:
        page_shift = allocator.page_shift
        self.allocator: SlabAllocator | None = allocator
        self.id = cache_id
        self.name = name
        self.object_size = size
        self.flags = flags
        self.align = _calculate_alignment(flags, align, size)
        # calculate_sizes(): word-align, free pointer outside the object for RCU caches.
        stride = (size + 7) & ~7
        if flags & SLAB_TYPESAFE_BY_RCU:
            stride += 8
        self.size = (stride + self.align - 1) & ~(self.align - 1)
        self.order = calculate_order(self.size, allocator.nr_cpus, page_shift)
        self.min_order = get_order(self.size, page_shift)
        self.objects = (1 << page_shift << self.order) // self.size
        self.min_partial = min(MAX_PARTIAL, max(MIN_PARTIAL, (self.size.bit_length() - 1) // 2))
        # set_cpu_partial()
        if not allocator.cpu_partial:
            cpu_partial = 0
        elif self.size >= 1 << page_shift:
            cpu_partial = 6
        elif self.size >= 1024:
            cpu_partial = 24
        elif self.size >= 256:
            cpu_partial = 52
        else:
            cpu_partial = 120
        self.cpu_partial = cpu_partial
        self.cpu_partial_slabs = -(-cpu_partial * 2 // self.objects)
        # init_cache_random_seq()
        self.random_seq: npt.NDArray[np.int64] | None = None
        if allocator.freelist_random and self.objects >= 2:
            assert allocator.rng is not None
            self.random_seq = allocator.rng.permutation(self.objects).astype(np.int64)
        # Per-CPU and node state.
        self.cpu_slab: list[int] = [-1] * allocator.nr_cpus
        self.cpu_partial_lists: list[list[int]] = [[] for _ in range(allocator.nr_cpus)]
        self.node_partial: OrderedDict[int, None] = OrderedDict()
        # Slot storage.
        cap = 4
        self.nxt: npt.NDArray[np.int16] = np.full((cap, self.objects), -1, dtype=np.int16)
        self.allocated: npt.NDArray[np.bool_] = np.zeros((cap, self.objects), dtype=np.bool_)
        self.fl_head: list[int] = [-1] * cap
        self.inuse: list[int] = [0] * cap
        self.nobj: list[int] = [0] * cap
        self.loc: list[int] = [_LOC_UNUSED] * cap
        self.slab_pfn: list[int] = [0] * cap
        self.slab_order: list[int] = [0] * cap
        self.free_slots: list[int] = list(range(cap - 1, -1, -1))
        self.pfn_to_slot: dict[int, int] = {}
        self.nr_inuse = 0
        self.nr_slab_pages = 0
        self.gen = 0

    def __repr__(self) -> str:
        return (
            f"KmemCache({self.name!r}, id={self.id}, size={self.size}, order={self.order}, "
            f"objects={self.objects}, slabs={self.nr_slabs}, inuse={self.nr_inuse})"
        )

    @property
    def nr_slabs(self) -> int:
        """Slabs currently allocated to this cache."""
        return len(self.pfn_to_slot)

    @property
    def nr_partial(self) -> int:
        """``n->nr_partial``: slabs on the node partial list."""
        return len(self.node_partial)

    def slab_location(self, pfn: int) -> str:
        """Where the slab headed at ``pfn`` is: cpu, cpu_partial, node_partial or full."""
        return _LOC_NAMES[self.loc[self.pfn_to_slot[pfn]]]

    def slabs(self) -> list[tuple[int, int, int]]:
        """``(head_pfn, order, inuse)`` of every slab, by pfn."""
        return sorted(
            (pfn, self.slab_order[s], self.inuse[s]) for pfn, s in self.pfn_to_slot.items()
        )

    def _grow(self) -> None:
        self.gen += 1
        cap = len(self.fl_head)
        new = cap * 2
        nxt = np.full((new, self.objects), -1, dtype=np.int16)
        nxt[:cap] = self.nxt
        self.nxt = nxt
        allocated = np.zeros((new, self.objects), dtype=np.bool_)
        allocated[:cap] = self.allocated
        self.allocated = allocated
        extra = new - cap
        self.fl_head += [-1] * extra
        self.inuse += [0] * extra
        self.nobj += [0] * extra
        self.loc += [_LOC_UNUSED] * extra
        self.slab_pfn += [0] * extra
        self.slab_order += [0] * extra
        self.free_slots = list(range(new - 1, cap - 1, -1)) + self.free_slots


class SlabAllocator:
    """The slab layer: caches by id, the kmalloc caches, and the hooks to lower layers.

    ``zone`` is the buddy allocator slabs come from.  ``nr_cpus`` sizes the
    per-CPU state and enters ``calculate_order()``.  ``freelist_random`` needs
    ``rng``.  ``cpu_partial`` is ``CONFIG_SLUB_CPU_PARTIAL`` (default on).
    ``zero_object(phys, nbytes)`` zeroes objects for ``__GFP_ZERO`` and
    ``init_on_alloc``/``init_on_free``, taken from the zone.  Without it the
    zeroed objects are only counted (``nr_zeroed_objects``).  The hooks run for
    every new slab and every slab freed (see :data:`SlabHook`).
    """

    __slots__ = (
        "_caches",
        "_free_ids",
        "_next_id",
        "cpu_partial",
        "free_slab_hook",
        "freelist_random",
        "instruments",
        "kmalloc_caches",
        "kmalloc_max_cache_size",
        "large_kmalloc",
        "mem_map",
        "new_slab_hook",
        "nr_cpus",
        "nr_zeroed_objects",
        "page_shift",
        "rng",
        "zero_object",
        "zone",
    )

    def __init__(
        self,
        zone: BuddyAllocator,
        *,
        nr_cpus: int = 1,
        freelist_random: bool = False,
        rng: np.random.Generator | None = None,
        cpu_partial: bool = True,
        zero_object: ZeroObject | None = None,
        new_slab_hook: SlabHook | None = None,
        free_slab_hook: FreeSlabHook | None = None,
        instruments: EventSink | None = None,
    ) -> None:
        if not isinstance(zone, BuddyAllocator):
            raise ValueError(f"bad zone {zone!r}: must be a BuddyAllocator")
        if not isinstance(nr_cpus, int) or not 1 <= nr_cpus <= 4096:
            raise ValueError(f"bad nr_cpus {nr_cpus!r}: must be an int in 1..4096")
        if freelist_random and not isinstance(rng, np.random.Generator):
            raise ValueError(f"bad rng {rng!r}: freelist_random needs a numpy Generator")
        self.zone = zone
        self.mem_map = zone.mem_map
        self.page_shift = zone.mem_map.page_shift
        self.nr_cpus = nr_cpus
        self.freelist_random = bool(freelist_random)
        self.rng = rng
        self.cpu_partial = bool(cpu_partial)
        self.zero_object = zero_object
        self.new_slab_hook = new_slab_hook
        self.free_slab_hook = free_slab_hook
        self.instruments = instruments if instruments is not None else zone.instruments
        self.nr_zeroed_objects = 0
        self._caches: dict[int, KmemCache] = {}
        self._free_ids: list[int] = []
        self._next_id = 1
        self.large_kmalloc: set[int] = set()
        self.kmalloc_max_cache_size = 1 << (self.page_shift + 1)
        self.kmalloc_caches: dict[tuple[int, int], KmemCache] = {}
        self._create_kmalloc_caches()

    def __repr__(self) -> str:
        return f"SlabAllocator(caches={len(self._caches)}, nr_cpus={self.nr_cpus})"

    def _create_kmalloc_caches(self) -> None:
        """``create_kmalloc_caches()``: the kmalloc caches of every modelled type."""
        extra = {
            KMALLOC_NORMAL: 0,
            KMALLOC_RECLAIM: SLAB_RECLAIM_ACCOUNT,
            KMALLOC_CGROUP: SLAB_ACCOUNT,
        }
        for ktype, prefix in _KMALLOC_PREFIX.items():
            for index, size in _kmalloc_sizes(self.kmalloc_max_cache_size):
                name = prefix + _size_name(size)
                cache = kmem_cache_create(
                    self, name, size, ARCH_KMALLOC_MINALIGN, SLAB_KMALLOC | extra[ktype]
                )
                self.kmalloc_caches[(ktype, index)] = cache

    def caches(self) -> list[KmemCache]:
        """Every live cache, by id."""
        return [self._caches[i] for i in sorted(self._caches)]

    def cache_by_id(self, cache_id: int) -> KmemCache:
        """The cache with id ``cache_id`` (as stored in ``MemMap.slab_cache``)."""
        try:
            return self._caches[cache_id]
        except KeyError:
            raise ValueError(f"bad cache id {cache_id!r}: no such cache") from None

    @property
    def nr_slab_pages(self) -> int:
        """Pages held by all slabs (``NR_SLAB_*`` in /proc/meminfo)."""
        return sum(c.nr_slab_pages for c in self._caches.values())

    def check(self) -> None:
        """Verify every cache's invariants; raise :class:`KernelBug` naming the first violation.

        Per slab: ``inuse`` equals the allocated bitmap's count, and the
        freelist visits exactly the free objects once.  Its location is
        consistent with the CPU slab, CPU partial and node partial lists (each
        slab on at most one).  Node-partial slabs are not full, and slabs on no
        list are full.  Every page of the slab is ``PG_slab`` with the cache id.
        Totals: ``nr_inuse``, ``nr_slab_pages`` and the mem_map's ``PG_slab``
        count.  Meant for tests.
        """
        mm = self.mem_map
        total_pages = 0
        for cache in self._caches.values():
            where: dict[int, int] = {}
            for cpu, slot in enumerate(cache.cpu_slab):
                if slot >= 0:
                    if slot in where:
                        raise KernelBug(f"{cache.name}: slot {slot} on two lists (cpu {cpu})")
                    where[slot] = _LOC_CPU
            for pl in cache.cpu_partial_lists:
                for slot in pl:
                    if slot in where:
                        raise KernelBug(f"{cache.name}: slot {slot} on two lists (cpu partial)")
                    where[slot] = _LOC_CPU_PARTIAL
            for slot in cache.node_partial:
                if slot in where:
                    raise KernelBug(f"{cache.name}: slot {slot} on two lists (node partial)")
                where[slot] = _LOC_NODE_PARTIAL
            inuse_total = 0
            pages = 0
            for pfn, slot in cache.pfn_to_slot.items():
                loc = cache.loc[slot]
                nobj = cache.nobj[slot]
                inuse = cache.inuse[slot]
                if cache.slab_pfn[slot] != pfn:
                    raise KernelBug(f"{cache.name}: slab {pfn:#x} slot mapping broken")
                if loc != where.get(slot, _LOC_FULL):
                    raise KernelBug(f"{cache.name}: slab {pfn:#x} location {_LOC_NAMES[loc]} wrong")
                if loc == _LOC_FULL and inuse != nobj:
                    raise KernelBug(f"{cache.name}: slab {pfn:#x} on no list but not full")
                if loc == _LOC_NODE_PARTIAL and inuse == nobj:
                    raise KernelBug(f"{cache.name}: full slab {pfn:#x} on the partial list")
                if int(np.count_nonzero(cache.allocated[slot, :nobj])) != inuse:
                    raise KernelBug(f"{cache.name}: slab {pfn:#x} inuse count wrong")
                if np.any(cache.allocated[slot, nobj:]):
                    raise KernelBug(f"{cache.name}: slab {pfn:#x} object beyond nobj allocated")
                seen = np.zeros(nobj, dtype=np.bool_)
                idx = cache.fl_head[slot]
                count = 0
                while idx >= 0:
                    if idx >= nobj or seen[idx] or cache.allocated[slot, idx]:
                        raise KernelBug(f"{cache.name}: slab {pfn:#x} freelist corrupt at {idx}")
                    seen[idx] = True
                    count += 1
                    idx = int(cache.nxt[slot, idx])
                if count != nobj - inuse:
                    raise KernelBug(f"{cache.name}: slab {pfn:#x} freelist length wrong")
                n = 1 << cache.slab_order[slot]
                i = pfn - mm.base_pfn
                if not np.all(mm.flags[i : i + n] & np.uint32(1 << PG_slab)) or np.any(
                    mm.slab_cache[i : i + n] != cache.id
                ):
                    raise KernelBug(f"{cache.name}: slab {pfn:#x} pages not marked")
                inuse_total += inuse
                pages += n
            for slot in where:
                if cache.loc[slot] == _LOC_UNUSED:
                    raise KernelBug(f"{cache.name}: freed slot {slot} still on a list")
            if inuse_total != cache.nr_inuse:
                raise KernelBug(f"{cache.name}: nr_inuse {cache.nr_inuse} != {inuse_total}")
            if pages != cache.nr_slab_pages:
                raise KernelBug(f"{cache.name}: nr_slab_pages {cache.nr_slab_pages} != {pages}")
            total_pages += pages
        if mm.count_flag(PG_slab) != total_pages:
            raise KernelBug(f"PG_slab pages {mm.count_flag(PG_slab)} != {total_pages} in caches")


def _kmalloc_sizes(max_size: int) -> list[tuple[int, int]]:
    """``(kmalloc_index, size)`` of every kmalloc cache up to ``max_size``."""
    out = [(1, 96), (2, 192)]
    shift = 3
    while 1 << shift <= max_size:
        out.append((shift, 1 << shift))
        shift += 1
    return sorted(out, key=lambda t: t[1])


def _size_name(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024}k"
    return str(size)


def kmalloc_index(size: int) -> int:
    """``kmalloc_index()``: kmalloc cache index for ``size`` (1: 96, 2: 192, else log2)."""
    if size <= 8:
        return 3
    if 64 < size <= 96:
        return 1
    if 128 < size <= 192:
        return 2
    return (size - 1).bit_length()


def kmalloc_type(gfp: int) -> int:
    """``kmalloc_type()``: RECLAIM for ``__GFP_RECLAIMABLE``, CGROUP for ``__GFP_ACCOUNT``."""
    if gfp & _GFP_RECLAIMABLE:
        return KMALLOC_RECLAIM
    if gfp & _GFP_ACCOUNT:
        return KMALLOC_CGROUP
    return KMALLOC_NORMAL


def kmalloc_slab(slab: SlabAllocator, size: int, gfp: int) -> KmemCache | None:
    """``kmalloc_slab()``: the cache ``kmalloc(size, gfp)`` uses (None: page allocator)."""
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"bad size {size!r}: must be a positive int")
    if size > slab.kmalloc_max_cache_size:
        return None
    return slab.kmalloc_caches[(kmalloc_type(gfp), kmalloc_index(size))]


# ---------------------------------------------------------------------------
# Cache creation and destruction.


def kmem_cache_create(
    slab: SlabAllocator, name: str, size: int, align: int = 8, flags: int = 0
) -> KmemCache:
    """``kmem_cache_create()`` (mm/slab_common.c): a new, never merged, cache.

    ``size`` must fit in a slab of at most ``MAX_PAGE_ORDER`` and ``align``
    must be a power of two.  Bad values raise ``ValueError``; Linux returns
    NULL (or panics with ``SLAB_PANIC``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"bad cache name {name!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"bad object size {size!r}: must be a positive int")
    if size > slab.mem_map.page_size << slab.zone.max_order:
        raise ValueError(
            f"bad object size {size}: larger than a MAX_PAGE_ORDER block "
            f"({slab.mem_map.page_size << slab.zone.max_order} bytes)"
        )
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise ValueError(f"bad align {align!r}: must be a positive power of two")
    if not isinstance(flags, int) or flags & ~_KNOWN_SLAB_FLAGS:
        raise ValueError(f"bad slab flags {flags!r}")
    if slab._free_ids:
        cache_id = heapq.heappop(slab._free_ids)
    else:
        cache_id = slab._next_id
        if cache_id > np.iinfo(np.int16).max:
            raise ValueError(f"too many slab caches: cache id {cache_id} exceeds int16")
        slab._next_id += 1
    cache = KmemCache(slab, cache_id, name, size, align, flags)
    slab._caches[cache_id] = cache
    return cache


def kmem_cache_destroy(cache: KmemCache) -> None:
    """``kmem_cache_destroy()``: flush, free every slab, forget the cache.

    A cache with objects still allocated raises :class:`KernelBug` ("Slab
    cache still has objects") and is left intact.  Linux WARNs and leaks it.
    Destroying a kmalloc cache is a programming error.
    """
    slab = _alive(cache)
    cache.gen += 1
    if cache.flags & SLAB_KMALLOC:
        raise ValueError(f"bad cache {cache.name!r}: kmalloc caches cannot be destroyed")
    if cache.nr_inuse:
        raise KernelBug(
            f"kmem_cache_destroy {cache.name}: Slab cache still has objects ({cache.nr_inuse})"
        )
    kmem_cache_shrink(cache)
    del slab._caches[cache.id]
    heapq.heappush(slab._free_ids, cache.id)
    cache.allocator = None


def _alive(cache: KmemCache) -> SlabAllocator:
    slab = cache.allocator
    if slab is None:
        raise ValueError(f"bad cache {cache.name!r}: it was destroyed")
    return slab


# ---------------------------------------------------------------------------
# Slab pages.


def _emit(slab: SlabAllocator, kind: str, n: int) -> None:
    ins = slab.instruments
    if ins is not None:
        ins.emit(kind, n)


def _zero_object(slab: SlabAllocator, addr: int, nbytes: int) -> None:
    slab.nr_zeroed_objects += 1
    if slab.zero_object is not None:
        slab.zero_object(addr, nbytes)


def allocate_slab(cache: KmemCache, gfp: int) -> int | None:
    """``allocate_slab()``/``new_slab()``: a fresh slab from the page allocator; its slot.

    Tries ``cache.order`` without direct reclaim when it is above the minimum
    order, then ``cache.min_order`` with the caller's gfp, as SLUB does.
    """
    slab = _alive(cache)
    cache.gen += 1
    zone = slab.zone
    mm = slab.mem_map
    alloc_flags = 0
    if cache.flags & SLAB_ACCOUNT:
        alloc_flags |= _GFP_ACCOUNT
    if cache.flags & SLAB_RECLAIM_ACCOUNT:
        alloc_flags |= _GFP_RECLAIMABLE
    flags = (gfp & ~_GFP_ZERO) | _GFP_COMP | alloc_flags
    first = (flags | _GFP_NOWARN | _GFP_NORETRY) & ~_GFP_NOFAIL
    if first & _GFP_DIRECT_RECLAIM and cache.order > cache.min_order:
        first = (first | _GFP_NOMEMALLOC) & ~_GFP_RECLAIM
    order = cache.order
    pfn = alloc_pages(zone, first, order)
    if pfn is None:
        order = cache.min_order
        pfn = alloc_pages(zone, flags, order)
        if pfn is None:
            return None
    n = 1 << order
    i = pfn - mm.base_pfn
    mm.flags[i : i + n] |= np.uint32(1 << PG_slab)
    mm.slab_cache[i : i + n] = cache.id
    if slab.new_slab_hook is not None:
        ok = False
        try:
            ok = bool(slab.new_slab_hook(cache, pfn, order))
        finally:
            if not ok:  # undo, so a failing or raising hook leaves no half-made slab
                mm.flags[i : i + n] &= np.uint32(~(1 << PG_slab) & 0xFFFFFFFF)
                mm.slab_cache[i : i + n] = 0
                __free_pages(zone, pfn, order)
        if not ok:
            return None
    if not cache.free_slots:
        cache._grow()
    slot = cache.free_slots.pop()
    nobj = (mm.page_size << order) // cache.size
    # Initial freelist: index order, or shuffle_freelist() with a random start.
    seq: npt.NDArray[np.int64]
    if cache.random_seq is not None and nobj >= 2:
        assert slab.rng is not None
        pos = int(slab.rng.integers(cache.objects))
        seq = np.roll(cache.random_seq, -pos)
        seq = seq[seq < nobj]
    else:
        seq = np.arange(nobj, dtype=np.int64)
    row = cache.nxt[slot]
    row[:] = -1
    row[seq[:-1]] = seq[1:]
    cache.allocated[slot, :] = False
    cache.fl_head[slot] = int(seq[0])
    cache.inuse[slot] = 0
    cache.nobj[slot] = nobj
    cache.slab_pfn[slot] = pfn
    cache.slab_order[slot] = order
    cache.loc[slot] = _LOC_FULL
    cache.pfn_to_slot[pfn] = slot
    cache.nr_slab_pages += n
    _emit(slab, SLAB_PAGE_ALLOC, n)
    return slot


def discard_slab(cache: KmemCache, slot: int) -> None:
    """``discard_slab()``/``free_slab()``: return an empty slab's pages to the buddy allocator."""
    slab = _alive(cache)
    cache.gen += 1
    mm = slab.mem_map
    pfn = cache.slab_pfn[slot]
    order = cache.slab_order[slot]
    n = 1 << order
    if slab.free_slab_hook is not None:
        slab.free_slab_hook(cache, pfn, order)
    i = pfn - mm.base_pfn
    mm.flags[i : i + n] &= np.uint32(~(1 << PG_slab) & 0xFFFFFFFF)
    mm.slab_cache[i : i + n] = 0
    del cache.pfn_to_slot[pfn]
    cache.loc[slot] = _LOC_UNUSED
    cache.fl_head[slot] = -1
    cache.free_slots.append(slot)
    cache.nr_slab_pages -= n
    _emit(slab, SLAB_PAGE_FREE, n)
    __free_pages(slab.zone, pfn, order)


def _add_partial(cache: KmemCache, slot: int, tail: bool) -> None:
    """``add_partial()``: DEACTIVATE_TO_TAIL or DEACTIVATE_TO_HEAD."""
    cache.gen += 1
    cache.node_partial[slot] = None
    if not tail:
        cache.node_partial.move_to_end(slot, last=False)
    cache.loc[slot] = _LOC_NODE_PARTIAL


def _put_partials(cache: KmemCache, chain: list[int]) -> None:
    """``__put_partials()``: move a CPU partial chain to the node; discard surplus empties."""
    cache.gen += 1
    to_discard: list[int] = []
    for slot in reversed(chain):  # chain head (most recent) first
        if cache.inuse[slot] == 0 and len(cache.node_partial) >= cache.min_partial:
            to_discard.append(slot)
        else:
            _add_partial(cache, slot, tail=True)
    for slot in reversed(to_discard):  # slab_to_discard is a stack
        discard_slab(cache, slot)


def put_cpu_partial(cache: KmemCache, slot: int, cpu: int, drain: bool) -> None:
    """``put_cpu_partial()``: push a slab on ``cpu``'s partial list, draining a full list."""
    cache.gen += 1
    pl = cache.cpu_partial_lists[cpu]
    if drain and len(pl) >= cache.cpu_partial_slabs:
        cache.cpu_partial_lists[cpu] = []
        _put_partials(cache, pl)
        pl = cache.cpu_partial_lists[cpu]
    pl.append(slot)
    cache.loc[slot] = _LOC_CPU_PARTIAL


def _get_partial_node(cache: KmemCache, cpu: int) -> int | None:
    """``get_partial_node()``: first node-partial slab to the CPU; more to its partial list."""
    cache.gen += 1
    node = cache.node_partial
    first: int | None = None
    partial_slabs = 0
    while node:
        slot, _ = node.popitem(last=False)
        if first is None:
            first = slot
            cache.cpu_slab[cpu] = slot
            cache.loc[slot] = _LOC_CPU
        else:
            put_cpu_partial(cache, slot, cpu, drain=False)
            partial_slabs += 1
        if not cache.cpu_partial or partial_slabs > cache.cpu_partial_slabs // 2:
            break
    return first


def deactivate_slab(cache: KmemCache, slot: int) -> None:
    """``deactivate_slab()``: a CPU slab leaves its CPU (to the node list, freed, or full)."""
    cache.gen += 1
    if cache.inuse[slot] == 0 and len(cache.node_partial) >= cache.min_partial:
        discard_slab(cache, slot)
    elif cache.inuse[slot] < cache.nobj[slot]:
        _add_partial(cache, slot, tail=False)
    else:
        cache.loc[slot] = _LOC_FULL


def flush_cpu_slab(cache: KmemCache, cpu: int) -> None:
    """``flush_cpu_slab()``: deactivate ``cpu``'s slab and drain its partial list."""
    cache.gen += 1
    slot = cache.cpu_slab[cpu]
    if slot >= 0:
        cache.cpu_slab[cpu] = -1
        deactivate_slab(cache, slot)
    pl = cache.cpu_partial_lists[cpu]
    if pl:
        cache.cpu_partial_lists[cpu] = []
        _put_partials(cache, pl)


def _slab_alloc_slow(cache: KmemCache, gfp: int, cpu: int) -> int | None:
    """``___slab_alloc()``: the CPU slab is exhausted; find another slab for ``cpu``."""
    cache.gen += 1
    old = cache.cpu_slab[cpu]
    if old >= 0:
        cache.cpu_slab[cpu] = -1
        cache.loc[old] = _LOC_FULL
    pl = cache.cpu_partial_lists[cpu]
    if pl:
        slot = pl.pop()
        cache.cpu_slab[cpu] = slot
        cache.loc[slot] = _LOC_CPU
        return slot
    got = _get_partial_node(cache, cpu)
    if got is not None:
        return got
    new = allocate_slab(cache, gfp)
    if new is None:
        return None
    cache.cpu_slab[cpu] = new
    cache.loc[new] = _LOC_CPU
    return new


# ---------------------------------------------------------------------------
# Object allocation and free.


def _check_cpu(slab: SlabAllocator, cpu: int) -> None:
    if not isinstance(cpu, int) or not 0 <= cpu < slab.nr_cpus:
        raise ValueError(f"bad cpu {cpu!r}: must be in 0..{slab.nr_cpus - 1}")


def kmem_cache_alloc(cache: KmemCache, gfp: int, cpu: int = 0) -> int | None:
    """``kmem_cache_alloc()`` (``slab_alloc_node``): physical address of a new object, or None.

    Fast path: pop the CPU slab's freelist.  Slow path
    (``___slab_alloc``): CPU partial list, node partial list, then a new slab.
    ``__GFP_ZERO`` (or ``init_on_alloc``) zeroes the object through
    ``zero_object``.
    """
    slab = _alive(cache)
    _gfp.check_gfp_arg(gfp)
    _check_cpu(slab, cpu)
    cache.gen += 1
    slot = cache.cpu_slab[cpu]
    if slot < 0 or cache.fl_head[slot] < 0:
        got = _slab_alloc_slow(cache, gfp, cpu)
        if got is None:
            return None
        slot = got
    idx = cache.fl_head[slot]
    cache.fl_head[slot] = cache.nxt.item(slot, idx)
    cache.allocated[slot, idx] = True
    cache.inuse[slot] += 1
    cache.nr_inuse += 1
    addr = (cache.slab_pfn[slot] << slab.page_shift) + idx * cache.size
    if gfp & _GFP_ZERO or slab.zone.init_on_alloc:
        _zero_object(slab, addr, cache.object_size)
    _emit(slab, SLAB_ALLOC, 1)
    return addr


def kmem_cache_zalloc(cache: KmemCache, gfp: int, cpu: int = 0) -> int | None:
    """``kmem_cache_zalloc()``: ``kmem_cache_alloc(cache, gfp | __GFP_ZERO)``."""
    return kmem_cache_alloc(cache, gfp | _GFP_ZERO, cpu)


def _lookup_object(slab: SlabAllocator, addr: int) -> tuple[KmemCache, int, int]:
    """``virt_to_slab()`` + object index: (cache, slot, index) or KernelBug."""
    mm = slab.mem_map
    if not isinstance(addr, int) or isinstance(addr, bool) or addr < 0:
        raise ValueError(f"bad object address {addr!r}")
    pfn = addr >> slab.page_shift
    if not mm.base_pfn <= pfn < mm.end_pfn:
        raise KernelBug(f"free of object {addr:#x}: not in memory")
    i = pfn - mm.base_pfn
    if not mm.flags.item(i) >> PG_slab & 1:
        raise KernelBug(f"free of object {addr:#x}: page {pfn:#x} is not a slab page")
    cache = slab._caches.get(mm.slab_cache.item(i))
    if cache is None:
        raise KernelBug(f"free of object {addr:#x}: slab page has no cache")
    slot = -1
    for order in (cache.order, cache.min_order):
        head = pfn & ~((1 << order) - 1)
        s = cache.pfn_to_slot.get(head, -1)
        if s >= 0 and cache.slab_order[s] == order:
            slot = s
            break
    if slot < 0:
        raise KernelBug(f"free of object {addr:#x}: no slab of {cache.name} holds it")
    off = addr - (cache.slab_pfn[slot] << slab.page_shift)
    idx, rem = divmod(off, cache.size)
    if rem or idx >= cache.nobj[slot]:
        raise KernelBug(f"Invalid object pointer {addr:#x} in {cache.name} (offset {off} in slab)")
    return cache, slot, idx


def _slab_free(
    slab: SlabAllocator, cache: KmemCache, slot: int, idx: int, addr: int, cpu: int
) -> None:
    """``do_slab_free()``/``__slab_free()`` for one object already validated."""
    cache.gen += 1
    if not cache.allocated.item(slot, idx):
        raise KernelBug(f"double free or corruption: object {addr:#x} in {cache.name} is free")
    if slab.zone.init_on_free:
        _zero_object(slab, addr, cache.object_size)
    was_full = cache.fl_head[slot] < 0
    cache.nxt[slot, idx] = cache.fl_head[slot]
    cache.fl_head[slot] = idx
    cache.allocated[slot, idx] = False
    cache.inuse[slot] -= 1
    cache.nr_inuse -= 1
    _emit(slab, SLAB_FREE, 1)
    loc = cache.loc[slot]
    if loc in (_LOC_CPU, _LOC_CPU_PARTIAL):
        return  # frozen CPU slab, or on a CPU partial list: no list activity
    empty = cache.inuse[slot] == 0
    if loc == _LOC_FULL:
        assert was_full
        if cache.cpu_partial:
            put_cpu_partial(cache, slot, cpu, drain=True)
        elif empty and len(cache.node_partial) >= cache.min_partial:
            discard_slab(cache, slot)
        else:
            _add_partial(cache, slot, tail=True)
        return
    # On the node partial list.
    if empty and len(cache.node_partial) >= cache.min_partial:
        del cache.node_partial[slot]
        discard_slab(cache, slot)


def kmem_cache_free(cache: KmemCache, addr: int, cpu: int = 0) -> None:
    """``kmem_cache_free()``: free an object of ``cache`` (from ``cpu``).

    A wrong cache, a pointer that is not an object start and a double free
    raise :class:`KernelBug` with the model state unchanged.
    """
    slab = _alive(cache)
    _check_cpu(slab, cpu)
    owner, slot, idx = _lookup_object(slab, addr)
    if owner is not cache:
        raise KernelBug(
            f"cache_from_obj: Wrong slab cache. {cache.name} but object is from {owner.name}"
        )
    _slab_free(slab, cache, slot, idx, addr, cpu)


def kmem_cache_shrink(cache: KmemCache) -> int:
    """``kmem_cache_shrink()``: flush every CPU, free *all* empty slabs, sort the partial list.

    Returns the number of slabs freed (Linux returns 0 or an error; the count is
    the model's addition).  The partial list is rebuilt with the fullest slabs
    first, as ``__kmem_cache_do_shrink()`` does.
    """
    slab = _alive(cache)
    cache.gen += 1
    before = cache.nr_slabs
    for cpu in range(slab.nr_cpus):
        flush_cpu_slab(cache, cpu)
    discard: list[int] = []
    promote: list[list[int]] = [[] for _ in range(_SHRINK_PROMOTE_MAX)]
    rest: list[int] = []
    for slot in cache.node_partial:
        free = cache.nobj[slot] - cache.inuse[slot]
        if free == cache.nobj[slot]:
            discard.insert(0, slot)  # list_move to the head of "discard"
        elif free <= _SHRINK_PROMOTE_MAX:
            promote[free - 1].insert(0, slot)
        else:
            rest.append(slot)
    order: list[int] = []
    for bucket in promote:  # splicing buckets 31..0 to the head leaves bucket 0 first
        order.extend(bucket)
    order.extend(rest)
    cache.node_partial = OrderedDict((s, None) for s in order)
    for slot in discard:
        discard_slab(cache, slot)
    return before - cache.nr_slabs


def kmalloc(slab: SlabAllocator, size: int, gfp: int, cpu: int = 0) -> int | None:
    """``kmalloc()``: an object of at least ``size`` bytes, or None.

    Up to ``2 * PAGE_SIZE`` it comes from the kmalloc cache chosen by
    :func:`kmalloc_type` and :func:`kmalloc_index`.  Above that it is a
    compound page-allocator block (``kmalloc_large``); beyond ``MAX_PAGE_ORDER``
    the allocation fails.  ``size == 0`` returns :data:`ZERO_SIZE_PTR`.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"bad size {size!r}: must be a non-negative int")
    _gfp.check_gfp_arg(gfp)
    if size == 0:
        return ZERO_SIZE_PTR
    cache = kmalloc_slab(slab, size, gfp)
    if cache is not None:
        return kmem_cache_alloc(cache, gfp, cpu)
    order = get_order(size, slab.page_shift)
    pfn = alloc_pages(slab.zone, gfp | _GFP_COMP, order)
    if pfn is None:
        return None
    slab.large_kmalloc.add(pfn)
    return pfn << slab.page_shift


def kzalloc(slab: SlabAllocator, size: int, gfp: int, cpu: int = 0) -> int | None:
    """``kzalloc()``: ``kmalloc(size, gfp | __GFP_ZERO)``."""
    return kmalloc(slab, size, gfp | _GFP_ZERO, cpu)


def kfree(slab: SlabAllocator, addr: int | None, cpu: int = 0) -> None:
    """``kfree()``: free a kmalloc'ed (or any slab) object; None/ZERO_SIZE_PTR are no-ops.

    A large kmalloc (a compound page) is released with ``put_page()``.  An
    address in a page that is neither a slab page nor a large kmalloc raises
    :class:`KernelBug` (Linux WARNs and frees the page anyway).
    """
    if addr is None or addr == ZERO_SIZE_PTR:
        return
    _check_cpu(slab, cpu)
    mm = slab.mem_map
    if not isinstance(addr, int) or isinstance(addr, bool) or addr < 0:
        raise ValueError(f"bad object address {addr!r}")
    pfn = addr >> slab.page_shift
    if not mm.base_pfn <= pfn < mm.end_pfn:
        raise KernelBug(f"kfree({addr:#x}): not in memory")
    if mm.flags.item(pfn - mm.base_pfn) >> PG_slab & 1:
        cache, slot, idx = _lookup_object(slab, addr)
        _slab_free(slab, cache, slot, idx, addr, cpu)
        return
    head = compound_head(mm, pfn)
    if head not in slab.large_kmalloc:
        raise KernelBug(f"kfree({addr:#x}): page {pfn:#x} is not from kmalloc")
    if int(mm.refcount[head - mm.base_pfn]) == 1:
        slab.large_kmalloc.discard(head)
    put_page(slab.zone, head)


def ksize(slab: SlabAllocator, addr: int) -> int:
    """``ksize()``: usable size of a kmalloc'ed object."""
    mm = slab.mem_map
    pfn = addr >> slab.page_shift
    if mm.base_pfn <= pfn < mm.end_pfn and mm.flags.item(pfn - mm.base_pfn) >> PG_slab & 1:
        cache, _, _ = _lookup_object(slab, addr)
        return cache.object_size
    head = compound_head(mm, pfn)
    if head not in slab.large_kmalloc:
        raise KernelBug(f"ksize({addr:#x}): not a kmalloc object")
    return mm.page_size << compound_order(mm, head)


def virt_to_cache(slab: SlabAllocator, addr: int) -> KmemCache | None:
    """``virt_to_cache()``: the cache whose slab holds physical address ``addr``, or None.

    Linux takes a linear-map pointer; the model takes the physical address
    (any byte of the slab).
    """
    mm = slab.mem_map
    pfn = addr >> slab.page_shift
    if not mm.base_pfn <= pfn < mm.end_pfn:
        return None
    i = pfn - mm.base_pfn
    if not mm.flags.item(i) >> PG_slab & 1:
        return None
    return slab._caches.get(mm.slab_cache.item(i))
