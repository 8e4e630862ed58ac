"""The campaign's fast paths give exactly the results of the slow ones.

* the recorded-and-replayed trial prefix of the tag-based defenses
  (``security/prefix_replay.py``, ``TagKasan.compile_replay``) against
  running the prefix in every trial;
* the snapshot's generation units (slab caches restored only when their
  ``gen`` moved) against the state they skip;
* the buddy allocator's bulk zeroing of a block-mapped linear map (one
  checked translation per leaf, ``kernel/boot.py``) against page-by-page
  ``clear_page``.
"""

from __future__ import annotations

from typing import Any

import pytest

from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
from kpkeys_sim.kernel.mm.page_alloc import alloc_pages
from kpkeys_sim.machine import CountingInstrument
from kpkeys_sim.machine.tlb import GLOBAL_ASID, TlbEntry
from kpkeys_sim.security import snapshot
from kpkeys_sim.security.campaign import _cell_env, classify, run_cell, trial_rng
from kpkeys_sim.security.scenarios import make_scenario

TAG_DEFENSES = ["kasan-sw-tags", "kasan-hw-tags", "mte-sync", "mte-async"]


@pytest.mark.parametrize("scenario", ["S1", "S11-report", "S11-panic"])
@pytest.mark.parametrize("defense", TAG_DEFENSES)
def test_replayed_prefix_gives_the_same_cell(scenario: str, defense: str) -> None:
    """Every trial's outcome, reason and metrics match running the prefix in the trial.

    S11 runs steps of its own (the decoy, which draws tags) before the prefix:
    the replay happens where the trial would run the prefix.
    """
    fast = run_cell(scenario, defense, 12, 3)
    slow = run_cell(scenario, defense, 12, 3, replay=False)
    assert fast.to_json() == slow.to_json()
    assert fast.reasons == slow.reasons
    assert fast.metrics == slow.metrics


@pytest.mark.parametrize("defense", TAG_DEFENSES)
def test_tag_defenses_use_the_compiled_replay(defense: str) -> None:
    """S1's prefix is recorded, and the vectorised replay checks out against the hooks."""
    env, rp = _cell_env("S1", defense, None, 0, True)
    assert rp is not None
    assert rp._compiled(env) is not None


@pytest.mark.parametrize("scenario", ["S2-PMD", "S11-report"])
def test_prefixes_that_cannot_be_replayed_run_per_trial(scenario: str) -> None:
    """S2's timing side channel draws in the scenario itself; S11's decoy precedes the prefix."""
    env, rp = _cell_env(scenario, "kasan-hw-tags", None, 0, True)
    assert rp is None
    assert not env.state.get("prefix_done")


@pytest.mark.parametrize(
    ("scenario", "defense"),
    [("S1", "none"), ("S1", "kasan-generic"), ("S1", "kasan-hw-tags"), ("S4-A", "none")],
)
def test_snapshot_units_skip_only_untouched_caches(scenario: str, defense: str) -> None:
    """After each trial no cache changed without moving its generation, and restore is exact."""
    env, rp = _cell_env(scenario, defense, None, 1, True)
    sc = make_scenario(scenario)
    df = env.defense
    snap = snapshot.take([env.k, env.state])
    assert snap._units[0], "the slab caches are snapshot units"
    dstate = df.save() if rp is None else rp.pre_state
    env.prefix_replay = rp.bind(env) if rp is not None else None
    for t in range(6):
        snap.restore()
        df.restore(dstate)
        env.begin_trial(trial_rng(1, scenario, defense, t))
        env.trace.step = env.state.get("prefix_steps", 0)
        try:
            classify(env, lambda: sc.trial(env))
        finally:
            env.end_trial()
        assert snap.stale_units() == []
    snap.restore()
    for unit in snap._units[3]:
        assert unit._matches()


def _block_kernel() -> tuple[Any, CountingInstrument]:
    c = CountingInstrument()
    cfg = KernelConfig(
        ram_size=256 << 20,
        nr_cpus=2,
        series="v6",
        kpkeys_hardened_pgtables=False,
        bbml2_noabort=True,
        rodata_full=True,
        linear_map="block",
    )
    return boot(cfg, [c]), c


def _zero_a_dirty_block(per_page: bool) -> tuple[dict[str, int], list[int], int]:
    k, c = _block_kernel()
    m = k.machine
    if per_page:
        m.stage2 = lambda *a: None  # a (no-op) stage-2 check forces page-by-page zeroing
    order = k.pgt.PMD_ORDER
    pfn = alloc_pages(k.zone, GFP_KERNEL, order)
    assert pfn is not None
    for p in range(pfn, pfn + (1 << order), 7):
        m.mem.write_u64(p << m.page_shift, 0xDEAD)
    c.reset()
    k.zone.zero_pages(pfn, 1 << order)
    nonzero = [p for p in range(pfn, pfn + (1 << order)) if m.mem.frame_ro(p).any()]
    return dict(c.counts), nonzero, len(m.tlbs[0])


def test_bulk_zeroing_matches_page_by_page() -> None:
    """Same events, same zeroed frames, same TLB entries as one clear_page per page."""
    bulk = _zero_a_dirty_block(per_page=False)
    ref = _zero_a_dirty_block(per_page=True)
    assert bulk == ref
    assert bulk[1] == []


def test_bulk_zeroing_respects_a_smaller_tlb_entry() -> None:
    """A page the TLB translates through its own (smaller) entry gets its own check."""
    k, _ = _block_kernel()
    m = k.machine
    order = k.pgt.PMD_ORDER
    pfn = alloc_pages(k.zone, GFP_KERNEL, order)
    assert pfn is not None
    for p in range(pfn, pfn + (1 << order)):
        m.mem.write_u64(p << m.page_shift, 1)
    # Plant a 4 KiB TLB entry for one page of the block (as a stale split would leave).
    base = k.pgt.va(pfn << m.page_shift)
    va = base + (5 << m.page_shift)
    e = m.lookup(k.cpu, va)
    assert e.size_shift > m.page_shift
    m.tlbs[k.cpu.cpu_id].fill(
        va, GLOBAL_ASID, TlbEntry(e.desc, 3, m.page_shift, (pfn + 5) << m.page_shift)
    )
    seen: list[int] = []
    real = m.translate

    def translate(cpu: Any, v: int, access: str, **kw: Any) -> int:
        seen.append(v)
        return real(cpu, v, access, **kw)

    m.translate = translate  # type: ignore[method-assign]
    k.zone.zero_pages(pfn, 1 << order)
    assert [(v - base) >> m.page_shift for v in seen] == [0, 5, 6]
    assert not any(m.mem.frame_ro(p).any() for p in range(pfn, pfn + (1 << order)))


@pytest.mark.parametrize("nr", [1, 3, 40])
def test_zero_frame_range_is_zero_frames(nr: int) -> None:
    """The bulk helper zeroes exactly what zero_frames does (both of its strategies)."""
    from kpkeys_sim.machine.memory import PhysicalMemory

    out = []
    for bulk in (False, True):
        mem = PhysicalMemory(1 << 20)
        for p in range(mem.base_pfn + 2, mem.base_pfn + 30, 3):
            mem.write_u64(p << mem.page_shift, p)
        if bulk:
            mem.zero_frame_range(mem.base_pfn + 4, nr)
        else:
            mem.zero_frames(mem.base_pfn + 4, nr)
        out.append({p: int(mem.frame_ro(p)[0]) for p in range(mem.base_pfn, mem.base_pfn + 64)})
    assert out[0] == out[1]
    with pytest.raises(ValueError):
        PhysicalMemory(1 << 20).zero_frame_range(0, 2)
