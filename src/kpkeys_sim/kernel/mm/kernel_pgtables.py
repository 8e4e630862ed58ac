"""The kernel's own page tables: swapper_pg_dir, the kernel image, the fixmap, the vmemmap.

Sources: ``arch/arm64/kernel/vmlinux.lds.S`` (image layout: ``swapper_pg_dir``
at the end of the read-only data, ``init_pg_dir`` after the data),
``arch/arm64/kernel/pi/map_kernel.c`` and ``pi/map_range.c`` (the early,
MMU-off/idmap mapping of the image), ``arch/arm64/mm/mmu.c``
(``early_fixmap_init``, ``set_swapper_pgd``, ``update_mapping_prot``,
``mark_rodata_ro``, ``mark_linear_text_alias_ro``, ``declare_kernel_vmas``,
``free_initmem``, ``vmemmap_populate``), ``mm/sparse-vmemmap.c``
(``vmemmap_populate_hugepages``/``_basepages``, ``vmemmap_*_populate``,
``vmemmap_alloc_block_zero``); spec kpkeys-series.md §3.3 (swapper_pg_dir is
skipped: mark_rodata_ro makes it read-only), §3.4 and §3.8
(``arch_kpkeys_protect_static_pgtables``: the static tables of the image).

The model's vmlinux (:class:`KernelImage`) is 18 MiB at ``KIMAGE_VADDR``,
loaded at the start of DRAM: text 8 MiB, rodata 4 MiB (ending with
``reserved_pg_dir`` and ``swapper_pg_dir``), init text 1 MiB, init data
1 MiB, data 2 MiB, bss 2 MiB holding the static page-table pools
``init_pg_dir`` (the image mapping's tables) and the fixmap's ``bm_pud``,
``bm_pmd`` and ``bm_pte``.

Early mapping.  Before the MMU is on there is no mapping to check a store
against: ``primary_entry``/``early_map_kernel`` write the tables through the
identity map (or with the MMU off).  :func:`early_map_kernel` models that with
physical stores (``PhysicalMemory.write_u64``), refuses to run once
``k.mmu_enabled`` is set, and builds the image mapping exactly as
``map_range()`` does (blocks where aligned; contiguous PTEs for text and data
only), with tables from ``init_pg_dir``.  Linux builds it in ``init_pg_dir``
and then copies the root page into ``swapper_pg_dir``; the model writes the
root directly into ``swapper_pg_dir`` (same final tables).  The idmap itself
(TTBR0 at boot) is not modelled.  From :func:`early_fixmap_init` on every
page-table store goes through the MMU (``kernel/mm/pgtable``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kpkeys_sim.kernel.arch.arm64_pgtable import (
    P4D_TABLE_AF,
    P4D_TYPE_TABLE,
    PAGE_KERNEL,
    PAGE_KERNEL_RO,
    PAGE_KERNEL_ROX,
    PMD_TABLE_AF,
    PMD_TABLE_UXN,
    PMD_TYPE_SECT,
    PMD_TYPE_TABLE,
    PROT_SECT_NORMAL,
    PTE_ADDR_MASK,
    PTE_CONT,
    PTE_TYPE_MASK,
    PTE_TYPE_PAGE,
    PUD_TABLE_AF,
    PUD_TYPE_TABLE,
    U64_MAX,
    PgtableGeometry,
    pgattr_change_is_safe,
    pmd_table,
)
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.linear_map import NO_CONT_MAPPINGS, __create_pgd_mapping
from kpkeys_sim.kernel.mm.memblock import memblock_phys_alloc_range
from kpkeys_sim.kernel.mm.mm_types import VM_MAP, VM_NO_GUARD, mm_struct, vm_struct
from kpkeys_sim.kernel.mm.page_alloc import __free_pages_core
from kpkeys_sim.kernel.mm.pgtable import (
    __p4d_populate,
    __pmd_populate,
    __pud_populate,
    p4d_offset,
    p4d_populate,
    pgd_offset_k,
    pmd_offset,
    pmd_populate_kernel,
    ptep_get_and_clear_array,
    pud_offset,
    pud_populate,
    set_pmd,
    set_ptes_array,
)
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_kernel_range

__all__ = [
    "INIT_DIR_PAGES",
    "KernelImage",
    "arm64_kimage",
    "early_fixmap_init",
    "early_map_kernel",
    "enable_mmu",
    "free_initmem",
    "kernel_image_segments",
    "map_range",
    "mark_linear_text_alias_ro",
    "mark_rodata_ro",
    "sparse_init",
    "update_mapping_prot",
    "vmemmap_alloc_block_zero",
    "vmemmap_populate",
]

_MiB = 1 << 20
#: Pages in the ``init_pg_dir`` pool (Linux sizes it with EARLY_PAGES(); the
#: model's 18 MiB image needs at most 3 tables at any page size).
INIT_DIR_PAGES = 8


@dataclass(frozen=True, slots=True)
class KernelImage:
    """Symbols of the model vmlinux (kernel-image VAs) and its physical load address ``pa``.

    Field names are the linker symbols without their leading ``__``
    (``start_rodata`` is ``__start_rodata``, ``init_begin`` is ``__init_begin``).
    """

    pa: int
    _text: int
    _etext: int
    start_rodata: int
    reserved_pg_dir: int
    swapper_pg_dir: int
    init_begin: int
    inittext_end: int
    initdata_begin: int
    init_end: int
    _data: int
    _edata: int
    init_pg_dir: int
    init_pg_end: int
    bm_pte: int
    bm_pmd: int
    bm_pud: int
    _end: int

    @classmethod
    def layout(cls, g: PgtableGeometry, pa: int) -> KernelImage:
        """The image at ``KIMAGE_VADDR``, loaded at physical ``pa``."""
        ps = g.PAGE_SIZE
        text = g.KIMAGE_VADDR
        rodata = text + 8 * _MiB
        init_begin = rodata + 4 * _MiB
        inittext_end = init_begin + _MiB
        init_end = inittext_end + _MiB
        data = init_end
        edata = data + 2 * _MiB
        pool = edata
        pool_end = pool + INIT_DIR_PAGES * ps
        return cls(
            pa=pa,
            _text=text,
            _etext=rodata,
            start_rodata=rodata,
            reserved_pg_dir=init_begin - 2 * ps,
            swapper_pg_dir=init_begin - ps,
            init_begin=init_begin,
            inittext_end=inittext_end,
            initdata_begin=inittext_end,
            init_end=init_end,
            _data=data,
            _edata=edata,
            init_pg_dir=pool,
            init_pg_end=pool_end,
            bm_pte=pool_end,
            bm_pmd=pool_end + ps,
            bm_pud=pool_end + 2 * ps,
            _end=edata + 2 * _MiB,
        )

    @property
    def size(self) -> int:
        """``_end - _text``."""
        return self._end - self._text

    @property
    def _stext(self) -> int:
        """``_stext`` (= ``_text`` in the model)."""
        return self._text

    @property
    def inittext_begin(self) -> int:
        """``__inittext_begin`` (= ``__init_begin``)."""
        return self.init_begin

    @property
    def initdata_end(self) -> int:
        """``__initdata_end`` (= ``__init_end``)."""
        return self.init_end


def arm64_kimage(k: Kernel) -> KernelImage:
    """``k.kimage`` as the arm64 image layout (the arm64 mm code reads its arm64 symbols)."""
    img = k.kimage
    assert isinstance(img, KernelImage), "not an arm64 kernel image"
    return img


def kernel_image_segments(img: KernelImage) -> list[tuple[str, int, int, int, bool]]:
    """``map_kernel``'s segments: (name, start VA, end VA, early prot, may_use_cont)."""
    return [
        ("text", img._text, img._etext, PAGE_KERNEL_ROX, True),
        ("rodata", img.start_rodata, img.init_begin, PAGE_KERNEL, False),
        ("inittext", img.init_begin, img.inittext_end, PAGE_KERNEL_ROX, False),
        ("initdata", img.initdata_begin, img.init_end, PAGE_KERNEL, False),
        ("data", img._data, img._end, PAGE_KERNEL, True),
    ]


