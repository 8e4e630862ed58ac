"""A booted-enough kernel for kpkeys tests: one kernel data page mapped with a chosen pkey.

The translation tables are written by hand with ``machine_helpers.TableBuilder``
(physical writes, as firmware would): one kernel VA → one data frame, leaf
AP = 00 (EL1 read/write) on arm64 or P|RW supervisor on x86, with the pkey
in the leaf.  Every CPU's ``ttbr1`` points at the root, and the pkey feature
is enabled on every CPU the way boot would (``cpu_enable_poe`` /
``cpu_enable_pks``), unless the machine has no pkeys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kpkeys_sim.kernel.arch import cpu_enable_pkeys
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.machine import CountingInstrument, Machine
from machine_helpers import TableBuilder, arm64_leaf

#: A kernel (TTBR1 / upper-half) virtual address for each translation format.
KERNEL_VA = {"arm64": 0xFFFF_0000_1234_5000, "x86": 0xFFFF_8880_0123_4000}
_X86_P_RW = 0x3


@dataclass
class MappedPage:
    """A kernel data page mapped by hand."""

    va: int
    pa: int
    leaf_pa: int


def map_kernel_page(m: Machine, pkey: int, va: int | None = None) -> MappedPage:
    """Map one kernel VA to a fresh frame with ``pkey``; point every CPU's ``ttbr1`` at it."""
    tb = TableBuilder(m)
    va = KERNEL_VA[m.fmt] if va is None else va
    data_pa = tb.new_table()
    attrs = arm64_leaf(3, ap=0, pkey=pkey) if m.fmt == "arm64" else _X86_P_RW
    leaf_pa = tb.map(va, data_pa, m.arch.desc_set_pkey(attrs, pkey))
    for cpu in m.cpus:
        cpu.ttbr1 = tb.root
    return MappedPage(va, data_pa, leaf_pa)


def set_page_pkey(m: Machine, page: MappedPage, pkey: int) -> None:
    """Rewrite the leaf's pkey (a physical write) and invalidate the TLBs for the page."""
    m.mem.write_u64(page.leaf_pa, m.arch.desc_set_pkey(m.mem.read_u64(page.leaf_pa), pkey))
    m.tlbi_va(page.va)


@dataclass
class KBed:
    """A kernel on a fresh machine, a pkey-1 page, and an event counter."""

    k: Kernel
    page: MappedPage
    counter: CountingInstrument

    @property
    def m(self) -> Machine:
        return self.k.machine


def make_kbed(
    arch: str = "arm64", *, has_pkeys: bool = True, nr_cpus: int = 2, pkey: int = 1, **config: Any
) -> KBed:
    """A machine + kernel with ``config`` overrides, pkeys enabled on every CPU, counter reset."""
    counter = CountingInstrument()
    m = Machine(
        arch=arch, ram_size=16 << 20, nr_cpus=nr_cpus, has_pkeys=has_pkeys, instruments=[counter]
    )
    k = Kernel(m, KernelConfig(arch=arch, nr_cpus=nr_cpus, cpu_has_pkeys=has_pkeys, **config))
    page = map_kernel_page(m, pkey)
    if has_pkeys:
        for cpu in m.cpus:
            cpu_enable_pkeys(k, cpu)
    counter.reset()
    return KBed(k, page, counter)
