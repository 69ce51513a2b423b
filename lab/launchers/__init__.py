"""Launch strategies, one small module each behind one interface (as CPython's popen_*).

Each module defines ``Popen(target, args)`` with ``.pid`` and ``.wait() -> int``, where the
exit status is normalised once: negative means killed by that signal; and ``PICKLES_ARGS``:
whether the target's arguments travel by pickle (spawn, forkserver, pools) or are inherited
in copied memory (fork).
"""

from __future__ import annotations

from lab import registry

# name -> module, imported lazily so a launcher's dependencies load only when used.
LAUNCHERS = {
    "fork": "lab.launchers.fork",
    "mp-default": "lab.launchers.mp_default",
    "mp-fork": "lab.launchers.mp_fork",
    "mp-forkserver": "lab.launchers.mp_forkserver",
    "mp-spawn": "lab.launchers.mp_spawn",
    "pool-fork": "lab.launchers.pool_fork",
    "pool-spawn": "lab.launchers.pool_spawn",
}


def names() -> list[str]:
    return list(LAUNCHERS)


def get(name: str):
    """Return the launcher module for ``name``; raises BadInput for an unknown one."""
    return registry.load(LAUNCHERS, name, "launcher")