# --- early, MMU-off mapping (pi/map_kernel.c, pi/map_range.c) ------------------------------------


def _early_store(k: Kernel, pa: int, value: int) -> None:
    """A store made with the MMU off / through the idmap: physical, no permission check."""
    if k.mmu_enabled:
        raise KernelBug("early (MMU-off) page-table store after the MMU is on")
    k.machine.mem.write_u64(pa, value)


class _Pool:
    """Sequential page allocator over ``[init_pg_dir, init_pg_end)`` (physical)."""

    def __init__(self, k: Kernel, start_pa: int, end_pa: int) -> None:
        self.k = k
        self.next = start_pa
        self.end = end_pa

    def alloc(self) -> int:
        if self.next >= self.end:
            raise KernelBug("init_pg_dir exhausted (EARLY_PAGES too small)")
        pa = self.next
        self.next += self.k.pgt.PAGE_SIZE
        self.k.static_pgtables.append(pa >> self.k.pgt.PAGE_SHIFT)
        return pa


def map_range(
    k: Kernel,
    pool: _Pool,
    tbl_pa: int,
    start: int,
    end: int,
    pa: int,
    prot: int,
    level: int,
    may_use_cont: bool,
) -> None:
    """``map_range()`` (pi/map_range.c): map ``[start, end)`` at ``pa`` below table ``tbl_pa``.

    Blocks at levels < 3 where ``(start | next | pa)`` is aligned to the level,
    else a table (from the pool) and a recursion.  At level 3 a contiguous run
    starts when ``start`` and ``pa`` are CONT aligned and ``may_use_cont``, and
    stops when the rest of the range does not cover a contiguous block.
    """
    g = k.pgt
    mem = k.machine.mem
    bits = g.PAGE_SHIFT - 3
    cmask = g.CONT_PTE_SIZE - 1 if level == 3 else U64_MAX
    protval = prot & ~PTE_TYPE_MASK
    lshift = (3 - level) * bits
    lmask = (g.PAGE_SIZE << lshift) - 1
    start &= g.PAGE_MASK
    pa &= g.PAGE_MASK
    nent = g.PTRS_PER_PGD if level == g.pgd_level else g.PTRS_PER_PTE
    idx = (start >> (lshift + g.PAGE_SHIFT)) & (nent - 1)
    if protval:
        protval |= PMD_TYPE_SECT if level < 3 else PTE_TYPE_PAGE
    page_end = (end + g.PAGE_SIZE - 1) & g.PAGE_MASK
    while start < end:
        nxt = min((start | lmask) + 1, page_end)
        entry = tbl_pa + 8 * idx
        if level < 3 and (start | nxt | pa) & lmask:
            desc = mem.read_u64(entry)
            if desc == 0:
                desc = pool.alloc() | PMD_TYPE_TABLE | PMD_TABLE_UXN
                _early_store(k, entry, desc)
            map_range(k, pool, desc & PTE_ADDR_MASK, start, nxt, pa, prot, level + 1, may_use_cont)
        else:
            if ((start | pa) & cmask) == 0 and may_use_cont:
                protval |= PTE_CONT
            if (end & ~cmask) <= start:
                protval &= ~PTE_CONT
            _early_store(k, entry, pa | protval)
        pa += nxt - start
        start = nxt
        idx += 1


