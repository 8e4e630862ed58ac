"""Booting the model kernel: the architecture's boot, and the generic steps it shares.

``boot(config)`` validates the configuration and runs the architecture's
boot in the kernel's order — ``kernel/arch/arm64_setup.py``
(:func:`~kpkeys_sim.kernel.arch.arm64_setup.boot_arm64`) or
``kernel/arch/x86_setup.py`` (:func:`~kpkeys_sim.kernel.arch.x86_setup.boot_x86`).
Both call the generic steps defined here, where ``init/main.c`` and
``mm/mm_init.c`` call them:

* :func:`mm_core_init`: ``mem_init`` (``memblock_free_all`` hands free memory
  to the buddy allocator, then ``k.mem_init_hooks``: kpkeys v6/v7
  ``kpkeys_hardened_pgtables_init``), ``kmem_cache_init``,
  ``pgtable_cache_init``;
* :func:`init_IRQ`: the per-CPU vmalloc'ed IRQ stacks.

The page allocator zeroes pages and the slab zeroes objects with checked
stores through the direct map on the current CPU (``_zero_pages``,
``_zero_object``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.errors import KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.memblock import memblock_free_all
from kpkeys_sim.kernel.mm.page import MemMap
from kpkeys_sim.kernel.mm.page_alloc import BuddyAllocator
from kpkeys_sim.kernel.mm.pgalloc import pgtable_cache_init
from kpkeys_sim.kernel.mm.slab import SlabAllocator
from kpkeys_sim.machine.events import Instrument

__all__ = [
    "MIN_RAM_SIZE",
    "ArchBootSteps",
    "boot",
    "check_ram_size",
    "init_IRQ",
    "mm_core_init",
    "start_kernel",
]

#: The smallest DRAM the model kernel boots on (image, vmemmap and tables must fit).
MIN_RAM_SIZE = 64 << 20


def check_ram_size(config: KernelConfig) -> None:
    """Refuse a RAM size the kernel cannot boot on (ToolError naming the value)."""
    if config.ram_size < MIN_RAM_SIZE:
        raise ToolError(
            f"bad value {config.ram_size} for 'ram_size': the kernel needs at least "
            f"{MIN_RAM_SIZE} bytes"
        )


def _zero_pages(k: Kernel) -> object:
    """The buddy allocator's zeroing: ``clear_page`` of each page through its linear alias.

    A block-mapped linear map zeroes a physically contiguous range one
    linear-map leaf at a time: one checked ``W`` translation (exactly
    ``clear_page``'s) of the first page the leaf covers, then a bulk zero
    of the pages it covers.  The permission (and pkey) is per leaf, and the
    other pages' translations would be TLB hits on the same entry (no walk,
    no event), so the result is the same; each of them is still looked up
    in the TLB, and a page the TLB translates through another (smaller)
    entry gets its own checked translation.  With a PTE-mapped linear map
    every leaf is one page, and with a stage-2 check (per physical page)
    every page needs its own translation: those zero page by page.
    """
    m = k.machine
    g = k.pgt
    mem = m.mem
    shift = g.PAGE_SHIFT
    page = 1 << shift

    def zero_pages(pfn: int, nr: int) -> None:
        cpu = k.cpu
        clear_page = m.clear_page
        va = g.va(pfn << shift)
        if nr == 1 or m.stage2 is not None or k.arch_mm.force_pte_mapping(k):
            for i in range(nr):
                clear_page(cpu, va + i * page)
            return
        translate = m.translate
        lookup = m.lookup
        end = va + nr * page
        while va < end:
            pa = translate(cpu, va, "W")
            e = lookup(cpu, va)  # the entry translate used (a TLB hit)
            leaf_end = min(end, (va | ((1 << e.size_shift) - 1)) + 1)
            nxt = va + page
            while nxt < leaf_end and lookup(cpu, nxt) is e:
                nxt += page
            mem.zero_frame_range(pa >> shift, (nxt - va) >> shift)
            va = nxt

    return zero_pages


def _zero_object(k: Kernel) -> object:
    """The slab's object zeroing: checked stores of zeros through the linear alias."""
    m = k.machine
    g = k.pgt

    def zero_object(pa: int, nbytes: int) -> None:
        off = 0
        while off < nbytes:
            va = g.va(pa + off)
            n = min(nbytes - off, g.PAGE_SIZE - (va & (g.PAGE_SIZE - 1)))
            m.store_bytes(k.cpu, va, bytes(n))
            off += n

    return zero_object


def mm_core_init(k: Kernel) -> None:
    """``mm_core_init()``: ``mem_init`` (buddy handover + kpkeys init hooks), slab, pgd cache."""
    g = k.pgt
    mem = k.machine.mem
    mb = k.memblock
    assert mb is not None
    mem_map = MemMap(mem.base_pfn, mem.nr_frames, page_shift=g.PAGE_SHIFT)
    zone = BuddyAllocator(
        mem_map,
        zero_pages=_zero_pages(k),  # type: ignore[arg-type]
        instruments=k.machine.instruments,
    )
    k.mem_map = mem_map
    k.zone = zone
    freed = memblock_free_all(mb, zone)
    k.printk(
        f"mem_init: {freed} pages ({(freed << g.PAGE_SHIFT) >> 20} MiB) handed to the buddy "
        f"allocator, {mem.nr_frames - freed} reserved"
    )
    for hook in list(k.mem_init_hooks):
        hook(k)
    k.slab = SlabAllocator(
        zone,
        nr_cpus=k.config.nr_cpus,
        zero_object=_zero_object(k),  # type: ignore[arg-type]
        instruments=k.machine.instruments,
    )
    pgtable_cache_init(k)
    k.printk("kmem_cache_init: slab ready" + (", pgd_cache" if k.pgd_cache is not None else ""))


