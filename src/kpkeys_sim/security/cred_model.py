"""``struct cred`` and the task's credential pointers, with kpkeys_hardened_cred.

The model kernel has no credentials, so the security layer models the parts
S12 and S13 need (threats-and-peers.md §1.2, §4.5; kpkeys-series.md §7.6):

* ``struct cred`` (``include/linux/cred.h``, reduced): ``usage`` at 0,
  then ``uid, gid, suid, sgid, euid, egid, fsuid, fsgid`` as 32-bit values
  at 8..36; the object is :data:`CRED_SIZE` bytes, allocated from the
  ``cred_jar`` slab cache (``SLAB_HWCACHE_ALIGN | SLAB_ACCOUNT``) by
  ``prepare_creds()``.
* The task's pointers ``real_cred`` and ``cred`` live in the attacker task's
  ``task_struct`` (offsets :data:`TASK_REAL_CRED` and :data:`TASK_CRED` of a
  reduced ``task_struct`` object in its own cache): ordinary, unprotected
  kernel memory, as in Linux.
* With ``kpkeys_hardened_cred`` (cred series RFC v2): ``commit_creds()``
  moves the new credentials into the ``cred_jar_ro`` cache created with
  ``SLAB_SET_PKEY`` — every slab of it gets ``KPKEYS_PKEY_CRED`` (2) on its
  linear-map alias when it is created (``new_slab_hook``) and the default
  pkey back when it is freed — writing the copy inside the
  ``kpkeys_hardened_cred`` guard (``KPKEYS_LVL_CRED``).  The pointer store
  into ``task_struct`` is a plain write: the series protects the objects,
  not the pointers to them [R29].
* ``init_cred`` (uid 0) is allocated the same way at preparation time, so
  a privileged cred exists at a known address (``&init_cred`` is a kernel
  symbol; no leak is needed for DirtyCred-style pointer swaps [R49]).

``current_cred()->euid`` is read by the kernel through the task pointer with
checked loads (:func:`current_euid`), which is what a permission check does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kpkeys_sim.kernel.kpkeys.core import KPKEYS_GUARD, KPKEYS_LVL_CRED, KPKEYS_PKEY_CRED
from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
from kpkeys_sim.kernel.mm.slab import (
    SLAB_ACCOUNT,
    SLAB_HWCACHE_ALIGN,
    SLAB_SET_PKEY,
    KmemCache,
    kmem_cache_create,
)
from kpkeys_sim.security import groom, kapi
from kpkeys_sim.security.pointers import canonical

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = [
    "CRED_SIZE",
    "TASK_CRED",
    "TASK_REAL_CRED",
    "CredWorld",
    "commit_creds",
    "current_euid",
    "install_cred_model",
    "kpkeys_hardened_cred",
    "prepare_creds",
]

CRED_SIZE = 184
OFF_USAGE = 0
OFF_UID = 8
OFF_EUID = 24
TASK_SIZE = 1024
TASK_REAL_CRED = 0x10
TASK_CRED = 0x18

#: The cred series' guard (``linux/cred.h``: ``KPKEYS_GUARD(kpkeys_hardened_cred, ...)``).
kpkeys_hardened_cred = KPKEYS_GUARD("kpkeys_hardened_cred", KPKEYS_LVL_CRED)


@dataclass(slots=True)
class CredWorld:
    """The credential objects of one kernel: caches, ``init_cred``, the attacker task."""

    hardened: bool
    cred_jar: KmemCache
    cred_jar_ro: KmemCache | None
    task: groom.Obj
    init_cred: groom.Obj
    user_cred: groom.Obj


def _u32s(*vals: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in vals)


def _cred_bytes(uid: int) -> bytes:
    return (1).to_bytes(8, "little") + _u32s(uid, uid, uid, uid, uid, uid, uid, uid)


def install_cred_model(env: AttackEnv, hardened: bool) -> CredWorld:
    """Create the caches, ``init_cred`` and the attacker task with uid 1000 credentials."""
    k = env.k
    sl = kapi.slab(k)
    cred_jar = kmem_cache_create(sl, "cred_jar", CRED_SIZE, 8, SLAB_HWCACHE_ALIGN | SLAB_ACCOUNT)
    ro: KmemCache | None = None
    if hardened:
        ro = kmem_cache_create(
            sl, "cred_jar_ro", CRED_SIZE, 8, SLAB_HWCACHE_ALIGN | SLAB_ACCOUNT | SLAB_SET_PKEY
        )
        _hook_set_pkey_slabs(env)
    task_cache = kmem_cache_create(sl, "task_struct_creds", TASK_SIZE, 8, SLAB_HWCACHE_ALIGN)
    task = groom.kmalloc(env, TASK_SIZE, cache=task_cache)
    env.kwrite(task.ptr, bytes(TASK_SIZE), corrupting=False)
    world = CredWorld(hardened, cred_jar, ro, task, task, task)
    world.init_cred = commit_creds(env, world, prepare_creds(env, world, 0), install=False)
    world.user_cred = commit_creds(env, world, prepare_creds(env, world, 1000))
    return world


def _hook_set_pkey_slabs(env: AttackEnv) -> None:
    """``SLAB_SET_PKEY``: the new/free slab hooks set and reset ``KPKEYS_PKEY_CRED``."""
    from kpkeys_sim.kernel.mm.set_memory import set_memory_pkey

    k = env.k
    sl = kapi.slab(k)
    old_new, old_free = sl.new_slab_hook, sl.free_slab_hook

    def new_slab(cache: KmemCache, pfn: int, order: int) -> bool:
        if old_new is not None and not old_new(cache, pfn, order):
            return False
        if cache.flags & SLAB_SET_PKEY:
            va = kapi.phys_to_virt(k, pfn << k.machine.page_shift)
            return set_memory_pkey(k, va, 1 << order, KPKEYS_PKEY_CRED) == 0
        return True

    def free_slab(cache: KmemCache, pfn: int, order: int) -> None:
        if cache.flags & SLAB_SET_PKEY:
            va = kapi.phys_to_virt(k, pfn << k.machine.page_shift)
            set_memory_pkey(k, va, 1 << order, 0)
        if old_free is not None:
            old_free(cache, pfn, order)

    sl.new_slab_hook = new_slab
    sl.free_slab_hook = free_slab


def prepare_creds(env: AttackEnv, world: CredWorld, uid: int) -> groom.Obj:
    """``prepare_creds()``: a new, writable cred from ``cred_jar``."""
    c = groom.kmalloc(env, CRED_SIZE, GFP_KERNEL, cache=world.cred_jar)
    env.kwrite(c.ptr, _cred_bytes(uid), corrupting=False)
    return c


def commit_creds(
    env: AttackEnv, world: CredWorld, new: groom.Obj, *, install: bool = True
) -> groom.Obj:
    """``commit_creds(new)``: (hardened: move into ``cred_jar_ro``) and install on the task."""
    live = new
    if world.hardened and world.cred_jar_ro is not None:
        live = groom.kmalloc(env, CRED_SIZE, GFP_KERNEL, cache=world.cred_jar_ro)
        data = env.kread(new.ptr, CRED_SIZE)
        with kpkeys_hardened_cred(env.k):
            env.kwrite(live.ptr, data, corrupting=False)
        groom.kfree(env, new)
    if install:
        ptr = canonical(live.ptr).to_bytes(8, "little")
        env.kwrite(world.task.ptr + TASK_REAL_CRED, ptr, corrupting=False)
        env.kwrite(world.task.ptr + TASK_CRED, ptr, corrupting=False)
    return live


def current_euid(env: AttackEnv, world: CredWorld) -> int:
    """``current_cred()->euid`` as the kernel reads it (checked loads through the pointers)."""
    ptr = int.from_bytes(env.kread(world.task.ptr + TASK_CRED, 8), "little")
    return int.from_bytes(env.kread(ptr + OFF_EUID, 4), "little")
