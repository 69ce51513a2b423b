"""The startup hook the lab gives every Python process of a watched tree: its environment."""

# How it works (docs/CLI.md, "the fork hook"): the lab puts lab/hook/startup first on PYTHONPATH.
# There, sitecustomize.py installs _lab_fork_hook (threads and Python stacks at each fork, on
# the report channel; faulthandler into a file per process) and then runs the next
# sitecustomize on sys.path, so that the program's own (or the distribution's) still runs.
# `python -I`, `-E` and `-S` skip it, as they skip any PYTHONPATH or sitecustomize.

from __future__ import annotations

import os
from pathlib import Path

STARTUP_DIR = Path(__file__).resolve().parent / "startup"
DISABLE_VAR = "LAB_NO_FORK_HOOK"
FAULT_DIR_VAR = "LAB_FAULT_DIR"  # read by startup/_lab_fork_hook.py: keep the two equal


def disabled(env: dict[str, str]) -> str | None:
    """Why the hook is off for a launch with ``env``, or None when it is on."""
    if env.get(DISABLE_VAR) == "1":
        return f"{DISABLE_VAR}=1"
    return None


def environment(env: dict[str, str], fault_dir: Path) -> dict[str, str]:
    """The variables that turn the hook on in a launch whose environment is ``env``: the
    startup directory first on PYTHONPATH (the program's own entries kept after it)."""
    path = [str(STARTUP_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(path), FAULT_DIR_VAR: str(fault_dir)}


def describe(env: dict[str, str]) -> dict[str, object]:
    """What the evidence says of the hook: on or off (and why), and where crashes are written."""
    why_not = disabled(env)
    return {"active": why_not is None, "why_not": why_not,
            "startup": str(STARTUP_DIR) if why_not is None else None,
            "faulthandler": None if why_not else (
                "left to the program: PYTHONFAULTHANDLER is set" if "PYTHONFAULTHANDLER" in env
                else "on, one file per process (fault-PID.txt)")}
