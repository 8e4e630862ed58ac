"""KASAN: generic (shadow memory + quarantine) and tag-based (software and hardware tags).

Mechanics (spec threats-and-peers.md §1.6, [R30] ``Documentation/dev-tools/kasan.rst``,
[R31] ``include/linux/kasan-tags.h``, [R33] ``page_to_virt()``, [R34]
``__GFP_SKIP_KASAN``, [R35] tags of ctor / ``SLAB_TYPESAFE_BY_RCU`` caches):

Generic KASAN (``kasan-generic``)
    One shadow byte per 8-byte granule: 0 = accessible, a poison code
    otherwise (``KASAN_PAGE_FREE`` 0xFF, ``KASAN_SLAB_REDZONE`` 0xFC,
    ``KASAN_SLAB_FREE`` 0xFB).  Compiler instrumentation checks the shadow
    of every access the kernel makes (:meth:`GenericKasan.check_access`).
    Allocation unpoisons the object (the tail of its slot up to the slot
    size stays a redzone), free poisons it; page allocation unpoisons, page
    free poisons.  Freed slab objects go through a FIFO **quarantine**
    (only this mode has one): they are really freed only when the
    quarantine exceeds its size (default ``total RAM / 32``,
    ``QUARANTINE_FRACTION`` in ``mm/kasan/quarantine.c``), oldest first,
    down to ``QUARANTINE_LOW_SIZE`` = 3/4 of the limit [U: from memory of
    quarantine.c; the batching in per-CPU queues is not modelled].
Software tags (``kasan-sw-tags``)
    An 8-bit tag per 16-byte granule in shadow memory and in the pointer's
    top byte (TBI).  Allocation draws a random tag from 0x00–0xFD (254
    values) and applies it to the granules and the returned pointer; free
    retags the granules ``KASAN_TAG_INVALID`` (0xFE).  0xFF
    (``KASAN_TAG_KERNEL``) is the match-all pointer tag.  Checked by
    compiler instrumentation on every access.
Hardware tags (``kasan-hw-tags``, and the MTE configurations in ``mte.py``)
    4-bit MTE allocation tags per 16-byte granule, logical tag in pointer
    bits 59:56.  Random tags from 0xF0–0xFD (14 values); 0xFF/0xF is the
    match-all pointer tag (TCR_EL1.TCMA1); 0xFE/0xE marks freed memory.
    Checked by the hardware (no instrumentation).  Modes: ``sync`` (the
    fault is taken at the access), ``async`` (recorded in TFSR_EL1, reported
    at the next kernel entry/exit; the access completes), ``asymm`` (sync
    reads, async writes).  Pages allocated with ``__GFP_SKIP_KASAN`` (user
    pages) are neither unpoisoned nor poisoned: their tags are left alone and
    their page tag is reset to 0xFF.

All tag modes: ``page_to_virt()``/``page_address()`` return the linear-map
address with the page's *current* KASAN tag (the tag of its last
allocation, kept in ``page->flags``); new slab pages get the page tag 0xFF
(``kasan_poison_slab`` resets it), so a pointer re-derived from a slab
page's ``struct page`` matches everything [R33][H].  Caches with a
constructor or ``SLAB_TYPESAFE_BY_RCU`` tag objects by slot index at slab
creation instead of per allocation [R35] (the ``filp`` cache is
``SLAB_TYPESAFE_BY_RCU``).

Reporting: ``kasan.fault=report`` (default) prints and continues — the
access completes; ``kasan.fault=panic`` stops the kernel (the trial ends,
the access does not complete).  Only the **first** bug is reported unless
``kasan_multi_shot`` is given; HW_TAGS additionally turns tag checking off
on the reporting CPU after the report (arm64 ``__do_kernel_fault`` clears
SCTLR_EL1.TCF; other CPUs turn it off lazily at their own next tag fault)
[R30] (scenario S11).

Model choices: tags are drawn independently per allocation from the
trial's Generator (spec §1.6 [H: modelling simplification]); the slab
geometry is the kernel's (the generic mode's extra metadata does not grow
the slot; its redzone is the slot tail beyond the requested size).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.kernel.mm.gfp import __GFP_SKIP_KASAN
from kpkeys_sim.security.defenses.base import Defense, register_defense
from kpkeys_sim.security.pointers import (
    KASAN_TAG_INVALID,
    KASAN_TAG_KERNEL,
    canonical,
    pointer_tag,
    set_tag,
)

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = [
    "KASAN_PAGE_FREE",
    "KASAN_SLAB_FREE",
    "KASAN_SLAB_REDZONE",
    "QUARANTINE_FRACTION",
    "GenericKasan",
    "HwTagsKasan",
    "SwTagsKasan",
    "TagKasan",
]

# mm/kasan/kasan.h (generic mode shadow values).
KASAN_PAGE_FREE = 0xFF
KASAN_SLAB_REDZONE = 0xFC
KASAN_SLAB_FREE = 0xFB
#: mm/kasan/quarantine.c: the quarantine may hold 1/QUARANTINE_FRACTION of RAM.
QUARANTINE_FRACTION = 32

_GFP_SKIP_KASAN = __GFP_SKIP_KASAN


class _Store:
    """Sparse per-page metadata: one small uint8 array per page that was ever marked.

    Unmarked pages read as ``default``.  Generic KASAN stores one shadow byte
    per 8-byte granule, the tag modes one tag per 16-byte granule.
    """

    __slots__ = ("default", "dtype", "granule_shift", "page_shift", "pages", "per_page")

    def __init__(
        self, page_shift: int, granule_shift: int, default: int, dtype: type = np.uint8
    ) -> None:
        self.page_shift = page_shift
        self.granule_shift = granule_shift
        self.per_page = 1 << (page_shift - granule_shift)
        self.default = default
        #: uint8 for the defenses; int32 for the symbolic store of a prefix replay plan.
        self.dtype = dtype
        self.pages: dict[int, npt.NDArray[Any]] = {}

    def _page(self, pfn: int) -> npt.NDArray[Any]:
        a = self.pages.get(pfn)
        if a is None:
            a = np.full(self.per_page, self.default, dtype=self.dtype)
            self.pages[pfn] = a
        return a

    def set_range(self, pa: int, size: int, value: int) -> None:
        """Mark the granules covering ``[pa, pa + size)`` with ``value``."""
        gs = self.granule_shift
        ps = self.page_shift
        end = pa + size
        if pa >> ps == (end - 1) >> ps:  # within one page (the common case)
            mask = (1 << ps) - 1
            self._page(pa >> ps)[(pa & mask) >> gs : (((end - 1) & mask) >> gs) + 1] = value
            return
        while pa < end:
            pfn = pa >> self.page_shift
            page_end = (pfn + 1) << self.page_shift
            chunk_end = min(end, page_end)
            lo = (pa & ((1 << self.page_shift) - 1)) >> gs
            hi = ((chunk_end - 1) & ((1 << self.page_shift) - 1)) >> gs
            self._page(pfn)[lo : hi + 1] = value
            pa = chunk_end

    def set_pages(self, pfn: int, nr: int, value: int) -> None:
        """Mark every granule of ``nr`` pages from ``pfn``."""
        for p in range(pfn, pfn + nr):
            self._page(p)[:] = value

    def values(self, pa: int, size: int) -> list[int]:
        """The marks of the granules covering ``[pa, pa + size)`` (size >= 1)."""
        gs = self.granule_shift
        out: list[int] = []
        g = pa >> gs
        last = (pa + size - 1) >> gs
        shift = self.page_shift - gs
        mask = self.per_page - 1
        while g <= last:
            a = self.pages.get(g >> shift)
            out.append(self.default if a is None else int(a[g & mask]))
            g += 1
        return out

    def save(self) -> dict[int, npt.NDArray[np.uint8]]:
        return {p: a.copy() for p, a in self.pages.items()}

    def restore(self, state: dict[int, npt.NDArray[np.uint8]]) -> None:
        self.pages = {p: a.copy() for p, a in state.items()}


class _KasanBase(Defense):
    """What every KASAN mode shares: report policy, first-report-only, fault mode."""

    kind: ClassVar[str] = "detect"
    detector: ClassVar[str] = "kasan"

    def __init__(self, *, fault: str = "report", multi_shot: bool = False) -> None:
        if fault not in ("report", "panic"):
            raise ValueError(f"bad kasan.fault {fault!r}: must be 'report' or 'panic'")
        self.fault = fault
        self.multi_shot = multi_shot
        self.reported = False
        self.nr_checks = 0

    def kernel_config(self, base: KernelConfig) -> KernelConfig:
        return base.replace(kpkeys_hardened_pgtables=False)

    def _report(self, env: AttackEnv, what: str) -> None:
        """``kasan_report()``: print once (or every time with multi_shot), maybe panic."""
        if self.reported and not self.multi_shot:
            env.trace.count("kasan_report_suppressed")
            return
        self.reported = True
        env.report(self.detector, what, stop=self.fault == "panic")

    def save(self) -> Any:
        return (self.reported, self.nr_checks)

    def restore(self, state: Any) -> None:
        self.reported, self.nr_checks = state

    def describe(self) -> str:
        shot = "multi_shot" if self.multi_shot else "first report only"
        return f"{self.name}: {self.title} (kasan.fault={self.fault}, {shot})"


@register_defense
class GenericKasan(_KasanBase):
    """Generic KASAN: shadow memory, slot-tail redzones, FIFO quarantine."""

    name: ClassVar[str] = "kasan-generic"
    title: ClassVar[str] = "generic KASAN: 1/8 shadow, redzones, quarantine"
    spec: ClassVar[str] = "threats-and-peers.md §1.6; kasan.rst [R30]"
    detector: ClassVar[str] = "kasan-generic"

    def __init__(
        self,
        *,
        fault: str = "report",
        multi_shot: bool = False,
        quarantine_bytes: int | None = None,
    ) -> None:
        super().__init__(fault=fault, multi_shot=multi_shot)
        if quarantine_bytes is not None and quarantine_bytes < 0:
            raise ValueError(f"bad quarantine size {quarantine_bytes!r}: must be >= 0")
        self.quarantine_bytes = quarantine_bytes
        self.limit = 0
        self.shadow: _Store | None = None
        self.quarantine: deque[tuple[int, int]] = deque()
        self.q_size = 0

    def install(self, env: AttackEnv) -> None:
        m = env.k.machine
        self.shadow = _Store(m.page_shift, 3, 0)
        ram = m.mem.nr_frames << m.page_shift
        self.limit = (
            ram // QUARANTINE_FRACTION if self.quarantine_bytes is None else (self.quarantine_bytes)
        )
        env.hook_page_allocator(self)
        env.hook_new_slabs(self)

    def _sh(self) -> _Store:
        assert self.shadow is not None, "defense not installed"
        return self.shadow

    def slab_alloc(
        self, env: AttackEnv, addr: int, pa: int, size: int, slot: int, cache: str
    ) -> int:
        sh = self._sh()
        sh.set_range(pa, size, 0)
        if slot > size:
            sh.set_range(pa + ((size + 7) & ~7), slot - ((size + 7) & ~7), KASAN_SLAB_REDZONE)
        return addr

    def slab_free(
        self, env: AttackEnv, ptr: int, pa: int, size: int, slot: int, cache: str
    ) -> bool:
        self._sh().set_range(pa, slot, KASAN_SLAB_FREE)
        if self.limit == 0:
            return True
        self.quarantine.append((ptr, slot))
        self.q_size += slot
        return False

    def slab_release(self, env: AttackEnv) -> list[int]:
        """``kasan_quarantine_reduce()``: past the limit, release oldest down to 3/4 of it."""
        out: list[int] = []
        if self.q_size <= self.limit:
            return out
        low = self.limit * 3 // 4
        while self.quarantine and self.q_size > low:
            ptr, slot = self.quarantine.popleft()
            self.q_size -= slot
            out.append(ptr)
        return out

    def page_alloc(self, env: AttackEnv, pfn: int, order: int, gfp: int) -> None:
        self._sh().set_pages(pfn, 1 << order, 0)

    def slab_page(self, env: AttackEnv, pfn: int, order: int) -> None:
        """``kasan_poison_slab``: a new slab is inaccessible until objects are allocated."""
        self._sh().set_pages(pfn, 1 << order, KASAN_SLAB_REDZONE)

    def page_free(self, env: AttackEnv, pfn: int, order: int) -> None:
        self._sh().set_pages(pfn, 1 << order, KASAN_PAGE_FREE)

    def check_access(self, env: AttackEnv, ptr: int, size: int, write: bool) -> None:
        """``__asan_load*``/``__asan_store*``: any poisoned granule in the range reports."""
        pa = env.pa_of_or_none(ptr)
        if pa is None:
            return
        self.nr_checks += 1
        bad = [v for v in self._sh().values(pa, size) if v]
        if bad:
            kind = {
                KASAN_SLAB_FREE: "slab-use-after-free",
                KASAN_PAGE_FREE: "use-after-free (freed page)",
                KASAN_SLAB_REDZONE: "slab-out-of-bounds",
            }.get(bad[0], f"invalid-access (shadow {bad[0]:#x})")
            op = "Write" if write else "Read"
            self._report(env, f"BUG: KASAN: {kind}; {op} of size {size} at {ptr:#x}")

    def save(self) -> Any:
        return (super().save(), self._sh().save(), list(self.quarantine), self.q_size)

    def restore(self, state: Any) -> None:
        base, sh, q, qs = state
        super().restore(base)
        self._sh().restore(sh)
        self.quarantine = deque(q)
        self.q_size = qs

    def describe(self) -> str:
        return f"{super().describe()}, quarantine {self.limit} bytes"


class TagKasan(_KasanBase):
    """Shared tag-based mechanics; subclasses fix the tag width and the check."""

    #: Random tags are drawn from [tag_min, tag_max] (inclusive).
    tag_min: ClassVar[int] = 0x00
    tag_max: ClassVar[int] = 0xFD
    #: Compare this many low bits of the tags (8 for SW_TAGS, 4 for MTE).
    tag_bits: ClassVar[int] = 8
    mode: str = "sync"
    report_delay: int = 0

    def __init__(self, *, fault: str = "report", multi_shot: bool = False) -> None:
        super().__init__(fault=fault, multi_shot=multi_shot)
        self.tags: _Store | None = None
        self.page_tag: dict[int, int] = {}
        self.tcf_off: set[int] = set()
        self.pending: list[tuple[str, int]] = []
        self.slot_tag: dict[int, int] = {}
        self._tag_buf: list[int] = []
        self._tag_rng: object = None

    def install(self, env: AttackEnv) -> None:
        self.tags = _Store(env.k.machine.page_shift, 4, KASAN_TAG_INVALID)
        env.hook_page_allocator(self)
        env.hook_new_slabs(self)

    def _tg(self) -> _Store:
        assert self.tags is not None, "defense not installed"
        return self.tags

    def random_tag(self, env: AttackEnv) -> int:
        """``kasan_random_tag()``: uniform over [tag_min, tag_max].

        Draws come from the trial's generator in blocks of 256 (one numpy call
        instead of one per allocation); the buffer belongs to one generator
        and is emptied when another one (the next trial's) is in use, so no
        draw crosses from one trial into another.
        """
        buf = self._tag_buf
        rng = env.rng
        if rng is not self._tag_rng:
            buf.clear()
            self._tag_rng = rng
        if not buf:
            buf.extend(env.rng.integers(self.tag_min, self.tag_max + 1, size=256).tolist())
            buf.reverse()
        return int(buf.pop())

    def slab_alloc(
        self, env: AttackEnv, addr: int, pa: int, size: int, slot: int, cache: str
    ) -> int:
        if cache in env.index_tagged_caches:
            # ctor / SLAB_TYPESAFE_BY_RCU caches: SLUB draws the slot's tag once, when the
            # slab is created, and reuses it for every allocation of the slot [R35].  The
            # model draws it at the slot's first allocation in this slab (the draws are
            # independent, so the distribution is the same).
            tag = self.slot_tag.get(pa, -1)
            if tag < 0:
                tag = self.random_tag(env)
                self.slot_tag[pa] = tag
        else:
            tag = self.random_tag(env)
        self._tg().set_range(pa, (size + 15) & ~15, tag)
        return set_tag(canonical(addr), tag)

    def slab_free(
        self, env: AttackEnv, ptr: int, pa: int, size: int, slot: int, cache: str
    ) -> bool:
        if cache not in env.index_tagged_caches:
            self._tg().set_range(pa, (size + 15) & ~15, KASAN_TAG_INVALID)
        return True

    def page_alloc(self, env: AttackEnv, pfn: int, order: int, gfp: int) -> None:
        if gfp & _GFP_SKIP_KASAN:
            for p in range(pfn, pfn + (1 << order)):
                self.page_tag[p] = KASAN_TAG_KERNEL
            return
        tag = self.random_tag(env)
        self._tg().set_pages(pfn, 1 << order, tag)
        for p in range(pfn, pfn + (1 << order)):
            self.page_tag[p] = tag

    def page_free(self, env: AttackEnv, pfn: int, order: int) -> None:
        self._tg().set_pages(pfn, 1 << order, KASAN_TAG_INVALID)
        lo, hi = pfn << env.k.machine.page_shift, (pfn + (1 << order)) << env.k.machine.page_shift
        for p in range(pfn, pfn + (1 << order)):
            self.page_tag.pop(p, None)
        if self.slot_tag:
            self.slot_tag = {a: t for a, t in self.slot_tag.items() if not lo <= a < hi}

    def slab_page(self, env: AttackEnv, pfn: int, order: int) -> None:
        """``kasan_poison_slab``: the new slab's pages get page tag 0xFF, memory poisoned."""
        self._tg().set_pages(pfn, 1 << order, KASAN_TAG_INVALID)
        for p in range(pfn, pfn + (1 << order)):
            self.page_tag[p] = KASAN_TAG_KERNEL

    def page_pointer(self, env: AttackEnv, pfn: int) -> int:
        """``page_to_virt()``: the linear-map address with the page's current tag [R33]."""
        tag = self.page_tag.get(pfn, KASAN_TAG_KERNEL)
        return set_tag(env.lm_addr(pfn), tag)

    def _mismatch(self, env: AttackEnv, ptr: int, size: int) -> tuple[int, int] | None:
        ptag = pointer_tag(ptr)
        mask = (1 << self.tag_bits) - 1
        if ptag & mask == KASAN_TAG_KERNEL & mask:
            return None  # match-all
        pa = env.pa_of_or_none(ptr)
        if pa is None:
            return None
        for mtag in self._tg().values(pa, size):
            if mtag & mask != ptag & mask:
                return ptag, mtag
        return None

    def check_access(self, env: AttackEnv, ptr: int, size: int, write: bool) -> None:
        if env.k.cpu.cpu_id in self.tcf_off:
            return
        self.nr_checks += 1
        mm = self._mismatch(env, ptr, size)
        if mm is None:
            return
        ptag, mtag = mm
        op = "Write" if write else "Read"
        what = (
            f"BUG: KASAN: invalid-access; {op} at {ptr:#x} "
            f"(pointer tag {ptag:#04x}, memory tag {mtag:#04x})"
        )
        sync = self.mode == "sync" or (self.mode == "asymm" and not write)
        if sync:
            self._report_tag_fault(env, what)
        else:
            # TFSR_EL1.TF1 set; the access completes; reported at the next kernel entry/exit.
            self.pending.append((what, self.report_delay))

    def _report_tag_fault(self, env: AttackEnv, what: str) -> None:
        self._report(env, what)
        if self.tag_bits == 4 and not self.multi_shot:
            # arm64 __do_kernel_fault: tag checking off on this CPU after the report.
            self.tcf_off.add(env.k.cpu.cpu_id)

    def checkpoint(self, env: AttackEnv) -> None:
        """``mte_check_tfsr_entry/exit``: report an async fault once its delay has passed."""
        if not self.pending:
            return
        keep: list[tuple[str, int]] = []
        for what, delay in self.pending:
            if delay > 0:
                keep.append((what, delay - 1))
            else:
                self._report(env, what + " [async: TFSR_EL1]")
        self.pending = keep

    def save(self) -> Any:
        return (
            super().save(),
            self._tg().save(),
            dict(self.page_tag),
            set(self.tcf_off),
            list(self.pending),
            dict(self.slot_tag),
        )

    def restore(self, state: Any) -> None:
        base, tg, pt, off, pend, st = state
        super().restore(base)
        self._tg().restore(tg)
        self.page_tag = dict(pt)
        self.tcf_off = set(off)
        self.pending = list(pend)
        self.slot_tag = dict(st)
        self._tag_buf = []
        self._tag_rng = None

    def compile_replay(
        self, env: AttackEnv, calls: Sequence[tuple[str, tuple[Any, ...]]]
    ) -> Callable[[], list[Any]] | None:
        """A vectorised equivalent of calling the hooks ``calls`` in order (None: unsupported).

        For :mod:`~kpkeys_sim.security.prefix_replay`: ``calls`` are
        ``(hook name, arguments after env)`` and the defense is in the state
        they start from.  They are simulated here once with symbolic tags
        (code ``c < 256`` is the tag value ``c``, code ``256 + j`` the
        ``j``-th tag :meth:`random_tag` draws).  The returned function, run
        from that same state, draws the tags from ``env.rng`` exactly as
        :meth:`random_tag` does (blocks of 256), installs the resulting tag
        storage, page tags, slot tags and tag buffer, and returns each
        call's result.  The replay checks it against calling the hooks.
        """
        cls = type(self)
        for name in (
            "random_tag",
            "slab_alloc",
            "slab_free",
            "page_alloc",
            "page_free",
            "slab_page",
            "checkpoint",
        ):
            if getattr(cls, name) is not getattr(TagKasan, name):
                return None
        if cls.slab_release is not Defense.slab_release:
            return None
        tg = self._tg()
        sym = _Store(tg.page_shift, tg.granule_shift, tg.default, np.int32)
        sym.pages = {p: a.astype(np.int32) for p, a in tg.pages.items()}
        page_tag = dict(self.page_tag)
        slot_tag = dict(self.slot_tag)
        tagged = frozenset(env.index_tagged_caches)
        shift = env.k.machine.page_shift
        ntags = 0
        out: list[Any] = []
        ptrs: list[tuple[int, int, int]] = []  # (call index, untagged pointer, tag code)
        for i, (name, args) in enumerate(calls):
            if name == "slab_alloc":
                addr, pa, size, _slot, cache = args
                if cache in tagged:
                    code = slot_tag.get(pa, -1)
                    if code < 0:
                        code = 256 + ntags
                        ntags += 1
                        slot_tag[pa] = code
                else:
                    code = 256 + ntags
                    ntags += 1
                sym.set_range(pa, (size + 15) & ~15, code)
                ptrs.append((i, set_tag(canonical(addr), 0), code))
                out.append(None)
            elif name == "slab_free":
                _ptr, pa, size, _slot, cache = args
                if cache not in tagged:
                    sym.set_range(pa, (size + 15) & ~15, KASAN_TAG_INVALID)
                out.append(True)
            elif name == "page_alloc":
                pfn, order, gfp = args
                if gfp & _GFP_SKIP_KASAN:
                    for p in range(pfn, pfn + (1 << order)):
                        page_tag[p] = KASAN_TAG_KERNEL
                else:
                    code = 256 + ntags
                    ntags += 1
                    sym.set_pages(pfn, 1 << order, code)
                    for p in range(pfn, pfn + (1 << order)):
                        page_tag[p] = code
                out.append(None)
            elif name == "page_free":
                pfn, order = args
                sym.set_pages(pfn, 1 << order, KASAN_TAG_INVALID)
                lo, hi = pfn << shift, (pfn + (1 << order)) << shift
                for p in range(pfn, pfn + (1 << order)):
                    page_tag.pop(p, None)
                if slot_tag:
                    slot_tag = {a: t for a, t in slot_tag.items() if not lo <= a < hi}
                out.append(None)
            elif name == "slab_page":
                pfn, order = args
                sym.set_pages(pfn, 1 << order, KASAN_TAG_INVALID)
                for p in range(pfn, pfn + (1 << order)):
                    page_tag[p] = KASAN_TAG_KERNEL
                out.append(None)
            elif name == "slab_release":
                out.append([])
            elif name == "checkpoint" and not self.pending:
                out.append(None)
            else:
                return None
        nblocks = -(-ntags // 256)
        lo_tag, hi_tag = self.tag_min, self.tag_max + 1
        lut = np.zeros(256 + 256 * nblocks, dtype=np.uint8)  # code -> tag; [256:] are drawn
        lut[:256] = np.arange(256)
        page_pfns = tuple(sym.pages)
        # One gather for every page; the store gets one row (a view) per page.
        page_codes = (
            np.stack(list(sym.pages.values()))
            if sym.pages
            else np.zeros((0, tg.per_page), dtype=np.int32)
        )
        page_tag_keys = tuple(page_tag)
        page_tag_codes = np.array(list(page_tag.values()), dtype=np.int64)
        slot_tag_keys = tuple(slot_tag)
        slot_tag_codes = np.array(list(slot_tag.values()), dtype=np.int64)
        ptr_index = tuple(i for i, _, _ in ptrs)
        ptr_bases = np.array([b for _, b, _ in ptrs], dtype=np.uint64)
        ptr_codes = np.array([c for _, _, c in ptrs], dtype=np.int64)
        shift56 = np.uint64(56)

        def run() -> list[Any]:
            if ntags:
                rng = env.rng
                vals: list[int] = []
                for b in range(nblocks):
                    block = rng.integers(lo_tag, hi_tag, size=256)
                    lut[256 + 256 * b : 512 + 256 * b] = block
                    vals.extend(block.tolist())
                rest = vals[ntags:]
                rest.reverse()
                self._tag_buf = rest
                self._tag_rng = rng
            tg.pages = dict(zip(page_pfns, lut[page_codes], strict=True))
            self.page_tag = dict(zip(page_tag_keys, lut[page_tag_codes].tolist(), strict=True))
            self.slot_tag = dict(zip(slot_tag_keys, lut[slot_tag_codes].tolist(), strict=True))
            res = list(out)
            tagged_ptrs = ptr_bases | (lut[ptr_codes].astype(np.uint64) << shift56)
            deque(map(res.__setitem__, ptr_index, tagged_ptrs.tolist()), maxlen=0)
            return res

        return run


@register_defense
class SwTagsKasan(TagKasan):
    """Software tag-based KASAN: 8-bit tags, compiler-instrumented checks."""

    name: ClassVar[str] = "kasan-sw-tags"
    title: ClassVar[str] = "software tag-based KASAN: 8-bit tags (254 random), 0xFF match-all"
    spec: ClassVar[str] = "threats-and-peers.md §1.6; kasan.rst [R30], kasan-tags.h [R31]"
    detector: ClassVar[str] = "kasan-sw-tags"
    tag_min: ClassVar[int] = 0x00
    tag_max: ClassVar[int] = 0xFD
    tag_bits: ClassVar[int] = 8


@register_defense
class HwTagsKasan(TagKasan):
    """Hardware tag-based KASAN (MTE) with the KASAN defaults: sync, kasan.fault=report."""

    name: ClassVar[str] = "kasan-hw-tags"
    title: ClassVar[str] = "hardware tag-based KASAN (MTE): 4-bit tags (14 random), sync, report"
    spec: ClassVar[str] = "threats-and-peers.md §1.6; kasan.rst [R30], kasan-tags.h [R31]"
    detector: ClassVar[str] = "kasan-hw-tags"
    tag_min: ClassVar[int] = 0xF0
    tag_max: ClassVar[int] = 0xFD
    tag_bits: ClassVar[int] = 4

    def __init__(
        self,
        *,
        mode: str = "sync",
        fault: str = "report",
        multi_shot: bool = False,
        report_delay: int = 0,
    ) -> None:
        super().__init__(fault=fault, multi_shot=multi_shot)
        if mode not in ("sync", "async", "asymm"):
            raise ValueError(f"bad kasan.mode {mode!r}: must be sync, async or asymm")
        if report_delay < 0:
            raise ValueError(f"bad report_delay {report_delay!r}: must be >= 0")
        self.mode = mode
        #: Async faults: further kernel entries/exits before the latched fault is reported.
        self.report_delay = report_delay

    def describe(self) -> str:
        return f"{super().describe()}, kasan.mode={self.mode}"
