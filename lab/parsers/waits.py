"""What each thread of one snapshot waits in, and whether the wait has a timeout: from frames."""

# One snapshot shows where each thread is, not that it will stay there: what is read here is
# only ever "consistent with a deadlock" (lab.parsers.document says so). A wait is read from
# the innermost frames of a thread, the chain of wait functions from the system call up to the
# first frame that is not one, and its timeout from the first of them, innermost first, whose
# arguments or name decide it: glibc's ``abstime=0x0`` (no deadline), CPython's
# ``microseconds=-1`` and ``timeout=-1000000000`` (forever), a ``FUTEX_WAIT...`` op with a NULL
# timeout, py-spy's ``timeout: None``; or a function that has no timeout at all
# (``__lll_lock_wait``, ``sem_wait``, ``pthread_cond_wait``). Every scan is bounded: a thread's
# first SCAN frames, a constant number of searches in each argument text.

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from lab.evidence import DebugThread, Frame, PythonFrame, ThreadState
from lab.linux.syscalls import FUTEX_CMD_MASK, FUTEX_PRIVATE_FLAG, FUTEX_WAIT_OPS, futex_op_name

SCAN = 24  # innermost frames a wait is looked for in (a libc + CPython chain is about 8)
SNAPSHOT = "blocked in untimed waits (one snapshot: consistent with a deadlock, not a proof)"

# Function names with their prefixes and suffixes taken off (see _base): what kind of wait.
# "generic": the arguments decide the timeout; the others are untimed or timed by name.
_LOCK_UNTIMED = {
    "pthread_mutex_lock", "lll_lock_wait", "lll_lock_wait_private", "pthread_cond_wait",
    "sem_wait", "new_sem_wait", "pthread_join", "pthread_rwlock_rdlock",
    "pthread_rwlock_wrlock", "semaphore_wait_trap", "dispatch_sema4_wait", "psynch_mutexwait",
    "os_unfair_lock_lock_slow", "pthread_mutex_firstfit_lock_wait",
    "pthread_mutex_firstfit_lock_slow", "psynch_rw_rdlock", "psynch_rw_wrlock",
}
_LOCK_TIMED = {
    "pthread_cond_timedwait", "pthread_cond_clockwait", "sem_timedwait", "sem_clockwait",
    "pthread_mutex_timedlock", "pthread_mutex_clocklock", "semaphore_timedwait_trap",
    "dispatch_sema4_timedwait", "pthread_timedjoin_np", "pthread_clockjoin_np",
}
_LOCK_WORDS = ("futex", "sem_wait", "cond_wait", "clockjoin", "acquire_lock", "acquire_timed",
               "psynch_cvwait", "ulock_wait", "semaphore_wait", "group_wait", "rlock_acquire",
               "lock_contended", "parking_lot", "park")
_IO_UNTIMED = {"read", "libc_read", "recv", "recvfrom", "recvmsg", "accept", "accept4",
               "wait4", "waitpid", "waitid", "libc_wait", "pipe_read", "sigwait", "pause"}
_IO_GENERIC = {"poll", "ppoll", "select", "pselect", "pselect6", "epoll_wait", "epoll_pwait",
               "kevent", "kevent64", "libc_poll", "libc_select"}
_SLEEP = {"nanosleep", "clock_nanosleep", "usleep", "sleep", "libc_nanosleep"}
_GIL = {"take_gil", "drop_gil"}
# The system call itself, and frames with no name: part of a chain, never its kind.
_PLUMBING = {"syscall", "syscall_cancel_arch", "internal_syscall_cancel", "syscall_cancel",
             "??", "???", "", "restore_rt", "kernel_vsyscall"}
# Names whose prefix tells them apart: macOS's _pthread_cond_wait serves both pthread_cond_wait
# and pthread_cond_timedwait (glibc's ___pthread_cond_wait is the untimed one).
_GENERIC_RAW = {"_pthread_cond_wait"}
# Argument names that hold a wait's deadline or timeout, and those whose negative value means
# "forever" (CPython's lock, poll(2)).
_TIMEOUT_KEYS = ("abstime", "timeout", "reltime", "rel_time", "abs_timeout", "microseconds",
                 "timeout_ns", "timeout_ms", "deadline")
