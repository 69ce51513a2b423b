"""The process-backend seam: what the lab needs to know about a tree of processes, on any OS.

A backend answers questions about processes by PID (state, parent, session, threads, argv,
children) and, where the OS can tell, reports forks and exits as they happen. The Linux one
(``lab.linux.backend``) reads /proc and listens on the netlink process connector; the portable
one (``lab.portable.backend``, psutil) serves macOS, Windows and ``LAB_BACKEND=portable``. The
observers and the ProcessTree only talk to this interface, so a backend can be added without
touching them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from lab.evidence import ThreadState

RUN_ID_VAR = "LAB_RUN_ID"  # every process a run starts inherits it: the run's marker

# What the lab does to a process it stops: continue it (a stopped process cannot die of
# SIGTERM), ask it to end, end it. POSIX sends SIGCONT, SIGTERM, SIGKILL.
Action = Literal["resume", "terminate", "kill"]
POSIX_SIGNALS: dict[str, int] = {"resume": getattr(signal, "SIGCONT", 0),
                                 "terminate": signal.SIGTERM,
                                 "kill": getattr(signal, "SIGKILL", signal.SIGTERM)}


class Gone(Exception):
    """The process or thread no longer exists (or was reaped while it was read)."""


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    state: str  # one letter: R S D T t Z X ...
    session: int
    exit_code: int | None = None  # wait-status form, where the OS shows it for a zombie


@dataclass(frozen=True)
class SignalState:
    """A process's signals as the OS shows them, by name: what could still wake a wait."""

    caught: tuple[str, ...] = ()  # a handler is installed
    blocked: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()  # pending for the process or any of its threads
    timers: tuple[str, ...] = ()  # POSIX timers (timer_create), as "ID signal SIGALRM"


@dataclass(frozen=True)
class Forked:
    parent: int
    child: int
    timestamp_ns: int  # CLOCK_MONOTONIC


@dataclass(frozen=True)
class Exited:
    pid: int
    wait_status: int  # as waitpid(2) reports it
    timestamp_ns: int


class Backend(Protocol):
    mode: str  # the evidence's watch_mode: "netlink", "polling", "portable"
    note: str | None  # what this mode cannot see, for the evidence's watch_note
    sees_syscalls: bool  # do threads() name the syscall each thread waits in (a proof's basis)
    adopts_orphans: bool  # do orphans come back to the lab (a subreaper), as children() shows
    report_fifo: bool  # reports on a FIFO (lab.reports), else one file each in a directory

    def open(self) -> None:
        """Prepare to follow a tree started after this call (subreaper, event source)."""

    def child_setup(self) -> Callable[[], None] | None:
        """What the root runs between fork and exec (Linux: die with the lab), or None."""

    def marked(self, run_id: str) -> list[int]:
        """Every process whose environment carries ``run_id`` (all users' that can be read)."""

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when events are queued; None: poll."""

    def events(self) -> list[Forked | Exited]:
        """Process (not thread) forks and exits queued since the last call; never blocks."""

    def info(self, pid: int) -> ProcInfo:
        """Raises Gone."""

    def tracer(self, pid: int) -> int:
        """The PID of the process tracing ``pid`` (0: none). Raises Gone."""

    def children(self, pid: int) -> set[int]:
        """Direct children of ``pid``. Raises Gone."""

    def threads(self, pid: int) -> list[ThreadState]:
        """Every thread of ``pid``, with what it waits in where the OS shows it. Raises Gone."""

    def cmdline(self, pid: int) -> list[str]:
        """Raises Gone (and PermissionError where the OS refuses)."""

    def signals(self, pid: int) -> SignalState | None:
        """Caught, blocked, ignored and pending signals and POSIX timers; None where the OS
        does not show them."""

    def run_id(self, pid: int) -> str | None:
        """The ``LAB_RUN_ID`` in ``pid``'s environment: the run it belongs to, even after it
        left the run's session (a daemon) or was orphaned. None where it cannot be read."""

    def mapped(self, pid: int) -> list[str]:
        """The files mapped into ``pid`` (its executable and shared libraries), sorted; empty
        where the OS does not show them. Raises Gone, PermissionError."""

    def fd_target(self, pid: int, fd: int) -> str | None:
        """What descriptor ``fd`` of ``pid`` is (a path, ``pipe:[INODE]``, ``socket:[INODE]``);
        None where it cannot be read, or the OS does not show it."""

    def holders(self, target: str) -> list[tuple[int, int, str]]:
        """``(pid, fd, mode)`` of every descriptor open on ``target`` (a ``fd_target``) in
        the processes this one may read; empty where the OS does not show descriptors."""

    def thread_group(self, tid: int) -> int:
        """The process (thread group) that thread ``tid`` belongs to: ``tid`` itself for a
        process's main thread, and where the OS tells threads from processes no other way.
        Raises Gone."""

    def thread_names(self, pid: int) -> dict[int, str]:
        """``{tid: name}`` of ``pid``'s threads as the OS names them (a thread keeps the name
        its creator gave it); empty where the OS names no threads. Raises Gone."""

    def forking_thread(self, ppid: int, child: int) -> int | None:
        """The thread of ``ppid`` that forked ``child``, where the OS tells; else None."""

    def executable(self, pid: int) -> str | None:
        """The real path of ``pid``'s executable; None where it cannot be read."""

    def syscall_lines(self, pid: int) -> dict[int, str]:
        """``{tid: the OS's own line for the system call it is in}``; empty where the OS
        does not show it (the LLDB driver keeps them in its transcript: lldb shows no
        ``orig_rax``)."""

    def dumpable_bytes(self, pid: int) -> int | None:
        """The bytes a core file of ``pid`` would hold; None where the OS does not show its
        mappings' dump flags. Raises Gone, PermissionError."""

    def read_memory(self, pid: int, address: int, size: int) -> bytes | None:
        """``size`` bytes of ``pid``'s memory at ``address``, read without stopping it; None
        where they cannot be read (no permission, unmapped, or no such source here)."""

    def pid_max(self) -> int:
        """The largest PID (and TID) the OS hands out: bounds a TID read from memory."""

    def ptrace_scope(self) -> int | None:
        """Yama's kernel.yama.ptrace_scope; None without Yama (or off Linux)."""

    def trace_refusal(self, pid: int) -> str | None:
        """Why this process may not read ``pid``'s memory or attach to it (another user's, no
        CAP_SYS_PTRACE, Yama); None when it may. Raises Gone."""

    def signal(self, pid: int, action: Action) -> bool:
        """Resume, terminate or kill ``pid``; False when it is already gone."""

    def signal_group(self, leader: int, action: Action) -> None:
        """The same to the process group ``leader`` leads, where the OS has process groups:
        what was forked after the last look at the tree."""

    def close(self) -> None:
        """Release the event source."""


class PosixSignals:
    """``signal``/``signal_group`` with kill(2) and killpg(2)."""

    def signal(self, pid: int, action: Action) -> bool:
        try:
            os.kill(pid, POSIX_SIGNALS[action])
        except ProcessLookupError:
            return False
        return True

    def signal_group(self, leader: int, action: Action) -> None:
        try:
            os.killpg(leader, POSIX_SIGNALS[action])
        except (ProcessLookupError, PermissionError):
            pass
