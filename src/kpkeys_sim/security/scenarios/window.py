"""S14 — the exposure window of the page-table pkey, with and without batching.

Spec: threats-and-peers.md §7 S14 (not an exploit: a security/performance
trade-off), kpkeys-series.md §3.6 (lazy-MMU batching: one switch per
section, each window spanning the whole section).

For every pkey defense and both batching settings, a fresh kernel runs each
workload and counts:

``mem_ops``           memory operations the CPUs executed (every checked
                      access through the MMU, plus each further entry of a
                      bulk page-table store, which the kernel would write one
                      by one);
``mem_ops_writable``  those executed while the CPU's effective pkey register
                      grants write access to the page-table pkey — the
                      exposure (any stray write then would land);
``windows``           register writes that opened page-table access
                      (``kpkeys_set_level`` events);
``pkey_switches``     all pkey-register writes.

Workloads (kernel functions of the model, sized for speed): ``fork`` (a
process with an 8 MiB populated private mapping forks: ``kernel_clone``),
``munmap`` (the same mapping unmapped: ``do_munmap``), ``vmalloc p:N``
(``vmalloc`` of N pages then ``vfree``, N = 1, 16, 256) and ``mix`` (all of
them in a row).  Setup work (creating and populating the process) is not
counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from kpkeys_sim.kernel.kpkeys.core import KPKEYS_SET_LEVEL
from kpkeys_sim.kernel.mm.fork import create_user_task, kernel_clone
from kpkeys_sim.kernel.mm.mmap import (
    MAP_ANONYMOUS,
    MAP_POPULATE,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    do_mmap,
    do_munmap,
)
from kpkeys_sim.kernel.mm.vmalloc import vfree, vmalloc
from kpkeys_sim.kernel.sched import schedule_to
from kpkeys_sim.machine.cpu import CPU
from kpkeys_sim.machine.events import PKEY_REG_WRITE, PT_WRITE, Instrument
from kpkeys_sim.security import kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.scenarios.base import Scenario, register_scenario

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel
    from kpkeys_sim.security.campaign import ExposureRow
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["WORKLOADS", "ExposureWindow", "exposure_rows", "measure_exposure"]

_MAP_SIZE = 8 << 20


class _Exposure(Instrument):
    """Counts memory operations, and those made with the page-table pkey writable."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.arch = k.machine.arch
        self.ops = 0
        self.writable = 0
        self.windows = 0
        self.switches = 0

    def is_writable(self, cpu: CPU) -> bool:
        return self.arch.reg_get_perm(cpu.pkey_reg_effective, 1).w

    def access(self, cpu: CPU, va: int, pa: int, access: str, el: int) -> None:
        self.ops += 1
        if el == 1 and self.is_writable(cpu):
            self.writable += 1

    def on_event(self, kind: str, n: int) -> None:
        if kind == PT_WRITE and n > 1:
            self.ops += n - 1
            if self.is_writable(self.k.cpu):
                self.writable += n - 1
        elif kind == KPKEYS_SET_LEVEL:
            self.windows += n
        elif kind == PKEY_REG_WRITE:
            self.switches += n


def _process(k: Kernel) -> Any:
    with k.on_cpu(0):
        task = create_user_task(k, "s14")
        schedule_to(k, task)
        mm = task.mm
        assert mm is not None
        addr = do_mmap(
            k,
            mm,
            0,
            _MAP_SIZE,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
        )
    if addr < 0:
        raise MemoryError("s14: mmap failed")
    return task, addr


def _fork(k: Kernel, st: Any) -> None:
    with k.on_cpu(0):
        kernel_clone(k, st[0])


def _munmap(k: Kernel, st: Any) -> None:
    with k.on_cpu(0):
        do_munmap(k, st[0].mm, st[1], _MAP_SIZE)


def _vmalloc(pages: int) -> Callable[[Kernel, Any], None]:
    def run(k: Kernel, st: Any) -> None:
        with k.on_cpu(0):
            va = vmalloc(k, pages * k.pgt.PAGE_SIZE)
            if va is None:
                raise MemoryError("s14: vmalloc failed")
            vfree(k, va)

    return run


def _mix(k: Kernel, st: Any) -> None:
    _fork(k, st)
    _vmalloc(16)(k, st)
    _munmap(k, st)


#: Workload name -> body (run after the setup; the setup is not counted).
WORKLOADS: dict[str, Callable[[Kernel, Any], None]] = {
    "fork": _fork,
    "munmap": _munmap,
    "vmalloc p:1": _vmalloc(1),
    "vmalloc p:16": _vmalloc(16),
    "vmalloc p:256": _vmalloc(256),
    "mix": _mix,
}


def measure_exposure(defense: str, workload: str, batching: bool) -> ExposureRow:
    """Boot the defense's kernel with ``batching`` and count one run of ``workload``."""
    from kpkeys_sim.security.campaign import ATTACK_BASE_CONFIG, ExposureRow
    from kpkeys_sim.security.defenses import make_defense

    cfg = make_defense(defense).kernel_config(ATTACK_BASE_CONFIG)
    k = kapi.boot_kernel(cfg.replace(lazy_mmu_batching=batching))
    st = _process(k)
    inst = _Exposure(k)
    k.machine.instruments.add(inst)
    k.machine.stage2 = inst.access
    WORKLOADS[workload](k, st)
    k.machine.stage2 = None
    k.machine.instruments.remove(inst)
    return ExposureRow(
        defense, workload, batching, inst.ops, inst.writable, inst.windows, inst.switches
    )


def exposure_rows(defenses: list[str]) -> list[ExposureRow]:
    """S14's table: every pkey defense in ``defenses`` × workload × batching on/off."""
    from kpkeys_sim.security.defenses import make_defense

    rows: list[ExposureRow] = []
    for d in defenses:
        if not make_defense(d).pkey_protects_pgtables:
            continue
        for w in WORKLOADS:
            for batching in (True, False):
                rows.append(measure_exposure(d, w, batching))
    return rows


@register_scenario
class ExposureWindow(Scenario):
    """S14 — memory operations executed while the page-table pkey is writable."""

    id: ClassVar[str] = "S14"
    title: ClassVar[str] = "exposure window of the page-table pkey, with and without batching"
    spec: ClassVar[str] = "threats-and-peers.md §7 S14"
    measurement: ClassVar[bool] = True

    def trial(self, env: AttackEnv) -> TrialResult:
        raise RuntimeError("S14 is a measurement: see exposure_rows()")
