"""A kernbench-like mix: the memory-management share of a kernel build's system time.

mmtests' kernbench times a kernel build (spec kpkeys-series.md §6.2; the
series reports elapsed, system and user time).  Its system time is spent by
thousands of short-lived processes.  This workload re-enacts that process
life cycle on the model, from a mix file users can edit
(``src/kpkeys_sim/data/kernbench_mix.toml``, the default; ``--mix FILE``):

1. setup (not measured): a long-lived parent (``make``/``sh``) with private
   anonymous memory (populated) and a file mapping; the files the jobs map
   (compiler, libraries) are created once and one warm-up job runs (touching
   only its file regions), so the page cache is warm as it is after the
   first compile of a build;
2. each job (measured): ``fork`` of the parent (``kernel_clone``: the
   parent's anonymous page tables are copied), ``exec`` (a fresh mm replaces
   the copy, which is torn down: ``exec_mmap`` + ``mmput``), the child runs,
   maps its regions (``do_mmap``), touches a fraction
   of each region's pages with user loads (file regions: page-cache pages) or
   stores (anonymous regions: zeroed pages) — every touch of an unmapped page
   is a real page fault of the model — unmaps its scratch regions
   (``do_munmap``), exits (``do_exit``: ``exit_mmap``) and is reaped by the
   parent (``kernel_wait``).

Region sizes and the touched pages are drawn from the run's seeded
generator, the same in a configuration's run and its baseline's.  Only mm
work is re-enacted: VFS, scheduler and I/O work that real system time also
contains is absent, so the overhead is that of the mm share of system time
(``docs/model-assumptions.md``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kpkeys_sim.analysis.cost import CostInstrument
from kpkeys_sim.errors import ToolError
from kpkeys_sim.workloads import IterationReport, RunCounts, Size, measure

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel
    from kpkeys_sim.kernel.mm.memory import file
    from kpkeys_sim.kernel.mm.mm_types import mm_struct
    from kpkeys_sim.kernel.sched import task_struct

__all__ = ["KERNBENCH", "Dist", "Kernbench", "Mix", "Region", "default_mix", "load_mix"]

KiB = 1024
MiB = 1 << 20
GiB = 1 << 30


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Dist(_Strict):
    """A size distribution in KiB: fixed, uniform or (clamped) lognormal."""

    dist: Literal["fixed", "uniform", "lognormal"]
    value: int | None = None
    min: int | None = None
    max: int | None = None
    median: float | None = None
    sigma: float | None = None

    def check(self, where: str) -> None:
        """ToolError naming ``where`` if the fields do not fit the distribution."""
        need = {
            "fixed": ("value",),
            "uniform": ("min", "max"),
            "lognormal": ("median", "sigma", "min", "max"),
        }[self.dist]
        for f in need:
            v = getattr(self, f)
            if v is None or (v <= 0 and f != "sigma") or (f == "sigma" and v < 0):
                raise ToolError(f"{where}: {self.dist} needs a positive {f!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ToolError(f"{where}: min {self.min} > max {self.max}")

    def draw(self, rng: np.random.Generator) -> int:
        """One size in KiB."""
        if self.dist == "fixed":
            assert self.value is not None
            return self.value
        assert self.min is not None and self.max is not None
        if self.dist == "uniform":
            return int(rng.integers(self.min, self.max + 1))
        assert self.median is not None and self.sigma is not None
        v = float(rng.lognormal(np.log(self.median), self.sigma))
        return int(min(max(round(v), self.min), self.max))


class Region(_Strict):
    """One kind of region a job maps."""

    what: str
    kind: Literal["file", "anon"]
    count: int = Field(ge=1)
    size_kib: Dist
    touch: float = Field(ge=0.0, le=1.0)
    unmap: Literal["early", "exit"] = "exit"


class Parent(_Strict):
    """The long-lived parent's memory (KiB)."""

    anon_kib: int = Field(ge=0)
    file_kib: int = Field(ge=0)


class Mix(_Strict):
    """A kernbench-like mix (see ``data/kernbench_mix.toml``)."""

    name: str
    jobs_full: int = Field(ge=1)
    jobs_small: int = Field(ge=1)
    parent: Parent
    region: list[Region] = Field(min_length=1)


