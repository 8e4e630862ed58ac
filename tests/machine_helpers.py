"""Hand-built translation tables for machine-level tests (no kernel involved)."""

from __future__ import annotations

from kpkeys_sim.machine import Machine

# arm64 leaf attributes: valid page/table, AF, inner-shareable.
ARM64_PAGE = 0x3 | (1 << 10) | (3 << 8)
ARM64_BLOCK = 0x1 | (1 << 10) | (3 << 8)
ARM64_TABLE = 0x3
PXN = 1 << 53
UXN = 1 << 54
NG = 1 << 11


class TableBuilder:
    """Allocates table frames from the top of RAM and maps VAs by hand."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.next_pfn = m.mem.base_pfn + m.mem.nr_frames - 1
        self.root = self.new_table()

    def new_table(self) -> int:
        """A fresh zeroed table frame; returns its physical address."""
        pfn = self.next_pfn
        self.next_pfn -= 1
        self.m.mem.zero_frames(pfn)
        return pfn << self.m.page_shift

    def entry_pa(self, table_pa: int, va: int, level: int) -> int:
        """Physical address of ``va``'s entry in the table at ``level``."""
        return table_pa + 8 * self.m.geometry.index(va, level)

    def map(self, va: int, pa: int, attrs: int, level: int = 3, root: int | None = None) -> int:
        """Map ``va`` to ``pa`` with a leaf at ``level``; returns the leaf entry's PA."""
        g = self.m.geometry
        table = self.root if root is None else root
        x86 = g.fmt == "x86"
        for lv in range(g.start_level, level):
            epa = self.entry_pa(table, va, lv)
            d = self.m.mem.read_u64(epa)
            if not d & 1:
                nt = self.new_table()
                d = nt | (0x7 if x86 else ARM64_TABLE)
                self.m.mem.write_u64(epa, d)
            table = d & ((1 << 48) - 1) & ~((1 << g.page_shift) - 1)
        epa = self.entry_pa(table, va, level)
        self.m.mem.write_u64(epa, pa | attrs)
        return epa


def arm64_leaf(
    level: int, *, ap: int = 0, pkey: int = 0, pxn: bool = True, uxn: bool = True, ng: bool = False
) -> int:
    """Attribute bits of an arm64 leaf descriptor (without the output address)."""
    base = ARM64_PAGE if level == 3 else ARM64_BLOCK
    d = base | (ap << 6) | (pkey << 60)
    if pxn:
        d |= PXN
    if uxn:
        d |= UXN
    if ng:
        d |= NG
    return d
