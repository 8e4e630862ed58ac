"""arm64 FEAT_S1POE model: spec §4.2 vectors, architecture rules, properties."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from tests.strategies import arm64_states, perms, por_nibbles, por_values, reserved_nibbles

from kpkeys_sim.machine.arch import Perm, Verdict, arch_names, get_arch
from kpkeys_sim.machine.arch import arm64_poe as poe
from kpkeys_sim.machine.arch.arm64_poe import (
    Arm64CheckRequest,
    Arm64Poe,
    check_access,
    decode_esr,
)
from kpkeys_sim.machine.arch.vectors import (
    ARM64_SYNDROME_VECTORS,
    ARM64_VECTORS,
    DESCRIPTOR_VECTORS,
    POR_REGISTER_VECTORS,
    CheckVector,
    run_self_checks,
)

ARM = Arm64Poe()


def _kwargs(request: dict[str, Any], level: int = 3) -> dict[str, Any]:
    """``check_access`` keyword arguments for an ``arch check`` request object."""
    pie = request["pie"]
    return {
        "el": request["el"],
        "unprivileged": request["unprivileged"],
        "access": request["access"],
        "por_el1": int(request["por_el1"], 16),
        "por_el0": int(request["por_el0"], 16),
        "poindex": request["poindex"],
        "ap": 0 if pie else int(request["ap"], 2),
        "pxn": 0 if pie else request["pxn"],
        "uxn": 0 if pie else request["uxn"],
        "poe": request["poe"],
        "e0poe": request["e0poe"],
        "pie": pie,
        "pir": int(request["pir"], 16) if pie else 0,
        "pire0": int(request["pire0"], 16) if pie else 0,
        "wxn": request["wxn"],
        "pan": request["pan"],
        "level": level,
    }


def _state(**over: Any) -> dict[str, Any]:
    """A direct-permission EL0 load of an RW user page with everything open, then ``over``."""
    state: dict[str, Any] = {
        "el": 0,
        "unprivileged": False,
        "access": "R",
        "por_el1": 0x77777777,
        "por_el0": 0x77777777,
        "poindex": 0,
        "ap": 0b01,
        "pxn": 1,
        "uxn": 0,
        "poe": 1,
        "e0poe": 1,
        "pie": 0,
        "pir": 0,
        "pire0": 0,
        "wxn": 0,
        "pan": 0,
    }
    state.update(over)
    return state


def _expected(vector: CheckVector) -> Verdict:
    esr = vector.expected.get("esr")
    return Verdict(vector.expected["result"], None if esr is None else int(esr, 16))


# --- spec §4.2 vectors -----------------------------------------------------------------


def test_vector_table_is_the_spec_rows() -> None:
    """The transcribed §4.2 table has exactly the published rows A1, A3, …, A53."""
    assert [v.id for v in ARM64_VECTORS] == [f"A{n}" for n in range(1, 54, 2)]


@pytest.mark.parametrize("vector", ARM64_VECTORS, ids=lambda v: v.id)
def test_spec_table_row(vector: CheckVector) -> None:
    """Each §4.2 table row gives the spec's result (and the §1.9 ESR) through the Python API."""
    assert check_access(**_kwargs(dict(vector.request))) == _expected(vector)


@pytest.mark.parametrize("vector", ARM64_SYNDROME_VECTORS, ids=lambda v: v.id)
def test_syndrome_spot_check(vector: CheckVector) -> None:
    """Each §4.2 syndrome spot-check / §1.9 worked value is reproduced bit for bit."""
    assert check_access(**_kwargs(dict(vector.request), vector.level)) == _expected(vector)


def test_syndrome_spot_values_literal() -> None:
    """The two ESR values quoted in the brief are produced literally."""
    el0_load = check_access(**_state(access="R", por_el0=0x27, poindex=1))
    el1_store_block = check_access(
        **_state(el=1, access="W", ap=0b00, uxn=1, por_el1=0x17, poindex=1), level=2
    )
    assert el0_load.syndrome == 0x000000409200000F
    assert el1_store_block.syndrome == 0x000000409600004E


