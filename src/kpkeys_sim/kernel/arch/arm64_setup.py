"""Booting the model kernel on arm64, in the kernel's order.

:func:`boot_arm64` (``kernel.boot.boot`` for ``arch = "arm64"``) builds the
machine and runs, as arm64 Linux does
(``arch/arm64/kernel/head.S``, ``init/main.c`` ``start_kernel``/``kernel_init``,
``arch/arm64/kernel/setup.c`` ``setup_arch``, ``arch/arm64/mm/init.c``,
``arch/arm64/kernel/smp.c``; spec kpkeys-series.md §3.7 for where kpkeys plugs in):

1. ``primary_entry``: the kernel image is mapped into ``swapper_pg_dir`` with
   the MMU off / through the idmap (``early_map_kernel``), then the MMU is
   enabled on the boot CPU.  ``init_mm`` and ``init_task`` are static in Linux:
   the model creates them here (``sched_init`` creates the idle tasks, i.e.
   ``init_task`` for CPU 0, and installs the lazy-MMU hooks).
2. ``setup_arch``: ``early_fixmap_init``; ``arm64_memblock_init`` (add DRAM,
   reserve the image); the kpkeys wiring (see below); ``paging_init``
   (``map_mem``, ``declare_kernel_vmas``); ``bootmem_init`` → ``sparse_init`` (the vmemmap).
3. ``smp_prepare_boot_cpu``: boot-CPU features — ``cpu_enable_poe`` when the
   CPU has FEAT_S1POE — then ``k.smp_prepare_boot_cpu_hooks`` (kpkeys v5
   ``kpkeys_hardened_pgtables_enable``).
4. ``mm_core_init``: ``mem_init`` (``memblock_free_all`` hands free memory to
   the buddy allocator, then ``k.mem_init_hooks``: kpkeys v6/v7
   ``kpkeys_hardened_pgtables_init``), ``kmem_cache_init``,
   ``pgtable_cache_init``; then ``init_IRQ`` (the per-CPU vmalloc'ed IRQ stacks) and
   ``cred_init`` (``kernel/cred.py``; only with ``config.kpkeys_cred_levels``).
5. ``smp_init``: every secondary CPU loads ``swapper_pg_dir`` and enables POE;
   ``smp_cpus_done``: ``mark_linear_text_alias_ro``, then
   ``k.smp_cpus_done_hooks`` (kpkeys v6 ``kpkeys_hardened_pgtables_init_late``).
6. ``do_initcalls``: ``k.late_initcalls`` (the PBA shrinker); then the
   built-in KUnit tests when ``boot(..., kunit_run_all_tests=...)`` asks.
7. ``free_initmem``, ``mark_rodata_ro``.

kpkeys entry point.  Just before ``paging_init`` boot calls
``install_kpkeys_hardened_pgtables(k)`` (``kernel/kpkeys/hardened_pgtables``):
the compile-time wiring of the configured series (the guard, the PPA as
``k.early_pgtable_alloc``, the split, allocator and boot hooks); with
``config.kpkeys_hardened_pgtables`` false it installs the NOOP guard only.

Each step appends a line to the boot log (``k.printk``).  The page allocator
zeroes pages and the slab zeroes objects with checked stores through the
linear map on the current CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.arch.arm64_mm import ARM64_MM
from kpkeys_sim.kernel.arch.arm64_pgtable import PgtableGeometry
from kpkeys_sim.kernel.boot import ArchBootSteps, check_ram_size, start_kernel
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.hardened_pgtables import install_kpkeys_hardened_pgtables
from kpkeys_sim.kernel.mm.kernel_pgtables import (
    KernelImage,
    arm64_kimage,
    declare_kernel_vmas,
    early_fixmap_init,
    early_map_kernel,
    enable_mmu,
    free_initmem,
    mark_linear_text_alias_ro,
    mark_rodata_ro,
    sparse_init,
)
from kpkeys_sim.kernel.mm.linear_map import (
    linear_map_leaves,
    map_mem,
    memblock_early_pgtable_alloc,
)
from kpkeys_sim.kernel.mm.memblock import Memblock, memblock_add, memblock_reserve
from kpkeys_sim.machine.events import Instrument
from kpkeys_sim.machine.machine import Machine

__all__ = [
    "ARM64_BOOT_STEPS",
    "boot_arm64",
    "paging_init",
    "setup_arch",
    "smp_init",
    "smp_prepare_boot_cpu",
]


def paging_init(k: Kernel) -> None:
    """``paging_init()``: ``map_mem(swapper_pg_dir)``, then ``declare_kernel_vmas()``."""
    g = k.pgt
    img = arm64_kimage(k)
    map_mem(k, k.swapper_pg_dir, g.pa_symbol(img._text), g.pa_symbol(img.init_begin))
    declare_kernel_vmas(k)
    leaves = linear_map_leaves(k)
    mode = "PTE-only" if k.arch_mm.force_pte_mapping(k) else "block"
    k.printk(
        f"paging_init: linear map ({mode}): {leaves['pud']} PUD blocks, {leaves['contpmd']} "
        f"contPMD + {leaves['pmd']} PMD blocks, {leaves['contpte']} contPTE + {leaves['pte']} "
        f"PTE entries, {leaves['pgtable_pages']} table pages"
    )


def setup_arch(k: Kernel) -> None:
    """``setup_arch()``: fixmap, memblock, kpkeys wiring, ``paging_init``, vmemmap."""
    g = k.pgt
    img = arm64_kimage(k)
    mem = k.machine.mem
    early_fixmap_init(k)
    k.printk(f"early_fixmap_init: fixmap at {g.FIXADDR_START:#x}-{g.FIXADDR_TOP:#x}")
    mb = Memblock(page_shift=g.PAGE_SHIFT, instruments=k.machine.instruments)
    k.memblock = mb
    memblock_add(mb, mem.base, mem.end - mem.base)
    memblock_reserve(mb, img.pa, img.size)
    k.early_pgtable_alloc = memblock_early_pgtable_alloc
    k.printk(
        f"arm64_memblock_init: memory {mem.base:#x}-{mem.end - 1:#x}, kernel image "
        f"{img.pa:#x}-{img.pa + img.size - 1:#x} reserved"
    )
    install_kpkeys_hardened_pgtables(k)
    paging_init(k)
    nsec = sparse_init(k)
    k.printk(f"sparse_init: vmemmap for {nsec} sections, {len(k.vmemmap_pgtables)} table pages")


def _cpu_enable_features(k: Kernel, cpu_id: int) -> None:
    if k.machine.has_pkeys:
        from kpkeys_sim.kernel.arch.arm64 import cpu_enable_poe

        cpu_enable_poe(k, k.machine.cpus[cpu_id])


def smp_init(k: Kernel) -> None:
    """``smp_init()`` + ``smp_cpus_done()``: bring up the secondaries, then the late hooks."""
    for cpu in k.machine.cpus[1:]:
        enable_mmu(k, cpu.cpu_id)
        with k.on_cpu(cpu.cpu_id):
            _cpu_enable_features(k, cpu.cpu_id)
    k.printk(f"smp: Brought up 1 node, {len(k.machine.cpus)} CPUs")
    mark_linear_text_alias_ro(k)
    for hook in list(k.smp_cpus_done_hooks):
        hook(k)


def boot_arm64(
    config: KernelConfig,
    instruments: Iterable[Instrument] = (),
    kunit_run_all_tests: Callable[[Kernel], object] | None = None,
) -> Kernel:
    """Build a machine for ``config`` and boot the model kernel on it; returns the kernel.

    ``kunit_run_all_tests(k)``, when given, runs where ``kernel_init_freeable()``
    calls it: after the initcalls, before ``free_initmem()`` and
    ``mark_rodata_ro()`` (built-in KUnit tests; ``kpkeys_sim.kunit.runner``).
    """
    if config.arch != "arm64":
        raise ToolError(f"bad value {config.arch!r} for 'arch': boot_arm64 boots arm64 only")
    check_ram_size(config)
    machine = Machine(
        arch=config.arch,
        page_size=config.page_size,
        ram_size=config.ram_size,
        nr_cpus=config.nr_cpus,
        has_pkeys=config.cpu_has_pkeys,
        instruments=instruments,
    )
    k = Kernel(machine, config)
    dram = machine.mem.base
    g = PgtableGeometry.for_page_size(config.page_size, dram_start=dram, kimage_pa=dram)
    k.pgt = g
    k.arch_mm = ARM64_MM
    k.printk(
        f"Booting Linux on physical CPU 0x0 [kpkeys-sim arm64, {config.page_size >> 10}K pages, "
        f"{g.CONFIG_PGTABLE_LEVELS} levels, {config.ram_size >> 20} MiB, {config.nr_cpus} CPUs]"
    )
    img = KernelImage.layout(g, dram)
    early_map_kernel(k, img)
    enable_mmu(k, 0)
    k.printk(
        f"early_map_kernel: image {img._text:#x}-{img._end - 1:#x} in swapper_pg_dir "
        f"({len(k.static_pgtables)} static tables), MMU on"
    )
    start_kernel(k, ARM64_BOOT_STEPS, kunit_run_all_tests)
    return k


def smp_prepare_boot_cpu(k: Kernel) -> None:
    """``smp_prepare_boot_cpu()``: POE on CPU0 when the CPU has it, then the kpkeys hooks."""
    _cpu_enable_features(k, 0)
    k.printk(
        "smp_prepare_boot_cpu: "
        + ("POE enabled on CPU0" if k.machine.has_pkeys else "no FEAT_S1POE")
    )
    for hook in list(k.smp_prepare_boot_cpu_hooks):
        hook(k)


def _mark_rodata_ro(k: Kernel) -> None:
    mark_rodata_ro(k)
    k.printk("Write protecting the kernel read-only data: swapper_pg_dir is now read-only")


#: arm64's parts of ``start_kernel`` (``kernel.boot.start_kernel``).
ARM64_BOOT_STEPS = ArchBootSteps(
    setup_arch=setup_arch,
    smp_prepare_boot_cpu=smp_prepare_boot_cpu,
    smp_init=smp_init,
    free_initmem=free_initmem,
    mark_rodata_ro=_mark_rodata_ro,
)
