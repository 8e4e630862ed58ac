"""The generic kpkeys framework: levels, set/restore, the v8 context API, guards.

This is ``include/linux/kpkeys.h`` (v5 01/18; v7 renames; v8 API) and
``include/asm-generic/kpkeys.h`` (spec kpkeys-series.md §1).  The arch
back-ends are in :mod:`kpkeys_sim.kernel.arch` and are reached through
:func:`kpkeys_sim.kernel.arch.kpkeys_arch`.

Levels.  A *level* (v7: *context*) names one configuration of the per-CPU
pkey register (§1.1, §1.2).  The kernel requires the level to be a
compile-time constant inside ``[KPKEYS_LVL_MIN, KPKEYS_LVL_MAX]``, so that
no gadget exists that sets the register to an attacker-chosen value (§1.4,
§1.8).  Python has no compile-time constants; the model enforces the rule
twice:

* at run time, levels are members of the :class:`KpkeysLevel` enum and every
  entry point raises ``TypeError`` for anything else (a plain ``int`` above
  all), and ``ValueError`` for a level outside the range of the running
  configuration;
* statically, ``tests/test_kpkeys_constant_rule.py`` walks the package's
  source and requires every call site to name a ``KPKEYS_LVL_*`` /
  ``KPKEYS_CTX_*`` constant.

The range depends on which series are applied (§1.2): ``KPKEYS_LVL_MAX`` is
``KPKEYS_LVL_PGTABLES`` for the page-table series, and becomes
``KPKEYS_LVL_UNRESTRICTED`` with the cred series (cred v2 2/8, 5/8).  The
model selects the series at run time (``KernelConfig.kpkeys_cred_levels``),
so the bound used by the checks is :func:`kpkeys_lvl_max` of the config; the
module constant ``KPKEYS_LVL_MAX`` is the page-table series' value.

Set and restore (§1.4, §1.5).  :func:`kpkeys_set_level` returns the previous
register value, or ``KPKEYS_PKEY_REG_INVAL`` when nothing was written;
:func:`kpkeys_restore_pkey_reg` does nothing for ``INVAL``.  Whether an
unchanged value is skipped is ``KernelConfig.skip_unchanged_pkey_writes``
(off: RFC v5/v6/v7 arm64 always write and ISB; on: cred v2 1/8).  The v8
context API (:func:`kpkeys_enter_context`) always skips, as v8 builds the
skip into the arch hook (§1.10).

Guards (§1.6).  :func:`KPKEYS_GUARD_COND`, :func:`KPKEYS_GUARD` and
:func:`KPKEYS_GUARD_NOOP` define named guard *types*; ``with guard(k):`` is
``guard(name)()``/``scoped_guard``.  The condition is evaluated once, at
entry; the saved state is ``INVAL`` when it was false, so the restore path
never re-tests it (v1 09/16: enabling the page-table static key itself
writes page tables, so a guard may be entered with the key false and left
with it true).

Calling set/restore on a machine without the pkey feature is a kernel bug
(the register does not exist): the arch glue raises
:class:`~kpkeys_sim.kernel.arch.PkeyRegUnavailableError`.  Guards made with
``KPKEYS_GUARD`` never switch there, because their condition is false.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType
from typing import ClassVar

from kpkeys_sim.kernel.arch import _LOADED, arch_kpkeys_enabled, kpkeys_arch
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "KPKEYS_CTX_DEFAULT",
    "KPKEYS_CTX_MAX",
    "KPKEYS_CTX_MIN",
    "KPKEYS_CTX_PGTABLES",
    "KPKEYS_GUARD",
    "KPKEYS_GUARD_COND",
    "KPKEYS_GUARD_ENTER",
    "KPKEYS_GUARD_NOOP",
    "KPKEYS_LVL_CRED",
    "KPKEYS_LVL_DEFAULT",
    "KPKEYS_LVL_MAX",
    "KPKEYS_LVL_MIN",
    "KPKEYS_LVL_PGTABLES",
    "KPKEYS_LVL_UNRESTRICTED",
    "KPKEYS_PKEY_CRED",
    "KPKEYS_PKEY_DEFAULT",
    "KPKEYS_PKEY_PGTABLES",
    "KPKEYS_PKEY_REG_INVAL",
    "KPKEYS_RESTORE",
    "KPKEYS_SET_LEVEL",
    "KpkeysContext",
    "KpkeysGuard",
    "KpkeysLevel",
    "KpkeysState",
    "arch_kpkeys_enabled",
    "kpkeys_enabled",
    "kpkeys_enter_context",
    "kpkeys_leave_context",
    "kpkeys_lvl_max",
    "kpkeys_restore_pkey_reg",
    "kpkeys_set_context",
    "kpkeys_set_level",
    "kpkeys_supported",
]


class KpkeysLevel(IntEnum):
    """The kpkeys levels (v7: contexts), spec §1.2.

    Members are the only values the set/enter functions and guard factories
    accept.  ``KPKEYS_LVL_CRED`` and ``KPKEYS_LVL_UNRESTRICTED`` come from the
    cred series (v2 2/8 and 5/8; UNRESTRICTED was 2 until CRED took that value)
    and are refused unless ``KernelConfig.kpkeys_cred_levels`` is on.
    """

    KPKEYS_LVL_DEFAULT = 0
    KPKEYS_LVL_PGTABLES = 1
    KPKEYS_LVL_CRED = 2
    KPKEYS_LVL_UNRESTRICTED = 3


#: v7 name of the type (``KPKEYS_CTX_*`` are the same members).
KpkeysContext = KpkeysLevel

KPKEYS_LVL_DEFAULT = KpkeysLevel.KPKEYS_LVL_DEFAULT
KPKEYS_LVL_PGTABLES = KpkeysLevel.KPKEYS_LVL_PGTABLES
KPKEYS_LVL_CRED = KpkeysLevel.KPKEYS_LVL_CRED
KPKEYS_LVL_UNRESTRICTED = KpkeysLevel.KPKEYS_LVL_UNRESTRICTED
KPKEYS_LVL_MIN = KPKEYS_LVL_DEFAULT
#: The page-table series' maximum; the bound actually checked is :func:`kpkeys_lvl_max`.
KPKEYS_LVL_MAX = KPKEYS_LVL_PGTABLES

# v7 renaming (spec §1.9): same values under the new names.
KPKEYS_CTX_DEFAULT = KPKEYS_LVL_DEFAULT
KPKEYS_CTX_PGTABLES = KPKEYS_LVL_PGTABLES
KPKEYS_CTX_MIN = KPKEYS_LVL_MIN
KPKEYS_CTX_MAX = KPKEYS_LVL_MAX

# asm-generic/kpkeys.h (spec §1.3).  Both modelled architectures keep the
# generic values.
KPKEYS_PKEY_DEFAULT = 0
KPKEYS_PKEY_PGTABLES = 1
KPKEYS_PKEY_CRED = 2
#: A register value that never occurs once kpkeys run (arm64: pkey 0 is always
#: RWX; x86: unmanaged keys are access-disabled), used as "nothing to restore".
KPKEYS_PKEY_REG_INVAL = 0

KPKEYS_GUARD_ENTER = declare_event(
    "kpkeys_guard_enter", "kpkeys guard entered with its condition true", "kernel"
)
KPKEYS_SET_LEVEL = declare_event(
    "kpkeys_set_level",
    "kpkeys_set_level/kpkeys_enter_context that wrote the pkey register",
    "kernel",
)
KPKEYS_RESTORE = declare_event(
    "kpkeys_restore",
    "kpkeys_restore_pkey_reg/kpkeys_leave_context that wrote the pkey register",
    "kernel",
)

#: v7 ``kpkeys_enabled()`` and v8 ``kpkeys_supported()`` (spec §1.9, §1.10).
kpkeys_enabled = arch_kpkeys_enabled
kpkeys_supported = arch_kpkeys_enabled


def kpkeys_lvl_max(config: KernelConfig) -> KpkeysLevel:
    """``KPKEYS_LVL_MAX`` of the series ``config`` applies (spec §1.2)."""
    return KPKEYS_LVL_UNRESTRICTED if config.kpkeys_cred_levels else KPKEYS_LVL_PGTABLES


def _not_a_level(fn: str, level: object) -> TypeError:
    return TypeError(
        f"{fn} only takes constant values (a KPKEYS_LVL_*/KPKEYS_CTX_* constant), "
        f"got {level!r} of type {type(level).__name__}"
    )


def _set_level(k: Kernel, level: KpkeysLevel, skip_unchanged: bool) -> int:
    """Range-check ``level`` for ``k``'s configuration, switch, count a write."""
    if level > KPKEYS_LVL_PGTABLES and not k.config.kpkeys_cred_levels:
        raise ValueError(
            f"kpkeys level {level.name} ({int(level)}) is outside "
            f"[KPKEYS_LVL_MIN, KPKEYS_LVL_MAX] = [0, {int(KPKEYS_LVL_PGTABLES)}]: "
            "the cred levels are not configured (kpkeys_cred_levels = false)"
        )
    m = k.machine
    # kpkeys_arch(k), inlined (hot path: every switching guard and lazy-MMU section)
    ops = _LOADED.get(m.arch.name) or kpkeys_arch(k)
    reg = ops.arch_kpkeys_set_level(k, level, skip_unchanged)
    if reg != KPKEYS_PKEY_REG_INVAL:
        ins = m.instruments
        if ins.active:
            ins.emit(KPKEYS_SET_LEVEL)
    return reg