def early_map_kernel(k: Kernel, img: KernelImage) -> None:
    """``early_map_kernel``/``map_kernel`` (pi): map the image segments into ``swapper_pg_dir``.

    Text and init text ROX, rodata (until ``mark_rodata_ro``), init data and
    data RW; contiguous hints for text and data only.  Also creates ``init_mm``.
    """
    g = k.pgt
    k.kimage = img
    k.swapper_pg_dir = img.swapper_pg_dir
    root = g.pa_symbol(img.swapper_pg_dir)
    pool = _Pool(k, g.pa_symbol(img.init_pg_dir), g.pa_symbol(img.init_pg_end))
    for _name, start, end, prot, cont in kernel_image_segments(img):
        map_range(k, pool, root, start, end, g.pa_symbol(start), prot, g.pgd_level, cont)
    k.init_mm = mm_struct(img.swapper_pg_dir, root, name="init_mm")


def enable_mmu(k: Kernel, cpu_id: int) -> None:
    """``__enable_mmu``/``idmap_cpu_replace_ttbr1``: CPU ``cpu_id``'s TTBR1 = swapper_pg_dir."""
    k.machine.cpus[cpu_id].ttbr1 = k.pgt.pa_symbol(k.swapper_pg_dir)
    k.mmu_enabled = True


