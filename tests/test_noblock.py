"""The noblock allocator (spec kpkeys-series.md §4.11; v6 fallback, v7 12/24).

alloc: ``alloc_pages`` + ``set_memory_pkey(PGTABLES)``, free on failure; free:
``set_memory_pkey(DEFAULT)`` (WARN on error) then free.  Each call is one
leaf update per page plus one kernel TLB range flush.
"""

from __future__ import annotations

import pytest

from kpkeys_sim.kernel.arch.arm64_pgtable import page_address
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys import noblock as N
from kpkeys_sim.kernel.kpkeys import pba as P
from kpkeys_sim.kernel.mm.gfp import GFP_PGTABLE_KERNEL, GFP_PGTABLE_USER
from kpkeys_sim.kernel.mm.pgalloc import pagetable_alloc, pagetable_free
from kpkeys_sim.machine import CountingInstrument, Fault
from kpkeys_sim.machine.events import TLBI_ALL, TLBI_VA
from kpkeys_sim.machine.mmu import walk

MiB = 1 << 20


def booted(counter: CountingInstrument | None = None, **changes: object) -> Kernel:
    """A booted kernel (256 MiB, default v6 config plus ``changes``); boot warnings dropped."""
    cfg = KernelConfig(ram_size=256 * MiB, nr_cpus=2).replace(**changes)
    k = boot(cfg, instruments=[counter] if counter else [])
    k.warnings.clear()
    return k


def lm_leaf(k: Kernel, pfn: int) -> tuple[int, int]:
    """(descriptor, level) of the linear-map leaf of ``pfn`` (a physical walk)."""
    w, _ = walk(k.machine.mem, k.machine.geometry, k.machine.cpus[0].ttbr1, page_address(k, pfn))
    return w.desc, w.level


def poindex(k: Kernel, pfn: int) -> int:
    """The POIndex of ``pfn``'s linear-map leaf."""
    return (lm_leaf(k, pfn)[0] >> 60) & 7


def flushes(c: CountingInstrument) -> tuple[int, int]:
    """(TLBI by VA, TLBI all) counted so far."""
    return c.counts[TLBI_VA], c.counts[TLBI_ALL]


@pytest.mark.parametrize("order", [0, 2])
def test_v7_alloc_sets_and_free_resets_the_pkey(order: int) -> None:
    """v7 (PTE-mapped): alloc gives every page pkey 1, free gives pkey 0 back; one flush each."""
    c = CountingInstrument()
    k = booted(c, series="v7")
    zone = k.zone
    assert zone is not None
    n = 1 << order
    f0 = flushes(c)
    pfn = N.noblock_pgtable_alloc(k, GFP_PGTABLE_KERNEL, order)
    assert pfn is not None
    assert flushes(c) == (f0[0] + n, f0[1])  # one flush_tlb_kernel_range: a TLBI per page
    for p in range(pfn, pfn + n):
        assert lm_leaf(k, p)[1] == 3 and poindex(k, p) == 1
    with pytest.raises(Fault):
        k.machine.store_u64(k.cpu, page_address(k, pfn), 1)
    nr_free = zone.nr_free
    f1 = flushes(c)
    N.noblock_pgtable_free(k, pfn, order)
    assert flushes(c) == (f1[0] + n, f1[1])
    assert zone.nr_free == nr_free + n
    assert all(poindex(k, p) == 0 for p in range(pfn, pfn + n))
    assert k.warnings == []


def test_v7_pagetable_alloc_goes_through_noblock() -> None:
    """v7: pagetable_alloc/free reach the noblock allocator with their order."""
    c = CountingInstrument()
    k = booted(c, series="v7")
    a0 = c.counts[N.NOBLOCK_ALLOC]
    pfn = pagetable_alloc(k, GFP_PGTABLE_USER, 1)
    assert pfn is not None and c.counts[N.NOBLOCK_ALLOC] == a0 + 2
    assert poindex(k, pfn) == poindex(k, pfn + 1) == 1
    pagetable_free(k, pfn, 1)
    assert c.counts[N.NOBLOCK_FREE] >= 2 and poindex(k, pfn) == 0


def test_v6_pte_only_linear_map_uses_noblock() -> None:
    """v6 on a PTE-only linear map: the PBA stays off and PTPs come from the noblock allocator."""
    c = CountingInstrument()
    k = booted(c, linear_map="pte")
    assert not P.pba_enabled(k)
    a0 = c.counts[N.NOBLOCK_ALLOC]
    pfn = pagetable_alloc(k, GFP_PGTABLE_KERNEL, 0)
    assert pfn is not None and c.counts[N.NOBLOCK_ALLOC] == a0 + 1 and poindex(k, pfn) == 1
    pagetable_free(k, pfn, 0)
    assert poindex(k, pfn) == 0


def test_alloc_failure_frees_the_page() -> None:
    """If the pkey cannot be set (a block mapping that cannot split) the page is freed, NULL."""
    k = booted(bbml2_noabort=False, rodata_full=False)
    zone = k.zone
    assert zone is not None
    nr_free = zone.nr_free
    assert N.noblock_pgtable_alloc(k, GFP_PGTABLE_KERNEL, 0) is None
    assert zone.nr_free == nr_free
    assert k.warnings == []


def test_free_failure_warns_and_still_frees() -> None:
    """If the pkey cannot be reset the free WARNs (result ignored) and frees the page anyway."""
    from kpkeys_sim.kernel.mm.page_alloc import alloc_pages

    k = booted(bbml2_noabort=False, rodata_full=False)
    zone = k.zone
    assert zone is not None
    pfn = alloc_pages(zone, GFP_PGTABLE_KERNEL, 0)
    assert pfn is not None
    nr_free = zone.nr_free
    N.noblock_pgtable_free(k, pfn, 0)
    assert zone.nr_free == nr_free + 1
    assert len(k.warnings) == 1 and k.warnings[0].startswith("noblock_pgtable_free")
    assert k.warnings[0].endswith(": -22")
