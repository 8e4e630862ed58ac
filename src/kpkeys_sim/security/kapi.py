"""The security layer's view of the model kernel: every kernel entry point it uses, in one place.

Scenarios and defenses reach the kernel only through these functions (or
through the kernel modules they name), so the list below is the complete
set of kernel paths an attack drives.  Nothing here bypasses the kernel:
allocations go through the buddy/slab allocators, user accesses through the
MMU at EL0, page-table changes through the kernel's own fault, mmap and
munmap paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.page import PG_table

if TYPE_CHECKING:
    from kpkeys_sim.kernel.mm.page import MemMap
    from kpkeys_sim.kernel.mm.page_alloc import BuddyAllocator
    from kpkeys_sim.kernel.mm.slab import SlabAllocator
    from kpkeys_sim.machine.cpu import CPU
    from kpkeys_sim.security.env import AttackEnv

__all__ = [
    "Attacker",
    "alloc_page",
    "alloc_secret_page",
    "boot_kernel",
    "corrupt_saved_pkey_reg",
    "describe_pfn",
    "filp_cache",
    "free_page",
    "irq",
    "kernel_rw_entry",
    "kernel_table_pfns",
    "lazy_mmu_enter",
    "lazy_mmu_leave",
    "level_shift",
    "mem_map",
    "memory_pressure",
    "mincore_slots",
    "mmap_anon",
    "pagetable_pfns",
    "phys_to_virt",
    "prepare_window",
    "prepare_windows",
    "remap_pfn",
    "schedule",
    "set_kasan_page_hooks",
    "set_stage2",
    "slab",
    "spawn_attacker",
    "spawn_thread",
    "splice_pgtable_freelist",
    "table_pfn",
    "user_page_pfn",
    "user_read",
    "user_rw_entry",
    "user_store",
    "user_touch",
    "user_write_lands",
    "virt_to_phys_or_none",
    "vm_insert_page",
    "zone",
]


def boot_kernel(cfg: KernelConfig) -> Kernel:
    """``boot(config)``: a booted model kernel (``kernel/boot``)."""
    from kpkeys_sim.kernel.boot import boot

    return boot(cfg)


def slab(k: Kernel) -> SlabAllocator:
    """The kernel's slab allocator."""
    s = k.slab
    if s is None:
        raise RuntimeError("kernel has no slab allocator (not booted?)")
    return s


def zone(k: Kernel) -> BuddyAllocator:
    """The kernel's buddy allocator zone."""
    z = k.zone
    if z is None:
        raise RuntimeError("kernel has no buddy allocator (not booted?)")
    return z


def mem_map(k: Kernel) -> MemMap:
    """The kernel's ``struct page`` array."""
    m = k.mem_map
    if m is None:
        raise RuntimeError("kernel has no mem_map (not booted?)")
    return m


def phys_to_virt(k: Kernel, pa: int) -> int:
    """``__va(pa)``: the linear-map address of ``pa``."""
    return k.pgt.va(pa)


def virt_to_phys_or_none(k: Kernel, va: int) -> int | None:
    """``__pa(va)`` for a linear-map address, else None."""
    g = k.pgt
    if not g.is_lm_address(va):
        return None
    return g.pa(va)


def set_kasan_page_hooks(
    k: Kernel,
    on_alloc: Callable[[int, int, int], None],
    on_free: Callable[[int, int], None],
) -> None:
    """Install ``post_alloc_hook``/``free_pages_prepare`` KASAN hooks on the buddy allocator."""
    zone(k).kasan_hooks = (on_alloc, on_free)


def set_stage2(k: Kernel, check: Callable[[CPU, int, int, str, int], None]) -> None:
    """Install the machine's stage-2 permission check."""
    k.machine.stage2 = check


