"""Snapshot and in-place restore of a booted model kernel (and anything attached to it).

Booting a model kernel takes far longer than one attack trial, so a campaign
boots once per (defense, kernel configuration), runs the scenario's shared
deterministic preparation once, takes a :class:`Snapshot`, and restores it
before every trial.  Restoring is exact: after :meth:`Snapshot.restore`
every object that existed when the snapshot was taken holds the same state
again (in place — references kept by the scenario stay valid), and objects
created since are unreachable.

How: :func:`take` walks the object graph from the given roots and records
a shallow copy of the state of every mutable object it meets —
``__dict__``/``__slots__`` attributes, list/dict/set/deque contents, numpy
array contents — and :meth:`Snapshot.restore` writes those copies back.
:class:`~kpkeys_sim.machine.memory.PhysicalMemory` is restored through its
own ``snapshot``/``restore`` (frames are materialised lazily; only frames
ever written are copied).  Immutable values (numbers, strings, frozen
dataclasses, functions, classes, modules) are shared, not copied, and so
are random generators: a trial installs its own generator wherever the
kernel draws random numbers (slab freelist randomisation).

What is *not* captured: state held outside the graph (module globals,
class attributes).  The model keeps no run state there (DESIGN: "No hidden
globals"); the test suite checks that a restored kernel behaves like the
original (``tests/test_security_snapshot.py``).
"""

from __future__ import annotations

import operator
import types
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from kpkeys_sim.machine.memory import PhysicalMemory

__all__ = ["Snapshot", "take"]

_ATOMIC = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    range,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    type,
    np.generic,
    np.dtype,
    np.random.Generator,
    np.random.BitGenerator,
)

# Record kinds.
_K_DICT_OBJ = 0
_K_SLOTS = 1
_K_LIST = 2
_K_DICT = 3
_K_SET = 4
_K_DEQUE = 5
_K_ARRAY = 6
_K_MEM = 7
_K_BOTH = 8


