"""mmap, munmap, madvise, populate and exit_mmap for the user address-space model.

Models ``mm/mmap.c``/``mm/vma.c`` (``do_mmap``, ``mmap_region``,
``__get_unmapped_area``, ``do_vmi_munmap``/``vms_complete_munmap_vmas``,
``__split_vma``, ``exit_mmap``), ``mm/madvise.c`` (``MADV_HUGEPAGE``,
``MADV_NOHUGEPAGE``, ``MADV_DONTNEED``), ``mm/gup.c`` (``__mm_populate``) and
``mm/shmem.c`` (``shmem_zero_setup``).

Simplifications (``docs/model-assumptions.md``):

* VMAs are never merged with their neighbours (Linux's ``vma_merge_*``); it
  only changes ``map_count``, never page tables or pages.
* The layout is top-down from ``mmap_base = TASK_SIZE - 128 MiB``
  (arm64 ``mmap_base()`` with the minimum gap and no randomisation); a free
  hint address is honoured; ``mmap_min_addr`` is 64 KiB.  Anonymous mappings
  without a hint whose length is a multiple of ``PMD_SIZE`` are
  ``PMD_SIZE``-aligned (``thp_get_unmapped_area_vmflags``, Linux 6.7+), so a
  1 GiB mapping covers exactly 512 PTE tables.
* ``MAP_SHARED|MAP_ANONYMOUS`` is backed by a shmem :class:`file`
  (``shmem_zero_setup``); file mappings take a model :class:`file`.
"""

from __future__ import annotations

from kpkeys_sim.kernel.errors import EINVAL, ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.memory import (
    VM_HUGEPAGE,
    VM_NOHUGEPAGE,
    file,
    filp_create,
    fput,
    free_pgtables,
    get_file,
    populate_vma_range,
    unmap_vmas,
)
from kpkeys_sim.kernel.mm.mm_types import (
    VM_EXEC,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    find_vma_intersection,
    insert_vm_struct,
    mm_struct,
    remove_vma_from_mm,
    vm_area_struct,
)
from kpkeys_sim.kernel.mm.mmu_gather import (
    tlb_finish_mmu,
    tlb_gather_mmu,
    tlb_gather_mmu_fullmm,
)
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "FIRST_USER_ADDRESS",
    "MADV_DONTNEED",
    "MADV_HUGEPAGE",
    "MADV_NOHUGEPAGE",
    "MAP_ANONYMOUS",
    "MAP_FIXED",
    "MAP_POPULATE",
    "MAP_PRIVATE",
    "MAP_SHARED",
    "MMAP_MIN_ADDR",
    "MUNMAP",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "USER_PGTABLES_CEILING",
    "__split_vma",
    "do_madvise",
    "do_mmap",
    "do_munmap",
    "exit_mmap",
    "get_unmapped_area",
    "mm_populate",
    "mmap_base",
    "mmap_region",
    "populate",
    "task_size",
]

# include/uapi/asm-generic/mman-common.h / mman.h
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_POPULATE = 0x008000
MADV_DONTNEED = 4
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15

#: arm64: ``FIRST_USER_ADDRESS`` 0 and ``USER_PGTABLES_CEILING`` 0 (= the top).
FIRST_USER_ADDRESS = 0
USER_PGTABLES_CEILING = 0
#: ``mmap_min_addr`` (the model's choice, 64 KiB).
MMAP_MIN_ADDR = 0x10000
_MIN_GAP = 128 << 20

MUNMAP = declare_event("munmap", "munmap calls that unmapped something (do_vmi_munmap)", "kernel")


def task_size(k: Kernel) -> int:
    """``TASK_SIZE``: the user address space is ``[0, 2^VA_BITS)``."""
    return 1 << int(k.pgt.VA_BITS)


def mmap_base(k: Kernel) -> int:
    """arm64 ``mmap_base()`` without randomisation: ``TASK_SIZE - MIN_GAP``."""
    return task_size(k) - _MIN_GAP


def _page_align(k: Kernel, x: int) -> int:
    g = k.pgt
    return (x + g.PAGE_SIZE - 1) & ~(g.PAGE_SIZE - 1)


def _topdown(k: Kernel, mm: mm_struct, length: int) -> int:
    """``vm_unmapped_area`` top-down: the highest ``length``-byte gap below ``mmap_base``."""
    top = mmap_base(k)
    vmas = [v for v in mm.mmap if v.vm_start < top]
    for vma in reversed(vmas):
        if top - vma.vm_end >= length:
            return top - length
        top = min(top, vma.vm_start)
    if top - MMAP_MIN_ADDR >= length:
        return top - length
    return -ENOMEM