def kpkeys_set_level(k: Kernel, level: KpkeysLevel) -> int:
    """Switch ``k.cpu``'s pkey register to ``level`` (spec §1.4, v5 01/18).

    Returns the previous register value, to hand back exactly once to
    :func:`kpkeys_restore_pkey_reg`, or ``KPKEYS_PKEY_REG_INVAL`` if no write
    was needed (only when ``skip_unchanged_pkey_writes`` is on, §1.5).

    Raises ``TypeError`` unless ``level`` is a :class:`KpkeysLevel` member (the
    model of "only takes constant values"), ``ValueError`` if it is outside
    ``[KPKEYS_LVL_MIN, kpkeys_lvl_max(k.config)]``, and
    ``PkeyRegUnavailableError`` on a machine without the pkey feature (the
    kernel only calls this after checking ``arch_kpkeys_enabled()``).

    v7 name: :func:`kpkeys_set_context`.
    """
    if type(level) is not KpkeysLevel:
        raise _not_a_level("kpkeys_set_level", level)
    cfg = k.config
    if level > KPKEYS_LVL_PGTABLES and not cfg.kpkeys_cred_levels:
        return _set_level(k, level, cfg.skip_unchanged_pkey_writes)  # raises ValueError
    # _set_level(), inlined (hot path: the lazy-MMU hooks and the PBA's zeroing)
    m = k.machine
    ops = _LOADED.get(m.arch.name) or kpkeys_arch(k)
    reg = ops.arch_kpkeys_set_level(k, level, cfg.skip_unchanged_pkey_writes)
    if reg != KPKEYS_PKEY_REG_INVAL:
        ins = m.instruments
        if ins.active:
            ins.emit(KPKEYS_SET_LEVEL)
    return reg


