"""S5 — arbitrary write to each class of page table (the coverage matrix).

Spec: threats-and-peers.md §7 S5; the KUnit targets of the series [R23]
(linear-map PUD/PMD/PTE, kernel-image PUD, vmalloc PTE, vmemmap PMD, user
PMD) plus ``swapper_pg_dir`` after ``mark_rodata_ro`` (written through the
kernel-image alias the kernel itself uses) and the fixmap's static
``bm_pte`` (v7 notes the fixmap is not protected).  One scenario ID per
target class: ``S5-<class>``.

Steps of a trial (the write primitive is the same for every class):

1. Preconditions (shared): the attacker process and a kernel target page
   holding a secret; for the PGD class a fake PUD table in one of the
   attacker's own pages (filled from user space).
   For the linear-map PTE class the target page's linear-map block is split
   to pages first (``split_kernel_leaf_mapping``, the kernel's own path).
2. Find the entry: a hardware-style walk from the root that translates the
   class's address (the secret's linear-map address for the linear map;
   ``KIMAGE_VADDR``; a fresh ``vmalloc`` page; ``VMEMMAP_START``; the
   attacker's window; a fixmap slot) down to the class's level.  If that
   level does not exist on the path (e.g. a PTE level under a block-mapped
   linear map), the trial fails with that reason: the class is absent in
   this configuration.
3. The corrupting write, through the alias the kernel uses for that table
   (its linear-map alias; the kernel-image alias for ``swapper_pg_dir``): a
   user read/write entry for the target — a page descriptor at PTE level, a
   block descriptor at PMD/PUD level, a table descriptor to the fake PUD at
   PGD level.
4. The attacker causes a TLB flush (e.g. a vmalloc purge:
   ``flush_tlb_all``), then reads the secret and writes into the target
   from user space through the corrupted entry.

x86 kernel-half classes.  x86 grants a user access only if U/S is set at
every level of the walk, and the kernel half's upper entries (in
``init_top_pgt``) have it clear, so one rewritten kernel entry can never give
user space an alias (arm64 decides at the leaf; hierarchical permissions are
off under POE).  There the attacker uses the write twice, as a data-only
attacker with an arbitrary write can: step 3 turns the entry into a pkey-0
kernel read/write alias of the attacker's own (pkey-protected) PTE table, and
a second write through that alias forges a user entry for the target in it;
the payoff is the same user R/W of the target (:func:`_x86_kernel_half`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_all
from kpkeys_sim.kernel.mm.vmalloc import vmalloc
from kpkeys_sim.security import kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.primitives import ArbitraryWrite
from kpkeys_sim.security.scenarios.base import Scenario, failed, register_scenario, succeeded
from kpkeys_sim.security.scenarios.common import (
    SECRET,
    live_table_payoff,
    prepare_live_table,
)

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["CoverageTarget"]

_LEVEL_NAMES = {0: "PGD", 1: "PUD", 2: "PMD", 3: "PTE"}


class CoverageTarget(Scenario):
    """One target class of S5: ``where`` names the address, ``level`` the table level."""

    where: ClassVar[str] = ""
    level: ClassVar[int] = 3

    def prepare(self, env: AttackEnv) -> None:
        k = env.k
        att = kapi.spawn_attacker(env)
        env.state["attacker"] = att
        target = kapi.alloc_secret_page(env, SECRET)
        env.state["target"] = target
        g = k.pgt
        win = kapi.prepare_window(env, att, "pte")
        kapi.user_touch(env, att, win, write=True)
        env.state["window"] = win
        va: int | None
        if self.where in ("linear", "swapper"):
            va = kapi.phys_to_virt(k, target << k.machine.page_shift)
        elif self.where == "kimage":
            va = g.KIMAGE_VADDR
        elif self.where == "vmalloc":
            va = vmalloc(k, g.PAGE_SIZE)
        elif self.where == "vmemmap":
            va = g.VMEMMAP_START
        elif self.where == "user":
            va = win
        else:  # fixmap
            va = g.FIXADDR_TOP - g.PAGE_SIZE
        assert va is not None
        if self.where == "linear" and self.level == 3:
            # The kernel splits a block-mapped linear map at page granularity on demand
            # (split_kernel_leaf_mapping, as set_memory_*() does); do it for the target
            # page so the PTE class exists in every configuration that can split.
            k.arch_mm.split_kernel_leaf_mapping(k, va, va + g.PAGE_SIZE)
        env.state["va"] = va
        if _x86_kernel_half(env, va) and self.level > 0:
            prepare_live_table(env, att)
        if self.level == 0:
            # A fake PUD table in the attacker's own page, written from user space.
            fake = win + g.PAGE_SIZE
            kapi.user_touch(env, att, fake, write=True)
            geo = k.machine.geometry
            shift = geo.level_shift(1)
            base = ((target << k.machine.page_shift) >> shift) << (shift - k.machine.page_shift)
            entry = kapi.user_rw_entry(env, base, "pud")
            idx = geo.index(va, 1)
            kapi.user_store(env, att, fake + 8 * idx, entry.to_bytes(8, "little"))
            env.state["fake_pud"] = kapi.user_page_pfn(env, att, fake)

    def _entry(self, env: AttackEnv) -> tuple[int, int] | None:
        """(pointer the attacker writes, physical address) of the target entry, or None."""
        k = env.k
        va: int = env.state["va"]
        geo = k.machine.geometry
        mem = k.machine.mem
        kernel = bool(va >> 63)
        table = k.machine.cpus[0].ttbr1 if kernel else env.state["attacker"].mm.pgd_phys
        for lv in range(geo.start_level, self.level):
            desc = mem.read_u64(table + 8 * geo.index(va, lv))
            if not k.pgt.pmd_table(desc):
                return None  # a block or nothing: the level below does not exist here
            table = k.pgt.pmd_page_paddr(desc)
        pa = table + 8 * geo.index(va, self.level)
        if self.where == "swapper" and self.level == 0:
            return k.swapper_pg_dir + 8 * geo.index(va, 0), pa
        return kapi.phys_to_virt(k, pa), pa

    def trial(self, env: AttackEnv) -> TrialResult:
        k = env.k
        att = env.state["attacker"]
        target: int = env.state["target"]
        va: int = env.state["va"]
        name = _LEVEL_NAMES[self.level]
        found = self._entry(env)
        if found is None:
            return failed(f"no {name} table on this path in this configuration")
        ptr, _pa = found
        geo = k.machine.geometry
        if self.level > 0 and _x86_kernel_half(env, va):
            return self._kernel_alias_trial(env, ptr, va, name)
        if self.level == 0:
            value = k.pgt.mk_p4d_table(env.state["fake_pud"] << k.machine.page_shift, True)
        else:
            value = kapi.user_rw_entry(env, target, {1: "pud", 2: "pmd", 3: "pte"}[self.level])
        with env.syscall():
            ArbitraryWrite().write_u64(env, ptr, value)
        with env.syscall():
            flush_tlb_all(k)
        size = 1 << geo.level_shift(max(self.level, 1) if self.level else 1)
        read_va = (va & ~(size - 1)) | ((target << k.machine.page_shift) & (size - 1))
        env.user_step()
        if kapi.user_read(env, att, read_va, len(SECRET)) == SECRET and kapi.user_write_lands(
            env, att, read_va + 64, b"pwned!!!", target, 64
        ):
            return succeeded(
                f"{name} entry of the {self.where} mapping rewritten; user R/W of "
                "the target through it"
            )
        return failed(f"the rewritten {name} entry is not in effect")

    def _kernel_alias_trial(self, env: AttackEnv, ptr: int, va: int, name: str) -> TrialResult:
        """x86 kernel-half class: the entry becomes a pkey-0 alias of a live PTE table."""
        k = env.k
        lt = env.state["live"]
        level = {1: "pud", 2: "pmd", 3: "pte"}[self.level]
        with env.syscall():
            ArbitraryWrite().write_u64(env, ptr, kapi.kernel_rw_entry(env, lt.table_pfn, level))
        with env.syscall():
            flush_tlb_all(k)
        size = 1 << kapi.level_shift(env, level)
        alias = (va & ~(size - 1)) | ((lt.table_pfn << k.machine.page_shift) & (size - 1))
        entry = kapi.user_rw_entry(env, lt.target_pfn, "pte")
        with env.syscall():
            ArbitraryWrite().write_u64(env, alias + 8 * lt.slot, entry)
        return live_table_payoff(
            env,
            lt,
            f"{name} entry of the {self.where} mapping rewritten into a pkey-0 kernel alias "
            "of a page table (x86: no user alias without U/S at every level), PTE forged "
            "through it",
        )


def _x86_kernel_half(env: AttackEnv, va: int) -> bool:
    """``va`` is a kernel-half address on x86 (user access needs U/S at every level)."""
    return env.k.machine.fmt == "x86" and bool(va >> 63)


def _make(cid: str, where: str, level: int, title: str) -> None:
    cls = type(
        f"Coverage_{cid.replace('-', '_')}",
        (CoverageTarget,),
        {
            "id": f"S5-{cid}",
            "title": title,
            "spec": "threats-and-peers.md §7 S5; kpkeys-series.md §5.1 [R23]",
            "where": where,
            "level": level,
            "__doc__": f"S5-{cid} — {title}.",
        },
    )
    register_scenario(cls)


_make("lm-pud", "linear", 1, "arbitrary write to a linear-map PUD entry")
_make("lm-pmd", "linear", 2, "arbitrary write to a linear-map PMD entry")
_make("lm-pte", "linear", 3, "arbitrary write to a linear-map PTE")
_make("kimage-pud", "kimage", 1, "arbitrary write to the kernel-image PUD entry")
_make("vmalloc-pte", "vmalloc", 3, "arbitrary write to a vmalloc PTE")
_make("vmemmap-pmd", "vmemmap", 2, "arbitrary write to a vmemmap PMD entry")
_make("user-pmd", "user", 2, "arbitrary write to a user PMD entry")
_make("swapper-pgd", "swapper", 0, "arbitrary write to swapper_pg_dir (after mark_rodata_ro)")
_make("fixmap-pte", "fixmap", 3, "arbitrary write to the fixmap's static bm_pte")
