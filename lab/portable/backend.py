"""A process backend on psutil: the tree, states, threads and CPU times on any OS psutil serves.

It reads no Linux-only source (no /proc/PID/syscall, no netlink process connector, no
subreaper), so on Linux (``LAB_BACKEND=portable``) it runs the code a Mac runs. What that costs:
no fork or exit events (the tree is polled), no syscall a thread waits in (a deadlock is proven
from the debugger's stacks instead, ``lab.watch.stackproof``), no signal masks, no tracer PID.
The lab is the root's parent and learns its end from ``Popen.poll`` (a process handle on
Windows), so the root's exit status is always seen; a descendant reaped by its own parent
between two polls is seen without its status. It signals through psutil (SIGCONT, SIGTERM,
SIGKILL on POSIX; NtResumeProcess and TerminateProcess on Windows) and takes reports from a
directory, not a FIFO: Windows has neither signals nor FIFOs, and Linux runs the same calls.

What kqueue would add on macOS was weighed and left out: ``EVFILT_PROC``/``NOTE_EXIT`` gives
the exit status only with ``NOTE_EXITSTATUS``, which Apple's kqueue(2) allows on the caller's
own children alone (the root, whose status the lab already has); for a grandchild it gives
only the moment of the exit, which the next poll (20 ms) sees too; and ``NOTE_TRACK``, which
would follow forks, is gone from macOS, so a process forked and ended between two polls stays
unseen either way.
"""

from __future__ import annotations

import os

import psutil

from lab.backend import (
    RUN_ID_VAR,
    Action,
    Exited,
    Forked,
    Gone,
    PosixSignals,
    ProcInfo,
)
from lab.evidence import ThreadState

NOTE = ("portable backend (psutil): the tree is polled; a descendant reaped by its own parent "
        "between two polls is seen without its exit status; threads show no syscall, so a "
        "deadlock is proven only from a debugger's stacks; signal masks and tracers are not seen")

# psutil's status names -> the one-letter states of ps(1) and /proc (proc(5)); macOS "idle"
# is a process that is just created or idle, which is a sleep to the judge.
_LETTER = {
    psutil.STATUS_RUNNING: "R", psutil.STATUS_SLEEPING: "S", psutil.STATUS_DISK_SLEEP: "D",
    psutil.STATUS_STOPPED: "T", psutil.STATUS_TRACING_STOP: "t", psutil.STATUS_ZOMBIE: "Z",
    psutil.STATUS_DEAD: "X", psutil.STATUS_IDLE: "S", psutil.STATUS_WAKING: "R",
    psutil.STATUS_PARKED: "S", psutil.STATUS_WAITING: "S", psutil.STATUS_LOCKED: "S",
}
TICKS_PER_S = 100  # ThreadState.cpu_ticks are clock ticks of 10 ms, as /proc reports them


def _process(pid: int) -> psutil.Process:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise Gone(pid) from None


def _call(pid: int, method: str):
    """``psutil.Process(pid).method()``; raises Gone, PermissionError."""
    try:
        return getattr(_process(pid), method)()
    except psutil.ZombieProcess:
        raise Gone(pid) from None
    except psutil.NoSuchProcess:
        raise Gone(pid) from None
    except psutil.AccessDenied:
        raise PermissionError(f"not allowed to read process {pid}") from None


