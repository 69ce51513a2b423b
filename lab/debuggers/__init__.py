"""Debugger drivers by name: one registry, two jobs per debugger.

``capture`` drivers (``capture(pid, out_dir, ...) -> DebuggerInfo``) record a process at the
moment they attach and detach; ``catch`` drivers (``catch_argv``, ``attach_error``, ``parse``)
attach, let the process run, and record the stop that follows (``lab.catch``).
"""

from __future__ import annotations

from types import ModuleType

from lab import registry
from lab.debugger_names import DEBUGGERS

CAPTURE = {"gdb": "lab.debuggers.gdb", "lldb": "lab.debuggers.lldb"}  # gdb over MI
CATCH = {"gdb": "lab.debuggers.gdb_batch", "lldb": "lab.debuggers.lldb"}
assert set(CAPTURE) == set(CATCH) == set(DEBUGGERS), "each debugger has both drivers"


def names() -> list[str]:
    """The debuggers, in the order ``--debugger auto`` tries them."""
    return list(DEBUGGERS)


def get(name: str, job: str = "capture") -> ModuleType:
    """The driver module of debugger ``name`` for ``job`` (capture or catch); BadInput for an
    unknown debugger."""
    return registry.load(CATCH if job == "catch" else CAPTURE, name, "debugger")
