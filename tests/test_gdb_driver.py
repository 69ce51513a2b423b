"""The gdb driver against live processes: a blocked lock, a deadlocked ChromaDB child, failures."""

from __future__ import annotations

import importlib.util
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the gdb driver attaches with ptrace: Linux only", allow_module_level=True)
if shutil.which("gdb") is None:
    pytest.skip("gdb is not installed (apt-get install gdb)", allow_module_level=True)

from conftest import proc_status  # noqa: E402
from lab import process  # noqa: E402
from lab.debuggers import gdb as gdb_driver  # noqa: E402
from lab.debuggers.pyext import find_python_gdb_extension  # noqa: E402
from lab.errors import (  # noqa: E402
    BadInput,
    DebuggerFailed,
    DebuggerMissing,
    PtraceRefused,
    TargetExited,
)
from lab.parsers.gdb_mi import parse_gdb_transcript  # noqa: E402

TARGETS = Path(__file__).resolve().parent / "debugger_targets"
LOCK_PROGRAM = TARGETS / "blocked_on_lock.py"
LOCK_LINE = 10  # the second lock.acquire() in blocked_on_lock.py
CHROMA_PROGRAM = TARGETS / "chromadb_fork_child.py"

SHORT_TIMEOUT = 30.0  # fails a slow step (a handshake, a process reaching a state)
FAKE_GDB_TIMEOUT_S = 1.0  # the capture timeout given to a gdb that never answers
FUTEX_NR = {"x86_64": 202, "aarch64": 98}
X86_64 = platform.machine() == "x86_64"


