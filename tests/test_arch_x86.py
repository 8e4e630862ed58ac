"""x86 PKU/PKS model: spec §4.3 vectors, check ordering, properties."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.strategies import perms, x86_keys, x86_pkr_values, x86_states

from kpkeys_sim.machine.arch import Perm, Verdict, arch_names, get_arch
from kpkeys_sim.machine.arch import x86_pk as pk
from kpkeys_sim.machine.arch.vectors import PKRU_UPDATE_VECTORS, X86_VECTORS, CheckVector
from kpkeys_sim.machine.arch.x86_pk import X86Pk, check_access, decode_pf_error_code

X86 = X86Pk()


def _kwargs(request: dict[str, Any]) -> dict[str, Any]:
    """``check_access`` keyword arguments for an ``arch check`` request object."""
    out = {k: v for k, v in request.items() if k != "arch"}
    out["pkru"] = int(out["pkru"], 16)
    out["pkrs"] = int(out["pkrs"], 16)
    return out


def _state(**over: Any) -> dict[str, Any]:
    """A user-mode read of a writable user page, key 1, keys open, PKE/PKS/WP on, then ``over``."""
    state: dict[str, Any] = {
        "mode": "user",
        "access": "R",
        "us": "U",
        "rw": 1,
        "key": 1,
        "pkru": 0,
        "pkrs": 0,
        "pke": 1,
        "pks": 1,
        "wp": 1,
    }
    state.update(over)
    return state


# --- spec §4.3 vectors -----------------------------------------------------------------


def test_vector_table_is_the_spec_rows() -> None:
    """The transcribed §4.3 table has exactly the published rows X1, X3, …, X23."""
    assert [v.id for v in X86_VECTORS] == [f"X{n}" for n in range(1, 24, 2)]


@pytest.mark.parametrize("vector", X86_VECTORS, ids=lambda v: v.id)
def test_spec_table_row(vector: CheckVector) -> None:
    """Each §4.3 table row gives the spec's result and #PF error code through the Python API."""
    code = vector.expected.get("error_code")
    expected = Verdict(vector.expected["result"], None if code is None else int(code, 16))
    assert check_access(**_kwargs(dict(vector.request))) == expected


@pytest.mark.parametrize("vector", PKRU_UPDATE_VECTORS, ids=lambda v: v.id)
def test_pkru_update_vector(vector: Any) -> None:
    """Each §4.3 PKRU update (AD if DISABLE_ACCESS, WD if DISABLE_WRITE) gives the spec value."""
    assert pk.pkr_set_bits(vector.before, vector.key, vector.ad, vector.wd) == vector.after


def test_pkru_update_vectors_chain_from_init_pkru_value() -> None:
    """The PKRU update vectors chain from Linux init_pkru_value 0x55555554."""
    pkru = 0x55555554
    for v in PKRU_UPDATE_VECTORS:
        assert v.before == pkru
        pkru = pk.pkr_set_bits(pkru, v.key, v.ad, v.wd)
    assert pkru == 0x55555718


def test_init_pkru_value_allows_only_key_0() -> None:
    """init_pkru_value 0x55555554 leaves key 0 open and access-disables keys 1–15."""
    assert pk.pkru_allows_read(0x55555554, 0) and pk.pkru_allows_write(0x55555554, 0)
    for key in range(1, 16):
        assert not pk.pkru_allows_read(0x55555554, key)
        assert X86.reg_get_perm(0x55555554, key) == Perm(False, False, True)


# --- facts and helpers -------------------------------------------------------------------


def test_arch_facts() -> None:
    """The x86 class carries the architecture facts the brief lists."""
    assert "x86" in arch_names()
    assert isinstance(get_arch("x86"), X86Pk)
    assert X86.nr_pkeys == 16
    assert (X86.pkey_desc_lo, X86.pkey_desc_hi) == (59, 62)
    assert (X86.kernel_pkey_reg, X86.user_pkey_reg) == ("IA32_PKRS", "PKRU")
    assert X86.reg_write_needs_sync is False
    assert dict(X86.page_sizes) == {4096: 4}


def test_key_in_pte_bits_62_59() -> None:
    """The protection key is leaf-entry bits 62:59 (Linux _PAGE_BIT_PKEY_BIT0 = 59)."""
    assert X86.desc_pkey(0xF << 59) == 15
    assert X86.desc_set_pkey(0x8000_0000_0000_0067, 5) == 0x8000_0000_0000_0067 | (5 << 59)
    assert pk._PAGE_BIT_PKEY_BIT0 == 59


