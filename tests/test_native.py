"""lab.native, and the frozen child programs run raw (without the lab) to prove what they do."""

from __future__ import annotations

import concurrent.futures
import ctypes
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lab import native

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc; relies on glibc futex waits"
)

PROGRAMS = Path(__file__).resolve().parent / "programs"
# A program reaches its blocking call well within a second; this only fails a broken one.
STATE_DEADLINE = 10.0
# The programs that finish do so within a second (timed_wait_ok waits 0.5 s).
RUN_TIMEOUT = 30.0
POLL_INTERVAL = 0.01  # polling /proc for a state, with a deadline; not synchronisation

SYS_READ = {"x86_64": 0, "aarch64": 63}
SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
FUTEX_WAIT, FUTEX_WAIT_BITSET = 0, 9
FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME = 128, 256

# The line each deadlocked process sleeps on, as its Python stack shows it; tests of the lab
# assert these numbers, so the programs are frozen.
BLOCKING_LINES = {
    "lock_held_at_fork.py": (29, "lock.acquire()"),
    "native_mutex_held.py": (28, "lib.lab_lock_mutex()"),
    "grandchild_deadlock.py": (36, "lock.acquire()"),
}


def machine() -> str:
    return os.uname().machine


def load_or_skip():
    """Return the native library, or skip the test when it cannot be built here."""
    try:
        return native.load()
    except native.NativeBuildError as error:
        pytest.skip(str(error))