# --- the fixmap (mmu.c early_fixmap_init) --------------------------------------------------------


def early_fixmap_init(k: Kernel) -> None:
    """``early_fixmap_init()``: hook ``bm_pud``/``bm_pmd``/``bm_pte`` into ``swapper_pg_dir``.

    Writes go through the kernel-image aliases of the static tables (and
    ``set_swapper_pgd`` for the root), i.e. through the MMU.  If the fixmap
    shares a top-level entry with the image (16K), the image's table is reused.
    """
    g = k.pgt
    img = arm64_kimage(k)
    addr = g.FIXADDR_START
    end = g.FIXADDR_TOP
    m = k.machine
    pgdp = pgd_offset_k(k, addr)
    p4dp = p4d_offset(k, pgdp, addr)
    bm_pud_pa = g.pa_symbol(img.bm_pud)
    if g.mm_pud_folded:
        pudp = p4dp
    else:
        p4d = m.load_u64(k.cpu, p4dp)
        if p4d != 0 and (p4d & PTE_ADDR_MASK) != bm_pud_pa and g.PAGE_SHIFT != 14:
            raise KernelBug("BUG_ON: the fixmap shares a pgd entry with the image on non-16K")
        if p4d == 0:
            __p4d_populate(k, p4dp, bm_pud_pa, P4D_TYPE_TABLE | P4D_TABLE_AF)
            k.fixmap_pgtables.append(bm_pud_pa >> g.PAGE_SHIFT)
        pud_tbl = m.load_u64(k.cpu, p4dp) & PTE_ADDR_MASK
        pudp = g.phys_to_kimg(pud_tbl + 8 * g.pud_index(addr))  # pud_offset_kimg
    if m.load_u64(k.cpu, pudp) == 0:
        bm_pmd_pa = g.pa_symbol(img.bm_pmd)
        __pud_populate(k, pudp, bm_pmd_pa, PUD_TYPE_TABLE | PUD_TABLE_AF)
        k.fixmap_pgtables.append(bm_pmd_pa >> g.PAGE_SHIFT)
    pmd_tbl = m.load_u64(k.cpu, pudp) & PTE_ADDR_MASK
    a = addr
    while True:
        pmdp = g.phys_to_kimg(pmd_tbl + 8 * g.pmd_index(a))  # pmd_offset_kimg
        if m.load_u64(k.cpu, pmdp) == 0:
            bm_pte_pa = g.pa_symbol(img.bm_pte)
            __pmd_populate(k, pmdp, bm_pte_pa, PMD_TYPE_TABLE | PMD_TABLE_AF)
            k.fixmap_pgtables.append(bm_pte_pa >> g.PAGE_SHIFT)
        a = g.pmd_addr_end(a, end)
        if a == end:
            break
    k.bm_pte = img.bm_pte


# --- permission updates of the kernel's own mappings (mmu.c) -------------------------------------


def update_mapping_prot(k: Kernel, phys: int, virt: int, size: int, prot: int) -> None:
    """``update_mapping_prot(phys, virt, size, prot)``: rewrite live kernel leaves, then flush.

    ``__create_pgd_mapping(init_mm.pgd, ..., NULL, NO_CONT_MAPPINGS)``: no table
    may be allocated, only permission bits change (``pgattr_change_is_safe``).
    """
    if virt < k.pgt.PAGE_OFFSET:
        k.printk(f"BUG: not updating mapping for {virt:#x} at {phys:#x} - outside kernel range")
        return
    __create_pgd_mapping(k, k.init_mm.pgd, phys, virt, size, prot, None, NO_CONT_MAPPINGS)
    flush_tlb_kernel_range(k, virt, virt + size)


def mark_linear_text_alias_ro(k: Kernel) -> None:
    """``mark_linear_text_alias_ro()``: the linear alias of ``[_stext, __init_begin)`` read-only.

    This covers ``swapper_pg_dir``'s linear alias: from now on it is written
    only through its image mapping or the fixmap.
    """
    g = k.pgt
    img = arm64_kimage(k)
    update_mapping_prot(
        k,
        g.pa_symbol(img._stext),
        g.va(g.pa_symbol(img._stext)),
        img.init_begin - img._stext,
        PAGE_KERNEL_RO,
    )


