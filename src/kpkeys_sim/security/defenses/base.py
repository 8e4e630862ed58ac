"""The defense interface: a pluggable model selected by name.

A defense is three things (spec threats-and-peers.md §7 "Configurations to
run each scenario under"):

1. the **kernel it boots** — :meth:`Defense.kernel_config` turns the
   campaign's base :class:`~kpkeys_sim.kernel.config.KernelConfig` into the
   configuration of that defense (kpkeys series, linear-map mode, lazy-MMU
   batching, architecture);
2. **hooks on the real paths**, installed by :meth:`Defense.install` after
   boot: KASAN/MTE hook the page allocator (``post_alloc_hook`` /
   ``free_pages_prepare``) and the slab paths the attack drives
   (``kasan_slab_alloc`` / ``kasan_slab_free``); the stage-2 model hooks the
   machine's translation of every access;
3. the **check on each attacker-driven kernel access**
   (:meth:`Defense.check_access`): what compiler instrumentation (generic or
   software-tag KASAN) or the hardware tag check (MTE) does with the pointer
   the kernel code uses.  Permission checks (pkeys, stage 2) need no such
   hook: they happen in the machine on every access.

Nothing in a defense knows which scenario runs: outcomes come from these
mechanics only.  State a defense keeps outside the kernel (tag storage,
quarantine, the hypervisor's page-table registry) is saved and restored
with the kernel by :meth:`Defense.save` / :meth:`Defense.restore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from kpkeys_sim.kernel.config import KernelConfig

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["Defense", "register_defense"]


class Defense:
    """Base class: the ``none`` behaviour for every hook.

    Class attributes: ``name`` (registry key), ``title`` (one line),
    ``spec`` (where the mechanics come from), ``kind`` (``"baseline"``,
    ``"prevent"`` or ``"detect"``), ``pkey_protects_pgtables`` (the page-table
    pkey feature is on, so S14 measures its exposure window).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    spec: ClassVar[str] = ""
    kind: ClassVar[str] = "baseline"
    pkey_protects_pgtables: ClassVar[bool] = False

    # --- kernel configuration --------------------------------------------------------

    def kernel_config(self, base: KernelConfig) -> KernelConfig:
        """The configuration this defense boots (``base`` with the defense's knobs)."""
        return base.replace(kpkeys_hardened_pgtables=False)

    def install(self, env: AttackEnv) -> None:
        """Attach hooks to the booted kernel ``env.k`` (called once, before the snapshot)."""

    # --- allocator hooks -------------------------------------------------------------

    def slab_alloc(
        self, env: AttackEnv, addr: int, pa: int, size: int, slot: int, cache: str
    ) -> int:
        """``kasan_slab_alloc``: the pointer kmalloc returns for the object at ``addr`` (``pa``)."""
        return addr

    def slab_free(
        self, env: AttackEnv, ptr: int, pa: int, size: int, slot: int, cache: str
    ) -> bool:
        """``kasan_slab_free``: True to free now, False if the defense keeps it (quarantine)."""
        return True

    def slab_release(self, env: AttackEnv) -> list[int]:
        """Pointers the defense lets go now (quarantine reduction); default none."""
        return []

    def page_alloc(self, env: AttackEnv, pfn: int, order: int, gfp: int) -> None:
        """``post_alloc_hook`` → ``kasan_unpoison_pages``."""

    def page_free(self, env: AttackEnv, pfn: int, order: int) -> None:
        """``free_pages_prepare`` → ``kasan_poison_pages``."""

    def slab_page(self, env: AttackEnv, pfn: int, order: int) -> None:
        """``kasan_poison_slab``: a new slab of ``1 << order`` pages at ``pfn``."""

    def page_pointer(self, env: AttackEnv, pfn: int) -> int:
        """``page_address()``/``page_to_virt()``: the linear-map pointer of ``pfn``."""
        return env.lm_addr(pfn)

    # --- the access check ------------------------------------------------------------

    def check_access(self, env: AttackEnv, ptr: int, size: int, write: bool) -> None:
        """Check one kernel access through ``ptr`` (instrumentation / tag check)."""

    def checkpoint(self, env: AttackEnv) -> None:
        """A kernel entry or exit on ``env.k.cpu`` (where MTE async faults are reported)."""

    # --- state outside the kernel ----------------------------------------------------

    def save(self) -> Any:
        """A copy of the defense's private state."""
        return None

    def restore(self, state: Any) -> None:
        """Restore the state returned by :meth:`save`."""

    def describe(self) -> str:
        """One line naming the defense and its parameters (for reports)."""
        return f"{self.name}: {self.title}"


_REGISTRY: dict[str, type[Defense]] = {}


def register_defense(cls: type[Defense]) -> type[Defense]:
    """Register a defense class under ``cls.name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"defense {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls
