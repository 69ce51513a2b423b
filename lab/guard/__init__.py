"""The fork guard: a ``fork()`` that would deadlock the child is named, or stopped, before it.

At each ``os.fork()`` (and so each multiprocessing fork: ``Process``, ``Pool``,
``ProcessPoolExecutor`` with the fork context) the guard looks at every other thread of the
process, with the rules ``lab watch`` applies after the fact: a thread inside a lock's
critical section (``lab.locksite``: the ``with lock:`` block or ``acquire()`` its stack is in;
the standard library's own locks left out, since its waits release them and CPython re-creates
logging's in the child) and a native library's thread pool (``lab.inventory``: Tokio, OpenMP,
Rayon, ...). ``warn`` lets the fork happen and records it; ``strict`` raises ForkSafetyError in
the forking call instead, so the child never exists. A fork that execs at once (``subprocess``,
``posix_spawn``) never calls ``os.fork`` and is never flagged.

Not flagged: a lock that the program re-creates in the child itself, told from the callbacks it
registered with ``os.register_at_fork(after_in_child=...)`` after the guard was installed (a
callback that names the lock's attribute).
"""

from __future__ import annotations

import collections
import os
import sys
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("warn", "strict")
MODE_VAR = "LAB_FORK_GUARD"  # the startup hook installs the guard in this mode (lab guard)


class ForkSafetyError(RuntimeError):
    """Raised by a guarded ``fork()`` in strict mode: the fork would leave the child with a
    lock no thread of its own can release, or with a native library's threads gone."""

    def __init__(self, message: str, risks: list[Risk]):
        super().__init__(message)
        self.risks = risks


@dataclass
class Risk:
    """One other thread that makes this fork unsafe, and what to do about it."""

    kind: str  # "lock": inside a critical section; "native": a native library's threads
    thread: str  # its name (Python's, else the OS's)
    tid: int | None
    started_by: str  # "Python threading (name)", or the library that started it
    fix: str
    where: str | None = None  # file:line of the `with lock:` / `acquire()`
    statement: str | None = None
    lock: str | None = None
    count: int = 1  # threads of that library (native)
    code: list[str] = field(default_factory=list)  # the fix, as code fitted to the program

    def line(self) -> str:
        if self.kind == "lock":
            return (f"thread {self.thread} (TID {self.tid}, {self.started_by}) is inside "
                    f"`{self.statement}` at {self.where}: a child forked now inherits "
                    f"{self.lock} locked, and no thread of its own can release it")
        return (f"native threads of {self.started_by} are live ({self.count} thread(s): "
                f"{self.thread}): a fork now copies their state, not the threads")


@dataclass
class Fork:
    """A risky fork: where it was called, and why it is risky."""

    pid: int
    caller: str  # file:line of the call that forked (the program's, not multiprocessing's)
    risks: list[Risk] = field(default_factory=list)
    where: str | None = None  # a test id (pytest), when the caller says
    stopped: bool = False  # strict: ForkSafetyError was raised, the fork did not happen

    def text(self) -> str:
        head = f"risky fork at {self.caller}" + (f" in {self.where}" if self.where else "")
        lines = [head + (" (stopped: ForkSafetyError)" if self.stopped else "")]
        for risk in self.risks:
            lines += [f"  - {risk.line()}", f"    fix: {risk.fix}"]
            lines += [f"      {line}" for line in risk.code if line]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Guard:
    """Wraps ``os.fork`` (and watches ``os.register_at_fork``) while installed."""

    def __init__(self, mode: str = "strict", on_fork=None):
        if mode not in MODES:
            raise ValueError(f"fork guard mode {mode!r}: one of {', '.join(MODES)}")
        self.mode, self.on_fork = mode, on_fork
        self.forks: list[Fork] = []
        self.where: str | None = None  # what runs now (pytest: the test's id)
        self._fork = self._register = None
        self._reinit: list[Any] = []  # after_in_child callbacks the program registered

    def install(self) -> Guard:
        if self._fork is not None or not hasattr(os, "fork"):
            return self
        self._fork, self._register = os.fork, os.register_at_fork
        guard = self

        def fork():
            guard.check()
            return guard._fork()

        def register_at_fork(*, before=None, after_in_parent=None, after_in_child=None):
            if after_in_child is not None:
                guard._reinit.append(after_in_child)
            kwargs = {k: v for k, v in (("before", before), ("after_in_parent", after_in_parent),
                                        ("after_in_child", after_in_child)) if v is not None}
            return guard._register(**kwargs)

        fork.__wrapped__, fork.__doc__ = self._fork, self._fork.__doc__
        os.fork, os.register_at_fork = fork, register_at_fork
        return self

    def uninstall(self) -> None:
        if self._fork is not None:
            os.fork, os.register_at_fork = self._fork, self._register
            self._fork = self._register = None

    def check(self) -> Fork | None:
        """Assess the fork about to happen: record it, and raise in strict mode."""
        risks = [r for r in assess() if not self._reinitialised(r)]
        if not risks:
            return None
        found = Fork(pid=os.getpid(), caller=_caller(), risks=risks, where=self.where,
                     stopped=self.mode == "strict")
        self.forks.append(found)
        if self.on_fork is not None:
            try:
                self.on_fork(found)
            except Exception:
                pass  # reporting must never change what the program does
        if found.stopped:
            raise ForkSafetyError("fork() refused by the fork guard: " + found.text(), risks)
        return found

    def _reinitialised(self, risk: Risk) -> bool:
        """True when an after_in_child callback of the program names the lock's attribute."""
        if risk.kind != "lock" or not risk.lock:
            return False
        attribute = risk.lock.rpartition(".")[2]
        for callback in self._reinit:
            code = getattr(callback, "__code__", None)
            if code is not None and (attribute in code.co_names or attribute in code.co_consts
                                     or attribute in code.co_varnames):
                return True
        return False


