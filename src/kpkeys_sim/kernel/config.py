"""KernelConfig: every knob of the modelled kernel and machine, with its default.

Inside the model the configuration is a frozen dataclass; at the boundary
(TOML files, CLI) it is validated by a pydantic model with extra keys
forbidden, so an unknown or ill-typed key is rejected by name
(:func:`load_config`).  Each field's ``metadata["doc"]`` is its one-line
description; ``kpkeys-sim`` prints them and the report lists them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from kpkeys_sim.errors import ToolError

__all__ = ["KernelConfig", "config_docs", "config_from_mapping", "load_config"]

GiB = 1 << 30


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """The configuration of one simulated machine and kernel (see ``config_docs()``)."""

    arch: str = _f("arm64", "pkey architecture of the machine: 'arm64' (POE) or 'x86' (PKS)")
    page_size: int = _f(4096, "base page size in bytes: 4096, 16384 or 65536")
    ram_size: int = _f(4 * GiB, "simulated RAM in bytes (multiple of the block size)")
    nr_cpus: int = _f(2, "number of simulated CPUs")
    cpu_has_pkeys: bool = _f(True, "the CPUs implement the pkey feature (FEAT_S1POE / PKS)")
    bbml2_noabort: bool = _f(
        True, "all CPUs have BBML2_NOABORT, so the linear map may keep block mappings"
    )
    rodata_full: bool = _f(True, "rodata=full (forces a PTE-mapped linear map without BBML2)")
    debug_pagealloc: bool = _f(False, "debug_pagealloc (always forces a PTE-mapped linear map)")
    linear_map: Literal["block", "pte"] = _f(
        "block", "linear-map mode requested: 'block' (blocks where allowed) or 'pte' (force PTEs)"
    )
    series: Literal["v5", "v6", "v7", "pks-rfc2"] = _f(
        "v6",
        "kpkeys series version modelled: v5, v6 or v7; or 'pks-rfc2' (x86 only): Rick "
        "Edgecombe's PKS write-protected page tables, RFC v2 (2021)",
    )
    kpkeys_hardened_pgtables: bool = _f(
        True, "CONFIG_KPKEYS_HARDENED_PGTABLES: protect page tables with a pkey"
    )
    lazy_mmu_batching: bool = _f(True, "batch pkey switches per lazy-MMU section (v5 18/18)")
    skip_unchanged_pkey_writes: bool = _f(
        False, "skip the register write+ISB when the value is unchanged (cred v2 1/8, v8)"
    )
    kpkeys_cred_levels: bool = _f(
        False, "model the cred series' CRED and UNRESTRICTED levels and pkey 2"
    )
    seed: int = _f(0, "seed of every random choice the model makes")

    def replace(self, **changes: Any) -> KernelConfig:
        """A copy with ``changes`` applied (validated like a loaded file)."""
        return config_from_mapping({**_asdict(self), **changes}, source="<replace>")


def _asdict(cfg: KernelConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


def config_docs() -> dict[str, str]:
    """Field name -> one-line description."""
    return {f.name: f.metadata["doc"] for f in fields(KernelConfig)}


class _ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    arch: Literal["arm64", "x86"] = "arm64"
    page_size: Literal[4096, 16384, 65536] = 4096
    ram_size: int = 4 * GiB
    nr_cpus: int = 2
    cpu_has_pkeys: bool = True
    bbml2_noabort: bool = True
    rodata_full: bool = True
    debug_pagealloc: bool = False
    linear_map: Literal["block", "pte"] = "block"
    series: Literal["v5", "v6", "v7", "pks-rfc2"] = "v6"
    kpkeys_hardened_pgtables: bool = True
    lazy_mmu_batching: bool = True
    skip_unchanged_pkey_writes: bool = False
    kpkeys_cred_levels: bool = False
    seed: int = 0


def config_from_mapping(data: dict[str, Any], source: str = "<config>") -> KernelConfig:
    """Validate ``data`` and build a KernelConfig; ``ToolError`` names the bad key."""
    try:
        model = _ConfigModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            raise ToolError(f"{source}: unknown key {key!r}") from None
        value = err.get("input")
        raise ToolError(f"{source}: bad value {value!r} for {key!r}: {err['msg']}") from None
    cfg = KernelConfig(**model.model_dump())
    _check_semantics(cfg, source)
    return cfg


def _check_semantics(cfg: KernelConfig, source: str) -> None:
    block = 2 << 20 if cfg.page_size == 4096 else 32 << 20
    if cfg.ram_size <= 0 or cfg.ram_size % block:
        raise ToolError(
            f"{source}: bad value {cfg.ram_size} for 'ram_size': must be a positive multiple "
            f"of {block} bytes"
        )
    if cfg.ram_size > 64 * GiB:
        raise ToolError(f"{source}: bad value {cfg.ram_size} for 'ram_size': at most 64 GiB")
    if cfg.series == "pks-rfc2" and cfg.arch != "x86":
        raise ToolError(
            f"{source}: bad value 'pks-rfc2' for 'series': Rick Edgecombe's PKS page-table "
            f"series is x86-only (arch = {cfg.arch!r})"
        )
    if not 1 <= cfg.nr_cpus <= 64:
        raise ToolError(f"{source}: bad value {cfg.nr_cpus} for 'nr_cpus': must be 1..64")


def load_config(path: str | Path) -> KernelConfig:
    """Load a TOML file (top-level keys = KernelConfig fields)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolError(f"{p}: not valid TOML: {exc}") from None
    return config_from_mapping(data, source=str(p))


DEFAULT_CONFIG = KernelConfig()