def mark_rodata_ro(k: Kernel) -> None:
    """``mark_rodata_ro()``: ``rodata_is_rw = false``; ``[__start_rodata, __init_begin)`` read-only.

    ``swapper_pg_dir`` lives there, so from now on ``set_swapper_pgd`` writes
    it through the ``FIX_PGD`` fixmap slot (spec §3.3: this is why kpkeys
    leaves it out).
    """
    g = k.pgt
    img = arm64_kimage(k)
    k.rodata_is_rw = False
    update_mapping_prot(
        k,
        g.pa_symbol(img.start_rodata),
        img.start_rodata,
        img.init_begin - img.start_rodata,
        PAGE_KERNEL_RO,
    )


def declare_kernel_vmas(k: Kernel) -> list[vm_struct]:
    """``declare_kernel_vmas()``: the image segments as ``vm_struct`` areas (``VM_MAP``)."""
    img = arm64_kimage(k)
    g = k.pgt
    vmas = []
    segs = kernel_image_segments(img)
    for i, (name, start, end, _prot, _cont) in enumerate(segs):
        flags = VM_MAP | (VM_NO_GUARD if i < len(segs) - 1 else 0)
        vmas.append(vm_struct(start, end - start, flags, phys_addr=g.pa_symbol(start), caller=name))
    k.kernel_vmas = vmas
    return vmas


def free_initmem(k: Kernel) -> int:
    """``free_initmem()``: give ``[__init_begin, __init_end)`` back and unmap it from the image.

    The pages go to the buddy allocator (``free_reserved_area``); the image
    mapping's PTEs are cleared (``vunmap_range``: ``ptep_get_and_clear``, then
    a kernel TLB flush) — only where the init section is PTE-mapped, as in the
    model's image at every page size.  Returns the pages freed.
    """
    g = k.pgt
    img = arm64_kimage(k)
    zone = k.zone
    if zone is None:
        raise KernelBug("free_initmem() before mem_init()")
    start, end = img.init_begin, img.init_end
    a = start
    m = k.machine
    while a < end:
        nxt = g.pmd_addr_end(a, end)
        pgdp = pgd_offset_k(k, a)
        pudp = pud_offset(k, p4d_offset(k, pgdp, a), a)
        pmdp = pmd_offset(k, pudp, a)
        pmd = m.load_u64(k.cpu, pmdp)
        if pmd_table(pmd):
            ptep = g.va(pmd & PTE_ADDR_MASK) + 8 * g.pte_index(a)
            ptep_get_and_clear_array(k, ptep, (nxt - a) >> g.PAGE_SHIFT)
        a = nxt
    flush_tlb_kernel_range(k, start, end)
    first = g.pa_symbol(start) >> g.PAGE_SHIFT
    n = (end - start) >> g.PAGE_SHIFT
    for pfn in range(first, first + n):
        __free_pages_core(zone, pfn, 0)
    k.printk(f"Freeing unused kernel memory: {(end - start) >> 10}K")
    return n


# --- vmemmap (mm/sparse-vmemmap.c, arch/arm64/mm/mmu.c) ------------------------------------------


def vmemmap_alloc_block_zero(k: Kernel, size: int) -> int:
    """``vmemmap_alloc_block_zero(size)`` at boot: memblock, zeroed through the linear map.

    Returns the physical address (Linux returns the linear VA).
    """
    mb = k.memblock
    if mb is None:
        raise KernelBug("vmemmap_alloc_block_zero() without memblock")
    pa = memblock_phys_alloc_range(mb, size, size, 0, 0)
    if not pa:
        raise KernelBug(f"vmemmap: failed to allocate {size} bytes")
    g = k.pgt
    for off in range(0, size, g.PAGE_SIZE):
        k.machine.clear_page(k.cpu, g.va(pa + off))
    return pa


