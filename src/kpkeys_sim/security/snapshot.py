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

Generation units.  A class may declare ``snapshot_gen_attr`` (the name of
an int attribute its owner increments on every change of the object's
state) and ``snapshot_owned`` (the attributes holding containers only that
object holds, changed only together with such an increment): the slab's
``KmemCache`` does.  Such an object and its owned containers (and the
containers nested in them) are recorded as one unit, and :meth:`Snapshot.restore`
restores a unit only if its generation moved — a trial touches few of the
kernel's caches.  :meth:`Snapshot.stale_units` (for tests) finds units that
changed without a new generation.

What is *not* captured: state held outside the graph (module globals,
class attributes).  The model keeps no run state there (DESIGN: "No hidden
globals"); the test suite checks that a restored kernel behaves like the
original (``tests/test_security_campaign.py``, ``tests/test_security_fast_paths.py``).
"""

from __future__ import annotations

import operator
import types
from collections import deque
from collections.abc import Callable, Iterable
from itertools import compress, repeat
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
        "_fast_getters",
        "_fast_index",
        "_fast_objs",
        "_fast_slots",
        "_fast_values",
        "_lists",
        "_mems",
        "_other_dicts",
        "_plain_dicts",
        "_records",
        "_sets",
        "_slots",
        "_units",
        "nr_objects",
    )

    def __init__(
        self,
        records: list[tuple[int, Any, Any]],
        units: list[tuple[Any, str, Any, list[tuple[int, Any, Any]]]] | None = None,
    ) -> None:
        self._records = records
        # Units (objects with the generation protocol): (objects, generation getters,
        # saved generations, the unit's own snapshot, description for checks).
        unit_list = units or []
        self._units: tuple[tuple[Any, ...], ...] = (
            tuple(obj for obj, _, _, _ in unit_list),
            tuple(operator.attrgetter(attr) for _, attr, _, _ in unit_list),
            tuple(gen for _, _, gen, _ in unit_list),
            tuple(Snapshot(recs) for _, _, _, recs in unit_list),
            tuple(range(len(unit_list))),
        )
        self.nr_objects = len(records) + sum(len(recs) for _, _, _, recs in unit_list)
        by: dict[int, list[tuple[Any, Any]]] = {k: [] for k in range(9)}
        for kind, obj, saved in records:
            by[kind].append((obj, saved))
        # The bulk kinds are kept as parallel tuples (objects, saved states) so that
        # restore() can run each kind as one C-level map() instead of a Python loop.
        self._arrays = _columns(by[_K_ARRAY])
        self._lists = _columns(by[_K_LIST])
        # Plain dicts restore with dict.clear/dict.update; subclasses (OrderedDict ...)
        # with their own methods.
        self._plain_dicts = _columns([(d, sv) for d, sv in by[_K_DICT] if type(d) is dict])
        self._other_dicts = _columns([(d, sv) for d, sv in by[_K_DICT] if type(d) is not dict])
        # Slot objects whose every slot is set are checked with one attrgetter call and
        # identity comparisons, and written back only if a slot changed (most objects
        # are untouched by a trial); the others take the general path.
        self._fast_slots: list[tuple[Any, tuple[str, ...], tuple[Any, ...]]] = []
        fast_getters: list[Callable[[Any], tuple[Any, ...]]] = []
        fast_values: list[tuple[Any, ...]] = []
        self._slots: list[tuple[Any, Any]] = []
        for obj, saved in by[_K_SLOTS]:
            if saved and all(v is not _MISSING for _, v in saved):
                names = tuple(n for n, _ in saved)
                values = tuple(v for _, v in saved)
                self._fast_slots.append((obj, names, values))
                if len(names) == 1:
                    # attrgetter of one name returns the value itself; of the name
                    # twice, a 2-tuple like the many-name getters.
                    fast_getters.append(operator.attrgetter(names[0], names[0]))
                    fast_values.append(values * 2)
                else:
                    fast_getters.append(operator.attrgetter(*names))
                    fast_values.append(values)
            else:
                self._slots.append((obj, saved))
        self._fast_objs = tuple(obj for obj, _, _ in self._fast_slots)
        self._fast_getters = tuple(fast_getters)
        self._fast_values = tuple(fast_values)
        self._fast_index = tuple(range(len(self._fast_slots)))
        self._dict_objs = by[_K_DICT_OBJ]
        self._both = by[_K_BOTH]
        self._sets = _columns(by[_K_SET])
        self._deques = _columns(by[_K_DEQUE])
        self._mems = by[_K_MEM]

    def restore(self) -> None:
        """Write every recorded state back into its object."""
        arrs, saved_arrs = self._arrays
        # ``arr[...] = saved`` (same shape and dtype): np.copyto without its dispatch layer.
        _consume(map(operator.setitem, arrs, repeat(Ellipsis), saved_arrs))
        lists, saved_lists = self._lists
        _consume(map(operator.setitem, lists, repeat(_WHOLE), saved_lists))
        dicts, saved_dicts = self._plain_dicts
        _consume(map(dict.clear, dicts))
        _consume(map(dict.update, dicts, saved_dicts))
        for dct, saved_dict in zip(*self._other_dicts, strict=True):
            dct.clear()
            dct.update(saved_dict)
        setattr_ = object.__setattr__
        changed = compress(
            self._fast_index,
            map(
                any,
                map(
                    map,
                    repeat(operator.is_not),
                    map(operator.call, self._fast_getters, self._fast_objs),
                    self._fast_values,
                ),
            ),
        )
        fast_slots = self._fast_slots
        for i in changed:
            # Compare identities (never ``==``: a slot may hold a numpy array).
            obj, names, values = fast_slots[i]
            for name, value in zip(names, values, strict=True):
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
        for st, saved_set in zip(*self._sets, strict=True):
            st.clear()
            st.update(saved_set)
        for dq, saved_dq in zip(*self._deques, strict=True):
            dq.clear()
            dq.extend(saved_dq)
        for mem, saved_mem in self._mems:
            mem.restore(saved_mem)
        objs, gens, saved_gens, snaps, index = self._units
        if objs:
            # Only the units whose generation moved since the snapshot changed.
            for i in compress(index, map(operator.ne, map(operator.call, gens, objs), saved_gens)):
                snaps[i].restore()

    def stale_units(self) -> list[Any]:
        """Units whose generation did not move but whose state differs from the snapshot.

        For tests: a non-empty result means an object broke the generation
        protocol (changed without incrementing its generation), so
        :meth:`restore` would have skipped a change.
        """
        objs, gens, saved_gens, snaps, _ = self._units
        out = []
        for obj, gen, saved, snap in zip(objs, gens, saved_gens, snaps, strict=True):
            if gen(obj) == saved and not snap._matches():
                out.append(obj)
        return out

    def _matches(self) -> bool:
        """True if every recorded object holds its recorded state (identity of members)."""
        for kind, obj, saved in self._records:
            if kind == _K_ARRAY:
                ok = obj.shape == saved.shape and bool(np.array_equal(obj, saved))
            elif kind in (_K_LIST, _K_DEQUE):
                ok = len(obj) == len(saved) and all(map(operator.is_, obj, saved))
            elif kind == _K_DICT:
                ok = list(obj) == list(saved) and all(obj[k] is v for k, v in saved.items())
            elif kind == _K_SET:
                ok = obj == saved
            elif kind == _K_SLOTS:
                ok = all(getattr(obj, n, _MISSING) is v for n, v in saved)
            else:
                raise AssertionError(f"unknown record kind {kind} in a snapshot unit")
            if not ok:
                return False
        return True


#: ``lst[:] = saved`` as ``operator.setitem(lst, _WHOLE, saved)``.
_WHOLE = slice(None)
#: Run an iterator to exhaustion at C speed (the map() calls of restore()).
_consume: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend


def _columns(pairs: list[tuple[Any, Any]]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """``[(obj, saved), ...]`` as ``((obj, ...), (saved, ...))``."""
    return tuple(o for o, _ in pairs), tuple(sv for _, sv in pairs)


class _Missing:
    __slots__ = ()


_MISSING = _Missing()


def _gen_protocol(cls: type) -> tuple[str, frozenset[str]] | None:
    """The class's snapshot generation protocol (see the module docstring), if it has one."""
    if cls in _GEN_CACHE:
        return _GEN_CACHE[cls]
    attr = getattr(cls, "snapshot_gen_attr", None)
    owned = getattr(cls, "snapshot_owned", None)
    r = (attr, frozenset(owned)) if isinstance(attr, str) and isinstance(owned, tuple) else None
    _GEN_CACHE[cls] = r
    return r


_GEN_CACHE: dict[type, tuple[str, frozenset[str]] | None] = {}


def take(roots: Iterable[Any]) -> Snapshot:
    """Record the state of every mutable object reachable from ``roots``."""
    records: list[tuple[int, Any, Any]] = []
    units: list[tuple[Any, str, Any, list[tuple[int, Any, Any]]]] = []
    seen: set[int] = set()
    # (object, the unit whose owned containers it belongs to, or None).
    stack: list[tuple[Any, list[tuple[int, Any, Any]] | None]] = [(r, None) for r in roots]
    push = stack.append
    while stack:
        obj, unit = stack.pop()
        if isinstance(obj, _ATOMIC):
            continue
        oid = id(obj)
        if oid in seen:
            continue
        seen.add(oid)
        # Containers reached through a unit's owned attributes are recorded in the unit,
        # and so are the containers nested in them; anything else is recorded globally.
        sink = records if unit is None else unit
        if isinstance(obj, np.ndarray):
            if obj.flags.writeable and obj.base is None:
                sink.append((_K_ARRAY, obj, obj.copy()))
            elif obj.dtype == object:
                for v in obj.ravel().tolist():
                    push((v, None))
            continue
        if isinstance(obj, PhysicalMemory):
            records.append((_K_MEM, obj, obj.snapshot()))
            continue
        if isinstance(obj, list):
            sink.append((_K_LIST, obj, list(obj)))
            for v in obj:
                push((v, unit))
            continue
        if isinstance(obj, dict):
            sink.append((_K_DICT, obj, dict(obj)))
            for v in obj:
                push((v, unit))
            for v in obj.values():
                push((v, unit))
            continue
        if isinstance(obj, (set, frozenset)):
            if isinstance(obj, set):
                sink.append((_K_SET, obj, set(obj)))
            for v in obj:
                push((v, unit))
            continue
        if isinstance(obj, deque):
            sink.append((_K_DEQUE, obj, list(obj)))
            for v in obj:
                push((v, unit))
            continue
        if isinstance(obj, tuple):
            for v in obj:
                push((v, unit))
            continue
        cls = type(obj)
        names = _SLOTS_CACHE.get(cls)
        if names is None:
            names = _slot_names(cls)
            _SLOTS_CACHE[cls] = names
        d = getattr(obj, "__dict__", None)
        frozen = _frozen(cls)
        proto = None if frozen or d is not None else _gen_protocol(cls)
        own: list[tuple[int, Any, Any]] | None = None
        owned: frozenset[str] = frozenset()
        if proto is not None:
            gen_attr, owned = proto
            own = []
            units.append((obj, gen_attr, getattr(obj, gen_attr), own))
        slot_state: list[tuple[str, Any]] = []
        for n in names:
            v = getattr(obj, n, _MISSING)
            slot_state.append((n, v))
            if v is not _MISSING:
                push((v, own if n in owned else None))
        if d is not None:
            for v in d.values():
                push((v, None))
        if frozen:
            continue
        if own is not None:
            own.append((_K_SLOTS, obj, tuple(slot_state)))
        elif d is not None and names:
            records.append((_K_BOTH, obj, (tuple(slot_state), dict(d))))
        elif d is not None:
            records.append((_K_DICT_OBJ, obj, dict(d)))
        elif names:
            records.append((_K_SLOTS, obj, tuple(slot_state)))
    return Snapshot(records, units)
