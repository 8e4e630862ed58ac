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

from dataclasses import dataclass, field

__all__ = ["ATTR_KEY_FREE_SHIFT", "GLOBAL_ASID", "TLB", "TlbEntry"]

#: Tag of global (nG = 0) entries.
GLOBAL_ASID = -1

#: Descriptor bits that take part in the access check: everything but the
#: output address (bits [51:12]; the verdict never depends on them).
_ATTR_MASK = ~(((1 << 52) - 1) & ~0xFFF)
#: First bit of the output-address field left free in :attr:`TlbEntry.attr_key`
#: (bits [51:ATTR_KEY_FREE_SHIFT] are zero there).
ATTR_KEY_FREE_SHIFT = 18


@dataclass(frozen=True, slots=True)
class TlbEntry:
    """One cached translation: the leaf descriptor, its level and its size.

    ``attr_key`` packs everything of the entry the access check reads into
    one int: the descriptor without its output address (bits [51:12] cleared),
    with ``level + 1`` in bits [15:12], ``us`` in bit 16 and ``rw`` in bit 17.
    The packing is injective, so equal keys mean equal check inputs.
    """

    desc: int
    level: int
    size_shift: int
    oa_base: int  # output address of the first byte the entry maps
    us: bool = True  # x86: effective U/S over the walk (unused on arm64)
    rw: bool = True  # x86: effective R/W over the walk (unused on arm64)
    attr_key: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not -1 <= self.level < 15:
            raise ValueError(f"translation level {self.level} out of range")
        key = (
            (self.desc & _ATTR_MASK)
            | (self.level + 1) << 12
            | int(bool(self.us)) << 16
            | int(bool(self.rw)) << 17
        )
        object.__setattr__(self, "attr_key", key)


class TLB:
    """One CPU's TLB.  ``leaf_shifts`` are the possible leaf sizes (log2 bytes)."""

    __slots__ = ("_buckets", "_shifts", "hits", "invalidations", "leaf_shifts", "misses")

    def __init__(self, leaf_shifts: tuple[int, ...]) -> None:
        self.leaf_shifts = tuple(sorted(leaf_shifts))
        self._shifts = tuple(enumerate(self.leaf_shifts))
        # asid -> one {va >> shift: entry} per leaf shift (in ``leaf_shifts`` order)
        self._buckets: dict[int, tuple[dict[int, TlbEntry], ...]] = {}
        self.hits = 0
        self.misses = 0
        self.invalidations: dict[str, int] = {"va": 0, "asid": 0, "all": 0}

    def lookup(self, va: int, asid: int) -> TlbEntry | None:
        """The entry translating ``va`` for ``asid`` (global entries match any ASID)."""
        g = self._buckets.get(GLOBAL_ASID)
        a = self._buckets.get(asid) if asid != GLOBAL_ASID else None
        for i, shift in self._shifts:
            vpn = va >> shift
            e = g[i].get(vpn) if g is not None else None
            if e is None and a is not None:
                e = a[i].get(vpn)
            if e is not None:
                self.hits += 1
                return e
        self.misses += 1
        return None

    def fill(self, va: int, asid: int, entry: TlbEntry) -> None:
        """Cache ``entry`` for ``va`` under ``asid`` (``GLOBAL_ASID`` for global entries)."""
        b = self._buckets.get(asid)
        if b is None:
            b = self._buckets[asid] = tuple({} for _ in self.leaf_shifts)
        b[self.leaf_shifts.index(entry.size_shift)][va >> entry.size_shift] = entry

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
            for i, shift in self._shifts:
                b[i].pop(va >> shift, None)

    def invalidate_asid(self, asid: int) -> None:
        """Remove every non-global entry of ``asid`` (TLBI ASIDE1)."""
        self.invalidations["asid"] += 1
        self._buckets.pop(asid, None)

    def invalidate_all(self) -> None:
        """Remove every entry (TLBI VMALLE1)."""
        self.invalidations["all"] += 1
        self._buckets.clear()

    def __len__(self) -> int:
        return sum(len(d) for b in self._buckets.values() for d in b)
