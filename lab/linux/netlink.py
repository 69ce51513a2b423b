"""The kernel's process connector (cn_proc): fork and exit events for every process.

It lets the lab learn a descendant's exit status even when the descendant's own parent reaps
it (a crashed child whose parent then exits 0). Subscribing needs CAP_NET_ADMIN (root); where
it is refused the caller falls back to polling /proc and says so in the evidence.
See linux/include/uapi/linux/cn_proc.h and connector.h for the layouts parsed here.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3

PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT_HDR = struct.Struct("=IIQ")  # what, cpu, timestamp_ns (CLOCK_MONOTONIC)
_FORK = struct.Struct("=IIII")  # parent_pid, parent_tgid, child_pid, child_tgid
_EXIT = struct.Struct("=IIII")  # process_pid, process_tgid, exit_code, exit_signal


@dataclass
class ForkEvent:
    parent_tgid: int
    child_pid: int
    child_tgid: int
    timestamp_ns: int

    @property
    def is_thread(self) -> bool:
        return self.child_pid != self.child_tgid


@dataclass
class ExitEvent:
    pid: int
    tgid: int
    wait_status: int  # as waitpid(2) reports it: (code << 8) | signal | 0x80 for a core
    timestamp_ns: int

    @property
    def is_thread(self) -> bool:
        return self.pid != self.tgid


class Unavailable(Exception):
    """The connector cannot be used here (no CAP_NET_ADMIN, or not built into the kernel)."""


class ProcessConnector:
    """A subscribed cn_proc socket. Use as a context manager; ``fileno()`` works with select."""

    def __init__(self):
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except (OSError, AttributeError) as exc:
            raise Unavailable(f"netlink connector socket: {exc}") from exc
        try:
            # Port id 0 lets the kernel pick a unique one: two labs at once do not collide.
            self.sock.bind((0, CN_IDX_PROC))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            self._control(PROC_CN_MCAST_LISTEN)
        except OSError as exc:
            self.sock.close()
            reason = "permission denied (needs root or CAP_NET_ADMIN)" if exc.errno in (
                errno.EPERM, errno.EACCES) else str(exc)
            raise Unavailable(f"process connector unavailable: {reason}") from exc
        self.sock.setblocking(False)
        self.overflowed = False

    def _control(self, op: int) -> None:
        payload = struct.pack("=I", op)
        cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid())
        self.sock.send(header + cn)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_events(self) -> list[ForkEvent | ExitEvent]:
        """Return every event queued now (never blocks). Sets ``overflowed`` on ENOBUFS."""
        events: list[ForkEvent | ExitEvent] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overflowed = True  # events were lost: the caller rescans /proc
                    continue
                raise
            events.extend(parse_messages(data))

    def close(self) -> None:
        try:
            self._control(PROC_CN_MCAST_IGNORE)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_messages(data: bytes) -> list[ForkEvent | ExitEvent]:
    """Parse one datagram (possibly several netlink messages) into fork/exit events."""
    events: list[ForkEvent | ExitEvent] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length = _NLMSGHDR.unpack_from(data, offset)[0]
        if length < _NLMSGHDR.size:
            break
        body = offset + _NLMSGHDR.size + _CN_MSG.size
        if body + _EVENT_HDR.size <= offset + length:
            what, _cpu, timestamp = _EVENT_HDR.unpack_from(data, body)
            payload = body + _EVENT_HDR.size
            if what == PROC_EVENT_FORK:
                _ppid, ptgid, cpid, ctgid = _FORK.unpack_from(data, payload)
                events.append(ForkEvent(ptgid, cpid, ctgid, timestamp))
            elif what == PROC_EVENT_EXIT:
                pid, tgid, code, _exit_signal = _EXIT.unpack_from(data, payload)
                events.append(ExitEvent(pid, tgid, code, timestamp))
        offset += (length + 3) & ~3
    return events
