"""The pkey defenses: the kpkeys series (v6, v7), the x86 PKS analogue, and the baseline.

These defenses add no hook of their own: the protection is the model
kernel's — page-table pages carry the page-table pkey in their linear-map
PTE, and every kernel store goes through the MMU check with the CPU's
effective pkey register (kpkeys-series.md §3, §4; threats-and-peers.md §1.1).
What a defense chooses is the kernel configuration:

==================  ======  ===========  ========  ==========================================
name                series  linear map   batching  spec
==================  ======  ===========  ========  ==========================================
none                —       block        —         ``kpkeys_hardened_pgtables`` off
kpkeys-v6           v6      block + PBA  on        §3.4, §4 (PBA + PPA), §3.6 v6 28/30
kpkeys-v7           v7      PTE only     on        §3.8 (per-allocation set_memory_pkey)
kpkeys-cred         v6      block + PBA  on        + the cred series' levels (§7.6; S12)
pks (x86-64)        v6      block + PBA  on        the same on x86 PKS (threats §1.3, §7)
pks-rfc2 (x86-64)   RFC v2  block + GPC  off       Rick Edgecombe's 2021 series (spec §9)
none-x86 (x86-64)   —       block        —         the x86 kernel, feature off (pks's baseline)
==================  ======  ===========  ========  ==========================================

``pks`` is the x86 analogue the spec lists (threats-and-peers.md §1.3, §7:
"≈ kpkeys-pba with 16 keys"): the same series on the x86-64 kernel model —
the direct map with 1 GiB/2 MiB pages split by CPA, the PBA, the page-table
pkey in bits 62:59 of the direct-map leaf, IA32_PKRS switched by WRMSR
(``kernel/arch/x86_*.py``, ``kernel/arch/x86.py``).  It is the kpkeys design
ported to PKS, not Rick Edgecombe's 2021 PKS page-table series (whose
grouped-page cache, worst-case direct-map table reserve and late ``init_mm``
walk are modelled by ``pks-rfc2``; kpkeys-series.md §9 compares the two).

``pks-rfc2`` is Rick Edgecombe's "PKS write protected page tables" RFC v2
(``kernel/arch/x86_pks_pgtables.py``): page tables from a grouped-page cache
(2 MiB blocks, "GPC" above), direct-map split tables from a reserve sized for
a fully split direct map, and a late walk of ``init_mm`` that protects every
table still unprotected (vmemmap, fixmap and boot tables included).  No
lazy-MMU batching: Rick's series had none.

Batching is part of each series' configuration here (the series batches
switches per lazy-MMU section, §3.6); scenario S14 measures both batching
settings of each pkey defense itself.
"""

from __future__ import annotations

from typing import ClassVar

from kpkeys_sim.kernel.config import KernelConfig
from kpkeys_sim.security.defenses.base import Defense, register_defense

__all__ = ["KpkeysCred", "KpkeysDefense", "NoDefense", "NoDefenseX86", "Pks", "PksRfc2"]


@register_defense
class NoDefense(Defense):
    """No protection of page tables (the baseline)."""

    name: ClassVar[str] = "none"
    title: ClassVar[str] = "no page-table protection"
    spec: ClassVar[str] = "threats-and-peers.md §7 configuration 'none'"


@register_defense
class NoDefenseX86(NoDefense):
    """No protection of page tables on the x86-64 kernel: the baseline of ``pks``.

    Outcomes that differ from ``none`` come from x86 itself (U/S at every
    level of a walk, the direct map's 1 GiB/2 MiB pages, CPA), not from a
    defense.
    """

    name: ClassVar[str] = "none-x86"
    title: ClassVar[str] = "no page-table protection (x86-64 kernel)"

    def kernel_config(self, base: KernelConfig) -> KernelConfig:
        return base.replace(arch="x86", page_size=4096, kpkeys_hardened_pgtables=False)


class KpkeysDefense(Defense):
    """A kpkeys_hardened_pgtables kernel of a given series and batching setting."""

    kind: ClassVar[str] = "prevent"
    pkey_protects_pgtables: ClassVar[bool] = True
    series: ClassVar[str] = "v6"
    linear_map: ClassVar[str] = "block"
    batching: ClassVar[bool] = True
    arch: ClassVar[str] = "arm64"
    cred: ClassVar[bool] = False

    def kernel_config(self, base: KernelConfig) -> KernelConfig:
        return base.replace(
            arch=self.arch,
            page_size=4096,
            series=self.series,
            linear_map=self.linear_map,
            kpkeys_hardened_pgtables=True,
            lazy_mmu_batching=self.batching,
            kpkeys_cred_levels=self.cred or base.kpkeys_cred_levels,
        )


@register_defense
class KpkeysV6(KpkeysDefense):
    """kpkeys v6: block-mapped linear map, pkeys block allocator, lazy-MMU batching."""

    name: ClassVar[str] = "kpkeys-v6"
    title: ClassVar[str] = "kpkeys v6: block-mapped linear map + PBA, batching"
    spec: ClassVar[str] = "kpkeys-series.md §3.4, §3.6, §4"


@register_defense
class KpkeysV7(KpkeysDefense):
    """kpkeys RFC v7: PTE-mapped linear map, per-allocation set_memory_pkey, batching."""

    name: ClassVar[str] = "kpkeys-v7"
    title: ClassVar[str] = "kpkeys RFC v7: PTE-mapped linear map, batching"
    spec: ClassVar[str] = "kpkeys-series.md §3.8, §3.6"
    series: ClassVar[str] = "v7"
    linear_map: ClassVar[str] = "pte"


@register_defense
class KpkeysCred(KpkeysDefense):
    """kpkeys v6 plus kpkeys_hardened_cred (live credentials in a pkey-protected slab)."""

    name: ClassVar[str] = "kpkeys-cred"
    title: ClassVar[str] = "kpkeys v6 + kpkeys_hardened_cred (pkey 2 on live creds)"
    spec: ClassVar[str] = "kpkeys-series.md §7.6; threats-and-peers.md §1.2, §7 S12"
    cred: ClassVar[bool] = True


@register_defense
class Pks(KpkeysDefense):
    """kpkeys v6 (PBA, batching) on x86-64 with PKS: 16 keys, IA32_PKRS, CPA splits."""

    name: ClassVar[str] = "pks"
    title: ClassVar[str] = "x86 PKS: kpkeys v6 (block-mapped direct map + PBA) on IA32_PKRS"
    spec: ClassVar[str] = "threats-and-peers.md §1.3, §7 ('pks'); kpkeys-series.md §7.5, §9"
    arch: ClassVar[str] = "x86"


@register_defense
class PksRfc2(KpkeysDefense):
    """Rick Edgecombe's PKS write-protected page tables, RFC v2 (2021), on x86-64."""

    name: ClassVar[str] = "pks-rfc2"
    title: ClassVar[str] = (
        "x86 PKS: Rick Edgecombe's RFC v2 (grouped-page cache, split-table reserve, init_mm walk)"
    )
    spec: ClassVar[str] = "kpkeys-series.md §9; threats-and-peers.md §1.3"
    arch: ClassVar[str] = "x86"
    series: ClassVar[str] = "pks-rfc2"
    batching: ClassVar[bool] = False
