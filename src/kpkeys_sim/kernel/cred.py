"""Task credentials (``kernel/cred.c``, ``include/linux/cred.h``) with kpkeys_hardened_cred.

Models the "pkeys-based cred hardening" series, RFC v2 (spec kpkeys-series.md
§7.6; levels and pkeys §1.2, §1.3; guards §1.6; POR_EL1 values §2.1): live
credentials (``task->cred``, ``task->real_cred``) sit in a slab cache whose
slabs carry ``KPKEYS_PKEY_CRED`` in the linear map, so they can only be
written inside the ``kpkeys_hardened_cred`` guard (``KPKEYS_LVL_CRED``).

``struct cred`` in simulated memory.  A credential is a slab object and a
``struct cred *`` is its linear-map virtual address (an ``int``; 0 is NULL).
Every field is a little-endian u64 at a fixed offset (the model widens
Linux's 32-bit ``kuid_t``/``kgid_t``/``securebits`` to u64 and keeps one u64
per ``kernel_cap_t``):

======  ===================  ===============================================
offset  field                notes
======  ===================  ===============================================
0       ``usage``            ``atomic_long_t`` reference count
8       ``uid``
16      ``gid``
24      ``suid``
32      ``sgid``
40      ``euid``
48      ``egid``
56      ``fsuid``
64      ``fsgid``
72      ``securebits``
80      ``cap_inheritable``
88      ``cap_permitted``
96      ``cap_effective``
104     ``cap_bset``
112     ``cap_ambient``
120     ``rcu.next``         ``union { int non_rcu; struct rcu_head rcu; }``:
                             ``non_rcu`` shares this word
128     ``rcu.func``
======  ===================  ===============================================

:data:`CRED_SIZE` is 136 bytes; ``cred_jar`` (``SLAB_HWCACHE_ALIGN``) strides
it to 192, and ``kmalloc(CRED_SIZE)`` uses ``kmalloc-192``.  Keyrings, user
namespaces, ``group_info``, LSM blobs and ``ucounts`` are not modelled.

The feature.  :func:`kpkeys_hardened_cred_enabled` is the static key
``kpkeys_hardened_cred_key``, enabled by :func:`cred_init` when the cred
series is configured (``config.kpkeys_cred_levels``, the model's
``CONFIG_KPKEYS_HARDENED_CRED``) and the CPU has pkeys
(``arch_kpkeys_enabled()``).  When it is on:

* ``cred_jar`` is created with ``SLAB_SET_PKEY``.  The slab layer's
  ``new_slab_hook`` (run by ``allocate_slab`` after the pages are marked
  ``PG_slab``, before the freelist is built; a failure frees the pages) sets
  ``KPKEYS_PKEY_CRED`` on the slab's linear-map alias with
  ``set_memory_pkey``; its ``free_slab_hook`` (run by ``discard_slab`` before
  the pages go back to the buddy allocator) sets ``KPKEYS_PKEY_DEFAULT`` back.
  Hooks already installed are chained, not replaced.
* :func:`prepare_creds` allocates normal memory (``kmalloc``);
  :func:`protect_creds` copies a cred into ``cred_jar`` under the guard and
  frees the original (a *different* pointer comes back);
  :func:`commit_creds` moves the new creds there, consuming the caller's
  reference; :func:`prepare_protected_creds` allocates in ``cred_jar``
  directly.
* Writers of protected creds (:func:`get_cred`, :func:`put_cred`, the copy in
  :func:`protect_creds`) take the ``kpkeys_hardened_cred`` guard
  unconditionally: ``KPKEYS_GUARD(kpkeys_hardened_cred, KPKEYS_LVL_CRED)``
  with the series configured, ``KPKEYS_GUARD_NOOP`` otherwise.

When it is off the code is upstream's: ``cred_jar`` without ``SLAB_SET_PKEY``,
``prepare_creds`` allocates from it, ``protect_creds`` returns its argument.

RCU (``CONFIG_KPKEYS_UNRESTRICTED_RCU``, modelled minimally).  The last
:func:`put_cred` queues the cred with :func:`call_rcu`.  ``__call_rcu_common``
writes ``rcu.func``/``rcu.next`` at the caller's level (inside
``put_cred``'s guard); the segcblist tail write, which stores into the
*previous* callback's ``rcu_head`` (possibly another protected object), takes
the ``kpkeys_rcu`` guard (``KPKEYS_LVL_UNRESTRICTED``).  Callbacks run in
:func:`rcu_barrier` (the model's grace period: nothing runs them otherwise),
which, as ``rcu_do_batch``, zeroes ``rcu.func`` under ``kpkeys_rcu`` before
calling :func:`put_cred_rcu`.  ``put_cred_rcu`` frees with
``kmem_cache_free(cred_jar)`` when the object's slab has ``SLAB_SET_PKEY``,
with ``kfree`` otherwise (upstream: always ``cred_jar``).  The only callback
type is ``put_cred_rcu``.

Boot (``kernel/boot.py``): :func:`install_kpkeys_hardened_cred` runs where
``start_kernel`` calls ``cred_init()`` (after ``init_IRQ``, before
``smp_init``).  It does nothing unless ``config.kpkeys_cred_levels``: kernels
without the cred series keep no credential objects, so their allocations and
event counts are those of the model before credentials existed.
:func:`cred_init` may also be called directly on such a kernel.

``init_cred``: Linux's is a static object in ``.data``.  The model has no
static cred, so :func:`cred_init` prepares ``init_cred`` (uid 0, full
capabilities) in normal memory and installs it on ``init_task`` with
:func:`commit_creds`, which moves it into ``cred_jar`` when the feature is
on; the other CPUs' idle tasks take references to the same cred.  Tasks
created by the model's ``kernel_clone`` start with their parent's pointers
*without* references (``task_struct`` copies them; there is no
``copy_creds`` step in ``kernel/mm/fork.py``, and exit drops none), so the
counts stay balanced; :func:`copy_creds` and :func:`exit_creds` are the
kernel's functions for callers that want a task to own its credentials.

``override_creds``/``revert_creds`` follow Linux 6.14+ (the series' v6.17
base): they swap ``current->cred`` and take no reference.

Per-kernel state (the cache, ``init_cred``, the pending RCU callbacks) is a
:class:`CredState` kept in a weak mapping keyed by the kernel
(:func:`cred_state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kpkeys_sim.kernel.arch import arch_kpkeys_enabled, kernel_entry, kernel_exit
from kpkeys_sim.kernel.errors import ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.kpkeys.core import (
    KPKEYS_GUARD,
    KPKEYS_GUARD_NOOP,
    KPKEYS_LVL_CRED,
    KPKEYS_LVL_UNRESTRICTED,
    KPKEYS_PKEY_CRED,
    KPKEYS_PKEY_DEFAULT,
    KpkeysGuard,
)
from kpkeys_sim.kernel.kpkeys.warn import WARN_ON
from kpkeys_sim.kernel.mm.addr import page_address
from kpkeys_sim.kernel.mm.gfp import GFP_KERNEL
from kpkeys_sim.kernel.mm.maccess import __do_kernel_fault, kernel_store_u64
from kpkeys_sim.kernel.mm.set_memory import set_memory_pkey
from kpkeys_sim.kernel.mm.slab import (
    SLAB_ACCOUNT,
    SLAB_HWCACHE_ALIGN,
    SLAB_PANIC,
    SLAB_SET_PKEY,
    KmemCache,
    SlabAllocator,
    kfree,
    kmalloc,
    kmem_cache_alloc,
    kmem_cache_create,
    kmem_cache_free,
    virt_to_cache,
)
from kpkeys_sim.kernel.sched import current, task_struct
from kpkeys_sim.machine.mmu import Fault

__all__ = [
    "CAP_FULL_SET",
    "CRED_ALIGN",
    "CRED_FIELDS",
    "CRED_SIZE",
    "KPKEYS_HARDENED_CRED_KEY",
    "OFF_CAP_AMBIENT",
    "OFF_CAP_BSET",
    "OFF_CAP_EFFECTIVE",
    "OFF_CAP_INHERITABLE",
    "OFF_CAP_PERMITTED",
    "OFF_EGID",
    "OFF_EUID",
    "OFF_FSGID",
    "OFF_FSUID",
    "OFF_GID",
    "OFF_NON_RCU",
    "OFF_RCU_FUNC",
    "OFF_RCU_NEXT",
    "OFF_SECUREBITS",
    "OFF_SGID",
    "OFF_SUID",
    "OFF_UID",
    "OFF_USAGE",
    "PUT_CRED_RCU",
    "CredState",
    "__put_cred",
    "call_rcu",
    "commit_creds",
    "copy_creds",
    "cred_field",
    "cred_init",
    "cred_is_protected",
    "cred_state",
    "current_cred",
    "exit_creds",
    "get_cred",
    "get_cred_many",
    "install_kpkeys_hardened_cred",
    "kpkeys_cred_free_slab",
    "kpkeys_cred_new_slab",
    "kpkeys_hardened_cred",
    "kpkeys_hardened_cred_enabled",
    "kpkeys_rcu",
    "override_creds",
    "prepare_creds",
    "prepare_protected_creds",
    "protect_creds",
    "put_cred",
    "put_cred_many",
    "put_cred_rcu",
    "rcu_barrier",
    "revert_creds",
]

# --- struct cred layout (see the module docstring) ----------------------------------------

OFF_USAGE = 0
OFF_UID = 8
OFF_GID = 16
OFF_SUID = 24
OFF_SGID = 32
OFF_EUID = 40
OFF_EGID = 48
OFF_FSUID = 56
OFF_FSGID = 64
OFF_SECUREBITS = 72
OFF_CAP_INHERITABLE = 80
OFF_CAP_PERMITTED = 88
OFF_CAP_EFFECTIVE = 96
OFF_CAP_BSET = 104
OFF_CAP_AMBIENT = 112
OFF_RCU_NEXT = 120
#: ``non_rcu`` is in a union with ``rcu``: it shares ``rcu.next``'s word.
OFF_NON_RCU = OFF_RCU_NEXT
OFF_RCU_FUNC = 128
#: ``sizeof(struct cred)`` in the model.
CRED_SIZE = 136
#: ``__alignof__(struct cred)`` (``KMEM_CACHE`` passes it; HWCACHE_ALIGN raises it to 64).
CRED_ALIGN = 8

#: Field name -> offset, in layout order.
CRED_FIELDS: dict[str, int] = {
    "usage": OFF_USAGE,
    "uid": OFF_UID,
    "gid": OFF_GID,
    "suid": OFF_SUID,
    "sgid": OFF_SGID,
    "euid": OFF_EUID,
    "egid": OFF_EGID,
    "fsuid": OFF_FSUID,
    "fsgid": OFF_FSGID,
    "securebits": OFF_SECUREBITS,
    "cap_inheritable": OFF_CAP_INHERITABLE,
    "cap_permitted": OFF_CAP_PERMITTED,
    "cap_effective": OFF_CAP_EFFECTIVE,
    "cap_bset": OFF_CAP_BSET,
    "cap_ambient": OFF_CAP_AMBIENT,
    "rcu.next": OFF_RCU_NEXT,
    "rcu.func": OFF_RCU_FUNC,
}

#: ``CAP_FULL_SET``: capabilities 0..``CAP_LAST_CAP`` (40, ``CAP_CHECKPOINT_RESTORE``).
CAP_FULL_SET = (1 << 41) - 1
#: The value :func:`call_rcu` stores in ``rcu.func`` for ``put_cred_rcu`` (a model marker,
#: standing for the function's address; the only callback the model queues).
PUT_CRED_RCU = 0xFFFF_8000_0C4E_D000

#: ``kpkeys_hardened_cred_key`` (the feature's static key).
KPKEYS_HARDENED_CRED_KEY = "kpkeys_hardened_cred_key"

_CRED_JAR_FLAGS = SLAB_HWCACHE_ALIGN | SLAB_PANIC | SLAB_ACCOUNT

# The guards (``linux/cred.h`` and the RCU code of the series, spec §7.6).
_HARDENED_CRED = KPKEYS_GUARD("kpkeys_hardened_cred", KPKEYS_LVL_CRED)
_HARDENED_CRED_NOOP = KPKEYS_GUARD_NOOP("kpkeys_hardened_cred")
_RCU = KPKEYS_GUARD("kpkeys_rcu", KPKEYS_LVL_UNRESTRICTED)
_RCU_NOOP = KPKEYS_GUARD_NOOP("kpkeys_rcu")


def kpkeys_hardened_cred(k: Kernel) -> KpkeysGuard:
    """``guard(kpkeys_hardened_cred)()``: one guard scope (``with kpkeys_hardened_cred(k):``).

    ``KPKEYS_GUARD(kpkeys_hardened_cred, KPKEYS_LVL_CRED)`` when the cred series
    is configured (it switches when ``arch_kpkeys_enabled()``), the NOOP guard
    of the same name otherwise.
    """
    return (_HARDENED_CRED if k.config.kpkeys_cred_levels else _HARDENED_CRED_NOOP)(k)


def kpkeys_rcu(k: Kernel) -> KpkeysGuard:
    """``guard(kpkeys_rcu)()``: ``KPKEYS_LVL_UNRESTRICTED`` (``CONFIG_KPKEYS_UNRESTRICTED_RCU``).

    On with the cred series (``config.kpkeys_cred_levels``), NOOP otherwise.
    """
    return (_RCU if k.config.kpkeys_cred_levels else _RCU_NOOP)(k)


def kpkeys_hardened_cred_enabled(k: Kernel) -> bool:
    """``kpkeys_hardened_cred_enabled()``: the static key set by :func:`cred_init`."""
    return k.static_branch(KPKEYS_HARDENED_CRED_KEY)


# --- per-kernel state ---------------------------------------------------------------------


@dataclass(slots=True)
class CredState:
    """The credential state of one kernel.

    ``cred_jar`` is the cache (``SLAB_SET_PKEY`` when the feature is on),
    ``init_cred`` the VA of ``init_task``'s credentials, ``rcu_pending`` the
    ``rcu_head`` VAs queued by :func:`call_rcu`, oldest first.
    """

    cred_jar: KmemCache
    init_cred: int = 0
    rcu_pending: list[int] = field(default_factory=list)


def cred_state(k: Kernel) -> CredState:
    """The :class:`CredState` of ``k``; :class:`KernelBug` if :func:`cred_init` has not run."""
    st: CredState | None = k.cred
    if st is None:
        raise KernelBug("credentials used before cred_init()")
    return st


def _slab(k: Kernel) -> SlabAllocator:
    slab = k.slab
    if slab is None:
        raise KernelBug("cred: the slab allocator is not up (kmem_cache_init has not run)")
    return slab


# --- memory accesses ----------------------------------------------------------------------


def _load(k: Kernel, va: int) -> int:
    """A plain kernel 64-bit load; a fault is an oops."""
    try:
        return k.machine.load_u64(k.cpu, va)
    except Fault as f:
        kernel_entry(k)
        kernel_exit(k)
        __do_kernel_fault(k, f)


def cred_field(k: Kernel, cred: int, name: str) -> int:
    """``cred->name`` read by the kernel (a checked load; ``name`` as in :data:`CRED_FIELDS`)."""
    return _load(k, cred + CRED_FIELDS[name])


def _read_cred(k: Kernel, cred: int) -> list[int]:
    return [_load(k, cred + off) for off in range(0, CRED_SIZE, 8)]


def _write_cred(k: Kernel, cred: int, words: list[int]) -> None:
    for i, value in enumerate(words):
        kernel_store_u64(k, cred + 8 * i, value)


def _copy_cred(k: Kernel, dst: int, src: int) -> None:
    """``*dst = *src`` then ``usage = 1``, ``non_rcu = 0`` (as ``prepare_creds`` does)."""
    words = _read_cred(k, src)
    words[OFF_USAGE // 8] = 1
    words[OFF_NON_RCU // 8] = 0
    _write_cred(k, dst, words)


def _phys(k: Kernel, cred: int) -> int:
    return k.pgt.pa(cred)


def cred_is_protected(k: Kernel, cred: int) -> bool:
    """The object's slab has ``SLAB_SET_PKEY`` (what ``put_cred_rcu`` tests)."""
    cache = virt_to_cache(_slab(k), _phys(k, cred))
    return cache is not None and bool(cache.flags & SLAB_SET_PKEY)