def get_unmapped_area(k: Kernel, mm: mm_struct, addr: int, length: int, anon: bool) -> int:
    """``__get_unmapped_area()``: ``addr`` if that range is free, else a top-down search.

    Anonymous, hint-less requests of a ``PMD_SIZE`` multiple are padded by
    ``PMD_SIZE`` and aligned up (``__thp_get_unmapped_area``).  Returns the
    address or ``-ENOMEM``.
    """
    g = k.pgt
    if length > task_size(k) - MMAP_MIN_ADDR:
        return -ENOMEM
    if addr:
        addr = _page_align(k, addr)
        if (
            addr >= MMAP_MIN_ADDR
            and addr + length <= task_size(k)
            and find_vma_intersection(mm, addr, addr + length) is None
        ):
            return addr
    if anon and not length % g.PMD_SIZE:
        base = _topdown(k, mm, length + g.PMD_SIZE)
        if base >= 0:
            return (base + g.PMD_SIZE - 1) & ~(g.PMD_SIZE - 1)
    return _topdown(k, mm, length)


def _calc_vm_flags(prot: int, flags: int) -> int:
    vm_flags = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if prot & PROT_READ:
        vm_flags |= VM_READ
    if prot & PROT_WRITE:
        vm_flags |= VM_WRITE
    if prot & PROT_EXEC:
        vm_flags |= VM_EXEC
    if flags & MAP_SHARED:
        vm_flags |= VM_SHARED | VM_MAYSHARE
    return vm_flags


def mmap_region(
    k: Kernel,
    mm: mm_struct,
    f: file | None,
    addr: int,
    length: int,
    vm_flags: int,
    pgoff: int,
) -> int:
    """``mmap_region()``: unmap what ``[addr, addr + len)`` overlaps, then insert the new VMA.

    A shared anonymous mapping gets a shmem file (``shmem_zero_setup``).
    Returns ``addr`` or ``-errno``.
    """
    end = addr + length
    if find_vma_intersection(mm, addr, end) is not None:
        ret = do_munmap(k, mm, addr, length)
        if ret:
            return ret
    if f is None and vm_flags & VM_SHARED:
        f = filp_create(k, "dev/zero", length, shmem=True)
        pgoff = 0
    elif f is not None:
        get_file(f)
    vma = vm_area_struct(
        mm, addr, end, vm_flags, k.pgt.vm_get_page_prot(k, vm_flags), vm_file=f, vm_pgoff=pgoff
    )
    if insert_vm_struct(mm, vma):
        if f is not None:
            fput(k, f)
        return -ENOMEM
    return addr


def do_mmap(
    k: Kernel,
    mm: mm_struct,
    addr: int,
    length: int,
    prot: int,
    flags: int,
    f: file | None = None,
    pgoff: int = 0,
) -> int:
    """``do_mmap()``: map ``length`` bytes; returns the address or ``-errno``.

    ``flags``: exactly one of ``MAP_SHARED``/``MAP_PRIVATE``, plus
    ``MAP_ANONYMOUS`` (then ``f`` must be None), ``MAP_FIXED`` (replace what
    is there) and ``MAP_POPULATE`` (fault everything in, ``mm_populate``).
    """
    if length <= 0:
        return -EINVAL
    if bool(flags & MAP_SHARED) == bool(flags & MAP_PRIVATE):
        return -EINVAL
    anon = bool(flags & MAP_ANONYMOUS)
    if anon == (f is not None):
        return -EINVAL
    length = _page_align(k, length)
    if flags & MAP_FIXED:
        if addr & (k.pgt.PAGE_SIZE - 1) or addr < MMAP_MIN_ADDR or addr + length > task_size(k):
            return -EINVAL
    else:
        addr = get_unmapped_area(k, mm, addr, length, anon)
        if addr < 0:
            return addr
    ret = mmap_region(k, mm, f, addr, length, _calc_vm_flags(prot, flags), pgoff)
    if ret < 0:
        return ret
    if flags & MAP_POPULATE:
        mm_populate(k, mm, addr, length)
    return addr


def mm_populate(k: Kernel, mm: mm_struct, start: int, length: int) -> int:
    """``mm_populate()`` (``__mm_populate``): fault in every VMA page of the range."""
    end = start + _page_align(k, length)
    for vma in mm.mmap:
        s = max(start, vma.vm_start)
        e = min(end, vma.vm_end)
        if s < e:
            ret = populate_vma_range(k, vma, s, e)
            if ret:
                return ret
    return 0


#: ``populate(k, mm, start, len)``: the ``MAP_POPULATE`` step, :func:`mm_populate`.
populate = mm_populate


# --- munmap --------------------------------------------------------------------------------------


def __split_vma(k: Kernel, mm: mm_struct, vma: vm_area_struct, addr: int) -> vm_area_struct:
    """``__split_vma(vmi, vma, addr, new_below=0)``: cut ``vma`` at ``addr``; return the upper part.

    The new VMA shares the anon_vma and takes a file reference; its
    ``vm_pgoff`` advances by the pages below ``addr``.
    """
    g = k.pgt
    if not vma.vm_start < addr < vma.vm_end or addr & (g.PAGE_SIZE - 1):
        raise KernelBug(f"__split_vma of {vma!r} at {addr:#x}")
    new = vm_area_struct(
        mm,
        addr,
        vma.vm_end,
        vma.vm_flags,
        vma.vm_page_prot,
        vm_file=vma.vm_file,
        vm_pgoff=vma.vm_pgoff + ((addr - vma.vm_start) >> g.PAGE_SHIFT),
    )
    new.anon_vma = vma.anon_vma
    if isinstance(vma.vm_file, file):
        get_file(vma.vm_file)
    remove_vma_from_mm(mm, vma)
    vma.vm_end = addr
    if insert_vm_struct(mm, vma) or insert_vm_struct(mm, new):
        raise KernelBug("__split_vma: reinsertion failed")
    return new


