"""Booting the model kernel on x86-64, and x86's ``ArchMm`` (``k.arch_mm``).

Sources: ``arch/x86/kernel/head_64.S``/``head64.c`` (via ``x86_head``),
``arch/x86/kernel/setup.c`` (``setup_arch``: ``e820__memory_setup``,
``e820__memblock_setup``, the first-1-MiB and kernel-image reservations,
``cleanup_highmap``, ``init_mem_mapping``, ``x86_init.paging.pagetable_init``
→ ``paging_init``), ``arch/x86/mm/init_64.c`` (``paging_init`` → ``sparse_init``),
``arch/x86/kernel/smpboot.c`` (``native_smp_prepare_boot_cpu``,
``native_smp_cpus_done``), ``arch/x86/kernel/cpu/common.c`` (``setup_pks``),
``init/main.c``; spec kpkeys-series.md §3.4/§3.7/§3.8 for where kpkeys plugs
in (the same boot points as the arm64 model).

:func:`boot_x86` is the x86 counterpart of ``kernel.boot.boot``:

1. ``startup_64`` (static tables, CR3 = ``early_top_pgt``),
   ``x86_64_start_kernel`` (``init_top_pgt[511]``), ``sched_init``;
2. ``setup_arch``: e820 → memblock, reserve the first 1 MiB and the image,
   ``install_kpkeys_hardened_pgtables`` (the guard, the PPA as
   ``k.early_pgtable_alloc`` …), ``init_mem_mapping`` (the direct map, then CR3
   = ``init_top_pgt``), ``paging_init`` → ``sparse_init``;
3. ``smp_prepare_boot_cpu``: PKS on CPU0 (``cpu_enable_pkeys``), then
   ``k.smp_prepare_boot_cpu_hooks``;
4. the generic steps of ``kernel.boot``: ``mm_core_init``, ``init_IRQ``,
   ``install_kpkeys_hardened_cred``;
5. ``smp_init``: every AP starts on ``init_top_pgt`` and enables PKS; then
   ``k.smp_cpus_done_hooks`` (kpkeys v6 ``init_late``) [INF: x86 has no
   BBML2 check to wait for, any point after ``mem_init`` would do; the model
   keeps arm64's hook point];
6. late initcalls, the KUnit hook, x86 ``free_initmem`` and ``mark_rodata_ro``.

``arch_kpkeys_protect_static_pgtables`` on x86 [INF]: the image's permanent
tables ``init_top_pgt``, ``level3_kernel_pgt`` and ``level2_kernel_pgt`` get
``KPKEYS_PKEY_PGTABLES`` with ``set_memory_pkey`` on their direct-map alias
(what walks write through); CPA's alias processing gives the same key to
their high-mapping alias (what ``pgd_offset_k`` writes ``init_top_pgt``
through).  ``init_top_pgt`` is protected, unlike arm64's ``swapper_pg_dir``:
x86 keeps it in writable ``.data`` (``mark_rodata_ro`` does not cover it), so
the series' reason for skipping the root does not hold.  The fixmap tables
(``level2_fixmap_pgt``, ``level1_fixmap_pgt``) stay unprotected as the series
leaves the fixmap (spec §3.8).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.arch import cpu_enable_pkeys, x86_tlb
from kpkeys_sim.kernel.arch.x86_head import (
    X86KernelImage,
    free_initmem,
    mark_rodata_ro,
    secondary_startup_64,
    startup_64,
    x86_64_start_kernel,
)
from kpkeys_sim.kernel.arch.x86_init import (
    E820_RAM,
    ISA_END_ADDRESS,
    direct_map_leaves,
    e820_table,
    force_pte_mapping,
    init_mem_mapping,
    sparse_init,
)
from kpkeys_sim.kernel.arch.x86_pgtable import X86PgtableGeometry
from kpkeys_sim.kernel.arch.x86_set_memory import (
    direct_map_split_count,
    set_direct_map_default_noflush,
    set_direct_map_invalid_noflush,
    set_direct_map_valid_noflush,
    set_memory_nx,
    set_memory_pkey,
    set_memory_ro,
    set_memory_rw,
    set_memory_valid,
    set_memory_x,
    split_kernel_leaf_mapping,
)
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import KPKEYS_PKEY_PGTABLES
from kpkeys_sim.kernel.kpkeys.warn import WARN_ON
from kpkeys_sim.kernel.mm.memblock import Memblock, memblock_add, memblock_reserve
from kpkeys_sim.machine.events import Instrument
from kpkeys_sim.machine.machine import Machine

__all__ = ["X86Mm", "boot_x86", "setup_arch", "smp_init", "smp_prepare_boot_cpu"]


class X86Mm:
    """x86's :class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchMm`, holding the booted image."""

    __slots__ = ("image",)

    def __init__(self, image: X86KernelImage) -> None:
        self.image = image

    set_memory_ro = staticmethod(set_memory_ro)
    set_memory_rw = staticmethod(set_memory_rw)
    set_memory_nx = staticmethod(set_memory_nx)
    set_memory_x = staticmethod(set_memory_x)
    set_memory_valid = staticmethod(set_memory_valid)
    set_memory_pkey = staticmethod(set_memory_pkey)
    set_direct_map_invalid_noflush = staticmethod(set_direct_map_invalid_noflush)
    set_direct_map_default_noflush = staticmethod(set_direct_map_default_noflush)
    set_direct_map_valid_noflush = staticmethod(set_direct_map_valid_noflush)
    force_pte_mapping = staticmethod(force_pte_mapping)
    split_kernel_leaf_mapping = staticmethod(split_kernel_leaf_mapping)
    linear_map_split_count = staticmethod(direct_map_split_count)
    linear_map_leaves = staticmethod(direct_map_leaves)
    flush_tlb_all = staticmethod(x86_tlb.flush_tlb_all)
    local_flush_tlb_all = staticmethod(x86_tlb.local_flush_tlb_all)
    flush_tlb_kernel_range = staticmethod(x86_tlb.flush_tlb_kernel_range)
    flush_tlb_kernel_pgtable = staticmethod(getattr(x86_tlb, "__flush_tlb_kernel_pgtable"))
    flush_tlb_mm = staticmethod(x86_tlb.flush_tlb_mm)
    flush_tlb_range = staticmethod(x86_tlb.flush_tlb_range)
    flush_tlb_page = staticmethod(x86_tlb.flush_tlb_page)

    @staticmethod
    def in_swapper_pgdir(k: Kernel, addr: int) -> bool:
        """x86 writes ``init_top_pgt`` like any table: never through ``set_swapper_pgd``."""
        return False

    @staticmethod
    def set_swapper_pgd(k: Kernel, pgdp: int, pgd: int) -> None:
        """arm64 only."""
        raise KernelBug("set_swapper_pgd() on x86")

    def arch_kpkeys_protect_static_pgtables(self, k: Kernel) -> None:
        """x86 ``arch_kpkeys_protect_static_pgtables()`` (module docstring), ``WARN_ON`` each."""
        g = k.pgt
        for va in self.image.static_pgtables:
            ret = set_memory_pkey(k, g.va(g.pa_symbol(va)), 1, KPKEYS_PKEY_PGTABLES)
            WARN_ON(k, ret, f"arch_kpkeys_protect_static_pgtables: {va:#x}: {ret}")