# --- the SLAB_SET_PKEY slab hooks ---------------------------------------------------------


def kpkeys_cred_new_slab(k: Kernel, cache: KmemCache, pfn: int, order: int) -> bool:
    """A new slab of a ``SLAB_SET_PKEY`` cache gets ``KPKEYS_PKEY_CRED`` (``allocate_slab``).

    ``set_memory_pkey(slab_address, 1 << order, KPKEYS_PKEY_CRED)``; an error
    WARNs and fails the slab allocation.  Other caches are left alone.
    """
    if not cache.flags & SLAB_SET_PKEY:
        return True
    ret = set_memory_pkey(k, page_address(k, pfn), 1 << order, KPKEYS_PKEY_CRED)
    WARN_ON(k, ret, f"SLAB_SET_PKEY: set_memory_pkey({cache.name} slab pfn {pfn:#x}): {ret}")
    return ret == 0


def kpkeys_cred_free_slab(k: Kernel, cache: KmemCache, pfn: int, order: int) -> None:
    """A ``SLAB_SET_PKEY`` slab gets ``KPKEYS_PKEY_DEFAULT`` back before it is freed."""
    if not cache.flags & SLAB_SET_PKEY:
        return
    ret = set_memory_pkey(k, page_address(k, pfn), 1 << order, KPKEYS_PKEY_DEFAULT)
    WARN_ON(k, ret, f"SLAB_SET_PKEY: reset of {cache.name} slab pfn {pfn:#x}: {ret}")


