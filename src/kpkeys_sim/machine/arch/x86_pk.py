"""x86 protection keys: PKU (PKRU, user pages) and PKS (IA32_PKRS, supervisor pages).

The leaf paging-structure entry that maps a page holds a 4-bit protection key
in bits [62:59] (spec §3.1, SDM §4.6.2, Linux ``_PAGE_BIT_PKEY_BIT0..3``).
Two 32-bit registers give each of the 16 keys an AD (access-disable, bit 2i)
and a WD (write-disable, bit 2i+1) bit: PKRU governs *user-mode addresses*
(U/S = 1 at every level) for any CPL, IA32_PKRS (MSR 0x6E1) governs
*supervisor-mode addresses* (spec §3.1, §3.2).

The check follows QEMU's ``mmu_translate`` ordering (spec §3.3, Q-x86):

1. U/S: a user-mode (CPL 3) access to a supervisor page faults (P|U, plus W
   for writes), before any key is consulted.
2. Key: the register chosen by the *page's* U/S bit (PKRU if CR4.PKE = 1 for
   user pages, IA32_PKRS if CR4.PKS = 1 for supervisor pages; a disabled
   feature means no key check).  AD = 1 denies data reads and writes; WD = 1
   denies writes in user mode, and supervisor-mode writes only when
   CR0.WP = 1.  Instruction fetches are never affected.  A violation is a
   ``pk_fault`` with error code P|PK (+W, +U).
3. R/W: a write to a page with R/W = 0 faults in user mode, and in supervisor
   mode only when CR0.WP = 1 (``base_fault``, P (+W, +U)).

So a write to a read-only page whose key also has WD set reports PK.

Modelling assumptions (spec §4.3 [A]; also in ``docs/model-assumptions.md``):

* IA-32e paging, present page, XD = 0, CR4.SMAP = 0, CR4.SMEP = 0: a
  supervisor-mode access may read, write (subject to R/W and WP) and fetch
  from a user page; only keys and R/W can refuse it.  ``us`` is the
  effective U/S over all levels and ``rw`` the effective R/W.
* The #PF error code models only P (0x1), W/R (0x2), U/S (0x4) and PK (0x20)
  (spec §4.3).  The I/D bit (0x10) that a fetch fault would also set with
  EFER.NXE = 1 or CR4.SMEP = 1 is not modelled; RSVD, SGX and SS bits are
  never set.
* An ``RW`` (locked read-modify-write) access needs both rights and reports
  W/R = 1: the processor performs it as a write-intent access.
* IA32_PKRS bits 63:32 are reserved (a WRMSR with them set raises #GP,
  spec §3.2), so IA32_PKRS is modelled as a 32-bit value like PKRU.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from kpkeys_sim.machine.arch.base import (
    ACCESS_KINDS,
    Perm,
    PkeyArch,
    Verdict,
    field_choice,
    field_hex,
    field_int,
    register_arch,
)

__all__ = [
    "MSR_IA32_PKRS",
    "PKRU_AD_BIT",
    "PKRU_BITS_PER_PKEY",
    "PKRU_WD_BIT",
    "X86_CHECK_FIELDS",
    "X86_CR0_WP_BIT",
    "X86_CR4_PKE_BIT",
    "X86_CR4_PKS_BIT",
    "X86_PF_PK",
    "X86_PF_PROT",
    "X86_PF_USER",
    "X86_PF_WRITE",
    "_PAGE_BIT_PKEY_BIT0",
    "X86CheckRequest",
    "X86Pk",
    "check_access",
    "decode_pf_error_code",
    "pkr_set_ad",
    "pkr_set_bits",
    "pkr_set_wd",
    "pkru_allows_read",
    "pkru_allows_write",
]

# --- registers (spec §3.1, §3.2; L-x86pkru, Q-x86) -----------------------------------

PKRU_AD_BIT = 0x1
PKRU_WD_BIT = 0x2
PKRU_BITS_PER_PKEY = 2
MSR_IA32_PKRS = 0x6E1
X86_CR4_PKE_BIT = 22
X86_CR4_PKS_BIT = 24
X86_CR0_WP_BIT = 16
#: Leaf-entry bit of key bit 0 (Linux ``_PAGE_BIT_PKEY_BIT0``); keys use bits 59..62.
_PAGE_BIT_PKEY_BIT0 = 59

_NR_PKEYS = 16
_PKR_BITS = 32
_PKR_MAX = (1 << _PKR_BITS) - 1

# --- #PF error code (spec §3.3; Linux ``enum x86_pf_error_code``) -----------------------

X86_PF_PROT = 0x1
X86_PF_WRITE = 0x2
X86_PF_USER = 0x4
X86_PF_PK = 0x20


def _check_pkey(pkey: int) -> None:
    if not 0 <= pkey < _NR_PKEYS:
        raise ValueError(f"pkey {pkey} out of range 0..{_NR_PKEYS - 1}")


def pkru_allows_read(pkru: int, pkey: int) -> bool:
    """True if AD of ``pkey`` is clear (Linux ``__pkru_allows_read``); also valid for PKRS."""
    _check_pkey(pkey)
    return not pkru & (PKRU_AD_BIT << (pkey * PKRU_BITS_PER_PKEY))


def pkru_allows_write(pkru: int, pkey: int) -> bool:
    """True if both AD and WD of ``pkey`` are clear (Linux ``__pkru_allows_write``)."""
    _check_pkey(pkey)
    return not pkru & ((PKRU_AD_BIT | PKRU_WD_BIT) << (pkey * PKRU_BITS_PER_PKEY))


def pkr_set_bits(pkr: int, pkey: int, ad: bool, wd: bool) -> int:
    """PKRU/PKRS value ``pkr`` with the AD/WD pair of ``pkey`` replaced.

    Same arithmetic as Linux ``arch_set_user_pkey_access`` on x86 (clear the
    pair, then OR the new bits in).
    """
    _check_pkey(pkey)
    shift = pkey * PKRU_BITS_PER_PKEY
    bits = (PKRU_AD_BIT if ad else 0) | (PKRU_WD_BIT if wd else 0)
    return (pkr & ~((PKRU_AD_BIT | PKRU_WD_BIT) << shift)) | (bits << shift)


def pkr_set_ad(pkr: int, pkey: int, ad: bool) -> int:
    """``pkr`` with only the AD bit of ``pkey`` set to ``ad``."""
    _check_pkey(pkey)
    mask = PKRU_AD_BIT << (pkey * PKRU_BITS_PER_PKEY)
    return (pkr | mask) if ad else (pkr & ~mask)


def pkr_set_wd(pkr: int, pkey: int, wd: bool) -> int:
    """``pkr`` with only the WD bit of ``pkey`` set to ``wd``."""
    _check_pkey(pkey)
    mask = PKRU_WD_BIT << (pkey * PKRU_BITS_PER_PKEY)
    return (pkr | mask) if wd else (pkr & ~mask)


def decode_pf_error_code(code: int) -> dict[str, int]:
    """Bits of a #PF error code: ``p``, ``w``, ``u``, ``rsvd``, ``id``, ``pk`` (spec §3.3)."""
    return {
        "p": code & 1,
        "w": (code >> 1) & 1,
        "u": (code >> 2) & 1,
        "rsvd": (code >> 3) & 1,
        "id": (code >> 4) & 1,
        "pk": (code >> 5) & 1,
    }


