"""Rick Edgecombe's PKS write-protected page tables, RFC v2 (spec kpkeys-series.md §9).

``config.series = "pks-rfc2"`` on the x86 kernel: the grouped-page cache, the
direct-map split-table reserve, the late ``init_mm`` walk, and the defense.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.cli_helpers import run_cli

from kpkeys_sim.errors import ToolError
from kpkeys_sim.kernel.arch import x86_pks_pgtables as rfc2
from kpkeys_sim.kernel.arch.x86_pgtable import _PAGE_PSE, PTE_PFN_MASK
from kpkeys_sim.kernel.arch.x86_set_memory import (
    PG_LEVEL_2M,
    PG_LEVEL_4K,
    lookup_address,
    set_memory_ro,
)
from kpkeys_sim.kernel.arch.x86_set_memory import (
    set_memory_pkey as x86_set_memory_pkey,
)
from kpkeys_sim.kernel.arch.x86_setup import X86Mm, boot_x86
from kpkeys_sim.kernel.config import KernelConfig, config_from_mapping
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.page_alloc import alloc_pages
from kpkeys_sim.kernel.mm.pgtable import ptep_get
from kpkeys_sim.security.campaign import run_cell
from kpkeys_sim.security.defenses import DEFENSE_ORDER

MiB = 1 << 20
GiB = 1 << 30


def _boot(ram: int = 256 * MiB, **kw: object) -> Kernel:
    return boot_x86(KernelConfig(arch="x86", ram_size=ram, series="pks-rfc2", **kw))  # type: ignore[arg-type]


def _state(k: Kernel) -> rfc2.PksRfc2:
    st = rfc2.pks_rfc2_state(k)
    assert st is not None
    return st


def _tables(k: Kernel) -> set[int]:
    """pfns of every page table reachable from init_top_pgt (hardware view, both halves)."""
    g = k.pgt
    mem = k.machine.mem
    out: set[int] = set()

    def rec(pa: int, level: int) -> None:
        out.add(pa >> 12)
        if level == 3:
            return
        e = mem.frame_ro(pa >> 12)
        for i in range(512):
            d = int(e[i])
            if d & 1 and not (level in (1, 2) and d & _PAGE_PSE):
                rec(d & PTE_PFN_MASK, level + 1)

    rec(g.pa_symbol(k.swapper_pg_dir), 0)
    return out


def _pkey(k: Kernel, pfn: int) -> int:
    return rfc2.direct_map_pkey(k, pfn)


@pytest.fixture(scope="module")
def k256() -> Kernel:
    return _boot()


# --- configuration ---------------------------------------------------------------------------


def test_config_pks_rfc2_is_x86_only() -> None:
    with pytest.raises(ToolError, match="pks-rfc2"):
        config_from_mapping({"series": "pks-rfc2"})
    with pytest.raises(ToolError, match="pks-rfc2"):
        KernelConfig().replace(series="pks-rfc2")
    cfg = config_from_mapping({"arch": "x86", "series": "pks-rfc2"})
    assert cfg.series == "pks-rfc2"


def _cli(args: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of the CLI run in-process."""
    code, _out, err = run_cli(args)
    return code, err


def test_cli_bad_combination_exits_2(tmp_path: Any) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('series = "pks-rfc2"\n', encoding="utf-8")
    code, err = _cli(["kunit", "--config", str(cfg)])
    assert code == 2 and "pks-rfc2" in err and err.count("\n") == 1


def test_kunit_on_pks_rfc2_passes() -> None:
    """The kpkeys cases run against the 2021 series (x86): all pass, exit 0."""
    code, _ = _cli(["kunit", "--arch", "x86", "--series", "pks-rfc2"])
    assert code == 0


