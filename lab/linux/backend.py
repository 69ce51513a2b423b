"""The Linux process backend: /proc for state and threads, cn_proc for forks and exits."""

from __future__ import annotations

import os

from lab.backend import (
    RUN_ID_VAR,
    Exited,
    Forked,
    Gone,
    PosixSignals,
    ProcInfo,
    SignalState,
)
from lab.evidence import ThreadState
from lab.linux import netlink, prctl, procfs

POLLING_NOTE = ("fell back to polling /proc: a descendant that exits and is reaped by its own "
                "parent between two polls is seen without its exit status")


class LinuxBackend(PosixSignals):
    """Reads /proc; once opened, the lab is a child subreaper and hears cn_proc events."""

    sees_syscalls = True
    adopts_orphans = True  # open() makes the lab a child subreaper
    report_fifo = True

    def __init__(self):
        self.mode = "polling"
        self.note: str | None = None
        self._connector: netlink.ProcessConnector | None = None

    def open(self) -> None:
        prctl.set_child_subreaper()
        try:
            self._connector = netlink.ProcessConnector()
            self.mode, self.note = "netlink", None
        except netlink.Unavailable as exc:
            self.mode, self.note = "polling", f"{exc}; {POLLING_NOTE}"

    def child_setup(self):
        from lab import interrupts

        return prctl.die_with(os.getpid(), interrupts.inherited_ignored())

    def marked(self, run_id: str) -> list[int]:
        return [pid for pid in procfs.all_pids()
                if pid != os.getpid() and self.run_id(pid) == run_id]

    def fileno(self) -> int | None:
        return self._connector.fileno() if self._connector is not None else None

    def events(self) -> list[Forked | Exited]:
        if self._connector is None:
            return []
        found: list[Forked | Exited] = []
        for event in self._connector.read_events():
            if event.is_thread:
                continue
            if isinstance(event, netlink.ForkEvent):
                found.append(Forked(event.parent_tgid, event.child_tgid, event.timestamp_ns))
            else:
                found.append(Exited(event.tgid, event.wait_status, event.timestamp_ns))
        return found

    def info(self, pid: int) -> ProcInfo:
        st = procfs.stat(pid)
        return ProcInfo(pid=st.pid, ppid=st.ppid, state=st.state, session=st.session,
                        exit_code=st.exit_code)

    def tracer(self, pid: int) -> int:
        return procfs.tracer_pid(pid)

    def children(self, pid: int) -> set[int]:
        return procfs.children(pid)

    def threads(self, pid: int) -> list[ThreadState]:
        return procfs.threads(pid)

    def cmdline(self, pid: int) -> list[str]:
        return procfs.cmdline(pid)

    def signals(self, pid: int) -> SignalState | None:
        try:
            return procfs.signal_state(pid)
        except (Gone, PermissionError):
            return None

    def run_id(self, pid: int) -> str | None:
        try:
            return procfs.environ(pid).get(RUN_ID_VAR)
        except (Gone, PermissionError):
            return None

    def mapped(self, pid: int) -> list[str]:
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
                # the sixth field, when there is one, is the file (it may contain spaces)
                paths = {parts[5].rstrip("\n") for parts in (line.split(maxsplit=5)
                                                               for line in handle)
                         if len(parts) == 6 and parts[5].startswith("/")}
        except (FileNotFoundError, ProcessLookupError):
            raise Gone(pid) from None
        return sorted(paths)

    def fd_target(self, pid: int, fd: int) -> str | None:
        return procfs.fd_target(pid, fd)

    def holders(self, target: str) -> list[tuple[int, int, str]]:
        return procfs.holders(target)

    def thread_group(self, tid: int) -> int:
        try:
            return int(procfs.status(tid)["Tgid"])
        except (KeyError, ValueError):
            return tid

    def thread_names(self, pid: int) -> dict[int, str]:
        return procfs.thread_names(pid)

    def forking_thread(self, ppid: int, child: int) -> int | None:
        return procfs.forking_thread(ppid, child)

    def executable(self, pid: int) -> str | None:
        return procfs.executable(pid)

    def syscall_lines(self, pid: int) -> dict[int, str]:
        return procfs.syscall_lines(pid)

    def dumpable_bytes(self, pid: int) -> int | None:
        try:
            return procfs.dumpable_bytes(pid)
        except Gone:
            raise Gone(pid) from None

    def read_memory(self, pid: int, address: int, size: int) -> bytes | None:
        return procfs.read_memory(pid, address, size)

    def pid_max(self) -> int:
        return procfs.pid_max()

    def ptrace_scope(self) -> int | None:
        return procfs.ptrace_scope()

    def trace_refusal(self, pid: int) -> str | None:
        # Opening /proc/PID/mem is checked as PTRACE_MODE_ATTACH (proc(5)), the very check a
        # debugger's attach and py-spy's process_vm_readv pass: a probe, not a guess from uids.
        try:
            os.close(os.open(f"/proc/{pid}/mem", os.O_RDONLY))
            return None
        except (FileNotFoundError, ProcessLookupError):
            raise Gone(pid) from None
        except PermissionError:
            pass
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
        except (FileNotFoundError, ProcessLookupError):
            raise Gone(pid) from None
        me = os.geteuid()
        if owner != me:
            return (f"process {pid} belongs to uid {owner} and the lab runs as uid {me} "
                    "without CAP_SYS_PTRACE")
        return (f"process {pid} is this user's, but the kernel refuses to let the lab trace it "
                "(Yama's kernel.yama.ptrace_scope, or the process made itself undumpable)")

    def close(self) -> None:
        if self._connector is not None:
            self._connector.close()
            self._connector = None