def _install_slab_hooks(k: Kernel, slab: SlabAllocator) -> None:
    prev_new = slab.new_slab_hook
    prev_free = slab.free_slab_hook

    def new_slab(cache: KmemCache, pfn: int, order: int) -> bool:
        if prev_new is not None and not prev_new(cache, pfn, order):
            return False
        return kpkeys_cred_new_slab(k, cache, pfn, order)

    def free_slab(cache: KmemCache, pfn: int, order: int) -> None:
        kpkeys_cred_free_slab(k, cache, pfn, order)
        if prev_free is not None:
            prev_free(cache, pfn, order)

    slab.new_slab_hook = new_slab
    slab.free_slab_hook = free_slab


# --- allocation ---------------------------------------------------------------------------


def _alloc_unprotected(k: Kernel, st: CredState) -> int | None:
    """Memory for a cred being prepared: ``kmalloc`` with the feature, ``cred_jar`` without."""
    slab = _slab(k)
    cpu = k.cpu.cpu_id
    if kpkeys_hardened_cred_enabled(k):
        pa = kmalloc(slab, CRED_SIZE, GFP_KERNEL, cpu)
    else:
        pa = kmem_cache_alloc(st.cred_jar, GFP_KERNEL, cpu)
    return None if pa is None else k.pgt.va(pa)


