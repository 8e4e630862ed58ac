"""Physical memory: frames whose contents are materialised only when written.

A frame's contents are one ``numpy.uint64`` array of ``page_size // 8``
entries.  Page-table pages are simply frames read as 64-bit descriptors, so a
whole table is one array and bulk page-table work is one numpy operation.
Data pages use the same array through a byte view.  A frame never written
reads as zeros and costs no host memory, which is how 64 GiB of simulated RAM
fits in a small host footprint.

This is hardware: it knows nothing of Linux.  It has no access checks; every
check lives in the MMU (``machine/mmu``), and kernel code reaches memory only
through the MMU (the walker is the one hardware agent that reads frames
directly, as the real table walker does).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["PhysicalMemory", "U64Array"]

U64Array = npt.NDArray[np.uint64]


class PhysicalMemory:
    """RAM of ``size`` bytes starting at physical address ``base``.

    Frames are numbered by pfn (``pa >> page_shift``), as in Linux.
    """

    __slots__ = (
        "_frames",
        "_zero",
        "base",
        "base_pfn",
        "end",
        "nr_frames",
        "page_shift",
        "page_size",
        "words_per_page",
    )

    def __init__(self, size: int, page_size: int = 4096, base: int = 0x4000_0000) -> None:
        if page_size not in (4096, 16384, 65536):
            raise ValueError(f"page_size must be 4096, 16384 or 65536, got {page_size}")
        if size <= 0 or size % page_size:
            raise ValueError(f"memory size {size} is not a positive multiple of {page_size}")
        if base % page_size:
            raise ValueError(f"memory base {base:#x} is not page aligned")
        self.page_size = page_size
        self.page_shift = page_size.bit_length() - 1
        self.words_per_page = page_size // 8
        self.base = base
        self.end = base + size
        self.base_pfn = base >> self.page_shift
        self.nr_frames = size >> self.page_shift
        self._frames: dict[int, U64Array] = {}
        self._zero: U64Array = np.zeros(self.words_per_page, dtype=np.uint64)
        self._zero.flags.writeable = False

    # --- frames ---------------------------------------------------------------------

    def pfn_valid(self, pfn: int) -> bool:
        """True if ``pfn`` is a frame of this memory."""
        return self.base_pfn <= pfn < self.base_pfn + self.nr_frames

    def _check(self, pfn: int) -> None:
        if not self.base_pfn <= pfn < self.base_pfn + self.nr_frames:
            raise ValueError(f"pfn {pfn:#x} is outside physical memory")

    def frame(self, pfn: int) -> U64Array:
        """The frame's contents for writing (materialised, zero-filled, on first use)."""
        f = self._frames.get(pfn)
        if f is None:
            self._check(pfn)
            f = np.zeros(self.words_per_page, dtype=np.uint64)
            self._frames[pfn] = f
        return f

    def frame_ro(self, pfn: int) -> U64Array:
        """The frame's contents for reading; a never-written frame reads as zeros.

        The array returned for an unmaterialised frame is a shared read-only
        zero page: callers must not keep it expecting later writes to show.
        """
        f = self._frames.get(pfn)
        if f is None:
            self._check(pfn)
            return self._zero
        return f

    def is_materialised(self, pfn: int) -> bool:
        """True if the frame holds any written data (host memory is in use for it)."""
        return pfn in self._frames

    def zero_frames(self, pfn: int, nr: int = 1) -> None:
        """Zero ``nr`` frames from ``pfn`` (drops their host storage)."""
        for p in range(pfn, pfn + nr):
            self._check(p)
            self._frames.pop(p, None)

    def zero_frame_range(self, pfn: int, nr: int) -> None:
        """Zero the ``nr`` consecutive frames from ``pfn`` (as :meth:`zero_frames`).

        The bulk form for long ranges: the range is checked once, and the
        cost is bounded by the number of materialised frames.
        """
        if nr <= 0:
            return
        self._check(pfn)
        self._check(pfn + nr - 1)
        frames = self._frames
        end = pfn + nr
        if nr > len(frames):
            for p in [p for p in frames if pfn <= p < end]:
                del frames[p]
        else:
            pop = frames.pop
            for p in range(pfn, end):
                pop(p, None)

    def copy_frame(self, dst_pfn: int, src_pfn: int) -> None:
        """Copy a whole frame (``copy_page``)."""
        src = self._frames.get(src_pfn)
        if src is None:
            self._check(src_pfn)
            self.zero_frames(dst_pfn)
        else:
            self.frame(dst_pfn)[:] = src

    @property
    def materialised_frames(self) -> int:
        """Number of frames currently holding data."""
        return len(self._frames)

    # --- words and bytes ------------------------------------------------------------------

    def read_u64(self, pa: int) -> int:
        """The 64-bit word at physical address ``pa`` (8-byte aligned)."""
        if pa & 7:
            raise ValueError(f"unaligned 64-bit read at {pa:#x}")
        return int(self.frame_ro(pa >> self.page_shift)[(pa & (self.page_size - 1)) >> 3])

    def write_u64(self, pa: int, value: int) -> None:
        """Store a 64-bit word at physical address ``pa`` (8-byte aligned)."""
        if pa & 7:
            raise ValueError(f"unaligned 64-bit write at {pa:#x}")
        self.frame(pa >> self.page_shift)[(pa & (self.page_size - 1)) >> 3] = value

    def read_bytes(self, pa: int, n: int) -> bytes:
        """``n`` bytes from ``pa``; the range must not cross a page boundary."""
        off = pa & (self.page_size - 1)
        if off + n > self.page_size:
            raise ValueError(f"byte read {pa:#x}+{n} crosses a page boundary")
        return self.frame_ro(pa >> self.page_shift).view(np.uint8)[off : off + n].tobytes()

    def write_bytes(self, pa: int, data: bytes) -> None:
        """Store ``data`` at ``pa``; the range must not cross a page boundary."""
        off = pa & (self.page_size - 1)
        if off + len(data) > self.page_size:
            raise ValueError(f"byte write {pa:#x}+{len(data)} crosses a page boundary")
        self.frame(pa >> self.page_shift).view(np.uint8)[off : off + len(data)] = np.frombuffer(
            data, dtype=np.uint8
        )

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> dict[int, U64Array]:
        """A copy of every materialised frame (for cheap restore between trials)."""
        return {pfn: f.copy() for pfn, f in self._frames.items()}

    def restore(self, snap: dict[int, U64Array]) -> None:
        """Restore the contents saved by :meth:`snapshot`."""
        self._frames = {pfn: f.copy() for pfn, f in snap.items()}
