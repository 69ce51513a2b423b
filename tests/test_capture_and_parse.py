"""Capture a blocked process as a user would (gdb, lldb, py-spy by hand), then `lab parse` it.

The target is tests/programs/atfork_handler_blocks.py: its child blocks inside ``os.fork()``
(an ``after_in_child`` handler takes a lock a parent thread held), line 29 of that file. What
the debuggers name depends on the symbols this machine has; what is asserted either holds for
any of them or is asserted where the frames show it.
"""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PROGRAMS, SHORT_TIMEOUT
from lab.parsers.document import evidence_from_transcript

if not sys.platform.startswith("linux"):
    pytest.skip("the captures attach with ptrace and read /proc: Linux only",
                allow_module_level=True)

PROGRAM = PROGRAMS / "atfork_handler_blocks.py"
FORK_LINE = 29  # `pid = os.fork()` in atfork_handler_blocks.py
FUTEX_NR = {"x86_64": 202, "aarch64": 98}
CAPTURE_TIMEOUT = 120.0  # one debugger run; only catches a hang


def needs(tool: str):
    return pytest.mark.skipif(shutil.which(tool) is None and not _beside(tool),
                              reason=f"{tool} is not installed")


def _beside(tool: str) -> str | None:
    path = Path(sys.executable).parent / tool
    return str(path) if path.is_file() else None


@pytest.fixture
def blocked_child(reaper) -> int:
    """The pid of a child blocked in futex(2) inside os.fork(), after the parent's handshake."""
    parent = reaper.popen([sys.executable, str(PROGRAM)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    line = _read_line(parent)
    assert line.startswith("child "), line
    pid = int(line.split()[1])
    _wait_blocked_in_futex(pid)
    return pid


def _read_line(proc: subprocess.Popen) -> str:
    """The first line on ``proc``'s stdout (the handshake), with a deadline."""
    fd, data = proc.stdout.fileno(), b""
    end = time.monotonic() + SHORT_TIMEOUT
    while b"\n" not in data:
        left = end - time.monotonic()
        if left <= 0:
            pytest.fail(f"no handshake from {proc.args!r} (got {data!r})")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"{proc.args!r} closed stdout: {proc.stderr.read()!r}")
            data += chunk
    return data.split(b"\n", 1)[0].decode()


def _wait_blocked_in_futex(pid: int) -> None:
    number = FUTEX_NR.get(platform.machine())
    if number is None:
        pytest.skip(f"no futex syscall number known for {platform.machine()}")
    end, text = time.monotonic() + SHORT_TIMEOUT, ""
    while time.monotonic() < end:
        try:
            text = Path(f"/proc/{pid}/syscall").read_text()
        except (FileNotFoundError, ProcessLookupError):
            pytest.fail(f"child {pid} exited before blocking")
        if text.startswith(f"{number} "):
            return
        time.sleep(0.01)  # polling a /proc state under a deadline
    pytest.fail(f"child {pid} not blocked in futex within {SHORT_TIMEOUT} s: {text!r}")


def _capture(reaper, argv: list[str], path: Path) -> Path:
    result = reaper.run(argv, timeout=CAPTURE_TIMEOUT)
    path.write_text(result.stdout + result.stderr)
    if "ptrace" in result.stderr.lower() and "not permitted" in result.stderr.lower():
        pytest.skip(f"ptrace refused here: {result.stderr.strip()[:200]}")
    return path


def _assert_child_evidence(evidence, pid: int, kind: str) -> None:
    found = evidence.parsed
    thread = evidence.debugger.threads[0]
    assert found["kind"] == kind and evidence.verdict is None  # one snapshot: never a proof
    assert thread.tid == pid and thread.frames
    names = {frame.function for frame in thread.frames}
    if "os_fork_impl" in names or "os_fork" in names:  # CPython's symbols are there
        assert found["fork"]["shown"] and found["fork"]["scenario"] == "python-lock-held"
    (wait,) = found["waits"]
    assert wait["kind"] in ("lock", "syscall") and wait["untimed"] is not False
    if wait["untimed"]:
        assert found["snapshot"].startswith("blocked in untimed waits (one snapshot")


@needs("gdb")
def test_gdb_batch_capture_parses(reaper, blocked_child, tmp_path):
    # GIVEN `gdb -p CHILD -batch` with `thread apply all bt` and `bt full`, as a user runs it
    path = _capture(reaper, ["gdb", "-nx", "-batch", "-p", str(blocked_child), "-iex",
                             "set debuginfod enabled off", "-ex", "thread apply all bt",
                             "-ex", "bt full", "-ex", "info threads"], tmp_path / "gdb.txt")
    # WHEN `lab parse auto` reads it THEN it is a GDB session of the blocked child
    _assert_child_evidence(evidence_from_transcript("auto", path), blocked_child, "gdb")


@needs("lldb")
def test_lldb_capture_parses(reaper, blocked_child, tmp_path):
    # GIVEN `lldb --batch -p CHILD -o 'thread backtrace all'`
    path = _capture(reaper, ["lldb", "--batch", "--no-lldbinit", "-p", str(blocked_child),
                             "-o", "thread backtrace all", "-o", "process detach"],
                    tmp_path / "lldb.txt")
    # WHEN `lab parse auto` reads it THEN it is an LLDB session of the blocked child
    _assert_child_evidence(evidence_from_transcript("auto", path), blocked_child, "lldb")


@needs("py-spy")
@pytest.mark.parametrize("form", ["text", "json"])
def test_pyspy_dump_parses(reaper, blocked_child, tmp_path, form):
    # GIVEN `py-spy dump --pid CHILD` (and --json): Python frames read from its memory
    spy = shutil.which("py-spy") or _beside("py-spy")
    argv = [spy, "dump", "--pid", str(blocked_child)] + (["--json"] if form == "json" else [])
    path = _capture(reaper, argv, tmp_path / f"dump.{form}")
    if form == "json":
        json.loads(path.read_text())
    # WHEN `lab parse auto` reads it
    evidence = evidence_from_transcript("auto", path)
    # THEN the child's main thread is there, idle in main() at the os.fork() line
    (thread,) = evidence.debugger.threads
    assert evidence.parsed["kind"] == "py-spy" and thread.tid == blocked_child
    main = next(frame for frame in thread.python_frames if frame.function == "main")
    assert main.line == FORK_LINE and main.file.endswith("atfork_handler_blocks.py")
    assert evidence.python_stacks[0]["threads"][0]["active"] is False
