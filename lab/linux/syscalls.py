"""Decode ``/proc/PID/task/TID/syscall`` lines per architecture, futex calls by name.

The line is ``NR ARG0 .. ARG5 SP PC`` while a thread is blocked in a syscall, ``-1 SP PC``
when it is blocked outside one, and ``running`` while it runs (proc(5)). Only the syscalls a
blocked thread is found in are named; others keep their number as ``syscall_N``.
"""

from __future__ import annotations

import platform

from lab.evidence import FutexCall, Syscall

# Only the calls a stuck thread sits in (x86_64: arch/x86/entry/syscalls/syscall_64.tbl).
X86_64 = {
    0: "read", 1: "write", 7: "poll", 17: "pread64", 19: "readv", 23: "select", 34: "pause",
    35: "nanosleep", 43: "accept", 45: "recvfrom", 47: "recvmsg", 56: "clone", 57: "fork",
    60: "exit", 61: "wait4", 101: "ptrace", 128: "rt_sigtimedwait", 130: "rt_sigsuspend",
    202: "futex", 230: "clock_nanosleep", 231: "exit_group", 232: "epoll_wait", 247: "waitid",
    270: "pselect6", 271: "ppoll", 281: "epoll_pwait", 288: "accept4", 435: "clone3",
    441: "epoll_pwait2", 449: "futex_waitv",
}

# aarch64 uses the generic table (include/uapi/asm-generic/unistd.h); the number is in x8 and
# the arguments in x0..x5.
AARCH64 = {
    22: "epoll_pwait", 63: "read", 64: "write", 65: "readv", 67: "pread64", 72: "pselect6",
    73: "ppoll", 93: "exit", 94: "exit_group", 95: "waitid", 98: "futex", 101: "nanosleep",
    115: "clock_nanosleep", 117: "ptrace", 133: "rt_sigsuspend", 137: "rt_sigtimedwait",
    202: "accept", 207: "recvfrom", 212: "recvmsg", 220: "clone", 242: "accept4",
    260: "wait4", 435: "clone3", 441: "epoll_pwait2", 449: "futex_waitv",
}

TABLES = {"x86_64": X86_64, "aarch64": AARCH64, "arm64": AARCH64}

# futex(2) operations (include/uapi/linux/futex.h).
FUTEX_PRIVATE_FLAG = 128
FUTEX_CLOCK_REALTIME = 256
FUTEX_CMD_MASK = ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
FUTEX_OPS = {
    0: "FUTEX_WAIT", 1: "FUTEX_WAKE", 2: "FUTEX_FD", 3: "FUTEX_REQUEUE",
    4: "FUTEX_CMP_REQUEUE", 5: "FUTEX_WAKE_OP", 6: "FUTEX_LOCK_PI", 7: "FUTEX_UNLOCK_PI",
    8: "FUTEX_TRYLOCK_PI", 9: "FUTEX_WAIT_BITSET", 10: "FUTEX_WAKE_BITSET",
    11: "FUTEX_WAIT_REQUEUE_PI", 12: "FUTEX_CMP_REQUEUE_PI", 13: "FUTEX_LOCK_PI2",
}
# Operations that put the caller to sleep; for all of them argument 3 is the timeout pointer.
FUTEX_WAIT_OPS = {0, 6, 9, 11, 13}


def native_arch() -> str:
    return platform.machine()


def syscall_name(nr: int, arch: str | None = None) -> str:
    table = TABLES.get(arch or native_arch(), {})
    return table.get(nr, f"syscall_{nr}")


def futex_op_name(op: int) -> str:
    """Name a futex op word, e.g. 0x89 -> "FUTEX_WAIT_BITSET_PRIVATE"."""
    cmd = op & FUTEX_CMD_MASK
    name = FUTEX_OPS.get(cmd, f"FUTEX_OP_{cmd}")
    if op & FUTEX_PRIVATE_FLAG:
        name += "_PRIVATE"
    if op & FUTEX_CLOCK_REALTIME:
        name += "|FUTEX_CLOCK_REALTIME"
    return name


def decode_futex(args: list[int]) -> FutexCall:
    """Decode futex(uaddr, op, val, timeout, ...) from raw argument values."""
    uaddr, op, val, timeout = args[0], args[1], args[2], args[3]
    cmd = op & FUTEX_CMD_MASK
    return FutexCall(
        uaddr=hex(uaddr),
        op=futex_op_name(op),
        val=val & 0xFFFFFFFF,
        timeout=None if timeout == 0 else hex(timeout),
        op_raw=op,
        private=bool(op & FUTEX_PRIVATE_FLAG),
        is_wait=cmd in FUTEX_WAIT_OPS,
    )


def decode(nr: int, args: list[int], arch: str | None = None) -> Syscall:
    """Decode one syscall from its number and raw arguments for ``arch`` (default: this one)."""
    name = syscall_name(nr, arch)
    futex = decode_futex(args) if name == "futex" and len(args) >= 4 else None
    return Syscall(nr=nr, name=name, args=[hex(a) for a in args], futex=futex)


def parse_proc_syscall(line: str, arch: str | None = None) -> Syscall | None:
    """Parse a ``/proc/.../syscall`` line; None when the thread runs or is not in a syscall."""
    fields = line.split()
    if not fields or fields[0] == "running" or fields[0] == "-1":
        return None
    nr = int(fields[0])
    args = [int(value, 16) for value in fields[1:7]]
    return decode(nr, args, arch)


def decode_registers(registers: dict[str, str], arch: str) -> Syscall | None:
    """Decode the syscall a stopped thread is in from a debugger's register dump.

    x86_64: orig_rax = number, rdi rsi rdx r10 r8 r9 = arguments.
    aarch64: x8 = number, x0..x5 = arguments (x0 may already hold -EINTR/-ERESTARTSYS after
    an interrupted wait, so the futex address is best read from the transcript's x0 at entry).
    """

    def value(name: str) -> int | None:
        raw = registers.get(name)
        if raw is None:
            return None
        return int(raw, 16) if raw.lower().startswith("0x") else int(raw)

    if arch in ("aarch64", "arm64"):
        nr = value("x8")
        names = ["x0", "x1", "x2", "x3", "x4", "x5"]
    elif arch == "x86_64":
        nr = value("orig_rax")
        names = ["rdi", "rsi", "rdx", "r10", "r8", "r9"]
    else:
        return None
    if nr is None or nr < 0 or nr > 0xFFFF:
        return None
    args = [value(n) or 0 for n in names]
    return decode(nr, args, arch)
