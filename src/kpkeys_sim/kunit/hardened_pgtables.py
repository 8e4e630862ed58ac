"""The series' KUnit suites (``mm/tests/kpkeys_hardened_pgtables_kunit.c``), ported; plus positives.

Spec kpkeys-series.md §5.1.  Every case of every version first skips with
"kpkeys are not supported" when kpkeys are unavailable
(``arch_kpkeys_enabled()`` in v5/v6, ``kpkeys_enabled()`` in v7: the same
predicate in the model).  The negative cases write a page-table entry at the
default level, with no guard, through ``copy_to_kernel_nofault()`` and expect
``-EFAULT`` (spec §2.7).

* RFC v5 (17/18), suite "Hardened pgtables using kpkeys":
  ``write_linear_map_pte`` (the PTE mapping the linear-map alias of
  ``&init_mm``, with ``PTE_WRITE`` set), ``write_kernel_vmalloc_pte`` (the PTE
  of a ``vmalloc(PAGE_SIZE)`` area, freed by a KUnit action, with
  ``PTE_WRITE`` set), ``write_user_pmd`` (the PMD of a ``kunit_vm_mmap`` page,
  ``PROT_READ``, ``MAP_ANONYMOUS|MAP_PRIVATE|MAP_POPULATE``, with the
  ``PROT_SECT_NORMAL`` bits ORed in).
* v6, suite "kpkeys_hardened_pgtables": each write stores the entry's
  *current* value (``TEST_WRITE``: ``pXXp_get`` then ``copy_to_kernel_nofault``,
  message "Direct <TYPE> write wasn't prevented").  ``write_direct_map_pgtables``
  (a page made PTE-mapped by ``set_direct_map_invalid_noflush`` +
  ``set_direct_map_default_noflush``; its PUD, PMD and PTE; the PGD is
  skipped because ``swapper_pg_dir`` is still writable, the P4D because it may
  be folded), ``write_kernel_image_pud`` (the PUD of ``&init_mm``),
  ``write_kernel_vmalloc_pte``, ``write_early_kernel_vmap_pte`` (arm64: the PTE
  of this CPU's ``irq_stack_ptr``; the IRQ stacks are vmalloc'ed before
  ``set_memory_pkey()`` is usable and protected by ``..._init_late()``),
  ``write_user_pmd``.
* RFC v7, suite "kpkeys_hardened_pgtables": ``write_direct_map_pgtables`` also
  writes the P4D unless ``mm_p4d_folded(&init_mm)`` and the PUD only unless
  ``mm_pud_folded``; ``write_kernel_image_pud``; ``write_kernel_vmalloc_pte``;
  ``write_vmemmap_pmd`` (allocate and free a page, then write the PMD covering
  its ``struct page``); ``write_user_pmd``.

Model choices (``docs/model-assumptions.md``):

* ``&init_mm`` is a ``.data`` symbol; the model's vmlinux has no per-symbol
  layout, so its address is ``_data`` (the first page of ``.data``).
* The v5 write values: a PTE made writable (``pte_mkwrite_novma``: arm64
  ``PTE_WRITE``) and a PMD with the block protection of ``PAGE_KERNEL`` ORed
  in (``mk_pmd_sect_prot(PAGE_KERNEL)``: arm64 ``PROT_SECT_NORMAL``); the
  series' v5 test is arm64-only.  Every suite is written against ``k.pgt``, so
  the model also runs it on the x86 port (``_PAGE_RW``; ``_PAGE_PSE`` with
  the 2 MiB form of ``PAGE_KERNEL``).
* A v6 helper writes the PUD unconditionally (the v7 fix exists because it
  may be folded): with 64K pages the PUD *is* the ``swapper_pg_dir`` entry,
  which is not protected, so the v6 ``write_direct_map_pgtables`` and the
  v6/v7 ``write_kernel_image_pud`` report ``not ok`` there, as they would on
  such a kernel.

The positive suite "kpkeys_hardened_pgtables_positive" is the model's own
(spec §5.1 "A model can also add positive tests"): the guarded helpers write
protected tables at the default level; page-table pages freed back to the
buddy allocator are writable again (pkey DEFAULT); an interrupt taken inside
a guarded section runs at the default level (its unguarded write faults, its
own guarded write succeeds) and the section's write still succeeds after the
return.
"""