def init_IRQ(k: Kernel) -> None:
    """``init_IRQ()`` → ``init_irq_stacks()`` (``CONFIG_VMAP_STACK``): an IRQ stack per CPU.

    The arm64 definition, which the x86 model reuses [INF: x86 allocates its
    per-CPU IRQ stacks with the same vmalloc call size and alignment order].

    ``arch_alloc_vmap_stack(IRQ_STACK_SIZE)`` is ``__vmalloc_node(IRQ_STACK_SIZE,
    THREAD_ALIGN, THREADINFO_GFP, ...)`` with ``IRQ_STACK_SIZE = THREAD_SIZE``
    (16K, or one page when pages are larger) and ``THREAD_ALIGN = 2 *
    THREAD_SIZE``; the pointers are ``k.irq_stack_ptr[cpu]``.  ``start_kernel``
    runs it after ``mm_core_init`` and before ``smp_init``: with kpkeys v6 its
    page tables come from the PBA's early region, protected only by
    ``kpkeys_hardened_pgtables_init_late`` (spec §4.5, §5.1
    ``write_early_kernel_vmap_pte``).
    """
    from kpkeys_sim.kernel.mm.gfp import __GFP_ZERO, GFP_KERNEL_ACCOUNT
    from kpkeys_sim.kernel.mm.vmalloc import __vmalloc_node_range

    g = k.pgt
    size = max(16 << 10, g.PAGE_SIZE)
    for cpu in k.machine.cpus:
        p = __vmalloc_node_range(
            k,
            size,
            2 * size,
            g.VMALLOC_START,
            g.VMALLOC_END,
            GFP_KERNEL_ACCOUNT | __GFP_ZERO,
            g.PAGE_KERNEL,
            0,
        )
        if p is None:
            raise KernelBug(f"init_irq_stacks: no IRQ stack for CPU{cpu.cpu_id}")
        k.irq_stack_ptr.append(p)
    k.printk(f"init_IRQ: {len(k.irq_stack_ptr)} IRQ stacks of {size >> 10}K (vmalloc)")


@dataclass(frozen=True, slots=True)
class ArchBootSteps:
    """The architecture's parts of ``start_kernel``/``kernel_init`` (arch callbacks)."""

    setup_arch: Callable[[Kernel], None]
    smp_prepare_boot_cpu: Callable[[Kernel], None]
    #: ``smp_init`` + the arch's ``smp_cpus_done`` (which runs ``k.smp_cpus_done_hooks``).
    smp_init: Callable[[Kernel], None]
    free_initmem: Callable[[Kernel], object]
    mark_rodata_ro: Callable[[Kernel], None]


def start_kernel(
    k: Kernel,
    arch: ArchBootSteps,
    kunit_run_all_tests: Callable[[Kernel], object] | None = None,
) -> None:
    """``start_kernel()`` and ``kernel_init()`` from ``sched_init`` on, in ``init/main.c`` order.

    ``sched_init``; ``setup_arch``; ``smp_prepare_boot_cpu``; ``mm_core_init``;
    ``init_IRQ``; the cred series' init; ``smp_init``; ``do_initcalls`` (the late
    initcalls); the built-in KUnit tests (``kunit_run_all_tests``, when given);
    ``free_initmem``; ``mark_rodata_ro``.  The architecture's early boot (its
    static tables, the MMU on the boot CPU) has run before.
    """
    from kpkeys_sim.kernel.cred import install_kpkeys_hardened_cred
    from kpkeys_sim.kernel.sched import sched_init

    sched_init(k)
    arch.setup_arch(k)
    arch.smp_prepare_boot_cpu(k)
    mm_core_init(k)
    init_IRQ(k)
    install_kpkeys_hardened_cred(k)
    arch.smp_init(k)
    for hook in list(k.late_initcalls):
        hook(k)
    k.printk(f"do_initcalls: {len(k.late_initcalls)} late initcalls")
    if kunit_run_all_tests is not None:
        kunit_run_all_tests(k)
    arch.free_initmem(k)
    arch.mark_rodata_ro(k)


def boot(
    config: KernelConfig,
    instruments: Iterable[Instrument] = (),
    kunit_run_all_tests: Callable[[Kernel], object] | None = None,
) -> Kernel:
    """Build a machine for ``config`` and boot the model kernel on it; returns the kernel.

    ``kunit_run_all_tests(k)``, when given, runs where ``kernel_init_freeable()``
    calls it: after the initcalls, before ``free_initmem()`` and
    ``mark_rodata_ro()`` (built-in KUnit tests; ``kpkeys_sim.kunit.runner``).
    """
    check_ram_size(config)
    if config.arch == "x86":
        from kpkeys_sim.kernel.arch.x86_setup import boot_x86

        return boot_x86(config, instruments, kunit_run_all_tests)
    if config.arch == "arm64":
        from kpkeys_sim.kernel.arch.arm64_setup import boot_arm64

        return boot_arm64(config, instruments, kunit_run_all_tests)
    raise ToolError(f"bad value {config.arch!r} for 'arch': must be 'arm64' or 'x86'")
