"""A minimal backend for systems without /proc (macOS): ps(1) for states and the tree.

It sees no threads and no exit events; its mode is "polling". The portable psutil backend is
its successor.
"""

from __future__ import annotations

import os
import subprocess

from lab.evidence import ThreadState
from lab.process.backend import Exited, Forked, Gone, ProcInfo

PS_TIMEOUT_S = 5.0
NOTE = ("no /proc here: process states and the tree come from ps(1); threads and exit "
        "statuses of processes the lab did not start are not seen")


def _ps(*args: str) -> str:
    try:
        return subprocess.run(["ps", *args], capture_output=True, text=True,
                              timeout=PS_TIMEOUT_S).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


class PsBackend:
    def __init__(self):
        self.mode, self.note = "polling", NOTE

    def open(self) -> None:
        pass

    def child_setup(self):
        return None

    def marked(self, run_id: str) -> list[int]:
        return []

    def fileno(self) -> int | None:
        return None

    def events(self) -> list[Forked | Exited]:
        return []

    def info(self, pid: int) -> ProcInfo:
        fields = _ps("-o", "stat=,ppid=,sess=", "-p", str(pid)).split()
        if len(fields) < 2:
            raise Gone(pid)
        session = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
        return ProcInfo(pid=pid, ppid=int(fields[1]), state=fields[0][:1], session=session)

    def tracer(self, pid: int) -> int:
        self.info(pid)
        return 0  # ps cannot tell

    def children(self, pid: int) -> set[int]:
        kids = set()
        for line in _ps("-A", "-o", "pid=,ppid=").splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1] == str(pid):
                kids.add(int(fields[0]))
        return kids

    def threads(self, pid: int) -> list[ThreadState]:
        info = self.info(pid)
        return [ThreadState(tid=pid, name="", state=info.state, wchan="")]

    def cmdline(self, pid: int) -> list[str]:
        text = _ps("-o", "command=", "-p", str(pid)).strip()
        if not text:
            raise Gone(pid)
        return text.split()

    def signals(self, pid: int):
        return None  # ps(1) shows no signal masks portably

    def run_id(self, pid: int) -> str | None:
        return None  # ps(1) shows no environment portably

    def mapped(self, pid: int) -> list[str]:
        self.info(pid)
        return []  # ps(1) does not list a process's mappings

    def trace_refusal(self, pid: int) -> str | None:
        self.info(pid)
        try:
            import psutil  # a core dependency; its uids() works where ps(1) is all there is

            owner = psutil.Process(pid).uids().real
        except Exception:  # psutil missing, or the process gone: the attach will say it
            return None
        me = os.geteuid()
        if me != 0 and owner != me:
            return f"process {pid} belongs to uid {owner} and the lab runs as uid {me}"
        return None  # the rest (SIP, entitlements) only the debugger's attach can tell

    def close(self) -> None:
        pass
