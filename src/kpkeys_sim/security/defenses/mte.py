"""MTE as a mitigation: hardware tag-based KASAN with ``kasan.fault=panic``.

The two configurations the spec names ``mte-sync`` and ``mte-async``
(threats-and-peers.md §7 "Configurations", §1.6).  They use the mechanics
of :class:`~kpkeys_sim.security.defenses.kasan.HwTagsKasan` (4-bit tags,
14 random values 0xF0–0xFD, 0xF match-all pointer tag, 0xE for freed
memory, ``page_to_virt()`` re-tagging) and differ from the KASAN default
(``kasan-hw-tags``: sync + ``kasan.fault=report``) in the reporting policy
a production deployment would pick [model choice, documented in
docs/model-assumptions.md]:

``mte-sync``
    ``kasan.mode=sync``, ``kasan.fault=panic``: the tag-check fault is taken
    at the access and the kernel panics, so the access never completes.
``mte-async``
    ``kasan.mode=async``, ``kasan.fault=panic``: the access completes; the
    fault is latched in TFSR_EL1 and reported at the next kernel entry or
    exit (``mte_check_tfsr_entry/exit``) — after ``report_delay`` further
    entries/exits (default 0: the very next one), where the kernel panics.
"""

from __future__ import annotations

from typing import ClassVar

from kpkeys_sim.security.defenses.base import register_defense
from kpkeys_sim.security.defenses.kasan import HwTagsKasan

__all__ = ["MteAsync", "MteSync"]


@register_defense
class MteSync(HwTagsKasan):
    """MTE synchronous tag checking; a tag-check fault panics."""

    name: ClassVar[str] = "mte-sync"
    title: ClassVar[str] = "MTE sync tag checks (HW_TAGS, kasan.fault=panic)"
    detector: ClassVar[str] = "mte-sync"

    def __init__(self, *, fault: str = "panic", multi_shot: bool = False) -> None:
        super().__init__(mode="sync", fault=fault, multi_shot=multi_shot)


@register_defense
class MteAsync(HwTagsKasan):
    """MTE asynchronous tag checking; the latched fault panics at the next kernel entry/exit."""

    name: ClassVar[str] = "mte-async"
    title: ClassVar[str] = "MTE async tag checks (TFSR_EL1, reported at entry/exit, panic)"
    detector: ClassVar[str] = "mte-async"

    def __init__(
        self, *, fault: str = "panic", multi_shot: bool = False, report_delay: int = 0
    ) -> None:
        super().__init__(
            mode="async", fault=fault, multi_shot=multi_shot, report_delay=report_delay
        )
