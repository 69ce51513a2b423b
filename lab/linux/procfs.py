"""Read processes and threads from /proc: state, wchan, the syscall each thread sits in.

Every reader tolerates the process vanishing between two reads: it raises ``Gone``.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from lab.backend import (
    Gone,  # one Gone for the seam and /proc: raised below
    SignalState,
)
from lab.evidence import ThreadState
from lab.linux import syscalls


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise Gone(path) from exc


def _stat_fields(path: str) -> list[bytes]:
    # comm may contain spaces and parentheses: split after the last ')'.
    raw = _read(path)
    head, _, tail = raw.rpartition(b")")
    return [head.split(b"(", 1)[0].strip()] + [head.split(b"(", 1)[1]] + tail.split()


@dataclass
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int
    exit_code: int | None  # wait-status form; readable only while a zombie (Linux >= 3.5)
    session: int = 0


def stat(pid: int, tid: int | None = None) -> ProcStat:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    f = _stat_fields(path)
    # f[0]=pid f[1]=comm f[2]=state f[3]=ppid f[5]=session ... f[13]=utime f[14]=stime ...
    # f[51]=exit_code (proc(5))
    exit_code = int(f[51]) if len(f) > 51 else None
    return ProcStat(
        pid=int(f[0]),
        comm=f[1].decode(errors="replace"),
        state=f[2].decode(),
        ppid=int(f[3]),
        utime=int(f[13]),
        stime=int(f[14]),
        exit_code=exit_code,
        session=int(f[5]),
    )


def status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    result = {}
    for line in _read(path).decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        result[key] = value.strip()
    return result


def tids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise Gone(pid) from exc


# /proc/PID/task/TID/children needs CONFIG_PROC_CHILDREN; without it, scan every /proc/PID/stat.
HAS_CHILDREN_FILE = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def children(pid: int) -> set[int]:
    """Direct children of ``pid``."""
    if not HAS_CHILDREN_FILE:
        return _children_by_scan(pid)
    result: set[int] = set()
    for tid in tids(pid):
        try:
            result.update(int(c) for c in _read(f"/proc/{pid}/task/{tid}/children").split())
        except Gone:
            continue
    return result


def _children_by_scan(pid: int) -> set[int]:
    result = set()
    for other in all_pids():
        try:
            if stat(other).ppid == pid:
                result.add(other)
        except Gone:
            continue
    return result


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def cmdline(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline")
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def environ(pid: int) -> dict[str, str]:
    result = {}
    for part in _read(f"/proc/{pid}/environ").split(b"\0"):
        key, sep, value = part.partition(b"=")
        if sep:
            result[key.decode(errors="replace")] = value.decode(errors="replace")
    return result


def comm(pid: int, tid: int | None = None) -> str:
    path = f"/proc/{pid}/comm" if tid is None else f"/proc/{pid}/task/{tid}/comm"
    return _read(path).decode(errors="replace").strip()


def thread_state(pid: int, tid: int, arch: str | None = None) -> ThreadState:
    """Snapshot one thread: name, state, wchan, decoded syscall, switches and CPU ticks."""
    st = stat(pid, tid)
    try:
        wchan = _read(f"/proc/{pid}/task/{tid}/wchan").decode(errors="replace").strip()
    except (Gone, PermissionError):
        wchan = ""
    try:
        line = _read(f"/proc/{pid}/task/{tid}/syscall").decode().strip()
    except PermissionError:
        line = ""
    switches = status(pid, tid).get("voluntary_ctxt_switches")
    return ThreadState(
        tid=tid,
        name=st.comm,
        state=st.state,
        wchan=wchan if wchan != "0" else "",
        syscall=syscalls.parse_proc_syscall(line, arch) if line else None,
        voluntary_ctxt_switches=int(switches) if switches is not None else None,
        cpu_ticks=st.utime + st.stime,
    )


def threads(pid: int, arch: str | None = None) -> list[ThreadState]:
    """Snapshot every thread of ``pid`` (threads that exit while we read are skipped)."""
    result = []
    for tid in tids(pid):
        try:
            result.append(thread_state(pid, tid, arch))
        except Gone:
            continue
    if not result:
        raise Gone(pid)
    return result


def tracer_pid(pid: int) -> int:
    return int(status(pid).get("TracerPid", "0"))


def is_zombie(pid: int) -> bool:
    try:
        return stat(pid).state == "Z"
    except Gone:
        return True


def _signal_names(mask: int) -> tuple[str, ...]:
    names = []
    for number in range(1, 65):
        if mask & (1 << (number - 1)):
            try:
                names.append(signal.Signals(number).name)
            except ValueError:
                names.append(f"SIG{number}")  # a real-time signal
    return tuple(names)


def signal_state(pid: int) -> SignalState:
    """Signals from /proc/PID/status (SigCgt, SigBlk, SigIgn; SigPnd of every thread and
    ShdPnd) and POSIX timers from /proc/PID/timers (proc(5)). Raises Gone."""
    fields = status(pid)
    pending = int(fields.get("ShdPnd", "0"), 16)
    for tid in tids(pid):
        try:
            pending |= int(status(pid, tid).get("SigPnd", "0"), 16)
        except Gone:
            continue
    timers = []
    try:
        current: dict[str, str] = {}
        for line in _read(f"/proc/{pid}/timers").decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key == "ID" and current:
                timers.append(current)
                current = {}
            current[key.strip()] = value.strip()
        if current:
            timers.append(current)
    except (Gone, PermissionError):
        pass
    return SignalState(
        caught=_signal_names(int(fields.get("SigCgt", "0"), 16)),
        blocked=_signal_names(int(fields.get("SigBlk", "0"), 16)),
        ignored=_signal_names(int(fields.get("SigIgn", "0"), 16)),
        pending=_signal_names(pending),
        timers=tuple(f"{t.get('ID', '?')} {_timer_signal(t)} {t.get('notify', '?').split('/')[0]}"
                     for t in timers))


def _timer_signal(timer: dict[str, str]) -> str:
    number = timer.get("signal", "").split("/")[0]
    return _signal_names(1 << (int(number) - 1))[0] if number.isdigit() and number != "0" \
        else "none"


# -- what the layers above ask through the backend (lab.linux.backend) ------------------------

def thread_names(pid: int) -> dict[int, str]:
    """``{tid: comm}`` of each thread of ``pid``; a thread that ends meanwhile is left out.
    Raises Gone."""
    names = {}
    for tid in tids(pid):
        try:
            names[tid] = comm(pid, tid)
        except (Gone, OSError):
            continue
    return names


def forking_thread(ppid: int, child: int) -> int | None:
    """The thread of ``ppid`` whose child ``child`` is (task/TID/children), or None."""
    if not HAS_CHILDREN_FILE:
        return None
    try:
        for tid in tids(ppid):
            try:
                if str(child).encode() in _read(f"/proc/{ppid}/task/{tid}/children").split():
                    return tid
            except (Gone, OSError):
                continue
    except Gone:
        return None
    return None


def executable(pid: int) -> str | None:
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


def syscall_lines(pid: int) -> dict[int, str]:
    """``{tid: the raw /proc/PID/task/TID/syscall line}``; empty when ``pid`` is gone."""
    lines = {}
    try:
        found = tids(pid)
    except Gone:
        return lines
    for tid in found:
        try:
            lines[tid] = _read(f"/proc/{pid}/task/{tid}/syscall").decode("ascii").strip()
        except (Gone, OSError, UnicodeDecodeError):
            continue
    return lines


def dumpable_bytes(pid: int) -> int:
    """The bytes a core of ``pid`` would hold (gcore, GDB's default coredump filter): every
    mapping but [vsyscall] and those marked "dd" (don't dump) in /proc/PID/smaps. Raises Gone,
    PermissionError."""
    total = size = 0
    dumped = False
    for line in _read(f"/proc/{pid}/smaps").decode("utf-8", errors="replace").splitlines():
        fields = line.split()
        if not fields:
            continue
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping header
            start, end = (int(x, 16) for x in fields[0].split("-"))
            size = end - start
            path = fields[5] if len(fields) > 5 else ""
            dumped = path != "[vsyscall]"
        elif fields[0] == "VmFlags:" and dumped and "dd" not in fields[1:]:
            total += size
    return total


def read_memory(pid: int, address: int, size: int) -> bytes | None:
    """``size`` bytes at ``address`` of ``pid`` (/proc/PID/mem: ptrace-attach permission, the
    target need not be stopped); None when they cannot be read."""
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.pread(fd, size, address)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == size else None


def pid_max() -> int:
    try:
        return int(_read("/proc/sys/kernel/pid_max"))
    except (Gone, OSError, ValueError):
        return 1 << 22  # the kernel's PID_MAX_LIMIT on 64-bit


def ptrace_scope() -> int | None:
    """Yama's kernel.yama.ptrace_scope; None without Yama (only the classic same-uid and
    CAP_SYS_PTRACE rules apply)."""
    try:
        return int(_read("/proc/sys/kernel/yama/ptrace_scope").strip())
    except (Gone, OSError, ValueError):
        return None


def start_ticks(pid: int) -> str | None:
    """``pid``'s start time in clock ticks since boot (stat field 22); None when it is gone."""
    try:
        return _read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()[19].decode()
    except (Gone, OSError, IndexError):
        return None


def fd_target(pid: int, fd: int) -> str | None:
    """What descriptor ``fd`` of ``pid`` is: a path, ``pipe:[INODE]``, ``socket:[INODE]``..."""
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def fd_mode(pid: int, fd: int) -> str | None:
    """"r", "w" or "rw": how ``fd`` of ``pid`` was opened (fdinfo's flags, O_ACCMODE)."""
    try:
        for line in _read(f"/proc/{pid}/fdinfo/{fd}").decode().splitlines():
            if line.startswith("flags:"):
                return ("r", "w", "rw", "rw")[int(line.split()[1], 8) & 3]
    except (Gone, OSError, ValueError, IndexError):
        return None
    return None


def holders(target: str) -> list[tuple[int, int, str]]:
    """``(pid, fd, mode)`` of every descriptor open on ``target`` (a pipe's or a socket's
    ``pipe:[INODE]``) in every process this one may read, itself included."""
    found = []
    for pid in all_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or another user's
        for entry in fds:
            fd = int(entry)
            if fd_target(pid, fd) == target:
                found.append((pid, fd, fd_mode(pid, fd) or "?"))
    return found
