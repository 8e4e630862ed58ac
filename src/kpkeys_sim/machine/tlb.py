"""A TLB with explicit invalidation: a stale entry stays visible until a TLBI.

Each CPU has its own TLB.  An entry caches a whole leaf descriptor (block or
page) for the leaf's size, tagged with an ASID for non-global (nG) entries or
as global.  Nothing but an invalidation removes an entry: the model has no
capacity limit and no eviction, which is the worst case for software that
forgets a TLBI (any real eviction could only hide such a bug).  The pkey
register is *not* cached (Arm ARM: POR_ELx may not be cached in a TLB), but
the POIndex of a descriptor is, so changing a live descriptor's pkey needs a
TLBI before every CPU sees it (spec pkeys-hardware.md §1.4, I_SKPNZ).

Simplifications (docs/model-assumptions.md): no walk caches (intermediate
table entries are re-read on every miss); a contiguous-hint group is cached
per descriptor, not as one group entry, which gives the same visibility for
software that keeps groups consistent.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GLOBAL_ASID", "TLB", "TlbEntry"]

#: Tag of global (nG = 0) entries.
GLOBAL_ASID = -1


@dataclass(frozen=True, slots=True)
class TlbEntry:
    """One cached translation: the leaf descriptor, its level and its size."""

    desc: int
    level: int
    size_shift: int
    oa_base: int  # output address of the first byte the entry maps
    us: bool = True  # x86: effective U/S over the walk (unused on arm64)
    rw: bool = True  # x86: effective R/W over the walk (unused on arm64)


class TLB:
    """One CPU's TLB.  ``leaf_shifts`` are the possible leaf sizes (log2 bytes)."""

    __slots__ = ("_buckets", "hits", "invalidations", "leaf_shifts", "misses")

    def __init__(self, leaf_shifts: tuple[int, ...]) -> None:
        self.leaf_shifts = tuple(sorted(leaf_shifts))
        # asid -> {(va >> shift, shift): entry}
        self._buckets: dict[int, dict[tuple[int, int], TlbEntry]] = {}
        self.hits = 0
        self.misses = 0
        self.invalidations: dict[str, int] = {"va": 0, "asid": 0, "all": 0}

    def lookup(self, va: int, asid: int) -> TlbEntry | None:
        """The entry translating ``va`` for ``asid`` (global entries match any ASID)."""
        g = self._buckets.get(GLOBAL_ASID)
        a = self._buckets.get(asid) if asid != GLOBAL_ASID else None
        for shift in self.leaf_shifts:
            key = (va >> shift, shift)
            if g is not None:
                e = g.get(key)
                if e is not None:
                    self.hits += 1
                    return e
            if a is not None:
                e = a.get(key)
                if e is not None:
                    self.hits += 1
                    return e
        self.misses += 1
        return None

    def fill(self, va: int, asid: int, entry: TlbEntry) -> None:
        """Cache ``entry`` for ``va`` under ``asid`` (``GLOBAL_ASID`` for global entries)."""
        self._buckets.setdefault(asid, {})[(va >> entry.size_shift, entry.size_shift)] = entry

    def invalidate_va(self, va: int, asid: int | None = None) -> None:
        """Remove every entry covering ``va``: for ``asid`` and global ones, or any ASID if None.

        Models TLBI VAE1 (with ASID) and TLBI VAAE1 (all ASIDs); the leaf-only
        ``*L*`` forms invalidate the same entries here since there are no walk
        caches.
        """
        self.invalidations["va"] += 1
        if asid is None:
            buckets = list(self._buckets.values())
        else:
            buckets = [b for k in (GLOBAL_ASID, asid) if (b := self._buckets.get(k)) is not None]
        for b in buckets:
            for shift in self.leaf_shifts:
                b.pop((va >> shift, shift), None)

    def invalidate_asid(self, asid: int) -> None:
        """Remove every non-global entry of ``asid`` (TLBI ASIDE1)."""
        self.invalidations["asid"] += 1
        self._buckets.pop(asid, None)

    def invalidate_all(self) -> None:
        """Remove every entry (TLBI VMALLE1)."""
        self.invalidations["all"] += 1
        self._buckets.clear()

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())
