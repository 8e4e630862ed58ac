"""The spec's architecture test vectors, as data, and the self-check that runs them.

Every vector here is transcribed from ``shared/spec/pkeys-hardware.md`` §4:

* :data:`ARM64_VECTORS` — the §4.2 table rows A1…A53 (the spec gives the
  result; the ESR values of the faulting rows are computed from the §1.9
  field positions under the §4.1 assumptions: level-3 page, every other
  ISS/ISS2 bit 0);
* :data:`ARM64_SYNDROME_VECTORS` — the §4.2 syndrome spot-checks and the
  §1.9 worked values, with a concrete state for each;
* :data:`POR_REGISTER_VECTORS` — the §4.2 register-value vectors (POR_EL0
  after each ``pkey_alloc``, new nibble per the spec's table);
* :data:`DESCRIPTOR_VECTORS` — the §4.2 descriptor examples;
* :data:`X86_VECTORS` — the §4.3 table rows X1…X23;
* :data:`PKRU_UPDATE_VECTORS` — the §4.3 PKRU update vectors.

Table rows are ``arch check`` input objects with the expected output object,
so the same data drives ``kpkeys-sim arch check`` and the Python API.
The "PIE" rows of §4.2 do not name an Exception level; it is implied by the
register that decides them (A43 uses POR_EL1 → EL1; A45, A47, A49 use
POR_EL0/PIRE0 → EL0).  Rows A37/A39/A41 are EL1 accesses to a user page.

:func:`run_self_checks` (behind ``kpkeys-sim arch vectors``) runs them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kpkeys_sim.machine.arch.arm64_poe import (
    POE_RWX,
    Arm64CheckRequest,
    Arm64Poe,
    POR_ELx_PERM_GET,
    POR_ELx_PERM_PREP,
    desc_fields,
    poe_nibble_perm,
    por_elx_set_pkey_perms,
    pte_po_index,
)
from kpkeys_sim.machine.arch.base import Perm, get_arch
from kpkeys_sim.machine.arch.x86_pk import X86Pk, pkr_set_bits

__all__ = [
    "ARM64_SYNDROME_VECTORS",
    "ARM64_VECTORS",
    "DESCRIPTOR_VECTORS",
    "PKRU_UPDATE_VECTORS",
    "POR_REGISTER_VECTORS",
    "X86_VECTORS",
    "CheckVector",
    "DescriptorVector",
    "PkruUpdateVector",
    "PorRegisterVector",
    "check_vectors",
    "run_check_vector",
    "run_self_checks",
]


@dataclass(frozen=True, slots=True)
class CheckVector:
    """One access: an ``arch check`` input object and the expected output object.

    ``level`` is the arm64 leaf lookup level; ``arch check`` always uses 3, so
    vectors with another level only run through the Python API.
    """

    id: str
    request: Mapping[str, Any]
    expected: Mapping[str, str]
    note: str = ""
    level: int = 3


def _arm64(
    el: int,
    access: str,
    por_el1: int,
    por_el0: int,
    poindex: int,
    base: str,
    poe_e0poe: str,
    *,
    unprivileged: bool = False,
    wxn: int = 0,
    pan: int = 0,
) -> dict[str, Any]:
    """An arm64 ``arch check`` object; ``base`` is ``"AP=01 PXN=1 UXN=0"`` or ``"PIE=0x5/0x0"``."""
    poe, e0poe = (int(b) for b in poe_e0poe.split(","))
    req: dict[str, Any] = {
        "arch": "arm64",
        "el": el,
        "unprivileged": unprivileged,
        "access": access,
        "por_el1": f"0x{por_el1:08X}",
        "por_el0": f"0x{por_el0:08X}",
        "poindex": poindex,
    }
    if base.startswith("PIE="):
        pir, pire0 = base[4:].split("/")
        req.update(ap=None, pxn=None, uxn=None, poe=poe, e0poe=e0poe, pie=1, pir=pir, pire0=pire0)
    else:
        f = dict(part.split("=") for part in base.split())
        req.update(
            ap=f["AP"],
            pxn=int(f["PXN"]),
            uxn=int(f["UXN"]),
            poe=poe,
            e0poe=e0poe,
            pie=0,
            pir=None,
            pire0=None,
        )
    req.update(wxn=wxn, pan=pan)
    return req


_ALLOW = {"result": "allow"}


def _ov(esr: str) -> dict[str, str]:
    return {"result": "overlay_fault", "esr": esr}


def _base(esr: str) -> dict[str, str]:
    return {"result": "base_fault", "esr": esr}


# ESR_EL1 values used below (spec §1.9 field positions, level 3):
_EL0_LOAD_OV = "0x000000409200000F"
_EL0_STORE_OV = "0x000000409200004F"
_EL0_FETCH_OV = "0x000000408200000F"
_EL1_LOAD_OV = "0x000000409600000F"
_EL1_STORE_OV = "0x000000409600004F"
_EL1_FETCH_OV = "0x000000408600000F"
_EL1_LOAD_BASE = "0x000000009600000F"

_U = "AP=01 PXN=1 UXN=0"  # the user data page most rows use

#: Spec §4.2 table, rows A1…A53.
ARM64_VECTORS: tuple[CheckVector, ...] = (
    CheckVector("A1", _arm64(0, "R", 0, 0x7, 0, _U, "0,1"), _ALLOW, "Linux POR_EL0_INIT, pkey 0"),
    CheckVector("A3", _arm64(0, "X", 0, 0x7, 0, _U, "0,1"), _ALLOW, "overlay also gates EL0 fetch"),
    CheckVector(
        "A5", _arm64(0, "W", 0, 0x77777777, 3, _U, "0,1"), _ALLOW, "all 8 keys RWX (signal entry)"
    ),
    CheckVector("A7", _arm64(0, "W", 0, 0x27, 1, _U, "0,1"), _ov(_EL0_STORE_OV), "nibble 2 = X"),
    CheckVector("A9", _arm64(0, "R", 0, 0x37, 1, _U, "0,1"), _ALLOW, "nibble 3 = POE_RX"),
    CheckVector("A11", _arm64(0, "X", 0, 0x57, 1, _U, "0,1"), _ov(_EL0_FETCH_OV), "POE_RW"),
    CheckVector("A13", _arm64(0, "R", 0, 0x17, 1, _U, "0,1"), _ALLOW, "nibble 1 = POE_R"),
    CheckVector("A15", _arm64(0, "W", 0, 0x47, 1, _U, "0,1"), _ALLOW, "nibble 4 = POE_W"),
    CheckVector("A17", _arm64(0, "X", 0, 0x67, 1, _U, "0,1"), _ALLOW, "nibble 6 = POE_WX"),
    CheckVector(
        "A19", _arm64(0, "X", 0, 0xF7, 1, _U, "0,1"), _ov(_EL0_FETCH_OV), "nibble F reserved"
    ),
    CheckVector(
        "A21",
        _arm64(0, "W", 0, 0x7, 1, "AP=11 PXN=1 UXN=1", "0,1"),
        _ov(_EL0_STORE_OV),
        "base RO and overlay both deny: Overlay has priority",
    ),
    CheckVector("A23", _arm64(0, "R", 0, 0x70000007, 7, _U, "0,1"), _ALLOW, "pkey 7 = [31:28]"),
    CheckVector("A25", _arm64(0, "R", 0, 0x00700007, 5, _U, "0,1"), _ALLOW, "pkey 5 = [23:20]"),
    CheckVector("A27", _arm64(0, "R", 0, 0, 1, _U, "0,0"), _ALLOW, "E0POE=0: POR_EL0 ignored"),
    CheckVector(
        "A29",
        _arm64(1, "R", 0x17, 0, 1, "AP=00 PXN=1 UXN=1", "1,1"),
        _ALLOW,
        "kpkeys POR_EL1_INIT: pkey 1 R",
    ),
    CheckVector(
        "A31",
        _arm64(1, "W", 0x57, 0, 1, "AP=00 PXN=1 UXN=1", "1,1"),
        _ALLOW,
        "inside the hardened_pgtables guard: pkey 1 RW",
    ),
    CheckVector(
        "A33",
        _arm64(1, "W", 0x17, 0, 1, "AP=10 PXN=1 UXN=1", "1,1"),
        _ov(_EL1_STORE_OV),
        "both deny -> Overlay",
    ),
    CheckVector(
        "A35",
        _arm64(1, "X", 0x5, 0, 0, "AP=10 PXN=0 UXN=1", "1,1"),
        _ov(_EL1_FETCH_OV),
        "overlay lacks X",
    ),
    CheckVector(
        "A37",
        _arm64(1, "R", 0x7777, 0x27, 1, _U, "1,1", unprivileged=True),
        _ov(_EL1_LOAD_OV),
        "EL1 LDTR: POR_EL0 governs",
    ),
    CheckVector(
        "A39",
        _arm64(1, "R", 0, 0x27, 1, _U, "0,1"),
        _ALLOW,
        "EL1 LDR, PAN=0, POE=0: POR_EL0 not consulted",
    ),
    CheckVector(
        "A41",
        _arm64(1, "R", 0, 0x77, 1, _U, "0,1", pan=1),
        _base(_EL1_LOAD_BASE),
        "PAN removes PrivRead",
    ),
    CheckVector(
        "A43",
        _arm64(1, "W", 0x17, 0, 1, "PIE=0x5/0x0", "1,1"),
        _ov(_EL1_STORE_OV),
        "PIR 0x5 = PIE_RW_O: overlay applied",
    ),
    CheckVector(
        "A45",
        _arm64(0, "W", 0, 0x37, 1, "PIE=0xC/0x5", "1,1"),
        _ov(_EL0_STORE_OV),
        "PIRE0 0x5 = PIE_RW_O",
    ),
    CheckVector(
        "A47", _arm64(0, "X", 0, 0x17, 1, "PIE=0x0/0x2", "1,1"), _ov(_EL0_FETCH_OV), "PIRE0 X_O"
    ),
    CheckVector(
        "A49",
        _arm64(0, "R", 0, 0, 1, "PIE=0x0/0x8", "1,1"),
        _ALLOW,
        "PIRE0 0x8 = PIE_R: POR_EL0 ignored",
    ),
    CheckVector(
        "A51", _arm64(1, "X", 0x7, 0, 0, "AP=00 PXN=0 UXN=1", "1,1", wxn=1), _ALLOW, "WXN, RWX"
    ),
    CheckVector(
        "A53",
        _arm64(1, "X", 0x5, 0, 0, "AP=00 PXN=0 UXN=1", "1,1", wxn=1),
        _ov(_EL1_FETCH_OV),
        "WXN, overlay RW lacks X",
    ),
)

#: Spec §4.2 syndrome spot-checks and §1.9 worked values, each on a concrete state.
ARM64_SYNDROME_VECTORS: tuple[CheckVector, ...] = (
    CheckVector(
        "ESR EL0 load, overlay, L3",
        _arm64(0, "R", 0, 0x27, 1, _U, "0,1"),
        _ov("0x000000409200000F"),
    ),
    CheckVector(
        "ESR EL0 store, overlay (A7)",
        _arm64(0, "W", 0, 0x27, 1, _U, "0,1"),
        _ov("0x000000409200004F"),
    ),
    CheckVector(
        "ESR EL1 store, overlay, L3",
        _arm64(1, "W", 0x17, 0, 1, "AP=00 PXN=1 UXN=1", "1,1"),
        _ov("0x000000409600004F"),
    ),
    CheckVector(
        "ESR EL1 store, overlay, 2 MiB L2 block",
        _arm64(1, "W", 0x17, 0, 1, "AP=00 PXN=1 UXN=1", "1,1"),
        _ov("0x000000409600004E"),
        level=2,
    ),
    CheckVector(
        "ESR EL0 fetch, overlay (A11)",
        _arm64(0, "X", 0, 0x57, 1, _U, "0,1"),
        _ov("0x000000408200000F"),
    ),
    CheckVector(
        "ESR EL0 fetch, base only (UXN=1)",
        _arm64(0, "X", 0, 0x7, 0, "AP=01 PXN=1 UXN=1", "0,1"),
        _base("0x000000008200000F"),
    ),
    CheckVector(
        "ESR EL0 store, base only (AP=11)",
        _arm64(0, "W", 0, 0x7, 0, "AP=11 PXN=1 UXN=0", "0,1"),
        _base("0x000000009200004F"),
    ),
)


@dataclass(frozen=True, slots=True)
class PorRegisterVector:
    """One POR_EL0 update: field ``pkey`` set to ``nibble`` turns ``before`` into ``after``."""

    id: str
    pkey: int
    nibble: int
    before: int
    after: int


#: Spec §4.2 register-value vectors, from POR_EL0_INIT = 0x7.
POR_REGISTER_VECTORS: tuple[PorRegisterVector, ...] = (
    PorRegisterVector("POR step 1: pkey 1 DISABLE_WRITE -> RX", 1, 0x3, 0x00000007, 0x00000037),
    PorRegisterVector("POR step 2: pkey 2 DISABLE_ACCESS -> X", 2, 0x2, 0x00000037, 0x00000237),
    PorRegisterVector(
        "POR step 3: pkey 3 DISABLE_READ|DISABLE_EXECUTE -> W", 3, 0x4, 0x00000237, 0x00004237
    ),
    PorRegisterVector("POR step 4: pkey 4 no flags -> RWX", 4, 0x7, 0x00004237, 0x00074237),
    PorRegisterVector(
        "POR step 5: pkey 5 DISABLE_ACCESS|DISABLE_EXECUTE -> none", 5, 0x0, 0x00074237, 0x00074237
    ),
)
_POR_EL0_INIT = 0x7
_POR_SIGNAL_ALL_RWX = 0x77777777


@dataclass(frozen=True, slots=True)
class DescriptorVector:
    """A stage-1 leaf descriptor and the fields it must decode to."""

    id: str
    desc: int
    fields: Mapping[str, int]


_PAGE_KERNEL_FIELDS = {
    "valid": 1,
    "attrindx": 0,
    "ap": 0b00,
    "sh": 0b11,
    "af": 1,
    "ng": 0,
    "oa": 0x8000_0000,
    "dbm": 1,
    "cont": 0,
    "pxn": 1,
    "uxn": 1,
}

#: Spec §4.2 descriptor examples (Linux PAGE_KERNEL at PA 0x8000_0000).
DESCRIPTOR_VECTORS: tuple[DescriptorVector, ...] = (
    DescriptorVector(
        "desc PAGE_KERNEL 4K page",
        0x0068_0000_8000_0703,
        {**_PAGE_KERNEL_FIELDS, "table_or_page": 1, "poindex": 0},
    ),
    DescriptorVector(
        "desc PAGE_KERNEL 4K page, POIndex 1",
        0x1068_0000_8000_0703,
        {**_PAGE_KERNEL_FIELDS, "table_or_page": 1, "poindex": 1},
    ),
    DescriptorVector(
        "desc PAGE_KERNEL 2 MiB L2 block",
        0x0068_0000_8000_0701,
        {**_PAGE_KERNEL_FIELDS, "table_or_page": 0, "poindex": 0},
    ),
)


def _x86(
    us: str, rw: int, key: int, pkru: int, pkrs: int, wp: int, mode: str, access: str
) -> dict[str, Any]:
    """An x86 ``arch check`` object with CR4.PKE = CR4.PKS = 1 (every §4.3 row)."""
    return {
        "arch": "x86",
        "mode": mode,
        "access": access,
        "us": us,
        "rw": rw,
        "key": key,
        "pkru": f"0x{pkru:08X}",
        "pkrs": f"0x{pkrs:08X}",
        "pke": 1,
        "pks": 1,
        "wp": wp,
    }


def _pk(code: str) -> dict[str, str]:
    return {"result": "pk_fault", "error_code": code}


def _pf(code: str) -> dict[str, str]:
    return {"result": "base_fault", "error_code": code}


_S = "supervisor"

#: Spec §4.3 table, rows X1…X23.
X86_VECTORS: tuple[CheckVector, ...] = (
    CheckVector("X1", _x86("U", 1, 0, 0, 0, 1, "user", "W"), _ALLOW, "user page, PKRU=0"),
    CheckVector(
        "X3", _x86("U", 1, 1, 0x55555554, 0, 1, "user", "R"), _pk("0x25"), "init_pkru_value"
    ),
    CheckVector("X5", _x86("U", 1, 1, 0x8, 0, 1, "user", "R"), _ALLOW, "WD1 only, read"),
    CheckVector("X7", _x86("U", 1, 15, 0x40000000, 0, 1, "user", "R"), _pk("0x25"), "key 15 AD"),
    CheckVector("X9", _x86("U", 1, 15, 0x80000000, 0, 1, "user", "R"), _ALLOW, "key 15 WD, read"),
    CheckVector("X11", _x86("U", 0, 2, 0, 0, 1, "user", "W"), _pf("0x07"), "R/W=0 page, write"),
    CheckVector(
        "X13", _x86("U", 1, 1, 0x4, 0, 1, _S, "R"), _pk("0x21"), "supervisor read, user page, AD1"
    ),
    CheckVector("X15", _x86("U", 1, 1, 0x8, 0, 0, _S, "W"), _ALLOW, "supervisor write, WD1, WP=0"),
    CheckVector("X17", _x86("S", 1, 1, 0, 0x8, 1, _S, "R"), _ALLOW, "PKS key 1 WD, read"),
    CheckVector("X19", _x86("S", 1, 1, 0, 0x8, 0, _S, "W"), _ALLOW, "PKS key 1 WD, write, WP=0"),
    CheckVector(
        "X21", _x86("S", 1, 1, 0xFFFFFFFF, 0, 1, _S, "W"), _ALLOW, "PKRU ignores supervisor pages"
    ),
    CheckVector(
        "X23", _x86("S", 1, 1, 0, 0x4, 1, "user", "R"), _pf("0x05"), "user access, supervisor page"
    ),
)


@dataclass(frozen=True, slots=True)
class PkruUpdateVector:
    """One PKRU update: AD/WD of ``key`` set to ``ad``/``wd`` turns ``before`` into ``after``."""

    id: str
    key: int
    ad: bool
    wd: bool
    before: int
    after: int


#: Spec §4.3 PKRU update vectors, chained from init_pkru_value 0x55555554.
PKRU_UPDATE_VECTORS: tuple[PkruUpdateVector, ...] = (
    PkruUpdateVector("PKRU key 1 DISABLE_WRITE", 1, False, True, 0x55555554, 0x55555558),
    PkruUpdateVector("PKRU key 2 DISABLE_ACCESS", 2, True, False, 0x55555558, 0x55555558),
    PkruUpdateVector("PKRU key 3 no flags", 3, False, False, 0x55555558, 0x55555518),
    PkruUpdateVector(
        "PKRU key 4 DISABLE_ACCESS|DISABLE_WRITE", 4, True, True, 0x55555518, 0x55555718
    ),
)

_INIT_PKRU_VALUE = 0x55555554


def run_check_vector(vector: CheckVector) -> dict[str, str]:
    """The ``arch check`` output object the model gives for ``vector``'s input."""
    arch = get_arch(str(vector.request["arch"]))
    request = arch.parse_check_request(vector.request)
    if vector.level != 3:
        if not isinstance(request, Arm64CheckRequest):
            raise ValueError(f"{vector.id}: only arm64 vectors may set a lookup level")
        request = request.with_level(vector.level)
    return arch.verdict_json(arch.check_request(request))