@pytest.mark.parametrize("vector", POR_REGISTER_VECTORS, ids=lambda v: v.id)
def test_por_register_vector(vector: Any) -> None:
    """Each §4.2 register-value step turns POR_EL0 'before' into 'after'."""
    assert poe.por_elx_set_pkey_perms(vector.before, vector.pkey, vector.nibble) == vector.after
    perm = poe.poe_nibble_perm(vector.nibble)
    assert ARM.reg_set_perm(vector.before, vector.pkey, perm) == vector.after
    assert ARM.reg_get_perm(vector.after, vector.pkey) == perm


def test_por_register_vectors_chain_from_init() -> None:
    """The register steps chain from POR_EL0_INIT = 0x7 and signal entry gives 0x77777777."""
    por = poe.POR_ELx_PERM_PREP(0, poe.POE_RWX)
    assert por == 0x7
    for v in POR_REGISTER_VECTORS:
        assert v.before == por
        por = poe.por_elx_set_pkey_perms(por, v.pkey, v.nibble)
    assert por == 0x00074237
    for pkey in range(8):
        por = ARM.reg_set_perm(por, pkey, Perm(True, True, True))
    assert por == 0x77777777


@pytest.mark.parametrize("vector", DESCRIPTOR_VECTORS, ids=lambda v: v.id)
def test_descriptor_example(vector: Any) -> None:
    """Each §4.2 descriptor example decodes to PAGE_KERNEL fields and the right POIndex."""
    fields = poe.desc_fields(vector.desc)
    assert {k: fields[k] for k in vector.fields} == dict(vector.fields)
    assert ARM.desc_pkey(vector.desc) == poe.pte_po_index(vector.desc) == vector.fields["poindex"]


def test_descriptor_set_pkey() -> None:
    """Setting POIndex 1 on PAGE_KERNEL gives the spec's 0x1068_0000_8000_0703."""
    assert ARM.desc_set_pkey(0x0068_0000_8000_0703, 1) == 0x1068_0000_8000_0703
    assert ARM.desc_set_pkey(0x7068_0000_8000_0703, 0) == 0x0068_0000_8000_0703
    with pytest.raises(ValueError, match=r"pkey 8 out of range 0\.\.7"):
        ARM.desc_set_pkey(0, 8)


def test_self_checks_all_pass() -> None:
    """run_self_checks() (behind `arch vectors`) reports every vector as passing."""
    results = run_self_checks()
    assert [r for r in results if not r[1]] == []
    assert len(results) == 62


# --- facts, constants, registry ----------------------------------------------------------


def test_arch_facts() -> None:
    """The arm64 class carries the architecture facts the brief lists."""
    assert "arm64" in arch_names()
    assert isinstance(get_arch("arm64"), Arm64Poe)
    assert ARM.nr_pkeys == 8
    assert (ARM.pkey_desc_lo, ARM.pkey_desc_hi) == (60, 62)
    assert (ARM.kernel_pkey_reg, ARM.user_pkey_reg) == ("POR_EL1", "POR_EL0")
    assert ARM.reg_write_needs_sync is True
    assert dict(ARM.page_sizes) == {4096: 4, 16384: 4, 65536: 3}


def test_kernel_constants() -> None:
    """POE_*, PTE_PO_IDX_* and ESR_ELx_* constants have the Linux/Arm ARM values."""
    assert list(range(8)) == [
        poe.POE_NONE,
        poe.POE_R,
        poe.POE_X,
        poe.POE_RX,
        poe.POE_W,
        poe.POE_RW,
        poe.POE_WX,
        poe.POE_RWX,
    ]
    assert (poe.POE_MASK, poe.POR_ELx_BITS_PER_IDX) == (0xF, 4)
    assert (poe.PTE_PO_IDX_0, poe.PTE_PO_IDX_1, poe.PTE_PO_IDX_2) == (1 << 60, 1 << 61, 1 << 62)
    assert (poe.PTE_PO_IDX_SHIFT, poe.PTE_PO_IDX_MASK) == (60, 0x7 << 60)
    assert (poe.ESR_ELx_EC_DABT_LOW, poe.ESR_ELx_EC_DABT_CUR) == (0x24, 0x25)
    assert (poe.ESR_ELx_EC_IABT_LOW, poe.ESR_ELx_EC_IABT_CUR) == (0x20, 0x21)
    assert (poe.ESR_ELx_IL, poe.ESR_ELx_WNR, poe.ESR_ELx_Overlay) == (1 << 25, 1 << 6, 1 << 38)
    assert (poe.TCR2_EL1_PIE, poe.TCR2_EL1_E0POE, poe.TCR2_EL1_POE) == (1 << 1, 1 << 2, 1 << 3)