# --- the access check -----------------------------------------------------------------

_ALLOW = Verdict("allow")
_MODES = ("user", "supervisor")
_US = ("U", "S")


@functools.lru_cache(maxsize=1 << 14)
def _check(
    mode: str,
    access: str,
    us: str,
    rw: int,
    bits_u: int,
    bits_s: int,
    pke: int,
    pks: int,
    wp: int,
) -> Verdict:
    """Memoised core of :func:`check_access` (``bits_*`` = AD|WD pair of ``key``)."""
    if mode not in _MODES:
        raise ValueError(f"mode must be 'user' or 'supervisor', got {mode!r}")
    if access not in ACCESS_KINDS:
        raise ValueError(f"access must be one of {', '.join(ACCESS_KINDS)}, got {access!r}")
    if us not in _US:
        raise ValueError(f"us must be 'U' or 'S', got {us!r}")
    for name, value in (("rw", rw), ("pke", pke), ("pks", pks), ("wp", wp)):
        if value not in (0, 1):
            raise ValueError(f"{name} must be 0 or 1, got {value!r}")

    user = mode == "user"
    write = access in ("W", "RW")
    fetch = access == "X"
    code = X86_PF_PROT | (X86_PF_WRITE if write else 0) | (X86_PF_USER if user else 0)

    # 1. U/S: CPL 3 may not touch supervisor pages at all.
    if user and us == "S":
        return Verdict("base_fault", code)

    # 2. Protection key of the page, from the register its U/S selects.
    bits = (bits_u if pke else 0) if us == "U" else (bits_s if pks else 0)
    if bits and not fetch:
        if bits & PKRU_AD_BIT:
            return Verdict("pk_fault", code | X86_PF_PK)
        if bits & PKRU_WD_BIT and write and (user or wp):
            return Verdict("pk_fault", code | X86_PF_PK)

    # 3. R/W: supervisor writes ignore R/W = 0 unless CR0.WP = 1.
    if write and not rw and (user or wp):
        return Verdict("base_fault", code)
    return _ALLOW


