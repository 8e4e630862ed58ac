"""Booting the model kernel: order, tables, image permissions, page sizes, modes, 64 GiB."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.arch.arm64_pgtable import FIX_PTE
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.linear_map import linear_map_leaves
from kpkeys_sim.kernel.mm.memblock import memblock_is_reserved
from kpkeys_sim.kernel.mm.page import PG_reserved
from kpkeys_sim.machine import CountingInstrument, Fault

MiB = 1 << 20
GiB = 1 << 30


def _boot(**cfg: Any) -> tuple[Kernel, CountingInstrument]:
    c = CountingInstrument()
    return boot(KernelConfig(**cfg), [c]), c


def _check_linear_map(k: Kernel, samples: int = 400) -> None:
    """Random DRAM addresses translate to themselves through the linear map on every CPU."""
    rng = np.random.default_rng(7)
    mem = k.machine.mem
    for i, off in enumerate(rng.integers(0, mem.end - mem.base, samples).tolist()):
        pa = mem.base + (off & ~7)
        with k.on_cpu(i % len(k.machine.cpus)):
            assert k.machine.translate(k.cpu, k.pgt.va(pa), "R") == pa


def _faults(k: Kernel, va: int, access: str) -> str | None:
    try:
        k.machine.translate(k.cpu, va, access)
    except Fault as f:
        return f.kind
    return None


@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
@pytest.mark.parametrize("linear_map", ["block", "pte"])
def test_boot_every_page_size_and_mode(page_size: int, linear_map: str) -> None:
    """Each granule and linear-map mode boots with a correct linear map, image and vmemmap."""
    k, _ = _boot(page_size=page_size, linear_map=linear_map, ram_size=1 * GiB)
    g = k.pgt
    img = k.kimage
    _check_linear_map(k)
    # Kernel image permissions after mark_rodata_ro().
    assert _faults(k, img._text + 0x100, "X") is None
    assert _faults(k, img._text + 0x100, "W") == "permission"
    assert _faults(k, img.start_rodata, "R") is None
    assert _faults(k, img.swapper_pg_dir, "W") == "permission"
    assert _faults(k, img._data + 0x40, "W") is None
    assert _faults(k, img.init_begin, "R") == "translation"  # freed by free_initmem()
    # The linear alias of text/rodata (swapper_pg_dir included) is read-only too.
    assert _faults(k, g.va(g.pa_symbol(img.swapper_pg_dir)), "W") == "permission"
    assert _faults(k, g.va(img.pa + 0x1000), "W") == "permission"
    # The fixmap is empty again, the vmemmap maps struct pages into reserved memory.
    assert _faults(k, g.fix_to_virt(FIX_PTE), "R") == "translation"
    pfn = k.machine.mem.base_pfn + 12345
    pa = k.machine.translate(k.cpu, g.vmemmap_page(pfn), "R")
    assert k.memblock is not None and memblock_is_reserved(k.memblock, pa)
    assert k.mem_map is not None and k.mem_map.test_flag(pa >> g.PAGE_SHIFT, PG_reserved)
    assert k.static_pgtables and k.fixmap_pgtables and k.vmemmap_pgtables
    assert not k.rodata_is_rw and k.mmu_enabled
    assert all(cpu.poe == 1 for cpu in k.machine.cpus)


def test_boot_log_follows_the_kernel_order() -> None:
    """The boot log has one line per step, in start_kernel's order."""
    k, _ = _boot(ram_size=256 * MiB)
    steps = [
        "Booting Linux",
        "early_map_kernel",
        "early_fixmap_init",
        "arm64_memblock_init",
        "paging_init",
        "sparse_init",
        "smp_prepare_boot_cpu",
        "mem_init",
        "kmem_cache_init",
        "smp:",
        "do_initcalls",
        "Freeing unused kernel memory",
        "Write protecting",
    ]
    idx = [next(i for i, line in enumerate(k.log) if line.startswith(s)) for s in steps]
    assert idx == sorted(idx)


def test_boot_is_deterministic() -> None:
    """Two boots of one config give identical event counts and identical tables."""
    a, ca = _boot(ram_size=512 * MiB, series="v6")
    b, cb = _boot(ram_size=512 * MiB, series="v6")
    assert ca.snapshot() == cb.snapshot()
    assert linear_map_leaves(a) == linear_map_leaves(b)
    assert a.static_pgtables == b.static_pgtables
    assert a.log == b.log