def test_por_macros() -> None:
    """POR_ELx_PERM_PREP/GET and por_elx_set_pkey_perms place 4-bit fields at 4*idx."""
    assert poe.POR_ELx_PERM_PREP(7, poe.POE_RWX) == 0x70000000
    assert poe.POR_ELx_PERM_PREP(1, 0x1F) == 0xF0
    assert poe.POR_ELx_PERM_GET(5, 0x00700007) == 0x7
    assert poe.por_elx_set_pkey_perms(0x17, 1, poe.POE_RW) == 0x57


def test_pi_index() -> None:
    """PIIndex[3:0] is gathered from descriptor bits 54, 53, 51, 6."""
    assert poe.pte_pi_index(poe.PTE_UXN) == 0b1000
    assert poe.pte_pi_index(poe.PTE_PXN) == 0b0100
    assert poe.pte_pi_index(poe.PTE_DBM) == 0b0010
    assert poe.pte_pi_index(poe.PTE_USER) == 0b0001
    assert poe.pte_pi_index(0x0068_0000_8000_0703) == 0b1110


def test_decode_esr() -> None:
    """decode_esr splits an ESR_EL1 value into EC, IL, WnR, DFSC, level and Overlay."""
    assert decode_esr(0x000000409600004E) == {
        "ec": 0x25,
        "il": 1,
        "wnr": 1,
        "dfsc": 0x0E,
        "level": 2,
        "overlay": 1,
    }
    assert decode_esr(0x0000000082000007)["level"] is None  # translation fault, level 3


# --- rules ------------------------------------------------------------------------------


def test_reserved_overlay_nibble_is_no_access() -> None:
    """POR field 0x8–0xF behaves as no access (§1.3), unlike Linux's single-bit tests."""
    assert ARM.reg_get_perm(0xF0, 1) == Perm()
    assert check_access(**_state(access="R", por_el0=0xF0, poindex=1)).result == "overlay_fault"


def test_overlay_beats_base() -> None:
    """When base and overlay both deny, the fault is an Overlay fault (R_RPXZR)."""
    v = check_access(**_state(access="W", ap=0b11, por_el0=0x1))
    assert v.result == "overlay_fault"
    assert decode_esr(v.syndrome or 0)["overlay"] == 1


def test_privileged_access_to_user_page_uses_por_el1() -> None:
    """An EL1 LDR of a user page is checked against POR_EL1, not POR_EL0 (§1.7)."""
    assert check_access(**_state(el=1, por_el0=0x0, por_el1=0x1)).allowed
    assert check_access(**_state(el=1, por_el0=0x7, por_el1=0x0)).result == "overlay_fault"


def test_ldtr_at_el1_uses_por_el0_and_same_el_syndrome() -> None:
    """An EL1 LDTR uses POR_EL0/E0POE and reports a same-EL data abort (EC 0x25)."""
    v = check_access(**_state(el=1, unprivileged=True, por_el0=0x0, por_el1=0x7))
    assert v.result == "overlay_fault"
    assert decode_esr(v.syndrome or 0)["ec"] == 0x25
    assert check_access(**_state(el=1, unprivileged=True, por_el0=0x0, e0poe=0)).allowed


def test_unprivileged_at_el0_changes_nothing() -> None:
    """unprivileged=True at EL0 gives the same verdict as a plain EL0 access."""
    for por_el0 in (0x0, 0x1, 0x7):
        plain = check_access(**_state(por_el0=por_el0))
        assert check_access(**_state(por_el0=por_el0, unprivileged=True)) == plain


def test_unprivileged_fetch_is_rejected() -> None:
    """An instruction fetch cannot be an LDTR/STTR-class access."""
    with pytest.raises(ValueError, match="instruction fetch cannot be unprivileged"):
        check_access(**_state(el=1, unprivileged=True, access="X"))


