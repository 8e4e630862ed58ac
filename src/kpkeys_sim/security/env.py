"""The attack environment: one booted kernel, one defense, one trial's randomness.

:class:`AttackEnv` is what a scenario acts on.  It holds the kernel ``k``,
the selected defense, the trial's ``numpy.random.Generator`` and the trial's
:class:`~kpkeys_sim.security.outcome.Trace`, and it is the **access layer**
every attacker-driven kernel access goes through (:meth:`kwrite`,
:meth:`kread`):

1. the defense's per-access check (what compiler instrumentation or the MTE
   hardware does with the pointer the kernel code uses), then
2. the access itself through the machine on ``k.cpu`` with the pointer made
   canonical (TBI) — where the pkey overlay, PKS and the stage-2 permission
   layer apply.  A permission fault on a plain kernel store is an oops
   (``kernel_store_u64`` → ``__do_kernel_fault``), which ends the attack as
   ``prevented``; a stage-2 fault is taken to the hypervisor, which refuses
   the write.

Attacker syscalls are :meth:`syscall` blocks: a kernel entry and exit, each
a *checkpoint* where latched MTE asynchronous faults are reported, and one
attacker step on the trace.

Randomness: the environment's generator is only available while a trial
(or the cell's shared preparation, with its own fixed generator) runs
(:meth:`begin_trial`); a scenario's trial *prefix*, which the campaign runs
once and snapshots, cannot draw at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kpkeys_sim.kernel.errors import KernelBug, Oops
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.maccess import __do_kernel_fault, kernel_store_u64
from kpkeys_sim.machine.mmu import Fault
from kpkeys_sim.security.outcome import Detected, Prevented, Trace
from kpkeys_sim.security.pointers import canonical

if TYPE_CHECKING:
    from collections.abc import Callable

    from kpkeys_sim.security.defenses.base import Defense
    from kpkeys_sim.security.groom import Obj

__all__ = ["AttackEnv", "RandomnessUnavailableError", "Stage2Fault"]


class RandomnessUnavailableError(RuntimeError):
    """A deterministic (shared, snapshotted) step tried to draw a random number."""


class Stage2Fault(Exception):
    """A stage-2 permission fault taken to the hypervisor, which refused the access."""

    def __init__(self, pa: int, va: int, why: str) -> None:
        self.pa = pa
        self.va = va
        self.why = why
        super().__init__(f"stage-2 permission fault: {why} (PA {pa:#x}, VA {va:#x})")


class AttackEnv:
    """A booted kernel with a defense installed; see the module docstring."""

    def __init__(self, k: Kernel, defense: Defense) -> None:
        self.k = k
        self.defense = defense
        self.trace = Trace()
        self._rng: np.random.Generator | None = None
        #: Caches whose KASAN tags are fixed per slot (ctor / SLAB_TYPESAFE_BY_RCU) [R35].
        self.index_tagged_caches: set[str] = set()
        #: Scenario-private state that must survive snapshot/restore with the kernel.
        self.state: dict[str, Any] = {}
        self._page_hooked = False
        #: Set while the campaign records a trial prefix for replay
        #: (:mod:`kpkeys_sim.security.prefix_replay`): told of every Obj ``groom.kmalloc`` builds.
        self.prefix_recorder: Callable[[Obj], None] | None = None
        #: The replay of a recorded trial prefix, which the scenario runs in place of
        #: the prefix (:meth:`Scenario.run_prefix_if_needed`); None: nothing to replay.
        self.prefix_replay: Callable[[], None] | None = None

    # --- randomness --------------------------------------------------------------------

    @property
    def rng(self) -> np.random.Generator:
        """The trial's generator; raises outside a trial (deterministic preparation)."""
        if self._rng is None:
            raise RandomnessUnavailableError("a shared trial prefix must not draw random numbers")
        return self._rng

    def begin_trial(self, rng: np.random.Generator) -> None:
        """Start a trial: a fresh trace and the trial's generator."""
        self.trace = Trace()
        self._rng = rng

    def end_trial(self) -> None:
        """End the trial: randomness is no longer available."""
        self._rng = None

    # --- addresses ---------------------------------------------------------------------

    def lm_addr(self, pfn: int) -> int:
        """``__va(PFN_PHYS(pfn))``: the (untagged) linear-map address of ``pfn``."""
        return self.k.pgt.va(pfn << self.k.machine.page_shift)

    def pa_of(self, ptr: int) -> int:
        """Physical address of a linear-map pointer (``__pa``/``virt_to_phys``)."""
        pa = self.pa_of_or_none(ptr)
        if pa is None:
            raise ValueError(f"{ptr:#x} is not a linear-map address")
        return pa

    def pa_of_or_none(self, ptr: int) -> int | None:
        """Physical address of a linear-map pointer, or None for any other address."""
        va = canonical(ptr)
        g = self.k.pgt
        return g.pa(va) if g.is_lm_address(va) else None

    # --- hooks ---------------------------------------------------------------------------

    def hook_page_allocator(self, defense: Defense) -> None:
        """Have the page allocator call ``defense.page_alloc``/``page_free`` (KASAN hooks)."""
        from kpkeys_sim.security import kapi

        if self._page_hooked:
            return
        kapi.set_kasan_page_hooks(
            self.k,
            lambda pfn, order, gfp: defense.page_alloc(self, pfn, order, gfp),
            lambda pfn, order: defense.page_free(self, pfn, order),
        )
        self._page_hooked = True

    def hook_new_slabs(self, defense: Defense) -> None:
        """Have every new slab call ``defense.slab_page`` (``kasan_poison_slab``)."""
        from kpkeys_sim.security import kapi

        sl = kapi.slab(self.k)
        old = sl.new_slab_hook

        def new_slab(cache: Any, pfn: int, order: int) -> bool:
            if old is not None and not old(cache, pfn, order):
                return False
            defense.slab_page(self, pfn, order)
            return True

        sl.new_slab_hook = new_slab

    # --- detection -----------------------------------------------------------------------

    def report(self, detector: str, what: str, *, stop: bool) -> None:
        """A detector report; ``stop`` (panic) ends the trial with :class:`Detected`."""
        d = self.trace.report(detector, what)
        if stop:
            raise Detected(d)

    # --- the access layer ----------------------------------------------------------------

    def kwrite(self, ptr: int, data: bytes, *, corrupting: bool = True) -> None:
        """A kernel store of ``data`` through pointer ``ptr`` made on the attacker's behalf.

        ``corrupting`` marks the attack's corrupting write: the trace records
        the step and whether it landed.  Permission faults raise
        :class:`Prevented` naming the check.
        """
        self.defense.check_access(self, ptr, len(data), True)
        va = canonical(ptr)
        if corrupting:
            self.trace.write_step = self.trace.step
        try:
            self._store(va, data)
        except Stage2Fault as f:
            raise Prevented("stage-2 permission fault (hypervisor)", f.why) from None
        except Oops as o:
            raise Prevented(_fault_check(o.__cause__), str(o)) from None
        if corrupting:
            self.trace.write_landed = True

    def _store(self, va: int, data: bytes) -> None:
        _kernel_store(self.k, va, data)

    def kread(self, ptr: int, size: int) -> bytes:
        """A kernel load through ``ptr`` (checked like :meth:`kwrite`)."""
        self.defense.check_access(self, ptr, size, False)
        return self.k.machine.load_bytes(self.k.cpu, canonical(ptr), size)

    # --- attacker steps ------------------------------------------------------------------

    def syscall(self) -> _Syscall:
        """One attacker system call: kernel entry, the body, kernel exit (both checkpoints).

        Use as ``with env.syscall():``; the exit checkpoint runs only when the
        body completes (an exception leaves the kernel another way).
        """
        return _Syscall(self)

    def user_step(self) -> None:
        """One attacker step in user mode (an access that does not enter the kernel)."""
        self.trace.tick()


