"""Replaying a trial prefix whose only random draws are the defense's hooks (KASAN/MTE tags).

A scenario's trial prefix (:meth:`Scenario.prefix`, S1's spray and
cross-cache groom) is deterministic in the kernel: which objects, slabs and
pages it allocates and frees does not depend on any random number.  Under
the tag-based defenses it still draws — every allocation gets a random tag
from the trial's generator — so it cannot simply be run once and
snapshotted; the campaign used to rerun the whole prefix (all its kernel
allocator work) in every trial.

This module records the prefix once instead, in the cell's kernel, with
every call the prefix makes into the defense's hooks logged in order (the
method, its arguments, its result and the attacker step it happened at).
The kernel and the environment are snapshotted *after* the prefix; a trial
restores that snapshot and the defense's state from *before* the prefix,
and where it would run the prefix (:meth:`Scenario.run_prefix_if_needed`,
which may come after steps of its own, e.g. S11's decoy) it replays the
logged hook calls on the trial's generator instead.  The
hooks draw the same numbers in the same order as they would inside the
trial, so the defense's state (tag storage, page tags), the generator's
state and the pointers the prefix's objects carry are exactly those of
running the prefix in the trial; the kernel's state is the same because
nothing the kernel does depends on the hooks' random draws.

What makes a prefix replayable, checked when it is recorded (otherwise the
campaign falls back to running the prefix in each trial):

* the scenario runs its prefix before anything else in the trial
  (:attr:`Scenario.prefix_first`; S11's decoy comes first, so S11 is not
  replayed) — the replay raises ``RuntimeError`` if an attacker step came
  first;
* the random generator is only used inside the logged hooks (a scenario
  drawing itself, e.g. S2's timing side channel, raises
  :class:`~kpkeys_sim.security.env.RandomnessUnavailableError`);
* the hooks are only ``slab_alloc``, ``slab_free``, ``slab_release``,
  ``page_alloc``, ``page_free``, ``slab_page`` and ``checkpoint``, never
  nested, and nothing else of the defense is called (``check_access``,
  ``page_pointer``: their results would flow into kernel accesses);
* replaying the log on the post-prefix kernel with the recording's
  generator reproduces every hook result and the defense's saved state
  (so the hooks depend on nothing that changed in the kernel meanwhile);
* the prefix leaves no trace of its own (no report, metric, note or
  corrupting write);
* the tagged pointers the hooks return reach the environment only inside
  the :class:`~kpkeys_sim.security.groom.Obj` that ``groom.kmalloc`` built
  from them (those are re-tagged in place by each replay), never as a bare
  integer, a set member or a dict key.

At trial time, the results of the hooks the kernel acts on (``slab_free``:
free now or quarantine; ``slab_release``: what to free) are compared with
the recorded ones; a difference raises ``RuntimeError`` instead of giving a
silently different result.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from kpkeys_sim.security.env import RandomnessUnavailableError
from kpkeys_sim.security.groom import Obj

if TYPE_CHECKING:
    from kpkeys_sim.security.env import AttackEnv
    from kpkeys_sim.security.scenarios.base import Scenario

__all__ = ["PrefixReplay", "record_prefix"]

#: The defense hooks a replayable prefix may call (each is replayed in order).
HOOKS = (
    "slab_alloc",
    "slab_free",
    "slab_release",
    "page_alloc",
    "page_free",
    "slab_page",
    "checkpoint",
)
#: Defense methods whose results would flow into kernel accesses: not replayable.
FORBIDDEN = ("check_access", "page_pointer", "check_ttbr")

# Replay-time result checks.
_NO_CHECK = 0
_CHECK_EQ = 1
_CHECK_PAS = 2

_setattr = object.__setattr__
_consume: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend


class PrefixReplay:
    """A recorded prefix: the hook calls to replay per trial, and the objects to re-tag."""

    __slots__ = ("calls", "end_step", "make_rng", "objs", "pre_state")

    def __init__(
        self,
        calls: list[tuple[str, tuple[Any, ...], Any, int]],
        objs: list[tuple[int, Obj]],
        end_step: int,
        pre_state: Any,
        make_rng: Callable[[], np.random.Generator],
    ) -> None:
        #: ``(hook name, arguments after env, recorded result, attacker step)`` in call order.
        self.calls = calls
        #: ``(index in calls of the slab_alloc, the Obj built from its result)``.
        self.objs = objs
        #: The attacker step the prefix ends at (trial steps count from 0).
        self.end_step = end_step
        #: The defense's saved state before the prefix (what each trial restores).
        self.pre_state = pre_state
        #: The recording's generator (for the checks).
        self.make_rng = make_rng

    def _call_hooks(self, env: AttackEnv) -> list[Any]:
        """Replay by calling each hook (from the pre-prefix defense state)."""
        df = env.defense
        trace = env.trace
        results = []
        for name, args, _, step in self.calls:
            trace.step = step
            results.append(getattr(df, name)(env, *args))
        return results

    def _compiled(self, env: AttackEnv) -> Callable[[], list[Any]] | None:
        """The defense's vectorised replay (``compile_replay``), if it has one that checks out.

        It must give the same results and the same defense state as calling
        the hooks, for the recording's generator.
        """
        df = env.defense
        compile_replay = getattr(df, "compile_replay", None)
        if compile_replay is None:
            return None
        df.restore(self.pre_state)
        fast: Callable[[], list[Any]] | None = compile_replay(
            env, [(name, args) for name, args, _, _ in self.calls]
        )
        if fast is None:
            return None
        try:
            df.restore(self.pre_state)
            env._rng = self.make_rng()
            want = self._call_hooks(env)
            want_state = df.save()
            df.restore(self.pre_state)
            env._rng = self.make_rng()
            got = fast()
            got_state = df.save()
        finally:
            env._rng = None
        if not (_same(got, want) and _same(got_state, want_state)):
            return None
        return fast

    def bind(self, env: AttackEnv) -> Callable[[], None]:
        """The replay on ``env``: what the trial runs where it would run the prefix.

        The defense must be in its pre-prefix state (restored with the kernel
        snapshot before the trial), and the trial must not have done anything
        yet (:attr:`Scenario.prefix_first`).
        """
        df = env.defense
        fast = self._compiled(env)
        plan: list[tuple[Callable[..., Any], tuple[Any, ...], int, Any, int]] = []
        for name, args, res, step in self.calls:
            check = _NO_CHECK
            want: Any = None
            if name == "slab_free":
                check, want = _CHECK_EQ, res
            elif name == "slab_release":
                check, want = _CHECK_PAS, [env.pa_of(p) for p in res]
            plan.append((getattr(df, name), (env, *args), check, want, step))
        obj_list = tuple(obj for _, obj in self.objs)
        obj_calls = tuple(i for i, _ in self.objs)
        end_step = self.end_step
        tagged = set(env.index_tagged_caches)

        def call_hooks(base: int) -> list[Any]:
            trace = env.trace
            results: list[Any] = []
            append = results.append
            for fn, args, check, want, step in plan:
                trace.step = base + step
                got = fn(*args)
                append(got)
                if check and (
                    got != want if check == _CHECK_EQ else [env.pa_of(p) for p in got] != want
                ):
                    raise RuntimeError(
                        "prefix replay diverged from the recorded prefix "
                        f"({fn.__name__} returned {got!r}, recorded {want!r})"
                    )
            return results

        def replay() -> None:
            base = env.trace.step
            if base:
                raise RuntimeError(
                    "prefix replay after attacker steps: the scenario does not run its "
                    "prefix first (set prefix_first = False)"
                )
            if fast is not None and env.index_tagged_caches == tagged:
                results = fast()
            else:
                results = call_hooks(base)
            env.trace.step = base + end_step
            # Each Obj the prefix built from an allocation carries this trial's pointer.
            _consume(map(_setattr, obj_list, repeat("ptr"), map(results.__getitem__, obj_calls)))

        return replay


def record_prefix(
    env: AttackEnv,
    sc: Scenario,
    make_rng: Callable[[], np.random.Generator],
) -> PrefixReplay | None:
    """Run ``sc.prefix(env)`` logging its defense hook calls; None if not replayable.

    ``env`` is freshly prepared (boot, defense installed, ``sc.prepare``).  On
    success the prefix has run, ``env.state["prefix_done"]`` is set (so the
    trial calls ``env.prefix_replay`` where it would run the prefix) and the
    defense holds the state the replay gives with ``make_rng()``.  On None
    the environment is in an unknown state: boot afresh.
    """
    df = env.defense
    pre_state = df.save()
    calls: list[tuple[str, tuple[Any, ...], Any, int]] = []
    objs: list[tuple[int, Obj]] = []
    problems: list[str] = []
    trace = env.trace
    start = trace.step
    before = (len(trace.detections), len(trace.notes), dict(trace.metrics), trace.write_step)
    rec_rng = make_rng()
    depth = [0]

    def logged(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def hook(e: AttackEnv, *args: Any) -> Any:
            if e is not env or depth[0]:
                problems.append(f"{name} called nested or on another environment")
            step = env.trace.step - start
            depth[0] += 1
            prev = env._rng
            env._rng = rec_rng
            try:
                res = real(e, *args)
            finally:
                env._rng = prev
                depth[0] -= 1
            calls.append((name, args, res, step))
            return res

        return hook

    def forbidden(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def hook(*args: Any, **kwargs: Any) -> Any:
            problems.append(f"{name} called by the prefix")
            return real(*args, **kwargs)

        return hook

    def note_obj(obj: Obj) -> None:
        if not calls or calls[-1][0] != "slab_alloc" or calls[-1][2] != obj.ptr:
            problems.append("an Obj not built from the last slab_alloc")
            return
        objs.append((len(calls) - 1, obj))

    patched: list[str] = []
    for name in HOOKS:
        setattr(df, name, logged(name, getattr(df, name)))
        patched.append(name)
    for name in FORBIDDEN:
        real = getattr(df, name, None)
        if real is not None:
            setattr(df, name, forbidden(name, real))
            patched.append(name)
    env.prefix_recorder = note_obj
    try:
        sc.prefix(env)
    except RandomnessUnavailableError:
        return None
    except Exception:  # anything the prefix raises: leave it to the trials, unreplayed
        return None
    finally:
        env.prefix_recorder = None
        for name in patched:
            delattr(df, name)
    if problems:
        return None
    after = (len(trace.detections), len(trace.notes), dict(trace.metrics), trace.write_step)
    if after != before:
        return None
    end_step = trace.step - start
    replay = PrefixReplay(calls, objs, end_step, pre_state, make_rng)
    # Replay on the post-prefix kernel with the recording's generator: every result and
    # the defense's final state must come out as recorded.
    post_state = df.save()
    recorded = [res for _, _, res, _ in calls]
    df.restore(pre_state)
    env._rng = make_rng()
    results: list[Any] = []
    try:
        for name, args, _, step in calls:
            trace.step = step
            results.append(getattr(df, name)(env, *args))
    except Exception:
        return None
    finally:
        env._rng = None
    if not _same(results, recorded) or not _same(df.save(), post_state):
        return None
    if not _pointers_contained(env.state, calls, objs):
        return None
    trace.step = start + end_step
    env.state["prefix_done"] = True
    return replay


def _same(a: Any, b: Any) -> bool:
    """Deep equality of saved states (numpy arrays compared by dtype and contents)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):  # insertion order too
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, deque)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _pointers_contained(
    state: dict[str, Any],
    calls: list[tuple[str, tuple[Any, ...], Any, int]],
    objs: list[tuple[int, Obj]],
) -> bool:
    """True if tagged pointers reach ``state`` only inside the noted Objs (see module doc)."""
    tagged = {res for name, args, res, _ in calls if name == "slab_alloc" and res != args[0]}
    noted = {id(o) for _, o in objs}
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(state, False)]
    while stack:
        obj, hashed = stack.pop()
        if isinstance(obj, bool) or obj is None or isinstance(obj, (str, bytes, float)):
            continue
        if isinstance(obj, int):
            if obj in tagged:
                return False
            continue
        if id(obj) in noted:
            if hashed:
                return False  # a set member or dict key: re-tagging would change its hash
            continue
        if id(obj) in seen or isinstance(obj, (type, np.ndarray, np.generic)) or callable(obj):
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend((k, True) for k in obj)
            stack.extend((v, False) for v in obj.values())
        elif isinstance(obj, (set, frozenset)):
            stack.extend((v, True) for v in obj)
        elif isinstance(obj, (list, tuple, deque)):
            stack.extend((v, hashed) for v in obj)
        else:
            d = getattr(obj, "__dict__", None)
            if d is not None:
                stack.extend((v, False) for v in d.values())
            for c in type(obj).__mro__:
                slots = c.__dict__.get("__slots__", ())
                for n in (slots,) if isinstance(slots, str) else slots:
                    v = getattr(obj, n, None)
                    if v is not None:
                        stack.append((v, hashed))
    return True