def test_implicit_pxn_for_user_writable_pages() -> None:
    """A page writable at EL0 is never executable at EL1 (R_VWLLR)."""
    v = check_access(**_state(el=1, access="X", ap=0b01, pxn=0, poe=0))
    assert v.result == "base_fault"
    assert check_access(**_state(el=1, access="X", ap=0b11, pxn=0, poe=0)).allowed


def test_pan_removes_privileged_data_access_only() -> None:
    """PAN refuses EL1 data accesses to user pages but not fetches, LDTR or EL0 accesses."""
    assert check_access(**_state(el=1, pan=1, access="W")).result == "base_fault"
    assert check_access(**_state(el=1, pan=1, unprivileged=True)).allowed
    assert check_access(**_state(el=0, pan=1)).allowed
    assert check_access(**_state(el=1, pan=1, ap=0b00)).allowed  # kernel-only page
    assert check_access(**_state(el=1, pan=1, access="X", ap=0b11, pxn=0)).allowed


def test_wxn_without_overlay_removes_execute() -> None:
    """SCTLR_EL1.WXN with the overlay off removes X from a writable page (R_QXXPC)."""
    kernel_rwx = _state(el=1, access="X", ap=0b00, pxn=0, uxn=1, wxn=1)
    assert check_access(**{**kernel_rwx, "poe": 0}).result == "base_fault"
    assert check_access(**{**kernel_rwx, "poe": 0, "wxn": 0}).allowed


def test_wxn_with_overlay_removes_overlay_write() -> None:
    """WXN with the overlay on and overlay X present removes overlay W instead (R_QXXPC)."""
    kernel_rwx = _state(el=1, ap=0b00, pxn=0, uxn=1, wxn=1, por_el1=0x7)
    assert check_access(**{**kernel_rwx, "access": "X"}).allowed
    assert check_access(**{**kernel_rwx, "access": "W"}).result == "overlay_fault"
    assert check_access(**{**kernel_rwx, "access": "W", "por_el1": 0x5}).allowed


def test_wxn_lets_the_overlay_grant_a_fetch() -> None:
    """With WXN active, enabling the overlay can allow a fetch the overlay-off state refuses."""
    kernel_rwx = _state(el=1, access="X", ap=0b00, pxn=0, uxn=1, wxn=1, por_el1=0x3)
    assert check_access(**kernel_rwx).allowed
    assert check_access(**{**kernel_rwx, "poe": 0}).result == "base_fault"


def test_pie_decode_and_overlay_bypass() -> None:
    """PIE nibbles decode per Table D8-68; bit 3 set bypasses the overlay (R_GDVJK)."""
    pie = _state(pie=1, ap=0, pxn=0, uxn=0, por_el0=0x0)
    assert check_access(**{**pie, "pire0": 0x8}).allowed  # PIE_R: POR_EL0 ignored
    assert check_access(**{**pie, "pire0": 0x1}).result == "overlay_fault"  # PIE_R_O
    for reserved in (0x4, 0xB, 0xD, 0xF):
        v = check_access(**{**pie, "pire0": reserved, "por_el0": 0x7})
        assert v.result == "base_fault", hex(reserved)
    assert check_access(**{**pie, "pire0": 0xC, "access": "RW"}).allowed


def test_pie_r_vfpjf_removes_all_base_permissions() -> None:
    """Privileged X/GCS with unprivileged W/GCS removes every base permission (R_VFPJF)."""
    pie = _state(pie=1, por_el0=0x7, por_el1=0x7)
    assert check_access(**{**pie, "pir": 0x3, "pire0": 0x5}).result == "base_fault"
    assert check_access(**{**pie, "el": 1, "pir": 0x3, "pire0": 0x5}).result == "base_fault"
    assert check_access(**{**pie, "pir": 0x9, "pire0": 0x5}).result == "base_fault"
    assert check_access(**{**pie, "pir": 0x8, "pire0": 0x5}).allowed
    assert check_access(**{**pie, "pir": 0x3, "pire0": 0x1}).allowed