def _alloc_protected(k: Kernel, st: CredState) -> int | None:
    pa = kmem_cache_alloc(st.cred_jar, GFP_KERNEL, k.cpu.cpu_id)
    return None if pa is None else k.pgt.va(pa)


def _free_cred_memory(k: Kernel, st: CredState, cred: int) -> None:
    """``kmem_cache_free(cred_jar)`` for a ``SLAB_SET_PKEY`` object (and without the feature).

    With the feature, an object from elsewhere is ``kfree``'d.
    """
    slab = _slab(k)
    pa = _phys(k, cred)
    cpu = k.cpu.cpu_id
    if cred_is_protected(k, cred) or not kpkeys_hardened_cred_enabled(k):
        kmem_cache_free(st.cred_jar, pa, cpu)
    else:
        kfree(slab, pa, cpu)


# --- reference counting ---------------------------------------------------------------------


def get_cred_many(k: Kernel, cred: int, n: int) -> int:
    """``get_cred_many(cred, n)``: ``non_rcu = 0``, ``usage += n`` under the guard; returns cred."""
    if not cred:
        return cred
    with kpkeys_hardened_cred(k):
        kernel_store_u64(k, cred + OFF_NON_RCU, 0)
        kernel_store_u64(k, cred + OFF_USAGE, _load(k, cred + OFF_USAGE) + n)
    return cred