class _Syscall:
    """The context manager of :meth:`AttackEnv.syscall` (a class: it runs on every syscall)."""

    __slots__ = ("env",)

    def __init__(self, env: AttackEnv) -> None:
        self.env = env

    def __enter__(self) -> None:
        env = self.env
        env.trace.tick()
        env.defense.checkpoint(env)

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        if exc_type is None:
            env = self.env
            env.defense.checkpoint(env)


def _kernel_store(k: Kernel, va: int, data: bytes) -> None:
    """A plain kernel store (no fixup): a fault is an oops (``__do_kernel_fault``)."""
    if len(data) % 8 == 0 and va % 8 == 0:
        for i in range(0, len(data), 8):
            kernel_store_u64(k, va + i, int.from_bytes(data[i : i + 8], "little"))
        return
    try:
        k.machine.store_bytes(k.cpu, va, data)
    except Fault as f:
        __do_kernel_fault(k, f)


def _fault_check(cause: BaseException | None) -> str:
    """Name the permission check behind a kernel oops."""
    if isinstance(cause, Fault):
        if cause.result == "overlay_fault":
            return f"POE overlay permission fault (POR_EL1, pkey {cause.pkey})"
        if cause.result == "pk_fault":
            return f"PKS protection-key fault (IA32_PKRS, pkey {cause.pkey})"
        if cause.kind == "translation":
            return "translation fault"
        return f"stage-1 permission fault ({cause.result})"
    return "kernel oops"


def kernel_bug_check(exc: KernelBug) -> str:
    """The detector name for a kernel self-check (Bad page state, VM_BUG_ON, double free)."""
    msg = str(exc)
    if "Bad page state" in msg:
        return "kernel: Bad page state"
    if "double free" in msg:
        return "kernel: double-free check"
    return "kernel: BUG/VM_BUG_ON"