def pagetable_pfns(k: Kernel) -> list[int]:
    """Every page currently marked ``PG_table`` (page-table pages from the allocator)."""
    mm = mem_map(k)
    idx = np.flatnonzero(mm.flags & np.uint32(1 << PG_table))
    out = [int(i) + mm.base_pfn for i in idx]
    out.extend(k.static_pgtables)
    return out


def alloc_page(env: AttackEnv, gfp: int) -> int | None:
    """``alloc_page(gfp)`` from the buddy allocator."""
    from kpkeys_sim.kernel.mm.page_alloc import alloc_pages

    return alloc_pages(zone(env.k), gfp, 0)


def free_page(env: AttackEnv, pfn: int) -> None:
    """``__free_page(page)`` through the buddy allocator's checks."""
    from kpkeys_sim.kernel.mm.page_alloc import __free_pages

    __free_pages(zone(env.k), pfn, 0)


# --- the attacker's processes ----------------------------------------------------------------

#: Where the attacker's windows live: a 512 GiB slot of the user address space each
#: (so every level's table under a window starts out absent).
_WINDOW_BASE = 1 << 39


class Attacker:
    """An attacker process: its task and address space, running on CPU 0."""

    __slots__ = ("mm", "next_window", "task")

    def __init__(self, task: Any, mm: Any) -> None:
        self.task = task
        self.mm = mm
        self.next_window = 1


def spawn_attacker(env: AttackEnv) -> Attacker:
    """A new user process (``create_user_task``: fork + execve) switched to on CPU 0 (pinned)."""
    from kpkeys_sim.kernel.mm.fork import create_user_task
    from kpkeys_sim.kernel.mm.memory import user_mm_init
    from kpkeys_sim.kernel.sched import schedule_to

    k = env.k
    with k.on_cpu(0):
        task = create_user_task(k, "attacker")
        schedule_to(k, task)
        # Linux has empty_zero_page from boot; the model allocates it on first use.
        user_mm_init(k)
    return Attacker(task, task.mm)


def spawn_thread(env: AttackEnv, att: Attacker) -> Any:
    """A second thread of the attacker (same mm), not running."""
    from kpkeys_sim.kernel.sched import dup_task_struct

    k = env.k
    with k.on_cpu(0):
        return dup_task_struct(k, att.task, "attacker-thread", att.mm)


def schedule(env: AttackEnv, task: Any) -> None:
    """Context switch CPU 0 to ``task`` (``schedule()`` picking it)."""
    from kpkeys_sim.kernel.sched import schedule_to

    with env.k.on_cpu(0):
        schedule_to(env.k, task)
    check = getattr(env.defense, "check_ttbr", None)
    if check is not None:
        check(env, env.k.machine.cpus[0])


def irq(env: AttackEnv) -> Any:
    """An interrupt taken from EL1 on the current CPU (``irq_context``)."""
    from kpkeys_sim.kernel.sched import irq_context

    return irq_context(env.k)


def lazy_mmu_enter(env: AttackEnv) -> None:
    """``lazy_mmu_mode_enable()`` by the task running on CPU 0."""
    from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_mode_enable

    with env.k.on_cpu(0):
        lazy_mmu_mode_enable(env.k)


def lazy_mmu_leave(env: AttackEnv) -> None:
    """``lazy_mmu_mode_disable()`` by the task running on CPU 0."""
    from kpkeys_sim.kernel.mm.lazy_mmu import lazy_mmu_mode_disable

    with env.k.on_cpu(0):
        lazy_mmu_mode_disable(env.k)


def corrupt_saved_pkey_reg(env: AttackEnv, task: Any) -> None:
    """Arbitrary write to ``task``'s saved pkey register: the page-table key becomes RW.

    The new value is what ``KPKEYS_LVL_PGTABLES`` would give (the arch's
    pure ``set_kpkeys_level`` computation on the saved value).  Without
    kpkeys the register does not exist and nothing changes.
    """
    from kpkeys_sim.kernel.arch import arch_kpkeys_enabled, kpkeys_arch
    from kpkeys_sim.kernel.kpkeys.core import KPKEYS_LVL_PGTABLES

    k = env.k
    if not arch_kpkeys_enabled(k):
        return
    ops = kpkeys_arch(k)
    th = task.thread
    th.pkey_reg = ops.set_kpkeys_level(
        th.pkey_reg, KPKEYS_LVL_PGTABLES, k.config.kpkeys_cred_levels
    )