def get_cred(k: Kernel, cred: int) -> int:
    """``get_cred(cred)``: one more reference (guarded write)."""
    return get_cred_many(k, cred, 1)


def put_cred_many(k: Kernel, cred: int, n: int) -> None:
    """``put_cred_many(cred, n)``: ``usage -= n`` under the guard; ``__put_cred`` at zero."""
    if not cred:
        return
    with kpkeys_hardened_cred(k):
        usage = _load(k, cred + OFF_USAGE) - n
        kernel_store_u64(k, cred + OFF_USAGE, usage & 0xFFFF_FFFF_FFFF_FFFF)
        if usage == 0:
            __put_cred(k, cred)
        elif usage < 0:
            raise KernelBug(f"put_cred: usage of cred {cred:#x} went negative ({usage})")


def put_cred(k: Kernel, cred: int) -> None:
    """``put_cred(cred)``: drop one reference (guarded write)."""
    put_cred_many(k, cred, 1)


def __put_cred(k: Kernel, cred: int) -> None:
    """``__put_cred(cred)``: the last reference is gone; free after an RCU grace period.

    BUGs if the count is not zero or the cred is still ``current``'s; then
    ``call_rcu(&cred->rcu, put_cred_rcu)`` (``non_rcu`` is never set in the
    model, so the immediate path is not taken).  Called from
    :func:`put_cred_many`, inside its guard.
    """
    usage = _load(k, cred + OFF_USAGE)
    if usage:
        raise KernelBug(f"BUG_ON: __put_cred({cred:#x}) with usage {usage}")
    task = current(k)
    if cred in (task.cred, task.real_cred):
        raise KernelBug(f"BUG_ON: __put_cred({cred:#x}) of current's credentials")
    if _load(k, cred + OFF_NON_RCU):
        put_cred_rcu(k, cred)
    else:
        call_rcu(k, cred + OFF_RCU_NEXT)