from __future__ import annotations

from kpkeys_sim.kernel.arch import arch_kpkeys_enabled
from kpkeys_sim.kernel.errors import EFAULT
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_LVL_PGTABLES,
    kpkeys_restore_pkey_reg,
    kpkeys_set_level,
)
from kpkeys_sim.kernel.mm import pgtable
from kpkeys_sim.kernel.mm.addr import lm_alias, page_address
from kpkeys_sim.kernel.mm.maccess import copy_to_kernel_nofault
from kpkeys_sim.kunit.framework import (
    KUNIT_ASSERT_EQ,
    KUNIT_ASSERT_NE_MSG,
    KUNIT_ASSERT_NOT_NULL,
    KUNIT_ASSERT_NOT_NULL_MSG,
    KUNIT_CASE,
    KUNIT_EXPECT_EQ,
    KUNIT_EXPECT_EQ_MSG,
    KUNIT_EXPECT_TRUE_MSG,
    KUNIT_FAIL,
    Kunit,
    KunitCase,
    KunitFn,
    KunitSuite,
    kunit_add_action_or_reset,
    kunit_skip,
    kunit_vm_mmap,
)

__all__ = [
    "DEFAULT_SUITES",
    "KUNIT_MODULE",
    "POSITIVE_SUITE",
    "SUITES",
    "default_suites",
    "get_kernel_pte",
    "kpkeys_hardened_pgtables_positive_suite",
    "kpkeys_hardened_pgtables_v5_suite",
    "kpkeys_hardened_pgtables_v6_suite",
    "kpkeys_hardened_pgtables_v7_suite",
    "pks_rfc2_suite",
]

#: ``KBUILD_MODNAME`` of ``mm/tests/kpkeys_hardened_pgtables_kunit.c`` (the ``# module:`` line).
KUNIT_MODULE = "kpkeys_hardened_pgtables_kunit"

_NOT_SUPPORTED = "kpkeys are not supported"

# include/uapi mman constants used by write_user_pmd.
_PROT_READ = 0x1
_MAP_PRIVATE = 0x02
_MAP_ANONYMOUS = 0x20
_MAP_POPULATE = 0x008000


def _skip_unless_kpkeys(test: Kunit) -> None:
    """``if (!arch_kpkeys_enabled()) kunit_skip(test, "kpkeys are not supported");``."""
    if not arch_kpkeys_enabled(test.k):
        kunit_skip(test, _NOT_SUPPORTED)


def _u64(value: int) -> bytes:
    """A ``pte_t``/``pmd_t``/... as stored in memory (arm64 is little-endian)."""
    return (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")


def _init_mm_addr(k: Kernel) -> int:
    """``&init_mm``: a ``.data`` symbol of the model vmlinux (its first page, see module doc)."""
    return int(k.kimage._data)


def get_kernel_pte(k: Kernel, addr: int) -> int | None:
    """The test's ``get_kernel_pte(addr)``: ``pmd_off_k``; NULL for a PMD leaf; else the PTE."""
    pmdp = pgtable.pmd_off_k(k, addr)
    if k.pgt.pmd_leaf(pgtable.pmdp_get(k, pmdp)):
        return None
    return pgtable.pte_offset_kernel(k, pmdp, addr)


def _get_user_pmd(k: Kernel, addr: int) -> int:
    """The PMD entry of user address ``addr`` in ``current->mm`` (``pmd_off(mm, addr)``)."""
    from kpkeys_sim.kernel.sched import current

    mm = current(k).mm
    assert mm is not None
    pgdp = pgtable.pgd_offset(k, mm, addr)
    p4dp = pgtable.p4d_offset(k, pgdp, addr)
    pudp = pgtable.pud_offset(k, p4dp, addr)
    return pgtable.pmd_offset(k, pudp, addr)


def _vmalloc_page(test: Kunit) -> int | None:
    """``vmalloc(PAGE_SIZE)`` freed by a KUnit action (``kunit_add_action_or_reset(vfree)``)."""
    from kpkeys_sim.kernel.mm.vmalloc import vfree, vmalloc

    k = test.k
    area = vmalloc(k, k.pgt.PAGE_SIZE)
    if area is not None:
        kunit_add_action_or_reset(test, lambda: vfree(k, area))
    return area


def _expect_write_fault(test: Kunit, kind: str, ptr: int, val: int) -> None:
    """``copy_to_kernel_nofault(ptr, &val)`` at the default level must return ``-EFAULT``."""
    ret = copy_to_kernel_nofault(test.k, ptr, _u64(val))
    KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, f"Direct {kind} write wasn't prevented")


