"""Process life cycle: mm_alloc, fork (dup_mm/dup_mmap), exit, reaping, mm reference counts.

Models ``kernel/fork.c`` (``mm_alloc``, ``mmget``/``mmput``, ``mmgrab``/
``mmdrop``/``__mmdrop``, ``dup_mm``, ``copy_mm``, ``kernel_clone``; Linux
6.15 moved ``dup_mmap`` to ``mm/mmap.c``), ``kernel/exit.c`` (``do_exit``,
``exit_mm``, ``release_task``, ``wait_task_zombie``) and ``fs/exec.c``
(``exec_mmap``: a new process gets a fresh mm).

Fork and TLB maintenance: ``dup_mmap()`` write-protects the parent's private
writable PTEs while copying (``copy_pte_range``) and ends with
``flush_tlb_mm(oldmm)`` — one ``TLBI ASIDE1IS`` for the parent, so no CPU
keeps a stale writable entry for a page now shared copy-on-write.  (On
arm64 ``copy_page_range`` itself issues no TLB flush; the
``mmu_notifier_invalidate_range_*`` calls around it are for secondary MMUs
only.)  The child's new tables need no flush: its ASID is fresh or was
invalidated when reused (``kernel/sched.py``).

Exit: ``do_exit`` → ``exit_mm`` keeps a lazy-TLB reference (``mmgrab``) on
the mm while it is still loaded in TTBR0 and drops the user reference
(``mmput`` → ``exit_mmap`` when it was the last user).  The context switch
away from the dead task drops the lazy reference (``finish_task_switch`` →
``mmdrop`` → ``__mmdrop``: ``pgd_free`` and the ASID is released) — or, if
the CPU switches to a kernel thread (the idle task), the reference moves to
it until the CPU next runs a user task (:func:`kpkeys_sim.kernel.sched.
finish_lazy_tlb` does that switch explicitly).
"""

from __future__ import annotations

from kpkeys_sim.kernel.errors import ENOMEM, KernelBug
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kernel.mm.memory import anon_vma, file, get_file, user_mm_init
from kpkeys_sim.kernel.mm.mm_types import (
    VM_DONTCOPY,
    VM_WIPEONFORK,
    insert_vm_struct,
    mm_struct,
    vm_area_struct,
)
from kpkeys_sim.kernel.mm.mmap import exit_mmap
from kpkeys_sim.kernel.mm.pgalloc import pgd_alloc, pgd_free
from kpkeys_sim.kernel.mm.tlbflush import flush_tlb_mm
from kpkeys_sim.kernel.sched import (
    EXIT_DEAD,
    EXIT_ZOMBIE,
    PF_EXITING,
    PF_KTHREAD,
    asid_free,
    current,
    dup_task_struct,
    schedule_to,
    task_struct,
)
from kpkeys_sim.machine.events import declare_event

__all__ = [
    "EXIT",
    "FORK",
    "POR_EL0_INIT",
    "__mmdrop",
    "copy_mm",
    "create_user_task",
    "do_exit",
    "do_fork",
    "dup_mm",
    "dup_mmap",
    "exec_mmap",
    "kernel_clone",
    "kernel_wait",
    "mm_alloc",
    "mmdrop",
    "mmget",
    "mmgrab",
    "mmput",
    "release_task",
    "vm_area_dup",
]

FORK = declare_event("fork", "forks of a process (kernel_clone with a new mm)", "kernel")
EXIT = declare_event("exit", "task exits (do_exit)", "kernel")


# --- mm reference counts -------------------------------------------------------------------------


def mm_alloc(k: Kernel, name: str = "mm") -> mm_struct | None:
    """``mm_alloc()``: an empty mm with a new pgd (``mm_init`` → ``mm_alloc_pgd``), or None."""
    user_mm_init(k)
    mm = mm_struct(0, 0, name=name)
    pgd = pgd_alloc(k, mm)
    if pgd is None:
        return None
    mm.pgd = pgd
    mm.pgd_phys = k.pgt.pa(pgd)
    return mm


def mmgrab(mm: mm_struct) -> None:
    """``mmgrab(mm)``: keep the ``mm_struct`` (and its pgd) alive."""
    mm.mm_count += 1


def __mmdrop(k: Kernel, mm: mm_struct) -> None:
    """``__mmdrop(mm)``: ``mm_free_pgd`` → ``pgd_free``, ``destroy_context`` (release the ASID)."""
    if mm is k.init_mm:
        raise KernelBug("__mmdrop of init_mm")
    if len(mm.mmap) or mm.nr_ptes or mm.nr_pmds or mm.nr_puds:
        raise KernelBug(f"__mmdrop of {mm!r} with VMAs or page tables left")
    for t in k.cpu_curr:
        if t is not None and t.active_mm is mm:
            raise KernelBug(f"__mmdrop of {mm!r} while {t!r} has it loaded")
    pgd_free(k, mm, mm.pgd)
    mm.pgd = 0
    mm.pgd_phys = 0
    if mm.context_id:
        asid_free(k, mm.context_id)
        mm.context_id = 0


