"""S1 (Dirty Pagetable, PTE level) and S2 (SLUBStick-style PMD/PUD reclaim).

Spec: threats-and-peers.md §4.1, §4.2, §7 S1, S2; the recipe follows
kernel-hack-drill ``drill_uaf_w_pte.c`` / ``drill_uaf_w_pud.c`` [R44][R45].

Steps of one trial (``S1``; ``S2-PMD``/``S2-PUD`` change the table level):

Preconditions (``prepare``, shared by all trials)
    The attacker process exists and runs on CPU 0 (pinned).  It maps a
    window whose table of the attacked level does not exist yet: for S1 it
    touches one page of a fresh 4 MiB region, so the PMD table exists but the
    second 2 MiB (the window) has no PTE table; for S2-PMD the window is a 1
    GiB range whose PUD entry is empty (a neighbouring 1 GiB range is
    touched); for S2-PUD it is a 512 GiB range whose PGD entry is empty.  The
    target is a kernel page holding a secret (e.g. ``modprobe_path``), whose
    physical address the attacker knows (§4.1 precondition).
1. Spray (cross-cache, §4.1 step 2): allocate ``objs_per_slab ×
   (cpu_partial_slabs + 1)`` objects in the victim's kmalloc cache, then
   ``objs_per_slab - 1`` objects, the vulnerable object, and
   ``objs_per_slab + 1`` more — so one slab is filled only by attacker
   objects around the vulnerable one.
2. Trigger the bug: the vulnerable object is freed, the dangling pointer kept
   (:class:`~kpkeys_sim.security.primitives.UafWrite`).
3. Free the objects around it (the victim slab empties) and one object of
   each sprayed slab, so the CPU partial list overflows and SLUB returns the
   empty victim slab to the buddy allocator.
4. Reclaim (§4.1 step 3): touch a page of the window → the fault path
   allocates the missing table (``pte_alloc``/``pmd_alloc``/``pud_alloc`` →
   ``pagetable_alloc``), which takes whatever page the kernel's allocator
   hands out: the freed slab page only if nothing else got it first.
5. The corrupting write (step 4): through the dangling pointer, one 8-byte
   value at the object's field offset: a user-accessible read/write entry
   mapping the target (a page descriptor for S1, a block descriptor for
   S2).  The entry index it lands on depends on where the object sat in
   its slab, which the attacker does not know; it does know the object
   size and the field offset, so only ``objs_per_slab`` entries are
   candidates.
6. Payoff (step 5): the attacker finds which candidate slots are present
   (``mincore()`` on each window: the kernel walks the tables) and reads
   them from user space (EL0, through the MMU); success if one of them
   reads the target's secret and a write through it lands in the target
   page.  The candidate slots were never faulted in, so no stale TLB entry
   needs flushing.

Between step 3 and step 4 the attacker gives up the CPU and other tasks
allocate from the same cache and from the page allocator
(:func:`~kpkeys_sim.security.groom.noise`): the window in which the freed
slab page can be taken by someone else.

S2's side channel (SLUBStick, [R42]): the attacker times its allocations to
see which ones took SLUB's slow path (a new slab).  Modelled as an
observation of whether an allocation created a slab, correct with
probability ``side_channel_accuracy`` (a parameter; SLUBStick reports >99 %
end-to-end reliability on common caches).  With it the attacker starts the
victim batch right after an observed new slab, so the vulnerable object's
slab holds only the batch.  The trial logs whether the reclaim happened
(``reclaimed`` metric) separately from the fate of the write (§7 S2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.security import groom, kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.primitives import UafWrite
from kpkeys_sim.security.scenarios.base import Scenario, failed, register_scenario, succeeded

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["DirtyPagetable", "DirtyPmd", "DirtyPud", "cross_cache_groom"]

#: The secret a target kernel page holds (what the payoff check looks for).
SECRET = b"/sbin/modprobe\x00\x00"


def cross_cache_groom(
    env: AttackEnv,
    size: int,
    *,
    side_channel_accuracy: float | None = None,
) -> groom.Obj:
    """Steps 1–3: spray, free the vulnerable object (kept dangling), empty its slab.

    Returns the vulnerable object (its pointer is the dangling one).  The
    objects that stay allocated are recorded in ``env.state["groom_keep"]``.
    """
    cache = groom.cache_of(env, f"kmalloc-{size}")
    objs = cache.objects
    with env.syscall():
        pre = groom.spray(env, size, objs * (cache.cpu_partial_slabs + 1))
    with env.syscall():
        if side_channel_accuracy is not None:
            # Allocate until the timing side channel reports a slow-path (new-slab)
            # allocation; the batch then starts at a slab boundary.
            extra: list[groom.Obj] = []
            for _ in range(4 * objs):
                before = cache.nr_slabs
                o = groom.kmalloc(env, size)
                extra.append(o)
                new_slab = cache.nr_slabs > before
                seen = new_slab if env.rng.random() < side_channel_accuracy else not new_slab
                if seen:
                    break
            pre.extend(extra[:-1])
            around_before = [extra[-1], *groom.spray(env, size, objs // 2 - 1)]
            vuln = groom.kmalloc(env, size)
            around_after = groom.spray(env, size, objs - objs // 2)
        else:
            around_before = groom.spray(env, size, objs - 1)
            vuln = groom.kmalloc(env, size)
            around_after = groom.spray(env, size, objs + 1)
    with env.syscall():
        groom.kfree(env, vuln)  # the bug: freed, pointer kept
    with env.syscall():
        for o in around_before + around_after:
            groom.kfree(env, o)
        for i in range(0, len(pre), objs):
            groom.kfree(env, pre[i])
    env.state["groom_keep"] = [o for i, o in enumerate(pre) if i % objs]
    return vuln


class _DirtyTable(Scenario):
    """Shared steps of S1/S2; ``level`` is the reclaiming table's level."""

    level: ClassVar[str] = "pte"
    #: kmalloc cache of the vulnerable object, and the offset of the field it writes.
    obj_size: ClassVar[int] = 256
    field_offset: ClassVar[int] = 8
    side_channel_accuracy: ClassVar[float | None] = None
    #: Page tables sprayed at the reclaim step (one per window, as the published
    #: Dirty Pagetable exploits spray page tables).
    nr_windows: ClassVar[int] = 2

    def prepare(self, env: AttackEnv) -> None:
        att = kapi.spawn_attacker(env)
        env.state["attacker"] = att
        env.state["windows"] = kapi.prepare_windows(env, att, self.level, self.nr_windows)
        env.state["target"] = kapi.alloc_secret_page(env, SECRET)

    def prefix(self, env: AttackEnv) -> None:
        """Steps 1–3 (spray, bug, emptying the slab): deterministic unless tags are drawn."""
        env.state["vuln"] = cross_cache_groom(
            env, self.obj_size, side_channel_accuracy=self.side_channel_accuracy
        )

    def trial(self, env: AttackEnv) -> TrialResult:
        att = env.state["attacker"]
        target_pfn: int = env.state["target"]
        keep: list[groom.Obj] = []
        pages: list[int] = []
        self.run_prefix_if_needed(env)
        vuln: groom.Obj = env.state["vuln"]
        # Other tasks run while the attacker moves from freeing to reclaiming.
        groom.noise(env, self.obj_size, keep, pages)
        victim_pfn = vuln.pa >> env.k.machine.page_shift
        shift = kapi.level_shift(env, self.level)
        windows: list[int] = env.state["windows"]
        # Step 4: reclaim — read faults on each window allocate the missing tables (a read
        # maps the shared zero page, so no data page is allocated); slot 0 is never a
        # candidate.
        with env.syscall():
            for w in windows:
                kapi.user_touch(env, att, w, write=False)
        tables = [kapi.table_pfn(env, att, w, self.level) for w in windows]
        reclaimed = victim_pfn in tables
        env.trace.count("reclaimed", int(reclaimed))
        # Step 5: the corrupting write through the dangling pointer.
        entry = kapi.user_rw_entry(env, target_pfn, self.level)
        with env.syscall():
            UafWrite(vuln).write_u64(env, self.field_offset, entry)
        # Step 6: find present slots (mincore) among the candidates and read them from user
        # space.  Candidates: the entries the field can land on, knowing the object size.
        page_off = (target_pfn << env.k.machine.page_shift) & ((1 << shift) - 1)
        first = self.field_offset // 8
        step = vuln.slot // 8
        for w in windows:
            with env.syscall():
                present = kapi.mincore_slots(env, att, w, self.level)
            for idx in present:
                if idx < first or (idx - first) % step:
                    continue
                va = w + (idx << shift) + page_off
                env.user_step()
                if kapi.user_read(env, att, va, len(SECRET)) != SECRET:
                    continue
                env.user_step()
                if kapi.user_write_lands(env, att, va + 64, b"pwned!!!", target_pfn, 64):
                    return succeeded(
                        f"{self.level.upper()} table reclaimed the victim slab page; forged "
                        "entry gives user R/W of the kernel target page"
                    )
        if not reclaimed:
            where = kapi.describe_pfn(env, victim_pfn)
            return failed(
                f"groom missed: no new {self.level.upper()} table is the freed "
                f"slab page (that page is now {where})"
            )
        return failed("reclaimed, but no candidate slot reads the target")