def test_pie_wxn_nibble() -> None:
    """PIE 0x6 (RWnX_O): overlay off removes X, overlay with X removes W (Table D8-69)."""
    pie = _state(el=1, pie=1, pir=0x6, pire0=0x0, por_el1=0x7)
    assert check_access(**{**pie, "access": "X", "poe": 0}).result == "base_fault"
    assert check_access(**{**pie, "access": "W", "poe": 0}).allowed
    assert check_access(**{**pie, "access": "X"}).allowed
    assert check_access(**{**pie, "access": "W"}).result == "overlay_fault"


def test_pie_ignores_direct_fields_and_vice_versa() -> None:
    """ap/pxn/uxn are ignored under PIE; pir/pire0 are ignored without it."""
    assert check_access(**_state(pie=1, pire0=0x5, ap=99, pxn=7)).allowed
    assert check_access(**_state(pie=0, pir=99, pire0=-1)).allowed


def test_atomic_wnr_rule() -> None:
    """An RW fault reports WnR = 0 iff the read alone would have caused the reported fault."""
    no_read = check_access(**_state(access="RW", por_el0=0x4))  # overlay W only
    no_write = check_access(**_state(access="RW", por_el0=0x1))  # overlay R only
    base_ro = check_access(**_state(access="RW", ap=0b11))
    pan = check_access(**_state(el=1, access="RW", pan=1))
    assert (no_read.result, decode_esr(no_read.syndrome or 0)["wnr"]) == ("overlay_fault", 0)
    assert (no_write.result, decode_esr(no_write.syndrome or 0)["wnr"]) == ("overlay_fault", 1)
    assert (base_ro.result, decode_esr(base_ro.syndrome or 0)["wnr"]) == ("base_fault", 1)
    assert (pan.result, decode_esr(pan.syndrome or 0)["wnr"]) == ("base_fault", 0)


def test_fault_level_in_dfsc() -> None:
    """DFSC is 0x0C + the leaf's lookup level."""
    for level in range(4):
        v = check_access(**_state(access="W", por_el0=0x1), level=level)
        assert (v.syndrome or 0) & 0x3F == 0x0C + level


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"el": 2}, "el must be 0 or 1, got 2"),
        ({"poindex": 8}, "poindex must be 0..7, got 8"),
        ({"access": "Q"}, "access must be one of R, W, X, RW, got 'Q'"),
        ({"ap": 4}, "ap must be AP[2:1] as an integer 0..3, got 4"),
        ({"poe": 2}, "poe must be 0 or 1, got 2"),
        ({"pie": 1, "pir": 16}, "pir/pire0 must be nibbles 0..15, got 16/0"),
        ({"level": 4}, "level must be 0..3, got 4"),
    ],
)
def test_bad_arguments_raise(over: dict[str, Any], message: str) -> None:
    """check_access rejects out-of-range arguments with a message naming them."""
    state = _state(**over)
    level = state.pop("level", 3)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_access(**state, level=level)


def test_check_access_is_memoised() -> None:
    """Identical accesses return the same cached Verdict object."""
    assert check_access(**_state(access="W", por_el0=0x1)) is check_access(
        **_state(access="W", por_el0=0x1)
    )


def test_register_methods_reject_bad_values() -> None:
    """reg_get_perm/reg_set_perm refuse pkeys ≥ 8 and values outside 64 bits."""
    with pytest.raises(ValueError, match=r"pkey 8 out of range 0\.\.7"):
        ARM.reg_get_perm(0, 8)
    with pytest.raises(ValueError, match="64-bit unsigned"):
        ARM.reg_set_perm(1 << 64, 0, Perm())


def test_check_request_uses_level() -> None:
    """An Arm64CheckRequest's level reaches the syndrome (block mappings report L1/L2)."""
    req = ARM.parse_check_request(ARM64_VECTORS[3].request)  # A7: EL0 store, overlay
    assert isinstance(req, Arm64CheckRequest)
    assert ARM.check_request(req).syndrome == 0x000000409200004F
    assert ARM.check_request(req.with_level(2)).syndrome == 0x000000409200004E


# --- properties -------------------------------------------------------------------------


def _overlay_off(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "poe": 0, "e0poe": 0}


