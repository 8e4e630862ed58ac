"""x86 TLB maintenance (``kernel/arch/x86_tlb.py``), boot dispatch, x86 ``free_initmem``.

Kernel flushes: one shootdown IPI per call when there are other CPUs, INVLPG per
page up to ``tlb_single_page_flush_ceiling`` (33), a global flush above.  User
flushes: an IPI only when another CPU has the mm in its CR3 (the model's
``mm_cpumask``), which the scheduler's lazy TLB produces.  The stale entries the
flush targets are really gone from every CPU's TLB afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kpkeys_sim.kernel.arch import x86_head, x86_tlb
from kpkeys_sim.kernel.arch.arm64_mm import Arm64Mm
from kpkeys_sim.kernel.arch.x86_setup import X86Mm
from kpkeys_sim.kernel.boot import boot
from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm import tlbflush
from kpkeys_sim.kernel.mm.fork import create_user_task
from kpkeys_sim.kernel.mm.memory import user_mm_init, user_write
from kpkeys_sim.kernel.mm.mm_types import mm_struct
from kpkeys_sim.kernel.mm.mmap import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    do_mmap,
)
from kpkeys_sim.kernel.sched import current, finish_lazy_tlb, schedule_to, task_struct
from kpkeys_sim.machine import CountingInstrument, Fault
from kpkeys_sim.machine.tlb import GLOBAL_ASID

PAGE = 4096
MiB = 1 << 20
CEILING = 33  # tlb_single_page_flush_ceiling (arch/x86/mm/tlb.c)


def _boot(
    arch: str = "x86", ram: int = 256 * MiB, **kw: object
) -> tuple[Kernel, CountingInstrument]:
    ci = CountingInstrument()
    cfg = KernelConfig(arch=arch, ram_size=ram, **kw)  # type: ignore[arg-type]
    return boot(cfg, instruments=[ci]), ci


def _kernel_pages(k: Kernel, n: int) -> list[int]:
    """``n`` consecutive 4K-mapped direct-map VAs (the direct map is PTE-mapped here)."""
    base = k.pgt.va(100 * MiB)
    return [base + i * PAGE for i in range(n)]


def _fill(k: Kernel, vas: list[int]) -> None:
    """Cache a translation of every VA in every CPU's TLB."""
    m = k.machine
    for cpu in m.cpus:
        for va in vas:
            m.translate(cpu, va, "R")


def _cached(k: Kernel, va: int, asid: int = GLOBAL_ASID) -> list[bool]:
    """Per CPU: does its TLB hold an entry for ``va``?"""
    return [t.lookup(va, asid) is not None for t in k.machine.tlbs]


# --- kernel ranges ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pte_k() -> tuple[Kernel, CountingInstrument]:
    """Two CPUs, feature off, 4K direct map: every page is its own TLB entry."""
    return _boot(kpkeys_hardened_pgtables=False, linear_map="pte")


@pytest.mark.parametrize("pages", [1, 2, CEILING])
def test_kernel_range_up_to_the_ceiling_is_one_invlpg_per_page_and_one_ipi(
    pte_k: tuple[Kernel, CountingInstrument], pages: int
) -> None:
    k, ci = pte_k
    vas = _kernel_pages(k, pages + 1)  # one page past the range stays cached
    _fill(k, vas)
    assert all(all(_cached(k, va)) for va in vas)
    ci.reset()
    x86_tlb.flush_tlb_kernel_range(k, vas[0], vas[0] + pages * PAGE)
    assert ci.counts["tlbi_va"] == pages
    assert ci.counts["tlbi_all"] == 0
    assert ci.counts["tlb_shootdown_ipi"] == 1
    for va in vas[:pages]:
        assert _cached(k, va) == [False, False]
    assert _cached(k, vas[pages]) == [True, True]  # exact: the next page is untouched


def test_kernel_range_above_the_ceiling_is_one_global_flush_and_one_ipi(
    pte_k: tuple[Kernel, CountingInstrument],
) -> None:
    k, ci = pte_k
    vas = _kernel_pages(k, CEILING + 1)
    far = k.pgt.va(200 * MiB)
    _fill(k, [*vas, far])
    ci.reset()
    x86_tlb.flush_tlb_kernel_range(k, vas[0], vas[-1] + PAGE)
    assert ci.counts["tlbi_all"] == 1
    assert ci.counts["tlbi_va"] == 0
    assert ci.counts["tlb_shootdown_ipi"] == 1
    for va in [*vas, far]:  # a global flush drops even translations outside the range
        assert _cached(k, va) == [False, False]
    assert [len(t) for t in k.machine.tlbs] == [0, 0]


