"""Pkey architectures, one module each, registered by name.

Importing this package registers every architecture module listed below.
"""

# Architecture modules: importing one registers it (``register_arch`` at its bottom).
from kpkeys_sim.machine.arch import arm64_poe as arm64_poe
from kpkeys_sim.machine.arch import x86_pk as x86_pk
from kpkeys_sim.machine.arch.base import (
    ACCESS_KINDS,
    RESULTS,
    Perm,
    PkeyArch,
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