def check_vectors() -> tuple[CheckVector, ...]:
    """Every access vector (A rows, syndrome spot-checks, X rows), in spec order."""
    return ARM64_VECTORS + ARM64_SYNDROME_VECTORS + X86_VECTORS


def _fmt(out: Mapping[str, str]) -> str:
    return " ".join(out.values())


def _register_checks() -> list[tuple[str, bool, str]]:
    arm = Arm64Poe()
    x86 = X86Pk()
    rows: list[tuple[str, bool, str]] = []

    init = POR_ELx_PERM_PREP(0, POE_RWX)
    rows.append(
        ("POR_EL0_INIT", init == _POR_EL0_INIT, f"POR_ELx_PERM_PREP(0, POE_RWX) = {init:#x}")
    )
    por = _POR_EL0_INIT
    for v in POR_REGISTER_VECTORS:
        perm = poe_nibble_perm(v.nibble)
        by_macro = por_elx_set_pkey_perms(v.before, v.pkey, v.nibble)
        by_arch = arm.reg_set_perm(v.before, v.pkey, perm)
        ok = (
            por == v.before
            and by_macro == v.after
            and by_arch == v.after
            and POR_ELx_PERM_GET(v.pkey, v.after) == v.nibble
            and arm.reg_get_perm(v.after, v.pkey) == perm
        )
        rows.append((v.id, ok, f"{v.before:#010x} -> {by_macro:#010x} (want {v.after:#010x})"))
        por = by_macro
    all_rwx = por
    for pkey in range(arm.nr_pkeys):
        all_rwx = arm.reg_set_perm(all_rwx, pkey, Perm(True, True, True))
    rows.append(
        (
            "POR signal entry: all keys RWX",
            all_rwx == _POR_SIGNAL_ALL_RWX,
            f"{por:#010x} -> {all_rwx:#010x} (want {_POR_SIGNAL_ALL_RWX:#010x})",
        )
    )

    for d in DESCRIPTOR_VECTORS:
        got = desc_fields(d.desc)
        bad = {k: got[k] for k, want in d.fields.items() if got[k] != want}
        ok = not bad and arm.desc_pkey(d.desc) == d.fields["poindex"] == pte_po_index(d.desc)
        rows.append(
            (d.id, ok, f"{d.desc:#018x} POIndex {got['poindex']}" + (f" bad {bad}" if bad else ""))
        )
    keyed = arm.desc_set_pkey(DESCRIPTOR_VECTORS[0].desc, 1)
    rows.append(
        (
            "desc_set_pkey(PAGE_KERNEL, 1)",
            keyed == DESCRIPTOR_VECTORS[1].desc,
            f"{keyed:#018x} (want {DESCRIPTOR_VECTORS[1].desc:#018x})",
        )
    )

    init_ok = x86.reg_get_perm(_INIT_PKRU_VALUE, 0) == Perm(True, True, True) and all(
        x86.reg_get_perm(_INIT_PKRU_VALUE, k) == Perm(False, False, True) for k in range(1, 16)
    )
    rows.append(("PKRU init_pkru_value: AD for keys 1-15", init_ok, f"{_INIT_PKRU_VALUE:#010x}"))
    pkru = _INIT_PKRU_VALUE
    for u in PKRU_UPDATE_VECTORS:
        got_pkru = pkr_set_bits(u.before, u.key, u.ad, u.wd)
        ok = pkru == u.before and got_pkru == u.after
        rows.append((u.id, ok, f"{u.before:#010x} -> {got_pkru:#010x} (want {u.after:#010x})"))
        pkru = got_pkru
    return rows


def run_self_checks() -> list[tuple[str, bool, str]]:
    """Run every spec §4 vector through the model: ``(name, passed, detail)`` per vector.

    A vector whose check raises counts as failed, with the exception as detail.
    """
    rows: list[tuple[str, bool, str]] = []
    for v in check_vectors():
        try:
            got = run_check_vector(v)
        except (ValueError, KeyError, TypeError) as exc:
            rows.append((v.id, False, f"error: {exc!r}"))
            continue
        if got == dict(v.expected):
            rows.append((v.id, True, _fmt(got)))
        else:
            rows.append((v.id, False, f"expected {_fmt(v.expected)}, got {_fmt(got)}"))
    try:
        rows.extend(_register_checks())
    except (ValueError, KeyError, TypeError) as exc:
        rows.append(("register and descriptor vectors", False, f"error: {exc!r}"))
    return rows