def _test_write(test: Kunit, kind: str, ptr: int) -> None:
    """v6/v7 ``TEST_WRITE``: write back the entry's current value; expect ``-EFAULT``."""
    _expect_write_fault(test, kind, ptr, pgtable.ptep_get(test.k, ptr))


def _vmalloc_pte(test: Kunit) -> int:
    """The PTE of a ``vmalloc(PAGE_SIZE)`` area (both asserted non-NULL)."""
    area = _vmalloc_page(test)
    KUNIT_ASSERT_NOT_NULL(test, area)
    assert area is not None
    ptep = get_kernel_pte(test.k, area)
    KUNIT_ASSERT_NOT_NULL_MSG(test, ptep, "Failed to get PTE")
    assert ptep is not None
    return ptep


def _user_pmd(test: Kunit) -> int:
    """The PMD of a ``kunit_vm_mmap`` page (``PROT_READ``, anonymous, private, populated)."""
    uaddr = kunit_vm_mmap(
        test, 0, test.k.pgt.PAGE_SIZE, _PROT_READ, _MAP_ANONYMOUS | _MAP_PRIVATE | _MAP_POPULATE
    )
    KUNIT_ASSERT_NE_MSG(test, uaddr, 0, "Could not create userspace mm")
    return _get_user_pmd(test.k, uaddr)


# --- RFC v5 (17/18) --------------------------------------------------------------------------


def write_linear_map_pte(test: Kunit) -> None:
    """v5: the PTE mapping ``&init_mm``'s linear-map alias, written with ``PTE_WRITE`` set."""
    _skip_unless_kpkeys(test)
    k = test.k
    ptep = get_kernel_pte(k, lm_alias(k, _init_mm_addr(k)))
    KUNIT_ASSERT_NOT_NULL_MSG(test, ptep, "Failed to get PTE")
    assert ptep is not None
    _expect_write_fault(test, "PTE", ptep, k.pgt.pte_mkwrite_novma(pgtable.ptep_get(k, ptep)))


def _v5_write_kernel_vmalloc_pte(test: Kunit) -> None:
    """v5 ``write_kernel_vmalloc_pte``: a ``vmalloc(PAGE_SIZE)`` area's PTE with ``PTE_WRITE``."""
    _skip_unless_kpkeys(test)
    k = test.k
    ptep = _vmalloc_pte(test)
    _expect_write_fault(test, "PTE", ptep, k.pgt.pte_mkwrite_novma(pgtable.ptep_get(k, ptep)))


def _v5_write_user_pmd(test: Kunit) -> None:
    """v5 ``write_user_pmd``: the PMD of a populated user page, ``PROT_SECT_NORMAL`` ORed in."""
    _skip_unless_kpkeys(test)
    g = test.k.pgt
    pmdp = _user_pmd(test)
    sect_normal = g.mk_pmd_sect_prot(g.PAGE_KERNEL)
    _expect_write_fault(test, "PMD", pmdp, pgtable.pmdp_get(test.k, pmdp) | sect_normal)


