"""Hypervisor stage-2 protection of page tables (Samsung RKP / Huawei HKIP / pKVM-module style).

Mechanics (spec threats-and-peers.md §1.4, §0.2 "One mapping only", §7
configuration ``hyp-s2`` and S6/S10 variants):

* The hypervisor keeps the physical page of **every page-table page**
  read-only in its stage-2 tables.  Stage 2 translates *physical* pages,
  so the protection covers every virtual alias — linear map, vmalloc,
  user mappings — which is the contrast Jann Horn drew with pkeys [R3].
* The kernel's legitimate page-table writes are **hypercalls**: every
  page-table helper (the code that takes the ``kpkeys_hardened_pgtables``
  guard in the series, spec kpkeys-series.md §3.5 — the model's
  ``k.pgtables_guard`` hook) traps to the hypervisor, which performs the
  write.  Each trapped write is counted (``hyp_traps``) so its cost can be
  priced; the cost itself is not quantified by the sources [§1.4].
* Any other write to a protected physical page takes a stage-2 permission
  fault; the hypervisor refuses it (the trial ends as ``prevented``).
* Which pages are page tables: the hypervisor protects the kernel's tables
  from boot (it walks ``swapper_pg_dir`` when it takes over, so the static
  image tables and the memblock-era linear-map tables are covered — "from
  boot (hyp first)" in the feature table), and learns later ones from the
  kernel's page-table constructor/destructor (RKP registers page tables
  through hypercalls at allocation).  ``hyp-s2`` reads the page type the
  constructor records (``PG_table``), i.e. it trusts ``struct page``;
  ``hyp-s2-validate`` keeps **its own** registry of page-table pages
  (page-type tracking, filled by the constructor hypercall and emptied by
  the destructor hypercall), so corrupting ``struct page`` does not
  unprotect a page (S6's ``hyp-s2`` variant).
* ``hyp-s2-validate`` additionally **validates each entry** a hypercall
  writes (RKP-style [U]): a new entry may not map a registered page-table
  page, and a table descriptor must point to a registered page-table page;
  and it validates **TTBR0 writes** on context switch (the root must be a
  registered page table) — the "with and without validation of TTBR writes
  / entry contents" variants of S10.  A rejected hypercall leaves the entry
  unwritten (``prevented``).

Not modelled: the hypervisor's own memory and its bugs (Impalabs' RKP
compendium [R72]); the trap latency (counted, not timed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.mm.page import PG_table
from kpkeys_sim.machine.cpu import CPU
from kpkeys_sim.security.defenses.base import Defense, register_defense
from kpkeys_sim.security.env import Stage2Fault

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["HypS2", "HypS2Validate"]


@register_defense
class HypS2(Defense):
    """Stage-2 read-only page-table pages; page-table writes are hypercalls."""

    name: ClassVar[str] = "hyp-s2"
    title: ClassVar[str] = "hypervisor stage-2: page-table pages RO, writes by hypercall"
    spec: ClassVar[str] = "threats-and-peers.md §1.4, §0.2; [R3][R70]-[R76]"
    kind: ClassVar[str] = "prevent"
    validate: ClassVar[bool] = False

    def __init__(self) -> None:
        self.env: AttackEnv | None = None
        self.in_hvc: list[int] = []
        self.traps = 0
        self.denied = 0
        #: hyp-s2-validate: the hypervisor's own page-table registry (pfn -> level name).
        self.registry: dict[int, str] = {}
        self._pending: list[tuple[int, np.ndarray[Any, Any]]] = []
        #: Kernel tables that existed when the hypervisor took over (boot walk).
        self.boot_tables: frozenset[int] = frozenset()

    def kernel_config(self, base: KernelConfig) -> KernelConfig:
        return base.replace(kpkeys_hardened_pgtables=False)

    def install(self, env: AttackEnv) -> None:
        from kpkeys_sim.security import kapi

        self.env = env
        k = env.k
        self.in_hvc = [0] * len(k.machine.cpus)
        self.boot_tables = frozenset(kapi.kernel_table_pfns(k))
        if self.validate:
            self.registry = dict.fromkeys(kapi.pagetable_pfns(k), "?")
            for p in self.boot_tables:
                self.registry.setdefault(p, "?")
            k.pgtable_ctor_hooks.append(self._ctor)
            k.pgtable_dtor_hooks.append(self._dtor)
        inner = k.pgtables_guard

        @contextmanager
        def hvc_guard(kk: Any) -> Iterator[None]:
            cpu = kk.cpu
            cpu_id = cpu.cpu_id
            outer = self.in_hvc[cpu_id]
            # The hypercall belongs to the exception level it was made at: an interrupt
            # taken meanwhile (a deeper exception_stack) is not inside it.
            self.in_hvc[cpu_id] = len(cpu.exception_stack) + 1
            try:
                with inner(kk):
                    yield
            finally:
                self.in_hvc[cpu_id] = outer
                if outer == 0 and self._pending:
                    self._validate_pending()

        k.pgtables_guard = hvc_guard
        kapi.set_stage2(k, self._stage2)

    # --- page-type tracking (validate variant) ---------------------------------------------

    def _ctor(self, k: Any, pfn: int, order: int, level: str) -> bool:
        """The constructor's registration hypercall."""
        for p in range(pfn, pfn + (1 << order)):
            self.registry[p] = level
        return True

    def _dtor(self, k: Any, pfn: int, order: int, level: Any) -> None:
        """The destructor's unregistration hypercall."""
        for p in range(pfn, pfn + (1 << order)):
            self.registry.pop(p, None)

    def is_protected(self, pfn: int) -> bool:
        """True if the physical page ``pfn`` is a page-table page the hypervisor protects."""
        if self.validate:
            return pfn in self.registry
        if pfn in self.boot_tables:
            return True
        assert self.env is not None
        from kpkeys_sim.security import kapi

        mm = kapi.mem_map(self.env.k)
        if not mm.base_pfn <= pfn < mm.end_pfn:
            return False
        return bool(int(mm.flags[pfn - mm.base_pfn]) >> PG_table & 1)

    # --- the stage-2 permission check ------------------------------------------------------

    def _stage2(self, cpu: CPU, va: int, pa: int, access: str, el: int) -> None:
        if access not in ("W", "RW"):
            return
        assert self.env is not None
        pfn = pa >> self.env.k.machine.page_shift
        if not self.is_protected(pfn):
            return
        if self.in_hvc[cpu.cpu_id] == len(cpu.exception_stack) + 1 and el == 1:
            self.traps += 1
            self.env.trace.count("hyp_traps")
            if self.validate:
                mem = self.env.k.machine.mem
                if all(p != pfn for p, _ in self._pending):
                    self._pending.append((pfn, mem.frame_ro(pfn).copy()))
            return
        self.denied += 1
        alias = "user alias" if el == 0 else "kernel alias"
        raise Stage2Fault(pa, va, f"write to page-table page {pfn:#x} through a {alias}")

    def _validate_pending(self) -> None:
        """Validate the entries the hypercalls just wrote; undo and refuse bad ones."""
        assert self.env is not None
        mem = self.env.k.machine.mem
        pending, self._pending = self._pending, []
        shift = self.env.k.machine.page_shift
        for pfn, old in pending:
            new = mem.frame_ro(pfn)
            changed = np.flatnonzero(new != old)
            level = self.registry.get(pfn, "?")
            for i in changed.tolist():
                why = self._bad_entry(int(new[i]), level, shift)
                if why is not None:
                    mem.frame(pfn)[i] = old[i]
                    self.denied += 1
                    raise Stage2Fault(
                        (pfn << shift) + 8 * i, 0, f"hypervisor validation refused entry: {why}"
                    )

    def _bad_entry(self, desc: int, level: str, shift: int) -> str | None:
        """The validation policy for one new entry of a ``level`` table (None: accept).

        * a table descriptor (levels above pte, type 0b11) must point to a
          registered page-table page;
        * a user-accessible leaf (page or block with AP[1]/``PTE_USER``) must
          not map a registered page-table page.
        Kernel leaves may map page-table pages (the linear map does; writes
        through them still trap at stage 2).
        """
        if not desc & 1:
            return None
        target = (desc & ((1 << 48) - 1)) >> shift
        is_table = level not in ("pte", "?") and desc & 2
        if is_table:
            if target not in self.registry:
                return f"table descriptor to unregistered page {target:#x}"
            return None
        if desc & (1 << 6):
            span = 1
            if level != "pte" and not desc & 2:  # a block: 2 MiB (pmd) or 1 GiB (pud)
                span = 1 << (9 if level == "pmd" else 18)
            if span == 1:
                hit = target in self.registry
            else:
                hit = any(target <= p < target + span for p in self.registry)
            if hit:
                return f"user mapping of page-table page(s) at {target:#x}"
        return None

    def check_ttbr(self, env: AttackEnv, cpu: CPU) -> None:
        """TTBR0_EL1 write trap (HCR_EL2.TVM): validate the new root (validate variant only)."""
        if not self.validate:
            return
        pfn = (cpu.ttbr0 & ((1 << 48) - 1)) >> env.k.machine.page_shift
        if pfn not in self.registry:
            self.denied += 1
            raise Stage2Fault(cpu.ttbr0, 0, f"TTBR0 write of an unregistered root {pfn:#x}")

    def save(self) -> Any:
        return (list(self.in_hvc), self.traps, self.denied, dict(self.registry))

    def restore(self, state: Any) -> None:
        hv, self.traps, self.denied, reg = state
        self.in_hvc = list(hv)
        self.registry = dict(reg)
        self._pending = []


@register_defense
class HypS2Validate(HypS2):
    """Stage-2 protection plus page-type tracking and entry/TTBR validation."""

    name: ClassVar[str] = "hyp-s2-validate"
    title: ClassVar[str] = "hypervisor stage-2 + page-type tracking + entry/TTBR validation"
    validate: ClassVar[bool] = True