def assess() -> list[Risk]:
    """What makes a fork from the calling thread unsafe now (empty: nothing the lab knows of)."""
    from lab import inventory, locksite
    from lab.evidence import PythonFrame

    frames = sys._current_frames()
    me = threading.get_ident()
    by_ident = {t.ident: t for t in threading.enumerate()}
    risks: list[Risk] = []
    guard_file = __file__
    for ident, frame in frames.items():
        if ident == me:
            continue
        stack = []
        while frame is not None and len(stack) < 40:
            if frame.f_code.co_filename != guard_file:
                stack.append(PythonFrame(file=frame.f_code.co_filename, line=frame.f_lineno,
                                         function=frame.f_code.co_name))
            frame = frame.f_back
        held = locksite.held(stack, os.getcwd() if stack else None)
        if held is None:
            continue
        thread = by_ident.get(ident)
        name = thread.name if thread is not None else f"ident {ident}"
        risks.append(Risk(kind="lock", thread=name, tid=getattr(thread, "native_id", None),
                          started_by=f"Python threading ({name})",
                          where=f"{os.path.basename(held['file'])}:{held['line']}",
                          statement=held["statement"], lock=held["lock"],
                          fix=_lock_fix(held), code=_lock_code(held)))
    _, others = inventory.threads_at_fork()
    native: dict[str, list] = {}
    unnamed = []
    for thread in others:
        library = thread.library or ""
        if library.startswith(("Python threading", "a Python thread")):
            continue
        if library.startswith("native thread, not started"):
            unnamed.append(thread)  # a pool that names no thread (OpenMP's): see below
            continue
        native.setdefault(library, []).append(thread)
    if unnamed:
        native.setdefault(_loaded_library(), []).extend(unnamed)
    by_object: dict[str, list] = {}  # one risk per library file: its pools together
    for library, threads in native.items():
        by_object.setdefault(library.split(" (")[0], []).extend(threads)
    for library, threads in by_object.items():
        names = collections.Counter(thread.name for thread in threads)
        risks.append(Risk(kind="native", thread=", ".join(
                              f"{name} ×{n}" if n > 1 else name for name, n in
                              names.most_common(4)),
                          tid=threads[0].tid, started_by=library, count=len(threads),
                          fix=_library_fix(next(k for k in native if k.startswith(library)))))
    return risks


def _loaded_library() -> str:
    """Who started threads that have no name of their own: the first library of the
    catalog's hazards mapped into this process (libgomp for torch's intra-op pool), else
    "a native library (unknown)". Never a lock: none can be seen from Python."""
    from lab import fixes, inventory

    mapped = [os.path.basename(path) for path in inventory.mapped_objects(os.getpid())]
    for markers, _, name in fixes.LIBRARIES:
        for path in mapped:
            if any(marker.rstrip("/") in path for marker in markers):
                return f"{path} ({name})"
    return "a native library (unknown: its threads have no name of their own)"


def _lock_fix(held: dict) -> str:
    return (f"re-create {held['lock']} in the child with os.register_at_fork(after_in_child="
            "...), as below; or fork before the thread takes it, or start the child with "
            "spawn/forkserver")


def _lock_code(held: dict) -> list[str]:
    from lab import fixes

    return [line for line in fixes.lock_fixes(held, [], "")[0].code
            if not line.startswith("#")]


def _library_fix(library: str) -> str:
    from lab import fixes

    for markers, scenario, name in fixes.LIBRARIES:
        if any(marker in library for marker in markers):
            if scenario == "openmp-threads":
                return ("call torch.set_num_threads(1) before the fork (or set OMP_NUM_THREADS="
                        "1), or start the child with spawn/forkserver")
            return f"{name}: " + fixes.catalog_fix(scenario)
    return ("start the child with spawn or forkserver (multiprocessing.get_context('spawn')), "
            "or fork before the library starts its threads")


def _caller() -> str:
    """The first frame outside the guard, os and multiprocessing: the program's fork call."""
    frame = sys._getframe(2)
    skip = ("multiprocessing", "concurrent", os.sep + "os.py")
    first = None
    while frame is not None:
        name = frame.f_code.co_filename
        first = first or f"{os.path.basename(name)}:{frame.f_lineno}"
        if name != __file__ and not any(part in name for part in skip):
            return f"{os.path.basename(name)}:{frame.f_lineno}"
        frame = frame.f_back
    return first or "?"


_installed: Guard | None = None


def install(mode: str = "strict", on_fork=None) -> Guard:
    """Install one guard in this process (again: the one already installed)."""
    global _installed
    if _installed is None:
        _installed = Guard(mode, on_fork).install()
    return _installed


def installed() -> Guard | None:
    return _installed


def uninstall() -> None:
    global _installed
    if _installed is not None:
        _installed.uninstall()
        _installed = None
