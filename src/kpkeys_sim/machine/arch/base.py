"""The interface every pkey architecture implements, and the registry of them.

An architecture module (one per architecture, e.g. ``arm64_poe``, ``x86_pk``)
defines a subclass of :class:`PkeyArch` whose class attributes are the
architecture's facts (archinfo style) and whose methods are pure functions of
their arguments:

* the bit-exact access check (base permissions ∩ pkey permissions, fault
  priority, syndrome), used both by ``kpkeys-sim arch check`` and by the
  machine's MMU;
* the pkey register encoding (per-key permission fields);
* the leaf/table descriptor format the MMU walker decodes.

The module registers its class at the bottom with :func:`register_arch`.
Adding an architecture is one new module plus one import line in
``machine/arch/__init__.py``.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "ACCESS_KINDS",
    "HEX_RE",
    "RESULTS",
    "Perm",
    "PkeyArch",
    "Verdict",
    "arch_names",
    "field_choice",
    "field_hex",
    "field_int",
    "field_null",
    "get_arch",
    "register_arch",
    "shown_json",
]

#: Access kinds: load, store, instruction fetch, read-modify-write (atomic).
ACCESS_KINDS: tuple[str, ...] = ("R", "W", "X", "RW")

#: Possible results of an access check.
RESULTS: tuple[str, ...] = ("allow", "overlay_fault", "base_fault", "pk_fault")


@dataclass(frozen=True, slots=True)
class Perm:
    """A set of rights, used for base permissions and for per-pkey permissions."""

    r: bool = False
    w: bool = False
    x: bool = False

    def allows(self, access: str) -> bool:
        """True if every right that ``access`` needs is present."""
        if access == "R":
            return self.r
        if access == "W":
            return self.w
        if access == "X":
            return self.x
        if access == "RW":
            return self.r and self.w
        raise ValueError(f"unknown access kind {access!r}")

    def __and__(self, other: Perm) -> Perm:
        return Perm(self.r and other.r, self.w and other.w, self.x and other.x)

    def __str__(self) -> str:
        return ("R" if self.r else "-") + ("W" if self.w else "-") + ("X" if self.x else "-")


PERM_NONE = Perm()
PERM_RWX = Perm(True, True, True)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of one access check.

    ``result`` is one of :data:`RESULTS`.  ``syndrome`` is the architectural
    fault syndrome for faults (arm64: the ESR_EL1 value; x86: the #PF error
    code) and ``None`` for ``allow``.
    """

    result: str
    syndrome: int | None = None

    @property
    def allowed(self) -> bool:
        return self.result == "allow"