def check_access(
    *,
    mode: str,
    access: str,
    us: str,
    rw: int,
    key: int,
    pkru: int,
    pkrs: int,
    pke: int,
    pks: int,
    wp: int,
) -> Verdict:
    """Bit-exact verdict of one x86 data access or instruction fetch (spec §3.1–§3.3).

    ``mode`` is ``"user"`` (CPL 3) or ``"supervisor"``; ``access`` one of
    ``R``, ``W``, ``X``, ``RW``; ``us``/``rw`` the page's effective U/S
    (``"U"``/``"S"``) and R/W bits; ``key`` the leaf entry's key (0..15);
    ``pkru``/``pkrs`` the 32-bit register values; ``pke``/``pks`` CR4.PKE and
    CR4.PKS; ``wp`` CR0.WP.  Returns ``Verdict("allow")``, a ``pk_fault`` or
    a ``base_fault`` whose syndrome is the #PF error code.  Raises
    ``ValueError`` for an out-of-range argument.  Pure and memoised.
    """
    if not 0 <= key < _NR_PKEYS:
        raise ValueError(f"key must be 0..15, got {key!r}")
    if not 0 <= pkru <= _PKR_MAX or not 0 <= pkrs <= _PKR_MAX:
        raise ValueError(f"pkru/pkrs must be 32-bit unsigned, got {pkru:#x}/{pkrs:#x}")
    shift = key * PKRU_BITS_PER_PKEY
    return _check(mode, access, us, rw, (pkru >> shift) & 3, (pkrs >> shift) & 3, pke, pks, wp)


# --- arch check request parsing --------------------------------------------------------


#: ``arch check`` input fields for x86, in the documented (and checking) order.
X86_CHECK_FIELDS: tuple[str, ...] = (
    "arch",
    "mode",
    "access",
    "us",
    "rw",
    "key",
    "pkru",
    "pkrs",
    "pke",
    "pks",
    "wp",
)


@dataclass(frozen=True, slots=True)
class X86CheckRequest:
    """One validated ``arch check`` access for x86 (fields as in :func:`check_access`)."""

    mode: str
    access: str
    us: str
    rw: int
    key: int
    pkru: int
    pkrs: int
    pke: int
    pks: int
    wp: int


