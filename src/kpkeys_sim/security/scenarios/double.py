"""S3 — double allocation (Dirty Pagedirectory style): a page table reachable through a user alias.

Spec: threats-and-peers.md §4.3, §7 S3 [R40][R41].  The spec's question [H]:
the kernel's own writes of the entries are legitimate (inside the guard);
the attacker's later writes go through a **user** mapping of the page-table
page — EL0 accesses governed by POR_EL0/PKRU and the POIndex of the *user*
mapping, not by the linear-map pkey.

How the page ends up owned twice.  The model kernel checks every page free
as a ``CONFIG_DEBUG_VM`` kernel does (a refcount underflow is a
``VM_BUG_ON``), so a raw second free is always caught; the attacker uses
the other classic route to two owners — a use-after-free of a page that the
vulnerable subsystem can later map into user space (a packet-mmap /
io_uring-style ring page, mapped with ``vm_insert_page``):

1. Preconditions (shared): the attacker process; a 2 MiB window B with no
   PTE table; a kernel target page with a secret.
2. The vulnerable subsystem allocates its ring page P (``alloc_page``).
3. The bug frees P while the subsystem still holds it (the first free, via
   the kernel's real free path: P goes to the buddy allocator).
4. The attacker faults a page of B: ``pte_alloc`` → ``pagetable_alloc``
   takes the page the allocator hands out — P if nothing else took it
   (the PTE table allocator of each defense decides: buddy, noblock, PBA).
   The kernel fills B's entries legitimately.
5. The attacker ``mmap``s the ring: the subsystem maps its (stale) page P
   into the attacker's address space with ``vm_insert_page`` — a
   legitimate ``set_pte_at`` of a user read/write entry.  P is now the PTE
   table of B *and* a user page (the double allocation).
6. The corrupting write: the attacker stores, from user space, a user R/W
   entry for the target into slot 1 of P through the ring mapping.
7. Payoff: user R/W of the target at B + 4 KiB.

Logged: the alias used (``user_alias_writes``) and the register governing
it (EL0 → POR_EL0).  Not modelled: the ``INIT_ON_ALLOC`` and PMD+PTE
variants of the published exploit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
from kpkeys_sim.security import groom, kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.primitives import PageDoubleFree
from kpkeys_sim.security.scenarios.base import Scenario, failed, register_scenario, succeeded
from kpkeys_sim.security.scenarios.common import SECRET

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["DoubleAllocation"]


@register_scenario
class DoubleAllocation(Scenario):
    """S3 — one physical page is a PTE table and a user-mapped ring page at once."""

    id: ClassVar[str] = "S3"
    title: ClassVar[str] = "double allocation: PTE table also mapped into user space"
    spec: ClassVar[str] = "threats-and-peers.md §4.3, §7 S3"

    def prepare(self, env: AttackEnv) -> None:
        att = kapi.spawn_attacker(env)
        env.state["attacker"] = att
        env.state["window"] = kapi.prepare_window(env, att, "pte")
        env.state["ring_va"] = kapi.prepare_window(env, att, "pte")
        env.state["target"] = kapi.alloc_secret_page(env, SECRET)

    def trial(self, env: AttackEnv) -> TrialResult:
        att = env.state["attacker"]
        window: int = env.state["window"]
        ring_va: int = env.state["ring_va"]
        target: int = env.state["target"]
        keep: list[groom.Obj] = []
        pages: list[int] = []
        with env.syscall():
            ring = kapi.alloc_page(env, GFP_KERNEL)
            assert ring is not None
        groom.noise(env, 256, keep, pages)
        with env.syscall():
            PageDoubleFree(ring).free(env)  # the bug: freed while the ring still uses it
        groom.noise(env, 256, keep, pages)
        with env.syscall():
            kapi.user_touch(env, att, window, write=True)
        table = kapi.table_pfn(env, att, window, "pte")
        env.trace.count("reclaimed", int(table == ring))
        with env.syscall():
            kapi.vm_insert_page(env, att, ring_va, ring)
        entry = kapi.user_rw_entry(env, target, "pte")
        env.user_step()
        env.trace.count("user_alias_writes")
        kapi.user_store(env, att, ring_va + 8, entry.to_bytes(8, "little"))
        env.trace.write_landed = True
        env.trace.write_step = env.trace.step
        env.user_step()
        va = window + env.k.machine.page_size
        if kapi.user_read(env, att, va, len(SECRET)) == SECRET and kapi.user_write_lands(
            env, att, va + 64, b"pwned!!!", target, 64
        ):
            return succeeded(
                "PTE table reclaimed the freed ring page; user wrote an entry through the "
                "ring's user mapping (EL0, POR_EL0) and got R/W of the target"
            )
        if table != ring:
            return failed(
                "groom missed: the new PTE table is not the freed ring page (now "
                f"{kapi.describe_pfn(env, ring)})"
            )
        return failed("the forged entry is not in effect")