def _slot_names(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for c in cls.__mro__:
        s = c.__dict__.get("__slots__", ())
        if isinstance(s, str):
            s = (s,)
        for n in s:
            if n not in ("__dict__", "__weakref__") and n not in names:
                names.append(n)
    return tuple(names)


_SLOTS_CACHE: dict[type, tuple[str, ...]] = {}
_FROZEN_CACHE: dict[type, bool] = {}


def _frozen(cls: type) -> bool:
    r = _FROZEN_CACHE.get(cls)
    if r is None:
        params = getattr(cls, "__dataclass_params__", None)
        r = bool(params is not None and params.frozen)
        _FROZEN_CACHE[cls] = r
    return r


class Snapshot:
    """A recorded state of an object graph; :meth:`restore` puts it back in place."""

    __slots__ = (
        "_arrays",
        "_both",
        "_deques",
        "_dict_objs",
        "_dicts",
        "_fast_slots",
        "_lists",
        "_mems",
        "_records",
        "_sets",
        "_slots",
        "nr_objects",
    )

    def __init__(self, records: list[tuple[int, Any, Any]]) -> None:
        self._records = records
        self.nr_objects = len(records)
        by: dict[int, list[tuple[Any, Any]]] = {k: [] for k in range(9)}
        for kind, obj, saved in records:
            by[kind].append((obj, saved))
        self._arrays = by[_K_ARRAY]
        self._lists = by[_K_LIST]
        self._dicts = by[_K_DICT]
        # Slot objects whose every slot is set are checked with one attrgetter call and
        # only the attributes that changed are written back (most objects are untouched
        # by a trial); the others take the general path.
        self._fast_slots: list[
            tuple[Any, Any, tuple[str, ...], tuple[Any, ...], tuple[int, ...]]
        ] = []
        self._slots: list[tuple[Any, Any]] = []
        for obj, saved in by[_K_SLOTS]:
            if saved and all(v is not _MISSING for _, v in saved):
                names = tuple(n for n, _ in saved)
                values = tuple(v for _, v in saved)
                getter: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
                if len(names) == 1:
                    getter = _tuple_getter(getter)
                self._fast_slots.append((obj, getter, names, values, tuple(map(id, values))))
            else:
                self._slots.append((obj, saved))
        self._dict_objs = by[_K_DICT_OBJ]
        self._both = by[_K_BOTH]
        self._sets = by[_K_SET]
        self._deques = by[_K_DEQUE]
        self._mems = by[_K_MEM]

    def restore(self) -> None:
        """Write every recorded state back into its object."""
        copyto = np.copyto
        for arr, saved_arr in self._arrays:
            copyto(arr, saved_arr)
        for lst, saved_list in self._lists:
            lst[:] = saved_list
        for dct, saved_dict in self._dicts:
            dct.clear()
            dct.update(saved_dict)
        setattr_ = object.__setattr__
        for obj, getter, names, values, ids in self._fast_slots:
            current = getter(obj)
            # Compare identities (never ``==``: a slot may hold a numpy array).
            if tuple(map(id, current)) != ids:
                for name, now, value in zip(names, current, values, strict=True):
                    if now is not value:
                        setattr_(obj, name, value)
        for obj, saved_slots in self._slots:
            for name, value in saved_slots:
                if value is _MISSING:
                    if hasattr(obj, name):
                        delattr(obj, name)
                else:
                    setattr_(obj, name, value)
        for obj, saved_d in self._dict_objs:
            d = obj.__dict__
            d.clear()
            d.update(saved_d)
        for obj, (slots, dct_state) in self._both:
            for name, value in slots:
                if value is _MISSING:
                    if hasattr(obj, name):
                        delattr(obj, name)
                else:
                    setattr_(obj, name, value)
            d = obj.__dict__
            d.clear()
            d.update(dct_state)
        for st, saved_set in self._sets:
            st.clear()
            st.update(saved_set)
        for dq, saved_dq in self._deques:
            dq.clear()
            dq.extend(saved_dq)
        for mem, saved_mem in self._mems:
            mem.restore(saved_mem)


def _tuple_getter(getter: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    """Make a one-name ``attrgetter`` return a 1-tuple like the many-name ones."""

    def get(obj: Any) -> tuple[Any, ...]:
        return (getter(obj),)

    return get


class _Missing:
    __slots__ = ()


_MISSING = _Missing()


def take(roots: Iterable[Any]) -> Snapshot:
    """Record the state of every mutable object reachable from ``roots``."""
    records: list[tuple[int, Any, Any]] = []
    seen: set[int] = set()
    stack: list[Any] = list(roots)
    while stack:
        obj = stack.pop()
        if isinstance(obj, _ATOMIC):
            continue
        oid = id(obj)
        if oid in seen:
            continue
        seen.add(oid)
        if isinstance(obj, np.ndarray):
            if obj.flags.writeable and obj.base is None:
                records.append((_K_ARRAY, obj, obj.copy()))
            elif obj.dtype == object:
                stack.extend(obj.ravel().tolist())
            continue
        if isinstance(obj, PhysicalMemory):
            records.append((_K_MEM, obj, obj.snapshot()))
            continue
        if isinstance(obj, list):
            records.append((_K_LIST, obj, list(obj)))
            stack.extend(obj)
            continue
        if isinstance(obj, dict):
            records.append((_K_DICT, obj, dict(obj)))
            stack.extend(obj.keys())
            stack.extend(obj.values())
            continue
        if isinstance(obj, (set, frozenset)):
            if isinstance(obj, set):
                records.append((_K_SET, obj, set(obj)))
            stack.extend(obj)
            continue
        if isinstance(obj, deque):
            records.append((_K_DEQUE, obj, list(obj)))
            stack.extend(obj)
            continue
        if isinstance(obj, tuple):
            stack.extend(obj)
            continue
        cls = type(obj)
        names = _SLOTS_CACHE.get(cls)
        if names is None:
            names = _slot_names(cls)
            _SLOTS_CACHE[cls] = names
        d = getattr(obj, "__dict__", None)
        frozen = _frozen(cls)
        slot_state: list[tuple[str, Any]] = []
        for n in names:
            v = getattr(obj, n, _MISSING)
            slot_state.append((n, v))
            if v is not _MISSING:
                stack.append(v)
        if d is not None:
            stack.extend(d.values())
        if frozen:
            continue
        if d is not None and names:
            records.append((_K_BOTH, obj, (tuple(slot_state), dict(d))))
        elif d is not None:
            records.append((_K_DICT_OBJ, obj, dict(d)))
        elif names:
            records.append((_K_SLOTS, obj, tuple(slot_state)))
    return Snapshot(records)
