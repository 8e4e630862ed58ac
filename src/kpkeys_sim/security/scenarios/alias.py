"""S9 — a secondary alias of a page-table page [H].

Spec: threats-and-peers.md §7 S9, §0.2 "One mapping only" (Brodsky: PTPs are
only accessed through the linear map; a pkey on vmalloc areas would require
amending their linear-map alias) [R3].

Primitive: an arbitrary write into a driver's page array (a ``pg_vec``-style
array of ``struct page *`` in a slab object) — one entry is replaced by the
``struct page`` of a live page-table page (the attacker's own PTE table; see
:mod:`.common`).  Then the driver maps its pages:

``S9-vmap``  ``vmap(pages, n, VM_MAP, PAGE_KERNEL)`` and writes the
             attacker's data into its buffer through the vmalloc alias (an
             EL1 store through a kernel VA whose PTE carries pkey 0).
``S9-user``  its ``mmap`` handler maps the pages into the attacker's address
             space with ``vm_insert_page`` and the attacker writes through
             that user alias (EL0, POR_EL0).

Payoff: user R/W of the target through the entry written via the alias.
Logged: the alias used and its POIndex (``alias_pkey_*``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
from kpkeys_sim.kernel.mm.mm_types import VM_MAP
from kpkeys_sim.kernel.mm.vmalloc import vmap
from kpkeys_sim.security import groom, kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.pointers import KASAN_TAG_KERNEL, canonical, set_tag
from kpkeys_sim.security.primitives import ArbitraryWrite
from kpkeys_sim.security.scenarios.base import Scenario, register_scenario
from kpkeys_sim.security.scenarios.common import live_table_payoff, prepare_live_table

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["UserAlias", "VmapAlias"]

NR_PAGES = 4


class _Alias(Scenario):
    def prepare(self, env: AttackEnv) -> None:
        lt = prepare_live_table(env)
        pages = [kapi.alloc_page(env, GFP_KERNEL) for _ in range(NR_PAGES)]
        arr = groom.kmalloc(env, 8 * NR_PAGES)
        for i, p in enumerate(pages):
            assert p is not None
            env.kwrite(arr.ptr + 8 * i, p.to_bytes(8, "little"), corrupting=False)
        env.state["pg_vec"] = arr
        env.state["ring_va"] = kapi.prepare_window(env, lt.attacker, "pte")

    def _corrupt(self, env: AttackEnv) -> list[int]:
        lt = env.state["live"]
        arr = env.state["pg_vec"]
        with env.syscall():
            ArbitraryWrite().write_u64(env, arr.ptr, lt.table_pfn)
        raw = env.kread(arr.ptr, 8 * NR_PAGES)
        return [int.from_bytes(raw[8 * i : 8 * i + 8], "little") for i in range(NR_PAGES)]


@register_scenario
class VmapAlias(_Alias):
    """S9-vmap — the driver vmaps the corrupted page array and writes through it."""

    id: ClassVar[str] = "S9-vmap"
    title: ClassVar[str] = "write a PTP through a vmap alias built from a corrupted page array"
    spec: ClassVar[str] = "threats-and-peers.md §7 S9"

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        pages = self._corrupt(env)
        k = env.k
        with env.syscall():
            va = vmap(k, pages, NR_PAGES, VM_MAP, k.pgt.PAGE_KERNEL)
            if va is None:
                raise MemoryError("vmap failed")
            e = k.machine.lookup(k.cpu, va)
            env.trace.count(f"alias_pkey_{k.machine.arch.desc_pkey(e.desc)}")
            entry = kapi.user_rw_entry(env, lt.target_pfn, "pte")
            # vmap areas are not KASAN-tagged: the driver's pointer is untagged [U].
            env.kwrite(
                set_tag(canonical(va + 8 * lt.slot), KASAN_TAG_KERNEL), entry.to_bytes(8, "little")
            )
        return live_table_payoff(env, lt, "driver wrote the entry through the vmap alias")


@register_scenario
class UserAlias(_Alias):
    """S9-user — the driver maps the corrupted page array into user space."""

    id: ClassVar[str] = "S9-user"
    title: ClassVar[str] = "write a PTP through a user alias (vm_insert_page of a corrupted pg_vec)"
    spec: ClassVar[str] = "threats-and-peers.md §7 S9"

    def trial(self, env: AttackEnv) -> TrialResult:
        lt = env.state["live"]
        ring_va: int = env.state["ring_va"]
        pages = self._corrupt(env)
        with env.syscall():
            for i, p in enumerate(pages):
                kapi.vm_insert_page(env, lt.attacker, ring_va + (i << 12), p)
        env.trace.count("alias_pkey_0")
        env.user_step()
        entry = kapi.user_rw_entry(env, lt.target_pfn, "pte")
        kapi.user_store(env, lt.attacker, ring_va + 8 * lt.slot, entry.to_bytes(8, "little"))
        env.trace.write_landed = True
        return live_table_payoff(env, lt, "attacker wrote the entry through the user alias")
