"""Accessors with exception fixups (``mm/maccess.c``) and the kernel-fault oops.

``copy_to_kernel_nofault()`` and ``copy_from_kernel_nofault()`` copy with
page faults disabled; a fault on the access is not an oops: the exception
table fixup makes the copy return ``-EFAULT`` (spec kpkeys-series.md §2.7,
§5.1: the KUnit tests rely on it).  The model performs each page's part of
the copy as one checked access through :class:`~kpkeys_sim.machine.Machine`
on ``k.cpu`` (permissions are per page, so one check per page is exact; a
fault on a later page leaves the earlier pages written, as the kernel's
word-by-word loop does).

A fault is a synchronous exception taken from EL1: the model runs the exception
entry (``kernel_entry``: POR_EL1 saved, reset to ``POR_EL1_INIT`` if it
differs, v5 07/18), the fixup, and the return (``kernel_exit``) around it, so
the pkey-register events of the round trip are counted.

Only the machine's :class:`~kpkeys_sim.machine.mmu.Fault` is fixed up;
anything else (a model bug, a bad argument) propagates.

:func:`__do_kernel_fault` is the other outcome, for a kernel access without a
fixup: arm64 ``__do_kernel_fault`` → ``die_kernel_fault`` ("Unable to handle
kernel write to read-only memory at virtual address ..."), x86
``page_fault_oops`` ("BUG: unable to handle page fault for address: ...");
it logs the kernel's first lines and raises :class:`~kpkeys_sim.kernel.errors.Oops`.
"""

from __future__ import annotations

from typing import NoReturn

from kpkeys_sim.kernel.arch import kernel_entry, kernel_exit
from kpkeys_sim.kernel.errors import EFAULT, Oops
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.machine.arch.arm64_poe import ESR_ELx_WNR
from kpkeys_sim.machine.mmu import Fault

__all__ = [
    "EFAULT",
    "__do_kernel_fault",
    "copy_from_kernel_nofault",
    "copy_to_kernel_nofault",
    "kernel_store_u64",
]


def _segments(k: Kernel, addr: int, size: int) -> list[tuple[int, int, int]]:
    """``(va, offset into the buffer, length)`` per page touched by ``[addr, addr + size)``."""
    page = k.machine.page_size
    out = []
    off = 0
    while off < size:
        va = addr + off
        n = min(size - off, page - (va & (page - 1)))
        out.append((va, off, n))
        off += n
    return out


def _fixup(k: Kernel) -> int:
    """The exception taken on the faulting access, handled by its fixup: ``-EFAULT``."""
    kernel_entry(k)
    # fixup_exception(): the exception table entry of the nofault loop points
    # at the "return -EFAULT" label; the handler changes nothing else.
    kernel_exit(k)
    return -EFAULT


def copy_to_kernel_nofault(k: Kernel, dst: int, src: bytes) -> int:
    """Copy ``src`` to kernel address ``dst`` on ``k.cpu``; 0, or ``-EFAULT`` on a fault.

    ``mm/maccess.c``: ``pagefault_disable()``, the copy loop whose accesses
    carry exception-table entries, ``pagefault_enable()``.  Each page's part is
    one checked store at the current pkey register (no guard is taken: a
    write to a pkey-protected page-table page at the default level faults).
    """
    if not isinstance(src, bytes | bytearray | memoryview):
        raise TypeError(f"copy_to_kernel_nofault: src must be bytes, got {type(src).__name__}")
    data = bytes(src)
    m = k.machine
    try:
        for va, off, n in _segments(k, dst, len(data)):
            m.store_bytes(k.cpu, va, data[off : off + n])
    except Fault:
        return _fixup(k)
    return 0


def copy_from_kernel_nofault(k: Kernel, src: int, size: int) -> tuple[int, bytes]:
    """Read ``size`` bytes at kernel address ``src``: ``(0, data)`` or ``(-EFAULT, b"")``.

    ``copy_from_kernel_nofault(dst, src, size)`` returns 0 or ``-EFAULT``; the
    model returns the data alongside the status instead of filling ``dst``.
    """
    m = k.machine
    parts: list[bytes] = []
    try:
        for va, _off, n in _segments(k, src, size):
            parts.append(m.load_bytes(k.cpu, va, n))
    except Fault:
        return _fixup(k), b""
    return 0, b"".join(parts)


def __do_kernel_fault(k: Kernel, fault: Fault) -> NoReturn:
    """A kernel-mode fault with no fixup: log the oops header and raise :class:`Oops`.

    arm64 ``__do_kernel_fault``/``die_kernel_fault``: a permission fault at
    EL1 is reported as "write to read-only memory" (WnR set), "execute from
    non-executable memory" or "read from unreadable memory"; any other fault
    as "paging request" (or "NULL pointer dereference" below ``PAGE_SIZE``).
    x86 ``page_fault_oops``: "BUG: unable to handle page fault for address".
    """
    if k.machine.fmt == "x86":
        kind = "write" if fault.access in ("W", "RW") else "read"
        if fault.access == "X":
            kind = "instruction fetch"
        head = f"BUG: unable to handle page fault for address: {fault.va:016x}"
        detail = f"#PF: supervisor {kind} access in kernel mode"
        lines = [head, detail, f"#PF: error_code(0x{fault.syndrome:04x})"]
    else:
        if fault.kind == "permission":
            if fault.syndrome & ESR_ELx_WNR:
                msg = "write to read-only memory"
            elif fault.access == "X":
                msg = "execute from non-executable memory"
            else:
                msg = "read from unreadable memory"
        elif fault.va < k.machine.page_size:
            msg = "NULL pointer dereference"
        else:
            msg = "paging request"
        lines = [
            f"Unable to handle kernel {msg} at virtual address {fault.va:016x}",
            f"Mem abort info:\n  ESR = 0x{fault.syndrome:016x}",
        ]
    for line in lines:
        k.printk(line)
    raise Oops(lines[0]) from fault


def kernel_store_u64(k: Kernel, va: int, value: int) -> None:
    """A plain kernel 64-bit store (no fixup): a fault is an oops (:func:`__do_kernel_fault`).

    This is what a stray write through a corrupted pointer is.  The exception
    is taken (``kernel_entry``); the oops then kills the task, so the model
    discards the exception frame (``kernel_exit``, keeping ``k.cpu``
    consistent for whatever runs next) before raising.
    """
    try:
        k.machine.store_u64(k.cpu, va, value)
    except Fault as f:
        kernel_entry(k)
        kernel_exit(k)
        __do_kernel_fault(k, f)