# --- v6 and RFC v7 ---------------------------------------------------------------------------


def _direct_map_page(test: Kunit) -> int:
    """Allocate a page (freed by an action) and make its linear-map alias PTE-mapped."""
    from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
    from kpkeys_sim.kernel.mm.page_alloc import __free_page, alloc_pages
    from kpkeys_sim.kernel.mm.set_memory import (
        set_direct_map_default_noflush,
        set_direct_map_invalid_noflush,
    )

    k = test.k
    zone = k.zone
    assert zone is not None
    page = alloc_pages(zone, GFP_KERNEL, 0)
    KUNIT_ASSERT_NOT_NULL(test, page)
    assert page is not None
    kunit_add_action_or_reset(test, lambda: __free_page(zone, page))
    # Ensure the page is PTE-mapped (splitting the linear map if needed).
    ret = set_direct_map_invalid_noflush(k, page)
    KUNIT_ASSERT_EQ(test, ret, 0)
    ret = set_direct_map_default_noflush(k, page)
    KUNIT_ASSERT_EQ(test, ret, 0)
    return page_address(k, page)


def _direct_map_entries(test: Kunit) -> tuple[int, int, int, int]:
    """P4D, PUD, PMD and PTE pointers of a PTE-mapped linear-map page (:func:`_direct_map_page`)."""
    k = test.k
    addr = _direct_map_page(test)
    pgdp = pgtable.pgd_offset_k(k, addr)
    p4dp = pgtable.p4d_offset(k, pgdp, addr)
    pudp = pgtable.pud_offset(k, p4dp, addr)
    pmdp = pgtable.pmd_offset(k, pudp, addr)
    return p4dp, pudp, pmdp, pgtable.pte_offset_kernel(k, pmdp, addr)


def _v6_write_direct_map_pgtables(test: Kunit) -> None:
    """v6 ``write_direct_map_pgtables``: PUD, PMD and PTE of a PTE-mapped linear-map page."""
    _skip_unless_kpkeys(test)
    _, pudp, pmdp, ptep = _direct_map_entries(test)
    # The PGD is skipped: swapper_pg_dir is still writable (mark_rodata_ro); the
    # P4D is skipped as it may be folded.
    _test_write(test, "PUD", pudp)
    _test_write(test, "PMD", pmdp)
    _test_write(test, "PTE", ptep)


def _v7_write_direct_map_pgtables(test: Kunit) -> None:
    """v7 ``write_direct_map_pgtables``: P4D and PUD unless folded, then PMD and PTE."""
    _skip_unless_kpkeys(test)
    k = test.k
    p4dp, pudp, pmdp, ptep = _direct_map_entries(test)
    if not k.pgt.mm_p4d_folded:
        _test_write(test, "P4D", p4dp)
    if not k.pgt.mm_pud_folded:
        _test_write(test, "PUD", pudp)
    _test_write(test, "PMD", pmdp)
    _test_write(test, "PTE", ptep)


def write_kernel_image_pud(test: Kunit) -> None:
    """v6/v7: the PUD of ``&init_mm`` (the image is mapped with static tables)."""
    _skip_unless_kpkeys(test)
    k = test.k
    addr = _init_mm_addr(k)
    pgdp = pgtable.pgd_offset_k(k, addr)
    p4dp = pgtable.p4d_offset(k, pgdp, addr)
    pudp = pgtable.pud_offset(k, p4dp, addr)
    _test_write(test, "PUD", pudp)


def _v6_write_kernel_vmalloc_pte(test: Kunit) -> None:
    """v6/v7 ``write_kernel_vmalloc_pte`` (vmalloc without ``VM_ALLOW_HUGE_VMAP`` is PTE-mapped)."""
    _skip_unless_kpkeys(test)
    _test_write(test, "PTE", _vmalloc_pte(test))


