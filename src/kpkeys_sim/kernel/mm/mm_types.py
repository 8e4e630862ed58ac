"""``struct mm_struct``, ``struct vm_area_struct`` and ``struct vm_struct``, reduced.

Sources: ``include/linux/mm_types.h`` (``mm_struct``, ``vm_area_struct``),
``include/linux/mm.h`` (``VM_*`` flags, ``is_cow_mapping``, ``vma_pages``,
``find_vma``), ``include/linux/vmalloc.h`` (``vm_struct`` and its ``VM_*``
flags), ``arch/arm64/include/asm/mmu.h`` (``mm_context_t``).

Model choices:

* ``mm.pgd`` is a pointer, i.e. the kernel VA of the pgd (``swapper_pg_dir``'s
  kernel-image address for ``init_mm``, a linear-map address otherwise);
  ``mm.pgd_phys`` is what ``cpu_switch_mm`` loads into TTBR0.
* ``mm.context_id`` is ``mm->context.id`` (the ASID; 0 = none yet; the
  scheduler allocates it on first switch).
* The VMA set (Linux: the maple tree ``mm->mm_mt``) is a list sorted by
  ``vm_start`` with a parallel list of starts for ``bisect``; VMAs never
  overlap (``insert_vm_struct`` refuses an overlapping one with ``-ENOMEM``,
  as ``vma_link`` does).
* Locks are plain flags: the model is sequential, so a lock only records
  who is inside (``page_table_lock``), and taking a held one is a bug.
* Page-table accounting: ``pgtables_bytes`` as in Linux
  (``mm_inc_nr_ptes`` adds ``PTRS_PER_PTE * sizeof(pte_t)``), plus explicit
  ``nr_ptes``/``nr_pmds``/``nr_puds`` counters (Linux derives them).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

__all__ = [
    "MM_ANONPAGES",
    "MM_FILEPAGES",
    "MM_SHMEMPAGES",
    "MM_SWAPENTS",
    "NR_MM_COUNTERS",
    "VM_ACCOUNT",
    "VM_ALLOC",
    "VM_ALLOW_HUGE_VMAP",
    "VM_DMA_COHERENT",
    "VM_DONTCOPY",
    "VM_DONTDUMP",
    "VM_DONTEXPAND",
    "VM_EXEC",
    "VM_FLUSH_RESET_PERMS",
    "VM_GROWSDOWN",
    "VM_HIGH_ARCH_0",
    "VM_HIGH_ARCH_1",
    "VM_HIGH_ARCH_2",
    "VM_HUGETLB",
    "VM_IO",
    "VM_IOREMAP",
    "VM_KASAN",
    "VM_LOCKED",
    "VM_MAP",
    "VM_MAP_PUT_PAGES",
    "VM_MAYEXEC",
    "VM_MAYREAD",
    "VM_MAYSHARE",
    "VM_MAYWRITE",
    "VM_MIXEDMAP",
    "VM_NONE",
    "VM_NORESERVE",
    "VM_NO_GUARD",
    "VM_PFNMAP",
    "VM_PKEY_BIT0",
    "VM_PKEY_BIT1",
    "VM_PKEY_BIT2",
    "VM_PKEY_BIT3",
    "VM_PKEY_MASK",
    "VM_PKEY_SHIFT",
    "VM_READ",
    "VM_SHARED",
    "VM_UNINITIALIZED",
    "VM_USERMAP",
    "VM_WIPEONFORK",
    "VM_WRITE",
    "VmaList",
    "find_vma",
    "find_vma_intersection",
    "insert_vm_struct",
    "is_cow_mapping",
    "mm_struct",
    "remove_vma_from_mm",
    "vm_area_struct",
    "vm_struct",
    "vma_is_anonymous",
    "vma_lookup",
    "vma_pages",
]

# --- vm_area_struct::vm_flags (include/linux/mm.h) --------------------------------------------
VM_NONE = 0x00000000
VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_MAYSHARE = 0x00000080
VM_GROWSDOWN = 0x00000100
VM_PFNMAP = 0x00000400
VM_LOCKED = 0x00002000
VM_IO = 0x00004000
VM_DONTCOPY = 0x00020000
VM_DONTEXPAND = 0x00040000
VM_ACCOUNT = 0x00100000
VM_NORESERVE = 0x00200000
VM_HUGETLB = 0x00400000
VM_WIPEONFORK = 0x02000000
VM_DONTDUMP = 0x04000000
VM_MIXEDMAP = 0x10000000
VM_HIGH_ARCH_0 = 1 << 32
VM_HIGH_ARCH_1 = 1 << 33
VM_HIGH_ARCH_2 = 1 << 34
#: arm64 with ARCH_HAS_PKEYS: the pkey of a VMA in VM_HIGH_ARCH_0..2.
VM_PKEY_SHIFT = 32
VM_PKEY_BIT0 = VM_HIGH_ARCH_0
VM_PKEY_BIT1 = VM_HIGH_ARCH_1
VM_PKEY_BIT2 = VM_HIGH_ARCH_2
VM_PKEY_MASK = VM_PKEY_BIT0 | VM_PKEY_BIT1 | VM_PKEY_BIT2
#: x86 (CONFIG_ARCH_PKEY_BITS = 4): the fourth key bit, VM_HIGH_ARCH_3.  arm64 has 3 key
#: bits (its VM_PKEY_BIT3 is 0 in Linux), so VM_PKEY_MASK above stays the arm64 mask.
VM_PKEY_BIT3 = 1 << 35

# --- vm_struct::flags (include/linux/vmalloc.h) -----------------------------------------------
VM_IOREMAP = 0x00000001
VM_ALLOC = 0x00000002
VM_MAP = 0x00000004
VM_USERMAP = 0x00000008
VM_DMA_COHERENT = 0x00000010
VM_UNINITIALIZED = 0x00000020
VM_NO_GUARD = 0x00000040
VM_KASAN = 0x00000080
VM_FLUSH_RESET_PERMS = 0x00000100
VM_MAP_PUT_PAGES = 0x00000200
VM_ALLOW_HUGE_VMAP = 0x00000400

# --- mm rss counters (include/linux/mm_types_task.h) ------------------------------------------
MM_FILEPAGES = 0
MM_ANONPAGES = 1
MM_SWAPENTS = 2
MM_SHMEMPAGES = 3
NR_MM_COUNTERS = 4

_ENOMEM = 12


def is_cow_mapping(flags: int) -> bool:
    """``is_cow_mapping(flags)``: private and may be written (fork write-protects it)."""
    return (flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


class vm_area_struct:
    """``struct vm_area_struct``: ``[vm_start, vm_end)`` of ``vm_mm`` with ``vm_flags``.

    ``vm_page_prot`` is the descriptor protection of its PTEs
    (``vm_get_page_prot(vm_flags)``).  ``vm_file`` is None for anonymous memory
    (the model's ``vma_is_anonymous``); ``anon_vma`` is whatever the user-mm
    code attaches (reverse-map bookkeeping).
    """

    __slots__ = (
        "anon_vma",
        "vm_end",
        "vm_file",
        "vm_flags",
        "vm_mm",
        "vm_page_prot",
        "vm_pgoff",
        "vm_private_data",
        "vm_start",
    )

    def __init__(
        self,
        vm_mm: mm_struct,
        vm_start: int,
        vm_end: int,
        vm_flags: int,
        vm_page_prot: int,
        *,
        vm_file: object | None = None,
        vm_pgoff: int = 0,
    ) -> None:
        if vm_end <= vm_start:
            raise ValueError(f"bad vma [{vm_start:#x}, {vm_end:#x}): empty or inverted")
        self.vm_mm = vm_mm
        self.vm_start = vm_start
        self.vm_end = vm_end
        self.vm_flags = vm_flags
        self.vm_page_prot = vm_page_prot
        self.vm_file = vm_file
        self.vm_pgoff = vm_pgoff
        self.anon_vma: object | None = None
        self.vm_private_data: object | None = None

    def __repr__(self) -> str:
        return (
            f"<vm_area_struct [{self.vm_start:#x}, {self.vm_end:#x}) flags={self.vm_flags:#x}"
            f"{' anon' if self.vm_file is None else ''}>"
        )


def vma_is_anonymous(vma: vm_area_struct) -> bool:
    """``vma_is_anonymous(vma)``: no backing file."""
    return vma.vm_file is None


def vma_pages(vma: vm_area_struct, page_shift: int) -> int:
    """``vma_pages(vma)``: number of pages spanned."""
    return (vma.vm_end - vma.vm_start) >> page_shift


class VmaList:
    """The VMAs of one mm, sorted by ``vm_start`` (the model's ``mm->mm_mt``)."""

    __slots__ = ("_starts", "_vmas")

    def __init__(self) -> None:
        self._vmas: list[vm_area_struct] = []
        self._starts: list[int] = []

    def __len__(self) -> int:
        return len(self._vmas)

    def __iter__(self) -> Iterator[vm_area_struct]:
        return iter(list(self._vmas))

    def find(self, addr: int) -> vm_area_struct | None:
        """The first VMA with ``vm_end > addr`` (``find_vma``)."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self._vmas[i].vm_end > addr:
            return self._vmas[i]
        if i + 1 < len(self._vmas):
            return self._vmas[i + 1]
        return None

    def insert(self, vma: vm_area_struct) -> bool:
        """Insert ``vma``; False (nothing changed) if it overlaps an existing one."""
        i = bisect.bisect_left(self._starts, vma.vm_start)
        if i > 0 and self._vmas[i - 1].vm_end > vma.vm_start:
            return False
        if i < len(self._vmas) and self._vmas[i].vm_start < vma.vm_end:
            return False
        self._vmas.insert(i, vma)
        self._starts.insert(i, vma.vm_start)
        return True

    def remove(self, vma: vm_area_struct) -> None:
        """Remove ``vma`` (``ValueError`` if it is not in this list)."""
        i = bisect.bisect_left(self._starts, vma.vm_start)
        if i >= len(self._vmas) or self._vmas[i] is not vma:
            raise ValueError(f"{vma!r} is not in this mm")
        del self._vmas[i]
        del self._starts[i]

    def reposition(self, vma: vm_area_struct) -> None:
        """Re-sort after ``vma.vm_start`` changed in place (split/merge by the caller)."""
        i = self._vmas.index(vma)
        del self._vmas[i]
        del self._starts[i]
        j = bisect.bisect_left(self._starts, vma.vm_start)
        self._vmas.insert(j, vma)
        self._starts.insert(j, vma.vm_start)


class mm_struct:
    """``struct mm_struct``: an address space.

    ``pgd`` is the VA of the top-level table, ``pgd_phys`` its physical address
    (TTBR0 value), ``context_id`` the ASID (``mm->context.id``), ``mmap`` the
    VMAs, ``pgtables_bytes``/``nr_ptes``/``nr_pmds``/``nr_puds`` the page-table
    accounting, ``page_table_lock`` a plain flag, ``rss_stat`` the
    ``MM_*PAGES`` counters, ``cpu_bitmap`` the ``mm_cpumask``.
    """

    __slots__ = (
        "context_id",
        "cpu_bitmap",
        "map_count",
        "mm_count",
        "mm_users",
        "mmap",
        "name",
        "nr_pmds",
        "nr_ptes",
        "nr_puds",
        "page_table_lock",
        "pgd",
        "pgd_phys",
        "pgtables_bytes",
        "rss_stat",
        "total_vm",
    )

    def __init__(self, pgd: int, pgd_phys: int, *, name: str = "mm") -> None:
        self.pgd = pgd
        self.pgd_phys = pgd_phys
        self.name = name
        self.context_id = 0
        self.cpu_bitmap = 0
        self.mmap = VmaList()
        self.map_count = 0
        self.mm_users = 1
        self.mm_count = 1
        self.pgtables_bytes = 0
        self.nr_ptes = 0
        self.nr_pmds = 0
        self.nr_puds = 0
        self.page_table_lock = False
        self.rss_stat = [0] * NR_MM_COUNTERS
        self.total_vm = 0

    def __repr__(self) -> str:
        return f"<mm_struct {self.name} pgd={self.pgd:#x} asid={self.context_id}>"


def find_vma(mm: mm_struct, addr: int) -> vm_area_struct | None:
    """``find_vma(mm, addr)``: the first VMA ending above ``addr`` (it may start above it)."""
    return mm.mmap.find(addr)


def vma_lookup(mm: mm_struct, addr: int) -> vm_area_struct | None:
    """``vma_lookup(mm, addr)``: the VMA containing ``addr``, or None."""
    vma = mm.mmap.find(addr)
    if vma is not None and vma.vm_start <= addr:
        return vma
    return None


def find_vma_intersection(mm: mm_struct, start: int, end: int) -> vm_area_struct | None:
    """``find_vma_intersection(mm, start, end)``: the first VMA overlapping ``[start, end)``."""
    vma = mm.mmap.find(start)
    if vma is not None and vma.vm_start < end:
        return vma
    return None


def insert_vm_struct(mm: mm_struct, vma: vm_area_struct) -> int:
    """``insert_vm_struct(mm, vma)``: link ``vma`` into ``mm``; ``-ENOMEM`` if it overlaps."""
    if vma.vm_mm is not mm:
        raise ValueError(f"{vma!r} belongs to another mm")
    if not mm.mmap.insert(vma):
        return -_ENOMEM
    mm.map_count += 1
    mm.total_vm += vma.vm_end - vma.vm_start
    return 0


def remove_vma_from_mm(mm: mm_struct, vma: vm_area_struct) -> None:
    """Unlink ``vma`` from ``mm`` (the detach half of ``vms_complete_munmap_vmas``)."""
    mm.mmap.remove(vma)
    mm.map_count -= 1
    mm.total_vm -= vma.vm_end - vma.vm_start


class vm_struct:
    """``struct vm_struct``: one vmalloc-space area (``[addr, addr + size)``).

    ``pages`` are the pfns backing a ``VM_ALLOC`` area (``area->pages``);
    ``size`` includes the guard page unless ``VM_NO_GUARD`` (``get_vm_area_size``
    subtracts it).  The kernel image itself is registered as one (``declare_kernel_vmas``).
    """

    __slots__ = ("addr", "caller", "flags", "pages", "phys_addr", "size")

    def __init__(
        self,
        addr: int,
        size: int,
        flags: int,
        *,
        pages: list[int] | None = None,
        phys_addr: int = 0,
        caller: str = "",
    ) -> None:
        self.addr = addr
        self.size = size
        self.flags = flags
        self.pages: list[int] = [] if pages is None else pages
        self.phys_addr = phys_addr
        self.caller = caller

    @property
    def nr_pages(self) -> int:
        """``area->nr_pages``."""
        return len(self.pages)

    def __repr__(self) -> str:
        return f"<vm_struct [{self.addr:#x}, {self.addr + self.size:#x}) flags={self.flags:#x}>"
