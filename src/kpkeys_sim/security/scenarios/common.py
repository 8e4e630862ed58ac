"""Steps shared by the scenarios that write into a *live* page table.

S5, S7, S8, S10 and S13 give the attacker a write aimed at a page-table page
that is in use (no reclaim involved): the attacker's own PTE table, whose
address it knows (arbitrary-write precondition).  The preparation maps one
page of a fresh 2 MiB window (so the window's PTE table exists) and leaves
slot 1 of that table empty; the forged entry goes into slot 1 and maps the
target kernel page with user read/write permission; the payoff is a read of
the target's secret and a write into it from user space (EL0, through the
MMU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kpkeys_sim.security import kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.primitives import ArbitraryWrite
from kpkeys_sim.security.scenarios.base import failed, succeeded

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["SECRET", "LiveTable", "forge_live_pte", "live_table_payoff", "prepare_live_table"]

SECRET = b"/sbin/modprobe\x00\x00"


@dataclass(frozen=True, slots=True)
class LiveTable:
    """The attacker's live PTE table and the slot the attack forges."""

    attacker: kapi.Attacker
    window: int
    table_pfn: int
    slot: int
    slot_ptr: int
    target_pfn: int

    @property
    def slot_va(self) -> int:
        """The user address that the forged slot translates."""
        return self.window + (self.slot << 12)


def prepare_live_table(env: AttackEnv, attacker: kapi.Attacker | None = None) -> LiveTable:
    """Map one page of a fresh window; record the PTE table and the empty slot 1."""
    att = attacker or kapi.spawn_attacker(env)
    window = kapi.prepare_window(env, att, "pte")
    kapi.user_touch(env, att, window, write=True)
    table = kapi.table_pfn(env, att, window, "pte")
    assert table is not None
    slot = 1
    ptr = kapi.phys_to_virt(env.k, (table << env.k.machine.page_shift) + 8 * slot)
    target = kapi.alloc_secret_page(env, SECRET)
    lt = LiveTable(att, window, table, slot, ptr, target)
    env.state["live"] = lt
    return lt


def forge_live_pte(env: AttackEnv, lt: LiveTable) -> None:
    """The corrupting write: a user RW entry for the target into the live slot."""
    entry = kapi.user_rw_entry(env, lt.target_pfn, "pte")
    ArbitraryWrite().write_u64(env, lt.slot_ptr, entry)


def live_table_payoff(env: AttackEnv, lt: LiveTable, how: str) -> TrialResult:
    """User-space read of the secret and write into the target through the forged slot."""
    env.user_step()
    got = kapi.user_read(env, lt.attacker, lt.slot_va, len(SECRET))
    if got == SECRET and kapi.user_write_lands(
        env, lt.attacker, lt.slot_va + 64, b"pwned!!!", lt.target_pfn, 64
    ):
        return succeeded(f"{how}; user R/W of the kernel target page")
    return failed(f"{how}; the forged entry is not in effect")