def _vmemmap_table(k: Kernel) -> int:
    pa = vmemmap_alloc_block_zero(k, k.pgt.PAGE_SIZE)
    pfn = pa >> k.pgt.PAGE_SHIFT
    k.vmemmap_pgtables.append(pfn)
    return pfn


def _vmemmap_pmdp(k: Kernel, addr: int) -> int:
    """``vmemmap_pgd/p4d/pud_populate`` for ``addr``: the pmd entry pointer."""
    g = k.pgt
    m = k.machine
    pgdp = pgd_offset_k(k, addr)
    p4dp = p4d_offset(k, pgdp, addr)
    if not g.mm_pud_folded and m.load_u64(k.cpu, p4dp) == 0:
        p4d_populate(k, k.init_mm, p4dp, _vmemmap_table(k))
    pudp = pud_offset(k, p4dp, addr)
    if m.load_u64(k.cpu, pudp) == 0:
        pud_populate(k, k.init_mm, pudp, _vmemmap_table(k))
    return pmd_offset(k, pudp, addr)


def vmemmap_populate(k: Kernel, start: int, end: int) -> None:
    """``vmemmap_populate(start, end)`` for one section's ``struct page`` range.

    4K: ``vmemmap_populate_hugepages`` — a PMD block per 2 MiB
    (``pmd_set_huge(pmdp, p, PROT_SECT_NORMAL)``).  16K/64K:
    ``vmemmap_populate_basepages`` — PTEs (``set_pte_at`` of ``PAGE_KERNEL``
    each), one vectorised store per PTE table.  Backing memory comes from
    memblock (the sparse buffer) and is not touched.
    """
    g = k.pgt
    m = k.machine
    mb = k.memblock
    if mb is None:
        raise KernelBug("vmemmap_populate() without memblock")
    if g.PAGE_SHIFT == 12 and end - start >= g.PMD_SIZE:
        a = start
        while a < end:
            pmdp = _vmemmap_pmdp(k, a)
            old = m.load_u64(k.cpu, pmdp)
            if old == 0:
                p = memblock_phys_alloc_range(mb, g.PMD_SIZE, g.PMD_SIZE, 0, 0)
                if not p:
                    raise KernelBug("vmemmap: no memory for a PMD block")
                new = g.pfn_pmd(p >> g.PAGE_SHIFT, PROT_SECT_NORMAL)
                if pgattr_change_is_safe(old, new):
                    set_pmd(k, pmdp, new)
            a = g.pmd_addr_end(a, end)
        return
    npages = (end - start + g.PAGE_SIZE - 1) >> g.PAGE_SHIFT
    backing = memblock_phys_alloc_range(mb, npages << g.PAGE_SHIFT, g.PAGE_SIZE, 0, 0)
    if not backing:
        raise KernelBug("vmemmap: no memory for the section's memmap")
    a = start
    done = 0
    while a < end:
        nxt = g.pmd_addr_end(a, end)
        pmdp = _vmemmap_pmdp(k, a)
        if m.load_u64(k.cpu, pmdp) == 0:
            pmd_populate_kernel(k, pmdp, _vmemmap_table(k))
        pmd = m.load_u64(k.cpu, pmdp)
        ptep = g.va(pmd & PTE_ADDR_MASK) + 8 * g.pte_index(a)
        n = (nxt - a + g.PAGE_SIZE - 1) >> g.PAGE_SHIFT
        pfns = np.arange(n, dtype=np.uint64) + np.uint64((backing >> g.PAGE_SHIFT) + done)
        set_ptes_array(k, ptep, g.pfn_ptes(pfns, PAGE_KERNEL))
        done += n
        a = nxt


def sparse_init(k: Kernel) -> int:
    """``sparse_init()``: populate the vmemmap of every memory section; returns sections done."""
    g = k.pgt
    mem = k.machine.mem
    sec = 1 << g.SECTION_SIZE_BITS
    first = mem.base & ~(sec - 1)
    last = (mem.end + sec - 1) & ~(sec - 1)
    nsec = 0
    for s in range(first, last, sec):
        pfn = s >> g.PAGE_SHIFT
        start = g.vmemmap_page(pfn)
        vmemmap_populate(k, start, start + (g.PAGES_PER_SECTION << 6))
        nsec += 1
    return nsec
