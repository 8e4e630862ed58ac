"""Physical memory: lazy frames, words, bytes, snapshots."""

from __future__ import annotations

import pytest

from kpkeys_sim.machine import PhysicalMemory


def test_unwritten_frames_read_as_zero_and_cost_nothing() -> None:
    """A frame never written reads as zeros and is not materialised."""
    mem = PhysicalMemory(64 << 30, 4096)
    assert mem.read_u64(mem.base + (5 << 30)) == 0
    assert mem.materialised_frames == 0


def test_write_read_u64_and_bytes() -> None:
    """Words and bytes written are read back, in the right frame."""
    mem = PhysicalMemory(1 << 20, 4096)
    mem.write_u64(mem.base + 0x1008, 0xDEADBEEF_CAFEF00D)
    assert mem.read_u64(mem.base + 0x1008) == 0xDEADBEEF_CAFEF00D
    assert mem.read_bytes(mem.base + 0x1008, 2) == b"\x0d\xf0"
    mem.write_bytes(mem.base + 0x2FFE, b"ab")
    assert mem.read_bytes(mem.base + 0x2FFE, 2) == b"ab"
    assert mem.materialised_frames == 2


def test_out_of_range_and_crossing_accesses_are_refused() -> None:
    """Accesses outside RAM, unaligned words and page-crossing bytes raise ValueError."""
    mem = PhysicalMemory(1 << 20, 4096)
    with pytest.raises(ValueError, match="outside physical memory"):
        mem.write_u64(mem.end, 1)
    with pytest.raises(ValueError, match="unaligned"):
        mem.read_u64(mem.base + 4)
    with pytest.raises(ValueError, match="crosses a page boundary"):
        mem.write_bytes(mem.base + 4095, b"xy")


def test_zero_copy_and_snapshot_restore() -> None:
    """zero_frames drops data; copy_frame copies; restore brings back a snapshot."""
    mem = PhysicalMemory(1 << 20, 16384)
    a, b = mem.base_pfn, mem.base_pfn + 1
    mem.write_u64(mem.base, 7)
    snap = mem.snapshot()
    mem.copy_frame(b, a)
    assert mem.read_u64(mem.base + 16384) == 7
    mem.zero_frames(a)
    assert mem.read_u64(mem.base) == 0
    mem.restore(snap)
    assert mem.read_u64(mem.base) == 7
    assert mem.read_u64(mem.base + 16384) == 0


def test_bad_geometry_is_refused() -> None:
    """Unsupported page sizes and sizes that are not page multiples are refused."""
    with pytest.raises(ValueError, match="page_size"):
        PhysicalMemory(1 << 20, 8192)
    with pytest.raises(ValueError, match="multiple"):
        PhysicalMemory(4097, 4096)
