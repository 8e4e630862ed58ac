"""x86-64 early boot: the static page tables of the image, the kernel image, CR3 loads.

Sources: ``arch/x86/kernel/head_64.S`` (``startup_64``, ``secondary_startup_64``,
the static tables ``early_top_pgt``, ``early_dynamic_pgts``, ``init_top_pgt``,
``level3_kernel_pgt``, ``level2_kernel_pgt``, ``level2_fixmap_pgt``,
``level1_fixmap_pgt``), ``arch/x86/kernel/head64.c`` (``__startup_64``,
``early_make_pgtable``, ``x86_64_start_kernel``), ``arch/x86/kernel/vmlinux.lds.S``
(the section order), ``arch/x86/mm/init_64.c`` (``cleanup_highmap``,
``mark_rodata_ro``), ``arch/x86/mm/init.c`` (``free_initmem``,
``free_kernel_image_pages``); spec kpkeys-series.md §3.4/§3.8
(``arch_kpkeys_protect_static_pgtables``) and §9.

The model's vmlinux (:class:`X86KernelImage`) is 18 MiB at ``__START_KERNEL``
(``0xffffffff81000000``), loaded at ``LOAD_PHYSICAL_ADDR`` (16 MiB), in the
x86-64 section order: text 8 MiB, rodata 4 MiB (``__end_rodata_hpage_align``
2 MiB aligned, as ``X86_ALIGN_RODATA_END`` makes it), data 2 MiB (starting with
the static page tables ``init_top_pgt``, ``level3_kernel_pgt``,
``level2_kernel_pgt``, ``level2_fixmap_pgt`` and the two pages of
``level1_fixmap_pgt``, ``FIXMAP_PMD_NUM`` = 2), init 2 MiB (its data half holds
``early_top_pgt`` and ``early_dynamic_pgts``, ``__INITDATA``), bss+brk 2 MiB.
Every boundary is 2 MiB aligned, so the image's 2 MiB mappings never need a
split for the section permissions.

Early mapping.  ``startup_64``/``__startup_64`` run on the identity map and
write the static tables physically; :func:`startup_64` models them with
physical stores and refuses to run once the MMU is on (as arm64's
``early_map_kernel``).  ``level2_kernel_pgt`` is written in its state after
``cleanup_highmap()``: 2 MiB ``__PAGE_KERNEL_LARGE_EXEC`` leaves for
``[_text, roundup(_brk_end, PMD_SIZE))`` only (Linux first maps the whole
``KERNEL_IMAGE_SIZE`` and zaps the rest in ``setup_arch``).

``early_make_pgtable``.  Until ``init_mem_mapping()`` loads ``init_top_pgt``
into CR3, x86 runs on ``early_top_pgt``, where any ``__va()`` access that
faults is mapped on demand by the early #PF handler (2 MiB leaves built from
``early_dynamic_pgts``; the pool is reset when exhausted).  The model maps all
of RAM in ``early_top_pgt`` up front, with 1 GiB leaves in one
``early_dynamic_pgts`` page: every ``__va()`` access made before the CR3 switch
succeeds, RW, as with the handler.  The demand faults, their 2 MiB
granularity and the pool resets are not modelled.  ``early_top_pgt`` and its
pool are init data: they are abandoned at the CR3 switch and freed with
``free_initmem``.

``mark_rodata_ro`` is x86's: ``set_memory_ro`` of ``[_text,
__end_rodata_hpage_align)`` on the high mapping (CPA processes the direct-map
alias too, ``cpa_process_alias``), then ``set_memory_nx`` of ``[_etext,
roundup(_brk_end, PMD_SIZE))``.  The direct map is NX already.
``free_initmem`` gives the init section to the page allocator.  Linux removes
the freed pages' high mapping (``set_memory_np_noalias``) only with
``X86_FEATURE_PTI``, which the model does not enable, so without kpkeys the
alias stays; with ``kpkeys_hardened_pgtables`` the port removes it first
(:func:`free_initmem`, the port's rule).  ``init_top_pgt`` stays in writable ``.data``:
x86 has no counterpart of arm64's read-only ``swapper_pg_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpkeys_sim.kernel.arch.x86_pgtable import (
    _KERNPG_TABLE,
    _PAGE_GLOBAL,
    _PAGE_TABLE,
    PAGE_KERNEL_LARGE,
    PAGE_KERNEL_LARGE_EXEC,
)
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.mm_types import mm_struct
from kpkeys_sim.kernel.mm.page_alloc import __free_pages_core
from kpkeys_sim.kernel.mm.pgtable import pmd_clear, set_pgd
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_all, flush_tlb_kernel_range

__all__ = [
    "FIXMAP_PMD_NUM",
    "L3_START_KERNEL",
    "X86KernelImage",
    "free_initmem",
    "load_cr3",
    "mark_rodata_ro",
    "secondary_startup_64",
    "startup_64",
    "x86_64_start_kernel",
]

_MiB = 1 << 20
_PAGE = 4096
#: ``FIXMAP_PMD_NUM`` (fixmap.h): PTE pages of ``level1_fixmap_pgt``.
FIXMAP_PMD_NUM = 2
#: ``L3_START_KERNEL``: ``pud_index(__START_KERNEL_map)`` = 510.
L3_START_KERNEL = 510
#: ``level2_fixmap_pgt`` slots of ``level1_fixmap_pgt``: ``512 - 4 - FIXMAP_PMD_NUM`` on.
_FIXMAP_PMD_FIRST = 512 - 4 - FIXMAP_PMD_NUM


@dataclass(frozen=True, slots=True)
class X86KernelImage:
    """Symbols of the model's x86-64 vmlinux (kernel-image VAs) and its load address ``pa``.

    Field names are the linker symbols without their leading ``__``.
    """

    pa: int
    _text: int
    _etext: int
    start_rodata: int
    end_rodata: int
    end_rodata_hpage_align: int
    _sdata: int
    init_top_pgt: int
    level3_kernel_pgt: int
    level2_kernel_pgt: int
    level2_fixmap_pgt: int
    level1_fixmap_pgt: int
    _edata: int
    init_begin: int
    early_top_pgt: int
    early_dynamic_pgts: int
    init_end: int
    bss_start: int
    _brk_end: int
    _end: int

    @classmethod
    def layout(cls, text_va: int, pa: int) -> X86KernelImage:
        """The image with ``_text`` at ``text_va`` (``__START_KERNEL``), loaded at ``pa``."""
        rodata = text_va + 8 * _MiB
        data = rodata + 4 * _MiB
        init = data + 2 * _MiB
        bss = init + 2 * _MiB
        end = bss + 2 * _MiB
        return cls(
            pa=pa,
            _text=text_va,
            _etext=rodata,
            start_rodata=rodata,
            end_rodata=data,
            end_rodata_hpage_align=data,
            _sdata=data,
            init_top_pgt=data,
            level3_kernel_pgt=data + _PAGE,
            level2_kernel_pgt=data + 2 * _PAGE,
            level2_fixmap_pgt=data + 3 * _PAGE,
            level1_fixmap_pgt=data + 4 * _PAGE,
            _edata=init,
            init_begin=init,
            early_top_pgt=init + _MiB,
            early_dynamic_pgts=init + _MiB + _PAGE,
            init_end=bss,
            bss_start=bss,
            _brk_end=end,
            _end=end,
        )

    @property
    def _data(self) -> int:
        """``_sdata`` under the name generic model code (the KUnit suite) uses."""
        return self._sdata

    @property
    def size(self) -> int:
        """``_end - _text``."""
        return self._end - self._text

    @property
    def static_pgtables(self) -> tuple[int, ...]:
        """The image's permanent page tables (VAs): the kernel root and the image's tables."""
        return (self.init_top_pgt, self.level3_kernel_pgt, self.level2_kernel_pgt)

    @property
    def fixmap_pgtables(self) -> tuple[int, ...]:
        """``level2_fixmap_pgt`` and the ``FIXMAP_PMD_NUM`` pages of ``level1_fixmap_pgt``."""
        return (
            self.level2_fixmap_pgt,
            *(self.level1_fixmap_pgt + i * _PAGE for i in range(FIXMAP_PMD_NUM)),
        )


def _early_store(k: Kernel, pa: int, value: int) -> None:
    """A store made on the identity map before ``startup_64`` enables paging: physical."""
    if k.mmu_enabled:
        raise KernelBug("early (identity-mapped) page-table store after paging is on")
    k.machine.mem.write_u64(pa, value)


def startup_64(k: Kernel, img: X86KernelImage) -> None:
    """``startup_64``/``__startup_64``: the image's static tables, then paging on CPU0.

    ``level3_kernel_pgt[510]`` → ``level2_kernel_pgt`` (the image in 2 MiB
    ``__PAGE_KERNEL_LARGE_EXEC`` leaves, after ``cleanup_highmap``), ``[511]`` →
    ``level2_fixmap_pgt`` (``_PAGE_TABLE``: the vsyscall page is user
    accessible), whose slots 506–507 point to ``level1_fixmap_pgt``.
    ``early_top_pgt[511]`` → ``level3_kernel_pgt``; the early direct map
    (module docstring).  CPU0's CR3 (the machine's ``ttbr1``) = ``early_top_pgt``.
    Also creates ``init_mm`` (pgd ``init_top_pgt``).
    """
    g = k.pgt
    mem = k.machine.mem
    ps = g.PAGE_SIZE
    pa = g.pa_symbol
    for va in (img.init_top_pgt, img.early_top_pgt):
        if mem.read_u64(pa(va)) != 0:
            raise KernelBug("startup_64: static page tables not zero")
    l3 = pa(img.level3_kernel_pgt)
    _early_store(k, l3 + 8 * L3_START_KERNEL, pa(img.level2_kernel_pgt) | _KERNPG_TABLE)
    _early_store(k, l3 + 8 * 511, pa(img.level2_fixmap_pgt) | _PAGE_TABLE)
    l2 = pa(img.level2_kernel_pgt)
    end = (img._brk_end + g.PMD_SIZE - 1) & g.PMD_MASK
    for va in range(img._text & g.PMD_MASK, end, g.PMD_SIZE):
        _early_store(k, l2 + 8 * g.pmd_index(va), pa(va) | PAGE_KERNEL_LARGE_EXEC)
    fix = pa(img.level2_fixmap_pgt)
    for i in range(FIXMAP_PMD_NUM):
        _early_store(
            k, fix + 8 * (_FIXMAP_PMD_FIRST + i), pa(img.level1_fixmap_pgt + i * ps) | _PAGE_TABLE
        )
    # early_top_pgt: the image entry, then the early direct map (early_make_pgtable).
    top = pa(img.early_top_pgt)
    _early_store(k, top + 8 * 511, l3 | _KERNPG_TABLE)
    pud = pa(img.early_dynamic_pgts)
    _early_store(k, top + 8 * g.pgd_index(g.PAGE_OFFSET), pud | _KERNPG_TABLE)
    early_pmd_flags = PAGE_KERNEL_LARGE & ~_PAGE_GLOBAL
    ram_end = k.machine.mem.end
    for gb in range(0, ram_end, g.PUD_SIZE):
        _early_store(k, pud + 8 * g.pud_index(g.va(gb)), gb | early_pmd_flags)
    k.swapper_pg_dir = img.init_top_pgt
    k.static_pgtables = [pa(v) >> g.PAGE_SHIFT for v in img.static_pgtables]
    k.fixmap_pgtables = [pa(v) >> g.PAGE_SHIFT for v in img.fixmap_pgtables]
    k.bm_pte = img.level1_fixmap_pgt + ps * (g.pmd_index(g.FIXADDR_TOP) - _FIXMAP_PMD_FIRST)
    k.init_mm = mm_struct(img.init_top_pgt, pa(img.init_top_pgt), name="init_mm")
    k.machine.cpus[0].ttbr1 = top
    k.mmu_enabled = True


def x86_64_start_kernel(k: Kernel, img: X86KernelImage) -> None:
    """``x86_64_start_kernel``: ``init_top_pgt[511] = early_top_pgt[511]`` (through the MMU)."""
    m = k.machine
    entry = m.load_u64(k.cpu, img.early_top_pgt + 8 * 511)
    set_pgd(k, img.init_top_pgt + 8 * 511, entry)


def load_cr3(k: Kernel, cpu_id: int, pgd: int) -> None:
    """``load_cr3(pgd)`` on CPU ``cpu_id`` then ``__flush_tlb_all()``: the kernel root is ``pgd``.

    (The machine keeps the kernel half at ``ttbr1``; on x86 both halves hang off
    CR3.)
    """
    k.machine.cpus[cpu_id].ttbr1 = k.pgt.pa_symbol(pgd)
    flush_tlb_all(k)


def secondary_startup_64(k: Kernel, cpu_id: int) -> None:
    """``secondary_startup_64``: an AP starts on ``init_top_pgt``."""
    k.machine.cpus[cpu_id].ttbr1 = k.pgt.pa_symbol(k.swapper_pg_dir)


def mark_rodata_ro(k: Kernel, img: X86KernelImage) -> None:
    """x86 ``mark_rodata_ro()`` (init_64.c): text+rodata read-only, rodata..brk no-exec.

    ``set_memory_ro(_text, __end_rodata_hpage_align)`` (the direct-map alias
    follows through ``cpa_process_alias``), ``kernel_set_to_readonly = 1``,
    ``set_memory_nx(_etext, roundup(_brk_end, PMD_SIZE))``.  No gaps to free:
    the model's sections are contiguous.
    """
    from kpkeys_sim.kernel.arch.x86_set_memory import set_memory_nx, set_memory_ro

    g = k.pgt
    start, end = img._text, img.end_rodata_hpage_align
    k.printk(f"Write protecting the kernel read-only data: {(end - start) >> 10}k")
    ret = set_memory_ro(k, start, (end - start) >> g.PAGE_SHIFT)
    if ret:
        raise KernelBug(f"mark_rodata_ro: set_memory_ro returned {ret}")
    k.rodata_is_rw = False
    all_end = (img._brk_end + g.PMD_SIZE - 1) & g.PMD_MASK
    ret = set_memory_nx(k, img._etext, (all_end - img._etext) >> g.PAGE_SHIFT)
    if ret:
        raise KernelBug(f"mark_rodata_ro: set_memory_nx returned {ret}")


def _drop_highmap_alias(k: Kernel, start: int, end: int) -> None:
    """Remove the high-mapping alias of the image range ``[start, end)`` (the kpkeys port).

    Whole 2 MiB leaves are cleared (``pmd_clear``, as ``cleanup_highmap`` drops
    the leaves outside the image); a partial leaf is made not-present with
    ``set_memory_np_noalias`` (a split now, while the range is not yet in the
    buddy allocator).  Then the TLB flush.
    """
    from kpkeys_sim.kernel.arch.x86_set_memory import (
        PG_LEVEL_2M,
        lookup_address,
        set_memory_np_noalias,
    )

    g = k.pgt
    addr = start
    while addr < end:
        nxt = min(end, (addr + g.PMD_SIZE) & g.PMD_MASK)
        pmdp, level = lookup_address(k, addr)
        whole = addr & ~g.PMD_MASK == 0 and nxt - addr == g.PMD_SIZE
        if pmdp is not None and level == PG_LEVEL_2M and whole:
            pmd_clear(k, pmdp)
        else:
            ret = set_memory_np_noalias(k, addr, (nxt - addr) >> g.PAGE_SHIFT)
            if ret:
                raise KernelBug(f"free_initmem: set_memory_np_noalias returned {ret}")
        addr = nxt
    flush_tlb_kernel_range(k, start, end)


def free_initmem(k: Kernel, img: X86KernelImage) -> int:
    """``free_initmem()`` → ``free_kernel_image_pages("unused kernel image (initmem)")``.

    ``free_reserved_area`` of ``[__init_begin, __init_end)``.  Linux removes
    the freed range's high-mapping alias (``set_memory_np_noalias``) only with
    PTI, which the model's target (a PKS core, not Meltdown-affected) does not
    enable.  With kpkeys_hardened_pgtables the model's x86 port removes it
    always, before the pages reach the buddy allocator
    (:func:`_drop_highmap_alias`) [INF, the port's rule]: a freed image page
    can become a page table, and its high alias — a 2 MiB RW leaf — would
    then be a writable side door; giving it the page-table pkey instead (CPA
    alias processing) needs a split of that leaf whose new table, from the
    page-table allocator, may itself be a freed image page in the same leaf: a
    split inside a split (the recursion of spec §4.12).  arm64 never has the
    problem: its ``free_initmem`` unmaps the init range from the image
    mapping.  Returns the pages freed.
    """
    zone = k.zone
    if zone is None:
        raise KernelBug("free_initmem() before mem_init()")
    g = k.pgt
    first = g.pa_symbol(img.init_begin) >> g.PAGE_SHIFT
    n = (img.init_end - img.init_begin) >> g.PAGE_SHIFT
    if k.config.kpkeys_hardened_pgtables:
        _drop_highmap_alias(k, img.init_begin, img.init_end)
    for pfn in range(first, first + n):
        __free_pages_core(zone, pfn, 0)
    k.printk(f"Freeing unused kernel image (initmem) memory: {(n << g.PAGE_SHIFT) >> 10}K")
    return n
