"""Errors of the tool itself (not of the modelled machine).

A :class:`ToolError` is bad input: a config value, a trace line, a CLI
argument.  The CLI prints its message as one line and exits with status 2,
with no traceback.  Messages name the offending value.
"""

from __future__ import annotations

__all__ = ["ToolError"]


class ToolError(Exception):
    """Bad input to the tool; ``str(err)`` is the one-line message shown to the user."""

    exit_status = 2