def read_line(proc: subprocess.Popen, timeout: float = SHORT_TIMEOUT) -> str:
    """The first line ``proc`` prints on stdout (a handshake), waited for with a deadline."""
    fd = proc.stdout.fileno()
    data = b""
    end = time.monotonic() + timeout
    while b"\n" not in data:
        left = end - time.monotonic()
        if left <= 0:
            pytest.fail(f"no line from {proc.args!r} within {timeout} s (got {data!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"{proc.args!r} closed stdout before a line (got {data!r})")
            data += chunk
    return data.split(b"\n", 1)[0].decode()


def wait_blocked_in_futex(pid: int, timeout: float = SHORT_TIMEOUT, log: Path | None = None):
    """Poll /proc/PID/syscall until the main thread sits in futex(2); fail at the deadline."""
    number = FUTEX_NR.get(platform.machine())
    if number is None:
        pytest.skip(f"no futex syscall number known for {platform.machine()}")
    end = time.monotonic() + timeout
    text = ""
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/syscall") as handle:
                text = handle.read()
        except (FileNotFoundError, ProcessLookupError):
            stderr = log.read_text()[-2000:] if log and log.exists() else ""
            pytest.fail(f"process {pid} exited before blocking in futex\n{stderr}")
        if text.startswith(f"{number} "):
            return
        time.sleep(0.01)  # polling a /proc state under a deadline
    pytest.fail(f"process {pid} not blocked in futex within {timeout} s: {text!r}")


def assert_released(pid: int) -> None:
    status = proc_status(pid)
    assert status is not None, f"process {pid} is gone"
    assert status["TracerPid"] == "0"
    assert status["State"][0] not in "tT", status["State"]


def gdb_children() -> list[int]:
    """Processes named gdb whose parent is this test process."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            status = proc_status(int(entry))
            if status and status.get("Name") == "gdb" and int(status["PPid"]) == os.getpid():
                found.append(int(entry))
    return found


def kill_and_wait_gone(pid: int, timeout: float = SHORT_TIMEOUT) -> None:
    """SIGKILL a process we do not own (a grandchild) and wait until it is gone or a zombie."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = proc_status(pid)
        if status is None or status["State"][0] in "ZX":
            return
        time.sleep(0.01)  # polling a /proc state under a deadline
    pytest.fail(f"process {pid} survived SIGKILL for {timeout} s")


@pytest.fixture
def lock_target(reaper):
    """A Python process whose main thread is blocked forever on a threading.Lock."""
    proc = reaper.popen([sys.executable, str(LOCK_PROGRAM)], stdout=subprocess.PIPE)
    assert read_line(proc) == "ready"
    wait_blocked_in_futex(proc.pid)
    return proc


def test_capture_of_a_thread_blocked_on_a_lock(lock_target, tmp_path):
    # GIVEN a Python program blocked in its second lock.acquire()
    pid = lock_target.pid

    # WHEN gdb captures it
    info = gdb_driver.capture(pid, tmp_path)

    # THEN the main thread's native stack is in a futex wait in libc
    assert info.name == "gdb" and info.pid == pid
    assert info.version and info.version.startswith("GNU gdb")
    assert info.stop_reason == "attached"
    main = next(t for t in info.threads if t.tid == pid)
    assert main.frames and main.frames[0].index == 0
    assert any(
        "futex" in (f.function or "") or f.function == "syscall" for f in main.frames[:3]
    ), main.frames[:3]
    assert any("libc" in (f.library or "") for f in main.frames)
    # AND the registers and instruction are those of a thread parked in a syscall
    if X86_64:
        assert "rip" in info.registers and info.registers["rip"].startswith("0x")
        assert info.instruction == "syscall"
        assert info.registers["r10"] == "0x0"  # futex timeout pointer: wait forever
    assert info.message and "-gdb.py" in info.message  # the extension that gave py-bt
    # AND the transcript is on disk and rebuilds the same evidence
    assert info.transcript == "gdb.txt"
    text = (tmp_path / "gdb.txt").read_text()
    assert "-target-attach" in text and "-target-detach" in text
    rebuilt = parse_gdb_transcript(text, transcript="gdb.txt")
    assert rebuilt.threads == info.threads
    assert rebuilt.registers == info.registers
    assert rebuilt.instruction == info.instruction
    # AND the target runs on untraced, and no gdb is left
    assert_released(pid)
    assert gdb_children() == []
    # AND (where CPython's gdb extension exists) its Python stack points at the blocking line
    if find_python_gdb_extension(pid) is None:
        pytest.skip("no pythonX.Y-gdb.py for this interpreter: no Python frames to check")
    assert any(
        f.file == str(LOCK_PROGRAM) and f.line == LOCK_LINE and f.function == "<module>"
        for f in main.python_frames
    ), main.python_frames


def test_python_extension_is_found_for_a_live_interpreter(lock_target):
    # GIVEN a running Python process WHEN its gdb extension is looked up
    path = find_python_gdb_extension(lock_target.pid)
    # THEN it is a python3.X-gdb.py file, when this interpreter ships one
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if path is None:
        pytest.skip(f"no python{version}-gdb.py installed for {sys.executable}")
    assert path.name.endswith("-gdb.py") and version in path.name
    assert path.is_file()


@pytest.mark.skipif(
    importlib.util.find_spec("chromadb") is None, reason="chromadb is not installed"
)
def test_capture_of_a_chromadb_child_deadlocked_after_fork(reaper, tmp_path):
    # GIVEN a child forked after ChromaDB started its runtime, now stuck in its first query
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        parent = reaper.popen(
            [sys.executable, str(CHROMA_PROGRAM), str(tmp_path / "chroma")],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
    word, child = read_line(parent).split()
    assert word == "child"
    child = int(child)
    try:
        wait_blocked_in_futex(child, log=log)

        # WHEN gdb captures the child
        started = time.monotonic()
        info = gdb_driver.capture(child, tmp_path / "evidence")
        seconds = time.monotonic() - started

        # THEN its one thread waits in futex inside ChromaDB's Rust bindings, called from _query
        assert [t.tid for t in info.threads] == [child]
        frames = info.threads[0].frames
        assert any("chromadb_rust_bindings" in (f.library or "") for f in frames)
        assert any(
            f.file.endswith("chromadb/api/rust.py") and f.function == "_query"
            for f in info.threads[0].python_frames
        )
        if X86_64:
            assert info.instruction == "syscall"
            assert info.registers["rsi"] == "0x89"  # FUTEX_WAIT_BITSET_PRIVATE
            assert info.registers["r10"] == "0x0"  # no timeout
        assert info.seconds is not None and info.seconds <= seconds
        assert_released(child)
        assert gdb_children() == []
    finally:
        kill_and_wait_gone(child)  # the parent reaps it and exits; the reaper checks that


def test_capture_of_a_missing_process_raises_target_exited(reaper, tmp_path):
    # GIVEN the pid of a process that has exited and been reaped
    done = reaper.run(["true"], timeout=SHORT_TIMEOUT)
    assert done.returncode == 0
    pid = reaper.procs[-1].pid

    # WHEN / THEN capturing it raises TargetExited before gdb starts
    with pytest.raises(TargetExited, match=str(pid)):
        gdb_driver.capture(pid, tmp_path)
    assert not (tmp_path / "gdb.txt").exists()


def test_capture_of_a_zombie_raises_target_exited(reaper, tmp_path):
    # GIVEN a child that has exited but is not reaped yet (a zombie)
    proc = reaper.popen(["true"])
    end = time.monotonic() + SHORT_TIMEOUT
    while proc_status(proc.pid)["State"][0] != "Z":
        assert time.monotonic() < end, "child did not exit"
        time.sleep(0.01)  # polling a /proc state under a deadline

    # WHEN / THEN
    with pytest.raises(TargetExited, match="zombie"):
        gdb_driver.capture(proc.pid, tmp_path)


def test_capture_without_gdb_raises_debugger_missing(monkeypatch, tmp_path):
    # GIVEN a PATH without gdb
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    # WHEN / THEN the capture refuses, naming the remedy
    with pytest.raises(DebuggerMissing) as raised:
        gdb_driver.capture(os.getpid(), tmp_path)
    assert "apt-get install gdb" in raised.value.line()


def test_capture_of_the_lab_itself_is_refused(tmp_path):
    # GIVEN this very process WHEN / THEN no gdb is started on it (both would hang)
    with pytest.raises(BadInput, match="itself"):
        gdb_driver.capture(os.getpid(), tmp_path)
    assert gdb_children() == []


def fake_gdb(tmp_path: Path, body: str) -> Path:
    """Put an executable ``gdb`` running ``body`` first on PATH; return its pid file."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    pid_file = tmp_path / "fake-gdb.pid"
    script = folder / "gdb"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\n{body}\n")
    script.chmod(0o755)
    return pid_file


def test_a_gdb_that_never_answers_fails_within_the_timeout(lock_target, monkeypatch, tmp_path):
    # GIVEN a "gdb" on PATH that reads nothing and prints nothing
    pid_file = fake_gdb(tmp_path, "exec sleep 1000")
    monkeypatch.setenv("PATH", f"{pid_file.parent / 'fakebin'}:{os.environ['PATH']}")

    # WHEN a capture runs with a short timeout
    started = time.monotonic()
    with pytest.raises(DebuggerFailed) as raised:
        gdb_driver.capture(lock_target.pid, tmp_path / "out", timeout=FAKE_GDB_TIMEOUT_S)
    elapsed = time.monotonic() - started

    # THEN it fails on one line naming the command, soon, with the transcript kept
    message = str(raised.value)
    assert "`-gdb-version`" in message and "\n" not in message
    assert elapsed < FAKE_GDB_TIMEOUT_S + gdb_driver.GDB_EXIT_TIMEOUT_S
    text = (tmp_path / "out" / "gdb.txt").read_text()
    assert "1-gdb-version" in text and "# lab error:" in text
    # AND the fake gdb is gone and the target untouched
    fake_pid = int(pid_file.read_text())
    assert not Path(f"/proc/{fake_pid}").exists()
    assert_released(lock_target.pid)


def test_a_gdb_that_exits_at_once_fails_with_its_status(lock_target, monkeypatch, tmp_path):
    # GIVEN a "gdb" that exits with status 3 straight away
    pid_file = fake_gdb(tmp_path, "exit 3")
    monkeypatch.setenv("PATH", f"{pid_file.parent / 'fakebin'}:{os.environ['PATH']}")

    # WHEN / THEN
    with pytest.raises(DebuggerFailed, match=r"gdb exited \(status 3\)"):
        gdb_driver.capture(lock_target.pid, tmp_path)


def test_a_gdb_killed_while_attached_leaves_the_target_running(
    lock_target, monkeypatch, tmp_path
):
    # GIVEN a gdb that is SIGKILLed right after it attached (the extension lookup comes next)
    def kill_gdb(pid):
        for gdb_pid in gdb_children():
            os.kill(gdb_pid, signal.SIGKILL)
        return None

    monkeypatch.setattr(gdb_driver, "find_python_gdb_extension", kill_gdb)

    # WHEN the capture goes on THEN it fails naming gdb's death
    with pytest.raises(DebuggerFailed, match=r"gdb exited \(status -9\)"):
        gdb_driver.capture(lock_target.pid, tmp_path)
    # AND the target is neither traced nor stopped, and the transcript shows the attach
    assert_released(lock_target.pid)
    assert gdb_children() == []
    assert "-target-attach" in (tmp_path / "gdb.txt").read_text()


@pytest.mark.parametrize(
    ("message", "alive", "error"),
    [
        ("ptrace: Operation not permitted.", True, PtraceRefused),
        ("ptrace: No such process.", True, TargetExited),
        ("Cannot attach to process 1: whatever", False, TargetExited),
        ("Cannot attach: something new", True, DebuggerFailed),
    ],
    ids=["eperm", "esrch", "gone", "other"],
)
def test_attach_errors_map_to_lab_errors(monkeypatch, message, alive, error):
    # GIVEN gdb's ^error text for -target-attach WHEN it is mapped THEN the lab error fits
    monkeypatch.setattr(process, "alive", lambda pid: alive)
    assert type(gdb_driver._attach_error(1234, message)) is error