def write_early_kernel_vmap_pte(test: Kunit) -> None:
    """v6 (``CONFIG_ARM64``): the PTE of this CPU's IRQ stack (``irq_stack_ptr``)."""
    _skip_unless_kpkeys(test)
    k = test.k
    stacks: list[int] = list(getattr(k, "irq_stack_ptr", []))
    KUNIT_ASSERT_NE_MSG(test, len(stacks), 0, "No IRQ stack (init_irq_stacks has not run)")
    ptep = get_kernel_pte(k, stacks[k.cpu.cpu_id])
    KUNIT_ASSERT_NOT_NULL_MSG(test, ptep, "Failed to get PTE")
    assert ptep is not None
    _test_write(test, "PTE", ptep)


def write_vmemmap_pmd(test: Kunit) -> None:
    """v7: the PMD covering a freed page's ``struct page`` (the vmemmap may use PMD blocks)."""
    from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
    from kpkeys_sim.kernel.mm.page_alloc import __free_page, alloc_pages

    _skip_unless_kpkeys(test)
    k = test.k
    zone = k.zone
    assert zone is not None
    page = alloc_pages(zone, GFP_KERNEL, 0)
    KUNIT_ASSERT_NOT_NULL(test, page)
    assert page is not None
    __free_page(zone, page)
    pmdp = pgtable.pmd_off_k(k, k.pgt.vmemmap_page(page))
    _test_write(test, "PMD", pmdp)


def _v6_write_user_pmd(test: Kunit) -> None:
    """v6/v7 ``write_user_pmd``: the PMD of a populated user page, same-value write."""
    _skip_unless_kpkeys(test)
    _test_write(test, "PMD", _user_pmd(test))


def kpkeys_hardened_pgtables_v5_suite() -> KunitSuite:
    """RFC v5 17/18: "Hardened pgtables using kpkeys"."""
    return KunitSuite(
        "Hardened pgtables using kpkeys",
        (
            KUNIT_CASE(write_linear_map_pte),
            KunitCase("write_kernel_vmalloc_pte", _v5_write_kernel_vmalloc_pte),
            KunitCase("write_user_pmd", _v5_write_user_pmd),
        ),
        KUNIT_MODULE,
    )


def _v6_v7_suite(write_direct_map_pgtables: KunitFn, fourth: KunitCase) -> KunitSuite:
    """Suite "kpkeys_hardened_pgtables": the cases v6 and v7 share, with their own
    ``write_direct_map_pgtables`` and fourth case (``write_early_kernel_vmap_pte`` in
    v6, ``write_vmemmap_pmd`` in v7)."""
    return KunitSuite(
        "kpkeys_hardened_pgtables",
        (
            KunitCase("write_direct_map_pgtables", write_direct_map_pgtables),
            KUNIT_CASE(write_kernel_image_pud),
            KunitCase("write_kernel_vmalloc_pte", _v6_write_kernel_vmalloc_pte),
            fourth,
            KunitCase("write_user_pmd", _v6_write_user_pmd),
        ),
        KUNIT_MODULE,
    )


def kpkeys_hardened_pgtables_v6_suite() -> KunitSuite:
    """v6: "kpkeys_hardened_pgtables" (``write_early_kernel_vmap_pte``: arm64-only in the
    series; the model runs it on both kernels)."""
    return _v6_v7_suite(_v6_write_direct_map_pgtables, KUNIT_CASE(write_early_kernel_vmap_pte))


def kpkeys_hardened_pgtables_v7_suite() -> KunitSuite:
    """RFC v7: "kpkeys_hardened_pgtables" (no early region, so no early vmap case)."""
    return _v6_v7_suite(_v7_write_direct_map_pgtables, KUNIT_CASE(write_vmemmap_pmd))


def pks_rfc2_suite() -> KunitSuite:
    """Rick Edgecombe's 2021 PKS page tables (``series = "pks-rfc2"``, x86).

    That series' own tests are not ported; the model runs the kpkeys cases
    against it: v6's ``write_direct_map_pgtables`` (its direct map keeps large
    pages, split on demand by CPA) and v7's ``write_vmemmap_pmd`` (its late
    ``init_mm`` walk protects the vmemmap tables).
    """
    return _v6_v7_suite(_v6_write_direct_map_pgtables, KUNIT_CASE(write_vmemmap_pmd))


