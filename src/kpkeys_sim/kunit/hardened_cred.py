"""The cred series' KUnit suite (``mm/tests/kpkeys_hardened_cred_kunit.c``, v2 8/8), plus positives.

Spec kpkeys-series.md §5.2 (and §7.6 for the feature, ``kernel/cred.py`` for
the model).  Each case first skips with "kpkeys are not supported" when
``arch_kpkeys_enabled()`` is false.  A write is ``increment_uid(cred)``: read
``cred->uid``, add one, store it back through ``copy_to_kernel_nofault()`` at
the default level with no guard, so a protected cred gives ``-EFAULT``.

Suite "Hardened credentials using kpkeys":

* ``write_current_creds``: ``current->cred`` and ``current->real_cred`` are
  not writable.
* ``write_new_creds``: ``prepare_creds()`` memory is writable (0);
  ``protect_creds()`` returns a different pointer, not writable; ``put_cred``;
  ``prepare_protected_creds()`` memory is not writable; ``put_cred``.

The failure messages are the model's (the spec does not quote the test's).

The model's positive suite "kpkeys_hardened_cred_positive" (as the page-table
one, spec §5.1 "A model can also add positive tests"):

* ``guarded_refcount_writers``: an unguarded write to a protected cred's
  ``usage`` faults, while ``get_cred``/``put_cred`` (guarded writers) change
  it from the default level and leave the pkey register as they found it; the
  last ``put_cred`` frees the object after the RCU grace period
  (``rcu_barrier``).
* ``commit_creds_moves_creds``: the case's kthread first owns its
  credentials (``copy_creds``: the model's ``kernel_clone`` shares its
  parent's); ``commit_creds`` of writable prepared creds installs a
  different, protected object with two references; the old creds are freed.
* ``override_and_revert_creds``: ``override_creds`` swaps ``current->cred``
  only (``real_cred`` stays), ``revert_creds`` swaps it back.
* ``freed_cred_slab_writable``: a ``cred_jar`` slab emptied and released by
  ``kmem_cache_shrink`` is writable again (pkey DEFAULT).
"""

from __future__ import annotations

from kpkeys_sim.kernel.arch import arch_kpkeys_enabled
from kpkeys_sim.kernel.cred import (
    OFF_UID,
    OFF_USAGE,
    commit_creds,
    copy_creds,
    cred_field,
    cred_is_protected,
    cred_state,
    exit_creds,
    get_cred,
    override_creds,
    prepare_creds,
    prepare_protected_creds,
    protect_creds,
    put_cred,
    rcu_barrier,
    revert_creds,
)
from kpkeys_sim.kernel.errors import EFAULT
from kpkeys_sim.kernel.mm.maccess import copy_to_kernel_nofault
from kpkeys_sim.kernel.mm.slab import kmem_cache_shrink
from kpkeys_sim.kernel.sched import current
from kpkeys_sim.kunit.framework import (
    KUNIT_ASSERT_EQ,
    KUNIT_ASSERT_NOT_NULL,
    KUNIT_ASSERT_TRUE_MSG,
    KUNIT_CASE,
    KUNIT_EXPECT_EQ,
    KUNIT_EXPECT_EQ_MSG,
    KUNIT_EXPECT_NE_MSG,
    KUNIT_EXPECT_TRUE_MSG,
    Kunit,
    KunitSuite,
    kunit_add_action,
    kunit_skip,
)

__all__ = [
    "KUNIT_MODULE",
    "cred_suites",
    "increment_uid",
    "kpkeys_hardened_cred_positive_suite",
    "kpkeys_hardened_cred_suite",
]

#: ``KBUILD_MODNAME`` of ``mm/tests/kpkeys_hardened_cred_kunit.c``.
KUNIT_MODULE = "kpkeys_hardened_cred_kunit"

_NOT_SUPPORTED = "kpkeys are not supported"


def _skip_unless_kpkeys(test: Kunit) -> None:
    """``if (!arch_kpkeys_enabled()) kunit_skip(test, "kpkeys are not supported");``."""
    if not arch_kpkeys_enabled(test.k):
        kunit_skip(test, _NOT_SUPPORTED)


