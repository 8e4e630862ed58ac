"""Calibration tables: the price of each event kind, per target CPU.

A :class:`CalibrationTable` is a set of named :class:`Constant` values for
one target CPU.  The cost model (:mod:`kpkeys_sim.analysis.cost`) multiplies
event counts by these constants and nothing else; the TLB-reach model
(:mod:`kpkeys_sim.analysis.tlb_reach`) reads its TLB geometry and walk costs
from the same table.

Rules (``docs/calibration.md`` lists every constant with its reasoning):

* Every constant cites a public source, or is flagged ``assumption=True``
  with a rationale saying where the value comes from.  Sources marked
  ``[U]`` are quoted from memory of a public document and have not been
  re-checked against it.
* No constant is fitted to the published kpkeys overhead figures: those are
  held out to validate the model (spec kpkeys-series.md §6).  The values
  below were chosen before any model result was looked at.
* Constants are exact decimals (``int`` or a ``str`` decimal such as
  ``"0.5"``), stored as :class:`fractions.Fraction` so that pricing is exact
  and reproducible; ``kpkeys-sim bench --sensitivity`` scales each one by
  0.5 and 2 (:meth:`CalibrationTable.scaled`).

Targets:

* ``arm64-poe``: a Neoverse-V1-class core (AWS Graviton3, the platform of
  the series' benchmarks, spec §6.1) with FEAT_S1POE assumed present.  The
  pkey register write is ``MSR POR_EL1`` followed by an ``ISB``.
* ``x86-pks``: a Golden-Cove-class core (Sapphire Rapids, which implements
  PKS) where the register write is ``WRMSR IA32_PKRS`` with no barrier
  (spec pkeys-hardware.md §3.2, §5.2).  It prices the counts of the x86-64
  kernel model (``bench.TARGET_ARCH``), including the events only x86 emits:
  ``tlb_shootdown_ipi`` (an assumption; 0 on arm64, which never emits it)
  and the CPA events, priced with the arm64 ``change_memory_common`` and
  ``linear_map_split`` constants (``cost.PRICES``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction

from kpkeys_sim.errors import ToolError

__all__ = [
    "CALIBRATIONS",
    "CalibrationTable",
    "Constant",
    "calibration_markdown",
    "get_calibration",
]


@dataclass(frozen=True, slots=True)
class Constant:
    """One calibration constant: value, unit, and where the value comes from."""

    name: str
    value: Fraction
    unit: str
    source: str
    assumption: bool
    rationale: str

    def as_dict(self) -> dict[str, object]:
        """JSON form: the value as an int when integral, else as a decimal string."""
        v: object = int(self.value) if self.value.denominator == 1 else str(float(self.value))
        return {
            "value": v,
            "unit": self.unit,
            "source": self.source,
            "assumption": self.assumption,
            "rationale": self.rationale,
        }


@dataclass(frozen=True, slots=True)
class CalibrationTable:
    """The constants of one target CPU, by name."""

    name: str
    cpu: str
    arch: str  # the model's machine architecture name ("arm64" or "x86")
    constants: Mapping[str, Constant] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Fraction:
        return self.constants[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(self.constants)

    def scaled(self, name: str, factor: Fraction) -> CalibrationTable:
        """A copy with constant ``name`` multiplied by ``factor`` (sensitivity analysis)."""
        c = self.constants[name]
        consts = dict(self.constants)
        consts[name] = replace(c, value=c.value * factor)
        return replace(self, constants=consts)

    def as_dict(self) -> dict[str, object]:
        """JSON form of the table."""
        return {
            "target": self.name,
            "cpu": self.cpu,
            "constants": {n: c.as_dict() for n, c in sorted(self.constants.items())},
        }


def _c(
    name: str, value: int | str, unit: str, source: str, *, assumption: bool, rationale: str
) -> Constant:
    return Constant(name, Fraction(value), unit, source, assumption, rationale)


# --- sources ---------------------------------------------------------------------------------

_V1_TRM = (
    "Arm Neoverse V1 Technical Reference Manual (Arm 101427), Memory Management Unit chapter: "
    "48-entry fully associative L1 data TLB, 2048-entry 8-way L2 TLB [U]"
)
_V1_SOG = "Arm Neoverse V1 Software Optimization Guide (Arm PJDOC-466751330-9685) [U]"
_A77_PIPE = (
    "AnandTech, 'Arm's Cortex-A77 Microarchitecture' (2019) and Cortex-X1 coverage (2020): "
    "~10-11 cycle minimum branch-mispredict penalty for the pipeline family Neoverse V1 "
    "derives from [U]"
)
_INGO = (
    "Ingo Molnar, linux-mm, 8 Jun 2015, 'Re: [PATCH 0/3] TLB flush multiple pages per IPI v5' "
    "(<20150608200308.GA16978@gmail.com>), spec pkeys-hardware.md §5.2 [M-ingo]"
)
_BROUER = (
    "Jesper Dangaard Brouer, page allocator micro-benchmarks (page_bench01, 'Page allocator "
    "bottlenecks', MM summit 2016/2017 slides): order-0 alloc_pages+__free_pages fast path "
    "~277 cycles on x86 [U]"
)
_GLC_OPT = (
    "Intel 64 and IA-32 Architectures Optimization Reference Manual, Golden Cove "
    "microarchitecture: L1 DTLB 96 entries (4K) / 32 (2M/4M) / 8 (1G), STLB 2048 entries "
    "(4K+2M) and 1024 (1G) [U]"
)
_PKS = (
    "Ira Weiny, x86 PKS series v8/v9 (2022, <20220127175505.851391-1-ira.weiny@intel.com>): "
    "WRMSR to IA32_PKRS is not serialising, WRPKRU-like ordering; no cycle figure "
    "(spec pkeys-hardware.md §3.2, §5.2 [M-pks])"
)
_WRPKRU = (
    "WRPKRU SDM page (felixcloutier.com/x86/WRPKRU) for ordering; secondary figures of "
    "'11-260' and '~20-26' cycles per WRPKRU quoted in spec pkeys-hardware.md §5.2 [U]"
)
_ISB_GAP = "spec pkeys-hardware.md §5.1: no authoritative published ISB cycle count [GAP]"
_TLBI_GAP = "spec pkeys-hardware.md §5.1: no published arm64 TLBI cycle figures [GAP]"
_NONE = "no published figure"
_REDIS = (
    "Redis documentation, 'Diagnosing latency issues', section 'Latency generated by "
    "fork': 6.9 GB RSS forked in 62 ms on a Xeon @ 2.27 GHz (9 ms per GB) [U]"
)
_V1_L2 = (
    "Arm Neoverse V1 Technical Reference Manual (Arm 101427), L2 memory system chapter; "
    "Chips and Cheese, 'Graviton 3: First Impressions' (2022): L2 load-to-use latency "
    "of the order of 10-13 cycles [U]"
)
_GLC_L2 = (
    "Intel 64 and IA-32 Architectures Optimization Reference Manual, Golden Cove "
    "microarchitecture: L2 load-to-use latency of ~15-16 cycles [U]"
)


# --- constants shared in form by both targets --------------------------------------------


def _common(
    *,
    pt_entry: int | str,
    page_zero: int,
    l1: int,
    l1_large: int,
    l2: int,
    l2_1g: int,
    l2_hit: int,
    walk_access: int,
    pt_read: int,
    l2_src: str,
    tlb_src: str,
    core_src: str,
    contig: int,
) -> list[Constant]:
    """Constants whose meaning is the same on both targets (values passed per target)."""
    return [
        _c(
            "pt_entry_write",
            pt_entry,
            "cycles per page-table entry written",
            core_src,
            assumption=True,
            rationale=(
                "per-entry work of a page-table helper loop (load the old entry, compute the "
                "new one, store it, advance): ~8-12 simple instructions at the core's "
                "sustained 4-5 IPC on such loops gives 2-3 cycles; the guard, barrier and TLB "
                "costs are priced separately"
            ),
        ),
        _c(
            "page_zero",
            page_zero,
            "cycles per base page zeroed",
            _NONE,
            assumption=True,
            rationale=(
                "a 4 KiB clear_page (DC ZVA / REP STOSB) streams to L2 or beyond; taking a "
                "sustained 16 bytes/cycle (between L1 store bandwidth of 32-64 B/cycle and "
                "single-core DRAM bandwidth of ~8 B/cycle) gives 256 cycles"
            ),
        ),
        _c(
            "page_copy",
            2 * page_zero,
            "cycles per base page copied (copy_page of a COW break)",
            _NONE,
            assumption=True,
            rationale="a read stream and a write stream of 4 KiB: twice page_zero",
        ),
        _c(
            "page_alloc_call",
            140,
            "cycles per buddy-allocator call (alloc_pages)",
            _BROUER,
            assumption=False,
            rationale="half of the ~277-cycle order-0 alloc+free round trip",
        ),
        _c(
            "page_free_call",
            140,
            "cycles per buddy-allocator free call (__free_pages)",
            _BROUER,
            assumption=False,
            rationale="the other half of the ~277-cycle order-0 alloc+free round trip",
        ),
        _c(
            "slab_op",
            30,
            "cycles per slab object allocation or free",
            _NONE,
            assumption=True,
            rationale=(
                "SLUB fast path: a per-CPU freelist pop/push with a cmpxchg-double, tens of cycles"
            ),
        ),
        _c(
            "l1_dtlb_entries",
            l1,
            "L1 data TLB entries (base-page translations)",
            tlb_src,
            assumption=False,
            rationale="capacity of the first-level data TLB for base pages",
        ),
        _c(
            "l1_dtlb_entries_large",
            l1_large,
            "L1 data TLB entries (block translations, 2 MiB and larger)",
            tlb_src,
            assumption=False,
            rationale="capacity of the first-level data TLB for large translations",
        ),
        _c(
            "l2_tlb_entries",
            l2,
            "L2 (unified) TLB entries for base pages and 2 MiB blocks",
            tlb_src,
            assumption=False,
            rationale="capacity of the second-level TLB",
        ),
        _c(
            "l2_tlb_entries_1g",
            l2_1g,
            "L2 TLB entries for 1 GiB translations",
            tlb_src,
            assumption=False,
            rationale="capacity of the second-level TLB for 1 GiB translations",
        ),
        _c(
            "l2_tlb_hit",
            l2_hit,
            "cycles added by an L1 DTLB miss that hits the L2 TLB",
            _NONE,
            assumption=True,
            rationale=(
                "published latency sweeps (e.g. Chips and Cheese core articles) show a few "
                "extra cycles once the L1 DTLB reach is exceeded; taken as the stated value"
            ),
        ),
        _c(
            "walk_access",
            walk_access,
            "cycles per translation-table access by the hardware walker",
            _NONE,
            assumption=True,
            rationale=(
                "walker reads of kernel tables mostly hit L2 or the system cache; taken as "
                "an L2-to-SLC load latency"
            ),
        ),
        _c(
            "walk_cached_levels",
            2,
            "upper translation levels served by the walk caches",
            _NONE,
            assumption=True,
            rationale=(
                "walk caches hold the top-level table entries of the kernel's hot ranges, "
                "so a walk for a linear-map address reads only the levels below them"
            ),
        ),
        _c(
            "translation_miss",
            10,
            "fixed cycles per L2 TLB miss (walk start/finish, on top of walk accesses)",
            _NONE,
            assumption=True,
            rationale="pipeline cost of starting a walk and refilling the TLBs",
        ),
        _c(
            "kernel_tlb_share",
            "0.5",
            "fraction of TLB capacity available to kernel data",
            _NONE,
            assumption=True,
            rationale=(
                "user and kernel translations share the TLBs; in syscall/fault-heavy "
                "workloads the kernel's data competes with the user working set"
            ),
        ),
        _c(
            "tlb_coalesces_contig",
            contig,
            "1 if a contiguous-hint group is cached as one TLB entry, else 0",
            tlb_src,
            assumption=True,
            rationale=(
                "arm64 cores may cache a contiguous-hint group (16 x 4K = 64 KiB) as one "
                "entry (Arm ARM D8.7 permits it); x86 has no contiguous hint"
            ),
        ),
        _c(
            "context_switch",
            2000,
            "cycles per context switch (excluding the pkey-register work)",
            "lmbench lat_ctx results commonly reported at ~1-3 microseconds on server cores [U]",
            assumption=True,
            rationale="scheduler, switch_mm and register save/restore; ~1 us at 2-3 GHz",
        ),
        _c(
            "linear_map_split",
            200,
            "cycles per linear-map leaf split (split_kernel_leaf_mapping/split_large_page)",
            _NONE,
            assumption=True,
            rationale=(
                "split lock, walk and descriptor construction; the new table page, its "
                "entries and the TLB maintenance are priced by their own events"
            ),
        ),
        _c(
            "pgtable_ctor",
            60,
            "cycles per page-table page constructed or destructed (ptlock, accounting)",
            _NONE,
            assumption=True,
            rationale="pagetable_pte_ctor/dtor: ptlock init, lruvec/zone stat updates",
        ),
        _c(
            "pba_cache_op",
            20,
            "cycles per PBA cached-list operation (get/put of one cached page)",
            _NONE,
            assumption=True,
            rationale="a spin_lock_bh-protected list_del/list_add and a counter update",
        ),
        _c(
            "lazy_mmu_section",
            5,
            "cycles per outermost lazy-MMU section (enter+leave bookkeeping)",
            _NONE,
            assumption=True,
            rationale="thread-flag/counter updates; barriers and pkey work priced separately",
        ),
        _c(
            "page_fault",
            500,
            "cycles per user page fault (exception entry/exit and handler dispatch)",
            "lmbench lat_pagefault / will-it-scale page_fault results of ~0.1-0.3 us [U]",
            assumption=True,
            rationale=(
                "exception entry/exit, VMA lookup, handle_mm_fault dispatch; page "
                "allocation, zeroing and entry writes are priced by their own events"
            ),
        ),
        _c(
            "vma_op",
            300,
            "cycles per VMA/vmap_area tree operation (munmap call, vmap area allocation or purge)",
            _NONE,
            assumption=True,
            rationale="tree update plus object initialisation, a few hundred cycles",
        ),
        _c(
            "process_fork",
            30000,
            "cycles per fork, excluding its mm work (which is priced by its own events)",
            "lmbench lat_proc fork+exit results of ~50-100 us on server cores [U]",
            assumption=True,
            rationale=(
                "dup_task_struct, credentials, files, signal handlers, pid and scheduler "
                "set-up: taken as ~10 us at 3 GHz, the part of lat_proc that is not "
                "copying page tables"
            ),
        ),
        _c(
            "process_exit",
            15000,
            "cycles per exit + reap, excluding its mm work (priced by its own events)",
            "lmbench lat_proc fork+exit results of ~50-100 us on server cores [U]",
            assumption=True,
            rationale="exit_files, exit_signals, release_task and the parent's wait: ~5 us",
        ),
        _c(
            "folio_op",
            36,
            "cycles per user PTE copied (fork) or zapped, besides the entry store itself and "
            "the per-folio rmap work (folio_rmap)",
            _REDIS,
            assumption=True,
            rationale=(
                "fork's cost is dominated by copying page tables: 9 ms per GB at 2.27 GHz is "
                "~78 cycles per 4 KiB PTE of small folios; minus the two entry stores priced by "
                "pt_entry_write (2 x 3) leaves ~72 for the rest of copy_present_ptes.  That "
                "figure is for one folio per PTE, so it is split between this per-PTE part "
                "(the entry loop, the per-page mapcount atomic and AnonExclusive test, rss) "
                "and the per-folio part folio_rmap; with no published breakdown the split is "
                "even (36 + 36), which keeps the measured total for small folios.  Used for "
                "zap_present_ptes too, an assumption"
            ),
        ),
        _c(
            "folio_rmap",
            36,
            "cycles per per-folio batch of copy_present_ptes or zap_present_ptes (rmap and "
            "folio reference work)",
            _REDIS,
            assumption=True,
            rationale=(
                "the per-folio half of the Redis-derived ~72 cycles per small-folio PTE (see "
                "folio_op): vm_normal_page, page_folio, the folio reference atomic "
                "(folio_get/folio_ref_add, folio_put_refs after the flush) and the rmap call "
                "(folio_try_dup_anon_rmap_pte(s) / folio_remove_rmap_ptes).  A large folio "
                "mapped by a run of PTEs pays it once per batch (folio_pte_batch)"
            ),
        ),
        _c(
            "pt_read",
            pt_read,
            "cycles per software page-table read operation (one ptep_get/pXd_offset load or "
            "one bulk load of consecutive entries)",
            l2_src,
            assumption=True,
            rationale=(
                "a table walk is a chain of dependent loads, each the first access to its "
                "entry's cache line: taken as an L2 hit.  The per-entry work of a loop over "
                "the entries read is in pt_entry_write (which includes loading the old "
                "entry) and folio_op; for fork, whose per-PTE cost is a measured total "
                "(folio_op), this adds one read per 512 PTEs, a double count below 0.1%"
            ),
        ),
        _c(
            "change_memory_common",
            150,
            "cycles per set_memory_* call (arm64 __change_memory_common, x86 "
            "change_page_attr_set_clr), besides its table reads and writes, splits and "
            "TLB flush",
            _NONE,
            assumption=True,
            rationale=(
                "split_kernel_leaf_mapping's mutex (an uncontended lock/unlock pair), the "
                "generic page walker (walk_kernel_page_table_range_lockless: a step and an "
                "indirect callback per level, one pte_entry callback per page) and the "
                "argument checks: a few indirect calls and two atomics, ~150 cycles"
            ),
        ),
        _c(
            "vmap_tree_op",
            150,
            "cycles per vmap_area rb-tree lookup+erase or insert under its spinlock "
            "(find_unlink_vmap_area, free_vmap_area_noflush)",
            _NONE,
            assumption=True,
            rationale=(
                "~log2(n) dependent node visits (about 13 for the ~8000 lazily freed areas "
                "of a test_vmalloc period) at L1/L2 latency, plus an uncontended spinlock "
                "pair; no object initialisation (unlike vma_op)"
            ),
        ),
        _c(
            "vmap_block_op",
            60,
            "cycles per vb_alloc or vb_free call, besides its mapping work",
            _NONE,
            assumption=True,
            rationale=(
                "vb_alloc: RCU walk of the per-CPU vmap_block_queue and vb->lock around the "
                "free-count update; vb_free: xa_load of the block and vb->lock around the "
                "dirty-range update: one uncontended spinlock pair plus a short walk each"
            ),
        ),
    ]


def _arm64_poe() -> CalibrationTable:
    consts = [
        _c(
            "pkey_reg_write",
            10,
            "cycles per MSR POR_EL1",
            _V1_SOG,
            assumption=True,
            rationale=(
                "the SOG lists no latency for MSR to POR_EL1 (or CONTEXTIDR_EL1, which the "
                "series' mock writes instead); writes to non-renamed system registers are "
                "serialised in the system-register unit, of the order of 10 cycles"
            ),
        ),
        _c(
            "isb",
            30,
            "cycles per ISB",
            _ISB_GAP + "; " + _A77_PIPE,
            assumption=True,
            rationale=(
                "an ISB discards and refetches everything younger: at least the ~11-cycle "
                "front-end refill of the pipeline family, plus draining the older in-flight "
                "work of a page-table loop; taken as 30 cycles"
            ),
        ),
        _c(
            "dsb",
            30,
            "cycles per DSB ISH/ISHST",
            _NONE,
            assumption=True,
            rationale="waits for the store buffer to drain; tens of cycles when no broadcast "
            "maintenance is outstanding",
        ),
        _c(
            "tlbi_va",
            250,
            "cycles per broadcast TLBI by VA (TLBI VA*E1IS), including its completion",
            _TLBI_GAP,
            assumption=True,
            rationale=(
                "the invalidation is broadcast over the interconnect (DVM) and the following "
                "DSB waits for every core to acknowledge; taken of the same order as an x86 "
                "single-page INVLPG (237-260 cycles, [M-ingo]) since the DVM round trip "
                "replaces the local invalidation"
            ),
        ),
        _c(
            "tlbi_asid",
            400,
            "cycles per broadcast TLBI ASIDE1IS, including its completion",
            _TLBI_GAP,
            assumption=True,
            rationale="a broadcast operation like tlbi_va, plus the loss of the ASID's entries",
        ),
        _c(
            "tlbi_all",
            800,
            "cycles per broadcast TLBI VMALLE1IS, including its completion",
            _TLBI_GAP,
            assumption=True,
            rationale=(
                "a broadcast operation like tlbi_va; refills after a full invalidation are "
                "an extra cost, taken of the order of the x86 global flush (746 cycles "
                "cache-hot, [M-ingo])"
            ),
        ),
        _c(
            "tlb_shootdown_ipi",
            0,
            "cycles per TLB-shootdown IPI round (none on arm64)",
            "Arm ARM D8.13 (broadcast TLB maintenance, the *IS forms)",
            assumption=False,
            rationale=(
                "arm64 TLBIs are broadcast by the hardware and priced above; the kernel "
                "sends no IPI to flush, so the model never emits this event on arm64"
            ),
        ),
        *_common(
            pt_entry=3,
            page_zero=256,
            l1=48,
            l1_large=48,
            l2=2048,
            l2_1g=2048,
            l2_hit=6,
            walk_access=30,
            pt_read=10,
            l2_src=_V1_L2,
            tlb_src=_V1_TRM,
            core_src=_V1_SOG,
            contig=1,
        ),
    ]
    return CalibrationTable(
        "arm64-poe",
        "Neoverse-V1-class arm64 core (AWS Graviton3) with FEAT_S1POE assumed",
        "arm64",
        {c.name: c for c in consts},
    )


def _x86_pks() -> CalibrationTable:
    consts = [
        _c(
            "pkey_reg_write",
            30,
            "cycles per WRMSR IA32_PKRS",
            _PKS + "; " + _WRPKRU,
            assumption=True,
            rationale=(
                "WRMSR to IA32_PKRS is not serialising and orders like WRPKRU; the "
                "secondary WRPKRU figures cluster at ~20-30 cycles, so 30 is taken"
            ),
        ),
        _c(
            "isb",
            0,
            "cycles per ISB (none on x86)",
            _PKS,
            assumption=False,
            rationale="x86 has no ISB; the WRMSR needs no barrier, so none is emitted",
        ),
        _c(
            "dsb",
            0,
            "cycles per DSB (none on x86)",
            _INGO,
            assumption=False,
            rationale="x86 has no DSB; the flush costs below include their completion",
        ),
        _c(
            "tlbi_va",
            260,
            "cycles per single-page invalidation (INVLPG)",
            _INGO,
            assumption=False,
            rationale="__flush_tlb_one measured at 260 cycles (237 cache-hot on a second "
            "system); remote shootdown IPIs are not in this figure",
        ),
        _c(
            "tlbi_asid",
            96,
            "cycles per full non-global flush (CR3 reload)",
            _INGO,
            assumption=False,
            rationale="full CR3 flush measured at 96 cycles on the system of the INVLPG figure",
        ),
        _c(
            "tlbi_all",
            746,
            "cycles per global flush",
            _INGO,
            assumption=False,
            rationale="global flush measured at 746 cycles cache-hot",
        ),
        _c(
            "tlb_shootdown_ipi",
            3000,
            "cycles per TLB-shootdown IPI round (send, remote flush, wait for the acks)",
            _NONE,
            assumption=True,
            rationale=(
                "the initiator of an x86 flush_tlb_* with other CPUs involved sends an IPI "
                "and waits for every remote CPU's interrupt entry, INVLPG/CR3 work and "
                "acknowledgement; Ingo's INVLPG figures [M-ingo] exclude it; taken of the "
                "order of 1 us (an interrupt round trip) at ~3 GHz"
            ),
        ),
        *_common(
            pt_entry=3,
            page_zero=256,
            l1=96,
            l1_large=32,
            l2=2048,
            l2_1g=1024,
            l2_hit=7,
            walk_access=30,
            pt_read=15,
            l2_src=_GLC_L2,
            tlb_src=_GLC_OPT,
            core_src=_GLC_OPT,
            contig=0,
        ),
    ]
    return CalibrationTable(
        "x86-pks",
        "Golden-Cove-class x86 core (Sapphire Rapids) with PKS",
        "x86",
        {c.name: c for c in consts},
    )


#: Target name -> calibration table.
CALIBRATIONS: dict[str, CalibrationTable] = {t.name: t for t in (_arm64_poe(), _x86_pks())}


def get_calibration(name: str) -> CalibrationTable:
    """The table of target ``name``; :class:`ToolError` naming it if unknown."""
    try:
        return CALIBRATIONS[name]
    except KeyError:
        known = ", ".join(sorted(CALIBRATIONS))
        raise ToolError(f"unknown target {name!r} (known: {known})") from None


def calibration_markdown() -> str:
    """The constants of every target as Markdown tables (the body of ``docs/calibration.md``)."""
    out: list[str] = []
    for t in CALIBRATIONS.values():
        out.append(f"### `{t.name}`: {t.cpu}")
        out.append("")
        out.append("| constant | value | unit | assumption | source | why |")
        out.append("|---|---|---|---|---|---|")
        for c in t.constants.values():
            v = c.as_dict()["value"]
            flag = "**yes**" if c.assumption else "no"
            out.append(f"| `{c.name}` | {v} | {c.unit} | {flag} | {c.source} | {c.rationale} |")
        out.append("")
    return "\n".join(out)