def prepare_windows(env: AttackEnv, att: Attacker, level: str, n: int = 1) -> list[int]:
    """``n`` fresh anonymous RW windows whose ``level`` tables do not exist yet.

    ``pte``: one 512 GiB slot; a page of its first 2 MiB is touched (its PUD
    and PMD tables then exist) and the windows are the next ``n`` 2 MiB
    ranges.  ``pmd``: a page of the slot's first 1 GiB is touched and the
    windows are the next ``n`` 1 GiB ranges.  ``pud``: ``n`` slots of their
    own, nothing touched (their PGD entries are empty).
    """
    g = env.k.pgt
    if level == "pud":
        out = []
        for _ in range(n):
            base = _WINDOW_BASE * att.next_window
            att.next_window += 1
            mmap_anon(env, att, base, g.PUD_SIZE)
            out.append(base)
        return out
    base = _WINDOW_BASE * att.next_window
    att.next_window += 1
    step = g.PMD_SIZE if level == "pte" else g.PUD_SIZE
    mmap_anon(env, att, base, step * (n + 1))
    user_touch(env, att, base, write=True)
    return [base + step * (i + 1) for i in range(n)]


def prepare_window(env: AttackEnv, att: Attacker, level: str) -> int:
    """One window (see :func:`prepare_windows`)."""
    return prepare_windows(env, att, level, 1)[0]


def mmap_anon(env: AttackEnv, att: Attacker, addr: int, size: int) -> None:
    """``mmap(addr, size, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED)``."""
    from kpkeys_sim.kernel.mm.mmap import (
        MAP_ANONYMOUS,
        MAP_FIXED,
        MAP_PRIVATE,
        PROT_READ,
        PROT_WRITE,
        do_mmap,
    )

    with env.k.on_cpu(0):
        ret = do_mmap(
            env.k,
            att.mm,
            addr,
            size,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
        )
    if ret != addr:
        raise MemoryError(f"mmap at {addr:#x} failed ({ret})")


def user_touch(env: AttackEnv, att: Attacker, va: int, *, write: bool) -> None:
    """A user access by the attacker that faults the page in through the kernel's fault path."""
    from kpkeys_sim.kernel.mm.memory import access_user

    with env.k.on_cpu(0):
        access_user(env.k, va, "W" if write else "R")


def user_read(env: AttackEnv, att: Attacker, va: int, n: int) -> bytes | None:
    """A user load through the MMU at EL0 (None if it faults: no useful data either way)."""
    from kpkeys_sim.machine.mmu import Fault

    k = env.k
    cpu = k.machine.cpus[0]
    try:
        pa = k.machine.translate(cpu, va, "R", el=0)
    except Fault:
        return None
    return k.machine.mem.read_bytes(pa, n)


def user_store(env: AttackEnv, att: Attacker, va: int, data: bytes) -> None:
    """A user store through the MMU at EL0; a fault is the attacker's SIGSEGV (no effect)."""
    from kpkeys_sim.machine.mmu import Fault
    from kpkeys_sim.security.env import Stage2Fault
    from kpkeys_sim.security.outcome import Prevented

    k = env.k
    cpu = k.machine.cpus[0]
    try:
        pa = k.machine.translate(cpu, va, "W", el=0)
    except Fault as f:
        raise Prevented(f"user-mode {f.result} at EL0", str(f)) from None
    except Stage2Fault as s:
        raise Prevented("stage-2 permission fault (hypervisor)", s.why) from None
    k.machine.mem.write_bytes(pa, data)