_ARG = {key: re.compile(rf"(?:^|[\s(,]){key}=(?P<value>[^,)]*)") for key in
        (*_TIMEOUT_KEYS, "op", "private")}
_FUTEX_OP = re.compile(r"\bFUTEX_(?:WAIT|LOCK_PI)\w*")
_INT = re.compile(r"-?\d+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
# Python functions that wait: the last part of the name (py-spy's "Condition.wait").
_PY_LOCK = {"wait", "acquire", "join", "_wait_for_tstate_lock", "get", "put"}
_PY_IO = {"select", "poll", "recv", "_recv", "recv_bytes", "_recv_bytes", "accept", "read",
          "readline", "recvfrom", "recv_into"}


@dataclass
class Wait:
    """One thread's wait in a snapshot."""

    tid: int | None
    name: str | None
    kind: str  # lock, io (another process can end it), gil, sleep, idle, syscall, running
    untimed: bool | None  # True: no timeout; False: it has one; None: the text does not say
    function: str | None  # the wait's innermost named frame
    evidence: str  # what decided it, e.g. "abstime=0x0 in __futex_abstimed_wait_common"
    futex: dict[str, Any] | None = None  # {"op": name, "private": bool} when the text shows it
    under: str | None = None  # the outermost frame of the wait's chain (lock_PyThread_acquire_lock)
    label: str | None = None  # where the text has no tid: its own name of the thread

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def thread_waits(threads: list[DebugThread], args: dict[int, dict[int, str]],
                 python_args: dict[int, dict[int, str]],
                 decoded: ThreadState | None = None, idle: frozenset = frozenset(),
                 labels: list[str] | None = None) -> list[Wait]:
    """The wait of every thread that shows a frame; ``decoded`` is the stopped thread's system
    call read from its registers or the lab's /proc note, which outranks its frames; ``idle``
    the tids py-spy called idle; ``labels`` what the text calls each thread (a crash report's
    "thread 0")."""
    waits = []
    for at, thread in enumerate(threads):
        if not thread.frames and not thread.python_frames:
            continue
        call = decoded.syscall if decoded and decoded.tid == thread.tid else None
        wait = _decoded(thread, call) if call and call.futex and call.futex.is_wait else None
        wait = wait or _native(thread, args.get(at, {}))
        if wait is None or (wait.kind in ("running", "syscall") and thread.python_frames):
            wait = _python(thread, python_args.get(at, {}), thread.tid in idle) or wait
        wait = wait or Wait(thread.tid, thread.name, "running", None, None,
                            "no wait function among its innermost frames")
        wait.label = labels[at] if labels and at < len(labels) else None
        waits.append(wait)
    return waits


def snapshot(waits: list[Wait]) -> tuple[str | None, bool]:
    """``(what the snapshot shows, whether every thread is in an untimed lock wait)``."""
    if not waits:
        return None, False
    locked = [w for w in waits if w.kind == "lock" and w.untimed]
    if len(locked) == len(waits):
        return f"{SNAPSHOT}: {_some(waits)}", True
    others = [w for w in waits if not (w.kind == "lock" and w.untimed)]
    if locked:
        return (f"{len(locked)} of {len(waits)} threads blocked in untimed lock waits; the "
                f"others: {_some(others)} (one snapshot)"), False
    return f"no thread in an untimed lock wait: {_some(others)} (one snapshot)", False


def headline(waits: list[Wait]) -> str:
    """One sentence on the snapshot, for a heading's paragraph."""
    locked = sum(1 for w in waits if w.kind == "lock" and w.untimed)
    if waits and locked == len(waits):
        return f"Every thread shown is {SNAPSHOT}."
    if locked:
        return (f"{locked} of {len(waits)} threads are blocked in untimed lock waits; not all "
                "of them (one snapshot).")
    return "No thread is in an untimed lock wait (one snapshot)."


def _some(waits: list[Wait], most: int = 4) -> str:
    said = "; ".join(describe(wait) for wait in waits[:most])
    return said + (f"; and {len(waits) - most} more" if len(waits) > most else "")


def describe(wait: Wait) -> str:
    """``thread 8483 (python): untimed lock wait in __new_sem_wait (abstime=0x0 in ...)``."""
    names = [part for part in (wait.name, wait.label if wait.tid is not None else None) if part]
    who = f"thread {wait.tid}" if wait.tid is not None else wait.label or "a thread"
    who += f" ({', '.join(names)})" if names else ""
    timeout = {True: "untimed ", False: "timed ", None: ""}[wait.untimed]
    kinds = {"lock": "lock wait", "io": "wait another process can end", "gil": "wait for the GIL",
             "sleep": "sleep", "idle": "idle", "syscall": "system call",
             "running": "not in a wait"}
    where = f" in {wait.function}" if wait.function else ""
    where += f" under {wait.under}" if wait.under else ""
    unknown = ", timeout not shown" if wait.untimed is None and wait.kind in ("lock", "io") else ""
    return f"{who}: {timeout}{kinds.get(wait.kind, wait.kind)}{where}{unknown} ({wait.evidence})"


def base_name(function: str | None) -> str:
    """``__GI___pthread_mutex_lock`` -> ``pthread_mutex_lock``, ``sem_wait@@GLIBC_2.34`` ->
    ``sem_wait``, ``_dispatch_sema4_wait.cold.1`` -> ``dispatch_sema4_wait``."""
    name = (function or "").split("@", 1)[0].split(".cold", 1)[0].strip()
    name = name.lstrip("_")
    if name.startswith("GI_"):
        name = name[3:].lstrip("_")
    for suffix in ("64", "_time64"):
        if name.endswith(suffix) and name[:-len(suffix)] in _LOCK_UNTIMED | _LOCK_TIMED:
            name = name[:-len(suffix)]
    return name


def role(function: str | None) -> str | None:
    """lock, io, io-generic, sleep, gil, plumbing, or None (not part of a wait)."""
    name = base_name(function)
    short = name.rsplit("::", 1)[-1]
    if name in _PLUMBING or name.startswith("lldb_unnamed_symbol") or name.startswith("0x"):
        return "plumbing"
    if name in _GIL:
        return "gil"
    if name in _LOCK_UNTIMED or name in _LOCK_TIMED:
        return "lock"
    if short in _IO_UNTIMED or name in _IO_UNTIMED:
        return "io"
    if short in _IO_GENERIC or name in _IO_GENERIC:
        return "io-generic"
    if name in _SLEEP:
        return "sleep"
    lowered = name.lower()
    if any(word in lowered for word in _LOCK_WORDS) and "unlock" not in lowered:
        return "lock"
    return None


def _native(thread: DebugThread, args: dict[int, str]) -> Wait | None:
    chain: list[tuple[Frame, str]] = []
    for frame in thread.frames[:SCAN]:
        kind = role(frame.function)
        if kind is None:
            break
        chain.append((frame, kind))
    named = [(frame, kind) for frame, kind in chain if kind != "plumbing"]
    if not named:
        if chain and thread.frames:
            return Wait(thread.tid, thread.name, "syscall", None, thread.frames[0].function,
                        "a system call whose callers the text does not name")
        return None
    kinds = {kind for _, kind in named}
    kind = "gil" if "gil" in kinds else named[0][1].replace("io-generic", "io")
    function = named[0][0].function
    under = named[-1][0].function if len(named) > 1 else None
    futex: dict[str, Any] | None = None
    for frame, frame_kind in chain:
        text = args.get(frame.index, "")
        futex = futex or _futex_args(text)
        decided = _timeout_of(frame, frame_kind, text)
        if decided is not None:
            untimed, why = decided
            return Wait(thread.tid, thread.name, kind, untimed, function, why, futex, under)
    return Wait(thread.tid, thread.name, kind, None, function,
                "neither its arguments nor its name show a timeout", futex, under)


def _timeout_of(frame: Frame, kind: str, text: str) -> tuple[bool, str] | None:
    """(untimed, why) from one frame of a wait chain, or None when it does not decide."""
    where = f" in {frame.function}"
    if text:
        op = _FUTEX_OP.search(text)
        if op and ("NULL" in text or "0x0" in text.split(op.group(0), 1)[1][:40]):
            return True, f"{op.group(0)} with a NULL timeout{where}"
        for key in _TIMEOUT_KEYS:
            value = _value(text, key)
            if value is None or value.startswith("<"):
                continue  # <optimized out>, <unavailable>: not shown
            untimed = _untimed(key, value, kind)
            if untimed is not None:
                return untimed, f"{key}={value}{where}"
    name = base_name(frame.function)
    if frame.function in _GENERIC_RAW:
        return None
    if name in _LOCK_UNTIMED or name in _IO_UNTIMED or name.rsplit("::", 1)[-1] in _IO_UNTIMED:
        return True, f"{frame.function} has no timeout"
    if name in _LOCK_TIMED or name in _SLEEP:
        return False, f"{frame.function} has a timeout"
    return None


def _value(text: str, key: str) -> str | None:
    match = _ARG[key].search(text)
    if not match:
        return None
    value = match["value"].strip()
    return value.rsplit("=", 1)[-1].strip()  # gdb's "abstime=abstime@entry=0x0"


def _untimed(key: str, value: str, kind: str) -> bool | None:
    """A NULL deadline or a negative count waits forever; anything else has a timeout."""
    null = value in ("NULL", "None", "nullptr") or value.endswith("::None") or (
        _HEX.fullmatch(value) is not None and int(value, 16) == 0)
    if null:
        if kind == "io-generic" and key == "timeout":
            return None  # poll's 0 is no wait, not forever; "0x0" here is no pointer
        return True
    if "Some" in value:
        return False
    if _INT.fullmatch(value):
        number = int(value)
        if number < 0:
            return True
        return None if number == 0 and kind != "lock" else False
    if value.startswith("0x"):
        return False  # a pointer to a deadline
    return None


def _futex_args(text: str) -> dict[str, Any] | None:
    """glibc's ``op=393`` and ``private=0`` (LLL_PRIVATE is 0), or a ``FUTEX_WAIT...`` name."""
    if not text:
        return None
    op = _value(text, "op")
    if op and _INT.fullmatch(op):
        number = int(op)
        if number & FUTEX_CMD_MASK in FUTEX_WAIT_OPS:
            return {"op": futex_op_name(number), "private": bool(number & FUTEX_PRIVATE_FLAG)}
    named = _FUTEX_OP.search(text)
    if named:
        return {"op": named.group(0), "private": "PRIVATE" in named.group(0)}
    private = _value(text, "private")
    if private in ("0", "128"):
        return {"op": None, "private": private == "0"}
    return None


def _decoded(thread: DebugThread, call) -> Wait:
    futex = call.futex
    timeout = "NULL" if futex.timeout is None else futex.timeout
    why = (f"futex({futex.uaddr or '?'}, {futex.op}, {futex.val}, {timeout}) read from the "
           "stopped thread's registers")
    function = thread.frames[0].function if thread.frames else "futex"
    return Wait(thread.tid, thread.name, "lock", futex.timeout is None, function, why,
                {"op": futex.op, "private": futex.private})


def _python(thread: DebugThread, args: dict[int, str], idle: bool) -> Wait | None:
    """From the innermost Python frame (py-spy, a py-bt without native frames); py-spy's
    "idle" (blocked in a call it knows) where that frame is no wait of the standard library."""
    frame = thread.python_frames[0] if thread.python_frames else None
    kind = _python_role(frame) if frame else None
    if frame is None or kind is None:
        if idle and frame is not None:
            return Wait(thread.tid, thread.name, "idle", None, frame.function,
                        f"py-spy saw it idle, in a call it knows to block, at "
                        f"{frame.file}:{frame.line}")
        return None
    text = args.get(0, "")
    value = _value(text, "timeout") if text else None
    untimed = None if value is None else _untimed("timeout", value, kind)
    why = f"timeout={value}" if untimed is not None else "its timeout is not shown"
    return Wait(thread.tid, thread.name, kind.replace("io-generic", "io"), untimed,
                frame.function, f"{why} in Python's {frame.function} ({frame.file})")


def _python_role(frame: PythonFrame) -> str | None:
    short = frame.function.rsplit(".", 1)[-1]
    file = frame.file.replace("\\", "/")
    if file == "<built-in>":
        return "lock" if short in ("acquire", "join") else "io" if short in _PY_IO else (
            "sleep" if short == "sleep" else None)
    library = file.endswith(("threading.py", "queue.py")) or "/concurrent/" in file or (
        "multiprocessing/" in file and short in _PY_LOCK)
    if short in _PY_LOCK and library:
        return "lock"
    if short in _PY_IO and (file.endswith(("selectors.py", "socket.py", "connection.py"))):
        return "io-generic"
    return None
