"""A child executes a breakpoint instruction (int3 / brk #0x1) and dies of SIGTRAP: a crash.

This is the shape of the macOS failure of the ChromaDB fork bug, where libdispatch detects the
inherited semaphore and executes ``brk #0x1`` (EXC_BREAKPOINT). Here the instruction comes from
``lab/native/breakpoint_trap.c``, compiled into the run's scratch directory by the parent, so
the SIGTRAP capture path of GDB and LLDB runs for real on Linux.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from lab.scenarios import Scenario, with_mp_default

SOURCE = Path(__file__).resolve().parents[1] / "native" / "breakpoint_trap.c"
# -g: debuggers name the source line of the trap; eh_frame lets them unwind into ctypes.
CFLAGS = ("-shared", "-fPIC", "-O1", "-g")
BUILD_TIMEOUT_S = 120.0  # one tiny file compiles in well under a second; this catches a wedge
FUNCTION = "lab_breakpoint_trap"


def build(directory: str) -> str:
    """Compile the trap library into ``directory``; return its path. Raises NativeBuildError."""
    from lab import native

    output = os.path.join(directory, "libbreakpoint_trap.so")
    command = [*native.compiler(), *CFLAGS, "-o", output, str(SOURCE)]
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise native.NativeBuildError(f"{shlex.join(command)} failed: {error}") from None
    if result.returncode != 0:
        detail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise native.NativeBuildError(f"{shlex.join(command)} failed: {detail}")
    return output


def prepare() -> str:
    scratch = os.environ.get("LAB_SCRATCH_DIR") or tempfile.mkdtemp(prefix="lab-trap-")
    path = build(scratch)
    print(f"parent: built {os.path.basename(path)}", flush=True)
    return path


def child(path: str) -> None:
    trap = getattr(ctypes.CDLL(path), FUNCTION)
    trap.restype = None
    trap.argtypes = []
    print(f"child {os.getpid()}: executing the breakpoint instruction", flush=True)
    trap()  # never returns: SIGTRAP kills the child (or stops it under a debugger)


SCENARIO = Scenario(
    name="breakpoint-trap",
    summary="A child executes int3 (x86-64) / brk #0x1 (arm64), like libdispatch on macOS: "
            "SIGTRAP.",
    expected=with_mp_default({"fork": "crash", "mp-fork": "crash", "mp-spawn": "crash"}),
    prepare=prepare,
    child=child,
    handoff=lambda path, pickles: path,
    default_timeout=20.0,
)
