"""Stage-1 translation: descriptor formats, the table walk, and the access check.

The walker reads translation tables from physical memory like hardware does
(it is the one agent that reads frames directly) and returns the leaf
descriptor, its level and, for x86, the U/S and R/W bits accumulated over
the walk.  The access check is *base permissions ∩ pkey permissions*,
computed by the architecture module's pure ``check_access`` function
(``machine/arch``), so the MMU and ``kpkeys-sim arch check`` share one
definition.

Formats modelled:

* arm64 VMSAv8-64, 48-bit VA, 4K/16K/64K granules (spec pkeys-hardware.md
  §2.1–2.2, Arm ARM D8.3): start level 0/0/1; blocks at levels 1–2 (4K) or 2
  (16K, 64K); level 3 ``0b01`` is reserved (invalid).  VA[63] = 1 selects
  TTBR1 (kernel), else TTBR0 (user, ASID-tagged when nG = 1).
* x86 IA-32e 4-level paging, 4K pages (SDM §4.5): PS at PDPTE/PDE makes a
  1 GiB/2 MiB leaf; U/S and R/W are ANDed over all levels; the pkey sits in
  the leaf.  The model gives the kernel half its own root (``ttbr1``) as the
  arm64 machine does; on real x86 both halves hang off one CR3 — an
  equivalent arrangement for the accesses modelled.

Simplifications (docs/model-assumptions.md): hardware Access-flag management
is assumed (no Access-flag faults); hierarchical permissions (APTable,
XNTable) are ignored, as the Arm ARM requires once POE or E0POE is enabled
(R_BVXDG); no stage 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpkeys_sim.machine.arch import arm64_poe, x86_pk
from kpkeys_sim.machine.arch.base import Verdict
from kpkeys_sim.machine.memory import PhysicalMemory

__all__ = ["Fault", "Geometry", "Walk", "walk"]

_OA_MASK_48 = (1 << 48) - 1
_X86_OA_MASK = (1 << 52) - 1


@dataclass(frozen=True, slots=True)
class Geometry:
    """Translation geometry for one page size (and format)."""

    fmt: str  # "arm64" or "x86"
    page_shift: int
    bits_per_level: int
    start_level: int
    block_levels: tuple[int, ...]

    @classmethod
    def for_arch(cls, fmt: str, page_size: int) -> Geometry:
        """The geometry of ``fmt`` ("arm64" or "x86") with ``page_size``-byte pages."""
        shift = page_size.bit_length() - 1
        if fmt == "x86":
            if page_size != 4096:
                raise ValueError(f"x86 paging has 4096-byte pages, not {page_size}")
            return cls("x86", 12, 9, 0, (1, 2))
        if fmt != "arm64":
            raise ValueError(f"unknown translation format {fmt!r}")
        bits = shift - 3
        start = 3 - (48 - 1 - shift) // bits
        blocks = (1, 2) if shift == 12 else (2,)
        return cls("arm64", shift, bits, start, blocks)

    def level_shift(self, level: int) -> int:
        """log2 of the size mapped by one entry at ``level``."""
        return self.page_shift + (3 - level) * self.bits_per_level

    def index(self, va: int, level: int) -> int:
        """Index of ``va`` in a table at ``level``."""
        shift = self.level_shift(level)
        if level == self.start_level:
            return (va & ((1 << 48) - 1)) >> shift
        return (va >> shift) & ((1 << self.bits_per_level) - 1)

    def entries(self, level: int) -> int:
        """Number of entries of a table at ``level``."""
        if level == self.start_level:
            return 1 << (48 - self.level_shift(level))
        return 1 << self.bits_per_level

    @property
    def leaf_shifts(self) -> tuple[int, ...]:
        """The possible leaf sizes (log2 bytes), smallest first."""
        return tuple(sorted({self.page_shift} | {self.level_shift(lv) for lv in self.block_levels}))


class Fault(Exception):
    """A hardware fault raised by the MMU, with structured fields.

    ``kind`` is ``"translation"`` or ``"permission"``; ``result`` the access
    check's result (``overlay_fault``, ``base_fault``, ``pk_fault``; for a
    translation fault ``"translation_fault"``); ``syndrome`` the ESR_EL1 value
    (arm64) or #PF error code (x86).
    """

    def __init__(
        self,
        *,
        kind: str,
        result: str,
        va: int,
        access: str,
        el: int,
        level: int,
        pkey: int | None,
        syndrome: int,
        cpu_id: int,
        desc: int | None = None,
    ) -> None:
        self.kind = kind
        self.result = result
        self.va = va
        self.access = access
        self.el = el
        self.level = level
        self.pkey = pkey
        self.syndrome = syndrome
        self.cpu_id = cpu_id
        self.desc = desc
        super().__init__(str(self))

    @property
    def overlay(self) -> bool:
        """True for arm64 permission faults due to the overlay (ESR ISS2.Overlay)."""
        return self.result == "overlay_fault"

    def __str__(self) -> str:
        pk = "" if self.pkey is None else f" pkey={self.pkey}"
        return (
            f"{self.result} on CPU{self.cpu_id}: {self.access} at {self.va:#018x} "
            f"(EL{self.el}, level {self.level}{pk}, syndrome {self.syndrome:#x})"
        )

    def __reduce__(self) -> tuple[object, ...]:  # picklable across process pools
        return (_rebuild_fault, (self.__dict__.copy(),))


def _rebuild_fault(d: dict[str, object]) -> Fault:
    f = Fault.__new__(Fault)
    f.__dict__.update(d)
    return f


@dataclass(frozen=True, slots=True)
class Walk:
    """Result of a successful table walk."""

    desc: int
    level: int
    size_shift: int
    oa_base: int
    us: bool
    rw: bool


class _TranslationFault(Exception):
    def __init__(self, level: int) -> None:
        self.level = level


def walk(mem: PhysicalMemory, geo: Geometry, root_pa: int, va: int) -> tuple[Walk, int]:
    """Walk the tables from ``root_pa`` for ``va``; return the walk and the memory reads made.

    Raises ``_TranslationFault(level)`` for an invalid entry (caller converts it).
    """
    level = geo.start_level
    table = root_pa
    reads = 0
    us = rw = True
    x86 = geo.fmt == "x86"
    while True:
        desc = mem.read_u64(table + 8 * geo.index(va, level))
        reads += 1
        if not desc & 1:
            raise _TranslationFault(level)
        if x86:
            us = us and bool(desc & 4)
            rw = rw and bool(desc & 2)
            leaf = level == 3 or (level in geo.block_levels and desc & 0x80)
            if leaf:
                shift = geo.level_shift(level)
                oa = desc & _X86_OA_MASK & ~((1 << shift) - 1)
                return Walk(desc, level, shift, oa, us, rw), reads
            table = desc & _X86_OA_MASK & ~0xFFF
        else:
            is_table_bit = desc & 2
            if level == 3:
                if not is_table_bit:
                    raise _TranslationFault(level)  # 0b01 at level 3 is reserved
                shift = geo.page_shift
                return Walk(
                    desc, 3, shift, desc & _OA_MASK_48 & ~((1 << shift) - 1), True, True
                ), reads
            if not is_table_bit:
                if level not in geo.block_levels:
                    raise _TranslationFault(level)
                shift = geo.level_shift(level)
                return Walk(
                    desc, level, shift, desc & _OA_MASK_48 & ~((1 << shift) - 1), True, True
                ), reads
            table = desc & _OA_MASK_48 & ~((1 << geo.page_shift) - 1)
        level += 1


def arm64_translation_esr(el: int, access: str, level: int) -> int:
    """ESR_EL1 of a stage-1 translation fault (DFSC/IFSC 0b0001LL) at ``level``."""
    if access == "X":
        ec = arm64_poe.ESR_ELx_EC_IABT_LOW if el == 0 else arm64_poe.ESR_ELx_EC_IABT_CUR
        wnr = 0
    else:
        ec = arm64_poe.ESR_ELx_EC_DABT_LOW if el == 0 else arm64_poe.ESR_ELx_EC_DABT_CUR
        wnr = arm64_poe.ESR_ELx_WNR if access in ("W", "RW") else 0
    return (ec << 26) | arm64_poe.ESR_ELx_IL | wnr | (0x04 + level)


def x86_not_present_error_code(el: int, access: str) -> int:
    """#PF error code for a not-present page (P = 0)."""
    code = 0
    if access in ("W", "RW"):
        code |= 0x2
    if el == 0:
        code |= 0x4
    if access == "X":
        code |= 0x10
    return code