def test_register_helpers() -> None:
    """pkru_allows_read/write and the AD/WD setters follow the 2-bits-per-key layout."""
    assert not pk.pkru_allows_write(0x8, 1) and pk.pkru_allows_read(0x8, 1)
    assert not pk.pkru_allows_write(0x4, 1) and not pk.pkru_allows_read(0x4, 1)
    assert pk.pkr_set_ad(0, 15, True) == 0x40000000
    assert pk.pkr_set_wd(0, 15, True) == 0x80000000
    assert pk.pkr_set_ad(0xFFFFFFFF, 0, False) == 0xFFFFFFFE
    assert pk.pkr_set_wd(0xFFFFFFFF, 0, False) == 0xFFFFFFFD
    with pytest.raises(ValueError, match=r"pkey 16 out of range 0\.\.15"):
        pk.pkru_allows_read(0, 16)


def test_reg_set_perm_encoding() -> None:
    """reg_set_perm writes AD = ¬r, WD = ¬w and ignores x."""
    assert X86.reg_set_perm(0, 1, Perm(True, True, False)) == 0x0
    assert X86.reg_set_perm(0, 1, Perm(True, False, True)) == 0x8
    assert X86.reg_set_perm(0, 1, Perm(False, False, False)) == 0xC


def test_write_without_read_is_not_encodable() -> None:
    """Perm(r=False, w=True) cannot be expressed with AD/WD and raises ValueError."""
    with pytest.raises(ValueError, match="cannot grant write without read"):
        X86.reg_set_perm(0, 1, Perm(False, True, False))


def test_decode_pf_error_code() -> None:
    """decode_pf_error_code splits P, W, U, RSVD, I/D and PK."""
    assert decode_pf_error_code(0x27) == {"p": 1, "w": 1, "u": 1, "rsvd": 0, "id": 0, "pk": 1}


# --- rules ------------------------------------------------------------------------------


def test_key_checked_before_rw_bit() -> None:
    """A write to a read-only page whose key has WD reports PK (QEMU order, spec §3.3)."""
    assert check_access(**_state(access="W", rw=0, pkru=0x8)) == Verdict("pk_fault", 0x27)
    assert check_access(**_state(access="W", rw=0, pkru=0x0)) == Verdict("base_fault", 0x07)


def test_us_checked_before_key() -> None:
    """A user access to a supervisor page faults on U/S even if PKRS would also deny."""
    v = check_access(**_state(us="S", access="W", pkrs=0x4))
    assert v == Verdict("base_fault", 0x07)


def test_pk_error_codes() -> None:
    """PK faults: user write 0x27, user read 0x25, supervisor write 0x23, supervisor read 0x21."""
    assert check_access(**_state(access="W", pkru=0x4)).syndrome == 0x27
    assert check_access(**_state(access="R", pkru=0x4)).syndrome == 0x25
    assert check_access(**_state(mode="supervisor", access="W", pkru=0x4)).syndrome == 0x23
    assert check_access(**_state(mode="supervisor", access="R", pkru=0x4)).syndrome == 0x21


def test_wd_and_cr0_wp() -> None:
    """WD always stops user writes, and supervisor writes only when CR0.WP = 1 (PKRU and PKRS)."""
    assert check_access(**_state(access="W", pkru=0x8, wp=0)).result == "pk_fault"
    sup_user_page = _state(mode="supervisor", access="W", pkru=0x8)
    assert check_access(**sup_user_page).result == "pk_fault"
    assert check_access(**{**sup_user_page, "wp": 0}).allowed
    sup_page = _state(mode="supervisor", us="S", access="W", pkrs=0x8)
    assert check_access(**sup_page).result == "pk_fault"
    assert check_access(**{**sup_page, "wp": 0}).allowed


def test_supervisor_write_to_read_only_page_needs_wp() -> None:
    """A supervisor write to an R/W = 0 page faults only with CR0.WP = 1."""
    sup = _state(mode="supervisor", us="S", access="W", rw=0)
    assert check_access(**sup) == Verdict("base_fault", 0x03)
    assert check_access(**{**sup, "wp": 0}).allowed