class PkeyArch(ABC):
    """Facts and pure functions of one pkey architecture.

    Class attributes are the architecture's facts; subclasses must set all of
    them.  Instances carry no state: registers live in the CPU model
    (``machine/cpu``) in the object returned by :meth:`new_regs`.
    """

    #: Registry name, as used by ``arch check`` input (``"arm64"``, ``"x86"``).
    name: ClassVar[str]
    #: One-line description for ``--help`` and reports.
    description: ClassVar[str]
    #: Number of pkeys usable with the modelled descriptor format.
    nr_pkeys: ClassVar[int]
    #: Descriptor bit positions holding the pkey (inclusive, low..high).
    pkey_desc_lo: ClassVar[int]
    pkey_desc_hi: ClassVar[int]
    #: Name of the kernel pkey register (``"POR_EL1"``, ``"IA32_PKRS"``) ...
    kernel_pkey_reg: ClassVar[str]
    #: ... and of the user one (``"POR_EL0"``, ``"PKRU"``).
    user_pkey_reg: ClassVar[str]
    #: True if a register write is only guaranteed visible to later accesses
    #: after a context-synchronisation event (arm64: ISB, exception entry or
    #: return).  False if it is ordered for later accesses by itself (x86
    #: WRPKRU, and WRMSR IA32_PKRS per the PKS series).
    reg_write_needs_sync: ClassVar[bool]
    #: Translation levels of the modelled kernel tables per supported page
    #: size (bytes -> levels), e.g. {4096: 4, 16384: 4, 65536: 3}.
    page_sizes: ClassVar[Mapping[int, int]]

    # --- pkey register encoding -------------------------------------------------

    @abstractmethod
    def reg_get_perm(self, reg: int, pkey: int) -> Perm:
        """Rights ``reg`` grants to ``pkey`` (reserved encodings grant nothing)."""

    @abstractmethod
    def reg_set_perm(self, reg: int, pkey: int, perm: Perm) -> int:
        """``reg`` with the field of ``pkey`` replaced by the encoding of ``perm``.

        Raises ``ValueError`` if ``perm`` is not encodable (x86: execute rights
        are not part of PKRU/PKRS, any ``x`` value is accepted and ignored).
        """

    # --- descriptors ---------------------------------------------------------------

    def desc_pkey(self, desc: int) -> int:
        """The pkey field of a leaf descriptor."""
        width = self.pkey_desc_hi - self.pkey_desc_lo + 1
        return (desc >> self.pkey_desc_lo) & ((1 << width) - 1)

    def desc_set_pkey(self, desc: int, pkey: int) -> int:
        """``desc`` with its pkey field set to ``pkey``."""
        if not 0 <= pkey < self.nr_pkeys:
            raise ValueError(f"pkey {pkey} out of range 0..{self.nr_pkeys - 1}")
        width = self.pkey_desc_hi - self.pkey_desc_lo + 1
        mask = ((1 << width) - 1) << self.pkey_desc_lo
        return (desc & ~mask) | (pkey << self.pkey_desc_lo)

    # --- access check -------------------------------------------------------------

    @abstractmethod
    def parse_check_request(self, obj: Mapping[str, Any]) -> Any:
        """Validate one ``arch check`` JSON object; raise ``ValueError(field_name, why)``.

        The ``ValueError`` args are ``(field, message)`` so the CLI can name the
        field and the line number.
        """

    @abstractmethod
    def check_request(self, request: Any) -> Verdict:
        """Bit-exact verdict for a parsed ``arch check`` request."""

    @abstractmethod
    def verdict_json(self, verdict: Verdict) -> dict[str, str]:
        """The ``arch check`` output object for a verdict (syndrome under the arch's key)."""


# --- ``arch check`` field validators (shared by the architecture modules) ----------------
# Each raises ``ValueError(field, message)`` so the CLI can name the field and line.

HEX_RE = re.compile(r"0x[0-9A-Fa-f]+")


def shown_json(value: Any) -> str:
    """``value`` as it appeared in the JSON input, for error messages."""
    return json.dumps(value)


def field_int(obj: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
    """Integer field ``name`` in ``lo..hi`` (JSON booleans are not integers here)."""
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        want = f"{lo} or {hi}" if hi == lo + 1 else f"an integer {lo}..{hi}"
        raise ValueError(name, f"must be {want}, got {shown_json(value)}")
    return value


def field_hex(obj: Mapping[str, Any], name: str, bits: int) -> int:
    """Hex-string field ``name`` ("0x...") of at most ``bits`` bits."""
    value = obj[name]
    if not isinstance(value, str) or not HEX_RE.fullmatch(value) or int(value, 16) >> bits:
        raise ValueError(
            name, f'must be a hex string "0x..." of at most {bits} bits, got {shown_json(value)}'
        )
    return int(value, 16)


def field_choice(obj: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    """String field ``name`` that must be one of ``choices``."""
    value = obj[name]
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(f'"{c}"' for c in choices)
        raise ValueError(name, f"must be one of {listed}, got {shown_json(value)}")
    return value


def field_null(obj: Mapping[str, Any], name: str, why: str) -> None:
    """Field ``name`` must be JSON null (because of ``why``)."""
    if obj[name] is not None:
        raise ValueError(name, f"must be null when {why}, got {shown_json(obj[name])}")


_REGISTRY: dict[str, type[PkeyArch]] = {}


def register_arch(cls: type[PkeyArch]) -> type[PkeyArch]:
    """Register an architecture class under ``cls.name`` (usable as a decorator)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"architecture {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get_arch(name: str) -> PkeyArch:
    """An instance of the architecture registered as ``name``; ``KeyError`` if none."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise KeyError(name) from None
    return cls()


def arch_names() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_REGISTRY)