def call_rcu(k: Kernel, head: int) -> None:
    """``call_rcu(head, put_cred_rcu)`` (``__call_rcu_common`` + ``rcu_segcblist_enqueue``).

    ``head->func``/``head->next`` are written at the caller's level; the tail
    write into the previous callback's ``rcu_head`` takes ``kpkeys_rcu``.
    """
    st = cred_state(k)
    kernel_store_u64(k, head + 8, PUT_CRED_RCU)
    kernel_store_u64(k, head, 0)
    if st.rcu_pending:
        with kpkeys_rcu(k):
            kernel_store_u64(k, st.rcu_pending[-1], head)
    st.rcu_pending.append(head)


def rcu_barrier(k: Kernel) -> int:
    """Run every queued callback (a grace period elapses); returns how many ran.

    Each is ``rcu_do_batch``: dequeue, ``WRITE_ONCE(rhp->func, 0)`` under
    ``kpkeys_rcu``, then ``put_cred_rcu``.
    """
    st = cred_state(k)
    ran = 0
    while st.rcu_pending:
        head = st.rcu_pending.pop(0)
        func = _load(k, head + 8)
        if func != PUT_CRED_RCU:
            raise KernelBug(f"rcu_do_batch: rcu_head {head:#x} has func {func:#x}")
        with kpkeys_rcu(k):
            kernel_store_u64(k, head + 8, 0)
        put_cred_rcu(k, head - OFF_RCU_NEXT)
        ran += 1
    return ran


