"""The evidence document: dataclasses, one JSON schema, atomic writes.

Field names of ``Evidence`` and its parts are a contract (schema ``lab-evidence/1``): other
tools read them. Add fields freely; never rename or remove one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "lab-evidence/1"


@dataclass
class FutexCall:
    uaddr: str
    op: str  # decoded name, e.g. "FUTEX_WAIT_BITSET_PRIVATE"
    val: int
    timeout: str | None  # None when the timeout pointer is NULL (wait forever)
    op_raw: int = 0
    private: bool = True
    is_wait: bool = False


@dataclass
class Syscall:
    nr: int
    name: str
    args: list[str]
    futex: FutexCall | None = None


@dataclass
class ThreadState:
    tid: int
    name: str
    state: str  # one letter from /proc/PID/task/TID/stat: R S D T t Z ...
    wchan: str
    syscall: Syscall | None = None
    voluntary_ctxt_switches: int | None = None
    cpu_ticks: int | None = None


@dataclass
class ProcessRecord:
    pid: int
    ppid: int | None
    argv: list[str]
    verdict: str | None = None
    exit_code: int | None = None
    signal: str | None = None  # e.g. "SIGSEGV"; None when it exited normally or still runs
    detail: str = ""
    threads: list[ThreadState] = field(default_factory=list)
    killed_by_lab: bool = False
    # caught/blocked/ignored/pending signal names and POSIX timers, at the verdict (Linux)
    signals: dict[str, list[str]] | None = None
    # where a fatal signal hit, from the faulthandler the lab's startup hook enabled (lab.faults)
    fault: FaultInfo | None = None
    # how a deadlock verdict was proven: "procfs-syscalls" (/proc samples, lab.watch.judge) or
    # "debugger-stacks" (the debugger's capture, lab.watch.stackproof: the portable backend)
    proof: str | None = None
    # what its blocked threads wait for, one entry per distinct wait, and who could end it
    # (lab.waits_for): kind, object, timeout, ended_by (PIDs), by_threads, tids, note
    waits_for: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ThreadAtFork:
    tid: int
    name: str
    library: str
    python_name: str | None = None  # threading's name, when it is a Python thread
    python_frames: list[PythonFrame] = field(default_factory=list)  # its stack at the fork
    # the lock it held at the fork, told from its stack and the source (lab.locksite): file,
    # line, function, statement, lock, how
    holds: dict[str, Any] | None = None


@dataclass
class ParentInfo:
    pid: int | None = None
    threads_at_fork: list[ThreadAtFork] = field(default_factory=list)
    forking_tid: int | None = None
    # "hook" (the process's own report at fork), "proc" (/proc when the lab saw the fork event)
    source: str | None = None
    t_ns: int | None = None  # CLOCK_MONOTONIC of the fork (hook: just before it)
    forking_thread: ThreadAtFork | None = None  # its name and Python stack: the child's start
    children: list[int] = field(default_factory=list)  # the processes this fork made
    start_method: str | None = None  # e.g. "fork (multiprocessing)", "os.fork() at app.py:30"
    culprit: dict[str, Any] | None = None  # the thread whose lock the child inherited, and why
    # the parent's threads when the verdict was reached (py-spy, never pausing it), and a note
    threads_at_verdict: list[DebugThread] = field(default_factory=list)
    at_verdict: str | None = None


@dataclass
class Frame:
    index: int
    pc: str | None = None
    function: str | None = None
    offset: int | None = None
    library: str | None = None
    file: str | None = None
    line: int | None = None


@dataclass
class PythonFrame:
    file: str
    line: int | None
    function: str


@dataclass
class DebugThread:
    tid: int | None
    frames: list[Frame] = field(default_factory=list)
    python_frames: list[PythonFrame] = field(default_factory=list)
    name: str | None = None
    # who produced python_frames: "gdb py-bt" or "py-spy" (when the debugger found none)
    python_source: str | None = None


@dataclass
class DebuggerInfo:
    name: str
    version: str | None = None
    pid: int | None = None
    stop_reason: str | None = None
    signal: str | None = None
    instruction: str | None = None
    message: str | None = None
    threads: list[DebugThread] = field(default_factory=list)
    registers: dict[str, str] = field(default_factory=dict)
    transcript: str | None = None  # file name of the raw transcript, inside evidence_dir
    seconds: float | None = None
    error: str | None = None


@dataclass
class FaultThread:
    ident: str  # the thread's pthread id as faulthandler prints it
    current: bool  # the thread that received the fatal signal
    python_frames: list[PythonFrame] = field(default_factory=list)
    name: str | None = None


@dataclass
class FaultInfo:
    error: str  # faulthandler's "Fatal Python error: ..." text, e.g. "Segmentation fault"
    file: str | None = None  # the raw dump, inside evidence_dir
    threads: list[FaultThread] = field(default_factory=list)


@dataclass
class PlatformInfo:
    system: str
    machine: str
    python: str
    libc: str
    packages: dict[str, str] = field(default_factory=dict)
    backend: str | None = None  # the process backend: "linux" or "portable" (LAB_BACKEND)
    # The program's own interpreter (its sys.executable), when it is not the lab's: then
    # ``python`` and ``packages`` are that interpreter's, and the lab's own are kept here.
    interpreter: str | None = None
    lab_packages: dict[str, str] = field(default_factory=dict)


@dataclass
class Evidence:
    run_id: str
    command: list[str]
    platform: PlatformInfo
    schema: str = SCHEMA
    scenario: str | None = None
    launcher: str | None = None
    expected: str | None = None
    verdict: str | None = None
    detect_s: float | None = None
    parent: ParentInfo = field(default_factory=ParentInfo)
    processes: list[ProcessRecord] = field(default_factory=list)
    debugger: DebuggerInfo | None = None
    evidence_dir: str | None = None
    watch_mode: str | None = None  # "netlink" (cn_proc) or "polling" (weaker: see watch_note)
    watch_note: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    # the variables of ``environment`` the lab itself set or changed for the program (its
    # report channel, run marker, startup hook): left out of a bug report's environment
    lab_environment: list[str] = field(default_factory=list)
    error: str | None = None
    complete: bool = False
    warnings: list[dict[str, Any]] = field(default_factory=list)  # e.g. CPython's fork warning
    # the start method the scenario host's launcher used (mp-default: the interpreter's default)
    start_method: str | None = None
    strace: dict[str, Any] | None = None  # with --strace: file, pid, tail of the blocked one
    forensics: list[dict[str, Any]] = field(default_factory=list)  # orphaned-lock findings
    core: dict[str, Any] | None = None  # with --gcore: the core file, or why none was written
    output: dict[str, Any] | None = None  # what output.txt kept of the output (lab.output)
    # "inspect" for `lab inspect PID`; null for run, watch and catch (they launch the process)
    mode: str | None = None
    # Python stacks from py-spy (live) or pystack (a core), one entry per process and tool
    # (lab.stacks): source, pid, mode, threads, agreement with the debugger's py-bt
    python_stacks: list[dict[str, Any]] = field(default_factory=list)
    inspect: dict[str, Any] | None = None  # lab inspect: window, parent, fork story, pauses
    forks: list[ParentInfo] = field(default_factory=list)  # forks whose parent had threads
    # `lab guard`: each risky fork the fork guard saw (lab.guard.Fork: pid, caller, risks,
    # stopped), in the order they happened
    risky_forks: list[dict[str, Any]] = field(default_factory=list)
    # a deadlock across processes (lab.watch.waits_for.cycle): members, edges (from, to, kind,
    # reason), summary
    wait_for_cycle: dict[str, Any] | None = None
    hook: dict[str, Any] | None = None  # the startup hook in watched Python processes (lab.hook)
    # `lab parse`: what the text was (kind, format) and what it shows beyond the fields above:
    # each thread's wait, the one-snapshot reading of them, the signs of a fork with the
    # catalog scenario they match and its measured fixes, a crash report's own facts
    parsed: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The document as JSON: a non-finite number (from a hostile input) is written as null,
        never as ``Infinity``, which is not JSON."""
        from lab.untrusted import finite

        return json.dumps(finite(self.to_dict()), indent=2, allow_nan=False) + "\n"


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` so that a reader sees the old file or the new one,
    never half.

    The data is fsync'ed before the rename, and the directory after it, so that the file
    survives the lab being killed right after this returns.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    if hasattr(os, "fchmod"):  # POSIX (Windows: 3.13 and newer, read-only bit only)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; evidence is read by other users too
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if os.name != "posix":
        return  # Windows opens no directory; MoveFileEx's rename is what it offers
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def from_dict(data: dict[str, Any]) -> Evidence:
    """Rebuild an ``Evidence`` from its JSON form (unknown keys are ignored)."""

    def build(cls, value):
        if value is None:
            return None
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, item in value.items():
            if key not in names:
                continue
            kwargs[key] = item
        return cls(**kwargs)

    evidence = build(Evidence, {**data, "platform": build(PlatformInfo, data["platform"])})
    parent = data.get("parent") or {}
    evidence.parent = _parent_from_dict(parent)
    evidence.forks = [_parent_from_dict(fork) for fork in data.get("forks") or []]
    evidence.processes = []
    for proc in data.get("processes", []):
        record = build(ProcessRecord, proc)
        record.threads = [_thread_from_dict(t) for t in proc.get("threads", [])]
        fault = proc.get("fault")
        if fault:
            record.fault = FaultInfo(
                error=fault.get("error", ""), file=fault.get("file"),
                threads=[FaultThread(ident=t.get("ident", ""), current=bool(t.get("current")),
                                     name=t.get("name"), python_frames=_frames(t))
                         for t in fault.get("threads") or []])
        evidence.processes.append(record)
    dbg = data.get("debugger")
    if dbg:
        info = build(DebuggerInfo, dbg)
        info.threads = [
            DebugThread(
                tid=t.get("tid"),
                name=t.get("name"),
                frames=[build(Frame, f) for f in t.get("frames", [])],
                python_frames=[build(PythonFrame, f) for f in t.get("python_frames", [])],
                python_source=t.get("python_source"),
            )
            for t in dbg.get("threads", [])
        ]
        evidence.debugger = info
    return evidence


def _frames(data: dict[str, Any]) -> list[PythonFrame]:
    return [PythonFrame(file=f.get("file", ""), line=f.get("line"), function=f.get("function", ""))
            for f in data.get("python_frames") or []]


def _thread_at_fork(data: dict[str, Any] | None) -> ThreadAtFork | None:
    if not data:
        return None
    return ThreadAtFork(tid=data.get("tid"), name=data.get("name", ""),
                        library=data.get("library", ""), python_name=data.get("python_name"),
                        python_frames=_frames(data), holds=data.get("holds"))


def _parent_from_dict(data: dict[str, Any]) -> ParentInfo:
    return ParentInfo(
        pid=data.get("pid"), forking_tid=data.get("forking_tid"),
        threads_at_fork=[_thread_at_fork(t) for t in data.get("threads_at_fork") or []],
        source=data.get("source"), t_ns=data.get("t_ns"),
        forking_thread=_thread_at_fork(data.get("forking_thread")),
        children=list(data.get("children") or []), start_method=data.get("start_method"),
        culprit=data.get("culprit"),
        threads_at_verdict=[DebugThread(tid=t.get("tid"), name=t.get("name"),
                                        python_frames=_frames(t),
                                        python_source=t.get("python_source"))
                            for t in data.get("threads_at_verdict") or []],
        at_verdict=data.get("at_verdict"))


def _thread_from_dict(data: dict[str, Any]) -> ThreadState:
    syscall = data.get("syscall")
    if syscall:
        futex = syscall.get("futex")
        syscall = Syscall(
            nr=syscall["nr"],
            name=syscall["name"],
            args=syscall["args"],
            futex=FutexCall(**futex) if futex else None,
        )
    return ThreadState(**{**data, "syscall": syscall})
