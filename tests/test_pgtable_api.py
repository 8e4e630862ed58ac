"""arm64 provides the whole arch-neutral page-table interface (``kernel/arch/pgtable_api``)."""

from __future__ import annotations

import inspect

import pytest

from kpkeys_sim.kernel.arch.arm64_mm import ARM64_MM
from kpkeys_sim.kernel.arch.arm64_pgtable import PgtableGeometry
from kpkeys_sim.kernel.arch.pgtable_api import ArchMm, ArchPgtable


def _members(proto: type) -> list[str]:
    return [n for n in vars(proto) if not n.startswith("_")]


@pytest.mark.parametrize("ps", [4096, 16384, 65536])
def test_arm64_geometry_has_every_archpgtable_member(ps: int) -> None:
    g = PgtableGeometry.for_page_size(ps)
    missing = [n for n in _members(ArchPgtable) if not hasattr(g, n)]
    assert not missing
    for n in _members(ArchPgtable):
        if inspect.isfunction(vars(ArchPgtable)[n]):
            assert callable(getattr(g, n)), n


def test_arm64_mm_has_every_archmm_member() -> None:
    missing = [n for n in _members(ArchMm) if not callable(getattr(ARM64_MM, n, None))]
    assert not missing


def test_table_builders_match_the_populate_descriptors() -> None:
    """``mk_pXd_table`` are the arm64 table | AF | PXN/UXNTable descriptors."""
    from kpkeys_sim.kernel.arch import arm64_pgtable as pt

    g = PgtableGeometry.for_page_size(4096)
    phys = 0x4123_4000
    assert g.mk_pmd_table(phys, False) == phys | pt.PMD_TYPE_TABLE | pt.PMD_TABLE_AF | (
        pt.PMD_TABLE_UXN
    )
    assert g.mk_pmd_table(phys, True) == phys | pt.PMD_TYPE_TABLE | pt.PMD_TABLE_AF | (
        pt.PMD_TABLE_PXN
    )
    assert g.pmd_table(g.mk_pud_table(phys, True)) and g.pmd_table(g.mk_p4d_table(phys, False))