@register_scenario
class DirtyPagetable(_DirtyTable):
    """S1 — Dirty Pagetable at PTE level."""

    id: ClassVar[str] = "S1"
    title: ClassVar[str] = "Dirty Pagetable (PTE): UAF write into a reclaimed PTE table"
    spec: ClassVar[str] = "threats-and-peers.md §4.1, §7 S1"
    level: ClassVar[str] = "pte"


@register_scenario
class DirtyPmd(_DirtyTable):
    """S2-PMD — SLUBStick-style reclaim by a PMD table; forged 2 MiB block descriptor."""

    id: ClassVar[str] = "S2-PMD"
    title: ClassVar[str] = "SLUBStick-style PMD reclaim with timing side channel"
    spec: ClassVar[str] = "threats-and-peers.md §4.2, §7 S2"
    level: ClassVar[str] = "pmd"
    side_channel_accuracy: ClassVar[float | None] = 0.99


@register_scenario
class DirtyPud(_DirtyTable):
    """S2-PUD — SLUBStick-style reclaim by a PUD table; forged 1 GiB block descriptor."""

    id: ClassVar[str] = "S2-PUD"
    title: ClassVar[str] = "SLUBStick-style PUD reclaim with timing side channel"
    spec: ClassVar[str] = "threats-and-peers.md §4.2, §7 S2"
    level: ClassVar[str] = "pud"
    side_channel_accuracy: ClassVar[float | None] = 0.99
