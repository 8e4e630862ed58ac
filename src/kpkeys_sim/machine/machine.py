"""The simulated machine: memory, CPUs with their TLBs, and the checked access path.

Every access the modelled kernel makes to memory goes through
:meth:`Machine.translate` on an explicit CPU: TLB lookup (or walk), then the
architecture's permission check with that CPU's *effective* pkey register.
There is no other way for kernel code to reach memory — in particular a
page-table page is written through its linear-map alias with
:meth:`Machine.store_pt_entries`, which checks write permission on that alias
once per page (the pkey is per page, so one check per page is exact).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from kpkeys_sim.machine.arch import get_arch
from kpkeys_sim.machine.arch.base import PkeyArch, Verdict
from kpkeys_sim.machine.cpu import CPU
from kpkeys_sim.machine.events import (
    DSB,
    PT_WRITE,
    TLBI_ALL,
    TLBI_ASID,
    TLBI_VA,
    TRANSLATION_MISS,
    WALK_ACCESS,
    Instrument,
    Instruments,
)
from kpkeys_sim.machine.memory import PhysicalMemory, U64Array
from kpkeys_sim.machine.mmu import (
    Fault,
    Geometry,
    _TranslationFault,
    arm64_translation_esr,
    check_leaf,
    walk,
    x86_not_present_error_code,
)
from kpkeys_sim.machine.tlb import ATTR_KEY_FREE_SHIFT, GLOBAL_ASID, TLB, TlbEntry

__all__ = ["Machine"]

#: Bits of a verdict key (:meth:`Machine.check`) above the entry's ``attr_key``:
#: the access kind in bits [19:18], the EL in bits [21:20], ``unprivileged`` in bit 22.
_ACCESS_BITS = {
    a: code << ATTR_KEY_FREE_SHIFT for a, code in (("R", 0), ("W", 1), ("X", 2), ("RW", 3))
}
_EL_SHIFT = ATTR_KEY_FREE_SHIFT + 2
_UNPRIV_SHIFT = ATTR_KEY_FREE_SHIFT + 4
#: The verdict every allowed access shares in the verdict tables.
_ALLOW = Verdict("allow")


class Machine:
    """A machine of ``nr_cpus`` CPUs with ``ram_size`` bytes of RAM and ``arch`` pkeys."""

    def __init__(
        self,
        *,
        arch: str = "arm64",
        page_size: int = 4096,
        ram_size: int = 1 << 30,
        nr_cpus: int = 1,
        phys_base: int = 0x4000_0000,
        has_pkeys: bool = True,
        instruments: Iterable[Instrument] = (),
    ) -> None:
        if nr_cpus < 1:
            raise ValueError(f"nr_cpus must be at least 1, got {nr_cpus}")
        self.arch: PkeyArch = get_arch(arch)
        if page_size not in self.arch.page_sizes:
            raise ValueError(f"{arch} does not support {page_size}-byte pages")
        self.has_pkeys = has_pkeys
        self.geometry = Geometry.for_arch(arch, page_size)
        self.mem = PhysicalMemory(ram_size, page_size, phys_base)
        self.instruments = Instruments(instruments)
        self.cpus = [
            CPU(i, self.instruments, self.arch.reg_write_needs_sync) for i in range(nr_cpus)
        ]
        self.tlbs = [TLB(self.geometry.leaf_shifts) for _ in range(nr_cpus)]
        self.page_size = page_size
        self.page_shift = self.geometry.page_shift
        #: Optional stage-2 permission check ``(cpu, va, pa, access, el) -> None`` that may
        #: raise; consulted by :meth:`translate` after the stage-1 check (None: no stage 2).
        self.stage2: Callable[[CPU, int, int, str, int], None] | None = None
        #: Verdicts of :func:`check_leaf`, one table per value of the CPU system
        #: registers the check reads (``CPU.sysregs``), each keyed by ``(the entry's
        #: attr_key with the access kind, EL and unprivileged packed above it, the
        #: effective pkey register, the effective user pkey register)``.  The check is
        #: a pure function of these (and of the machine's fixed ``fmt``/``has_pkeys``),
        #: so the cache is exact; the output address is not in the key, so the tables
        #: stay as small as the set of distinct attribute/register combinations.  Each
        #: CPU caches the table of its current system registers (``CPU.verdicts``).
        self._verdicts: dict[tuple[int, ...], dict[tuple[int, int, int], Verdict]] = {}

    @property
    def fmt(self) -> str:
        """Translation-table format name ("arm64" or "x86")."""
        return self.geometry.fmt

    def emit(self, kind: str, n: int = 1) -> None:
        """Report an event to the instruments."""
        ins = self.instruments
        if ins.active:
            ins.emit(kind, n)

    # --- translation -------------------------------------------------------------------

    def lookup(self, cpu: CPU, va: int, access: str = "R", el: int | None = None) -> TlbEntry:
        """The TLB entry for ``va`` on ``cpu``, walking the tables on a miss.

        Raises :class:`Fault` (translation, reported for ``access``) if the walk
        finds no valid leaf.
        """
        e = self.tlbs[cpu.cpu_id].lookup(va, cpu.asid if va >> 63 == 0 else GLOBAL_ASID)
        return e if e is not None else self._walk_fill(cpu, va, access, el)

    def _walk_fill(self, cpu: CPU, va: int, access: str, el: int | None) -> TlbEntry:
        """Walk the tables for ``va`` and fill ``cpu``'s TLB (a :meth:`lookup` miss)."""
        kernel = bool(va >> 63)
        tlb = self.tlbs[cpu.cpu_id]
        root = cpu.ttbr1 if kernel else cpu.ttbr0
        self.instruments.emit(TRANSLATION_MISS)
        try:
            w, reads = walk(self.mem, self.geometry, root, va)
        except _TranslationFault as tf:
            self.instruments.emit(WALK_ACCESS, tf.level - self.geometry.start_level + 1)
            el = cpu.el if el is None else el
            raise self._translation_fault(cpu, va, access, el, tf.level) from None
        self.instruments.emit(WALK_ACCESS, reads)
        e = TlbEntry(w.desc, w.level, w.size_shift, w.oa_base, w.us, w.rw)
        tag = GLOBAL_ASID if kernel or not self._non_global(w.desc) else cpu.asid
        tlb.fill(va, tag, e)
        return e

    def _non_global(self, desc: int) -> bool:
        if self.fmt == "x86":
            return not desc & 0x100  # G bit
        return bool(desc & 0x800)  # nG bit

    def _translation_fault(self, cpu: CPU, va: int, access: str, el: int, level: int) -> Fault:
        syn = (
            x86_not_present_error_code(el, access)
            if self.fmt == "x86"
            else arm64_translation_esr(el, access, level)
        )
        f = Fault(
            kind="translation",
            result="translation_fault",
            va=va,
            access=access,
            el=el,
            level=level,
            pkey=None,
            syndrome=syn,
            cpu_id=cpu.cpu_id,
        )
        self.instruments.fault(f)
        return f

    def translate(
        self, cpu: CPU, va: int, access: str, *, el: int | None = None, unprivileged: bool = False
    ) -> int:
        """Physical address for ``access`` ("R", "W", "X", "RW") at ``va`` on ``cpu``.

        Raises :class:`Fault` when the walk fails or the access check denies.
        """
        if el is None:
            el = cpu.el
        # TLB.lookup(va, asid), inlined (hot path: every checked access)
        tlb = self.tlbs[cpu.cpu_id]
        buckets = tlb._buckets
        g = buckets.get(GLOBAL_ASID)
        asid = cpu.asid if va >> 63 == 0 else GLOBAL_ASID
        a = buckets.get(asid) if asid != GLOBAL_ASID else None
        e = None
        for i, shift in tlb._shifts:
            vpn = va >> shift
            e = g[i].get(vpn) if g is not None else None
            if e is None and a is not None:
                e = a[i].get(vpn)
            if e is not None:
                tlb.hits += 1
                break
        else:
            tlb.misses += 1
            e = self._walk_fill(cpu, va, access, el)
        # check(), inlined for an allowed access in the verdict cache; anything
        # else (a cache miss, a denial) goes through check() itself.
        table = cpu.verdicts
        if (
            table is None
            or table.get(
                (
                    e.attr_key
                    | _ACCESS_BITS[access]
                    | el << _EL_SHIFT
                    | unprivileged << _UNPRIV_SHIFT,
                    cpu.pkey_reg_effective,
                    cpu.user_pkey_reg_effective,
                )
            )
            is not _ALLOW
        ):
            self.check(cpu, e, va, access, el, unprivileged)
        pa = e.oa_base + (va & ((1 << e.size_shift) - 1))
        if self.stage2 is not None:
            self.stage2(cpu, va, pa, access, el)
        return pa

    def check(
        self, cpu: CPU, e: TlbEntry, va: int, access: str, el: int, unprivileged: bool = False
    ) -> None:
        """Raise :class:`Fault` if ``access`` through entry ``e`` is denied on ``cpu``."""
        table = cpu.verdicts
        if table is None:
            table = self._verdict_table(cpu)
        key = (
            e.attr_key | _ACCESS_BITS[access] | el << _EL_SHIFT | unprivileged << _UNPRIV_SHIFT,
            cpu.pkey_reg_effective,
            cpu.user_pkey_reg_effective,
        )
        v = table.get(key)
        if v is _ALLOW:
            return
        if v is None:
            v = self._verdict(cpu, e, access, el, unprivileged)
            table[key] = v
            if v is _ALLOW:
                return
        self._permission_fault(cpu, e, va, access, el, v)

    def _verdict_table(self, cpu: CPU) -> dict[tuple[int, int, int], Verdict]:
        """The verdict table of ``cpu``'s current system registers, cached in ``cpu.verdicts``."""
        table = self._verdicts.get(cpu.sysregs)
        if table is None:
            table = self._verdicts[cpu.sysregs] = {}
        cpu.verdicts = table
        return table

    def _verdict(self, cpu: CPU, e: TlbEntry, access: str, el: int, unprivileged: bool) -> Verdict:
        """:func:`check_leaf` for ``e`` on ``cpu`` (allowed verdicts are :data:`_ALLOW`)."""
        has = self.has_pkeys
        v = check_leaf(
            self.fmt,
            e.desc,
            e.level,
            e.us,
            e.rw,
            access,
            el,
            unprivileged,
            pkey_reg=cpu.pkey_reg_effective,
            user_pkey_reg=cpu.user_pkey_reg_effective,
            poe=cpu.poe if has else 0,
            e0poe=cpu.e0poe if has else 0,
            pie=cpu.pie,
            pir=cpu.pir,
            pire0=cpu.pire0,
            wxn=cpu.wxn,
            pan=cpu.pan,
            wp=cpu.wp,
            pke=cpu.pke if has else 0,
            pks=cpu.pks if has else 0,
        )
        return _ALLOW if v.allowed else v

    def _permission_fault(
        self, cpu: CPU, e: TlbEntry, va: int, access: str, el: int, v: Verdict
    ) -> None:
        f = Fault(
            kind="permission",
            result=v.result,
            va=va,
            access=access,
            el=el,
            level=e.level,
            pkey=self.arch.desc_pkey(e.desc),
            syndrome=v.syndrome or 0,
            cpu_id=cpu.cpu_id,
            desc=e.desc,
        )
        self.instruments.fault(f)
        raise f

    # --- checked loads and stores ------------------------------------------------------

    def load_u64(self, cpu: CPU, va: int) -> int:
        """A checked 64-bit load."""
        return self.mem.read_u64(self.translate(cpu, va, "R"))

    def store_u64(self, cpu: CPU, va: int, value: int) -> None:
        """A checked 64-bit store."""
        self.mem.write_u64(self.translate(cpu, va, "W"), value)

    def load_bytes(self, cpu: CPU, va: int, n: int) -> bytes:
        """A checked load of ``n`` bytes (within one page)."""
        return self.mem.read_bytes(self.translate(cpu, va, "R"), n)

    def store_bytes(self, cpu: CPU, va: int, data: bytes) -> None:
        """A checked store of ``data`` (within one page)."""
        self.mem.write_bytes(self.translate(cpu, va, "W"), data)

    def load_table(self, cpu: CPU, va: int) -> U64Array:
        """A checked read of the whole page containing ``va`` as 64-bit entries.

        One permission check for the page.  The returned array is the frame's
        contents (read-only view); copy it before the frame is written again if
        the old values are needed.
        """
        pa = self.translate(cpu, va, "R")
        view = self.mem.frame_ro(pa >> self.page_shift).view()
        view.setflags(write=False)
        return view

    def load_entries(self, cpu: CPU, va: int, n: int) -> U64Array:
        """A checked read of ``n`` consecutive 64-bit entries from ``va`` (within one page).

        One permission check for the page, like :meth:`load_table`; the result
        is a copy (no read-only view of the frame is made).
        """
        pa = self.translate(cpu, va, "R")
        mem = self.mem
        frame = mem._frames.get(pa >> self.page_shift)  # mem.frame_ro(), inlined
        if frame is None:
            frame = mem.frame_ro(pa >> self.page_shift)
        i = (pa & (self.page_size - 1)) >> 3
        if i + n > len(frame):
            raise ValueError(f"{n} entries at {va:#x} cross a page boundary")
        return frame[i : i + n].copy()

    def store_pt_entries(self, cpu: CPU, va: int, values: U64Array | int, count: int = 1) -> None:
        """A checked store of page-table entries starting at ``va`` (within one page).

        ``values`` is an array (its length is the number of entries) or one
        value repeated ``count`` times.  One write-permission check on the
        page's alias; emits ``pt_write`` with the number of entries.
        """
        pa = self.translate(cpu, va, "W")
        mem = self.mem
        frame = mem._frames.get(pa >> self.page_shift)  # mem.frame(), inlined
        if frame is None:
            frame = mem.frame(pa >> self.page_shift)
        i = (pa & (self.page_size - 1)) >> 3
        n = len(values) if isinstance(values, np.ndarray) else count
        if i + n > len(frame):
            raise ValueError(f"{n} entries at {va:#x} cross a page boundary")
        frame[i : i + n] = values
        ins = self.instruments
        if ins.active:
            ins.emit(PT_WRITE, n)

    def clear_page(self, cpu: CPU, va: int) -> None:
        """A checked store of zeros over the whole page containing ``va`` (``clear_page``)."""
        pa = self.translate(cpu, va, "W")
        self.mem.zero_frames(pa >> self.page_shift)

    def copy_page(self, cpu: CPU, dst_va: int, src_va: int) -> None:
        """A checked ``copy_page``: read permission on the source, write on the destination."""
        src = self.translate(cpu, src_va, "R")
        dst = self.translate(cpu, dst_va, "W")
        self.mem.copy_frame(dst >> self.page_shift, src >> self.page_shift)

    # --- TLB maintenance -----------------------------------------------------------------

    def dsb(self) -> None:
        """DSB ISH: counted (ordering itself is implicit in the sequential model)."""
        self.instruments.emit(DSB)

    def tlbi_va(self, va: int, asid: int | None = None) -> None:
        """Broadcast TLBI by VA (``asid`` None: any ASID, i.e. TLBI VAAE1IS/VAALE1IS)."""
        for t in self.tlbs:
            t.invalidate_va(va, asid)
        self.instruments.emit(TLBI_VA)

    def tlbi_asid(self, asid: int) -> None:
        """Broadcast TLBI ASIDE1IS."""
        for t in self.tlbs:
            t.invalidate_asid(asid)
        self.instruments.emit(TLBI_ASID)

    def tlbi_all(self) -> None:
        """Broadcast TLBI VMALLE1IS."""
        for t in self.tlbs:
            t.invalidate_all()
        self.instruments.emit(TLBI_ALL)