def wait_for(probe, what: str, deadline_s: float = STATE_DEADLINE):
    """Poll ``probe()`` until it returns something truthy and return that; fail at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"not within {deadline_s} s: {what}")
        time.sleep(POLL_INTERVAL)


def read_proc(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def stat_fields(pid: int) -> list[str] | None:
    """Return /proc/PID/stat from field 3 (state) on, or None when the process is gone."""
    text = read_proc(f"/proc/{pid}/stat")
    return text.rsplit(")", 1)[1].split() if text else None


def children(pid: int) -> list[int]:
    """Return the PIDs whose parent is ``pid`` (/proc/PID/task/TID/children needs
    CONFIG_PROC_CHILDREN, which not every kernel has, so scan /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def descendant(proc: subprocess.Popen, depth: int) -> int:
    """Wait for the single descendant ``depth`` generations below ``proc``; return its PID."""

    def probe():
        pids = [proc.pid]
        for _ in range(depth):
            pids = [child for pid in pids for child in children(pid)]
        return pids[0] if len(pids) == 1 else None

    return wait_for(probe, f"a generation-{depth} descendant of {proc.args} (exit: {proc.poll()})")


def syscall(pid: int) -> list[str]:
    """Return the fields of /proc/PID/syscall (["running"] while it runs, [] once gone)."""
    return (read_proc(f"/proc/{pid}/syscall") or "").split()


def in_syscall(pid: int, table: dict[str, int]):
    """Return a probe: the syscall fields while ``pid`` sits in the call ``table`` names."""
    number = str(table[machine()])
    return lambda: (fields if (fields := syscall(pid))[:1] == [number] else None)


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def kill_tree(root: int, deadline_s: float = STATE_DEADLINE) -> None:
    """SIGKILL ``root``'s descendants deepest first, then ``root``.

    Each program's processes sit in waitpid() for their child, so a killed child is reaped
    by its own parent before that parent is killed: no zombie is orphaned to PID 1 (which,
    in a container, may never reap it). ``root`` itself is left for the reaper to wait for.
    """
    generations = [[root]]
    while generations[-1]:
        generations.append([child for pid in generations[-1] for child in children(pid)])
    for generation in reversed(generations):
        for pid in generation:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if generation != [root]:
            wait_for(
                lambda: not any(stat_fields(pid) for pid in generation),  # noqa: B023
                f"{generation} to be killed and reaped",
                deadline_s,
            )
    wait_for(lambda: not alive(root), f"{root} to die", deadline_s)


@pytest.fixture
def start(reaper, tmp_path):
    """Yield start(name): run tests/programs/NAME from a foreign cwd; kill its tree afterwards."""
    roots: list[subprocess.Popen] = []

    def start_program(name: str) -> subprocess.Popen:
        proc = reaper.popen(
            [sys.executable, str(PROGRAMS / name)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        roots.append(proc)
        return proc

    yield start_program
    for proc in roots:
        kill_tree(proc.pid)


@pytest.fixture
def held_mutex():
    """Yield (lib, ready byte) while a native thread of this process holds the mutex."""
    lib = load_or_skip()
    ready_r, ready_w = os.pipe()
    try:
        assert lib.lab_hold_mutex_in_native_thread(ready_w) == 0
        try:
            yield lib, os.read(ready_r, 1)
        finally:
            assert lib.lab_release_mutex() == 0
    finally:
        os.close(ready_r)
        os.close(ready_w)


class TestNativeLibrary:
    def test_owner_is_a_native_thread_unknown_to_threading(self, held_mutex):
        # GIVEN the native thread has signalled that it holds the mutex
        lib, ready = held_mutex
        assert ready == b"R"
        # WHEN we ask glibc who owns the mutex
        owner = lib.lab_mutex_owner_tid()
        # THEN it is a thread of this process that Python's threading does not know, in read(2)
        assert str(owner) in os.listdir("/proc/self/task")
        assert owner not in {thread.native_id for thread in threading.enumerate()}
        wait_for(in_syscall(owner, SYS_READ), f"native thread {owner} to block in read(2)")

    def test_second_holder_is_refused(self, held_mutex):
        # GIVEN a native thread holds the mutex
        lib, _ = held_mutex
        # WHEN we ask for a second holder THEN it is refused
        assert lib.lab_hold_mutex_in_native_thread(-1) == errno.EBUSY

    def test_release_unlocks_the_mutex(self):
        # GIVEN a native thread that holds the mutex
        lib = load_or_skip()
        ready_r, ready_w = os.pipe()
        try:
            assert lib.lab_hold_mutex_in_native_thread(ready_w) == 0
            os.read(ready_r, 1)
            # WHEN it is released
            assert lib.lab_release_mutex() == 0
        finally:
            os.close(ready_r)
            os.close(ready_w)
        # THEN the mutex has no owner and a second release is refused
        assert lib.lab_mutex_owner_tid() == 0
        assert lib.lab_release_mutex() == errno.ESRCH
    def test_build_is_cached_by_source_hash(self, monkeypatch, tmp_path):
        # GIVEN an empty cache directory
        load_or_skip()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        # WHEN the library is built twice
        first = native.build()
        mtime = first.stat().st_mtime_ns
        second = native.build()
        # THEN the second build reuses the first, named by the source hash
        assert first == second == tmp_path / "lab-native" / native.library_name()
        assert second.stat().st_mtime_ns == mtime

    def test_concurrent_builds_agree_and_leave_no_temporary_file(self, monkeypatch, tmp_path):
        # GIVEN an empty cache directory
        load_or_skip()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        # WHEN four builds race
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            paths = set(pool.map(lambda _: native.build(), range(4)))
        # THEN they all return the one complete library
        (path,) = paths
        assert os.listdir(path.parent) == [path.name]
        assert ctypes.CDLL(str(path)).lab_mutex_owner_tid() == 0

    def test_no_compiler_says_how_to_install_one(self, monkeypatch, tmp_path):
        # GIVEN an empty cache and no compiler on PATH
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        monkeypatch.delenv("CC", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))
        # WHEN the library is built, THEN the error names the remedy
        with pytest.raises(native.NativeBuildError, match="apt-get install gcc"):
            native.build()


class TestProgramsRaw:
    @pytest.mark.parametrize("name", sorted(BLOCKING_LINES))
    def test_blocking_lines_are_frozen(self, name):
        line, call = BLOCKING_LINES[name]
        assert (PROGRAMS / name).read_text().splitlines()[line - 1].strip().startswith(call)

    @pytest.mark.parametrize(
        "name, depth, command",
        [
            pytest.param("lock_held_at_fork.py", 1, FUTEX_WAIT_BITSET, id="lock_held_at_fork"),
            pytest.param("native_mutex_held.py", 1, FUTEX_WAIT, id="native_mutex_held"),
            pytest.param("grandchild_deadlock.py", 2, FUTEX_WAIT_BITSET, id="grandchild_deadlock"),
        ],
    )
    def test_deadlock_sleeps_in_an_untimed_futex_wait(self, start, name, depth, command):
        if name == "native_mutex_held.py":
            load_or_skip()  # builds the library once, before the program races for it
        # GIVEN a deadlock program
        proc = start(name)
        # WHEN its descendant has reached the futex wait it never leaves
        pid = descendant(proc, depth)
        fields = wait_for(in_syscall(pid, SYS_FUTEX), f"{name}: {pid} to wait in futex")
        # THEN that is its only thread, waiting privately, with no timeout (argument 3 NULL)
        op = int(fields[2], 16)
        assert op & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME) == command, fields
        assert op & FUTEX_PRIVATE_FLAG, fields
        assert int(fields[4], 16) == 0, fields
        assert threads(pid) == 1
        assert stat_fields(pid)[0] == "S"
        assert proc.poll() is None

    def test_spin_burns_cpu(self, start):
        # GIVEN spin.py WHEN its child runs
        proc = start("spin.py")
        pid = descendant(proc, 1)
        # THEN it stays runnable and accumulates CPU time (utime + stime, in clock ticks)
        ticks = os.sysconf("SC_CLK_TCK")
        wait_for(lambda: sum(map(int, stat_fields(pid)[11:13])) >= ticks // 5, "0.2 s of CPU")
        assert stat_fields(pid)[0] == "R"

    def test_pipe_wait_sleeps_in_read(self, start):
        # GIVEN pipe_wait.py WHEN its child blocks
        proc = start("pipe_wait.py")
        pid = descendant(proc, 1)
        # THEN it sleeps in read(2), its only thread, and the parent waits on
        wait_for(in_syscall(pid, SYS_READ), f"{pid} to block in read(2)")
        assert threads(pid) == 1
        assert proc.poll() is None

    def test_timed_wait_forever_waits_with_a_timeout(self, start):
        # GIVEN timed_wait_forever.py WHEN its child sits in a futex wait
        proc = start("timed_wait_forever.py")
        pid = descendant(proc, 1)
        fields = wait_for(in_syscall(pid, SYS_FUTEX), f"{pid} to wait in futex")
        # THEN the wait has a timeout (argument 3 is not NULL)
        assert int(fields[4], 16) != 0, fields
        assert proc.poll() is None

    @pytest.mark.parametrize(
        "name, status, stderr",
        [
            pytest.param("segv_child_parent_ok.py", 0, "killed by SIGSEGV", id="segv"),
            pytest.param("abort_child_parent_ok.py", 0, "killed by SIGABRT", id="abort"),
            pytest.param("exit_error.py", 3, "", id="exit_error"),
            pytest.param("timed_wait_ok.py", 0, "", id="timed_wait_ok"),
        ],
    )
    def test_finishing_program_exit_status(self, reaper, tmp_path, name, status, stderr):
        # GIVEN a program that finishes, with faulthandler requested by the environment
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        # WHEN it runs to completion
        result = reaper.run(
            [sys.executable, str(PROGRAMS / name)], timeout=RUN_TIMEOUT, cwd=tmp_path, env=env
        )
        # THEN the parent's status is as documented, and the child crashed unobserved
        assert result.returncode == status, result.stderr
        assert stderr in result.stderr
        assert "Fatal Python error" not in result.stderr