def _remove_vma(k: Kernel, vma: vm_area_struct) -> None:
    """``remove_vma()``: drop the VMA's file reference."""
    if isinstance(vma.vm_file, file):
        fput(k, vma.vm_file)


def _isolate(
    k: Kernel, mm: mm_struct, start: int, end: int
) -> tuple[list[vm_area_struct], vm_area_struct | None, vm_area_struct | None]:
    """Split at ``start``/``end`` and return the VMAs inside, with the neighbours outside."""
    vma = find_vma_intersection(mm, start, end)
    if vma is None:
        return [], None, None
    if vma.vm_start < start:
        __split_vma(k, mm, vma, start)
    last = None
    for v in mm.mmap:
        if v.vm_start < end < v.vm_end:
            last = v
    if last is not None:
        __split_vma(k, mm, last, end)
    inside = [v for v in mm.mmap if start <= v.vm_start and v.vm_end <= end]
    prev = None
    nxt = None
    for v in mm.mmap:
        if v.vm_end <= start:
            prev = v
        elif v.vm_start >= end and nxt is None:
            nxt = v
    return inside, prev, nxt


def do_munmap(k: Kernel, mm: mm_struct, start: int, length: int) -> int:
    """``do_munmap()`` → ``do_vmi_munmap``: unmap ``[start, start + len)``.

    Splits the VMAs at the edges, detaches those inside, then (as
    ``vms_clear_ptes``): ``tlb_gather_mmu``, ``unmap_vmas``, ``free_pgtables``
    bounded by the previous VMA's end and the next VMA's start, and
    ``tlb_finish_mmu`` (flush, then free pages and tables); finally the VMAs'
    file references are dropped.  Returns 0 or ``-EINVAL``.
    """
    g = k.pgt
    if start & (g.PAGE_SIZE - 1) or length <= 0 or start + length > task_size(k):
        return -EINVAL
    end = start + _page_align(k, length)
    inside, prev, nxt = _isolate(k, mm, start, end)
    if not inside:
        return 0
    for vma in inside:
        remove_vma_from_mm(mm, vma)
    tlb = tlb_gather_mmu(k, mm)
    unmap_vmas(k, tlb, inside, start, end)
    free_pgtables(
        k,
        tlb,
        inside,
        prev.vm_end if prev is not None else FIRST_USER_ADDRESS,
        nxt.vm_start if nxt is not None else USER_PGTABLES_CEILING,
    )
    tlb_finish_mmu(k, tlb)
    for vma in inside:
        _remove_vma(k, vma)
    k.machine.emit(MUNMAP)
    return 0


def do_madvise(k: Kernel, mm: mm_struct, start: int, length: int, advice: int) -> int:
    """``do_madvise()``: ``MADV_HUGEPAGE``/``MADV_NOHUGEPAGE`` set the VMA flags (splitting at
    the edges), ``MADV_DONTNEED`` zaps the pages (tables are kept).  Returns 0 or ``-EINVAL``."""
    g = k.pgt
    if start & (g.PAGE_SIZE - 1) or length <= 0:
        return -EINVAL
    end = start + _page_align(k, length)
    if advice == MADV_DONTNEED:
        vmas = [v for v in mm.mmap if v.vm_start < end and v.vm_end > start]
        if vmas:
            tlb = tlb_gather_mmu(k, mm)
            unmap_vmas(k, tlb, vmas, start, end)
            tlb_finish_mmu(k, tlb)
        return 0
    if advice not in (MADV_HUGEPAGE, MADV_NOHUGEPAGE):
        return -EINVAL
    inside, _prev, _nxt = _isolate(k, mm, start, end)
    for vma in inside:
        if advice == MADV_HUGEPAGE:
            vma.vm_flags = (vma.vm_flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
        else:
            vma.vm_flags = (vma.vm_flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE
    return 0


def exit_mmap(k: Kernel, mm: mm_struct) -> None:
    """``exit_mmap(mm)``: tear down the whole address space (the pgd stays for ``pgd_free``).

    A ``fullmm`` gather: ``unmap_vmas`` over everything, ``free_pgtables``
    from ``FIRST_USER_ADDRESS`` to ``USER_PGTABLES_CEILING``,
    ``tlb_finish_mmu`` (one ``flush_tlb_mm``, then the pages and tables are
    freed), then ``remove_vma`` of each VMA.
    """
    vmas = list(mm.mmap)
    tlb = tlb_gather_mmu_fullmm(k, mm)
    if vmas:
        unmap_vmas(k, tlb, vmas, 0, task_size(k))
        free_pgtables(k, tlb, vmas, FIRST_USER_ADDRESS, USER_PGTABLES_CEILING)
    tlb_finish_mmu(k, tlb)
    for vma in vmas:
        remove_vma_from_mm(mm, vma)
        _remove_vma(k, vma)