def _parse(text: str, source: str) -> Mix:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ToolError(f"{source}: not valid TOML: {exc}") from None
    try:
        mix = Mix.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            raise ToolError(f"{source}: unknown key {key!r}") from None
        raise ToolError(
            f"{source}: bad value {err.get('input')!r} for {key!r}: {err['msg']}"
        ) from None
    for i, r in enumerate(mix.region):
        r.size_kib.check(f"{source}: region[{i}].size_kib")
    return mix


def load_mix(path: str | Path) -> Mix:
    """Load and validate a mix file; ToolError names the file and the bad key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ToolError(f"{p}: no such mix file") from None
    return _parse(text, str(p))


def default_mix() -> Mix:
    """The shipped mix (``kpkeys_sim/data/kernbench_mix.toml``)."""
    text = resources.files("kpkeys_sim").joinpath("data/kernbench_mix.toml").read_text("utf-8")
    return _parse(text, "kernbench_mix.toml")


@dataclass(frozen=True, slots=True)
class _PlannedRegion:
    kind: str
    nbytes: int
    touched: tuple[int, ...]  # page indices
    early: bool
    file_index: int  # which shared file (file regions)


def _plan_job(mix: Mix, rng: np.random.Generator, page: int) -> list[_PlannedRegion]:
    out = []
    for ri, r in enumerate(mix.region):
        for j in range(r.count):
            kib = r.size_kib.draw(rng)
            npages = max(1, -(-kib * KiB // page))
            nt = round(r.touch * npages)
            touched: list[int] = (
                [int(x) for x in np.sort(rng.choice(npages, size=nt, replace=False))] if nt else []
            )
            out.append(
                _PlannedRegion(
                    r.kind,
                    npages * page,
                    tuple(touched),
                    r.unmap == "early",
                    ri * 64 + j,
                )
            )
    return out


class Kernbench:
    """The kernbench-like workload for one mix."""

    name = "kernbench"

    def __init__(self, mix: Mix | None = None) -> None:
        self._mix = mix

    @property
    def mix(self) -> Mix:
        """The mix (the shipped default unless one was given)."""
        if self._mix is None:
            self._mix = default_mix()
        return self._mix

    def param_sets(self, size: Size) -> list[dict[str, int]]:
        """No parameters (the series reports kernbench system time)."""
        return [{}]

    def default_kernel_ws(self, params: Mapping[str, int], size: Size) -> int:
        """16 MiB: page tables, VMAs, page-cache xarrays, dentries and inodes of a build [A]."""
        return 16 * MiB

    def ram_size(self, params: Mapping[str, int], size: Size) -> int:
        """1 GiB (a job touches at most a few hundred MiB)."""
        return GiB

    def run(
        self,
        k: Kernel,
        counter: CostInstrument,
        params: Mapping[str, int],
        size: Size,
        rng: np.random.Generator,
        iterations: int | None = None,
    ) -> RunCounts:
        """Set up the parent and the files, one warm-up job, then the measured jobs."""
        from kpkeys_sim.kernel.mm.fork import create_user_task
        from kpkeys_sim.kernel.mm.memory import filp_create
        from kpkeys_sim.kernel.mm.mmap import (
            MAP_ANONYMOUS,
            MAP_POPULATE,
            MAP_PRIVATE,
            PROT_READ,
            PROT_WRITE,
            do_mmap,
        )
        from kpkeys_sim.kernel.sched import schedule_to

        mix = self.mix
        page = k.pgt.PAGE_SIZE
        jobs = (
            iterations
            if iterations is not None
            else (mix.jobs_full if size == "full" else mix.jobs_small)
        )
        parent = create_user_task(k, "make")
        schedule_to(k, parent)
        pmm = parent.mm
        assert pmm is not None
        if mix.parent.anon_kib:
            flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE
            _ok(do_mmap(k, pmm, 0, mix.parent.anon_kib * KiB, PROT_READ | PROT_WRITE, flags))
        if mix.parent.file_kib:
            f = filp_create(k, "make", mix.parent.file_kib * KiB)
            _ok(
                do_mmap(
                    k, pmm, 0, mix.parent.file_kib * KiB, PROT_READ, MAP_PRIVATE | MAP_POPULATE, f
                )
            )
        files: dict[int, file] = {}
        plans = [_plan_job(mix, rng, page) for _ in range(jobs + 1)]
        sizes: dict[int, int] = {}
        for plan in plans:
            for r in plan:
                if r.kind == "file":
                    sizes[r.file_index] = max(sizes.get(r.file_index, 0), r.nbytes)
        for idx, nbytes in sorted(sizes.items()):
            files[idx] = filp_create(k, f"file{idx}", nbytes)
        _job(k, parent, plans[0], files, warm_up=True)  # fills the page cache
        counter.reset()
        faults = sum(len(r.touched) for plan in plans[1:] for r in plan)

        def measured_jobs() -> None:
            for plan in plans[1:]:
                _job(k, parent, plan, files)

        events = measure(counter, measured_jobs)
        return RunCounts(
            events, IterationReport(jobs, jobs, False), {"jobs": jobs, "touched_pages": faults}
        )


def _ok(ret: int) -> int:
    if ret < 0:
        raise RuntimeError(f"kernbench: mmap failed ({ret})")
    return ret


def _execve(k: Kernel, task: task_struct, comm: str) -> None:
    """``execve``'s mm replacement for the just-forked ``task`` (``fs/exec.c`` ``exec_mmap``).

    A fresh mm (``mm_alloc``) is installed with ``exec_mmap``, then the
    forked copy is released (``mmput``: ``exit_mmap`` and the pgd).  The
    model's ``exec_mmap`` only execs a task that is not running, so this runs
    before the child is first scheduled (Linux runs it in the child; the
    kernel work is the same).
    """
    from kpkeys_sim.kernel.mm.fork import exec_mmap, mm_alloc, mmput

    new = mm_alloc(k, name=comm)
    if new is None:
        raise RuntimeError("kernbench: mm_alloc failed")
    old = task.mm
    task.mm = None
    exec_mmap(k, task, new)
    if old is not None:
        mmput(k, old)


def _job(
    k: Kernel,
    parent: task_struct,
    plan: list[_PlannedRegion],
    files: Mapping[int, file],
    warm_up: bool = False,
) -> None:
    """One job: fork, exec, map and touch the regions, unmap the early ones, exit, reap.

    A ``warm_up`` job touches only its file regions (it exists to fill the
    page cache).
    """
    from kpkeys_sim.kernel.mm.fork import do_exit, kernel_clone, kernel_wait
    from kpkeys_sim.kernel.mm.memory import user_read, user_write
    from kpkeys_sim.kernel.mm.mmap import (
        MAP_ANONYMOUS,
        MAP_PRIVATE,
        PROT_EXEC,
        PROT_READ,
        PROT_WRITE,
        do_mmap,
        do_munmap,
    )
    from kpkeys_sim.kernel.sched import schedule_to

    page = k.pgt.PAGE_SIZE
    child = kernel_clone(k)
    if child is None:
        raise RuntimeError("kernbench: fork failed")
    _execve(k, child, "cc1")
    schedule_to(k, child)
    mm: mm_struct | None = child.mm
    assert mm is not None
    early: list[tuple[int, int]] = []
    for r in plan:
        if r.kind == "file":
            addr = _ok(
                do_mmap(k, mm, 0, r.nbytes, PROT_READ | PROT_EXEC, MAP_PRIVATE, files[r.file_index])
            )
            for i in r.touched:
                user_read(k, addr + i * page, 1)
        else:
            addr = _ok(
                do_mmap(k, mm, 0, r.nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
            )
            for i in () if warm_up else r.touched:
                user_write(k, addr + i * page, b"\x01")
        if r.early:
            early.append((addr, r.nbytes))
    for addr, n in early:
        if do_munmap(k, mm, addr, n):
            raise RuntimeError("kernbench: munmap failed")
    do_exit(k, 0, next_task=parent)
    if kernel_wait(k, parent, child.pid) is None:
        raise RuntimeError("kernbench: the job was not reaped")


KERNBENCH = Kernbench()
