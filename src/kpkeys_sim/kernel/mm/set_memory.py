"""``<linux/set_memory.h>``: the generic names of the arch's direct-map attribute calls.

Generic code (the kpkeys series, the cred series, the security model)
imports these; each dispatches to the architecture's implementation
``k.arch_mm`` (:class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchMm`; arm64:
``kernel/mm/linear_map.py``, x86: ``kernel/arch/x86_set_memory.py``).
Results are 0 or ``-errno``.
"""

from __future__ import annotations

from kpkeys_sim.kernel.kernel import Kernel

__all__ = [
    "set_direct_map_default_noflush",
    "set_direct_map_invalid_noflush",
    "set_direct_map_valid_noflush",
    "set_memory_nx",
    "set_memory_pkey",
    "set_memory_ro",
    "set_memory_rw",
    "set_memory_valid",
    "set_memory_x",
]


def set_memory_ro(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_ro(addr, numpages)``."""
    return k.arch_mm.set_memory_ro(k, addr, numpages)


def set_memory_rw(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_rw(addr, numpages)``."""
    return k.arch_mm.set_memory_rw(k, addr, numpages)


def set_memory_nx(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_nx(addr, numpages)``."""
    return k.arch_mm.set_memory_nx(k, addr, numpages)


def set_memory_x(k: Kernel, addr: int, numpages: int) -> int:
    """``set_memory_x(addr, numpages)``."""
    return k.arch_mm.set_memory_x(k, addr, numpages)


def set_memory_valid(k: Kernel, addr: int, numpages: int, enable: bool) -> int:
    """``set_memory_valid(addr, numpages, enable)``."""
    return k.arch_mm.set_memory_valid(k, addr, numpages, enable)


def set_memory_pkey(k: Kernel, addr: int, numpages: int, pkey: int) -> int:
    """``set_memory_pkey(addr, numpages, pkey)`` (kpkeys v5 06/18)."""
    return k.arch_mm.set_memory_pkey(k, addr, numpages, pkey)


def set_direct_map_invalid_noflush(k: Kernel, pfn: int) -> int:
    """``set_direct_map_invalid_noflush(page)``."""
    return k.arch_mm.set_direct_map_invalid_noflush(k, pfn)


def set_direct_map_default_noflush(k: Kernel, pfn: int) -> int:
    """``set_direct_map_default_noflush(page)``."""
    return k.arch_mm.set_direct_map_default_noflush(k, pfn)


def set_direct_map_valid_noflush(k: Kernel, pfn: int, nr: int, valid: bool) -> int:
    """``set_direct_map_valid_noflush(page, nr, valid)``."""
    return k.arch_mm.set_direct_map_valid_noflush(k, pfn, nr, valid)
