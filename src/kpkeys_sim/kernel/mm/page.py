"""``struct page`` for every frame (``mem_map``), held as packed numpy arrays.

Source: ``include/linux/mm_types.h`` (``struct page``), ``include/linux/page-flags.h``
(``enum pageflags``, ``PageFoo()`` helpers), ``include/linux/mm.h`` (refcount
helpers).

In the model a ``struct page *`` is its page frame number, an ``int``:
:func:`page_to_pfn` and :func:`pfn_to_page` are identities.  :class:`MemMap`
covers frames ``[base_pfn, base_pfn + nr_pages)``.  Every field is a numpy array
indexed by ``pfn - base_pfn``.  There is no Python object per frame.

Fields (31 bytes per frame; 64 GiB of 4K frames is 16 Mi entries, about 496 MiB,
most of it never touched since ``numpy.zeros`` memory is allocated lazily):

========================  ========  ==============================================
field                     dtype     meaning
========================  ========  ==============================================
``flags``                 uint32    ``PG_*`` bits (see below)
``private``               int64     ``page->private``: buddy order of a free head
                                    (``set_buddy_order``), ptl/etc. for owners
``mapping``               int64     ``page->mapping``; the PBA packs
                                    ``{in_block, block_nr_free}`` here
``refcount``              int32     ``page->_refcount``
``mapcount``              int32     ``page_mapcount()``, i.e. ``_mapcount + 1``
                                    (the model stores it without Linux's -1 bias)
``compound_order``        uint8     order of a compound head (Linux keeps it in
                                    ``page[1]``); 0 otherwise
``slab_cache``            int16     id of the ``kmem_cache`` owning a slab page;
                                    0 = none (cache ids start at 1)
========================  ========  ==============================================

Flag bits.  ``PG_*`` values are *bit numbers* as in the kernel: test
``flags & (1 << PG_foo)``, or use the ``PageFoo(mm, pfn)`` helpers.  The
numbering follows ``enum pageflags`` in order, but the exact numbers of a real
kernel depend on its configuration; the model's are its own.  Since Linux 6.12,
"buddy", "slab" and "table" are *page types* held in ``page->page_type``
(``PGTY_buddy``, ``PGTY_slab``, ``PGTY_table``) rather than flags.  The model
keeps them as flag bits with the old ``PG_`` names, so that one array answers
every "what is this frame" question.  ``PG_tail`` is model-only: Linux marks a
tail page with bit 0 of ``page->compound_head``.  With ``PG_head`` and
``compound_order`` it lets :func:`compound_head` find the head without a
per-frame pointer.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.errors import KernelBug

__all__ = [
    "FIELD_DTYPES",
    "PAGE_FLAG_NAMES",
    "MemMap",
    "PG_active",
    "PG_arch_1",
    "PG_arch_2",
    "PG_arch_3",
    "PG_buddy",
    "PG_dirty",
    "PG_head",
    "PG_locked",
    "PG_lru",
    "PG_mlocked",
    "PG_owner_priv_1",
    "PG_private",
    "PG_private_2",
    "PG_reclaim",
    "PG_referenced",
    "PG_reserved",
    "PG_slab",
    "PG_swapbacked",
    "PG_table",
    "PG_tail",
    "PG_unevictable",
    "PG_uptodate",
    "PG_waiters",
    "PG_workingset",
    "PG_writeback",
    "PageBuddy",
    "PageCompound",
    "PageHead",
    "PageReserved",
    "PageSlab",
    "PageTable",
    "PageTail",
    "__ClearPageReserved",
    "__ClearPageTable",
    "__SetPageReserved",
    "__SetPageTable",
    "compound_head",
    "compound_order",
    "page_count",
    "page_flag_names",
    "page_private",
    "page_to_pfn",
    "pfn_runs",
    "pfn_to_page",
    "pfn_valid",
    "set_page_private",
]

# enum pageflags (include/linux/page-flags.h), in kernel order.
PG_locked = 0
PG_writeback = 1
PG_referenced = 2
PG_uptodate = 3
PG_dirty = 4
PG_lru = 5
PG_head = 6
PG_waiters = 7
PG_active = 8
PG_workingset = 9
PG_owner_priv_1 = 10
PG_arch_1 = 11
PG_reserved = 12
PG_private = 13
PG_private_2 = 14
PG_reclaim = 15
PG_swapbacked = 16
PG_unevictable = 17
PG_mlocked = 18
PG_arch_2 = 19  # arm64: PG_mte_tagged
PG_arch_3 = 20  # arm64: PG_mte_lock
# Page types (page->page_type in Linux >= 6.12), kept as flag bits in the model.
PG_buddy = 24
PG_slab = 25
PG_table = 26
# Model-only: Linux marks tails with compound_head bit 0.
PG_tail = 27

#: Bit number -> kernel name, for messages and dumps.
PAGE_FLAG_NAMES: dict[int, str] = {
    PG_locked: "locked",
    PG_writeback: "writeback",
    PG_referenced: "referenced",
    PG_uptodate: "uptodate",
    PG_dirty: "dirty",
    PG_lru: "lru",
    PG_head: "head",
    PG_waiters: "waiters",
    PG_active: "active",
    PG_workingset: "workingset",
    PG_owner_priv_1: "owner_priv_1",
    PG_arch_1: "arch_1",
    PG_reserved: "reserved",
    PG_private: "private",
    PG_private_2: "private_2",
    PG_reclaim: "reclaim",
    PG_swapbacked: "swapbacked",
    PG_unevictable: "unevictable",
    PG_mlocked: "mlocked",
    PG_arch_2: "arch_2",
    PG_arch_3: "arch_3",
    PG_buddy: "buddy",
    PG_slab: "slab",
    PG_table: "table",
    PG_tail: "tail",
}

_PAGE_SHIFTS = (12, 14, 16)

#: Dtype of each field, in declaration order (also used by tests and dumps).
FIELD_DTYPES: dict[str, type[np.generic]] = {
    "flags": np.uint32,
    "private": np.int64,
    "mapping": np.int64,
    "refcount": np.int32,
    "mapcount": np.int32,
    "compound_order": np.uint8,
    "slab_cache": np.int16,
}


class MemMap:
    """The ``struct page`` array of frames ``[base_pfn, base_pfn + nr_pages)``.

    ``page_shift`` is the base page size (12, 14 or 16) and is used only to
    convert between pfns and physical addresses.  Construction allocates
    zeroed arrays lazily, so it takes about a millisecond even for 16 Mi frames.
    Direct array access uses ``mm.idx(pfn)`` (checked) or ``pfn - mm.base_pfn``
    (unchecked, for code that has already validated the pfn).
    """

    __slots__ = (
        "base_pfn",
        "compound_order",
        "end_pfn",
        "flags",
        "mapcount",
        "mapping",
        "nr_pages",
        "page_shift",
        "page_size",
        "private",
        "refcount",
        "slab_cache",
    )

    def __init__(self, base_pfn: int, nr_pages: int, *, page_shift: int = 12) -> None:
        if not isinstance(base_pfn, int) or base_pfn < 0:
            raise ValueError(f"bad base_pfn {base_pfn!r}: must be a non-negative int")
        if not isinstance(nr_pages, int) or nr_pages <= 0:
            raise ValueError(f"bad nr_pages {nr_pages!r}: must be a positive int")
        if page_shift not in _PAGE_SHIFTS:
            raise ValueError(f"bad page_shift {page_shift!r}: must be one of {_PAGE_SHIFTS}")
        self.base_pfn = base_pfn
        self.nr_pages = nr_pages
        self.end_pfn = base_pfn + nr_pages
        self.page_shift = page_shift
        self.page_size = 1 << page_shift
        self.flags: npt.NDArray[np.uint32] = np.zeros(nr_pages, dtype=np.uint32)
        self.private: npt.NDArray[np.int64] = np.zeros(nr_pages, dtype=np.int64)
        self.mapping: npt.NDArray[np.int64] = np.zeros(nr_pages, dtype=np.int64)
        self.refcount: npt.NDArray[np.int32] = np.zeros(nr_pages, dtype=np.int32)
        self.mapcount: npt.NDArray[np.int32] = np.zeros(nr_pages, dtype=np.int32)
        self.compound_order: npt.NDArray[np.uint8] = np.zeros(nr_pages, dtype=np.uint8)
        self.slab_cache: npt.NDArray[np.int16] = np.zeros(nr_pages, dtype=np.int16)

    def __repr__(self) -> str:
        return (
            f"MemMap(base_pfn={self.base_pfn:#x}, nr_pages={self.nr_pages}, "
            f"page_shift={self.page_shift})"
        )

    @property
    def nbytes(self) -> int:
        """Bytes of metadata held (all fields, whether touched or not)."""
        return sum(int(getattr(self, name).nbytes) for name in FIELD_DTYPES)

    def idx(self, pfn: int) -> int:
        """Array index of ``pfn``; ``ValueError`` if the pfn is outside this mem_map."""
        if not self.base_pfn <= pfn < self.end_pfn:
            raise ValueError(
                f"bad pfn {pfn:#x}: outside mem_map [{self.base_pfn:#x}, {self.end_pfn:#x})"
            )
        return pfn - self.base_pfn

    def check_range(self, pfn: int, nr: int) -> int:
        """Array index of ``pfn`` after checking ``[pfn, pfn + nr)`` lies in this mem_map."""
        if nr <= 0 or not (self.base_pfn <= pfn and pfn + nr <= self.end_pfn):
            raise ValueError(
                f"bad pfn range [{pfn:#x}, {pfn + nr:#x}): outside mem_map "
                f"[{self.base_pfn:#x}, {self.end_pfn:#x})"
            )
        return pfn - self.base_pfn

    def test_flag(self, pfn: int, bit: int) -> bool:
        """True if flag bit ``bit`` (a ``PG_*`` number) is set on ``pfn``."""
        return bool(self.flags.item(self.idx(pfn)) >> bit & 1)

    def set_flag(self, pfn: int, bit: int) -> None:
        """Set flag bit ``bit`` on ``pfn`` (the kernel's non-atomic ``__SetPageFoo``)."""
        i = self.idx(pfn)
        self.flags[i] = self.flags.item(i) | (1 << bit)

    def clear_flag(self, pfn: int, bit: int) -> None:
        """Clear flag bit ``bit`` on ``pfn`` (the kernel's ``__ClearPageFoo``)."""
        i = self.idx(pfn)
        self.flags[i] = self.flags.item(i) & ~(1 << bit)

    def count_flag(self, bit: int) -> int:
        """Number of frames with flag bit ``bit`` set (one vectorised pass)."""
        return int(np.count_nonzero(self.flags & np.uint32(1 << bit)))

    def pfn_to_phys(self, pfn: int) -> int:
        """``PFN_PHYS(pfn)``."""
        return pfn << self.page_shift

    def phys_to_pfn(self, phys: int) -> int:
        """``PHYS_PFN(phys)``."""
        return phys >> self.page_shift


def pfn_runs(pfns: Iterable[int]) -> list[tuple[int, int]]:
    """``(first, nr)`` runs of consecutive pfns in sorted ``pfns`` (one call per run
    for range APIs such as ``set_memory_*``)."""
    out: list[tuple[int, int]] = []
    for p in pfns:
        if out and out[-1][0] + out[-1][1] == p:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((p, 1))
    return out


def page_to_pfn(page: int) -> int:
    """``page_to_pfn()``: in the model a page *is* its pfn."""
    return page


def pfn_to_page(pfn: int) -> int:
    """``pfn_to_page()``: in the model a page *is* its pfn."""
    return pfn


def pfn_valid(mm: MemMap, pfn: int) -> bool:
    """``pfn_valid()``: the frame has a ``struct page`` in this mem_map.

    Linux on arm64 also asks memblock whether the pfn is memory; the model's
    mem_map spans one contiguous range, and holes inside it are valid pfns
    whose pages stay ``PG_reserved`` (as ``init_unavailable_range()`` leaves them).
    """
    return mm.base_pfn <= pfn < mm.end_pfn


def page_flag_names(mm: MemMap, pfn: int) -> str:
    """The set flags of ``pfn`` as ``"head|slab"`` (the kernel's ``%pGp`` style)."""
    f = mm.flags.item(mm.idx(pfn))
    names = [name for bit, name in sorted(PAGE_FLAG_NAMES.items()) if f >> bit & 1]
    return "|".join(names) if names else "none"


def PageBuddy(mm: MemMap, pfn: int) -> bool:
    """``PageBuddy()``: ``pfn`` is the head of a free block in the buddy allocator."""
    return mm.test_flag(pfn, PG_buddy)


def PageSlab(mm: MemMap, pfn: int) -> bool:
    """``PageSlab()``/``folio_test_slab()``: ``pfn`` belongs to a slab."""
    return mm.test_flag(pfn, PG_slab)


def PageTable(mm: MemMap, pfn: int) -> bool:
    """``PageTable()``: ``pfn`` is a page-table page (set by the pagetable ctor)."""
    return mm.test_flag(pfn, PG_table)


def PageReserved(mm: MemMap, pfn: int) -> bool:
    """``PageReserved()``: never handed to the buddy allocator (memblock-reserved or a hole)."""
    return mm.test_flag(pfn, PG_reserved)


def PageHead(mm: MemMap, pfn: int) -> bool:
    """``PageHead()``: head page of a compound page."""
    return mm.test_flag(pfn, PG_head)


def PageTail(mm: MemMap, pfn: int) -> bool:
    """``PageTail()``: tail page of a compound page."""
    return mm.test_flag(pfn, PG_tail)


def PageCompound(mm: MemMap, pfn: int) -> bool:
    """``PageCompound()``: head or tail of a compound page."""
    f = mm.flags.item(mm.idx(pfn))
    return bool(f & ((1 << PG_head) | (1 << PG_tail)))


def __SetPageTable(mm: MemMap, pfn: int) -> None:
    """``__SetPageTable()`` (``__folio_set_pgtable``): mark a page-table page."""
    mm.set_flag(pfn, PG_table)


def __ClearPageTable(mm: MemMap, pfn: int) -> None:
    """``__ClearPageTable()``: unmark a page-table page (before it is freed)."""
    mm.clear_flag(pfn, PG_table)


def __SetPageReserved(mm: MemMap, pfn: int) -> None:
    """``__SetPageReserved()``."""
    mm.set_flag(pfn, PG_reserved)


def __ClearPageReserved(mm: MemMap, pfn: int) -> None:
    """``__ClearPageReserved()``."""
    mm.clear_flag(pfn, PG_reserved)


def page_count(mm: MemMap, pfn: int) -> int:
    """``page_count()``: reference count of the (head of the) page."""
    return mm.refcount.item(mm.idx(compound_head(mm, pfn)))


def page_private(mm: MemMap, pfn: int) -> int:
    """``page_private()``."""
    return mm.private.item(mm.idx(pfn))


def set_page_private(mm: MemMap, pfn: int, value: int) -> None:
    """``set_page_private()``."""
    mm.private[mm.idx(pfn)] = value


def compound_order(mm: MemMap, pfn: int) -> int:
    """``compound_order()``: order of a compound head, 0 for any other page."""
    i = mm.idx(pfn)
    if mm.flags.item(i) >> PG_head & 1:
        return mm.compound_order.item(i)
    return 0


def compound_head(mm: MemMap, pfn: int) -> int:
    """``compound_head()``: the head pfn of the compound page containing ``pfn``.

    Returns ``pfn`` itself for a non-tail page.  Compound pages come from the
    buddy allocator and are aligned to their order, so the head is found by
    aligning ``pfn`` down to each order in turn (at most 14 probes): the head
    is the first aligned ``PG_head`` frame whose compound page covers ``pfn``.  A tail
    without a head is model corruption and raises :class:`KernelBug`.
    """
    i = mm.idx(pfn)
    if not mm.flags.item(i) >> PG_tail & 1:
        return pfn
    for k in range(1, 32):
        cand = pfn & ~((1 << k) - 1)
        if cand < mm.base_pfn:
            break
        ci = cand - mm.base_pfn
        if mm.flags.item(ci) >> PG_head & 1 and pfn - cand < 1 << mm.compound_order.item(ci):
            return cand
    raise KernelBug(f"tail page {pfn:#x} has no compound head")
