"""Tagged kernel pointers (arm64 Top-Byte-Ignore), as the attacker's code holds them.

With tag-based KASAN (software or hardware tags), kernel pointers carry a
tag in bits 63:56 and the MMU ignores that byte for translation (TBI1;
bit 55 selects the translation table, spec threats-and-peers.md §1.6).
``KASAN_TAG_KERNEL`` 0xFF is the tag of an ordinary untagged kernel
pointer: ``__va()``/``phys_to_virt()`` results carry it, and it matches
every memory tag (match-all) [R30][R31].

The model's machine decodes VA bit 63 to pick the table (a canonical
address), so every access the security layer makes is *canonicalised*
first: the top byte is replaced by 0xFF for kernel addresses (bit 55 set)
and by 0x00 for user addresses — what TBI does in hardware.
"""

from __future__ import annotations

__all__ = [
    "KASAN_TAG_INVALID",
    "KASAN_TAG_KERNEL",
    "canonical",
    "pointer_tag",
    "set_tag",
]

#: ``KASAN_TAG_KERNEL``: the tag of untagged kernel pointers; matches any memory tag [R31].
KASAN_TAG_KERNEL = 0xFF
#: ``KASAN_TAG_INVALID``: the memory tag of freed/poisoned memory [R31].
KASAN_TAG_INVALID = 0xFE

_TOP = 0xFF << 56
_LOW = (1 << 56) - 1


def pointer_tag(ptr: int) -> int:
    """The tag byte (bits 63:56) of ``ptr``."""
    return (ptr >> 56) & 0xFF


def set_tag(ptr: int, tag: int) -> int:
    """``ptr`` with its top byte replaced by ``tag`` (``set_tag()``)."""
    return (ptr & _LOW) | ((tag & 0xFF) << 56)


def canonical(ptr: int) -> int:
    """The address the MMU translates: top byte from bit 55 (TBI)."""
    if ptr >> 55 & 1:
        return ptr | _TOP
    return ptr & _LOW
