"""Attacker primitives: what a kernel bug gives the attacker.

The spec's primitive set (threats-and-peers.md §7 "Common harness
assumptions"): a use-after-free write of N bytes at an object offset, a
double free (of a page or of an object), an arbitrary write ``(address,
value)``, and — for the page-level attacks (§4.4) — a stale ``struct page``
reference.  Each primitive performs its write through the environment's
access layer (:meth:`AttackEnv.kwrite`), so the defense's checks see the
pointer the vulnerable kernel code would use:

* :class:`UafWrite` — the vulnerable code still holds the object pointer
  ``kmalloc`` returned (with its KASAN tag, if any) and writes through it
  after the object was freed;
* :class:`StalePageRef` — the vulnerable code holds a ``struct page *`` and
  writes through ``page_address(page)``, which re-derives the linear-map
  pointer and re-applies the page's *current* KASAN tag [R33];
* :class:`ArbitraryWrite` — a write to an attacker-chosen address through an
  untagged pointer (an attacker-forged pointer carries the match-all tag
  0xFF, or no tag at all);
* :class:`PageDoubleFree` / :class:`ObjectDoubleFree` — the vulnerable code
  frees the same page/object a second time through the kernel's real free
  path, where the kernel's own checks (``free_pages_prepare`` "Bad page
  state", refcount ``VM_BUG_ON``, SLUB double-free detection) may fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kpkeys_sim.security.pointers import KASAN_TAG_KERNEL, canonical, set_tag

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv
    from kpkeys_sim.security.groom import Obj

__all__ = [
    "ArbitraryWrite",
    "ObjectDoubleFree",
    "PageDoubleFree",
    "StalePageRef",
    "UafWrite",
]


@dataclass(frozen=True, slots=True)
class UafWrite:
    """A dangling object pointer the vulnerable code writes through after the free."""

    obj: Obj

    def write(self, env: AttackEnv, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` inside the (freed) object."""
        if not 0 <= offset <= self.obj.size - len(data):
            raise ValueError(
                f"UAF write of {len(data)} bytes at offset {offset} is outside the "
                f"{self.obj.size}-byte object"
            )
        env.kwrite(self.obj.ptr + offset, data)

    def write_u64(self, env: AttackEnv, offset: int, value: int) -> None:
        """Write one 64-bit value at ``offset``."""
        self.write(env, offset, value.to_bytes(8, "little"))


@dataclass(frozen=True, slots=True)
class StalePageRef:
    """A ``struct page *`` the vulnerable code keeps after the page was freed."""

    pfn: int

    def pointer(self, env: AttackEnv) -> int:
        """``page_address(page)`` now: linear-map address with the page's current tag."""
        return env.defense.page_pointer(env, self.pfn)

    def write(self, env: AttackEnv, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` in the page through ``page_address()`` (pipe/kmap path)."""
        if not 0 <= offset <= env.k.machine.page_size - len(data):
            raise ValueError(f"stale page write at offset {offset} is outside the page")
        env.kwrite(self.pointer(env) + offset, data)

    def write_u64(self, env: AttackEnv, offset: int, value: int) -> None:
        """Write one 64-bit value at ``offset``."""
        self.write(env, offset, value.to_bytes(8, "little"))


@dataclass(frozen=True, slots=True)
class ArbitraryWrite:
    """Write ``value`` at any kernel address, through an untagged pointer."""

    def write_u64(self, env: AttackEnv, addr: int, value: int) -> None:
        """One 64-bit write at ``addr``."""
        env.kwrite(set_tag(canonical(addr), KASAN_TAG_KERNEL), value.to_bytes(8, "little"))

    def write(self, env: AttackEnv, addr: int, data: bytes) -> None:
        """Write ``data`` at ``addr``."""
        env.kwrite(set_tag(canonical(addr), KASAN_TAG_KERNEL), data)


@dataclass(frozen=True, slots=True)
class PageDoubleFree:
    """A page the vulnerable code frees once legitimately and once more later."""

    pfn: int

    def free(self, env: AttackEnv) -> None:
        """A free of the page through the kernel's page-free path (``__free_pages``)."""
        from kpkeys_sim.security import kapi

        kapi.free_page(env, self.pfn)


@dataclass(frozen=True, slots=True)
class ObjectDoubleFree:
    """An object the vulnerable code ``kfree``s twice."""

    obj: Obj

    def free(self, env: AttackEnv) -> None:
        """One ``kfree`` of the object through the hooked slab path."""
        from kpkeys_sim.security.groom import kfree

        kfree(env, self.obj)
