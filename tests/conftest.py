"""Shared fixtures: a reaper that owns every process a test starts, and proves none is left.

Every process started during the session inherits ``LAB_TEST_SESSION=<uuid>`` in its
environment. After each test the reaper scans ``/proc`` for that marker: whatever it finds was
left behind (running, zombie-adopted or ptrace-stopped). It is killed, and the test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = Path(__file__).resolve().parent / "programs"
DATA = Path(__file__).resolve().parent / "data"
MARKER = "LAB_TEST_SESSION"
SESSION = os.environ.get(MARKER) or uuid.uuid4().hex  # an empty marker would match everything
os.environ[MARKER] = SESSION
# The runs in progress of this test session are registered apart from the user's own
# (lab.runs): a lab that a test kills is never cleaned up by a lab outside the suite.
os.environ.setdefault("LAB_RUNS_DIR", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"lab-test-runs-{SESSION}"))

# Timeouts with a meaning: SHORT fails a slow step; LONG only catches a hang.
SHORT_TIMEOUT = 30.0
LONG_TIMEOUT = 180.0


def marked_processes() -> list[tuple[int, str, str]]:
    """Return (pid, state, cmdline) of every process but this one that carries our marker."""
    needle = f"{MARKER}={SESSION}".encode()
    found = []
    if not os.path.isdir("/proc"):  # macOS: nothing to scan (the Linux-only tests skip there)
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0].decode()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state == "Z":
            continue  # a zombie holds no resources; its parent (or we) reaps it
        found.append((int(entry), state, cmdline))
    return found


def kill_pids(pids, deadline_s: float = 5.0) -> None:
    """SIGCONT (so stopped ones can die), SIGTERM, then SIGKILL; reap our own children."""
    pids = list(pids)
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and any(_alive(pid) for pid in pids):
        _reap_children()
        time.sleep(0.02)  # polling a state with a deadline, not synchronisation
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and any(_alive(pid) for pid in pids):
        _reap_children()
        time.sleep(0.02)
    _reap_children()


def proc_status(pid: int) -> dict[str, str] | None:
    """/proc/PID/status as a dict of stripped values; None once the process is gone.

    Opening the file can succeed and reading it still fail with ESRCH (ProcessLookupError)
    when the process is reaped in between: both mean "gone".
    """
    try:
        with open(f"/proc/{pid}/status") as handle:
            text = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return {key: value.strip() for key, _, value in
            (line.partition(":") for line in text.splitlines()) if value}


def damaged_copies(text: str, seed: str, count: int, max_edits: int):
    """``count`` copies of ``text`` with 1..``max_edits`` lines dropped or duplicated, each cut
    anywhere; seeded with ``seed``, so every run sees the same cases."""
    import random

    lines = text.splitlines()
    chance = random.Random(seed)
    for _ in range(count):
        damaged = list(lines)
        for _ in range(chance.randint(1, max_edits)):
            at = chance.randrange(len(damaged))
            if chance.random() < 0.5:
                damaged.insert(at, damaged[chance.randrange(len(damaged))])
            else:
                damaged.pop(at)
        yield "\n".join(damaged)[: chance.randint(0, len(text))]


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before their children."""
    from lab import process

    return process.descendants(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _reap_children() -> None:
    from lab import process

    process.reap_children()


class Reaper:
    """Starts processes for a test and guarantees they are gone when it ends."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def popen(self, args, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, args, timeout: float = LONG_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
        """Run to completion with a deadline; on a timeout the process is killed and reaped."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = self.popen(args, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_pids([proc.pid])
            out, err = proc.communicate()
            pytest.fail(f"{args!r} did not finish within {timeout} s\n{err}")
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def lab(self, *args: str, timeout: float = LONG_TIMEOUT, **kwargs):
        """Run ``python -m lab ARGS`` from the repository root."""
        return self.run([sys.executable, "-m", "lab", *args], timeout=timeout, cwd=REPO, **kwargs)

    def cleanup(self) -> None:
        """Kill every started process and all its descendants, deepest first."""
        tree: list[int] = []
        for proc in self.procs:
            if proc.poll() is None:
                tree.extend(reversed([proc.pid, *descendants(proc.pid)]))
        kill_pids(tree)
        for proc in self.procs:
            try:
                proc.wait(timeout=SHORT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def reaper():
    """Yield a Reaper; afterwards kill what it started and fail if anything is left behind."""
    owner = Reaper()
    try:
        yield owner
    finally:
        owner.cleanup()


@pytest.fixture(autouse=True)
def nothing_left_behind(request):
    """After every test: no process carrying this session's marker may remain."""
    yield
    left = marked_processes()
    if left:
        kill_pids([pid for pid, _, _ in left])
        listing = "\n".join(f"  {pid} [{state}] {cmd}" for pid, state, cmd in left)
        pytest.fail(f"processes left behind by {request.node.nodeid}:\n{listing}")


_MEASUREMENTS: list[tuple[str, float]] = []


@pytest.fixture
def measure():
    """Record a figure measured by a test; all of them are printed at the end of the run."""

    def record(what: str, seconds: float) -> None:
        _MEASUREMENTS.append((what, seconds))

    return record


def pytest_terminal_summary(terminalreporter):
    if _MEASUREMENTS:
        terminalreporter.section("measured on this machine")
        for what, seconds in _MEASUREMENTS:
            terminalreporter.write_line(f"{what}: {seconds:.3f} s")


def wait_until(check, what: str, timeout: float = SHORT_TIMEOUT):
    """``check()``'s first true value, polled under a deadline (a state, not a sleep); fails the
    test with ``what`` when the deadline passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.01)  # polling a state with a deadline, not synchronisation
    pytest.fail(f"not within {timeout} s: {what}")
