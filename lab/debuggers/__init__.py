"""Debugger drivers by name (the registry: ``lab.debugger_registry``), two jobs per debugger.

``capture`` drivers (``capture(pid, out_dir, ...) -> DebuggerInfo``) record a process at the
moment they attach and detach; ``catch`` drivers (``catch_argv``, ``attach_error``, ``parse``)
attach, let the process run, and record the stop that follows (``lab.catch``).
"""

from __future__ import annotations

from types import ModuleType

from lab import registry
from lab.debugger_registry import DEBUGGERS, DRIVERS, JOBS


def names() -> list[str]:
    """The debuggers, in the order ``--debugger auto`` tries them."""
    return list(DEBUGGERS)


def get(name: str, job: str = "capture") -> ModuleType:
    """The driver module of debugger ``name`` for ``job`` (capture or catch); BadInput for an
    unknown debugger."""
    if job not in JOBS:
        raise ValueError(f"no debugger job {job!r}")
    return registry.load({debugger: jobs[job] for debugger, jobs in DRIVERS.items()}, name,
                         "debugger")
