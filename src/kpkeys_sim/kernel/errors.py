"""Conditions of the modelled kernel (not errors of the tool).

A :class:`KernelBug` is what the kernel would report with ``BUG()``,
``VM_BUG_ON()`` or a "Bad page state" report: the modelled kernel found its
own state inconsistent (double free, freeing a page still in use, ...).  The
model raises it *before* changing any state, so the model's bookkeeping stays
consistent and the attack harness can catch it as the detection point.

An :class:`Oops` is a modelled kernel oops (an unhandled fault in kernel
mode).  Both are distinct from :class:`kpkeys_sim.errors.ToolError`, which is
bad input to the tool.
"""

from __future__ import annotations

__all__ = ["KernelBug", "Oops"]


class KernelBug(Exception):
    """A BUG()/VM_BUG_ON()/"Bad page state"-level condition detected by the modelled kernel."""


class Oops(Exception):
    """A modelled kernel oops: an unhandled fault taken in kernel mode."""


# --- errno values (include/uapi/asm-generic/errno-base.h); kernel functions return them
# negated (``-EINVAL``).  Added by the page-table / linear-map model. ---------------------------
EPERM = 1
ENOENT = 2
EINTR = 4
EIO = 5
EAGAIN = 11
ENOMEM = 12
EFAULT = 14
EBUSY = 16
EEXIST = 17
EINVAL = 22
ENOSPC = 28
EOPNOTSUPP = 95
__all__ += [
    "EAGAIN",
    "EBUSY",
    "EEXIST",
    "EFAULT",
    "EINTR",
    "EINVAL",
    "EIO",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EOPNOTSUPP",
    "EPERM",
]