@given(arm64_states(wxn=0))
def test_overlay_only_removes_permissions(state: dict[str, Any]) -> None:
    """Without WXN, allowed-with-overlay implies allowed-without, and a base fault stays a fault."""
    assume(not (state["pie"] and 0x6 in (state["pir"], state["pire0"])))
    with_ov = check_access(**state)
    without = check_access(**_overlay_off(state))
    if with_ov.allowed:
        assert without.allowed
    if without.result == "base_fault":
        assert not with_ov.allowed


@given(arm64_states())
def test_no_overlay_fault_when_overlay_disabled(state: dict[str, Any]) -> None:
    """With POE = E0POE = 0 the check never reports an Overlay fault."""
    assert check_access(**_overlay_off(state)).result in ("allow", "base_fault")


@given(arm64_states(pie=0, poe=1, e0poe=1), reserved_nibbles, reserved_nibbles)
def test_reserved_nibbles_never_grant(state: dict[str, Any], n1: int, n0: int) -> None:
    """A reserved POR field (0x8–0xF) selected by POIndex never lets an access through."""
    idx = state["poindex"]
    state["por_el1"] = poe.por_elx_set_pkey_perms(state["por_el1"], idx, n1)
    state["por_el0"] = poe.por_elx_set_pkey_perms(state["por_el0"], idx, n0)
    assert check_access(**state).result == "overlay_fault"
    assert ARM.reg_get_perm(state["por_el0"], idx) == Perm()


@given(arm64_states(), por_values)
def test_other_class_register_is_irrelevant(state: dict[str, Any], other: int) -> None:
    """Unprivileged accesses ignore POR_EL1 and privileged ones ignore POR_EL0."""
    unpriv = state["el"] == 0 or state["unprivileged"]
    changed = {**state, ("por_el1" if unpriv else "por_el0"): other}
    assert check_access(**changed) == check_access(**state)


@given(arm64_states())
def test_syndrome_fields_are_consistent(state: dict[str, Any]) -> None:
    """Every fault's ESR has IL, the right EC for EL/access, the level and the Overlay bit."""
    v = check_access(**state)
    if v.allowed:
        assert v.syndrome is None
        return
    esr = decode_esr(v.syndrome or 0)
    fetch = state["access"] == "X"
    assert esr["ec"] == (0x20 if fetch else 0x24) + state["el"]
    assert esr["il"] == 1
    assert esr["level"] == state["level"]
    assert esr["overlay"] == (v.result == "overlay_fault")
    if state["access"] in ("R", "X"):
        assert esr["wnr"] == 0
    if state["access"] == "W":
        assert esr["wnr"] == 1
    assert v.syndrome is not None and v.syndrome >> 39 == 0


@given(por_values, st.integers(0, 7), perms)
def test_reg_set_get_round_trip(reg: int, pkey: int, perm: Perm) -> None:
    """reg_set_perm then reg_get_perm returns the perm and leaves other fields alone."""
    new = ARM.reg_set_perm(reg, pkey, perm)
    assert ARM.reg_get_perm(new, pkey) == perm
    mask = poe.POE_MASK << (4 * pkey)
    assert new & ~mask == reg & ~mask


@given(st.integers(0, 15), st.integers(0, (1 << 8) - 1), por_values)
def test_perm_prep_get_round_trip(idx: int, perm: int, reg: int) -> None:
    """POR_ELx_PERM_GET undoes POR_ELx_PERM_PREP (masked to 4 bits) and set_pkey_perms."""
    assert poe.POR_ELx_PERM_GET(idx, poe.POR_ELx_PERM_PREP(idx, perm)) == perm & 0xF
    set_reg = poe.por_elx_set_pkey_perms(reg, idx, perm & 0xF)
    assert poe.POR_ELx_PERM_GET(idx, set_reg) == perm & 0xF


@given(por_nibbles)
def test_nibble_decode_matches_bits(nibble: int) -> None:
    """A POR field grants R = bit0, X = bit1, W = bit2, and nothing when bit3 is set."""
    perm = poe.poe_nibble_perm(nibble)
    if nibble & 8:
        assert perm == Perm()
    else:
        assert perm == Perm(r=bool(nibble & 1), w=bool(nibble & 4), x=bool(nibble & 2))