def mmdrop(k: Kernel, mm: mm_struct) -> None:
    """``mmdrop(mm)``: drop an ``mm_count`` reference; the last one frees the mm."""
    if mm.mm_count <= 0:
        raise KernelBug(f"mmdrop of {mm!r} with mm_count {mm.mm_count}")
    mm.mm_count -= 1
    if mm.mm_count == 0:
        __mmdrop(k, mm)


def mmget(mm: mm_struct) -> None:
    """``mmget(mm)``: a user reference (the address space stays mapped)."""
    mm.mm_users += 1


def mmput(k: Kernel, mm: mm_struct) -> None:
    """``mmput(mm)``: drop a user reference; the last one runs ``exit_mmap`` then ``mmdrop``."""
    if mm.mm_users <= 0:
        raise KernelBug(f"mmput of {mm!r} with mm_users {mm.mm_users}")
    mm.mm_users -= 1
    if mm.mm_users == 0:
        exit_mmap(k, mm)
        mmdrop(k, mm)


# --- fork -----------------------------------------------------------------------------------------


def vm_area_dup(vma: vm_area_struct, mm: mm_struct) -> vm_area_struct:
    """``vm_area_dup(orig)``: a copy of ``vma`` for ``mm`` (file reference taken by the caller)."""
    new = vm_area_struct(
        mm,
        vma.vm_start,
        vma.vm_end,
        vma.vm_flags,
        vma.vm_page_prot,
        vm_file=vma.vm_file,
        vm_pgoff=vma.vm_pgoff,
    )
    return new


def dup_mmap(k: Kernel, mm: mm_struct, oldmm: mm_struct) -> int:
    """``dup_mmap(mm, oldmm)``: copy every VMA and its page tables, then ``flush_tlb_mm(oldmm)``.

    ``VM_DONTCOPY`` VMAs are skipped; ``VM_WIPEONFORK`` VMAs are copied empty.
    Each copied VMA gets its own anon_vma (``anon_vma_fork``) and a file
    reference; ``copy_page_range`` copies its tables.  Returns 0 or
    ``-ENOMEM`` (the flush is done either way, as in Linux).
    """
    from kpkeys_sim.kernel.mm.memory import copy_page_range

    retval = 0
    for mpnt in oldmm.mmap:
        if mpnt.vm_flags & VM_DONTCOPY:
            continue
        tmp = vm_area_dup(mpnt, mm)
        if isinstance(mpnt.anon_vma, anon_vma) and not mpnt.vm_flags & VM_WIPEONFORK:
            tmp.anon_vma = anon_vma(mpnt.anon_vma.root)
        if isinstance(tmp.vm_file, file):
            get_file(tmp.vm_file)
        if insert_vm_struct(mm, tmp):
            raise KernelBug("dup_mmap: overlapping VMAs in the parent")
        if not tmp.vm_flags & VM_WIPEONFORK:
            retval = copy_page_range(k, tmp, mpnt)
            if retval:
                break
    flush_tlb_mm(k, oldmm)
    return retval


def dup_mm(k: Kernel, oldmm: mm_struct) -> mm_struct | None:
    """``dup_mm(tsk, oldmm)``: a new mm (``mm_init``) filled by :func:`dup_mmap`, or None."""
    mm = mm_alloc(k, name=f"{oldmm.name}'")
    if mm is None:
        return None
    if dup_mmap(k, mm, oldmm):
        mmput(k, mm)
        return None
    return mm


def copy_mm(k: Kernel, tsk: task_struct, parent: task_struct) -> int:
    """``copy_mm(clone_flags, tsk)`` without ``CLONE_VM``: the child gets :func:`dup_mm`."""
    oldmm = parent.mm
    if oldmm is None:
        tsk.mm = None
        return 0
    mm = dup_mm(k, oldmm)
    if mm is None:
        return -ENOMEM
    tsk.mm = mm
    tsk.active_mm = mm
    return 0


def kernel_clone(
    k: Kernel, parent: task_struct | None = None, *, comm: str | None = None
) -> task_struct | None:
    """``kernel_clone()`` (fork: no ``CLONE_VM``): a new task with a copy of ``parent``'s mm.

    ``parent`` (default ``current``) must be running on ``k.cpu``.  The child
    is registered but not running: :func:`kpkeys_sim.kernel.sched.schedule_to`
    runs it.  Returns None when memory runs out (``-ENOMEM``).
    """
    p = current(k) if parent is None else parent
    child = dup_task_struct(k, p, comm)
    child.mm = None
    child.active_mm = None
    if copy_mm(k, child, p):
        _unhash(k, child)
        return None
    if p.mm is not None:
        k.machine.emit(FORK)
    return child


