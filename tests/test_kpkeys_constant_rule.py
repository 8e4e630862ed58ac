"""The kpkeys constant-only rule, checked statically over the package source.

In the kernel, ``kpkeys_set_level()`` fails to compile unless its level is a
compile-time constant (spec kpkeys-series.md §1.4, §1.8): a variable level
could be corrupted into an arbitrary register value.  The model's runtime
half is the ``KpkeysLevel`` type check; this is the compile-time half.  Every
call of a level-taking entry point in ``src/kpkeys_sim`` must pass a *named*
constant (a ``Name`` or ``Attribute`` whose final name starts with
``KPKEYS_LVL_`` or ``KPKEYS_CTX_``), never a variable, literal or expression.

Two further rules close the obvious side doors:

* the checked entry points may only be *called*: a bare reference
  (``f = kpkeys_set_level``, ``partial(kpkeys_set_level, k)``) is refused
  outside the defining module ``kernel/kpkeys/core.py``;
* the internal switch paths (``_set_level`` and the arch hooks
  ``arch_kpkeys_set_level``/``arch_kpkeys_set_context``) may only appear in
  ``kernel/kpkeys/core.py`` and the arch glue ``kernel/arch/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kpkeys_sim

PACKAGE_ROOT = Path(kpkeys_sim.__file__).resolve().parent

#: Entry points whose level argument must be a named constant.
LEVEL_TAKERS = frozenset(
    {
        "kpkeys_set_level",
        "kpkeys_set_context",
        "kpkeys_enter_context",
        "KPKEYS_GUARD_COND",
        "KPKEYS_GUARD",
    }
)
#: Keyword names the level may be passed under.
LEVEL_KEYWORDS = frozenset({"level", "ctx"})
CONSTANT_PREFIXES = ("KPKEYS_LVL_", "KPKEYS_CTX_")
#: Switch paths that take a level without the checks; confined to the framework.
INTERNAL = frozenset({"_set_level", "arch_kpkeys_set_level", "arch_kpkeys_set_context"})


def _final_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_named_constant(node: ast.AST) -> bool:
    name = _final_name(node)
    return name is not None and name.startswith(CONSTANT_PREFIXES)


def _level_arg(call: ast.Call) -> ast.AST | None:
    """The expression passed as the level: 2nd positional or a level keyword."""
    for i, arg in enumerate(call.args[:2]):
        if isinstance(arg, ast.Starred):
            return arg  # *args hides the level
        if i == 1:
            return arg
    for kw in call.keywords:
        if kw.arg is None or kw.arg in LEVEL_KEYWORDS:
            return kw.value  # **kwargs hides it too
    return None


def _module_kind(filename: str) -> str:
    parts = Path(filename).parts
    if parts[-3:] == ("kernel", "kpkeys", "core.py"):
        return "core"
    if parts[-3:-1] == ("kernel", "arch"):
        return "glue"
    return "other"


def check_source(source: str, filename: str) -> list[str]:
    """Violations of the constant-only rule in ``source``, as ``file:line: message`` strings."""
    tree = ast.parse(source, filename)
    kind = _module_kind(filename)
    called: set[int] = set()
    out: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _final_name(node.func)
        if name not in LEVEL_TAKERS:
            continue
        called.add(id(node.func))
        arg = _level_arg(node)
        if arg is None:
            out.append(f"{filename}:{node.lineno}: {name}() without a level argument")
        elif not _is_named_constant(arg):
            out.append(
                f"{filename}:{node.lineno}: {name}() needs a named KPKEYS_LVL_*/KPKEYS_CTX_* "
                f"constant, got {ast.unparse(arg)!r}"
            )
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name | ast.Attribute) or not isinstance(node.ctx, ast.Load):
            continue
        name = _final_name(node)
        if name in LEVEL_TAKERS and id(node) not in called and kind != "core":
            out.append(f"{filename}:{node.lineno}: {name} used other than by calling it")
        elif name in INTERNAL and kind == "other":
            out.append(f"{filename}:{node.lineno}: {name} is internal to kpkeys and the arch glue")
    return out


def package_sources() -> list[Path]:
    return sorted(PACKAGE_ROOT.rglob("*.py"))


def test_package_source_obeys_the_constant_rule() -> None:
    """Every kpkeys level in src/kpkeys_sim is passed as a named constant."""
    files = package_sources()
    assert PACKAGE_ROOT / "kernel" / "kpkeys" / "core.py" in files
    violations = [v for p in files for v in check_source(p.read_text("utf-8"), str(p))]
    assert violations == []


@pytest.mark.parametrize(
    "snippet",
    [
        "kpkeys_set_level(k, lvl)",
        "kpkeys_set_level(k, 1)",
        "kpkeys_set_level(k, KPKEYS_LVL_DEFAULT + 1)",
        "kpkeys_set_level(k, KpkeysLevel(1))",
        "kpkeys_set_level(k, self.level)",
        "kpkeys_set_level(k, KPKEYS_LVL_PGTABLES if x else KPKEYS_LVL_DEFAULT)",
        "kpkeys_set_level(k, level=lvl)",
        "kpkeys_set_level(*args)",
        "kpkeys_set_level(k, **kw)",
        "kpkeys_set_level(k)",
        "core.kpkeys_set_level(k, lvl)",
        "kpkeys_set_context(k, ctx)",
        "kpkeys_enter_context(k, ctx=c)",
        "KPKEYS_GUARD('g', lvl)",
        "KPKEYS_GUARD_COND('g', 1, cond)",
        "KPKEYS_GUARD_COND('g', level=levels[0], cond=cond)",
        "f = kpkeys_set_level",
        "functools.partial(kpkeys.kpkeys_set_level, k)",
        "_set_level(k, lvl, False)",
        "kpkeys_arch(k).arch_kpkeys_set_level(k, lvl, False)",
    ],
)
def test_checker_flags_non_constant_levels(snippet: str) -> None:
    """A variable, literal, expression or hidden level — or a side door — is a violation."""
    assert check_source(snippet, "src/kpkeys_sim/kernel/mm/example.py") != []


@pytest.mark.parametrize(
    "snippet",
    [
        "kpkeys_set_level(k, KPKEYS_LVL_PGTABLES)",
        "kpkeys_set_level(k, level=KPKEYS_LVL_DEFAULT)",
        "kpkeys.kpkeys_set_context(k, kpkeys.KPKEYS_CTX_PGTABLES)",
        "kpkeys_enter_context(k, ctx=KPKEYS_CTX_PGTABLES)",
        "G = KPKEYS_GUARD('g', KPKEYS_LVL_PGTABLES)",
        "G = KPKEYS_GUARD_COND('g', KPKEYS_LVL_PGTABLES, cond=lambda k: True)",
        "G = KPKEYS_GUARD_NOOP('g')",
        "kpkeys_restore_pkey_reg(k, saved)",
    ],
)
def test_checker_accepts_named_constants(snippet: str) -> None:
    """Calls that name a KPKEYS_LVL_*/KPKEYS_CTX_* constant pass."""
    assert check_source(snippet, "src/kpkeys_sim/kernel/mm/example.py") == []


def test_adding_a_variable_level_to_real_source_fails() -> None:
    """Appending ``kpkeys_set_level(k, lvl)`` to a real module fails the check at that line."""
    path = PACKAGE_ROOT / "kernel" / "arch" / "arm64.py"
    source = path.read_text("utf-8")
    assert check_source(source, str(path)) == []
    bad = source + "\n\ndef oops(k, lvl):\n    return kpkeys_set_level(k, lvl)\n"
    line = bad.count("\n")
    assert check_source(bad, str(path)) == [
        f"{path}:{line}: kpkeys_set_level() needs a named KPKEYS_LVL_*/KPKEYS_CTX_* constant, "
        "got 'lvl'"
    ]


def test_references_and_internal_paths_are_confined() -> None:
    """Bare references are allowed in core.py only; internal paths in core.py and the glue."""
    alias = "kpkeys_set_context = kpkeys_set_level"
    assert check_source(alias, "src/kpkeys_sim/kernel/kpkeys/core.py") == []
    assert check_source(alias, "src/kpkeys_sim/kernel/arch/arm64.py") != []
    hook = "ops.arch_kpkeys_set_level(k, level, skip)"
    assert check_source(hook, "src/kpkeys_sim/kernel/kpkeys/core.py") == []
    assert check_source(hook, "src/kpkeys_sim/kernel/arch/x86.py") == []
    assert check_source(hook, "src/kpkeys_sim/kernel/mm/pgtable.py") != []