def put_cred_rcu(k: Kernel, cred: int) -> None:
    """``put_cred_rcu(&cred->rcu)``: check the count is zero, then free the object.

    ``kmem_cache_free(cred_jar, cred)`` when the object's slab has
    ``SLAB_SET_PKEY``, ``kfree(cred)`` otherwise (without the feature every
    cred is a ``cred_jar`` object, freed there as upstream does).
    """
    usage = _load(k, cred + OFF_USAGE)
    if usage:
        raise KernelBug(f"CRED: put_cred_rcu() sees {cred:#x} with usage {usage}")
    _free_cred_memory(k, cred_state(k), cred)


# --- preparing and committing ---------------------------------------------------------------


def current_cred(k: Kernel) -> int:
    """``current_cred()``: ``current->cred``."""
    return current(k).cred


def prepare_creds(k: Kernel) -> int | None:
    """``prepare_creds()``: a writable copy of ``current->cred`` with ``usage = 1``, or None.

    Normal memory: ``kmalloc`` with the feature (spec §7.6), ``cred_jar``
    without.  Nothing is protected yet, so no guard is needed.
    """
    st = cred_state(k)
    old = current(k).cred
    if not old:
        raise KernelBug("prepare_creds: current has no credentials")
    new = _alloc_unprotected(k, st)
    if new is None:
        return None
    _copy_cred(k, new, old)
    return new


def protect_creds(k: Kernel, cred: int) -> int:
    """``protect_creds(cred)``: move ``cred`` into ``cred_jar``; returns the new pointer.

    With the feature: allocate in ``cred_jar``, copy every field (``usage``
    included) under ``kpkeys_hardened_cred``, ``kfree`` the original, return
    the copy — a *different* pointer; the caller's pointer is dead.  A cred
    already in a ``SLAB_SET_PKEY`` slab is returned as is.  If the allocation
    fails it WARNs and returns ``cred`` unprotected (a missed protection only
    leaves creds writable, spec §7.6).  Without the feature: returns ``cred``.
    """
    if not cred or not kpkeys_hardened_cred_enabled(k) or cred_is_protected(k, cred):
        return cred
    st = cred_state(k)
    new = _alloc_protected(k, st)
    if new is None:
        WARN_ON(k, True, f"protect_creds: no memory, cred {cred:#x} stays unprotected")
        return cred
    words = _read_cred(k, cred)
    with kpkeys_hardened_cred(k):
        _write_cred(k, new, words)
    kfree(_slab(k), _phys(k, cred), k.cpu.cpu_id)
    return new


def prepare_protected_creds(k: Kernel) -> int | None:
    """``prepare_protected_creds()``: as :func:`prepare_creds`, allocated in ``cred_jar``.

    The copy is written under ``kpkeys_hardened_cred``; without the feature
    this is :func:`prepare_creds`.
    """
    if not kpkeys_hardened_cred_enabled(k):
        return prepare_creds(k)
    st = cred_state(k)
    old = current(k).cred
    if not old:
        raise KernelBug("prepare_protected_creds: current has no credentials")
    new = _alloc_protected(k, st)
    if new is None:
        return None
    with kpkeys_hardened_cred(k):
        _copy_cred(k, new, old)
    return new


def commit_creds(k: Kernel, new: int) -> int:
    """``commit_creds(new)``: install ``new`` as ``current``'s credentials; returns 0.

    BUGs unless ``current->cred == current->real_cred`` and ``usage(new) >=
    1``.  With the feature ``new`` is first moved into protected memory
    (:func:`protect_creds`): the caller's reference is consumed and its
    pointer must not be used again.  Then ``get_cred`` (the second reference,
    for ``cred``), both pointers are set, and the old creds lose both
    references (``put_cred_many(old, 2)``).  A task with no credentials yet
    (``init_task`` during :func:`cred_init`) has nothing to drop.
    """
    task = current(k)
    old = task.real_cred
    if task.cred != old:
        raise KernelBug("BUG_ON: commit_creds() with task->cred != task->real_cred")
    if _load(k, new + OFF_USAGE) < 1:
        raise KernelBug(f"BUG_ON: commit_creds({new:#x}) with usage < 1")
    new = protect_creds(k, new)
    get_cred(k, new)
    task.real_cred = new
    task.cred = new
    if old:
        put_cred_many(k, old, 2)
    return 0