#: ``do_fork()`` was the name of ``kernel_clone()`` until Linux 5.10.
do_fork = kernel_clone


#: arm64 ``POR_EL0_INIT``: ``POR_ELx_PERM_PREP(0, POE_RWX)`` (pkey 0 RWX, the others none).
POR_EL0_INIT = 0x7


def exec_mmap(k: Kernel, task: task_struct, mm: mm_struct) -> None:
    """``exec_mmap(mm)`` + ``flush_thread``: replace a (not running) task's address space.

    The old mm, if any, loses this user (``mmput``).  With POE, ``flush_poe()``
    resets the user pkey register to ``POR_EL0_INIT`` (saved in the task's
    thread here since the task is not running).
    """
    if task.on_cpu is not None:
        raise KernelBug(f"exec_mmap: {task!r} is running (the model execs only new tasks)")
    old = task.mm
    task.mm = mm
    task.active_mm = mm
    task.flags &= ~PF_KTHREAD
    if k.machine.has_pkeys:
        task.thread.user_pkey_reg = POR_EL0_INIT
    if old is not None:
        mmput(k, old)


def create_user_task(k: Kernel, comm: str) -> task_struct:
    """A new user process with an empty mm, forked by ``current`` (not running yet).

    ``kernel_clone`` of ``current`` (the idle task, a kernel thread, or a user
    process whose address space is copied and then dropped) followed by
    ``execve``'s :func:`exec_mmap` with :func:`mm_alloc` — how every program
    starts.
    """
    child = kernel_clone(k, comm=comm)
    if child is None:
        raise KernelBug("create_user_task: out of memory")
    mm = mm_alloc(k, name=comm)
    if mm is None:
        _unhash(k, child)
        raise KernelBug("create_user_task: out of memory for the pgd")
    exec_mmap(k, child, mm)
    return child


# --- exit and reaping -----------------------------------------------------------------------------


def _unhash(k: Kernel, task: task_struct) -> None:
    k.sched.tasks.pop(task.pid, None)
    if task.parent is not None and task in task.parent.children:
        task.parent.children.remove(task)


def _exit_mm(k: Kernel, task: task_struct) -> None:
    """``exit_mm()``: keep a lazy-TLB reference on the loaded mm, drop the user reference."""
    mm = task.mm
    if mm is None:
        return
    mmgrab(mm)
    task.mm = None
    mmput(k, mm)


def do_exit(k: Kernel, code: int = 0, next_task: task_struct | None = None) -> None:
    """``do_exit(code)`` for ``current``: release the mm, become a zombie, switch away.

    The next task is ``next_task``, else the parent when it is a live task not
    running anywhere, else this CPU's idle task.  Children are reparented to
    the idle task of CPU 0 (the model has no init process to adopt them).
    """
    task = current(k)
    if task.pid == 0:
        raise KernelBug("do_exit of an idle task")
    task.flags |= PF_EXITING
    _exit_mm(k, task)
    task.exit_code = code
    task.exit_state = EXIT_ZOMBIE
    reaper = k.sched.idle[0]
    for c in list(task.children):
        c.parent = reaper
        reaper.children.append(c)
    task.children.clear()
    k.machine.emit(EXIT)
    nxt = next_task
    if nxt is None:
        par = task.parent
        if par is not None and par.pid and not par.exit_state and par.on_cpu is None:
            nxt = par
        else:
            nxt = k.sched.idle[k.cpu.cpu_id]
    task_exiting_switch(k, task, nxt)


def task_exiting_switch(k: Kernel, task: task_struct, nxt: task_struct) -> None:
    """``do_task_dead()`` → ``__schedule()``: the dead task switches to ``nxt`` for good."""
    schedule_to(k, nxt)
    task.on_cpu = None


def release_task(k: Kernel, task: task_struct) -> None:
    """``release_task(p)``: unhash a reaped zombie (its ``task_struct`` is gone)."""
    if task.exit_state != EXIT_ZOMBIE:
        raise KernelBug(f"release_task of {task!r} that is not a zombie")
    task.exit_state = EXIT_DEAD
    _unhash(k, task)


def kernel_wait(k: Kernel, parent: task_struct, pid: int | None = None) -> tuple[int, int] | None:
    """``wait4()`` → ``wait_task_zombie()``: reap a zombie child of ``parent``.

    Returns ``(pid, exit_code)`` of the reaped child (``pid`` None: any), or
    None when no child has exited (the model does not block).
    """
    for c in list(parent.children):
        if (pid is None or c.pid == pid) and c.exit_state == EXIT_ZOMBIE:
            code = c.exit_code
            release_task(k, c)
            return c.pid, code
    return None
