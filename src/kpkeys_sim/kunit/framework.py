"""A small model of KUnit: suites, cases, expectations, skips, deferred actions.

Reference: ``include/kunit/test.h``, ``include/kunit/assert.h``,
``include/kunit/resource.h`` and ``lib/kunit/{test,assert,executor,
try-catch,user_alloc}.c`` (Linux 6.6+).  The KTAP lines are built by
:mod:`kpkeys_sim.kunit.ktap`.

What is modelled:

* ``struct kunit`` (:class:`Kunit`): the case's name, status, status comment
  and log; ``test.k`` is the kernel the case runs on (the model passes the
  kernel explicitly, see ``kernel/kernel.py``).
* Expectations and assertions with the kernel's diagnostics
  (``kunit_fail`` → ``kunit_assert_prologue`` + the assertion's format
  function, printed by ``kunit_err`` as ``    # <case>: ...``).  An
  expectation marks the case failed and continues; an assertion also aborts
  the case (``kunit_try_catch_throw``).  The left/right texts
  (``#left``/``#right`` in the C macros) are the source text of the
  arguments at the call site, recovered from the caller's frame (Python 3.11
  instruction positions); the location is the caller's file relative to the
  directory holding the ``kpkeys_sim`` package and its line number (the
  kernel prints ``__FILE__`` relative to the source root).
* ``kunit_skip`` / ``kunit_mark_skipped`` (the status comment becomes the
  ``# SKIP`` directive).
* Deferred actions (``kunit_add_action``, ``kunit_add_action_or_reset``):
  run in reverse order of registration after the case and its suite's
  ``exit`` (``kunit_cleanup``).
* Each case runs in its own kernel thread (``kunit_try_catch`` runs the case
  in a kthread): a modelled oops, kernel BUG or unhandled hardware fault in
  the case is caught as the kthread dying, logged as ``try faulted`` and fails
  the case; the run goes on with the next case.  A Python error in the model
  itself (``TypeError``, ...) is not a kernel event and propagates.
* ``kunit_vm_mmap`` (``lib/kunit/user_alloc.c``): gives the case's kthread an
  mm if it has none (``kunit_attach_mm``) and maps user memory in it; the mm is
  released at cleanup.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import NoReturn

from kpkeys_sim.kernel.arch import PkeyRegUnavailableError
from kpkeys_sim.kernel.errors import ENOMEM, KernelBug, Oops
from kpkeys_sim.kernel.kernel import Kernel
from kpkeys_sim.kunit.ktap import (
    KUNIT_SUBSUBTEST_INDENT,
    KUNIT_SUBTEST_INDENT,
    KunitStatus,
    ktap_case_line,
    ktap_header,
    ktap_stats_lines,
    ktap_suite_end,
    ktap_suite_start,
)
from kpkeys_sim.machine.mmu import Fault

__all__ = [
    "KUNIT_ASSERT_EQ",
    "KUNIT_ASSERT_EQ_MSG",
    "KUNIT_ASSERT_NE",
    "KUNIT_ASSERT_NE_MSG",
    "KUNIT_ASSERT_NOT_NULL",
    "KUNIT_ASSERT_NOT_NULL_MSG",
    "KUNIT_ASSERT_TRUE",
    "KUNIT_ASSERT_TRUE_MSG",
    "KUNIT_CASE",
    "KUNIT_EXPECT_EQ",
    "KUNIT_EXPECT_EQ_MSG",
    "KUNIT_EXPECT_FALSE",
    "KUNIT_EXPECT_FALSE_MSG",
    "KUNIT_EXPECT_NE",
    "KUNIT_EXPECT_NE_MSG",
    "KUNIT_EXPECT_TRUE",
    "KUNIT_EXPECT_TRUE_MSG",
    "KUNIT_FAIL",
    "Kunit",
    "KunitCase",
    "KunitCaseResult",
    "KunitResult",
    "KunitSuite",
    "KunitSuiteResult",
    "kunit_add_action",
    "kunit_add_action_or_reset",
    "kunit_attach_mm",
    "kunit_err",
    "kunit_info",
    "kunit_mark_skipped",
    "kunit_run_tests",
    "kunit_skip",
    "kunit_vm_mmap",
]


class _KunitAbort(Exception):
    """Thrown by a failed assertion or ``kunit_skip`` to end the case."""


#: Kernel conditions that end a case as "the kthread died" (the case fails).
_KTHREAD_DEATH: tuple[type[BaseException], ...] = (Oops, KernelBug, Fault, PkeyRegUnavailableError)


class Kunit:
    """``struct kunit``: the state of one running case."""

    __slots__ = ("_actions", "k", "log", "name", "priv", "status", "status_comment")

    def __init__(self, k: Kernel, name: str) -> None:
        self.k = k
        self.name = name
        self.status = KunitStatus.KUNIT_SUCCESS
        self.status_comment = ""
        #: The lines the case printed (``kunit_log``), in order.
        self.log: list[str] = []
        #: Free slot for the suite's init to hand state to the case (``test->priv``).
        self.priv: object = None
        self._actions: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Kunit {self.name} {self.status.name}>"


KunitFn = Callable[[Kunit], None]


@dataclass(frozen=True, slots=True)
class KunitCase:
    """``struct kunit_case``: a name and the function run for it."""

    name: str
    run: KunitFn


def KUNIT_CASE(fn: KunitFn) -> KunitCase:
    """``KUNIT_CASE(fn)``: a case named after its function."""
    return KunitCase(fn.__name__, fn)


@dataclass(frozen=True, slots=True)
class KunitSuite:
    """``struct kunit_suite``: a name, its cases, and optional per-case init/exit.

    ``module`` is what ``# module:`` prints (the ``KBUILD_MODNAME`` of the file
    that defines the cases).  ``init`` runs before each case (a failed
    assertion in it ends the case), ``exit`` after each case, before the
    deferred actions.
    """

    name: str
    cases: tuple[KunitCase, ...]
    module: str | None = None
    init: KunitFn | None = None
    exit: KunitFn | None = None


# --- logging -------------------------------------------------------------------------------


def _printk(test: Kunit, text: str) -> None:
    """``kunit_log``: one printk; embedded newlines stay (continuations are unprefixed)."""
    test.log.extend(text.split("\n"))


def kunit_info(test: Kunit, msg: str) -> None:
    """``kunit_info(test, fmt, ...)``: ``    # <case>: <msg>``."""
    _printk(test, f"{KUNIT_SUBTEST_INDENT}# {test.name}: {msg}")