# --- the model's positive suite ------------------------------------------------------------


def _at_pgtables_level(test: Kunit, ptr: int, value: int) -> int:
    """``copy_to_kernel_nofault`` at ``KPKEYS_LVL_PGTABLES`` (a direct set/restore pair)."""
    k = test.k
    reg = kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)
    try:
        return copy_to_kernel_nofault(k, ptr, _u64(value))
    finally:
        kpkeys_restore_pkey_reg(k, reg)


def guarded_helpers_write(test: Kunit) -> None:
    """The guarded helpers write protected tables from the default level, and restore it.

    ``set_pte``, ``set_pmd`` and (unless folded) ``set_pud`` store the current
    value of a vmalloc area's entries; a direct write at
    ``KPKEYS_LVL_PGTABLES`` succeeds too.  An unguarded helper faults (the case
    then fails as the kthread dies: "try faulted").
    """
    _skip_unless_kpkeys(test)
    k = test.k
    area = _vmalloc_page(test)
    KUNIT_ASSERT_NOT_NULL(test, area)
    assert area is not None
    pgdp = pgtable.pgd_offset_k(k, area)
    pudp = pgtable.pud_offset(k, pgtable.p4d_offset(k, pgdp, area), area)
    pmdp = pgtable.pmd_offset(k, pudp, area)
    ptep = pgtable.pte_offset_kernel(k, pmdp, area)
    before = k.cpu.read_pkey_reg()
    pgtable.set_pte(k, ptep, pgtable.ptep_get(k, ptep))
    pgtable.set_pmd(k, pmdp, pgtable.pmdp_get(k, pmdp))
    if not k.pgt.mm_pud_folded:
        pgtable.set_pud(k, pudp, pgtable.pudp_get(k, pudp))
    KUNIT_EXPECT_EQ(test, k.cpu.read_pkey_reg(), before)
    ret = _at_pgtables_level(test, ptep, pgtable.ptep_get(k, ptep))
    KUNIT_EXPECT_EQ_MSG(test, ret, 0, "Write at KPKEYS_LVL_PGTABLES was prevented")


def freed_pgtable_writable(test: Kunit) -> None:
    """A page-table page is protected while in use and writable once back in the buddy allocator.

    A kernel PTE page (``pte_alloc_one_kernel``) refuses a default-level
    write; ``pte_free_kernel`` gives it back (v5: the dtor resets the pkey; v6
    noblock and v7: ``kpkeys_pgtable_free`` resets it).  The v6 PBA caches
    freed pages with their pkey: they refuse the write until its shrinker
    releases them; the case then writes a page the shrinker released.  The
    pks-rfc2 grouped-page cache likewise, and its shrinker (no block
    awareness) releases any cached page, this one included.
    """
    from kpkeys_sim.kernel.kpkeys.pba import pba_enabled, pba_shrink, pba_state
    from kpkeys_sim.kernel.mm.pgalloc import pte_alloc_one_kernel, pte_free_kernel

    _skip_unless_kpkeys(test)
    k = test.k
    mem_map = k.mem_map
    assert mem_map is not None
    pfn = pte_alloc_one_kernel(k)
    KUNIT_ASSERT_NOT_NULL(test, pfn)
    assert pfn is not None
    va = page_address(k, pfn)
    ret = copy_to_kernel_nofault(k, va, _u64(0))
    KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Write to an in-use page table wasn't prevented")
    pte_free_kernel(k, pfn)
    if k.pks_rfc2 is not None:
        from kpkeys_sim.kernel.arch.x86_pks_pgtables import gpc_shrink_scan

        gpc = k.pks_rfc2.gpc
        KUNIT_EXPECT_TRUE_MSG(test, pfn in gpc.free_list, "Freed PTP not in the grouped cache")
        ret = copy_to_kernel_nofault(k, va, _u64(0))
        KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Write to a cached page table wasn't prevented")
        gpc_shrink_scan(k, gpc, len(gpc.free_list))
        KUNIT_ASSERT_EQ(test, int(mem_map.refcount[pfn - mem_map.base_pfn]), 0)
    elif k.config.series == "v6" and pba_enabled(k):
        pba = pba_state(k)
        KUNIT_EXPECT_TRUE_MSG(test, pfn in pba.cached_list, "Freed PTP not cached by the PBA")
        ret = copy_to_kernel_nofault(k, va, _u64(0))
        KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Write to a cached page table wasn't prevented")
        cached = set(pba.cached_list)
        pba_shrink(k, len(cached))
        released = sorted(cached - set(pba.cached_list))
        free = [p for p in released if int(mem_map.refcount[p - mem_map.base_pfn]) == 0]
        if not free:
            KUNIT_FAIL(test, "The PBA shrinker released no page")
            return
        va = page_address(k, free[0])
    else:
        KUNIT_ASSERT_EQ(test, int(mem_map.refcount[pfn - mem_map.base_pfn]), 0)
    ret = copy_to_kernel_nofault(k, va, _u64(0))
    KUNIT_EXPECT_EQ_MSG(test, ret, 0, "Page freed to the buddy allocator is not writable")