def override_creds(k: Kernel, new: int) -> int:
    """``override_creds(new)``: ``current->cred = new``; returns the old pointer (no refcount).

    Callers that prepared ``new`` must call :func:`protect_creds` themselves
    (the series converts the call sites, spec §7.6).
    """
    task = current(k)
    old = task.cred
    task.cred = new
    return old


def revert_creds(k: Kernel, old: int) -> int:
    """``revert_creds(old)``: ``current->cred = old``; returns the overriding pointer."""
    task = current(k)
    override = task.cred
    task.cred = old
    return override


def copy_creds(k: Kernel, p: task_struct) -> int:
    """``copy_creds(p, clone_flags)`` without ``CLONE_THREAD``: ``p`` gets its own credentials.

    ``p``'s pointers were copied from its parent without references
    (``dup_task_struct``); they are replaced by a copy of ``current``'s
    (:func:`prepare_creds`, moved into protected memory with the feature)
    holding two references.  Returns 0 or ``-ENOMEM``.  Not called by the
    model's ``kernel_clone``.
    """
    new = prepare_creds(k)
    if new is None:
        return -ENOMEM
    new = protect_creds(k, new)
    get_cred(k, new)
    p.real_cred = new
    p.cred = new
    return 0


def exit_creds(k: Kernel, p: task_struct) -> None:
    """``exit_creds(p)``: clear ``p``'s pointers and drop the references they held."""
    real_cred, cred = p.real_cred, p.cred
    p.real_cred = 0
    p.cred = 0
    if real_cred == cred:
        put_cred_many(k, cred, 2)
    else:
        put_cred(k, real_cred)
        put_cred(k, cred)


# --- boot -------------------------------------------------------------------------------------


def cred_init(k: Kernel) -> None:
    """``cred_init()``: the ``cred_jar`` cache and ``init_task``'s credentials.

    Enables ``kpkeys_hardened_cred_key`` when the cred series is configured
    and kpkeys are available, then creates ``cred_jar`` (with
    ``SLAB_SET_PKEY`` and the slab pkey hooks when enabled), prepares
    ``init_cred`` (uid/gid 0, full capability sets, ``usage`` 1) in normal
    memory and commits it on the current task (``init_task``); every other
    idle task takes two references to it.
    """
    if k.cred is not None:
        raise KernelBug("cred_init() called twice")
    slab = _slab(k)
    hardened = bool(k.config.kpkeys_cred_levels and arch_kpkeys_enabled(k))
    flags = _CRED_JAR_FLAGS
    if hardened:
        k.static_branch_enable(KPKEYS_HARDENED_CRED_KEY)
        flags |= SLAB_SET_PKEY
    cred_jar = kmem_cache_create(slab, "cred_jar", CRED_SIZE, CRED_ALIGN, flags)
    if hardened:
        _install_slab_hooks(k, slab)
    st = CredState(cred_jar)
    k.cred = st
    init = _alloc_unprotected(k, st)
    if init is None:
        raise KernelBug("cred_init: no memory for init_cred")
    words = [0] * (CRED_SIZE // 8)
    words[OFF_USAGE // 8] = 1
    for off in (OFF_CAP_PERMITTED, OFF_CAP_EFFECTIVE, OFF_CAP_BSET):
        words[off // 8] = CAP_FULL_SET
    _write_cred(k, init, words)
    init_task = current(k)
    commit_creds(k, init)
    st.init_cred = init_task.cred
    for idle in k.sched.idle:
        if idle is not init_task:
            get_cred_many(k, st.init_cred, 2)
            idle.cred = idle.real_cred = st.init_cred
    where = "SLAB_SET_PKEY, pkey 2" if hardened else "unprotected"
    k.printk(f"cred_init: cred_jar ({where}), init_cred at {st.init_cred:#x}")


def install_kpkeys_hardened_cred(k: Kernel) -> None:
    """The boot step (``start_kernel`` → ``cred_init()``): only with the cred series configured."""
    if k.config.kpkeys_cred_levels:
        cred_init(k)
