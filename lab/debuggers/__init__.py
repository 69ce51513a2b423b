"""Debugger drivers by name; each module has ``capture(pid, out_dir, ...) -> DebuggerInfo``."""

from __future__ import annotations

import importlib
from types import ModuleType

from lab.errors import BadInput

# Imported on first use: a driver pulls in its debugger's client library.
DRIVERS = {"gdb": "lab.debuggers.gdb", "lldb": "lab.debuggers.lldb"}


def get(name: str) -> ModuleType:
    """Return the driver module called ``name``; raise BadInput for an unknown one."""
    try:
        module = DRIVERS[name]
    except KeyError:
        known = ", ".join(sorted(DRIVERS))
        raise BadInput(f"unknown debugger {name!r}", f"choose one of: {known}") from None
    return importlib.import_module(module)