class PortableBackend:
    sees_syscalls = False
    adopts_orphans = False
    report_fifo = False

    def __init__(self):
        self.mode, self.note = "portable", NOTE

    def open(self) -> None:
        pass  # nothing to subscribe to: the tree is polled

    def child_setup(self):
        return None  # PR_SET_PDEATHSIG is Linux's; `lab cleanup` finds a killed lab's tree

    def marked(self, run_id: str) -> list[int]:
        me = os.getpid()
        return [pid for pid in psutil.pids() if pid != me and self.run_id(pid) == run_id]

    def fileno(self) -> int | None:
        return None

    def events(self) -> list[Forked | Exited]:
        return []

    def info(self, pid: int) -> ProcInfo:
        process = _process(pid)
        try:
            with process.oneshot():
                ppid, status = process.ppid(), process.status()
        except psutil.NoSuchProcess:  # ZombieProcess included: status() of a zombie answers
            raise Gone(pid) from None
        except psutil.AccessDenied:
            raise PermissionError(f"not allowed to read process {pid}") from None
        try:
            session = os.getsid(pid)
        except (ProcessLookupError, PermissionError, AttributeError):  # Windows: no sessions
            session = 0
        return ProcInfo(pid=pid, ppid=ppid, state=_LETTER.get(status, "S"), session=session)

    def tracer(self, pid: int) -> int:
        self.info(pid)
        return 0  # psutil does not say who traces a process

    def children(self, pid: int) -> set[int]:
        try:
            return {child.pid for child in _process(pid).children()}
        except psutil.NoSuchProcess:
            raise Gone(pid) from None
        except psutil.AccessDenied:
            return set()

    def threads(self, pid: int) -> list[ThreadState]:
        """Every thread with its CPU time. Each carries the process's state: psutil has no
        per-thread state on every OS, and no syscall or wait channel anywhere."""
        state = self.info(pid).state
        listed = _call(pid, "threads")
        return [ThreadState(tid=thread.id, name="", state=state, wchan="",
                            cpu_ticks=round((thread.user_time + thread.system_time)
                                            * TICKS_PER_S))
                for thread in listed]

    def cmdline(self, pid: int) -> list[str]:
        return _call(pid, "cmdline")

    def signals(self, pid: int):
        return None  # no portable source of signal masks and timers

    def run_id(self, pid: int) -> str | None:
        try:
            return _call(pid, "environ").get(RUN_ID_VAR)
        except (Gone, PermissionError, OSError):
            return None

    def mapped(self, pid: int) -> list[str]:
        maps = _call(pid, "memory_maps")
        return sorted({m.path for m in maps if m.path.startswith("/")})

    def fd_target(self, pid: int, fd: int) -> str | None:
        return None  # psutil lists regular files only: no pipes, no sockets by descriptor

    def holders(self, target: str) -> list[tuple[int, int, str]]:
        return []

    def thread_group(self, tid: int) -> int:
        _process(tid)  # raises Gone; psutil's PIDs are processes
        return tid

    def thread_names(self, pid: int) -> dict[int, str]:
        _call(pid, "threads")  # raises Gone
        return {}  # psutil lists thread ids and CPU times only, no names

    def forking_thread(self, ppid: int, child: int) -> int | None:
        return None  # no portable source tells which thread forked

    def executable(self, pid: int) -> str | None:
        try:
            return os.path.realpath(_call(pid, "exe")) or None
        except (Gone, PermissionError, OSError):
            return None

    def syscall_lines(self, pid: int) -> dict[int, str]:
        return {}  # no portable source of the system call a thread is in

    def dumpable_bytes(self, pid: int) -> int | None:
        return None  # mappings without their dump flags: no honest estimate

    def read_memory(self, pid: int, address: int, size: int) -> bytes | None:
        return None  # psutil reads no other process's memory

    def pid_max(self) -> int:
        return 1 << 22  # PID_MAX_LIMIT on 64-bit Linux; above every macOS PID (99998)

    def ptrace_scope(self) -> int | None:
        return None  # Yama is Linux's; the portable backend reads no Linux-only source

    def trace_refusal(self, pid: int) -> str | None:
        owner = _call(pid, "uids").real if hasattr(psutil.Process, "uids") else None
        me = os.geteuid() if hasattr(os, "geteuid") else None
        if me not in (None, 0) and owner is not None and owner != me:
            return f"process {pid} belongs to uid {owner} and the lab runs as uid {me}"
        return None  # the rest (SIP, entitlements on macOS) only the debugger's attach can tell

    def signal(self, pid: int, action: Action) -> bool:
        try:
            getattr(psutil.Process(pid), action)()  # resume(), terminate(), kill()
        except psutil.NoSuchProcess:  # ZombieProcess included: it has ended already
            return False
        except psutil.AccessDenied:
            return True  # not ours to signal, but it is there
        return True

    def signal_group(self, leader: int, action: Action) -> None:
        if hasattr(os, "killpg"):  # Windows: no process groups; the run's marker finds the rest
            PosixSignals.signal_group(self, leader, action)

    def close(self) -> None:
        pass