#: v7 name (spec §1.9); the same function.
kpkeys_set_context = kpkeys_set_level


def kpkeys_restore_pkey_reg(k: Kernel, reg: int) -> None:
    """Write back a value returned by :func:`kpkeys_set_level` (spec §1.4).

    Does nothing for ``KPKEYS_PKEY_REG_INVAL``; otherwise calls the arch
    restore (arm64: MSR POR_EL1 + ISB).
    """
    if reg != KPKEYS_PKEY_REG_INVAL:
        m = k.machine
        (_LOADED.get(m.arch.name) or kpkeys_arch(k)).arch_kpkeys_restore_pkey_reg(k, reg)
        ins = m.instruments
        if ins.active:
            ins.emit(KPKEYS_RESTORE)


# --- v8 context API (spec §1.10) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KpkeysState:
    """v8 ``struct kpkeys_state``.

    ``entered_context`` says whether the register was written;
    ``arch_state`` is the arch part (arm64 ``struct arch_kpkeys_state { u64
    por; }``): the saved register value, or ``KPKEYS_PKEY_REG_INVAL`` when
    nothing was entered.
    """

    entered_context: bool
    arch_state: int


_NOT_ENTERED = KpkeysState(False, KPKEYS_PKEY_REG_INVAL)


def kpkeys_enter_context(k: Kernel, ctx: KpkeysLevel) -> KpkeysState:
    """v8 ``kpkeys_enter_context(ctx)``: switch to ``ctx`` unless the register already matches.

    The same type and range checks as :func:`kpkeys_set_level` (v8 checks
    ``0 <= ctx < KPKEYS_CTX_COUNT``, the same set).  The skip of an unchanged
    value is part of the v8 arm64 hook, so it applies whatever
    ``skip_unchanged_pkey_writes`` says.
    """
    if type(ctx) is not KpkeysLevel:
        raise _not_a_level("kpkeys_enter_context", ctx)
    reg = _set_level(k, ctx, True)
    if reg == KPKEYS_PKEY_REG_INVAL:
        return _NOT_ENTERED
    return KpkeysState(True, reg)


