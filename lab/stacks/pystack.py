"""pystack as a source of Python stacks of a core file (``--gcore``): ``pystack core CORE``."""

# A core is the whole memory at one instant: pystack (bloomberg/pystack, Linux only) reads the
# interpreter's frames out of it without the debug package, as py-spy does for a live process.

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab import interrupts, process as processes

SOURCE = "pystack"
REMEDY = "pip install pystack (Linux; the lab's `cores` extra: pip install -e '.[cores]')"
CORE_TIMEOUT_S = 60.0  # pystack reads the core's mappings and the interpreter's symbols
EXIT_TIMEOUT_S = 5.0
ERROR_CHARS = 300

_THREAD = re.compile(r"^Traceback for thread (?P<tid>\d+)(?: \((?P<name>[^)]*)\))?")
_PYTHON = re.compile(r'^\s*\(Python\) File "(?P<file>.*)", line (?P<line>\d+), '
                     r"in (?P<function>.+)$")


def find() -> str | None:
    """The pystack executable beside this interpreter (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "pystack"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("pystack")


def why_not() -> str | None:
    """Why pystack cannot read a core here; None when it can."""
    if not sys.platform.startswith("linux"):
        return f"pystack reads core files on Linux only (this is {sys.platform})"
    if find() is None:
        return f"pystack is not installed ({REMEDY})"
    return None


def from_core(core: Path, pid: int | None = None,
              timeout: float = CORE_TIMEOUT_S) -> dict[str, Any]:
    """Every thread's Python stack in ``core``, as an evidence ``python_stacks`` entry; never
    raises but Interrupted (``error``/``skipped`` say what went wrong)."""
    record: dict[str, Any] = {"source": SOURCE, "pid": pid, "mode": "core",
                              "file": Path(core).name, "seconds": None, "threads": [],
                              "error": None}
    reason = why_not()
    if reason:
        return {**record, "skipped": reason}
    argv = [find(), "--no-color", "core", str(core)]
    started = time.monotonic()
    tool = None
    try:
        with interrupts.deferred():  # the finally below must know the pystack it started
            tool = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        out, err = tool.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**record, "error": f"pystack did not finish within {timeout:g} s"}
    except OSError as exc:
        return {**record, "error": f"could not run pystack: {exc}"}
    finally:
        if tool is not None:
            processes.end_popen(tool, EXIT_TIMEOUT_S)
    record["seconds"] = round(time.monotonic() - started, 4)
    record["threads"] = parse(out)
    if tool.returncode != 0 or not record["threads"]:
        said = [line for line in (err + out).splitlines() if line.strip()]
        record["error"] = (f"pystack exited {tool.returncode}: "
                           f"{(said[-1] if said else 'no output')[:ERROR_CHARS]}")
    return record


def parse(text: str) -> list[dict[str, Any]]:
    """pystack's text to threads: ``tid``, ``python_frames`` (most recent call first)."""
    threads: list[dict[str, Any]] = []
    for line in text.splitlines():
        match = _THREAD.match(line)
        if match:
            threads.append({"tid": int(match["tid"]), "name": match["name"],
                            "python_frames": []})
            continue
        match = _PYTHON.match(line)
        if match and threads:
            threads[-1]["python_frames"].append({"file": match["file"],
                                                 "line": int(match["line"]),
                                                 "function": match["function"].strip()})
    for thread in threads:
        thread["python_frames"].reverse()  # pystack prints the most recent call last
    return threads