def setup_arch(k: Kernel) -> None:
    """x86 ``setup_arch()``: e820/memblock, reservations, kpkeys wiring, direct map, vmemmap."""
    from kpkeys_sim.kernel.kpkeys.hardened_pgtables import install_kpkeys_hardened_pgtables

    g = k.pgt
    mem = k.machine.mem
    img = _image(k)
    e820 = e820_table(mem.end)
    for start, end, kind in e820:
        what = "usable" if kind == E820_RAM else "reserved"
        k.printk(f"BIOS-e820: [mem {start:#018x}-{end - 1:#018x}] {what}")
    mb = Memblock(page_shift=g.PAGE_SHIFT, instruments=k.machine.instruments)
    k.memblock = mb
    for start, end, kind in e820:  # e820__memblock_setup(), page-trimmed
        if kind == E820_RAM:
            memblock_add(mb, start, ((end - start) >> g.PAGE_SHIFT) << g.PAGE_SHIFT)
    memblock_reserve(mb, 0, ISA_END_ADDRESS)  # "always reserve the first 1M of RAM"
    memblock_reserve(mb, img.pa, img.size)
    k.printk(
        f"setup_arch: kernel image {img.pa:#x}-{img.pa + img.size - 1:#x} and the first 1M reserved"
    )
    install_kpkeys_hardened_pgtables(k)
    init_mem_mapping(k)
    leaves = direct_map_leaves(k)
    mode = "4K only" if force_pte_mapping(k) else "large pages"
    k.printk(
        f"init_memory_mapping: direct map ({mode}): {leaves['pud']} x 1G, {leaves['pmd']} x 2M, "
        f"{leaves['pte']} x 4K, {leaves['pgtable_pages']} table pages; CR3 = init_top_pgt"
    )
    nsec = sparse_init(k)
    k.printk(f"sparse_init: vmemmap for {nsec} sections, {len(k.vmemmap_pgtables)} table pages")