def test_kernel_range_unaligned_bounds_cover_every_touched_page(
    pte_k: tuple[Kernel, CountingInstrument],
) -> None:
    k, ci = pte_k
    vas = _kernel_pages(k, 3)
    _fill(k, vas)
    ci.reset()
    x86_tlb.flush_tlb_kernel_range(k, vas[0] + 8, vas[1] + 16)  # touches pages 0 and 1
    assert ci.counts["tlbi_va"] == 2
    assert _cached(k, vas[1]) == [False, False]
    assert _cached(k, vas[2]) == [True, True]


def test_uniprocessor_kernel_flushes_send_no_ipi() -> None:
    k, ci = _boot(nr_cpus=1, kpkeys_hardened_pgtables=False, linear_map="pte")
    vas = _kernel_pages(k, CEILING + 1)
    _fill(k, vas)
    ci.reset()
    x86_tlb.flush_tlb_kernel_range(k, vas[0], vas[0] + PAGE)
    x86_tlb.flush_tlb_kernel_range(k, vas[0], vas[-1] + PAGE)
    x86_tlb.flush_tlb_all(k)
    assert (ci.counts["tlbi_va"], ci.counts["tlbi_all"]) == (1, 2)
    assert ci.counts["tlb_shootdown_ipi"] == 0
    assert _cached(k, vas[0]) == [False]


# --- user ranges -----------------------------------------------------------------------------


class _UserSetup:
    """A user process ``p`` with 64 faulted-in pages at ``addr``; ``idle0`` is CPU0's idle."""

    def __init__(self) -> None:
        self.k, self.ci = _boot(kpkeys_hardened_pgtables=False)
        k = self.k
        user_mm_init(k)
        self.idle0: task_struct = current(k)
        self.p = create_user_task(k, "p")
        schedule_to(k, self.p)
        assert self.p.mm is not None
        self.mm: mm_struct = self.p.mm
        self.addr = do_mmap(
            k, self.mm, 0, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
        )
        self.touch()

    def touch(self) -> None:
        """Write every page from ``current`` on ``k.cpu`` (fills that CPU's TLB)."""
        for i in range(64):
            user_write(self.k, self.addr + i * PAGE, b"x")

    def page(self, i: int) -> int:
        return self.addr + i * PAGE

    def cached(self, i: int) -> list[bool]:
        return _cached(self.k, self.page(i), self.mm.context_id)


@pytest.fixture
def user() -> Iterator[_UserSetup]:
    yield _UserSetup()


def test_user_flush_with_the_mm_on_this_cpu_only_sends_no_ipi(user: _UserSetup) -> None:
    k, ci, mm = user.k, user.ci, user.mm
    assert k.cpu.cpu_id == 0 and k.machine.cpus[0].ttbr0 == mm.pgd_phys
    assert k.machine.cpus[1].ttbr0 != mm.pgd_phys
    assert user.cached(0)[0] and user.cached(3)[0] and user.cached(4)[0]
    ci.reset()
    tlbflush.flush_tlb_range(k, mm, user.page(0), user.page(4))
    assert ci.counts["tlbi_va"] == 4
    assert ci.counts["tlb_shootdown_ipi"] == 0
    assert not user.cached(0)[0] and not user.cached(3)[0]
    assert user.cached(4)[0]


def test_user_flush_sends_one_ipi_when_another_cpu_has_the_mm_loaded(user: _UserSetup) -> None:
    """p migrates CPU0 → CPU1; CPU0's idle task keeps p's mm in CR3 (lazy TLB)."""
    k, ci, mm = user.k, user.ci, user.mm
    schedule_to(k, user.idle0)
    with k.on_cpu(1):
        schedule_to(k, user.p)
        user.touch()  # CPU1's TLB now caches p's pages too
        assert [c.ttbr0 == mm.pgd_phys for c in k.machine.cpus] == [True, True]
        assert user.cached(2) == [True, True]
        ci.reset()
        tlbflush.flush_tlb_range(k, mm, user.page(0), user.page(CEILING))
        assert ci.counts["tlbi_va"] == CEILING
        assert ci.counts["tlbi_asid"] == 0
        assert ci.counts["tlb_shootdown_ipi"] == 1
        assert user.cached(2) == [False, False]
        assert user.cached(CEILING) == [True, True]
        ci.reset()
        x86_tlb.flush_tlb_mm_range(k, mm, user.page(0), user.page(64))  # above the ceiling
        assert (ci.counts["tlbi_asid"], ci.counts["tlbi_va"]) == (1, 0)
        assert ci.counts["tlb_shootdown_ipi"] == 1
        assert all(user.cached(i) == [False, False] for i in range(64))
        ci.reset()
        user.touch()
        tlbflush.flush_tlb_page(k, mm, user.page(7) + 123)
        assert (ci.counts["tlbi_va"], ci.counts["tlb_shootdown_ipi"]) == (1, 1)
        assert user.cached(7) == [False, False]


