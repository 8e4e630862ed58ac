"""Heap grooming built from the model kernel's own slab and page allocators.

Everything here calls the real allocation paths (:mod:`kpkeys_sim.kernel.mm.slab`,
:mod:`kpkeys_sim.kernel.mm.page_alloc`, the user-memory fault path), so
whether a freed slab page comes back as a page table, or a freed page as
something else, happens with whatever probability those paths give — LIFO
free lists, buddy merging, CPU partial lists, freelist randomisation,
quarantine — never by fiat.

The defense's allocator hooks are applied on the way (``kasan_slab_alloc``
gives the object its tag and the pointer its tag; ``kasan_slab_free`` may
quarantine the object instead of freeing it), so a spray under generic
KASAN really does keep freed objects out of the allocator.

Background activity (:func:`noise`): other tasks allocate from the same
kmalloc cache and from the page allocator while the attacker works.  Each
call draws, from the trial's generator, a Poisson number of object
allocations (mean ``NOISE_SLAB_MEAN``) and of order-0 page allocations
(mean ``NOISE_PAGE_MEAN``), which stay allocated for the rest of the trial.
These two means are model parameters with no source (documented in
docs/model-assumptions.md); scenarios call :func:`noise` only at the
points where the attacker gives up the CPU (between two system calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kpkeys_sim.kernel.mm import slab as _slab
from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
from kpkeys_sim.kernel.mm.page_alloc import alloc_pages
from kpkeys_sim.security.defenses.base import Defense

if TYPE_CHECKING:
    from kpkeys_sim.kernel.mm.slab import KmemCache
    from kpkeys_sim.security.env import AttackEnv

__all__ = [
    "NOISE_PAGE_MEAN",
    "NOISE_SLAB_MEAN",
    "Obj",
    "cache_of",
    "kfree",
    "kmalloc",
    "noise",
    "spray",
]

#: Mean number of foreign objects allocated in the attacked cache per noise point.
NOISE_SLAB_MEAN = 0.5
#: Mean number of foreign order-0 page allocations per noise point.
NOISE_PAGE_MEAN = 0.2


@dataclass(frozen=True, slots=True)
class Obj:
    """A slab object as the kernel code holds it: its (tagged) pointer and where it is."""

    ptr: int
    pa: int
    size: int
    slot: int
    cache: str


def cache_of(env: AttackEnv, name: str) -> KmemCache:
    """The kernel's slab cache called ``name``."""
    sl = env.k.slab
    assert sl is not None
    for c in sl.caches():
        if c.name == name:
            return c
    raise KeyError(f"no slab cache {name!r}")


def kmalloc(
    env: AttackEnv,
    size: int,
    gfp: int = GFP_KERNEL,
    *,
    cache: KmemCache | None = None,
    cpu: int | None = None,
) -> Obj:
    """``kmalloc(size, gfp)`` (or ``kmem_cache_alloc(cache)``) through the defense's hook."""
    k = env.k
    sl = k.slab
    assert sl is not None
    c = k.cpu.cpu_id if cpu is None else cpu
    if cache is None:
        cache = _slab.kmalloc_slab(sl, size, gfp)
        if cache is None:
            raise MemoryError(f"kmalloc({size}): larger than the kmalloc caches")
    pa = _slab.kmem_cache_alloc(cache, gfp, c)
    if pa is None:
        raise MemoryError(f"kmalloc({size}) failed")
    va = k.pgt.va(pa)
    df = env.defense
    if type(df).slab_alloc is not Defense.slab_alloc:
        va = df.slab_alloc(env, va, pa, size, cache.size, cache.name)
        obj = Obj(va, pa, size, cache.size, cache.name)
        if env.prefix_recorder is not None:
            env.prefix_recorder(obj)
        return obj
    return Obj(va, pa, size, cache.size, cache.name)


def kfree(env: AttackEnv, obj: Obj, *, cpu: int | None = None) -> None:
    """``kfree(obj)`` through the defense's hook (which may quarantine it)."""
    k = env.k
    sl = k.slab
    assert sl is not None
    c = k.cpu.cpu_id if cpu is None else cpu
    df = env.defense
    if type(df).slab_free is Defense.slab_free:
        _slab.kfree(sl, obj.pa, c)
        return
    if df.slab_free(env, obj.ptr, obj.pa, obj.size, obj.slot, obj.cache):
        _slab.kfree(sl, obj.pa, c)
    for ptr in df.slab_release(env):
        _slab.kfree(sl, env.pa_of(ptr), c)


def spray(env: AttackEnv, size: int, n: int, gfp: int = GFP_KERNEL) -> list[Obj]:
    """Allocate ``n`` objects of ``size`` bytes (the attacker's spray, e.g. msg_msg)."""
    sl = env.k.slab
    assert sl is not None
    cache = _slab.kmalloc_slab(sl, size, gfp)
    return [kmalloc(env, size, gfp, cache=cache) for _ in range(n)]


def noise(env: AttackEnv, size: int, keep: list[Obj], pages: list[int]) -> None:
    """Background allocations by other tasks (see the module docstring).

    Objects go to ``keep`` and pages to ``pages`` so they stay allocated for
    the rest of the trial.
    """
    n_obj = int(env.rng.poisson(NOISE_SLAB_MEAN))
    n_pg = int(env.rng.poisson(NOISE_PAGE_MEAN))
    for _ in range(n_obj):
        keep.append(kmalloc(env, size))
    zone = env.k.zone
    assert zone is not None
    for _ in range(n_pg):
        pfn = alloc_pages(zone, GFP_KERNEL, 0)
        if pfn is not None:
            pages.append(pfn)
    if n_obj or n_pg:
        env.trace.count("noise_objects", n_obj)
        env.trace.count("noise_pages", n_pg)