class X86Pk(PkeyArch):
    """x86 PKU/PKS with IA-32e paging (16 pkeys)."""

    name: ClassVar[str] = "x86"
    description: ClassVar[str] = (
        "x86 protection keys: PKU (PKRU, user pages) and PKS (IA32_PKRS, supervisor pages)"
    )
    nr_pkeys: ClassVar[int] = _NR_PKEYS
    pkey_desc_lo: ClassVar[int] = 59
    pkey_desc_hi: ClassVar[int] = 62
    kernel_pkey_reg: ClassVar[str] = "IA32_PKRS"
    user_pkey_reg: ClassVar[str] = "PKRU"
    #: WRPKRU is not executed speculatively and later PKRU-checked accesses wait
    #: for it (spec §3.1, WRPKRU); per the PKS series author, WRMSR IA32_PKRS is
    #: not serializing but has the same WRPKRU-like ordering, so a mapping can be
    #: used right after the write (spec §3.2, M-pks).
    reg_write_needs_sync: ClassVar[bool] = False
    page_sizes: ClassVar[Mapping[int, int]] = {4096: 4}

    def _check_reg(self, reg: int, pkey: int) -> None:
        if not 0 <= reg <= _PKR_MAX:
            raise ValueError(f"PKRU/PKRS value must be a 32-bit unsigned integer, got {reg:#x}")
        _check_pkey(pkey)

    def reg_get_perm(self, reg: int, pkey: int) -> Perm:
        """Rights of ``pkey`` in a PKRU/PKRS value: R = ¬AD, W = ¬AD ∧ ¬WD, X always.

        Keys never restrict instruction fetches, so ``x`` is always true.  WD is
        reported as denying writes (as for user mode, or supervisor mode with
        CR0.WP = 1).
        """
        self._check_reg(reg, pkey)
        bits = (reg >> (pkey * PKRU_BITS_PER_PKEY)) & 3
        ad = bool(bits & PKRU_AD_BIT)
        wd = bool(bits & PKRU_WD_BIT)
        return Perm(r=not ad, w=not ad and not wd, x=True)

    def reg_set_perm(self, reg: int, pkey: int, perm: Perm) -> int:
        """``reg`` with AD = ¬r and WD = ¬w for ``pkey``; ``x`` is ignored.

        Write-without-read is not encodable (AD also disables writes) and raises
        ``ValueError``.
        """
        self._check_reg(reg, pkey)
        if perm.w and not perm.r:
            raise ValueError(
                f"x86 pkeys cannot grant write without read (pkey {pkey}, perm {perm})"
            )
        return pkr_set_bits(reg, pkey, ad=not perm.r, wd=not perm.w)

    def parse_check_request(self, obj: Mapping[str, Any]) -> X86CheckRequest:
        """Validate one x86 ``arch check`` object; raise ``ValueError(field, message)``.

        Unknown fields are reported first, then missing ones, then fields are
        checked in the order of :data:`X86_CHECK_FIELDS`.
        """
        for name in obj:
            if name not in X86_CHECK_FIELDS:
                raise ValueError(name, "unknown field")
        for name in X86_CHECK_FIELDS:
            if name not in obj:
                raise ValueError(name, "missing")
        return X86CheckRequest(
            mode=field_choice(obj, "mode", _MODES),
            access=field_choice(obj, "access", ACCESS_KINDS),
            us=field_choice(obj, "us", _US),
            rw=field_int(obj, "rw", 0, 1),
            key=field_int(obj, "key", 0, _NR_PKEYS - 1),
            pkru=field_hex(obj, "pkru", _PKR_BITS),
            pkrs=field_hex(obj, "pkrs", _PKR_BITS),
            pke=field_int(obj, "pke", 0, 1),
            pks=field_int(obj, "pks", 0, 1),
            wp=field_int(obj, "wp", 0, 1),
        )

    def check_request(self, request: Any) -> Verdict:
        """Verdict for an :class:`X86CheckRequest`."""
        if not isinstance(request, X86CheckRequest):
            raise TypeError(f"expected an X86CheckRequest, got {type(request).__name__}")
        r = request
        return check_access(
            mode=r.mode,
            access=r.access,
            us=r.us,
            rw=r.rw,
            key=r.key,
            pkru=r.pkru,
            pkrs=r.pkrs,
            pke=r.pke,
            pks=r.pks,
            wp=r.wp,
        )

    def verdict_json(self, verdict: Verdict) -> dict[str, str]:
        """``{"result": ...}`` plus, for faults, ``"error_code"`` (``0x`` + 2 uppercase hex)."""
        out = {"result": verdict.result}
        if verdict.syndrome is not None:
            out["error_code"] = f"0x{verdict.syndrome:02X}"
        return out


register_arch(X86Pk)
