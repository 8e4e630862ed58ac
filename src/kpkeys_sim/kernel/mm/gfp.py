"""GFP flags (``gfp_t``) as plain ``int`` bit constants with their kernel names.

Source: ``include/linux/gfp_types.h`` (Linux 6.10+ layout, where the bit
numbers come from an enum).  The bits up to ``__GFP_ZEROTAGS`` (bit 23) have the
same values in every recent kernel.  The bits after it depend on the
configuration in Linux (``__GFP_SKIP_ZERO`` and ``__GFP_SKIP_KASAN`` exist only
with ``CONFIG_KASAN_HW_TAGS``, ``__GFP_NOLOCKDEP`` only with lockdep).  The model
always defines them, at fixed positions of its own choosing (bits 24-25).

``__GFP_PGTABLE_SPLIT`` is the flag added by kpkeys v6 15/30 ("the split
allocations pass ``__GFP_PGTABLE_SPLIT``", spec §4.8).  The series appends it to
the enum; its bit number therefore depends on the configuration.  The model puts
it at bit 26 [U].

Composite masks (``GFP_KERNEL``, ``GFP_ATOMIC``, ...) follow ``gfp_types.h``.
``GFP_PGTABLE_KERNEL`` and ``GFP_PGTABLE_USER`` come from
``include/asm-generic/pgalloc.h``.  ``GFP_NOWAIT`` is the classic
``__GFP_KSWAPD_RECLAIM``: very recent kernels also add ``__GFP_NOWARN`` [U].
"""

from __future__ import annotations

__all__ = [
    "GFP_ATOMIC",
    "GFP_BITS_MASK",
    "GFP_DMA",
    "GFP_DMA32",
    "GFP_HIGHUSER",
    "GFP_HIGHUSER_MOVABLE",
    "GFP_KERNEL",
    "GFP_KERNEL_ACCOUNT",
    "GFP_NOFS",
    "GFP_NOIO",
    "GFP_NOWAIT",
    "GFP_PGTABLE_KERNEL",
    "GFP_PGTABLE_USER",
    "GFP_USER",
    "__GFP_ACCOUNT",
    "__GFP_COMP",
    "__GFP_DIRECT_RECLAIM",
    "__GFP_DMA",
    "__GFP_DMA32",
    "__GFP_FS",
    "__GFP_HARDWALL",
    "__GFP_HIGH",
    "__GFP_HIGHMEM",
    "__GFP_IO",
    "__GFP_KSWAPD_RECLAIM",
    "__GFP_MEMALLOC",
    "__GFP_MOVABLE",
    "__GFP_NOFAIL",
    "__GFP_NOMEMALLOC",
    "__GFP_NORETRY",
    "__GFP_NOWARN",
    "__GFP_PGTABLE_SPLIT",
    "__GFP_RECLAIM",
    "__GFP_RECLAIMABLE",
    "__GFP_RETRY_MAYFAIL",
    "__GFP_SKIP_KASAN",
    "__GFP_SKIP_ZERO",
    "__GFP_THISNODE",
    "__GFP_WRITE",
    "__GFP_ZERO",
    "__GFP_ZEROTAGS",
    "check_gfp_arg",
    "gfp_names",
]

# Single bits (gfp_types.h: ___GFP_*_BIT enum order).
__GFP_DMA = 1 << 0
__GFP_HIGHMEM = 1 << 1
__GFP_DMA32 = 1 << 2
__GFP_MOVABLE = 1 << 3
__GFP_RECLAIMABLE = 1 << 4
__GFP_HIGH = 1 << 5
__GFP_IO = 1 << 6
__GFP_FS = 1 << 7
__GFP_ZERO = 1 << 8
# bit 9 (0x200) is ___GFP_UNUSED_BIT in Linux.
__GFP_DIRECT_RECLAIM = 1 << 10
__GFP_KSWAPD_RECLAIM = 1 << 11
__GFP_WRITE = 1 << 12
__GFP_NOWARN = 1 << 13
__GFP_RETRY_MAYFAIL = 1 << 14
__GFP_NOFAIL = 1 << 15
__GFP_NORETRY = 1 << 16
__GFP_MEMALLOC = 1 << 17
__GFP_COMP = 1 << 18
__GFP_NOMEMALLOC = 1 << 19
__GFP_HARDWALL = 1 << 20
__GFP_THISNODE = 1 << 21
__GFP_ACCOUNT = 1 << 22
__GFP_ZEROTAGS = 1 << 23
# Configuration-dependent bits in Linux; fixed positions in the model [U].
__GFP_SKIP_ZERO = 1 << 24
__GFP_SKIP_KASAN = 1 << 25
__GFP_PGTABLE_SPLIT = 1 << 26

