"""Sample a live process tree over a short window and judge each process as ``watch`` does."""

# Only reads through the process backend: nothing is attached, stopped or signalled here. The
# deadlock proof is ``judge.DeadlockWatch`` with ``judge.possible_wakeup`` (the signal and
# timer rules), exactly as the watcher applies them; only the verdict of a process that is not
# stuck differs, because a live process under ``inspect`` has no timeout to overrun:
#
# - ``deadlock``: proven (every thread in an untimed private futex wait, stable, nothing left
#   that could wake it);
# - ``hang``: every thread waits like that, stable, but a wake-up is still possible (a pending
#   signal, a timer, a handler for a signal from outside): stuck unless that arrives;
# - ``ok``: anything else, described (running — a livelock cannot be told from work in a
#   fraction of a second —, or blocked where the wait can still end: epoll, a pipe, a timeout);
# - no verdict: the process exited during the window, or another tracer holds it.

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lab import evidence as ev, redact
from lab.options import INSPECT_WINDOW_S
from lab.process import Backend, Gone
from lab.verdicts import Verdict
from lab.watch import judge

WINDOW_S = INSPECT_WINDOW_S  # the proof needs judge.STABLE_S and judge.MIN_SAMPLES
INTERVAL_S = 0.02  # between two samples of one process (the watcher's fast interval)
MIN_WINDOW_S = judge.STABLE_S + 2 * INTERVAL_S  # a shorter window could never prove anything
MAX_PROCESSES = 256  # a tree larger than this is cut (the root and the first found are kept)


@dataclass
class Sampled:
    """What the window saw of one process."""

    pid: int
    ppid: int | None
    argv: list[str]
    watch: judge.DeadlockWatch = field(default_factory=judge.DeadlockWatch)
    threads: list[ev.ThreadState] = field(default_factory=list)
    stopped: bool = False  # in a stop (T) when first seen: the lab must leave it so
    tracer: int = 0
    gone: bool = False
    wakeup: str | None = None
    proven: bool = False


class TreeSampler:
    """The process ``root`` and (with ``tree``) its descendants, minus ``exclude``."""

    def __init__(self, backend: Backend, root: int, *, tree: bool = True,
                 exclude: set[int] | None = None):
        self.backend = backend
        self.root = root
        self.tree = tree
        self.exclude = exclude or set()
        self.seen: dict[int, Sampled] = {}
        self.samples = 0

    def members(self) -> list[int]:
        """The processes to judge now: the root first, then descendants, parents first."""
        found, frontier = [self.root], [self.root] if self.tree else []
        while frontier and len(found) < MAX_PROCESSES:
            try:
                kids = sorted(self.backend.children(frontier.pop(0)) - self.exclude)
            except Gone:
                continue
            found.extend(kids)
            frontier.extend(kids)
        return found[:MAX_PROCESSES]

    def run(self, window: float = WINDOW_S) -> dict[int, Sampled]:
        """Sample every member each ``INTERVAL_S`` for ``window`` s (or until each one is
        proven deadlocked or gone); return what was seen, by pid."""
        end = time.monotonic() + window
        while True:
            now = time.monotonic()
            for pid in self.members():
                self.sample(pid, now)
            self.samples += 1
            # done early when nothing is left to learn: every process proven, or gone
            settled = bool(self.seen) and all(s.proven or s.gone for s in self.seen.values())
            if now >= end or settled:
                return self.seen
            time.sleep(min(INTERVAL_S, max(0.0, end - now)))  # the sampling interval itself

    def sample(self, pid: int, now: float) -> None:
        seen = self.seen.get(pid)
        if seen is not None and (seen.gone or seen.proven):
            return
        try:
            info = self.backend.info(pid)
            if info.state in "ZX":
                raise Gone(pid)
            threads = self.backend.threads(pid)
            tracer = self.backend.tracer(pid)
            if seen is None:
                argv = redact.argv(self.backend.cmdline(pid))
                seen = self.seen[pid] = Sampled(pid, info.ppid, argv,
                                                stopped=info.state in "Tt")
        except (Gone, PermissionError):
            if seen is None and pid == self.root:
                # The target was there when the inspection began (it was checked): it ended
                # before its first sample, which a loaded machine makes possible.
                seen = self.seen[pid] = Sampled(pid, None, [])
            if seen is not None:
                seen.gone = True
            return
        seen.threads, seen.tracer = threads, tracer
        if not seen.watch.feed(now, threads, traced=bool(tracer)):
            seen.wakeup = None
            return
        seen.wakeup = judge.possible_wakeup(pid, threads, self.backend.signals(pid))
        seen.proven = seen.wakeup is None


def judge_all(seen: dict[int, Sampled], window: float,
              syscalls: bool = True) -> list[ev.ProcessRecord]:
    """One evidence record per process, with its verdict and why (see the module docstring)."""
    records = []
    for sampled in seen.values():
        record = ev.ProcessRecord(pid=sampled.pid, ppid=sampled.ppid, argv=sampled.argv,
                                  threads=sampled.threads)
        record.verdict, record.detail = verdict_of(sampled, window, syscalls)
        record.proof = judge.PROOF if sampled.proven else None
        records.append(record)
    return records


def verdict_of(sampled: Sampled, window: float, syscalls: bool = True) -> tuple[str | None, str]:
    if sampled.gone:
        return None, ("exited during the inspection (its exit status is its parent's to "
                      "read: the lab is not its parent)")
    if sampled.proven:
        return Verdict.DEADLOCK.value, judge.describe_deadlock(sampled.threads)
    if sampled.tracer:
        return None, (f"traced by process {sampled.tracer} (a debugger or strace): nothing "
                      "can be proven, and no other tracer can attach, while it holds it")
    if sampled.wakeup:
        return Verdict.HANG.value, (f"blocked, not a proven deadlock: {sampled.wakeup}; stuck "
                                    "unless that happens")
    if sampled.stopped:
        return Verdict.OK.value, "stopped (SIGSTOP or a job-control stop): left stopped"
    described = judge.describe_unfinished(sampled.watch, syscalls)
    if described.startswith("livelock"):
        return Verdict.OK.value, (f"alive and running ({described}); in a {window:g} s window "
                                  "a livelock cannot be told from work: `lab inspect --window "
                                  "5` looks longer")
    source = "/proc" if syscalls else "psutil"
    return Verdict.OK.value, f"alive, not stuck by what {source} shows: {described}"


def as_found(seen: dict[int, Sampled]) -> dict[int, tuple[bool, int]]:
    """How each sampled process was found: ``{pid: (stopped, tracer)}`` (``process.left_as_found``
    checks them at the end)."""
    return {pid: (sampled.stopped, sampled.tracer) for pid, sampled in seen.items()}