def _u64(value: int) -> bytes:
    return (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")


def increment_uid(test: Kunit, cred: int) -> int:
    """The test's ``increment_uid(cred)``: ``uid + 1`` via ``copy_to_kernel_nofault``.

    Returns 0 or ``-EFAULT``.
    """
    k = test.k
    uid = cred_field(k, cred, "uid")
    return copy_to_kernel_nofault(k, cred + OFF_UID, _u64(uid + 1))


# --- the series' suite (cred v2 8/8) ----------------------------------------------------------


def write_current_creds(test: Kunit) -> None:
    """``current->cred`` and ``current->real_cred`` cannot be written at the default level."""
    _skip_unless_kpkeys(test)
    task = current(test.k)
    ret = increment_uid(test, task.cred)
    KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Write to current->cred wasn't prevented")
    ret = increment_uid(test, task.real_cred)
    KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Write to current->real_cred wasn't prevented")


def write_new_creds(test: Kunit) -> None:
    """Prepared creds are writable; protected and prepared-protected creds are not."""
    _skip_unless_kpkeys(test)
    k = test.k
    cred = prepare_creds(k)
    KUNIT_ASSERT_NOT_NULL(test, cred)
    assert cred is not None
    ret = increment_uid(test, cred)
    KUNIT_EXPECT_EQ_MSG(test, ret, 0, "Write to prepared creds was prevented")
    protected_cred = protect_creds(k, cred)
    KUNIT_EXPECT_NE_MSG(
        test, protected_cred, cred, "protect_creds() did not return a different pointer"
    )
    ret = increment_uid(test, protected_cred)
    KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Write to protected creds wasn't prevented")
    put_cred(k, protected_cred)
    prepared_protected = prepare_protected_creds(k)
    KUNIT_ASSERT_NOT_NULL(test, prepared_protected)
    assert prepared_protected is not None
    ret = increment_uid(test, prepared_protected)
    KUNIT_EXPECT_EQ_MSG(
        test, ret, -EFAULT, "Write to creds from prepare_protected_creds() wasn't prevented"
    )
    put_cred(k, prepared_protected)


def kpkeys_hardened_cred_suite() -> KunitSuite:
    """cred v2 8/8: "Hardened credentials using kpkeys"."""
    return KunitSuite(
        "Hardened credentials using kpkeys",
        (KUNIT_CASE(write_current_creds), KUNIT_CASE(write_new_creds)),
        KUNIT_MODULE,
    )


# --- the model's positive suite -----------------------------------------------------------------


def guarded_refcount_writers(test: Kunit) -> None:
    """``get_cred``/``put_cred`` write a protected ``usage``; a raw write faults."""
    _skip_unless_kpkeys(test)
    k = test.k
    jar = cred_state(k).cred_jar
    rcu_barrier(k)  # creds other cases put are freed first
    inuse = jar.nr_inuse
    cred = prepare_protected_creds(k)
    KUNIT_ASSERT_NOT_NULL(test, cred)
    assert cred is not None
    KUNIT_EXPECT_EQ(test, jar.nr_inuse, inuse + 1)
    ret = copy_to_kernel_nofault(k, cred + OFF_USAGE, _u64(5))
    KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Unguarded write to usage wasn't prevented")
    before = k.cpu.read_pkey_reg()
    get_cred(k, cred)
    KUNIT_EXPECT_EQ(test, cred_field(k, cred, "usage"), 2)
    put_cred(k, cred)
    KUNIT_EXPECT_EQ(test, cred_field(k, cred, "usage"), 1)
    KUNIT_EXPECT_EQ(test, k.cpu.read_pkey_reg(), before)
    put_cred(k, cred)
    KUNIT_EXPECT_EQ(test, cred_field(k, cred, "usage"), 0)
    rcu_barrier(k)
    KUNIT_EXPECT_EQ_MSG(test, jar.nr_inuse, inuse, "put_cred_rcu did not free the cred")


def commit_creds_moves_creds(test: Kunit) -> None:
    """``commit_creds`` moves writable creds into protected memory and drops the old ones."""
    _skip_unless_kpkeys(test)
    k = test.k
    task = current(k)
    inherited = (task.cred, task.real_cred)

    def restore() -> None:
        exit_creds(k, task)
        task.cred, task.real_cred = inherited
        rcu_barrier(k)

    KUNIT_ASSERT_EQ(test, copy_creds(k, task), 0)
    kunit_add_action(test, restore)
    own = task.cred
    KUNIT_EXPECT_EQ(test, cred_field(k, own, "usage"), 2)
    new = prepare_creds(k)
    KUNIT_ASSERT_NOT_NULL(test, new)
    assert new is not None
    KUNIT_ASSERT_TRUE_MSG(test, not cred_is_protected(k, new), "prepare_creds() is protected")
    ret = increment_uid(test, new)
    KUNIT_EXPECT_EQ_MSG(test, ret, 0, "Write to prepared creds was prevented")
    KUNIT_ASSERT_EQ(test, commit_creds(k, new), 0)
    KUNIT_EXPECT_NE_MSG(test, task.cred, new, "commit_creds() did not move the creds")
    KUNIT_EXPECT_EQ(test, task.real_cred, task.cred)
    KUNIT_EXPECT_TRUE_MSG(test, cred_is_protected(k, task.cred), "Committed creds unprotected")
    KUNIT_EXPECT_EQ(test, cred_field(k, task.cred, "usage"), 2)
    KUNIT_EXPECT_EQ(test, cred_field(k, own, "usage"), 0)
    ret = increment_uid(test, task.cred)
    KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Write to committed creds wasn't prevented")


def override_and_revert_creds(test: Kunit) -> None:
    """``override_creds`` replaces ``current->cred`` only; ``revert_creds`` puts it back."""
    _skip_unless_kpkeys(test)
    k = test.k
    task = current(k)
    real = task.real_cred
    cred = prepare_protected_creds(k)
    KUNIT_ASSERT_NOT_NULL(test, cred)
    assert cred is not None
    old = override_creds(k, cred)
    KUNIT_EXPECT_EQ(test, task.cred, cred)
    KUNIT_EXPECT_EQ(test, task.real_cred, real)
    ret = increment_uid(test, task.cred)
    KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Write to overriding creds wasn't prevented")
    KUNIT_EXPECT_EQ(test, revert_creds(k, old), cred)
    KUNIT_EXPECT_EQ(test, task.cred, old)
    put_cred(k, cred)
    rcu_barrier(k)


def freed_cred_slab_writable(test: Kunit) -> None:
    """A ``cred_jar`` slab released to the buddy allocator gets pkey DEFAULT back."""
    _skip_unless_kpkeys(test)
    k = test.k
    jar = cred_state(k).cred_jar
    slabs = {pfn for pfn, _, _ in jar.slabs()}
    creds: list[int] = []
    # Allocate until a slab that did not exist before holds one of our creds.
    fresh: set[int] = set()
    while not fresh and len(creds) < 4 * jar.objects:
        cred = prepare_protected_creds(k)
        KUNIT_ASSERT_NOT_NULL(test, cred)
        assert cred is not None
        creds.append(cred)
        fresh = {pfn for pfn, _, _ in jar.slabs()} - slabs
    KUNIT_ASSERT_TRUE_MSG(test, bool(fresh), "No new cred_jar slab")
    pfn = min(fresh)
    va = k.pgt.va(pfn << k.pgt.PAGE_SHIFT)
    ret = copy_to_kernel_nofault(k, va, _u64(0))
    KUNIT_EXPECT_EQ_MSG(test, ret, -EFAULT, "Write to a cred_jar slab wasn't prevented")
    for cred in creds:
        put_cred(k, cred)
    rcu_barrier(k)
    kmem_cache_shrink(jar)
    KUNIT_ASSERT_TRUE_MSG(
        test, pfn not in {p for p, _, _ in jar.slabs()}, "Empty cred_jar slab not released"
    )
    ret = copy_to_kernel_nofault(k, va, _u64(0))
    KUNIT_EXPECT_EQ_MSG(test, ret, 0, "Released cred_jar slab is not writable")


def kpkeys_hardened_cred_positive_suite() -> KunitSuite:
    """The model's positive cases for the cred series."""
    return KunitSuite(
        "kpkeys_hardened_cred_positive",
        (
            KUNIT_CASE(guarded_refcount_writers),
            KUNIT_CASE(commit_creds_moves_creds),
            KUNIT_CASE(override_and_revert_creds),
            KUNIT_CASE(freed_cred_slab_writable),
        ),
        KUNIT_MODULE,
    )


def cred_suites() -> list[KunitSuite]:
    """What runs with the cred series configured: its suite, then the positive suite."""
    return [kpkeys_hardened_cred_suite(), kpkeys_hardened_cred_positive_suite()]