def test_kunit_vmemmap_case_fails_without_the_late_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: without the late init_mm walk the vmemmap PMD stays writable."""
    from kpkeys_sim.kunit.runner import run_kunit

    monkeypatch.setattr(rfc2, "kernel_pgtable_walk", lambda k: iter(()))
    cfg = KernelConfig(arch="x86", series="pks-rfc2", ram_size=256 * MiB)
    result = run_kunit(cfg)
    assert "not ok 4 write_vmemmap_pmd" in result.ktap
    assert not result.ok


def test_kunit_pks_rfc2_on_arm64_is_bad_input() -> None:
    code, err = _cli(["kunit", "--series", "pks-rfc2"])
    assert code == 2 and "pks-rfc2" in err and err.count("\n") <= 1


# --- boot and the reserve --------------------------------------------------------------------


def test_boot_logs_the_reserve_and_warns_nothing(k256: Kernel) -> None:
    assert not k256.warnings
    log = "\n".join(k256.log)
    assert "reserved 128 direct-map split tables (512 KiB) for 256 MiB" in log
    assert "boot tables protected by the init_mm walk" in log
    st = _state(k256)
    assert st.installed and st.reserve.initialized and st.reserve.reserved == 128


@pytest.mark.parametrize(
    ("size", "pages"), [(256 * MiB, 128), (1 * GiB, 1 + 512), (4 * GiB, 4 + 2048)]
)
def test_reserve_size_formula(size: int, pages: int) -> None:
    assert rfc2.reserve_size_pages(size) == pages


def test_reserve_4g_is_about_8_mib() -> None:
    k = _boot(4 * GiB)
    st = _state(k)
    assert st.reserve.reserved == 2052
    assert "reserved 2052 direct-map split tables (8208 KiB) for 4096 MiB" in "\n".join(k.log)
    # Every table still in the reserve carries the page-table key after init.
    assert all(_pkey(k, p) == 1 for p in st.reserve.tables_cache[::97])


# --- the grouped-page cache ------------------------------------------------------------------


def _record_set_memory_pkey(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    calls: list[tuple[int, int, int]] = []
    real = x86_set_memory_pkey

    def rec(k: Kernel, addr: int, numpages: int, pkey: int) -> int:
        calls.append((addr, numpages, pkey))
        return real(k, addr, numpages, pkey)

    monkeypatch.setattr(rfc2, "set_memory_pkey", rec)
    return calls


def test_refill_gives_512_pages_one_pkey_call_and_mru_reuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    k = _boot()
    gpc = rfc2.GroupedPageCache()
    calls = _record_set_memory_pkey(monkeypatch)
    first = rfc2.get_grouped_page(k, gpc)
    assert first is not None and first % 512 == 0
    assert calls == [(k.pgt.va(first << 12), 512, 1)]
    assert gpc.nr_cached == 511 and gpc.stats.block_refills == 1
    assert all(_pkey(k, first + i) == 1 for i in (0, 1, 255, 511))
    # MRU: the last page listed comes out first; a freed page comes back next.
    nxt = rfc2.get_grouped_page(k, gpc)
    assert nxt == first + 511
    rfc2.free_grouped_page(k, gpc, first)
    assert rfc2.get_grouped_page(k, gpc) == first
    assert len(calls) == 1  # no pkey change on reuse


def test_refill_falls_back_to_one_page(monkeypatch: pytest.MonkeyPatch) -> None:
    k = _boot()
    gpc = rfc2.GroupedPageCache()
    real = alloc_pages
    monkeypatch.setattr(
        rfc2, "alloc_pages", lambda z, gfp, order: None if order else real(z, gfp, order)
    )
    calls = _record_set_memory_pkey(monkeypatch)
    pfn = rfc2.get_grouped_page(k, gpc)
    assert pfn is not None and gpc.nr_cached == 0 and gpc.stats.single_refills == 1
    assert calls == [(k.pgt.va(pfn << 12), 1, 1)] and _pkey(k, pfn) == 1


def test_shrinker_frees_at_order_0_resets_pkey_and_fragments_the_block() -> None:
    k = _boot()
    gpc = rfc2.GroupedPageCache()
    head = rfc2.get_grouped_page(k, gpc)
    assert head is not None
    va = k.pgt.va(head << 12)
    assert lookup_address(k, va)[1] == PG_LEVEL_2M  # one 2M leaf, pkey 1 in place
    splits = k.linear_map_stats.get("split_pmd", 0)
    mem_map = k.mem_map
    assert mem_map is not None
    freed = rfc2.gpc_shrink_scan(k, gpc, 1)
    assert freed == 1 and gpc.nr_cached == 510
    victim = head + 1  # the oldest listed page, not a whole block
    assert int(mem_map.refcount[victim - mem_map.base_pfn]) == 0
    assert _pkey(k, victim) == 0
    # The 2 MiB group is now fragmented: its leaf was split to reset one page.
    assert lookup_address(k, va)[1] == PG_LEVEL_4K
    assert k.linear_map_stats.get("split_pmd", 0) == splits + 1
    assert _pkey(k, head) == 1 and _pkey(k, head + 2) == 1


def test_shrinker_is_driven_by_memory_pressure(k256: Kernel) -> None:
    st = _state(k256)
    zone = k256.zone
    assert zone is not None and st.gpc.shrinker in zone.shrinkers
    before = st.gpc.nr_cached
    assert before > 0
    freed = st.gpc.shrinker(16) if st.gpc.shrinker else 0
    assert 0 < freed <= before and st.gpc.nr_cached == before - freed


# --- the late walk ---------------------------------------------------------------------------


@pytest.mark.parametrize("ram", [256 * MiB, 4 * GiB])
def test_late_walk_leaves_no_unprotected_kernel_table(ram: int) -> None:
    k = _boot(ram)
    assert isinstance(k.arch_mm, X86Mm)
    img = k.arch_mm.image
    g = k.pgt
    tables = _tables(k)
    unprotected = {p for p in tables if _pkey(k, p) != 1}
    assert unprotected == set()
    assert set(k.vmemmap_pgtables) <= tables
    fixmap = {g.pa_symbol(v) >> 12 for v in img.fixmap_pgtables}
    assert fixmap <= tables  # the walk reaches (and protected) the fixmap tables


def test_negative_control_without_the_walk_vmemmap_tables_stay_unprotected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rfc2, "kernel_pgtable_walk", lambda k: iter(()))
    k = _boot()
    unprotected = {p for p in _tables(k) if _pkey(k, p) != 1}
    assert set(k.vmemmap_pgtables) <= unprotected


# --- CPA splits after init ---------------------------------------------------------------------


def test_cpa_split_after_init_takes_a_protected_table_from_the_reserve() -> None:
    k = _boot()
    st = _state(k)
    zone = k.zone
    assert zone is not None
    # A fresh 2 MiB block: its direct-map leaf is a 2M page that set_memory_ro must split.
    block = alloc_pages(zone, 0, 9)
    assert block is not None
    va = k.pgt.va(block << 12)
    assert lookup_address(k, va)[1] == PG_LEVEL_2M
    left = len(st.reserve.tables_cache)
    top = st.reserve.tables_cache[-1]
    assert set_memory_ro(k, va, 1) == 0
    kpte, level = lookup_address(k, va)
    assert level == PG_LEVEL_4K and kpte is not None
    assert len(st.reserve.tables_cache) == left - 1
    table = k.pgt.pa(kpte) >> 12
    assert table == top and _pkey(k, table) == 1
    assert ptep_get(k, kpte) & 2 == 0  # read-only now
    assert not k.warnings


def test_empty_reserve_after_init_warns_and_uses_an_unprotected_page() -> None:
    k = _boot()
    st = _state(k)
    st.reserve.tables_cache.clear()
    zone = k.zone
    assert zone is not None
    block = alloc_pages(zone, 0, 9)
    assert block is not None
    va = k.pgt.va(block << 12)
    assert set_memory_ro(k, va, 1) == 0
    assert k.warnings and st.reserve.unprotected_fallbacks == 1
    kpte, _ = lookup_address(k, va)
    assert kpte is not None and _pkey(k, k.pgt.pa(kpte) >> 12) == 0


# --- the defense -------------------------------------------------------------------------------


def test_defense_order_has_pks_rfc2_after_pks() -> None:
    i = DEFENSE_ORDER.index("pks")
    assert DEFENSE_ORDER[i + 1] == "pks-rfc2"


def test_vmemmap_pmd_prevented_under_pks_rfc2_not_under_pks() -> None:
    rfc = run_cell("S5-vmemmap-pmd", "pks-rfc2", 2, 0)
    pks = run_cell("S5-vmemmap-pmd", "pks", 2, 0)
    assert rfc.prevented == 2, rfc.explanation()
    assert pks.succeeded == 2, pks.explanation()


def test_fixmap_pte_prevented_under_pks_rfc2_not_under_pks() -> None:
    assert run_cell("S5-fixmap-pte", "pks-rfc2", 2, 0).prevented == 2
    assert run_cell("S5-fixmap-pte", "pks", 2, 0).succeeded == 2


def test_grouped_cache_metadata_splice_gets_past_the_late_walk() -> None:
    """S6-A: the cache's list lives in ``struct page`` (vmemmap, never pkey-protected) and
    its pages are trusted to carry the key, so a spliced default-pkey page becomes a
    page table the UAF write can forge; the late walk has run long before."""
    cell = run_cell("S6-A", "pks-rfc2", 2, 0)
    assert cell.succeeded == 2, cell.explanation()
    assert any("grouped-page cache" in reason for _, reason in cell.reasons)
