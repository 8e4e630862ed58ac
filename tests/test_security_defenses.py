"""Each defense's mechanism on its own: tag checks, quarantine, stage-2 traps, overlay faults."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from tests.strategies import hw_tags, sw_tags

from kpkeys_sim.security import groom, kapi
from kpkeys_sim.security.campaign import boot_env
from kpkeys_sim.security.defenses.hyp import HypS2
from kpkeys_sim.security.defenses.kasan import GenericKasan, HwTagsKasan, SwTagsKasan
from kpkeys_sim.security.env import AttackEnv
from kpkeys_sim.security.outcome import Detected, Prevented
from kpkeys_sim.security.pointers import KASAN_TAG_KERNEL, canonical, pointer_tag, set_tag
from kpkeys_sim.security.primitives import ArbitraryWrite, StalePageRef, UafWrite
from kpkeys_sim.security.scenarios.common import forge_live_pte


def _env(defense: str | object, scenario: str = "S8-a") -> AttackEnv:
    env = boot_env(scenario, defense)  # type: ignore[arg-type]
    env.begin_trial(np.random.default_rng(1))
    return env


def test_hw_tag_mismatch_on_use_after_free() -> None:
    """A stale HW-tagged pointer to a freed object reports a tag mismatch (memory tag 0xFE)."""
    env = _env("kasan-hw-tags")
    obj = groom.kmalloc(env, 64)
    assert 0xF0 <= pointer_tag(obj.ptr) <= 0xFD
    env.kread(obj.ptr, 8)
    assert env.trace.detections == []
    groom.kfree(env, obj)
    UafWrite(obj).write_u64(env, 0, 1)
    assert len(env.trace.detections) == 1
    assert "memory tag 0xfe" in env.trace.detections[0].what


def test_match_all_pointer_is_never_checked() -> None:
    """An untagged (0xFF) pointer to freed memory is not reported (match-all)."""
    env = _env("kasan-sw-tags")
    obj = groom.kmalloc(env, 64)
    groom.kfree(env, obj)
    env.kwrite(set_tag(canonical(obj.ptr), KASAN_TAG_KERNEL), b"\0" * 8)
    assert env.trace.detections == []


@settings(max_examples=20, deadline=None)
@given(sw_tags, sw_tags)
def test_sw_tags_compare_all_eight_bits(ptag: int, mtag: int) -> None:
    """Software tags report exactly when the 8-bit pointer and memory tags differ."""
    env = _env("kasan-sw-tags")
    obj = groom.kmalloc(env, 64)
    df = env.defense
    assert isinstance(df, SwTagsKasan)
    assert df.tags is not None
    df.tags.set_range(obj.pa, 64, mtag)
    env.kread(set_tag(obj.ptr, ptag), 8)
    assert bool(env.trace.detections) == (ptag != mtag)


@settings(max_examples=20, deadline=None)
@given(hw_tags, hw_tags)
def test_hw_tags_compare_four_bits(ptag: int, mtag: int) -> None:
    """MTE compares the low nibble only: 0xF3 and 0x03 match, 0xF3 and 0xF4 do not."""
    env = _env("kasan-hw-tags")
    obj = groom.kmalloc(env, 64)
    df = env.defense
    assert isinstance(df, HwTagsKasan)
    assert df.tags is not None
    df.tags.set_range(obj.pa, 64, mtag & 0x0F)
    env.kread(set_tag(obj.ptr, ptag), 8)
    assert bool(env.trace.detections) == ((ptag ^ mtag) & 0xF != 0)


def test_hw_tags_one_shot_turns_checking_off() -> None:
    """After the first HW_TAGS report the CPU stops checking: a second bug goes unreported."""
    env = _env("kasan-hw-tags")
    a = groom.kmalloc(env, 64)
    b = groom.kmalloc(env, 64)
    groom.kfree(env, a)
    groom.kfree(env, b)
    UafWrite(a).write_u64(env, 0, 1)
    UafWrite(b).write_u64(env, 0, 1)
    assert len(env.trace.detections) == 1


def test_mte_sync_panics_before_the_write() -> None:
    """mte-sync (kasan.fault=panic) stops the kernel at the faulting access: nothing lands."""
    env = _env("mte-sync")
    obj = groom.kmalloc(env, 64)
    groom.kfree(env, obj)
    with pytest.raises(Detected):
        UafWrite(obj).write_u64(env, 0, 0x4141)
    assert not env.trace.write_landed


def test_mte_async_reports_at_the_next_kernel_entry() -> None:
    """mte-async lets the access complete and reports it at the next checkpoint."""
    env = _env("mte-async")
    obj = groom.kmalloc(env, 64)
    groom.kfree(env, obj)
    UafWrite(obj).write_u64(env, 0, 0x4141)
    assert env.trace.write_landed and env.trace.detections == []
    with pytest.raises(Detected) as info, env.syscall():
        pass
    assert info.value.detection.write_landed


def test_stale_page_pointer_carries_the_current_page_tag() -> None:
    """page_address() of a reallocated page carries the new page tag, so the write matches."""
    env = _env("kasan-hw-tags")
    pfn = kapi.alloc_page(env, 0xCC0)
    assert pfn is not None
    stale = StalePageRef(pfn)
    old_tag = pointer_tag(stale.pointer(env))
    kapi.free_page(env, pfn)
    again = kapi.alloc_page(env, 0xCC0)
    assert again == pfn
    stale.write_u64(env, 0, 7)
    assert env.trace.detections == []
    assert 0xF0 <= old_tag <= 0xFD


def test_generic_quarantine_delays_reuse() -> None:
    """Generic KASAN keeps freed objects out of the slab until its quarantine overflows."""
    env = _env("kasan-generic")
    cache = groom.cache_of(env, "kmalloc-256")
    objs = groom.spray(env, 256, 8)
    before = cache.nr_inuse
    for o in objs:
        groom.kfree(env, o)
    assert cache.nr_inuse == before
    UafWrite(objs[0]).write_u64(env, 0, 1)
    assert "slab-use-after-free" in env.trace.detections[0].what


def test_generic_without_quarantine_frees_at_once() -> None:
    """With a zero-byte quarantine the free reaches the slab allocator immediately."""
    env = _env(GenericKasan(quarantine_bytes=0))
    cache = groom.cache_of(env, "kmalloc-256")
    objs = groom.spray(env, 256, 8)
    before = cache.nr_inuse
    for o in objs:
        groom.kfree(env, o)
    assert cache.nr_inuse == before - 8


def test_stage2_traps_a_stray_write_to_a_page_table() -> None:
    """hyp-s2 refuses a plain kernel store to a page-table page (stage-2 permission fault)."""
    env = _env("hyp-s2")
    with pytest.raises(Prevented, match="stage-2"):
        forge_live_pte(env, env.state["live"])


def test_stage2_lets_a_hypercall_write_through_and_counts_it() -> None:
    """Inside a page-table helper (a hypercall) the same store is allowed and counted."""
    env = _env("hyp-s2")
    k = env.k
    with k.pgtables_guard(k):
        forge_live_pte(env, env.state["live"])
    assert env.trace.metrics["hyp_traps"] >= 1


def test_stage2_negative_control() -> None:
    """With the stage-2 check removed, the stray write lands."""

    class NoStage2(HypS2):
        def is_protected(self, pfn: int) -> bool:
            return False

    env = _env(NoStage2())
    forge_live_pte(env, env.state["live"])
    assert env.trace.write_landed


def test_overlay_fault_on_a_pkey_protected_table() -> None:
    """kpkeys-v7: a store to a PTE table at the default level is an overlay fault on pkey 1."""
    env = _env("kpkeys-v7", "S13-separate")
    with pytest.raises(Prevented, match=r"POE overlay permission fault .*pkey 1"):
        forge_live_pte(env, env.state["live"])


def test_overlay_allows_the_write_inside_the_guard() -> None:
    """The same store inside the page-table guard lands (negative control of the overlay)."""
    env = _env("kpkeys-v7", "S13-separate")
    k = env.k
    with k.pgtables_guard(k):
        forge_live_pte(env, env.state["live"])
    assert env.trace.write_landed


def test_arbitrary_write_is_untagged() -> None:
    """The arbitrary-write primitive uses a match-all pointer (no tag check can fire)."""
    env = _env("kasan-hw-tags")
    obj = groom.kmalloc(env, 64)
    groom.kfree(env, obj)
    ArbitraryWrite().write_u64(env, obj.ptr, 1)
    assert env.trace.detections == []


def test_mte_async_report_delay() -> None:
    """With report_delay=2 the latched fault is reported at the third kernel entry/exit."""
    from kpkeys_sim.security.defenses.mte import MteAsync

    env = _env(MteAsync(report_delay=2))
    obj = groom.kmalloc(env, 64)
    groom.kfree(env, obj)
    UafWrite(obj).write_u64(env, 0, 0x4141)
    with env.syscall():  # entry: delay 2 -> 1, exit: 1 -> 0
        pass
    assert env.trace.detections == []
    with pytest.raises(Detected), env.syscall():
        pass
