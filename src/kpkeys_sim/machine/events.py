"""Events and instruments: how the model reports what it does.

Every layer reports work by emitting *events*: a kind (an interned string
declared once with :func:`declare_event`) and a count.  Events carry counts so
that bulk operations stay cheap (``emit(PT_WRITE, 512)`` for a whole
page-table page).  Instruments observe events; the cost model of
``analysis/`` is one.

Design (after trio's instrumentation): :class:`Instrument` hooks default to
no-ops, and :class:`Instruments` calls a hook only on the instruments that
override it, so an unobserved event costs one attribute load and one empty
loop.  Hot emitters test :attr:`Instruments.active` first
(``if ins.active: ins.emit(...)``), which skips even the call when no
instrument observes events.

The machine layer declares hardware event kinds here; the kernel layer
declares its own kinds (guard entries, linear-map splits, ...) in its own
modules with the same :func:`declare_event`.  The registry is global only in
the sense that a kind's *name and description* are static facts of the code,
like an enum; no run state lives in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DSB",
    "EVENT_KINDS",
    "ISB",
    "PKEY_REG_WRITE",
    "PT_WRITE",
    "TLBI_ALL",
    "TLBI_ASID",
    "TLBI_VA",
    "TRANSLATION_MISS",
    "WALK_ACCESS",
    "CountingInstrument",
    "EventKind",
    "Instrument",
    "Instruments",
    "declare_event",
]


@dataclass(frozen=True, slots=True)
class EventKind:
    """A named kind of event with a one-line description."""

    name: str
    description: str
    layer: str

    def __str__(self) -> str:
        return self.name


EVENT_KINDS: dict[str, EventKind] = {}


def declare_event(name: str, description: str, layer: str) -> str:
    """Declare an event kind and return its name (the value passed to ``emit``).

    Declaring the same name twice with a different description is a programming
    error and raises ``ValueError``.
    """
    kind = EventKind(name, description, layer)
    old = EVENT_KINDS.get(name)
    if old is not None and old != kind:
        raise ValueError(f"event kind {name!r} declared twice with different facts")
    EVENT_KINDS[name] = kind
    return name


# Hardware events (machine layer).
PKEY_REG_WRITE = declare_event(
    "pkey_reg_write",
    "write of the per-CPU pkey register (MSR POR_EL1 / WRMSR IA32_PKRS)",
    "machine",
)
ISB = declare_event("isb", "context synchronisation barrier (ISB)", "machine")
TLBI_VA = declare_event("tlbi_va", "TLB invalidation of one VA (TLBI VA*E1IS / INVLPG)", "machine")
TLBI_ASID = declare_event("tlbi_asid", "TLB invalidation of one ASID (TLBI ASIDE1IS)", "machine")
TLBI_ALL = declare_event("tlbi_all", "TLB invalidation of everything (TLBI VMALLE1IS)", "machine")
PT_WRITE = declare_event(
    "pt_write", "page-table entries written through the linear-map alias", "machine"
)
DSB = declare_event("dsb", "data synchronisation barrier (DSB ISH/ISHST)", "machine")
TRANSLATION_MISS = declare_event("translation_miss", "TLB miss that needed a table walk", "machine")
WALK_ACCESS = declare_event("walk_access", "memory access made by the table walker", "machine")


class Instrument:
    """Base class of instruments.  Override the hooks you need; the others cost nothing.

    ``on_event(kind, n)`` receives every counted event; ``on_fault(fault)``
    receives every hardware fault the MMU raises (before any fixup catches it).
    """

    def on_event(self, kind: str, n: int) -> None:  # pragma: no cover - default no-op
        """Called for each emitted event with its kind and count."""

    def on_fault(self, fault: Any) -> None:  # pragma: no cover - default no-op
        """Called for each hardware fault raised by the MMU."""


def _overrides(inst: Instrument, hook: str) -> bool:
    return getattr(type(inst), hook) is not getattr(Instrument, hook)


class Instruments:
    """The set of instruments attached to one machine; dispatches events to them."""

    __slots__ = ("_all", "_on_event", "_on_fault", "active")

    def __init__(self, instruments: Iterable[Instrument] = ()) -> None:
        self._all: list[Instrument] = []
        self._on_event: list[Any] = []
        self._on_fault: list[Any] = []
        #: True when at least one attached instrument observes events (``on_event``).
        self.active = False
        for inst in instruments:
            self.add(inst)

    def add(self, inst: Instrument) -> None:
        """Attach an instrument (idempotent)."""
        if inst in self._all:
            return
        self._all.append(inst)
        self._rebuild()

    def remove(self, inst: Instrument) -> None:
        """Detach an instrument; detaching one that is not attached is an error."""
        self._all.remove(inst)
        self._rebuild()

    def _rebuild(self) -> None:
        self._on_event = [i.on_event for i in self._all if _overrides(i, "on_event")]
        self._on_fault = [i.on_fault for i in self._all if _overrides(i, "on_fault")]
        self.active = bool(self._on_event)

    def __iter__(self) -> Any:
        return iter(list(self._all))

    def emit(self, kind: str, n: int = 1) -> None:
        """Report ``n`` occurrences of event ``kind`` to every interested instrument."""
        for hook in self._on_event:
            hook(kind, n)

    def fault(self, fault: Any) -> None:
        """Report a hardware fault to every interested instrument."""
        for hook in self._on_fault:
            hook(fault)


class CountingInstrument(Instrument):
    """Counts events by kind (``counts[kind]``) and faults (``faults``)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.faults = 0

    def on_event(self, kind: str, n: int) -> None:
        self.counts[kind] += n

    def on_fault(self, fault: Any) -> None:
        self.faults += 1

    def snapshot(self) -> Mapping[str, int]:
        """A sorted copy of the counts, for reports and pinned tests."""
        return dict(sorted(self.counts.items()))

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.counts.clear()
        self.faults = 0