def kunit_err(test: Kunit, msg: str) -> None:
    """``kunit_err(test, fmt, ...)``: same format as :func:`kunit_info`, at KERN_ERR."""
    _printk(test, f"{KUNIT_SUBTEST_INDENT}# {test.name}: {msg}")


# --- skipping and actions --------------------------------------------------------------------


def kunit_mark_skipped(test: Kunit, msg: str) -> None:
    """``kunit_mark_skipped``: status SKIPPED with ``msg`` as the directive; the case goes on."""
    test.status = KunitStatus.KUNIT_SKIPPED
    test.status_comment = msg


def kunit_skip(test: Kunit, msg: str) -> NoReturn:
    """``kunit_skip``: mark the case skipped with ``msg`` and end it now."""
    kunit_mark_skipped(test, msg)
    raise _KunitAbort()


def kunit_add_action(test: Kunit, action: Callable[[], None]) -> int:
    """``kunit_add_action``: run ``action`` when the case ends (LIFO); returns 0."""
    test._actions.append(action)
    return 0


def kunit_add_action_or_reset(test: Kunit, action: Callable[[], None]) -> int:
    """``kunit_add_action_or_reset``: as :func:`kunit_add_action` (registration cannot fail)."""
    return kunit_add_action(test, action)


# --- expectations and assertions (lib/kunit/assert.c) -------------------------------------


def _src_root() -> str:
    # The directory holding the kpkeys_sim package: __FILE__ is printed relative to it.
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _loc(frame: FrameType) -> str:
    path = os.path.abspath(frame.f_code.co_filename)
    root = _src_root()
    rel = os.path.relpath(path, root) if path.startswith(root + os.sep) else os.path.basename(path)
    return f"{rel}:{frame.f_lineno}"