def smp_prepare_boot_cpu(k: Kernel) -> None:
    """``native_smp_prepare_boot_cpu``: PKS on CPU0 (``setup_pks``), then the kpkeys hooks."""
    if k.machine.has_pkeys:
        cpu_enable_pkeys(k, k.machine.cpus[0])
    k.printk(
        "smp_prepare_boot_cpu: " + ("PKS enabled on CPU0" if k.machine.has_pkeys else "no PKS")
    )
    for hook in list(k.smp_prepare_boot_cpu_hooks):
        hook(k)


def smp_init(k: Kernel) -> None:
    """``smp_init()`` + ``native_smp_cpus_done()``: the APs on ``init_top_pgt`` with PKS, hooks."""
    for cpu in k.machine.cpus[1:]:
        secondary_startup_64(k, cpu.cpu_id)
        if k.machine.has_pkeys:
            with k.on_cpu(cpu.cpu_id):
                cpu_enable_pkeys(k, cpu)
    k.printk(f"smp: Brought up 1 node, {len(k.machine.cpus)} CPUs")
    for hook in list(k.smp_cpus_done_hooks):
        hook(k)


def _image(k: Kernel) -> X86KernelImage:
    mm = k.arch_mm
    if not isinstance(mm, X86Mm):
        raise KernelBug("not an x86 kernel")
    return mm.image


def boot_x86(
    config: KernelConfig,
    instruments: Iterable[Instrument] = (),
    kunit_run_all_tests: Callable[[Kernel], object] | None = None,
) -> Kernel:
    """Build an x86 machine for ``config`` and boot the model kernel on it; returns the kernel.

    ``kunit_run_all_tests(k)`` runs after the initcalls, before
    ``free_initmem()`` and ``mark_rodata_ro()``, as in ``kernel.boot.boot``.
    """
    from kpkeys_sim.kernel.boot import ArchBootSteps, check_ram_size, start_kernel

    if config.arch != "x86":
        raise ToolError(f"bad value {config.arch!r} for 'arch': boot_x86 boots x86 only")
    if config.page_size != 4096:
        raise ToolError(f"bad value {config.page_size} for 'page_size': x86-64 has 4096-byte pages")
    check_ram_size(config)
    machine = Machine(
        arch="x86",
        page_size=4096,
        ram_size=config.ram_size,
        nr_cpus=config.nr_cpus,
        phys_base=0,
        has_pkeys=config.cpu_has_pkeys,
        instruments=instruments,
    )
    k = Kernel(machine, config)
    g = X86PgtableGeometry.for_page_size(4096)
    k.pgt = g
    img = X86KernelImage.layout(g.KIMAGE_VADDR, g.pa_symbol(g.KIMAGE_VADDR))
    k.arch_mm = X86Mm(img)
    k.kimage = img
    k.printk(
        f"Linux version kpkeys-sim x86_64 [4-level paging, {config.ram_size >> 20} MiB, "
        f"{config.nr_cpus} CPUs, {'PKS' if config.cpu_has_pkeys else 'no PKS'}]"
    )
    startup_64(k, img)
    x86_64_start_kernel(k, img)
    k.printk(
        f"startup_64: image {img._text:#x}-{img._end - 1:#x} at {img.pa:#x}, "
        f"{len(k.static_pgtables) + len(k.fixmap_pgtables)} static tables, CR3 = early_top_pgt"
    )
    start_kernel(
        k,
        ArchBootSteps(
            setup_arch=setup_arch,
            smp_prepare_boot_cpu=smp_prepare_boot_cpu,
            smp_init=smp_init,
            free_initmem=lambda kk: free_initmem(kk, img),
            mark_rodata_ro=lambda kk: mark_rodata_ro(kk, img),
        ),
        kunit_run_all_tests,
    )
    return k