def interrupt_in_guarded_section(test: Kunit) -> None:
    """An IRQ inside a guarded section runs at the default level; the section resumes after.

    The section is a ``kpkeys_hardened_pgtables`` guard scope.  In the
    handler an unguarded write to a protected PTE faults (the
    exception-entry reset, v5 07/18) and a guarded helper still works (it
    takes its own guard); after the return the section's direct write succeeds
    (``kernel_exit`` restored the saved register).
    """
    from kpkeys_sim.kernel.sched import irq_context

    _skip_unless_kpkeys(test)
    k = test.k
    area = _vmalloc_page(test)
    KUNIT_ASSERT_NOT_NULL(test, area)
    assert area is not None
    ptep = get_kernel_pte(k, area)
    KUNIT_ASSERT_NOT_NULL_MSG(test, ptep, "Failed to get PTE")
    assert ptep is not None
    val = pgtable.ptep_get(k, ptep)
    with k.pgtables_guard(k):
        with irq_context(k):
            ret = copy_to_kernel_nofault(k, ptep, _u64(val))
            KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Handler ran at the interrupted level")
            pgtable.set_pte(k, ptep, val)
        ret = copy_to_kernel_nofault(k, ptep, _u64(val))
        KUNIT_EXPECT_EQ_MSG(test, ret, 0, "Section lost its level across the interrupt")


def kpkeys_hardened_pgtables_positive_suite() -> KunitSuite:
    """The model's positive cases (spec §5.1), every version."""
    return KunitSuite(
        "kpkeys_hardened_pgtables_positive",
        (
            KUNIT_CASE(guarded_helpers_write),
            KUNIT_CASE(freed_pgtable_writable),
            KUNIT_CASE(interrupt_in_guarded_section),
        ),
        KUNIT_MODULE,
    )


#: The series' suite of each version.
SUITES = {
    "v5": kpkeys_hardened_pgtables_v5_suite,
    "v6": kpkeys_hardened_pgtables_v6_suite,
    "v7": kpkeys_hardened_pgtables_v7_suite,
    "pks-rfc2": pks_rfc2_suite,
}
#: The positive suite.
POSITIVE_SUITE = kpkeys_hardened_pgtables_positive_suite


def default_suites(series: str) -> list[KunitSuite]:
    """What ``kpkeys-sim kunit`` runs for ``series``: its own suite, then the positive suite."""
    return [SUITES[series](), POSITIVE_SUITE()]


#: The default suite list per series (built on demand by :func:`default_suites`).
DEFAULT_SUITES = default_suites
