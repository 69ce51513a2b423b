"""py-spy as a source of Python stacks of a live process: bounded, non-blocking where it can be."""

# ``py-spy dump --json`` reads a CPython's frames from its memory (process_vm_readv), so it needs
# no debug package and works for any CPython; LLDB and a GDB without ``pythonX.Y-gdb.py`` get
# none. Two of its failure modes shape this driver: a blocking dump ptrace-stops every thread of
# the target for its duration (benfred/py-spy#872: costly with big native pools), and it can hang
# when the target exits while paused (benfred/py-spy#732). So every call has a deadline, after
# which py-spy is killed and the target checked for a stop it left; ``--nonblocking`` (no pause at
# all) is used unless the caller needs a consistent picture of running threads.

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab import interrupts, process, process as processes

SOURCE = "py-spy"
EXECUTABLE_ENV = "LAB_PY_SPY"  # another py-spy executable (the tests use stand-ins)
REMEDY = "pip install py-spy (a dependency of the lab: reinstall it with pip install -e .)"
DUMP_TIMEOUT_S = 10.0  # one dump; measured 0.03 s non-blocking, 0.2 s blocking with --native
VERSION_TIMEOUT_S = 5.0
EXIT_TIMEOUT_S = 5.0  # py-spy gone after SIGKILL
ERROR_CHARS = 300


def find() -> str | None:
    """The py-spy executable: $LAB_PY_SPY, the one beside this interpreter (a venv's bin/,
    which need not be on PATH), else PATH."""
    given = os.environ.get(EXECUTABLE_ENV)
    if given:
        return given if os.access(given, os.X_OK) else None
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


@functools.lru_cache(maxsize=4)
def version(executable: str) -> str | None:
    """``0.4.3`` for ``py-spy 0.4.3``; None when it does not answer."""
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, text=True,
                              timeout=VERSION_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    words = done.stdout.split()
    return words[-1] if done.returncode == 0 and words else None


def dump(pid: int, *, blocking: bool = False, native: bool = False,
         timeout: float = DUMP_TIMEOUT_S) -> dict[str, Any]:
    """Every thread's Python stack of ``pid``, as an evidence ``python_stacks`` entry.

    Non-blocking unless ``blocking`` (or ``native``, which needs the threads stopped). Never
    raises for the target or the tool: ``error`` says what went wrong and ``reason`` one of
    missing, not-python, gone, refused, timeout, failed. Raises Interrupted (SIGINT/SIGTERM),
    after py-spy is gone and the target released.
    """
    blocking = blocking or native
    mode = "blocking" if blocking else "nonblocking"
    record: dict[str, Any] = {"source": SOURCE, "pid": pid, "mode": mode + ("+native" if native
                              else ""), "version": None, "seconds": None, "paused_s": 0.0,
                              "threads": [], "error": None, "reason": None}
    executable = find()
    if executable is None:
        return {**record, "error": f"py-spy is not installed ({REMEDY})", "reason": "missing"}
    record["version"] = version(executable)
    argv = [executable, "dump", "--pid", str(pid), "--json"]
    argv += ["--native"] if native else [] if blocking else ["--nonblocking"]
    record["command"] = " ".join(["py-spy", *argv[1:]])
    was_stopped = _stopped(pid)
    started = time.monotonic()
    out, err, code = _run(argv, pid, timeout, blocking, was_stopped)
    record["seconds"] = round(time.monotonic() - started, 4)
    if blocking:
        record["paused_s"] = record["seconds"]  # at most: py-spy stops, reads, detaches
    if code is None:
        return {**record, "error": f"py-spy did not finish within {timeout:g} s (killed; "
                "the target was checked for a stop it left)", "reason": "timeout"}
    if code != 0:
        return {**record, **_failure(pid, err)}
    try:
        record["threads"] = parse(out)
    except ValueError as exc:
        return {**record, "error": f"py-spy printed no JSON: {exc}", "reason": "failed"}
    return record


def _stopped(pid: int) -> bool:
    found = process.state(pid)
    return found is not None and found[0] in "Tt"


def _run(argv: list[str], pid: int, timeout: float, blocking: bool,
         was_stopped: bool) -> tuple[str, str, int | None]:
    """Run py-spy to its end or its deadline; ``(stdout, stderr, exit status or None)``."""
    # RUST_BACKTRACE=0: one error line instead of a Rust backtrace (the environment may set 1)
    env = {**os.environ, "RUST_BACKTRACE": "0"}
    spy = None
    try:
        with interrupts.deferred():  # the finally below must know the py-spy it started
            spy = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env,
                                   start_new_session=True)
        try:
            out, err = spy.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return "", "", None
        return out, err, spy.returncode
    except OSError as exc:
        return "", f"Error: could not run {argv[0]}: {exc}", 127
    finally:
        if spy is not None:
            processes.end_popen(spy, EXIT_TIMEOUT_S)
        if blocking:
            # A py-spy killed while it held the threads can leave the target stopped: undo it
            # (SIGCONT only where the lab's tool stopped it, never a process stopped before).
            process.wait_released(pid, was_stopped, "py-spy")


def _failure(pid: int, stderr: str) -> dict[str, str]:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = next((line for line in lines if line.startswith("Error:")), lines[0] if lines else
                "no output")[:ERROR_CHARS]
    if not process.alive(pid):
        return {"error": f"process {pid} exited during the dump ({said})", "reason": "gone"}
    text = stderr.lower()
    if "python version" in text or "python interpreter" in text:
        return {"error": f"process {pid} is not a Python process py-spy can read ({said})",
                "reason": "not-python"}
    if "permission denied" in text or "operation not permitted" in text:
        # macOS: task_for_pid() is refused to anyone but root, whoever owns the target
        why = ("; on macOS py-spy reads another process only as root (sudo)"
               if sys.platform == "darwin" and os.geteuid() != 0 else "")
        return {"error": f"py-spy may not read process {pid} ({said}){why}",
                "reason": "refused"}
    return {"error": f"py-spy failed on process {pid}: {said}", "reason": "failed"}


def parse(text: str) -> list[dict[str, Any]]:
    """py-spy's ``dump --json`` output to threads: ``tid``, ``name``, ``active``, ``owns_gil``,
    ``python_frames`` (most recent call first) and, with ``--native``, ``native_frames``.
    Raises ValueError when it is not that JSON."""
    threads = []
    for entry in json.loads(text):
        python, native = [], []
        for frame in entry.get("frames") or []:
            if frame.get("module"):  # native frames name the object they are in
                native.append({"function": frame.get("name"),
                               "library": os.path.basename(frame["module"])})
            else:
                python.append({"file": frame.get("filename"), "line": frame.get("line"),
                               "function": frame.get("name")})
        thread = {"tid": entry.get("os_thread_id"), "name": entry.get("thread_name"),
                  "active": entry.get("active"), "owns_gil": entry.get("owns_gil"),
                  "python_frames": python}
        if native:
            thread["native_frames"] = native
        threads.append(thread)
    return threads
