"""Locks held at fork by a thread the child does not get: Python, native, logging, buffered I/O."""

from __future__ import annotations

import io
import logging
import os
import threading

from lab.scenarios import Scenario, with_mp_default

SPAWN_OK = {"mp-spawn": "ok"}


# -- a threading.Lock held by a background thread ------------------------------------------

LOCK = threading.Lock()
_HELD = threading.Event()
_NEVER = threading.Event()


def _hold_python_lock():
    with LOCK:
        _HELD.set()
        _NEVER.wait()


def python_prepare():
    threading.Thread(target=_hold_python_lock, name="lock-holder", daemon=True).start()
    _HELD.wait()


def python_child(_payload):
    print(f"child {os.getpid()}: acquiring the lock", flush=True)
    LOCK.acquire()  # a spawned child has a fresh, free LOCK: it was never held there
    print(f"child {os.getpid()}: got it", flush=True)


PYTHON_LOCK = Scenario(
    name="python-lock-held",
    summary="A threading.Lock held by a background thread at fork; the child acquires it.",
    expected=with_mp_default({"fork": "deadlock", "mp-fork": "deadlock", **SPAWN_OK}),
    prepare=python_prepare,
    child=python_child,
    handoff=lambda state, pickles: None,
    expected_threads=("lock-holder",),
    default_timeout=20.0,
)


def reinit_prepare():
    python_prepare()
    # The fix: give the child a fresh lock; the holder does not exist there. (No fork(), as
    # on Windows: a spawned child builds its own lock when it imports this module.)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reinit_lock)


def _reinit_lock():
    global LOCK
    LOCK = threading.Lock()


PYTHON_LOCK_REINIT = Scenario(
    name="python-lock-reinit",
    summary="Fixed twin of python-lock-held: os.register_at_fork(after_in_child=...) "
            "replaces the lock in the child.",
    expected=with_mp_default({"fork": "ok", "mp-fork": "ok"}),
    prepare=reinit_prepare,
    child=python_child,
    handoff=lambda state, pickles: None,
    fixed_of="python-lock-held",
    fix="os.register_at_fork(after_in_child=...) re-creates the lock in the child",
)


# -- a pthread mutex held by a native thread Python does not know -------------------------

def native_prepare():
    from lab import native

    lib = native.load()
    ready, signal_end = os.pipe()
    status = lib.lab_hold_mutex_in_native_thread(signal_end)
    if status != 0:
        raise OSError(status, "could not start the native mutex holder")
    os.read(ready, 1)  # the native thread holds the mutex now
    os.close(ready)
    os.close(signal_end)
    print(f"parent: native thread {lib.lab_mutex_owner_tid()} holds the mutex", flush=True)


def native_child(_payload):
    from lab import native

    print(f"child {os.getpid()}: pthread_mutex_lock", flush=True)
    native.load().lab_lock_mutex()


NATIVE_MUTEX = Scenario(
    name="native-mutex-held",
    summary="A pthread mutex held by a native thread that threading does not know; "
            "the child locks it.",
    expected=with_mp_default({"fork": "deadlock", "mp-fork": "deadlock", **SPAWN_OK}),
    prepare=native_prepare,
    child=native_child,
    handoff=lambda state, pickles: None,
    default_timeout=20.0,
)


# -- a thread inside a logging handler -----------------------------------------------------

class _BlockingHandler(logging.Handler):
    """A handler whose emit() blocks while holding the handler's lock (a slow sink)."""

    def __init__(self):
        super().__init__()
        self.inside = threading.Event()
        self.unblock = threading.Event()
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())
        if threading.current_thread().name == "logger":
            self.inside.set()
            self.unblock.wait()


LOGGER = logging.getLogger("lab.scenario.logging-lock")
HANDLER = _BlockingHandler()
LOGGER.addHandler(HANDLER)
LOGGER.propagate = False


def logging_prepare():
    threading.Thread(target=LOGGER.warning, args=("from the logger thread",), name="logger",
                     daemon=True).start()
    HANDLER.inside.wait()  # the logger thread is inside emit(), holding HANDLER.lock


def logging_check(_state, _code):
    HANDLER.unblock.set()  # let the parent's logger thread finish, or logging.shutdown() waits
    return None


def logging_child(_payload):
    LOGGER.warning("from the child")
    print(f"child {os.getpid()}: logged; handler saw {HANDLER.records}", flush=True)


LOGGING_LOCK = Scenario(
    name="logging-lock",
    summary="A thread inside a logging handler at fork; the child logs. CPython re-creates "
            "handler locks in the child (bpo-6721), so this one survives.",
    expected=with_mp_default({"fork": "ok", "mp-fork": "ok"}),
    prepare=logging_prepare,
    child=logging_child,
    check=logging_check,
    handoff=lambda state, pickles: None,
    expected_threads=("logger",),
    default_timeout=20.0,
)


# -- a thread blocked writing to a BufferedWriter -------------------------------------------

def buffered_prepare():
    read_end, write_end = os.pipe()
    writer = open(write_end, "wb", buffering=io.DEFAULT_BUFFER_SIZE)
    started = threading.Event()

    def flood():
        started.set()
        writer.write(b"x" * (1 << 20))  # more than a pipe holds: blocks inside the writer
        writer.flush()

    thread = threading.Thread(target=flood, name="writer", daemon=True)
    thread.start()
    started.wait()
    _wait_until_blocked_writing(thread.native_id)
    return read_end, writer


BLOCKED_WRITING = ("the parent waits until its writer thread blocks in write(), which only "
                   "/proc/PID/task/TID/syscall shows")


def _wait_until_blocked_writing(tid: int, deadline_s: float = 10.0):
    import time

    from lab.linux import procfs

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        state = procfs.thread_state(os.getpid(), tid)
        if state.syscall and state.syscall.name == "write":
            return
        time.sleep(0.005)  # polling our own /proc state, with a deadline
    raise TimeoutError("the writer thread never blocked in write()")


def buffered_child(state):
    _read_end, writer = state
    print(f"child {os.getpid()}: writing to the inherited BufferedWriter", flush=True)
    writer.write(b"from the child\n")
    print(f"child {os.getpid()}: wrote", flush=True)


def buffered_fresh_child(state):
    read_end, writer = state
    fresh = open(os.dup(writer.fileno()), "wb", buffering=0)  # the fix: a new, unbuffered file
    print(f"child {os.getpid()}: writing through a fresh file object", flush=True)
    os.set_blocking(fresh.fileno(), False)
    try:
        fresh.write(b"from the child\n")
    except BlockingIOError:
        pass  # the pipe is full: what matters is that no inherited lock was taken
    print(f"child {os.getpid()}: done", flush=True)


BUFFERED_WRITER = Scenario(
    name="buffered-writer-lock",
    summary="A thread blocked writing to a BufferedWriter at fork; the child writes to it.",
    expected=with_mp_default({"fork": "deadlock", "mp-fork": "deadlock"}),
    needs_linux=BLOCKED_WRITING,
    prepare=buffered_prepare,
    child=buffered_child,
    expected_threads=("writer",),
    default_timeout=20.0,
)

BUFFERED_WRITER_FRESH = Scenario(
    name="buffered-writer-fresh",
    summary="Fixed twin of buffered-writer-lock: the child writes through a new file object.",
    expected=with_mp_default({"fork": "ok", "mp-fork": "ok"}),
    needs_linux=BLOCKED_WRITING,
    prepare=buffered_prepare,
    child=buffered_fresh_child,
    fixed_of="buffered-writer-lock",
    fix="in the child, never reuse a buffered file object another thread was writing to",
)