def check_leaf(
    fmt: str,
    desc: int,
    level: int,
    us: bool,
    rw: bool,
    access: str,
    el: int,
    unprivileged: bool,
    *,
    pkey_reg: int,
    user_pkey_reg: int,
    poe: int,
    e0poe: int,
    pie: int,
    pir: int,
    pire0: int,
    wxn: int,
    pan: int,
    wp: int,
    pke: int,
    pks: int,
) -> Verdict:
    """The architecture's verdict for ``access`` through a leaf with the given registers.

    ``us``/``rw`` are the x86 U/S and R/W bits accumulated over the walk.
    """
    d = desc
    if fmt == "x86":
        return x86_pk.check_access(
            mode="user" if el == 0 else "supervisor",
            access=access,
            us="U" if us else "S",
            rw=1 if rw else 0,
            key=(d >> 59) & 0xF,
            pkru=user_pkey_reg,
            pkrs=pkey_reg,
            pke=pke,
            pks=pks,
            wp=wp,
        )
    if pie:
        piindex = arm64_poe.pte_pi_index(d)
        pir_n = (pir >> (4 * piindex)) & 0xF
        pire0_n = (pire0 >> (4 * piindex)) & 0xF
    else:
        pir_n = pire0_n = 0
    return arm64_poe.check_access(
        el=el,
        unprivileged=unprivileged,
        access=access,
        por_el1=pkey_reg,
        por_el0=user_pkey_reg,
        poindex=(d >> 60) & 7,
        ap=(d >> 6) & 3,
        pxn=(d >> 53) & 1,
        uxn=(d >> 54) & 1,
        poe=poe,
        e0poe=e0poe,
        pie=pie,
        pir=pir_n,
        pire0=pire0_n,
        wxn=wxn,
        pan=pan,
        level=level,
    )