def _arg_texts(frame: FrameType, nargs: int) -> list[str] | None:
    """Source text of the first ``nargs`` arguments after ``test`` of the call being executed."""
    pos = inspect.getframeinfo(frame, context=0).positions
    if pos is None or pos.lineno is None or pos.end_lineno is None:
        return None
    if pos.col_offset is None or pos.end_col_offset is None:
        return None
    fname = frame.f_code.co_filename
    lines = [linecache.getline(fname, n) for n in range(pos.lineno, pos.end_lineno + 1)]
    if not lines or not all(lines):
        return None
    if len(lines) == 1:
        src = lines[0][pos.col_offset : pos.end_col_offset]
    else:
        src = lines[0][pos.col_offset :] + "".join(lines[1:-1]) + lines[-1][: pos.end_col_offset]
    try:
        call = ast.parse(src.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(call, ast.Call) or len(call.args) < nargs + 1:
        return None
    out = []
    for a in call.args[1 : nargs + 1]:
        seg = ast.get_source_segment(src.strip(), a)
        if seg is None:
            return None
        out.append(" ".join(seg.split()))
    return out


def _caller() -> FrameType:
    # frame 0: _caller, 1: the _fail_* helper, 2: the KUNIT_* function, 3: the test code.
    return sys._getframe(3)


def _is_literal(text: str, value: int) -> bool:
    """``is_literal``: the text is the decimal rendering of the value."""
    return text == str(value)


def _msg(fmt: str | None, args: tuple[object, ...]) -> str | None:
    if fmt is None:
        return None
    return fmt % args if args else fmt


def _report(test: Kunit, frame: FrameType, assertion: bool, body: str) -> None:
    """``kunit_fail``: set the failure and print the prologue and the formatted assertion."""
    test.status = KunitStatus.KUNIT_FAILURE
    kind = "ASSERTION" if assertion else "EXPECTATION"
    kunit_err(test, f"{kind} FAILED at {_loc(frame)}\n{body}")


def _with_msg(body: str, msg: str | None) -> str:
    """``kunit_assert_print_msg``: the message on its own line, unindented."""
    return body if msg is None else f"{body}\n{msg}"


def _hex64(v: int) -> str:
    return f"{v & 0xFFFF_FFFF_FFFF_FFFF:x}"


def _binary(
    test: Kunit, op: str, ok: bool, left: int, right: int, assertion: bool, msg: str | None
) -> None:
    if ok:
        return
    frame = _caller()
    texts = _arg_texts(frame, 2) or [repr(left), repr(right)]
    lt, rt = texts
    body = f"{KUNIT_SUBTEST_INDENT}Expected {lt} {op} {rt}, but"
    parts = []
    if not _is_literal(lt, left):
        parts.append(f"{KUNIT_SUBSUBTEST_INDENT}{lt} == {left} (0x{_hex64(left)})")
    if not _is_literal(rt, right):
        parts.append(f"{KUNIT_SUBSUBTEST_INDENT}{rt} == {right} (0x{_hex64(right)})")
    if parts:
        body += "\n" + "\n".join(parts)
    _report(test, frame, assertion, _with_msg(body, msg))
    if assertion:
        raise _KunitAbort()


def _unary(test: Kunit, cond: bool, expected: bool, assertion: bool, msg: str | None) -> None:
    if bool(cond) == expected:
        return
    frame = _caller()
    texts = _arg_texts(frame, 1) or [repr(cond)]
    state = "true, but is false" if expected else "false, but is true"
    body = f"{KUNIT_SUBTEST_INDENT}Expected {texts[0]} to be {state}"
    _report(test, frame, assertion, _with_msg(body, msg))
    if assertion:
        raise _KunitAbort()


def _not_null(test: Kunit, ptr: object, assertion: bool, msg: str | None) -> None:
    if ptr is not None:
        return
    frame = _caller()
    texts = _arg_texts(frame, 1) or ["ptr"]
    body = (
        f"{KUNIT_SUBTEST_INDENT}Expected {texts[0]} != NULL, but\n"
        f"{KUNIT_SUBSUBTEST_INDENT}{texts[0]} == {0:016x}\n"
        f"{KUNIT_SUBSUBTEST_INDENT}NULL == {0:016x}"
    )
    _report(test, frame, assertion, _with_msg(body, msg))
    if assertion:
        raise _KunitAbort()


def KUNIT_EXPECT_EQ(test: Kunit, left: int, right: int) -> None:
    """``KUNIT_EXPECT_EQ(test, left, right)``."""
    _binary(test, "==", left == right, left, right, False, None)


def KUNIT_EXPECT_EQ_MSG(test: Kunit, left: int, right: int, fmt: str, *args: object) -> None:
    """``KUNIT_EXPECT_EQ_MSG(test, left, right, fmt, ...)``."""
    _binary(test, "==", left == right, left, right, False, _msg(fmt, args))


def KUNIT_EXPECT_NE(test: Kunit, left: int, right: int) -> None:
    """``KUNIT_EXPECT_NE(test, left, right)``."""
    _binary(test, "!=", left != right, left, right, False, None)


def KUNIT_EXPECT_NE_MSG(test: Kunit, left: int, right: int, fmt: str, *args: object) -> None:
    """``KUNIT_EXPECT_NE_MSG(test, left, right, fmt, ...)``."""
    _binary(test, "!=", left != right, left, right, False, _msg(fmt, args))


def KUNIT_ASSERT_NE(test: Kunit, left: int, right: int) -> None:
    """``KUNIT_ASSERT_NE(test, left, right)``."""
    _binary(test, "!=", left != right, left, right, True, None)


def KUNIT_ASSERT_NE_MSG(test: Kunit, left: int, right: int, fmt: str, *args: object) -> None:
    """``KUNIT_ASSERT_NE_MSG(test, left, right, fmt, ...)``."""
    _binary(test, "!=", left != right, left, right, True, _msg(fmt, args))


def KUNIT_ASSERT_EQ(test: Kunit, left: int, right: int) -> None:
    """``KUNIT_ASSERT_EQ(test, left, right)``: as EXPECT, and ends the case on failure."""
    _binary(test, "==", left == right, left, right, True, None)


def KUNIT_ASSERT_EQ_MSG(test: Kunit, left: int, right: int, fmt: str, *args: object) -> None:
    """``KUNIT_ASSERT_EQ_MSG(test, left, right, fmt, ...)``."""
    _binary(test, "==", left == right, left, right, True, _msg(fmt, args))


def KUNIT_EXPECT_TRUE(test: Kunit, cond: bool) -> None:
    """``KUNIT_EXPECT_TRUE(test, cond)``."""
    _unary(test, cond, True, False, None)


def KUNIT_EXPECT_TRUE_MSG(test: Kunit, cond: bool, fmt: str, *args: object) -> None:
    """``KUNIT_EXPECT_TRUE_MSG(test, cond, fmt, ...)``."""
    _unary(test, cond, True, False, _msg(fmt, args))


def KUNIT_EXPECT_FALSE(test: Kunit, cond: bool) -> None:
    """``KUNIT_EXPECT_FALSE(test, cond)``."""
    _unary(test, cond, False, False, None)


def KUNIT_EXPECT_FALSE_MSG(test: Kunit, cond: bool, fmt: str, *args: object) -> None:
    """``KUNIT_EXPECT_FALSE_MSG(test, cond, fmt, ...)``."""
    _unary(test, cond, False, False, _msg(fmt, args))


def KUNIT_ASSERT_TRUE(test: Kunit, cond: bool) -> None:
    """``KUNIT_ASSERT_TRUE(test, cond)``."""
    _unary(test, cond, True, True, None)


def KUNIT_ASSERT_TRUE_MSG(test: Kunit, cond: bool, fmt: str, *args: object) -> None:
    """``KUNIT_ASSERT_TRUE_MSG(test, cond, fmt, ...)``."""
    _unary(test, cond, True, True, _msg(fmt, args))


def KUNIT_ASSERT_NOT_NULL(test: Kunit, ptr: object) -> None:
    """``KUNIT_ASSERT_NOT_NULL(test, ptr)`` (``None`` is NULL)."""
    _not_null(test, ptr, True, None)


def KUNIT_ASSERT_NOT_NULL_MSG(test: Kunit, ptr: object, fmt: str, *args: object) -> None:
    """``KUNIT_ASSERT_NOT_NULL_MSG(test, ptr, fmt, ...)`` (``None`` is NULL)."""
    _not_null(test, ptr, True, _msg(fmt, args))


def KUNIT_FAIL(test: Kunit, fmt: str, *args: object) -> None:
    """``KUNIT_FAIL(test, fmt, ...)``: an unconditional expectation failure with the message."""
    frame = sys._getframe(1)
    _report(test, frame, False, fmt % args if args else fmt)


# --- kunit_vm_mmap (lib/kunit/user_alloc.c) ------------------------------------------------


def kunit_attach_mm(test: Kunit) -> int:
    """``kunit_attach_mm()``: give the case's kthread an mm if it has none; 0 or ``-ENOMEM``.

    ``mm_alloc()`` then ``kthread_use_mm()`` (``tsk->mm = tsk->active_mm =
    mm`` and ``switch_mm``; the lazily borrowed ``active_mm`` is dropped).  "It
    will be cleaned up when the process dies": the kthread's exit
    (``exit_mm`` → ``mmput``) unmaps and frees it.
    """
    from kpkeys_sim.kernel import sched
    from kpkeys_sim.kernel.mm.fork import mm_alloc

    k = test.k
    task = sched.current(k)
    if task.mm is not None:
        return 0
    mm = mm_alloc(k, name="kunit")
    if mm is None:
        return -ENOMEM
    active = task.active_mm
    task.active_mm = mm
    task.mm = mm
    sched.switch_mm(k, active, mm)
    if active is not None and active is not mm and active is not getattr(k, "init_mm", None):
        from kpkeys_sim.kernel.mm.fork import mmdrop

        mmdrop(k, active)
    return 0


def kunit_vm_mmap(
    test: Kunit, addr: int, length: int, prot: int, flags: int, offset: int = 0
) -> int:
    """``kunit_vm_mmap(test, NULL, addr, len, prot, flag, offset)``: anonymous user memory.

    A KUnit resource: its init attaches an mm to the case's kthread
    (:func:`kunit_attach_mm`) and calls ``vm_mmap`` in ``current->mm``; its
    release (a deferred action) is ``vm_munmap``.  Returns the user address,
    or 0 on failure.
    """
    from kpkeys_sim.kernel import sched
    from kpkeys_sim.kernel.mm.mmap import do_mmap, do_munmap

    k = test.k
    if kunit_attach_mm(test):
        return 0
    mm = sched.current(k).mm
    assert mm is not None
    uaddr = do_mmap(k, mm, addr, length, prot, flags, None, offset)
    if uaddr < 0:
        return 0

    def _vm_munmap() -> None:
        # The kthread's mm may already be gone if the case exited it itself.
        if sched.current(k).mm is mm:
            do_munmap(k, mm, uaddr, length)

    kunit_add_action(test, _vm_munmap)
    return uaddr


# --- running ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KunitCaseResult:
    """The outcome of one case: its status, SKIP reason and the lines it printed."""

    number: int
    name: str
    status: KunitStatus
    status_comment: str
    log: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KunitSuiteResult:
    """The outcome of one suite."""

    number: int
    name: str
    status: KunitStatus
    cases: tuple[KunitCaseResult, ...]

    def case(self, name: str) -> KunitCaseResult:
        """The result of case ``name`` (``KeyError`` naming it if absent)."""
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(f"no case {name!r} in suite {self.name!r}")

    def count(self, status: KunitStatus) -> int:
        """Number of cases that ended with ``status``."""
        return sum(1 for c in self.cases if c.status is status)


@dataclass(frozen=True, slots=True)
class KunitResult:
    """A whole KUnit run: the KTAP text and the per-suite results."""

    ktap: str
    suites: tuple[KunitSuiteResult, ...] = field(default=())

    @property
    def passed(self) -> int:
        """Cases that passed, over all suites."""
        return sum(s.count(KunitStatus.KUNIT_SUCCESS) for s in self.suites)

    @property
    def failed(self) -> int:
        """Cases that failed, over all suites."""
        return sum(s.count(KunitStatus.KUNIT_FAILURE) for s in self.suites)

    @property
    def skipped(self) -> int:
        """Cases that were skipped, over all suites."""
        return sum(s.count(KunitStatus.KUNIT_SKIPPED) for s in self.suites)

    @property
    def total(self) -> int:
        """All cases."""
        return sum(len(s.cases) for s in self.suites)

    @property
    def ok(self) -> bool:
        """True when no case failed (``kunit.py`` exits 0)."""
        return self.failed == 0

    def suite(self, name: str) -> KunitSuiteResult:
        """The result of suite ``name`` (``KeyError`` naming it if absent)."""
        for s in self.suites:
            if s.name == name:
                return s
        raise KeyError(f"no suite {name!r} in this run")


@contextmanager
def _case_kthread(k: Kernel, name: str) -> Iterator[None]:
    """``kunit_try_catch_run``: run the body in a fresh kthread on ``k.cpu``.

    ``kthread_run`` (``kernel_clone`` of ``current``, a kernel thread with no
    mm) and a switch to it; at the end the kthread exits (``do_exit``:
    ``exit_mm`` releases an mm :func:`kunit_attach_mm` gave it), the CPU
    switches back, the zombie is reaped and the lazily borrowed mm dropped.
    If a case that died left that teardown impossible (a second oops), the
    model logs it and switches back anyway; the kthread's mm is abandoned.
    """
    from kpkeys_sim.kernel import sched
    from kpkeys_sim.kernel.mm.fork import do_exit, kernel_clone, release_task

    prev = sched.current(k)
    thread = kernel_clone(k, prev, comm=name)
    if thread is None:
        raise KernelBug("kunit: kthread_run() failed: out of memory")
    sched.schedule_to(k, thread)
    try:
        yield
    finally:
        try:
            if sched.current(k) is thread:
                do_exit(k, 0, next_task=prev)
                release_task(k, thread)
                sched.finish_lazy_tlb(k)
        except _KTHREAD_DEATH as exc:
            # The dead case left the kernel unable to tear its kthread down
            # cleanly (the kernel would oops again here); log it and go on.
            k.printk(f"kunit: kthread exit: {type(exc).__name__}: {exc}")
            if sched.current(k) is thread:
                thread.mm = None
                sched.schedule_to(k, prev)


def _guarded(test: Kunit, fn: Callable[[], None]) -> None:
    """Run ``fn`` as the try part of ``kunit_try_catch``."""
    try:
        fn()
    except _KunitAbort:
        pass
    except _KTHREAD_DEATH as exc:
        test.status = KunitStatus.KUNIT_FAILURE
        kunit_err(test, "try faulted")
        test.k.printk(f"kunit: {test.name}: {type(exc).__name__}: {exc}")


def _run_case(k: Kernel, suite: KunitSuite, case: KunitCase) -> Kunit:
    """``kunit_run_case_catch_errors``: init, case, then exit and the deferred actions."""
    test = Kunit(k, case.name)
    saved_exc_depth = len(k.cpu.exception_stack)
    with _case_kthread(k, "kunit_try_catch_thread"):

        def body() -> None:
            if suite.init is not None:
                suite.init(test)
            case.run(test)

        _guarded(test, body)

        def cleanup() -> None:
            if suite.exit is not None:
                suite.exit(test)
            while test._actions:
                test._actions.pop()()

        _guarded(test, cleanup)
        # A case that died inside an exception handler left it unbalanced: the
        # kthread is gone, its exception frames with it.
        while len(k.cpu.exception_stack) > saved_exc_depth:
            k.cpu.exception_return()
    return test


def kunit_run_tests(k: Kernel, suites: Sequence[KunitSuite]) -> KunitResult:
    """``kunit_exec_run_tests``: run ``suites`` in order on ``k`` and print KTAP.

    Suite numbers count from 1 over the whole run (``kunit_suite_counter``).
    """
    lines = ktap_header(len(suites))
    results: list[KunitSuiteResult] = []
    for number, suite in enumerate(suites, start=1):
        lines.extend(ktap_suite_start(suite.name, suite.module, len(suite.cases)))
        case_results: list[KunitCaseResult] = []
        for i, case in enumerate(suite.cases, start=1):
            test = _run_case(k, suite, case)
            lines.extend(test.log)
            lines.append(ktap_case_line(test.status, i, case.name, test.status_comment))
            case_results.append(
                KunitCaseResult(i, case.name, test.status, test.status_comment, tuple(test.log))
            )
        res = KunitSuiteResult(number, suite.name, _suite_status(case_results), tuple(case_results))
        lines.extend(
            ktap_stats_lines(
                suite.name,
                res.count(KunitStatus.KUNIT_SUCCESS),
                res.count(KunitStatus.KUNIT_FAILURE),
                res.count(KunitStatus.KUNIT_SKIPPED),
            )
        )
        lines.append(ktap_suite_end(res.status, number, suite.name))
        results.append(res)
    return KunitResult("".join(line + "\n" for line in lines), tuple(results))


def _suite_status(cases: Sequence[KunitCaseResult]) -> KunitStatus:
    """``kunit_suite_has_succeeded``: failed if any failed, skipped if none passed."""
    status = KunitStatus.KUNIT_SKIPPED
    for c in cases:
        if c.status is KunitStatus.KUNIT_FAILURE:
            return KunitStatus.KUNIT_FAILURE
        if c.status is KunitStatus.KUNIT_SUCCESS:
            status = KunitStatus.KUNIT_SUCCESS
    return status