def kpkeys_leave_context(k: Kernel, state: KpkeysState) -> None:
    """v8 ``kpkeys_leave_context(&state)``: restore only if the context was entered."""
    if state.entered_context:
        kpkeys_arch(k).arch_kpkeys_restore_pkey_reg(k, state.arch_state)
        k.machine.emit(KPKEYS_RESTORE)


# --- guards (spec §1.6) ------------------------------------------------------------------


class KpkeysGuard:
    """Base of the guard types the ``KPKEYS_GUARD*`` factories define.

    An instance is one guard scope: ``with kpkeys_hardened_pgtables(k): ...``.
    Its state is the saved register value (``KPKEYS_PKEY_REG_INVAL`` when the
    condition was false at entry or nothing was written).  One instance
    guards one scope; nest by creating another instance.
    """

    __slots__ = ("_k", "_state")

    #: The guard's kernel name.
    name: ClassVar[str] = "kpkeys_guard"
    #: The level it switches to (``None`` for a NOOP guard).
    level: ClassVar[KpkeysLevel | None] = None

    def __init__(self, k: Kernel) -> None:
        self._k = k
        self._state = KPKEYS_PKEY_REG_INVAL

    @property
    def state(self) -> int:
        """The saved register value (``KPKEYS_PKEY_REG_INVAL``: nothing to restore)."""
        return self._state

    def __enter__(self) -> KpkeysGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} guard state={self._state:#x}>"


class _CondGuard(KpkeysGuard):
    """A ``KPKEYS_GUARD_COND`` guard: switch at entry if the condition holds."""

    __slots__ = ()
    _cond: ClassVar[staticmethod[[Kernel], bool]]
    _level: ClassVar[KpkeysLevel]

    def __enter__(self) -> KpkeysGuard:
        k = self._k
        if self._cond(k):
            ins = k.machine.instruments
            if ins.active:
                ins.emit(KPKEYS_GUARD_ENTER)
            self._state = _set_level(k, self._level, k.config.skip_unchanged_pkey_writes)
        else:
            self._state = KPKEYS_PKEY_REG_INVAL
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The restore depends only on the state saved at entry; the condition
        # is not tested again (spec §1.6).  kpkeys_restore_pkey_reg(), inlined.
        reg = self._state
        if reg != KPKEYS_PKEY_REG_INVAL:
            k = self._k
            m = k.machine
            (_LOADED.get(m.arch.name) or kpkeys_arch(k)).arch_kpkeys_restore_pkey_reg(k, reg)
            ins = m.instruments
            if ins.active:
                ins.emit(KPKEYS_RESTORE)


class _RecordingCondGuard(_CondGuard):
    """A ``KPKEYS_GUARD_COND`` guard that records each entry's outcome per CPU.

    ``_outcomes[cpu_id]`` becomes ``(condition held, the register was
    written)`` at every entry (see :func:`KPKEYS_GUARD_COND`'s ``outcomes``).
    """

    __slots__ = ()
    _outcomes: ClassVar[dict[int, tuple[bool, bool]]]

    def __enter__(self) -> KpkeysGuard:
        k = self._k
        cpu_id = k.cpu.cpu_id
        if self._cond(k):
            ins = k.machine.instruments
            if ins.active:
                ins.emit(KPKEYS_GUARD_ENTER)
            try:
                state = _set_level(k, self._level, k.config.skip_unchanged_pkey_writes)
            except BaseException:
                self._outcomes[cpu_id] = _HELD_NOT_WRITTEN
                raise
            self._state = state
            self._outcomes[cpu_id] = (
                _HELD_WRITTEN if state != KPKEYS_PKEY_REG_INVAL else _HELD_NOT_WRITTEN
            )
        else:
            self._state = KPKEYS_PKEY_REG_INVAL
            self._outcomes[cpu_id] = _NOT_HELD
        return self


_HELD_WRITTEN = (True, True)
_HELD_NOT_WRITTEN = (True, False)
_NOT_HELD = (False, False)


class _NoopGuard(KpkeysGuard):
    """A ``KPKEYS_GUARD_NOOP`` guard: set yields 0, restore ignores it."""

    __slots__ = ()


def _check_guard_name(name: object) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a guard name must be an identifier, got {name!r}")
    return name


def _define_cond_guard(
    who: str,
    name: str,
    level: object,
    cond: Callable[[Kernel], bool],
    outcomes: dict[int, tuple[bool, bool]] | None = None,
) -> type[KpkeysGuard]:
    _check_guard_name(name)
    if type(level) is not KpkeysLevel:
        raise _not_a_level(who, level)
    if not callable(cond):
        raise TypeError(f"{who}({name!r}): cond must be callable, got {cond!r}")
    ns: dict[str, object] = {
        "__slots__": (),
        "__doc__": f"kpkeys guard ``{name}``: {level.name} when its condition holds at entry.",
        "__module__": _CondGuard.__module__,
        "name": name,
        "level": level,
        "_level": level,
        "_cond": staticmethod(cond),
    }
    if outcomes is None:
        return type(name, (_CondGuard,), ns)
    if not isinstance(outcomes, dict):
        raise TypeError(f"{who}({name!r}): outcomes must be a dict, got {outcomes!r}")
    ns["_outcomes"] = outcomes
    return type(name, (_RecordingCondGuard,), ns)


def KPKEYS_GUARD_COND(
    name: str,
    level: KpkeysLevel,
    cond: Callable[[Kernel], bool],
    *,
    outcomes: dict[int, tuple[bool, bool]] | None = None,
) -> type[KpkeysGuard]:
    """Define guard type ``name`` that switches to ``level`` when ``cond(k)`` holds at entry.

    Spec §1.6, v5 01/18: at entry, state = ``kpkeys_set_level(level)`` if
    ``cond`` else ``KPKEYS_PKEY_REG_INVAL``; at exit,
    ``kpkeys_restore_pkey_reg(state)``.  ``level`` must be a constant
    (``TypeError`` otherwise, checked here, at definition); its range is
    checked for the running configuration at each switching entry.  Each
    entry whose condition holds emits ``kpkeys_guard_enter``.

    Model-only: with ``outcomes`` (a dict), every entry also stores
    ``(condition held, the register was written)`` in ``outcomes[cpu_id]``
    of the executing CPU (kpkeys_hardened_pgtables' bulk accounting reads
    the last outcome).
    """
    return _define_cond_guard("KPKEYS_GUARD_COND", name, level, cond, outcomes)


def KPKEYS_GUARD(name: str, level: KpkeysLevel) -> type[KpkeysGuard]:
    """``KPKEYS_GUARD_COND(name, level, arch_kpkeys_enabled)`` (spec §1.6).

    v7 tests ``kpkeys_enabled()`` and v8 ``kpkeys_supported()``: the same
    predicate.
    """
    return _define_cond_guard("KPKEYS_GUARD", name, level, arch_kpkeys_enabled)


def KPKEYS_GUARD_NOOP(name: str) -> type[KpkeysGuard]:
    """Define guard type ``name`` that never switches (spec §1.6).

    The stand-in a subsystem defines when its feature is not configured, so
    the code using the guard is the same either way.
    """
    _check_guard_name(name)
    ns = {
        "__slots__": (),
        "__doc__": f"kpkeys guard ``{name}`` (NOOP: never switches).",
        "__module__": _NoopGuard.__module__,
        "name": name,
    }
    return type(name, (_NoopGuard,), ns)