def user_write_lands(
    env: AttackEnv, att: Attacker, va: int, data: bytes, target_pfn: int, off: int
) -> bool:
    """A user store at ``va``; True if it landed at ``off`` in the target page."""
    k = env.k
    try:
        user_store(env, att, va, data)
    except Exception:
        return False
    pa = (target_pfn << k.machine.page_shift) + off
    return k.machine.mem.read_bytes(pa, len(data)) == data


def level_shift(env: AttackEnv, level: str) -> int:
    """log2 of the size one entry of a ``level`` table maps."""
    g = env.k.pgt
    return {"pte": g.PAGE_SHIFT, "pmd": g.PMD_SHIFT, "pud": g.PUD_SHIFT}[level]


def user_rw_entry(env: AttackEnv, pfn: int, level: str) -> int:
    """A user read/write (dirty, young) descriptor mapping ``pfn`` at ``level``.

    ``pte``: a page descriptor; ``pmd``/``pud``: a block descriptor for the
    aligned block containing ``pfn``.
    """
    g = env.k.pgt
    prot = g.pte_mkdirty(g.PAGE_SHARED)
    if level == "pte":
        return g.pfn_pte(pfn, prot)
    shift = level_shift(env, level) - g.PAGE_SHIFT
    base = pfn & ~((1 << shift) - 1)
    return g.pfn_pte(base, g.mk_pmd_sect_prot(prot))


def kernel_rw_entry(env: AttackEnv, pfn: int, level: str) -> int:
    """A kernel read/write descriptor (``PAGE_KERNEL``: pkey 0) mapping ``pfn`` at ``level``.

    ``pte``: a page descriptor; ``pmd``/``pud``: a block descriptor for the
    aligned block containing ``pfn``.
    """
    g = env.k.pgt
    prot = g.pte_mkdirty(g.PAGE_KERNEL)
    if level == "pte":
        return g.pfn_pte(pfn, prot)
    shift = level_shift(env, level) - g.PAGE_SHIFT
    base = pfn & ~((1 << shift) - 1)
    return g.pfn_pte(base, g.mk_pmd_sect_prot(prot))


def table_pfn(env: AttackEnv, att: Attacker, va: int, level: str) -> int | None:
    """The pfn of the ``level`` table that translates user ``va`` (a hardware-style walk)."""
    k = env.k
    g = k.pgt
    mem = k.machine.mem
    geo = k.machine.geometry
    table: int = att.mm.pgd_phys
    order = ["pgd", "p4d", "pud", "pmd", "pte"]
    levels = order[5 - g.CONFIG_PGTABLE_LEVELS :]
    for lv_index, lv in enumerate(levels):
        if lv == level:
            return table >> g.PAGE_SHIFT
        hw_level = geo.start_level + lv_index
        desc = mem.read_u64(table + 8 * geo.index(va, hw_level))
        if not g.pmd_table(desc):
            return None
        table = g.pmd_page_paddr(desc)
    return None


def alloc_secret_page(env: AttackEnv, secret: bytes) -> int:
    """A kernel page holding ``secret`` (e.g. the page of ``modprobe_path``)."""
    from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL

    pfn = alloc_page(env, GFP_KERNEL)
    if pfn is None:
        raise MemoryError("no page for the target")
    k = env.k
    k.machine.store_bytes(k.cpu, phys_to_virt(k, pfn << k.machine.page_shift), secret)
    return pfn


def describe_pfn(env: AttackEnv, pfn: int) -> str:
    """What a page is now, in a stable form for explanations ("free", "a user page", ...)."""
    from kpkeys_sim.kernel.mm.page import PG_buddy, PG_slab, PG_table, compound_head

    mm = mem_map(env.k)
    i = pfn - mm.base_pfn
    f = int(mm.flags[i])
    if f >> PG_table & 1:
        return "another page table"
    if f >> PG_slab & 1:
        return "a slab page"
    head = compound_head(mm, pfn)
    hf = int(mm.flags[head - mm.base_pfn])
    if hf >> PG_buddy & 1 or int(mm.refcount[head - mm.base_pfn]) == 0:
        return "free"
    if int(mm.mapcount[i]) > 0:
        return "a user page"
    pba = env.k.pba
    if pba is not None and pfn in set(pba.cached_list):
        return "in the PBA cache"
    return "allocated"


