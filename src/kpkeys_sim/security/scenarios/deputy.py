"""S10 — confused deputy through the inputs of page-table writers [H].

Spec: threats-and-peers.md §7 S10 (Maxwell Bland's "policies on parameters"
[R2]; hyp-s2 variants with and without validation of TTBR writes / entry
contents, RKP-style [U]).  The attacker does not write a page table: it
corrupts *unprotected* data that the kernel's legitimate, guarded writers
consume.

``S10-root``  the root pointer: ``mm->pgd`` (an ``mm_struct`` field, ordinary
              kernel memory; the model's ``mm_struct`` is a Python object,
              so the write is applied to the field) is pointed at a fake PGD
              the attacker built in its own user pages (a PGD → PUD → PMD →
              PTE chain whose last entry maps the target with user R/W).  The
              next context switch loads it into TTBR0 (trapped and validated
              by ``hyp-s2-validate``).  Payoff: user R/W of the target
              through the fake tables.
``S10-pfnmap``  a driver's mapping parameter: the pfn a ``VM_PFNMAP`` driver
              maps on ``mmap`` (a field of its slab-allocated state) is set
              to the attacker's own PTE table; ``remap_pfn_range`` then
              writes a user R/W entry for it with the kernel's guarded
              ``set_pte_at``.  The attacker edits its page table through that
              user mapping.  Payoff: user R/W of the target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.security import groom, kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.primitives import ArbitraryWrite
from kpkeys_sim.security.scenarios.base import Scenario, failed, register_scenario, succeeded
from kpkeys_sim.security.scenarios.common import SECRET, live_table_payoff, prepare_live_table

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["FakeRoot", "PfnmapDeputy"]

#: The user address the fake tables translate.
FAKE_VA = 0x10_0000_0000


@register_scenario
class FakeRoot(Scenario):
    """S10-root — point ``mm->pgd`` at a fake PGD in attacker memory."""

    id: ClassVar[str] = "S10-root"
    title: ClassVar[str] = "mm->pgd swapped for a fake root in user memory (TTBR0 on switch)"
    spec: ClassVar[str] = "threats-and-peers.md §7 S10"

    def prepare(self, env: AttackEnv) -> None:
        lt = prepare_live_table(env)
        win = kapi.prepare_window(env, lt.attacker, "pte")
        pfns = []
        for i in range(4):
            kapi.user_touch(env, lt.attacker, win + (i << 12), write=True)
            pfns.append(kapi.user_page_pfn(env, lt.attacker, win + (i << 12)))
        env.state["fake_va"] = win
        env.state["fake_pfns"] = pfns
        env.state["sleeper"] = kapi.spawn_thread(env, lt.attacker)

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        att = lt.attacker
        win: int = env.state["fake_va"]
        pfns: list[int] = env.state["fake_pfns"]
        k = env.k
        geo = k.machine.geometry
        shift = k.machine.page_shift
        # Build the chain from user space: level i's entry for FAKE_VA points at page i + 1.
        for i in range(3):
            idx = geo.index(FAKE_VA, geo.start_level + i)
            desc = k.pgt.mk_pmd_table(pfns[i + 1] << shift, True)
            env.user_step()
            kapi.user_store(env, att, win + (i << 12) + 8 * idx, desc.to_bytes(8, "little"))
        leaf = kapi.user_rw_entry(env, lt.target_pfn, "pte")
        idx = geo.index(FAKE_VA, geo.start_level + 3)
        env.user_step()
        kapi.user_store(env, att, win + (3 << 12) + 8 * idx, leaf.to_bytes(8, "little"))
        with env.syscall():
            # The corrupting write: mm->pgd (and the TTBR value derived from it).
            att.mm.pgd_phys = pfns[0] << shift
            att.mm.pgd = kapi.phys_to_virt(k, pfns[0] << shift)
            env.trace.write_landed = True
        with env.syscall():
            kapi.schedule(env, env.state["sleeper"])
        env.user_step()
        if kapi.user_read(env, att, FAKE_VA, len(SECRET)) == SECRET and kapi.user_write_lands(
            env, att, FAKE_VA + 64, b"pwned!!!", lt.target_pfn, 64
        ):
            return succeeded(
                "TTBR0 loaded the fake root; user R/W of the target through attacker-built tables"
            )
        return failed("the fake root is not in use")


@register_scenario
class PfnmapDeputy(Scenario):
    """S10-pfnmap — a VM_PFNMAP driver maps the attacker's PTE table for it."""

    id: ClassVar[str] = "S10-pfnmap"
    title: ClassVar[str] = "corrupted remap_pfn_range argument: the kernel maps a PTP to user"
    spec: ClassVar[str] = "threats-and-peers.md §7 S10"

    def prepare(self, env: AttackEnv) -> None:
        lt = prepare_live_table(env)
        env.state["drv"] = groom.kmalloc(env, 64)
        env.kwrite(env.state["drv"].ptr, lt.target_pfn.to_bytes(8, "little"), corrupting=False)
        env.state["map_va"] = kapi.prepare_window(env, lt.attacker, "pte")

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        drv = env.state["drv"]
        map_va: int = env.state["map_va"]
        with env.syscall():
            ArbitraryWrite().write_u64(env, drv.ptr, lt.table_pfn)
        with env.syscall():
            pfn = int.from_bytes(env.kread(drv.ptr, 8), "little")
            kapi.remap_pfn(env, lt.attacker, map_va, pfn)
        env.user_step()
        entry = kapi.user_rw_entry(env, lt.target_pfn, "pte")
        kapi.user_store(env, lt.attacker, map_va + 8 * lt.slot, entry.to_bytes(8, "little"))
        return live_table_payoff(
            env, lt, "kernel mapped the PTE table to user; entry written through that mapping"
        )
