"""Pkey architectures, one module each, registered by name.

Importing this package registers every architecture module listed below.
"""

from kpkeys_sim.machine.arch.base import (
    ACCESS_KINDS,
    RESULTS,
    PkeyArch,
    Perm,
    Verdict,
    arch_names,
    get_arch,
    register_arch,
)

__all__ = [
    "ACCESS_KINDS",
    "RESULTS",
    "Perm",
    "PkeyArch",
    "Verdict",
    "arch_names",
    "get_arch",
    "register_arch",
]