def vm_insert_page(env: AttackEnv, att: Attacker, va: int, pfn: int) -> None:
    """``vm_insert_page(vma, va, page)``: map kernel page ``pfn`` into the attacker at ``va``.

    What a driver's ``mmap`` handler does for its ring pages (packet mmap,
    io_uring): allocate the missing tables and ``set_pte_at`` a user
    read/write entry, through the kernel's guarded helpers.
    """
    from kpkeys_sim.kernel.mm.page_alloc import get_page
    from kpkeys_sim.kernel.mm.pgalloc import p4d_alloc, pmd_alloc, pte_alloc_map, pud_alloc
    from kpkeys_sim.kernel.mm.pgtable import pgd_offset, set_pte_at

    k = env.k
    mm = att.mm
    with k.on_cpu(0):
        pgdp = pgd_offset(k, mm, va)
        p4dp = p4d_alloc(k, mm, pgdp, va)
        pudp = pud_alloc(k, mm, p4dp, va) if p4dp is not None else None
        pmdp = pmd_alloc(k, mm, pudp, va) if pudp is not None else None
        ptep = pte_alloc_map(k, mm, pmdp, va) if pmdp is not None else None
        if ptep is None:
            raise MemoryError(f"vm_insert_page: no page table for {va:#x}")
        get_page(zone(k), pfn)
        g = k.pgt
        set_pte_at(k, mm, va, ptep, g.pfn_pte(pfn, g.pte_mkdirty(g.PAGE_SHARED)))


def filp_cache(env: AttackEnv) -> Any:
    """The ``filp`` cache (``SLAB_TYPESAFE_BY_RCU``), created on first use."""
    from kpkeys_sim.kernel.mm.slab import (
        SLAB_ACCOUNT,
        SLAB_HWCACHE_ALIGN,
        SLAB_TYPESAFE_BY_RCU,
        kmem_cache_create,
    )

    for c in slab(env.k).caches():
        if c.name == "filp":
            env.index_tagged_caches.add("filp")
            return c
    env.index_tagged_caches.add("filp")
    return kmem_cache_create(
        slab(env.k), "filp", 232, 8, SLAB_HWCACHE_ALIGN | SLAB_ACCOUNT | SLAB_TYPESAFE_BY_RCU
    )


def mincore_slots(env: AttackEnv, att: Attacker, window: int, level: str) -> list[int]:
    """``mincore()``-style residency scan: the valid entries of the ``level`` table of ``window``.

    The kernel walks the attacker's tables for the range and reports which
    entries are present — what the attacker uses to find the slot its forged
    entry landed in (the model reads the whole table with one checked load
    through its linear-map alias, as ``mincore_pte_range`` does entry by entry).
    """
    pfn = table_pfn(env, att, window, level)
    if pfn is None:
        return []
    k = env.k
    table = k.machine.load_table(k.cpu, phys_to_virt(k, pfn << k.machine.page_shift))
    return [int(i) for i in np.flatnonzero(table & np.uint64(1))]