def test_user_flush_ipi_stops_once_the_other_cpu_drops_the_lazy_mm(user: _UserSetup) -> None:
    """Negative control of the previous test: CPU0 gives the mm back, no IPI is needed."""
    k, ci, mm = user.k, user.ci, user.mm
    schedule_to(k, user.idle0)
    with k.on_cpu(1):
        schedule_to(k, user.p)
    finish_lazy_tlb(k)  # CPU0's idle thread switches to init_mm (CR3 without p)
    assert k.machine.cpus[0].ttbr0 != mm.pgd_phys
    with k.on_cpu(1):
        user.touch()
        ci.reset()
        tlbflush.flush_tlb_range(k, mm, user.page(0), user.page(4))
        x86_tlb.flush_tlb_mm(k, mm)
    assert ci.counts["tlb_shootdown_ipi"] == 0
    assert (ci.counts["tlbi_va"], ci.counts["tlbi_asid"]) == (4, 1)
    assert user.cached(10) == [False, False]


# --- dispatch --------------------------------------------------------------------------------


def test_boot_dispatches_x86_and_arm64() -> None:
    kx, _ = _boot("x86", kpkeys_hardened_pgtables=False)
    assert kx.machine.fmt == "x86"
    assert isinstance(kx.arch_mm, X86Mm)
    assert kx.machine.cpus[0].ttbr1 == kx.pgt.pa_symbol(kx.swapper_pg_dir)
    ka, _ = _boot("arm64", kpkeys_hardened_pgtables=False)
    assert ka.machine.fmt == "arm64"
    assert isinstance(ka.arch_mm, Arm64Mm)
    assert not isinstance(ka.arch_mm, X86Mm)


@pytest.mark.parametrize("arch", ["x86", "arm64"])
def test_generic_tlbflush_reaches_the_arch_implementation(arch: str) -> None:
    """arm64 broadcasts TLBIs between DSBs and an ISB; x86 has no barrier but IPIs."""
    k, ci = _boot(arch, kpkeys_hardened_pgtables=False)
    va = k.pgt.va(100 * MiB)
    user_mm_init(k)
    p = create_user_task(k, "p")
    schedule_to(k, p)
    assert p.mm is not None
    ci.reset()
    tlbflush.flush_tlb_kernel_range(k, va, va + 2 * PAGE)
    tlbflush.flush_tlb_all(k)
    tlbflush.flush_tlb_range(k, p.mm, 0x400000, 0x400000 + PAGE)
    c = ci.counts
    assert c["tlbi_va"] == 3 and c["tlbi_all"] == 1
    if arch == "x86":
        assert c["isb"] == 0 and c["dsb"] == 0
        assert c["tlb_shootdown_ipi"] == 2  # the kernel flushes; p runs on CPU0 only
    else:
        assert c["isb"] >= 2 and c["dsb"] >= 6
        assert c["tlb_shootdown_ipi"] == 0


# --- free_initmem: the high-mapping alias of init pages -------------------------------------


def _init_page_aliases(k: Kernel) -> tuple[int, int]:
    assert isinstance(k.arch_mm, X86Mm)
    img = k.arch_mm.image
    hi = img.init_begin + 5 * PAGE
    g = k.pgt
    return hi, g.va(g.pa_symbol(hi))


def _translates(k: Kernel, va: int) -> bool:
    m = k.machine
    try:
        m.translate(m.cpus[1], va, "R")
    except Fault as f:
        assert f.kind == "translation"
        return False
    return True


def test_free_initmem_drops_the_high_alias_with_the_feature_on() -> None:
    k, _ = _boot(series="v6")
    hi, lm = _init_page_aliases(k)
    assert not _translates(k, hi)
    assert isinstance(k.arch_mm, X86Mm)
    img = k.arch_mm.image
    assert not _translates(k, img.init_end - PAGE)
    assert _translates(k, lm)
    assert _translates(k, img.init_begin - PAGE)  # the data section before stays mapped
    assert _translates(k, img.init_end)  # and the bss after


def test_free_initmem_keeps_the_high_alias_with_the_feature_off() -> None:
    """Negative control: Linux without PTI keeps the freed range's high mapping."""
    k, _ = _boot(kpkeys_hardened_pgtables=False)
    hi, lm = _init_page_aliases(k)
    assert _translates(k, hi)
    assert _translates(k, lm)


def test_free_initmem_without_the_drop_keeps_the_high_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mutation: the feature on but ``_drop_highmap_alias`` removed — the alias survives."""
    monkeypatch.setattr(x86_head, "_drop_highmap_alias", lambda k, start, end: None)
    k, _ = _boot(series="v6")
    hi, _lm = _init_page_aliases(k)
    assert _translates(k, hi)
