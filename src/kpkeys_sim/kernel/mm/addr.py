"""Address conversions of ``<asm/memory.h>`` and ``<linux/mm.h>``, on the arch's ``k.pgt``.

``__va``/``__pa``/``page_address``… take the kernel and use its
:class:`~kpkeys_sim.kernel.arch.pgtable_api.ArchPgtable` (``k.pgt.va``,
``k.pgt.pa``…), so generic code uses them whatever the architecture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kpkeys_sim.kernel.kernel import Kernel

__all__ = [
    "__is_lm_address",
    "__pa",
    "__pa_symbol",
    "__phys_to_kimg",
    "__va",
    "lm_alias",
    "page_address",
    "virt_to_pfn",
]


def __va(k: Kernel, pa: int) -> int:
    """``__va(pa)``: linear-map VA of physical address ``pa``."""
    return k.pgt.va(pa)


def __pa(k: Kernel, va: int) -> int:
    """``__pa(va)``: physical address of a linear-map or kernel-image VA."""
    return k.pgt.pa(va)


def __pa_symbol(k: Kernel, va: int) -> int:
    """``__pa_symbol(sym)``: physical address of a kernel-image symbol."""
    return k.pgt.pa_symbol(va)


def __phys_to_kimg(k: Kernel, pa: int) -> int:
    """``__phys_to_kimg(pa)``."""
    return k.pgt.phys_to_kimg(pa)


def __is_lm_address(k: Kernel, va: int) -> bool:
    """``__is_lm_address(va)``."""
    return k.pgt.is_lm_address(va)


def page_address(k: Kernel, pfn: int) -> int:
    """``page_address(page)``: the linear-map VA of frame ``pfn``."""
    g = k.pgt
    return g.va(pfn << g.PAGE_SHIFT)


def virt_to_pfn(k: Kernel, va: int) -> int:
    """``virt_to_pfn(va)``."""
    g = k.pgt
    return g.pa(va) >> g.PAGE_SHIFT


def lm_alias(k: Kernel, sym_va: int) -> int:
    """``lm_alias(sym)``: the linear-map alias of a kernel-image address."""
    g = k.pgt
    return g.va(g.pa_symbol(sym_va))