def splice_pgtable_freelist(env: AttackEnv, pfn: int) -> str:
    """Arbitrary writes to ``struct page`` (vmemmap): put ``pfn`` at the head of a free list.

    The list the next page-table allocation takes from: the PBA's
    ``cached_list`` (linked through ``page->lru``) when the PBA is in use; the
    grouped-page cache's list (``page->lru`` in a ``list_lru``) under the
    2021 PKS page tables (``series = "pks-rfc2"``), whose pages are trusted to
    carry the key already; else the buddy allocator's order-0 free list (``page->lru`` too, plus the
    buddy state ``PageBuddy``/order that ``__rmqueue_smallest`` trusts).  The
    counters the kernel keeps outside ``struct page`` (``nr_cached``,
    ``nr_free``) are not touched: only ``struct page`` fields are written.
    The model keeps these lists in its allocator objects, so the splice is
    applied there; no modelled defense protects ``struct page`` (§4.4
    "vmemmap, which is not pkey-protected").  Returns the list's name.
    """
    from kpkeys_sim.kernel.mm.page import PG_buddy

    k = env.k
    pba = k.pba
    if pba is not None and k.static_branch("pba_enabled_key"):
        pba.cached_list.append(pfn)
        return "PBA cached_list"
    if k.pks_rfc2 is not None:
        k.pks_rfc2.gpc.free_list.append(pfn)  # the MRU end: the next get_grouped_page
        return "grouped-page cache list"
    z = zone(k)
    mm = mem_map(k)
    i = pfn - mm.base_pfn
    mm.flags[i] = int(mm.flags[i]) | (1 << PG_buddy)
    mm.private[i] = 0
    fl = z.free_area[0]
    fl[pfn] = None
    fl.move_to_end(pfn, last=False)
    return "buddy order-0 free list"


def memory_pressure(env: AttackEnv) -> None:
    """One direct-reclaim pass (``shrink_slab``) the attacker induces by allocating memory."""
    z = zone(env.k)
    for shrinker in list(z.shrinkers):
        shrinker(z.reclaim_nr_to_scan)


def remap_pfn(env: AttackEnv, att: Attacker, va: int, pfn: int) -> None:
    """A driver's ``mmap`` handler: ``remap_pfn_range(vma, va, pfn, PAGE_SIZE, PAGE_SHARED)``."""
    from kpkeys_sim.kernel.mm.pgalloc import p4d_alloc, pmd_alloc, pte_alloc_map, pud_alloc
    from kpkeys_sim.kernel.mm.pgtable import pgd_offset, set_pte_at

    k = env.k
    mm = att.mm
    with k.on_cpu(0):
        pgdp = pgd_offset(k, mm, va)
        p4dp = p4d_alloc(k, mm, pgdp, va)
        pudp = pud_alloc(k, mm, p4dp, va) if p4dp is not None else None
        pmdp = pmd_alloc(k, mm, pudp, va) if pudp is not None else None
        ptep = pte_alloc_map(k, mm, pmdp, va) if pmdp is not None else None
        if ptep is None:
            raise MemoryError(f"remap_pfn_range: no page table for {va:#x}")
        g = k.pgt
        set_pte_at(k, mm, va, ptep, g.pte_mkspecial(g.pfn_pte(pfn, g.pte_mkdirty(g.PAGE_SHARED))))


def user_page_pfn(env: AttackEnv, att: Attacker, va: int) -> int:
    """The pfn behind the attacker's (faulted-in) page at ``va`` (a pagemap-style leak)."""
    k = env.k
    pa = k.machine.translate(k.machine.cpus[0], va, "R", el=0)
    return pa >> k.machine.page_shift


def kernel_table_pfns(k: Kernel) -> set[int]:
    """Every table page reachable from the kernel root (``swapper_pg_dir``) — a boot-time walk."""
    g = k.pgt
    geo = k.machine.geometry
    mem = k.machine.mem
    root = k.machine.cpus[0].ttbr1
    out: set[int] = set()
    stack = [(root, geo.start_level)]
    while stack:
        table, level = stack.pop()
        pfn = table >> k.machine.page_shift
        if pfn in out:
            continue
        out.add(pfn)
        if level == 3:
            continue
        frame = mem.frame_ro(pfn)
        for desc in frame[np.flatnonzero(frame)].tolist():
            if g.pmd_table(desc):
                stack.append((g.pmd_page_paddr(desc), level + 1))
    return out