@pytest.mark.parametrize("series", ["v5", "v6", "v7"])
@pytest.mark.parametrize("has_pkeys", [True, False])
def test_every_series_boots(series: str, has_pkeys: bool) -> None:
    """Each kpkeys series boots (with and without POE) and the linear map stays correct."""
    k, c = _boot(ram_size=512 * MiB, series=series, cpu_has_pkeys=has_pkeys)
    _check_linear_map(k, 100)
    assert all(cpu.poe == int(has_pkeys) for cpu in k.machine.cpus)
    if not has_pkeys:
        assert c.counts["pkey_reg_write"] == 0


def test_without_pkeys_feature_tables_stay_default() -> None:
    """kpkeys_hardened_pgtables off: no pkey is ever set on a page table."""
    k, c = _boot(ram_size=256 * MiB, kpkeys_hardened_pgtables=False)
    assert c.counts["linear_map_split"] == 0 and c.counts["kpkeys_set_level"] == 0
    g = k.pgt
    for pfn in k.static_pgtables:
        pa = k.machine.translate(k.cpu, g.va(pfn << g.PAGE_SHIFT), "W")
        assert pa == pfn << g.PAGE_SHIFT


def test_boot_rejects_what_it_cannot_model() -> None:
    """Tiny RAM and x86 with large pages are refused with one-line messages naming the value."""
    with pytest.raises(ToolError, match=r"^bad value 33554432 for 'ram_size'"):
        boot(KernelConfig(ram_size=32 * MiB))
    with pytest.raises(ToolError, match=r"^bad value 33554432 for 'ram_size'"):
        boot(KernelConfig(arch="x86", ram_size=32 * MiB))
    with pytest.raises(ToolError, match=r"^bad value 65536 for 'page_size'"):
        boot(KernelConfig(arch="x86", page_size=65536))


def test_boot_dispatches_on_arch() -> None:
    """``boot()`` runs the configured architecture's boot: the machine format says which."""
    assert boot(KernelConfig(ram_size=128 * MiB)).machine.fmt == "arm64"
    assert boot(KernelConfig(arch="x86", ram_size=128 * MiB)).machine.fmt == "x86"


def test_secondary_cpus_share_swapper_and_see_flushes() -> None:
    """Every CPU walks swapper_pg_dir; a kernel TLB flush reaches the other CPUs' TLBs."""
    k, _ = _boot(ram_size=256 * MiB, nr_cpus=4, kpkeys_hardened_pgtables=False)
    roots = {cpu.ttbr1 for cpu in k.machine.cpus}
    assert roots == {k.pgt.pa_symbol(k.swapper_pg_dir)}
    _check_linear_map(k, 40)


def test_64gib_block_boot_is_correct() -> None:
    """A 64 GiB 4K machine boots block-mapped: 63 PUD blocks, two linear-map tables."""
    k, _ = _boot(ram_size=64 * GiB, kpkeys_hardened_pgtables=False)
    leaves = linear_map_leaves(k)
    assert leaves["pud"] == 63 and leaves["pgtable_pages"] == 2
    assert leaves["contpmd"] == 496 and leaves["pmd"] == 16
    _check_linear_map(k, 300)
    assert k.zone is not None and k.zone.nr_free > (62 * GiB) >> 12  # minus 1 GiB vmemmap


def test_pte_mode_has_one_table_per_pmd() -> None:
    """linear_map="pte" on 4 GiB: every 2 MiB outside the kernel alias is one PTE table."""
    k, c = _boot(ram_size=4 * GiB, linear_map="pte", kpkeys_hardened_pgtables=False)
    leaves = linear_map_leaves(k)
    img = k.kimage
    alias = img.init_begin - img._text
    assert leaves["tables_pte"] == (4 * GiB - alias) // (2 * MiB)
    assert leaves["pte"] == (4 * GiB - alias) // 4096
    # each table was mapped at FIX_PTE, cleared and unmapped: one TLBI per table at least
    assert c.counts["tlbi_va"] >= leaves["tables_pte"]