def test_register_chosen_by_page_not_cpl() -> None:
    """PKRU governs user pages for any CPL; PKRS governs supervisor pages."""
    assert check_access(**_state(mode="supervisor", pkru=0x4)).result == "pk_fault"
    assert check_access(**_state(mode="supervisor", pkrs=0x4)).allowed
    assert check_access(**_state(mode="supervisor", us="S", pkru=0x4)).allowed
    assert check_access(**_state(mode="supervisor", us="S", pkrs=0x4)).result == "pk_fault"


def test_cr4_enables() -> None:
    """CR4.PKE = 0 disables PKRU checks and CR4.PKS = 0 disables PKRS checks."""
    assert check_access(**_state(pkru=0x4, pke=0)).allowed
    assert check_access(**_state(mode="supervisor", us="S", pkrs=0x4, pks=0)).allowed


def test_rmw_needs_read_and_write() -> None:
    """An RW access needs both rights and reports the W bit."""
    assert check_access(**_state(access="RW", pkru=0x8)) == Verdict("pk_fault", 0x27)
    assert check_access(**_state(access="RW", rw=0)) == Verdict("base_fault", 0x07)
    assert check_access(**_state(access="RW")).allowed


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"key": 16}, "key must be 0..15, got 16"),
        ({"pkru": 1 << 32}, "pkru/pkrs must be 32-bit unsigned, got 0x100000000/0x0"),
        ({"mode": "kernel"}, "mode must be 'user' or 'supervisor', got 'kernel'"),
        ({"us": "K"}, "us must be 'U' or 'S', got 'K'"),
        ({"wp": 2}, "wp must be 0 or 1, got 2"),
        ({"access": "RX"}, "access must be one of R, W, X, RW, got 'RX'"),
    ],
)
def test_bad_arguments_raise(over: dict[str, Any], message: str) -> None:
    """check_access rejects out-of-range arguments with a message naming them."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_access(**_state(**over))


# --- properties -------------------------------------------------------------------------


@given(x86_states(access=st.sampled_from(("R", "W", "RW"))))
def test_ad_means_no_data_access(state: dict[str, Any]) -> None:
    """With AD set for the page's key in the enabled governing register, no data access passes."""
    reg, enable = ("pkru", "pke") if state["us"] == "U" else ("pkrs", "pks")
    state[reg] = pk.pkr_set_ad(state[reg], state["key"], True)
    state[enable] = 1
    v = check_access(**state)
    assert not v.allowed
    expected = "base_fault" if (state["mode"] == "user" and state["us"] == "S") else "pk_fault"
    assert v.result == expected


@given(x86_states(access="X"))
def test_fetches_never_pk_fault(state: dict[str, Any]) -> None:
    """Instruction fetches are never refused by a protection key."""
    v = check_access(**state)
    assert v.result != "pk_fault"
    if not (state["mode"] == "user" and state["us"] == "S"):
        assert v.allowed


@given(x86_states())
def test_error_code_bits(state: dict[str, Any]) -> None:
    """Every fault sets P; W iff the access writes; U iff user mode; PK iff a key fault."""
    v = check_access(**state)
    if v.allowed:
        assert v.syndrome is None
        return
    code = decode_pf_error_code(v.syndrome or 0)
    assert code["p"] == 1
    assert code["w"] == (state["access"] in ("W", "RW"))
    assert code["u"] == (state["mode"] == "user")
    assert code["pk"] == (v.result == "pk_fault")
    assert code["rsvd"] == code["id"] == 0


@given(x86_pkr_values, x86_keys, perms)
def test_reg_set_get_round_trip(reg: int, key: int, perm: Perm) -> None:
    """For encodable perms, reg_get_perm(reg_set_perm(…)) gives r/w back and x = True."""
    if perm.w and not perm.r:
        with pytest.raises(ValueError):
            X86.reg_set_perm(reg, key, perm)
        return
    new = X86.reg_set_perm(reg, key, perm)
    assert X86.reg_get_perm(new, key) == Perm(perm.r, perm.w, True)
    mask = 3 << (2 * key)
    assert new & ~mask == reg & ~mask


@given(x86_pkr_values, x86_keys)
def test_allows_helpers_match_reg_get_perm(reg: int, key: int) -> None:
    """pkru_allows_read/write agree with reg_get_perm's r/w."""
    perm = X86.reg_get_perm(reg, key)
    assert (pk.pkru_allows_read(reg, key), pk.pkru_allows_write(reg, key)) == (perm.r, perm.w)
