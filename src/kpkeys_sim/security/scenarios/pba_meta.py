"""S6 — corrupting the page-table allocator's metadata in ``struct page`` [H].

Spec: threats-and-peers.md §7 S6, §1.1 ("per-page bookkeeping lives in
``struct page`` … vmemmap, which is not pkey-protected"); kpkeys-series.md
§4.4 (``page->lru`` links the PBA ``cached_list``; ``page->mapping`` holds
``{in_block, block_nr_free}``), §4.6, §4.9 (shrinker).  A data-only attack on
the protector: the attacker has an arbitrary write into vmemmap.

``S6-A`` (splice)
    1. Preconditions (shared): the attacker process and two page-table
       windows with no PTE table yet; a kernel target page.
    2. The attacker allocates an object in kmalloc-256 and triggers its
       use-after-free (the object is freed, the pointer kept); its slab page
       X stays a live slab page.
    3. The corrupting metadata write: X is spliced at the head of the free
       list the next page-table allocation takes from — the PBA's
       ``cached_list`` on ``kpkeys-v6``, the buddy allocator's order-0 list
       otherwise (the spec's "Variant A also applies to kpkeys-pte through
       the buddy allocator's free lists").
    4. The attacker faults its windows: ``pagetable_alloc`` returns X.  The
       PBA trusts that cached pages already carry the page-table pkey; the
       noblock allocator (v7) sets the pkey on whatever ``alloc_pages``
       returned.
    5. The stale write through the dangling object pointer forges an entry
       in X; payoff as S1 (mincore + user read/write of the target).
``S6-B`` (shrinker)
    1. Preconditions: a live PTE table of the attacker (see :mod:`.common`).
    2. The corrupting metadata write: the ``page->mapping`` of the head of
       the block containing that table gets ``block_nr_free =
       BLOCK_NR_PAGES`` (a "completely free" block).
    3. The attacker causes memory pressure (one direct-reclaim pass): the PBA
       shrinker may release the whole block — resetting its pkey to the
       default and freeing its pages — although they are live page tables.
    4. The attacker's arbitrary write forges an entry in the live table.
    5. Payoff: user R/W of the target.

``hyp-s2`` trusts the page type recorded in ``struct page``;
``hyp-s2-validate`` keeps its own page-type registry (the spec's "hyp-s2
variant with page-type tracking").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.security import groom, kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.primitives import UafWrite
from kpkeys_sim.security.scenarios.base import Scenario, failed, register_scenario, succeeded
from kpkeys_sim.security.scenarios.common import (
    SECRET,
    forge_live_pte,
    live_table_payoff,
    prepare_live_table,
)

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["PbaShrinkerInflate", "PbaSplice"]

#: kpkeys v6 4K pages: BLOCK_ORDER = PMD_ORDER = 9 (spec §4.3).
BLOCK_NR_PAGES = 512


@register_scenario
class PbaSplice(Scenario):
    """S6-A — splice a default-pkey slab page into the page-table allocator's free list."""

    id: ClassVar[str] = "S6-A"
    title: ClassVar[str] = "splice a UAF object's page into the PTP free list (page->lru)"
    spec: ClassVar[str] = "threats-and-peers.md §7 S6 variant A"
    field_offset: ClassVar[int] = 8

    def prepare(self, env: AttackEnv) -> None:
        att = kapi.spawn_attacker(env)
        env.state["attacker"] = att
        env.state["windows"] = kapi.prepare_windows(env, att, "pte", 2)
        env.state["target"] = kapi.alloc_secret_page(env, SECRET)

    def trial(self, env: AttackEnv) -> TrialResult:
        att = env.state["attacker"]
        windows: list[int] = env.state["windows"]
        target: int = env.state["target"]
        with env.syscall():
            vuln = groom.kmalloc(env, 256)
        with env.syscall():
            groom.kfree(env, vuln)  # the bug: freed, pointer kept
        x = vuln.pa >> env.k.machine.page_shift
        with env.syscall():
            where = kapi.splice_pgtable_freelist(env, x)
        with env.syscall():
            for w in windows:
                kapi.user_touch(env, att, w, write=False)
        tables = [kapi.table_pfn(env, att, w, "pte") for w in windows]
        env.trace.count("spliced_page_became_ptp", int(x in tables))
        with env.syscall():
            UafWrite(vuln).write_u64(env, self.field_offset, kapi.user_rw_entry(env, target, "pte"))
        for w in windows:
            with env.syscall():
                present = kapi.mincore_slots(env, att, w, "pte")
            for idx in present:
                if idx == 0 or (idx - self.field_offset // 8) % (vuln.slot // 8):
                    continue
                va = w + (idx << env.k.machine.page_shift)
                env.user_step()
                if kapi.user_read(env, att, va, len(SECRET)) == SECRET and kapi.user_write_lands(
                    env, att, va + 64, b"pwned!!!", target, 64
                ):
                    return succeeded(
                        f"spliced page (via the {where}) became a PTE table with "
                        "the default pkey; the UAF write forged an entry"
                    )
        if x not in tables:
            return failed(f"the spliced page did not become a PTE table (via the {where})")
        return failed("the forged entry is not in effect")


@register_scenario
class PbaShrinkerInflate(Scenario):
    """S6-B — inflate a PBA block head's free counter so the shrinker unprotects live PTPs."""

    id: ClassVar[str] = "S6-B"
    title: ClassVar[str] = "inflate block_nr_free (page->mapping); shrinker resets the pkey"
    spec: ClassVar[str] = "threats-and-peers.md §7 S6 variant B; kpkeys-series.md §4.4, §4.9"

    def prepare(self, env: AttackEnv) -> None:
        prepare_live_table(env)

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        k = env.k
        mm = kapi.mem_map(k)
        head = lt.table_pfn & ~(BLOCK_NR_PAGES - 1)
        with env.syscall():
            # struct pba_page_data in page->mapping: in_block (byte 0) | block_nr_free << 32.
            mm.mapping[head - mm.base_pfn] = 1 | (BLOCK_NR_PAGES << 32)
        with env.syscall():
            kapi.memory_pressure(env)
        with env.syscall():
            forge_live_pte(env, lt)
        return live_table_payoff(
            env,
            lt,
            "write into a live page table landed after the metadata write and a reclaim pass",
        )