#: Every bit the model defines.
GFP_BITS_MASK = (1 << 27) - 1

__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM

# Composite masks (gfp_types.h).
GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM
GFP_NOIO = __GFP_RECLAIM
GFP_NOFS = __GFP_RECLAIM | __GFP_IO
GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_DMA = __GFP_DMA
GFP_DMA32 = __GFP_DMA32
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE | __GFP_SKIP_KASAN

# include/asm-generic/pgalloc.h
GFP_PGTABLE_KERNEL = GFP_KERNEL | __GFP_ZERO
GFP_PGTABLE_USER = GFP_PGTABLE_KERNEL | __GFP_ACCOUNT

# Name table in the order of include/trace/events/mmflags.h (__def_gfpflag_names):
# composites first, so that "%pGg" output greedily prefers them.
_GFP_NAMES: tuple[tuple[int, str], ...] = (
    (GFP_HIGHUSER_MOVABLE, "GFP_HIGHUSER_MOVABLE"),
    (GFP_HIGHUSER, "GFP_HIGHUSER"),
    (GFP_USER, "GFP_USER"),
    (GFP_KERNEL_ACCOUNT, "GFP_KERNEL_ACCOUNT"),
    (GFP_KERNEL, "GFP_KERNEL"),
    (GFP_NOFS, "GFP_NOFS"),
    (GFP_ATOMIC, "GFP_ATOMIC"),
    (GFP_NOIO, "GFP_NOIO"),
    (GFP_NOWAIT, "GFP_NOWAIT"),
    (GFP_DMA, "GFP_DMA"),
    (__GFP_HIGHMEM, "__GFP_HIGHMEM"),
    (GFP_DMA32, "GFP_DMA32"),
    (__GFP_HIGH, "__GFP_HIGH"),
    (__GFP_IO, "__GFP_IO"),
    (__GFP_FS, "__GFP_FS"),
    (__GFP_NOWARN, "__GFP_NOWARN"),
    (__GFP_RETRY_MAYFAIL, "__GFP_RETRY_MAYFAIL"),
    (__GFP_NOFAIL, "__GFP_NOFAIL"),
    (__GFP_NORETRY, "__GFP_NORETRY"),
    (__GFP_COMP, "__GFP_COMP"),
    (__GFP_ZERO, "__GFP_ZERO"),
    (__GFP_NOMEMALLOC, "__GFP_NOMEMALLOC"),
    (__GFP_MEMALLOC, "__GFP_MEMALLOC"),
    (__GFP_HARDWALL, "__GFP_HARDWALL"),
    (__GFP_THISNODE, "__GFP_THISNODE"),
    (__GFP_RECLAIMABLE, "__GFP_RECLAIMABLE"),
    (__GFP_MOVABLE, "__GFP_MOVABLE"),
    (__GFP_ACCOUNT, "__GFP_ACCOUNT"),
    (__GFP_WRITE, "__GFP_WRITE"),
    (__GFP_RECLAIM, "__GFP_RECLAIM"),
    (__GFP_DIRECT_RECLAIM, "__GFP_DIRECT_RECLAIM"),
    (__GFP_KSWAPD_RECLAIM, "__GFP_KSWAPD_RECLAIM"),
    (__GFP_ZEROTAGS, "__GFP_ZEROTAGS"),
    (__GFP_SKIP_ZERO, "__GFP_SKIP_ZERO"),
    (__GFP_SKIP_KASAN, "__GFP_SKIP_KASAN"),
    (__GFP_PGTABLE_SPLIT, "__GFP_PGTABLE_SPLIT"),
)


def check_gfp_arg(gfp: int) -> int:
    """Return ``gfp`` if it is a valid mask of model GFP bits, else raise ``ValueError``."""
    if not isinstance(gfp, int) or isinstance(gfp, bool) or gfp < 0 or gfp & ~GFP_BITS_MASK:
        raise ValueError(f"bad gfp mask {gfp!r}: not a combination of the model's GFP bits")
    return gfp


def gfp_names(gfp: int) -> str:
    """Render ``gfp`` as the kernel's ``%pGg`` does, e.g. ``"GFP_KERNEL|__GFP_ZERO"``.

    Composite names are matched first, in the order of
    ``include/trace/events/mmflags.h``; ``0`` renders as ``"0"``.
    """
    check_gfp_arg(gfp)
    if gfp == 0:
        return "0"
    parts: list[str] = []
    rest = gfp
    for mask, name in _GFP_NAMES:
        if rest & mask == mask:
            parts.append(name)
            rest &= ~mask
        if not rest:
            break
    return "|".join(parts)
