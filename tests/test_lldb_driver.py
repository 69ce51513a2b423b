"""The lldb driver against live processes: a blocked lock, `lab watch --debugger lldb`, failures."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the lab's lldb driver tests attach with ptrace: Linux only",
                allow_module_level=True)
if shutil.which("lldb") is None:
    pytest.skip("lldb is not installed (apt-get install lldb)", allow_module_level=True)

from conftest import PROGRAMS, SHORT_TIMEOUT, proc_status  # noqa: E402
from lab import debuggers  # noqa: E402
from lab.debuggers import lldb as lldb_driver  # noqa: E402
from lab.errors import BadInput, DebuggerFailed, DebuggerMissing, TargetExited  # noqa: E402
from lab.parsers.lldb import parse_lldb_transcript  # noqa: E402

TARGETS = Path(__file__).resolve().parent / "debugger_targets"
LOCK_PROGRAM = TARGETS / "blocked_on_lock.py"
X86_64 = os.uname().machine == "x86_64"
CAPTURE_TIMEOUT_S = 3.0  # the capture that cannot finish: long enough to attach, usually
FUTEX_NR = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine)


def read_line(proc: subprocess.Popen, timeout: float = SHORT_TIMEOUT) -> str:
    """The first line ``proc`` prints (a handshake), waited for with a deadline."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"no line from {proc.args!r} within {timeout} s")
    return proc.stdout.readline().decode().strip()


def wait_in_futex(pid: int, timeout: float = SHORT_TIMEOUT) -> None:
    end = time.monotonic() + timeout
    text = ""
    while time.monotonic() < end:
        with open(f"/proc/{pid}/syscall") as handle:
            text = handle.read()
        if FUTEX_NR is not None and text.startswith(f"{FUTEX_NR} "):
            return
        time.sleep(0.01)  # polling a /proc state under a deadline
    pytest.fail(f"process {pid} not blocked in futex within {timeout} s: {text!r}")


def lldb_children() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_status(int(entry))
            if info is None:
                continue
            # a zombie holds nothing: an lldb-server orphaned to this (subreaper) test process
            # by an earlier test waits there to be reaped; a live one would be a leak
            if (info.get("Name", "").startswith("lldb") and int(info["PPid"]) == os.getpid()
                    and not info.get("State", "").startswith("Z")):
                found.append(int(entry))
    return found


@pytest.fixture
def lock_target(reaper):
    """A Python process whose main thread is blocked forever on a threading.Lock."""
    proc = reaper.popen([sys.executable, str(LOCK_PROGRAM)], stdout=subprocess.PIPE)
    assert read_line(proc) == "ready"
    wait_in_futex(proc.pid)
    return proc


def test_registry_dispatches_lldb():
    assert debuggers.get("lldb") is lldb_driver


def test_capture_of_a_thread_blocked_on_a_lock(lock_target, tmp_path, measure):
    # GIVEN a Python program blocked in its second lock.acquire()
    pid = lock_target.pid
    # WHEN lldb captures it
    started = time.monotonic()
    info = lldb_driver.capture(pid, tmp_path)
    measure("lldb capture of a blocked process (attach, bt all, registers, detach)",
            time.monotonic() - started)
    # THEN the thread's stack is a futex wait in libc, reported by lldb
    assert info.name == "lldb" and info.pid == pid and info.error is None
    assert info.version and info.version.startswith("lldb")
    assert info.stop_reason == "signal SIGSTOP"  # the stop of the attach itself
    main = next(t for t in info.threads if t.tid == pid)
    assert main.frames[0].index == 0 and main.frames[0].library == "libc.so.6"
    assert any("futex" in (f.function or "") for f in main.frames[:3]), main.frames[:3]
    if X86_64:
        assert info.instruction == "syscall" and info.registers["r10"] == "0x0000000000000000"
    # AND lldb.txt holds the transcript with the lab's /proc note, and rebuilds the same info
    text = (tmp_path / "lldb.txt").read_text()
    assert f"# lab syscall {pid}: {FUTEX_NR} " in text and "(lldb) process detach" in text
    rebuilt = parse_lldb_transcript(text, "lldb.txt")
    assert rebuilt.threads == info.threads and rebuilt.registers == info.registers
    # AND the target runs on, untraced, and no lldb is left
    after = proc_status(pid)
    assert after["TracerPid"] == "0" and after["State"][0] not in "tT"
    assert lldb_children() == []


def test_watch_with_lldb_captures_the_deadlocked_child(reaper, tmp_path):
    # GIVEN a program whose forked child deadlocks on a lock held at fork
    # WHEN `lab watch --debugger lldb` runs it
    result = reaper.lab("watch", "--debugger", "lldb", "--json", "--quiet", "--out",
                        str(tmp_path), "--", sys.executable,
                        str(PROGRAMS / "lock_held_at_fork.py"), timeout=120)
    # THEN the verdict is deadlock (exit 12) and the evidence carries lldb's capture
    assert result.returncode == 12, result.stderr
    evidence = json.loads(result.stdout)
    dbg = evidence["debugger"]
    assert dbg["name"] == "lldb" and dbg["transcript"] == "lldb.txt" and dbg["error"] is None
    assert dbg["threads"] and dbg["threads"][0]["frames"]
    assert (Path(evidence["evidence_dir"]) / "lldb.txt").is_file()


def test_missing_lldb_is_a_clear_error(monkeypatch, tmp_path):
    # GIVEN a PATH without lldb WHEN a capture is asked for THEN DebuggerMissing, exit status 5
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DebuggerMissing) as caught:
        lldb_driver.capture(os.getppid(), tmp_path)
    assert caught.value.exit_status == 5 and "apt-get install lldb" in caught.value.line()


def test_refuses_itself_and_absent_processes(tmp_path, reaper):
    # GIVEN this very process, and a pid that has exited
    with pytest.raises(BadInput):
        lldb_driver.capture(os.getpid(), tmp_path)
    gone = reaper.popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=SHORT_TIMEOUT)
    # WHEN lldb is asked to attach THEN it refuses before starting lldb
    with pytest.raises(TargetExited):
        lldb_driver.capture(gone.pid, tmp_path)
    assert lldb_children() == []


def test_capture_that_times_out_leaves_the_target_running(lock_target, tmp_path, monkeypatch):
    # GIVEN an lldb that can never finish: once attached, it continues the deadlocked target
    # and waits for a stop that cannot come (the timeout is met by construction, at any speed)
    pid = lock_target.pid
    never_ends = tmp_path / "continue-then-capture.lldb"
    never_ends.write_text("process continue\n" + lldb_driver.CAPTURE_SCRIPT.read_text())
    monkeypatch.setattr(lldb_driver, "CAPTURE_SCRIPT", never_ends)
    # WHEN the capture runs out of time THEN DebuggerFailed says so (exit status 8)
    with pytest.raises(DebuggerFailed, match="did not finish within") as caught:
        lldb_driver.capture(pid, tmp_path, timeout=CAPTURE_TIMEOUT_S)
    assert caught.value.exit_status == 8
    # AND lldb and its lldb-server are gone (the autouse fixture checks the whole session),
    # and the target runs on, untraced
    after = proc_status(pid)
    assert after["TracerPid"] == "0" and after["State"][0] not in "tT"
    assert lldb_children() == []
    assert "# lab error: lldb did not finish" in (tmp_path / "lldb.txt").read_text()
