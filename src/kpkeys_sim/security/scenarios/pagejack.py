"""S4 — page-level use-after-free through a stale ``pipe_buffer`` page (PageJack / Page Spray).

Spec: threats-and-peers.md §4.4, §7 S4 [R43][R46][R47].  The stale write is
made by the kernel (``pipe_write`` → ``copy_page_from_iter`` into
``page_address(buf->page) + offset``): the address is **re-derived from the
struct page**, so under tag-based KASAN/MTE it carries the page's *current*
tag (``page_to_virt()`` [R33]) — logged per trial: ``write_tag_match_all`` (the
page's tag is 0xFF, e.g. a slab page or a user page) or ``write_tag_of_page``
(the page's current random tag).

Shared preconditions: the attacker process, a 2 MiB window with no PTE
table, and a kernel target page holding a secret.

``S4-A`` (page reclaimed as a page table)
    1. A pipe write allocates the pipe buffer page P
       (``alloc_page(_PIPE_GFP)``).
    2. The bug drops the last reference while the ``pipe_buffer`` keeps
       P (:class:`~kpkeys_sim.security.primitives.StalePageRef`).
    3. The attacker faults the window: the new PTE table takes the page the
       allocator hands out (P if nothing else took it).
    4. The corrupting write: an 8-byte pipe write at offset 8 (slot 1): a
       user R/W entry for the target.  The attacker controls the offset
       exactly (``pipe_buffer.offset``), so there is no candidate scan.
    5. Payoff: user R/W of the target at window + 4 KiB.
``S4-B`` (page reclaimed as a slab page holding ``struct file``)
    1–2 as above.  3. The attacker opens the target file read-only many
    times: ``filp`` objects (``SLAB_TYPESAFE_BY_RCU``) fill new slabs; one
    may take P.  4. The corrupting writes: for every object slot of the page,
    a 4-byte pipe write setting ``FMODE_WRITE`` in ``f_mode`` (the
    CVE-2021-22555 Page-UAF payload [R47]).  5. Payoff: ``write()`` on one
    of the read-only descriptors passes the kernel's ``f_mode`` check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kpkeys_sim.kernel.mm.gfp import __GFP_ACCOUNT, GFP_HIGHUSER
from kpkeys_sim.security import groom, kapi
from kpkeys_sim.security.outcome import TrialResult
from kpkeys_sim.security.pointers import pointer_tag
from kpkeys_sim.security.primitives import StalePageRef
from kpkeys_sim.security.scenarios.base import Scenario, failed, register_scenario, succeeded
from kpkeys_sim.security.scenarios.common import SECRET

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv

__all__ = ["PageUafFile", "PageUafPgtable"]

#: struct file (reduced): f_mode at 0x14 (fmode_t), FMODE_READ/WRITE (include/linux/fs.h).
_PIPE_GFP = GFP_HIGHUSER | __GFP_ACCOUNT
FILE_SIZE = 232
F_MODE = 0x14
FMODE_READ = 0x1
FMODE_WRITE = 0x2


class _PageUaf(Scenario):
    def prepare(self, env: AttackEnv) -> None:
        att = kapi.spawn_attacker(env)
        env.state["attacker"] = att
        env.state["window"] = kapi.prepare_window(env, att, "pte")
        env.state["target"] = kapi.alloc_secret_page(env, SECRET)

    def _stale_pipe_page(self, env: AttackEnv, keep: list[groom.Obj], pages: list[int]) -> int:
        with env.syscall():
            pfn = kapi.alloc_page(env, _PIPE_GFP)
            assert pfn is not None
        groom.noise(env, 256, keep, pages)
        with env.syscall():
            kapi.free_page(env, pfn)  # the bug: last reference dropped, pipe_buffer keeps it
        groom.noise(env, 256, keep, pages)
        return pfn


@register_scenario
class PageUafPgtable(_PageUaf):
    """S4-A — stale pipe page reclaimed as a PTE table, written through the pipe."""

    id: ClassVar[str] = "S4-A"
    title: ClassVar[str] = "page UAF (pipe_buffer) reclaimed as a PTE table"
    spec: ClassVar[str] = "threats-and-peers.md §4.4, §7 S4 variant A"

    def trial(self, env: AttackEnv) -> TrialResult:
        att = env.state["attacker"]
        window: int = env.state["window"]
        target: int = env.state["target"]
        keep: list[groom.Obj] = []
        pages: list[int] = []
        pfn = self._stale_pipe_page(env, keep, pages)
        stale = StalePageRef(pfn)
        with env.syscall():
            kapi.user_touch(env, att, window, write=True)
        table = kapi.table_pfn(env, att, window, "pte")
        env.trace.count("reclaimed", int(table == pfn))
        with env.syscall():
            tag = pointer_tag(stale.pointer(env))
            env.trace.count("write_tag_match_all" if tag == 0xFF else "write_tag_of_page")
            stale.write_u64(env, 8, kapi.user_rw_entry(env, target, "pte"))
        env.user_step()
        va = window + env.k.machine.page_size
        if kapi.user_read(env, att, va, len(SECRET)) == SECRET and kapi.user_write_lands(
            env, att, va + 64, b"pwned!!!", target, 64
        ):
            return succeeded(
                "PTE table reclaimed the stale pipe page; the pipe write forged "
                "an entry giving user R/W of the target"
            )
        if table != pfn:
            return failed(
                "groom missed: the new PTE table is not the stale pipe page (now "
                f"{kapi.describe_pfn(env, pfn)})"
            )
        return failed("the forged entry is not in effect")


@register_scenario
class PageUafFile(_PageUaf):
    """S4-B — stale pipe page reclaimed as a filp slab page; f_mode overwritten."""

    id: ClassVar[str] = "S4-B"
    title: ClassVar[str] = "page UAF (pipe_buffer) reclaimed as struct file slab; f_mode"
    spec: ClassVar[str] = "threats-and-peers.md §4.4, §7 S4 variant B; [R47]"

    def prepare(self, env: AttackEnv) -> None:
        super().prepare(env)
        env.state["filp"] = kapi.filp_cache(env)

    def trial(self, env: AttackEnv) -> TrialResult:
        cache = env.state["filp"]
        keep: list[groom.Obj] = []
        pages: list[int] = []
        pfn = self._stale_pipe_page(env, keep, pages)
        stale = StalePageRef(pfn)
        files: list[groom.Obj] = []
        with env.syscall():
            for _ in range(2 * cache.objects):
                f = groom.kmalloc(env, FILE_SIZE, cache=cache)
                env.kwrite(f.ptr + F_MODE, FMODE_READ.to_bytes(4, "little"), corrupting=False)
                files.append(f)
        shift = env.k.machine.page_shift
        reclaimed = any(f.pa >> shift == pfn for f in files)
        env.trace.count("reclaimed", int(reclaimed))
        with env.syscall():
            tag = pointer_tag(stale.pointer(env))
            env.trace.count("write_tag_match_all" if tag == 0xFF else "write_tag_of_page")
            for off in range(0, env.k.machine.page_size - cache.size + 1, cache.size):
                stale.write(env, off + F_MODE, (FMODE_READ | FMODE_WRITE).to_bytes(4, "little"))
        for f in files:
            env.user_step()
            mode = int.from_bytes(env.kread(f.ptr + F_MODE, 4), "little")
            if mode & FMODE_WRITE:
                return succeeded(
                    "filp slab reclaimed the stale pipe page; FMODE_WRITE set on "
                    "a read-only file (write() allowed)"
                )
        if not reclaimed:
            return failed(
                "groom missed: no new filp slab took the stale pipe page (now "
                f"{kapi.describe_pfn(env, pfn)})"
            )
        return failed("reclaimed, but no file gained FMODE_WRITE")
