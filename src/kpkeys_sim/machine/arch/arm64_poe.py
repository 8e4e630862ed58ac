"""Arm FEAT_S1POE (stage-1 Permission Overlay Extension), bit-exact.

The overlay registers ``POR_EL0`` (unprivileged accesses) and ``POR_EL1``
(privileged accesses of the EL1&0 regime) hold sixteen 4-bit permission
fields; a stage-1 Block/Page descriptor selects one of the first eight with
its POIndex, bits [62:60] (spec §1.2–§1.4, Arm ARM Table D8-52, Table D8-72).
The stage-1 permissions of an access are the base permissions of the
descriptor intersected with the selected overlay field (spec §1.6, Arm ARM
D8.4 intro, R_CZCYQ).

What is modelled (spec §1.6 evaluation steps, §1.7, §1.9):

1. Base permissions.  Direct (TCR2_EL1.PIE = 0): AP[2:1] per Table D8-63,
   ``PrivX = ¬PXN ∧ ¬UnprivWrite`` (R_VWLLR), ``UnprivX = ¬UXN``.  Indirect
   (TCR2_EL1.PIE = 1): the selected PIR_EL1 / PIRE0_EL1 nibbles decoded per
   Table D8-68 (reserved encodings give no access), then R_VFPJF: a
   privileged base with X or GCS together with an unprivileged base with W or
   GCS removes every base permission.  Hierarchical (table) permissions are
   not modelled: enabling POE or E0POE disables them (R_BVXDG); with both off
   they are assumed 0 (spec §4.1).
2. Overlay.  Enabled for the privileged class by TCR2_EL1.POE and for the
   unprivileged class by TCR2_EL1.E0POE (R_DPZHF, R_GDVJK); under PIE also
   only when bit 3 of the class's base nibble is 0.  An overlay nibble with
   bit 3 set is reserved and behaves as no access (Table D8-74; KVM
   ``compute_s1_overlay_permissions``).
3. WXN (R_QXXPC, R_NPBXC).  Active for a class when SCTLR_EL1.WXN = 1 and the
   class's base has both W and X (direct), or its base nibble is 0x6 (PIE,
   Table D8-69).  Overlay disabled: base X is removed.  Overlay enabled and
   overlay X present: overlay W is removed.
4. PAN (§D8.4.5, R_TBKKB).  For a privileged data access with PSTATE.PAN = 1
   to a page whose base grants any unprivileged data permission, base
   PrivRead and PrivWrite are removed (a base fault, not an overlay fault).
5. Check.  Needed rights: R load, W store, R+W atomic, X instruction fetch.
   If the overlay is enabled and lacks a needed right the fault is an Overlay
   permission fault, otherwise if the base lacks one it is a base permission
   fault: Overlay faults have the higher priority (R_RPXZR, §D8.15.5.1,
   Table D8-121).

Access classes (spec §1.7, Arm ARM §C3.2.7, Table D8-72): EL0 accesses and
EL1 load/store-unprivileged instructions (LDTR/STTR family, PSTATE.UAO = 0)
are *unprivileged* and use POR_EL0, E0POE and the unprivileged base
permissions; other EL1 accesses are *privileged* and use POR_EL1, POE and the
privileged base permissions.  The same POIndex selects into both registers.

Fault syndrome (spec §1.9, Arm ARM ESR_EL1): EC 0x24/0x25 data abort from a
lower/the same EL, 0x20/0x21 instruction abort from a lower/the same EL, IL
(bit 25) set, WnR (bit 6) for data aborts, DFSC/IFSC = 0b0011LL (permission
fault at lookup level LL), ISS2.Overlay = ESR bit 38.  Every other ISS/ISS2
bit is 0 (ISV = 0, FnV = 0, S1PTW = 0, no DirtyBit; spec §1.9 [A]).

Modelling assumptions (also in ``docs/model-assumptions.md``):

* The fault is taken to EL1, so an access made at EL1 (including an
  LDTR/STTR at EL1, which is an unprivileged access *made at EL1*) reports
  EC 0x25/0x21 ("same EL") and an access made at EL0 reports 0x24/0x20.
* ``unprivileged=True`` with ``el=0`` is accepted and changes nothing: every
  EL0 access is already unprivileged (an LDTR executed at EL0 behaves as an
  ordinary load).  ``unprivileged=True`` means PSTATE.UAO = 0; UAO = 1
  (LDTR/STTR treated as privileged) is modelled by passing
  ``unprivileged=False``.  An instruction fetch cannot be unprivileged in
  this sense, so ``unprivileged=True`` with ``access="X"`` is rejected.
* WnR for an ``RW`` (atomic read-modify-write) access follows the Arm ARM
  rule for atomics that both read and write: WnR = 0 if a read of the
  address would have generated the fault being reported (the permissions of
  the reporting step, overlay or base, lack R), otherwise WnR = 1.  Stores
  always report WnR = 1, loads WnR = 0; instruction aborts have no WnR.
* The WXN condition ("base has W and X") is evaluated on the base
  permissions *before* PAN removes PrivRead/PrivWrite (the Arm ARM attaches
  WXN to the base encoding); PAN looks at the base unprivileged
  permissions, not at the overlay-restricted ones.
* PAN only affects privileged data accesses at EL1: it is ignored at EL0,
  for LDTR/STTR (unprivileged) accesses and for instruction fetches.  FEAT_PAN3
  (SCTLR_EL1.EPAN) is not modelled.
* GCS is not modelled beyond R_VFPJF: PIE nibble 0x9 ("R + GCS") grants R
  to ordinary accesses and counts as GCS for R_VFPJF.
* Only the POR_EL1/POR_EL0 nibble selected by POIndex is read; other bits of
  the registers (including the RES0 fields Perm8–Perm15) are never examined
  by :func:`check_access`.
* The permission-fault level reported in DFSC is the ``level`` argument
  (default 3, a level-3 page, spec §4.1 [A]); ``kpkeys-sim arch check`` always
  uses 3.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from kpkeys_sim.machine.arch.base import (
    ACCESS_KINDS,
    HEX_RE,
    Perm,
    PkeyArch,
    Verdict,
    field_hex,
    field_int,
    field_null,
    register_arch,
    shown_json,
)

__all__ = [
    "ARM64_CHECK_FIELDS",
    "PIE_GCS",
    "PIE_NONE_O",
    "PIE_R",
    "PIE_RW",
    "PIE_RWX",
    "PIE_RWX_O",
    "PIE_RW_O",
    "PIE_RX",
    "PIE_RX_O",
    "PIE_R_O",
    "PIE_X_O",
    "POE_MASK",
    "POE_NONE",
    "POE_R",
    "POE_RW",
    "POE_RWX",
    "POE_RX",
    "POE_W",
    "POE_WX",
    "POE_X",
    "PTE_AF",
    "PTE_CONT",
    "PTE_DBM",
    "PTE_NG",
    "PTE_PO_IDX_0",
    "PTE_PO_IDX_1",
    "PTE_PO_IDX_2",
    "PTE_PO_IDX_MASK",
    "PTE_PO_IDX_SHIFT",
    "PTE_PXN",
    "PTE_RDONLY",
    "PTE_SHARED",
    "PTE_TABLE_BIT",
    "PTE_USER",
    "PTE_UXN",
    "PTE_VALID",
    "TCR2_EL1_E0POE",
    "TCR2_EL1_PIE",
    "TCR2_EL1_POE",
    "Arm64CheckRequest",
    "Arm64Poe",
    "ESR_ELx_EC_DABT_CUR",
    "ESR_ELx_EC_DABT_LOW",
    "ESR_ELx_EC_IABT_CUR",
    "ESR_ELx_EC_IABT_LOW",
    "ESR_ELx_EC_MASK",
    "ESR_ELx_EC_SHIFT",
    "ESR_ELx_FSC",
    "ESR_ELx_FSC_PERM",
    "ESR_ELx_IL",
    "ESR_ELx_ISS2_SHIFT",
    "ESR_ELx_Overlay",
    "ESR_ELx_Overlay_SHIFT",
    "ESR_ELx_WNR",
    "PIE_RWnX_O",
    "POR_ELx_BITS_PER_IDX",
    "POR_ELx_PERM_GET",
    "POR_ELx_PERM_PREP",
    "POR_ELx_PERM_SHIFT",
    "check_access",
    "decode_esr",
    "desc_fields",
    "poe_nibble_perm",
    "por_elx_set_pkey_perms",
    "pte_pi_index",
    "pte_po_index",
]

# --- POR_ELx permission encoding (spec §1.3, Arm ARM Table D8-74, L-sysreg) ------------

POE_NONE = 0x0
POE_R = 0x1
POE_X = 0x2
POE_RX = 0x3
POE_W = 0x4
POE_RW = 0x5
POE_WX = 0x6
POE_RWX = 0x7
#: Mask of one POR_ELx field; values 0x8–0xF (bit 3 set) are reserved = no access.
POE_MASK = 0xF
#: Width of one POR_ELx field.
POR_ELx_BITS_PER_IDX = 4

_POR_BITS = 64
_POR_MAX = (1 << _POR_BITS) - 1
#: Number of fields in a POR_ELx register (Perm0..Perm15, spec §1.2).
_POR_FIELDS = 16


def POR_ELx_PERM_SHIFT(idx: int) -> int:
    """Bit position of field ``Perm<idx>`` in POR_ELx (spec §1.10, L-sysreg)."""
    return POR_ELx_BITS_PER_IDX * idx


def POR_ELx_PERM_PREP(idx: int, perm: int) -> int:
    """``perm`` (masked to 4 bits) placed in field ``idx`` of a POR_ELx value (L-sysreg)."""
    return (perm & POE_MASK) << POR_ELx_PERM_SHIFT(idx)


def POR_ELx_PERM_GET(idx: int, reg: int) -> int:
    """The raw 4-bit field ``idx`` of POR_ELx value ``reg`` (reserved values not folded)."""
    return (reg >> POR_ELx_PERM_SHIFT(idx)) & POE_MASK


def por_elx_set_pkey_perms(por: int, pkey: int, perms: int) -> int:
    """``por`` with the field of ``pkey`` replaced by ``perms`` (kpkeys RFC ``por.h``)."""
    return (por & ~(POE_MASK << POR_ELx_PERM_SHIFT(pkey))) | POR_ELx_PERM_PREP(pkey, perms)


def poe_nibble_perm(nibble: int) -> Perm:
    """Rights granted by one POR_ELx field: bit0 R, bit1 X, bit2 W; bit3 set → none (§1.3)."""
    if not 0 <= nibble <= POE_MASK:
        raise ValueError(f"POR_ELx field must be 0x0..0xF, got {nibble:#x}")
    if nibble & 0x8:
        return Perm()
    return Perm(r=bool(nibble & POE_R), w=bool(nibble & POE_W), x=bool(nibble & POE_X))


def _perm_nibble(perm: Perm) -> int:
    return (POE_R if perm.r else 0) | (POE_W if perm.w else 0) | (POE_X if perm.x else 0)


# --- Stage-1 Block/Page descriptor bits (spec §1.4, §2.2; Arm ARM Table D8-52; L-hwdef) --

PTE_VALID = 1 << 0
#: Bit 1: Table (levels 0–2) / Page (level 3) when set, Block when clear.
PTE_TABLE_BIT = 1 << 1
#: AP[1]: EL0 accessible.  PIIndex[0] under PIE.
PTE_USER = 1 << 6
#: AP[2]: read-only.
PTE_RDONLY = 1 << 7
PTE_SHARED = 3 << 8
PTE_AF = 1 << 10
PTE_NG = 1 << 11
#: DBM (Linux PTE_WRITE); PIIndex[1] under PIE.
PTE_DBM = 1 << 51
PTE_CONT = 1 << 52
#: PXN; PIIndex[2] under PIE.
PTE_PXN = 1 << 53
#: UXN; PIIndex[3] under PIE.
PTE_UXN = 1 << 54
PTE_PO_IDX_SHIFT = 60
PTE_PO_IDX_0 = 1 << 60
PTE_PO_IDX_1 = 1 << 61
PTE_PO_IDX_2 = 1 << 62
PTE_PO_IDX_MASK = PTE_PO_IDX_0 | PTE_PO_IDX_1 | PTE_PO_IDX_2

_OA_MASK = ((1 << 48) - 1) & ~((1 << 12) - 1)


def pte_po_index(desc: int) -> int:
    """POIndex[2:0] of a stage-1 Block/Page descriptor, bits [62:60] (Linux ``pte_po_index``)."""
    return (desc & PTE_PO_IDX_MASK) >> PTE_PO_IDX_SHIFT


def pte_pi_index(desc: int) -> int:
    """PIIndex[3:0] of a descriptor under PIE: bits 54, 53, 51, 6 (spec §1.6, Table D8-52)."""
    return (
        (((desc >> 54) & 1) << 3)
        | (((desc >> 53) & 1) << 2)
        | (((desc >> 51) & 1) << 1)
        | ((desc >> 6) & 1)
    )


def desc_fields(desc: int) -> dict[str, int]:
    """Fields of a VMSAv8-64 stage-1 Block/Page descriptor (4K granule), for humans and tests.

    ``ap`` is AP[2:1] as a 2-bit integer; ``oa`` is the output address bits
    [47:12] (for a block the low bits below the block size are RES0).
    """
    return {
        "valid": desc & PTE_VALID,
        "table_or_page": (desc & PTE_TABLE_BIT) >> 1,
        "attrindx": (desc >> 2) & 0x7,
        "ap": (desc >> 6) & 0x3,
        "sh": (desc >> 8) & 0x3,
        "af": (desc >> 10) & 1,
        "ng": (desc >> 11) & 1,
        "oa": desc & _OA_MASK,
        "dbm": (desc >> 51) & 1,
        "cont": (desc >> 52) & 1,
        "pxn": (desc >> 53) & 1,
        "uxn": (desc >> 54) & 1,
        "poindex": pte_po_index(desc),
        "piindex": pte_pi_index(desc),
    }


# --- TCR2_EL1 (spec §1.5, Arm ARM TCR2_EL1) ------------------------------------------

TCR2_EL1_PIE = 1 << 1
TCR2_EL1_E0POE = 1 << 2
TCR2_EL1_POE = 1 << 3

# --- FEAT_S1PIE base-permission encodings (spec §1.6, Table D8-68, L-sysreg) ----------

PIE_NONE_O = 0x0
PIE_R_O = 0x1
PIE_X_O = 0x2
PIE_RX_O = 0x3
PIE_RW_O = 0x5
PIE_RWnX_O = 0x6
PIE_RWX_O = 0x7
PIE_R = 0x8
PIE_GCS = 0x9
PIE_RX = 0xA
PIE_RW = 0xC
PIE_RWX = 0xE

#: Table D8-68: nibble → (R, W, X) for ordinary accesses.  Reserved encodings
#: (0x4, 0xB, 0xD, 0xF) give no access; 0x9 is R + GCS.
_PIE_BASE: tuple[tuple[bool, bool, bool], ...] = (
    (False, False, False),  # 0x0 none (overlay applied)
    (True, False, False),  # 0x1 R
    (False, False, True),  # 0x2 X
    (True, False, True),  # 0x3 RX
    (False, False, False),  # 0x4 reserved
    (True, True, False),  # 0x5 RW
    (True, True, True),  # 0x6 RWX with WXN control (Table D8-69)
    (True, True, True),  # 0x7 RWX
    (True, False, False),  # 0x8 R (overlay not applied)
    (True, False, False),  # 0x9 R + GCS
    (True, False, True),  # 0xA RX
    (False, False, False),  # 0xB reserved
    (True, True, False),  # 0xC RW
    (False, False, False),  # 0xD reserved
    (True, True, True),  # 0xE RWX
    (False, False, False),  # 0xF reserved
)
#: PIE nibble bit 3: the overlay is NOT applied (R_GDVJK, R_DPZHF).
_PIE_NO_OVERLAY = 0x8

# --- ESR_ELx (spec §1.9, Arm ARM ESR_EL1, L-esr) ----------------------------------------

ESR_ELx_EC_SHIFT = 26
ESR_ELx_EC_MASK = 0x3F << ESR_ELx_EC_SHIFT
ESR_ELx_EC_IABT_LOW = 0x20
ESR_ELx_EC_IABT_CUR = 0x21
ESR_ELx_EC_DABT_LOW = 0x24
ESR_ELx_EC_DABT_CUR = 0x25
ESR_ELx_IL = 1 << 25
ESR_ELx_WNR = 1 << 6
ESR_ELx_FSC = 0x3F
#: Permission fault, level 0; add the lookup level (0x0D level 1 … 0x0F level 3).
ESR_ELx_FSC_PERM = 0x0C
ESR_ELx_ISS2_SHIFT = 32
#: Position of Overlay inside ISS2 (Linux ``ESR_ELx_Overlay_SHIFT``).
ESR_ELx_Overlay_SHIFT = 6
#: ISS2.Overlay as a mask of the whole ESR value: bit 38.  (Linux defines
#: ``ESR_ELx_Overlay`` relative to ISS2, i.e. ``BIT(6)`` of ``ESR_ELx_ISS2(esr)``;
#: this is the same bit shifted by ``ESR_ELx_ISS2_SHIFT``.)
ESR_ELx_Overlay = 1 << (ESR_ELx_ISS2_SHIFT + ESR_ELx_Overlay_SHIFT)

_DATA_EC = {0: ESR_ELx_EC_DABT_LOW, 1: ESR_ELx_EC_DABT_CUR}
_INSN_EC = {0: ESR_ELx_EC_IABT_LOW, 1: ESR_ELx_EC_IABT_CUR}


def _esr(el: int, access: str, overlay: bool, step_has_r: bool, level: int) -> int:
    """ESR_EL1 of a stage-1 permission fault (every other ISS/ISS2 bit 0, spec §1.9 [A])."""
    if access == "X":
        esr = _INSN_EC[el] << ESR_ELx_EC_SHIFT
    else:
        esr = _DATA_EC[el] << ESR_ELx_EC_SHIFT
        # Stores write; an atomic reports WnR = 0 only if a read alone would
        # have caused the reported fault (Arm ARM ESR_ELx.WnR, atomics).
        if access == "W" or (access == "RW" and step_has_r):
            esr |= ESR_ELx_WNR
    esr |= ESR_ELx_IL | (ESR_ELx_FSC_PERM + level)
    if overlay:
        esr |= ESR_ELx_Overlay
    return esr


def decode_esr(esr: int) -> dict[str, int | None]:
    """Fields of an ESR_EL1 value: ``ec``, ``il``, ``wnr``, ``dfsc``, ``level``, ``overlay``.

    ``level`` is the lookup level of a permission fault (DFSC 0x0C–0x0F) and
    ``None`` for any other fault status code.
    """
    dfsc = esr & ESR_ELx_FSC
    return {
        "ec": (esr & ESR_ELx_EC_MASK) >> ESR_ELx_EC_SHIFT,
        "il": (esr >> 25) & 1,
        "wnr": (esr >> 6) & 1,
        "dfsc": dfsc,
        "level": dfsc & 0x3 if dfsc & ~0x3 == ESR_ELx_FSC_PERM else None,
        "overlay": (esr >> (ESR_ELx_ISS2_SHIFT + ESR_ELx_Overlay_SHIFT)) & 1,
    }


# --- the access check -----------------------------------------------------------------

_ALLOW = Verdict("allow")
#: access kind → (needs R, needs W, needs X)
_NEEDS: dict[str, tuple[bool, bool, bool]] = {
    "R": (True, False, False),
    "W": (False, True, False),
    "X": (False, False, True),
    "RW": (True, True, False),
}


def _bit(name: str, value: int) -> None:
    if value not in (0, 1):
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")


@functools.lru_cache(maxsize=1 << 16)
def _check(
    el: int,
    unprivileged: bool,
    access: str,
    o_priv: int,
    o_unpriv: int,
    ap: int,
    pxn: int,
    uxn: int,
    poe: int,
    e0poe: int,
    pie: int,
    pir: int,
    pire0: int,
    wxn: int,
    pan: int,
    level: int,
) -> Verdict:
    """Memoised core of :func:`check_access`; validates its arguments on a cache miss."""
    if el not in (0, 1):
        raise ValueError(f"el must be 0 or 1, got {el!r}")
    if access not in _NEEDS:
        raise ValueError(f"access must be one of {', '.join(ACCESS_KINDS)}, got {access!r}")
    if unprivileged not in (False, True):
        raise ValueError(f"unprivileged must be a bool, got {unprivileged!r}")
    if unprivileged and access == "X":
        raise ValueError("an instruction fetch cannot be unprivileged (LDTR/STTR are loads/stores)")
    for name, value in (
        ("pxn", pxn),
        ("uxn", uxn),
        ("poe", poe),
        ("e0poe", e0poe),
        ("pie", pie),
        ("wxn", wxn),
        ("pan", pan),
    ):
        _bit(name, value)
    if ap not in (0, 1, 2, 3):
        raise ValueError(f"ap must be AP[2:1] as an integer 0..3, got {ap!r}")
    if pir not in range(16) or pire0 not in range(16):
        raise ValueError(f"pir/pire0 must be nibbles 0..15, got {pir!r}/{pire0!r}")
    if level not in (0, 1, 2, 3):
        raise ValueError(f"level must be 0..3, got {level!r}")

    # Step 1: base permissions and the per-class overlay switches.
    if pie:
        pr, pw, px = _PIE_BASE[pir]
        ur, uw, ux = _PIE_BASE[pire0]
        # R_VFPJF: privileged X/GCS together with unprivileged W/GCS removes everything.
        if (px or pir == PIE_GCS) and (uw or pire0 == PIE_GCS):
            pr = pw = px = ur = uw = ux = False
        priv_ov = bool(poe) and not pir & _PIE_NO_OVERLAY
        unpriv_ov = bool(e0poe) and not pire0 & _PIE_NO_OVERLAY
        pwxn = pir == PIE_RWnX_O
        uwxn = pire0 == PIE_RWnX_O
    else:
        # Table D8-63: AP[2] = read-only, AP[1] = EL0 accessible.
        pr = True
        pw = not ap & 0b10
        ur = bool(ap & 0b01)
        uw = ap == 0b01
        px = not pxn and not uw  # R_VWLLR
        ux = not uxn
        priv_ov = bool(poe)
        unpriv_ov = bool(e0poe)
        pwxn = bool(wxn) and pw and px
        uwxn = bool(wxn) and uw and ux

    if el == 0 or unprivileged:
        br, bw, bx, ov, o, cwxn = ur, uw, ux, unpriv_ov, o_unpriv, uwxn
    else:
        br, bw, bx, ov, o, cwxn = pr, pw, px, priv_ov, o_priv, pwxn
        # Step 4: PAN removes PrivRead/PrivWrite for privileged data accesses to
        # pages with any unprivileged data permission.
        if pan and access != "X" and (ur or uw):
            br = bw = False

    # Step 2: overlay nibble; bit 3 set is reserved and grants nothing.
    if o & 0x8:
        o = POE_NONE
    orr, ow, ox = bool(o & POE_R), bool(o & POE_W), bool(o & POE_X)

    # Step 3: WXN.
    if cwxn:
        if not ov:
            bx = False
        elif ox:
            ow = False

    # Step 5: overlay faults first, then base faults.
    nr, nw, nx = _NEEDS[access]
    if ov and ((nr and not orr) or (nw and not ow) or (nx and not ox)):
        return Verdict("overlay_fault", _esr(el, access, True, orr, level))
    if (nr and not br) or (nw and not bw) or (nx and not bx):
        return Verdict("base_fault", _esr(el, access, False, br, level))
    return _ALLOW


def check_access(
    *,
    el: int,
    unprivileged: bool,
    access: str,
    por_el1: int,
    por_el0: int,
    poindex: int,
    ap: int,
    pxn: int,
    uxn: int,
    poe: int,
    e0poe: int,
    pie: int,
    pir: int,
    pire0: int,
    wxn: int,
    pan: int,
    level: int = 3,
) -> Verdict:
    """Bit-exact verdict of one stage-1 access in the EL1&0 regime (spec §1.6, §1.7, §1.9).

    ``el`` is the Exception level the access is made at (0 or 1);
    ``unprivileged`` marks an EL1 LDTR/STTR-family access with PSTATE.UAO = 0;
    ``access`` is one of ``R``, ``W``, ``X``, ``RW``.  ``por_el1``/``por_el0``
    are the full register values and ``poindex`` the descriptor's POIndex
    (0..7).  ``ap`` is AP[2:1] as an integer, ``pxn``/``uxn`` the descriptor
    bits; they are ignored when ``pie`` is 1.  ``pir``/``pire0`` are the
    PIR_EL1/PIRE0_EL1 nibbles already selected by the descriptor's PIIndex;
    they are ignored when ``pie`` is 0.  ``poe``/``e0poe``/``pie`` are
    TCR2_EL1.POE/E0POE/PIE, ``wxn`` is SCTLR_EL1.WXN, ``pan`` is PSTATE.PAN,
    ``level`` the lookup level of the leaf descriptor (DFSC 0x0C + level).

    Returns ``Verdict("allow")`` or a fault (``overlay_fault``/``base_fault``)
    whose syndrome is the ESR_EL1 value.  Raises ``ValueError`` for an
    out-of-range argument.  Pure and memoised: the MMU calls it on every
    checked access.
    """
    if not 0 <= poindex <= 7:
        raise ValueError(f"poindex must be 0..7, got {poindex!r}")
    shift = poindex << 2
    if pie:
        ap = pxn = uxn = 0
    else:
        pir = pire0 = 0
    return _check(
        el,
        unprivileged,
        access,
        (por_el1 >> shift) & POE_MASK,
        (por_el0 >> shift) & POE_MASK,
        ap,
        pxn,
        uxn,
        poe,
        e0poe,
        pie,
        pir,
        pire0,
        wxn,
        pan,
        level,
    )


# --- arch check request parsing --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arm64CheckRequest:
    """One validated ``arch check`` access for arm64 (fields as in :func:`check_access`).

    ``ap``/``pxn``/``uxn`` are ``None`` under PIE and ``pir``/``pire0`` are
    ``None`` without it.
    """

    el: int
    unprivileged: bool
    access: str
    por_el1: int
    por_el0: int
    poindex: int
    ap: int | None
    pxn: int | None
    uxn: int | None
    poe: int
    e0poe: int
    pie: int
    pir: int | None
    pire0: int | None
    wxn: int
    pan: int
    level: int = 3

    def with_level(self, level: int) -> Arm64CheckRequest:
        """The same access with the leaf at lookup level ``level`` (for block mappings)."""
        return replace(self, level=level)


#: ``arch check`` input fields for arm64, in the documented order.
ARM64_CHECK_FIELDS: tuple[str, ...] = (
    "arch",
    "el",
    "unprivileged",
    "access",
    "por_el1",
    "por_el0",
    "poindex",
    "ap",
    "pxn",
    "uxn",
    "poe",
    "e0poe",
    "pie",
    "pir",
    "pire0",
    "wxn",
    "pan",
)


class Arm64Poe(PkeyArch):
    """Arm FEAT_S1POE on the EL1&0 regime with VMSAv8-64 descriptors (8 pkeys)."""

    name: ClassVar[str] = "arm64"
    description: ClassVar[str] = (
        "Arm FEAT_S1POE permission overlay: POR_EL1/POR_EL0, POIndex in descriptor bits [62:60]"
    )
    nr_pkeys: ClassVar[int] = 8
    pkey_desc_lo: ClassVar[int] = 60
    pkey_desc_hi: ClassVar[int] = 62
    kernel_pkey_reg: ClassVar[str] = "POR_EL1"
    user_pkey_reg: ClassVar[str] = "POR_EL0"
    #: A POR_ELx write is seen by later accesses only after a context
    #: synchronisation event (ISB, exception entry/return); POR values are never
    #: cached in TLBs, so no TLBI is needed (spec §1.8, Arm ARM §D24.1.2.2).
    reg_write_needs_sync: ClassVar[bool] = True
    #: 4K/48-bit: levels 0–3; 16K/48-bit: levels 0–3; 64K/48-bit: levels 1–3 (spec §2.1).
    page_sizes: ClassVar[Mapping[int, int]] = {4096: 4, 16384: 4, 65536: 3}

    def _check_reg(self, reg: int, pkey: int) -> None:
        if not 0 <= reg <= _POR_MAX:
            raise ValueError(f"POR_ELx value must be a 64-bit unsigned integer, got {reg:#x}")
        if not 0 <= pkey < self.nr_pkeys:
            raise ValueError(f"pkey {pkey} out of range 0..{self.nr_pkeys - 1}")

    def reg_get_perm(self, reg: int, pkey: int) -> Perm:
        """Rights of ``pkey`` in POR_ELx value ``reg``; reserved fields (0x8–0xF) grant nothing."""
        self._check_reg(reg, pkey)
        return poe_nibble_perm(POR_ELx_PERM_GET(pkey, reg))

    def reg_set_perm(self, reg: int, pkey: int, perm: Perm) -> int:
        """``reg`` with field ``pkey`` set to the POE encoding of ``perm`` (all are encodable)."""
        self._check_reg(reg, pkey)
        return por_elx_set_pkey_perms(reg, pkey, _perm_nibble(perm))

    def parse_check_request(self, obj: Mapping[str, Any]) -> Arm64CheckRequest:
        """Validate one arm64 ``arch check`` object; raise ``ValueError(field, message)``.

        Unknown fields are reported first, then fields are checked in the order
        ``el, unprivileged, access, por_el1, por_el0, poindex, pie, ap, pxn,
        uxn, pir, pire0, poe, e0poe, wxn, pan`` (``pie`` before the fields whose
        nullness depends on it); the first bad field is reported.
        """
        for key in obj:
            if key not in ARM64_CHECK_FIELDS:
                raise ValueError(key, "unknown field")
        for key in ARM64_CHECK_FIELDS:
            if key not in obj:
                raise ValueError(key, "missing")
        el = field_int(obj, "el", 0, 1)
        unpriv = obj["unprivileged"]
        if not isinstance(unpriv, bool):
            raise ValueError("unprivileged", f"must be true or false, got {shown_json(unpriv)}")
        access = obj["access"]
        if access not in ACCESS_KINDS:
            kinds = ", ".join(f'"{k}"' for k in ACCESS_KINDS)
            raise ValueError("access", f"must be one of {kinds}, got {shown_json(access)}")
        if unpriv and access == "X":
            raise ValueError(
                "unprivileged",
                "must be false for an instruction fetch (LDTR/STTR are loads and stores), got true",
            )
        por_el1 = field_hex(obj, "por_el1", _POR_BITS)
        por_el0 = field_hex(obj, "por_el0", _POR_BITS)
        poindex = field_int(obj, "poindex", 0, 7)
        pie = field_int(obj, "pie", 0, 1)
        ap: int | None = None
        pxn: int | None = None
        uxn: int | None = None
        pir: int | None = None
        pire0: int | None = None
        if pie:
            for key in ("ap", "pxn", "uxn"):
                field_null(obj, key, "pie is 1")
            pir = self._nibble(obj, "pir")
            pire0 = self._nibble(obj, "pire0")
        else:
            value = obj["ap"]
            if not isinstance(value, str) or value not in ("00", "01", "10", "11"):
                raise ValueError(
                    "ap",
                    f'must be a two-bit string "00", "01", "10" or "11", got {shown_json(value)}',
                )
            ap = int(value, 2)
            pxn = field_int(obj, "pxn", 0, 1)
            uxn = field_int(obj, "uxn", 0, 1)
            for key in ("pir", "pire0"):
                field_null(obj, key, "pie is 0")
        return Arm64CheckRequest(
            el=el,
            unprivileged=unpriv,
            access=access,
            por_el1=por_el1,
            por_el0=por_el0,
            poindex=poindex,
            ap=ap,
            pxn=pxn,
            uxn=uxn,
            poe=field_int(obj, "poe", 0, 1),
            e0poe=field_int(obj, "e0poe", 0, 1),
            pie=pie,
            pir=pir,
            pire0=pire0,
            wxn=field_int(obj, "wxn", 0, 1),
            pan=field_int(obj, "pan", 0, 1),
        )

    @staticmethod
    def _nibble(obj: Mapping[str, Any], name: str) -> int:
        value = obj[name]
        if not isinstance(value, str) or not HEX_RE.fullmatch(value) or int(value, 16) > 0xF:
            raise ValueError(
                name,
                f'must be a hex nibble string "0x0".."0xF" when pie is 1, got {shown_json(value)}',
            )
        return int(value, 16)

    def check_request(self, request: Any) -> Verdict:
        """Verdict for an :class:`Arm64CheckRequest` (DFSC level ``request.level``, default 3)."""
        if not isinstance(request, Arm64CheckRequest):
            raise TypeError(f"expected an Arm64CheckRequest, got {type(request).__name__}")
        r = request
        return check_access(
            el=r.el,
            unprivileged=r.unprivileged,
            access=r.access,
            por_el1=r.por_el1,
            por_el0=r.por_el0,
            poindex=r.poindex,
            ap=r.ap or 0,
            pxn=r.pxn or 0,
            uxn=r.uxn or 0,
            poe=r.poe,
            e0poe=r.e0poe,
            pie=r.pie,
            pir=r.pir or 0,
            pire0=r.pire0 or 0,
            wxn=r.wxn,
            pan=r.pan,
            level=r.level,
        )

    def verdict_json(self, verdict: Verdict) -> dict[str, str]:
        """``{"result": ...}`` plus, for faults, ``"esr"`` as ``0x`` + 16 uppercase hex digits."""
        out = {"result": verdict.result}
        if verdict.syndrome is not None:
            out["esr"] = f"0x{verdict.syndrome:016X}"
        return out


register_arch(Arm64Poe)
